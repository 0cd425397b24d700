// RUN: polyfuse-opt %s --pass-pipeline='builtin.module(polyfuse-sink-copies)' | filecheck %s

// A transpose computed early (BERT's query head permute, emitted before the key
// projection) moves to just before its first user; the operator in between, and an
// operator that computes something (not a copy), stay where they are.

// CHECK-LABEL: func.func @permute_then_use
// CHECK: %[[K:.*]] = linalg.generic {{.*}} ins(%arg1 : tensor<4x6xf32>)
// CHECK-NEXT: ^bb0
// CHECK-NEXT: arith.negf
// CHECK: %[[QT:.*]] = linalg.generic {{.*}} ins(%arg0 : tensor<4x6xf32>)
// CHECK: linalg.generic {{.*}} ins(%[[QT]], %[[K]] : tensor<6x4xf32>, tensor<4x6xf32>)

#id = affine_map<(d0, d1) -> (d0, d1)>
#t = affine_map<(d0, d1) -> (d1, d0)>
#a = affine_map<(d0, d1, d2) -> (d0, d2)>
#b = affine_map<(d0, d1, d2) -> (d2, d1)>
#c = affine_map<(d0, d1, d2) -> (d0, d1)>
func.func @permute_then_use(%q: tensor<4x6xf32>, %k: tensor<4x6xf32>) -> tensor<6x6xf32> {
  %e64 = tensor.empty() : tensor<6x4xf32>
  %qt = linalg.generic {indexing_maps = [#t, #id], iterator_types = ["parallel", "parallel"]} ins(%q : tensor<4x6xf32>) outs(%e64 : tensor<6x4xf32>) {
  ^bb0(%in: f32, %o: f32):
    linalg.yield %in : f32
  } -> tensor<6x4xf32>
  %e46 = tensor.empty() : tensor<4x6xf32>
  %kn = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]} ins(%k : tensor<4x6xf32>) outs(%e46 : tensor<4x6xf32>) {
  ^bb0(%in: f32, %o: f32):
    %n = arith.negf %in : f32
    linalg.yield %n : f32
  } -> tensor<4x6xf32>
  %zero = arith.constant 0.0 : f32
  %e66 = tensor.empty() : tensor<6x6xf32>
  %s = linalg.generic {indexing_maps = [#a, #b, #c], iterator_types = ["parallel", "parallel", "reduction"]} ins(%qt, %kn : tensor<6x4xf32>, tensor<4x6xf32>) outs(%e66 : tensor<6x6xf32>) {
  ^bb0(%x: f32, %y: f32, %acc: f32):
    %m = arith.mulf %x, %y : f32
    %r = arith.addf %acc, %m : f32
    linalg.yield %r : f32
  } -> tensor<6x6xf32>
  return %s : tensor<6x6xf32>
}
