"""End-to-end alignment check on phantom patients: CV with box geometry alone vs geometry plus image features."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np

from study.challenge import read_box_file, read_labels
from study.levels import MID_SAGITTAL_SLICE

from .image_features import image_features
from .model import FusionConfig, cross_validate, feature_rows, training_table

PathLike = Union[str, Path]


def load_mid_sagittal(patient_dir: Path) -> np.ndarray:
    """The mid-sagittal PNG of a challenge-layout patient folder as float in [0, 1]."""
    from PIL import Image
    with Image.open(patient_dir / "sag" / f"{MID_SAGITTAL_SLICE}.png") as im:
        return np.asarray(im.convert("L"), dtype=float) / 255.0


def phantom_image_rows(phantom_dir: PathLike, boxes_name: str = "boxes.json") -> Dict[str, Dict[str, float]]:
    """image_features of every patient of a phantom folder (challenge layout + boxes.json)."""
    root = Path(phantom_dir)
    out: Dict[str, Dict[str, float]] = {}
    for p in read_box_file(root / boxes_name).patients:
        folder = root / p.patient_id
        if folder.is_dir():
            out[p.patient_id] = image_features(load_mid_sagittal(folder), p.boxes[MID_SAGITTAL_SLICE])
    return out


def phantom_alignment_check(phantom_dir: PathLike, cfg: Optional[FusionConfig] = None,
                            boxes_name: str = "boxes.json") -> Dict[str, Dict[str, object]]:
    """Repeated CV on a phantom folder, same folds: 'geometry' only, 'image' only and 'geometry+image'."""
    root = Path(phantom_dir)
    cfg = cfg or dataclasses.replace(FusionConfig(), cv_repeats=5)
    labels = {lab.patient_id: lab for lab in read_labels(root / "labels.json")}
    patients = [p for p in read_box_file(root / boxes_name).patients if p.patient_id in labels]
    img = phantom_image_rows(root, boxes_name)
    results: Dict[str, Dict[str, object]] = {}
    for name, extra in (("geometry", None), ("image", img), ("geometry+image", img)):
        ids, rows, _ = feature_rows(patients, extra=extra)
        if name == "image":
            rows = [{k: v for k, v in r.items() if k.startswith("image_")} for r in rows]
        X, yc, ya, names = training_table(ids, rows, labels)
        results[name] = cross_validate(X, yc, ya, names, cfg).summary()
    return results
