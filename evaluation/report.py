"""`pipeline.py evaluate`: score a prediction file, print the tables, write metrics.json and confusion PNGs."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, TextIO

from common.files import atomic_write, write_json_atomic
from study.challenge import read_labels
from study.errors import LabelFileError

from .metrics import MACRO_CLASS_SET, MISSING, ScoreReport, TaskResult, challenge_score

# How many missing/extra ids the console lists; metrics.json always has them all.
_MAX_IDS_SHOWN = 10
METRICS_FILE = "metrics.json"


def confusion_png_name(task: str) -> str:
    return f"confusion_{task}.png"


# ----------------------------------------------------------------------------------------------
# Text tables
# ----------------------------------------------------------------------------------------------

def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> List[str]:
    """Text columns left-aligned, number columns right-aligned; floats with 4 decimals."""
    rows = [list(r) for r in rows]
    numeric = [all(isinstance(r[i], (int, float)) for r in rows) for i in range(len(header))]
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w)
                         for c, w, num in zip(row, widths, numeric)).rstrip()

    return [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells]


def _id_list(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_MAX_IDS_SHOWN])
    return shown + (f", ... ({len(ids) - _MAX_IDS_SHOWN} more)" if len(ids) > _MAX_IDS_SHOWN else "")


def _confusion_lines(t: TaskResult) -> List[str]:
    # Columns by index only: the canal class names would make the table too wide to read.
    header = ["truth \\ predicted"] + [str(i) for i in range(len(t.class_names))]
    with_missing = any(t.unpredicted)
    if with_missing:
        header.append("no prediction")
    rows = []
    for i, row in enumerate(t.confusion):
        r = [f"{i} {t.class_names[i]}", *row]
        if with_missing:
            r.append(t.unpredicted[i])
        rows.append(r)
    return _table(header, rows)


def format_report(report: ScoreReport) -> List[str]:
    """The console report, one string per line, ending with the `score: 0.XXXX` line."""
    lines: List[str] = [f"patients scored: {report.n_patients}   macro-F1 classes: {report.macro_class_set}"]
    if report.missing_ids:
        lines.append(f"missing predictions: {len(report.missing_ids)} patient(s), scored as wrong "
                     f"on every item: {_id_list(report.missing_ids)}")
    if report.extra_ids:
        lines.append(f"predictions for unknown ids: {len(report.extra_ids)}, ignored: {_id_list(report.extra_ids)}")

    lines += ["", "Challenge score by task"]
    lines += _table(["task", "metric", "value", "weight", "weighted", "macro-F1", "accuracy", "items"],
                    [[t.task, t.metric, t.value, t.weight, t.weight * t.value, t.macro_f1,
                      t.accuracy, t.n_items] for t in report.tasks])

    for title, levels in (("Disc grade by level", report.disc_levels),
                          ("Canal grade by position", report.canal_levels)):
        lines += ["", title]
        lines += _table(["level", "macro-F1", "accuracy", "n"],
                        [[lv.level, lv.macro_f1, lv.accuracy, lv.n_items] for lv in levels])

    for t in report.tasks:
        lines += ["", f"{t.task}: per class, one-vs-rest"]
        lines += _table(["class", "support", "accuracy", "sensitivity", "specificity", "PPV", "NPV", "F1"],
                        [[f"{c.class_index} {c.name}", c.support, c.accuracy, c.sensitivity, c.specificity,
                          c.ppv, c.npv, c.f1] for c in t.per_class])
        lines += ["", f"{t.task}: confusion matrix"]
        lines += _confusion_lines(t)

    lines += ["", f"score: {report.score:.4f}"]
    return lines


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------

def save_confusion_png(task: TaskResult, path: Path) -> None:
    """Confusion matrix heat map with class names on the axes and counts in the cells, written atomically."""
    # Figure + its own Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    import numpy as np

    cm = np.array(task.confusion, dtype=np.int64)
    col_names = list(task.class_names)
    if any(task.unpredicted):
        cm = np.column_stack([cm, np.array(task.unpredicted, dtype=np.int64)])
        col_names.append("(no prediction)")
    n_rows, n_cols = cm.shape
    fig = Figure(figsize=(1.6 * n_cols + 2.5, 1.2 * n_rows + 2.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(int(cm.max()), 1))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n_cols))
    ax.set_xticklabels(col_names, rotation=30, ha="right")
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels(task.class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    ax.set_title(f"{task.task}: {task.metric} = {task.value:.4f}")
    threshold = cm.max() / 2.0
    for i in range(n_rows):
        for j in range(n_cols):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > threshold else "black")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def write_outputs(report: ScoreReport, out_dir: Path, labels_file: Path, pred_file: Path) -> List[Path]:
    """metrics.json and one confusion PNG per task under out_dir; returns the paths written."""
    out_dir = Path(out_dir)
    written: List[Path] = []
    for t in report.tasks:
        p = out_dir / confusion_png_name(t.task)
        save_confusion_png(t, p)
        written.append(p)
    data = {
        "labels_file": str(labels_file),
        "pred_file": str(pred_file),
        "conventions": {
            "macro_class_set": MACRO_CLASS_SET,
            "zero_division": 0,
            "missing_prediction_value": MISSING,
            "missing_patients": "scored as wrong on every item (false negatives); never dropped",
            "extra_patients": "ignored",
        },
        **report.to_dict(),
    }
    # Written last so that its presence means the whole set is complete.
    metrics_path = out_dir / METRICS_FILE
    write_json_atomic(metrics_path, data)
    written.append(metrics_path)
    return written


# ----------------------------------------------------------------------------------------------
# Command
# ----------------------------------------------------------------------------------------------

def _read(path: Path, role: str, err: TextIO):
    try:
        rows = read_labels(path)
    except LabelFileError as e:
        where = f" (patient {e.patient})" if e.patient else ""
        print(f"error: {role} file {path}: {e.problem}{where}", file=err)
        return None
    return rows


def evaluate_command(labels_file: Path, pred_file: Path, out_dir: Optional[Path] = None,
                     out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    """Score pred_file against labels_file; exit status 0, or 2 for an unusable file or output folder."""
    out = out or sys.stdout
    err = err or sys.stderr
    truth = _read(Path(labels_file), "labels", err)
    if truth is None:
        return 2
    pred = _read(Path(pred_file), "predictions", err)
    if pred is None:
        return 2
    if not truth:
        print(f"error: labels file {labels_file}: contains no patients", file=err)
        return 2

    report = challenge_score(truth, pred)
    if report.missing_ids:
        print(f"warning: {len(report.missing_ids)} patient(s) of {labels_file} have no prediction in "
              f"{pred_file}; scored as wrong", file=err)
    if report.extra_ids:
        print(f"warning: {len(report.extra_ids)} prediction(s) for ids not in {labels_file}; ignored", file=err)

    lines = format_report(report)
    if out_dir is not None:
        try:
            written = write_outputs(report, Path(out_dir), Path(labels_file), Path(pred_file))
        except OSError as e:
            print(f"error: cannot write results to {out_dir}: {e}", file=err)
            return 2
        # Keep `score:` the last line: the file list goes before it.
        lines = lines[:-1] + ["wrote: " + ", ".join(str(p) for p in written)] + lines[-1:]
    out.write("\n".join(lines) + "\n")
    out.flush()
    return 0
