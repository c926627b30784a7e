"""Real-scan evaluation: where the reader places C2-C7 on real 3-D T2 scans, against their labels.

`python -m evaluation.real_scans --data DIR [--data DIR ...] [--out OUT] [--weights W]` reads every labelled
T2 scan under each DIR (a BIDS root with `sub-*/anat/*_T2w.nii.gz` and label maps under `derivatives/`, or a
plain folder holding a volume such as `t2.nii.gz` beside its label maps) and runs the whole pipeline on it two
ways:

- **nifti**: the volume itself (`reader.folder.run_folder`, what `run` does), reading the level centres the report
  gives in patient space (`levels.centres_lps`);
- **render**: challenge-layout patients (`sag/5,6,7.png`, `tra/*.png`) cut from the volume at a fixed list of
  framings (FRAMINGS: where C2 sits, pixels per mm, slab thickness), whose predicted boxes are mapped back to
  patient space through the render's own geometry.

Every C2-C7 centre is compared with a reference centre taken from the scan's labels (LABEL CONVENTIONS below),
along the superior-inferior axis: error = reference z - predicted z, so a positive error means the prediction
lies too low (inferior). It is "within half a step" when |error| <= half the local reference level step.
Nothing here trains or tunes anything; it measures.

Label conventions read (SCT numbering of levels: 1 = C1 ... 7 = C7, 8 = T1, 9 = T2, ...):
- `*landmark*` and other single-voxel level labels (e.g. `labels.nii.gz`): value = the level whose body centre
  height the voxel marks (in the cord);
- `*disc*` labels: one voxel per disc at its posterior tip, value v = the disc between levels v - 1 and v
  (3 = C2/C3 ... 8 = C7/T1); a body's reference is the midpoint of the discs above and below it (C3: discs 3
  and 4); C2 is never taken from discs (its upper "disc" is the C1/C2 joint);
- a cord mask whose values are levels (`*_labeled*`): a level's reference is the middle of its height range in
  the cord; a level whose range reaches the edge of the volume or of the labelled cord is cut off and unused;
- a binary cord mask (`*seg*`): the cord, for the axial renders and the canal-to-cord distances.
Per level the first source in that order wins, unless two label files disagree about a level by more than
DISAGREE_MM: then the scan is scored against each file separately, every row names its file, and the
disagreement is printed. A level with no reference is shown as "no label" and not scored; references are never
interpolated between labelled levels. Where a T2 reference exists, a "T2 check" extrapolates the reader's C7
two median level steps down and compares it with T2: it tells whether the whole chain is shifted by a level.

Note on the shared data: in `../shared/data/real_mri/cervical_sagittal_t2_crop`, `labels.nii.gz` (C3 at
z 24.7 mm, C5 at -10.3 mm) and `t2_seg-manual_labeled.nii.gz` (C2 at 16.7..32.7 mm, C4 at -16.3..-2.3 mm)
are one level apart; both are scored. The image does not settle which is right: the top body (the one both files
label) is cut by the volume's upper edge, with a disc-like band just below that edge, which reads as the C2/C3
disc (labels.nii.gz) or as the junction of C2's dens and body (the cord-level file).
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import click
import numpy as np

ROOT = Path(__file__).resolve().parent.parent

from detector.boxes import body_centre
from common.files import write_json_atomic
from study.challenge import Box
from study.geometry import LEFT, POSTERIOR, SUPERIOR, ImagePlane
from study.levels import CANAL_POSITIONS, DISCS, IMAGE_SIZE, SAGITTAL_SLICES, VERTEBRAE, axial_file_stem

from .real_variants import VARIANTS, variant_of, write_variants

DEFAULT_DATA = (ROOT.parent / "shared" / "data" / "real_mri" / "sct_2014",
                ROOT.parent / "shared" / "data" / "real_mri" / "cervical_sagittal_t2_crop")
# NIfTI affines are RAS (+x right, +y anterior); patient space here is DICOM's LPS, as in the reports.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
# Two label files "disagree" about a level when their centres lie farther apart than this (about half a
# cervical level step of 14-19 mm): then neither is silently preferred.
DISAGREE_MM = 8.0
# The level step assumed where a reference set holds a single level (never in the shared data).
NOMINAL_STEP_MM = 16.0
# Where the cord sits across the render (column): the challenge's box centres lie at x ~ 85-110 of 224 and
# the cord some 15-20 mm behind the bodies.
CORD_COLUMN = 110.0
# The challenge axial images: 0.7 mm/px (as study.geometry.AXIAL_MM_PER_PX).
AXIAL_MM_PER_PX = 0.7
# Gap between neighbouring sagittal slabs: slices 5 and 7 lie slab + gap either side of 6 (3.5 mm for 3 mm).
SLAB_GAP_MM = 0.5
# A slab is the mean of planes this far apart (the shared scans are 1 mm isotropic).
PLANE_STEP_MM = 1.0
# The in-plane intensity scale: the 99.5th percentile of the pixels inside the volume maps to 255.
SCALE_PERCENTILE = 99.5
# Canal centre to cord: cord-mask voxels within this distance of the axial plane make the cord's centroid.
CORD_SLAB_MM = 1.0
CANAL_TO_CORD_MM = 3.0
# Point labels are single voxels (or small blobs); a value painted on more voxels than this is a region.
MAX_POINT_VOXELS = 64
# Tokens of label maps that are not the cord (grey/white matter, CSF, lesions, rootlets): ignored.
_OTHER_TISSUE = re.compile(r"(?<![a-z])(gm|wm|csf|lesion|lesions|rootlet|rootlets|gmseg|wmseg|csfseg)(?![a-z])",
                           re.I)


@dataclass(frozen=True)
class Framing:
    """How a render frames the column: C2's centre (or the volume's top edge, where C2 has no reference in
    every label set) at image row `anchor_row`, `px_per_mm` pixels per mm, slabs `slab_mm` thick."""

    name: str
    anchor_row: float
    px_per_mm: float
    slab_mm: float

    @property
    def mm_per_px(self) -> float:
        return 1.0 / self.px_per_mm

    @property
    def slice_gap_mm(self) -> float:
        """Distance of slices 5 and 7 from slice 6."""
        return self.slab_mm + SLAB_GAP_MM

    def describe(self) -> str:
        return f"C2 row {self.anchor_row:g}, {self.px_per_mm:g} px/mm, {self.slab_mm:g} mm"


# What scanners and the challenge produce: C2 from near the top edge to the middle (rows ~10 to ~112),
# 0.6-1.3 px/mm, 3-4 mm slabs. The first three are the framings of issue 17.
FRAMINGS: Tuple[Framing, ...] = (
    Framing("cervai", 98, 0.85, 3.0),     # C2 where the CervAI boxes put it
    Framing("top", 55, 1.1, 3.0),         # C2 near the top
    Framing("wide", 70, 0.65, 3.0),       # a wide field
    Framing("edge", 12, 1.0, 3.0),        # C2 at the top edge (skull base cut off)
    Framing("middle", 112, 0.8, 4.0),     # C2 in the middle of the image
    Framing("fine", 32, 1.3, 3.0),        # the finest pixels
    Framing("coarse", 88, 0.6, 4.0),      # the coarsest pixels
    Framing("thick", 80, 0.95, 4.0),      # 4 mm slabs near the CervAI place
)


# ------------------------------------------------------------------------------------------------
# Levels and label files
# ------------------------------------------------------------------------------------------------
def level_name(number: int) -> str:
    """SCT level number -> name: 1 = C1 ... 7 = C7, 8 = T1 ... 19 = T12, 20 = L1 ..."""
    if number <= 7:
        return f"C{number}"
    if number <= 19:
        return f"T{number - 7}"
    return f"L{number - 19}"


def level_number(name: str) -> int:
    kind, k = name[0], int(name[1:])
    return {"C": 0, "T": 7, "L": 19}[kind] + k


def disc_number(disc: str) -> int:
    """Canal disc position -> SCT disc label: 'C2-3' -> 3 (the disc above C3)."""
    return level_number("C" + disc.split("-")[1])


def _nifti_stem(path: Path) -> str:
    name = path.name
    return name[:-7] if name.lower().endswith(".nii.gz") else name[:-4] if name.lower().endswith(".nii") else name


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def _looks_like_label(path: Path) -> bool:
    from study.nifti import looks_like_mask_name
    return looks_like_mask_name(path) or "landmark" in path.name.lower()


def load_volume(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """(data float32 (i, j, k), LPS affine 4x4) of a NIfTI file."""
    import nibabel as nib

    img = nib.load(str(path))
    shape = tuple(int(n) for n in img.shape)
    data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape[:3])
    return data, RAS_TO_LPS @ np.asarray(img.affine, float)


def voxel_points(affine_lps: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """LPS positions (n, 3) of voxel indices (n, 3)."""
    return np.asarray(idx, float) @ affine_lps[:3, :3].T + affine_lps[:3, 3]


@dataclass(frozen=True)
class LabelFile:
    """One label map and what it holds: kind is 'points' (level labels), 'discs', 'cord-levels' or 'cord'."""

    path: Path
    kind: str
    points: Dict[int, Tuple[float, float, float]] = field(default_factory=dict)   # value -> LPS centroid
    extents: Dict[int, Tuple[float, float]] = field(default_factory=dict)        # cord-levels: value -> z range
    cut_off: Tuple[int, ...] = ()                                                 # cord-levels cut by an edge
    cord: Optional[np.ndarray] = field(default=None, repr=False, compare=False)   # (n, 3) LPS cord voxels

    @property
    def name(self) -> str:
        return self.path.name


def read_label_file(path: Path) -> Optional[LabelFile]:
    """A label map classified by its name and content; None for maps of other tissue or empty ones."""
    name = path.name.lower()
    if _OTHER_TISSUE.search(_nifti_stem(path).lower().replace("_", " ").replace("-", " ")):
        return None
    data, aff = load_volume(path)
    values = np.rint(data).astype(np.int64)
    nonzero = values > 0
    if not nonzero.any():
        return None
    present, counts = np.unique(values[nonzero], return_counts=True)
    region = counts.max() > MAX_POINT_VOXELS
    if not region:
        points = {}
        for v in present:
            pts = voxel_points(aff, np.argwhere(values == v))
            points[int(v)] = tuple(float(c) for c in pts.mean(0))
        kind = "discs" if "disc" in name else "points"
        return LabelFile(path, kind, points=points)
    cord = voxel_points(aff, np.argwhere(nonzero))
    if len(present) == 1:
        return LabelFile(path, "cord", cord=cord)
    # A cord whose values are levels: each level's height range, its centroid at mid-height.
    z_all = cord[:, 2]
    vox = float(np.abs(aff[2, :3]).max())   # the z extent of one voxel (for "reaches the edge")
    corners = voxel_points(aff, np.array([[i, j, k] for i in (-0.5, data.shape[0] - 0.5)
                                          for j in (-0.5, data.shape[1] - 0.5) for k in (-0.5, data.shape[2] - 0.5)]))
    vol_lo, vol_hi = float(corners[:, 2].min()), float(corners[:, 2].max())
    lab_lo, lab_hi = float(z_all.min()), float(z_all.max())
    level_points = {int(v): voxel_points(aff, np.argwhere(values == v)) for v in present}
    extents = {v: (float(pts[:, 2].min()), float(pts[:, 2].max())) for v, pts in level_points.items()}
    typical = float(np.median([hi - lo for lo, hi in extents.values()]))
    points, cut = {}, []
    for v, pts in level_points.items():
        lo, hi = extents[v]
        mid = (lo + hi) / 2
        near = pts[np.abs(pts[:, 2] - mid) <= max(vox, 1.0)]
        xy = (near if len(near) else pts)[:, :2].mean(0)
        points[v] = (float(xy[0]), float(xy[1]), mid)
        at_volume_edge = lo - vol_lo < 1.5 * vox or vol_hi - hi < 1.5 * vox
        # The first or last labelled level can stop where the annotator stopped, not where the level ends.
        at_label_end = lo <= lab_lo + 0.5 * vox or hi >= lab_hi - 0.5 * vox
        short = at_label_end and len(extents) > 2 and (hi - lo) < 0.5 * typical
        if at_volume_edge or short:
            cut.append(v)
    return LabelFile(path, "cord-levels", points=points, extents=extents, cut_off=tuple(cut), cord=cord)


# ------------------------------------------------------------------------------------------------
# Scans
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scan:
    """One T2 volume and the label maps that belong to it."""

    scan_id: str
    image: Path
    data_name: str                    # the --data folder's name, for the tables
    label_paths: Tuple[Path, ...]
    sidecar: Optional[Path] = None


def _bids_scans(root: Path) -> List[Scan]:
    deriv = root / "derivatives"
    derived = sorted(p for p in deriv.rglob("*") if p.is_file() and _is_nifti(p)) if deriv.is_dir() else []
    images = sorted(p for sub in root.glob("sub-*") if sub.is_dir() for p in sub.rglob("*_T2w.nii*")
                    if p.is_file() and _is_nifti(p))
    stems = [_nifti_stem(p) for p in images]
    scans = []
    for img, stem in zip(images, stems):
        short = stem[:-len("_T2w")] if stem.endswith("_T2w") else stem
        sid = short if sum(s.startswith(short + "_") or s == short for s in stems) == 1 else stem
        labels = [p for p in derived if _nifti_stem(p).startswith(stem + "_")]
        labels += [p for p in sorted(img.parent.iterdir()) if p != img and _is_nifti(p)
                   and _nifti_stem(p).startswith(stem + "_")]
        side = img.parent / (stem + ".json")
        scans.append(Scan(sid, img, root.name, tuple(labels), side if side.is_file() else None))
    return scans


def _plain_scans(folder: Path, data_name: str) -> List[Scan]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and _is_nifti(p))
    images = [p for p in files if not _looks_like_label(p)]
    labels = [p for p in files if _looks_like_label(p)]
    scans = []
    for img in images:
        stem = _nifti_stem(img)
        mine = [p for p in labels if _nifti_stem(p).startswith(stem + "_")] if len(images) > 1 else labels
        sid = folder.name if len(images) == 1 else f"{folder.name}-{stem}"
        side = folder / (stem + ".json")
        scans.append(Scan(sid, img, data_name, tuple(mine), side if side.is_file() else None))
    return scans


def find_scans(data_dir: Path) -> List[Scan]:
    """Every T2 scan under data_dir: a BIDS root, a plain scan folder, or a folder of either."""
    data_dir = Path(data_dir)
    if any(p.is_dir() for p in data_dir.glob("sub-*")):
        return _bids_scans(data_dir)
    here = _plain_scans(data_dir, data_dir.name)
    if here:
        return here
    out: List[Scan] = []
    for sub in sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if any(p.is_dir() for p in sub.glob("sub-*")):
            out += _bids_scans(sub)
        else:
            out += _plain_scans(sub, f"{data_dir.name}/{sub.name}")
    return out


# ------------------------------------------------------------------------------------------------
# References
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reference:
    """A level's reference centre (LPS mm) and where it came from."""

    level: int
    point: Tuple[float, float, float]
    source: str

    @property
    def z(self) -> float:
        return self.point[2]


@dataclass(frozen=True)
class ReferenceSet:
    """The references a scan is scored against: all label files together, or one file (when they disagree)."""

    name: str
    refs: Dict[int, Reference]
    discs: Dict[int, Tuple[float, float, float]] = field(default_factory=dict)   # disc label -> LPS point

    def step_mm(self, level: int) -> Tuple[float, str]:
        """The local reference level step at a level: the mean distance (along z) to its labelled neighbours;
        with none labelled, the span to the nearest labelled levels divided by the levels between them."""
        z = {k: r.z for k, r in self.refs.items()}
        if level not in z:
            raise KeyError(level)
        near = [abs(z[level] - z[k]) for k in (level - 1, level + 1) if k in z]
        if near:
            return float(np.mean(near)), "neighbours"
        above = [k for k in z if k < level]
        below = [k for k in z if k > level]
        pick = [max(above)] if above else []
        pick += [min(below)] if below else []
        if not pick:
            return NOMINAL_STEP_MM, "nominal"
        if len(pick) == 2:
            a, b = pick
            return abs(z[a] - z[b]) / (b - a), f"{level_name(a)}-{level_name(b)} span"
        k = pick[0]
        return abs(z[level] - z[k]) / abs(level - k), f"{level_name(level)}-{level_name(k)} span"


def file_references(lf: LabelFile) -> Dict[int, Reference]:
    """The level references one label file gives."""
    out: Dict[int, Reference] = {}
    if lf.kind == "points":
        kind = "landmark" if "landmark" in lf.name.lower() else "level label"
        for v, p in lf.points.items():
            out[v] = Reference(v, p, kind)
    elif lf.kind == "discs":
        for v in sorted(lf.points):
            # Level v lies between disc v (above) and disc v + 1; C2's upper "disc" is the C1/C2 joint.
            if v >= 3 and v + 1 in lf.points:
                a, b = np.asarray(lf.points[v]), np.asarray(lf.points[v + 1])
                out[v] = Reference(v, tuple(float(c) for c in (a + b) / 2), f"discs {v}+{v + 1} midpoint")
    elif lf.kind == "cord-levels":
        for v, p in lf.points.items():
            if v not in lf.cut_off:
                lo, hi = lf.extents[v]
                out[v] = Reference(v, p, f"cord level range {lo:.1f}..{hi:.1f}")
    return out


_PRIORITY = {"points": 0, "discs": 1, "cord-levels": 2}


def reference_sets(files: Sequence[LabelFile]) -> Tuple[List[ReferenceSet], List[str]]:
    """The reference sets of a scan and the disagreements found between its label files."""
    per_file = [(lf, file_references(lf)) for lf in sorted(files, key=lambda f: (_PRIORITY.get(f.kind, 9), f.name))
                if lf.kind in _PRIORITY]
    per_file = [(lf, refs) for lf, refs in per_file if refs]
    disc_points = {v: p for lf in files if lf.kind == "discs" for v, p in lf.points.items()}
    notes = []
    for i, (fa, ra) in enumerate(per_file):
        for fb, rb in per_file[i + 1:]:
            for v in sorted(set(ra) & set(rb)):
                d = ra[v].z - rb[v].z
                if abs(d) > DISAGREE_MM:
                    notes.append(f"{fa.name} and {fb.name} disagree at {level_name(v)}: z {ra[v].z:.1f} mm "
                                 f"({ra[v].source}) vs {rb[v].z:.1f} mm ({rb[v].source}), {abs(d):.1f} mm apart")
    if not per_file:
        return [], notes
    if notes:
        return [ReferenceSet(lf.name, refs, disc_points if lf.kind == "discs" else {}) for lf, refs in per_file], notes
    combined: Dict[int, Reference] = {}
    for lf, refs in per_file:
        for v, r in refs.items():
            combined.setdefault(v, r)
    return [ReferenceSet("labels", combined, disc_points)], notes


# ------------------------------------------------------------------------------------------------
# Challenge-layout renders
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RenderGeometry:
    """Where a render's mid-sagittal image (slice 6) lies in patient space, and how it was anchored."""

    plane: ImagePlane
    slice_offsets_mm: Dict[int, float]     # slice -> offset toward the patient's left (5 right, 7 left)
    anchor: str                            # "C2 centre" or "volume top edge"
    axial_positions: Tuple[str, ...]       # canal positions given an axial image

    def slice_plane(self, s: int) -> ImagePlane:
        """The plane of sagittal slice s (its slab's centre)."""
        # The plane's normal (posterior x inferior) points to the patient's right; offsets count toward the left.
        toward_left = float(np.asarray(self.plane.normal) @ np.asarray(LEFT))
        return self.plane.shifted(self.slice_offsets_mm[s] * toward_left)


def sagittal_plane(mid_x: float, anchor_point: Tuple[float, float, float], framing: Framing,
                   anchor_column: float = CORD_COLUMN, size: int = IMAGE_SIZE) -> ImagePlane:
    """The render's slice-6 plane: LPS x = mid_x, anterior left, superior up, framing.mm_per_px, with
    anchor_point's (y, z) at image (anchor_column, framing.anchor_row)."""
    sp = framing.mm_per_px
    right, down = np.asarray(POSTERIOR), -np.asarray(SUPERIOR)
    a = np.array([mid_x, anchor_point[1], anchor_point[2]], float)
    first = a - (anchor_column - 0.5) * sp * right - (framing.anchor_row - 0.5) * sp * down
    return ImagePlane.make(first, right, down, (sp, sp), (size, size))


class VolumeSampler:
    """Trilinear samples of a volume at LPS points (0 outside it), optionally low-passed in-plane first."""

    def __init__(self, data: np.ndarray, affine_lps: np.ndarray):
        self.data = np.asarray(data, np.float32)
        self.affine = np.asarray(affine_lps, float)
        self.inverse = np.linalg.inv(self.affine)
        self.zooms = np.linalg.norm(self.affine[:3, :3], axis=0)
        self.dirs = self.affine[:3, :3] / self.zooms
        self._smoothed: Dict[Tuple[float, ...], np.ndarray] = {}

    def smoothed_for(self, mm_per_px: float, normal) -> np.ndarray:
        """The volume low-passed along the voxel axes lying in the image plane (normal given), so that a
        coarser image averages detail instead of aliasing it (as study.geometry.resample does)."""
        from scipy.ndimage import gaussian_filter

        n = np.asarray(normal, float) / np.linalg.norm(normal)
        sigma = []
        for k in range(3):
            in_plane = np.sqrt(max(0.0, 1.0 - float(self.dirs[:, k] @ n) ** 2))
            f = mm_per_px / self.zooms[k]
            sigma.append(0.5 * np.sqrt(max(f * f - 1.0, 0.0)) * in_plane)
        key = tuple(round(s, 4) for s in sigma)
        if max(key) < 0.05:
            return self.data
        if key not in self._smoothed:
            self._smoothed[key] = gaussian_filter(self.data, key, mode="nearest").astype(np.float32)
        return self._smoothed[key]

    def sample(self, points: np.ndarray, volume: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        from scipy.ndimage import map_coordinates

        vol = self.data if volume is None else volume
        pts = np.asarray(points, float)
        ijk = pts @ self.inverse[:3, :3].T + self.inverse[:3, 3]
        shape = np.asarray(vol.shape, float)
        inside = np.all((ijk >= -0.5) & (ijk <= shape - 0.5), axis=-1)
        coords = np.clip(ijk, 0, shape - 1).reshape(-1, 3).T
        values = map_coordinates(vol, coords, order=1, mode="nearest").reshape(pts.shape[:-1])
        values[~inside] = 0.0
        return values.astype(np.float32), inside

    def slab(self, plane: ImagePlane, thickness_mm: float, mm_per_px: float) -> Tuple[np.ndarray, np.ndarray]:
        """The mean of the planes (PLANE_STEP_MM apart) a slab of this thickness centred on `plane` covers."""
        n = max(1, int(round(thickness_mm / PLANE_STEP_MM)))
        rows, cols = plane.shape
        yy, xx = np.mgrid[0:rows, 0:cols]
        base = plane.to_world(np.stack([xx + 0.5, yy + 0.5], -1))
        normal = plane.normal
        vol = self.smoothed_for(mm_per_px, normal)
        acc = np.zeros((rows, cols), np.float32)
        inside = np.zeros((rows, cols), bool)
        for k in range(n):
            v, m = self.sample(base + ((k - (n - 1) / 2) * PLANE_STEP_MM) * normal, vol)
            acc += v
            inside |= m
        return acc / n, inside


def to_uint8(images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> List[np.ndarray]:
    """8-bit images, jointly scaled so the SCALE_PERCENTILE of the pixels inside the volume is 255."""
    inside = np.concatenate([im[m] for im, m in zip(images, masks)])
    hi = float(np.percentile(inside, SCALE_PERCENTILE)) if inside.size else 0.0
    out = []
    for im, m in zip(images, masks):
        u = np.clip(im / hi, 0, 1) if hi > 0 else np.zeros_like(im)
        u = np.rint(u * 255).astype(np.uint8)
        u[~m] = 0
        out.append(u)
    return out


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


@dataclass(frozen=True)
class Cord:
    """The cord mask's voxels (LPS), for mid-planes, axial centres and directions."""

    points: np.ndarray

    def near_height(self, z: float, half_mm: float = 1.0) -> np.ndarray:
        return self.points[np.abs(self.points[:, 2] - z) <= half_mm]

    def centre_at(self, z: float) -> Optional[np.ndarray]:
        near = self.near_height(z)
        return near.mean(0) if len(near) else None

    def direction_at(self, z: float, half_span_mm: float = 6.0) -> Optional[np.ndarray]:
        a, b = self.centre_at(z + half_span_mm), self.centre_at(z - half_span_mm)
        if a is None or b is None:
            return None
        d = a - b
        return d / np.linalg.norm(d)


def axial_plane(centre: np.ndarray, through: np.ndarray, normal: np.ndarray,
                size: int = IMAGE_SIZE, mm_per_px: float = AXIAL_MM_PER_PX) -> ImagePlane:
    """A challenge-like axial view: the plane through `through` with this normal, centred on `centre`'s
    projection, anterior up, the patient's left on the image's right."""
    n = np.asarray(normal, float) / np.linalg.norm(normal)
    c = np.asarray(centre, float) - float((np.asarray(centre) - np.asarray(through)) @ n) * n
    r = np.asarray(LEFT, float) - (np.asarray(LEFT) @ n) * n
    r /= np.linalg.norm(r)
    d = np.cross(n, r)
    if d @ np.asarray(POSTERIOR) < 0:
        d = -d
    half = size / 2 - 0.5
    first = c - half * mm_per_px * (r + d)
    return ImagePlane.make(first, r, d, (mm_per_px, mm_per_px), (size, size))


def _canal_points(ref_set: ReferenceSet) -> Dict[str, np.ndarray]:
    """The canal positions a reference set places: bodies from its level references, discs from disc labels."""
    out = {}
    for p in CANAL_POSITIONS:
        if p in DISCS:
            v = disc_number(p)
            if v in ref_set.discs:
                out[p] = np.asarray(ref_set.discs[v], float)
        else:
            v = level_number(p)
            if v in ref_set.refs:
                out[p] = np.asarray(ref_set.refs[v].point, float)
    return out


def render_patient(folder: Path, sampler: VolumeSampler, framing: Framing, mid_x: float,
                   anchor: Tuple[Tuple[float, float, float], str], cord_y: float,
                   canal_points: Dict[str, np.ndarray], cord: Optional[Cord]) -> RenderGeometry:
    """Write one challenge-layout patient cut from the volume; returns its geometry."""
    point, how = anchor
    plane = sagittal_plane(mid_x, (mid_x, cord_y, point[2]), framing)
    gap = framing.slice_gap_mm
    offsets = {SAGITTAL_SLICES[0]: -gap, SAGITTAL_SLICES[1]: 0.0, SAGITTAL_SLICES[2]: gap}
    geometry = RenderGeometry(plane, offsets, how, ())
    images, masks = [], []
    for s in SAGITTAL_SLICES:
        im, m = sampler.slab(geometry.slice_plane(s), framing.slab_mm, framing.mm_per_px)
        images.append(im)
        masks.append(m)
    for s, u in zip(SAGITTAL_SLICES, to_uint8(images, masks)):
        _write_png(folder / "sag" / f"{s}.png", u)
    (folder / "tra").mkdir(parents=True, exist_ok=True)
    done = []
    zs = sorted((p[2], k) for k, p in canal_points.items())
    for p in CANAL_POSITIONS:
        if p not in canal_points:
            continue
        ref = canal_points[p]
        centre = cord.centre_at(ref[2]) if cord is not None else None
        direction = cord.direction_at(ref[2]) if cord is not None else None
        if direction is None:
            # The line through the neighbouring references, else the superior axis.
            others = [np.asarray(canal_points[k]) for _, k in zs if k != p]
            if len(others) >= 1:
                up = [o for o in others if o[2] > ref[2]]
                down = [o for o in others if o[2] < ref[2]]
                a = min(up, key=lambda o: o[2]) if up else ref
                b = max(down, key=lambda o: o[2]) if down else ref
                direction = (a - b) / np.linalg.norm(a - b) if np.linalg.norm(a - b) > 1e-6 else None
        if direction is None:
            direction = np.asarray(SUPERIOR, float)
        view = axial_plane(centre if centre is not None else ref, ref, direction)
        im, m = sampler.slab(view, framing.slab_mm, AXIAL_MM_PER_PX)
        if not m.any():
            continue
        _write_png(folder / "tra" / f"{axial_file_stem(p)}.png", to_uint8([im], [m])[0])
        done.append(p)
    return RenderGeometry(plane, offsets, how, tuple(done))


# ------------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------------
@dataclass
class LevelRow:
    scan: str
    run: str
    reference_set: str
    level: str
    source: str                    # "no label" when not scored
    reference_z: Optional[float] = None
    predicted_z: Optional[float] = None
    error_mm: Optional[float] = None       # reference z - predicted z: positive = predicted too low
    step_mm: Optional[float] = None
    within: Optional[bool] = None
    outside_fov: bool = False


@dataclass
class RunRow:
    scan: str
    run: str
    reference_set: str
    labelled: int
    right: int
    failed: str = ""
    notes: Tuple[str, ...] = ()

    @property
    def all_labelled_right(self) -> bool:
        return not self.failed and self.labelled > 0 and self.right == self.labelled

    @property
    def all_six(self) -> Optional[bool]:
        return (self.all_labelled_right if not self.failed else False) if self.labelled == len(VERTEBRAE) else None


@dataclass
class T2Row:
    scan: str
    run: str
    reference_set: str
    reference_z: float
    predicted_z: Optional[float]
    median_step_mm: Optional[float]
    error_mm: Optional[float]
    step_mm: float
    within: Optional[bool]


@dataclass
class CanalRow:
    scan: str
    position: str
    canal_lps: Optional[Tuple[float, float, float]]
    cord_lps: Optional[Tuple[float, float, float]]
    distance_mm: Optional[float]
    note: str = ""

    @property
    def within(self) -> Optional[bool]:
        return None if self.distance_mm is None else self.distance_mm <= CANAL_TO_CORD_MM


def outside_levels(report: dict) -> Tuple[str, ...]:
    """The levels a report calls outside the field of view (missing key: none)."""
    v = report.get("outside_field_of_view")
    if v is None:
        v = report.get("levels", {}).get("outside_field_of_view")
    if isinstance(v, dict):
        v = list(v)
    return tuple(str(x) for x in (v or ()))


def score_levels(scan: str, run: str, ref_set: ReferenceSet, predicted_z: Optional[Dict[str, float]],
                 outside: Sequence[str], failed: str = "") -> Tuple[List[LevelRow], RunRow]:
    rows = []
    right = labelled = 0
    for lv in VERTEBRAE:
        v = level_number(lv)
        ref = ref_set.refs.get(v)
        if ref is None:
            rows.append(LevelRow(scan, run, ref_set.name, lv, "no label", outside_fov=lv in outside))
            continue
        labelled += 1
        step, _ = ref_set.step_mm(v)
        if predicted_z is None or lv not in predicted_z:
            rows.append(LevelRow(scan, run, ref_set.name, lv, ref.source, ref.z, None, None, step, False,
                                 lv in outside))
            continue
        err = ref.z - predicted_z[lv]
        ok = abs(err) <= 0.5 * step
        right += ok
        rows.append(LevelRow(scan, run, ref_set.name, lv, ref.source, ref.z, predicted_z[lv], err, step, ok,
                             lv in outside))
    return rows, RunRow(scan, run, ref_set.name, labelled, right, failed)


def t2_check(scan: str, run: str, ref_set: ReferenceSet, predicted_z: Optional[Dict[str, float]]
             ) -> Optional[T2Row]:
    """The reader's C7 extrapolated two median level steps down, against a T2 reference."""
    t2 = level_number("T2")
    if t2 not in ref_set.refs:
        return None
    ref = ref_set.refs[t2]
    step, _ = ref_set.step_mm(t2)
    if predicted_z is None or any(lv not in predicted_z for lv in VERTEBRAE):
        return T2Row(scan, run, ref_set.name, ref.z, None, None, None, step, None)
    z = [predicted_z[lv] for lv in VERTEBRAE]
    med = float(np.median(-np.diff(z)))
    pred = z[-1] - 2 * med
    err = ref.z - pred
    return T2Row(scan, run, ref_set.name, ref.z, pred, med, err, step, abs(err) <= 0.5 * step)


def axial_normal(affine_lps: np.ndarray) -> np.ndarray:
    """The normal of the axial voxel planes the NIfTI loader cuts from a 3-D volume (study.nifti)."""
    m = affine_lps[:3, :3]
    dirs = m / np.linalg.norm(m, axis=0)
    k = int(np.argmax(np.abs(dirs[2])))
    return dirs[:, k]


def canal_rows(scan: str, report: dict, cord: Optional[Cord], normal: np.ndarray) -> List[CanalRow]:
    """Per canal position whose axial image the NIfTI path cut from the 3-D volume: the in-plane distance from
    the canal centre the reader found to the cord mask's centroid in that plane."""
    out = []
    for p in CANAL_POSITIONS:
        entry = report.get("canal", {}).get(p, {})
        source = report.get("inputs", {}).get(f"tra/{p}", "")
        c = entry.get("canal_centre_lps")
        if c is None or "cut axially" not in source:
            continue
        c = np.asarray(c, float)
        if cord is None:
            out.append(CanalRow(scan, p, tuple(c), None, None, "n/a: no cord mask"))
            continue
        d = (cord.points - c) @ normal
        near = cord.points[np.abs(d) <= CORD_SLAB_MM]
        if not len(near):
            out.append(CanalRow(scan, p, tuple(c), None, None, "n/a: the plane misses the cord mask"))
            continue
        centroid = near.mean(0)
        diff = centroid - c
        diff = diff - (diff @ normal) * normal
        out.append(CanalRow(scan, p, tuple(float(v) for v in c), tuple(float(v) for v in centroid),
                            float(np.linalg.norm(diff))))
    return out


# ------------------------------------------------------------------------------------------------
# The evaluation
# ------------------------------------------------------------------------------------------------
@dataclass
class ScanPlan:
    scan: Scan
    files: List[LabelFile]
    sets: List[ReferenceSet]
    disagreements: List[str]
    cord: Optional[Cord]


def plan_scan(scan: Scan) -> ScanPlan:
    files = [lf for lf in (read_label_file(p) for p in scan.label_paths) if lf is not None]
    sets, notes = reference_sets(files)
    cords = [lf for lf in files if lf.kind == "cord"] or [lf for lf in files if lf.kind == "cord-levels"]
    cord = Cord(cords[0].cord) if cords else None
    return ScanPlan(scan, files, sets, notes, cord)


# Where C2 has no label, a render may still be framed on C2 estimated from C3 or C4 (one or two local level
# steps up), if that lies this far inside the volume; it frames the image only and is never scored.
ANCHOR_EXTRAPOLATE_MAX_LEVEL = 4
ANCHOR_MARGIN_MM = 5.0


def _anchor(plan: ScanPlan, affine: np.ndarray, shape) -> Tuple[Tuple[float, float, float], str]:
    """What a render puts at its framing row: C2's reference centre when every reference set has one and they
    agree; with one reference set and no C2 label, C2 estimated from C3 or C4 when inside the volume; else the
    volume's top edge."""
    corners = voxel_points(affine, np.array([[i, j, k] for i in (-0.5, shape[0] - 0.5)
                                             for j in (-0.5, shape[1] - 0.5) for k in (-0.5, shape[2] - 0.5)]))
    top_z = float(corners[:, 2].max())
    c2 = [s.refs.get(2) for s in plan.sets]
    if c2 and all(r is not None for r in c2) and max(r.z for r in c2) - min(r.z for r in c2) <= DISAGREE_MM:
        return c2[0].point, "C2 centre"
    if len(plan.sets) == 1:
        s = plan.sets[0]
        below = [v for v in s.refs if 2 < v <= ANCHOR_EXTRAPOLATE_MAX_LEVEL]
        if below:
            k = min(below)
            step, _ = s.step_mm(k)
            x, y, z = s.refs[k].point
            z_c2 = z + (k - 2) * step
            if z_c2 <= top_z - ANCHOR_MARGIN_MM:
                return (x, y, z_c2), f"C2 estimated from {level_name(k)} ({k - 2} level step(s) up)"
    top = corners[np.argmax(corners[:, 2])]
    return (float(top[0]), float(top[1]), top_z), "volume top edge"


def _mid_and_cord_y(plan: ScanPlan, sampler: VolumeSampler, shape) -> Tuple[float, float]:
    """The mid-sagittal plane (LPS x: the cord mask's left-right centre, else the volume's middle) and the
    cord's antero-posterior position over the labelled levels (else the references', else the volume's)."""
    centre = voxel_points(sampler.affine, (np.asarray(shape, float) - 1)[None] / 2)[0]
    zs = [r.z for s in plan.sets for lv, r in s.refs.items() if 2 <= lv <= level_number("T2")]
    if plan.cord is not None:
        pts = plan.cord.points
        if len(zs) >= 1:
            lo, hi = min(zs) - 10.0, max(zs) + 10.0
            sel = pts[(pts[:, 2] >= lo) & (pts[:, 2] <= hi)]
            pts = sel if len(sel) else pts
        return float(np.median(pts[:, 0])), float(np.mean(pts[:, 1]))
    refs = [r.point for s in plan.sets for r in s.refs.values()]
    if refs:
        return float(centre[0]), float(np.mean([p[1] for p in refs]))
    return float(centre[0]), float(centre[1])


def _predicted_from_render(report: dict, geometry: RenderGeometry) -> Dict[str, float]:
    out = {}
    for lv in VERTEBRAE:
        x1, y1, x2, y2 = report["levels"]["vertebrae"]["6"][lv]["xyxy"]
        xy = body_centre(Box(x1, y1, x2, y2), lv)
        out[lv] = float(geometry.plane.to_world(np.asarray(xy, float))[2])
    return out


def _predicted_from_nifti(report: dict) -> Optional[Dict[str, float]]:
    centres = report.get("levels", {}).get("centres_lps")
    if not centres:
        return None
    return {lv: float(centres[lv][2]) for lv in VERTEBRAE if lv in centres}


def _read_run(out_dir: Path) -> Tuple[Dict[str, dict], Dict[str, str]]:
    reports = {p.stem: json.loads(p.read_text()) for p in sorted((out_dir / "reports").glob("*.json"))}
    errors = {}
    if (out_dir / "errors.json").is_file():
        errors = {e["id"]: e["error"] for e in json.loads((out_dir / "errors.json").read_text())}
    return reports, errors


def evaluate(data_dirs: Sequence[Path], out_dir: Path, weights: Path, framings: Sequence[Framing] = FRAMINGS,
             scans_wanted: Sequence[str] = (), keep: bool = False, nifti: bool = True,
             echo=click.echo, variants: Sequence[str] = ()) -> dict:
    """Run and score everything; writes OUT/real_scans.md and OUT/real_scans.json and returns the JSON.
    variants (evaluation.real_variants.VARIANTS names): each labelled scan is also re-written so and scored."""
    from reader import Reader, ReaderError
    from reader.folder import run_folder

    def run_batch(input_dir: Path, run_out: Path) -> int:
        return run_folder(input_dir, run_out, weights, reader=reader, echo=click.echo, overwrite=True)  # its own folder

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scans: List[Scan] = []
    for d in data_dirs:
        scans += find_scans(Path(d))
    if scans_wanted:
        scans = [s for s in scans if s.scan_id in scans_wanted]
    plans = [plan_scan(s) for s in scans]
    skipped = [p.scan.scan_id for p in plans if not p.sets]
    plans = [p for p in plans if p.sets]
    if not plans:
        raise click.ClickException("no labelled T2 scan found in " + ", ".join(str(d) for d in data_dirs)
                                   + (f" (unlabelled: {', '.join(skipped)})" if skipped else ""))
    try:
        reader = Reader.from_weights(weights, "cpu")   # loaded once for both runs
    except ReaderError as e:
        raise click.ClickException(str(e)) from None
    work = out_dir / "work" if keep else Path(tempfile.mkdtemp(prefix="real_scans-"))
    if keep and work.exists():
        shutil.rmtree(work)
    try:
        if variants:
            plans += [plan_scan(v) for v in write_variants([p.scan for p in plans], work / "variants", variants)]
        result = _evaluate(plans, skipped, work, weights, framings, nifti, run_batch, echo)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    result["data"] = [_shown(d) for d in data_dirs]
    result["weights"] = _shown(weights)
    result["error_definition"] = ("error_mm = reference z - predicted z (LPS, mm, along the superior-inferior "
                                  "axis): positive = the prediction lies too low (inferior); within_half_step: "
                                  "|error_mm| <= step_mm / 2, step_mm the local reference level step")
    write_json_atomic(out_dir / "real_scans.json", result)
    text = markdown(result)
    (out_dir / "real_scans.md").write_text(text, encoding="utf-8")
    return result


def _evaluate(plans: List[ScanPlan], skipped: List[str], work: Path, weights: Path,
              framings: Sequence[Framing], nifti: bool, run_batch, echo) -> dict:
    level_rows: List[LevelRow] = []
    run_rows: List[RunRow] = []
    t2_rows: List[T2Row] = []
    canal: List[CanalRow] = []
    renders: Dict[str, Tuple[ScanPlan, Framing, RenderGeometry]] = {}
    scan_info = []
    nifti_dir, render_dir = work / "nifti", work / "renders"
    for plan in plans:
        sc = plan.scan
        scan_info.append({
            "scan": sc.scan_id, "data": sc.data_name, "image": sc.image.name,
            "label_files": [{"file": lf.name, "kind": lf.kind,
                             **({"cut_off": [level_name(v) for v in lf.cut_off]} if lf.cut_off else {})}
                            for lf in plan.files],
            "reference_sets": [{"name": s.name, "levels": {level_name(v): {"lps": [round(c, 1) for c in r.point],
                                                                          "source": r.source}
                                                           for v, r in sorted(s.refs.items())}}
                               for s in plan.sets],
            "disagreements": plan.disagreements,
            "cord_mask": plan.cord is not None})
        if nifti:
            dest = nifti_dir / sc.scan_id
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(sc.image, dest / sc.image.name)
            if sc.sidecar is not None:
                shutil.copy(sc.sidecar, dest / sc.sidecar.name)
        if framings:
            data, aff = load_volume(sc.image)
            sampler = VolumeSampler(data, aff)
            anchor = _anchor(plan, aff, data.shape)
            mid_x, cord_y = _mid_and_cord_y(plan, sampler, data.shape)
            points = _canal_points(plan.sets[0])
            for fr in framings:
                pid = f"{sc.scan_id}__{fr.name}"
                geom = render_patient(render_dir / pid, sampler, fr, mid_x, anchor, cord_y, points, plan.cord)
                renders[pid] = (plan, fr, geom)
            echo(f"rendered {sc.scan_id}: {len(framings)} framing(s), anchored on the {anchor[1]}")

    def score(scan_plan, run, predicted, outside, failed, notes=()):
        for s in scan_plan.sets:
            rows, rr = score_levels(scan_plan.scan.scan_id, run, s, predicted, outside, failed)
            rr.notes = tuple(notes)
            level_rows.extend(rows)
            run_rows.append(rr)
            t2 = t2_check(scan_plan.scan.scan_id, run, s, predicted)
            if t2 is not None:
                t2_rows.append(t2)

    if nifti:
        code = run_batch(nifti_dir, work / "run_nifti")
        reports, errors = _read_run(work / "run_nifti")
        if not reports and not errors:
            raise click.ClickException(f"the NIfTI run wrote nothing (exit code {code})")
        for plan in plans:
            sid = plan.scan.scan_id
            rep = reports.get(sid)
            failed = "" if rep is not None else errors.get(sid, "no report")
            predicted = _predicted_from_nifti(rep) if rep is not None else None
            if rep is not None and predicted is None:
                failed = "the report holds no levels.centres_lps"
            score(plan, "nifti", predicted, outside_levels(rep) if rep else (), failed)
            if rep is not None:
                _, aff = load_volume(plan.scan.image)
                canal.extend(canal_rows(sid, rep, plan.cord, axial_normal(aff)))
    if renders:
        code = run_batch(render_dir, work / "run_renders")
        reports, errors = _read_run(work / "run_renders")
        if not reports and not errors:
            raise click.ClickException(f"the render run wrote nothing (exit code {code})")
        for pid, (plan, fr, geom) in renders.items():
            rep = reports.get(pid)
            failed = "" if rep is not None else errors.get(pid, "no report")
            predicted = _predicted_from_render(rep, geom) if rep is not None else None
            notes = [] if geom.anchor == "C2 centre" else [f"{geom.anchor} at row {fr.anchor_row:g} (no C2 label)"]
            score(plan, f"render {fr.name} ({fr.describe()})", predicted, outside_levels(rep) if rep else (),
                  failed, notes)
    return {"scans": scan_info, "skipped_unlabelled": skipped,
            "framings": [{"name": f.name, "anchor_row": f.anchor_row, "px_per_mm": f.px_per_mm, "slab_mm": f.slab_mm,
                          "slice_gap_mm": f.slice_gap_mm} for f in framings],
            "levels": [_level_json(r) for r in level_rows],
            "runs": [{"scan": r.scan, "run": r.run, "reference_set": r.reference_set, "labelled": r.labelled,
                      "right": r.right, "all_labelled_right": r.all_labelled_right, "all_six_right": r.all_six,
                      "failed": r.failed, "notes": list(r.notes)} for r in run_rows],
            "t2_check": [_t2_json(r) for r in t2_rows],
            "canal": [{"scan": r.scan, "position": r.position,
                       "canal_centre_lps": _r1(r.canal_lps), "cord_centroid_lps": _r1(r.cord_lps),
                       "distance_mm": None if r.distance_mm is None else round(r.distance_mm, 1),
                       "within_3mm": r.within, "note": r.note} for r in canal],
            "totals": _totals(level_rows, run_rows, canal)}


def _shown(path) -> str:
    """A path as the tables show it: relative to the repository (or its parent, for ../shared) when inside."""
    p = Path(path).resolve()
    for base, prefix in ((ROOT, ""), (ROOT.parent, "../")):
        try:
            return prefix + p.relative_to(base).as_posix()
        except ValueError:
            continue
    return str(path)


def _r1(v):
    return None if v is None else [round(float(c), 1) + 0.0 for c in v]


def _rnd(v, n=1):
    return None if v is None else round(float(v), n) + 0.0


def _level_json(r: LevelRow) -> dict:
    return {"scan": r.scan, "run": r.run, "reference_set": r.reference_set, "level": r.level, "source": r.source,
            "reference_z": _rnd(r.reference_z), "predicted_z": _rnd(r.predicted_z), "error_mm": _rnd(r.error_mm),
            "step_mm": _rnd(r.step_mm), "within_half_step": r.within, "outside_fov": r.outside_fov}


def _t2_json(r: T2Row) -> dict:
    return {"scan": r.scan, "run": r.run, "reference_set": r.reference_set, "reference_z": _rnd(r.reference_z),
            "predicted_z": _rnd(r.predicted_z), "median_step_mm": _rnd(r.median_step_mm), "error_mm": _rnd(r.error_mm),
            "step_mm": _rnd(r.step_mm), "within_half_step": r.within}


def _totals(level_rows: List[LevelRow], run_rows: List[RunRow], canal: List[CanalRow]) -> dict:
    def block(rows, runs):
        scored = [r for r in rows if r.source != "no label"]
        errs = [abs(r.error_mm) for r in scored if r.error_mm is not None]
        return {"scored_levels": len(scored),
                "median_abs_error_mm": _rnd(np.median(errs)) if errs else None,
                "median_error_mm": _rnd(np.median([r.error_mm for r in scored if r.error_mm is not None]))
                if errs else None,
                "within_half_step": sum(bool(r.within) for r in scored),
                "fraction_within_half_step": _rnd(np.mean([bool(r.within) for r in scored]), 3) if scored else None,
                "runs": len(runs), "runs_all_labelled_right": sum(r.all_labelled_right for r in runs),
                "runs_with_six_labelled": sum(r.all_six is not None for r in runs),
                "runs_all_six_right": sum(bool(r.all_six) for r in runs)}

    out = {"all": block(level_rows, run_rows),
           "nifti": block([r for r in level_rows if r.run == "nifti"], [r for r in run_rows if r.run == "nifti"]),
           "renders": block([r for r in level_rows if r.run != "nifti"], [r for r in run_rows if r.run != "nifti"])}

    def canal_block(rows):
        measured = [c for c in rows if c.distance_mm is not None]
        return {"positions": len(rows), "measured": len(measured),
                "within_3mm": sum(bool(c.within) for c in measured),
                "fraction_within_3mm": _rnd(np.mean([bool(c.within) for c in measured]), 3) if measured else None,
                "median_distance_mm": _rnd(np.median([c.distance_mm for c in measured])) if measured else None}

    out["canal"] = canal_block(canal)
    names = sorted({variant_of(r.scan) for r in run_rows}, key=lambda n: (n != "original", n))
    if names != ["original"]:
        out["variants"] = {n: {**block([r for r in level_rows if variant_of(r.scan) == n],
                                       [r for r in run_rows if variant_of(r.scan) == n]),
                               "canal": canal_block([c for c in canal if variant_of(c.scan) == n])}
                           for n in names}
    return out


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------
def _f(v, fmt="{:+.1f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def _yn(v) -> str:
    return "n/a" if v is None else ("yes" if v else "no")


def markdown(result: dict) -> str:
    data = ", ".join(sorted({s["data"] for s in result["scans"]}))
    lines = [f"## Real scan: where the reader places C2-C7 (data: {data})", "",
             f"Data: {', '.join(f'`{d}`' for d in result.get('data', []))}; weights: `{result.get('weights', '')}`. "
             "Error = reference z - predicted z along the "
             "superior-inferior axis (mm; positive = the prediction lies too low). Right = within half the local "
             "reference level step. nifti = the volume read by `run`; render = challenge-layout PNGs cut from it "
             "(C2 row, px/mm, slab thickness). A run that failed counts its labelled levels as wrong (no error "
             "in the medians).", ""]
    if result["framings"]:
        lines += ["Render framings: " + "; ".join(
            f"{f['name']}: C2 at row {f['anchor_row']:g}, {f['px_per_mm']:g} px/mm, {f['slab_mm']:g} mm slabs "
            f"{f['slice_gap_mm']:g} mm apart" for f in result["framings"]) + ". Slabs are means of 1 mm planes; "
            "the mid slab lies on the cord's left-right centre; 224 x 224, 8-bit, black outside the volume; "
            "axial images (0.7 mm/px, perpendicular to the cord) only at labelled positions.", ""]
    lines += ["### Real scan: labels used", "", "| scan (data) | label files | reference set: levels (source) |",
              "|---|---|---|"]
    for s in result["scans"]:
        files = "; ".join(f"{f['file']} ({f['kind']}" + (f", cut off: {', '.join(f['cut_off'])}" if f.get("cut_off")
                                                          else "") + ")" for f in s["label_files"])
        sets = "<br>".join(f"{rs['name']}: " + ", ".join(f"{lv} {v['lps'][2]:+.1f} ({v['source']})"
                                                           for lv, v in rs["levels"].items())
                           for rs in s["reference_sets"])
        lines.append(f"| {s['scan']} ({s['data']}) | {files} | {sets} |")
    for s in result["scans"]:
        for d in s["disagreements"]:
            lines.append(f"\n**Label disagreement, real scan {s['scan']}:** {d}; the scan is scored against each "
                         "file separately.")
    if result.get("skipped_unlabelled"):
        lines.append(f"\nNot scored (no labels): {', '.join(result['skipped_unlabelled'])}.")
    lines += ["", f"### Real scan: per level (data: {data})", "",
              "| scan | run | reference | level | source | ref z | pred z | mm too low | half step | right | "
              "outside FOV (report) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["levels"]:
        lines.append(f"| {r['scan']} | {r['run']} | {r['reference_set']} | {r['level']} | {r['source']} | "
                     f"{_f(r['reference_z'])} | {_f(r['predicted_z'])} | {_f(r['error_mm'])} | "
                     f"{_f(None if r['step_mm'] is None else r['step_mm'] / 2, '{:.1f}')} | "
                     f"{_yn(r['within_half_step']) if r['source'] != 'no label' else 'no label'} | "
                     f"{'yes' if r['outside_fov'] else 'no'} |")
    lines += ["", f"### Real scan: per run (data: {data})", "",
              "| scan | run | reference | labelled levels right | all labelled right | all six right | note |",
              "|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        note = "; ".join(([f"failed: {r['failed']}"] if r["failed"] else []) + r["notes"])
        six = "n/a (fewer than six labelled)" if r["all_six_right"] is None else _yn(r["all_six_right"])
        lines.append(f"| {r['scan']} | {r['run']} | {r['reference_set']} | {r['right']}/{r['labelled']} | "
                     f"{_yn(r['all_labelled_right'])} | {six} | {note} |")
    if result["t2_check"]:
        lines += ["", f"### Real scan: T2 check (reader's C7 + two median level steps vs the T2 label; data: {data})",
                  "", "| scan | run | reference | T2 ref z | extrapolated z | median step | mm too low | half step | "
                  "right |", "|---|---|---|---|---|---|---|---|---|"]
        for r in result["t2_check"]:
            lines.append(f"| {r['scan']} | {r['run']} | {r['reference_set']} | {_f(r['reference_z'])} | "
                         f"{_f(r['predicted_z'])} | {_f(r['median_step_mm'], '{:.1f}')} | {_f(r['error_mm'])} | "
                         f"{_f(r['step_mm'] / 2, '{:.1f}')} | {_yn(r['within_half_step'])} |")
    if result["canal"]:
        lines += ["", f"### Real scan: axial canal centre to the cord, NIfTI path (axials cut from the 3-D volume; "
                      f"data: {data})", "",
                  "| scan | position | canal centre (LPS) | cord centroid (LPS) | distance mm | within 3 mm |",
                  "|---|---|---|---|---|---|"]
        for r in result["canal"]:
            fmt = (lambda v: "n/a" if v is None else "(" + ", ".join(f"{c:.1f}" for c in v) + ")")
            lines.append(f"| {r['scan']} | {r['position']} | {fmt(r['canal_centre_lps'])} | "
                         f"{fmt(r['cord_centroid_lps'])} | "
                         f"{_f(r['distance_mm'], '{:.1f}') if r['distance_mm'] is not None else r['note']} | "
                         f"{_yn(r['within_3mm'])} |")
    t = result["totals"]
    lines += ["", f"### Real scan: totals (data: {data})", "",
              "| runs | scored levels | median abs error mm | median error mm | within half a step | runs with every "
              "labelled level right | runs with all six right (of runs with six labelled) |",
              "|---|---|---|---|---|---|---|"]
    for key, label in (("nifti", "nifti"), ("renders", "renders"), ("all", "all")):
        b = t[key]
        if not b["runs"]:
            continue
        frac = "n/a" if b["fraction_within_half_step"] is None else f"{b['fraction_within_half_step']:.0%}"
        lines.append(f"| {label} | {b['scored_levels']} | {_f(b['median_abs_error_mm'], '{:.1f}')} | "
                     f"{_f(b['median_error_mm'])} | {b['within_half_step']}/{b['scored_levels']} ({frac}) | "
                     f"{b['runs_all_labelled_right']}/{b['runs']} | "
                     f"{b['runs_all_six_right']}/{b['runs_with_six_labelled']} |")
    if t.get("variants"):
        lines += ["", f"### Real scan variants: each scan re-written as below, labels moved with it (data: {data})",
                  "", "| variant | what it is | scored levels right | median abs error mm | runs with every labelled "
                  "level right | runs with all six right | canal centre within 3 mm (NIfTI) |",
                  "|---|---|---|---|---|---|---|"]
        for name, b in t["variants"].items():
            what = VARIANTS[name].description if name in VARIANTS else "the scan as it is"
            cb = b["canal"]
            lines.append(f"| {name} | {what} | {b['within_half_step']}/{b['scored_levels']} | "
                         f"{_f(b['median_abs_error_mm'], '{:.1f}')} | {b['runs_all_labelled_right']}/{b['runs']} | "
                         f"{b['runs_all_six_right']}/{b['runs_with_six_labelled']} | "
                         + (f"{cb['within_3mm']}/{cb['measured']}" if cb["positions"] else "n/a") + " |")
    c = t["canal"]
    if c["positions"]:
        frac = "n/a" if c["fraction_within_3mm"] is None else f"{c['fraction_within_3mm']:.0%}"
        lines += ["", f"Canal centre within {CANAL_TO_CORD_MM:g} mm of the cord (NIfTI path): {c['within_3mm']}/"
                      f"{c['measured']} measured positions ({frac}), median {_f(c['median_distance_mm'], '{:.1f}')} mm; "
                      f"{c['positions'] - c['measured']} n/a."]
    lines += ["", "A scan scored against two disagreeing label files counts its levels once per file. These are "
              "level positions only: no real grade can be measured from these scans."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------
@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", "data_dirs", multiple=True, type=click.Path(path_type=Path),
              help="A BIDS root (sub-*/anat/*_T2w.nii.gz, labels under derivatives/) or a folder holding a T2 "
                   "volume and its label maps; repeatable. Default: ../shared/data/real_mri/sct_2014 and "
                   "../shared/data/real_mri/cervical_sagittal_t2_crop.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=ROOT / "runs" / "real_scans",
              show_default=True, help="Writes real_scans.md and real_scans.json here.")
@click.option("--weights", "weights_dir", type=click.Path(path_type=Path), default=ROOT / "weights",
              show_default=True)
@click.option("--scan", "scans_wanted", multiple=True, help="Only this scan id (repeatable), e.g. sub-errsm21.")
@click.option("--framing", "framing_names", multiple=True,
              type=click.Choice([f.name for f in FRAMINGS] + ["none"]),
              help="Only this render framing (repeatable); 'none' renders nothing. Default: all.")
@click.option("--no-nifti", is_flag=True, help="Skip the NIfTI path (renders only).")
@click.option("--keep", is_flag=True, help="Keep the rendered patients and the runs in OUT/work.")
@click.option("--variants", "variant_names", multiple=True,
              help="Also score each labelled scan re-written as this variant (repeatable, or 'all'): "
                   "ras, noise, bias, slabs, tilt, offcentre, short, cuttop (evaluation/real_variants.py).")
def main(data_dirs, out_dir, weights_dir, scans_wanted, framing_names, no_nifti, keep, variant_names):
    """Measure where the reader places C2-C7 on real labelled T2 scans (NIfTI path and challenge-layout renders)."""
    if not data_dirs:
        data_dirs = DEFAULT_DATA
        missing = [d for d in data_dirs if not d.is_dir()]
        if missing:
            raise click.ClickException("the default real scans are absent (" + ", ".join(str(d) for d in missing)
                                       + "); give --data DIR")
    for d in data_dirs:
        if not Path(d).is_dir():
            raise click.ClickException(f"--data {d}: no such folder")
    framings = () if "none" in framing_names else tuple(f for f in FRAMINGS
                                                        if not framing_names or f.name in framing_names)
    variants = tuple(VARIANTS) if "all" in variant_names else tuple(variant_names)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise click.ClickException(f"--variants {', '.join(unknown)}: unknown; known: all, {', '.join(VARIANTS)}")
    result = evaluate(data_dirs, out_dir, weights_dir, framings, scans_wanted, keep, nifti=not no_nifti,
                      variants=variants)
    click.echo(markdown(result))
    click.echo(f"written: {Path(out_dir) / 'real_scans.md'}, {Path(out_dir) / 'real_scans.json'}")


if __name__ == "__main__":
    main()
