"""Real-scan variants: each labelled scan re-written the way another protocol, scanner or operator could have
given it, its label maps moved with it, so that `evaluation.real_scans --variants` measures the reader on
them exactly as on the scans themselves.

A variant changes the image (noise, a bias field), its voxel grid (storage order, 2-D slabs, a cut field of
view) or its place in patient space (a field of view tilted in its plane). Geometric variants apply to the label
maps too, so every label keeps its voxel; intensity variants leave the label maps as they are. Nothing here
is tuned: each variant's settings are fixed below and say what they stand for.

Each variant of scan S is written as a plain scan folder `S-variant-NAME/` (the image under its own file name,
the label maps beside it), which `run` reads as one patient of that id.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

# Rician noise: sigma as a fraction of the image's 90th intensity percentile (inside the body), as a 1.5 T or
# a fast protocol gives a noisier image than the 3 T scans in ../shared.
NOISE_SIGMA = 0.2
# A receive-coil bias field: intensity x exp(strength x a plane through the volume), strength 0.6 = the
# brightest corner about 3 times the darkest; with light noise (0.05) on top.
BIAS_STRENGTH = 0.6
BIAS_NOISE_SIGMA = 0.05
# 2-D sagittal T2 TSE: slabs this thick, this far apart, across the left-right axis.
SLAB_MM, SLAB_GAP_MM = 3.0, 3.5
# A field of view tilted in its plane (about the left-right axis), as an operator follows a leaning spine.
TILT_DEG = 15.0
# A sagittal 3-D slab planned off the midline: this much of the left-right extent is cut from one side.
OFF_CENTRE_MM = 12.0
# Fields of view cut short: the part of the superior-inferior extent kept (from the top), or cut (at the top).
KEEP_TOP_FRACTION = 0.45
CUT_TOP_FRACTION = 0.12


@dataclass(frozen=True)
class Volume:
    """A NIfTI image's data and RAS affine (as stored)."""

    data: np.ndarray
    affine: np.ndarray


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    # (volume, is_label, rng) -> volume: geometric variants move labels too; intensity variants return them as is.
    apply: Callable[[Volume, bool, np.random.Generator], Volume]


def _axis_nearest(affine: np.ndarray, world_axis: int) -> int:
    """The voxel axis whose direction lies nearest a world (RAS) axis: 0 = left-right, 2 = inferior-superior."""
    dirs = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return int(np.argmax(np.abs(dirs[world_axis])))


def _take(v: Volume, axis: int, start: int, stop: int) -> Volume:
    """The voxels start..stop-1 along axis, the affine moved so that every kept voxel stays where it was."""
    index = [slice(None)] * 3
    index[axis] = slice(start, stop)
    shift = np.zeros(3)
    shift[axis] = start
    aff = v.affine.copy()
    aff[:3, 3] = v.affine[:3, :3] @ shift + v.affine[:3, 3]
    return Volume(v.data[tuple(index)], aff)


def _rician(data: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    body = data[data > 0]
    s = sigma * float(np.percentile(body, 90)) if body.size else 0.0
    return np.sqrt((data + rng.normal(0, s, data.shape)) ** 2 + rng.normal(0, s, data.shape) ** 2).astype(np.float32)


def _noise(v: Volume, is_label: bool, rng: np.random.Generator) -> Volume:
    return v if is_label else Volume(_rician(v.data.astype(np.float32), NOISE_SIGMA, rng), v.affine)


def _bias(v: Volume, is_label: bool, rng: np.random.Generator) -> Volume:
    if is_label:
        return v
    def ramp(axis: int) -> np.ndarray:   # -1 .. 1 along one voxel axis, broadcast over the others
        shape = [1, 1, 1]
        shape[axis] = v.data.shape[axis]
        return np.linspace(-1, 1, v.data.shape[axis]).reshape(shape)

    field = np.exp(BIAS_STRENGTH * (0.7 * ramp(_axis_nearest(v.affine, 2)) + 0.5 * ramp(_axis_nearest(v.affine, 1))))
    return Volume(_rician(v.data.astype(np.float32) * field.astype(np.float32), BIAS_NOISE_SIGMA, rng), v.affine)


def _reoriented(v: Volume, is_label: bool, rng: np.random.Generator) -> Volume:
    """Stored in RAS voxel order (nibabel's closest canonical), as many converters write it."""
    import nibabel as nib
    img = nib.as_closest_canonical(nib.Nifti1Image(v.data, v.affine))
    return Volume(np.asarray(img.dataobj), np.asarray(img.affine, float))


def _slabs(v: Volume, is_label: bool, rng: np.random.Generator) -> Volume:
    """Slabs SLAB_MM thick every SLAB_GAP_MM across the left-right axis, centred on the volume's middle: images
    average the voxels of a slab, label maps keep each labelled voxel in the slab nearest it."""
    lr = _axis_nearest(v.affine, 0)
    step = float(np.linalg.norm(v.affine[:3, lr]))
    n = v.data.shape[lr]
    centre = (n - 1) / 2
    half = int((centre * step) // SLAB_GAP_MM)
    centres = centre + np.arange(-half, half + 1) * SLAB_GAP_MM / step
    moved = np.moveaxis(v.data, lr, 0)
    if is_label:
        out = np.zeros((len(centres),) + moved.shape[1:], moved.dtype)
        for i in range(n):
            k = int(np.argmin(np.abs(centres - i)))
            if abs(centres[k] - i) * step <= SLAB_GAP_MM / 2:
                out[k] = np.maximum(out[k], moved[i])
    else:
        width = max(1, int(round(SLAB_MM / step)))
        out = np.stack([moved[max(0, int(round(c - (width - 1) / 2))):int(round(c - (width - 1) / 2)) + width]
                        .astype(np.float32).mean(0) for c in centres])
    aff = v.affine.copy()
    aff[:3, lr] = v.affine[:3, lr] * SLAB_GAP_MM / step
    first = np.zeros(3)
    first[lr] = centres[0]
    aff[:3, 3] = v.affine[:3, :3] @ first + v.affine[:3, 3]
    return Volume(np.moveaxis(out, 0, lr), aff)


def _tilted(v: Volume, is_label: bool, rng: np.random.Generator) -> Volume:
    t = np.deg2rad(TILT_DEG)
    turn = np.eye(4)
    turn[1:3, 1:3] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]   # about the left-right axis (RAS x)
    return Volume(v.data, turn @ v.affine)


def _off_centre(v: Volume, is_label: bool, rng: np.random.Generator) -> Volume:
    lr = _axis_nearest(v.affine, 0)
    cut = int(round(OFF_CENTRE_MM / float(np.linalg.norm(v.affine[:3, lr]))))
    return _take(v, lr, cut, v.data.shape[lr])


def _si_range(v: Volume, top_fraction_cut: float, keep_fraction: float) -> Tuple[int, int, int]:
    """(axis, start, stop) keeping keep_fraction of the superior-inferior extent below a top_fraction_cut cut."""
    si = _axis_nearest(v.affine, 2)
    n = v.data.shape[si]
    up = v.affine[2, si] > 0                       # voxel index grows superior
    drop_top = int(round(top_fraction_cut * n))
    keep = int(round(keep_fraction * n))
    return (si, n - drop_top - keep, n - drop_top) if up else (si, drop_top, drop_top + keep)


def _short(v: Volume, is_label: bool, rng: np.random.Generator) -> Volume:
    si, a, b = _si_range(v, 0.0, KEEP_TOP_FRACTION)
    return _take(v, si, a, b)


def _cut_top(v: Volume, is_label: bool, rng: np.random.Generator) -> Volume:
    si, a, b = _si_range(v, CUT_TOP_FRACTION, 1.0 - CUT_TOP_FRACTION)
    return _take(v, si, a, b)


VARIANTS: Dict[str, Variant] = {v.name: v for v in (
    Variant("ras", "stored in RAS voxel order instead of the scan's own", _reoriented),
    Variant("noise", f"Rician noise, sigma {NOISE_SIGMA:g} x the 90th intensity percentile", _noise),
    Variant("bias", f"bias field (strength {BIAS_STRENGTH:g}, about 3x from corner to corner) and noise "
                    f"{BIAS_NOISE_SIGMA:g}", _bias),
    Variant("slabs", f"2-D sagittal stack: {SLAB_MM:g} mm slabs every {SLAB_GAP_MM:g} mm", _slabs),
    Variant("tilt", f"field of view tilted {TILT_DEG:g} degrees in its plane", _tilted),
    Variant("offcentre", f"{OFF_CENTRE_MM:g} mm cut from one side: the stack's middle "
                         f"{OFF_CENTRE_MM / 2:g} mm off the scan's", _off_centre),
    Variant("short", f"field of view cut below: the top {KEEP_TOP_FRACTION:.0%} of its height kept", _short),
    Variant("cuttop", f"field of view cut above: the top {CUT_TOP_FRACTION:.0%} of its height removed", _cut_top),
)}


MARK = "-variant-"


def variant_of(scan_id: str) -> str:
    """The variant a scan id names (`S-variant-NAME`), or "original"."""
    return scan_id.split(MARK, 1)[1] if MARK in scan_id else "original"


def write_variants(scans: Sequence, root: Path, names: Sequence[str], seed: int = 0) -> List:
    """Write each variant of each scan (real_scans.Scan) under root as `{scan_id}-variant-{name}/`; returns the
    variants as Scans. The random generator is seeded by the scan's id and the variant's name, so a rerun writes
    the same files whatever else it writes."""
    from dataclasses import replace

    import nibabel as nib

    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    root = Path(root)
    folders = []
    for scan in scans:
        files = [(scan.image, False)] + [(p, True) for p in scan.label_paths]
        loaded = []
        for path, is_label in files:
            img = nib.load(str(path))
            data = np.asarray(img.dataobj)
            data = data.reshape(data.shape[:3])
            loaded.append((path, is_label, Volume(data, np.asarray(img.affine, float))))
        for name in names:
            folder = root / f"{scan.scan_id}{MARK}{name}"
            folder.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng([seed, zlib.crc32(scan.scan_id.encode()), list(VARIANTS).index(name)])
            for path, is_label, vol in loaded:
                out = VARIANTS[name].apply(vol, is_label, rng)
                data = out.data if not is_label else out.data.astype(vol.data.dtype)
                nib.save(nib.Nifti1Image(data, out.affine), str(folder / path.name))
            folders.append(replace(scan, scan_id=folder.name, image=folder / scan.image.name,
                                   label_paths=tuple(folder / p.name for p in scan.label_paths), sidecar=None))
    return folders
