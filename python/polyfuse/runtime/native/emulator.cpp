// polyfuse.runtime._emulator: the Python face of the native accelerator emulator.
//
// Only argument checking and conversion live here; see interpreter.h for the semantics.
// polyfuse.runtime.emulator wraps this module with typed parameters and error locations.
#include <cblas.h>
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <string>
#include <vector>

#include "interpreter.h"

namespace nb = nanobind;
using namespace nb::literals;
using namespace polyfuse;

namespace {

using Records =
    nb::ndarray<const int64_t, nb::shape<-1, isa::kRecordWords>, nb::c_contig, nb::device::cpu>;
using Immediates = nb::ndarray<const double, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using TimingArray = nb::ndarray<const double, nb::shape<9>, nb::c_contig, nb::device::cpu>;
using DramArray = nb::ndarray<float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

PyObject* trap_type = nullptr;  // _emulator.EmulatorTrap, owned by the module

// The DRAM buffers, refusing anything nanobind would have to copy: the program writes them in
// place, and writes to a silent copy would be lost.
std::vector<DramArray> dram_arrays(const nb::list& dram) {
  std::vector<DramArray> arrays(dram.size());
  for (size_t i = 0; i < dram.size(); ++i) {
    if (!nb::try_cast<DramArray>(dram[i], arrays[i], /*convert=*/false))
      throw nb::type_error(("dram[" + std::to_string(i) +
                            "] must be a writable, C-contiguous, 1-D float32 numpy array")
                               .c_str());
  }
  return arrays;
}

emulator::Timing timing_from(const TimingArray& t) {
  const emulator::Timing timing{t(0),
                                t(1),
                                static_cast<int64_t>(t(2)),
                                static_cast<int64_t>(t(3)),
                                static_cast<int64_t>(t(4)),
                                t(5),
                                static_cast<int64_t>(t(6)),
                                static_cast<int64_t>(t(7)),
                                t(8) != 0.0};
  if (!(timing.dma_bytes_per_cycle > 0) || timing.pe_rows < 1 || timing.pe_cols < 1 ||
      timing.vector_width < 1)
    throw nb::value_error("timing: dma_bytes_per_cycle, pe_rows, pe_cols and vector_width must be "
                          "positive");
  return timing;
}

nb::dict counters_dict(const emulator::Counters& c) {
  nb::dict d;
  d["dram_read_bytes"] = c.dram_read_bytes;
  d["dram_write_bytes"] = c.dram_write_bytes;
  d["dma_loads"] = c.dma_loads;
  d["dma_stores"] = c.dma_stores;
  d["matmuls"] = c.matmuls;
  d["vector_ops"] = c.vector_ops;
  d["macs"] = c.macs;
  d["vector_elements"] = c.vector_elements;
  d["dma_load_cycles"] = c.dma_load_cycles;
  d["dma_store_cycles"] = c.dma_store_cycles;
  d["pe_cycles"] = c.pe_cycles;
  d["vector_cycles"] = c.vector_cycles;
  d["cycles"] = c.cycles;
  d["cycles_serial"] = c.cycles_serial;
  d["spm_peak_bytes"] = c.spm_peak_bytes;
  d["spm_live_peak_bytes"] = c.spm_live_peak_bytes;
  d["spm_live_average_bytes"] = c.spm_live_average_bytes;
  d["instructions"] = c.instructions;
  return d;
}

// Per-location statistics as lists indexed by location id.
nb::dict locations_dict(const std::vector<emulator::LocationStats>& locations) {
  nb::list location, read, written, macs, elements, first, last, dma_in, dma_out, pe, vector;
  for (const emulator::LocationStats& s : locations) {
    location.append(s.location);
    read.append(s.dram_read_bytes);
    written.append(s.dram_write_bytes);
    macs.append(s.macs);
    elements.append(s.vector_elements);
    first.append(s.first_start);
    last.append(s.last_finish);
    dma_in.append(s.busy[emulator::kDmaIn]);
    dma_out.append(s.busy[emulator::kDmaOut]);
    pe.append(s.busy[emulator::kPeArray]);
    vector.append(s.busy[emulator::kVectorUnit]);
  }
  nb::dict d;
  d["location"] = location;
  d["dram_read_bytes"] = read;
  d["dram_write_bytes"] = written;
  d["macs"] = macs;
  d["vector_elements"] = elements;
  d["first_start"] = first;
  d["last_finish"] = last;
  d["dma_load_cycles"] = dma_in;
  d["dma_store_cycles"] = dma_out;
  d["pe_cycles"] = pe;
  d["vector_cycles"] = vector;
  return d;
}

nb::list trace_list(const std::vector<emulator::TraceEvent>& trace) {
  nb::list events;
  for (const emulator::TraceEvent& e : trace)
    events.append(nb::make_tuple(e.engine, e.group, e.start, e.finish, e.busy, e.instructions));
  return events;
}

nb::dict run(const Records& records, const Immediates& immediates, const nb::list& dram,
             int64_t spm_elements, const TimingArray& timing_array, bool check, bool sanitize,
             int64_t trace_limit, double trace_merge_gap) {
  const auto count = static_cast<int64_t>(records.shape(0));
  if (static_cast<int64_t>(immediates.shape(0)) != count)
    throw nb::value_error("immediates must hold one value per record");
  if (spm_elements < 0) throw nb::value_error("spm_elements must be non-negative");
  const emulator::Timing timing = timing_from(timing_array);
  const std::vector<DramArray> arrays = dram_arrays(dram);
  std::vector<emulator::DramBuffer> buffers;
  for (const DramArray& a : arrays) buffers.push_back({a.data(), static_cast<int64_t>(a.shape(0))});
  const auto* table = reinterpret_cast<const isa::Record*>(records.data());

  emulator::Options options;
  options.check = check;
  options.sanitize = sanitize;
  options.trace_limit = trace_limit;
  options.trace_merge_gap = trace_merge_gap;
  emulator::RunResult result;
  try {
    nb::gil_scoped_release release;
    result = emulator::run_program(table, immediates.data(), count, buffers, spm_elements, timing,
                                   options);
  } catch (const emulator::Trap& trap) {
    const int64_t location = table[trap.pc].location;
    PyErr_SetObject(trap_type, nb::make_tuple(trap.what(), trap.pc, location).ptr());
    throw nb::python_error();
  }
  nb::dict out = counters_dict(result.counters);
  out["locations"] = locations_dict(result.locations);
  out["trace"] = trace_list(result.trace);
  out["trace_dropped"] = result.trace_dropped;
  nb::list occupancy;
  for (const auto& [cycle, bytes] : result.occupancy) occupancy.append(nb::make_tuple(cycle, bytes));
  out["occupancy"] = occupancy;
  return out;
}

}  // namespace

NB_MODULE(_emulator, m) {
  m.doc() = "Native core of the emulated scratchpad accelerator (see polyfuse.runtime.emulator).";

  trap_type = PyErr_NewExceptionWithDoc(
      "polyfuse.runtime._emulator.EmulatorTrap",
      "The program did something the accelerator forbids. args: (message, pc, location_id).",
      PyExc_RuntimeError, nullptr);
  m.attr("EmulatorTrap") = nb::steal(trap_type);

  // The encoding this build expects, so Python can check it against isa.py.
  m.attr("RECORD_WORDS") = isa::kRecordWords;
  m.attr("VIEW_WORDS") = isa::kViewWords;
  m.attr("VIEW_BASE") = isa::kViewBase;
  m.attr("MAX_DIMS") = isa::kMaxDims;
  m.attr("MAX_LOOP_DEPTH") = isa::kMaxLoopDepth;
  m.def("vector_arity", &isa::vector_arity, "kind"_a,
        "Sources read by a vector kind, -1 if the kind is unknown.");

  m.def("run", &run, "records"_a, "immediates"_a, "dram"_a, "spm_elements"_a, "timing"_a,
        "check"_a = true, "sanitize"_a = false, "trace_limit"_a = 0, "trace_merge_gap"_a = 0.0,
        "Executes an instruction table; returns the counters.\n\n"
        "records: int64 (n, 96) table; immediates: float64 (n,); dram: list of writable 1-D\n"
        "float32 arrays, modified in place; spm_elements: scratchpad capacity in floats;\n"
        "timing: float64 [dma_latency_cycles, dma_bytes_per_cycle, pe_rows, pe_cols,\n"
        "vector_width, vector_latency_cycles, dataflow, dma_burst_bytes, overlap];\n"
        "check: enforce the DMA in-flight and allocation rules; sanitize: also shadow every\n"
        "scratchpad element; trace_limit: engine slices to record.\n"
        "Raises EmulatorTrap(message, pc, location_id).");
  m.def(
      "set_num_threads", [](int threads) { scipy_openblas_set_num_threads(threads); },
      "threads"_a, "Sets the number of OpenBLAS threads used for MATMUL.");
}
