"""Shared fixtures: single-threaded PyTorch and emulator, as in the benchmarks."""

from __future__ import annotations

import pytest
import torch

from polyfuse.runtime.emulator import set_num_threads


@pytest.fixture(autouse=True, scope="session")
def _single_thread() -> None:
    torch.set_num_threads(1)
    set_num_threads(1)
