"""The quick fuzz run of the suite (bench/fuzz.py is the long one).

Hypothesis draws random networks (conv with random kernel/stride/padding/dilation/groups,
linear, matmul, elementwise, pooling, softmax, norms, residual adds, concats, permutes,
slices) and random targets (scratchpad down to the smallest that fits); every case must
match eager PyTorch, move exactly the planned DRAM bytes and never trap, with the
emulator's sanitizer on (polyfuse.testing.fuzz.run_case). Derandomized, so the suite sees
the same cases each run. Each user pattern (shared and tied weights, buffers read and
updated, in-place updates, structured and aliased outputs, train mode, dropout, repeated
calls, threads, wrong and non-contiguous inputs) runs on a few fixed generated cases, on
both schedules.
"""

from __future__ import annotations

import collections
import importlib.util
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from torch.utils import _pytree as pytree

from polyfuse.testing.fuzz import CaseResult, reproducer_script, run_case
from polyfuse.testing.net_spec import (
    BUFFER_UPDATES,
    LAYER_OPS,
    MUTATIONS,
    OUTPUT_STRUCTURES,
    PATTERNS,
    WRONG_INPUTS,
    CallPlan,
    case_patterns,
)
from polyfuse.testing.random_nets import (
    Layer,
    NetSpec,
    RandomChooser,
    TargetSpec,
    build_model,
    generate_case,
    generate_net,
    generate_target,
    net_specs,
    target_specs,
)

REPO = Path(__file__).resolve().parents[3]


@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(spec=net_specs(max_layers=3), target=target_specs())
def test_random_networks_match_eager(spec: NetSpec, target: TargetSpec) -> None:
    result = run_case(spec, target, sanitize=True)
    assert result.ok, f"{result.outcome}: {result.message}"


def test_generator_covers_every_layer_kind_and_parameter() -> None:
    ops: collections.Counter[str] = collections.Counter()
    conv_features: set[str] = set()
    for seed in range(300):
        spec = generate_net(RandomChooser(seed), seed=seed, patterns=False)
        for layer in spec.layers:
            ops[layer.op] += 1
            if layer.op == "conv":
                p = layer.params
                conv_features.update(
                    name
                    for name, present in [
                        ("groups", p["groups"] > 1),
                        ("depthwise multiplier", p["out_channels"] > p["groups"] > 1),
                        ("stride", max(p["stride"]) > 1),
                        ("padding", max(p["padding"]) > 0),
                        ("dilation", max(p["dilation"]) > 1),
                        ("non-square kernel", p["kernel_size"][0] != p["kernel_size"][1]),
                    ]
                    if present
                )
        # Every layer's recorded shape is the shape eager PyTorch computes.
        if seed < 15:
            model, inputs = build_model(spec)
            outputs = pytree.tree_leaves(model(*inputs))
            for index, output in zip(spec.outputs, outputs, strict=True):
                assert list(output.shape) == spec.shapes[index]
    expected_ops = {"conv", "linear", "matmul", "matmul_parameter", "unary", "binary"}
    expected_ops |= {"binary_parameter", "binary_scalar", "pool", "softmax", "concat"}
    expected_ops |= {"slice", "permute", "mean", "batch_norm", "flatten", "layer_norm"}
    assert expected_ops <= set(ops), expected_ops - set(ops)
    assert len(conv_features) == 6, conv_features


def test_generator_covers_every_user_pattern() -> None:
    patterns: collections.Counter[str] = collections.Counter()
    ops: set[str] = set()
    variants: set[tuple[str, str]] = set()
    for index in range(300):
        spec, _, plan = generate_case(RandomChooser(f"patterns:{index}"), seed=index)
        patterns.update(case_patterns(spec, plan))
        for layer in spec.layers:
            ops.add(layer.op)
            if layer.op in ("buffer_update", "mutate"):
                variants.add((layer.op, layer.params.get("kind", layer.params.get("fn", ""))))
        variants.add(("output_structure", spec.output_structure))
        variants.add(("wrong_input", plan.wrong_input))
    assert set(PATTERNS) <= set(patterns), set(PATTERNS) - set(patterns)
    assert min(patterns.values()) >= 10, patterns  # each in a few percent of the cases
    assert set(LAYER_OPS) <= ops, set(LAYER_OPS) - ops
    expected = {("buffer_update", kind) for kind in BUFFER_UPDATES}
    expected |= {("mutate", fn) for fn in MUTATIONS}
    expected |= {("output_structure", structure) for structure in OUTPUT_STRUCTURES}
    expected |= {("wrong_input", kind) for kind in WRONG_INPUTS}
    assert expected <= variants, expected - variants


def _cases_with(pattern: str, count: int) -> list[tuple[NetSpec, TargetSpec, CallPlan]]:
    """The first `count` small generated cases that use `pattern` (fixed seeds)."""
    cases = []
    for index in range(2000):
        spec, target, plan = generate_case(RandomChooser(f"quick:{index}"), 3, index)
        if pattern in case_patterns(spec, plan):
            cases.append((spec, target, plan))
            if len(cases) == count:
                return cases
    raise AssertionError(f"no generated case uses {pattern}")


def _computes_differently_in_training(spec: NetSpec) -> bool:
    kinds = {layer.op for layer in spec.layers}
    dropout = any(layer.op == "dropout" and layer.params["p"] > 0 for layer in spec.layers)
    return spec.train and ("batch_norm" in kinds or dropout)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_each_user_pattern_matches_eager(pattern: str) -> None:
    # Two cases per pattern, one per schedule: eager's answer (outputs, inputs and buffers
    # after every call), or for a train-mode model that computes differently in training
    # (batch norm, dropout), the refusal that asks for model.eval().
    cases = _cases_with(pattern, 2)
    for (spec, target, plan), schedule in zip(cases, ("layer-by-layer", "fused"), strict=True):
        result = run_case(spec, target, schedule=schedule, plan=plan)
        if _computes_differently_in_training(spec):
            assert result.outcome == "refused", result.message
            assert "model.eval()" in result.message
        else:
            assert result.outcome == "ok", f"{schedule}: {result.outcome}: {result.message}"


@pytest.mark.parametrize("kind", WRONG_INPUTS)
def test_wrong_call_time_inputs_are_refused(kind: str) -> None:
    spec = NetSpec(
        input_shapes=[[2, 6], [2, 6]],
        layers=[Layer("binary", [0, 1], {"fn": "mul"}, [2, 6])],
        outputs=[2],
    )
    result = run_case(spec, TargetSpec(scratchpad_bytes=1 << 16), plan=CallPlan(wrong_input=kind))
    assert result.outcome == "ok", result.message


def test_fused_fallback_is_recorded() -> None:
    conv = NetSpec(
        input_shapes=[[1, 3, 6, 6]],
        layers=[
            Layer(
                "conv",
                [0],
                {
                    "in_channels": 3,
                    "out_channels": 4,
                    "kernel_size": [3, 3],
                    "stride": [1, 1],
                    "padding": [1, 1],
                    "dilation": [1, 1],
                    "groups": 1,
                    "bias": True,
                },
                [1, 4, 6, 6],
            ),
            Layer("unary", [1], {"fn": "relu"}, [1, 4, 6, 6]),
        ],
        outputs=[2],
    )
    # The smallest scratchpad layer by layer fits holds no fusion plan: fused falls back.
    small = run_case(conv, TargetSpec(scratchpad_bytes=64), schedule="fused")
    assert small.ok, small.message
    assert small.fusion_fallback.startswith("fusion fell back to layer by layer: ")
    large = run_case(conv, TargetSpec(scratchpad_bytes=1 << 20), schedule="fused")
    assert large.ok and large.fusion_fallback == ""


def test_random_targets_span_tiny_to_large_scratchpads() -> None:
    sizes = [generate_target(RandomChooser(seed)).scratchpad_bytes for seed in range(200)]
    assert min(sizes) < 256 and max(sizes) > 256 * 1024
    assert all(size % 4 == 0 for size in sizes)


def test_a_tiny_scratchpad_grows_to_the_bytes_the_error_names() -> None:
    spec = NetSpec(
        input_shapes=[[1, 3, 6, 6]],
        layers=[
            Layer(
                "conv",
                [0],
                {
                    "in_channels": 3,
                    "out_channels": 4,
                    "kernel_size": [3, 3],
                    "stride": [1, 1],
                    "padding": [1, 1],
                    "dilation": [1, 1],
                    "groups": 1,
                    "bias": True,
                },
                [1, 4, 6, 6],
            )
        ],
        outputs=[1],
    )
    result = run_case(spec, TargetSpec(scratchpad_bytes=64))
    assert result.ok, result.message
    assert result.capacity_retries >= 1 and result.scratchpad_bytes > 64


def test_reproducer_script_rebuilds_the_case() -> None:
    spec, target, plan = generate_case(RandomChooser("reproducer"), seed=7)
    plan = CallPlan(calls=2, threads=True, wrong_input="meta")
    failure = CaseResult("mismatch", "output 0: max |polyfuse - eager| = 1 > ...", 4096)
    script = reproducer_script(spec, target, failure, "a test", "fused", plan)
    namespace: dict[str, object] = {"__name__": "reproducer"}
    exec(compile(script, "reproducer.py", "exec"), namespace)
    assert namespace["SPEC"] == spec and namespace["TARGET"] == target
    assert namespace["PLAN"] == plan
    assert "class RandomNet" in script and "[scratchpad]" in script


def test_bench_fuzz_writes_the_summary(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_fuzz", REPO / "bench" / "fuzz.py")
    assert spec is not None and spec.loader is not None
    bench_fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_fuzz)
    summary_path, log_path = tmp_path / "fuzz.json", tmp_path / "cases.jsonl"
    arguments = ["--cases", "3", "--seed", "26", "--jobs", "0", "--json", str(summary_path)]
    arguments += ["--log", str(log_path), "--out", str(tmp_path / "failures")]
    arguments += ["--schedule", "fused"]
    status = bench_fuzz.main(arguments)
    summary = json.loads(summary_path.read_text())
    assert summary["cases"] == 3 and len(log_path.read_text().splitlines()) == 3
    assert {"mismatches", "crashes", "invalid", "seconds", "refused", "fallbacks"} <= set(summary)
    failed = summary["mismatches"] + summary["crashes"] + summary["invalid"]
    assert status == (1 if failed else 0)
    assert len(list((tmp_path / "failures").glob("*.py"))) == failed
    logged = [json.loads(line) for line in log_path.read_text().splitlines()]
    fallbacks = [case["fusion_fallback"] for case in logged if case["fusion_fallback"]]
    assert summary["fallbacks"] == len(fallbacks) >= 1  # seed 26 case 0 falls back
    assert sum(summary["fallback_reasons"].values()) == len(fallbacks)
    patterns = {p for case in logged for p in case["patterns"] or ["none"]}
    assert set(summary["patterns"]) == patterns
