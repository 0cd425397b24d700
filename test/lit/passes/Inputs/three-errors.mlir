// Input of verify-accel.mlir: three broken rules in one function.
func.func @three_errors(%spm: memref<16xf32, 1>, %dram: memref<16xf32>) {
  %t = "accel.dma_start"(%spm, %dram) {shape = array<i64: 16>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 1>, array<i64: 1>]} : (memref<16xf32, 1>, memref<16xf32>) -> !accel.token
  "accel.vector"(%spm, %spm) {kind = "gelu", shape = array<i64: 16>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 1>, array<i64: 1>], operandSegmentSizes = array<i32: 1, 1, 0, 0, 0>} : (memref<16xf32, 1>, memref<16xf32, 1>) -> ()
  "accel.vector"(%spm, %spm) {kind = "exp", shape = array<i64: 17>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 1>, array<i64: 1>], operandSegmentSizes = array<i32: 1, 1, 0, 0, 0>} : (memref<16xf32, 1>, memref<16xf32, 1>) -> ()
  return
}
