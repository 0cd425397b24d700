"""PyTorch → linalg-on-tensors, through torch-mlir's FX importer.

Weights never go through the importer's literal path (it calls `Tensor.tolist()` on
every parameter: ~30 s on ResNet-50). A hook builds each weight's `dense_resource`
blob straight from the tensor's buffer and keeps its own name → array map, because
Python cannot read a resource blob back out of the IR.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.export.graph_signature import InputKind, OutputKind
from torch_mlir import fx, ir
from torch_mlir.extras.fx_importer import FxImporterHooks
from torch_mlir.fx import OutputType

from polyfuse.errors import ImportError_, UnsupportedError
from polyfuse.frontend.call_signature import (
    CallSignature,
    Slot,
    TensorSpec,
    example_input_leaves,
)
from polyfuse.frontend.decompositions import decomposition_table
from polyfuse.frontend.op_support import aten_name, check_supported, fold_batch_norm, source_line


@dataclass
class ImportedModel:
    """A model in linalg on tensors, with the weights its constants refer to."""

    module: ir.Module
    weights: dict[str, np.ndarray]
    signature: CallSignature
    state: dict[str, torch.Tensor]  # the live tensor of each buffer `forward` updates
    seconds: dict[str, float] = field(default_factory=dict)


class _WeightsFromBuffers(FxImporterHooks):  # type: ignore[misc]
    """Builds weight constants from tensor buffers and records them by name.

    A weight is named by its state-dict name (`names`: id of the tensor → name); a
    tensor used twice (tied weights, a layer applied twice) becomes one blob, referred
    to by the same attribute each time: MLIR would rename a second blob of the same
    name, and the name would then point at another weight's data.
    """

    def __init__(self, names: dict[int, str]) -> None:
        self.weights: dict[str, np.ndarray] = {}
        self._given = names
        self._names: dict[int, str] = {}
        self._attrs: dict[str, ir.Attribute] = {}

    def resolve_literal(self, gni: Any, literal: Any, info: Any) -> ir.Value | None:
        if not isinstance(literal, torch.Tensor) or literal.numel() <= 1:
            return None
        if literal.dtype != torch.float32:
            return None
        key = id(literal)
        name = self._names.get(key)
        if name is None:
            hint = self._given.get(key) or "constant"
            base = re.sub(r"[^A-Za-z0-9_]", "_", hint)
            base = base if base[0].isalpha() or base[0] == "_" else f"w{base}"  # a bare name
            name = _unique_name(base, self.weights)
            self._names[key] = name
            self.weights[name] = literal.detach().contiguous().numpy().reshape(-1).copy()
            tensor_type = ir.RankedTensorType.get(list(literal.shape), ir.F32Type.get())
            self._attrs[name] = ir.DenseResourceElementsAttr.get_from_buffer(
                self.weights[name], name, tensor_type
            )
        vtensor_type = gni._cc.tensor_to_vtensor_type(literal)
        op = ir.Operation.create(
            "torch.vtensor.literal", results=[vtensor_type], attributes={"value": self._attrs[name]}
        )
        return op.result

    def resolve_input(self, gni: Any, value: Any, info: Any) -> ir.Value | None:
        return self.resolve_literal(gni, value, info)


def _unique_name(base: str, taken: dict[str, np.ndarray]) -> str:
    name, counter = base, 1
    while name in taken:
        name = f"{base}_{counter}"
        counter += 1
    return name


def _check_outputs(program: torch.export.ExportedProgram) -> None:
    """The model must return one or more tensors and nothing else."""
    output = next(iter(program.graph.find_nodes(op="output")))
    values = output.args[0] if isinstance(output.args[0], list | tuple) else [output.args[0]]
    if not values:
        raise UnsupportedError(
            "the model returns no tensor; polyfuse compiles models whose forward returns "
            "one or more float32 tensors"
        )
    for index, value in enumerate(values):
        meta = value.meta.get("val") if isinstance(value, torch.fx.Node) else value
        if not isinstance(meta, torch.Tensor):
            raise UnsupportedError(
                f"output {index} of the model is a {type(meta).__name__}, not a tensor; "
                "polyfuse compiles models whose forward returns only tensors (drop the "
                "other outputs or compute them outside the model)"
            )


def import_model(
    model: torch.nn.Module, example_inputs: Sequence[Any], func_name: str = "forward"
) -> ImportedModel:
    """Export `model` with `example_inputs` (static shapes) and import it into linalg.

    The caller's module is never changed (its train/eval mode included). Buffers that
    `forward` updates stay function arguments (their live values are read at each call
    and written back after it); every other parameter and buffer becomes a weight named
    by its state-dict name."""
    seconds: dict[str, float] = {}
    leaves = example_input_leaves(example_inputs)
    check_inference_mode(model)
    start = time.perf_counter()
    original = model
    model = fold_batch_norm(model)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # its fused kernels do not export
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch-internal deprecations
            # nn.RNNBase re-assigns its flat weight list while export traces it
            warnings.filterwarnings("ignore", "The tensor attributes .* were assigned during")
            program = torch.export.export(model, tuple(example_inputs), strict=False)
            check_no_update_through_identity(program, original)
            program = program.run_decompositions(decomposition_table())
    except UnsupportedError:
        raise
    except MemoryError:
        raise ImportError_(
            "out of memory while torch.export traced the model; the model and its copy "
            "during export do not fit in this machine's RAM"
        ) from None
    except Exception as error:  # torch.export reports many kinds of errors
        raise ImportError_(
            f"torch.export could not trace the model: {type(error).__name__}: {error}\n"
            "polyfuse needs a model that torch.export can capture with static shapes."
        ) from None
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    check_no_randomness(program, original)
    check_supported(program, original)
    _check_outputs(program)
    seconds["export"] = time.perf_counter() - start

    start = time.perf_counter()
    signature, names, state = _freeze(program, leaves, original)
    hooks = _WeightsFromBuffers(names)
    try:
        module = fx.stateless_fx_import(
            program.graph_module,
            output_type=OutputType.LINALG_ON_TENSORS,
            hooks=hooks,
            model_name=func_name,
        )
    except MemoryError:
        raise ImportError_("out of memory while torch-mlir imported the model's weights") from None
    except Exception as error:
        raise ImportError_(
            f"torch-mlir could not lower the model to linalg: {type(error).__name__}: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        ) from None
    seconds["import"] = time.perf_counter() - start

    return ImportedModel(
        module=module, weights=hooks.weights, signature=signature, state=state, seconds=seconds
    )


def _freeze(
    program: torch.export.ExportedProgram,
    example_leaves: list[torch.Tensor],
    original: torch.nn.Module,
) -> tuple[CallSignature, dict[int, str], dict[str, torch.Tensor]]:
    """Replace the placeholders of parameters, constants and buffers `forward` does not
    update by their tensors (imported as weights); keep user inputs and updated buffers
    as function arguments. Returns the call signature, the state-dict name of each
    frozen tensor (by id) and the live tensor of each updated buffer."""
    graph_signature = program.graph_signature
    mutated = set(graph_signature.buffers_to_mutate.values())
    replacements: dict[str, torch.Tensor] = {}
    names: dict[int, str] = {}
    state: dict[str, torch.Tensor] = {}
    arguments: list[Slot] = []
    user_inputs = 0
    for spec in graph_signature.input_specs:
        placeholder = spec.arg.name
        if spec.kind == InputKind.USER_INPUT:
            arguments.append(Slot("input", index=user_inputs))
            user_inputs += 1
            continue
        if spec.kind == InputKind.BUFFER and spec.target in mutated:
            arguments.append(Slot("buffer", name=spec.target))
            state[spec.target] = _live_buffer(original, spec.target, program.state_dict)
            continue
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER):
            tensor = program.state_dict.get(spec.target)
            if tensor is None:  # a non-persistent buffer
                tensor = program.constants[spec.target]
        elif spec.kind == InputKind.CONSTANT_TENSOR:
            tensor = program.constants[spec.target]
        else:
            raise UnsupportedError(
                f"the exported model has an input of kind {spec.kind.name} "
                f"('{spec.target}'); polyfuse compiles tensors, parameters and buffers"
            )
        replacements[placeholder] = tensor
        names.setdefault(id(tensor), str(spec.target))
    graph = program.graph
    for node in list(graph.nodes):
        if node.op == "placeholder" and node.name in replacements:
            node.replace_all_uses_with(replacements[node.name])
            graph.erase_node(node)

    results: list[Slot] = []
    user_outputs = 0
    for output in graph_signature.output_specs:
        if output.kind == OutputKind.BUFFER_MUTATION:
            results.append(Slot("buffer", name=str(output.target)))
        elif output.kind == OutputKind.USER_INPUT_MUTATION:
            position = [
                s.arg.name for s in graph_signature.input_specs if s.kind == InputKind.USER_INPUT
            ].index(str(output.target))
            results.append(Slot("input", index=position))
        elif output.kind == OutputKind.USER_OUTPUT:
            results.append(Slot("output", index=user_outputs))
            user_outputs += 1
        else:
            raise UnsupportedError(
                f"the exported model has an output of kind {output.kind.name}; polyfuse "
                "compiles inference graphs (no gradients, no token outputs)"
            )
    signature = CallSignature(
        arguments=tuple(arguments),
        results=tuple(results),
        inputs=tuple(TensorSpec(tuple(t.shape), t.dtype) for t in example_leaves),
        input_tree=program.call_spec.in_spec,
        output_tree=program.call_spec.out_spec,
    )
    return signature, names, state


def _live_buffer(
    original: torch.nn.Module, name: str, exported: dict[str, torch.Tensor]
) -> torch.Tensor:
    """The caller's buffer `name` (updated in place after each call, as eager does), or
    the exported copy's when the caller's module has no such buffer (BatchNorm folding
    rebuilt the module)."""
    try:
        buffer = original.get_buffer(name)
    except AttributeError:
        return exported[name]
    return buffer if buffer.shape == exported[name].shape else exported[name]


def check_inference_mode(model: torch.nn.Module) -> None:
    """Refuse a model whose train-mode behaviour differs from eval (BatchNorm batch
    statistics, Dropout); the caller's module is not changed."""
    for path, module in model.named_modules():
        if module.training and _behaves_differently_in_training(module):
            where = f"'{path}' ({type(module).__name__})" if path else type(module).__name__
            raise UnsupportedError(
                f"the model is in train mode and {where} computes differently in training; "
                "polyfuse compiles inference: call model.eval() before polyfuse.compile"
            )


def _behaves_differently_in_training(module: torch.nn.Module) -> bool:
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm | torch.nn.GroupNorm):
        return isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
    if isinstance(module, torch.nn.modules.instancenorm._InstanceNorm):
        return bool(module.track_running_stats)
    if isinstance(module, torch.nn.modules.dropout._DropoutNd):
        return float(module.p) > 0.0
    if isinstance(module, torch.nn.RNNBase):
        return float(module.dropout) > 0.0 and module.num_layers > 1
    if isinstance(module, torch.nn.MultiheadAttention):
        return float(module.dropout) > 0.0
    return False


RANDOM_OPS = frozenset(
    {
        "native_dropout",
        "dropout",
        "bernoulli",
        "rand",
        "rand_like",
        "randn",
        "randn_like",
        "randint",
        "randint_like",
        "randperm",
        "normal",
        "uniform",
        "multinomial",
        "poisson",
        "exponential",
    }
)


def check_no_randomness(program: torch.export.ExportedProgram, model: torch.nn.Module) -> None:
    """Refuse random numbers (a functional dropout in train mode, torch.rand...): the
    emulator cannot draw PyTorch's random stream, so the result would differ."""
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        name = aten_name(node.target)
        if name in RANDOM_OPS:
            where = source_line(node, model)
            raise UnsupportedError(
                f"operator aten.{name} draws random numbers{' (' + where + ')' if where else ''}; "
                "polyfuse cannot reproduce PyTorch's random stream. A dropout in train mode "
                "does this: call model.eval() (or pass training=False to F.dropout)"
            )


# Operators that eager PyTorch may answer with their input itself, which torch.export
# treats as a new tensor: an in-place update of their result would be lost.
IDENTITY_IN_EVAL = frozenset(
    {"dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout"}
)


def check_no_update_through_identity(
    program: torch.export.ExportedProgram, model: torch.nn.Module
) -> None:
    """Refuse an in-place update of an eval-mode dropout's input or result: in eager the
    result is the input itself, so the update changes both, while the exported graph
    (which copies) would silently change one."""
    aliased: set[torch.fx.Node] = set()
    for node in program.graph.nodes:
        if node.op == "call_function" and aten_name(node.target) in IDENTITY_IN_EVAL:
            source = node.args[0]
            aliased.add(node)
            if isinstance(source, torch.fx.Node):
                aliased.add(source)
    for node in program.graph.nodes:
        schema = getattr(node.target, "_schema", None)
        if node.op != "call_function" or schema is None or not schema.is_mutable:
            continue
        if node.args and node.args[0] in aliased:
            where = source_line(node, model)
            raise UnsupportedError(
                f"an in-place update (aten.{aten_name(node.target)}) of a dropout's input or "
                f"result{' (' + where + ')' if where else ''}: in eval mode a dropout returns "
                "its input itself, and polyfuse cannot follow that alias; update a copy "
                "(.clone()) or use the out-of-place operator"
            )
