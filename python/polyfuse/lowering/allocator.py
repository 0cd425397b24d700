"""Whole-program scratchpad allocation: liveness intervals, offsets, reuse of freed space.

Every `accel.alloc` of an accel function is live from its position in program order to
its `accel.dealloc` (to the end of the function if it has none; an alloc inside a loop
body is live for that body). `allocate_function` places all of them at once: buffers
whose intervals overlap get disjoint ranges, a buffer whose interval does not overlap
any placed buffer reuses its space. Placement is first-fit in program order: each buffer
at the lowest aligned offset that clears every overlapping live buffer, and first of all
clear of the buffers of the operators just after it when there is room (so the decoupled
engines can load the next operator's tiles while this one still computes), inside its
partition when it names one (`accel.holds` = inputs / weights / outputs on a partitioned
target) or else anywhere
in the scratchpad. The emulator re-checks the result: ALLOC of a range that overlaps a
live buffer, or that overflows the scratchpad, traps.

    before: %a = accel.alloc {offset = 0}  ... dealloc %a
            %b = accel.alloc {offset = 0}  ...            (bump allocation per operator)
    after:  the same ops, offsets chosen over the whole function
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch_mlir import ir

from polyfuse.errors import ScratchpadCapacityError
from polyfuse.lowering.tile_nest import ALIGN_ELEMENTS
from polyfuse.targets import Target

HOLDS_ATTRIBUTE = "accel.holds"


@dataclass(frozen=True)
class BufferRequest:
    """A scratchpad buffer: `elements` live over program positions [start, end)."""

    name: str
    elements: int
    start: int
    end: int
    partition: str | None = None  # a PARTITION_ROLES name, or None for anywhere

    def overlaps(self, other: BufferRequest) -> bool:
        return self.start < other.end and other.start < self.end


@dataclass(frozen=True)
class Allocation:
    """The offsets (elements) of every request, in request order, and what they occupy."""

    offsets: tuple[int, ...]
    peak_elements: int  # highest element in use at once + 1
    average_elements: float  # elements live, averaged over program positions


def _align(elements: int) -> int:
    return -(-elements // ALIGN_ELEMENTS) * ALIGN_ELEMENTS


def _stretched(request: BufferRequest, factor: float) -> BufferRequest:
    if factor == 1:
        return request
    end = request.start + int((request.end - request.start) * factor)
    return BufferRequest(request.name, request.elements, request.start, end, request.partition)


def _lowest_fit(elements: int, base: int, busy: list[tuple[int, int]]) -> int:
    """The lowest aligned offset >= base where `elements` clear every busy range."""
    offset = base
    for lo, hi in sorted(busy):
        if offset + elements <= lo:
            break
        offset = max(offset, _align(hi))
    return offset


def allocate(
    requests: Sequence[BufferRequest],
    capacity_elements: int,
    partitions: dict[str, tuple[int, int]] | None = None,
    lookahead: float = 1.0,
) -> Allocation:
    """Places `requests`; `partitions` maps a partition name to its (base, size) in elements.

    Requests with the same start and partition (one operator's tiles, allocated together)
    are placed as one contiguous unit, in program order. With `lookahead` > 0 a unit is
    first placed clear of every unit live within `lookahead` times its own lifetime after
    it (space permitting), which lets the decoupled engines start the next operator's
    loads early; otherwise at the lowest offset clear of the units live with it.

    Raises ScratchpadCapacityError naming the first buffer that does not fit.
    """
    partitions = partitions or {}
    groups: dict[tuple[int, str | None], list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault((request.start, request.partition), []).append(index)
    units = []
    for (start, partition), members in sorted(groups.items(), key=lambda item: item[0][0]):
        size = sum(_align(requests[i].elements) for i in members)
        end = max(requests[i].end for i in members)
        units.append(
            (BufferRequest(requests[members[0]].name, size, start, end, partition), members)
        )
    offsets = [0] * len(requests)
    placed: list[tuple[BufferRequest, int]] = []
    for unit, members in units:
        base, size = partitions.get(unit.partition or "", (0, capacity_elements))
        offset = base + size
        for stretch in (1 + lookahead, 1) if lookahead else (1,):
            wide = _stretched(unit, stretch)
            busy = [
                (at, at + other.elements)
                for other, at in placed
                if _stretched(other, stretch).overlaps(wide)
            ]
            offset = _lowest_fit(unit.elements, base, busy)
            if offset + unit.elements <= base + size:
                break
        if offset + unit.elements > base + size:
            live = sum(
                other.elements
                for other, _ in placed
                if other.overlaps(unit) and other.partition == unit.partition
            )
            where = f"partition '{unit.partition}'" if unit.partition else "the scratchpad"
            raise ScratchpadCapacityError(
                f"{unit.name}: buffers of {unit.elements * 4} bytes do not fit {where} "
                f"({size * 4} bytes) next to the {live * 4} bytes live at the same time"
            )
        placed.append((unit, offset))
        for index in members:
            offsets[index] = offset
            offset += _align(requests[index].elements)
    return Allocation(tuple(offsets), *_occupancy(requests, offsets))


def _occupancy(requests: Sequence[BufferRequest], offsets: Sequence[int]) -> tuple[int, float]:
    if not requests:
        return 0, 0.0
    peak = max(o + r.elements for r, o in zip(requests, offsets, strict=True))
    span = max(r.end for r in requests) - min(r.start for r in requests)
    area = sum(r.elements * (r.end - r.start) for r in requests)
    return peak, area / span if span else 0.0


def _walk(
    block: ir.Block,
    position: list[int],
    found: list[tuple[ir.Operation, int]],
    frees: dict[ir.Value, int],
) -> None:
    run_start = -1  # a run of consecutive allocs (one operator's tiles) starts together
    for op_view in block.operations:
        op = op_view.operation
        position[0] += 1
        if op.name == "accel.alloc":
            if run_start < 0:
                run_start = position[0]
            found.append((op, run_start))
            continue
        run_start = -1
        if op.name == "accel.dealloc":
            frees[op.operands[0]] = position[0]
        for region in op.regions:
            for inner in region.blocks:
                _walk(inner, position, found, frees)


def allocate_function(func_op: ir.Operation, target: Target) -> Allocation:
    """Re-places every accel.alloc of `func_op` over the whole function (in place)."""
    found: list[tuple[ir.Operation, int]] = []
    frees: dict[ir.Value, int] = {}
    position = [0]
    for block in func_op.regions[0].blocks:
        _walk(block, position, found, frees)
    end = position[0] + 1
    requests = []
    for op, start in found:
        holds = op.attributes.get(HOLDS_ATTRIBUTE)
        elements = 1
        for size in ir.MemRefType(op.result.type).shape:
            elements *= size
        requests.append(
            BufferRequest(
                name=str(op.location),
                elements=elements,
                start=start,
                end=frees.get(op.result, end),
                partition=ir.StringAttr(holds).value if holds is not None else None,
            )
        )
    partitions: dict[str, tuple[int, int]] = {}
    base = 0
    for partition in target.partitions:
        partitions[partition.holds] = (base // 4, partition.bytes // 4)
        base += partition.bytes
    allocation = allocate(requests, target.scratchpad_bytes // 4, partitions)
    i64 = ir.IntegerType.get_signless(64, func_op.context)
    for (op, _), offset in zip(found, allocation.offsets, strict=True):
        op.attributes["offset"] = ir.IntegerAttr.get(i64, offset * 4)
    return allocation


# On an accel function whose scratchpad buffers are placed already (by the fused
# lowering, which places every group's buffers itself, or by an earlier allocation).
PLACED_ATTRIBUTE = "accel.placed"


def allocate_module(module_op: ir.Operation, target: Target) -> list[Allocation]:
    """`allocate_function` on every accel function of the module not placed yet (see
    `PLACED_ATTRIBUTE`), which it then marks placed."""
    allocations = []
    for op_view in module_op.regions[0].blocks[0].operations:
        op = op_view.operation
        if op.name != "func.func" or "accel.num_inputs" not in op.attributes:
            continue
        if PLACED_ATTRIBUTE in op.attributes:
            continue
        allocations.append(allocate_function(op, target))
        op.attributes[PLACED_ATTRIBUTE] = ir.UnitAttr.get(op.context)
    return allocations
