"""Compute instructions over one tile: views of tile buffers and issue loops.

A `TileView` is a scratchpad buffer seen through per-loop element strides (stride 0 on
the loops the operand does not depend on), or a scalar. An instruction covers at most
six loops; loops beyond that become `affine.for` issue loops inside the tile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch_mlir import ir
from torch_mlir.dialects import affine

from polyfuse.dialects import accel
from polyfuse.runtime.isa import MAX_DIMS


@dataclass(frozen=True)
class TileView:
    buffer: ir.Value | None  # None: the scalar `scalar`
    strides: tuple[int, ...] = ()
    scalar: float = 0.0
    # Where the view starts: `offset` elements plus coefficient x iv for every
    # (iv, coefficient) of enclosing loops (a view into a resident tensor, issue 4).
    offset: int = 0
    outer: tuple[tuple[ir.Value, int], ...] = ()

    @property
    def is_scalar(self) -> bool:
        return self.buffer is None


def split_issue_dims(
    tile: Sequence[int], loops: Sequence[int], max_dims: int = MAX_DIMS
) -> tuple[list[int], list[int]]:
    """(issue loops, instruction loops) among `loops`, dropping loops of tile size 1."""
    active = [dim for dim in loops if tile[dim] > 1]
    if len(active) <= max_dims:
        return [], active
    return active[: len(active) - max_dims], active[len(active) - max_dims :]


def outer_induction_variables(views: Sequence[TileView]) -> list[ir.Value]:
    """The enclosing-loop ivs any of `views` starts at, in order of first appearance."""
    ivs: list[ir.Value] = []
    for view in views:
        for iv, _ in view.outer:
            if iv not in ivs:
                ivs.append(iv)
    return ivs


def outer_coefficients(view: TileView, ivs: Sequence[ir.Value]) -> list[int]:
    """The view's coefficient of each iv of `ivs` (0 for those it does not depend on)."""
    coefficients = [0] * len(ivs)
    for iv, coefficient in view.outer:
        coefficients[list(ivs).index(iv)] += coefficient
    return coefficients


def with_issue_loops(trip_counts: Sequence[int], body: Callable[[list[ir.Value]], None]) -> None:
    """Emit nested affine.for loops with the given trip counts around `body(ivs)`."""
    ivs: list[ir.Value] = []

    def level(index: int) -> None:
        if index == len(trip_counts):
            body(list(ivs))
            return
        loop = affine.AffineForOp(0, trip_counts[index])
        with ir.InsertionPoint(loop.body):
            ivs.append(loop.induction_variable)
            level(index + 1)
            ivs.pop()
            affine.AffineYieldOp([])

    level(0)


def emit_vector(kind: str, dst: TileView, sources: Sequence[TileView], tile: Sequence[int]) -> None:
    """dst = kind(sources) over the whole tile; a scalar source must come last."""
    scalars = [s for s in sources if s.is_scalar]
    assert len(scalars) <= 1 and (not scalars or sources[-1].is_scalar)
    buffers = [s for s in sources if not s.is_scalar]
    views = [dst, *buffers]
    issue, inner = split_issue_dims(tile, range(len(tile)))
    shape = [tile[dim] for dim in inner] or [1]

    outer_ivs = outer_induction_variables(views)

    def body(ivs: list[ir.Value]) -> None:
        accesses = [
            (v.offset, (*outer_coefficients(v, outer_ivs), *(v.strides[dim] for dim in issue)))
            for v in views
        ]
        strides = [[v.strides[dim] for dim in inner] or [0] for v in views]
        accel.vector(
            kind,
            dst.buffer,
            [v.buffer for v in buffers],
            [*outer_ivs, *ivs],
            shape,
            accesses,
            strides,
            scalar=scalars[0].scalar if scalars else None,
        )

    with_issue_loops([tile[dim] for dim in issue], body)
