"""polyfuse's passes, one file each, registered by name.

Adding a pass = one file here + one line in `_PASSES` + one lit test named after it.
"""

from __future__ import annotations

from polyfuse.pass_base import ModulePass
from polyfuse.passes.allocate_scratchpad import AllocateScratchpad
from polyfuse.passes.copy_padded_inputs import CopyPaddedInputs
from polyfuse.passes.dump_poly import DumpPoly
from polyfuse.passes.fold_reshapes import FoldReshapes
from polyfuse.passes.form_groups import FormGroups
from polyfuse.passes.lower_groups import LowerGroups
from polyfuse.passes.lower_to_accel import LowerToAccel
from polyfuse.passes.sink_copies import SinkCopies
from polyfuse.passes.verify_accel import VerifyAccel

_PASSES: list[type[ModulePass]] = [
    AllocateScratchpad,
    CopyPaddedInputs,
    DumpPoly,
    FoldReshapes,
    FormGroups,
    LowerGroups,
    LowerToAccel,
    SinkCopies,
    VerifyAccel,
]

PASS_REGISTRY: dict[str, type[ModulePass]] = {p.name: p for p in _PASSES}
