"""Fusion benchmark: DRAM traffic of layer-by-layer vs fused vs the compulsory bound.

    python bench/fusion.py                                  # the whole issue-4 grid
    python bench/fusion.py --models resnet18 --targets edge --spm 524288 --batch 1 \\
        --json out.json

For each model x target x scratchpad size x batch: the DRAM bytes the emulator counted
for (a) the layer-by-layer schedule, (c) the fused schedule, the fused plan's prediction
(the fusion plan plus the data-movement ops, which must equal (c)), (d) the compulsory
bytes (inputs and weights read once, outputs written once), the full fused compile time
and the max relative error of the fused run against eager PyTorch, and (b) MLIR's own
answer, upstream affine-loop-fusion + affine-data-copy-generate with the same fast-memory
capacity, its DMAs and remaining DRAM accesses counted by trip-count evaluation
(`polyfuse/fusion/affine_baseline.py`; null with the reason when it fails). The JSON
also splits (c) by cause (`polyfuse/fusion/breakdown.py`): compulsory_bytes +
between_groups_bytes (activations crossing fusion groups) + within_groups_bytes
(re-reads inside groups) + copy_bytes = fused_bytes. The model is imported once per
batch size; every target and scratchpad size lowers a clone. With two or more scratchpad
sizes a plot of traffic against scratchpad size per model is written to bench/fusion.png;
the summary of the issue's bar figures is printed per batch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from polyfuse.compiler import CompiledModel, bind_buffers, generalize
from polyfuse.dialects import accel
from polyfuse.errors import PolyfuseError
from polyfuse.frontend.importer import import_model
from polyfuse.fusion.affine_baseline import affine_baseline_bytes
from polyfuse.fusion.breakdown import traffic_split
from polyfuse.fusion.plan_ir import read_fusion_plans
from polyfuse.lowering.records import read_records
from polyfuse.models import SMALL, ZOO, get_model
from polyfuse.passes.form_groups import FormGroups
from polyfuse.pipeline import CompileOptions, pipeline
from polyfuse.runtime.emulator import set_num_threads
from polyfuse.runtime.serialize import serialize
from polyfuse.targets import load_target
from polyfuse.targets import target_name as pipeline_target
from polyfuse.tools.pipeline import PipelineElement, run_pipeline

DEFAULT_SPM = [128 * 1024, 512 * 1024, 2 * 1024 * 1024, 8 * 1024 * 1024]
PLOT = Path(__file__).parent / "fusion.png"


def _run(
    imported: Any, inputs: list[torch.Tensor], target: Any, fused: bool, embedding: str = "csp"
) -> tuple[CompiledModel, torch.Tensor, float]:
    """Run compile's pipeline on a clone of the imported (generalised) module (fused: no
    overlap, traffic first; layer by layer: double buffers), run it; (model, output, s)."""
    start = time.perf_counter()
    clone = imported.module.operation.clone()
    plans: list[Any] = []
    options = CompileOptions(
        target=pipeline_target(target),
        schedule="fused" if fused else "layer-by-layer",
        overlap=not fused,
        embedding=embedding,
        traffic_first=True,
    )

    def keep_plans(element: PipelineElement, operation: Any, _: float) -> None:
        if element.name == FormGroups.name:
            plans.extend(read_fusion_plans(operation, target, embedding))

    with imported.module.context:
        run_pipeline(clone, pipeline(options), after_pass=keep_plans)
        records = read_records(clone)
        serialized = serialize(clone, "forward")
    dram = bind_buffers(serialized, imported.weights)
    seconds = time.perf_counter() - start
    compiled = CompiledModel(
        target=target,
        serialized=serialized,
        operators=records,
        input_shapes=[tuple(t.shape) for t in inputs],
        compile_seconds={"lower": seconds},
        fusion_plans=plans,
        _dram=dram,
    )
    output = compiled(*inputs)
    assert isinstance(output, torch.Tensor)
    clone.erase()
    return compiled, output, seconds


def measure(
    model_name: str, targets: list[str], spms: list[int], batch: int
) -> list[dict[str, Any]]:
    model, example = get_model(model_name, batch=batch)
    inputs = list(example)
    with torch.no_grad():
        reference = model(*inputs)
    imported = import_model(model, inputs)
    import_s = sum(imported.seconds.values())
    with imported.module.context:
        accel.load_accel_dialect(imported.module.context)
        start = time.perf_counter()
        generalize(imported.module, imported.weights)  # as compile() does
        generalize_s = time.perf_counter() - start
    affine: dict[int, int | None] = {}
    affine_errors: dict[int, str] = {}
    with imported.module.context:
        for spm in spms:  # (b) depends on the fast-memory capacity only, not the target
            try:
                affine[spm] = affine_baseline_bytes(imported.module.operation, spm).total
            except PolyfuseError as error:
                affine[spm] = None
                affine_errors[spm] = str(error)
    records = []
    for target_name in targets:
        for spm in spms:
            target = dataclasses.replace(load_target(target_name), scratchpad_bytes=spm)
            record: dict[str, Any] = {
                "model": model_name,
                "target": target_name,
                "spm_bytes": spm,
                "batch": batch,
                "mlir_affine_bytes": affine[spm],
            }
            if spm in affine_errors:
                record["mlir_affine_error"] = affine_errors[spm]
            for embedding in ("csp", "fixed"):  # the default, else the VTA reference
                try:
                    layered, _, _ = _run(imported, inputs, target, False, embedding)
                except PolyfuseError as error:  # e.g. an operator that fits no tile
                    record["layer_by_layer_bytes"] = None
                    record["layer_by_layer_error"] = str(error)
                    continue
                assert layered.report is not None
                record["layer_by_layer_bytes"] = layered.report.dram_bytes
                record["layer_by_layer_embedding"] = embedding
                record.pop("layer_by_layer_error", None)
                break
            try:
                fused, output, fused_s = _run(imported, inputs, target, fused=True)
            except PolyfuseError as error:
                record.update(fused_bytes=None, planned_bytes=None, fused_error=str(error))
                records.append(record)
                continue
            assert fused.report is not None
            copies = sum(r.planned_dram_bytes for r in fused.operators if r.kind == "copy")
            (plan,) = fused.fusion_plans
            split = traffic_split(plan.traffic, fused.report.compulsory_bytes, copies)
            record.update(
                fused_bytes=fused.report.dram_bytes,
                planned_bytes=sum(p.predicted_bytes for p in fused.fusion_plans) + copies,
                compulsory_bytes=fused.report.compulsory_bytes,
                compile_s=round(import_s + generalize_s + fused_s, 3),
                fused_lower_s=round(fused_s, 3),
                max_rel_err=float((output - reference).abs().max() / reference.abs().max()),
                spm_peak_bytes=fused.report.stats.spm_peak_bytes,
                between_groups_bytes=split.between_groups,  # fusion/breakdown.py
                within_groups_bytes=split.within_groups,
                copy_bytes=split.copies,
                groups=len(fused.fusion_plans[0].groups),
                operators=sum(len(g.operators) for g in fused.fusion_plans[0].groups),
            )
            records.append(record)
    return records


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def complete(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows where both schedules compiled."""
    return [r for r in records if r.get("fused_bytes") and r.get("layer_by_layer_bytes")]


def summary(records: list[dict[str, Any]]) -> dict[str, float]:
    """The issue's bar figures over `records` (rows where both schedules ran)."""
    records = complete(records)
    at_512 = [r for r in records if r["spm_bytes"] == 512 * 1024]
    removable = [
        (r["layer_by_layer_bytes"] - r["fused_bytes"])
        / (r["layer_by_layer_bytes"] - r["compulsory_bytes"])
        for r in records
        if r["layer_by_layer_bytes"] > r["compulsory_bytes"]
    ]
    return {
        "geomean fused/compulsory at 512 KiB": _geomean(
            [r["fused_bytes"] / r["compulsory_bytes"] for r in at_512]
        ),
        "geomean removable traffic removed": _geomean([max(x, 1e-9) for x in removable]),
        "max fused/(b)": max(
            (r["fused_bytes"] / r["mlir_affine_bytes"] for r in records if r["mlir_affine_bytes"]),
            default=float("nan"),
        ),
        "mean reduction vs layer by layer": sum(
            1 - r["fused_bytes"] / r["layer_by_layer_bytes"] for r in records
        )
        / max(len(records), 1),
    }


def plot(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(r["model"], r["target"], r["batch"]) for r in records})
    columns = min(4, len(keys))
    rows = -(-len(keys) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    mib = 1024 * 1024
    for axis, key in zip(axes.flat, keys, strict=False):
        rows_of = sorted(
            (r for r in records if (r["model"], r["target"], r["batch"]) == key),
            key=lambda r: r["spm_bytes"],
        )
        spm = [r["spm_bytes"] / 1024 for r in rows_of]
        for column, label, style in [
            ("layer_by_layer_bytes", "(a) layer by layer", "o-"),
            ("fused_bytes", "(c) fused", "s-"),
            ("mlir_affine_bytes", "(b) MLIR affine", "^:"),
            ("compulsory_bytes", "(d) compulsory", "k--"),
        ]:
            points = [(x, r[column]) for x, r in zip(spm, rows_of, strict=True) if r[column]]
            if points:
                axis.plot([x for x, _ in points], [y / mib for _, y in points], style, label=label)
        axis.set_yscale("log")
        axis.set_xscale("log", base=2)
        axis.set_title(f"{key[0]}, {key[1]}, batch {key[2]}", fontsize=9)
        axis.set_xlabel("scratchpad KiB")
        axis.set_ylabel("DRAM MiB")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(keys) :]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [*ZOO, *SMALL]
    parser.add_argument("--models", nargs="+", default=list(ZOO), choices=names)
    parser.add_argument("--targets", nargs="+", default=["edge", "inferentia-like"])
    parser.add_argument("--spm", nargs="+", type=int, default=DEFAULT_SPM, help="bytes")
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--json", help="write one record per row to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    set_num_threads(1)

    console = Console(width=160)
    records: list[dict[str, Any]] = []
    for batch in args.batch:
        for model_name in args.models:
            console.log(f"{model_name} batch {batch}")
            records += measure(model_name, args.targets, args.spm, batch)
            if args.json:  # keep what is done if a later model fails
                Path(args.json).write_text(json.dumps(records, indent=2))

    table = Table(title="polyfuse fusion: DRAM MiB, (a) layer by layer, (c) fused, (d) bound")
    for column in [
        "model", "target", "spm KiB", "batch", "(a)", "(b)", "(c)", "planned", "(d)",
        "c/d", "removed", "compile s", "max rel err",
    ]:  # fmt: skip
        table.add_column(column, justify="left" if column in ("model", "target") else "right")
    mib = 1024 * 1024
    for r in complete(records):
        a, c, d = r["layer_by_layer_bytes"], r["fused_bytes"], r["compulsory_bytes"]
        removed = (a - c) / (a - d) if a > d else float("nan")
        table.add_row(
            r["model"], r["target"], str(r["spm_bytes"] // 1024), str(r["batch"]),
            f"{a / mib:.1f}", "n/a" if r["mlir_affine_bytes"] is None
            else f"{r['mlir_affine_bytes'] / mib:.0f}", f"{c / mib:.1f}", f"{r['planned_bytes'] / mib:.1f}",
            f"{d / mib:.1f}", f"{c / d:.2f}x", f"{removed:.0%}", f"{r['compile_s']:.1f}",
            f"{r['max_rel_err']:.1e}",
        )  # fmt: skip
    console.print(table)
    for batch in sorted({r["batch"] for r in records}):  # the bar is stated per batch
        for name, value in summary([r for r in records if r["batch"] == batch]).items():
            console.print(f"batch {batch}: {name}: {value:.3f}")
    for r in records:
        if r not in complete(records):
            console.print(
                f"not run: {r['model']} {r['target']} {r['spm_bytes']} batch {r['batch']}: "
                f"{r.get('layer_by_layer_error') or r.get('fused_error')}"
            )
    if len(args.spm) > 1:
        plot(complete(records), PLOT)
        console.print(f"plot: {PLOT}")


if __name__ == "__main__":
    main()
