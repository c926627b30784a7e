"""The fusion feature columns: one function builds a patient's columns for training and for inference alike,
and a model's table takes exactly the columns it was trained on (a missing one is an error)."""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from study.challenge import Box, PatientBoxes, PatientLabels
from study.errors import InputError
from study.levels import CANAL_GRADES, CANAL_POSITIONS, DISC_GRADES, DISCS

from .geometry import CHALLENGE_PADDING_PX, curve_features


class MissingColumnsError(ValueError):
    """A model needs columns that the table does not hold."""


def level_features(disc_probs: Optional[np.ndarray] = None,
                   canal_probs: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Stage-2 columns: expected disc grade per disc and canal grade per position (NaN if absent).

    disc_probs is (len(DISCS), len(DISC_GRADES)), canal_probs (len(CANAL_POSITIONS), len(CANAL_GRADES)).
    """
    out: Dict[str, float] = {}
    for name, probs, levels, grades in (("disc", disc_probs, DISCS, DISC_GRADES),
                                        ("canal", canal_probs, CANAL_POSITIONS, CANAL_GRADES)):
        if probs is None:
            expected = [math.nan] * len(levels)
        else:
            p = np.asarray(probs, float)
            if p.shape != (len(levels), len(grades)):
                raise ValueError(f"{name} probabilities must have shape {(len(levels), len(grades))}, got {p.shape}")
            expected = list(p @ np.arange(len(grades)))
        for lv, e in zip(levels, expected):
            out[f"{name}_grade_expected_{lv}"] = float(e)
    return out


def patient_features(boxes: Mapping[int, Mapping[str, Box]], padding_px: float = CHALLENGE_PADDING_PX,
                     spacing_mm: Optional[Tuple[float, float]] = None,
                     sagittal: Optional[Mapping[int, np.ndarray]] = None,
                     disc_probs: Optional[np.ndarray] = None,
                     canal_probs: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Every measured column of one patient, for training tables and for `run` alike.

    Always the curve geometry of the boxes (fusion.geometry.curve_features; `*_mm` columns when the spacing is
    known); with `sagittal` images (slice -> 2-D array) the posterior-wall measures (fusion.image_features);
    with the classifier's probabilities the expected grades (level_features). A model takes the columns it was
    trained on (to_matrix); the others are measurements the reports show. Raises GeometryError (an InputError)
    when the boxes cannot describe a C2-C7 column.
    """
    feats = curve_features(boxes, spacing_mm=spacing_mm, padding_px=padding_px)
    feats.update(image_and_grade_columns(boxes, padding_px, sagittal, disc_probs, canal_probs))
    return feats


def image_and_grade_columns(boxes: Mapping[int, Mapping[str, Box]], padding_px: float = CHALLENGE_PADDING_PX,
                            sagittal: Optional[Mapping[int, np.ndarray]] = None,
                            disc_probs: Optional[np.ndarray] = None,
                            canal_probs: Optional[np.ndarray] = None) -> Dict[str, float]:
    """The columns of patient_features beyond the curve geometry: expected grades, then image measures."""
    out: Dict[str, float] = {}
    if disc_probs is not None or canal_probs is not None:
        out.update(level_features(disc_probs, canal_probs))
    if sagittal is not None:
        from .image_features import image_features
        out.update(image_features(sagittal, boxes, padding_px))
    return out


def feature_rows(patients: Sequence[PatientBoxes], padding_px: float = CHALLENGE_PADDING_PX,
                 extra: Optional[Mapping[str, Mapping[str, float]]] = None,
                 sagittal: Optional[Mapping[str, Mapping[int, np.ndarray]]] = None
                 ) -> Tuple[List[str], List[Dict[str, float]], Dict[str, str]]:
    """patient_features of the patients whose boxes are usable, plus patient id -> error for the rest.

    extra: patient id -> further columns; sagittal: patient id -> its sagittal images (image columns).
    """
    ids: List[str] = []
    rows: List[Dict[str, float]] = []
    errors: Dict[str, str] = {}
    for p in patients:
        try:
            row = patient_features(p.boxes, padding_px,
                                   sagittal=sagittal.get(p.patient_id) if sagittal is not None else None)
        except InputError as e:
            errors[p.patient_id] = e.problem
            continue
        if extra is not None and p.patient_id in extra:
            row.update(extra[p.patient_id])
        ids.append(p.patient_id)
        rows.append(row)
    return ids, rows, errors


def column_names(rows: Sequence[Mapping[str, float]]) -> List[str]:
    """Every column any row has, in first-seen order; names starting with '_' are internal, never columns."""
    names: List[str] = []
    seen = set()
    for r in rows:
        for k in r:
            if k not in seen and not k.startswith("_"):
                seen.add(k)
                names.append(k)
    return names


def to_matrix(rows: Sequence[Mapping[str, float]], names: Sequence[str]) -> np.ndarray:
    """Rows -> float matrix in `names` order. A column a row lacks is an error (MissingColumnsError): a model
    must never read a column it needs as silently missing. A NaN value is a measurement that could not be made
    (LightGBM treats it as missing)."""
    for k, r in enumerate(rows):
        lacking = [n for n in names if n not in r]
        if lacking:
            shown = ", ".join(lacking[:6]) + (f" and {len(lacking) - 6} more" if len(lacking) > 6 else "")
            raise MissingColumnsError(f"row {k} lacks column(s) the model needs: {shown}")
    return np.array([[float(r[n]) for n in names] for r in rows], dtype=float).reshape(len(rows), len(names))


def fill_missing(rows: Sequence[Mapping[str, float]], names: Sequence[str]) -> List[Dict[str, float]]:
    """The rows with every column of `names`, NaN where a row lacks it: for training tables whose patients have
    different optional columns (e.g. extra features for some), never for a fitted model's input."""
    return [{n: r.get(n, math.nan) for n in names} for r in rows]


def training_table(ids: Sequence[str], rows: Sequence[Mapping[str, float]],
                   labels: Mapping[str, PatientLabels]) -> Tuple[np.ndarray, np.ndarray, np.ndarray, List[str]]:
    """Feature matrix (columns: every name any row has, first-seen order; NaN where a row lacks one), curvature
    and alignment targets."""
    names = list(rows[0].keys())
    for r in rows[1:]:
        names.extend(k for k in r if k not in names)
    yc = np.array([labels[i].curvature for i in ids])
    ya = np.array([labels[i].alignment for i in ids])
    return to_matrix(fill_missing(rows, names), names), yc, ya, names
