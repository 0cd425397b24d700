"""`polyfuse`: compile a bundled model, run it on the emulated accelerator, report.

polyfuse run resnet18 --target edge       compile, emulate, check against PyTorch
polyfuse pipeline --target edge           the pass pipeline compile runs (polyfuse-opt)
polyfuse models                           the bundled models
polyfuse targets                          the target presets
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from polyfuse.errors import PolyfuseError

if TYPE_CHECKING:
    from polyfuse.pipeline import CompileOptions

TOLERANCE = 1e-4  # max |polyfuse - eager| / max |eager|, fp32


def _run(args: argparse.Namespace) -> int:
    import torch

    from polyfuse.compiler import compile as polyfuse_compile
    from polyfuse.fusion.breakdown import traffic_split
    from polyfuse.models import get_model
    from polyfuse.report import format_fusion_groups
    from polyfuse.runtime.emulator import set_num_threads
    from polyfuse.targets import load_target

    _check_run_arguments(args)
    load_target(args.target)  # a bad target file is reported before the model is built
    torch.set_num_threads(args.threads)
    set_num_threads(args.threads)
    model, inputs = get_model(args.model, batch=args.batch)
    status = _Status(quiet=args.quiet)
    status.say(f"compiling {args.model} (batch {args.batch}) for target '{args.target}'")
    start = time.perf_counter()
    options = {
        "overlap": not args.no_overlap,
        "sanitize": args.sanitize,
        "embedding": args.embedding,
        "traffic_first": args.traffic_first,
        "halo": not args.no_halo,
    }
    with status.progress("compiling"):
        compiled = polyfuse_compile(model, inputs, args.target, schedule=args.schedule, **options)
    compile_seconds = time.perf_counter() - start
    status.say(
        f"running on the emulated accelerator ({len(compiled.serialized.program):,} instructions)"
    )
    if args.trace:
        compiled.trace_limit = TRACE_SLICES
    with status.progress("emulating"):
        output = compiled(*inputs)
    with torch.no_grad():
        reference = model(*inputs)
    assert isinstance(output, torch.Tensor)
    error = float((output - reference).abs().max() / reference.abs().max().clamp_min(1e-30))
    report = compiled.report
    assert report is not None
    schedule = (
        "fused" if args.schedule == "fused" and not compiled.fusion_fallback else "layer by layer"
    )
    print(report.format(title=f"{args.model} on '{args.target}' ({schedule}, batch {args.batch})"))
    if compiled.fusion_fallback:
        print(compiled.fusion_fallback)
    matches = error <= TOLERANCE
    verdict = "matches" if matches else "DOES NOT match"
    print(f"{verdict} eager PyTorch: max relative error {error:.2e} (tolerance {TOLERANCE:.0e})")
    if args.operators:
        print(report.format_operators(limit=args.operators))
    if args.groups:
        if not compiled.fusion_plans:
            print("--groups: no fusion groups (run with --schedule fused)")
        copies = sum(r.planned_dram_bytes for r in compiled.operators if r.kind == "copy")
        for plan in compiled.fusion_plans:
            split = traffic_split(plan.traffic, report.compulsory_bytes, copies)
            print(format_fusion_groups(plan.traffic, split, limit=args.groups))
    if args.trace:
        report.write_trace(args.trace)
        print(f"engine timelines written to {args.trace} (open in ui.perfetto.dev)")
    if args.plots:
        for path in report.write_plots(args.plots, name=args.model):
            print(f"plot written to {path}")
    print(
        f"compiled in {compile_seconds:.2f} s: "
        + ", ".join(f"{stage} {seconds:.2f}" for stage, seconds in compiled.compile_seconds.items())
    )
    if args.json:
        record = {
            "model": args.model,
            "batch": args.batch,
            "max_rel_err": error,
            "compile_s": compile_seconds,
            **report.as_dict(),
        }
        with open(args.json, "w") as handle:
            json.dump(record, handle, indent=2)
    return 0 if matches else 1


TRACE_SLICES = 1_000_000  # engine slices recorded for --trace


def _check_run_arguments(args: argparse.Namespace) -> None:
    """Refuse values `run` cannot use before it compiles: nobody should wait minutes for
    a compile to learn that the report cannot be written."""
    for option, value in (("--batch", args.batch), ("--threads", args.threads)):
        if value < 1:
            raise PolyfuseError(f"{option} must be a positive integer, got {value}")
    outputs = {"--json": args.json, "--trace": args.trace, "--plots": args.plots}
    for option, path_text in outputs.items():
        if path_text is None:
            continue
        path = Path(path_text)
        folder = path.parent
        if option != "--plots" and path.is_dir():
            raise PolyfuseError(f"{option} {path}: is a folder; give the path of a file")
        if option == "--plots" and path.exists() and not path.is_dir():
            raise PolyfuseError(f"{option} {path}: is a file; give a folder for the plots")
        if not folder.is_dir():
            raise PolyfuseError(
                f"{option} {path}: folder '{folder}' does not exist; create it first"
            )


class _Status:
    """Progress lines and spinners on stderr, quiet with --quiet or when stderr is not a
    terminal."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet or not sys.stderr.isatty()

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"polyfuse: {message}", file=sys.stderr)

    def progress(self, what: str) -> contextlib.AbstractContextManager[object]:
        """A transient rich spinner with elapsed time while `what` runs."""
        if self.quiet:
            return contextlib.nullcontext()
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        progress.add_task(what, total=None)
        return progress


def _models(_: argparse.Namespace) -> int:
    from polyfuse.models import SMALL, ZOO

    for name, spec in {**ZOO, **SMALL}.items():
        print(f"{name:22} {spec.description}")
    return 0


def _targets(_: argparse.Namespace) -> int:
    from polyfuse.targets import list_presets, load_target

    for name in list_presets():
        target = load_target(name)
        print(
            f"{name:16} {target.pe_rows}x{target.pe_cols} PE array, "
            f"{target.scratchpad_bytes // 1024} KiB scratchpad, "
            f"{target.dram_bytes_per_cycle:g} B/cycle DRAM, {target.clock_mhz:g} MHz"
        )
    return 0


def _pipeline(args: argparse.Namespace) -> int:
    from polyfuse.pipeline import pipeline_text

    print(pipeline_text(_compile_options(args)))
    return 0


def _compile_options(args: argparse.Namespace) -> CompileOptions:
    from polyfuse.pipeline import CompileOptions

    return CompileOptions(
        target=args.target,
        schedule=args.schedule,
        overlap=not args.no_overlap,
        embedding=args.embedding,
        traffic_first=args.traffic_first,
        halo=not args.no_halo,
    )


def _add_compile_options(parser: argparse.ArgumentParser) -> None:
    """The options of `polyfuse.compile` (`CompileOptions`), shared by run and pipeline."""
    parser.add_argument("--target", default="edge", help="a preset name or a target .toml file")
    parser.add_argument(
        "--schedule",
        choices=["layer-by-layer", "fused"],
        default="layer-by-layer",
        help="fused: cross-operator fusion (docs/fusion.md)",
    )
    parser.add_argument(
        "--embedding",
        choices=["csp", "fixed", "heuristic"],
        default="csp",
        help="how contractions go onto the PE array: CP-SAT, the VTA reference, or one "
        "PE block per instruction (docs/embedding.md)",
    )
    parser.add_argument(
        "--no-overlap",
        action="store_true",
        help="baseline: single buffers, engines one instruction at a time",
    )
    parser.add_argument(
        "--traffic-first",
        action="store_true",
        help="fused: never trade DRAM bytes for estimated cycles (docs/fusion.md)",
    )
    parser.add_argument(
        "--no-halo",
        action="store_true",
        help="fused: no row-band groups of convolution chains (faster, more bytes)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polyfuse", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="compile a bundled model, emulate it, check it, report")
    run.add_argument("model", help="a bundled model (see `polyfuse models`)")
    run.add_argument("--batch", type=int, default=1)
    _add_compile_options(run)
    run.add_argument("--threads", type=int, default=1, help="CPU threads for emulator and eager")
    run.add_argument("--json", help="also write the report as JSON to this file")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    run.add_argument("--sanitize", action="store_true", help="emulator shadow-memory checks")
    run.add_argument("--trace", help="write the engines' timelines (Chrome/Perfetto JSON) here")
    run.add_argument("--plots", help="write traffic, roofline and occupancy PNGs to this folder")
    run.add_argument(
        "--operators", type=int, default=0, metavar="N", help="print the N longest operators"
    )
    run.add_argument(
        "--groups",
        type=int,
        default=0,
        metavar="N",
        help="fused: where the DRAM bytes go, and the N fusion groups moving the most",
    )
    run.set_defaults(handler=_run)
    pipeline = commands.add_parser(
        "pipeline",
        help="print the pass pipeline compile runs after import (for polyfuse-opt)",
    )
    _add_compile_options(pipeline)
    pipeline.set_defaults(handler=_pipeline)
    commands.add_parser("models", help="list the bundled models").set_defaults(handler=_models)
    commands.add_parser("targets", help="list the target presets").set_defaults(handler=_targets)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except PolyfuseError as error:
        print(f"polyfuse: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
