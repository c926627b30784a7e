"""NIfTI inputs: the real SCT scans (orientation, spacing, also re-written as DICOM), BIDS trees, bad volumes."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import SHARED_DATA
from detector.boxes import LevelBoxes
from dicom_factory import (
    SeriesSpec, assert_private, parallel_axial_series, phantom_case, slices_to_nifti, study_texts, volume_slices,
    write_study,
)
from study.axial_match import attach_axials
from study.errors import StudyError
from study.geometry import model_axial_plane
from study.inputs import find_inputs, load_input, load_inputs
from study.levels import CANAL_POSITIONS, SAGITTAL_SLICES
from study.nifti import nifti_stacks
from study.study import Study

REAL = SHARED_DATA / "real_mri"
CROP = REAL / "cervical_sagittal_t2_crop"
AXIAL = REAL / "cervical_axial_t2" / "t2_axial.nii.gz"


@pytest.fixture(scope="module")
def real():
    for f in (CROP / "t2.nii.gz", CROP / "t2_seg-manual_labeled.nii.gz", AXIAL):
        if not f.is_file():
            pytest.skip(f"real scan {f} not found (../shared/data absent)")
    return REAL


def by_id(root: Path):
    return {s.patient_id: s for s in find_inputs(root)}


def test_real_sagittal_orientation_and_spacing(real, tmp_path):
    sources = by_id(real)
    # sct_2014/ is a BIDS root: its subjects are patients, its derivatives/ (label maps) are not.
    expected = {"cervical_sagittal_t2_crop", "cervical_axial_t2"}
    if (real / "sct_2014").is_dir():
        expected |= {p.name for p in (real / "sct_2014").glob("sub-*") if (p / "anat").is_dir()}
    assert set(sources) == expected
    crop = load_input(sources["cervical_sagittal_t2_crop"])
    assert crop.sagittal_spacing_mm == (1.25, 1.25)
    g = crop.sagittal_geometry
    assert np.allclose(g.down, (0, 0, -1), atol=1e-6)    # image rows run inferior: superior is up
    assert np.allclose(g.right, (0, 1, 0), atol=1e-6)    # image columns run posterior: anterior is left
    prov = " ".join(crop.provenance)
    assert "t2_seg-manual_labeled.nii.gz" in prov and "labels.nii.gz" in prov   # label maps never read as images
    assert "3-D volume cut sagittally" in crop.sources["sag/6"]

    # The cord's level labels, turned into an image on the same voxel grid and read by the same loader:
    # the level number (2 = C2 ... ) must grow down the image, and the labelled extent keep its length.
    seg = nib.load(str(CROP / "t2_seg-manual_labeled.nii.gz"))
    levels = np.rint(np.asanyarray(seg.dataobj)).astype(np.float32)
    ramp = np.linspace(0, 1e-3, levels.size, dtype=np.float32).reshape(levels.shape)  # not a label map
    fake = tmp_path / "levels" / "t2.nii.gz"
    fake.parent.mkdir()
    nib.save(nib.Nifti1Image(levels * 100 + ramp, seg.affine), str(fake))
    lv = load_input(find_inputs(fake.parent)[0]).sagittal
    inner = lv[6] > 0.3   # inside the cord (its edges blend with the background)
    level_of = np.rint(lv[6] / lv[6].max() * levels.max())   # intensity is proportional to the level
    rows_by_level = [np.argwhere(inner & (level_of == v))[:, 0].mean() for v in (2, 3, 4, 5)]
    assert np.all(np.diff(rows_by_level) > 5), rows_by_level     # C2 on top, then C3, C4, C5
    idx = np.argwhere(levels > 0)
    z = nib.affines.apply_affine(seg.affine, idx)[:, 2]
    extent_mm = z.max() - z.min() + 1.0
    rows = np.argwhere(lv[6] > 0.05)[:, 0]
    assert abs((rows.max() - rows.min() + 1) * 1.25 - extent_mm) < 3.0

    # The axial-only scan is a patient without a sagittal series: a clear error, not a crash.
    with pytest.raises(StudyError) as err:
        load_input(sources["cervical_axial_t2"])
    assert err.value.patient == "cervical_axial_t2" and "no sagittal series found" in str(err.value)


def test_real_axial_geometry(real):
    [stack] = nifti_stacks(AXIAL, "p", AXIAL.name)[0]
    assert stack.orientation == "axial" and len(stack.slices) == 19
    assert stack.normal[2] > 0.99                                  # ordered toward superior
    assert np.allclose(np.diff(stack.positions_mm), 7.5, atol=0.05)
    assert stack.slices[0].plane.spacing_mm == pytest.approx((0.6875, 0.6875), abs=1e-3)
    view = model_axial_plane(stack.slices[9].plane)
    assert view.right[0] > 0.99 and view.down[1] > 0.99            # patient left on the right, anterior up
    assert view.spacing_mm == (0.7, 0.7)


def test_real_scans_written_as_dicom_load_the_same(real, tmp_path):
    crop_img = nib.load(str(CROP / "t2.nii.gz"))
    ax_img = nib.load(str(AXIAL))
    crop = np.asanyarray(crop_img.dataobj).astype(np.float32)
    sag = volume_slices(crop, crop_img.affine, axis=2)        # P-S-R: the third axis runs left-right
    ax = volume_slices(np.asanyarray(ax_img.dataobj).astype(np.float32), ax_img.affine, axis=2)
    write_study(tmp_path / "as-dicom", [SeriesSpec(sag, 2, "t2_sag", scale=1.0),
                                        SeriesSpec(ax, 3, "t2_axial", scale=1.0)])
    [source] = find_inputs(tmp_path / "as-dicom")
    dicom = load_input(source)
    nifti = load_input(by_id(real)["cervical_sagittal_t2_crop"])
    for s in SAGITTAL_SLICES:
        assert np.allclose(dicom.sagittal[s], nifti.sagittal[s], atol=2e-3)
    gd, gn = dicom.sagittal_geometry, nifti.sagittal_geometry
    assert np.allclose(gd.first_pixel_mm, gn.first_pixel_mm, atol=1e-3)
    assert np.allclose(gd.down, (0, 0, -1), atol=1e-6) and np.allclose(gd.right, (0, 1, 0), atol=1e-6)
    # The axial scan's slices keep their planes through DICOM.
    [stack] = nifti_stacks(AXIAL, "p", AXIAL.name)[0]
    assert len(dicom.pending_axial) == 19
    for a, ref in zip(sorted(dicom.pending_axial, key=lambda a: a.plane.first_pixel_mm[2]), stack.slices):
        assert np.allclose(a.plane.first_pixel_mm, ref.plane.first_pixel_mm, atol=1e-3)
        assert np.allclose(a.plane.normal, ref.plane.normal, atol=1e-4)
    assert_private(*study_texts(dicom))


@pytest.fixture(scope="module")
def bids(tmp_path_factory):
    """A BIDS-like tree: sub-01 (sagittal + axial T2w, JSON sidecar), sub-02 (4-D), sub-03 (NaNs)."""
    ph, specs, _ = phantom_case()
    sag = [sp for sp in specs if sp.number == 3][0].slices
    root = tmp_path_factory.mktemp("bids")
    anat = root / "sub-01" / "anat"
    slices_to_nifti(sag, anat / "sub-01_acq-sag_T2w.nii.gz")
    (anat / "sub-01_acq-sag_T2w.json").write_text(json.dumps({"EchoTime": 0.1, "RepetitionTime": 3.5}))
    slices_to_nifti(parallel_axial_series(ph), anat / "sub-01_acq-ax_T2w.nii.gz")
    (root / "dataset_description.json").write_text("{}")
    vol = nib.load(str(anat / "sub-01_acq-sag_T2w.nii.gz"))
    data = np.asanyarray(vol.dataobj)
    four = root / "sub-02" / "anat" / "sub-02_T2w.nii.gz"
    four.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.stack([data] * 3, -1), vol.affine), str(four))
    nan = data.copy()
    nan[100:120, 100:120, :] = np.nan
    (root / "sub-03" / "anat").mkdir(parents=True)
    nib.save(nib.Nifti1Image(nan, vol.affine), str(root / "sub-03" / "anat" / "sub-03_T2w.nii.gz"))
    return ph, root


def test_bids_tree_matches_the_dicom_study(bids, tmp_path):
    ph, root = bids
    results = {s.patient_id: r for s, r in load_inputs(root)}
    assert set(results) == {"sub-01", "sub-02", "sub-03"}
    study = results["sub-01"]
    assert isinstance(study, Study)
    assert "TE 100 ms" in " ".join(study.provenance)
    _, specs, _ = phantom_case()
    write_study(tmp_path / "dicom", [sp for sp in specs if sp.number == 3])
    [source] = find_inputs(tmp_path / "dicom")
    dicom = load_input(source)
    for s in SAGITTAL_SLICES:
        assert np.abs(study.sagittal[s] - dicom.sagittal[s]).max() < 2e-3
    boxes = LevelBoxes.from_patient_boxes(ph.model_boxes(3.5))
    attached = attach_axials(study, boxes)
    assert set(attached.axial) == set(CANAL_POSITIONS)
    # A parallel stack 4 mm apart: every level has a slice within 2 mm.
    for line in attached.provenance:
        if line.startswith("axial C"):
            assert float(line.split(" mm from the level centre")[0].rsplit(", ", 1)[1]) <= 2.0 + 1e-6
    assert attached.sources["tra/C4"].startswith("sub-01/anat/sub-01_acq-ax_T2w.nii.gz")


def test_four_d_volume_is_a_clear_error(bids):
    _, root = bids
    with pytest.raises(StudyError) as err:
        load_input(by_id(root)["sub-02"])
    assert err.value.patient == "sub-02" and "4-D" in str(err.value) and "sub-02_T2w.nii.gz" in str(err.value)


def test_nans_are_replaced_with_a_warning(bids):
    _, root = bids
    study = load_input(by_id(root)["sub-03"])
    assert "NaN/infinite voxel" in " ".join(study.warnings)
    assert all(np.isfinite(study.sagittal[s]).all() for s in SAGITTAL_SLICES)


def test_singleton_fourth_dimension_and_single_file_input(bids, tmp_path):
    _, root = bids
    vol = nib.load(str(root / "sub-01" / "anat" / "sub-01_acq-sag_T2w.nii.gz"))
    path = tmp_path / "one_T2w.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(vol.dataobj)[..., None], vol.affine), str(path))
    [source] = find_inputs(path)
    assert source.patient_id == "one_T2w"
    assert isinstance(load_input(source), Study)


def test_unreadable_nifti_is_a_clear_error(tmp_path):
    bad = tmp_path / "p" / "t2.nii.gz"
    bad.parent.mkdir()
    bad.write_bytes(b"not gzip at all")
    [source] = find_inputs(tmp_path)
    with pytest.raises(StudyError) as err:
        load_input(source)
    assert err.value.patient == "p" and "t2.nii.gz" in str(err.value)


def test_patient_folders_of_nifti_volumes(tmp_path):
    vol = nib.Nifti1Image(np.random.default_rng(0).random((8, 9, 10)).astype(np.float32), np.eye(4))
    for rel in ("batch/p1/t2_sag.nii.gz", "batch/p1/t2_ax.nii.gz", "batch/p2/sag/a.nii.gz", "batch/p2/ax/b.nii",
                "batch/deep/p3/x.nii.gz", "batch/sub-04/ses-1/anat/sub-04_T2w.nii.gz"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        nib.save(vol, str(tmp_path / rel))
    got = {s.patient_id: len(s.files) for s in find_inputs(tmp_path / "batch")}
    assert got == {"p1": 2, "p2": 2, "p3": 1, "sub-04": 1}


def test_bids_root_skips_derivatives_sourcedata_and_code(tmp_path):
    """Label maps under derivatives/ carry a subject's name but are no patient: ids stay sub-01, sub-02."""
    vol = nib.Nifti1Image(np.random.default_rng(0).random((8, 9, 10)).astype(np.float32), np.eye(4))
    root = tmp_path / "bids"
    for rel in ("sub-01/anat/sub-01_T2w.nii.gz", "sub-02/anat/sub-02_T2w.nii.gz",
                "derivatives/labels/sub-01/anat/sub-01_T2w_landmarks.nii.gz",
                "sourcedata/sub-02/anat/sub-02_T2w.nii.gz", "code/sub-03/anat/sub-03_T2w.nii.gz"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        nib.save(vol, str(root / rel))
    sources = find_inputs(root)
    assert [s.patient_id for s in sources] == ["sub-01", "sub-02"]
    assert all("derivatives" not in str(f) and "sourcedata" not in str(f) for s in sources for f in s.files)
    # Outside a BIDS root a folder called derivatives/ is an ordinary patient folder.
    other = tmp_path / "plain"
    (other / "derivatives").mkdir(parents=True)
    nib.save(vol, str(other / "derivatives" / "t2.nii.gz"))
    assert [s.patient_id for s in find_inputs(other)] == ["derivatives"]


@pytest.mark.parametrize("n", [1, 2])
def test_nifti_sagittal_volume_of_one_or_two_slices(tmp_path, n):
    # Item 1 of issue 19: a sagittal volume of 1 or 2 slices is read; the slices it lacks are stood in for.
    _, specs, _ = phantom_case()
    sag = [sp for sp in specs if sp.number == 3][0].slices
    full = slices_to_nifti(sag[3:5], tmp_path / "tmp" / "t2.nii.gz")
    vol = nib.load(str(full))
    data = np.asanyarray(vol.dataobj)[..., :n]
    path = tmp_path / "p" / "t2.nii.gz"
    path.parent.mkdir()
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), vol.affine), str(path))
    [source] = find_inputs(tmp_path / "p")
    study = load_input(source)
    assert len(study.real_sagittal) == n and len(study.sagittal_standins) == 3 - n
    assert 6 in study.real_sagittal or study.sagittal_standins.get(6) in study.real_sagittal
    for s, src in study.sagittal_standins.items():
        assert study.sagittal[s] is study.sagittal[src]
    assert sum("stands in" in w for w in study.warnings) == 3 - n


def test_a_field_of_view_tilted_in_its_plane_is_seen_as_acquired(tmp_path):
    """A sagittal volume whose rows and columns are turned 25 degrees about the left-right axis (the operator
    framed a leaning spine): the model sees the slice as a viewer shows it, in its own row/column axes, so the
    image is the one the same volume gives untilted; the geometry carries the tilt into patient space."""
    rng = np.random.default_rng(0)
    vol = rng.random((120, 160, 15)).astype(np.float32)           # P, S, R (the SCT scans' storage order)
    vol[40:50, :, :] += 3.0                                       # a bright column along the volume's S axis
    straight = np.array([[0, 0, 1, -7.0], [-1, 0, 0, 60.0], [0, 1, 0, -80.0], [0, 0, 0, 1]])
    t = np.deg2rad(25.0)
    turn = np.eye(4)
    turn[1:3, 1:3] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]   # about x (left-right), RAS
    for name, aff in (("straight", straight), ("tilted", turn @ straight)):
        (tmp_path / name).mkdir()
        nib.save(nib.Nifti1Image(vol, aff), str(tmp_path / name / "t2.nii.gz"))
    a, b = (load_input(by_id(tmp_path)[n]) for n in ("straight", "tilted"))
    assert np.allclose(a.sagittal[6], b.sagittal[6], atol=1e-5)
    # The same pixel lies 25 degrees apart in patient space: the tilt is in the geometry, not in the picture.
    down_a, down_b = np.asarray(a.sagittal_geometry.down), np.asarray(b.sagittal_geometry.down)
    assert np.degrees(np.arccos(np.clip(down_a @ down_b, -1, 1))) == pytest.approx(25.0, abs=1e-4)
    assert down_b @ np.array([0, 0, -1.0]) > np.cos(np.deg2rad(26))   # still superior up, within the tilt


def _mirrored_volume(n_lr: int, plane: float) -> np.ndarray:
    """A (P, S, R) volume whose slices k and k' look alike when (k + k') / 2 == plane: a neck symmetric about
    that plane (a random texture per distance from it, and a bright canal on it)."""
    rng = np.random.default_rng(3)
    texture = rng.random((40, 60, 80)).astype(np.float32)
    vol = np.stack([texture[:, :, int(round(abs(k - plane) * 2))] for k in range(n_lr)], 2)
    vol[18:22, :, :] += np.exp(-0.5 * ((np.arange(n_lr) - plane) / 3.0) ** 2)[None, None, :]
    return vol


@pytest.mark.parametrize("plane, mid_index", [(18.0, (18,)), (26.0, (25, 26))])
def test_the_mid_slice_lies_on_the_necks_mirror_plane(tmp_path, plane, mid_index):
    """A 3-D slab of 52 planes (1 mm) planned off the midline: the neck mirrors about plane 18 (7.5 mm from the
    stack's middle, 25.5), so the mid slice is plane 18 and the study says why; a mirror plane within
    KEEP_MIDDLE_MM of the middle (26) leaves a slice of the middle (25 or 26) in place."""
    from study.midline import mirror_plane_mm
    from study.series import choose_sagittal_slices

    vol = _mirrored_volume(52, plane)
    aff = np.array([[0, 0, 1, -25.0], [-1, 0, 0, 20.0], [0, 1, 0, -30.0], [0, 0, 0, 1]])  # P, S, R as SCT stores
    path = tmp_path / "p" / "t2.nii.gz"
    path.parent.mkdir()
    nib.save(nib.Nifti1Image(vol, aff), str(path))
    stacks, _ = nifti_stacks(path, "p", "t2.nii.gz")
    sag = next(s for s in stacks if s.orientation == "sagittal")
    found = mirror_plane_mm(sag.positions_mm, lambda k: sag.slices[k].read(), sag.slices[0].plane.spacing_mm)
    at = {int(r.name.rsplit("k=", 1)[1]): p for r, p in zip(sag.slices, sag.positions_mm)}   # plane -> mm
    assert found == pytest.approx(at[int(plane)], abs=0.51)
    choice = choose_sagittal_slices(sag)
    mid = choice.indices[6]
    assert int(sag.slices[mid].name.rsplit("k=", 1)[1]) in mid_index
    assert abs(choice.offsets_mm[5] + 3) <= 0.5 and abs(choice.offsets_mm[7] - 3) <= 0.5
    said = [n for n in choice.notes if "mirror-symmetric" in n]
    assert (len(said) == 1 and "7.5 mm" in said[0]) if mid_index == (18,) else not said
