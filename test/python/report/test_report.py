"""Overlap, sanitizer and reports on a compiled model, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import polyfuse
from polyfuse.compiler import CompiledModel
from polyfuse.models import get_model
from polyfuse.runtime.isa import W_OPCODE, Opcode
from polyfuse.tools.cli import main as cli_main


@pytest.fixture(scope="module")
def lenet() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...], CompiledModel, CompiledModel]:
    model, inputs = get_model("lenet")
    overlapped = polyfuse.compile(model, inputs, "edge", sanitize=True)
    baseline = polyfuse.compile(model, inputs, "edge", overlap=False)
    overlapped.trace_limit = 10_000
    overlapped(*inputs)
    baseline(*inputs)
    return model, inputs, overlapped, baseline


def test_overlap_is_faster_and_computes_the_same(lenet) -> None:  # type: ignore[no-untyped-def]
    model, inputs, overlapped, baseline = lenet
    with torch.no_grad():
        reference = model(*inputs)
    for compiled in (overlapped, baseline):
        output = compiled(*inputs)
        assert torch.allclose(output, reference, rtol=1e-4, atol=1e-5)
        report = compiled.report
        assert report.planned_bytes == report.dram_bytes
    fast, slow = overlapped.report.stats, baseline.report.stats
    assert slow.cycles == slow.cycles_serial  # the baseline runs one instruction at a time
    assert fast.cycles < slow.cycles
    assert fast.cycles >= max(fast.engine_busy().values())
    assert fast.spm_live_peak_bytes <= overlapped.target.scratchpad_bytes
    assert 0 < fast.spm_live_average_bytes <= fast.spm_live_peak_bytes


def test_planner_double_buffers_a_streaming_layer() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU()).eval()
    inputs = (torch.randn(256, 512),)  # 1 MiB of weights: tiled on edge's 512 KiB
    overlapped = polyfuse.compile(model, inputs, "edge")
    baseline = polyfuse.compile(model, inputs, "edge", overlap=False)
    allocs = [
        int((c.serialized.program.records[:, W_OPCODE] == Opcode.ALLOC).sum())
        for c in (overlapped, baseline)
    ]
    assert allocs[0] > allocs[1]  # copies of the inner tiles
    with torch.no_grad():
        reference = model(*inputs)
    for compiled in (overlapped, baseline):
        assert torch.allclose(compiled(*inputs), reference, rtol=1e-4, atol=1e-4)
    assert overlapped.report.cycles < baseline.report.cycles


def test_operator_rows_add_up_to_the_model(lenet) -> None:  # type: ignore[no-untyped-def]
    _, _, overlapped, _ = lenet
    report = overlapped.report
    rows = report.operator_rows()
    assert len(rows) == len(report.operators)  # one group per lowered operator
    assert sum(r.dram_bytes for r in rows) == report.dram_bytes
    assert sum(r.stats.macs for r in rows) == report.stats.macs
    assert {r.bound for r in rows} <= {"DMA", "compute"}
    assert "conv" in [r.names for r in rows]
    text = report.format_operators(limit=5)
    assert "lower bound MiB" in text and "bound" in text
    assert "scratchpad allocated peak / average" in report.format()


def test_trace_and_plots(lenet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, _, overlapped, _ = lenet
    report = overlapped.report
    report.write_trace(tmp_path / "trace.json")
    trace = json.loads((tmp_path / "trace.json").read_text())
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert {e["tid"] for e in slices} >= {0, 1, 2}  # DMA in, DMA out, PE array
    end = max(e["ts"] + e["dur"] for e in slices)
    assert end == pytest.approx(report.cycles / report.clock_mhz, rel=1e-6)
    paths = report.write_plots(tmp_path / "plots", name="lenet")
    assert [p.name for p in paths] == ["traffic.png", "roofline.png", "occupancy.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_cli_trace_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.json"
    assert cli_main(["run", "mlp", "--quiet", "--trace", str(trace), "--operators", "3"]) == 0
    out = capsys.readouterr()
    assert "operators on 'edge'" in out.out and out.err == ""
    assert json.loads(trace.read_text())["traceEvents"]
