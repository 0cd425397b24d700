"""Type stub of the native emulator core (native/emulator.cpp); use emulator.py instead."""

from typing import Any

import numpy as np

RECORD_WORDS: int
VIEW_WORDS: int
VIEW_BASE: int
MAX_DIMS: int
MAX_LOOP_DEPTH: int

class EmulatorTrap(RuntimeError):
    """args: (message: str, pc: int, location_id: int)."""

def vector_arity(kind: int) -> int: ...
def run(
    records: np.ndarray,
    immediates: np.ndarray,
    dram: list[np.ndarray],
    spm_elements: int,
    timing: np.ndarray,
    check: bool = True,
    sanitize: bool = False,
    trace_limit: int = 0,
    trace_merge_gap: float = 0.0,
) -> dict[str, Any]: ...
def set_num_threads(threads: int) -> None: ...
