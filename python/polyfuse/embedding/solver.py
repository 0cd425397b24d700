"""The embedding as a constraint problem, solved with OR-Tools CP-SAT.

Variables (dims of extent 1 are left out; they change nothing):

    transposed                 swap the streamed and the stationary operand
    place[d, slot]             dim d goes to slot (stream, block_in, block_out, loops);
                               legal slots follow from d's role and `transposed`
    pack[d, p]                 batch dim d: p of it on the diagonal, d/p in an issue loop

Each slot's merged extent is the product of its dims' extents; the cost is the one of
`cycles_of` (embedding.py), written with CP-SAT's multiplication and division
constraints:

    cycles = loops * ceil(IN / block_in) * ceil(OUT / block_out)
                   * (ceil(S / batch) + fill * ceil(S / stream_limit))

`solve` minimises cycles, then enumerates every embedding with the optimal cycle count
and keeps the one with the least layout-change traffic (layout.py). `enumerate_embeddings`
lists every feasible embedding with its cycles.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ortools.sat.python import cp_model

from polyfuse.analysis.divisors import divisors
from polyfuse.embedding.embedding import Embedding, Part, check_embedding, cycles_of
from polyfuse.embedding.instruction import InstructionModel
from polyfuse.embedding.layout import LayoutCost, dim_strides, layout_cost, part_stride
from polyfuse.embedding.operators import ContractionOp

# The lowering nests issue loops inside the 8 loop levels of the emulator, with three
# levels for the stream, output and reduction tiles.
MAX_ISSUE_LOOPS = 5
TIME_LIMIT_S = 0.45


@dataclass(frozen=True)
class SlotLimits:
    """What the instruction that issues the embedding can express.

    The standalone lowering (lower.py) rewrites operands into merged matrices, so any
    number of dims may share a slot. The compiler's `accel.matmul` addresses each of its
    dims with one stride per operand (2 stream dims, 1 output dim, 3 reduction dims) and
    cannot build block-diagonal weights, so it solves with `ACCEL_MATMUL_LIMITS`.
    """

    stream: int | None = None
    block_in: int | None = None
    block_out: int | None = None
    diagonal: bool = True
    issue_loops: int = MAX_ISSUE_LOOPS


UNLIMITED = SlotLimits()
ACCEL_MATMUL_LIMITS = SlotLimits(stream=2, block_in=3, block_out=1, diagonal=False)


@dataclass
class _Model:
    model: cp_model.CpModel
    transposed: cp_model.IntVar
    place: dict[tuple[str, str], cp_model.IntVar]
    pack: dict[tuple[str, int], cp_model.IntVar]
    cycles: cp_model.IntVar


def _slots_for(role: str) -> tuple[str, ...]:
    return {
        "lhs": ("stream", "block_out", "loops"),
        "rhs": ("stream", "block_out", "loops"),
        "reduction": ("block_in", "loops"),
    }[role]


def _product(
    model: cp_model.CpModel, name: str, factors: list[cp_model.IntVar], bound: int
) -> cp_model.IntVar:
    result = model.new_int_var(1, max(1, bound), name)
    if not factors:
        model.add(result == 1)
    elif len(factors) == 1:
        model.add(result == factors[0])
    else:
        model.add_multiplication_equality(result, factors)
    return result


def _ceil_div(
    model: cp_model.CpModel, name: str, value: cp_model.IntVar, bound: int, divisor: int
) -> cp_model.IntVar:
    if divisor == 1:
        return value
    shifted = model.new_int_var(divisor, bound + divisor - 1, name + "_shifted")
    model.add(shifted == value + divisor - 1)
    result = model.new_int_var(1, -(-bound // divisor), name)
    model.add_division_equality(result, shifted, divisor)
    return result


def _build(
    op: ContractionOp, instruction: InstructionModel, limits: SlotLimits = UNLIMITED
) -> _Model:
    model = cp_model.CpModel()
    transposed = model.new_bool_var("transposed")
    place: dict[tuple[str, str], cp_model.IntVar] = {}
    pack: dict[tuple[str, int], cp_model.IntVar] = {}
    factors: dict[str, list[cp_model.IntVar]] = {
        s: [] for s in ("stream", "block_in", "block_out", "diagonal", "loops")
    }
    bounds = dict.fromkeys(factors, 1)
    role_loops: dict[str, list[cp_model.IntVar]] = {
        r: [] for r in ("lhs", "rhs", "reduction", "batch")
    }
    role_product = dict.fromkeys(role_loops, 1)
    loop_count = []
    slot_members: dict[str, list[cp_model.IntVar]] = {
        s: [] for s in ("stream", "block_in", "block_out", "loops")
    }
    for dim, extent in op.dims:
        if extent == 1:
            continue
        role = op.role(dim)
        if role == "batch":
            packs = list(divisors(extent)) if limits.diagonal else [1]
            choices = {p: model.new_bool_var(f"pack_{dim}_{p}") for p in packs}
            model.add_exactly_one(choices.values())
            pack.update({(dim, p): var for p, var in choices.items()})
            diag = model.new_int_var(1, extent, f"diag_{dim}")
            model.add(diag == sum(p * var for p, var in choices.items()))
            outer = model.new_int_var(1, extent, f"outer_{dim}")
            model.add(outer == sum((extent // p) * var for p, var in choices.items()))
            factors["diagonal"].append(diag)
            role_loops["batch"].append(outer)
            role_product["batch"] *= extent
            bounds["diagonal"] *= extent
            bounds["loops"] *= extent
            loop_count.append(1 - choices[extent] if extent in choices else 1)
            continue
        slots = _slots_for(role)
        vars_ = {slot: model.new_bool_var(f"place_{dim}_{slot}") for slot in slots}
        model.add_exactly_one(vars_.values())
        if role == "lhs":
            model.add(vars_["stream"] == 0).only_enforce_if(transposed)
            model.add(vars_["block_out"] == 0).only_enforce_if(transposed.Not())
        elif role == "rhs":
            model.add(vars_["stream"] == 0).only_enforce_if(transposed.Not())
            model.add(vars_["block_out"] == 0).only_enforce_if(transposed)
        role_product[role] *= extent
        for slot, var in vars_.items():
            place[(dim, slot)] = var
            factor = model.new_int_var(1, extent, f"f_{dim}_{slot}")
            model.add(factor == 1 + (extent - 1) * var)
            if slot == "loops":
                role_loops[role].append(factor)
            else:
                factors[slot].append(factor)
                bounds[slot] *= extent
        loop_count.append(vars_["loops"])
        for slot, var in vars_.items():
            slot_members[slot].append(var)
    model.add(sum(loop_count) <= limits.issue_loops)
    for slot, limit in (
        ("stream", limits.stream),
        ("block_in", limits.block_in),
        ("block_out", limits.block_out),
    ):
        if limit is not None and len(slot_members[slot]) > limit:
            model.add(sum(slot_members[slot]) <= limit)
    factors["loops"] = [v for r in role_loops.values() for v in r]

    # Each product below is kept small enough for CP-SAT's overflow check by pairing a
    # slot with the issue loops of the same role (their product is the role's extent).
    side = max(role_product["lhs"], role_product["rhs"])
    d_bound = bounds["diagonal"]
    fill = instruction.fill_cycles
    stream = _product(model, "S", factors["stream"], min(bounds["stream"], side))
    diag = _product(model, "D", factors["diagonal"], d_bound)
    rows = _product(model, "IN_r", factors["block_in"], bounds["block_in"])
    cols = _product(model, "OUT_r", factors["block_out"], min(bounds["block_out"], side))
    in_bound = d_bound * bounds["block_in"]
    out_bound = d_bound * min(bounds["block_out"], side)
    in_extent = _product(model, "IN", [diag, rows], in_bound)
    out_extent = _product(model, "OUT", [diag, cols], out_bound)
    in_blocks = _ceil_div(model, "IN_blocks", in_extent, in_bound, instruction.block_in)
    out_blocks = _ceil_div(model, "OUT_blocks", out_extent, out_bound, instruction.block_out)
    s_bound = min(bounds["stream"], side)
    stream_steps = _ceil_div(model, "S_steps", stream, s_bound, instruction.batch)
    issues = _ceil_div(model, "S_issues", stream, s_bound, instruction.stream_limit)
    per_block_bound = -(-s_bound // instruction.batch) + fill * s_bound
    per_block = model.new_int_var(1, per_block_bound, "per_block")
    model.add(per_block == stream_steps + fill * issues)
    red_loops = _product(model, "L_red", role_loops["reduction"], role_product["reduction"])
    side_loops = _product(
        model,
        "L_side",
        role_loops["lhs"] + role_loops["rhs"],
        role_product["lhs"] * role_product["rhs"],
    )
    batch_loops = _product(model, "L_batch", role_loops["batch"], role_product["batch"])
    reduction = _product(
        model, "X_red", [red_loops, in_blocks], role_product["reduction"] * d_bound
    )
    columns = _product(model, "Y_cols", [out_blocks, per_block], out_bound * per_block_bound)
    sides = _product(
        model,
        "Y_side",
        [side_loops, columns],
        role_product["lhs"] * role_product["rhs"] * d_bound * (1 + fill),
    )
    cycle_bound = op.macs * d_bound * d_bound * (1 + fill)
    cycles = _product(model, "cycles", [reduction, sides, batch_loops], cycle_bound)
    return _Model(model, transposed, place, pack, cycles)


def _extract(op: ContractionOp, m: _Model, value: dict[str, int]) -> Embedding:
    """The embedding of one CP-SAT assignment, merged dims in a canonical order."""
    slots: dict[str, list[Part]] = {
        s: [] for s in ("stream", "block_in", "block_out", "diagonal", "loops")
    }
    extents = op.extents
    for (dim, slot), var in m.place.items():
        if value[var.name]:
            slots[slot].append(Part(dim, extents[dim]))
    for (dim, p), var in m.pack.items():
        if not value[var.name]:
            continue
        if p > 1:
            slots["diagonal"].append(Part(dim, p))
        if p < extents[dim]:
            slots["loops"].append(Part(dim, extents[dim] // p, p))
    return Embedding(
        bool(value[m.transposed.name]),
        tuple(slots["stream"]),
        tuple(slots["block_in"]),
        tuple(slots["block_out"]),
        tuple(slots["diagonal"]),
        tuple(slots["loops"]),
    )


def _ordered(parts: tuple[Part, ...], strides: dict[str, int]) -> tuple[Part, ...]:
    return tuple(sorted(parts, key=lambda p: -part_stride(strides, p)))


def best_order(
    op: ContractionOp, emb: Embedding, instruction: InstructionModel
) -> tuple[Embedding, LayoutCost]:
    """The order of merged dims that needs the least layout-change traffic."""
    streamed = dim_strides(op, op.operand(emb.streamed()))
    stationary = dim_strides(op, op.operand(emb.stationary()))
    output = dim_strides(op, op.out)
    best: tuple[Embedding, LayoutCost] | None = None
    for in_strides in (streamed, stationary):
        for out_strides in (output, stationary):
            candidate = Embedding(
                emb.transposed,
                _ordered(emb.stream, streamed),
                _ordered(emb.block_in, in_strides),
                _ordered(emb.block_out, out_strides),
                _ordered(emb.diagonal, stationary),
                _ordered(emb.loops, output),
            )
            cost = layout_cost(op, candidate, instruction)
            if best is None or cost.bytes < best[1].bytes:
                best = (candidate, cost)
    assert best is not None
    return best


class _Collector(cp_model.CpSolverSolutionCallback):
    def __init__(self, m: _Model, limit: int) -> None:
        super().__init__()
        self._m = m
        self._limit = limit
        self.values: list[dict[str, int]] = []

    def on_solution_callback(self) -> None:
        variables = [
            self._m.transposed,
            *self._m.place.values(),
            *self._m.pack.values(),
            self._m.cycles,
        ]
        self.values.append({v.name: self.value(v) for v in variables})
        if len(self.values) >= self._limit:
            self.stop_search()


def _enumerate(m: _Model, limit: int, time_limit: float) -> list[dict[str, int]]:
    solver = cp_model.CpSolver()
    solver.parameters.enumerate_all_solutions = True
    solver.parameters.num_workers = 1
    solver.parameters.max_time_in_seconds = time_limit
    collector = _Collector(m, limit)
    solver.solve(m.model, collector)
    return collector.values


def enumerate_embeddings(
    op: ContractionOp,
    instruction: InstructionModel,
    limit: int = 100000,
    time_limit: float = 60.0,
    limits: SlotLimits = UNLIMITED,
) -> list[tuple[Embedding, int]]:
    """Every feasible embedding of `op` (up to `limit`) with the cycles CP-SAT computed."""
    m = _build(op, instruction, limits)
    return [(_extract(op, m, v), v["cycles"]) for v in _enumerate(m, limit, time_limit)]


@dataclass(frozen=True)
class Solution:
    """The chosen embedding and how it was found."""

    embedding: Embedding
    cycles: int  # PE-array cycles
    layout: LayoutCost
    optimal_embeddings: int  # how many embeddings reach the optimal PE cycle count
    optimal: bool  # CP-SAT proved the PE cycle count optimal
    solve_s: float
    objective: str  # "lexicographic" or "combined"


SOLVE_BUDGET_S = 0.9


def _pick(
    op: ContractionOp,
    m: _Model,
    candidates: list[dict[str, int]],
    instruction: InstructionModel,
    cycles_per_byte: float,
) -> tuple[tuple[float, int, int, bool, str], Embedding, LayoutCost]:
    # Ties go to fewer issue loops, then to the untransposed embedding.
    best: tuple[tuple[float, int, int, bool, str], Embedding, LayoutCost] | None = None
    for value in candidates:
        emb, cost = best_order(op, _extract(op, m, value), instruction)
        total = value["cycles"] + cost.bytes * cycles_per_byte
        key = (total, cost.bytes, len(emb.loops), emb.transposed, emb.describe())
        if best is None or key < best[0]:
            best = (key, emb, cost)
    assert best is not None
    return best


def solve(
    op: ContractionOp,
    instruction: InstructionModel,
    layout_cycles_per_byte: float = 0.0,
    limits: SlotLimits = UNLIMITED,
) -> Solution:
    """Solves the embedding problem of `op` on `instruction`.

    With `layout_cycles_per_byte` 0 (the default) the objective is lexicographic: least
    PE-array cycles, then least layout-change traffic. A positive value minimises
    PE cycles + layout bytes * layout_cycles_per_byte instead (e.g. 1 / DRAM bytes per
    cycle, when the rewrites are not overlapped with compute): the search then also
    enumerates every embedding within the traffic of the lexicographic choice.
    """
    start = time.perf_counter()

    def remaining() -> float:
        return max(0.05, start + SOLVE_BUDGET_S - time.perf_counter())

    m = _build(op, instruction, limits)
    m.model.minimize(m.cycles)
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.max_time_in_seconds = min(TIME_LIMIT_S, remaining())
    status = solver.solve(m.model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise RuntimeError(f"{op.label}: no embedding found ({solver.status_name(status)})")
    best_cycles = int(solver.value(m.cycles))
    m2 = _build(op, instruction, limits)
    m2.model.add(m2.cycles == best_cycles)
    candidates = _enumerate(m2, 5000, min(TIME_LIMIT_S, remaining()))
    _, emb, cost = _pick(op, m2, candidates, instruction, 0.0)
    cycles = best_cycles
    objective = "lexicographic"
    if layout_cycles_per_byte > 0:
        objective = "combined"
        slack = int(cost.bytes * layout_cycles_per_byte)
        if slack > 0:
            m3 = _build(op, instruction, limits)
            m3.model.add(m3.cycles <= best_cycles + slack)
            wider = _enumerate(m3, 5000, remaining())
            key, alt, alt_cost = _pick(op, m3, wider, instruction, layout_cycles_per_byte)
            if key[0] < best_cycles + cost.bytes * layout_cycles_per_byte:
                emb, cost, cycles = alt, alt_cost, cycles_of(alt, instruction)
    check_embedding(op, emb)
    if cycles_of(emb, instruction) != cycles:
        raise AssertionError(
            f"{op.label}: model cycles {cycles} != cost {cycles_of(emb, instruction)}"
        )
    return Solution(
        emb,
        cycles,
        cost,
        len(candidates),
        status == cp_model.OPTIMAL,
        time.perf_counter() - start,
        objective,
    )


def fixed_solution_cost(
    op: ContractionOp, emb: Embedding, instruction: InstructionModel
) -> tuple[int, LayoutCost]:
    """Cycles and layout traffic of a given (e.g. the fixed) embedding."""
    check_embedding(op, emb)
    return cycles_of(emb, instruction), layout_cost(op, emb, instruction)
