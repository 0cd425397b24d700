"""DeepBench inference kernels: fixed (VTA reference) vs CSP embedding (issue 6).

    python bench/deepbench.py                                  # all 88 GEMMs + 16 convs
    python bench/deepbench.py --targets vta --limit 5 --json out.json
    python bench/deepbench.py --gemm my_gemms.csv --conv my_convs.csv

For every shape and target: the CP-SAT embedding (solve time), the fixed embedding, the
PE-array cycles of both from the instructions their lowered programs issue, PE
utilisation, layout-change traffic (the model, and the DRAM bytes and cycles of the layout
programs the emulator runs, which must equal it), and the max relative error of both embeddings'
emulator runs against numpy/PyTorch (integer-valued float32 data, so exact sums are
expected). GEMMs above --full-macs MACs are executed on a sub-GEMM (a sample of rows and
columns of the output, the full K) with the same embedding; the record says which. The
layout programs always run at full size (on their own for a sub-GEMM).
A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from polyfuse.embedding import (
    ContractionOp,
    ConvParams,
    Embedding,
    conv2d,
    fixed_embedding,
    instruction_model,
    matmul,
    solve,
    utilization,
)
from polyfuse.embedding.embedding import cycles_of
from polyfuse.embedding.layout import layout_cost
from polyfuse.embedding.lower import lower, measure_layout, run, trace_cycles
from polyfuse.runtime.emulator import set_num_threads
from polyfuse.targets import load_target

DATA = Path("/work/shared/data")
DEFAULT_GEMM = DATA / "deepbench_gemm_inference.csv"
DEFAULT_CONV = DATA / "deepbench_conv_inference_device.csv"


def read_gemms(path: Path) -> list[tuple[dict[str, object], ContractionOp]]:
    ops = []
    with path.open() as f:
        for row in csv.DictReader(f):
            m, n, k = int(row["M"]), int(row["N"]), int(row["K"])
            ops.append(({"set": row.get("set", ""), "M": m, "N": n, "K": k}, matmul(m, n, k)))
    return ops


def read_convs(path: Path) -> list[tuple[dict[str, object], ContractionOp]]:
    ops = []
    with path.open() as f:
        for row in csv.DictReader(f):
            v = {key: int(value) for key, value in row.items()}
            params = ConvParams(
                n=v["N"],
                c=v["C"],
                h=v["H"],
                w=v["W"],
                k=v["K"],
                r=v["R"],
                s=v["S"],
                stride=(v["stride_h"], v["stride_w"]),
                pad=(v["pad_h"], v["pad_w"]),
            )
            ops.append((v, conv2d(params)))
    return ops


def restrict(emb: Embedding, op: ContractionOp) -> Embedding:
    """The same embedding on a smaller instance of the operator (unsplit dims only)."""
    extents = op.extents

    def parts(group: tuple) -> tuple:  # type: ignore[type-arg]
        return tuple(replace(p, extent=extents[p.dim]) for p in group if extents[p.dim] > 1)

    return Embedding(
        emb.transposed,
        parts(emb.stream),
        parts(emb.block_in),
        parts(emb.block_out),
        parts(emb.diagonal),
        parts(emb.loops),
    )


def numerics_instance(
    op: ContractionOp, full_macs: int, max_elements: int
) -> tuple[ContractionOp, str]:
    """The operator the emulator runs: `op`, or for a big GEMM a sub-GEMM of it."""
    if op.kind != "matmul" or (
        op.macs <= full_macs and max(op.lhs.elements, op.rhs.elements) <= max_elements
    ):
        return op, "full"
    e = op.extents
    cap = max(16, min(128, max_elements // e["k"]))
    m, n = min(e["m"], cap), min(e["n"], cap)
    return matmul(m, n, e["k"]), f"sub-GEMM {m}x{n} of the output, full K={e['k']}"


def measure(
    shape: dict[str, object],
    op: ContractionOp,
    target_name: str,
    rng: np.random.Generator,
    args: argparse.Namespace,
) -> dict[str, object]:
    target = load_target(target_name)
    instruction = instruction_model(target)
    cycles_per_byte = 1 / target.dram_bytes_per_cycle
    solution = solve(op, instruction, cycles_per_byte if args.objective == "combined" else 0.0)
    fixed = fixed_embedding(op)
    csp = solution.embedding
    fixed_cycles = trace_cycles(lower(op, fixed, instruction).trace, instruction)
    csp_cycles = trace_cycles(lower(op, csp, instruction).trace, instruction)
    assert fixed_cycles == cycles_of(fixed, instruction) and csp_cycles == solution.cycles
    small, checked = numerics_instance(op, args.full_macs, args.max_elements)
    lhs = rng.integers(-3, 4, size=small.lhs.shape).astype(np.float32)
    rhs = rng.integers(-3, 4, size=small.rhs.shape).astype(np.float32)
    errors = []
    layouts = []
    for emb in (fixed, csp):
        run_emb = emb if small is op else restrict(emb, small)
        execution = run(small, run_emb, instruction, target, lhs, rhs)
        errors.append(execution.max_rel_err)
        # The layout programs of the full-size operator (run on their own when the GEMM
        # program ran on a sub-GEMM); both check their DRAM bytes against layout_cost.
        layouts.append(
            execution.layout if small is op else measure_layout(op, emb, instruction, target)
        )
    fixed_layout = layout_cost(op, fixed, instruction).bytes
    # The layout rewrites as DMA cycles at the target's DRAM bandwidth, not overlapped.
    fixed_total = fixed_cycles + fixed_layout * cycles_per_byte
    csp_total = csp_cycles + solution.layout.bytes * cycles_per_byte
    return {
        "kind": op.kind,
        "shape": shape,
        "label": op.label,
        "target": target_name,
        "fixed_cycles": fixed_cycles,
        "csp_cycles": csp_cycles,
        "speedup": fixed_cycles / csp_cycles,
        "utilization": utilization(op, csp_cycles, instruction),
        "fixed_utilization": utilization(op, fixed_cycles, instruction),
        "solve_s": solution.solve_s,
        "solver_proved_optimal": solution.optimal,
        "optimal_embeddings": solution.optimal_embeddings,
        "fixed_embedding": fixed.describe(),
        "csp_embedding": csp.describe(),
        "fixed_layout_bytes": fixed_layout,
        "csp_layout_bytes": solution.layout.bytes,
        "speedup_with_layout": fixed_total / csp_total,
        # Emulated: the layout programs' DRAM bytes (int8, equal to *_layout_bytes) and
        # cycles (DMA and vector engines, serial), next to the PE cycles above.
        "layout_dram_bytes": layouts[1].dram_bytes,
        "layout_cycles": layouts[1].cycles,
        "fixed_layout_dram_bytes": layouts[0].dram_bytes,
        "fixed_layout_cycles": layouts[0].cycles,
        "csp_layout_dram_bytes": layouts[1].dram_bytes,
        "csp_layout_cycles": layouts[1].cycles,
        "speedup_with_layout_cycles": (fixed_cycles + layouts[0].cycles)
        / (csp_cycles + layouts[1].cycles),
        "objective": solution.objective,
        "max_rel_err": max(errors),
        "fixed_max_rel_err": errors[0],
        "csp_max_rel_err": errors[1],
        "numerics": checked,
    }


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def summarize(records: list[dict[str, object]], target: str) -> dict[str, float]:
    mine = [r for r in records if r["target"] == target]
    speed = [float(r["speedup"]) for r in mine]  # type: ignore[arg-type]
    big = [
        float(r["utilization"])  # type: ignore[arg-type]
        for r in mine
        if r["kind"] == "matmul" and min(r["shape"]["M"], r["shape"]["N"], r["shape"]["K"]) >= 128  # type: ignore[index]
    ]
    return {
        "shapes": len(mine),
        "geomean_speedup": geomean(speed),
        # No embedding beats 100% utilisation, so 1 / (fixed utilisation) bounds any speedup.
        "geomean_speedup_ceiling": geomean([1 / float(r["fixed_utilization"]) for r in mine]),  # type: ignore[arg-type]
        "geomean_speedup_with_layout": geomean([float(r["speedup_with_layout"]) for r in mine]),  # type: ignore[arg-type]
        "layout_mib_fixed": sum(int(r["fixed_layout_bytes"]) for r in mine) / 2**20,  # type: ignore[call-overload]
        "layout_mib_csp": sum(int(r["csp_layout_bytes"]) for r in mine) / 2**20,  # type: ignore[call-overload]
        "layout_mcycles_fixed": sum(float(r["fixed_layout_cycles"]) for r in mine) / 1e6,  # type: ignore[arg-type]
        "layout_mcycles_csp": sum(float(r["csp_layout_cycles"]) for r in mine) / 1e6,  # type: ignore[arg-type]
        "geomean_speedup_with_layout_cycles": geomean(
            [float(r["speedup_with_layout_cycles"]) for r in mine]  # type: ignore[arg-type]
        ),
        "geomean_speedup_gemm": geomean(
            [s for s, r in zip(speed, mine, strict=True) if r["kind"] == "matmul"]
        ),
        "geomean_speedup_conv": geomean(
            [s for s, r in zip(speed, mine, strict=True) if r["kind"] == "conv2d"]
        ),
        "mean_util_gemm_ge128": sum(big) / len(big) if big else float("nan"),
        "gemms_ge128": len(big),
        "mean_util_all": sum(float(r["utilization"]) for r in mine) / len(mine)
        if mine
        else float("nan"),  # type: ignore[arg-type]
        "max_solve_s": max(float(r["solve_s"]) for r in mine) if mine else float("nan"),  # type: ignore[arg-type]
        "max_rel_err": max(float(r["max_rel_err"]) for r in mine) if mine else float("nan"),  # type: ignore[arg-type]
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gemm", type=Path, default=DEFAULT_GEMM, help="GEMM CSV (set,M,N,K)")
    parser.add_argument(
        "--conv", type=Path, default=DEFAULT_CONV, help="conv CSV (DeepBench columns)"
    )
    parser.add_argument("--targets", nargs="+", default=["vta", "gemmini"])
    parser.add_argument("--json", type=Path, help="write one record per shape and target")
    parser.add_argument(
        "--objective",
        choices=("lexicographic", "combined"),
        default="lexicographic",
        help="lexicographic: PE cycles, then layout traffic (issue 6); combined: PE cycles + "
        "layout bytes / DRAM bytes per cycle",
    )
    parser.add_argument("--limit", type=int, default=0, help="first N GEMMs and N convs only")
    parser.add_argument(
        "--full-macs", type=int, default=1 << 28, help="GEMMs up to this run in full"
    )
    parser.add_argument(
        "--max-elements", type=int, default=1 << 23, help="operand size cap for full runs"
    )
    args = parser.parse_args()
    set_num_threads(1)

    ops = read_gemms(args.gemm) + read_convs(args.conv)
    if args.limit:
        gemms = [o for o in ops if o[1].kind == "matmul"][: args.limit]
        convs = [o for o in ops if o[1].kind == "conv2d"][: args.limit]
        ops = gemms + convs
    console = Console(width=240)
    records = []
    start = time.perf_counter()
    for target in args.targets:
        rng = np.random.default_rng(0)
        for shape, op in ops:
            records.append(measure(shape, op, target, rng, args))

    table = Table(title="DeepBench: fixed (VTA reference) vs CSP embedding, PE-array cycles")
    for column in (
        "target",
        "shape",
        "fixed cycles",
        "CSP cycles",
        "speedup",
        "util fixed",
        "util CSP",
        "solve s",
        "max rel err",
        "CSP embedding",
    ):
        table.add_column(
            column, justify="left" if column in ("target", "shape", "CSP embedding") else "right"
        )
    for r in records:
        table.add_row(
            str(r["target"]),
            str(r["label"]),
            f"{r['fixed_cycles']:,}",
            f"{r['csp_cycles']:,}",
            f"{r['speedup']:.2f}x",
            f"{r['fixed_utilization']:.1%}",
            f"{r['utilization']:.1%}",
            f"{r['solve_s']:.3f}",
            f"{r['max_rel_err']:.1e}",
            str(r["csp_embedding"]),
        )
    console.print(table)
    summaries = {t: summarize(records, t) for t in args.targets}
    for target, s in summaries.items():
        console.print(
            f"[bold]{target}[/bold]: {s['shapes']} shapes, geomean speedup {s['geomean_speedup']:.3f}x "
            f"(GEMM {s['geomean_speedup_gemm']:.3f}x, conv {s['geomean_speedup_conv']:.3f}x; "
            f"ceiling at 100% utilisation {s['geomean_speedup_ceiling']:.3f}x), "
            f"mean CSP utilisation on {s['gemms_ge128']} GEMMs with M,N,K>=128: {s['mean_util_gemm_ge128']:.1%}, "
            f"max solve {s['max_solve_s']:.3f} s, max rel err {s['max_rel_err']:.1e}; "
            f"layout-change traffic fixed {s['layout_mib_fixed']:.1f} MiB, CSP {s['layout_mib_csp']:.1f} MiB; "
            f"geomean speedup counting that traffic as DMA cycles {s['geomean_speedup_with_layout']:.3f}x; "
            f"emulated layout programs fixed {s['layout_mcycles_fixed']:.2f} Mcycles, "
            f"CSP {s['layout_mcycles_csp']:.2f} Mcycles, geomean speedup with them "
            f"{s['geomean_speedup_with_layout_cycles']:.3f}x"
        )
    console.print(f"wall time {time.perf_counter() - start:.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"records": records, "summary": summaries}, indent=1))


if __name__ == "__main__":
    main()
