// Shadow state of every scratchpad element, for the sanitizer mode.
//
// Each element is in one of three states:
//   unwritten   nothing wrote it since the program started or since the accel.alloc that
//               (re)created the buffer holding it: reading it reads garbage.
//   pending     an engine (PE array, vector unit) wrote a result there that nobody has read
//               yet: a DMA load over it destroys the result before it is used.
//   valid       a DMA loaded it, or its result has been read at least once.
// The interpreter calls `read` and `write` with every operand's exact element set (strided views
// are walked element by element, broadcast dims once); each returns the first offending element,
// or -1.
#pragma once

#include <cstdint>
#include <vector>

#include "loop_nest.h"
#include "units.h"

namespace polyfuse::emulator {

class Shadow {
 public:
  enum State : uint8_t { kUnwritten = 0, kPending = 1, kValid = 2 };

  explicit Shadow(int64_t elements)
      : state_(static_cast<size_t>(elements), kUnwritten),
        writer_(static_cast<size_t>(elements), -1) {}

  void reset(int64_t lo, int64_t hi) {
    for (int64_t i = std::max<int64_t>(lo, 0); i < hi && i < size(); ++i) {
      state_[i] = kUnwritten;
      writer_[i] = -1;
    }
  }

  // Marks the elements read; returns the first one that was never written, or -1.
  int64_t read(const int64_t shape[kDims], const Operand& op, const float* spm) {
    int64_t bad = -1;
    visit(shape, op, spm, [&](int64_t i) {
      if (state_[i] == kUnwritten) {
        if (bad < 0) bad = i;
        return;
      }
      state_[i] = kValid;
    });
    return bad;
  }

  // Marks the elements written by `pc`; for a DMA load, returns the first element that held a
  // pending result (and leaves the state unchanged), or -1.
  int64_t write(const int64_t shape[kDims], const Operand& op, const float* spm, int64_t pc,
                bool dma_load) {
    if (dma_load) {
      int64_t bad = -1;
      visit(shape, op, spm, [&](int64_t i) {
        if (bad < 0 && state_[i] == kPending) bad = i;
      });
      if (bad >= 0) return bad;
    }
    const State state = dma_load ? kValid : kPending;
    visit(shape, op, spm, [&](int64_t i) {
      state_[i] = state;
      writer_[i] = pc;
    });
    return -1;
  }

  int64_t writer(int64_t element) const { return writer_[element]; }

 private:
  int64_t size() const { return static_cast<int64_t>(state_.size()); }

  // Calls f(element) for every element of the view, broadcast dims once.
  template <class F>
  static void visit(const int64_t shape[kDims], const Operand& op, const float* spm, F&& f) {
    LoopNest<1> nest;
    for (int d = 0; d < kDims; ++d) {
      nest.sizes[d] = op.strides[d] == 0 ? 1 : shape[d];
      nest.strides[0][d] = op.strides[d];
    }
    nest = simplify(nest);
    const int64_t step = nest.strides[0][kDims - 1];
    float* const base[1] = {op.data};
    for_each_row(nest, base, [&](float* const* p, int64_t n) {
      const int64_t first = p[0] - spm;
      for (int64_t i = 0; i < n; ++i) f(first + i * step);
    });
  }

  std::vector<uint8_t> state_;
  std::vector<int64_t> writer_;
};

}  // namespace polyfuse::emulator
