"""Running accel programs on the emulated accelerator.

`execute` runs a `Program` (see `program.py`) against DRAM buffers given as numpy arrays,
which it updates in place, and returns what the machine did and when each engine was
busy. The interpreter is native (`native/`, built as `polyfuse.runtime._emulator`); an
illegal program raises `polyfuse.errors.EmulatorTrap` naming the instruction and where it
came from.

Timing model (native/timing.h has the details). Four engines — DMA in, DMA out, PE array,
vector unit — each run their own queue in program order; across engines an instruction
waits for the instructions it depends on (read/write hazards on scratchpad and DRAM
ranges, the dependency tokens a compiler inserts for decoupled engines). `cycles` is the
critical path through the engines' timelines; `cycles_serial` runs the same instructions
one at a time (the baseline without overlap).
    DMA      busy ceil(bus bytes / dma_bytes_per_cycle), every contiguous DRAM run rounded
             up to whole bursts; the data is there dma_latency_cycles later
    MATMUL   weight-stationary: ceil(K/rows) * ceil(N/cols) * (2*rows + cols + M - 2)
             output-stationary: ceil(M/rows) * ceil(N/cols) * (2*rows + cols + K - 2)
             (M = M1*M2, K = K1*K2*K3; SCALE-Sim's compute model)
    VECTOR   busy ceil(elements / vector_width); the result vector_latency_cycles later

`sanitize=True` also shadows every scratchpad element (see native/sanitizer.h): reading
an element never written since its buffer was allocated, and a DMA load over a result
nothing has read yet, trap; reading a DMA destination before its wait always traps when
checks are on.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np
import scipy_openblas32

from polyfuse.errors import EmulatorTrap, TargetError
from polyfuse.runtime.program import Program

if TYPE_CHECKING:
    from polyfuse.targets import Target

# The native module links libscipy_openblas and finds it through its RPATH (next to it in
# an installed wheel, the build-time path in a development build). Loading this
# environment's copy globally first makes the import work even when that path is stale,
# e.g. a development build made in another virtual environment.
ctypes.CDLL(
    os.path.join(scipy_openblas32.get_lib_dir(), "libscipy_openblas.so"), mode=ctypes.RTLD_GLOBAL
)

from polyfuse.runtime import _emulator  # noqa: E402

FLOAT_BYTES = 4
DATAFLOWS = ("weight-stationary", "output-stationary")
ENGINES = ("DMA in", "DMA out", "PE array", "vector")


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
    dataflow: str = "weight-stationary"
    # A DRAM burst: every contiguous run of a DMA costs whole bursts of this many bytes
    # (64 B, one DDR4 burst of a 64-bit channel; 0 turns the rounding off).
    dma_burst_bytes: int = 64
    # Engines run concurrently (False: one instruction at a time, the no-overlap baseline).
    overlap: bool = True

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
        if self.dataflow not in DATAFLOWS:
            raise TargetError(
                f"dataflow must be one of {', '.join(DATAFLOWS)}, got {self.dataflow!r}"
            )
        if self.dma_burst_bytes < 0:
            raise TargetError(f"dma_burst_bytes must be non-negative, got {self.dma_burst_bytes}")

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
                DATAFLOWS.index(self.dataflow),
                self.dma_burst_bytes,
                1.0 if self.overlap else 0.0,
            ],
            dtype=np.float64,
        )


@dataclass
class LocationStats:
    """What the instructions of one operator group (isa word 12, one per operator as the
    serializer numbers them) did; `location` is where its first instruction came from."""

    group: int
    location: str
    dram_read_bytes: int
    dram_write_bytes: int
    macs: int
    vector_elements: int
    dma_load_cycles: float
    dma_store_cycles: float
    pe_cycles: float
    vector_cycles: float
    first_start: float  # -1: no timed instruction
    last_finish: float

    @property
    def span_cycles(self) -> float:
        return max(0.0, self.last_finish - self.first_start) if self.first_start >= 0 else 0.0

    @property
    def dma_cycles(self) -> float:
        return self.dma_load_cycles + self.dma_store_cycles

    @property
    def compute_cycles(self) -> float:
        return self.pe_cycles + self.vector_cycles


@dataclass(frozen=True)
class TraceSlice:
    """An engine busy on one operator group from `start` to `finish` (cycles)."""

    engine: str
    group: int
    location: str
    start: float
    finish: float
    busy: float
    instructions: int


@dataclass
class ExecutionStats:
    """What one run did. Byte counts are DRAM traffic of executed DMAs; busy cycles per engine."""

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
    pe_cycles: float  # also the PE array's cycles with DMA assumed free (ideal memory)
    vector_cycles: float
    cycles: float  # critical path through the engines' timelines
    cycles_serial: float  # every instruction one after the other (no overlap)
    spm_peak_bytes: int
    spm_live_peak_bytes: int
    spm_live_average_bytes: float
    instructions: int
    locations: list[LocationStats] = field(default_factory=list)
    trace: list[TraceSlice] = field(default_factory=list)
    trace_dropped: int = 0
    occupancy: list[tuple[float, int]] = field(default_factory=list)  # (cycle, bytes allocated)

    def engine_busy(self) -> dict[str, float]:
        return dict(
            zip(
                ENGINES,
                (self.dma_load_cycles, self.dma_store_cycles, self.pe_cycles, self.vector_cycles),
                strict=True,
            )
        )


SHADOW_BYTES_PER_ELEMENT = 9  # native/sanitizer.h: a state byte and an int64 writer


def host_memory_bytes() -> int:
    """This machine's physical memory in bytes (0 when the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _check_host_memory(machine: MachineParams, sanitize: bool) -> None:
    """The native core allocates the whole scratchpad (and its shadow) when a program
    starts: refuse one this machine cannot hold instead of failing with std::bad_alloc."""
    per_element = FLOAT_BYTES + (SHADOW_BYTES_PER_ELEMENT if sanitize else 0)
    needed = machine.spm_elements * per_element
    memory = host_memory_bytes()
    if memory and needed > memory:
        shadow = " and its --sanitize shadow" if sanitize else ""
        raise TargetError(
            f"the emulator needs {needed} bytes of this machine's memory for a scratchpad of "
            f"{machine.spm_bytes} bytes{shadow}, but the machine has {memory}; use a target "
            "with a smaller [scratchpad] bytes"
        )


def machine_params(target: Target, overlap: bool = True) -> MachineParams:
    """The emulated machine of `target`; `overlap` False runs one instruction at a time."""
    return MachineParams(
        spm_bytes=target.scratchpad_bytes,
        dma_latency_cycles=target.dma_latency_cycles,
        dma_bytes_per_cycle=target.dram_bytes_per_cycle,
        pe_rows=target.pe_rows,
        pe_cols=target.pe_cols,
        vector_width=target.vector_width,
        vector_latency_cycles=target.vector_latency_cycles,
        dataflow=target.dataflow,
        overlap=overlap,
    )


def execute(
    program: Program,
    dram: list[np.ndarray],
    machine: MachineParams,
    check: bool = True,
    *,
    sanitize: bool = False,
    trace_limit: int = 0,
    trace_merge_gap: float = 0.0,
) -> ExecutionStats:
    """Runs `program`, updating the DRAM buffers in place.

    `dram[i]` is DRAM buffer i: a writable C-contiguous float32 array (any shape; it is
    addressed as flat elements). With `check` false the DMA in-flight rules (reading before
    a wait, overwriting data in flight, token misuse) and the allocation rules (overflow,
    overlapping live buffers) are not checked; bounds always are. `sanitize` adds the
    shadow-memory checks (and implies `check`). `trace_limit` > 0 records up to that many
    engine slices; consecutive instructions of one operator on one engine within
    `trace_merge_gap` cycles of each other form one slice.
    """
    _check_host_memory(machine, sanitize)
    buffers = [_flat_buffer(i, array) for i, array in enumerate(dram)]
    try:
        counters = _emulator.run(
            program.records,
            program.immediates,
            buffers,
            machine.spm_elements,
            machine.timing_array(),
            check,
            sanitize,
            trace_limit,
            trace_merge_gap,
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
    names = program.locations
    per_location = counters["locations"]

    def name_of(location_id: int) -> str:
        return names[location_id] if 0 <= location_id < len(names) else ""

    locations = [
        LocationStats(
            group=i,
            location=name_of(per_location["location"][i]),
            **{key: per_location[key][i] for key in _LOCATION_KEYS},
        )
        for i in range(len(per_location["macs"]))
    ]
    trace = [
        TraceSlice(
            ENGINES[engine],
            group,
            locations[group].location if 0 <= group < len(locations) else "",
            *rest,
        )
        for engine, group, *rest in counters["trace"]
    ]
    scalar = {f.name: counters[f.name] for f in fields(ExecutionStats) if f.name not in _LISTS}
    return ExecutionStats(
        **scalar,
        locations=locations,
        trace=trace,
        trace_dropped=counters["trace_dropped"],
        occupancy=[(float(t), int(b)) for t, b in counters["occupancy"]],
    )


_LISTS = ("locations", "trace", "trace_dropped", "occupancy")
_LOCATION_KEYS = [f.name for f in fields(LocationStats) if f.name not in ("group", "location")]


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
