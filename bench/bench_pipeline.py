#!/usr/bin/env python3
"""Benchmark `pipeline.py run` on phantom patients: wall time, cold start, warm latency, peak RSS, per stage."""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Targets from the pipeline issue (2-core CPU, 100 patients).
TARGETS = {"total_s": 30.0, "warm_per_patient_s": 0.2, "peak_rss_gb": 1.5}


def _run(input_dir: Path, out_dir: Path, extra=()) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "pipeline.py"), "run", "--input", str(input_dir),
                    "--out", str(out_dir), *extra], check=False, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def compare(args) -> int:
    """The 100-patient total of several `run` configurations measured in one session, taking turns (so a load
    change on a shared machine falls on all of them), with each one's stage breakdown and its cost against the first."""
    import shlex
    configs = []
    for item in args.compare:
        name, _, extra = item.partition("=")
        configs.append((name, shlex.split(extra)))
    totals = {name: [] for name, _ in configs}
    stages = {name: [] for name, _ in configs}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for r in range(args.repeats):
            for name, extra in configs:
                out = tmp / f"{name}-{r}"
                totals[name].append(_run(args.input, out, ("--batch-size", str(args.batch_size), *extra)))
                stages[name].append(json.loads((out / "run.json").read_text())["stage_seconds"])
    cpu = platform.processor() or platform.machine()
    print(f"side-by-side benchmark: {args.input}, {os.cpu_count()} CPU cores ({cpu}), python "
          f"{platform.python_version()}, batch size {args.batch_size}, {args.repeats} turns")
    base = sorted(totals[configs[0][0]])[len(totals[configs[0][0]]) // 2]
    print(f"{'configuration':<16}{'total runs (s)':<28}{'median':>8}{'vs ' + configs[0][0]:>14}"
          f"{'classifier (s, median)':>24}")
    for name, _ in configs:
        med = sorted(totals[name])[len(totals[name]) // 2]
        clf = sorted(s.get("classifier", 0.0) for s in stages[name])[len(stages[name]) // 2]
        runs = ", ".join(f"{v:.1f}" for v in totals[name])
        print(f"{name:<16}{runs:<28}{med:>8.1f}{100 * (med / base - 1):>+13.0f}%{clf:>24.2f}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--patients", type=int, default=100)
    ap.add_argument("--input", type=Path, default=None, help="challenge-layout folder (default: render phantoms)")
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--compare", action="append", default=[], metavar="NAME=ARGS",
                    help="Side by side instead: time `run` with each NAME's extra arguments (e.g. 'ensemble=--weights "
                         "W' or 'tta=--tta'), the configurations taking turns, --repeats times each; repeatable.")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if args.compare:
        if args.input is None:
            ap.error("--compare needs --input (the same folder for every configuration)")
        return compare(args)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = args.input
        if data is None:
            from synth.generate import builtin_specs, generate
            data = tmp / "phantoms"
            generate(data, builtin_specs(args.patients, args.seed), args.seed, "benchmark",
                     workers=os.cpu_count() or 1)
        one = tmp / "one"
        one.mkdir()
        first = sorted(p for p in data.iterdir() if p.is_dir())[0]
        os.symlink(first, one / first.name)

        total = _run(data, tmp / "out", ("--batch-size", str(args.batch_size)))
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2
        cold = _run(one, tmp / "out1")
        stages = json.loads((tmp / "out" / "run.json").read_text())["stage_seconds"]
        n = json.loads((tmp / "out" / "run.json").read_text())["patients"]
    warm = (stages["total"] - stages.get("model load", 0.0)) / n
    cpu = platform.processor() or platform.machine()
    print(f"pipeline benchmark: {n} phantom patients, {os.cpu_count()} CPU cores ({cpu}), "
          f"python {platform.python_version()}, batch size {args.batch_size}")
    print(f"{'measure':<34}{'value':>10}  {'target':>8}")
    rows = [("total wall time incl. start (s)", total, TARGETS["total_s"]),
            ("cold start, 1 patient (s)", cold, None),
            ("warm latency per patient (s)", warm, TARGETS["warm_per_patient_s"]),
            ("peak RSS (GB)", peak_gb, TARGETS["peak_rss_gb"])]
    for name, v, target in rows:
        mark = "" if target is None else ("  ok" if v <= target else "  MISSED")
        print(f"{name:<34}{v:>10.3f}  {'' if target is None else f'<= {target:g}':>8}{mark}")
    print("stage breakdown (s, inside the run):")
    for k, v in stages.items():
        print(f"  {k:<32}{v:>10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
