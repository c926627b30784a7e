"""report.html's patient panel (issue 20), checked as a browser shows it: the sagittal slice zoomed on the
column, one label per level at the side with a leader line, grades in words, a legend for every colour, the
measured curve, and the note that the models were trained on phantoms."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import headless_chromium, zero_padded_copy
from detector.boxes import LevelBox, LevelBoxes
from pipeline import cli
from report.panel import CANAL_WORDS, DISC_WORDS, LABEL_WIDTH, column_zoom, panel_svg
from study.challenge import read_box_file
from study.levels import CANAL_POSITIONS, DISCS, MID_SAGITTAL_SLICE, VERTEBRAE
from study.loader import load_study

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
BARE_CODE = re.compile(r"\b[cd][0-3]\b")          # "c0", "d1": grade codes the page must spell out


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """An example patient and the same patient with its field of view ending below C4, read and opened in
    headless chromium; returns what the page shows, per patient, and a screenshot of the first panel."""
    browser = headless_chromium("--hide-scrollbars", "--window-size=1500,1200")   # skips before the run
    root = tmp_path_factory.mktemp("page_batch")
    shutil.copytree(EXAMPLES / "phantom-s2025-0000", root / "phantom-s2025-0000")
    zero_padded_copy(EXAMPLES / "phantom-s2025-0000", root / "padded-0000")
    out = tmp_path_factory.mktemp("page_out") / "run"
    res = CliRunner().invoke(cli, ["run", "--input", str(root), "--out", str(out)])
    assert res.exit_code == 0, res.output

    try:
        browser.get((out / "report.html").as_uri())
        shown = browser.execute_script("""
            const rect = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
            return Array.from(document.querySelectorAll('section.patient')).map(s => {
              const svg = s.querySelector('svg.sagittal-panel');
              return {id: s.id, svg: rect(svg), svgHeight: svg.viewBox.baseVal.height,
                labels: Array.from(svg.querySelectorAll('text.level-label')).map(t => ({
                  level: t.dataset.level, text: t.textContent, rect: rect(t)})),
                leaders: Array.from(svg.querySelectorAll('polyline.leader')).map(l =>
                  Array.from(l.points).map(p => [p.x, p.y])),
                marks: {detected: svg.querySelectorAll('.detected').length,
                        outside: svg.querySelectorAll('.outside').length},
                imageLoaded: svg.querySelector('image').getBBox().width > 0,
                legend: s.querySelector('.legend').innerText,
                measures: (s.querySelector('.measures') || {innerText: ''}).innerText,
                text: s.innerText};
            });""")
        banner = browser.execute_script("return document.querySelector('.banner').innerText")
        page_text = browser.execute_script("return document.body.innerText")
        shot = out.parent / "panel.png"
        panel = browser.find_element("css selector", "#p-phantom-s2025-0000 svg.sagittal-panel")
        browser.execute_script("arguments[0].scrollIntoView()", panel)
        panel.screenshot(str(shot))
    finally:
        browser.quit()
    reports = {p.stem: json.loads(p.read_text()) for p in (out / "reports").glob("*.json")}
    return SimpleNamespace(sections={s["id"][2:]: s for s in shown}, banner=banner, text=page_text, shot=shot,
                           reports=reports)


def test_one_label_per_level_at_the_side_with_a_leader_line(page):
    for pid, s in page.sections.items():
        assert [lab["level"] for lab in s["labels"]] == list(CANAL_POSITIONS), pid
        assert len(s["leaders"]) == len(CANAL_POSITIONS)
        left, top, right, bottom = s["svg"]
        rects = [lab["rect"] for lab in s["labels"]]
        for r in rects:                                     # inside the panel, in the label column
            assert left <= r[0] and r[2] <= left + LABEL_WIDTH and top <= r[1] and r[3] <= bottom, (pid, r)
        for a, b in zip(rects, rects[1:]):                  # top to bottom, none overlapping the next
            assert a[3] <= b[1] + 0.5, (pid, a, b)
        for (start, end), r in zip(s["leaders"], rects):    # from the label's side into the picture
            assert start[0] <= LABEL_WIDTH < end[0]
            assert r[1] - top <= start[1] <= r[3] - top


def test_the_panel_is_zoomed_on_the_column(page):
    s = page.sections["phantom-s2025-0000"]
    ends = np.array([leader[-1] for leader in s["leaders"]])
    assert s["imageLoaded"]
    assert ends[:, 1].max() - ends[:, 1].min() > 0.6 * s["svgHeight"]   # C2 to C7 fill most of the height
    assert s["marks"]["detected"] == len(VERTEBRAE) and s["marks"]["outside"] == 0
    panel = np.asarray(Image.open(page.shot).convert("L"), float)
    assert panel.shape[0] >= 600 and panel.shape[1] >= 800
    assert panel[:, LABEL_WIDTH + 20:].std() > 20                      # the slice itself, not a blank box


def test_grades_are_in_words_and_match_the_report(page):
    for pid, s in page.sections.items():
        rep = page.reports[pid]
        assert not BARE_CODE.search(s["text"]), (pid, BARE_CODE.findall(s["text"]))
        for lab in s["labels"]:
            p, text = lab["level"], " ".join(lab["text"].split())
            canal = rep["canal"][p]
            if canal["grade"] is None:
                assert "outside the field of view" in text and "not graded" in text, text
                continue
            assert f"canal {CANAL_WORDS[canal['grade']]}" in text, text
            if p in DISCS:
                assert f"disc {DISC_WORDS[rep['disc'][p]['grade']]}" in text, text


def test_the_outside_levels_are_marked_as_such(page):
    s = page.sections["padded-0000"]
    outside = page.reports["padded-0000"]["outside_field_of_view"]
    assert outside and s["marks"]["outside"] >= len(outside)
    assert s["marks"]["detected"] <= len(VERTEBRAE) - len(outside)
    assert "not assessed" in s["text"] and s["measures"] == ""


def test_a_legend_for_every_colour(page):
    legend = " ".join(page.sections["phantom-s2025-0000"]["legend"].split())
    for needed in ("found by the detector", "interpolated", "outside the field of view", "disc centre"):
        assert needed in legend
    for k in range(4):
        assert f"disc {DISC_WORDS[k]} · canal {CANAL_WORDS[k]}" in legend


def test_the_measured_curve_is_shown(page):
    rep = page.reports["phantom-s2025-0000"]
    m = rep["curve_measurements"]
    text = " ".join(page.sections["phantom-s2025-0000"]["measures"].split())
    assert f"C2-C7 angle {m['c2c7_angle_deg']:.1f}°" in text
    assert f"curvature index {m['curvature_index']:.1f}" in text
    steps = {d: m[f"posterior_step_{d}"] for d in DISCS}
    worst = max(steps, key=lambda d: abs(steps[d]))
    assert f"largest listhesis (posterior-wall step beyond the curve) {abs(steps[worst]):.2f} of a body depth " \
           f"at {worst}" in text


def test_the_page_says_the_models_are_not_validated_on_real_patients(page):
    assert "trained on synthetic phantoms, not validated on real patients" in page.banner
    assert page.text.index("trained on synthetic phantoms") < page.text.index("phantom-s2025-0000")


def test_an_interpolated_vertebra_is_drawn_and_labelled_as_such():
    """Unit level: a vertebra filled in on the mid slice gets the dashed interpolated mark and says so."""
    study = load_study(EXAMPLES / "phantom-s2025-0000")
    boxes = LevelBoxes.from_patient_boxes(read_box_file(EXAMPLES / "boxes.json").by_id()["phantom-s2025-0000"])
    vert = {s: dict(v) for s, v in boxes.vertebrae.items()}
    vert[MID_SAGITTAL_SLICE]["C4"] = LevelBox(vert[MID_SAGITTAL_SLICE]["C4"].box, 0.0, True)
    boxes = LevelBoxes(boxes.patient_id, vert, boxes.discs)
    report = SimpleNamespace(patient_id="x", boxes=boxes,
                             grades=SimpleNamespace(canal_grades=(0, 1, 2, 3) * 2 + (0, 1, 2), disc_grades=(0, 1, 2, 3, 0)))
    svg = panel_svg(study, report, lambda grey: "data:image/jpeg;base64,")
    assert svg.count('class="interpolated"') == 1 and svg.count('class="detected"') == len(VERTEBRAE) - 1
    c4 = re.search(r'data-level="C4"[^>]*>(.*?)</text>', svg).group(1)
    assert "(interpolated)" in c4 and "canal" in c4 and CANAL_WORDS[0] in c4
    c3_4 = re.sub(r"<[^>]+>", "", re.search(r'data-level="C3-4"[^>]*>(.*?)</text>', svg).group(1))
    assert c3_4 == f"C3-4  disc {DISC_WORDS[1]}  canal {CANAL_WORDS[3]}"


def test_the_zoom_window_holds_every_box_with_a_margin():
    boxes = read_box_file(EXAMPLES / "boxes.json").by_id()["phantom-s2025-0000"].boxes[MID_SAGITTAL_SLICE]
    z = column_zoom(list(boxes.values()), (224, 224))
    for b in boxes.values():
        assert z.x0 < b.x1 and b.x2 < z.x0 + z.width and z.y0 < b.y1 and b.y2 < z.y0 + z.height
    span = max(b.y2 for b in boxes.values()) - min(b.y1 for b in boxes.values())
    assert span > 0.6 * z.height                  # zoomed: the column fills most of the panel, not a third
