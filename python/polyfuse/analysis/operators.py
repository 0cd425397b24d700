"""The operator view of a `linalg.generic`: loops, operands with affine accesses, body.

Everything the tiler and the lowering need from a generic, read once from the IR:
static loop extents, which loops are reductions, each operand's access, and which
block arguments the body actually reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch_mlir import ir

from polyfuse.analysis.affine import AffineAccess, access_from_map
from polyfuse.errors import UnsupportedError

# The most iterations one operator may run: its cycle and traffic estimates (in numpy and
# in the CP-SAT embedding model) then stay within 64-bit integers. A 2**48-MAC operator
# keeps a 128x128 PE array busy for over four hours of emulated time at 1 GHz.
MAX_OPERATOR_ITERATIONS = 2**48


@dataclass
class GenericOperand:
    value: ir.Value
    access: AffineAccess
    block_arg: ir.Value
    is_output: bool
    result: ir.Value | None = None  # outputs only


@dataclass
class GenericOperator:
    op: ir.Operation
    extents: tuple[int, ...]
    is_reduction: tuple[bool, ...]
    inputs: list[GenericOperand]
    outputs: list[GenericOperand]

    @property
    def body(self) -> ir.Block:
        return self.op.regions[0].blocks[0]

    @property
    def num_loops(self) -> int:
        return len(self.extents)


def location_text(op: ir.Operation) -> str:
    """`file:line:col` of an op when it has one, else the op name."""
    text = str(op.location)
    if text.startswith("loc(") and text.endswith(")"):
        text = text[4:-1]
    text = text.replace('"', "")
    return text if text and text != "unknown" else op.name


def static_shape(value: ir.Value) -> tuple[int, ...]:
    shaped = ir.ShapedType(value.type)
    if not shaped.has_static_shape:
        raise UnsupportedError(
            f"tensor of type {value.type} has a dynamic shape; polyfuse compiles static "
            "shapes only (export the model with fixed input sizes)"
        )
    return tuple(shaped.shape)


def _loop_extents(op: ir.Operation, operands: list[GenericOperand], num_loops: int) -> list[int]:
    extents: list[int | None] = [None] * num_loops
    for operand in operands:
        if not isinstance(operand.value.type, ir.ShapedType):
            continue
        shape = static_shape(operand.value)
        for row, const, size in zip(
            operand.access.coeffs, operand.access.consts, shape, strict=True
        ):
            nonzero = [dim for dim, c in enumerate(row) if c != 0]
            if len(nonzero) == 1 and row[nonzero[0]] == 1 and const == 0:
                loop = nonzero[0]
                if extents[loop] is None:
                    extents[loop] = size
    if None in extents:
        raise UnsupportedError(
            f"{location_text(op)}: cannot derive the static range of loop "
            f"d{extents.index(None)} of this linalg.generic"
        )
    return [int(e) for e in extents if e is not None]


def generic_operator(op: ir.Operation) -> GenericOperator:
    """Read a linalg.generic (named ops must be generalised first)."""
    maps = [ir.AffineMapAttr(a).value for a in op.attributes["indexing_maps"]]
    iterators = [str(a) for a in op.attributes["iterator_types"]]
    is_reduction = tuple("reduction" in it for it in iterators)
    num_inputs = len(op.operands) - len(op.results)
    block = op.regions[0].blocks[0]
    operands: list[GenericOperand] = []
    for index, value in enumerate(op.operands):
        is_output = index >= num_inputs
        operands.append(
            GenericOperand(
                value=value,
                access=access_from_map(maps[index]),
                block_arg=block.arguments[index],
                is_output=is_output,
                result=op.results[index - num_inputs] if is_output else None,
            )
        )
    extents = _loop_extents(op, operands, len(iterators))
    if math.prod(extents) > MAX_OPERATOR_ITERATIONS:
        raise UnsupportedError(
            f"{location_text(op)}: operator with loop extents {tuple(extents)} runs "
            f"{math.prod(extents)} iterations, more than the {MAX_OPERATOR_ITERATIONS} (2**48) "
            "polyfuse plans; split it or use smaller shapes"
        )
    return GenericOperator(
        op=op,
        extents=tuple(extents),
        is_reduction=is_reduction,
        inputs=operands[:num_inputs],
        outputs=operands[num_inputs:],
    )


def reassociation(op: ir.Operation) -> list[list[int]]:
    """The dim groups of a `tensor.collapse_shape` / `tensor.expand_shape`."""
    return [
        [ir.IntegerAttr(d).value for d in ir.ArrayAttr(g)] for g in op.attributes["reassociation"]
    ]


def defining_op(value: ir.Value) -> ir.Operation | None:
    """The operation that defines `value`, or None for a block argument."""
    owner = value.owner
    if isinstance(owner, ir.Block):
        return None
    return owner.operation
