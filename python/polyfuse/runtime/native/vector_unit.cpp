// The vector unit: dst = f(a, b, c) elementwise over a six-dim iteration space, in row-major order.
//
// Two ways to run a row:
//   chunked   gathers strided or broadcast sources into small contiguous buffers, applies f with a
//             loop the compiler vectorises, and scatters the result if dst is strided. Legal when
//             no element is read after it is written within a row: dst shares no element with a
//             source, or a source is exactly dst's view with a non-zero step along the row
//             (an in-place update such as relu).
//   in order  one element at a time, exactly as the ISA specifies. Needed when dst is re-read
//             within a row: a reduction (dst aliases `a` with step 0 along the row) or an
//             overlapping shifted view.
#include <algorithm>
#include <cmath>

#include "units.h"

namespace polyfuse::emulator {
namespace {

// ---- The element functions (isa.VectorKind). Unused arguments are ignored. ----

// arith.maximumf / minimumf: NaN if either side is NaN, and -0 < +0.
inline float maximum(float a, float b) {
  if (a > b) return a;
  if (b > a) return b;
  if (a == b) return std::signbit(a) ? b : a;
  return a + b;  // unordered: one side is NaN, and the sum propagates it
}
inline float minimum(float a, float b) {
  if (a < b) return a;
  if (b < a) return b;
  if (a == b) return std::signbit(a) ? a : b;
  return a + b;
}
inline float flag(bool value) { return value ? 1.0f : 0.0f; }
inline bool unordered(float a, float b) { return std::isnan(a) || std::isnan(b); }

// clang-format off
struct Copy    { static float f(float a, float, float) { return a; } };
struct Add     { static float f(float a, float b, float) { return a + b; } };
struct Sub     { static float f(float a, float b, float) { return a - b; } };
struct Mul     { static float f(float a, float b, float) { return a * b; } };
struct Div     { static float f(float a, float b, float) { return a / b; } };
struct Max     { static float f(float a, float b, float) { return maximum(a, b); } };
struct Min     { static float f(float a, float b, float) { return minimum(a, b); } };
struct Pow     { static float f(float a, float b, float) { return std::pow(a, b); } };
struct Neg     { static float f(float a, float, float) { return -a; } };
struct Exp     { static float f(float a, float, float) { return std::exp(a); } };
struct Log     { static float f(float a, float, float) { return std::log(a); } };
struct Tanh    { static float f(float a, float, float) { return std::tanh(a); } };
struct Erf     { static float f(float a, float, float) { return std::erf(a); } };
struct Sqrt    { static float f(float a, float, float) { return std::sqrt(a); } };
struct Rsqrt   { static float f(float a, float, float) { return 1.0f / std::sqrt(a); } };
struct Abs     { static float f(float a, float, float) { return std::fabs(a); } };
// Fused (one rounding), as the name says.
struct Fma     { static float f(float a, float b, float c) { return std::fma(a, b, c); } };
struct Select  { static float f(float a, float b, float c) { return a != 0.0f ? b : c; } };
struct CmpOgt  { static float f(float a, float b, float) { return flag(a > b); } };
struct CmpOge  { static float f(float a, float b, float) { return flag(a >= b); } };
struct CmpOlt  { static float f(float a, float b, float) { return flag(a < b); } };
struct CmpOle  { static float f(float a, float b, float) { return flag(a <= b); } };
struct CmpOeq  { static float f(float a, float b, float) { return flag(a == b); } };
struct CmpOne  { static float f(float a, float b, float) { return flag(a < b || a > b); } };
struct CmpUgt  { static float f(float a, float b, float) { return flag(!(a <= b)); } };
struct CmpUge  { static float f(float a, float b, float) { return flag(!(a < b)); } };
struct CmpUlt  { static float f(float a, float b, float) { return flag(!(a >= b)); } };
struct CmpUle  { static float f(float a, float b, float) { return flag(!(a > b)); } };
struct CmpUeq  { static float f(float a, float b, float) { return flag(unordered(a, b) || a == b); } };
struct CmpUne  { static float f(float a, float b, float) { return flag(a != b); } };
struct Log1p   { static float f(float a, float, float) { return std::log1p(a); } };
struct Expm1   { static float f(float a, float, float) { return std::expm1(a); } };
struct Sin     { static float f(float a, float, float) { return std::sin(a); } };
struct Cos     { static float f(float a, float, float) { return std::cos(a); } };
struct Floor   { static float f(float a, float, float) { return std::floor(a); } };
struct Ceil    { static float f(float a, float, float) { return std::ceil(a); } };
struct Recip   { static float f(float a, float, float) { return 1.0f / a; } };
struct Sigmoid { static float f(float a, float, float) { return 1.0f / (1.0f + std::exp(-a)); } };
struct Maxnum  { static float f(float a, float b, float) { return std::fmax(a, b); } };
struct Minnum  { static float f(float a, float b, float) { return std::fmin(a, b); } };
// clang-format on

// ---- Rows ----

// Elements per chunk: four buffers of it stay in L1.
constexpr int64_t kChunk = 512;

// How an instruction's rows run (see the file comment).
struct RowPlan {
  int arity;
  bool in_order;
  bool reduce_into_a;  // in order, dst is exactly `a`'s view and shares nothing with b or c
};

template <class Op>
void apply(float* out, const float* a, const float* b, const float* c, int64_t n) {
  // out may equal a source pointer (in-place update): element i is read before it is written.
#pragma GCC ivdep
  for (int64_t i = 0; i < n; ++i) out[i] = Op::f(a[i], b[i], c[i]);
}

// The row's elements [start, start + len) of an operand as a contiguous array.
inline const float* contiguous(const float* row, int64_t step, int64_t start, int64_t len,
                               float* buffer) {
  if (step == 1) return row + start;
  if (step == 0) {  // a broadcast (an immediate, a bias): one value, filled with vector stores
    std::fill_n(buffer, len, *row);
    return buffer;
  }
  row += start * step;
  for (int64_t i = 0; i < len; ++i) buffer[i] = row[i * step];
  return buffer;
}

template <class Op>
void chunked_row(const RowPlan& plan, float* const* p, const int64_t* step, int64_t n) {
  alignas(64) float buffers[4][kChunk];
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t len = std::min(kChunk, n - start);
    const float* src[3];
    for (int k = 0; k < 3; ++k)
      src[k] = k < plan.arity ? contiguous(p[1 + k], step[1 + k], start, len, buffers[1 + k])
                              : src[0];
    float* out = step[0] == 1 ? p[0] + start : buffers[0];
    apply<Op>(out, src[0], src[1], src[2], len);
    if (step[0] == 1) continue;
    float* dst = p[0] + start * step[0];
    for (int64_t i = 0; i < len; ++i) dst[i * step[0]] = out[i];
  }
}

template <class Op>
void in_order_row(const RowPlan& plan, float* const* p, const int64_t* step, int64_t n) {
  float* dst = p[0];
  const float *a = p[1], *b = p[2], *c = p[3];
  if (plan.reduce_into_a && step[0] == 0) {
    // dst is a, one element: keep the running value in a register (same order, same result).
    float acc = *dst;
    for (int64_t i = 0; i < n; ++i) acc = Op::f(acc, b[i * step[2]], c[i * step[3]]);
    *dst = acc;
    return;
  }
  for (int64_t i = 0; i < n; ++i)
    dst[i * step[0]] = Op::f(a[i * step[1]], b[i * step[2]], c[i * step[3]]);
}

template <class Op>
void run(const RowPlan& plan, const LoopNest<4>& nest, float* const* bases) {
  int64_t steps[4];  // each operand's step along the row
  for (int k = 0; k < 4; ++k) steps[k] = nest.strides[k][kDims - 1];
  if (plan.in_order) {
    for_each_row(nest, bases, [&](float* const* p, int64_t n) {
      in_order_row<Op>(plan, p, steps, n);
    });
  } else {
    for_each_row(nest, bases, [&](float* const* p, int64_t n) {
      chunked_row<Op>(plan, p, steps, n);
    });
  }
}

bool same_view(const LoopNest<4>& nest, float* const* bases, int x, int y) {
  return bases[x] == bases[y] && std::equal(nest.strides[x], nest.strides[x] + kDims,
                                            nest.strides[y]);
}

RowPlan plan_rows(int arity, const LoopNest<4>& nest, float* const* bases, const Operand& dst,
                  const Operand* sources) {
  RowPlan plan{arity, false, false};
  const bool dst_moves_along_row = nest.strides[0][kDims - 1] != 0;
  bool others_disjoint = true;  // b and c share nothing with dst
  for (int k = 0; k < arity; ++k) {
    if (!overlaps(dst, sources[k])) continue;
    if (k > 0) others_disjoint = false;
    if (!(same_view(nest, bases, 0, 1 + k) && dst_moves_along_row)) plan.in_order = true;
  }
  plan.reduce_into_a = plan.in_order && others_disjoint && same_view(nest, bases, 0, 1);
  return plan;
}

}  // namespace

void vector_unit(int64_t kind, const int64_t shape[kDims], const Operand& dst,
                 const Operand* sources) {
  const int arity = isa::vector_arity(kind);
  LoopNest<4> nest;
  float* bases[4] = {dst.data, sources[0].data, sources[0].data, sources[0].data};
  for (int d = 0; d < kDims; ++d) {
    nest.sizes[d] = shape[d];
    nest.strides[0][d] = dst.strides[d];
    for (int k = 0; k < 3; ++k) nest.strides[1 + k][d] = k < arity ? sources[k].strides[d] : 0;
  }
  for (int k = 1; k < arity; ++k) bases[1 + k] = sources[k].data;
  nest = simplify(nest);
  const RowPlan plan = plan_rows(arity, nest, bases, dst, sources);

  switch (kind) {
    // clang-format off
    case isa::kCopy: return run<Copy>(plan, nest, bases);
    case isa::kAdd: return run<Add>(plan, nest, bases);
    case isa::kSub: return run<Sub>(plan, nest, bases);
    case isa::kMul: return run<Mul>(plan, nest, bases);
    case isa::kDiv: return run<Div>(plan, nest, bases);
    case isa::kMax: return run<Max>(plan, nest, bases);
    case isa::kMin: return run<Min>(plan, nest, bases);
    case isa::kPow: return run<Pow>(plan, nest, bases);
    case isa::kNeg: return run<Neg>(plan, nest, bases);
    case isa::kExp: return run<Exp>(plan, nest, bases);
    case isa::kLog: return run<Log>(plan, nest, bases);
    case isa::kTanh: return run<Tanh>(plan, nest, bases);
    case isa::kErf: return run<Erf>(plan, nest, bases);
    case isa::kSqrt: return run<Sqrt>(plan, nest, bases);
    case isa::kRsqrt: return run<Rsqrt>(plan, nest, bases);
    case isa::kAbs: return run<Abs>(plan, nest, bases);
    case isa::kFma: return run<Fma>(plan, nest, bases);
    case isa::kSelect: return run<Select>(plan, nest, bases);
    case isa::kCmpOgt: return run<CmpOgt>(plan, nest, bases);
    case isa::kCmpOge: return run<CmpOge>(plan, nest, bases);
    case isa::kCmpOlt: return run<CmpOlt>(plan, nest, bases);
    case isa::kCmpOle: return run<CmpOle>(plan, nest, bases);
    case isa::kCmpOeq: return run<CmpOeq>(plan, nest, bases);
    case isa::kCmpOne: return run<CmpOne>(plan, nest, bases);
    case isa::kCmpUgt: return run<CmpUgt>(plan, nest, bases);
    case isa::kCmpUge: return run<CmpUge>(plan, nest, bases);
    case isa::kCmpUlt: return run<CmpUlt>(plan, nest, bases);
    case isa::kCmpUle: return run<CmpUle>(plan, nest, bases);
    case isa::kCmpUeq: return run<CmpUeq>(plan, nest, bases);
    case isa::kCmpUne: return run<CmpUne>(plan, nest, bases);
    case isa::kLog1p: return run<Log1p>(plan, nest, bases);
    case isa::kExpm1: return run<Expm1>(plan, nest, bases);
    case isa::kSin: return run<Sin>(plan, nest, bases);
    case isa::kCos: return run<Cos>(plan, nest, bases);
    case isa::kFloor: return run<Floor>(plan, nest, bases);
    case isa::kCeil: return run<Ceil>(plan, nest, bases);
    case isa::kRecip: return run<Recip>(plan, nest, bases);
    case isa::kSigmoid: return run<Sigmoid>(plan, nest, bases);
    case isa::kMaxnum: return run<Maxnum>(plan, nest, bases);
    case isa::kMinnum: return run<Minnum>(plan, nest, bases);
    // clang-format on
    default:
      return;  // unreachable: the interpreter traps on unknown kinds
  }
}

}  // namespace polyfuse::emulator
