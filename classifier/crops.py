"""Crop geometry for training and inference: column-aligned 2.5D sagittal crops and canal-centred axial crops."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, Mapping, Optional, Tuple

import cv2
import numpy as np

from detector.boxes import LevelBoxes, body_centre
from study.axial_match import expected_canal_px
from study.fov import padding_mask
from study.levels import CANAL_POSITIONS, DISCS, MID_SAGITTAL_SLICE, VERTEBRAE, disc_neighbours
from study.study import Study

from .config import ClassifierConfig

# ----------------------------------------------------------------------------------------------
# Canal finder (axial images)
# ----------------------------------------------------------------------------------------------

# Canal sizes (semi-axes, px, lateral x anterior-posterior) on the 224 grid at 0.6-0.8 mm/px: open sacs
# and, last, the flat band a compressed canal leaves.
_CANAL_SEMI_AXES = ((10.0, 7.0), (12.0, 8.0), (14.0, 9.0), (13.0, 5.0))
_FINDER_DOWNSAMPLE = 2
# The midline: the neck's mirror axis, searched at a quarter of the resolution over these tilts
# (the phantom's axial cuts turn by up to 8 degrees) and offsets (fraction of the width from the centre).
_MIDLINE_DOWNSAMPLE = 4
_MIDLINE_ANGLES_DEG = tuple(range(-12, 13, 3))
_MIDLINE_MAX_OFFSET = 0.3
# Search region in the midline's frame around the neck's centroid (u: along the midline, posterior > 0;
# v: across it). Measured on 440 phantom axial cuts: u in [-46, 13] px, the canal within 1.4 px of the
# midline (2 px when the tilt is searched in 3-degree steps).
_SEARCH_U = (-55.0, 25.0)
_SEARCH_V = 5.0
_PRIOR_SD = (40.0, 3.0)  # (u, v) px: a weak pull towards the centroid and the midline
_PRIOR_WEIGHT = 0.04
# A peak counts as a canal candidate when its score reaches this fraction of the best one; of the
# candidates the most posterior wins, because the bright disc nucleus and body lie in front of the canal.
_CANDIDATE_FRACTION = 0.5
_PEAK_SEPARATION_PX = 5
# Where padding cuts the image (a reformat of a 3-D sagittal volume is a strip as wide as the volume, about
# 50 mm), the mirror axis is measured on the field of view alone, and only on axes whose two mirrored halves
# overlap on at least this fraction of it: a small overlap correlates well by chance (on real reformats a
# 50 % floor let an axis 18 px off the canal win on one of 102 planes; 75 % none).
_MIN_MIRROR_OVERLAP = 0.75
# With geometry (DICOM/NIfTI) the axial view lies on the model grid, 0.7 mm/px, and the canal's expected
# place is known from the sagittal detection (study.axial_match.expected_canal_px); it replaces the neck's
# centroid, whose outline a field of view narrower than the neck cuts. Measured on the real 3-D T2 reformats
# of sub-errsm11/18/21 and the real C2-C5 crop (../shared): the cord lies -3 to +18 px along the midline from
# that place (a detector box, the body's depth and an oblique plane move it), so the search reaches 30 px
# either way, with a weaker pull than across the midline. A real canal is also larger than the phantom's: the
# cervical sac is 20-25 mm across and 12-17 mm deep, the largest at C1-C2 (semi-axes up to about 18 x 12 px
# at 0.7 mm/px); without those sizes a wide sac gave a second peak at its dorsal edge, which, being the most
# posterior, won (6 mm off at the C2 body of sub-errsm21, views centred on its cord).
_GEOMETRY_SEARCH_U = (-30.0, 30.0)
_GEOMETRY_PRIOR_SD = (15.0, 3.0)
_GEOMETRY_CANAL_SEMI_AXES = _CANAL_SEMI_AXES + ((16.0, 10.0), (18.0, 12.0))
# On a real T2 the CSF ring is the brightest near the expected place, but the lamina junction and the
# epidural fat behind a thin canal ring too; the phantom's bright disc nucleus, which the most-posterior
# rule guards against, is held off by the prior here. So with geometry a candidate behind the best peak must
# reach 70 % of it. Measured (real clinical 2-D axial stack ../shared/.../cervical_axial_t2, 19 slices, canal
# read by eye, views centred on it): 0.5 took the laminae on 2 of 19 slices; 0.7 none (17 of 19 right with the
# expected place 9 mm behind the canal). On 880 phantom cuts with the expected place within 10 px of the cord:
# 3 beyond 6 px at 0.7, 1 at 0.5, 12 when the best peak always wins.
_GEOMETRY_CANDIDATE_FRACTION = 0.7


@dataclass(frozen=True)
class CanalFinding:
    """Where the canal is in one axial image: centre (px), the AP axis tilt, and the filter score."""

    x: float
    y: float
    angle_rad: float  # tilt of the neck's antero-posterior axis from the image vertical
    score: float


def _ellipse(a: float, b: float, n: int) -> np.ndarray:
    r = (n - 1) / 2
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return ((xx / a) ** 2 + (yy / b) ** 2 <= 1).astype(np.float32)


@lru_cache(maxsize=None)
def _canal_kernel(a: float, b: float) -> np.ndarray:
    """Bright CSF ring around a darker cord, set against a darker surround; each part mean-normalised."""
    n = 2 * int(np.ceil(1.6 * max(a, b))) + 3
    inner, full, outer = _ellipse(0.55 * a, 0.55 * b, n), _ellipse(a, b, n), _ellipse(1.5 * a, 1.5 * b, n)
    ring, surround = full - inner, outer - full

    def mean(k):
        return k / max(k.sum(), 1.0)

    # The inner term is light so that a compressed canal (CSF gone, cord flattened) still scores.
    return mean(ring) - 0.25 * mean(inner) - 0.75 * mean(surround)


def _neck_centre(small: np.ndarray) -> Optional[Tuple[float, float]]:
    """Centroid (x, y) of the neck on a downsampled image: the largest bright region, holes filled."""
    u8 = (np.clip(small, 0, 1) * 255).astype(np.uint8)
    otsu, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    n, labels, stats, _ = cv2.connectedComponentsWithStats((u8 > otsu * 0.5).astype(np.uint8), connectivity=8)
    if n <= 1:
        return None
    neck = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    # Fill holes (airway, dark muscle): whatever the border cannot reach belongs to the neck.
    outside = np.pad(1 - neck, 1, constant_values=1)
    cv2.floodFill(outside, None, (0, 0), 2)
    m = cv2.moments((outside[1:-1, 1:-1] != 2).astype(np.uint8), binaryImage=True)
    if m["m00"] < 1:
        return None
    return m["m10"] / m["m00"], m["m01"] / m["m00"]


def _midline(small: np.ndarray) -> Tuple[float, float, float]:
    """The neck's left-right mirror axis on a downsampled image: (x, y) of a point on it and its tilt.

    Mirror symmetry, unlike the outline's moments, survives a neck cut off by the image edge.
    Returns (x, y) of the axis at the image's centre row and its tilt from vertical (radians).
    """
    h, w = small.shape
    centre = ((w - 1) / 2, (h - 1) / 2)
    margin = int(w * _MIDLINE_MAX_OFFSET)
    best = (-2.0, 0.0, 0)
    for deg in _MIDLINE_ANGLES_DEG:
        rot = cv2.getRotationMatrix2D(centre, float(deg), 1.0)
        r = cv2.warpAffine(small, rot, (w, h), flags=cv2.INTER_LINEAR)
        template = np.ascontiguousarray(r[:, ::-1][:, margin:w - margin])
        match = cv2.matchTemplate(r, template, cv2.TM_CCOEFF_NORMED)[0]
        k = int(np.argmax(match))
        if match[k] > best[0]:
            best = (float(match[k]), float(deg), k)
    score, deg, k = best
    # Template column j (rotated column w-1-margin-j) matched rotated column k+j: the axis is their middle.
    axis_x = (k + w - 1 - margin) / 2
    return _axis(centre, deg, axis_x)


def _axis(centre: Tuple[float, float], deg: float, axis_x: float) -> Tuple[float, float, float]:
    """The mirror axis found at column axis_x of the image turned by deg about centre, in the image's frame:
    (x, y) of its point on the centre row of the turned image, and its tilt from vertical (radians)."""
    inverse = cv2.invertAffineTransform(cv2.getRotationMatrix2D(centre, deg, 1.0))
    x, y = inverse @ np.array([axis_x, centre[1], 1.0])
    down = inverse[:, :2] @ np.array([0.0, 1.0])
    return float(x), float(y), float(np.arctan2(down[0], down[1]))


def _midline_in_view(small: np.ndarray, inside: np.ndarray) -> Tuple[float, float, float]:
    """As _midline, for an image whose field of view (`inside`) padding cuts: pixels outside it count
    for neither half, so the edges of the field of view (a strip's borders) cannot pose as the neck's axis.

    Every axis at the searched tilts is scored by the correlation of the pixels with their mirror images
    where both lie inside; axes whose mirrored halves overlap on less than _MIN_MIRROR_OVERLAP of the field
    of view are not considered.
    """
    h, w = small.shape
    centre = ((w - 1) / 2, (h - 1) / 2)
    need = max(_MIN_MIRROR_OVERLAP * float(inside.sum()), 16.0)
    best = (-2.0, 0.0, centre[0])
    for deg in _MIDLINE_ANGLES_DEG:
        rot = cv2.getRotationMatrix2D(centre, float(deg), 1.0)
        r = cv2.warpAffine(small, rot, (w, h), flags=cv2.INTER_LINEAR)
        m = cv2.warpAffine(inside.astype(np.uint8), rot, (w, h), flags=cv2.INTER_NEAREST) > 0
        mirror, mirror_in = r[:, ::-1], m[:, ::-1]
        # Axis at turned column (w - 1 + t) / 2: column j pairs with column w - 1 + t - j, i.e. mirror[:, j - t].
        for t in range(-(w - 1), w):
            a_cols, b_cols = (slice(t, w), slice(0, w - t)) if t >= 0 else (slice(0, w + t), slice(-t, w))
            both = m[:, a_cols] & mirror_in[:, b_cols]
            if both.sum() < need:
                continue
            a, b = r[:, a_cols][both], mirror[:, b_cols][both]
            a, b = a - a.mean(), b - b.mean()
            norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
            score = float((a * b).sum()) / norm if norm > 0 else -2.0
            if score > best[0]:
                best = (score, float(deg), (w - 1 + t) / 2)
    return _axis(centre, best[1], best[2])


def find_canal(image: np.ndarray, expected: Optional[Tuple[float, float]] = None) -> CanalFinding:
    """Centre of the spinal canal in an axial T2 image (anterior up) of the cervical spine.

    The neck's mirror axis is its midline (measured on the field of view alone where padding cuts the
    image); a centre on it comes from the neck's outline or, where the image's geometry is known,
    `expected`: the (x, y) pixel where the sagittal detection puts the canal (study.axial_match.
    expected_canal_px). Along the midline around that centre a multi-size ring filter (bright CSF around
    a darker cord) scores candidates; among the strong peaks the most posterior is the canal, since the
    bright nucleus and the vertebral body lie in front of it. With `expected` the search is centred there,
    the filter also has the sizes of a real canal, and a peak must be stronger to count (see the
    _GEOMETRY_ settings). On an image without padding and without `expected` (the challenge layout) the
    result is the finder's as designed on the challenge phantom (whole neck in view).
    """
    image = np.asarray(image, np.float32)
    h, w = image.shape
    q = _MIDLINE_DOWNSAMPLE
    quarter = cv2.resize(image, (w // q, h // q), interpolation=cv2.INTER_AREA)
    inside = padding_mask(image)
    if inside.all():
        mx, my, angle = _midline(quarter)
    else:  # quarter pixels wholly inside the field of view
        inside_q = cv2.resize(inside.astype(np.float32), (w // q, h // q), interpolation=cv2.INTER_AREA) > 0.999
        mx, my, angle = _midline_in_view(quarter, inside_q)
    ca, sa = np.cos(angle), np.sin(angle)
    if expected is None:
        centre = _neck_centre(quarter)
        search_u, prior_sd, semi_axes, fraction = _SEARCH_U, _PRIOR_SD, _CANAL_SEMI_AXES, _CANDIDATE_FRACTION
    else:
        centre = ((expected[0] + 0.5) / q - 0.5, (expected[1] + 0.5) / q - 0.5)
        search_u, prior_sd, semi_axes = _GEOMETRY_SEARCH_U, _GEOMETRY_PRIOR_SD, _GEOMETRY_CANAL_SEMI_AXES
        fraction = _GEOMETRY_CANDIDATE_FRACTION
    fallback = (w / 2, h / 2) if expected is None else (float(expected[0]), float(expected[1]))
    if centre is not None:  # slide the centre onto the midline
        t = (centre[0] - mx) * sa + (centre[1] - my) * ca
        mx, my = mx + t * sa, my + t * ca
    cx, cy = (mx + 0.5) * q - 0.5, (my + 0.5) * q - 0.5
    f = _FINDER_DOWNSAMPLE
    # Work on the search region's bounding box (plus the largest kernel's reach) only.
    corners = [(cx + u * sa + v * ca, cy + u * ca - v * sa) for u in search_u for v in (-_SEARCH_V, _SEARCH_V)]
    reach = int(np.ceil(1.6 * max(max(a, b) for a, b in semi_axes))) + 2 * f
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    x0 = max(0, (int(min(xs)) - reach) // f * f)
    y0 = max(0, (int(min(ys)) - reach) // f * f)
    x1 = min(w, (int(max(xs)) + reach + f) // f * f)
    y1 = min(h, (int(max(ys)) + reach + f) // f * f)
    if x1 - x0 < 4 * f or y1 - y0 < 4 * f:
        return CanalFinding(*fallback, angle, 0.0)
    small = cv2.resize(image[y0:y1, x0:x1], ((x1 - x0) // f, (y1 - y0) // f), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:small.shape[0], 0:small.shape[1]].astype(np.float32)
    xx, yy = x0 + (xx + 0.5) * f - 0.5, y0 + (yy + 0.5) * f - 0.5
    u = (xx - cx) * sa + (yy - cy) * ca
    v = (xx - cx) * ca - (yy - cy) * sa
    window = (np.abs(v) < _SEARCH_V) & (u > search_u[0]) & (u < search_u[1])
    if not window.any():
        return CanalFinding(*fallback, angle, 0.0)
    values_in = small[window]
    k99 = int(0.99 * (values_in.size - 1))
    small = small / max(float(np.partition(values_in, k99)[k99]), 1e-3)
    response = None
    for a, b in semi_axes:
        r = cv2.filter2D(small, -1, _canal_kernel(a / f, b / f), borderType=cv2.BORDER_REFLECT)
        response = r if response is None else np.maximum(response, r)
    score = response - _PRIOR_WEIGHT * ((u / prior_sd[0]) ** 2 + (v / prior_sd[1]) ** 2)
    score[~window] = -np.inf
    size = 2 * (_PEAK_SEPARATION_PX // f) + 1
    local_max = cv2.dilate(score, np.ones((size, size), np.uint8))
    peaks = np.argwhere((score == local_max) & window)
    values = score[peaks[:, 0], peaks[:, 1]]
    best = values.max()
    strong = peaks[values >= fraction * best] if best > 0 else peaks[values >= best]
    py, px = strong[int(np.argmax(u[strong[:, 0], strong[:, 1]]))]
    return CanalFinding(float(xx[py, px]), float(yy[py, px]), angle, float(score[py, px]))


# ----------------------------------------------------------------------------------------------
# Crop geometry
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CropWindow:
    """A square window in a source image: centre and side in source pixels, and its axes.

    x_axis is the unit source-pixel step of one crop column to the right, y_axis of one row down.
    """

    cx: float
    cy: float
    side: float
    x_axis: Tuple[float, float]
    y_axis: Tuple[float, float]

    def corners(self) -> np.ndarray:
        """The four source-pixel corners (for drawing), clockwise from top left."""
        c = np.array([self.cx, self.cy])
        ax, ay = np.array(self.x_axis) * self.side / 2, np.array(self.y_axis) * self.side / 2
        return np.stack([c - ax - ay, c + ax - ay, c + ax + ay, c - ax + ay])

    def sample(self, image: np.ndarray, size: int) -> np.ndarray:
        """Resample the window to size x size (bilinear, zero outside the image).

        image: (H, W) -> (size, size); or (H, W, C) channels-last, C <= 4 (cv2's layout; convert a stack
        once, not per window) -> (C, size, size).
        """
        scale = self.side / size
        ax, ay = np.array(self.x_axis) * scale, np.array(self.y_axis) * scale
        origin = np.array([self.cx, self.cy]) - (ax + ay) * (size - 1) / 2
        m = np.array([[ax[0], ay[0], origin[0]], [ax[1], ay[1], origin[1]]], np.float64)
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        if image.ndim == 2:
            return cv2.warpAffine(image, m, (size, size), flags=flags, borderMode=cv2.BORDER_CONSTANT)
        out = cv2.warpAffine(image, m, (size, size), flags=flags, borderMode=cv2.BORDER_CONSTANT)
        return np.moveaxis(out.reshape(size, size, -1), -1, 0)

    def sample_coarse(self, image: np.ndarray, size: int, spacing: float) -> np.ndarray:
        """As sample, but first on a grid of `spacing` source pixels (no finer than the output's), then
        interpolated back to size x size: how an image stored on a coarser grid and resampled looks."""
        n = int(round(self.side / spacing))
        if n >= size:
            return self.sample(image, size)
        coarse = self.sample(image, max(n, 4))
        if coarse.ndim == 2:
            return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_LINEAR)
        return np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_LINEAR) for c in coarse])

    def jittered(self, rng: np.random.Generator, shift_px: float, scale: float, rotate_deg: float) -> "CropWindow":
        a = np.deg2rad(rng.normal(0, rotate_deg))
        c, s = np.cos(a), np.sin(a)

        def rot(v):
            return (c * v[0] - s * v[1], s * v[0] + c * v[1])

        dx, dy = rng.normal(0, shift_px, 2)
        return CropWindow(self.cx + dx, self.cy + dy, self.side * float(np.exp(rng.normal(0, scale))),
                          rot(self.x_axis), rot(self.y_axis))


def _body_centre(boxes: LevelBoxes, level: str, slice_number: int) -> np.ndarray:
    return np.array(body_centre(boxes.box(level, slice_number), level))


def sagittal_windows(boxes: LevelBoxes, cfg: ClassifierConfig,
                     slice_number: int = MID_SAGITTAL_SLICE) -> Dict[str, CropWindow]:
    """One window per canal position, aligned with the local column axis, scaled by the local pitch.

    Rows run down the column (superior up), columns run posterior-ward (anterior left), and the centre
    sits sag_posterior_shift pitches behind the level's centre so the canal is in view.
    """
    centres = {lv: _body_centre(boxes, lv, slice_number) for lv in VERTEBRAE}
    gaps = [float(np.linalg.norm(centres[b] - centres[a])) for a, b in zip(VERTEBRAE, VERTEBRAE[1:])]
    windows: Dict[str, CropWindow] = {}
    for position in CANAL_POSITIONS:
        if position in DISCS:
            upper, lower = disc_neighbours(position)
            i = VERTEBRAE.index(upper)
            centre = np.array([boxes.box(position, slice_number).cx, boxes.box(position, slice_number).cy])
            tangent = centres[lower] - centres[upper]
            pitch = gaps[i]
        else:
            i = VERTEBRAE.index(position)
            centre = centres[position]
            above, below = VERTEBRAE[max(i - 1, 0)], VERTEBRAE[min(i + 1, len(VERTEBRAE) - 1)]
            tangent = centres[below] - centres[above]
            pitch = float(np.mean(gaps[max(i - 1, 0):i + 1]))
        tangent = tangent / max(np.linalg.norm(tangent), 1e-6)
        if tangent[1] < 0:  # boxes out of order: keep "down the column" pointing down the image
            tangent = -tangent
        normal = np.array([tangent[1], -tangent[0]])  # posterior: down the column turned to the right
        c = centre + normal * cfg.sag_posterior_shift * pitch
        windows[position] = CropWindow(float(c[0]), float(c[1]), cfg.sag_extent * pitch,
                                       (float(normal[0]), float(normal[1])), (float(tangent[0]), float(tangent[1])))
    return windows


def axial_window(finding: CanalFinding, cfg: ClassifierConfig) -> CropWindow:
    """A window around the canal, de-rotated to the neck's AP axis, shifted forward onto the disc margin."""
    down = np.array([np.sin(finding.angle_rad), np.cos(finding.angle_rad)])  # posterior, in the image
    right = np.array([down[1], -down[0]])
    c = np.array([finding.x, finding.y]) - down * cfg.ax_anterior_shift_px
    return CropWindow(float(c[0]), float(c[1]), cfg.ax_extent_px, (float(right[0]), float(right[1])),
                      (float(down[0]), float(down[1])))


# ----------------------------------------------------------------------------------------------
# The hand-off
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LevelCrops:
    """Every crop of one patient, in CANAL_POSITIONS order (disc positions are indices 1, 3, 5, 7, 9).

    sagittal: (11, 3, S, S) slices 5/6/7 as channels; axial: (11, 1, A, A), zeros where has_axial is
    False. Both are standardised per crop (zero mean, unit spread), as the network sees them.
    """

    patient_id: str
    sagittal: np.ndarray
    axial: np.ndarray
    has_axial: np.ndarray
    sagittal_windows: Tuple[CropWindow, ...]
    axial_windows: Tuple[Optional[CropWindow], ...]
    canal: Tuple[Optional[CanalFinding], ...]
    # Positions outside the field of view (LevelBoxes.outside_positions): cropped like the others so that
    # batches keep their shape, but never graded (Classifier.grade_crops submits the training prior).
    outside: Tuple[str, ...] = ()


def standardise(crop: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation over the whole crop (all channels), so contrast is relative."""
    crop = crop.astype(np.float32, copy=False)
    return (crop - crop.mean()) / max(float(crop.std()), 1e-3)


def find_canals(study: Study) -> Dict[str, CanalFinding]:
    """The canal on every axial image; where the image's geometry is known (DICOM/NIfTI) the finder is told
    where the sagittal detection expects it."""
    return {p: find_canal(study.axial[p], expected_canal_px(study.axial_geometry[p])
                          if p in study.axial_geometry else None)
            for p in CANAL_POSITIONS if p in study.axial}


def make_level_crops(study: Study, boxes: LevelBoxes, cfg: ClassifierConfig = ClassifierConfig(),
                     canal: Optional[Mapping[str, CanalFinding]] = None,
                     rng: Optional[np.random.Generator] = None) -> LevelCrops:
    """Crops of every position of one patient; `rng` adds training jitter, `canal` reuses findings."""
    canal = dict(canal) if canal is not None else find_canals(study)
    stack = np.ascontiguousarray(np.moveaxis(study.sagittal_stack().astype(np.float32), 0, -1))  # (H, W, 3)
    sag_windows = sagittal_windows(boxes, cfg)
    n = len(CANAL_POSITIONS)
    sag = np.zeros((n, 3, cfg.sag_size, cfg.sag_size), np.float32)
    ax = np.zeros((n, 1, cfg.ax_size, cfg.ax_size), np.float32)
    has = np.zeros(n, bool)
    used_sag, used_ax, found = [], [], []

    def sample(window: CropWindow, image: np.ndarray, size: int) -> np.ndarray:
        if rng is not None and rng.random() < cfg.resample_p:
            return window.sample_coarse(image, size, float(rng.uniform(1.0, cfg.resample_max_spacing)))
        return window.sample(image, size)

    for k, position in enumerate(CANAL_POSITIONS):
        w = sag_windows[position]
        if rng is not None:
            pitch = w.side / cfg.sag_extent
            w = w.jittered(rng, cfg.jitter_shift * pitch, cfg.jitter_scale, cfg.jitter_rotate_deg)
        sag[k] = standardise(sample(w, stack, cfg.sag_size))
        used_sag.append(w)
        finding = canal.get(position)
        found.append(finding)
        if finding is None:
            used_ax.append(None)
            continue
        aw = axial_window(finding, cfg)
        if rng is not None:
            aw = aw.jittered(rng, cfg.jitter_shift * aw.side / 2, cfg.jitter_scale, cfg.jitter_rotate_deg)
        ax[k, 0] = standardise(sample(aw, np.asarray(study.axial[position], np.float32), cfg.ax_size))
        has[k] = True
        used_ax.append(aw)
    return LevelCrops(study.patient_id, sag, ax, has, tuple(used_sag), tuple(used_ax), tuple(found),
                      tuple(boxes.outside_positions))
