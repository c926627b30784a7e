"""train(): patient-level split, class-weighted training with early stopping on validation macro-F1, prior tuning."""
from __future__ import annotations

import copy
import json
import math
import platform
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import timm
import torch
import torch.nn.functional as F

from evaluation.metrics import macro_f1
from common.files import atomic_write
from common.provenance import git_commit
from study.errors import InputError
from study.levels import CANAL_GRADES, CANAL_POSITIONS, DISC_GRADES, DISCS

from .config import ClassifierConfig
from .crops import LevelCrops
from .data import PatientRecord, batch_tensors, label_arrays
from .decision import tune_priors
from .model import GradeNet
from study.splits import split_key, split_patients as split_geometries
from synth.variants import keeps_real_grades
from .predict import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE, export_traced, pick_device, sha256_of
from .prior import label_prior_block

PathLike = Union[str, Path]


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced: where, the chosen epoch, validation figures and the run's history."""

    out_dir: Path
    best_epoch: int
    epochs_run: int
    seconds: float
    val_disc_macro_f1: float
    val_canal_macro_f1: float
    train_ids: Tuple[str, ...]
    val_ids: Tuple[str, ...]
    history: Tuple[Dict[str, float], ...] = field(repr=False, default=())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def split_patients(records: Sequence[PatientRecord], val_fraction: float, seed: int) -> Tuple[List[str], List[str]]:
    """Geometry keys (patient ids without a variant suffix) for training and validation (study.splits).

    Every render of one geometry (other seeds, rare-grade variants) stays on one side. Stratified on the
    rare findings of the geometry's own labels (disc extrusion, canal grade 3, disc bulge).
    """
    return split_geometries([r.patient_id for r in records], val_fraction, seed, rare_findings(records))


def rare_findings(records: Sequence[PatientRecord]) -> Callable[[str], Tuple[bool, ...]]:
    """geometry key -> its stratum: disc extrusion, canal grade 3, disc bulge in the geometry's own labels."""
    by_key: Dict[str, PatientRecord] = {}
    for r in records:
        key = split_key(r.patient_id)
        if key not in by_key or r.patient_id == key:  # prefer the geometry's own labels
            by_key[key] = r

    def stratum(key: str) -> Tuple[bool, ...]:
        lab = by_key[key].labels
        return 3 in lab.disc_grades, 3 in lab.canal_grades, 1 in lab.disc_grades
    return stratum


def class_weights(labels: np.ndarray, n_classes: int, power: float) -> torch.Tensor:
    """(1 / frequency) ** power, scaled so the average item weight is 1; absent classes get the largest weight."""
    counts = np.bincount(labels.ravel(), minlength=n_classes).astype(np.float64)
    freq = counts / counts.sum()
    w = np.where(counts > 0, 1.0 / np.maximum(freq, 1e-12), 0.0) ** power
    w[counts == 0] = w.max() if (counts > 0).any() else 1.0
    w /= (w * freq).sum()
    return torch.tensor(w, dtype=torch.float32)


def _hide_axial(crops: LevelCrops, rng: np.random.Generator, p_level: float) -> LevelCrops:
    """Training only: hide axial crops (a level at a time, or now and then the whole patient)."""
    if p_level <= 0:
        return crops
    hide = rng.random(len(CANAL_POSITIONS)) < p_level
    if rng.random() < p_level / 3:
        hide[:] = True
    if not hide.any():
        return crops
    ax = crops.axial.copy()
    ax[hide] = 0
    return LevelCrops(crops.patient_id, crops.sagittal, ax, crops.has_axial & ~hide, crops.sagittal_windows,
                      crops.axial_windows, crops.canal)


def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(total - warmup, 1)
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


@torch.no_grad()
def _probabilities(model: GradeNet, tensors, device, chunk: int = 32) -> Tuple[np.ndarray, np.ndarray]:
    model.eval()
    sag, ax, has = tensors
    disc, canal = [], []
    for i in range(0, sag.shape[0], chunk):
        out = model(sag[i:i + chunk].to(device), ax[i:i + chunk].to(device), has[i:i + chunk].to(device))
        disc.append(torch.softmax(out["disc"], -1).cpu().numpy())
        canal.append(torch.softmax(out["canal"], -1).cpu().numpy())
    return np.concatenate(disc), np.concatenate(canal)


def _scores(disc_p, canal_p, disc_t, canal_t) -> Dict[str, float]:
    dp, dscore = tune_priors(disc_p, disc_t)
    cp, cscore = tune_priors(canal_p, canal_t)
    return {"disc_f1_argmax": macro_f1(disc_t.ravel(), disc_p.argmax(-1).ravel(), len(DISC_GRADES)),
            "canal_f1_argmax": macro_f1(canal_t.ravel(), canal_p.argmax(-1).ravel(), len(CANAL_GRADES)),
            "disc_f1_tuned": dscore, "canal_f1_tuned": cscore, "disc_priors": dp, "canal_priors": cp}


def train(records: Sequence[PatientRecord], out_dir: PathLike, cfg: ClassifierConfig = ClassifierConfig(),
          val_records: Optional[Sequence[PatientRecord]] = None, device: Optional[str] = None,
          data_name: str = "unnamed data", log: Callable[[str], None] = print,
          extra_val_records: Sequence[PatientRecord] = (), extra_val_name: str = "",
          pretrained: Optional[PathLike] = None) -> TrainResult:
    """Train on labelled records and write classifier.pt, classifier.json (config, priors, provenance).

    Validation: val_records when given, else a stratified patient-level split of `records` (val_fraction).
    extra_val_records (never trained on; no geometry shared with the training renders) join the validation
    set, so early stopping and the class priors rest on more than the split's few rare-grade cases.
    The epoch with the best mean of the tuned disc and canal macro-F1 on validation is kept; the class
    priors tuned on its validation outputs go into the saved config.
    pretrained: a local timm state dict or checkpoint both backbones start from (classifier.pretrained).
    """
    t_start = time.perf_counter()
    seed_everything(cfg.seed)
    torch.set_num_threads(cfg.threads)
    dev = pick_device(device)
    out_dir = Path(out_dir)
    records = [r for r in records if r.labels is not None]
    if val_records is None:
        train_ids, val_ids = split_patients(records, cfg.val_fraction, cfg.seed)
        val_set = set(val_ids)
        train_recs = [r for r in records if split_key(r.patient_id) not in val_set]
        # Validation tunes the priors for the real label mix: rare-grade variants stay out of it, while
        # poor-alignment variants (the real grades, another render) give it more renders to tune on.
        val_recs = [r for r in records if split_key(r.patient_id) in val_set and keeps_real_grades(r.patient_id)]
    else:
        train_recs, val_recs = list(records), [r for r in val_records if r.labels is not None]
        train_ids = sorted({split_key(r.patient_id) for r in train_recs})
        val_ids = sorted({split_key(r.patient_id) for r in val_recs})
    extra_val = [r for r in extra_val_records if r.labels is not None]
    trained_on = {split_key(r.patient_id) for r in train_recs}
    shared = [r for r in extra_val if split_key(r.patient_id) in trained_on]
    if shared:
        raise InputError(f"extra validation data shares {len({split_key(r.patient_id) for r in shared})} geometries "
                         f"with the training renders (e.g. {shared[0].patient_id}); it must be data never trained on",
                         path=shared[0].source)
    val_recs = list(val_recs) + extra_val
    val_ids = sorted(set(val_ids) | {split_key(r.patient_id) for r in extra_val})
    if not train_recs or not val_recs:
        raise ValueError(f"need training and validation patients, got {len(train_recs)} and {len(val_recs)}")
    log(f"train {len(train_recs)} renders of {len(train_ids)} geometries, validate on {len(val_recs)} renders; "
        f"device {dev}, {cfg.threads} threads")

    disc_train, canal_train = label_arrays(train_recs)
    disc_w = class_weights(disc_train, len(DISC_GRADES), cfg.class_weight_power).to(dev)
    canal_w = class_weights(canal_train, len(CANAL_GRADES), cfg.class_weight_power).to(dev)
    disc_val, canal_val = label_arrays(val_recs)
    val_tensors = batch_tensors([r.crops(cfg) for r in val_recs])

    model = GradeNet(cfg)
    start = None
    if pretrained is not None:
        from .pretrained import load_pretrained
        start = load_pretrained(model, pretrained)
        log(f"backbones start from {start['file']} (sha256 {start['sha256'][:12]}...)")
    model = model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    if cfg.epoch_sampling not in ("geometry", "render"):
        raise ValueError(f"epoch_sampling must be 'geometry' or 'render', got {cfg.epoch_sampling!r}")
    groups: Dict[str, List[int]] = {}
    for i, r in enumerate(train_recs):
        groups.setdefault(split_key(r.patient_id), []).append(i)
    group_list = [groups[k] for k in sorted(groups)]
    per_epoch = len(group_list) if cfg.epoch_sampling == "geometry" else len(train_recs)
    steps_per_epoch = math.ceil(per_epoch / cfg.batch_patients)
    total = steps_per_epoch * cfg.epochs
    step, best, best_state, best_epoch, stale = 0, -1.0, None, 0, 0
    best_scores: Dict[str, object] = {}
    history: List[Dict[str, float]] = []
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        if cfg.epoch_sampling == "geometry":
            order = np.array([g[int(rng.integers(len(g)))] for g in group_list])[rng.permutation(len(group_list))]
        else:
            order = rng.permutation(len(train_recs))
        losses = []
        for i in range(0, len(order), cfg.batch_patients):
            batch = [train_recs[j] for j in order[i:i + cfg.batch_patients]]
            crops = [_hide_axial(r.crops(cfg, rng), rng, cfg.axial_dropout) for r in batch]
            sag, ax, has = (t.to(dev) for t in batch_tensors(crops))
            d_t, c_t = (torch.from_numpy(a).to(dev) for a in label_arrays(batch))
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, total, steps_per_epoch, cfg.lr)
            out = model(sag, ax, has)
            loss = F.cross_entropy(out["canal"].flatten(0, 1), c_t.ravel(), weight=canal_w) \
                + F.cross_entropy(out["disc"].flatten(0, 1), d_t.ravel(), weight=disc_w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        disc_p, canal_p = _probabilities(model, val_tensors, dev)
        scores = _scores(disc_p, canal_p, disc_val, canal_val)
        score = (scores["disc_f1_tuned"] + scores["canal_f1_tuned"]) / 2
        row = {"epoch": epoch, "loss": float(np.mean(losses)), "seconds": time.perf_counter() - t0,
               **{k: v for k, v in scores.items() if not k.endswith("priors")}}
        history.append(row)
        log(f"epoch {epoch:2d} loss {row['loss']:.3f} val disc {scores['disc_f1_tuned']:.3f} "
            f"(argmax {scores['disc_f1_argmax']:.3f}) canal {scores['canal_f1_tuned']:.3f} "
            f"(argmax {scores['canal_f1_argmax']:.3f}) {row['seconds']:.0f}s")
        if score > best + 1e-6:
            best, best_epoch, stale, best_scores = score, epoch, 0, scores
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        elapsed_min = (time.perf_counter() - t_start) / 60
        if stale >= cfg.patience:
            log(f"early stop: no better validation score for {cfg.patience} epochs")
            break
        if elapsed_min + row["seconds"] / 60 > cfg.max_minutes:
            log(f"stopping at the {cfg.max_minutes} min time cap")
            break

    model.load_state_dict(best_state)
    final_cfg = cfg.replace(disc_priors=list(best_scores["disc_priors"]), canal_priors=list(best_scores["canal_priors"]))
    seconds = time.perf_counter() - t_start
    meta = {
        "format_version": FORMAT_VERSION,
        "config": final_cfg.to_dict(),
        "positions": list(CANAL_POSITIONS), "discs": list(DISCS),
        "disc_classes": list(DISC_GRADES), "canal_classes": list(CANAL_GRADES),
        "input": {"sagittal": [3, cfg.sag_size, cfg.sag_size], "axial": [1, cfg.ax_size, cfg.ax_size],
                  "normalisation": "per crop: zero mean, unit standard deviation (classifier.crops.standardise)"},
        "training": {"data": data_name, "train_patients": len(train_ids), "train_renders": len(train_recs),
                     "val_patients": len(val_ids), "val_renders": len(val_recs), "val_ids": list(val_ids),
                     "val_extra": ({"data": extra_val_name or "extra validation data", "renders": len(extra_val)}
                                   if extra_val else None),
                     "train_ids": list(train_ids),
                     "pretrained": start,
                     "best_epoch": best_epoch, "epochs_run": epoch, "seconds": round(seconds, 1),
                     "device": str(dev), "threads": cfg.threads, "seed": cfg.seed,
                     "disc_class_weights": [round(float(x), 3) for x in disc_w.cpu()],
                     "canal_class_weights": [round(float(x), 3) for x in canal_w.cpu()],
                     "git_commit": git_commit("classifier"), "torch": torch.__version__, "timm": timm.__version__,
                     "python": platform.python_version()},
        "validation": {k: v for k, v in best_scores.items()},
        "history": history,
        "label_prior": training_label_prior(train_recs, data_name),
    }
    save_weights(out_dir, model, meta)
    log(f"best epoch {best_epoch}: val disc macro-F1 {best_scores['disc_f1_tuned']:.3f}, canal "
        f"{best_scores['canal_f1_tuned']:.3f}; {seconds / 60:.1f} min; wrote {out_dir}")
    return TrainResult(out_dir, best_epoch, epoch, seconds, float(best_scores["disc_f1_tuned"]),
                       float(best_scores["canal_f1_tuned"]), tuple(train_ids), tuple(val_ids), tuple(history))


def training_label_prior(train_recs: Sequence[PatientRecord], data_name: str) -> Dict[str, object]:
    """classifier.json's label_prior: grade counts of the training geometries' own labels, one count per
    geometry (repeated renders and label variants of it are not counted again). A position outside a scan's
    field of view submits its most frequent grade (classifier.prior)."""
    own: Dict[str, PatientRecord] = {}
    for r in train_recs:
        if keeps_real_grades(r.patient_id):
            own.setdefault(split_key(r.patient_id), r)
    recs = [own[k] for k in sorted(own)] or list(train_recs)
    disc, canal = label_arrays(recs)
    return label_prior_block(disc, canal, f"grade counts of the labels of the {len(recs)} geometries this "
                             f"classifier trained on ({data_name}); one count per geometry, repeated renders and "
                             "label variants not counted")


def save_weights(out_dir: Path, model: GradeNet, meta: Dict[str, object]) -> None:
    """classifier.pt (plain state_dict) and classifier.json (config + provenance + the weights' sha256)."""
    weights = out_dir / WEIGHTS_FILE
    atomic_write(weights, lambda tmp: torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp))
    meta = {**meta, "weights_sha256": sha256_of(weights)}
    atomic_write(out_dir / CONFIG_FILE,
                  lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8"))
    export_traced(out_dir)
