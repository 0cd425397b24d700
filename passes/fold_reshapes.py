"""polyfuse-fold-reshapes: fold reshapes into the operators between them.

torch-mlir surrounds operators with `tensor.collapse_shape` / `tensor.expand_shape`
where PyTorch reshapes, and a view that splits or merges a storage's dims blocks the
fusion planner from tiling along them (docs/fusion.md, "Merged loops"). As MLIR's
reshape propagation does (`linalg-fuse-elementwise-ops`' reshape patterns, not exposed
alone), this pass moves two kinds of reshape out of the way; the values computed are the
same.

1. *Batched contractions over merged batch dims run over the dims.* A batched matmul of
   4-d tensors (attention's `q @ k.T` over batch x heads) is lowered to 3-d tensors:

       %q3 = tensor.collapse_shape %q [[0, 1], [2], [3]] : tensor<8x12x128x64xf32> into tensor<96x128x64xf32>
       %k3 = tensor.collapse_shape %k [[0, 1], [2], [3]] : tensor<8x12x64x128xf32> into tensor<96x64x128xf32>
       %s3 = linalg.generic {maps (b, m, n, k) -> (b, m, k), (b, k, n), (b, m, n)} ins(%q3, %k3) outs(%fill3)
       %s = tensor.expand_shape %s3 [[0, 1], [2], [3]] : tensor<96x128x128xf32> into tensor<8x12x128x128xf32>

   becomes `linalg.generic {maps (b, h, m, n, k) -> (b, h, m, k), (b, h, k, n), (b, h, m,
   n)} ins(%q, %k) outs(%fill)`. Rewritten: a generic whose indexing maps are projected
   permutations, whose inputs all come from collapse_shapes merging the same leading
   dims (sizes equal) into their dim 0, indexed by one parallel loop that indexes
   nothing else, whose init is a scalar fill (a generic yielding its scalar input) or a
   `tensor.empty` used only by it, and whose one result is only used by an
   expand_shape splitting dim 0 back into the same sizes.

2. *Elementwise operators between an expand and a collapse run on the collapsed shape.*
   BERT's GELU at batch 8 reads `tensor.expand_shape %h [[0, 1], [2]] : tensor<1024x3072xf32>
   into tensor<8x128x3072xf32>` and its result is collapsed back for the next linear
   layer; it runs on the 1024 x 3072 tensor instead. Rewritten: a generic with all loops
   parallel and identity indexing maps, every input an expand_shape result with the same
   reassociation and source shape, a `tensor.empty` init used only by it, and one result
   used only by collapse_shapes with that reassociation.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from torch_mlir import ir
from torch_mlir.dialects import linalg, tensor

from polyfuse.analysis.operators import defining_op
from polyfuse.pass_base import ModulePass

PARALLEL = "#linalg.iterator_type<parallel>"


@dataclasses.dataclass(frozen=True)
class FoldReshapes(ModulePass):
    """Fold reshapes into the operators between them (attention, GELU at batch > 1)."""

    name: ClassVar[str] = "polyfuse-fold-reshapes"

    def run(self, module: ir.Operation) -> None:
        fold_reshapes(module)


def fold_reshapes(module: ir.Operation) -> int:
    """Rewrite every matching generic in `module` (see the module docstring); returns
    how many were rewritten."""
    batched: list[tuple[ir.Operation, _Match]] = []
    elementwise: list[tuple[ir.Operation, list[ir.Operation]]] = []

    def visit(op: ir.Operation) -> ir.WalkResult:
        if op.name == "linalg.generic":
            match = _match_batched(op)
            if match is not None:
                batched.append((op, match))
            collapses = _match_elementwise(op)
            if collapses is not None:
                elementwise.append((op, collapses))
        return ir.WalkResult.ADVANCE

    module.walk(visit)
    for op, match in batched:
        _rewrite_batched(op, match)
    for op, collapses in elementwise:
        _rewrite_elementwise(op, collapses)
    return len(batched) + len(elementwise)


@dataclasses.dataclass(frozen=True)
class _Match:
    loop: int  # the merged loop
    sizes: tuple[int, ...]  # the dims it merges, outermost first
    sources: tuple[ir.Value, ...]  # per input: the uncollapsed tensor
    expand: ir.Operation  # the expand_shape of the result
    init: ir.Operation  # the fill generic or tensor.empty of the output


def _dims(attribute: ir.Attribute) -> list[int] | None:
    """The loop each result of an indexing map reads (None: not a projected permutation)."""
    positions = []
    for expr in ir.AffineMapAttr(attribute).value.results:
        if not isinstance(expr, ir.AffineDimExpr):
            return None
        positions.append(ir.AffineDimExpr(expr).position)
    return positions


def _reassociation(op: ir.Operation) -> list[list[int]]:
    return [
        [ir.IntegerAttr(i).value for i in ir.ArrayAttr(group)]
        for group in ir.ArrayAttr(op.attributes["reassociation"])
    ]


def _leading_merge(op: ir.Operation, source_type: ir.Type) -> tuple[int, ...] | None:
    """The sizes of the dims `op` (a collapse or expand) merges into / splits from its
    collapsed dim 0, if that is all it does."""
    groups = _reassociation(op)
    if len(groups[0]) < 2 or any(len(group) != 1 for group in groups[1:]):
        return None
    shape = ir.RankedTensorType(source_type).shape
    return tuple(shape[d] for d in groups[0])


def _is_scalar_fill(op: ir.Operation) -> bool:
    if op.name != "linalg.generic" or len(op.operands) != 2:
        return False
    if isinstance(op.operands[0].type, ir.RankedTensorType):
        return False
    body = op.regions[0].blocks[0]
    operations = list(body.operations)
    return len(operations) == 1 and operations[0].operands[0] == body.arguments[0]


def _match_batched(op: ir.Operation) -> _Match | None:
    """What rewriting `op` needs, if it is pattern 1 of the module docstring."""
    segments = ir.DenseI32ArrayAttr(op.attributes["operandSegmentSizes"])
    inputs, outputs = segments[0], segments[1]
    if outputs != 1 or inputs < 1 or len(op.results) != 1:
        return None
    maps = [_dims(m) for m in ir.ArrayAttr(op.attributes["indexing_maps"])]
    dims = [m for m in maps if m]
    if len(dims) != len(maps):  # a map that is not a projected permutation, or rank 0
        return None
    loop = dims[-1][0]
    iterators = [str(t) for t in ir.ArrayAttr(op.attributes["iterator_types"])]
    if iterators[loop] != PARALLEL:
        return None
    # The merged loop indexes dim 0 of every operand and nothing else.
    if any(m[0] != loop or loop in m[1:] for m in dims):
        return None
    sizes: tuple[int, ...] | None = None
    sources = []
    for value in list(op.operands)[:inputs]:
        collapse = defining_op(value)
        if collapse is None or collapse.name != "tensor.collapse_shape":
            return None
        merged = _leading_merge(collapse, collapse.operands[0].type)
        if merged is None or (sizes is not None and merged != sizes):
            return None
        sizes = merged
        sources.append(collapse.operands[0])
    uses = list(op.results[0].uses)
    if len(uses) != 1:
        return None
    expand = uses[0].owner
    expand = expand.operation if isinstance(expand, ir.OpView) else expand
    if expand.name != "tensor.expand_shape":
        return None
    if _leading_merge(expand, expand.results[0].type) != sizes:
        return None
    init = defining_op(op.operands[inputs])
    if init is None or not (init.name == "tensor.empty" or _is_scalar_fill(init)):
        return None
    if len(list(init.results[0].uses)) != 1:
        return None
    assert sizes is not None
    return _Match(loop, sizes, tuple(sources), expand, init)


def _expanded_map(dims: list[int], loop: int, extra: int, rank: int) -> ir.Attribute:
    """`dims` (an operand's loops) with loop `loop` split into `extra + 1` loops."""

    def shift(d: int) -> int:
        return d + extra if d > loop else d

    positions = [*range(loop, loop + extra + 1), *(shift(d) for d in dims[1:])]
    exprs = [ir.AffineDimExpr.get(p) for p in positions]
    return ir.AffineMapAttr.get(ir.AffineMap.get(rank + extra, 0, exprs))


def _move_body(source: ir.Operation, target: ir.Operation) -> None:
    """Move `source`'s one-block body into `target`'s empty region."""
    old = source.regions[0].blocks[0]
    new = target.regions[0].blocks.append(*[arg.type for arg in old.arguments])
    for old_arg, new_arg in zip(old.arguments, new.arguments, strict=True):
        old_arg.replace_all_uses_with(new_arg)
    for body_op in list(old.operations):
        new.append(body_op.operation)


def _generic_like(
    source: ir.Operation,
    result: ir.Type,
    inputs: list[ir.Value],
    init: ir.Value,
    maps: list[ir.Attribute],
    iterators: list[ir.Attribute],
) -> ir.Operation:
    """A `linalg.generic` with `source`'s body (moved), at the insertion point."""
    generic = linalg.GenericOp(
        [result], inputs, [init], ir.ArrayAttr.get(maps), ir.ArrayAttr.get(iterators)
    ).operation
    _move_body(source, generic)
    return generic


def _empty(result: ir.Type) -> ir.Value:
    shaped = ir.RankedTensorType(result)
    return tensor.EmptyOp(shaped.shape, shaped.element_type).result


def _rewrite_batched(op: ir.Operation, match: _Match) -> None:
    """Replace `op` by the generic over the unmerged dims (pattern 1)."""
    expanded_type = match.expand.results[0].type
    extra = len(match.sizes) - 1
    with ir.InsertionPoint(op), op.location:
        init = _empty(expanded_type)
        if match.init.name == "linalg.generic":  # a scalar fill, on the expanded shape
            rank = len(ir.RankedTensorType(expanded_type).shape)
            maps = [ir.AffineMap.get(rank, 0, []), ir.AffineMap.get_identity(rank)]
            parallel = ir.Attribute.parse(PARALLEL)
            fill = _generic_like(
                match.init,
                expanded_type,
                [match.init.operands[0]],
                init,
                [ir.AffineMapAttr.get(m) for m in maps],
                [parallel] * rank,
            )
            init = fill.results[0]
        dims = [_dims(m) for m in ir.ArrayAttr(op.attributes["indexing_maps"])]
        iterators = list(ir.ArrayAttr(op.attributes["iterator_types"]))
        rank = len(iterators)
        new_iterators = [*iterators[: match.loop], *[iterators[match.loop]] * (extra + 1)]
        new_iterators += iterators[match.loop + 1 :]
        new_maps = [_expanded_map(d, match.loop, extra, rank) for d in dims if d is not None]
        generic = _generic_like(
            op, expanded_type, list(match.sources), init, new_maps, new_iterators
        )
    match.expand.results[0].replace_all_uses_with(generic.results[0])
    # Erased: the old op, its expand_shape and init, and what only they used.
    dead = [defining_op(v) for v in list(op.operands)[: len(match.sources)]]
    dead += [defining_op(v) for v in match.init.operands]
    match.expand.erase()
    op.erase()
    match.init.erase()
    for owner in dead:
        removable = owner is not None and owner.name in ("tensor.collapse_shape", "tensor.empty")
        if removable and owner is not None and not list(owner.results[0].uses):
            owner.erase()


def _match_elementwise(op: ir.Operation) -> list[ir.Operation] | None:
    """The collapse_shapes of an elementwise `op` between expands and collapses of one
    reassociation (pattern 2 of the module docstring), or None."""
    segments = ir.DenseI32ArrayAttr(op.attributes["operandSegmentSizes"])
    inputs, outputs = segments[0], segments[1]
    if outputs != 1 or inputs < 1 or len(op.results) != 1:
        return None
    iterators = [str(t) for t in ir.ArrayAttr(op.attributes["iterator_types"])]
    rank = len(iterators)
    identity = ir.AffineMap.get_identity(rank, context=op.context)
    maps = [ir.AffineMapAttr(m).value for m in ir.ArrayAttr(op.attributes["indexing_maps"])]
    if any(t != PARALLEL for t in iterators) or any(m != identity for m in maps):
        return None
    expands = [defining_op(v) for v in list(op.operands)[:inputs]]
    if any(e is None or e.name != "tensor.expand_shape" for e in expands):
        return None
    first = expands[0]
    assert first is not None
    groups = _reassociation(first)
    if all(len(group) == 1 for group in groups):
        return None
    source = first.operands[0].type
    for expand in expands:
        assert expand is not None
        if _reassociation(expand) != groups or expand.operands[0].type != source:
            return None
    init = defining_op(op.operands[inputs])
    if init is None or init.name != "tensor.empty" or len(list(init.results[0].uses)) != 1:
        return None
    collapses = []
    for use in op.results[0].uses:
        owner = use.owner
        owner = owner.operation if isinstance(owner, ir.OpView) else owner
        if owner.name != "tensor.collapse_shape" or _reassociation(owner) != groups:
            return None
        collapses.append(owner)
    return collapses or None


def _rewrite_elementwise(op: ir.Operation, collapses: list[ir.Operation]) -> None:
    """Replace `op` by the same generic on the collapsed shape (pattern 2)."""
    inputs = ir.DenseI32ArrayAttr(op.attributes["operandSegmentSizes"])[0]
    expands = [defining_op(v) for v in list(op.operands)[:inputs]]
    sources = [e.operands[0] for e in expands if e is not None]
    collapsed_type = collapses[0].results[0].type
    rank = len(ir.RankedTensorType(collapsed_type).shape)
    with ir.InsertionPoint(op), op.location:
        identity = ir.AffineMapAttr.get(ir.AffineMap.get_identity(rank))
        generic = _generic_like(
            op,
            collapsed_type,
            sources,
            _empty(collapsed_type),
            [identity] * (inputs + 1),
            [ir.Attribute.parse(PARALLEL)] * rank,
        )
    for collapse in collapses:
        collapse.results[0].replace_all_uses_with(generic.results[0])
        collapse.erase()
    init = defining_op(op.operands[inputs])
    op.erase()
    if init is not None:
        init.erase()
    for expand in expands:
        if expand is not None and not list(expand.results[0].uses):
            expand.erase()
