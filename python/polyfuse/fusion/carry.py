"""Storages kept in the scratchpad from one group to the next (residency across groups).

A group boundary normally costs its crossing tensor twice: the producing group writes
it to DRAM and the next group reads it back. When the tensor fits beside both groups'
own buffers, it can instead stay in the scratchpad: the producing group writes it in
place (a full-size on-chip storage, like an internal one that outlives the group) and
the next group reads it in place; neither moves it. The planner's dynamic programme
carries at most one such storage across each cut (`planner.plan_fusion`), and prices
both groups with it on chip, so the choice is made on exact bytes like every other. A
storage the next group does not finish reading stays on chip through it, to the group
of its last reader (a skip connection around a block split into groups); nothing else
is carried meanwhile.

A storage can be carried out of a group when

- the group produces it (an operator result, or the padded buffer it is written into),
- nothing but operators uses it (not a function result, not copied),
- some operator after the group reads it,
- no operator uses it as an output's initial value (an in-place initialisation of a
  tile from a carried storage is not lowered),
- no data-movement op sits at the cut (`graph.after_copy`: those use the scratchpad
  from byte 0),
- it takes at most `MAX_CARRY_FRACTION` of the scratchpad, and at least
  `MIN_CARRY_ELEMENTS` or 1/64 of the scratchpad, whichever is less (smaller ones
  are not tried: planning time).

The lowering places carried storages at the ends of the scratchpad, alternating (a
group's carried-out storage goes to the end its carried-in one does not use), so the
next group finds it where it was written (`lowering._FusedLowering`).
"""

from __future__ import annotations

from polyfuse.fusion.graph import OperatorGraph, StorageKey
from polyfuse.lowering.tile_nest import padded

Carried = tuple[StorageKey | None, StorageKey | None]  # (carried in, carried out)

MAX_CARRY_FRACTION = 0.8  # of the scratchpad a carried storage may take
# Smaller storages are not tried (planning time): carrying one saves at most twice its
# size, 16 KiB (a layer norm's per-row statistics are 128 elements).
MIN_CARRY_ELEMENTS = 2048


def carry_candidates(
    graph: OperatorGraph, members: list[int], spm_elements: int
) -> list[StorageKey]:
    """Storages the group of `members` (consecutive operators) may carry to the next."""
    end = members[-1] + 1
    if end >= len(graph.operators) or end in graph.after_copy:
        return []
    member_set = set(members)
    initial = {
        use.init for operator in graph.operators for use in operator.outputs if use.init is not None
    }
    found = []
    for index in members:
        for use in graph.operators[index].outputs:
            key = use.storage
            storage = graph.storages[key] if key is not None else None
            if (
                key is None
                or storage is None
                or key[0] not in ("gen", "pad")
                or storage.external
                or key in initial
                or storage.users <= member_set
                or storage.elements < min(MIN_CARRY_ELEMENTS, spm_elements // 64)
                or storage.elements > spm_elements * MAX_CARRY_FRACTION
            ):
                continue
            found.append(key)
    return found


def last_reader(graph: OperatorGraph, key: StorageKey) -> int:
    """The last operator reading storage `key` (the next group must reach it)."""
    return max(graph.storages[key].users)


def held_whole(
    graph: OperatorGraph, carried: Carried, internal: set[StorageKey]
) -> tuple[set[StorageKey], int] | None:
    """The storages a group with `internal` storages holds whole for `carried` and
    their aligned elements; None if it cannot write the one it carries out in place
    (that one reads an initial value from DRAM). A storage kept through the group (the
    same in and out) was written by an earlier group."""
    carry_in, carry_out = carried
    if carry_out is not None and carry_out != carry_in:
        producer = graph.storages[carry_out].producer
        assert producer is not None
        for output in graph.operators[producer].outputs:
            if output.storage == carry_out and output.init not in (None, *internal):
                return None
    keys = {key for key in carried if key is not None}
    return keys, sum(padded(graph.storages[key].elements) for key in keys)
