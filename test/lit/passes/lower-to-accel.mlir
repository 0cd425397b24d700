// RUN: polyfuse-opt %s --pass-pipeline='builtin.module(func.func(linalg-generalize-named-ops),canonicalize,polyfuse-lower-to-accel{target=edge},polyfuse-verify-accel)' | filecheck %s --check-prefix=EDGE
// RUN: polyfuse-opt %s --pass-pipeline='builtin.module(func.func(linalg-generalize-named-ops),canonicalize,polyfuse-lower-to-accel{target=vta},polyfuse-verify-accel)' | filecheck %s --check-prefix=VTA
// RUN: not polyfuse-opt %s --pass-pipeline='builtin.module(polyfuse-lower-to-accel{target=nosuch})' 2>&1 | filecheck %s --check-prefix=BAD
// RUN: polyfuse-opt %s --pass-pipeline='builtin.module(func.func(linalg-generalize-named-ops),canonicalize,polyfuse-lower-to-accel{target=vta embedding=fixed},polyfuse-verify-accel)' | filecheck %s --check-prefix=FIXED
// RUN: polyfuse-opt %s --pass-pipeline='builtin.module(func.func(linalg-generalize-named-ops),canonicalize,polyfuse-lower-to-accel{target=vta embedding=csp},polyfuse-verify-accel)' | filecheck %s --check-prefix=CSP
// RUN: not polyfuse-opt %s --pass-pipeline='builtin.module(polyfuse-lower-to-accel{target=vta embedding=greedy})' 2>&1 | filecheck %s --check-prefix=UNKNOWN

// polyfuse-lower-to-accel lowers each linalg operator on its own: load its operand tiles
// into the scratchpad, compute, store the result. The 64x128 @ 128x96 matmul (80 KiB of
// operands and result) fits the 512 KiB `edge` scratchpad whole, so each operand is one
// DMA, and the PE array (32x32 on edge, 16x16 on vta) is driven by a loop over K and the
// output rows. The ReLU round-trips through a DRAM temporary: no fusion in this pass.

// EDGE: accel.target = {name = "edge", pe_cols = 32 : i64, pe_rows = 32 : i64, scratchpad_bytes = 524288 : i64}
// EDGE: func.func @matmul_relu(%[[A:.*]]: memref<64x128xf32>, %[[B:.*]]: memref<128x96xf32>, %[[OUT:.*]]: memref<64x96xf32>) attributes {accel.num_inputs = 2 : i64}
// EDGE: %[[TMP:.*]] = memref.alloc() : memref<64x96xf32>
// EDGE-DAG: %[[AT:.*]] = "accel.alloc"() {offset = {{[0-9]+}} : i64} : () -> memref<8192xf32, 1>
// EDGE-DAG: %[[BT:.*]] = "accel.alloc"() {offset = {{[0-9]+}} : i64} : () -> memref<12288xf32, 1>
// EDGE-DAG: %[[CT:.*]] = "accel.alloc"() {offset = {{[0-9]+}} : i64} : () -> memref<6144xf32, 1>
// EDGE: "accel.dma_start"(%[[AT]], %[[A]]) {{.*}}shape = array<i64: 8192>
// EDGE: "accel.dma_start"(%[[BT]], %[[B]]) {{.*}}shape = array<i64: 12288>
// The accumulator starts at zero (the linalg.fill, folded into a scalar copy).
// EDGE: "accel.vector"(%[[CT]]) {kind = "copy"{{.*}}scalar = 0.000000e+00
// EDGE: affine.for %{{.*}} = 0 to 2 {
// EDGE-NEXT: affine.for %{{.*}} = 0 to 4 {
// EDGE-NEXT: "accel.matmul"(%[[CT]], %[[BT]], %[[AT]], {{.*}}) {accumulate = true{{.*}}shape = array<i64: 1, 96, 32, 32, 1, 1>
// EDGE: "accel.dma_start"(%[[TMP]], %[[CT]])
// EDGE: "accel.dealloc"(%[[AT]])
// The ReLU: load the temporary, max with 0 on the vector unit, store the result.
// EDGE: "accel.dma_start"(%{{.*}}, %[[TMP]])
// EDGE: "accel.vector"{{.*}}kind = "max"{{.*}}shape = array<i64: 64, 96>
// EDGE: "accel.dma_start"(%[[OUT]], %{{.*}})
// EDGE: return

// VTA: accel.target = {name = "vta", pe_cols = 16 : i64, pe_rows = 16 : i64
// VTA: affine.for %{{.*}} = 0 to 4 {
// VTA-NEXT: affine.for %{{.*}} = 0 to 8 {
// VTA-NEXT: "accel.matmul"{{.*}}shape = array<i64: 1, 96, 16, 16, 1, 1>

// BAD: lower-to-accel.mlir:{{[0-9]+}}:1: error: unknown target 'nosuch'; presets: edge, gemmini, inferentia-like, vta
// BAD: polyfuse-opt: pass 'polyfuse-lower-to-accel' failed

// embedding: a 1x64 @ 64x40 GEMV on vta. Neither operand is a constant, so the 40-row
// side is streamed by default; `fixed` (the VTA reference) keeps that orientation: 40
// streamed rows against one 16x1 column block, 4 reduction blocks (160 PE cycles).
// `csp` (CP-SAT) transposes it: the single row streams, the 40 columns are 4 blocks of
// 10, so 16 instructions of 1 row (16 PE cycles).
// FIXED-LABEL: func.func @gemv
// FIXED: affine.for %{{.*}} = 0 to 4 {
// FIXED-NEXT: "accel.matmul"{{.*}}shape = array<i64: 1, 40, 1, 16, 1, 1>
// CSP-LABEL: func.func @gemv
// CSP: affine.for %{{.*}} = 0 to 4 {
// CSP-NEXT: affine.for %{{.*}} = 0 to 4 {
// CSP-NEXT: "accel.matmul"{{.*}}shape = array<i64: 1, 1, 10, 16, 1, 1>
// UNKNOWN: polyfuse-opt: error: pass 'polyfuse-lower-to-accel': option 'embedding' must be one of csp, fixed, heuristic, got 'greedy'

#map = affine_map<(d0, d1) -> (d0, d1)>
module {
  func.func @matmul_relu(%a: tensor<64x128xf32>, %b: tensor<128x96xf32>) -> tensor<64x96xf32> {
    %zero = arith.constant 0.0 : f32
    %empty = tensor.empty() : tensor<64x96xf32>
    %init = linalg.fill ins(%zero : f32) outs(%empty : tensor<64x96xf32>) -> tensor<64x96xf32>
    %mm = linalg.matmul ins(%a, %b : tensor<64x128xf32>, tensor<128x96xf32>) outs(%init : tensor<64x96xf32>) -> tensor<64x96xf32>
    %relu = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%mm : tensor<64x96xf32>) outs(%empty : tensor<64x96xf32>) {
    ^bb0(%x: f32, %o: f32):
      %m = arith.maximumf %x, %zero : f32
      linalg.yield %m : f32
    } -> tensor<64x96xf32>
    return %relu : tensor<64x96xf32>
  }
  func.func @gemv(%x: tensor<1x64xf32>, %w: tensor<64x40xf32>) -> tensor<1x40xf32> {
    %zero = arith.constant 0.0 : f32
    %empty = tensor.empty() : tensor<1x40xf32>
    %init = linalg.fill ins(%zero : f32) outs(%empty : tensor<1x40xf32>) -> tensor<1x40xf32>
    %y = linalg.matmul ins(%x, %w : tensor<1x64xf32>, tensor<64x40xf32>) outs(%init : tensor<1x40xf32>) -> tensor<1x40xf32>
    return %y : tensor<1x40xf32>
  }
}
