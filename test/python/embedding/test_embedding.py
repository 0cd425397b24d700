"""The embedding problem: hand-checked costs, the solver's optimum, numerics of every kind."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from polyfuse.embedding import (
    ConvParams,
    Embedding,
    Part,
    batched_matmul,
    conv2d,
    cycles_of,
    enumerate_embeddings,
    fixed_embedding,
    instruction_model,
    matmul,
    solve,
)
from polyfuse.embedding.embedding import check_embedding
from polyfuse.embedding.layout import layout_cost
from polyfuse.embedding.lower import lower, run, trace_cycles
from polyfuse.embedding.operators import ContractionOp
from polyfuse.targets import load_target


@pytest.fixture(scope="module")
def gemmini() -> tuple:  # type: ignore[type-arg]
    target = load_target("gemmini")
    return target, instruction_model(target)


def operands(op: ContractionOp, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lhs = rng.integers(-3, 4, size=op.lhs.shape).astype(np.float32)
    rhs = rng.integers(-3, 4, size=op.rhs.shape).astype(np.float32)
    return lhs, rhs


def test_instruction_models(vta, gemmini) -> None:  # type: ignore[no-untyped-def]
    assert (vta[1].batch, vta[1].block_in, vta[1].block_out, vta[1].fill_cycles) == (1, 16, 16, 0)
    assert (gemmini[1].block_in, gemmini[1].block_out, gemmini[1].fill_cycles) == (16, 16, 46)
    # A partial block costs a full one.
    assert vta[1].instruction_cycles(rows=5, cols=1, depth=1) == 5
    assert gemmini[1].instruction_cycles(rows=5, cols=17, depth=16) == 2 * (5 + 46)


def test_gemv_by_hand(vta, gemmini) -> None:  # type: ignore[no-untyped-def]
    """C[300, 1] = A[300, 256] @ B[256, 1] on a 1x16x16 instruction.

    Fixed: 300 rows stream, K = 256 is 16 blocks, N = 1 pads to one 16-wide block:
    300 * 16 * 1 = 4800 cycles, 1/16 of the MACs useful. Transposed: the single column
    streams, M = 300 pads to 19 blocks: 1 * 16 * 19 = 304 cycles.
    """
    op = matmul(300, 1, 256)
    _, instruction = vta
    assert cycles_of(fixed_embedding(op), instruction) == 4800
    solution = solve(op, instruction)
    assert solution.cycles == 304
    assert solution.embedding.transposed
    assert solution.optimal
    # Gemmini (weight-stationary: 16 cycles of preload + 30 of fill and drain per block,
    # at most 1024 rows per issue): fixed = 16 blocks * (300 + 46); streaming the one
    # column would cost 16 * 19 * (1 + 46), so the solver keeps the fixed orientation.
    assert cycles_of(fixed_embedding(op), gemmini[1]) == 16 * (300 + 46)
    assert solve(op, gemmini[1]).cycles == 16 * (300 + 46)


def test_conv_by_hand(vta) -> None:  # type: ignore[no-untyped-def]
    """3x3 conv, 3 input channels, 16 output channels, 8x8 output.

    Fixed: channels padded 3 -> 16, (r, s) issue loops: 9 * 64 * 1 * 1 = 576 cycles.
    im2col merges (c, r, s) = 27 -> 2 blocks: 64 * 2 * 1 = 128 cycles.
    """
    op = conv2d(ConvParams(1, 3, 8, 8, 16, 3, 3, pad=(1, 1)))
    _, instruction = vta
    assert cycles_of(fixed_embedding(op), instruction) == 576
    solution = solve(op, instruction)
    assert solution.cycles == 128
    assert {p.dim for p in solution.embedding.block_in} == {"c", "r", "s"}
    cost = layout_cost(op, solution.embedding, instruction)
    # X is im2col'd whether it streams or is the stationary operand.
    assert "im2col" in (cost.streamed, cost.stationary)


def test_matmul_enumeration_is_complete(vta) -> None:  # type: ignore[no-untyped-def]
    # m: stream or loop, n: block_out or loop, k: block_in or loop, both orientations.
    found = enumerate_embeddings(matmul(40, 24, 48), vta[1])
    assert len(found) == 16
    assert len({e.describe() for e, _ in found}) == 16


def brute_force(op: ContractionOp, transposed: bool) -> list[Embedding]:
    """Every legal embedding, by exhaustive enumeration in Python (independent of CP-SAT)."""
    lhs_slot, rhs_slot = ("block_out", "stream") if transposed else ("stream", "block_out")
    choices = []
    for dim, extent in op.dims:
        if extent == 1:
            continue
        role = op.role(dim)
        if role == "batch":
            choices.append([(dim, "pack", p) for p in range(1, extent + 1) if extent % p == 0])
            continue
        slot = {"lhs": lhs_slot, "rhs": rhs_slot, "reduction": "block_in"}[role]
        choices.append([(dim, slot, extent), (dim, "loops", extent)])
    found = []
    for combo in itertools.product(*choices):
        slots: dict[str, list[Part]] = {
            s: [] for s in ("stream", "block_in", "block_out", "diagonal", "loops")
        }
        for dim, slot, value in combo:
            extent = op.extents[dim]
            if slot != "pack":
                slots[slot].append(Part(dim, extent))
                continue
            if value > 1:
                slots["diagonal"].append(Part(dim, value))
            if value < extent:
                slots["loops"].append(Part(dim, extent // value, value))
        if len(slots["loops"]) <= 5:
            found.append(
                Embedding(
                    transposed,
                    *(
                        tuple(slots[s])
                        for s in ("stream", "block_in", "block_out", "diagonal", "loops")
                    ),
                )
            )
    return found


@pytest.mark.parametrize(
    "op",
    [
        matmul(35, 70, 100),
        batched_matmul(6, 10, 20, 9),
        conv2d(
            ConvParams(2, 12, 9, 9, 20, 3, 2, stride=(2, 1), pad=(1, 0), dilation=(1, 2), groups=4)
        ),
        conv2d(ConvParams(1, 24, 10, 10, 24, 3, 3, pad=(1, 1), groups=24)),
    ],
    ids=lambda op: op.label,
)
@pytest.mark.parametrize("target", ["vta", "gemmini"])
def test_solver_finds_the_enumerated_optimum(op: ContractionOp, target: str) -> None:
    instruction = instruction_model(load_target(target))
    found = enumerate_embeddings(op, instruction)
    assert found
    for emb, cycles in found:
        check_embedding(op, emb)
        assert cycles == cycles_of(emb, instruction), emb.describe()
    exhaustive = brute_force(op, False) + brute_force(op, True)
    assert len(found) == len(exhaustive)
    best = min(cycles_of(emb, instruction) for emb in exhaustive)
    solution = solve(op, instruction)
    assert solution.cycles == best == min(c for _, c in found)
    assert solution.cycles <= cycles_of(fixed_embedding(op), instruction)
    assert solution.solve_s < 1.0


def test_depthwise_uses_diagonal_packing_on_gemmini(gemmini) -> None:  # type: ignore[no-untyped-def]
    op = conv2d(ConvParams(1, 32, 28, 28, 32, 3, 3, pad=(1, 1), groups=32))
    solution = solve(op, gemmini[1])
    assert [p.dim for p in solution.embedding.diagonal] == ["g"]
    # 16 groups on the diagonal of one 16x16 block, 2 x 3 x 3 issue loops, 784 rows in
    # one issue (at most 1024 rows): 18 * (784 + 46).
    assert solution.cycles == 18 * (784 + 46)
    assert cycles_of(fixed_embedding(op), gemmini[1]) == 32 * 9 * (784 + 46)


def test_transposed_1x1_conv_needs_no_layout_change(vta) -> None:  # type: ignore[no-untyped-def]
    op = conv2d(ConvParams(1, 64, 16, 16, 32, 1, 1))  # 256 pixels, 32 channels: no padding
    _, instruction = vta
    assert layout_cost(op, fixed_embedding(op), instruction).bytes > 0
    solution = solve(op, instruction)
    assert solution.cycles == cycles_of(fixed_embedding(op), instruction)
    assert solution.layout.bytes == 0  # NCHW: weights stream, pixels are the columns


def test_illegal_embedding_is_rejected() -> None:
    op = matmul(8, 8, 8)
    m, n, k = (Part(d, 8) for d in "mnk")
    with pytest.raises(ValueError, match="reduction dim k cannot go to stream"):
        check_embedding(op, Embedding(False, (k,), (m,), (n,), (), ()))
    with pytest.raises(ValueError, match="covered"):
        check_embedding(op, Embedding(False, (m,), (k,), (), (), ()))


@pytest.mark.parametrize("target", ["vta", "gemmini"])
@pytest.mark.parametrize(
    "op",
    [
        matmul(37, 21, 50),
        matmul(300, 1, 256),
        batched_matmul(3, 20, 30, 40),
        conv2d(ConvParams(2, 6, 11, 9, 10, 3, 3, stride=(2, 2), pad=(1, 1))),
        conv2d(ConvParams(1, 8, 12, 12, 8, 3, 3, pad=(2, 2), dilation=(2, 2))),
        conv2d(ConvParams(2, 12, 9, 9, 20, 3, 2, stride=(2, 1), pad=(1, 0), groups=4)),
        conv2d(ConvParams(1, 24, 10, 10, 24, 3, 3, pad=(1, 1), groups=24)),
    ],
    ids=lambda op: op.label,
)
def test_fixed_and_csp_numerics(op: ContractionOp, target: str) -> None:
    hw = load_target(target)
    instruction = instruction_model(hw)
    lhs, rhs = operands(op)
    for emb in (fixed_embedding(op), solve(op, instruction).embedding):
        execution = run(op, emb, instruction, hw, lhs, rhs)
        assert execution.max_rel_err == 0.0, emb.describe()  # integer data: exact sums
        assert execution.cycles == cycles_of(emb, instruction)


def test_every_embedding_of_a_grouped_conv_computes_it(gemmini) -> None:  # type: ignore[no-untyped-def]
    """A sample of all feasible embeddings (transposed, im2col, diagonal, loops) runs right."""
    target, instruction = gemmini
    op = conv2d(ConvParams(1, 4, 6, 5, 6, 2, 3, stride=(1, 2), pad=(1, 1), groups=2))
    lhs, rhs = operands(op, seed=1)
    found = enumerate_embeddings(op, instruction)
    assert len(found) > 100
    sample = random.Random(0).sample(found, 30)
    kinds = set()
    for emb, cycles in sample:
        execution = run(op, emb, instruction, target, lhs, rhs)
        assert execution.max_rel_err == 0.0, emb.describe()
        assert execution.cycles == cycles
        kinds.add((emb.transposed, bool(emb.diagonal)))
    assert len(kinds) == 4


def test_trace_counts_the_remainder_tile(gemmini) -> None:  # type: ignore[no-untyped-def]
    _, instruction = gemmini
    op = matmul(2500, 16, 16)  # 2500 rows: two 1024-row issues and one of 452
    lowered = lower(op, fixed_embedding(op), instruction)
    assert sorted((i.rows, i.count) for i in lowered.trace) == [(452, 1), (1024, 2)]
    assert trace_cycles(lowered.trace, instruction) == 2500 + 3 * 46


def test_solve_time_on_the_largest_deepbench_shapes(vta, gemmini) -> None:  # type: ignore[no-untyped-def]
    for instruction in (vta[1], gemmini[1]):
        for op in (
            matmul(8448, 6000, 2816),
            matmul(1024, 4, 500000),
            conv2d(ConvParams(1, 512, 7, 7, 512, 3, 3, pad=(1, 1))),
        ):
            assert solve(op, instruction).solve_s < 1.0


def test_combined_objective_weighs_layout_traffic(vta) -> None:  # type: ignore[no-untyped-def]
    """C[200, 40] = A[200, 64] @ B[64, 40] on VTA.

    Fixed: 200 rows * 4 K blocks * 3 N blocks (40 -> 48) = 2400 cycles, no layout change.
    Transposed: 40 rows * 4 * 13 M blocks (200 -> 208) = 2080 cycles, but B must be
    repacked (2 * 2560 bytes) and C unpacked (2 * 8000 bytes): 21120 bytes, 2640 cycles
    at VTA's 8 bytes per cycle. Lexicographic picks the transposed one, combined the fixed.
    """
    _, instruction = vta
    op = matmul(200, 40, 64)
    lexicographic = solve(op, instruction)
    assert (lexicographic.cycles, lexicographic.layout.bytes) == (2080, 21120)
    assert lexicographic.embedding.transposed
    combined = solve(op, instruction, layout_cycles_per_byte=1 / 8)
    assert (combined.cycles, combined.layout.bytes) == (2400, 0)
    assert not combined.embedding.transposed
