"""`evaluate --reports RUN_DIR --labels FILE`: results analysis for a technical report, from a run's probabilities.

From every reports/{id}.json of a `run` folder (the probabilities of each task) and the known labels:
- ROC curves and AUC per task and per class (one class against the rest; disc grades pooled over the 5 discs
  and canal grades over the 11 positions, as the challenge pools them), with a macro AUC per task;
- reliability (calibration) plots: the confidence of the most probable class against how often it is right,
  in 10 equal-width bins, with the expected calibration error (ECE);
- 95 % bootstrap intervals (patients resampled, 1000 times): the challenge score and its four parts from the
  run's predictions.json (evaluation.metrics.bootstrap_tasks), and every AUC;
- roc_{task}.png, reliability_{task}.png, analysis.json and analysis.md, a summary to paste into a report.

A position outside the field of view has no probabilities (its report says not_graded) and is left out of
the curves (counted in the summary); the challenge score counts it with the grade `run` submitted.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, TextIO, Tuple

import numpy as np

from common.files import atomic_write, write_json_atomic
from study.challenge import PatientLabels, read_labels
from study.errors import LabelFileError
from study.levels import (ALIGNMENT_CLASSES, ALIGNMENT_SCORED_CLASS, CANAL_GRADES, CANAL_POSITIONS, CURVATURE_CLASSES,
                          DISC_GRADES, DISCS)

from .metrics import bootstrap_tasks, challenge_score

TASKS = ("curvature", "alignment", "disc", "canal")
CLASSES = {"curvature": CURVATURE_CLASSES, "alignment": ALIGNMENT_CLASSES, "disc": DISC_GRADES, "canal": CANAL_GRADES}
N_BINS = 10
N_RESAMPLES = 1000
SUMMARY_FILE, JSON_FILE = "analysis.md", "analysis.json"


@dataclass(frozen=True)
class TaskProbabilities:
    """One task's items: probabilities (n, C), true class (n,), the patient index of each item (n,)."""

    task: str
    probs: np.ndarray
    truth: np.ndarray
    patient: np.ndarray
    left_out: int            # items without probabilities (positions outside the field of view)


def roc_curve(y01: np.ndarray, score: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold, from (0, 0) to (1, 1)."""
    order = np.argsort(-score, kind="mergesort")
    s, y = score[order], y01[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp, fp = np.cumsum(y)[distinct], np.cumsum(1 - y)[distinct]
    P, N = max(int(y.sum()), 1), max(int(len(y) - y.sum()), 1)
    return np.r_[0.0, fp / N], np.r_[0.0, tp / P]


def auc(y01: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (ties count half): the chance a random positive scores above a random negative;
    nan where the items hold no positive or no negative."""
    y01 = np.asarray(y01, int)
    n_pos = int(y01.sum())
    n_neg = len(y01) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata
    ranks = rankdata(score)
    return float((ranks[y01 == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def reliability(probs: np.ndarray, truth: np.ndarray, n_bins: int = N_BINS) -> Dict[str, object]:
    """Top-label calibration: per confidence bin, the mean confidence, the accuracy and the count; the ECE."""
    conf = probs.max(axis=1)
    right = (probs.argmax(axis=1) == truth).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    bins = []
    ece = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(m.sum()),
                         "confidence": float(conf[m].mean()), "accuracy": float(right[m].mean())})
            ece += m.mean() * abs(conf[m].mean() - right[m].mean())
    return {"bins": bins, "ece": float(ece), "n": int(len(conf))}


def read_reports(run_dir: Path, truth: Sequence[PatientLabels]) -> Tuple[Dict[str, TaskProbabilities], List[str]]:
    """The probabilities of every labelled patient with a report, per task; and the labelled ids without one."""
    reports = Path(run_dir) / "reports"
    if not reports.is_dir():
        raise FileNotFoundError(f"{run_dir} holds no reports/ folder (a `pipeline.py run --out` folder is needed)")
    rows: Dict[str, List[Tuple[List[float], int, int]]] = {t: [] for t in TASKS}
    left_out = {t: 0 for t in TASKS}
    missing: List[str] = []
    for k, lab in enumerate(truth):
        path = reports / f"{lab.patient_id}.json"
        if not path.is_file():
            missing.append(lab.patient_id)
            continue
        rep = json.loads(path.read_text(encoding="utf-8"))
        rows["curvature"].append((rep["curvature"]["probabilities"], lab.curvature, k))
        rows["alignment"].append((rep["alignment"]["probabilities"], lab.alignment, k))
        for task, names, grades in (("disc", DISCS, lab.disc_grades), ("canal", CANAL_POSITIONS, lab.canal_grades)):
            for name, g in zip(names, grades):
                p = rep[task][name].get("probabilities")
                if p is None:
                    left_out[task] += 1
                else:
                    rows[task].append((p, g, k))
    out = {}
    for t in TASKS:
        r = rows[t]
        n_cls = len(CLASSES[t])
        probs = np.array([x[0] for x in r], float).reshape(-1, n_cls)
        out[t] = TaskProbabilities(t, probs, np.array([x[1] for x in r], int), np.array([x[2] for x in r], int),
                                   left_out[t])
    return out, missing


def _auc_table(tp: TaskProbabilities, n_patients: int, rng: np.random.Generator) -> Dict[str, object]:
    """AUC per class (one against the rest) and their mean, each with a patient-bootstrap 95 % interval."""
    n_cls = len(CLASSES[tp.task])
    classes = [c for c in range(n_cls) if not (tp.task == "alignment" and c != ALIGNMENT_SCORED_CLASS)]
    point = {c: auc(tp.truth == c, tp.probs[:, c]) for c in classes}
    by_patient = [np.nonzero(tp.patient == k)[0] for k in range(n_patients)]
    draws = {c: [] for c in classes}
    macro_draws = []
    for _ in range(N_RESAMPLES):
        pick = rng.integers(0, n_patients, n_patients)
        items = np.concatenate([by_patient[k] for k in pick]) if n_patients else np.array([], int)
        vals = []
        for c in classes:
            v = auc(tp.truth[items] == c, tp.probs[items, c])
            draws[c].append(v)
            if np.isfinite(point[c]):
                vals.append(v)
        macro_draws.append(np.nanmean(vals) if vals and np.isfinite(vals).any() else np.nan)

    def interval(v) -> Optional[List[float]]:
        v = np.asarray(v, float)
        v = v[np.isfinite(v)]
        return [round(float(x), 4) for x in np.percentile(v, [2.5, 97.5])] if len(v) else None
    finite = [point[c] for c in classes if np.isfinite(point[c])]
    return {"per_class": {CLASSES[tp.task][c]: {"auc": None if not np.isfinite(point[c]) else round(point[c], 4),
                                                "interval_95": interval(draws[c]) if np.isfinite(point[c]) else None,
                                                "positives": int((tp.truth == c).sum())} for c in classes},
            "macro_auc": round(float(np.mean(finite)), 4) if finite else None,
            "macro_interval_95": interval(macro_draws) if finite else None}


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def save_roc_png(tp: TaskProbabilities, table: Dict[str, object], path: Path, data_name: str) -> None:
    fig = _figure(5.6, 5.2)
    ax = fig.add_subplot(1, 1, 1)
    for name, row in table["per_class"].items():
        c = CLASSES[tp.task].index(name)
        if row["auc"] is None:
            continue
        fpr, tpr = roc_curve((tp.truth == c).astype(int), tp.probs[:, c])
        lo, hi = row["interval_95"]
        ax.plot(fpr, tpr, lw=1.6, label=f"{name} (n={row['positives']}): AUC {row['auc']:.3f} [{lo:.3f}-{hi:.3f}]")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    unit = {"disc": "disc levels", "canal": "canal positions"}.get(tp.task, "patients")
    ax.set_title(f"ROC, {tp.task} ({len(tp.truth)} {unit}), one class vs rest\n{data_name}", fontsize=9)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def save_reliability_png(tp: TaskProbabilities, rel: Dict[str, object], path: Path, data_name: str) -> None:
    fig = _figure(5.6, 6.0)
    ax = fig.add_axes([0.13, 0.36, 0.82, 0.54])
    hist = fig.add_axes([0.13, 0.08, 0.82, 0.18])
    centres = [(b["lo"] + b["hi"]) / 2 for b in rel["bins"]]
    ax.bar(centres, [b["accuracy"] for b in rel["bins"]], width=1.0 / N_BINS, edgecolor="black", alpha=0.6,
           label="accuracy in bin")
    ax.plot([b["confidence"] for b in rel["bins"]], [b["accuracy"] for b in rel["bins"]], "o-", c="C3", ms=4,
            label="mean confidence vs accuracy")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_ylabel("accuracy of the most probable class")
    ax.set_title(f"Reliability, {tp.task}: ECE {rel['ece']:.3f} ({rel['n']} items)\n{data_name}", fontsize=9)
    ax.legend(loc="upper left", fontsize=7)
    hist.bar(centres, [b["n"] for b in rel["bins"]], width=1.0 / N_BINS, edgecolor="black", color="C0")
    hist.set_xlim(0, 1)
    hist.set_yscale("log")
    hist.set_xlabel("confidence (probability of the most probable class)")
    hist.set_ylabel("items")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def analyse(labels_file: Path, run_dir: Path, out_dir: Path, data_name: str = "") -> Dict[str, object]:
    """Write the PNGs, analysis.json and analysis.md into out_dir; returns what analysis.json holds."""
    truth = read_labels(labels_file)
    if not truth:
        raise ValueError(f"{labels_file} holds no patients")
    probs, no_report = read_reports(run_dir, truth)
    pred_file = Path(run_dir) / "predictions.json"
    pred = read_labels(pred_file) if pred_file.is_file() else []
    data_name = data_name or _describe(run_dir, labels_file)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = challenge_score(truth, pred)
    ci = bootstrap_tasks(truth, pred, N_RESAMPLES)
    result: Dict[str, object] = {
        "data": data_name, "labels_file": str(labels_file), "run_dir": str(run_dir), "n_patients": len(truth),
        "patients_without_report": no_report, "bootstrap_resamples": N_RESAMPLES,
        "score": {"value": round(rep.score, 4), "interval_95": [round(v, 4) for v in ci["score"]]},
        "tasks": {}}
    rng = np.random.default_rng(0)
    for t in TASKS:
        tp = probs[t]
        table = _auc_table(tp, len(truth), rng)
        rel = reliability(tp.probs, tp.truth)
        task = rep.task(t)
        result["tasks"][t] = {"metric": task.metric, "value": round(task.value, 4),
                              "interval_95": [round(v, 4) for v in ci[t]], "items": int(len(tp.truth)),
                              "left_out_not_graded": tp.left_out, "auc": table, "reliability": rel,
                              "roc_png": f"roc_{t}.png", "reliability_png": f"reliability_{t}.png"}
        save_roc_png(tp, table, out_dir / f"roc_{t}.png", data_name)
        save_reliability_png(tp, rel, out_dir / f"reliability_{t}.png", data_name)
    write_json_atomic(out_dir / JSON_FILE, result)
    atomic_write(out_dir / SUMMARY_FILE, lambda tmp: Path(tmp).write_text(markdown(result), encoding="utf-8"))
    return result


def _describe(run_dir: Path, labels_file: Path) -> str:
    try:
        info = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))
        src = info.get("input") or info.get("input_dir")
    except (OSError, ValueError):
        src = None
    return f"run {Path(run_dir).name}" + (f" on {src}" if src else "") + f", labels {Path(labels_file).name}"


def _ci(v: Optional[Sequence[float]]) -> str:
    return f"{v[0]:.3f}-{v[1]:.3f}" if v else "n/a"


def markdown(result: Dict[str, object]) -> str:
    """The summary a team pastes into its technical report (figures, intervals, PNG links)."""
    s = result["score"]
    lines = [f"## Results analysis: {result['data']}", "",
             f"{result['n_patients']} patients; 95 % intervals from {result['bootstrap_resamples']} bootstrap "
             "resamples of the patients (how far another draw of as many such patients could move a figure).",
             "", f"**Challenge score {s['value']:.3f}** (95 % interval {_ci(s['interval_95'])}).", "",
             "| task | metric | value | 95 % interval | macro AUC (one vs rest) | 95 % interval | ECE |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for t, r in result["tasks"].items():
        a = r["auc"]
        lines.append(f"| {t} | {r['metric']} | {r['value']:.3f} | {_ci(r['interval_95'])} | "
                     f"{'n/a' if a['macro_auc'] is None else format(a['macro_auc'], '.3f')} | "
                     f"{_ci(a['macro_interval_95'])} | {r['reliability']['ece']:.3f} |")
    lines += ["", "AUC per class (one class against the rest; disc grades pooled over the 5 discs, canal grades "
              "over the 11 positions):", "", "| task | class | positives | AUC | 95 % interval |",
              "| --- | --- | --- | --- | --- |"]
    for t, r in result["tasks"].items():
        for name, row in r["auc"]["per_class"].items():
            val = "n/a (no positives or no negatives)" if row["auc"] is None else f"{row['auc']:.3f}"
            lines.append(f"| {t} | {name} | {row['positives']} | {val} | {_ci(row['interval_95'])} |")
    left = {t: r["left_out_not_graded"] for t, r in result["tasks"].items() if r["left_out_not_graded"]}
    if left:
        lines += ["", "Positions outside the field of view have no probabilities and are left out of the curves: " +
                  ", ".join(f"{t} {n}" for t, n in left.items()) + "."]
    if result["patients_without_report"]:
        lines += ["", f"{len(result['patients_without_report'])} labelled patient(s) have no report (not read): "
                  "left out of the curves, scored as wrong in the challenge score."]
    lines += ["", "ECE: expected calibration error of the most probable class (10 equal-width confidence bins).", ""]
    for t, r in result["tasks"].items():
        lines.append(f"![ROC {t}]({r['roc_png']}) ![reliability {t}]({r['reliability_png']})")
    return "\n".join(lines) + "\n"


def analysis_command(labels_file: Path, run_dir: Path, out_dir: Path, out: Optional[TextIO] = None,
                     err: Optional[TextIO] = None) -> int:
    """`evaluate --reports`: exit 0, or 2 for an unusable label file or run folder."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        result = analyse(Path(labels_file), Path(run_dir), Path(out_dir))
    except (LabelFileError, FileNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=err)
        return 2
    for t, r in result["tasks"].items():
        a = r["auc"]
        print(f"{t:<10} {r['metric']}: {r['value']:.4f} [{_ci(r['interval_95'])}]  macro AUC "
              f"{'n/a' if a['macro_auc'] is None else format(a['macro_auc'], '.4f')} [{_ci(a['macro_interval_95'])}]  "
              f"ECE {r['reliability']['ece']:.4f}", file=out)
    print(f"wrote {Path(out_dir) / SUMMARY_FILE}, {Path(out_dir) / JSON_FILE} and 8 PNGs", file=out)
    print(f"score: {result['score']['value']:.4f} [{_ci(result['score']['interval_95'])}]", file=out)
    return 0
