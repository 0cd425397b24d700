"""The layout changes of an embedding as accel programs that the emulator executes.

`plan_layouts` decides, per role (layout.py `rewrite_kind`), whether the GEMM program
reads an operand in place or from a dense matrix that a layout program writes first, and
builds those programs. The emulator gets the operands in their PyTorch layouts (row-major
matrices, NCHW activations, KCRS weights) and gives Y back in its own layout.

A rewrite of operand P into its dense matrix D ([loops..., rows, cols], row-major over
the embedding's parts; diagonal parts index both the rows and the columns) runs

    zero-fill the slab (P padded) and the chunk (D block-diagonal) once
    for chunk loops (dims that alone index an unpadded axis of P, blocked to fit):
        DMA load     P's slab -> the slab's interior          (padding stays zero)
        VECTOR COPY  the slab -> the chunk, strided reads      (im2col, repack, diagonal)
        DMA store    the chunk -> D
    (the output: DMA load D's chunk, VECTOR COPY it into Y's slab, DMA store the slab)

The slabs partition P and the chunks partition D, so a rewrite reads P once and writes D
once, which is `layout_cost`'s model; the zeros of conv padding and of the off-diagonal
blocks are made on chip and only written as part of D. Slab and chunk together fit the
target's on-chip buffers (`staging_elements`, int8 elements); the emulator holds their
float32 stand-ins. There is one slab and one chunk buffer (no double buffering): the
emulator overlaps a chunk's store with the next slab's load, and the gather waits for both.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

from polyfuse.embedding.embedding import Embedding, Part
from polyfuse.embedding.instruction import InstructionModel
from polyfuse.embedding.layout import (
    ROLES,
    LayoutCost,
    dim_strides,
    layout_cost,
    matrix_parts,
    operand_name,
    padded_shape,
    part_stride,
)
from polyfuse.embedding.operators import ContractionOp, OperandSpec
from polyfuse.errors import ScratchpadCapacityError
from polyfuse.runtime.isa import MAX_DIMS, VectorKind
from polyfuse.runtime.program import Program, ProgramBuilder, View

LHS, RHS, OUT = 0, 1, 2  # DRAM buffers of the operands as stored; dense matrices follow
ORIGINAL = {"lhs": LHS, "rhs": RHS, "out": OUT}
LOAD_TOKEN, STORE_TOKEN = 0, 1


@dataclass(frozen=True)
class GemmOperand:
    """How the GEMM program addresses the matrix of one role in DRAM."""

    buffer: int
    loop_strides: tuple[tuple[Part, int], ...]
    row_stride: int
    col_stride: int

    def loop_stride(self, part: Part) -> int:
        return dict(self.loop_strides).get(part, 0)


@dataclass
class LayoutPlan:
    """The GEMM program's view of its operands and the layout programs around it."""

    operands: dict[str, GemmOperand]  # by role
    dense_shapes: list[tuple[int, ...]]  # DRAM buffers 3, 4, ...: the dense matrices
    before: Program | None  # rewrites of the streamed and the stationary operand
    after: Program | None  # the output restore
    spm_elements: int  # scratchpad the layout programs use
    cost: LayoutCost


def staging_elements(instruction: InstructionModel) -> int:
    """On-chip int8 elements a layout program may stage in: all three buffers (the GEMM
    has not started, or has finished)."""
    return (
        instruction.input_buffer_bytes
        + instruction.weight_buffer_bytes
        + instruction.accumulator_bytes
    )


def _row_major(sizes: list[int]) -> list[int]:
    return [math.prod(sizes[i + 1 :]) for i in range(len(sizes))]


def _collapsed_stride(strides: dict[str, int], parts: tuple[Part, ...]) -> int:
    """The one stride of evenly spaced parts (layout.py `_collapses`): the innermost's."""
    live = [p for p in parts if p.extent > 1]
    return part_stride(strides, live[-1]) if live else 0


def _in_place(op: ContractionOp, emb: Embedding, role: str) -> GemmOperand:
    name = operand_name(emb, role)
    strides = dim_strides(op, op.operand(name))
    loops, rows, cols = matrix_parts(op, emb, role)
    return GemmOperand(
        ORIGINAL[name],
        tuple((p, part_stride(strides, p)) for p in loops),
        _collapsed_stride(strides, rows),
        _collapsed_stride(strides, cols),
    )


def _dense(op: ContractionOp, emb: Embedding, role: str, buffer: int) -> GemmOperand:
    loops, rows, cols = matrix_parts(op, emb, role)
    n_rows = math.prod(p.extent for p in rows)
    n_cols = math.prod(p.extent for p in cols)
    strides = _row_major([p.extent for p in loops] + [n_rows, n_cols])
    return GemmOperand(buffer, tuple(zip(loops, strides, strict=False)), n_cols, 1)


# ---- one rewrite ----


@dataclass(frozen=True)
class _Chunking:
    """Dims the rewrite steps through in blocks: dim -> (axis of P, block)."""

    blocks: dict[str, tuple[int, int]]

    def size(self, dim: str, full: int) -> int:
        return self.blocks[dim][1] if dim in self.blocks else full


class _Rewrite:
    """Operand P (as stored) <-> its dense matrix D, through a slab and a chunk on chip."""

    def __init__(
        self, op: ContractionOp, operand: OperandSpec, original: int, dense: int, slots: list[Part]
    ) -> None:
        self.op = op
        self.operand = operand
        self.original = original
        self.dense = dense
        self.slots = slots  # D's dims, outermost first (diagonal parts twice)
        self.parts = list(dict.fromkeys(slots))  # each part once, in order
        self.pads = operand.padding(op.extents)
        self.padded = padded_shape(op, operand)
        self.dense_strides = _row_major([p.extent for p in slots])
        self.original_strides = _row_major(list(operand.shape))

    @property
    def has_padding(self) -> bool:
        return any(lo or hi for lo, hi in self.pads)

    @property
    def has_diagonal(self) -> bool:
        return len(self.parts) < len(self.slots)

    def part_dense_stride(self, part: Part, slot_strides: list[int]) -> int:
        return sum(s for slot, s in zip(self.slots, slot_strides, strict=True) if slot == part)

    def chunk_candidates(self) -> list[tuple[int, str]]:
        """(axis, dim) of P's unpadded axes indexed by one unsplit dim alone, outermost first."""
        found = []
        for index, axis in enumerate(self.operand.axes):
            live = [(d, c) for d, c in axis.terms if self.op.extents[d] > 1]
            if len(live) != 1 or live[0][1] != 1 or any(self.pads[index]):
                continue
            dim = live[0][0]
            mine = [p for p in self.slots if p.dim == dim]
            if len(mine) == 1 and mine[0].factor == 1:
                found.append((index, dim))
        return found

    def slab_sizes(self, chunking: _Chunking) -> list[int]:
        sizes = list(self.padded)
        for index, block in chunking.blocks.values():
            sizes[index] = block
        return sizes

    def chunk_sizes(self, chunking: _Chunking) -> list[int]:
        return [chunking.size(p.dim, p.extent) for p in self.slots]

    def staged(self, chunking: _Chunking) -> int:
        return math.prod(self.slab_sizes(chunking)) + math.prod(self.chunk_sizes(chunking))

    def choose_chunking(self, budget: int) -> _Chunking:
        """Whole P if it fits, else block P's outermost chunkable dims until it does."""
        chunking = _Chunking({})
        for index, dim in self.chunk_candidates():
            if self.staged(chunking) <= budget:
                break
            one = _Chunking({**chunking.blocks, dim: (index, 1)})
            per_index = self.staged(one)
            block = min(self.op.extents[dim], max(1, budget // per_index))
            chunking = _Chunking({**chunking.blocks, dim: (index, block)})
        if self.staged(chunking) > budget:
            raise ScratchpadCapacityError(
                f"{self.op.label}: rewriting {self.operand.name} stages "
                f"{self.staged(chunking)} elements on chip, more than the {budget} available"
            )
        return chunking

    def segments(self, chunking: _Chunking) -> Iterator[list[tuple[str, int, int, int]]]:
        """Per chunked dim (dim, trips, block, first index): full blocks, then the rest."""
        per_dim = []
        for dim, (_, block) in chunking.blocks.items():
            extent = self.op.extents[dim]
            full, rest = divmod(extent, block)
            runs = [(dim, full, block, 0)] if full else []
            per_dim.append(runs + ([(dim, 1, rest, full * block)] if rest else []))
        for combination in itertools.product(*per_dim):
            yield list(combination)

    def slab_part_strides(self, slab_sizes: list[int]) -> tuple[dict[Part, int], int]:
        """Stride of each part in the slab, and the slab element of index 0."""
        axis_strides = _row_major(slab_sizes)
        strides: dict[str, int] = {}
        origin = 0
        for axis, axis_stride, (lo, _) in zip(
            self.operand.axes, axis_strides, self.pads, strict=True
        ):
            origin += (axis.offset + lo) * axis_stride
            for dim, coeff in axis.terms:
                strides[dim] = strides.get(dim, 0) + coeff * axis_stride
        return {p: part_stride(strides, p) for p in self.parts}, origin


class _Emitter:
    """A ProgramBuilder with named views whose loop coefficients follow the open loops."""

    def __init__(self) -> None:
        self.builder = ProgramBuilder()
        self.loops: list[dict[str, int]] = []

    def open(self, trips: int, coeffs: dict[str, int], where: str) -> bool:
        if trips <= 1:
            return False
        self.builder.loop(trips, where)
        self.loops.append(coeffs)
        return True

    def close(self, opened: bool) -> None:
        if opened:
            self.builder.end_loop()
            self.loops.pop()

    def coeffs(self, name: str) -> tuple[int, ...]:
        return tuple(c.get(name, 0) for c in self.loops)

    def zero(self, base: int, elements: int, where: str) -> None:
        if elements:
            self.builder.vector(
                VectorKind.COPY, View.spm(base, strides=(1,)), [View.imm()], (elements,), 0.0, where
            )

    def copy(
        self,
        dst: tuple[str, int, int],  # (view name, DRAM buffer or -1 for the scratchpad, c0)
        src: tuple[str, int, int],
        dims: list[tuple[int, int, int]],  # (extent, dst stride, src stride), outermost first
        where: str,
    ) -> None:
        """One DMA (DRAM <-> scratchpad) or VECTOR COPY (scratchpad -> scratchpad) over
        `dims`; dims beyond the instruction's six become loops around it."""
        dims = _merged(dims)
        outer, inner = dims[: max(0, len(dims) - MAX_DIMS)], dims[-MAX_DIMS:]
        opened = [self.open(e, {dst[0]: d, src[0]: s}, f"{where} (outer dim)") for e, d, s in outer]
        shape = [e for e, _, _ in inner] or [1]
        views = []
        for (name, buffer, c0), strides in (
            (dst, [d for _, d, _ in inner]),
            (src, [s for *_, s in inner]),
        ):
            strides = strides or [0]
            if buffer < 0:
                views.append(View.spm(c0, self.coeffs(name), strides))
            else:
                views.append(View.dram(buffer, c0, self.coeffs(name), strides))
        if dst[1] < 0 and src[1] < 0:
            self.builder.vector(VectorKind.COPY, views[0], [views[1]], shape, 0.0, where)
        else:
            token = LOAD_TOKEN if dst[1] < 0 else STORE_TOKEN
            self.builder.dma(views[0], views[1], shape, token, where)
            self.builder.wait(token, where)
        for flag in reversed(opened):
            self.close(flag)


def _merged(dims: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Drops extent-1 dims and fuses neighbours that are one run in both views."""
    merged: list[tuple[int, int, int]] = []
    for extent, dst, src in dims:
        if extent == 1:
            continue
        if merged:
            outer_extent, outer_dst, outer_src = merged[-1]
            if outer_dst == dst * extent and outer_src == src * extent:
                merged[-1] = (outer_extent * extent, dst, src)
                continue
        merged.append((extent, dst, src))
    return merged


@dataclass(frozen=True)
class _Staging:
    """Where a rewrite's slab and chunk live on chip, and the strides of both."""

    slab_sizes: list[int]
    chunk_sizes: list[int]
    slab_part_strides: dict[Part, int]
    slab_origin: int  # slab element of the dims' index 0 (inside the padding)
    slab_interior: int  # slab element of P's element 0

    @property
    def chunk_base(self) -> int:
        return math.prod(self.slab_sizes)

    @staticmethod
    def of(rewrite: _Rewrite, chunking: _Chunking) -> _Staging:
        slab_sizes = rewrite.slab_sizes(chunking)
        parts, origin = rewrite.slab_part_strides(slab_sizes)
        lows = [lo for lo, _ in rewrite.pads]
        interior = sum(lo * s for lo, s in zip(lows, _row_major(slab_sizes), strict=True))
        return _Staging(slab_sizes, rewrite.chunk_sizes(chunking), parts, origin, interior)


def _emit_segment(
    emitter: _Emitter,
    rewrite: _Rewrite,
    staging: _Staging,
    segment: list[tuple[str, int, int, int]],
    axis_of: dict[str, int],
    restore: bool,
) -> None:
    """Load, gather (scatter) and store of the chunks of one segment, in its chunk loops."""
    size = {dim: block for dim, _, block, _ in segment}
    dense_part = {p: rewrite.part_dense_stride(p, rewrite.dense_strides) for p in rewrite.parts}
    part_of = {p.dim: p for p in rewrite.parts}
    original_c0 = sum(first * rewrite.original_strides[axis_of[d]] for d, _, _, first in segment)
    dense_c0 = sum(first * dense_part[part_of[d]] for d, _, _, first in segment)
    what = f"{'restore' if restore else 'rewrite'} {rewrite.operand.name}"
    opened = [
        emitter.open(
            trips,
            {
                "P": block * rewrite.original_strides[axis_of[dim]],
                "D": block * dense_part[part_of[dim]],
            },
            f"{what}: chunks of {dim}",
        )
        for dim, trips, block, _ in segment
    ]
    dim_of_axis = {index: dim for dim, index in axis_of.items()}
    box = [
        size[dim_of_axis[index]] if index in dim_of_axis else axis.size
        for index, axis in enumerate(rewrite.operand.axes)
    ]
    # (extent, on-chip stride, DRAM stride) of P's box and of D's chunk.
    slab_dims = list(
        zip(box, _row_major(staging.slab_sizes), rewrite.original_strides, strict=True)
    )
    chunk_strides = _row_major(staging.chunk_sizes)
    chunk_dims = [
        (size.get(p.dim, p.extent), c, d)
        for p, c, d in zip(rewrite.slots, chunk_strides, rewrite.dense_strides, strict=True)
    ]
    # (extent, chunk stride, slab stride) of each part: the im2col / repack / diagonal.
    gather = [
        (
            size.get(p.dim, p.extent),
            rewrite.part_dense_stride(p, chunk_strides),
            staging.slab_part_strides[p],
        )
        for p in rewrite.parts
    ]
    slab = ("slab", -1, staging.slab_interior)
    windows = ("slab", -1, staging.slab_origin)
    chunk = ("chunk", -1, staging.chunk_base)
    original = ("P", rewrite.original, original_c0)
    dense = ("D", rewrite.dense, dense_c0)
    if restore:
        emitter.copy(chunk, dense, chunk_dims, f"{what}: load matrix chunk")
        emitter.copy(windows, chunk, [(e, s, c) for e, c, s in gather], f"{what}: scatter")
        emitter.copy(original, slab, [(e, o, s) for e, s, o in slab_dims], f"{what}: store")
    else:
        emitter.copy(slab, original, slab_dims, f"{what}: load slab")
        emitter.copy(chunk, windows, gather, f"{what}: gather")
        emitter.copy(dense, chunk, [(e, d, c) for e, c, d in chunk_dims], f"{what}: store")
    for flag in reversed(opened):
        emitter.close(flag)


def _emit_rewrite(emitter: _Emitter, rewrite: _Rewrite, budget: int, restore: bool) -> int:
    """Appends the program of one rewrite (or, with `restore`, of D back into P); returns
    the scratchpad elements it stages."""
    chunking = rewrite.choose_chunking(budget)
    staging = _Staging.of(rewrite, chunking)
    what = f"{'restore' if restore else 'rewrite'} {rewrite.operand.name}"
    # Zero once: loads only write the slab's interior, gathers only the diagonal blocks.
    if rewrite.has_padding:
        emitter.zero(0, staging.chunk_base, f"{what}: zero padding")
    if rewrite.has_diagonal:
        chunk_elements = math.prod(staging.chunk_sizes)
        emitter.zero(staging.chunk_base, chunk_elements, f"{what}: zero off-diagonal blocks")
    axis_of = {dim: index for dim, (index, _) in chunking.blocks.items()}
    for segment in rewrite.segments(chunking):
        _emit_segment(emitter, rewrite, staging, segment, axis_of, restore)
    return rewrite.staged(chunking)


def _slots(op: ContractionOp, emb: Embedding, role: str) -> list[Part]:
    loops, rows, cols = matrix_parts(op, emb, role)
    return [*loops, *rows, *cols]


def plan_layouts(op: ContractionOp, emb: Embedding, instruction: InstructionModel) -> LayoutPlan:
    """The GEMM program's operand views and the layout programs that make them legal."""
    cost = layout_cost(op, emb, instruction)
    budget = staging_elements(instruction)
    operands: dict[str, GemmOperand] = {}
    dense_shapes: list[tuple[int, ...]] = []
    programs = {"before": _Emitter(), "after": _Emitter()}
    used = {"before": False, "after": False}
    spm = 0
    for role in ROLES:
        if cost.kind(role) == "none":
            operands[role] = _in_place(op, emb, role)
            continue
        buffer = OUT + 1 + len(dense_shapes)
        slots = _slots(op, emb, role)
        dense_shapes.append(tuple(p.extent for p in slots) or (1,))
        operands[role] = _dense(op, emb, role, buffer)
        name = operand_name(emb, role)
        rewrite = _Rewrite(op, op.operand(name), ORIGINAL[name], buffer, slots)
        phase = "after" if role == "output" else "before"
        spm = max(spm, _emit_rewrite(programs[phase], rewrite, budget, restore=role == "output"))
        used[phase] = True
    return LayoutPlan(
        operands,
        dense_shapes,
        programs["before"].builder.build() if used["before"] else None,
        programs["after"].builder.build() if used["after"] else None,
        spm,
        cost,
    )
