// The timing model: four decoupled engines, a hazard scoreboard, per-instruction costs.
//
// The accelerator has a DMA-in engine (DRAM -> scratchpad), a DMA-out engine (scratchpad ->
// DRAM), the PE array and the vector unit. The program is one instruction stream; every
// instruction is dispatched, in order, to its engine's queue. An engine runs its queue in order.
// Across engines the instructions are synchronised by dependency tokens: an instruction starts
// only when the instructions it depends on have finished. The tokens are those a compiler has to
// insert for the program to be correct on decoupled engines (as VTA's load/compute/store modules
// exchange them): read-after-write, write-after-read and write-after-write on scratchpad and DRAM
// element ranges. The scoreboard derives them from the operands' touched ranges, so a program
// whose buffers do not alias overlaps as far as its data dependences allow, and one that reuses a
// single buffer serialises. With `overlap` off every instruction waits for all earlier ones (one
// engine at a time): the baseline without overlap.
//
// Costs (cycles):
//   DMA     busy: ceil(bus bytes / dram_bytes_per_cycle), bus bytes = every contiguous DRAM run
//           rounded up to whole bursts of dma_burst_bytes; the transfer completes
//           dma_latency_cycles later (requests are pipelined: the engine is free after `busy`).
//   MATMUL  weight-stationary: per fold (ceil(K/rows) x ceil(N/cols) folds)
//             rows (preload B) + M (stream A) + rows + cols - 2 (fill and drain)
//           output-stationary: per fold (ceil(M/rows) x ceil(N/cols) folds)
//             K (stream A and B) + rows + cols - 2 (skew) + rows (drain C)
//           the same expressions as SCALE-Sim's analytical compute model.
//   VECTOR  busy: ceil(elements / vector_width); result vector_latency_cycles later.
#pragma once

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <vector>

namespace polyfuse::emulator {

enum Engine : int { kDmaIn = 0, kDmaOut = 1, kPeArray = 2, kVectorUnit = 3 };
constexpr int kNumEngines = 4;

enum Dataflow : int64_t { kWeightStationary = 0, kOutputStationary = 1 };

// The machine's timing parameters (see MachineParams in emulator.py, which documents them).
struct Timing {
  double dma_latency_cycles;
  double dma_bytes_per_cycle;
  int64_t pe_rows;
  int64_t pe_cols;
  int64_t vector_width;
  double vector_latency_cycles;
  int64_t dataflow;        // Dataflow
  int64_t dma_burst_bytes;  // 0: no burst rounding
  bool overlap;             // engines run concurrently (else one instruction at a time)
};

// The last time each element range was written and read, as a sorted array of segments: the
// segment starting at `start` extends to the next segment's start. Element ranges are [lo, hi).
// A flat vector rather than a std::map: lookups walk contiguous memory (the scoreboard is a
// third of the emulator's time on large models), and inserts move at most max_segments entries.
class RangeTimes {
 public:
  // At most `max_segments` segments are kept (see prune).
  explicit RangeTimes(size_t max_segments = 1024) : max_segments_(max_segments) {
    segments_.push_back({0, 0, 0});
  }

  // The time an access of [lo, hi) may start: after the last write (and, for a write, after the
  // last read) of any element in it.
  double ready(int64_t lo, int64_t hi, bool write) const {
    double t = 0;
    for (auto it = find(lo); it != segments_.end() && it->start < hi; ++it)
      t = std::max(t, write ? std::max(it->written, it->read) : it->written);
    return t;
  }

  void record(int64_t lo, int64_t hi, bool write, double finish) {
    split(lo);
    split(hi);
    for (auto it = first_at_or_after(lo); it != segments_.end() && it->start < hi; ++it) {
      if (write)
        it->written = std::max(it->written, finish);
      else
        it->read = std::max(it->read, finish);
    }
  }

  // Forgets times that can no longer delay anything (<= horizon) and merges equal neighbours;
  // if the array is still larger than max_segments, merges neighbours pairwise keeping the later
  // times (conservative: it can only add dependences), so every lookup stays cheap.
  void prune(double horizon) {
    if (segments_.size() <= max_segments_) return;
    size_t kept = 0;
    for (size_t i = 0; i < segments_.size(); ++i) {
      Segment s = segments_[i];
      if (s.written <= horizon) s.written = 0;
      if (s.read <= horizon) s.read = 0;
      if (kept > 0 && s.written == segments_[kept - 1].written &&
          s.read == segments_[kept - 1].read)
        continue;
      segments_[kept++] = s;
    }
    segments_.resize(kept);
    while (segments_.size() > max_segments_) {
      size_t merged = 0;
      for (size_t i = 0; i < segments_.size(); i += 2) {
        Segment s = segments_[i];
        if (i + 1 < segments_.size()) {
          s.written = std::max(s.written, segments_[i + 1].written);
          s.read = std::max(s.read, segments_[i + 1].read);
        }
        segments_[merged++] = s;
      }
      segments_.resize(merged);
    }
  }

 private:
  struct Segment {
    int64_t start;
    double written, read;
  };
  using Segments = std::vector<Segment>;

  static bool starts_before(int64_t at, const Segment& s) { return at < s.start; }

  // The segment containing element `lo`.
  Segments::const_iterator find(int64_t lo) const {
    auto it = std::upper_bound(segments_.begin(), segments_.end(), lo, starts_before);
    return it == segments_.begin() ? it : std::prev(it);
  }
  Segments::iterator first_at_or_after(int64_t lo) {
    return std::lower_bound(segments_.begin(), segments_.end(), lo,
                            [](const Segment& s, int64_t at) { return s.start < at; });
  }
  // Makes `at` the start of a segment (with the times of the segment it was inside).
  void split(int64_t at) {
    auto it = std::upper_bound(segments_.begin(), segments_.end(), at, starts_before);
    if (it == segments_.begin()) {
      segments_.insert(it, {at, 0, 0});
      return;
    }
    const Segment previous = *std::prev(it);  // a copy: insert may reallocate
    if (previous.start != at) segments_.insert(it, {at, previous.written, previous.read});
  }

  Segments segments_;
  size_t max_segments_;
};

// One memory range an instruction touches: the scratchpad (buffer < 0) or a DRAM buffer.
struct Access {
  int64_t buffer;
  int64_t lo, hi;
  bool write;
};

// An engine busy on one instruction, for the trace (consecutive instructions of one operator on
// one engine are merged into one slice when they follow each other within `merge_gap` cycles).
struct TraceEvent {
  int engine;
  int64_t group;
  double start, finish, busy;
  int64_t instructions;
};

// Per operator group (isa word 12): traffic, work and engine time.
struct LocationStats {
  int64_t location = -1;  // location id of the group's first timed instruction
  int64_t dram_read_bytes = 0, dram_write_bytes = 0, macs = 0, vector_elements = 0;
  double busy[kNumEngines] = {};
  double first_start = -1, last_finish = 0;
};

class Timeline {
 public:
  // Scoreboard resolution: the scratchpad is where buffers are reused within an operator and
  // needs fine ranges; a DRAM tensor is mostly written by one operator and read by the next,
  // where a few ranges per buffer keep the lookups cheap on long programs.
  static constexpr size_t kScratchpadSegments = 1024;
  static constexpr size_t kDramSegments = 16;

  Timeline(const Timing& timing, int64_t dram_buffers, int64_t locations, int64_t trace_limit,
           double merge_gap)
      : timing_(timing),
        spm_(kScratchpadSegments),
        dram_(static_cast<size_t>(dram_buffers), RangeTimes(kDramSegments)),
        locations_(static_cast<size_t>(locations)),
        trace_limit_(trace_limit),
        merge_gap_(merge_gap) {}

  // Schedules one instruction on `engine`; returns its finish time.
  double schedule(int engine, const Access* accesses, int count, double busy, double latency,
                  int64_t group, int64_t location);

  double makespan() const { return makespan_; }
  double busy(int engine) const { return busy_[engine]; }
  // The earliest time the next dispatched instruction could start (for occupancy events).
  double now() const { return timing_.overlap ? dispatch_floor_ : makespan_; }
  std::vector<LocationStats>& locations() { return locations_; }
  const std::vector<TraceEvent>& trace() const { return trace_; }
  int64_t trace_dropped() const { return trace_dropped_; }

 private:
  RangeTimes& memory(int64_t buffer) { return buffer < 0 ? spm_ : dram_[buffer]; }
  void trace(int engine, int64_t group, double start, double finish, double busy);

  Timing timing_;
  RangeTimes spm_;
  std::vector<RangeTimes> dram_;
  std::vector<LocationStats> locations_;
  double free_[kNumEngines] = {};
  double busy_[kNumEngines] = {};
  double makespan_ = 0;
  double dispatch_floor_ = 0;  // min over engines of their free time
  int64_t trace_limit_;
  double merge_gap_;
  int64_t last_event_[kNumEngines] = {-1, -1, -1, -1};
  std::vector<TraceEvent> trace_;
  int64_t trace_dropped_ = 0;
};

// Cycles of the PE array for one instruction C[M,N] (+)= A[M,K] B[K,N].
double matmul_cycles(const Timing& timing, int64_t m, int64_t n, int64_t k);

// Cycles the DMA engine is busy moving `rows` contiguous DRAM runs of `run_bytes` each.
double dma_busy_cycles(const Timing& timing, int64_t rows, int64_t run_bytes);

}  // namespace polyfuse::emulator
