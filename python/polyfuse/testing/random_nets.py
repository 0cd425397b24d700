"""Random networks and random targets for fuzzing polyfuse end to end.

A `NetSpec` is plain data: input shapes and a list of layers, each reading earlier
values (a DAG). `model_source(spec)` turns it into the Python source of an `nn.Module`
(conv with random kernel/stride/padding/dilation/groups, linear, matmul, elementwise,
pooling, softmax, batch/layer norm, residual adds, concats, permutes, slices), and
`build_model` executes that same source, so a saved reproducer shows exactly the model
that failed. A `TargetSpec` is a random accelerator: scratchpad size, PE array, vector
width, DRAM bandwidth.

Generation is written once against a `Chooser`: `RandomChooser` (seeded, for
`bench/fuzz.py`) and `HypothesisChooser` (inside `st.composite`, so hypothesis can
shrink a failing network) drive the same code.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, TypeVar

import torch

from polyfuse.targets import Target
from polyfuse.targets.target import DATAFLOWS, target_from_dict

T = TypeVar("T")

# Limits that keep one case to well under a second of compile + emulation.
MAX_CHANNELS = 16
MAX_SPATIAL = 16
MAX_FEATURES = 48
MAX_ELEMENTS = 4096

UNARY_OPS: dict[str, str] = {
    "relu": "torch.relu({x})",
    "relu6": "torch.nn.functional.relu6({x})",
    "gelu": "torch.nn.functional.gelu({x})",
    "gelu_tanh": "torch.nn.functional.gelu({x}, approximate='tanh')",
    "silu": "torch.nn.functional.silu({x})",
    "sigmoid": "torch.sigmoid({x})",
    "tanh": "torch.tanh({x})",
    "hardswish": "torch.nn.functional.hardswish({x})",
    "hardsigmoid": "torch.nn.functional.hardsigmoid({x})",
    "leaky_relu": "torch.nn.functional.leaky_relu({x}, 0.1)",
    "neg": "-{x}",
    "abs": "torch.abs({x})",
    "clamp": "torch.clamp({x}, -0.5, 0.75)",
    "square": "{x} * {x}",
    "scale_shift": "{x} * 0.5 + 0.25",
    "div_scalar": "{x} / 3.0",
}
BINARY_OPS: dict[str, str] = {"add": "+", "sub": "-", "mul": "*"}


class Chooser(Protocol):
    """Where the generator's random decisions come from."""

    def integer(self, low: int, high: int) -> int:
        """An integer in [low, high]."""
        ...

    def choice(self, options: Sequence[T]) -> T:
        """One of `options` (not empty)."""
        ...


class RandomChooser:
    """Decisions from a seeded `random.Random` (reproducible by seed)."""

    def __init__(self, seed: int | str) -> None:
        self.random = random.Random(seed)

    def integer(self, low: int, high: int) -> int:
        return self.random.randint(low, high)

    def choice(self, options: Sequence[T]) -> T:
        return options[self.random.randrange(len(options))]


class HypothesisChooser:
    """Decisions drawn from hypothesis strategies (shrinkable)."""

    def __init__(self, draw: Callable[[Any], Any]) -> None:
        self.draw = draw

    def integer(self, low: int, high: int) -> int:
        from hypothesis import strategies as st

        return int(self.draw(st.integers(low, high)))

    def choice(self, options: Sequence[T]) -> T:
        from hypothesis import strategies as st

        return options[int(self.draw(st.integers(0, len(options) - 1)))]


@dataclass
class Layer:
    """One layer: `op`, the indices of the values it reads, its parameters, its result shape."""

    op: str
    inputs: list[int]
    params: dict[str, Any]
    shape: list[int]


@dataclass
class NetSpec:
    """A random network: values 0..len(input_shapes)-1 are inputs, then one per layer."""

    input_shapes: list[list[int]]
    layers: list[Layer]
    outputs: list[int]
    seed: int = 0

    @property
    def shapes(self) -> list[list[int]]:
        return [*self.input_shapes, *(layer.shape for layer in self.layers)]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> NetSpec:
        data = json.loads(text)
        layers = [Layer(**layer) for layer in data.pop("layers")]
        return NetSpec(layers=layers, **data)


@dataclass
class TargetSpec:
    """A random accelerator (the fields of a target TOML file that matter to the compiler)."""

    scratchpad_bytes: int
    pe_rows: int = 32
    pe_cols: int = 32
    dataflow: str = "weight-stationary"
    vector_width: int = 32
    dram_bytes_per_cycle: float = 16.0
    dma_latency_cycles: int = 100

    def to_dict(self) -> dict[str, Any]:
        """The target file's contents, as parsed TOML."""
        return {
            "name": f"fuzz-{self.scratchpad_bytes}",
            "description": "random target from polyfuse.testing.random_nets",
            "clock": {"mhz": 1000},
            "scratchpad": {"bytes": self.scratchpad_bytes},
            "dram": {
                "bytes_per_cycle": self.dram_bytes_per_cycle,
                "latency_cycles": self.dma_latency_cycles,
            },
            "pe_array": {"rows": self.pe_rows, "cols": self.pe_cols, "dataflow": self.dataflow},
            "vector": {"width": self.vector_width},
            "types": {"inputs": ["float32"], "accumulator": "float32"},
        }

    def to_toml(self) -> str:
        data = self.to_dict()
        lines = [f'name = "{data["name"]}"', f'description = "{data["description"]}"']
        for table in ("clock", "scratchpad", "dram", "pe_array", "vector", "types"):
            lines.append(f"\n[{table}]")
            for key, value in data[table].items():
                lines.append(f"{key} = {json.dumps(value)}")
        return "\n".join(lines) + "\n"

    def with_scratchpad(self, scratchpad_bytes: int) -> TargetSpec:
        return TargetSpec(**{**asdict(self), "scratchpad_bytes": scratchpad_bytes})

    def target(self) -> Target:
        return target_from_dict(self.to_dict(), source=f"<random target {self.scratchpad_bytes}>")


# --- generation ------------------------------------------------------------------------


def _elements(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def generate_net(chooser: Chooser, max_layers: int = 6, seed: int = 0) -> NetSpec:
    """A random network of 1..max_layers layers."""
    rank = chooser.choice([4, 4, 4, 2])
    if rank == 4:
        first = [
            chooser.integer(1, 2),
            chooser.integer(1, 8),
            chooser.integer(1, MAX_SPATIAL),
            chooser.integer(1, MAX_SPATIAL),
        ]
    else:
        first = [chooser.integer(1, 8), chooser.integer(1, MAX_FEATURES)]
    input_shapes = [first]
    if chooser.integer(0, 3) == 0:  # a second input of the same shape
        input_shapes.append(list(first))
    spec = NetSpec(input_shapes=input_shapes, layers=[], outputs=[], seed=seed)
    for _ in range(chooser.integer(1, max_layers)):
        spec.layers.append(_generate_layer(chooser, spec.shapes))
    count = len(spec.shapes)
    spec.outputs = [count - 1]
    if len(spec.layers) > 1 and chooser.integer(0, 3) == 0:
        extra = chooser.integer(len(input_shapes), count - 2)
        spec.outputs.append(extra)
    return spec


def _generate_layer(chooser: Chooser, shapes: list[list[int]]) -> Layer:
    # Later values are likelier inputs, so the network gets deep rather than wide.
    index = max(chooser.integer(0, len(shapes) - 1), chooser.integer(0, len(shapes) - 1))
    shape = shapes[index]
    options = ["unary", "unary", "binary", "softmax", "concat", "slice", "permute"]
    if len(shape) == 4:
        options += ["conv", "conv", "conv", "pool", "pool", "mean", "batch_norm"]
        if _elements(shape[1:]) <= 256:
            options.append("flatten")
    else:
        options += ["linear", "linear", "matmul", "matmul", "layer_norm", "mean"]
    op = chooser.choice(options)
    layer = _LAYER_GENERATORS[op](chooser, shapes, index)
    if layer is None or _elements(layer.shape) > MAX_ELEMENTS or min(layer.shape) < 1:
        return Layer("unary", [index], {"fn": chooser.choice(list(UNARY_OPS))}, list(shape))
    return layer


def _unary(chooser: Chooser, shapes: list[list[int]], index: int) -> Layer:
    return Layer("unary", [index], {"fn": chooser.choice(list(UNARY_OPS))}, list(shapes[index]))


def _binary(chooser: Chooser, shapes: list[list[int]], index: int) -> Layer | None:
    shape = shapes[index]
    same = [i for i, s in enumerate(shapes) if s == shape]
    other_kind = chooser.choice(["value", "value", "parameter", "scalar"])
    fn = chooser.choice(list(BINARY_OPS))
    if other_kind == "value":  # a residual connection (possibly x + x)
        return Layer("binary", [index, chooser.choice(same)], {"fn": fn}, list(shape))
    if other_kind == "parameter":  # broadcast along channels (4D) or features (2D)
        return Layer("binary_parameter", [index], {"fn": fn}, list(shape))
    return Layer("binary_scalar", [index], {"fn": fn, "value": 0.5}, list(shape))


def _conv(chooser: Chooser, shapes: list[list[int]], index: int) -> Layer | None:
    n, cin, h, w = shapes[index]
    groups = chooser.choice(_divisors(cin))
    cout = groups * chooser.integer(1, max(1, MAX_CHANNELS // groups))
    if chooser.integer(0, 2) == 0:  # "same" convolution: a residual add can follow
        kernel = chooser.choice([1, 3, 5])
        kernels, strides, paddings, dilations = [kernel] * 2, [1, 1], [kernel // 2] * 2, [1, 1]
    else:
        kernels = [chooser.integer(1, 5), chooser.integer(1, 5)]
        strides = [chooser.integer(1, 3), chooser.integer(1, 3)]
        paddings = [chooser.integer(0, 2), chooser.integer(0, 2)]
        dilations = [chooser.choice([1, 1, 1, 2]), chooser.choice([1, 1, 1, 2])]
    out = [
        _conv_out(size, kernels[d], strides[d], paddings[d], dilations[d])
        for d, size in enumerate((h, w))
    ]
    if min(out) < 1:
        return None
    params = {
        "in_channels": cin,
        "out_channels": cout,
        "kernel_size": kernels,
        "stride": strides,
        "padding": paddings,
        "dilation": dilations,
        "groups": groups,
        "bias": bool(chooser.integer(0, 1)),
    }
    return Layer("conv", [index], params, [n, cout, *out])


def _pool(chooser: Chooser, shapes: list[list[int]], index: int) -> Layer | None:
    n, c, h, w = shapes[index]
    kind = chooser.choice(["max", "avg", "avg", "adaptive_avg"])
    if kind == "adaptive_avg":
        size = chooser.choice([d for d in _divisors(min(h, w)) if h % d == 0 and w % d == 0])
        return Layer("pool", [index], {"kind": kind, "output_size": size}, [n, c, size, size])
    kernel = chooser.integer(1, 3)
    stride = chooser.integer(1, 3)
    padding = chooser.integer(0, kernel // 2)
    out = [_conv_out(size, kernel, stride, padding, 1) for size in (h, w)]
    if min(out) < 1:
        return None
    params = {"kind": kind, "kernel_size": kernel, "stride": stride, "padding": padding}
    if kind == "avg":
        params["count_include_pad"] = bool(chooser.integer(0, 1))
    return Layer("pool", [index], params, [n, c, *out])


def _softmax(chooser: Chooser, shapes: list[list[int]], index: int) -> Layer:
    shape = shapes[index]
    dim = chooser.integer(0, len(shape) - 1)
    kind = chooser.choice(["softmax", "softmax", "log_softmax"])
    return Layer("softmax", [index], {"dim": dim, "kind": kind}, list(shape))


def _concat(chooser: Chooser, shapes: list[list[int]], index: int) -> Layer | None:
    shape = shapes[index]
    dim = chooser.integer(0, len(shape) - 1)
    compatible = [
        i
        for i, s in enumerate(shapes)
        if len(s) == len(shape)
        and all(a == b for d, (a, b) in enumerate(zip(s, shape, strict=True)) if d != dim)
    ]
    other = chooser.choice(compatible)
    result = list(shape)
    result[dim] += shapes[other][dim]
    order = [index, other] if chooser.integer(0, 1) else [other, index]
    return Layer("concat", order, {"dim": dim}, result)


def _slice(chooser: Chooser, shapes: list[list[int]], index: int) -> Layer | None:
    shape = shapes[index]
    dim = chooser.integer(0, len(shape) - 1)
    if shape[dim] < 2:
        return None
    start = chooser.integer(0, shape[dim] - 1)
    stop = chooser.integer(start + 1, shape[dim])
    step = chooser.integer(1, 2)
    result = list(shape)
    result[dim] = len(range(start, stop, step))
    return Layer("slice", [index], {"dim": dim, "start": start, "stop": stop, "step": step}, result)


def _permute(chooser: Chooser, shapes: list[list[int]], index: int) -> Layer:
    shape = shapes[index]
    order = list(range(len(shape)))
    for position in range(len(order) - 1, 0, -1):  # Fisher-Yates through the chooser
        other = chooser.integer(0, position)
        order[position], order[other] = order[other], order[position]
    return Layer("permute", [index], {"order": order}, [shape[d] for d in order])


def _mean(chooser: Chooser, shapes: list[list[int]], index: int) -> Layer:
    shape = shapes[index]
    global_pool = len(shape) == 4 and bool(chooser.integer(0, 1))
    dims = [2, 3] if global_pool else [len(shape) - 1]
    # Values stay 4D or 2D: only a global pool may drop its dims.
    keepdim = not global_pool or bool(chooser.integer(0, 1))
    kind = chooser.choice(["mean", "sum", "amax"])
    result = [1 if d in dims else size for d, size in enumerate(shape)]
    if not keepdim:
        result = [size for d, size in enumerate(shape) if d not in dims]
    return Layer("mean", [index], {"dims": dims, "keepdim": keepdim, "kind": kind}, result)


def _batch_norm(chooser: Chooser, shapes: list[list[int]], index: int) -> Layer:
    return Layer("batch_norm", [index], {"channels": shapes[index][1]}, list(shapes[index]))


def _flatten(chooser: Chooser, shapes: list[list[int]], index: int) -> Layer:
    n, c, h, w = shapes[index]
    return Layer("flatten", [index], {}, [n, c * h * w])


def _linear(chooser: Chooser, shapes: list[list[int]], index: int) -> Layer:
    rows, features = shapes[index]
    out = chooser.integer(1, MAX_FEATURES)
    params = {"in_features": features, "out_features": out, "bias": bool(chooser.integer(0, 1))}
    return Layer("linear", [index], params, [rows, out])


def _matmul(chooser: Chooser, shapes: list[list[int]], index: int) -> Layer | None:
    m, k = shapes[index]
    kind = chooser.choice(["a_bt", "at_b", "parameter"])
    if kind == "parameter":
        n = chooser.integer(1, MAX_FEATURES)
        return Layer("matmul_parameter", [index], {"k": k, "n": n}, [m, n])
    if kind == "a_bt":  # a @ b.T: attention scores
        others = [i for i, s in enumerate(shapes) if len(s) == 2 and s[1] == k]
        other = chooser.choice(others)
        return Layer("matmul", [index, other], {"kind": kind}, [m, shapes[other][0]])
    others = [i for i, s in enumerate(shapes) if len(s) == 2 and s[0] == m]
    other = chooser.choice(others)
    return Layer("matmul", [index, other], {"kind": kind}, [k, shapes[other][1]])


def _layer_norm(chooser: Chooser, shapes: list[list[int]], index: int) -> Layer:
    shape = shapes[index]
    return Layer("layer_norm", [index], {"features": shape[-1]}, list(shape))


_LAYER_GENERATORS: dict[str, Callable[[Chooser, list[list[int]], int], Layer | None]] = {
    "unary": _unary,
    "binary": _binary,
    "conv": _conv,
    "pool": _pool,
    "softmax": _softmax,
    "concat": _concat,
    "slice": _slice,
    "permute": _permute,
    "mean": _mean,
    "batch_norm": _batch_norm,
    "flatten": _flatten,
    "linear": _linear,
    "matmul": _matmul,
    "layer_norm": _layer_norm,
}


def generate_target(chooser: Chooser) -> TargetSpec:
    """A random target; its scratchpad may be too small (see `fuzz.run_case`)."""
    exponent = chooser.integer(6, 19)  # 64 B .. 512 KiB, log-uniform
    scratchpad = 2**exponent + 4 * chooser.integer(0, 2 ** (exponent - 2) - 1)
    return TargetSpec(
        scratchpad_bytes=scratchpad,
        pe_rows=chooser.choice([1, 2, 4, 8, 16, 32]),
        pe_cols=chooser.choice([1, 3, 4, 8, 16, 32]),
        dataflow=chooser.choice(list(DATAFLOWS)),
        vector_width=chooser.choice([1, 4, 8, 16, 32]),
        dram_bytes_per_cycle=chooser.choice([1.0, 4.0, 16.0, 64.0]),
        dma_latency_cycles=chooser.choice([0, 20, 100]),
    )


# --- the model as Python source ----------------------------------------------------------


def model_source(spec: NetSpec) -> str:
    """Python source of `class RandomNet(nn.Module)` for `spec` (torch in scope)."""
    init: list[str] = []
    body: list[str] = []
    inputs = [f"v{i}" for i in range(len(spec.input_shapes))]
    for position, layer in enumerate(spec.layers):
        name = f"v{len(spec.input_shapes) + position}"
        args = [f"v{i}" for i in layer.inputs]
        p = layer.params
        module = f"self.layer{position}"
        if layer.op == "conv":
            init.append(
                f"{module} = torch.nn.Conv2d({p['in_channels']}, {p['out_channels']}, "
                f"kernel_size={tuple(p['kernel_size'])}, stride={tuple(p['stride'])}, "
                f"padding={tuple(p['padding'])}, dilation={tuple(p['dilation'])}, "
                f"groups={p['groups']}, bias={p['bias']})"
            )
            expression = f"{module}({args[0]})"
        elif layer.op == "linear":
            init.append(
                f"{module} = torch.nn.Linear({p['in_features']}, {p['out_features']}, "
                f"bias={p['bias']})"
            )
            expression = f"{module}({args[0]})"
        elif layer.op == "batch_norm":
            init.append(f"{module} = torch.nn.BatchNorm2d({p['channels']})")
            expression = f"{module}({args[0]})"
        elif layer.op == "layer_norm":
            init.append(f"{module} = torch.nn.LayerNorm({p['features']})")
            expression = f"{module}({args[0]})"
        elif layer.op == "unary":
            expression = UNARY_OPS[p["fn"]].format(x=args[0])
        elif layer.op == "binary":
            expression = f"{args[0]} {BINARY_OPS[p['fn']]} {args[1]}"
        elif layer.op == "binary_scalar":
            expression = f"{args[0]} {BINARY_OPS[p['fn']]} {p['value']}"
        elif layer.op == "binary_parameter":
            shape = spec.shapes[layer.inputs[0]]
            broadcast = [1, shape[1], 1, 1] if len(shape) == 4 else [shape[-1]]
            init.append(f"{module} = torch.nn.Parameter(torch.empty({broadcast}))")
            expression = f"{args[0]} {BINARY_OPS[p['fn']]} {module}"
        elif layer.op == "matmul_parameter":
            init.append(f"{module} = torch.nn.Parameter(torch.empty({[p['k'], p['n']]}))")
            expression = f"{args[0]} @ {module}"
        elif layer.op == "matmul":
            a, b = args
            expression = f"{a} @ {b}.t()" if p["kind"] == "a_bt" else f"{a}.t() @ {b}"
        elif layer.op == "pool":
            expression = _pool_source(p, args[0])
        elif layer.op == "softmax":
            expression = f"torch.{p['kind']}({args[0]}, dim={p['dim']})"
        elif layer.op == "concat":
            expression = f"torch.cat([{', '.join(args)}], dim={p['dim']})"
        elif layer.op == "slice":
            index = ", ".join([":"] * p["dim"] + [f"{p['start']}:{p['stop']}:{p['step']}"])
            expression = f"{args[0]}[{index}]"
        elif layer.op == "permute":
            expression = f"{args[0]}.permute({', '.join(map(str, p['order']))})"
        elif layer.op == "mean":
            expression = f"torch.{p['kind']}({args[0]}, dim={p['dims']}, keepdim={p['keepdim']})"
        elif layer.op == "flatten":
            expression = f"torch.flatten({args[0]}, 1)"
        else:
            raise ValueError(f"unknown layer op '{layer.op}'")
        body.append(f"{name} = {expression}  # {list(layer.shape)}")
    outputs = ", ".join(f"v{i}" for i in spec.outputs)
    if len(spec.outputs) > 1:
        outputs = f"({outputs})"
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


def _pool_source(p: dict[str, Any], x: str) -> str:
    functional = "torch.nn.functional"
    if p["kind"] == "adaptive_avg":
        return f"{functional}.adaptive_avg_pool2d({x}, {p['output_size']})"
    common = f"{p['kernel_size']}, stride={p['stride']}, padding={p['padding']}"
    if p["kind"] == "max":
        return f"{functional}.max_pool2d({x}, {common})"
    return f"{functional}.avg_pool2d({x}, {common}, count_include_pad={p['count_include_pad']})"


def build_model(spec: NetSpec) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    """The network of `spec` in eval mode with seeded weights, and seeded inputs."""
    namespace: dict[str, Any] = {"torch": torch}
    exec(compile(model_source(spec), "<random_nets.model_source>", "exec"), namespace)
    model: torch.nn.Module = namespace["RandomNet"]()
    initialise(model, spec.seed)
    generator = torch.Generator().manual_seed(spec.seed + 1)
    inputs = [torch.randn(shape, generator=generator) for shape in spec.input_shapes]
    return model.eval(), inputs


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


def net_specs(max_layers: int = 6) -> Any:
    """A hypothesis strategy of `NetSpec`s."""
    from hypothesis import strategies as st

    @st.composite
    def strategy(draw: Callable[[Any], Any]) -> NetSpec:
        seed = draw(st.integers(0, 2**16))
        return generate_net(HypothesisChooser(draw), max_layers, seed)

    return strategy()


def target_specs() -> Any:
    """A hypothesis strategy of `TargetSpec`s."""
    from hypothesis import strategies as st

    @st.composite
    def strategy(draw: Callable[[Any], Any]) -> TargetSpec:
        return generate_target(HypothesisChooser(draw))

    return strategy()
