// The DMA engine's data movement (timing and the in-flight bookkeeping live in the interpreter).
#include <cstring>

#include "units.h"

namespace polyfuse::emulator {

void copy_unit(const int64_t shape[kDims], const Operand& dst, const Operand& src) {
  LoopNest<2> nest;
  for (int d = 0; d < kDims; ++d) {
    nest.sizes[d] = shape[d];
    nest.strides[0][d] = dst.strides[d];
    nest.strides[1][d] = src.strides[d];
  }
  nest = simplify(nest);
  const int64_t dst_step = nest.strides[0][kDims - 1];
  const int64_t src_step = nest.strides[1][kDims - 1];
  float* const bases[2] = {dst.data, src.data};
  // Source and destination are in different memories (one scratchpad, one DRAM buffer), so
  // a row never overlaps itself and memcpy is exact.
  if (dst_step == 1 && src_step == 1) {
    for_each_row(nest, bases, [](float* const* p, int64_t n) {
      std::memcpy(p[0], p[1], static_cast<size_t>(n) * sizeof(float));
    });
    return;
  }
  for_each_row(nest, bases, [=](float* const* p, int64_t n) {
    float* out = p[0];
    const float* in = p[1];
    for (int64_t i = 0; i < n; ++i) out[i * dst_step] = in[i * src_step];
  });
}

}  // namespace polyfuse::emulator
