"""Phantoms framed, sliced and contrasted as real sagittal scans are, for training level identification.

The challenge phantom (synth/render.py) puts C2 where the CervAI images do, at one scale, with one T2 look:
a detector trained on it learns where C2 sits in the grid, not what C2 looks like, and on real scans of
another framing it places the levels one or two vertebrae off. These renders vary everything that tells
nothing about the level:
- the framing: 0.6-1.3 px/mm, C2 anywhere from the top edge to the middle of the image, the column anywhere
  across it, and fields of view that end above or below the column or crop it tightly (black padding);
- the slices: 2-D slabs 3-4 mm thick, or single planes of a 1 mm 3-D volume, 2.5-4.5 mm apart;
- the anatomy around the column: the head above the foramen magnum and the thorax below C7 (synth/extended.py);
- the contrast: random per tissue, SynthSeg style (synth/contrast.py).
Levels are labelled where they are visible: a vertebra keeps its box when at least MIN_VISIBLE of it lies in
the field of view (clipped to it), and has none otherwise. Every grade is still drawn by its definition, as
in the challenge phantom (the same anatomy code); no axial images are rendered.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from study.challenge import BOX_PADDING_PX, Box, PatientBoxes, PatientLabels, body_centre
from study.levels import IMAGE_SIZE, MID_SAGITTAL_SLICE, SAGITTAL_SLICES, VERTEBRAE

from .anatomy import PatientAnatomy, build_anatomy
from .contrast import ContrastConfig, acquire, draw_lut, slab_mean, tissue_image
from .extended import ExtendedAnatomy
from .render import _add_cortex
from .tissue import CanalProfile, Tissue, tissue_at

# The rendered canvas reaches this far (px) past every image edge, so that a vertebra cut by the edge is
# measured whole and its visible part known.
MARGIN_PX = 24
# No supersampling: the acquisition step blurs and resamples anyway, and it keeps a render near 2 s.
SUPERSAMPLE = 1
# A vertebra less visible than this (area of its box inside the field of view) is not labelled.
MIN_VISIBLE = 0.6


@dataclass(frozen=True)
class Framing:
    """Where and how the patient is imaged."""

    px_per_mm: float
    source_mm_per_px: float        # the source geometry's pixel size (the patient's size)
    c2_xy: Tuple[float, float]     # where C2's body centre lands on slice 6 (px)
    slab_mm: float                 # 1.0: a plane of a 3-D volume
    slice_gap_mm: float
    fov: Tuple[int, int, int, int]  # x1, y1, x2, y2 of the acquired window (px); outside is padding (0)

    @staticmethod
    def draw(rng: np.random.Generator) -> "Framing":
        px_per_mm = float(rng.uniform(0.6, 1.3))
        c2 = (float(rng.uniform(70, 150)), float(rng.uniform(4, 115)))
        volume = rng.random() < 0.35
        slab = 1.0 if volume else float(rng.uniform(3.0, 4.0))
        gap = float(rng.uniform(2.5, 3.5)) if volume else float(rng.uniform(max(3.0, slab), 4.5))
        n = IMAGE_SIZE
        x1, y1, x2, y2 = 0, 0, n, n
        step = 18.0 * px_per_mm          # about one level, C3-C7
        if rng.random() < 0.12:           # a tight crop on part of the column (as some real exports are)
            h, w = rng.uniform(45, 120) * px_per_mm, rng.uniform(40, 110) * px_per_mm
            cy = c2[1] + rng.uniform(0.0, 4.5) * step
            cx = c2[0] + rng.uniform(-10, 25) * px_per_mm
            x1, x2 = int(max(0, cx - w / 2)), int(min(n, cx + w / 2))
            y1, y2 = int(max(0, cy - h / 2)), int(min(n, cy + h / 2))
        else:
            if rng.random() < 0.3:        # the field of view ends above the column's top
                y1 = int(np.clip(c2[1] - rng.uniform(-0.6, 4.0) * step, 0, n - 40))
            if rng.random() < 0.35:       # ... or ends before the column does
                y2 = int(np.clip(c2[1] + rng.uniform(2.5, 9.0) * step, y1 + 40, n))
            if rng.random() < 0.15:
                x1 = int(np.clip(c2[0] - rng.uniform(30, 90) * px_per_mm, 0, n - 60))
            if rng.random() < 0.15:
                x2 = int(np.clip(c2[0] + rng.uniform(40, 110) * px_per_mm, x1 + 60, n))
        return Framing(px_per_mm, float(rng.uniform(1.15, 1.35)), c2, slab, gap, (x1, y1, x2, y2))

    @property
    def zoom(self) -> float:
        """Output pixels per source pixel."""
        return self.source_mm_per_px * self.px_per_mm


def reframe(boxes: PatientBoxes, framing: Framing) -> PatientBoxes:
    """The source geometry scaled and moved so that C2's body centre lands on framing.c2_xy."""
    anchor = body_centre(boxes.boxes[MID_SAGITTAL_SLICE]["C2"], "C2")
    z = framing.zoom
    tx, ty = framing.c2_xy

    def move(b: Box) -> Box:
        return Box((b.x1 - anchor[0]) * z + tx, (b.y1 - anchor[1]) * z + ty,
                   (b.x2 - anchor[0]) * z + tx, (b.y2 - anchor[1]) * z + ty)
    return PatientBoxes(boxes.patient_id, {s: {lv: move(b) for lv, b in boxes.boxes[s].items()}
                                           for s in SAGITTAL_SLICES})


@dataclass(frozen=True)
class RealisticPatient:
    """The three sagittal images in [0, 1], the visible level boxes per slice and how it was framed."""

    labels: PatientLabels
    sagittal: Dict[int, np.ndarray]
    visible_boxes: Dict[int, Dict[str, Box]]   # slice -> level -> box (challenge convention: tight + 3 px)
    visible_fraction: Dict[int, Dict[str, float]]
    framing: Framing
    anatomy: PatientAnatomy
    sagittal_tissue: Dict[int, np.ndarray]      # the mid plane of each slab, on the image grid

    def meta(self) -> dict:
        return {"id": self.labels.patient_id, "framing": {k: (list(v) if isinstance(v, tuple) else v)
                                                         for k, v in asdict(self.framing).items()},
                "extended": asdict(self.anatomy.extended)}


def _sub_planes(slab_mm: float) -> Tuple[float, ...]:
    """Lateral offsets (mm) of the thin planes a slab averages: 1 for a 3-D volume's plane, 3 for a slab."""
    if slab_mm <= 1.5:
        return (0.0,)
    return (-slab_mm / 3, 0.0, slab_mm / 3)


def _tight(level: np.ndarray, index: int, f: int, offset: float) -> Optional[np.ndarray]:
    ys, xs = np.nonzero(level == index)
    if len(xs) == 0:
        return None
    return np.array([xs.min() / f - offset, ys.min() / f - offset, (xs.max() + 1) / f - offset,
                     (ys.max() + 1) / f - offset])


def render_realistic(boxes: PatientBoxes, labels: PatientLabels, rng: np.random.Generator,
                     contrast: ContrastConfig = ContrastConfig()) -> RealisticPatient:
    """Render one patient framed and contrasted at random (see the module docstring)."""
    framing = Framing.draw(rng)
    ext = ExtendedAnatomy.draw(rng)
    anat = build_anatomy(reframe(boxes, framing).boxes, labels, rng, IMAGE_SIZE, extended=ext,
                         spacing_mm=1.0 / framing.px_per_mm, slice_gap_mm=framing.slice_gap_mm)
    profile = CanalProfile.of(anat)
    lut = draw_lut(rng, contrast)
    f, m = SUPERSAMPLE, MARGIN_PX
    n = (IMAGE_SIZE + 2 * m) * f
    grid = (np.stack(np.meshgrid(np.arange(n), np.arange(n)), -1) + 0.5) / f - m
    x1, y1, x2, y2 = framing.fov
    keep = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
    keep[y1:y2, x1:x2] = True
    images, tissues, visible, fraction = {}, {}, {}, {}
    for k in SAGITTAL_SLICES:
        sl = anat.slices[k]
        s, t = sl.frame.to_local(grid)
        planes, level_mid, tissue_mid = [], None, None
        for dx in _sub_planes(framing.slab_mm):
            tissue, level = tissue_at(anat, profile, sl, s, t, np.full_like(s, sl.x_mm + dx))
            tissue = _add_cortex(tissue, 1)
            hr = tissue_image(tissue, lut, rng, contrast)
            planes.append(hr.reshape(n // f, f, n // f, f).mean((1, 3)))
            if dx == 0.0:
                level_mid, tissue_mid = level, tissue
        full = slab_mean(planes)[m:m + IMAGE_SIZE, m:m + IMAGE_SIZE]
        images[k] = acquire(full, rng, contrast, keep)
        tissues[k] = tissue_mid[m * f:(m + IMAGE_SIZE) * f:f, m * f:(m + IMAGE_SIZE) * f:f]
        visible[k], fraction[k] = {}, {}
        for i, lv in enumerate(VERTEBRAE):
            b = _tight(level_mid, i + 1, f, m)
            if b is None:
                fraction[k][lv] = 0.0
                continue
            clipped = np.array([max(b[0], x1), max(b[1], y1), min(b[2], x2), min(b[3], y2)])
            area = lambda a: max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])  # noqa: E731
            frac = area(clipped) / max(area(b), 1e-6)
            fraction[k][lv] = round(float(frac), 3)
            if frac >= MIN_VISIBLE:
                p = BOX_PADDING_PX
                visible[k][lv] = Box(max(clipped[0] - p, x1), max(clipped[1] - p, y1),
                                     min(clipped[2] + p, x2), min(clipped[3] + p, y2))
    return RealisticPatient(labels, images, visible, fraction, framing, anat, tissues)
