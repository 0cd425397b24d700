"""Emitting one operator's tile loop nest: scratchpad tiles, DMAs, loops.

Given a tiling (tile sizes, loop order, the depth at which each operand is loaded),
`TileNest.emit` writes

    accel.alloc for every tile
    affine.for over the tile loops (outermost first)
      DMA loads of the operands whose innermost dependence is this loop
      ... innermost: the compute callback
      DMA stores of the outputs at their depth
    accel.dealloc

With `buffers` = 1 every DMA is followed by its wait. With `buffers` = U > 1 the
innermost tile loop is software-pipelined: the operands loaded (or stored) inside it get
U scratchpad copies, and the loop runs in groups of U tiles,

    affine.for %j = 0 to N / U
      DMA loads of tiles U*j + 0 .. U*j + U-1, each into its own copy (no wait yet)
      for each u: wait for copy u, compute on copy u, DMA store of copy u
      wait for the stores
    ... the N mod U remaining tiles the same way, unrolled

so on decoupled engines the load of tile i+1 and the store of tile i-1 run while tile i
computes (the emulator's scoreboard lets group j+1's loads start as soon as group j's
compute has released the copy). All waits stay in the block of their DMA.

The compute callback gets the tile indices of the tile it computes (one `TileIndex` per
tile loop), so a fused group (issue 4) can address operands it keeps on chip in place:
such an operand is `in_place` (no buffer, never moved), and an operand whose initial
value is neither a fill nor a DMA (an on-chip copy) has an `initialise` callback. A nest
inside a fused group's outer tile loop names that loop in `outer`: its DMAs start at the
outer tile.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from torch_mlir import ir
from torch_mlir.dialects import affine

from polyfuse.analysis.affine import AffineAccess
from polyfuse.analysis.tile_search import Tiling, TilingProblem, moved_rows, search_tiling
from polyfuse.dialects import accel
from polyfuse.lowering.dram import DramTensor, row_major_strides
from polyfuse.targets import Target

ALIGN_ELEMENTS = 16  # 64-byte alignment of scratchpad buffers


@dataclass
class ScratchpadArena:
    """Bump allocation of one operator's scratchpad buffers (freed after the operator).

    Buffers go up from `used_elements`, or with `top_down` down from the top of the
    scratchpad (the same space, mirrored: consecutive operators of a fused group
    alternate, so the next one's loads need not wait for this one's last compute)."""

    capacity_elements: int
    used_elements: int = 0
    peak_elements: int = 0
    top_down: bool = False
    base_elements: int = field(init=False)

    def __post_init__(self) -> None:
        self.base_elements = self.used_elements

    def allocate(self, elements: int) -> ir.Value:
        offset = self.used_elements
        self.used_elements += -(-elements // ALIGN_ELEMENTS) * ALIGN_ELEMENTS
        self.peak_elements = max(self.peak_elements, self.used_elements)
        if self.top_down:
            offset = self.capacity_elements - (self.used_elements - self.base_elements)
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
    # Initialise the tile at the given tile indices some other way (fused groups: a copy
    # from a storage kept on chip, or a fill of an operand viewed in place).
    initialise: Callable[[Sequence[TileIndex]], None] | None = None
    in_place: bool = False  # fused groups: viewed in place in a resident storage, no buffer
    depth: int = 0
    copies: list[ir.Value] = field(default_factory=list)  # pipelined: one buffer per stage
    box: tuple[int, ...] = field(init=False)
    # Per access row: (values one tile's DMA moves, their step in the row), `moved_rows`.
    moved: tuple[tuple[int, int], ...] = field(init=False)

    def __post_init__(self) -> None:
        self.box = tuple(
            sum(abs(c) * (t - 1) for c, t in zip(row, self.tile, strict=True)) + 1
            for row in self.access.coeffs
        )
        self.moved = moved_rows(self.access, self.tile)

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


@dataclass(frozen=True)
class TileIndex:
    """A tile index along one tile loop: scale * iv + offset (iv None: the constant offset)."""

    iv: ir.Value | None
    scale: int
    offset: int


@dataclass
class TileNest:
    """The tile loops of one operator."""

    extents: tuple[int, ...]
    tile: tuple[int, ...]
    order: tuple[int, ...]
    location: ir.Location
    # Enclosing loops that move the nest's origin (a fused group's outer tile loop):
    # (iv, loop, elements of that loop per iteration of iv).
    outer: tuple[tuple[ir.Value, int, int], ...] = ()

    def trips(self, loop: int) -> int:
        return self.extents[loop] // self.tile[loop]

    def pipelined(self, operand: TileOperand) -> bool:
        """Whether `operand` moves inside the innermost tile loop (so buffering helps it)."""
        return bool(self.order) and operand.depth == len(self.order) and not operand.in_place

    def emit(
        self,
        operands: Sequence[TileOperand],
        compute: Callable[[Sequence[TileIndex]], None],
        buffers: int = 1,
    ) -> None:
        """The tile loops; with `buffers` > 1 the pipelined operands need that many `copies`.

        `compute(tiles)` emits one tile's compute; `tiles` has one index per tile loop."""
        terms: list[TileIndex] = []
        stages = buffers if self.order and self.trips(self.order[-1]) > 1 else 1
        pipelined = [o for o in operands if stages > 1 and self.pipelined(o)]
        for operand in pipelined:
            if len(operand.copies) < stages:
                raise ValueError(f"a pipelined operand needs {stages} buffer copies")

        def level(depth: int) -> None:
            if stages > 1 and depth == len(self.order) - 1:
                self._pipelined_loop(operands, pipelined, compute, terms, stages)
                return
            self._begin_tiles(operands, depth, terms)
            if depth == len(self.order):
                compute(list(terms))
            else:
                loop = affine.AffineForOp(0, self.trips(self.order[depth]))
                with ir.InsertionPoint(loop.body):
                    terms.append(TileIndex(loop.induction_variable, 1, 0))
                    level(depth + 1)
                    terms.pop()
                    affine.AffineYieldOp([])
            self._store_tiles(operands, depth, terms)

        level(0)

    def _begin_tiles(
        self, operands: Sequence[TileOperand], depth: int, terms: list[TileIndex]
    ) -> None:
        """Initial values of the tiles of the operands at `depth`, each load waited for."""
        for operand in operands:
            if operand.depth != depth:
                continue
            if operand.initialise is not None:
                operand.initialise(list(terms))
            elif operand.fill is not None:
                _fill(operand)
            elif operand.load:
                accel.dma_wait(self._dma(operand, terms, to_scratchpad=True))

    def _store_tiles(
        self, operands: Sequence[TileOperand], depth: int, terms: list[TileIndex]
    ) -> None:
        for operand in operands:
            if operand.depth == depth and operand.store:
                accel.dma_wait(self._dma(operand, terms, to_scratchpad=False))

    def _pipelined_loop(
        self,
        operands: Sequence[TileOperand],
        pipelined: list[TileOperand],
        compute: Callable[[Sequence[TileIndex]], None],
        terms: list[TileIndex],
        stages: int,
    ) -> None:
        depth = len(self.order) - 1
        self._begin_tiles(operands, depth, terms)  # loaded outside the innermost loop
        # Operands at the innermost depth that the group does not load: in place, or
        # initialised by a callback (per tile, just before its compute).
        inner = [
            o for o in operands if o.depth == depth + 1 and (o.initialise is not None or o.in_place)
        ]
        trips = self.trips(self.order[depth])
        groups, remainder = divmod(trips, stages)
        if groups:
            loop = affine.AffineForOp(0, groups)
            with ir.InsertionPoint(loop.body):
                tiles = [TileIndex(loop.induction_variable, stages, u) for u in range(stages)]
                self._group(pipelined, inner, compute, terms, tiles)
                affine.AffineYieldOp([])
        if remainder:
            tiles = [TileIndex(None, 0, groups * stages + u) for u in range(remainder)]
            self._group(pipelined, inner, compute, terms, tiles)
        self._store_tiles(operands, depth, terms)

    def _group(
        self,
        pipelined: list[TileOperand],
        inner: list[TileOperand],
        compute: Callable[[Sequence[TileIndex]], None],
        terms: list[TileIndex],
        tiles: list[TileIndex],
    ) -> None:
        """Loads of every tile of the group, then per tile: wait, compute, store."""
        loads: list[list[ir.Value]] = []
        for stage, tile in enumerate(tiles):
            tokens = []
            for operand in pipelined:
                operand.buffer = operand.copies[stage]
                if operand.initialise is not None:
                    continue  # just before the tile's compute
                if operand.fill is not None:
                    _fill(operand)
                elif operand.load:
                    tokens.append(self._dma(operand, [*terms, tile], to_scratchpad=True))
            loads.append(tokens)
        stores: list[ir.Value] = []
        for stage, tile in enumerate(tiles):
            for token in loads[stage]:
                accel.dma_wait(token)
            for operand in pipelined:
                operand.buffer = operand.copies[stage]
            for operand in inner:
                if operand.initialise is not None:
                    operand.initialise([*terms, tile])
            compute([*terms, tile])
            for operand in pipelined:
                if operand.store:
                    stores.append(self._dma(operand, [*terms, tile], to_scratchpad=False))
        for token in stores:
            accel.dma_wait(token)
        for operand in pipelined:
            operand.buffer = operand.copies[0]

    def _dma(self, operand: TileOperand, terms: list[TileIndex], to_scratchpad: bool) -> ir.Value:
        """Starts the DMA of `operand`'s tile at the tile indices `terms`; returns the token."""
        dram = operand.init_dram if to_scratchpad and operand.init_dram else operand.dram
        assert dram is not None and operand.buffer is not None
        access = operand.access
        c0 = dram.offset + sum(s * k for s, k in zip(dram.strides, access.consts, strict=True))
        ivs: list[ir.Value] = []
        coeffs = []
        for iv, loop, step in self.outer:
            ivs.append(iv)
            coeffs.append(
                sum(dram.strides[r] * row[loop] * step for r, row in enumerate(access.coeffs))
            )
        for loop, term in zip(self.order, terms, strict=False):
            step = sum(
                dram.strides[r] * row[loop] * self.tile[loop] for r, row in enumerate(access.coeffs)
            )
            c0 += step * term.offset
            if term.iv is not None:
                ivs.append(term.iv)
                coeffs.append(step * term.scale)
        # Per row: the values moved and their step (a strided row moves only the values
        # the tile reads, into the same places of its box).
        rows = operand.moved
        keep = [r for r, (count, _) in enumerate(rows) if count > 1] or [0]
        if not operand.box:  # a rank-0 tensor (x.sum()): one element
            shape, spm_strides, dram_strides = [1], [1], [1]
        else:
            shape = [rows[r][0] for r in keep]
            spm_strides = [operand.box_strides[r] * rows[r][1] for r in keep]
            dram_strides = [dram.strides[r] * rows[r][1] for r in keep]
            shape, spm_strides, dram_strides = merge_contiguous(shape, spm_strides, dram_strides)
        spm_access = (0, tuple(0 for _ in ivs))
        dram_access = (c0, tuple(coeffs))
        if to_scratchpad:
            return accel.dma_start(
                operand.buffer,
                dram.buffer,
                ivs,
                shape,
                [spm_access, dram_access],
                [spm_strides, dram_strides],
            )
        return accel.dma_start(
            dram.buffer,
            operand.buffer,
            ivs,
            shape,
            [dram_access, spm_access],
            [dram_strides, spm_strides],
        )


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


def dma_copy(destination: DramTensor, source: DramTensor) -> None:
    """DMA `source` to `destination` (same shape; one of them in the scratchpad) and wait:
    a one-off transfer outside any tile loop."""
    keep = [d for d, extent in enumerate(source.shape) if extent > 1] or [0]
    shape, to_strides, from_strides = merge_contiguous(
        [source.shape[d] for d in keep],
        [destination.strides[d] for d in keep],
        [source.strides[d] for d in keep],
    )
    token = accel.dma_start(
        destination.buffer,
        source.buffer,
        [],
        shape,
        [(destination.offset, ()), (source.offset, ())],
        [to_strides, from_strides],
    )
    accel.dma_wait(token)


def padded(elements: int) -> int:
    """Scratchpad elements a buffer of `elements` takes (aligned)."""
    return -(-elements // ALIGN_ELEMENTS) * ALIGN_ELEMENTS


@dataclass(frozen=True)
class WorkEstimate:
    """A rough cost model the planner uses to trade buffer copies against tile size."""

    compute_cycles: float  # the operator's arithmetic on its engine, whatever the tiling
    per_tile_cycles: float  # fixed cost of each tile's compute (array fill and drain)
    dram_bytes_per_cycle: float
    dma_latency_cycles: float

    @staticmethod
    def of(target: Target, iterations: float, contraction: bool, body_ops: int) -> WorkEstimate:
        """The estimate for `iterations` loop points on `target`'s PE array (a
        contraction: MACs per cycle, fill and drain per tile) or vector unit (`body_ops`
        operations per point, the pipeline latency per tile)."""
        ops = max(1, body_ops)
        return WorkEstimate(
            compute_cycles=iterations / target.peak_macs_per_cycle
            if contraction
            else iterations * ops / target.vector_width,
            per_tile_cycles=2 * target.pe_rows + target.pe_cols
            if contraction
            else target.vector_latency_cycles * ops,
            dram_bytes_per_cycle=target.dram_bytes_per_cycle,
            dma_latency_cycles=target.dma_latency_cycles,
        )


def estimate_cycles(
    problem: TilingProblem, tiling: Tiling, stages: int, work: WorkEstimate
) -> float:
    """Estimated cycles of the operator: DMA and compute added, or overlapped when staged."""
    trips = tiling.trips(problem.extents)
    tiles = math.prod(trips)
    dmas = tiles * len(problem.operands)
    dma = tiling.traffic_elements * 4 / work.dram_bytes_per_cycle + dmas * work.dma_latency_cycles
    compute = work.compute_cycles + tiles * work.per_tile_cycles
    if stages <= 1 or not tiling.order:
        return dma + compute
    inner = trips[tiling.order[-1]]
    # Steady state hides the cheaper side; each pass over the innermost loop pays one fill.
    return max(dma, compute) + (dma + compute) / inner


def staged_footprint(problem: TilingProblem, tiling: Tiling, stages: int) -> int:
    """Aligned scratchpad elements of the tiling's buffers with `stages` copies of the
    operands moved inside the innermost tile loop."""
    total = 0
    for operand, depth in zip(problem.operands, tiling.load_depth, strict=True):
        box = 1
        for row in operand.access.coeffs:
            box *= sum(abs(c) * (t - 1) for c, t in zip(row, tiling.tile, strict=True)) + 1
        copies = stages if tiling.order and depth == len(tiling.order) else 1
        total += copies * padded(box)
    return total + problem.temporaries * padded(math.prod(tiling.tile))


def plan_buffering(
    problem: TilingProblem, spm_elements: int, buffers: int, work: WorkEstimate
) -> tuple[Tiling | None, int]:
    """The tiling and the number of pipeline stages (buffer copies) for one operator.

    With `buffers` = 1 this is the least-traffic tiling. Otherwise smaller tilings whose
    `buffers` copies of the inner operands fit are considered too, and the one with the
    fewest estimated cycles wins: more copies mean smaller tiles (more traffic, more
    per-tile overhead) but DMA hidden behind compute.
    """
    single = search_tiling(problem)
    if buffers <= 1 or single is None:
        return single, 1
    best, best_stages = single, 1
    best_cycles = estimate_cycles(problem, single, 1, work)
    for fraction in (1 / buffers, 2 / (buffers + 1), 3 / (buffers + 2)):
        capacity = int(problem.capacity_elements * fraction)
        candidate = search_tiling(replace(problem, capacity_elements=capacity))
        if candidate is None or not candidate.order:
            continue
        if staged_footprint(problem, candidate, buffers) > spm_elements:
            continue
        cycles = estimate_cycles(problem, candidate, buffers, work)
        if cycles < best_cycles:
            best, best_stages, best_cycles = candidate, buffers, cycles
    return best, best_stages


def allocate_tiles(
    arena: ScratchpadArena, nest: TileNest, operands: Sequence[TileOperand], stages: int
) -> None:
    """Scratchpad buffers of the tiles: `stages` copies of each pipelined operand."""
    for operand in operands:
        if operand.in_place:
            continue
        count = stages if stages > 1 and nest.pipelined(operand) else 1
        operand.copies = [arena.allocate(operand.elements) for _ in range(count)]
        operand.buffer = operand.copies[0]


def deallocate_tiles(operands: Sequence[TileOperand]) -> None:
    for operand in operands:
        if operand.in_place:
            continue
        for buffer in operand.copies or [operand.buffer]:
            accel.dealloc(buffer)
