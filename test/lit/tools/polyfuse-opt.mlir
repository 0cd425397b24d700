// Upstream and polyfuse passes in one pipeline.
// RUN: polyfuse-opt %s --pass-pipeline='builtin.module(canonicalize,polyfuse-verify-accel,func.func(cse))' | filecheck %s --check-prefix=MIXED
// The input can come from stdin, and the pipeline may omit the builtin.module anchor.
// RUN: polyfuse-opt - --pass-pipeline='canonicalize' < %s | filecheck %s --check-prefix=MIXED
// RUN: polyfuse-opt %s --pass-pipeline='builtin.module(canonicalize,polyfuse-verify-accel)' --mlir-print-ir-after-all -o %t.mlir 2>&1 | filecheck %s --check-prefix=IR-AFTER
// RUN: polyfuse-opt %s --mlir-elide-elementsattrs-if-larger 2 | filecheck %s --check-prefix=ELIDE
// RUN: polyfuse-opt --list-passes | filecheck %s --check-prefix=LIST
// RUN: not polyfuse-opt %s --pass-pipeline='builtin.module(no-such-pass)' 2>&1 | filecheck %s --check-prefix=UNKNOWN
// RUN: not polyfuse-opt %s --pass-pipeline='builtin.module(polyfuse-no-such-pass)' 2>&1 | filecheck %s --check-prefix=UNKNOWN-POLYFUSE
// RUN: not polyfuse-opt %s --pass-pipeline='builtin.module(polyfuse-verify-accel{depth=2})' 2>&1 | filecheck %s --check-prefix=BAD-OPTION
// RUN: not polyfuse-opt %s --pass-pipeline='builtin.module(func.func(polyfuse-verify-accel))' 2>&1 | filecheck %s --check-prefix=NESTED
// RUN: not polyfuse-opt %S/Inputs/parse-error.mlir 2>&1 | filecheck %s --check-prefix=PARSE
// RUN: rm -rf %t.repro
// RUN: not polyfuse-opt %S/Inputs/unwaited-dma.mlir --pass-pipeline='builtin.module(canonicalize,polyfuse-verify-accel)' --reproducer-dir=%t.repro 2>&1 | filecheck %s --check-prefix=FAIL
// The reproducer replays the failing pass alone on the IR it saw.
// RUN: not polyfuse-opt %t.repro/polyfuse-repro-*.mlir --pass-pipeline='builtin.module(polyfuse-verify-accel)' --reproducer-dir=%t.repro2 2>&1 | filecheck %s --check-prefix=FAIL

func.func @add_zero(%spm: memref<16xf32, 1>, %dram: memref<16xf32>, %x: index) -> index {
  %c0 = arith.constant 0 : index
  %y = arith.addi %x, %c0 : index
  %t = "accel.dma_start"(%spm, %dram) {shape = array<i64: 16>, offsets = [affine_map<() -> (0)>, affine_map<() -> (0)>], strides = [array<i64: 1>, array<i64: 1>]} : (memref<16xf32, 1>, memref<16xf32>) -> !accel.token
  "accel.dma_wait"(%t) : (!accel.token) -> ()
  return %y : index
}

func.func @weights() -> tensor<3xf32> {
  %w = arith.constant dense<[1.0, 2.0, 3.0]> : tensor<3xf32>
  return %w : tensor<3xf32>
}

// MIXED-LABEL: func.func @add_zero
// MIXED-SAME: (%{{.+}}: memref<16xf32, 1>, %{{.+}}: memref<16xf32>, %[[X:.+]]: index)
// MIXED-NOT: arith.addi
// MIXED: "accel.dma_start"
// MIXED: "accel.dma_wait"
// MIXED: return %[[X]] : index

// IR-AFTER: IR Dump After CanonicalizerPass: canonicalize
// IR-AFTER: IR Dump After VerifyAccel: polyfuse-verify-accel
// IR-AFTER-NOT: arith.addi

// ELIDE-LABEL: func.func @weights
// ELIDE: dense_resource<__elided__>

// LIST: polyfuse passes:
// LIST: polyfuse-verify-accel
// LIST-NEXT: Check every accel op against the rules IRDL cannot express.
// LIST: Every upstream MLIR pass

// UNKNOWN: polyfuse-opt: error: invalid pass 'no-such-pass': 'no-such-pass' does not refer to a registered pass or pass pipeline

// UNKNOWN-POLYFUSE: polyfuse-opt: error: unknown polyfuse pass 'polyfuse-no-such-pass'; polyfuse passes: {{.*}}polyfuse-verify-accel

// BAD-OPTION: polyfuse-opt: error: pass 'polyfuse-verify-accel' has no option 'depth'

// NESTED: polyfuse-opt: error: 'polyfuse-verify-accel' is nested in 'func.func(polyfuse-verify-accel)', but polyfuse passes run on builtin.module

// PARSE: {{.*}}parse-error.mlir:3:25: error: expected ':'
// PARSE-NOT: Traceback

// FAIL: {{.*}}unwaited-dma.mlir:3:8: error: 'accel.dma_start' op starts a DMA whose token is never waited for
// FAIL-NEXT: polyfuse-opt: pass 'polyfuse-verify-accel' failed; the IR before it is in {{.*}}polyfuse-repro-{{.*}}.mlir; reproduce with:
// FAIL-NEXT: polyfuse-opt {{.*}}polyfuse-repro-{{.*}}.mlir --pass-pipeline='builtin.module(polyfuse-verify-accel)'
