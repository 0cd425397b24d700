"""Random networks, random targets and random call plans for fuzzing polyfuse end to end.

A `NetSpec` (polyfuse.testing.net_spec) is plain data: input shapes and a list of layers,
each reading earlier values (a DAG): conv with random kernel/stride/padding/dilation/groups,
linear, matmul, elementwise, pooling, softmax, batch/layer norm, residual adds, concats,
permutes, slices; and the patterns users write that a plain feed-forward net lacks: a layer
applied twice, a weight used again transposed (an LM head tied to an embedding), two modules
holding one Parameter, registered buffers read in forward and buffers forward updates,
in-place updates of inputs and intermediates, dropout, outputs in a dict, list or nested
tuple, inputs returned as outputs, train mode. `build_model` (polyfuse.testing.net_builder)
builds the model from the validated spec. A `CallPlan` says how a case calls the compiled
model (several calls, two threads at once, a wrong input, non-contiguous inputs, inputs
that require grad). A
`TargetSpec` is a random accelerator: scratchpad size, PE array, vector width, DRAM
bandwidth.

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

from polyfuse.targets import Target
from polyfuse.targets.target import DATAFLOWS, target_from_dict
from polyfuse.testing.net_builder import UNARY_OPS, build_model, initialise, model_source
from polyfuse.testing.net_spec import (
    BINARY_FUNCTIONS,
    BUFFER_UPDATES,
    MUTATIONS,
    OUTPUT_STRUCTURES,
    UNARY_FUNCTIONS,
    WRONG_INPUTS,
    CallPlan,
    Layer,
    NetSpec,
    NetSpecError,
    case_patterns,
)

__all__ = [
    "UNARY_OPS",
    "CallPlan",
    "Layer",
    "NetSpec",
    "NetSpecError",
    "TargetSpec",
    "build_model",
    "case_patterns",
    "generate_calls",
    "generate_net",
    "generate_target",
    "initialise",
    "model_source",
]

T = TypeVar("T")

# Limits that keep one case to well under a second of compile + emulation.
MAX_CHANNELS = 16
MAX_SPATIAL = 16
MAX_FEATURES = 48
MAX_ELEMENTS = 4096


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


def generate_net(
    chooser: Chooser, max_layers: int = 6, seed: int = 0, patterns: bool = True
) -> NetSpec:
    """A random network of 1..max_layers layers; with `patterns`, two cases in three also
    use the user patterns of the module docstring (the third stays a plain network)."""
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
    patterns = patterns and chooser.integer(0, 2) != 0
    spec = NetSpec(input_shapes=input_shapes, layers=[], outputs=[], seed=seed)
    for _ in range(chooser.integer(1, max_layers)):
        spec.layers.append(_generate_layer(chooser, spec, patterns))
    count = len(spec.shapes)
    spec.outputs = [count - 1]
    if len(spec.layers) > 1 and chooser.integer(0, 3) == 0:
        extra = chooser.integer(len(input_shapes), count - 2)
        spec.outputs.append(extra)
    if not patterns:
        return spec
    if chooser.integer(0, 7) == 0:  # an input, or an output again, returned as it is
        spec.outputs.append(chooser.choice([0, spec.outputs[0]]))
    spec.output_structure = chooser.choice(["auto"] * 12 + list(OUTPUT_STRUCTURES[1:]))
    spec.train = chooser.integer(0, 7) == 0 and _trainable(spec)
    return spec


def generate_calls(chooser: Chooser, spec: NetSpec, patterns: bool = True) -> CallPlan:
    """How a case calls `spec`'s compiled model: once, unless `patterns` (then sometimes
    2-3 times, from two threads, once with a wrong input, with non-contiguous inputs or
    inputs that require grad)."""
    if not patterns:
        return CallPlan()
    return CallPlan(
        calls=chooser.choice([1, 1, 2, 3]),
        threads=chooser.integer(0, 5) == 0,
        wrong_input=chooser.choice(WRONG_INPUTS) if chooser.integer(0, 5) == 0 else "",
        non_contiguous=chooser.integer(0, 7) == 0,
        requires_grad=chooser.integer(0, 7) == 0,
    )


def _trainable(spec: NetSpec) -> bool:
    """True when eager PyTorch can run `spec` in train mode: every batch norm sees more
    than one value per channel."""
    shapes = spec.shapes
    for layer in spec.layers:
        norm = layer.op == "batch_norm" or (
            layer.op == "reuse" and spec.layers[layer.params["layer"]].op == "batch_norm"
        )
        if norm and _elements(shapes[layer.inputs[0]]) // shapes[layer.inputs[0]][1] < 2:
            return False
    return True


def _generate_layer(chooser: Chooser, spec: NetSpec, patterns: bool) -> Layer:
    shapes = spec.shapes
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
    if patterns:
        options += ["reuse", "reuse", "reuse", "tied", "tied", "buffer", "buffer_update"]
        options += ["mutate", "mutate", "dropout"]
        if len(shape) == 2:
            options += ["weight_matmul", "weight_matmul"]
    op = chooser.choice(options)
    layer = _LAYER_GENERATORS[op](chooser, spec, index)
    if layer is None or _elements(layer.shape) > MAX_ELEMENTS or min(layer.shape) < 1:
        return Layer("unary", [index], {"fn": chooser.choice(UNARY_FUNCTIONS)}, list(shape))
    return layer


def _unary(chooser: Chooser, spec: NetSpec, index: int) -> Layer:
    return Layer(
        "unary", [index], {"fn": chooser.choice(UNARY_FUNCTIONS)}, list(spec.shapes[index])
    )


def _binary(chooser: Chooser, spec: NetSpec, index: int) -> Layer | None:
    shape = spec.shapes[index]
    same = [i for i, s in enumerate(spec.shapes) if s == shape]
    other_kind = chooser.choice(["value", "value", "parameter", "scalar"])
    fn = chooser.choice(BINARY_FUNCTIONS)
    if other_kind == "value":  # a residual connection (possibly x + x)
        return Layer("binary", [index, chooser.choice(same)], {"fn": fn}, list(shape))
    if other_kind == "parameter":  # broadcast along channels (4D) or features (2D)
        return Layer("binary_parameter", [index], {"fn": fn}, list(shape))
    return Layer("binary_scalar", [index], {"fn": fn, "value": 0.5}, list(shape))


def _conv(chooser: Chooser, spec: NetSpec, index: int) -> Layer | None:
    n, cin, h, w = spec.shapes[index]
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


def _pool(chooser: Chooser, spec: NetSpec, index: int) -> Layer | None:
    n, c, h, w = spec.shapes[index]
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


def _softmax(chooser: Chooser, spec: NetSpec, index: int) -> Layer:
    shape = spec.shapes[index]
    dim = chooser.integer(0, len(shape) - 1)
    kind = chooser.choice(["softmax", "softmax", "log_softmax"])
    return Layer("softmax", [index], {"dim": dim, "kind": kind}, list(shape))


def _concat(chooser: Chooser, spec: NetSpec, index: int) -> Layer | None:
    shape = spec.shapes[index]
    dim = chooser.integer(0, len(shape) - 1)
    compatible = [
        i
        for i, s in enumerate(spec.shapes)
        if len(s) == len(shape)
        and all(a == b for d, (a, b) in enumerate(zip(s, shape, strict=True)) if d != dim)
    ]
    other = chooser.choice(compatible)
    result = list(shape)
    result[dim] += spec.shapes[other][dim]
    order = [index, other] if chooser.integer(0, 1) else [other, index]
    return Layer("concat", order, {"dim": dim}, result)


def _slice(chooser: Chooser, spec: NetSpec, index: int) -> Layer | None:
    shape = spec.shapes[index]
    dim = chooser.integer(0, len(shape) - 1)
    if shape[dim] < 2:
        return None
    start = chooser.integer(0, shape[dim] - 1)
    stop = chooser.integer(start + 1, shape[dim])
    step = chooser.integer(1, 2)
    result = list(shape)
    result[dim] = len(range(start, stop, step))
    return Layer("slice", [index], {"dim": dim, "start": start, "stop": stop, "step": step}, result)


def _permute(chooser: Chooser, spec: NetSpec, index: int) -> Layer:
    shape = spec.shapes[index]
    order = list(range(len(shape)))
    for position in range(len(order) - 1, 0, -1):  # Fisher-Yates through the chooser
        other = chooser.integer(0, position)
        order[position], order[other] = order[other], order[position]
    return Layer("permute", [index], {"order": order}, [shape[d] for d in order])


def _mean(chooser: Chooser, spec: NetSpec, index: int) -> Layer:
    shape = spec.shapes[index]
    global_pool = len(shape) == 4 and bool(chooser.integer(0, 1))
    dims = [2, 3] if global_pool else [len(shape) - 1]
    # Values stay 4D or 2D: only a global pool may drop its dims.
    keepdim = not global_pool or bool(chooser.integer(0, 1))
    kind = chooser.choice(["mean", "sum", "amax"])
    result = [1 if d in dims else size for d, size in enumerate(shape)]
    if not keepdim:
        result = [size for d, size in enumerate(shape) if d not in dims]
    return Layer("mean", [index], {"dims": dims, "keepdim": keepdim, "kind": kind}, result)


def _batch_norm(chooser: Chooser, spec: NetSpec, index: int) -> Layer:
    return Layer(
        "batch_norm", [index], {"channels": spec.shapes[index][1]}, list(spec.shapes[index])
    )


def _flatten(chooser: Chooser, spec: NetSpec, index: int) -> Layer:
    n, c, h, w = spec.shapes[index]
    return Layer("flatten", [index], {}, [n, c * h * w])


def _linear(chooser: Chooser, spec: NetSpec, index: int) -> Layer:
    rows, features = spec.shapes[index]
    out = chooser.integer(1, MAX_FEATURES)
    params = {"in_features": features, "out_features": out, "bias": bool(chooser.integer(0, 1))}
    return Layer("linear", [index], params, [rows, out])


def _matmul(chooser: Chooser, spec: NetSpec, index: int) -> Layer | None:
    m, k = spec.shapes[index]
    kind = chooser.choice(["a_bt", "at_b", "parameter"])
    if kind == "parameter":
        n = chooser.integer(1, MAX_FEATURES)
        return Layer("matmul_parameter", [index], {"k": k, "n": n}, [m, n])
    if kind == "a_bt":  # a @ b.T: attention scores
        others = [i for i, s in enumerate(spec.shapes) if len(s) == 2 and s[1] == k]
        other = chooser.choice(others)
        return Layer("matmul", [index, other], {"kind": kind}, [m, spec.shapes[other][0]])
    others = [i for i, s in enumerate(spec.shapes) if len(s) == 2 and s[0] == m]
    other = chooser.choice(others)
    return Layer("matmul", [index, other], {"kind": kind}, [k, spec.shapes[other][1]])


def _layer_norm(chooser: Chooser, spec: NetSpec, index: int) -> Layer:
    shape = spec.shapes[index]
    return Layer("layer_norm", [index], {"features": shape[-1]}, list(shape))


# --- the user patterns ---------------------------------------------------------------------


def _module_output(layer: Layer, shape: list[int]) -> list[int] | None:
    """The result shape of `layer`'s module applied to a value of `shape`, or None if
    the module does not accept it."""
    p = layer.params
    if layer.op == "linear":
        ok = len(shape) == 2 and shape[1] == p["in_features"]
        return [shape[0], p["out_features"]] if ok else None
    if layer.op == "conv":
        if len(shape) != 4 or shape[1] != p["in_channels"]:
            return None
        out = [
            _conv_out(size, p["kernel_size"][d], p["stride"][d], p["padding"][d], p["dilation"][d])
            for d, size in enumerate(shape[2:])
        ]
        return [shape[0], p["out_channels"], *out] if min(out) >= 1 else None
    if layer.op == "batch_norm":
        return list(shape) if len(shape) == 4 and shape[1] == p["channels"] else None
    if layer.op == "layer_norm":
        return list(shape) if shape[-1] == p["features"] else None
    return None


def _reuse(chooser: Chooser, spec: NetSpec, index: int) -> Layer | None:
    """A layer's module applied again (one nn.Linear called twice), to any value it takes."""
    shapes = spec.shapes
    pairs = [
        (position, value, result)
        for position, layer in enumerate(spec.layers)
        for value, shape in enumerate(shapes)
        if (result := _module_output(layer, shape)) is not None
    ]
    if not pairs:  # a module to apply again later
        return _MODULE_GENERATORS[len(shapes[index])](chooser, spec, index)
    position, value, result = chooser.choice(pairs)
    return Layer("reuse", [value], {"layer": position}, result)


def _tied(chooser: Chooser, spec: NetSpec, index: int) -> Layer | None:
    """A new convolution or linear layer whose weight is an earlier one's Parameter (its
    own bias)."""
    shapes = spec.shapes
    pairs = [
        (position, value, result)
        for position, layer in enumerate(spec.layers)
        if layer.op in ("conv", "linear") and "tied_to" not in layer.params
        for value, shape in enumerate(shapes)
        if (result := _module_output(layer, shape)) is not None
    ]
    if not pairs:  # a module to tie to later
        return _MODULE_GENERATORS[len(shapes[index])](chooser, spec, index)
    position, value, result = chooser.choice(pairs)
    params = dict(spec.layers[position].params)
    params["bias"] = bool(chooser.integer(0, 1))
    params["tied_to"] = position
    return Layer(spec.layers[position].op, [value], params, result)


def _weight_matmul(chooser: Chooser, spec: NetSpec, index: int) -> Layer | None:
    """x @ W of an earlier nn.Linear (W used again, transposed: an LM head tied to an
    embedding)."""
    rows, features = spec.shapes[index]
    linears = [
        position
        for position, layer in enumerate(spec.layers)
        if layer.op == "linear" and layer.params["out_features"] == features
    ]
    if not linears:
        return None
    position = chooser.choice(linears)
    result = [rows, spec.layers[position].params["in_features"]]
    return Layer("weight_matmul", [index], {"layer": position}, result)


def _buffer(chooser: Chooser, spec: NetSpec, index: int) -> Layer:
    """x op a registered buffer (persistent or not), broadcast like a bias."""
    params = {"fn": chooser.choice(BINARY_FUNCTIONS), "persistent": bool(chooser.integer(0, 1))}
    return Layer("buffer", [index], params, list(spec.shapes[index]))


def _buffer_update(chooser: Chooser, spec: NetSpec, index: int) -> Layer:
    """A buffer forward updates in place (a call counter, a running mean), then reads."""
    kind = chooser.choice(BUFFER_UPDATES)
    return Layer("buffer_update", [index], {"kind": kind}, list(spec.shapes[index]))


def _mutate(chooser: Chooser, spec: NetSpec, index: int) -> Layer:
    """An in-place update of an input (half the time) or of an intermediate value; later
    layers read the updated tensor (and anything that views it)."""
    if chooser.integer(0, 1):
        index = chooser.integer(0, len(spec.input_shapes) - 1)
    fn = chooser.choice(MUTATIONS)
    return Layer("mutate", [index], {"fn": fn}, list(spec.shapes[index]))


def _dropout(chooser: Chooser, spec: NetSpec, index: int) -> Layer:
    """nn.Dropout: the identity in eval mode, random in train mode."""
    p = chooser.choice([0.0, 0.1, 0.5])
    return Layer("dropout", [index], {"p": p}, list(spec.shapes[index]))


_MODULE_GENERATORS: dict[int, Callable[[Chooser, NetSpec, int], Layer | None]] = {
    2: _linear,
    4: _conv,
}
_LAYER_GENERATORS: dict[str, Callable[[Chooser, NetSpec, int], Layer | None]] = {
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
    "reuse": _reuse,
    "tied": _tied,
    "weight_matmul": _weight_matmul,
    "buffer": _buffer,
    "buffer_update": _buffer_update,
    "mutate": _mutate,
    "dropout": _dropout,
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


def net_specs(max_layers: int = 6, patterns: bool = False) -> Any:
    """A hypothesis strategy of `NetSpec`s (plain networks unless `patterns`)."""
    from hypothesis import strategies as st

    @st.composite
    def strategy(draw: Callable[[Any], Any]) -> NetSpec:
        seed = draw(st.integers(0, 2**16))
        return generate_net(HypothesisChooser(draw), max_layers, seed, patterns)

    return strategy()


def target_specs() -> Any:
    """A hypothesis strategy of `TargetSpec`s."""
    from hypothesis import strategies as st

    @st.composite
    def strategy(draw: Callable[[Any], Any]) -> TargetSpec:
        return generate_target(HypothesisChooser(draw))

    return strategy()


def generate_case(
    chooser: Chooser, max_layers: int = 6, seed: int = 0, patterns: bool = True
) -> tuple[NetSpec, TargetSpec, CallPlan]:
    """One fuzz case: a network, a target, a call plan (in that order from `chooser`)."""
    spec = generate_net(chooser, max_layers, seed, patterns)
    target = generate_target(chooser)
    return spec, target, generate_calls(chooser, spec, patterns)
