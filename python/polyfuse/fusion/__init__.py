"""Cross-operator fusion (issue 4): operator graph, planner, fused lowering.

`lower_module_fused` is the fused counterpart of `lower_to_accel.lower_module`.
"""

from __future__ import annotations

from torch_mlir import ir

from polyfuse.dialects import accel
from polyfuse.fusion.lowering import lower_function_fused
from polyfuse.fusion.planner import FusionPlan
from polyfuse.lowering.layer_by_layer import OperatorRecord
from polyfuse.targets import Target


def lower_module_fused(
    module_op: ir.Operation, target: Target
) -> tuple[list[OperatorRecord], list[FusionPlan]]:
    """Lower every tensor function with fusion; returns the records and the plans."""
    from polyfuse.passes.lower_to_accel import target_attribute

    accel.load_accel_dialect(module_op.context)
    records: list[OperatorRecord] = []
    plans: list[FusionPlan] = []
    functions = [
        op.operation
        for op in module_op.regions[0].blocks[0].operations
        if op.operation.name == "func.func" and len(op.regions[0].blocks) > 0
    ]
    for function in functions:
        function_type = ir.FunctionType(ir.TypeAttr(function.attributes["function_type"]).value)
        if not any(isinstance(t, ir.RankedTensorType) for t in function_type.inputs):
            continue
        with function.location:
            function_records, plan = lower_function_fused(function, module_op, target)
        records += function_records
        plans.append(plan)
    with module_op.location:
        module_op.attributes["accel.target"] = target_attribute(target)
    return records, plans
