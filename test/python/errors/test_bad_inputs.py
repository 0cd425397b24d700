"""Every kind of bad input gets an error that says what, where and what to do.

Models (dtypes, shapes, inputs), targets, scratchpads too small for an operator,
torch.compile graphs polyfuse cannot compile (eager fallback with one warning), and pass
pipelines whose IR stops verifying (--verify-each, with a reproducer). The polyfuse-opt
command-line errors are lit tests: test/lit/tools/polyfuse-opt-errors.mlir.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch_mlir import ir

import polyfuse
from polyfuse.dynamo_backend import polyfuse_backend
from polyfuse.errors import (
    PipelineError,
    ScratchpadCapacityError,
    TargetError,
    UnsupportedError,
)
from polyfuse.pass_base import ModulePass
from polyfuse.targets.target import target_from_dict
from polyfuse.testing.random_nets import TargetSpec
from polyfuse.tools.opt import parse_module
from polyfuse.tools.pipeline import PipelineElement, parse_pipeline, run_pipeline

# --- models ------------------------------------------------------------------------------


class HalfInside(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.half() * 2).float()


class DoubleInside(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.double().sum().float()


class KeepsPositive(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[x > 0]  # the result's shape depends on the data


def test_half_precision_model_is_rejected() -> None:
    with pytest.raises(UnsupportedError) as error:
        polyfuse.compile(torch.nn.Linear(4, 4).half(), [torch.randn(2, 4)])
    message = str(error.value)
    assert "produces a torch.float16 tensor" in message
    assert "float32 tensors only (integer and mixed-precision models are not supported yet)" in (
        message
    )


@pytest.mark.parametrize(
    ("model", "dtype"), [(HalfInside(), "torch.float16"), (DoubleInside(), "torch.float64")]
)
def test_mixed_precision_names_the_dtype_and_source_line(
    model: torch.nn.Module, dtype: str
) -> None:
    with pytest.raises(UnsupportedError) as error:
        polyfuse.compile(model, [torch.randn(2, 4)])
    message = str(error.value)
    assert f"operator aten.convert_element_type produces a {dtype} tensor" in message
    assert "test_bad_inputs.py" in message  # the line of the model that does it


def test_half_input_says_how_to_cast() -> None:
    with pytest.raises(UnsupportedError, match=r"input 0 has dtype torch.float16; .*\.float\(\)"):
        polyfuse.compile(torch.nn.ReLU(), [torch.randn(2, 4).half()])


def test_input_without_elements() -> None:
    with pytest.raises(
        UnsupportedError, match=r"input 0 has shape \(0, 4\), with no elements; polyfuse"
    ):
        polyfuse.compile(torch.nn.ReLU(), [torch.randn(0, 4)])


def test_input_that_is_not_a_tensor() -> None:
    with pytest.raises(UnsupportedError, match="input 0 is a int; polyfuse compiles models"):
        polyfuse.compile(torch.nn.ReLU(), [3])  # type: ignore[list-item]


def test_data_dependent_shape_names_the_operator_and_line() -> None:
    with pytest.raises(UnsupportedError) as error:
        polyfuse.compile(KeepsPositive(), [torch.randn(2, 4)])
    message = str(error.value)
    assert "operator aten.index is not supported" in message
    assert "test_bad_inputs.py" in message and "Supported operators:" in message


class ReturnsNothing(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> None:
        return None


class ReturnsATensorAndNone(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return x * 2, None


@pytest.mark.parametrize(
    ("model", "position"), [(ReturnsNothing(), 0), (ReturnsATensorAndNone(), 1)]
)
def test_outputs_that_are_not_tensors(model: torch.nn.Module, position: int) -> None:
    with pytest.raises(
        UnsupportedError,
        match=rf"output {position} of the model is a NoneType, not a tensor; polyfuse compiles "
        "models whose forward returns only tensors",
    ):
        polyfuse.compile(model, [torch.randn(2, 4)])


# --- scratchpad too small ----------------------------------------------------------------


def _needed_bytes(message: str) -> int:
    match = re.search(r"needs (\d+) bytes", message)
    assert match, message
    return int(match.group(1))


def test_scratchpad_too_small_for_a_conv_names_it_and_the_bytes_that_suffice() -> None:
    conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False).eval()
    x = torch.randn(1, 3, 6, 6)
    with pytest.raises(ScratchpadCapacityError) as error:
        polyfuse.compile(conv, [x], target=TargetSpec(scratchpad_bytes=128).target())
    message = str(error.value)
    assert "conv operator with loop extents (1, 4, 6, 6, 3, 3, 3)" in message
    assert "no tile of this operator fits the scratchpad of target 'fuzz-128' (128 bytes)" in (
        message
    )
    assert "Use a target with a larger scratchpad." in message
    # The bytes named are enough for that operator: compiling again with them gets past it.
    needed = _needed_bytes(message)
    try:
        polyfuse.compile(conv, [x], target=TargetSpec(scratchpad_bytes=needed).target())
    except ScratchpadCapacityError as later:
        assert "conv operator" not in str(later), str(later)


class Concatenate(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x], dim=1)


def test_scratchpad_too_small_for_a_copy() -> None:
    x = torch.randn(2, 3)
    with pytest.raises(ScratchpadCapacityError) as error:
        polyfuse.compile(Concatenate(), [x], target=TargetSpec(scratchpad_bytes=64).target())
    message = str(error.value)
    assert "copying a tensor of shape (2, 3)" in message
    assert "target 'fuzz-64' (64 bytes); its smallest tile needs 68 bytes" in message
    compiled = polyfuse.compile(Concatenate(), [x], target=TargetSpec(68).target())
    torch.testing.assert_close(compiled(x), Concatenate()(x))


# --- targets -----------------------------------------------------------------------------


def test_scratchpad_bytes_must_hold_whole_float32_elements() -> None:
    data = TargetSpec(scratchpad_bytes=1001).to_dict()
    with pytest.raises(
        TargetError,
        match=r"^target file mine.toml: \[scratchpad\] bytes must be a multiple of 4 "
        r"\(float32 elements\), got 1001 \(set it to 1000 or 1004\)$",
    ):
        target_from_dict(data, source="mine.toml")


def test_target_of_the_wrong_type_in_a_table(tmp_path: Path) -> None:
    data = TargetSpec(scratchpad_bytes=1024).to_dict()
    data["pe_array"]["rows"] = "32"
    with pytest.raises(TargetError, match=r"\[pe_array\] rows must be a positive integer, got"):
        target_from_dict(data, source="mine.toml")


# --- torch.compile -----------------------------------------------------------------------


def _polyfuse_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "polyfuse" in str(w.message)]


def test_dynamic_shapes_fall_back_to_eager_with_one_warning() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
    compiled = torch.compile(model, backend=polyfuse_backend, dynamic=True)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        for rows in (2, 3, 5):
            x = torch.randn(rows, 8)
            torch.testing.assert_close(compiled(x), model(x))
    messages = _polyfuse_warnings(caught)
    assert len(messages) == 1, messages
    assert (
        "running this graph in eager PyTorch instead: the graph has dynamic shapes" in (messages[0])
    )
    assert "dynamic=False" in messages[0]


def test_an_internal_error_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_compile(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something polyfuse did not expect")

    monkeypatch.setattr("polyfuse.compiler.compile", broken_compile)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
    compiled = torch.compile(model, backend=polyfuse_backend, dynamic=False)
    x = torch.randn(2, 8)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        torch.testing.assert_close(compiled(x), model(x))
    messages = _polyfuse_warnings(caught)
    assert len(messages) == 1, messages
    assert "internal error in polyfuse (please report it): RuntimeError: something" in messages[0]


# --- pipelines: --verify-each and reproducers --------------------------------------------


@dataclass(frozen=True)
class DropTerminators(ModulePass):
    """Test only: erase every func.return, leaving IR that does not verify."""

    name: ClassVar[str] = "test-drop-terminators"

    def run(self, module: ir.Operation) -> None:
        for op in module.regions[0].blocks[0].operations:
            if op.operation.name == "func.func":
                list(op.regions[0].blocks[0].operations)[-1].operation.erase()


FUNCTION = """
func.func @f(%x: f32) -> f32 {
  %y = arith.addf %x, %x : f32
  return %y : f32
}
"""


def test_verify_each_catches_the_pass_that_breaks_the_ir(tmp_path: Path) -> None:
    context = ir.Context()
    module = parse_module(FUNCTION, "input.mlir", context)
    elements = [
        *parse_pipeline("canonicalize", context),
        PipelineElement.of(DropTerminators()),
        *parse_pipeline("cse", context),
    ]
    with pytest.raises(PipelineError) as error:
        run_pipeline(module, elements, verify_each=True, reproducer_dir=tmp_path)
    message = str(error.value)
    assert "input.mlir:3:8: error: block with no terminator" in message
    assert "pass 'test-drop-terminators' failed; the IR before it is in " in message
    reproducers = list(tmp_path.glob("polyfuse-repro-*.mlir"))
    assert len(reproducers) == 1 and "return" in reproducers[0].read_text()
    assert (
        f"polyfuse-opt {reproducers[0]} --pass-pipeline='builtin.module(test-drop-terminators)'"
        in message
    )


def test_without_verify_each_the_broken_ir_goes_through(tmp_path: Path) -> None:
    context = ir.Context()
    module = parse_module(FUNCTION, "input.mlir", context)
    run_pipeline(module, [PipelineElement.of(DropTerminators())], verify_each=False)
    with pytest.raises(ir.MLIRError, match="block with no terminator"):
        module.verify()
