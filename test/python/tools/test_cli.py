"""The `polyfuse` command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polyfuse.tools.cli import main


def test_run_matches_eager(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    assert main(["run", "lenet", "--target", "gemmini", "--quiet", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "matches eager PyTorch" in printed
    assert "compulsory (lower bound)" in printed
    record = json.loads(out.read_text())
    assert record["dram_read_bytes"] + record["dram_write_bytes"] == record["planned_bytes"]


def test_unknown_model_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "resnet1000"]) == 1
    error = capsys.readouterr().err
    assert "unknown model 'resnet1000'" in error and "resnet18" in error


def test_unknown_target_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "mlp", "--target", "tpu9"]) == 1
    assert "unknown target 'tpu9'" in capsys.readouterr().err


def test_lists(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    assert main(["targets"]) == 0
    printed = capsys.readouterr().out
    assert "resnet50" in printed and "inferentia-like" in printed


def test_groups_show_where_the_fused_bytes_go(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "lenet", "--schedule", "fused", "--quiet", "--groups", "3"]) == 0
    printed = capsys.readouterr().out
    assert "where the DRAM bytes go" in printed and "activations between fusion groups" in printed
    assert "fusion groups (the 1 moving the most, of 1)" in printed  # LeNet fuses whole


def test_groups_without_fusion_say_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "mlp", "--quiet", "--groups", "3"]) == 0
    assert "no fusion groups (run with --schedule fused)" in capsys.readouterr().out
