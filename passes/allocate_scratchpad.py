"""polyfuse-allocate-scratchpad: place every scratchpad buffer over the whole program."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from torch_mlir import ir

from polyfuse.lowering.allocator import allocate_module
from polyfuse.pass_base import ModulePass
from polyfuse.targets import load_target


@dataclasses.dataclass(frozen=True)
class AllocateScratchpad(ModulePass):
    """Place every accel.alloc of every accel function in the target's scratchpad.

    Buffers are placed by lifetime (from the alloc to its dealloc) with reuse and the
    target's partitions (`lowering/allocator.py`); each alloc's `offset` is rewritten.
    Functions marked `accel.placed` (the fused lowering places its groups' buffers
    itself) are left alone, and every function placed here is marked.

        %t = "accel.alloc"() {offset = 0 : i64} : () -> memref<4096xf32, 1>      // before
        %t = "accel.alloc"() {offset = 16384 : i64} : () -> memref<4096xf32, 1>  // after
    """

    name: ClassVar[str] = "polyfuse-allocate-scratchpad"
    target: str = "edge"

    def run(self, module: ir.Operation) -> None:
        allocate_module(module, load_target(self.target))
