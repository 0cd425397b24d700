"""polyfuse-opt: an mlir-opt for polyfuse (upstream passes + polyfuse's Python passes).

    polyfuse-opt in.mlir --pass-pipeline='builtin.module(canonicalize,polyfuse-verify-accel)'
    polyfuse-opt --list-passes

Every context has the accel dialect loaded. The input is parsed and verified by MLIR's
verifier (which applies the accel IRDL constraints); the accel dialect's own rules run
as the `polyfuse-verify-accel` pass. Errors print as `file:line:col: error: message`
without a Python traceback, and a failing pass leaves a reproducer (see
`polyfuse.tools.pipeline`). Exit status: 0 on success, 1 on any error.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from torch_mlir import ir

from polyfuse.dialects.accel import load_accel_dialect
from polyfuse.dialects.verify import format_mlir_error
from polyfuse.errors import PolyfuseError
from polyfuse.pass_base import allowed_values
from polyfuse.passes import PASS_REGISTRY
from polyfuse.tools.pipeline import PipelineElement, parse_pipeline, run_pipeline

__all__ = ["main", "parse_module", "parse_pipeline", "run_pipeline"]

SPLIT_MARKER = "// -----"
BYTECODE_MAGIC = b"ML\xefR"
_SPLIT_LINE = re.compile(r"^// -----\s*$", re.MULTILINE)
_TOP_LEVEL_COUNT = re.compile(r"single top-level operation, found: (\d+)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run polyfuse-opt with `argv` (default: sys.argv[1:]); returns the exit status."""
    args = _argument_parser().parse_args(argv)
    if args.list_passes:
        print(list_passes_text())
        return 0
    try:
        elements = parse_pipeline(args.pass_pipeline or "")
        _check_output_paths(args)
        text = _read_input(args.input)
    except PolyfuseError as error:
        print(f"polyfuse-opt: error: {error}", file=sys.stderr)
        return 1
    source_name = "<stdin>" if args.input == "-" else args.input
    chunks = _split_input(text) if args.split_input_file else [text]
    outputs, failed = [], False
    for chunk in chunks:
        output = _process(chunk, source_name, elements, args)
        failed |= output is None
        if output is not None:
            outputs.append(output)
    result = f"{SPLIT_MARKER}\n".join(outputs)
    if args.output == "-":
        sys.stdout.write(result)
        return 1 if failed else 0
    try:
        Path(args.output).write_text(result)
    except OSError as error:
        reason = error.strerror or str(error)
        print(f"polyfuse-opt: error: cannot write '-o {args.output}': {reason}", file=sys.stderr)
        return 1
    return 1 if failed else 0


def _read_input(name: str) -> str:
    """The input's text; MLIR bytecode is accepted and turned into text. Raises
    PolyfuseError for a file that cannot be read or is neither UTF-8 text nor bytecode."""
    try:
        data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as error:
        raise PolyfuseError(f"cannot read '{name}': {error.strerror or error}") from None
    if data.startswith(BYTECODE_MAGIC):
        return _bytecode_as_text(data, name)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise PolyfuseError(
            f"'{name}' is not an MLIR file: byte 0x{data[error.start]:02x} on line {line} is "
            "not UTF-8 text; polyfuse-opt reads MLIR as UTF-8 text or bytecode"
        ) from None
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise PolyfuseError(
            f"'{name}' is not an MLIR file: line {line} has a NUL byte (a binary file?); "
            "polyfuse-opt reads MLIR as UTF-8 text or bytecode"
        )
    return text


def _bytecode_as_text(data: bytes, name: str) -> str:
    context = ir.Context()
    load_accel_dialect(context)
    try:
        module = ir.Module.parse(data, context=context)
    except ir.MLIRError as error:
        raise PolyfuseError(
            f"'{name}': invalid MLIR bytecode: {format_mlir_error(error)}"
        ) from None
    return str(module.operation.get_asm(enable_debug_info=True, assume_verified=True))


def _check_output_paths(args: argparse.Namespace) -> None:
    """Refuse output paths that cannot be written before any pass runs."""
    if args.output != "-":
        output = Path(args.output)
        if output.is_dir():
            raise PolyfuseError(f"-o {output}: is a folder; give the path of a file to write")
        if not output.parent.is_dir():
            raise PolyfuseError(
                f"-o {output}: folder '{output.parent}' does not exist; create it first"
            )
    folder = args.reproducer_dir
    if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
        raise PolyfuseError(
            f"--reproducer-dir {folder}: is a file, not a folder; give a folder (it is "
            "created if it does not exist)"
        )


def parse_module(text: str, source_name: str, context: ir.Context) -> ir.Operation:
    """Parse `text` into a builtin.module, wrapping top-level ops in an implicit module.

    Locations carry `source_name`. Raises ir.MLIRError on invalid input.
    """
    load_accel_dialect(context)
    try:
        parsed = ir.Operation.parse(text, source_name=source_name, context=context).operation
    except ir.MLIRError as error:
        counts = [_TOP_LEVEL_COUNT.search(d.message) for d in error.error_diagnostics]
        if not any(counts):
            raise
        # Zero or several top-level ops: wrap them. The wrapper opens on line 1, so only
        # columns on the first line shift (a lit file's line 1 is its RUN comment).
        wrapped = ir.Operation.parse(
            f"module {{{text}\n}}", source_name=source_name, context=context
        )
        return wrapped.operation
    if parsed.name == "builtin.module":
        return parsed
    module = ir.Module.create(ir.Location.file(source_name, 1, 1, context))
    module.body.append(parsed)
    return module.operation


def list_passes_text() -> str:
    """The --list-passes listing: polyfuse passes with descriptions and options."""
    lines = ["polyfuse passes:"]
    for name, cls in sorted(PASS_REGISTRY.items()):
        lines.append(f"  {name}")
        lines.append(f"    {cls.description()}")
        for field in cls.options():
            type_name = field.type if isinstance(field.type, str) else field.type.__name__
            default = field.default if field.default is not dataclasses.MISSING else "required"
            allowed = f"; {allowed_values(field)}" if allowed_values(field) else ""
            lines.append(
                f"    {field.name.replace('_', '-')}=<{type_name}> (default: {default}{allowed})"
            )
    lines.append("")
    lines.append(
        "Every upstream MLIR pass (canonicalize, cse, func.func(...), one-shot-bufferize{...}, "
        "...) is also accepted in --pass-pipeline by its mlir-opt name."
    )
    return "\n".join(lines)


def _process(
    chunk: str, source_name: str, elements: list[PipelineElement], args: argparse.Namespace
) -> str | None:
    """Parse and transform one input buffer; returns its printed output or None."""
    context = ir.Context()
    try:
        module = parse_module(chunk, source_name, context)
        run_pipeline(
            module,
            elements,
            print_ir_after_all=args.print_ir_after_all,
            verify_each=args.verify_each,
            large_elements_limit=args.elide_limit,
            reproducer_dir=args.reproducer_dir,
            reproducer_weights=args.reproducer_weights,
        )
    except ir.MLIRError as error:
        print(format_mlir_error(error), file=sys.stderr)
        return None
    except PolyfuseError as error:
        print(error, file=sys.stderr)
        return None
    return module.get_asm(
        large_elements_limit=args.elide_limit,
        enable_debug_info=args.print_debuginfo,
        print_generic_op_form=args.print_generic,
        assume_verified=True,
    )


def _split_input(text: str) -> list[str]:
    """Split on `// -----` lines, padding each chunk so line numbers stay those of the file."""
    chunks, start, line = [], 0, 0
    for match in _SPLIT_LINE.finditer(text):
        chunks.append("\n" * line + text[start : match.start()])
        line += text.count("\n", start, match.end())
        start = match.end()
    chunks.append("\n" * line + text[start:])
    return chunks


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{value}'")


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polyfuse-opt",
        description="Run MLIR and polyfuse passes on an .mlir file (mlir-opt style).",
        allow_abbrev=False,
    )
    parser.add_argument("input", nargs="?", default="-", help="input file ('-' = stdin)")
    parser.add_argument("-o", dest="output", default="-", help="output file ('-' = stdout)")
    parser.add_argument(
        "--pass-pipeline",
        "-pass-pipeline",
        "-p",
        dest="pass_pipeline",
        default="",
        help="e.g. 'builtin.module(canonicalize,polyfuse-verify-accel,func.func(cse))'",
    )
    parser.add_argument(
        "--split-input-file",
        "-split-input-file",
        dest="split_input_file",
        action="store_true",
        help=f"process each '{SPLIT_MARKER}'-separated chunk separately",
    )
    parser.add_argument(
        "--mlir-print-ir-after-all",
        "-mlir-print-ir-after-all",
        dest="print_ir_after_all",
        action="store_true",
        help="print the IR after every pass (to stderr)",
    )
    parser.add_argument(
        "--verify-each",
        "-verify-each",
        dest="verify_each",
        type=_flag,
        nargs="?",
        const=True,
        default=True,
        help="run the verifier after each pass (default: true)",
    )
    parser.add_argument(
        "--mlir-elide-elementsattrs-if-larger",
        "-mlir-elide-elementsattrs-if-larger",
        dest="elide_limit",
        type=int,
        default=None,
        metavar="N",
        help="elide elements attributes with more than N elements when printing",
    )
    parser.add_argument(
        "--mlir-print-debuginfo",
        "-mlir-print-debuginfo",
        dest="print_debuginfo",
        action="store_true",
        help="print locations",
    )
    parser.add_argument(
        "--mlir-print-op-generic",
        "-mlir-print-op-generic",
        dest="print_generic",
        action="store_true",
        help="print every op in generic form",
    )
    parser.add_argument(
        "--reproducer-dir",
        dest="reproducer_dir",
        default=None,
        metavar="DIR",
        help="where a failing pass's reproducer goes (default: polyfuse-reproducers in the "
        "system temp dir)",
    )
    parser.add_argument(
        "--reproducer-weights",
        dest="reproducer_weights",
        action="store_true",
        help="keep large constants (weights) in reproducers (default: elided, shapes kept)",
    )
    parser.add_argument(
        "--list-passes",
        "-list-passes",
        dest="list_passes",
        action="store_true",
        help="list polyfuse passes and their options",
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
