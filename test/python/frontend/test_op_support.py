"""Models polyfuse cannot compile get an error naming the operator and the source line."""

from __future__ import annotations

import pytest
import torch

import polyfuse
from polyfuse.errors import UnsupportedError


class Sorts(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sort(x, dim=-1).values


class Integer(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.int32) + 1


def test_unsupported_operator_names_op_and_line() -> None:
    with pytest.raises(UnsupportedError) as error:
        polyfuse.compile(Sorts(), [torch.randn(2, 8)])
    message = str(error.value)
    assert "aten.sort is not supported" in message
    assert "test_op_support.py" in message  # the user's source line
    assert "Supported operators" in message


def test_integer_tensors_are_rejected() -> None:
    with pytest.raises(UnsupportedError, match="float32 tensors only"):
        polyfuse.compile(Integer(), [torch.randn(2, 8)])


def test_integer_inputs_are_rejected() -> None:
    with pytest.raises(UnsupportedError, match=r"input 0 has dtype torch.int64"):
        polyfuse.compile(torch.nn.Identity(), [torch.arange(4)])
