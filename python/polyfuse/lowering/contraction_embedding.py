"""Which loops of a contraction go onto the PE array: the embedding strategies (issue 6).

`classify_contraction` (pe_array.py) finds the loop roles of a contraction generic; this
module decides how `accel.matmul` issues it, by one of three strategies:

    csp        the CP-SAT embedding (polyfuse.embedding.solver): solved once per operator
               shape, within what `accel.matmul` can express (ACCEL_MATMUL_LIMITS: up to
               2 streamed M dims, 1 output-column N dim, 3 merged reduction K dims, no
               block-diagonal weights); may transpose (stream the weights, hold the
               activations stationary)
    fixed      the VTA reference: the activation's pixels / rows stream, its channel-like
               reduction dim (the one that shares no operand axis with a pixel dim) goes
               to the block_in rows, output channels to the block_out columns, the kernel
               window, groups and batch dims are issue loops
    heuristic  polyfuse's earlier greedy plan (`plan_issue`): at most one PE-array block
               per instruction

The chosen embedding names whole operator dims; a tile of the operator issues the same
assignment over its tile extents: stream dims -> the instruction's M dims, the block_out
dim -> N, block_in dims -> K (merged), everything else -> issue loops. Blocks are padded
by the PE array (a partial block costs a full one), as the solver's cost model says.

Layouts: each operand tile is DMA'd densely into the scratchpad, and `accel.matmul` reads
it with one stride per instruction dim, so the repacks and im2col that the standalone
lowering (embedding/lower.py) does as DRAM rewrites are plain strided scratchpad views
here: they move no extra DRAM bytes. What a stride cannot express is excluded from the
search instead (merging two output dims into N, three stream dims, diagonal packing).
"""

from __future__ import annotations

import functools
import itertools
import math
import time
from dataclasses import dataclass

from polyfuse.analysis.operators import GenericOperator, static_shape
from polyfuse.embedding.embedding import Embedding, Part, check_embedding
from polyfuse.embedding.instruction import InstructionModel, instruction_model
from polyfuse.embedding.operators import Axis, ContractionOp, OperandSpec
from polyfuse.embedding.solver import ACCEL_MATMUL_LIMITS, enumerate_embeddings
from polyfuse.errors import UnsupportedError
from polyfuse.lowering.pe_array import (
    Contraction,
    IssuePlan,
    largest_divisor_at_most,
    plan_issue,
)
from polyfuse.runtime.isa import W_AUX, W_OPCODE, W_SHAPE, Opcode
from polyfuse.runtime.program import Program
from polyfuse.targets import Target

EMBEDDINGS = ("csp", "fixed", "heuristic")
ENUMERATION_LIMIT = 20000
ENUMERATION_SECONDS = 10.0


@dataclass(frozen=True)
class ContractionChoice:
    """How one contraction operator is issued on the PE array."""

    strategy: str
    contraction: Contraction  # a: the streamed input, b: the stationary one
    embedding: Embedding | None  # None for "heuristic"
    predicted_cycles: int  # the instruction model's PE cycles of the whole operator
    solve_s: float  # CP-SAT time (0 when cached or not solved)
    instruction: InstructionModel

    def describe(self) -> str:
        if self.embedding is None:
            return self.strategy
        return f"{self.strategy}: {self.embedding.describe()}"


def check_strategy(embedding: str) -> None:
    if embedding not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {', '.join(EMBEDDINGS)}, got '{embedding}'")


def _dim(loop: int) -> str:
    return f"d{loop}"


def _loop(part: Part) -> int:
    return int(part.dim[1:])


def contraction_operator(generic: GenericOperator, contraction: Contraction) -> ContractionOp:
    """The generic as the embedding problem's operator: lhs = A, rhs = B, dims d<loop>."""
    loops = sorted({*contraction.m, *contraction.n, *contraction.k, *contraction.batch})

    def operand(name: str, index: int | None) -> OperandSpec:
        generic_operand = generic.outputs[0] if index is None else generic.inputs[index]
        access = generic_operand.access
        shape = static_shape(generic_operand.value)
        axes = tuple(
            Axis(
                tuple((_dim(loop), row[loop]) for loop in loops if row[loop] != 0),
                const,
                size,
            )
            for row, const, size in zip(access.coeffs, access.consts, shape, strict=True)
        )
        return OperandSpec(name, axes)

    extents = tuple((_dim(loop), generic.extents[loop]) for loop in loops)
    label = "contraction " + "x".join(str(extent) for _, extent in extents)
    return ContractionOp(
        "generic",
        label,
        extents,
        operand("A", contraction.a),
        operand("B", contraction.b),
        operand("C", None),
    )


def fixed_operator_embedding(op: ContractionOp, contraction: Contraction) -> Embedding:
    """The VTA reference strategy (see the module docstring) on the generic's loops."""
    extents = op.extents

    def parts(loops: tuple[int, ...] | list[int]) -> tuple[Part, ...]:
        return tuple(Part(_dim(loop), extents[_dim(loop)]) for loop in loops)

    m = [loop for loop in contraction.m if extents[_dim(loop)] > 1]
    n = [loop for loop in contraction.n if extents[_dim(loop)] > 1]
    pixel_dims = {_dim(loop) for loop in m}
    # A reduction dim sharing an axis of A with a pixel dim is a kernel-window dim.
    window = {
        dim
        for axis in op.lhs.axes
        if any(dim in pixel_dims for dim, _ in axis.terms)
        for dim, _ in axis.terms
    }
    channels = [loop for loop in contraction.k if _dim(loop) not in window]
    window_loops = [loop for loop in contraction.k if _dim(loop) in window]
    block_in = channels[-3:]
    loops = [
        *contraction.batch,
        *m[:-2],
        *n[:-1],
        *channels[:-3],
        *window_loops,
    ]
    return Embedding(False, parts(m[-2:]), parts(block_in), parts(n[-1:]), (), parts(loops))


@dataclass(frozen=True)
class Reduction:
    """How one instruction covers the block_in dims: `full` dims whole (innermost), one
    `chunked` dim in chunks of `chunk`, the rest issue loops."""

    full: tuple[int, ...]
    chunked: int | None
    chunk: int
    rest: tuple[int, ...]
    blocks: int  # instructions per output block


def reduction_boxes(loops: tuple[int, ...], extents: tuple[int, ...], rows: int) -> Reduction:
    """The fewest rectangular boxes of at most `rows` elements that cover `loops`.

    `accel.matmul` reduces over up to 3 strided dims of at most `rows` elements in all:
    a box of whole inner dims and a divisor-sized chunk of one more (no remainder tiles).
    """
    best: Reduction | None = None
    live = tuple(loop for loop in loops if extents[loop] > 1)
    for order in itertools.permutations(live):
        full: list[int] = []
        product = 1
        position = 0
        while (
            position < len(order) and len(full) < 2 and product * extents[order[position]] <= rows
        ):
            product *= extents[order[position]]
            full.append(order[position])
            position += 1
        chunked = order[position] if position < len(order) else None
        chunk = 1
        blocks = 1
        if chunked is not None:
            chunk = largest_divisor_at_most(extents[chunked], rows // product)
            blocks = extents[chunked] // chunk
            position += 1
        rest = order[position:]
        blocks *= math.prod(extents[loop] for loop in rest)
        candidate = Reduction(tuple(full), chunked, chunk, tuple(rest), blocks)
        if best is None or candidate.blocks < best.blocks:
            best = candidate
    return best or Reduction((), None, 1, (), 1)


def issue_cycles(
    embedding: Embedding, extents: tuple[int, ...], instruction: InstructionModel
) -> int:
    """PE cycles (instruction model) of issuing `embedding` over `extents` as
    `plan_embedded_issue` does: one accel.matmul per (reduction box, column block)."""
    rows, cols = instruction.block_in, instruction.block_out
    stream = math.prod(extents[_loop(part)] for part in embedding.stream)
    reduction = reduction_boxes(tuple(_loop(p) for p in embedding.block_in), extents, rows)
    column_blocks = 1
    for part in embedding.block_out:
        extent = extents[_loop(part)]
        column_blocks *= extent // largest_divisor_at_most(extent, cols)
    loops = math.prod(extents[_loop(part)] for part in embedding.loops)
    per_instruction = instruction.instruction_cycles(stream, 1, 1)
    return loops * reduction.blocks * column_blocks * per_instruction


@functools.lru_cache(maxsize=4096)
def _solve_cached(
    op: ContractionOp, extents: tuple[int, ...], instruction: InstructionModel
) -> tuple[Embedding, int, float]:
    """The embedding with the fewest issue cycles among those CP-SAT enumerates."""
    start = time.perf_counter()
    feasible = enumerate_embeddings(
        op,
        instruction,
        limit=ENUMERATION_LIMIT,
        time_limit=ENUMERATION_SECONDS,
        limits=ACCEL_MATMUL_LIMITS,
    )
    if not feasible:
        raise UnsupportedError(f"{op.label}: CP-SAT found no embedding")
    scored = [
        (
            (
                issue_cycles(embedding, extents, instruction),
                len(embedding.loops),
                embedding.transposed,
                embedding.describe(),
            ),
            embedding,
        )
        for embedding, _ in feasible
    ]
    key, embedding = min(scored, key=lambda item: item[0])
    return embedding, key[0], time.perf_counter() - start


def _transposed(contraction: Contraction) -> Contraction:
    return Contraction(
        contraction.b, contraction.a, contraction.n, contraction.m, contraction.k, contraction.batch
    )


def choose_embedding(
    generic: GenericOperator, contraction: Contraction, target: Target, strategy: str
) -> ContractionChoice:
    """The embedding of one contraction operator under `strategy` (cached by shape)."""
    check_strategy(strategy)
    if strategy == "heuristic":
        return ContractionChoice(strategy, contraction, None, 0, 0.0, instruction_model(target))
    op = contraction_operator(generic, contraction)
    instruction = instruction_model(target)
    solve_s = 0.0
    if strategy == "fixed":
        embedding = fixed_operator_embedding(op, contraction)
        check_embedding(op, embedding)
        cycles = issue_cycles(embedding, generic.extents, instruction)
    else:
        hits = _solve_cached.cache_info().hits
        try:
            embedding, cycles, seconds = _solve_cached(op, generic.extents, instruction)
        except UnsupportedError:
            # No mapping within accel.matmul's limits was listed in time (a huge loop
            # nest, or a loaded machine): the heuristic issue plan handles any tile.
            return ContractionChoice(
                "heuristic", contraction, None, 0, 0.0, instruction_model(target)
            )
        solve_s = seconds if _solve_cached.cache_info().hits == hits else 0.0
    issued = _transposed(contraction) if embedding.transposed else contraction
    return ContractionChoice(
        strategy,
        issued,
        embedding,
        cycles,
        solve_s,
        instruction,
    )


def tile_multiples(choice: ContractionChoice, extents: tuple[int, ...]) -> tuple[int, ...]:
    """Per loop, what its tile must be a multiple of for the tiles to issue the whole
    operator's boxes: the column chunk of the block_out dim, the chunk of the chunked
    block_in dim and the whole extent of the block_in dims an instruction covers whole.
    All 1 for "heuristic" (its plan adapts to any tile)."""
    multiples = [1] * len(extents)
    embedding = choice.embedding
    if embedding is None:
        return tuple(multiples)
    rows, cols = choice.instruction.block_in, choice.instruction.block_out
    for part in embedding.block_out:
        loop = _loop(part)
        multiples[loop] = largest_divisor_at_most(extents[loop], cols)
    reduction = reduction_boxes(tuple(_loop(p) for p in embedding.block_in), extents, rows)
    for loop in reduction.full:
        multiples[loop] = extents[loop]
    if reduction.chunked is not None:
        multiples[reduction.chunked] = reduction.chunk
    return tuple(multiples)


def tiling_pe_cycles(
    choice: ContractionChoice, extents: tuple[int, ...], tile: tuple[int, ...]
) -> int:
    """PE cycles (instruction model) of issuing the embedding tile by tile (every tile
    has the same extents: tiles divide the operator)."""
    assert choice.embedding is not None
    tiles = math.prod(extent // size for extent, size in zip(extents, tile, strict=True))
    return tiles * issue_cycles(choice.embedding, tile, choice.instruction)


def plan_embedded_issue(
    choice: ContractionChoice, tile: tuple[int, ...], rows: int, cols: int
) -> IssuePlan:
    """The issue plan of one tile: the embedding's slots over the tile's extents."""
    embedding = choice.embedding
    if embedding is None:
        return plan_issue(choice.contraction, tile, rows, cols)

    def active(parts: tuple[Part, ...]) -> tuple[int, ...]:
        return tuple(_loop(part) for part in parts if tile[_loop(part)] > 1)

    issue = [(loop, 1) for loop in active(embedding.loops)]
    block_out = active(embedding.block_out)
    n_inner = block_out[0] if block_out else None
    n_block = 1
    if n_inner is not None:
        n_block = largest_divisor_at_most(tile[n_inner], cols)
        if n_block < tile[n_inner]:
            issue.append((n_inner, n_block))
    reduction = reduction_boxes(active(embedding.block_in), tile, rows)
    issue += [(loop, 1) for loop in reduction.rest]
    k_inner: tuple[int, ...] = ()
    k_block = 1
    if reduction.chunked is not None:
        k_inner = (reduction.chunked, *reduction.full)
        k_block = reduction.chunk
        if reduction.chunk < tile[reduction.chunked]:
            issue.append((reduction.chunked, reduction.chunk))
    elif reduction.full:
        k_inner = reduction.full
        k_block = tile[reduction.full[0]]
    return IssuePlan(
        m_inner=active(embedding.stream),
        n_inner=n_inner,
        n_block=n_block,
        k_inner=k_inner,
        k_block=k_block,
        issue=tuple(issue),
    )


def program_pe_cycles(program: Program, instruction: InstructionModel) -> int:
    """PE-array cycles of every MATMUL `program` executes, under the instruction model.

    Trip counts are constant, so each MATMUL executes the product of its enclosing loops'
    trip counts; one of shape (M1, M2, N, K1, K2, K3) costs
    `instruction_cycles(M1 * M2, N, K1 * K2 * K3)`. (The emulator times VTA's GEMM core as
    an output-stationary systolic array; this is the cost the embedding optimises.)
    """
    trips: list[int] = []
    total = 0
    for record in program.records:
        opcode = int(record[W_OPCODE])
        if opcode == Opcode.LOOP:
            trips.append(int(record[W_AUX]))
        elif opcode == Opcode.ENDLOOP:
            trips.pop()
        elif opcode == Opcode.MATMUL:
            m1, m2, n, k1, k2, k3 = (int(v) for v in record[W_SHAPE : W_SHAPE + 6])
            cycles = instruction.instruction_cycles(m1 * m2, n, k1 * k2 * k3)
            total += math.prod(trips) * cycles
    return total
