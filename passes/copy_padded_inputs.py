"""polyfuse-copy-padded-inputs: padded function inputs as operators fusion can fuse."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from torch_mlir import ir

from polyfuse.fusion.input_pads import copy_padded_inputs
from polyfuse.pass_base import ModulePass


@dataclasses.dataclass(frozen=True)
class CopyPaddedInputs(ModulePass):
    """Give every tensor.pad of a function argument an identity linalg.generic copy as
    its source, so the padded buffer is a storage an operator produces and a fusion group
    builds it on chip (`fusion/input_pads.py`; the fused schedule only: layer by layer
    keeps the DMA copy).

        %p = tensor.pad %arg0 low[0, 0, 3, 3] high[0, 0, 3, 3]            // before
        %c = linalg.generic {identity maps} ins(%arg0) outs(%e) {yield}  // after
        %p = tensor.pad %c low[0, 0, 3, 3] high[0, 0, 3, 3]
    """

    name: ClassVar[str] = "polyfuse-copy-padded-inputs"

    def run(self, module: ir.Operation) -> None:
        for op in module.regions[0].blocks[0].operations:
            function = op.operation
            if function.name == "func.func" and len(function.regions[0].blocks) > 0:
                copy_padded_inputs(function)
