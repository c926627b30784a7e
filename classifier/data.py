"""Training data for the classifier: challenge-layout folders with labels.json and boxes.json, loaded once."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from detector.boxes import LevelBoxes
from study.challenge import BOXES_FILE, LABELS_FILE, PatientLabels, folder_files, read_box_file, read_labels
from study.errors import StudyError
from study.levels import CANAL_POSITIONS, DISCS
from study.loader import find_patients, load_study
from study.study import Study

from .config import ClassifierConfig
from .crops import CanalFinding, LevelCrops, find_canals, make_level_crops

PathLike = Union[str, Path]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PatientRecord:
    """One patient ready to crop: images, level boxes, canal findings (found once) and labels if known."""

    study: Study
    boxes: LevelBoxes
    canal: Dict[str, CanalFinding]
    labels: Optional[PatientLabels]
    source: str  # the folder it came from, so renders of one geometry can be kept on one side of a split

    @property
    def patient_id(self) -> str:
        return self.study.patient_id

    def crops(self, cfg: ClassifierConfig, rng: Optional[np.random.Generator] = None) -> LevelCrops:
        return make_level_crops(self.study, self.boxes, cfg, self.canal, rng)


def build_dataset(root: PathLike, labels_file: Optional[PathLike] = None, boxes_file: Optional[PathLike] = None,
                  limit: Optional[int] = None) -> List[PatientRecord]:
    """Every patient of a challenge-layout folder that has boxes (and, when a label file exists, labels).

    labels_file and boxes_file default to root/labels.json and root/boxes.json (what `synth` writes), else the
    challenge's train.json and bounding_box_train.json (study.challenge.folder_files).
    Patients without boxes are skipped with a warning; without a label file, labels are None.
    """
    root = Path(root)
    own_labels, own_boxes = folder_files(root)
    boxes_file = Path(boxes_file) if boxes_file else own_boxes or root / BOXES_FILE
    labels_file = Path(labels_file) if labels_file else own_labels or root / LABELS_FILE
    contents = read_box_file(boxes_file)
    for e in contents.errors:
        log.warning("skipping a patient with bad boxes: %s", e)
    boxes = contents.by_id()
    labels = {l.patient_id: l for l in read_labels(labels_file)} if labels_file.exists() else {}
    records: List[PatientRecord] = []
    for patient_dir in find_patients(root):
        pid = patient_dir.name
        if pid not in boxes or (labels and pid not in labels):
            log.warning("skipping %s: no %s", pid, "boxes" if pid not in boxes else "labels")
            continue
        try:
            study = load_study(patient_dir, require_all_axial=False)
        except StudyError as e:
            log.warning("skipping %s: %s", pid, e)
            continue
        # A stand-in slice shows its source's image: its boxes are the source's too, as `run --boxes` gives them.
        level_boxes = LevelBoxes.from_patient_boxes(boxes[pid]).standing_in(study.sagittal_standins)
        records.append(PatientRecord(study, level_boxes, find_canals(study), labels.get(pid), str(root)))
        if limit is not None and len(records) >= limit:
            break
    return records


def label_arrays(records: Sequence[PatientRecord]) -> Tuple[np.ndarray, np.ndarray]:
    """(disc grades (N, 5), canal grades (N, 11)) of labelled records."""
    disc = np.array([r.labels.disc_grades for r in records], np.int64).reshape(-1, len(DISCS))
    canal = np.array([r.labels.canal_grades for r in records], np.int64).reshape(-1, len(CANAL_POSITIONS))
    return disc, canal


def batch_tensors(crops: Sequence[LevelCrops]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack patients' crops into the network's inputs: sagittal (B, 11, 3, S, S), axial, has_axial."""
    sag = torch.from_numpy(np.stack([c.sagittal for c in crops]))
    ax = torch.from_numpy(np.stack([c.axial for c in crops]))
    has = torch.from_numpy(np.stack([c.has_axial for c in crops]).astype(np.float32))
    return sag, ax, has
