"""The CervAI challenge score and its parts (confusion, per-class F1, macro-F1, PKU tables), numpy only."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from study.challenge import PatientLabels
from study.levels import (
    ALIGNMENT_CLASSES, ALIGNMENT_SCORED_CLASS, CANAL_GRADES, CANAL_POSITIONS, CURVATURE_CLASSES,
    DISC_GRADES, DISCS,
)

# The class set every macro-F1 here averages over. "union": the classes present in the truth or the
# prediction, i.e. sklearn f1_score(average="macro", labels=None), the natural reading of the
# challenge; "all": every schema class (sklearn labels=range(n)). Undefined ratios score 0
# (zero_division=0) under both.
MACRO_CLASS_SET = "union"
_CLASS_SETS = ("union", "all")

# The prediction of every item of a truth patient absent from the prediction file. It matches no
# class: a false negative for the true class (lowers its recall), a true negative for the others,
# and never itself a class of a macro average. Such patients are listed, never dropped, because
# dropping them would reward a submission for skipping hard cases.
MISSING = -1

# Challenge weights of the four task scores.
TASK_WEIGHTS: Dict[str, float] = {"curvature": 0.2, "alignment": 0.2, "disc": 0.3, "canal": 0.3}
TASK_CLASSES: Dict[str, Tuple[str, ...]] = {
    "curvature": CURVATURE_CLASSES, "alignment": ALIGNMENT_CLASSES,
    "disc": DISC_GRADES, "canal": CANAL_GRADES,
}
TASK_METRIC: Dict[str, str] = {
    "curvature": "macro-F1",
    "alignment": f"F1 of class {ALIGNMENT_SCORED_CLASS} ({ALIGNMENT_CLASSES[ALIGNMENT_SCORED_CLASS]})",
    "disc": f"macro-F1 pooled over {len(DISCS)} disc levels",
    "canal": f"macro-F1 pooled over {len(CANAL_POSITIONS)} canal positions",
}


# ----------------------------------------------------------------------------------------------
# Elementary metrics
# ----------------------------------------------------------------------------------------------

def _as_labels(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    if t.size and (t.min() < 0 or t.max() >= n_classes):
        raise ValueError(f"y_true values must lie in 0..{n_classes - 1}")
    if p.size and (((p < 0) & (p != MISSING)) | (p >= n_classes)).any():
        raise ValueError(f"y_pred values must lie in 0..{n_classes - 1} or be MISSING ({MISSING})")
    return t, p


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """Counts [true class, predicted class], shape (n_classes, n_classes); MISSING predictions are not in it."""
    t, p = _as_labels(y_true, y_pred, n_classes)
    keep = p != MISSING
    return np.bincount(t[keep] * n_classes + p[keep], minlength=n_classes * n_classes).astype(np.int64).reshape(
        n_classes, n_classes)


def unpredicted_counts(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """Per true class, how many items were predicted MISSING (the column the confusion matrix lacks)."""
    t, p = _as_labels(y_true, y_pred, n_classes)
    return np.bincount(t[p == MISSING], minlength=n_classes).astype(np.int64)


def _one_vs_rest(y_true, y_pred, n_classes: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """tp, fp, fn, tn per class; a MISSING prediction is a negative for every class."""
    t, p = _as_labels(y_true, y_pred, n_classes)
    cm = confusion_matrix(t, p, n_classes)
    support = np.bincount(t, minlength=n_classes)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = support - tp  # includes the MISSING predictions of each true class
    tn = t.size - tp - fp - fn
    return tp, fp, fn, tn


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # zero_division=0: an undefined ratio (0/0) scores 0, as in sklearn with zero_division=0.
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def precision_recall_f1(y_true: Sequence[int], y_pred: Sequence[int],
                        n_classes: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 (arrays of length n_classes), zero_division=0."""
    tp, fp, fn, _ = _one_vs_rest(y_true, y_pred, n_classes)
    # F1 = 2tp / (2tp + fp + fn): equal to 2PR/(P+R) and defined (0) whenever P or R is.
    return _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn)


def f1_per_class(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """F1 of each class 0..n_classes-1 (one-vs-rest), zero_division=0."""
    return precision_recall_f1(y_true, y_pred, n_classes)[2]


def macro_classes(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int,
                  class_set: str = MACRO_CLASS_SET) -> Tuple[int, ...]:
    """The classes a macro average runs over under `class_set` (MISSING is never one)."""
    if class_set not in _CLASS_SETS:
        raise ValueError(f"class_set must be one of {_CLASS_SETS}, got {class_set!r}")
    if class_set == "all":
        return tuple(range(n_classes))
    t, p = _as_labels(y_true, y_pred, n_classes)
    present = np.union1d(t, p[p != MISSING])
    return tuple(int(c) for c in present)


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int,
             class_set: str = MACRO_CLASS_SET) -> float:
    """Unweighted mean of per-class F1 (zero_division=0) over macro_classes(..., class_set).

    The default MACRO_CLASS_SET="union" averages over the classes present in y_true or y_pred,
    exactly sklearn's f1_score(average="macro"); MISSING predictions are never a class. 0.0 when
    there are no classes (no items). The one macro-F1 of the project: the fusion and classifier decision
    rules are tuned with it too, so it is computed in one pass (they call it thousands of times).
    """
    if class_set not in _CLASS_SETS:
        raise ValueError(f"class_set must be one of {_CLASS_SETS}, got {class_set!r}")
    t, p = _as_labels(y_true, y_pred, n_classes)
    keep = p != MISSING
    cm = np.bincount(t[keep] * n_classes + p[keep], minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    support = np.bincount(t, minlength=n_classes)
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    f1 = _ratio(2 * tp, predicted + support)   # 2tp / (2tp + fp + fn)
    present = np.ones(n_classes, bool) if class_set == "all" else (support > 0) | (predicted > 0)
    if not present.any():
        return 0.0
    return float(f1[present].mean())


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Fraction of exact matches (MISSING never matches); 0.0 for no items."""
    t = np.asarray(y_true).ravel()
    p = np.asarray(y_pred).ravel()
    return float((t == p).mean()) if t.size else 0.0


# ----------------------------------------------------------------------------------------------
# Report structures
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassStats:
    """PKU-style one-vs-rest statistics of one class."""

    class_index: int
    name: str
    support: int       # items whose truth is this class
    tp: int
    fp: int
    fn: int
    tn: int
    accuracy: float     # (tp + tn) / all items
    sensitivity: float  # recall, tp / (tp + fn)
    specificity: float  # tn / (tn + fp)
    ppv: float          # precision, tp / (tp + fp)
    npv: float          # tn / (tn + fn)
    f1: float


@dataclass(frozen=True)
class TaskResult:
    """One task (curvature, alignment, disc, canal): its score component and the tables behind it."""

    task: str
    class_names: Tuple[str, ...]
    metric: str                     # what `value` is, in words
    weight: float
    value: float                    # the task's contribution before weighting
    macro_f1: float                 # under MACRO_CLASS_SET (equals value except for alignment)
    macro_classes: Tuple[int, ...]  # the classes macro_f1 averaged over
    accuracy: float
    n_items: int
    confusion: Tuple[Tuple[int, ...], ...]  # [true][predicted], MISSING predictions excluded
    unpredicted: Tuple[int, ...]            # per true class, items of missing patients
    per_class: Tuple[ClassStats, ...]


@dataclass(frozen=True)
class LevelResult:
    """Macro-F1 and accuracy of one disc level or canal position."""

    level: str
    macro_f1: float
    accuracy: float
    n_items: int


@dataclass(frozen=True)
class ScoreReport:
    """The challenge score with everything needed to explain it."""

    score: float
    tasks: Tuple[TaskResult, ...]  # in TASK_WEIGHTS order
    disc_levels: Tuple[LevelResult, ...]   # one per DISCS
    canal_levels: Tuple[LevelResult, ...]  # one per CANAL_POSITIONS
    n_patients: int                 # truth patients scored (including missing ones)
    missing_ids: Tuple[str, ...]    # in truth, not predicted: scored as MISSING
    extra_ids: Tuple[str, ...]      # predicted, not in truth: ignored
    macro_class_set: str = MACRO_CLASS_SET

    def task(self, name: str) -> TaskResult:
        for t in self.tasks:
            if t.task == name:
                return t
        raise KeyError(name)

    @property
    def curvature(self) -> TaskResult:
        return self.task("curvature")

    @property
    def alignment(self) -> TaskResult:
        return self.task("alignment")

    @property
    def disc(self) -> TaskResult:
        return self.task("disc")

    @property
    def canal(self) -> TaskResult:
        return self.task("canal")

    def to_dict(self) -> dict:
        """JSON-ready nested dict (tuples become lists)."""
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# The challenge score
# ----------------------------------------------------------------------------------------------

def _class_stats(y_true: np.ndarray, y_pred: np.ndarray, names: Tuple[str, ...]) -> Tuple[ClassStats, ...]:
    n = len(names)
    tp, fp, fn, tn = _one_vs_rest(y_true, y_pred, n)
    total = tp + fp + fn + tn
    acc, sens, spec = _ratio(tp + tn, total), _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    ppv, npv, f1 = _ratio(tp, tp + fp), _ratio(tn, tn + fn), _ratio(2 * tp, 2 * tp + fp + fn)
    return tuple(ClassStats(c, names[c], int(tp[c] + fn[c]), int(tp[c]), int(fp[c]), int(fn[c]), int(tn[c]),
                            float(acc[c]), float(sens[c]), float(spec[c]), float(ppv[c]), float(npv[c]),
                            float(f1[c]))
                 for c in range(n))


def _task_result(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> TaskResult:
    names = TASK_CLASSES[task]
    n = len(names)
    mf1 = macro_f1(y_true, y_pred, n)
    if task == "alignment":
        value = float(f1_per_class(y_true, y_pred, n)[ALIGNMENT_SCORED_CLASS])
    else:
        value = mf1
    cm = confusion_matrix(y_true, y_pred, n)
    return TaskResult(
        task=task, class_names=names, metric=TASK_METRIC[task], weight=TASK_WEIGHTS[task], value=value,
        macro_f1=mf1, macro_classes=macro_classes(y_true, y_pred, n), accuracy=accuracy(y_true, y_pred),
        n_items=int(y_true.size), confusion=tuple(tuple(int(v) for v in row) for row in cm),
        unpredicted=tuple(int(v) for v in unpredicted_counts(y_true, y_pred, n)),
        per_class=_class_stats(y_true, y_pred, names),
    )


def _level_results(names: Tuple[str, ...], y_true: np.ndarray, y_pred: np.ndarray,
                   n_classes: int) -> Tuple[LevelResult, ...]:
    # y_true / y_pred: (patients, levels)
    return tuple(LevelResult(name, macro_f1(y_true[:, j], y_pred[:, j], n_classes),
                             accuracy(y_true[:, j], y_pred[:, j]), int(y_true.shape[0]))
                 for j, name in enumerate(names))


def challenge_score(truth: Sequence[PatientLabels], pred: Sequence[PatientLabels]) -> ScoreReport:
    """Score predictions against the truth by the CervAI definition.

    score = 0.2 macro-F1(curvature) + 0.2 F1(alignment "poor") + 0.3 macro-F1(disc grades pooled
    over all levels and patients) + 0.3 macro-F1(canal grades pooled over all positions and
    patients). Every macro-F1 uses MACRO_CLASS_SET. Truth patients without a prediction are scored
    with MISSING for every item (wrong everywhere) and listed in missing_ids; predictions for ids
    not in the truth are listed in extra_ids and ignored. Raises ValueError for an empty truth or duplicate ids.
    """
    if not truth:
        raise ValueError("no ground-truth patients to score")
    truth_ids = [p.patient_id for p in truth]
    pred_ids = [p.patient_id for p in pred]
    for what, ids in (("truth", truth_ids), ("predictions", pred_ids)):
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate patient ids in {what}")
    by_id: Dict[str, PatientLabels] = {p.patient_id: p for p in pred}
    truth_set = set(truth_ids)
    missing_ids = tuple(pid for pid in truth_ids if pid not in by_id)
    extra_ids = tuple(pid for pid in pred_ids if pid not in truth_set)

    n_disc, n_canal = len(DISCS), len(CANAL_POSITIONS)
    t_curv = np.array([p.curvature for p in truth], dtype=np.int64)
    t_align = np.array([p.alignment for p in truth], dtype=np.int64)
    t_disc = np.array([p.disc_grades for p in truth], dtype=np.int64).reshape(-1, n_disc)
    t_canal = np.array([p.canal_grades for p in truth], dtype=np.int64).reshape(-1, n_canal)

    def predicted(attr: str, width: Optional[int]) -> np.ndarray:
        rows: List = []
        for pid in truth_ids:
            q = by_id.get(pid)
            if q is None:
                rows.append(MISSING if width is None else (MISSING,) * width)
            else:
                rows.append(getattr(q, attr))
        arr = np.array(rows, dtype=np.int64)
        return arr if width is None else arr.reshape(-1, width)

    p_curv, p_align = predicted("curvature", None), predicted("alignment", None)
    p_disc, p_canal = predicted("disc_grades", n_disc), predicted("canal_grades", n_canal)

    tasks = (
        _task_result("curvature", t_curv, p_curv),
        _task_result("alignment", t_align, p_align),
        # Pooled: every (patient, level) item is one sample of a single 4-class problem.
        _task_result("disc", t_disc.ravel(), p_disc.ravel()),
        _task_result("canal", t_canal.ravel(), p_canal.ravel()),
    )
    score = float(sum(t.weight * t.value for t in tasks))
    return ScoreReport(
        score=score, tasks=tasks,
        disc_levels=_level_results(DISCS, t_disc, p_disc, len(DISC_GRADES)),
        canal_levels=_level_results(CANAL_POSITIONS, t_canal, p_canal, len(CANAL_GRADES)),
        n_patients=len(truth), missing_ids=missing_ids, extra_ids=extra_ids,
    )


def bootstrap_interval(truth: Sequence[PatientLabels], pred: Sequence[PatientLabels], n_resamples: int = 1000,
                       level: float = 0.95, seed: int = 0) -> Tuple[float, float]:
    """Percentile interval of the challenge score over the patients resampled with replacement.

    It says how far the score could move with another draw of as many patients like these: with 5 %
    poor alignment, 100 patients hold 5-6 poor ones, and each call moves that F1 by about 0.1. It says
    nothing about other kinds of data. Patients without a prediction count as wrong, as in challenge_score.
    """
    if not truth:
        raise ValueError("no ground-truth patients to score")
    by_id = {p.patient_id: p for p in pred}
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(n_resamples):
        draw = [truth[i] for i in rng.integers(0, len(truth), len(truth))]
        # each drawn copy gets its own id, so a patient drawn twice counts twice
        t = [replace(p, patient_id=f"{p.patient_id}#{k}") for k, p in enumerate(draw)]
        q = [replace(by_id[p.patient_id], patient_id=f"{p.patient_id}#{k}") for k, p in enumerate(draw)
             if p.patient_id in by_id]
        scores.append(challenge_score(t, q).score)
    lo, hi = np.percentile(scores, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def bootstrap_tasks(truth: Sequence[PatientLabels], pred: Sequence[PatientLabels], n_resamples: int = 1000,
                    level: float = 0.95, seed: int = 0) -> Dict[str, Tuple[float, float]]:
    """Percentile intervals of the challenge score ('score') and of each task's value ('curvature', 'alignment',
    'disc', 'canal'), over the same patient resamples as bootstrap_interval (same seed: the same 'score')."""
    if not truth:
        raise ValueError("no ground-truth patients to score")
    by_id = {p.patient_id: p for p in pred}
    rng = np.random.default_rng(seed)
    values: Dict[str, List[float]] = {}
    for _ in range(n_resamples):
        draw = [truth[i] for i in rng.integers(0, len(truth), len(truth))]
        t = [replace(p, patient_id=f"{p.patient_id}#{k}") for k, p in enumerate(draw)]
        q = [replace(by_id[p.patient_id], patient_id=f"{p.patient_id}#{k}") for k, p in enumerate(draw)
             if p.patient_id in by_id]
        rep = challenge_score(t, q)
        values.setdefault("score", []).append(rep.score)
        for task in rep.tasks:
            values.setdefault(task.task, []).append(task.value)
    out = {}
    for name, v in values.items():
        lo, hi = np.percentile(v, [50 * (1 - level), 50 * (1 + level)])
        out[name] = (float(lo), float(hi))
    return out
