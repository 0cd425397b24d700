"""The compile pipeline: PyTorch model → accel program on the emulated accelerator.

`compile` is one linear sequence of named stages:

    import      torch.export + torch-mlir FX importer → linalg on tensors
    generalize  upstream: linalg-generalize-named-ops, canonicalize, cse; weight layout
                folding (needs the weights as arrays: before the pipeline)
    pipeline    `polyfuse.pipeline.pipeline(options)` through `run_pipeline`: reshapes
                and copies out of fusion's way, then fused (form-groups, lower-groups)
                or layer by layer (lower-to-accel), allocation, verification; timed and
                (keep_ir) snapshotted per pass
    serialize   accel → the emulator's instruction table

`pipeline_text(options)` is the pipeline as a `polyfuse-opt --pass-pipeline` value.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch_mlir import ir, passmanager

from polyfuse import last_run
from polyfuse.dialects import accel
from polyfuse.errors import PipelineError, PolyfuseError, UnsupportedError
from polyfuse.frontend.call_signature import CallSignature
from polyfuse.frontend.importer import import_model
from polyfuse.frontend.weight_layouts import fold_weight_layouts
from polyfuse.fusion.plan_ir import FALLBACK_ATTRIBUTE, read_fusion_plans
from polyfuse.lowering.layer_by_layer import OperatorRecord
from polyfuse.lowering.records import read_records
from polyfuse.passes.form_groups import FormGroups
from polyfuse.pipeline import (
    UPSTREAM_PASSES,
    CompileOptions,
    pipeline,
)
from polyfuse.report import Report
from polyfuse.runtime.emulator import execute, machine_params
from polyfuse.runtime.serialize import DramBuffer, SerializedProgram, serialize
from polyfuse.targets import Target, load_target, target_name
from polyfuse.tools.pipeline import PipelineElement, run_pipeline

UPSTREAM_PIPELINE = ",".join(UPSTREAM_PASSES)


@dataclass
class CompiledModel:
    """A model compiled for a target; call it with tensors like the original module.

    Each call runs on its own DRAM state (the weights are shared, read only), so calls
    from several threads are independent and may run at the same time. A model whose
    `forward` updates buffers or mutates inputs writes them back after each call, as
    eager PyTorch does; its calls run one at a time (a lock), in the order they take it.
    """

    target: Target
    serialized: SerializedProgram
    operators: list[OperatorRecord]
    signature: CallSignature
    compile_seconds: dict[str, float]
    mlir: dict[str, str] = field(default_factory=dict)
    report: Report | None = None
    # schedule="fused": the fusion plan per function, or why it fell back to layer by layer
    fusion_plans: list[Any] = field(default_factory=list)
    fusion_fallback: str = ""
    check: bool = True
    overlap: bool = True
    sanitize: bool = False
    trace_limit: int = 0  # > 0: record that many engine slices per run (report.stats.trace)
    # the live tensor of each buffer forward updates (the caller's module's own buffer)
    state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _weights: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def input_shapes(self) -> list[tuple[int, ...]]:
        return [spec.shape for spec in self.signature.inputs]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        inputs = self.signature.flatten_inputs(args, kwargs)
        if self.signature.mutates:
            with self._lock:
                return self._run(inputs)
        return self._run(inputs)

    def _run(self, inputs: list[torch.Tensor]) -> Any:
        dram = self._fresh_dram()
        results: list[np.ndarray] = []
        for buffer, array in zip(self.serialized.buffers, dram, strict=True):
            if buffer.role == "input":
                slot = self.signature.arguments[buffer.index]
                source = inputs[slot.index] if slot.kind == "input" else self.state[slot.name]
                np.copyto(array, source.detach().numpy().reshape(array.shape))
            elif buffer.role == "output":
                results.append(array)
        start = time.perf_counter()
        stats = execute(
            self.serialized.program,
            dram,
            machine_params(self.target, self.overlap),
            self.check,
            sanitize=self.sanitize,
            trace_limit=self.trace_limit,
        )
        seconds = time.perf_counter() - start
        report = Report.build(self, stats, seconds)
        self.report = report
        last_run.record(report)
        outputs: list[torch.Tensor] = []
        with torch.no_grad():
            for slot, buffer, array in zip(
                self.signature.results, self._output_buffers(), results, strict=True
            ):
                value = torch.from_numpy(array.reshape(buffer.shape).copy())  # rank 0 stays 0
                if slot.kind == "output":
                    outputs.append(value)
                elif slot.kind == "input":
                    inputs[slot.index].copy_(value)
                else:
                    self.state[slot.name].copy_(value)
        return self.signature.unflatten_outputs(outputs)

    def _output_buffers(self) -> list[DramBuffer]:
        return [b for b in self.serialized.buffers if b.role == "output"]

    def _fresh_dram(self) -> list[np.ndarray]:
        """This call's DRAM: the shared weight arrays, new arrays for everything else."""
        return [
            self._weights[position] if position in self._weights else _buffer_array(buffer, {})
            for position, buffer in enumerate(self.serialized.buffers)
        ]


def bind_buffers(serialized: SerializedProgram, weights: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The DRAM arrays of a serialized program: weights from `weights`, the rest zero
    (or their fill value)."""
    arrays = []
    for buffer in serialized.buffers:
        arrays.append(_buffer_array(buffer, weights))
    return arrays


def _bind_weights(
    serialized: SerializedProgram, weights: dict[str, np.ndarray]
) -> dict[int, np.ndarray]:
    """The DRAM array of each weight buffer, by buffer position (shared by all calls)."""
    return {
        position: _buffer_array(buffer, weights)
        for position, buffer in enumerate(serialized.buffers)
        if buffer.role == "weight"
    }


def _buffer_array(buffer: DramBuffer, weights: dict[str, np.ndarray]) -> np.ndarray:
    shape = buffer.shape or (1,)
    if buffer.role == "weight":
        if buffer.constant is not None:
            return np.ascontiguousarray(buffer.constant.reshape(shape), dtype=np.float32)
        if buffer.weight not in weights:
            raise PolyfuseError(f"weight '{buffer.weight}' is not in the model's weight map")
        return np.ascontiguousarray(weights[buffer.weight].reshape(shape), dtype=np.float32)
    array = np.zeros(shape, dtype=np.float32)
    if buffer.init is not None:
        array.fill(buffer.init)
    return array


def run_upstream(module: ir.Module, pipeline: str) -> None:
    try:
        passmanager.PassManager.parse(f"builtin.module({pipeline})", module.context).run(
            module.operation
        )
    except ir.MLIRError as error:
        raise PipelineError(f"upstream pipeline '{pipeline}' failed: {error}") from None


def generalize(module: ir.Module, weights: dict[str, np.ndarray]) -> None:
    """The "generalize" stage, before the pipeline: upstream generalisation and clean-up,
    then weight transposes folded into new weights (added to `weights`: the only step
    that needs the weights as arrays, which a pass cannot read back from the IR)."""
    run_upstream(module, UPSTREAM_PIPELINE)
    fold_weight_layouts(module, weights)


def compile(
    model: torch.nn.Module,
    example_inputs: Sequence[Any],
    target: str | Target = "edge",
    *,
    keep_ir: bool = False,
    check: bool = True,
    schedule: str = "layer-by-layer",
    overlap: bool = True,
    sanitize: bool = False,
    embedding: str = "csp",
    traffic_first: bool = False,
    halo: bool = True,
    copy_padded_inputs: bool = True,
) -> CompiledModel:
    """Compile `model` for `example_inputs`' shapes to run on the emulated `target`.

    `schedule` is "layer-by-layer" or "fused" (cross-operator fusion, issue 4; falls back
    to layer by layer, with the reason in `fusion_fallback`, on what it cannot fuse).
    `overlap` (default) double-buffers inner tile loops where the planner estimates it pays
    and lets the emulator's engines run concurrently; False gives the baseline without
    overlap (one buffer per tile, one instruction at a time). `sanitize` runs the
    emulator's shadow-memory checks on every call. `embedding` says how contractions go
    onto the PE array: "csp" (CP-SAT per operator shape, issue 6; its solve time is part
    of the "lower" stage), "fixed" (the VTA reference) or "heuristic" (one PE block per
    instruction); see docs/embedding.md. Both schedules use `overlap` and `embedding`
    the same way (the fused one in every fusion group, see fusion/overlap.py). In the
    fused schedule an operator's tiling may move more DRAM bytes than its least-traffic
    tiling when the planner's cycle estimate says it is faster; `traffic_first` forbids
    that (the fused plan then moves exactly the bytes of the traffic-only planner).
    `halo` lets the fused planner run convolution chains in row bands (docs/fusion.md,
    "Halo groups"): fewer DRAM bytes, but recomputed rows; unless `traffic_first` the
    planner keeps them only where its cycle estimate finds them faster.
    `copy_padded_inputs` (fused) builds padded inputs on chip (passes/copy_padded_inputs.py);
    False keeps their padding a DMA copy before the first group.
    """
    target = target if isinstance(target, Target) else load_target(target)
    options = CompileOptions(
        target=target_name(target),
        schedule=schedule,
        overlap=overlap,
        embedding=embedding,
        traffic_first=traffic_first,
        halo=halo,
        copy_padded_inputs=copy_padded_inputs,
    )
    options.check()
    seconds: dict[str, float] = {}
    mlir: dict[str, str] = {}

    def snapshot(stage: str, module: ir.Module | ir.Operation) -> None:
        if keep_ir:
            mlir[stage] = module.operation.get_asm(large_elements_limit=16, large_resource_limit=16)

    imported = import_model(model, example_inputs)
    seconds.update(imported.seconds)
    module = imported.module
    snapshot("import", module)

    with module.context:
        accel.load_accel_dialect(module.context)
        start = time.perf_counter()
        generalize(module, imported.weights)
        seconds["generalize"] = time.perf_counter() - start
        snapshot("generalize", module)
        fusion_plans: list[Any] = []
        lowered = module.operation

        def after_pass(element: PipelineElement, operation: ir.Operation, took: float) -> None:
            seconds[element.name] = seconds.get(element.name, 0.0) + took
            snapshot(element.name, operation)
            if element.name == FormGroups.name:
                fusion_plans.extend(read_fusion_plans(operation, target, embedding))

        run_pipeline(lowered, pipeline(options), after_pass=after_pass)
        operators = read_records(lowered)
        fallback = fusion_fallback(lowered)
        snapshot("lower", lowered)

        start = time.perf_counter()
        serialized = serialize(lowered, "forward")
        seconds["serialize"] = time.perf_counter() - start

    start = time.perf_counter()
    weights = _bind_weights(serialized, imported.weights)
    seconds["bind"] = time.perf_counter() - start
    if not any(b.role == "output" for b in serialized.buffers):
        raise UnsupportedError("the model returns no tensor")
    outputs = sum(1 for b in serialized.buffers if b.role == "output")
    if outputs != len(imported.signature.results):
        raise PipelineError(
            f"internal error: the compiled function has {outputs} result(s) but the model's "
            f"call signature has {len(imported.signature.results)}; please report it"
        )
    return CompiledModel(
        target=target,
        serialized=serialized,
        operators=operators,
        signature=imported.signature,
        state=imported.state,
        compile_seconds=seconds,
        mlir=mlir,
        check=check,
        overlap=overlap,
        sanitize=sanitize,
        fusion_plans=fusion_plans,
        fusion_fallback=fallback,
        _weights=weights,
    )


def fusion_fallback(module_op: ir.Operation) -> str:
    """Why a function of the lowered module was not fused ("" if every one was)."""
    for op in module_op.regions[0].blocks[0].operations:
        if FALLBACK_ATTRIBUTE in op.operation.attributes:
            return ir.StringAttr(op.operation.attributes[FALLBACK_ATTRIBUTE]).value
    return ""


def _lower_fused(
    module: ir.Module,
    target: Target,
    buffers: int,
    embedding: str,
    traffic_first: bool,
    halo: bool,
) -> tuple[Any, list[Any], str, ir.Operation]:
    """Fused lowering of a clone of `module`: (records, plans, "", lowered clone), or
    (None, [], reason, the untouched module) when fusion is not possible."""
    from polyfuse.fusion import lower_module_fused

    clone = module.operation.clone()
    try:
        records, plans = lower_module_fused(clone, target, buffers, embedding, traffic_first, halo)
    except PolyfuseError as error:
        clone.erase()
        return None, [], f"fusion fell back to layer by layer: {error}", module.operation
    return records, plans, "", clone
