"""The model zoo and the small test modules: architecture, registry and determinism."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from polyfuse.errors import UnsupportedError
from polyfuse.models import SMALL, ZOO, available_models, get_model
from polyfuse.models.bert import bert_base_encoder_layer
from polyfuse.models.mobilenet_v2 import mobilenet_v2
from polyfuse.models.resnet import resnet18, resnet50

EXPECTED_OUTPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "resnet18": (1, 1000),
    "resnet50": (1, 1000),
    "mobilenet_v2": (1, 1000),
    "bert_encoder": (1, 128, 768),
    "mlp": (1, 10),
    "lenet": (1, 10),
    "basic_block": (1, 64, 56, 56),
    "basic_block_strided": (1, 128, 28, 28),
    "bottleneck": (1, 256, 14, 14),
    "inverted_residual": (1, 24, 28, 28),
    "transformer_encoder": (1, 128, 256),
}


def parameter_count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (resnet18, 11_689_512),
        (resnet50, 25_557_032),
        (mobilenet_v2, 3_504_872),
        (bert_base_encoder_layer, 7_087_872),
    ],
    ids=["resnet18", "resnet50", "mobilenet_v2", "bert_encoder"],
)
def test_parameter_count_matches_reference(build: Callable[[], nn.Module], expected: int) -> None:
    # ResNet and MobileNetV2 counts are torchvision's; the BERT layer's is Hugging Face's.
    assert parameter_count(build()) == expected


def test_registry_keys() -> None:
    assert list(ZOO) == ["resnet18", "resnet50", "mobilenet_v2", "bert_encoder"]
    assert list(SMALL) == [
        "mlp",
        "lenet",
        "basic_block",
        "basic_block_strided",
        "bottleneck",
        "inverted_residual",
        "transformer_encoder",
    ]
    for registry in (ZOO, SMALL):
        for key, spec in registry.items():
            assert spec.name == key
    assert available_models() == [*ZOO, *SMALL]
    assert set(EXPECTED_OUTPUT_SHAPES) == set(available_models())


@pytest.mark.parametrize("name", list(EXPECTED_OUTPUT_SHAPES))
def test_model_runs_eagerly(name: str) -> None:
    module, inputs = get_model(name)
    assert not module.training
    assert len(inputs) == 1
    assert inputs[0].shape == (ZOO | SMALL)[name].input_shape(1)
    with torch.no_grad():
        output = module(*inputs)
    assert output.shape == EXPECTED_OUTPUT_SHAPES[name]
    assert torch.isfinite(output).all()
    assert output.std() > 0


@pytest.mark.parametrize("name", ["mlp", "basic_block", "transformer_encoder"])
def test_input_shape_follows_batch(name: str) -> None:
    module, inputs = get_model(name, batch=3)
    assert inputs[0].shape[0] == 3
    with torch.no_grad():
        assert module(*inputs).shape[0] == 3


@pytest.mark.parametrize("name", ["resnet18", "bottleneck", "transformer_encoder"])
def test_get_model_is_deterministic(name: str) -> None:
    first_module, first_inputs = get_model(name, seed=7)
    second_module, second_inputs = get_model(name, seed=7)
    assert torch.equal(first_inputs[0], second_inputs[0])
    with torch.no_grad():
        assert torch.equal(first_module(*first_inputs), second_module(*second_inputs))

    other_module, other_inputs = get_model(name, seed=8)
    assert not torch.equal(first_inputs[0], other_inputs[0])
    with torch.no_grad():
        assert not torch.equal(first_module(*first_inputs), other_module(*first_inputs))


def test_get_model_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    get_model("mlp", seed=5)
    assert torch.equal(torch.rand(4), expected)


def test_batch_norm_statistics_are_not_trivial() -> None:
    module, _ = get_model("basic_block_strided")
    batch_norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(batch_norms) == 3
    for batch_norm in batch_norms:
        assert batch_norm.running_mean is not None and batch_norm.running_var is not None
        assert batch_norm.running_mean.abs().max() > 0
        assert not torch.allclose(batch_norm.running_var, torch.ones_like(batch_norm.running_var))
        assert batch_norm.running_var.min() >= 0.5 and batch_norm.running_var.max() <= 1.5
        assert not torch.allclose(batch_norm.weight, torch.ones_like(batch_norm.weight))
        assert batch_norm.bias.abs().max() > 0


def test_unknown_model_lists_available_names() -> None:
    with pytest.raises(UnsupportedError) as error:
        get_model("alexnet")
    message = str(error.value)
    assert "alexnet" in message
    for name in available_models():
        assert name in message
