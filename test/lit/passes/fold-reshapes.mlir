// RUN: polyfuse-opt %s --split-input-file --pass-pipeline='builtin.module(polyfuse-fold-reshapes)' | filecheck %s

// A batched matmul over batch x heads merged by collapse_shape (attention's q @ k.T as
// torch-mlir lowers it) runs over the two dims instead, on the uncollapsed tensors; its
// zero fill moves to the 4-d shape and the expand_shape of the result goes away.

// CHECK-LABEL: func.func @scores
// CHECK-NOT: tensor.collapse_shape
// CHECK: %[[EMPTY:.*]] = tensor.empty() : tensor<2x3x4x4xf32>
// CHECK: %[[FILL:.*]] = linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%{{.*}} : f32) outs(%[[EMPTY]] : tensor<2x3x4x4xf32>)
// CHECK: %[[S:.*]] = linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "parallel", "parallel", "reduction"]} ins(%arg0, %arg1 : tensor<2x3x4x5xf32>, tensor<2x3x5x4xf32>) outs(%[[FILL]] : tensor<2x3x4x4xf32>)
// CHECK-NOT: tensor.expand_shape
// CHECK: return %[[S]] : tensor<2x3x4x4xf32>

#fill_in = affine_map<(d0, d1, d2) -> ()>
#fill_out = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
#lhs = affine_map<(d0, d1, d2, d3) -> (d0, d1, d3)>
#rhs = affine_map<(d0, d1, d2, d3) -> (d0, d3, d2)>
#out = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2)>
func.func @scores(%q: tensor<2x3x4x5xf32>, %k: tensor<2x3x5x4xf32>) -> tensor<2x3x4x4xf32> {
  %zero = arith.constant 0.0 : f32
  %q3 = tensor.collapse_shape %q [[0, 1], [2], [3]] : tensor<2x3x4x5xf32> into tensor<6x4x5xf32>
  %k3 = tensor.collapse_shape %k [[0, 1], [2], [3]] : tensor<2x3x5x4xf32> into tensor<6x5x4xf32>
  %empty = tensor.empty() : tensor<6x4x4xf32>
  %fill = linalg.generic {indexing_maps = [#fill_in, #fill_out], iterator_types = ["parallel", "parallel", "parallel"]} ins(%zero : f32) outs(%empty : tensor<6x4x4xf32>) {
  ^bb0(%in: f32, %o: f32):
    linalg.yield %in : f32
  } -> tensor<6x4x4xf32>
  %s3 = linalg.generic {indexing_maps = [#lhs, #rhs, #out], iterator_types = ["parallel", "parallel", "parallel", "reduction"]} ins(%q3, %k3 : tensor<6x4x5xf32>, tensor<6x5x4xf32>) outs(%fill : tensor<6x4x4xf32>) {
  ^bb0(%a: f32, %b: f32, %c: f32):
    %m = arith.mulf %a, %b : f32
    %s = arith.addf %c, %m : f32
    linalg.yield %s : f32
  } -> tensor<6x4x4xf32>
  %s = tensor.expand_shape %s3 [[0, 1], [2], [3]] output_shape [2, 3, 4, 4] : tensor<6x4x4xf32> into tensor<2x3x4x4xf32>
  return %s : tensor<2x3x4x4xf32>
}

// -----

// Left alone: the result is used as merged (no expand_shape back).

// CHECK-LABEL: func.func @merged_use
// CHECK: tensor.collapse_shape
// CHECK: linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "parallel", "reduction"]
// CHECK: return %{{.*}} : tensor<6x4x4xf32>

#lhs2 = affine_map<(d0, d1, d2, d3) -> (d0, d1, d3)>
#rhs2 = affine_map<(d0, d1, d2, d3) -> (d0, d3, d2)>
#out2 = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2)>
func.func @merged_use(%q: tensor<2x3x4x5xf32>, %k: tensor<6x5x4xf32>, %init: tensor<6x4x4xf32>) -> tensor<6x4x4xf32> {
  %q3 = tensor.collapse_shape %q [[0, 1], [2], [3]] : tensor<2x3x4x5xf32> into tensor<6x4x5xf32>
  %s3 = linalg.generic {indexing_maps = [#lhs2, #rhs2, #out2], iterator_types = ["parallel", "parallel", "parallel", "reduction"]} ins(%q3, %k : tensor<6x4x5xf32>, tensor<6x5x4xf32>) outs(%init : tensor<6x4x4xf32>) {
  ^bb0(%a: f32, %b: f32, %c: f32):
    %m = arith.mulf %a, %b : f32
    %s = arith.addf %c, %m : f32
    linalg.yield %s : f32
  } -> tensor<6x4x4xf32>
  return %s3 : tensor<6x4x4xf32>
}

// -----

// An elementwise operator between an expand_shape and a collapse_shape of the same
// reassociation (BERT's GELU at batch > 1) runs on the collapsed shape.

// CHECK-LABEL: func.func @gelu_like
// CHECK-NOT: tensor.expand_shape
// CHECK: %[[EMPTY:.*]] = tensor.empty() : tensor<6x5xf32>
// CHECK: %[[Y:.*]] = linalg.generic {{.*}} iterator_types = ["parallel", "parallel"]} ins(%arg0 : tensor<6x5xf32>) outs(%[[EMPTY]] : tensor<6x5xf32>)
// CHECK: math.tanh
// CHECK-NOT: tensor.collapse_shape
// CHECK: return %[[Y]] : tensor<6x5xf32>

#id3 = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
func.func @gelu_like(%h: tensor<6x5xf32>) -> tensor<6x5xf32> {
  %h3 = tensor.expand_shape %h [[0, 1], [2]] output_shape [2, 3, 5] : tensor<6x5xf32> into tensor<2x3x5xf32>
  %empty = tensor.empty() : tensor<2x3x5xf32>
  %y3 = linalg.generic {indexing_maps = [#id3, #id3], iterator_types = ["parallel", "parallel", "parallel"]} ins(%h3 : tensor<2x3x5xf32>) outs(%empty : tensor<2x3x5xf32>) {
  ^bb0(%in: f32, %o: f32):
    %t = math.tanh %in : f32
    linalg.yield %t : f32
  } -> tensor<2x3x5xf32>
  %y = tensor.collapse_shape %y3 [[0, 1], [2]] : tensor<2x3x5xf32> into tensor<6x5xf32>
  return %y : tensor<6x5xf32>
}
