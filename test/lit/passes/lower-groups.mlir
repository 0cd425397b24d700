// RUN: polyfuse-opt %s --pass-pipeline='builtin.module(polyfuse-lower-groups,polyfuse-verify-accel)' | filecheck %s

// polyfuse-lower-groups lowers a group from its attributes alone. The group below (what
// polyfuse-form-groups writes for two matmuls with their ReLUs on edge) keeps its three
// internal storages (the matmul results, the first ReLU's output) in the scratchpad
// from byte 0: no DMA reads or writes them. x, w1 and w2 are loaded once, y stored once.

// CHECK-LABEL: func.func @two_matmuls
// CHECK-SAME: accel.num_inputs = 3 : i64, accel.placed
// CHECK: %[[M1:.*]] = "accel.alloc"() {offset = 0 : i64} : () -> memref<2048xf32, 1>
// CHECK: %[[R1:.*]] = "accel.alloc"() {offset = 8192 : i64} : () -> memref<2048xf32, 1>
// CHECK: %[[M2:.*]] = "accel.alloc"() {offset = 16384 : i64} : () -> memref<256xf32, 1>
// CHECK-NOT: "accel.dma_start"(%[[M1]]
// CHECK-NOT: "accel.dma_start"(%[[R1]]
// CHECK-NOT: "accel.dma_start"(%[[M2]]
// CHECK-NOT: "accel.dma_start"({{[^)]*}}, %[[M1]])
// CHECK-NOT: "accel.dma_start"({{[^)]*}}, %[[R1]])
// CHECK-NOT: "accel.dma_start"({{[^)]*}}, %[[M2]])
// CHECK: "accel.dma_start"(%{{.*}}, %arg0)
// CHECK-NOT: "accel.dma_start"({{[^)]*}}, %[[M1]])
// CHECK: "accel.dma_start"(%{{.*}}, %arg1)
// CHECK-NOT: "accel.dma_start"({{[^)]*}}, %[[R1]])
// CHECK: "accel.dma_start"(%{{.*}}, %arg2)
// CHECK-NOT: "accel.dma_start"({{[^)]*}}, %[[M2]])
// CHECK: "accel.dma_start"(%arg3, %{{.*}})
// CHECK: return

#map = affine_map<(d0, d1) -> ()>
#map1 = affine_map<(d0, d1) -> (d0, d1)>
#map2 = affine_map<(d0, d1, d2) -> (d0, d2)>
#map3 = affine_map<(d0, d1, d2) -> (d2, d1)>
#map4 = affine_map<(d0, d1, d2) -> (d0, d1)>
module {
  func.func @two_matmuls(%arg0: tensor<16x32xf32>, %arg1: tensor<32x128xf32>, %arg2: tensor<128x16xf32>) -> tensor<16x16xf32> attributes {accel.fusion_planned} {
    %cst = arith.constant 0.000000e+00 : f32
    %0 = tensor.empty() : tensor<16x128xf32>
    %1 = linalg.generic {indexing_maps = [#map, #map1], iterator_types = ["parallel", "parallel"]} ins(%cst : f32) outs(%0 : tensor<16x128xf32>) {
    ^bb0(%in: f32, %out: f32):
      linalg.yield %in : f32
    } -> tensor<16x128xf32>
    %2 = scf.execute_region -> tensor<16x16xf32> no_inline {
      %3 = linalg.generic {indexing_maps = [#map2, #map3, #map4], iterator_types = ["parallel", "parallel", "reduction"]} ins(%arg0, %arg1 : tensor<16x32xf32>, tensor<32x128xf32>) outs(%1 : tensor<16x128xf32>) attrs =  {accel.tiling = {bytes = 18432 : i64, capacity = 124928 : i64, cycles = 1.670000e+03 : f64, dummy = false, extents = array<i64: 16, 128, 32>, loaded_elements = 0 : i64, offsets, shared_loop, shared_loops = array<i64>, stages = 1 : i64, tiling = {footprint_elements = 4608 : i64, load_depth = array<i64: 0, 0>, order = array<i64>, tile = array<i64: 16, 128, 32>, traffic_elements = 4608 : i64, type = "Tiling"}, type = "OperatorPlan"}} {
      ^bb0(%in: f32, %in_0: f32, %out: f32):
        %9 = arith.mulf %in, %in_0 : f32
        %10 = arith.addf %out, %9 : f32
        linalg.yield %10 : f32
      } -> tensor<16x128xf32>
      %4 = linalg.generic {indexing_maps = [#map1, #map1], iterator_types = ["parallel", "parallel"]} ins(%3 : tensor<16x128xf32>) outs(%0 : tensor<16x128xf32>) attrs =  {accel.tiling = {bytes = 0 : i64, capacity = 124928 : i64, cycles = 1.720000e+02 : f64, dummy = true, extents = array<i64: 16, 128>, loaded_elements = 0 : i64, offsets, shared_loop, shared_loops = array<i64>, stages = 1 : i64, tiling = {footprint_elements = 2049 : i64, load_depth = array<i64: 0>, order = array<i64>, tile = array<i64: 16, 128>, traffic_elements = 1 : i64, type = "Tiling"}, type = "OperatorPlan"}} {
      ^bb0(%in: f32, %out: f32):
        %9 = arith.maximumf %in, %cst : f32
        linalg.yield %9 : f32
      } -> tensor<16x128xf32>
      %5 = tensor.empty() : tensor<16x16xf32>
      %6 = linalg.generic {indexing_maps = [#map, #map1], iterator_types = ["parallel", "parallel"]} ins(%cst : f32) outs(%5 : tensor<16x16xf32>) {
      ^bb0(%in: f32, %out: f32):
        linalg.yield %in : f32
      } -> tensor<16x16xf32>
      %7 = linalg.generic {indexing_maps = [#map2, #map3, #map4], iterator_types = ["parallel", "parallel", "reduction"]} ins(%4, %arg2 : tensor<16x128xf32>, tensor<128x16xf32>) outs(%6 : tensor<16x16xf32>) attrs =  {accel.tiling = {bytes = 8192 : i64, capacity = 124928 : i64, cycles = 1.148000e+03 : f64, dummy = false, extents = array<i64: 16, 16, 128>, loaded_elements = 0 : i64, offsets, shared_loop, shared_loops = array<i64>, stages = 1 : i64, tiling = {footprint_elements = 2048 : i64, load_depth = array<i64: 0>, order = array<i64>, tile = array<i64: 16, 16, 128>, traffic_elements = 2048 : i64, type = "Tiling"}, type = "OperatorPlan"}} {
      ^bb0(%in: f32, %in_0: f32, %out: f32):
        %9 = arith.mulf %in, %in_0 : f32
        %10 = arith.addf %out, %9 : f32
        linalg.yield %10 : f32
      } -> tensor<16x16xf32>
      %8 = linalg.generic {indexing_maps = [#map1, #map1], iterator_types = ["parallel", "parallel"]} ins(%7 : tensor<16x16xf32>) outs(%5 : tensor<16x16xf32>) attrs =  {accel.tiling = {bytes = 1024 : i64, capacity = 124928 : i64, cycles = 1.760000e+02 : f64, dummy = false, extents = array<i64: 16, 16>, loaded_elements = 0 : i64, offsets, shared_loop, shared_loops = array<i64>, stages = 1 : i64, tiling = {footprint_elements = 512 : i64, load_depth = array<i64: 0>, order = array<i64>, tile = array<i64: 16, 16>, traffic_elements = 256 : i64, type = "Tiling"}, type = "OperatorPlan"}} {
      ^bb0(%in: f32, %out: f32):
        %9 = arith.maximumf %in, %cst : f32
        linalg.yield %9 : f32
      } -> tensor<16x16xf32>
      scf.yield %8 : tensor<16x16xf32>
    } {accel.group = {carry_in, carry_out, internal = {set = [{storage = array<i64: 0, -1>}, {storage = array<i64: 1, -1>}, {storage = array<i64: 2, -1>}]}, outer = array<i64>, outer_tile = 0 : i64, resident = {dict = []}, resident_elements = 4352 : i64, slice_shapes = {dict = [[{storage = array<i64: 1, -1>}, array<i64: 16, 128>], [{storage = array<i64: 2, -1>}, array<i64: 16, 16>], [{storage = array<i64: 0, -1>}, array<i64: 16, 128>]]}, trips = 1 : i64, type = "GroupPlan"}}
    return %2 : tensor<16x16xf32>
  }
}
