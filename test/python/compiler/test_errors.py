"""Compile-time errors that name the operator, the sizes and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import polyfuse
from polyfuse.errors import ScratchpadCapacityError
from polyfuse.targets import load_target

from .test_traffic import SMALL_TARGET


def test_scratchpad_too_small_names_operator_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "crumb.toml"
    path.write_text(SMALL_TARGET.replace("bytes = 16384", "bytes = 128"))
    conv = torch.nn.Conv2d(4, 8, 3, bias=False).eval()
    with pytest.raises(ScratchpadCapacityError) as error:
        polyfuse.compile(conv, [torch.randn(1, 4, 8, 8)], target=load_target(path))
    message = str(error.value)
    assert "no tile of this operator fits" in message
    assert "'tiny' (128 bytes)" in message
    assert "needs" in message and "bytes" in message
