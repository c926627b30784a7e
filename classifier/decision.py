"""Decisions from probabilities: per-class prior multipliers, tuned on validation data for macro-F1."""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from evaluation.metrics import macro_f1

# Multipliers are searched on this log2 grid, coordinate-wise, a few sweeps from all ones.
_LOG2_GRID = np.linspace(-4, 4, 33)
_SWEEPS = 3


def apply_priors(probabilities: np.ndarray, priors: Sequence[float]) -> np.ndarray:
    """Grades: argmax of probabilities x priors along the last axis."""
    return np.argmax(np.asarray(probabilities) * np.asarray(priors, dtype=np.float64), axis=-1)


def tune_priors(probabilities: np.ndarray, truth: np.ndarray) -> Tuple[Tuple[float, ...], float]:
    """Per-class multipliers maximising macro-F1 of argmax(p * w) on (probabilities, truth).

    Ties keep the multiplier closest to 1, so classes the data cannot inform stay neutral.
    Returns (multipliers, macro-F1 with them).
    """
    p = np.asarray(probabilities, np.float64).reshape(-1, probabilities.shape[-1])
    y = np.asarray(truth).ravel()
    n = p.shape[1]
    logw = np.zeros(n)
    best = macro_f1(y, apply_priors(p, 2.0 ** logw), n)
    for _ in range(_SWEEPS):
        improved = False
        for c in range(n):
            scores = []
            for g in _LOG2_GRID:
                trial = logw.copy()
                trial[c] = g
                scores.append(macro_f1(y, apply_priors(p, 2.0 ** trial), n))
            scores = np.array(scores)
            top = scores.max()
            # Among equally good settings, the one nearest the current value (then nearest 0).
            candidates = _LOG2_GRID[scores >= top - 1e-12]
            g = candidates[np.argmin(np.abs(candidates - logw[c]) + 1e-3 * np.abs(candidates))]
            if top > best + 1e-12:
                improved = True
            best = max(best, top)
            logw[c] = g
        if not improved:
            break
    # Normalise so the multipliers are comparable across runs (argmax is scale-free).
    logw -= logw.mean()
    return tuple(float(v) for v in 2.0 ** logw), float(best)
