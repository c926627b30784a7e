"""Tests for `pipeline.py validate`: per-patient lines, the summary line and exit codes 0/1/2."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

from conftest import write_png
from pipeline import cli
from study.levels import CANAL_POSITIONS, SAGITTAL_SLICES
from study.validate import validate_command

N_SAG, N_TRA = len(SAGITTAL_SLICES), len(CANAL_POSITIONS)


def run(root: Path, capsys, **kwargs):
    code = validate_command(root, **kwargs)
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_all_usable_exits_0(make_patient, tmp_path, capsys):
    make_patient("p1")
    make_patient("p2")
    code, lines, err = run(tmp_path / "batch", capsys)
    assert code == 0
    assert lines == [f"OK    p1  sag {N_SAG}/{N_SAG}  tra {N_TRA}/{N_TRA}",
                     f"OK    p2  sag {N_SAG}/{N_SAG}  tra {N_TRA}/{N_TRA}",
                     "2 patients: 2 usable, 0 with warnings, 0 unusable"]
    assert err == ""


def test_warnings_still_exit_0(make_patient, tmp_path, capsys):
    make_patient("p1", size=512)
    make_patient("p2")
    code, lines, _ = run(tmp_path / "batch", capsys)
    assert code == 0
    assert lines[0].startswith("WARN  p1  sag 3/3  tra 11/11  | ")
    # Fourteen identical resize warnings collapse into one entry on the line.
    assert lines[0].count("512x512") == 1 and "13 more" in lines[0]
    assert lines[1].startswith("OK    p2")
    assert lines[-1] == "2 patients: 2 usable, 1 with warnings, 0 unusable"


def test_an_unusable_patient_exits_1_and_names_the_file(make_patient, tmp_path, capsys):
    make_patient("p1")
    bad = make_patient("p2")
    (bad / "sag" / "6.png").write_bytes(b"not a png")
    write_png(bad / "tra" / "3.png", np.zeros((10, 10, 3), np.uint8))  # odd size and mode too
    (tmp_path / "batch" / "p3").mkdir()
    code, lines, _ = run(tmp_path / "batch", capsys)
    assert code == 1
    assert lines[0].startswith("OK    p1")
    assert lines[1].startswith(f"ERROR p2  sag 2/3  tra {N_TRA}/{N_TRA}  | ")
    assert "sag/6.png: not an image" in lines[1]
    assert "tra/3.png" in lines[1] and "10x10" in lines[1] and "RGB" in lines[1]
    assert lines[2].startswith("ERROR p3  sag 0/3  tra 0/11  | ") and "empty" in lines[2]
    assert lines[-1] == "3 patients: 1 usable, 0 with warnings, 2 unusable"


def test_missing_axial_warns_by_default_and_errs_when_required(make_patient, capsys):
    folder = make_patient("p1", skip=["tra/4-5.png"])
    code, lines, _ = run(folder, capsys)
    assert code == 0
    assert lines[0].startswith(f"WARN  p1  sag 3/3  tra {N_TRA - 1}/{N_TRA}")
    assert "tra/4-5.png: missing axial image for C4-5; left out" in lines[0]
    code, lines, _ = run(folder, capsys, require_all_axial=True)
    assert code == 1
    assert lines[0].startswith("ERROR p1") and "tra/4-5.png" in lines[0]


def test_single_patient_root(patient_dir, capsys):
    code, lines, _ = run(patient_dir, capsys)
    assert code == 0
    assert lines == [f"OK    p001  sag 3/3  tra {N_TRA}/{N_TRA}", "1 patients: 1 usable, 0 with warnings, 0 unusable"]


def test_unusable_root_exits_2_without_traceback(tmp_path, capsys):
    code, lines, err = run(tmp_path / "missing", capsys)
    assert code == 2
    assert lines == []
    assert "does not exist" in err and "missing" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(tmp_path / "empty", capsys)
    assert code == 2 and "no patient folder" in err


def test_cli_exit_codes(make_patient, tmp_path):
    runner = CliRunner()
    make_patient("good")
    result = runner.invoke(cli, ["validate", "--input", str(tmp_path / "batch")])
    assert result.exit_code == 0, result.output
    assert "1 patients: 1 usable, 0 with warnings, 0 unusable" in result.output

    make_patient("short", skip=["sag/5.png"])    # read: slice 6 stands in for the missing 5
    result = runner.invoke(cli, ["validate", "--input", str(tmp_path / "batch")])
    assert result.exit_code == 0, result.output
    assert "WARN  short  sag 2/3" in result.output and "sag/5: sagittal slice 5 missing; slice 6 stands in" \
        in result.output

    make_patient("bad", skip=["sag/5.png", "sag/6.png", "sag/7.png"])
    result = runner.invoke(cli, ["validate", "--input", str(tmp_path / "batch")])
    assert result.exit_code == 1
    assert "ERROR bad" in result.output and "sag/ is missing" in result.output

    result = runner.invoke(cli, ["validate", "--input", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_dicom_series_of_one_sagittal_slice_is_usable_and_counted_as_one(tmp_path, capsys):
    from dicom_factory import phantom_case, write_study

    _, specs, _ = phantom_case()
    sag = [sp for sp in specs if sp.number == 3][0]
    sag.slices = sag.slices[3:4]
    write_study(tmp_path / "batch" / "one", [sag])
    code, lines, _ = run(tmp_path / "batch", capsys)
    assert code == 0, lines
    assert lines[0].startswith(f"WARN  one  sag 1/{N_SAG}") and "stands in" in lines[0]
