"""The divisors of a loop extent, from its prime factorisation.

Tile sizes are divisors of extents. Testing every number up to the extent takes hours
for an extent of 2**40; factorising by trial division up to its square root takes at
most about a million steps, and the divisors follow from the prime powers.
"""

from __future__ import annotations

from functools import lru_cache


def prime_factors(n: int) -> dict[int, int]:
    """`{prime: exponent}` of a positive integer `n` (empty for 1)."""
    if n < 1:
        raise ValueError(f"prime_factors takes a positive integer, got {n}")
    factors: dict[int, int] = {}
    candidate = 2
    while candidate * candidate <= n:
        while n % candidate == 0:
            factors[candidate] = factors.get(candidate, 0) + 1
            n //= candidate
        candidate += 1 if candidate == 2 else 2
    if n > 1:
        factors[n] = factors.get(n, 0) + 1
    return factors


@lru_cache(maxsize=4096)
def divisors(n: int) -> tuple[int, ...]:
    """Every divisor of a positive integer `n`, in increasing order."""
    found = [1]
    for prime, exponent in prime_factors(n).items():
        powers = [prime**k for k in range(1, exponent + 1)]
        found += [d * p for d in found for p in powers]
    return tuple(sorted(found))
