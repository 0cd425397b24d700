"""Padded function inputs built on chip by the fused lowering (fusion/input_pads.py)."""

from __future__ import annotations

import pytest
import torch

import polyfuse
from polyfuse.compiler import UPSTREAM_PIPELINE, run_upstream
from polyfuse.frontend.importer import import_model
from polyfuse.fusion.halo import HaloGroupPlan
from polyfuse.fusion.input_pads import copy_padded_inputs
from polyfuse.testing.targets import edge_like


class PaddedConv(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


def test_the_pad_of_an_argument_reads_an_operator_copy() -> None:
    imported = import_model(PaddedConv().eval(), [torch.randn(1, 8, 16, 16)])
    with imported.module.context:
        run_upstream(imported.module, UPSTREAM_PIPELINE)
        (func,) = [op.operation for op in imported.module.body.operations]
        assert copy_padded_inputs(func) == 1
        assert imported.module.operation.verify()
        (pad,) = [
            op.operation for op in func.regions[0].blocks[0].operations if op.name == "tensor.pad"
        ]
        assert pad.operands[0].owner.name == "linalg.generic"


@pytest.mark.parametrize("copied", [True, False])
def test_the_padded_input_is_built_on_chip_in_bands(
    monkeypatch: pytest.MonkeyPatch, copied: bool
) -> None:
    # 32 KiB cannot hold the 8-channel 32x32 input (32 KiB) whole: the group runs in bands.
    # With the operator copy the bands build their padded input rows on chip from x:
    # x is read once, no padded buffer is written or read, and the convolution's output
    # is written once. With the data-movement copy, x's padded buffer costs a read of x,
    # a write of its interior and a read of the whole padded buffer.
    torch.manual_seed(0)
    model = PaddedConv().eval()
    x = torch.randn(1, 8, 32, 32)
    compiled = polyfuse.compile(
        model,
        [x],
        target=edge_like(32768),
        schedule="fused",
        traffic_first=True,
        copy_padded_inputs=copied,
    )
    output = compiled(x)
    with torch.no_grad():
        torch.testing.assert_close(output, model(x), rtol=1e-4, atol=1e-4)
    assert compiled.report is not None
    assert compiled.report.planned_bytes == compiled.report.dram_bytes
    x_bytes, weights = 8 * 32 * 32 * 4, (8 * 8 * 9 + 8) * 4
    (group,) = compiled.fusion_plans[0].groups
    assert isinstance(group, HaloGroupPlan) and len(group.bands) > 1
    if copied:
        assert compiled.report.dram_bytes == x_bytes + weights + x_bytes
    else:
        padded = 8 * 34 * 34 * 4
        assert compiled.report.dram_bytes >= 2 * x_bytes + padded + weights + x_bytes
