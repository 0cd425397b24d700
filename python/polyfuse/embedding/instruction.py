"""The target's compute instruction, as the embedding problem sees it.

One instruction multiplies a `batch x block_in` slice of the streamed operand by a
`block_in x block_out` block of the stationary operand into a `batch x block_out`
accumulator slice (VTA: BATCH x BLOCK_IN x BLOCK_OUT = 1x16x16). An issued instruction
streams `rows` rows through one block; it costs

    ceil(rows / batch) + fill_cycles                      cycles per (in block, out block)

A partial block (fewer than block_in reduction elements, fewer than block_out columns)
costs as much as a full one: that is the utilisation an embedding loses when it pads.

    output-stationary (VTA's GEMM core): accumulates in place, one 1x16x16 micro-op per
        cycle, no fill: fill_cycles = 0.
    weight-stationary (Gemmini's WS mesh): each block is preloaded (rows cycles) and the
        pipeline fills and drains (rows + cols - 2), SCALE-Sim's analytical model and the
        emulator's: fill_cycles = 2 * rows + cols - 2.

`stream_limit` bounds the rows of one issued instruction (the accumulator slice that
holds its results); a longer stream is cut into ceil(rows / stream_limit) instructions.
"""

from __future__ import annotations

from dataclasses import dataclass

from polyfuse.targets import Target


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class InstructionModel:
    """Shape and cost of the target's compound GEMM instruction."""

    target: str
    batch: int
    block_in: int
    block_out: int
    fill_cycles: int
    stream_limit: int
    input_buffer_bytes: int  # capacity for streamed-operand tiles (int8)
    weight_buffer_bytes: int  # capacity for stationary-operand tiles (int8)
    accumulator_bytes: int  # capacity for accumulator tiles (int32)

    @property
    def macs_per_cycle(self) -> int:
        return self.batch * self.block_in * self.block_out

    def instruction_cycles(self, rows: int, cols: int, depth: int) -> int:
        """Cycles of one issued instruction: `rows` streamed rows, cols x depth block."""
        blocks = ceil_div(depth, self.block_in) * ceil_div(cols, self.block_out)
        return blocks * (ceil_div(rows, self.batch) + self.fill_cycles)

    def stream_tile(self, stream: int) -> int:
        return min(stream, self.stream_limit)


def instruction_model(target: Target) -> InstructionModel:
    """The instruction model of `target` (see the module docstring for the two kinds)."""
    total = target.scratchpad_bytes

    def partition(holds: str, default: int) -> int:
        part = target.partition_for(holds)
        return part.bytes if part is not None else default

    inputs = partition("inputs", total // 4)
    weights = partition("weights", total // 4)
    outputs = partition("outputs", total // 2)
    rows, cols = target.pe_rows, target.pe_cols
    fill = 0 if target.dataflow == "output-stationary" else 2 * rows + cols - 2
    # The rows of int32 partial sums one block column of the accumulator holds: the
    # longest stream that one preloaded block can serve.
    stream_limit = max(1, outputs // (4 * cols))
    return InstructionModel(
        target=target.name,
        batch=1,
        block_in=rows,
        block_out=cols,
        fill_cycles=fill,
        stream_limit=stream_limit,
        input_buffer_bytes=inputs,
        weight_buffer_bytes=weights,
        accumulator_bytes=outputs,
    )
