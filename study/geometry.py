"""Image planes in patient space (DICOM LPS, mm), the model's views of them, and in-plane resampling."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates

from .levels import IMAGE_SIZE

Vec = Tuple[float, float, float]

# Patient axes of DICOM's LPS frame: +x toward the patient's left, +y posterior, +z superior.
# NIfTI affines are RAS (+x right, +y anterior) and are flipped into LPS on reading.
LEFT: Vec = (1.0, 0.0, 0.0)
POSTERIOR: Vec = (0.0, 1.0, 0.0)
SUPERIOR: Vec = (0.0, 0.0, 1.0)

# The model's sagittal scale: the challenge PNGs put 224 px on about 28 cm of neck (the phantom draws
# 1.15-1.35 mm/px, the detector's real-scan check uses 1.25), so every sagittal is resampled to 1.25 mm/px.
SAGITTAL_MM_PER_PX = 1.25
# The challenge axial images show about 16 cm of neck (the phantom draws 0.6-0.8 mm/px).
AXIAL_MM_PER_PX = 0.7
# Slices 5 and 7 are the stored slices nearest to this distance either side of the mid-sagittal slice
# (clinical sagittal T2 slices are 3-4 mm apart, so these are normally the adjacent slices).
PARASAGITTAL_OFFSET_MM = 3.0
# The challenge axials (and the phantom's) are centred on the neck, so the canal sits above the image
# centre: the centre lies this far posterior of the vertebral body's centre.
AXIAL_CENTRE_POSTERIOR_MM = 16.0
# Sane limits on what a header may claim. Patient coordinates are millimetres from a point near the
# scanner's isocentre: a position farther than 100 m is a corrupt tag, and beyond about 1e15 mm adding a
# slice gap of a few mm no longer changes a float, so slice order and spacing would be meaningless.
MAX_POSITION_MM = 100_000.0
# No MR pixel is smaller than a micrometre or larger than a metre.
PIXEL_SPACING_RANGE_MM = (1e-3, 1e3)
# A plane whose normal is within 45 degrees of a patient axis is called by that axis.
_ORIENTATION_MIN_COS = float(np.cos(np.deg2rad(45.0)))


def _unit(v) -> np.ndarray:
    v = np.asarray(v, float)
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n < 1e-9:
        raise ValueError(f"direction {tuple(np.round(v, 4))} has no length")
    return v / n


def orientation_of(normal) -> str:
    """'sagittal', 'axial' or 'coronal' for the patient axis the slice normal is closest to, else 'oblique'."""
    n = np.abs(_unit(normal))
    k = int(np.argmax(n))
    if n[k] < _ORIENTATION_MIN_COS:
        return "oblique"
    return ("sagittal", "coronal", "axial")[k]


@dataclass(frozen=True)
class ImagePlane:
    """Where a 2-D image lies in patient space.

    Pixel (row i, column j) has its centre at first_pixel_mm + j * spacing_mm[1] * right + i * spacing_mm[0] * down,
    as DICOM's ImagePositionPatient / ImageOrientationPatient / PixelSpacing (row, column) define it.
    Image coordinates (x, y) are continuous with the origin at the top-left corner of pixel (0, 0), as in
    the challenge box files, so pixel (i, j) covers x in [j, j + 1), y in [i, i + 1).
    """

    first_pixel_mm: Vec
    right: Vec                      # unit: direction of increasing column (image x)
    down: Vec                       # unit: direction of increasing row (image y)
    spacing_mm: Tuple[float, float]  # (row, column): distance between rows, between columns
    shape: Tuple[int, int]          # (rows, columns)

    @staticmethod
    def make(first_pixel_mm, right, down, spacing_mm, shape) -> "ImagePlane":
        """A plane with `down` made exactly orthogonal to `right` (scanners round their direction cosines)."""
        r = _unit(right)
        d = np.asarray(down, float)
        d = _unit(d - (d @ r) * r)
        sp = tuple(float(s) for s in spacing_mm)
        if len(sp) != 2 or not all(np.isfinite(s) and s > 0 for s in sp):
            raise ValueError(f"pixel spacing {spacing_mm} is not two positive numbers")
        lo, hi = PIXEL_SPACING_RANGE_MM
        if not all(lo <= s <= hi for s in sp):
            raise ValueError(f"pixel spacing ({sp[0]:g}, {sp[1]:g}) mm is outside the plausible range "
                             f"{lo:g} to {hi:g} mm")
        rows, cols = (int(n) for n in shape)
        if rows < 1 or cols < 1:
            raise ValueError(f"image shape {shape} is empty")
        p = np.asarray(first_pixel_mm, float)
        if p.shape != (3,) or not np.isfinite(p).all():
            raise ValueError(f"image position {first_pixel_mm} is not three finite numbers")
        if float(np.abs(p).max()) > MAX_POSITION_MM:
            raise ValueError(f"image position ({p[0]:g}, {p[1]:g}, {p[2]:g}) mm lies implausibly far from the "
                             f"scanner's origin (more than {MAX_POSITION_MM / 1000:g} m); the position tag "
                             "is corrupt")
        return ImagePlane(_vec(p), _vec(r), _vec(d), sp, (rows, cols))

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.right, self.down)

    @property
    def orientation(self) -> str:
        return orientation_of(self.normal)

    @property
    def centre_mm(self) -> np.ndarray:
        """The centre of the field of view."""
        return self.to_world([self.shape[1] / 2, self.shape[0] / 2])

    def to_world(self, xy) -> np.ndarray:
        """Patient positions (..., 3) of image coordinates (..., 2) = (x, y)."""
        xy = np.asarray(xy, float)
        r, d, p = np.asarray(self.right), np.asarray(self.down), np.asarray(self.first_pixel_mm)
        u = (xy[..., 0:1] - 0.5) * self.spacing_mm[1]
        v = (xy[..., 1:2] - 0.5) * self.spacing_mm[0]
        return p + u * r + v * d

    def to_image(self, points_mm) -> Tuple[np.ndarray, np.ndarray]:
        """Image coordinates (..., 2) of the points' projections onto the plane, and their signed distance
        from it along the normal (mm)."""
        q = np.asarray(points_mm, float) - np.asarray(self.first_pixel_mm)
        x = q @ np.asarray(self.right) / self.spacing_mm[1] + 0.5
        y = q @ np.asarray(self.down) / self.spacing_mm[0] + 0.5
        return np.stack([x, y], -1), q @ self.normal

    def distance_mm(self, point_mm) -> float:
        """Signed distance of a point from the plane, along the normal."""
        return float((np.asarray(point_mm, float) - np.asarray(self.first_pixel_mm)) @ self.normal)

    def contains(self, xy, margin_px: float = 0.0) -> bool:
        x, y = float(xy[0]), float(xy[1])
        return -margin_px <= x <= self.shape[1] + margin_px and -margin_px <= y <= self.shape[0] + margin_px

    def shifted(self, offset_mm: float) -> "ImagePlane":
        """The parallel plane offset_mm along the normal."""
        p = np.asarray(self.first_pixel_mm) + offset_mm * self.normal
        return ImagePlane(_vec(p), self.right, self.down, self.spacing_mm, self.shape)


def _vec(v) -> Vec:
    return tuple(float(c) for c in v)  # type: ignore[return-value]


def _view_plane(normal, centre_mm, right_hint, down_hint, size: int, mm_per_px: float) -> ImagePlane:
    """A size x size grid in the plane with this normal, centred on centre_mm, whose x runs along
    right_hint and y along down_hint (each projected into the plane)."""
    n = _unit(normal)
    r = np.asarray(right_hint, float)
    r = _unit(r - (r @ n) * n)
    d = np.cross(n, r)
    if d @ np.asarray(down_hint, float) < 0:
        d = -d
    half = size / 2 - 0.5
    first = np.asarray(centre_mm, float) - half * mm_per_px * (r + d)
    return ImagePlane(_vec(first), _vec(r), _vec(d), (mm_per_px, mm_per_px), (size, size))


def model_sagittal_plane(slice_plane: ImagePlane, centre_mm=None, size: int = IMAGE_SIZE,
                         mm_per_px: float = SAGITTAL_MM_PER_PX) -> ImagePlane:
    """The model's sagittal view of a slice, centred on centre_mm's projection into the slice (default: the
    slice's field-of-view centre): the slice's own row and column axes, the one nearer anterior-posterior
    running left to right with anterior on the left, superior up. A field of view tilted in its plane keeps
    its tilt out of the picture, as a viewer shows the slice and as the operator framed the spine; an
    axis-aligned slice is seen exactly anterior left, superior up."""
    centre = slice_plane.centre_mm if centre_mm is None else centre_mm
    centre = np.asarray(centre, float) - slice_plane.distance_mm(centre) * slice_plane.normal
    axes = (np.asarray(slice_plane.right, float), np.asarray(slice_plane.down, float))
    across = max(axes, key=lambda a: abs(float(a @ np.asarray(POSTERIOR))))
    across = across if across @ np.asarray(POSTERIOR) > 0 else -across
    return _view_plane(slice_plane.normal, centre, across, -np.asarray(SUPERIOR), size, mm_per_px)


def model_axial_plane(slice_plane: ImagePlane, centre_mm=None, size: int = IMAGE_SIZE,
                      mm_per_px: float = AXIAL_MM_PER_PX, posterior_shift_mm: float = 0.0) -> ImagePlane:
    """The model's axial view of a slice: anterior up, the patient's left on the image's right (radiological),
    centred on centre_mm's projection into the slice moved posterior_shift_mm toward the image's bottom."""
    centre = slice_plane.centre_mm if centre_mm is None else centre_mm
    # Project the centre into the slice so that the view is a reformat of this slice, not of a parallel one.
    centre = np.asarray(centre, float) - slice_plane.distance_mm(centre) * slice_plane.normal
    view = _view_plane(slice_plane.normal, centre, LEFT, POSTERIOR, size, mm_per_px)
    if posterior_shift_mm:
        first = np.asarray(view.first_pixel_mm) + posterior_shift_mm * np.asarray(view.down)
        view = ImagePlane(_vec(first), view.right, view.down, view.spacing_mm, view.shape)
    return view


def resample(pixels: np.ndarray, source: ImagePlane, target: ImagePlane) -> Tuple[np.ndarray, np.ndarray]:
    """The image on `target`'s grid, read from `pixels` lying on `source` (bilinear, in-plane only).

    Returns (image float32, inside mask); pixels outside the source's field of view are 0. When the
    target is coarser than the source, the source is low-pass filtered first so that fine detail
    averages instead of aliasing.
    """
    src = np.asarray(pixels, np.float32)
    if src.shape != tuple(source.shape):
        raise ValueError(f"pixel array {src.shape} does not match its plane {source.shape}")
    rows, cols = target.shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    world = target.to_world(np.stack([xx + 0.5, yy + 0.5], -1))
    xy, _ = source.to_image(world)
    # Source pixel spacing of one target step, along the source's rows and columns.
    step_r = np.asarray(target.right) * target.spacing_mm[1]
    step_d = np.asarray(target.down) * target.spacing_mm[0]
    sr = source.spacing_mm
    along_x = max(abs(step_r @ np.asarray(source.right)), abs(step_d @ np.asarray(source.right))) / sr[1]
    along_y = max(abs(step_r @ np.asarray(source.down)), abs(step_d @ np.asarray(source.down))) / sr[0]
    sigma = [0.5 * np.sqrt(max(f * f - 1.0, 0.0)) for f in (along_y, along_x)]
    if max(sigma) > 0.05:
        src = gaussian_filter(src, sigma, mode="nearest")
    coords = np.stack([xy[..., 1] - 0.5, xy[..., 0] - 0.5])
    out = map_coordinates(src, coords, order=1, mode="constant", cval=0.0)
    inside = ((coords[0] >= -0.5) & (coords[0] <= src.shape[0] - 0.5)
              & (coords[1] >= -0.5) & (coords[1] <= src.shape[1] - 0.5))
    # map_coordinates treats the half pixel at the border as outside; edge pixels extend to the FOV edge.
    edge = inside & ~((coords[0] >= 0) & (coords[0] <= src.shape[0] - 1) & (coords[1] >= 0)
                      & (coords[1] <= src.shape[1] - 1))
    if edge.any():
        clipped = np.stack([np.clip(coords[0], 0, src.shape[0] - 1), np.clip(coords[1], 0, src.shape[1] - 1)])
        out[edge] = map_coordinates(src, clipped[:, edge], order=1)
    out[~inside] = 0.0
    return out.astype(np.float32), inside


def unit_range(images: Sequence[np.ndarray], masks: Optional[Sequence[np.ndarray]] = None
               ) -> Tuple[list, float, float]:
    """Map the images jointly from their minimum to their 99.9th percentile onto [0, 1] (clipped).

    Joint, so the three sagittal slices keep their relative brightness; the percentile, so that a few
    hot pixels do not darken the image (the challenge loader's rule for 16-bit PNGs). Only pixels inside
    the field of view count.
    """
    values = [im[m] if masks is not None else im.ravel() for im, m in zip(images, masks or images)]
    values = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.zeros(0)
    if values.size == 0:
        return [np.zeros_like(im, np.float32) for im in images], 0.0, 0.0
    lo = float(values.min())
    hi = float(np.percentile(values, 99.9))
    if hi <= lo:
        hi = float(values.max())
    scale = 1.0 / (hi - lo) if hi > lo else 0.0
    out = []
    for k, im in enumerate(images):
        u = np.clip((np.nan_to_num(im, nan=lo) - lo) * scale, 0.0, 1.0).astype(np.float32)
        if masks is not None:
            u[~masks[k]] = 0.0
        out.append(u)
    return out, lo, hi


@dataclass(frozen=True, eq=False)
class AxialSlice:
    """An axial slice waiting for the detector: its stored pixels and plane, matched to a level later."""

    pixels: np.ndarray         # (rows, columns) as stored, rescaled to the modality's values
    plane: ImagePlane
    label: str = ""            # where it came from, for provenance (no identifying values)
    frame_of_reference: str = ""  # FrameOfReferenceUID (DICOM) so a mismatch with the sagittal can be flagged
    instance: object = None    # study.study.DicomInstance it was read from (DICOM), else None
