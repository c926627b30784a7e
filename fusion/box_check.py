"""Do detector-like boxes give the same features and calls as the ground-truth boxes? Paired CV per box source."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from study.challenge import Box, PatientBoxes
from study.levels import IMAGE_SIZE, MID_SAGITTAL_SLICE

from .geometry import CHALLENGE_PADDING_PX
from .config import FusionConfig
from .cv import cross_validate
from .features import feature_rows, fill_missing, to_matrix


def _map_boxes(p: PatientBoxes, f: Callable[[Box], Box], slices: Optional[Sequence[int]] = None) -> PatientBoxes:
    keep = p.boxes.keys() if slices is None else [s for s in slices if s in p.boxes]
    return PatientBoxes(p.patient_id, {s: {lv: f(b) for lv, b in p.boxes[s].items()} for s in keep})


def tight_boxes(p: PatientBoxes, padding_px: float = CHALLENGE_PADDING_PX) -> PatientBoxes:
    """What a detector that outputs the tight body box would give for the same vertebrae."""
    return _map_boxes(p, lambda b: Box(b.x1 + padding_px, b.y1 + padding_px, b.x2 - padding_px, b.y2 - padding_px))


def jittered_boxes(p: PatientBoxes, sigma_px: float, rng: np.random.Generator) -> PatientBoxes:
    """Detector-like localisation noise: every corner coordinate moved by N(0, sigma), rounded to pixels."""
    def jitter(b: Box) -> Box:
        x1, y1, x2, y2 = np.round(np.array(b.as_tuple()) + rng.normal(0, sigma_px, 4))
        x1, y1 = max(0.0, x1), max(0.0, y1)
        # keep the box non-degenerate after unpadding, as a detector's minimum box size would
        x2 = min(float(IMAGE_SIZE), max(x2, x1 + 2 * CHALLENGE_PADDING_PX + 1))
        y2 = min(float(IMAGE_SIZE), max(y2, y1 + 2 * CHALLENGE_PADDING_PX + 1))
        return Box(float(x1), float(y1), float(x2), float(y2))
    return _map_boxes(p, jitter)


@dataclass(frozen=True)
class BoxSourceResult:
    """One box source scored with the model trained on ground-truth features (same folds and seeds)."""

    name: str
    padding_px: float
    max_abs_feature_diff: float       # over all patients and columns, vs ground truth
    curvature_macro_f1: Tuple[float, float]   # mean, sd over repeats
    alignment_poor_f1: Tuple[float, float]
    curvature_delta: Tuple[float, float]      # paired per-repeat macro-F1 difference vs ground truth: mean, sd


def padding_check(patients: Sequence[PatientBoxes], curvature: Mapping[str, int], alignment: Mapping[str, int],
                  cfg: Optional[FusionConfig] = None, seed: int = 0) -> List[BoxSourceResult]:
    """Paired CV: train on ground-truth boxes, evaluate held-out folds on each simulated box source."""
    cfg = cfg or FusionConfig()
    rng = np.random.default_rng(seed)
    sources: List[Tuple[str, List[PatientBoxes], float]] = [
        ("ground truth (challenge boxes, padding 3)", list(patients), CHALLENGE_PADDING_PX),
        ("tight detector boxes declared padding 0", [tight_boxes(p) for p in patients], 0.0),
        ("tight detector boxes wrongly declared padding 3", [tight_boxes(p) for p in patients], CHALLENGE_PADDING_PX),
        ("padded boxes wrongly declared padding 0", list(patients), 0.0),
        ("jitter sigma 1 px, padding 3", [jittered_boxes(p, 1.0, rng) for p in patients], CHALLENGE_PADDING_PX),
        ("jitter sigma 2 px, padding 3", [jittered_boxes(p, 2.0, rng) for p in patients], CHALLENGE_PADDING_PX),
        ("mid-sagittal slice only, padding 3",
         [_map_boxes(p, lambda b: b, [MID_SAGITTAL_SLICE]) for p in patients], CHALLENGE_PADDING_PX),
    ]
    ids, rows, _ = feature_rows(sources[0][1], sources[0][2])
    names = list(rows[0].keys())
    X = to_matrix(rows, names)
    yc = np.array([curvature[i] for i in ids])
    ya = np.array([alignment[i] for i in ids])
    results: List[BoxSourceResult] = []
    base = None
    for name, boxes, pad in sources:
        by_id = {p.patient_id: p for p in boxes}
        sids, srows, errors = feature_rows([by_id[i] for i in ids], pad)
        # a patient whose simulated boxes are unusable keeps NaN features, as the pipeline would skip it
        lookup = dict(zip(sids, srows))
        Xs = to_matrix(fill_missing([lookup.get(i, {}) for i in ids], names), names)
        diff = float(np.nanmax(np.abs(Xs - X))) if len(sids) else float("nan")
        cv = cross_validate(X, yc, ya, names, cfg, X_eval=Xs)
        if base is None:
            base = cv
        delta = np.array(cv.curvature_macro_f1) - np.array(base.curvature_macro_f1)
        m = cv.summary()
        results.append(BoxSourceResult(
            name, pad, diff,
            (m["curvature_macro_f1"]["mean"], m["curvature_macro_f1"]["sd"]),
            (m["alignment_poor_f1"]["mean"], m["alignment_poor_f1"]["sd"]),
            (round(float(delta.mean()), 4), round(float(delta.std(ddof=1)) if len(delta) > 1 else 0.0, 4))))
    return results
