"""polyfuse-lower-groups: fusion groups (polyfuse-form-groups) to the accel dialect."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from torch_mlir import ir

from polyfuse.dialects import accel
from polyfuse.errors import PolyfuseError
from polyfuse.fusion.lowering import emit_function_fused
from polyfuse.fusion.plan_ir import FALLBACK_ATTRIBUTE, PLANNED_ATTRIBUTE, read_plan
from polyfuse.lowering.contraction_embedding import check_strategy
from polyfuse.lowering.layer_by_layer import OperatorRecord, lower_function
from polyfuse.lowering.records import append_records
from polyfuse.pass_base import ModulePass
from polyfuse.passes.lower_to_accel import target_attribute
from polyfuse.targets import Target, load_target


@dataclasses.dataclass(frozen=True)
class LowerGroups(ModulePass):
    """Lower every function whose operators polyfuse-form-groups grouped: each group with
    its internal storages in the scratchpad, under its outer tile loops or band by band,
    as its attributes say (the plan is read from the IR only, fusion/plan_ir.py). A
    function marked `accel.fusion_fallback`, or whose groups the emitter cannot lower,
    is lowered layer by layer (`buffers`, `embedding` as polyfuse-lower-to-accel) and
    keeps the reason in that attribute.

        %b = scf.execute_region -> tensor<...> no_inline {...} {accel.group = {...}}
        // after: accel.alloc of the internal storages, affine.for over the outer
        // tiles, per operator its tile loops, DMAs and compute instructions
    """

    name: ClassVar[str] = "polyfuse-lower-groups"
    target: str = "edge"
    buffers: int = 1
    embedding: str = "csp"

    def run(self, module: ir.Operation) -> None:
        check_strategy(self.embedding)
        target = load_target(self.target)
        accel.load_accel_dialect(module.context)
        records: list[OperatorRecord] = []
        functions = [
            op.operation
            for op in module.regions[0].blocks[0].operations
            if op.operation.name == "func.func"
            and (
                PLANNED_ATTRIBUTE in op.operation.attributes
                or FALLBACK_ATTRIBUTE in op.operation.attributes
            )
        ]
        for function in functions:
            with function.location:
                records += self._lower(function, module, target)
        with module.location:
            module.attributes["accel.target"] = target_attribute(target)
            append_records(module, records)

    def _lower(
        self, function: ir.Operation, module: ir.Operation, target: Target
    ) -> list[OperatorRecord]:
        name = ir.StringAttr(function.attributes["sym_name"]).value
        reason = ""
        if FALLBACK_ATTRIBUTE in function.attributes:
            reason = ir.StringAttr(function.attributes[FALLBACK_ATTRIBUTE]).value
        else:
            found = read_plan(function, target, self.embedding)
            backup = function.clone(ip=ir.InsertionPoint(function))
            try:
                if found is None:
                    raise PolyfuseError("no fusion groups")
                graph, plan = found
                records = emit_function_fused(function, module, target, graph, plan)
                backup.erase()
                return records
            except PolyfuseError as error:
                reason = f"fusion fell back to layer by layer: {error}"
                for op in list(module.regions[0].blocks[0].operations):
                    symbol = op.operation.attributes.get("sym_name")
                    if (
                        op.operation != backup
                        and symbol is not None
                        and ir.StringAttr(symbol).value in (name, name + "__accel")
                    ):
                        op.operation.erase()
                function = backup
        records = lower_function(function, module, target, self.buffers, self.embedding)
        for op in module.regions[0].blocks[0].operations:
            symbol = op.operation.attributes.get("sym_name")
            if symbol is not None and ir.StringAttr(symbol).value == name:
                op.operation.attributes[FALLBACK_ATTRIBUTE] = ir.StringAttr.get(
                    reason, module.context
                )
        return records
