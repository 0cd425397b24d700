"""Fused lowering: linalg on tensors → accel, one fusion group at a time.

The plan (`planner.plan_fusion`) says which operators form a group, which storages stay
in the scratchpad and the outer tile. A group becomes

    accel.alloc of every internal storage's slice (bytes 0..R of the scratchpad)
    fill the border of internal padded storages (vector unit)
    affine.for over the outer tiles of the shared dimension (when tiled)
      per operator: its own tile loops (the layer-by-layer search, operands in DRAM
      only), DMAs of DRAM operands into tile buffers above R, compute instructions
      that read and write internal storages in place through iv-dependent views

Everything that is not a linalg.generic (views, pads into DRAM, copies, constants,
return) is lowered exactly as the layer-by-layer lowering does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from torch_mlir import ir
from torch_mlir.dialects import affine, func

from polyfuse.analysis.affine import AffineAccess
from polyfuse.analysis.operators import generic_operator, location_text, static_shape
from polyfuse.dialects import accel
from polyfuse.errors import UnsupportedError
from polyfuse.fusion.graph import (
    Operator,
    OperatorGraph,
    StorageKey,
    build_graph,
    pad_of_result,
)
from polyfuse.fusion.halo import HaloGroupPlan, shift_access
from polyfuse.fusion.halo_lowering import lower_halo_member
from polyfuse.fusion.planner import FusionPlan, GroupPlan, OperatorPlan, aligned, plan_fusion
from polyfuse.lowering import layer_by_layer as lbl
from polyfuse.lowering.dram import DramTensor
from polyfuse.lowering.pe_array import classify_contraction, emit_contraction, plan_issue
from polyfuse.lowering.tile_compute import TileView, emit_vector
from polyfuse.lowering.tile_nest import ScratchpadArena, TileOperand, merge_contiguous
from polyfuse.lowering.vector_body import BodyEmitter, plan_body
from polyfuse.targets import Target


@dataclass
class _Operand:
    """An operand of one operator inside a group."""

    access: AffineAccess
    location: DramTensor  # DRAM, or a scratchpad storage (slice) viewed in place
    on_chip: bool
    is_output: bool
    tile: TileOperand | None = None  # DRAM operands: the tile buffer
    depth: int = 0
    init: float | DramTensor | None = None  # outputs: fill value or where to copy from
    store: bool = False


def lower_function_fused(
    func_op: ir.Operation, module_op: ir.Operation, target: Target
) -> tuple[list[lbl.OperatorRecord], FusionPlan]:
    """Replace `func_op` by its fused accel version; returns records and the plan."""
    graph = build_graph(func_op)
    plan = plan_fusion(graph, target.scratchpad_bytes)
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
    return state.records, plan


class _FusedLowering:
    def __init__(self, state: lbl._State, graph: OperatorGraph, plan: FusionPlan) -> None:
        self.state = state
        self.graph = graph
        self.plan = plan
        self.group_of = plan.group_of()
        self.by_op = {operator.op: operator for operator in graph.operators}
        self.spm: dict[int, dict[StorageKey, DramTensor]] = {}
        self.pads: dict[ir.Operation, DramTensor] = {}
        self.outer_iv: ir.Value | None = None
        self.open_group: GroupPlan | None = None
        self.resident: dict[ir.Value, DramTensor] = {}  # inputs a halo group keeps on chip
        self.point = ir.InsertionPoint(state.entry)  # where the next op goes
        assert state.entry is not None

    # --- storages ----------------------------------------------------------------

    def place_internal_storages(self) -> None:
        """Keep the layer-by-layer planning away from internal padded storages (their
        buffers are made when their group starts)."""
        for group in self.plan.groups:
            for kind, owner in group.internal:
                if kind == "pad":
                    assert isinstance(owner, ir.Operation)
                    self.state.planned[owner.operands[0]] = None  # type: ignore[assignment]

    def _allocate_internal(self, group: GroupPlan) -> None:
        """accel.alloc every internal storage of `group` at scratchpad bytes 0..R."""
        offset = 0
        placed: dict[StorageKey, DramTensor] = {}
        for key in sorted(group.internal, key=lambda k: self.graph.storages[k].order):
            shape = group.slice_shapes[key]
            elements = int(np.prod(shape))
            buffer = accel.alloc(elements, offset * 4)
            offset += aligned(elements)
            whole = DramTensor.whole(buffer, shape)
            placed[key] = whole
            kind, owner = key
            if kind == "gen":
                assert isinstance(owner, ir.Value)
                self.state.planned[owner] = whole
                continue
            assert isinstance(owner, ir.Operation)
            low = list(ir.DenseI64ArrayAttr(owner.attributes["static_low"]))
            source_shape = list(static_shape(owner.operands[0]))
            for dim, size in enumerate(shape):
                if size != self.graph.storages[key].shape[dim]:
                    source_shape[dim] = size  # the shared dim is never padded
            self.pads[owner] = whole
            self.state.pad_buffers[owner] = whole
            self.state.planned[owner.operands[0]] = whole.slice(low, source_shape, [1] * len(shape))
        self.spm[group.operators[0]] = placed

    # --- ops -----------------------------------------------------------------------

    def lower_op(self, op: ir.Operation) -> None:
        if op.name == "tensor.pad" and op in self.pads:
            self.state.locations[op.result] = self.pads[op]
            return
        if op.name != "linalg.generic" or op not in self.by_op:
            before = len(self.state.records)
            lbl._lower_op(self.state, op)
            if self.open_group is not None and len(self.state.records) > before:
                raise UnsupportedError(
                    f"{location_text(op)}: '{op.name}' moves data inside a fusion group"
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
        if group.trips > 1:
            loop = affine.AffineForOp(0, group.trips)
            with ir.InsertionPoint(loop.body):
                end = affine.AffineYieldOp([])
            self.point = ir.InsertionPoint(end)  # the group's operators go inside
            self.outer_iv = loop.induction_variable

    def _fill_borders(self, group: GroupPlan) -> None:
        for key, whole in self.spm[group.operators[0]].items():
            if key[0] == "pad":
                pad = key[1]
                assert isinstance(pad, ir.Operation)
                value = lbl._pad_value(self.state, pad)
                elements = int(np.prod(whole.shape))
                emit_vector(
                    "copy",
                    TileView(whole.buffer, (1,)),
                    [TileView(None, scalar=value)],
                    (elements,),
                )

    def _close_group(self, group: GroupPlan) -> None:
        assert self.state.entry is not None
        self.point = ir.InsertionPoint(self.state.entry)
        self.outer_iv = None
        with self.point:
            for whole in self.spm[group.operators[0]].values():
                accel.dealloc(whole.buffer)

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
            location = self.resident.get(operand.value, location)  # halo: kept on chip
            inputs[index] = _Operand(
                shift_access(operand.access, plan.offsets),
                location,
                accel.is_scratchpad(location.buffer),
                False,
            )

        outs: list[_Operand] = []
        for operand in outputs:
            assert operand.result is not None
            location = state.planned.get(operand.result) or lbl._new_dram(
                state, static_shape(operand.result)
            )
            state.locations[operand.result] = location
            access = shift_access(operand.access, plan.offsets)
            entry = _Operand(access, location, accel.is_scratchpad(location.buffer), True)
            entry.store = not entry.on_chip
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
        arena = ScratchpadArena(state.target.scratchpad_bytes // 4, group.resident_elements)
        for position, item in enumerate(dram_operands):
            item.tile = TileOperand(item.access, tile)
            item.tile.buffer = arena.allocate(item.tile.elements)
            item.depth = tiling.load_depth[position]
        for item in [*inputs.values(), *outs]:
            if item.on_chip:
                item.depth = _depth(item.access, tiling.order, tiling.trips(plan.extents))
        temporaries = [arena.allocate(int(np.prod(tile))) for _ in range(operator.temporaries)]
        if arena.peak_elements > state.target.scratchpad_bytes // 4:
            raise UnsupportedError(f"{where}: fused tiles exceed the scratchpad")

        outer: list[tuple[ir.Value, int]] = []
        if self.outer_iv is not None and plan.shared_loop is not None:
            outer = [(self.outer_iv, plan.shared_loop)]
        outer_tile = group.outer_tile

        def view(operand: _Operand, ivs: Sequence[ir.Value]) -> TileView:
            if operand.tile is not None:
                assert operand.tile.buffer is not None
                return TileView(operand.tile.buffer, operand.tile.loop_strides())
            return _in_place_view(operand.location, operand.access, tile, tiling.order, ivs)

        contraction = None
        if len(inputs) == 2 and not scalars and len(outs) == 1:
            contraction = classify_contraction(generic, weights)

        def compute(ivs: Sequence[ir.Value]) -> None:
            if contraction is not None:
                issue = plan_issue(contraction, tile, state.target.pe_rows, state.target.pe_cols)
                c, a, b = outs[0], inputs[contraction.a], inputs[contraction.b]
                c_view, a_view, b_view = view(c, ivs), view(a, ivs), view(b, ivs)
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
                values[generic.inputs[index].block_arg] = view(entry, ivs)
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
                target_view = view(out, ivs)
                values[generic_output.block_arg] = target_view
                yields.setdefault(value, []).append(target_view)
            pool = list(temporaries)

            def allocate() -> ir.Value:
                if not pool:
                    raise UnsupportedError(f"{where}: the body needs more temporaries than planned")
                return pool.pop(0)

            BodyEmitter(tile, allocate, lbl._dense_strides(tile)).emit(body, values, yields)

        every = [*inputs.values(), *outs]
        _emit_nest(plan.extents, tile, tiling.order, every, compute, outer, outer_tile, view)
        for item in dram_operands:
            assert item.tile is not None and item.tile.buffer is not None
            accel.dealloc(item.tile.buffer)
        for temporary in temporaries:
            accel.dealloc(temporary)
        kind = "pe-array" if contraction is not None else "vector"
        state.records.append(
            lbl.OperatorRecord(
                name=f"fused-{lbl._operator_name(generic, kind)}",
                location=where,
                kind=kind,
                tile=tile,
                extents=plan.extents,
                planned_dram_bytes=plan.bytes,
                scratchpad_bytes=arena.peak_elements * 4,
            )
        )


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
    ivs: Sequence[ir.Value],
) -> TileView:
    """A tile's view of a storage held in the scratchpad: it starts where the tile does."""
    coeffs, consts = access.coeffs, access.consts
    strides = tuple(
        sum(location.strides[r] * row[loop] for r, row in enumerate(coeffs))
        for loop in range(len(tile))
    )
    offset = location.offset + sum(s * c for s, c in zip(location.strides, consts, strict=True))
    outer = tuple((iv, strides[loop] * tile[loop]) for iv, loop in zip(ivs, order, strict=False))
    return TileView(location.buffer, strides, offset=offset, outer=outer)


def _emit_nest(
    extents: tuple[int, ...],
    tile: tuple[int, ...],
    order: tuple[int, ...],
    operands: list[_Operand],
    compute: Callable[[Sequence[ir.Value]], None],
    outer: list[tuple[ir.Value, int]],
    outer_tile: int,
    view: Callable[[_Operand, Sequence[ir.Value]], TileView],
) -> None:
    ivs: list[ir.Value] = []

    def level(depth: int) -> None:
        for operand in operands:
            if operand.depth != depth:
                continue
            if operand.is_output and operand.init is not None:
                _initialise(operand, ivs, tile, order, outer, outer_tile, view)
            elif not operand.is_output and not operand.on_chip:
                _dma(operand, ivs, tile, order, outer, outer_tile, to_scratchpad=True)
        if depth == len(order):
            compute(list(ivs))
        else:
            loop = affine.AffineForOp(0, extents[order[depth]] // tile[order[depth]])
            with ir.InsertionPoint(loop.body):
                ivs.append(loop.induction_variable)
                level(depth + 1)
                ivs.pop()
                affine.AffineYieldOp([])
        for operand in operands:
            if operand.depth == depth and operand.store:
                _dma(operand, ivs, tile, order, outer, outer_tile, to_scratchpad=False)

    level(0)


def _initialise(
    operand: _Operand,
    ivs: list[ir.Value],
    tile: tuple[int, ...],
    order: tuple[int, ...],
    outer: list[tuple[ir.Value, int]],
    outer_tile: int,
    view: Callable[[_Operand, Sequence[ir.Value]], TileView],
) -> None:
    """Give an output tile its initial value: a fill, a DMA from DRAM or an on-chip copy."""
    init = operand.init
    used = operand.access.loops_used()
    shape = tuple(t if loop in used else 1 for loop, t in enumerate(tile))
    target = view(operand, ivs)
    if isinstance(init, float):
        emit_vector("copy", target, [TileView(None, scalar=init)], shape)
        return
    assert isinstance(init, DramTensor)
    if accel.is_scratchpad(init.buffer):
        source = _in_place_view(init, operand.access, tile, order, ivs)
        if source.buffer == target.buffer and source.offset == target.offset:
            return  # in place
        emit_vector("copy", target, [source], shape)
        return
    if operand.on_chip:
        raise UnsupportedError("an on-chip output initialised from DRAM (the planner forbids it)")
    saved = operand.location
    operand.location = init
    _dma(operand, ivs, tile, order, outer, outer_tile, to_scratchpad=True)
    operand.location = saved


def _dma(
    operand: _Operand,
    ivs: list[ir.Value],
    tile: tuple[int, ...],
    order: tuple[int, ...],
    outer: list[tuple[ir.Value, int]],
    outer_tile: int,
    to_scratchpad: bool,
) -> None:
    tile_operand = operand.tile
    assert tile_operand is not None and tile_operand.buffer is not None
    dram = operand.location
    access = tile_operand.access
    c0 = dram.offset + sum(s * k for s, k in zip(dram.strides, access.consts, strict=True))
    all_ivs = [iv for iv, _ in outer] + list(ivs)
    coeffs = [
        sum(dram.strides[r] * row[loop] * outer_tile for r, row in enumerate(access.coeffs))
        for _, loop in outer
    ]
    for loop in order[: len(ivs)]:
        coeffs.append(
            sum(dram.strides[r] * row[loop] * tile[loop] for r, row in enumerate(access.coeffs))
        )
    keep = [r for r, extent in enumerate(tile_operand.box) if extent > 1] or [0]
    shape = [tile_operand.box[r] for r in keep]
    spm_strides = [tile_operand.box_strides[r] for r in keep]
    dram_strides = [dram.strides[r] for r in keep]
    shape, spm_strides, dram_strides = merge_contiguous(shape, spm_strides, dram_strides)
    spm_access = (0, tuple(0 for _ in all_ivs))
    dram_access = (c0, tuple(coeffs))
    if to_scratchpad:
        token = accel.dma_start(
            tile_operand.buffer,
            dram.buffer,
            all_ivs,
            shape,
            [spm_access, dram_access],
            [spm_strides, dram_strides],
        )
    else:
        token = accel.dma_start(
            dram.buffer,
            tile_operand.buffer,
            all_ivs,
            shape,
            [dram_access, spm_access],
            [dram_strides, spm_strides],
        )
    accel.dma_wait(token)
