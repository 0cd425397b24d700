"""The `polyfuse` command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polyfuse.targets.target import PRESETS_DIR
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


def _must_not_compile(*args: object, **kwargs: object) -> None:
    raise AssertionError("compiled before checking the command line")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--batch", "-1"], "--batch must be a positive integer, got -1"),
        (["--batch", "0"], "--batch must be a positive integer, got 0"),
        (["--threads", "0"], "--threads must be a positive integer, got 0"),
        (
            ["--json", "{missing}/report.json"],
            "--json {missing}/report.json: folder '{missing}' does not exist; create it first",
        ),
        (
            ["--trace", "{missing}/trace.json"],
            "--trace {missing}/trace.json: folder '{missing}' does not exist; create it first",
        ),
        (
            ["--plots", "{missing}/plots"],
            "--plots {missing}/plots: folder '{missing}' does not exist; create it first",
        ),
        (["--json", "{folder}"], "--json {folder}: is a folder; give the path of a file"),
        (["--plots", "{file}"], "--plots {file}: is a file; give a folder for the plots"),
    ],
)
def test_bad_run_options_fail_in_one_line_before_compiling(
    arguments: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("polyfuse.compiler.compile", _must_not_compile)
    (tmp_path / "a-file").write_text("")
    places = {"missing": tmp_path / "missing", "folder": tmp_path, "file": tmp_path / "a-file"}
    arguments = [argument.format(**places) for argument in arguments]
    assert main(["run", "mlp", "--quiet", *arguments]) == 1
    assert capsys.readouterr().err == f"polyfuse: error: {message.format(**places)}\n"


def test_bad_target_file_fails_before_compiling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("polyfuse.compiler.compile", _must_not_compile)
    target = tmp_path / "huge.toml"
    text = (PRESETS_DIR / "edge.toml").read_text()
    target.write_text(text.replace("bytes = 524288", f"bytes = {2**70}"))
    assert main(["run", "mlp", "--quiet", "--target", str(target)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error
    assert "[scratchpad] bytes must be an integer from 4 to 4294967296 (4 GiB)" in error
