"""`torch.compile(model, backend="polyfuse")`.

Registered by name through the `torch_dynamo_backends` entry point (pyproject.toml).
Each graph Dynamo captures is compiled for the emulated accelerator with static shapes,
through `polyfuse.compile`, so both paths run the same program:

- Options: every keyword option of `polyfuse.compile` (`target`, `schedule`,
  `overlap`, `embedding`, ...), read from its signature, plus `strict`:
  `torch.compile(model, backend="polyfuse", options={"target": "vta", "schedule": "fused"})`.
  An unknown option raises PolyfuseError naming it and listing the valid ones.
- Weights: Dynamo passes the model's parameters and buffers to the graph as inputs.
  Those `forward` does not update are compiled in as constants (weights, read from
  DRAM once per call as `polyfuse.compile` does) and an eval-mode BatchNorm after a
  convolution or linear layer is folded into it. A parameter changed later (an
  optimiser step, `load_state_dict`) is noticed at the next call, which compiles the
  graph again. Buffers `forward` updates and inputs it writes in place stay inputs;
  polyfuse writes their new values back after each call, as eager does.
- Fallback: a graph polyfuse cannot compile runs in eager PyTorch instead, with one
  warning that names the reason and the line of the user's model the graph came from,
  so results stay right. With `options={"strict": True}` that is an error instead.
- `polyfuse.last_report()` is the report of the most recent run on the accelerator.

Inference only: outputs carry no autograd history.
"""

from __future__ import annotations

import inspect
import operator
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

from polyfuse import last_run
from polyfuse.errors import PolyfuseError

BACKEND_OPTIONS = ("strict",)  # options of the backend itself, not of polyfuse.compile


def polyfuse_backend(
    graph_module: torch.fx.GraphModule,
    example_inputs: Sequence[Any],
    options: Mapping[str, Any] | None = None,
    mode: str | None = None,
    **unknown: Any,
) -> Callable[..., Any]:
    """Dynamo's entry point: a callable that runs `graph_module` on the accelerator (or,
    when polyfuse cannot compile it, in eager PyTorch)."""
    settings = parse_options(options, mode, unknown)
    strict = bool(settings.pop("strict", False))
    location = _graph_location(graph_module)
    reason = _why_not_static(example_inputs)
    if reason:
        return _fallback(graph_module, reason, location, strict)
    try:
        graph = _CompiledGraph(graph_module, list(example_inputs), settings, location, strict)
    except PolyfuseError as error:
        return _fallback(graph_module, str(error), location, strict, error)
    except Exception as error:  # a bug in polyfuse: keep the user's results right
        return _fallback(graph_module, _internal(error), location, strict, error)
    return graph


def _internal(error: Exception) -> str:
    return f"internal error in polyfuse (please report it): {type(error).__name__}: {error}"


def compile_options() -> tuple[str, ...]:
    """The keyword options of `polyfuse.compile`, read from its signature."""
    from polyfuse.compiler import compile as polyfuse_compile

    parameters = list(inspect.signature(polyfuse_compile).parameters.values())[2:]
    return tuple(p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))


def parse_options(
    options: Mapping[str, Any] | None, mode: str | None, unknown: Mapping[str, Any]
) -> dict[str, Any]:
    """The backend's options, checked: PolyfuseError on anything polyfuse does not know."""
    valid = (*compile_options(), *BACKEND_OPTIONS)
    if unknown:
        raise PolyfuseError(
            f"the polyfuse backend got unexpected argument(s) {', '.join(sorted(unknown))}; "
            f"pass options={{...}} with any of: {', '.join(valid)}"
        )
    if mode not in (None, "default"):
        raise PolyfuseError(
            f"the polyfuse backend has no mode '{mode}'; pass options={{...}} with any of: "
            f"{', '.join(valid)}"
        )
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise PolyfuseError(
            f"the polyfuse backend's options must be a dict, got {type(options).__name__}"
        )
    for name in options:
        if name not in valid:
            raise PolyfuseError(
                f"unknown polyfuse backend option '{name}'; valid options: {', '.join(valid)}"
            )
    if not isinstance(options.get("strict", False), bool):
        raise PolyfuseError(f"the option strict must be True or False, got {options['strict']!r}")
    return dict(options)


class _CompiledGraph:
    """One Dynamo graph compiled by polyfuse: parameters and buffers `forward` does not
    update are constants, the other graph inputs are the compiled model's inputs."""

    def __init__(
        self,
        graph_module: torch.fx.GraphModule,
        example_inputs: list[torch.Tensor],
        settings: dict[str, Any],
        location: _Location | None,
        strict: bool,
    ) -> None:
        self.graph_module = graph_module
        self.settings = settings
        self.location = location
        self.strict = strict
        self.frozen = _constant_inputs(graph_module, example_inputs)
        self.runtime = [i for i in range(len(example_inputs)) if i not in self.frozen]
        self.eager: Callable[..., Any] | None = None
        self._lock = threading.Lock()
        self._compile(example_inputs)

    def _compile(self, inputs: Sequence[torch.Tensor]) -> None:
        from polyfuse.compiler import compile as polyfuse_compile

        constants = {index: inputs[index] for index in self.frozen}
        model = freeze(self.graph_module, constants)
        self.compiled = polyfuse_compile(model, [inputs[i] for i in self.runtime], **self.settings)
        self.snapshots = {index: _snapshot(inputs[index]) for index in self.frozen}

    def __call__(self, *args: torch.Tensor) -> Any:
        with self._lock:
            if self.eager is None and any(
                _snapshot(args[i]) != self.snapshots[i] for i in self.frozen
            ):
                self._recompile(args)
            compiled, eager = self.compiled, self.eager
        if eager is not None:
            return eager(*args)
        outputs = compiled(*(args[i] for i in self.runtime))
        last_run.record(compiled.report)
        return outputs if isinstance(outputs, tuple) else (outputs,)

    def _recompile(self, args: Sequence[torch.Tensor]) -> None:
        """A weight changed since the graph was compiled: compile it with the new values
        (or, if that fails, run it eagerly from now on)."""
        try:
            self._compile(args)
        except Exception as error:
            reason = str(error) if isinstance(error, PolyfuseError) else _internal(error)
            self.eager = _fallback(self.graph_module, reason, self.location, self.strict, error)


# --- parameters and buffers as constants ---------------------------------------------


def _snapshot(tensor: torch.Tensor) -> tuple[int, int]:
    """What changes when a tensor's values may have: its storage and version counter."""
    return tensor.data_ptr(), tensor._version


def _constant_inputs(
    graph_module: torch.fx.GraphModule, example_inputs: list[torch.Tensor]
) -> list[int]:
    """The graph inputs that are the model's parameters or buffers and that the graph
    does not write to (a buffer `forward` updates stays an input)."""
    placeholders = [n for n in graph_module.graph.nodes if n.op == "placeholder"]
    candidates = [
        index
        for index, node in enumerate(placeholders)
        if _is_parameter_or_buffer(node) and _trackable(example_inputs[index])
    ]
    if not candidates:
        return []
    written = _written_inputs(graph_module, example_inputs)
    return [index for index in candidates if index not in written]


def _is_parameter_or_buffer(placeholder: torch.fx.Node) -> bool:
    """Whether Dynamo lifted this graph input from a module's parameters or buffers."""
    try:
        from torch._dynamo.source import (
            ParamBufferSource,
            is_from_unspecialized_param_buffer_source,
        )
    except ImportError:  # another torch: nothing is frozen, the graph stays right
        return False
    grapharg = placeholder.meta.get("grapharg")
    source = getattr(grapharg, "source", None)
    while source is not None:
        if isinstance(source, ParamBufferSource) or is_from_unspecialized_param_buffer_source(
            source
        ):
            return True
        source = getattr(source, "base", None)
    return False


def _trackable(tensor: Any) -> bool:
    """A dense CPU tensor whose version counter shows in-place changes."""
    if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided:
        return False
    try:
        tensor._version  # noqa: B018 (inference tensors have no version counter)
    except RuntimeError:
        return False
    return tensor.device.type == "cpu"


def _written_inputs(
    graph_module: torch.fx.GraphModule, example_inputs: list[torch.Tensor]
) -> set[int]:
    """The graph inputs one run of the graph writes to, found by running it once on
    copies: in-place ops bump a copy's version counter; ops that write without bumping
    it (BatchNorm's running statistics in training) change its values."""
    with torch.inference_mode(False), torch.no_grad(), torch.random.fork_rng():
        copies = [t.detach().clone() if isinstance(t, torch.Tensor) else t for t in example_inputs]
        versions = [c._version if isinstance(c, torch.Tensor) else 0 for c in copies]
        try:
            graph_module(*copies)
        except Exception:  # polyfuse.compile will report it; freeze nothing meanwhile
            return set(range(len(example_inputs)))
        return {
            index
            for index, (copy, original) in enumerate(zip(copies, example_inputs, strict=True))
            if isinstance(copy, torch.Tensor)
            and (copy._version != versions[index] or not torch.equal(copy, original))
        }


def freeze(
    graph_module: torch.fx.GraphModule, constants: Mapping[int, torch.Tensor]
) -> torch.fx.GraphModule:
    """A copy of `graph_module` whose placeholders at positions `constants` read those
    tensors as buffers (imported as weights), with eval-mode BatchNorm folded into the
    convolution or linear layer before it, as `polyfuse.compile` folds a module's."""
    root = torch.nn.Module()
    graph = torch.fx.Graph()
    values: dict[torch.fx.Node, torch.fx.Node] = {}
    placeholders = [n for n in graph_module.graph.nodes if n.op == "placeholder"]
    for index, node in enumerate(placeholders):
        if index not in constants:
            values[node] = graph.node_copy(node)
    for index, node in enumerate(placeholders):
        if index in constants:
            name = _unique_attribute(root, _weight_name(str(node.target)))
            root.register_buffer(name, constants[index].detach())
            values[node] = graph.get_attr(name)
            values[node].meta = dict(node.meta)
    for node in graph_module.graph.nodes:
        if node.op == "placeholder":
            continue
        if node.op in ("get_attr", "call_module"):
            _copy_attribute(graph_module, root, str(node.target))
        values[node] = graph.node_copy(node, lambda n: values[n])
    _fold_batch_norms(graph, root)
    frozen = torch.fx.GraphModule(root, graph)
    return frozen.eval()


def _weight_name(placeholder: str) -> str:
    """`L_self_modules_conv_parameters_weight_` → `conv_weight`."""
    name = re.sub(r"^L_(self_)?", "", placeholder).strip("_")
    name = re.sub(r"(^|_)(modules|parameters|buffers)_", r"\1", name)
    return name or "weight"


def _unique_attribute(root: torch.nn.Module, base: str) -> str:
    name, counter = base, 1
    while hasattr(root, name):
        name = f"{base}_{counter}"
        counter += 1
    return name


def _copy_attribute(source: torch.nn.Module, target: torch.nn.Module, path: str) -> None:
    """Copy `source.<path>` (a dotted attribute the graph reads) onto `target`."""
    *parents, leaf = path.split(".")
    value: Any = operator.attrgetter(path)(source)
    for part in parents:
        if not hasattr(target, part):
            target.add_module(part, torch.nn.Module())
        target = getattr(target, part)
    if hasattr(target, leaf):
        return
    if isinstance(value, torch.nn.Parameter):
        target.register_parameter(leaf, value)
    elif isinstance(value, torch.Tensor):
        target.register_buffer(leaf, value)
    else:
        setattr(target, leaf, value)


CONVOLUTIONS = (torch.conv1d, torch.conv2d, torch.conv3d)
LINEAR = torch.nn.functional.linear


def _fold_batch_norms(graph: torch.fx.Graph, root: torch.nn.Module) -> None:
    """Fold each eval-mode `F.batch_norm` whose input is a convolution or a 2-D linear
    layer used only by it, all with constant weights, into that layer (torch's own
    conv/linear-BN fusion arithmetic, as `torch.fx.experimental.optimization.fuse`)."""
    for batch_norm in list(graph.nodes):
        if (
            batch_norm.op != "call_function"
            or batch_norm.target is not torch.nn.functional.batch_norm
        ):
            continue
        layer = _argument(batch_norm, 0, "input")
        if not isinstance(layer, torch.fx.Node) or layer.op != "call_function":
            continue
        is_convolution = layer.target in CONVOLUTIONS
        if not (is_convolution or (layer.target is LINEAR and _rank(layer) == 2)):
            continue
        if len(layer.users) != 1 or _argument(batch_norm, 5, "training", False) is not False:
            continue
        tensors = _constants(
            root,
            [
                _argument(layer, 1, "weight"),
                _argument(layer, 2, "bias"),
                _argument(batch_norm, 1, "running_mean"),
                _argument(batch_norm, 2, "running_var"),
                _argument(batch_norm, 3, "weight"),
                _argument(batch_norm, 4, "bias"),
            ],
        )
        if tensors is None:
            continue  # not all constants
        weight, bias, mean, variance, scale, shift = tensors
        if weight is None or mean is None or variance is None:
            continue  # no running statistics
        eps = float(_argument(batch_norm, 7, "eps", 1e-5))
        if is_convolution:
            new_weight, new_bias = fuse_conv_bn_weights(
                weight, bias, mean, variance, eps, scale, shift
            )
        elif scale is not None and shift is not None:
            new_weight, new_bias = fuse_linear_bn_weights(
                weight, bias, mean, variance, eps, scale, shift
            )
        else:
            continue
        weight_node = _argument(layer, 1, "weight")
        base = str(weight_node.target)
        with graph.inserting_before(layer):
            weight_name = _unique_attribute(root, base)
            root.register_buffer(weight_name, new_weight.detach())
            bias_name = _unique_attribute(root, re.sub(r"weight$", "bias", base))
            root.register_buffer(bias_name, new_bias.detach())
            new_weight_node = graph.get_attr(weight_name)
            new_bias_node = graph.get_attr(bias_name)
        args = list(layer.args)
        kwargs = dict(layer.kwargs)
        for position, keyword, value in (
            (1, "weight", new_weight_node),
            (2, "bias", new_bias_node),
        ):
            if len(args) > position:
                args[position] = value
            else:
                kwargs[keyword] = value
        layer.args, layer.kwargs = tuple(args), kwargs
        batch_norm.replace_all_uses_with(layer)
        graph.erase_node(batch_norm)
    # Drop the constants no node reads any more (the unfolded weights).
    for node in list(graph.nodes):
        if node.op == "get_attr" and not node.users and hasattr(root, str(node.target)):
            graph.erase_node(node)
    used = {str(n.target) for n in graph.nodes if n.op == "get_attr"}
    for name in [name for name, _ in root.named_buffers(recurse=False) if name not in used]:
        delattr(root, name)


def _argument(node: torch.fx.Node, position: int, keyword: str, default: Any = None) -> Any:
    if len(node.args) > position:
        return node.args[position]
    return node.kwargs.get(keyword, default)


def _constants(root: torch.nn.Module, values: list[Any]) -> list[torch.Tensor | None] | None:
    """The float32 tensors the get_attr nodes `values` read from `root` (None stays None),
    or None if any value is something else."""
    tensors: list[torch.Tensor | None] = []
    for value in values:
        if value is None:
            tensors.append(None)
            continue
        if not isinstance(value, torch.fx.Node) or value.op != "get_attr":
            return None
        tensor = getattr(root, str(value.target), None)
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.float32:
            return None
        tensors.append(tensor)
    return tensors


def _rank(node: torch.fx.Node) -> int:
    value = node.meta.get("example_value")
    return value.dim() if isinstance(value, torch.Tensor) else -1


# --- fallback to eager ---------------------------------------------------------------


def _why_not_static(example_inputs: Sequence[Any]) -> str:
    """Why the graph's inputs are not static tensors, or "" if they are."""
    for index, value in enumerate(example_inputs):
        if isinstance(value, torch.SymInt | torch.SymFloat):
            return (
                f"the graph has dynamic shapes (input {index} is a symbolic size); polyfuse "
                "compiles static shapes only: use torch.compile(..., dynamic=False)"
            )
        if not isinstance(value, torch.Tensor):
            return f"graph input {index} is a {type(value).__name__}, not a tensor"
        if any(not isinstance(size, int) for size in value.shape):
            return (
                f"the graph has dynamic shapes (input {index} has shape {tuple(value.shape)}); "
                "polyfuse compiles static shapes only: use torch.compile(..., dynamic=False)"
            )
    return ""


@dataclass(frozen=True)
class _Location:
    """A line of the user's code: where the graph came from, or what called the model."""

    filename: str
    lineno: int
    function: str = ""

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno}" + (f" in {self.function}" if self.function else "")


_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<function>\S+)')
_LIBRARIES = tuple(
    os.path.dirname(module.__file__) + os.sep
    for module in (torch, sys.modules[__name__.rsplit(".", 1)[0]])
    if module.__file__
)


def _is_user_file(filename: str) -> bool:
    return not filename.startswith(_LIBRARIES) and not filename.startswith("<")


def _graph_location(graph_module: torch.fx.GraphModule) -> _Location | None:
    """The user's line the graph's first traced operation came from (Dynamo records a
    stack trace per node), else the user's frame on the stack (the call of the model)."""
    for node in graph_module.graph.nodes:
        frames = [
            _Location(m["file"], int(m["line"]), m["function"])
            for m in _FRAME.finditer(node.meta.get("stack_trace") or "")
            if _is_user_file(m["file"])
        ]
        if frames:
            return frames[-1]
    frame = sys._getframe(1)
    while frame is not None:
        if _is_user_file(frame.f_code.co_filename):
            return _Location(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name)
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _fallback(
    graph_module: torch.fx.GraphModule,
    reason: str,
    location: _Location | None,
    strict: bool,
    cause: BaseException | None = None,
) -> Callable[..., Any]:
    first_line = reason.strip().splitlines()[0] if reason.strip() else "unknown reason"
    where = f" (graph from {location})" if location else ""
    if strict:
        raise PolyfuseError(
            f"polyfuse could not compile this graph{where}: {reason.strip()}\n"
            "strict=True: remove it from options to run such graphs in eager PyTorch"
        ) from cause
    message = f"polyfuse: running this graph in eager PyTorch instead: {first_line}{where}"
    if location is None:
        warnings.warn(message, stacklevel=2)
    else:
        warnings.warn_explicit(message, UserWarning, location.filename, location.lineno)
    return graph_module.forward
