"""Baseline (b): upstream affine fusion + copy generation, traffic by trip counts."""

from __future__ import annotations

from torch_mlir import ir

from polyfuse.fusion.affine_baseline import affine_baseline_bytes

RELU_TWICE = """
#id = affine_map<(i, j) -> (i, j)>
func.func @forward(%x: tensor<64x64xf32>) -> tensor<64x64xf32> {
  %zero = arith.constant 0.0 : f32
  %init = tensor.empty() : tensor<64x64xf32>
  %a = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%x : tensor<64x64xf32>) outs(%init : tensor<64x64xf32>) {
  ^bb0(%in: f32, %out: f32):
    %r = arith.maximumf %in, %zero : f32
    linalg.yield %r : f32
  } -> tensor<64x64xf32>
  %b = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%a : tensor<64x64xf32>) outs(%init : tensor<64x64xf32>) {
  ^bb0(%in: f32, %out: f32):
    %r = arith.addf %in, %in : f32
    linalg.yield %r : f32
  } -> tensor<64x64xf32>
  return %b : tensor<64x64xf32>
}
"""


def _traffic(fast_mem_bytes: int) -> tuple[int, int, int]:
    with ir.Context() as context, ir.Location.unknown():
        module = ir.Module.parse(RELU_TWICE, context)
        traffic = affine_baseline_bytes(module.operation, fast_mem_bytes)
        return traffic.read_bytes, traffic.write_bytes, traffic.dmas


ARRAY_BYTES = 64 * 64 * 4


def test_fused_elementwise_chain_one_dma_per_array() -> None:
    # Bufferization reuses one buffer for both results, affine-loop-fusion fuses the two
    # loops, copy generation moves x in, and the result buffer in (it is read as well as
    # written) and out, each as one 16 KiB DMA.
    read, written, dmas = _traffic(512 * 1024)
    assert read == 2 * ARRAY_BYTES
    assert written == ARRAY_BYTES
    assert dmas == 3


def test_small_fast_memory_copies_row_by_row() -> None:
    # 8 KiB cannot hold a 16 KiB array: the copies move one 64-element row per iteration
    # of the outer loop, the same bytes in 64 times as many DMAs.
    read, written, dmas = _traffic(8 * 1024)
    assert read == 2 * ARRAY_BYTES
    assert written == ARRAY_BYTES
    assert dmas == 3 * 64
