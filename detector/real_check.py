"""Sim-to-real check: the detector on a real T2 sagittal NIfTI resampled to the challenge scale, against cord level labels."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
from scipy.ndimage import zoom

from study.geometry import SAGITTAL_MM_PER_PX
from study.levels import IMAGE_SIZE, SAGITTAL_SLICES, VERTEBRAE
from study.study import Study

from .boxes import LevelBoxes

PathLike = Union[str, Path]
ROOT = Path(__file__).resolve().parents[1]
REAL_DIR = ROOT.parent / "shared" / "data" / "real_mri" / "cervical_sagittal_t2_crop"
# Challenge sagittal images span about 28 cm of neck on 224 px: the loaders' model grid.
CHALLENGE_MM_PER_PX = SAGITTAL_MM_PER_PX
# Parasagittal slices 5 and 7 sit this far either side of the mid slice.
SLICE_OFFSET_MM = 3.0


@dataclass(frozen=True)
class RealSlices:
    """The scan as a Study on the challenge grid, plus where each labelled level lies (canvas rows)."""

    study: Study
    level_rows: Dict[str, Tuple[float, float]]   # level -> (top row, bottom row) on the canvas
    mm_per_px: float
    content_box: Tuple[int, int, int, int]       # x1, y1, x2, y2 of the real image inside the canvas


@dataclass(frozen=True)
class LevelCheck:
    level: str
    label_top_mm: float
    label_bottom_mm: float
    predicted_cy_mm: float
    error_mm: float              # predicted centre - label centre (positive: predicted too low)
    inside: bool                 # predicted centre within the label's height range
    confidence: float
    interpolated: bool


@dataclass(frozen=True)
class RealCheck:
    levels: Tuple[LevelCheck, ...]
    boxes: LevelBoxes
    slices: RealSlices

    def table(self) -> str:
        lines = [f"{'level':<5} {'label mm (top..bottom)':>22} {'pred centre mm':>14} {'error mm':>8} "
                 f"{'inside':>6} {'conf':>5} {'interp':>6}"]
        for c in self.levels:
            lines.append(f"{c.level:<5} {c.label_top_mm:>10.1f}..{c.label_bottom_mm:<10.1f} {c.predicted_cy_mm:>14.1f} "
                         f"{c.error_mm:>8.1f} {str(c.inside):>6} {c.confidence:>5.2f} {str(c.interpolated):>6}")
        inside = sum(c.inside for c in self.levels)
        lines.append(f"{inside}/{len(self.levels)} labelled levels have the detector's centre inside their height "
                     f"range; mm measured down from the top of the scan, {self.slices.mm_per_px} mm/px")
        if self.boxes.warnings:
            lines.append("warnings: " + "; ".join(self.boxes.warnings))
        return "\n".join(lines)


def load_real_slices(data_dir: PathLike = REAL_DIR, mm_per_px: float = CHALLENGE_MM_PER_PX,
                     canvas: int = IMAGE_SIZE) -> RealSlices:
    """Resample three sagittal slices (mid, +-3 mm) to mm_per_px, anterior left, superior up, centred in a
    canvas x canvas black image; the level heights come from t2_seg-manual_labeled (values 2..7 = C2..C7)."""
    import nibabel as nib

    data_dir = Path(data_dir)
    img = nib.as_closest_canonical(nib.load(str(data_dir / "t2.nii.gz")))          # RAS: x right, y anterior, z superior
    seg = nib.as_closest_canonical(nib.load(str(data_dir / "t2_seg-manual_labeled.nii.gz")))
    vol = np.asanyarray(img.dataobj).astype(np.float32)
    lab = np.rint(np.asanyarray(seg.dataobj)).astype(np.int16)
    zooms = img.header.get_zooms()[:3]
    cord_x = np.nonzero(lab.any((1, 2)))[0]
    mid_x = int(round(cord_x.mean())) if len(cord_x) else vol.shape[0] // 2
    off = int(round(SLICE_OFFSET_MM / zooms[0]))

    def to_canvas_plane(plane: np.ndarray, order: int) -> np.ndarray:
        # plane is (y=anterior, z=superior); the challenge view has superior up and anterior left.
        view = plane[::-1, ::-1].T
        return zoom(view, (zooms[2] / mm_per_px, zooms[1] / mm_per_px), order=order)

    planes = {}
    for s, dx in zip(SAGITTAL_SLICES, (-off, 0, off)):
        x = int(np.clip(mid_x + dx, 0, vol.shape[0] - 1))
        planes[s] = to_canvas_plane(vol[x], 1)
    h, w = planes[6].shape
    if h > canvas or w > canvas:
        raise ValueError(f"resampled slice {h}x{w} does not fit a {canvas} canvas")
    top, left = (canvas - h) // 2, (canvas - w) // 2
    hi = max(float(np.percentile(planes[6], 99.5)), 1e-6)
    sag = {}
    for s, p in planes.items():
        c = np.zeros((canvas, canvas), np.float32)
        c[top:top + h, left:left + w] = np.clip(p / hi, 0, 1)
        sag[s] = c
    # Level heights: superior-most and inferior-most z of each level anywhere in the cord.
    nz = vol.shape[2]
    rows = {}
    for v, level in enumerate(VERTEBRAE, start=2):
        zs = np.nonzero((lab == v).any((0, 1)))[0]
        if len(zs) == 0:
            continue
        # canvas row of voxel z: the view flips z (superior up), then scales.
        r_top = top + (nz - 1 - zs.max()) * zooms[2] / mm_per_px
        r_bot = top + (nz - zs.min()) * zooms[2] / mm_per_px
        rows[level] = (float(r_top), float(r_bot))
    study = Study("real-t2-crop", sag, {}, sagittal_spacing_mm=(mm_per_px, mm_per_px),
                  sources={f"sag/{s}": str(data_dir / "t2.nii.gz") for s in SAGITTAL_SLICES})
    return RealSlices(study, rows, mm_per_px, (left, top, left + w, top + h))


def check_real_scan(detector, data_dir: PathLike = REAL_DIR) -> RealCheck:
    """Where the detector puts each labelled level on the mid slice vs the label's height range."""
    rs = load_real_slices(data_dir)
    lb = detector.predict(rs.study)
    top = rs.content_box[1]
    out: List[LevelCheck] = []
    for level, (r0, r1) in rs.level_rows.items():
        v = lb.vertebrae[6][level]
        cy = v.box.cy
        to_mm = lambda r: (r - top) * rs.mm_per_px  # noqa: E731
        out.append(LevelCheck(level, to_mm(r0), to_mm(r1), to_mm(cy), to_mm(cy) - to_mm((r0 + r1) / 2),
                              r0 <= cy <= r1, v.confidence, v.interpolated))
    return RealCheck(tuple(out), lb, rs)


def real_scan_available(data_dir: PathLike = REAL_DIR) -> Optional[str]:
    """None when the scan is there, else why not (for skips)."""
    d = Path(data_dir)
    for f in ("t2.nii.gz", "t2_seg-manual_labeled.nii.gz"):
        if not (d / f).is_file():
            return f"{d / f} not found"
    return None
