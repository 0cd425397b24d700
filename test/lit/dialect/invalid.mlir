// RUN: rm -rf %t
// RUN: not polyfuse-opt %s --split-input-file --pass-pipeline='builtin.module(polyfuse-verify-accel)' --reproducer-dir=%t 2>&1 | filecheck %s

// One case per rule of the accel verifier (docs/dialect.md); each error names the op's
// file:line:col. The first cases break IRDL constraints and fail while parsing.

func.func @wait_on_a_buffer(%b: memref<16xf32, 1>) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: expected base type 'accel.token' but got 'memref<16xf32, 1>'
  "accel.dma_wait"(%b) : (memref<16xf32, 1>) -> ()
  return
}

// -----

func.func @matmul_without_accumulate(%b: memref<16xf32, 1>) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.matmul' op attribute "accumulate" is expected but not provided
  "accel.matmul"(%b, %b, %b) {shape = array<i64: 1, 1, 1, 1, 1, 1>, offsets = [], strides = []} : (memref<16xf32, 1>, memref<16xf32, 1>, memref<16xf32, 1>) -> ()
  return
}

// -----

func.func @alloc_in_dram() {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.alloc' op result memref<16xf32> must be a scratchpad buffer (memory space 1)
  %b = "accel.alloc"() {offset = 0 : i64} : () -> memref<16xf32>
  return
}

// -----

func.func @alloc_2d() {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.alloc' op result memref<4x4xf32, 1> must be a 1-D scratchpad buffer
  %b = "accel.alloc"() {offset = 0 : i64} : () -> memref<4x4xf32, 1>
  return
}

// -----

func.func @alloc_misaligned() {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.alloc' op offset 2 must be a non-negative multiple of 4 bytes
  %b = "accel.alloc"() {offset = 2 : i64} : () -> memref<16xf32, 1>
  return
}

// -----

module attributes {accel.target = {name = "tiny", scratchpad_bytes = 1024 : i64, pe_rows = 4 : i64, pe_cols = 4 : i64}} {
  func.func @alloc_beyond_scratchpad() {
    // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.alloc' op buffer at bytes 512..1535 (1024 bytes) exceeds the 1024-byte scratchpad of target 'tiny'
    %b = "accel.alloc"() {offset = 512 : i64} : () -> memref<256xf32, 1>
    return
  }
}

// -----

module attributes {accel.target = {name = "broken", pe_rows = 4 : i64}} {
// CHECK: invalid.mlir:[[# @LINE - 1]]:1: error: 'builtin.module' op accel.target must be a dictionary {{.*}}'scratchpad_bytes' is missing
}

// -----

func.func @dealloc_dram(%d: memref<16xf32>) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.dealloc' op buffer memref<16xf32> must be a scratchpad buffer
  "accel.dealloc"(%d) : (memref<16xf32>) -> ()
  return
}

// -----

func.func @dma_dram_to_dram(%a: memref<16xf32>, %b: memref<16xf32>) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.dma_start' op copies memref<16xf32> to memref<16xf32>, both in DRAM; exactly one side must be a scratchpad buffer
  %t = "accel.dma_start"(%a, %b) {shape = array<i64: 16>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 1>, array<i64: 1>]} : (memref<16xf32>, memref<16xf32>) -> !accel.token
  "accel.dma_wait"(%t) : (!accel.token) -> ()
  return
}

// -----

func.func @dma_scratchpad_to_scratchpad(%a: memref<16xf32, 1>, %b: memref<16xf32, 1>) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.dma_start' op copies {{.*}} both in the scratchpad
  %t = "accel.dma_start"(%a, %b) {shape = array<i64: 16>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 1>, array<i64: 1>]} : (memref<16xf32, 1>, memref<16xf32, 1>) -> !accel.token
  "accel.dma_wait"(%t) : (!accel.token) -> ()
  return
}

// -----

func.func @dma_f16(%a: memref<16xf32, 1>, %b: memref<16xf16>) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.dma_start' op source memref<16xf16> must hold f32 elements
  %t = "accel.dma_start"(%a, %b) {shape = array<i64: 16>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 1>, array<i64: 1>]} : (memref<16xf32, 1>, memref<16xf16>) -> !accel.token
  "accel.dma_wait"(%t) : (!accel.token) -> ()
  return
}

// -----

func.func @dma_strided_dram(%a: memref<16xf32, 1>, %b: memref<4x4xf32, strided<[8, 1]>>) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.dma_start' op source memref<4x4xf32, strided<[8, 1]>> must have the identity (row-major, offset 0) layout
  %t = "accel.dma_start"(%a, %b) {shape = array<i64: 16>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 1>, array<i64: 1>]} : (memref<16xf32, 1>, memref<4x4xf32, strided<[8, 1]>>) -> !accel.token
  "accel.dma_wait"(%t) : (!accel.token) -> ()
  return
}

// -----

func.func @strides_per_dim(%a: memref<16xf32, 1>, %b: memref<16xf32>) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.dma_start' op source strides array<i64: 4, 1> must be array<i64> with one stride per dim of shape [16]
  %t = "accel.dma_start"(%a, %b) {shape = array<i64: 16>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 1>, array<i64: 4, 1>]} : (memref<16xf32, 1>, memref<16xf32>) -> !accel.token
  "accel.dma_wait"(%t) : (!accel.token) -> ()
  return
}

// -----

func.func @one_access_per_buffer(%a: memref<16xf32, 1>, %b: memref<16xf32>) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.dma_start' op offsets must list one affine map per buffer (destination, source)
  %t = "accel.dma_start"(%a, %b) {shape = array<i64: 16>, offsets = [affine_map<() -> (0)>], strides = [array<i64: 1>, array<i64: 1>]} : (memref<16xf32, 1>, memref<16xf32>) -> !accel.token
  "accel.dma_wait"(%t) : (!accel.token) -> ()
  return
}

// -----

func.func @map_dims_match_ivs(%a: memref<16xf32, 1>, %b: memref<16xf32>, %i: index) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.dma_start' op source offset map (d0, d1) -> (d0 + d1) has 2 dims but the op has 1 ivs operands; give the map one dim per iv
  %t = "accel.dma_start"(%a, %b, %i) {shape = array<i64: 1>, offsets = [affine_map<(d0) -> (0)>, affine_map<(d0, d1) -> (d0 + d1)>], strides = [array<i64: 1>, array<i64: 1>]} : (memref<16xf32, 1>, memref<16xf32>, index) -> !accel.token
  "accel.dma_wait"(%t) : (!accel.token) -> ()
  return
}

// -----

func.func @linear_maps_only(%a: memref<16xf32, 1>, %b: memref<16xf32>, %i: index) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.dma_start' op source offset map (d0) -> (d0 mod 4): 'd0 mod 4' is not a linear function of the loop induction variables
  %t = "accel.dma_start"(%a, %b, %i) {shape = array<i64: 1>, offsets = [affine_map<(d0) -> (0)>, affine_map<(d0) -> (d0 mod 4)>], strides = [array<i64: 1>, array<i64: 1>]} : (memref<16xf32, 1>, memref<16xf32>, index) -> !accel.token
  "accel.dma_wait"(%t) : (!accel.token) -> ()
  return
}

// -----

func.func @rank_at_most_6(%a: memref<16xf32, 1>, %b: memref<16xf32>) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.dma_start' op shape [1, 1, 1, 1, 1, 1, 1] has rank 7; use 1 to 6 dims
  %t = "accel.dma_start"(%a, %b) {shape = array<i64: 1, 1, 1, 1, 1, 1, 1>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 1, 1, 1, 1, 1, 1, 1>, array<i64: 1, 1, 1, 1, 1, 1, 1>]} : (memref<16xf32, 1>, memref<16xf32>) -> !accel.token
  "accel.dma_wait"(%t) : (!accel.token) -> ()
  return
}

// -----

func.func @positive_shape(%a: memref<16xf32, 1>, %b: memref<16xf32>) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.dma_start' op shape [0] must have positive sizes
  %t = "accel.dma_start"(%a, %b) {shape = array<i64: 0>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 1>, array<i64: 1>]} : (memref<16xf32, 1>, memref<16xf32>) -> !accel.token
  "accel.dma_wait"(%t) : (!accel.token) -> ()
  return
}

// -----

func.func @shape_is_i64(%a: memref<16xf32, 1>, %b: memref<16xf32>) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.dma_start' op shape must be array<i64: ...>, got array<i32: 16>
  %t = "accel.dma_start"(%a, %b) {shape = array<i32: 16>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 1>, array<i64: 1>]} : (memref<16xf32, 1>, memref<16xf32>) -> !accel.token
  "accel.dma_wait"(%t) : (!accel.token) -> ()
  return
}

// -----

func.func @token_never_waited(%a: memref<16xf32, 1>, %b: memref<16xf32>) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.dma_start' op starts a DMA whose token is never waited for; add "accel.dma_wait"(%token)
  %t = "accel.dma_start"(%a, %b) {shape = array<i64: 16>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 1>, array<i64: 1>]} : (memref<16xf32, 1>, memref<16xf32>) -> !accel.token
  return
}

// -----

func.func @token_waited_twice(%a: memref<16xf32, 1>, %b: memref<16xf32>) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.dma_start' op token is waited for twice in one block
  %t = "accel.dma_start"(%a, %b) {shape = array<i64: 16>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 1>, array<i64: 1>]} : (memref<16xf32, 1>, memref<16xf32>) -> !accel.token
  "accel.dma_wait"(%t) : (!accel.token) -> ()
  "accel.dma_wait"(%t) : (!accel.token) -> ()
  return
}

// -----

func.func @dma_out_of_bounds(%a: memref<256xf32, 1>, %b: memref<64x64xf32>) {
  affine.for %i = 0 to 4 {
    affine.for %j = 0 to 5 {
      // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.dma_start' op source view touches elements 0..4111 but memref<64x64xf32> has 4096 elements (0..4095)
      %t = "accel.dma_start"(%a, %b, %i, %j) {shape = array<i64: 16, 16>, offsets = [affine_map<(d0, d1) -> (0)>, affine_map<(d0, d1) -> (d0 * 1024 + d1 * 16)>], strides = [array<i64: 16, 1>, array<i64: 64, 1>]} : (memref<256xf32, 1>, memref<64x64xf32>, index, index) -> !accel.token
      "accel.dma_wait"(%t) : (!accel.token) -> ()
    }
  }
  return
}

// -----

func.func @vector_out_of_bounds(%a: memref<256xf32, 1>) {
  %c3 = arith.constant 3 : index
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.vector' op source 0 view touches elements -3..252 but memref<256xf32, 1> has 256 elements (0..255)
  "accel.vector"(%a, %a, %c3) {kind = "exp", shape = array<i64: 256>, offsets = [affine_map<(d0) -> (0)>, affine_map<(d0) -> (-d0)>], strides = [array<i64: 1>, array<i64: 1>], operandSegmentSizes = array<i32: 1, 1, 0, 0, 1>} : (memref<256xf32, 1>, memref<256xf32, 1>, index) -> ()
  return
}

// -----

func.func @matmul_rank_6(%b: memref<16xf32, 1>) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.matmul' op shape [1, 1, 1, 1, 1] must have 6 dims (M1, M2, N, K1, K2, K3)
  "accel.matmul"(%b, %b, %b) {shape = array<i64: 1, 1, 1, 1, 1>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 0, 0, 0, 0, 0>, array<i64: 0, 0, 0, 0, 0>, array<i64: 0, 0, 0, 0, 0>], accumulate = false} : (memref<16xf32, 1>, memref<16xf32, 1>, memref<16xf32, 1>) -> ()
  return
}

// -----

func.func @matmul_in_dram(%b: memref<16xf32, 1>, %d: memref<16xf32>) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.matmul' op B memref<16xf32> must be a scratchpad buffer (memory space 1); only accel.dma_start reads or writes DRAM
  "accel.matmul"(%b, %b, %d) {shape = array<i64: 1, 1, 1, 1, 1, 1>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 0, 0, 0, 0, 0, 0>, array<i64: 0, 0, 0, 0, 0, 0>, array<i64: 0, 0, 0, 0, 0, 0>], accumulate = false} : (memref<16xf32, 1>, memref<16xf32, 1>, memref<16xf32>) -> ()
  return
}

// -----

func.func @matmul_c_depends_on_k(%b: memref<64xf32, 1>) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.matmul' op C strides [0, 0, 1, 4, 0, 0] must be 0 on K1 (C does not depend on those dims)
  "accel.matmul"(%b, %b, %b) {shape = array<i64: 1, 1, 4, 4, 1, 1>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 0, 0, 1, 4, 0, 0>, array<i64: 0, 0, 0, 1, 0, 0>, array<i64: 0, 0, 1, 4, 0, 0>], accumulate = false} : (memref<64xf32, 1>, memref<64xf32, 1>, memref<64xf32, 1>) -> ()
  return
}

// -----

module attributes {accel.target = {name = "tiny", scratchpad_bytes = 65536 : i64, pe_rows = 4 : i64, pe_cols = 4 : i64}} {
  func.func @matmul_beyond_pe_array(%c: memref<64xf32, 1>, %a: memref<512xf32, 1>, %b: memref<512xf32, 1>) {
    // CHECK: invalid.mlir:[[# @LINE + 2]]:{{[0-9]+}}: error: 'accel.matmul' op reduces over K1*K2*K3 = 8 but target 'tiny' has 4 PE rows; split the reduction into tiles of at most 4 and accumulate
    // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.matmul' op N = 8 exceeds the 4 PE columns of target 'tiny'; tile N by at most 4
    "accel.matmul"(%c, %a, %b) {shape = array<i64: 1, 1, 8, 2, 2, 2>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 0, 0, 1, 0, 0, 0>, array<i64: 0, 0, 0, 4, 2, 1>, array<i64: 0, 0, 1, 32, 16, 8>], accumulate = true} : (memref<64xf32, 1>, memref<512xf32, 1>, memref<512xf32, 1>) -> ()
    return
  }
}

// -----

func.func @vector_unknown_kind(%a: memref<16xf32, 1>) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.vector' op kind 'relu' is unknown; use one of: abs, add, {{.*}}, tanh
  "accel.vector"(%a, %a) {kind = "relu", shape = array<i64: 16>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 1>, array<i64: 1>], operandSegmentSizes = array<i32: 1, 1, 0, 0, 0>} : (memref<16xf32, 1>, memref<16xf32, 1>) -> ()
  return
}

// -----

func.func @vector_arity(%a: memref<16xf32, 1>) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.vector' op kind 'add' reads 2 sources, so it needs 2 buffer source(s), got 1
  "accel.vector"(%a, %a) {kind = "add", shape = array<i64: 16>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 1>, array<i64: 1>], operandSegmentSizes = array<i32: 1, 1, 0, 0, 0>} : (memref<16xf32, 1>, memref<16xf32, 1>) -> ()
  return
}

// -----

func.func @vector_arity_with_scalar(%a: memref<16xf32, 1>) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.vector' op kind 'select' reads 3 sources, so it needs 2 buffer source(s) plus the scalar, got 3
  "accel.vector"(%a, %a, %a, %a) {kind = "select", scalar = 1.0 : f64, shape = array<i64: 16>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>, affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 1>, array<i64: 1>, array<i64: 1>, array<i64: 1>], operandSegmentSizes = array<i32: 1, 1, 1, 1, 0>} : (memref<16xf32, 1>, memref<16xf32, 1>, memref<16xf32, 1>, memref<16xf32, 1>) -> ()
  return
}

// -----

func.func @vector_sources_in_order(%a: memref<16xf32, 1>) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.vector' op sources must fill segments a, b, c in order, got operandSegmentSizes [1, 0, 1, 0, 0]
  "accel.vector"(%a, %a) {kind = "neg", shape = array<i64: 16>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 1>, array<i64: 1>], operandSegmentSizes = array<i32: 1, 0, 1, 0, 0>} : (memref<16xf32, 1>, memref<16xf32, 1>) -> ()
  return
}

// -----

func.func @vector_in_dram(%a: memref<16xf32, 1>, %d: memref<16xf32>) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: 'accel.vector' op destination memref<16xf32> must be a scratchpad buffer
  "accel.vector"(%d, %a) {kind = "copy", shape = array<i64: 16>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 1>, array<i64: 1>], operandSegmentSizes = array<i32: 1, 1, 0, 0, 0>} : (memref<16xf32>, memref<16xf32, 1>) -> ()
  return
}
