"""polyfuse-form-groups: the fusion planner, its plan written into the IR as groups."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from torch_mlir import ir

from polyfuse.errors import PolyfuseError
from polyfuse.fusion.graph import build_graph
from polyfuse.fusion.overlap import Overlap
from polyfuse.fusion.plan_ir import FALLBACK_ATTRIBUTE, PLANNED_ATTRIBUTE, materialize_plan
from polyfuse.fusion.planner import plan_fusion
from polyfuse.lowering.contraction_embedding import check_strategy
from polyfuse.pass_base import ModulePass
from polyfuse.targets import load_target


@dataclasses.dataclass(frozen=True)
class FormGroups(ModulePass):
    """Partition every function's linalg operators into fusion groups (the planner of
    docs/fusion.md) and write each group as an `scf.execute_region` marked `accel.group`
    with its plan; each operator gets its tiling as `accel.tiling` (fusion/plan_ir.py).

    `buffers` > 1 double-buffers tiles where the planner estimates it pays; `embedding`
    is how contractions go onto the PE array; `traffic-first` never trades DRAM bytes
    for estimated cycles; `halo` allows row-band groups of convolution chains;
    `max-group-operators` bounds the large operators of a group (1: one each). A function
    the planner cannot plan is marked `accel.fusion_fallback` with the reason (lowered
    layer by layer by polyfuse-lower-groups).

        %a = linalg.generic ... ins(%x, %w) ...               // before
        %b = linalg.generic ... ins(%a) ...
        %b = scf.execute_region -> tensor<...> no_inline {     // after
          %a = linalg.generic {accel.tiling = {...}} ...
          %b = linalg.generic {accel.tiling = {...}} ...
          scf.yield %b : tensor<...>
        } {accel.group = {type = "GroupPlan", trips = 4 : i64, ...}}
    """

    name: ClassVar[str] = "polyfuse-form-groups"
    target: str = "edge"
    buffers: int = 1
    embedding: str = "csp"
    traffic_first: bool = False
    halo: bool = True
    # operators of more than 4096 iterations per group (0: planner.MAX_GROUP_OPERATORS, 12)
    max_group_operators: int = 0

    def run(self, module: ir.Operation) -> None:
        check_strategy(self.embedding)
        target = load_target(self.target)
        overlap = Overlap(target, self.buffers, self.embedding, self.traffic_first)
        for op in module.regions[0].blocks[0].operations:
            function = op.operation
            if function.name != "func.func" or len(function.regions[0].blocks) == 0:
                continue
            function_type = ir.FunctionType(ir.TypeAttr(function.attributes["function_type"]).value)
            if not any(isinstance(t, ir.RankedTensorType) for t in function_type.inputs):
                continue
            graph = build_graph(function)
            try:
                plan = plan_fusion(
                    graph,
                    target.scratchpad_bytes,
                    overlap,
                    self.halo,
                    max_group_operators=self.max_group_operators or None,
                )
            except PolyfuseError as error:
                reason = f"fusion fell back to layer by layer: {error}"
                function.attributes[FALLBACK_ATTRIBUTE] = ir.StringAttr.get(
                    reason, function.context
                )
                continue
            materialize_plan(function, graph, plan)
            function.attributes[PLANNED_ATTRIBUTE] = ir.UnitAttr.get(function.context)
