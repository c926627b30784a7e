"""The image alignment head: poor alignment from posterior-wall steps measured on the image, trained on phantoms.

The real CervAI geometry carries little alignment signal in its boxes (poor-class F1 about 0.16 in CV) and
the release has no images, so this head learns from phantoms of the real geometries, which draw poor
alignment by its definition: one body displaced 2.8-4.2 mm, a visible listhesis step. Real poor alignment
is rare (17 of 320), so each training geometry with acceptable alignment is rendered once more as a
poor-alignment variant ('{id}~poor', synth/variants.py); the threshold is then tuned for the poor-class F1 at the real
prevalence by weighting, not at the variants' 50 %.
"""
from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import numpy as np

from study.challenge import BOXES_FILE, LABELS_FILE, PatientBoxes, PatientLabels, folder_files, read_box_file, \
    read_labels
from study.levels import ALIGNMENT_SCORED_CLASS, SAGITTAL_SLICES
from study.splits import split_key
from study.study import sagittal_views_of

from .booster import fit_booster
from .card import write_model_card
from .config import FusionConfig
from .cv import roc_auc
from .decision import class_f1
from .features import column_names, feature_rows, to_matrix
from .model import ImageAlignmentHead, load_fusion

PathLike = Union[str, Path]
# Image columns the head needs: without a measured wall step it falls back to the geometry-only model.
REQUIRED = ("image_posterior_step_max",)


def load_sagittal(patient_dir: Path) -> Dict[int, np.ndarray]:
    """The sagittal PNGs (slices 5, 6, 7 where present) of a challenge-layout patient folder, read as `run`
    reads them (study.loader.read_image: grey, [0, 1], 224 x 224); the axial images are not needed here."""
    from study.loader import read_image
    out = {}
    for s in SAGITTAL_SLICES:
        path = patient_dir / "sag" / f"{s}.png"
        if path.is_file():
            out[s], _ = read_image(path, patient=patient_dir.name)
    return out


@dataclasses.dataclass(frozen=True)
class AlignmentTable:
    """Rows of phantom patients: geometry + image columns, poor target, geometry key (for grouped folds)."""

    ids: List[str]
    X: np.ndarray
    poor: np.ndarray
    groups: List[str]
    names: List[str]


# Where the boxes of a phantom table come from: None = the folder's boxes.json (measured on the rendered
# images); else a function (folder, patient ids) -> patient id -> PatientBoxes, e.g. detector_boxes().
BoxSource = Optional[Callable[[Path, Sequence[str]], Mapping[str, PatientBoxes]]]


def detector_boxes(detector_weights: PathLike, batch: int = 16) -> Callable[[Path, Sequence[str]], Dict[str, PatientBoxes]]:
    """A box source that places the levels with the detector, as `run` does (boxes with its 3 px padding)."""
    from detector.predict import Detector
    from study.loader import load_study
    det = Detector.from_weights(detector_weights)

    def boxes(folder: Path, ids: Sequence[str]) -> Dict[str, PatientBoxes]:
        out: Dict[str, PatientBoxes] = {}
        for start in range(0, len(ids), batch):
            studies = [load_study(folder / pid, require_all_axial=False) for pid in ids[start:start + batch]]
            for st, lb in zip(studies, det.predict_batch(studies)):
                out[st.patient_id] = replace(lb.as_patient_boxes(), patient_id=st.patient_id)
        return out
    return boxes


def phantom_table(folders: Sequence[PathLike], exclude: Set[str] = frozenset(),
                  boxes_name: str = BOXES_FILE, only: Optional[Set[str]] = None,
                  box_source: BoxSource = None) -> AlignmentTable:
    """Features of every patient of the phantom folders whose geometry is not in `exclude` (and is in `only`).

    box_source: where the level boxes come from (default: the folder's measured boxes.json).
    """
    ids: List[str] = []
    rows: List[Dict[str, float]] = []
    poor: List[int] = []
    for folder in map(Path, folders):
        own_labels, own_boxes = folder_files(folder)   # labels.json/boxes.json, or the challenge's own names
        boxes_file = folder / boxes_name if boxes_name != BOXES_FILE or own_boxes is None else own_boxes
        labels = {lab.patient_id: lab for lab in read_labels(own_labels or folder / LABELS_FILE)}
        patients = [p for p in read_box_file(boxes_file).patients
                    if p.patient_id in labels and split_key(p.patient_id) not in exclude
                    and (only is None or split_key(p.patient_id) in only) and (folder / p.patient_id).is_dir()]
        if box_source is not None:
            placed = box_source(folder, [p.patient_id for p in patients])
            patients = [placed[p.patient_id] for p in patients]
        images = {p.patient_id: load_sagittal(folder / p.patient_id) for p in patients}
        # As `run` measures a patient with missing sagittal slices: each image present once, read as its view
        # (a lone slice 5 as the mid slice), with its own boxes (reader.core.Reader._assess).
        views = {pid: sagittal_views_of(im) for pid, im in images.items() if im}
        patients = [replace(p, boxes={k: p.boxes[src] for k, src in views[p.patient_id].items()})
                    if len(views[p.patient_id]) < len(SAGITTAL_SLICES) else p
                    for p in patients if p.patient_id in views]
        images = {pid: {k: images[pid][src] for k, src in v.items()} for pid, v in views.items()}
        pids, prow, _ = feature_rows(patients, sagittal=images)
        ids += pids
        rows += prow
        poor += [int(labels[i].alignment == ALIGNMENT_SCORED_CLASS) for i in pids]
    if not rows:
        raise ValueError(f"no usable phantom patients in {', '.join(map(str, folders))}")
    names = column_names(rows)
    return AlignmentTable(ids, to_matrix(rows, names), np.array(poor, int), [split_key(i) for i in ids], names)


def prevalence_weights(poor: np.ndarray, prevalence: float) -> np.ndarray:
    """Row weights under which the poor class has frequency `prevalence` (for tuning and scoring F1)."""
    n_poor, n_ok = int(poor.sum()), int(len(poor) - poor.sum())
    if n_poor == 0 or n_ok == 0:
        return np.ones(len(poor))
    w_poor = prevalence / (1 - prevalence) * n_ok / n_poor
    return np.where(poor == 1, w_poor, 1.0)


def weighted_poor_f1(score: np.ndarray, poor: np.ndarray, threshold: float, weights: np.ndarray) -> float:
    called = score >= threshold
    tp = float(weights[called & (poor == 1)].sum())
    fp = float(weights[called & (poor == 0)].sum())
    fn = float(weights[~called & (poor == 1)].sum())
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0


def tune_threshold(score: np.ndarray, poor: np.ndarray, weights: np.ndarray) -> float:
    """Threshold maximising the weighted poor-class F1; midway between neighbouring scores."""
    s = np.unique(score)
    cands = np.concatenate([[s[0] - 1e-9], (s[:-1] + s[1:]) / 2]) if len(s) > 1 else s
    f = [weighted_poor_f1(score, poor, t, weights) for t in cands]
    return float(cands[int(np.argmax(f))])


def _grouped_folds(poor: np.ndarray, groups: Sequence[str], k: int, seed: int):
    from sklearn.model_selection import StratifiedGroupKFold
    k = max(2, min(k, len(set(groups))))
    return list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(poor)), poor, groups))


def fit_head(table: AlignmentTable, cfg: FusionConfig, prevalence: float, seed: Optional[int] = None,
             rows: Optional[np.ndarray] = None) -> ImageAlignmentHead:
    """Booster on the rows (all by default); threshold from inner grouped out-of-fold scores of those rows only."""
    seed = cfg.seed if seed is None else seed
    idx = np.arange(len(table.ids)) if rows is None else np.asarray(rows)
    X, y, groups = table.X[idx], table.poor[idx], [table.groups[i] for i in idx]
    oof = np.zeros(len(y))
    for tr, te in _grouped_folds(y, groups, cfg.inner_folds, seed + 3000):
        oof[te] = fit_booster(X[tr], y[tr], table.names, cfg, "binary", seed).predict(X[te])
    threshold = tune_threshold(oof, y, prevalence_weights(y, prevalence))
    booster = fit_booster(X, y, table.names, cfg, "binary", seed)
    required = [n for n in REQUIRED if n in table.names]
    return ImageAlignmentHead(list(table.names), booster, threshold, required)


def cross_validate_head(table: AlignmentTable, cfg: FusionConfig, prevalence: float,
                        repeats: int = 3) -> Dict[str, object]:
    """Repeated grouped stratified CV (all renders of a geometry in one fold), nested threshold tuning.

    Poor-class F1 is reported weighted to the real prevalence (what a clinic with that prevalence would
    see) and unweighted (the phantom mix); AUC does not depend on prevalence.
    """
    f_w, f_raw, aucs = [], [], []
    for r in range(repeats):
        seed = cfg.seed + r
        score, called = np.zeros(len(table.poor)), np.zeros(len(table.poor), bool)
        for tr, te in _grouped_folds(table.poor, table.groups, cfg.cv_folds, seed):
            head = fit_head(table, cfg, prevalence, seed, rows=tr)
            score[te] = head.score(table.X[te])
            called[te] = score[te] >= head.threshold
        w = prevalence_weights(table.poor, prevalence)
        f_w.append(weighted_poor_f1(called.astype(float), table.poor, 0.5, w))
        f_raw.append(class_f1(1 - table.poor, np.where(called, 0, 1), 0))
        aucs.append(roc_auc(table.poor, score))
    ms = lambda v: {"mean": round(float(np.mean(v)), 4), "sd": round(float(np.std(v, ddof=1)), 4) if len(v) > 1
                    else 0.0, "per_repeat": [round(float(x), 4) for x in v]}
    return {"n_rows": len(table.ids), "n_geometries": len(set(table.groups)), "n_poor": int(table.poor.sum()),
            "n_folds": cfg.cv_folds, "n_repeats": repeats, "prevalence": prevalence,
            "poor_f1_at_prevalence": ms(f_w), "poor_f1_phantom_mix": ms(f_raw), "auc": ms(aucs)}


def _finite_or_none(v: float):
    return round(float(v), 4) if np.isfinite(v) else None  # AUC needs both classes


def evaluate_head(head: ImageAlignmentHead, table: AlignmentTable, prevalence: Optional[float] = None
                  ) -> Dict[str, object]:
    """Poor-class F1 (as is, and weighted to `prevalence` when given) and AUC of a fitted head on a table."""
    X = to_matrix([dict(zip(table.names, row)) for row in table.X], head.feature_names)
    score = head.score(X)
    called = score >= head.threshold
    out: Dict[str, object] = {"n": len(table.ids), "n_poor": int(table.poor.sum()),
                              "poor_f1": round(class_f1(1 - table.poor, np.where(called, 0, 1), 0), 4),
                              "auc": _finite_or_none(roc_auc(table.poor, score)),
                              "called_poor": int(called.sum()),
                              "true_poor_called": int((called & (table.poor == 1)).sum())}
    if prevalence is not None:
        out["poor_f1_at_prevalence"] = round(weighted_poor_f1(called.astype(float), table.poor, 0.5,
                                                              prevalence_weights(table.poor, prevalence)), 4)
    return out


def train_image_alignment(weights_dir: PathLike, folders: Sequence[PathLike], cfg: Optional[FusionConfig] = None,
                          exclude: Set[str] = frozenset(), prevalence: Optional[float] = None,
                          repeats: int = 3, data_name: str = "",
                          eval_folders: Optional[Mapping[str, Sequence[PathLike]]] = None,
                          detector_weights: Optional[PathLike] = None) -> Dict[str, object]:
    """Fit the head on the phantom folders, attach it to the fusion model in weights_dir and save.

    prevalence defaults to the poor frequency the fusion model was trained on (the real labels).
    detector_weights: place the levels with this detector for training and scoring, as `run` will (its
    boxes are smoother than the measured ones, and a head trained on measured boxes misses steps on
    them); default: the folders' measured boxes.json.
    eval_folders: name -> folders scored with the final head (never trained on).
    With `exclude`, the final head is also scored on the excluded geometries' renders in `folders`: once
    with their real labels only (the real prevalence) and once with their label variants too.
    """
    cfg = cfg or FusionConfig()
    eval_folders = eval_folders or {}
    model = load_fusion(weights_dir)
    if prevalence is None:
        counts = model.meta.get("alignment_counts") or [1, 19]
        prevalence = counts[ALIGNMENT_SCORED_CLASS] / float(sum(counts))
    source = detector_boxes(detector_weights) if detector_weights else None
    boxes_desc = (f"placed by the detector in {detector_weights}" if detector_weights
                  else "the phantoms' measured boxes (boxes.json)")
    table = phantom_table(folders, exclude, box_source=source)
    cv = cross_validate_head(table, cfg, prevalence, repeats) if repeats > 0 else None
    head = fit_head(table, cfg, prevalence)
    evaluations = {}
    for name, fs in eval_folders.items():
        evaluations[name] = evaluate_head(head, phantom_table(fs, box_source=source), prevalence)
    if exclude:
        held = phantom_table(folders, only=set(exclude), box_source=source)
        real = [k for k, i in enumerate(held.ids) if i == split_key(i)]
        if real:
            own = AlignmentTable([held.ids[k] for k in real], held.X[real], held.poor[real],
                                 [held.groups[k] for k in real], held.names)
            evaluations["evaluation hold-out, real labels (never trained on)"] = evaluate_head(head, own)
        evaluations["evaluation hold-out with its poor-alignment variants (never trained on)"] = \
            evaluate_head(head, held, prevalence)
    head.meta = {"data": data_name or ", ".join(map(str, folders)), "n_rows": len(table.ids),
                 "n_geometries": len(set(table.groups)), "n_poor": int(table.poor.sum()),
                 "excluded_geometries": len(exclude), "prevalence": round(prevalence, 5), "cv": cv,
                 "boxes": boxes_desc,
                 "evaluations": evaluations}
    model.image_alignment = head
    model.save(weights_dir)
    meta = load_fusion(weights_dir).meta
    write_model_card(Path(weights_dir), meta)
    return meta["image_alignment"]

