"""Where tensors live in DRAM: a buffer, an element offset and strides.

Reshapes, slices and a pad's interior are views of another tensor's buffer, so they
cost no traffic; only operators move bytes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch_mlir import ir

from polyfuse.analysis.operators import location_text
from polyfuse.errors import UnsupportedError


def row_major_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides = []
    running = 1
    for size in reversed(shape):
        strides.append(running)
        running *= size
    return tuple(reversed(strides))


@dataclass(frozen=True)
class DramTensor:
    """A tensor stored in DRAM buffer `buffer` (a memref value of the accel function)."""

    buffer: ir.Value
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int = 0

    @staticmethod
    def whole(buffer: ir.Value, shape: Sequence[int]) -> DramTensor:
        return DramTensor(buffer, tuple(shape), row_major_strides(shape))

    def slice(
        self, offsets: Sequence[int], sizes: Sequence[int], steps: Sequence[int]
    ) -> DramTensor:
        offset = self.offset + sum(o * s for o, s in zip(offsets, self.strides, strict=True))
        strides = tuple(s * k for s, k in zip(self.strides, steps, strict=True))
        return DramTensor(self.buffer, tuple(sizes), strides, offset)

    def collapse(self, groups: Sequence[Sequence[int]]) -> DramTensor | None:
        """The collapsed view, or None when a group is not contiguous in memory."""
        shape, strides = [], []
        for group in groups:
            non_unit = [d for d in group if self.shape[d] != 1]
            for outer, inner in itertools.pairwise(non_unit):
                if self.strides[outer] != self.strides[inner] * self.shape[inner]:
                    return None
            size = 1
            for dim in group:
                size *= self.shape[dim]
            shape.append(size)
            strides.append(self.strides[non_unit[-1]] if non_unit else 1)
        return DramTensor(self.buffer, tuple(shape), tuple(strides), self.offset)

    def expand(self, groups: Sequence[Sequence[int]], new_shape: Sequence[int]) -> DramTensor:
        """The expanded view. When this tensor is a slice of the tensor the reshape was
        written for (a fusion group's tile of a shared dim), a group may only add unit
        dims; its one wider dim takes the slice's size."""
        new_shape = list(new_shape)
        for source_dim, group in enumerate(groups):
            if math.prod(new_shape[d] for d in group) == self.shape[source_dim]:
                continue
            wide = [d for d in group if new_shape[d] != 1]
            if len(wide) != 1:
                raise ValueError(f"cannot expand dim {source_dim} of a slice {self.shape}")
            new_shape[wide[0]] = self.shape[source_dim]
        strides: list[int] = [0] * len(new_shape)
        for source_dim, group in enumerate(groups):
            running = self.strides[source_dim]
            for dim in reversed(group):
                strides[dim] = running
                running *= new_shape[dim]
        return DramTensor(self.buffer, tuple(new_shape), tuple(strides), self.offset)


# The largest tensor polyfuse places in DRAM: 2**40 float32 elements (4 TiB), far beyond
# any accelerator's DRAM, and small enough that element offsets, tile counts and traffic
# totals stay exact in 64-bit integers.
MAX_TENSOR_ELEMENTS = 2**40


def check_tensor_sizes(function: ir.Operation) -> None:
    """Refuse a tensor of a function with no elements or more than MAX_TENSOR_ELEMENTS,
    naming the op that makes it (or the argument) before anything tiles it."""
    name = ir.StringAttr(function.attributes["sym_name"]).value
    block = function.regions[0].blocks[0]
    values = [
        (f"argument {a.arg_number} of @{name}", _location_text(a.location, name), a)
        for a in block.arguments
    ]
    for op in block.operations:
        where = location_text(op.operation)
        values += [(f"{op.operation.name} result", where, r) for r in op.results]
    for what, where, value in values:
        if not isinstance(value.type, ir.RankedTensorType):
            continue
        shaped = ir.RankedTensorType(value.type)
        if not shaped.has_static_shape:
            continue
        elements = math.prod(shaped.shape)
        if elements == 0:
            raise UnsupportedError(
                f"{where}: {what} {value.type} has no elements; polyfuse "
                "compiles tensors with at least one element (remove the empty tensor)"
            )
        if elements > MAX_TENSOR_ELEMENTS:
            raise UnsupportedError(
                f"{where}: {what} {value.type} has {elements} elements, more "
                f"than the {MAX_TENSOR_ELEMENTS} (2**40) a tensor in polyfuse's DRAM may hold; "
                "use smaller shapes"
            )


def _location_text(location: ir.Location, fallback: str) -> str:
    """`file:line:col` of a location, else `fallback`."""
    text = str(location).removeprefix("loc(").removesuffix(")").replace('"', "")
    return text if text and text != "unknown" else fallback
