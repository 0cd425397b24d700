"""`torch.compile(model, backend="polyfuse")`.

Registered by name through the `torch_dynamo_backends` entry point (pyproject.toml).
Each graph Dynamo captures is compiled for the emulated accelerator with static shapes;
a graph polyfuse cannot compile runs in eager PyTorch instead, with one warning that
names the reason, so results stay right. Inference only: outputs carry no autograd
history. Options: `torch.compile(model, backend="polyfuse", options={"target": "vta"})`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from polyfuse.errors import PolyfuseError


def polyfuse_backend(
    graph_module: torch.fx.GraphModule,
    example_inputs: Sequence[Any],
    options: dict[str, Any] | None = None,
    **_: Any,
) -> Callable[..., Any]:
    from polyfuse.compiler import compile as polyfuse_compile

    target = (options or {}).get("target", "edge")
    reason = _why_not_static(example_inputs)
    if reason:
        return _fallback(graph_module, reason)
    try:
        compiled = polyfuse_compile(graph_module, list(example_inputs), target)
    except PolyfuseError as error:
        return _fallback(graph_module, str(error))
    except Exception as error:  # a bug in polyfuse: keep the user's results right
        return _fallback(
            graph_module,
            f"internal error in polyfuse (please report it): {type(error).__name__}: {error}",
        )

    def run(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = compiled(*args)
        return outputs if isinstance(outputs, tuple) else (outputs,)

    return run


def _why_not_static(example_inputs: Sequence[Any]) -> str:
    """Why the graph's inputs are not static tensors, or "" if they are."""
    for index, value in enumerate(example_inputs):
        if isinstance(value, torch.SymInt | torch.SymFloat):
            return (
                f"the graph has dynamic shapes (input {index} is a symbolic size); polyfuse "
                "compiles static shapes only: use torch.compile(..., dynamic=False)"
            )
        if not isinstance(value, torch.Tensor):
            return f"graph input {index} is a {type(value).__name__}, not a tensor"
        if any(not isinstance(size, int) for size in value.shape):
            return (
                f"the graph has dynamic shapes (input {index} has shape {tuple(value.shape)}); "
                "polyfuse compiles static shapes only: use torch.compile(..., dynamic=False)"
            )
    return ""


def _fallback(graph_module: torch.fx.GraphModule, reason: str) -> Callable[..., Any]:
    first_line = reason.strip().splitlines()[0] if reason.strip() else "unknown reason"
    warnings.warn(
        f"polyfuse: running this graph in eager PyTorch instead: {first_line}",
        stacklevel=2,
    )
    return graph_module.forward
