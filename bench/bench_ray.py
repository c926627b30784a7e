#!/usr/bin/env python3
"""Benchmark `run --engine ray` against a local run on one input folder: wall time of each run as a new process
(Python start, Ray start, model loads included), patients per second, the workers' busy seconds per patient
(summed stage seconds from run.json) and whether predictions.json and reports/ equal the local run's at the
same thread count. Prints a Markdown table.

    python bench/bench_ray.py --input /tmp/bench100 [--workers 1 2] [--repeat 1]
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(input_dir: Path, out_dir: Path, extra=(), env=None) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "pipeline.py"), "run", "--input", str(input_dir), "--out",
                    str(out_dir), *extra], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, **(env or {})}, cwd=ROOT)
    return time.perf_counter() - t


def same_outputs(a: Path, b: Path) -> bool:
    """predictions.json and every reports/*.json byte-identical."""
    if not filecmp.cmp(a / "predictions.json", b / "predictions.json", shallow=False):
        return False
    names = sorted(p.name for p in (a / "reports").glob("*.json"))
    if names != sorted(p.name for p in (b / "reports").glob("*.json")):
        return False
    return all(filecmp.cmp(a / "reports" / n, b / "reports" / n, shallow=False) for n in names)


def busy_seconds(run_json: Path) -> float:
    """Seconds spent in the reading stages (load, detector, matching, classifier, fusion, outputs), summed over
    workers; model loading and start-up excluded."""
    stages = json.loads(run_json.read_text())["stage_seconds"]
    return sum(v for k, v in stages.items() if k != "total" and not k.startswith("model load"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--input", type=Path, required=True, help="input folder (e.g. pipeline.py synth --n 100 --seed 7)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bs = ("--batch-size", str(args.batch_size))
        runs = [("local", "local", bs, None), ("local, 1 thread (OMP_NUM_THREADS=1)", "local1", bs,
                                               {"OMP_NUM_THREADS": "1"})]
        runs += [(f"ray, {w} worker{'s' if w > 1 else ''} x 1 CPU", f"ray{w}",
                  ("--engine", "ray", "--workers", str(w), *bs), None) for w in args.workers]
        for label, name, extra, env in runs:
            wall = _run(args.input, tmp / name, extra, env)
            info = json.loads((tmp / name / "run.json").read_text())
            rows.append((label, name, wall, info["patients"], busy_seconds(tmp / name / "run.json")))
        reference = tmp / "local1"
        print(f"{len(os.sched_getaffinity(0))} CPUs available ({platform.processor() or platform.machine()}), "
              f"python {platform.python_version()}, batch size {args.batch_size}; load average before "
              f"{load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
        print("| run | wall time (s) | patients/s | busy s per patient (summed over workers) | "
              "same predictions.json + reports/ as local 1 thread |")
        print("|---|---|---|---|---|")
        for label, name, wall, n, busy in rows:
            same = "-" if name == "local1" else ("yes" if same_outputs(reference, tmp / name) else "no")
            print(f"| {label} | {wall:.1f} | {n / wall:.2f} | {busy / n:.3f} | {same} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
