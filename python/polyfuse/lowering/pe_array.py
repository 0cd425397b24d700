"""Contractions (matmul, batched matmul, convolution) on the PE array.

A linalg.generic whose body is `out + a * b` is a contraction. Its loops are classified
by the operands they index:

    M  in A and C only     (output pixels / rows: streamed through the array)
    N  in B and C only     (output channels / columns: the array's columns)
    K  in A and B only     (reduction: the array's rows)
    batch  in all three

B is held stationary in the array (weight-stationary): one `accel.matmul` covers up
to two M loops, one block of at most `cols` along one N loop, and K loops whose block
product is at most `rows`. The remaining loops of the tile become issue loops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch_mlir import ir

from polyfuse.analysis.divisors import divisors
from polyfuse.analysis.operators import GenericOperator
from polyfuse.dialects import accel
from polyfuse.lowering.tile_compute import (
    TileView,
    outer_coefficients,
    outer_induction_variables,
    with_issue_loops,
)


@dataclass(frozen=True)
class Contraction:
    a: int  # input index of A (streamed)
    b: int  # input index of B (stationary)
    m: tuple[int, ...]
    n: tuple[int, ...]
    k: tuple[int, ...]
    batch: tuple[int, ...]


def is_multiply_accumulate(generic: GenericOperator) -> bool:
    """Body is exactly `yield out + in0 * in1` (either operand order)."""
    ops = [op.operation for op in generic.body.operations]
    if len(ops) != 3 or len(generic.inputs) != 2 or len(generic.outputs) != 1:
        return False
    mul, add, yield_ = ops
    if mul.name != "arith.mulf" or add.name != "arith.addf" or yield_.name != "linalg.yield":
        return False
    ins = {generic.inputs[0].block_arg, generic.inputs[1].block_arg}
    if set(mul.operands) != ins or len(ins) != 2:
        return False
    out = generic.outputs[0].block_arg
    return set(add.operands) == {mul.result, out} and yield_.operands[0] == add.result


def classify_contraction(generic: GenericOperator, weight_inputs: set[int]) -> Contraction | None:
    """Loop roles of a multiply-accumulate generic, or None if it is not a contraction."""
    if not is_multiply_accumulate(generic):
        return None
    uses = [operand.access.loops_used() for operand in generic.inputs]
    out_uses = generic.outputs[0].access.loops_used()
    exclusive = [
        [dim for dim in out_uses if dim in uses[i] and dim not in uses[1 - i]] for i in range(2)
    ]

    def size(loops: list[int]) -> int:
        total = 1
        for loop in loops:
            total *= generic.extents[loop]
        return total

    # The stationary operand is the weight when there is one, else the smaller side.
    if weight_inputs == {0}:
        b = 0
    elif weight_inputs == {1}:
        b = 1
    else:
        b = 0 if size(exclusive[0]) < size(exclusive[1]) else 1
    a = 1 - b
    m, n, k, batch = [], [], [], []
    for loop in range(generic.num_loops):
        in_a, in_b, in_c = loop in uses[a], loop in uses[b], loop in out_uses
        if in_a and in_b and in_c:
            batch.append(loop)
        elif in_a and in_c:
            m.append(loop)
        elif in_b and in_c:
            n.append(loop)
        elif in_a and in_b and generic.is_reduction[loop]:
            k.append(loop)
        elif generic.extents[loop] != 1:
            return None
    if not k:
        return None
    return Contraction(a, b, tuple(m), tuple(n), tuple(k), tuple(batch))


def largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in divisors(n) if d <= limit)


@dataclass(frozen=True)
class IssuePlan:
    """How one tile's contraction is cut into PE-array instructions."""

    m_inner: tuple[int, ...]  # up to two M loops inside the instruction
    n_inner: int | None
    n_block: int
    k_inner: tuple[int, ...]  # up to three K loops inside the instruction
    k_block: int  # block of k_inner[0]
    issue: tuple[tuple[int, int], ...]  # (loop, step) of each issue loop


def plan_issue(contraction: Contraction, tile: tuple[int, ...], rows: int, cols: int) -> IssuePlan:
    active = [dim for dim in range(len(tile)) if tile[dim] > 1]
    m_loops = [dim for dim in contraction.m if dim in active]
    n_loops = [dim for dim in contraction.n if dim in active]
    k_loops = sorted((dim for dim in contraction.k if dim in active), key=lambda dim: -tile[dim])
    issue: list[tuple[int, int]] = [(dim, 1) for dim in contraction.batch if dim in active]
    issue += [(dim, 1) for dim in m_loops[:-2]]
    issue += [(dim, 1) for dim in n_loops[:-1]]
    m_inner = tuple(m_loops[-2:])
    n_inner = n_loops[-1] if n_loops else None
    n_block = largest_divisor_at_most(tile[n_inner], cols) if n_inner is not None else 1
    if n_inner is not None and n_block < tile[n_inner]:
        issue.append((n_inner, n_block))
    k_inner: list[int] = []
    k_block = 1
    if k_loops:
        first = k_loops[0]
        k_block = largest_divisor_at_most(tile[first], rows)
        k_inner.append(first)
        if k_block < tile[first]:
            issue.append((first, k_block))
        product = k_block
        for loop in k_loops[1:]:
            if k_block == tile[first] and len(k_inner) < 3 and product * tile[loop] <= rows:
                k_inner.append(loop)
                product *= tile[loop]
            else:
                issue.append((loop, 1))
    return IssuePlan(m_inner, n_inner, n_block, tuple(k_inner), k_block, tuple(issue))


def emit_contraction(
    plan: IssuePlan,
    tile: tuple[int, ...],
    c: tuple[ir.Value, tuple[int, ...]],
    a: tuple[ir.Value, tuple[int, ...]],
    b: tuple[ir.Value, tuple[int, ...]],
    bases: Sequence[TileView] = (),
) -> None:
    """The tile's accel.matmul instructions; each view is (buffer, per-loop strides).

    `bases`, when given, says where the c, a and b views start (their `offset` and
    `outer` fields; a view into a resident tensor starts at an iv-dependent offset).
    """
    m = list(plan.m_inner)
    m_sizes = [tile[dim] for dim in m]
    while len(m) < 2:
        m.insert(0, -1)
        m_sizes.insert(0, 1)
    k = list(plan.k_inner)
    k_sizes = [plan.k_block] + [tile[dim] for dim in k[1:]] if k else []
    while len(k) < 3:
        k.append(-1)
        k_sizes.append(1)
    shape = [*m_sizes, plan.n_block, *k_sizes]
    dims = [m[0], m[1], plan.n_inner if plan.n_inner is not None else -1, *k]

    def strides_of(view: tuple[int, ...], include: set[str]) -> list[int]:
        roles = ["m", "m", "n", "k", "k", "k"]
        return [
            view[loop] if loop >= 0 and role in include else 0
            for loop, role in zip(dims, roles, strict=True)
        ]

    c_strides = strides_of(c[1], {"m", "n"})
    a_strides = strides_of(a[1], {"m", "k"})
    b_strides = strides_of(b[1], {"n", "k"})

    starts = list(bases) or [TileView(None) for _ in range(3)]
    outer_ivs = outer_induction_variables(starts)

    def body(ivs: list[ir.Value]) -> None:
        accesses = [
            (
                start.offset,
                (
                    *outer_coefficients(start, outer_ivs),
                    *(view[1][loop] * step for loop, step in plan.issue),
                ),
            )
            for view, start in zip((c, a, b), starts, strict=True)
        ]
        accel.matmul(
            c[0],
            a[0],
            b[0],
            [*outer_ivs, *ivs],
            shape,
            accesses,
            [c_strides, a_strides, b_strides],
            accumulate=True,
        )

    with_issue_loops([tile[loop] // step for loop, step in plan.issue], body)
