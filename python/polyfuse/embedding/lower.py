"""Lowering a chosen embedding to an accel program and running it on the emulator.

The operands are first rewritten into the layouts the embedding needs (layout.py), then
one program issues the target's instruction over them:

    for outer issue loops (dims of the output):
      for stream tiles (St rows):                       # plus one remainder tile
        for output tiles (OUTt columns, whole blocks):
          C tile = 0
          for reduction issue loops, for reduction tiles (INt, whole blocks):
            DMA streamed tile [St, INt] and stationary tile [INt, OUTt] in
            MATMUL C[St, OUTt] += A[St, INt] @ B[INt, OUTt]
          DMA C tile out

Every MATMUL covers whole instruction blocks (vectors are padded to the block), so its
cost is `InstructionModel.instruction_cycles` of its shape. The lowering records each
MATMUL with how many times it executes (the product of the trip counts around it):
`trace_cycles` sums their cost, and `run` checks that the emulator executed exactly
those instructions (MATMUL count and MACs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from polyfuse.embedding.embedding import Embedding, Part
from polyfuse.embedding.instruction import InstructionModel
from polyfuse.embedding.layout import (
    block_pad,
    operand_loops,
    output_buffer,
    restore_output,
    transform_stationary,
    transform_streamed,
)
from polyfuse.embedding.operators import ContractionOp, reference
from polyfuse.runtime.emulator import ExecutionStats, MachineParams, execute, machine_params
from polyfuse.runtime.isa import VectorKind
from polyfuse.runtime.program import Program, ProgramBuilder, View
from polyfuse.targets import Target

STREAMED, STATIONARY, OUTPUT = 0, 1, 2  # DRAM buffer ids
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


def _largest_block_divisor(padded: int, block: int, cap: int) -> int:
    blocks = padded // block
    best = 1
    for d in range(1, blocks + 1):
        if blocks % d == 0 and d * block <= max(cap, block):
            best = d
    return best * block


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


def _strides(shape: list[int]) -> list[int]:
    return [math.prod(shape[i + 1 :]) for i in range(len(shape))]


def lower(op: ContractionOp, emb: Embedding, instruction: InstructionModel) -> LoweredOperator:
    """The accel program of `op` under `emb` and the instructions it issues."""
    tiles = choose_tiles(emb, instruction)
    in_pad = block_pad(emb.in_extent, instruction.block_in)
    out_pad = block_pad(emb.out_extent, instruction.block_out)
    stream = emb.stream_extent
    buffers = {
        STREAMED: operand_loops(op, emb, emb.streamed()),
        STATIONARY: operand_loops(op, emb, emb.stationary()),
        OUTPUT: operand_loops(op, emb, "out"),
    }
    tails = {STREAMED: [stream, in_pad], STATIONARY: [in_pad, out_pad], OUTPUT: [stream, out_pad]}
    loop_strides: dict[tuple[int, Part], int] = {}
    for buffer, loops in buffers.items():
        shape = [p.extent for p in loops] + tails[buffer]
        for part, stride in zip(loops, _strides(shape), strict=False):
            loop_strides[(buffer, part)] = stride

    a_base, b_base = 0, tiles.stream * tiles.depth
    c_base = b_base + tiles.depth * tiles.cols
    spm_elements = c_base + tiles.stream * tiles.cols

    builder = ProgramBuilder()
    open_loops: list[tuple[int, dict[int, int]]] = []
    trace: list[IssuedInstruction] = []

    def open_loop(trip: int, coeffs: dict[int, int], where: str) -> None:
        if trip > 1:
            builder.loop(trip, where)
            open_loops.append((trip, coeffs))

    def close_loop(trip: int) -> None:
        if trip > 1:
            builder.end_loop()
            open_loops.pop()

    def coeffs(buffer: int) -> tuple[int, ...]:
        return tuple(c.get(buffer, 0) for _, c in open_loops)

    def part_loop(part: Part) -> None:
        open_loop(
            part.extent,
            {b: loop_strides.get((b, part), 0) for b in buffers},
            f"issue loop {part.name}",
        )

    outer = [p for p in emb.loops if op.out.uses(p.dim)]
    inner = [p for p in emb.loops if not op.out.uses(p.dim)]
    full, remainder = divmod(stream, tiles.stream)
    segments = [(full, tiles.stream, 0)] + (
        [(1, remainder, full * tiles.stream)] if remainder else []
    )
    for part in outer:
        part_loop(part)
    for count, rows, base in segments:
        open_loop(count, {STREAMED: rows * in_pad, OUTPUT: rows * out_pad}, "stream tiles")
        col_trips = out_pad // tiles.cols
        open_loop(col_trips, {STATIONARY: tiles.cols, OUTPUT: tiles.cols}, "output tiles")
        builder.vector(
            VectorKind.COPY,
            View.spm(c_base, strides=(tiles.cols, 1)),
            [View.imm()],
            (rows, tiles.cols),
            0.0,
            "zero accumulator tile",
        )
        for part in inner:
            part_loop(part)
        depth_trips = in_pad // tiles.depth
        open_loop(
            depth_trips,
            {STREAMED: tiles.depth, STATIONARY: tiles.depth * out_pad},
            "reduction tiles",
        )
        builder.dma(
            View.spm(a_base, strides=(tiles.depth, 1)),
            View.dram(STREAMED, base * in_pad, coeffs(STREAMED), (in_pad, 1)),
            (rows, tiles.depth),
            0,
            "load streamed tile",
        )
        builder.dma(
            View.spm(b_base, strides=(tiles.cols, 1)),
            View.dram(STATIONARY, 0, coeffs(STATIONARY), (out_pad, 1)),
            (tiles.depth, tiles.cols),
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
            IssuedInstruction(math.prod(t for t, _ in open_loops), rows, tiles.cols, tiles.depth)
        )
        close_loop(depth_trips)
        for part in reversed(inner):
            close_loop(part.extent)
        builder.dma(
            View.dram(OUTPUT, base * out_pad, coeffs(OUTPUT), (out_pad, 1)),
            View.spm(c_base, strides=(tiles.cols, 1)),
            (rows, tiles.cols),
            2,
            "store accumulator tile",
        )
        builder.wait(2)
        close_loop(col_trips)
        close_loop(count)
    for part in reversed(outer):
        close_loop(part.extent)
    return LoweredOperator(builder.build(), trace, tiles, spm_elements)


def trace_cycles(trace: list[IssuedInstruction], instruction: InstructionModel) -> int:
    """PE-array cycles of the issued instructions."""
    return sum(i.count * instruction.instruction_cycles(i.rows, i.cols, i.depth) for i in trace)


def trace_macs(trace: list[IssuedInstruction]) -> int:
    return sum(i.count * i.rows * i.cols * i.depth for i in trace)


@dataclass
class Execution:
    """One run of an embedding on the emulator."""

    output: np.ndarray
    cycles: int  # from the executed instructions
    stats: ExecutionStats
    max_rel_err: float


def machine_for(target: Target, spm_elements: int) -> MachineParams:
    """The emulator machine: the target's engines, a scratchpad that holds the float32
    stand-ins of the int8 tiles (their capacity is checked in native bytes by
    `choose_tiles`)."""
    return replace(machine_params(target), spm_bytes=max(target.scratchpad_bytes, 4 * spm_elements))


def run(
    op: ContractionOp,
    emb: Embedding,
    instruction: InstructionModel,
    target: Target,
    lhs: np.ndarray,
    rhs: np.ndarray,
) -> Execution:
    """Transforms the operands, runs the lowered program, restores Y and checks it."""
    lowered = lower(op, emb, instruction)
    streamed, stationary = (rhs, lhs) if emb.transposed else (lhs, rhs)
    dram = [
        transform_streamed(op, emb, streamed, instruction),
        transform_stationary(op, emb, stationary, instruction),
        output_buffer(op, emb, instruction),
    ]
    stats = execute(lowered.program, dram, machine_for(target, lowered.spm_elements))
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
    output = restore_output(op, emb, dram[OUTPUT])
    expected = reference(op, lhs, rhs)
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    error = float(np.max(np.abs(output.astype(np.float64) - expected))) / scale
    return Execution(output, cycles, stats, error)
