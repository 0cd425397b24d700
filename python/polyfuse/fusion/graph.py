"""The operator graph the fusion planner partitions: operators, storages, users.

An *operator* is a live `linalg.generic` that is not a scalar fill folded into its
consumers. A *storage* is what a DRAM (or scratchpad) buffer holds: an operator's
result, or the padded buffer an operator writes into (a `tensor.pad` of a single-use
result, as the layer-by-layer lowering does); reshapes and slices are views of it.
For every operator the graph records which storages it reads and writes and through
which access, so the planner can decide which storages stay on chip.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch_mlir import ir

from polyfuse.analysis.affine import AffineAccess
from polyfuse.analysis.operators import (
    GenericOperator,
    defining_op,
    generic_operator,
    reassociation,
    static_shape,
)
from polyfuse.lowering.pe_array import Contraction, classify_contraction
from polyfuse.lowering.vector_body import plan_body

VIEWS = ("tensor.collapse_shape", "tensor.expand_shape", "tensor.extract_slice")
StorageKey = tuple[str, ir.Value | ir.Operation]


@dataclass
class Storage:
    key: StorageKey
    shape: tuple[int, ...]
    producer: int | None = None  # operator index
    low: tuple[int, ...] = ()  # padding of a pad storage
    high: tuple[int, ...] = ()
    users: set[int] = field(default_factory=set)
    external: bool = False  # used by something other than an operator (return, copies)
    viewed: bool = False  # read through a reshape or slice
    # read through a view that is not a unit-dim reshape (see `view_rows`): its rows
    # cannot be matched to an operator's loops
    opaque_view: bool = False
    order: int = 0  # creation order (deterministic layouts)

    @property
    def elements(self) -> int:
        size = 1
        for extent in self.shape:
            size *= extent
        return size


@dataclass
class OperandUse:
    """A tensor operand of an operator: the storage it touches and how."""

    storage: StorageKey | None  # None for scalars
    access: AffineAccess
    through_view: bool
    is_output: bool
    index: int  # input index, or output index among the live outputs
    init: StorageKey | None = None  # outputs: the storage of the initial value read
    init_scalar: bool = False  # outputs: initialised with a scalar (a fill)
    reads_init: bool = False
    # The storage row each access row indexes (`view_rows`): the identity without a
    # view; None when read through a view other than unit-dim reshapes.
    storage_rows: tuple[int | None, ...] | None = None


@dataclass
class Operator:
    index: int
    op: ir.Operation
    generic: GenericOperator
    inputs: list[OperandUse]
    outputs: list[OperandUse]
    temporaries: int
    contraction: bool
    roles: Contraction | None = None  # a contraction's loop roles (pe_array.classify_contraction)


@dataclass
class OperatorGraph:
    operators: list[Operator]
    storages: dict[StorageKey, Storage]
    fills: set[ir.Operation]
    # Operators preceded (since the previous operator) by an op that moves data itself
    # (a copy into a pad, concat, insert_slice): no group spans them (they would run
    # once per outer tile, and their tiles use the scratchpad from byte 0).
    after_copy: set[int] = field(default_factory=set)


def _is_scalar(value: ir.Value) -> bool:
    if not isinstance(value.type, ir.ShapedType):
        return True
    owner = defining_op(value)
    if owner is None or owner.name != "arith.constant":
        return False
    attr = owner.attributes["value"]
    return isinstance(attr, ir.DenseElementsAttr) and ir.DenseElementsAttr(attr).is_splat


def _is_weight(value: ir.Value) -> bool:
    owner = defining_op(value)
    return owner is not None and owner.name == "arith.constant" and not _is_scalar(value)


def _is_fill(op: ir.Operation) -> bool:
    """A generic broadcasting a scalar whose every use is as some generic's output init."""
    generic = generic_operator(op)
    if len(generic.outputs) != 1 or len(generic.inputs) != 1:
        return False
    body = [o.operation for o in generic.body.operations]
    if len(body) != 1 or body[0].operands[0] != generic.inputs[0].block_arg:
        return False
    if not _is_scalar(generic.inputs[0].value):
        return False
    for use in op.result.uses:
        user = use.owner
        if user.name != "linalg.generic" or use.operand_number < generic_inputs(user):
            return False
    return True


def reads_from_outside(
    graph: OperatorGraph, members: list[int]
) -> tuple[list[tuple[Operator, OperandUse]], set[StorageKey]]:
    """What a group of `members` reads from storages no member produces: every (member,
    input use) of such a storage, in member order; and the storages some member's output
    starts from (an initial value: varies with every output tile)."""
    member_set = set(members)
    reads: list[tuple[Operator, OperandUse]] = []
    inits: set[StorageKey] = set()
    for index in members:
        operator = graph.operators[index]
        inits.update(u.init for u in operator.outputs if u.init is not None)
        for use in operator.inputs:
            key = use.storage
            if key is not None and graph.storages[key].producer not in member_set:
                reads.append((operator, use))
    return reads, inits


def generic_inputs(op: ir.Operation) -> int:
    return len(op.operands) - len(op.results)


def operand_value(operator: Operator, use: OperandUse, init: bool) -> ir.Value:
    """The tensor value `use` reads (an input, or an output's initial value)."""
    if not init:
        return operator.generic.inputs[use.index].value
    live = [
        o
        for o, result in zip(operator.generic.outputs, operator.op.results, strict=True)
        if len(list(result.uses)) > 0
    ]
    return live[use.index].value


def pad_of_result(value: ir.Value) -> ir.Operation | None:
    """The `tensor.pad` an operator result is produced into: its only pad use, when every
    other use is an operator that reads it (which then reads the pad's interior)."""
    owner = defining_op(value)
    if owner is None or owner.name != "linalg.generic":
        return None
    users = [use.owner.operation for use in value.uses]
    pads = [user for user in users if user.name == "tensor.pad"]
    if len(pads) != 1 or any(u.name not in ("tensor.pad", "linalg.generic") for u in users):
        return None
    return pads[0]


def storage_of(value: ir.Value) -> tuple[StorageKey, bool]:
    """(the storage a tensor value lives in, whether it is reached through a view)."""
    viewed = False
    while True:
        owner = defining_op(value)
        if owner is None:
            return ("arg", value), viewed
        if owner.name in VIEWS:
            value, viewed = owner.operands[0], True
            continue
        if owner.name == "tensor.pad":
            pad = pad_of_result(owner.operands[0])
            if pad is not None and pad == owner:
                return ("pad", owner), viewed
            return ("padcopy", owner), viewed
        if owner.name == "linalg.generic":
            pad = pad_of_result(value)
            if pad is not None:
                return ("pad", pad), viewed
            return ("gen", value), viewed
        return ("other", value), viewed


# A view row that indexes a storage row split into several (an expand_shape of
# [1024] into [8, 128]) or several storage rows merged into one (a collapse_shape of
# [8, 12] into [96]): no loop can tile it as a storage row.
MERGED = -1


def _reshape_rows(op: ir.Operation) -> list[int | None] | None:
    """For a collapse/expand_shape, the source dim each result dim is (None: a unit dim;
    `MERGED`: part of a reassociation group with more than one dim of more than one
    element on either side); None for any other view."""
    if op.name not in ("tensor.collapse_shape", "tensor.expand_shape"):
        return None
    groups = reassociation(op)
    source, result = static_shape(op.operands[0]), static_shape(op.result)
    rows: list[int | None] = [None] * len(result)
    for position, group in enumerate(groups):
        if op.name == "tensor.expand_shape":  # group: result dims of source dim `position`
            wide = [d for d in group if result[d] != 1]
            for dim in wide:
                rows[dim] = position if len(wide) == 1 else MERGED
        else:  # group: source dims of result dim `position`
            wide = [d for d in group if source[d] != 1]
            rows[position] = (wide[0] if len(wide) == 1 else MERGED) if wide else None
    return rows


def view_rows(value: ir.Value) -> tuple[int | None, ...] | None:
    """The row of its storage each row of `value` indexes, when `value` is the storage
    itself or reaches it through reshapes (None for a unit row, `MERGED` for a row of
    several storage rows or of part of one); None through any other view (or into a
    padded storage's interior).

    This is what lets a fusion group tile a shared dimension through such reshapes, as
    BERT's attention needs (`[12,128,128]` read as `[1,12,128,128]`)."""
    rows: list[int | None] = list(range(len(static_shape(value))))
    crossed = False
    while True:
        owner = defining_op(value)
        if owner is None or owner.name not in VIEWS:
            break
        step = _reshape_rows(owner)
        if step is None:
            return None
        rows = [r if r is None or r == MERGED else step[r] for r in rows]
        value, crossed = owner.operands[0], True
    if crossed and storage_of(value)[0][0] not in ("gen", "arg"):
        return None  # a pad's interior: its coordinates are offset by the padding
    return tuple(rows)


def build_graph(func_op: ir.Operation) -> OperatorGraph:
    block = func_op.regions[0].blocks[0]
    ops = [o.operation for o in block.operations]
    storages: dict[StorageKey, Storage] = {}
    operators: list[Operator] = []
    fills: set[ir.Operation] = set()
    after_copy: set[int] = set()

    def storage(key: StorageKey, value: ir.Value) -> Storage:
        if key not in storages:
            if key[0] in ("pad", "padcopy"):
                pad = key[1]
                assert isinstance(pad, ir.Operation)
                storages[key] = Storage(
                    key,
                    static_shape(pad.result),
                    low=tuple(ir.DenseI64ArrayAttr(pad.attributes["static_low"])),
                    high=tuple(ir.DenseI64ArrayAttr(pad.attributes["static_high"])),
                )
            else:
                storages[key] = Storage(key, static_shape(value))
            storages[key].order = len(storages)
        return storages[key]

    copy_pending = False
    for op in ops:
        if op.name in ("tensor.concat", "tensor.insert_slice") or (
            op.name == "tensor.pad" and storage_of(op.result)[0][0] == "padcopy"
        ):
            copy_pending = True
        if op.name != "linalg.generic":
            if op.name in VIEWS or op.name in ("tensor.empty", "arith.constant", "cf.assert"):
                continue
            for operand in op.operands:
                if isinstance(operand.type, ir.RankedTensorType) and not _is_scalar(operand):
                    key, _ = storage_of(operand)
                    if op.name == "tensor.pad" and key[0] == "pad":
                        continue  # the source is produced into the pad's interior
                    storage(key, operand).external = True
            continue
        if not any(len(list(r.uses)) > 0 for r in op.results):
            continue
        if _is_fill(op):
            fills.add(op)
            continue
        generic = generic_operator(op)
        index = len(operators)
        if copy_pending:
            after_copy.add(index)
            copy_pending = False
        live = [len(list(r.uses)) > 0 for r in op.results]
        outputs_live = [o for o, alive in zip(generic.outputs, live, strict=True) if alive]
        yield_op = list(generic.body.operations)[-1].operation
        yields = [yield_op.operands[generic.outputs.index(o)] for o in outputs_live]
        plan = plan_body(generic.body, yields)
        used = {operand for body_op in plan.ops for operand in body_op.operands}
        used.update(yields)
        inputs: list[OperandUse] = []
        weights: set[int] = set()
        for position, operand in enumerate(generic.inputs):
            if operand.block_arg not in used or _is_scalar(operand.value):
                continue
            if _is_weight(operand.value):
                weights.add(position)
            key, viewed = storage_of(operand.value)
            s = storage(key, operand.value)
            s.users.add(index)
            s.viewed |= viewed
            rows = view_rows(operand.value)
            s.opaque_view |= rows is None
            inputs.append(
                OperandUse(key, operand.access, viewed, False, position, storage_rows=rows)
            )
        outputs: list[OperandUse] = []
        for position, operand in enumerate(outputs_live):
            assert operand.result is not None
            key, viewed = storage_of(operand.result)
            s = storage(key, operand.result)
            s.producer = index
            rows = view_rows(operand.result)
            s.opaque_view |= rows is None
            use = OperandUse(key, operand.access, viewed, True, position, storage_rows=rows)
            if operand.block_arg in used:
                use.reads_init = True
                init_owner = defining_op(operand.value)
                if _is_scalar(operand.value) or (init_owner is not None and init_owner in fills):
                    use.init_scalar = True
                else:
                    init_key, init_viewed = storage_of(operand.value)
                    init_storage = storage(init_key, operand.value)
                    init_storage.users.add(index)
                    init_storage.viewed |= init_viewed
                    init_storage.opaque_view |= init_viewed
                    use.init = init_key
            outputs.append(use)
        roles = (
            classify_contraction(generic, weights)
            if len(inputs) == 2 and len(outputs) == 1
            else None
        )
        contraction = roles is not None
        operators.append(
            Operator(
                index=index,
                op=op,
                generic=generic,
                inputs=inputs,
                outputs=outputs,
                temporaries=0 if contraction else plan.temporaries,
                contraction=contraction,
                roles=roles,
            )
        )
    return OperatorGraph(operators, storages, fills, after_copy)
