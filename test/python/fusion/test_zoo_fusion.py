"""Every zoo model, fused on `edge` (512 KiB): plan == emulator bytes, numerics == eager.

The slowest tests of the fusion suite (each imports a full model, about 10-30 s).
"""

from __future__ import annotations

import pytest
import torch

import polyfuse
from polyfuse.models import ZOO, get_model


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_fused(name: str) -> None:
    model, inputs = get_model(name)
    compiled = polyfuse.compile(model, inputs, target="edge", schedule="fused")
    assert compiled.fusion_fallback == ""
    output = compiled(*inputs)
    assert isinstance(output, torch.Tensor)
    with torch.no_grad():
        reference = model(*inputs)
    error = float((output - reference).abs().max() / reference.abs().max())
    assert error < 1e-4
    report = compiled.report
    assert report is not None
    copies = sum(r.planned_dram_bytes for r in compiled.operators if r.kind == "copy")
    predicted = sum(plan.predicted_bytes for plan in compiled.fusion_plans)
    assert predicted + copies == report.dram_bytes == report.planned_bytes
    assert report.stats.spm_peak_bytes <= compiled.target.scratchpad_bytes
    # Fusion keeps some intermediates on chip in every model.
    assert any(len(group.operators) > 1 for group in compiled.fusion_plans[0].groups)
