"""polyfuse-verify-accel: check the accel dialect's rules (see docs/dialect.md)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from torch_mlir import ir

from polyfuse.dialects.verify import accel_problems
from polyfuse.pass_base import ModulePass, PassFailure


@dataclasses.dataclass(frozen=True)
class VerifyAccel(ModulePass):
    """Check every accel op against the rules IRDL cannot express.

    Memory spaces (DMA: one scratchpad side; matmul/vector: scratchpad only), one
    access map and stride list per buffer, map dims = number of ivs, rank <= 6, vector
    kinds and arity, the module's `accel.target` limits (PE array, scratchpad bytes),
    static bounds of every view under constant-bound loops, and that every DMA token is
    waited for. The IR is unchanged; the pass fails at the first broken rule's op after
    reporting every broken rule:

        "accel.matmul"(...) {shape = array<i64: 1, 1, 64, 128, 1, 1>, ...}
        error: 'accel.matmul' op reduces over K1*K2*K3 = 128 but target 'edge' has 32
               PE rows; split the reduction into tiles of at most 32 and accumulate
    """

    name: ClassVar[str] = "polyfuse-verify-accel"

    def run(self, module: ir.Operation) -> None:
        problems = accel_problems(module)
        if not problems:
            return
        # Every problem but the last becomes its own diagnostic; the last fails the pass.
        for problem in problems[:-1]:
            problem.location.emit_error(problem.detail)
        raise PassFailure(problems[-1].detail, problems[-1].location)
