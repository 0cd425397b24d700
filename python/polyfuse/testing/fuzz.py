"""One fuzz case end to end: build a random network, compile, emulate, compare with eager.

For a `NetSpec` and a `TargetSpec`, `run_case`

1. builds the model and runs it in eager PyTorch (the reference);
2. compiles it for the target; if the scratchpad is too small, the error must name the
   bytes the operator needs and those bytes must be more than the target has; the case
   then retries with exactly that many bytes, so a case that starts small ends on the
   smallest scratchpad polyfuse accepts for the network;
3. runs the compiled model on the emulator with every DMA rule checked, and with
   `sanitize` every scratchpad access (a trap is a crash);
4. compares every output with eager: same shape, and
   max |polyfuse - eager| <= RELATIVE_TOLERANCE * max |eager| + ABSOLUTE_TOLERANCE
   (float32 computed in a different order), no NaN or inf where eager has none;
5. checks that the DRAM bytes the compiler planned equal the bytes the emulator moved.

Outcomes: "ok"; "mismatch" (wrong numbers, shapes or byte counts); "crash" (any exception
from polyfuse other than a consistent capacity error, including a trap); "invalid" (the
generator produced a network eager PyTorch rejects: a bug in the generator).
"""

from __future__ import annotations

import re
import time
import traceback
from dataclasses import dataclass

import torch

from polyfuse.errors import ScratchpadCapacityError
from polyfuse.testing.random_nets import NetSpec, TargetSpec, build_model, model_source

RELATIVE_TOLERANCE = 1e-4
ABSOLUTE_TOLERANCE = 1e-5
MAX_CAPACITY_RETRIES = 40
_NEEDS = re.compile(r"needs (\d+) bytes")


@dataclass
class CaseResult:
    """What happened to one case."""

    outcome: str  # "ok", "mismatch", "crash", "invalid"
    message: str = ""
    scratchpad_bytes: int = 0  # the scratchpad the case finally compiled for
    capacity_retries: int = 0
    max_error: float = 0.0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def _short_traceback(error: BaseException) -> str:
    frames = traceback.format_exception(type(error), error, error.__traceback__)
    text = "".join(frames[-6:]).strip()
    return text[-3000:]


def run_case(
    spec: NetSpec, target: TargetSpec, sanitize: bool = False, schedule: str = "layer-by-layer"
) -> CaseResult:
    """Run one case (see the module docstring); never raises for a polyfuse failure.

    `sanitize` also runs the emulator's shadow-memory checks (reads of scratchpad bytes
    never written, DMAs overwriting data in use, reads before a DMA's wait); `schedule`
    is `polyfuse.compile`'s (`"fused"` fuzzes the cross-operator fusion)."""
    import polyfuse

    start = time.perf_counter()
    try:
        model, inputs = build_model(spec)
        with torch.no_grad():
            expected = model(*inputs)
    except Exception as error:
        return CaseResult("invalid", f"eager PyTorch rejects the network: {error}")
    expected_outputs = expected if isinstance(expected, tuple) else (expected,)

    result = CaseResult("ok", scratchpad_bytes=target.scratchpad_bytes)
    compiled = None
    while compiled is None:
        try:
            compiled = polyfuse.compile(
                model, inputs, target=target.target(), sanitize=sanitize, schedule=schedule
            )
        except ScratchpadCapacityError as error:
            needed = _NEEDS.search(str(error))
            if needed is None or int(needed.group(1)) <= target.scratchpad_bytes:
                result.outcome = "crash"
                result.message = (
                    f"inconsistent capacity error on a {target.scratchpad_bytes}-byte "
                    f"scratchpad: {error}"
                )
                break
            if result.capacity_retries == MAX_CAPACITY_RETRIES:
                result.outcome, result.message = "crash", f"too many capacity retries: {error}"
                break
            result.capacity_retries += 1
            target = target.with_scratchpad(int(needed.group(1)))
            result.scratchpad_bytes = target.scratchpad_bytes
        except Exception as error:
            result.outcome, result.message = "crash", f"compile: {_short_traceback(error)}"
            break
    if compiled is not None:
        try:
            actual = compiled(*inputs)
        except Exception as error:
            result.outcome, result.message = "crash", f"run: {_short_traceback(error)}"
        else:
            actual_outputs = actual if isinstance(actual, tuple) else (actual,)
            _compare(result, actual_outputs, expected_outputs)
            report = compiled.report
            if result.ok and report is not None and report.planned_bytes != report.dram_bytes:
                result.outcome = "mismatch"
                result.message = (
                    f"planned {report.planned_bytes} DRAM bytes but the emulator moved "
                    f"{report.dram_bytes}"
                )
    result.seconds = time.perf_counter() - start
    return result


def _compare(
    result: CaseResult,
    actual: tuple[torch.Tensor, ...],
    expected: tuple[torch.Tensor, ...],
) -> None:
    if len(actual) != len(expected):
        result.outcome = "mismatch"
        result.message = f"{len(actual)} outputs, eager returns {len(expected)}"
        return
    for index, (got, want) in enumerate(zip(actual, expected, strict=True)):
        if tuple(got.shape) != tuple(want.shape):
            result.outcome = "mismatch"
            result.message = f"output {index}: shape {tuple(got.shape)}, eager {tuple(want.shape)}"
            return
        if want.numel() == 0:
            continue
        finite = torch.isfinite(want)
        if not torch.equal(torch.isfinite(got), finite):
            result.outcome = "mismatch"
            result.message = f"output {index}: NaN/inf where eager has none (or the reverse)"
            return
        error = float((got[finite] - want[finite]).abs().max()) if finite.any() else 0.0
        scale = float(want[finite].abs().max()) if finite.any() else 0.0
        result.max_error = max(result.max_error, error / scale if scale else error)
        if error > RELATIVE_TOLERANCE * scale + ABSOLUTE_TOLERANCE:
            result.outcome = "mismatch"
            result.message = (
                f"output {index}: max |polyfuse - eager| = {error:.3g} > "
                f"{RELATIVE_TOLERANCE} * {scale:.3g} + {ABSOLUTE_TOLERANCE}"
            )
            return


def reproducer_script(
    spec: NetSpec,
    target: TargetSpec,
    result: CaseResult,
    origin: str,
    schedule: str = "layer-by-layer",
) -> str:
    """A standalone script that rebuilds the failing case and runs it again."""
    message = "\n".join(f"#   {line}" for line in result.message.splitlines()[-30:])
    return f'''#!/usr/bin/env python
"""polyfuse fuzz reproducer ({origin}).

Outcome: {result.outcome} (scratchpad {result.scratchpad_bytes} bytes).
Run: python {{this file}}   (exit status 0 once the bug is fixed)
"""
# What happened:
{message}

import torch

from polyfuse.testing.fuzz import run_case
from polyfuse.testing.random_nets import NetSpec, TargetSpec

# The network, as the generator wrote it (polyfuse.testing.random_nets.model_source):
{_indent_comment(model_source(spec))}
SPEC = NetSpec.from_json({spec.to_json()!r})

# The target, as a TOML file (starting scratchpad size; the case retries with the bytes a
# capacity error names):
{_indent_comment(target.to_toml())}
TARGET = TargetSpec(**{_target_fields(target)!r})

if __name__ == "__main__":
    torch.manual_seed(0)
    result = run_case(SPEC, TARGET, schedule={schedule!r})
    print(result.outcome, f"scratchpad={{result.scratchpad_bytes}}", result.message)
    raise SystemExit(0 if result.ok else 1)
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
