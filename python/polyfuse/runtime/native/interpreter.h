// Runs an instruction table on the emulated accelerator: control flow, operand resolution and
// bounds, the DMA in-flight rules, and the timing model. The functional units do the arithmetic.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "isa.h"

namespace polyfuse::emulator {

// The machine's timing parameters (see MachineParams in emulator.py).
struct Timing {
  double dma_latency_cycles;
  double dma_bytes_per_cycle;
  int64_t pe_rows;
  int64_t pe_cols;
  int64_t vector_width;
  double vector_latency_cycles;
};

// What a run did and how long each engine was busy (engines run serially).
struct Counters {
  int64_t dram_read_bytes = 0;
  int64_t dram_write_bytes = 0;
  int64_t dma_loads = 0;
  int64_t dma_stores = 0;
  int64_t matmuls = 0;
  int64_t vector_ops = 0;
  int64_t macs = 0;
  int64_t vector_elements = 0;
  double dma_load_cycles = 0;
  double dma_store_cycles = 0;
  double pe_cycles = 0;
  double vector_cycles = 0;
  int64_t spm_peak_bytes = 0;  // (highest scratchpad element touched + 1) * 4
  int64_t instructions = 0;    // records executed, loop control included
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
// DRAM buffers (modified in place). With `check` false the DMA in-flight rules are not enforced
// (bounds still are). Throws Trap.
Counters run_program(const isa::Record* records, const double* immediates, int64_t count,
                     const std::vector<DramBuffer>& dram, int64_t spm_elements,
                     const Timing& timing, bool check);

}  // namespace polyfuse::emulator
