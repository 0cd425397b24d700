"""Timing benchmark: overlap speedup over the zoo, and PE-array cycles against SCALE-Sim.

    python bench/timing.py                                    # zoo on edge + ResNet-18 layers
    python bench/timing.py --models resnet18 --targets edge --json out.json
    python bench/timing.py --skip-layers                      # zoo table only

Table 1 (zoo): per model x target, emulated cycles of the layer-by-layer schedule without
overlap (single buffers, one instruction at a time: `cycles_layer_by_layer_no_overlap`)
and of the best schedule polyfuse has (double-buffered tile loops on decoupled engines,
and fusion when `compile(schedule="fused")` is available and faster: `cycles_best`),
emulator wall time with timing on (`emulator_s`) and eager PyTorch (`eager_s`).

Table 2 (layers): every convolution of ResNet-18: SCALE-Sim's compute cycles for the
layer on the target's array size and dataflow (`scalesim_cycles`; SRAMs and bandwidth
large enough that it reports no stalls) next to the emulator's PE-array cycles with DMA
assumed free, twice: for SCALE-Sim's own mapping (an im2col GEMM, one MATMUL per array
fold: `pe_cycles_ideal_memory_scalesim_mapping`, which isolates the timing model) and
for the layer as polyfuse compiles it (`pe_cycles_ideal_memory`, its tiling and issue
plan included). SCALE-Sim needs the `bench` extra (`pip install .[bench]`).
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import inspect
import io
import json
import math
import tempfile
import timeit
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import polyfuse
from polyfuse.models import ZOO, get_model
from polyfuse.runtime.emulator import MachineParams, execute, set_num_threads
from polyfuse.runtime.program import ProgramBuilder, View
from polyfuse.targets import load_target


def schedules() -> dict[str, dict[str, Any]]:
    """The schedules `polyfuse.compile` offers, by name, with the options that select them.

    `polyfuse.compile` is a lazy wrapper (`*args, **kwargs`): the signature that names
    the options is `polyfuse.compiler.compile`'s."""
    from polyfuse.compiler import compile as compile_model

    parameters = inspect.signature(compile_model).parameters
    found: dict[str, dict[str, Any]] = {"layer-by-layer": {}}
    if "schedule" in parameters:
        found["fused"] = {"schedule": "fused"}
    if "halo" in parameters:  # row-band groups move fewer bytes but recompute rows
        found["fused, no halo"] = {"schedule": "fused", "halo": False}
    return found


def measure_model(model_name: str, target: str, repeat: int) -> dict[str, Any]:
    model, inputs = get_model(model_name)
    with torch.no_grad():
        reference = model(*inputs)
        eager_s = min(timeit.repeat(lambda: model(*inputs), number=1, repeat=repeat))
    baseline = polyfuse.compile(model, inputs, target=target, overlap=False)
    baseline(*inputs)
    assert baseline.report is not None
    no_overlap = baseline.report.stats.cycles
    best: dict[str, Any] = {}
    by_schedule: dict[str, dict[str, float]] = {}
    for schedule, kwargs in schedules().items():
        compiled = polyfuse.compile(model, inputs, target=target, overlap=True, **kwargs)
        output = compiled(*inputs)
        assert compiled.report is not None and isinstance(output, torch.Tensor)
        error = float((output - reference).abs().max() / reference.abs().max())
        cycles = compiled.report.stats.cycles
        fell_back = bool(getattr(compiled, "fusion_fallback", ""))
        by_schedule[schedule] = {
            "cycles": cycles,
            "dram_bytes": compiled.report.dram_bytes,
            "pe_cycles": compiled.report.stats.pe_cycles,
            "dma_in_busy": compiled.report.stats.dma_load_cycles,
            "fell_back": fell_back,  # fusion failed: the numbers are layer by layer's
        }
        if not best or cycles < best["cycles"]:
            emulator_s = min(timeit.repeat(lambda c=compiled: c(*inputs), number=1, repeat=repeat))
            best = {
                "cycles": cycles,
                "schedule": schedule + (" (fell back)" if fell_back else ""),
                "emulator_s": emulator_s,
                "max_rel_err": error,
                "stats": compiled.report.stats,
            }
    stats = best["stats"]
    return {
        "model": model_name,
        "target": target,
        "layer": "all",
        "cycles_layer_by_layer_no_overlap": no_overlap,
        "cycles_best": best["cycles"],
        "best_schedule": best["schedule"],
        "speedup": no_overlap / best["cycles"],
        "pe_cycles_ideal_memory": stats.pe_cycles,
        "dma_in_busy": stats.dma_load_cycles,
        "dma_out_busy": stats.dma_store_cycles,
        "emulator_s": round(best["emulator_s"], 4),
        "eager_s": round(eager_s, 4),
        "max_rel_err": best["max_rel_err"],
        "by_schedule": by_schedule,  # every schedule's cycles and bytes (with overlap)
    }


# ---- SCALE-Sim ----


@dataclass(frozen=True)
class ConvLayer:
    name: str
    size: int  # input height = width
    channels: int
    filters: int
    kernel: int
    stride: int
    padding: int

    @property
    def output_size(self) -> int:
        return (self.size + 2 * self.padding - self.kernel) // self.stride + 1


def resnet18_convs() -> list[ConvLayer]:
    """Every convolution of ResNet-18 (torchvision layout), in network order."""
    layers = [ConvLayer("conv1", 224, 3, 64, 7, 2, 3)]
    size, channels = 56, 64
    for stage, filters in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            stride = 2 if stage > 1 and block == 0 else 1
            prefix = f"layer{stage}.{block}"
            layers.append(ConvLayer(f"{prefix}.conv1", size, channels, filters, 3, stride, 1))
            out = (size + 2 - 3) // stride + 1
            layers.append(ConvLayer(f"{prefix}.conv2", out, filters, filters, 3, 1, 1))
            if stride == 2:
                layers.append(ConvLayer(f"{prefix}.downsample", size, channels, filters, 1, 2, 0))
            size, channels = out, filters
    return layers


SCALESIM_CONFIG = """[general]
run_name = polyfuse

[architecture_presets]
ArrayHeight: {rows}
ArrayWidth: {cols}
IfmapSramSzkB: 1048576
FilterSramSzkB: 1048576
OfmapSramSzkB: 1048576
IfmapOffset: 0
FilterOffset: 100000000
OfmapOffset: 200000000
Bandwidth: 1000000
Dataflow: {dataflow}
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport: false
SparseRep: ellpack_block
OptimizedMapping: false
BlockSize: 8
RandomNumberGeneratorSeed: 40

[run_presets]
InterfaceBandwidth: USER
UseRamulatorTrace: False
"""


def _patch_scalesim_for_numpy2() -> None:
    """SCALE-Sim 3.0.0 calls int(max(column)) on (n, 1) arrays, which numpy >= 2.4 refuses
    ('only 0-dimensional arrays can be converted'); give its memory modules a `max` that
    returns the scalar maximum, as numpy 1.x did. Nothing else is changed."""
    import scalesim.memory.double_buffered_scratchpad_mem as double_buffered
    import scalesim.memory.read_buffer as read_buffer

    def scalar_max(*args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and not kwargs:
            return np.max(np.asarray(args[0]))
        return builtins.max(*args, **kwargs)

    for module in (read_buffer, double_buffered):
        module.max = scalar_max  # type: ignore[attr-defined]


def scalesim_cycles(layer: ConvLayer, rows: int, cols: int, dataflow: str) -> int:
    """SCALE-Sim's compute cycles of one conv layer (ifmap given padded, as SCALE-Sim wants)."""
    from scalesim.scale_sim import scalesim

    _patch_scalesim_for_numpy2()
    padded = layer.size + 2 * layer.padding
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        (folder / "arch.cfg").write_text(
            SCALESIM_CONFIG.format(
                rows=rows, cols=cols, dataflow={"weight-stationary": "ws"}.get(dataflow, "os")
            )
        )
        topology = (
            "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
            "Num Filter, Strides,\n"
            f"{layer.name}, {padded}, {padded}, {layer.kernel}, {layer.kernel}, "
            f"{layer.channels}, {layer.filters}, {layer.stride},\n"
        )
        (folder / "topology.csv").write_text(topology)
        (folder / "layout.csv").write_text(topology)
        simulator = scalesim(
            save_disk_space=True,
            verbose=False,
            config=str(folder / "arch.cfg"),
            topology=str(folder / "topology.csv"),
            layout=str(folder / "layout.csv"),
        )
        with contextlib.redirect_stdout(io.StringIO()):
            simulator.run_scale(top_path=str(folder / "out"))
        layer_sim = simulator.runner.single_layer_sim_object_list[0]
        _, compute_cycles, stall_cycles, *_ = layer_sim.get_compute_report_items()
        assert stall_cycles == 0, "SCALE-Sim reported stalls; raise its SRAM and bandwidth"
        return int(compute_cycles)


def emulate_scalesim_mapping(layer: ConvLayer, target_name: str) -> float:
    """PE cycles of the emulator running the layer the way SCALE-Sim maps it: an im2col
    GEMM (M = output pixels, K = kernel taps x channels, N = filters), one MATMUL per fold
    of the array (K by rows, N by cols, all of M streamed). Checked against numpy."""
    target = load_target(target_name)
    rows, cols = target.pe_rows, target.pe_cols
    m, k, n = layer.output_size**2, layer.kernel**2 * layer.channels, layer.filters
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = np.zeros((m, n), np.float32)
    a_base, b_base, c_base = 0, m * k, m * k + k * n
    builder = ProgramBuilder()
    builder.dma(View.spm(a_base, strides=(1,)), View.dram(0, strides=(1,)), (m * k,), 0)
    builder.dma(View.spm(b_base, strides=(1,)), View.dram(1, strides=(1,)), (k * n,), 1)
    builder.wait(0)
    builder.wait(1)
    for n0 in range(0, n, cols):
        for k0 in range(0, k, rows):
            builder.matmul(
                View.spm(c_base + n0, strides=(0, n, 1, 0, 0, 0)),
                View.spm(a_base + k0, strides=(0, k, 0, 0, 0, 1)),
                View.spm(b_base + k0 * n + n0, strides=(0, 0, 1, 0, 0, n)),
                (1, m, min(cols, n - n0), 1, 1, min(rows, k - k0)),
                accumulate=k0 > 0,
            )
    builder.dma(View.dram(2, strides=(1,)), View.spm(c_base, strides=(1,)), (m * n,), 2)
    builder.wait(2)
    machine = MachineParams(
        spm_bytes=4 * (m * k + k * n + m * n),
        dma_latency_cycles=0,
        dma_bytes_per_cycle=target.dram_bytes_per_cycle,
        pe_rows=rows,
        pe_cols=cols,
        vector_width=target.vector_width,
        dataflow=target.dataflow,
    )
    stats = execute(builder.build(), [a, b, c], machine)
    np.testing.assert_allclose(c, a @ b, rtol=1e-3, atol=1e-3)
    return stats.pe_cycles


def measure_layer(layer: ConvLayer, target_name: str, run_scalesim: bool) -> dict[str, Any]:
    target = load_target(target_name)
    conv = torch.nn.Conv2d(
        layer.channels, layer.filters, layer.kernel, layer.stride, layer.padding, bias=False
    ).eval()
    inputs = (torch.randn(1, layer.channels, layer.size, layer.size),)
    compiled = polyfuse.compile(conv, inputs, target=target)
    compiled(*inputs)
    assert compiled.report is not None
    record: dict[str, Any] = {
        "model": "resnet18",
        "target": target_name,
        "layer": layer.name,
        "shape": f"{layer.channels}x{layer.size}x{layer.size} k{layer.kernel} s{layer.stride} "
        f"-> {layer.filters}",
        "pe_cycles_ideal_memory": compiled.report.stats.pe_cycles,
        "pe_cycles_ideal_memory_scalesim_mapping": emulate_scalesim_mapping(layer, target_name),
        "scalesim_cycles": None,
        "scalesim_error": "",
    }
    if run_scalesim:
        key = (
            layer.size,
            layer.channels,
            layer.filters,
            layer.kernel,
            layer.stride,
            layer.padding,
            target_name,
        )
        try:
            if key not in _SCALESIM_CACHE:
                _SCALESIM_CACHE[key] = scalesim_cycles(
                    layer, target.pe_rows, target.pe_cols, target.dataflow
                )
            record["scalesim_cycles"] = _SCALESIM_CACHE[key]
        except Exception as error:  # reported in the table, never replaced by a number
            record["scalesim_error"] = f"{type(error).__name__}: {error}"
    return record


_SCALESIM_CACHE: dict[tuple[Any, ...], int] = {}  # layers of the same shape simulate alike


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(ZOO), choices=list(ZOO))
    parser.add_argument("--targets", nargs="+", default=["edge"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-layers", action="store_true", help="no per-layer table")
    parser.add_argument("--skip-zoo", action="store_true", help="no zoo table")
    parser.add_argument("--skip-scalesim", action="store_true", help="per-layer, no SCALE-Sim")
    parser.add_argument("--layers", nargs="*", help="only these ResNet-18 conv layers")
    parser.add_argument("--json", help="write every record to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    set_num_threads(args.threads)
    console = Console(width=170)

    records: list[dict[str, Any]] = []
    for model_name in [] if args.skip_zoo else args.models:
        for target in args.targets:
            console.log(f"{model_name} on {target}")
            records.append(measure_model(model_name, target, args.repeat))
    zoo = Table(title=f"Emulated cycles, {args.threads} thread(s)")
    for column in (
        "model",
        "target",
        "no overlap Mcyc",
        "best Mcyc",
        "best schedule",
        "speedup",
        "PE ideal Mcyc",
        "emulator s",
        "eager s",
        "emu/eager",
    ):
        zoo.add_column(column, justify="left" if column in ("model", "target") else "right")
    for r in records:
        zoo.add_row(
            r["model"],
            r["target"],
            f"{r['cycles_layer_by_layer_no_overlap'] / 1e6:.2f}",
            f"{r['cycles_best'] / 1e6:.2f}",
            r["best_schedule"],
            f"{r['speedup']:.2f}x",
            f"{r['pe_cycles_ideal_memory'] / 1e6:.2f}",
            f"{r['emulator_s']:.3f}",
            f"{r['eager_s']:.3f}",
            f"{r['emulator_s'] / r['eager_s']:.2f}x",
        )
    if records:
        console.print(zoo)
        for target in args.targets:
            speedups = [r["speedup"] for r in records if r["target"] == target]
            geomean = math.exp(sum(math.log(s) for s in speedups) / len(speedups))
            console.print(f"geomean speedup on {target}: {geomean:.2f}x over {len(speedups)}")

    if not args.skip_layers:
        layer_records = []
        for layer in resnet18_convs():
            if args.layers and layer.name not in args.layers:
                continue
            for target in args.targets:
                console.log(f"resnet18 {layer.name} on {target}")
                layer_records.append(measure_layer(layer, target, not args.skip_scalesim))
        table = Table(title="ResNet-18 convolutions: PE-array cycles with ideal memory")
        for column in (
            "layer",
            "target",
            "shape",
            "SCALE-Sim",
            "emulator, SCALE-Sim mapping",
            "ratio",
            "emulator, polyfuse tiling",
            "ratio ",
        ):
            table.add_column(
                column, justify="left" if column in ("layer", "target", "shape") else "right"
            )
        for r in layer_records:
            scalesim = r["scalesim_cycles"]
            same_mapping = r["pe_cycles_ideal_memory_scalesim_mapping"]
            tiled = r["pe_cycles_ideal_memory"]
            table.add_row(
                r["layer"],
                r["target"],
                r["shape"],
                f"{scalesim:,}" if scalesim is not None else r["scalesim_error"] or "skipped",
                f"{same_mapping:,.0f}",
                f"{same_mapping / scalesim:.3f}" if scalesim else "",
                f"{tiled:,.0f}",
                f"{tiled / scalesim:.3f}" if scalesim else "",
            )
        console.print(table)
        records += layer_records

    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=2))


if __name__ == "__main__":
    main()
