"""Layout transformations that make an embedding legal, and what they cost in DRAM traffic.

The instruction reads its operands as matrices (`matrix_parts`):

    streamed     [loops..., stream rows, block_in vector]        (vector contiguous)
    stationary   [loops..., block_in, block_out] blocks          (one side contiguous)
    accumulator  [loops..., stream rows, block_out vector]       (vector contiguous)

The GEMM program (lower.py) addresses each matrix with one stride per loop part, one for
its rows and one for its columns, and zero-fills the columns that pad a vector up to the
block on chip (VTA's and Gemmini's loads do the same), so padding to the block costs no
traffic. An operand is read in place (`none`) when it is such a matrix as stored: its
vector a unit-stride run (the stationary one: one of its two sides), its merged rows and
columns each evenly spaced, and no index of it out of range (conv padding). Otherwise a
layout program (layout_program.py) rewrites it once into the dense matrix, before the
GEMM (the output: after it):

    repack       transposition / channel packing (NCHW -> channel-last), at most as many
                 elements as the operand (a strided conv reads a subset of its input)
    im2col       the matrix has more elements than the operand (window dims merged with
                 pixel dims, or kernel offsets as issue loops over the pixels) or the
                 operand is padded: the expanded matrix is written, its padding zeros
                 filled on chip
    diagonal     batch dims packed block-diagonally: the stationary blocks are written
                 with their zero off-diagonal blocks

A rewrite reads the operand once and writes the dense matrix once (the output: reads the
matrix, writes Y): `layout_cost` counts both at `ELEMENT_BYTES` per element (int8
tensors), which is exactly what the emulator counts for the layout programs.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from polyfuse.embedding.embedding import Embedding, Part
from polyfuse.embedding.instruction import InstructionModel, ceil_div
from polyfuse.embedding.operators import ContractionOp, OperandSpec

ELEMENT_BYTES = 1
ROLES = ("streamed", "stationary", "output")


def padded_shape(op: ContractionOp, operand: OperandSpec) -> tuple[int, ...]:
    pads = operand.padding(op.extents)
    return tuple(size + lo + hi for size, (lo, hi) in zip(operand.shape, pads, strict=True))


def dim_strides(op: ContractionOp, operand: OperandSpec) -> dict[str, int]:
    """Element stride of each dim in the operand as stored (padded when it has padding)."""
    shape = padded_shape(op, operand)
    axis_strides = [math.prod(shape[i + 1 :]) for i in range(len(shape))]
    strides: dict[str, int] = {}
    for axis, axis_stride in zip(operand.axes, axis_strides, strict=True):
        for dim, coeff in axis.terms:
            strides[dim] = strides.get(dim, 0) + coeff * axis_stride
    return strides


def part_stride(strides: dict[str, int], part: Part) -> int:
    return strides.get(part.dim, 0) * part.factor


def is_contiguous_run(op: ContractionOp, operand: OperandSpec, parts: tuple[Part, ...]) -> bool:
    """True if `parts` (outermost first) form one unit-stride run of the stored operand."""
    if not parts:
        return True
    if any(lo or hi for lo, hi in operand.padding(op.extents)):
        return False
    strides = dim_strides(op, operand)
    expected = 1
    for part in reversed(parts):
        if part.extent > 1 and part_stride(strides, part) != expected:
            return False
        expected *= part.extent
    return True


def is_padded(op: ContractionOp, operand: OperandSpec) -> bool:
    """True if some index the dims reach is out of the operand's range (conv padding)."""
    return any(lo or hi for lo, hi in operand.padding(op.extents))


def needs_im2col(
    op: ContractionOp, operand: OperandSpec, emb: Embedding, vectors: tuple[Part, ...]
) -> bool:
    """A window axis with two dims outside the loops, one of them in a vector."""
    placed = {p.dim for p in emb.stream + emb.block_in + emb.block_out + emb.diagonal}
    vector_dims = {p.dim for p in vectors}
    pads = operand.padding(op.extents)
    for axis, (lo, hi) in zip(operand.axes, pads, strict=True):
        dims = {dim for dim, _ in axis.terms if op.extents[dim] > 1}
        if not dims & vector_dims:
            continue
        if len(dims & placed) > 1 or lo or hi:
            return True
    return False


def block_pad(extent: int, block: int) -> int:
    return ceil_div(extent, block) * block


def operand_loops(op: ContractionOp, emb: Embedding, name: str) -> tuple[Part, ...]:
    return tuple(p for p in emb.loops if op.operand(name).uses(p.dim))


def operand_name(emb: Embedding, role: str) -> str:
    """The operand ("lhs", "rhs" or "out") that plays `role` under `emb`."""
    return {"streamed": emb.streamed(), "stationary": emb.stationary(), "output": "out"}[role]


def matrix_parts(
    op: ContractionOp, emb: Embedding, role: str
) -> tuple[tuple[Part, ...], tuple[Part, ...], tuple[Part, ...]]:
    """(loops, rows, columns) of the matrix the instruction reads (writes) for `role`."""
    loops = operand_loops(op, emb, operand_name(emb, role))
    in_vec = emb.diagonal + emb.block_in
    out_vec = emb.diagonal + emb.block_out
    if role == "streamed":
        return loops, emb.stream, in_vec
    if role == "stationary":
        return loops, in_vec, out_vec
    return loops, emb.stream, out_vec


def matrix_elements(op: ContractionOp, emb: Embedding, role: str) -> int:
    """Elements of the dense matrix of `role` (vectors not padded to the block)."""
    return math.prod(p.extent for group in matrix_parts(op, emb, role) for p in group)


def reads_in_place(op: ContractionOp, emb: Embedding, role: str) -> bool:
    """True if the instruction can read (write) the operand of `role` as stored."""
    operand = op.operand(operand_name(emb, role))
    _, rows, cols = matrix_parts(op, emb, role)
    if role == "output":
        return is_contiguous_run(op, operand, cols) and _collapses(op, operand, rows)
    if is_padded(op, operand):
        return False
    if role == "streamed":
        return is_contiguous_run(op, operand, cols) and _collapses(op, operand, rows)
    return (
        is_contiguous_run(op, operand, rows + cols)
        or is_contiguous_run(op, operand, cols + rows)
        or (
            _collapses(op, operand, rows)
            and _collapses(op, operand, cols)
            and (is_contiguous_run(op, operand, rows) or is_contiguous_run(op, operand, cols))
        )
    )


def rewrite_kind(op: ContractionOp, emb: Embedding, role: str) -> str:
    """ "none", "repack", "im2col" or "diagonal": how the operand of `role` is rewritten."""
    operand = op.operand(operand_name(emb, role))
    if role == "stationary" and emb.diagonal:
        return "diagonal"
    if role != "output":
        _, rows, cols = matrix_parts(op, emb, role)
        vectors = cols if role == "streamed" else rows + cols
        if needs_im2col(op, operand, emb, vectors):
            return "im2col"
    if reads_in_place(op, emb, role):
        return "none"
    if is_padded(op, operand) or matrix_elements(op, emb, role) > operand.elements:
        return "im2col"
    return "repack"


@dataclass(frozen=True)
class LayoutCost:
    """Which operands an embedding rewrites, and the DRAM bytes of those rewrites."""

    streamed: str  # "none", "repack" or "im2col"
    stationary: str  # "none", "repack", "im2col" or "diagonal"
    output: str  # "none" or "repack"
    bytes: int

    def kind(self, role: str) -> str:
        return {"streamed": self.streamed, "stationary": self.stationary, "output": self.output}[
            role
        ]


def layout_cost(op: ContractionOp, emb: Embedding, instruction: InstructionModel) -> LayoutCost:
    """The rewrites `emb` needs; each reads the operand once and writes its matrix once."""
    kinds = {role: rewrite_kind(op, emb, role) for role in ROLES}
    elements = sum(
        op.operand(operand_name(emb, role)).elements + matrix_elements(op, emb, role)
        for role in ROLES
        if kinds[role] != "none"
    )
    return LayoutCost(
        kinds["streamed"], kinds["stationary"], kinds["output"], elements * ELEMENT_BYTES
    )


def _collapses(op: ContractionOp, operand: OperandSpec, parts: tuple[Part, ...]) -> bool:
    """True if `parts` are evenly spaced in the operand (one stride, any step)."""
    strides = dim_strides(op, operand)
    live = [p for p in parts if p.extent > 1]
    for outer, inner in itertools.pairwise(live):
        if part_stride(strides, outer) != part_stride(strides, inner) * inner.extent:
            return False
    return True
