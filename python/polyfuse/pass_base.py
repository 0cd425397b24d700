"""The base class of polyfuse's Python-defined passes.

A pass is a frozen dataclass: the class attribute `name` is its pipeline name
(`polyfuse-lower-to-accel`), its fields are its options (kebab-case in pipelines:
`polyfuse-lower-to-accel{target=edge}`), and its docstring is its description.
Passes run on the whole `builtin.module` and are stateless: one instance may serve
many pipelines. An option declared with `option(...)` also says which values it allows;
they are checked when the pass is built, so a bad value fails before any pass runs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypeVar

from torch_mlir import ir

T = TypeVar("T")


def option(
    default: T, *, choices: tuple[str, ...] = (), limits: tuple[int, int] | None = None
) -> T:
    """A pass option with its default and the values it allows: one of `choices`, or an
    integer from `limits[0]` to `limits[1]`."""
    return dataclasses.field(default=default, metadata={"choices": choices, "limits": limits})


def allowed_values(field: dataclasses.Field[Any]) -> str:
    """What an option allows, for messages and --list-passes ("" when anything goes)."""
    if field.metadata.get("choices"):
        return f"one of {', '.join(field.metadata['choices'])}"
    if field.metadata.get("limits"):
        lowest, highest = field.metadata["limits"]
        return f"an integer from {lowest} to {highest}"
    return ""


class PassFailure(Exception):
    """Raised inside `ModulePass.run` to fail the pass with a message."""

    def __init__(self, message: str, location: ir.Location | None = None) -> None:
        super().__init__(message)
        self.location = location


@dataclasses.dataclass(frozen=True)
class ModulePass:
    """A module-level pass with typed options (the dataclass fields)."""

    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            choices, limits = field.metadata.get("choices"), field.metadata.get("limits")
            if (choices and value not in choices) or (
                limits and not limits[0] <= value <= limits[1]
            ):
                key = field.name.replace("_", "-")
                raise ValueError(
                    f"pass '{self.name}': option '{key}' must be {allowed_values(field)}, "
                    f"got '{value}'"
                )

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
            values[field.name] = _convert(text, field, cls.name, key)
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


def _convert(text: str, field: dataclasses.Field[Any], pass_name: str, key: str) -> Any:
    type_text = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
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
        expected = allowed_values(field) or type_text
        raise ValueError(
            f"pass '{pass_name}': option '{key}' expects {expected}, got '{text}'"
        ) from None
    return text
