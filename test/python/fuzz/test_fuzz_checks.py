"""The fuzz case's checks catch what they are meant to catch (polyfuse.testing.fuzz.run_case).

`polyfuse.compile` is replaced by fakes that run the model in eager PyTorch, right or wrong
in one way each: a faithful one must pass, each broken one must be reported with the
outcome and message that name what is wrong.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

import pytest
import torch

import polyfuse
from polyfuse.errors import EmulatorTrap, PolyfuseError, UnsupportedError
from polyfuse.testing.fuzz import CaseResult, run_case
from polyfuse.testing.net_spec import WRONG_INPUTS, CallPlan, Layer, NetSpec
from polyfuse.testing.random_nets import TargetSpec

TARGET = TargetSpec(scratchpad_bytes=1 << 20)


def pattern_spec(**changes: Any) -> NetSpec:
    """A linear layer, a counter buffer, an input scaled in place, the linear applied again
    to it; returns a dict."""
    layers = [
        Layer("linear", [0], {"in_features": 8, "out_features": 8, "bias": True}, [2, 8]),
        Layer("buffer_update", [1], {"kind": "counter"}, [2, 8]),
        Layer("mutate", [0], {"fn": "mul"}, [2, 8]),
        Layer("reuse", [3], {"layer": 0}, [2, 8]),
    ]
    fields: dict[str, Any] = {"outputs": [2, 4], "output_structure": "dict", "seed": 4}
    return NetSpec(input_shapes=[[2, 8]], layers=layers, **(fields | changes))


PLAIN = NetSpec(
    input_shapes=[[2, 8]],
    layers=[Layer("unary", [0], {"fn": "tanh"}, [2, 8])],
    outputs=[1],
)


class Faithful:
    """Runs the caller's module itself (so its buffers update as eager's) after checking
    the call like polyfuse does."""

    report = None
    fusion_fallback = ""

    def __init__(self, model: torch.nn.Module, example: list[torch.Tensor]) -> None:
        self.model = model
        self.lock = threading.Lock()  # calls that update buffers run one at a time
        self.expected = [(tuple(t.shape), t.dtype) for t in example]

    def check(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if kwargs or len(args) != len(self.expected):
            raise PolyfuseError("wrong number of inputs")
        for value, (shape, dtype) in zip(args, self.expected, strict=True):
            if not isinstance(value, torch.Tensor) or value.device.type != "cpu":
                raise PolyfuseError("not a CPU tensor")
            if (tuple(value.shape), value.dtype) != (shape, dtype):
                raise PolyfuseError("wrong shape or dtype")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.check(args, kwargs)
        with self.lock, torch.no_grad():
            return self.model(*args)


def fake_compile(
    monkeypatch: pytest.MonkeyPatch, make: Callable[[torch.nn.Module, list[torch.Tensor]], Any]
) -> None:
    monkeypatch.setattr(polyfuse, "compile", lambda model, example, **options: make(model, example))


def run(spec: NetSpec, plan: CallPlan | None = None) -> CaseResult:
    return run_case(spec, TARGET, plan=plan or CallPlan(calls=3))


def test_a_faithful_compiler_passes_every_check(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_compile(monkeypatch, Faithful)
    for kind in WRONG_INPUTS:
        result = run(pattern_spec(), CallPlan(calls=3, wrong_input=kind, non_contiguous=True))
        assert result.outcome == "ok", (kind, result.message)
    for structure in ("auto", "tuple", "list", "nested"):
        result = run(pattern_spec(output_structure=structure), CallPlan(calls=2, threads=True))
        assert result.outcome == "ok", (structure, result.message)


def test_buffers_not_written_back_are_a_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_compile(monkeypatch, lambda model, example: Faithful(copy.deepcopy(model), example))
    result = run(pattern_spec())
    assert result.outcome == "mismatch"
    assert "after call 1: buffer 'buffer1'" in result.message


def test_an_input_not_updated_in_place_is_a_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    class OnCopies(Faithful):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return super().__call__(*(arg.clone() for arg in args))

    fake_compile(monkeypatch, OnCopies)
    result = run(pattern_spec())
    assert result.outcome == "mismatch"
    assert "after call 1: input 0" in result.message


def test_another_output_structure_is_a_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    class Flattened(Faithful):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return tuple(super().__call__(*args, **kwargs).values())

    fake_compile(monkeypatch, Flattened)
    result = run(pattern_spec())
    assert result.outcome == "mismatch"
    assert "call 1: returns (T, T), eager returns {'out0': T, 'out1': T}" in result.message


def test_a_wrong_input_needs_a_polyfuse_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class Unchecked(Faithful):
        def check(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            pass

    fake_compile(monkeypatch, Unchecked)
    accepted = run(pattern_spec(), CallPlan(wrong_input="extra"))  # forward(*inputs) takes it
    assert accepted.outcome == "mismatch"
    assert "wrong input (extra) accepted" in accepted.message
    other_error = run(pattern_spec(), CallPlan(wrong_input="float64"))  # eager's RuntimeError
    assert other_error.outcome == "crash"
    assert "RuntimeError instead of a PolyfuseError" in other_error.message


def test_compile_must_not_change_the_callers_module(monkeypatch: pytest.MonkeyPatch) -> None:
    def evaluating(model: torch.nn.Module, example: list[torch.Tensor]) -> Faithful:
        model.eval()
        return Faithful(model, example)

    fake_compile(monkeypatch, evaluating)
    result = run(pattern_spec(train=True))
    assert result.outcome == "mismatch"
    assert "compiling changed the caller's module: mode of ''" in result.message


def test_refusals_count_for_user_patterns_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def refusing(model: torch.nn.Module, example: list[torch.Tensor]) -> Faithful:
        raise UnsupportedError("the model does something polyfuse does not compile")

    fake_compile(monkeypatch, refusing)
    refused = run(pattern_spec())
    assert refused.outcome == "refused" and not refused.failed
    assert refused.message.startswith("compile: UnsupportedError: the model does something")
    assert run(PLAIN).outcome == "crash"  # a plain network polyfuse must compile


def test_a_trap_is_a_crash_even_for_user_patterns(monkeypatch: pytest.MonkeyPatch) -> None:
    class Trapping(Faithful):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            raise EmulatorTrap("DMA out of bounds")

    fake_compile(monkeypatch, Trapping)
    result = run(pattern_spec())
    assert result.outcome == "crash" and "EmulatorTrap: DMA out of bounds" in result.message


def test_a_thread_that_sees_another_threads_call_is_a_mismatch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class SharedResult(Faithful):  # every call returns the first call's result
        first: Any = None

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            answer = super().__call__(*args, **kwargs)
            self.first = self.first if self.first is not None else answer
            return self.first

    fake_compile(monkeypatch, SharedResult)
    result = run(PLAIN, CallPlan(threads=True))
    assert result.outcome == "mismatch" and "thread" in result.message
