"""The polyhedral model of a whole network, in isl.

Every `linalg.generic` of a linalg-on-tensors function becomes a statement `S<k>` with

    domain   { S<k>[d0, ..., dn] : 0 <= di < extent_i }
    reads    { S<k>[d] -> T<j>[A·d + c] }     one per input (and read output init)
    writes   { S<k>[d] -> T<k>[A·d + c] }     one per result

built from its indexing maps (`analysis.affine`), so strides, dilations and the shifted
reads of a padded convolution input are part of the relations. Views are affine
relations between tensors, from the view's index space to its source's:

    tensor.pad            { P[i] -> T[i - low] : low <= i < low + size }   (interior only)
    tensor.collapse_shape { C[a·B + b] -> T[a, b] }   (written as T -> C, then reversed)
    tensor.expand_shape   { E[a, b] -> T[a·B + b] }
    tensor.extract_slice  { V[i] -> T[offset + step·i] }

A read through views composes with them down to a *base* tensor (a function argument, a
constant or an operator result). The dataflow of one read is then

    consumer instance -> base element -> producer instance   (read ∘ write⁻¹)

and the footprint of a consumer tile on a producer is that relation's image of the tile:
exact, with convolution halos, strides and padding borders (the border is not produced
by anyone, so it drops out).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import islpy as isl
from torch_mlir import ir

from polyfuse.analysis.affine import AffineAccess
from polyfuse.analysis.operators import (
    defining_op,
    generic_operator,
    location_text,
    reassociation,
    static_shape,
)
from polyfuse.errors import UnsupportedError

VIEW_OPS = (
    "tensor.pad",
    "tensor.collapse_shape",
    "tensor.expand_shape",
    "tensor.extract_slice",
)


@dataclass
class PolyTensor:
    """A tensor value: a base tensor, or a view of another tensor (`view_of`)."""

    name: str
    shape: tuple[int, ...]
    kind: str  # "input", "weight", "result", "view", "other"
    view_of: str | None = None
    view: isl.Map | None = None  # view index -> source index

    @property
    def elements(self) -> int:
        size = 1
        for extent in self.shape:
            size *= extent
        return size


@dataclass
class PolyAccess:
    """One read or write of a statement: the tensor named and the relation to it."""

    tensor: str
    relation: isl.Map  # statement instance -> tensor element
    base: str = ""  # the base tensor the relation reaches through views
    base_relation: isl.Map | None = None  # statement instance -> base element


@dataclass
class PolyStatement:
    """A linalg.generic as a statement: its domain and access relations."""

    name: str
    op: ir.Operation
    location: str
    domain: isl.Set
    extents: tuple[int, ...]
    is_reduction: tuple[bool, ...]
    reads: list[PolyAccess]
    writes: list[PolyAccess]


@dataclass
class Dependence:
    """Flow dependence: `consumer` reads what `producer` wrote into `tensor`."""

    producer: str
    consumer: str
    tensor: str
    relation: isl.Map  # consumer instance -> the producer instance whose value it reads


@dataclass
class PolyModel:
    """All statements, tensors and flow dependences of one function."""

    statements: list[PolyStatement] = field(default_factory=list)
    tensors: dict[str, PolyTensor] = field(default_factory=dict)
    dependences: list[Dependence] = field(default_factory=list)
    names: dict[ir.Value, str] = field(default_factory=dict)
    producers: dict[str, str] = field(default_factory=dict)  # base tensor -> statement

    def statement(self, name: str) -> PolyStatement:
        for statement in self.statements:
            if statement.name == name:
                return statement
        raise KeyError(name)

    def write_of(self, tensor: str) -> PolyAccess:
        statement = self.statement(self.producers[tensor])
        return next(w for w in statement.writes if w.tensor == tensor)

    def footprint(self, consumer: str, tile: isl.Set, tensor: str) -> isl.Set:
        """Elements of base tensor `tensor` that the instances `tile` of `consumer` read."""
        statement = self.statement(consumer)
        result = isl.Set.empty(self.tensor_space(tensor))
        for read in statement.reads:
            if read.base == tensor and read.base_relation is not None:
                result = result.union(tile.apply(read.base_relation))
        return result.coalesce()

    def producer_footprint(self, consumer: str, tile: isl.Set, tensor: str) -> isl.Set:
        """Instances of `tensor`'s producer that the tile `tile` of `consumer` needs."""
        write = self.write_of(tensor)
        return self.footprint(consumer, tile, tensor).apply(write.relation.reverse()).coalesce()

    def tensor_space(self, tensor: str) -> isl.Space:
        return box_set(tensor, self.tensors[tensor].shape).get_space()

    def format(self) -> str:
        """The model as text (what `polyfuse-dump-poly` prints)."""
        lines = ["// polyfuse polyhedral model"]
        for tensor in self.tensors.values():
            if tensor.view_of is not None:
                lines.append(f"tensor {tensor.name} = view of {tensor.view_of}: {tensor.view}")
            else:
                lines.append(f"tensor {tensor.name} : {tensor.kind} {list(tensor.shape)}")
        for statement in self.statements:
            lines.append(f"statement {statement.name} ({statement.location})")
            lines.append(f"  domain {statement.domain}")
            for read in statement.reads:
                lines.append(f"  read {read.tensor} {read.relation}")
            for write in statement.writes:
                lines.append(f"  write {write.tensor} {write.relation}")
        for dependence in self.dependences:
            lines.append(
                f"flow {dependence.producer} -> {dependence.consumer} through "
                f"{dependence.tensor}: {dependence.relation}"
            )
        return "\n".join(lines)


def _dims(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


def box_set(name: str, shape: tuple[int, ...]) -> isl.Set:
    """{ name[i0, ...] : 0 <= ik < shape[k] }."""
    dims = _dims("i", len(shape))
    bounds = " and ".join(f"0 <= {d} < {s}" for d, s in zip(dims, shape, strict=True))
    return isl.Set(f"{{ {name}[{', '.join(dims)}] : {bounds or '1 = 1'} }}")


def _expression(row: tuple[int, ...], const: int, dims: list[str]) -> str:
    terms = [f"{c}*{d}" for c, d in zip(row, dims, strict=True) if c != 0]
    terms.append(str(const))
    return " + ".join(terms)


def access_relation(statement: str, access: AffineAccess, tensor: str, domain: isl.Set) -> isl.Map:
    """{ statement[d] -> tensor[coeffs·d + consts] } restricted to `domain`."""
    dims = _dims("d", access.num_loops)
    outputs = [
        _expression(row, c, dims) for row, c in zip(access.coeffs, access.consts, strict=True)
    ]
    relation = isl.Map(f"{{ {statement}[{', '.join(dims)}] -> {tensor}[{', '.join(outputs)}] }}")
    return relation.intersect_domain(domain)


def _static(op: ir.Operation, name: str) -> list[int]:
    return list(ir.DenseI64ArrayAttr(op.attributes[name]))


def _view_relation(op: ir.Operation, view: str, source: str) -> isl.Map:
    """view index -> source index for a view op."""
    view_shape = static_shape(op.result)
    source_shape = static_shape(op.operands[0])
    v = _dims("v", len(view_shape))
    if op.name == "tensor.pad":
        low = _static(op, "static_low")
        if any(x < 0 for x in low):
            raise UnsupportedError(f"{location_text(op)}: tensor.pad with dynamic padding")
        exprs = [f"{d} - {lo}" for d, lo in zip(v, low, strict=True)]
        bounds = [f"{lo} <= {d} < {lo + n}" for d, lo, n in zip(v, low, source_shape, strict=True)]
        text = (
            f"{{ {view}[{', '.join(v)}] -> {source}[{', '.join(exprs)}] : {' and '.join(bounds)} }}"
        )
        return isl.Map(text)
    if op.name in ("tensor.collapse_shape", "tensor.expand_shape"):
        groups = reassociation(op)
        collapse = op.name == "tensor.collapse_shape"
        # Build big -> small (the collapsed tensor is the "small" rank one), then orient.
        big_shape = source_shape if collapse else view_shape
        b = _dims("b", len(big_shape))
        small = []
        for group in groups:
            terms, running = [], 1
            for dim in reversed(group):
                terms.append(f"{running}*{b[dim]}")
                running *= big_shape[dim]
            small.append(" + ".join(terms))
        big_bounds = " and ".join(f"0 <= {d} < {n}" for d, n in zip(b, big_shape, strict=True))
        big_name, small_name = (source, view) if collapse else (view, source)
        relation = isl.Map(
            f"{{ {big_name}[{', '.join(b)}] -> {small_name}[{', '.join(small)}] : {big_bounds} }}"
        )
        return relation.reverse() if collapse else relation
    if op.name == "tensor.extract_slice":
        offsets = _static(op, "static_offsets")
        sizes = _static(op, "static_sizes")
        steps = _static(op, "static_strides")
        if any(x < 0 for x in [*offsets, *sizes, *steps]):
            raise UnsupportedError(
                f"{location_text(op)}: tensor.extract_slice with dynamic offsets"
            )
        kept = (
            [d for d, size in enumerate(sizes) if size != 1]
            if len(view_shape) != len(sizes)
            else list(range(len(sizes)))
        )
        exprs = []
        position = {d: i for i, d in enumerate(kept)}
        for d in range(len(sizes)):
            index = v[position[d]] if d in position else "0"
            exprs.append(f"{offsets[d]} + {steps[d]}*({index})")
        view_bounds = " and ".join(f"0 <= {d} < {n}" for d, n in zip(v, view_shape, strict=True))
        return isl.Map(
            f"{{ {view}[{', '.join(v)}] -> {source}[{', '.join(exprs)}] : "
            f"{view_bounds or '1 = 1'} }}"
        )
    raise UnsupportedError(f"{location_text(op)}: '{op.name}' is not a view")


def build_model(func_op: ir.Operation) -> PolyModel:
    """The polyhedral model of a linalg-on-tensors function (generics generalised)."""
    model = PolyModel()
    block = func_op.regions[0].blocks[0]
    for index, argument in enumerate(block.arguments):
        name = f"arg{index}"
        model.names[argument] = name
        model.tensors[name] = PolyTensor(name, static_shape(argument), "input")
    counter = 0
    for view in block.operations:
        op = view.operation
        if op.name == "arith.constant" and isinstance(op.result.type, ir.RankedTensorType):
            name = f"W{counter}"
            counter += 1
            model.names[op.result] = name
            model.tensors[name] = PolyTensor(name, static_shape(op.result), "weight")
        elif op.name in VIEW_OPS:
            source = _name_of(model, op.operands[0])
            name = f"V{counter}"
            counter += 1
            model.names[op.result] = name
            model.tensors[name] = PolyTensor(
                name,
                static_shape(op.result),
                "view",
                view_of=source,
                view=_view_relation(op, name, source),
            )
        elif op.name == "linalg.generic":
            _add_statement(model, op, f"S{len(model.statements)}")
        elif op.name == "tensor.empty":
            name = f"E{counter}"
            counter += 1
            model.names[op.result] = name
            model.tensors[name] = PolyTensor(name, static_shape(op.result), "other")
        elif op.name.startswith("linalg."):
            raise UnsupportedError(
                f"{location_text(op)}: '{op.name}' is a named linalg op; run "
                "func.func(linalg-generalize-named-ops) before building the polyhedral model"
            )
        else:
            for result in op.results:
                if isinstance(result.type, ir.RankedTensorType) and result not in model.names:
                    name = f"X{counter}"
                    counter += 1
                    model.names[result] = name
                    model.tensors[name] = PolyTensor(name, static_shape(result), "other")
    _resolve_views(model)
    return model


def _name_of(model: PolyModel, value: ir.Value) -> str:
    if value not in model.names:
        owner = defining_op(value)
        where = location_text(owner) if owner is not None else "a block argument"
        raise UnsupportedError(f"{where}: tensor {value.type} has no polyhedral name")
    return model.names[value]


def _add_statement(model: PolyModel, op: ir.Operation, name: str) -> None:
    generic = generic_operator(op)
    dims = _dims("d", generic.num_loops)
    bounds = " and ".join(f"0 <= {d} < {e}" for d, e in zip(dims, generic.extents, strict=True))
    domain = isl.Set(f"{{ {name}[{', '.join(dims)}] : {bounds or '1 = 1'} }}")
    reads: list[PolyAccess] = []
    used = {operand for body_op in generic.body.operations for operand in body_op.operands}
    for operand in generic.inputs:
        if not isinstance(operand.value.type, ir.RankedTensorType):
            continue
        tensor = _name_of(model, operand.value)
        reads.append(PolyAccess(tensor, access_relation(name, operand.access, tensor, domain)))
    writes: list[PolyAccess] = []
    for operand in generic.outputs:
        assert operand.result is not None
        if operand.block_arg in used:  # the body reads the initial value
            init = _name_of(model, operand.value)
            reads.append(PolyAccess(init, access_relation(name, operand.access, init, domain)))
        result = (
            f"T{len(model.statements)}"
            if len(generic.outputs) == 1
            else (f"T{len(model.statements)}_{generic.outputs.index(operand)}")
        )
        model.names[operand.result] = result
        model.tensors[result] = PolyTensor(result, static_shape(operand.result), "result")
        model.producers[result] = name
        writes.append(PolyAccess(result, access_relation(name, operand.access, result, domain)))
    model.statements.append(
        PolyStatement(
            name=name,
            op=op,
            location=location_text(op),
            domain=domain,
            extents=generic.extents,
            is_reduction=generic.is_reduction,
            reads=reads,
            writes=writes,
        )
    )


def _resolve_views(model: PolyModel) -> None:
    """Compose every read with its views down to the base tensor; add flow dependences."""
    for statement in model.statements:
        for read in statement.reads:
            relation, tensor = read.relation, read.tensor
            while model.tensors[tensor].view_of is not None:
                view = model.tensors[tensor]
                assert view.view is not None and view.view_of is not None
                relation = relation.apply_range(view.view)
                tensor = view.view_of
            read.base, read.base_relation = tensor, relation.coalesce()
            if tensor in model.producers:
                write = model.write_of(tensor)
                # The value read is the one the last reduction step wrote.
                flow = relation.apply_range(write.relation.reverse()).lexmax().coalesce()
                model.dependences.append(
                    Dependence(model.producers[tensor], statement.name, tensor, flow)
                )
        for write in statement.writes:
            write.base, write.base_relation = write.tensor, write.relation


def build_module_model(module_op: ir.Operation, function: str = "forward") -> PolyModel:
    """The model of function `function` of a module (linalg on tensors, generalised)."""
    for view in module_op.regions[0].blocks[0].operations:
        op = view.operation
        if op.name == "func.func" and ir.StringAttr(op.attributes["sym_name"]).value == function:
            return build_model(op)
    raise UnsupportedError(f"no function @{function} in the module")
