#include "interpreter.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <memory>
#include <utility>

#include "sanitizer.h"
#include "units.h"

namespace polyfuse::emulator {
namespace {

using isa::Record;

const char* const kDmaRoles[] = {"destination", "source"};
const char* const kMatmulRoles[] = {"C", "A", "B"};
const char* const kVectorRoles[] = {"dst", "a", "b", "c"};
const char* const kVectorSourceNames[] = {"vector source a", "vector source b",
                                          "vector source c"};

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

// A live scratchpad allocation (accel.alloc executed, its accel.dealloc not yet).
struct Allocation {
  int64_t lo, hi;  // elements
  int64_t pc;      // of the ALLOC
};

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
              const Options& options)
      : records_(records),
        immediates_(immediates),
        count_(count),
        dram_(dram),
        spm_(static_cast<size_t>(spm_elements), 0.0f),
        timing_(timing),
        options_(options),
        check_(options.check || options.sanitize),
        timeline_(timing, static_cast<int64_t>(dram.size()), group_count(records, count),
                  options.trace_limit, options.trace_merge_gap) {
    if (options.sanitize) shadow_ = std::make_unique<Shadow>(spm_elements);
  }

  RunResult run() {
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
        case isa::kAlloc: execute_alloc(r); break;
        case isa::kFree: execute_free(r); break;
      }
      ++pc_;
    }
    if (!outstanding_.empty()) {
      pc_ = outstanding_.front().pc;
      trap("program ends with DMA token " + std::to_string(outstanding_.front().token) +
           " outstanding (issued here, never waited)");
    }
    return finish();
  }

 private:
  [[noreturn]] void trap(const std::string& message) const { throw Trap(message, pc_); }

  static int64_t group_count(const Record* records, int64_t count) {
    int64_t most = -1;
    for (int64_t pc = 0; pc < count; ++pc) most = std::max(most, records[pc].group);
    return most + 1;
  }

  RunResult finish() {
    RunResult result;
    counters_.cycles = timeline_.makespan();
    counters_.dma_load_cycles = timeline_.busy(kDmaIn);
    counters_.dma_store_cycles = timeline_.busy(kDmaOut);
    counters_.pe_cycles = timeline_.busy(kPeArray);
    counters_.vector_cycles = timeline_.busy(kVectorUnit);
    occupancy_change(0);  // closes the occupancy integral at the end of the program
    counters_.spm_live_average_bytes =
        counters_.cycles > 0 ? occupancy_area_ / counters_.cycles * 4 : 0.0;
    result.counters = counters_;
    result.locations = std::move(timeline_.locations());
    result.trace = timeline_.trace();
    result.trace_dropped = timeline_.trace_dropped();
    result.occupancy = std::move(occupancy_);
    return result;
  }

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
        case isa::kAlloc:
          if (r.views[0].memory != isa::kSpm)
            trap("alloc must name a scratchpad range, not " + memory_name(r.views[0].memory));
          if (r.shape[0] < 0) trap("alloc of a negative size " + std::to_string(r.shape[0]));
          break;
        case isa::kFree:
          if (r.aux < 0 || r.aux >= count_ || records_[r.aux].opcode != isa::kAlloc)
            trap("free names instruction " + std::to_string(r.aux) + ", which is not an alloc");
          break;
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

  // ---- Sanitizer ----

  std::string element_text(int64_t element) const {
    std::string text = "scratchpad element " + std::to_string(element);
    for (const Allocation& live : allocations_)
      if (live.lo <= element && element < live.hi)
        return text + " (element " + std::to_string(element - live.lo) +
               " of the buffer allocated at instruction " + std::to_string(live.pc) + ")";
    return text;
  }

  void sanitize_read(const Record& r, const Operand& op, const char* role) {
    if (!shadow_ || op.memory != isa::kSpm || element_count(r) == 0) return;
    const int64_t bad = shadow_->read(r.shape, op, spm_.data());
    if (bad >= 0)
      trap(std::string("sanitizer: ") + role + " reads " + element_text(bad) +
           ", which was never written (since its buffer was allocated); load or compute it "
           "before reading it");
  }

  void sanitize_write(const Record& r, const Operand& op, bool dma_load) {
    if (!shadow_ || op.memory != isa::kSpm || element_count(r) == 0) return;
    const int64_t bad = shadow_->write(r.shape, op, spm_.data(), pc_, dma_load);
    if (bad >= 0)
      trap("sanitizer: DMA load overwrites " + element_text(bad) +
           ", which holds a result written at instruction " + std::to_string(shadow_->writer(bad)) +
           " that nothing has read yet (store or use it before reusing the buffer)");
  }

  // ---- Allocation ----

  void execute_alloc(const Record& r) {
    const int64_t lo = r.views[0].c0, hi = lo + r.shape[0];
    if (check_) {
      const auto capacity = static_cast<int64_t>(spm_.size());
      if (lo < 0 || hi > capacity)
        trap("scratchpad allocation " + range_text(lo, hi) + " overflows the scratchpad of " +
             std::to_string(capacity) + " elements (" + std::to_string(capacity * 4) + " bytes)");
      for (const Allocation& live : allocations_)
        if (lo < live.hi && live.lo < hi && lo < hi)
          trap("scratchpad allocation " + range_text(lo, hi) + " overlaps the live buffer " +
               range_text(live.lo, live.hi) + " allocated at instruction " +
               std::to_string(live.pc) + " (not freed yet)");
    }
    allocations_.push_back({lo, hi, pc_});
    if (shadow_) shadow_->reset(lo, hi);
    occupancy_change(hi - lo);
  }

  void execute_free(const Record& r) {
    auto live = std::find_if(allocations_.begin(), allocations_.end(),
                             [&](const Allocation& a) { return a.pc == r.aux; });
    if (live == allocations_.end()) {
      if (check_)
        trap("free of the buffer allocated at instruction " + std::to_string(r.aux) +
             ", which is not live");
      return;
    }
    if (check_) {
      for (const InFlightDma& dma : outstanding_)
        if (dma.lo < live->hi && live->lo < dma.hi)
          trap("free of a buffer that DMA token " + std::to_string(dma.token) +
               " (issued at instruction " + std::to_string(dma.pc) + ") still moves");
    }
    if (shadow_) shadow_->reset(live->lo, live->hi);
    const int64_t elements = live->hi - live->lo;
    allocations_.erase(live);
    occupancy_change(-elements);
  }

  // Accumulates allocated-elements x cycles up to now, then applies the change.
  void occupancy_change(int64_t delta) {
    const double now = timeline_.makespan();
    if (now > occupancy_time_) {
      occupancy_area_ += static_cast<double>(live_elements_) * (now - occupancy_time_);
      occupancy_time_ = now;
    }
    if (delta == 0) return;
    live_elements_ += delta;
    counters_.spm_live_peak_bytes = std::max(counters_.spm_live_peak_bytes, live_elements_ * 4);
    if (occupancy_.size() < kMaxOccupancyEvents) occupancy_.push_back({now, live_elements_ * 4});
  }

  // ---- Instructions ----

  static Access access_of(const isa::ViewWords& v, const Operand& op, bool write) {
    return {v.memory == isa::kDram ? v.buffer : -1, op.lo, op.hi, write};
  }

  // Contiguous DRAM runs of a DMA: (rows, elements per row).
  static std::pair<int64_t, int64_t> dram_runs(const Record& r, const Operand& dram) {
    LoopNest<1> nest;
    for (int d = 0; d < kDims; ++d) {
      nest.sizes[d] = r.shape[d];
      nest.strides[0][d] = dram.strides[d];
    }
    nest = simplify(nest);
    const int64_t elements = element_count(r);
    const int64_t run = std::abs(nest.strides[0][kDims - 1]) == 1 ? nest.sizes[kDims - 1] : 1;
    return {elements / run, run};
  }

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
    if (is_store) sanitize_read(r, src, "DMA store source");
    if (is_load) sanitize_write(r, dst, /*dma_load=*/true);
    const int64_t elements = element_count(r);
    if (elements > 0) copy_unit(r.shape, dst, src);

    const int64_t bytes = elements * 4;
    const auto [rows, run] = elements > 0 ? dram_runs(r, is_load ? src : dst)
                                          : std::pair<int64_t, int64_t>{0, 0};
    const double busy = dma_busy_cycles(timing_, rows, run * 4);
    const Access accesses[2] = {access_of(r.views[0], dst, true),
                                access_of(r.views[1], src, false)};
    timeline_.schedule(is_load ? kDmaIn : kDmaOut, accesses, 2, busy, timing_.dma_latency_cycles,
                       r.group, r.location);
    counters_.cycles_serial += busy + timing_.dma_latency_cycles;
    LocationStats* stats = group_stats(r.group);
    if (is_load) {
      counters_.dma_loads += 1;
      counters_.dram_read_bytes += bytes;
      if (stats) stats->dram_read_bytes += bytes;
    } else {
      counters_.dma_stores += 1;
      counters_.dram_write_bytes += bytes;
      if (stats) stats->dram_write_bytes += bytes;
    }
    // The copy is already done (functional model) but the scratchpad side counts as busy until
    // the matching wait, which is what a real asynchronous engine would require.
    if (check_) {
      const Operand& local = is_load ? dst : src;
      outstanding_.push_back({r.token, is_load, local.lo, local.hi, pc_});
    }
  }

  LocationStats* group_stats(int64_t group) {
    auto& all = timeline_.locations();
    return group >= 0 && group < static_cast<int64_t>(all.size()) ? &all[group] : nullptr;
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
    sanitize_read(r, a, "matmul operand A");
    sanitize_read(r, b, "matmul operand B");
    if (accumulate) sanitize_read(r, c, "matmul operand C (accumulated)");
    sanitize_write(r, c, false);
    if (element_count(r) > 0) matmul_unit(r.shape, c, a, b, accumulate, workspace_);

    const int64_t m = r.shape[kM1] * r.shape[kM2];
    const int64_t n = r.shape[kN];
    const int64_t k = r.shape[kK1] * r.shape[kK2] * r.shape[kK3];
    counters_.matmuls += 1;
    counters_.macs += m * n * k;
    const double busy = element_count(r) > 0 ? matmul_cycles(timing_, m, n, k) : 0.0;
    const Access accesses[4] = {access_of(r.views[0], c, true), access_of(r.views[1], a, false),
                                access_of(r.views[2], b, false), access_of(r.views[0], c, false)};
    timeline_.schedule(kPeArray, accesses, accumulate ? 4 : 3, busy, 0, r.group, r.location);
    counters_.cycles_serial += busy;
    if (LocationStats* stats = group_stats(r.group)) stats->macs += m * n * k;
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
    Access accesses[4];
    accesses[0] = access_of(r.views[0], dst, true);
    for (int k = 0; k < arity; ++k) {
      sources[k] = resolve(r, 1 + k, kVectorRoles[1 + k]);
      check_read(sources[k], kVectorRoles[1 + k]);
      sanitize_read(r, sources[k], kVectorSourceNames[k]);
      accesses[1 + k] = access_of(r.views[1 + k], sources[k], false);
      if (sources[k].memory != isa::kSpm) accesses[1 + k].lo = accesses[1 + k].hi = 0;
    }
    check_write(dst, kVectorRoles[0]);
    sanitize_write(r, dst, false);
    const int64_t elements = element_count(r);
    if (elements > 0) vector_unit(r.sub, r.shape, dst, sources);

    counters_.vector_ops += 1;
    counters_.vector_elements += elements;
    const double busy = static_cast<double>(ceil_div(elements, timing_.vector_width));
    timeline_.schedule(kVectorUnit, accesses, 1 + arity, busy, timing_.vector_latency_cycles,
                       r.group, r.location);
    counters_.cycles_serial += busy + timing_.vector_latency_cycles;
    if (LocationStats* stats = group_stats(r.group)) stats->vector_elements += elements;
  }

  static int64_t ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }

  const Record* records_;
  const double* immediates_;
  int64_t count_;
  const std::vector<DramBuffer>& dram_;
  std::vector<float> spm_;
  Timing timing_;
  Options options_;
  bool check_;
  Timeline timeline_;
  std::unique_ptr<Shadow> shadow_;
  std::vector<Allocation> allocations_;
  static constexpr size_t kMaxOccupancyEvents = 1 << 20;
  std::vector<std::pair<double, int64_t>> occupancy_;
  int64_t live_elements_ = 0;
  double occupancy_time_ = 0, occupancy_area_ = 0;

  int64_t pc_ = 0;
  int64_t iv_[isa::kMaxLoopDepth] = {};
  std::vector<int64_t> loop_end_;  // per LOOP pc: the pc of its ENDLOOP
  std::vector<InFlightDma> outstanding_;
  float immediate_ = 0.0f;  // the current record's immediate, as MEM_IMM operands read it
  Workspace workspace_;
  Counters counters_;
};

}  // namespace

RunResult run_program(const Record* records, const double* immediates, int64_t count,
                      const std::vector<DramBuffer>& dram, int64_t spm_elements,
                      const Timing& timing, const Options& options) {
  return Interpreter(records, immediates, count, dram, spm_elements, timing, options).run();
}

}  // namespace polyfuse::emulator
