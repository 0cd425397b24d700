// RUN: polyfuse-opt %s --pass-pipeline='builtin.module(func.func(linalg-generalize-named-ops),canonicalize,polyfuse-form-groups{traffic-first=true})' | filecheck %s --check-prefix=ONE
// RUN: polyfuse-opt %s --pass-pipeline='builtin.module(func.func(linalg-generalize-named-ops),canonicalize,polyfuse-form-groups{traffic-first=true max-group-operators=1})' | filecheck %s --check-prefix=SPLIT

// polyfuse-form-groups writes the planner's groups into the IR. Two 16-row matmuls with
// their ReLUs (x: 16x32, h: 16x128, y: 16x16) fit the 512 KiB edge scratchpad whole:
// one group, every intermediate internal (three storages: both matmul results and the
// first ReLU's), nothing carried. With one large operator per group the matmuls split:
// the first matmul alone leaves its result (position 0, -1: its operator 0's result) on
// chip and the second group (ReLU, matmul, ReLU) finds it there ("carried").

// ONE-LABEL: func.func @two_matmuls
// ONE-SAME: attributes {accel.fusion_planned}
// ONE: scf.execute_region -> tensor<16x16xf32> no_inline {
// ONE: linalg.generic {{.*}}accel.tiling = {{.*}}tile = array<i64: 16, 128, 32>
// ONE: linalg.generic {{.*}}accel.tiling =
// ONE: linalg.generic {{.*}}accel.tiling = {{.*}}tile = array<i64: 16, 16, 128>
// ONE: linalg.generic {{.*}}accel.tiling =
// ONE: scf.yield
// ONE-NEXT: } {accel.group = {carry_in, carry_out, internal = {set = [{storage = array<i64: 0, -1>}, {storage = array<i64: 1, -1>}, {storage = array<i64: 2, -1>}]}
// ONE-SAME: type = "GroupPlan"
// ONE-NOT: scf.execute_region

// SPLIT-LABEL: func.func @two_matmuls
// SPLIT: scf.execute_region -> tensor<16x128xf32> no_inline {
// SPLIT: } {accel.group = {carry_in, carry_out = {storage = array<i64: 0, -1>}
// SPLIT: scf.execute_region -> tensor<16x16xf32> no_inline {
// SPLIT: } {accel.group = {carry_in = {storage = "carried"}, carry_out,

func.func @two_matmuls(%x: tensor<16x32xf32>, %w1: tensor<32x128xf32>, %w2: tensor<128x16xf32>) -> tensor<16x16xf32> {
  %zero = arith.constant 0.0 : f32
  %e1 = tensor.empty() : tensor<16x128xf32>
  %f1 = linalg.fill ins(%zero : f32) outs(%e1 : tensor<16x128xf32>) -> tensor<16x128xf32>
  %m1 = linalg.matmul ins(%x, %w1 : tensor<16x32xf32>, tensor<32x128xf32>) outs(%f1 : tensor<16x128xf32>) -> tensor<16x128xf32>
  %r1 = linalg.generic {indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>], iterator_types = ["parallel", "parallel"]} ins(%m1 : tensor<16x128xf32>) outs(%e1 : tensor<16x128xf32>) {
  ^bb0(%a: f32, %b: f32):
    %y = arith.maximumf %a, %zero : f32
    linalg.yield %y : f32
  } -> tensor<16x128xf32>
  %e2 = tensor.empty() : tensor<16x16xf32>
  %f2 = linalg.fill ins(%zero : f32) outs(%e2 : tensor<16x16xf32>) -> tensor<16x16xf32>
  %m2 = linalg.matmul ins(%r1, %w2 : tensor<16x128xf32>, tensor<128x16xf32>) outs(%f2 : tensor<16x16xf32>) -> tensor<16x16xf32>
  %r2 = linalg.generic {indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>], iterator_types = ["parallel", "parallel"]} ins(%m2 : tensor<16x16xf32>) outs(%e2 : tensor<16x16xf32>) {
  ^bb0(%a: f32, %b: f32):
    %y = arith.maximumf %a, %zero : f32
    linalg.yield %y : f32
  } -> tensor<16x16xf32>
  return %r2 : tensor<16x16xf32>
}
