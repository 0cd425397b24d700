// RUN: polyfuse-opt %s --split-input-file --pass-pipeline='builtin.module(polyfuse-verify-accel)' | filecheck %s
// RUN: rm -rf %t
// RUN: not polyfuse-opt %S/Inputs/three-errors.mlir --pass-pipeline='builtin.module(polyfuse-verify-accel)' --reproducer-dir=%t 2>&1 | filecheck %s --check-prefix=ERRORS

// polyfuse-verify-accel leaves valid IR unchanged. On invalid IR it reports every broken
// rule, in IR order, then fails once (dialect/invalid.mlir has one case per rule).

// ERRORS: three-errors.mlir:3:8: error: 'accel.dma_start' op starts a DMA whose token is never waited for
// ERRORS-NEXT: three-errors.mlir:4:3: error: 'accel.vector' op kind 'gelu' is unknown
// ERRORS-NEXT: three-errors.mlir:5:3: error: 'accel.vector' op destination view touches elements 0..16 but memref<16xf32, 1> has 16 elements (0..15)
// ERRORS-NEXT: three-errors.mlir:5:3: error: 'accel.vector' op source 0 view touches elements 0..16
// ERRORS-NEXT: polyfuse-opt: pass 'polyfuse-verify-accel' failed
// ERRORS-NOT: error:

// A tiled 64x64 copy-in, ReLU, copy-out on the "edge" target: every view stays inside
// its buffer under the constant loop bounds (the last tile ends at element 4095).
module attributes {accel.target = {name = "edge", scratchpad_bytes = 524288 : i64, pe_rows = 32 : i64, pe_cols = 32 : i64}} {
  // CHECK-LABEL: func.func @tiled_relu
  func.func @tiled_relu(%in: memref<64x64xf32>, %out: memref<64x64xf32>) {
    // CHECK: "accel.alloc"
    %buf = "accel.alloc"() {offset = 0 : i64} : () -> memref<256xf32, 1>
    affine.for %i = 0 to 4 {
      affine.for %j = 0 to 4 {
        %t = "accel.dma_start"(%buf, %in, %i, %j) {shape = array<i64: 16, 16>, offsets = [affine_map<(d0, d1) -> (0)>, affine_map<(d0, d1) -> (d0 * 1024 + d1 * 16)>], strides = [array<i64: 16, 1>, array<i64: 64, 1>]} : (memref<256xf32, 1>, memref<64x64xf32>, index, index) -> !accel.token
        "accel.dma_wait"(%t) : (!accel.token) -> ()
        // CHECK: "accel.vector"{{.*}}kind = "max"{{.*}}scalar = 0.000000e+00 : f64
        "accel.vector"(%buf, %buf) {kind = "max", scalar = 0.0 : f64, shape = array<i64: 256>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 1>, array<i64: 1>], operandSegmentSizes = array<i32: 1, 1, 0, 0, 0>} : (memref<256xf32, 1>, memref<256xf32, 1>) -> ()
        %o = "accel.dma_start"(%out, %buf, %i, %j) {shape = array<i64: 16, 16>, offsets = [affine_map<(d0, d1) -> (d0 * 1024 + d1 * 16)>, affine_map<(d0, d1) -> (0)>], strides = [array<i64: 64, 1>, array<i64: 16, 1>]} : (memref<64x64xf32>, memref<256xf32, 1>, index, index) -> !accel.token
        "accel.dma_wait"(%o) : (!accel.token) -> ()
      }
    }
    "accel.dealloc"(%buf) : (memref<256xf32, 1>) -> ()
    return
  }
}

// -----

// A matmul filling the 32x32 PE array exactly, inside scf.for loops with constant
// bounds, and a zero-trip loop whose body is never executed (so never out of bounds).
module attributes {accel.target = {name = "edge", scratchpad_bytes = 524288 : i64, pe_rows = 32 : i64, pe_cols = 32 : i64}} {
  // CHECK-LABEL: func.func @full_pe_array
  func.func @full_pe_array() {
    %c = "accel.alloc"() {offset = 0 : i64} : () -> memref<1024xf32, 1>
    %a = "accel.alloc"() {offset = 4096 : i64} : () -> memref<2048xf32, 1>
    %b = "accel.alloc"() {offset = 12288 : i64} : () -> memref<1024xf32, 1>
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %c2 = arith.constant 2 : index
    scf.for %m = %c0 to %c2 step %c1 {
      // CHECK: "accel.matmul"
      "accel.matmul"(%c, %a, %b, %m) {shape = array<i64: 1, 32, 32, 32, 1, 1>, offsets = [affine_map<(d0) -> (0)>, affine_map<(d0) -> (d0 * 1024)>, affine_map<(d0) -> (0)>], strides = [array<i64: 0, 32, 1, 0, 0, 0>, array<i64: 0, 32, 0, 1, 0, 0>, array<i64: 0, 0, 1, 32, 0, 0>], accumulate = true} : (memref<1024xf32, 1>, memref<2048xf32, 1>, memref<1024xf32, 1>, index) -> ()
    }
    affine.for %never = 0 to 0 {
      "accel.vector"(%c, %c, %never) {kind = "exp", shape = array<i64: 4096>, offsets = [affine_map<(d0) -> (d0)>, affine_map<(d0) -> (d0)>], strides = [array<i64: 1>, array<i64: 1>], operandSegmentSizes = array<i32: 1, 1, 0, 0, 1>} : (memref<1024xf32, 1>, memref<1024xf32, 1>, index) -> ()
    }
    return
  }
}

// -----

// Double buffering: a token may be carried by a loop and waited for after it.
// CHECK-LABEL: func.func @token_through_loop
func.func @token_through_loop(%spm: memref<16xf32, 1>, %dram: memref<64xf32>) {
  %t0 = "accel.dma_start"(%spm, %dram) {shape = array<i64: 16>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 1>, array<i64: 1>]} : (memref<16xf32, 1>, memref<64xf32>) -> !accel.token
  %last = affine.for %i = 1 to 4 iter_args(%prev = %t0) -> (!accel.token) {
    "accel.dma_wait"(%prev) : (!accel.token) -> ()
    %next = "accel.dma_start"(%spm, %dram, %i) {shape = array<i64: 16>, offsets = [affine_map<(d0) -> (0)>, affine_map<(d0) -> (d0 * 16)>], strides = [array<i64: 1>, array<i64: 1>]} : (memref<16xf32, 1>, memref<64xf32>, index) -> !accel.token
    affine.yield %next : !accel.token
  }
  // CHECK: "accel.dma_wait"
  "accel.dma_wait"(%last) : (!accel.token) -> ()
  return
}
