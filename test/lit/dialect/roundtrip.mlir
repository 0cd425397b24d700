// RUN: polyfuse-opt %s | polyfuse-opt | filecheck %s
// RUN: polyfuse-opt %s --mlir-print-op-generic | polyfuse-opt | filecheck %s
// RUN: polyfuse-opt %s --pass-pipeline='builtin.module(polyfuse-verify-accel)' | filecheck %s

// Every accel op parses, prints and parses again unchanged.

// CHECK-DAG: #[[ZERO2:.+]] = affine_map<(d0, d1) -> (0)>
// CHECK-DAG: #[[TILE:.+]] = affine_map<(d0, d1) -> (d0 * 1024 + d1 * 16)>
// CHECK-DAG: #[[ZERO0:.+]] = affine_map<() -> (0)>
// CHECK-DAG: #[[SHIFT:.+]] = affine_map<() -> (256)>

// CHECK-LABEL: func.func @every_op
// CHECK-SAME: (%[[DRAM:.+]]: memref<64x64xf32>)
func.func @every_op(%dram: memref<64x64xf32>) {
  // CHECK: %[[BUF:.+]] = "accel.alloc"() {offset = 0 : i64} : () -> memref<1024xf32, 1>
  %buf = "accel.alloc"() {offset = 0 : i64} : () -> memref<1024xf32, 1>
  // CHECK: %[[ACC:.+]] = "accel.alloc"() {offset = 4096 : i64} : () -> memref<256xf32, 1>
  %acc = "accel.alloc"() {offset = 4096 : i64} : () -> memref<256xf32, 1>
  affine.for %i = 0 to 4 {
    affine.for %j = 0 to 4 {
      // CHECK: %[[T:.+]] = "accel.dma_start"(%[[BUF]], %[[DRAM]], %{{[^,]+}}, %{{[^)]+}})
      // CHECK-SAME: offsets = [#[[ZERO2]], #[[TILE]]], shape = array<i64: 16, 16>, strides = [array<i64: 16, 1>, array<i64: 64, 1>]
      // CHECK-SAME: (memref<1024xf32, 1>, memref<64x64xf32>, index, index) -> !accel.token
      %t = "accel.dma_start"(%buf, %dram, %i, %j) {shape = array<i64: 16, 16>, offsets = [affine_map<(d0, d1) -> (0)>, affine_map<(d0, d1) -> (d0 * 1024 + d1 * 16)>], strides = [array<i64: 16, 1>, array<i64: 64, 1>]} : (memref<1024xf32, 1>, memref<64x64xf32>, index, index) -> !accel.token
      // CHECK: "accel.dma_wait"(%[[T]]) : (!accel.token) -> ()
      "accel.dma_wait"(%t) : (!accel.token) -> ()
    }
  }
  // CHECK: "accel.matmul"(%[[ACC]], %[[BUF]], %[[BUF]])
  // CHECK-SAME: accumulate = true
  // CHECK-SAME: shape = array<i64: 1, 16, 16, 16, 1, 1>
  "accel.matmul"(%acc, %buf, %buf) {shape = array<i64: 1, 16, 16, 16, 1, 1>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>, affine_map<() -> (256)>], strides = [array<i64: 0, 16, 1, 0, 0, 0>, array<i64: 0, 16, 0, 1, 0, 0>, array<i64: 0, 0, 1, 16, 0, 0>], accumulate = true} : (memref<256xf32, 1>, memref<1024xf32, 1>, memref<1024xf32, 1>) -> ()
  // CHECK: "accel.vector"(%[[ACC]], %[[ACC]], %[[BUF]])
  // CHECK-SAME: kind = "add", offsets = [#[[ZERO0]], #[[ZERO0]], #[[SHIFT]]], operandSegmentSizes = array<i32: 1, 1, 1, 0, 0>
  "accel.vector"(%acc, %acc, %buf) {kind = "add", shape = array<i64: 256>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>, affine_map<() -> (256)>], strides = [array<i64: 1>, array<i64: 1>, array<i64: 1>], operandSegmentSizes = array<i32: 1, 1, 1, 0, 0>} : (memref<256xf32, 1>, memref<256xf32, 1>, memref<1024xf32, 1>) -> ()
  // CHECK: "accel.vector"(%[[ACC]], %[[ACC]])
  // CHECK-SAME: kind = "max"
  // CHECK-SAME: scalar = 0.000000e+00 : f64
  "accel.vector"(%acc, %acc) {kind = "max", scalar = 0.0 : f64, shape = array<i64: 256>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 1>, array<i64: 1>], operandSegmentSizes = array<i32: 1, 1, 0, 0, 0>} : (memref<256xf32, 1>, memref<256xf32, 1>) -> ()
  // CHECK: "accel.vector"(%[[ACC]], %[[ACC]], %[[ACC]], %[[BUF]])
  // CHECK-SAME: kind = "fma"
  // CHECK-SAME: operandSegmentSizes = array<i32: 1, 1, 1, 1, 0>
  "accel.vector"(%acc, %acc, %acc, %buf) {kind = "fma", shape = array<i64: 16, 16>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>, affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 16, 1>, array<i64: 16, 1>, array<i64: 1, 0>, array<i64: 16, 1>], operandSegmentSizes = array<i32: 1, 1, 1, 1, 0>} : (memref<256xf32, 1>, memref<256xf32, 1>, memref<256xf32, 1>, memref<1024xf32, 1>) -> ()
  // CHECK: %[[OUT:.+]] = "accel.dma_start"(%[[DRAM]], %[[ACC]])
  // CHECK-SAME: (memref<64x64xf32>, memref<256xf32, 1>) -> !accel.token
  %out = "accel.dma_start"(%dram, %acc) {shape = array<i64: 16, 16>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 64, 1>, array<i64: 16, 1>]} : (memref<64x64xf32>, memref<256xf32, 1>) -> !accel.token
  // CHECK: "accel.dma_wait"(%[[OUT]])
  "accel.dma_wait"(%out) : (!accel.token) -> ()
  // CHECK: "accel.dealloc"(%[[ACC]]) : (memref<256xf32, 1>) -> ()
  // CHECK: "accel.dealloc"(%[[BUF]]) : (memref<1024xf32, 1>) -> ()
  "accel.dealloc"(%acc) : (memref<256xf32, 1>) -> ()
  "accel.dealloc"(%buf) : (memref<1024xf32, 1>) -> ()
  return
}
