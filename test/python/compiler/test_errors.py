"""Compile-time errors that name the operator, the sizes and what to do."""

from __future__ import annotations

import pytest
import torch

import polyfuse
from polyfuse.errors import ScratchpadCapacityError
from polyfuse.testing.targets import edge_like


def test_scratchpad_too_small_names_operator_and_bytes() -> None:
    conv = torch.nn.Conv2d(4, 8, 3, bias=False).eval()
    with pytest.raises(ScratchpadCapacityError) as error:
        polyfuse.compile(conv, [torch.randn(1, 4, 8, 8)], target=edge_like(128, name="tiny"))
    message = str(error.value)
    assert "no tile of this operator fits" in message
    assert "'tiny' (128 bytes)" in message
    assert "needs" in message and "bytes" in message
