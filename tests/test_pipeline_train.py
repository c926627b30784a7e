"""`pipeline.py train all` at toy size: every stage retrains, the hold-out stays out of all of them, `run` accepts it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import cli
from release.manifest import verify_manifest
from study.challenge import read_labels
from study.splits import read_holdout, split_key

N = 10
BUDGET_MIN = 0.05   # a 3-second YOLO budget for the detector stage


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """N built-in phantoms and, from their own geometry files, their poor-alignment variants."""
    root = tmp_path_factory.mktemp("train-data")
    runner = CliRunner()
    res = runner.invoke(cli, ["synth", "--out", str(root / "ph"), "--n", str(N), "--seed", "11"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["synth", "--out", str(root / "poor"), "--seed", "12", "--variant", "poor",
                              "--boxes", str(root / "ph" / "boxes.json"), "--labels", str(root / "ph" / "labels.json")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["synth", "--out", str(root / "val"), "--n", "3", "--seed", "13"])
    assert res.exit_code == 0, res.output
    return root


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("weights")
    res = CliRunner().invoke(cli, ["train", "all", "--data", str(data / "ph"), "--data", str(data / "poor"),
                                   "--val-data", str(data / "val"),
                                   "--out", str(out), "--holdout-n", "3", "--epochs", "1", "--no-cv",
                                   "--detector-minutes", str(BUDGET_MIN), "--data-name", "toy phantoms"])
    assert res.exit_code == 0, res.output[-3000:]
    return out


def test_every_stage_writes_its_card_and_the_manifest_verifies(trained):
    for stage, files in (("detector", ("best.pt", "config.json", "MODEL_CARD.md")),
                         ("classifier", ("classifier.pt", "classifier.json", "MODEL_CARD.md")),
                         ("fusion", ("curvature.lgb.txt", "alignment_image.lgb.txt", "fusion.json", "MODEL_CARD.md"))):
        for f in files:
            assert (trained / stage / f).is_file(), (stage, f)
    verified = verify_manifest(trained, ("detector", "classifier", "fusion"))
    assert not any(k.startswith(".") or "/." in k for k in verified.files)  # work folders are not released


def test_the_detector_trains_to_a_wall_time_budget_and_says_how_many_epochs_it_ran(trained):
    cfg = json.loads((trained / "detector" / "config.json").read_text())["train"]
    assert cfg["minutes"] == BUDGET_MIN
    card = (trained / "detector" / "MODEL_CARD.md").read_text()
    # the budget replaces --epochs for the detector; the card states the epochs ultralytics fitted and ran
    assert f"- Training: {cfg['epochs']} epochs (fitted by ultralytics to a {BUDGET_MIN:g}-min budget)" in card
    assert cfg["epochs"] >= 1
    assert "--detector-minutes" in card                       # and the command that wrote it, to rerun


def test_holdout_is_excluded_from_every_stage(trained, data):
    held = read_holdout(trained / "holdout.json")
    assert len(held) == 3
    split = json.loads((trained / ".detector-work" / "dataset" / "split.json").read_text())
    assert not held & {split_key(i) for i in split["train"] + split["val"]} and split["excluded"] == 3
    assert "evaluation hold-out" in (trained / "detector" / "MODEL_CARD.md").read_text()
    cls = json.loads((trained / "classifier" / "classifier.json").read_text())
    assert held <= set(cls["holdout_ids"])
    assert not held & {split_key(i) for i in cls["training"]["train_ids"] + cls["training"]["val_ids"]}
    # --val-data joins the classifier's validation set only
    assert cls["training"]["val_extra"]["renders"] == 3
    assert {f"phantom-s13-{k:04d}" for k in range(3)} <= set(cls["training"]["val_ids"])
    assert "--val-data" in (trained / "classifier" / "MODEL_CARD.md").read_text()
    fusion = json.loads((trained / "fusion" / "fusion.json").read_text())
    assert fusion["excluded_patients"] == 3 and fusion["n_patients"] == N - 3
    assert fusion["image_alignment"]["excluded_geometries"] == 3
    assert fusion["image_alignment"]["n_geometries"] == N - 3
    # the image head learns from boxes placed the way `run` places them: by the detector just trained
    assert "detector" in fusion["image_alignment"]["boxes"]
    assert "pipeline.py train all" in (trained / "fusion" / "MODEL_CARD.md").read_text()


def test_run_accepts_the_retrained_weights(trained, data, tmp_path):
    held = sorted(read_holdout(trained / "holdout.json"))
    res = CliRunner().invoke(cli, ["run", "--input", str(data / "ph" / held[0]), "--out", str(tmp_path / "out"),
                                   "--weights", str(trained)])
    assert res.exit_code == 0, res.output[-3000:]
    assert [p.patient_id for p in read_labels(tmp_path / "out" / "predictions.json")] == [held[0]]
    report = json.loads((tmp_path / "out" / "reports" / f"{held[0]}.json").read_text())
    assert report["alignment"]["source"].startswith("image")


def test_bad_data_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(cli, ["train", "fusion", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "w")])
    assert res.exit_code == 2 and "labels.json" in res.output and "empty" in res.output


def test_val_data_holding_hold_out_geometry_is_refused_naming_the_folder(trained, data, tmp_path):
    res = CliRunner().invoke(cli, ["train", "classifier", "--data", str(data / "ph"), "--val-data", str(data / "ph"),
                                   "--holdout", str(trained / "holdout.json"), "--out", str(tmp_path / "w")])
    assert res.exit_code == 2, res.output[-2000:]
    assert "evaluation hold-out" in res.output and str(data / "ph") in res.output
    assert not (tmp_path / "w" / "classifier" / "classifier.pt").exists()
