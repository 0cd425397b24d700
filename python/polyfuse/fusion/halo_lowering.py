"""Halo (row-band) groups: the lowering half (the plan is `halo.py`).

A halo group is emitted when its last operator is reached, once per band, the band's
row ranges compile-time constants:

    accel.alloc every internal storage's band buffer (bytes 0..R of the scratchpad),
    then every input loaded per band's
    per batch tile (when a batch loop runs around the bands), per band:
      cache variant: move the rows this band shares with the previous one to the top of
      each buffer; fill only the new padding rows
      recompute variant: re-fill the buffers of padded storages whose band holds
      padding rows
      inputs loaded per band: move the rows the previous band held to the top of the
      buffer, DMA the rest
      per operator: `_FusedLowering._lower_operator` with the band's extents, loop
      offsets (folded into the access constants) and tiling

An internal storage's buffer holds rows [first, end) of the band; the location the
operators see is the buffer shifted by `first` rows (a virtual origin), so every access
stays in the storage's own coordinates. Padding columns are never written by a
producer and keep the first fill; padding rows share buffer rows with interior rows of
other bands, hence the re-fill.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from torch_mlir import ir

from polyfuse.analysis.operators import static_shape
from polyfuse.fusion.graph import Operator, StorageKey, operand_value
from polyfuse.fusion.halo import Band, HaloGroupPlan
from polyfuse.fusion.planner import GroupPlan
from polyfuse.lowering import layer_by_layer as lbl
from polyfuse.lowering.dram import DramTensor
from polyfuse.lowering.tile_compute import TileView, emit_vector
from polyfuse.lowering.tile_nest import dma_copy, padded

if TYPE_CHECKING:
    from polyfuse.fusion.lowering import _FusedLowering


def lower_halo_member(
    lowering: _FusedLowering, operator: Operator, group: HaloGroupPlan
) -> GroupPlan | None:
    """Called for every operator of a halo group in program order; emits the whole group
    at its last operator. Returns the group while it is still open."""
    if operator.index == group.operators[0]:
        with lowering.point:
            _allocate(lowering, group)
    if operator.index != group.operators[-1]:
        return group
    with lowering.point:
        _plan_dram_outputs(lowering, group)
        lowering.load_resident(group)
        sources = _load_sources(lowering, group)
        for number, band in enumerate(group.bands):
            previous = group.bands[number - 1] if number else None
            if previous is not None and previous.batch != band.batch:
                previous = None  # a new batch tile: nothing shared with the last band
            _enter_band(lowering, group, band, number, previous if group.cached else None)
            _load_band(lowering, group, band, previous, sources)
            for index in group.operators:
                lowering._lower_operator(lowering.graph.operators[index], group, band.plans[index])
        lowering.release(group)
    return None


def _allocate(lowering: _FusedLowering, group: HaloGroupPlan) -> None:
    """accel.alloc the storage carried to the next group (`carry.py`), then one band
    buffer per internal storage; register the padded ones so their `tensor.pad` ops (met
    before the group is emitted) are not lowered to DRAM."""
    base = lowering.place_carried(group)
    placed = lowering.allocate_slices(group.slice_shapes, group.slice_shapes, base)
    base += sum(padded(int(np.prod(shape))) for shape in group.slice_shapes.values())
    lowering.loaded = lowering.allocate_slices(group.loaded, group.loaded, base)
    for (kind, owner), whole in placed.items():
        if kind == "pad":
            assert isinstance(owner, ir.Operation)
            lowering.pads[owner] = whole
            lowering.state.pad_buffers[owner] = whole
    lowering.spm[group.operators[0]] = placed


def _plan_dram_outputs(lowering: _FusedLowering, group: HaloGroupPlan) -> None:
    """One DRAM buffer per DRAM result, written by every band (not one per band)."""
    state = lowering.state
    on_chip: set[ir.Value] = set()
    for kind, owner in group.internal:
        on_chip.add(owner if kind == "gen" else owner.operands[0])
    for index in group.operators:
        for result in lowering.graph.operators[index].op.results:
            if result in on_chip or len(list(result.uses)) == 0:
                continue
            if state.planned.get(result) is None:
                state.planned[result] = lbl._new_dram(state, static_shape(result))


def _enter_band(
    lowering: _FusedLowering,
    group: HaloGroupPlan,
    band: Band,
    number: int,
    previous: Band | None,
) -> None:
    """Point the internal storages' locations at the band's rows; fill padding. In the
    cache variant (`previous`: the band before), first move the rows both bands hold to
    where this band's origin puts them."""
    state = lowering.state
    for key, whole in lowering.spm[group.operators[0]].items():
        dim = group.band_dims[key]
        first, end = band.rows[key]
        kept_end = _keep_rows(
            whole, dim, band.rows[key], None if previous is None else previous.rows[key]
        )
        virtual = DramTensor(
            whole.buffer, whole.shape, whole.strides, _origin(group, band, key, whole)
        )
        kind, owner = key
        if kind == "gen":
            assert isinstance(owner, ir.Value)
            state.planned[owner] = virtual
            continue
        assert isinstance(owner, ir.Operation)
        low = list(ir.DenseI64ArrayAttr(owner.attributes["static_low"]))
        state.locations[owner.result] = virtual
        state.planned[owner.operands[0]] = _interior(virtual, owner)
        interior = lowering.graph.storages[key].shape[dim] - low[dim]
        interior -= list(ir.DenseI64ArrayAttr(owner.attributes["static_high"]))[dim]
        if previous is not None:  # only the new rows may need it (padding columns kept)
            value = lbl._pad_value(state, owner)
            for rows in ((kept_end, min(end, low[dim])), (max(kept_end, low[dim] + interior), end)):
                if rows[0] < rows[1]:
                    _fill_rows(whole, dim, (rows[0] - first, rows[1] - first), value)
        elif number == 0 or first < low[dim] or end > low[dim] + interior:
            lowering._fill_border(key, whole)
    for key, (root, offsets) in group.aliases.items():  # inside their owner's buffer
        whole = lowering.spm[group.operators[0]][root]
        origin = _origin(group, band, root, whole)
        origin += sum(o * s for o, s in zip(offsets, whole.strides, strict=True))
        owner = key[1]
        assert key[0] == "gen" and isinstance(owner, ir.Value)
        shape = lowering.graph.storages[key].shape
        state.planned[owner] = DramTensor(whole.buffer, shape, whole.strides, origin)


def _load_band(
    lowering: _FusedLowering,
    group: HaloGroupPlan,
    band: Band,
    previous: Band | None,
    sources: dict[StorageKey, tuple[DramTensor, set[ir.Value]]],
) -> None:
    """Bring the band's rows of every input loaded per band into its buffer: the rows
    the previous band of the batch tile held are moved to the top of the buffer, the
    rest are DMA'd from DRAM; then point the members' reads at the buffer (shifted by
    the band's first row, as for internal storages). `sources`: each input's DRAM
    location and the values the members read it through (`_load_sources`)."""
    for key, whole in lowering.loaded.items():
        dim = group.band_dims[key]
        first, end = band.rows[key]
        kept_end = _keep_rows(
            whole, dim, band.rows[key], None if previous is None else previous.rows[key]
        )
        source, values = sources[key]
        if kept_end < end:
            offsets, sizes = [0] * len(whole.shape), list(whole.shape)
            offsets[dim], sizes[dim] = kept_end, end - kept_end
            rows = list(offsets)  # where they go in the buffer
            rows[dim] -= first
            if key in group.batch_dims:
                offsets[group.batch_dims[key]] = band.batch
            ones = [1] * len(sizes)
            dma_copy(whole.slice(rows, sizes, ones), source.slice(offsets, sizes, ones))
        virtual = DramTensor(
            whole.buffer, source.shape, whole.strides, _origin(group, band, key, whole)
        )
        pad = key[1] if key[0] == "pad" else None
        for value in values:
            inside = isinstance(pad, ir.Operation) and value != pad.result
            lowering.band_views[value] = _interior(virtual, pad) if inside else virtual


def _load_sources(
    lowering: _FusedLowering, group: HaloGroupPlan
) -> dict[StorageKey, tuple[DramTensor, set[ir.Value]]]:
    """For every input the group loads per band: where it lives in DRAM (storage coords)
    and the values through which the members read it."""
    sources: dict[StorageKey, tuple[DramTensor, set[ir.Value]]] = {}
    for key in group.loaded:
        owner = key[1]
        value = owner.result if isinstance(owner, ir.Operation) else owner  # a pad: its result
        sources[key] = (lowering._location(value), set())
    for index in group.operators:
        operator = lowering.graph.operators[index]
        for use in operator.inputs:
            if use.storage in sources:
                sources[use.storage][1].add(operand_value(operator, use, init=False))
    return sources


def _keep_rows(
    whole: DramTensor, dim: int, rows: tuple[int, int], before: tuple[int, int] | None
) -> int:
    """Move the rows of band `rows` ([first, end)) the band before it held (`before`,
    None: none) to the top of buffer `whole`; returns where the rows kept end."""
    first, end = rows
    if before is None:
        return first
    kept_end = max(first, min(before[1], end))
    _move_rows(whole, dim, kept_end - first, first - before[0])
    return kept_end


def _origin(group: HaloGroupPlan, band: Band, key: StorageKey, whole: DramTensor) -> int:
    """The virtual origin of storage `key`'s band buffer `whole`: where its element 0
    would be, so that the band's rows (and batch tile) land in the buffer."""
    first = band.rows[key][0]
    return (
        whole.offset
        - first * whole.strides[group.band_dims[key]]
        - _batch_shift(group, band, key, whole)
    )


def _interior(padded_view: DramTensor, pad: ir.Operation) -> DramTensor:
    """The view of a padded storage's interior (what the pad's source reads and writes)."""
    low = list(ir.DenseI64ArrayAttr(pad.attributes["static_low"]))
    shape = list(static_shape(pad.operands[0]))
    return padded_view.slice(low, shape, [1] * len(low))


def _batch_shift(group: HaloGroupPlan, band: Band, key: StorageKey, whole: DramTensor) -> int:
    """Elements between a band buffer and its virtual origin along the batch dim: the
    buffer holds the batch tile starting at `band.batch`."""
    if key not in group.batch_dims:
        return 0
    return band.batch * whole.strides[group.batch_dims[key]]


def _move_rows(whole: DramTensor, dim: int, count: int, shift: int) -> None:
    """Copy buffer rows [shift, shift + count) to [0, count): the rows the previous
    band held `shift` rows further down. Chunks of at most `shift` rows, first to last,
    so no copy reads rows an earlier one wrote."""
    stride = whole.strides[dim]
    row = 0
    while shift > 0 and row < count:
        rows = min(shift, count - row)
        shape = list(whole.shape)
        shape[dim] = rows
        emit_vector(
            "copy",
            TileView(whole.buffer, whole.strides, offset=whole.offset + row * stride),
            [TileView(whole.buffer, whole.strides, offset=whole.offset + (row + shift) * stride)],
            tuple(shape),
        )
        row += rows


def _fill_rows(whole: DramTensor, dim: int, rows: tuple[int, int], value: float) -> None:
    """Fill buffer rows [rows) with the padding value."""
    shape = list(whole.shape)
    shape[dim] = rows[1] - rows[0]
    emit_vector(
        "copy",
        TileView(whole.buffer, whole.strides, offset=whole.offset + rows[0] * whole.strides[dim]),
        [TileView(None, scalar=value)],
        tuple(shape),
    )
