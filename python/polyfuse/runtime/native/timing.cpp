// The engines' timeline (see timing.h for the model).
#include "timing.h"

#include <cmath>

namespace polyfuse::emulator {

namespace {
int64_t ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }
}  // namespace

double matmul_cycles(const Timing& timing, int64_t m, int64_t n, int64_t k) {
  const int64_t rows = timing.pe_rows, cols = timing.pe_cols;
  if (timing.dataflow == kOutputStationary)
    return static_cast<double>(ceil_div(m, rows) * ceil_div(n, cols) * (k + 2 * rows + cols - 2));
  return static_cast<double>(ceil_div(k, rows) * ceil_div(n, cols) * (m + 2 * rows + cols - 2));
}

double dma_busy_cycles(const Timing& timing, int64_t rows, int64_t run_bytes) {
  int64_t bus_bytes = run_bytes;
  if (timing.dma_burst_bytes > 0)
    bus_bytes = ceil_div(run_bytes, timing.dma_burst_bytes) * timing.dma_burst_bytes;
  return std::ceil(static_cast<double>(rows * bus_bytes) / timing.dma_bytes_per_cycle);
}

double Timeline::schedule(int engine, const Access* accesses, int count, double busy,
                          double latency, int64_t group, int64_t location) {
  double start;
  if (timing_.overlap) {
    start = free_[engine];
    for (int i = 0; i < count; ++i) {
      const Access& a = accesses[i];
      if (a.lo < a.hi) start = std::max(start, memory(a.buffer).ready(a.lo, a.hi, a.write));
    }
  } else {
    start = makespan_;
  }
  const double finish = start + busy + latency;
  // A pipelined engine takes its next instruction once this one has gone through; the serial
  // baseline keeps every engine idle until the result is there.
  free_[engine] = timing_.overlap ? start + busy : finish;
  busy_[engine] += busy;
  makespan_ = std::max(makespan_, finish);
  if (timing_.overlap) {
    dispatch_floor_ = *std::min_element(free_, free_ + kNumEngines);
    for (int i = 0; i < count; ++i) {
      const Access& a = accesses[i];
      if (a.lo >= a.hi) continue;
      RangeTimes& times = memory(a.buffer);
      times.record(a.lo, a.hi, a.write, finish);
      times.prune(dispatch_floor_);
    }
  }
  if (group >= 0 && group < static_cast<int64_t>(locations_.size())) {
    LocationStats& s = locations_[group];
    if (s.location < 0) s.location = location;
    s.busy[engine] += busy;
    if (s.first_start < 0 || start < s.first_start) s.first_start = start;
    s.last_finish = std::max(s.last_finish, finish);
  }
  if (trace_limit_ > 0) trace(engine, group, start, finish, busy);
  return finish;
}

void Timeline::trace(int engine, int64_t group, double start, double finish, double busy) {
  const int64_t last = last_event_[engine];
  if (last >= 0) {
    TraceEvent& e = trace_[last];
    if (e.group == group && start - e.finish <= merge_gap_ && start >= e.start) {
      e.finish = std::max(e.finish, finish);
      e.busy += busy;
      e.instructions += 1;
      return;
    }
  }
  if (static_cast<int64_t>(trace_.size()) >= trace_limit_) {
    ++trace_dropped_;
    return;
  }
  last_event_[engine] = static_cast<int64_t>(trace_.size());
  trace_.push_back({engine, group, start, finish, busy, 1});
}

}  // namespace polyfuse::emulator
