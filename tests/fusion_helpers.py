"""Hand-built C2-C7 columns for the fusion tests: boxes from centre offsets, in the challenge padding."""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

from study.challenge import Box, PatientBoxes
from study.levels import SAGITTAL_SLICES, VERTEBRAE

PAD = 3.0
HALF_DEPTH, HALF_HEIGHT, PITCH = 8.0, 8.0, 22.0


def column(offsets_px: Sequence[float] = (0, 0, 0, 0, 0, 0), x0: float = 110.0, y0: float = 40.0,
           tilt_deg: float = 0.0, shift_from: Optional[int] = None, shift_px: float = 0.0,
           pad: float = PAD) -> Dict[str, Box]:
    """Boxes of one slice: centres at y0 + i*PITCH, x = x0 + offset (negative = anterior), rotated by tilt.

    shift_from/shift_px move that vertebra and all below it posteriorly (+x): a listhesis step.
    """
    out: Dict[str, Box] = {}
    t = math.radians(tilt_deg)
    for i, lv in enumerate(VERTEBRAE):
        dx, dy = offsets_px[i], i * PITCH
        cx = x0 + dx * math.cos(t) + dy * math.sin(t)
        cy = y0 - dx * math.sin(t) + dy * math.cos(t)
        if shift_from is not None and i >= shift_from:
            cx += shift_px
        out[lv] = Box(cx - HALF_DEPTH - pad, cy - HALF_HEIGHT - pad, cx + HALF_DEPTH + pad, cy + HALF_HEIGHT + pad)
    return out


def arc(depth_px: float) -> list:
    """Offsets of a circular-ish arc through C2 and C7: +depth bows anteriorly (lordosis)."""
    return [-depth_px * math.sin(math.pi * i / 5) for i in range(6)]


def patient(pid: str, slice_boxes: Dict[str, Box]) -> PatientBoxes:
    return PatientBoxes(pid, {s: dict(slice_boxes) for s in SAGITTAL_SLICES})


def all_slices(slice_boxes: Dict[str, Box]) -> Dict[int, Dict[str, Box]]:
    return {s: dict(slice_boxes) for s in SAGITTAL_SLICES}
