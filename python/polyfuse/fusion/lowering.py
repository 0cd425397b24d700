"""Fused lowering: linalg on tensors → accel, one fusion group at a time.

The plan (`planner.plan_fusion`) says which operators form a group, which storages stay
in the scratchpad and the outer tile. A group becomes

    accel.alloc of every internal storage's slice (bytes 0..R of the scratchpad)
    fill the border of internal padded storages (vector unit)
    affine.for over the outer tiles of the shared dimension (when tiled; two nested
    loops for a group tiled along two shared dimensions, `GroupPlan.outer`)
      per operator: its own tile loops (the layer-by-layer search, operands in DRAM
      only), DMAs of DRAM operands into tile buffers above R, compute instructions
      that read and write internal storages in place through iv-dependent views

Everything that is not a linalg.generic (views, pads into DRAM, copies, constants,
return) is lowered exactly as the layer-by-layer lowering does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from torch_mlir import ir
from torch_mlir.dialects import affine, func

from polyfuse.analysis.affine import AffineAccess
from polyfuse.analysis.operators import defining_op, generic_operator, location_text, static_shape
from polyfuse.dialects import accel
from polyfuse.errors import UnsupportedError
from polyfuse.fusion.breakdown import group_traffic
from polyfuse.fusion.graph import (
    VIEWS,
    Operator,
    OperatorGraph,
    StorageKey,
    build_graph,
    pad_of_result,
)
from polyfuse.fusion.halo import HaloGroupPlan, shift_access
from polyfuse.fusion.halo_lowering import lower_halo_member
from polyfuse.fusion.input_pads import copy_padded_inputs
from polyfuse.fusion.overlap import Overlap
from polyfuse.fusion.planner import FusionPlan, GroupPlan, OperatorPlan, plan_fusion
from polyfuse.lowering import layer_by_layer as lbl
from polyfuse.lowering.allocator import PLACED_ATTRIBUTE
from polyfuse.lowering.contraction_embedding import plan_embedded_issue
from polyfuse.lowering.dram import DramTensor
from polyfuse.lowering.pe_array import classify_contraction, emit_contraction, plan_issue
from polyfuse.lowering.tile_compute import TileView, emit_vector
from polyfuse.lowering.tile_nest import (
    ScratchpadArena,
    TileIndex,
    TileNest,
    TileOperand,
    allocate_tiles,
    deallocate_tiles,
    dma_copy,
    padded,
)
from polyfuse.lowering.vector_body import BodyEmitter, plan_body
from polyfuse.targets import Target


@dataclass
class _Operand:
    """An operand of one operator inside a group."""

    access: AffineAccess
    location: DramTensor  # DRAM, or a scratchpad storage (slice) viewed in place
    on_chip: bool
    is_output: bool
    tile: TileOperand | None = None  # its tile in the operator's TileNest
    init: float | DramTensor | None = None  # outputs: fill value or where to copy from
    # On chip whole (a resident input, a carried storage), not as one outer tile's
    # slice: the group's outer tile loop moves its views as it moves DMAs.
    unsliced: bool = False


def lower_function_fused(
    func_op: ir.Operation,
    module_op: ir.Operation,
    target: Target,
    overlap: Overlap | None = None,
    halo: bool = True,
) -> tuple[list[lbl.OperatorRecord], FusionPlan]:
    """Replace `func_op` by its fused accel version; returns records and the plan.

    `overlap` (see `overlap.py`): buffer copies and the contraction embedding; without
    it every tile is single-buffered and contractions use `plan_issue`. `halo`: see
    `plan_fusion`."""
    copy_padded_inputs(func_op)  # padded inputs built on chip where that fuses
    graph = build_graph(func_op)
    plan = plan_fusion(graph, target.scratchpad_bytes, overlap, halo)
    return emit_function_fused(func_op, module_op, target, graph, plan), plan


def emit_function_fused(
    func_op: ir.Operation,
    module_op: ir.Operation,
    target: Target,
    graph: OperatorGraph,
    plan: FusionPlan,
) -> list[lbl.OperatorRecord]:
    """Replace `func_op` by the accel code of `plan` (its operators' graph: `graph`);
    returns the records. Reads nothing but the plan and the function."""
    plan.traffic = group_traffic(graph, plan)
    name = ir.StringAttr(func_op.attributes["sym_name"]).value
    function_type = ir.FunctionType(ir.TypeAttr(func_op.attributes["function_type"]).value)
    for t in [*function_type.inputs, *function_type.results]:
        if not isinstance(t, ir.RankedTensorType):
            raise UnsupportedError(f"function @{name}: argument or result {t} is not a tensor")
    inputs = [lbl._f32_memref(tuple(ir.ShapedType(t).shape)) for t in function_type.inputs]
    outputs = [lbl._f32_memref(tuple(ir.ShapedType(t).shape)) for t in function_type.results]
    with ir.InsertionPoint(func_op), func_op.location:
        new_func = func.FuncOp(name + "__accel", (inputs + outputs, []))
    entry = new_func.add_entry_block()
    state = lbl._State(target=target, module=module_op, new_func=new_func.operation, entry=entry)
    old_block = func_op.regions[0].blocks[0]
    for arg, new_arg in zip(old_block.arguments, entry.arguments[: len(inputs)], strict=True):
        state.locations[arg] = DramTensor.whole(new_arg, static_shape(arg))
    ops = [o.operation for o in old_block.operations]
    lowering = _FusedLowering(state, graph, plan)
    with ir.InsertionPoint(entry), func_op.location:
        lowering.place_internal_storages()
    lbl._plan_outputs(state, ops, list(entry.arguments[len(inputs) :]))
    for op in ops:  # results also read by other operators go into the pad too (no copy)
        if op.name != "tensor.pad" or op.operands[0] in state.planned:
            continue
        pad = pad_of_result(op.operands[0])
        if pad is not None and pad == op:
            state.planned[op.operands[0]] = lbl._pad_interior(state, op)
    lowering.point = ir.InsertionPoint(entry)
    for op in ops:
        with lowering.point, op.location:
            lowering.lower_op(op)
    func_op.erase()
    new_func.operation.attributes["sym_name"] = ir.StringAttr.get(name)
    new_func.operation.attributes[lbl.NUM_INPUTS_ATTRIBUTE] = ir.IntegerAttr.get(
        ir.IntegerType.get_signless(64), len(inputs)
    )
    new_func.operation.attributes[PLACED_ATTRIBUTE] = ir.UnitAttr.get()
    return state.records


class _FusedLowering:
    def __init__(self, state: lbl._State, graph: OperatorGraph, plan: FusionPlan) -> None:
        self.state = state
        self.graph = graph
        self.plan = plan
        self.group_of = plan.group_of()
        self.by_op = {operator.op: operator for operator in graph.operators}
        self.spm: dict[int, dict[StorageKey, DramTensor]] = {}
        self.pads: dict[ir.Operation, DramTensor] = {}
        # The open group's outer tile loops' ivs, outer first (None: one trip).
        self.outer_ivs: list[ir.Value | None] = []
        self.open_group: GroupPlan | None = None
        self.top_down = False  # where the next operator's tiles go (ScratchpadArena)
        self.resident: dict[ir.Value, DramTensor] = {}  # the open group's resident inputs
        # A halo group's inputs loaded per band (`halo.py`): their buffers, and what each
        # value a member reads them through sees in the current band.
        self.loaded: dict[StorageKey, DramTensor] = {}
        self.band_views: dict[ir.Value, DramTensor] = {}
        # Storages carried from one group to the next (`carry.py`): where each is and
        # whether it sits at the top end of the scratchpad (else at byte 0).
        self.carried: dict[StorageKey, tuple[DramTensor, bool]] = {}
        self.bottom_held = 0  # the open group's elements held from byte 0 up
        self.top_held = 0  # and from the top down (a carried storage)
        self.point = ir.InsertionPoint(state.entry)  # where the next op goes
        assert state.entry is not None

    # --- storages ----------------------------------------------------------------

    def place_internal_storages(self) -> None:
        """Keep the layer-by-layer planning away from internal padded storages (their
        buffers are made when their group starts)."""
        for group in self.plan.groups:
            carried = {group.carry_out} if group.carry_out is not None else set()
            for kind, owner in group.internal | carried:
                if kind == "pad":
                    assert isinstance(owner, ir.Operation)
                    self.state.planned[owner.operands[0]] = None  # type: ignore[assignment]

    def allocate_slices(
        self, keys: Iterable[StorageKey], shapes: dict[StorageKey, tuple[int, ...]], base: int = 0
    ) -> dict[StorageKey, DramTensor]:
        """accel.alloc one buffer of `shapes[key]` per storage, packed from scratchpad
        element `base` in the storages' creation order (deterministic layouts)."""
        offset = base
        placed: dict[StorageKey, DramTensor] = {}
        for key in sorted(keys, key=lambda k: self.graph.storages[k].order):
            shape = shapes[key]
            elements = int(np.prod(shape))
            buffer = accel.alloc(elements, offset * 4)
            offset += padded(elements)
            placed[key] = DramTensor.whole(buffer, shape)
        return placed

    def _allocate_internal(self, group: GroupPlan) -> None:
        """accel.alloc the storage carried on, then every internal storage from the
        bottom up (above a carried storage there)."""
        placed = self.allocate_slices(group.internal, group.slice_shapes, self.place_carried(group))
        for key, whole in placed.items():
            self._register(key, whole)
        self.spm[group.operators[0]] = placed

    def place_carried(self, group: GroupPlan) -> int:
        """accel.alloc the storage `group` carries to the next group (`carry.py`) at the
        end of the scratchpad its carried-in one does not use (the top when none), fill
        its padding; returns the elements now held from byte 0 (where the group's own
        buffers start)."""
        spm = self.state.target.scratchpad_bytes // 4
        bottom = top = 0
        in_top: bool | None = None
        if group.carry_in is not None:
            whole, in_top = self.carried[group.carry_in]
            size = padded(int(np.prod(whole.shape)))
            top, bottom = (size, 0) if in_top else (0, size)
        if group.carry_out is not None and group.carry_out != group.carry_in:
            key = group.carry_out
            shape = self.graph.storages[key].shape
            size = padded(int(np.prod(shape)))
            out_top = not in_top if in_top is not None else True
            offset = spm - top - size if out_top else bottom
            whole = DramTensor.whole(accel.alloc(int(np.prod(shape)), offset * 4), shape)
            self._register(key, whole)
            if key[0] == "pad":
                self._fill_border(key, whole)
            self.carried[key] = (whole, out_top)
            top, bottom = (top + size, bottom) if out_top else (top, bottom + size)
        self.bottom_held, self.top_held = bottom, top
        return bottom

    def _register(self, key: StorageKey, whole: DramTensor) -> None:
        """Make the operators writing storage `key` (or its slice) write `whole`."""
        kind, owner = key
        if kind == "gen":
            assert isinstance(owner, ir.Value)
            self.state.planned[owner] = whole
            return
        assert isinstance(owner, ir.Operation)
        low = list(ir.DenseI64ArrayAttr(owner.attributes["static_low"]))
        source_shape = list(static_shape(owner.operands[0]))
        for dim, size in enumerate(whole.shape):
            if size != self.graph.storages[key].shape[dim]:
                source_shape[dim] = size  # the shared dim is never padded
        self.pads[owner] = whole
        self.state.pad_buffers[owner] = whole
        self.state.planned[owner.operands[0]] = whole.slice(low, source_shape, [1] * len(low))

    def load_resident(self, group: GroupPlan) -> None:
        """DMA every resident input (`resident.py`) into the scratchpad once, above the
        internal storages, where the group's operators read it."""
        offset = self.bottom_held
        offset += sum(padded(int(np.prod(s))) for s in group.buffer_shapes())
        for value, (_, elements) in group.resident.items():
            source = self._view_location(value)
            buffer = accel.alloc(elements, offset * 4)
            offset += padded(elements)
            copy = DramTensor.whole(buffer, source.shape)
            dma_copy(copy, source)
            self.resident[value] = copy

    def release(self, group: GroupPlan) -> None:
        """accel.dealloc the group's internal storages, resident inputs and the storage
        it found on chip (the one it carries on stays)."""
        buffers = [*self.spm[group.operators[0]].values(), *self.resident.values()]
        buffers += self.loaded.values()
        if group.carry_in is not None and group.carry_in != group.carry_out:
            buffers.append(self.carried.pop(group.carry_in)[0])
        for whole in buffers:
            accel.dealloc(whole.buffer)
        self.resident = {}
        self.loaded = {}
        self.band_views = {}
        self.bottom_held = self.top_held = 0

    def _view_location(self, value: ir.Value) -> DramTensor:
        """Where `value` lives, lowering the views it is read through first when they come
        later in the program than where it is needed (a depthwise weight's reshape next
        to its convolution, loaded when the group opens). Views are pure: lowering one
        again at its place in the program gives the same location."""
        owner = defining_op(value)
        if value not in self.state.locations and owner is not None and owner.name in VIEWS:
            self._view_location(owner.operands[0])
            lbl._lower_op(self.state, owner)
        return self._location(value)

    # --- ops -----------------------------------------------------------------------

    def lower_op(self, op: ir.Operation) -> None:
        if op.name == "tensor.pad" and op in self.pads:
            self.state.locations[op.result] = self.pads[op]
            return
        if op.name != "linalg.generic" or op not in self.by_op:
            before = len(self.state.records)
            lbl._lower_op(self.state, op)
            if (self.open_group is not None or self.carried) and len(self.state.records) > before:
                raise UnsupportedError(
                    f"{location_text(op)}: '{op.name}' moves data inside a fusion group or "
                    "while a storage is carried between groups"
                )
            return
        operator = self.by_op[op]
        group = self.group_of[operator.index]
        if isinstance(group, HaloGroupPlan):  # emitted band by band at its last operator
            self.open_group = lower_halo_member(self, operator, group)
            return
        if operator.index == group.operators[0]:
            self._open_group(group)
            self.open_group = group if len(group.operators) > 1 else None
        with self.point:
            self._lower_operator(operator, group, group.plans[operator.index])
        if operator.index == group.operators[-1]:
            self._close_group(group)
            self.open_group = None

    def _open_group(self, group: GroupPlan) -> None:
        with self.point:
            self._allocate_internal(group)
            self._fill_borders(group)
            self.load_resident(group)
        self.outer_ivs = []
        for _, trips in group.outer_loops():
            if trips <= 1:
                self.outer_ivs.append(None)
                continue
            with self.point:
                loop = affine.AffineForOp(0, trips)
            with ir.InsertionPoint(loop.body):
                end = affine.AffineYieldOp([])
            self.point = ir.InsertionPoint(end)  # the group's operators go inside
            self.outer_ivs.append(loop.induction_variable)

    def _fill_borders(self, group: GroupPlan) -> None:
        for key, whole in self.spm[group.operators[0]].items():
            if key[0] == "pad":
                self._fill_border(key, whole)

    def _fill_border(self, key: StorageKey, whole: DramTensor) -> None:
        """Fill a padded storage's buffer with its padding value (the producer then
        writes the interior)."""
        pad = key[1]
        assert isinstance(pad, ir.Operation)
        emit_vector(
            "copy",
            TileView(whole.buffer, (1,)),
            [TileView(None, scalar=lbl._pad_value(self.state, pad))],
            (int(np.prod(whole.shape)),),
        )

    def _close_group(self, group: GroupPlan) -> None:
        assert self.state.entry is not None
        self.point = ir.InsertionPoint(self.state.entry)
        self.outer_ivs = []
        with self.point:
            self.release(group)

    # --- one operator --------------------------------------------------------------

    def _location(self, value: ir.Value) -> DramTensor:
        return lbl._dram_of(self.state, value)

    def _lower_operator(self, operator: Operator, group: GroupPlan, plan: OperatorPlan) -> None:
        state = self.state
        op = operator.op
        generic = generic_operator(op)
        where = location_text(op)
        live = [len(list(r.uses)) > 0 for r in op.results]
        outputs = [o for o, alive in zip(generic.outputs, live, strict=True) if alive]
        yield_op = list(generic.body.operations)[-1].operation
        live_yields = [yield_op.operands[generic.outputs.index(o)] for o in outputs]
        body = plan_body(generic.body, live_yields)
        used = {operand for body_op in body.ops for operand in body_op.operands}
        used.update(live_yields)
        tiling = plan.tiling
        tile = tiling.tile

        inputs: dict[int, _Operand] = {}
        scalars: dict[ir.Value, float] = {}
        weights: set[int] = set()
        storage_of = {use.index: use.storage for use in operator.inputs}
        for index, operand in enumerate(generic.inputs):
            if operand.block_arg not in used:
                continue
            if operand.value in state.scalars:
                scalars[operand.block_arg] = state.scalars[operand.value]
                continue
            if not isinstance(operand.value.type, ir.ShapedType):
                raise UnsupportedError(f"{where}: scalar operand {operand.value} is not a constant")
            location = self._location(operand.value)
            if location.buffer in state.globals.values():
                weights.add(index)
            location = self.resident.get(operand.value, location)  # kept on chip
            location = self.band_views.get(operand.value, location)  # loaded for the band
            on_chip = accel.is_scratchpad(location.buffer)
            inputs[index] = _Operand(
                shift_access(operand.access, plan.offsets),
                location,
                on_chip,
                False,
                unsliced=on_chip and storage_of.get(index) not in group.internal,
            )

        outs: list[_Operand] = []
        for operand, use in zip(outputs, operator.outputs, strict=True):
            assert operand.result is not None
            location = state.planned.get(operand.result) or lbl._new_dram(
                state, static_shape(operand.result)
            )
            state.locations[operand.result] = location
            access = shift_access(operand.access, plan.offsets)
            on_chip = accel.is_scratchpad(location.buffer)
            unsliced = on_chip and use.storage not in group.internal
            entry = _Operand(access, location, on_chip, True, unsliced=unsliced)
            if operand.block_arg in used:
                init = operand.value
                if init in state.fills:
                    fill = generic_operator(state.fills[init])
                    entry.init = state.scalars[fill.inputs[0].value]
                elif init in state.scalars:
                    entry.init = state.scalars[init]
                else:
                    entry.init = self._location(init)
            outs.append(entry)

        # DRAM operands in the order of the planner's tiling problem.
        dram_operands = [o for o in inputs.values() if not o.on_chip] + [
            o for o in outs if not o.on_chip
        ]
        if plan.dummy:
            assert not dram_operands
        outer = tuple(
            (iv, loop, tile)
            for iv, loop, (tile, _) in zip(
                self.outer_ivs, plan.outer_loops(), group.outer_loops(), strict=False
            )
            if iv is not None
        )
        nest = TileNest(plan.extents, tile, tiling.order, op.location, outer)
        trips = tiling.trips(plan.extents)
        for position, item in enumerate(dram_operands):
            item.tile = _tile_operand(item, tile, tiling.load_depth[position])
        for item in [*inputs.values(), *outs]:
            if item.on_chip:
                item.tile = TileOperand(
                    item.access,
                    tile,
                    in_place=True,
                    depth=_depth(item.access, tiling.order, trips),
                )
            if item.is_output and item.init is not None:
                _plan_initialisation(item, tile, tiling.order, nest.outer)
        arena = ScratchpadArena(
            state.target.scratchpad_bytes // 4 - self.top_held,
            group.resident_elements - self.top_held,
            top_down=self.top_down,
        )
        self.top_down = not self.top_down
        tile_operands = [item.tile for item in [*inputs.values(), *outs] if item.tile is not None]
        allocate_tiles(arena, nest, tile_operands, plan.stages)
        temporaries = [arena.allocate(int(np.prod(tile))) for _ in range(operator.temporaries)]
        if arena.peak_elements > arena.capacity_elements:
            raise UnsupportedError(f"{where}: fused tiles exceed the scratchpad")

        def view(operand: _Operand, tiles: Sequence[TileIndex]) -> TileView:
            assert operand.tile is not None
            if not operand.on_chip:
                assert operand.tile.buffer is not None
                return TileView(operand.tile.buffer, operand.tile.loop_strides())
            moves = nest.outer if operand.unsliced else ()
            return _in_place_view(
                operand.location, operand.access, tile, tiling.order, tiles, moves
            )

        choice = plan.choice
        contraction = None
        if len(inputs) == 2 and not scalars and len(outs) == 1:
            contraction = classify_contraction(generic, weights)
        if choice is not None:
            contraction = choice.contraction  # the embedding may swap streamed and stationary
        issue = None
        if contraction is not None:
            rows, cols = state.target.pe_rows, state.target.pe_cols
            issue = (
                plan_embedded_issue(choice, tile, rows, cols)
                if choice is not None
                else plan_issue(contraction, tile, rows, cols)
            )

        def compute(tiles: Sequence[TileIndex]) -> None:
            if contraction is not None:
                assert issue is not None
                c, a, b = outs[0], inputs[contraction.a], inputs[contraction.b]
                c_view, a_view, b_view = view(c, tiles), view(a, tiles), view(b, tiles)
                assert c_view.buffer and a_view.buffer and b_view.buffer
                emit_contraction(
                    issue,
                    tile,
                    (c_view.buffer, c_view.strides),
                    (a_view.buffer, a_view.strides),
                    (b_view.buffer, b_view.strides),
                    bases=(c_view, a_view, b_view),
                )
                return
            values: dict[ir.Value, TileView] = {}
            for index, entry in inputs.items():
                values[generic.inputs[index].block_arg] = view(entry, tiles)
            for arg, scalar in scalars.items():
                values[arg] = TileView(None, scalar=scalar)
            results = {r for body_op in body.ops for r in body_op.results}
            for body_op in body.ops:
                for value in body_op.operands:
                    if value in results or value in values or value in generic.body.arguments:
                        continue
                    if value not in state.scalars:
                        raise UnsupportedError(f"{where}: the body uses a non-constant {value}")
                    values[value] = TileView(None, scalar=state.scalars[value])
            yields: dict[ir.Value, list[TileView]] = {}
            for generic_output, out, value in zip(outputs, outs, live_yields, strict=True):
                target_view = view(out, tiles)
                values[generic_output.block_arg] = target_view
                yields.setdefault(value, []).append(target_view)
            pool = list(temporaries)

            def allocate() -> ir.Value:
                if not pool:
                    raise UnsupportedError(f"{where}: the body needs more temporaries than planned")
                return pool.pop(0)

            BodyEmitter(tile, allocate, lbl._dense_strides(tile)).emit(body, values, yields)

        nest.emit(tile_operands, compute, plan.stages)
        deallocate_tiles(tile_operands)
        for temporary in temporaries:
            accel.dealloc(temporary)
        kind = "pe-array" if contraction is not None else "vector"
        state.records.append(
            lbl.OperatorRecord(
                name=f"fused-{lbl.operator_name(generic, kind)}",
                location=where,
                kind=kind,
                tile=tile,
                extents=plan.extents,
                planned_dram_bytes=plan.bytes,
                scratchpad_bytes=arena.peak_elements * 4,
                embedding=choice.describe() if choice is not None else "",
                predicted_pe_cycles=choice.predicted_cycles if choice is not None else 0,
                solve_s=choice.solve_s if choice is not None else 0.0,
            )
        )


def _tile_operand(operand: _Operand, tile: tuple[int, ...], depth: int) -> TileOperand:
    """The tile buffer(s) of a DRAM operand: loaded (inputs) or stored (outputs)."""
    location = operand.location
    if not operand.is_output:
        return TileOperand(operand.access, tile, dram=location, load=True, depth=depth)
    tile_operand = TileOperand(operand.access, tile, dram=location, store=True, depth=depth)
    init = operand.init
    if isinstance(init, float):
        tile_operand.fill = init
    elif isinstance(init, DramTensor) and not accel.is_scratchpad(init.buffer):
        tile_operand.load = True
        tile_operand.init_dram = init
    return tile_operand


def _plan_initialisation(
    operand: _Operand,
    tile: tuple[int, ...],
    order: tuple[int, ...],
    outer: Sequence[tuple[ir.Value, int, int]],
) -> None:
    """How an output tile gets its initial value when neither a fill of its own buffer
    nor a DMA gives it: a fill of a tile viewed in place, or a copy from a storage on
    chip (a convolution's bias broadcast, an internal storage: never moved by `outer`)
    into the tile."""
    init = operand.init
    tile_operand = operand.tile
    assert tile_operand is not None and init is not None
    if not operand.on_chip and (isinstance(init, float) or not accel.is_scratchpad(init.buffer)):
        return  # a fill of the tile buffer or a DMA (`_tile_operand`)
    if isinstance(init, DramTensor) and not accel.is_scratchpad(init.buffer):
        raise UnsupportedError("an on-chip output initialised from DRAM (the planner forbids it)")
    used = operand.access.loops_used()
    shape = tuple(t if loop in used else 1 for loop, t in enumerate(tile))

    def target_view(tiles: Sequence[TileIndex]) -> TileView:
        if operand.on_chip:
            moves = outer if operand.unsliced else ()
            return _in_place_view(operand.location, operand.access, tile, order, tiles, moves)
        assert tile_operand.buffer is not None
        return TileView(tile_operand.buffer, tile_operand.loop_strides())

    def initialise(tiles: Sequence[TileIndex]) -> None:
        target = target_view(tiles)
        assert init is not None
        if isinstance(init, float):
            emit_vector("copy", target, [TileView(None, scalar=init)], shape)
            return
        source = _in_place_view(init, operand.access, tile, order, tiles)
        if source.buffer == target.buffer and source.offset == target.offset:
            return  # in place
        emit_vector("copy", target, [source], shape)

    tile_operand.initialise = initialise


def _depth(access: AffineAccess, order: tuple[int, ...], trips: tuple[int, ...]) -> int:
    used = access.loops_used()
    depth = 0
    for position, loop in enumerate(order):
        if loop in used and trips[loop] > 1:
            depth = position + 1
    return depth


def _in_place_view(
    location: DramTensor,
    access: AffineAccess,
    tile: tuple[int, ...],
    order: tuple[int, ...],
    tiles: Sequence[TileIndex],
    moves: Sequence[tuple[ir.Value, int, int]] = (),
) -> TileView:
    """A tile's view of a storage held in the scratchpad: it starts where the tile does,
    moved by the enclosing loops `moves` ((iv, loop, elements per iteration), a fused
    group's outer tile loop) when the storage is held whole rather than as a slice."""
    coeffs, consts = access.coeffs, access.consts
    strides = tuple(
        sum(location.strides[r] * row[loop] for r, row in enumerate(coeffs))
        for loop in range(len(tile))
    )
    offset = location.offset + sum(s * c for s, c in zip(location.strides, consts, strict=True))
    outer: list[tuple[ir.Value, int]] = [
        (iv, strides[loop] * step) for iv, loop, step in moves if strides[loop]
    ]
    for index, loop in zip(tiles, order, strict=False):
        step = strides[loop] * tile[loop]
        offset += step * index.offset
        if index.iv is not None:
            outer.append((index.iv, step * index.scale))
    return TileView(location.buffer, strides, offset=offset, outer=tuple(outer))
