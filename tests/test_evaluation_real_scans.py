"""Real-scan evaluation (evaluation.real_scans) and the patient-space positions in the reports it reads."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import SHARED_DATA
from detector.boxes import body_centre
from evaluation import real_scans as rs
from study.challenge import Box
from study.levels import CANAL_POSITIONS, DISCS, SAGITTAL_SLICES, VERTEBRAE

ROOT = Path(__file__).resolve().parents[1]
SCT = SHARED_DATA / "real_mri" / "sct_2014"
# Stored like the shared SCT scans (P-S-R): voxel axis 0 runs posterior, 1 superior, 2 to the patient's right.
PSR_RAS = np.array([[0.0, 0.0, 1.0, -20.0],
                    [-1.0, 0.0, 0.0, 60.0],
                    [0.0, 1.0, 0.0, -100.0],
                    [0.0, 0.0, 0.0, 1.0]])
SHAPE = (90, 200, 40)


def lps_of(ijk) -> np.ndarray:
    """The LPS position of a voxel under PSR_RAS, written out from the definition (RAS with x, y negated)."""
    ras = PSR_RAS[:3, :3] @ np.asarray(ijk, float) + PSR_RAS[:3, 3]
    return ras * np.array([-1.0, -1.0, 1.0])


def save(path: Path, data: np.ndarray, affine=PSR_RAS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def points_volume(points: dict, dtype=np.int16) -> np.ndarray:
    v = np.zeros(SHAPE, dtype)
    for value, ijk in points.items():
        v[tuple(ijk)] = value
    return v


# ------------------------------------------------------------------------------------------------
# 1. Label readers
# ------------------------------------------------------------------------------------------------
def test_landmarks_discs_and_levels_in_patient_space(tmp_path):
    # Landmarks: C2 and T2 body centres (SCT 2 and 9) in the cord.
    lm = rs.read_label_file(save(tmp_path / "s_T2w_landmarks-C2-T2.nii.gz",
                                 points_volume({2: (40, 170, 20), 9: (45, 40, 21)})))
    assert lm.kind == "points"
    assert np.allclose(lm.points[2], lps_of((40, 170, 20))) and np.allclose(lm.points[9], lps_of((45, 40, 21)))
    # RAS -> LPS: voxel axis 0 runs posterior (RAS -y), axis 2 to the right (RAS +x, so LPS -x).
    assert np.allclose(np.subtract(lm.points[9], lps_of((40, 40, 20))), (-1.0, 5.0, 0.0))
    # Discs at their posterior tips: 3 = C2/C3 ... 8 = C7/T1, every 17 voxels down.
    discs = {v: (30, 160 - 17 * (v - 3), 20) for v in range(3, 9)}
    dl = rs.read_label_file(save(tmp_path / "s_T2w_labels-disc-manual.nii.gz", points_volume(discs, np.uint8)))
    assert dl.kind == "discs"
    refs = rs.file_references(dl)
    assert sorted(refs) == [3, 4, 5, 6, 7]                  # C3..C7; C2 is never taken from discs
    for v in range(3, 8):
        assert np.allclose(refs[v].point, (lps_of(discs[v]) + lps_of(discs[v + 1])) / 2)
        assert refs[v].source == f"discs {v}+{v + 1} midpoint"

    sets, notes = rs.reference_sets([lm, dl])
    assert notes == [] and len(sets) == 1
    [s] = sets
    assert {rs.level_name(v): r.source for v, r in s.refs.items()} == {
        "C2": "landmark", "C3": "discs 3+4 midpoint", "C4": "discs 4+5 midpoint", "C5": "discs 5+6 midpoint",
        "C6": "discs 6+7 midpoint", "C7": "discs 7+8 midpoint", "T2": "landmark"}
    assert s.step_mm(4)[0] == pytest.approx(17.0)            # neighbours C3 and C5
    # With only C2 and T2 known, the step is their distance over the seven steps between them.
    only = rs.ReferenceSet("x", {2: lm_ref(lm, 2), 9: lm_ref(lm, 9)})
    assert only.step_mm(2)[0] == pytest.approx((lm.points[2][2] - lm.points[9][2]) / 7)


def lm_ref(lf, v):
    return rs.Reference(v, lf.points[v], "landmark")


def test_labelled_cord_levels_and_a_disagreeing_label_file(tmp_path):
    cord = np.zeros(SHAPE, np.float32)
    # Levels 2, 3, 4 down the cord (16 voxels each), 5 cut off by the bottom of the volume.
    for level, (lo, hi) in {2: (150, 165), 3: (134, 149), 4: (118, 133), 5: (0, 117)}.items():
        cord[50:54, lo:hi + 1, 18:22] = level
    cl = rs.read_label_file(save(tmp_path / "t2_seg-manual_labeled.nii.gz", cord))
    assert cl.kind == "cord-levels" and cl.cut_off == (5,)
    refs = rs.file_references(cl)
    assert sorted(refs) == [2, 3, 4]
    for level, (lo, hi) in {2: (150, 165), 3: (134, 149), 4: (118, 133)}.items():
        expect = lps_of((51.5, (lo + hi) / 2, 19.5))
        assert np.allclose(refs[level].point, expect), level
        assert refs[level].source.startswith("cord level range")
    # Single-voxel level labels one level off (C3 where the cord says C2): both kept, scored apart.
    lab = rs.read_label_file(save(tmp_path / "labels.nii.gz", points_volume({3: (52, 157, 20), 5: (52, 125, 20)})))
    sets, notes = rs.reference_sets([lab, cl])
    assert [s.name for s in sets] == ["labels.nii.gz", "t2_seg-manual_labeled.nii.gz"]
    assert len(notes) == 1 and "disagree at C3" in notes[0]
    # A binary cord mask is the cord, no reference.
    mask = rs.read_label_file(save(tmp_path / "t2_seg-cord-manual.nii.gz", (cord > 0).astype(np.float32)))
    assert mask.kind == "cord" and rs.file_references(mask) == {} and len(mask.cord) == int((cord > 0).sum())


def test_bids_and_plain_folders_find_their_labels(tmp_path):
    image = np.random.default_rng(0).random(SHAPE).astype(np.float32)
    root = tmp_path / "bids"
    save(root / "sub-a" / "anat" / "sub-a_T2w.nii.gz", image)
    save(root / "sub-b" / "anat" / "sub-b_T2w.nii.gz", image)
    save(root / "derivatives" / "labels" / "sub-a" / "anat" / "sub-a_T2w_landmarks-C2-T2.nii.gz",
         points_volume({2: (40, 170, 20)}))
    save(root / "derivatives" / "labels" / "sub-a" / "anat" / "sub-a_T1w_landmarks-C2-T2.nii.gz",
         points_volume({2: (40, 170, 20)}))
    scans = {s.scan_id: s for s in rs.find_scans(root)}
    assert set(scans) == {"sub-a", "sub-b"}
    assert [p.name for p in scans["sub-a"].label_paths] == ["sub-a_T2w_landmarks-C2-T2.nii.gz"]
    assert scans["sub-b"].label_paths == ()
    plain = tmp_path / "crop"
    save(plain / "t2.nii.gz", image)
    save(plain / "labels.nii.gz", points_volume({3: (40, 150, 20)}))
    [scan] = rs.find_scans(plain)
    assert scan.scan_id == "crop" and scan.image.name == "t2.nii.gz"
    assert [p.name for p in scan.label_paths] == ["labels.nii.gz"]


# ------------------------------------------------------------------------------------------------
# 2. Render geometry
# ------------------------------------------------------------------------------------------------
def blob_volume(centre_ijk, sigma_vox: float = 1.2) -> np.ndarray:
    """A blob on a background that falls from 100 to 0 up the volume (so the 99.5th percentile that sets the
    grey scale lies above the blob, and nothing saturates)."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), -1).astype(np.float32)
    d2 = ((grid - np.asarray(centre_ijk, np.float32)) ** 2).sum(-1)
    ramp = (SHAPE[1] - grid[..., 1]) / SHAPE[1] * 100.0
    return (ramp + 40.0 * np.exp(-d2 / (2 * sigma_vox ** 2))).astype(np.float32)


def peak(image: np.ndarray, fraction: float = 0.8) -> np.ndarray:
    """(x, y) image coordinates of the centroid of the brightest pixels (pixel centres at +0.5)."""
    rows, cols = np.nonzero(image >= fraction * image.max())
    return np.array([cols.mean() + 0.5, rows.mean() + 0.5])


@pytest.mark.parametrize("framing", [rs.Framing("a", 98, 0.85, 3.0), rs.Framing("b", 20, 1.3, 4.0)])
def test_render_maps_patient_space_to_pixels_and_back(tmp_path, framing):
    blob_ijk = (45.0, 120.0, 22.0)
    blob = lps_of(blob_ijk)
    sampler = rs.VolumeSampler(blob_volume(blob_ijk), rs.RAS_TO_LPS @ PSR_RAS)
    # Anchored 30 mm above the blob, the mid plane 4.5 mm to the blob's right (so the blob is nearest slice 7,
    # which lies to the patient's left of slice 6), the cord column 8 mm in front of the blob.
    anchor = (blob[0], blob[1] + 8.0, blob[2] + 30.0)
    mid_x = blob[0] - framing.slice_gap_mm
    geom = rs.render_patient(tmp_path / "p", sampler, framing, mid_x, (anchor, "C2 centre"), anchor[1],
                             {"C4": blob}, None)
    # The anchor lands on its row and column.
    xy, dist = geom.plane.to_image(np.array([mid_x, anchor[1], anchor[2]]))
    assert np.allclose(xy, (rs.CORD_COLUMN, framing.anchor_row), atol=1e-6) and abs(dist) < 1e-9
    images = {s: np.asarray(Image.open(tmp_path / "p" / "sag" / f"{s}.png")).astype(int) for s in SAGITTAL_SLICES}
    assert all(im.shape == (224, 224) for im in images.values())
    # The background is the same in every slice; the blob lies in slice 7's slab (the patient's left).
    blob7, blob6 = images[7] - images[5], images[6] - images[5]
    assert blob7.max() > 10 and blob6.max() < blob7.max() / 2
    expect, _ = geom.slice_plane(7).to_image(blob)
    found = peak(blob7)
    assert images[7][int(found[1]), int(found[0])] < 255             # unsaturated there
    assert np.abs(found - expect).max() <= 1.0, (found, expect)
    back = geom.slice_plane(7).to_world(found)
    assert np.linalg.norm(back - blob) <= 1.5 * framing.mm_per_px
    # Superior is up, anterior left: a point 10 mm higher and 10 mm further back moves up and right.
    moved, _ = geom.plane.to_image(blob + np.array([0.0, 10.0, 10.0]))
    here, _ = geom.plane.to_image(blob)
    assert np.allclose(moved - here, (10 * framing.px_per_mm, -10 * framing.px_per_mm))
    # Outside the volume is black; the axial image through the blob is centred on it.
    assert images[6][0, 0] == 0
    ax = np.asarray(Image.open(tmp_path / "p" / "tra" / "4.png")).astype(float)
    assert np.abs(peak(ax, 1.0) - 112.0).max() <= 1.0     # the brightest (saturated) disc lies around the blob
    assert geom.axial_positions == ("C4",)
    # A box centred on the blob maps back to the blob's height, as the evaluation reads predictions.
    x, y = geom.plane.to_image(blob)[0]
    report = {"levels": {"vertebrae": {"6": {lv: {"xyxy": [x - 10, y - 8, x + 10, y + 8]} for lv in VERTEBRAE}}}}
    z = rs._predicted_from_render(report, geom)
    assert z["C4"] == pytest.approx(blob[2], abs=1e-6)
    c2 = body_centre(Box(x - 10, y - 8, x + 10, y + 8), "C2")
    assert z["C2"] == pytest.approx(blob[2] - (c2[1] - y) * framing.mm_per_px, abs=1e-6)


def test_scoring_signs_and_the_t2_check():
    refs = {2: rs.Reference(2, (0, 0, 50.0), "landmark"), 9: rs.Reference(9, (0, 0, -62.0), "landmark")}
    s = rs.ReferenceSet("labels", refs)
    predicted = {lv: 45.0 - 16.0 * k for k, lv in enumerate(VERTEBRAE)}     # C2 5 mm low, 16 mm steps
    rows, run = rs.score_levels("x", "nifti", s, predicted, ("C7",))
    c2 = rows[0]
    assert c2.error_mm == pytest.approx(5.0) and c2.within and c2.step_mm == pytest.approx(16.0)
    assert [r.source for r in rows[1:]] == ["no label"] * 5 and rows[-1].outside_fov
    assert run.labelled == 1 and run.right == 1 and run.all_labelled_right and run.all_six is None
    t2 = rs.t2_check("x", "nifti", s, predicted)
    assert t2.predicted_z == pytest.approx(45.0 - 16.0 * 5 - 32.0) and t2.error_mm == pytest.approx(-62.0 + 67.0)
    far = {lv: z - 40.0 for lv, z in predicted.items()}                     # everything 40 mm (2.5 levels) low
    rows, run = rs.score_levels("x", "nifti", s, far, ())
    assert rows[0].error_mm == pytest.approx(45.0) and not rows[0].within and not run.all_labelled_right


# ------------------------------------------------------------------------------------------------
# 3. Reports: patient-space positions for NIfTI input, none for challenge PNGs
# ------------------------------------------------------------------------------------------------
def test_nifti_report_gives_level_and_canal_centres_in_patient_space(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from dicom_factory import parallel_axial_series, phantom_case, slices_to_nifti
    from pipeline import run_batch
    from study.inputs import find_inputs, load_input

    ph, specs, _ = phantom_case()
    sag = [sp for sp in specs if sp.number == 3][0].slices
    batch = tmp_path / "batch"
    slices_to_nifti(sag, batch / "nifti-a" / "t2_sag.nii.gz")
    axials = parallel_axial_series(ph)
    slices_to_nifti(axials, batch / "nifti-a" / "t2_ax.nii.gz")
    shutil.copytree(ROOT / "examples" / "phantom-s2025-0000", batch / "png-a")
    assert run_batch(batch, tmp_path / "out", None, False, "cpu", 4) == 0
    png = json.loads((tmp_path / "out" / "reports" / "png-a.json").read_text())
    assert "centres_lps" not in png["levels"] and not any("canal_centre_lps" in v for v in png["canal"].values())

    rep = json.loads((tmp_path / "out" / "reports" / "nifti-a.json").read_text())
    centres = rep["levels"]["centres_lps"]
    assert list(centres) == list(CANAL_POSITIONS)
    z = [centres[lv][2] for lv in VERTEBRAE]
    assert np.all(np.diff(z) < 0), z                                    # C2 on top, down to C7
    # Each centre is the detector's box (C2: its body) on the mid-sagittal image, mapped to patient space.
    study = load_input([s for s in find_inputs(batch) if s.patient_id == "nifti-a"][0])
    for p in CANAL_POSITIONS:
        x1, y1, x2, y2 = rep["levels"]["discs" if p in DISCS else "vertebrae"]["6"][p]["xyxy"]
        b = Box(x1, y1, x2, y2)
        xy = (b.cx, b.cy) if p in DISCS else body_centre(b, p)
        assert np.allclose(centres[p], study.sagittal_geometry.to_world(np.asarray(xy)), atol=0.11), p
    # The canal centres lie on the axial slices the positions were read from.
    canal = {p: v["canal_centre_lps"] for p, v in rep["canal"].items() if "canal_centre_lps" in v}
    assert set(canal) == {p for p, v in rep["canal"].items() if v["axial_used"]} and len(canal) >= 5
    for p, c in canal.items():
        gaps = [abs(float((np.asarray(c) - a.ipp) @ np.cross(a.row_cos, a.col_cos))) for a in axials]
        assert min(gaps) < 0.1, (p, min(gaps))


# ------------------------------------------------------------------------------------------------
# 4. The command on a real scan (../shared)
# ------------------------------------------------------------------------------------------------
def test_command_on_one_real_scan_and_one_framing(tmp_path):
    scan = SCT / "sub-errsm21" / "anat" / "sub-errsm21_T2w.nii.gz"
    if not scan.is_file():
        pytest.skip(f"real scan {scan} not found (../shared/data absent)")
    out = tmp_path / "out"
    res = CliRunner().invoke(rs.main, ["--data", str(SCT), "--scan", "sub-errsm21", "--framing", "cervai",
                                       "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = (out / "real_scans.md").read_text()
    result = json.loads((out / "real_scans.json").read_text())
    assert "Real scan" in text and "sct_2014" in text
    runs = {r["run"] for r in result["runs"]}
    assert runs == {"nifti", "render cervai (C2 row 98, 0.85 px/mm, 3 mm)"}
    # errsm21 has every level C2-C7 labelled (C2 landmark, C3-C7 between disc labels): a row for each, per run.
    for run in runs:
        rows = {r["level"]: r for r in result["levels"] if r["run"] == run}
        assert set(rows) == set(VERTEBRAE)
        assert all(r["source"] != "no label" and r["error_mm"] is not None for r in rows.values()), rows
        for lv in VERTEBRAE:
            assert f"| sub-errsm21 | {run} | labels | {lv} |" in text
    assert any(r["run"] == "nifti" for r in result["t2_check"])
    assert result["canal"] and not (out / "work").exists()
