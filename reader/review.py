"""Review policy: why a patient's reading needs a human look (the reasons a report lists)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Tuple

from study.levels import SAGITTAL_SLICES

if TYPE_CHECKING:   # the reader's modules import no network library until its stages load (see core)
    from detector.boxes import LevelBoxes
    from fusion.model import CurveAssessment
    from study.study import Study


def review_reasons(boxes: LevelBoxes, curve: CurveAssessment, study: Study, min_confidence: float) -> Tuple[str, ...]:
    """Every reason to review: sagittal slices missing (stood in for by the nearest), levels outside the field of
    view or interpolated, a vertebra found with less confidence than `min_confidence` (the detector's
    warn_confidence), anatomy and curve warnings, missing axial images and images that show nothing."""
    reasons = []
    if study.sagittal_standins:
        reasons.append("sagittal slice(s) missing, each replaced by the nearest slice present: "
                       + ", ".join(f"{s} by {src}" for s, src in sorted(study.sagittal_standins.items())))
    outside = boxes.outside_fov
    if outside:
        reasons.append(f"level(s) {', '.join(outside)} outside the field of view: not graded"
                       + ("; curvature and alignment not assessed" if curve.not_assessed else ""))
    interp = [lv for lv in boxes.interpolated_levels if lv not in outside]
    missed = {lv: [s for s in SAGITTAL_SLICES if boxes.vertebrae[s][lv].interpolated] for lv in interp}
    nowhere = [lv for lv in interp if len(missed[lv]) == len(SAGITTAL_SLICES)]
    somewhere = [lv for lv in interp if lv not in nowhere]
    if nowhere:
        reasons.append(f"level(s) {', '.join(nowhere)} not found on any sagittal slice, placed between the "
                       "neighbouring levels (interpolated)")
    if somewhere:
        reasons.append("level(s) not found on some sagittal slices, filled in there: " + ", ".join(
            f"{lv} (slice{'s' if len(missed[lv]) > 1 else ''} {', '.join(str(s) for s in missed[lv])})"
            for lv in somewhere))
    low = sorted({lv for s in boxes.vertebrae for lv, lb in boxes.vertebrae[s].items()
                  if not lb.interpolated and lb.confidence < min_confidence})
    if low:
        reasons.append(f"low detector confidence at {', '.join(low)}")
    reasons.extend(f"anatomy check: {w}" for w in boxes.warnings)
    reasons.extend(f"curve: {w}" for w in curve.warnings)
    missing_axial = [p for p in study.missing_axial if p not in boxes.outside_positions]
    if missing_axial:
        reasons.append(f"no axial image at {', '.join(missing_axial)} (graded from sagittal only)")
    if study.blank_images:
        reasons.append(f"image(s) with the same value in every pixel, which show nothing: "
                       f"{', '.join(study.blank_images)}")
    return tuple(reasons)
