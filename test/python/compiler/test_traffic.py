"""DRAM traffic counted by the emulator, on cases small enough to compute by hand.

Elements are float32 (4 bytes). "Planned" is what the tile search predicted; the
emulator counts the bytes its executed DMAs moved; both must equal the hand count.
"""

from __future__ import annotations

import torch

import polyfuse
from polyfuse.testing.targets import edge_like

TARGET = edge_like(16384)  # hand-countable traffic under a small scratchpad


class MatMul(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b


def _traffic(
    model: torch.nn.Module, inputs: list[torch.Tensor], target: object, embedding: str = "csp"
) -> tuple[int, int, int]:
    compiled = polyfuse.compile(model, inputs, target=target, embedding=embedding)  # type: ignore[arg-type]
    with torch.no_grad():
        torch.testing.assert_close(compiled(*inputs), model(*inputs), rtol=1e-4, atol=1e-5)
    report = compiled.report
    assert report is not None
    return report.stats.dram_read_bytes, report.stats.dram_write_bytes, report.planned_bytes


def test_matmul_in_one_tile() -> None:
    # 64x128 @ 128x96 fits the 512 KiB scratchpad whole: read A and B once, write C once.
    a, b = torch.randn(64, 128), torch.randn(128, 96)
    read, written, planned = _traffic(MatMul(), [a, b], "edge")
    assert read == (64 * 128 + 128 * 96) * 4
    assert written == 64 * 96 * 4
    assert planned == read + written


def test_matmul_tiled_for_a_16_kib_scratchpad() -> None:
    # 16 KiB = 4096 elements, 4048 after 64-byte alignment of three buffers. The best
    # tiling keeps all of M (64) and half of N (48) and steps K by 8:
    # 64*8 + 8*48 + 64*48 = 3968 elements. A is read once per N tile (2x), B once,
    # C written once (its zero init is a fill on chip):
    # reads 2*64*128 + 128*96 = 28672 elements, writes 64*96 = 6144 elements.
    # (That is the least-traffic tiling, which the "heuristic" embedding issues as is.)
    a, b = torch.randn(64, 128), torch.randn(128, 96)
    read, written, planned = _traffic(MatMul(), [a, b], TARGET, "heuristic")
    assert read == 28672 * 4
    assert written == 6144 * 4
    assert planned == read + written


def test_matmul_tiled_for_whole_pe_blocks() -> None:
    # The "csp" embedding issues K and N in whole 32-blocks of the 32x32 array, and the
    # planner's estimate (DMA at 16 B/cycle + 32 + 94 fill cycles per instruction) prefers
    # tiles of 32 along M, N and K to the least-traffic tiling above (K steps of 8 waste
    # 3/4 of the rows): A is read once per N tile (3x), B once per M tile (2x):
    # reads 3*64*128 + 2*128*96 = 49152 elements, writes 6144.
    a, b = torch.randn(64, 128), torch.randn(128, 96)
    read, written, planned = _traffic(MatMul(), [a, b], TARGET, "csp")
    assert read == 49152 * 4
    assert written == 6144 * 4
    assert planned == read + written


def test_padded_convolution() -> None:
    # Conv2d(4, 8, 3, padding=1, no bias) on 1x4x8x8, layer by layer:
    #   pad: read the input (256), write the padded interior (256; the zero border is
    #        filled when the buffer is created);
    #   conv: read the padded input (4*10*10 = 400) and the weights (8*4*3*3 = 288),
    #         write the output (8*8*8 = 512).
    conv = torch.nn.Conv2d(4, 8, 3, padding=1, bias=False).eval()
    x = torch.randn(1, 4, 8, 8)
    read, written, planned = _traffic(conv, [x], "edge")
    assert read == (256 + 400 + 288) * 4
    assert written == (256 + 512) * 4
    assert planned == read + written
