"""Match stored axial slices to the 11 canal positions in patient space, once the detector has placed the levels."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from .challenge import body_centre
from .geometry import AXIAL_CENTRE_POSTERIOR_MM, AxialSlice, ImagePlane, model_axial_plane, resample, unit_range
from .levels import CANAL_POSITIONS, MID_SAGITTAL_SLICE
from .study import Study

log = logging.getLogger(__name__)

# An axial slice serves a position when the level's centre lies within this distance of its plane, and
# nearer to it than to the neighbouring positions (half the gap to them): vertebra and disc centres are
# 8-10 mm apart in the neck, so a slice farther off shows the neighbouring structure.
MAX_DISTANCE_MM = 5.0
# Beyond this angle between the slice normal and the column a slice is no cross-section of the column.
MAX_TILT_DEG = 45.0


@dataclass(frozen=True)
class AxialMatch:
    """The slice chosen for one position and how well it fits."""

    position: str
    slice_index: int        # index into the pending slices
    distance_mm: float      # level centre to the slice plane, along the plane normal
    tilt_deg: float         # slice normal vs the column's direction at the level
    label: str


def level_points(level_boxes, plane: ImagePlane) -> Dict[str, np.ndarray]:
    """Patient positions (mm) of the 11 level centres on the mid-sagittal image, top to bottom."""
    xy = {}
    for p in CANAL_POSITIONS:
        b = level_boxes.box(p, MID_SAGITTAL_SLICE)
        # C2's axial image goes through its body, not the dens its box also holds.
        xy[p] = body_centre(b, p) if p == "C2" else (b.cx, b.cy)
    return {p: plane.to_world(np.asarray(v, float)) for p, v in xy.items()}


def column_directions(points: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Unit direction of the column (pointing down the neck) at each position, from its neighbours."""
    pts = [points[p] for p in CANAL_POSITIONS]
    out = {}
    for i, p in enumerate(CANAL_POSITIONS):
        a, b = pts[max(i - 1, 0)], pts[min(i + 1, len(pts) - 1)]
        d = b - a
        n = np.linalg.norm(d)
        out[p] = d / n if n > 1e-6 else np.array([0.0, 0.0, -1.0])
    return out


def tolerances_mm(points: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """Per position: MAX_DISTANCE_MM, or half the distance to the nearest neighbouring position if less."""
    pts = [points[p] for p in CANAL_POSITIONS]
    out = {}
    for i, p in enumerate(CANAL_POSITIONS):
        gaps = [np.linalg.norm(pts[j] - pts[i]) for j in (i - 1, i + 1) if 0 <= j < len(pts)]
        out[p] = float(min([MAX_DISTANCE_MM] + [g / 2 for g in gaps]))
    return out


def match_axials(sagittal_plane: ImagePlane, level_boxes, slices: Sequence[AxialSlice]
                 ) -> Tuple[Dict[str, AxialMatch], List[str]]:
    """For each canal position, the slice whose plane passes closest to the level's centre (mm along the
    slice normal, so stacks angled along the discs are measured correctly), if within tolerance, crossing
    the column at under MAX_TILT_DEG, with the level inside its field of view. Returns the matches and a
    warning per position left without a slice. Positions outside the sagittal field of view
    (LevelBoxes.outside_positions) are not graded, so they get no slice and no warning."""
    points = level_points(level_boxes, sagittal_plane)
    dirs = column_directions(points)
    tol = tolerances_mm(points)
    matches: Dict[str, AxialMatch] = {}
    notes: List[str] = []
    outside = set(getattr(level_boxes, "outside_positions", ()))
    for p in CANAL_POSITIONS:
        if p in outside:
            continue
        best, nearest = None, None
        for k, sl in enumerate(slices):
            d = abs(sl.plane.distance_mm(points[p]))
            xy, _ = sl.plane.to_image(points[p])
            if not sl.plane.contains(xy):
                continue
            tilt = float(np.degrees(np.arccos(min(1.0, abs(float(sl.plane.normal @ dirs[p]))))))
            if tilt > MAX_TILT_DEG:
                continue
            if nearest is None or d < nearest[0]:
                nearest = (d, k)
            if d <= tol[p] and (best is None or (d, tilt) < (best.distance_mm, best.tilt_deg)):
                best = AxialMatch(p, k, d, tilt, sl.label)
        if best is not None:
            matches[p] = best
        elif slices:
            where = f"nearest {nearest[0]:.1f} mm" if nearest else "no slice crosses the column there"
            notes.append(f"no axial slice within {tol[p]:.1f} mm of {p} ({where}); {p} is graded from the "
                         "sagittal images alone")
    return matches, notes


def axial_view(sl: AxialSlice, level_point_mm: np.ndarray) -> Tuple[np.ndarray, ImagePlane]:
    """The slice on the model's axial grid (0.7 mm/px, anterior up, patient left on the right), centred
    AXIAL_CENTRE_POSTERIOR_MM behind the level's body centre, scaled to [0, 1]."""
    plane = model_axial_plane(sl.plane, level_point_mm, posterior_shift_mm=AXIAL_CENTRE_POSTERIOR_MM)
    image, inside = resample(sl.pixels, sl.plane, plane)
    (unit,), _, _ = unit_range([image], [inside])
    return unit, plane


def expected_canal_px(plane: ImagePlane) -> Tuple[float, float]:
    """Where the sagittal detection expects the canal on an axial view made by axial_view: the view's centre,
    AXIAL_CENTRE_POSTERIOR_MM behind the level's body centre (the body's centre lies about 8 mm in front of
    its posterior wall, the cord's about 8 mm behind it). (x, y) in pixel indices (pixel centres at integers), as
    classifier.crops.find_canal takes it. On the real 3-D T2 reformats of ../shared the cord lay -3 to +18 px
    along the antero-posterior axis and -8 to +2 px across from it."""
    (x, y), _ = plane.to_image(plane.centre_mm)
    return float(x) - 0.5, float(y) - 0.5


def attach_axials(study: Study, level_boxes) -> Study:
    """A new Study whose `axial` holds, for each canal position, the pending axial slice matched to it.

    Call between the detector and the classifier. Studies without pending slices (challenge PNGs, which
    come with their axials) are returned unchanged. Positions without a slice stay out of `axial`, with a
    warning; the classifier then grades them from the sagittal view. Never raises: if matching fails, the
    pending slices are dropped with a warning.
    """
    if not study.pending_axial or study.sagittal_geometry is None:
        return study
    try:
        return _attach(study, level_boxes)
    except Exception as e:  # the patient is still read, from the sagittal images alone
        log.warning("axial matching failed for %s: %s", study.patient_id, type(e).__name__)
        return dataclasses.replace(study, pending_axial=(), warnings=tuple(study.warnings) + (
            f"axial matching failed ({type(e).__name__}: {e}); every level is graded from the sagittal "
            "images alone",))


def _attach(study: Study, level_boxes) -> Study:
    slices = study.pending_axial
    matches, notes = match_axials(study.sagittal_geometry, level_boxes, slices)
    points = level_points(level_boxes, study.sagittal_geometry)
    axial = dict(study.axial)
    geometry = dict(study.axial_geometry)
    sources = dict(study.sources)
    provenance = list(study.provenance)
    blank = list(study.blank_images)
    instances = dict(study.dicom_instances)
    for p, m in matches.items():
        axial[p], geometry[p] = axial_view(slices[m.slice_index], points[p])
        if slices[m.slice_index].instance is not None:
            instances[f"tra/{p}"] = slices[m.slice_index].instance
        sources[f"tra/{p}"] = f"{m.label}, {m.distance_mm:.1f} mm from the level centre"
        if Study.is_blank(slices[m.slice_index].pixels) or Study.is_blank(axial[p]):
            blank.append(f"tra/{p}")
            notes.append(f"tra/{p} ({m.label}): all pixels have the same value around the level; the image "
                         "carries no information")
        provenance.append(f"axial {p}: {m.label}, {m.distance_mm:.1f} mm from the level centre, "
                          f"{m.tilt_deg:.0f} deg from the column's axis")
    used = {m.slice_index for m in matches.values()}
    if len(used) < len(slices):
        provenance.append(f"axial: {len(slices) - len(used)} of {len(slices)} slices matched no level")
    return dataclasses.replace(study, axial=axial, axial_geometry=geometry, sources=sources,
                               provenance=tuple(provenance), warnings=tuple(study.warnings) + tuple(notes),
                               blank_images=tuple(blank), pending_axial=(), dicom_instances=instances)
