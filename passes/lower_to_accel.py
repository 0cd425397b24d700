"""polyfuse-lower-to-accel: linalg on tensors → accel, one operator at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch_mlir import ir

from polyfuse.dialects import accel
from polyfuse.lowering.contraction_embedding import EMBEDDINGS
from polyfuse.lowering.dram import check_tensor_sizes
from polyfuse.lowering.layer_by_layer import OperatorRecord, lower_function
from polyfuse.lowering.records import append_records
from polyfuse.pass_base import ModulePass, option
from polyfuse.targets import Target, load_target

SCHEDULES = ("layer-by-layer", "fused")
# Copies of an inner tile for DMA/compute overlap: 1 (none), 2 (double buffering), ... A
# few suffice to hide a DMA; each copy takes scratchpad room from the tile itself.
MAX_BUFFERS = 8


def target_attribute(target: Target) -> ir.Attribute:
    """The module attribute `accel.target` the verifier checks programs against."""
    i64 = ir.IntegerType.get_signless(64)
    return ir.DictAttr.get(
        {
            "name": ir.StringAttr.get(target.name),
            "scratchpad_bytes": ir.IntegerAttr.get(i64, target.scratchpad_bytes),
            "pe_rows": ir.IntegerAttr.get(i64, target.pe_rows),
            "pe_cols": ir.IntegerAttr.get(i64, target.pe_cols),
        }
    )


def lower_module(
    module_op: ir.Operation, target: Target, buffers: int = 1, embedding: str = "csp"
) -> list[OperatorRecord]:
    """Lower every tensor function of the module; returns what was decided per operator.

    `buffers` > 1 allows that many copies of inner tiles (DMA/compute overlap);
    `embedding` says how contractions go onto the PE array ("csp", "fixed", "heuristic")."""
    accel.load_accel_dialect(module_op.context)
    records: list[OperatorRecord] = []
    functions = [
        op.operation
        for op in module_op.regions[0].blocks[0].operations
        if op.operation.name == "func.func" and len(op.regions[0].blocks) > 0
    ]
    for function in functions:
        function_type = ir.FunctionType(ir.TypeAttr(function.attributes["function_type"]).value)
        if not any(
            isinstance(t, ir.RankedTensorType)
            for t in [*function_type.inputs, *function_type.results]
        ):
            continue
        check_tensor_sizes(function)
        with function.location:
            records += lower_function(function, module_op, target, buffers, embedding)
    with module_op.location:
        module_op.attributes["accel.target"] = target_attribute(target)
        append_records(module_op, records)
    return records


@dataclass(frozen=True)
class LowerToAccel(ModulePass):
    """Lower linalg on tensors to the accel dialect, layer by layer.

    Each linalg.generic becomes a tiled loop nest: its operand tiles are DMA'd from DRAM
    into the scratchpad, computed on the PE array (contractions) or the vector unit
    (everything else), and its output tiles DMA'd back. Tile sizes and loop order come
    from a search over all legal tilings for the least DRAM traffic under the target's
    scratchpad capacity. Tensor results become out-parameters. `embedding` chooses how a
    contraction's loops go onto the PE array: "csp" (CP-SAT, issue 6), "fixed" (the VTA
    reference) or "heuristic" (one PE block per instruction); see docs/embedding.md.

        %r = linalg.generic ... ins(%a, %w) outs(%init)      // before
        affine.for %i = 0 to 4 {                               // after
          %t = "accel.dma_start"(%a_tile, %a, %i) ...
          "accel.dma_wait"(%t) ...
          "accel.matmul"(%c_tile, %a_tile, %w_tile) ...
          ...
    """

    name: ClassVar[str] = "polyfuse-lower-to-accel"
    target: str = "edge"
    buffers: int = option(1, limits=(1, MAX_BUFFERS))
    schedule: str = option("layer-by-layer", choices=SCHEDULES)  # fused: docs/fusion.md
    embedding: str = option("csp", choices=EMBEDDINGS)  # docs/embedding.md
    halo: bool = True  # fused: row-band groups of convolution chains (docs/fusion.md)

    def run(self, module: ir.Operation) -> None:
        if self.schedule == "fused":
            from polyfuse.fusion import lower_module_fused

            target = load_target(self.target)
            lower_module_fused(module, target, self.buffers, self.embedding, halo=self.halo)
            return
        lower_module(module, load_target(self.target), self.buffers, self.embedding)
