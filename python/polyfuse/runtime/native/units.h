// The accelerator's functional units, as called by the interpreter once it has checked an
// instruction: every operand is in bounds and the shape is non-empty.
#pragma once

#include <cstdint>
#include <vector>

#include "isa.h"
#include "loop_nest.h"

namespace polyfuse::emulator {

// A view resolved at the current loop induction variables.
struct Operand {
  int64_t memory = isa::kNone;  // isa::Memory
  float* data = nullptr;        // element at iteration index (0, ..., 0)
  int64_t strides[kDims] = {};  // element step per iteration-space dim
  int64_t lo = 0, hi = 0;       // touched elements [lo, hi) of its memory (empty for kImm)
};

// Whether two operands may touch a common element (conservative: interval overlap).
inline bool overlaps(const Operand& x, const Operand& y) {
  if (x.memory != y.memory || x.memory == isa::kImm || x.memory == isa::kNone) return false;
  return x.lo < y.hi && y.lo < x.hi;
}

// Scratch memory reused across instructions so the hot loop never allocates.
struct Workspace {
  std::vector<float> a, b, c;
};

// dst = src elementwise over the iteration space.
void copy_unit(const int64_t shape[kDims], const Operand& dst, const Operand& src);

// C[m1,m2,n] (+)= sum_k A[m1,m2,k1,k2,k3] * B[k1,k2,k3,n] with shape (M1, M2, N, K1, K2, K3).
void matmul_unit(const int64_t shape[kDims], const Operand& c, const Operand& a, const Operand& b,
                 bool accumulate, Workspace& workspace);

// dst = f(a, b, c) for every index in row-major order; `sources` holds isa::vector_arity(kind)
// operands. The kind must be valid.
void vector_unit(int64_t kind, const int64_t shape[kDims], const Operand& dst,
                 const Operand* sources);

}  // namespace polyfuse::emulator
