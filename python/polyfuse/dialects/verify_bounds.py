"""Static bounds of accel views: the range of elements a view touches.

When every induction variable an accel op uses comes from a loop with constant bounds
(`affine.for`, or `scf.for` over `arith.constant`s) or is itself an `arith.constant`,
the smallest and largest element each view touches are known exactly, because a view's
offset is linear in the ivs and in the iteration index.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch_mlir import ir

from polyfuse.dialects.affine_access import Access

IvRange = tuple[int, int]
"""Smallest and largest value of an induction variable (empty if first > second)."""


def iv_range(value: ir.Value) -> IvRange | None:
    """The values `value` takes, if it is a constant-bound loop iv or a constant."""
    value = value.maybe_downcast()
    if isinstance(value, ir.OpResult):
        return _constant_range(value.owner)
    if not isinstance(value, ir.BlockArgument) or value.arg_number != 0:
        return None
    loop = value.owner.owner
    if loop is None:
        return None
    if loop.name == "affine.for":
        return _affine_for_range(loop.operation)
    if loop.name == "scf.for":
        return _scf_for_range(loop.operation)
    return None


def view_range(
    access: Access, strides: Sequence[int], shape: Sequence[int], ivs: Sequence[IvRange]
) -> IvRange:
    """Smallest and largest element offset of one view over all iterations."""
    c0, coeffs = access
    low = high = c0
    for coeff, (iv_low, iv_high) in zip(coeffs, ivs, strict=True):
        low += min(coeff * iv_low, coeff * iv_high)
        high += max(coeff * iv_low, coeff * iv_high)
    for stride, size in zip(strides, shape, strict=True):
        low += min(0, stride * (size - 1))
        high += max(0, stride * (size - 1))
    return low, high


def _constant_range(op: ir.Operation | ir.OpView) -> IvRange | None:
    value = _constant_int(op)
    return None if value is None else (value, value)


def _constant_int(op: ir.Operation | ir.OpView) -> int | None:
    if op.name != "arith.constant":
        return None
    attr = op.operation.attributes["value"]
    return attr.value if isinstance(attr, ir.IntegerAttr) else None


def _affine_for_range(loop: ir.Operation) -> IvRange | None:
    attributes = loop.attributes
    view = loop.opview
    if len(view.lowerBoundOperands) or len(view.upperBoundOperands):
        return None  # bounds depend on values
    lower = _constant_results(ir.AffineMapAttr(attributes["lowerBoundMap"]).value)
    upper = _constant_results(ir.AffineMapAttr(attributes["upperBoundMap"]).value)
    if lower is None or upper is None:
        return None
    step = ir.IntegerAttr(attributes["step"]).value
    # The lower bound is the max of the map's results, the upper bound the min.
    return _trip_range(max(lower), min(upper), step)


def _scf_for_range(loop: ir.Operation) -> IvRange | None:
    bounds = []
    for operand in list(loop.operands)[:3]:  # lowerBound, upperBound, step
        operand = operand.maybe_downcast()
        if not isinstance(operand, ir.OpResult):
            return None
        value = _constant_int(operand.owner)
        if value is None:
            return None
        bounds.append(value)
    return _trip_range(*bounds)


def _constant_results(map_: ir.AffineMap) -> list[int] | None:
    results = list(map_.results)
    if not results or not all(isinstance(r, ir.AffineConstantExpr) for r in results):
        return None
    return [r.value for r in results]


def _trip_range(lower: int, upper: int, step: int) -> IvRange:
    if step <= 0 or upper <= lower:
        return (0, -1)
    return lower, lower + ((upper - 1 - lower) // step) * step
