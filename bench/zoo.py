"""Model-zoo benchmark: compile time, emulator vs eager wall time, DRAM traffic, cycles.

    python bench/zoo.py                                   # every zoo model x preset
    python bench/zoo.py --models resnet50 --targets edge --json out.json
    python bench/zoo.py --models resnet18 --targets vta --embedding fixed

For each model x target: compile time split by stage, emulator wall time and eager
PyTorch wall time in the same process with the same thread count (best of --repeat),
DRAM bytes read and written (counted by the emulator), the compulsory lower bound
(inputs and weights read once, outputs written once) and the ratio, cycles, and the
max relative error against eager PyTorch. `--embedding` says how contractions go onto the
PE array (csp, fixed, heuristic; docs/embedding.md); the records then also carry the
PE-array cycles of the issued instructions under the embedding's instruction model and
the CP-SAT solve time. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import time
import timeit

import torch
from rich.console import Console
from rich.table import Table

import polyfuse
from polyfuse.embedding import instruction_model
from polyfuse.lowering.contraction_embedding import EMBEDDINGS, program_pe_cycles
from polyfuse.models import ZOO, get_model
from polyfuse.runtime.emulator import set_num_threads
from polyfuse.targets import list_presets


def measure(
    model_name: str, target: str, batch: int, repeat: int, embedding: str = "csp"
) -> dict[str, object]:
    model, inputs = get_model(model_name, batch=batch)
    start = time.perf_counter()
    compiled = polyfuse.compile(model, inputs, target=target, embedding=embedding)
    compile_s = time.perf_counter() - start
    output = compiled(*inputs)  # warm-up, and the report
    run_s = min(timeit.repeat(lambda: compiled(*inputs), number=1, repeat=repeat))
    with torch.no_grad():
        reference = model(*inputs)
        eager_s = min(timeit.repeat(lambda: model(*inputs), number=1, repeat=repeat))
    report = compiled.report
    assert report is not None and isinstance(output, torch.Tensor)
    error = float((output - reference).abs().max() / reference.abs().max())
    return {
        "model": model_name,
        "target": target,
        "batch": batch,
        "compile_s": round(compile_s, 3),
        "compile_stages_s": {k: round(v, 3) for k, v in compiled.compile_seconds.items()},
        "run_s": round(run_s, 4),
        "eager_s": round(eager_s, 4),
        "dram_read_bytes": report.stats.dram_read_bytes,
        "dram_write_bytes": report.stats.dram_write_bytes,
        "planned_bytes": report.planned_bytes,
        "compulsory_bytes": report.compulsory_bytes,
        "traffic_ratio": round(report.traffic_ratio, 3),
        "cycles": int(report.cycles),
        "pe_utilization": round(report.pe_utilization, 4),
        "max_rel_err": error,
        "embedding": embedding,
        "pe_cycles": int(report.stats.pe_cycles),
        "instruction_pe_cycles": program_pe_cycles(
            compiled.serialized.program, instruction_model(compiled.target)
        ),
        "predicted_pe_cycles": sum(r.predicted_pe_cycles for r in compiled.operators),
        "solve_s": round(sum(r.solve_s for r in compiled.operators), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(ZOO), choices=list(ZOO))
    parser.add_argument("--targets", nargs="+", default=list_presets())
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write one record per row to this file")
    parser.add_argument("--embedding", choices=list(EMBEDDINGS), default="csp")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    set_num_threads(args.threads)

    records = []
    console = Console(width=160)
    for model_name in args.models:
        for target in args.targets:
            console.log(f"{model_name} on {target}")
            records.append(measure(model_name, target, args.batch, args.repeat, args.embedding))

    table = Table(
        title=f"polyfuse zoo, layer by layer, embedding {args.embedding}, batch {args.batch}, "
        f"{args.threads} thread(s)"
    )
    for column in [
        "model",
        "target",
        "compile s",
        "emulator s",
        "eager s",
        "emu/eager",
        "DRAM MiB",
        "lower bound MiB",
        "ratio",
        "Mcycles",
        "PE Mcycles (emulator)",
        "PE Mcycles (instr. model)",
        "max rel err",
    ]:
        table.add_column(column, justify="left" if column in ("model", "target") else "right")
    mib = 1024 * 1024
    for r in records:
        table.add_row(
            str(r["model"]),
            str(r["target"]),
            f"{r['compile_s']:.2f}",
            f"{r['run_s']:.3f}",
            f"{r['eager_s']:.3f}",
            f"{float(r['run_s']) / float(r['eager_s']):.2f}x",  # type: ignore[arg-type]
            f"{(int(r['dram_read_bytes']) + int(r['dram_write_bytes'])) / mib:.1f}",  # type: ignore[call-overload]
            f"{int(r['compulsory_bytes']) / mib:.1f}",
            f"{r['traffic_ratio']:.2f}x",  # type: ignore[call-overload]
            f"{int(r['cycles']) / 1e6:.2f}",
            f"{int(r['pe_cycles']) / 1e6:.3f}",  # type: ignore[call-overload]
            f"{int(r['instruction_pe_cycles']) / 1e6:.3f}",  # type: ignore[call-overload]
            f"{float(r['max_rel_err']):.1e}",  # type: ignore[call-overload, arg-type]
        )
    console.print(table)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(records, handle, indent=2)


if __name__ == "__main__":
    main()
