"""Errors polyfuse reports to its users.

Every error says what went wrong, where (a file:line:col, an operator, a field) and what
to do about it. Tools print `str(error)` without a traceback.
"""

from __future__ import annotations


class PolyfuseError(Exception):
    """Base class of every error polyfuse reports to a user."""


class TargetError(PolyfuseError):
    """A target description is missing, malformed or inconsistent."""


class UnsupportedError(PolyfuseError):
    """The model or IR uses something polyfuse does not support (yet)."""


class ImportError_(PolyfuseError):
    """The PyTorch frontend could not import the model."""


class PipelineError(PolyfuseError):
    """A pass pipeline could not be parsed or a pass failed."""


class ScratchpadCapacityError(PolyfuseError):
    """No legal tile of an operator fits the target's scratchpad."""


class VerificationError(PolyfuseError):
    """IR does not satisfy the accel dialect's rules."""


class EmulatorTrap(PolyfuseError):
    """The emulated accelerator trapped on an illegal program (bounds, capacity, DMA order)."""

    def __init__(self, message: str, pc: int = -1, location: str = "") -> None:
        super().__init__(message)
        self.pc = pc
        self.location = location
