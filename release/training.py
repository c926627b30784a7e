"""`pipeline.py train`: retrain one stage or all of them into a weights folder, hold-out excluded, manifest rewritten.

Every stage calls its own package's training entry point; this module only resolves the data, draws or
reads the evaluation hold-out (study.splits) once for all stages, and records the new files in the
weights manifest so `run` accepts them.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Optional, Sequence, Set, Tuple

from study.challenge import BOXES_FILE, CHALLENGE_BOXES_FILE, CHALLENGE_LABELS_FILE, LABELS_FILE, folder_files, \
    read_labels
from study.errors import InputError
from study.splits import HOLDOUT_FILE, holdout_split, read_holdout, write_holdout

from .manifest import STAGES, write_manifest


@dataclass(frozen=True)
class TrainingData:
    """The folders to learn from and the geometry files; every --data folder reads its own labels/boxes."""

    folders: Tuple[Path, ...]
    files: Dict[Path, Tuple[Path, Path]]     # folder -> (labels file, boxes file)
    labels: Path                              # geometry labels (fusion's curvature and geometry alignment)
    boxes: Path
    holdout: Set[str]
    holdout_file: Optional[Path]


def resolve_data(data_dirs: Sequence[Path], labels: Optional[Path], boxes: Optional[Path]) -> TrainingData:
    """Each folder uses its own labels.json/boxes.json (or the challenge's train.json/bounding_box_train.json,
    in it or beside it: study.challenge.folder_files) when present, else --labels/--boxes; both must exist."""
    if not data_dirs:
        raise InputError("give at least one --data folder (challenge layout with images)")
    files: Dict[Path, Tuple[Path, Path]] = {}
    for d in map(Path, data_dirs):
        if not d.is_dir():
            raise InputError("not a folder", path=d)
        own_labels, own_boxes = folder_files(d)
        lab = own_labels or labels
        box = own_boxes or boxes
        if lab is None or box is None or not Path(lab).is_file() or not Path(box).is_file():
            raise InputError(f"needs a label file and a box file: it has no {LABELS_FILE}/{BOXES_FILE} (nor the "
                             f"challenge's {CHALLENGE_LABELS_FILE}/{CHALLENGE_BOXES_FILE}) and --labels/--boxes were "
                             "not given (or do not exist)", path=d)
        files[d] = (Path(lab), Path(box))
    first = Path(data_dirs[0])
    return TrainingData(tuple(map(Path, data_dirs)), files, Path(labels) if labels else files[first][0],
                        Path(boxes) if boxes else files[first][1], set(), None)


def with_holdout(data: TrainingData, out_dir: Path, holdout_file: Optional[Path], holdout_n: int,
                 seed: int = 0) -> TrainingData:
    """Read --holdout, or draw --holdout-n geometries from the geometry labels; written to OUT/holdout.json."""
    if holdout_file is not None:
        ids = read_holdout(holdout_file)
    elif holdout_n > 0:
        _, ids = holdout_split(read_labels(data.labels), holdout_n, seed)
        ids = set(ids)
    else:
        return data
    path = write_holdout(Path(out_dir) / HOLDOUT_FILE, ids, source=str(holdout_file or data.labels), seed=seed)
    return replace(data, holdout=ids, holdout_file=path)


def train_detector_stage(data: TrainingData, out_dir: Path, epochs: Optional[int], device: Optional[str],
                         data_name: str, command: str, minutes: Optional[float] = None,
                         pretrained: Optional[Path] = None) -> None:
    """YOLO + refiner on the first --data folder (its sagittal slices and boxes); pretrained: an ultralytics
    .pt to start from (detector.train's init_weights; the card records its name and sha256)."""
    from detector.config import DetectorConfig, TrainConfig
    from detector.train import train
    tc = TrainConfig()
    if epochs:
        tc = replace(tc, epochs=epochs)
    if minutes:
        tc = replace(tc, minutes=minutes)
    if device:
        tc = replace(tc, device=device)
    folder = data.folders[0]
    train(folder, data.files[folder][1], Path(out_dir) / "detector", DetectorConfig(), tc,
          work_dir=Path(out_dir) / ".detector-work", data_description=data_name or str(folder),
          exclude=data.holdout, command=command, init_weights=pretrained)


def train_classifier_stage(data: TrainingData, out_dir: Path, epochs: Optional[int], device: Optional[str],
                           data_name: str, command: str, val_dirs: Sequence[Path] = (),
                           pretrained: Optional[Path] = None, folds: int = 0) -> None:
    """The grading network on every --data folder (each render and label variant of a geometry stays together);
    val_dirs (never trained on) join its validation set; pretrained: a timm backbone file both backbones start
    from; folds >= 2: a K-fold ensemble with its cross-validated figures (classifier.folds)."""
    from classifier.recipe import ClassifierRun, run_classifier
    run = ClassifierRun(tuple(data.folders), Path(out_dir) / "classifier", data_name or None,
                        exclude=frozenset(data.holdout), overrides={"epochs": epochs} if epochs else {},
                        device=device, command=command, data_files=dict(data.files),
                        val_dirs=tuple(val_dirs), pretrained=pretrained)
    if folds:
        from classifier.folds import run_classifier_folds
        stale = Path(out_dir) / "classifier"
        for name in ("classifier.pt", "classifier.torchscript"):   # an ensemble folder has no top-level network
            (stale / name).unlink(missing_ok=True)
        run_classifier_folds(run, folds)
    else:
        run_classifier(run)


def train_fusion_stage(data: TrainingData, out_dir: Path, data_name: str, image_data_name: str,
                       run_cv: bool, command: str, folds: int = 0) -> None:
    """Curvature and geometry alignment on --labels/--boxes; the image alignment head on the --data folders,
    with the levels placed by OUT/detector when it exists (as `run` will place them)."""
    from fusion.config import FusionConfig
    from fusion.train import FusionRun, run_fusion
    detector = Path(out_dir) / "detector"
    config = FusionConfig(cv_folds=folds) if folds else FusionConfig()
    run_fusion(FusionRun(data.boxes, data.labels, Path(out_dir) / "fusion", data_name=data_name, run_cv=run_cv,
                         exclude_file=data.holdout_file, image_data=tuple(data.folders),
                         image_data_name=image_data_name, command=command,
                         image_detector=detector if (detector / "best.pt").is_file() else None, config=config))


@dataclass(frozen=True)
class TrainingRun:
    """`pipeline.py train`: which stage(s), the data and the settings, named; train_stages carries it out."""

    stage: str
    data_dirs: Tuple[Path, ...]
    out_dir: Path
    labels: Optional[Path] = None
    boxes: Optional[Path] = None
    holdout_file: Optional[Path] = None
    holdout_n: int = 0
    epochs: Optional[int] = None
    device: Optional[str] = None
    data_name: str = ""
    geometry_name: str = ""
    run_cv: bool = True
    detector_minutes: Optional[float] = None
    val_dirs: Tuple[Path, ...] = ()
    pretrained: Tuple[Tuple[str, Path], ...] = ()   # (stage, file): detector an ultralytics .pt, classifier timm
    folds: int = 0                                  # classifier: a K-fold ensemble; fusion: K cross-validation folds

    def pretrained_for(self, stage: str) -> Optional[Path]:
        return next((Path(f) for s, f in self.pretrained if s == stage), None)

    def command_line(self) -> str:
        """The `python pipeline.py train ...` command that asks for this run (model cards record it)."""
        args = [self.stage] + [a for d in self.data_dirs for a in ("--data", str(d))] + \
            [a for d in self.val_dirs for a in ("--val-data", str(d))]
        for flag, value in (("--labels", self.labels), ("--boxes", self.boxes), ("--out", self.out_dir),
                            ("--holdout", self.holdout_file), ("--holdout-n", self.holdout_n or None),
                            ("--epochs", self.epochs), ("--detector-minutes", self.detector_minutes),
                            ("--device", self.device), ("--data-name", self.data_name or None),
                            ("--geometry-name", self.geometry_name or None), ("--folds", self.folds or None)):
            if value is not None:
                args += [flag, str(value)]
        args += [a for s, f in self.pretrained for a in ("--pretrained", f"{s}={f}" if self.stage == "all" else str(f))]
        return "python pipeline.py train " + " ".join(shlex.quote(a) for a in args + ([] if self.run_cv else ["--no-cv"]))


def train_stages(run: TrainingRun, command: str = "") -> Path:
    """Train run.stage (or 'all', in flow order) into out_dir/<stage>/ and rewrite out_dir/MANIFEST.json.

    command: what the model cards record (default: run.command_line())."""
    if run.stage not in STAGES + ("all",):
        raise ValueError(f"unknown stage {run.stage!r}; expected one of {STAGES + ('all',)}")
    if run.folds == 1 or run.folds < 0:
        raise InputError(f"--folds needs at least 2 folds, got {run.folds}")
    if run.folds and run.stage == "detector":
        raise InputError("--folds applies to the classifier and fusion stages, not the detector")
    for s, f in run.pretrained:
        if s not in ("detector", "classifier") or (run.stage not in (s, "all")):
            raise InputError(f"--pretrained for the {s} stage does not fit `train {run.stage}` (detector: an "
                             "ultralytics .pt; classifier: a timm state dict or checkpoint)")
        if not Path(f).is_file():
            raise InputError("no such pretrained file", path=f)
    out_dir = Path(run.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = with_holdout(resolve_data(run.data_dirs, run.labels, run.boxes), out_dir, run.holdout_file, run.holdout_n)
    command = command or run.command_line()
    for s in (STAGES if run.stage == "all" else (run.stage,)):
        if s == "detector":
            train_detector_stage(data, out_dir, run.epochs, run.device, run.data_name, command, run.detector_minutes,
                                 run.pretrained_for("detector"))
        elif s == "classifier":
            train_classifier_stage(data, out_dir, run.epochs, run.device, run.data_name, command, run.val_dirs,
                                   run.pretrained_for("classifier"), run.folds)
        else:
            train_fusion_stage(data, out_dir, run.geometry_name or str(data.boxes), run.data_name, run.run_cv, command,
                               run.folds)
    return write_manifest(out_dir)


def parse_pretrained(stage: str, values: Sequence[str]) -> Tuple[Tuple[str, Path], ...]:
    """`--pretrained FILE` (train detector|classifier) or `--pretrained STAGE=FILE` (any stage, e.g. with all)."""
    out = []
    for v in values:
        s, sep, f = v.partition("=")
        if sep and s in ("detector", "classifier"):
            out.append((s, Path(f)))
        elif stage in ("detector", "classifier"):
            out.append((stage, Path(v)))
        else:
            raise InputError(f"--pretrained {v}: with `train {stage}` name the stage, e.g. --pretrained "
                             "classifier=FILE or --pretrained detector=FILE")
    if len({s for s, _ in out}) != len(out):
        raise InputError("--pretrained given twice for one stage")
    return tuple(out)
