"""What a run of a compiled model did, next to the lower bound.

Counters come from the emulator's executed instructions; the compulsory traffic is every
model input and weight read once and every output written once.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from polyfuse.runtime.emulator import ExecutionStats

if TYPE_CHECKING:
    from polyfuse.compiler import CompiledModel


@dataclass
class Report:
    target: str
    stats: ExecutionStats
    compulsory_bytes: int
    run_seconds: float
    compile_seconds: dict[str, float]
    operators: list[tuple[str, str, str, int]] = field(default_factory=list)
    peak_macs_per_cycle: int = 1
    clock_mhz: float = 1000.0

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
                (r.name, r.kind, r.location, r.planned_dram_bytes) for r in compiled.operators
            ],
            peak_macs_per_cycle=compiled.target.peak_macs_per_cycle,
            clock_mhz=compiled.target.clock_mhz,
        )

    @property
    def dram_bytes(self) -> int:
        return self.stats.dram_read_bytes + self.stats.dram_write_bytes

    @property
    def planned_bytes(self) -> int:
        return sum(op[3] for op in self.operators)

    @property
    def traffic_ratio(self) -> float:
        return self.dram_bytes / self.compulsory_bytes if self.compulsory_bytes else float("nan")

    @property
    def cycles(self) -> float:
        return self.stats.cycles_serial

    @property
    def pe_utilization(self) -> float:
        busy = self.stats.pe_cycles * self.peak_macs_per_cycle
        return self.stats.macs / busy if busy else 0.0

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "target": self.target,
            "dram_read_bytes": self.stats.dram_read_bytes,
            "dram_write_bytes": self.stats.dram_write_bytes,
            "planned_bytes": self.planned_bytes,
            "compulsory_bytes": self.compulsory_bytes,
            "cycles": self.cycles,
            "pe_cycles": self.stats.pe_cycles,
            "vector_cycles": self.stats.vector_cycles,
            "dma_load_cycles": self.stats.dma_load_cycles,
            "dma_store_cycles": self.stats.dma_store_cycles,
            "macs": self.stats.macs,
            "pe_utilization": self.pe_utilization,
            "spm_peak_bytes": self.stats.spm_peak_bytes,
            "run_s": self.run_seconds,
        }

    def format(self, title: str = "", width: int = 100) -> str:
        buffer = io.StringIO()
        console = Console(file=buffer, width=width, force_terminal=False, color_system=None)
        table = Table(title=title or f"polyfuse on '{self.target}' (layer by layer)")
        table.add_column("quantity")
        table.add_column("value", justify="right")
        mib = 1024 * 1024
        s = self.stats
        table.add_row("DRAM read", f"{s.dram_read_bytes / mib:,.2f} MiB")
        table.add_row("DRAM written", f"{s.dram_write_bytes / mib:,.2f} MiB")
        table.add_row("compulsory (lower bound)", f"{self.compulsory_bytes / mib:,.2f} MiB")
        table.add_row("traffic / lower bound", f"{self.traffic_ratio:.2f}x")
        table.add_row("planned by the compiler", f"{self.planned_bytes / mib:,.2f} MiB")
        table.add_row("cycles (engines serial)", f"{self.cycles:,.0f}")
        table.add_row("  at the target clock", f"{self.cycles / (self.clock_mhz * 1e3):,.3f} ms")
        table.add_row("  PE array / vector", f"{s.pe_cycles:,.0f} / {s.vector_cycles:,.0f}")
        table.add_row("  DMA load / store", f"{s.dma_load_cycles:,.0f} / {s.dma_store_cycles:,.0f}")
        table.add_row("MACs", f"{s.macs:,}")
        table.add_row("PE utilisation (while busy)", f"{self.pe_utilization:.1%}")
        table.add_row("scratchpad peak", f"{s.spm_peak_bytes / 1024:,.1f} KiB")
        table.add_row("instructions executed", f"{s.instructions:,}")
        table.add_row("emulator wall time", f"{self.run_seconds * 1e3:,.1f} ms")
        table.add_row("compile time", f"{sum(self.compile_seconds.values()):.2f} s")
        console.print(table)
        return buffer.getvalue()
