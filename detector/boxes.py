"""The LevelBoxes hand-off: one box per vertebra C2..C7 on each sagittal slice, plus the five disc boxes."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, Mapping, Tuple

from study.challenge import BOX_PADDING_PX, Box, PatientBoxes, body_centre  # noqa: F401 (body_centre: re-exported)
from study.levels import CANAL_POSITIONS, DISCS, MID_SAGITTAL_SLICE, SAGITTAL_SLICES, VERTEBRAE, disc_neighbours

MIN_DISC_GAP_PX = 2.0
# Why a level outside the image's field of view is not graded (reports say it in these words).
OUTSIDE_FOV = "outside the field of view"


@dataclass(frozen=True)
class LevelBox:
    """A located level: its box, how sure we are, and whether it was filled in from its neighbours."""

    box: Box
    confidence: float = 1.0
    interpolated: bool = False


def disc_box_between(upper: Box, lower: Box) -> Box:
    """The disc box between two vertebra boxes (same padding convention as the vertebra boxes).

    Rule: the disc spans from the upper body's lower edge to the lower body's upper edge (each taken
    without the 3 px padding, at least MIN_DISC_GAP_PX apart), is as wide as the mean of the two
    bodies and is centred between them; then it gets the same 3 px padding as the vertebra boxes.
    """
    top = upper.y2 - BOX_PADDING_PX
    bottom = lower.y1 + BOX_PADDING_PX
    if bottom - top < MIN_DISC_GAP_PX:
        mid = (top + bottom) / 2
        top, bottom = mid - MIN_DISC_GAP_PX / 2, mid + MIN_DISC_GAP_PX / 2
    cx = (upper.cx + lower.cx) / 2
    half_w = (upper.width + lower.width) / 4
    return Box(cx - half_w, top - BOX_PADDING_PX, cx + half_w, bottom + BOX_PADDING_PX)


def disc_boxes(vertebrae: Mapping[str, Box]) -> Dict[str, Box]:
    return {d: disc_box_between(vertebrae[a], vertebrae[b]) for d in DISCS for a, b in [disc_neighbours(d)]}


@dataclass(frozen=True)
class LevelBoxes:
    """Every level of one patient: vertebrae[slice][level] and discs[slice][disc], each a LevelBox."""

    patient_id: str
    vertebrae: Mapping[int, Mapping[str, LevelBox]]
    discs: Mapping[int, Mapping[str, LevelBox]]
    warnings: Tuple[str, ...] = ()
    # Vertebrae (VERTEBRAE order) that lie outside the image or its field of view (on padding): never
    # detected, their boxes only extrapolated (interpolated, confidence 0) so that every level has one.
    # Nothing may be graded from them: see outside_positions.
    outside_fov: Tuple[str, ...] = ()

    @staticmethod
    def from_patient_boxes(boxes: PatientBoxes) -> "LevelBoxes":
        """Given (ground-truth or user) vertebra boxes: confidence 1, discs derived by disc_box_between."""
        vert = {s: {lv: LevelBox(boxes.boxes[s][lv]) for lv in VERTEBRAE} for s in SAGITTAL_SLICES}
        discs = {s: {d: LevelBox(b) for d, b in disc_boxes(boxes.boxes[s]).items()} for s in SAGITTAL_SLICES}
        return LevelBoxes(boxes.patient_id, vert, discs)

    def standing_in(self, standins: Mapping[int, int]) -> "LevelBoxes":
        """These boxes with each stand-in slice (Study.sagittal_standins: missing slice -> slice present) given
        the boxes of the slice whose image it carries; unchanged without stand-ins."""
        if not standins:
            return self
        return replace(self, vertebrae={s: self.vertebrae[standins.get(s, s)] for s in SAGITTAL_SLICES},
                       discs={s: self.discs[standins.get(s, s)] for s in SAGITTAL_SLICES})

    def as_patient_boxes(self) -> PatientBoxes:
        return PatientBoxes(self.patient_id, {s: {lv: lb.box for lv, lb in self.vertebrae[s].items()}
                                              for s in SAGITTAL_SLICES})

    def box(self, position: str, slice_number: int = MID_SAGITTAL_SLICE) -> Box:
        """The box of a canal position (vertebra or disc) on a slice."""
        if position in DISCS:
            return self.discs[slice_number][position].box
        return self.vertebrae[slice_number][position].box

    @property
    def interpolated_levels(self) -> Tuple[str, ...]:
        return tuple(lv for lv in VERTEBRAE if any(self.vertebrae[s][lv].interpolated for s in SAGITTAL_SLICES))

    @property
    def outside_discs(self) -> Tuple[str, ...]:
        """Discs outside the field of view: those with either vertebra outside it."""
        return tuple(d for d in DISCS if any(v in self.outside_fov for v in disc_neighbours(d)))

    @property
    def outside_positions(self) -> Tuple[str, ...]:
        """The canal positions (CANAL_POSITIONS order) that must not be graded: the vertebrae outside the
        field of view and the discs next to them. The one rule every stage and the report follow."""
        out = set(self.outside_fov) | set(self.outside_discs)
        return tuple(p for p in CANAL_POSITIONS if p in out)
