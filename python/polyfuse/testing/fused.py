"""Compile a model with fusion and check what every fused test relies on."""

from __future__ import annotations

import torch

import polyfuse
from polyfuse.compiler import CompiledModel
from polyfuse.targets import Target


def compile_fused_checked(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    traffic_first: bool = True,
    sanitize: bool = False,
    copy_padded_inputs: bool = True,
) -> CompiledModel:
    """`polyfuse.compile(model, [x], target, schedule="fused")`, run on `x`, checked:
    no fallback to layer by layer, eager numerics (rtol = atol = 1e-4), the emulator's
    DRAM bytes equal to the plan (the fusion plan plus data-movement copies), the
    scratchpad never exceeded. `traffic_first` (the default here): the bytes planner's
    own choice, so hand counts hold (by default a faster partition may replace a group,
    `planner._faster_segments`)."""
    compiled = polyfuse.compile(
        model,
        [x],
        target=target,
        schedule="fused",
        traffic_first=traffic_first,
        sanitize=sanitize,
        copy_padded_inputs=copy_padded_inputs,
    )
    assert compiled.fusion_fallback == ""
    output = compiled(x)
    assert isinstance(output, torch.Tensor)
    with torch.no_grad():
        torch.testing.assert_close(output, model(x), rtol=1e-4, atol=1e-4)
    report = compiled.report
    assert report is not None
    copies = sum(r.planned_dram_bytes for r in compiled.operators if r.kind == "copy")
    assert compiled.fusion_plans[0].predicted_bytes + copies == report.dram_bytes
    assert report.planned_bytes == report.dram_bytes
    assert report.stats.spm_peak_bytes <= target.scratchpad_bytes
    return compiled
