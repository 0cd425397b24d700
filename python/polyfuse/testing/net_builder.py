"""The `nn.Module` of a `NetSpec`, built directly from the validated spec (no generated
source is run), and the same network written as Python source for reproducers.

`RandomNet(spec)` owns one submodule, parameter or buffer per layer that needs one
(`layer3`, `buffer5`: names made from positions, never from the spec's strings) and its
`forward` applies the layers in order, each through a fixed table of functions keyed by
the validated op and function names. `model_source(spec)` renders the equivalent
`class RandomNet(torch.nn.Module)` for a human to read; a test checks the two agree.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from polyfuse.testing.net_spec import Layer, NetSpec, validate_net_spec

Tensor = torch.Tensor

# name -> (function, source template); names are net_spec.UNARY_FUNCTIONS.
UNARY_OPS: dict[str, tuple[Callable[[Tensor], Tensor], str]] = {
    "relu": (torch.relu, "torch.relu({x})"),
    "relu6": (F.relu6, "torch.nn.functional.relu6({x})"),
    "gelu": (F.gelu, "torch.nn.functional.gelu({x})"),
    "gelu_tanh": (
        lambda x: F.gelu(x, approximate="tanh"),
        "torch.nn.functional.gelu({x}, approximate='tanh')",
    ),
    "silu": (F.silu, "torch.nn.functional.silu({x})"),
    "sigmoid": (torch.sigmoid, "torch.sigmoid({x})"),
    "tanh": (torch.tanh, "torch.tanh({x})"),
    "hardswish": (F.hardswish, "torch.nn.functional.hardswish({x})"),
    "hardsigmoid": (F.hardsigmoid, "torch.nn.functional.hardsigmoid({x})"),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), "torch.nn.functional.leaky_relu({x}, 0.1)"),
    "neg": (operator.neg, "-{x}"),
    "abs": (torch.abs, "torch.abs({x})"),
    "clamp": (lambda x: torch.clamp(x, -0.5, 0.75), "torch.clamp({x}, -0.5, 0.75)"),
    "square": (lambda x: x * x, "{x} * {x}"),
    "scale_shift": (lambda x: x * 0.5 + 0.25, "{x} * 0.5 + 0.25"),
    "div_scalar": (lambda x: x / 3.0, "{x} / 3.0"),
}
BINARY_OPS: dict[str, tuple[Callable[[Any, Any], Tensor], str]] = {
    "add": (operator.add, "+"),
    "sub": (operator.sub, "-"),
    "mul": (operator.mul, "*"),
}
# In-place updates: name -> (function, method call source).
MUTATION_OPS: dict[str, tuple[Callable[[Tensor], Tensor], str]] = {
    "add": (lambda x: x.add_(0.5), "add_(0.5)"),
    "mul": (lambda x: x.mul_(1.5), "mul_(1.5)"),
    "relu": (lambda x: x.relu_(), "relu_()"),
    "clamp": (lambda x: x.clamp_(-1.0, 1.0), "clamp_(-1.0, 1.0)"),
    "sigmoid": (lambda x: x.sigmoid_(), "sigmoid_()"),
}
REDUCTIONS: dict[str, Callable[..., Tensor]] = {
    "mean": torch.mean,
    "sum": torch.sum,
    "amax": torch.amax,
}
RUNNING_MEAN_MOMENTUM = 0.1


def broadcast_shape(shape: list[int]) -> list[int]:
    """A per-channel (4D) or per-feature (other ranks) parameter that broadcasts over `shape`."""
    return [1, shape[1], 1, 1] if len(shape) == 4 else [shape[-1]]


def _statistics_dims(shape: list[int]) -> list[int]:
    """The dims a running mean of `shape` averages over (all but channels / features)."""
    return [0, 2, 3] if len(shape) == 4 else list(range(len(shape) - 1))


def _statistics_shape(shape: list[int]) -> list[int]:
    dims = _statistics_dims(shape)
    return [1 if d in dims else size for d, size in enumerate(shape)]


class RandomNet(torch.nn.Module):
    """The network of a validated `NetSpec` (see the module docstring)."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        validate_net_spec(spec)
        self.spec = spec
        shapes = spec.shapes
        for position, layer in enumerate(spec.layers):
            _add_state(self, position, layer, shapes)

    def forward(self, *inputs: Tensor) -> Any:
        values = list(inputs)
        for position, layer in enumerate(self.spec.layers):
            values.append(_APPLY[layer.op](self, position, layer, values))
        return structure_outputs(self.spec.output_structure, [values[i] for i in self.spec.outputs])


def structure_outputs(structure: str, outputs: list[Any]) -> Any:
    """`outputs` the way forward returns them (net_spec.OUTPUT_STRUCTURES)."""
    if structure == "tuple":
        return tuple(outputs)
    if structure == "list":
        return list(outputs)
    if structure == "dict":
        return {f"out{index}": value for index, value in enumerate(outputs)}
    if structure == "nested":
        return (outputs[0], [tuple(outputs[1:]), {"last": outputs[-1]}])
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


def _add_state(net: RandomNet, position: int, layer: Layer, shapes: list[list[int]]) -> None:
    p = layer.params
    name = f"layer{position}"
    module: torch.nn.Module | None = None
    if layer.op == "conv":
        module = torch.nn.Conv2d(
            p["in_channels"],
            p["out_channels"],
            kernel_size=tuple(p["kernel_size"]),
            stride=tuple(p["stride"]),
            padding=tuple(p["padding"]),
            dilation=tuple(p["dilation"]),
            groups=p["groups"],
            bias=p["bias"],
        )
    elif layer.op == "linear":
        module = torch.nn.Linear(p["in_features"], p["out_features"], bias=p["bias"])
    elif layer.op == "batch_norm":
        module = torch.nn.BatchNorm2d(p["channels"])
    elif layer.op == "layer_norm":
        module = torch.nn.LayerNorm(p["features"])
    elif layer.op == "dropout":
        module = torch.nn.Dropout(p["p"])
    elif layer.op == "binary_parameter":
        shape = broadcast_shape(shapes[layer.inputs[0]])
        net.register_parameter(name, torch.nn.Parameter(torch.empty(shape)))
    elif layer.op == "matmul_parameter":
        net.register_parameter(name, torch.nn.Parameter(torch.empty(p["k"], p["n"])))
    elif layer.op == "buffer":
        shape = broadcast_shape(shapes[layer.inputs[0]])
        net.register_buffer(f"buffer{position}", torch.empty(shape), persistent=p["persistent"])
    elif layer.op == "buffer_update":
        net.register_buffer(f"buffer{position}", torch.zeros(_update_shape(layer, shapes)))
    if module is not None:
        net.add_module(name, module)
    if "tied_to" in p:  # two modules holding the same Parameter
        owner = net.get_submodule(f"layer{p['tied_to']}")
        module_ = net.get_submodule(name)
        module_.weight = owner.weight


def _update_shape(layer: Layer, shapes: list[list[int]]) -> list[int]:
    shape = shapes[layer.inputs[0]]
    if layer.params["kind"] == "counter":
        return broadcast_shape(shape)
    return _statistics_shape(shape)


# --- forward, one function per op ---------------------------------------------------------

Apply = Callable[[RandomNet, int, Layer, list[Tensor]], Tensor]


def _module(net: RandomNet, position: int, layer: Layer, values: list[Tensor]) -> Tensor:
    return net.get_submodule(f"layer{position}")(values[layer.inputs[0]])


def _reuse(net: RandomNet, position: int, layer: Layer, values: list[Tensor]) -> Tensor:
    return net.get_submodule(f"layer{layer.params['layer']}")(values[layer.inputs[0]])


def _weight_matmul(net: RandomNet, position: int, layer: Layer, values: list[Tensor]) -> Tensor:
    weight = net.get_parameter(f"layer{layer.params['layer']}.weight")
    return values[layer.inputs[0]] @ weight


def _unary(net: RandomNet, position: int, layer: Layer, values: list[Tensor]) -> Tensor:
    return UNARY_OPS[layer.params["fn"]][0](values[layer.inputs[0]])


def _binary(net: RandomNet, position: int, layer: Layer, values: list[Tensor]) -> Tensor:
    a, b = (values[i] for i in layer.inputs)
    return BINARY_OPS[layer.params["fn"]][0](a, b)


def _binary_scalar(net: RandomNet, position: int, layer: Layer, values: list[Tensor]) -> Tensor:
    value = float(layer.params["value"])
    return BINARY_OPS[layer.params["fn"]][0](values[layer.inputs[0]], value)


def _binary_parameter(net: RandomNet, position: int, layer: Layer, values: list[Tensor]) -> Tensor:
    parameter = net.get_parameter(f"layer{position}")
    return BINARY_OPS[layer.params["fn"]][0](values[layer.inputs[0]], parameter)


def _matmul_parameter(net: RandomNet, position: int, layer: Layer, values: list[Tensor]) -> Tensor:
    return values[layer.inputs[0]] @ net.get_parameter(f"layer{position}")


def _matmul(net: RandomNet, position: int, layer: Layer, values: list[Tensor]) -> Tensor:
    a, b = (values[i] for i in layer.inputs)
    return a @ b.t() if layer.params["kind"] == "a_bt" else a.t() @ b


def _pool(net: RandomNet, position: int, layer: Layer, values: list[Tensor]) -> Tensor:
    p, x = layer.params, values[layer.inputs[0]]
    if p["kind"] == "adaptive_avg":
        return F.adaptive_avg_pool2d(x, p["output_size"])
    if p["kind"] == "max":
        return F.max_pool2d(x, p["kernel_size"], stride=p["stride"], padding=p["padding"])
    return F.avg_pool2d(
        x,
        p["kernel_size"],
        stride=p["stride"],
        padding=p["padding"],
        count_include_pad=p["count_include_pad"],
    )


def _softmax(net: RandomNet, position: int, layer: Layer, values: list[Tensor]) -> Tensor:
    function = torch.softmax if layer.params["kind"] == "softmax" else torch.log_softmax
    return function(values[layer.inputs[0]], dim=layer.params["dim"])


def _concat(net: RandomNet, position: int, layer: Layer, values: list[Tensor]) -> Tensor:
    return torch.cat([values[i] for i in layer.inputs], dim=layer.params["dim"])


def _slice(net: RandomNet, position: int, layer: Layer, values: list[Tensor]) -> Tensor:
    p = layer.params
    index = (slice(None),) * p["dim"] + (slice(p["start"], p["stop"], p["step"]),)
    return values[layer.inputs[0]][index]


def _permute(net: RandomNet, position: int, layer: Layer, values: list[Tensor]) -> Tensor:
    return values[layer.inputs[0]].permute(*layer.params["order"])


def _mean(net: RandomNet, position: int, layer: Layer, values: list[Tensor]) -> Tensor:
    p = layer.params
    return REDUCTIONS[p["kind"]](values[layer.inputs[0]], dim=p["dims"], keepdim=p["keepdim"])


def _flatten(net: RandomNet, position: int, layer: Layer, values: list[Tensor]) -> Tensor:
    return torch.flatten(values[layer.inputs[0]], 1)


def _buffer(net: RandomNet, position: int, layer: Layer, values: list[Tensor]) -> Tensor:
    buffer = net.get_buffer(f"buffer{position}")
    return BINARY_OPS[layer.params["fn"]][0](values[layer.inputs[0]], buffer)


def _buffer_update(net: RandomNet, position: int, layer: Layer, values: list[Tensor]) -> Tensor:
    buffer, x = net.get_buffer(f"buffer{position}"), values[layer.inputs[0]]
    if layer.params["kind"] == "counter":
        buffer.add_(1.0)
        return x + buffer
    momentum = RUNNING_MEAN_MOMENTUM
    mean = x.mean(dim=_statistics_dims(list(x.shape)), keepdim=True)
    if layer.params["kind"] == "assign":  # the attribute now holds a new tensor
        buffer = (1 - momentum) * buffer + momentum * mean
        setattr(net, f"buffer{position}", buffer)
        return x - buffer
    buffer.mul_(1 - momentum).add_(momentum * mean)
    return x - buffer


def _mutate(net: RandomNet, position: int, layer: Layer, values: list[Tensor]) -> Tensor:
    return MUTATION_OPS[layer.params["fn"]][0](values[layer.inputs[0]])


_APPLY: dict[str, Apply] = {
    "unary": _unary,
    "binary": _binary,
    "binary_scalar": _binary_scalar,
    "binary_parameter": _binary_parameter,
    "conv": _module,
    "linear": _module,
    "batch_norm": _module,
    "layer_norm": _module,
    "dropout": _module,
    "matmul_parameter": _matmul_parameter,
    "matmul": _matmul,
    "pool": _pool,
    "softmax": _softmax,
    "concat": _concat,
    "slice": _slice,
    "permute": _permute,
    "mean": _mean,
    "flatten": _flatten,
    "reuse": _reuse,
    "weight_matmul": _weight_matmul,
    "buffer": _buffer,
    "buffer_update": _buffer_update,
    "mutate": _mutate,
}


# --- building and initialising -----------------------------------------------------------


def build_model(spec: NetSpec) -> tuple[torch.nn.Module, list[Tensor]]:
    """The network of `spec` with seeded weights and buffers, in train mode if
    `spec.train` (eval otherwise), and seeded inputs."""
    model = RandomNet(spec)
    initialise(model, spec.seed)
    generator = torch.Generator().manual_seed(spec.seed + 1)
    inputs = [torch.randn(shape, generator=generator) for shape in spec.input_shapes]
    return model.train(spec.train), inputs


def initialise(model: torch.nn.Module, seed: int) -> None:
    """Seeded weights scaled by 1/sqrt(fan-in), so activations stay O(1) through the net."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            fan_in = math.prod(parameter.shape[1:]) if parameter.dim() > 1 else 1
            if name.endswith("weight") and parameter.dim() == 1:  # norm scales
                parameter.copy_(1 + 0.2 * torch.randn(parameter.shape, generator=generator))
                continue
            scale = 1 / math.sqrt(fan_in) if parameter.dim() > 1 else 0.5
            if parameter.dim() == 2 and not name.endswith("weight"):  # x @ W
                scale = 1 / math.sqrt(parameter.shape[0])
            parameter.copy_(scale * torch.randn(parameter.shape, generator=generator))
        for buffer_name, buffer in model.named_buffers():
            if buffer_name.endswith("running_mean"):
                buffer.copy_(0.2 * torch.randn(buffer.shape, generator=generator))
            elif buffer_name.endswith("running_var"):
                buffer.copy_(0.5 + torch.rand(buffer.shape, generator=generator))
            elif buffer.dtype == torch.float32:  # the spec's own buffers
                buffer.copy_(0.5 * torch.randn(buffer.shape, generator=generator))


# --- the same network as Python source ----------------------------------------------------


def model_source(spec: NetSpec) -> str:
    """Python source of `class RandomNet(torch.nn.Module)` for `spec` (torch in scope),
    the network `build_model` builds; for reading (reproducers), never run by polyfuse."""
    validate_net_spec(spec)
    init: list[str] = []
    body: list[str] = []
    shapes = spec.shapes
    inputs = [f"v{i}" for i in range(len(spec.input_shapes))]
    for position, layer in enumerate(spec.layers):
        value = f"v{len(spec.input_shapes) + position}"
        init += _init_source(position, layer, shapes)
        body += _forward_source(value, position, layer, shapes)
    outputs = _outputs_source(spec.output_structure, [f"v{i}" for i in spec.outputs])
    lines = [
        "class RandomNet(torch.nn.Module):",
        "    def __init__(self) -> None:",
        "        super().__init__()",
        *(f"        {line}" for line in init),
        "",
        f"    def forward(self, {', '.join(inputs)}):",
        *(f"        {line}" for line in body),
        f"        return {outputs}",
    ]
    return "\n".join(lines) + "\n"


def _init_source(position: int, layer: Layer, shapes: list[list[int]]) -> list[str]:
    p, module = layer.params, f"self.layer{position}"
    lines: list[str] = []
    if layer.op == "conv":
        lines.append(
            f"{module} = torch.nn.Conv2d({p['in_channels']}, {p['out_channels']}, "
            f"kernel_size={tuple(p['kernel_size'])}, stride={tuple(p['stride'])}, "
            f"padding={tuple(p['padding'])}, dilation={tuple(p['dilation'])}, "
            f"groups={p['groups']}, bias={p['bias']})"
        )
    elif layer.op == "linear":
        lines.append(
            f"{module} = torch.nn.Linear({p['in_features']}, {p['out_features']}, bias={p['bias']})"
        )
    elif layer.op == "batch_norm":
        lines.append(f"{module} = torch.nn.BatchNorm2d({p['channels']})")
    elif layer.op == "layer_norm":
        lines.append(f"{module} = torch.nn.LayerNorm({p['features']})")
    elif layer.op == "dropout":
        lines.append(f"{module} = torch.nn.Dropout({p['p']})")
    elif layer.op == "binary_parameter":
        shape = broadcast_shape(shapes[layer.inputs[0]])
        lines.append(f"{module} = torch.nn.Parameter(torch.empty({shape}))")
    elif layer.op == "matmul_parameter":
        lines.append(f"{module} = torch.nn.Parameter(torch.empty({[p['k'], p['n']]}))")
    elif layer.op == "buffer":
        shape = broadcast_shape(shapes[layer.inputs[0]])
        lines.append(
            f"self.register_buffer('buffer{position}', torch.empty({shape}), "
            f"persistent={p['persistent']})"
        )
    elif layer.op == "buffer_update":
        shape = _update_shape(layer, shapes)
        lines.append(f"self.register_buffer('buffer{position}', torch.zeros({shape}))")
    if "tied_to" in p:
        lines.append(f"{module}.weight = self.layer{p['tied_to']}.weight  # tied")
    return lines


def _forward_source(value: str, position: int, layer: Layer, shapes: list[list[int]]) -> list[str]:
    p = layer.params
    args = [f"v{i}" for i in layer.inputs]
    x = args[0]
    comment = f"  # {list(layer.shape)}"
    if layer.op in ("conv", "linear", "batch_norm", "layer_norm", "dropout"):
        expression = f"self.layer{position}({x})"
    elif layer.op == "reuse":
        expression = f"self.layer{p['layer']}({x})  # applied again"
    elif layer.op == "weight_matmul":
        expression = f"{x} @ self.layer{p['layer']}.weight  # the weight used again"
    elif layer.op == "unary":
        expression = UNARY_OPS[p["fn"]][1].format(x=x)
    elif layer.op == "binary":
        expression = f"{args[0]} {BINARY_OPS[p['fn']][1]} {args[1]}"
    elif layer.op == "binary_scalar":
        expression = f"{x} {BINARY_OPS[p['fn']][1]} {float(p['value'])!r}"
    elif layer.op == "binary_parameter":
        expression = f"{x} {BINARY_OPS[p['fn']][1]} self.layer{position}"
    elif layer.op == "matmul_parameter":
        expression = f"{x} @ self.layer{position}"
    elif layer.op == "matmul":
        a, b = args
        expression = f"{a} @ {b}.t()" if p["kind"] == "a_bt" else f"{a}.t() @ {b}"
    elif layer.op == "pool":
        expression = _pool_source(p, x)
    elif layer.op == "softmax":
        expression = f"torch.{p['kind']}({x}, dim={p['dim']})"
    elif layer.op == "concat":
        expression = f"torch.cat([{', '.join(args)}], dim={p['dim']})"
    elif layer.op == "slice":
        index = ", ".join([":"] * p["dim"] + [f"{p['start']}:{p['stop']}:{p['step']}"])
        expression = f"{x}[{index}]"
    elif layer.op == "permute":
        expression = f"{x}.permute({', '.join(map(str, p['order']))})"
    elif layer.op == "mean":
        expression = f"torch.{p['kind']}({x}, dim={p['dims']}, keepdim={p['keepdim']})"
    elif layer.op == "flatten":
        expression = f"torch.flatten({x}, 1)"
    elif layer.op == "buffer":
        expression = f"{x} {BINARY_OPS[p['fn']][1]} self.buffer{position}"
    elif layer.op == "buffer_update":
        buffer = f"self.buffer{position}"
        if p["kind"] == "counter":
            return [f"{buffer}.add_(1.0)", f"{value} = {x} + {buffer}{comment}"]
        dims = _statistics_dims(shapes[layer.inputs[0]])
        momentum = RUNNING_MEAN_MOMENTUM
        mean = f"{x}.mean(dim={dims}, keepdim=True)"
        update = f"{buffer}.mul_({1 - momentum}).add_({momentum} * {mean})"
        if p["kind"] == "assign":
            update = f"{buffer} = {1 - momentum} * {buffer} + {momentum} * {mean}"
        return [update, f"{value} = {x} - {buffer}{comment}"]
    elif layer.op == "mutate":
        return [f"{x}.{MUTATION_OPS[p['fn']][1]}  # in place", f"{value} = {x}{comment}"]
    else:
        raise AssertionError(f"op {layer.op} has no source")  # validate_net_spec checked it
    return [f"{value} = {expression}{comment}"]


def _pool_source(p: dict[str, Any], x: str) -> str:
    functional = "torch.nn.functional"
    if p["kind"] == "adaptive_avg":
        return f"{functional}.adaptive_avg_pool2d({x}, {p['output_size']})"
    common = f"{p['kernel_size']}, stride={p['stride']}, padding={p['padding']}"
    if p["kind"] == "max":
        return f"{functional}.max_pool2d({x}, {common})"
    return f"{functional}.avg_pool2d({x}, {common}, count_include_pad={p['count_include_pad']})"


def _outputs_source(structure: str, outputs: list[str]) -> str:
    if structure == "tuple":
        return f"({', '.join(outputs)},)"
    if structure == "list":
        return f"[{', '.join(outputs)}]"
    if structure == "dict":
        return "{" + ", ".join(f"'out{i}': {v}" for i, v in enumerate(outputs)) + "}"
    if structure == "nested":
        return (
            f"({outputs[0]}, [({', '.join(outputs[1:])}{',' if outputs[1:] else ''}), "
            f"{{'last': {outputs[-1]}}}])"
        )
    return outputs[0] if len(outputs) == 1 else f"({', '.join(outputs)})"
