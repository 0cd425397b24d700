"""Compiling the same model twice gives byte-identical IR and identical reports.

Also across processes with different PYTHONHASHSEED, which is where iteration over sets
of strings would show up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict

from polyfuse.testing.determinism import fingerprint
from polyfuse.testing.random_nets import Layer, NetSpec, TargetSpec

# Convolutions (grouped, strided, padded), a residual add, a concat, pooling, a linear and a
# softmax on a scratchpad small enough that every operator is tiled.
SPEC = NetSpec(
    input_shapes=[[1, 4, 8, 8]],
    layers=[
        Layer(
            "conv",
            [0],
            {
                "in_channels": 4,
                "out_channels": 8,
                "kernel_size": [3, 3],
                "stride": [1, 1],
                "padding": [1, 1],
                "dilation": [1, 1],
                "groups": 2,
                "bias": True,
            },
            [1, 8, 8, 8],
        ),
        Layer("unary", [1], {"fn": "relu"}, [1, 8, 8, 8]),
        Layer("binary", [2, 1], {"fn": "add"}, [1, 8, 8, 8]),
        Layer("concat", [3, 0], {"dim": 1}, [1, 12, 8, 8]),
        Layer(
            "pool",
            [4],
            {"kind": "max", "kernel_size": 2, "stride": 2, "padding": 0},
            [1, 12, 4, 4],
        ),
        Layer("flatten", [5], {}, [1, 192]),
        Layer("linear", [6], {"in_features": 192, "out_features": 10, "bias": True}, [1, 10]),
        Layer("softmax", [7], {"dim": 1, "kind": "softmax"}, [1, 10]),
    ],
    outputs=[8],
    seed=3,
)
TARGET = TargetSpec(scratchpad_bytes=4096, pe_rows=4, pe_cols=8)


def test_compiling_twice_gives_identical_ir_and_reports() -> None:
    first, second = fingerprint(SPEC, TARGET), fingerprint(SPEC, TARGET)
    assert set(first["ir"]) >= {"import", "generalize", "lower"}
    assert first == second


def test_another_process_with_another_hash_seed_agrees() -> None:
    here = fingerprint(SPEC, TARGET)
    environment = dict(os.environ, PYTHONHASHSEED="12345")
    command = [sys.executable, "-m", "polyfuse.testing.determinism", SPEC.to_json()]
    command.append(json.dumps(asdict(TARGET)))
    result = subprocess.run(
        command, capture_output=True, text=True, check=True, env=environment, timeout=300
    )
    there = json.loads(result.stdout.strip().splitlines()[-1])
    assert there == json.loads(json.dumps(here))
