#!/usr/bin/env python
"""polyfuse fuzz reproducer (bench/fuzz.py --seed 0 --first 1369 --cases 1).

Outcome: crash (scratchpad 556 bytes).
Run: python {this file}   (exit status 0 once the bug is fixed)
"""
# What happened:
#   compile: File "/tmp/pf-final/python/polyfuse/testing/fuzz.py", line 79, in run_case
#       compiled = polyfuse.compile(model, inputs, target=target.target())
#                  ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
#     File "/tmp/pf-final/python/polyfuse/__init__.py", line 25, in compile
#       return compile_model(*args, **kwargs)
#              ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
#     File "/tmp/pf-final/python/polyfuse/compiler.py", line 183, in compile
#       imported = import_model(model, example_inputs)
#                  ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
#     File "/tmp/pf-final/python/polyfuse/frontend/importer.py", line 115, in import_model
#       check_supported(program, original)
#     File "/tmp/pf-final/python/polyfuse/frontend/op_support.py", line 180, in check_supported
#       raise UnsupportedError(
#   polyfuse.errors.UnsupportedError: operator aten.as_strided is not supported.
#   Supported operators: conv2d (stride, padding, dilation, groups), linear, matmul, bmm, batch_norm (eval), add/sub/mul/div, relu, relu6, gelu, silu, sigmoid, tanh, clamp, max/avg/adaptive-avg pooling, softmax, layer_norm, reshape, flatten, permute/transpose, concat, slice. Rewrite the model with these, or run that part eagerly.

import torch

from polyfuse.testing.fuzz import run_case
from polyfuse.testing.random_nets import NetSpec, TargetSpec

# The network, as the generator wrote it (polyfuse.testing.random_nets.model_source):
#   class RandomNet(torch.nn.Module):
#       def __init__(self) -> None:
#           super().__init__()
#           self.layer0 = torch.nn.BatchNorm2d(4)
#
#       def forward(self, v0, v1):
#           v2 = self.layer0(v1)  # [1, 4, 13, 5]
#           v3 = v2.permute(0, 3, 1, 2)  # [1, 5, 4, 13]
#           v4 = torch.cat([v1, v2], dim=3)  # [1, 4, 13, 10]
#           v5 = torch.nn.functional.avg_pool2d(v3, 2, stride=2, padding=1, count_include_pad=True)  # [1, 5, 3, 7]
#           v6 = torch.nn.functional.adaptive_avg_pool2d(v3, 1)  # [1, 5, 1, 1]
#           return v6
SPEC = NetSpec.from_json(
    '{"input_shapes": [[1, 4, 13, 5], [1, 4, 13, 5]], "layers": [{"inputs": [1], "op": "batch_norm", "params": {"channels": 4}, "shape": [1, 4, 13, 5]}, {"inputs": [2], "op": "permute", "params": {"order": [0, 3, 1, 2]}, "shape": [1, 5, 4, 13]}, {"inputs": [1, 2], "op": "concat", "params": {"dim": 3}, "shape": [1, 4, 13, 10]}, {"inputs": [3], "op": "pool", "params": {"count_include_pad": true, "kernel_size": 2, "kind": "avg", "padding": 1, "stride": 2}, "shape": [1, 5, 3, 7]}, {"inputs": [3], "op": "pool", "params": {"kind": "adaptive_avg", "output_size": 1}, "shape": [1, 5, 1, 1]}], "outputs": [6], "seed": 1369}'
)

# The target, as a TOML file (starting scratchpad size; the case retries with the bytes a
# capacity error names):
#   name = "fuzz-556"
#   description = "random target from polyfuse.testing.random_nets"
#
#   [clock]
#   mhz = 1000
#
#   [scratchpad]
#   bytes = 556
#
#   [dram]
#   bytes_per_cycle = 4.0
#   latency_cycles = 100
#
#   [pe_array]
#   rows = 16
#   cols = 3
#   dataflow = "weight-stationary"
#
#   [vector]
#   width = 32
#
#   [types]
#   inputs = ["float32"]
#   accumulator = "float32"
TARGET = TargetSpec(
    **{
        "scratchpad_bytes": 556,
        "pe_rows": 16,
        "pe_cols": 3,
        "dataflow": "weight-stationary",
        "vector_width": 32,
        "dram_bytes_per_cycle": 4.0,
        "dma_latency_cycles": 100,
    }
)

if __name__ == "__main__":
    torch.manual_seed(0)
    result = run_case(SPEC, TARGET)
    print(result.outcome, f"scratchpad={result.scratchpad_bytes}", result.message)
    raise SystemExit(0 if result.ok else 1)
