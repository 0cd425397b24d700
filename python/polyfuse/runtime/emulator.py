"""Running accel programs on the emulated accelerator.

`execute` runs a `Program` (see `program.py`) against DRAM buffers given as numpy arrays,
which it updates in place, and returns what the machine did and how long each engine was
busy. The interpreter is native (`native/`, built as `polyfuse.runtime._emulator`); an
illegal program raises `polyfuse.errors.EmulatorTrap` naming the instruction and where it
came from.

Timing model (engines run serially, so `cycles_serial` is an upper bound):
    DMA      dma_latency_cycles + ceil(bytes / dma_bytes_per_cycle)
    MATMUL   ceil(K / pe_rows) * ceil(N / pe_cols) * (M + pe_rows + pe_cols)
             (a weight-stationary pe_rows x pe_cols array; M = M1*M2, K = K1*K2*K3)
    VECTOR   ceil(elements / vector_width) + vector_latency_cycles
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, fields

import numpy as np
import scipy_openblas32

from polyfuse.errors import EmulatorTrap, TargetError
from polyfuse.runtime.program import Program

# The native module links libscipy_openblas and finds it through its RPATH (next to it in
# an installed wheel, the build-time path in a development build). Loading this
# environment's copy globally first makes the import work even when that path is stale,
# e.g. a development build made in another virtual environment.
ctypes.CDLL(
    os.path.join(scipy_openblas32.get_lib_dir(), "libscipy_openblas.so"), mode=ctypes.RTLD_GLOBAL
)

from polyfuse.runtime import _emulator  # noqa: E402

FLOAT_BYTES = 4


@dataclass(frozen=True)
class MachineParams:
    """The emulated accelerator: scratchpad size and per-engine throughput."""

    spm_bytes: int
    dma_latency_cycles: float
    dma_bytes_per_cycle: float
    pe_rows: int
    pe_cols: int
    vector_width: int
    vector_latency_cycles: float = 0

    def __post_init__(self) -> None:
        if self.spm_bytes < 0 or self.spm_bytes % FLOAT_BYTES:
            raise TargetError(
                f"spm_bytes must be a non-negative multiple of {FLOAT_BYTES}, got {self.spm_bytes}"
            )
        for name in ("pe_rows", "pe_cols", "vector_width"):
            if getattr(self, name) < 1:
                raise TargetError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.dma_bytes_per_cycle <= 0:
            raise TargetError(
                f"dma_bytes_per_cycle must be positive, got {self.dma_bytes_per_cycle}"
            )
        if self.dma_latency_cycles < 0 or self.vector_latency_cycles < 0:
            raise TargetError("latencies must be non-negative")

    @property
    def spm_elements(self) -> int:
        return self.spm_bytes // FLOAT_BYTES

    def timing_array(self) -> np.ndarray:
        """The timing parameters in the order the native core takes them."""
        return np.array(
            [
                self.dma_latency_cycles,
                self.dma_bytes_per_cycle,
                self.pe_rows,
                self.pe_cols,
                self.vector_width,
                self.vector_latency_cycles,
            ],
            dtype=np.float64,
        )


@dataclass
class ExecutionStats:
    """What one run did. Byte counts are DRAM traffic of executed DMAs; cycles per engine."""

    dram_read_bytes: int
    dram_write_bytes: int
    dma_loads: int
    dma_stores: int
    matmuls: int
    vector_ops: int
    macs: int
    vector_elements: int
    dma_load_cycles: float
    dma_store_cycles: float
    pe_cycles: float
    vector_cycles: float
    spm_peak_bytes: int
    instructions: int

    @property
    def cycles_serial(self) -> float:
        """Total cycles if no two engines ever overlap."""
        return self.dma_load_cycles + self.dma_store_cycles + self.pe_cycles + self.vector_cycles


def execute(
    program: Program, dram: list[np.ndarray], machine: MachineParams, check: bool = True
) -> ExecutionStats:
    """Runs `program`, updating the DRAM buffers in place.

    `dram[i]` is DRAM buffer i: a writable C-contiguous float32 array (any shape; it is
    addressed as flat elements). With `check` false the DMA in-flight rules (reading before
    a wait, overwriting data in flight, token misuse) are not checked; bounds always are.
    """
    buffers = [_flat_buffer(i, array) for i, array in enumerate(dram)]
    try:
        counters = _emulator.run(
            program.records,
            program.immediates,
            buffers,
            machine.spm_elements,
            machine.timing_array(),
            check,
        )
    except _emulator.EmulatorTrap as trap:
        message, pc, location_id = trap.args
        location = (
            program.locations[location_id] if 0 <= location_id < len(program.locations) else ""
        )
        where = f" ({location})" if location else ""
        raise EmulatorTrap(
            f"emulator trap at instruction {pc}{where}: {message}", pc, location
        ) from None
    return ExecutionStats(**{f.name: counters[f.name] for f in fields(ExecutionStats)})


def set_num_threads(threads: int) -> None:
    """Sets how many threads OpenBLAS uses for MATMUL."""
    _emulator.set_num_threads(threads)


def _flat_buffer(index: int, array: np.ndarray) -> np.ndarray:
    """A flat view of a DRAM buffer that shares its memory (writes must reach the caller)."""
    if not isinstance(array, np.ndarray) or array.dtype != np.float32:
        raise TypeError(f"dram[{index}] must be a float32 numpy array")
    if not array.flags.c_contiguous or not array.flags.writeable:
        raise ValueError(f"dram[{index}] must be C-contiguous and writable")
    return array.reshape(-1)
