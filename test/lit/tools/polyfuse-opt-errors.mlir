// Bad input to polyfuse-opt: each error says what, where (file:line:col) and what to do,
// with no Python traceback, and a failing pass leaves a reproducer.
// RUN: rm -rf %t.repro
// RUN: not polyfuse-opt %s --split-input-file --pass-pipeline='builtin.module(polyfuse-lower-to-accel)' --reproducer-dir=%t.repro 2>&1 | filecheck %s --check-prefix=LOWER
// RUN: not polyfuse-opt %s --pass-pipeline='builtin.module(canonicalize{no-such-option=1})' 2>&1 | filecheck %s --check-prefix=OPTION
// RUN: not polyfuse-opt %s --pass-pipeline='builtin.module(canonicalize,func.func(cse)' 2>&1 | filecheck %s --check-prefix=BRACKETS
// RUN: not polyfuse-opt %s --pass-pipeline='builtin.module(polyfuse-lower-to-accel{target=no-such-target})' --split-input-file 2>&1 | filecheck %s --check-prefix=TARGET
// RUN: not polyfuse-opt %s --pass-pipeline='builtin.module(polyfuse-lower-to-accel{buffers=two})' 2>&1 | filecheck %s --check-prefix=OPTION-TYPE
// RUN: not polyfuse-opt %t.no-such-file.mlir 2>&1 | filecheck %s --check-prefix=MISSING
// RUN: not polyfuse-opt %s --verify-each=maybe 2>&1 | filecheck %s --check-prefix=FLAG
// RUN: not polyfuse-opt %s --pass-pipeline='builtin.module(polyfuse-lower-to-accel{schedule=xyz})' 2>&1 | filecheck %s --check-prefix=SCHEDULE
// RUN: not polyfuse-opt %s --pass-pipeline='builtin.module(polyfuse-lower-to-accel{embedding=nope})' 2>&1 | filecheck %s --check-prefix=EMBEDDING
// RUN: not polyfuse-opt %s --pass-pipeline='builtin.module(polyfuse-lower-to-accel{buffers=-1})' 2>&1 | filecheck %s --check-prefix=BUFFERS
// RUN: not polyfuse-opt %s --pass-pipeline='builtin.module(polyfuse-lower-to-accel{buffers=0})' 2>&1 | filecheck %s --check-prefix=BUFFERS
// RUN: not polyfuse-opt %s --pass-pipeline='builtin.module(polyfuse-lower-to-accel{buffers=1e20})' 2>&1 | filecheck %s --check-prefix=BUFFERS
// RUN: not polyfuse-opt %s --pass-pipeline='builtin.module(polyfuse-lower-to-accel{buffers=100000000000000000000})' 2>&1 | filecheck %s --check-prefix=BUFFERS
// RUN: %python -c "open(r'%t.latin1.mlir', 'wb').write(b'// caf\xe9\nfunc.func @f() { return }\n')"
// RUN: not polyfuse-opt %t.latin1.mlir 2>&1 | filecheck %s --check-prefix=NOT-UTF8
// RUN: %python -c "open(r'%t.binary.mlir', 'wb').write(b'func\x00\x01\x02')"
// RUN: not polyfuse-opt %t.binary.mlir 2>&1 | filecheck %s --check-prefix=BINARY
// RUN: rm -rf %t.no-such-folder
// RUN: not polyfuse-opt %s -o %t.no-such-folder/out.mlir 2>&1 | filecheck %s --check-prefix=OUTPUT
// RUN: not polyfuse-opt %s --pass-pipeline='builtin.module(polyfuse-lower-to-accel)' --reproducer-dir %s 2>&1 | filecheck %s --check-prefix=REPRO-FILE

// A function argument that is not a tensor.
func.func @forward(%arg0: tensor<4xf32>, %i: index) -> f32 {
  %0 = tensor.extract %arg0[%i] : tensor<4xf32>
  return %0 : f32
}
// LOWER: error: function @forward: argument or result type index is not a ranked tensor of f32; polyfuse-lower-to-accel takes functions from f32 tensors to f32 tensors
// LOWER-NEXT: polyfuse-opt: pass 'polyfuse-lower-to-accel' failed; the IR before it is in {{.*}}polyfuse-repro-{{.*}}.mlir; reproduce with:
// LOWER-NEXT: polyfuse-opt {{.*}}polyfuse-repro-{{.*}}.mlir --pass-pipeline='builtin.module(polyfuse-lower-to-accel)'

// -----

// A body op the vector unit does not have: the error points at the op.
#map = affine_map<(d0) -> (d0)>
func.func @forward(%arg0: tensor<4xf32>) -> tensor<4xf32> {
  %0 = tensor.empty() : tensor<4xf32>
  %1 = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel"]} ins(%arg0 : tensor<4xf32>) outs(%0 : tensor<4xf32>) {
  ^bb0(%in: f32, %out: f32):
    %2 = math.atan %in : f32
    linalg.yield %2 : f32
  } -> tensor<4xf32>
  return %1 : tensor<4xf32>
}
// LOWER: polyfuse-opt-errors.mlir:[[# @LINE - 5]]:10: error: 'math.atan' inside a linalg.generic body is not supported on the vector unit
// LOWER-NEXT: polyfuse-opt: pass 'polyfuse-lower-to-accel' failed

// OPTION: polyfuse-opt: error: invalid pass 'canonicalize{no-such-option=1}': {{.*}}no-such-option
// BRACKETS: polyfuse-opt: error: unbalanced brackets or quotes in pass pipeline
// TARGET: error: unknown target 'no-such-target'; presets: edge, {{.*}} (to use your own target, pass the path of its .toml file
// OPTION-TYPE: polyfuse-opt: error: pass 'polyfuse-lower-to-accel': option 'buffers' expects an integer from 1 to 8, got 'two'
// MISSING: polyfuse-opt: error: cannot read '{{.*}}no-such-file.mlir': No such file or directory
// FLAG: polyfuse-opt: error: argument --verify-each{{.*}}: expected true or false, got 'maybe'
// SCHEDULE: polyfuse-opt: error: pass 'polyfuse-lower-to-accel': option 'schedule' must be one of layer-by-layer, fused, got 'xyz'
// SCHEDULE-NOT: Traceback
// EMBEDDING: polyfuse-opt: error: pass 'polyfuse-lower-to-accel': option 'embedding' must be one of csp, fixed, heuristic, got 'nope'
// EMBEDDING-NOT: Traceback
// BUFFERS: polyfuse-opt: error: pass 'polyfuse-lower-to-accel': option 'buffers' {{must be|expects}} an integer from 1 to 8, got '{{-1|0|1e20|100000000000000000000}}'
// NOT-UTF8: polyfuse-opt: error: '{{.*}}latin1.mlir' is not an MLIR file: byte 0xe9 on line 1 is not UTF-8 text; polyfuse-opt reads MLIR as UTF-8 text or bytecode
// BINARY: polyfuse-opt: error: '{{.*}}binary.mlir' is not an MLIR file: line 1 has a NUL byte (a binary file?)
// OUTPUT: polyfuse-opt: error: -o {{.*}}no-such-folder/out.mlir: folder '{{.*}}no-such-folder' does not exist; create it first
// REPRO-FILE: polyfuse-opt: error: --reproducer-dir {{.*}}polyfuse-opt-errors.mlir: is a file, not a folder; give a folder (it is created if it does not exist)
