"""The reader as a library: Reader.from_weights loads once, read() returns typed results and failures in order,
and what it reads is what `run` writes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from reader import GivenBoxes, PatientFailure, PatientResult, Reader, ReaderError
from study.challenge import PatientBoxes
from study.inputs import find_inputs, load_input

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
WEIGHTS = ROOT / "weights"


@pytest.fixture(scope="module")
def reader() -> Reader:
    return Reader.from_weights(WEIGHTS, "cpu")


def test_read_returns_what_run_writes(reader, examples_run):
    outcomes = reader.read_sources(find_inputs(EXAMPLES))
    assert [type(o) for o in outcomes] == [PatientResult] * len(outcomes)
    assert [o.patient_id for o in outcomes] == examples_run.order
    for o in outcomes:
        assert o.report.to_dict() == examples_run.report(o.patient_id)
        row = json.loads(json.dumps(o.report.challenge_labels().__dict__))
        assert row["curvature"] == examples_run.predictions[o.patient_id]["qd"]
    # the stage clock saw every stage of the batch
    assert {"load images", "detector", "classifier", "fusion"} <= set(reader.clock.seconds)


def test_one_patient_failing_stays_its_own_failure(reader):
    studies = [load_input(s) for s in find_inputs(EXAMPLES)[:2]]
    first, second = studies
    given = GivenBoxes.read(EXAMPLES / "boxes.json")
    # the second patient has no boxes in the given file: it fails at "boxes", the first is read as usual
    only_first = GivenBoxes({first.patient_id: given.boxes[first.patient_id]}, {})
    a, b = reader.read([first, second], only_first)
    assert isinstance(a, PatientResult) and a.report.box_source == "given"
    assert isinstance(b, PatientFailure) and b.stage == "boxes"
    assert b.message == f"patient {second.patient_id}: no boxes for this patient in the box file"
    # given boxes that lack a level fail that patient alone, at the same stage
    squashed = PatientBoxes(second.patient_id, {s: {lv: bx for lv, bx in levels.items() if lv != "C4"}
                                                for s, levels in given.boxes[second.patient_id].boxes.items()})
    (c,) = reader.read([second], GivenBoxes({second.patient_id: squashed}, {}))
    assert isinstance(c, PatientFailure) and c.stage == "boxes" and "C4" in c.message


def test_unusable_weights_are_one_error_before_anything_is_read(tmp_path):
    with pytest.raises(ReaderError, match="MANIFEST"):
        Reader.from_weights(tmp_path, "cpu")
