"""Fuzz polyfuse end to end with random networks on random targets.

    python bench/fuzz.py --cases 2000 --seed 0 --jobs 2 --json fuzz.json --out bench/fuzz-failures

Case `i` of seed `S` is generated from `random.Random(f"{S}:{i}")` (see
polyfuse.testing.random_nets: a network, a target, a call plan; two networks in three use
user patterns such as shared and tied weights, buffers, in-place updates, structured
outputs, train mode, threads, wrong inputs; --no-patterns makes plain networks only),
compiled, emulated with every DMA rule checked and compared with eager PyTorch
(polyfuse.testing.fuzz.run_case states the checks and tolerances). Cases run in
worker processes, so a segfault or a hang (over --timeout seconds) in one case is recorded
as a crash of that case and the worker restarts. Every failing case is written to --out as
a standalone reproducer script, `case-<seed>-<i>.py`. --json writes
{cases, ok, mismatches, crashes, invalid, refused, fallbacks, seconds, ...}: "refused" counts
clear PolyfuseErrors for networks with user patterns ("refused_reasons" groups them),
"fallbacks" the cases schedule="fused" ran layer by layer ("fallback_reasons" groups the
reasons), "patterns" the outcomes per user pattern; --log appends each case's result as it
finishes; --deadline S starts no case after S seconds (the summary counts the cases
actually run). Exit status 1 if any case failed (a refusal is not a failure).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import queue
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def case_inputs(seed: int, index: int, patterns: bool = True) -> tuple[Any, Any, Any]:
    """The (NetSpec, TargetSpec, CallPlan) of case `index` of `seed`."""
    from polyfuse.testing.random_nets import RandomChooser, generate_case

    return generate_case(RandomChooser(f"{seed}:{index}"), 6, index, patterns)


def worker(sanitize: bool, schedule: str, patterns: bool) -> int:
    """Read `seed index` lines on stdin, answer one JSON line per case on stdout."""
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything the compiler prints goes to stderr, not into the answers
    from polyfuse.testing.fuzz import run_case

    for line in sys.stdin:
        seed, index = (int(word) for word in line.split())
        spec, target, plan = case_inputs(seed, index, patterns)
        result = run_case(spec, target, sanitize, schedule, plan)
        answers.write(json.dumps({"case": index, **vars(result)}) + "\n")
        answers.flush()
    return 0


class Worker:
    """One worker process; restarted after a crash or a timeout."""

    def __init__(self, sanitize: bool, schedule: str, patterns: bool) -> None:
        self.process: subprocess.Popen[str] | None = None
        self.sanitize = sanitize
        self.schedule = schedule
        self.patterns = patterns

    def start(self) -> subprocess.Popen[str]:
        if self.process is None or self.process.poll() is not None:
            env = dict(os.environ)
            python_dir = str(REPO / "python")
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (python_dir, env.get("PYTHONPATH", "")) if p
            )
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    f"--schedule={self.schedule}",
                    *(["--sanitize"] if self.sanitize else []),
                    *([] if self.patterns else ["--no-patterns"]),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=env,
            )
        return self.process

    def run(self, seed: int, index: int, timeout: float) -> dict[str, Any]:
        process = self.start()
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(f"{seed} {index}\n")
            process.stdin.flush()
        except BrokenPipeError:
            return self._died(index)
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        if not ready:
            self.stop()
            return {"case": index, "outcome": "crash", "message": f"timeout after {timeout} s"}
        line = process.stdout.readline()
        if not line:
            return self._died(index)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _died(self, index: int) -> dict[str, Any]:
        assert self.process is not None
        status = self.process.wait()
        return {
            "case": index,
            "outcome": "crash",
            "message": f"the worker process died (exit status {status}: a signal if negative)",
        }

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=100, help="number of random cases")
    parser.add_argument("--seed", type=int, default=0, help="seed of the case sequence")
    parser.add_argument("--first", type=int, default=0, help="index of the first case")
    parser.add_argument(
        "--jobs", type=int, default=1, help="worker processes (0: run in this process)"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per case")
    parser.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="start no case after this many seconds; the summary counts the cases run",
    )
    parser.add_argument("--json", dest="json_path", default=None, help="write a summary here")
    parser.add_argument(
        "--log", default=None, help="append each case's result here as it finishes (JSON lines)"
    )
    parser.add_argument(
        "--out",
        default=str(REPO / "bench" / "fuzz-failures"),
        help="directory for failing cases' reproducer scripts",
    )
    parser.add_argument(
        "--sanitize", action="store_true", help="run the emulator's shadow-memory checks too"
    )
    parser.add_argument(
        "--schedule",
        choices=("layer-by-layer", "fused"),
        default="layer-by-layer",
        help="polyfuse.compile's schedule (fused: fuzz the cross-operator fusion)",
    )
    parser.add_argument(
        "--no-patterns",
        dest="patterns",
        action="store_false",
        help="plain networks only, each called once (no user patterns)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.sanitize, args.schedule, args.patterns)

    sys.path.insert(0, str(REPO / "python"))
    start = time.perf_counter()
    todo: queue.Queue[int] = queue.Queue()
    for index in range(args.first, args.first + args.cases):
        todo.put(index)
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()
    log = open(args.log, "a") if args.log else None  # noqa: SIM115 (closed below)

    def next_case() -> int | None:
        if args.deadline is not None and time.perf_counter() - start > args.deadline:
            return None
        try:
            return todo.get_nowait()
        except queue.Empty:
            return None

    def drain_in_process() -> None:
        from polyfuse.testing.fuzz import run_case

        while (index := next_case()) is not None:
            spec, target, plan = case_inputs(args.seed, index, args.patterns)
            result = run_case(spec, target, args.sanitize, args.schedule, plan)
            record({"case": index, **vars(result)})

    def record(answer: dict[str, Any]) -> None:
        with lock:
            answers.append(answer)
            if log is not None:
                log.write(json.dumps(answer) + "\n")
                log.flush()
            _progress(answer, len(answers), args.cases, start)

    def drain() -> None:
        process = Worker(args.sanitize, args.schedule, args.patterns)
        try:
            while (index := next_case()) is not None:
                record(process.run(args.seed, index, args.timeout))
        finally:
            process.stop()

    if args.jobs == 0:  # no isolation from crashes and hangs: for tests and debugging
        drain_in_process()
    threads = [threading.Thread(target=drain) for _ in range(args.jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    if log is not None:
        log.close()

    answers.sort(key=lambda a: int(a["case"]))
    for answer in answers:  # a dead worker's answer has no patterns
        if "patterns" not in answer:
            answer["patterns"] = _patterns(args.seed, int(answer["case"]), args.patterns)
    failures = [a for a in answers if a["outcome"] not in ("ok", "refused")]
    for answer in failures:
        answer["reproducer"] = _save_reproducer(
            args.seed, answer, Path(args.out), args.schedule, args.patterns
        )
    outcomes = collections.Counter(a["outcome"] for a in answers)
    fallbacks = [a["fusion_fallback"] for a in answers if a.get("fusion_fallback")]
    summary = {
        "cases": len(answers),
        "cases_requested": args.cases,
        "ok": outcomes["ok"],
        "mismatches": outcomes["mismatch"],
        "crashes": outcomes["crash"],
        "invalid": outcomes["invalid"],
        "refused": outcomes["refused"],
        "fallbacks": len(fallbacks),
        "seconds": round(seconds, 1),
        "seed": args.seed,
        "first": args.first,
        "jobs": args.jobs,
        "sanitize": args.sanitize,
        "schedule": args.schedule,
        "patterns_enabled": args.patterns,
        "capacity_retried_cases": sum(1 for a in answers if a.get("capacity_retries", 0)),
        "smallest_scratchpad_bytes": min(
            (a["scratchpad_bytes"] for a in answers if a["outcome"] == "ok"), default=0
        ),
        "max_relative_error": max((a.get("max_error", 0.0) for a in answers), default=0.0),
        "layer_ops": _layer_histogram(args.seed, [int(a["case"]) for a in answers], args.patterns),
        "fallback_reasons": _grouped(fallbacks),
        "refused_reasons": _grouped(
            [_headline(a["message"]) for a in answers if a["outcome"] == "refused"]
        ),
        "patterns": _pattern_outcomes(answers),
        "failures": [
            {k: a[k] for k in ("case", "outcome", "reproducer", "patterns")}
            | {"message": _headline(a["message"])}
            for a in failures
        ],
    }
    print(
        f"{summary['cases']} cases in {summary['seconds']} s: {summary['ok']} ok, "
        f"{summary['mismatches']} mismatches, {summary['crashes']} crashes, "
        f"{summary['invalid']} invalid, {summary['refused']} refused, "
        f"{summary['fallbacks']} fused fallbacks to layer by layer"
    )
    for title, reasons in (
        ("fused fell back to layer by layer", summary["fallback_reasons"]),
        ("refused", summary["refused_reasons"]),
    ):
        if reasons:
            print(f"  {title}:")
            for reason, count in reasons.items():
                print(f"    {count:5d}  {reason}")
    if any(summary["patterns"].values()):
        print("  per pattern (cases: ok / refused / mismatches / crashes / invalid):")
        for pattern, counts in summary["patterns"].items():
            figures = " / ".join(str(counts[k]) for k in _PATTERN_OUTCOMES[1:])
            print(f"    {pattern:22s} {counts['cases']:5d}: {figures}")
    for failure in summary["failures"]:
        print(f"  case {failure['case']}: {failure['outcome']}: {failure['message']}")
        print(f"    reproducer: {failure['reproducer']}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if failures else 0


def _headline(message: str) -> str:
    """The line of a case's message that names the error (its exception, if any)."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    # "KeyError: ...", or "compile: UnsupportedError: ..." (where a refusal came from)
    errors = [
        line for line in lines if re.match(r"^([\w ]+: )?[\w.]+(Error|Trap|Exception): ", line)
    ]
    return (errors or lines or [""])[-1]


def _grouped(reasons: list[str]) -> dict[str, int]:
    """How many times each reason occurs (its first line), numbers and quoted names replaced
    by N and '…' so that one cause is one group; most frequent first."""
    counts: collections.Counter[str] = collections.Counter()
    for reason in reasons:
        text = reason.strip().splitlines()[0] if reason.strip() else ""
        text = text.removeprefix("fusion fell back to layer by layer: ")
        text = re.sub(r"'[^']*'", "'…'", text)
        text = re.sub(r'"[^"]*"', '"…"', text)
        text = re.sub(r"\d+", "N", text)
        counts[text[:200]] += 1
    return dict(counts.most_common())


_PATTERN_OUTCOMES = ("cases", "ok", "refused", "mismatch", "crash", "invalid")


def _pattern_outcomes(answers: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """For each user pattern (and "none"): its cases and their outcomes."""
    table: dict[str, dict[str, int]] = {}
    for answer in answers:
        for pattern in answer["patterns"] or ["none"]:
            row = table.setdefault(pattern, dict.fromkeys(_PATTERN_OUTCOMES, 0))
            row["cases"] += 1
            row[answer["outcome"]] += 1
    return dict(sorted(table.items()))


def _patterns(seed: int, index: int, patterns: bool) -> list[str]:
    from polyfuse.testing.net_spec import case_patterns

    spec, _, plan = case_inputs(seed, index, patterns)
    return case_patterns(spec, plan)


def _progress(answer: dict[str, Any], done: int, total: int, start: float) -> None:
    if answer["outcome"] != "ok":
        print(
            f"case {answer['case']}: {answer['outcome']}: {_headline(answer['message'])}",
            flush=True,
        )
    if done % 50 == 0 or done == total:
        print(f"[{done}/{total}] {time.perf_counter() - start:.0f} s", flush=True)


def _save_reproducer(
    seed: int, answer: dict[str, Any], directory: Path, schedule: str, patterns: bool
) -> str:
    from polyfuse.testing.fuzz import CaseResult, reproducer_script

    spec, target, plan = case_inputs(seed, int(answer["case"]), patterns)
    result = CaseResult(
        answer["outcome"],
        answer["message"],
        scratchpad_bytes=int(answer.get("scratchpad_bytes", target.scratchpad_bytes)),
        patterns=list(answer["patterns"]),
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"case-{seed}-{answer['case']}.py"
    origin = f"bench/fuzz.py --seed {seed} --first {answer['case']} --cases 1 --schedule {schedule}"
    if not patterns:
        origin += " --no-patterns"
    path.write_text(reproducer_script(spec, target, result, origin, schedule, plan))
    return str(path)


def _layer_histogram(seed: int, indices: list[int], patterns: bool) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for index in indices:
        spec, _, _ = case_inputs(seed, index, patterns)
        counts.update(layer.op for layer in spec.layers)
    return dict(sorted(counts.items()))


if __name__ == "__main__":
    sys.exit(main())
