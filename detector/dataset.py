"""Export a challenge-layout folder and its box file into an ultralytics dataset (images/, labels/, data.yaml)."""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import AbstractSet, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np
import yaml
from PIL import Image

from study.challenge import VISIBLE_BOXES_FILE, Box, PatientBoxes, VisibleBoxes, read_box_file, read_visible_boxes
from study.errors import InputError
from study.loader import present_slices, read_image
from study.levels import DISCS, IMAGE_SIZE, VERTEBRAE, disc_neighbours
from study.splits import split_key, split_patients

from .boxes import disc_box_between
from .config import DetectorConfig, class_names
from .predict import normalise_slice

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
T = TypeVar("T")
SPLIT_FILE = "split.json"


@dataclass(frozen=True)
class DatasetInfo:
    """What build_dataset wrote: the data.yaml path and which patients went where."""

    data_yaml: Path
    train_ids: Tuple[str, ...]
    val_ids: Tuple[str, ...]
    class_design: str
    n_images: int
    extra_train_ids: Tuple[str, ...] = ()   # from extra_dirs (see build_dataset)
    extra_val_ids: Tuple[str, ...] = ()


def slice_boxes(patient: Union[PatientBoxes, VisibleBoxes], slice_number: int, design: str) -> List[Tuple[int, Box]]:
    """(class index, box) for every vertebra the slice shows and every disc between two of them (discs by
    detector.boxes.disc_box_between). A challenge box file shows all six; a visible-box file may not."""
    vert = patient.boxes[slice_number]
    shown = [lv for lv in VERTEBRAE if lv in vert]
    discs = {d: disc_box_between(vert[a], vert[b]) for d in DISCS for a, b in [disc_neighbours(d)]
             if a in vert and b in vert}
    if design == "levels":
        out = [(VERTEBRAE.index(lv), vert[lv]) for lv in shown]
        out += [(len(VERTEBRAE) + DISCS.index(d), discs[d]) for d in DISCS if d in discs]
    else:
        out = [(0, vert[lv]) for lv in shown] + [(1, discs[d]) for d in DISCS if d in discs]
    return out


def read_extra_folder(folder: Path) -> Dict[str, VisibleBoxes]:
    """The patients of a folder of renders that may not show every level: its visible_boxes.json, else its
    challenge boxes.json (a patient with no sagittal image is skipped with a warning). Raises InputError when
    neither file is there."""
    if (folder / VISIBLE_BOXES_FILE).is_file():
        patients = {p.patient_id: p for p in read_visible_boxes(folder / VISIBLE_BOXES_FILE)}
    elif (folder / "boxes.json").is_file():
        contents = read_box_file(folder / "boxes.json")
        if contents.errors:
            raise InputError(f"{len(contents.errors)} patient(s) with bad boxes, first: {contents.errors[0]}",
                             path=folder / "boxes.json")
        patients = {p.patient_id: VisibleBoxes.of(p) for p in contents.patients}
    else:
        raise InputError(f"neither {VISIBLE_BOXES_FILE} nor boxes.json found", path=folder)
    return with_sagittal_images(patients, folder)


def with_sagittal_images(patients: Dict[str, T], folder: Path) -> Dict[str, T]:
    """The patients with at least one sagittal image under folder; the others have nothing to learn from and
    are skipped with a warning naming them (as the classifier skips them), never the whole folder."""
    missing = [pid for pid in patients if not present_slices(folder / pid)]
    if missing:
        log.warning("%s: skipping %d patient(s) with none of sag/5,6,7.png: %s", folder, len(missing), missing[:5])
    return {pid: p for pid, p in patients.items() if pid not in missing}


def yolo_label_lines(items: Sequence[Tuple[int, Box]], image_size: int = IMAGE_SIZE) -> List[str]:
    """YOLO txt lines 'cls cx cy w h', normalised, boxes clipped to the image (disc boxes can poke out)."""
    lines = []
    for cls, b in items:
        x1, y1 = max(0.0, b.x1), max(0.0, b.y1)
        x2, y2 = min(float(image_size), b.x2), min(float(image_size), b.y2)
        if x2 - x1 < 1 or y2 - y1 < 1:
            continue
        cx, cy = (x1 + x2) / 2 / image_size, (y1 + y2) / 2 / image_size
        w, h = (x2 - x1) / image_size, (y2 - y1) / image_size
        lines.append(f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return lines


def image_name(patient_id: str, slice_number: int) -> str:
    return f"{patient_id}_s{slice_number}"


def build_dataset(layout_dir: PathLike, boxes_file: PathLike, out_dir: PathLike, val_fraction: float = 0.1,
                  seed: int = 0, class_design: str = "levels",
                  val_ids: Sequence[str] = (), exclude: AbstractSet[str] = frozenset(),
                  extra_dirs: Sequence[PathLike] = (), config: Optional[DetectorConfig] = None) -> DatasetInfo:
    """Write out_dir/{images,labels}/{train,val}/, data.yaml and split.json from a challenge-layout folder.

    All sagittal slices of a patient go to the same split; a slice the patient lacks is left out (its boxes
    too). Patients in the box file without any sagittal image are an error listing them (a silent partial
    dataset would skew the split).
    `val_ids`, when given, fixes the validation patients instead of drawing them. Patients whose geometry
    is in `exclude` (the evaluation hold-out of study.splits) are left out of both sides.

    extra_dirs: more folders of renders (e.g. the realistic phantoms, with visible_boxes.json). A render of a
    geometry of the main folder ('{id}~framed0') goes to its geometry's side of the split; other geometries
    are split apart with the same fraction and seed, every render of one geometry on one side.
    config: the detector configuration whose input normalisation the exported images get (default: DetectorConfig()).
    """
    config = config or DetectorConfig(class_design=class_design)
    layout_dir, out_dir = Path(layout_dir), Path(out_dir)
    names = class_names(class_design)
    contents = read_box_file(boxes_file)
    if contents.errors:
        raise InputError(f"{len(contents.errors)} patient(s) with bad boxes, first: {contents.errors[0]}",
                         path=boxes_file)
    patients: Dict[str, PatientBoxes] = {p.patient_id: p for p in contents.patients
                                         if split_key(p.patient_id) not in exclude}
    patients = with_sagittal_images(patients, layout_dir)
    if val_ids:
        unknown = sorted(set(val_ids) - set(patients))
        if unknown:
            raise ValueError(f"val_ids not in the box file: {unknown[:5]}")
        val = sorted(set(val_ids))
        train = sorted(set(patients) - set(val))
    else:
        train, val = split_patients(list(patients), val_fraction, seed)
    # Every patient: (its folder, its boxes); the main folder's first, then the extra folders'.
    sources: Dict[str, Tuple[Path, Union[PatientBoxes, VisibleBoxes]]] = {
        pid: (layout_dir, p) for pid, p in patients.items()}
    extra_train: List[str] = []
    extra_val: List[str] = []
    if extra_dirs:
        main_val, main_train = {split_key(p) for p in val}, {split_key(p) for p in train}
        extra: Dict[str, Tuple[Path, VisibleBoxes]] = {}
        for folder in map(Path, extra_dirs):
            for pid, p in read_extra_folder(folder).items():
                if split_key(pid) in exclude:
                    continue
                if pid in sources or pid in extra:
                    raise InputError(f"patient id {pid!r} appears in two training folders", path=folder)
                extra[pid] = (folder, p)
        new_keys = sorted({split_key(p) for p in extra} - main_val - main_train)
        _, new_val = split_patients(new_keys, val_fraction, seed) if new_keys else ([], [])
        val_keys = main_val | set(new_val)
        for pid in sorted(extra):
            (extra_val if split_key(pid) in val_keys else extra_train).append(pid)
        sources.update(extra)
    if out_dir.exists():
        shutil.rmtree(out_dir)  # a stale image from an earlier export would leak into training
    n_images = 0
    for split, ids in (("train", train + extra_train), ("val", val + extra_val)):
        (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        (out_dir / "labels" / split).mkdir(parents=True, exist_ok=True)
        for pid in ids:
            folder, boxes = sources[pid]
            for s in present_slices(folder / pid):   # a slice the patient lacks is skipped, never the patient
                stem = image_name(pid, s)
                export_image(folder / pid / "sag" / f"{s}.png", out_dir / "images" / split / f"{stem}.png", config)
                lines = yolo_label_lines(slice_boxes(boxes, s, class_design))
                (out_dir / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + "\n")
                n_images += 1
    data = {"path": str(out_dir.resolve()), "train": "images/train", "val": "images/val" if val else "images/train",
            "nc": len(names), "names": {i: n for i, n in enumerate(names)}, "channels": 3}
    (out_dir / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (out_dir / SPLIT_FILE).write_text(json.dumps({"seed": seed, "val_fraction": val_fraction,
                                                  "class_design": class_design, "train": train, "val": val,
                                                  "extra_dirs": [str(d) for d in extra_dirs],
                                                  "extra_train": extra_train, "extra_val": extra_val,
                                                  "excluded": len({split_key(p.patient_id) for p in contents.patients}
                                                                  & set(exclude))},
                                                 indent=1) + "\n")
    return DatasetInfo(out_dir / "data.yaml", tuple(train), tuple(val), class_design, n_images,
                       tuple(extra_train), tuple(extra_val))


def export_image(src: Path, dst: Path, config: DetectorConfig) -> None:
    """The slice as the detector sees it at inference: read by the study loader (any bit depth, colour or size
    becomes grey on the 224 grid) and intensity-normalised by detector.predict.normalise_slice, as 8-bit PNG.
    Training on the raw file would teach one intensity scale and feed the network another."""
    image, _ = read_image(src)
    Image.fromarray(np.round(normalise_slice(image, config) * 255).astype(np.uint8), mode="L").save(dst)
