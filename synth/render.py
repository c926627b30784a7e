"""Rasterise a phantom patient: T2-like sagittal slices 5/6/7 and the 11 axial cuts, with tight boxes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Tuple

import numpy as np
from scipy.ndimage import binary_erosion, gaussian_filter

from study.challenge import Box, PatientBoxes, PatientLabels
from study.levels import CANAL_POSITIONS, IMAGE_SIZE, MID_SAGITTAL_SLICE, SAGITTAL_SLICES, VERTEBRAE

from .anatomy import BOX_PADDING_PX, PatientAnatomy, build_anatomy
from .tissue import CanalProfile, Tissue, tissue_at

# Sagittal slices are rendered at 2x and averaged (partial volume at the thin canal); the axial grid
# is finer in mm, so 1x is enough there.
SUPERSAMPLE = 2
AXIAL_SUPERSAMPLE = 1
# T2 fast-spin-echo intensities (fraction of CSF) and their per-patient spread.
T2_INTENSITY = {
    Tissue.AIR: (0.02, 0.01), Tissue.FAT: (0.72, 0.08), Tissue.MUSCLE: (0.2, 0.04),
    Tissue.MARROW: (0.42, 0.07), Tissue.CORTEX: (0.08, 0.03), Tissue.ANNULUS: (0.3, 0.04),
    Tissue.NUCLEUS: (0.7, 0.08), Tissue.NUCLEUS_DRY: (0.32, 0.05), Tissue.HERNIATION: (0.24, 0.05),
    Tissue.CSF: (0.95, 0.04), Tissue.CORD: (0.5, 0.05), Tissue.CORD_LESION: (0.9, 0.05),
    Tissue.LIGAMENT: (0.08, 0.03), Tissue.BRAIN: (0.46, 0.05), Tissue.VESSEL: (0.05, 0.03),
    Tissue.EPIDURAL_FAT: (0.62, 0.08), Tissue.POSTERIOR_BONE: (0.36, 0.07),
}
# Tissues whose signal has a visible texture (marrow, muscle, fat, brain).
TEXTURED = (Tissue.MUSCLE, Tissue.MARROW, Tissue.FAT, Tissue.BRAIN, Tissue.POSTERIOR_BONE)


@dataclass(frozen=True)
class RenderedPatient:
    """Images in [0, 1], the tight boxes measured from the render, and the tissue maps (for tests/QA)."""

    labels: PatientLabels
    boxes: PatientBoxes
    sagittal: Dict[int, np.ndarray]
    axial: Dict[str, np.ndarray]
    sagittal_tissue: Dict[int, np.ndarray]
    axial_tissue: Dict[str, np.ndarray]
    spacing_mm: float
    axial_spacing_mm: float
    anatomy: PatientAnatomy


def _appearance(rng: np.random.Generator) -> np.ndarray:
    lut = np.zeros(len(Tissue), np.float32)
    for tissue, (mean, sd) in T2_INTENSITY.items():
        lut[tissue] = np.clip(rng.normal(mean, sd), 0.0, 1.0)
    # Keep the orderings that define the signs: CSF brightest in the canal, cord darker than CSF,
    # the lesion near CSF, a desiccated nucleus darker than a hydrated one.
    lut[Tissue.CSF] = max(lut[Tissue.CSF], 0.85)
    lut[Tissue.CORD] = min(lut[Tissue.CORD], lut[Tissue.CSF] - 0.3)
    lut[Tissue.CORD_LESION] = max(lut[Tissue.CORD_LESION], lut[Tissue.CORD] + 0.3)
    lut[Tissue.NUCLEUS_DRY] = min(lut[Tissue.NUCLEUS_DRY], lut[Tissue.NUCLEUS] - 0.2)
    return lut


def _finish(tissue_hr: np.ndarray, lut: np.ndarray, rng: np.random.Generator, factor: int) -> np.ndarray:
    """Supersampled tissue map -> noisy T2-like image in [0, 1] on the output grid."""
    img = lut[tissue_hr]
    texture = gaussian_filter(rng.standard_normal(tissue_hr.shape), rng.uniform(1.5, 3.0))
    texture *= rng.uniform(0.05, 0.12) / (texture.std() + 1e-6)
    textured = np.isin(tissue_hr, TEXTURED)
    img = img * (1 + np.where(textured, texture, 0))
    img = img.reshape(IMAGE_SIZE, factor, IMAGE_SIZE, factor).mean((1, 3))
    img = gaussian_filter(img, rng.uniform(0.3, 0.9))
    yy, xx = np.mgrid[-1:1:IMAGE_SIZE * 1j, -1:1:IMAGE_SIZE * 1j]
    c = rng.normal(0, 0.18, 5)
    bias = np.exp(c[0] * xx + c[1] * yy + c[2] * xx * yy + c[3] * xx ** 2 + c[4] * yy ** 2)
    img = img * bias
    sigma = rng.uniform(0.012, 0.045)
    img = np.sqrt((img + rng.normal(0, sigma, img.shape)) ** 2 + rng.normal(0, sigma, img.shape) ** 2)
    img = img ** rng.uniform(0.8, 1.2)
    img = img / max(np.percentile(img, 99.7), 1e-3) * rng.uniform(0.85, 1.0)
    return np.clip(img, 0, 1).astype(np.float32)


def _add_cortex(tissue: np.ndarray, rim_px: int) -> np.ndarray:
    """Bone gets a dark cortical rim, found on the grid so that every bone shape gets one."""
    bone = (tissue == Tissue.MARROW) | (tissue == Tissue.POSTERIOR_BONE)
    rim = bone & ~binary_erosion(bone, iterations=rim_px, border_value=1)
    out = tissue.copy()
    out[rim] = Tissue.CORTEX
    return out


def _tight_box(level_hr: np.ndarray, index: int) -> Box:
    ys, xs = np.nonzero(level_hr == index)
    if len(xs) == 0:
        raise RuntimeError(f"vertebra {VERTEBRAE[index - 1]} fell outside the image")
    f = float(SUPERSAMPLE)
    return Box(xs.min() / f - BOX_PADDING_PX, ys.min() / f - BOX_PADDING_PX,
               (xs.max() + 1) / f + BOX_PADDING_PX, (ys.max() + 1) / f + BOX_PADDING_PX)


def render_patient(boxes: PatientBoxes, labels: PatientLabels, rng: np.random.Generator) -> RenderedPatient:
    """Render one patient whose vertebrae fill `boxes` and whose images show `labels`."""
    anat = build_anatomy(boxes.boxes, labels, rng, IMAGE_SIZE)
    profile = CanalProfile.of(anat)
    lut = _appearance(rng)
    n = IMAGE_SIZE * SUPERSAMPLE
    grid = (np.stack(np.meshgrid(np.arange(n), np.arange(n)), -1) + 0.5) / SUPERSAMPLE
    sagittal, sag_tissue, tight = {}, {}, {}
    for k in SAGITTAL_SLICES:
        sl = anat.slices[k]
        s, t = sl.frame.to_local(grid)
        x = np.full_like(s, sl.x_mm)
        tissue, level = tissue_at(anat, profile, sl, s, t, x)
        tissue = _add_cortex(tissue, 1)
        sagittal[k] = _finish(tissue, lut, rng, SUPERSAMPLE)
        sag_tissue[k] = tissue[::SUPERSAMPLE, ::SUPERSAMPLE]
        tight[k] = {lv: _tight_box(level, i + 1) for i, lv in enumerate(VERTEBRAE)}

    # Axial cuts perpendicular to the column of the mid slice, through each position.
    mid = anat.mid
    sa = rng.uniform(0.6, 0.8)
    axial, ax_tissue = {}, {}
    prm = anat.params
    neck_centre = (-(prm["anterior_neck_mm"] + 8) + 8 + 10 + prm["posterior_neck_mm"]) / 2
    f = AXIAL_SUPERSAMPLE
    na = IMAGE_SIZE * f
    uu, vv = np.meshgrid(np.arange(na) + 0.5, np.arange(na) + 0.5)
    for p in CANAL_POSITIONS:
        s_p = mid.column.position_s(p)
        angle = np.deg2rad(rng.uniform(-8, 8))
        oblique = np.tan(np.deg2rad(rng.uniform(-6, 6)))
        u0 = na / 2 + rng.uniform(-10, 10) * f
        v0 = na / 2 - neck_centre / sa * f + rng.uniform(-10, 10) * f
        du, dv = (uu - u0) * sa / f, (vv - v0) * sa / f
        x = np.cos(angle) * du - np.sin(angle) * dv
        t = np.sin(angle) * du + np.cos(angle) * dv
        s = s_p + oblique * t
        tissue, _ = tissue_at(anat, profile, mid, s, t, x)
        tissue = _add_cortex(tissue, 1)
        axial[p] = _finish(tissue, lut, rng, f)
        ax_tissue[p] = tissue[::f, ::f]
    return RenderedPatient(labels, PatientBoxes(boxes.patient_id, tight), sagittal, axial, sag_tissue, ax_tissue,
                           anat.spacing_mm, sa, anat)
