"""Per-op structural rules of the accel dialect (used by `verify.py`).

Each `_check_*` returns the problems of one op as messages that say what is wrong and
what to do; an empty list means the op is well formed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch_mlir import ir

from polyfuse.dialects import accel

BYTES_PER_ELEMENT = 4


@dataclass(frozen=True)
class AccelTarget:
    """The limits the verifier checks, from the module's `accel.target` attribute."""

    name: str
    scratchpad_bytes: int
    pe_rows: int
    pe_cols: int


def read_target(module: ir.Operation) -> tuple[AccelTarget | None, str]:
    """The module's `accel.target`, or (None, problem) if it is malformed."""
    if "accel.target" not in module.attributes:
        return None, ""
    attr = module.attributes["accel.target"]
    usage = (
        'accel.target must be a dictionary {name = "...", scratchpad_bytes = N : i64, '
        "pe_rows = N : i64, pe_cols = N : i64} with positive integers"
    )
    if not isinstance(attr, ir.DictAttr):
        return None, usage
    values: dict[str, int] = {}
    for key in ("scratchpad_bytes", "pe_rows", "pe_cols"):
        value = _entry(attr, key)
        if not isinstance(value, ir.IntegerAttr) or value.value <= 0:
            return None, f"{usage}; '{key}' is missing or not a positive integer"
        values[key] = value.value
    name = _entry(attr, "name")
    name_text = name.value if isinstance(name, ir.StringAttr) else "<unnamed>"
    return AccelTarget(name_text, **values), ""


def _entry(attr: ir.DictAttr, key: str) -> ir.Attribute | None:
    # Not `attr.get(key)`: DictAttr.get is the constructor of a new DictAttr.
    return attr[key] if key in attr else None  # noqa: SIM401


def check_op(op: ir.Operation, target: AccelTarget | None) -> list[str]:
    """The structural problems of one accel op (bounds and tokens are checked later)."""
    checker = _CHECKERS.get(op.name)
    return checker(op, target) if checker else []


# --- memory ---------------------------------------------------------------------------


def _buffer_problem(role: str, type_: ir.Type, want_scratchpad: bool) -> str | None:
    if not isinstance(type_, ir.MemRefType):
        return f"{role} must be a memref, got {type_}"
    if not isinstance(type_.element_type, ir.F32Type):
        return f"{role} {type_} must hold f32 elements (all accelerator data is f32)"
    if not type_.has_static_shape:
        return f"{role} {type_} must have a static shape"
    space = accel.memory_space(type_)
    if want_scratchpad:
        if space != accel.SCRATCHPAD_MEMORY_SPACE:
            return (
                f"{role} {type_} must be a scratchpad buffer (memory space 1); "
                "only accel.dma_start reads or writes DRAM"
            )
        if type_.rank != 1:
            return f"{role} {type_} must be a 1-D scratchpad buffer memref<N x f32, 1>"
        return None
    if space != 0:
        return f"{role} {type_} must be in DRAM (the default memory space)"
    strides, offset = type_.get_strides_and_offset()
    if offset != 0 or list(strides) != _row_major_strides(type_.shape):
        return f"{role} {type_} must have the identity (row-major, offset 0) layout"
    return None


def _row_major_strides(shape: list[int]) -> list[int]:
    strides = [1] * len(shape)
    for dim in range(len(shape) - 2, -1, -1):
        strides[dim] = strides[dim + 1] * shape[dim + 1]
    return strides


# --- views ----------------------------------------------------------------------------


def _check_views(op: ir.Operation, roles: list[str]) -> list[str]:
    """shape, offsets and strides: one access map and one stride list per buffer."""
    attributes = op.attributes
    shape_attr = attributes["shape"]
    if not isinstance(shape_attr, ir.DenseI64ArrayAttr):
        return [f"shape must be array<i64: ...>, got {shape_attr}"]
    shape = list(shape_attr)
    if not 1 <= len(shape) <= accel.MAX_RANK:
        return [f"shape {shape} has rank {len(shape)}; use 1 to {accel.MAX_RANK} dims"]
    if any(size <= 0 for size in shape):
        return [f"shape {shape} must have positive sizes"]
    num_ivs = len(accel.view_operands(op).ivs)
    messages = []
    offsets = attributes["offsets"]
    strides = attributes["strides"]
    if not isinstance(offsets, ir.ArrayAttr) or len(offsets) != len(roles):
        messages.append(
            f"offsets must list one affine map per buffer ({', '.join(roles)}), got {offsets}"
        )
    else:
        for role, attr in zip(roles, offsets, strict=True):
            messages += _map_problems(role, attr, num_ivs)
    if not isinstance(strides, ir.ArrayAttr) or len(strides) != len(roles):
        messages.append(
            f"strides must list one array<i64> per buffer ({', '.join(roles)}), got {strides}"
        )
    else:
        for role, attr in zip(roles, strides, strict=True):
            if not isinstance(attr, ir.DenseI64ArrayAttr) or len(attr) != len(shape):
                messages.append(
                    f"{role} strides {attr} must be array<i64> with one stride per dim of "
                    f"shape {shape}"
                )
    return messages


def _map_problems(role: str, attr: ir.Attribute, num_ivs: int) -> list[str]:
    if not isinstance(attr, ir.AffineMapAttr):
        return [f"{role} offset {attr} must be an affine map"]
    map_ = attr.value
    if map_.n_dims != num_ivs:
        return [
            f"{role} offset map {map_} has {map_.n_dims} dims but the op has {num_ivs} "
            "ivs operands; give the map one dim per iv"
        ]
    try:
        accel.linear_access(map_)
    except ValueError as error:
        return [f"{role} offset map {map_}: {error}; use c0 + sum(c_i * d_i)"]
    return []


# --- ops ------------------------------------------------------------------------------


def _check_alloc(op: ir.Operation, target: AccelTarget | None) -> list[str]:
    type_ = op.result.type
    problem = _buffer_problem("result", type_, want_scratchpad=True)
    if problem:
        return [problem]
    offset = ir.IntegerAttr(op.attributes["offset"]).value
    size = math.prod(ir.MemRefType(type_).shape) * BYTES_PER_ELEMENT
    if offset < 0 or offset % BYTES_PER_ELEMENT:
        return [f"offset {offset} must be a non-negative multiple of {BYTES_PER_ELEMENT} bytes"]
    if target and offset + size > target.scratchpad_bytes:
        return [
            f"buffer at bytes {offset}..{offset + size - 1} ({size} bytes) exceeds the "
            f"{target.scratchpad_bytes}-byte scratchpad of target '{target.name}'; "
            "use smaller tiles or lower offsets"
        ]
    return []


def _check_dealloc(op: ir.Operation, target: AccelTarget | None) -> list[str]:
    problem = _buffer_problem("buffer", op.operands[0].type, want_scratchpad=True)
    return [problem] if problem else []


def _check_dma_start(op: ir.Operation, target: AccelTarget | None) -> list[str]:
    dst, src = (op.operands[0].type, op.operands[1].type)
    dst_spm, src_spm = accel.is_scratchpad(dst), accel.is_scratchpad(src)
    if dst_spm == src_spm:
        where = "the scratchpad" if dst_spm else "DRAM"
        return [
            f"copies {src} to {dst}, both in {where}; exactly one side must be a "
            "scratchpad buffer (memory space 1) and the other a DRAM memref"
        ]
    messages = [
        problem
        for role, type_, spm in (("destination", dst, dst_spm), ("source", src, src_spm))
        if (problem := _buffer_problem(role, type_, want_scratchpad=spm))
    ]
    return messages or _check_views(op, ["destination", "source"])


def _check_matmul(op: ir.Operation, target: AccelTarget | None) -> list[str]:
    roles = ["C", "A", "B"]
    messages = [
        problem
        for role, value in zip(roles, list(op.operands)[:3], strict=True)
        if (problem := _buffer_problem(role, value.type, want_scratchpad=True))
    ]
    shape = list(ir.DenseI64ArrayAttr(op.attributes["shape"]))
    if len(shape) != accel.MATMUL_RANK:
        messages.append(f"shape {shape} must have 6 dims (M1, M2, N, K1, K2, K3)")
    messages = messages or _check_views(op, roles)
    if messages:
        return messages
    # C[m1,m2,n] does not depend on k, A[m1,m2,k] not on n, B[k,n] not on m.
    unused = {"C": (3, 4, 5), "A": (2,), "B": (0, 1)}
    dim_names = ["M1", "M2", "N", "K1", "K2", "K3"]
    for role, strides in zip(roles, accel.read_strides(op), strict=True):
        bad = [dim_names[d] for d in unused[role] if strides[d] != 0]
        if bad:
            messages.append(
                f"{role} strides {list(strides)} must be 0 on {', '.join(bad)} "
                f"({role} does not depend on those dims)"
            )
    if target:
        rows, cols = shape[3] * shape[4] * shape[5], shape[2]
        if rows > target.pe_rows:
            messages.append(
                f"reduces over K1*K2*K3 = {rows} but target '{target.name}' has "
                f"{target.pe_rows} PE rows; split the reduction into tiles of at most "
                f"{target.pe_rows} and accumulate"
            )
        if cols > target.pe_cols:
            messages.append(
                f"N = {cols} exceeds the {target.pe_cols} PE columns of target "
                f"'{target.name}'; tile N by at most {target.pe_cols}"
            )
    return messages


def _check_vector(op: ir.Operation, target: AccelTarget | None) -> list[str]:
    kind = accel.read_kind(op)
    if kind not in accel.VECTOR_KINDS:
        return [f"kind '{kind}' is unknown; use one of: {', '.join(sorted(accel.VECTOR_KINDS))}"]
    segments = list(ir.DenseI32ArrayAttr(op.attributes["operandSegmentSizes"]))
    present = segments[1:-1]
    if present != sorted(present, reverse=True):
        return [f"sources must fill segments a, b, c in order, got operandSegmentSizes {segments}"]
    scalar = op.attributes.get("scalar")
    if scalar is not None and not isinstance(scalar, ir.FloatAttr):
        return [f"scalar must be a float attribute (e.g. 0.0 : f64), got {scalar}"]
    arity = accel.vector_arity(kind)
    num_sources = sum(present)
    expected = arity - (1 if scalar is not None else 0)
    if num_sources != expected:
        with_scalar = " plus the scalar" if scalar is not None else ""
        return [
            f"kind '{kind}' reads {arity} sources, so it needs {expected} buffer "
            f"source(s){with_scalar}, got {num_sources}"
        ]
    roles = ["destination", *[f"source {i}" for i in range(num_sources)]]
    buffers = accel.view_operands(op).buffers
    messages = [
        problem
        for role, value in zip(roles, buffers, strict=True)
        if (problem := _buffer_problem(role, value.type, want_scratchpad=True))
    ]
    return messages or _check_views(op, roles)


_Checker = Callable[[ir.Operation, AccelTarget | None], list[str]]
_CHECKERS: dict[str, _Checker] = {
    "accel.alloc": _check_alloc,
    "accel.dealloc": _check_dealloc,
    "accel.dma_start": _check_dma_start,
    "accel.matmul": _check_matmul,
    "accel.vector": _check_vector,
}
