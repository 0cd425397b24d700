// The PE array's function, computed with OpenBLAS sgemm (timing lives in the interpreter).
//
// A MATMUL's operands are six-dim views; sgemm wants plain matrices. Views that already are one
// (a single evenly spaced M/N dim and K dim, unit step along one of them) are handed to sgemm in
// place, possibly transposed; the others are packed into contiguous row-major temporaries first.
#include <cblas.h>

#include <iterator>
#include <climits>
#include <cstring>
#include <initializer_list>
#include <optional>

#include "units.h"

namespace polyfuse::emulator {
namespace {

enum Dim { kM1 = 0, kM2 = 1, kN = 2, kK1 = 3, kK2 = 4, kK3 = 5 };

// A matrix the way cblas_sgemm reads it in row-major mode.
struct BlasMatrix {
  float* data;
  CBLAS_TRANSPOSE trans;
  blasint ld;
};

CBLAS_TRANSPOSE flip(CBLAS_TRANSPOSE trans) {
  return trans == CblasNoTrans ? CblasTrans : CblasNoTrans;
}

// Treats dims `dims` (outermost first) of a view as one dim; false if their elements are not
// evenly spaced. Size-1 dims do not matter.
bool collapse(const int64_t shape[kDims], const Operand& view, std::initializer_list<int> dims,
              int64_t* step) {
  int64_t extent = 0;  // elements covered by the dims merged so far (0: none yet)
  *step = 0;
  for (auto it = std::rbegin(dims); it != std::rend(dims); ++it) {
    const int d = *it;
    if (shape[d] == 1) continue;
    if (extent == 0) {
      *step = view.strides[d];
      extent = shape[d];
    } else if (view.strides[d] == *step * extent) {
      extent *= shape[d];
    } else {
      return false;
    }
  }
  return true;
}

// The rows x cols matrix at `data` with the given element steps, if sgemm can read it in place:
// unit step along one dim and non-overlapping rows (or columns) along the other.
std::optional<BlasMatrix> blas_matrix(float* data, int64_t rows, int64_t cols, int64_t row_step,
                                      int64_t col_step) {
  if ((col_step == 1 || cols == 1) && (rows == 1 || row_step >= cols)) {
    const int64_t ld = rows == 1 ? cols : row_step;
    if (ld <= INT_MAX) return BlasMatrix{data, CblasNoTrans, static_cast<blasint>(ld)};
  }
  if ((row_step == 1 || rows == 1) && (cols == 1 || col_step >= rows)) {
    const int64_t ld = cols == 1 ? rows : col_step;
    if (ld <= INT_MAX) return BlasMatrix{data, CblasTrans, static_cast<blasint>(ld)};
  }
  return std::nullopt;
}

// The nest visiting a view's dims `outer` then `inner`, each group in order: packing it yields
// those dims in row-major order.
LoopNest<1> packing_nest(const int64_t shape[kDims], const Operand& view,
                         std::initializer_list<int> outer, std::initializer_list<int> inner) {
  LoopNest<1> nest;
  int slot = kDims - static_cast<int>(outer.size() + inner.size());
  for (int d = 0; d < slot; ++d) {
    nest.sizes[d] = 1;
    nest.strides[0][d] = 0;
  }
  for (auto group : {outer, inner}) {
    for (int d : group) {
      nest.sizes[slot] = shape[d];
      nest.strides[0][slot] = view.strides[d];
      ++slot;
    }
  }
  return simplify(nest);
}

// Copies the nest's elements, in order, to `out`.
void pack(const LoopNest<1>& nest, float* data, float* out) {
  const int64_t step = nest.strides[0][kDims - 1];
  float* const base[1] = {data};
  for_each_row(nest, base, [&](float* const* p, int64_t n) {
    const float* in = p[0];
    if (step == 1) {
      std::memcpy(out, in, static_cast<size_t>(n) * sizeof(float));
    } else {
      for (int64_t i = 0; i < n; ++i) out[i] = in[i * step];
    }
    out += n;
  });
}

// The view over (row dims, col dims) as a matrix, in place if possible, else packed into `buffer`.
BlasMatrix matrix_operand(const int64_t shape[kDims], const Operand& view,
                          std::initializer_list<int> row_dims, std::initializer_list<int> col_dims,
                          std::vector<float>& buffer) {
  int64_t rows = 1, cols = 1;
  for (int d : row_dims) rows *= shape[d];
  for (int d : col_dims) cols *= shape[d];
  int64_t row_step, col_step;
  if (collapse(shape, view, row_dims, &row_step) && collapse(shape, view, col_dims, &col_step)) {
    if (auto matrix = blas_matrix(view.data, rows, cols, row_step, col_step)) return *matrix;
  }
  const size_t count = static_cast<size_t>(rows * cols);
  if (buffer.size() < count) buffer.resize(count);
  // Pack as rows x cols, or as its transpose when that reads longer runs (for a convolution
  // window, the output columns rather than the 3 taps of a kernel row).
  const LoopNest<1> as_is = packing_nest(shape, view, row_dims, col_dims);
  const LoopNest<1> transposed = packing_nest(shape, view, col_dims, row_dims);
  if (transposed.sizes[kDims - 1] > as_is.sizes[kDims - 1]) {
    pack(transposed, view.data, buffer.data());
    return BlasMatrix{buffer.data(), CblasTrans, static_cast<blasint>(rows)};
  }
  pack(as_is, view.data, buffer.data());
  return BlasMatrix{buffer.data(), CblasNoTrans, static_cast<blasint>(cols)};
}

// Writes (or adds) the row-major M x N `result` into C's view.
void store_result(const int64_t shape[kDims], const Operand& c, const float* result,
                  bool accumulate) {
  const int64_t n = shape[kN];
  LoopNest<2> nest;
  for (int d = 0; d < kDims; ++d) {
    const bool output_dim = d == kM1 || d == kM2 || d == kN;
    nest.sizes[d] = output_dim ? shape[d] : 1;
    nest.strides[0][d] = output_dim ? c.strides[d] : 0;
    nest.strides[1][d] = 0;
  }
  nest.strides[1][kM1] = shape[kM2] * n;
  nest.strides[1][kM2] = n;
  nest.strides[1][kN] = 1;
  nest = simplify(nest);
  const int64_t c_step = nest.strides[0][kDims - 1];
  const int64_t r_step = nest.strides[1][kDims - 1];
  float* const bases[2] = {c.data, const_cast<float*>(result)};
  // In order, so a C that maps several results to one element keeps the last (or their sum).
  for_each_row(nest, bases, [=](float* const* p, int64_t len) {
    float* out = p[0];
    const float* in = p[1];
    if (accumulate) {
      for (int64_t i = 0; i < len; ++i) out[i * c_step] += in[i * r_step];
    } else {
      for (int64_t i = 0; i < len; ++i) out[i * c_step] = in[i * r_step];
    }
  });
}

}  // namespace

void matmul_unit(const int64_t shape[kDims], const Operand& c, const Operand& a, const Operand& b,
                 bool accumulate, Workspace& workspace) {
  // The interpreter never calls a unit with an empty iteration space, so m, n, k > 0.
  const int64_t m = shape[kM1] * shape[kM2];
  const int64_t n = shape[kN];
  const int64_t k = shape[kK1] * shape[kK2] * shape[kK3];
  const BlasMatrix lhs = matrix_operand(shape, a, {kM1, kM2}, {kK1, kK2, kK3}, workspace.a);
  const BlasMatrix rhs = matrix_operand(shape, b, {kK1, kK2, kK3}, {kN}, workspace.b);
  const float beta = accumulate ? 1.0f : 0.0f;

  // sgemm may write C in place unless C shares elements with an input (sgemm forbids aliasing).
  int64_t row_step, col_step;
  std::optional<BlasMatrix> out;
  if (!overlaps(c, a) && !overlaps(c, b) && collapse(shape, c, {kM1, kM2}, &row_step) &&
      collapse(shape, c, {kN}, &col_step))
    out = blas_matrix(c.data, m, n, row_step, col_step);
  if (out && out->trans == CblasNoTrans) {
    scipy_cblas_sgemm(CblasRowMajor, lhs.trans, rhs.trans, m, n, k, 1.0f, lhs.data, lhs.ld,
                      rhs.data, rhs.ld, beta, out->data, out->ld);
    return;
  }
  if (out) {  // C is stored transposed: compute C^T = B^T A^T into it
    scipy_cblas_sgemm(CblasRowMajor, flip(rhs.trans), flip(lhs.trans), n, m, k, 1.0f, rhs.data,
                      rhs.ld, lhs.data, lhs.ld, beta, out->data, out->ld);
    return;
  }
  if (workspace.c.size() < static_cast<size_t>(m * n)) workspace.c.resize(m * n);
  scipy_cblas_sgemm(CblasRowMajor, lhs.trans, rhs.trans, m, n, k, 1.0f, lhs.data, lhs.ld, rhs.data,
                    rhs.ld, 0.0f, workspace.c.data(), n);
  store_result(shape, c, workspace.c.data(), accumulate);
}

}  // namespace polyfuse::emulator
