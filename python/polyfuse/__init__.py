"""polyfuse: whole-model polyhedral memory-access optimisation for scratchpad accelerators.

compiled = polyfuse.compile(model, example_inputs, target="edge")
outputs = compiled(*inputs)          # runs on the emulated accelerator
print(compiled.report.format())      # DRAM traffic, cycles, lower bound
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from polyfuse.errors import PolyfuseError

__version__ = "0.1.0"
__all__ = ["PolyfuseError", "compile"]

if TYPE_CHECKING:
    from polyfuse.compiler import compile
else:

    def compile(*args: Any, **kwargs: Any) -> Any:
        """polyfuse.compiler.compile (imported lazily: it loads torch and MLIR)."""
        from polyfuse.compiler import compile as compile_model

        return compile_model(*args, **kwargs)
