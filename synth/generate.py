"""Write phantom patients in the challenge layout, with labels.json, boxes.json and phantom.json."""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from common.files import atomic_write, write_json_atomic
from study.challenge import (
    VISIBLE_BOXES_FILE, Box, PatientBoxes, PatientLabels, VisibleBoxes, read_box_file, read_labels, write_box_file,
    write_labels, write_visible_boxes,
)
from study.errors import InputError
from study.levels import CANAL_POSITIONS, SAGITTAL_SLICES, VERTEBRAE, axial_file_stem

from study.splits import variant_id

from .realistic import MIN_VISIBLE, render_realistic
from .render import RenderedPatient, render_patient
from .statistical_model import bend_into_band, sample_patient

GENERATOR_VERSION = "1"
LABELS_FILE, BOXES_FILE, META_FILE = "labels.json", "boxes.json", "phantom.json"


def patient_rng(seed: int, index: int) -> np.random.Generator:
    """Each patient has its own stream, so patient i is the same whatever N or worker order."""
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


@dataclass(frozen=True)
class PhantomSpec:
    """What to render for one patient: its geometry and labels, and where its randomness comes from."""

    index: int
    boxes: PatientBoxes
    labels: PatientLabels
    notes: Tuple[str, ...] = ()
    problem: Optional[str] = None   # why this patient cannot be rendered as asked (it is skipped)


def builtin_specs(n: int, seed: int) -> List[PhantomSpec]:
    """Patients drawn from the built-in statistical model (no ../shared needed)."""
    specs = []
    for i in range(n):
        rng = patient_rng(seed, 1_000_000 + i)
        boxes, labels = sample_patient(rng, f"phantom-s{seed}-{i:04d}")
        specs.append(PhantomSpec(i, boxes, labels))
    return specs


# A real box that differs from the same level on the neighbouring slices by more than this is an
# annotation slip (one real file has a C4 box 43 px tall on slice 7); the phantom borrows the level's
# box from the agreeing slices instead, and phantom.json records the repair.
OUTLIER_PX = 8.0


def repair_outlier_boxes(boxes: PatientBoxes) -> Tuple[PatientBoxes, List[str]]:
    """Replace a level's box on one slice when it disagrees with both other slices, which agree."""
    fixed = {s: dict(boxes.boxes[s]) for s in SAGITTAL_SLICES}
    notes = []
    for lv in VERTEBRAE:
        for s in SAGITTAL_SLICES:
            others = [o for o in SAGITTAL_SLICES if o != s]
            # C2's top legitimately differs between slices (the dens is a midline peg), so it is not compared.
            keep = [0, 2, 3] if lv == "C2" else [0, 1, 2, 3]
            a, b = (np.array(boxes.boxes[o][lv].as_tuple())[keep] for o in others)
            me = np.array(boxes.boxes[s][lv].as_tuple())[keep]
            if np.abs(a - b).max() <= OUTLIER_PX and min(np.abs(me - a).max(), np.abs(me - b).max()) > OUTLIER_PX:
                fixed[s][lv] = Box(*((np.array(boxes.boxes[others[0]][lv].as_tuple())
                                      + np.array(boxes.boxes[others[1]][lv].as_tuple())) / 2))
                notes.append(f"{lv} on slice {s} disagreed with slices {others} by > {OUTLIER_PX:g} px; "
                             f"rendered with their mean box")
    return PatientBoxes(boxes.patient_id, fixed), notes


def real_geometry_specs(boxes_file: Path, labels_file: Path, n: Optional[int],
                        draw_curvature: bool = False) -> List[PhantomSpec]:
    """Patients with the geometry and labels of a challenge box + label file, in box-file order.

    draw_curvature: bend a geometry whose curve lies outside its curvature label's band into it
    (statistical_model.bend_into_band), so that the phantom draws that label by its definition too;
    phantom.json notes every bend. Off, the geometry is kept as read, with the readers' label.
    """
    contents = read_box_file(boxes_file)
    if contents.errors:
        raise InputError(f"{len(contents.errors)} patient(s) with bad boxes, first: {contents.errors[0]}",
                         path=boxes_file)
    labels = {l.patient_id: l for l in read_labels(labels_file)}
    specs = []
    for i, b in enumerate(p for p in contents.patients if p.patient_id in labels):
        repaired, notes = repair_outlier_boxes(b)
        if draw_curvature:
            try:
                repaired, bend = bend_into_band(repaired, labels[b.patient_id].curvature)
                notes += [bend] if bend else []
            except ValueError as e:  # rendered as read, its label would not be drawn: skipped, with the reason
                specs.append(PhantomSpec(i, repaired, labels[b.patient_id], tuple(notes), problem=str(e)))
                continue
        specs.append(PhantomSpec(i, repaired, labels[b.patient_id], tuple(notes)))
    if not specs:
        raise InputError("no patient id appears in both the box file and the label file", path=boxes_file)
    return specs[:n] if n is not None else specs


def render_spec(spec: PhantomSpec, seed: int) -> RenderedPatient:
    return render_patient(spec.boxes, spec.labels, patient_rng(seed, spec.index))


def _save_png(path: Path, image: np.ndarray) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(np.round(image * 255).astype(np.uint8), mode="L")
                 .save(tmp, format="PNG"))


def write_patient(out_dir: Path, rendered: RenderedPatient) -> None:
    """One patient folder in the challenge layout: sag/{5,6,7}.png and tra/{2,2-3,...,7}.png."""
    root = out_dir / rendered.labels.patient_id
    for s in SAGITTAL_SLICES:
        _save_png(root / "sag" / f"{s}.png", rendered.sagittal[s])
    for p in CANAL_POSITIONS:
        _save_png(root / "tra" / f"{axial_file_stem(p)}.png", rendered.axial[p])


def _render_and_write(args: Tuple[PhantomSpec, int, Path]):
    spec, seed, out_dir = args
    if spec.problem:
        return None, None, {"id": spec.labels.patient_id, "skipped": spec.problem}
    try:
        r = render_spec(spec, seed)
        write_patient(out_dir, r)
    except Exception as e:  # one impossible geometry must not cost the batch
        return None, None, {"id": spec.labels.patient_id, "skipped": f"{type(e).__name__}: {e}"}
    meta = {"id": spec.labels.patient_id, "sagittal_spacing_mm": round(r.spacing_mm, 4),
            "axial_spacing_mm": round(r.axial_spacing_mm, 4),
            "listhesis_level": r.anatomy.listhesis_level, "listhesis_mm": round(r.anatomy.listhesis_mm, 3)}
    if spec.notes:
        meta["geometry_repairs"] = list(spec.notes)
    return r.labels, r.boxes, meta


# Realistic renders (synth/realistic.py) of one geometry: ids '{id}~framed{k}', so they stay with their source.
FRAMED_VARIANT = "framed"


def realistic_rng(seed: int, index: int, render: int) -> np.random.Generator:
    """The stream of the render-th realistic render of patient `index`: apart from its challenge render's."""
    return np.random.default_rng(np.random.SeedSequence([seed, index, render, 17]))


def _realistic_and_write(args: Tuple[PhantomSpec, int, int, Path]):
    spec, seed, k, out_dir = args
    pid = variant_id(spec.labels.patient_id, f"{FRAMED_VARIANT}{k}")
    if spec.problem:
        return None, None, {"id": pid, "skipped": spec.problem}
    try:
        labels = replace(spec.labels, patient_id=pid)
        r = render_realistic(spec.boxes, labels, realistic_rng(seed, spec.index, k))
        for s in SAGITTAL_SLICES:
            _save_png(out_dir / pid / "sag" / f"{s}.png", r.sagittal[s])
    except Exception as e:  # one impossible geometry must not cost the batch
        return None, None, {"id": pid, "skipped": f"{type(e).__name__}: {e}"}
    meta = r.meta()
    if spec.notes:
        meta["geometry_repairs"] = list(spec.notes)
    return labels, VisibleBoxes(pid, r.visible_boxes), meta


def _run(jobs, fn, workers: int, progress: bool) -> Tuple[list, list, list, list]:
    results: Iterator
    if workers > 1 and len(jobs) > 1:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(fn, jobs, chunksize=4)
    else:
        pool = None
        results = map(fn, jobs)
    if progress:
        from tqdm import tqdm
        results = tqdm(results, total=len(jobs), desc="phantom", unit="patient")
    labels, boxes, metas, skipped = [], [], [], []
    try:
        for l, b, m in results:
            if l is None:
                skipped.append(m)
                continue
            labels.append(l)
            boxes.append(b)
            metas.append(m)
    finally:
        if pool is not None:
            pool.shutdown()
    return labels, boxes, metas, skipped


def generate(out_dir: Path, specs: Sequence[PhantomSpec], seed: int, mode: str, workers: int = 1,
             progress: bool = False) -> Tuple[List[PatientLabels], List[PatientBoxes], List[dict]]:
    """Render and write every patient, then the batch files.

    Returns the labels and measured boxes of the written patients, and one entry per skipped patient.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    labels, boxes, metas, skipped = _run([(spec, seed, out_dir) for spec in specs], _render_and_write, workers,
                                         progress)
    write_labels(out_dir / LABELS_FILE, labels)
    write_box_file(out_dir / BOXES_FILE, boxes)
    write_json_atomic(out_dir / META_FILE, {
        "generator": "cervical-spine phantom", "version": GENERATOR_VERSION, "seed": seed, "mode": mode,
        "note": "boxes.json holds the boxes measured on the rendered images (tight box + 3 px), "
                "which match the source geometry to about a pixel",
        "patients": metas, "skipped": skipped})
    return labels, boxes, skipped


def generate_realistic(out_dir: Path, specs: Sequence[PhantomSpec], seed: int, mode: str, renders: int = 1,
                       workers: int = 1, progress: bool = False) -> Tuple[List[PatientLabels], List[dict]]:
    """Render every patient `renders` times framed and contrasted as real scans are (synth/realistic.py):
    sag/5,6,7.png only (no axials), visible_boxes.json (the levels each slice shows), labels.json and
    phantom.json (each render's framing and head/thorax shape). Returns the labels written and the skipped."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(spec, seed, k, out_dir) for spec in specs for k in range(renders)]
    labels, boxes, metas, skipped = _run(jobs, _realistic_and_write, workers, progress)
    write_labels(out_dir / LABELS_FILE, labels)
    write_visible_boxes(out_dir / VISIBLE_BOXES_FILE, boxes)
    write_json_atomic(out_dir / META_FILE, {
        "generator": "cervical-spine phantom, realistic framing", "version": GENERATOR_VERSION, "seed": seed,
        "mode": mode, "renders_per_patient": renders,
        "note": "sagittal slices only; visible_boxes.json holds each slice's vertebra boxes measured on the "
                f"render (tight box + 3 px, clipped to the field of view), for levels at least "
                f"{MIN_VISIBLE:.0%} inside it",
        "patients": metas, "skipped": skipped})
    return labels, skipped
