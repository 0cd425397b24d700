"""polyfuse: whole-model polyhedral memory-access optimisation for scratchpad accelerators.

compiled = polyfuse.compile(model, example_inputs, target="edge")
outputs = compiled(*inputs)          # runs on the emulated accelerator
print(compiled.report.format())      # DRAM traffic, cycles, lower bound
polyfuse.last_report()               # the latest run's report (torch.compile users too)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from polyfuse.errors import PolyfuseError

__version__ = "0.1.0"
__all__ = ["PolyfuseError", "compile", "last_report"]

if TYPE_CHECKING:
    from polyfuse.compiler import compile
    from polyfuse.last_run import last_report
else:

    def compile(*args: Any, **kwargs: Any) -> Any:
        """polyfuse.compiler.compile (imported lazily: it loads torch and MLIR)."""
        from polyfuse.compiler import compile as compile_model

        return compile_model(*args, **kwargs)

    def last_report() -> Any:
        """polyfuse.last_run.last_report: the report of the most recent run of any
        compiled model in this process (None before any run)."""
        from polyfuse.last_run import last_report as last

        return last()
