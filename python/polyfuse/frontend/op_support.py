"""Which PyTorch operators polyfuse compiles, checked before import.

The check runs on the exported ATen graph, so an unsupported operator is reported with
its name and the line of the user's model that created it, instead of as a failure
deep inside the lowering.
"""

from __future__ import annotations

import inspect

import torch
from torch.fx.experimental.optimization import fuse

from polyfuse.errors import UnsupportedError

# ATen operators (after torch-mlir's decompositions) that the pipeline lowers.
SUPPORTED_ATEN_OPS: frozenset[str] = frozenset(
    {
        # convolution, matmul and friends
        "convolution",
        "conv2d",
        "linear",
        "addmm",
        "mm",
        "bmm",
        "matmul",
        "t",
        # normalisation
        "_native_batch_norm_legit_no_training",
        "batch_norm",
        "native_layer_norm",
        "layer_norm",
        "var_mean",
        "mean",
        "sum",
        "rsqrt",
        "sqrt",
        "var",
        # elementwise arithmetic and activations
        "add",
        "sub",
        "mul",
        "div",
        "neg",
        "exp",
        "log",
        "pow",
        "reciprocal",
        "abs",
        "relu",
        "relu6",
        "hardtanh",
        "gelu",
        "silu",
        "sigmoid",
        "tanh",
        "clamp",
        "clamp_min",
        "clamp_max",
        "minimum",
        "maximum",
        "erf",
        "where",
        "gt",
        "lt",
        "ge",
        "le",
        "rsub",
        "square",
        "hardswish",
        "hardsigmoid",
        "leaky_relu",
        # pooling and softmax
        "max_pool2d",
        "max_pool2d_with_indices",
        "avg_pool2d",
        "adaptive_avg_pool2d",
        "_softmax",
        "softmax",
        "_log_softmax",
        "amax",
        "max",
        # shapes and data movement
        "view",
        "_unsafe_view",
        "reshape",
        "flatten",
        "permute",
        "transpose",
        "expand",
        "unsqueeze",
        "squeeze",
        "cat",
        "slice",
        "select",
        "clone",
        "contiguous",
        "_to_copy",
        "alias",
        "detach",
        "split",
        "split_with_sizes",
        "chunk",
        "dropout",
        "full",
        "zeros",
        "ones",
        "scalar_tensor",
        "lift_fresh_copy",
        "copy",
        "empty",
        "empty_strided",
        "fill",
        "full_like",
        "constant_pad_nd",
        "pad",
        "convert_element_type",
        # assertions the export inserts; they compute nothing
        "_assert_tensor_metadata",
        "_assert_async",
        "_assert_scalar",
    }
)


def _aten_name(target: object) -> str | None:
    name = getattr(target, "__name__", None) or str(target)
    if not hasattr(target, "_schema") and not str(target).startswith("aten."):
        return None
    schema = getattr(target, "_schema", None)
    base = str(schema.name) if schema is not None else name
    base = base.split("::")[-1].removeprefix("aten.")
    return base.split(".")[0]


def _source_line(node: torch.fx.Node, model: torch.nn.Module | None) -> str:
    """`file:line: code` of the model source that created `node`, when it can be found."""
    trace = node.meta.get("stack_trace") or ""
    lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
    for index in range(len(lines) - 1, -1, -1):  # the innermost frame is last
        if lines[index].startswith("File "):
            code = lines[index + 1] if index + 1 < len(lines) else ""
            return f"{lines[index]}: {code}"
    return _line_in_forward(node, model)


def _line_in_forward(node: torch.fx.Node, model: torch.nn.Module | None) -> str:
    """Non-strict export keeps no stack trace: find the call in the module's forward."""
    stack = node.meta.get("nn_module_stack") or {}
    if model is None or not stack:
        return ""
    path, class_name = list(stack.values())[-1]
    try:
        module = model.get_submodule(path) if path else model
        forward = type(module).forward
        source, first = inspect.getsourcelines(forward)
        filename = inspect.getsourcefile(forward) or "?"
    except (AttributeError, OSError, TypeError):
        return ""
    if not path:  # the root is torch.export's wrapper: name the user's class instead
        class_name = type(module).__qualname__
    function = str((node.meta.get("torch_fn") or ("", ""))[1]).split(".")[-1]
    for offset, line in enumerate(source):
        if function and (f"{function}(" in line or f".{function}" in line):
            return f"{filename}:{first + offset}: {line.strip()} (in {class_name}.forward)"
    return f"{filename}:{first}: in {class_name}.forward"


def check_supported(
    program: torch.export.ExportedProgram, model: torch.nn.Module | None = None
) -> None:
    """Raise UnsupportedError naming the first operator polyfuse cannot compile."""
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        name = _aten_name(node.target)
        if name is None:
            continue  # operator.getitem and other Python-level glue
        if name not in SUPPORTED_ATEN_OPS:
            where = _source_line(node, model)
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
                    f"{' at ' + _source_line(node, model) if _source_line(node, model) else ''}; "
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
