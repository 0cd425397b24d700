"""Building accel programs: views, the instruction table and a builder that encodes it.

The builder only checks what the encoding needs (arity, dimension counts, loop nesting);
whether a program is legal to run (bounds, capacity, DMA order) is the emulator's job, so
tests can build illegal programs on purpose. See `isa.py` for the record layout.

    b = ProgramBuilder()
    b.loop(4)  # depth 0: coeffs[0] scales its induction variable
    b.dma(View.spm(strides=(1,)), View.dram(0, coeffs=(16,), strides=(1,)), (16,), token=0)
    b.wait(0)
    b.end_loop()
    program = b.build()
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from polyfuse.runtime.isa import (
    FLAG_ACCUMULATE,
    MAX_DIMS,
    MAX_LOOP_DEPTH,
    RECORD_WORDS,
    V_BUFFER,
    V_C0,
    V_COEFFS,
    V_MEMORY,
    V_STRIDES,
    VECTOR_ARITY,
    VIEW_BASE,
    VIEW_WORDS,
    W_AUX,
    W_FLAGS,
    W_GROUP,
    W_LOCATION,
    W_OPCODE,
    W_SHAPE,
    W_SUB,
    W_TOKEN,
    Memory,
    Opcode,
    VectorKind,
)


@dataclass(frozen=True)
class View:
    """An affine access pattern: element c0 + coeffs . loop_ivs + strides . index of `memory`.

    `coeffs[l]` scales the induction variable of the enclosing loop at depth l; `strides[d]`
    steps along dim d of the instruction's shape (0 broadcasts).
    """

    memory: Memory
    buffer: int = 0
    c0: int = 0
    coeffs: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()

    @staticmethod
    def spm(c0: int = 0, coeffs: Sequence[int] = (), strides: Sequence[int] = ()) -> View:
        """A view of the scratchpad (addressed in float32 elements from 0)."""
        return View(Memory.SPM, 0, c0, tuple(coeffs), tuple(strides))

    @staticmethod
    def dram(
        buffer: int, c0: int = 0, coeffs: Sequence[int] = (), strides: Sequence[int] = ()
    ) -> View:
        """A view of DRAM buffer `buffer` (an index into the list passed to the emulator)."""
        return View(Memory.DRAM, buffer, c0, tuple(coeffs), tuple(strides))

    @staticmethod
    def imm() -> View:
        """The record's immediate scalar, broadcast over the whole shape."""
        return View(Memory.IMM)


_NONE = View(Memory.NONE)


@dataclass
class Program:
    """An encoded program: one int64 record and one float64 immediate per instruction.

    `records[pc, W_LOCATION]` indexes `locations`, which says where the instruction came from.
    """

    records: np.ndarray
    immediates: np.ndarray
    locations: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)


class ProgramBuilder:
    """Appends instructions one at a time and encodes them; `build()` returns the Program."""

    def __init__(self) -> None:
        self._records: list[np.ndarray] = []
        self._immediates: list[float] = []
        self._locations: dict[str, int] = {}
        self._open_loops: list[int] = []  # pc of each enclosing LOOP, outermost first
        self.group = 0  # operator group id written into every new record (W_GROUP)

    @property
    def pc(self) -> int:
        """The pc the next instruction will get."""
        return len(self._records)

    def loop(self, trip_count: int, location: str = "") -> int:
        """Opens a counted loop; returns its depth, the index of its induction variable."""
        if trip_count < 0:
            raise ValueError(f"loop: trip count must be non-negative, got {trip_count}")
        depth = len(self._open_loops)
        if depth >= MAX_LOOP_DEPTH:
            raise ValueError(f"loop: loops nest at most {MAX_LOOP_DEPTH} deep")
        record = self._new_record(Opcode.LOOP, location)
        record[W_SUB] = depth
        record[W_AUX] = trip_count
        self._open_loops.append(self._append(record, 0.0))
        return depth

    def end_loop(self, location: str = "") -> None:
        """Closes the innermost open loop."""
        if not self._open_loops:
            raise ValueError("end_loop: no loop is open")
        record = self._new_record(Opcode.ENDLOOP, location)
        record[W_AUX] = self._open_loops.pop()
        self._append(record, 0.0)

    def dma(
        self, dst: View, src: View, shape: Sequence[int], token: int, location: str = ""
    ) -> None:
        """Copies src to dst over `shape` asynchronously; completes at `wait(token)`."""
        record = self._new_record(Opcode.DMA, location)
        self._encode_shape(record, shape, "dma")
        record[W_TOKEN] = token
        self._encode_views(record, [dst, src], len(shape), "dma", ("dst", "src"))
        self._append(record, 0.0)

    def alloc(self, offset: int, elements: int, location: str = "") -> int:
        """Marks scratchpad elements [offset, offset + elements) live; returns the pc."""
        if elements < 0:
            raise ValueError(f"alloc: negative size {elements}")
        record = self._new_record(Opcode.ALLOC, location)
        record[W_SHAPE] = elements
        record[VIEW_BASE + V_MEMORY] = Memory.SPM
        record[VIEW_BASE + V_C0] = offset
        return self._append(record, 0.0)

    def free(self, alloc_pc: int, location: str = "") -> None:
        """Releases the buffer allocated at pc `alloc_pc`."""
        record = self._new_record(Opcode.FREE, location)
        record[W_AUX] = alloc_pc
        self._append(record, 0.0)

    def wait(self, token: int, location: str = "") -> None:
        """Waits for the DMA issued on `token`."""
        record = self._new_record(Opcode.WAIT, location)
        record[W_TOKEN] = token
        self._append(record, 0.0)

    def matmul(
        self,
        c: View,
        a: View,
        b: View,
        shape: Sequence[int],
        accumulate: bool,
        location: str = "",
    ) -> None:
        """C[m1,m2,n] (+)= sum_k A[m1,m2,k1,k2,k3] * B[k1,k2,k3,n]; shape (M1,M2,N,K1,K2,K3)."""
        record = self._new_record(Opcode.MATMUL, location)
        self._encode_shape(record, shape, "matmul")
        record[W_FLAGS] = FLAG_ACCUMULATE if accumulate else 0
        self._encode_views(record, [c, a, b], len(shape), "matmul", ("c", "a", "b"))
        self._append(record, 0.0)

    def vector(
        self,
        kind: VectorKind,
        dst: View,
        sources: Sequence[View],
        shape: Sequence[int],
        immediate: float = 0.0,
        location: str = "",
    ) -> None:
        """dst = kind(*sources) elementwise, in row-major order of `shape`."""
        kind = VectorKind(kind)
        arity = VECTOR_ARITY[kind]
        if len(sources) != arity:
            raise ValueError(f"vector {kind.name}: takes {arity} source(s), got {len(sources)}")
        record = self._new_record(Opcode.VECTOR, location)
        record[W_SUB] = kind
        self._encode_shape(record, shape, f"vector {kind.name}")
        views = [dst, *sources, *[_NONE] * (3 - arity)]
        self._encode_views(record, views, len(shape), f"vector {kind.name}", ("dst", "a", "b", "c"))
        self._append(record, float(immediate))

    def build(self) -> Program:
        """The encoded program; every loop must be closed."""
        if self._open_loops:
            raise ValueError(f"build: {len(self._open_loops)} loop(s) still open")
        records = (
            np.stack(self._records)
            if self._records
            else np.zeros((0, RECORD_WORDS), dtype=np.int64)
        )
        return Program(
            np.ascontiguousarray(records, dtype=np.int64),
            np.asarray(self._immediates, dtype=np.float64).reshape(-1),
            list(self._locations),
        )

    # ---- encoding ----

    def _new_record(self, opcode: Opcode, location: str) -> np.ndarray:
        record = np.zeros(RECORD_WORDS, dtype=np.int64)
        record[W_OPCODE] = opcode
        record[W_SHAPE : W_SHAPE + MAX_DIMS] = 1
        record[W_LOCATION] = self._locations.setdefault(location, len(self._locations))
        record[W_GROUP] = self.group
        return record

    def _append(self, record: np.ndarray, immediate: float) -> int:
        self._records.append(record)
        self._immediates.append(immediate)
        return len(self._records) - 1

    @staticmethod
    def _encode_shape(record: np.ndarray, shape: Sequence[int], what: str) -> None:
        if len(shape) > MAX_DIMS:
            raise ValueError(f"{what}: shape {tuple(shape)} has more than {MAX_DIMS} dims")
        if any(size < 0 for size in shape):
            raise ValueError(f"{what}: shape {tuple(shape)} has a negative size")
        record[W_SHAPE : W_SHAPE + len(shape)] = shape

    def _encode_views(
        self,
        record: np.ndarray,
        views: list[View],
        rank: int,
        what: str,
        names: tuple[str, ...],
    ) -> None:
        for i, (view, name) in enumerate(zip(views, names, strict=True)):
            self._check_view(view, rank, f"{what}: view {name}")
            base = VIEW_BASE + VIEW_WORDS * i
            record[base + V_MEMORY] = view.memory
            record[base + V_BUFFER] = view.buffer
            record[base + V_C0] = view.c0
            record[base + V_COEFFS : base + V_COEFFS + len(view.coeffs)] = view.coeffs
            record[base + V_STRIDES : base + V_STRIDES + len(view.strides)] = view.strides

    def _check_view(self, view: View, rank: int, what: str) -> None:
        if view.memory in (Memory.NONE, Memory.IMM):
            if view.coeffs or view.strides or view.c0 or view.buffer:
                raise ValueError(f"{what}: a {view.memory.name} view has no offsets or strides")
            return
        if len(view.strides) != rank:
            raise ValueError(f"{what}: has {len(view.strides)} stride(s) for a {rank}-dim shape")
        depth = len(self._open_loops)
        if len(view.coeffs) > MAX_LOOP_DEPTH:
            raise ValueError(f"{what}: has more than {MAX_LOOP_DEPTH} loop coefficients")
        used = [level for level, coeff in enumerate(view.coeffs) if coeff != 0]
        if used and used[-1] >= depth:
            raise ValueError(
                f"{what}: uses the induction variable of loop depth {used[-1]} "
                f"but only {depth} loop(s) are open"
            )
        if view.memory == Memory.DRAM and view.buffer < 0:
            raise ValueError(f"{what}: DRAM buffer id must be non-negative, got {view.buffer}")
