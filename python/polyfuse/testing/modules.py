"""Small PyTorch modules several test files share (hand-countable traffic)."""

from __future__ import annotations

import torch


class SkipOverAMatmul(torch.nn.Module):
    """h = x W1; out = (h W2) W3 + h: h is read again two matmuls later."""

    def __init__(self) -> None:
        super().__init__()
        self.first = torch.nn.Parameter(torch.randn(32, 128))
        self.second = torch.nn.Parameter(torch.randn(128, 16))
        self.third = torch.nn.Parameter(torch.randn(16, 128))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x @ self.first
        return (h @ self.second) @ self.third + h
