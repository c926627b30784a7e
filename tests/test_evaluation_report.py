"""Tests of `pipeline.py evaluate`: printed tables, last line, metrics.json, PNGs and bad-file handling."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # so plain `pytest` works as well as `python -m pytest`
    sys.path.insert(0, str(ROOT))

from evaluation.report import (  # noqa: E402
    METRICS_FILE, confusion_png_name, evaluate_command, format_report,
)
from evaluation.metrics import TASK_WEIGHTS, challenge_score  # noqa: E402
from study.challenge import PatientLabels, write_labels  # noqa: E402

SCORE_LINE = re.compile(r"^score: \d\.\d{4}$")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def P(pid, curv, align, disc, canal) -> PatientLabels:
    return PatientLabels(pid, curv, align, tuple(disc), tuple(canal))


# The 3-patient example of test_evaluation_metrics: score = 0.2*5/9 + 0.2*1/2 + 0.3*266/396
# + 0.3*5/9 = 0.579293 -> "score: 0.5793".
TRUTH3 = [
    P("P1", 0, 0, [0, 0, 0, 0, 0], [0] * 11),
    P("P2", 1, 1, [1, 1, 1, 1, 1], [1] * 11),
    P("P3", 2, 0, [2, 2, 2, 2, 3], [2] * 11),
]
PRED3 = [
    P("P1", 0, 0, [0, 0, 0, 0, 0], [0] * 11),
    P("P2", 1, 0, [1, 1, 1, 1, 0], [1] * 11),
    P("P3", 1, 1, [2, 2, 2, 2, 2], [1] * 11),
]


@pytest.fixture
def files(tmp_path):
    labels, pred = tmp_path / "labels.json", tmp_path / "pred.json"
    write_labels(labels, TRUTH3)
    write_labels(pred, PRED3)
    return labels, pred


def run(labels, pred, out_dir=None):
    out, err = io.StringIO(), io.StringIO()
    rc = evaluate_command(labels, pred, out_dir, out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def test_last_line_is_the_score(files):
    rc, out, err = run(*files)
    assert rc == 0
    lines = out.rstrip("\n").split("\n")
    assert SCORE_LINE.match(lines[-1])
    assert lines[-1] == "score: 0.5793"
    assert err == ""


def test_report_prints_every_table(files):
    _, out, _ = run(*files)
    for task in TASK_WEIGHTS:
        assert f"{task}: per class, one-vs-rest" in out
        assert f"{task}: confusion matrix" in out
    for heading in ("Challenge score by task", "Disc grade by level", "Canal grade by position",
                    "sensitivity", "specificity", "PPV", "NPV", "C6-7", "C4-5"):
        assert heading in out


def test_perfect_predictions_print_one(tmp_path, files):
    labels, _ = files
    rc, out, _ = run(labels, labels)
    assert rc == 0 and out.rstrip().split("\n")[-1] == "score: 1.0000"


def test_out_writes_metrics_json_and_pngs(tmp_path, files):
    out_dir = tmp_path / "results" / "eval"  # created on demand
    rc, out, _ = run(*files, out_dir)
    assert rc == 0
    assert SCORE_LINE.match(out.rstrip().split("\n")[-1])
    for task in TASK_WEIGHTS:
        png = out_dir / confusion_png_name(task)
        assert png.is_file() and png.read_bytes()[:8] == PNG_MAGIC
    data = json.loads((out_dir / METRICS_FILE).read_text())
    assert data["score"] == pytest.approx(challenge_score(TRUTH3, PRED3).score)
    assert data["conventions"]["macro_class_set"] == "union"
    assert [t["task"] for t in data["tasks"]] == list(TASK_WEIGHTS)
    assert len(data["disc_levels"]) == 5 and len(data["canal_levels"]) == 11
    # Nothing but the results: no temporary files left behind.
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        [METRICS_FILE] + [confusion_png_name(t) for t in TASK_WEIGHTS])


def test_missing_and_extra_patients_are_reported(tmp_path, files):
    labels, _ = files
    pred = tmp_path / "partial.json"
    write_labels(pred, PRED3[:2] + [P("P9", 0, 0, [0] * 5, [0] * 11)])
    out_dir = tmp_path / "out"
    rc, out, err = run(labels, pred, out_dir)
    assert rc == 0
    assert "missing predictions: 1 patient(s)" in out and "P3" in out
    assert "predictions for unknown ids: 1" in out and "P9" in out
    assert "no prediction" in out  # the extra confusion column
    assert "warning" in err and str(labels) in err
    data = json.loads((out_dir / METRICS_FILE).read_text())
    assert data["missing_ids"] == ["P3"] and data["extra_ids"] == ["P9"]
    assert out.rstrip().split("\n")[-1] == f"score: {challenge_score(TRUTH3, PRED3[:2]).score:.4f}"


@pytest.mark.parametrize("content, which", [
    ("not json", "pred"),
    ('[{"id": "P1", "qd": 7, "sl": 0, "zjppt": [0,0,0,0,0], "zyzg": [0,0,0,0,0,0,0,0,0,0,0]}]', "pred"),
    ('{"id": "P1"}', "labels"),
    ("[]", "labels"),
])
def test_bad_files_exit_2_naming_the_file(tmp_path, files, content, which):
    labels, pred = files
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    args = (bad, pred) if which == "labels" else (labels, bad)
    rc, out, err = run(*args)
    assert rc == 2
    assert str(bad) in err and "error" in err
    assert out == ""


def test_missing_file_exits_2(tmp_path, files):
    labels, _ = files
    rc, _, err = run(labels, tmp_path / "nope.json")
    assert rc == 2 and "nope.json" in err and "not found" in err


def test_unwritable_out_dir_exits_2(tmp_path, files):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    rc, _, err = run(*files, blocker / "sub")
    assert rc == 2 and "cannot write" in err


def test_format_report_ends_with_score():
    lines = format_report(challenge_score(TRUTH3, PRED3))
    assert lines[-1] == "score: 0.5793"


def test_cli_end_to_end(tmp_path, files):
    labels, pred = files
    out_dir = tmp_path / "cli_out"
    proc = subprocess.run([sys.executable, str(ROOT / "pipeline.py"), "evaluate", "--labels", str(labels),
                           "--pred", str(pred), "--out", str(out_dir)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip("\n").split("\n")[-1] == "score: 0.5793"
    assert (out_dir / METRICS_FILE).is_file()
    assert all((out_dir / confusion_png_name(t)).is_file() for t in TASK_WEIGHTS)


def test_cli_bad_file_has_no_traceback(tmp_path, files):
    labels, _ = files
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    proc = subprocess.run([sys.executable, str(ROOT / "pipeline.py"), "evaluate", "--labels", str(labels),
                           "--pred", str(bad)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert str(bad) in proc.stderr
    assert "Traceback" not in proc.stderr
