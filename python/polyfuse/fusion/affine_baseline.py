"""Baseline (b) of the fusion benchmark: MLIR's own fusion and copy generation.

The linalg-on-tensors module (generalised, as polyfuse sees it) goes through upstream

    one-shot-bufferize{bufferize-function-boundaries}
    func.func(convert-linalg-to-affine-loops)
    func.func(affine-loop-fusion{mode=producer})
    func.func(affine-data-copy-generate{fast-mem-capacity=<KiB> fast-mem-space=1
                                         generate-dma=true})

and its DRAM traffic is counted by evaluating the result: every `affine.dma_start`
moves `num_elements` x 4 bytes once per iteration of its enclosing loops (read when its
source is in memory space 0, written when its destination is); accesses that copy
generation left in DRAM (`affine.load`/`affine.store` of a space-0 memref, the data did
not fit the fast memory) cost 4 bytes each, and a DRAM-to-DRAM `memref.copy` reads and
writes its elements. Nothing upstream lowers `affine.dma_start`, so the count is
exact trip-count arithmetic rather than execution; a loop whose trip count is not a
constant (bounds that depend on other ivs with a varying difference) is reported as
unsupported.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch_mlir import ir, passmanager
from torch_mlir.dialects import linalg

from polyfuse.errors import UnsupportedError


@dataclass
class AffineTraffic:
    read_bytes: int = 0
    write_bytes: int = 0
    dmas: int = 0

    @property
    def total(self) -> int:
        return self.read_bytes + self.write_bytes


BUFFERIZE = (
    "builtin.module(one-shot-bufferize{bufferize-function-boundaries "
    "function-boundary-type-conversion=identity-layout-map})"
)


TO_AFFINE = "builtin.module(func.func(convert-linalg-to-affine-loops))"


def affine_pipeline(fast_mem_kib: int) -> str:
    """After bufferization, `copies_to_linalg`, TO_AFFINE and `fold_subviews`."""
    return (
        "builtin.module("
        "func.func(affine-loop-fusion{mode=producer}),"
        f"func.func(affine-data-copy-generate{{fast-mem-capacity={fast_mem_kib} "
        "fast-mem-space=1 generate-dma=true}))"
    )


def _space(value: ir.Value) -> int:
    space = ir.MemRefType(value.type).memory_space
    if space is None:
        return 0
    return int(ir.IntegerAttr(space).value)


def _elements(value: ir.Value) -> int:
    size = 1
    for extent in ir.MemRefType(value.type).shape:
        size *= extent
    return size


def _constant(value: ir.Value) -> int:
    owner = value.owner
    if isinstance(owner, ir.Block) or owner.name != "arith.constant":
        raise UnsupportedError("affine.dma_start with a non-constant element count")
    return int(ir.IntegerAttr(owner.attributes["value"]).value)


def _trip_count(op: ir.Operation) -> int:
    lower = ir.AffineMapAttr(op.attributes["lowerBoundMap"]).value
    upper = ir.AffineMapAttr(op.attributes["upperBoundMap"]).value
    step = ir.IntegerAttr(op.attributes["step"]).value
    if len(lower.results) != 1 or len(upper.results) != 1:
        raise UnsupportedError("affine.for with max/min bounds")
    difference = upper.results[0] - lower.results[0]
    if lower.n_inputs != upper.n_inputs:
        raise UnsupportedError("affine.for bounds with different operands")
    simplified = ir.AffineMap.get(upper.n_dims, upper.n_symbols, [difference])
    result = simplified.results[0]
    if not isinstance(result, ir.AffineConstantExpr):
        raise UnsupportedError(f"affine.for with a varying trip count ({difference})")
    span = ir.AffineConstantExpr(result).value
    return max(0, -(-span // step))


def copies_to_linalg(module_op: ir.Operation) -> None:
    """Rewrite `memref.copy` (a pad's interior, from bufferization) as `linalg.copy`.

    Affine dependence analysis does not see `memref.copy`: left alone, affine-loop-fusion
    fuses a padded buffer's fill straight into its consumer and drops the copied
    interior (a miscompile that would undercount the baseline's traffic).
    """
    copies: list[ir.Operation] = []

    def collect(block: ir.Block) -> None:
        for view in block.operations:
            if view.operation.name == "memref.copy":
                copies.append(view.operation)
            for region in view.operation.regions:
                for inner in region.blocks:
                    collect(inner)

    collect(module_op.regions[0].blocks[0])
    for copy in copies:
        with ir.InsertionPoint(copy), copy.location:
            linalg.copy(copy.operands[0], outs=[copy.operands[1]])
        copy.erase()


def _walk(block: ir.Block, names: tuple[str, ...], found: list[ir.Operation]) -> None:
    for view in block.operations:
        if view.operation.name in names:
            found.append(view.operation)
        for region in view.operation.regions:
            for inner in region.blocks:
                _walk(inner, names, found)


def fold_subviews(module_op: ir.Operation) -> None:
    """Rewrite affine.load/store through a static `memref.subview` to its source.

    Affine dependence analysis treats a subview as an unrelated memref: a pad's interior
    written through one would look unused, and fusion would drop it.
    """
    accesses: list[ir.Operation] = []
    _walk(module_op.regions[0].blocks[0], ("affine.load", "affine.store"), accesses)
    for access in accesses:
        position = 0 if access.name == "affine.load" else 1
        memref_value = access.operands[position]
        owner = memref_value.owner
        if isinstance(owner, ir.Block) or owner.name != "memref.subview":
            continue
        offsets = list(ir.DenseI64ArrayAttr(owner.attributes["static_offsets"]))
        strides = list(ir.DenseI64ArrayAttr(owner.attributes["static_strides"]))
        source = owner.operands[0]
        if ir.MemRefType(source.type).rank != len(offsets) or len(owner.operands) > 1:
            raise UnsupportedError("a rank-reducing or dynamic memref.subview")
        if ir.MemRefType(memref_value.type).rank != len(offsets):
            raise UnsupportedError("a rank-reducing memref.subview")
        old = ir.AffineMapAttr(access.attributes["map"]).value
        results = [
            r * ir.AffineConstantExpr.get(k) + ir.AffineConstantExpr.get(o)
            for r, k, o in zip(old.results, strides, offsets, strict=True)
        ]
        new_map = ir.AffineMap.get(old.n_dims, old.n_symbols, results)
        operands = list(access.operands)
        operands[position] = source
        with ir.InsertionPoint(access), access.location:
            replacement = ir.Operation.create(
                access.name,
                results=[r.type for r in access.results],
                operands=operands,
                attributes={"map": ir.AffineMapAttr.get(new_map)},
            )
        if access.name == "affine.load":
            access.result.replace_all_uses_with(replacement.result)
        access.erase()


def count_traffic(module_op: ir.Operation) -> AffineTraffic:
    traffic = AffineTraffic()

    def walk(block: ir.Block, multiplier: int) -> None:
        for view in block.operations:
            op = view.operation
            name = op.name
            if name == "affine.for":
                trips = _trip_count(op)
                walk(op.regions[0].blocks[0], multiplier * trips)
                continue
            if name == "affine.dma_start":
                # Operands: src, src map operands, dst, dst map operands, tag, tag map
                # operands, count (then optional stride operands).
                arity = [
                    ir.AffineMapAttr(op.attributes[key]).value.n_inputs
                    for key in ("src_map", "dst_map", "tag_map")
                ]
                src = op.operands[0]
                dst = op.operands[1 + arity[0]]
                count = _constant(op.operands[3 + sum(arity)])
                traffic.dmas += multiplier
                if _space(src) == 0 and _space(dst) != 0:
                    traffic.read_bytes += 4 * count * multiplier
                elif _space(dst) == 0 and _space(src) != 0:
                    traffic.write_bytes += 4 * count * multiplier
                continue
            if name == "affine.load" and _space(op.operands[0]) == 0:
                traffic.read_bytes += 4 * multiplier
            elif name == "affine.store" and _space(op.operands[1]) == 0:
                traffic.write_bytes += 4 * multiplier
            elif name == "memref.copy" and _space(op.operands[0]) == _space(op.operands[1]) == 0:
                traffic.read_bytes += 4 * _elements(op.operands[0]) * multiplier
                traffic.write_bytes += 4 * _elements(op.operands[1]) * multiplier
            elif name in ("scf.for", "scf.if", "affine.if", "scf.while", "scf.parallel"):
                raise UnsupportedError(f"'{name}' in the affine baseline")
            for region in op.regions:
                for inner in region.blocks:
                    walk(inner, multiplier)

    for view in module_op.regions[0].blocks[0].operations:
        op = view.operation
        if op.name == "func.func" and op.regions[0].blocks:
            walk(op.regions[0].blocks[0], 1)
    return traffic


def affine_baseline_bytes(module_op: ir.Operation, fast_mem_bytes: int) -> AffineTraffic:
    """Run the upstream pipeline on a clone of `module_op` (generalised linalg on
    tensors) and count the DRAM bytes of the result."""
    clone = module_op.clone()
    try:
        passmanager.PassManager.parse(BUFFERIZE, module_op.context).run(clone)
        copies_to_linalg(clone)
        passmanager.PassManager.parse(TO_AFFINE, module_op.context).run(clone)
        fold_subviews(clone)
        passmanager.PassManager.parse(
            affine_pipeline(max(1, fast_mem_bytes // 1024)), module_op.context
        ).run(clone)
        return count_traffic(clone)
    except ir.MLIRError as error:
        raise UnsupportedError(f"upstream affine pipeline failed: {error}") from None
    finally:
        clone.erase()
