"""The report of the most recent run of a compiled model in this process.

A `torch.compile(model, backend="polyfuse")` user never holds the CompiledModel, so
`polyfuse.last_report()` is how they see what ran: the DRAM traffic, cycles and lower
bound of the last graph the emulated accelerator executed (any compiled model, any
thread). A graph that fell back to eager PyTorch has no report and leaves it unchanged.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from polyfuse.report import Report

_lock = threading.Lock()
_last: Report | None = None


def record(report: Report | None) -> None:
    """Remember `report` as the most recent run's (None is ignored)."""
    global _last
    if report is None:
        return
    with _lock:
        _last = report


def last_report() -> Report | None:
    """The report of the most recent run of any compiled model, or None before any run."""
    with _lock:
        return _last
