"""Fold layout changes of weights into the weights themselves, at compile time.

torch-mlir lowers `nn.Linear` to a transpose of its weight followed by a matmul:

    %wt = linalg.generic {maps = [(d0, d1) -> (d1, d0), identity]}
              ins(%w = arith.constant dense_resource<fc_weight>) { linalg.yield %in }
    %y  = linalg.generic (matmul) ins(%x, %wt)

Left in the program, that transpose is an operator like any other: at run time it reads
the whole weight from DRAM and writes its transpose back (ResNet-50's classifier: 15.6 MiB
of traffic; every projection of a BERT layer). The weight is a constant, so its transpose
is one too: this step computes it with numpy once, registers it as a new weight, and
replaces the generic by a constant. A compiler for a real accelerator does the same when
it pre-packs weights into the layout its kernels read.

Folded: a `linalg.generic` with one input that is a weight constant, all loops parallel,
an identity output map, an input map that is a permutation of the loops, and a body that
yields the input unchanged (a transpose, or a plain copy).
"""

from __future__ import annotations

import re

import numpy as np
from torch_mlir import ir
from torch_mlir.dialects import arith

_RESOURCE = re.compile(r"dense_resource<([^>]+)>")


def fold_weight_layouts(module: ir.Module, weights: dict[str, np.ndarray]) -> int:
    """Replace every foldable weight transpose/copy (see the module docstring); returns
    how many were folded. New weights are added to `weights` (flattened, row-major)."""
    folds: list[tuple[ir.Operation, str, tuple[int, ...]]] = []

    def visit(op: ir.Operation) -> ir.WalkResult:
        if op.name == "linalg.generic":
            found = _foldable(op, weights)
            if found is not None:
                folds.append((op, *found))
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
    for op, name, axes in folds:
        _fold(op, name, axes, weights)
    return len(folds)


def _foldable(
    op: ir.Operation, weights: dict[str, np.ndarray]
) -> tuple[str, tuple[int, ...]] | None:
    """(weight name, numpy transpose axes) when `op` only permutes a weight constant."""
    if len(op.results) != 1 or len(op.operands) != 2:
        return None
    if any("parallel" not in str(it) for it in op.attributes["iterator_types"]):
        return None
    producer = _defining_op(op.operands[0])
    if producer is None or producer.name != "arith.constant":
        return None
    match = _RESOURCE.match(str(producer.attributes["value"]))
    if match is None or match.group(1) not in weights:
        return None
    body = list(op.regions[0].blocks[0].operations)
    block = op.regions[0].blocks[0]
    if len(body) != 1 or body[0].operation.name != "linalg.yield":
        return None
    if body[0].operation.operands[0] != block.arguments[0]:
        return None
    input_map, output_map = (ir.AffineMapAttr(a).value for a in op.attributes["indexing_maps"])
    loops = input_map.n_dims
    if output_map != ir.AffineMap.get_identity(loops) or not input_map.is_permutation:
        return None
    positions = [ir.AffineDimExpr(expr).position for expr in input_map.results]
    # output[d] = input[d_p(0), d_p(1), ...]: output axis k is the input axis j with p(j) = k.
    return match.group(1), tuple(int(j) for j in np.argsort(positions))


def _fold(
    op: ir.Operation, name: str, axes: tuple[int, ...], weights: dict[str, np.ndarray]
) -> None:
    constant = _defining_op(op.operands[0])
    assert constant is not None
    source_type = ir.RankedTensorType(constant.results[0].type)
    result_type = ir.RankedTensorType(op.results[0].type)
    array = weights[name].reshape(source_type.shape).transpose(axes)
    new_name = _unique(f"{name}_layout", weights)
    weights[new_name] = np.ascontiguousarray(array).reshape(-1)
    attr = ir.DenseResourceElementsAttr.get_from_buffer(weights[new_name], new_name, result_type)
    with ir.InsertionPoint(op), op.location:
        folded = arith.ConstantOp(result_type, attr)
    op.results[0].replace_all_uses_with(folded.result)
    init = _defining_op(op.operands[1])
    op.erase()
    for dead in (init, constant):
        if dead is not None and not list(dead.results[0].uses):
            dead.erase()


def _defining_op(value: ir.Value) -> ir.Operation | None:
    owner = value.owner
    if isinstance(owner, ir.OpView):
        return owner.operation
    return owner if isinstance(owner, ir.Operation) else None


def _unique(base: str, taken: dict[str, np.ndarray]) -> str:
    name, suffix = base, 0
    while name in taken:
        suffix += 1
        name = f"{base}_{suffix}"
    return name
