#!/usr/bin/env python3
"""Benchmark the classifier's CPU inference per patient (canal finding, crops, network, whole predict) as a table."""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

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
    ap.add_argument("--weights", type=Path, default=None, help="weights folder (default: weights/classifier)")
    ap.add_argument("--patients", type=int, default=4, help="phantom patients rendered (built-in model)")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch CPU thread counts to try")
    args = ap.parse_args(argv)

    from classifier.crops import find_canals, make_level_crops
    from classifier.data import batch_tensors
    from classifier.predict import DEFAULT_WEIGHTS, Classifier
    from detector.boxes import LevelBoxes
    from study.study import Study
    from synth.generate import builtin_specs, render_spec

    clf = Classifier.load(args.weights or DEFAULT_WEIGHTS, device="cpu")
    patients = []
    for spec in builtin_specs(args.patients + 3, 321):
        try:
            r = render_spec(spec, 321)
        except RuntimeError:
            continue
        patients.append((Study(r.labels.patient_id, r.sagittal, r.axial), LevelBoxes.from_patient_boxes(r.boxes)))
        if len(patients) == args.patients:
            break

    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        clf.predict(*patients[0])  # warm-up: allocator, kernel selection
        canal, crops, net, whole = [], [], [], []
        for study, boxes in patients:
            found = find_canals(study)
            c = make_level_crops(study, boxes, clf.cfg, found)
            tensors = batch_tensors([c])
            canal += _time(lambda: find_canals(study), args.repeat)
            crops += _time(lambda: make_level_crops(study, boxes, clf.cfg, found), args.repeat)
            with torch.no_grad():
                net += _time(lambda: clf.model(*tensors), args.repeat)
            whole += _time(lambda: clf.predict(study, boxes), args.repeat)
        batch = [make_level_crops(s, b, clf.cfg) for s, b in patients]
        many = _time(lambda: clf.grade_crops(batch), max(2, args.repeat // 2))
        rows.append((threads, canal, crops, net, whole, [t / len(batch) for t in many]))

    def ms(values):
        return f"{1000 * statistics.median(values):7.1f}"

    print(f"classifier inference, one patient = 16 decisions (11 canal + 5 disc); {len(patients)} phantom patients x "
          f"{args.repeat} runs; median ms; cpu: {torch.backends.cpu.get_cpu_capability()}")
    print(f"| threads | canal finder (11 axial) | crops | network | predict() total | network per patient, {len(patients)} batched |")
    print("| --- | --- | --- | --- | --- | --- |")
    for threads, canal, crops, net, whole, many in rows:
        print(f"| {threads} | {ms(canal)} | {ms(crops)} | {ms(net)} | {ms(whole)} | {ms(many)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
