"""The geometry command: per-patient rows, per-patient errors for bad rows, exit codes 0/1/2."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from fusion.cli import EXIT_OK, EXIT_SOME_FAILED, EXIT_UNUSABLE, geometry_command
from study.challenge import patient_boxes_to_row
from study.levels import ALIGNMENT_CLASSES, CURVATURE_CLASSES, VERTEBRAE

from fusion_helpers import arc, column, patient

ROOT = Path(__file__).resolve().parents[1]


def good_row(pid: str, depth: float = 5.0) -> dict:
    return patient_boxes_to_row(patient(pid, column(arc(depth))))


def write(path: Path, rows) -> Path:
    path.write_text(json.dumps(rows))
    return path


def test_all_good_rows(tmp_path, capsys):
    boxes = write(tmp_path / "boxes.json", [good_row("a", 6), good_row("b", -4)])
    assert geometry_command(boxes, tmp_path / "out.json") == EXIT_OK
    rows = json.loads((tmp_path / "out.json").read_text())
    assert [r["id"] for r in rows] == ["a", "b"]
    for r in rows:
        assert r["curvature"] in CURVATURE_CLASSES and r["alignment"] in ALIGNMENT_CLASSES
        assert sum(r["curvature_probs"].values()) == pytest.approx(1, abs=1e-3)
        assert sum(r["alignment_probs"].values()) == pytest.approx(1, abs=1e-3)
        assert "error" not in r
    assert rows[0]["measures"]["curvature_index"] > 0 > rows[1]["measures"]["curvature_index"]
    assert "2 of 2 patients assessed" in capsys.readouterr().err


def test_bad_rows_get_errors_and_others_still_assessed(tmp_path, capsys):
    missing = good_row("missing_level")
    del missing["C4"]
    inverted = good_row("inverted")
    inverted["C3"][1] = "(120,80)(100,60)"
    malformed = good_row("malformed")
    malformed["C5"][0] = "(1,2)-(3,4)"
    off_image = good_row("off_image")
    off_image["C7"][2] = "(100,200)(120,230)"
    disordered = good_row("disordered")
    disordered["C6"] = ["(100,20)(120,40)"] * 3  # C6 above C2 on every slice
    side_slice = good_row("side_slice_only")
    side_slice["C4"][2] = "(100,10)(120,30)"  # only slice 7 disordered: dropped with a warning
    rows_in = [good_row("ok1"), missing, inverted, malformed, off_image, disordered, side_slice, good_row("ok2")]
    boxes = write(tmp_path / "boxes.json", rows_in)
    assert geometry_command(boxes, tmp_path / "out.json") == EXIT_SOME_FAILED
    out = {r["id"]: r for r in json.loads((tmp_path / "out.json").read_text())}
    assert set(out) == {r["id"] for r in rows_in}
    for pid in ("ok1", "ok2", "side_slice_only"):
        assert "error" not in out[pid] and out[pid]["curvature"] in CURVATURE_CLASSES
    assert out["side_slice_only"]["warnings"] and "slice 7" in out["side_slice_only"]["warnings"][0]
    assert "C4" in out["missing_level"]["error"]
    assert "inverted" in out["inverted"]["error"]
    assert "malformed" in out["malformed"]["error"]
    assert "outside" in out["off_image"]["error"]
    assert "not ordered" in out["disordered"]["error"]
    err = capsys.readouterr().err
    for pid in ("missing_level", "inverted", "malformed", "off_image", "disordered"):
        assert f"patient {pid}" in err
    assert "3 of 8 patients assessed, 5 failed" in err


def test_unusable_file_exit_2_and_nothing_written(tmp_path, capsys):
    bad = tmp_path / "boxes.json"
    bad.write_text("{not json")
    assert geometry_command(bad, tmp_path / "out.json") == EXIT_UNUSABLE
    assert not (tmp_path / "out.json").exists()
    assert "not valid JSON" in capsys.readouterr().err
    assert geometry_command(tmp_path / "absent.json", tmp_path / "out.json") == EXIT_UNUSABLE


def test_missing_weights_exit_2(tmp_path):
    boxes = write(tmp_path / "boxes.json", [good_row("a")])
    assert geometry_command(boxes, tmp_path / "out.json", tmp_path / "no_weights") == EXIT_UNUSABLE


def test_refuses_to_overwrite_input(tmp_path):
    boxes = write(tmp_path / "boxes.json", [good_row("a")])
    before = boxes.read_text()
    assert geometry_command(boxes, boxes) == EXIT_UNUSABLE
    assert boxes.read_text() == before


def test_pipeline_entry_point(tmp_path):
    import pipeline
    boxes = write(tmp_path / "boxes.json", [good_row("a"), {"id": "b"}])
    res = CliRunner().invoke(pipeline.cli, ["geometry", "--boxes", str(boxes), "--out", str(tmp_path / "o.json")])
    assert res.exit_code == EXIT_SOME_FAILED
    rows = json.loads((tmp_path / "o.json").read_text())
    assert [r["id"] for r in rows] == ["a", "b"]  # input order kept, failed rows included
    assert "error" not in rows[0] and "missing level" in rows[1]["error"]
    assert all(math.isfinite(v) for v in rows[0]["curvature_probs"].values())
