"""polyfuse-dump-poly: print the whole-function polyhedral model (isl sets and maps)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import ClassVar

from torch_mlir import ir

from polyfuse.analysis.poly import build_model
from polyfuse.errors import PolyfuseError
from polyfuse.pass_base import ModulePass, PassFailure


@dataclass(frozen=True)
class DumpPoly(ModulePass):
    """Print every tensor function's polyhedral model: domains, accesses, dataflow.

    An analysis pass: the IR is unchanged. Runs on linalg on tensors after
    `linalg-generalize-named-ops`; for each function it prints (to stdout, before the IR)

        // polyfuse polyhedral model of @forward
        tensor V1 = view of arg0: { V1[v0, v1] -> arg0[v0 - 1, v1 - 1] : ... }
        statement S0 (loc)
          domain { S0[d0, d1, d2, d3] : 0 <= d0 <= 7 and ... }
          read V1 { S0[d0, d1, d2, d3] -> V1[d0 + d2, d1 + d3] : ... }
          write T0 { S0[...] -> T0[d0, d1] : ... }
        flow S0 -> S1 through T0: { S1[...] -> S0[...] : ... }
    """

    name: ClassVar[str] = "polyfuse-dump-poly"

    def run(self, module: ir.Operation) -> None:
        for view in module.regions[0].blocks[0].operations:
            op = view.operation
            if op.name != "func.func" or len(op.regions[0].blocks) == 0:
                continue
            function_type = ir.FunctionType(ir.TypeAttr(op.attributes["function_type"]).value)
            if not any(isinstance(t, ir.RankedTensorType) for t in function_type.inputs):
                continue
            try:
                model = build_model(op)
            except PolyfuseError as error:
                raise PassFailure(str(error), op.location) from None
            name = ir.StringAttr(op.attributes["sym_name"]).value
            text = model.format().replace("model", f"model of @{name}", 1)
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
