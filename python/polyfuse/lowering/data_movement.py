"""Operators that only move data: copies between DRAM views and fills.

A copy streams tiles through the scratchpad (load, store); a fill stores tiles that the
vector unit filled. Used for pads whose source cannot write into the pad directly,
concatenation, insert_slice, non-contiguous reshapes and returned views.
"""

from __future__ import annotations

from torch_mlir import ir

from polyfuse.analysis.affine import AffineAccess
from polyfuse.analysis.tile_search import TiledOperand, TilingProblem, search_tiling
from polyfuse.dialects import accel
from polyfuse.errors import ScratchpadCapacityError
from polyfuse.lowering.dram import DramTensor
from polyfuse.lowering.tile_nest import ALIGN_ELEMENTS, ScratchpadArena, TileNest, TileOperand
from polyfuse.targets import Target


def _identity(rank: int) -> AffineAccess:
    rows = tuple(tuple(1 if r == c else 0 for c in range(rank)) for r in range(rank))
    return AffineAccess(rows, tuple(0 for _ in range(rank)), rank)


def emit_copy(
    source: DramTensor | None,
    destination: DramTensor,
    target: Target,
    where: str,
    fill: float | None = None,
) -> tuple[tuple[int, ...], int]:
    """Copy `source` into `destination` (or fill it with `fill`); (tile, planned bytes)."""
    shape = destination.shape
    if not shape:
        shape = (1,)
        destination = DramTensor(destination.buffer, (1,), (1,), destination.offset)
        if source is not None:
            source = DramTensor(source.buffer, (1,), (1,), source.offset)
    access = _identity(len(shape))
    problem = TilingProblem(
        extents=shape,
        is_reduction=tuple(False for _ in shape),
        operands=(TiledOperand(access, is_output=True, reads=source is not None),),
        temporaries=0,
        capacity_elements=target.scratchpad_bytes // 4 - ALIGN_ELEMENTS,
    )
    tiling = search_tiling(problem)
    if tiling is None:
        needed = (1 + ALIGN_ELEMENTS) * 4  # one element, in one aligned buffer
        raise ScratchpadCapacityError(
            f"{where}: copying a tensor of shape {shape} needs a scratchpad tile of at least "
            f"one element, but not even one fits the scratchpad of target '{target.name}' "
            f"({target.scratchpad_bytes} bytes); its smallest tile needs {needed} bytes. "
            "Use a target with a larger scratchpad."
        )
    arena = ScratchpadArena(target.scratchpad_bytes // 4)
    operand = TileOperand(
        access,
        tiling.tile,
        dram=destination,
        init_dram=source,
        load=source is not None,
        store=True,
        fill=fill,
        depth=tiling.load_depth[0],
    )
    operand.buffer = arena.allocate(operand.elements)
    TileNest(shape, tiling.tile, tiling.order, ir.Location.current).emit(
        [operand], lambda _tiles: None
    )
    accel.dealloc(operand.buffer)
    return tiling.tile, tiling.traffic_elements * 4
