"""LightGBM curvature and alignment models on curve features: fit, nested cross-validation, save and load."""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from study.challenge import PatientBoxes, PatientLabels, atomic_write, write_json_atomic
from study.errors import InputError
from study.levels import (
    ALIGNMENT_CLASSES, ALIGNMENT_SCORED_CLASS, CANAL_GRADES, CANAL_POSITIONS, CURVATURE_CLASSES, DISC_GRADES,
    DISCS,
)
from release.manifest import sha256_of

from .geometry import CHALLENGE_PADDING_PX, CURVATURE_INDEX, canonical_boxes, curve_features


def _import_lightgbm():
    """lightgbm, imported without its optional scikit-learn wrappers unless scikit-learn is loaded already.

    On import lightgbm loads scikit-learn (and scipy.stats through it) for its LGBMClassifier API, which
    nothing here uses (only Booster and train): 2.1 of the 2.7 s that importing lightgbm took on the 2-core
    CPU, paid by every `run`. Marking the module absent while lightgbm imports makes it skip that API; code
    that needs scikit-learn itself (the cross-validation folds) imports it later as usual.
    """
    import sys
    if "lightgbm" in sys.modules or "sklearn" in sys.modules:
        import lightgbm
        return lightgbm
    sys.modules["sklearn"] = None  # type: ignore[assignment]  # `import sklearn` now raises ImportError
    try:
        import lightgbm
    finally:
        del sys.modules["sklearn"]
    return lightgbm


lgb = _import_lightgbm()

PathLike = Union[str, Path]
FORMAT_VERSION = 1
CURVATURE_FILE, ALIGNMENT_FILE, META_FILE = "curvature.lgb.txt", "alignment.lgb.txt", "fusion.json"
IMAGE_ALIGNMENT_FILE = "alignment_image.lgb.txt"
# fusion.json's block of the training labels' class counts: what a patient whose curve cannot be read submits.
LABEL_PRIOR_KEY = "label_prior"
# Where a patient's alignment call came from (reports name it).
ALIGNMENT_FROM_GEOMETRY = "geometry (boxes only; trained on real geometry)"
ALIGNMENT_FROM_IMAGE = "image + geometry (posterior-wall steps measured on sagittal slices 5-7; trained on phantoms)"


@dataclass(frozen=True)
class FusionConfig:
    """Every setting of the fusion stage, defaults in one place; from_dict rejects unknown keys."""

    n_estimators: int = 200
    learning_rate: float = 0.03
    num_leaves: int = 4
    min_child_samples: int = 10
    subsample: float = 0.8
    colsample_bytree: float = 0.5
    reg_lambda: float = 2.0
    seed: int = 0
    # Inner stratified folds whose out-of-fold scores tune the class priors / alignment threshold.
    inner_folds: int = 4
    cv_folds: int = 5
    cv_repeats: int = 5
    n_jobs: int = 1

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> "FusionConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown fusion setting(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    def lgb_params(self, objective: str, seed: int) -> Dict[str, object]:
        p: Dict[str, object] = dict(
            objective=objective, learning_rate=self.learning_rate, num_leaves=self.num_leaves,
            min_data_in_leaf=self.min_child_samples, bagging_fraction=self.subsample, bagging_freq=1,
            feature_fraction=self.colsample_bytree, lambda_l2=self.reg_lambda, seed=seed,
            num_threads=self.n_jobs, deterministic=True, force_row_wise=True, verbosity=-1,
        )
        if objective == "multiclass":
            p["num_class"] = len(CURVATURE_CLASSES)
        return p


@dataclass(frozen=True)
class CurveAssessment:
    """Stage-3 result for one patient: measured curve values and the curvature/alignment calls."""

    patient_id: str
    features: Mapping[str, float]
    curvature: int                        # index into CURVATURE_CLASSES
    curvature_probs: Tuple[float, ...]    # prior-adjusted, sums to 1; argmax is `curvature`
    alignment: int                        # index into ALIGNMENT_CLASSES
    alignment_probs: Tuple[float, ...]    # model scores (class-balanced training), sums to 1
    warnings: Tuple[str, ...] = ()
    alignment_source: str = ALIGNMENT_FROM_GEOMETRY
    # Non-empty when curvature and alignment were not assessed (why): a vertebra outside the field of view
    # leaves no whole C2-C7 curve. The classes are then the training labels' most frequent ones (predictions.json
    # needs integers; submitted_note says so), their probabilities the label frequencies, features empty.
    not_assessed: str = ""
    submitted_note: str = ""

    @property
    def curvature_name(self) -> str:
        return CURVATURE_CLASSES[self.curvature]

    @property
    def alignment_name(self) -> str:
        return ALIGNMENT_CLASSES[self.alignment]


def level_features(disc_probs: Optional[np.ndarray] = None,
                   canal_probs: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Optional stage-2 columns: expected disc grade per disc and canal grade per position (NaN if absent).

    disc_probs is (len(DISCS), len(DISC_GRADES)), canal_probs (len(CANAL_POSITIONS), len(CANAL_GRADES)).
    """
    out: Dict[str, float] = {}
    for name, probs, levels, grades in (("disc", disc_probs, DISCS, DISC_GRADES),
                                        ("canal", canal_probs, CANAL_POSITIONS, CANAL_GRADES)):
        if probs is None:
            expected = [math.nan] * len(levels)
        else:
            p = np.asarray(probs, float)
            if p.shape != (len(levels), len(grades)):
                raise ValueError(f"{name} probabilities must have shape {(len(levels), len(grades))}, got {p.shape}")
            expected = list(p @ np.arange(len(grades)))
        for lv, e in zip(levels, expected):
            out[f"{name}_grade_expected_{lv}"] = float(e)
    return out


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------

def feature_rows(patients: Sequence[PatientBoxes], padding_px: float = CHALLENGE_PADDING_PX,
                 extra: Optional[Mapping[str, Mapping[str, float]]] = None
                 ) -> Tuple[List[str], List[Dict[str, float]], Dict[str, str]]:
    """Feature dicts of the patients whose boxes are usable, plus patient id -> error for the rest."""
    ids: List[str] = []
    rows: List[Dict[str, float]] = []
    errors: Dict[str, str] = {}
    for p in patients:
        try:
            row = dict(curve_features(p.boxes, padding_px=padding_px))
        except InputError as e:
            errors[p.patient_id] = e.problem
            continue
        if extra is not None and p.patient_id in extra:
            row.update(extra[p.patient_id])
        ids.append(p.patient_id)
        rows.append(row)
    return ids, rows, errors


def to_matrix(rows: Sequence[Mapping[str, float]], names: Sequence[str]) -> np.ndarray:
    """Rows -> float matrix in `names` order; a column a row lacks is NaN (LightGBM treats it as missing)."""
    return np.array([[float(r.get(n, math.nan)) for n in names] for r in rows], dtype=float).reshape(len(rows),
                                                                                                      len(names))


def training_table(ids: Sequence[str], rows: Sequence[Mapping[str, float]],
                   labels: Mapping[str, PatientLabels]) -> Tuple[np.ndarray, np.ndarray, np.ndarray, List[str]]:
    """Feature matrix (columns: every name any row has, first-seen order), curvature and alignment targets."""
    names = list(rows[0].keys())
    for r in rows[1:]:
        names.extend(k for k in r if k not in names)
    yc = np.array([labels[i].curvature for i in ids])
    ya = np.array([labels[i].alignment for i in ids])
    return to_matrix(rows, names), yc, ya, names


def _balanced_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    counts = np.bincount(y, minlength=n_classes).astype(float)
    per_class = np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 0.0)
    return per_class[y]


def _stratified_folds(y: np.ndarray, k: int, seed: int) -> List[Tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold
    # never more folds than the rarest class has members (tiny training sets in tests)
    k = max(2, min(k, min(int(c) for c in np.bincount(y) if c > 0)))
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


# ----------------------------------------------------------------------------------------------
# Decision rules tuned on out-of-fold scores
# ----------------------------------------------------------------------------------------------

def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    f = []
    for c in range(n_classes):
        tp = np.sum((pred == c) & (y == c))
        denom = np.sum(pred == c) + np.sum(y == c)
        f.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(f))


def class_f1(y: np.ndarray, pred: np.ndarray, c: int) -> float:
    tp = np.sum((pred == c) & (y == c))
    denom = np.sum(pred == c) + np.sum(y == c)
    return float(2 * tp / denom) if denom else 0.0


# Prior multipliers searched for curvature: a log-spaced grid, class 0 fixed at 1.
_PRIOR_GRID = np.exp(np.linspace(-1.2, 1.2, 25))


def tune_curvature_priors(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Class multipliers w maximising macro-F1 of argmax(probs * w); ties go to the w nearest 1."""
    best, best_w = -1.0, np.ones(probs.shape[1])
    for a in _PRIOR_GRID:
        for b in _PRIOR_GRID:
            w = np.array([1.0, a, b])
            f = macro_f1(y, np.argmax(probs * w, axis=1), probs.shape[1])
            closeness = -abs(math.log(a)) - abs(math.log(b))
            if f > best + 1e-12 or (abs(f - best) <= 1e-12 and closeness > -np.abs(np.log(best_w[1:])).sum()):
                best, best_w = f, w
    return best_w


def tune_alignment_threshold(score_poor: np.ndarray, y: np.ndarray) -> float:
    """Threshold on the 'poor' score maximising F1 of the poor class; midway between neighbouring scores."""
    is_poor = (y == ALIGNMENT_SCORED_CLASS)
    s = np.unique(score_poor)
    cands = np.concatenate([[s[0] - 1e-9], (s[:-1] + s[1:]) / 2]) if len(s) > 1 else s
    best, best_t = -1.0, 0.5
    for t in cands:
        pred_poor = score_poor >= t
        tp = np.sum(pred_poor & is_poor)
        denom = pred_poor.sum() + is_poor.sum()
        f = 2 * tp / denom if denom else 0.0
        if f > best:
            best, best_t = f, float(t)
    return best_t


# Cut-points on the curvature index (fusion.geometry.CURVATURE_INDEX): the phantom's curvature definition
# (synth.statistical_model) and the cut-point baseline the fusion card reports beside the boosters.
_CUT_GRID = np.arange(-10.0, 30.0, 0.25)


def fit_index_cuts(index: np.ndarray, curvature: np.ndarray) -> Tuple[Tuple[float, float], float]:
    """Two cut-points (lo, hi) on the curvature index maximising macro-F1, and that macro-F1.

    kyphotic: index < lo; straightened: lo <= index < hi; normal: index >= hi. A 0.25 grid from -10 to 30;
    of equal scores the first found (lowest lo, then lowest hi) wins.
    """
    index, curvature = np.asarray(index, float), np.asarray(curvature, int)
    best, cuts = -1.0, (0.0, 15.0)
    for lo in _CUT_GRID:
        for hi in _CUT_GRID[_CUT_GRID > lo]:
            f = macro_f1(curvature, apply_index_cuts(index, (lo, hi)), len(CURVATURE_CLASSES))
            if f > best + 1e-12:
                best, cuts = f, (float(lo), float(hi))
    return cuts, best


def apply_index_cuts(index: np.ndarray, cuts: Tuple[float, float]) -> np.ndarray:
    """Curvature class (0 normal, 1 straightened, 2 kyphotic) of each index value under two cut-points."""
    index = np.asarray(index, float)
    lo, hi = cuts
    return np.where(index >= hi, 0, np.where(index >= lo, 1, 2))


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------

@dataclass
class ImageAlignmentHead:
    """Poor-alignment booster on geometry plus image columns, with its threshold; used when the image columns exist.

    The CervAI release has no images, so this head learns from phantoms, which draw poor alignment as a
    listhesis step; its threshold is tuned for the poor-class F1 at `prevalence` (the real frequency).
    """

    feature_names: List[str]
    booster: lgb.Booster
    threshold: float
    required: List[str]                   # columns that must be finite for the head to apply
    meta: Dict[str, object] = field(default_factory=dict)

    def applies(self, features: Mapping[str, float]) -> bool:
        return all(math.isfinite(float(features.get(n, math.nan))) for n in self.required)

    def score(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, float).reshape(-1, len(self.feature_names))
        return np.asarray(self.booster.predict(X)).reshape(len(X))


@dataclass
class FusionModel:
    """Two boosters on named columns plus the decision rules tuned on their out-of-fold scores."""

    feature_names: List[str]
    curvature_booster: lgb.Booster
    alignment_booster: lgb.Booster
    curvature_priors: np.ndarray          # multipliers on the curvature probabilities
    alignment_threshold: float            # call "poor" when its score >= this
    padding_px: float = CHALLENGE_PADDING_PX
    meta: Dict[str, object] = field(default_factory=dict)
    image_alignment: Optional[ImageAlignmentHead] = None

    def scores(self, X: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(curvature probabilities (n, 3) before priors, poor-alignment score (n,))."""
        X = np.asarray(X, float).reshape(-1, len(self.feature_names))
        pc = np.asarray(self.curvature_booster.predict(X)).reshape(len(X), len(CURVATURE_CLASSES))
        pa = np.asarray(self.alignment_booster.predict(X)).reshape(len(X))
        # the alignment booster's target is "is poor", so its output is the poor score
        return pc, pa

    def decide(self, X: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(curvature, adjusted curvature probs, alignment, alignment probs) for a feature matrix."""
        pc, pa = self.scores(X)
        adj = pc * self.curvature_priors
        adj = adj / adj.sum(axis=1, keepdims=True)
        curv = np.argmax(adj, axis=1)
        poor = pa >= self.alignment_threshold
        acceptable = 1 - ALIGNMENT_SCORED_CLASS
        align = np.where(poor, ALIGNMENT_SCORED_CLASS, acceptable)
        aprobs = np.zeros((len(pa), len(ALIGNMENT_CLASSES)))
        aprobs[:, ALIGNMENT_SCORED_CLASS] = pa
        aprobs[:, acceptable] = 1 - pa
        return curv, adj, align, aprobs

    def assess(self, patient_id: str, features: Mapping[str, float],
               warnings: Sequence[str] = ()) -> CurveAssessment:
        curv, adj, align, aprobs = self.decide(to_matrix([features], self.feature_names))
        alignment, alignment_probs, source = int(align[0]), tuple(float(v) for v in aprobs[0]), ALIGNMENT_FROM_GEOMETRY
        head = self.image_alignment
        if head is not None and head.applies(features):
            poor = float(head.score(to_matrix([features], head.feature_names))[0])
            acceptable = 1 - ALIGNMENT_SCORED_CLASS
            alignment = ALIGNMENT_SCORED_CLASS if poor >= head.threshold else acceptable
            probs = [0.0] * len(ALIGNMENT_CLASSES)
            probs[ALIGNMENT_SCORED_CLASS], probs[acceptable] = poor, 1.0 - poor
            alignment_probs, source = tuple(probs), ALIGNMENT_FROM_IMAGE
        return CurveAssessment(patient_id, dict(features), int(curv[0]), tuple(float(v) for v in adj[0]),
                               alignment, alignment_probs, tuple(warnings), source)

    def label_frequencies(self) -> Tuple[np.ndarray, np.ndarray, str]:
        """(curvature, alignment) class frequencies of the training labels (fusion.json label_prior), and a
        note on where they come from. Weights without the block give class 0 ... with a note saying so."""
        block = self.meta.get(LABEL_PRIOR_KEY)
        if not isinstance(block, Mapping):
            return (np.eye(len(CURVATURE_CLASSES))[0], np.eye(len(ALIGNMENT_CLASSES))[0],
                    f"predictions.json needs an integer; these weights carry no label prior ({META_FILE} "
                    f"{LABEL_PRIOR_KEY}), so class 0 was written")
        curv = np.asarray(block["curvature_counts"], float)
        align = np.asarray(block["alignment_counts"], float)
        return (curv / curv.sum(), align / align.sum(),
                "predictions.json needs an integer: the most frequent class among the fusion stage's training "
                f"labels ({int(block.get('n_patients', 0))} patients; {META_FILE} {LABEL_PRIOR_KEY})")

    def prior_assessment(self, patient_id: str, reason: str, warnings: Sequence[str] = ()) -> CurveAssessment:
        """The assessment of a patient whose curve cannot be read: the training prior, marked not assessed."""
        curv, align, note = self.label_frequencies()
        return CurveAssessment(patient_id, {}, int(np.argmax(curv)), tuple(float(v) for v in curv),
                               int(np.argmax(align)), tuple(float(v) for v in align), tuple(warnings),
                               ALIGNMENT_FROM_GEOMETRY, reason, note)

    def save(self, out_dir: PathLike) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        boosters = [(CURVATURE_FILE, self.curvature_booster), (ALIGNMENT_FILE, self.alignment_booster)]
        if self.image_alignment is not None:
            boosters.append((IMAGE_ALIGNMENT_FILE, self.image_alignment.booster))
        elif (out / IMAGE_ALIGNMENT_FILE).exists():
            (out / IMAGE_ALIGNMENT_FILE).unlink()  # a stale head must not be shipped beside a model without it
        for name, booster in boosters:
            atomic_write(out / name, lambda tmp, b=booster: Path(tmp).write_text(b.model_to_string(), encoding="utf-8"))
        meta = dict(self.meta)
        meta.pop("image_alignment", None)
        if self.image_alignment is not None:
            head = self.image_alignment
            meta["image_alignment"] = {**head.meta, "feature_names": list(head.feature_names),
                                       "required": list(head.required), "threshold": float(head.threshold)}
        meta.update({
            "format_version": FORMAT_VERSION,
            "feature_names": list(self.feature_names),
            "curvature_classes": list(CURVATURE_CLASSES),
            "alignment_classes": list(ALIGNMENT_CLASSES),
            "curvature_priors": [float(v) for v in self.curvature_priors],
            "alignment_threshold": float(self.alignment_threshold),
            "box_padding_px": float(self.padding_px),
            "files": {n: sha256_of(out / n) for n, _ in boosters},
        })
        write_json_atomic(out / META_FILE, meta)


def load_fusion(weights_dir: PathLike) -> FusionModel:
    """Load a fusion model saved by FusionModel.save / train_fusion; checks version, classes and checksums."""
    d = Path(weights_dir)
    meta_path = d / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"no fusion model in {d} (missing {META_FILE})")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{meta_path}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    if meta.get("curvature_classes") != list(CURVATURE_CLASSES) or \
            meta.get("alignment_classes") != list(ALIGNMENT_CLASSES):
        raise ValueError(f"{meta_path}: class lists differ from study.levels")
    for name, digest in meta.get("files", {}).items():
        if sha256_of(d / name) != digest:
            raise ValueError(f"{d / name}: sha256 does not match {META_FILE}")
    curv = lgb.Booster(model_str=(d / CURVATURE_FILE).read_text(encoding="utf-8"))
    align = lgb.Booster(model_str=(d / ALIGNMENT_FILE).read_text(encoding="utf-8"))
    names = list(meta["feature_names"])
    for b in (curv, align):
        if b.feature_name() != names:
            raise ValueError(f"{d}: booster feature names differ from {META_FILE}")
    head = None
    if "image_alignment" in meta:
        hm = dict(meta["image_alignment"])
        if IMAGE_ALIGNMENT_FILE not in meta.get("files", {}):
            raise ValueError(f"{meta_path}: image_alignment head without a checksum for {IMAGE_ALIGNMENT_FILE}")
        booster = lgb.Booster(model_str=(d / IMAGE_ALIGNMENT_FILE).read_text(encoding="utf-8"))
        head_names = list(hm.pop("feature_names"))
        if booster.feature_name() != head_names:
            raise ValueError(f"{d}: {IMAGE_ALIGNMENT_FILE} feature names differ from {META_FILE}")
        head = ImageAlignmentHead(head_names, booster, float(hm.pop("threshold")), list(hm.pop("required")), hm)
    return FusionModel(names, curv, align, np.array(meta["curvature_priors"], float),
                       float(meta["alignment_threshold"]), float(meta.get("box_padding_px", CHALLENGE_PADDING_PX)),
                       meta, head)


def default_weights_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "weights" / "fusion"


# ----------------------------------------------------------------------------------------------
# Fitting
# ----------------------------------------------------------------------------------------------

def _fit_booster(X: np.ndarray, y: np.ndarray, names: Sequence[str], cfg: FusionConfig, objective: str,
                 seed: int) -> lgb.Booster:
    n_classes = len(CURVATURE_CLASSES) if objective == "multiclass" else 2
    data = lgb.Dataset(X, label=y, weight=_balanced_weights(y, n_classes), feature_name=list(names),
                       free_raw_data=True, params={"verbosity": -1})
    return lgb.train(cfg.lgb_params(objective, seed), data, num_boost_round=cfg.n_estimators)


def _poor_target(alignment: np.ndarray) -> np.ndarray:
    return (alignment == ALIGNMENT_SCORED_CLASS).astype(int)


def fit_fusion(X: np.ndarray, curvature: np.ndarray, alignment: np.ndarray, names: Sequence[str],
               cfg: FusionConfig = FusionConfig(), seed: Optional[int] = None) -> FusionModel:
    """Fit both boosters on all rows; priors/threshold come from inner out-of-fold scores of these rows only."""
    seed = cfg.seed if seed is None else seed
    X = np.asarray(X, float)
    yc = np.asarray(curvature, int)
    ya = _poor_target(np.asarray(alignment, int))
    oof_c = np.zeros((len(yc), len(CURVATURE_CLASSES)))
    for tr, te in _stratified_folds(yc, cfg.inner_folds, seed + 1000):
        oof_c[te] = _fit_booster(X[tr], yc[tr], names, cfg, "multiclass", seed).predict(X[te])
    oof_a = np.zeros(len(ya))
    if ya.sum() >= 2:
        for tr, te in _stratified_folds(ya, cfg.inner_folds, seed + 2000):
            oof_a[te] = _fit_booster(X[tr], ya[tr], names, cfg, "binary", seed).predict(X[te])
        threshold = tune_alignment_threshold(oof_a, np.where(ya == 1, ALIGNMENT_SCORED_CLASS,
                                                             1 - ALIGNMENT_SCORED_CLASS))
    else:
        threshold = 0.5
    priors = tune_curvature_priors(oof_c, yc)
    return FusionModel(list(names), _fit_booster(X, yc, names, cfg, "multiclass", seed),
                       _fit_booster(X, ya, names, cfg, "binary", seed), priors, threshold)


@dataclass(frozen=True)
class CVResult:
    """Repeated stratified CV figures: one value per repeat (all patients predicted once per repeat)."""

    curvature_macro_f1: Tuple[float, ...]
    curvature_macro_f1_untuned: Tuple[float, ...]   # plain argmax, no prior tuning
    curvature_cut_rule_macro_f1: Tuple[float, ...]   # baseline: two index cut-points fitted on each training part
    #                                                   (empty when the table has no curvature index column)
    alignment_poor_f1: Tuple[float, ...]
    alignment_poor_f1_fold_sd: Tuple[float, ...]     # spread over the folds inside each repeat
    alignment_auc: Tuple[float, ...]
    curvature_confusion: Tuple[Tuple[int, ...], ...]  # summed over repeats, rows = truth
    n_patients: int
    n_folds: int

    @staticmethod
    def _ms(v: Sequence[float]) -> Tuple[float, float]:
        a = np.asarray(v, float)
        return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0

    def summary(self) -> Dict[str, object]:
        out: Dict[str, object] = {"n_patients": self.n_patients, "n_folds": self.n_folds,
                                  "n_repeats": len(self.curvature_macro_f1)}
        for name in ("curvature_macro_f1", "curvature_macro_f1_untuned", "curvature_cut_rule_macro_f1",
                     "alignment_poor_f1", "alignment_auc"):
            if not getattr(self, name):  # the cut-point baseline of a table without the index column
                continue
            m, s = self._ms(getattr(self, name))
            out[name] = {"mean": round(m, 4), "sd": round(s, 4),
                         "per_repeat": [round(float(v), 4) for v in getattr(self, name)]}
        out["alignment_poor_f1_fold_sd_mean"] = round(float(np.mean(self.alignment_poor_f1_fold_sd)), 4)
        out["curvature_confusion"] = [list(r) for r in self.curvature_confusion]
        return out


def _auc(y01: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y01 == 1], s[y01 == 0]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    gt = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(gt / (len(pos) * len(neg)))


def cross_validate(X: np.ndarray, curvature: np.ndarray, alignment: np.ndarray, names: Sequence[str],
                   cfg: FusionConfig = FusionConfig(), X_eval: Optional[np.ndarray] = None) -> CVResult:
    """Repeated stratified K-fold; each outer training part tunes its own priors/threshold (nested).

    X_eval (same rows and columns as X) replaces X on the held-out folds only: training on one box
    source and testing on another (e.g. detector-like boxes) with the very same folds and seeds.
    """
    X = np.asarray(X, float)
    X_eval = X if X_eval is None else np.asarray(X_eval, float)
    yc, ya = np.asarray(curvature, int), np.asarray(alignment, int)
    # stratify on both labels so every fold holds some of the rare poor-alignment patients
    strata = yc * len(ALIGNMENT_CLASSES) + ya
    # the cut-point baseline needs the curvature index column (absent in hand-made tables: no figures)
    ci = list(names).index(CURVATURE_INDEX) if CURVATURE_INDEX in names else None
    cf, cfu, ccut, af, afs, auc = [], [], [], [], [], []
    conf = np.zeros((len(CURVATURE_CLASSES),) * 2, int)
    for r in range(cfg.cv_repeats):
        seed = cfg.seed + r
        pc = np.zeros(len(yc), int)
        pcu = np.zeros(len(yc), int)
        pcut = np.zeros(len(yc), int)
        pa = np.zeros(len(ya), int)
        sa = np.zeros(len(ya))
        fold_f = []
        for tr, te in _stratified_folds(_merge_rare(strata), cfg.cv_folds, seed):
            m = fit_fusion(X[tr], yc[tr], ya[tr], names, cfg, seed)
            curv, _, align, aprobs = m.decide(X_eval[te])
            pc[te], pa[te] = curv, align
            pcu[te] = np.argmax(m.scores(X_eval[te])[0], axis=1)
            if ci is not None:
                pcut[te] = apply_index_cuts(X_eval[te, ci], fit_index_cuts(X[tr, ci], yc[tr])[0])
            sa[te] = aprobs[:, ALIGNMENT_SCORED_CLASS]
            fold_f.append(class_f1(ya[te], align, ALIGNMENT_SCORED_CLASS))
        cf.append(macro_f1(yc, pc, len(CURVATURE_CLASSES)))
        cfu.append(macro_f1(yc, pcu, len(CURVATURE_CLASSES)))
        if ci is not None:
            ccut.append(macro_f1(yc, pcut, len(CURVATURE_CLASSES)))
        af.append(class_f1(ya, pa, ALIGNMENT_SCORED_CLASS))
        afs.append(float(np.std(fold_f, ddof=1)))
        auc.append(_auc(_poor_target(ya), sa))
        for t, p in zip(yc, pc):
            conf[t, p] += 1
    return CVResult(tuple(cf), tuple(cfu), tuple(ccut), tuple(af), tuple(afs), tuple(auc),
                    tuple(tuple(int(v) for v in row) for row in conf), len(yc), cfg.cv_folds)


def _merge_rare(strata: np.ndarray, min_count: int = 5) -> np.ndarray:
    """Fold strata with too few members into the largest stratum of the same curvature."""
    s = strata.copy()
    values, counts = np.unique(s, return_counts=True)
    for v, c in zip(values, counts):
        if c < min_count:
            s[s == v] = -1
    return np.unique(s, return_inverse=True)[1]


# ----------------------------------------------------------------------------------------------
# Entry points used by the pipeline
# ----------------------------------------------------------------------------------------------

def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                              capture_output=True, text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def train_fusion(boxes_file: PathLike, labels_file: PathLike, out_dir: PathLike,
                 cfg: FusionConfig = FusionConfig(), run_cv: bool = True, data_name: str = "",
                 extra_features: Optional[Mapping[str, Mapping[str, float]]] = None,
                 padding_px: float = CHALLENGE_PADDING_PX, box_check: bool = False,
                 notes: Sequence[str] = (), exclude: Sequence[str] = (), command: str = "") -> Dict[str, object]:
    """Train on every usable patient of a box + label file; write weights, fusion.json and MODEL_CARD.md.

    extra_features (patient id -> columns, e.g. image_features or level_features) join the geometry
    columns; patients without them get NaN there. box_check adds the paired CV of simulated detector
    box sources (fusion.box_check) to the card; notes are extra lines for it. Patients in `exclude`
    (e.g. the evaluation hold-out of study.splits) are left out of training and CV.
    Returns the metadata written to fusion.json.
    """
    from study.challenge import read_box_file, read_labels
    from .card import write_model_card

    contents = read_box_file(boxes_file)
    labels = {lab.patient_id: lab for lab in read_labels(labels_file)}
    excluded = set(exclude)
    patients = [p for p in contents.patients if p.patient_id in labels and p.patient_id not in excluded]
    ids, rows, errors = feature_rows(patients, padding_px, extra_features)
    for e in contents.errors:
        errors[e.patient or "?"] = e.problem
    X, yc, ya, names = training_table(ids, rows, labels)
    cv = cross_validate(X, yc, ya, names, cfg).summary() if run_cv else None
    model = fit_fusion(X, yc, ya, names, cfg)
    model.padding_px = padding_px
    model.meta = {
        "data": data_name or str(boxes_file),
        "boxes_sha256": sha256_of(Path(boxes_file)),
        "labels_sha256": sha256_of(Path(labels_file)),
        "n_patients": len(ids),
        "curvature_counts": [int(v) for v in np.bincount(yc, minlength=len(CURVATURE_CLASSES))],
        "alignment_counts": [int(v) for v in np.bincount(ya, minlength=len(ALIGNMENT_CLASSES))],
        LABEL_PRIOR_KEY: label_prior_block(yc, ya, f"class counts of the {len(ids)} training labels "
                                                   f"({data_name or Path(labels_file).name})"),
        "skipped_patients": errors,
        "excluded_patients": len(excluded & set(labels)),
        "config": dataclasses.asdict(cfg),
        "lightgbm_version": lgb.__version__,
        "git_commit": _git_commit(),
        "cv": cv,
    }
    if box_check:
        from .box_check import padding_check
        model.meta["box_sources"] = [dataclasses.asdict(r) for r in padding_check(
            patients, {i: labels[i].curvature for i in labels}, {i: labels[i].alignment for i in labels}, cfg)]
    if notes:
        model.meta["notes"] = list(notes)
    if command:
        model.meta["command"] = command
    model.save(out_dir)
    # the card is written from what was saved, so it shows the shipped priors and threshold
    meta = load_fusion(out_dir).meta
    write_model_card(Path(out_dir), meta)
    return meta


def label_prior_block(curvature: Sequence[int], alignment: Sequence[int], source: str) -> Dict[str, object]:
    """fusion.json's label_prior: the class counts of the curvature and alignment labels trained on."""
    return {"source": source, "n_patients": int(len(curvature)),
            "curvature_counts": [int(v) for v in np.bincount(np.asarray(curvature, int),
                                                             minlength=len(CURVATURE_CLASSES))],
            "alignment_counts": [int(v) for v in np.bincount(np.asarray(alignment, int),
                                                             minlength=len(ALIGNMENT_CLASSES))]}


# Why curvature and alignment are not assessed when a vertebra is outside the field of view.
NEEDS_WHOLE_CURVE = "curvature and alignment need the whole C2-C7 curve"


def predict(model: FusionModel, patient: PatientBoxes,
            extra_features: Optional[Mapping[str, float]] = None,
            spacing_mm: Optional[Tuple[float, float]] = None,
            outside_fov: Sequence[str] = ()) -> CurveAssessment:
    """Assess one patient from its boxes (any source, same padding as the model) and optional extra columns.

    outside_fov: vertebrae outside the image's field of view (LevelBoxes.outside_fov); with any, the curve is
    not assessed (FusionModel.prior_assessment). Raises GeometryError when the boxes cannot describe a C2-C7 column.
    """
    if outside_fov:
        return model.prior_assessment(patient.patient_id, f"{', '.join(outside_fov)} outside the field of view; "
                                                      f"{NEEDS_WHOLE_CURVE}")
    _, warnings = canonical_boxes(patient.boxes, model.padding_px)
    feats = curve_features(patient.boxes, spacing_mm=spacing_mm, padding_px=model.padding_px)
    if extra_features:
        feats.update(extra_features)
    return model.assess(patient.patient_id, feats, warnings)
