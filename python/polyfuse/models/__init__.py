"""The bundled model zoo and the test suite's small modules, behind one registry.

`ZOO` holds the full models polyfuse is benchmarked on, `SMALL` the one-block modules the
tests compile. `get_model(name)` builds either kind in eval mode with deterministic random
weights, random (non-trivial) BatchNorm statistics so BN folding is really exercised, and
seeded example inputs. Nothing is downloaded.

    >>> module, inputs = get_model("resnet18", batch=1, seed=0)
    >>> module(*inputs).shape
    torch.Size([1, 1000])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from polyfuse.errors import UnsupportedError
from polyfuse.models.bert import (
    BERT_BASE_HIDDEN_SIZE,
    BERT_BASE_SEQUENCE_LENGTH,
    bert_base_encoder_layer,
)
from polyfuse.models.mobilenet_v2 import mobilenet_v2
from polyfuse.models.resnet import resnet18, resnet50
from polyfuse.models.small import (
    MLP,
    BasicBlockNet,
    BottleneckNet,
    InvertedResidualNet,
    LeNet,
    TransformerEncoderNet,
)


@dataclass(frozen=True)
class ModelSpec:
    """How to build one registered model and the shape of its single input at a batch size."""

    name: str
    description: str
    build: Callable[[], nn.Module]
    input_shape: Callable[[int], tuple[int, ...]]


def _image(channels: int, size: int) -> Callable[[int], tuple[int, ...]]:
    return lambda batch: (batch, channels, size, size)


ZOO: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "resnet18", "ResNet-18, torchvision architecture, 224x224", resnet18, _image(3, 224)
        ),
        ModelSpec(
            "resnet50",
            "ResNet-50 (v1.5), torchvision architecture, 224x224",
            resnet50,
            _image(3, 224),
        ),
        ModelSpec(
            "mobilenet_v2",
            "MobileNetV2 width 1.0, torchvision architecture, 224x224",
            mobilenet_v2,
            _image(3, 224),
        ),
        ModelSpec(
            "bert_encoder",
            "one BERT-base encoder layer (768 hidden, 12 heads, FFN 3072), sequence 128",
            bert_base_encoder_layer,
            lambda batch: (batch, BERT_BASE_SEQUENCE_LENGTH, BERT_BASE_HIDDEN_SIZE),
        ),
    )
}

SMALL: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("mlp", "Linear 64->128, ReLU, Linear 128->10", MLP, lambda batch: (batch, 64)),
        ModelSpec("lenet", "LeNet-5 style CNN on 1x32x32", LeNet, _image(1, 32)),
        ModelSpec(
            "basic_block", "one ResNet basic block, 64 ch at 56x56", BasicBlockNet, _image(64, 56)
        ),
        ModelSpec(
            "basic_block_strided",
            "one strided ResNet basic block with downsample, 64->128 ch, 56x56->28x28",
            lambda: BasicBlockNet(stride=2),
            _image(64, 56),
        ),
        ModelSpec(
            "bottleneck",
            "one ResNet bottleneck with strided downsample, 256->64->256 ch, 28x28->14x14",
            BottleneckNet,
            _image(256, 28),
        ),
        ModelSpec(
            "inverted_residual",
            "one MobileNetV2 inverted residual, expand 6, 24 ch at 28x28",
            InvertedResidualNet,
            _image(24, 28),
        ),
        ModelSpec(
            "transformer_encoder",
            "one encoder layer, d 256, 4 heads, FFN 1024, GELU, sequence 128",
            TransformerEncoderNet,
            lambda batch: (batch, 128, 256),
        ),
    )
}


def available_models() -> list[str]:
    """Every name `get_model` accepts: the zoo first, then the small modules."""
    return [*ZOO, *SMALL]


def _randomize_batch_norm(module: nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm random affine parameters and running statistics.

    Freshly built BNs are the identity in eval mode (mean 0, var 1, weight 1, bias 0), which
    would let a broken BN fold pass every numerical test.
    """
    for child in module.modules():
        if not isinstance(child, nn.modules.batchnorm._BatchNorm):
            continue
        assert child.running_mean is not None and child.running_var is not None
        channels = child.num_features
        child.running_mean.copy_(0.1 * torch.randn(channels, generator=generator))
        child.running_var.copy_(0.5 + torch.rand(channels, generator=generator))
        if child.affine:
            child.weight.copy_(0.5 + torch.rand(channels, generator=generator))
            child.bias.copy_(0.1 * torch.randn(channels, generator=generator))


def get_model(
    name: str, batch: int = 1, seed: int = 0
) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Build a registered model in eval mode with seeded random weights, and example inputs.

    The same `name`, `batch` and `seed` always give the same weights and inputs. The caller's
    global RNG state is left untouched.

    Raises:
        UnsupportedError: `name` is not in `ZOO` or `SMALL`.
    """
    spec = ZOO.get(name) or SMALL.get(name)
    if spec is None:
        raise UnsupportedError(
            f"unknown model {name!r}; available models: {', '.join(available_models())}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = spec.build()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        _randomize_batch_norm(module, generator)
    module.eval()
    inputs = (torch.randn(spec.input_shape(batch), generator=generator),)
    return module, inputs


__all__ = [
    "SMALL",
    "ZOO",
    "ModelSpec",
    "available_models",
    "get_model",
]
