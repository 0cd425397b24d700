"""polyfuse-sink-copies: move operators that only copy their input next to their first user.

The fusion planner groups operators that are consecutive in program order
(docs/fusion.md, section 2), and torch-mlir emits them in the order of the PyTorch
program. BERT's attention computes the query projection and its head permute first,
then the key and value projections, then the attention: the permute of the query sits
between the projections, away from the attention that reads it, and runs as a group of
its own (at batch 8: 3 MiB written and read back). This pass moves every
`linalg.generic` that only copies its one input (a transpose, a broadcast, a plain copy:
the body yields the input's block argument) to just before its first user in the same
block. Tensor operators have no side effects and their operands are defined before the
operator itself, so moving one later, up to its first user, computes the same values.

    %qt = linalg.generic {maps (d0, d1, d2, d3) -> (d0, d2, d1, d3), ...} ins(%q) outs(%e)  // permute
    %k = linalg.generic ... (key projection)
    %s = linalg.generic ... ins(%qt, %kt) ...                                               // q @ k^T

becomes `%k = ...; %qt = ...; %s = ...`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from torch_mlir import ir

from polyfuse.analysis.operators import generic_operator
from polyfuse.pass_base import ModulePass


@dataclasses.dataclass(frozen=True)
class SinkCopies(ModulePass):
    """Move operators that only copy their input (transposes, broadcasts) to their first
    user, so the fusion planner sees them next to it."""

    name: ClassVar[str] = "polyfuse-sink-copies"

    def run(self, module: ir.Operation) -> None:
        sink_copies(module)


def sink_copies(module: ir.Operation) -> int:
    """Move every copying generic of every function in `module` to just before its first
    user (see the module docstring); returns how many moved."""
    moved = 0
    for region in module.regions:
        for block in region.blocks:
            for op in list(block.operations):
                if op.operation.name == "func.func":
                    moved += _sink_in_block(op.operation.regions[0].blocks[0])
    return moved


def _sink_in_block(block: ir.Block) -> int:
    moved = 0
    position: dict[ir.Operation, int] = {}  # program positions, renumbered after a move
    for op in [o.operation for o in block.operations]:
        if not _copies_its_input(op):
            continue
        if not position:
            position = {o.operation: n for n, o in enumerate(block.operations)}
        users = [use.owner.operation for use in op.result.uses]
        if not users or any(user not in position for user in users):
            continue  # used inside a nested region: leave it
        first = min(users, key=position.__getitem__)
        if position[first] > position[op] + 1:
            op.move_before(first)
            moved += 1
            position = {}
    return moved


def _copies_its_input(op: ir.Operation) -> bool:
    """A `linalg.generic` with one input, one result, whose body yields the input."""
    if op.name != "linalg.generic" or len(op.results) != 1:
        return False
    generic = generic_operator(op)
    body = [o.operation for o in generic.body.operations]
    return (
        len(generic.inputs) == 1
        and len(body) == 1
        and body[0].name == "linalg.yield"
        and list(body[0].operands) == [generic.inputs[0].block_arg]
    )
