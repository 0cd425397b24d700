"""Affine maps of linalg indexing as integer matrices.

A linalg indexing map `(d0, d1, ...) -> (e0, e1, ...)` whose results are affine in the
loop dims becomes `AffineAccess(coeffs, consts)`: tensor index r = sum_l coeffs[r][loop_dim]·d_l
+ consts[r]. That is all the tiling and footprint arithmetic needs; the polyhedral
analysis proper (issue 4) builds isl maps from the same matrices.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch_mlir import ir

from polyfuse.errors import UnsupportedError


@dataclass(frozen=True)
class AffineAccess:
    """tensor index r = sum_l coeffs[r][loop_dim] * loop_l + consts[r]."""

    coeffs: tuple[tuple[int, ...], ...]
    consts: tuple[int, ...]
    num_loops: int

    @property
    def rank(self) -> int:
        return len(self.consts)

    def loops_used(self) -> frozenset[int]:
        return frozenset(
            loop_dim for row in self.coeffs for loop_dim, c in enumerate(row) if c != 0
        )


def linear_expr(expr: ir.AffineExpr, num_dims: int) -> tuple[list[int], int]:
    """(coefficients per dim, constant) of a linear affine expression."""
    if isinstance(expr, ir.AffineDimExpr):
        coeffs = [0] * num_dims
        coeffs[ir.AffineDimExpr(expr).position] = 1
        return coeffs, 0
    if isinstance(expr, ir.AffineConstantExpr):
        return [0] * num_dims, ir.AffineConstantExpr(expr).value
    if isinstance(expr, ir.AffineAddExpr):
        add = ir.AffineAddExpr(expr)
        lc, lk = linear_expr(add.lhs, num_dims)
        rc, rk = linear_expr(add.rhs, num_dims)
        return [a + b for a, b in zip(lc, rc, strict=True)], lk + rk
    if isinstance(expr, ir.AffineMulExpr):
        mul = ir.AffineMulExpr(expr)
        lc, lk = linear_expr(mul.lhs, num_dims)
        rc, rk = linear_expr(mul.rhs, num_dims)
        if any(rc):
            if any(lc):
                raise UnsupportedError(f"non-linear affine expression {expr}")
            lc, lk, rc, rk = rc, rk, lc, lk
        return [c * rk for c in lc], lk * rk
    raise UnsupportedError(
        f"affine expression {expr} is not linear (floordiv, ceildiv, mod and symbols "
        "are not supported in indexing maps)"
    )


def access_from_map(affine_map: ir.AffineMap) -> AffineAccess:
    num_dims = affine_map.n_dims
    coeffs, consts = [], []
    for result in affine_map.results:
        row, const = linear_expr(result, num_dims)
        coeffs.append(tuple(row))
        consts.append(const)
    return AffineAccess(tuple(coeffs), tuple(consts), num_dims)
