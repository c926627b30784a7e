"""`run --engine ray` on a local 2-CPU Ray instance writes what a local run writes: predictions.json, reports/ and
errors.json byte-identical (a bad patient included), report.html listing the same patients, the same DICOM SR
findings with --sr."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _run(args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "pipeline.py"), "run", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def test_ray_run_is_byte_identical_to_a_local_run(tmp_path):
    data = tmp_path / "in"
    for p in sorted(EXAMPLES.glob("phantom-*")):
        shutil.copytree(p, data / p.name)
    # A bad patient: it has no sagittal image at all (1 or 2 missing slices are stood in for, issue 19). It fails
    # alone, in both runs.
    shutil.copytree(EXAMPLES / "phantom-s2025-0001", data / "bad-patient")
    for s in (5, 6, 7):
        (data / "bad-patient" / "sag" / f"{s}.png").unlink()
    # A DICOM study, for the SR.
    from dicom_factory import phantom_case, write_study
    write_study(data / "patient-dicom", phantom_case()[1])
    # Each Ray worker asks for 1 CPU and runs 1 thread; the local run gets the same (a thread count changes the
    # last digit of a measured value, see README).
    # Batches of 2, so that both workers get some of the 3 batches.
    local = _run(["--input", data, "--out", tmp_path / "local", "--batch-size", 2, "--sr"],
                 env={"OMP_NUM_THREADS": "1"})
    ray = _run(["--input", data, "--out", tmp_path / "ray", "--engine", "ray", "--workers", 2, "--batch-size", 2,
                "--sr"])
    assert local.returncode == ray.returncode == 1, (local.stderr[-2000:], ray.stderr[-2000:])
    a, b = tmp_path / "local", tmp_path / "ray"
    for name in ("predictions.json", "errors.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    reports = sorted(p.name for p in (a / "reports").iterdir())
    assert reports == sorted(p.name for p in (b / "reports").iterdir()) and len(reports) == 5
    for name in reports:
        assert (a / "reports" / name).read_bytes() == (b / "reports" / name).read_bytes(), name
    assert "bad-patient" in (b / "errors.json").read_text() and "no sagittal image" in ray.stderr
    html = (b / "report.html").read_text()
    assert all(p.removesuffix(".json") in html for p in reports) and "bad-patient" in html
    # The SR: written by a worker, the same findings (its content date and time differ).
    from reader.sr import read_sr_findings
    assert [p.name for p in (b / "sr").iterdir()] == ["patient-dicom.dcm"]
    assert read_sr_findings(a / "sr" / "patient-dicom.dcm") == read_sr_findings(b / "sr" / "patient-dicom.dcm")
    assert "no DICOM SR for 4 patient(s)" in ray.stdout and "challenge PNG" in ray.stdout
    # Only complete files: no temporary left behind.
    assert not [p for p in b.rglob(".*") if p.is_file()]
    assert '"engine": "ray"' in (b / "run.json").read_text()
    # issue 20's OUT rules hold on Ray: run.json lists every file written (the worker-written SR included) and
    # says the run finished; every file has the mode a local run gives it.
    import json
    import stat
    info = json.loads((b / "run.json").read_text())
    written = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    assert info["complete"] is True and info["outputs"] == written and "sr/patient-dicom.dcm" in written
    modes = {p.relative_to(b).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in b.rglob("*") if p.is_file()}
    assert modes == {p.relative_to(a).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in a.rglob("*")
                     if p.is_file()}
    # A reused OUT is refused before Ray starts, changing nothing.
    before = {p: p.read_bytes() for p in b.rglob("*") if p.is_file()}
    again = _run(["--input", EXAMPLES, "--out", b, "--engine", "ray", "--workers", 2])
    assert again.returncode == 2 and "--overwrite" in again.stderr, again.stderr[-2000:]
    assert {p: p.read_bytes() for p in b.rglob("*") if p.is_file()} == before
