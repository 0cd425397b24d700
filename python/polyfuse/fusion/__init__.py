"""Cross-operator fusion (issue 4): operator graph, planner, fused lowering.

`lower_module_fused` is the fused counterpart of `lower_to_accel.lower_module`.
"""

from __future__ import annotations

from torch_mlir import ir

from polyfuse.dialects import accel
from polyfuse.fusion.lowering import lower_function_fused
from polyfuse.fusion.overlap import Overlap
from polyfuse.fusion.planner import FusionPlan
from polyfuse.lowering.contraction_embedding import check_strategy
from polyfuse.lowering.dram import check_tensor_sizes
from polyfuse.lowering.layer_by_layer import OperatorRecord
from polyfuse.targets import Target


def lower_module_fused(
    module_op: ir.Operation,
    target: Target,
    buffers: int = 1,
    embedding: str = "csp",
    traffic_first: bool = True,
    halo: bool = True,
) -> tuple[list[OperatorRecord], list[FusionPlan]]:
    """Lower every tensor function with fusion; returns the records and the plans.

    `buffers` > 1 double- (n-) buffers the innermost tile loops where it fits and is
    estimated to pay; `embedding` says how contractions go onto the PE array (as in
    layer by layer); `traffic_first` keeps every tiling at its least DRAM traffic (else
    a tiling may move more bytes when the estimate says it is faster). See overlap.py.
    `halo` allows row-band groups of convolution chains (halo.py)."""
    check_strategy(embedding)
    overlap = Overlap(target, buffers, embedding, traffic_first)
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
        check_tensor_sizes(function)
        with function.location:
            function_records, plan = lower_function_fused(
                function, module_op, target, overlap, halo
            )
        records += function_records
        plans.append(plan)
    with module_op.location:
        module_op.attributes["accel.target"] = target_attribute(target)
    return records, plans
