"""Which PyTorch operators polyfuse compiles, checked before import.

The check runs on the exported ATen graph, so an unsupported operator is reported with
its name and the line of the user's model that created it, instead of as a failure
deep inside the lowering.
"""

from __future__ import annotations

import inspect
import itertools
import operator
import os

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

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


def aten_name(target: object) -> str | None:
    name = getattr(target, "__name__", None) or str(target)
    if not hasattr(target, "_schema") and not str(target).startswith("aten."):
        return None
    schema = getattr(target, "_schema", None)
    base = str(schema.name) if schema is not None else name
    base = base.split("::")[-1].removeprefix("aten.")
    return base.split(".")[0]


def source_line(node: torch.fx.Node, model: torch.nn.Module | None) -> str:
    """`file:line: code` of the model source that created `node`, when it can be found."""
    trace = node.meta.get("stack_trace") or ""
    lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
    frames = [index for index, line in enumerate(lines) if line.startswith("File ")]
    # The innermost frame is last; the innermost one in the user's code (not inside
    # torch, e.g. nn.ConvTranspose2d.forward) is the line to show.
    users = [index for index in frames if _TORCH_DIR not in lines[index]]
    for index in (users or frames)[-1:]:
        following = lines[index + 1] if index + 1 < len(lines) else ""
        code = "" if following.startswith("File ") else following
        return f"{lines[index]}: {code}" if code else lines[index]
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
        name = aten_name(node.target)
        if name is None:
            continue  # operator.getitem and other Python-level glue
        if name not in SUPPORTED_ATEN_OPS:
            where = source_line(node, model)
            raise UnsupportedError(
                f"operator aten.{name} is not supported"
                f"{' (' + where + ')' if where else ''}.\n"
                "Supported operators: conv2d (stride, padding, dilation, groups), linear, "
                "matmul, bmm, batch_norm (eval), add/sub/mul/div, relu, relu6, gelu, silu, "
                "sigmoid, tanh, clamp, max/avg/adaptive-avg pooling, softmax, layer_norm, "
                "reshape, flatten, permute/transpose, concat, slice. Rewrite the model "
                "with these, or run that part eagerly."
            )
        _check_variant(node, name, model)
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
                    f"{' at ' + source_line(node, model) if source_line(node, model) else ''}; "
                    "polyfuse supports float32 tensors only (integer and mixed-precision "
                    "models are not supported yet)"
                )


def _check_variant(node: torch.fx.Node, name: str, model: torch.nn.Module | None) -> None:
    """Refuse what polyfuse cannot lower (yet) in a supported operator, and tensors with
    no elements, naming the operator and the model's source line: the lowering would
    only name its own internals."""
    problem = _unsupported_variant(node, name)
    value = node.meta.get("val")
    for item in value if isinstance(value, list | tuple) else [value]:
        if problem is None and isinstance(item, torch.Tensor) and item.numel() == 0:
            problem = (
                f"produces a tensor of shape {tuple(item.shape)}, with no elements",
                "polyfuse compiles tensors with at least one element (check the sizes of "
                "slices and splits)",
            )
    if problem is None:
        return
    what, todo = problem
    where = source_line(node, model)
    raise UnsupportedError(
        f"operator aten.{name} {what}{' (' + where + ')' if where else ''}; {todo}"
    )


def _unsupported_variant(node: torch.fx.Node, name: str) -> tuple[str, str] | None:
    """What polyfuse cannot lower (yet) in this use of a supported operator, and what to
    do instead; None when it can."""
    if name == "convolution" and _argument(node, 6, "transposed", False):
        return (
            "with transposed=True (ConvTranspose) is not supported yet",
            "run that part of the model eagerly",
        )
    if name == "avg_pool2d" and _argument(node, 4, "ceil_mode", False):
        return (
            "with ceil_mode=True is not supported yet",
            "use ceil_mode=False (pad the input if the last window must be kept)",
        )
    if name == "max_pool2d_with_indices" and _indices_used(node):
        return (
            "with return_indices=True is not supported yet: the model uses the indices",
            "use only the pooled values",
        )
    if name == "adaptive_avg_pool2d":
        source = node.args[0].meta.get("val") if isinstance(node.args[0], torch.fx.Node) else None
        output = _argument(node, 1, "output_size", None)
        if isinstance(source, torch.Tensor) and isinstance(output, list | tuple):
            sizes = tuple(source.shape[-2:])
            if not all(_regular_windows(n, o) for n, o in zip(sizes, output, strict=True)):
                return (
                    f"from {sizes[0]}x{sizes[1]} to {output[0]}x{output[1]} is not supported: "
                    "its windows differ in size or spacing",
                    "use an input size that is a multiple of the output size",
                )
    return None


def _argument(node: torch.fx.Node, position: int, keyword: str, default: object) -> object:
    if len(node.args) > position:
        return node.args[position]
    return node.kwargs.get(keyword, default)


def _indices_used(node: torch.fx.Node) -> bool:
    """Whether anything but export's metadata asserts reads output 1 (the indices)."""
    indices = [u for u in node.users if u.target is operator.getitem and u.args[1] == 1]
    readers = [reader for user in indices for reader in user.users]
    return any(aten_name(reader.target) != "_assert_tensor_metadata" for reader in readers)


def _regular_windows(size: int, output: int) -> bool:
    """Adaptive pooling of `size` to `output` is a plain pooling (equal windows, equal
    steps), the only case the lowering gets right."""
    starts = [i * size // output for i in range(output)]
    ends = [-(-(i + 1) * size // output) for i in range(output)]
    widths = {end - start for start, end in zip(starts, ends, strict=True)}
    steps = {later - earlier for earlier, later in itertools.pairwise(starts)}
    return len(widths) == 1 and len(steps) <= 1


def fold_batch_norm(model: torch.nn.Module) -> torch.nn.Module:
    """Fold eval-mode BatchNorm into the preceding convolution where FX can trace it.

    Folding is exact up to rounding. Models FX cannot trace symbolically are returned
    unchanged; their batch norms are then lowered as elementwise operators.
    """
    if model.training or not any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()
    ):
        return model  # nothing to fold: no copy of the weights
    try:
        return fuse(model, inplace=False)
    except Exception:
        return model
