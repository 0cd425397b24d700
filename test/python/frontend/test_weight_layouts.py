"""Weight transposes are folded into the weights at compile time (frontend/weight_layouts.py)."""

from __future__ import annotations

import torch

import polyfuse


class PermutedParameter(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.p = torch.nn.Parameter(torch.randn(3, 4, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.p.permute(2, 0, 1)


def test_linear_weight_transpose_is_folded() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4).eval()
    x = torch.randn(2, 8)
    compiled = polyfuse.compile(model, [x], schedule="fused", keep_ir=True)
    generalized = compiled.mlir["generalize"]
    assert "_layout> : tensor<8x4xf32>" in generalized  # the transposed weight, a constant
    assert "dense_resource<weight> : tensor<4x8xf32>" not in generalized  # the original: gone
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-6, atol=1e-6)
    # x (2x8) and W (8x4) and b (4) read once, y (2x4) written once: no transpose traffic.
    assert compiled.report is not None
    assert compiled.report.dram_bytes == (2 * 8 + 8 * 4 + 4 + 2 * 4) * 4


def test_three_dimensional_permutation_of_a_parameter() -> None:
    torch.manual_seed(0)
    model = PermutedParameter().eval()
    x = torch.randn(5, 3, 4)
    compiled = polyfuse.compile(model, [x], keep_ir=True)
    assert "_layout> : tensor<5x3x4xf32>" in compiled.mlir["generalize"]
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=0)
    assert compiled.report is not None
    assert compiled.report.dram_bytes == 3 * 60 * 4  # x and p read once, the sum written once
