"""The layout changes run on the emulator: hand-counted traffic, the rewritten matrices,
chunking, and the operands entering and Y leaving in their PyTorch layouts."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from polyfuse.embedding import (
    ConvParams,
    Embedding,
    InstructionModel,
    Part,
    conv2d,
    enumerate_embeddings,
    fixed_embedding,
    instruction_model,
    matmul,
)
from polyfuse.embedding.embedding import check_embedding
from polyfuse.embedding.layout import layout_cost
from polyfuse.embedding.layout_program import LHS, OUT, RHS, plan_layouts, staging_elements
from polyfuse.embedding.lower import dram_buffers, machine_for, measure_layout, run
from polyfuse.embedding.operators import ContractionOp
from polyfuse.errors import ScratchpadCapacityError
from polyfuse.runtime.emulator import FLOAT_BYTES, ExecutionStats, execute
from polyfuse.targets import Target, load_target


def operands(op: ContractionOp, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lhs = rng.integers(-3, 4, size=op.lhs.shape).astype(np.float32)
    rhs = rng.integers(-3, 4, size=op.rhs.shape).astype(np.float32)
    return lhs, rhs


def counted(runs: list[ExecutionStats]) -> tuple[int, int]:
    """(read, written) elements of the layout programs, from the emulator's float32 bytes."""
    read = sum(s.dram_read_bytes for s in runs)
    written = sum(s.dram_write_bytes for s in runs)
    assert read % FLOAT_BYTES == 0 and written % FLOAT_BYTES == 0
    return read // FLOAT_BYTES, written // FLOAT_BYTES


def run_checked(
    op: ContractionOp, emb: Embedding, vta: tuple[Target, InstructionModel]
) -> tuple[int, int]:
    target, instruction = vta
    check_embedding(op, emb)
    lhs, rhs = operands(op)
    execution = run(op, emb, instruction, target, lhs, rhs)
    assert execution.max_rel_err == 0.0  # integer data: exact sums
    assert execution.layout.dram_bytes == layout_cost(op, emb, instruction).bytes
    assert execution.layout.cycles > 0 or execution.layout.dram_bytes == 0
    return counted(execution.layout.stats)


def test_1x1_conv_repack_by_hand(vta) -> None:  # type: ignore[no-untyped-def]
    """Fixed embedding of a 1x1 conv, X [1, 4, 3, 5], W [8, 4, 1, 1], Y [1, 8, 3, 5].

    The 15 pixels stream with the 4 channels as the vector: channels are 15 apart in
    NCHW, so X is repacked (read 60, write 60). W's [k, c] is the [out, in] block
    transposed, one side contiguous: read in place. Y's vector k is 15 apart: the GEMM
    writes [15, 8] and the restore reads 120 and writes 120. 360 elements in all.
    """
    op = conv2d(ConvParams(1, 4, 3, 5, 8, 1, 1))
    emb = fixed_embedding(op)
    cost = layout_cost(op, emb, vta[1])
    assert (cost.streamed, cost.stationary, cost.output, cost.bytes) == (
        "repack",
        "none",
        "repack",
        360,
    )
    assert run_checked(op, emb, vta) == (60 + 120, 60 + 120)


def test_3x3_stride_2_im2col_by_hand(vta) -> None:  # type: ignore[no-untyped-def]
    """X [1, 2, 5, 5], W [4, 2, 3, 3], stride 2, pad 1: a 3x3 output.

    Transposed: W's rows (k) stream with their contiguous (c, r, s) vector, Y's rows
    (k) and contiguous pixels (oh, ow) are written in place; X, the stationary operand,
    is im2col'd into [(c, r, s) = 18, (oh, ow) = 9]: read 50, write 162 (its padding
    zeros made on chip).
    Fixed: pixels stream, c is the vector, (r, s) issue loops: X becomes
    [r, s, oh, ow, c] = 162 (read 50), W [r, s, c, k] = 72 is repacked (read 72), Y is
    restored (36 and 36): 428.
    """
    op = conv2d(ConvParams(1, 2, 5, 5, 4, 3, 3, stride=(2, 2), pad=(1, 1)))
    k, c, r, s, oh, ow = (Part(d, op.extents[d]) for d in ("k", "c", "r", "s", "oh", "ow"))
    transposed = Embedding(True, (k,), (c, r, s), (oh, ow), (), ())
    cost = layout_cost(op, transposed, vta[1])
    assert (cost.streamed, cost.stationary, cost.output, cost.bytes) == (
        "none",
        "im2col",
        "none",
        212,
    )
    assert run_checked(op, transposed, vta) == (50, 162)
    fixed = fixed_embedding(op)
    cost = layout_cost(op, fixed, vta[1])
    assert (cost.streamed, cost.stationary, cost.output, cost.bytes) == (
        "im2col",
        "repack",
        "repack",
        428,
    )
    assert run_checked(op, fixed, vta) == (50 + 72 + 36, 162 + 72 + 36)


def test_im2col_matrix_written_by_the_emulator(vta) -> None:  # type: ignore[no-untyped-def]
    """The matrix the layout program writes is numpy's im2col (numpy only as the oracle)."""
    target, instruction = vta
    op = conv2d(ConvParams(1, 2, 5, 5, 4, 3, 3, stride=(2, 2), pad=(1, 1)))
    k, c, r, s, oh, ow = (Part(d, op.extents[d]) for d in ("k", "c", "r", "s", "oh", "ow"))
    emb = Embedding(True, (k,), (c, r, s), (oh, ow), (), ())
    plan = plan_layouts(op, emb, instruction)
    x, w = operands(op)
    dram = dram_buffers(op, plan, x, w)
    assert plan.before is not None and plan.after is None
    execute(plan.before, dram, machine_for(target, plan.spm_elements))
    padded = np.pad(x[0], ((0, 0), (1, 1), (1, 1)))
    expected = np.array(
        [
            [padded[ci, 2 * i + ri, 2 * j + si] for i in range(3) for j in range(3)]
            for ci in range(2)
            for ri in range(3)
            for si in range(3)
        ]
    )
    matrix = dram[plan.operands["stationary"].buffer].reshape(18, 9)
    np.testing.assert_array_equal(matrix, expected)
    # The operands are read, never written; Y is untouched until the GEMM runs.
    np.testing.assert_array_equal(dram[LHS], x)
    np.testing.assert_array_equal(dram[RHS], w)
    assert np.isnan(dram[OUT]).all()


def test_depthwise_block_diagonal_by_hand(vta) -> None:  # type: ignore[no-untyped-def]
    """Depthwise 3x3, 2 channels, 4x4 output, pad 1: both groups on the diagonal.

    W [2, 1, 3, 3] becomes the [(g, r, s) = 18, (g) = 2] block-diagonal matrix: read 18,
    write 36 (the off-diagonal half zero, made on chip). X [1, 2, 4, 4] is im2col'd into
    [(oh, ow) = 16, (g, r, s) = 18]: read 32, write 288. Y's vector (g) is 16 apart:
    restored, 32 and 32. 438 in all.
    """
    op = conv2d(ConvParams(1, 2, 4, 4, 2, 3, 3, pad=(1, 1), groups=2))
    g, r, s, oh, ow = (Part(d, op.extents[d]) for d in ("g", "r", "s", "oh", "ow"))
    emb = Embedding(False, (oh, ow), (r, s), (), (g,), ())
    cost = layout_cost(op, emb, vta[1])
    assert (cost.streamed, cost.stationary, cost.output, cost.bytes) == (
        "im2col",
        "diagonal",
        "repack",
        438,
    )
    assert run_checked(op, emb, vta) == (32 + 18 + 32, 288 + 36 + 32)


def test_chunked_rewrite_with_a_remainder(vta) -> None:  # type: ignore[no-untyped-def]
    """With 300 elements of staging, B [50, 21] is transposed 7 rows of k at a time
    (7 x (21 + 21) = 294): 7 chunks of 7 and one of 1, still read once, written once."""
    target, instruction = vta
    small = replace(
        instruction, input_buffer_bytes=100, weight_buffer_bytes=100, accumulator_bytes=100
    )
    assert staging_elements(small) == 300
    op = matmul(37, 21, 50)
    m, n, k = (Part(d, op.extents[d]) for d in "mnk")
    emb = Embedding(True, (n,), (k,), (m,), (), ())
    lhs, rhs = operands(op)
    execution = run(op, emb, small, target, lhs, rhs)
    assert execution.max_rel_err == 0.0
    before, after = execution.layout.stats
    assert before.dma_loads == 8 and before.dma_stores == 8
    assert counted([before]) == (50 * 21, 50 * 21)
    assert counted([after]) == (37 * 21, 37 * 21)  # C^T [21, 37] back to C [37, 21]
    assert execution.layout.dram_bytes == layout_cost(op, emb, small).bytes == 2 * 1050 + 2 * 777


def test_staging_that_cannot_fit_is_an_error(vta) -> None:  # type: ignore[no-untyped-def]
    """A padded input plane is staged whole (its rows are not independent): too small a
    scratchpad is a clear error, not a wrong program."""
    _, instruction = vta
    tiny = replace(instruction, input_buffer_bytes=16, weight_buffer_bytes=16, accumulator_bytes=16)
    op = conv2d(ConvParams(1, 1, 8, 8, 16, 3, 3, pad=(1, 1)))
    with pytest.raises(ScratchpadCapacityError, match="rewriting X stages"):
        plan_layouts(op, fixed_embedding(op), tiny)


def test_layout_programs_alone_match_the_full_run(vta) -> None:  # type: ignore[no-untyped-def]
    """`measure_layout` (what the benchmark runs for big GEMMs) counts what `run` counts."""
    target, instruction = vta
    op = conv2d(ConvParams(1, 2, 5, 5, 4, 3, 3, stride=(2, 2), pad=(1, 1)))
    emb = fixed_embedding(op)
    alone = measure_layout(op, emb, instruction, target)
    full = run(op, emb, instruction, target, *operands(op)).layout
    assert (alone.dram_bytes, alone.cycles, alone.dma_cycles) == (
        full.dram_bytes,
        full.cycles,
        full.dma_cycles,
    )


@pytest.mark.parametrize("target_name", ["vta", "gemmini"])
def test_every_embedding_moves_what_the_model_says(target_name: str) -> None:
    """All feasible embeddings of a strided, padded, grouped conv (transposed, im2col,
    block-diagonal, repacks, loops): the emulator counts exactly `layout_cost`'s bytes."""
    target = load_target(target_name)
    instruction = instruction_model(target)
    op = conv2d(ConvParams(1, 4, 6, 5, 6, 2, 3, stride=(1, 2), pad=(1, 1), groups=2))
    found = enumerate_embeddings(op, instruction)
    assert len(found) > 100
    kinds = set()
    for emb, _ in found:
        cost = layout_cost(op, emb, instruction)
        assert measure_layout(op, emb, instruction, target).dram_bytes == cost.bytes
        kinds.update({cost.streamed, cost.stationary, cost.output})
    assert kinds == {"none", "repack", "im2col", "diagonal"}
