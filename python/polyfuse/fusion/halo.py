"""Halo (row-band) tiling of convolution chains: the planning half.

A group whose internal storages cannot share a dimension (a padded intermediate read by
a convolution's `h*stride + kh*dilation - pad`) still fuses if the group's last
operator is computed in *bands* of `b` output rows (Deep Fusion / DeFiNES). Walking
backwards through the group, the rows every producer must compute for one band follow
from its consumers' access relations, clipped to the producer's extent. Each internal
storage holds one band's rows (the largest band's count), padding rows included. The
rows two neighbouring bands both need are handled both ways the literature does, and
the cheaper is kept per group:

- *recompute*: every band computes all the rows it needs, the shared ones again;
- *cache* (`_cache_variant`): every band computes only rows no earlier band computed;
  the shared rows stay on chip, moved to the top of their buffer when the next band
  starts (an on-chip vector copy). Fewer rows computed, and the first operator reads
  fewer input rows from DRAM.

A DRAM input several members read (a residual block's input, read by its first
convolution and its residual add) may be loaded once per band into a buffer they all
read in place (`_loaded_inputs`), rather than by each member's own tiles: it then
crosses DRAM once. Every banding is tried without and with it.

Two more cases band the same way. A group whose operators also share the batch runs its
bands once per batch tile (`_batch_loops`): the buffers are a tile thick and kept inputs
load once for all tiles. A group with no halo at all is banded too, when that beats a
shared dimension: bands alias a storage into its only reader's buffer (`_aliases`),
where a shared dimension holds a slice of every internal storage.

Bands are compile-time constants: the lowering (`halo_lowering.py`) emits the group's
code once per band, every row range fixed. The cost of a halo group is exactly

    sum over bands, over operators of  tiling traffic of the band's DRAM operands

with the same tile search (`search_tiling`) as every other group, so the plan stays
equal to the emulator's count. Each band's operator plan keeps its tiling problem and
capacity, so the planner re-tiles it for speed like any other (`overlap.py`; double
buffers, the PE embedding).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from polyfuse.analysis.affine import AffineAccess
from polyfuse.analysis.operators import defining_op
from polyfuse.analysis.tile_search import Tiling, TilingProblem, search_cached
from polyfuse.fusion.carry import Carried, held_whole
from polyfuse.fusion.graph import (
    Operator,
    OperatorGraph,
    StorageKey,
    operand_value,
    reads_from_outside,
)
from polyfuse.fusion.planner import (
    CAPACITY_STEPS,
    GroupPlan,
    OperatorPlan,
    _identity_loop,
    _internal,
    _Memo,
    _storage_dims,
    operator_problem,
)
from polyfuse.fusion.resident import (
    Resident,
    first_loads,
    resident_candidates,
    resident_choices,
)
from polyfuse.lowering.tile_nest import ALIGN_ELEMENTS, padded

BAND_CANDIDATES = 3  # largest fitting power-of-two band heights tried per group
# Both ways of handling the rows neighbouring bands share, tried for every banding.
HALO_VARIANTS = ("recompute", "cache")
FULL_BAND_TILES = True
# Without and with the inputs several members read loaded once per band
# (`_loaded_inputs`), rather than by every member on its own.
HALO_LOADS = (False, True)
Range = tuple[int, int]  # [first, end)
Ranges = tuple[np.ndarray, np.ndarray]  # [first, end) of every band


@dataclass
class Band:
    """One band of a halo group: every operator's rows and every storage's rows."""

    loops: dict[int, Range]  # operator -> its range on its band loop
    rows: dict[StorageKey, Range]  # internal storage -> the rows (storage coords) held
    plans: dict[int, OperatorPlan] = field(default_factory=dict)
    batch: int = 0  # where the batch tile starts (`HaloGroupPlan.batch_dims`)


@dataclass
class HaloGroupPlan(GroupPlan):
    """A group run band by band (see the module docstring); `trips` is 1, no outer loop."""

    band_loops: dict[int, int] = field(default_factory=dict)  # operator -> band loop
    band_dims: dict[StorageKey, int] = field(default_factory=dict)  # storage -> band dim
    band_height: int = 0  # output rows of the last operator per band
    bands: list[Band] = field(default_factory=list)
    # Internal storages kept inside another one's buffer (see `_aliases`): storage ->
    # (the storage owning the buffer, offset of its coords in the owner's coords).
    aliases: dict[StorageKey, tuple[StorageKey, tuple[int, ...]]] = field(default_factory=dict)
    # The cache variant: each band computes only rows no earlier band computed and keeps
    # the rows it shares with the previous one (moved on chip, `halo_lowering.py`).
    cached: bool = False
    # A batch loop around the bands (`_batch_loops`): each batch tile is banded in turn,
    # the band buffers hold one tile of it. Storage -> its batch dim (empty: none).
    batch_dims: dict[StorageKey, int] = field(default_factory=dict)
    # DRAM inputs several members read along the band loop (`_loaded_inputs`), loaded
    # once per band into a buffer of these shapes (after the band buffers) and read in
    # place: storage -> buffer shape. Their rows are in `Band.rows`, their band dims in
    # `band_dims`; each band's load is charged to the plan of the first member reading
    # the input.
    loaded: dict[StorageKey, tuple[int, ...]] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(p.bytes for band in self.bands for p in band.plans.values())

    def operator_plans(self) -> list[tuple[int, OperatorPlan]]:
        return [item for band in self.bands for item in band.plans.items()]

    def buffer_shapes(self) -> list[tuple[int, ...]]:
        """The band buffers, then those of the inputs loaded per band."""
        return [*self.slice_shapes.values(), *self.loaded.values()]


@dataclass
class _Structure:
    """Which loop of every operator and which dim of every in-group storage is banded."""

    loops: dict[int, int]
    dims: dict[StorageKey, int]
    # Per operator: (storage, access, offset of the access coords in storage coords)
    # of every read of a storage a member produces.
    reads: dict[int, list[tuple[StorageKey, AffineAccess, int]]]
    halo: bool  # some read is not an identity (else a shared dimension may do it too)


def _in_group_reads(
    graph: OperatorGraph, index: int, members: set[int]
) -> list[tuple[StorageKey, AffineAccess, bool]] | None:
    """Reads of storages a member produces: (storage, access, whether the access is in a
    pad storage's interior coords), or None when one goes through a view."""
    operator = graph.operators[index]
    reads = []
    uses = [(u, u.storage, False) for u in operator.inputs] + [
        (u, u.init, True) for u in operator.outputs if u.init is not None
    ]
    for use, key, init in uses:
        if key is None or graph.storages[key].producer not in members:
            continue
        storage = graph.storages[key]
        if storage.viewed or use.through_view:
            return None
        owner = defining_op(operand_value(operator, use, init))
        interior = bool(storage.low) and (owner is None or owner.name != "tensor.pad")
        reads.append((key, use.access, interior))
    return reads


def band_structure(graph: OperatorGraph, members: list[int], last_loop: int) -> _Structure | None:
    """Propagate the last operator's band loop backwards (None if it does not band)."""
    member_set = set(members)
    last = members[-1]
    loops = {last: last_loop}
    dims: dict[StorageKey, int] = {}
    reads: dict[int, list[tuple[StorageKey, AffineAccess, int]]] = {}
    halo = False
    for index in reversed(members):
        operator = graph.operators[index]
        if index not in loops:
            return None  # nothing later in the group needs it: not a chain
        loop = loops[index]
        if operator.generic.is_reduction[loop]:
            return None
        for output in operator.outputs:  # outputs are banded along the loop, identically
            rows = [r for r in range(output.access.rank) if output.access.coeffs[r][loop]]
            if len(rows) != 1 or _identity_loop(output.access, rows[0]) != loop:
                return None
            if output.storage is not None:
                dim = dims.setdefault(output.storage, rows[0])
                if dim != rows[0]:
                    return None
        found = _in_group_reads(graph, index, member_set)
        if found is None:
            return None
        reads[index] = []
        for key, access, interior in found:
            rows = [r for r in range(access.rank) if access.coeffs[r][loop]]
            if len(rows) != 1 or access.coeffs[rows[0]][loop] < 0:
                return None  # broadcast along the band, or not monotone
            row = rows[0]
            if dims.setdefault(key, row) != row:
                return None
            storage = graph.storages[key]
            offset = storage.low[row] if interior else 0
            reads[index].append((key, access, offset))
            if _identity_loop(access, row) != loop:
                halo = True
            producer = graph.operators[storage.producer or 0]
            writes = [u for u in producer.outputs if u.storage == key]
            if len(writes) != 1:
                return None
            write_loop = _identity_loop(writes[0].access, row)
            if write_loop is None or loops.setdefault(producer.index, write_loop) != write_loop:
                return None
    return _Structure(loops, dims, reads, halo)


def _read_range(
    access: AffineAccess, row: int, loop: int, band: Ranges, extents: tuple[int, ...]
) -> Ranges:
    """Hull of row `row` of `access` over each band on `loop`, every other loop whole."""
    # The other loops' part is the same for every band: summed in Python ints first, so
    # the arrays (a few bands each) see four numpy operations, not two per loop.
    low = high = access.consts[row]
    for other, c in enumerate(access.coeffs[row]):
        if other != loop:
            low += min(0, c * (extents[other] - 1))
            high += max(0, c * (extents[other] - 1))
    c = access.coeffs[row][loop]
    first, last = c * band[0], c * (band[1] - 1)
    return np.minimum(first, last) + low, np.maximum(first, last) + high + 1


def _hull(a: Ranges | None, b: Ranges) -> Ranges:
    return b if a is None else (np.minimum(a[0], b[0]), np.maximum(a[1], b[1]))


def band_ranges(
    graph: OperatorGraph, members: list[int], structure: _Structure, bands: Ranges
) -> tuple[dict[int, Ranges], dict[StorageKey, Ranges]] | None:
    """For bands [first, end) of the last operator (arrays, one entry per band): every
    operator's loop ranges and every in-group storage's rows in storage coords (None
    if some producer would compute nothing in some band)."""
    loops: dict[int, Ranges] = {members[-1]: bands}
    rows: dict[StorageKey, Ranges] = {}
    for index in reversed(members):
        operator = graph.operators[index]
        loop = structure.loops[index]
        own = loops[index]
        extents = operator.generic.extents
        for output in operator.outputs:  # what it writes (storage coords)
            if output.storage is None:
                continue
            storage = graph.storages[output.storage]
            dim = structure.dims[output.storage]
            low = storage.low[dim] if storage.low else 0
            rows[output.storage] = _hull(rows.get(output.storage), (own[0] + low, own[1] + low))
        for key, access, offset in structure.reads[index]:
            dim = structure.dims[key]
            first, end = _read_range(access, dim, loop, own, extents)
            needed = (first + offset, end + offset)
            rows[key] = _hull(rows.get(key), needed)
            storage = graph.storages[key]
            producer = storage.producer
            assert producer is not None
            low = storage.low[dim] if storage.low else 0
            extent = graph.operators[producer].generic.extents[structure.loops[producer]]
            computed = (np.maximum(0, needed[0] - low), np.minimum(extent, needed[1] - low))
            if np.any(computed[0] >= computed[1]):
                return None
            loops[producer] = _hull(loops.get(producer), computed)
    return loops, rows


@dataclass(frozen=True)
class _LoadedRead:
    """A member's read of a DRAM input loaded per band (`_loaded_inputs`)."""

    reader: int
    access: AffineAccess
    offset: int  # of the access coords in storage coords along the band dim


def _loaded_inputs(
    graph: OperatorGraph, members: list[int], structure: _Structure
) -> dict[StorageKey, tuple[int, list[_LoadedRead]]]:
    """DRAM inputs more than one member reads, each read along its band loop through one
    storage dim (the same for all, coefficient >= 0), none through a reshape or as an
    output's initial value: a residual block's input, read by its first convolution and
    by its residual add. Loaded once per band and read in place, such an input is read
    from DRAM once instead of once per member. Returns storage -> (band dim, reads)."""
    found: dict[StorageKey, tuple[int, list[_LoadedRead]]] = {}
    outside, blocked = reads_from_outside(graph, members)
    for operator, use in outside:
        key = use.storage
        assert key is not None
        loop = structure.loops[operator.index]
        rows = [r for r in range(use.access.rank) if use.access.coeffs[r][loop]]
        if (
            key[0] not in ("gen", "arg", "pad")
            or use.through_view
            or len(rows) != 1
            or use.access.coeffs[rows[0]][loop] < 0
        ):
            blocked.add(key)
            continue
        storage = graph.storages[key]
        owner = defining_op(operand_value(operator, use, init=False))
        interior = bool(storage.low) and (owner is None or owner.name != "tensor.pad")
        dim, reads = found.setdefault(key, (rows[0], []))
        if dim != rows[0]:
            blocked.add(key)
        reads.append(_LoadedRead(operator.index, use.access, storage.low[dim] if interior else 0))
    return {
        key: entry
        for key, entry in found.items()
        if key not in blocked and len({read.reader for read in entry[1]}) > 1
    }


def _batch_dim(reads: list[_LoadedRead], batch: _Batch) -> int | None:
    """The dim of a loaded input every read indexes by exactly the reader's batch loop
    (None if some read does not: the input is not sliced per batch tile)."""
    dims = set()
    for read in reads:
        loop = batch.loops[read.reader]
        rows = [r for r in range(read.access.rank) if read.access.coeffs[r][loop]]
        if len(rows) != 1 or _identity_loop(read.access, rows[0]) != loop:
            return None
        dims.add(rows[0])
    return dims.pop() if len(dims) == 1 else None


def _fits_lowering(graph: OperatorGraph, members: list[int], internal: set[StorageKey]) -> bool:
    """Outputs of all but the last operator: internal, or plain results the band loop
    writes whole (no pad buffer, no view, no copy, not initialised from DRAM: a band
    recomputes rows, so a DRAM output must not accumulate into itself)."""
    for index in members:
        for output in graph.operators[index].outputs:
            key = output.storage
            if key is None or key in internal:
                continue
            if output.reads_init and not output.init_scalar and output.init not in internal:
                return False
            storage = graph.storages[key]
            if index != members[-1] and (key[0] != "gen" or storage.external or storage.viewed):
                return False
    return True


def _covers(
    graph: OperatorGraph,
    members: list[int],
    internal: set[StorageKey],
    loops: dict[int, Ranges],
    structure: _Structure,
) -> bool:
    """Every DRAM output is written whole over the bands."""
    for index in members[:-1]:
        operator = graph.operators[index]
        if all(o.storage in internal for o in operator.outputs):
            continue
        extent = operator.generic.extents[structure.loops[index]]
        order = np.argsort(loops[index][0], kind="stable")
        first, end = loops[index][0][order], np.maximum.accumulate(loops[index][1][order])
        if first[0] > 0 or end[-1] < extent or np.any(first[1:] > end[:-1]):
            return False
    return True


def _last_loops(graph: OperatorGraph, members: list[int]) -> list[tuple[int, _Structure]]:
    """The band loop of the last operator: the parallel loop of its outermost output dim
    (of more than one element) that banding propagates through with a halo; if none
    has a halo, every loop it propagates through."""
    operator = graph.operators[members[-1]]
    access = operator.outputs[0].access
    plain: list[tuple[int, _Structure]] = []
    for row in range(access.rank):
        loop = _identity_loop(access, row)
        if loop is None or operator.generic.extents[loop] < 2:
            continue
        structure = band_structure(graph, members, loop)
        if structure is not None and structure.halo:
            return [(loop, structure)]
        if structure is not None:
            plain.append((loop, structure))
    return plain


@dataclass
class _Batch:
    """A loop every operator of the group shares (the batch) run around the bands:
    operator -> loop, internal storage -> dim, the tile of it one trip holds, trips."""

    loops: dict[int, int]
    dims: dict[StorageKey, int]
    tile: int
    trips: int


def _batch_loops(
    graph: OperatorGraph,
    members: list[int],
    internal: set[StorageKey],
    structure: _Structure,
    dimensions: list[dict[int, int]],
) -> tuple[dict[int, int], dict[StorageKey, int], int] | None:
    """A shared dimension of the group (`planner.shared_dimensions`: every internal
    storage indexed identically, no padding on it) that is not the band loop: the
    batch of a convolution chain. Banding one batch tile at a time keeps the band
    buffers a tile thick and the weights kept on chip for every tile. `dimensions`:
    the group's shared dimensions."""
    for shared in dimensions:
        if any(structure.loops[i] == loop for i, loop in shared.items()):
            continue
        extent = graph.operators[members[-1]].generic.extents[shared[members[-1]]]
        if extent > 1:
            return shared, _storage_dims(graph, members, internal, shared), extent
    return None


def _batch_tilings(
    graph: OperatorGraph,
    members: list[int],
    internal: set[StorageKey],
    structure: _Structure,
    dimensions: list[dict[int, int]],
) -> list[_Batch | None]:
    """The batch tiles tried: None (the whole batch in every band) and every proper
    divisor of the batch loop's extent, largest first."""
    found = _batch_loops(graph, members, internal, structure, dimensions)
    if found is None:
        return [None]
    loops, dims, extent = found
    tiles = [t for t in range(extent - 1, 0, -1) if extent % t == 0]
    return [None, *(_Batch(loops, dims, tile, extent // tile) for tile in tiles)]


def plan_halo_group(
    graph: OperatorGraph,
    members: list[int],
    spm_elements: int,
    memo: _Memo,
    bound: int | None = None,
    carried: Carried = (None, None),
    variants: tuple[str, ...] | None = None,
    loads: tuple[bool, ...] | None = None,
) -> tuple[HaloGroupPlan | None, int]:
    """The cheapest banded way to run `members` for less than `bound` bytes (None if
    none fits or none is cheaper), and the resident elements of a banding that fits
    (else more than the scratchpad): the planner stops growing a group when nothing
    fits. A group with no halo is banded too (see below).
    `carried`: the storages it finds in and leaves in the scratchpad whole (`carry.py`;
    the bands read and write their rows in place). `memo` (`planner._Memo`) keeps the
    tilings, the shared dimensions and the bandings across calls. `variants`: of
    `HALO_VARIANTS`, the ones tried; `loads`: without (False) and with (True) the inputs
    several members read loaded per band (`_loaded_inputs`), the ones tried."""
    never = spm_elements + 1  # "nothing fits"
    variants = HALO_VARIANTS if variants is None else variants
    loads = HALO_LOADS if loads is None else loads
    if len(members) < 2 or any(not graph.operators[i].outputs for i in members):
        return None, never
    internal = _internal(graph, set(members))
    if not internal or not _fits_lowering(graph, members, internal):
        return None, never
    held = held_whole(graph, carried, internal)
    if held is None:
        return None, never
    whole, whole_elements = held
    if bound is not None and _group_floor(graph, members, internal | whole) >= bound:
        return None, 0  # cannot pay; 0: whether a banding fits is not known
    structures = _last_loops(graph, members)
    if not structures:
        return None, never
    aliases = _aliases(graph, members, internal)
    if not structures[0][1].halo:
        # No halo: a shared dimension (`planner.py`) runs the group too, but holds one
        # slice of every internal storage, where bands alias a storage into the buffer
        # of its only reader (a bias broadcast in its convolution's output): at batch 8
        # often only the bands fit. Every loop it bands along is tried; both variants
        # are the same without a halo (recompute only).
        variants = ("recompute",)
    least = never
    # (lower bound, banding, its structure, kept inputs, floors), cheapest bound first
    options: list[
        tuple[int, _Banding, _Structure, Resident, dict[tuple[int, int], tuple[int, int]]]
    ] = []
    for last_loop, structure in structures:
        shaped, fitting = _shapes(
            graph,
            members,
            (internal, aliases, whole_elements),
            (last_loop, structure),
            spm_elements,
            memo,
            (variants, loads),
        )
        least = min(least, fitting)
        candidates = {
            value: entry
            for value, entry in resident_candidates(graph, members, structure.loops).items()
            if entry[0] not in whole
        }
        tiled = next((b.batch for b in shaped if b.batch is not None), None)
        across = {} if tiled is None else resident_candidates(graph, members, tiled.loops)
        # Kept for every batch tile too: read independently of the batch loop as well.
        batch_candidates = {v: entry for v, entry in candidates.items() if v in across}
        for banding in shaped:
            if whole & banding.loaded.keys():
                continue  # already on chip whole
            free = spm_elements - banding.elements - whole_elements
            kept = candidates if banding.batch is None else batch_candidates
            for choice in resident_choices(kept, free):
                floors = _floors(graph, members, internal | whole, structure, banding, choice)
                floor = _lower_bound(floors, choice, banding)
                options.append((floor, banding, structure, choice, floors))
    options.sort(key=lambda option: option[0])
    best: tuple[int, Callable[[], HaloGroupPlan]] | None = None
    for floor, banding, structure, choice, floors in options:
        limit = best[0] if best is not None else bound
        if limit is not None and floor >= limit:
            break
        costed = _cost(
            graph,
            members,
            (internal, whole, whole_elements),
            structure,
            (banding, floors),
            choice,
            spm_elements,
            memo.tilings,
            limit,
        )
        if costed is not None:
            best = costed
    if best is None:
        return None, least
    group = best[1]()
    group.aliases = aliases
    group.carry_in, group.carry_out = carried
    assert group.bytes == best[0]
    return group, least


def _shapes(
    graph: OperatorGraph,
    members: list[int],
    storages: tuple[set[StorageKey], dict[StorageKey, tuple[StorageKey, tuple[int, ...]]], int],
    banded: tuple[int, _Structure],
    spm_elements: int,
    memo: _Memo,
    tried: tuple[tuple[str, ...], tuple[bool, ...]],
) -> tuple[list[_Banding], int]:
    """The bandings tried along one last loop: for the whole batch and every batch tile,
    the `BAND_CANDIDATES` tallest heights whose buffers fit beside the carried storages
    (`storages`: internal, aliases, carried elements), in each variant, without and with
    inputs loaded per band (`tried`); and the least elements a banding's buffers hold
    (more than the scratchpad if none bands)."""
    internal, aliases, whole_elements = storages
    variants, loads_tried = tried
    last_loop, structure = banded
    bandings = memo.bandings
    extent = graph.operators[members[-1]].generic.extents[last_loop]
    heights = _heights(extent)
    shaped: list[_Banding] = []
    least = spm_elements + 1
    owners = [graph.storages[key] for key in internal - set(aliases)]
    shared = memo.shared_dimensions(graph, members, internal)
    loaded = _loaded_inputs(graph, members, structure) if True in loads_tried else {}
    for batch in _batch_tilings(graph, members, internal, structure, shared):
        row_elements = 0  # of one band row, over every band buffer
        for storage in owners:
            elements = storage.elements // storage.shape[structure.dims[storage.key]]
            if batch is not None:
                elements = elements // storage.shape[batch.dims[storage.key]] * batch.tile
            row_elements += elements
        fitting = 0
        for height in reversed(heights):  # tallest first: the few tallest that fit are tried
            if height * row_elements >= spm_elements and height > 1:
                continue  # every owner holds at least `height` rows: cannot fit
            tile = 0 if batch is None else batch.tile
            fits = False
            plain = (tuple(members), last_loop, height, tile, False, False)
            if plain not in bandings:
                bandings[plain] = _banding(
                    graph, members, (internal, aliases), structure, extent, height, batch
                )
            # Without and with the inputs several members read loaded per band.
            for loads in loads_tried:
                if loads and not loaded:
                    continue  # nothing to load: the same banding as without
                key = (tuple(members), last_loop, height, tile, False, loads)
                if key not in bandings:  # (without loads: `plain`, made above)
                    bandings[key] = _with_loads(graph, structure, bandings[plain], loaded)
                banding = bandings[key]
                if banding is None:
                    continue
                least = min(least, banding.elements)
                if banding.elements + whole_elements >= spm_elements:
                    continue
                fits = True
                if "recompute" in variants:
                    shaped.append(banding)
                if "cache" in variants:
                    variant = (tuple(members), last_loop, height, tile, True, loads)
                    if variant not in bandings:
                        cached = _cache_variant(bandings[plain])
                        bandings[variant] = (
                            _with_loads(graph, structure, cached, loaded) if loads else cached
                        )
                    cached = bandings[variant]
                    if cached is not None and cached.elements + whole_elements < spm_elements:
                        shaped.append(cached)
            fitting += fits
            if fitting == BAND_CANDIDATES:
                break
    return shaped, least


def _band_counts(banding: _Banding, members: list[int]) -> dict[tuple[int, int], int]:
    """(operator, rows it computes) -> in how many bands."""
    if banding.counts:
        return banding.counts
    counts = banding.counts
    for index in members:
        first, end = banding.loops[index]
        for size, count in sorted(Counter((end - first).tolist()).items()):  # as np.unique
            counts[index, size] = count
    return counts


def _floors(
    graph: OperatorGraph,
    members: list[int],
    internal: set[StorageKey],
    structure: _Structure,
    banding: _Banding,
    resident: Resident,
) -> dict[tuple[int, int], tuple[int, int]]:
    """(operator, rows) -> (bands with that many rows, elements no tiling of one such
    band moves fewer of: its DRAM operands' footprint floors)."""
    on_chip = internal | {key for key, _ in resident.values()} | banding.loaded.keys()
    floors = {}
    for (index, size), count in _band_counts(banding, members).items():
        operator = graph.operators[index]
        extents = banding.extents(operator, index, structure.loops[index], size)
        uses = [u for u in operator.inputs if u.storage not in on_chip]
        uses += [u for u in operator.outputs if u.storage not in internal]
        floor = sum(footprint_floor(u.access, tuple(extents)) for u in uses)
        floors[index, size] = count * banding.trips, floor
    return floors


def _lower_bound(
    floors: dict[tuple[int, int], tuple[int, int]], resident: Resident, banding: _Banding
) -> int:
    """Bytes no tiling of these bands can beat (prunes before the tile search)."""
    kept = sum(elements for _, elements in resident.values()) + banding.load_elements
    return 4 * (kept + sum(count * floor for count, floor in floors.values()))


@lru_cache(maxsize=65536)
def footprint_floor(access: AffineAccess, extents: tuple[int, ...]) -> int:
    """A lower bound on the elements `access` touches over the loop box `extents`: a
    row with loop l takes at least extents[l] values; rows over disjoint loops multiply
    (a strided row may take fewer values than its hull, so not `box_elements`)."""
    rows = [
        (
            frozenset(loop for loop, c in enumerate(row) if c),
            max((extents[loop] for loop, c in enumerate(row) if c), default=1),
        )
        for row in access.coeffs
    ]
    seen: set[int] = set()
    for loops, _ in rows:
        if seen & loops:
            return max(values for _, values in rows)
        seen |= loops
    return _product(tuple(values for _, values in rows))


def _group_floor(graph: OperatorGraph, members: list[int], internal: set[StorageKey]) -> int:
    """Bytes any schedule of the group moves: its DRAM operands' footprint floors
    (`internal`: every storage kept on chip, carried ones included)."""
    member_set = set(members)
    floors: dict[StorageKey, int] = {}
    for index in members:
        operator = graph.operators[index]
        extents = operator.generic.extents
        uses = [
            u
            for u in operator.inputs
            if u.storage is not None
            and graph.storages[u.storage].producer not in member_set
            and u.storage not in internal
        ]
        uses += [u for u in operator.outputs if u.storage is not None and u.storage not in internal]
        for use in uses:
            assert use.storage is not None
            floor = footprint_floor(use.access, extents)
            floors[use.storage] = max(floors.get(use.storage, 0), floor)
    return 4 * sum(floors.values())


def _heights(extent: int) -> list[int]:
    """Band heights tried: powers of two below the extent, and the whole extent (one
    band: the intermediates whole, with the aliasing and kept inputs of halo groups)."""
    heights = []
    height = 1
    while height < extent:
        heights.append(height)
        height *= 2
    return [*heights, extent]


@dataclass(frozen=True)
class _Load:
    """How a banding loads one input per band (`_load_rows`)."""

    shape: tuple[int, ...]  # its buffer: one band's rows, one batch tile
    elements: np.ndarray  # per band: the rows no earlier band of its batch tile held
    reader: int  # the member each band's load is charged to
    dim: int  # the band dim
    batch_dim: int | None  # the batch dim, under batch tiles


@dataclass
class _Banding:
    """One band height's bands, all at once (arrays with one entry per band)."""

    height: int
    loops: dict[int, Ranges]  # operator -> [first, end) on its band loop, per band
    rows: dict[StorageKey, Ranges]  # in-group storage -> rows held, per band
    shapes: dict[StorageKey, tuple[int, ...]]  # band buffers (owners only)
    elements: int  # their aligned elements
    counts: dict[tuple[int, int], int] = field(default_factory=dict)  # see `_band_counts`
    cached: bool = False  # `loops` are the rows each band computes new (`_cache_variant`)
    batch: _Batch | None = None  # the bands run once per batch tile (`_batch_loops`)
    # Inputs loaded per band (`_loaded_inputs`; their rows are in `rows`, their buffers
    # counted in `elements`).
    loaded: dict[StorageKey, _Load] = field(default_factory=dict)

    @property
    def load_elements(self) -> int:
        """Elements the loaded inputs move over all bands and batch tiles."""
        return self.trips * sum(int(load.elements.sum()) for load in self.loaded.values())

    @property
    def trips(self) -> int:
        """How often the bands run: once per batch tile."""
        return 1 if self.batch is None else self.batch.trips

    def extents(self, operator: Operator, index: int, loop: int, size: int) -> list[int]:
        """The loop extents of `operator` (member `index`) in a band of `size` rows."""
        extents = list(operator.generic.extents)
        extents[loop] = size
        if self.batch is not None:
            extents[self.batch.loops[index]] = self.batch.tile
        return extents

    def band(self, number: int) -> Band:
        def pick(ranges: Ranges) -> Range:
            return int(ranges[0][number]), int(ranges[1][number])

        return Band(
            {i: pick(r) for i, r in self.loops.items()},
            {k: pick(r) for k, r in self.rows.items()},
        )


def _banding(
    graph: OperatorGraph,
    members: list[int],
    storages: tuple[set[StorageKey], dict[StorageKey, tuple[StorageKey, tuple[int, ...]]]],
    structure: _Structure,
    extent: int,
    height: int,
    batch: _Batch | None,
) -> _Banding | None:
    """Bands of `height` rows of the last operator (`storages`: the internal ones and
    their aliases; `batch`: the batch tile around the bands, if any)."""
    internal, aliases = storages
    firsts = np.arange(0, extent, height, dtype=np.int64)
    found = band_ranges(graph, members, structure, (firsts, np.minimum(firsts + height, extent)))
    if found is None:
        return None
    loops, rows = found
    if not _covers(graph, members, internal, loops, structure):
        return None
    for key, (root, offset) in aliases.items():  # owners hold their guests' rows too
        dim = structure.dims[key]
        rows[root] = _hull(rows[root], (rows[key][0] + offset[dim], rows[key][1] + offset[dim]))
    shapes = {}
    for key in internal - set(aliases):
        shape = list(graph.storages[key].shape)
        shape[structure.dims[key]] = int(np.max(rows[key][1] - rows[key][0]))
        if batch is not None:
            shape[batch.dims[key]] = batch.tile
        shapes[key] = tuple(shape)
    elements = sum(padded(_product(shape)) for shape in shapes.values())
    return _Banding(height, loops, rows, shapes, elements, batch=batch)


def _with_loads(
    graph: OperatorGraph,
    structure: _Structure,
    banding: _Banding | None,
    loaded: dict[StorageKey, tuple[int, list[_LoadedRead]]],
) -> _Banding | None:
    """`banding` (either variant) with the inputs `loaded` (`_loaded_inputs`) loaded per
    band: their rows are the hull of what the members read in each band, so in the
    cache variant the rows of the new rows only (None if one cannot be sliced per batch
    tile)."""
    if banding is None:
        return None
    banding = replace(banding, rows=dict(banding.rows), counts={}, loaded={})
    for key, entry in loaded.items():
        if not _load_rows(graph, structure, banding, key, entry):
            return None
    return banding


def _load_rows(
    graph: OperatorGraph,
    structure: _Structure,
    banding: _Banding,
    key: StorageKey,
    loaded: tuple[int, list[_LoadedRead]],
) -> bool:
    """Add loaded input `key` to `banding`: the hull of its readers' rows per band (in
    storage coords, clipped to the storage), its buffer (one band's rows, one batch tile)
    and what each band loads: the rows the band before it in the same batch tile did
    not hold, which the lowering keeps (moved to the top of the buffer). False if it
    cannot be sliced per batch tile."""
    dim, reads = loaded
    storage = graph.storages[key]
    shape = list(storage.shape)
    hull: Ranges | None = None
    for read in reads:
        extents = graph.operators[read.reader].generic.extents
        loop = structure.loops[read.reader]
        first, end = _read_range(read.access, dim, loop, banding.loops[read.reader], extents)
        hull = _hull(hull, (first + read.offset, end + read.offset))
    assert hull is not None
    first, end = np.maximum(hull[0], 0), np.minimum(hull[1], shape[dim])
    shape[dim] = int(np.max(end - first))
    row_elements = storage.elements // storage.shape[dim]
    batch_dim = None
    if banding.batch is not None:
        batch_dim = _batch_dim(reads, banding.batch)
        if batch_dim is None:
            return False
        shape[batch_dim] = banding.batch.tile
        row_elements = row_elements // storage.shape[batch_dim] * banding.batch.tile
    new_first = np.minimum(np.concatenate([first[:1], np.maximum(first[1:], end[:-1])]), end)
    banding.rows[key] = (first, end)
    reader = min(read.reader for read in reads)
    banding.loaded[key] = _Load(
        tuple(shape), (end - new_first) * row_elements, reader, dim, batch_dim
    )
    banding.elements += padded(_product(tuple(shape)))
    return True


def _cache_variant(banding: _Banding) -> _Banding | None:
    """The same bands with every operator computing only the rows no earlier band
    computed: band b starts where band b-1 ended (row ranges grow monotonically with
    the band). The buffers hold the same rows; the rows band b shares with band b-1
    stay on chip (None if some operator would compute nothing in some band)."""
    loops = {}
    for index, (first, end) in banding.loops.items():
        new_first = np.concatenate([first[:1], np.maximum(first[1:], end[:-1])])
        if np.any(new_first >= end):
            return None
        loops[index] = (new_first, end)
    return replace(banding, loops=loops, counts={}, cached=True)


def _aliases(
    graph: OperatorGraph, members: list[int], internal: set[StorageKey]
) -> dict[StorageKey, tuple[StorageKey, tuple[int, ...]]]:
    """Internal storages that can live in the buffer of the storage their only reader
    writes, element for element: a bias broadcast in the convolution output it
    initialises, an input of an elementwise operator in its output (a padded output:
    in its interior). Without this a block's chain of epilogues would need one band
    buffer per operator. Returns storage -> (owner of the buffer, coords offset)."""
    direct: dict[StorageKey, tuple[StorageKey, tuple[int, ...]]] = {}
    taken: set[StorageKey] = set()
    for index in members:
        operator = graph.operators[index]
        if len(operator.outputs) != 1:
            continue
        output = operator.outputs[0]
        target = output.storage
        if target not in internal or target in taken or output.through_view:
            continue
        storage = graph.storages[target]
        offset = storage.low or (0,) * len(storage.shape)
        interior = tuple(
            n - lo - hi
            for n, lo, hi in zip(storage.shape, offset, storage.high or offset, strict=True)
        )
        sources: list[StorageKey] = []
        if output.init is not None:
            sources.append(output.init)
        # An input can share the output's buffer only if nothing writes the output
        # before the input is read: no reduction, no initial value copied in first.
        in_place = not operator.contraction and not output.reads_init
        if in_place and not any(operator.generic.is_reduction):
            sources += [
                u.storage
                for u in operator.inputs
                if u.storage is not None and u.access == output.access
            ]
        for source in sources:
            if source not in internal or source in direct or source == target:
                continue
            held = graph.storages[source]
            reads = [u for u in operator.inputs if u.storage == source]
            if source == output.init and reads:
                continue  # also read as an input
            if len(reads) > 1 or held.users != {index} or held.viewed or held.low:
                continue
            if held.shape != interior:
                continue
            direct[source] = (target, tuple(offset))
            taken.add(target)
            break
    resolved: dict[StorageKey, tuple[StorageKey, tuple[int, ...]]] = {}
    for source in direct:
        root, total = source, (0,) * len(graph.storages[source].shape)
        while root in direct:
            root, step = direct[root]
            total = tuple(a + b for a, b in zip(total, step, strict=True))
        resolved[source] = (root, total)
    return resolved


def _cost(
    graph: OperatorGraph,
    members: list[int],
    storages: tuple[set[StorageKey], set[StorageKey], int],
    structure: _Structure,
    bounded: tuple[_Banding, dict[tuple[int, int], tuple[int, int]]],
    resident: Resident,
    spm_elements: int,
    searched: dict[TilingProblem, Tiling | None],
    limit: int | None,
) -> tuple[int, Callable[[], HaloGroupPlan]] | None:
    """The exact traffic of running the group in these bands with these inputs kept
    and a function building that plan (None if a tile does not fit or it reaches
    `limit` bytes; only the cheapest option's plan is built). `storages`: the internal
    ones (band buffers), the carried ones (held whole) and their elements. Branch and bound: the
    operators with the largest floors are searched first, and the search stops as soon
    as the traffic found plus the floors of the rest reach `limit`."""
    banding, floors = bounded
    internal, whole, held = storages
    kept = {key for key, _ in resident.values()}
    on_chip = internal | whole | kept | banding.loaded.keys()
    held += banding.elements + sum(padded(elements) for _, elements in resident.values())
    if held >= spm_elements:
        return None
    step = max(ALIGN_ELEMENTS, spm_elements // CAPACITY_STEPS)
    capacity = (spm_elements - held) // step * step
    loads = first_loads(graph, members, resident)  # charged to the first band
    # (operator, rows) -> its tiling, whether the problem has a stand-in operand, the problem
    tilings: dict[tuple[int, int], tuple[Tiling, bool, TilingProblem]] = {}
    order = sorted(floors.items(), key=lambda item: -item[1][0] * item[1][1])
    total = 4 * (sum(loads.values()) + sum(count * floor for _, (count, floor) in order))
    total += 4 * banding.load_elements
    for (index, size), (count, floor) in order:
        operator = graph.operators[index]
        extents = banding.extents(operator, index, structure.loops[index], size)
        problem, dummy = operator_problem(operator, on_chip, tuple(extents), capacity)
        if FULL_BAND_TILES:
            problem = replace(problem, fixed_full=_full_loops(operator, structure.loops[index]))
        found = search_cached(problem, searched)
        if found is None:
            return None
        tilings[index, size] = found, dummy, problem
        total += count * 4 * (found.traffic_elements - (1 if dummy else 0) - floor)
        if limit is not None and total >= limit:
            return None

    def build() -> HaloGroupPlan:
        count = len(banding.loops[members[-1]][0])
        tile = 0 if banding.batch is None else banding.batch.tile
        bands = []
        for trip in range(banding.trips):  # every batch tile banded in turn
            for number in range(count):
                bands.append(banding.band(number))
                bands[-1].batch = trip * tile
        for number, band in enumerate(bands):
            for index in members:
                operator = graph.operators[index]
                loop = structure.loops[index]
                first, end = band.loops[index]
                tiling, dummy, problem = tilings[index, end - first]
                extents = banding.extents(operator, index, loop, end - first)
                traffic = tiling.traffic_elements - (1 if dummy else 0)
                if number == 0:
                    traffic += loads.get(index, 0)
                loaded = sum(  # this band's rows of the inputs loaded per band
                    int(load.elements[number % count])
                    for load in banding.loaded.values()
                    if load.reader == index
                )
                traffic += loaded
                starts = {loop: first}
                if banding.batch is not None:
                    starts[banding.batch.loops[index]] = band.batch
                offsets = tuple(starts.get(i, 0) for i in range(len(extents)))
                band.plans[index] = OperatorPlan(
                    tuple(extents),
                    None,
                    tiling,
                    dummy,
                    traffic * 4,
                    problem=problem,
                    capacity=capacity,
                    offsets=offsets,
                    loaded_elements=loaded,
                )
        return HaloGroupPlan(
            members,
            internal,
            banding.shapes,
            0,
            1,
            held,
            band_loops=dict(structure.loops),
            band_dims={k: structure.dims[k] for k in internal}
            | {k: load.dim for k, load in banding.loaded.items()},
            band_height=banding.height,
            bands=bands,
            resident=dict(resident),
            cached=banding.cached,
            batch_dims={}
            if banding.batch is None
            else dict(banding.batch.dims)
            | {
                k: load.batch_dim
                for k, load in banding.loaded.items()
                if load.batch_dim is not None
            },
            loaded={k: load.shape for k, load in banding.loaded.items()},
        )

    return total, build


def _full_loops(operator: Operator, band_loop: int) -> tuple[bool, ...]:
    """Loops a halo tile covers whole: the band loop (a band is a few rows) and the
    reduction loops of its window (kh: a few taps). Fewer tilings to search."""
    window = {
        loop
        for use in operator.inputs
        for row in use.access.coeffs
        if row[band_loop]
        for loop, c in enumerate(row)
        if c and operator.generic.is_reduction[loop]
    }
    return tuple(
        loop == band_loop or loop in window for loop in range(len(operator.generic.extents))
    )


def _product(shape: tuple[int, ...]) -> int:
    size = 1
    for extent in shape:
        size *= extent
    return size


def shift_access(access: AffineAccess, offsets: tuple[int, ...] | None) -> AffineAccess:
    """`access` of an operator whose loop l runs from offsets[l] (a band), as an access
    of loops starting at 0: the constants absorb the offsets."""
    if offsets is None or not any(offsets):
        return access
    consts = tuple(
        k + sum(c * o for c, o in zip(row, offsets, strict=True))
        for row, k in zip(access.coeffs, access.consts, strict=True)
    )
    return AffineAccess(access.coeffs, consts, access.num_loops)
