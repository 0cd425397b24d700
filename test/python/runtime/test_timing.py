"""The timing model: decoupled engines, hazards, DMA bursts, PE dataflows, stats, trace."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from polyfuse.runtime.emulator import ENGINES, ExecutionStats, MachineParams, execute
from polyfuse.runtime.program import ProgramBuilder, View

MACHINE = MachineParams(
    spm_bytes=1 << 16,
    dma_latency_cycles=10,
    dma_bytes_per_cycle=4,
    pe_rows=4,
    pe_cols=4,
    vector_width=4,
    dma_burst_bytes=0,
)
SERIAL = dataclasses.replace(MACHINE, overlap=False)


def run(
    builder: ProgramBuilder,
    dram: list[np.ndarray],
    machine: MachineParams = MACHINE,
    **kwargs: object,
) -> ExecutionStats:
    return execute(builder.build(), dram, machine, **kwargs)  # type: ignore[arg-type]


def matmul_4x4(b: ProgramBuilder, c: int, a: int, w: int, location: str = "") -> None:
    """C[4x4] = A[4x4] @ W[4x4], all dense at the given scratchpad offsets."""
    b.matmul(
        View.spm(c, strides=(0, 4, 1, 0, 0, 0)),
        View.spm(a, strides=(0, 4, 0, 0, 0, 1)),
        View.spm(w, strides=(0, 0, 1, 0, 0, 4)),
        (1, 4, 4, 1, 1, 4),
        accumulate=False,
        location=location,
    )


def load(
    b: ProgramBuilder,
    spm: int,
    buffer: int,
    count: int,
    token: int,
    c0: int = 0,
    coeffs: tuple[int, ...] = (),
    location: str = "",
) -> None:
    b.dma(
        View.spm(spm, strides=(1,)),
        View.dram(buffer, c0, coeffs, strides=(1,)),
        (count,),
        token,
        location,
    )


def test_independent_engines_overlap_and_serial_mode_adds_up() -> None:
    b = ProgramBuilder()
    load(b, 0, 0, 16, token=0)  # busy 16, done at 26
    b.wait(0)
    load(b, 16, 1, 16, token=1)  # DMA-in busy until 32, done at 42
    matmul_4x4(b, 64, 0, 0)  # reads only the first load: 26 .. 26 + (8 + 4 + 4 - 2) = 40
    b.wait(1)
    b.dma(View.dram(2, strides=(1,)), View.spm(64, strides=(1,)), (16,), token=2)  # 40 .. 66
    b.wait(2)
    dram = [np.ones(16, np.float32), np.ones(16, np.float32), np.zeros(16, np.float32)]
    overlapped = run(b, dram)
    serial = run(b, dram, SERIAL)
    assert overlapped.pe_cycles == 14
    assert overlapped.cycles == 66
    assert serial.cycles == serial.cycles_serial == (16 + 10) * 3 + 14
    assert overlapped.cycles_serial == serial.cycles_serial
    assert overlapped.cycles >= max(overlapped.engine_busy().values())


def test_reusing_a_buffer_waits_for_its_reader() -> None:
    """A load into the buffer a matmul reads starts after the matmul (write after read)."""
    b = ProgramBuilder()
    load(b, 0, 0, 16, token=0)  # done at 26
    b.wait(0)
    matmul_4x4(b, 64, 0, 0)  # 26 .. 40
    load(b, 0, 1, 16, token=1)  # must wait for the matmul: 40 .. 56 + 10
    b.wait(1)
    stats = run(b, [np.ones(16, np.float32), np.ones(16, np.float32)])
    assert stats.cycles == 66


def double_buffered(tiles: int, copies: int) -> ProgramBuilder:
    """Streams `tiles` 4x4 tiles through the PE array with `copies` input buffers."""
    b = ProgramBuilder()
    b.loop(tiles // copies)
    for stage in range(copies):
        load(b, 32 * stage, 0, 16, token=stage, c0=16 * stage, coeffs=(16 * copies,))
    for stage in range(copies):
        b.wait(stage)
        matmul_4x4(b, 256 + 16 * stage, 32 * stage, 128)
        b.dma(
            View.dram(1, 16 * stage, (16 * copies,), strides=(1,)),
            View.spm(256 + 16 * stage, strides=(1,)),
            (16,),
            token=4 + stage,
        )
    for stage in range(copies):
        b.wait(4 + stage)
    b.end_loop()
    return b


def test_double_buffering_hides_loads_behind_compute() -> None:
    tiles = 8
    inputs = np.random.default_rng(0).standard_normal(16 * tiles).astype(np.float32)
    machine = dataclasses.replace(MACHINE, dma_latency_cycles=0)
    single = run(double_buffered(tiles, 1), [inputs, np.zeros(16 * tiles, np.float32)], machine)
    double = run(double_buffered(tiles, 2), [inputs, np.zeros(16 * tiles, np.float32)], machine)
    assert single.cycles_serial == double.cycles_serial  # same work
    # One buffer: load, matmul, store of a tile each wait for the previous tile's users.
    assert single.cycles > double.cycles
    # Two buffers: bounded below by the busiest engine, and close to it.
    busiest = max(double.engine_busy().values())
    assert busiest <= double.cycles <= busiest + 16 + 14 + 16


def test_strided_dram_rows_cost_whole_bursts() -> None:
    machine = dataclasses.replace(MACHINE, dma_latency_cycles=0, dma_burst_bytes=32)
    b = ProgramBuilder()
    # 8 rows of 2 contiguous elements (8 bytes each) -> 8 bursts of 32 bytes = 256 bytes.
    b.dma(View.spm(strides=(2, 1)), View.dram(0, strides=(16, 1)), (8, 2), token=0)
    b.wait(0)
    # 16 contiguous elements (64 bytes) -> 2 bursts.
    load(b, 64, 0, 16, token=1)
    b.wait(1)
    stats = run(b, [np.zeros(128, np.float32)], machine)
    assert stats.dma_load_cycles == 256 / 4 + 64 / 4
    assert stats.dram_read_bytes == 16 * 4 + 16 * 4


@pytest.mark.parametrize(
    ("dataflow", "expected"),
    [
        # M = 6, N = 5, K = 9 on 4 x 4: weight-stationary folds K and N, streams M.
        ("weight-stationary", 3 * 2 * (2 * 4 + 4 + 6 - 2)),
        # output-stationary folds M and N, streams K.
        ("output-stationary", 2 * 2 * (2 * 4 + 4 + 9 - 2)),
    ],
)
def test_pe_array_dataflows(dataflow: str, expected: int) -> None:
    machine = dataclasses.replace(MACHINE, dataflow=dataflow)
    b = ProgramBuilder()
    b.matmul(
        View.spm(200, strides=(0, 5, 1, 0, 0, 0)),
        View.spm(0, strides=(0, 9, 0, 0, 0, 1)),
        View.spm(100, strides=(0, 0, 1, 0, 0, 5)),
        (1, 6, 5, 1, 1, 9),
        accumulate=False,
    )
    stats = run(b, [], machine, check=False)
    assert stats.pe_cycles == expected
    assert stats.macs == 6 * 5 * 9


def test_per_location_stats_and_trace() -> None:
    b = ProgramBuilder()
    for tile in range(3):
        b.group = 1  # operator groups, as the serializer numbers them
        load(b, 0, 0, 16, token=0, c0=16 * tile, location="conv.py:3:1")
        b.wait(0)
        matmul_4x4(b, 64, 0, 0, location="conv.py:3:1")
        b.group = 2
        b.dma(
            View.dram(1, 16 * tile, strides=(1,)),
            View.spm(64, strides=(1,)),
            (16,),
            1,
            location="relu.py:4:1",
        )
        b.wait(1)
    dram = [np.ones(48, np.float32), np.zeros(48, np.float32)]
    stats = run(b, dram, trace_limit=100, trace_merge_gap=1e9)
    assert [s.group for s in stats.locations] == [0, 1, 2]
    assert stats.locations[0].first_start == -1  # nothing ran in group 0
    conv, relu = stats.locations[1], stats.locations[2]
    assert (conv.location, relu.location) == ("conv.py:3:1", "relu.py:4:1")
    assert conv.dram_read_bytes == 3 * 64 and conv.dram_write_bytes == 0
    assert relu.dram_write_bytes == 3 * 64
    assert conv.macs == 3 * 64 and conv.pe_cycles == 3 * 14
    assert conv.first_start == 0 and relu.last_finish == stats.cycles
    # Merged per engine and location: one DMA-in, one PE and one DMA-out slice.
    slices = {(s.engine, s.location): s for s in stats.trace}
    assert set(slices) == {
        ("DMA in", "conv.py:3:1"),
        ("PE array", "conv.py:3:1"),
        ("DMA out", "relu.py:4:1"),
    }
    assert slices[("PE array", "conv.py:3:1")].instructions == 3
    assert slices[("PE array", "conv.py:3:1")].busy == 3 * 14
    assert set(ENGINES) >= {s.engine for s in stats.trace}


def test_trace_limit_counts_dropped_slices() -> None:
    b = ProgramBuilder()
    for tile in range(5):
        b.group = tile
        load(b, 0, 0, 16, token=0, c0=16 * tile)
        b.wait(0)
    stats = run(b, [np.ones(80, np.float32)], trace_limit=2)
    assert len(stats.trace) == 2 and stats.trace_dropped == 3


def test_occupancy_peak_and_average() -> None:
    b = ProgramBuilder()
    first = b.alloc(0, 16)
    load(b, 0, 0, 16, token=0)  # 26 cycles with 16 elements allocated
    b.wait(0)
    second = b.alloc(16, 48)
    load(b, 16, 0, 16, token=1)  # 26 more with 64 allocated
    b.wait(1)
    b.free(first)
    b.free(second)
    stats = run(b, [np.ones(16, np.float32)], SERIAL)
    assert stats.spm_live_peak_bytes == 64 * 4
    assert stats.spm_live_average_bytes == pytest.approx((16 * 26 + 64 * 26) / 52 * 4)
    assert [bytes_ for _, bytes_ in stats.occupancy] == [64, 256, 192, 0]
