"""ATen decompositions polyfuse adds to torch-mlir's table before import.

`avg_pool2d(count_include_pad=False)` with padding: torch-mlir lowers it to a generic
whose divisor is computed from `linalg.index` in the body, which the vector unit cannot
run. Decomposed here into two pools that the lowering handles (exact up to rounding):

    sum over the window / number of window elements inside the input
    = avg_pool2d(x, count_include_pad=True) / avg_pool2d(ones, count_include_pad=True)

`gelu(approximate="tanh")`: torch-mlir's lowering uses 0.797724 for sqrt(2/pi)
(0.7978846), a relative error of 2e-4 that the fuzzer caught against eager PyTorch.
Decomposed here with the exact constant, as PyTorch computes it.

`adaptive_avg_pool2d(x, 1)` of a non-contiguous `x` (after a permute): PyTorch's
decomposition is a mean followed by `as_strided` to restore the input's memory format,
which polyfuse does not lower (strides are the lowering's business). Decomposed here to
the mean alone (fuzz seed 0, case 1369).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch_mlir import fx

aten = torch.ops.aten


def _pair(value: int | list[int] | tuple[int, ...]) -> list[int]:
    if isinstance(value, int):
        return [value, value]
    return [value[0], value[0]] if len(value) == 1 else list(value)


def avg_pool2d_excluding_padding(
    x: torch.Tensor,
    kernel_size: list[int],
    stride: list[int] | tuple[int, ...] = (),
    padding: int | list[int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Any:
    """avg_pool2d(count_include_pad=False) with padding as a ratio of two padded pools."""
    if count_include_pad or divisor_override is not None or not any(_pair(padding)):
        return NotImplemented
    summed = aten.avg_pool2d.default(x, kernel_size, stride, padding, ceil_mode, True, None)
    ones = aten.full.default([1, 1, *x.shape[-2:]], 1.0, dtype=x.dtype, device=x.device)
    share = aten.avg_pool2d.default(ones, kernel_size, stride, padding, ceil_mode, True, None)
    return summed / share


def gelu_tanh(x: torch.Tensor, approximate: str = "none") -> Any:
    """gelu(approximate="tanh") = x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))."""
    if approximate != "tanh":
        return NotImplemented
    inner = math.sqrt(2 / math.pi) * (x + 0.044715 * (x * x * x))
    return 0.5 * x * (1 + torch.tanh(inner))


def global_average_pool(x: torch.Tensor, output_size: list[int]) -> Any:
    """adaptive_avg_pool2d(x, 1) = mean over the last two dims, keepdim."""
    if any(size != 1 for size in output_size):
        return NotImplemented
    return aten.mean.dim(x, [-2, -1], True)


def decomposition_table() -> dict[Any, Callable[..., Any]]:
    """torch-mlir's decompositions plus polyfuse's."""
    table: dict[Any, Callable[..., Any]] = dict(fx.get_decomposition_table())
    table[aten.avg_pool2d.default] = avg_pool2d_excluding_padding
    table[aten.gelu.default] = gelu_tanh
    table[aten.adaptive_avg_pool2d.default] = global_average_pool
    table[aten._adaptive_avg_pool2d.default] = global_average_pool
    return table
