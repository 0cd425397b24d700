"""How far below the compulsory bytes any schedule can go: a GEMM I/O-bound estimate.

Issue 4's bar compares fused DRAM traffic with the compulsory bytes (inputs and weights
read once, outputs written once). A scratchpad of S words also bounds traffic from
below by the re-reads a matrix product needs: a product C[M,N] += A[M,K] B[K,N] computed
with S words of fast memory moves at least

    Q >= 2 M N K / sqrt(S) - 2 S   words        (Smith, van de Geijn et al., 2019)

when its operands start in slow memory. This script sums that bound over the GEMM-like
operators of each zoo model (1x1 convolutions with groups=1 and linear layers, found with
forward hooks, M = batch x pixels or rows) and prints it next to the compulsory bytes
(counted from the compiled program's buffers, as the report does). Inside a fused group an operand can be produced on chip
instead of read from DRAM, so this is an estimate of the floor, not a proof; it shows
where the 1.15x-of-compulsory target is below what the products alone need.

    python bench/io_bound.py --spm 524288 --batch 1 8 --json io_bound.json
"""

from __future__ import annotations

import argparse
import json
import math

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

import polyfuse
from polyfuse.models import ZOO, get_model

WORD = 4  # fp32


def gemm_shapes(model: nn.Module, inputs: list[torch.Tensor]) -> list[tuple[int, int, int]]:
    """(M, N, K) of every 1x1 convolution (groups=1) and linear layer the forward runs."""
    shapes: list[tuple[int, int, int]] = []

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if isinstance(module, nn.Linear):
            shapes.append(
                (output.numel() // module.out_features, module.out_features, module.in_features)
            )
        elif isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1:
            pixels = output.numel() // module.out_channels
            shapes.append((pixels, module.out_channels, module.in_channels))

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Linear | nn.Conv2d)
    ]
    with torch.no_grad():
        model(*inputs)
    for handle in handles:
        handle.remove()
    return shapes


def gemm_bound_words(shapes: list[tuple[int, int, int]], spm_words: int) -> float:
    return sum(max(0.0, 2 * m * n * k / math.sqrt(spm_words) - 2 * spm_words) for m, n, k in shapes)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(ZOO), choices=list(ZOO))
    parser.add_argument("--spm", type=int, nargs="+", default=[524288], help="scratchpad bytes")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--target", default="edge", help="preset whose compile gives the compulsory bytes"
    )
    parser.add_argument("--json", help="write one record per row to this file")
    args = parser.parse_args()

    records = []
    for name in args.models:
        for batch in args.batch:
            model, inputs = get_model(name, batch=batch, seed=0)
            shapes = gemm_shapes(model, inputs)
            compiled = polyfuse.compile(model, inputs, target=args.target)
            compulsory = sum(  # as Report.build counts it, without running the program
                b.elements * WORD
                for b in compiled.serialized.buffers
                if b.role in ("input", "output", "weight")
            )
            for spm in args.spm:
                bound = gemm_bound_words(shapes, spm // WORD) * WORD
                records.append(
                    {
                        "model": name,
                        "batch": batch,
                        "spm_bytes": spm,
                        "gemms": len(shapes),
                        "compulsory_bytes": compulsory,
                        "gemm_io_bound_bytes": round(bound),
                        "bound_over_compulsory": bound / compulsory,
                    }
                )

    table = Table(title="GEMM I/O bound vs compulsory bytes (MiB)")
    for column in (
        "model",
        "batch",
        "SPM KiB",
        "GEMMs",
        "compulsory",
        "GEMM bound",
        "bound / compulsory",
    ):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in records:
        table.add_row(
            r["model"],
            str(r["batch"]),
            str(r["spm_bytes"] // 1024),
            str(r["gemms"]),
            f"{r['compulsory_bytes'] / 2**20:.1f}",
            f"{r['gemm_io_bound_bytes'] / 2**20:.1f}",
            f"{r['bound_over_compulsory']:.2f}x",
        )
    Console().print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
