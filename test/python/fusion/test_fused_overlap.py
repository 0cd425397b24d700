"""Overlap in fused schedules (issue 5): double-buffered group tiles, the PE issue plan.

A fused program compiled with `overlap=True` double-buffers the tiles its operators move
inside their innermost tile loop; `overlap=False` keeps one buffer per tile. Both move
exactly the bytes the planner predicts and match eager PyTorch; with `traffic_first`
both move the same bytes, without it a tiling may move more when estimated faster.
"""

from __future__ import annotations

import torch

import polyfuse
from polyfuse.analysis.tile_search import Tiling
from polyfuse.compiler import CompiledModel
from polyfuse.fusion.halo import HaloGroupPlan
from polyfuse.fusion.planner import GroupPlan, OperatorPlan, _faster_segments
from polyfuse.testing.targets import edge_like

TARGET = edge_like(131072)  # hand-countable traffic under a small scratchpad


class MatmulEpilogue(torch.nn.Module):
    """A linear layer with its bias and ReLU, then a scaled residual: one fusion group
    whose weight and activation tiles stream through a small scratchpad."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(256, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x)) * 0.5 + x


def _run(compiled: CompiledModel, x: torch.Tensor, reference: torch.Tensor) -> float:
    output = compiled(x)
    assert isinstance(output, torch.Tensor)
    torch.testing.assert_close(output, reference, rtol=1e-4, atol=1e-4)
    report = compiled.report
    assert report is not None and compiled.fusion_fallback == ""
    copies = sum(r.planned_dram_bytes for r in compiled.operators if r.kind == "copy")
    predicted = sum(plan.predicted_bytes for plan in compiled.fusion_plans)
    assert predicted + copies == report.dram_bytes == report.planned_bytes
    assert report.stats.spm_peak_bytes <= compiled.target.scratchpad_bytes
    return report.stats.cycles


def test_double_buffering_reduces_cycles_with_the_same_bytes() -> None:
    torch.manual_seed(0)
    model = MatmulEpilogue().eval()
    x = torch.randn(512, 256)
    with torch.no_grad():
        reference = model(x)

    options = {"target": TARGET, "schedule": "fused", "traffic_first": True}
    single = polyfuse.compile(model, [x], overlap=False, **options)  # type: ignore[arg-type]
    double = polyfuse.compile(model, [x], overlap=True, **options)  # type: ignore[arg-type]
    stages = [
        p.stages for plan in double.fusion_plans for g in plan.groups for _, p in g.operator_plans()
    ]
    assert max(stages) == 2  # some operator is double-buffered ...
    assert all(
        p.stages == 1
        for plan in single.fusion_plans
        for g in plan.groups
        for _, p in g.operator_plans()
    )  # ... and without overlap none is

    serial_cycles = _run(single, x, reference)
    single.overlap = True  # the single-buffered program on decoupled engines
    decoupled_cycles = _run(single, x, reference)
    double_cycles = _run(double, x, reference)
    assert single.report is not None and double.report is not None
    assert double.report.dram_bytes == single.report.dram_bytes
    # Double buffering hides loads behind compute beyond what decoupled engines alone do.
    assert double_cycles < decoupled_cycles < serial_cycles

    # Trading bytes for cycles never plans fewer bytes than traffic-first (every group's
    # tilings move at least their least traffic).
    trading = polyfuse.compile(model, [x], target=TARGET, schedule="fused")
    _run(trading, x, reference)
    assert trading.report is not None
    assert trading.report.dram_bytes >= double.report.dram_bytes


def test_fused_contractions_use_the_embedding() -> None:
    torch.manual_seed(0)
    model = MatmulEpilogue().eval()
    x = torch.randn(512, 256)
    fused = polyfuse.compile(model, [x], target="edge", schedule="fused")
    contractions = [r for r in fused.operators if r.kind == "pe-array"]
    assert contractions and all(r.embedding.startswith("csp") for r in contractions)
    heuristic = polyfuse.compile(model, [x], target="edge", schedule="fused", embedding="heuristic")
    assert all(r.embedding == "heuristic" for r in heuristic.operators if r.kind == "pe-array")
    with torch.no_grad():
        reference = model(x)
    _run(fused, x, reference)
    _run(heuristic, x, reference)
    assert fused.report is not None and heuristic.report is not None
    # The CP-SAT embedding keeps the PE array at least as busy-efficient as one block per
    # instruction.
    assert fused.report.stats.pe_cycles <= heuristic.report.stats.pe_cycles


def test_strided_convolution_trades_bytes_for_a_longer_stream() -> None:
    # A stride-2 1x1 convolution reads every other pixel of every other row. A DMA skips
    # the odd rows (`tile_search.moved_rows`), but not the odd pixels within a row: they
    # share DRAM bursts with the even ones. So the least-traffic tiling computes one
    # output column per tile (14 rows, moved 2 apart): exactly a quarter of the input,
    # but one pixel per PE instruction and a burst per element. By default the planner
    # may take a tiling that moves more bytes when its estimate is faster;
    # traffic-first may not.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(64, 128, 1, stride=2), torch.nn.ReLU()).eval()
    x = torch.randn(1, 64, 28, 28)
    with torch.no_grad():
        reference = model(x)
    least = polyfuse.compile(model, [x], target="edge", schedule="fused", traffic_first=True)
    faster = polyfuse.compile(model, [x], target="edge", schedule="fused")

    def pixels(compiled: CompiledModel) -> tuple[int, int]:
        (conv,) = [r for r in compiled.operators if r.kind == "pe-array"]
        return conv.tile[2], conv.tile[3]

    assert pixels(least) == (14, 1) and pixels(faster)[1] > 1
    least_cycles = _run(least, x, reference)
    faster_cycles = _run(faster, x, reference)
    assert least.report is not None and faster.report is not None
    assert least.report.dram_bytes == 4 * (64 * 14 * 14 + 128 * 64 + 128 + 128 * 14 * 14)
    assert faster.report.dram_bytes > least.report.dram_bytes
    assert faster_cycles < least_cycles / 2


class ConvPair(torch.nn.Module):
    """conv 3x3 -> ReLU -> conv 3x3, 32 channels: at 128 KiB its intermediate does not
    fit whole, so the planner runs the pair in row bands (a halo group)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = torch.nn.Conv2d(32, 32, 3, padding=1)
        self.second = torch.nn.Conv2d(32, 32, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.relu(self.first(x)))


def test_halo_bands_are_double_buffered_and_embedded() -> None:
    # Halo groups' band plans are tiled for speed too (in the scratchpad above the band
    # buffers and kept inputs): double-buffered tiles, contractions by their embedding.
    # (x's padding stays a copy before the group: building it on chip, input_pads.py,
    # takes the room the second buffers use here.)
    torch.manual_seed(0)
    model = ConvPair().eval()
    x = torch.randn(1, 32, 48, 48)
    with torch.no_grad():
        reference = model(x)
    options = {
        "target": TARGET,
        "schedule": "fused",
        "traffic_first": True,
        "copy_padded_inputs": False,
    }
    single = polyfuse.compile(model, [x], overlap=False, **options)  # type: ignore[arg-type]
    double = polyfuse.compile(model, [x], overlap=True, **options)  # type: ignore[arg-type]
    trading = polyfuse.compile(
        model, [x], target=TARGET, schedule="fused", copy_padded_inputs=False
    )
    bands = [
        plan
        for group in double.fusion_plans[0].groups
        if isinstance(group, HaloGroupPlan)
        for _, plan in group.operator_plans()
    ]
    assert bands and max(plan.stages for plan in bands) == 2
    contractions = [r for r in double.operators if r.kind == "pe-array"]
    assert contractions and all(r.embedding.startswith("csp") for r in contractions)
    single_cycles = _run(single, x, reference)
    double_cycles = _run(double, x, reference)
    trading_cycles = _run(trading, x, reference)
    assert single.report is not None and double.report is not None
    assert trading.report is not None
    assert double.report.dram_bytes == single.report.dram_bytes  # traffic first: no trade
    assert trading.report.dram_bytes >= double.report.dram_bytes
    assert trading_cycles <= double_cycles < single_cycles


def _group(operators: list[int], cycles: float) -> GroupPlan:
    tiling = Tiling((1,), (), (), 0, 0)
    plan = OperatorPlan((1,), None, tiling, False, 0, cycles=cycles)
    return GroupPlan(operators, set(), {}, 0, 1, 0, {operators[0]: plan})


def test_faster_segments_mix_two_partitions_between_common_cuts() -> None:
    # Partitions of operators 0..5: [0,1] [2] [3,4,5] and [0] [1,2] [3] [4,5] both cut
    # at 0 and 3; per segment the faster side wins.
    first = [_group([0, 1], 10), _group([2], 10), _group([3, 4, 5], 10)]
    second = [_group([0], 5), _group([1, 2], 5), _group([3], 8), _group([4, 5], 8)]
    chosen = _faster_segments(first, second)
    assert [g.operators for g in chosen] == [[0], [1, 2], [3, 4, 5]]
    # With a factor the second side must be that much faster (10 is not < 0.4 x 20).
    chosen = _faster_segments(first, second, factor=0.4)
    assert [g.operators for g in chosen] == [[0, 1], [2], [3, 4, 5]]
