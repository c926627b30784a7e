"""Decision rules tuned on out-of-fold scores: curvature class priors and the poor-alignment threshold."""
from __future__ import annotations

import math

import numpy as np

from evaluation.metrics import macro_f1
from study.levels import ALIGNMENT_SCORED_CLASS


def class_f1(y: np.ndarray, pred: np.ndarray, c: int) -> float:
    """F1 of class c (one against the rest); 0 when the class is neither true nor predicted."""
    tp = np.sum((pred == c) & (y == c))
    denom = np.sum(pred == c) + np.sum(y == c)
    return float(2 * tp / denom) if denom else 0.0


# Prior multipliers searched for curvature: a log-spaced grid, class 0 fixed at 1.
_PRIOR_GRID = np.exp(np.linspace(-1.2, 1.2, 25))


def tune_curvature_priors(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Class multipliers w maximising the challenge's macro-F1 of argmax(probs * w); ties go to the w nearest 1."""
    best, best_w = -1.0, np.ones(probs.shape[1])
    for a in _PRIOR_GRID:
        for b in _PRIOR_GRID:
            w = np.array([1.0, a, b])
            f = macro_f1(y, np.argmax(probs * w, axis=1), probs.shape[1])
            closeness = -abs(math.log(a)) - abs(math.log(b))
            if f > best + 1e-12 or (abs(f - best) <= 1e-12 and closeness > -np.abs(np.log(best_w[1:])).sum()):
                best, best_w = f, w
    return best_w


def tune_alignment_threshold(score_poor: np.ndarray, y: np.ndarray) -> float:
    """Threshold on the 'poor' score maximising F1 of the poor class; midway between neighbouring scores."""
    is_poor = (y == ALIGNMENT_SCORED_CLASS)
    s = np.unique(score_poor)
    cands = np.concatenate([[s[0] - 1e-9], (s[:-1] + s[1:]) / 2]) if len(s) > 1 else s
    best, best_t = -1.0, 0.5
    for t in cands:
        pred_poor = score_poor >= t
        tp = np.sum(pred_poor & is_poor)
        denom = pred_poor.sum() + is_poor.sum()
        f = 2 * tp / denom if denom else 0.0
        if f > best:
            best, best_t = f, float(t)
    return best_t
