"""Built-in statistical model of C2-C7 geometry and labels, fitted once from the real CervAI files.

`fit_model` runs at development time on ../shared/data/cervai and writes statistical_model.json beside
this file; `sample_patient` uses only that JSON, so the generator never needs ../shared at run time.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from study.challenge import Box, PatientBoxes, PatientLabels
from study.levels import (
    ALIGNMENT_CLASSES, CANAL_GRADES, CANAL_POSITIONS, CURVATURE_CLASSES, DISC_CANAL_INDEX, DISC_GRADES,
    DISCS, IMAGE_SIZE, MID_SAGITTAL_SLICE, SAGITTAL_SLICES, VERTEBRAE,
)

MODEL_PATH = Path(__file__).with_name("statistical_model.json")
N_COMPONENTS = 12
# Laplace-style pseudo-count that pulls sparse per-level tables toward the pooled table.
SMOOTHING = 4.0


def _geometry_vector(p: PatientBoxes) -> np.ndarray:
    return np.array([[*p.boxes[s][lv].as_tuple()] for s in SAGITTAL_SLICES for lv in VERTEBRAE], float).ravel()


def _vector_to_boxes(pid: str, v: np.ndarray) -> PatientBoxes:
    v = v.reshape(len(SAGITTAL_SLICES), len(VERTEBRAE), 4)
    return PatientBoxes(pid, {s: {lv: Box(*map(float, v[k, i])) for i, lv in enumerate(VERTEBRAE)}
                              for k, s in enumerate(SAGITTAL_SLICES)})


def _conditional_table(pairs: Sequence[Tuple[int, int]], n_cond: int, n_out: int,
                       prior: np.ndarray) -> List[List[float]]:
    counts = np.zeros((n_cond, n_out))
    for c, o in pairs:
        counts[c, o] += 1
    table = (counts + SMOOTHING * prior[None, :]) / (counts.sum(1, keepdims=True) + SMOOTHING)
    return table.round(5).tolist()


def fit_model(boxes: Sequence[PatientBoxes], labels: Sequence[PatientLabels]) -> Dict:
    """Fit geometry (class-conditional mean + pooled PCA) and label tables from real patients."""
    by_id = {l.patient_id: l for l in labels}
    rows = [(b, by_id[b.patient_id]) for b in boxes if b.patient_id in by_id]
    X = np.stack([_geometry_vector(b) for b, _ in rows])
    curv = np.array([l.curvature for _, l in rows])
    means = [X[curv == c].mean(0) for c in range(len(CURVATURE_CLASSES))]
    resid = X - np.stack([means[c] for c in curv])
    _, sv, vt = np.linalg.svd(resid - resid.mean(0), full_matrices=False)
    sd = sv[:N_COMPONENTS] / np.sqrt(len(X) - 1)

    n_disc, n_canal = len(DISC_GRADES), len(CANAL_GRADES)
    disc_prior = np.bincount([g for _, l in rows for g in l.disc_grades], minlength=n_disc) / (len(rows) * len(DISCS))
    canal_all = [g for _, l in rows for g in l.canal_grades]
    canal_prior = np.bincount(canal_all, minlength=n_canal) / len(canal_all)
    disc_freq = []
    canal_given_disc = []
    for j, d in enumerate(DISCS):
        counts = np.bincount([l.disc_grades[j] for _, l in rows], minlength=n_disc)
        disc_freq.append(((counts + SMOOTHING * disc_prior) / (counts.sum() + SMOOTHING)).round(5).tolist())
        canal_given_disc.append(_conditional_table(
            [(l.disc_grades[j], l.canal_grades[DISC_CANAL_INDEX[d]]) for _, l in rows], n_disc, n_canal, canal_prior))
    # A vertebra position's canal grade follows the worse of its neighbouring disc positions.
    canal_given_neighbour = []
    for i, v in enumerate(VERTEBRAE):
        k = CANAL_POSITIONS.index(v)
        nbrs = [n for n in (k - 1, k + 1) if 0 <= n < len(CANAL_POSITIONS)]
        canal_given_neighbour.append(_conditional_table(
            [(max(l.canal_grades[n] for n in nbrs), l.canal_grades[k]) for _, l in rows], n_canal, n_canal,
            canal_prior))
    return {
        "source": "CervAI train_boxes.json + train_labels.json (320 real patients)",
        "curvature_definition": fit_curvature_definition([b for b, _ in rows], curv),
        "n_patients": len(rows),
        "geometry": {
            "layout": "slices 5,6,7 x levels C2..C7 x (x1,y1,x2,y2), pixels on the 224 grid",
            "class_means": [m.round(3).tolist() for m in means],
            "components": vt[:N_COMPONENTS].round(5).tolist(),
            "component_sd": sd.round(4).tolist(),
        },
        "curvature_freq": (np.bincount(curv, minlength=len(CURVATURE_CLASSES)) / len(rows)).round(5).tolist(),
        "alignment_freq": (np.bincount([l.alignment for _, l in rows], minlength=len(ALIGNMENT_CLASSES))
                           / len(rows)).round(5).tolist(),
        "disc_freq": disc_freq,
        "canal_given_disc": canal_given_disc,
        "canal_given_neighbour": canal_given_neighbour,
    }


def curve_measure(boxes: PatientBoxes) -> float:
    """The curvature index of a patient's boxes (consensus of slices 5/6/7; lordosis positive): the measure
    whose bands define curvature on the phantom."""
    from fusion.geometry import CURVATURE_INDEX, curve_features
    return float(curve_features(boxes.boxes)[CURVATURE_INDEX])


def fit_curvature_definition(boxes: Sequence[PatientBoxes], curvature: np.ndarray) -> Dict:
    """Two cut-points on the curvature index that best reproduce the real labels (macro-F1, in sample).

    kyphotic: index < cuts[0]; straightened: cuts[0] <= index < cuts[1]; normal: index >= cuts[1].
    The real labels are a reader's judgement and overlap on any one measure; the phantom instead draws
    each class inside its band, so its curvature is visible and defined, with the readers' cut-points.
    """
    from fusion.geometry import CURVATURE_INDEX, fit_index_cuts
    cuts, best = fit_index_cuts(np.array([curve_measure(b) for b in boxes]), curvature)
    return {"measure": CURVATURE_INDEX, "cuts": list(cuts), "in_sample_macro_f1": round(best, 4),
            "rule": "kyphotic < cuts[0] <= straightened < cuts[1] <= normal"}


def curvature_band(curvature: int, definition: Dict) -> Tuple[float, float]:
    """The [low, high) range of the curve measure that defines a curvature class."""
    lo, hi = definition["cuts"]
    return {0: (hi, np.inf), 1: (lo, hi), 2: (-np.inf, lo)}[curvature]


# A real geometry whose curve contradicts its label is bent until its index lies this far inside the band
# (a tenth of the straightened band's width), so the class is drawn, not left on the cut-point.
BEND_MARGIN = 2.0


def _bowed(boxes: PatientBoxes, weights: np.ndarray, amount_px: float) -> PatientBoxes:
    """Every slice's boxes shifted sideways (x) by amount_px * weights[level]."""
    out = {}
    for s in SAGITTAL_SLICES:
        out[s] = {}
        for lv, w in zip(VERTEBRAE, weights):
            b = boxes.boxes[s][lv]
            out[s][lv] = Box(b.x1 + amount_px * w, b.y1, b.x2 + amount_px * w, b.y2)
    return PatientBoxes(boxes.patient_id, out)


def bend_into_band(boxes: PatientBoxes, curvature: int, definition: Optional[Dict] = None,
                   margin: float = BEND_MARGIN) -> Tuple[PatientBoxes, Optional[str]]:
    """Draw a geometry's curvature label by its definition: the boxes unchanged when the curvature index lies
    in the label's band, else bent until it lies `margin` inside it. Returns the boxes and a note (or None).

    The bend is a half-sine bow: C3-C6 move sideways by amount * sin(pi * t), t the level's height between
    the C2 and C7 centres (mid slice), on all three slices alike. C2 and C7 stay, so the C2-C7 line and
    length stay, and the column bends smoothly (no step at any disc, so the alignment label is untouched).
    Real readers' labels overlap on every box measure (18 % of the CervAI geometries lie outside their
    label's band); a phantom of such a geometry otherwise shows a curve its label does not describe.
    """
    definition = definition or load_model()["curvature_definition"]
    lo, hi = curvature_band(curvature, definition)
    start = curve_measure(boxes)
    if lo <= start < hi:
        return boxes, None
    target = lo + margin if start < lo else hi - margin
    mid = boxes.boxes[MID_SAGITTAL_SLICE]
    y = np.array([mid[lv].cy for lv in VERTEBRAE])
    weights = np.sin(np.pi * np.clip((y - y[0]) / (y[-1] - y[0]), 0.0, 1.0))
    # The index is nearly linear in the bow (the slices' consensus adds a little curvature): secant steps.
    a0, f0, a1 = 0.0, start, 4.0
    f1 = curve_measure(_bowed(boxes, weights, a1))
    for _ in range(8):
        if abs(f1 - target) < 0.05 or f1 == f0:
            break
        a0, f0, a1 = a1, f1, a1 + (target - f1) * (a1 - a0) / (f1 - f0)
        f1 = curve_measure(_bowed(boxes, weights, a1))
    bent = _bowed(boxes, weights, a1)
    if not lo <= f1 < hi or (_plausible(boxes) and not _plausible(bent)):  # the bow may not spoil a sound geometry
        raise ValueError(f"curvature: could not bend the curve (index {start:.1f}) into the "
                         f"{CURVATURE_CLASSES[curvature]} band [{lo:g}, {hi:g})")
    return bent, (f"curvature: index {start:.1f} lies outside the {CURVATURE_CLASSES[curvature]} band "
                  f"[{lo:g}, {hi:g}); C3-C6 bowed by up to {a1:+.1f} px to {f1:.1f}")


@lru_cache(maxsize=1)
def load_model() -> Dict:
    return json.loads(MODEL_PATH.read_text())


def _draw(rng: np.random.Generator, probabilities: Sequence[float]) -> int:
    p = np.asarray(probabilities, float)
    return int(rng.choice(len(p), p=p / p.sum()))  # the JSON stores rounded values


def _plausible(p: PatientBoxes) -> bool:
    for s in SAGITTAL_SLICES:
        prev_cy = -1.0
        for lv in VERTEBRAE:
            b = p.boxes[s][lv]
            if b.width < 8 or b.height < 8 or b.x1 < 0 or b.y1 < 0 or b.x2 > IMAGE_SIZE or b.y2 > IMAGE_SIZE:
                return False
            if b.cy <= prev_cy + 6:
                return False
            prev_cy = b.cy
    return True


def sample_patient(rng: np.random.Generator, patient_id: str) -> Tuple[PatientBoxes, PatientLabels]:
    """Draw one patient's boxes and labels from the built-in model; the curve lies in its class's band."""
    m = load_model()
    g = m["geometry"]
    curvature = _draw(rng, m["curvature_freq"])
    mean = np.asarray(g["class_means"][curvature])
    comps, sd = np.asarray(g["components"]), np.asarray(g["component_sd"])
    lo, hi = curvature_band(curvature, m["curvature_definition"])
    # Draw until the geometry is plausible and its curve lies in the class's band (the class is drawn by
    # its definition); later tries shrink the shape variation toward the class mean, which lies in its band.
    for attempt in range(200):
        z = np.clip(rng.standard_normal(len(sd)), -2.5, 2.5) * (1.0 if attempt < 100 else 0.5)
        boxes = _vector_to_boxes(patient_id, mean + (z * sd) @ comps)
        if _plausible(boxes) and lo <= curve_measure(boxes) < hi:
            break
    else:  # pragma: no cover - the class mean itself is plausible and inside its band
        boxes = _vector_to_boxes(patient_id, mean)
    alignment = _draw(rng, m["alignment_freq"])
    disc = [_draw(rng, m["disc_freq"][j]) for j in range(len(DISCS))]
    canal = [0] * len(CANAL_POSITIONS)
    for j, d in enumerate(DISCS):
        canal[DISC_CANAL_INDEX[d]] = _draw(rng, m["canal_given_disc"][j][disc[j]])
    for i, v in enumerate(VERTEBRAE):
        k = CANAL_POSITIONS.index(v)
        worst = max(canal[n] for n in (k - 1, k + 1) if 0 <= n < len(CANAL_POSITIONS))
        canal[k] = _draw(rng, m["canal_given_neighbour"][i][worst])
    return boxes, PatientLabels(patient_id, curvature, alignment, tuple(disc), tuple(canal))


if __name__ == "__main__":  # development-time refit: python -m synth.statistical_model ../shared/data/cervai
    import sys

    from study.challenge import read_box_file, read_labels

    root = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/cervai")
    model = fit_model(read_box_file(root / "train_boxes.json").patients, read_labels(root / "train_labels.json"))
    MODEL_PATH.write_text(json.dumps(model, indent=1) + "\n")
    print(f"wrote {MODEL_PATH} from {model['n_patients']} patients")
