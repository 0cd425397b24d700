"""Emitting one operator's tile loop nest: scratchpad tiles, DMAs, loops.

Given a tiling (tile sizes, loop order, the depth at which each operand is loaded),
`TileNest.emit` writes

    accel.alloc for every tile
    affine.for over the tile loops (outermost first)
      DMA loads of the operands whose innermost dependence is this loop
      ... innermost: the compute callback
      DMA stores of the outputs at their depth
    accel.dealloc

Every DMA is followed by its wait (issue 5 overlaps them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch_mlir import ir
from torch_mlir.dialects import affine

from polyfuse.analysis.affine import AffineAccess
from polyfuse.dialects import accel
from polyfuse.lowering.dram import DramTensor, row_major_strides

ALIGN_ELEMENTS = 16  # 64-byte alignment of scratchpad buffers


@dataclass
class ScratchpadArena:
    """Bump allocation of one operator's scratchpad buffers (freed after the operator)."""

    capacity_elements: int
    used_elements: int = 0
    peak_elements: int = 0

    def allocate(self, elements: int) -> ir.Value:
        offset = self.used_elements
        self.used_elements += -(-elements // ALIGN_ELEMENTS) * ALIGN_ELEMENTS
        self.peak_elements = max(self.peak_elements, self.used_elements)
        return accel.alloc(elements, offset * 4)


@dataclass
class TileOperand:
    """An operand tile: the box its access covers over one tile, in the scratchpad."""

    access: AffineAccess
    tile: tuple[int, ...]
    buffer: ir.Value | None = None
    dram: DramTensor | None = None
    init_dram: DramTensor | None = None  # where a loaded output's initial value comes from
    load: bool = False
    store: bool = False
    fill: float | None = None  # initialise the tile with a scalar instead of loading
    depth: int = 0
    box: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.box = tuple(
            sum(abs(c) * (t - 1) for c, t in zip(row, self.tile, strict=True)) + 1
            for row in self.access.coeffs
        )

    @property
    def box_strides(self) -> tuple[int, ...]:
        return row_major_strides(self.box)

    @property
    def elements(self) -> int:
        size = 1
        for extent in self.box:
            size *= extent
        return size

    def loop_strides(self) -> tuple[int, ...]:
        """Element stride in the tile buffer per loop of the operator."""
        strides = self.box_strides
        return tuple(
            sum(strides[r] * row[loop_dim] for r, row in enumerate(self.access.coeffs))
            for loop_dim in range(self.access.num_loops)
        )


@dataclass
class TileNest:
    """The tile loops of one operator."""

    extents: tuple[int, ...]
    tile: tuple[int, ...]
    order: tuple[int, ...]
    location: ir.Location

    def trips(self, loop: int) -> int:
        return self.extents[loop] // self.tile[loop]

    def emit(self, operands: Sequence[TileOperand], compute: Callable[[], None]) -> None:
        ivs: list[ir.Value] = []

        def level(depth: int) -> None:
            for operand in operands:
                if operand.depth == depth:
                    if operand.fill is not None:
                        _fill(operand)
                    elif operand.load:
                        self._dma(operand, ivs, to_scratchpad=True)
            if depth == len(self.order):
                compute()
            else:
                loop = affine.AffineForOp(0, self.trips(self.order[depth]))
                with ir.InsertionPoint(loop.body):
                    ivs.append(loop.induction_variable)
                    level(depth + 1)
                    ivs.pop()
                    affine.AffineYieldOp([])
            for operand in operands:
                if operand.depth == depth and operand.store:
                    self._dma(operand, ivs, to_scratchpad=False)

        level(0)

    def _dma(self, operand: TileOperand, ivs: list[ir.Value], to_scratchpad: bool) -> None:
        dram = operand.init_dram if to_scratchpad and operand.init_dram else operand.dram
        assert dram is not None and operand.buffer is not None
        access = operand.access
        c0 = dram.offset + sum(s * k for s, k in zip(dram.strides, access.consts, strict=True))
        coeffs = []
        for loop in self.order[: len(ivs)]:
            coeffs.append(
                sum(
                    dram.strides[r] * row[loop] * self.tile[loop]
                    for r, row in enumerate(access.coeffs)
                )
            )
        keep = [r for r, extent in enumerate(operand.box) if extent > 1] or [0]
        shape = [operand.box[r] for r in keep]
        spm_strides = [operand.box_strides[r] for r in keep]
        dram_strides = [dram.strides[r] for r in keep]
        shape, spm_strides, dram_strides = merge_contiguous(shape, spm_strides, dram_strides)
        spm_access = (0, tuple(0 for _ in ivs))
        dram_access = (c0, tuple(coeffs))
        if to_scratchpad:
            token = accel.dma_start(
                operand.buffer,
                dram.buffer,
                ivs,
                shape,
                [spm_access, dram_access],
                [spm_strides, dram_strides],
            )
        else:
            token = accel.dma_start(
                dram.buffer,
                operand.buffer,
                ivs,
                shape,
                [dram_access, spm_access],
                [dram_strides, spm_strides],
            )
        accel.dma_wait(token)


def _fill(operand: TileOperand) -> None:
    assert operand.buffer is not None and operand.fill is not None
    accel.vector(
        "copy",
        operand.buffer,
        [],
        [],
        [operand.elements],
        [(0, ())],
        [[1]],
        scalar=operand.fill,
    )


def merge_contiguous(shape: list[int], *stride_lists: list[int]) -> tuple[list[int], ...]:
    """Merge adjacent dims that are contiguous in every view (fewer, longer DMA rows)."""
    out_shape = [shape[0]]
    out_strides = [[strides[0]] for strides in stride_lists]
    for dim in range(1, len(shape)):
        mergeable = all(
            strides[-1] == stride_list[dim] * shape[dim]
            for strides, stride_list in zip(out_strides, stride_lists, strict=True)
        )
        if mergeable:
            out_shape[-1] *= shape[dim]
            for strides, stride_list in zip(out_strides, stride_lists, strict=True):
                strides[-1] = stride_list[dim]
        else:
            out_shape.append(shape[dim])
            for strides, stride_list in zip(out_strides, stride_lists, strict=True):
                strides.append(stride_list[dim])
    return (out_shape, *out_strides)
