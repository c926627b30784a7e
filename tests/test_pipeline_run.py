"""`pipeline.py run` end to end with the shipped weights: outputs, a bad patient, oracle boxes, integrity, browser."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import cli
from release.manifest import MANIFEST, WeightsError, verify_manifest, write_manifest
from study.challenge import read_labels

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> Path:
    """The examples plus one patient whose mid-sagittal PNG is truncated."""
    root = tmp_path_factory.mktemp("batch")
    for p in sorted(EXAMPLES.iterdir()):
        if p.is_dir():
            shutil.copytree(p, root / p.name)
    bad = root / "zz-broken"
    shutil.copytree(root / "phantom-s2025-0001", bad)
    data = (bad / "sag" / "6.png").read_bytes()
    (bad / "sag" / "6.png").write_bytes(data[: len(data) // 3])
    return root


@pytest.fixture(scope="module")
def run_out(batch, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    res = CliRunner().invoke(cli, ["run", "--input", str(batch), "--out", str(out), "--dump-crops"])
    return res, out


def test_run_reads_every_good_patient_and_reports_the_bad_one(run_out, batch):
    res, out = run_out
    assert res.exit_code == 1, res.output          # documented: 1 = some patients failed
    preds = read_labels(out / "predictions.json")
    good = sorted(p.name for p in batch.iterdir() if p.is_dir() and p.name != "zz-broken")
    assert [p.patient_id for p in preds] == good   # input order, bad one absent
    errors = json.loads((out / "errors.json").read_text())
    assert [e["id"] for e in errors] == ["zz-broken"] and "6.png" in errors[0]["error"]
    for pid in good:
        rep = json.loads((out / "reports" / f"{pid}.json").read_text())
        assert len(rep["canal"]) == 11 and len(rep["disc"]) == 5
        assert set(rep["levels"]["vertebrae"]["6"]) == {"C2", "C3", "C4", "C5", "C6", "C7"}
        for v in rep["canal"].values():
            assert abs(sum(v["probabilities"]) - 1) < 1e-3
        assert (out / "crops" / pid / f"{pid}_sheet.png").is_file()
    assert "4 read, 1 failed" in res.output


def test_oracle_boxes_mode(tmp_path):
    res = CliRunner().invoke(cli, ["run", "--input", str(EXAMPLES), "--out", str(tmp_path),
                                   "--boxes", str(EXAMPLES / "boxes.json")])
    assert res.exit_code == 0, res.output
    rep = json.loads(next((tmp_path / "reports").glob("*.json")).read_text())
    assert rep["box_source"] == "given"
    assert all(not v["interpolated"] for v in rep["levels"]["vertebrae"]["6"].values())


def test_tampered_weights_are_refused_before_loading(tmp_path):
    w = tmp_path / "weights"
    shutil.copytree(ROOT / "weights", w)
    verify_manifest(w)
    target = next(p for p in sorted((w / "classifier").iterdir()) if p.suffix != ".md")
    target.write_bytes(target.read_bytes() + b"\0")
    with pytest.raises(WeightsError, match=target.name):
        verify_manifest(w)
    res = CliRunner().invoke(cli, ["run", "--input", str(EXAMPLES), "--out", str(tmp_path / "out"),
                                   "--weights", str(w)])
    assert res.exit_code == 2 and "do not match" in res.output
    assert not (tmp_path / "out" / "predictions.json").exists()
    (w / MANIFEST).unlink()
    with pytest.raises(WeightsError, match="no manifest"):
        verify_manifest(w)


def test_manifest_lists_every_shipped_file():
    verify_manifest(ROOT / "weights")   # the shipped weights match their manifest


def test_report_html_in_a_real_browser(run_out, batch):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("Debian chromium + chromium-driver not installed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    _, out = run_out
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        opts.add_argument(a)
    browser = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        browser.get((out / "report.html").as_uri())
        n_sections = browser.execute_script("return document.querySelectorAll('section.patient').length")
        broken = browser.execute_script(
            "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length")
        n_images = browser.execute_script("return document.images.length")
        text = browser.execute_script("return document.body.innerText")
    finally:
        browser.quit()
    assert n_sections == 4
    assert n_images == 4 * 12 and broken == 0
    assert "zz-broken" in text   # the failed patient is listed on the page


@pytest.mark.xfail(reason="known gap (issue 8 left open): with oracle boxes, 2 of the 8 axially matched canal "
                          "positions differ by one grade between the DICOM and PNG paths of the same phantom",
                   strict=False)
def test_dicom_study_reads_like_its_challenge_layout(tmp_path):
    """The same phantom as a clinical DICOM study and in challenge layout gives the same reading."""
    sys.path.insert(0, str(Path(__file__).parent))
    from dicom_factory import phantom_case, write_challenge_layout, write_study
    from study.challenge import write_box_file

    ph, specs, axials = phantom_case(3)
    write_study(tmp_path / "dicom" / "patient-a", specs)
    write_challenge_layout(tmp_path / "png" / "patient-a", ph, axials)
    # Oracle boxes (the phantom's own) for both, so the comparison isolates the input path.
    boxes = ph.model_boxes(3.5)
    write_box_file(tmp_path / "boxes.json", [type(boxes)("patient-a", boxes.boxes)])
    reports = {}
    for kind in ("dicom", "png"):
        res = CliRunner().invoke(cli, ["run", "--input", str(tmp_path / kind), "--out", str(tmp_path / f"out-{kind}"),
                                       "--boxes", str(tmp_path / "boxes.json")])
        assert res.exit_code == 0, res.output
        reports[kind] = json.loads((tmp_path / f"out-{kind}" / "reports" / "patient-a.json").read_text())
    a, b = reports["dicom"], reports["png"]
    used = [p for p, v in a["canal"].items() if v["axial_used"]]
    assert len(used) >= 7                      # the oblique axial stack covers most levels
    # The two paths resample the same anatomy differently (axial correlation >= 0.9), so a borderline
    # level may tip by one grade; more than one such level, or a jump of two grades, is a real difference.
    diffs = {p: abs(a["canal"][p]["grade"] - b["canal"][p]["grade"]) for p in used}
    assert sum(d > 0 for d in diffs.values()) <= 1 and max(diffs.values()) <= 1, diffs
    agree = sum(a["disc"][d]["grade"] == b["disc"][d]["grade"] for d in a["disc"])
    assert agree >= 4
    assert a["curvature"]["class"] == b["curvature"]["class"]
