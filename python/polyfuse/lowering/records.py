"""Operator records in the IR: what a lowering pass decided per operator, for reports.

A lowering pass (`polyfuse-lower-to-accel`, `polyfuse-lower-groups`) appends the
records of the operators it lowered to the module attribute `accel.operators` (one
dictionary per operator, in program order), so whoever runs the pipeline (compile, the
benches, `polyfuse run FILE.mlir`) reads them from the IR rather than from the pass:

    module attributes {accel.operators = [{name = "conv 3x3", kind = "pe-array",
        tile = array<i64: 1, 8, 56, 64>, planned_dram_bytes = 802816 : i64, ...}]}
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch_mlir import ir

from polyfuse.lowering.layer_by_layer import OperatorRecord

RECORDS_ATTRIBUTE = "accel.operators"


def _attribute(value: Any) -> ir.Attribute:
    if isinstance(value, bool):
        return ir.BoolAttr.get(value)
    if isinstance(value, int):
        return ir.IntegerAttr.get(ir.IntegerType.get_signless(64), value)
    if isinstance(value, float):
        return ir.FloatAttr.get(ir.F64Type.get(), value)
    if isinstance(value, tuple):
        return ir.DenseI64ArrayAttr.get(list(value))
    return ir.StringAttr.get(str(value))


def _value(attribute: ir.Attribute) -> Any:
    if isinstance(attribute, ir.BoolAttr):
        return attribute.value
    if isinstance(attribute, ir.IntegerAttr):
        return attribute.value
    if isinstance(attribute, ir.FloatAttr):
        return attribute.value
    if isinstance(attribute, ir.DenseI64ArrayAttr):
        return tuple(attribute)
    return ir.StringAttr(attribute).value


def append_records(module_op: ir.Operation, records: list[OperatorRecord]) -> None:
    """Append `records` to the module's `accel.operators`. The CP-SAT solve time is left
    out: the IR stays deterministic (it is in the pass timings)."""
    entries = []
    if RECORDS_ATTRIBUTE in module_op.attributes:
        entries = list(ir.ArrayAttr(module_op.attributes[RECORDS_ATTRIBUTE]))
    for record in records:
        fields = {
            f.name: _attribute(getattr(record, f.name))
            for f in dataclasses.fields(record)
            if f.name != "solve_s" and getattr(record, f.name) != f.default
        }
        entries.append(ir.DictAttr.get(fields, context=module_op.context))
    module_op.attributes[RECORDS_ATTRIBUTE] = ir.ArrayAttr.get(entries, context=module_op.context)


def read_records(module_op: ir.Operation) -> list[OperatorRecord]:
    """The records the lowering passes left on the module, in order."""
    if RECORDS_ATTRIBUTE not in module_op.attributes:
        return []
    records: list[OperatorRecord] = []
    fields = [f.name for f in dataclasses.fields(OperatorRecord)]
    for entry in ir.ArrayAttr(module_op.attributes[RECORDS_ATTRIBUTE]):
        dictionary = ir.DictAttr(entry)
        values = {name: _value(dictionary[name]) for name in fields if name in dictionary}
        records.append(OperatorRecord(**values))
    return records
