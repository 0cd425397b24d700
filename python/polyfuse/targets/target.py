"""Accelerator target descriptions: one TOML file per target, one class derived from it.

A target is plain data (`Target`), loaded and validated once by `load_target` and passed
explicitly to whatever needs it; nothing here is read at import time. The presets live
next to this file in `presets/*.toml`; a user's target is any `.toml` file with the same
schema (see docs/targets.md).
"""

from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyfuse.errors import TargetError

PRESETS_DIR = Path(__file__).parent / "presets"

DATAFLOWS = ("weight-stationary", "output-stationary")
PARTITION_ROLES = ("inputs", "weights", "outputs")
ELEMENT_TYPES = (
    "int4",
    "int8",
    "uint8",
    "int16",
    "int32",
    "float8",
    "float16",
    "bfloat16",
    "float32",
)

# The schema: for each table, its keys. Validation below reads exactly these keys and
# rejects anything else, so a typo never silently falls back to a default.
_TOP_LEVEL_KEYS = (
    "name",
    "description",
    "clock",
    "scratchpad",
    "dram",
    "pe_array",
    "vector",
    "types",
)
_TABLE_KEYS = {
    "clock": ("mhz",),
    "scratchpad": ("bytes", "banks", "partitions"),
    "dram": ("bytes_per_cycle", "latency_cycles"),
    "pe_array": ("rows", "cols", "dataflow"),
    "vector": ("width", "latency_cycles"),
    "types": ("inputs", "accumulator"),
}
_PARTITION_KEYS = ("name", "bytes", "holds")

# The range of every number in a target file. The emulator holds the whole scratchpad
# (and, with --sanitize, 9 bytes of shadow per float32 element) in this machine's memory
# while a program runs; the other limits lie far beyond any accelerator and keep the
# emulator's 64-bit cycle and address arithmetic exact.
SCRATCHPAD_BYTES = (4, 4 * 2**30)  # up to 4 GiB
BANKS = (1, 1024)
CLOCK_MHZ = (0.001, 100_000.0)  # 1 kHz to 100 GHz
DRAM_BYTES_PER_CYCLE = (0.001, 65_536.0)
LATENCY_CYCLES = (0, 1_000_000)
PE_ARRAY_SIDE = (1, 4096)
VECTOR_WIDTH = (1, 4096)


@dataclass(frozen=True)
class ScratchpadPartition:
    """A fixed region of the scratchpad reserved for one kind of tensor."""

    name: str
    bytes: int
    holds: str  # one of PARTITION_ROLES


@dataclass(frozen=True)
class Target:
    """The hardware parameters of one scratchpad accelerator, as read from its TOML file.

    Everything else the compiler needs (element capacity, peak rate, wall-clock time) is
    derived from these fields by the methods below.
    """

    name: str
    description: str
    clock_mhz: float
    scratchpad_bytes: int
    scratchpad_banks: int
    partitions: tuple[ScratchpadPartition, ...]
    dram_bytes_per_cycle: float
    dma_latency_cycles: int
    pe_rows: int
    pe_cols: int
    dataflow: str
    vector_width: int
    vector_latency_cycles: int
    input_types: tuple[str, ...]
    accumulator_type: str
    source: str

    def scratchpad_elements(self, elem_bytes: int = 4) -> int:
        """How many elements of `elem_bytes` bytes fit in the whole scratchpad.

        The default is 4 because polyfuse's emulator computes in float32, whatever the
        hardware's native types are.
        """
        if elem_bytes <= 0:
            raise ValueError(f"elem_bytes must be positive, got {elem_bytes}")
        return self.scratchpad_bytes // elem_bytes

    @property
    def peak_macs_per_cycle(self) -> int:
        """Multiply-accumulates per cycle when every processing element is busy."""
        return self.pe_rows * self.pe_cols

    def seconds(self, cycles: float) -> float:
        """Wall-clock time of `cycles` cycles at this target's clock."""
        return cycles / (self.clock_mhz * 1e6)

    def partition_for(self, holds: str) -> ScratchpadPartition | None:
        """The partition reserved for `holds` tensors, or None if the scratchpad is unified."""
        if holds not in PARTITION_ROLES:
            raise ValueError(f"holds must be one of {', '.join(PARTITION_ROLES)}, got {holds!r}")
        return next((p for p in self.partitions if p.holds == holds), None)


# Targets built in memory (a preset with another scratchpad size, a random target of the
# fuzzer) under the names `target_name` gave them, for pass options in this process.
_IN_MEMORY: dict[str, Target] = {}


def target_name(target: Target) -> str:
    """A name `load_target` resolves to `target` in this process: the preset's name when
    `target` is that preset unchanged, else a name like `edge@1` for the target built in
    memory (a pipeline naming it only runs in this process)."""
    if target.name in list_presets() and load_target(target.name) == target:
        return target.name
    for name, known in _IN_MEMORY.items():
        if known == target:
            return name
    name = f"{target.name}@{len(_IN_MEMORY) + 1}"
    _IN_MEMORY[name] = target
    return name


def list_presets() -> list[str]:
    """The names of the targets shipped with polyfuse, sorted."""
    return sorted(path.stem for path in PRESETS_DIR.glob("*.toml"))


def load_target(name_or_path: str | Path) -> Target:
    """Load a preset by name (`"edge"`) or a user's target file by path (`"./my.toml"`).

    A `Path`, or a string that contains a path separator or ends in `.toml`, is a file;
    anything else is a preset name.
    """
    text = str(name_or_path)
    if text in _IN_MEMORY:
        return _IN_MEMORY[text]
    is_path = (
        isinstance(name_or_path, Path) or "/" in text or "\\" in text or text.endswith(".toml")
    )
    if is_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise TargetError(
                f"target file {path} does not exist (pass the path of a .toml target file, "
                f"or one of the preset names: {', '.join(list_presets())})"
            )
    else:
        path = PRESETS_DIR / f"{text}.toml"
        if not path.is_file():
            raise TargetError(
                f"unknown target '{text}'; presets: {', '.join(list_presets())} "
                "(to use your own target, pass the path of its .toml file, e.g. ./my-target.toml)"
            )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise TargetError(
            f"target file {path}: byte 0x{raw[error.start]:02x} on line {line} is not UTF-8 "
            "text; a target file is a UTF-8 TOML file (see docs/targets.md)"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        # tomllib's message already ends with "(at line L, column C)".
        raise TargetError(f"target file {path}: invalid TOML: {error}") from None
    return target_from_dict(data, source=str(path))


def target_from_dict(data: dict[str, Any], source: str) -> Target:
    """Validate parsed TOML `data` and build a `Target`; `source` names it in error messages."""
    reader = _Reader(source)
    reader.check_keys(data, "", _TOP_LEVEL_KEYS)
    clock = reader.table(data, "clock")
    scratchpad = reader.table(data, "scratchpad")
    dram = reader.table(data, "dram")
    pe_array = reader.table(data, "pe_array")
    vector = reader.table(data, "vector")
    types = reader.table(data, "types")

    scratchpad_bytes = reader.integer(
        scratchpad, "[scratchpad]", "bytes", "the scratchpad capacity in bytes", SCRATCHPAD_BYTES
    )
    if scratchpad_bytes % 4:
        # The emulator holds float32 elements whatever the hardware's types.
        raise reader.error(
            f"[scratchpad] bytes must be a multiple of 4 (float32 elements), got "
            f"{scratchpad_bytes} (set it to {scratchpad_bytes // 4 * 4} or "
            f"{scratchpad_bytes // 4 * 4 + 4})"
        )
    return Target(
        name=reader.string(data, "", "name", 'a short name such as "my-accel"'),
        description=reader.string(data, "", "description", "one line describing the hardware"),
        clock_mhz=reader.number(clock, "[clock]", "mhz", "the clock frequency in MHz", CLOCK_MHZ),
        scratchpad_bytes=scratchpad_bytes,
        scratchpad_banks=reader.integer(
            scratchpad, "[scratchpad]", "banks", "the number of scratchpad banks", BANKS, default=1
        ),
        partitions=reader.partitions(scratchpad, scratchpad_bytes),
        dram_bytes_per_cycle=reader.number(
            dram,
            "[dram]",
            "bytes_per_cycle",
            "the DRAM bandwidth in bytes per accelerator cycle",
            DRAM_BYTES_PER_CYCLE,
        ),
        dma_latency_cycles=reader.integer(
            dram,
            "[dram]",
            "latency_cycles",
            "the cycles before a DMA transfer's first byte arrives",
            LATENCY_CYCLES,
        ),
        pe_rows=reader.integer(
            pe_array, "[pe_array]", "rows", "the number of processing-element rows", PE_ARRAY_SIDE
        ),
        pe_cols=reader.integer(
            pe_array,
            "[pe_array]",
            "cols",
            "the number of processing-element columns",
            PE_ARRAY_SIDE,
        ),
        dataflow=reader.choice(pe_array, "[pe_array]", "dataflow", DATAFLOWS),
        vector_width=reader.integer(
            vector,
            "[vector]",
            "width",
            "the elements the vector unit processes per cycle",
            VECTOR_WIDTH,
        ),
        vector_latency_cycles=reader.integer(
            vector,
            "[vector]",
            "latency_cycles",
            "the vector unit's pipeline latency in cycles",
            LATENCY_CYCLES,
            default=0,
        ),
        input_types=reader.type_list(types, "[types]", "inputs"),
        accumulator_type=reader.choice(types, "[types]", "accumulator", ELEMENT_TYPES),
        source=source,
    )


def _show(value: object) -> str:
    """A value as it would be written in TOML, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "a table"
    return repr(value)


def _limit(value: int) -> str:
    """An upper limit for error messages, with its size in GiB when it is one."""
    return (
        f"{value} ({value // 2**30} GiB)" if value >= 2**30 and value % 2**30 == 0 else str(value)
    )


def _where(place: str, key: str) -> str:
    """`[scratchpad] bytes`, or just `name` for a top-level key (place == "")."""
    return f"{place} {key}" if place else key


class _Reader:
    """Reads typed values out of parsed TOML, raising TargetError that names the file.

    `place` is how a table is shown in messages: "[scratchpad]",
    "[[scratchpad.partitions]] #2", or "" for the top level.
    """

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, message: str) -> TargetError:
        return TargetError(f"target file {self.source}: {message}")

    def check_keys(self, data: dict[str, Any], place: str, known: tuple[str, ...]) -> None:
        for key in data:
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise self.error(
                f"unknown key '{key}' {f'in {place}' if place else 'at the top level'}{hint}; "
                f"known keys: {', '.join(known)}"
            )

    def table(self, data: dict[str, Any], table: str) -> dict[str, Any]:
        known = _TABLE_KEYS[table]
        if table not in data:
            raise self.error(
                f"missing table [{table}] (add it with keys {', '.join(known)}; see docs/targets.md)"
            )
        value = data[table]
        if not isinstance(value, dict):
            raise self.error(f"[{table}] must be a table, got {_show(value)}")
        self.check_keys(value, f"[{table}]", known)
        return value

    def _get(self, data: dict[str, Any], place: str, key: str, hint: str) -> Any:
        if key not in data:
            raise self.error(
                f"{place or 'the top level'} is missing required key '{key}' (set it to {hint})"
            )
        return data[key]

    def string(self, data: dict[str, Any], place: str, key: str, hint: str) -> str:
        value = self._get(data, place, key, hint)
        if not isinstance(value, str) or not value.strip():
            raise self.error(
                f"{_where(place, key)} must be a non-empty string, got {_show(value)} (set it to {hint})"
            )
        return value

    def integer(
        self,
        data: dict[str, Any],
        place: str,
        key: str,
        hint: str,
        allowed: tuple[int, int],
        default: int | None = None,
    ) -> int:
        value = data.get(key, default) if default is not None else self._get(data, place, key, hint)
        lowest, highest = allowed
        # bool is a subclass of int in Python, but `bytes = true` is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= highest:
            raise self.error(
                f"{_where(place, key)} must be an integer from {lowest} to {_limit(highest)}, "
                f"got {_show(value)} (set it to {hint})"
            )
        return value

    def number(
        self,
        data: dict[str, Any],
        place: str,
        key: str,
        hint: str,
        allowed: tuple[float, float],
    ) -> float:
        value = self._get(data, place, key, hint)
        lowest, highest = allowed
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if not is_number or not math.isfinite(value) or not lowest <= value <= highest:
            raise self.error(
                f"{_where(place, key)} must be a number from {lowest:g} to {highest:g}, "
                f"got {_show(value)} (set it to {hint})"
            )
        return float(value)

    def choice(self, data: dict[str, Any], place: str, key: str, allowed: tuple[str, ...]) -> str:
        choices = ", ".join(f'"{a}"' for a in allowed)
        value = self._get(data, place, key, f"one of {choices}")
        if not isinstance(value, str) or value not in allowed:
            raise self.error(f"{_where(place, key)} must be one of {choices}, got {_show(value)}")
        return value

    def type_list(self, data: dict[str, Any], place: str, key: str) -> tuple[str, ...]:
        choices = ", ".join(f'"{t}"' for t in ELEMENT_TYPES)
        value = self._get(data, place, key, f"a list of element types from {choices}")
        if not isinstance(value, list) or not value:
            raise self.error(
                f"{_where(place, key)} must be a non-empty list of element types, got {_show(value)} "
                '(e.g. ["int8"])'
            )
        for item in value:
            if not isinstance(item, str) or item not in ELEMENT_TYPES:
                raise self.error(
                    f"{_where(place, key)} has unknown element type {_show(item)}; known types: {choices}"
                )
        return tuple(value)

    def partitions(
        self, scratchpad: dict[str, Any], scratchpad_bytes: int
    ) -> tuple[ScratchpadPartition, ...]:
        entries = scratchpad.get("partitions", [])
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            raise self.error(
                "[scratchpad] partitions must be an array of tables: write one "
                "[[scratchpad.partitions]] block per partition, with name, bytes and holds"
            )
        partitions = []
        for index, entry in enumerate(entries, start=1):
            place = f"[[scratchpad.partitions]] #{index}"
            self.check_keys(entry, place, _PARTITION_KEYS)
            partitions.append(
                ScratchpadPartition(
                    name=self.string(entry, place, "name", 'a name such as "inputs"'),
                    bytes=self.integer(
                        entry,
                        place,
                        "bytes",
                        "the partition's capacity in bytes",
                        (1, scratchpad_bytes),
                    ),
                    holds=self.choice(entry, place, "holds", PARTITION_ROLES),
                )
            )
        if not partitions:
            return ()
        # Every kind of tensor needs exactly one home, or the planner could not place it.
        roles = sorted(partition.holds for partition in partitions)
        if roles != sorted(PARTITION_ROLES):
            raise self.error(
                f"[[scratchpad.partitions]] hold {', '.join(roles)}; a partitioned scratchpad needs "
                f"exactly one partition for each of {', '.join(PARTITION_ROLES)}"
            )
        total = sum(partition.bytes for partition in partitions)
        if total > scratchpad_bytes:
            raise self.error(
                f"[[scratchpad.partitions]] add up to {total} bytes, more than [scratchpad] bytes = "
                f"{scratchpad_bytes} (shrink the partitions or raise bytes)"
            )
        return tuple(partitions)
