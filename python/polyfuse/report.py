"""What a run of a compiled model did, next to the lower bound.

Counters come from the emulator's executed instructions; the compulsory traffic is every
model input and weight read once and every output written once.

    report.format()                 the whole-model table
    report.format_operators()       one row per operator (source location): DRAM bytes,
                                    lower bound and ratio, cycles, engine utilisation,
                                    bound by compute or by DMA
    report.write_trace("t.json")    the engines' timelines as a Chrome / Perfetto trace
    report.write_plots("dir")       traffic vs lower bound, roofline, scratchpad occupancy
    format_fusion_groups(...)       a fused program's bytes by cause, and its groups
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from polyfuse.runtime.emulator import ENGINES, ExecutionStats, LocationStats

if TYPE_CHECKING:
    from polyfuse.compiler import CompiledModel
    from polyfuse.fusion.breakdown import GroupTraffic, TrafficSplit

MIB = 1024 * 1024


@dataclass(frozen=True)
class OperatorSummary:
    """What the compiler decided for one operator, as the report shows it."""

    name: str
    kind: str
    location: str
    planned_dram_bytes: int
    compulsory_bytes: int = 0  # its inputs and weights read once, its outputs written once


@dataclass
class OperatorRow:
    """One line of the per-operator table: an operator's source location and its counters."""

    names: str
    stats: LocationStats
    compulsory_bytes: int

    @property
    def dram_bytes(self) -> int:
        return self.stats.dram_read_bytes + self.stats.dram_write_bytes

    @property
    def ratio(self) -> float:
        return self.dram_bytes / self.compulsory_bytes if self.compulsory_bytes else float("nan")

    @property
    def bound(self) -> str:
        """Which side the operator waits on: its busiest DMA engine or its busiest compute."""
        s = self.stats
        dma = max(s.dma_load_cycles, s.dma_store_cycles)
        compute = max(s.pe_cycles, s.vector_cycles)
        if dma == compute == 0:
            return "-"
        return "DMA" if dma > compute else "compute"

    def utilisation(self) -> dict[str, float]:
        span = self.stats.span_cycles
        busy = (
            self.stats.dma_load_cycles,
            self.stats.dma_store_cycles,
            self.stats.pe_cycles,
            self.stats.vector_cycles,
        )
        return {
            engine: (b / span if span else 0.0) for engine, b in zip(ENGINES, busy, strict=True)
        }


@dataclass
class Report:
    target: str
    stats: ExecutionStats
    compulsory_bytes: int
    run_seconds: float
    compile_seconds: dict[str, float]
    operators: list[OperatorSummary] = field(default_factory=list)
    peak_macs_per_cycle: int = 1
    clock_mhz: float = 1000.0
    dram_bytes_per_cycle: float = 1.0
    overlap: bool = True

    @staticmethod
    def build(compiled: CompiledModel, stats: ExecutionStats, run_seconds: float) -> Report:
        compulsory = sum(
            b.elements * 4
            for b in compiled.serialized.buffers
            if b.role in ("input", "output", "weight")
        )
        return Report(
            target=compiled.target.name,
            stats=stats,
            compulsory_bytes=compulsory,
            run_seconds=run_seconds,
            compile_seconds=dict(compiled.compile_seconds),
            operators=[
                OperatorSummary(
                    r.name,
                    r.kind,
                    r.location,
                    r.planned_dram_bytes,
                    getattr(r, "compulsory_bytes", 0),
                )
                for r in compiled.operators
            ],
            peak_macs_per_cycle=compiled.target.peak_macs_per_cycle,
            clock_mhz=compiled.target.clock_mhz,
            dram_bytes_per_cycle=compiled.target.dram_bytes_per_cycle,
            overlap=getattr(compiled, "overlap", True),
        )

    @property
    def dram_bytes(self) -> int:
        return self.stats.dram_read_bytes + self.stats.dram_write_bytes

    @property
    def planned_bytes(self) -> int:
        return sum(op.planned_dram_bytes for op in self.operators)

    @property
    def traffic_ratio(self) -> float:
        return self.dram_bytes / self.compulsory_bytes if self.compulsory_bytes else float("nan")

    @property
    def cycles(self) -> float:
        """The critical path through the engines' timelines."""
        return self.stats.cycles

    @property
    def pe_utilization(self) -> float:
        busy = self.stats.pe_cycles * self.peak_macs_per_cycle
        return self.stats.macs / busy if busy else 0.0

    def operator_rows(self) -> list[OperatorRow]:
        """One row per operator group that ran, in program order.

        The serializer numbers groups 1, 2, ... in the order the lowering emitted its
        operators, so group g is `operators[g - 1]` when the counts agree; otherwise rows
        are labelled by the operators sharing the group's source location."""
        groups = self.stats.locations
        by_index = len(groups) - 1 == len(self.operators)
        by_location: dict[str, list[OperatorSummary]] = {}
        for op in self.operators:
            by_location.setdefault(op.location, []).append(op)
        rows = []
        for stats in groups:
            if stats.first_start < 0:
                continue
            if by_index and stats.group >= 1:
                ops = [self.operators[stats.group - 1]]
            else:
                ops = by_location.get(stats.location, [])
            label = ", ".join(sorted({op.name for op in ops})) or "-"
            compulsory = ops[0].compulsory_bytes if len(ops) == 1 else 0
            rows.append(OperatorRow(label, stats, compulsory))
        rows.sort(key=lambda row: row.stats.first_start)
        return rows

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "target": self.target,
            "dram_read_bytes": self.stats.dram_read_bytes,
            "dram_write_bytes": self.stats.dram_write_bytes,
            "planned_bytes": self.planned_bytes,
            "compulsory_bytes": self.compulsory_bytes,
            "cycles": self.cycles,
            "cycles_serial": self.stats.cycles_serial,
            "pe_cycles": self.stats.pe_cycles,
            "vector_cycles": self.stats.vector_cycles,
            "dma_load_cycles": self.stats.dma_load_cycles,
            "dma_store_cycles": self.stats.dma_store_cycles,
            "macs": self.stats.macs,
            "pe_utilization": self.pe_utilization,
            "spm_peak_bytes": self.stats.spm_peak_bytes,
            "spm_live_peak_bytes": self.stats.spm_live_peak_bytes,
            "spm_live_average_bytes": self.stats.spm_live_average_bytes,
            "run_s": self.run_seconds,
        }

    # ---- text ----

    def format(self, title: str = "", width: int = 100) -> str:
        buffer = io.StringIO()
        console = Console(file=buffer, width=width, force_terminal=False, color_system=None)
        table = Table(title=title or f"polyfuse on '{self.target}'")
        table.add_column("quantity")
        table.add_column("value", justify="right")
        s = self.stats
        cycles = max(s.cycles, 1.0)
        table.add_row("DRAM read", f"{s.dram_read_bytes / MIB:,.2f} MiB")
        table.add_row("DRAM written", f"{s.dram_write_bytes / MIB:,.2f} MiB")
        table.add_row("compulsory (lower bound)", f"{self.compulsory_bytes / MIB:,.2f} MiB")
        table.add_row("traffic / lower bound", f"{self.traffic_ratio:.2f}x")
        table.add_row("planned by the compiler", f"{self.planned_bytes / MIB:,.2f} MiB")
        mode = "engines overlapped" if self.overlap else "one instruction at a time"
        table.add_row(f"cycles ({mode})", f"{s.cycles:,.0f}")
        table.add_row("  at the target clock", f"{s.cycles / (self.clock_mhz * 1e3):,.3f} ms")
        table.add_row("  without any overlap", f"{s.cycles_serial:,.0f}")
        for engine, busy in s.engine_busy().items():
            table.add_row(f"  {engine} busy", f"{busy:,.0f} ({busy / cycles:.0%})")
        table.add_row("MACs", f"{s.macs:,}")
        table.add_row("PE utilisation (while busy)", f"{self.pe_utilization:.1%}")
        table.add_row("scratchpad touched", f"{s.spm_peak_bytes / 1024:,.1f} KiB")
        table.add_row(
            "scratchpad allocated peak / average",
            f"{s.spm_live_peak_bytes / 1024:,.1f} / {s.spm_live_average_bytes / 1024:,.1f} KiB",
        )
        table.add_row("instructions executed", f"{s.instructions:,}")
        table.add_row("emulator wall time", f"{self.run_seconds * 1e3:,.1f} ms")
        table.add_row("compile time", f"{sum(self.compile_seconds.values()):.2f} s")
        console.print(table)
        return buffer.getvalue()

    def format_operators(self, limit: int = 30, width: int = 160) -> str:
        """The `limit` operators that take longest, one row each."""
        buffer = io.StringIO()
        console = Console(file=buffer, width=width, force_terminal=False, color_system=None)
        rows = sorted(self.operator_rows(), key=lambda r: -r.stats.span_cycles)[:limit]
        table = Table(title=f"operators on '{self.target}' (the {len(rows)} longest)")
        for column in (
            "#",
            "operator",
            "location",
            "read MiB",
            "written MiB",
            "lower bound MiB",
            "ratio",
            "kcycles",
            "DMA in",
            "DMA out",
            "PE",
            "vector",
            "bound",
        ):
            table.add_column(
                column, justify="left" if column in ("operator", "location") else "right"
            )
        for row in rows:
            s = row.stats
            use = row.utilisation()
            table.add_row(
                str(s.group),
                row.names,
                _short(s.location),
                f"{s.dram_read_bytes / MIB:.2f}",
                f"{s.dram_write_bytes / MIB:.2f}",
                f"{row.compulsory_bytes / MIB:.2f}" if row.compulsory_bytes else "-",
                f"{row.ratio:.2f}x" if row.compulsory_bytes else "-",
                f"{s.span_cycles / 1e3:,.1f}",
                *(f"{use[engine]:.0%}" for engine in ENGINES),
                row.bound,
            )
        console.print(table)
        return buffer.getvalue()

    # ---- trace ----

    def trace_events(self) -> dict[str, Any]:
        """The engines' timelines in the Chrome trace event format (times in microseconds)."""
        to_us = 1.0 / self.clock_mhz
        events: list[dict[str, Any]] = [
            {"name": "process_name", "ph": "M", "pid": 0, "args": {"name": f"{self.target}"}}
        ]
        for tid, engine in enumerate(ENGINES):
            events.append(
                {"name": "thread_name", "ph": "M", "pid": 0, "tid": tid, "args": {"name": engine}}
            )
        names = {row.stats.group: row.names for row in self.operator_rows()}
        for slice_ in self.stats.trace:
            events.append(
                {
                    "name": f"#{slice_.group} {names.get(slice_.group, '')}".strip(),
                    "cat": slice_.engine,
                    "ph": "X",
                    "pid": 0,
                    "tid": ENGINES.index(slice_.engine),
                    "ts": slice_.start * to_us,
                    "dur": max(slice_.finish - slice_.start, 1e-3) * to_us,
                    "args": {
                        "operator_group": slice_.group,
                        "location": slice_.location,
                        "busy_cycles": slice_.busy,
                        "instructions": slice_.instructions,
                        "start_cycle": slice_.start,
                        "finish_cycle": slice_.finish,
                    },
                }
            )
        for cycle, allocated in self.stats.occupancy:
            events.append(
                {
                    "name": "scratchpad allocated",
                    "ph": "C",
                    "pid": 0,
                    "ts": cycle * to_us,
                    "args": {"KiB": allocated / 1024},
                }
            )
        return {
            "traceEvents": events,
            "displayTimeUnit": "ns",
            "otherData": {"dropped_slices": self.stats.trace_dropped, "cycles": self.cycles},
        }

    def write_trace(self, path: str | Path) -> None:
        """Writes the trace (open it in ui.perfetto.dev or chrome://tracing)."""
        Path(path).write_text(json.dumps(self.trace_events()))

    # ---- plots ----

    def write_plots(self, directory: str | Path, name: str = "model") -> list[Path]:
        """traffic.png, roofline.png and occupancy.png in `directory`; returns their paths."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        rows = self.operator_rows()
        paths = []

        figure, axes = plt.subplots(figsize=(max(6.0, 0.12 * len(rows) + 3), 4))
        positions = range(len(rows))
        axes.bar(positions, [r.dram_bytes / MIB for r in rows], label="DRAM traffic")
        axes.scatter(
            positions,
            [r.compulsory_bytes / MIB if r.compulsory_bytes else float("nan") for r in rows],
            color="black",
            marker="_",
            s=60,
            label="lower bound (compulsory)",
        )
        axes.set_xlabel("operator (program order)")
        axes.set_ylabel("MiB")
        axes.set_title(f"{name} on {self.target}: DRAM traffic per operator")
        axes.legend()
        paths.append(_save(figure, folder / "traffic.png"))

        figure, axes = plt.subplots(figsize=(6, 4.5))
        peak = float(self.peak_macs_per_cycle)
        points = [
            (r.stats.macs / r.dram_bytes, r.stats.macs / r.stats.span_cycles)
            for r in rows
            if r.stats.macs and r.dram_bytes and r.stats.span_cycles
        ]
        if points:
            low = min(p[0] for p in points) / 2
            high = max(max(p[0] for p in points) * 2, 2 * peak / self.dram_bytes_per_cycle)
            xs = [low, peak / self.dram_bytes_per_cycle, high]
            axes.plot(
                xs,
                [min(peak, x * self.dram_bytes_per_cycle) for x in xs],
                color="black",
                label="roof: PE peak / DRAM bandwidth",
            )
            axes.scatter([p[0] for p in points], [p[1] for p in points], s=12, label="operators")
            axes.set_xscale("log")
            axes.set_yscale("log")
        axes.set_xlabel("MACs per DRAM byte")
        axes.set_ylabel("MACs per cycle")
        axes.set_title(f"{name} on {self.target}: roofline")
        axes.legend()
        paths.append(_save(figure, folder / "roofline.png"))

        figure, axes = plt.subplots(figsize=(7, 3.5))
        if self.stats.occupancy:
            times = [0.0] + [t for t, _ in self.stats.occupancy] + [self.cycles]
            values = [0.0] + [b / 1024 for _, b in self.stats.occupancy]
            values.append(values[-1])
            axes.step(times, values, where="post")
        axes.set_xlabel("cycle")
        axes.set_ylabel("KiB allocated")
        axes.set_title(
            f"{name} on {self.target}: scratchpad occupancy "
            f"(peak {self.stats.spm_live_peak_bytes / 1024:.0f} KiB, "
            f"average {self.stats.spm_live_average_bytes / 1024:.0f} KiB)"
        )
        paths.append(_save(figure, folder / "occupancy.png"))
        return paths


def format_fusion_groups(
    traffic: list[GroupTraffic], split: TrafficSplit, limit: int = 20, width: int = 160
) -> str:
    """A fused program's DRAM bytes by cause (`fusion/breakdown.py`), then the `limit`
    fusion groups that move the most bytes, in program order."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=False, color_system=None)
    causes = Table(title="where the DRAM bytes go")
    causes.add_column("cause")
    causes.add_column("MiB", justify="right")
    causes.add_column("share", justify="right")
    total = max(split.total, 1)
    for cause, value in (
        ("compulsory (inputs and weights read once, outputs written once)", split.compulsory),
        ("activations between fusion groups", split.between_groups),
        ("re-read within fusion groups (weights per tile or band, halo rows)", split.within_groups),
        ("data-movement copies (padding, concat)", split.copies),
    ):
        causes.add_row(cause, f"{value / MIB:,.2f}", f"{value / total:.0%}")
    causes.add_row("total", f"{split.total / MIB:,.2f}", "")
    console.print(causes)
    ranked = sorted(range(len(traffic)), key=lambda g: -traffic[g].bytes)[:limit]
    table = Table(title=f"fusion groups (the {len(ranked)} moving the most, of {len(traffic)})")
    for column in ("group", "operators", "what", "schedule", "MiB", "own MiB", "within MiB"):
        table.add_column(column, justify="left" if column in ("what", "schedule") else "right")
    for g in sorted(ranked):
        group = traffic[g]
        first, last = group.operators[0], group.operators[-1]
        table.add_row(
            str(g + 1),
            str(first) if first == last else f"{first}-{last}",
            group.description,
            group.schedule,
            f"{group.bytes / MIB:.2f}",
            f"{group.own_bytes / MIB:.2f}",
            f"{group.within_bytes / MIB:.2f}",
        )
    console.print(table)
    return buffer.getvalue()


def _short(location: str) -> str:
    """file:line:col without the directories."""
    return location.rsplit("/", 1)[-1]


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path
