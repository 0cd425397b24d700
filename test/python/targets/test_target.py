"""Target descriptions: the presets' key facts, a user's own file, and every error message."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from polyfuse.errors import TargetError
from polyfuse.targets import Target, list_presets, load_target
from polyfuse.targets.target import PRESETS_DIR, target_from_dict

KiB = 1024

# A complete, valid target file; error tests break one line of it.
VALID = """\
name = "mine"
description = "a test accelerator"

[clock]
mhz = 500

[scratchpad]
bytes = 65536

[dram]
bytes_per_cycle = 4
latency_cycles = 20

[pe_array]
rows = 8
cols = 4
dataflow = "output-stationary"

[vector]
width = 8

[types]
inputs = ["int8", "float16"]
accumulator = "int32"
"""

PARTITIONS = """
[[scratchpad.partitions]]
name = "in"
bytes = {inputs}
holds = "inputs"

[[scratchpad.partitions]]
name = "w"
bytes = 16384
holds = "weights"

[[scratchpad.partitions]]
name = "out"
bytes = 16384
holds = "{outputs_role}"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "my.toml"
    path.write_text(text)
    return path


def edit(old: str, new: str) -> str:
    assert old in VALID, old
    return VALID.replace(old, new)


def with_partitions(inputs: int = 32768, outputs_role: str = "outputs") -> str:
    # Array-of-tables blocks must follow [scratchpad]'s own keys, before the next table.
    return edit(
        "bytes = 65536\n",
        "bytes = 65536\n" + PARTITIONS.format(inputs=inputs, outputs_role=outputs_role),
    )


# --- presets ---------------------------------------------------------------------------


def test_list_presets() -> None:
    assert list_presets() == ["edge", "gemmini", "inferentia-like", "vta"]


@pytest.mark.parametrize("name", ["edge", "gemmini", "inferentia-like", "vta"])
def test_every_preset_loads_and_names_itself(name: str) -> None:
    target = load_target(name)
    assert target.name == name
    assert target.source == str(PRESETS_DIR / f"{name}.toml")
    assert sum(p.bytes for p in target.partitions) <= target.scratchpad_bytes


@pytest.mark.parametrize("name", ["edge", "gemmini", "inferentia-like", "vta"])
def test_every_preset_states_assumptions_and_emulator_precision(name: str) -> None:
    text = (PRESETS_DIR / f"{name}.toml").read_text()
    assert "assumption:" in text
    assert "float32" in text


def test_edge() -> None:
    edge = load_target("edge")
    assert (edge.pe_rows, edge.pe_cols, edge.dataflow) == (32, 32, "weight-stationary")
    assert edge.clock_mhz == 1000
    assert edge.scratchpad_bytes == 512 * KiB
    assert edge.partitions == ()
    assert edge.dram_bytes_per_cycle == 16.0
    assert edge.peak_macs_per_cycle == 1024
    assert edge.scratchpad_elements() == 128 * KiB  # float32 elements
    assert edge.scratchpad_elements(elem_bytes=1) == 512 * KiB
    assert edge.seconds(1000) == pytest.approx(1e-6)


def test_edge_split_variant(tmp_path: Path) -> None:
    """The commented-out split variant in edge.toml is a valid target once uncommented."""
    text = (PRESETS_DIR / "edge.toml").read_text()
    text = re.sub(
        r"^# (\[\[scratchpad\.partitions\]\]|name = |bytes = |holds = )", r"\1", text, flags=re.M
    )
    text = text.replace('name = "edge"', 'name = "edge-split"')
    split = load_target(write(tmp_path, text))
    assert split.name == "edge-split"
    assert [(p.holds, p.bytes) for p in split.partitions] == [
        ("inputs", 256 * KiB),
        ("weights", 128 * KiB),
        ("outputs", 128 * KiB),
    ]
    assert split.scratchpad_bytes == 512 * KiB


def test_vta() -> None:
    vta = load_target("vta")
    assert (vta.pe_rows, vta.pe_cols) == (16, 16)
    assert vta.peak_macs_per_cycle == 256
    assert vta.clock_mhz == 100
    assert vta.scratchpad_bytes == 416 * KiB
    assert [(p.holds, p.bytes) for p in vta.partitions] == [
        ("inputs", 32 * KiB),
        ("weights", 256 * KiB),
        ("outputs", 128 * KiB),
    ]
    assert vta.dram_bytes_per_cycle == 8.0
    assert (vta.input_types, vta.accumulator_type) == (("int8",), "int32")


def test_gemmini() -> None:
    gemmini = load_target("gemmini")
    assert (gemmini.pe_rows, gemmini.pe_cols) == (16, 16)
    assert gemmini.scratchpad_bytes == 256 * KiB + 64 * KiB
    assert gemmini.scratchpad_banks == 4
    accumulator = gemmini.partition_for("outputs")
    assert accumulator is not None and accumulator.bytes == 64 * KiB
    assert gemmini.dram_bytes_per_cycle == 16.0
    assert gemmini.clock_mhz == 1000
    assert (gemmini.input_types, gemmini.accumulator_type) == (("int8",), "int32")


def test_inferentia_like() -> None:
    core = load_target("inferentia-like")
    assert (core.pe_rows, core.pe_cols) == (128, 128)
    assert core.scratchpad_bytes == 24 * KiB * KiB
    # 50 GiB/s per chip, shared by 4 cores, at the assumed clock.
    per_core_bytes_per_second = 50 * 2**30 / 4
    assert core.dram_bytes_per_cycle == pytest.approx(
        per_core_bytes_per_second / (core.clock_mhz * 1e6), rel=1e-3
    )
    # The assumed clock makes the array's peak match the published 32 INT8 TOPS per core.
    assert 2 * core.peak_macs_per_cycle * core.clock_mhz * 1e6 == pytest.approx(32e12, rel=0.05)
    assert core.vector_width == 128  # 256 FLOP/cycle of multiply-adds


# --- a user's own target ---------------------------------------------------------------


def test_user_target_file(tmp_path: Path) -> None:
    target = load_target(write(tmp_path, VALID))
    assert isinstance(target, Target)
    assert target.name == "mine"
    assert target.source == str(tmp_path / "my.toml")
    assert target.scratchpad_banks == 1  # default
    assert target.vector_latency_cycles == 0  # default
    assert target.dram_bytes_per_cycle == 4.0 and isinstance(target.dram_bytes_per_cycle, float)
    assert target.peak_macs_per_cycle == 32
    assert target.input_types == ("int8", "float16")
    assert target.partition_for("inputs") is None


def test_user_target_as_string_path_with_partitions(tmp_path: Path) -> None:
    target = load_target(str(write(tmp_path, with_partitions())))
    partition = target.partition_for("weights")
    assert partition is not None and (partition.name, partition.bytes) == ("w", 16384)


def test_target_from_dict_names_its_source() -> None:
    with pytest.raises(TargetError, match=r"^target file <test>: missing table \[clock\]"):
        target_from_dict({"name": "x", "description": "y"}, source="<test>")


# --- errors ----------------------------------------------------------------------------


def test_unknown_preset_lists_presets_and_says_how_to_pass_a_path() -> None:
    with pytest.raises(
        TargetError,
        match=r"unknown target 'edg'; presets: edge, gemmini, inferentia-like, vta .*path",
    ):
        load_target("edg")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match=r"target file .*nope\.toml does not exist"):
        load_target(tmp_path / "nope.toml")


def test_toml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, edit("mhz = 500", "mhz = = 500"))
    with pytest.raises(
        TargetError, match=rf"^target file {re.escape(str(path))}: invalid TOML: .*line 5, column"
    ):
        load_target(path)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        # missing table / field
        (
            "[dram]\nbytes_per_cycle = 4\nlatency_cycles = 20\n",
            "",
            r"missing table \[dram\] \(add it with keys bytes_per_cycle, latency_cycles",
        ),
        (
            "rows = 8\n",
            "",
            r"\[pe_array\] is missing required key 'rows' \(set it to the number of processing-element rows\)",
        ),
        ('name = "mine"\n', "", r"the top level is missing required key 'name'"),
        # wrong type, bool is not an int
        (
            "bytes = 65536",
            "bytes = -4",
            r"\[scratchpad\] bytes must be an integer from 4 to 4294967296 \(4 GiB\), got -4 \(set it to the scratchpad capacity in bytes\)",
        ),
        (
            "bytes = 65536",
            "bytes = true",
            r"\[scratchpad\] bytes must be an integer from 4 to .*, got true",
        ),
        (
            "bytes = 65536",
            "bytes = 65536.0",
            r"\[scratchpad\] bytes must be an integer from 4 to .*, got 65536\.0",
        ),
        (
            "bytes = 65536",
            'bytes = "64KiB"',
            r'\[scratchpad\] bytes must be an integer from 4 to .*, got "64KiB"',
        ),
        (
            "bytes = 65536",
            "bytes = 65536\nbanks = 0",
            r"\[scratchpad\] banks must be an integer from 1 to 1024, got 0",
        ),
        ("mhz = 500", "mhz = 0", r"\[clock\] mhz must be a number from 0\.001 to 100000, got 0"),
        (
            "mhz = 500",
            "mhz = false",
            r"\[clock\] mhz must be a number from 0\.001 to 100000, got false",
        ),
        (
            "mhz = 500",
            "mhz = inf",
            r"\[clock\] mhz must be a number from 0\.001 to 100000, got inf",
        ),
        (
            "bytes_per_cycle = 4",
            "bytes_per_cycle = -1.5",
            r"\[dram\] bytes_per_cycle must be a number from 0\.001 to 65536, got -1\.5",
        ),
        (
            "latency_cycles = 20",
            "latency_cycles = -1",
            r"\[dram\] latency_cycles must be an integer from 0 to 1000000, got -1",
        ),
        (
            "width = 8",
            "width = 8\nlatency_cycles = 2.5",
            r"\[vector\] latency_cycles must be an integer from 0 to 1000000, got 2\.5",
        ),
        ('name = "mine"', "name = 3", r"name must be a non-empty string, got 3"),
        ("[clock]\nmhz = 500\n", "clock = 500\n", r"\[clock\] must be a table, got 500"),
        # choices
        (
            'dataflow = "output-stationary"',
            'dataflow = "row-stationary"',
            r'\[pe_array\] dataflow must be one of "weight-stationary", "output-stationary", got "row-stationary"',
        ),
        (
            'accumulator = "int32"',
            'accumulator = "int33"',
            r'\[types\] accumulator must be one of .*"int32".*, got "int33"',
        ),
        (
            'inputs = ["int8", "float16"]',
            'inputs = ["int8", "fp16"]',
            r'\[types\] inputs has unknown element type "fp16"; known types: ',
        ),
        (
            'inputs = ["int8", "float16"]',
            "inputs = []",
            r"\[types\] inputs must be a non-empty list of element types",
        ),
        # unknown keys (typo protection)
        (
            "bytes = 65536",
            "byts = 65536",
            r"unknown key 'byts' in \[scratchpad\] \(did you mean 'bytes'\?\); known keys: bytes, banks, partitions",
        ),
        (
            'name = "mine"',
            'name = "mine"\nnmae = "x"',
            r"unknown key 'nmae' at the top level \(did you mean 'name'\?\); known keys: name, description",
        ),
        ("[types]", "[memory]\nsize = 1\n\n[types]", r"unknown key 'memory' at the top level"),
        # numbers beyond what the emulator represents or this machine could allocate
        (
            "bytes = 65536",
            f"bytes = {2**70}",
            rf"\[scratchpad\] bytes must be an integer from 4 to 4294967296 \(4 GiB\), got {2**70} ",
        ),
        (
            "bytes = 65536",
            f"bytes = {10**18}",
            rf"\[scratchpad\] bytes must be an integer from 4 to 4294967296 \(4 GiB\), got {10**18} ",
        ),
        ("rows = 8", "rows = 100000", r"\[pe_array\] rows must be an integer from 1 to 4096, got"),
        ("cols = 4", f"cols = {2**63 - 1}", r"\[pe_array\] cols must be an integer from 1 to 4096"),
        ("width = 8", "width = 5000", r"\[vector\] width must be an integer from 1 to 4096"),
        (
            "mhz = 500",
            "mhz = 1e9",
            r"\[clock\] mhz must be a number from 0\.001 to 100000, got 1000000000\.0",
        ),
        (
            "bytes_per_cycle = 4",
            "bytes_per_cycle = 1e-300",
            r"\[dram\] bytes_per_cycle must be a number from 0\.001 to 65536, got 1e-300",
        ),
        (
            "latency_cycles = 20",
            f"latency_cycles = {2**62}",
            r"\[dram\] latency_cycles must be an integer from 0 to 1000000",
        ),
        (
            "bytes = 65536",
            "bytes = 65536\nbanks = 100000",
            r"\[scratchpad\] banks must be an integer from 1 to 1024, got 100000",
        ),
    ],
)
def test_invalid_field(tmp_path: Path, old: str, new: str, message: str) -> None:
    path = write(tmp_path, edit(old, new))
    with pytest.raises(TargetError, match=rf"^target file {re.escape(str(path))}: {message}"):
        load_target(path)


def test_partitions_larger_than_scratchpad(tmp_path: Path) -> None:
    path = write(tmp_path, with_partitions(inputs=40000))
    with pytest.raises(
        TargetError,
        match=r"\[\[scratchpad\.partitions\]\] add up to 72768 bytes, more than \[scratchpad\] bytes = 65536 "
        r"\(shrink the partitions or raise bytes\)",
    ):
        load_target(path)


def test_partitions_must_cover_each_role_once(tmp_path: Path) -> None:
    path = write(tmp_path, with_partitions(outputs_role="weights"))
    with pytest.raises(
        TargetError,
        match=r"hold inputs, weights, weights; a partitioned scratchpad needs exactly one",
    ):
        load_target(path)


def test_partition_errors_say_which_partition(tmp_path: Path) -> None:
    path = write(tmp_path, with_partitions(outputs_role="results"))
    with pytest.raises(
        TargetError,
        match=r'\[\[scratchpad\.partitions\]\] #3 holds must be one of "inputs", "weights", "outputs", got "results"',
    ):
        load_target(path)
    path = write(tmp_path, with_partitions().replace('name = "w"', 'nme = "w"'))
    with pytest.raises(
        TargetError, match=r"unknown key 'nme' in \[\[scratchpad\.partitions\]\] #2"
    ):
        load_target(path)


def test_partitions_not_an_array_of_tables(tmp_path: Path) -> None:
    path = write(tmp_path, edit("bytes = 65536\n", "bytes = 65536\npartitions = 3\n"))
    with pytest.raises(TargetError, match=r"\[scratchpad\] partitions must be an array of tables"):
        load_target(path)


def test_partition_larger_than_the_scratchpad_names_the_partition(tmp_path: Path) -> None:
    path = write(tmp_path, with_partitions(inputs=2**70))
    with pytest.raises(
        TargetError,
        match=r"\[\[scratchpad\.partitions\]\] #1 bytes must be an integer from 1 to 65536, got",
    ):
        load_target(path)


def test_non_utf8_target_file(tmp_path: Path) -> None:
    path = tmp_path / "my.toml"
    path.write_bytes(VALID.encode() + b'note = "\xff\xfe"\n')
    with pytest.raises(
        TargetError,
        match=rf"^target file {re.escape(str(path))}: byte 0xff on line 25 is not UTF-8 text; "
        r"a target file is a UTF-8 TOML file",
    ):
        load_target(path)


def test_emulator_refuses_a_scratchpad_larger_than_this_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import numpy as np

    from polyfuse.runtime import emulator
    from polyfuse.runtime.program import ProgramBuilder

    monkeypatch.setattr(emulator, "host_memory_bytes", lambda: 1000)
    program = ProgramBuilder().build()
    machine = emulator.machine_params(target_from_dict(_small_target(), source="<test>"))
    with pytest.raises(
        TargetError,
        match=r"the emulator needs 4096 bytes of this machine's memory for a scratchpad of 4096 "
        r"bytes, but the machine has 1000; use a target with a smaller \[scratchpad\] bytes",
    ):
        emulator.execute(program, [np.zeros(4, dtype=np.float32)], machine)


def _small_target() -> dict[str, object]:
    import tomllib

    data = tomllib.loads(VALID)
    data["scratchpad"]["bytes"] = 4096
    return data
