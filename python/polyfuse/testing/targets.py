"""A small edge-like target for tests whose traffic is counted by hand."""

from __future__ import annotations

from polyfuse.targets.target import Target, target_from_dict


def edge_like(scratchpad_bytes: int, name: str = "small") -> Target:
    """`edge`'s PE array and DRAM (32x32 weight-stationary, 16 B/cycle, 100-cycle latency,
    vector width 32), float32 throughout, with a scratchpad of `scratchpad_bytes`."""
    return target_from_dict(
        {
            "name": name,
            "description": f"edge with a {scratchpad_bytes // 1024} KiB scratchpad",
            "clock": {"mhz": 1000},
            "scratchpad": {"bytes": scratchpad_bytes},
            "dram": {"bytes_per_cycle": 16.0, "latency_cycles": 100},
            "pe_array": {"rows": 32, "cols": 32, "dataflow": "weight-stationary"},
            "vector": {"width": 32},
            "types": {"inputs": ["float32"], "accumulator": "float32"},
        },
        source=f"<edge_like({scratchpad_bytes})>",
    )
