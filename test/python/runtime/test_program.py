"""ProgramBuilder: the encoding it produces and the mistakes it refuses."""

from __future__ import annotations

import numpy as np
import pytest

from polyfuse.runtime.isa import (
    FLAG_ACCUMULATE,
    RECORD_WORDS,
    V_BUFFER,
    V_C0,
    V_COEFFS,
    V_MEMORY,
    V_STRIDES,
    VIEW_BASE,
    VIEW_WORDS,
    W_AUX,
    W_FLAGS,
    W_LOCATION,
    W_OPCODE,
    W_SHAPE,
    W_SUB,
    W_TOKEN,
    Memory,
    Opcode,
    VectorKind,
)
from polyfuse.runtime.program import ProgramBuilder, View


def view_words(record: np.ndarray, index: int) -> np.ndarray:
    base = VIEW_BASE + VIEW_WORDS * index
    return record[base : base + VIEW_WORDS]


def test_encodes_records_per_isa_layout() -> None:
    b = ProgramBuilder()
    depth = b.loop(3, location="outer")
    b.dma(
        View.spm(8, strides=(4, 1)),
        View.dram(2, c0=5, coeffs=(16,), strides=(32, 1)),
        (2, 4),
        token=7,
        location="load",
    )
    b.wait(7, location="load")
    b.matmul(
        View.spm(0, strides=(0, 4, 1, 0, 0, 0)),
        View.spm(64, strides=(0, 4, 0, 0, 0, 1)),
        View.spm(128, strides=(0, 0, 1, 0, 0, 4)),
        (1, 4, 4, 1, 1, 4),
        accumulate=True,
    )
    b.vector(
        VectorKind.ADD,
        View.spm(0, strides=(1,)),
        [View.spm(0, strides=(1,)), View.imm()],
        (16,),
        2.5,
    )
    b.end_loop()
    program = b.build()

    assert depth == 0
    assert program.records.shape == (6, RECORD_WORDS)
    assert program.records.dtype == np.int64 and program.records.flags.c_contiguous
    assert program.locations == ["outer", "load", ""]
    loop, dma, wait, matmul, vector, end = program.records
    assert (loop[W_OPCODE], loop[W_SUB], loop[W_AUX]) == (Opcode.LOOP, 0, 3)
    assert (end[W_OPCODE], end[W_AUX]) == (Opcode.ENDLOOP, 0)

    assert dma[W_OPCODE] == Opcode.DMA and dma[W_TOKEN] == 7
    assert list(dma[W_SHAPE : W_SHAPE + 6]) == [2, 4, 1, 1, 1, 1]  # padded with 1
    assert dma[W_LOCATION] == wait[W_LOCATION] == 1
    src = view_words(dma, 1)
    assert (src[V_MEMORY], src[V_BUFFER], src[V_C0]) == (Memory.DRAM, 2, 5)
    assert list(src[V_COEFFS : V_COEFFS + 2]) == [16, 0]
    assert list(src[V_STRIDES : V_STRIDES + 6]) == [32, 1, 0, 0, 0, 0]  # padded with 0
    assert view_words(dma, 2)[V_MEMORY] == Memory.NONE

    assert matmul[W_FLAGS] == FLAG_ACCUMULATE
    assert vector[W_SUB] == VectorKind.ADD
    assert view_words(vector, 2)[V_MEMORY] == Memory.IMM
    assert view_words(vector, 3)[V_MEMORY] == Memory.NONE
    assert list(program.immediates) == [0, 0, 0, 0, 2.5, 0]


def test_empty_program() -> None:
    program = ProgramBuilder().build()
    assert program.records.shape == (0, RECORD_WORDS)
    assert program.immediates.shape == (0,)


SPM1 = View.spm(strides=(1,))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda b: b.vector(VectorKind.ADD, SPM1, [SPM1], (4,)),
            r"vector ADD: takes 2 source\(s\), got 1",
        ),
        (
            lambda b: b.vector(VectorKind.NEG, SPM1, [SPM1, SPM1], (4,)),
            r"vector NEG: takes 1 source\(s\), got 2",
        ),
        (
            lambda b: b.dma(
                View.spm(strides=(1,) * 7), View.dram(0, strides=(1,) * 7), (1,) * 7, token=0
            ),
            "has more than 6 dims",
        ),
        (lambda b: b.dma(SPM1, View.dram(0, strides=(1,)), (-1,), 0), "negative size"),
        (
            lambda b: b.dma(SPM1, View.dram(0, strides=(1, 1)), (4,), 0),
            r"dma: view src: has 2 stride\(s\) for a 1-dim shape",
        ),
        (
            lambda b: b.matmul(SPM1, SPM1, SPM1, (1, 4, 4, 1, 1, 4), False),
            r"matmul: view c: has 1 stride\(s\) for a 6-dim shape",
        ),
        (
            lambda b: b.dma(
                View.spm(coeffs=(0, 3), strides=(1,)), View.dram(0, strides=(1,)), (4,), 0
            ),
            r"uses the induction variable of loop depth 1 but only 0 loop\(s\) are open",
        ),
        (
            lambda b: b.vector(VectorKind.COPY, SPM1, [View(Memory.IMM, c0=3)], (4,)),
            "a IMM view has no offsets or strides",
        ),
        (
            lambda b: b.dma(SPM1, View.dram(-1, strides=(1,)), (4,), 0),
            "buffer id must be non-negative",
        ),
        (lambda b: b.loop(-2), "trip count must be non-negative"),
        (lambda b: b.end_loop(), "no loop is open"),
    ],
)
def test_rejects_malformed_instructions(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(ProgramBuilder())


def test_rejects_loops_nested_too_deep() -> None:
    b = ProgramBuilder()
    for _ in range(8):
        b.loop(2)
    with pytest.raises(ValueError, match="loops nest at most 8 deep"):
        b.loop(2)


def test_build_rejects_open_loops() -> None:
    b = ProgramBuilder()
    b.loop(2)
    with pytest.raises(ValueError, match=r"1 loop\(s\) still open"):
        b.build()


def test_coefficients_may_use_open_loops() -> None:
    b = ProgramBuilder()
    b.loop(2)
    b.loop(2)
    b.dma(View.spm(coeffs=(1, 2), strides=(1,)), View.dram(0, strides=(1,)), (4,), 0)
    b.wait(0)
    b.end_loop()
    b.end_loop()
    assert len(b.build()) == 6
