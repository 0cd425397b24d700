"""Divisors of loop extents (the tile sizes), from the prime factorisation."""

from __future__ import annotations

import pytest

from polyfuse.analysis.divisors import divisors, prime_factors


def test_divisors_match_trial_division() -> None:
    for n in range(1, 2000):
        assert divisors(n) == tuple(d for d in range(1, n + 1) if n % d == 0), n


@pytest.mark.parametrize(
    ("n", "count"),
    [
        (2**40, 41),
        (2**40 - 87, 2),  # a prime: the loop runs up to its square root, about 10**6 steps
        (963_761_198_400, 6720),  # the most divisors below 10**12
    ],
)
def test_divisors_of_huge_extents(n: int, count: int) -> None:
    found = divisors(n)
    assert len(found) == count and found[0] == 1 and found[-1] == n
    assert all(n % d == 0 for d in found)


def test_prime_factors() -> None:
    assert prime_factors(1) == {}
    assert prime_factors(360) == {2: 3, 3: 2, 5: 1}
    with pytest.raises(ValueError, match="positive integer, got 0"):
        prime_factors(0)
