"""Halo (row-band) tiling of convolution chains: the planning half.

A group whose internal storages cannot share a dimension (a padded intermediate read by
a convolution's `h*stride + kh*dilation - pad`) still fuses if the group's last
operator is computed in *bands* of `b` output rows (Deep Fusion / DeFiNES, recompute
variant). Walking backwards through the group, the rows every producer must compute
for one band follow from its consumers' access relations, clipped to the producer's
extent; rows two neighbouring bands both need are recomputed by both. Each internal
storage holds one band's rows (the largest band's count), padding rows included.

Bands are compile-time constants: the lowering (`halo_lowering.py`) emits the group's
code once per band, every row range fixed. The cost of a halo group is exactly

    sum over bands, over operators of  tiling traffic of the band's DRAM operands

with the same tile search (`search_tiling`) as every other group, so the plan stays
equal to the emulator's count. Only the recompute variant is implemented: the rows a
band shares with the next are computed again, never kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch_mlir import ir

from polyfuse.analysis.affine import AffineAccess
from polyfuse.analysis.operators import defining_op, static_shape
from polyfuse.analysis.tile_search import Tiling, TilingProblem, search_tiling
from polyfuse.fusion.graph import OperandUse, Operator, OperatorGraph, StorageKey
from polyfuse.fusion.planner import (
    CAPACITY_STEPS,
    GroupPlan,
    OperatorPlan,
    _identity_loop,
    _internal,
    aligned,
    operator_problem,
)
from polyfuse.lowering.tile_nest import ALIGN_ELEMENTS

BAND_CANDIDATES = 3  # largest fitting power-of-two band heights tried per group
Range = tuple[int, int]  # [first, end)


@dataclass
class Band:
    """One band of a halo group: every operator's rows and every storage's rows."""

    loops: dict[int, Range]  # operator -> its range on its band loop
    rows: dict[StorageKey, Range]  # internal storage -> the rows (storage coords) held
    plans: dict[int, OperatorPlan] = field(default_factory=dict)


@dataclass
class HaloGroupPlan(GroupPlan):
    """A group run band by band (see the module docstring); `trips` is 1, no outer loop."""

    band_loops: dict[int, int] = field(default_factory=dict)  # operator -> band loop
    band_dims: dict[StorageKey, int] = field(default_factory=dict)  # storage -> band dim
    band_height: int = 0  # output rows of the last operator per band
    bands: list[Band] = field(default_factory=list)
    # Band-invariant DRAM inputs (weights, biases) loaded once into the scratchpad after
    # the band buffers and kept for all bands: value -> (storage, elements). Their load
    # is charged to the first band's plan of the first operator reading them.
    resident: dict[ir.Value, tuple[StorageKey, int]] = field(default_factory=dict)
    # Internal storages kept inside another one's buffer (see `_aliases`): storage ->
    # (the storage owning the buffer, offset of its coords in the owner's coords).
    aliases: dict[StorageKey, tuple[StorageKey, tuple[int, ...]]] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(p.bytes for band in self.bands for p in band.plans.values())


@dataclass
class _Structure:
    """Which loop of every operator and which dim of every in-group storage is banded."""

    loops: dict[int, int]
    dims: dict[StorageKey, int]
    # Per operator: (storage, access, offset of the access coords in storage coords)
    # of every read of a storage a member produces.
    reads: dict[int, list[tuple[StorageKey, AffineAccess, int]]]
    halo: bool  # some read is not an identity (else a shared dimension does it)


def _operand_value(operator: Operator, use: OperandUse, init: bool) -> ir.Value:
    """The tensor value `use` reads (an input, or an output's initial value)."""
    if not init:
        return operator.generic.inputs[use.index].value
    live = [
        o
        for o, result in zip(operator.generic.outputs, operator.op.results, strict=True)
        if len(list(result.uses)) > 0
    ]
    return live[use.index].value


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
        owner = defining_op(_operand_value(operator, use, init))
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
    access: AffineAccess, row: int, loop: int, band: Range, extents: tuple[int, ...]
) -> Range:
    """Hull of row `row` of `access` over the band on `loop`, every other loop whole."""
    low = high = access.consts[row]
    for other, c in enumerate(access.coeffs[row]):
        first, end = band if other == loop else (0, extents[other])
        low += min(c * first, c * (end - 1))
        high += max(c * first, c * (end - 1))
    return low, high + 1


def _hull(a: Range | None, b: Range) -> Range:
    return b if a is None else (min(a[0], b[0]), max(a[1], b[1]))


def band_ranges(
    graph: OperatorGraph, members: list[int], structure: _Structure, band: Range
) -> tuple[dict[int, Range], dict[StorageKey, Range]] | None:
    """Every operator's loop range and every in-group storage's rows for one band of the
    last operator (None if some producer would compute nothing)."""
    loops: dict[int, Range] = {members[-1]: band}
    rows: dict[StorageKey, Range] = {}
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
            computed = (max(0, needed[0] - low), min(extent, needed[1] - low))
            if computed[0] >= computed[1]:
                return None
            loops[producer] = _hull(loops.get(producer), computed)
    return loops, rows


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
    bands: list[Band],
    structure: _Structure,
) -> bool:
    """Every DRAM output is written whole over the bands."""
    for index in members[:-1]:
        operator = graph.operators[index]
        if all(o.storage in internal for o in operator.outputs):
            continue
        extent = operator.generic.extents[structure.loops[index]]
        covered = 0
        for first, end in sorted(band.loops[index] for band in bands):
            if first > covered:
                return False
            covered = max(covered, end)
        if covered < extent:
            return False
    return True


def _last_loop(graph: OperatorGraph, members: list[int]) -> tuple[int, _Structure] | None:
    """The band loop of the last operator: the parallel loop of its outermost output dim
    (of more than one element) that banding propagates through; one with a halo first."""
    operator = graph.operators[members[-1]]
    access = operator.outputs[0].access
    plain: tuple[int, _Structure] | None = None
    for row in range(access.rank):
        loop = _identity_loop(access, row)
        if loop is None or operator.generic.extents[loop] < 2:
            continue
        structure = band_structure(graph, members, loop)
        if structure is not None and structure.halo:
            return loop, structure
        if structure is not None and plain is None:
            plain = loop, structure
    return plain


def plan_halo_group(
    graph: OperatorGraph,
    members: list[int],
    spm_elements: int,
    searched: dict[TilingProblem, Tiling | None],
) -> tuple[HaloGroupPlan | None, int]:
    """The cheapest banded way to run `members` (None if none fits or it needs no halo)
    and the fewest resident elements a banding needed (the planner stops growing a
    group when nothing fits: a group that bands without a halo still lets it grow)."""
    never = spm_elements + 1
    if len(members) < 2 or any(not graph.operators[i].outputs for i in members):
        return None, never
    internal = _internal(graph, set(members))
    if not internal or not _fits_lowering(graph, members, internal):
        return None, never
    found = _last_loop(graph, members)
    if found is None:
        return None, never
    aliases = _aliases(graph, members, internal)
    last_loop, structure = found
    extent = graph.operators[members[-1]].generic.extents[last_loop]
    shaped: list[tuple[int, list[Band], dict[StorageKey, tuple[int, ...]], int]] = []
    least = never
    for height in _heights(extent):
        bands = _bands(graph, members, structure, extent, height)
        if bands is not None and _covers(graph, members, internal, bands, structure):
            shapes = _band_shapes(graph, internal, structure, bands, aliases)
            resident = sum(aligned(_product(s)) for s in shapes.values())
            least = min(least, resident)
            if resident < spm_elements:
                shaped.append((height, bands, shapes, resident))
        if not structure.halo:
            return None, least  # a shared dimension does the same (`planner.py`)
    candidates = _resident_candidates(graph, members, structure)
    best: HaloGroupPlan | None = None
    for height, bands, shapes, resident in shaped[-BAND_CANDIDATES:]:
        free = spm_elements - resident
        for choice in _resident_choices(candidates, free):
            group = _cost(
                graph,
                members,
                internal,
                structure,
                (height, bands, shapes, resident),
                choice,
                spm_elements,
                searched,
            )
            if group is not None:
                group.aliases = aliases
            if group is not None and (best is None or group.bytes < best.bytes):
                best = group
    return best, least


def _heights(extent: int) -> list[int]:
    """Band heights tried: powers of two below the extent, and the whole extent (one
    band: the intermediates whole, with the aliasing and kept inputs of halo groups)."""
    heights = []
    height = 1
    while height < extent:
        heights.append(height)
        height *= 2
    return [*heights, extent]


def _resident_candidates(
    graph: OperatorGraph, members: list[int], structure: _Structure
) -> dict[ir.Value, tuple[StorageKey, int]]:
    """DRAM inputs no band changes: not produced in the group, read independently of
    every reader's band loop, every read through the same value (largest first)."""
    member_set = set(members)
    values: dict[ir.Value, tuple[StorageKey, int]] = {}
    by_storage: dict[StorageKey, set[ir.Value]] = {}
    banded: set[StorageKey] = set()
    for index in members:
        operator = graph.operators[index]
        for use in operator.inputs:
            key = use.storage
            if key is None or graph.storages[key].producer in member_set:
                continue
            if use.access.coeffs and any(row[structure.loops[index]] for row in use.access.coeffs):
                banded.add(key)
                continue
            value = _operand_value(operator, use, False)
            by_storage.setdefault(key, set()).add(value)
            values[value] = (key, _product(static_shape(value)))
    kept = {
        value: entry
        for value, entry in values.items()
        if entry[0] not in banded and len(by_storage[entry[0]]) == 1
    }
    return dict(sorted(kept.items(), key=lambda item: -item[1][1]))


RESIDENT_FRACTIONS = (0.0, 0.5, 0.75)  # of the scratchpad the band buffers leave


def _resident_choices(
    candidates: dict[ir.Value, tuple[StorageKey, int]], free: int
) -> list[dict[ir.Value, tuple[StorageKey, int]]]:
    """Greedy (largest first) sets of resident inputs filling a few fractions of `free`."""
    choices: list[dict[ir.Value, tuple[StorageKey, int]]] = []
    for fraction in RESIDENT_FRACTIONS:
        budget = int(free * fraction)
        choice: dict[ir.Value, tuple[StorageKey, int]] = {}
        for value, (key, elements) in candidates.items():
            if aligned(elements) <= budget:
                choice[value] = (key, elements)
                budget -= aligned(elements)
        if choice not in choices:
            choices.append(choice)
    return choices


def _bands(
    graph: OperatorGraph, members: list[int], structure: _Structure, extent: int, height: int
) -> list[Band] | None:
    bands = []
    for first in range(0, extent, height):
        ranges = band_ranges(graph, members, structure, (first, min(extent, first + height)))
        if ranges is None:
            return None
        bands.append(Band(ranges[0], ranges[1]))
    return bands


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
        if not operator.contraction and not any(operator.generic.is_reduction):
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


def _band_shapes(
    graph: OperatorGraph,
    internal: set[StorageKey],
    structure: _Structure,
    bands: list[Band],
    aliases: dict[StorageKey, tuple[StorageKey, tuple[int, ...]]],
) -> dict[StorageKey, tuple[int, ...]]:
    """Band buffer shapes of the storages owning a buffer; first widens every band's
    owner rows by the rows of the storages it holds (in the owner's coords)."""
    for band in bands:
        for key, (root, offset) in aliases.items():
            dim = structure.dims[key]
            first, end = band.rows[key]
            band.rows[root] = _hull(band.rows[root], (first + offset[dim], end + offset[dim]))
    shapes = {}
    for key in internal - set(aliases):
        dim = structure.dims[key]
        shape = list(graph.storages[key].shape)
        shape[dim] = max(band.rows[key][1] - band.rows[key][0] for band in bands)
        shapes[key] = tuple(shape)
    return shapes


def _cost(
    graph: OperatorGraph,
    members: list[int],
    internal: set[StorageKey],
    structure: _Structure,
    banding: tuple[int, list[Band], dict[StorageKey, tuple[int, ...]], int],
    resident: dict[ir.Value, tuple[StorageKey, int]],
    spm_elements: int,
    searched: dict[TilingProblem, Tiling | None],
) -> HaloGroupPlan | None:
    """The exact traffic of running the group in these bands with these inputs kept."""
    height, template, shapes, band_elements = banding
    kept = {key for key, _ in resident.values()}
    on_chip = internal | kept
    held = band_elements + sum(aligned(elements) for _, elements in resident.values())
    if held >= spm_elements:
        return None
    step = max(ALIGN_ELEMENTS, spm_elements // CAPACITY_STEPS)
    capacity = (spm_elements - held) // step * step
    bands = [Band(band.loops, band.rows) for band in template]
    loads: dict[int, int] = {}  # operator -> elements of kept inputs it loads first
    charged: set[StorageKey] = set()
    for index in members:
        for use in graph.operators[index].inputs:
            if use.storage in kept and use.storage not in charged:
                charged.add(use.storage)
                loads[index] = loads.get(index, 0) + sum(
                    e for k, e in resident.values() if k == use.storage
                )
    for number, band in enumerate(bands):
        for index in members:
            operator = graph.operators[index]
            loop = structure.loops[index]
            first, end = band.loops[index]
            extents = list(operator.generic.extents)
            extents[loop] = end - first
            problem, dummy = operator_problem(operator, on_chip, tuple(extents), capacity)
            if problem not in searched:
                searched[problem] = search_tiling(problem)
            tiling = searched[problem]
            if tiling is None:
                return None
            traffic = tiling.traffic_elements - (1 if dummy else 0)
            if number == 0:
                traffic += loads.get(index, 0)
            offsets = tuple(first if i == loop else 0 for i in range(len(extents)))
            band.plans[index] = OperatorPlan(
                tuple(extents), None, tiling, dummy, traffic * 4, offsets
            )
    return HaloGroupPlan(
        members,
        internal,
        shapes,
        0,
        1,
        held,
        band_loops=dict(structure.loops),
        band_dims={k: structure.dims[k] for k in internal},
        band_height=height,
        bands=bands,
        resident=dict(resident),
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
