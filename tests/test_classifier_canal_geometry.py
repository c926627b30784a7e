"""The canal finder where the axial image's geometry is known (DICOM/NIfTI): the expected place from the sagittal
detection, axial views narrower than the neck, and real 3-D T2 reformats (../shared)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from classifier.crops import find_canal, find_canals
from conftest import SHARED_DATA
from dicom_factory import axial_series, phantom_case
from evaluation import real_scans as rs
from study.axial_match import axial_view, expected_canal_px
from study.geometry import AXIAL_CENTRE_POSTERIOR_MM, AxialSlice, ImagePlane
from study.inputs import find_inputs, load_input
from study.study import Study
from synth.tissue import Tissue

ROOT = Path(__file__).resolve().parents[1]
SCT = SHARED_DATA / "real_mri" / "sct_2014"
CROP = SHARED_DATA / "real_mri" / "cervical_sagittal_t2_crop"
CORD = (Tissue.CORD, Tissue.CORD_LESION)


def _views(ph, shape):
    """The model's axial view of each slice aimed at a position, its plane, and the cord's centre on it (px)."""
    out = {}
    for s in axial_series(ph, shape=shape):
        if s.aimed_at is None:
            continue
        plane = ImagePlane.make(s.ipp, s.row_cos, s.col_cos, s.spacing, s.pixels.shape)
        point, _ = ph.level_point(s.aimed_at)
        image, view = axial_view(AxialSlice(s.pixels, plane, s.aimed_at), point)
        yy, xx = np.mgrid[0:224, 0:224]
        tissue, _ = ph.tissue(view.to_world(np.stack([xx + 0.5, yy + 0.5], -1)))
        ys, xs = np.nonzero(np.isin(tissue, CORD))
        out[s.aimed_at] = (image, view, np.array([xs.mean(), ys.mean()]), point)
    return out


def test_expected_place_is_behind_the_body_centre():
    """expected_canal_px names the pixel axial_view centres: AXIAL_CENTRE_POSTERIOR_MM behind the level's body
    centre (projected into the slice), in the finder's pixel-index convention."""
    ph, _, _ = phantom_case()
    for image, view, _, point in _views(ph, (176, 200)).values():
        x, y = expected_canal_px(view)
        centre = point - view.distance_mm(point) * view.normal
        want = centre + AXIAL_CENTRE_POSTERIOR_MM * np.asarray(view.down)
        assert np.allclose(view.to_world(np.array([x + 0.5, y + 0.5])), want, atol=1e-6)
        assert np.asarray(view.down) @ np.array([0.0, 1.0, 0.0]) > 0.7     # image down: posterior (oblique stack)


@pytest.mark.parametrize("shape", [(176, 200), (176, 64)], ids=["whole neck", "51 mm wide field of view"])
def test_find_canals_uses_the_geometry(shape):
    """A study whose axial images carry their planes is searched around the expected place; the canal is found
    on the DICOM phantom's views, also where the stored slices are only 51 mm wide (the view is then a strip)."""
    ph, _, _ = phantom_case()
    views = _views(ph, shape)
    sag = {s: np.zeros((224, 224), np.float32) for s in (5, 6, 7)}
    study = Study("p", sag, {p: v[0] for p, v in views.items()}, axial_geometry={p: v[1] for p, v in views.items()})
    bare = Study("p", sag, {p: v[0] for p, v in views.items()})
    found, plain = find_canals(study), find_canals(bare)
    for p, (image, view, cord, _) in views.items():
        assert found[p] == find_canal(image, expected_canal_px(view)), p
        assert plain[p] == find_canal(image), p
        assert np.hypot(found[p].x - cord[0], found[p].y - cord[1]) <= 3.0, (p, found[p], cord)
    if shape[1] < 100:
        strip_cols = np.nonzero(views["C4"][0].any(0))[0]
        assert strip_cols[-1] - strip_cols[0] < 80        # the view really is cut on both sides


# ------------------------------------------------------------------------------------------------
# Real scans (../shared)
# ------------------------------------------------------------------------------------------------
def _need_shared():
    if not (SCT / "sub-errsm21").is_dir():
        pytest.skip(f"real scans not found at {SCT} (../shared/data absent)")


def test_real_reformats_nifti_path_canal_within_3mm(tmp_path):
    """The issue's measure (evaluation.real_scans, NIfTI path, shipped weights): the canal centre the reader
    reports lies within 3 mm of the manual cord mask in the plane it used. Measured 34 of 34 positions
    (sub-errsm11/18/21 and the C2-C5 crop; at most 2.7 mm) with the detector of 2026-12-05; before this finder
    26 of 34 (76 %). The target of issue 17 is 95 %."""
    _need_shared()
    result = rs.evaluate([SCT, CROP], tmp_path / "out", ROOT / "weights", framings=(), nifti=True,
                         echo=lambda *a, **k: None)
    rows = [r for r in result["canal"] if r["distance_mm"] is not None]
    assert len(rows) >= 20, result["canal"]
    within = np.mean([r["within_3mm"] for r in rows])
    assert within >= 0.95, [(r["scan"], r["position"], r["distance_mm"]) for r in rows]


def test_real_reformats_at_every_height(tmp_path):
    """Independent of the detector: on sub-errsm11/18/21 an axial view every 4 mm from the C2 body down to T2,
    centred as axial_view does on a level point 16 mm in front of the cord, then moved 6 mm sideways and 6 mm
    forward or 9 mm back (a detector box, a body's depth). Measured: 458 of 460 views within 3 mm of the
    cord (2 misses, both with the level point 9 mm too far back)."""
    _need_shared()
    errors = {}
    for scan in rs.find_scans(SCT):
        plan = rs.plan_scan(scan)
        if plan.cord is None or not plan.sets or 2 not in plan.sets[0].refs or 9 not in plan.sets[0].refs:
            continue
        refs = plan.sets[0].refs
        folder = tmp_path / scan.scan_id
        folder.mkdir()
        shutil.copy(scan.image, folder / scan.image.name)
        study = load_input(find_inputs(folder)[0])
        top, bottom = refs[2].point[2], refs[9].point[2]
        for sl in study.pending_axial:
            z = float(sl.plane.centre_mm[2])
            cord = plan.cord.centre_at(z)
            if not bottom <= z <= top or round(z - bottom) % 4 or cord is None:
                continue
            for shift in ((0, 0), (6, -6), (-6, -6), (6, 9), (-6, 9)):       # mm: (left, posterior)
                point = cord + np.array([shift[0], shift[1] - AXIAL_CENTRE_POSTERIOR_MM, 0.0])
                image, view = axial_view(sl, point)
                f = find_canal(image, expected_canal_px(view))
                d = cord - view.to_world(np.array([f.x + 0.5, f.y + 0.5]))
                errors.setdefault(shift, []).append(float(np.hypot(d[0], d[1])))
    assert len(errors.get((0, 0), [])) >= 60, {k: len(v) for k, v in errors.items()}
    every = np.concatenate([np.array(v) for v in errors.values()])
    assert (every <= 3.0).mean() >= 0.97, {k: np.round(v, 1).tolist() for k, v in errors.items()}
    assert (np.array(errors[(0, 0)]) <= 3.0).mean() >= 0.97, errors[(0, 0)]
