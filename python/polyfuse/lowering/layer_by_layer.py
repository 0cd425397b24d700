"""Layer-by-layer lowering of a linalg-on-tensors function to the accel dialect.

Every operator runs on its own: its tiles are loaded from DRAM into the scratchpad,
computed, and its output tiles stored back. The function becomes

    func.func @forward(%input..: memref<..>, %output..: memref<..>)   (outputs as out-params)
      weights: memref.get_global, intermediates: memref.alloc (DRAM)
      per operator: accel.alloc tiles, affine.for tile loops, DMAs, compute, accel.dealloc

Views (reshape, slice, a pad's interior) alias the tensor they view. An operator whose
result is padded next writes straight into the padded buffer's interior; the border is
filled when the buffer is created (once, like the weights).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from torch_mlir import ir
from torch_mlir.dialects import func, memref

from polyfuse.analysis.operators import (
    GenericOperator,
    defining_op,
    generic_operator,
    location_text,
    reassociation,
    static_shape,
)
from polyfuse.analysis.tile_search import TiledOperand, Tiling, TilingProblem
from polyfuse.dialects import accel
from polyfuse.errors import ScratchpadCapacityError, UnsupportedError
from polyfuse.lowering.contraction_embedding import (
    ContractionChoice,
    choose_embedding,
    plan_embedded_issue,
    tile_multiples,
    tiling_pe_cycles,
)
from polyfuse.lowering.data_movement import emit_copy
from polyfuse.lowering.dram import DramTensor
from polyfuse.lowering.pe_array import classify_contraction, emit_contraction
from polyfuse.lowering.tile_compute import TileView
from polyfuse.lowering.tile_nest import (
    ALIGN_ELEMENTS,
    ScratchpadArena,
    TileIndex,
    TileNest,
    TileOperand,
    WorkEstimate,
    allocate_tiles,
    deallocate_tiles,
    estimate_cycles,
    plan_buffering,
)
from polyfuse.lowering.vector_body import BodyEmitter, plan_body
from polyfuse.targets import Target

INIT_ATTRIBUTE = "accel.init"  # on a DRAM memref.alloc: the value it is filled with once
NUM_INPUTS_ATTRIBUTE = "accel.num_inputs"  # on the accel function: the rest are out-params


@dataclass
class OperatorRecord:
    """What the lowering decided for one operator (for reports and tests)."""

    name: str
    location: str
    kind: str  # "pe-array", "vector", "copy"
    tile: tuple[int, ...]
    extents: tuple[int, ...]
    planned_dram_bytes: int
    scratchpad_bytes: int
    compulsory_bytes: int = 0  # its operands read once and its results written once
    embedding: str = ""  # pe-array: how it was mapped onto the PE array (issue 6)
    predicted_pe_cycles: int = 0  # pe-array: the embedding's instruction-model cycles
    solve_s: float = 0.0  # pe-array: CP-SAT time spent on it (0 when the shape was cached)


@dataclass
class _State:
    target: Target
    module: ir.Module | ir.Operation
    new_func: ir.Operation
    locations: dict[ir.Value, DramTensor] = field(default_factory=dict)
    scalars: dict[ir.Value, float] = field(default_factory=dict)
    fills: dict[ir.Value, ir.Operation] = field(default_factory=dict)
    planned: dict[ir.Value, DramTensor] = field(default_factory=dict)
    pad_buffers: dict[ir.Operation, DramTensor] = field(default_factory=dict)
    globals: dict[str, ir.Value] = field(default_factory=dict)
    records: list[OperatorRecord] = field(default_factory=list)
    entry: ir.Block | None = None
    buffers: int = 1  # copies of inner tiles for DMA/compute overlap (tile_nest.plan_buffering)
    embedding: str = "csp"  # how contractions go onto the PE array (contraction_embedding.py)


def _f32_memref(shape: tuple[int, ...]) -> ir.MemRefType:
    return ir.MemRefType.get(list(shape), ir.F32Type.get())


def _splat_value(attr: ir.Attribute) -> float | None:
    if isinstance(attr, ir.DenseElementsAttr):
        dense = ir.DenseElementsAttr(attr)
        if dense.is_splat:
            return float(np.array(ir.DenseFPElementsAttr(attr)).reshape(-1)[0])
    return None


def lower_function(
    func_op: ir.Operation,
    module_op: ir.Operation,
    target: Target,
    buffers: int = 1,
    embedding: str = "csp",
) -> list[OperatorRecord]:
    """Replace `func_op` (linalg on tensors) by its layer-by-layer accel version.

    `buffers` > 1 lets the planner double- (n-) buffer the innermost tile loop of an
    operator when that is estimated to be faster (see tile_nest.plan_buffering).
    `embedding` ("csp", "fixed", "heuristic") says how contractions are mapped onto the
    PE array (see contraction_embedding.py)."""
    name = ir.StringAttr(func_op.attributes["sym_name"]).value
    function_type = ir.FunctionType(ir.TypeAttr(func_op.attributes["function_type"]).value)
    for t in [*function_type.inputs, *function_type.results]:
        # Checked before anything reads a shape (an index argument crashed here).
        if not isinstance(t, ir.RankedTensorType) or not isinstance(
            ir.RankedTensorType(t).element_type, ir.F32Type
        ):
            raise UnsupportedError(
                f"function @{name}: argument or result type {t} is not a ranked tensor of "
                "f32; polyfuse-lower-to-accel takes functions from f32 tensors to f32 tensors"
            )
    inputs = [_f32_memref(tuple(ir.ShapedType(t).shape)) for t in function_type.inputs]
    outputs = [_f32_memref(tuple(ir.ShapedType(t).shape)) for t in function_type.results]
    with ir.InsertionPoint(func_op), func_op.location:
        new_func = func.FuncOp(name + "__accel", (inputs + outputs, []))
    entry = new_func.add_entry_block()
    state = _State(
        target=target,
        module=module_op,
        new_func=new_func.operation,
        entry=entry,
        buffers=buffers,
        embedding=embedding,
    )
    old_block = func_op.regions[0].blocks[0]
    for arg, new_arg in zip(old_block.arguments, entry.arguments[: len(inputs)], strict=True):
        state.locations[arg] = DramTensor.whole(new_arg, static_shape(arg))

    ops = [o.operation for o in old_block.operations]
    _plan_outputs(state, ops, entry.arguments[len(inputs) :])
    with ir.InsertionPoint(entry):
        for op in ops:
            with op.location:
                _lower_op(state, op)
    func_op.erase()
    new_func.operation.attributes["sym_name"] = ir.StringAttr.get(name)
    new_func.operation.attributes[NUM_INPUTS_ATTRIBUTE] = ir.IntegerAttr.get(
        ir.IntegerType.get_signless(64), len(inputs)
    )
    return state.records


def _plan_outputs(state: _State, ops: list[ir.Operation], out_params: list[ir.Value]) -> None:
    """Returned tensors are produced straight into the out-params; padded ones into the pad."""
    returned = ops[-1]
    seen: set[ir.Value] = set()
    for value, param in zip(returned.operands, out_params, strict=True):
        owner = defining_op(value)
        if value in seen or owner is None or owner.name != "linalg.generic":
            continue
        seen.add(value)
        state.planned[value] = DramTensor.whole(param, static_shape(value))
    for op in ops:
        if op.name != "tensor.pad":
            continue
        source = op.operands[0]
        owner = defining_op(source)
        if (
            owner is not None
            and owner.name == "linalg.generic"
            and len(list(source.uses)) == 1
            and source not in state.planned
        ):
            state.planned[source] = _pad_interior(state, op)


def _pad_buffer(state: _State, pad: ir.Operation) -> DramTensor:
    if pad not in state.pad_buffers:
        shape = static_shape(pad.result)
        value = _pad_value(state, pad)
        with ir.InsertionPoint.at_block_begin(state.entry), pad.location:
            alloc = memref.AllocOp(_f32_memref(shape), [], [])
            alloc.operation.attributes[INIT_ATTRIBUTE] = ir.FloatAttr.get_f64(value)
        state.pad_buffers[pad] = DramTensor.whole(alloc.result, shape)
    return state.pad_buffers[pad]


def _pad_value(state: _State, pad: ir.Operation) -> float:
    yield_op = list(pad.regions[0].blocks[0].operations)[-1].operation
    value = yield_op.operands[0]
    if value in state.scalars:
        return state.scalars[value]
    owner = defining_op(value)
    if owner is not None and owner.name == "arith.constant":
        return float(ir.FloatAttr(owner.attributes["value"]).value)
    raise UnsupportedError(f"{location_text(pad)}: tensor.pad with a non-constant padding value")


def _static(op: ir.Operation, name: str) -> list[int]:
    return list(ir.DenseI64ArrayAttr(op.attributes[name]))


def _pad_interior(state: _State, pad: ir.Operation) -> DramTensor:
    whole = _pad_buffer(state, pad)
    low = _static(pad, "static_low")
    shape = static_shape(pad.operands[0])
    return whole.slice(low, shape, [1] * len(shape))


def _new_dram(state: _State, shape: tuple[int, ...]) -> DramTensor:
    with ir.InsertionPoint.at_block_begin(state.entry):
        alloc = memref.AllocOp(_f32_memref(shape), [], [])
    return DramTensor.whole(alloc.result, shape)


def _dram_of(state: _State, value: ir.Value) -> DramTensor:
    """The DRAM location of a tensor value, materialising fills and splats on demand."""
    if value in state.locations:
        return state.locations[value]
    owner = defining_op(value)
    if value in state.fills:
        _lower_generic(state, state.fills.pop(value), force=True)
        return state.locations[value]
    if value in state.scalars:
        location = _new_dram(state, static_shape(value))
        _emit_fill_tensor(state, location, state.scalars[value], value)
        state.locations[value] = location
        return location
    if owner is not None and owner.name == "tensor.empty":
        # Contents undefined: a fresh buffer, so that reshapes can view it (a grouped
        # convolution's output init is an expand_shape of a tensor.empty).
        location = _new_dram(state, static_shape(value))
        state.locations[value] = location
        return location
    raise UnsupportedError(
        f"{location_text(owner) if owner is not None else 'a block argument'}: "
        f"no DRAM location for tensor {value.type}"
    )


def _lower_op(state: _State, op: ir.Operation) -> None:
    name = op.name
    if name == "arith.constant":
        _lower_constant(state, op)
    elif name in ("tensor.empty", "cf.assert"):
        return
    elif name == "linalg.generic":
        _lower_generic(state, op)
    elif name == "tensor.pad":
        _lower_pad(state, op)
    elif name == "tensor.collapse_shape":
        groups = reassociation(op)
        source = _dram_of(state, op.operands[0])
        view = source.collapse(groups)
        if view is None:
            view = _copy_to_new(state, source, op)
            view = view.collapse(groups)
            assert view is not None
        state.locations[op.result] = view
    elif name == "tensor.expand_shape":
        source = _dram_of(state, op.operands[0])
        state.locations[op.result] = source.expand(reassociation(op), static_shape(op.result))
    elif name == "tensor.extract_slice":
        _lower_extract_slice(state, op)
    elif name == "tensor.insert_slice":
        _lower_insert_slice(state, op)
    elif name == "tensor.concat":
        _lower_concat(state, op)
    elif name == "func.return":
        _lower_return(state, op)
    elif name in ("arith.truncf", "arith.extf") and not isinstance(op.result.type, ir.ShapedType):
        if op.operands[0] in state.scalars:
            state.scalars[op.result] = state.scalars[op.operands[0]]
    else:
        raise UnsupportedError(
            f"{location_text(op)}: '{name}' is not supported by the layer-by-layer lowering "
            "(supported: linalg.generic, tensor.pad/collapse_shape/expand_shape/extract_slice/"
            "insert_slice/concat/empty, arith.constant)"
        )


def _lower_constant(state: _State, op: ir.Operation) -> None:
    attr = op.attributes["value"]
    if not isinstance(op.result.type, ir.ShapedType):
        if isinstance(attr, ir.FloatAttr):
            state.scalars[op.result] = float(ir.FloatAttr(attr).value)
        elif isinstance(attr, ir.IntegerAttr):
            state.scalars[op.result] = float(ir.IntegerAttr(attr).value)
        return
    splat = _splat_value(attr)
    if splat is not None:
        state.scalars[op.result] = splat
        return
    shape = static_shape(op.result)
    text = str(attr)
    match = re.match(r"dense_resource<([^>]+)>", text)
    base = match.group(1) if match else f"constant_{len(state.globals)}"
    symbol = re.sub(r"[^A-Za-z0-9_]", "_", base)
    if symbol not in state.globals:
        memref_type = _f32_memref(shape)
        module_block = state.module.regions[0].blocks[0]
        with ir.InsertionPoint.at_block_begin(module_block):
            global_op = memref.GlobalOp(
                sym_name=symbol,
                type_=memref_type,
                sym_visibility="private",
                initial_value=attr,
                constant=True,
            )
            if match:
                global_op.operation.attributes["accel.weight"] = ir.StringAttr.get(base)
        with ir.InsertionPoint.at_block_begin(state.entry):
            state.globals[symbol] = memref.GetGlobalOp(memref_type, symbol).result
    state.locations[op.result] = DramTensor.whole(state.globals[symbol], shape)


# --- generics ------------------------------------------------------------------------


def _is_fill(state: _State, generic: GenericOperator) -> float | None:
    """The scalar of a generic that only broadcasts a scalar, else None."""
    if len(generic.outputs) != 1 or len(generic.inputs) != 1:
        return None
    ops = [o.operation for o in generic.body.operations]
    if len(ops) != 1 or ops[0].operands[0] != generic.inputs[0].block_arg:
        return None
    value = generic.inputs[0].value
    return state.scalars.get(value)


def _live_results(op: ir.Operation) -> list[bool]:
    return [len(list(result.uses)) > 0 for result in op.results]


def _lower_generic(state: _State, op: ir.Operation, force: bool = False) -> None:
    generic = generic_operator(op)
    live = _live_results(op)
    if not any(live):
        return
    if not force and _is_fill(state, generic) is not None and op.result not in state.planned:
        state.fills[op.result] = op  # folded into its consumers; materialised on demand
        return
    loc_text = location_text(op)
    outputs = [o for o, alive in zip(generic.outputs, live, strict=True) if alive]
    yield_op = list(generic.body.operations)[-1].operation
    live_yields = [yield_op.operands[generic.outputs.index(o)] for o in outputs]
    plan = plan_body(generic.body, live_yields)
    used_args = {operand for body_op in plan.ops for operand in body_op.operands}
    used_args.update(live_yields)
    used_block_args = set(generic.body.arguments)

    # Operands: tiles to load, scalars, fills.
    tile_inputs: list[tuple[int, DramTensor]] = []
    scalar_inputs: dict[ir.Value, float] = {}
    weight_inputs: set[int] = set()
    for index, operand in enumerate(generic.inputs):
        if operand.block_arg not in used_args:
            continue
        if operand.value in state.scalars:
            scalar_inputs[operand.block_arg] = state.scalars[operand.value]
        elif not isinstance(operand.value.type, ir.ShapedType):
            raise UnsupportedError(f"{loc_text}: scalar operand {operand.value} is not a constant")
        else:
            location = _dram_of(state, operand.value)
            if location.buffer in state.globals.values():
                weight_inputs.add(index)
            tile_inputs.append((index, location))

    output_inits: list[float | DramTensor | None] = []
    for operand in outputs:
        if operand.block_arg not in used_args:
            output_inits.append(None)
            continue
        init = operand.value
        if init in state.fills:
            fill_generic = generic_operator(state.fills[init])
            output_inits.append(state.scalars[fill_generic.inputs[0].value])
        elif init in state.scalars:
            output_inits.append(state.scalars[init])
        else:
            output_inits.append(_dram_of(state, init))
        live_uses = sum(
            1 for body_op in plan.ops for o in body_op.operands if o == operand.block_arg
        )
        if any(generic.is_reduction) and live_uses > 1:
            raise UnsupportedError(
                f"{loc_text}: a reduction whose body reads the accumulator more than once "
                "is not supported on the vector unit"
            )

    contraction = None
    if len(tile_inputs) == 2 and not scalar_inputs and len(outputs) == 1:
        contraction = classify_contraction(generic, weight_inputs)
    choice = None
    if contraction is not None:
        choice = choose_embedding(generic, contraction, state.target, state.embedding)
        contraction = choice.contraction  # the embedding may swap streamed and stationary
    kind = "pe-array" if contraction is not None else "vector"
    temporaries = 0 if contraction is not None else plan.temporaries

    problem_operands = [TiledOperand(generic.inputs[i].access) for i, _ in tile_inputs]
    problem_operands += [
        TiledOperand(o.access, is_output=True, reads=isinstance(init, DramTensor))
        for o, init in zip(outputs, output_inits, strict=True)
    ]
    buffers = len(problem_operands) + temporaries
    capacity = state.target.scratchpad_bytes // 4 - ALIGN_ELEMENTS * buffers
    problem = TilingProblem(
        extents=generic.extents,
        is_reduction=generic.is_reduction,
        operands=tuple(problem_operands),
        temporaries=temporaries,
        capacity_elements=capacity,
    )
    target = state.target
    iterations = float(np.prod(generic.extents))
    work = WorkEstimate.of(target, iterations, contraction is not None, len(plan.ops))
    tiling, stages = plan_buffering(problem, target.scratchpad_bytes // 4, state.buffers, work)
    if choice is not None and choice.embedding is not None and tiling is not None:
        tiling, stages = _blocked_tiling(choice, problem, work, (tiling, stages), state)
    if tiling is None:
        _raise_capacity(state, problem, f"{loc_text}: {operator_name(generic, kind)} operator")
    assert tiling is not None

    # Output locations.
    out_locations = []
    for operand in outputs:
        assert operand.result is not None
        location = state.planned.get(operand.result) or _new_dram(
            state, static_shape(operand.result)
        )
        state.locations[operand.result] = location
        out_locations.append(location)

    arena = ScratchpadArena(state.target.scratchpad_bytes // 4)
    tile_operands: list[TileOperand] = []
    input_tiles: dict[int, TileOperand] = {}
    for position, (index, location) in enumerate(tile_inputs):
        tile_operand = TileOperand(
            generic.inputs[index].access,
            tiling.tile,
            dram=location,
            load=True,
            depth=tiling.load_depth[position],
        )
        input_tiles[index] = tile_operand
        tile_operands.append(tile_operand)
    output_tiles: list[TileOperand] = []
    for position, (operand, init, location) in enumerate(
        zip(outputs, output_inits, out_locations, strict=True)
    ):
        depth = tiling.load_depth[len(tile_inputs) + position]
        tile_operand = TileOperand(
            operand.access, tiling.tile, dram=location, store=True, depth=depth
        )
        if isinstance(init, DramTensor):
            tile_operand.load = True
            tile_operand.init_dram = init
        elif init is not None:
            tile_operand.fill = init
        output_tiles.append(tile_operand)
        tile_operands.append(tile_operand)
    nest = TileNest(generic.extents, tiling.tile, tiling.order, op.location)
    allocate_tiles(arena, nest, tile_operands, stages)
    tile_size = int(np.prod(tiling.tile))
    temps = [arena.allocate(tile_size) for _ in range(temporaries)]

    if contraction is not None:
        assert choice is not None
        issue_plan = plan_embedded_issue(
            choice, tiling.tile, state.target.pe_rows, state.target.pe_cols
        )
        a_tile, b_tile = input_tiles[contraction.a], input_tiles[contraction.b]
        c_tile = output_tiles[0]

        def compute(_tiles: Sequence[TileIndex]) -> None:
            emit_contraction(
                issue_plan,
                tiling.tile,
                (c_tile.buffer, c_tile.loop_strides()),
                (a_tile.buffer, a_tile.loop_strides()),
                (b_tile.buffer, b_tile.loop_strides()),
            )
    else:
        values: dict[ir.Value, TileView] = {}
        for arg, scalar in scalar_inputs.items():
            values[arg] = TileView(None, scalar=scalar)
        body_results = {result for body_op in plan.ops for result in body_op.results}
        for body_op in plan.ops:
            for operand in body_op.operands:
                if operand in body_results or operand in values or operand in used_block_args:
                    continue
                if operand not in state.scalars:
                    raise UnsupportedError(
                        f"{loc_text}: the body uses {operand}, defined outside it, which is "
                        "not a constant scalar"
                    )
                values[operand] = TileView(None, scalar=state.scalars[operand])
        temp_strides = _dense_strides(tiling.tile)

        def compute(_tiles: Sequence[TileIndex]) -> None:
            # Built per call: a pipelined tile's buffer is a different copy in each stage.
            tile_values = dict(values)
            for index, tile_operand in input_tiles.items():
                tile_values[generic.inputs[index].block_arg] = TileView(
                    tile_operand.buffer, tile_operand.loop_strides()
                )
            yields: dict[ir.Value, list[TileView]] = {}
            for operand, tile_operand, value in zip(
                outputs, output_tiles, live_yields, strict=True
            ):
                view = TileView(tile_operand.buffer, tile_operand.loop_strides())
                tile_values[operand.block_arg] = view
                yields.setdefault(value, []).append(view)
            emitter = BodyEmitter(tiling.tile, _pop(list(temps), loc_text), temp_strides)
            emitter.emit(plan, tile_values, yields)

    nest.emit(tile_operands, compute, stages)
    deallocate_tiles(tile_operands)
    for temp in temps:
        accel.dealloc(temp)
    state.records.append(
        OperatorRecord(
            name=operator_name(generic, kind),
            location=loc_text,
            kind=kind,
            tile=tiling.tile,
            extents=generic.extents,
            planned_dram_bytes=tiling.traffic_elements * 4,
            scratchpad_bytes=arena.peak_elements * 4,
            compulsory_bytes=4
            * sum(
                int(np.prod(tensor.shape))
                for tensor in [
                    *(location for _, location in tile_inputs),
                    *(init for init in output_inits if isinstance(init, DramTensor)),
                    *out_locations,
                ]
            ),
            embedding=choice.describe() if choice is not None else "",
            predicted_pe_cycles=choice.predicted_cycles if choice is not None else 0,
            solve_s=choice.solve_s if choice is not None else 0.0,
        )
    )


def _blocked_tiling(
    choice: ContractionChoice,
    problem: TilingProblem,
    work: WorkEstimate,
    free: tuple[Tiling, int],
    state: _State,
) -> tuple[Tiling, int]:
    """The least-traffic tiling (`free`) or the best one whose tiles issue the
    embedding's blocks whole, whichever the planner's estimate (DMA + PE cycles of the
    embedding, overlapped when staged) says is faster."""
    blocked_problem = replace(problem, multiple_of=tile_multiples(choice, problem.extents))
    spm_elements = state.target.scratchpad_bytes // 4
    blocked = plan_buffering(blocked_problem, spm_elements, state.buffers, work)
    if blocked[0] is None:
        return free

    def estimate(option: tuple[Tiling, int]) -> float:
        pe_cycles = tiling_pe_cycles(choice, problem.extents, option[0].tile)
        return estimate_cycles(
            problem, option[0], option[1], replace(work, compute_cycles=pe_cycles)
        )

    blocked_option = (blocked[0], blocked[1])
    return blocked_option if estimate(blocked_option) <= estimate(free) else free


def _pop(pool: list[ir.Value], where: str) -> Callable[[], ir.Value]:
    def allocate() -> ir.Value:
        if not pool:
            raise UnsupportedError(
                f"{where}: the body needs more scratchpad temporaries than planned"
            )
        return pool.pop(0)

    return allocate


def _dense_strides(tile: tuple[int, ...]) -> tuple[int, ...]:
    strides = [0] * len(tile)
    running = 1
    for loop in reversed(range(len(tile))):
        strides[loop] = running if tile[loop] > 1 else 0
        running *= tile[loop]
    return tuple(strides)


def operator_name(generic: GenericOperator, kind: str) -> str:
    if kind == "pe-array":
        return "conv" if generic.num_loops >= 6 else "matmul"
    if any(generic.is_reduction):
        return "reduce"
    return "elementwise"


def _raise_capacity(state: _State, problem: TilingProblem, where: str) -> None:
    ones = tuple(1 for _ in problem.extents)
    smallest = (
        sum(
            int(np.prod([sum(abs(c) * 0 for c in row) + 1 for row in o.access.coeffs]))
            for o in problem.operands
        )
        + problem.temporaries
    )
    needed = (smallest + ALIGN_ELEMENTS * (len(problem.operands) + problem.temporaries)) * 4
    raise ScratchpadCapacityError(
        f"{where} with loop extents {problem.extents}: no tile of this operator fits the "
        f"scratchpad of target '{state.target.name}' ({state.target.scratchpad_bytes} bytes); "
        f"its smallest tile {ones} needs {needed} bytes. Use a target with a larger scratchpad."
    )


# --- data movement -------------------------------------------------------------------


def _copy(
    state: _State,
    source: DramTensor | None,
    destination: DramTensor,
    op: ir.Operation,
    fill: float | None = None,
) -> None:
    tile, planned = emit_copy(source, destination, state.target, location_text(op), fill=fill)
    state.records.append(
        OperatorRecord(
            name="fill" if source is None else "copy",
            location=location_text(op),
            kind="copy",
            tile=tile,
            extents=destination.shape,
            planned_dram_bytes=planned,
            scratchpad_bytes=int(np.prod(tile)) * 4,
        )
    )


def _copy_to_new(state: _State, source: DramTensor, op: ir.Operation) -> DramTensor:
    destination = _new_dram(state, source.shape)
    _copy(state, source, destination, op)
    return destination


def _emit_fill_tensor(state: _State, location: DramTensor, value: float, tensor: ir.Value) -> None:
    owner = defining_op(tensor)
    op = owner if owner is not None else state.new_func
    _copy(state, None, location, op, fill=value)


def _lower_pad(state: _State, op: ir.Operation) -> None:
    whole = _pad_buffer(state, op)
    source_value = op.operands[0]
    interior = _pad_interior(state, op)
    if state.locations.get(source_value) != interior:
        # The source was not produced into the interior: copy it there.
        _copy(state, _dram_of(state, source_value), interior, op)
    state.locations[op.result] = whole


def _lower_extract_slice(state: _State, op: ir.Operation) -> None:
    source = _dram_of(state, op.operands[0])
    offsets = _static(op, "static_offsets")
    sizes = _static(op, "static_sizes")
    steps = _static(op, "static_strides")
    if any(v < 0 for v in [*offsets, *sizes, *steps]):
        raise UnsupportedError(f"{location_text(op)}: tensor.extract_slice with dynamic offsets")
    view = source.slice(offsets, sizes, steps)
    result_shape = static_shape(op.result)
    if len(result_shape) != len(sizes):  # rank-reducing: drop unit dims
        keep = [d for d, size in enumerate(sizes) if size != 1]
        view = DramTensor(
            view.buffer,
            tuple(sizes[d] for d in keep),
            tuple(view.strides[d] for d in keep),
            view.offset,
        )
        if view.shape != result_shape:
            raise UnsupportedError(f"{location_text(op)}: unsupported rank-reducing slice")
    state.locations[op.result] = view


def _lower_insert_slice(state: _State, op: ir.Operation) -> None:
    source, dest_value = op.operands[0], op.operands[1]
    destination = _dram_of(state, dest_value)
    if len(list(dest_value.uses)) > 1 or destination.buffer in state.globals.values():
        destination = _copy_to_new(state, destination, op)
    offsets = _static(op, "static_offsets")
    sizes = _static(op, "static_sizes")
    steps = _static(op, "static_strides")
    window = destination.slice(offsets, sizes, steps)
    source_location = _dram_of(state, source)
    if window.shape != source_location.shape:
        keep = [d for d, size in enumerate(sizes) if size != 1]
        window = DramTensor(
            window.buffer,
            tuple(sizes[d] for d in keep),
            tuple(window.strides[d] for d in keep),
            window.offset,
        )
    _copy(state, source_location, window, op)
    state.locations[op.result] = destination


def _lower_concat(state: _State, op: ir.Operation) -> None:
    dim = ir.IntegerAttr(op.attributes["dim"]).value
    result_shape = static_shape(op.result)
    destination = _new_dram(state, result_shape)
    offset = 0
    for value in op.operands:
        part = _dram_of(state, value)
        offsets = [0] * len(result_shape)
        offsets[dim] = offset
        window = destination.slice(offsets, part.shape, [1] * len(result_shape))
        _copy(state, part, window, op)
        offset += part.shape[dim]
    state.locations[op.result] = destination


def _lower_return(state: _State, op: ir.Operation) -> None:
    out_params = state.entry.arguments[len(state.entry.arguments) - len(op.operands) :]  # type: ignore[union-attr]
    for value, param in zip(op.operands, out_params, strict=True):
        location = _dram_of(state, value)
        if location.buffer == param:
            continue
        _copy(state, location, DramTensor.whole(param, static_shape(value)), op)
    func.ReturnOp([])
