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


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def box_elements(access: AffineAccess, tile: tuple[int, ...]) -> int:
    size = 1
    for row in access.coeffs:
        size *= sum(abs(c) * (t - 1) for c, t in zip(row, tile, strict=True)) + 1
    return size


def _candidates(problem: TilingProblem) -> list[list[int]]:
    lists = []
    for loop, extent in enumerate(problem.extents):
        if problem.fixed_full and problem.fixed_full[loop]:
            lists.append([extent])
        elif problem.multiple_of and problem.multiple_of[loop] > 1:
            lists.append([d for d in _divisors(extent) if d % problem.multiple_of[loop] == 0])
        else:
            lists.append(_divisors(extent))
    total = int(np.prod([len(c) for c in lists], dtype=np.float64))
    if total > MAX_CANDIDATE_TILINGS:
        # Too many combinations: keep powers of two and the full extent.
        lists = [sorted({d for d in c if d & (d - 1) == 0} | {c[-1]}) for c in lists]
    return lists


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


def _repeats(dependent: np.ndarray, trips: np.ndarray, order: tuple[int, ...]) -> np.ndarray:
    """How often an operand is loaded: the product of the trips down to the innermost
    loop (with more than one trip) that it depends on, per candidate tiling."""
    if not order:
        return np.ones(len(trips), dtype=np.int64)
    ordered = trips[:, list(order)]
    effective = dependent[list(order)][None, :] & (ordered > 1)
    cumulative = np.cumprod(ordered, axis=1)
    last = ordered.shape[1] - 1 - np.argmax(effective[:, ::-1], axis=1)
    return np.where(effective.any(axis=1), cumulative[np.arange(len(trips)), last], 1)


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
    grids = np.array(list(itertools.product(*_candidates(problem))), dtype=np.int64)
    extents = np.array(problem.extents, dtype=np.int64)
    boxes = []
    for operand in problem.operands:
        box = np.ones(len(grids), dtype=np.int64)
        for row in operand.access.coeffs:
            box *= (grids - 1) @ np.abs(np.array(row, dtype=np.int64)) + 1
        boxes.append(box)
    footprint = sum(boxes) + problem.temporaries * np.prod(grids, axis=1)
    feasible = footprint <= problem.capacity_elements
    if not feasible.any():
        return None
    grids, footprint = grids[feasible], footprint[feasible]
    boxes = [box[feasible] for box in boxes]
    trips = extents[None, :] // grids

    best_traffic = np.full(len(grids), np.iinfo(np.int64).max, dtype=np.int64)
    best_order = np.zeros(len(grids), dtype=np.int64)
    orders = _full_orders(problem)
    for order_index, order in enumerate(orders):
        traffic = np.zeros(len(grids), dtype=np.int64)
        for operand, box in zip(problem.operands, boxes, strict=True):
            dependent = np.zeros(len(problem.extents), dtype=bool)
            dependent[list(operand.access.loops_used())] = True
            moves = (2 if operand.reads else 1) if operand.is_output else 1
            traffic += box * _repeats(dependent, trips, order) * moves
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
