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
from torch_mlir import fx, ir
from torch_mlir.extras.fx_importer import FxImporterHooks
from torch_mlir.fx import OutputType

from polyfuse.errors import ImportError_, UnsupportedError
from polyfuse.frontend.decompositions import decomposition_table
from polyfuse.frontend.op_support import check_supported, fold_batch_norm


@dataclass
class ImportedModel:
    """A model in linalg on tensors, with the weights its constants refer to."""

    module: ir.Module
    weights: dict[str, np.ndarray]
    seconds: dict[str, float] = field(default_factory=dict)


class _WeightsFromBuffers(FxImporterHooks):  # type: ignore[misc]
    """Builds weight constants from tensor buffers and records them by blob name."""

    def __init__(self) -> None:
        self.weights: dict[str, np.ndarray] = {}
        self._names: dict[int, str] = {}

    def resolve_literal(self, gni: Any, literal: Any, info: Any) -> ir.Value | None:
        if not isinstance(literal, torch.Tensor) or literal.numel() <= 1:
            return None
        if literal.dtype != torch.float32:
            return None
        key = id(literal)
        name = self._names.get(key)
        array = literal.detach().contiguous().numpy()
        if name is None:
            hint = getattr(getattr(info, "input_spec", None), "target", None) or "weight"
            name = _unique_name(re.sub(r"[^A-Za-z0-9_]", "_", str(hint)), self.weights)
            self._names[key] = name
            self.weights[name] = array.reshape(-1).copy()
        tensor_type = ir.RankedTensorType.get(list(literal.shape), ir.F32Type.get())
        attr = ir.DenseResourceElementsAttr.get_from_buffer(self.weights[name], name, tensor_type)
        vtensor_type = gni._cc.tensor_to_vtensor_type(literal)
        op = ir.Operation.create(
            "torch.vtensor.literal", results=[vtensor_type], attributes={"value": attr}
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
    model: torch.nn.Module, example_inputs: Sequence[torch.Tensor], func_name: str = "forward"
) -> ImportedModel:
    """Export `model` with `example_inputs` (static shapes) and import it into linalg."""
    seconds: dict[str, float] = {}
    for index, tensor in enumerate(example_inputs):
        if not isinstance(tensor, torch.Tensor):
            raise UnsupportedError(
                f"input {index} is a {type(tensor).__name__}; polyfuse compiles models whose "
                "inputs are tensors"
            )
        if tensor.numel() == 0:
            raise UnsupportedError(
                f"input {index} has shape {tuple(tensor.shape)}, with no elements; polyfuse "
                "compiles tensors with at least one element in every dimension"
            )
        if tensor.dtype != torch.float32:
            raise UnsupportedError(
                f"input {index} has dtype {tensor.dtype}; polyfuse supports float32 models "
                "only (cast the input and the model with .float())"
            )
    start = time.perf_counter()
    original = model
    model = fold_batch_norm(model.eval())
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch-internal deprecations
            program = torch.export.export(model, tuple(example_inputs), strict=False)
            program = program.run_decompositions(decomposition_table())
    except UnsupportedError:
        raise
    except Exception as error:  # torch.export reports many kinds of errors
        raise ImportError_(
            f"torch.export could not trace the model: {type(error).__name__}: {error}\n"
            "polyfuse needs a model that torch.export can capture with static shapes."
        ) from None
    check_supported(program, original)
    _check_outputs(program)
    seconds["export"] = time.perf_counter() - start

    start = time.perf_counter()
    hooks = _WeightsFromBuffers()
    try:
        module = fx.export_and_import(
            program,
            output_type=OutputType.LINALG_ON_TENSORS,
            func_name=func_name,
            hooks=hooks,
            decomposition_table={},
        )
    except Exception as error:
        raise ImportError_(
            f"torch-mlir could not lower the model to linalg: {type(error).__name__}: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        ) from None
    seconds["import"] = time.perf_counter() - start

    return ImportedModel(module=module, weights=hooks.weights, seconds=seconds)
