"""The fusion planner: operator groups, on-chip storages and tiles for least DRAM traffic.

The operators, in program (topological) order, are partitioned into groups of
consecutive operators by dynamic programming:

    best[j] = min over i < j of  best[i] + cost(operators i..j-1 as one group)

(with residency across groups, `carry.py`, the state is the cut and the storage left on
chip there: best[j, s] = min best[i, s'] + cost(i..j-1 finding s', leaving s)).

Inside a group, every storage produced and consumed only by the group's operators is
*internal*: it stays in the scratchpad and never touches DRAM. A group may run under
one outer tile loop along a *shared dimension*: a class of loops, one per operator,
that index the internal storages identically (union-find over (operator, loop) and
(storage, dim), built from the access relations; padded dims, reshaped storages and
reductions cannot be shared). Each internal storage then holds one outer tile's slice.
The remaining scratchpad is what each operator's own tile search (`search_tiling`,
the layer-by-layer search with the internal operands removed) may use. The cost of a
group is exactly the bytes its DMAs move:

    sum over operators of  tiling traffic of the DRAM operands x outer trips

so the planner's prediction is the emulator's count (a test checks it on the zoo).

The groups are chosen with every operator at its least-traffic tiling. With an
`Overlap` (issue 5, `overlap.py`) each operator of the chosen groups is then tiled for
speed in the same capacity: double-buffer copies counted against it, contractions
issued by their PE-array embedding; with `traffic_first` its bytes stay the least, else
it may move more when estimated faster. Either way `bytes` is what the final tiling
moves.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Any

from polyfuse.analysis.affine import AffineAccess
from polyfuse.analysis.divisors import divisors
from polyfuse.analysis.tile_search import TiledOperand, Tiling, TilingProblem, search_cached
from polyfuse.errors import ScratchpadCapacityError
from polyfuse.fusion.breakdown import GroupTraffic
from polyfuse.fusion.carry import Carried, carry_candidates, held_whole, last_reader
from polyfuse.fusion.graph import MERGED, Operator, OperatorGraph, StorageKey
from polyfuse.fusion.overlap import (
    OperatorSchedule,
    Overlap,
    contraction_choice,
    schedule_operator,
)
from polyfuse.fusion.resident import (
    Resident,
    first_loads,
    resident_candidates,
    resident_choices,
)
from polyfuse.lowering.contraction_embedding import ContractionChoice
from polyfuse.lowering.tile_nest import ALIGN_ELEMENTS, padded

# A group has at most 12 operators of more than 4096 iterations, and 24 in all: the
# limit bounds planning time, which the large operators' tile searches dominate (a layer
# norm's per-row statistics are 6 of its 16 operators).
MAX_GROUP_OPERATORS = 12
MAX_GROUP_SMALL_OPERATORS = 12
SMALL_OPERATOR_ITERATIONS = 4096
CAPACITY_STEPS = 64  # inner capacities are rounded down to 1/64 of the scratchpad
TILE_CANDIDATES = 5  # largest outer tiles tried per shared dimension
# Nested outer loops a group may have, each along a shared dimension (two: one head of
# one image of attention at batch 8, when no slice along batch or heads alone fits).
MAX_OUTER_LOOPS = 2
# A group is split into its operators only when their estimates add up to less than
# this fraction of the group's: the estimate adds a group's operators end to end, but
# decoupled engines overlap them, so it overstates groups of single-buffered operators
# (ResNet-18's last blocks are estimated 0.74x alone and run slower).
UNFUSE_FACTOR = 0.7


@dataclass
class OperatorPlan:
    """How one operator of a group runs: its loop on the shared dim, its tiling."""

    extents: tuple[int, ...]
    shared_loop: int | None  # its loop of the group's (outermost) shared dimension
    tiling: Tiling
    dummy: bool  # the tiling problem had no DRAM operand (see `operator_problem`)
    bytes: int
    stages: int = 1  # buffer copies of the operands moved in the innermost tile loop
    choice: ContractionChoice | None = None  # contractions: the PE-array embedding
    problem: TilingProblem | None = None  # what `tiling` solves
    capacity: int = 0  # scratchpad elements the operator's buffers may take
    # Where each loop starts (halo bands, `halo.py`): the operator runs loop l over
    # offsets[l] + [0, extents[l]). None: every loop starts at 0.
    offsets: tuple[int, ...] | None = None
    cycles: float = 0.0  # estimated, once tiled for speed (`overlap.schedule_operator`)
    # Its loops of a group tiled along two shared dimensions (`GroupPlan.outer`), outer
    # first; empty when the group has one outer loop at most (`shared_loop`).
    shared_loops: tuple[int, ...] = ()
    # Elements of one-off loads outside its tiles charged to it (a halo band's inputs
    # loaded per band, `halo.py`): in `bytes`, and in `cycles` as unhidden DMA time.
    loaded_elements: int = 0

    def outer_loops(self) -> tuple[int, ...]:
        """Its loops the group's outer tile loops run, outer first (none: not tiled)."""
        if self.shared_loops:
            return self.shared_loops
        return (self.shared_loop,) if self.shared_loop is not None else ()


@dataclass
class GroupPlan:
    operators: list[int]
    internal: set[StorageKey]
    slice_shapes: dict[StorageKey, tuple[int, ...]]
    outer_tile: int  # along the shared dimension (its extent when not tiled)
    trips: int  # outer tiles in all
    resident_elements: int  # scratchpad elements held for the whole group
    plans: dict[int, OperatorPlan] = field(default_factory=dict)
    # DRAM inputs loaded once into the scratchpad after the internal storages and kept
    # for every outer tile or band (`resident.py`); their load is charged to the plan
    # of the first operator reading them.
    resident: Resident = field(default_factory=dict)
    # A storage the previous group left in the scratchpad, read here in place; one this
    # group writes in place (or keeps: the same storage) and leaves for the next
    # (`carry.py`). Both whole, both counted in `resident_elements`.
    carry_in: StorageKey | None = None
    carry_out: StorageKey | None = None
    # Tiled along two shared dimensions: (tile, trips) of each outer loop, outer first
    # (attention over batch x heads when no slice of one dimension fits); else empty.
    outer: tuple[tuple[int, int], ...] = ()

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.plans.values())

    def buffer_shapes(self) -> list[tuple[int, ...]]:
        """The buffers it holds from the bottom of the scratchpad up, below its resident
        inputs: its internal storages' slices."""
        return list(self.slice_shapes.values())

    def outer_loops(self) -> tuple[tuple[int, int], ...]:
        """(tile, trips) of each outer tile loop, outer first: `outer`, or the one loop
        along the shared dimension."""
        return self.outer or ((self.outer_tile, self.trips),)

    def operator_plans(self) -> list[tuple[int, OperatorPlan]]:
        """Every (operator, plan) the lowering emits (a halo group: one per band)."""
        return list(self.plans.items())

    @property
    def cycles(self) -> float:
        """Estimated cycles: its operators' estimates added (see `overlap.py`)."""
        return sum(plan.cycles for _, plan in self.operator_plans())


@dataclass
class FusionPlan:
    groups: list[GroupPlan]
    spm_bytes: int
    # Per group, where its bytes go (`breakdown.py`); filled in by the lowering.
    traffic: list[GroupTraffic] = field(default_factory=list)

    @property
    def predicted_bytes(self) -> int:
        return sum(g.bytes for g in self.groups)

    def group_of(self) -> dict[int, GroupPlan]:
        return {index: g for g in self.groups for index in g.operators}


def _internal(graph: OperatorGraph, members: set[int]) -> set[StorageKey]:
    internal = {
        key
        for key, s in graph.storages.items()
        if s.producer in members
        and not s.external
        and s.users <= members
        and key[0] in ("gen", "pad")
    }
    changed = True
    while changed:  # an on-chip output must not be initialised from DRAM
        changed = False
        for index in members:
            for output in graph.operators[index].outputs:
                init = output.init
                if output.storage in internal and init is not None and init not in internal:
                    internal.discard(output.storage)
                    changed = True
    return internal


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[object, object] = {}

    def find(self, x: object) -> object:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: object, b: object) -> None:
        self.parent[self.find(a)] = self.find(b)


def _identity_loop(access: AffineAccess, row: int) -> int | None:
    nonzero = [(loop, c) for loop, c in enumerate(access.coeffs[row]) if c != 0]
    if len(nonzero) == 1 and nonzero[0][1] == 1 and access.consts[row] == 0:
        return nonzero[0][0]
    return None


def shared_dimensions(
    graph: OperatorGraph, members: list[int], internal: set[StorageKey]
) -> list[dict[int, int]]:
    """Classes of loops (operator -> loop) that index every internal storage identically."""
    union = _UnionFind()
    blocked: set[object] = set()
    for index in members:
        operator = graph.operators[index]
        for loop, reduction in enumerate(operator.generic.is_reduction):
            union.find(("L", index, loop))
            if reduction:
                blocked.add(("L", index, loop))
        for use in [*operator.inputs, *operator.outputs]:
            for key in (use.storage, use.init if use.is_output else None):
                if key is None or key not in internal:
                    continue
                storage = graph.storages[key]
                # An output's initial value is read with the output's access.
                rows = use.storage_rows if key == use.storage else tuple(range(use.access.rank))
                if storage.opaque_view or rows is None:
                    # A view's rows index the view, not the storage: nothing is shared.
                    blocked.update(("S", key, row) for row in range(len(storage.shape)))
                    blocked.update(
                        ("L", index, loop)
                        for coeffs in use.access.coeffs
                        for loop, c in enumerate(coeffs)
                        if c
                    )
                    continue
                for row, storage_row in enumerate(rows):
                    identity = _identity_loop(use.access, row)
                    if storage_row is None:  # a unit dim a reshape added: no storage row
                        continue
                    if storage_row == MERGED:  # no loop of this row tiles a storage row
                        blocked.update(
                            ("L", index, other)
                            for other, c in enumerate(use.access.coeffs[row])
                            if c
                        )
                        continue
                    padded = bool(storage.low) and bool(
                        storage.low[storage_row] or storage.high[storage_row]
                    )
                    if identity is None or padded:
                        blocked.add(("S", key, storage_row))
                        blocked.update(
                            ("L", index, other)
                            for other, c in enumerate(use.access.coeffs[row])
                            if c
                        )
                    else:
                        union.union(("L", index, identity), ("S", key, storage_row))
    classes: dict[object, list[object]] = {}
    for node in list(union.parent):
        classes.setdefault(union.find(node), []).append(node)
    result = []
    for nodes in classes.values():
        if any(node in blocked for node in nodes):
            continue
        loops = [n for n in nodes if isinstance(n, tuple) and n[0] == "L"]
        per_operator: dict[int, int] = {}
        for node in loops:
            assert isinstance(node, tuple)
            per_operator.setdefault(node[1], node[2])
        if len(loops) != len(members) or set(per_operator) != set(members):
            continue
        if not any(isinstance(n, tuple) and n[0] == "S" for n in nodes):
            continue
        result.append(per_operator)
    return result


def _storage_dims(
    graph: OperatorGraph, members: list[int], internal: set[StorageKey], shared: dict[int, int]
) -> dict[StorageKey, int]:
    """For each internal storage, the dim the shared loops index."""
    dims: dict[StorageKey, int] = {}
    for index in members:
        operator = graph.operators[index]
        for use in [*operator.inputs, *operator.outputs]:
            if use.storage not in internal:
                continue
            if use.storage_rows is None:
                continue  # through a view: blocked in `shared_dimensions`
            for row, storage_row in enumerate(use.storage_rows):
                if storage_row in (None, MERGED):
                    continue
                if _identity_loop(use.access, row) == shared[index]:
                    dims[use.storage] = storage_row
    return dims


def operator_problem(
    operator: Operator,
    internal: set[StorageKey],
    extents: tuple[int, ...],
    capacity_elements: int,
) -> tuple[TilingProblem, bool]:
    """The tile search problem of an operator whose internal operands are on chip.

    With no DRAM operand at all, a stand-in operand that indexes no loop (one element,
    loaded once) lets the same search size the tile for the temporaries; `True` says so.
    """
    operands = [TiledOperand(u.access) for u in operator.inputs if u.storage not in internal]
    for output in operator.outputs:
        if output.storage in internal:
            continue
        reads = output.reads_init and not output.init_scalar and output.init not in internal
        operands.append(TiledOperand(output.access, is_output=True, reads=reads))
    dummy = not operands
    if dummy:
        loops = len(extents)
        operands.append(TiledOperand(AffineAccess(((0,) * loops,), (0,), loops)))
    buffers = len(operands) + operator.temporaries
    return (
        TilingProblem(
            extents=extents,
            is_reduction=operator.generic.is_reduction,
            operands=tuple(operands),
            temporaries=operator.temporaries,
            capacity_elements=capacity_elements - ALIGN_ELEMENTS * buffers,
        ),
        dummy,
    )


def _plan_group(
    graph: OperatorGraph,
    members: list[int],
    spm_elements: int,
    memo: _Memo,
    carried: Carried = (None, None),
) -> tuple[GroupPlan | None, int]:
    """The cheapest way to run `members` as one group (None if nothing fits) and the
    fewest resident elements any candidate needed (to stop growing the group).
    `carried`: the storages it finds in and leaves in the scratchpad (`carry.py`).

    Candidates: everything whole, or an outer loop along one shared dimension (its
    largest divisor tiles). When none of these fits, two nested outer loops: one
    shared dimension a slice at a time, another in tiles (attention at batch 8: one
    head of one image)."""
    member_set = set(members)
    internal = _internal(graph, member_set)
    whole = held_whole(graph, carried, internal)
    if whole is None:
        return None, 0
    on_chip, held_carried = whole
    dimensions = memo.shared_dimensions(graph, members, internal) if internal else []

    def tiles(dimension: dict[int, int]) -> list[int]:
        extent = graph.operators[members[0]].generic.extents[dimension[members[0]]]
        return sorted(divisors(extent)[:-1], reverse=True)[:TILE_CANDIDATES]

    singles: list[_Outer] = [[]]
    singles += [[(dimension, tile)] for dimension in dimensions for tile in tiles(dimension)]
    least_resident = spm_elements + 1
    if internal and not dimensions:
        # No shared dimension yet, but a later operator may connect one (a reduction's
        # result read back by the next operator, as softmax's max is): growing the group
        # stops only when even slices one element thick along a dimension cannot fit.
        least_resident = sum(
            padded(graph.storages[key].elements // max(graph.storages[key].shape))
            for key in internal
        )
    best, least = _best_candidate(
        graph, members, (internal, on_chip, held_carried), singles, spm_elements, memo
    )
    least_resident = min(least_resident, least)
    if best is None and len(dimensions) > 1 and MAX_OUTER_LOOPS > 1:
        pairs: list[_Outer] = [
            [(first, 1), (second, tile)]
            for first in dimensions
            for second in dimensions
            if first is not second
            for tile in tiles(second)
        ]
        best, least = _best_candidate(
            graph, members, (internal, on_chip, held_carried), pairs, spm_elements, memo
        )
        least_resident = min(least_resident, least)
    if best is not None:
        best.carry_in, best.carry_out = carried
    return best, least_resident


# Outer loops of a candidate: (shared dimension, tile) each, outermost first.
_Outer = list[tuple[dict[int, int], int]]


def _best_candidate(
    graph: OperatorGraph,
    members: list[int],
    storages: tuple[set[StorageKey], set[StorageKey], int],
    candidates: list[_Outer],
    spm_elements: int,
    memo: _Memo,
) -> tuple[GroupPlan | None, int]:
    """The cheapest of `candidates` (outer loops) that fits, and the fewest resident
    elements any of them needed. `storages`: the internal storages, the storages on
    chip whole (carried) and the elements those take."""
    internal, on_chip, held_carried = storages
    best: GroupPlan | None = None
    least_resident = spm_elements + 1
    first = graph.operators[members[0]]
    unchanged: dict[int, Resident] = {}  # id(dimension) -> inputs its outer loop leaves alone

    def kept_across(shared: dict[int, int]) -> Resident:
        if id(shared) not in unchanged:
            unchanged[id(shared)] = resident_candidates(graph, members, shared)
        return unchanged[id(shared)]

    for outer in candidates:
        dims = [_storage_dims(graph, members, internal, shared) for shared, _ in outer]
        slices: dict[StorageKey, tuple[int, ...]] = {}
        for key in internal:
            shape = list(graph.storages[key].shape)
            if any(key not in d for d in dims):
                break
            for d, (_, tile) in zip(dims, outer, strict=True):
                shape[d[key]] = tile
            slices[key] = tuple(shape)
        else:
            resident = sum(padded(_product(s)) for s in slices.values()) + held_carried
            least_resident = min(least_resident, resident)
            if resident >= spm_elements:
                continue
            loops = [
                (shared, tile, first.generic.extents[shared[members[0]]] // tile)
                for shared, tile in outer
            ]
            # Inputs every outer tile reads whole, or several members read: load once?
            candidates_kept = _unchanged_by(
                [kept_across(shared) for shared, _ in outer]
                or [resident_candidates(graph, members, None)]
            )
            choices = resident_choices(
                {v: e for v, e in candidates_kept.items() if e[0] not in on_chip},
                spm_elements - resident,
            )
            for kept in choices:
                group = _plan_candidate(
                    graph,
                    members,
                    (internal, slices, resident, on_chip),
                    loops,
                    kept,
                    spm_elements,
                    memo.tilings,
                )
                if group is not None and (best is None or group.bytes < best.bytes):
                    best = group
    return best, least_resident


def _unchanged_by(candidates: list[Resident]) -> Resident:
    """The resident candidates every outer loop leaves unchanged (in all of them)."""
    kept = candidates[0]
    for other in candidates[1:]:
        kept = {value: entry for value, entry in kept.items() if value in other}
    return kept


def _plan_candidate(
    graph: OperatorGraph,
    members: list[int],
    storages: tuple[set[StorageKey], dict[StorageKey, tuple[int, ...]], int, set[StorageKey]],
    outer: list[tuple[dict[int, int], int, int]],
    kept: Resident,
    spm_elements: int,
    searched: dict[TilingProblem, Tiling | None],
) -> GroupPlan | None:
    """One candidate of `_plan_group`: internal storages (their slices and the carried
    storages taking `held` elements), the outer loops (shared dimension, tile, trips
    each; none, one or two) and the resident inputs; every operator at its
    least-traffic tiling in the scratchpad left (None if a tile does not fit)."""
    internal, slices, held, carried = storages
    trips = math.prod(loop_trips for _, _, loop_trips in outer)
    held += sum(padded(elements) for _, elements in kept.values())
    if held >= spm_elements:
        return None
    step = max(ALIGN_ELEMENTS, spm_elements // CAPACITY_STEPS)
    capacity = (spm_elements - held) // step * step
    on_chip = internal | carried | {key for key, _ in kept.values()}
    loads = first_loads(graph, members, kept)
    group = GroupPlan(
        members, internal, slices, outer[0][1] if outer else 0, trips, held, resident=dict(kept)
    )
    if len(outer) > 1:
        group.outer = tuple((tile, loop_trips) for _, tile, loop_trips in outer)
    for index in members:
        operator = graph.operators[index]
        extents = list(operator.generic.extents)
        for shared, tile, _ in outer:
            extents[shared[index]] = tile
        loop = outer[0][0][index] if outer else None
        problem, dummy = operator_problem(operator, on_chip, tuple(extents), capacity)
        tiling = search_cached(problem, searched)
        if tiling is None:
            return None
        traffic = tiling.traffic_elements - (1 if dummy else 0)
        preload = loads.get(index, 0)
        group.plans[index] = OperatorPlan(
            tuple(extents),
            loop,
            tiling,
            dummy,
            (traffic * trips + preload) * 4,
            problem=problem,
            capacity=capacity,
            shared_loops=tuple(shared[index] for shared, _, _ in outer) if len(outer) > 1 else (),
        )
    return group


def _iterations(operator: Operator) -> int:
    return _product(operator.generic.extents)


def _product(shape: tuple[int, ...]) -> int:
    size = 1
    for extent in shape:
        size *= extent
    return size


def _reads_from(graph: OperatorGraph, index: int, members: set[int]) -> bool:
    """Whether operator `index` reads a storage that one of `members` produces."""
    operator = graph.operators[index]
    keys = [u.storage for u in operator.inputs] + [u.init for u in operator.outputs]
    return any(key is not None and graph.storages[key].producer in members for key in keys)


@dataclass
class _Memo:
    """What one `plan_fusion` and the alternatives it plans compute once: tilings by
    problem, plain groups by members and carried storages (handed out as copies: speed
    scheduling rewrites their operator plans), speed schedules by (operator, problem,
    capacity), shared dimensions by members, halo bandings by (members, band loop,
    band height, batch tile, cache variant, inputs loaded per band)."""

    tilings: dict[TilingProblem, Tiling | None] = field(default_factory=dict)
    dimensions: dict[tuple[int, ...], list[dict[int, int]]] = field(default_factory=dict)
    bandings: dict[tuple[tuple[int, ...], int, int, int, bool, bool], Any] = field(
        default_factory=dict
    )
    groups: dict[tuple[tuple[int, ...], Carried], tuple[GroupPlan | None, int]] = field(
        default_factory=dict
    )
    schedules: dict[tuple[int, TilingProblem, int], OperatorSchedule] = field(default_factory=dict)

    def shared_dimensions(
        self, graph: OperatorGraph, members: list[int], internal: set[StorageKey]
    ) -> list[dict[int, int]]:
        """`shared_dimensions`, once per members (the same for every carried variant and
        for the halo planner's batch loops)."""
        key = tuple(members)
        if key not in self.dimensions:
            self.dimensions[key] = shared_dimensions(graph, members, internal)
        return self.dimensions[key]

    def plan_group(
        self,
        graph: OperatorGraph,
        members: list[int],
        spm_elements: int,
        carried: Carried = (None, None),
    ) -> tuple[GroupPlan | None, int]:
        key = (tuple(members), carried)
        if key not in self.groups:
            self.groups[key] = _plan_group(graph, members, spm_elements, self, carried)
        group, least_resident = self.groups[key]
        if group is None:
            return None, least_resident
        plans = {index: replace(plan) for index, plan in group.plans.items()}
        return replace(group, plans=plans), least_resident


def plan_fusion(
    graph: OperatorGraph,
    spm_bytes: int,
    overlap: Overlap | None = None,
    halo: bool = True,
    memo: _Memo | None = None,
    outermost: bool = True,
    max_group_operators: int | None = None,
) -> FusionPlan:
    """Partition the operators into groups with the least total DRAM traffic.

    Without `overlap` every operator is single-buffered with its least-traffic tiling.
    `halo` also tries row-band groups of convolution chains (halo.py) as candidates.
    With an `overlap` that may trade bytes (not `traffic_first`), an alternative is
    planned too and, between the points where both cut, the one with fewer estimated
    cycles is taken (`_faster_segments`): the partition without halo groups (they move
    fewer bytes but recompute rows), and for that one every operator on its own
    (`_singletons`). Storages are then carried between the chosen groups, and halo
    groups cache rather than recompute, where that is estimated faster
    (`_carries_and_variants_for_speed`), rather than inside the DP: chosen on bytes,
    carries can make groups slower and leave fewer cuts to mix at, and the cache variant
    changed ResNet-50's partition for 1% fewer bytes and 1% more cycles. The nested call
    planning the plain alternative (`outermost` off) does neither: that changed no zoo
    model's plan and saves a second scheduling of every operator. `memo` keeps what
    these calls share (`_Memo`). `max_group_operators`: the most operators of more than
    `SMALL_OPERATOR_ITERATIONS` iterations a group may have (default
    `MAX_GROUP_OPERATORS`)."""
    from polyfuse.fusion.halo import HaloGroupPlan, plan_halo_group  # halo builds on this

    spm_elements = spm_bytes // 4
    count = len(graph.operators)
    # Carried storages and the halo cache variant in the DP (see above)?
    bytes_only = overlap is None or overlap.traffic_first
    # Halo variants and input loading the DP tries (None: all of HALO_VARIANTS and
    # HALO_LOADS); for speed the others are tried on the chosen groups afterwards.
    halo_kinds = (None, None) if bytes_only else (("recompute",), (False,))
    if memo is None:
        memo = _Memo()
    # cost[(j, key)]: the fewest bytes running operators 0..j-1 that leave storage `key`
    # (None: nothing) in the scratchpad for the group starting at j; `choice` has the
    # last group and the storage it found on chip.
    State = tuple[int, StorageKey | None]
    cost: dict[State, int] = {(0, None): 0}
    choice: dict[State, tuple[GroupPlan, StorageKey | None]] = {}

    def offer(state: State, group: GroupPlan, before: State) -> None:
        total = cost[before] + group.bytes
        if state not in cost or total < cost[state]:
            cost[state] = total
            choice[state] = (group, before[1])

    for start in range(count):
        arriving = [key for j, key in cost if j == start]
        if not arriving:
            continue
        large = 0
        most_large = MAX_GROUP_OPERATORS if max_group_operators is None else max_group_operators
        limit = most_large + MAX_GROUP_SMALL_OPERATORS
        for end in range(start + 1, min(count, start + limit) + 1):
            large += _iterations(graph.operators[end - 1]) > SMALL_OPERATOR_ITERATIONS
            if large > most_large or end - start - large > MAX_GROUP_SMALL_OPERATORS:
                break
            if end - 1 > start and end - 1 in graph.after_copy:
                break  # data-movement ops use the scratchpad from byte 0: never inside a group
            members = list(range(start, end))
            if end - 1 > start and not _reads_from(graph, end - 1, set(members[:-1])):
                continue  # the same cost as splitting before it: nothing to gain
            group, least_resident = memo.plan_group(graph, members, spm_elements)
            if halo and (start, None) in cost:
                # a halo group must beat the plain one and the best way to reach `end`
                bounds = [group.bytes] if group is not None else []
                if (end, None) in cost:
                    bounds.append(cost[(end, None)] - cost[(start, None)])
                bound = min(bounds) if bounds else None
                banded, banded_resident = plan_halo_group(
                    graph, members, spm_elements, memo, bound, (None, None), *halo_kinds
                )
                if banded is not None:
                    group = banded  # cheaper than `bound`
                least_resident = min(least_resident, banded_resident)
            if group is not None and (start, None) in cost:
                offer((end, None), group, (start, None))
            # The same members finding a storage on chip, leaving one, or both.
            leaving = carry_candidates(graph, members, spm_elements) if group and bytes_only else []
            for carry_in in arriving:
                # What the group finds on chip and is not done reading stays there.
                through = carry_in is not None and last_reader(graph, carry_in) >= end
                for carry_out in [carry_in] if through else [None, *leaving]:
                    if carry_in is None and carry_out is None:
                        continue
                    carries = (carry_in, carry_out)
                    carried, _ = memo.plan_group(graph, members, spm_elements, carries)
                    if halo:
                        bound = carried.bytes if carried is not None else None
                        banded, _ = plan_halo_group(
                            graph, members, spm_elements, memo, bound, carries, *halo_kinds
                        )
                        carried = banded or carried
                    if carried is not None:
                        offer((end, carry_out), carried, (start, carry_in))
            if least_resident >= spm_elements:
                break
    if count and (count, None) not in cost:
        raise ScratchpadCapacityError(
            f"no fusion plan fits the {spm_bytes}-byte scratchpad (an operator does not fit "
            "even on its own)"
        )
    groups: list[GroupPlan] = []
    state: State = (count, None)
    while state[0] > 0:
        group, found = choice[state]
        groups.append(group)
        state = (group.operators[0], found)
    groups.reverse()
    if overlap is None:
        return FusionPlan(groups, spm_bytes)
    _schedule_for_speed(graph, groups, overlap, memo)
    if overlap.traffic_first:
        return FusionPlan(groups, spm_bytes)
    if not outermost:
        return FusionPlan(groups, spm_bytes)
    if any(isinstance(group, HaloGroupPlan) for group in groups):
        try:
            plain = plan_fusion(
                graph,
                spm_bytes,
                overlap,
                halo=False,
                memo=memo,
                outermost=False,
                max_group_operators=max_group_operators,
            )
            groups = _faster_segments(groups, plain.groups)
        except ScratchpadCapacityError:  # some operator fits only in bands
            pass
    else:
        alone = _singletons(graph, spm_elements, memo, overlap)
        if alone is not None:
            groups = _faster_segments(groups, alone, UNFUSE_FACTOR)
    groups = _carries_and_variants_for_speed(graph, groups, spm_elements, memo, overlap)
    return FusionPlan(groups, spm_bytes)


def _carries_and_variants_for_speed(
    graph: OperatorGraph,
    groups: list[GroupPlan],
    spm_elements: int,
    memo: _Memo,
    overlap: Overlap,
) -> list[GroupPlan]:
    """The same groups, with the storages carried across their cuts (`carry.py`) and
    the halo variants (recompute or cache, inputs loaded per band or not; the DP banded
    with recompute, no loads) that give the
    fewest estimated cycles, then bytes: a dynamic programme along the groups over the
    storage carried at each cut, every group re-planned (plain, or banded each way if
    it was a halo group) and tiled for speed with what it finds and leaves on chip."""
    from polyfuse.fusion.halo import HALO_LOADS, HALO_VARIANTS, HaloGroupPlan, plan_halo_group

    def variant(group: GroupPlan, carried: Carried) -> GroupPlan | None:
        plans: list[GroupPlan | None] = [group]
        if carried != (None, None):
            plans = [memo.plan_group(graph, group.operators, spm_elements, carried)[0]]
        if isinstance(group, HaloGroupPlan):
            for kind, loads in itertools.product(HALO_VARIANTS, HALO_LOADS):
                own = group.cached == (kind == "cache") and bool(group.loaded) == loads
                if carried == (None, None) and own:
                    continue  # the DP's own plan: `group`
                banded, _ = plan_halo_group(
                    graph, group.operators, spm_elements, memo, None, carried, (kind,), (loads,)
                )
                plans.append(banded)
        found = [plan for plan in plans if plan is not None]
        _schedule_for_speed(graph, [plan for plan in found if plan is not group], overlap, memo)
        return min(found, key=lambda p: (p.cycles, p.bytes), default=None)

    # best[key]: (cycles, bytes, groups so far) leaving storage `key` on chip
    best: dict[StorageKey | None, tuple[float, int, list[GroupPlan]]] = {None: (0.0, 0, [])}
    for number, group in enumerate(groups):
        leaving: list[StorageKey | None] = [None]
        if number + 1 < len(groups):  # kept through later groups until its last reader
            leaving += carry_candidates(graph, group.operators, spm_elements)
        reached: dict[StorageKey | None, tuple[float, int, list[GroupPlan]]] = {}
        for carry_in, (cycles, moved, chosen) in best.items():
            through = carry_in is not None and last_reader(graph, carry_in) > group.operators[-1]
            for carry_out in [carry_in] if through else leaving:
                plan = variant(group, (carry_in, carry_out))
                if plan is None:
                    continue
                total = (cycles + plan.cycles, moved + plan.bytes, [*chosen, plan])
                if carry_out not in reached or total[:2] < reached[carry_out][:2]:
                    reached[carry_out] = total
        best = reached
    return best[None][2]


def _singletons(
    graph: OperatorGraph, spm_elements: int, memo: _Memo, overlap: Overlap
) -> list[GroupPlan] | None:
    """Every operator a group of its own, tiled for speed (None if one does not fit):
    a fused group keeps its internal storages out of DRAM but leaves its operators'
    tiles only the scratchpad they do not take, which can make it slower than its
    operators run one by one."""
    groups = []
    for index in range(len(graph.operators)):
        group, _ = memo.plan_group(graph, [index], spm_elements)
        if group is None:
            return None
        groups.append(group)
    _schedule_for_speed(graph, groups, overlap, memo)
    return groups


def _faster_segments(
    first: list[GroupPlan], second: list[GroupPlan], factor: float = 1.0
) -> list[GroupPlan]:
    """Two partitions of the same operators cut at some common points; between two
    consecutive common cuts, the groups of `second` if their estimated cycles
    (`GroupPlan.cycles`) are below `factor` times those of `first`'s, else `first`'s.
    Groups meet only in DRAM at a cut nothing is carried across (`carry.py`), so any
    such mix of segments between those cuts is a plan, with its bytes the sum of its
    groups'."""
    common = {g.operators[0] for g in first if g.carry_in is None} & {
        g.operators[0] for g in second if g.carry_in is None
    }
    segments: tuple[dict[int, list[GroupPlan]], ...] = ({}, {})
    for side, groups in enumerate((first, second)):
        cut = 0
        for group in groups:
            if group.operators[0] in common:
                cut = group.operators[0]
            segments[side].setdefault(cut, []).append(group)
    chosen: list[GroupPlan] = []
    for cut in sorted(common):
        ours, theirs = segments[0][cut], segments[1][cut]
        faster = sum(g.cycles for g in theirs) < factor * sum(g.cycles for g in ours)
        chosen += theirs if faster else ours
    return chosen


def _schedule_for_speed(
    graph: OperatorGraph, groups: list[GroupPlan], overlap: Overlap, memo: _Memo
) -> None:
    """Re-tile every operator of the chosen groups with `overlap.schedule_operator` (in
    the capacity the group left it) and price it by what the new tiling moves. The bands
    of a halo group are re-tiled the same way, in the capacity above the band buffers and
    kept inputs (a band's plan also carries the kept inputs' one-time load: unchanged)."""
    scheduled = memo.schedules
    for group in groups:
        for index, plan in group.operator_plans():
            operator = graph.operators[index]
            choice = contraction_choice(operator, overlap)
            assert plan.problem is not None
            key = (index, plan.problem, plan.capacity)
            if key not in scheduled:
                found = schedule_operator(
                    operator, plan.problem, plan.capacity, choice, overlap, memo.tilings
                )
                assert found is not None  # the least-traffic tiling is a candidate
                scheduled[key] = found
            schedule = scheduled[key]
            moved = schedule.tiling.traffic_elements - plan.tiling.traffic_elements
            plan.tiling = schedule.tiling
            plan.stages = schedule.stages
            plan.choice = choice
            plan.cycles = schedule.cycles * group.trips
            if plan.loaded_elements:  # waited for before the band computes
                target = overlap.target
                plan.cycles += plan.loaded_elements * 4 / target.dram_bytes_per_cycle
                plan.cycles += target.dma_latency_cycles
            plan.bytes += moved * 4 * group.trips
