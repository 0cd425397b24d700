"""Ordinary PyTorch patterns give eager's answer or a clear PolyfuseError, never a
silently different number.

Tolerance: max |polyfuse - eager| <= 1e-4 * max |eager| (fp32, different summation order).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import polyfuse
from polyfuse.errors import UnsupportedError

RELATIVE_TOLERANCE = 1e-4


def close(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    scale = float(expected.abs().max()) or 1.0
    return float((actual - expected).abs().max()) <= RELATIVE_TOLERANCE * scale


# -- train mode ------------------------------------------------------------------------


def test_train_mode_batch_norm_is_refused_and_the_module_is_left_in_train_mode() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    assert model.training
    with pytest.raises(
        UnsupportedError, match=r"train mode .*'1' \(BatchNorm2d\).*model\.eval\(\)"
    ):
        polyfuse.compile(model, (torch.randn(1, 3, 8, 8),))
    assert model.training and all(m.training for m in model.modules())


def test_train_mode_dropout_is_refused() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.1))
    with pytest.raises(UnsupportedError, match=r"Dropout.*model\.eval\(\)"):
        polyfuse.compile(model, (torch.randn(2, 8),))


def test_functional_dropout_in_training_is_refused_with_the_source_line() -> None:
    class Drop(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.dropout(x, 0.2, training=True)

    with pytest.raises(UnsupportedError, match=r"native_dropout draws random.*test_user_patterns"):
        polyfuse.compile(Drop().eval(), (torch.randn(2, 8),))


def test_train_mode_without_train_only_behaviour_compiles_and_mode_is_kept() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    x = torch.randn(2, 8)
    compiled = polyfuse.compile(model, (x,))
    assert model.training
    assert close(compiled(x), model(x).detach())


def test_eval_model_with_batch_norm_is_not_switched_or_changed() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 3, 8, 8)
    compiled = polyfuse.compile(model, (x,))
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    with torch.no_grad():
        assert close(compiled(x), model(x))


# -- buffers and inputs updated in forward ----------------------------------------------


class Counter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(4))
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.add_(1.0)
        return self.linear(x) * self.calls


@pytest.mark.parametrize("schedule", ["layer-by-layer", "fused"])
def test_buffer_updates_are_written_back_each_call(schedule: str) -> None:
    torch.manual_seed(0)
    model, twin = Counter().eval(), Counter().eval()
    twin.load_state_dict(model.state_dict())
    x = torch.randn(2, 4)
    compiled = polyfuse.compile(model, (x,), schedule=schedule)
    assert torch.equal(model.calls, torch.zeros(4))  # compiling does not run forward
    with torch.no_grad():
        for _ in range(3):
            assert close(compiled(x), twin(x))
            assert torch.equal(model.calls, twin.calls)  # the caller's buffer, as eager
    assert torch.equal(model.calls, torch.full((4,), 3.0))


class ScaleInPlace(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.mul_(2.0)
        return x + 1.0


def test_input_mutated_in_place_is_mutated_and_the_result_is_a_tensor() -> None:
    x = torch.randn(2, 3)
    compiled = polyfuse.compile(ScaleInPlace(), (x.clone(),))
    eager_x, compiled_x = x.clone(), x.clone()
    expected = ScaleInPlace()(eager_x)
    actual = compiled(compiled_x)
    assert isinstance(actual, torch.Tensor)
    assert close(actual, expected)
    assert torch.equal(compiled_x, eager_x)


# -- shared and tied parameters -------------------------------------------------------------


class LayerTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(8, 8)
        self.head = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.shared(torch.relu(self.shared(x))))


class TiedWeights(nn.Module):
    """An encoder and a decoder sharing one weight (like a tied embedding / LM head)."""

    def __init__(self) -> None:
        super().__init__()
        self.encode = nn.Linear(8, 16, bias=False)
        self.middle = nn.Linear(16, 16)
        self.decode = nn.Linear(16, 8, bias=False)
        self.decode.weight = nn.Parameter(self.encode.weight.t().contiguous())
        self.again = nn.Linear(8, 16)
        self.again.weight = self.encode.weight  # a second module holds the same Parameter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.again(self.decode(torch.relu(self.middle(self.encode(x)))))


@pytest.mark.parametrize("schedule", ["layer-by-layer", "fused"])
@pytest.mark.parametrize("make", [LayerTwice, TiedWeights])
def test_shared_and_tied_parameters_match_eager(make: type[nn.Module], schedule: str) -> None:
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(4, 8)
    compiled = polyfuse.compile(model, (x,), schedule=schedule)
    with torch.no_grad():
        assert close(compiled(x), model(x))


@pytest.mark.parametrize(
    "rnn", [nn.LSTM(8, 8, batch_first=True), nn.GRU(8, 8, batch_first=True)], ids=str
)
def test_recurrent_layers_bind_their_weights(rnn: nn.Module) -> None:
    torch.manual_seed(0)
    model = rnn.eval()
    x = torch.randn(2, 3, 8)
    compiled = polyfuse.compile(model, (x,))
    with torch.no_grad():
        expected = model(x)
        actual = compiled(x)
    assert close(actual[0], expected[0])


# -- threads ------------------------------------------------------------------------------


def test_calls_from_several_threads_are_each_right() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64)).eval()
    compiled = polyfuse.compile(model, (torch.randn(16, 64),))
    inputs = [torch.randn(16, 64) for _ in range(20)]
    with torch.no_grad():
        expected = [model(x) for x in inputs]
    results: dict[int, torch.Tensor] = {}

    def work(index: int) -> None:
        results[index] = compiled(inputs[index])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(close(results[i], expected[i]) for i in range(len(inputs)))


# -- call-time inputs ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def linear() -> Any:
    torch.manual_seed(0)
    return polyfuse.compile(nn.Linear(4, 3).eval(), (torch.randn(2, 4),))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (torch.randn(2, 4, dtype=torch.float64), r"dtype torch\.float64 .*\.to\(torch\.float32\)"),
        (torch.ones(2, 4, dtype=torch.int64), r"dtype torch\.int64"),
        (torch.ones(2, 4, dtype=torch.bool), r"dtype torch\.bool"),
        (torch.ones(2, 4, dtype=torch.float16), r"dtype torch\.float16"),
        (torch.ones(2, 4, dtype=torch.complex64), r"dtype torch\.complex64"),
        (np.ones((2, 4), dtype=np.float32), r"ndarray.*torch\.from_numpy"),
        ([[1.0] * 4] * 2, r"called with arguments structured"),
        (None, r"NoneType"),
        (torch.empty(2, 4, device="meta"), r"device 'meta'.*\.cpu\(\)"),
        (torch.randn(3, 4), r"shape \(3, 4\).*compiled for \(2, 4\)"),
    ],
    ids=["f64", "i64", "bool", "f16", "complex", "numpy", "list", "none", "meta", "shape"],
)
def test_wrong_call_time_inputs_are_refused(linear: Any, value: Any, message: str) -> None:
    with pytest.raises(polyfuse.PolyfuseError, match=message):
        linear(value)


def test_wrong_number_of_inputs_and_keywords_are_refused(linear: Any) -> None:
    x = torch.randn(2, 4)
    with pytest.raises(polyfuse.PolyfuseError, match="called with 2 tensor argument"):
        linear(x, x)
    with pytest.raises(polyfuse.PolyfuseError, match="called with"):
        linear(x=x)


def test_non_contiguous_input_is_read_correctly() -> None:
    wide = torch.randn(4, 2).t()  # (2, 4), not contiguous
    torch.manual_seed(0)
    model = nn.Linear(4, 3).eval()
    compiled = polyfuse.compile(model, (torch.randn(2, 4),))
    with torch.no_grad():
        assert close(compiled(wide), model(wide))


# -- output structure ----------------------------------------------------------------------


class Structured(nn.Module):
    def forward(self, x: torch.Tensor, pair: tuple[torch.Tensor, torch.Tensor]) -> Any:
        a, b = pair
        return {"sum": x + a, "parts": [x * b, (a - b, torch.relu(x))]}


def test_structured_inputs_and_outputs_come_back_as_eager_returns_them() -> None:
    x, a, b = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    compiled = polyfuse.compile(Structured(), (x, (a, b)))
    actual = compiled(x, (a, b))
    expected = Structured()(x, (a, b))
    assert isinstance(actual, dict) and list(actual) == ["sum", "parts"]
    assert isinstance(actual["parts"], list) and isinstance(actual["parts"][1], tuple)
    flat_actual, tree_actual = torch.utils._pytree.tree_flatten(actual)
    flat_expected, tree_expected = torch.utils._pytree.tree_flatten(expected)
    assert tree_actual == tree_expected
    assert all(close(p, q) for p, q in zip(flat_actual, flat_expected, strict=True))


def test_example_inputs_must_be_a_sequence() -> None:
    with pytest.raises(UnsupportedError, match="pass a tuple or list"):
        polyfuse.compile(nn.ReLU(), torch.randn(2, 2))  # type: ignore[arg-type]
