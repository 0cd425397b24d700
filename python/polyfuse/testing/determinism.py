"""A fingerprint of everything a compile produces, to check that compiling is deterministic.

`fingerprint(spec, target)` compiles the random network `spec` for `target`, runs it once,
and hashes the IR after every stage, the instruction table, the DRAM buffer layout, the
per-operator decisions and the report (without wall-clock times). Two compiles of the same
model, in one process or in two with different PYTHONHASHSEED, must give equal fingerprints.

    python -m polyfuse.testing.determinism '<NetSpec JSON>' '<TargetSpec JSON>'
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict
from typing import Any

from polyfuse.testing.random_nets import NetSpec, TargetSpec, build_model

# Wall-clock quantities: the only things allowed to differ between two compiles.
_TIMING_KEYS = ("run_s",)


def _digest(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()


def fingerprint(spec: NetSpec, target: TargetSpec) -> dict[str, Any]:
    """Hashes of each compile product of `spec` on `target` (see the module docstring)."""
    import polyfuse

    model, inputs = build_model(spec)
    compiled = polyfuse.compile(model, inputs, target=target.target(), keep_ir=True)
    compiled(*inputs)
    assert compiled.report is not None
    program = compiled.serialized.program
    report = {k: v for k, v in compiled.report.as_dict().items() if k not in _TIMING_KEYS}
    operators = [
        {k: v for k, v in asdict(record).items() if not k.endswith("_s")}
        for record in compiled.operators
    ]
    return {
        "ir": {stage: _digest(text) for stage, text in sorted(compiled.mlir.items())},
        "records": _digest(program.records.tobytes()),
        "immediates": _digest(program.immediates.tobytes()),
        "locations": _digest("\n".join(program.locations)),
        "buffers": _digest(
            repr(
                [(b.role, b.shape, b.index, b.weight, b.init) for b in compiled.serialized.buffers]
            )
        ),
        "operators": _digest(json.dumps(operators, sort_keys=True, default=str)),
        "report": report,
    }


if __name__ == "__main__":
    spec = NetSpec.from_json(sys.argv[1])
    target = TargetSpec(**json.loads(sys.argv[2]))
    print(json.dumps(fingerprint(spec, target), sort_keys=True))
