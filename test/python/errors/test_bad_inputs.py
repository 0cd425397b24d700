"""Every kind of bad input gets an error that says what, where and what to do.

Models (dtypes, shapes, inputs, operator variants not supported yet), targets,
scratchpads too small for an operator, extents too large to enumerate naively or to hold
in DRAM, torch.compile graphs polyfuse cannot compile (eager fallback with one warning),
and pass pipelines whose IR stops verifying (--verify-each, with a reproducer that leaves
out the weights). The polyfuse-opt
command-line errors are lit tests: test/lit/tools/polyfuse-opt-errors.mlir.
"""

from __future__ import annotations

import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch_mlir import ir

import polyfuse
from polyfuse.dynamo_backend import polyfuse_backend
from polyfuse.errors import (
    PipelineError,
    PolyfuseError,
    ScratchpadCapacityError,
    TargetError,
    UnsupportedError,
)
from polyfuse.pass_base import ModulePass
from polyfuse.targets.target import target_from_dict
from polyfuse.testing.random_nets import TargetSpec
from polyfuse.tools.opt import main as opt_main
from polyfuse.tools.opt import parse_module
from polyfuse.tools.pipeline import (
    PipelineElement,
    default_reproducer_dir,
    parse_pipeline,
    run_pipeline,
)

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


class SlicesNothing(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :0] * 2


def test_tensor_without_elements_inside_the_model_names_the_operator() -> None:
    with pytest.raises(UnsupportedError) as error:
        polyfuse.compile(SlicesNothing(), [torch.randn(2, 4)])
    message = str(error.value)
    assert "operator aten.slice produces a tensor of shape (2, 0), with no elements" in message
    assert "test_bad_inputs.py" in message and "x[:, :0]" in message
    assert "scratchpad" not in message


class Upsamples(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = torch.nn.ConvTranspose2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class AveragesCeil(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 3, 2, ceil_mode=True, count_include_pad=False)


class UsesPoolIndices(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values, indices = F.max_pool2d(x, 2, return_indices=True)
        return values + indices.float()


class AdaptsUnevenly(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 3)  # 8 -> 3: windows of 3, 4 and 3 rows


@pytest.mark.parametrize(
    ("model", "message", "line"),
    [
        (
            Upsamples(),
            "operator aten.convolution with transposed=True (ConvTranspose) is not supported yet",
            "self.up(x)",
        ),
        (
            AveragesCeil(),
            "operator aten.avg_pool2d with ceil_mode=True is not supported yet",
            "F.avg_pool2d(x, 3, 2, ceil_mode=True",
        ),
        (
            UsesPoolIndices(),
            "operator aten.max_pool2d_with_indices with return_indices=True is not supported "
            "yet: the model uses the indices",
            "return_indices=True",
        ),
        (
            AdaptsUnevenly(),
            "operator aten.adaptive_avg_pool2d from 8x8 to 3x3 is not supported: its windows "
            "differ in size or spacing",
            "F.adaptive_avg_pool2d(x, 3)",
        ),
    ],
)
def test_unsupported_variants_of_supported_operators_name_the_op_and_line(
    model: torch.nn.Module, message: str, line: str
) -> None:
    with pytest.raises(UnsupportedError) as error:
        polyfuse.compile(model.eval(), [torch.randn(1, 3, 8, 8)])
    text = str(error.value)
    assert message in text
    assert "test_bad_inputs.py" in text and line in text  # the user's line, not torch's
    assert "linalg" not in text and "vector unit" not in text


def test_pool_indices_the_model_drops_are_fine() -> None:
    class DropsIndices(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.max_pool2d(x, 2, return_indices=True)[0]

    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(polyfuse.compile(DropsIndices(), [x])(x), DropsIndices()(x))


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


# --- huge extents ------------------------------------------------------------------------

TERA = 2**40


def _negate(shape: str) -> str:
    return f"""
#map = affine_map<(d0) -> (d0)>
func.func @forward(%x: tensor<{shape}xf32>) -> tensor<{shape}xf32> {{
  %0 = tensor.empty() : tensor<{shape}xf32>
  %1 = linalg.generic {{indexing_maps = [#map, #map], iterator_types = ["parallel"]}}
      ins(%x : tensor<{shape}xf32>) outs(%0 : tensor<{shape}xf32>) {{
  ^bb0(%in: f32, %out: f32):
    %2 = arith.negf %in : f32
    linalg.yield %2 : f32
  }} -> tensor<{shape}xf32>
  return %1 : tensor<{shape}xf32>
}}
"""


def _matmul(m: int, k: int, n: int) -> str:
    return f"""
func.func @forward(%a: tensor<{m}x{k}xf32>, %b: tensor<{k}x{n}xf32>) -> tensor<{m}x{n}xf32> {{
  %zero = arith.constant 0.0 : f32
  %0 = tensor.empty() : tensor<{m}x{n}xf32>
  %1 = linalg.fill ins(%zero : f32) outs(%0 : tensor<{m}x{n}xf32>) -> tensor<{m}x{n}xf32>
  %2 = linalg.matmul ins(%a, %b : tensor<{m}x{k}xf32>, tensor<{k}x{n}xf32>)
      outs(%1 : tensor<{m}x{n}xf32>) -> tensor<{m}x{n}xf32>
  return %2 : tensor<{m}x{n}xf32>
}}
"""


@pytest.mark.parametrize("schedule", ["layer-by-layer", "fused"])
@pytest.mark.parametrize(
    "text",
    [
        _negate(str(TERA)),
        _negate(str(TERA - 87)),
        _matmul(1, TERA, 1),
        _matmul(2**16, 2**16, 2**16),  # 2**48 iterations, the most one operator may run
    ],
)
def test_extents_of_2_to_the_40_are_planned_in_seconds(
    text: str, schedule: str, tmp_path: Path
) -> None:
    # Tile sizes are divisors of the extents; testing every number up to 2**40 took hours.
    # 2**40 - 87 is prime: its only tiles are 1 and the whole extent.
    context = ir.Context()
    module = parse_module(text, "huge.mlir", context)
    pipeline = (
        "func.func(linalg-generalize-named-ops),"
        f"polyfuse-lower-to-accel{{schedule={schedule}}},polyfuse-verify-accel"
    )
    run_pipeline(module, pipeline, reproducer_dir=tmp_path)
    assert '"accel.dma_start"' in str(module)


def test_tensors_beyond_what_dram_holds_are_refused(tmp_path: Path) -> None:
    context = ir.Context()
    module = parse_module(_matmul(TERA, 64, TERA), "huge.mlir", context)
    with pytest.raises(PolyfuseError) as error:
        run_pipeline(module, "polyfuse-lower-to-accel", reproducer_dir=tmp_path)
    assert (
        f"huge.mlir:2:20: error: argument 0 of @forward tensor<{TERA}x64xf32> has "
        f"{TERA * 64} elements, more than the {TERA} (2**40) a tensor in polyfuse's DRAM may hold"
    ) in str(error.value)


def test_operators_beyond_what_the_estimates_represent_are_refused(tmp_path: Path) -> None:
    context = ir.Context()
    module = parse_module(_matmul(2**20, 2**20, 2**20), "huge.mlir", context)
    with pytest.raises(PolyfuseError) as error:
        run_pipeline(
            module,
            "func.func(linalg-generalize-named-ops),polyfuse-lower-to-accel",
            reproducer_dir=tmp_path,
        )
    assert (
        "huge.mlir:6:8: error: operator with loop extents (1048576, 1048576, 1048576) runs "
        f"{2**60} iterations, more than the {2**48} (2**48) polyfuse plans"
    ) in str(error.value)


def test_tensor_without_elements_in_the_ir_is_refused(tmp_path: Path) -> None:
    context = ir.Context()
    module = parse_module(_negate("0"), "empty.mlir", context)
    with pytest.raises(PolyfuseError) as error:
        run_pipeline(module, "polyfuse-lower-to-accel", reproducer_dir=tmp_path)
    assert "empty.mlir:3:20: error: argument 0 of @forward tensor<0xf32> has no elements" in (
        str(error.value)
    )


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
    with pytest.raises(
        TargetError, match=r"\[pe_array\] rows must be an integer from 1 to 4096, got"
    ):
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


_VALUES = ", ".join(f"{value}.5" for value in range(64))
WEIGHTS = f"""
func.func @f(%x: tensor<64xf32>) -> tensor<64xf32> {{
  %w = arith.constant dense<[{_VALUES}]> : tensor<64xf32>
  %y = arith.addf %x, %w : tensor<64xf32>
  return %y : tensor<64xf32>
}}
"""


def _fail_on(text: str, **options: Any) -> tuple[str, list[Path]]:
    """Run DropTerminators on `text`; the error message and the reproducers written."""
    context = ir.Context()
    module = parse_module(text, "input.mlir", context)
    with pytest.raises(PipelineError) as error:
        run_pipeline(module, [PipelineElement.of(DropTerminators())], **options)
    folder = Path(options.get("reproducer_dir") or default_reproducer_dir())
    return str(error.value), sorted(folder.glob("polyfuse-repro-*.mlir"))


def test_reproducers_go_to_one_polyfuse_folder_without_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    message, reproducers = _fail_on(WEIGHTS)
    assert len(reproducers) == 1
    assert reproducers[0].parent == tmp_path / "polyfuse-reproducers"
    assert f"the IR before it is in {reproducers[0]}; reproduce with:" in message
    text = reproducers[0].read_text()
    assert "dense_resource<__elided__> : tensor<64xf32>" in text and "6.350000e+01" not in text
    parse_module(text, "reproducer.mlir", ir.Context())  # it still parses


def test_reproducer_keeps_weights_when_asked(tmp_path: Path) -> None:
    _, reproducers = _fail_on(WEIGHTS, reproducer_dir=tmp_path, reproducer_weights=True)
    assert "6.350000e+01" in reproducers[0].read_text()


def test_reproducer_folder_that_is_a_file_keeps_the_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    context = ir.Context()
    module = parse_module(FUNCTION, "input.mlir", context)
    with pytest.raises(PipelineError) as error:
        run_pipeline(module, [PipelineElement.of(DropTerminators())], reproducer_dir=blocker)
    message = str(error.value)
    assert "input.mlir:3:8: error: block with no terminator" in message
    assert f"pass 'test-drop-terminators' failed; no reproducer was written to {blocker}" in (
        message
    )


def test_polyfuse_opt_reads_mlir_bytecode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = parse_module(FUNCTION, "input.mlir", ir.Context())
    path = tmp_path / "input.mlirbc"
    with path.open("wb") as file:
        module.write_bytecode(file)
    assert opt_main([str(path), "--pass-pipeline=builtin.module(canonicalize)"]) == 0
    assert "arith.addf" in capsys.readouterr().out
