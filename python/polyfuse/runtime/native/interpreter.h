// Runs an instruction table on the emulated accelerator: control flow, operand resolution and
// bounds, the DMA in-flight rules, and the timing model. The functional units do the arithmetic.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "isa.h"
#include "timing.h"

namespace polyfuse::emulator {

// What to do besides executing: checks, timing mode, trace.
struct Options {
  bool check = true;       // the DMA in-flight rules and the allocation rules
  bool sanitize = false;   // also: reads of never-written scratchpad elements, DMA loads over
                           // results nobody has read yet (see sanitizer.h)
  int64_t trace_limit = 0;  // engine-timeline slices to record (0: none)
  double trace_merge_gap = 0;
};

// What a run did and how long each engine was busy.
struct Counters {
  int64_t dram_read_bytes = 0;
  int64_t dram_write_bytes = 0;
  int64_t dma_loads = 0;
  int64_t dma_stores = 0;
  int64_t matmuls = 0;
  int64_t vector_ops = 0;
  int64_t macs = 0;
  int64_t vector_elements = 0;
  double dma_load_cycles = 0;   // busy cycles of each engine
  double dma_store_cycles = 0;
  double pe_cycles = 0;
  double vector_cycles = 0;
  double cycles = 0;            // critical path through the engines' timelines
  double cycles_serial = 0;     // the same instructions one at a time, each with its latency
  int64_t spm_peak_bytes = 0;  // (highest scratchpad element touched + 1) * 4
  int64_t spm_live_peak_bytes = 0;   // most bytes allocated at once (accel.alloc)
  double spm_live_average_bytes = 0;  // allocated bytes averaged over the cycles
  int64_t instructions = 0;    // records executed, loop control included
};

// Everything a run produces besides the DRAM contents.
struct RunResult {
  Counters counters;
  std::vector<LocationStats> locations;  // indexed by location id
  std::vector<TraceEvent> trace;
  int64_t trace_dropped = 0;
  std::vector<std::pair<double, int64_t>> occupancy;  // (cycle, allocated bytes) at each change
};

struct DramBuffer {
  float* data;
  int64_t size;  // elements
};

// The program did something the accelerator forbids; `pc` is the offending instruction.
class Trap : public std::runtime_error {
 public:
  Trap(const std::string& message, int64_t pc) : std::runtime_error(message), pc(pc) {}
  int64_t pc;
};

// Executes records[0, count) against a fresh, zeroed scratchpad of `spm_elements` floats and the
// DRAM buffers (modified in place). Bounds are always checked; the rest as `options` says.
// Throws Trap.
RunResult run_program(const isa::Record* records, const double* immediates, int64_t count,
                      const std::vector<DramBuffer>& dram, int64_t spm_elements,
                      const Timing& timing, const Options& options);

}  // namespace polyfuse::emulator
