"""Inputs a group keeps resident in the scratchpad for its whole run.

A group that runs several times over the same data (a halo group's bands, a plain
group's outer tiles along a shared dimension) re-reads every DRAM input whose reads do
not depend on that loop: a matmul's activations when the outer loop runs over output
features, a convolution chain's weights in every band. Loading such an input once,
before the first band or tile, and reading it on chip costs its size once instead of
its tiling traffic times the trips, at the price of scratchpad the operators' tiles no
longer get. The planners try a few greedy choices (`resident_choices`) and keep the
cheapest exact cost.
"""

from __future__ import annotations

import math

from torch_mlir import ir

from polyfuse.analysis.operators import static_shape
from polyfuse.fusion.graph import OperatorGraph, StorageKey, operand_value, reads_from_outside
from polyfuse.lowering.tile_nest import padded

Resident = dict[ir.Value, tuple[StorageKey, int]]  # value -> (its storage, elements)
RESIDENT_FRACTIONS = (0.0, 0.75)  # of the scratchpad the group's own buffers leave


def resident_candidates(
    graph: OperatorGraph, members: list[int], loops: dict[int, int] | None
) -> Resident:
    """DRAM inputs the group's repeated loop does not change: not produced in the group,
    not an output's initial value, read independently of every reader's loop in `loops`
    (operator -> the loop the group repeats), every read through the same value;
    largest first. Without a repeated loop (`loops` None): the inputs more than one
    member reads (a layer norm's input, read by its statistics and its normalisation)."""
    values: Resident = {}
    by_storage: dict[StorageKey, set[ir.Value]] = {}
    readers: dict[StorageKey, set[int]] = {}
    reads, varying = reads_from_outside(graph, members)
    for operator, use in reads:
        key = use.storage
        assert key is not None
        readers.setdefault(key, set()).add(operator.index)
        if loops is not None and any(row[loops[operator.index]] for row in use.access.coeffs):
            varying.add(key)
            continue
        value = operand_value(operator, use, init=False)
        by_storage.setdefault(key, set()).add(value)
        values[value] = (key, math.prod(static_shape(value)))
    kept = {
        value: entry
        for value, entry in values.items()
        if entry[0] not in varying
        and len(by_storage[entry[0]]) == 1
        and (loops is not None or len(readers[entry[0]]) > 1)
    }
    return dict(sorted(kept.items(), key=lambda item: -item[1][1]))


def resident_choices(candidates: Resident, free: int) -> list[Resident]:
    """Greedy (largest first) sets of resident inputs filling a few fractions of `free`."""
    choices: list[Resident] = []
    for fraction in RESIDENT_FRACTIONS:
        budget = int(free * fraction)
        choice: Resident = {}
        for value, (key, elements) in candidates.items():
            if padded(elements) <= budget:
                choice[value] = (key, elements)
                budget -= padded(elements)
        if choice not in choices:
            choices.append(choice)
    return choices


def first_loads(graph: OperatorGraph, members: list[int], resident: Resident) -> dict[int, int]:
    """Operator -> elements of resident inputs charged to it: each input's one load goes
    to the first member reading it."""
    loads: dict[int, int] = {}
    charged: set[StorageKey] = set()
    kept = {key for key, _ in resident.values()}
    for index in members:
        for use in graph.operators[index].inputs:
            if use.storage in kept and use.storage not in charged:
                charged.add(use.storage)
                loads[index] = loads.get(index, 0) + sum(
                    e for k, e in resident.values() if k == use.storage
                )
    return loads
