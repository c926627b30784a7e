"""Synthetic DICOM studies (and the same phantom in challenge layout) cut from a 3-D phantom patient."""
# The phantom (synth.anatomy / synth.tissue) is a function of position: the mid-sagittal slice's
# column-following frame gives (s, t) for any point of its plane, and the lateral offset x gives the third
# dimension, so any plane through the neck can be sampled. Geometry here is written from the DICOM
# definitions directly (IPP + column * spacing * row cosine + row * spacing * column cosine), not with the
# study.geometry code under test.
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from study.challenge import Box, PatientBoxes
from study.levels import CANAL_POSITIONS, DISCS, IMAGE_SIZE, SAGITTAL_SLICES, VERTEBRAE, axial_file_stem
from synth.anatomy import build_anatomy
from synth.render import _appearance
from synth.statistical_model import sample_patient
from synth.tissue import CanalProfile, Tissue, tissue_at

X, Y, Z = np.eye(3)  # LPS: patient left, posterior, superior
MODEL_SAG_MM = 1.25
MODEL_AX_MM = 0.7
AXIAL_CENTRE_POSTERIOR_MM = 16.0
# Values that must never appear in anything the loaders produce.
MARKERS = {
    "PatientName": "ZZMARKSURNAME^ZZMARKGIVEN",
    "PatientID": "ZZMARKPID42",
    "PatientBirthDate": "19010203",
    "AccessionNumber": "ZZMARKACC77",
    "InstitutionName": "ZZMARKHOSPITAL",
    "ReferringPhysicianName": "ZZMARKDOCTOR^ANNA",
}
MARKER_STRINGS = ("ZZMARK", "19010203", "1901-02-03")


def uid(*parts) -> str:
    """A deterministic DICOM UID (2.25 + decimal of a hash)."""
    h = int(hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()[:30], 16)
    return f"2.25.{h}"


@dataclass
class Slice:
    """One stored image: pixels (rows, cols) and the DICOM geometry tags."""

    pixels: np.ndarray
    ipp: np.ndarray
    row_cos: np.ndarray   # IOP[:3]: direction of increasing column
    col_cos: np.ndarray   # IOP[3:]: direction of increasing row
    spacing: Tuple[float, float]   # (row, column)
    aimed_at: Optional[str] = None
    tissue: Optional[np.ndarray] = None  # the phantom's tissue classes, to redraw in another contrast


def plane_points(ipp, row_cos, col_cos, spacing, shape) -> np.ndarray:
    """World centres (rows, cols, 3) of every pixel, by the DICOM definition."""
    rows, cols = shape
    i, j = np.mgrid[0:rows, 0:cols]
    return (np.asarray(ipp)[None, None] + (j * spacing[1])[..., None] * np.asarray(row_cos)
            + (i * spacing[0])[..., None] * np.asarray(col_cos))


class Phantom:
    """A phantom patient as tissue(point) in LPS mm, with its level geometry."""

    def __init__(self, seed: int = 0, fov_centre=(4.0, -20.0, 60.0)):
        rng = np.random.default_rng(seed)
        boxes, labels = sample_patient(rng, f"phantom-{seed}")
        self.labels = labels
        self.anat = build_anatomy(boxes.boxes, labels, rng, IMAGE_SIZE)
        self.profile = CanalProfile.of(self.anat)
        self.t2 = _appearance(rng)
        t1 = self.t2.copy()
        # T1-like: CSF dark, fat bright, discs grey; only needs to differ from T2.
        t1[Tissue.CSF], t1[Tissue.CORD], t1[Tissue.FAT], t1[Tissue.NUCLEUS] = 0.15, 0.45, 0.95, 0.35
        self.t1 = t1
        self.sp = self.anat.spacing_mm
        self.centre = np.asarray(fov_centre, float)
        # World position of the phantom grid's continuous coordinate (0, 0) at lateral offset 0.
        self.corner = self.centre - (IMAGE_SIZE / 2) * self.sp * Y + (IMAGE_SIZE / 2) * self.sp * Z

    def tissue(self, points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(tissue class, vertebra index 1..6 = C2..C7) at world points (..., 3)."""
        q = np.asarray(points, float) - self.corner
        u = q[..., 1] / self.sp
        v = -q[..., 2] / self.sp
        x = q[..., 0]
        mid = self.anat.mid
        s, t = mid.frame.to_local(np.stack([u, v], -1))
        return tissue_at(self.anat, self.profile, mid, s, t, x)

    def image(self, points: np.ndarray, contrast: str = "t2") -> np.ndarray:
        tissue, _ = self.tissue(points)
        lut = self.t2 if contrast == "t2" else self.t1
        return lut[tissue].astype(np.float32)

    # --- ground truth --------------------------------------------------------------------------
    def level_point(self, position: str) -> Tuple[np.ndarray, np.ndarray]:
        """World position of a canal position's body/disc centre on the mid-sagittal plane and the column's
        unit direction there (pointing down the neck)."""
        mid = self.anat.mid
        s_p = mid.column.position_s(position)
        f = mid.frame
        u = np.interp(s_p, f.s_mm, f.points_px[:, 0])
        v = np.interp(s_p, f.s_mm, f.points_px[:, 1])
        tu = np.interp(s_p, f.s_mm, f.tangent[:, 0])
        tv = np.interp(s_p, f.s_mm, f.tangent[:, 1])
        point = self.corner + u * self.sp * Y - v * self.sp * Z
        d = tu * Y - tv * Z
        return point, d / np.linalg.norm(d)

    def model_sagittal_points(self, x_mm: float) -> np.ndarray:
        """Pixel centres of the model's sagittal grid (1.25 mm, anterior left, superior up) centred on the FOV
        centre, at lateral offset x_mm (toward the patient's left)."""
        n = IMAGE_SIZE
        i, j = np.mgrid[0:n, 0:n]
        return (self.centre[None, None] + x_mm * X + ((j + 0.5 - n / 2) * MODEL_SAG_MM)[..., None] * Y
                - ((i + 0.5 - n / 2) * MODEL_SAG_MM)[..., None] * Z)

    def model_boxes(self, gap_mm: float) -> PatientBoxes:
        """Challenge-style boxes (tight + 3 px) of C2..C7 on the model grid of slices 5/6/7."""
        out = {}
        for s, x in zip(SAGITTAL_SLICES, (-gap_mm, 0.0, gap_mm)):
            _, level = self.tissue(self.model_sagittal_points(x))
            out[s] = {}
            for k, lv in enumerate(VERTEBRAE, start=1):
                ys, xs = np.nonzero(level == k)
                out[s][lv] = Box(xs.min() - 3.0, ys.min() - 3.0, xs.max() + 1 + 3.0, ys.max() + 1 + 3.0)
        return PatientBoxes(self.labels.patient_id, out)

    def model_axial_points(self, sl: Slice, position: str, shift_mm: Tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        """Pixel centres of the model's axial view of a stored slice (0.7 mm, anterior up, patient left on the
        right), centred 16 mm behind the level's centre projected into the slice, then moved shift_mm along
        the view's (right, down) axes."""
        n_vec = np.cross(sl.row_cos, sl.col_cos)
        n_vec /= np.linalg.norm(n_vec)
        p, _ = self.level_point(position)
        p = p - ((p - sl.ipp) @ n_vec) * n_vec
        right = X - (X @ n_vec) * n_vec
        right /= np.linalg.norm(right)
        down = np.cross(n_vec, right)
        if down @ Y < 0:
            down = -down
        centre = p + (AXIAL_CENTRE_POSTERIOR_MM + shift_mm[1]) * down + shift_mm[0] * right
        n = IMAGE_SIZE
        i, j = np.mgrid[0:n, 0:n]
        return (centre[None, None] + ((j + 0.5 - n / 2) * MODEL_AX_MM)[..., None] * right
                + ((i + 0.5 - n / 2) * MODEL_AX_MM)[..., None] * down)


# ------------------------------------------------------------------------------------------------
# Series
# ------------------------------------------------------------------------------------------------
def sagittal_series(ph: Phantom, n_slices: int = 7, gap_mm: float = 3.5, spacing=(0.9, 1.0), shape=(320, 290),
                    layout: str = "standard", contrast: str = "t2") -> List[Slice]:
    """Parallel sagittal slices centred on the phantom's FOV centre.

    layout "standard": rows run down the neck, columns toward posterior (the model's view);
    "rotated": columns run up the neck and rows toward posterior (the image is the view turned 90 degrees
    and mirrored), which a loader that ignores orientation gets wrong.
    """
    if layout == "standard":
        row_cos, col_cos = Y, -Z
    elif layout == "rotated":
        row_cos, col_cos = Z, Y
    else:
        raise ValueError(layout)
    rows, cols = shape
    out = []
    for k in range(n_slices):
        x = (k - (n_slices - 1) / 2) * gap_mm
        c = ph.centre + x * X
        ipp = c - (cols - 1) / 2 * spacing[1] * row_cos - (rows - 1) / 2 * spacing[0] * col_cos
        tissue, _ = ph.tissue(plane_points(ipp, row_cos, col_cos, spacing, shape))
        lut = ph.t2 if contrast == "t2" else ph.t1
        out.append(Slice(lut[tissue].astype(np.float32), ipp, row_cos, col_cos, spacing, tissue=tissue))
    return out


def _rotate(v: np.ndarray, axis: np.ndarray, deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    axis = axis / np.linalg.norm(axis)
    return v * np.cos(a) + np.cross(axis, v) * np.sin(a) + axis * (axis @ v) * (1 - np.cos(a))


def axial_series(ph: Phantom, tilt_deg: float = 12.0, disc_block_offsets=(-3.0, 3.0), spacing=(0.8, 0.8),
                 shape=(176, 200), layout: str = "standard") -> List[Slice]:
    """One slice aimed at each canal position, perpendicular to the column there and then tilted by
    tilt_deg about the left-right axis (and 3 degrees about the antero-posterior axis): an oblique stack
    angled along the discs. Each disc also gets extra slices at disc_block_offsets along its normal (a
    clinical disc block), which must not steal a neighbouring level.

    layout "standard": image right = patient left, image down = posterior; "flipped": rows and columns
    swapped and the image mirrored (still a valid DICOM geometry).
    """
    out = []
    rows, cols = shape
    for p in CANAL_POSITIONS:
        point, down_neck = ph.level_point(p)
        normal = _rotate(_rotate(-down_neck, X, tilt_deg), Y, 3.0)
        right = X - (X @ normal) * normal
        right /= np.linalg.norm(right)
        post = np.cross(normal, right)
        if post @ Y < 0:
            post = -post
        row_cos, col_cos = (right, post) if layout == "standard" else (post, -right)
        offsets = [0.0] + (list(disc_block_offsets) if p in DISCS else [])
        for off in offsets:
            c = point + off * normal + 14.0 * post
            ipp = c - (cols - 1) / 2 * spacing[1] * row_cos - (rows - 1) / 2 * spacing[0] * col_cos
            pts = plane_points(ipp, row_cos, col_cos, spacing, shape)
            out.append(Slice(ph.image(pts), ipp, row_cos, col_cos, spacing, p if off == 0.0 else None))
    return out


def localiser_series(ph: Phantom) -> List[Slice]:
    """A 3-plane localiser: one sagittal, one coronal, one axial image, coarse."""
    out = []
    shape, sp = (96, 96), (3.0, 3.0)
    for row_cos, col_cos in ((Y, -Z), (X, -Z), (X, Y)):
        ipp = ph.centre - 47.5 * sp[1] * row_cos - 47.5 * sp[0] * col_cos
        out.append(Slice(ph.image(plane_points(ipp, row_cos, col_cos, sp, shape)), ipp, row_cos, col_cos, sp))
    return out


def coronal_series(ph: Phantom, n: int = 3) -> List[Slice]:
    out = []
    shape, sp = (128, 128), (2.0, 2.0)
    for k in range(n):
        c = ph.centre + (k - 1) * 4.0 * Y
        ipp = c - 63.5 * sp[1] * X - 63.5 * sp[0] * (-Z)
        out.append(Slice(ph.image(plane_points(ipp, X, -Z, sp, shape)), ipp, X, -Z, sp))
    return out


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------
@dataclass
class SeriesSpec:
    slices: List[Slice]
    number: int
    description: str
    echo_time: Optional[float] = 100.0
    repetition_time: Optional[float] = 3500.0
    image_type: Tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "NONE")
    transfer_syntax: Optional[str] = None   # None: explicit VR little endian; "rle", "j2k"
    scale: float = 1000.0


@dataclass
class WrittenStudy:
    root: Path
    files: Dict[int, List[Path]] = field(default_factory=dict)     # series number -> files, slice order
    aimed: Dict[Path, Optional[str]] = field(default_factory=dict)  # axial file -> aimed position


def write_slice(path: Path, sl: Slice, spec: SeriesSpec, study_uid: str, k: int, n: int,
                frame_uid: str, markers: Dict[str, str] = MARKERS) -> Path:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, MRImageStorage, RLELossless

    pixels = np.clip(np.rint(sl.pixels * spec.scale), 0, 65535).astype(np.uint16)
    sop = uid(study_uid, spec.number, k)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = uid(study_uid, "series", spec.number)
    ds.FrameOfReferenceUID = frame_uid
    ds.Modality = "MR"
    for key, value in markers.items():
        setattr(ds, key, value)
    ds.SeriesNumber = spec.number
    ds.SeriesDescription = spec.description
    # Instance numbers run against the slice order: sorting by them would reverse the stack.
    ds.InstanceNumber = n - k
    ds.ImageType = list(spec.image_type)
    if spec.echo_time is not None:
        ds.EchoTime = spec.echo_time
    if spec.repetition_time is not None:
        ds.RepetitionTime = spec.repetition_time
    ds.ImagePositionPatient = [round(float(v), 4) for v in sl.ipp]
    ds.ImageOrientationPatient = [round(float(v), 6) for v in np.concatenate([sl.row_cos, sl.col_cos])]
    ds.PixelSpacing = [float(sl.spacing[0]), float(sl.spacing[1])]
    ds.SliceThickness = 3.0
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.PixelData = pixels.tobytes()
    if spec.transfer_syntax == "rle":
        ds.compress(RLELossless, pixels)
    elif spec.transfer_syntax == "j2k":
        ds.compress(JPEG2000Lossless, pixels, encoding_plugin="pylibjpeg")
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_study(root: Path, series: Sequence[SeriesSpec], seed: int = 0, study_key: str = "study",
                markers: Dict[str, str] = MARKERS, nested: bool = True) -> WrittenStudy:
    """Write every series with shuffled random file names, spread over nested folders."""
    rng = np.random.default_rng(seed)
    study_uid = uid(study_key, seed)
    frame_uid = uid(study_key, seed, "frame")
    out = WrittenStudy(root)
    for spec in series:
        files = []
        for k, sl in enumerate(spec.slices):
            name = f"{rng.integers(16 ** 8):08x}"
            sub = Path(f"DICOM/S{rng.integers(1, 4):03d}") if nested else Path()
            path = write_slice(root / sub / name, sl, spec, study_uid, k, len(spec.slices), frame_uid, markers)
            files.append(path)
            out.aimed[path] = sl.aimed_at
        out.files[spec.number] = files
    return out


def standard_series(ph: Phantom, sag_layout: str = "standard", ax_layout: str = "standard",
                    transfer_syntax: Optional[str] = None) -> Tuple[List[SeriesSpec], List[Slice]]:
    """The clinical mix: localiser, T1 sagittal, T2 sagittal, oblique T2 axial, a coronal STIR and a
    derived T2 sagittal reformat (the last two must be passed over)."""
    sag = sagittal_series(ph, layout=sag_layout)
    t1 = [Slice(ph.t1[s.tissue].astype(np.float32), s.ipp, s.row_cos, s.col_cos, s.spacing) for s in sag]
    ax = axial_series(ph, layout=ax_layout)
    specs = [
        SeriesSpec(localiser_series(ph), 1, "localizer", 3.0, 8.0, ("ORIGINAL", "PRIMARY", "LOCALIZER")),
        SeriesSpec(t1, 2, "T1_TSE_SAG", 10.0, 600.0),
        SeriesSpec(sag, 3, "T2_TSE_SAG", 100.0, 3500.0, transfer_syntax=transfer_syntax),
        SeriesSpec(ax, 4, "T2_TSE_TRA_blocks", 95.0, 4000.0),
        SeriesSpec(coronal_series(ph), 5, "COR_STIR ZZMARKSURNAME", 60.0, 4000.0),
        SeriesSpec(sag[:3], 6, "T2_SAG_MPR", 100.0, 3500.0, ("DERIVED", "SECONDARY", "MPR")),
    ]
    return specs, ax


@lru_cache(maxsize=4)
def _cached_case(seed: int, sag_layout: str, ax_layout: str):
    ph = Phantom(seed)
    specs, ax = standard_series(ph, sag_layout, ax_layout)
    return ph, tuple(specs), tuple(ax)


def phantom_case(seed: int = 3, sag_layout: str = "standard", ax_layout: str = "standard",
                 transfer_syntax: Optional[str] = None) -> Tuple[Phantom, List[SeriesSpec], List[Slice]]:
    """A phantom and its standard series, rendered once per session (fresh spec objects every call)."""
    ph, specs, ax = _cached_case(seed, sag_layout, ax_layout)
    specs = [dataclasses.replace(sp, slices=list(sp.slices),
                                 transfer_syntax=transfer_syntax if sp.number == 3 else sp.transfer_syntax)
             for sp in specs]
    return ph, specs, list(ax)


def in_field_of_view(sl: Slice, points: np.ndarray) -> np.ndarray:
    """Which points (..., 3) project into the stored slice's field of view (its pixels' outer edges)."""
    q = np.asarray(points, float) - sl.ipp
    rows, cols = sl.pixels.shape
    j = q @ sl.row_cos / sl.spacing[1]
    i = q @ sl.col_cos / sl.spacing[0]
    return (j >= -0.5) & (j <= cols - 0.5) & (i >= -0.5) & (i <= rows - 0.5)


def write_challenge_layout(folder: Path, ph: Phantom, axials: Sequence[Slice], gap_mm: float = 3.5,
                           axial_shift_mm: Tuple[float, float] = (0.0, 0.0)) -> Path:
    """The same phantom as challenge PNGs: slices 5/6/7 at -gap/0/+gap mm on the model grid, and the model
    view of the slice aimed at each position (moved axial_shift_mm along its right/down axes).

    An axial view shows what its stored slice holds: the model grid (157 mm) is wider than the slice's
    field of view (141 x 160 mm), and the part outside it is black, as in the DICOM path, rather than
    anatomy the scan never acquired; the grey scale comes from the pixels inside."""
    from PIL import Image

    sag = {s: ph.image(ph.model_sagittal_points(x)) for s, x in zip(SAGITTAL_SLICES, (-gap_mm, 0.0, gap_mm))}
    lo = min(float(v.min()) for v in sag.values())
    hi = max(float(np.percentile(np.concatenate([v.ravel() for v in sag.values()]), 99.9)), lo + 1e-6)
    for s, img in sag.items():
        _png(folder / "sag" / f"{s}.png", (img - lo) / (hi - lo), Image)
    for sl in axials:
        if sl.aimed_at is None:
            continue
        points = ph.model_axial_points(sl, sl.aimed_at, axial_shift_mm)
        img = ph.image(points)
        inside = in_field_of_view(sl, points)
        values = img[inside]
        lo_a, hi_a = float(values.min()), max(float(np.percentile(values, 99.9)), float(values.min()) + 1e-6)
        unit = np.where(inside, (img - lo_a) / (hi_a - lo_a), 0.0)
        _png(folder / "tra" / f"{axial_file_stem(sl.aimed_at)}.png", unit, Image)
    return folder


def _png(path: Path, unit: np.ndarray, Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.rint(unit * 255), 0, 255).astype(np.uint8)).save(path)


# ------------------------------------------------------------------------------------------------
# Volumes written as DICOM series (for the real NIfTI scans)
# ------------------------------------------------------------------------------------------------
def volume_slices(data: np.ndarray, affine_ras: np.ndarray, axis: int) -> List[Slice]:
    """A NIfTI volume cut along voxel `axis` as DICOM slices: rows follow the lower remaining voxel axis,
    columns the higher; geometry from the affine flipped from RAS into LPS."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine_ras, float)
    a, b = [k for k in range(3) if k != axis]
    zooms = np.linalg.norm(lps[:3, :3], axis=0)
    out = []
    for i in range(data.shape[axis]):
        idx = np.zeros(4)
        idx[axis] = i
        idx[3] = 1
        ipp = (lps @ idx)[:3]
        pixels = np.take(data, i, axis=axis)
        out.append(Slice(np.asarray(pixels, np.float32), ipp, lps[:3, b] / zooms[b], lps[:3, a] / zooms[a],
                         (float(zooms[a]), float(zooms[b]))))
    return out


def parallel_axial_series(ph: Phantom, gap_mm: float = 4.0, n: int = 25, tilt_deg: float = 5.0,
                          spacing=(1.0, 1.0), shape=(120, 140)) -> List[Slice]:
    """One parallel axial stack, perpendicular to the column at C4 (tilted by tilt_deg), gap_mm apart,
    centred on C4: what a NIfTI axial volume holds."""
    point, down_neck = ph.level_point("C4")
    normal = _rotate(-down_neck, X, tilt_deg)
    right = X - (X @ normal) * normal
    right /= np.linalg.norm(right)
    post = np.cross(normal, right)
    if post @ Y < 0:
        post = -post
    rows, cols = shape
    out = []
    for k in range(n):
        c = point + (k - (n - 1) / 2) * gap_mm * normal + 14.0 * post
        ipp = c - (cols - 1) / 2 * spacing[1] * right - (rows - 1) / 2 * spacing[0] * post
        out.append(Slice(ph.image(plane_points(ipp, right, post, spacing, shape)), ipp, right, post, spacing))
    return out


def slices_to_nifti(slices: Sequence[Slice], path: Path, dtype=np.float32, scale: float = 1000.0) -> Path:
    """Parallel, evenly spaced slices as one NIfTI volume (voxel i = row, j = column, k = slice), RAS affine."""
    import nibabel as nib

    first, last = slices[0], slices[-1]
    rows, cols = first.pixels.shape
    step = (last.ipp - first.ipp) / max(len(slices) - 1, 1)
    lps = np.eye(4)
    lps[:3, 0] = first.col_cos * first.spacing[0]
    lps[:3, 1] = first.row_cos * first.spacing[1]
    lps[:3, 2] = step
    lps[:3, 3] = first.ipp
    data = np.stack([s.pixels for s in slices], -1) * scale
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(dtype), np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps), str(path))
    return path


def write_enhanced(path: Path, spec: SeriesSpec, study_key: str = "enhanced", seed: int = 0,
                   markers: Dict[str, str] = MARKERS) -> Path:
    """All of a series' slices as one Enhanced MR multi-frame file: geometry in the functional groups."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as Seq
    from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian

    study_uid = uid(study_key, seed)
    sop = uid(study_uid, spec.number, "mf")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = EnhancedMRImageStorage, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, uid(study_uid, "series", spec.number)
    ds.FrameOfReferenceUID = uid(study_key, seed, "frame")
    ds.Modality = "MR"
    for key, value in markers.items():
        setattr(ds, key, value)
    ds.SeriesNumber, ds.SeriesDescription = spec.number, spec.description
    ds.ImageType = list(spec.image_type)
    first = spec.slices[0]
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = [float(first.spacing[0]), float(first.spacing[1])]
    pm.SliceThickness = 3.0
    po = Dataset()
    po.ImageOrientationPatient = [round(float(v), 6) for v in np.concatenate([first.row_cos, first.col_cos])]
    echo = Dataset()
    echo.EffectiveEchoTime = spec.echo_time
    timing = Dataset()
    timing.RepetitionTime = spec.repetition_time
    shared.PixelMeasuresSequence = Seq([pm])
    shared.PlaneOrientationSequence = Seq([po])
    shared.MREchoSequence = Seq([echo])
    shared.MRTimingAndRelatedParametersSequence = Seq([timing])
    ds.SharedFunctionalGroupsSequence = Seq([shared])
    frames = []
    # Frames stored in reverse slice order: only the positions say where each lies.
    order = list(range(len(spec.slices)))[::-1]
    for k in order:
        fg = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = [round(float(v), 4) for v in spec.slices[k].ipp]
        fg.PlanePositionSequence = Seq([pp])
        frames.append(fg)
    ds.PerFrameFunctionalGroupsSequence = Seq(frames)
    pixels = np.stack([np.clip(np.rint(spec.slices[k].pixels * spec.scale), 0, 65535).astype(np.uint16)
                       for k in order])
    ds.NumberOfFrames = len(order)
    ds.Rows, ds.Columns = pixels.shape[1:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return path


# ------------------------------------------------------------------------------------------------
# Assertions shared by the study tests
# ------------------------------------------------------------------------------------------------
def assert_private(*texts) -> None:
    """No identifying marker value in any produced string (case-insensitive)."""
    for text in texts:
        for marker in MARKER_STRINGS:
            assert marker.lower() not in str(text).lower(), f"identifying value leaked: {text!r}"


def study_texts(study) -> List[str]:
    """Every string a Study carries that could reach a report or log."""
    return [study.patient_id, *study.warnings, *study.provenance, *study.sources.values(),
            *(a.label for a in study.pending_axial)]


def shift_px(a: np.ndarray, b: np.ndarray) -> float:
    """Translation between two images in pixels: the cross-correlation peak, refined by a parabola per axis.
    (cv2.phaseCorrelate is not used: this OpenCV build reports (0.5, 0.5) for identical images.)"""
    a = a - a.mean()
    b = b - b.mean()
    r = np.real(np.fft.ifft2(np.fft.fft2(a) * np.conj(np.fft.fft2(b))))
    iy, ix = np.unravel_index(int(np.argmax(r)), r.shape)
    out = []
    for axis, i in ((0, iy), (1, ix)):
        n = r.shape[axis]
        at = (lambda k: r[k % n, ix]) if axis == 0 else (lambda k: r[iy, k % n])
        lo, mid, hi = at(i - 1), at(i), at(i + 1)
        frac = 0.5 * (lo - hi) / (lo - 2 * mid + hi) if (lo - 2 * mid + hi) != 0 else 0.0
        d = i + frac
        out.append(d - n if d > n / 2 else d)
    return float(np.hypot(*out))


if __name__ == "__main__":
    # A phantom clinical DICOM study to try `run --sr` on (README): python tests/dicom_factory.py OUT/patient-a
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python tests/dicom_factory.py FOLDER  (writes one phantom DICOM study there)")
    written = write_study(Path(sys.argv[1]), phantom_case()[1])
    print(f"{sum(len(f) for f in written.files.values())} DICOM files written to {sys.argv[1]}")
