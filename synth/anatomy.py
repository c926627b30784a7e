"""A patient's 3-D anatomy in a spine-following frame, built from C2-C7 boxes and labels.

Everything lives in millimetres in a frame that follows the vertebral column on each sagittal slice:
s runs along the column (down = larger), t runs across it (posterior = larger, 0 on the body centres),
x is the lateral offset from the mid-sagittal plane. Sagittal slices sample (s, t) at fixed x; axial
images sample (x, t) at a fixed s. Both views are cuts of the same anatomy, so they always agree.

The clinical labels are drawn by their definitions:
- disc grade: 1 bulge = diffuse, circumferential, small; 2 protrusion = focal, extent below its base;
  3 extrusion = large and reaching beyond the disc height (often migrating up or down);
- canal grade, from the space the canal leaves the cord at each of the 11 positions: 0 CSF all round;
  1 CSF effaced, cord not deformed; 2 cord flattened; 3 flattened with a bright intramedullary spot;
- alignment 0 (poor): one vertebral body displaced across the column, a visible step (listhesis).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Tuple

import numpy as np
from scipy.interpolate import CubicSpline, PchipInterpolator
from scipy.spatial import cKDTree

from study.challenge import BOX_PADDING_PX, Box, PatientLabels
from study.levels import CANAL_POSITIONS, DISCS, MID_SAGITTAL_SLICE, SAGITTAL_SLICES, VERTEBRAE

if TYPE_CHECKING:
    from .extended import ExtendedAnatomy

# Vertebrae rendered below C7 so that "lowest body" never means C7.
EXTRA_BELOW = ("T1", "T2", "T3")
MIN_DISC_MM = 1.6
# The most the extended thorax's column turns forward below C7 (degrees, the upper thoracic kyphosis).
MAX_KYPHOSIS_DEG = 25.0


@dataclass(frozen=True)
class Frame:
    """The column-following frame of one sagittal slice: a centre curve sampled densely in pixels."""

    points_px: np.ndarray    # (n, 2) x, y
    tangent: np.ndarray      # (n, 2) unit, pointing inferior
    normal: np.ndarray       # (n, 2) unit, pointing posterior
    s_mm: np.ndarray         # (n,) arc length
    spacing_mm: float
    tree: cKDTree = field(repr=False, compare=False)

    @staticmethod
    def through(centres_px: np.ndarray, spacing_mm: float, image_size: int,
                bend_below_deg: float = 0.0, margin_px: float = 40.0) -> "Frame":
        """A smooth curve through body centres (top to bottom), extended past both image edges.

        bend_below_deg: the extension below the last centre turns by this much per step toward anterior,
        as the thoracic kyphosis does (0: straight, the challenge phantom's column).
        """
        c = np.asarray(centres_px, float)
        up = c[0] - c[1]
        down = c[-1] - c[-2]
        n_up = int(np.ceil((c[0, 1] + margin_px) / max(abs(up[1]), 4)))
        n_dn = int(np.ceil((image_size + margin_px - c[-1, 1]) / max(abs(down[1]), 4)))
        if bend_below_deg:
            # One step per level; the kyphosis turns the column by at most MAX_KYPHOSIS_DEG in all (the upper
            # thoracic curve), then it runs straight, so it never turns back up across the image.
            below, p, d, turned = [], c[-1].copy(), down.copy(), 0.0
            while (p[1] < image_size + margin_px or len(below) < 2) and len(below) < 200:
                a = np.deg2rad(min(bend_below_deg, max(0.0, MAX_KYPHOSIS_DEG - turned)))
                turned += np.rad2deg(a)
                d = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ d  # toward anterior (-x)
                p = p + d
                below.append(p.copy())
            lower = np.array(below)
        else:
            lower = c[-1] + down * np.arange(1, n_dn + 1)[:, None]
        # Straight extensions keep the extrapolated column from swinging off the neck.
        pts = np.concatenate([c[0] + up * np.arange(n_up, 0, -1)[:, None], c, lower])
        chord = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
        spline = CubicSpline(chord, pts, bc_type="natural")
        u = np.arange(0, chord[-1], 0.25)
        p = spline(u)
        d = spline(u, 1)
        tan = d / np.linalg.norm(d, axis=1, keepdims=True)
        nor = np.stack([tan[:, 1], -tan[:, 0]], 1)  # tangent rotated so that "down" maps to "right"
        s = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))]) * spacing_mm
        return Frame(p, tan, nor, s, spacing_mm, cKDTree(p))

    def to_local(self, xy_px: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(s, t) in mm of pixel positions (..., 2)."""
        flat = xy_px.reshape(-1, 2)
        _, idx = self.tree.query(flat)
        d = flat - self.points_px[idx]
        s = self.s_mm[idx] + (d * self.tangent[idx]).sum(1) * self.spacing_mm
        t = (d * self.normal[idx]).sum(1) * self.spacing_mm
        return s.reshape(xy_px.shape[:-1]), t.reshape(xy_px.shape[:-1])

    def tilt_at(self, xy_px: np.ndarray) -> float:
        """Angle (radians) of the column from vertical at a point; positive leans posterior going down."""
        _, i = self.tree.query(xy_px)
        return float(np.arctan2(self.tangent[i, 0], self.tangent[i, 1]))


@dataclass(frozen=True)
class Column:
    """Body extents along s on one slice: top/bottom/depth per body, C2 first, then C3..C7, T1..T3."""

    names: Tuple[str, ...]
    top: np.ndarray
    bottom: np.ndarray
    depth: np.ndarray
    dens_top: float      # C2's box top: the dens tip
    c2_body_top: float

    @property
    def centre(self) -> np.ndarray:
        return (self.top + self.bottom) / 2

    def disc_centre(self, j: int) -> float:
        return (self.bottom[j] + self.top[j + 1]) / 2

    def disc_height(self, j: int) -> float:
        return self.top[j + 1] - self.bottom[j]

    def position_s(self, position: str) -> float:
        """s of a canal position: body centre of a vertebra (C2: its body, not the dens) or disc centre."""
        if position in DISCS:
            return self.disc_centre(DISCS.index(position))
        return float(self.centre[self.names.index(position)])

    def depth_at(self, s: np.ndarray) -> np.ndarray:
        return np.interp(s, self.centre, self.depth)


def _solve_tilted_rect(w_box: float, h_box: float, theta: float) -> Tuple[float, float]:
    """Sides (w, h) of a rectangle tilted by theta whose axis-aligned bounding box is w_box x h_box."""
    c, s = np.cos(theta), abs(np.sin(theta))
    det = c * c - s * s
    if det > 0.3:
        w = (w_box * c - h_box * s) / det
        h = (h_box * c - w_box * s) / det
        # A strongly bent frame at an odd box can ask for a sliver; then a plain fit is closer to the box.
        if w > 0.75 * w_box and h > 0.75 * h_box:
            return w, h
    return 0.92 * w_box, 0.92 * h_box


def thoracic_names(n: int) -> Tuple[str, ...]:
    return tuple(f"T{k}" for k in range(1, n + 1))


def build_column(boxes: Mapping[str, Box], frame: Frame, rng_c2: float,
                 below: Tuple[str, ...] = EXTRA_BELOW) -> Column:
    """Body extents along the frame that reproduce the given boxes, with a minimum disc height; `below` names
    the bodies drawn under C7 (thoracic bodies grow a little taller and their discs thinner going down)."""
    sp = frame.spacing_mm
    tops, bots, depths = [], [], []
    dens_top = c2_body_top = 0.0
    for lv in VERTEBRAE:
        b = boxes[lv]
        w_box, h_box = b.width - 2 * BOX_PADDING_PX, b.height - 2 * BOX_PADDING_PX
        if lv == "C2":
            # The C2 box holds the body and the dens; the body is its lower part.
            body_h = h_box * rng_c2
            centre = np.array([b.cx, b.y2 - BOX_PADDING_PX - body_h / 2])
        else:
            centre = np.array([b.cx, b.cy])
        theta = frame.tilt_at(centre)
        w, h = _solve_tilted_rect(w_box, h_box, theta)
        s_c, _ = frame.to_local(centre[None])
        s_c = float(s_c[0])
        if lv == "C2":
            h_total = h * sp
            bottom = s_c + body_h * sp / 2 * (h / h_box)
            tops.append(bottom - h_total * rng_c2)
            dens_top = bottom - h_total
            c2_body_top = tops[-1]
            bots.append(bottom)
        else:
            tops.append(s_c - h * sp / 2)
            bots.append(s_c + h * sp / 2)
        depths.append(w * sp)
    tops, bots, depths = np.array(tops), np.array(bots), np.array(depths)
    for j in range(len(VERTEBRAE) - 1):  # keep a visible disc between neighbours
        gap = tops[j + 1] - bots[j]
        if gap < MIN_DISC_MM:
            cut = (MIN_DISC_MM - gap) / 2
            bots[j] -= cut
            tops[j + 1] += cut
    mean_disc = float(np.mean(tops[1:] - bots[:-1]))
    h7, d7 = bots[-1] - tops[-1], depths[-1]
    for k in range(len(below)):
        # The challenge phantom's three (T1-T3) keep C7's proportions; further down the thoracic bodies
        # grow (about 2 % per level) and their discs thin, as in the real upper thoracic spine.
        grow = 1.03 * (1.02 ** max(0, k - 2))
        top = bots[-1] + mean_disc * (1.05 if k < 3 else 0.85)
        tops = np.append(tops, top)
        bots = np.append(bots, top + h7 * grow)
        depths = np.append(depths, d7 * grow)
    return Column(VERTEBRAE + tuple(below), tops, bots, depths, float(dens_top), float(c2_body_top))


@dataclass(frozen=True)
class Herniation:
    """Disc material beyond the posterior disc margin, e(s, x) = amplitude * along(s) * across(x)."""

    grade: int
    amplitude_mm: float
    s_low: float          # extent along the column
    s_high: float
    power: float          # shape of the profile along s (lower = fuller)
    x0_mm: float
    sigma_x_mm: float     # inf for a diffuse bulge
    lateral_half_mm: float

    def along(self, s: np.ndarray) -> np.ndarray:
        c, half = (self.s_low + self.s_high) / 2, (self.s_high - self.s_low) / 2
        return np.clip(1 - ((s - c) / half) ** 2, 0, None) ** self.power

    def across(self, x: np.ndarray) -> np.ndarray:
        if np.isinf(self.sigma_x_mm):
            return np.clip(1 - (np.abs(x) / self.lateral_half_mm) ** 4, 0, None)
        return np.exp(-((x - self.x0_mm) ** 2) / (2 * self.sigma_x_mm ** 2))

    def extent(self, s: np.ndarray, x: np.ndarray) -> np.ndarray:
        return self.amplitude_mm * self.along(s) * self.across(x)

    def max_across_cord(self, cord_half_width: float) -> float:
        xs = np.linspace(-cord_half_width, cord_half_width, 25)
        return float(self.across(xs).max())


def draw_herniation(grade: int, s_c: float, height: float, body_width: float,
                    rng: np.random.Generator) -> Optional[Herniation]:
    """Disc material for a disc grade, by its clinical definition (see the module docstring)."""
    half = height / 2
    if grade == 0:
        return None
    if grade == 1:  # bulge: diffuse, symmetric, small, spans the disc height
        return Herniation(1, rng.uniform(1.3, 2.0), s_c - half - 0.9, s_c + half + 0.9, 0.5, 0.0, np.inf,
                          body_width / 2 + 1.0)
    if grade == 2:  # protrusion: focal, larger, base wider than its extent, within the disc height
        return Herniation(2, rng.uniform(2.6, 3.8), s_c - half - 0.7, s_c + half + 0.7, 0.6,
                          rng.uniform(-2.5, 2.5), rng.uniform(2.3, 3.2), body_width / 2)
    # extrusion: large and beyond the disc height, usually migrating up or down behind a body
    direction = rng.choice([-1, 1, 0], p=[0.4, 0.4, 0.2])
    reach = rng.uniform(3.5, 6.5)
    lo = s_c - half - (reach if direction == -1 else 1.8)
    hi = s_c + half + (reach if direction == 1 else 1.8)
    return Herniation(3, rng.uniform(4.3, 6.3), lo, hi, 0.35, rng.uniform(-2.0, 2.0), rng.uniform(2.6, 3.6),
                      body_width / 2)


def canal_space_mm(grade: int, cord_ap_mm: float, rng: np.random.Generator) -> float:
    """Antero-posterior space the canal leaves at a position, by the canal grade's definition."""
    if grade == 0:   # CSF all around: clear gaps in front of and behind the cord
        return cord_ap_mm + rng.uniform(3.0, 5.2)
    if grade == 1:   # CSF effaced but the cord keeps its shape
        return cord_ap_mm + rng.uniform(0.0, 0.7)
    return cord_ap_mm * rng.uniform(0.5, 0.72)   # 2 and 3: cord flattened


@dataclass(frozen=True)
class Lesion:
    """Bright intramedullary T2 signal (canal grade 3) at one position."""

    s: float
    x: float
    half_s: float
    half_x: float


@dataclass(frozen=True)
class SliceAnatomy:
    """Everything needed to cut one sagittal slice's geometry (and, for slice 6, the axial images)."""

    frame: Frame
    column: Column
    x_mm: float   # lateral offset of this sagittal slice


@dataclass(frozen=True)
class PatientAnatomy:
    """The patient-level anatomy shared by all slices."""

    slices: Dict[int, SliceAnatomy]
    labels: PatientLabels
    spacing_mm: float
    cord_ap_mm: float
    cord_half_width_mm: float
    sac_half_width_mm: float
    pll_mm: float
    herniations: Tuple[Optional[Herniation], ...]       # one per disc, in slice-6 s coordinates
    canal_space: Tuple[float, ...]                      # per canal position
    lesions: Tuple[Lesion, ...]
    listhesis_level: Optional[int]                       # index into VERTEBRAE
    listhesis_mm: float
    nucleus_hydrated: Tuple[bool, ...]                   # per disc
    params: Dict[str, float]                             # soft-tissue shape parameters
    # Head above the foramen magnum and the thorax below C7 (synth/extended.py); None for the challenge
    # phantom, which draws only the neck the challenge images show.
    extended: Optional["ExtendedAnatomy"] = None

    @property
    def mid(self) -> SliceAnatomy:
        return self.slices[MID_SAGITTAL_SLICE]


def build_anatomy(boxes: Mapping[int, Mapping[str, Box]], labels: PatientLabels, rng: np.random.Generator,
                  image_size: int, extended: Optional["ExtendedAnatomy"] = None,
                  spacing_mm: Optional[float] = None, slice_gap_mm: Optional[float] = None) -> PatientAnatomy:
    """Draw the patient's anatomy: frames from the boxes, lesions from the labels, the rest at random.

    extended: also a head and a thorax (the wider views of real scans); spacing_mm / slice_gap_mm fix the
    pixel size and the distance between sagittal slices instead of drawing them (the draws still happen,
    so the random stream is the same either way).
    """
    spacing = rng.uniform(1.15, 1.35)
    slice_gap = rng.uniform(3.0, 4.0)
    spacing = spacing if spacing_mm is None else float(spacing_mm)
    slice_gap = slice_gap if slice_gap_mm is None else float(slice_gap_mm)
    below = EXTRA_BELOW if extended is None else thoracic_names(extended.n_thoracic)
    bend = 0.0 if extended is None else extended.kyphosis_deg_per_step
    margin = 40.0 if extended is None else 80.0
    c2_body_fraction = rng.uniform(0.56, 0.64)
    slices = {}
    for k in SAGITTAL_SLICES:
        bk = boxes[k]
        centres = []
        for lv in VERTEBRAE:
            b = bk[lv]
            cy = b.y2 - BOX_PADDING_PX - (b.height - 2 * BOX_PADDING_PX) * c2_body_fraction / 2 if lv == "C2" else b.cy
            centres.append((b.cx, cy))
        frame = Frame.through(np.array(centres), spacing, image_size, bend, margin) if extended is not None \
            else Frame.through(np.array(centres), spacing, image_size)
        slices[k] = SliceAnatomy(frame, build_column(bk, frame, c2_body_fraction, below),
                                 (k - MID_SAGITTAL_SLICE) * slice_gap)
    col = slices[MID_SAGITTAL_SLICE].column

    cord_ap = rng.uniform(6.0, 7.4)
    cord_hw = rng.uniform(5.0, 6.0)
    sac_hw = cord_hw + rng.uniform(2.2, 3.2)
    herniations = []
    hydrated = []
    for j, d in enumerate(DISCS):
        g = labels.disc_grades[j]
        herniations.append(draw_herniation(g, col.disc_centre(j), col.disc_height(j),
                                           float(np.interp(col.disc_centre(j), col.centre, col.depth)) * 1.2, rng))
        # Herniated discs are more often desiccated (dark nucleus); not a rule, so grade stays shape-defined.
        hydrated.append(bool(rng.random() < (0.85 if g == 0 else 0.45)))
    space = tuple(canal_space_mm(g, cord_ap, rng) for g in labels.canal_grades)
    lesions = []
    for p, g in zip(CANAL_POSITIONS, labels.canal_grades):
        if g == 3:
            lesions.append(Lesion(col.position_s(p) + rng.uniform(-0.6, 0.6), rng.uniform(-1.2, 1.2),
                                  rng.uniform(2.2, 3.5), rng.uniform(1.8, 2.5)))
    listhesis_level, listhesis_mm = None, 0.0
    if labels.alignment == 0:
        listhesis_level = int(rng.integers(1, len(VERTEBRAE)))   # C3..C7 slips against its neighbours
        listhesis_mm = float(rng.choice([-1, 1]) * rng.uniform(2.8, 4.2))
    params = {
        "anterior_neck_mm": rng.uniform(40, 52),
        "posterior_neck_mm": rng.uniform(58, 78),
        "neck_half_width_mm": rng.uniform(52, 64),
        "fat_mm": rng.uniform(3.5, 7.0),
        "airway_radius_mm": rng.uniform(5.5, 8.5),
        "prevertebral_upper_mm": rng.uniform(2.5, 4.5),
        "prevertebral_lower_mm": rng.uniform(9, 14),
        "epidural_fat_mm": rng.uniform(0.4, 1.4),
        "flavum_mm": rng.uniform(1.0, 2.2),
        "spinous_scale": rng.uniform(0.85, 1.2),
        "muscle_septum_mm": rng.uniform(18, 30),
    }
    return PatientAnatomy(slices, labels, spacing, cord_ap, cord_hw, sac_hw, rng.uniform(0.5, 0.9),
                          tuple(herniations), space, tuple(lesions), listhesis_level, listhesis_mm,
                          tuple(hydrated), params, extended)
