"""One fuzz case end to end: build a random network, compile, emulate, compare with eager.

For a `NetSpec`, a `TargetSpec` and a `CallPlan`, `run_case`

1. builds the model and runs a copy in eager PyTorch (a network eager rejects is "invalid");
2. compiles it for the target; if the scratchpad is too small, the error must name the
   bytes the operator needs and those bytes must be more than the target has; the case
   then retries with exactly that many bytes, so a case that starts small ends on the
   smallest scratchpad polyfuse accepts for the network; compiling must leave the
   caller's module (parameters, buffers, train/eval mode) and the example inputs as they
   were;
3. if the plan says so, calls the compiled model once with a wrong input (wrong dtype,
   shape, rank, type, device, count, a keyword): it must raise a PolyfuseError and change
   nothing;
4. calls it `plan.calls` times, each on the emulator with every DMA rule checked (and with
   `sanitize` every scratchpad access; a trap is a crash), next to an eager copy of the
   model called with copies of the same inputs; after each call compares every output
   (same structure: tuple, list, dict, nesting; same shape and dtype; no NaN or inf where
   eager has none;
   max |polyfuse - eager| <= RELATIVE_TOLERANCE * max |eager| + ABSOLUTE_TOLERANCE),
   every input (forward may update them in place) and every buffer of the caller's module
   (forward may update them); the inputs may be non-contiguous or require grad;
5. if the plan says so, calls it from two threads at once, each with its own inputs, and
   compares each with eager;
6. checks that the DRAM bytes the compiler planned equal the bytes the emulator moved.

Outcomes: "ok"; "refused" (polyfuse raised a PolyfuseError, not a trap nor an internal
error, for a network that uses one of the user patterns of net_spec.case_patterns: a clear
refusal); "mismatch" (wrong numbers, shapes, structure or byte counts, a changed module, a
wrong input accepted); "crash" (any other exception, a trap, a PolyfuseError for a plain
network, an inconsistent capacity error); "invalid" (the generator produced a network eager
PyTorch rejects: a bug in the generator). `fusion_fallback` records why
`schedule="fused"` ran layer by layer ("" when it did not).
"""

from __future__ import annotations

import copy
import re
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.utils import _pytree as pytree

from polyfuse.errors import EmulatorTrap, PolyfuseError, ScratchpadCapacityError
from polyfuse.testing.net_spec import CallPlan, case_patterns
from polyfuse.testing.random_nets import NetSpec, TargetSpec, build_model, model_source

RELATIVE_TOLERANCE = 1e-4
ABSOLUTE_TOLERANCE = 1e-5
MAX_CAPACITY_RETRIES = 40
THREAD_TIMEOUT_SECONDS = 600.0
_NEEDS = re.compile(r"needs (\d+) bytes")
OUTCOMES = ("ok", "refused", "mismatch", "crash", "invalid")


@dataclass
class CaseResult:
    """What happened to one case."""

    outcome: str  # one of OUTCOMES
    message: str = ""
    scratchpad_bytes: int = 0  # the scratchpad the case finally compiled for
    capacity_retries: int = 0
    max_error: float = 0.0
    seconds: float = 0.0
    fusion_fallback: str = ""  # why schedule="fused" ran layer by layer, "" if it did not
    patterns: list[str] = field(default_factory=list)  # net_spec.case_patterns

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def failed(self) -> bool:
        """A mismatch, a crash or an invalid network (a refusal is not a failure)."""
        return self.outcome not in ("ok", "refused")


class _Verdict(Exception):
    """Ends a case with `outcome` (anything but "ok")."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message


def _short_traceback(error: BaseException) -> str:
    frames = traceback.format_exception(type(error), error, error.__traceback__)
    text = "".join(frames[-6:]).strip()
    return text[-3000:]


def run_case(
    spec: NetSpec,
    target: TargetSpec,
    sanitize: bool = False,
    schedule: str = "layer-by-layer",
    plan: CallPlan | None = None,
) -> CaseResult:
    """Run one case (see the module docstring); never raises for a polyfuse failure.

    `sanitize` also runs the emulator's shadow-memory checks (reads of scratchpad bytes
    never written, DMAs overwriting data in use, reads before a DMA's wait); `schedule`
    is `polyfuse.compile`'s (`"fused"` fuzzes the cross-operator fusion); `plan` says how
    the compiled model is called (default: once)."""
    plan = plan or CallPlan()
    start = time.perf_counter()
    result = CaseResult(
        "ok", scratchpad_bytes=target.scratchpad_bytes, patterns=case_patterns(spec, plan)
    )
    try:
        _run(spec, target, sanitize, schedule, plan, result)
    except _Verdict as verdict:
        result.outcome, result.message = verdict.outcome, verdict.message
    result.seconds = time.perf_counter() - start
    return result


def _run(
    spec: NetSpec,
    target: TargetSpec,
    sanitize: bool,
    schedule: str,
    plan: CallPlan,
    result: CaseResult,
) -> None:
    try:
        model, inputs = build_model(spec)
        inputs = [_as_planned(tensor, plan) for tensor in inputs]
        with torch.no_grad():
            copy.deepcopy(model)(*_clones(inputs))
    except Exception as error:
        raise _Verdict("invalid", f"eager PyTorch rejects the network: {error}") from None
    refusable = bool(case_patterns(spec))
    reference = copy.deepcopy(model)  # eager, called next to the compiled model
    before = _module_state(model)
    example = _clones(inputs)
    compiled = _compile(model, example, target, sanitize, schedule, refusable, result)
    result.fusion_fallback = str(getattr(compiled, "fusion_fallback", ""))
    _check_unchanged(model, before, "compiling")
    for index, (kept, original) in enumerate(zip(example, inputs, strict=True)):
        if not torch.equal(kept, original):
            raise _Verdict("mismatch", f"compiling changed example input {index}")

    eager_inputs, compiled_inputs = _clones(inputs), _clones(inputs)
    if plan.wrong_input:
        _check_wrong_input(compiled, model, plan.wrong_input, compiled_inputs)
    for call in range(1, plan.calls + 1):
        label = f"call {call}"
        with torch.no_grad():
            expected = reference(*eager_inputs)
        actual = _call(compiled, compiled_inputs, label, refusable)
        _compare_outputs(result, actual, expected, label)
        _compare_inputs(result, compiled_inputs, eager_inputs, label)
        _compare_buffers(result, model, reference, label)
    if plan.threads:
        _check_threads(compiled, model, reference, spec, plan, refusable, result)
    report = compiled.report
    if report is not None and report.planned_bytes != report.dram_bytes:
        raise _Verdict(
            "mismatch",
            f"planned {report.planned_bytes} DRAM bytes but the emulator moved {report.dram_bytes}",
        )


def _compile(
    model: torch.nn.Module,
    example: list[torch.Tensor],
    target: TargetSpec,
    sanitize: bool,
    schedule: str,
    refusable: bool,
    result: CaseResult,
) -> Any:
    import polyfuse

    while True:
        try:
            return polyfuse.compile(
                model, example, target=target.target(), sanitize=sanitize, schedule=schedule
            )
        except ScratchpadCapacityError as error:
            needed = _NEEDS.search(str(error))
            if needed is None or int(needed.group(1)) <= target.scratchpad_bytes:
                raise _Verdict(
                    "crash",
                    f"inconsistent capacity error on a {target.scratchpad_bytes}-byte "
                    f"scratchpad: {error}",
                ) from None
            if result.capacity_retries == MAX_CAPACITY_RETRIES:
                raise _Verdict("crash", f"too many capacity retries: {error}") from None
            result.capacity_retries += 1
            target = target.with_scratchpad(int(needed.group(1)))
            result.scratchpad_bytes = target.scratchpad_bytes
        except Exception as error:
            raise _error_verdict(error, "compile", refusable) from None


def _error_verdict(error: BaseException, where: str, refusable: bool) -> _Verdict:
    """A PolyfuseError is a refusal (for a network with user patterns); a trap, an
    internal error or any other exception is a crash."""
    clear = isinstance(error, PolyfuseError) and not isinstance(error, EmulatorTrap)
    if clear and "internal error" not in str(error) and refusable:
        return _Verdict("refused", f"{where}: {type(error).__name__}: {error}")
    return _Verdict("crash", f"{where}: {_short_traceback(error)}")


def _call(compiled: Any, inputs: list[torch.Tensor], label: str, refusable: bool) -> Any:
    try:
        return compiled(*inputs)
    except Exception as error:
        raise _error_verdict(error, label, refusable) from None


# --- state of the caller's module and the inputs ------------------------------------------


def _clones(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Copies (same strides; leaves that require grad if the originals do)."""
    return [tensor.detach().clone().requires_grad_(tensor.requires_grad) for tensor in tensors]


def _as_planned(tensor: torch.Tensor, plan: CallPlan) -> torch.Tensor:
    """`tensor` with the first and last dims' strides swapped if `plan.non_contiguous`,
    requiring grad if `plan.requires_grad`."""
    if plan.non_contiguous and tensor.dim() >= 2:
        tensor = tensor.transpose(0, -1).contiguous().transpose(0, -1)
    return tensor.requires_grad_(plan.requires_grad)


def _module_state(model: torch.nn.Module) -> dict[str, Any]:
    state: dict[str, Any] = {
        f"mode of '{name}'": module.training for name, module in model.named_modules()
    }
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        state[f"'{name}'"] = tensor.detach().clone()
    return state


def _check_unchanged(model: torch.nn.Module, before: dict[str, Any], what: str) -> None:
    after = _module_state(model)
    for key, value in before.items():
        same = (
            torch.equal(value, after[key])
            if isinstance(value, torch.Tensor)
            else value == after[key]
        )
        if not same:
            raise _Verdict("mismatch", f"{what} changed the caller's module: {key}")


def _check_wrong_input(
    compiled: Any, model: torch.nn.Module, kind: str, inputs: list[torch.Tensor]
) -> None:
    """A call with a wrong input must raise a PolyfuseError and change nothing."""
    args, kwargs = _wrong_call(kind, inputs)
    before, kept = _module_state(model), _clones(inputs)
    try:
        compiled(*args, **kwargs)
    except EmulatorTrap as error:
        raise _Verdict("crash", f"wrong input ({kind}): {_short_traceback(error)}") from None
    except PolyfuseError:
        pass
    except Exception as error:
        raise _Verdict(
            "crash",
            f"wrong input ({kind}): {type(error).__name__} instead of a PolyfuseError: "
            f"{_short_traceback(error)}",
        ) from None
    else:
        raise _Verdict("mismatch", f"wrong input ({kind}) accepted: a result, no PolyfuseError")
    _check_unchanged(model, before, f"a refused call (wrong input {kind})")
    for index, (now, then) in enumerate(zip(inputs, kept, strict=True)):
        if not torch.equal(now, then):
            raise _Verdict("mismatch", f"a refused call (wrong input {kind}) changed input {index}")


def _wrong_call(kind: str, inputs: list[torch.Tensor]) -> tuple[list[Any], dict[str, Any]]:
    """Arguments that differ from what the model was compiled for in one way (`kind`)."""
    first, rest = inputs[0].detach(), inputs[1:]
    wrong: dict[str, Any] = {
        "float64": first.double(),
        "int64": first.to(torch.int64),
        "shape": torch.zeros(first.shape[0] + 1, *first.shape[1:]),
        "rank": first.unsqueeze(0),
        "numpy": first.clone().numpy(),
        "list": first.tolist(),
        "scalar": 1.0,
        "meta": torch.empty(first.shape, device="meta"),
    }
    if kind in wrong:
        return [wrong[kind], *rest], {}
    if kind == "missing":
        return list(inputs[:-1]), {}
    if kind == "extra":
        return [*inputs, first.clone()], {}
    return list(inputs), {"unexpected": first.clone()}  # "keyword"


def _check_threads(
    compiled: Any,
    model: torch.nn.Module,
    reference: torch.nn.Module,
    spec: NetSpec,
    plan: CallPlan,
    refusable: bool,
    result: CaseResult,
) -> None:
    """Two threads call the compiled model at once, each with its own inputs; compared
    with eager calls in one order or the other (`model` is the caller's module,
    `reference` its eager copy)."""
    thread_inputs = []
    for thread in range(2):
        generator = torch.Generator().manual_seed(spec.seed + 10 + thread)
        tensors = [torch.randn(shape, generator=generator) for shape in spec.input_shapes]
        thread_inputs.append([_as_planned(tensor, plan) for tensor in tensors])
    compiled_inputs = [_clones(tensors) for tensors in thread_inputs]
    answers: list[Any] = [None, None]
    errors: list[BaseException | None] = [None, None]
    barrier = threading.Barrier(2)

    def work(thread: int) -> None:
        try:
            barrier.wait()
            answers[thread] = compiled(*compiled_inputs[thread])
        except BaseException as error:  # reported below, in the case's thread
            errors[thread] = error

    workers = [threading.Thread(target=work, args=(thread,)) for thread in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(THREAD_TIMEOUT_SECONDS)
        if worker.is_alive():
            raise _Verdict("crash", f"a call from a thread hung (over {THREAD_TIMEOUT_SECONDS} s)")
    for thread in range(2):
        error = errors[thread]
        if error is not None:
            raise _error_verdict(error, f"thread {thread + 1} of 2", refusable)
    # Calls that update buffers run one at a time, in either order: one order must explain
    # both results and the buffers after them.
    updates = any(layer.op == "buffer_update" for layer in spec.layers)
    orders = [(0, 1), (1, 0)] if updates else [(0, 1)]
    verdicts = []
    for order in orders:
        eager = copy.deepcopy(reference)
        try:
            _compare_thread_calls(result, order, answers, compiled_inputs, thread_inputs, eager)
            _compare_buffers(result, model, eager, "both threads' calls")
            return
        except _Verdict as verdict:
            verdicts.append(verdict)
    raise verdicts[0]


def _compare_thread_calls(
    result: CaseResult,
    order: tuple[int, int],
    answers: list[Any],
    compiled_inputs: list[list[torch.Tensor]],
    thread_inputs: list[list[torch.Tensor]],
    eager: torch.nn.Module,
) -> None:
    for thread in order:
        label = f"thread {thread + 1} of 2"
        eager_inputs = _clones(thread_inputs[thread])
        with torch.no_grad():
            expected = eager(*eager_inputs)
        _compare_outputs(result, answers[thread], expected, label)
        _compare_inputs(result, compiled_inputs[thread], eager_inputs, label)


# --- comparisons ----------------------------------------------------------------------------


def _compare_outputs(result: CaseResult, actual: Any, expected: Any, label: str) -> None:
    expected_leaves, expected_tree = pytree.tree_flatten(expected)
    actual_leaves, actual_tree = pytree.tree_flatten(actual)
    if actual_tree != expected_tree:
        raise _Verdict(
            "mismatch",
            f"{label}: returns {_structure(actual)}, eager returns {_structure(expected)}",
        )
    for index, (got, want) in enumerate(zip(actual_leaves, expected_leaves, strict=True)):
        if not isinstance(got, torch.Tensor):
            raise _Verdict("mismatch", f"{label}: output {index} is a {type(got).__name__}")
        _compare_tensor(result, got, want, f"{label}: output {index}")


def _structure(value: Any) -> str:
    """`value`'s nesting with tensors written as T: `(T, [T, {'last': T}])`."""
    text = repr(pytree.tree_map(lambda leaf: _Leaf(), value))
    return text if len(text) <= 200 else text[:197] + "..."


class _Leaf:
    def __repr__(self) -> str:
        return "T"


def _compare_inputs(
    result: CaseResult, actual: list[torch.Tensor], expected: list[torch.Tensor], label: str
) -> None:
    for index, (got, want) in enumerate(zip(actual, expected, strict=True)):
        _compare_tensor(result, got, want, f"after {label}: input {index}")


def _compare_buffers(
    result: CaseResult, model: torch.nn.Module, reference: torch.nn.Module, label: str
) -> None:
    expected = dict(reference.named_buffers())
    for name, got in model.named_buffers():
        _compare_tensor(result, got, expected[name], f"after {label}: buffer '{name}'")


def _compare_tensor(result: CaseResult, got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    if tuple(got.shape) != tuple(want.shape):
        raise _Verdict("mismatch", f"{what}: shape {tuple(got.shape)}, eager {tuple(want.shape)}")
    if got.dtype != want.dtype:
        raise _Verdict("mismatch", f"{what}: dtype {got.dtype}, eager {want.dtype}")
    if want.numel() == 0 or not want.is_floating_point():
        if not torch.equal(got, want):
            raise _Verdict("mismatch", f"{what}: differs from eager")
        return
    finite = torch.isfinite(want)
    if not torch.equal(torch.isfinite(got), finite):
        raise _Verdict("mismatch", f"{what}: NaN/inf where eager has none (or the reverse)")
    error = float((got[finite] - want[finite]).abs().max()) if finite.any() else 0.0
    scale = float(want[finite].abs().max()) if finite.any() else 0.0
    result.max_error = max(result.max_error, error / scale if scale else error)
    if error > RELATIVE_TOLERANCE * scale + ABSOLUTE_TOLERANCE:
        raise _Verdict(
            "mismatch",
            f"{what}: max |polyfuse - eager| = {error:.3g} > "
            f"{RELATIVE_TOLERANCE} * {scale:.3g} + {ABSOLUTE_TOLERANCE}",
        )


# --- reproducers ------------------------------------------------------------------------------


def reproducer_script(
    spec: NetSpec,
    target: TargetSpec,
    result: CaseResult,
    origin: str,
    schedule: str = "layer-by-layer",
    plan: CallPlan | None = None,
) -> str:
    """A standalone script that rebuilds the failing case and runs it again."""
    message = "\n".join(f"#   {line}" for line in result.message.splitlines()[-30:])
    return f'''#!/usr/bin/env python
"""polyfuse fuzz reproducer ({origin}).

Outcome: {result.outcome} (scratchpad {result.scratchpad_bytes} bytes).
Patterns: {", ".join(result.patterns) or "none"}.
Run: python {{this file}}   (exit status 0 once the bug is fixed: ok, or a clear refusal)
"""
# What happened:
{message}

import torch

from polyfuse.testing.fuzz import run_case
from polyfuse.testing.net_spec import CallPlan, NetSpec
from polyfuse.testing.random_nets import TargetSpec

# The network, as the generator wrote it (polyfuse.testing.net_builder.model_source):
{_indent_comment(model_source(spec))}
SPEC = NetSpec.from_json({spec.to_json()!r})

# The target, as a TOML file (starting scratchpad size; the case retries with the bytes a
# capacity error names):
{_indent_comment(target.to_toml())}
TARGET = TargetSpec(**{_target_fields(target)!r})

# How the case calls the compiled model (polyfuse.testing.net_spec.CallPlan):
PLAN = CallPlan(**{asdict(plan or CallPlan())!r})

if __name__ == "__main__":
    torch.manual_seed(0)
    result = run_case(SPEC, TARGET, schedule={schedule!r}, plan=PLAN)
    print(result.outcome, f"scratchpad={{result.scratchpad_bytes}}", result.message)
    raise SystemExit(1 if result.failed else 0)
'''


def _indent_comment(text: str) -> str:
    return "\n".join(f"#   {line}" if line else "#" for line in text.rstrip().splitlines())


def _target_fields(target: TargetSpec) -> dict[str, object]:
    return {
        "scratchpad_bytes": target.scratchpad_bytes,
        "pe_rows": target.pe_rows,
        "pe_cols": target.pe_cols,
        "dataflow": target.dataflow,
        "vector_width": target.vector_width,
        "dram_bytes_per_cycle": target.dram_bytes_per_cycle,
        "dma_latency_cycles": target.dma_latency_cycles,
    }
