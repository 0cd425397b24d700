"""How a compiled function's arguments and results map onto the user's call.

`torch.export` flattens a model's call: the inputs (any nesting of tuples, lists and
dicts) become a flat list of tensors, and the function returns, in this order, the new
values of the buffers `forward` mutates, the new values of the inputs it mutates in
place, then the user's outputs, flattened. A `CallSignature` records that mapping, so
the runtime can take the user's arguments, feed buffers from the model's live state,
write mutated buffers and inputs back after each call, and rebuild the output
structure eager PyTorch returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.utils import _pytree as pytree

from polyfuse.errors import PolyfuseError, UnsupportedError

SlotKind = Literal["input", "buffer", "output"]


@dataclass(frozen=True)
class Slot:
    """One function argument or result: a user input (`index` in the flattened inputs),
    a model buffer (`name`, its state-dict name) or a user output (`index` in the
    flattened outputs)."""

    kind: SlotKind
    index: int = 0
    name: str = ""


@dataclass(frozen=True)
class TensorSpec:
    """What a call-time input must be: its shape and dtype (on the CPU)."""

    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass(frozen=True)
class CallSignature:
    """The imported function's arguments and results, in order, and the pytree
    structures of the user's inputs and outputs."""

    arguments: tuple[Slot, ...]
    results: tuple[Slot, ...]
    inputs: tuple[TensorSpec, ...]
    input_tree: pytree.TreeSpec
    output_tree: pytree.TreeSpec

    @property
    def mutates(self) -> bool:
        """True when a call writes a buffer or an input (calls then run one at a time)."""
        return any(slot.kind != "output" for slot in self.results)

    def flatten_inputs(self, args: Sequence[Any], kwargs: dict[str, Any]) -> list[torch.Tensor]:
        """The call's tensors in the order of `inputs`, each checked; PolyfuseError if the
        call does not match what the model was compiled for."""
        leaves, tree = pytree.tree_flatten((tuple(args), dict(kwargs)))
        if tree != self.input_tree:
            raise PolyfuseError(
                f"the compiled model was called with {_describe(tree)} but compiled for "
                f"{_describe(self.input_tree)}; call it the way it was compiled, or compile "
                "again"
            )
        for index, (value, spec) in enumerate(zip(leaves, self.inputs, strict=True)):
            check_input(index, value, spec)
        return list(leaves)

    def unflatten_outputs(self, outputs: list[torch.Tensor]) -> Any:
        return pytree.tree_unflatten(outputs, self.output_tree)


def check_input(index: int, value: Any, spec: TensorSpec) -> None:
    """PolyfuseError unless `value` is a CPU tensor of `spec`'s dtype and shape."""
    if not isinstance(value, torch.Tensor):
        hint = " (convert it with torch.from_numpy)" if type(value).__module__ == "numpy" else ""
        raise PolyfuseError(
            f"input {index} is a {type(value).__name__}, not a torch.Tensor{hint}; the "
            f"model was compiled for a {spec.dtype} tensor of shape {spec.shape}"
        )
    if value.layout != torch.strided:
        raise PolyfuseError(
            f"input {index} is a {value.layout} tensor; polyfuse takes dense (strided) "
            "tensors: convert it with .to_dense()"
        )
    if value.device.type != "cpu":
        raise PolyfuseError(
            f"input {index} is on device '{value.device}'; the emulated accelerator reads "
            "CPU tensors with data: move it with .cpu()"
        )
    if value.dtype != spec.dtype:
        raise PolyfuseError(
            f"input {index} has dtype {value.dtype} but the model was compiled for "
            f"{spec.dtype}; polyfuse does not cast silently: convert it with "
            f".to({spec.dtype})"
        )
    if tuple(value.shape) != spec.shape:
        raise PolyfuseError(
            f"input {index} has shape {tuple(value.shape)} but the model was compiled for "
            f"{spec.shape}; compile again for the new shape"
        )


def example_input_leaves(example_inputs: Sequence[Any]) -> list[torch.Tensor]:
    """The example inputs' tensors (any nesting of tuples, lists and dicts), each
    checked to be something polyfuse compiles."""
    if isinstance(example_inputs, torch.Tensor):
        raise UnsupportedError(
            "example_inputs is a single tensor; pass a tuple or list of the model's "
            "inputs, e.g. (x,)"
        )
    if not isinstance(example_inputs, list | tuple):
        raise UnsupportedError(
            f"example_inputs is a {type(example_inputs).__name__}; pass a tuple or list "
            "of the model's inputs, e.g. (x,)"
        )
    leaves, _ = pytree.tree_flatten(tuple(example_inputs))
    for index, tensor in enumerate(leaves):
        if not isinstance(tensor, torch.Tensor):
            raise UnsupportedError(
                f"input {index} is a {type(tensor).__name__}; polyfuse compiles models whose "
                "inputs are tensors (nested in tuples, lists or dicts at most)"
            )
        if tensor.device.type != "cpu" or tensor.layout != torch.strided:
            raise UnsupportedError(
                f"input {index} is a {tensor.layout} tensor on '{tensor.device}'; polyfuse "
                "compiles from dense CPU example tensors (use .cpu() / .to_dense())"
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
    return leaves


def _describe(tree: pytree.TreeSpec) -> str:
    children = tree.children()
    args_tree = children[0] if children else tree
    count = args_tree.num_leaves
    if args_tree.num_children == args_tree.num_leaves and children[1].num_leaves == 0:
        return f"{count} tensor argument(s)"
    return f"arguments structured as {args_tree}"
