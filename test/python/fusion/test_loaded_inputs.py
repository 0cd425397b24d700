"""Inputs several members of a halo group read, loaded once per band (`halo._loaded_inputs`).

A residual block reads its input twice: its first convolution and its residual add. In
a banded group each member used to load its own rows of it; loaded per band into one
buffer both read in place, the input crosses DRAM once. The block below, under a
scratchpad that holds every weight and a band of every buffer, then moves exactly its
compulsory bytes: input and parameters read once, output written once.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from polyfuse.compiler import CompiledModel
from polyfuse.fusion import halo as halo_module
from polyfuse.fusion import planner
from polyfuse.fusion.halo import HaloGroupPlan
from polyfuse.models.small import InvertedResidualNet
from polyfuse.testing.fused import compile_fused_checked
from polyfuse.testing.targets import edge_like

CHANNELS, SIZE = 24, 28


def _compile(
    batch: int, spm: int, traffic_first: bool = True
) -> tuple[CompiledModel, InvertedResidualNet]:
    torch.manual_seed(0)
    model = InvertedResidualNet(CHANNELS).eval()
    x = torch.randn(batch, CHANNELS, SIZE, SIZE)
    target = edge_like(spm)
    return compile_fused_checked(
        model, x, target, traffic_first=traffic_first, sanitize=True
    ), model


def _compulsory(model: torch.nn.Module, batch: int) -> int:
    """Input and output once each, every weight once (fp32), by hand: the batch norms
    fold into their convolutions (a weight scale and one bias per channel)."""
    modules = list(model.modules())
    weights = sum(m.weight.numel() for m in modules if isinstance(m, torch.nn.Conv2d))
    biases = sum(m.num_features for m in modules if isinstance(m, torch.nn.BatchNorm2d))
    return 4 * (2 * batch * CHANNELS * SIZE * SIZE + weights + biases)


def _loaded_groups(compiled: CompiledModel) -> list[HaloGroupPlan]:
    groups = compiled.fusion_plans[0].groups
    return [g for g in groups if isinstance(g, HaloGroupPlan) and g.loaded]


@pytest.mark.parametrize(("batch", "spm"), [(1, 131072), (4, 262144)], ids=["b1", "b4-tiles"])
def test_a_residual_block_reads_its_input_once(batch: int, spm: int) -> None:
    compiled, model = _compile(batch, spm)
    (group,) = _loaded_groups(compiled)
    assert len(group.operators) == len(compiled.fusion_plans[0].group_of())  # the whole block
    ((key, shape),) = group.loaded.items()
    assert key[0] == "arg"  # the block input, read by the expansion and the residual add
    dim = group.band_dims[key]
    assert shape[dim] < SIZE and len(group.bands) > 1  # one band's rows, not the whole input
    if batch > 1:
        # Banded once per batch tile: the buffer holds one tile.
        assert key in group.batch_dims and shape[group.batch_dims[key]] < batch
    assert compiled.report is not None
    assert compiled.report.dram_bytes == _compulsory(model, batch)


def test_band_rows_of_a_loaded_input_cover_every_reader_and_move_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compiled, _ = _compile(1, 131072)
    (group,) = _loaded_groups(compiled)
    ((key, _),) = group.loaded.items()
    rows = [band.rows[key] for band in group.bands]
    # A band holds the hull of the rows its readers read (the depthwise convolution's
    # halo included): from row 0 to the last row, never moving up, and the rows loaded
    # per band (those the previous band did not hold) tile the input exactly once.
    assert rows[0][0] == 0 and rows[-1][1] == SIZE
    fresh = [rows[0][1] - rows[0][0]] + [
        end - max(first, before[1]) for before, (first, end) in itertools.pairwise(rows)
    ]
    assert sum(fresh) == SIZE
    assert all(np.diff([first for first, _ in rows]) >= 0)  # rows only move down
    # Without loading, each reader loads its own rows: the input crosses more than once.
    monkeypatch.setattr(halo_module, "HALO_LOADS", (False,))
    unloaded, _ = _compile(1, 131072)
    assert not _loaded_groups(unloaded)
    assert unloaded.report is not None and compiled.report is not None
    assert unloaded.report.dram_bytes > compiled.report.dram_bytes


def test_the_speed_plan_keeps_loading_when_it_is_also_faster() -> None:
    # By default the DP bands without loading and the speed pass tries the variants
    # (planner._carries_and_variants_for_speed): here loading is kept, at compulsory bytes.
    compiled, model = _compile(4, 262144, traffic_first=False)
    assert _loaded_groups(compiled)
    assert compiled.report is not None
    assert compiled.report.dram_bytes == _compulsory(model, 4)


def test_no_loading_when_switched_off_keeps_every_plan_valid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(halo_module, "HALO_LOADS", (False,))
    compiled, model = _compile(4, 262144)
    assert not _loaded_groups(compiled)
    assert compiled.report is not None
    assert compiled.report.dram_bytes > _compulsory(model, 4)


class StemAndBlock(torch.nn.Module):
    """conv 1x1 + ReLU (the stem), then a basic block on its output y: conv 3x3 -> ReLU ->
    conv 3x3 -> + y -> ReLU. y is written into a padded buffer; the first convolution
    reads it padded, the residual add reads its interior."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, channels, 1)
        self.first = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.second = torch.nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        return torch.relu(self.second(torch.relu(self.first(y))) + y)


@pytest.mark.parametrize("batch", [1, 2])
def test_a_padded_input_is_loaded_with_its_padding_and_read_inside_too(
    monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    # Groups of at most 7 operators: the stem (3) and the block (7) are separate groups,
    # so y crosses DRAM: written by the stem, loaded per band by the block.
    monkeypatch.setattr(planner, "MAX_GROUP_OPERATORS", 7)
    torch.manual_seed(0)
    model = StemAndBlock().eval()
    x = torch.randn(batch, 3, 32, 32)
    compiled = compile_fused_checked(model, x, edge_like(32768), sanitize=True)
    (group,) = _loaded_groups(compiled)
    assert [key[0] for key in group.loaded] == ["pad"]
    # By hand: the stem reads x and its weights and writes y's interior; the block loads
    # y's padded buffer (34 x 34, borders included) once, reads its weights once, writes
    # its output. Nothing else moves.
    stem = 3 * batch * 32 * 32 + 8 * 3 + 8 + batch * 8 * 32 * 32
    block = batch * 8 * 34 * 34 + 2 * (8 * 8 * 9 + 8) + batch * 8 * 32 * 32
    assert compiled.report is not None
    assert compiled.report.dram_bytes == 4 * (stem + block)
