"""NIfTI volumes: read a patient's sagittal (and optional axial) T2 volumes as stacks of planes in patient space."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import StudyError
from .geometry import LEFT, SUPERIOR, ImagePlane, orientation_of
from .series import SequenceInfo, SliceRef, Stack, assemble_study
from .study import Study

PathLike = Union[str, Path]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# Segmentations and label maps share folders with the images (SCT, BIDS derivatives); never read as images.
_MASK_NAME = re.compile(r"(?<![a-z])(seg|mask|msk|label|labels|dseg|probseg|roi|lesion)(?![a-z])", re.I)
# Integer volumes with this few distinct values are label maps whatever their name.
MASK_MAX_VALUES = 16
# A volume is a stack of slices when its coarsest voxel side exceeds the finest by this factor; otherwise it
# is a 3-D acquisition that can be cut along any voxel axis.
ANISOTROPY = 1.5
# Voxel planes of a near-isotropic volume serve as axial slices up to this voxel size.
MAX_3D_AXIAL_VOXEL_MM = 1.5
# RAS (NIfTI) to LPS (DICOM): flip x and y.
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def is_nifti(path: PathLike) -> bool:
    name = Path(path).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def nifti_stem(path: PathLike) -> str:
    name = Path(path).name
    return name[:-7] if name.lower().endswith(".nii.gz") else name[:-4] if name.lower().endswith(".nii") else name


def looks_like_mask_name(path: PathLike) -> bool:
    return bool(_MASK_NAME.search(nifti_stem(path).replace("_", " ").replace("-", " ")))


def read_volume(path: PathLike, patient: str, name: str) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """(data float32 (i, j, k), LPS affine 4x4, notes); raises StudyError naming the patient and file.

    A 4-D volume is accepted only when its extra dimensions have size 1; non-finite voxels are set to
    the volume's minimum with a note.
    """
    import nibabel as nib

    def fail(message: str) -> StudyError:
        return StudyError(message, patient=patient, path=name)

    try:
        img = nib.load(str(path))
    except FileNotFoundError:
        raise fail("file not found") from None
    except Exception as e:
        raise fail(f"not a readable NIfTI file ({type(e).__name__}: {e})") from None
    shape = tuple(int(n) for n in img.shape)
    if len(shape) < 3:
        raise fail(f"{len(shape)}-D image {shape}; expected a 3-D volume")
    if len(shape) > 3 and any(n != 1 for n in shape[3:]):
        raise fail(f"{len(shape)}-D volume {shape} (several volumes, e.g. a time series or several echoes); "
                   "expected one 3-D T2 volume: extract the volume to read first")
    if min(shape[:3]) < 1:
        raise fail(f"empty volume {shape}")
    try:
        data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape[:3])
    except Exception as e:
        raise fail(f"voxel data could not be read ({type(e).__name__}: {e})") from None
    affine = np.asarray(img.affine, float)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise fail("the affine (voxel to patient transform) is missing or degenerate; orientation unknown")
    notes = []
    bad = ~np.isfinite(data)
    if bad.all():
        raise fail("every voxel is NaN or infinite")
    if bad.any():
        lo = float(np.min(data[~bad]))
        data[bad] = lo
        notes.append(f"{name}: {int(bad.sum())} NaN/infinite voxel(s) set to the volume minimum ({lo:g})")
    return data, _RAS_TO_LPS @ affine, notes


def _sidecar(path: Path) -> SequenceInfo:
    """Sequence information from the file name and a BIDS JSON sidecar (times in seconds there)."""
    stem = nifti_stem(path)
    te = tr = None
    side = path.with_name(stem + ".json")
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
            te = float(meta["EchoTime"]) * 1000 if "EchoTime" in meta else None
            tr = float(meta["RepetitionTime"]) * 1000 if "RepetitionTime" in meta else None
        except (ValueError, TypeError, OSError, KeyError):
            pass
    return SequenceInfo(stem, te, tr, False, described_by="file name")


def volume_stack(data: np.ndarray, affine_lps: np.ndarray, axis: int, label: str, name: str,
                 sequence: SequenceInfo = SequenceInfo(), isotropic: bool = False) -> Stack:
    """The volume cut along voxel axis `axis`: rows follow the lower remaining axis, columns the higher."""
    a, b = [ax for ax in range(3) if ax != axis]
    m = affine_lps[:3, :3]
    zooms = np.linalg.norm(m, axis=0)
    moved = np.moveaxis(data, axis, 0)
    refs = []
    for i in range(data.shape[axis]):
        idx = np.zeros(3)
        idx[axis] = i
        first = affine_lps[:3, :3] @ idx + affine_lps[:3, 3]
        plane = ImagePlane.make(first, m[:, b], m[:, a], (zooms[a], zooms[b]), (data.shape[a], data.shape[b]))
        refs.append(SliceRef(plane, (lambda i=i: np.asarray(moved[i], np.float32)),
                             f"{name} voxel plane {'ijk'[axis]}={i}"))
    normal = m[:, axis] / zooms[axis]
    orientation = orientation_of(normal)
    axis_dir = np.asarray(LEFT if orientation == "sagittal" else SUPERIOR)
    if orientation not in ("sagittal", "axial"):
        axis_dir = np.eye(3)[int(np.argmax(np.abs(normal)))]
    if normal @ axis_dir < 0:
        refs = refs[::-1]
        normal = -normal
    # Position along the oriented normal from each plane; sorted as DICOM slices are.
    pos = np.array([np.asarray(r.plane.first_pixel_mm) @ normal for r in refs])
    order = np.argsort(pos, kind="stable")
    return Stack(label, orientation, normal, [refs[k] for k in order], pos[order], sequence, "", [], isotropic)


def nifti_stacks(path: PathLike, patient: str, name: str) -> Tuple[List[Stack], List[str]]:
    """The stacks one NIfTI volume offers: its acquisition plane, or for a near-isotropic 3-D volume a
    sagittal and an axial cut. Label maps give none (with a note)."""
    path = Path(path)
    data, aff, notes = read_volume(path, patient, name)
    if np.issubdtype(np.asarray(data).dtype, np.floating):
        sample = data.ravel()[:: max(1, data.size // 200_000)]
        if np.all(sample == np.round(sample)) and len(np.unique(sample)) <= MASK_MAX_VALUES and \
                len(np.unique(data)) <= MASK_MAX_VALUES:
            return [], notes + [f"{name}: holds {len(np.unique(data))} distinct integer values, a label map; ignored"]
    seq = _sidecar(path)
    zooms = np.linalg.norm(aff[:3, :3], axis=0)
    dirs = aff[:3, :3] / zooms
    if zooms.max() > ANISOTROPY * zooms.min():
        return [volume_stack(data, aff, int(np.argmax(zooms)), name, name, seq)], notes
    sag_axis = int(np.argmax(np.abs(dirs[0])))   # voxel axis closest to left-right
    stacks = [volume_stack(data, aff, sag_axis, f"{name} (3-D volume cut sagittally)", name, seq, True)]
    ax_axis = int(np.argmax(np.abs(dirs[2])))    # voxel axis closest to inferior-superior
    if ax_axis != sag_axis and zooms.max() <= MAX_3D_AXIAL_VOXEL_MM:
        stacks.append(volume_stack(data, aff, ax_axis, f"{name} (3-D volume cut axially)", name, seq, True))
    return stacks, notes


def load_nifti_study(files: Sequence[PathLike], patient: str, base: Optional[PathLike] = None,
                     extra_notes: Sequence[str] = ()) -> Study:
    """A patient's NIfTI volumes (a sagittal T2, optionally an axial T2) as a Study with axials pending.

    Label maps (by name or content) are ignored. Axial cuts of a 3-D volume are used only when no
    axial volume is given. Raises StudyError naming the patient and, where one file is at fault, the file.
    """
    base = Path(base) if base is not None else None
    notes: List[str] = list(extra_notes)
    provenance: List[str] = []
    stacks: List[Stack] = []
    errors: List[StudyError] = []
    for f in sorted(Path(p) for p in files):
        name = f.relative_to(base).as_posix() if base is not None and f.is_relative_to(base) else f.name
        if looks_like_mask_name(f):
            provenance.append(f"ignored: {name} (a segmentation or label map, by its name)")
            continue
        try:
            got, vol_notes = nifti_stacks(f, patient, name)
        except StudyError as e:
            errors.append(e)
            notes.append(f"{name}: {e.problem}; ignored")
            continue
        notes.extend(vol_notes)
        stacks.extend(got)
    if not stacks:
        if len(errors) == 1:
            raise errors[0]
        raise StudyError("no usable NIfTI volume" + (f" ({'; '.join(notes)})" if notes else ""), patient=patient,
                         path=str(base) if base else None)
    if any(s.orientation == "axial" and not s.isotropic_3d for s in stacks):
        stacks = [s for s in stacks if not (s.orientation == "axial" and s.isotropic_3d)]
    try:
        return assemble_study(patient, stacks, notes, provenance)
    except StudyError as e:
        if errors and not any(s.orientation == "sagittal" for s in stacks):
            raise errors[0] from None
        raise
