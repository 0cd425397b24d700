// RUN: polyfuse-opt %s --pass-pipeline='builtin.module(polyfuse-dump-poly)' | filecheck %s

// A 3x3 convolution (padding 1, one channel) of a 6x6 input followed by a ReLU.
// The model names the padded input V1, a view of arg0 shifted by the low padding; the
// convolution reads it at (h + kh, w + kw); the ReLU reads the convolution's result.

// CHECK: polyhedral model of @conv_relu
// CHECK: tensor arg0 : input [6, 6]
// CHECK: tensor V1 = view of arg0: { V1[v0, v1] -> arg0[-1 + v0, -1 + v1] : 0 < v0 <= 6 and 0 < v1 <= 6 }
// CHECK: statement S0
// CHECK-NEXT: domain { S0[d0, d1, d2, d3] : 0 <= d0 <= 5 and 0 <= d1 <= 5 and 0 <= d2 <= 2 and 0 <= d3 <= 2 }
// CHECK-NEXT: read V1 { S0[d0, d1, d2, d3] -> V1[d0 + d2, d1 + d3] :
// CHECK-NEXT: read W0 { S0[d0, d1, d2, d3] -> W0[d2, d3] :
// CHECK-NEXT: read E2 { S0[d0, d1, d2, d3] -> E2[d0, d1] :
// CHECK-NEXT: write T0 { S0[d0, d1, d2, d3] -> T0[d0, d1] :
// CHECK: statement S1
// CHECK-NEXT: domain { S1[d0, d1] : 0 <= d0 <= 5 and 0 <= d1 <= 5 }
// CHECK-NEXT: read T0 { S1[d0, d1] -> T0[d0, d1] :
// CHECK-NEXT: write T1 { S1[d0, d1] -> T1[d0, d1] :
// The ReLU reads the value of the last reduction step (kh = kw = 2) at the same pixel.
// CHECK: flow S0 -> S1 through T0: { S1[d0, d1] -> S0[d0' = d0, d1' = d1, d2 = 2, d3 = 2] : 0 <= d0 <= 5 and 0 <= d1 <= 5 }
// CHECK-LABEL: func.func @conv_relu

#in = affine_map<(h, w, kh, kw) -> (h + kh, w + kw)>
#wt = affine_map<(h, w, kh, kw) -> (kh, kw)>
#out = affine_map<(h, w, kh, kw) -> (h, w)>
#id = affine_map<(h, w) -> (h, w)>
func.func @conv_relu(%x: tensor<6x6xf32>) -> tensor<6x6xf32> {
  %zero = arith.constant 0.0 : f32
  %w = arith.constant dense<1.0> : tensor<3x3xf32>
  %padded = tensor.pad %x low[1, 1] high[1, 1] {
  ^bb0(%i: index, %j: index):
    tensor.yield %zero : f32
  } : tensor<6x6xf32> to tensor<8x8xf32>
  %init = tensor.empty() : tensor<6x6xf32>
  %conv = linalg.generic {indexing_maps = [#in, #wt, #out], iterator_types = ["parallel", "parallel", "reduction", "reduction"]}
      ins(%padded, %w : tensor<8x8xf32>, tensor<3x3xf32>) outs(%init : tensor<6x6xf32>) {
  ^bb0(%a: f32, %b: f32, %c: f32):
    %m = arith.mulf %a, %b : f32
    %s = arith.addf %c, %m : f32
    linalg.yield %s : f32
  } -> tensor<6x6xf32>
  %relu = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%conv : tensor<6x6xf32>) outs(%init : tensor<6x6xf32>) {
  ^bb0(%a: f32, %c: f32):
    %r = arith.maximumf %a, %zero : f32
    linalg.yield %r : f32
  } -> tensor<6x6xf32>
  return %relu : tensor<6x6xf32>
}
