"""A random network as plain data (`NetSpec`), how a fuzz case calls it (`CallPlan`), and
the validation of both.

A spec is data that may come from a file (a reproducer, a JSON log), so nothing in it is
ever run as code: `polyfuse.testing.net_builder` builds the `nn.Module` directly from a
validated spec. `validate_net_spec` checks every field (its type, an op or function name
from a fixed set, integer ranges, references to earlier values and layers) and raises
`NetSpecError`, which names the field (`layers[2].params.fn`), otherwise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from polyfuse.errors import PolyfuseError

UNARY_FUNCTIONS = (
    "relu",
    "relu6",
    "gelu",
    "gelu_tanh",
    "silu",
    "sigmoid",
    "tanh",
    "hardswish",
    "hardsigmoid",
    "leaky_relu",
    "neg",
    "abs",
    "clamp",
    "square",
    "scale_shift",
    "div_scalar",
)
BINARY_FUNCTIONS = ("add", "sub", "mul")
# In-place updates of a value (an input, or an intermediate like ReLU(inplace=True)).
MUTATIONS = ("add", "mul", "relu", "clamp", "sigmoid")
# A call counter (add_), a running mean (mul_().add_()), a new tensor assigned to the buffer.
BUFFER_UPDATES = ("counter", "running_mean", "assign")
POOL_KINDS = ("max", "avg", "adaptive_avg")
# How forward returns its outputs: "auto" is one tensor, or a tuple of several.
OUTPUT_STRUCTURES = ("auto", "tuple", "list", "dict", "nested")
# Wrong call-time inputs a case tries once (polyfuse must refuse each with a PolyfuseError).
WRONG_INPUTS = (
    "float64",
    "int64",
    "shape",
    "rank",
    "numpy",
    "list",
    "scalar",
    "meta",
    "missing",
    "extra",
    "keyword",
)
# Layers that own an nn.Module another layer may apply again ("reuse").
MODULE_OPS = ("conv", "linear", "batch_norm", "layer_norm")

# Bounds of what a spec may ask for (well above what the generator makes; they keep a
# hand-written spec from asking for gigabytes).
MAX_INPUTS = 4
MAX_LAYERS = 256
MAX_OUTPUTS = 8
MAX_DIM = 4096
MAX_VALUE_ELEMENTS = 1 << 22
MAX_SEED = (1 << 62) - 1


class NetSpecError(PolyfuseError):
    """A net spec or call plan has a missing, mistyped or out-of-range field."""


@dataclass
class Layer:
    """One layer: `op`, the indices of the values it reads, its parameters, its result shape."""

    op: str
    inputs: list[int]
    params: dict[str, Any]
    shape: list[int]


@dataclass
class NetSpec:
    """A random network: values 0..len(input_shapes)-1 are inputs, then one per layer.

    `output_structure` is how forward returns `outputs` (OUTPUT_STRUCTURES); `train`
    puts the model in train mode."""

    input_shapes: list[list[int]]
    layers: list[Layer]
    outputs: list[int]
    seed: int = 0
    output_structure: str = "auto"
    train: bool = False

    @property
    def shapes(self) -> list[list[int]]:
        return [*self.input_shapes, *(layer.shape for layer in self.layers)]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> NetSpec:
        """The spec in `text`, validated (NetSpecError names the first bad field)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise NetSpecError(f"net spec is not valid JSON: {error}") from None
        return net_spec_from_dict(data)


@dataclass
class CallPlan:
    """How a fuzz case calls the compiled model: `calls` times in a row (buffers and
    inputs compared after each), then from two `threads` at once; once with a wrong input
    (`wrong_input`, one of WRONG_INPUTS, "" for none) before that; with non-contiguous
    input tensors when `non_contiguous`, inputs that require grad when `requires_grad`."""

    calls: int = 1
    threads: bool = False
    wrong_input: str = ""
    non_contiguous: bool = False
    requires_grad: bool = False


def net_spec_from_dict(data: Any) -> NetSpec:
    """A validated NetSpec from parsed JSON."""
    _check_keys(
        data,
        "net spec",
        required=("input_shapes", "layers", "outputs"),
        optional=("seed", "output_structure", "train"),
    )
    layers = data["layers"]
    if not isinstance(layers, list):
        _fail("layers", "must be a list", layers)
    built = []
    for position, layer in enumerate(layers):
        _check_keys(layer, f"layers[{position}]", required=("op", "inputs", "params", "shape"))
        built.append(Layer(layer["op"], layer["inputs"], layer["params"], layer["shape"]))
    spec = NetSpec(
        input_shapes=data["input_shapes"],
        layers=built,
        outputs=data["outputs"],
        seed=data.get("seed", 0),
        output_structure=data.get("output_structure", "auto"),
        train=data.get("train", False),
    )
    validate_net_spec(spec)
    return spec


def call_plan_from_dict(data: Any) -> CallPlan:
    """A validated CallPlan from parsed JSON."""
    fields = ("calls", "threads", "wrong_input", "non_contiguous", "requires_grad")
    _check_keys(data, "call plan", optional=fields)
    plan = CallPlan(**data)
    validate_call_plan(plan)
    return plan


# --- validation -------------------------------------------------------------------------


def validate_net_spec(spec: NetSpec) -> None:
    """NetSpecError naming the field unless every field of `spec` is well-formed."""
    if not isinstance(spec, NetSpec):
        raise NetSpecError(f"a net spec must be a NetSpec, got {type(spec).__name__}")
    _list(spec.input_shapes, "input_shapes", 1, MAX_INPUTS)
    for index, shape in enumerate(spec.input_shapes):
        _shape(shape, f"input_shapes[{index}]")
    _list(spec.layers, "layers", 0, MAX_LAYERS)
    values = len(spec.input_shapes)
    for position, layer in enumerate(spec.layers):
        where = f"layers[{position}]"
        if not isinstance(layer, Layer):
            _fail(where, "must be a Layer", layer)
        _choice(layer.op, f"{where}.op", tuple(_PARAMS))
        arity = 2 if layer.op in ("binary", "matmul", "concat") else 1
        _list(layer.inputs, f"{where}.inputs", arity, arity)
        for slot, value in enumerate(layer.inputs):
            _integer(value, f"{where}.inputs[{slot}]", 0, values - 1)
        if not isinstance(layer.params, dict):
            _fail(f"{where}.params", "must be a dict", layer.params)
        _PARAMS[layer.op](layer.params, f"{where}.params", spec.layers[:position])
        _shape(layer.shape, f"{where}.shape")
        values += 1
    _list(spec.outputs, "outputs", 1, MAX_OUTPUTS)
    for index, value in enumerate(spec.outputs):
        _integer(value, f"outputs[{index}]", 0, values - 1)
    _integer(spec.seed, "seed", 0, MAX_SEED)
    _choice(spec.output_structure, "output_structure", OUTPUT_STRUCTURES)
    _boolean(spec.train, "train")


def validate_call_plan(plan: CallPlan) -> None:
    """NetSpecError naming the field unless every field of `plan` is well-formed."""
    _integer(plan.calls, "calls", 1, 8)
    _boolean(plan.threads, "threads")
    _choice(plan.wrong_input, "wrong_input", ("", *WRONG_INPUTS))
    _boolean(plan.non_contiguous, "non_contiguous")
    _boolean(plan.requires_grad, "requires_grad")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fail(field_name: str, requirement: str, value: Any) -> None:
    raise NetSpecError(f"net spec field {field_name}: {requirement}, got {_show(value)}")


def _check_keys(
    data: Any, where: str, required: Sequence[str] = (), optional: Sequence[str] = ()
) -> None:
    if not isinstance(data, dict):
        _fail(where, "must be an object", data)
    for key in data:
        if key not in required and key not in optional:
            allowed = ", ".join([*required, *optional]) or "none"
            _fail(
                f"{where}.{key}" if isinstance(key, str) else where,
                f"is not a known field (known: {allowed})",
                key,
            )
    for key in required:
        if key not in data:
            raise NetSpecError(f"net spec field {where}.{key}: missing")


def _integer(value: Any, field_name: str, low: int, high: int) -> int:
    if type(value) is not int:  # bool is an int subclass: refused too
        _fail(field_name, "must be an integer", value)
    if not low <= value <= high:
        _fail(field_name, f"must be in [{low}, {high}]", value)
    return int(value)


def _boolean(value: Any, field_name: str) -> None:
    if type(value) is not bool:
        _fail(field_name, "must be true or false", value)


def _number(value: Any, field_name: str, low: float, high: float) -> None:
    if type(value) not in (int, float) or not math.isfinite(value):
        _fail(field_name, "must be a finite number", value)
    if not low <= value <= high:
        _fail(field_name, f"must be in [{low}, {high}]", value)


def _choice(value: Any, field_name: str, options: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in options:
        _fail(field_name, f"must be one of {', '.join(repr(o) for o in options)}", value)


def _list(value: Any, field_name: str, low: int, high: int) -> None:
    if not isinstance(value, list):
        _fail(field_name, "must be a list", value)
    if not low <= len(value) <= high:
        _fail(field_name, f"must have {low}..{high} entries", value)


def _integers(value: Any, field_name: str, length: int, low: int, high: int) -> None:
    _list(value, field_name, length, length)
    for index, item in enumerate(value):
        _integer(item, f"{field_name}[{index}]", low, high)


def _shape(value: Any, field_name: str) -> None:
    _list(value, field_name, 1, 4)
    for index, size in enumerate(value):
        _integer(size, f"{field_name}[{index}]", 1, MAX_DIM)
    if math.prod(value) > MAX_VALUE_ELEMENTS:
        _fail(field_name, f"must have at most {MAX_VALUE_ELEMENTS} elements", value)


def _keys(params: dict[str, Any], where: str, *required: str, optional: Sequence[str] = ()) -> None:
    _check_keys(params, where, required, optional)


def _earlier_layer(
    value: Any, where: str, earlier: list[Layer], ops: Sequence[str], untied: bool = False
) -> Layer:
    position = _integer(value, where, 0, len(earlier) - 1) if earlier else None
    if position is None:
        _fail(where, "must refer to an earlier layer, and there is none", value)
        raise AssertionError  # unreachable: _fail raises
    layer = earlier[position]
    if layer.op not in ops:
        _fail(
            where, f"must refer to an earlier {' or '.join(ops)} layer (it is '{layer.op}')", value
        )
    if untied and "tied_to" in layer.params:
        _fail(where, "must refer to a layer that owns its weight (not one tied to another)", value)
    return layer


# --- parameters of each op --------------------------------------------------------------

ParamCheck = Callable[[dict[str, Any], str, list[Layer]], None]


def _unary(p: dict[str, Any], where: str, earlier: list[Layer]) -> None:
    _keys(p, where, "fn")
    _choice(p["fn"], f"{where}.fn", UNARY_FUNCTIONS)


def _binary(p: dict[str, Any], where: str, earlier: list[Layer]) -> None:
    _keys(p, where, "fn")
    _choice(p["fn"], f"{where}.fn", BINARY_FUNCTIONS)


def _binary_scalar(p: dict[str, Any], where: str, earlier: list[Layer]) -> None:
    _keys(p, where, "fn", "value")
    _choice(p["fn"], f"{where}.fn", BINARY_FUNCTIONS)
    _number(p["value"], f"{where}.value", -1e6, 1e6)


def _conv(p: dict[str, Any], where: str, earlier: list[Layer]) -> None:
    _keys(
        p,
        where,
        "in_channels",
        "out_channels",
        "kernel_size",
        "stride",
        "padding",
        "dilation",
        "groups",
        "bias",
        optional=("tied_to",),
    )
    _integer(p["in_channels"], f"{where}.in_channels", 1, MAX_DIM)
    _integer(p["out_channels"], f"{where}.out_channels", 1, MAX_DIM)
    _integers(p["kernel_size"], f"{where}.kernel_size", 2, 1, 16)
    _integers(p["stride"], f"{where}.stride", 2, 1, 16)
    _integers(p["padding"], f"{where}.padding", 2, 0, 16)
    _integers(p["dilation"], f"{where}.dilation", 2, 1, 16)
    _integer(p["groups"], f"{where}.groups", 1, MAX_DIM)
    _boolean(p["bias"], f"{where}.bias")
    if "tied_to" in p:
        tied = _earlier_layer(p["tied_to"], f"{where}.tied_to", earlier, ("conv",), untied=True)
        same = ("in_channels", "out_channels", "kernel_size", "groups")
        if any(tied.params[key] != p[key] for key in same):
            _fail(
                f"{where}.tied_to",
                "must refer to a convolution whose weight has the same shape",
                p["tied_to"],
            )


def _linear(p: dict[str, Any], where: str, earlier: list[Layer]) -> None:
    _keys(p, where, "in_features", "out_features", "bias", optional=("tied_to",))
    _integer(p["in_features"], f"{where}.in_features", 1, MAX_DIM)
    _integer(p["out_features"], f"{where}.out_features", 1, MAX_DIM)
    _boolean(p["bias"], f"{where}.bias")
    if "tied_to" in p:
        tied = _earlier_layer(p["tied_to"], f"{where}.tied_to", earlier, ("linear",), untied=True)
        if (tied.params["in_features"], tied.params["out_features"]) != (
            p["in_features"],
            p["out_features"],
        ):
            _fail(
                f"{where}.tied_to",
                "must refer to a linear layer whose weight has the same shape",
                p["tied_to"],
            )


def _channels(p: dict[str, Any], where: str, earlier: list[Layer]) -> None:
    _keys(p, where, "channels")
    _integer(p["channels"], f"{where}.channels", 1, MAX_DIM)


def _features(p: dict[str, Any], where: str, earlier: list[Layer]) -> None:
    _keys(p, where, "features")
    _integer(p["features"], f"{where}.features", 1, MAX_DIM)


def _matmul_parameter(p: dict[str, Any], where: str, earlier: list[Layer]) -> None:
    _keys(p, where, "k", "n")
    _integer(p["k"], f"{where}.k", 1, MAX_DIM)
    _integer(p["n"], f"{where}.n", 1, MAX_DIM)


def _matmul(p: dict[str, Any], where: str, earlier: list[Layer]) -> None:
    _keys(p, where, "kind")
    _choice(p["kind"], f"{where}.kind", ("a_bt", "at_b"))


def _pool(p: dict[str, Any], where: str, earlier: list[Layer]) -> None:
    if not isinstance(p, dict) or "kind" not in p:
        raise NetSpecError(f"net spec field {where}.kind: missing")
    _choice(p["kind"], f"{where}.kind", POOL_KINDS)
    if p["kind"] == "adaptive_avg":
        _keys(p, where, "kind", "output_size")
        _integer(p["output_size"], f"{where}.output_size", 1, MAX_DIM)
        return
    extra = ("count_include_pad",) if p["kind"] == "avg" else ()
    _keys(p, where, "kind", "kernel_size", "stride", "padding", *extra)
    _integer(p["kernel_size"], f"{where}.kernel_size", 1, 16)
    _integer(p["stride"], f"{where}.stride", 1, 16)
    _integer(p["padding"], f"{where}.padding", 0, 8)
    if extra:
        _boolean(p["count_include_pad"], f"{where}.count_include_pad")


def _softmax(p: dict[str, Any], where: str, earlier: list[Layer]) -> None:
    _keys(p, where, "dim", "kind")
    _integer(p["dim"], f"{where}.dim", 0, 3)
    _choice(p["kind"], f"{where}.kind", ("softmax", "log_softmax"))


def _concat(p: dict[str, Any], where: str, earlier: list[Layer]) -> None:
    _keys(p, where, "dim")
    _integer(p["dim"], f"{where}.dim", 0, 3)


def _slice(p: dict[str, Any], where: str, earlier: list[Layer]) -> None:
    _keys(p, where, "dim", "start", "stop", "step")
    _integer(p["dim"], f"{where}.dim", 0, 3)
    _integer(p["start"], f"{where}.start", 0, MAX_DIM)
    _integer(p["stop"], f"{where}.stop", 0, MAX_DIM)
    _integer(p["step"], f"{where}.step", 1, MAX_DIM)


def _permute(p: dict[str, Any], where: str, earlier: list[Layer]) -> None:
    _keys(p, where, "order")
    _list(p["order"], f"{where}.order", 1, 4)
    _integers(p["order"], f"{where}.order", len(p["order"]), 0, len(p["order"]) - 1)
    if sorted(p["order"]) != list(range(len(p["order"]))):
        _fail(f"{where}.order", "must be a permutation of 0..rank-1", p["order"])


def _mean(p: dict[str, Any], where: str, earlier: list[Layer]) -> None:
    _keys(p, where, "dims", "keepdim", "kind")
    _list(p["dims"], f"{where}.dims", 1, 4)
    _integers(p["dims"], f"{where}.dims", len(p["dims"]), 0, 3)
    _boolean(p["keepdim"], f"{where}.keepdim")
    _choice(p["kind"], f"{where}.kind", ("mean", "sum", "amax"))


def _no_params(p: dict[str, Any], where: str, earlier: list[Layer]) -> None:
    _keys(p, where)


def _dropout(p: dict[str, Any], where: str, earlier: list[Layer]) -> None:
    _keys(p, where, "p")
    _number(p["p"], f"{where}.p", 0.0, 0.9)


def _reuse(p: dict[str, Any], where: str, earlier: list[Layer]) -> None:
    _keys(p, where, "layer")
    _earlier_layer(p["layer"], f"{where}.layer", earlier, MODULE_OPS)


def _weight_matmul(p: dict[str, Any], where: str, earlier: list[Layer]) -> None:
    _keys(p, where, "layer")
    _earlier_layer(p["layer"], f"{where}.layer", earlier, ("linear",))


def _buffer(p: dict[str, Any], where: str, earlier: list[Layer]) -> None:
    _keys(p, where, "fn", "persistent")
    _choice(p["fn"], f"{where}.fn", BINARY_FUNCTIONS)
    _boolean(p["persistent"], f"{where}.persistent")


def _buffer_update(p: dict[str, Any], where: str, earlier: list[Layer]) -> None:
    _keys(p, where, "kind")
    _choice(p["kind"], f"{where}.kind", BUFFER_UPDATES)


def _mutate(p: dict[str, Any], where: str, earlier: list[Layer]) -> None:
    _keys(p, where, "fn")
    _choice(p["fn"], f"{where}.fn", MUTATIONS)


_PARAMS: dict[str, ParamCheck] = {
    "unary": _unary,
    "binary": _binary,
    "binary_scalar": _binary_scalar,
    "binary_parameter": _binary,
    "conv": _conv,
    "linear": _linear,
    "batch_norm": _channels,
    "layer_norm": _features,
    "matmul_parameter": _matmul_parameter,
    "matmul": _matmul,
    "pool": _pool,
    "softmax": _softmax,
    "concat": _concat,
    "slice": _slice,
    "permute": _permute,
    "mean": _mean,
    "flatten": _no_params,
    "dropout": _dropout,
    "reuse": _reuse,
    "weight_matmul": _weight_matmul,
    "buffer": _buffer,
    "buffer_update": _buffer_update,
    "mutate": _mutate,
}
LAYER_OPS = tuple(_PARAMS)


# --- what a case exercises --------------------------------------------------------------


def case_patterns(spec: NetSpec, plan: CallPlan | None = None) -> list[str]:
    """The user patterns (beyond a plain feed-forward net) that a case exercises."""
    inputs = len(spec.input_shapes)
    found: set[str] = set()
    for layer in spec.layers:
        if layer.op in ("reuse", "weight_matmul"):
            found.add("shared_weights")
        if "tied_to" in layer.params:
            found.add("tied_weights")
        if layer.op == "buffer":
            found.add("buffers")
        if layer.op == "buffer_update":
            found.add("buffer_updates")
        if layer.op == "mutate":
            found.add("input_mutation" if layer.inputs[0] < inputs else "in_place")
        if layer.op == "dropout":
            found.add("dropout")
    if spec.output_structure != "auto":
        found.add("structured_outputs")
    if any(index < inputs for index in spec.outputs) or len(set(spec.outputs)) < len(spec.outputs):
        found.add("aliased_outputs")
    if spec.train:
        found.add("train_mode")
    if plan is not None:
        if plan.calls > 1:
            found.add("repeated_calls")
        if plan.threads:
            found.add("threads")
        if plan.wrong_input:
            found.add("wrong_inputs")
        if plan.non_contiguous:
            found.add("non_contiguous_inputs")
        if plan.requires_grad:
            found.add("grad_inputs")
    return sorted(found)


PATTERNS = (
    "aliased_outputs",
    "buffer_updates",
    "buffers",
    "dropout",
    "grad_inputs",
    "in_place",
    "input_mutation",
    "non_contiguous_inputs",
    "repeated_calls",
    "shared_weights",
    "structured_outputs",
    "threads",
    "tied_weights",
    "train_mode",
    "wrong_inputs",
)
