"""Issue 19 items 1-3 end to end: the README's "Training on the real CervAI data" commands, run as written on a
phantom folder laid out exactly as the challenge's download (train.json, bounding_box_train.json, no phantom.json,
bounding_box_test.json, the submission template), with patients lacking sagittal slices and axial images."""
from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from challenge_layout import TEST_GAPS, TRAIN_GAPS, make_challenge_download
from pipeline import cli
from study.challenge import folder_files
from study.splits import read_holdout

README = Path(__file__).resolve().parents[1] / "README.md"
# Tiny training, as tests/test_pipeline_train.py keeps it; --holdout-n is the README's, made to fit 10 patients.
TINY = ["--epochs", "1", "--no-cv", "--detector-minutes", "0.05"]
N_TRAIN, N_HELD = 10, 2


def readme_commands():
    """The bash block of the README's section, one pipeline.py command per line."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Training on the real CervAI data", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line) for line in block.strip().splitlines()]


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    root = tmp_path_factory.mktemp("challenge")
    make_challenge_download(root, n_train=N_TRAIN)
    return root


@pytest.fixture(scope="module")
def ran(download):
    """Every README command, in order, from the folder holding CervAI/: name -> click result."""
    commands = readme_commands()
    assert [c[:3] for c in commands] == [["python", "pipeline.py", "validate"], ["python", "pipeline.py", "train"],
                                         ["python", "pipeline.py", "run"], ["python", "pipeline.py", "submit"]]
    results = {}
    cwd = os.getcwd()
    os.chdir(download)
    try:
        for args in commands:
            args = args[2:]
            if args[0] == "train":
                args = [a if a != "40" else str(N_HELD) for a in args] + TINY
            results[args[0]] = CliRunner().invoke(cli, args)
    finally:
        os.chdir(cwd)
    return results


def patients(folder: Path):
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def test_the_download_is_laid_out_as_the_challenges(download):
    top = download / "CervAI"
    assert folder_files(top / "train") == (top / "train" / "train.json", top / "train" / "bounding_box_train.json")
    assert not (top / "train" / "phantom.json").exists() and not (top / "train" / "labels.json").exists()
    assert not (top / "train" / patients(top / "train")[1] / "sag" / "5.png").exists()


def test_validate_reads_every_training_patient(ran):
    res = ran["validate"]
    assert res.exit_code == 0, res.output
    assert f"{N_TRAIN} patients: {N_TRAIN} usable, {len(TRAIN_GAPS)} with warnings, 0 unusable" in res.output
    assert "sag/6: sagittal slice 6 missing; slice 5 stands in for it as the mid slice" in res.output


def test_train_all_learns_from_every_patient_and_skips_only_what_is_missing(ran, download):
    res = ran["train"]
    assert res.exit_code == 0, (res.output + res.stderr)[-3000:]
    weights = download / "weights-cervai"
    held = read_holdout(weights / "holdout.json")
    assert len(held) == N_HELD
    ids = patients(download / "CervAI" / "train")
    kept = [p for p in ids if p not in held]
    # The detector: every patient, each with the sagittal slices it has, and none it lacks.
    work = weights / ".detector-work" / "dataset"
    exported = {f.stem for f in (work / "images").rglob("*.png")}
    for k, pid in enumerate(ids):
        if pid in held:
            continue
        lacks = {int(f[4]) for f in TRAIN_GAPS.get(k, ()) if f.startswith("sag/")}
        assert {s for s in (5, 6, 7) if f"{pid}_s{s}" in exported} == {5, 6, 7} - lacks, pid
    # The classifier: every patient not held out, those with missing slices or axials included.
    cls = json.loads((weights / "classifier" / "classifier.json").read_text())
    assert sorted(cls["training"]["train_ids"] + cls["training"]["val_ids"]) == kept
    fusion = json.loads((weights / "fusion" / "fusion.json").read_text())
    assert fusion["n_patients"] == N_TRAIN - N_HELD                       # geometry: bounding_box_train.json
    assert fusion["image_alignment"]["n_geometries"] == N_TRAIN - N_HELD   # images: every patient, gaps or not


def test_run_with_the_test_boxes_reads_all_but_the_patient_without_sagittal_images(ran, download):
    res = ran["run"]
    ids = patients(download / "CervAI" / "test")
    assert res.exit_code == 1, res.output      # one patient unusable, the rest read
    out = download / "runs" / "cervai-test"
    predicted = [r["id"] for r in json.loads((out / "predictions.json").read_text())]
    no_sagittal = ids[1]
    assert predicted == [p for p in ids if p != no_sagittal]
    errors = json.loads((out / "errors.json").read_text())
    assert no_sagittal in json.dumps(errors) and "no sagittal image" in json.dumps(errors)
    report = json.loads((out / "reports" / f"{ids[0]}.json").read_text())
    assert report["levels"]["sagittal_standins"] == {"7": 6} and report["box_source"] == "given"
    assert any("sagittal slice(s) missing" in r for r in report["review_reasons"])
    assert report["levels"]["vertebrae"]["7"] == report["levels"]["vertebrae"]["6"]   # its source's boxes
    assert TEST_GAPS[0] == ("sag/7.png",)


def test_submit_completes_the_submission_in_the_templates_order(ran, download):
    res = ran["submit"]
    assert res.exit_code == 0, res.output + res.stderr
    top = download / "CervAI"
    template = [r["id"] for r in json.loads((top / "test_submission_template.json").read_text())]
    rows = json.loads((download / "submission.json").read_text())
    assert [r["id"] for r in rows] == template
    no_sagittal = patients(top / "test")[1]
    assert no_sagittal in res.stderr and "filled from the training prior" in res.stderr
    side = json.loads((download / "submission.filled.json").read_text())
    assert side["filled_from_prior"] == [no_sagittal]
    prior = json.loads((download / "weights-cervai" / "fusion" / "fusion.json").read_text())["label_prior"]
    filled = next(r for r in rows if r["id"] == no_sagittal)
    assert filled["qd"] == max(range(3), key=lambda c: (prior["curvature_counts"][c], -c))


def test_challenge_files_beside_the_training_folder_are_found(tmp_path):
    (tmp_path / "train").mkdir()
    for name in ("train.json", "bounding_box_train.json"):
        (tmp_path / name).write_text("[]")
    assert folder_files(tmp_path / "train") == (tmp_path / "train.json", tmp_path / "bounding_box_train.json")
    (tmp_path / "train" / "labels.json").write_text("[]")      # a phantom's own files come first
    assert folder_files(tmp_path / "train")[0] == tmp_path / "train" / "labels.json"
