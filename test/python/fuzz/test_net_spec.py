"""Net specs are data: validated field by field, built into an nn.Module without running
any of their text (polyfuse.testing.net_spec, polyfuse.testing.net_builder)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils import _pytree as pytree

from polyfuse.errors import PolyfuseError
from polyfuse.testing.net_spec import (
    CallPlan,
    Layer,
    NetSpec,
    NetSpecError,
    call_plan_from_dict,
    validate_net_spec,
)
from polyfuse.testing.random_nets import (
    RandomChooser,
    build_model,
    generate_case,
    model_source,
)


def small_spec() -> dict[str, Any]:
    """A valid spec as parsed JSON: linear, relu, a scalar add, a conv-free 2D net."""
    return {
        "input_shapes": [[2, 8]],
        "layers": [
            {
                "op": "linear",
                "inputs": [0],
                "params": {"in_features": 8, "out_features": 8, "bias": True},
                "shape": [2, 8],
            },
            {"op": "unary", "inputs": [1], "params": {"fn": "relu"}, "shape": [2, 8]},
            {
                "op": "binary_scalar",
                "inputs": [2],
                "params": {"fn": "add", "value": 0.5},
                "shape": [2, 8],
            },
        ],
        "outputs": [3],
        "seed": 1,
    }


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        node: Any = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


SENTINEL = "SENTINEL_PATH"
CODE = f"__import__('pathlib').Path('{SENTINEL}').touch()"

# (edit of the valid spec, the field the error must name)
MALICIOUS = [
    (_set(["layers", 0, "op"], CODE), "layers[0].op"),
    (_set(["layers", 1, "params", "fn"], CODE), "layers[1].params.fn"),
    (_set(["layers", 2, "params", "value"], f"0.5); {CODE}; (0"), "layers[2].params.value"),
    (_set(["layers", 0, "params", "bias"], f"True); {CODE}; (0"), "layers[0].params.bias"),
    (_set(["layers", 0, "params", "in_features"], f"8, {CODE}"), "layers[0].params.in_features"),
    (_set(["layers", 0, "params", CODE], 1), "layers[0].params."),
    (_set(["layers", 0, "shape", 1], CODE), "layers[0].shape[1]"),
    (_set(["layers", 1, "inputs", 0], CODE), "layers[1].inputs[0]"),
    (_set(["outputs", 0], CODE), "outputs[0]"),
    (_set(["output_structure"], CODE), "output_structure"),
    (_set(["input_shapes", 0, 0], CODE), "input_shapes[0][0]"),
    (_set(["seed"], CODE), "seed"),
    (_set([CODE], 1), "net spec."),
]


@pytest.mark.parametrize(("edit", "field"), MALICIOUS, ids=[f for _, f in MALICIOUS])
def test_a_spec_cannot_run_code(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], field: str
) -> None:
    sentinel = tmp_path / "pwned"
    data = small_spec()
    edit(data)
    text = json.dumps(data).replace(SENTINEL, str(sentinel))
    with pytest.raises(PolyfuseError, match=f"net spec field {re.escape(field)}") as caught:
        NetSpec.from_json(text)
    assert isinstance(caught.value, NetSpecError)
    # A NetSpec made in Python (not read from JSON) is validated where it is used.
    spec = _spec_object(json.loads(text))
    for use in (build_model, model_source) if spec is not None else ():
        with pytest.raises(NetSpecError, match=f"net spec field {re.escape(field)}"):
            use(spec)
    assert not sentinel.exists()


def _spec_object(data: dict[str, Any]) -> NetSpec | None:
    """`data` as a NetSpec without validation, if it has NetSpec's fields only."""
    fields = {"input_shapes", "layers", "outputs", "seed", "output_structure", "train"}
    if not set(data) <= fields:
        return None
    layers = [Layer(**layer) for layer in data.pop("layers")]
    return NetSpec(layers=layers, **data)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            _set(["layers", 0, "params", "bias"], 1),
            r"layers\[0\].params.bias: must be true or false",
        ),
        (_set(["layers", 0, "params", "in_features"], True), r"in_features: must be an integer"),
        (_set(["layers", 0, "params", "in_features"], 0), r"in_features: must be in \[1, 4096\]"),
        (_set(["layers", 1, "inputs"], [5]), r"layers\[1\].inputs\[0\]: must be in \[0, 1\]"),
        (_set(["layers", 2, "inputs"], [1, 2]), r"layers\[2\].inputs: must have 1..1 entries"),
        (_set(["layers", 1, "params"], {}), r"layers\[1\].params.fn: missing"),
        (_set(["layers", 2, "params", "value"], float("nan")), r"value: must be a finite number"),
        (_set(["input_shapes"], [[4096, 4096]]), r"input_shapes\[0\]: must have at most"),
        (_set(["outputs"], []), r"outputs: must have 1..8 entries"),
        (_set(["train"], "yes"), r"train: must be true or false"),
        (
            _set(
                ["layers", 1],
                {"op": "reuse", "inputs": [1], "params": {"layer": 2}, "shape": [2, 8]},
            ),
            r"layers\[1\].params.layer: must be in \[0, 0\]",
        ),
        (
            _set(
                ["layers", 2],
                {"op": "weight_matmul", "inputs": [2], "params": {"layer": 1}, "shape": [2, 8]},
            ),
            r"layers\[2\].params.layer: must refer to an earlier linear layer \(it is 'unary'\)",
        ),
    ],
)
def test_a_spec_with_a_bad_field_names_it(
    edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    data = small_spec()
    edit(data)
    with pytest.raises(NetSpecError, match=message):
        NetSpec.from_json(json.dumps(data))


def test_tied_weights_must_have_the_same_shape() -> None:
    data = small_spec()
    data["layers"].append(
        {
            "op": "linear",
            "inputs": [3],
            "params": {"in_features": 8, "out_features": 4, "bias": False, "tied_to": 0},
            "shape": [2, 4],
        }
    )
    with pytest.raises(NetSpecError, match=r"layers\[3\].params.tied_to: must refer to a linear"):
        NetSpec.from_json(json.dumps(data))
    data["layers"][3]["params"]["out_features"] = 8
    data["layers"][3]["shape"] = [2, 8]
    model, _ = build_model(NetSpec.from_json(json.dumps(data)))
    assert model.get_parameter("layer3.weight") is model.get_parameter("layer0.weight")


def test_not_json_and_bad_call_plans_are_refused() -> None:
    with pytest.raises(NetSpecError, match="not valid JSON"):
        NetSpec.from_json("{'input_shapes': ")
    with pytest.raises(NetSpecError, match="net spec field wrong_input: must be one of"):
        call_plan_from_dict({"wrong_input": "os.system"})
    with pytest.raises(NetSpecError, match=r"net spec field calls: must be in \[1, 8\]"):
        call_plan_from_dict({"calls": 10**9})
    assert call_plan_from_dict({"calls": 2, "threads": True}) == CallPlan(calls=2, threads=True)


def test_generated_specs_are_valid_and_survive_json() -> None:
    for index in range(200):
        spec, _, _ = generate_case(RandomChooser(f"valid:{index}"), seed=index)
        validate_net_spec(spec)
        assert NetSpec.from_json(spec.to_json()) == spec


def test_model_source_is_the_built_model() -> None:
    # The source a reproducer shows computes what the built module computes (same
    # outputs bit for bit, same buffers after the call, same tied parameters). Running
    # it here is fine: these specs are the generator's own, validated.
    for index in range(60):
        spec, _, _ = generate_case(RandomChooser(f"source:{index}"), max_layers=5, seed=index)
        model, inputs = build_model(spec)
        namespace: dict[str, Any] = {"torch": torch}
        exec(compile(model_source(spec), "<model_source>", "exec"), namespace)
        written: torch.nn.Module = namespace["RandomNet"]()
        written.load_state_dict(model.state_dict())
        with torch.no_grad():  # and the buffers the state dict leaves out
            for name, buffer in model.named_buffers():
                written.get_buffer(name).copy_(buffer)
        written.train(spec.train)
        for name, parameter in model.named_parameters(remove_duplicate=False):
            owners = [
                n for n, p in model.named_parameters(remove_duplicate=False) if p is parameter
            ]
            assert all(written.get_parameter(n) is written.get_parameter(name) for n in owners)
        built_inputs, written_inputs = copy.deepcopy(inputs), copy.deepcopy(inputs)
        with torch.no_grad():
            torch.manual_seed(0)
            expected = model(*built_inputs)
            torch.manual_seed(0)
            actual = written(*written_inputs)
        expected_leaves, expected_tree = pytree.tree_flatten(expected)
        actual_leaves, actual_tree = pytree.tree_flatten(actual)
        assert actual_tree == expected_tree, index
        for got, want in zip(actual_leaves, expected_leaves, strict=True):
            assert torch.equal(got, want), index
        for got, want in zip(written_inputs, built_inputs, strict=True):
            assert torch.equal(got, want), index
        for (name, got), (_, want) in zip(
            written.named_buffers(), model.named_buffers(), strict=True
        ):
            assert torch.equal(got, want), (index, name)
