// Input of polyfuse-opt.mlir: a DMA whose token is never waited for.
func.func @unwaited(%spm: memref<16xf32, 1>, %dram: memref<16xf32>) {
  %t = "accel.dma_start"(%spm, %dram) {shape = array<i64: 16>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 1>, array<i64: 1>]} : (memref<16xf32, 1>, memref<16xf32>) -> !accel.token
  return
}
