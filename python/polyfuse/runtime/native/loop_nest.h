// Walking an instruction's six-dim iteration space over several strided operands at once.
//
// Every unit (DMA, vector, GEMM packing) does the same thing: visit the index space in row-major
// order and touch each operand at base + sum(stride * index). Doing that one row at a time, with
// the row's inner strides known, lets each unit specialise its innermost loop (memcpy, SIMD).
#pragma once

#include <cstdint>

#include "isa.h"

namespace polyfuse::emulator {

constexpr int kDims = isa::kMaxDims;

// An iteration space shared by `Count` operands, dims outermost first.
template <int Count>
struct LoopNest {
  int64_t sizes[kDims];
  int64_t strides[Count][kDims];
};

// Returns the same visit order with fewer, longer rows: drops size-1 dims and merges a dim into
// the one inside it when every operand steps through both as one evenly spaced run. The result is
// right-aligned (unused outer dims have size 1) so the innermost row is always dim kDims - 1.
template <int Count>
LoopNest<Count> simplify(const LoopNest<Count>& nest) {
  LoopNest<Count> out;
  int rank = 0;  // dims kept so far, filled from the innermost outwards
  for (int d = kDims - 1; d >= 0; --d) {
    if (nest.sizes[d] == 1) continue;
    const int inner = kDims - rank;  // index in `out` of the last dim kept
    bool mergeable = rank > 0;
    for (int k = 0; k < Count && mergeable; ++k)
      mergeable = nest.strides[k][d] == out.strides[k][inner] * out.sizes[inner];
    if (mergeable) {
      out.sizes[inner] *= nest.sizes[d];
      continue;
    }
    ++rank;
    out.sizes[kDims - rank] = nest.sizes[d];
    for (int k = 0; k < Count; ++k) out.strides[k][kDims - rank] = nest.strides[k][d];
  }
  for (int d = 0; d < kDims - rank; ++d) {
    out.sizes[d] = 1;
    for (int k = 0; k < Count; ++k) out.strides[k][d] = 0;
  }
  if (rank == 0) out.sizes[kDims - 1] = 1;  // a single element is a row of one
  return out;
}

// Calls row(pointers, length) for each innermost row in row-major order; pointers[k] is operand
// k's first element of the row and its step within the row is nest.strides[k][kDims - 1].
template <int Count, class RowFn>
void for_each_row(const LoopNest<Count>& nest, float* const bases[Count], RowFn&& row) {
  const int64_t* n = nest.sizes;
  float* p[Count];
  for (int64_t i0 = 0; i0 < n[0]; ++i0)
    for (int64_t i1 = 0; i1 < n[1]; ++i1)
      for (int64_t i2 = 0; i2 < n[2]; ++i2)
        for (int64_t i3 = 0; i3 < n[3]; ++i3)
          for (int64_t i4 = 0; i4 < n[4]; ++i4) {
            for (int k = 0; k < Count; ++k) {
              const int64_t* s = nest.strides[k];
              p[k] = bases[k] + i0 * s[0] + i1 * s[1] + i2 * s[2] + i3 * s[3] + i4 * s[4];
            }
            row(p, n[5]);
          }
}

}  // namespace polyfuse::emulator
