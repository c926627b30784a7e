"""Fitting the fusion boosters and their decision rules, and the nested repeated cross-validation the card reports."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from evaluation.metrics import macro_f1
from study.levels import ALIGNMENT_CLASSES, ALIGNMENT_SCORED_CLASS, CURVATURE_CLASSES

from .booster import fit_booster
from .config import FusionConfig
from .decision import class_f1, tune_alignment_threshold, tune_curvature_priors
from .geometry import CURVATURE_INDEX, apply_index_cuts, fit_index_cuts
from .model import FusionModel


def _stratified_folds(y: np.ndarray, k: int, seed: int) -> List[Tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold
    # never more folds than the rarest class has members (tiny training sets in tests)
    k = max(2, min(k, min(int(c) for c in np.bincount(y) if c > 0)))
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def _poor_target(alignment: np.ndarray) -> np.ndarray:
    return (alignment == ALIGNMENT_SCORED_CLASS).astype(int)


def fit_fusion(X: np.ndarray, curvature: np.ndarray, alignment: np.ndarray, names: Sequence[str],
               cfg: Optional[FusionConfig] = None, seed: Optional[int] = None) -> FusionModel:
    """Fit both boosters on all rows; priors/threshold come from inner out-of-fold scores of these rows only."""
    cfg = cfg or FusionConfig()
    seed = cfg.seed if seed is None else seed
    X = np.asarray(X, float)
    yc = np.asarray(curvature, int)
    ya = _poor_target(np.asarray(alignment, int))
    oof_c = np.zeros((len(yc), len(CURVATURE_CLASSES)))
    for tr, te in _stratified_folds(yc, cfg.inner_folds, seed + 1000):
        oof_c[te] = fit_booster(X[tr], yc[tr], names, cfg, "multiclass", seed).predict(X[te])
    oof_a = np.zeros(len(ya))
    if ya.sum() >= 2:
        for tr, te in _stratified_folds(ya, cfg.inner_folds, seed + 2000):
            oof_a[te] = fit_booster(X[tr], ya[tr], names, cfg, "binary", seed).predict(X[te])
        threshold = tune_alignment_threshold(oof_a, np.where(ya == 1, ALIGNMENT_SCORED_CLASS,
                                                             1 - ALIGNMENT_SCORED_CLASS))
    else:
        threshold = 0.5
    priors = tune_curvature_priors(oof_c, yc)
    return FusionModel(list(names), fit_booster(X, yc, names, cfg, "multiclass", seed),
                       fit_booster(X, ya, names, cfg, "binary", seed), priors, threshold)


@dataclass(frozen=True)
class CVResult:
    """Repeated stratified CV figures: one value per repeat (all patients predicted once per repeat)."""

    curvature_macro_f1: Tuple[float, ...]
    curvature_macro_f1_untuned: Tuple[float, ...]   # plain argmax, no prior tuning
    curvature_cut_rule_macro_f1: Tuple[float, ...]   # baseline: two index cut-points fitted on each training part
    #                                                   (empty when the table has no curvature index column)
    alignment_poor_f1: Tuple[float, ...]
    alignment_poor_f1_fold_sd: Tuple[float, ...]     # spread over the folds inside each repeat
    alignment_auc: Tuple[float, ...]
    curvature_confusion: Tuple[Tuple[int, ...], ...]  # summed over repeats, rows = truth
    n_patients: int
    n_folds: int
    # 95 % bootstrap intervals (patients resampled) of the first repeat's out-of-fold curvature macro-F1 and
    # alignment F1(poor): task -> (value, lo, hi)
    first_repeat_intervals: Tuple[Tuple[str, float, float, float], ...] = ()

    @staticmethod
    def _ms(v: Sequence[float]) -> Tuple[float, float]:
        a = np.asarray(v, float)
        return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0

    def summary(self) -> Dict[str, object]:
        out: Dict[str, object] = {"n_patients": self.n_patients, "n_folds": self.n_folds,
                                  "n_repeats": len(self.curvature_macro_f1)}
        for name in ("curvature_macro_f1", "curvature_macro_f1_untuned", "curvature_cut_rule_macro_f1",
                     "alignment_poor_f1", "alignment_auc"):
            if not getattr(self, name):  # the cut-point baseline of a table without the index column
                continue
            m, s = self._ms(getattr(self, name))
            out[name] = {"mean": round(m, 4), "sd": round(s, 4),
                         "per_repeat": [round(float(v), 4) for v in getattr(self, name)]}
        out["alignment_poor_f1_fold_sd_mean"] = round(float(np.mean(self.alignment_poor_f1_fold_sd)), 4)
        out["curvature_confusion"] = [list(r) for r in self.curvature_confusion]
        if self.first_repeat_intervals:
            out["out_of_fold_interval_95"] = {t: {"value": round(v, 4), "interval_95": [round(lo, 4), round(hi, 4)]}
                                              for t, v, lo, hi in self.first_repeat_intervals}
        return out


def roc_auc(y01: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y01 == 1], s[y01 == 0]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    gt = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(gt / (len(pos) * len(neg)))


def cross_validate(X: np.ndarray, curvature: np.ndarray, alignment: np.ndarray, names: Sequence[str],
                   cfg: Optional[FusionConfig] = None, X_eval: Optional[np.ndarray] = None) -> CVResult:
    """Repeated stratified K-fold; each outer training part tunes its own priors/threshold (nested).

    X_eval (same rows and columns as X) replaces X on the held-out folds only: training on one box
    source and testing on another (e.g. detector-like boxes) with the very same folds and seeds.
    """
    cfg = cfg or FusionConfig()
    X = np.asarray(X, float)
    X_eval = X if X_eval is None else np.asarray(X_eval, float)
    yc, ya = np.asarray(curvature, int), np.asarray(alignment, int)
    # stratify on both labels so every fold holds some of the rare poor-alignment patients
    strata = yc * len(ALIGNMENT_CLASSES) + ya
    # the cut-point baseline needs the curvature index column (absent in hand-made tables: no figures)
    ci = list(names).index(CURVATURE_INDEX) if CURVATURE_INDEX in names else None
    cf, cfu, ccut, af, afs, auc = [], [], [], [], [], []
    conf = np.zeros((len(CURVATURE_CLASSES),) * 2, int)
    intervals: Tuple = ()
    for r in range(cfg.cv_repeats):
        seed = cfg.seed + r
        pc = np.zeros(len(yc), int)
        pcu = np.zeros(len(yc), int)
        pcut = np.zeros(len(yc), int)
        pa = np.zeros(len(ya), int)
        sa = np.zeros(len(ya))
        fold_f = []
        for tr, te in _stratified_folds(_merge_rare(strata), cfg.cv_folds, seed):
            m = fit_fusion(X[tr], yc[tr], ya[tr], names, cfg, seed)
            curv, _, align, aprobs = m.decide(X_eval[te])
            pc[te], pa[te] = curv, align
            pcu[te] = np.argmax(m.scores(X_eval[te])[0], axis=1)
            if ci is not None:
                pcut[te] = apply_index_cuts(X_eval[te, ci], fit_index_cuts(X[tr, ci], yc[tr])[0])
            sa[te] = aprobs[:, ALIGNMENT_SCORED_CLASS]
            fold_f.append(class_f1(ya[te], align, ALIGNMENT_SCORED_CLASS))
        cf.append(macro_f1(yc, pc, len(CURVATURE_CLASSES)))
        cfu.append(macro_f1(yc, pcu, len(CURVATURE_CLASSES)))
        if ci is not None:
            ccut.append(macro_f1(yc, pcut, len(CURVATURE_CLASSES)))
        af.append(class_f1(ya, pa, ALIGNMENT_SCORED_CLASS))
        afs.append(float(np.std(fold_f, ddof=1)))
        auc.append(roc_auc(_poor_target(ya), sa))
        if r == 0:
            intervals = out_of_fold_intervals(yc, ya, pc, pa, cfg.seed)
        for t, p in zip(yc, pc):
            conf[t, p] += 1
    return CVResult(tuple(cf), tuple(cfu), tuple(ccut), tuple(af), tuple(afs), tuple(auc),
                    tuple(tuple(int(v) for v in row) for row in conf), len(yc), cfg.cv_folds, intervals)


def out_of_fold_intervals(yc, ya, pc, pa, seed: int) -> Tuple[Tuple[str, float, float, float], ...]:
    """Curvature macro-F1 and alignment F1(poor) of out-of-fold predictions, each with the 95 % bootstrap interval
    of evaluation.metrics (patients resampled; the challenge's own definitions of both figures)."""
    from evaluation.metrics import bootstrap_tasks, challenge_score
    from study.challenge import PatientLabels
    from study.levels import CANAL_POSITIONS, DISCS
    zeros_d, zeros_c = (0,) * len(DISCS), (0,) * len(CANAL_POSITIONS)
    truth = [PatientLabels(f"r{k}", int(c), int(a), zeros_d, zeros_c) for k, (c, a) in enumerate(zip(yc, ya))]
    pred = [PatientLabels(f"r{k}", int(c), int(a), zeros_d, zeros_c) for k, (c, a) in enumerate(zip(pc, pa))]
    rep, ci = challenge_score(truth, pred), bootstrap_tasks(truth, pred, seed=seed)
    return tuple((t, rep.task(t).value, *ci[t]) for t in ("curvature", "alignment"))


def _merge_rare(strata: np.ndarray, min_count: int = 5) -> np.ndarray:
    """Fold strata with too few members into the largest stratum of the same curvature."""
    s = strata.copy()
    values, counts = np.unique(s, return_counts=True)
    for v, c in zip(values, counts):
        if c < min_count:
            s[s == v] = -1
    return np.unique(s, return_inverse=True)[1]
