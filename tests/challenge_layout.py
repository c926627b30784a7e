"""A phantom folder laid out exactly as the CervAI challenge's download: train/ with train.json and
bounding_box_train.json (no phantom.json, no labels.json/boxes.json), test/ with bounding_box_test.json
beside it, and patients that lack sagittal slices or axial images (shared by the tests and the README check)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Sequence

from click.testing import CliRunner

from pipeline import cli

# What each patient (by index) lacks: files under its folder to delete.
TRAIN_GAPS: Dict[int, Sequence[str]] = {
    0: ("sag/5.png",),                         # 2 sagittal slices: 6 stands in for 5
    1: ("sag/5.png", "sag/7.png"),             # the mid slice alone
    2: ("sag/6.png",),                         # 5 becomes the mid slice
    3: ("tra/3.png", "tra/4-5.png", "tra/7.png"),   # levels without an axial image: sagittal-only path
    4: ("sag/6.png", "sag/7.png", "tra/2.png"),
}
TEST_GAPS: Dict[int, Sequence[str]] = {
    0: ("sag/7.png",),
    1: ("sag/5.png", "sag/6.png", "sag/7.png"),   # no sagittal image at all: run fails it, submit fills it
}


def _synth(out: Path, n: int, seed: int) -> None:
    res = CliRunner().invoke(cli, ["synth", "--out", str(out), "--n", str(n), "--seed", str(seed)])
    assert res.exit_code == 0, res.output


def _punch(folder: Path, gaps: Dict[int, Sequence[str]]) -> None:
    patients = sorted(p for p in folder.iterdir() if p.is_dir())
    for k, files in gaps.items():
        for f in files:
            (patients[k] / f).unlink()


def make_challenge_download(root: Path, n_train: int = 10, n_test: int = 3, seed: int = 41) -> Path:
    """root/CervAI/{train,test}/ as the challenge ships them, plus the submission template; returns root/CervAI."""
    top = root / "CervAI"
    _synth(top / "train", n_train, seed)
    _synth(top / "test", n_test, seed + 1)
    train, test = top / "train", top / "test"
    (train / "labels.json").rename(train / "train.json")
    (train / "boxes.json").rename(train / "bounding_box_train.json")
    (test / "boxes.json").rename(top / "bounding_box_test.json")
    test_ids = [r["id"] for r in json.loads((test / "labels.json").read_text())]
    for folder in (train, test):
        (folder / "phantom.json").unlink()
    (test / "labels.json").unlink()                      # the test labels are the challenge's secret
    _punch(train, TRAIN_GAPS)
    _punch(test, TEST_GAPS)
    # The challenge's template: every test id, every label 0, in its own order (not the folder's).
    template = [{"id": pid, "qd": 0, "sl": 0, "zjppt": [0] * 5, "zyzg": [0] * 11} for pid in reversed(test_ids)]
    (top / "test_submission_template.json").write_text(json.dumps(template))
    assert not any(top.rglob("labels.json")) and not any(top.rglob("boxes.json"))
    return top
