"""Translate an accel function into the emulator's instruction table.

This is polyfuse's `mlir-translate`: `affine.for` loops become LOOP/ENDLOOP records,
`accel.*` ops become DMA/WAIT/MATMUL/VECTOR records whose views carry the element
offsets (scratchpad buffers are placed at their `accel.alloc` offsets; DRAM views name
a buffer of the buffer table). `accel.alloc`/`accel.dealloc` become ALLOC/FREE records,
so the emulator checks the allocation (overflow, overlapping live buffers) and measures
scratchpad occupancy over time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from torch_mlir import ir

from polyfuse.analysis.operators import location_text
from polyfuse.dialects import accel
from polyfuse.errors import UnsupportedError
from polyfuse.runtime.isa import MAX_LOOP_DEPTH, VectorKind
from polyfuse.runtime.program import Program, ProgramBuilder, View

INIT_ATTRIBUTE = "accel.init"


@dataclass
class DramBuffer:
    """One DRAM buffer of the program: where its contents come from."""

    role: str  # "input", "output", "weight", "intermediate"
    shape: tuple[int, ...]
    index: int = 0  # input/output position
    weight: str = ""  # weight-map key (resource name) or global symbol
    constant: np.ndarray | None = None  # a literal constant's value
    init: float | None = None  # intermediates: filled once when the program is loaded

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass
class SerializedProgram:
    """The instruction table and its DRAM buffers. Operator groups (isa word 12) are
    numbered 1, 2, ... in program order, one per top-level run of accel.alloc; group 0
    holds whatever comes before the first."""

    program: Program
    buffers: list[DramBuffer] = field(default_factory=list)


class _Serializer:
    def __init__(self, module_op: ir.Operation) -> None:
        self.builder = ProgramBuilder()
        self.buffers: list[DramBuffer] = []
        self.dram: dict[ir.Value, int] = {}
        self.spm_base: dict[ir.Value, int] = {}
        self.alloc_pc: dict[ir.Value, int] = {}
        self.iv_depth: dict[ir.Value, int] = {}
        self.tokens: dict[ir.Value, int] = {}
        self.globals: dict[str, ir.Operation] = {}
        for view in module_op.regions[0].blocks[0].operations:
            op = view.operation
            if op.name == "memref.global":
                self.globals[ir.StringAttr(op.attributes["sym_name"]).value] = op

    def function(self, func_op: ir.Operation, num_inputs: int) -> None:
        block = func_op.regions[0].blocks[0]
        for position, arg in enumerate(block.arguments):
            shape = tuple(ir.MemRefType(arg.type).shape)
            role, index = (
                ("input", position) if position < num_inputs else ("output", position - num_inputs)
            )
            self.dram[arg] = len(self.buffers)
            self.buffers.append(DramBuffer(role, shape, index=index))
        self.block(block, depth=0)

    def block(self, block: ir.Block, depth: int) -> None:
        previous = ""
        for op in block.operations:
            name = op.operation.name
            # Each operator is emitted as allocs, its tile loops, deallocs: a top-level
            # accel.alloc after anything but another alloc starts the next operator group.
            if depth == 0 and name == "accel.alloc" and previous != "accel.alloc":
                self.builder.group += 1
            previous = name
            self.op(op.operation, depth)

    def op(self, op: ir.Operation, depth: int) -> None:
        name = op.name
        if name == "memref.get_global":
            symbol = ir.FlatSymbolRefAttr(op.attributes["name"]).value
            self.dram[op.result] = len(self.buffers)
            self.buffers.append(
                self._global_buffer(symbol, tuple(ir.MemRefType(op.result.type).shape))
            )
        elif name == "memref.alloc":
            init = op.attributes.get(INIT_ATTRIBUTE)
            self.dram[op.result] = len(self.buffers)
            self.buffers.append(
                DramBuffer(
                    "intermediate",
                    tuple(ir.MemRefType(op.result.type).shape),
                    init=ir.FloatAttr(init).value if init is not None else None,
                )
            )
        elif name == "accel.alloc":
            base = ir.IntegerAttr(op.attributes["offset"]).value // 4
            self.spm_base[op.result] = base
            elements = int(np.prod(ir.MemRefType(op.result.type).shape))
            self.alloc_pc[op.result] = self.builder.alloc(base, elements, location_text(op))
        elif name == "accel.dealloc":
            buffer = op.operands[0]
            if buffer in self.alloc_pc:
                self.builder.free(self.alloc_pc[buffer], location_text(op))
        elif name == "affine.for":
            self._loop(op, depth)
        elif name == "accel.dma_start":
            views = self._views(op)
            token = self.tokens.setdefault(op.result, len(self.tokens) % 1024)
            self.builder.dma(views[0], views[1], accel.read_shape(op), token, location_text(op))
        elif name == "accel.dma_wait":
            self.builder.wait(self.tokens[op.operands[0]], location_text(op))
        elif name == "accel.matmul":
            c, a, b = self._views(op)
            accumulate = ir.BoolAttr(op.attributes["accumulate"]).value
            self.builder.matmul(c, a, b, accel.read_shape(op), accumulate, location_text(op))
        elif name == "accel.vector":
            views = self._views(op)
            scalar = accel.read_scalar(op)
            sources = views[1:] + ([View.imm()] if scalar is not None else [])
            kind = VectorKind[accel.read_kind(op).upper()]
            self.builder.vector(
                kind,
                views[0],
                sources,
                accel.read_shape(op),
                immediate=scalar or 0.0,
                location=location_text(op),
            )
        elif name in ("affine.yield", "func.return", "memref.dealloc"):
            return
        else:
            raise UnsupportedError(
                f"{location_text(op)}: '{name}' cannot run on the emulator (lower the "
                "function to the accel dialect first: polyfuse-lower-to-accel)"
            )

    def _global_buffer(self, symbol: str, shape: tuple[int, ...]) -> DramBuffer:
        global_op = self.globals[symbol]
        if "accel.weight" in global_op.attributes:
            key = ir.StringAttr(global_op.attributes["accel.weight"]).value
            return DramBuffer("weight", shape, weight=key)
        value = global_op.attributes["initial_value"]
        text = str(value)
        match = re.match(r"dense_resource<([^>]+)>", text)
        if match:
            return DramBuffer("weight", shape, weight=match.group(1))
        array = np.array(ir.DenseFPElementsAttr(value), dtype=np.float32).reshape(-1)
        return DramBuffer("weight", shape, weight=symbol, constant=array)

    def _loop(self, op: ir.Operation, depth: int) -> None:
        lower = ir.AffineMapAttr(op.attributes["lowerBoundMap"]).value
        upper = ir.AffineMapAttr(op.attributes["upperBoundMap"]).value
        step = ir.IntegerAttr(op.attributes["step"]).value
        if lower.n_inputs or upper.n_inputs or len(op.operands):
            raise UnsupportedError(f"{location_text(op)}: affine.for with non-constant bounds")
        low = accel.linear_access(lower)[0]
        high = accel.linear_access(upper)[0]
        if step != 1 or low != 0:
            raise UnsupportedError(f"{location_text(op)}: affine.for must run from 0 with step 1")
        if depth >= MAX_LOOP_DEPTH:
            raise UnsupportedError(f"{location_text(op)}: loops nest deeper than {MAX_LOOP_DEPTH}")
        body = op.regions[0].blocks[0]
        self.iv_depth[body.arguments[0]] = depth
        self.builder.loop(high, location_text(op))
        self.block(body, depth + 1)
        self.builder.end_loop(location_text(op))

    def _views(self, op: ir.Operation) -> list[View]:
        operands = accel.view_operands(op)
        accesses = accel.read_accesses(op)
        strides = accel.read_strides(op)
        views = []
        for buffer, (c0, coeffs), view_strides in zip(
            operands.buffers, accesses, strides, strict=True
        ):
            loop_coeffs = [0] * MAX_LOOP_DEPTH
            for iv, coeff in zip(operands.ivs, coeffs, strict=True):
                loop_coeffs[self.iv_depth[iv]] += coeff
            if buffer in self.spm_base:
                views.append(View.spm(self.spm_base[buffer] + c0, loop_coeffs, view_strides))
            elif buffer in self.dram:
                views.append(View.dram(self.dram[buffer], c0, loop_coeffs, view_strides))
            else:
                raise UnsupportedError(
                    f"{location_text(op)}: operand {buffer} is not a known buffer"
                )
        return views


def serialize(
    module_op: ir.Operation, function: str = "forward", num_inputs: int | None = None
) -> SerializedProgram:
    """The instruction table of accel function `function` in `module_op`."""
    for view in module_op.regions[0].blocks[0].operations:
        op = view.operation
        if op.name == "func.func" and ir.StringAttr(op.attributes["sym_name"]).value == function:
            if num_inputs is None:
                if "accel.num_inputs" not in op.attributes:
                    raise UnsupportedError(
                        f"@{function} has no accel.num_inputs attribute (is it an accel function "
                        "made by polyfuse-lower-to-accel?)"
                    )
                num_inputs = ir.IntegerAttr(op.attributes["accel.num_inputs"]).value
            serializer = _Serializer(module_op)
            serializer.function(op, num_inputs)
            return SerializedProgram(serializer.builder.build(), serializer.buffers)
    raise UnsupportedError(f"no function @{function} in the module")
