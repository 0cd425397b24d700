"""Where a fusion plan's DRAM bytes go, group by group.

A group's *own* bytes are what it would move if every DRAM storage it touches moved
exactly once: each storage it reads from DRAM read whole once, each storage it leaves in
DRAM written once (a padded storage: its interior). A storage the group finds on chip or
leaves there (`carry.py`) is neither. Everything a group moves beyond its own bytes is a
*re-read within the group*: weights loaded again for every outer tile or band, the rows
that neighbouring bands share (the recompute variant), operands a tiling reloads, a
storage the group writes and reads back. The difference can be negative when a group
reads only part of a storage (a strided 1x1 convolution reads every other row).

Summed over a model, the groups' own bytes exceed the model's compulsory bytes (every
input and weight read once, every output written once) by the activations that cross
group boundaries: written by one group, read again by each later group that uses them.
So a fused program's bytes split into compulsory + between groups + within groups (+ the
data-movement copies, which are not operators of the plan; a copy's output read by a
group counts as crossing a boundary). `polyfuse run --schedule
fused --groups N` prints the split and the groups that move the most.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from polyfuse.fusion.graph import OperatorGraph, StorageKey
from polyfuse.lowering.layer_by_layer import operator_name

if TYPE_CHECKING:
    from polyfuse.fusion.planner import FusionPlan, GroupPlan


@dataclass(frozen=True)
class GroupTraffic:
    """One group of a fusion plan, as a report shows it."""

    operators: tuple[int, ...]  # indices into the operator graph, in program order
    description: str  # e.g. "conv x2, elementwise x5"
    schedule: str  # e.g. "28 bands (cache)", "4 outer tiles", "whole"
    bytes: int  # planned; equal to what the emulator counts
    own_bytes: int  # its DRAM inputs read once, its DRAM outputs written once

    @property
    def within_bytes(self) -> int:
        """Bytes moved beyond the group's own: re-reads inside the group."""
        return self.bytes - self.own_bytes


def _read_bytes(graph: OperatorGraph, key: StorageKey) -> int:
    return 4 * graph.storages[key].elements


def _written_bytes(graph: OperatorGraph, key: StorageKey) -> int:
    """A padded storage's producer writes its interior only."""
    storage = graph.storages[key]
    if not storage.low:
        return 4 * storage.elements
    return 4 * math.prod(
        extent - low - high
        for extent, low, high in zip(storage.shape, storage.low, storage.high, strict=True)
    )


def own_bytes(graph: OperatorGraph, group: GroupPlan) -> int:
    """The group's DRAM storages, each moved once (see the module docstring)."""
    members = set(group.operators)
    read: set[StorageKey] = set()
    written: set[StorageKey] = set()
    for index in group.operators:
        operator = graph.operators[index]
        keys = [use.storage for use in operator.inputs]
        keys += [use.init for use in operator.outputs if use.reads_init]
        for key in keys:
            if key is None or key in group.internal or key == group.carry_in:
                continue
            if graph.storages[key].producer in members:
                continue  # written by the group and read back: a re-read within it
            read.add(key)
        for use in operator.outputs:
            key = use.storage
            if key is not None and key not in group.internal and key != group.carry_out:
                written.add(key)
    return sum(_read_bytes(graph, key) for key in read) + sum(
        _written_bytes(graph, key) for key in written
    )


def _description(graph: OperatorGraph, group: GroupPlan) -> str:
    names: Counter[str] = Counter()
    for index in group.operators:
        operator = graph.operators[index]
        kind = "pe-array" if operator.contraction else "vector"
        names[operator_name(operator.generic, kind)] += 1
    return ", ".join(name if n == 1 else f"{name} x{n}" for name, n in names.items())


def _schedule(group: GroupPlan) -> str:
    # halo.py builds on planner.py, which imports this module: import when called
    from polyfuse.fusion.halo import HaloGroupPlan

    if isinstance(group, HaloGroupPlan):
        tiles = len({band.batch for band in group.bands})  # along a shared dimension
        bands = len(group.bands) // tiles
        text = (
            f"{bands} band{'s' if bands > 1 else ''} ({'cache' if group.cached else 'recompute'})"
        )
        if tiles > 1:
            text = f"{tiles} outer tiles x {text}"
    elif group.outer:  # two outer loops
        text = " x ".join(str(trips) for _, trips in group.outer) + " outer tiles"
    elif group.trips > 1:
        text = f"{group.trips} outer tiles"
    else:
        text = "whole"
    carried = [
        word
        for word, key in (("finds one on chip", group.carry_in), ("leaves one", group.carry_out))
        if key is not None
    ]
    return text + (f"; {', '.join(carried)}" if carried else "")


def group_traffic(graph: OperatorGraph, plan: FusionPlan) -> list[GroupTraffic]:
    """Every group of `plan`, in program order, with its own bytes."""
    return [
        GroupTraffic(
            operators=tuple(group.operators),
            description=_description(graph, group),
            schedule=_schedule(group),
            bytes=group.bytes,
            own_bytes=own_bytes(graph, group),
        )
        for group in plan.groups
    ]


@dataclass(frozen=True)
class TrafficSplit:
    """A fused program's DRAM bytes by cause; the four add up to what it moves."""

    compulsory: int  # model inputs and weights read once, outputs written once
    between_groups: int  # activations crossing group boundaries (own bytes - compulsory)
    within_groups: int  # re-reads inside groups
    copies: int  # data-movement ops outside the plan (copies into padded buffers, concat)

    @property
    def total(self) -> int:
        return self.compulsory + self.between_groups + self.within_groups + self.copies


def traffic_split(
    traffic: list[GroupTraffic], compulsory_bytes: int, copy_bytes: int
) -> TrafficSplit:
    """Split the bytes of a fused program whose groups are `traffic`."""
    own = sum(group.own_bytes for group in traffic)
    return TrafficSplit(
        compulsory=compulsory_bytes,
        between_groups=own - compulsory_bytes,
        within_groups=sum(group.within_bytes for group in traffic),
        copies=copy_bytes,
    )
