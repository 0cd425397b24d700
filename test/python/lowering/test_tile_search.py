"""The tile search: capacity respected, least traffic, clear failure."""

from __future__ import annotations

import itertools

from polyfuse.analysis.affine import AffineAccess
from polyfuse.analysis.tile_search import (
    TiledOperand,
    TilingProblem,
    box_elements,
    moved_elements,
    moved_rows,
    search_tiling,
)

# C[m, n] += A[m, k] * B[k, n]; loops (m, n, k).
A = AffineAccess(((1, 0, 0), (0, 0, 1)), (0, 0), 3)
B = AffineAccess(((0, 0, 1), (0, 1, 0)), (0, 0), 3)
C = AffineAccess(((1, 0, 0), (0, 1, 0)), (0, 0), 3)


def matmul(m: int, n: int, k: int, capacity: int) -> TilingProblem:
    return TilingProblem(
        extents=(m, n, k),
        is_reduction=(False, False, True),
        operands=(TiledOperand(A), TiledOperand(B), TiledOperand(C, is_output=True, reads=False)),
        temporaries=0,
        capacity_elements=capacity,
    )


def brute_force_traffic(m: int, n: int, k: int, capacity: int) -> int:
    """Least traffic over every tiling and both parallel loop orders, by enumeration."""
    best = None
    divisors = [[d for d in range(1, e + 1) if e % d == 0] for e in (m, n, k)]
    for tm, tn, tk in itertools.product(*divisors):
        if tm * tk + tk * tn + tm * tn > capacity:
            continue
        trips = (m // tm, n // tn, k // tk)
        for outer, inner in ((0, 1), (1, 0)):
            order = [loop for loop in (outer, inner, 2) if trips[loop] > 1]

            def loads(
                used: set[int], box: int, order: list[int] = order, trips: tuple[int, ...] = trips
            ) -> int:
                depth = max((i + 1 for i, loop in enumerate(order) if loop in used), default=0)
                count = 1
                for loop in order[:depth]:
                    count *= trips[loop]
                return box * count

            total = loads({0, 2}, tm * tk) + loads({1, 2}, tk * tn) + m * n
            best = total if best is None else min(best, total)
    assert best is not None
    return best


def test_everything_fits_in_one_tile() -> None:
    tiling = search_tiling(matmul(16, 16, 16, 10_000))
    assert tiling is not None
    assert tiling.tile == (16, 16, 16)
    assert tiling.traffic_elements == 3 * 256


def test_search_matches_brute_force_and_fits() -> None:
    for m, n, k, capacity in [(64, 96, 128, 4048), (32, 32, 64, 600), (12, 20, 30, 100)]:
        tiling = search_tiling(matmul(m, n, k, capacity))
        assert tiling is not None
        boxes = sum(box_elements(a, tiling.tile) for a in (A, B, C))
        assert boxes == tiling.footprint_elements <= capacity
        assert tiling.traffic_elements == brute_force_traffic(m, n, k, capacity)


def test_conv_halo_box() -> None:
    # Input rows of a 3x3 stride-2 convolution: oh*2 + kh over a tile of 4 rows, 3 taps.
    access = AffineAccess(((2, 1),), (0,), 2)
    assert box_elements(access, (4, 3)) == 2 * 3 + 2 + 1


def test_a_strided_row_moves_only_the_values_it_reads() -> None:
    # Input rows and columns of a stride-2 convolution: (oh*2 + kh, ow*2 + kw), loops
    # (oh, ow, kh, kw). With one tap a tile of 4 rows reads rows 0, 2, 4, 6 of its
    # 7-row box: the DMA moves those 4, 2 apart. The columns (the contiguous dim, where
    # skipped values share DRAM bursts) move whole. With 3 taps the rows overlap.
    access = AffineAccess(((2, 0, 1, 0), (0, 2, 0, 1)), (0, 0), 4)
    assert moved_rows(access, (4, 4, 1, 1)) == ((4, 2), (7, 1))
    assert box_elements(access, (4, 4, 1, 1)) == 7 * 7
    assert moved_rows(access, (4, 4, 3, 1)) == ((9, 1), (7, 1))
    assert moved_elements(access, (8, 8, 1, 1)) == 8 * 15
    # The search counts moved elements as traffic and boxes as footprint: over 8 x 8
    # outputs of a 1x1 stride-2 convolution, one output column per tile reads exactly
    # the 64 input values used (8 rows 2 apart, one column), into a 15-row box.
    problem = TilingProblem(
        extents=(8, 8, 1, 1),
        is_reduction=(False, False, True, True),
        operands=(
            TiledOperand(access),
            TiledOperand(
                AffineAccess(((1, 0, 0, 0), (0, 1, 0, 0)), (0, 0), 4), is_output=True, reads=False
            ),
        ),
        temporaries=0,
        capacity_elements=512,
    )
    tiling = search_tiling(problem)
    assert tiling is not None and tiling.tile == (8, 1, 1, 1)
    assert tiling.traffic_elements == 64 + 64
    assert tiling.footprint_elements == 15 + 8


def test_nothing_fits() -> None:
    assert search_tiling(matmul(8, 8, 8, 2)) is None
