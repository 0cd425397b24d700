"""The `accel` dialect: loading, builders and readers.

The dialect is defined in IRDL (`accel.irdl.mlir`) and loaded at run time, so ops are
created with `ir.Operation.create` and printed in generic syntax. Builders insert at
the current `ir.InsertionPoint` and use the current `ir.Location` unless given `loc`.

A view of memory is an *access* `(c0, coeffs)` — element offset
`c0 + sum(coeffs[l] * ivs[l])`, stored as a one-result affine map over the op's `ivs`
operands — plus per-dimension element *strides* over the op's iteration space *shape*.
Views are listed destination first: DMA `[dst, src]`, matmul `[c, a, b]`, vector
`[dst, sources...]`.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch_mlir import ir
from torch_mlir.dialects import irdl

from polyfuse.dialects.affine_access import Access as Access
from polyfuse.dialects.affine_access import access_map as access_map
from polyfuse.dialects.affine_access import linear_access as linear_access
from polyfuse.runtime.isa import MAX_DIMS, VECTOR_ARITY, VectorKind

SCRATCHPAD_MEMORY_SPACE = 1
MAX_RANK = MAX_DIMS
MATMUL_RANK = 6
VECTOR_KINDS: dict[str, VectorKind] = {kind.name.lower(): kind for kind in VectorKind}
VECTOR_SOURCE_SEGMENTS = 3  # operand segments a, b, c of accel.vector

_TOKEN_TYPES: weakref.WeakKeyDictionary[ir.Context, Any] = weakref.WeakKeyDictionary()


def dialect_file() -> Path:
    """The IRDL definition: installed next to this module, or `<repo>/dialects/`."""
    installed = Path(__file__).parent / "accel.irdl.mlir"
    if installed.exists():
        return installed
    return Path(__file__).resolve().parents[3] / "dialects" / "accel.irdl.mlir"


def load_accel_dialect(context: ir.Context | None = None) -> None:
    """Load the accel dialect into `context` (default: the current one); idempotent."""
    context = context or ir.Context.current
    _register_python_module()
    if context.is_registered_operation("accel.dma_start"):
        return
    path = dialect_file()
    if not path.exists():
        raise FileNotFoundError(
            f"accel dialect definition not found at {path}; reinstall polyfuse "
            "(CMakeLists.txt installs dialects/accel.irdl.mlir to polyfuse/dialects)"
        )
    with context, ir.Location.unknown(context):
        definition = ir.Module.parse(path.read_text(), context)
        irdl.load_dialects(definition)


def _register_python_module() -> None:
    """Make this module the Python module of the `accel` dialect.

    Whenever the bindings wrap an op of a dialect whose Python module they have not
    loaded, they try to import `torch_mlir.dialects.<dialect>` first; a failed import is
    not remembered, so every accel op handed to Python (each op of a walk, each op built)
    cost a failed import, about 0.1 ms: over a second for a ResNet-50. With
    `polyfuse.dialects` also searched, the import of `polyfuse.dialects.accel` succeeds
    once and is remembered. The module defines no op classes: ops stay generic
    `OpView`s, as before."""
    from torch_mlir.dialects._ods_common import _cext

    if "polyfuse.dialects" not in _cext.globals.dialect_search_modules:
        _cext.globals.append_dialect_search_prefix("polyfuse.dialects")


def token_type(context: ir.Context | None = None) -> ir.Type:
    """`!accel.token`, the handle of a DMA transfer in flight."""
    context = context or ir.Context.current
    # A dynamic (IRDL) type can only be made by parsing, which costs ~20 us; cache the
    # type's C pointer per context. The capsule holds no reference to the context, so
    # the weak-keyed cache does not keep contexts alive.
    capsule = _TOKEN_TYPES.get(context)
    if capsule is None:
        capsule = ir.Type.parse("!accel.token", context)._CAPIPtr
        _TOKEN_TYPES[context] = capsule
    return ir.Type._CAPICreate(capsule)


def scratchpad_type(elements: int) -> ir.MemRefType:
    """`memref<elements x f32, 1>`, a scratchpad buffer."""
    space = ir.IntegerAttr.get(ir.IntegerType.get_signless(64), SCRATCHPAD_MEMORY_SPACE)
    return ir.MemRefType.get([elements], ir.F32Type.get(), memory_space=space)


def memory_space(type_: ir.Type) -> int:
    """The memref's memory space as an int (0 = DRAM, the default space)."""
    space = ir.MemRefType(type_).memory_space
    if space is None:
        return 0
    if isinstance(space, ir.IntegerAttr):
        return int(space.value)
    return -1  # a non-integer space is neither DRAM nor the scratchpad


def is_scratchpad(value_or_type: ir.Value | ir.Type) -> bool:
    """Whether a memref value or type lives in the scratchpad (memory space 1)."""
    type_ = value_or_type.type if isinstance(value_or_type, ir.Value) else value_or_type
    return isinstance(type_, ir.MemRefType) and memory_space(type_) == SCRATCHPAD_MEMORY_SPACE


# --- builders -------------------------------------------------------------------------


def alloc(elements: int, offset_bytes: int, *, loc: ir.Location | None = None) -> ir.Value:
    """`accel.alloc`: a scratchpad buffer of `elements` f32 at byte `offset_bytes`."""
    offset = ir.IntegerAttr.get(ir.IntegerType.get_signless(64), offset_bytes)
    op = ir.Operation.create(
        "accel.alloc", results=[scratchpad_type(elements)], attributes={"offset": offset}, loc=loc
    )
    return op.result


def dealloc(buffer: ir.Value, *, loc: ir.Location | None = None) -> ir.Operation:
    """`accel.dealloc`: release a scratchpad buffer."""
    return ir.Operation.create("accel.dealloc", operands=[buffer], loc=loc)


def dma_start(
    dst: ir.Value,
    src: ir.Value,
    ivs: Sequence[ir.Value],
    shape: Sequence[int],
    accesses: Sequence[Access],
    strides: Sequence[Sequence[int]],
    *,
    loc: ir.Location | None = None,
) -> ir.Value:
    """`accel.dma_start`: copy `src` to `dst` asynchronously; returns the token."""
    op = ir.Operation.create(
        "accel.dma_start",
        results=[token_type()],
        operands=[dst, src, *ivs],
        attributes=_view_attributes(len(ivs), shape, accesses, strides),
        loc=loc,
    )
    return op.result


def dma_wait(token: ir.Value, *, loc: ir.Location | None = None) -> ir.Operation:
    """`accel.dma_wait`: wait for the DMA transfer of `token`."""
    return ir.Operation.create("accel.dma_wait", operands=[token], loc=loc)


def matmul(
    c: ir.Value,
    a: ir.Value,
    b: ir.Value,
    ivs: Sequence[ir.Value],
    shape: Sequence[int],
    accesses: Sequence[Access],
    strides: Sequence[Sequence[int]],
    accumulate: bool,
    *,
    loc: ir.Location | None = None,
) -> ir.Operation:
    """`accel.matmul` over shape (M1, M2, N, K1, K2, K3); views [c, a, b]."""
    attributes = _view_attributes(len(ivs), shape, accesses, strides)
    attributes["accumulate"] = ir.BoolAttr.get(accumulate)
    return ir.Operation.create(
        "accel.matmul", operands=[c, a, b, *ivs], attributes=attributes, loc=loc
    )


def vector(
    kind: str | VectorKind,
    dst: ir.Value,
    sources: Sequence[ir.Value],
    ivs: Sequence[ir.Value],
    shape: Sequence[int],
    accesses: Sequence[Access],
    strides: Sequence[Sequence[int]],
    scalar: float | None = None,
    *,
    loc: ir.Location | None = None,
) -> ir.Operation:
    """`accel.vector`: dst = kind(sources..., scalar); views [dst, sources...]."""
    kind_name = kind.name.lower() if isinstance(kind, VectorKind) else kind
    if len(sources) > VECTOR_SOURCE_SEGMENTS:
        raise ValueError(f"accel.vector takes at most 3 sources, got {len(sources)}")
    attributes = _view_attributes(len(ivs), shape, accesses, strides)
    attributes["kind"] = ir.StringAttr.get(kind_name)
    present = [1 if i < len(sources) else 0 for i in range(VECTOR_SOURCE_SEGMENTS)]
    attributes["operandSegmentSizes"] = ir.DenseI32ArrayAttr.get([1, *present, len(ivs)])
    if scalar is not None:
        attributes["scalar"] = ir.FloatAttr.get_f64(float(scalar))
    return ir.Operation.create(
        "accel.vector", operands=[dst, *sources, *ivs], attributes=attributes, loc=loc
    )


def _view_attributes(
    num_ivs: int,
    shape: Sequence[int],
    accesses: Sequence[Access],
    strides: Sequence[Sequence[int]],
) -> dict[str, ir.Attribute]:
    if len(accesses) != len(strides):
        raise ValueError(f"{len(accesses)} accesses but {len(strides)} stride lists")
    maps = [ir.AffineMapAttr.get(access_map(num_ivs, access)) for access in accesses]
    return {
        "shape": ir.DenseI64ArrayAttr.get(list(shape)),
        "offsets": ir.ArrayAttr.get(maps),
        "strides": ir.ArrayAttr.get([ir.DenseI64ArrayAttr.get(list(s)) for s in strides]),
    }


# --- readers --------------------------------------------------------------------------


@dataclass(frozen=True)
class Views:
    """An accel op's memory operands (views order) and loop induction variables."""

    buffers: list[ir.Value]
    ivs: list[ir.Value]


def view_operands(op: ir.Operation | ir.OpView) -> Views:
    """Split a dma_start/matmul/vector op's operands into buffers and ivs."""
    op = op.operation
    operands = list(op.operands)
    if op.name == "accel.dma_start":
        return Views(operands[:2], operands[2:])
    if op.name == "accel.matmul":
        return Views(operands[:3], operands[3:])
    if op.name == "accel.vector":
        segments = list(ir.DenseI32ArrayAttr(op.attributes["operandSegmentSizes"]))
        num_buffers = sum(segments[:-1])
        return Views(operands[:num_buffers], operands[num_buffers:])
    raise ValueError(f"'{op.name}' has no memory views")


def read_shape(op: ir.Operation | ir.OpView) -> tuple[int, ...]:
    """The op's iteration space."""
    return tuple(ir.DenseI64ArrayAttr(op.operation.attributes["shape"]))


def read_strides(op: ir.Operation | ir.OpView) -> list[tuple[int, ...]]:
    """Per view, the element stride of every iteration-space dimension."""
    strides = ir.ArrayAttr(op.operation.attributes["strides"])
    return [tuple(ir.DenseI64ArrayAttr(s)) for s in strides]


def read_accesses(op: ir.Operation | ir.OpView) -> list[Access]:
    """Per view, the access `(c0, coeffs)` parsed from its affine map."""
    offsets = ir.ArrayAttr(op.operation.attributes["offsets"])
    return [linear_access(ir.AffineMapAttr(attr).value) for attr in offsets]


def read_kind(op: ir.Operation | ir.OpView) -> str:
    """An accel.vector's kind (a lowercased `VectorKind` name)."""
    return ir.StringAttr(op.operation.attributes["kind"]).value


def read_scalar(op: ir.Operation | ir.OpView) -> float | None:
    """An accel.vector's scalar source, if it has one."""
    scalar = op.operation.attributes.get("scalar")
    return None if scalar is None else ir.FloatAttr(scalar).value


def vector_arity(kind: str) -> int:
    """Number of sources (buffers plus scalar) a vector kind reads."""
    return VECTOR_ARITY[VECTOR_KINDS[kind]]
