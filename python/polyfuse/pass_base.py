"""The base class of polyfuse's Python-defined passes.

A pass is a frozen dataclass: the class attribute `name` is its pipeline name
(`polyfuse-lower-to-accel`), its fields are its options (kebab-case in pipelines:
`polyfuse-lower-to-accel{target=edge}`), and its docstring is its description.
Passes run on the whole `builtin.module` and are stateless: one instance may serve
many pipelines.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from torch_mlir import ir


class PassFailure(Exception):
    """Raised inside `ModulePass.run` to fail the pass with a message."""

    def __init__(self, message: str, location: ir.Location | None = None) -> None:
        super().__init__(message)
        self.location = location


@dataclasses.dataclass(frozen=True)
class ModulePass:
    """A module-level pass with typed options (the dataclass fields)."""

    name: ClassVar[str] = ""

    def run(self, module: ir.Operation) -> None:
        raise NotImplementedError

    @classmethod
    def description(cls) -> str:
        doc = cls.__doc__ or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @classmethod
    def options(cls) -> list[dataclasses.Field[Any]]:
        return list(dataclasses.fields(cls))

    @classmethod
    def from_options(cls, options: dict[str, str]) -> ModulePass:
        """Build the pass from `{kebab-name: text}` options, converting to field types."""
        fields = {f.name.replace("_", "-"): f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, text in options.items():
            if key not in fields:
                known = ", ".join(sorted(fields)) or "none"
                raise ValueError(f"pass '{cls.name}' has no option '{key}' (options: {known})")
            field = fields[key]
            values[field.name] = _convert(text, field.type, cls.name, key)
        return cls(**values)

    def pipeline_text(self) -> str:
        """This pass with its non-default options, as it is written in a pipeline."""
        parts = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value != field.default:
                text = str(value).lower() if isinstance(value, bool) else str(value)
                parts.append(f"{field.name.replace('_', '-')}={text}")
        return f"{self.name}{{{' '.join(parts)}}}" if parts else self.name


def _convert(text: str, type_name: Any, pass_name: str, key: str) -> Any:
    type_text = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", "")
    try:
        if type_text == "bool":
            if text.lower() in ("true", "1", ""):
                return True
            if text.lower() in ("false", "0"):
                return False
            raise ValueError
        if type_text == "int":
            return int(text, 0)
        if type_text == "float":
            return float(text)
    except ValueError:
        raise ValueError(
            f"pass '{pass_name}': option '{key}' expects {type_text}, got '{text}'"
        ) from None
    return text
