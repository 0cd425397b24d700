"""Fusion plans as IR: `accel` groups that hold a fusion group's operators and decisions.

`polyfuse-form-groups` writes the planner's choice into the function, and
`polyfuse-lower-groups` reads it back: nothing but the IR crosses from one to the other.
A group is an `scf.execute_region no_inline` (IRDL cannot declare a terminator, so the
accel dialect cannot define a region op with a yield of its own) holding the ops from
its first operator to its last, its results the values used after it:

    %r:2 = scf.execute_region -> (tensor<1x64x56x56xf32>, ...) no_inline {
      %a = linalg.generic {..., accel.tiling = {type = "OperatorPlan", tiling = ...}} ...
      %p = tensor.pad %a ...
      %b = linalg.generic {..., accel.tiling = ...} ins(%p, ...) ...
      scf.yield %b, ... : ...
    } {accel.group = {type = "GroupPlan", outer_tile = 8 : i64, trips = 7 : i64, ...}}

`accel.group` is the group's plan (`GroupPlan` or `HaloGroupPlan`: tiled or banded,
outer loops, band height and rows, recompute or cache, resident and loaded inputs,
carried storages), `accel.tiling` each operator's plan (a banded group's operators: one
per band). Plans refer to positions, never to `ir.Value` identity: operators by their
place in the group, values by (operator, operand number; -1 - n for result n), storages
by such a value (`{storage = array<i64: 2, 0>}`: what operand 0 of the group's third
operator lives in), the storage the previous group carried in as `"carried"`. Data
classes become dictionaries with a `type` entry, dictionaries `{dict = [[key, value],
...]}` (insertion order kept: it is the order buffers are placed in), sets `{set = [...]}`.
Two fields are not written: an operator's tiling problem (planning only) and its
PE-array embedding (the lowering asks `overlap.contraction_choice`, deterministic and
cached, as the planner did).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from torch_mlir import ir
from torch_mlir.dialects import scf

from polyfuse.analysis.tile_search import Tiling
from polyfuse.errors import PolyfuseError
from polyfuse.fusion.breakdown import group_traffic
from polyfuse.fusion.graph import OperatorGraph, StorageKey, build_graph, storage_of
from polyfuse.fusion.halo import Band, HaloGroupPlan
from polyfuse.fusion.overlap import Overlap, contraction_choice
from polyfuse.fusion.planner import FusionPlan, GroupPlan, OperatorPlan
from polyfuse.targets import Target

GROUP_ATTRIBUTE = "accel.group"
TILING_ATTRIBUTE = "accel.tiling"
# On a function the planner could not plan: why (its operators are lowered one by one).
FALLBACK_ATTRIBUTE = "accel.fusion_fallback"
# On a function the planner planned (it may have no group: no operator).
PLANNED_ATTRIBUTE = "accel.fusion_planned"
_CLASSES: dict[str, type] = {
    cls.__name__: cls for cls in (GroupPlan, HaloGroupPlan, OperatorPlan, Band, Tiling)
}
_NOT_WRITTEN = ("problem", "choice", "plans", "operators")


class _References:
    """Positions of the values and storages of one group (see the module docstring)."""

    def __init__(self, members: list[ir.Operation], carried: StorageKey | None) -> None:
        self.members = members
        self.carried = carried
        self.values: dict[ir.Value, tuple[int, int]] = {}
        self.storages: dict[StorageKey, tuple[int, int]] = {}
        for position, op in enumerate(members):
            slots = [(r, (position, -1 - n)) for n, r in enumerate(op.results)]
            slots += [(v, (position, n)) for n, v in enumerate(op.operands)]
            for value, where in slots:
                self.values.setdefault(value, where)
                if isinstance(value.type, ir.RankedTensorType):
                    self.storages.setdefault(storage_of(value)[0], where)

    def value(self, value: ir.Value) -> ir.Attribute:
        if value not in self.values:
            raise PolyfuseError(f"{value} is not an operand or result of its group's operators")
        return ir.DictAttr.get({"value": ir.DenseI64ArrayAttr.get(list(self.values[value]))})

    def storage(self, key: StorageKey) -> ir.Attribute:
        if key == self.carried:
            return ir.DictAttr.get({"storage": ir.StringAttr.get("carried")})
        if key not in self.storages:
            raise PolyfuseError(f"storage {key[0]} is not reached from its group's operators")
        return ir.DictAttr.get({"storage": ir.DenseI64ArrayAttr.get(list(self.storages[key]))})

    def resolve(self, where: ir.Attribute) -> ir.Value:
        position, slot = tuple(ir.DenseI64ArrayAttr(where))
        op = self.members[position]
        return op.results[-1 - slot] if slot < 0 else op.operands[slot]


def _is_storage_key(value: Any) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], ir.Value | ir.Operation)
    )


def _encode(value: Any, refs: _References, first: int) -> ir.Attribute:
    """`value` (a plan's field) as an attribute; operator indices shifted by `first`
    where `_encode_dataclass` says a field holds them."""
    if value is None:
        return ir.UnitAttr.get()
    if isinstance(value, bool | np.bool_):
        return ir.BoolAttr.get(bool(value))
    if isinstance(value, int | np.integer):
        return ir.IntegerAttr.get(ir.IntegerType.get_signless(64), int(value))
    if isinstance(value, float):
        return ir.FloatAttr.get(ir.F64Type.get(), value)
    if isinstance(value, str):
        return ir.StringAttr.get(value)
    if _is_storage_key(value):
        return refs.storage(value)
    if isinstance(value, ir.Value):
        return refs.value(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _encode_dataclass(value, refs, first)
    if isinstance(value, tuple) and all(isinstance(v, int | np.integer) for v in value):
        return ir.DenseI64ArrayAttr.get([int(v) for v in value])
    if isinstance(value, tuple):
        return ir.DictAttr.get(
            {"tuple": ir.ArrayAttr.get([_encode(v, refs, first) for v in value])}
        )
    if isinstance(value, list):
        return ir.ArrayAttr.get([_encode(v, refs, first) for v in value])
    if isinstance(value, set):
        items = sorted((_encode(v, refs, first) for v in value), key=str)
        return ir.DictAttr.get({"set": ir.ArrayAttr.get(items)})
    if isinstance(value, dict):
        pairs = [
            ir.ArrayAttr.get([_encode(k, refs, first), _encode(v, refs, first)])
            for k, v in value.items()
        ]
        return ir.DictAttr.get({"dict": ir.ArrayAttr.get(pairs)})
    raise TypeError(f"cannot write {type(value).__name__} into a plan attribute")


# Fields whose dictionary keys are operator indices (written relative to the group).
_OPERATOR_KEYS = {("HaloGroupPlan", "band_loops"), ("Band", "loops")}


def _encode_dataclass(value: Any, refs: _References, first: int) -> ir.Attribute:
    name = type(value).__name__
    entries: dict[str, ir.Attribute] = {"type": ir.StringAttr.get(name)}
    for field in dataclasses.fields(value):
        item = getattr(value, field.name)
        if field.name in _NOT_WRITTEN:
            continue
        if (name, field.name) in _OPERATOR_KEYS:
            item = {index - first: entry for index, entry in item.items()}
        entries[field.name] = _encode(item, refs, first)
    return ir.DictAttr.get(entries)


class _Decoder:
    """Attributes back to plan objects, for one group."""

    def __init__(self, refs: _References, carried: StorageKey | None, first: int) -> None:
        self.refs = refs
        self.carried = carried
        self.first = first

    def decode(self, attribute: ir.Attribute) -> Any:
        if isinstance(attribute, ir.UnitAttr):
            return None
        if isinstance(attribute, ir.BoolAttr):
            return bool(attribute.value)
        if isinstance(attribute, ir.IntegerAttr):
            return int(attribute.value)
        if isinstance(attribute, ir.FloatAttr):
            return float(attribute.value)
        if isinstance(attribute, ir.StringAttr):
            return attribute.value
        if isinstance(attribute, ir.DenseI64ArrayAttr):
            return tuple(attribute)
        if isinstance(attribute, ir.ArrayAttr):
            return [self.decode(item) for item in attribute]
        dictionary = ir.DictAttr(attribute)
        if "type" in dictionary:
            return self.dataclass(dictionary)
        if "storage" in dictionary:
            where = dictionary["storage"]
            if isinstance(where, ir.StringAttr):
                return self.carried
            return storage_of(self.refs.resolve(where))[0]
        if "value" in dictionary:
            return self.refs.resolve(dictionary["value"])
        if "tuple" in dictionary:
            return tuple(self.decode(item) for item in ir.ArrayAttr(dictionary["tuple"]))
        if "set" in dictionary:
            return {self.decode(item) for item in ir.ArrayAttr(dictionary["set"])}
        if "dict" in dictionary:
            pairs = [ir.ArrayAttr(pair) for pair in ir.ArrayAttr(dictionary["dict"])]
            return {self.decode(pair[0]): self.decode(pair[1]) for pair in pairs}
        raise PolyfuseError(f"unreadable plan attribute {attribute}")

    def dataclass(self, dictionary: ir.DictAttr, **known: Any) -> Any:
        """The plan object `dictionary` holds; `known`: fields not written in it."""
        name = ir.StringAttr(dictionary["type"]).value
        if name not in _CLASSES:
            raise PolyfuseError(f"unknown plan class '{name}' in {dictionary}")
        cls = _CLASSES[name]
        values: dict[str, Any] = dict(known)
        for field in dataclasses.fields(cls):
            if field.name not in dictionary:
                continue
            item = self.decode(dictionary[field.name])
            if (name, field.name) in _OPERATOR_KEYS:
                item = {index + self.first: entry for index, entry in item.items()}
            if isinstance(item, list) and str(field.type).startswith("tuple"):
                item = tuple(item)
            values[field.name] = item
        try:
            return cls(**values)
        except TypeError as error:
            raise PolyfuseError(f"plan attribute {dictionary}: {error}") from None


def _operator_ops(graph: OperatorGraph, indices: list[int]) -> list[ir.Operation]:
    return [graph.operators[index].op for index in indices]


def materialize_plan(func_op: ir.Operation, graph: OperatorGraph, plan: FusionPlan) -> None:
    """Write `plan` into `func_op`: every group an `scf.execute_region` with its plan
    (see the module docstring). `graph` is the function's operator graph."""
    with func_op.context, func_op.location:
        _materialize(graph, plan)


def _materialize(graph: OperatorGraph, plan: FusionPlan) -> None:
    carried: StorageKey | None = None
    encoded = []
    for group in plan.groups:  # positions are taken before any op moves
        members = _operator_ops(graph, group.operators)
        refs = _References(members, carried)
        first = group.operators[0]
        attribute = _encode_dataclass(group, refs, first)
        tilings = []
        for index in group.operators:
            if isinstance(group, HaloGroupPlan):
                per_band = [band.plans[index] for band in group.bands]
                tilings.append(ir.ArrayAttr.get([_encode(p, refs, first) for p in per_band]))
            else:
                tilings.append(_encode(group.plans[index], refs, first))
        encoded.append((members, attribute, tilings))
        carried = group.carry_out
    for members, attribute, tilings in encoded:
        for op, tiling in zip(members, tilings, strict=True):
            op.attributes[TILING_ATTRIBUTE] = tiling
        _wrap(members[0], members[-1], attribute)


def _wrap(first: ir.Operation, last: ir.Operation, plan: ir.Attribute) -> None:
    """Move the ops from `first` to `last` into an scf.execute_region carrying `plan`."""
    block = first.block
    span: list[ir.Operation] = []
    for op_view in block.operations:
        op = op_view.operation
        if op == first or span:
            span.append(op)
        if op == last:
            break
    members = set(span)
    escaping: list[ir.Value] = []
    outside: list[tuple[ir.Operation, int, int]] = []  # (user, operand number, result)
    for op in span:
        for result in op.results:
            users = [
                (use.owner.operation, use.operand_number)
                for use in result.uses
                if _ancestor_in(use.owner.operation, block) not in members
            ]
            if users:
                outside += [(user, number, len(escaping)) for user, number in users]
                escaping.append(result)
    with ir.InsertionPoint(last), last.location:
        region_op = scf.ExecuteRegionOp([r.type for r in escaping])
    region_op.operation.move_after(last)
    region_op.operation.attributes["no_inline"] = ir.UnitAttr.get()
    region_op.operation.attributes[GROUP_ATTRIBUTE] = plan
    body = region_op.region.blocks.append()
    with ir.InsertionPoint(body), last.location:
        yield_op = scf.YieldOp(escaping)
    for op in span:
        op.move_before(yield_op.operation)
    for user, number, result in outside:
        user.operands[number] = region_op.results[result]


def _ancestor_in(op: ir.Operation, block: ir.Block) -> ir.Operation | None:
    """The op of `block` that is `op` or holds it."""
    while op.block != block:
        parent = op.parent
        if parent is None:
            return None
        op = parent.operation
    return op


def is_group(op: ir.Operation) -> bool:
    return op.name == "scf.execute_region" and GROUP_ATTRIBUTE in op.attributes


def read_plan(
    func_op: ir.Operation, target: Target, embedding: str
) -> tuple[OperatorGraph, FusionPlan] | None:
    """Inline `func_op`'s groups back into its body and rebuild the plan from their
    attributes: (the operator graph, the plan), or None when it has no group."""
    with func_op.context, func_op.location:
        return _read_plan(func_op, target, embedding)


def _read_plan(
    func_op: ir.Operation, target: Target, embedding: str
) -> tuple[OperatorGraph, FusionPlan] | None:
    block = func_op.regions[0].blocks[0]
    groups = [op.operation for op in block.operations if is_group(op.operation)]
    if PLANNED_ATTRIBUTE in func_op.attributes:
        del func_op.attributes[PLANNED_ATTRIBUTE]
    elif not groups:
        return None
    found: list[tuple[ir.Attribute, list[ir.Operation]]] = []
    for group in groups:
        ops = [op.operation for op in group.regions[0].blocks[0].operations]
        found.append((group.attributes[GROUP_ATTRIBUTE], ops[:-1]))
        _inline(group)
    graph = build_graph(func_op)
    index_of = {operator.op: operator.index for operator in graph.operators}
    overlap = Overlap(target, embedding=embedding)
    plans: list[GroupPlan] = []
    carried: StorageKey | None = None
    for attribute, ops in found:
        members = [op for op in ops if op in index_of]
        if not members:
            raise PolyfuseError("a fusion group holds no operator")
        indices = [index_of[op] for op in members]
        first = indices[0]
        refs = _References(members, carried)
        decoder = _Decoder(refs, carried, first)
        group = decoder.dataclass(ir.DictAttr(attribute), operators=indices)
        tilings = [decoder.decode(op.attributes[TILING_ATTRIBUTE]) for op in members]
        if isinstance(group, HaloGroupPlan):
            for number, band in enumerate(group.bands):
                band.plans = {index: tilings[k][number] for k, index in enumerate(indices)}
        else:
            group.plans = dict(zip(indices, tilings, strict=True))
        for index, operator_plan in group.operator_plans():
            operator_plan.choice = contraction_choice(graph.operators[index], overlap)
        plans.append(group)
        carried = group.carry_out
    for op in [operator.op for operator in graph.operators]:
        if TILING_ATTRIBUTE in op.attributes:
            del op.attributes[TILING_ATTRIBUTE]
    return graph, FusionPlan(plans, target.scratchpad_bytes)


def _inline(group: ir.Operation) -> None:
    """Move a group's ops back before it, its results replaced by what it yields."""
    block = group.regions[0].blocks[0]
    ops = [op.operation for op in block.operations]
    yielded = list(ops[-1].operands)
    for op in ops[:-1]:
        op.move_before(group)
    for result, value in zip(group.results, yielded, strict=True):
        result.replace_all_uses_with(value)
    group.erase()


def read_fusion_plans(module_op: ir.Operation, target: Target, embedding: str) -> list[FusionPlan]:
    """The plan of every grouped function of the module (read from a copy: the module
    is left as it is), each with where its bytes go (`FusionPlan.traffic`)."""
    copy = module_op.clone(ip=False)
    plans = []
    try:
        for op in copy.regions[0].blocks[0].operations:
            if op.operation.name != "func.func":
                continue
            found = read_plan(op.operation, target, embedding)
            if found is not None:
                graph, plan = found
                plan.traffic = group_traffic(graph, plan)
                plans.append(plan)
    finally:
        copy.erase()
    return plans
