"""Issue 19 item 1 through the reader: patients with 1-3 sagittal slices are read, each distinct image counts
once (detector consensus, fusion measures), stand-in slices get their source's boxes, and the report says so."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import detector.predict as predict_module
from reader import GivenBoxes, PatientResult, Reader
from study.inputs import find_inputs, load_input
from study.loader import load_study

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# patient index -> sagittal files removed, and the stand-ins the Study must record
GAPS = {0: (("5",), {5: 6}), 1: (("6",), {6: 5}), 2: (("5", "7"), {5: 6, 7: 6}), 3: (("6", "7"), {6: 5, 7: 5})}


@pytest.fixture(scope="module")
def reader() -> Reader:
    return Reader.from_weights(ROOT / "weights", "cpu")


@pytest.fixture(scope="module")
def short(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("short")
    for k, p in enumerate(sorted(p for p in EXAMPLES.iterdir() if p.is_dir())):
        shutil.copytree(p, root / p.name)
        for s in GAPS[k][0]:
            (root / p.name / "sag" / f"{s}.png").unlink()
    return root


def studies_of(folder: Path):
    return [load_input(s) for s in find_inputs(folder)]


def test_every_patient_is_read_flagged_and_reports_its_stand_ins(reader, short):
    studies = studies_of(short)
    assert [st.sagittal_standins for st in studies] == [g[1] for g in GAPS.values()]
    for st, out in zip(studies, reader.read(studies)):
        assert isinstance(out, PatientResult), out
        rep = out.report.to_dict()
        assert rep["levels"]["sagittal_standins"] == {str(s): src for s, src in st.sagittal_standins.items()}
        assert rep["needs_review"] and any("sagittal slice(s) missing" in r for r in rep["review_reasons"])
        for s, src in st.sagittal_standins.items():
            assert rep["levels"]["vertebrae"][str(s)] == rep["levels"]["vertebrae"][str(src)]
        # fusion measured each distinct image once: as many slices as the patient has
        assert rep["curve_measurements"]["slices_used"] == len(st.real_sagittal)


def test_the_detector_places_levels_on_distinct_images_only(reader, short, monkeypatch):
    seen = []
    real_assemble = predict_module.assemble

    def spy(pid, vert, disc, cfg, refine=None, fov=None):
        seen.append((pid, sorted(vert), sorted(fov)))
        return real_assemble(pid, vert, disc, cfg, refine, fov)
    monkeypatch.setattr(predict_module, "assemble", spy)
    studies = studies_of(short)
    boxes = reader.detector.predict_batch(studies)
    # the consensus is built from each image once: a copy is no second opinion
    assert [s[1] for s in seen] == [sorted(st.sagittal_views) for st in studies] == [[6, 7], [6, 7], [6], [6]]
    assert [s[2] for s in seen] == [s[1] for s in seen]
    for st, lb in zip(studies, boxes):
        for s, src in st.sagittal_standins.items():
            assert lb.vertebrae[s] == lb.vertebrae[src] and lb.discs[s] == lb.discs[src]


def test_a_single_slice_reads_as_itself_whatever_its_number(reader, tmp_path):
    # The same image given as sag/5.png alone or as sag/6.png alone is one mid slice: same boxes, same grades.
    src = sorted(p for p in EXAMPLES.iterdir() if p.is_dir())[0]
    for name, keep in (("as5", "5"), ("as6", "5")):
        shutil.copytree(src, tmp_path / name)
        for s in ("5", "6", "7"):
            (tmp_path / name / "sag" / f"{s}.png").unlink()
        target = "5.png" if name == "as5" else "6.png"
        shutil.copy(src / "sag" / f"{keep}.png", tmp_path / name / "sag" / target)
    a, b = reader.read([load_study(tmp_path / "as5", require_all_axial=False),
                        load_study(tmp_path / "as6", require_all_axial=False)])
    assert a.boxes.vertebrae[6] == b.boxes.vertebrae[6]
    assert a.report.challenge_labels().disc_grades == b.report.challenge_labels().disc_grades
    assert np.allclose(a.grades.canal_probabilities, b.grades.canal_probabilities)


def test_given_boxes_follow_the_stand_ins(reader, short):
    studies = studies_of(short)
    given = GivenBoxes.read(EXAMPLES / "boxes.json")
    for st, out in zip(studies, reader.read(studies, given)):
        assert isinstance(out, PatientResult), out
        file_boxes = given.boxes[st.patient_id].boxes
        for s in (5, 6, 7):
            source = st.sagittal_standins.get(s, s)
            assert {lv: lb.box for lv, lb in out.boxes.vertebrae[s].items()} == dict(file_boxes[source])


def test_detector_scores_count_the_slices_a_patient_has(short):
    from dataclasses import replace

    from detector.boxes import LevelBox, LevelBoxes
    from detector.metrics import evaluate
    from study.challenge import Box, read_box_file

    truth = read_box_file(EXAMPLES / "boxes.json").by_id()
    pid = sorted(truth)[0]
    pred = LevelBoxes.from_patient_boxes(truth[pid])
    far = {lv: LevelBox(Box(0, 0, 5, 5)) for lv in pred.vertebrae[5]}     # slice 5 all wrong
    pred = replace(pred, vertebrae={**pred.vertebrae, 5: far})
    assert evaluate({pid: pred}, truth).all_levels_correct == 0.0
    # a patient without slice 5 (a stand-in there) is scored on slices 6 and 7 only
    assert evaluate({pid: pred}, truth, slices={pid: (6, 7)}).all_levels_correct == 1.0
    # without slice 6, the slice read as the mid slice (5 here) decides the mid-slice score
    assert evaluate({pid: pred}, truth, slices={pid: (5, 7)}).all_levels_correct_mid == 0.0
