"""Bugs the fuzzer found (bench/fuzz.py), each as the smallest model that showed it.

Tolerance as in polyfuse.testing.fuzz: max |polyfuse - eager| <= 1e-4 * max |eager| + 1e-5,
and the DRAM bytes the compiler planned equal the bytes the emulator moved.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import polyfuse
from polyfuse.errors import PolyfuseError
from polyfuse.testing.fuzz import ABSOLUTE_TOLERANCE, RELATIVE_TOLERANCE


def check_matches_eager(
    model: torch.nn.Module, *inputs: torch.Tensor, schedule: str = "layer-by-layer"
) -> None:
    compiled = polyfuse.compile(model.eval(), list(inputs), target="edge", schedule=schedule)
    with torch.no_grad():
        expected = model(*inputs)
    actual = compiled(*inputs)
    expected_outputs = expected if isinstance(expected, tuple) else (expected,)
    actual_outputs = actual if isinstance(actual, tuple) else (actual,)
    for got, want in zip(actual_outputs, expected_outputs, strict=True):
        assert got.shape == want.shape
        error = float((got - want).abs().max())
        assert error <= RELATIVE_TOLERANCE * float(want.abs().max()) + ABSOLUTE_TOLERANCE
    assert compiled.report is not None
    assert compiled.report.planned_bytes == compiled.report.dram_bytes


@pytest.mark.parametrize(("channels_in", "channels_out", "groups"), [(2, 4, 2), (5, 15, 5)])
def test_grouped_convolution_with_channel_multiplier(
    channels_in: int, channels_out: int, groups: int
) -> None:
    # The output init is an expand_shape of a tensor.empty, which had no DRAM location.
    conv = torch.nn.Conv2d(channels_in, channels_out, 3, padding=1, groups=groups)
    check_matches_eager(conv, torch.randn(1, channels_in, 5, 6))


class GeluTanh(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


def test_gelu_tanh_approximation() -> None:
    # x ** 3 arrived as math.fpowi, which the vector unit did not accept; and torch-mlir's
    # sqrt(2/pi) = 0.797724 put the result 5e-5 off eager (fuzz seed 2, case 54).
    x = torch.linspace(-3, 3, 64).reshape(8, 8)
    compiled = polyfuse.compile(GeluTanh(), [x])
    torch.testing.assert_close(compiled(x), GeluTanh()(x), rtol=0, atol=1e-6)
    check_matches_eager(GeluTanh(), 3 * torch.randn(2, 7, 3))


class AvgPoolExcludingPadding(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        square = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
        oblong = F.avg_pool2d(x, (2, 3), stride=(1, 2), padding=1, count_include_pad=False)
        return square, oblong


def test_avg_pool_excluding_padding() -> None:
    # torch-mlir computes the divisor with linalg.index in the body; decomposed instead.
    check_matches_eager(AvgPoolExcludingPadding(), torch.randn(2, 3, 9, 7))


class Reductions(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.sum(), x.amax()


def test_rank_zero_outputs() -> None:
    # A rank-0 tensor's tile has no dims (IndexError), and came back with shape (1,).
    check_matches_eager(Reductions(), torch.randn(2, 4))


class PermutedGlobalPool(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        permuted = x.permute(0, 3, 1, 2)
        return F.adaptive_avg_pool2d(permuted, 1), F.adaptive_avg_pool2d(permuted, 2)


def test_global_average_pool_of_a_permuted_tensor() -> None:
    # PyTorch's decomposition ends in aten.as_strided, which polyfuse rejected (fuzz seed 0,
    # case 1369: batch_norm -> permute -> adaptive_avg_pool2d(1)).
    check_matches_eager(PermutedGlobalPool(), torch.randn(1, 4, 12, 6))


class ConcatThenPool(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 12, (3, 1), stride=(1, 3), padding=1, groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(torch.sigmoid(torch.cat([x, x], dim=3)), 2, stride=1)
        return self.conv(pooled)


def test_fused_schedule_with_a_storage_read_through_a_view() -> None:
    # The fusion planner looked up the padding of a storage by the row of an access
    # through a view (the concat), whose rank differs: IndexError (fused fuzz, seed 5).
    check_matches_eager(ConcatThenPool(), torch.randn(2, 2, 8, 8), schedule="fused")


class UpdateThroughEvalDropout(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dropout = torch.nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(x)  # in eval mode y is x itself
        y.add_(0.5)  # so this updates x, and the x * 2 below reads the updated x
        return x * 2


def test_in_place_update_through_an_eval_mode_dropout() -> None:
    # Eager updates the input and returns (x + 0.5) * 2; polyfuse must do the same or
    # refuse the model with a PolyfuseError (fuzz seed 424242: in_place + dropout).
    model = UpdateThroughEvalDropout().eval()
    eager_input, compiled_input = torch.zeros(2, 3), torch.zeros(2, 3)
    with torch.no_grad():
        expected = model(eager_input)
    try:
        compiled = polyfuse.compile(model, [torch.zeros(2, 3)])
    except PolyfuseError:
        return
    actual = compiled(compiled_input)
    torch.testing.assert_close(actual, expected)
    torch.testing.assert_close(compiled_input, eager_input)


class UpdateInputOfEvalDropout(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dropout = torch.nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(x)  # in eval mode y is x itself
        x.mul_(3.0)  # so this updates y too
        return y + 1.0


def test_in_place_update_of_an_eval_mode_dropouts_input() -> None:
    # Fuzz seed 31337, case 822: eager returns 3x + 1; polyfuse must do the same or refuse.
    model = UpdateInputOfEvalDropout().eval()
    eager_input, compiled_input = torch.ones(2, 3), torch.ones(2, 3)
    with torch.no_grad():
        expected = model(eager_input)
    try:
        compiled = polyfuse.compile(model, [torch.ones(2, 3)])
    except PolyfuseError:
        return
    torch.testing.assert_close(compiled(compiled_input), expected)
    torch.testing.assert_close(compiled_input, eager_input)
