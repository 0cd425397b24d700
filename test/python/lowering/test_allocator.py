"""The whole-program scratchpad allocator: liveness, reuse, partitions, capacity errors."""

from __future__ import annotations

import pytest

from polyfuse.errors import ScratchpadCapacityError
from polyfuse.lowering.allocator import BufferRequest, allocate


def test_live_buffers_are_disjoint_and_dead_space_is_reused() -> None:
    requests = [
        BufferRequest("a", 64, 0, 10),
        BufferRequest("b", 32, 0, 10),  # with a: one operator
        BufferRequest("c", 96, 20, 30),  # after a and b are dead
    ]
    allocation = allocate(requests, capacity_elements=128, lookahead=0)
    a, b, c = allocation.offsets
    assert (a, b) == (0, 64)
    assert c == 0  # reuses the space of a and b
    assert allocation.peak_elements == 96
    assert allocation.average_elements == pytest.approx((64 * 10 + 32 * 10 + 96 * 10) / 30)


def test_lookahead_keeps_the_next_operator_clear_when_there_is_room() -> None:
    requests = [BufferRequest("a", 32, 0, 10), BufferRequest("b", 32, 12, 20)]
    assert allocate(requests, 128).offsets == (0, 32)  # b can load while a computes
    assert allocate(requests, 48).offsets == (0, 0)  # no room: b reuses a's space
    assert allocate(requests, 128, lookahead=0).offsets == (0, 0)


def test_overlapping_lifetimes_never_share_elements() -> None:
    requests = [BufferRequest(f"r{i}", 16 * (1 + i % 3), 2 * i, 2 * i + 5) for i in range(20)]
    allocation = allocate(requests, capacity_elements=4096)
    for i, x in enumerate(requests):
        for j, y in enumerate(requests):
            if i < j and x.overlaps(y):
                xo, yo = allocation.offsets[i], allocation.offsets[j]
                assert xo + x.elements <= yo or yo + y.elements <= xo, (x, y)


def test_partitions_and_capacity_error() -> None:
    partitions = {"inputs": (0, 64), "weights": (64, 32), "outputs": (96, 32)}
    requests = [
        BufferRequest("in", 48, 0, 10, "inputs"),
        BufferRequest("w", 32, 0, 10, "weights"),
        BufferRequest("out", 16, 0, 10, "outputs"),
    ]
    assert allocate(requests, 128, partitions).offsets == (0, 64, 96)
    too_big = [*requests, BufferRequest("w2", 16, 5, 10, "weights")]
    with pytest.raises(
        ScratchpadCapacityError,
        match=r"w2: buffers of 64 bytes do not fit partition 'weights' \(128 bytes\) next to "
        r"the 128 bytes live at the same time",
    ):
        allocate(too_big, 128, partitions)
