// The `accel` dialect: the instructions of polyfuse's scratchpad accelerator.
//
// Loaded at run time with `irdl.load_dialects` (polyfuse.dialects.accel), so every op
// is written in MLIR's generic syntax. docs/dialect.md describes each op; the ISA the
// ops mirror is python/polyfuse/runtime/isa.py.
//
// Memory: the scratchpad is memref memory space 1 (1-D `memref<N x f32, 1>` buffers),
// DRAM is the default memory space (any static shape, addressed in row-major element
// order). Every view of memory is an affine access pattern: an element offset given by
// an affine map of the enclosing loops' induction variables (the op's `ivs` operands)
// plus per-dimension element strides over the op's iteration space `shape`.
//
// What IRDL cannot say is checked by polyfuse.dialects.verify (`verify_accel`, the
// `polyfuse-verify-accel` pass): memory spaces, attribute contents (list lengths,
// strides per dim, map dims), vector kinds and arity, target limits, static bounds and
// DMA token use. Two IRDL rules shape this file:
//   * a constraint SSA value binds to the first attribute it matches, so every operand
//     gets its own constraint (one constraint for two memref operands would force the
//     two memref types to be equal), and a variadic operand holds values of one type;
//   * extra attributes are allowed, so optional attributes (`scalar`) are left out here.
irdl.dialect @accel {
  // A DMA transfer in flight, produced by accel.dma_start, consumed by accel.dma_wait.
  irdl.type @token {
    irdl.parameters()
  }

  // Reserves a scratchpad buffer at a byte offset chosen by the compiler.
  irdl.operation @alloc {
    %offset = irdl.base "#builtin.integer"
    irdl.attributes {"offset" = %offset}
    %buffer = irdl.base "!builtin.memref"
    irdl.results(buffer: %buffer)
  }

  // Releases a scratchpad buffer.
  irdl.operation @dealloc {
    %buffer = irdl.base "!builtin.memref"
    irdl.operands(buffer: %buffer)
  }

  // Starts an asynchronous copy between DRAM and the scratchpad (views: [dst, src]).
  irdl.operation @dma_start {
    %dst = irdl.base "!builtin.memref"
    %src = irdl.base "!builtin.memref"
    %iv = irdl.is index
    irdl.operands(dst: %dst, src: %src, ivs: variadic %iv)
    %token = irdl.parametric @accel::@token<>
    irdl.results(token: %token)
    %shape = irdl.base "#builtin.dense_array"
    %offsets = irdl.base "#builtin.array"
    %strides = irdl.base "#builtin.array"
    irdl.attributes {"shape" = %shape, "offsets" = %offsets, "strides" = %strides}
  }

  // Waits until the DMA transfer of a token has completed.
  irdl.operation @dma_wait {
    %token = irdl.parametric @accel::@token<>
    irdl.operands(token: %token)
  }

  // PE-array matmul C[m1,m2,n] (+)= sum_k A[m1,m2,k1,k2,k3] * B[k1,k2,k3,n]
  // over shape (M1, M2, N, K1, K2, K3) (views: [c, a, b]).
  irdl.operation @matmul {
    %c = irdl.base "!builtin.memref"
    %a = irdl.base "!builtin.memref"
    %b = irdl.base "!builtin.memref"
    %iv = irdl.is index
    irdl.operands(c: %c, a: %a, b: %b, ivs: variadic %iv)
    %shape = irdl.base "#builtin.dense_array"
    %offsets = irdl.base "#builtin.array"
    %strides = irdl.base "#builtin.array"
    %true = irdl.is true
    %false = irdl.is false
    %accumulate = irdl.any_of(%true, %false)
    irdl.attributes {"shape" = %shape, "offsets" = %offsets, "strides" = %strides,
                     "accumulate" = %accumulate}
  }

  // Vector unit: dst = kind(sources) elementwise, in row-major order of shape
  // (views: [dst, sources...]; an optional `scalar` attribute is the last source).
  // Sources are three optional operands rather than one variadic operand because a
  // variadic operand's values must all have the same type (see above), so
  // operandSegmentSizes = array<i32: 1, #a, #b, #c, #ivs>. The kind is a string checked
  // by the Python verifier, which names the known kinds.
  irdl.operation @vector {
    %dst = irdl.base "!builtin.memref"
    %a = irdl.base "!builtin.memref"
    %b = irdl.base "!builtin.memref"
    %c = irdl.base "!builtin.memref"
    %iv = irdl.is index
    irdl.operands(dst: %dst, a: optional %a, b: optional %b, c: optional %c,
                  ivs: variadic %iv)
    %kind = irdl.base "#builtin.string"
    %shape = irdl.base "#builtin.dense_array"
    %offsets = irdl.base "#builtin.array"
    %strides = irdl.base "#builtin.array"
    irdl.attributes {"kind" = %kind, "shape" = %shape, "offsets" = %offsets,
                     "strides" = %strides}
  }
}
