"""The accel dialect's verifier: the rules IRDL cannot express.

`verify_accel(module)` runs MLIR's own verifier (which applies the IRDL constraints),
then checks every accel op: memory spaces, view attributes (one access map and one
stride list per buffer, map dims = number of ivs, rank <= 6), vector kinds and arity,
limits of the module's `accel.target` (PE array size, scratchpad capacity), static
bounds of every view, and that every DMA token is waited for. docs/dialect.md lists the
rules op by op.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch_mlir import ir

from polyfuse.dialects import accel
from polyfuse.dialects.verify_bounds import iv_range, view_range
from polyfuse.dialects.verify_ops import AccelTarget, check_op, read_target
from polyfuse.errors import VerificationError

_FILE_LINE_COL = re.compile(r'"((?:[^"\\]|\\.)*)":(\d+):(\d+)')


def format_location(location: ir.Location) -> str:
    """`file:line:col` of a location (the first file location inside it)."""
    text = str(location)
    match = _FILE_LINE_COL.search(text)
    if match:
        return f"{match.group(1)}:{match.group(2)}:{match.group(3)}"
    if text.startswith('loc("') and text.endswith('")'):
        return text[5:-2]  # a bare name location
    return "<unknown>"


def format_diagnostic(diagnostic: ir.Diagnostic) -> str:
    """A diagnostic and its notes as `file:line:col: severity: message` lines."""
    severity = str(diagnostic.severity).rsplit(".", 1)[-1].lower()
    lines = [f"{format_location(diagnostic.location)}: {severity}: {diagnostic.message}"]
    lines += [format_diagnostic(note) for note in diagnostic.notes]
    return "\n".join(lines)


def format_mlir_error(error: ir.MLIRError) -> str:
    """An MLIRError's diagnostics, one `file:line:col: error: ...` block each."""
    if not error.error_diagnostics:
        return error.message
    return "\n".join(format_diagnostic(d) for d in error.error_diagnostics)


@dataclass(frozen=True)
class AccelProblem:
    """One broken rule: where, which op, and what is wrong and what to do."""

    location: ir.Location
    op_name: str
    message: str

    @property
    def detail(self) -> str:
        """The message as MLIR phrases an op error: `'accel.x' op ...`."""
        return f"'{self.op_name}' op {self.message}"

    def __str__(self) -> str:
        return f"{format_location(self.location)}: error: {self.detail}"


def verify_accel(module_op: ir.Operation | ir.OpView | ir.Module) -> None:
    """Verify a module with MLIR's verifier, then the accel rules.

    Raises VerificationError whose message lists every problem, one per line, each
    starting with `file:line:col: error: 'accel.op' op`.
    """
    operation = module_op.operation
    try:
        operation.verify()
    except ir.MLIRError as error:
        raise VerificationError(format_mlir_error(error)) from None
    problems = accel_problems(operation)
    if problems:
        raise VerificationError("\n".join(str(p) for p in problems))


def accel_problems(module_op: ir.Operation | ir.OpView | ir.Module) -> list[AccelProblem]:
    """Every accel rule the (MLIR-verified) module breaks, in IR order."""
    operation = module_op.operation
    problems: list[AccelProblem] = []
    target, target_error = read_target(operation)
    if target_error:
        problems.append(AccelProblem(operation.location, operation.name, target_error))

    def visit(op: ir.Operation) -> ir.WalkResult:
        if op.name.startswith("accel."):
            for message in _check(op, target):
                problems.append(AccelProblem(op.location, op.name, message))
        return ir.WalkResult.ADVANCE

    operation.walk(visit, ir.WalkOrder.PRE_ORDER)
    return problems


def _check(op: ir.Operation, target: AccelTarget | None) -> list[str]:
    messages = check_op(op, target)
    if messages or op.name not in ("accel.dma_start", "accel.matmul", "accel.vector"):
        return messages
    # Bounds are only meaningful once the views are well formed.
    messages += _check_bounds(op)
    if op.name == "accel.dma_start":
        messages += _check_token(op)
    return messages


_VIEW_ROLES = {
    "accel.dma_start": ["destination", "source"],
    "accel.matmul": ["C", "A", "B"],
    "accel.vector": ["destination", "source 0", "source 1", "source 2"],
}


def _check_bounds(op: ir.Operation) -> list[str]:
    views = accel.view_operands(op)
    ranges = [iv_range(iv) for iv in views.ivs]
    if any(r is None for r in ranges):
        return []  # some loop bound is not a constant: nothing to check statically
    iv_ranges = [r for r in ranges if r is not None]
    if any(low > high for low, high in iv_ranges):
        return []  # an enclosing loop runs zero times: the op never executes
    shape = accel.read_shape(op)
    messages = []
    views_info = zip(views.buffers, accel.read_accesses(op), accel.read_strides(op), strict=True)
    for role, (buffer, access, strides) in zip(_VIEW_ROLES[op.name], views_info, strict=False):
        size = _elements(buffer.type)
        low, high = view_range(access, strides, shape, iv_ranges)
        if low < 0 or high >= size:
            messages.append(
                f"{role} view touches elements {low}..{high} but {buffer.type} has "
                f"{size} elements (0..{size - 1}); fix the view's offset map, strides or "
                "shape, or the enclosing loop bounds"
            )
    return messages


def _elements(type_: ir.Type) -> int:
    count = 1
    for size in ir.MemRefType(type_).shape:
        count *= size
    return count


def _check_token(op: ir.Operation) -> list[str]:
    uses = list(op.result.uses)
    if not uses:
        return [
            'starts a DMA whose token is never waited for; add "accel.dma_wait"(%token) '
            "before the transferred data is used"
        ]
    waits_per_block: dict[ir.Block, int] = {}
    for use in uses:
        owner = use.owner
        if owner.name == "accel.dma_wait":
            block = owner.operation.block
            waits_per_block[block] = waits_per_block.get(block, 0) + 1
    if any(count > 1 for count in waits_per_block.values()):
        return ["token is waited for twice in one block; remove the second accel.dma_wait"]
    return []
