"""Which PyTorch operators polyfuse compiles, checked before import.

The check runs on the exported ATen graph, so an unsupported operator is reported with
its name and the line of the user's model that created it, instead of as a failure
deep inside the lowering.
"""

from __future__ import annotations

import torch
from torch.fx.experimental.optimization import fuse

from polyfuse.errors import UnsupportedError

# ATen operators (after torch-mlir's decompositions) that the pipeline lowers.
SUPPORTED_ATEN_OPS: frozenset[str] = frozenset(
    {
        # convolution, matmul and friends
        "convolution", "conv2d", "linear", "addmm", "mm", "bmm", "matmul", "t",
        # normalisation
        "_native_batch_norm_legit_no_training", "batch_norm", "native_layer_norm",
        "layer_norm", "var_mean", "mean", "sum", "rsqrt", "sqrt", "var",
        # elementwise arithmetic and activations
        "add", "sub", "mul", "div", "neg", "exp", "log", "pow", "reciprocal", "abs",
        "relu", "relu6", "hardtanh", "gelu", "silu", "sigmoid", "tanh", "clamp",
        "clamp_min", "clamp_max", "minimum", "maximum", "erf", "where", "gt", "lt",
        "ge", "le", "rsub", "square", "hardswish", "hardsigmoid", "leaky_relu",
        # pooling and softmax
        "max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "adaptive_avg_pool2d",
        "_softmax", "softmax", "_log_softmax", "amax", "max",
        # shapes and data movement
        "view", "_unsafe_view", "reshape", "flatten", "permute", "transpose", "expand",
        "unsqueeze", "squeeze", "cat", "slice", "select", "clone", "contiguous",
        "_to_copy", "alias", "detach", "split", "split_with_sizes", "chunk", "dropout",
        "full", "zeros", "ones", "scalar_tensor", "lift_fresh_copy", "copy",
        "empty", "fill", "constant_pad_nd", "pad", "convert_element_type",
    }
)


def _aten_name(target: object) -> str | None:
    name = getattr(target, "__name__", None) or str(target)
    if not hasattr(target, "_schema") and not str(target).startswith("aten."):
        return None
    base = str(getattr(target, "_schema", "").name if hasattr(target, "_schema") else name)
    base = base.split("::")[-1].removeprefix("aten.")
    return base.split(".")[0]


def _source_line(node: torch.fx.Node) -> str:
    trace = node.meta.get("stack_trace") or ""
    lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
    # The innermost frame is last: 'File "model.py", line 12, in forward' then the code.
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("File "):
            code = lines[index + 1] if index + 1 < len(lines) else ""
            return f"{lines[index]}: {code}"
    return ""


def check_supported(program: torch.export.ExportedProgram) -> None:
    """Raise UnsupportedError naming the first operator polyfuse cannot compile."""
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        name = _aten_name(node.target)
        if name is None:
            continue  # operator.getitem and other Python-level glue
        if name not in SUPPORTED_ATEN_OPS:
            where = _source_line(node)
            raise UnsupportedError(
                f"operator aten.{name} is not supported"
                f"{' (' + where + ')' if where else ''}.\n"
                "Supported operators: conv2d (stride, padding, dilation, groups), linear, "
                "matmul, bmm, batch_norm (eval), add/sub/mul/div, relu, relu6, gelu, silu, "
                "sigmoid, tanh, clamp, max/avg/adaptive-avg pooling, softmax, layer_norm, "
                "reshape, flatten, permute/transpose, concat, slice. Rewrite the model "
                "with these, or run that part eagerly."
            )
        value = node.meta.get("val")
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if isinstance(item, torch.Tensor) and item.dtype not in (torch.float32, torch.bool):
                if name in ("max_pool2d_with_indices", "max", "var_mean"):
                    continue  # index outputs that the model does not use are dropped
                if item.dtype == torch.int64 and name in ("max",):
                    continue
                raise UnsupportedError(
                    f"operator aten.{name} produces a {item.dtype} tensor"
                    f"{' at ' + _source_line(node) if _source_line(node) else ''}; "
                    "polyfuse supports float32 tensors only (integer and mixed-precision "
                    "models are not supported yet)"
                )


def fold_batch_norm(model: torch.nn.Module) -> torch.nn.Module:
    """Fold eval-mode BatchNorm into the preceding convolution where FX can trace it.

    Folding is exact up to rounding. Models FX cannot trace symbolically are returned
    unchanged; their batch norms are then lowered as elementwise operators.
    """
    try:
        return fuse(model, inplace=False)
    except Exception:
        return model
