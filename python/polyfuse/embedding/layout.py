"""Layout transformations that make an embedding legal, and what they cost in DRAM traffic.

The instruction reads its operands as

    streamed     [loops..., stream rows, block_in vector]        (vector contiguous)
    stationary   [loops..., block_in, block_out] blocks          (one side contiguous)
    accumulator  [loops..., stream rows, block_out vector]       (vector contiguous)

Stream rows are addressed one by one (VTA's micro-ops, Gemmini's row addresses), so any
affine row pattern is free. A vector (block_in, block_out) must be one contiguous run of
the operand as stored; otherwise the operand is rewritten once before (or, for the
output, after) the operator:

    repack       transposition / channel packing (NCHW -> NHWC-style), same size
    im2col       a window dim (r, s) merged into a vector with its pixel dim, or a
                 padded spatial axis inside a vector: the expanded matrix is written
    diagonal     batch dims packed block-diagonally: the stationary blocks are written
                 with their zero off-diagonal blocks

Padding a vector up to the block costs no traffic: VTA's and Gemmini's loads zero-fill
partial blocks. Each rewrite reads the operand and writes the new layout once:
`layout_bytes` counts both at `element_bytes` per element (int8 tensors).

`transform_*` build the transformed DRAM buffers (float32, vectors padded to the block)
with numpy strided views; `restore_output` writes the accumulator layout back to Y.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from polyfuse.embedding.embedding import Embedding, Part
from polyfuse.embedding.instruction import InstructionModel, ceil_div
from polyfuse.embedding.operators import ContractionOp, OperandSpec

ELEMENT_BYTES = 1


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


@dataclass(frozen=True)
class LayoutCost:
    """Which operands an embedding rewrites, and the DRAM bytes of those rewrites."""

    streamed: str  # "none", "repack" or "im2col"
    stationary: str  # "none", "repack", "im2col" or "diagonal"
    output: str  # "none" or "repack"
    bytes: int


def layout_cost(op: ContractionOp, emb: Embedding, instruction: InstructionModel) -> LayoutCost:
    streamed = op.operand(emb.streamed())
    stationary = op.operand(emb.stationary())
    loops_of = {
        name: math.prod(p.extent for p in emb.loops if op.operand(name).uses(p.dim))
        for name in ("lhs", "rhs", "out")
    }
    in_vec = emb.diagonal + emb.block_in
    out_vec = emb.diagonal + emb.block_out
    total = 0

    s_kind = "none"
    if needs_im2col(op, streamed, emb, in_vec):
        s_kind = "im2col"
        written = loops_of[emb.streamed()] * emb.stream_extent * emb.in_extent
    elif not is_contiguous_run(op, streamed, in_vec):
        s_kind = "repack"
        written = streamed.elements
    if s_kind != "none":
        total += streamed.elements + written

    w_kind = "none"
    if emb.diagonal:
        w_kind = "diagonal"
        written = loops_of[emb.stationary()] * emb.in_extent * emb.out_extent
    elif needs_im2col(op, stationary, emb, in_vec + out_vec):
        w_kind = "im2col"
        written = loops_of[emb.stationary()] * emb.in_extent * emb.out_extent
    elif not (
        is_contiguous_run(op, stationary, in_vec + out_vec)
        or is_contiguous_run(op, stationary, out_vec + in_vec)
        or (
            _collapses(op, stationary, in_vec)
            and _collapses(op, stationary, out_vec)
            and (
                is_contiguous_run(op, stationary, in_vec)
                or is_contiguous_run(op, stationary, out_vec)
            )
        )
    ):
        w_kind = "repack"
        written = stationary.elements
    if w_kind != "none":
        total += stationary.elements + written

    o_kind = "none" if is_contiguous_run(op, op.out, out_vec) else "repack"
    if o_kind != "none":
        total += 2 * op.out.elements
    return LayoutCost(s_kind, w_kind, o_kind, total * ELEMENT_BYTES)


def _collapses(op: ContractionOp, operand: OperandSpec, parts: tuple[Part, ...]) -> bool:
    """True if `parts` are evenly spaced in the operand (one stride, any step)."""
    strides = dim_strides(op, operand)
    live = [p for p in parts if p.extent > 1]
    for outer, inner in itertools.pairwise(live):
        if part_stride(strides, outer) != part_stride(strides, inner) * inner.extent:
            return False
    return True


# ---- building the transformed buffers (numerics) ----


def _view(op: ContractionOp, name: str, array: np.ndarray, parts: list[Part]) -> np.ndarray:
    """A strided view of operand `name` with one axis per part (zero padding applied)."""
    operand = op.operand(name)
    pads = operand.padding(op.extents)
    if any(lo or hi for lo, hi in pads):
        array = np.pad(array, pads)
    array = np.ascontiguousarray(array)
    strides = dim_strides(op, operand)
    item = array.itemsize
    return np.lib.stride_tricks.as_strided(
        array,
        shape=[p.extent for p in parts],
        strides=[part_stride(strides, p) * item for p in parts],
        writeable=False,
    )


def _padded(array: np.ndarray, axis_sizes: list[int]) -> np.ndarray:
    pads = [(0, size - have) for size, have in zip(axis_sizes, array.shape, strict=True)]
    return np.pad(array, pads) if any(hi for _, hi in pads) else array


def block_pad(extent: int, block: int) -> int:
    return ceil_div(extent, block) * block


def operand_loops(op: ContractionOp, emb: Embedding, name: str) -> tuple[Part, ...]:
    return tuple(p for p in emb.loops if op.operand(name).uses(p.dim))


def transform_streamed(
    op: ContractionOp, emb: Embedding, array: np.ndarray, instruction: InstructionModel
) -> np.ndarray:
    """[loops..., stream, block_in (padded to the block)] of the streamed operand."""
    loops = operand_loops(op, emb, emb.streamed())
    in_vec = emb.diagonal + emb.block_in
    view = _view(op, emb.streamed(), array, [*loops, *emb.stream, *in_vec])
    shape = [p.extent for p in loops] + [emb.stream_extent, emb.in_extent]
    matrix = view.reshape(shape).astype(np.float32, copy=True)
    in_pad = block_pad(emb.in_extent, instruction.block_in)
    return np.ascontiguousarray(_padded(matrix, [*shape[:-1], in_pad]))


def transform_stationary(
    op: ContractionOp, emb: Embedding, array: np.ndarray, instruction: InstructionModel
) -> np.ndarray:
    """[loops..., block_in, block_out] of the stationary operand, block-diagonal over `diagonal`."""
    loops = operand_loops(op, emb, emb.stationary())
    view = _view(
        op, emb.stationary(), array, [*loops, *emb.diagonal, *emb.block_in, *emb.block_out]
    )
    lead = [p.extent for p in loops]
    diag = math.prod(p.extent for p in emb.diagonal)
    rows = math.prod(p.extent for p in emb.block_in)
    cols = math.prod(p.extent for p in emb.block_out)
    dense = view.reshape([*lead, diag, rows, cols])
    blocks = np.zeros([*lead, diag, rows, diag, cols], dtype=np.float32)
    for d in range(diag):
        blocks[..., d, :, d, :] = dense[..., d, :, :]
    matrix = blocks.reshape([*lead, diag * rows, diag * cols])
    return np.ascontiguousarray(
        _padded(
            matrix,
            [
                *lead,
                block_pad(diag * rows, instruction.block_in),
                block_pad(diag * cols, instruction.block_out),
            ],
        )
    )


def output_buffer(op: ContractionOp, emb: Embedding, instruction: InstructionModel) -> np.ndarray:
    loops = operand_loops(op, emb, "out")
    shape = [p.extent for p in loops] + [
        emb.stream_extent,
        block_pad(emb.out_extent, instruction.block_out),
    ]
    return np.zeros(shape, dtype=np.float32)


def restore_output(op: ContractionOp, emb: Embedding, buffer: np.ndarray) -> np.ndarray:
    """Y in its own layout from the accumulator layout [loops..., stream, block_out]."""
    loops = operand_loops(op, emb, "out")
    out_vec = emb.diagonal + emb.block_out
    parts = [*loops, *emb.stream, *out_vec]
    result = np.zeros(op.out.shape, dtype=np.float32)
    strides = dim_strides(op, op.out)
    view = np.lib.stride_tricks.as_strided(
        result,
        shape=[p.extent for p in parts],
        strides=[part_stride(strides, p) * result.itemsize for p in parts],
    )
    valid = buffer[..., : emb.out_extent]
    view[...] = valid.reshape([p.extent for p in parts])
    return result
