#include "interpreter.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>

#include "units.h"

namespace polyfuse::emulator {
namespace {

using isa::Record;

const char* const kDmaRoles[] = {"destination", "source"};
const char* const kMatmulRoles[] = {"C", "A", "B"};
const char* const kVectorRoles[] = {"dst", "a", "b", "c"};

std::string memory_name(int64_t memory) {
  switch (memory) {
    case isa::kNone: return "no memory";
    case isa::kSpm: return "the scratchpad";
    case isa::kDram: return "DRAM";
    case isa::kImm: return "the immediate";
    default: return "unknown memory " + std::to_string(memory);
  }
}

std::string range_text(int64_t lo, int64_t hi) {
  return "[" + std::to_string(lo) + ", " + std::to_string(hi) + ")";
}

int64_t element_count(const Record& r) {
  int64_t count = 1;
  for (int64_t size : r.shape) count *= size;
  return count;
}

// A DMA issued and not yet waited for, with the scratchpad elements it is still moving.
struct InFlightDma {
  int64_t token;
  bool is_load;  // writes [lo, hi) of the scratchpad; a store reads it
  int64_t lo, hi;
  int64_t pc;
};

class Interpreter {
 public:
  Interpreter(const Record* records, const double* immediates, int64_t count,
              const std::vector<DramBuffer>& dram, int64_t spm_elements, const Timing& timing,
              bool check)
      : records_(records),
        immediates_(immediates),
        count_(count),
        dram_(dram),
        spm_(static_cast<size_t>(spm_elements), 0.0f),
        timing_(timing),
        check_(check) {}

  Counters run() {
    check_structure();
    for (pc_ = 0; pc_ < count_;) {
      const Record& r = records_[pc_];
      ++counters_.instructions;
      switch (r.opcode) {
        case isa::kLoop:
          iv_[r.sub] = 0;
          if (r.aux == 0) {  // zero trips: skip the body
            pc_ = loop_end_[pc_] + 1;
            continue;
          }
          break;
        case isa::kEndLoop: {
          const Record& head = records_[r.aux];
          if (++iv_[head.sub] < head.aux) {
            pc_ = r.aux + 1;
            continue;
          }
          break;
        }
        case isa::kDma: execute_dma(r); break;
        case isa::kWait: execute_wait(r); break;
        case isa::kMatmul: execute_matmul(r); break;
        case isa::kVector: execute_vector(r); break;
      }
      ++pc_;
    }
    if (!outstanding_.empty()) {
      pc_ = outstanding_.front().pc;
      trap("program ends with DMA token " + std::to_string(outstanding_.front().token) +
           " outstanding (issued here, never waited)");
    }
    return counters_;
  }

 private:
  [[noreturn]] void trap(const std::string& message) const { throw Trap(message, pc_); }

  // Checks the static structure once (opcodes, loop nesting, shapes, views) and records where
  // each loop ends, so execution only has to check what depends on run-time values.
  void check_structure() {
    loop_end_.assign(static_cast<size_t>(count_), -1);
    std::vector<int64_t> open;  // pcs of the loops enclosing pc_
    for (pc_ = 0; pc_ < count_; ++pc_) {
      const Record& r = records_[pc_];
      const auto depth = static_cast<int64_t>(open.size());
      switch (r.opcode) {
        case isa::kLoop:
          if (r.sub != depth)
            trap("loop has depth " + std::to_string(r.sub) + " but is nested in " +
                 std::to_string(depth) + " loops");
          if (depth >= isa::kMaxLoopDepth)
            trap("loops nest deeper than " + std::to_string(isa::kMaxLoopDepth));
          if (r.aux < 0) trap("loop has negative trip count " + std::to_string(r.aux));
          open.push_back(pc_);
          break;
        case isa::kEndLoop:
          if (open.empty() || open.back() != r.aux)
            trap("endloop names the loop at instruction " + std::to_string(r.aux) +
                 (open.empty() ? " but no loop is open"
                               : " but the innermost open loop is at instruction " +
                                     std::to_string(open.back())));
          loop_end_[r.aux] = pc_;
          open.pop_back();
          break;
        case isa::kWait: break;
        case isa::kDma:
        case isa::kMatmul:
        case isa::kVector: check_operands(r, depth); break;
        default: trap("unknown opcode " + std::to_string(r.opcode));
      }
    }
    if (!open.empty()) {
      pc_ = open.back();
      trap("loop is never closed by an endloop");
    }
  }

  void check_operands(const Record& r, int64_t depth) const {
    for (int64_t size : r.shape)
      if (size < 0) trap("negative dimension " + std::to_string(size) + " in the shape");
    for (int i = 0; i < isa::kNumViews; ++i) {
      const isa::ViewWords& v = r.views[i];
      if (v.memory < 0 || v.memory >= isa::kNumMemories)
        trap("view " + std::to_string(i) + " has " + memory_name(v.memory));
      for (int64_t l = depth; l < isa::kMaxLoopDepth; ++l)
        if (v.coeffs[l] != 0)
          trap("view " + std::to_string(i) + " uses the induction variable of loop depth " +
               std::to_string(l) + " outside that loop");
    }
  }

  // ---- Operands ----

  // The view at the current induction variables, after checking its whole range is in memory.
  Operand resolve(const Record& r, int index, const char* role) {
    const isa::ViewWords& v = r.views[index];
    Operand op;
    op.memory = v.memory;
    if (v.memory == isa::kNone) return op;
    if (v.memory == isa::kImm) {
      op.data = &immediate_;  // all strides stay 0: the scalar broadcasts
      return op;
    }
    int64_t offset = v.c0;
    for (int l = 0; l < isa::kMaxLoopDepth; ++l) offset += v.coeffs[l] * iv_[l];
    std::copy(v.strides, v.strides + kDims, op.strides);
    op.lo = op.hi = offset;
    if (element_count(r) == 0) return op;  // touches nothing
    for (int d = 0; d < kDims; ++d) {
      const int64_t span = v.strides[d] * (r.shape[d] - 1);
      (span < 0 ? op.lo : op.hi) += span;
    }
    op.hi += 1;
    if (v.memory == isa::kSpm) {
      check_scratchpad_bounds(op, role);
      op.data = spm_.data() + offset;
      counters_.spm_peak_bytes = std::max<int64_t>(counters_.spm_peak_bytes, op.hi * 4);
    } else {
      op.data = dram_buffer(v.buffer, op, role).data + offset;
    }
    return op;
  }

  void check_scratchpad_bounds(const Operand& op, const char* role) const {
    const auto capacity = static_cast<int64_t>(spm_.size());
    if (op.hi > capacity)
      trap(std::string("scratchpad capacity exceeded: ") + role + " touches elements " +
           range_text(op.lo, op.hi) + " but the scratchpad holds " + std::to_string(capacity) +
           " elements (" + std::to_string(capacity * 4) + " bytes)");
    if (op.lo < 0)
      trap(std::string("scratchpad access out of bounds: ") + role + " touches elements " +
           range_text(op.lo, op.hi));
  }

  const DramBuffer& dram_buffer(int64_t buffer, const Operand& op, const char* role) const {
    if (buffer < 0 || buffer >= static_cast<int64_t>(dram_.size()))
      trap(std::string(role) + " names DRAM buffer " + std::to_string(buffer) + " but there are " +
           std::to_string(dram_.size()) + " buffers");
    const DramBuffer& b = dram_[buffer];
    if (op.lo < 0 || op.hi > b.size)
      trap("DRAM buffer " + std::to_string(buffer) + " access out of bounds: " + role +
           " touches elements " + range_text(op.lo, op.hi) + " of " + std::to_string(b.size));
    return b;
  }

  // ---- DMA in-flight rules ----

  void check_read(const Operand& op, const char* role) const {
    if (!check_ || op.memory != isa::kSpm) return;
    for (const InFlightDma& dma : outstanding_) {
      if (!dma.is_load || !(op.lo < dma.hi && dma.lo < op.hi)) continue;
      trap("reads scratchpad elements " + range_text(op.lo, op.hi) +
           " before dma_wait on token " + std::to_string(dma.token) + " (" + role +
           "; the DMA at instruction " + std::to_string(dma.pc) + " loads " +
           range_text(dma.lo, dma.hi) + ")");
    }
  }

  void check_write(const Operand& op, const char* role) const {
    if (!check_ || op.memory != isa::kSpm) return;
    for (const InFlightDma& dma : outstanding_) {
      if (!(op.lo < dma.hi && dma.lo < op.hi)) continue;
      trap("writes scratchpad elements " + range_text(op.lo, op.hi) + " while DMA token " +
           std::to_string(dma.token) + (dma.is_load ? " still loads into " : " still stores from ") +
           range_text(dma.lo, dma.hi) + " (" + role + "; issued at instruction " +
           std::to_string(dma.pc) + ", not yet waited)");
    }
  }

  std::vector<InFlightDma>::iterator find_outstanding(int64_t token) {
    return std::find_if(outstanding_.begin(), outstanding_.end(),
                        [token](const InFlightDma& dma) { return dma.token == token; });
  }

  // ---- Instructions ----

  void execute_dma(const Record& r) {
    const int64_t dst_memory = r.views[0].memory, src_memory = r.views[1].memory;
    const bool is_load = dst_memory == isa::kSpm && src_memory == isa::kDram;
    const bool is_store = dst_memory == isa::kDram && src_memory == isa::kSpm;
    if (!is_load && !is_store)
      trap("dma needs one scratchpad and one DRAM side, but its destination is in " +
           memory_name(dst_memory) + " and its source in " + memory_name(src_memory));
    const Operand dst = resolve(r, 0, kDmaRoles[0]);
    const Operand src = resolve(r, 1, kDmaRoles[1]);
    if (check_) {
      auto previous = find_outstanding(r.token);
      if (previous != outstanding_.end())
        trap("dma on token " + std::to_string(r.token) +
             ", which is still outstanding (issued at instruction " +
             std::to_string(previous->pc) + "); dma_wait on it first");
      if (is_load) check_write(dst, kDmaRoles[0]);
      if (is_store) check_read(src, kDmaRoles[1]);
    }
    const int64_t elements = element_count(r);
    if (elements > 0) copy_unit(r.shape, dst, src);

    const int64_t bytes = elements * 4;
    const double cycles = timing_.dma_latency_cycles +
                          std::ceil(static_cast<double>(bytes) / timing_.dma_bytes_per_cycle);
    if (is_load) {
      counters_.dma_loads += 1;
      counters_.dram_read_bytes += bytes;
      counters_.dma_load_cycles += cycles;
    } else {
      counters_.dma_stores += 1;
      counters_.dram_write_bytes += bytes;
      counters_.dma_store_cycles += cycles;
    }
    // The copy is already done (functional model) but the scratchpad side counts as busy until
    // the matching wait, which is what a real asynchronous engine would require.
    if (check_) {
      const Operand& local = is_load ? dst : src;
      outstanding_.push_back({r.token, is_load, local.lo, local.hi, pc_});
    }
  }

  void execute_wait(const Record& r) {
    if (!check_) return;
    auto dma = find_outstanding(r.token);
    if (dma == outstanding_.end())
      trap("dma_wait on token " + std::to_string(r.token) + ", which is not outstanding");
    outstanding_.erase(dma);
  }

  void execute_matmul(const Record& r) {
    enum { kM1, kM2, kN, kK1, kK2, kK3 };
    for (int i = 0; i < 3; ++i)
      if (r.views[i].memory != isa::kSpm)
        trap(std::string("matmul operand ") + kMatmulRoles[i] + " must be in the scratchpad, not " +
             memory_name(r.views[i].memory));
    // Each operand must not depend on the dims it does not have, else "C[m,n] = sum_k ..." would
    // not describe what the strides say.
    require_broadcast(r, 0, {kK1, kK2, kK3}, "K");
    require_broadcast(r, 1, {kN}, "N");
    require_broadcast(r, 2, {kM1, kM2}, "M");
    const bool accumulate = (r.flags & isa::kFlagAccumulate) != 0;
    const Operand c = resolve(r, 0, "C"), a = resolve(r, 1, "A"), b = resolve(r, 2, "B");
    check_read(a, "A");
    check_read(b, "B");
    if (accumulate) check_read(c, "C");
    check_write(c, "C");
    if (element_count(r) > 0) matmul_unit(r.shape, c, a, b, accumulate, workspace_);

    const int64_t m = r.shape[kM1] * r.shape[kM2];
    const int64_t n = r.shape[kN];
    const int64_t k = r.shape[kK1] * r.shape[kK2] * r.shape[kK3];
    const int64_t rows = timing_.pe_rows, cols = timing_.pe_cols;
    counters_.matmuls += 1;
    counters_.macs += m * n * k;
    // Weight-stationary: each rows x cols block of B is loaded once, then M rows stream through
    // it, plus the pipeline fill and drain of the array.
    counters_.pe_cycles += static_cast<double>(ceil_div(k, rows) * ceil_div(n, cols) *
                                               (m + rows + cols));
  }

  void require_broadcast(const Record& r, int view, std::initializer_list<int> dims,
                         const char* name) const {
    for (int d : dims)
      if (r.shape[d] > 1 && r.views[view].strides[d] != 0)
        trap(std::string("matmul operand ") + kMatmulRoles[view] + " must have stride 0 along " +
             name + " (dim " + std::to_string(d) + ")");
  }

  void execute_vector(const Record& r) {
    const int arity = isa::vector_arity(r.sub);
    if (arity < 0) trap("unknown vector kind " + std::to_string(r.sub));
    if (r.views[0].memory != isa::kSpm)
      trap("vector dst must be in the scratchpad, not " + memory_name(r.views[0].memory));
    for (int k = 1; k <= arity; ++k) {
      const int64_t memory = r.views[k].memory;
      if (memory != isa::kSpm && memory != isa::kImm)
        trap(std::string("vector source ") + kVectorRoles[k] + " of kind " +
             std::to_string(r.sub) + " must be in the scratchpad or the immediate, not " +
             memory_name(memory));
    }
    immediate_ = static_cast<float>(immediates_[pc_]);
    const Operand dst = resolve(r, 0, kVectorRoles[0]);
    Operand sources[3];
    for (int k = 0; k < arity; ++k) {
      sources[k] = resolve(r, 1 + k, kVectorRoles[1 + k]);
      check_read(sources[k], kVectorRoles[1 + k]);
    }
    check_write(dst, kVectorRoles[0]);
    const int64_t elements = element_count(r);
    if (elements > 0) vector_unit(r.sub, r.shape, dst, sources);

    counters_.vector_ops += 1;
    counters_.vector_elements += elements;
    counters_.vector_cycles += static_cast<double>(ceil_div(elements, timing_.vector_width)) +
                               timing_.vector_latency_cycles;
  }

  static int64_t ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }

  const Record* records_;
  const double* immediates_;
  int64_t count_;
  const std::vector<DramBuffer>& dram_;
  std::vector<float> spm_;
  Timing timing_;
  bool check_;

  int64_t pc_ = 0;
  int64_t iv_[isa::kMaxLoopDepth] = {};
  std::vector<int64_t> loop_end_;  // per LOOP pc: the pc of its ENDLOOP
  std::vector<InFlightDma> outstanding_;
  float immediate_ = 0.0f;  // the current record's immediate, as MEM_IMM operands read it
  Workspace workspace_;
  Counters counters_;
};

}  // namespace

Counters run_program(const Record* records, const double* immediates, int64_t count,
                     const std::vector<DramBuffer>& dram, int64_t spm_elements,
                     const Timing& timing, bool check) {
  return Interpreter(records, immediates, count, dram, spm_elements, timing, check).run();
}

}  // namespace polyfuse::emulator
