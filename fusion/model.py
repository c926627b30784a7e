"""The fitted fusion model: curvature and alignment boosters with their decision rules, saved and loaded as text.

Fitting and cross-validation live in fusion.cv, training runs in fusion.train, the columns in fusion.features.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from common.files import atomic_write, sha256_of, write_json_atomic
from study.challenge import PatientBoxes
from study.levels import ALIGNMENT_CLASSES, ALIGNMENT_SCORED_CLASS, CURVATURE_CLASSES

from .booster import load_booster
from .features import image_and_grade_columns, to_matrix
from .geometry import CHALLENGE_PADDING_PX, canonical_boxes, curve_features

if TYPE_CHECKING:
    from lightgbm import Booster   # imported lazily at run time (fusion.booster)

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


@dataclass
class ImageAlignmentHead:
    """Poor-alignment booster on geometry plus image columns, with its threshold; used when the image columns exist.

    The CervAI release has no images, so this head learns from phantoms, which draw poor alignment as a
    listhesis step; its threshold is tuned for the poor-class F1 at `prevalence` (the real frequency).
    """

    feature_names: List[str]
    booster: "Booster"
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
    curvature_booster: "Booster"
    alignment_booster: "Booster"
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
        return label_frequencies(self.meta)

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
    curv = load_booster((d / CURVATURE_FILE).read_text(encoding="utf-8"))
    align = load_booster((d / ALIGNMENT_FILE).read_text(encoding="utf-8"))
    names = list(meta["feature_names"])
    for b in (curv, align):
        if b.feature_name() != names:
            raise ValueError(f"{d}: booster feature names differ from {META_FILE}")
    head = None
    if "image_alignment" in meta:
        hm = dict(meta["image_alignment"])
        if IMAGE_ALIGNMENT_FILE not in meta.get("files", {}):
            raise ValueError(f"{meta_path}: image_alignment head without a checksum for {IMAGE_ALIGNMENT_FILE}")
        booster = load_booster((d / IMAGE_ALIGNMENT_FILE).read_text(encoding="utf-8"))
        head_names = list(hm.pop("feature_names"))
        if booster.feature_name() != head_names:
            raise ValueError(f"{d}: {IMAGE_ALIGNMENT_FILE} feature names differ from {META_FILE}")
        head = ImageAlignmentHead(head_names, booster, float(hm.pop("threshold")), list(hm.pop("required")), hm)
    return FusionModel(names, curv, align, np.array(meta["curvature_priors"], float),
                       float(meta["alignment_threshold"]), float(meta.get("box_padding_px", CHALLENGE_PADDING_PX)),
                       meta, head)


def default_weights_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "weights" / "fusion"


# Why curvature and alignment are not assessed when a vertebra is outside the field of view.
NEEDS_WHOLE_CURVE = "curvature and alignment need the whole C2-C7 curve"


def predict(model: FusionModel, patient: PatientBoxes,
            extra_features: Optional[Mapping[str, float]] = None,
            spacing_mm: Optional[Tuple[float, float]] = None,
            outside_fov: Sequence[str] = (),
            sagittal: Optional[Mapping[int, np.ndarray]] = None,
            disc_probs: Optional[np.ndarray] = None,
            canal_probs: Optional[np.ndarray] = None) -> CurveAssessment:
    """Assess one patient from its boxes (any source, same padding as the model), with the columns
    fusion.features.patient_features measures from them, the sagittal images and the classifier's probabilities
    (extra_features: further columns, e.g. in tests).

    outside_fov: vertebrae outside the image's field of view (LevelBoxes.outside_fov); with any, the curve is
    not assessed (FusionModel.prior_assessment). Raises GeometryError when the boxes cannot describe a C2-C7 column.
    """
    if outside_fov:  # nothing is measured: a box of a level out of view may hang past the image edge
        return model.prior_assessment(patient.patient_id, f"{', '.join(outside_fov)} outside the field of view; "
                                                      f"{NEEDS_WHOLE_CURVE}")
    measured = image_and_grade_columns(patient.boxes, model.padding_px, sagittal, disc_probs, canal_probs)
    _, warnings = canonical_boxes(patient.boxes, model.padding_px)
    feats = curve_features(patient.boxes, spacing_mm=spacing_mm, padding_px=model.padding_px)
    feats.update(measured)
    if extra_features:
        feats.update(extra_features)
    return model.assess(patient.patient_id, feats, warnings)


def label_frequencies(meta: Mapping[str, object]) -> Tuple[np.ndarray, np.ndarray, str]:
    """FusionModel.label_frequencies from fusion.json's contents alone (what `submit` reads: no booster needed)."""
    block = meta.get(LABEL_PRIOR_KEY)
    if not isinstance(block, Mapping):
        return (np.eye(len(CURVATURE_CLASSES))[0], np.eye(len(ALIGNMENT_CLASSES))[0],
                f"predictions.json needs an integer; these weights carry no label prior ({META_FILE} "
                f"{LABEL_PRIOR_KEY}), so class 0 was written")
    curv = np.asarray(block["curvature_counts"], float)
    align = np.asarray(block["alignment_counts"], float)
    return (curv / curv.sum(), align / align.sum(),
            "predictions.json needs an integer: the most frequent class among the fusion stage's training "
            f"labels ({int(block.get('n_patients', 0))} patients; {META_FILE} {LABEL_PRIOR_KEY})")
