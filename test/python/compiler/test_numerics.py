"""Numerics of compiled models against eager PyTorch.

Tolerance: max |polyfuse - eager| <= 1e-4 * max |eager| (fp32; the emulator sums in a
different order than PyTorch's kernels, and BatchNorm is folded into convolutions).
"""

from __future__ import annotations

import warnings

import pytest
import torch

import polyfuse
from polyfuse.dynamo_backend import polyfuse_backend
from polyfuse.models import get_model

RELATIVE_TOLERANCE = 1e-4


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize(
    "name",
    [
        "mlp",
        "lenet",
        "basic_block",
        "basic_block_strided",
        "bottleneck",
        "inverted_residual",
        "transformer_encoder",
    ],
)
def test_small_models_match_eager(name: str) -> None:
    model, inputs = get_model(name)
    compiled = polyfuse.compile(model, inputs, target="edge")
    with torch.no_grad():
        expected = model(*inputs)
    actual = compiled(*inputs)
    assert isinstance(actual, torch.Tensor)
    assert actual.shape == expected.shape
    assert relative_error(actual, expected) <= RELATIVE_TOLERANCE
    report = compiled.report
    assert report is not None
    # What the compiler planned is what the emulator moved.
    assert report.planned_bytes == report.dram_bytes


@pytest.mark.parametrize("target", ["vta", "gemmini", "inferentia-like"])
def test_presets_match_eager(target: str) -> None:
    model, inputs = get_model("basic_block_strided")
    compiled = polyfuse.compile(model, inputs, target=target)
    with torch.no_grad():
        expected = model(*inputs)
    assert relative_error(compiled(*inputs), expected) <= RELATIVE_TOLERANCE  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["lenet", "inverted_residual"])
def test_torch_compile_backend(name: str) -> None:
    model, inputs = get_model(name)
    compiled = torch.compile(model, backend="polyfuse", dynamic=False)
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        expected = model(*inputs)
        actual = compiled(*inputs)
    assert not [w for w in caught if "polyfuse" in str(w.message)], "fell back to eager"
    assert relative_error(actual, expected) <= RELATIVE_TOLERANCE


def test_backend_is_registered_by_name() -> None:
    assert "polyfuse" in torch._dynamo.list_backends()


def test_torch_compile_falls_back_with_one_warning() -> None:
    class Sorts(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sort(x, dim=-1).values * 2

    x = torch.randn(3, 4)
    compiled = torch.compile(Sorts(), backend=polyfuse_backend, dynamic=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = compiled(x)
    messages = [str(w.message) for w in caught if "polyfuse" in str(w.message)]
    assert len(messages) == 1
    assert "aten.sort is not supported" in messages[0]
    torch.testing.assert_close(result, torch.sort(x, dim=-1).values * 2)


def test_compiled_model_rejects_other_shapes() -> None:
    model, inputs = get_model("mlp")
    compiled = polyfuse.compile(model, inputs)
    with pytest.raises(polyfuse.PolyfuseError, match="compiled for"):
        compiled(torch.randn(2, 64))
