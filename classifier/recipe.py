"""A whole classifier training run as a library call: data, training, scores on held-out geometries, model card."""
from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, FrozenSet, List, Mapping, Optional, Sequence, Set, Tuple

from common.config import load_config
from common.files import write_json_atomic
from study.errors import InputError
from study.splits import split_key

from .config import ClassifierConfig
from .data import PatientRecord, build_dataset
from .predict import CONFIG_FILE, Classifier
from .report import GradeReport, grade_report


def describe_folder(folder: Path) -> str:
    """How a report names a data folder: the phantom's own description (phantom.json) when it has one."""
    try:
        meta = json.loads((Path(folder) / "phantom.json").read_text(encoding="utf-8"))
        return f"phantom ({meta['mode']}), seed {meta['seed']}"
    except (OSError, ValueError, KeyError, TypeError):
        return Path(folder).name


def evaluate_records(classifier: Classifier, records: Sequence[PatientRecord], data: str) -> GradeReport:
    grades = classifier.grade_crops([r.crops(classifier.cfg) for r in records])
    return grade_report(data, grades, [r.labels for r in records])


def fraction_holdout(records: Sequence[PatientRecord], fraction: float, seed: int) -> Tuple[Set[str], Set[str]]:
    """Patient ids kept for training and held out for testing (stratified like the validation split)."""
    from .train import split_patients
    if fraction <= 0:
        return {split_key(r.patient_id) for r in records}, set()
    keep, held = split_patients(records, fraction, seed + 1000)
    return set(keep), set(held)


@dataclass(frozen=True)
class ClassifierRun:
    """Everything one classifier training needs, named (its command line and `pipeline.py train` build it).

    holdout: a fraction of the geometries drawn here and held out; exclude: geometry ids held out by the
    caller (the evaluation hold-out of study.splits), scored as "evaluation hold-out".
    data_files: folder -> (labels file, boxes file) where they are not the folder's labels.json/boxes.json.
    val_dirs: labelled folders never trained on that join the validation set (early stopping and priors);
    they may share no geometry with the training data or with `exclude`.
    overrides: ClassifierConfig settings (unknown keys and wrong types are refused).
    """

    data_dirs: Tuple[Path, ...]
    out_dir: Path
    data_name: Optional[str] = None
    holdout: float = 0.0
    exclude: FrozenSet[str] = frozenset()
    test_dirs: Tuple[Path, ...] = ()
    overrides: Mapping[str, object] = field(default_factory=dict)
    notes: Tuple[str, ...] = ()
    device: Optional[str] = None
    command: str = ""
    data_files: Mapping[Path, Tuple[Path, Path]] = field(default_factory=dict)
    val_dirs: Tuple[Path, ...] = ()
    val_name: Optional[str] = None
    pretrained: Optional[Path] = None      # a local timm state dict or checkpoint for both backbones


def heldout_evaluations(classifier: Classifier, records: Sequence[PatientRecord], data_dirs: Sequence[Path],
                        test_dirs: Sequence[Path], train_keys: Set[str], held: Set[str],
                        log: Callable[[str], None] = print) -> List[dict]:
    """The card's held-out figures: per folder, the geometries never trained on (their own labels only)."""
    folders = [(d, [r for r in records if r.source == str(d)]) for d in data_dirs] + \
        [(d, build_dataset(d)) for d in test_dirs]
    evaluations, pooled = [], []
    for d, recs in folders:
        shared = bool({split_key(r.patient_id) for r in recs} & train_keys)
        # Geometries with their real labels only (label variants are not scored); where the folder
        # renders training geometries, only the held-out ones.
        recs = [r for r in recs if r.patient_id == split_key(r.patient_id) and (not shared or r.patient_id in held)]
        if not recs:
            continue
        evaluations.append(evaluate_records(classifier, recs, describe_folder(d) + (
            ", held-out patients" if shared else "")).to_dict())
        if shared:
            pooled += recs
    if pooled and len(evaluations) > 1:
        evaluations.insert(0, evaluate_records(classifier, pooled, "all held-out renders of the training folders, pooled").to_dict())
    for ev in evaluations:
        log(f"{ev['data']}: disc macro-F1 {ev['disc']['macro_f1']:.3f}, canal macro-F1 {ev['canal']['macro_f1']:.3f}")
    return evaluations


def load_run_data(run: ClassifierRun) -> Tuple[List[PatientRecord], List[PatientRecord], List[PatientRecord], str]:
    """(every record of the --data folders, those outside run.exclude, the --val-data records, the data's name).

    Validation data may hold no geometry of the evaluation hold-out."""
    records: List[PatientRecord] = []
    for d in run.data_dirs:
        records += build_dataset(d, *dict(run.data_files).get(d, (None, None)))
    candidates = [r for r in records if split_key(r.patient_id) not in run.exclude]
    extra_val: List[PatientRecord] = []
    for d in run.val_dirs:
        extra_val += build_dataset(d)
    in_holdout = [r for r in extra_val if split_key(r.patient_id) in run.exclude]
    if in_holdout:
        raise InputError(f"validation data holds {len({split_key(r.patient_id) for r in in_holdout})} geometries of "
                         f"the evaluation hold-out (e.g. {in_holdout[0].patient_id}); nothing may be tuned on them",
                         path=in_holdout[0].source)
    return records, candidates, extra_val, run.data_name or ", ".join(str(d) for d in run.data_dirs)


def run_classifier(run: ClassifierRun, log: Callable[[str], None] = print) -> dict:
    """Train on the folders, then score held-out geometries and write the figures into the card.

    Returns the classifier.json metadata written.
    """
    from .card import write_model_card
    from .train import train as run_train
    data_dirs, test_dirs, val_dirs = run.data_dirs, run.test_dirs, run.val_dirs
    cfg = load_config(ClassifierConfig, overrides=dict(run.overrides))
    records, candidates, extra_val, name = load_run_data(run)
    keep, held = fraction_holdout(candidates, run.holdout, cfg.seed)
    held = set(held) | (set(run.exclude) & {split_key(r.patient_id) for r in records})
    train_recs = [r for r in candidates if split_key(r.patient_id) in keep]
    run_train(train_recs, run.out_dir, cfg, device=run.device, data_name=name, extra_val_records=extra_val,
              extra_val_name=run.val_name or ", ".join(describe_folder(d) for d in val_dirs),
              pretrained=run.pretrained)

    classifier = Classifier.load(run.out_dir, run.device)
    train_keys = {split_key(r.patient_id) for r in train_recs}
    evaluations = heldout_evaluations(classifier, records, data_dirs, test_dirs, train_keys, held, log)
    meta_path = Path(run.out_dir) / CONFIG_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["evaluations"] = evaluations
    meta["holdout_ids"] = sorted(held)
    meta["notes"] = list(run.notes)
    meta["command"] = run.command or "python -m classifier " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    write_json_atomic(meta_path, meta)
    log(f"wrote {write_model_card(run.out_dir, meta)}")
    return meta


