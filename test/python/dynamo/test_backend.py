"""`torch.compile(model, backend="polyfuse")` against eager PyTorch.

Tolerance: max |polyfuse - eager| <= 1e-4 * max |eager| (fp32; the emulator sums in a
different order than PyTorch's kernels, and BatchNorm is folded into convolutions).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch

import polyfuse
from polyfuse import last_run
from polyfuse.dynamo_backend import compile_options, polyfuse_backend
from polyfuse.errors import PolyfuseError, UnsupportedError
from polyfuse.models import get_model
from polyfuse.report import Report

RELATIVE_TOLERANCE = 1e-4
CALLS = 3


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _polyfuse_warnings(caught: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in caught if "polyfuse" in str(w.message)]


def _inner_error(error: BaseException) -> BaseException:
    """The backend's own exception inside Dynamo's BackendCompilerFailed."""
    return getattr(error, "inner_exception", None) or error


def _assert_fell_back(caught: list[warnings.WarningMessage], fell_back: bool = True) -> None:
    """One fallback warning, attributed to this file (the model's source), or none."""
    messages = _polyfuse_warnings(caught)
    assert len(messages) == (1 if fell_back else 0), [str(m.message) for m in messages]
    assert all(m.filename == __file__ for m in messages), [m.filename for m in messages]


# --- models ------------------------------------------------------------------------------


class CountsCalls(torch.nn.Module):
    """Updates a registered buffer in forward (a call counter) and uses it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(8, 8)
        self.register_buffer("calls", torch.zeros(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.add_(1)
        return self.linear(x) + self.calls


class AddsToInput(torch.nn.Module):
    """Writes to its input in place."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.add_(1)
        return self.linear(x)


class Sorts(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sort(x, dim=-1).values * 2  # SORT_LINE


class LinearBatchNorm(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(16, 32)
        self.norm = torch.nn.BatchNorm1d(32)
        with torch.no_grad():
            self.norm.running_mean.uniform_(-1, 1)
            self.norm.running_var.uniform_(0.5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.linear(x)))


def _twins(model_class: type[torch.nn.Module]) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Two identical models: one to compile, one to run eagerly."""
    compiled, eager = model_class().eval(), model_class().eval()
    eager.load_state_dict(compiled.state_dict())
    return compiled, eager


# --- mutation ----------------------------------------------------------------------------


def _refuse_mutation(monkeypatch: pytest.MonkeyPatch) -> None:
    """polyfuse.compile as if it did not support buffer or input mutation."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise UnsupportedError("the model writes to a buffer or an input (test)")

    monkeypatch.setattr("polyfuse.compiler.compile", refuse)


@pytest.mark.parametrize("compile_refuses", [False, True], ids=["written-back", "refused"])
def test_buffer_mutation_matches_eager_over_calls(
    compile_refuses: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if compile_refuses:
        _refuse_mutation(monkeypatch)
    model, eager = _twins(CountsCalls)
    compiled = torch.compile(model, backend="polyfuse", dynamic=False)
    x = torch.randn(2, 8)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        for _ in range(CALLS):
            actual, expected = compiled(x), eager(x)
            assert relative_error(actual, expected) <= RELATIVE_TOLERANCE
            torch.testing.assert_close(model.calls, eager.calls)
    assert torch.equal(model.calls, torch.full((8,), float(CALLS)))
    _assert_fell_back(caught, compile_refuses)


@pytest.mark.parametrize("compile_refuses", [False, True], ids=["written-back", "refused"])
def test_input_mutation_matches_eager_over_calls(
    compile_refuses: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if compile_refuses:
        _refuse_mutation(monkeypatch)
    model, eager = _twins(AddsToInput)
    compiled = torch.compile(model, backend="polyfuse", dynamic=False)
    x = torch.randn(2, 8)
    x_compiled, x_eager = x.clone(), x.clone()
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        for _ in range(CALLS):
            actual, expected = compiled(x_compiled), eager(x_eager)
            assert relative_error(actual, expected) <= RELATIVE_TOLERANCE
            torch.testing.assert_close(x_compiled, x_eager)
    torch.testing.assert_close(x_compiled, x + CALLS)
    _assert_fell_back(caught, compile_refuses)


# --- options -----------------------------------------------------------------------------


def _spy_on_compile(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record the keyword arguments the backend passes to polyfuse.compile."""
    import polyfuse.compiler

    real = polyfuse.compiler.compile
    calls: list[dict[str, Any]] = []

    def spy(model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(dict(kwargs))
        return real(model, inputs, *args, **kwargs)

    spy.__signature__ = inspect.signature(real)  # type: ignore[attr-defined]
    monkeypatch.setattr("polyfuse.compiler.compile", spy)
    return calls


def test_options_are_passed_to_polyfuse_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy_on_compile(monkeypatch)
    model, inputs = get_model("lenet")
    options = {"target": "vta", "schedule": "fused", "overlap": False, "embedding": "fixed"}
    compiled = torch.compile(model, backend="polyfuse", dynamic=False, options=options)
    with torch.no_grad():
        actual, expected = compiled(*inputs), model(*inputs)
    assert calls == [options]
    assert relative_error(actual, expected) <= RELATIVE_TOLERANCE
    report = polyfuse.last_report()
    assert report is not None
    assert (report.target, report.overlap) == ("vta", False)


def test_every_option_of_polyfuse_compile_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    import polyfuse.compiler

    signature = inspect.signature(polyfuse.compiler.compile)
    defaults = {name: signature.parameters[name].default for name in compile_options()}
    assert set(defaults) >= {"target", "keep_ir", "check", "schedule", "overlap", "sanitize"}
    assert set(defaults) >= {"embedding", "traffic_first", "halo"}
    calls = _spy_on_compile(monkeypatch)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
    compiled = torch.compile(model, backend="polyfuse", dynamic=False, options=defaults)
    x = torch.randn(2, 8)
    with torch.no_grad():
        assert relative_error(compiled(x), model(x)) <= RELATIVE_TOLERANCE
    assert calls == [defaults]


@pytest.mark.parametrize("options", [{"taget": "vta"}, {"target": "edge", "fused": True}])
def test_an_unknown_option_is_refused(options: dict[str, Any]) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 4)).eval()
    compiled = torch.compile(model, backend="polyfuse", dynamic=False, options=options)
    with pytest.raises(Exception) as info, torch.no_grad():
        compiled(torch.randn(2, 8))
    error = _inner_error(info.value)
    assert isinstance(error, PolyfuseError)
    unknown = next(name for name in options if name not in ("target",))
    assert f"unknown polyfuse backend option '{unknown}'" in str(error)
    assert "valid options: target, keep_ir, check, schedule" in str(error)
    assert "strict" in str(error)


def test_a_mode_is_refused() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 4)).eval()
    compiled = torch.compile(model, backend="polyfuse", dynamic=False, mode="max-autotune")
    with pytest.raises(Exception) as info, torch.no_grad():
        compiled(torch.randn(2, 8))
    error = _inner_error(info.value)
    assert isinstance(error, PolyfuseError)
    assert "the polyfuse backend has no mode 'max-autotune'" in str(error)


def test_strict_raises_instead_of_falling_back() -> None:
    compiled = torch.compile(Sorts(), backend="polyfuse", dynamic=False, options={"strict": True})
    with pytest.raises(Exception) as info:
        compiled(torch.randn(3, 4))
    error = _inner_error(info.value)
    assert isinstance(error, PolyfuseError)
    assert "polyfuse could not compile this graph" in str(error)
    assert "aten.sort is not supported" in str(error)


def test_strict_false_falls_back() -> None:
    compiled = torch.compile(Sorts(), backend="polyfuse", dynamic=False, options={"strict": False})
    x = torch.randn(3, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.testing.assert_close(compiled(x), torch.sort(x, dim=-1).values * 2)
    _assert_fell_back(caught)


# --- the fallback warning names the user's line ------------------------------------------


def test_fallback_warning_points_at_the_users_line() -> None:
    lines, first = inspect.getsourcelines(Sorts.forward)
    sort_line = first + next(i for i, line in enumerate(lines) if "SORT_LINE" in line)
    compiled = torch.compile(Sorts(), backend=polyfuse_backend, dynamic=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled(torch.randn(3, 4))
    (warning,) = _polyfuse_warnings(caught)
    assert (warning.filename, warning.lineno) == (__file__, sort_line)
    assert f"graph from {__file__}:{sort_line} in forward" in str(warning.message)


# --- parameters are constants: the bytes of polyfuse.compile -----------------------------


def _backend_report(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> Report:
    compiled = torch.compile(model, backend="polyfuse", dynamic=False)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        actual, expected = compiled(*inputs), model(*inputs)
    assert not _polyfuse_warnings(caught), "fell back to eager"
    assert relative_error(actual, expected) <= RELATIVE_TOLERANCE
    report = polyfuse.last_report()
    assert report is not None
    return report


@pytest.mark.parametrize("name", ["basic_block", "resnet18"])
def test_backend_moves_the_bytes_of_polyfuse_compile(name: str) -> None:
    model, inputs = get_model(name)  # BatchNorm after every convolution
    direct = polyfuse.compile(model, inputs, target="edge")
    direct(*inputs)
    assert direct.report is not None
    backend = _backend_report(model, tuple(inputs))
    assert backend.dram_bytes == direct.report.dram_bytes


def test_linear_batch_norm_is_folded_as_polyfuse_compile_folds_it() -> None:
    model = LinearBatchNorm().eval()
    inputs = (torch.randn(4, 16),)
    direct = polyfuse.compile(model, inputs)
    direct(*inputs)
    assert direct.report is not None
    assert _backend_report(model, inputs).dram_bytes == direct.report.dram_bytes


def test_a_changed_parameter_is_noticed() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()
    compiled = torch.compile(model, backend="polyfuse", dynamic=False)
    x = torch.randn(2, 8)
    with torch.no_grad():
        compiled(x)
        model[0].weight.mul_(-2)  # in place, like an optimiser step
        assert relative_error(compiled(x), model(x)) <= RELATIVE_TOLERANCE
        model.load_state_dict(
            torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).state_dict()
        )
        assert relative_error(compiled(x), model(x)) <= RELATIVE_TOLERANCE
        model[0].bias = torch.nn.Parameter(torch.randn(8))  # a new tensor
        assert relative_error(compiled(x), model(x)) <= RELATIVE_TOLERANCE


def test_a_failed_recompile_falls_back_to_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()
    compiled = torch.compile(model, backend="polyfuse", dynamic=False)
    x = torch.randn(2, 8)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        compiled(x)
        _refuse_mutation(monkeypatch)  # any error of polyfuse.compile from now on
        model[0].weight.mul_(-2)
        for _ in range(CALLS):
            assert relative_error(compiled(x), model(x)) <= RELATIVE_TOLERANCE
    _assert_fell_back(caught)


# --- polyfuse.last_report ----------------------------------------------------------------


def test_last_report_is_none_before_any_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(last_run, "_last", None)
    assert polyfuse.last_report() is None


def test_last_report_is_the_latest_run_of_a_torch_compiled_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(last_run, "_last", None)
    small = torch.nn.Sequential(torch.nn.Linear(8, 4)).eval()
    large = torch.nn.Sequential(torch.nn.Linear(8, 64)).eval()
    x = torch.randn(2, 8)
    with torch.no_grad():
        torch.compile(small, backend="polyfuse", dynamic=False)(x)
        first = polyfuse.last_report()
        torch.compile(large, backend="polyfuse", dynamic=False)(x)
        second = polyfuse.last_report()
    assert isinstance(first, Report) and isinstance(second, Report)
    assert second is not first
    assert second.dram_bytes > first.dram_bytes


def test_last_report_is_the_latest_run_of_polyfuse_compile() -> None:
    model, inputs = get_model("mlp")
    compiled = polyfuse.compile(model, inputs)
    compiled(*inputs)
    assert polyfuse.last_report() is compiled.report
