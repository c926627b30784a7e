"""`run --sr`: the DICOM SR per DICOM study reads back through highdicom as the JSON report says, validates with
dciodvfy, refers only to input instances, says honestly what was not graded; PNG and NIfTI input get no SR and
a line saying why."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from dicom_factory import (
    MARKERS, assert_private, phantom_case, sagittal_series, slices_to_nifti, write_enhanced, write_study,
)

pytest.importorskip("highdicom")

from reader.folder import run_folder  # noqa: E402
from reader.sr import MEASUREMENTS, PRIVATE_CODES, PRIVATE_SCHEME, read_sr_findings  # noqa: E402
from study.levels import CANAL_POSITIONS, DISCS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights"
EXAMPLES = ROOT / "examples"
UNITS = {key: unit for key, _, unit in MEASUREMENTS}


@pytest.fixture(scope="module")
def sr_run(tmp_path_factory):
    """One batch: a clinical DICOM study, a DICOM study whose short sagittal field of view leaves C7 out, a
    challenge PNG patient and a NIfTI patient, read with --sr."""
    root = tmp_path_factory.mktemp("sr_in")
    ph, specs, _ = phantom_case()
    written = {"patient-a": write_study(root / "patient-a", specs)}
    short = sagittal_series(ph, shape=(150, 290))   # 135 mm tall: C7 lies below it (measured: C7 outside)
    fov_specs = [dataclasses.replace(s, slices=short) if s.number == 3 else s for s in specs if s.number in (3, 4)]
    written["patient-fov"] = write_study(root / "patient-fov", fov_specs, seed=1, study_key="short-fov")
    shutil.copytree(EXAMPLES / "phantom-s2025-0000", root / "phantom-s2025-0000")
    slices_to_nifti(sagittal_series(ph), root / "patient-nii" / "sag_t2.nii.gz")
    out = tmp_path_factory.mktemp("sr_out")
    lines = []
    rc = run_folder(root, out, WEIGHTS, sr=True, echo=lambda m, err=False: lines.append(m))
    return root, out, rc, lines, written


def _report(out: Path, pid: str) -> dict:
    return json.loads((out / "reports" / f"{pid}.json").read_text())


def test_an_sr_per_dicom_study_and_none_for_png_or_nifti(sr_run):
    _, out, rc, lines, _ = sr_run
    assert rc == 0, lines                                            # no error exit for the rest of the run
    assert sorted(p.name for p in (out / "sr").iterdir()) == ["patient-a.dcm", "patient-fov.dcm"]
    text = "\n".join(lines)
    assert "DICOM SR: 2 written" in text
    png = next(m for m in lines if m.startswith("no DICOM SR") and "phantom-s2025-0000" in m)
    assert "challenge PNG input carries no DICOM study" in png
    nii = next(m for m in lines if m.startswith("no DICOM SR") and "patient-nii" in m)
    assert "not DICOM (a NIfTI volume" in nii
    run = json.loads((out / "run.json").read_text())
    assert set(run["sr"]["not_written"]) == {"phantom-s2025-0000", "patient-nii"} and run["sr"]["written"] == 2


@pytest.mark.parametrize("pid", ["patient-a", "patient-fov"])
def test_sr_reads_back_through_highdicom_as_the_json_report(sr_run, pid):
    _, out, _, _, _ = sr_run
    report = _report(out, pid)
    found = read_sr_findings(out / "sr" / f"{pid}.dcm")
    assert found["disc"] == {d: report["disc"][d]["grade"] for d in DISCS}
    assert found["canal"] == {p: report["canal"][p]["grade"] for p in CANAL_POSITIONS}
    assert found["curvature"] == report["curvature"]["class"]
    assert found["alignment"] == report["alignment"]["class"]
    expected = {k: (report["curve_measurements"][k], UNITS[k]) for k in UNITS
                if report["curve_measurements"] and report["curve_measurements"].get(k) is not None}
    assert found["measurements"] == expected


def test_a_clinical_study_has_every_grade_and_measurement(sr_run):
    _, out, _, _, _ = sr_run
    found = read_sr_findings(out / "sr" / "patient-a.dcm")
    assert None not in found["disc"].values() and None not in found["canal"].values()
    assert found["not_graded"] == [] and found["curvature"] is not None
    assert set(found["measurements"]) == {"c2c7_angle_deg", "curvature_index", "posterior_step_max_mm"}
    assert len(found["locations"]) == len(CANAL_POSITIONS)


def test_levels_outside_the_field_of_view_are_not_graded_in_the_sr(sr_run):
    _, out, _, _, _ = sr_run
    report = _report(out, "patient-fov")
    outside = report["outside_field_of_view"]
    assert "C7" in outside
    found = read_sr_findings(out / "sr" / "patient-fov.dcm")
    withheld = [p for p in CANAL_POSITIONS if report["canal"][p]["grade"] is None]
    assert withheld and all(found["canal"][p] is None for p in withheld)
    assert [f"canal {p}" for p in withheld] == [n for n in found["not_graded"] if n.startswith("canal ")]
    assert "curve" in found["not_graded"] and found["measurements"] == {} and found["curvature"] is None
    assert not any(loc.split()[0] in withheld for loc in found["locations"])
    # The status is coded with the private scheme, never as a grade value.
    ds = pydicom.dcmread(out / "sr" / "patient-fov.dcm")
    codes = {(i.CodingSchemeDesignator, i.CodeValue) for i in _code_items(ds)}
    assert (PRIVATE_SCHEME, "NOT-GRADED-FOV") in codes


def _code_items(ds):
    for item in ds.get("ContentSequence", []):
        if item.get("ValueType") == "CODE":
            yield item.ConceptCodeSequence[0]
        yield from _code_items(item)


def test_every_referenced_instance_is_an_input_file(sr_run):
    _, out, _, _, written = sr_run
    for pid, study in written.items():
        inputs = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
                  for files in study.files.values() for f in files}
        refs = read_sr_findings(out / "sr" / f"{pid}.dcm")["referenced_sop_instance_uids"]
        assert refs and refs <= inputs, refs - inputs
        sagittal = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in study.files[3]}
        assert len(refs & sagittal) == 3                             # slices 5, 6, 7


def test_sr_carries_the_source_patient_and_study_and_nothing_else_does(sr_run):
    root, out, _, lines, written = sr_run
    src = pydicom.dcmread(written["patient-a"].files[3][0], stop_before_pixels=True)
    sr = pydicom.dcmread(out / "sr" / "patient-a.dcm")
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyInstanceUID",
               "ReferringPhysicianName"):
        assert str(sr[kw].value) == str(src[kw].value), kw
    assert str(sr.PatientName) == MARKERS["PatientName"]
    assert sr.Modality == "SR" and sr.SeriesInstanceUID != src.SeriesInstanceUID
    assert sr.CodingSchemeIdentificationSequence[-1].CodingSchemeDesignator == PRIVATE_SCHEME
    # Every other output stays de-identified.
    texts = [p.read_text(errors="replace") for p in out.rglob("*") if p.is_file() and p.suffix in (".json", ".html")]
    assert_private(*texts, *lines)


def test_private_code_meanings_fit_dicom():
    assert all(0 < len(v) <= 64 for v in PRIVATE_CODES.values())


def test_dciodvfy_reports_no_error(sr_run):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed; .ci/run installs it")
    _, out, _, _, _ = sr_run
    for path in sorted((out / "sr").glob("*.dcm")):
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        messages = (result.stdout + result.stderr).splitlines()
        errors = [m for m in messages if m.startswith("Error")]
        assert not errors, (path.name, errors)
        assert any("ComprehensiveSR" in m for m in messages), messages[-5:]


def test_a_multi_frame_sagittal_is_referenced_by_frame(tmp_path):
    """An Enhanced MR sagittal series (one file, one frame per slice): the SR names the frames read."""
    _, specs, _ = phantom_case()
    root = tmp_path / "in" / "patient-mf"
    sag = write_enhanced(root / "sag.dcm", next(s for s in specs if s.number == 3), study_key="mf")
    write_study(root, [s for s in specs if s.number == 4], study_key="mf")
    out = tmp_path / "out"
    assert run_folder(tmp_path / "in", out, WEIGHTS, sr=True, echo=lambda m, err=False: None) == 0
    ds = pydicom.dcmread(out / "sr" / "patient-mf.dcm")
    sop = str(pydicom.dcmread(sag, stop_before_pixels=True).SOPInstanceUID)
    frames = {int(i.ReferencedSOPSequence[0].ReferencedFrameNumber) for i in _image_items(ds)
              if i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == sop}
    assert len(frames) == 3                                           # slices 5, 6, 7: three frames
    found = read_sr_findings(out / "sr" / "patient-mf.dcm")
    report = _report(out, "patient-mf")
    assert found["disc"] == {d: report["disc"][d]["grade"] for d in DISCS}


def _image_items(ds):
    for item in ds.get("ContentSequence", []):
        if item.get("ValueType") == "IMAGE":
            yield item
        yield from _image_items(item)


def test_an_sr_that_fails_is_that_patients_error_without_identifying_values(tmp_path, monkeypatch):
    """The reading is kept (report, predictions); errors.json names the SR failure, scrubbed of the study's
    identifying values; no partial SR file is left."""
    import reader.sr as sr_module

    def broken(result, version):
        raise ValueError(f"cannot encode {MARKERS['PatientName']} born {MARKERS['PatientBirthDate']}")

    monkeypatch.setattr(sr_module, "build_sr", broken)
    write_study(tmp_path / "in" / "patient-a", phantom_case()[1])
    out = tmp_path / "out"
    lines = []
    assert run_folder(tmp_path / "in", out, WEIGHTS, sr=True, echo=lambda m, err=False: lines.append(m)) == 1
    errors = json.loads((out / "errors.json").read_text())
    assert [e["id"] for e in errors] == ["patient-a"]
    assert errors[0]["error"].startswith("DICOM SR not written: ValueError: cannot encode [redacted]")
    assert (out / "reports" / "patient-a.json").is_file() and "patient-a" in (out / "predictions.json").read_text()
    assert not (out / "sr").exists() or not any((out / "sr").iterdir())
    assert_private((out / "errors.json").read_text(), (out / "report.html").read_text(), *lines)


def test_a_two_slice_sagittal_series_is_referenced_by_the_slices_it_has(tmp_path):
    """Issue 19 with issue 21: a sagittal series of 2 slices is read with a stand-in for the missing side; its
    SR is written and refers to the two stored slices, each once."""
    _, specs, _ = phantom_case()
    sag = next(s for s in specs if s.number == 3)
    two = dataclasses.replace(sag, slices=sag.slices[3:5])
    written = write_study(tmp_path / "in" / "patient-two", [two] + [s for s in specs if s.number == 4],
                          study_key="two")
    out = tmp_path / "out"
    assert run_folder(tmp_path / "in", out, WEIGHTS, sr=True, echo=lambda m, err=False: None) == 0
    report = _report(out, "patient-two")
    assert len(report["levels"]["sagittal_standins"]) == 1
    sagittal = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in written.files[3]}
    found = read_sr_findings(out / "sr" / "patient-two.dcm")
    assert found["referenced_sop_instance_uids"] & sagittal == sagittal and len(sagittal) == 2
    assert found["disc"] == {d: report["disc"][d]["grade"] for d in DISCS}
