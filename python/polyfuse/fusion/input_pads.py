"""Padded function inputs as operators the fusion planner can fuse.

A convolution reading a function input with padding reads a `tensor.pad` of the
argument. Lowered as it is, the pad is a data-movement op: it copies the input into a
padded DRAM buffer (read the input, write the interior) before the first group, which
then reads the padded buffer (the input's bytes a third time), and the copy ends a
group. Here the pad's source becomes an identity `linalg.generic` copy of the argument:

    %p = tensor.pad %arg0 low[0, 0, 3, 3] high[0, 0, 3, 3]

becomes

    %c = linalg.generic {identity maps, all parallel} ins(%arg0) outs(tensor.empty) { yield %in }
    %p = tensor.pad %c low[0, 0, 3, 3] high[0, 0, 3, 3]

so the padded buffer is a storage an operator produces (`graph.pad_of_result`), like the
padded output of a ReLU feeding the next convolution. Fused with the convolution, its
rows are built on chip band by band or tile by tile (the input read once, the border
filled on chip); left in a group of its own, it moves what the copy moved. Only the
fused lowering does this (`lower_function_fused`); layer by layer keeps the DMA copy.
"""

from __future__ import annotations

from torch_mlir import ir
from torch_mlir.dialects import linalg, tensor

PARALLEL = "#linalg.iterator_type<parallel>"


def copy_padded_inputs(func_op: ir.Operation) -> int:
    """Give every `tensor.pad` of a function argument an operator copy as its source
    (see the module docstring); returns how many pads were rewritten."""
    block = func_op.regions[0].blocks[0]
    arguments = list(block.arguments)
    pads = [
        op.operation
        for op in block.operations
        if op.operation.name == "tensor.pad" and op.operation.operands[0] in arguments
    ]
    for pad in pads:
        source = pad.operands[0]
        tensor_type = ir.RankedTensorType(source.type)
        rank = len(tensor_type.shape)
        with ir.InsertionPoint(pad), pad.location:
            empty = tensor.EmptyOp(tensor_type.shape, tensor_type.element_type).result
            identity = ir.AffineMapAttr.get(ir.AffineMap.get_identity(rank))
            parallel = ir.Attribute.parse(PARALLEL)
            copy = linalg.GenericOp(
                [source.type],
                [source],
                [empty],
                ir.ArrayAttr.get([identity, identity]),
                ir.ArrayAttr.get([parallel] * rank),
            )
            element = tensor_type.element_type
            body = copy.regions[0].blocks.append(element, element)
            with ir.InsertionPoint(body):
                linalg.YieldOp([body.arguments[0]])
        pad.operands[0] = copy.result
    return len(pads)
