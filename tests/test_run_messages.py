"""Messages that say what is true (issue 20): folders are folders, a NIfTI's T2 reason, the review reason for
levels filled in, and one warning per patient for images stored in another format than PNG."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import SHARED_DATA
from detector.boxes import LevelBox, LevelBoxes
from pipeline import cli
from reader.review import review_reasons
from study.challenge import read_box_file
from study.loader import load_study
from study.nifti import _sidecar
from study.series import SequenceInfo, t2_score

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def test_a_missing_input_folder_is_not_called_a_file(tmp_path):
    missing = tmp_path / "nowhere"
    res = CliRunner().invoke(cli, ["run", "--input", str(missing), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert res.output.strip().startswith(f"error: path {missing}: input does not exist")
    res = CliRunner().invoke(cli, ["validate", "--input", str(missing)])
    assert f"path {missing}: input does not exist" in res.output and f"file {missing}" not in res.output


def test_an_empty_patient_folder_is_called_a_folder(tmp_path):
    (tmp_path / "batch" / "p1").mkdir(parents=True)
    shutil.copytree(EXAMPLES / "phantom-s2025-0000", tmp_path / "batch" / "p2")
    res = CliRunner().invoke(cli, ["run", "--input", str(tmp_path / "batch"), "--out", str(tmp_path / "out")])
    assert res.exit_code == 1, res.output
    assert "failed: p1: folder p1: patient folder is empty" in res.output
    errors = json.loads((tmp_path / "out" / "errors.json").read_text())
    assert errors[0]["error"].startswith("patient p1, folder p1: patient folder is empty")


def test_the_t2_reason_of_a_nifti_names_its_file_name(tmp_path):
    seq = _sidecar(tmp_path / "sub-01_T2w.nii.gz")
    score, why = t2_score(seq)
    assert "file name says T2" in why and not any("description" in w for w in why)
    _, why = t2_score(SequenceInfo("T2 TSE SAG"))            # DICOM: its series description
    assert "description says T2" in why


def test_a_real_nifti_whose_header_says_fsl_is_not_said_to_describe_t2():
    from study.inputs import find_inputs, load_input

    root = SHARED_DATA / "real_mri" / "sct_2014"
    if not (root / "sub-errsm21").is_dir():
        pytest.skip("../shared/data/real_mri absent")
    source = next(s for s in find_inputs(root) if s.patient_id == "sub-errsm21")   # header description "FSL5.0"
    study = load_input(source)
    lines = [p for p in study.provenance if "T2" in p]
    assert lines and all("file name says T2" in p and "description says" not in p for p in lines), lines


def _boxes_with(missing: dict) -> LevelBoxes:
    """The example's boxes with levels marked not found (interpolated) on the given slices."""
    boxes = LevelBoxes.from_patient_boxes(read_box_file(EXAMPLES / "boxes.json").by_id()["phantom-s2025-0000"])
    vert = {s: dict(v) for s, v in boxes.vertebrae.items()}
    for lv, slices in missing.items():
        for s in slices:
            vert[s][lv] = LevelBox(vert[s][lv].box, 0.0, True)
    return LevelBoxes(boxes.patient_id, vert, boxes.discs)


def _reasons(boxes: LevelBoxes):
    curve = SimpleNamespace(not_assessed="", warnings=())
    study = SimpleNamespace(missing_axial=(), blank_images=(), sagittal_standins={})   # a complete patient
    return review_reasons(boxes, curve, study, min_confidence=0.0)


def test_a_level_found_on_some_slices_is_not_called_not_found():
    reasons = _reasons(_boxes_with({"C4": (5,), "C6": (5, 7)}))
    assert reasons == ("level(s) not found on some sagittal slices, filled in there: C4 (slice 5), C6 (slices 5, 7)",)
    reasons = _reasons(_boxes_with({"C3": (5, 6, 7), "C4": (6,)}))
    assert reasons == ("level(s) C3 not found on any sagittal slice, placed between the neighbouring levels "
                       "(interpolated)", "level(s) not found on some sagittal slices, filled in there: C4 (slice 6)")
    assert _reasons(_boxes_with({})) == ()


def test_jpg_images_give_one_warning_per_patient_naming_the_format(tmp_path):
    patient = tmp_path / "pj"
    for f in sorted((EXAMPLES / "phantom-s2025-0000").rglob("*.png")):
        target = patient / f.relative_to(EXAMPLES / "phantom-s2025-0000").with_suffix(".jpg")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(f).convert("L").save(target, format="JPEG", quality=95)
    study = load_study(patient)
    assert study.warnings == ("14 image(s) stored as JPEG, not PNG, read in place of the missing .png files: "
                              "sag/5.jpg, sag/6.jpg, sag/7.jpg, tra/2.jpg, tra/2-3.jpg, tra/3.jpg and 8 more",)
    # one PNG among them: the others are still said once, and it is not substituted
    (patient / "tra" / "3.jpg").unlink()
    Image.open(EXAMPLES / "phantom-s2025-0000" / "tra" / "3.png").save(patient / "tra" / "3.png")
    study = load_study(patient)
    assert len(study.warnings) == 1 and study.warnings[0].startswith("13 image(s) stored as JPEG, not PNG, read in "
                                                                    "place of the missing .png files: ")


def test_run_on_a_jpg_patient_reports_one_warning(tmp_path):
    patient = tmp_path / "batch" / "pj"
    for f in sorted((EXAMPLES / "phantom-s2025-0001").rglob("*.png")):
        target = patient / f.relative_to(EXAMPLES / "phantom-s2025-0001").with_suffix(".jpg")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(f).convert("L").save(target, format="JPEG", quality=95)
    res = CliRunner().invoke(cli, ["run", "--input", str(tmp_path / "batch"), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    warnings = json.loads((tmp_path / "out" / "reports" / "pj.json").read_text())["warnings"]
    assert [w for w in warnings if "JPEG" in w] == warnings and len(warnings) == 1
