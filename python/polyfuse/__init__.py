"""polyfuse: whole-model polyhedral memory-access optimisation for scratchpad accelerators."""

from __future__ import annotations

__version__ = "0.1.0"
