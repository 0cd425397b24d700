"""Fused schedules: numerics match eager, the planner's bytes are the emulator's bytes.

Every test compiles the same module layer by layer and fused, runs both on the emulator
(which traps any scratchpad overflow) and checks the fused one against eager PyTorch.
"""

from __future__ import annotations

import pytest
import torch

import polyfuse
from polyfuse.compiler import CompiledModel
from polyfuse.fusion import planner
from polyfuse.fusion.halo import HaloGroupPlan
from polyfuse.models import get_model
from polyfuse.testing.modules import SkipOverAMatmul
from polyfuse.testing.targets import edge_like

TARGET = edge_like(65536)  # hand-countable traffic under a small scratchpad


class ElementwiseChain(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * 2.0 + 1.0


class ConvBlock(torch.nn.Module):
    """conv+bias -> ReLU -> conv+bias -> + x -> ReLU (a ResNet basic block without BN)."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.first = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.second = torch.nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.second(torch.relu(self.first(x))) + x)


def _compile_and_check(
    model: torch.nn.Module, inputs: list[torch.Tensor], target: object, traffic_first: bool = False
) -> tuple[CompiledModel, CompiledModel]:
    """Compile layer by layer and fused (`traffic_first`: least bytes, not the planner's
    fastest mix, which may run operators unfused), check numerics and exact traffic."""
    compiled = {}
    with torch.no_grad():
        reference = model(*inputs)
    for schedule in ("layer-by-layer", "fused"):
        options = {"traffic_first": traffic_first} if schedule == "fused" else {}
        result = polyfuse.compile(model, inputs, target=target, schedule=schedule, **options)  # type: ignore[arg-type]
        output = result(*inputs)
        assert isinstance(output, torch.Tensor)
        torch.testing.assert_close(output, reference, rtol=1e-4, atol=1e-4)
        compiled[schedule] = result
    fused = compiled["fused"]
    assert fused.fusion_fallback == ""
    report = fused.report
    assert report is not None
    # What the compiler planned is what the emulator moved ...
    assert report.planned_bytes == report.dram_bytes
    # ... and the fusion plan predicted every byte of the operators; data-movement ops
    # (copies into pads, concat) are priced by the same tile search when lowered.
    copies = sum(r.planned_dram_bytes for r in fused.operators if r.kind == "copy")
    predicted = sum(plan.predicted_bytes for plan in fused.fusion_plans)
    assert predicted + copies == report.dram_bytes
    return compiled["layer-by-layer"], fused


def test_elementwise_chain_moves_only_input_and_output() -> None:
    x = torch.randn(64, 64)
    layered, fused = _compile_and_check(ElementwiseChain(), [x], "edge")
    assert fused.report is not None and layered.report is not None
    # One group; the two intermediates never leave the chip: read x, write the result.
    assert fused.report.dram_bytes == 2 * 64 * 64 * 4
    assert layered.report.dram_bytes > fused.report.dram_bytes
    groups = fused.fusion_plans[0].groups
    assert len(groups) == 1 and len(groups[0].operators) == 3


def test_conv_block_fuses_and_removes_intermediates() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 8, 16, 16)
    layered, fused = _compile_and_check(ConvBlock().eval(), [x], "edge")
    assert fused.report is not None and layered.report is not None
    # 512 KiB holds the whole block in one group: the intermediates (x's padded copy,
    # two bias broadcasts, conv, ReLU, padded ReLU, conv, sum) never touch DRAM. x is
    # read once (its copy and the residual add share one resident load), the weights
    # and biases once, the output written once: the compulsory bytes.
    x_bytes = 8 * 16 * 16 * 4
    weights = 2 * (8 * 8 * 3 * 3 + 8) * 4
    expected = x_bytes + weights + x_bytes
    assert fused.report.dram_bytes == expected
    assert len(fused.fusion_plans[0].groups) == 1
    assert layered.report.dram_bytes > fused.report.dram_bytes


def test_tiled_group_under_a_small_scratchpad() -> None:
    # 64 KiB cannot hold the 32-channel intermediates whole: the planner tiles the group
    # (an outer loop along a shared dimension, or row bands with halos) and still
    # matches the emulator.
    torch.manual_seed(0)
    x = torch.randn(1, 32, 16, 16)
    layered, fused = _compile_and_check(ConvBlock(32).eval(), [x], TARGET, traffic_first=True)
    assert fused.report is not None and layered.report is not None
    groups = fused.fusion_plans[0].groups
    assert any(g.trips > 1 or (isinstance(g, HaloGroupPlan) and len(g.bands) > 1) for g in groups)
    assert fused.report.dram_bytes < layered.report.dram_bytes
    assert fused.report.stats.spm_peak_bytes <= 65536


def test_shared_dimension_tiles_an_elementwise_chain() -> None:
    # A 256 KiB chain cannot stay whole in 64 KiB; with no halo to band, the planner
    # runs the group under an outer loop along a shared dimension.
    x = torch.randn(256, 256)
    layered, fused = _compile_and_check(ElementwiseChain(), [x], TARGET)
    assert fused.report is not None and layered.report is not None
    groups = fused.fusion_plans[0].groups
    assert any(g.trips > 1 for g in groups)
    assert not any(isinstance(g, HaloGroupPlan) for g in groups)


@pytest.mark.parametrize("name", ["mlp", "inverted_residual"])
def test_small_models(name: str) -> None:
    model, inputs = get_model(name)
    layered, fused = _compile_and_check(model, list(inputs), "edge")
    assert fused.report is not None and layered.report is not None
    assert fused.report.dram_bytes < layered.report.dram_bytes


def test_unknown_schedule_is_an_error() -> None:
    with pytest.raises(polyfuse.PolyfuseError, match="schedule"):
        polyfuse.compile(ElementwiseChain(), [torch.randn(4)], schedule="depth-first")


class Attention(torch.nn.Module):
    """softmax(Q K^T / sqrt(d)) V over `heads` heads, the way BERT writes it (views and
    permutes around batched matmuls)."""

    def __init__(self, heads: int = 4, head_dim: int = 16) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = q.shape

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, tokens, self.heads, self.head_dim).permute(0, 2, 1, 3)

        scores = split(q) @ split(k).transpose(-1, -2) / self.head_dim**0.5
        context = scores.softmax(-1) @ split(v)
        return context.permute(0, 2, 1, 3).reshape(batch, tokens, self.heads * self.head_dim)


def test_attention_fuses_per_head_through_reshapes() -> None:
    # All heads' scores (4 x 64 x 64, several copies) do not fit in 192 KiB, one head's
    # do: the whole attention is one group looping over heads (the head dimension is
    # shared through the unit-dim reshapes between the batched matmuls and the softmax),
    # so it reads q, k, v and writes the context, each exactly once. The function
    # returns a reshape of the context, which the lowering copies into the result buffer
    # (read + write, as layer by layer does).
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 64, 64) for _ in range(3))
    layered, fused = _compile_and_check(Attention().eval(), [q, k, v], edge_like(196608))
    assert fused.report is not None and layered.report is not None
    groups = fused.fusion_plans[0].groups
    assert len(groups) == 1 and groups[0].trips > 1
    tensor = 64 * 64 * 4
    assert fused.fusion_plans[0].predicted_bytes == 4 * tensor
    assert fused.report.dram_bytes == 4 * tensor + 2 * tensor


def test_attention_over_batch_and_heads_fuses_one_head_of_one_image_at_a_time() -> None:
    # Two images: the batched matmuls run over batch x heads as one merged loop, which
    # polyfuse-fold-reshapes splits back into two. One image's heads (4 x 64 x
    # 64 scores, several copies) do not fit 192 KiB, nor one head of both images; one
    # head of one image does. The group runs under two outer loops (2 x 4 tiles) and
    # reads q, k, v and writes the context exactly once, as at batch 1.
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 64, 64) for _ in range(3))
    layered, fused = _compile_and_check(Attention().eval(), [q, k, v], edge_like(196608))
    assert fused.report is not None and layered.report is not None
    (group,) = fused.fusion_plans[0].groups
    assert group.outer == ((1, 2), (1, 4))
    tensor = 2 * 64 * 64 * 4
    assert fused.fusion_plans[0].predicted_bytes == 4 * tensor
    assert fused.report.dram_bytes == 4 * tensor + 2 * tensor


def test_a_group_tiles_two_shared_dimensions_when_no_slice_of_one_fits() -> None:
    # A 1x1 convolution with bias and ReLU over four images: a slice along any one
    # shared dimension of the bias broadcast and the output takes the whole 32 KiB; one
    # row of one image does not. Every tensor moves once.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 64, 1), torch.nn.ReLU()).eval()
    x = torch.randn(4, 8, 32, 32)
    _, fused = _compile_and_check(model, [x], edge_like(32768), traffic_first=True)
    assert fused.report is not None
    (group,) = fused.fusion_plans[0].groups
    assert len(group.outer) == 2 and group.trips > 4
    compulsory = 4 * 8 * 32 * 32 + 64 * 8 + 64 + 4 * 64 * 32 * 32
    assert fused.report.dram_bytes == 4 * compulsory


class LinearReLU(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(256, 1024)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x)) * 2.0


def test_resident_input_is_read_once_across_outer_tiles() -> None:
    # The 16 x 1024 intermediates do not fit 64 KiB whole, so the group runs under an
    # outer loop over output features; x (16 x 256) is read whole by every outer tile.
    # Kept resident it is loaded once: every tensor moves exactly once.
    torch.manual_seed(0)
    x = torch.randn(16, 256)
    layered, fused = _compile_and_check(LinearReLU().eval(), [x], TARGET)
    assert fused.report is not None and layered.report is not None
    groups = fused.fusion_plans[0].groups
    assert len(groups) == 1 and groups[0].trips > 1 and groups[0].resident
    compulsory = 16 * 256 + 256 * 1024 + 1024 + 16 * 1024
    assert fused.report.dram_bytes == compulsory * 4


def test_columns_are_shared_through_a_reshape_that_splits_rows() -> None:
    # A linear layer on [2, 8, 256] runs as a [16, 256] matmul whose result is expanded
    # back to [2, 8, 1024] for the ReLU: the expand splits the rows (16 into 2 x 8), not
    # the columns, so the group still runs under an outer loop over output features,
    # the ReLU reading each tile's columns through the reshape. Every tensor moves once.
    torch.manual_seed(0)
    x = torch.randn(2, 8, 256)
    layered, fused = _compile_and_check(LinearReLU().eval(), [x], TARGET)
    assert fused.report is not None and layered.report is not None
    groups = fused.fusion_plans[0].groups
    assert len(groups) == 1 and groups[0].trips > 1
    compulsory = 16 * 256 + 256 * 1024 + 1024 + 16 * 1024
    assert fused.report.dram_bytes == compulsory * 4


def test_layer_norm_is_one_group() -> None:
    # torch-mlir decomposes a layer norm into 16 generics, 6 of them per-row statistics
    # of 64 iterations: the group size limit counts the 10 large ones, so the whole norm
    # is one group that reads x once.
    torch.manual_seed(0)
    x = torch.randn(64, 256)
    layered, fused = _compile_and_check(torch.nn.LayerNorm(256).eval(), [x], "edge")
    assert fused.report is not None and layered.report is not None
    assert len(fused.fusion_plans[0].groups) == 1
    assert fused.report.dram_bytes == (2 * 64 * 256 + 2 * 256) * 4


def test_resident_weight_read_through_a_later_reshape() -> None:
    # Without halo groups, 128 KiB tiles the inverted residual under an outer loop that
    # keeps the depthwise weight resident. That weight is read through a reshape that
    # comes after the group's first operator in the program; loading it when the group
    # opens must not need the reshape lowered yet (this once fell back to layer by layer).
    model, inputs = get_model("inverted_residual")
    compiled = polyfuse.compile(
        model, inputs, target=edge_like(131072), schedule="fused", halo=False
    )
    output = compiled(*inputs)
    with torch.no_grad():
        torch.testing.assert_close(output, model(*inputs), rtol=1e-4, atol=1e-4)
    assert compiled.fusion_fallback == ""
    assert any(g.resident for g in compiled.fusion_plans[0].groups)
    assert compiled.report is not None
    assert compiled.report.planned_bytes == compiled.report.dram_bytes


class TwoMatmuls(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = torch.nn.Parameter(torch.randn(32, 64))
        self.second = torch.nn.Parameter(torch.randn(64, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.first) @ self.second


def _one_large_operator_per_group(
    monkeypatch: pytest.MonkeyPatch, model: torch.nn.Module, traffic_first: bool
) -> tuple[CompiledModel, CompiledModel]:
    """Compile and check `model` on a 16 x 32 input with groups limited to one large
    operator, so its matmuls are separate groups. Traffic first the bytes DP carries
    storages between them; by default, the cycles DP along the chosen groups."""
    monkeypatch.setattr(planner, "MAX_GROUP_OPERATORS", 1)
    torch.manual_seed(0)
    return _compile_and_check(model, [torch.randn(16, 32)], TARGET, traffic_first)


@pytest.mark.parametrize("traffic_first", [True, False])
def test_storage_carried_between_groups(
    monkeypatch: pytest.MonkeyPatch, traffic_first: bool
) -> None:
    # The 16 x 64 product fits the scratchpad beside both groups, so the first leaves it
    # on chip and the second reads it there: every tensor moves once, the product never.
    layered, fused = _one_large_operator_per_group(monkeypatch, TwoMatmuls(), traffic_first)
    assert fused.report is not None and layered.report is not None
    first, second = fused.fusion_plans[0].groups
    assert first.carry_out is not None and second.carry_in == first.carry_out
    assert fused.report.dram_bytes == (16 * 32 + 32 * 64 + 64 * 16 + 16 * 16) * 4
    assert layered.report.dram_bytes == fused.report.dram_bytes + 2 * 16 * 64 * 4


@pytest.mark.parametrize("traffic_first", [True, False])
def test_skip_connection_stays_on_chip_through_a_group(
    monkeypatch: pytest.MonkeyPatch, traffic_first: bool
) -> None:
    # Three groups (the add joins the last matmul). h (16 x 128) is read by the next
    # group and by the add after it: it stays on chip through the middle group, whose
    # 16 x 16 product then makes the one DRAM round trip.
    _, fused = _one_large_operator_per_group(monkeypatch, SkipOverAMatmul(), traffic_first)
    assert fused.report is not None
    first, middle, last = fused.fusion_plans[0].groups
    assert first.carry_out is not None
    assert middle.carry_in == middle.carry_out == last.carry_in == first.carry_out
    weights = 32 * 128 + 128 * 16 + 16 * 128
    assert fused.report.dram_bytes == (16 * 32 + weights + 2 * 16 * 16 + 16 * 128) * 4
