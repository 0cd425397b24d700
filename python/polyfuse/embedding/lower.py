"""Lowering a chosen embedding to an accel program and running it on the emulator.

The layout programs (layout_program.py) first rewrite the operands the instruction
cannot read in place; then one program issues the target's instruction over the
matrices; then a layout program restores Y if the instruction could not write it in
place. The emulator runs all of them, from the operands in their PyTorch layouts:

    for outer issue loops (dims of the output):
      for stream tiles (St rows):                       # plus one remainder tile
        for output tiles (OUTt columns, whole blocks):
          C tile = 0
          for reduction issue loops, for reduction tiles (INt, whole blocks):
            DMA streamed tile [St, INt] and stationary tile [INt, OUTt] in
            MATMUL C[St, OUTt] += A[St, INt] @ B[INt, OUTt]
          DMA C tile out

Every MATMUL covers whole instruction blocks (the tile that a vector's padding ends in is
zero-filled on chip and loaded with the vector's own elements only), so its
cost is `InstructionModel.instruction_cycles` of its shape. The lowering records each
MATMUL with how many times it executes (the product of the trip counts around it):
`trace_cycles` sums their cost, and `run` checks that the emulator executed exactly
those instructions (MATMUL count and MACs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from polyfuse.analysis.divisors import divisors
from polyfuse.embedding.embedding import Embedding, Part
from polyfuse.embedding.instruction import InstructionModel
from polyfuse.embedding.layout import ELEMENT_BYTES, block_pad
from polyfuse.embedding.layout_program import OUT, LayoutPlan, plan_layouts
from polyfuse.embedding.operators import ContractionOp, reference
from polyfuse.runtime.emulator import (
    FLOAT_BYTES,
    ExecutionStats,
    MachineParams,
    execute,
    machine_params,
)
from polyfuse.runtime.isa import VectorKind
from polyfuse.runtime.program import Program, ProgramBuilder, View
from polyfuse.targets import Target

MAX_TILE = 512


@dataclass(frozen=True)
class IssuedInstruction:
    """A MATMUL of the program and how many times it executes."""

    count: int
    rows: int
    cols: int
    depth: int


@dataclass(frozen=True)
class Tiles:
    stream: int
    depth: int  # INt
    cols: int  # OUTt


@dataclass
class LoweredOperator:
    program: Program
    trace: list[IssuedInstruction]
    tiles: Tiles
    spm_elements: int
    layouts: LayoutPlan


def _largest_block_divisor(padded: int, block: int, cap: int) -> int:
    blocks = padded // block
    return max(d for d in divisors(blocks) if d * block <= max(cap, block)) * block


def choose_tiles(emb: Embedding, instruction: InstructionModel) -> Tiles:
    """Tiles that fit the target's buffers (int8 operands, int32 accumulators)."""
    stream = instruction.stream_tile(emb.stream_extent)
    in_pad = block_pad(emb.in_extent, instruction.block_in)
    out_pad = block_pad(emb.out_extent, instruction.block_out)
    depth = _largest_block_divisor(
        in_pad, instruction.block_in, min(MAX_TILE, instruction.input_buffer_bytes // stream)
    )
    cols_cap = min(
        MAX_TILE,
        instruction.accumulator_bytes // (4 * stream),
        instruction.weight_buffer_bytes // depth,
    )
    cols = _largest_block_divisor(out_pad, instruction.block_out, cols_cap)
    return Tiles(stream, depth, cols)


def _tile_runs(extent: int, tile: int) -> list[tuple[int, int, int]]:
    """(trips, valid elements, first element) of the tiles over a vector padded to `tile`:
    the full tiles, then the one the padding ends in."""
    full, valid = divmod(extent, tile)
    return ([(full, tile, 0)] if full else []) + ([(1, valid, full * tile)] if valid else [])


def lower(
    op: ContractionOp,
    emb: Embedding,
    instruction: InstructionModel,
    plan: LayoutPlan | None = None,
) -> LoweredOperator:
    """The accel program of `op` under `emb` and the instructions it issues.

    It reads and writes the matrices of `plan` (the operands in place, or the dense
    matrices its layout programs write); the columns that pad a vector to the block are
    zero-filled on chip, so only the operands' own elements cross the DRAM bus.
    """
    plan = plan or plan_layouts(op, emb, instruction)
    tiles = choose_tiles(emb, instruction)
    stream = emb.stream_extent
    a, b, c = (plan.operands[role] for role in ("streamed", "stationary", "output"))
    a_base, b_base = 0, tiles.stream * tiles.depth
    c_base = b_base + tiles.depth * tiles.cols
    spm_elements = c_base + tiles.stream * tiles.cols

    builder = ProgramBuilder()
    open_loops: list[tuple[int, dict[str, int]]] = []
    trace: list[IssuedInstruction] = []

    def open_loop(trip: int, coeffs: dict[str, int], where: str) -> None:
        if trip > 1:
            builder.loop(trip, where)
            open_loops.append((trip, coeffs))

    def close_loop(trip: int) -> None:
        if trip > 1:
            builder.end_loop()
            open_loops.pop()

    def coeffs(name: str) -> tuple[int, ...]:
        return tuple(c.get(name, 0) for _, c in open_loops)

    def part_loop(part: Part) -> None:
        strides = {"A": a.loop_stride(part), "B": b.loop_stride(part), "C": c.loop_stride(part)}
        open_loop(part.extent, strides, f"issue loop {part.name}")

    def zero(base: int, rows: int, cols: int, row_stride: int, where: str) -> None:
        if rows and cols:
            spm = View.spm(base, strides=(row_stride, 1))
            builder.vector(VectorKind.COPY, spm, [View.imm()], (rows, cols), 0.0, where)

    outer = [p for p in emb.loops if op.out.uses(p.dim)]
    inner = [p for p in emb.loops if not op.out.uses(p.dim)]
    full, remainder = divmod(stream, tiles.stream)
    segments = [(full, tiles.stream, 0)] + (
        [(1, remainder, full * tiles.stream)] if remainder else []
    )
    for part in outer:
        part_loop(part)
    for count, rows, base in segments:
        open_loop(count, {"A": rows * a.row_stride, "C": rows * c.row_stride}, "stream tiles")
        for col_trips, cols, col0 in _tile_runs(emb.out_extent, tiles.cols):
            coeff = {"B": tiles.cols * b.col_stride, "C": tiles.cols * c.col_stride}
            open_loop(col_trips, coeff, "output tiles")
            zero(c_base, rows, tiles.cols, tiles.cols, "zero accumulator tile")
            for part in inner:
                part_loop(part)
            for depth_trips, depth, depth0 in _tile_runs(emb.in_extent, tiles.depth):
                coeff = {"A": tiles.depth * a.col_stride, "B": tiles.depth * b.row_stride}
                open_loop(depth_trips, coeff, "reduction tiles")
                pad = tiles.depth - depth
                zero(a_base + depth, rows, pad, tiles.depth, "zero-fill the block padding")
                zero(b_base + depth * tiles.cols, pad, tiles.cols, tiles.cols, "zero-fill")
                zero(b_base + cols, depth, tiles.cols - cols, tiles.cols, "zero-fill")
                a_c0 = base * a.row_stride + depth0 * a.col_stride
                builder.dma(
                    View.spm(a_base, strides=(tiles.depth, 1)),
                    View.dram(a.buffer, a_c0, coeffs("A"), (a.row_stride, a.col_stride)),
                    (rows, depth),
                    0,
                    "load streamed tile",
                )
                b_c0 = depth0 * b.row_stride + col0 * b.col_stride
                builder.dma(
                    View.spm(b_base, strides=(tiles.cols, 1)),
                    View.dram(b.buffer, b_c0, coeffs("B"), (b.row_stride, b.col_stride)),
                    (depth, cols),
                    1,
                    "load stationary tile",
                )
                builder.wait(0)
                builder.wait(1)
                builder.matmul(
                    View.spm(c_base, strides=(0, tiles.cols, 1, 0, 0, 0)),
                    View.spm(a_base, strides=(0, tiles.depth, 0, 1, 0, 0)),
                    View.spm(b_base, strides=(0, 0, 1, tiles.cols, 0, 0)),
                    (1, rows, tiles.cols, tiles.depth, 1, 1),
                    accumulate=True,
                    location=f"instruction {emb.describe()}",
                )
                trace.append(
                    IssuedInstruction(
                        math.prod(t for t, _ in open_loops), rows, tiles.cols, tiles.depth
                    )
                )
                close_loop(depth_trips)
            for part in reversed(inner):
                close_loop(part.extent)
            c_c0 = base * c.row_stride + col0 * c.col_stride
            builder.dma(
                View.dram(c.buffer, c_c0, coeffs("C"), (c.row_stride, c.col_stride)),
                View.spm(c_base, strides=(tiles.cols, 1)),
                (rows, cols),
                2,
                "store accumulator tile",
            )
            builder.wait(2)
            close_loop(col_trips)
        close_loop(count)
    for part in reversed(outer):
        close_loop(part.extent)
    return LoweredOperator(builder.build(), trace, tiles, spm_elements, plan)


def trace_cycles(trace: list[IssuedInstruction], instruction: InstructionModel) -> int:
    """PE-array cycles of the issued instructions."""
    return sum(i.count * instruction.instruction_cycles(i.rows, i.cols, i.depth) for i in trace)


def trace_macs(trace: list[IssuedInstruction]) -> int:
    return sum(i.count * i.rows * i.cols * i.depth for i in trace)


@dataclass
class LayoutRun:
    """What the layout programs of an embedding did on the emulator (before and after the
    GEMM program)."""

    dram_bytes: int  # at ELEMENT_BYTES per element, as `layout_cost` counts them
    cycles: float  # the programs' emulated cycles, one after the other
    dma_cycles: float  # DMA engines busy (loads + stores)
    vector_cycles: float  # vector unit busy (zero fills, gathers)
    stats: list[ExecutionStats]  # per program; its byte counts are of float32 stand-ins

    @staticmethod
    def of(runs: list[ExecutionStats]) -> LayoutRun:
        moved = sum(s.dram_read_bytes + s.dram_write_bytes for s in runs)
        return LayoutRun(
            moved // FLOAT_BYTES * ELEMENT_BYTES,
            sum(s.cycles for s in runs),
            sum(s.dma_load_cycles + s.dma_store_cycles for s in runs),
            sum(s.vector_cycles for s in runs),
            runs,
        )


@dataclass
class Execution:
    """One run of an embedding on the emulator."""

    output: np.ndarray
    cycles: int  # PE-array cycles of the GEMM program's instructions
    stats: ExecutionStats  # the GEMM program
    layout: LayoutRun  # the layout programs
    max_rel_err: float


def machine_for(target: Target, spm_elements: int) -> MachineParams:
    """The emulator machine for int8 data held as float32 stand-ins: the target's engines,
    a scratchpad that holds `spm_elements` stand-ins (the native capacity is checked in
    int8 elements by `choose_tiles` and `layout_program.staging_elements`), and DMA
    bandwidth and bursts scaled by 4 so that DMA cycles are those of the int8 bytes."""
    scale = FLOAT_BYTES // ELEMENT_BYTES
    params = machine_params(target)
    return replace(
        params,
        spm_bytes=max(target.scratchpad_bytes, FLOAT_BYTES * spm_elements),
        dma_bytes_per_cycle=params.dma_bytes_per_cycle * scale,
        dma_burst_bytes=params.dma_burst_bytes * scale,
    )


def dram_buffers(
    op: ContractionOp, plan: LayoutPlan, lhs: np.ndarray, rhs: np.ndarray
) -> list[np.ndarray]:
    """The emulator's DRAM: the operands as given, then Y and the dense matrices, all NaN
    (an element no program writes shows up in the result)."""
    for name, array, spec in (("lhs", lhs, op.lhs), ("rhs", rhs, op.rhs)):
        if array.shape != spec.shape:
            raise ValueError(f"{op.label}: {name} has shape {array.shape}, expected {spec.shape}")
    scratch = [op.out.shape, *plan.dense_shapes]
    return [
        np.array(lhs, dtype=np.float32, order="C"),
        np.array(rhs, dtype=np.float32, order="C"),
        *(np.full(shape, math.nan, dtype=np.float32) for shape in scratch),
    ]


def _run_layout(
    program: Program | None, dram: list[np.ndarray], machine: MachineParams
) -> list[ExecutionStats]:
    return [execute(program, dram, machine)] if program is not None else []


def measure_layout(
    op: ContractionOp, emb: Embedding, instruction: InstructionModel, target: Target
) -> LayoutRun:
    """Runs only the layout programs of `emb`, e.g. for an operator too big to run the
    GEMM program of. They run on zeros (their traffic and cycles do not depend on the
    data), allocated lazily: pages no program touches cost no memory."""
    plan = plan_layouts(op, emb, instruction)
    if plan.before is None and plan.after is None:
        return _checked_layout(op, plan, [])
    shapes = [op.lhs.shape, op.rhs.shape, op.out.shape, *plan.dense_shapes]
    dram = [np.zeros(shape, dtype=np.float32) for shape in shapes]
    machine = machine_for(target, plan.spm_elements)
    runs = _run_layout(plan.before, dram, machine) + _run_layout(plan.after, dram, machine)
    return _checked_layout(op, plan, runs)


def _checked_layout(op: ContractionOp, plan: LayoutPlan, runs: list[ExecutionStats]) -> LayoutRun:
    layout = LayoutRun.of(runs)
    if layout.dram_bytes != plan.cost.bytes:
        raise AssertionError(
            f"{op.label}: the layout programs moved {layout.dram_bytes} bytes, "
            f"layout_cost says {plan.cost.bytes}"
        )
    return layout


def run(
    op: ContractionOp,
    emb: Embedding,
    instruction: InstructionModel,
    target: Target,
    lhs: np.ndarray,
    rhs: np.ndarray,
) -> Execution:
    """Runs the layout programs, the GEMM program and the output restore on the emulator,
    from the operands in their own layouts to Y in its own, and checks Y."""
    lowered = lower(op, emb, instruction)
    plan = lowered.layouts
    dram = dram_buffers(op, plan, lhs, rhs)
    machine = machine_for(target, max(lowered.spm_elements, plan.spm_elements))
    before = _run_layout(plan.before, dram, machine)
    stats = execute(lowered.program, dram, machine)
    after = _run_layout(plan.after, dram, machine)
    issued = sum(i.count for i in lowered.trace)
    if stats.matmuls != issued or stats.macs != trace_macs(lowered.trace):
        raise AssertionError(
            f"{op.label}: emulator executed {stats.matmuls} MATMULs / {stats.macs} MACs, "
            f"the trace says {issued} / {trace_macs(lowered.trace)}"
        )
    cycles = trace_cycles(lowered.trace, instruction)
    # On a weight-stationary target the emulator's own PE timing is the same model: it
    # must agree exactly. (Its output-stationary model is a systolic array, not VTA's
    # 1x16x16 vector-matrix core, so there the instruction model alone counts.)
    if target.dataflow == "weight-stationary" and stats.pe_cycles != cycles:
        raise AssertionError(f"{op.label}: emulator PE cycles {stats.pe_cycles} != trace {cycles}")
    layout = _checked_layout(op, plan, before + after)
    output = dram[OUT]
    expected = reference(op, lhs, rhs)
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    error = float(np.max(np.abs(output.astype(np.float64) - expected))) / scale
    if not np.isfinite(error):
        raise AssertionError(f"{op.label}: an element of Y was never written ({emb.describe()})")
    return Execution(output, cycles, stats, layout, error)
