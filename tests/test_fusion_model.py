"""Fusion model: decision-rule tuning, tiny train -> save -> load -> predict, the shipped files (floors: test_shipped_weights.py)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from evaluation.metrics import macro_f1
from fusion.config import FusionConfig
from fusion.cv import cross_validate, fit_fusion
from fusion.decision import tune_alignment_threshold, tune_curvature_priors
from fusion.features import MissingColumnsError, feature_rows, level_features, to_matrix
from fusion.geometry import apply_index_cuts, feature_names, fit_index_cuts
from fusion.model import CurveAssessment, load_fusion, predict
from fusion.train import train_fusion
from study.challenge import PatientLabels, write_box_file, write_labels
from study.levels import ALIGNMENT_CLASSES, ALIGNMENT_SCORED_CLASS, CURVATURE_CLASSES, DISCS, CANAL_POSITIONS

from fusion_helpers import arc, column, patient

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "weights" / "fusion"
TINY = FusionConfig(n_estimators=15, num_leaves=3, min_child_samples=3, cv_folds=3, cv_repeats=1, inner_folds=3)


def toy_cohort(n: int = 60, seed: int = 0):
    """Columns whose bow decides curvature (deep/flat/reversed) and whose listhesis decides alignment."""
    rng = np.random.default_rng(seed)
    patients, labels = [], []
    for i in range(n):
        curv = i % 3
        depth = {0: 7.0, 1: 1.5, 2: -4.0}[curv] + rng.normal(0, 0.7)
        poor = i % 5 == 0
        shift = (2, 4.0) if poor else (None, 0.0)
        boxes = column(arc(depth), x0=100 + rng.normal(0, 5), y0=40 + rng.normal(0, 5),
                       shift_from=shift[0], shift_px=shift[1])
        pid = f"toy{i:03d}"
        patients.append(patient(pid, boxes))
        labels.append(PatientLabels(pid, curv, 0 if poor else 1, (0,) * len(DISCS), (0,) * len(CANAL_POSITIONS)))
    return patients, labels


def test_prior_tuning_fixes_a_biased_model():
    y = np.array([0] * 10 + [1] * 10 + [2] * 10)
    probs = np.zeros((30, 3))
    probs[np.arange(30), y] = 0.4
    probs[:, 1] += 0.5  # a model that over-calls class 1
    assert macro_f1(y, probs.argmax(1), 3) < 0.5
    w = tune_curvature_priors(probs, y)
    assert macro_f1(y, (probs * w).argmax(1), 3) == 1.0


def test_alignment_threshold_separates_scores():
    y = np.array([ALIGNMENT_SCORED_CLASS] * 3 + [1 - ALIGNMENT_SCORED_CLASS] * 7)
    scores = np.array([0.9, 0.8, 0.35, 0.3, 0.2, 0.1, 0.1, 0.05, 0.0, 0.01])
    t = tune_alignment_threshold(scores, y)
    assert 0.3 < t <= 0.35


def test_config_rejects_unknown_keys_and_wrong_types():
    assert FusionConfig.from_dict({"seed": 3}).seed == 3
    assert FusionConfig.from_dict({"reg_lambda": 2}).reg_lambda == 2.0
    with pytest.raises(ValueError, match="unknown setting.*num_leafs"):
        FusionConfig.from_dict({"num_leafs": 3})
    with pytest.raises(ValueError, match="num_leaves: expected an integer"):
        FusionConfig.from_dict({"num_leaves": "4"})
    with pytest.raises(ValueError, match="seed: expected an integer"):
        FusionConfig.from_dict({"seed": True})


def test_a_column_the_model_needs_is_never_silently_missing():
    patients, labels = toy_cohort(30, seed=2)
    ids, rows, _ = feature_rows(patients)
    names = list(rows[0].keys())
    model = fit_fusion(to_matrix(rows, names), np.array([lab.curvature for lab in labels]),
                       np.array([lab.alignment for lab in labels]), names, TINY)
    broken = dict(rows[0])
    del broken["curvature_index"]
    with pytest.raises(MissingColumnsError, match="curvature_index"):
        model.assess("p", broken)
    # a measurement that could not be made is a value (NaN), not a missing column
    model.assess("p", {**rows[0], "curvature_index": float("nan")})


def test_level_features_optional():
    nan = level_features()
    assert all(math.isnan(v) for v in nan.values()) and len(nan) == len(DISCS) + len(CANAL_POSITIONS)
    p = np.zeros((len(DISCS), 4))
    p[:, 2] = 1.0
    assert level_features(disc_probs=p)[f"disc_grade_expected_{DISCS[0]}"] == 2.0
    with pytest.raises(ValueError, match="shape"):
        level_features(disc_probs=np.zeros((3, 4)))


def test_fit_predict_on_toy_cohort():
    patients, labels = toy_cohort()
    ids, rows, errors = feature_rows(patients)
    assert not errors
    names = list(rows[0].keys())
    X = to_matrix(rows, names)
    yc = np.array([lab.curvature for lab in labels])
    ya = np.array([lab.alignment for lab in labels])
    model = fit_fusion(X, yc, ya, names, TINY)
    curv, probs, align, aprobs = model.decide(X)
    assert probs.shape == (60, 3) and np.allclose(probs.sum(1), 1)
    assert np.allclose(aprobs.sum(1), 1)
    # the toy classes are separable by the bow depth: training fit must be far above chance
    assert macro_f1(yc, curv, 3) > 0.8
    # the model works when optional columns (stage-2 grades) are present but NaN, and when absent
    a = predict(model, patients[0], extra_features=level_features())
    assert isinstance(a, CurveAssessment) and a.curvature_name in CURVATURE_CLASSES
    assert a.alignment_name in ALIGNMENT_CLASSES and a.warnings == ()
    cv = cross_validate(X, yc, ya, names, TINY)
    assert len(cv.curvature_macro_f1) == 1 and cv.curvature_macro_f1[0] > 0.6
    assert sum(map(sum, cv.curvature_confusion)) == 60
    # the toy bow is the curvature index itself, so the cut-point baseline (same folds) reads it too
    assert len(cv.curvature_cut_rule_macro_f1) == 1 and cv.curvature_cut_rule_macro_f1[0] > 0.8
    assert "curvature_cut_rule_macro_f1" in cv.summary()
    # a table without the index column has no baseline, and the summary leaves it out
    keep = [k for k, n in enumerate(names) if n != "curvature_index"]
    cv_no_index = cross_validate(X[:, keep], yc, ya, [names[k] for k in keep], TINY)
    assert cv_no_index.curvature_cut_rule_macro_f1 == ()
    assert "curvature_cut_rule_macro_f1" not in cv_no_index.summary()


def test_train_save_load_roundtrip(tmp_path):
    patients, labels = toy_cohort(45, seed=1)
    write_box_file(tmp_path / "boxes.json", patients)
    write_labels(tmp_path / "labels.json", labels)
    out = tmp_path / "w"
    meta = train_fusion(tmp_path / "boxes.json", tmp_path / "labels.json", out, TINY, data_name="toy")
    assert sorted(p.name for p in out.iterdir()) == ["MODEL_CARD.md", "alignment.lgb.txt", "curvature.lgb.txt",
                                                    "fusion.json"]
    assert meta["n_patients"] == 45 and meta["cv"]["n_repeats"] == 1
    card = (out / "MODEL_CARD.md").read_text()
    assert "toy" in card and f"{meta['cv']['curvature_macro_f1']['mean']:.3f}" in card
    model = load_fusion(out)
    assert model.feature_names == feature_names()
    again = load_fusion(out)
    a, b = predict(model, patients[3]), predict(again, patients[3])
    assert a.curvature_probs == b.curvature_probs and a.alignment_probs == b.alignment_probs
    # The training labels' class counts travel with the weights: a curve that cannot be read submits them.
    prior = meta["label_prior"]
    assert prior["n_patients"] == 45 and prior["curvature_counts"] == meta["curvature_counts"]
    unread = predict(model, patients[3], outside_fov=("C6", "C7"))
    assert unread.not_assessed.startswith("C6, C7 outside the field of view") and unread.features == {}
    assert unread.curvature == int(np.argmax(prior["curvature_counts"]))
    assert unread.alignment == int(np.argmax(prior["alignment_counts"]))
    assert not a.not_assessed
    # a tampered booster is refused
    (out / "curvature.lgb.txt").write_text((out / "curvature.lgb.txt").read_text() + "\n")
    with pytest.raises(ValueError, match="sha256"):
        load_fusion(out)


def test_training_is_deterministic():
    patients, labels = toy_cohort(30, seed=2)
    ids, rows, _ = feature_rows(patients)
    names = list(rows[0].keys())
    X = to_matrix(rows, names)
    yc = np.array([lab.curvature for lab in labels])
    ya = np.array([lab.alignment for lab in labels])
    p1 = fit_fusion(X, yc, ya, names, TINY).scores(X)
    p2 = fit_fusion(X, yc, ya, names, TINY).scores(X)
    assert np.array_equal(p1[0], p2[0]) and np.array_equal(p1[1], p2[1])


def test_shipped_weights_load_and_describe_themselves():
    model = load_fusion(SHIPPED)
    meta = model.meta
    assert model.feature_names == feature_names()
    assert meta["n_patients"] == 320 and "CervAI 320" in meta["data"]
    assert not (SHIPPED / "model.pkl").exists()
    card = (SHIPPED / "MODEL_CARD.md").read_text()
    assert f"{meta['cv']['curvature_macro_f1']['mean']:.3f}" in card
    assert model.padding_px == 3.0


def test_index_cut_points_recover_the_cuts_that_drew_the_labels():
    rng = np.random.default_rng(3)
    index = rng.uniform(-12, 35, 300)
    y = apply_index_cuts(index, (-1.3, 17.6))
    assert set(y) == {0, 1, 2} and np.all(y[index >= 17.6] == 0) and np.all(y[index < -1.3] == 2)
    (lo, hi), f1 = fit_index_cuts(index, y)
    assert f1 == pytest.approx(1.0)
    # any cut between the neighbouring samples reproduces the labels; the 0.25 grid lands within a step
    assert abs(lo - -1.3) <= 0.5 and abs(hi - 17.6) <= 0.5
    assert np.array_equal(apply_index_cuts(index, (lo, hi)), y)
    # labels that overlap on the index: the fitted cut-points still beat any single-class call
    noisy = np.where(rng.random(300) < 0.15, rng.integers(0, 3, 300), y)
    (lo, hi), f1 = fit_index_cuts(index, noisy)
    assert lo < hi and f1 > max(macro_f1(noisy, np.full(300, c), 3) for c in range(3)) + 0.3
