"""Halo (row-band) tiling of convolution chains (`fusion/halo.py`, `halo_lowering.py`).

Small chains under a small scratchpad, where the intermediate cannot stay whole and a
shared dimension cannot carry a padded intermediate: the planner runs the chain band by
band. Every test checks numerics against eager PyTorch, the plan against the emulator's
count, and the count against a figure derived here by hand from the band geometry.
"""

from __future__ import annotations

import islpy as isl
import numpy as np
import pytest
import torch

import polyfuse
from polyfuse.analysis.affine import AffineAccess
from polyfuse.analysis.poly import build_module_model
from polyfuse.compiler import UPSTREAM_PIPELINE, CompiledModel, run_upstream
from polyfuse.frontend.importer import import_model
from polyfuse.fusion import halo as halo_module
from polyfuse.fusion import planner
from polyfuse.fusion.graph import build_graph
from polyfuse.fusion.halo import HaloGroupPlan, band_ranges, band_structure, footprint_floor
from polyfuse.models.small import ConvChain
from polyfuse.testing.fused import compile_fused_checked
from polyfuse.testing.targets import edge_like

TARGET = edge_like(32768)  # hand-countable traffic under a small scratchpad

CHANNELS, SIZE = 8, 32


class TwoConvs(torch.nn.Module):
    """conv 3x3 pad 1 + bias -> ReLU -> conv 3x3 pad 1 (stride `stride`, depthwise if
    `depthwise`) + bias."""

    def __init__(self, stride: int = 1, depthwise: bool = False) -> None:
        super().__init__()
        self.first = torch.nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1)
        groups = CHANNELS if depthwise else 1
        self.second = torch.nn.Conv2d(
            CHANNELS, CHANNELS, 3, stride=stride, padding=1, groups=groups
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.relu(self.first(x)))


def _compile(model: torch.nn.Module, batch: int = 1) -> tuple[CompiledModel, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(batch, CHANNELS, SIZE, SIZE)
    # The hand counts below take x's padding as a data-movement copy into a padded DRAM
    # buffer before the bands (read x, write the interior), not the operator copy that
    # builds the padded rows on chip (polyfuse-copy-padded-inputs, test_input_pads.py).
    return compile_fused_checked(model, x, TARGET, copy_padded_inputs=False), x


def _hand_count(
    stride: int,
    height: int,
    weights: int,
    resident: bool,
    cached: bool,
    batch: tuple[int, int] = (1, 1),
) -> int:
    """DRAM bytes of the banded chain, from the geometry alone.

    `batch`: (images, images per batch tile); the bands run once per batch tile, each
    moving a tile's rows. x is copied into its padded buffer (read x, write the
    interior). Band k of the second
    convolution's output rows [k*b, k*b+b) reads padded intermediate rows
    [s*k*b, s*(k*b+b-1)+3), i.e. ReLU (= first convolution) rows clipped to [0, SIZE)
    after removing the padding row: [lo, hi). Recomputing, the band computes all of
    them; caching, only those from the previous band's `hi` on. Those rows read padded x
    rows [lo, hi+2). Every band reads its padded-x rows and writes its output rows once
    (whole tiles fit); the weights and biases are loaded once when kept on chip, else
    once per band.
    """
    images, tile = batch
    row = tile * CHANNELS * (SIZE + 2)  # elements of one padded-x row of a batch tile
    out_size = SIZE // stride
    total = 2 * images * CHANNELS * SIZE * SIZE  # the copy into the padded buffer
    bands = 0
    computed = 0  # the first convolution's rows computed so far (cache variant)
    for first in range(0, out_size, height):
        end = min(out_size, first + height)
        needed = (stride * first, stride * (end - 1) + 3)  # padded intermediate rows
        lo, hi = max(0, needed[0] - 1), min(SIZE, needed[1] - 1)  # first conv's rows
        if cached:
            lo, computed = max(lo, computed), hi
        total += (hi + 2 - lo) * row + (end - first) * tile * CHANNELS * out_size
        bands += 1
    trips = images // tile
    total = total * trips - 2 * images * CHANNELS * SIZE * SIZE * (trips - 1)  # one copy
    total += weights * (1 if resident else bands * trips)
    return 4 * total


@pytest.mark.parametrize("variant", ["recompute", "cache"])
@pytest.mark.parametrize(
    ("stride", "depthwise"), [(1, False), (2, False), (1, True)], ids=["3x3", "stride2", "dw"]
)
def test_chain_runs_in_bands_with_the_hand_computed_traffic(
    monkeypatch: pytest.MonkeyPatch, stride: int, depthwise: bool, variant: str
) -> None:
    monkeypatch.setattr(halo_module, "HALO_VARIANTS", (variant,))
    model = TwoConvs(stride, depthwise).eval()
    compiled, _ = _compile(model)
    groups = compiled.fusion_plans[0].groups
    halo = [g for g in groups if isinstance(g, HaloGroupPlan)]
    # One banded group holds the whole chain: the intermediate never touches DRAM.
    assert len(halo) == 1 and len(halo[0].bands) > 1
    assert halo[0].cached == (variant == "cache")
    assert len(halo[0].operators) == len(compiled.fusion_plans[0].group_of())
    second_weights = CHANNELS * (1 if depthwise else CHANNELS) * 9
    weights = CHANNELS * CHANNELS * 9 + second_weights + 2 * CHANNELS
    kept = sum(elements for _, elements in halo[0].resident.values())
    assert kept in (0, weights)  # these shapes make keeping all of them or none the options
    expected = _hand_count(stride, halo[0].band_height, weights, kept == weights, halo[0].cached)
    assert compiled.report is not None
    assert compiled.report.dram_bytes == expected


def test_the_cheaper_halo_variant_is_chosen_per_group() -> None:
    # Both variants planned, the cache one reads fewer input rows: it is the one kept.
    compiled, _ = _compile(TwoConvs().eval())
    halo = [g for g in compiled.fusion_plans[0].groups if isinstance(g, HaloGroupPlan)]
    assert len(halo) == 1 and halo[0].cached
    weights = 2 * (CHANNELS * CHANNELS * 9 + CHANNELS)
    kept = sum(elements for _, elements in halo[0].resident.values()) == weights
    recompute = _hand_count(1, halo[0].band_height, weights, kept, cached=False)
    assert compiled.report is not None
    assert compiled.report.dram_bytes == _hand_count(1, halo[0].band_height, weights, kept, True)
    assert compiled.report.dram_bytes < recompute


@pytest.mark.parametrize("variant", ["recompute", "cache"])
def test_bands_run_once_per_batch_tile_with_the_hand_computed_traffic(
    monkeypatch: pytest.MonkeyPatch, variant: str
) -> None:
    # Four images: the band buffers of all four would leave thin bands; the planner runs
    # the bands once per tile of the batch, the weights kept on chip for every tile. In
    # the cache variant the first band of every tile starts afresh.
    monkeypatch.setattr(halo_module, "HALO_VARIANTS", (variant,))
    images = 4
    compiled, _ = _compile(TwoConvs().eval(), batch=images)
    halo = [g for g in compiled.fusion_plans[0].groups if isinstance(g, HaloGroupPlan)]
    assert len(halo) == 1 and halo[0].batch_dims
    assert halo[0].cached == (variant == "cache")
    starts = sorted({band.batch for band in halo[0].bands})
    tile = starts[1] - starts[0]
    assert starts == list(range(0, images, tile)) and tile < images
    assert all(shape[0] == tile for shape in halo[0].slice_shapes.values())
    weights = 2 * (CHANNELS * CHANNELS * 9 + CHANNELS)
    kept = sum(elements for _, elements in halo[0].resident.values()) == weights
    expected = _hand_count(
        1, halo[0].band_height, weights, kept, halo[0].cached, batch=(images, tile)
    )
    assert compiled.report is not None
    assert compiled.report.dram_bytes == expected


class PointwiseConv(torch.nn.Module):
    """conv 1x1 + bias -> ReLU: no halo anywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(CHANNELS, 8 * CHANNELS, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


def test_a_chain_without_halo_bands_when_no_shared_dimension_fits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Four images, 64 output channels: one slice along any shared dimension of the
    # bias broadcast and the convolution output (4 x 64 x 1 x 32 along the rows, 4 x 1 x
    # 32 x 32 along the channels) takes 32 KiB each, the whole scratchpad. Banded per
    # image, the broadcast lives in the output's band buffer: every tensor moves once.
    # (With two outer loops allowed, one image's rows also fit: test_fusion.py.)
    monkeypatch.setattr(planner, "MAX_OUTER_LOOPS", 1)
    images = 4
    compiled, _ = _compile(PointwiseConv().eval(), batch=images)
    groups = compiled.fusion_plans[0].groups
    assert len(groups) == 1 and isinstance(groups[0], HaloGroupPlan)
    assert groups[0].batch_dims and len(groups[0].bands) > images
    out = 8 * CHANNELS
    compulsory = images * CHANNELS * SIZE * SIZE + out * CHANNELS + out + images * out * SIZE**2
    assert compiled.report is not None
    assert compiled.report.dram_bytes == 4 * compulsory


def _rows(footprint: isl.Set, dim: int) -> tuple[int, int]:
    """[first, end) of dim `dim` of a set."""
    line = footprint.project_out(
        isl.dim_type.set, dim + 1, footprint.dim(isl.dim_type.set) - dim - 1
    )
    line = line.project_out(isl.dim_type.set, 0, dim)
    low = line.lexmin().sample_point().get_coordinate_val(isl.dim_type.set, 0).to_python()
    high = line.lexmax().sample_point().get_coordinate_val(isl.dim_type.set, 0).to_python()
    return int(low), int(high) + 1


def test_band_rows_equal_the_isl_producer_footprints() -> None:
    torch.manual_seed(0)
    imported = import_model(ConvChain().eval(), [torch.randn(1, 2, 8, 8)])
    with imported.module.context:
        run_upstream(imported.module, UPSTREAM_PIPELINE)
        model = build_module_model(imported.module.operation)
        function = next(
            op.operation
            for op in imported.module.body.operations
            if op.operation.name == "func.func"
        )
        graph = build_graph(function)
        statement_of = {s.op: s.name for s in model.statements}
        names = [statement_of[operator.op] for operator in graph.operators]
        members = list(range(len(graph.operators)))
        first, relu, second = names[-3:]
        structure = band_structure(graph, members, 2)
        assert structure is not None and structure.halo
        relu_result = model.statement(relu).writes[0].tensor
        conv_result = model.statement(first).writes[0].tensor
        for band_first in range(4):  # every one-row band of the 4 output rows
            found = band_ranges(
                graph, members, structure, (np.array([band_first]), np.array([band_first + 1]))
            )
            assert found is not None
            loops, _ = found
            tile = isl.Set(
                "{ "
                + second
                + f"[n, k, h, w, c, kh, kw] : n = 0 and 0 <= k < 3 and h = {band_first} "
                "and 0 <= w < 4 and 0 <= c < 4 and 0 <= kh < 3 and 0 <= kw < 3 }"
            )
            relu_instances = model.producer_footprint(second, tile, relu_result)
            conv_instances = model.producer_footprint(relu, relu_instances, conv_result)
            ours = {names[i]: (int(r[0][0]), int(r[1][0])) for i, r in loops.items()}
            assert ours[relu] == _rows(relu_instances, 2)
            assert ours[first] == _rows(conv_instances.intersect(model.statement(first).domain), 2)


def test_footprint_floor_is_below_every_strided_footprint() -> None:
    # Rows h*2 + kh over h < 4, kh < 1: 4 rows although the hull spans 7.
    access = AffineAccess(((2, 1),), (0,), 2)
    assert footprint_floor(access, (4, 1)) == 4
    # Rows sharing a loop (a diagonal) do not multiply.
    diagonal = AffineAccess(((1,), (1,)), (0, 0), 1)
    assert footprint_floor(diagonal, (5,)) == 5


def test_halo_option_off_plans_no_band_groups() -> None:
    # compile(halo=False) (CLI --no-halo) keeps the planner to plain groups: more bytes
    # on a chain whose intermediate does not fit, the same numerics.
    model = TwoConvs()
    torch.manual_seed(0)
    x = torch.randn(1, CHANNELS, SIZE, SIZE)
    moved = {}
    for halo in (True, False):
        compiled = polyfuse.compile(
            model, [x], target=TARGET, schedule="fused", halo=halo, traffic_first=True
        )
        output = compiled(x)
        with torch.no_grad():
            torch.testing.assert_close(output, model(x), rtol=1e-4, atol=1e-4)
        banded = [
            g for p in compiled.fusion_plans for g in p.groups if isinstance(g, HaloGroupPlan)
        ]
        assert bool(banded) == halo
        assert compiled.report is not None
        moved[halo] = compiled.report.dram_bytes
    assert moved[True] < moved[False]
