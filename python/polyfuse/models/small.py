"""Small modules the test suite compiles: one of each building block of the zoo.

Each is small enough to compile and emulate in seconds, and the blocks are the same classes
the full models use (`resnet.BasicBlock`, `resnet.Bottleneck`,
`mobilenet_v2.InvertedResidual`, `bert.EncoderLayer`), so a block that works here is the
block that runs inside ResNet, MobileNetV2 and BERT.
"""

from __future__ import annotations

import torch
from torch import nn

from polyfuse.models.bert import EncoderLayer
from polyfuse.models.mobilenet_v2 import InvertedResidual
from polyfuse.models.resnet import BasicBlock, Bottleneck, downsample_shortcut


class MLP(nn.Module):
    """Linear -> ReLU -> Linear: (batch, 64) -> (batch, 10)."""

    def __init__(self, in_features: int = 64, hidden: int = 128, out_features: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x)))


class LeNet(nn.Module):
    """LeNet-5 style: two conv5x5 + ReLU + maxpool2 stages, then three linears.

    (batch, 1, 32, 32) -> (batch, 10).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


class BasicBlockNet(nn.Module):
    """One ResNet basic block with BN, 64 channels at 56x56 (ResNet-18's layer1).

    With `stride=2` the block halves the resolution, doubles the width and takes a 1x1
    conv + BN downsample shortcut (ResNet-18's first layer2 block):
    (batch, 64, 56, 56) -> (batch, 128, 28, 28).
    """

    def __init__(self, channels: int = 64, stride: int = 1) -> None:
        super().__init__()
        out_channels = channels if stride == 1 else channels * 2
        downsample = None
        if stride != 1:
            downsample = downsample_shortcut(channels, out_channels, stride)
        self.block = BasicBlock(channels, out_channels, stride, downsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class BottleneckNet(nn.Module):
    """One ResNet-50 bottleneck with a strided downsample shortcut.

    256 channels at 28x28 -> 1x1 to 64 -> 3x3 stride 2 -> 1x1 to 256, plus a 1x1 stride-2
    conv + BN shortcut: (batch, 256, 28, 28) -> (batch, 256, 14, 14).
    """

    def __init__(self, channels: int = 256, planes: int = 64, stride: int = 2) -> None:
        super().__init__()
        out_channels = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or channels != out_channels:
            downsample = downsample_shortcut(channels, out_channels, stride)
        self.block = Bottleneck(channels, planes, stride, downsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class InvertedResidualNet(nn.Module):
    """One MobileNetV2 inverted residual with its residual add: expand 6, depthwise 3x3.

    (batch, 24, 28, 28) -> (batch, 24, 28, 28), through 144 hidden channels.
    """

    def __init__(self, channels: int = 24, expand_ratio: int = 6) -> None:
        super().__init__()
        self.block = InvertedResidual(channels, channels, stride=1, expand_ratio=expand_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class TransformerEncoderNet(nn.Module):
    """One post-norm encoder layer, d 256, 4 heads, FFN 1024, GELU, explicit attention.

    (batch, 128, 256) -> (batch, 128, 256).
    """

    def __init__(
        self, hidden_size: int = 256, num_heads: int = 4, intermediate_size: int = 1024
    ) -> None:
        super().__init__()
        self.layer = EncoderLayer(
            hidden_size, num_heads, intermediate_size, layer_norm_eps=1e-5, activation=nn.GELU
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class ConvChain(nn.Module):
    """conv 3x3 pad 1 -> ReLU -> conv 3x3 stride 2 pad 1, no bias (one generic per conv):
    the halo of a strided chain, small enough to check element by element."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.second = nn.Conv2d(4, 3, 3, stride=2, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.relu(self.first(x)))
