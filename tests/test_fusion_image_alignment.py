"""The image alignment head: phantom table, grouped CV, prevalence-weighted threshold, save/load, fallback."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fusion.image_alignment import (
    cross_validate_head, evaluate_head, fit_head, phantom_table, prevalence_weights, train_image_alignment,
    tune_threshold, weighted_poor_f1,
)
from fusion.model import ALIGNMENT_FROM_GEOMETRY, ALIGNMENT_FROM_IMAGE, IMAGE_ALIGNMENT_FILE, load_fusion
from fusion.train import train_fusion
from study.challenge import PatientLabels, write_box_file, write_labels
from study.levels import ALIGNMENT_SCORED_CLASS, CANAL_POSITIONS, DISCS, MID_SAGITTAL_SLICE, VERTEBRAE
from study.splits import variant_id

from fusion_helpers import arc, column, patient
from test_fusion_image import draw_t2
from test_fusion_model import TINY, toy_cohort

POOR, OK = ALIGNMENT_SCORED_CLASS, 1 - ALIGNMENT_SCORED_CLASS


def write_cohort(root: Path, n: int = 24, seed: int = 0) -> Path:
    """n geometries rendered twice: as drawn ('{id}', acceptable) and with a listhesis ('{id}~poor').

    As in the phantom, the boxes follow the displaced body; only sag/6.png is drawn (all the head reads).
    """
    rng = np.random.default_rng(seed)
    patients, labels = [], []
    for i in range(n):
        depth, x0, y0 = rng.uniform(-2, 7), 100 + rng.normal(0, 4), 40 + rng.normal(0, 4)
        for poor in (False, True):
            pid = f"g{i:03d}" if not poor else variant_id(f"g{i:03d}", "poor")
            shift = (int(rng.integers(1, 6)), float(rng.choice([-1, 1]) * rng.uniform(3.5, 5))) if poor else (None, 0.0)
            boxes = column(arc(depth), x0=x0, y0=y0, shift_from=shift[0], shift_px=shift[1])
            img = np.clip(draw_t2(boxes, seed=i, noise=0.03), 0, 1)
            (root / pid / "sag").mkdir(parents=True)
            Image.fromarray(np.round(img * 255).astype(np.uint8)).save(root / pid / "sag" / f"{MID_SAGITTAL_SLICE}.png")
            patients.append(patient(pid, boxes))
            labels.append(PatientLabels(pid, 0, POOR if poor else OK, (0,) * len(DISCS), (0,) * len(CANAL_POSITIONS)))
    write_box_file(root / "boxes.json", patients)
    write_labels(root / "labels.json", labels)
    return root


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return write_cohort(tmp_path_factory.mktemp("cohort"))


def test_phantom_table_groups_variants_with_their_geometry(cohort):
    t = phantom_table([cohort])
    assert len(t.ids) == 48 and t.poor.sum() == 24
    assert all(g == i.split("~")[0] for g, i in zip(t.groups, t.ids))
    assert "image_posterior_step_max" in t.names and not any(n.startswith("_") for n in t.names)
    held = phantom_table([cohort], exclude={"g000", "g001"})
    assert len(held.ids) == 44 and not {"g000", "g001"} & set(held.groups)


def test_prevalence_weighting_changes_f1_not_ranking():
    poor = np.array([1] * 10 + [0] * 10)
    w = prevalence_weights(poor, 0.05)
    assert w[poor == 1].sum() / w.sum() == pytest.approx(0.05)
    score = np.array([0.9] * 8 + [0.2] * 2 + [0.6] * 2 + [0.1] * 8)
    # one false alarm per four true calls is harmless at 50 % poor and costly at 5 %
    assert weighted_poor_f1(score, poor, 0.5, np.ones(20)) == pytest.approx(0.8)
    assert weighted_poor_f1(score, poor, 0.5, w) < weighted_poor_f1(score, poor, 0.5, np.ones(20))
    assert tune_threshold(score, poor, w) > 0.6  # at 5 % the threshold moves above the false alarms


def test_head_finds_the_listhesis_in_grouped_cv(cohort):
    t = phantom_table([cohort])
    cv = cross_validate_head(t, TINY, prevalence=0.3, repeats=1)
    assert cv["n_geometries"] == 24 and cv["n_poor"] == 24
    assert cv["auc"]["mean"] > 0.9
    assert cv["poor_f1_phantom_mix"]["mean"] > 0.75
    head = fit_head(t, TINY, prevalence=0.3)
    assert evaluate_head(head, t)["auc"] > 0.95


def test_head_saved_with_the_fusion_model_and_used_only_with_image_columns(cohort, tmp_path):
    patients, labels = toy_cohort(45)
    write_box_file(tmp_path / "boxes.json", patients)
    write_labels(tmp_path / "labels.json", labels)
    weights = tmp_path / "w"
    train_fusion(tmp_path / "boxes.json", tmp_path / "labels.json", weights, TINY, run_cv=False)
    assert load_fusion(weights).image_alignment is None
    meta = train_image_alignment(weights, [cohort], TINY, exclude={"g023"}, repeats=0, data_name="drawn columns")
    assert meta["n_geometries"] == 23 and meta["threshold"] > 0
    model = load_fusion(weights)
    assert model.image_alignment is not None and (weights / IMAGE_ALIGNMENT_FILE).is_file()
    assert "image alignment head" in (weights / "MODEL_CARD.md").read_text().lower()

    t = phantom_table([cohort])
    feats = [dict(zip(t.names, row)) for row in t.X]
    calls = [model.assess(pid, f) for pid, f in zip(t.ids, feats)]
    assert all(c.alignment_source == ALIGNMENT_FROM_IMAGE for c in calls)
    called_poor = np.array([c.alignment == POOR for c in calls])
    assert (called_poor == (t.poor == 1)).mean() > 0.85
    # without the image columns the geometry model decides, and says so
    geometry_only = {k: v for k, v in feats[0].items() if not k.startswith("image_")}
    c = model.assess(t.ids[0], geometry_only)
    assert c.alignment_source == ALIGNMENT_FROM_GEOMETRY
    c = model.assess(t.ids[0], {**feats[0], "image_posterior_step_max": math.nan})
    assert c.alignment_source == ALIGNMENT_FROM_GEOMETRY

    # retraining the geometry model alone must not leave the old head's file behind
    train_fusion(tmp_path / "boxes.json", tmp_path / "labels.json", weights, TINY, run_cv=False)
    assert load_fusion(weights).image_alignment is None and not (weights / IMAGE_ALIGNMENT_FILE).exists()


def test_tampered_head_refused(cohort, tmp_path):
    patients, labels = toy_cohort(45)
    write_box_file(tmp_path / "boxes.json", patients)
    write_labels(tmp_path / "labels.json", labels)
    train_fusion(tmp_path / "boxes.json", tmp_path / "labels.json", tmp_path / "w", TINY, run_cv=False)
    train_image_alignment(tmp_path / "w", [cohort], TINY, repeats=0)
    f = tmp_path / "w" / IMAGE_ALIGNMENT_FILE
    f.write_text(f.read_text().replace("Tree=0", "Tree=0\n", 1))
    with pytest.raises(ValueError, match="sha256"):
        load_fusion(tmp_path / "w")
