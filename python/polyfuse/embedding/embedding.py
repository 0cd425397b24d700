"""An embedding: which operator dims go to which instruction dim, and what it costs.

    stream     rows streamed through the instruction (BATCH on VTA): lhs dims, or rhs
               dims when the embedding is transposed (C^T = B^T A^T)
    block_in   the instruction's reduction vector (BLOCK_IN): reduction dims
    block_out  the instruction's output columns (BLOCK_OUT): rhs dims, or lhs dims when
               transposed
    diagonal   batch dims packed block-diagonally into both block_in and block_out
               (channel packing of grouped and depthwise convolutions)
    loops      issue loops around the instruction

Several dims in one slot merge into one linear index (the order is part of the
embedding); a batch dim may be split into an issue loop and a diagonal part. A merged
extent that is not a multiple of the block is padded up; the padded lanes still cost
cycles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from polyfuse.embedding.instruction import InstructionModel, ceil_div
from polyfuse.embedding.operators import ContractionOp

SLOTS = ("stream", "block_in", "block_out", "diagonal", "loops")


@dataclass(frozen=True)
class Part:
    """A dim, or the inner (`factor` 1) or outer (`factor` = inner extent) part of one."""

    dim: str
    extent: int
    factor: int = 1

    @property
    def name(self) -> str:
        return self.dim if self.factor == 1 else f"{self.dim}/{self.factor}"


@dataclass(frozen=True)
class Embedding:
    """One way of issuing an operator on the instruction (see the module docstring)."""

    transposed: bool
    stream: tuple[Part, ...]
    block_in: tuple[Part, ...]
    block_out: tuple[Part, ...]
    diagonal: tuple[Part, ...]
    loops: tuple[Part, ...]

    @property
    def stream_extent(self) -> int:
        return math.prod(p.extent for p in self.stream)

    @property
    def in_extent(self) -> int:
        return math.prod(p.extent for p in self.diagonal + self.block_in)

    @property
    def out_extent(self) -> int:
        return math.prod(p.extent for p in self.diagonal + self.block_out)

    @property
    def loop_extent(self) -> int:
        return math.prod(p.extent for p in self.loops)

    def streamed(self) -> str:
        """The operand streamed through the instruction ("lhs" or "rhs")."""
        return "rhs" if self.transposed else "lhs"

    def stationary(self) -> str:
        return "lhs" if self.transposed else "rhs"

    def describe(self) -> str:
        def names(parts: tuple[Part, ...]) -> str:
            return "(" + ",".join(p.name for p in parts) + ")" if parts else "1"

        text = (
            f"{'T ' if self.transposed else ''}stream={names(self.stream)} "
            f"in={names(self.diagonal + self.block_in)} out={names(self.diagonal + self.block_out)}"
        )
        if self.diagonal:
            text += f" diag={names(self.diagonal)}"
        return text + f" loops={names(self.loops)}"


def cycles_of(embedding: Embedding, instruction: InstructionModel) -> int:
    """PE-array cycles of the whole operator under `embedding` (see instruction.py)."""
    stream = embedding.stream_extent
    issues = ceil_div(stream, instruction.stream_tile(stream))
    blocks = ceil_div(embedding.in_extent, instruction.block_in) * ceil_div(
        embedding.out_extent, instruction.block_out
    )
    per_loop = blocks * (ceil_div(stream, instruction.batch) + issues * instruction.fill_cycles)
    return embedding.loop_extent * per_loop


def utilization(op: ContractionOp, cycles: int, instruction: InstructionModel) -> float:
    """Useful MACs over the MACs the instruction could have done in `cycles`."""
    return op.macs / (cycles * instruction.macs_per_cycle) if cycles else 0.0


def check_embedding(op: ContractionOp, embedding: Embedding) -> None:
    """Raises ValueError unless `embedding` covers every dim of `op` legally."""
    covered: dict[str, int] = {}
    lhs_side, rhs_side = ("rhs", "lhs") if embedding.transposed else ("lhs", "rhs")
    allowed = {
        "stream": {lhs_side},
        "block_in": {"reduction"},
        "block_out": {rhs_side},
        "diagonal": {"batch"},
        "loops": {"lhs", "rhs", "reduction", "batch"},
    }
    for slot in SLOTS:
        for part in getattr(embedding, slot):
            role = op.role(part.dim)
            if role not in allowed[slot]:
                raise ValueError(f"{op.label}: {role} dim {part.dim} cannot go to {slot}")
            covered.setdefault(part.dim, 1)
            covered[part.dim] *= part.extent
    for dim, extent in op.dims:
        if covered.get(dim, 1) != extent:
            raise ValueError(f"{op.label}: dim {dim} covered {covered.get(dim, 1)} of {extent}")


def fixed_embedding(op: ContractionOp) -> Embedding:
    """The VTA reference strategy.

    GEMM: rows of A stream (BATCH), K goes to BLOCK_IN, columns of B to BLOCK_OUT, each
    padded to the block; batched matmul loops over the batch. conv2d: NCHW blocked the
    reference way: output pixels (n, oh, ow) stream, input channels of one group to
    BLOCK_IN, output channels to BLOCK_OUT (both padded up to the block), and the kernel
    window (r, s) and the groups are issue loops.
    """
    extents = op.extents

    def parts(*dims: str) -> tuple[Part, ...]:
        return tuple(Part(d, extents[d]) for d in dims if extents[d] > 1)

    if op.kind in ("matmul", "bmm"):
        loops = parts("b") if op.kind == "bmm" else ()
        return Embedding(False, parts("m"), parts("k"), parts("n"), (), loops)
    return Embedding(
        False, parts("n", "oh", "ow"), parts("c"), parts("k"), (), parts("g", "r", "s")
    )
