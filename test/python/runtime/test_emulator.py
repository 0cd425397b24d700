"""The emulated accelerator on hand-built programs, checked against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from polyfuse.errors import EmulatorTrap
from polyfuse.runtime import _emulator, isa
from polyfuse.runtime.emulator import MachineParams, execute
from polyfuse.runtime.isa import W_OPCODE, W_SUB, VectorKind
from polyfuse.runtime.program import Program, ProgramBuilder, View

MACHINE = MachineParams(
    spm_bytes=1 << 20,
    dma_latency_cycles=0,
    dma_bytes_per_cycle=4,
    pe_rows=4,
    pe_cols=4,
    vector_width=8,
)
RNG = np.random.default_rng(0)


def random(*shape: int, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    return RNG.uniform(low, high, size=shape).astype(np.float32)


def load(b: ProgramBuilder, spm: int, buffer: int, count: int, token: int = 0) -> None:
    """Copies DRAM buffer `buffer` [0, count) to the scratchpad at `spm`, and waits."""
    b.dma(View.spm(spm, strides=(1,)), View.dram(buffer, strides=(1,)), (count,), token)
    b.wait(token)


def store(b: ProgramBuilder, buffer: int, spm: int, count: int, token: int = 0) -> None:
    """Copies the scratchpad [spm, spm + count) to DRAM buffer `buffer`, and waits."""
    b.dma(View.dram(buffer, strides=(1,)), View.spm(spm, strides=(1,)), (count,), token)
    b.wait(token)


def test_native_layout_matches_isa() -> None:
    assert _emulator.RECORD_WORDS == isa.RECORD_WORDS
    assert _emulator.VIEW_WORDS == isa.VIEW_WORDS
    assert _emulator.VIEW_BASE == isa.VIEW_BASE
    assert _emulator.MAX_DIMS == isa.MAX_DIMS
    assert _emulator.MAX_LOOP_DEPTH == isa.MAX_LOOP_DEPTH
    for kind in VectorKind:
        assert _emulator.vector_arity(kind) == isa.VECTOR_ARITY[kind], kind.name
    assert _emulator.vector_arity(len(VectorKind)) == -1


# ---- DMA and loops ----


def test_strided_dma_in_and_out() -> None:
    matrix = random(8, 10)
    out = np.zeros((3, 4), np.float32)
    b = ProgramBuilder()
    # Rows 2..5, columns 1, 3, 5 of the 8 x 10 matrix, into a contiguous 4 x 3 tile.
    b.dma(View.spm(strides=(3, 1)), View.dram(0, c0=2 * 10 + 1, strides=(10, 2)), (4, 3), token=0)
    b.wait(0)
    # Back out transposed.
    b.dma(View.dram(1, strides=(1, 4)), View.spm(strides=(3, 1)), (4, 3), token=1)
    b.wait(1)
    stats = execute(b.build(), [matrix, out], MACHINE)
    np.testing.assert_array_equal(out, matrix[2:6, 1:7:2].T)
    assert stats.dram_read_bytes == 4 * 3 * 4
    assert stats.dram_write_bytes == 4 * 3 * 4
    assert (stats.dma_loads, stats.dma_stores) == (1, 1)
    assert stats.spm_peak_bytes == 12 * 4
    assert stats.instructions == 4


def test_broadcast_dma_source() -> None:
    row = random(5)
    out = np.zeros((3, 5), np.float32)
    b = ProgramBuilder()
    b.dma(View.spm(strides=(5, 1)), View.dram(0, strides=(0, 1)), (3, 5), token=0)
    b.wait(0)
    store(b, 1, 0, 15)
    execute(b.build(), [row, out], MACHINE)
    np.testing.assert_array_equal(out, np.broadcast_to(row, (3, 5)))


def test_loop_with_affine_offsets_copies_in_tiles() -> None:
    source = random(64, 64)
    out = np.zeros_like(source)
    b = ProgramBuilder()
    i = b.loop(4)
    j = b.loop(4)
    tile = View.spm(strides=(16, 1))
    coeffs = [0] * 8
    coeffs[i], coeffs[j] = 16 * 64, 16
    b.dma(tile, View.dram(0, coeffs=coeffs[:2], strides=(64, 1)), (16, 16), token=0)
    b.wait(0)
    b.dma(View.dram(1, coeffs=coeffs[:2], strides=(64, 1)), tile, (16, 16), token=0)
    b.wait(0)
    b.end_loop()
    b.end_loop()
    stats = execute(b.build(), [source, out], MACHINE)
    np.testing.assert_array_equal(out, source)
    assert stats.dram_read_bytes == stats.dram_write_bytes == 64 * 64 * 4
    assert stats.dma_loads == stats.dma_stores == 16
    assert stats.spm_peak_bytes == 16 * 16 * 4
    # Outer LOOP once; per outer trip: inner LOOP, 4 x (4 body + ENDLOOP), outer ENDLOOP.
    assert stats.instructions == 1 + 4 * (1 + 4 * 5 + 1)


def test_zero_trip_loop_skips_its_body() -> None:
    out = np.zeros(4, np.float32)
    b = ProgramBuilder()
    b.loop(0)
    store(b, 0, 1 << 30, 4)  # out of bounds, but never executed
    b.end_loop()
    stats = execute(b.build(), [out], MACHINE)
    assert stats.dma_stores == 0


# ---- MATMUL ----


def run_matmul(
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray,
    a_view: View,
    b_view: View,
    c_view: View,
    shape: tuple[int, ...],
    accumulate: bool,
) -> np.ndarray:
    """Loads flat a, b, c to scratchpad offsets 0, 10000, 20000, runs one MATMUL, returns c."""
    out = np.zeros(c.size, np.float32)
    builder = ProgramBuilder()
    load(builder, 0, 0, a.size)
    load(builder, 10000, 1, b.size)
    load(builder, 20000, 2, c.size)
    builder.matmul(c_view, a_view, b_view, shape, accumulate)
    store(builder, 3, 20000, c.size)
    execute(builder.build(), [a.ravel().copy(), b.ravel().copy(), c.ravel().copy(), out], MACHINE)
    return out


@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("a_transposed", [False, True])
@pytest.mark.parametrize("b_transposed", [False, True])
@pytest.mark.parametrize("c_transposed", [False, True])
def test_matmul_plain_matrices(
    accumulate: bool, a_transposed: bool, b_transposed: bool, c_transposed: bool
) -> None:
    """Plain (possibly transposed) matrices: M = M2, K = K3, handed to sgemm in place."""
    m, n, k = 7, 5, 9
    a, b, c = random(m, k), random(k, n), random(m, n)
    a_view = View.spm(0, strides=(0, 1, 0, 0, 0, m) if a_transposed else (0, k, 0, 0, 0, 1))
    b_view = View.spm(10000, strides=(0, 0, k, 0, 0, 1) if b_transposed else (0, 0, 1, 0, 0, n))
    c_view = View.spm(20000, strides=(0, 1, m, 0, 0, 0) if c_transposed else (0, n, 1, 0, 0, 0))
    out = run_matmul(
        a.T.copy() if a_transposed else a,
        b.T.copy() if b_transposed else b,
        c.T.copy() if c_transposed else c,
        a_view,
        b_view,
        c_view,
        (1, m, n, 1, 1, k),
        accumulate,
    )
    expected = a.astype(np.float64) @ b + (c if accumulate else 0)
    got = out.reshape(n, m).T if c_transposed else out.reshape(m, n)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("accumulate", [False, True])
def test_matmul_packs_views_that_are_not_matrices(accumulate: bool) -> None:
    """Blocks of larger arrays whose dims do not merge into one evenly spaced M, K or N."""
    a_mem, b_mem, c_mem = random(3, 6, 12), random(2, 8, 5), random(2, 4, 6)
    a = a_mem[0:2, 0:3, :].reshape(6, 12)  # M = (m1, m2) = (2, 3), K = (k1, k3) = (2, 6)
    b = b_mem[:, :6, :].reshape(12, 5)  # K = (k1, k3) = (2, 6), N = 5
    c = c_mem[:, :3, :5].reshape(6, 5)
    shape = (2, 3, 5, 2, 1, 6)
    a_view = View.spm(0, strides=(72, 12, 0, 6, 0, 1))
    b_view = View.spm(10000, strides=(0, 0, 1, 40, 0, 5))
    c_view = View.spm(20000, strides=(24, 6, 1, 0, 0, 0))
    out = run_matmul(a_mem, b_mem, c_mem, a_view, b_view, c_view, shape, accumulate)
    expected = c_mem.astype(np.float64)
    expected[:, :3, :5] = (a.astype(np.float64) @ b + (c if accumulate else 0)).reshape(2, 3, 5)
    np.testing.assert_allclose(out.reshape(2, 4, 6), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("accumulate", [False, True])
def test_matmul_conv_like_windows(accumulate: bool) -> None:
    """A 3x3 stride-2 convolution of a C x H x W tile: A's M is 2-D (output rows, columns)."""
    channels, height, width, filters, kernel, stride = 3, 9, 9, 4, 3, 2
    out_h = out_w = (height - kernel) // stride + 1
    image, weights = random(channels, height, width), random(channels, kernel, kernel, filters)
    bias = random(out_h, out_w, filters)
    shape = (out_h, out_w, filters, channels, kernel, kernel)
    a_view = View.spm(0, strides=(stride * width, stride, 0, height * width, width, 1))
    b_view = View.spm(
        10000, strides=(0, 0, 1, kernel * kernel * filters, kernel * filters, filters)
    )
    c_view = View.spm(20000, strides=(out_w * filters, filters, 1, 0, 0, 0))
    out = run_matmul(image, weights, bias, a_view, b_view, c_view, shape, accumulate)
    expected = np.zeros((out_h, out_w, filters))
    for y in range(out_h):
        for x in range(out_w):
            window = image[:, y * stride : y * stride + kernel, x * stride : x * stride + kernel]
            expected[y, x] = np.einsum("chw,chwf->f", window.astype(np.float64), weights)
    if accumulate:
        expected += bias
    np.testing.assert_allclose(out.reshape(out_h, out_w, filters), expected, rtol=1e-5, atol=1e-5)


def test_matmul_output_over_its_own_input() -> None:
    """C = A @ B written over A: the result must be as if A were read first."""
    a, b = random(4, 4), random(4, 4)
    result = np.zeros(16, np.float32)
    builder = ProgramBuilder()
    load(builder, 0, 0, 16)
    load(builder, 10000, 1, 16)
    builder.matmul(
        View.spm(0, strides=(0, 4, 1, 0, 0, 0)),
        View.spm(0, strides=(0, 4, 0, 0, 0, 1)),
        View.spm(10000, strides=(0, 0, 1, 0, 0, 4)),
        (1, 4, 4, 1, 1, 4),
        accumulate=False,
    )
    store(builder, 2, 0, 16)
    execute(builder.build(), [a.ravel().copy(), b.ravel().copy(), result], MACHINE)
    np.testing.assert_allclose(result.reshape(4, 4), a.astype(np.float64) @ b, rtol=1e-5, atol=1e-6)


def test_matmul_operand_with_a_stray_stride_traps() -> None:
    builder = ProgramBuilder()
    builder.matmul(
        View.spm(0, strides=(0, 4, 1, 0, 0, 0)),
        View.spm(100, strides=(0, 4, 1, 0, 0, 1)),  # A must not move along N
        View.spm(200, strides=(0, 0, 1, 0, 0, 4)),
        (1, 4, 4, 1, 1, 4),
        accumulate=False,
    )
    with pytest.raises(EmulatorTrap, match="matmul operand A must have stride 0 along N"):
        execute(builder.build(), [], MACHINE)


# ---- VECTOR ----

# For each kind: numpy reference (computed in float64) and the input range that keeps it finite.
REFERENCES = {
    VectorKind.COPY: (lambda a, b, c: a, (-2, 2)),
    VectorKind.ADD: (lambda a, b, c: a + b, (-2, 2)),
    VectorKind.SUB: (lambda a, b, c: a - b, (-2, 2)),
    VectorKind.MUL: (lambda a, b, c: a * b, (-2, 2)),
    VectorKind.DIV: (lambda a, b, c: a / b, (0.5, 2)),
    VectorKind.MAX: (lambda a, b, c: np.maximum(a, b), (-2, 2)),
    VectorKind.MIN: (lambda a, b, c: np.minimum(a, b), (-2, 2)),
    VectorKind.POW: (lambda a, b, c: a**b, (0.5, 2)),
    VectorKind.NEG: (lambda a, b, c: -a, (-2, 2)),
    VectorKind.EXP: (lambda a, b, c: np.exp(a), (-2, 2)),
    VectorKind.LOG: (lambda a, b, c: np.log(a), (0.1, 3)),
    VectorKind.TANH: (lambda a, b, c: np.tanh(a), (-2, 2)),
    VectorKind.ERF: (lambda a, b, c: np.vectorize(math.erf)(a), (-2, 2)),
    VectorKind.SQRT: (lambda a, b, c: np.sqrt(a), (0.1, 3)),
    VectorKind.RSQRT: (lambda a, b, c: 1 / np.sqrt(a), (0.1, 3)),
    VectorKind.ABS: (lambda a, b, c: np.abs(a), (-2, 2)),
    VectorKind.FMA: (lambda a, b, c: a * b + c, (0.5, 2)),
    VectorKind.SELECT: (lambda a, b, c: np.where(a != 0, b, c), (-2, 2)),
    VectorKind.CMP_OGT: (lambda a, b, c: a > b, (-2, 2)),
    VectorKind.CMP_OGE: (lambda a, b, c: a >= b, (-2, 2)),
    VectorKind.CMP_OLT: (lambda a, b, c: a < b, (-2, 2)),
    VectorKind.CMP_OLE: (lambda a, b, c: a <= b, (-2, 2)),
    VectorKind.CMP_OEQ: (lambda a, b, c: a == b, (-2, 2)),
    VectorKind.CMP_ONE: (lambda a, b, c: ~np.isnan(a) & ~np.isnan(b) & (a != b), (-2, 2)),
    VectorKind.CMP_UGT: (lambda a, b, c: np.isnan(a) | np.isnan(b) | (a > b), (-2, 2)),
    VectorKind.CMP_UGE: (lambda a, b, c: np.isnan(a) | np.isnan(b) | (a >= b), (-2, 2)),
    VectorKind.CMP_ULT: (lambda a, b, c: np.isnan(a) | np.isnan(b) | (a < b), (-2, 2)),
    VectorKind.CMP_ULE: (lambda a, b, c: np.isnan(a) | np.isnan(b) | (a <= b), (-2, 2)),
    VectorKind.CMP_UEQ: (lambda a, b, c: np.isnan(a) | np.isnan(b) | (a == b), (-2, 2)),
    VectorKind.CMP_UNE: (lambda a, b, c: a != b, (-2, 2)),
    VectorKind.LOG1P: (lambda a, b, c: np.log1p(a), (-0.5, 2)),
    VectorKind.EXPM1: (lambda a, b, c: np.expm1(a), (-2, 2)),
    VectorKind.SIN: (lambda a, b, c: np.sin(a), (-1, 1)),
    VectorKind.COS: (lambda a, b, c: np.cos(a), (-1, 1)),
    VectorKind.FLOOR: (lambda a, b, c: np.floor(a), (-3, 3)),
    VectorKind.CEIL: (lambda a, b, c: np.ceil(a), (-3, 3)),
    VectorKind.RECIP: (lambda a, b, c: 1 / a, (0.5, 2)),
    VectorKind.SIGMOID: (lambda a, b, c: 1 / (1 + np.exp(-a)), (-4, 4)),
    VectorKind.MAXNUM: (lambda a, b, c: np.fmax(a, b), (-2, 2)),
    VectorKind.MINNUM: (lambda a, b, c: np.fmin(a, b), (-2, 2)),
}

ROWS, COLS = 5, 37
NAN_KINDS = {
    VectorKind.MAX,
    VectorKind.MIN,
    VectorKind.MAXNUM,
    VectorKind.MINNUM,
    *(kind for kind in VectorKind if kind.name.startswith("CMP_")),
}


def vector_inputs(kind: VectorKind) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    low, high = REFERENCES[kind][1]
    a, b = random(ROWS, COLS, low=low, high=high), random(ROWS, COLS, low=low, high=high)
    c = random(COLS, low=low, high=high)
    if kind in NAN_KINDS:
        a[0, :3] = np.nan
        b[1, 1:4:2] = np.nan
        b[2, :5] = a[2, :5]  # equal values for the (in)equality comparisons
    if kind == VectorKind.SELECT:
        a[:, ::3] = 0
    if kind in (VectorKind.MAX, VectorKind.MIN):
        a[3, 0], b[3, 0] = -0.0, 0.0
        a[3, 1], b[3, 1] = 0.0, -0.0
    return a, b, c


def vector_reference(kind: VectorKind, a, b, c) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.asarray(
            REFERENCES[kind][0](a.astype(np.float64), b.astype(np.float64), c.astype(np.float64)),
            dtype=np.float32,
        )


def test_every_kind_has_a_reference() -> None:
    assert set(REFERENCES) == set(VectorKind)


@pytest.mark.parametrize("kind", list(VectorKind), ids=lambda kind: kind.name)
def test_vector_kind_matches_numpy(kind: VectorKind) -> None:
    """a contiguous, b stored transposed, c one row broadcast over the rows."""
    a, b, c = vector_inputs(kind)
    views = [
        View.spm(0, strides=(COLS, 1)),
        View.spm(1000, strides=(1, ROWS)),
        View.spm(2000, strides=(0, 1)),
    ]
    arity = isa.VECTOR_ARITY[kind]
    out = np.zeros(ROWS * COLS, np.float32)
    builder = ProgramBuilder()
    load(builder, 0, 0, a.size)
    load(builder, 1000, 1, b.size)
    load(builder, 2000, 2, c.size)
    builder.vector(kind, View.spm(3000, strides=(COLS, 1)), views[:arity], (ROWS, COLS))
    store(builder, 3, 3000, out.size)
    execute(builder.build(), [a.ravel(), b.T.copy().ravel(), c, out], MACHINE)
    expected = vector_reference(kind, a, b, np.broadcast_to(c, (ROWS, COLS)))
    got = out.reshape(ROWS, COLS)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-12, equal_nan=True)
    if kind in (VectorKind.MAX, VectorKind.MIN):
        # Like arith.maximumf / minimumf (unlike numpy): -0 < +0.
        np.testing.assert_array_equal(np.signbit(got[3, :2]), [kind == VectorKind.MIN] * 2)


def test_vector_immediate_and_in_place_update() -> None:
    """relu in place: dst is exactly a's view, the threshold an immediate."""
    x = random(3000)  # longer than one internal chunk
    builder = ProgramBuilder()
    load(builder, 0, 0, x.size)
    row = View.spm(0, strides=(1,))
    builder.vector(VectorKind.MAX, row, [row, View.imm()], (x.size,), immediate=0.25)
    store(builder, 0, 0, x.size)
    expected = np.maximum(x, 0.25)
    execute(builder.build(), [x], MACHINE)
    np.testing.assert_array_equal(x, expected)


def test_vector_overlapping_views_run_in_order() -> None:
    """dst one element after a: each element copies the one just written."""
    x = random(10)
    builder = ProgramBuilder()
    load(builder, 0, 0, x.size)
    builder.vector(VectorKind.COPY, View.spm(1, strides=(1,)), [View.spm(0, strides=(1,))], (9,))
    store(builder, 0, 0, x.size)
    first = x[0]
    execute(builder.build(), [x], MACHINE)
    np.testing.assert_array_equal(x, np.full(10, first))


@pytest.mark.parametrize("cols", [7, 1500])
def test_sum_and_max_reductions_over_rows(cols: int) -> None:
    rows = 6
    x = random(rows, cols)
    sums, maxima = np.zeros(rows, np.float32), np.zeros(rows, np.float32)
    builder = ProgramBuilder()
    load(builder, 0, 0, x.size)
    data = View.spm(0, strides=(cols, 1))
    for accumulator, kind, init, buffer in [
        (20000, VectorKind.ADD, 0.0, 1),
        (30000, VectorKind.MAX, -math.inf, 2),
    ]:
        builder.vector(
            VectorKind.COPY, View.spm(accumulator, strides=(1,)), [View.imm()], (rows,), init
        )
        # dst aliases a with stride 0 along the columns: a reduction.
        acc = View.spm(accumulator, strides=(1, 0))
        builder.vector(kind, acc, [acc, data], (rows, cols))
        store(builder, buffer, accumulator, rows)
    execute(builder.build(), [x.ravel(), sums, maxima], MACHINE)
    expected_sums = np.array([math.fsum(map(float, row)) for row in x], np.float32)
    # The reduction adds in order in float32: compare with the same order.
    in_order = np.zeros(rows, np.float32)
    for j in range(cols):
        in_order += x[:, j]
    np.testing.assert_array_equal(sums, in_order)
    np.testing.assert_allclose(sums, expected_sums, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(maxima, x.max(axis=1))


def test_sum_reduction_over_the_outer_dim() -> None:
    x = random(9, 40)
    sums = np.zeros(40, np.float32)
    builder = ProgramBuilder()
    load(builder, 0, 0, x.size)
    acc = View.spm(5000, strides=(0, 1))
    builder.vector(VectorKind.COPY, View.spm(5000, strides=(1,)), [View.imm()], (40,))
    builder.vector(VectorKind.ADD, acc, [acc, View.spm(0, strides=(40, 1))], (9, 40))
    store(builder, 1, 5000, 40)
    execute(builder.build(), [x.ravel(), sums], MACHINE)
    in_order = np.zeros(40, np.float32)
    for row in x:
        in_order += row
    np.testing.assert_array_equal(sums, in_order)


# ---- Timing ----


def test_cycle_counts_follow_the_formulas() -> None:
    machine = MachineParams(
        spm_bytes=4096,
        dma_latency_cycles=10,
        dma_bytes_per_cycle=3,
        pe_rows=4,
        pe_cols=4,
        vector_width=8,
        vector_latency_cycles=2,
    )
    builder = ProgramBuilder()
    load(builder, 0, 0, 64)  # 256 contiguous bytes (4 bursts): busy ceil(256 / 3) = 86
    # M = 5, N = 6, K = 7: ceil(7/4) * ceil(6/4) * (2*4 + 4 + 5 - 2) = 60 cycles, 210 MACs.
    builder.matmul(
        View.spm(100, strides=(0, 6, 1, 0, 0, 0)),
        View.spm(0, strides=(0, 7, 0, 0, 0, 1)),
        View.spm(0, strides=(0, 0, 1, 0, 0, 6)),
        (1, 5, 6, 1, 1, 7),
        accumulate=False,
    )
    # 37 elements: busy ceil(37 / 8) = 5, result 2 cycles later.
    builder.vector(VectorKind.NEG, View.spm(200, strides=(1,)), [View.spm(0, strides=(1,))], (37,))
    store(builder, 0, 200, 10)  # 40 bytes, one 64-byte burst: busy ceil(64 / 3) = 22
    stats = execute(builder.build(), [np.zeros(64, np.float32)], machine)
    assert stats.dma_load_cycles == 86
    assert stats.dma_store_cycles == 22
    assert stats.pe_cycles == 60
    assert stats.macs == 210
    assert stats.vector_cycles == 5
    assert stats.vector_elements == 37
    assert stats.cycles_serial == (86 + 10) + (22 + 10) + 60 + (5 + 2)
    # The load ends at 96; the matmul (reads it) runs 96..156; the vector op (reads it too)
    # runs 96..103 on its own engine, and the store of its result 103..135.
    assert stats.cycles == 156
    assert (stats.matmuls, stats.vector_ops) == (1, 1)
    assert stats.spm_peak_bytes == 237 * 4


# ---- Traps ----


def trap_of(program: Program, dram: list[np.ndarray], check: bool = True) -> EmulatorTrap:
    with pytest.raises(EmulatorTrap) as info:
        execute(program, dram, MACHINE, check)
    return info.value


def test_trap_scratchpad_out_of_bounds() -> None:
    builder = ProgramBuilder()
    builder.dma(View.spm(-4, strides=(1,)), View.dram(0, strides=(1,)), (8,), 0)
    builder.wait(0)
    with pytest.raises(
        EmulatorTrap,
        match=r"scratchpad access out of bounds: destination touches elements \[-4, 4\)",
    ):
        execute(builder.build(), [np.zeros(8, np.float32)], MACHINE)


def test_trap_scratchpad_capacity_exceeded() -> None:
    machine = MachineParams(1024, 0, 4, 4, 4, 8)
    builder = ProgramBuilder()
    builder.vector(
        VectorKind.COPY,
        View.spm(200, strides=(1,)),
        [View.imm()],
        (100,),
        location="relu at m.py:3",
    )
    with pytest.raises(
        EmulatorTrap,
        match=r"instruction 0 \(relu at m.py:3\): scratchpad capacity exceeded: dst touches "
        r"elements \[200, 300\) but the scratchpad holds 256 elements",
    ):
        execute(builder.build(), [], machine)


def test_trap_capacity_depends_on_the_loop_iteration() -> None:
    builder = ProgramBuilder()
    depth = builder.loop(3)
    coeffs = [0] * (depth + 1)
    coeffs[depth] = 200_000
    builder.vector(VectorKind.COPY, View.spm(0, coeffs=coeffs, strides=(1,)), [View.imm()], (4,))
    builder.end_loop()
    trap = trap_of(builder.build(), [])
    assert trap.pc == 1
    assert "elements [400000, 400004)" in str(trap)


def test_trap_read_before_wait() -> None:
    builder = ProgramBuilder()
    builder.dma(View.spm(0, strides=(1,)), View.dram(0, strides=(1,)), (64,), token=3)
    builder.vector(
        VectorKind.NEG,
        View.spm(100, strides=(1,)),
        [View.spm(32, strides=(1,))],
        (16,),
        location="accel.vector at model.py:12",
    )
    builder.wait(3)
    trap = trap_of(builder.build(), [np.zeros(64, np.float32)])
    assert str(trap).startswith(
        "emulator trap at instruction 1 (accel.vector at model.py:12): reads scratchpad "
        "elements [32, 48) before dma_wait on token 3"
    )
    assert trap.pc == 1
    assert trap.location == "accel.vector at model.py:12"


def test_trap_store_reads_before_wait() -> None:
    builder = ProgramBuilder()
    builder.dma(View.spm(0, strides=(1,)), View.dram(0, strides=(1,)), (64,), token=1)
    builder.dma(View.dram(1, strides=(1,)), View.spm(60, strides=(1,)), (8,), token=2)
    with pytest.raises(
        EmulatorTrap, match=r"reads scratchpad elements \[60, 68\) before dma_wait on token 1"
    ):
        execute(builder.build(), [np.zeros(64, np.float32), np.zeros(8, np.float32)], MACHINE)


def test_trap_matmul_reads_before_wait() -> None:
    builder = ProgramBuilder()
    builder.dma(View.spm(0, strides=(1,)), View.dram(0, strides=(1,)), (16,), token=0)
    builder.matmul(
        View.spm(100, strides=(0, 4, 1, 0, 0, 0)),
        View.spm(0, strides=(0, 4, 0, 0, 0, 1)),
        View.spm(50, strides=(0, 0, 1, 0, 0, 4)),
        (1, 4, 4, 1, 1, 4),
        accumulate=False,
    )
    with pytest.raises(
        EmulatorTrap, match=r"reads scratchpad elements \[0, 16\) before dma_wait on token 0 \(A;"
    ):
        execute(builder.build(), [np.zeros(16, np.float32)], MACHINE)


def test_trap_overwrite_of_a_store_in_flight() -> None:
    builder = ProgramBuilder()
    builder.dma(View.dram(0, strides=(1,)), View.spm(0, strides=(1,)), (16,), token=0)
    builder.vector(VectorKind.COPY, View.spm(8, strides=(1,)), [View.imm()], (4,))
    with pytest.raises(
        EmulatorTrap,
        match=r"writes scratchpad elements \[8, 12\) while DMA token 0 still stores from \[0, 16\)",
    ):
        execute(builder.build(), [np.zeros(16, np.float32)], MACHINE)


def test_trap_wait_on_unknown_token() -> None:
    builder = ProgramBuilder()
    builder.wait(7)
    with pytest.raises(EmulatorTrap, match="dma_wait on token 7, which is not outstanding"):
        execute(builder.build(), [], MACHINE)


def test_trap_token_reused_while_outstanding() -> None:
    builder = ProgramBuilder()
    builder.dma(View.spm(0, strides=(1,)), View.dram(0, strides=(1,)), (4,), token=5)
    builder.dma(View.spm(8, strides=(1,)), View.dram(0, strides=(1,)), (4,), token=5)
    with pytest.raises(
        EmulatorTrap,
        match=r"dma on token 5, which is still outstanding \(issued at instruction 0\)",
    ):
        execute(builder.build(), [np.zeros(4, np.float32)], MACHINE)


def test_trap_token_outstanding_at_end() -> None:
    builder = ProgramBuilder()
    builder.dma(
        View.spm(0, strides=(1,)), View.dram(0, strides=(1,)), (4,), token=2, location="load x"
    )
    trap = trap_of(builder.build(), [np.zeros(4, np.float32)])
    assert "program ends with DMA token 2 outstanding" in str(trap)
    assert (trap.pc, trap.location) == (0, "load x")


def test_trap_dram_out_of_bounds() -> None:
    builder = ProgramBuilder()
    builder.dma(View.spm(0, strides=(1,)), View.dram(0, c0=10, strides=(1,)), (8,), token=0)
    builder.wait(0)
    with pytest.raises(
        EmulatorTrap,
        match=r"DRAM buffer 0 access out of bounds: source touches elements \[10, 18\) of 16",
    ):
        execute(builder.build(), [np.zeros(16, np.float32)], MACHINE)


def test_trap_missing_dram_buffer() -> None:
    builder = ProgramBuilder()
    store(builder, 3, 0, 4)
    with pytest.raises(EmulatorTrap, match="names DRAM buffer 3 but there are 1 buffers"):
        execute(builder.build(), [np.zeros(4, np.float32)], MACHINE)


def test_trap_dma_needs_one_scratchpad_and_one_dram_side() -> None:
    builder = ProgramBuilder()
    builder.dma(View.spm(0, strides=(1,)), View.spm(8, strides=(1,)), (4,), token=0)
    builder.wait(0)
    with pytest.raises(EmulatorTrap, match="dma needs one scratchpad and one DRAM side"):
        execute(builder.build(), [], MACHINE)


def test_trap_unknown_opcode_and_vector_kind() -> None:
    builder = ProgramBuilder()
    builder.vector(VectorKind.NEG, View.spm(0, strides=(1,)), [View.spm(0, strides=(1,))], (4,))
    program = builder.build()
    program.records[0, W_SUB] = 99
    with pytest.raises(EmulatorTrap, match="unknown vector kind 99"):
        execute(program, [], MACHINE)
    program.records[0, W_OPCODE] = 42
    with pytest.raises(EmulatorTrap, match="unknown opcode 42"):
        execute(program, [], MACHINE)


def test_unchecked_run_skips_dma_rules_but_not_bounds() -> None:
    x = random(8)
    builder = ProgramBuilder()
    builder.dma(View.spm(0, strides=(1,)), View.dram(0, strides=(1,)), (8,), token=0)
    builder.vector(VectorKind.NEG, View.spm(0, strides=(1,)), [View.spm(0, strides=(1,))], (8,))
    builder.dma(View.dram(0, strides=(1,)), View.spm(0, strides=(1,)), (8,), token=0)
    program = builder.build()
    expected = -x
    execute(program, [x], MACHINE, check=False)
    np.testing.assert_array_equal(x, expected)

    builder = ProgramBuilder()
    builder.vector(VectorKind.COPY, View.spm(1 << 20, strides=(1,)), [View.imm()], (4,))
    with pytest.raises(EmulatorTrap, match="scratchpad capacity exceeded"):
        execute(builder.build(), [], MACHINE, check=False)


def test_dram_buffers_must_be_writable_float32() -> None:
    builder = ProgramBuilder()
    with pytest.raises(TypeError, match=r"dram\[0\] must be a float32"):
        execute(builder.build(), [np.zeros(4)], MACHINE)
    read_only = np.zeros(4, np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match=r"dram\[0\] must be C-contiguous and writable"):
        execute(builder.build(), [read_only], MACHINE)
