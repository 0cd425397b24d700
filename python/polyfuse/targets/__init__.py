"""Accelerator target descriptions: presets in `presets/*.toml`, user targets as any .toml file."""

from __future__ import annotations

from polyfuse.targets.target import (
    ScratchpadPartition,
    Target,
    list_presets,
    load_target,
    target_name,
)

__all__ = ["ScratchpadPartition", "Target", "list_presets", "load_target", "target_name"]
