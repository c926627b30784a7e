"""PatientReport: one patient's full reading (challenge row + details); it can save and draw itself."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np

from classifier.predict import LevelGrades
from detector.boxes import OUTSIDE_FOV, LevelBoxes
from fusion.model import CurveAssessment
from study.challenge import PatientLabels, format_box_string
from study.levels import (
    ALIGNMENT_CLASSES, CANAL_GRADES, CANAL_POSITIONS, CURVATURE_CLASSES, DISC_GRADES, DISCS, SAGITTAL_SLICES,
    VERTEBRAE,
)

REPORT_VERSION = 1


def _round(x: float, n: int = 4) -> float:
    return float(round(float(x), n))


def _lps(point) -> list:
    """A patient-space position rounded to 0.1 mm."""
    return [_round(v, 1) + 0.0 for v in point]   # + 0.0: no "-0.0"


def _box_dict(lb) -> Dict[str, object]:
    b = lb.box
    return {"box": format_box_string(b), "xyxy": [_round(v, 2) for v in b.as_tuple()],
            "confidence": _round(lb.confidence, 3), "interpolated": bool(lb.interpolated)}


@dataclass(frozen=True)
class PatientReport:
    """Everything the run decided for one patient, and why it may need a human look."""

    patient_id: str
    boxes: LevelBoxes
    grades: LevelGrades
    curve: CurveAssessment
    box_source: str                      # "detector" or "given" (--boxes)
    warnings: Tuple[str, ...] = ()
    review_reasons: Tuple[str, ...] = ()
    inputs: Dict[str, str] = field(default_factory=dict)
    provenance: Tuple[str, ...] = ()     # which series/files were used and why (DICOM/NIfTI)
    # DICOM/NIfTI only (None for challenge PNGs, which carry no geometry): patient-space positions (LPS mm),
    # so that any viewer can check them without our image grid. Level (C2, C2-3, ...) -> body/disc centre
    # on the mid-sagittal image; canal position -> the canal centre found on its axial image.
    level_centres_lps: Optional[Dict[str, Tuple[float, float, float]]] = None
    axial_canal_centres_lps: Optional[Dict[str, Tuple[float, float, float]]] = None
    # Sagittal slices the input lacked -> the slice present that stood in for each (Study.sagittal_standins):
    # their boxes are that slice's.
    sagittal_standins: Dict[int, int] = field(default_factory=dict)

    def __post_init__(self):
        # Nothing outside the field of view may be graded: the classifier must have withheld exactly those.
        if tuple(self.grades.not_graded) != tuple(self.boxes.outside_positions):
            raise ValueError(f"{self.patient_id}: positions not graded {list(self.grades.not_graded)} differ from "
                             f"those outside the field of view {list(self.boxes.outside_positions)}")
        if self.boxes.outside_fov and not self.curve.not_assessed:
            raise ValueError(f"{self.patient_id}: the curve was assessed with "
                             f"{', '.join(self.boxes.outside_fov)} outside the field of view")

    @property
    def needs_review(self) -> bool:
        return bool(self.review_reasons)

    def challenge_labels(self) -> PatientLabels:
        return PatientLabels(self.patient_id, self.curve.curvature, self.curve.alignment,
                             tuple(int(g) for g in self.grades.disc_grades),
                             tuple(int(g) for g in self.grades.canal_grades))

    def to_dict(self) -> Dict[str, object]:
        g, c = self.grades, self.curve
        out = {
            "report_version": REPORT_VERSION,
            "id": self.patient_id,
            "needs_review": self.needs_review,
            "review_reasons": list(self.review_reasons),
            "warnings": list(self.warnings),
            "box_source": self.box_source,
            "levels": {
                "vertebrae": {str(s): {lv: _box_dict(self.boxes.vertebrae[s][lv]) for lv in VERTEBRAE}
                              for s in SAGITTAL_SLICES},
                "discs": {str(s): {d: _box_dict(self.boxes.discs[s][d]) for d in DISCS} for s in SAGITTAL_SLICES},
            },
            "disc": {d: {"grade": int(g.disc_grades[i]), "grade_name": DISC_GRADES[g.disc_grades[i]],
                         "probabilities": [_round(p) for p in g.disc_probabilities[i]]}
                     for i, d in enumerate(DISCS)},
            "canal": {p: {"grade": int(g.canal_grades[i]), "grade_name": CANAL_GRADES[g.canal_grades[i]],
                          "probabilities": [_round(v) for v in g.canal_probabilities[i]],
                          "axial_used": bool(g.has_axial[i])}
                      for i, p in enumerate(CANAL_POSITIONS)},
            "curvature": {"class": c.curvature, "name": CURVATURE_CLASSES[c.curvature],
                          "probabilities": [_round(p) for p in c.curvature_probs]},
            "alignment": {"class": c.alignment, "name": ALIGNMENT_CLASSES[c.alignment],
                          "probabilities": [_round(p) for p in c.alignment_probs], "source": c.alignment_source},
            "curve_measurements": {k: (None if v is None or not np.isfinite(v) else _round(v))
                                   for k, v in sorted(c.features.items())},
            "inputs": dict(self.inputs),
            "provenance": list(self.provenance),
        }
        # Only when something lies outside the field of view, so that every other report stays as it was.
        if self.boxes.outside_fov:
            self._not_graded(out)
        # Only for a patient with missing sagittal slices, so that every other report stays as it was.
        if self.sagittal_standins:
            out["levels"]["sagittal_standins"] = {str(s): int(src) for s, src in sorted(self.sagittal_standins.items())}
        # Only where known, so that a challenge-PNG report stays as it was.
        if self.level_centres_lps is not None:
            out["levels"]["centres_lps"] = {lv: _lps(v) for lv, v in self.level_centres_lps.items()}
        for p, v in (self.axial_canal_centres_lps or {}).items():
            out["canal"][p]["canal_centre_lps"] = _lps(v)
        return out

    def _not_graded(self, out: Dict[str, object]) -> None:
        """Null every grade of a position outside the field of view, saying why and what predictions.json holds."""
        g, c = self.grades, self.curve
        out["outside_field_of_view"] = list(self.boxes.outside_fov)
        withheld = {"grade": None, "grade_name": None, "probabilities": None, "not_graded": OUTSIDE_FOV}
        for p in g.not_graded:
            out["canal"][p].update(withheld, submitted_grade=int(g.canal_grade(p)), submitted_reason=g.submitted_note)
            if p in DISCS:
                out["disc"][p].update(withheld, submitted_grade=int(g.disc_grade(p)),
                                      submitted_reason=g.submitted_note)
        if c.not_assessed:
            for key, value in (("curvature", c.curvature), ("alignment", c.alignment)):
                out[key] = {"class": None, "name": None, "probabilities": None, "not_graded": OUTSIDE_FOV,
                            "reason": c.not_assessed, "submitted_class": int(value),
                            "submitted_reason": c.submitted_note}
            out["curve_measurements"] = None
