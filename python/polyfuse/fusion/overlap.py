"""Tiles of a fused operator for speed: buffer copies and the PE array's issue plan.

The planner (`planner.py`) prices a group by the bytes its DMAs move. Two things it
also decides per operator make the group fast without changing what it is priced by
(issue 5):

- *Double buffering*: an operand moved inside the innermost tile loop gets `buffers`
  scratchpad copies, so the load of tile i+1 and the store of tile i-1 run while tile i
  computes (`TileNest.emit`). The copies take scratchpad the tiles could have used;
  smaller tilings whose copies fit are tried too (`plan_buffering`'s capacity fractions).
- *The contraction embedding*: a contraction is issued as the layer-by-layer lowering
  issues it (`choose_embedding`, CP-SAT by default), and tilings whose tiles issue the
  embedding's blocks whole are tried too (`tile_multiples`).
- *Contiguous runs*: tilings that keep a DRAM operand's innermost dim whole are tried
  too (`_contiguous`); a least-traffic tiling may cut it anywhere.

Among the candidates an estimate (`tile_nest.estimate_cycles` with DMA time counted in
whole DRAM bursts: DMA and compute, overlapped when staged) picks one. With `traffic_first` (the default) only candidates that move as few
bytes as the least-traffic tiling are eligible, so the fused schedule's DRAM bytes are
those of the traffic-only planner; without it a tiling may move more bytes when the
estimate says it is faster (as layer by layer trades them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from polyfuse.analysis.tile_search import Tiling, TilingProblem, moved_rows, search_cached
from polyfuse.fusion.graph import Operator
from polyfuse.lowering.contraction_embedding import (
    ContractionChoice,
    choose_embedding,
    tile_multiples,
    tiling_pe_cycles,
)
from polyfuse.lowering.tile_nest import WorkEstimate, staged_footprint
from polyfuse.targets import Target

BURST_BYTES = 64  # a DRAM burst (the emulator's MachineParams.dma_burst_bytes)


@dataclass(frozen=True)
class Overlap:
    """What the fused planner optimises besides DRAM traffic."""

    target: Target
    buffers: int = 1  # copies of the innermost tiles (1: no double buffering)
    embedding: str = "csp"  # how contractions go onto the PE array (contraction_embedding)
    traffic_first: bool = True  # never trade DRAM bytes for estimated cycles


@dataclass(frozen=True)
class OperatorSchedule:
    """One fused operator's tiling, its pipeline stages and its PE-array embedding."""

    tiling: Tiling
    stages: int  # buffer copies of the operands moved in the innermost tile loop
    choice: ContractionChoice | None  # contractions: how they are issued
    cycles: float = 0.0  # the estimate that chose it (0 without an `Overlap`)


def contraction_choice(operator: Operator, overlap: Overlap) -> ContractionChoice | None:
    """The embedding of a contraction operator (None for vector operators)."""
    if operator.roles is None:
        return None
    return choose_embedding(operator.generic, operator.roles, overlap.target, overlap.embedding)


def _work(operator: Operator, extents: tuple[int, ...], target: Target) -> WorkEstimate:
    """The layer-by-layer lowering's cost model (tile_nest.WorkEstimate) of the operator
    over `extents` (one outer tile of its group)."""
    body_ops = len(list(operator.generic.body.operations)) - 1  # without the yield
    return WorkEstimate.of(target, float(math.prod(extents)), operator.contraction, body_ops)


def schedule_operator(
    operator: Operator,
    problem: TilingProblem,
    spm_elements: int,
    choice: ContractionChoice | None,
    overlap: Overlap | None,
    searched: dict[TilingProblem, Tiling | None] | None = None,
) -> OperatorSchedule | None:
    """The operator's tiling under `problem` (None when nothing fits).

    `spm_elements` is what the operator's buffers may take, copies included. Without
    `overlap` this is the least-traffic tiling, single-buffered. `searched` caches tile
    searches by problem (a model's repeated layers pose the same ones)."""
    if searched is None:
        searched = {}
    least = search_cached(problem, searched)
    if least is None or overlap is None:
        return None if least is None else OperatorSchedule(least, 1, choice)
    plain = problem.multiple_of or (1,) * len(problem.extents)
    variants, bases = [plain], [plain]
    if choice is not None and choice.embedding is not None:
        blocked = tile_multiples(choice, problem.extents)
        variants += [blocked, *_streamed(choice, problem.extents, blocked)]
        bases += [blocked, *_one_block(blocked)]
    problems = [problem]
    for multiples in [*variants, *_contiguous(problem, bases)]:
        candidate = replace(problem, multiple_of=multiples)
        if candidate not in problems and _differs(candidate, problems[0]):
            problems.append(candidate)
    buffers = overlap.buffers
    fractions = [1.0] + ([1 / buffers, 2 / (buffers + 1), 3 / (buffers + 2)] if buffers > 1 else [])
    work = _work(operator, problem.extents, overlap.target)
    best: tuple[float, int, OperatorSchedule] | None = None
    for candidate_problem in problems:
        for fraction in fractions:
            capacity = int(problem.capacity_elements * fraction)
            tiling = search_cached(replace(candidate_problem, capacity_elements=capacity), searched)
            if tiling is None:
                continue
            if overlap.traffic_first and tiling.traffic_elements > least.traffic_elements:
                continue
            for stages in sorted({1, buffers}):
                if stages > 1 and (
                    not tiling.order or staged_footprint(problem, tiling, stages) > spm_elements
                ):
                    continue
                estimate = _estimate(problem, tiling, stages, work, choice)
                key = (estimate, tiling.traffic_elements)
                if best is None or key < best[:2]:
                    best = (
                        estimate,
                        tiling.traffic_elements,
                        OperatorSchedule(tiling, stages, choice, estimate),
                    )
    assert best is not None  # the least-traffic tiling itself is always a candidate
    return best[2]


def _streamed(
    choice: ContractionChoice, extents: tuple[int, ...], blocked: tuple[int, ...]
) -> list[tuple[int, ...]]:
    """Tile multiples that also keep the innermost / every streamed dim whole.

    The least-traffic tiling of a strided convolution streams one pixel per instruction
    (a bigger tile's box reads the rows the stride skips), which leaves the PE array
    filling and draining; these candidates let the estimate weigh longer streams."""
    assert choice.embedding is not None
    stream = [int(part.dim[1:]) for part in choice.embedding.stream]
    variants = []
    for whole in (stream[-1:], stream):
        multiples = list(blocked)
        for loop in whole:
            multiples[loop] = extents[loop]
        variants.append(tuple(multiples))
    return variants


def _contiguous(problem: TilingProblem, bases: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Tile multiples that keep one DRAM operand's innermost dim whole (over each of
    `bases`). A least-traffic tiling may cut it anywhere (a convolution's weights at one
    kernel column: every element its own DRAM burst); the estimate counts bursts, these
    candidates give it runs to weigh."""
    variants = []
    for base in bases:
        for operand in problem.operands:
            innermost = operand.access.coeffs[-1] if operand.access.coeffs else ()
            loops = [loop for loop, c in enumerate(innermost) if c]
            if not loops or all(base[loop] == problem.extents[loop] for loop in loops):
                continue
            multiples = list(base)
            for loop in loops:
                multiples[loop] = problem.extents[loop]
            variants.append(tuple(multiples))
    return variants


def _one_block(blocked: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The embedding's block along one loop only (a small capacity may not hold a tile
    blocked along every loop with its contiguous runs whole)."""
    loops = [loop for loop, multiple in enumerate(blocked) if multiple > 1]
    if len(loops) < 2:
        return []
    return [tuple(m if i == loop else 1 for i, m in enumerate(blocked)) for loop in loops]


def _differs(candidate: TilingProblem, problem: TilingProblem) -> bool:
    """Whether `candidate`'s multiples constrain `problem` at all (all ones: the same)."""
    return (
        any(m > 1 for m in candidate.multiple_of) and candidate.multiple_of != problem.multiple_of
    )


def _estimate(
    problem: TilingProblem,
    tiling: Tiling,
    stages: int,
    work: WorkEstimate,
    choice: ContractionChoice | None,
) -> float:
    """`tile_nest.estimate_cycles` with DMA time from burst-rounded rows (below) and, for
    contractions, the embedding's PE cycles."""
    trips = tiling.trips(problem.extents)
    tiles = math.prod(trips)
    dma = _bus_bytes(problem, tiling) / work.dram_bytes_per_cycle
    dma += tiles * len(problem.operands) * work.dma_latency_cycles
    compute = work.compute_cycles
    if choice is not None and choice.embedding is not None:
        compute = tiling_pe_cycles(choice, problem.extents, tiling.tile)
    compute += tiles * work.per_tile_cycles
    if stages <= 1 or not tiling.order:
        return dma + compute
    inner = trips[tiling.order[-1]]
    return max(dma, compute) + (dma + compute) / inner


def _bus_bytes(problem: TilingProblem, tiling: Tiling) -> int:
    """Bytes the DMA engines spend on the tiling: every contiguous run of a box costs
    whole DRAM bursts, as the emulator counts them. A run is the box's innermost dims of
    a row-major tensor, up to the first one the tile does not cover whole. The tile search minimises elements; a stride-2 or one-column tile moves
    few elements in rows far shorter than a burst."""
    trips = tiling.trips(problem.extents)
    total = 0
    for operand, depth in zip(problem.operands, tiling.load_depth, strict=True):
        moved = moved_rows(operand.access, tiling.tile)
        box = [count for count, _ in moved] or [1]
        run = 1  # the innermost dims merge while the tile covers them whole
        for row, (count, step) in zip(
            reversed(operand.access.coeffs), reversed(moved), strict=True
        ):
            if step > 1:  # values `step` apart: every one starts a run
                break
            run *= count
            if any(c and t < e for c, t, e in zip(row, tiling.tile, problem.extents, strict=True)):
                break
        rows = math.prod(box) // run
        moves = (2 if operand.reads else 1) if operand.is_output else 1
        repeats = math.prod(trips[loop] for loop in tiling.order[:depth])
        total += repeats * moves * rows * -(-run * 4 // BURST_BYTES) * BURST_BYTES
    return total
