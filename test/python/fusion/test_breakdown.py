"""Where a fused program's bytes go (polyfuse/fusion/breakdown.py), counted exactly."""

from __future__ import annotations

import pytest
import torch

import polyfuse
from polyfuse.compiler import CompiledModel
from polyfuse.fusion import planner
from polyfuse.fusion.breakdown import TrafficSplit, traffic_split
from polyfuse.report import format_fusion_groups
from polyfuse.testing.modules import SkipOverAMatmul
from polyfuse.testing.targets import edge_like

TARGET = edge_like(65536)


class ConvBlock(torch.nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.first = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.second = torch.nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.second(torch.relu(self.first(x))) + x)


def _split(compiled: CompiledModel) -> TrafficSplit:
    """The split of `compiled`'s one fused function, checked to add up to what ran."""
    assert compiled.fusion_fallback == "" and compiled.report is not None
    (plan,) = compiled.fusion_plans
    copies = sum(r.planned_dram_bytes for r in compiled.operators if r.kind == "copy")
    split = traffic_split(plan.traffic, compiled.report.compulsory_bytes, copies)
    assert split.total == compiled.report.dram_bytes
    assert [g.bytes for g in plan.traffic] == [g.bytes for g in plan.groups]
    return split


def _run(
    model: torch.nn.Module, x: torch.Tensor, target: object, copy_padded_inputs: bool = True
) -> CompiledModel:
    compiled = polyfuse.compile(
        model,
        [x],
        target=target,  # type: ignore[arg-type]
        schedule="fused",
        traffic_first=True,
        copy_padded_inputs=copy_padded_inputs,
    )
    output = compiled(x)
    with torch.no_grad():
        reference = model(x)
    # fp32 sums in another order: within 1e-4 of the output's largest magnitude
    torch.testing.assert_close(output, reference, rtol=1e-4, atol=1e-4 * reference.abs().max())
    return compiled


def test_a_product_crossing_groups_is_the_traffic_between_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One large operator per group: h (16 x 128) stays on chip from the first group to
    # the add; the 16 x 16 product is written by the middle group and read by the last.
    monkeypatch.setattr(planner, "MAX_GROUP_OPERATORS", 1)
    torch.manual_seed(0)
    compiled = _run(SkipOverAMatmul(), torch.randn(16, 32), TARGET)
    first, middle, last = compiled.fusion_plans[0].traffic
    assert first.own_bytes == (16 * 32 + 32 * 128) * 4  # h left on chip, not written
    assert middle.own_bytes == (128 * 16 + 16 * 16) * 4  # h found on chip
    assert last.own_bytes == (16 * 16 + 16 * 128 + 16 * 128) * 4
    split = _split(compiled)
    assert split.between_groups == 2 * 16 * 16 * 4
    assert split.within_groups == 0 and split.copies == 0
    text = format_fusion_groups(compiled.fusion_plans[0].traffic, split)
    assert "activations between fusion groups" in text and "finds one on chip" in text


def test_a_whole_block_has_no_traffic_between_or_within_groups() -> None:
    # 512 KiB holds the block as one group, x's padded copy included (built on chip,
    # input_pads.py): x, the weights and the output each move once, nothing else.
    torch.manual_seed(0)
    compiled = _run(ConvBlock(8).eval(), torch.randn(1, 8, 16, 16), "edge")
    split = _split(compiled)
    assert split.between_groups == split.within_groups == split.copies == 0
    assert split.total == split.compulsory == 4 * (2 * 8 * 16 * 16 + 2 * (8 * 8 * 9 + 8))


def test_a_copy_into_a_padded_buffer_crosses_into_the_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With x's padding a data-movement copy (read x, write the interior), the group
    # reads the whole padded buffer: the only tensor crossing into it.
    torch.manual_seed(0)
    compiled = _run(ConvBlock(8).eval(), torch.randn(1, 8, 16, 16), "edge", False)
    x_bytes = 8 * 16 * 16 * 4
    split = _split(compiled)
    assert split.copies == 2 * x_bytes
    assert split.between_groups == 8 * 18 * 18 * 4
    assert split.within_groups == 0


def test_bands_re_read_within_their_group(monkeypatch: pytest.MonkeyPatch) -> None:
    # 64 KiB cannot hold the 32-channel block whole: bands re-read what they share
    # (with x's padding copied before the group, the case this checks).
    torch.manual_seed(0)
    compiled = _run(ConvBlock(32).eval(), torch.randn(1, 32, 16, 16), TARGET, False)
    split = _split(compiled)
    assert split.within_groups > 0
    assert any("band" in g.schedule for g in compiled.fusion_plans[0].traffic)
