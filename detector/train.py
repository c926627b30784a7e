"""Train the YOLO detector from a .yaml on a challenge-layout folder; write weights, config.json and a model card."""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import AbstractSet, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from study.challenge import VISIBLE_BOXES_FILE, read_box_file, read_visible_boxes
from study.splits import split_key

from .config import DetectorConfig, TrainConfig, to_dict
from .dataset import DatasetInfo, build_dataset
from .metrics import DetectorMetrics, FramedMetrics, evaluate_folder, evaluate_framed_folder
from .predict import TRACED_FILE, WEIGHTS_FILE, Detector, export_traced, write_weights_config
from common.files import sha256_of
from common.provenance import git_commit
from .yolo_env import configure, yolo

PathLike = Union[str, Path]
ROOT = Path(__file__).resolve().parents[1]
CARD_FILE = "MODEL_CARD.md"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class EvalSet:
    """A folder to score the trained detector on, and what it is (named in the model card)."""

    name: str
    layout_dir: Path
    boxes_file: Optional[Path] = None
    ids: Optional[Tuple[str, ...]] = None
    description: str = ""


@dataclass(frozen=True)
class TrainResult:
    weights_dir: Path
    dataset: DatasetInfo
    epochs: int
    train_seconds: float
    metrics: Dict[str, DetectorMetrics]


def _mri_trainer(appearance):
    """A DetectionTrainer whose training set adds the MRI appearance randomisation before formatting.

    Subclassing the dataset (not patching its transform list) keeps the randomisation when ultralytics
    rebuilds the transforms, as it does on close_mosaic.
    """
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.utils import colorstr
    from ultralytics.utils.torch_utils import unwrap_model

    from .augment import MRIAppearance

    class MRIDataset(YOLODataset):
        def build_transforms(self, hyp=None):
            t = super().build_transforms(hyp)
            if self.augment:
                t.insert(len(t.transforms) - 1, MRIAppearance(appearance))  # before Format
            return t

    class MRITrainer(DetectionTrainer):
        def build_dataset(self, img_path, mode="train", batch=None):
            gs = max(int(unwrap_model(self.model).stride.max()), 32)
            a = self.args
            return MRIDataset(img_path=img_path, imgsz=a.imgsz, batch_size=batch, augment=mode == "train",
                              hyp=a, rect=a.rect or mode == "val", cache=a.cache or None,
                              single_cls=a.single_cls or False, stride=gs, pad=0.0 if mode == "train" else 0.5,
                              prefix=colorstr(f"{mode}: "), task=a.task, classes=a.classes, data=self.data,
                              fraction=a.fraction if mode == "train" else 1.0)

    return MRITrainer


MODELS_DIR = Path(__file__).resolve().parent / "models"


def resolve_model_yaml(name: str) -> Union[Path, str]:
    """A project model .yaml (detector/models/) by name, else the name for ultralytics' own cfg folder."""
    local = MODELS_DIR / name
    return local if local.is_file() else name


def _device(tc: TrainConfig) -> str:
    if tc.device:
        return tc.device
    return "0" if torch.cuda.is_available() else "cpu"


def _device_words(tc: TrainConfig) -> str:
    device = _device(tc)
    if device != "cpu" and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name()}, {_workers(tc, device)} loader workers)"
    return f"{device} ({torch.get_num_threads()} threads)"


def _workers(tc: TrainConfig, device: str) -> int:
    if tc.workers is not None:
        return tc.workers
    return 1 if device == "cpu" else max(1, min(8, (os.cpu_count() or 2) - 1))


def train(layout_dir: PathLike, boxes_file: PathLike, out_dir: PathLike,
          config: DetectorConfig = DetectorConfig(), train_config: TrainConfig = TrainConfig(),
          eval_sets: Sequence[EvalSet] = (), work_dir: Optional[PathLike] = None,
          val_ids: Sequence[str] = (), data_description: str = "",
          card_sections: Optional[Mapping[str, str]] = None, real_check: bool = True,
          verbose: bool = True, exclude: AbstractSet[str] = frozenset(), command: str = "",
          extra_dirs: Sequence[PathLike] = (), init_weights: Optional[PathLike] = None) -> TrainResult:
    """Export the dataset, train YOLO from config.model_yaml, and write out_dir/{best.pt, config.json,
    MODEL_CARD.md, metrics.json, args.yaml}. The held-out patients of the split are always scored.

    exclude: geometry ids never trained on (the evaluation hold-out of study.splits); those of them in the
    box file are scored as the "evaluation hold-out" set.
    extra_dirs: more training folders (realistic phantoms with visible_boxes.json; see build_dataset).
    init_weights: an ultralytics checkpoint (.pt, same class design) to start from instead of random weights;
    the card names it and its sha256.
    """
    layout_dir, out_dir = Path(layout_dir), Path(out_dir)
    tc = train_config
    # Absolute: ultralytics puts a relative `project` under its own runs/<task>/ folder, where train() would not
    # find the weights it wrote.
    work = (Path(work_dir) if work_dir is not None else out_dir.parent / f".{out_dir.name}-work").resolve()
    configure(work / "ultralytics-config", threads=tc.threads or max(1, (os.cpu_count() or 2) - 1))
    info = build_dataset(layout_dir, boxes_file, work / "dataset", tc.val_fraction, tc.seed, config.class_design,
                         val_ids=val_ids, exclude=exclude, extra_dirs=extra_dirs, config=config)
    if init_weights is not None:
        init_weights = Path(init_weights)
        if not init_weights.is_file():
            raise FileNotFoundError(f"no checkpoint at {init_weights}")
        card_sections = {"Initial weights": f"Training started from `{init_weights}` (sha256 "
                                            f"{sha256_of(init_weights)}), not from random weights.",
                         **(card_sections or {})}
    model = yolo()(str(init_weights if init_weights is not None else resolve_model_yaml(config.model_yaml)))
    run_dir = work / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    t0 = time.perf_counter()
    device = _device(tc)
    model.train(
        trainer=_mri_trainer(tc.appearance), data=str(info.data_yaml), epochs=tc.epochs, imgsz=config.imgsz,
        time=tc.minutes / 60.0 if tc.minutes else None,
        batch=tc.batch, device=device, workers=_workers(tc, device), seed=tc.seed, deterministic=False, amp=False,
        pretrained=init_weights is not None,  # False would make ultralytics drop the checkpoint's weights
        plots=False, val=False, project=str(work), name="run", exist_ok=True, cache=tc.cache,
        optimizer=tc.optimizer, lr0=tc.lr0, cos_lr=tc.cos_lr, warmup_epochs=tc.warmup_epochs, mosaic=tc.mosaic,
        close_mosaic=0, degrees=tc.degrees, translate=tc.translate, scale=tc.scale, shear=tc.shear,
        hsv_h=0.0, hsv_s=0.0, hsv_v=tc.hsv_v, fliplr=tc.fliplr, flipud=tc.flipud, patience=tc.patience,
        verbose=verbose)
    train_seconds = time.perf_counter() - t0
    if tc.minutes:  # the epochs ultralytics fitted to the budget and ran (the card states them)
        tc = replace(tc, epochs=int(model.trainer.epoch) + 1)
    if extra_dirs:
        card_sections = {"Extra training data": (
            f"Besides the main folder: {', '.join(str(d) for d in extra_dirs)}: {len(info.extra_train_ids)} "
            f"patients trained on, {len(info.extra_val_ids)} in the validation split (every render of a geometry "
            "on its geometry's side; levels outside a render's field of view carry no box)."),
            **(card_sections or {})}

    weights = run_dir / "weights"
    src = weights / "best.pt" if (weights / "best.pt").is_file() else weights / "last.pt"
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, out_dir / WEIGHTS_FILE)
    if (run_dir / "args.yaml").is_file():
        shutil.copyfile(run_dir / "args.yaml", out_dir / "args.yaml")
    refine_info = None
    if config.refine:
        from .refine import REFINE_FILE, train_refiner
        refine_info = train_refiner(layout_dir, boxes_file, info.train_ids, out_dir / REFINE_FILE, config, tc,
                                    verbose=verbose)
        train_seconds += refine_info["seconds"]
    write_weights_config(out_dir, config, {"train": to_dict(tc)})
    export_traced(out_dir)
    return report(out_dir, info, layout_dir, boxes_file, config, tc, train_seconds, eval_sets, data_description,
                  card_sections, real_check, verbose, exclude, command)


def report(out_dir: Path, info: DatasetInfo, layout_dir: PathLike, boxes_file: PathLike, config: DetectorConfig,
           tc: TrainConfig, train_seconds: float, eval_sets: Sequence[EvalSet] = (), data_description: str = "",
           card_sections: Optional[Mapping[str, str]] = None, real_check: bool = True, verbose: bool = True,
           exclude: AbstractSet[str] = frozenset(), command: str = "") -> TrainResult:
    """Score trained weights on the split's validation patients, the evaluation hold-out, the extra sets and
    the real scan; write metrics.json and MODEL_CARD.md. (train() ends here; it can also be rerun alone.)"""
    out_dir, layout_dir = Path(out_dir), Path(layout_dir)
    detector = Detector.from_weights(out_dir)
    sets = list(eval_sets)
    if info.val_ids:
        sets.insert(0, EvalSet("held-out split", layout_dir, Path(boxes_file), info.val_ids,
                               f"the {len(info.val_ids)} validation patients of the patient-level split "
                               f"(never trained on; they chose the epoch kept)"))
    held = sorted(p.patient_id for p in read_box_file(boxes_file).patients if split_key(p.patient_id) in exclude)
    if held:
        sets.insert(0, EvalSet("evaluation hold-out", layout_dir, Path(boxes_file), tuple(held),
                               f"the {len(held)} patients of the evaluation hold-out (study.splits; never "
                               f"trained on, never used to choose anything)"))
    metrics: Dict[str, DetectorMetrics] = {}
    for es in sets:
        m, _ = evaluate_folder(detector, es.layout_dir, es.boxes_file, es.ids)
        metrics[es.name] = m
        if verbose:
            print(f"\n== {es.name}: {es.description}\n{m.table()}")
    framed: Dict[str, FramedMetrics] = {}
    split = json.loads((info.data_yaml.parent / "split.json").read_text())
    for folder in map(Path, split.get("extra_dirs", [])):
        ids = [p.patient_id for p in read_visible_boxes(folder / VISIBLE_BOXES_FILE) if split_key(p.patient_id) in exclude] \
            if (folder / VISIBLE_BOXES_FILE).is_file() else []
        if ids:
            framed[folder.name] = evaluate_framed_folder(detector, folder, ids)
            if verbose:
                print(f"\n== {folder.name}, renders of the evaluation hold-out\n{framed[folder.name].table()}")
    sections = dict(card_sections or {})
    if framed:
        sections = {"Realistic phantoms of the evaluation hold-out (random framing, head and thorax, random "
                    "contrasts; never trained on)": "\n".join(f"- {k}: {m.table()}" for k, m in framed.items()),
                    **sections}
    real = None
    if real_check:
        from .real_check import check_real_scan, real_scan_available
        why = real_scan_available()
        if why is None:
            real = check_real_scan(detector)
            sections = {"Sim-to-real check (real T2 scan)": real_scan_section(real), **sections}
            if verbose:
                print("\n== real scan\n" + real.table())
        else:
            sections = {"Sim-to-real check (real T2 scan)": f"Not run: {why}.", **sections}
    result = TrainResult(out_dir, info, tc.epochs, train_seconds, metrics)
    (out_dir / METRICS_FILE).write_text(json.dumps(
        {"train_seconds": round(train_seconds, 1), "epochs": tc.epochs,
         "sets": {k: v.to_dict() for k, v in metrics.items()},
         "framed_sets": {k: v.to_dict() for k, v in framed.items()},
         "real_scan": None if real is None else [vars(c) for c in real.levels]}, indent=1) + "\n")
    if command:
        sections["Retrain"] = f"The command that wrote these weights:\n```\n{command}\n```"
    write_model_card(out_dir, result, config, tc, sets, layout_dir, Path(boxes_file), data_description, sections)
    return result


def real_scan_section(real) -> str:
    """The model card's account of the real scan, whatever the numbers are."""
    rs = real.slices
    x1, y1, x2, y2 = rs.content_box
    return "\n".join([
        "../shared/data/real_mri/cervical_sagittal_t2_crop/t2.nii.gz (1 mm iso, cropped to about C2-C5): the mid-"
        f"sagittal slice (and +-3 mm for slices 5/7) resampled to {rs.mm_per_px} mm/px, anterior left, superior up, "
        f"centred in a black 224x224 canvas (the scan occupies {x2 - x1}x{y2 - y1} px). Label heights: "
        "t2_seg-manual_labeled values 2..5 (cord voxels of each level). mm are measured down from the top of the "
        "scan; 'inside' means the detector's C-level centre on the mid slice lies within that level's labelled height.",
        "", "```", real.table(), "```"])


def write_model_card(out_dir: Path, result: TrainResult, config: DetectorConfig, tc: TrainConfig,
                     sets: Sequence[EvalSet], layout_dir: Path, boxes_file: Path, data_description: str,
                     card_sections: Mapping[str, str]) -> Path:
    info = result.dataset
    pt = out_dir / WEIGHTS_FILE
    lines: List[str] = [
        "# Detector model card (stage 1: C2-C7 and discs on sagittal slices)", "",
        f"- Written: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, git commit {git_commit('detector')}",
        f"- Network: {config.model_yaml} built from its .yaml (no pretrained weights), {len(config.names)} classes "
        f"({config.class_design}: {', '.join(config.names)}), input {config.imgsz}x{config.imgsz}, "
        f"{pt.stat().st_size / 1e6:.1f} MB; `{TRACED_FILE}` is the same network traced, which `run` loads on the "
        "CPU so it needs neither ultralytics nor torchvision (`common/traced.py`)",
        f"- Training: {result.epochs} epochs"
        f"{f' (fitted by ultralytics to a {tc.minutes:g}-min budget)' if tc.minutes else ''}, batch {tc.batch}, "
        f"{tc.optimizer} lr0 {tc.lr0}, seed {tc.seed}, device {_device_words(tc)}, "
        f"wall time {result.train_seconds / 60:.1f} min",
        f"- Data: {data_description or layout_dir} (boxes: {boxes_file.name}); {info.n_images} sagittal images "
        f"(slices 5, 6, 7 of each patient)",
        f"- Split: patient level, seed {tc.seed}: {len(info.train_ids)} train / {len(info.val_ids)} validation patients "
        f"(ids in the run's split.json; no patient on both sides); {json.loads((info.data_yaml.parent / 'split.json').read_text()).get('excluded', 0)} "
        "patients of the evaluation hold-out excluded from both",
        "- Disc boxes: derived from the neighbouring vertebra boxes by detector.boxes.disc_box_between",
        "- Augmentation: no flips (left-right swaps anterior and posterior); affine "
        f"(rotation {tc.degrees} deg, translate {tc.translate}, scale {tc.scale}, shear {tc.shear}); "
        f"mosaic {tc.mosaic}; MRI appearance randomisation ({', '.join(f'{k}={v}' for k, v in to_dict(tc.appearance).items())})",
        "",
        "## Metrics",
        "Level correct: IoU >= 0.5 with the true box of that level. Centre error: box centres. Hit: centre within "
        "6 mm (Spinal Disease 2020 style). All numbers from the full predict() path (anatomical assignment, "
        "cross-slice consensus and gap filling included).", "",
    ]
    for es in sets:
        m = result.metrics[es.name]
        lines += [f"### {es.name}", es.description, "", "```", m.table(), "```", ""]
    for title, text in card_sections.items():
        lines += [f"## {title}", text.rstrip(), ""]
    path = out_dir / CARD_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


def comparison_table(runs: Mapping[str, PathLike]) -> str:
    """Markdown table of the key metrics of several trained weights folders (their metrics.json)."""
    header = ("| run | epochs | train min | set | mean IoU C2-C7 | all six correct | median centre px | hit 6 mm | "
              "disc IoU |\n|---|---|---|---|---|---|---|---|---|")
    rows = [header]
    for name, folder in runs.items():
        data = json.loads((Path(folder) / METRICS_FILE).read_text())
        for set_name, m in data["sets"].items():
            hit = "-" if m["hit_rate_6mm"] is None else f"{m['hit_rate_6mm']:.3f}"
            rows.append(f"| {name} | {data['epochs']} | {data['train_seconds'] / 60:.1f} | {set_name} | "
                        f"{m['mean_iou']:.3f} | {m['all_levels_correct']:.3f} | {m['median_centre_px']:.2f} | "
                        f"{hit} | {m['disc_mean_iou']:.3f} |")
    return "\n".join(rows)


def append_card_section(weights_dir: PathLike, title: str, text: str) -> Path:
    """Add a section to an existing model card (e.g. measurements made after training: comparisons, benchmarks)."""
    path = Path(weights_dir) / CARD_FILE
    body = path.read_text().rstrip() + f"\n\n## {title}\n{text.rstrip()}\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(body)
    tmp.replace(path)
    return path
