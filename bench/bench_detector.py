#!/usr/bin/env python3
"""Benchmark the detector's CPU inference: network per slice, and the full predict() per patient, as a table."""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _time(fn, repeat: int) -> list:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--weights", type=Path, default=None, help="weights folder (default: weights/detector)")
    ap.add_argument("--input", type=Path, default=None,
                    help="challenge-layout folder to read patients from (default: render built-in phantoms)")
    ap.add_argument("--patients", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    args = ap.parse_args(argv)

    from detector.predict import Detector
    from study.loader import find_patients, load_study

    if args.threads:
        torch.set_num_threads(args.threads)
    det = Detector.from_weights(args.weights, device="cpu")
    torch.set_num_threads(args.threads or torch.get_num_threads())
    if args.input is None:
        from synth.generate import builtin_specs, generate
        tmp = Path(tempfile.mkdtemp(prefix="bench-detector-"))
        generate(tmp, builtin_specs(args.patients, 123), 123, "bench", workers=1)
        root = tmp
    else:
        root = args.input
    studies = [load_study(p, require_all_axial=False) for p in find_patients(root)[: args.patients]]
    one = studies[0].sagittal_stack()
    det.raw(one)  # warm-up: first call allocates and picks kernels

    rows = []
    t1 = _time(lambda: det.raw(one[:1]), args.repeat * 3)
    rows.append(("network, 1 slice", 1, t1))
    t3 = _time(lambda: det.raw(one), args.repeat * 3)
    rows.append(("network, 3 slices (one patient)", 3, t3))
    tp = _time(lambda: det.predict(studies[0]), args.repeat * 3)
    rows.append(("predict(), one patient (3 slices)", 3, tp))
    tb = _time(lambda: det.predict_batch(studies), args.repeat)
    rows.append((f"predict_batch(), {len(studies)} patients", 3 * len(studies), tb))

    print(f"detector: {det.source}  input {det.config.imgsz}px  classes {len(det.config.names)}  "
          f"torch threads {torch.get_num_threads()}  device cpu")
    print(f"{'what':<36} {'slices':>6} {'median ms':>10} {'ms/slice':>9} {'min ms/slice':>12}")
    for name, n, ts in rows:
        med = statistics.median(ts) * 1000
        print(f"{name:<36} {n:>6} {med:>10.1f} {med / n:>9.1f} {min(ts) * 1000 / n:>12.1f}")
    target = 30.0
    worst = statistics.median(tp) * 1000 / 3
    print(f"target <= {target:.0f} ms per slice (full predict): {'met' if worst <= target else 'NOT met'} "
          f"({worst:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
