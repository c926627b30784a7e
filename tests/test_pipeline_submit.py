"""`pipeline.py submit`: a complete submission in the template's order, gaps filled from the training prior."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from pipeline import WEIGHTS, cli
from study.levels import CANAL_POSITIONS, DISCS


def row(pid, qd=1, sl=1, disc=(1, 2, 3, 0, 1), canal=(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2)):
    return {"id": pid, "qd": qd, "sl": sl, "zjppt": list(disc), "zyzg": list(canal)}


def write(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def submit(tmp_path, pred, template, weights=WEIGHTS):
    out = tmp_path / "sub" / "submission.json"
    out.parent.mkdir(exist_ok=True)
    res = CliRunner().invoke(cli, ["submit", "--pred", str(write(tmp_path / "pred.json", pred)),
                                   "--template", str(write(tmp_path / "template.json", template)),
                                   "--out", str(out), "--weights", str(weights)])
    return res, out


def expected_prior(weights: Path):
    """The prior row recomputed from the weights' label_prior counts (argmax, lowest grade on a tie)."""
    cls = json.loads((weights / "classifier" / "classifier.json").read_text())["label_prior"]
    fus = json.loads((weights / "fusion" / "fusion.json").read_text())["label_prior"]
    return {"qd": int(np.argmax(fus["curvature_counts"])), "sl": int(np.argmax(fus["alignment_counts"])),
            "zjppt": [int(np.argmax(cls["disc_grade_counts"][d])) for d in DISCS],
            "zyzg": [int(np.argmax(cls["canal_grade_counts"][p])) for p in CANAL_POSITIONS]}


def test_missing_patients_are_filled_from_the_prior_in_template_order(tmp_path):
    pred = [row("b", qd=2), row("a", qd=0, sl=0)]
    # The challenge's template: rows with every label 0; only the ids and their order count.
    template = [row(p, 0, 0, (0,) * 5, (0,) * 11) for p in ("c", "a", "d", "b")]
    res, out = submit(tmp_path, pred, template)
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())
    assert [r["id"] for r in rows] == ["c", "a", "d", "b"]
    assert rows[1] == row("a", qd=0, sl=0) and rows[3] == row("b", qd=2)     # predictions kept as they are
    prior = expected_prior(WEIGHTS)
    for r in (rows[0], rows[2]):
        assert {k: v for k, v in r.items() if k != "id"} == prior
    assert "2 of 4 id(s)" in res.output and "c, d" in res.output          # named on stderr
    side = json.loads((out.parent / "submission.filled.json").read_text())
    assert side["filled_from_prior"] == ["c", "d"] and side["n_rows"] == 4
    assert {k: v for k, v in side["prior_row"].items() if k != "id"} == prior


def test_a_template_of_plain_ids_and_nothing_to_fill(tmp_path):
    res, out = submit(tmp_path, [row("x"), row("7")], [7, "x"])          # ids may be integers
    assert res.exit_code == 0, res.output
    assert [r["id"] for r in json.loads(out.read_text())] == ["7", "x"]
    assert json.loads((out.parent / "submission.filled.json").read_text())["filled_from_prior"] == []
    assert "filled" not in res.output


def test_an_id_not_in_the_template_is_refused(tmp_path):
    res, out = submit(tmp_path, [row("a"), row("stranger")], ["a", "b"])
    assert res.exit_code == 2
    assert "not in the template" in res.output and "stranger" in res.output and "pred.json" in res.output
    assert not out.exists()


def test_unusable_template_and_predictions_are_clear_errors(tmp_path):
    res, _ = submit(tmp_path, [row("a")], {"id": "a"})
    assert res.exit_code == 2 and "template must be a non-empty JSON list" in res.output
    res, _ = submit(tmp_path, [row("a")], ["a", "a"])
    assert res.exit_code == 2 and "duplicate id(s) in the template: a" in res.output
    res, _ = submit(tmp_path, [{"id": "a", "qd": 9}], ["a"])
    assert res.exit_code == 2 and "predictions unusable" in res.output and "Traceback" not in res.output


def test_weights_without_a_prior_fill_grade_0_and_say_so(tmp_path):
    weights = tmp_path / "w"
    for stage, name in (("classifier", "classifier.json"), ("fusion", "fusion.json")):
        (weights / stage).mkdir(parents=True)
        (weights / stage / name).write_text("{}")
    res, out = submit(tmp_path, [], ["a"], weights)
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text()) == [row("a", 0, 0, (0,) * 5, (0,) * 11)]
    notes = " ".join(json.loads((out.parent / "submission.filled.json").read_text())["prior_notes"])
    assert "carry no label prior" in notes
    res, _ = submit(tmp_path, [], ["a"], tmp_path / "nowhere")
    assert res.exit_code == 2 and "cannot read the training prior" in res.output
