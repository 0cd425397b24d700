"""Pass pipelines that mix upstream MLIR passes with polyfuse's Python passes.

MLIR's textual pipeline parser cannot name a Python-defined pass, so a pipeline such as
`builtin.module(canonicalize,polyfuse-verify-accel,func.func(cse))` is split here into
top-level elements: names in `PASS_REGISTRY` become Python callables
(`PassManager.add(callable, ...)`), every other element goes to MLIR as text.

Each element runs in its own PassManager so that, when one fails, the IR before it is
known: it is written to a reproducer file and the error names the one-line
`polyfuse-opt` command that replays the failing pass. Reproducers go to
`<temp dir>/polyfuse-reproducers` unless a folder is given, and leave out large
constants (weights; their shapes stay) unless asked to keep them.
"""

from __future__ import annotations

import re
import shlex
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch_mlir import ir, passmanager

from polyfuse.dialects.accel import load_accel_dialect
from polyfuse.dialects.verify import format_mlir_error
from polyfuse.errors import PipelineError, PolyfuseError
from polyfuse.pass_base import ModulePass, PassFailure
from polyfuse.passes import PASS_REGISTRY

_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_MODULE_ANCHOR = "builtin.module"
# Elements attributes and resources larger than this are elided from reproducers.
REPRODUCER_ELIDE_LIMIT = 16


def default_reproducer_dir() -> Path:
    """Where reproducers go when no folder is given: one polyfuse folder in the temp dir."""
    return Path(tempfile.gettempdir()) / "polyfuse-reproducers"


@dataclass(frozen=True)
class PipelineElement:
    """One top-level pass of a pipeline: a polyfuse pass, or upstream MLIR text."""

    text: str
    polyfuse_pass: ModulePass | None = None

    @classmethod
    def of(cls, pass_: ModulePass) -> PipelineElement:
        """The element that runs a polyfuse pass instance."""
        return cls(pass_.pipeline_text(), pass_)

    @property
    def name(self) -> str:
        return self.polyfuse_pass.name if self.polyfuse_pass else _leading_name(self.text)


def parse_pipeline(text: str, context: ir.Context | None = None) -> list[PipelineElement]:
    """Split `[builtin.module(]a,b{k=v},func.func(c)[)]` into checked elements.

    Raises PipelineError for unknown passes, bad options, unbalanced brackets, or a
    polyfuse pass nested under another op (polyfuse passes run on builtin.module).
    """
    body = text.strip()
    if body.startswith(f"{_MODULE_ANCHOR}(") and body.endswith(")"):
        body = body[len(_MODULE_ANCHOR) + 1 : -1]
    try:
        items = _split_top_level(body, ",")
    except PipelineError:
        raise PipelineError(f"unbalanced brackets or quotes in pass pipeline '{text}'") from None
    elements = []
    for item in items:
        name = _leading_name(item)
        if name in PASS_REGISTRY:
            elements.append(PipelineElement(item, _polyfuse_pass(name, item)))
            continue
        _reject_nested_polyfuse_passes(item)
        if name.startswith("polyfuse-"):
            raise PipelineError(f"unknown polyfuse pass '{name}'; {_known_passes()}")
        elements.append(PipelineElement(item))
    _check_upstream([e for e in elements if e.polyfuse_pass is None], context)
    return elements


def pipeline_text(elements: Sequence[PipelineElement]) -> str:
    """The `--pass-pipeline=` value for `elements`."""
    texts = [e.polyfuse_pass.pipeline_text() if e.polyfuse_pass else e.text for e in elements]
    return f"{_MODULE_ANCHOR}({','.join(texts)})"


def run_pipeline(
    module: ir.Module | ir.Operation | ir.OpView,
    pipeline: str | Sequence[PipelineElement],
    *,
    print_ir_after_all: bool = False,
    verify_each: bool = True,
    large_elements_limit: int | None = None,
    reproducer_dir: str | Path | None = None,
    reproducer_weights: bool = False,
    after_pass: Callable[[PipelineElement, ir.Operation, float], None] | None = None,
) -> None:
    """Run a pass pipeline in place on a builtin.module.

    `after_pass(element, module, seconds)` is called after every pass that succeeded
    (the IR after it, the pass's wall time): compile keeps snapshots and timings.

    Raises PipelineError with the diagnostics (`file:line:col: error: ...`) and the
    `polyfuse-opt` command that reproduces the failure from the IR before the failing
    pass (saved under `reproducer_dir`, by default `default_reproducer_dir()`; large
    constants are elided unless `reproducer_weights`). Exceptions other than polyfuse's
    own (bugs in a pass) propagate with that command as a note.
    """
    operation = module.operation
    load_accel_dialect(operation.context)
    elements = (
        parse_pipeline(pipeline, operation.context) if isinstance(pipeline, str) else pipeline
    )
    for element in elements:
        manager = passmanager.PassManager(_MODULE_ANCHOR, context=operation.context)
        manager.enable_verifier(verify_each)
        if print_ir_after_all:
            manager.enable_ir_printing(
                print_after_all=True, large_elements_limit=large_elements_limit
            )
        raised: list[PolyfuseError] = []  # what a polyfuse pass raised, to raise again
        if element.polyfuse_pass is not None:
            pass_ = element.polyfuse_pass
            manager.add(
                _as_callable(pass_, raised),
                name=type(pass_).__name__,
                argument=pass_.name,
                description=pass_.description(),
            )
        else:
            manager.add(element.text)
        before = operation.clone(ip=False)  # the IR a reproducer starts from
        start = time.perf_counter()
        try:
            manager.run(operation)
        except ir.MLIRError as error:
            repro = _write_reproducer(before, element, reproducer_dir, reproducer_weights)
            message = format_mlir_error(error)
            if not raised:
                raise PipelineError(f"{message}\n{repro}") from None
            # The pass's own error type (ScratchpadCapacityError, ...), with its message
            # when the diagnostics did not carry it.
            _, text = _located(str(raised[0]), operation.location)
            if text not in message:
                message = f"{message}\n{raised[0]}"
            raise type(raised[0])(f"{message}\n{repro}") from None
        except Exception as error:
            error.add_note(_write_reproducer(before, element, reproducer_dir, reproducer_weights))
            raise
        finally:
            before.erase()
        if after_pass is not None:
            after_pass(element, operation, time.perf_counter() - start)


def _as_callable(
    pass_: ModulePass, raised: list[PolyfuseError]
) -> Callable[[ir.Operation, Any], None]:
    """Adapt a ModulePass to PassManager.add: PassFailure and PolyfuseError become error
    diagnostics; a PolyfuseError is also appended to `raised`."""

    def run(operation: ir.Operation, external_pass: Any) -> None:
        try:
            pass_.run(operation)
        except PassFailure as failure:
            (failure.location or operation.location).emit_error(str(failure))
            external_pass.signal_pass_failure()
        except PolyfuseError as error:
            raised.append(error)
            location, message = _located(str(error), operation.location)
            location.emit_error(message)
            external_pass.signal_pass_failure()

    return run


# The lowering names an op by `loc("file":line:col)` or `file:line:col` at the start of
# its messages; the diagnostic then points there instead of at the module.
_LEADING_LOCATION = re.compile(r'^(?:loc\("([^"]+)":(\d+):(\d+)\)|([^\s:"]+):(\d+):(\d+)):\s*')


def _located(message: str, fallback: ir.Location) -> tuple[ir.Location, str]:
    """The location a polyfuse error message starts with (and the rest), or `fallback`."""
    match = _LEADING_LOCATION.match(message)
    if match is None:
        return fallback, message
    groups = match.groups()
    name, line, column = groups[:3] if groups[0] is not None else groups[3:]
    location = ir.Location.file(name, int(line), int(column), fallback.context)
    return location, message[match.end() :]


def _write_reproducer(
    before: ir.Operation, element: PipelineElement, directory: str | Path | None, weights: bool
) -> str:
    folder = Path(directory) if directory else default_reproducer_dir()
    limit = None if weights else REPRODUCER_ELIDE_LIMIT
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", prefix="polyfuse-repro-", suffix=".mlir", dir=folder, delete=False
        ) as file:
            before.print(
                file=file,
                large_elements_limit=limit,
                large_resource_limit=limit,
                enable_debug_info=True,
                assume_verified=True,
            )
            file.write("\n")
    except OSError as error:
        return (
            f"polyfuse-opt: pass '{element.name}' failed; no reproducer was written to "
            f"{folder}: {error.strerror or error}"
        )
    pipeline = shlex.quote(pipeline_text([element]))
    return (
        f"polyfuse-opt: pass '{element.name}' failed; the IR before it is in {file.name}; "
        f"reproduce with:\n  polyfuse-opt {shlex.quote(file.name)} --pass-pipeline={pipeline}"
    )


def _polyfuse_pass(name: str, item: str) -> ModulePass:
    rest = item[len(name) :].strip()
    if rest and not (rest.startswith("{") and rest.endswith("}")):
        raise PipelineError(
            f"'{item}': polyfuse passes run on builtin.module and take options as "
            f"{name}{{key=value ...}}; move them out of nested pipelines"
        )
    options: dict[str, str] = {}
    for option in _split_top_level(rest[1:-1], " ") if rest else []:
        key, _, value = option.partition("=")
        options[key.strip()] = value.strip().strip('"')
    try:
        return PASS_REGISTRY[name].from_options(options)
    except ValueError as error:
        raise PipelineError(str(error)) from None


def _reject_nested_polyfuse_passes(item: str) -> None:
    nested = item.partition("(")[2]
    for word in _NAME.findall(nested):
        if word in PASS_REGISTRY or word.startswith("polyfuse-"):
            raise PipelineError(
                f"'{word}' is nested in '{item}', but polyfuse passes run on "
                f"builtin.module; list it at the top level of the pipeline"
            )


def _check_upstream(elements: Sequence[PipelineElement], context: ir.Context | None) -> None:
    if not elements:
        return
    context = context or _current_context() or ir.Context()
    for element in elements:
        try:
            passmanager.PassManager.parse(pipeline_text([element]), context=context)
        except ValueError as error:
            message = _mlir_pipeline_message(str(error))
            hint = (
                f"; {_known_passes()}" if "does not refer to a registered pass" in message else ""
            )
            raise PipelineError(f"invalid pass '{element.text}': {message}{hint}") from None


def _mlir_pipeline_message(text: str) -> str:
    for line in text.splitlines():
        if "error: " in line:
            return line.split("error: ", 1)[1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(line.removeprefix("<Pass-Options-Parser>: ") for line in lines)


def _known_passes() -> str:
    return (
        f"polyfuse passes: {', '.join(sorted(PASS_REGISTRY)) or 'none'} "
        "(polyfuse-opt --list-passes); any upstream MLIR pass is accepted by its mlir-opt name"
    )


def _current_context() -> ir.Context | None:
    try:
        return ir.Context.current
    except ValueError:
        return None


def _leading_name(item: str) -> str:
    match = _NAME.match(item.strip())
    return match.group(0) if match else item.strip()


def _split_top_level(text: str, separator: str) -> list[str]:
    """Split on `separator` outside (), {}, [] and double quotes; drop empty parts."""
    parts, depth, quoted, start = [], 0, False, 0
    for index, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif char in "({[":
            depth += 1
        elif char in ")}]":
            depth -= 1
            if depth < 0:
                raise PipelineError(f"unbalanced '{char}' in pass pipeline '{text}'")
        elif depth == 0 and (char == separator or (separator == " " and char.isspace())):
            parts.append(text[start:index])
            start = index + 1
    if depth != 0 or quoted:
        raise PipelineError(f"unbalanced brackets or quotes in pass pipeline '{text}'")
    parts.append(text[start:])
    return [part.strip() for part in parts if part.strip()]
