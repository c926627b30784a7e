"""The phantom draws every label by its clinical definition, reproducibly, in the challenge layout."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from study.challenge import PatientLabels, read_box_file, read_labels
from study.levels import CANAL_POSITIONS, DISCS, MID_SAGITTAL_SLICE, SAGITTAL_SLICES, VERTEBRAE
from study.loader import load_study
from synth.generate import PhantomSpec, builtin_specs, generate, render_spec
from synth.render import RenderedPatient
from synth.statistical_model import load_model, sample_patient
from synth.tissue import Tissue

SEED = 11


def _with_labels(spec: PhantomSpec, **changes) -> PhantomSpec:
    l = spec.labels
    fields = dict(patient_id=l.patient_id, curvature=l.curvature, alignment=l.alignment,
                  disc_grades=l.disc_grades, canal_grades=l.canal_grades)
    fields.update(changes)
    return PhantomSpec(spec.index, spec.boxes, PatientLabels(**fields))


@pytest.fixture(scope="module")
def spec() -> PhantomSpec:
    return builtin_specs(1, SEED)[0]


@pytest.fixture(scope="module")
def all_grades(spec) -> RenderedPatient:
    """One patient whose positions cover every disc and canal grade, with poor alignment."""
    return render_spec(_with_labels(spec, alignment=0, disc_grades=(0, 1, 2, 3, 0),
                                    canal_grades=(0, 1, 0, 2, 0, 3, 1, 0, 2, 3, 0)), SEED)


def _cord_column(tissue: np.ndarray):
    """Rows of the vertical line through the cord's centroid, and the tissue along it."""
    cord = np.isin(tissue, (Tissue.CORD, Tissue.CORD_LESION))
    ys, xs = np.nonzero(cord)
    assert len(xs), "no cord in this axial image"
    return tissue[:, int(round(xs.mean()))]


def _runs_around_cord(column: np.ndarray):
    """CSF pixels directly in front of and behind the cord, and the cord's AP length, in pixels."""
    cord_rows = np.flatnonzero(np.isin(column, (Tissue.CORD, Tissue.CORD_LESION)))
    top, bottom = cord_rows.min(), cord_rows.max()

    def run(start, step):
        n, i = 0, start
        while 0 <= i < len(column) and column[i] == Tissue.CSF:
            n, i = n + 1, i + step
        return n

    return run(top - 1, -1), run(bottom + 1, 1), bottom - top + 1


def test_canal_grade_drawn_by_definition(all_grades):
    r = all_grades
    cord_ap_px = r.anatomy.cord_ap_mm / r.axial_spacing_mm
    for p, g in zip(CANAL_POSITIONS, r.labels.canal_grades):
        tissue = r.axial_tissue[p]
        front, back, ap = _runs_around_cord(_cord_column(tissue))
        has_lesion = bool((tissue == Tissue.CORD_LESION).any())
        if g == 0:  # CSF all around the cord
            assert front >= 1 and back >= 1, (p, front, back)
            assert ap >= 0.85 * cord_ap_px, (p, ap)
        elif g == 1:  # CSF effaced, cord not deformed
            assert front + back <= 2, (p, front, back)
            assert ap >= 0.85 * cord_ap_px, (p, ap)
        else:  # cord flattened
            assert ap <= 0.8 * cord_ap_px, (p, ap, cord_ap_px)
        assert has_lesion == (g == 3), (p, g)


def test_grade_3_lesion_visible_on_mid_sagittal_at_its_level(all_grades):
    r = all_grades
    tissue = r.sagittal_tissue[MID_SAGITTAL_SLICE]
    ys, _ = np.nonzero(tissue == Tissue.CORD_LESION)
    assert len(ys)
    boxes = r.boxes.boxes[MID_SAGITTAL_SLICE]
    for p in [p for p, g in zip(CANAL_POSITIONS, r.labels.canal_grades) if g == 3]:
        if p in DISCS:
            i = DISCS.index(p)
            y = (boxes[VERTEBRAE[i]].y2 + boxes[VERTEBRAE[i + 1]].y1) / 2
        else:
            y = boxes[p].cy
        assert np.min(np.abs(ys - y)) < 4, (p, y)


def test_disc_grade_drawn_by_definition(all_grades):
    r = all_grades
    sag = r.sagittal_tissue[MID_SAGITTAL_SLICE]
    boxes = r.boxes.boxes[MID_SAGITTAL_SLICE]
    extents = {}
    for j, (d, g) in enumerate(zip(DISCS, r.labels.disc_grades)):
        ax = r.axial_tissue[d]
        n_axial = int((ax == Tissue.HERNIATION).sum())
        h = r.anatomy.herniations[j]
        if g == 0:
            assert h is None and n_axial == 0, d
            continue
        assert h is not None and h.grade == g and n_axial > 0, d
        extents[g] = h.amplitude_mm
        rows = np.flatnonzero((sag == Tissue.HERNIATION).any(1))
        upper, lower = boxes[VERTEBRAE[j]], boxes[VERTEBRAE[j + 1]]
        disc_top, disc_bottom = upper.y2 - 3, lower.y1 + 3   # the disc lies between the bodies
        near = rows[(rows > upper.cy) & (rows < lower.cy)]
        assert len(near), d
        if g == 3:  # extrusion reaches beyond the disc height
            assert near.min() < disc_top - 1 or near.max() > disc_bottom + 1, (d, near, disc_top, disc_bottom)
        if g == 2:  # protrusion: focal, its extent below its base
            assert np.isfinite(h.sigma_x_mm) and h.amplitude_mm < (h.s_high - h.s_low)
        if g == 1:  # bulge: diffuse
            assert np.isinf(h.sigma_x_mm)
    assert extents[1] < extents[2] < extents[3]


def test_poor_alignment_is_a_visible_step(all_grades, spec):
    r = all_grades
    level = r.anatomy.listhesis_level
    assert level is not None
    lv = VERTEBRAE[level]
    shift_px = r.boxes.boxes[MID_SAGITTAL_SLICE][lv].cx - spec.boxes.boxes[MID_SAGITTAL_SLICE][lv].cx
    assert abs(shift_px) >= 1.5, shift_px
    ok = render_spec(_with_labels(spec, alignment=1), SEED)
    assert ok.anatomy.listhesis_level is None


def test_rendered_boxes_match_the_source_geometry(spec):
    r = render_spec(_with_labels(spec, alignment=1), SEED)
    diffs = [abs(a - b) for s in SAGITTAL_SLICES for lv in VERTEBRAE
             for a, b in zip(r.boxes.boxes[s][lv].as_tuple(), spec.boxes.boxes[s][lv].as_tuple())]
    assert np.mean(diffs) < 1.0 and np.max(diffs) <= 3.0, (np.mean(diffs), np.max(diffs))


def test_rendering_is_deterministic(spec):
    a, b = render_spec(spec, SEED), render_spec(spec, SEED)
    for s in SAGITTAL_SLICES:
        assert np.array_equal(a.sagittal[s], b.sagittal[s])
    for p in CANAL_POSITIONS:
        assert np.array_equal(a.axial[p], b.axial[p])
    c = render_spec(spec, SEED + 1)
    assert not np.array_equal(a.sagittal[MID_SAGITTAL_SLICE], c.sagittal[MID_SAGITTAL_SLICE])


def test_t2_contrast_in_the_canal(all_grades):
    r = all_grades
    img, tissue = r.sagittal[MID_SAGITTAL_SLICE], r.sagittal_tissue[MID_SAGITTAL_SLICE]
    csf, cord = img[tissue == Tissue.CSF].mean(), img[tissue == Tissue.CORD].mean()
    assert csf > cord + 0.15


def test_builtin_model_samples_valid_patients_without_shared():
    m = load_model()
    assert m["n_patients"] == 320
    rng = np.random.default_rng(0)
    for i in range(20):
        boxes, labels = sample_patient(rng, f"p{i}")
        for s in SAGITTAL_SLICES:
            cys = [boxes.boxes[s][lv].cy for lv in VERTEBRAE]
            assert cys == sorted(cys)


def test_builtin_model_reproduces_real_label_frequencies():
    """Sampled labels keep the real per-level frequencies and the disc-canal co-occurrence."""
    rng = np.random.default_rng(1)
    labels = [sample_patient(rng, str(i))[1] for i in range(600)]
    disc = np.array([l.disc_grades for l in labels])
    canal = np.array([l.canal_grades for l in labels])
    assert 0.6 < (disc == 2).mean() < 0.8            # protrusion dominates, as in the real 320
    assert (canal[:, 0] == 0).mean() > 0.9           # C2 canal is almost always free
    at_discs = canal[:, [CANAL_POSITIONS.index(d) for d in DISCS]]
    assert (at_discs[disc == 0] == 0).mean() > 0.8   # normal discs rarely narrow the canal
    assert (at_discs[disc == 2] >= 1).mean() > 0.8


def test_synth_command_writes_a_loadable_batch(tmp_path):
    from click.testing import CliRunner
    from pipeline import cli
    out = tmp_path / "ph"
    res = CliRunner().invoke(cli, ["synth", "--out", str(out), "--n", "2", "--seed", "5"])
    assert res.exit_code == 0, res.output
    labels = read_labels(out / "labels.json")
    boxes = read_box_file(out / "boxes.json")
    assert [l.patient_id for l in labels] == [b.patient_id for b in boxes.patients]
    assert not boxes.errors
    for l in labels:
        study = load_study(out / l.patient_id)
        assert study.sagittal[6].shape == (224, 224) and len(study.axial) == 11 and not study.warnings
    meta = json.loads((out / "phantom.json").read_text())
    assert meta["seed"] == 5 and len(meta["patients"]) == 2
    again = tmp_path / "ph2"
    assert CliRunner().invoke(cli, ["synth", "--out", str(again), "--n", "2", "--seed", "5"]).exit_code == 0
    for f in sorted(out.rglob("*.png")):
        assert f.read_bytes() == (again / f.relative_to(out)).read_bytes(), f


def test_synth_from_real_geometry(tmp_path, cervai_dir):
    out = tmp_path / "real"
    specs_labels = read_labels(cervai_dir / "train_labels.json")
    from synth.generate import real_geometry_specs
    specs = real_geometry_specs(cervai_dir / "train_boxes.json", cervai_dir / "train_labels.json", 2)
    labels, boxes, skipped = generate(out, specs, 0, "test")
    assert not skipped
    real = {l.patient_id: l for l in specs_labels}
    for l in labels:
        assert l == real[l.patient_id]
    src = read_box_file(cervai_dir / "train_boxes.json").by_id()
    for b in boxes:
        if real[b.patient_id].alignment == 1:
            d = [abs(x - y) for lv in VERTEBRAE for x, y in
                 zip(b.boxes[MID_SAGITTAL_SLICE][lv].as_tuple(), src[b.patient_id].boxes[MID_SAGITTAL_SLICE][lv].as_tuple())]
            assert np.mean(d) < 1.0


def test_synth_rejects_half_a_geometry(tmp_path, cervai_dir):
    from click.testing import CliRunner
    from pipeline import cli
    res = CliRunner().invoke(cli, ["synth", "--out", str(tmp_path / "x"), "--boxes",
                                   str(cervai_dir / "train_boxes.json")])
    assert res.exit_code == 2 and "go together" in res.output


# ------------------------------------------------------------------------------------------------
# --draw-curvature: a real geometry whose curve contradicts its label is bent into the label's band
# ------------------------------------------------------------------------------------------------
def _contradicting_geometry(tmp_path: Path):
    """Box and label files of two built-in patients, the first relabelled to a curvature its curve lies outside."""
    from dataclasses import replace

    from study.challenge import write_box_file, write_labels
    from synth.statistical_model import curvature_band, curve_measure
    specs = builtin_specs(2, 11)
    definition = load_model()["curvature_definition"]
    first = specs[0]
    wrong = next(c for c in (2, 0, 1) if not (lambda b: b[0] <= curve_measure(first.boxes) < b[1])(
        curvature_band(c, definition)))
    labels = [replace(first.labels, curvature=wrong), specs[1].labels]
    write_box_file(tmp_path / "boxes.json", [s.boxes for s in specs])
    write_labels(tmp_path / "labels.json", labels)
    return tmp_path / "boxes.json", tmp_path / "labels.json", labels


def test_bend_into_band_moves_the_curve_and_nothing_else():
    from synth.statistical_model import BEND_MARGIN, bend_into_band, curvature_band, curve_measure
    definition = load_model()["curvature_definition"]
    boxes, labels = sample_patient(np.random.default_rng(4), "p")
    assert bend_into_band(boxes, labels.curvature, definition) == (boxes, None)   # in its band: untouched
    for wrong in (c for c in range(3) if c != labels.curvature):
        bent, note = bend_into_band(boxes, wrong, definition)
        lo, hi = curvature_band(wrong, definition)
        index, start = curve_measure(bent), curve_measure(boxes)
        target = lo + BEND_MARGIN if start < lo else hi - BEND_MARGIN   # just inside, from the side it came
        assert abs(index - target) < 0.1 and lo <= index < hi and note and "outside" in note
        for s in SAGITTAL_SLICES:
            for lv in VERTEBRAE:
                a, b = boxes.boxes[s][lv], bent.boxes[s][lv]
                assert (a.y1, a.y2) == (b.y1, b.y2) and abs(a.width - b.width) < 1e-9   # sideways only
                if lv in ("C2", "C7"):
                    assert a == b   # the C2-C7 line stays


def test_draw_curvature_renders_the_label_visibly(tmp_path):
    from synth.generate import real_geometry_specs
    from synth.statistical_model import curvature_band, curve_measure
    boxes_file, labels_file, labels = _contradicting_geometry(tmp_path)
    as_read = real_geometry_specs(boxes_file, labels_file, None)
    drawn = real_geometry_specs(boxes_file, labels_file, None, draw_curvature=True)
    assert [s.notes for s in as_read] == [(), ()]
    assert "outside" in drawn[0].notes[-1] and drawn[1].notes == () and drawn[1].boxes == as_read[1].boxes
    out_labels, out_boxes, skipped = generate(tmp_path / "out", drawn[:1], 0, "test")
    assert not skipped and out_labels == labels[:1]
    # The boxes measured on the rendered images put the curve in the label's band.
    lo, hi = curvature_band(labels[0].curvature, load_model()["curvature_definition"])
    assert lo <= curve_measure(out_boxes[0]) < hi
    meta = json.loads((tmp_path / "out" / "phantom.json").read_text())
    assert "outside" in meta["patients"][0]["geometry_repairs"][-1]


def test_draw_curvature_needs_real_geometry(tmp_path):
    from click.testing import CliRunner
    from pipeline import cli
    res = CliRunner().invoke(cli, ["synth", "--out", str(tmp_path / "x"), "--draw-curvature"])
    assert res.exit_code == 2 and "--boxes" in res.output
