"""A linalg.generic body as vector-unit instructions over one tile.

Each scalar op of the body becomes one `accel.vector` over the whole tile: block
arguments are the operand tiles, intermediate values live in scratchpad temporaries,
the value yielded to an output is written straight into the output tile. A reduction
(`out = f(out, x)` with reduction loops) is one instruction whose destination is the
output tile with stride 0 on the reduction loops; the vector unit executes it in order.

Scalars (constants, splat tensors) are folded at compile time when all operands are
scalars, otherwise passed as the instruction's immediate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from torch_mlir import ir

from polyfuse.analysis.operators import defining_op
from polyfuse.errors import UnsupportedError
from polyfuse.lowering.tile_compute import TileView, emit_vector

BINARY = {
    "arith.addf": "add",
    "arith.subf": "sub",
    "arith.mulf": "mul",
    "arith.divf": "div",
    "arith.maximumf": "max",
    "arith.minimumf": "min",
    "arith.maxnumf": "maxnum",
    "arith.minnumf": "minnum",
    "math.powf": "pow",
    # x ** n with an integer n (gelu's tanh approximation: x ** 3); std::pow is exact
    # for a negative base and an integer-valued exponent.
    "math.fpowi": "pow",
}
UNARY = {
    "arith.negf": "neg",
    "math.exp": "exp",
    "math.log": "log",
    "math.tanh": "tanh",
    "math.erf": "erf",
    "math.sqrt": "sqrt",
    "math.rsqrt": "rsqrt",
    "math.absf": "abs",
    "math.log1p": "log1p",
    "math.expm1": "expm1",
    "math.sin": "sin",
    "math.cos": "cos",
    "math.floor": "floor",
    "math.ceil": "ceil",
}
COMMUTATIVE = {"add", "mul", "max", "min", "maxnum", "minnum"}
# arith.CmpFPredicate values → vector kinds (false/ord/uno/true are not supported).
CMP_PREDICATES = {
    1: "cmp_oeq",
    2: "cmp_ogt",
    3: "cmp_oge",
    4: "cmp_olt",
    5: "cmp_ole",
    6: "cmp_one",
    8: "cmp_ueq",
    9: "cmp_ugt",
    10: "cmp_uge",
    11: "cmp_ult",
    12: "cmp_ule",
    13: "cmp_une",
}
SWAPPED_CMP = {
    "cmp_ogt": "cmp_olt",
    "cmp_olt": "cmp_ogt",
    "cmp_oge": "cmp_ole",
    "cmp_ole": "cmp_oge",
    "cmp_ugt": "cmp_ult",
    "cmp_ult": "cmp_ugt",
    "cmp_uge": "cmp_ule",
    "cmp_ule": "cmp_uge",
    "cmp_oeq": "cmp_oeq",
    "cmp_one": "cmp_one",
    "cmp_ueq": "cmp_ueq",
    "cmp_une": "cmp_une",
}
PASS_THROUGH = {"arith.extf", "arith.truncf"}  # f32/f64 both run as f32 on the accelerator

_NUMPY: dict[str, Callable[..., float]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "max": max,
    "min": min,
    "maxnum": max,
    "minnum": min,
    "pow": lambda a, b: a**b,
    "neg": lambda a: -a,
    "exp": math.exp,
    "log": math.log,
    "tanh": math.tanh,
    "erf": math.erf,
    "sqrt": math.sqrt,
    "rsqrt": lambda a: 1 / math.sqrt(a),
    "abs": abs,
    "log1p": math.log1p,
    "expm1": math.expm1,
    "sin": math.sin,
    "cos": math.cos,
    "floor": math.floor,
    "ceil": math.ceil,
}


def _location(op: ir.Operation) -> str:
    return str(op.location)


@dataclass
class BodyPlan:
    """What the body needs, decided before tiling (the temporaries count)."""

    ops: list[ir.Operation]  # live body ops in order
    fused_into_fma: set[ir.Operation] = field(default_factory=set)
    temporaries: int = 0


def plan_body(block: ir.Block, live_yields: list[ir.Value]) -> BodyPlan:
    """Live ops (those the live outputs depend on), FMA fusion and temporaries."""
    live_values: set[ir.Value] = set(live_yields)
    ops = [o.operation for o in block.operations if o.operation.name != "linalg.yield"]
    live_ops: list[ir.Operation] = []
    for op in reversed(ops):
        if any(result in live_values for result in op.results):
            live_ops.append(op)
            live_values.update(op.operands)
    live_ops.reverse()
    for op in live_ops:
        if op.name not in SUPPORTED_OPS:
            raise UnsupportedError(
                f"{_location(op)}: '{op.name}' inside a linalg.generic body is not supported "
                f"on the vector unit, which runs {', '.join(sorted(SUPPORTED_OPS))} on f32 "
                "(integer arithmetic, indices and other type casts are not supported yet)"
            )
    plan = BodyPlan(ops=live_ops)
    # a*b + c as one FMA when the product has no other use (depthwise convolutions).
    for op in live_ops:
        if op.name != "arith.addf":
            continue
        for operand in op.operands:
            producer = defining_op(operand)
            if (
                producer is not None
                and producer.name == "arith.mulf"
                and producer in live_ops
                and len(list(operand.uses)) == 1
                and producer not in plan.fused_into_fma
            ):
                plan.fused_into_fma.add(producer)
                break
    yielded = set(live_yields)
    for op in live_ops:
        if op.name in ("arith.constant", *PASS_THROUGH) or op in plan.fused_into_fma:
            continue
        # One for the result unless it goes straight to an output, one in case a scalar
        # operand has to be materialised into a tile.
        plan.temporaries += (op.result not in yielded) + 1
    return plan


SUPPORTED_OPS = {
    *BINARY,
    *UNARY,
    *PASS_THROUGH,
    "arith.constant",
    "arith.cmpf",
    "arith.select",
    "math.fma",
}


@dataclass
class BodyEmitter:
    """Emits the vector instructions of one tile."""

    tile: tuple[int, ...]
    allocate: Callable[[], ir.Value]  # a temporary of the full tile
    temp_strides: tuple[int, ...]

    def emit(
        self,
        plan: BodyPlan,
        values: dict[ir.Value, TileView],
        yields: dict[ir.Value, list[TileView]],
    ) -> None:
        """`values`: block arguments' views; `yields`: value -> the output tiles it goes to."""
        computed: set[ir.Value] = set()
        for op in plan.ops:
            if op in plan.fused_into_fma:
                continue
            if op.name == "arith.constant":
                values[op.result] = TileView(None, scalar=_constant(op))
                continue
            if op.name in PASS_THROUGH:
                values[op.result] = values[op.operands[0]]
                continue
            kind, sources = self._kind_and_sources(op, values, plan)
            if all(s.is_scalar for s in sources):
                values[op.result] = TileView(None, scalar=_fold(kind, [s.scalar for s in sources]))
                continue
            kind, sources = self._scalar_last(kind, sources)
            targets = yields.get(op.result, [])
            dst = targets[0] if targets else self._temporary()
            emit_vector(kind, dst, sources, self.tile)
            values[op.result] = dst
            computed.add(op.result)
            for extra in targets[1:]:
                emit_vector("copy", extra, [dst], self.tile)
        # Outputs that yield a block argument or a scalar directly.
        for value, targets in yields.items():
            if value in computed:
                continue
            for target in targets:
                emit_vector("copy", target, [values[value]], self.tile)

    def _temporary(self) -> TileView:
        return TileView(self.allocate(), self.temp_strides)

    def _kind_and_sources(
        self, op: ir.Operation, values: dict[ir.Value, TileView], plan: BodyPlan
    ) -> tuple[str, list[TileView]]:
        if op.name == "arith.addf":
            for index, operand in enumerate(op.operands):
                producer = defining_op(operand)
                if producer is not None and producer in plan.fused_into_fma:
                    a, b = (values[v] for v in producer.operands)
                    other = values[op.operands[1 - index]]
                    if a.is_scalar or b.is_scalar:
                        # Not an FMA after all: compute the product first.
                        product = self._temporary()
                        kind, sources = self._scalar_last("mul", [a, b])
                        emit_vector(kind, product, sources, self.tile)
                        return "add", [product, other]
                    return "fma", [a, b, other]
        sources = [values[operand] for operand in op.operands]
        if op.name in BINARY:
            return BINARY[op.name], sources
        if op.name in UNARY:
            return UNARY[op.name], sources
        if op.name == "arith.select":
            return "select", sources
        if op.name == "math.fma":
            return "fma", sources
        predicate = ir.IntegerAttr(op.attributes["predicate"]).value
        if predicate not in CMP_PREDICATES:
            raise UnsupportedError(
                f"{_location(op)}: arith.cmpf predicate {predicate} is not supported"
            )
        return CMP_PREDICATES[predicate], sources

    def _scalar_last(self, kind: str, sources: list[TileView]) -> tuple[str, list[TileView]]:
        """Reorder so that at most one scalar comes last; materialise the others."""
        scalar_positions = [i for i, s in enumerate(sources) if s.is_scalar]
        if not scalar_positions or scalar_positions == [len(sources) - 1]:
            return kind, list(sources)
        if len(sources) == 2 and scalar_positions == [0]:
            if kind in COMMUTATIVE:
                return kind, [sources[1], sources[0]]
            if kind in SWAPPED_CMP:
                return SWAPPED_CMP[kind], [sources[1], sources[0]]
        fixed: list[TileView] = []
        for index, source in enumerate(sources):
            if source.is_scalar and index != len(sources) - 1:
                temp = self._temporary()
                emit_vector("copy", temp, [source], self.tile)
                fixed.append(temp)
            else:
                fixed.append(source)
        return kind, fixed


def _constant(op: ir.Operation) -> float:
    attr = op.attributes["value"]
    if isinstance(attr, ir.FloatAttr):
        return float(ir.FloatAttr(attr).value)
    if isinstance(attr, ir.IntegerAttr):
        return float(ir.IntegerAttr(attr).value)
    raise UnsupportedError(f"{_location(op)}: constant {attr} is not a scalar number")


def _fold(kind: str, operands: list[float]) -> float:
    if kind == "select":
        return operands[1] if operands[0] != 0 else operands[2]
    if kind == "fma":
        return operands[0] * operands[1] + operands[2]
    if kind.startswith("cmp_"):
        a, b = operands
        unordered = math.isnan(a) or math.isnan(b)
        relation = {
            "eq": a == b,
            "gt": a > b,
            "ge": a >= b,
            "lt": a < b,
            "le": a <= b,
            "ne": a != b,
        }[kind[-2:]]
        if kind[4] == "u":
            return float(unordered or relation)
        return float(not unordered and relation)
    return float(np.float32(_NUMPY[kind](*operands)))
