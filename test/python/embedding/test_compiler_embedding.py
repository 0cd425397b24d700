"""The embedding option of the compiler: fixed vs CSP on the PE array, with real numerics.

The expected PE cycles are worked out by hand from the instruction model (VTA: one
16x16 block per instruction, one streamed row per cycle, no fill) and from how
`accel.matmul` issues an embedding (a reduction box of at most 16 elements made of
whole dims and a divisor-sized chunk of one more; output columns in divisor chunks).
"""

from __future__ import annotations

import pytest
import torch

import polyfuse
from polyfuse.compiler import CompiledModel
from polyfuse.embedding import ConvParams, conv2d, enumerate_embeddings, instruction_model
from polyfuse.embedding.solver import ACCEL_MATMUL_LIMITS
from polyfuse.lowering.contraction_embedding import program_pe_cycles, reduction_boxes
from polyfuse.targets import load_target

TOLERANCE = 1e-5


def _compile_and_run(
    model: torch.nn.Module, x: torch.Tensor, target: str, embedding: str
) -> tuple[CompiledModel, int]:
    compiled = polyfuse.compile(model, [x], target=target, embedding=embedding)
    output = compiled(x)
    with torch.no_grad():
        expected = model(x)
    assert isinstance(output, torch.Tensor)
    error = float((output - expected).abs().max() / expected.abs().max())
    assert error <= TOLERANCE, f"{embedding}: max relative error {error}"
    report = compiled.report
    assert report is not None
    assert report.planned_bytes == report.dram_bytes
    cycles = program_pe_cycles(compiled.serialized.program, instruction_model(compiled.target))
    predicted = sum(r.predicted_pe_cycles for r in compiled.operators if r.kind == "pe-array")
    assert cycles == predicted, f"{embedding}: issued {cycles} PE cycles, predicted {predicted}"
    return compiled, cycles


def _conv3() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return torch.nn.Conv2d(3, 16, 3, padding=1).eval(), torch.randn(1, 3, 16, 16)


def test_conv_with_three_input_channels_on_vta() -> None:
    model, x = _conv3()
    fixed, fixed_cycles = _compile_and_run(model, x, "vta", "fixed")
    csp, csp_cycles = _compile_and_run(model, x, "vta", "csp")
    pixels = 16 * 16
    # fixed: pixels stream, c = 3 of 16 rows (padded), k = 16 columns, r x s = 9 issue loops.
    assert fixed_cycles == 9 * 1 * 1 * pixels
    # csp: c, r, s merged onto the rows; 27 elements need 3 boxes of 9 (c x r, chunk of s).
    assert csp_cycles == 3 * 1 * pixels
    assert fixed_cycles / csp_cycles == pytest.approx(3.0)
    assert fixed.report is not None and csp.report is not None
    assert fixed.report.stats.matmuls == 9 and csp.report.stats.matmuls == 3


class ComputedWeightLinear(torch.nn.Module):
    """x @ (2 W)^T: the transposed operand is computed at run time, not a constant."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(40, 64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ (2 * self.weight).t()


def test_linear_with_batch_one_on_vta() -> None:
    torch.manual_seed(1)
    x = torch.randn(1, 64)
    # A computed operand is not a weight to the fixed strategy: its 40 rows stream (the
    # larger side), k = 64 in 4 blocks, one output column of 16: 4 * 40 cycles.
    model = ComputedWeightLinear().eval()
    _, fixed_cycles = _compile_and_run(model, x, "vta", "fixed")
    _, csp_cycles = _compile_and_run(model, x, "vta", "csp")
    # csp streams the batch row instead: 4 k blocks x 4 column blocks of 10 (40 = 4 x 10).
    assert fixed_cycles == 4 * 1 * 40
    assert csp_cycles == 4 * 4 * 1
    assert fixed_cycles / csp_cycles == pytest.approx(10.0)
    # nn.Linear's transposed weight is folded into a constant at compile time
    # (frontend/weight_layouts.py), so the fixed strategy streams the batch row too.
    linear = torch.nn.Linear(64, 40).eval()
    _, fixed_cycles = _compile_and_run(linear, x, "vta", "fixed")
    _, csp_cycles = _compile_and_run(linear, x, "vta", "csp")
    assert fixed_cycles == csp_cycles == 4 * 4 * 1


def test_weight_stationary_emulator_agrees_with_the_instruction_model() -> None:
    model, x = _conv3()
    compiled, cycles = _compile_and_run(model, x, "gemmini", "csp")
    assert compiled.report is not None
    assert compiled.report.stats.pe_cycles == cycles
    instruction = instruction_model(load_target("gemmini"))
    assert instruction.fill_cycles > 0  # the fill is part of the cost that was compared


def test_unknown_embedding_is_an_error() -> None:
    model, x = _conv3()
    with pytest.raises(polyfuse.PolyfuseError, match="embedding must be one of"):
        polyfuse.compile(model, [x], target="vta", embedding="greedy")


def test_accel_matmul_limits_bound_every_enumerated_embedding() -> None:
    # A depthwise-style grouped conv: unlimited, the solver may pack groups on the block
    # diagonal; accel.matmul cannot, nor merge more than 2 / 3 / 1 dims per slot.
    op = conv2d(ConvParams(n=2, c=32, h=8, w=8, k=32, r=3, s=3, pad=(1, 1), groups=8))
    instruction = instruction_model(load_target("vta"))
    unlimited = enumerate_embeddings(op, instruction, limit=20000)
    assert any(embedding.diagonal for embedding, _ in unlimited)
    limited = enumerate_embeddings(op, instruction, limit=20000, limits=ACCEL_MATMUL_LIMITS)
    assert limited and len(limited) < len(unlimited)
    for embedding, _ in limited:
        assert not embedding.diagonal
        assert len(embedding.stream) <= 2
        assert len(embedding.block_in) <= 3
        assert len(embedding.block_out) <= 1


@pytest.mark.parametrize(
    ("extents", "boxes"),
    [
        ((3, 3, 3), 3),  # c x r = 9 whole, s in chunks of 1
        ((3, 7, 7), 21),  # s = 7 whole, c in chunks of 2 -> 1 (divisor), r a loop
        ((64, 3, 3), 36),  # c in chunks of 16, r and s loops
        ((2, 2, 4), 1),  # 16 elements: one box
        ((40,), 4),  # chunks of 10 (the largest divisor of 40 up to 16)
    ],
)
def testreduction_boxes(extents: tuple[int, ...], boxes: int) -> None:
    loops = tuple(range(len(extents)))
    assert reduction_boxes(loops, extents, 16).blocks == boxes
