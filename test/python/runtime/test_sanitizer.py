"""Sanitizer mode and allocation checks: small illegal programs, each with its message."""

from __future__ import annotations

import numpy as np
import pytest

from polyfuse.errors import EmulatorTrap
from polyfuse.runtime.emulator import MachineParams, execute
from polyfuse.runtime.isa import VectorKind
from polyfuse.runtime.program import Program, ProgramBuilder, View

MACHINE = MachineParams(
    spm_bytes=1024,
    dma_latency_cycles=0,
    dma_bytes_per_cycle=4,
    pe_rows=4,
    pe_cols=4,
    vector_width=4,
)


def trap(program: Program, dram: list[np.ndarray], sanitize: bool = True) -> str:
    with pytest.raises(EmulatorTrap) as info:
        execute(program, dram, MACHINE, sanitize=sanitize)
    return str(info.value)


def negate(b: ProgramBuilder, dst: int, src: int, count: int, location: str = "") -> None:
    b.vector(
        VectorKind.NEG,
        View.spm(dst, strides=(1,)),
        [View.spm(src, strides=(1,))],
        (count,),
        location=location,
    )


def test_read_of_never_written_scratchpad() -> None:
    b = ProgramBuilder()
    b.alloc(0, 16)
    b.alloc(16, 16)
    b.dma(View.spm(0, strides=(1,)), View.dram(0, strides=(1,)), (8,), token=0)  # half of it
    b.wait(0)
    negate(b, 16, 0, 16, location="model.py:7:3")
    message = trap(b.build(), [np.ones(8, np.float32)])
    assert "emulator trap at instruction 4 (model.py:7:3)" in message
    assert (
        "sanitizer: vector source a reads scratchpad element 8 (element 8 of the buffer "
        "allocated at instruction 0), which was never written" in message
    )
    # Without the sanitizer the same program runs (and reads zeros).
    execute(b.build(), [np.ones(8, np.float32)], MACHINE)


def test_stale_data_of_a_freed_buffer_counts_as_never_written() -> None:
    b = ProgramBuilder()
    first = b.alloc(0, 16)
    b.dma(View.spm(0, strides=(1,)), View.dram(0, strides=(1,)), (16,), token=0)
    b.wait(0)
    b.free(first)
    b.alloc(0, 16)  # the next operator's buffer, same place
    b.dma(View.dram(0, strides=(1,)), View.spm(0, strides=(1,)), (16,), token=1)
    b.wait(1)
    message = trap(b.build(), [np.ones(16, np.float32)])
    assert "sanitizer: DMA store source reads scratchpad element 0" in message
    assert "allocated at instruction 4" in message


def test_dma_overwriting_a_result_nobody_read() -> None:
    b = ProgramBuilder()
    b.dma(View.spm(0, strides=(1,)), View.dram(0, strides=(1,)), (16,), token=0)
    b.wait(0)
    negate(b, 16, 0, 16)  # instruction 2: a result at [16, 32)
    b.dma(View.spm(16, strides=(1,)), View.dram(0, strides=(1,)), (16,), token=1)
    b.wait(1)
    message = trap(b.build(), [np.ones(16, np.float32)])
    assert "emulator trap at instruction 3" in message
    assert (
        "sanitizer: DMA load overwrites scratchpad element 16, which holds a result written "
        "at instruction 2 that nothing has read yet" in message
    )


def test_result_stored_then_reloaded_is_fine() -> None:
    b = ProgramBuilder()
    b.dma(View.spm(0, strides=(1,)), View.dram(0, strides=(1,)), (16,), token=0)
    b.wait(0)
    negate(b, 16, 0, 16)
    b.dma(View.dram(1, strides=(1,)), View.spm(16, strides=(1,)), (16,), token=1)
    b.wait(1)
    b.dma(View.spm(16, strides=(1,)), View.dram(0, strides=(1,)), (16,), token=2)
    b.wait(2)
    out = np.zeros(16, np.float32)
    execute(b.build(), [np.ones(16, np.float32), out], MACHINE, sanitize=True)
    np.testing.assert_array_equal(out, -np.ones(16, np.float32))


def test_read_of_dma_destination_before_its_wait() -> None:
    b = ProgramBuilder()
    b.dma(View.spm(0, strides=(1,)), View.dram(0, strides=(1,)), (16,), token=3)
    negate(b, 16, 4, 4)
    b.wait(3)
    message = trap(b.build(), [np.ones(16, np.float32)])
    assert "reads scratchpad elements [4, 8) before dma_wait on token 3" in message


def test_strided_read_checks_only_the_elements_it_touches() -> None:
    b = ProgramBuilder()
    b.alloc(0, 32)
    b.alloc(32, 16)
    # Even elements 0, 2, ..., 30 loaded; the odd ones never.
    b.dma(View.spm(0, strides=(2,)), View.dram(0, strides=(1,)), (16,), token=0)
    b.wait(0)
    b.vector(VectorKind.NEG, View.spm(32, strides=(1,)), [View.spm(0, strides=(2,))], (16,))
    execute(b.build(), [np.ones(16, np.float32)], MACHINE, sanitize=True)
    b.vector(VectorKind.NEG, View.spm(32, strides=(1,)), [View.spm(1, strides=(2,))], (16,))
    assert "reads scratchpad element 1 " in trap(b.build(), [np.ones(16, np.float32)])


def test_allocation_overlap_and_overflow_trap() -> None:
    b = ProgramBuilder()
    b.alloc(0, 64, location="conv.py:1:1")
    b.alloc(48, 32, location="relu.py:2:1")
    message = trap(b.build(), [], sanitize=False)
    assert "emulator trap at instruction 1 (relu.py:2:1)" in message
    assert (
        "scratchpad allocation [48, 80) overlaps the live buffer [0, 64) allocated at "
        "instruction 0 (not freed yet)" in message
    )

    b = ProgramBuilder()
    b.alloc(200, 100)
    assert (
        "scratchpad allocation [200, 300) overflows the scratchpad of 256 elements "
        "(1024 bytes)" in trap(b.build(), [], sanitize=False)
    )

    b = ProgramBuilder()
    first = b.alloc(0, 64)
    b.free(first)
    b.alloc(0, 64)  # reuse after free is legal
    execute(b.build(), [], MACHINE)


def test_free_of_a_buffer_a_dma_still_moves() -> None:
    b = ProgramBuilder()
    first = b.alloc(0, 16)
    b.dma(View.spm(0, strides=(1,)), View.dram(0, strides=(1,)), (16,), token=1)
    b.free(first)
    b.wait(1)
    assert "free of a buffer that DMA token 1 (issued at instruction 1) still moves" in trap(
        b.build(), [np.ones(16, np.float32)], sanitize=False
    )
