"""The compile pipeline: the one list of passes compile(), the CLI, torch.compile and the
benches run after import.

    func.func(linalg-generalize-named-ops), canonicalize, cse     upstream clean-up
    polyfuse-fold-reshapes                                        reshapes out of fusion's way
    polyfuse-sink-copies                                          copies next to their user
    fused:          polyfuse-copy-padded-inputs                   padded inputs built on chip
                    polyfuse-form-groups{...}                     the planner: accel groups
                    polyfuse-lower-groups{...}                    groups -> accel
    layer by layer: polyfuse-lower-to-accel{...}                  one operator at a time
    polyfuse-allocate-scratchpad                                  whole-program placement
    polyfuse-verify-accel

`pipeline_text(options)` is the same list as a `polyfuse-opt --pass-pipeline` value
(`polyfuse pipeline --target T` prints it); running it on the module `polyfuse export`
writes gives compile's IR.
"""

from __future__ import annotations

from dataclasses import dataclass

from polyfuse.errors import PolyfuseError
from polyfuse.lowering.contraction_embedding import EMBEDDINGS
from polyfuse.pass_base import ModulePass
from polyfuse.passes.allocate_scratchpad import AllocateScratchpad
from polyfuse.passes.copy_padded_inputs import CopyPaddedInputs
from polyfuse.passes.fold_reshapes import FoldReshapes
from polyfuse.passes.form_groups import FormGroups
from polyfuse.passes.lower_groups import LowerGroups
from polyfuse.passes.lower_to_accel import LowerToAccel
from polyfuse.passes.sink_copies import SinkCopies
from polyfuse.passes.verify_accel import VerifyAccel
from polyfuse.tools.pipeline import PipelineElement
from polyfuse.tools.pipeline import pipeline_text as elements_text

UPSTREAM_PASSES = ("func.func(linalg-generalize-named-ops)", "canonicalize", "cse")
OVERLAP_BUFFERS = 2  # copies of inner tiles when overlap is on (double buffering)
SCHEDULES = ("fused", "layer-by-layer")


@dataclass(frozen=True)
class CompileOptions:
    """What `polyfuse.compile` takes besides the model (see its docstring); `target` is a
    name `load_target` resolves (`targets.target_name` names a Target object)."""

    target: str = "edge"
    schedule: str = "layer-by-layer"
    overlap: bool = True
    embedding: str = "csp"
    traffic_first: bool = False
    halo: bool = True
    copy_padded_inputs: bool = True  # fused: padded inputs built on chip

    def check(self) -> None:
        """Raise PolyfuseError on an option value no pass accepts."""
        if self.schedule not in SCHEDULES:
            raise PolyfuseError(
                f"schedule must be 'layer-by-layer' or 'fused', got '{self.schedule}'"
            )
        if self.embedding not in EMBEDDINGS:
            raise PolyfuseError(
                f"embedding must be one of {', '.join(EMBEDDINGS)}, got '{self.embedding}'"
            )

    @property
    def buffers(self) -> int:
        """Copies of inner tiles: two (double buffering) with overlap, else one."""
        return OVERLAP_BUFFERS if self.overlap else 1


def pipeline(options: CompileOptions) -> list[PipelineElement]:
    """The passes compile runs after import, in order (see the module docstring)."""
    options.check()
    elements = [PipelineElement(text) for text in UPSTREAM_PASSES]
    elements += [PipelineElement.of(FoldReshapes()), PipelineElement.of(SinkCopies())]
    if options.schedule == "fused" and options.copy_padded_inputs:
        elements.append(PipelineElement.of(CopyPaddedInputs()))
    if options.schedule == "fused":
        form = FormGroups(
            target=options.target,
            buffers=options.buffers,
            embedding=options.embedding,
            traffic_first=options.traffic_first,
            halo=options.halo,
        )
        lower: ModulePass = LowerGroups(
            target=options.target, buffers=options.buffers, embedding=options.embedding
        )
        elements += [PipelineElement.of(form), PipelineElement.of(lower)]
    else:
        lower = LowerToAccel(
            target=options.target, buffers=options.buffers, embedding=options.embedding
        )
        elements.append(PipelineElement.of(lower))
    elements.append(PipelineElement.of(AllocateScratchpad(target=options.target)))
    elements.append(PipelineElement.of(VerifyAccel()))
    return elements


def pipeline_text(options: CompileOptions) -> str:
    """`pipeline(options)` as a `--pass-pipeline` value for polyfuse-opt."""
    return elements_text(pipeline(options))
