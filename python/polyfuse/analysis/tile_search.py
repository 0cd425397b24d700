"""Tile-size and loop-order search for one operator under a scratchpad capacity.

The operator is a loop nest (extents, parallel/reduction) whose operands are read or
written through affine accesses. A tiling picks a tile size per loop (a divisor of its
extent, so every tile is full) and an order of the tile loops (reductions innermost, so
an output tile stays on chip until it is complete). Each operand's tile is the box its
access covers over the tile; it is loaded at the innermost tile loop it depends on and
reused across the loops inside that one. Its DRAM traffic is therefore

    box elements x product of the trip counts of the loops down to that depth.

The search enumerates every candidate tiling (vectorised with numpy), drops those whose
boxes (plus any temporaries) exceed the capacity, and picks the least traffic; ties go
to fewer, larger tiles.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from polyfuse.analysis.affine import AffineAccess
from polyfuse.analysis.divisors import divisors

MAX_CANDIDATE_TILINGS = 200_000


@dataclass(frozen=True)
class TiledOperand:
    """An operand as the search sees it."""

    access: AffineAccess
    is_output: bool = False
    reads: bool = True  # inputs; outputs whose initial value the operator reads


@dataclass(frozen=True)
class TilingProblem:
    extents: tuple[int, ...]
    is_reduction: tuple[bool, ...]
    operands: tuple[TiledOperand, ...]
    temporaries: int  # scratch tiles of the full iteration-tile size
    capacity_elements: int
    # Loops whose tile must be a multiple of a block (e.g. the PE array's columns).
    fixed_full: tuple[bool, ...] = ()
    # Per loop: its tile must be a multiple of this (1 = any divisor of the extent), e.g.
    # the PE-array block an embedding issues along it (lowering/contraction_embedding.py).
    multiple_of: tuple[int, ...] = ()


@dataclass(frozen=True)
class Tiling:
    tile: tuple[int, ...]
    order: tuple[int, ...]  # tile loops with more than one trip, outermost first
    load_depth: tuple[int, ...]  # per operand: number of tile loops enclosing its load
    traffic_elements: int
    footprint_elements: int

    def trips(self, extents: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(e // t for e, t in zip(extents, self.tile, strict=True))


def search_cached(
    problem: TilingProblem, searched: dict[TilingProblem, Tiling | None]
) -> Tiling | None:
    """`search_tiling`, remembered in `searched` (planners pose the same problems for a
    model's repeated layers and across candidate groups)."""
    if problem not in searched:
        searched[problem] = search_tiling(problem)
    return searched[problem]


def box_elements(access: AffineAccess, tile: tuple[int, ...]) -> int:
    size = 1
    for row in access.coeffs:
        size *= sum(abs(c) * (t - 1) for c, t in zip(row, tile, strict=True)) + 1
    return size


def moved_rows(access: AffineAccess, tile: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """Per access row, (values one tile's DMA moves, their step in the row).

    A row that only one loop with more than one tile iteration indexes, with a positive
    coefficient c, takes that loop's tile values c apart (a stride-2 1x1 convolution's
    input row `2*oh + kh` over a tile of oh): the DMA moves just those, with stride c,
    into the same places of the tile's box. Not the last row, the tensor's contiguous
    dim: there the values skipped share DRAM bursts with the values read, so skipping
    them saves no DRAM transfer, only makes every value its own burst. Any other row
    moves its whole box width (`box_elements`), which is also what a tile holds in the
    scratchpad."""
    rows = []
    last = len(access.coeffs) - 1
    for index, row in enumerate(access.coeffs):
        active = [(c, t) for c, t in zip(row, tile, strict=True) if c and t > 1]
        strided = len(active) == 1 and active[0][0] > 1 and all(c >= 0 for c in row)
        if strided and index < last:
            rows.append((active[0][1], active[0][0]))
        else:
            rows.append((sum(abs(c) * (t - 1) for c, t in zip(row, tile, strict=True)) + 1, 1))
    return tuple(rows)


def moved_elements(access: AffineAccess, tile: tuple[int, ...]) -> int:
    """Elements one tile's DMA moves (`moved_rows`)."""
    size = 1
    for count, _ in moved_rows(access, tile):
        size *= count
    return size


def _candidates(problem: TilingProblem) -> list[list[int]]:
    lists = []
    for loop, extent in enumerate(problem.extents):
        if problem.fixed_full and problem.fixed_full[loop]:
            lists.append([extent])
        elif problem.multiple_of and problem.multiple_of[loop] > 1:
            lists.append([d for d in divisors(extent) if d % problem.multiple_of[loop] == 0])
        else:
            lists.append(list(divisors(extent)))
    total = int(np.prod([len(c) for c in lists], dtype=np.float64))
    if total > MAX_CANDIDATE_TILINGS:
        # Too many combinations: keep powers of two and the full extent.
        lists = [sorted({d for d in c if d & (d - 1) == 0} | {c[-1]}) for c in lists]
    return lists


def _grid(lists: list[list[int]]) -> np.ndarray:
    """Every combination of one value per list, one per row, in `itertools.product`'s
    order (the last list varies fastest). Filled by broadcasting one column at a time:
    a list of tuples is slow for grids of thousands of tilings."""
    sizes = [len(values) for values in lists]
    grid = np.empty((*sizes, len(lists)), dtype=np.int64)
    for position, values in enumerate(lists):
        along = [1] * len(lists)
        along[position] = len(values)
        grid[..., position] = np.array(values, dtype=np.int64).reshape(along)
    return grid.reshape(int(np.prod(sizes)), len(lists))


def _full_orders(problem: TilingProblem) -> list[tuple[int, ...]]:
    """Every order of the loops that can have more than one trip, reductions innermost."""
    parallel = [
        dim for dim, e in enumerate(problem.extents) if e > 1 and not problem.is_reduction[dim]
    ]
    reduction = [
        dim for dim, e in enumerate(problem.extents) if e > 1 and problem.is_reduction[dim]
    ]
    reduction_orders: list[tuple[int, ...]] = [tuple(reduction)]
    # The order of the reduction loops matters only when operands depend on different
    # subsets of them (a conv's input and weight both depend on c, kh and kw).
    subsets = {operand.access.loops_used() & set(reduction) for operand in problem.operands}
    if len(subsets - {frozenset()}) > 1:
        reduction_orders = list(itertools.permutations(reduction))
    return [tuple(p) + r for p in itertools.permutations(parallel) for r in reduction_orders]


# Per operand and loop order: (loop, the loops inside it the operand depends on) for
# every loop it does not depend on with such loops inside it (see `search_tiling`).
_Factors = tuple[tuple[int, frozenset[int]], ...]


def _factor_keys(used: frozenset[int], order: tuple[int, ...]) -> _Factors:
    keys = []
    for position, loop in enumerate(order):
        inner = used.intersection(order[position + 1 :])
        if loop not in used and inner:
            keys.append((loop, inner))
    return tuple(keys)


def _reload_factor(
    trips: np.ndarray, reloads: np.ndarray, loop: int, inner: frozenset[int]
) -> np.ndarray:
    """Per candidate tiling, the factor a loop the operand does not depend on adds to its
    loads: the loop's trips if a loop inside it that the operand depends on has more
    than one trip (the operand is loaded again each time around), else 1."""
    return np.where(reloads[:, sorted(inner)].any(axis=1), trips[:, loop], 1)


def _load_depths(
    problem: TilingProblem, trips: tuple[int, ...], order: tuple[int, ...]
) -> tuple[int, ...]:
    depths = []
    for operand in problem.operands:
        used = operand.access.loops_used()
        depth = 0
        for position, loop in enumerate(order):
            if loop in used and trips[loop] > 1:
                depth = position + 1
        depths.append(depth)
    return tuple(depths)


@lru_cache(maxsize=4096)
def search_tiling(problem: TilingProblem) -> Tiling | None:
    """The least-traffic tiling that fits, or None when no tiling fits."""
    grids = _grid(_candidates(problem))
    extents = np.array(problem.extents, dtype=np.int64)
    # Every access row of every operand at once: its width over each tile.
    rows = [row for operand in problem.operands for row in operand.access.coeffs]
    signed = np.array(rows, dtype=np.int64).reshape(len(rows), len(problem.extents))
    coeffs = np.abs(signed)
    widths = (grids - 1) @ coeffs.T + 1
    # What a DMA moves per row (`moved_rows`): a strided row indexed by one loop with
    # more than one tile iteration moves that loop's tile, not its box width.
    indexed = (coeffs > 0).astype(np.int64)
    single = ((grids > 1).astype(np.int64) @ indexed.T) == 1
    strided = np.asarray((signed >= 0).all(axis=1) & (coeffs > 1).any(axis=1))
    for last in np.cumsum([len(operand.access.coeffs) for operand in problem.operands]) - 1:
        if last >= 0:
            strided[last] = False  # the contiguous dim: skipping saves no burst
    moved_widths = np.where(single & strided[None, :], (grids - 1) @ indexed.T + 1, widths)
    boxes = []
    moved = []
    first = 0
    for operand in problem.operands:
        end = first + len(operand.access.coeffs)
        boxes.append(np.prod(widths[:, first:end], axis=1))
        moved.append(np.prod(moved_widths[:, first:end], axis=1))
        first = end
    footprint = sum(boxes) + problem.temporaries * np.prod(grids, axis=1)
    feasible = footprint <= problem.capacity_elements
    if not feasible.any():
        return None
    grids, footprint = grids[feasible], footprint[feasible]
    moved = [elements[feasible] for elements in moved]
    trips = extents[None, :] // grids

    # An operand is loaded as often as the product of the trips down to the innermost
    # tile loop (with more than one trip) it depends on. So every loop it depends on
    # counts whatever the order (one with a single trip multiplies by 1), and a loop it
    # does not depend on counts only if a loop it depends on, with more than one trip,
    # runs inside it. The factors depend on the
    # order only through (loop, dependent loops inside it), so they are shared between
    # orders and operands: the search runs many small orders over few hundred tilings,
    # where numpy's per-call cost, not the arithmetic, is what takes the time.
    reloads = trips > 1
    factors: dict[tuple[int, frozenset[int]], np.ndarray] = {}
    loads: dict[tuple[int, _Factors], np.ndarray] = {}  # (operand, its factors) -> loads
    used = [operand.access.loops_used() for operand in problem.operands]
    own = []  # per operand: elements moved x moves x the trips of the loops it depends on
    for operand, elements, loops in zip(problem.operands, moved, used, strict=True):
        moves = (2 if operand.reads else 1) if operand.is_output else 1
        own.append(elements * moves * np.prod(trips[:, sorted(loops)], axis=1))
    best_traffic = np.full(len(grids), np.iinfo(np.int64).max, dtype=np.int64)
    best_order = np.zeros(len(grids), dtype=np.int64)
    orders = _full_orders(problem)
    evaluated: set[tuple[_Factors, ...]] = set()
    for order_index, order in enumerate(orders):
        keys = tuple(_factor_keys(loops, order) for loops in used)
        if keys in evaluated:
            continue  # the same traffic as an earlier order, which wins ties
        evaluated.add(keys)
        traffic = np.zeros(len(grids), dtype=np.int64)
        for number, key in enumerate(keys):
            if (number, key) not in loads:
                product = own[number]
                for loop, inner in key:
                    if (loop, inner) not in factors:
                        factors[loop, inner] = _reload_factor(trips, reloads, loop, inner)
                    product = product * factors[loop, inner]
                loads[number, key] = product
            traffic += loads[number, key]
        better = traffic < best_traffic
        best_traffic[better] = traffic[better]
        best_order[better] = order_index
    tiles_count = np.prod(trips, axis=1)
    chosen = int(np.lexsort((tiles_count, best_traffic))[0])
    tile = tuple(int(t) for t in grids[chosen])
    chosen_trips = tuple(int(t) for t in trips[chosen])
    order = tuple(
        dim for dim in (orders[best_order[chosen]] if orders else ()) if chosen_trips[dim] > 1
    )
    return Tiling(
        tile=tile,
        order=order,
        load_depth=_load_depths(problem, chosen_trips, order),
        traffic_elements=int(best_traffic[chosen]),
        footprint_elements=int(footprint[chosen]),
    )
