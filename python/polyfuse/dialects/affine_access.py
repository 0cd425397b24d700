"""Linear access functions as one-result affine maps.

An access `(c0, coeffs)` is the element offset `c0 + sum(coeffs[l] * ivs[l])` of a view
of memory, a linear function of the enclosing loops' induction variables. The accel
dialect stores it as the affine map `(d0, ...) -> (c0 + sum(coeffs[l] * d_l))`.
"""

from __future__ import annotations

from torch_mlir import ir

Access = tuple[int, tuple[int, ...]]
"""`(c0, coeffs)`: element offset `c0 + sum(coeffs[l] * ivs[l])`."""


def access_map(num_ivs: int, access: Access) -> ir.AffineMap:
    """The one-result affine map `(d0, ...) -> (c0 + sum(coeffs[l] * d_l))`."""
    c0, coeffs = access
    if len(coeffs) != num_ivs:
        raise ValueError(f"access {access} has {len(coeffs)} coefficients for {num_ivs} ivs")
    expr: ir.AffineExpr | None = None
    for dim, coeff in enumerate(coeffs):
        if coeff == 0:
            continue
        term: ir.AffineExpr = ir.AffineDimExpr.get(dim)
        if coeff != 1:
            term = ir.AffineMulExpr.get(term, ir.AffineConstantExpr.get(coeff))
        expr = term if expr is None else ir.AffineAddExpr.get(expr, term)
    if expr is None:
        expr = ir.AffineConstantExpr.get(c0)
    elif c0 != 0:
        expr = ir.AffineAddExpr.get(expr, ir.AffineConstantExpr.get(c0))
    return ir.AffineMap.get(num_ivs, 0, [expr])


def linear_access(map_: ir.AffineMap) -> Access:
    """Parse a one-result linear affine map of dims into `(c0, coeffs)`.

    Raises ValueError if the map has symbols, several results, or is not linear
    (mod, floordiv, ceildiv, or a product of two dims).
    """
    if map_.n_symbols != 0 or len(map_.results) != 1:
        raise ValueError(f"expected one result and no symbols, got {map_}")
    c0, coeffs = _linear_form(map_.results[0], map_.n_dims)
    return c0, tuple(coeffs)


def _linear_form(expr: ir.AffineExpr, num_dims: int) -> tuple[int, list[int]]:
    if isinstance(expr, ir.AffineConstantExpr):
        return expr.value, [0] * num_dims
    if isinstance(expr, ir.AffineDimExpr):
        coeffs = [0] * num_dims
        coeffs[expr.position] = 1
        return 0, coeffs
    if isinstance(expr, ir.AffineAddExpr):
        lhs_c0, lhs = _linear_form(expr.lhs, num_dims)
        rhs_c0, rhs = _linear_form(expr.rhs, num_dims)
        return lhs_c0 + rhs_c0, [x + y for x, y in zip(lhs, rhs, strict=True)]
    if isinstance(expr, ir.AffineMulExpr):
        lhs_c0, lhs = _linear_form(expr.lhs, num_dims)
        rhs_c0, rhs = _linear_form(expr.rhs, num_dims)
        if not any(rhs):
            return lhs_c0 * rhs_c0, [x * rhs_c0 for x in lhs]
        if not any(lhs):
            return lhs_c0 * rhs_c0, [x * lhs_c0 for x in rhs]
    raise ValueError(f"'{expr}' is not a linear function of the loop induction variables")
