"""DICOM studies from the phantom: series choice, orientation, spacing, privacy, compression and bad input."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_factory import (
    MARKERS, SeriesSpec, Slice, assert_private, phantom_case, shift_px, study_texts, uid, write_challenge_layout,
    write_enhanced, write_study,
)
from study.dicom import Scrubber, hashed_study_id
from study.errors import StudyError
from study.inputs import find_inputs, load_input, load_inputs
from study.levels import SAGITTAL_SLICES
from study.loader import load_study
from study.study import Study

from conftest import write_challenge_patient


def load_one(root: Path) -> Study:
    sources = [s for s in find_inputs(root) if s.kind == "dicom"]
    assert len(sources) == 1, sources
    return load_input(sources[0])


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """The phantom's clinical study (DICOM) and the same phantom in challenge layout."""
    ph, specs, axials = phantom_case()
    root = tmp_path_factory.mktemp("dicom")
    written = write_study(root / "patient-a", specs)
    (root / "patient-a" / "DICOM" / "notes.pdf").write_bytes(b"%PDF-1.4 not an image")
    write_challenge_layout(root.parent / (root.name + "-challenge") / "patient-a", ph, axials)
    return ph, root / "patient-a", root.parent / (root.name + "-challenge") / "patient-a", written


def test_series_choice_and_provenance(case, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    _, folder, _, _ = case
    study = load_one(folder)
    prov = "\n".join(study.provenance)
    assert "sagittal: series 3 'T2_TSE_SAG'" in prov                 # T2 over T1
    assert "sagittal not used: series 2 'T1_TSE_SAG'" in prov
    assert "series 1 'localizer'" in prov and "localiser" in prov
    assert "series 6 'T2_SAG_MPR'" in prov and "DERIVED" in prov     # a derived T2 reformat is never used
    assert "coronal" in prov
    assert "axial: series 4" in prov
    assert study.sagittal_spacing_mm == (1.25, 1.25)
    assert len(study.pending_axial) == 21 and study.axial == {}
    for s in SAGITTAL_SLICES:
        assert study.sources[f"sag/{s}"].startswith("series 3 'T2_TSE_SAG'")
    assert "neither DICOM nor NIfTI" in " ".join(study.warnings) and "notes.pdf" in " ".join(study.warnings)
    out = capsys.readouterr()
    assert_private(*study_texts(study), caplog.text, out.out, out.err)


def test_slices_sorted_by_position_not_instance_number(case):
    # The factory numbers instances against the slice order; slice 5 must still be the patient's right.
    _, folder, _, written = case
    study = load_one(folder)
    files = written.files[3]
    for s, k in zip(SAGITTAL_SLICES, (2, 3, 4)):
        ds = pydicom.dcmread(files[k], stop_before_pixels=True)
        assert int(ds.InstanceNumber) == 7 - k
        assert Path(files[k]).name in study.sources[f"sag/{s}"]
    x = [float(pydicom.dcmread(files[k], stop_before_pixels=True).ImagePositionPatient[0]) for k in (2, 3, 4)]
    assert x[0] < x[1] < x[2]   # slice 5 lies toward the patient's right (smaller LPS x)


def test_sagittal_equals_challenge_layout(case):
    _, folder, challenge, _ = case
    dicom = load_one(folder)
    png = load_study(challenge)
    for s in SAGITTAL_SLICES:
        a, b = dicom.sagittal[s], png.sagittal[s]
        assert a.shape == b.shape == (224, 224) and a.dtype == np.float32
        assert np.abs(a - b).mean() < 0.03
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95
        assert shift_px(a, b) < 0.5
    g = dicom.sagittal_geometry
    assert np.allclose(g.down, (0, 0, -1), atol=1e-6) and np.allclose(g.right, (0, 1, 0), atol=1e-6)
    assert np.allclose(g.centre_mm, case[0].centre, atol=1e-3)


def test_any_stored_orientation_gives_the_same_view(tmp_path, case):
    ph, specs, _ = phantom_case(sag_layout="rotated")
    write_study(tmp_path / "rotated", [sp for sp in specs if sp.number == 3])
    rotated = load_one(tmp_path / "rotated")
    standard = load_one(case[1])
    for s in SAGITTAL_SLICES:
        a, b = rotated.sagittal[s], standard.sagittal[s]
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95
        assert shift_px(a, b) < 0.5


@pytest.mark.parametrize("syntax", ["rle", "j2k"])
def test_compressed_pixel_data(tmp_path, syntax, case):
    _, specs, _ = phantom_case(transfer_syntax=syntax)
    sag = [sp for sp in specs if sp.number == 3][0]
    sag.slices = sag.slices[2:5]   # the three slices used are enough
    write_study(tmp_path / syntax, [sag])
    expected = pydicom.uid.RLELossless if syntax == "rle" else pydicom.uid.JPEG2000Lossless
    assert all(pydicom.dcmread(f).file_meta.TransferSyntaxUID == expected for f in (tmp_path / syntax).rglob("*")
               if f.is_file())
    got = load_one(tmp_path / syntax)
    plain = load_one(case[1])
    assert np.allclose(got.sagittal[6], plain.sagittal[6], atol=1e-5)  # lossless: identical pixels


def _mpeg2(path: Path) -> None:
    """Rewrite a file as if its pixel data were MPEG-2 video, for which pydicom has no decoder."""
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.MPEG2MPML
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=True)


def test_unavailable_decoder_names_the_syntax(tmp_path):
    _, specs, _ = phantom_case()
    sag = [sp for sp in specs if sp.number == 3][0]
    t1 = [sp for sp in specs if sp.number == 2][0]
    w = write_study(tmp_path / "only", [sag])
    for f in w.files[3]:
        _mpeg2(f)
    with pytest.raises(StudyError) as err:
        load_one(tmp_path / "only")
    assert "MPEG2" in str(err.value) and "no decoder" in str(err.value)
    assert err.value.patient == "only"
    assert_private(str(err.value))
    # With a decodable T1 sagittal beside it, the reader falls back to it and says why.
    w = write_study(tmp_path / "fallback", [sag, t1])
    for f in w.files[3]:
        _mpeg2(f)
    study = load_one(tmp_path / "fallback")
    text = " ".join(study.warnings)
    assert "MPEG2" in text and "T1_TSE_SAG" in text and "no clearly T2-weighted" in text


def test_file_without_pixel_data_and_non_dicom_files(tmp_path):
    _, specs, _ = phantom_case()
    sag = [sp for sp in specs if sp.number == 3][0]
    w = write_study(tmp_path / "p", [sag], nested=False)
    ds = pydicom.dcmread(w.files[3][0])
    del ds.PixelData
    ds.save_as(w.files[3][0], enforce_file_format=True)
    (tmp_path / "p" / "garbage").write_bytes(np.random.default_rng(0).bytes(4000))
    (tmp_path / "p" / "truncated").write_bytes(w.files[3][1].read_bytes()[:200])
    study = load_one(tmp_path / "p")
    text = " ".join(study.warnings)
    assert "without pixel data" in text and w.files[3][0].name in text
    assert "garbage" in text
    assert "truncated" in text
    assert_private(*study_texts(study))


def _with_sagittal_slices(folder, keep):
    """The phantom DICOM study with its sagittal series (number 3) cut to keep(slices), written and read."""
    _, specs, _ = phantom_case()
    sag = [sp for sp in specs if sp.number == 3][0]
    sag.slices = keep(sag.slices)
    write_study(folder, [sag])
    return load_one(folder)


def test_irregular_slice_spacing_warns(tmp_path):
    # a gap where slice 5 should be
    study = _with_sagittal_slices(tmp_path / "gap", lambda slices: [s for k, s in enumerate(slices) if k != 2])
    text = " ".join(study.warnings)
    assert "irregular slice spacing" in text
    assert "slice 5 lies 7.0 mm from the mid slice" in text


def test_single_slice_series_is_read_with_stand_ins(tmp_path):
    study = _with_sagittal_slices(tmp_path / "one", lambda slices: slices[3:4])
    assert study.sagittal_standins == {5: 6, 7: 6} and study.sagittal_views == {6: 6}
    assert study.sagittal[5] is study.sagittal[6] is study.sagittal[7]
    assert list(k for k in study.sources if k.startswith("sag/")) == ["sag/6"]
    text = " ".join(study.warnings)
    assert "has 1 slice(s): sag/5: sagittal slice 5 missing; slice 6 stands in" in text


def test_two_slice_series_is_read_with_one_stand_in(tmp_path):
    study = _with_sagittal_slices(tmp_path / "two", lambda slices: slices[3:5])
    assert len(study.sagittal_standins) == 1 and len(study.real_sagittal) == 2
    [(missing, source)] = study.sagittal_standins.items()
    assert missing in (5, 7) and source == 6       # the mid slice is read, the missing side takes it
    assert study.sagittal[missing] is study.sagittal[6]


def test_a_full_series_is_preferred_to_a_short_one(tmp_path):
    _, specs, _ = phantom_case()
    sag = [sp for sp in specs if sp.number == 3][0]
    short = dataclass_replace(sag, number=9, slices=sag.slices[3:4])
    write_study(tmp_path / "both", [short, sag])
    study = load_one(tmp_path / "both")
    assert study.sagittal_standins == {}


def test_no_sagittal_series(tmp_path):
    _, specs, _ = phantom_case()
    write_study(tmp_path / "ax", [sp for sp in specs if sp.number == 4])
    with pytest.raises(StudyError, match="no sagittal series found"):
        load_one(tmp_path / "ax")


def test_folder_named_after_the_patient_gets_a_hashed_id(tmp_path):
    _, specs, _ = phantom_case()
    sag = [sp for sp in specs if sp.number == 3][0]
    folder = tmp_path / "batch" / "ZZMARKSURNAME_ZZMARKGIVEN"
    write_study(folder, [sag], study_key="named")
    (tmp_path / "batch" / "ZZMARKSURNAME_ZZMARKGIVEN" / "readme.dat").write_bytes(b"hello")
    [source] = find_inputs(tmp_path / "batch")
    assert source.patient_id == hashed_study_id(uid("named", 0))
    study = load_input(source)
    assert study.patient_id == source.patient_id
    assert_private(*study_texts(study), *source.notes)


def test_folder_of_studies_and_batch_isolation(tmp_path):
    _, specs, _ = phantom_case()
    sag = [sp for sp in specs if sp.number == 3][0]
    write_study(tmp_path / "a", [sag], study_key="a")
    write_study(tmp_path / "b" / "deep" / "er", [sag], study_key="b")
    write_study(tmp_path / "c", [dataclass_replace(sag, slices=sag.slices[:1])], study_key="c")
    # Two studies in one folder: each gets a hashed id.
    write_study(tmp_path / "d", [sag], study_key="d1")
    write_study(tmp_path / "d", [sag], seed=1, study_key="d2")
    results = {s.patient_id: r for s, r in load_inputs(tmp_path)}
    assert isinstance(results["a"], Study) and isinstance(results["b"], Study)
    assert isinstance(results["c"], Study) and results["c"].sagittal_standins == {5: 6, 7: 6}   # one slice
    hashed = {hashed_study_id(uid("d1", 0)), hashed_study_id(uid("d2", 1))}
    assert hashed <= set(results)
    assert_private(*results, *(str(r) for r in results.values()))


def dataclass_replace(spec: SeriesSpec, **kw) -> SeriesSpec:
    import dataclasses
    return dataclasses.replace(spec, **kw)


def test_scrubber_catches_name_parts_and_dates():
    clean = Scrubber([MARKERS["PatientName"], MARKERS["PatientBirthDate"], "AB"])
    text = "zzmarksurname zzmarkgiven_ZZMARKSURNAME 1901-02-03 series 'sagittal' AB"
    out = clean(text)
    assert "zzmark" not in out.lower() and "1901" not in out
    assert "sagittal" in out and "AB" in out   # short values and longer words are left alone


def test_enhanced_multiframe_series(tmp_path, case):
    _, specs, _ = phantom_case()
    sag = [sp for sp in specs if sp.number == 3][0]
    write_enhanced(tmp_path / "mf" / "IMG0001", sag)
    study = load_one(tmp_path / "mf")
    plain = load_one(case[1])
    for s in SAGITTAL_SLICES:
        assert np.allclose(study.sagittal[s], plain.sagittal[s], atol=1e-5)
    assert "TE 100 ms" in study.sources["sag/6"] or "TE 100 ms" in " ".join(study.provenance)
    assert "frame" in study.sources["sag/6"]


# ------------------------------------------------------------------------------------------------
# Headers that claim what the file cannot hold
# ------------------------------------------------------------------------------------------------
def tiny_sagittal(folder: Path) -> list:
    """A small valid sagittal T2 series (5 slices of 64x64, 3 mm apart) written flat; its files in slice order."""
    rng = np.random.default_rng(0)
    slices = [Slice(rng.random((64, 64)).astype(np.float32), np.array([x, -100.0, 150.0]), np.array([0, 1.0, 0]),
                    np.array([0, 0, -1.0]), (3.5, 3.5)) for x in (-6.0, -3.0, 0.0, 3.0, 6.0)]
    return write_study(folder, [SeriesSpec(slices, 3, "T2_SAG")], nested=False).files[3]


def set_tags(path: Path, **values) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)


def test_huge_frame_claim_is_refused_before_any_per_frame_work(tmp_path):
    # A 9 kB file claiming 100 000 frames used to hold the loader for 40-50 s (a plane and a reader per
    # claimed frame) and then load with "99999 slice(s) repeat a position".
    files = tiny_sagittal(tmp_path / "p")
    set_tags(files[0], NumberOfFrames=100_000)
    assert files[0].stat().st_size < 10_000
    start = time.perf_counter()
    study = load_one(tmp_path / "p")
    assert time.perf_counter() - start < 5.0
    text = " ".join(study.warnings)
    assert files[0].name in text and "claims 100,000 frames" in text and "repeat a position" not in text
    assert study.sources["sag/6"].endswith("+0.0 mm)")   # the other four slices are read as before


def test_frame_claim_beyond_the_pixel_data_names_file_and_sizes(tmp_path):
    files = tiny_sagittal(tmp_path / "p")
    for f in files:
        set_tags(f, NumberOfFrames=3)   # 64x64 16-bit: 8192 bytes stored, 3 frames need 24576
    with pytest.raises(StudyError) as err:
        load_one(tmp_path / "p")
    e = err.value
    assert e.patient == "p" and e.path in {f.name for f in files}
    assert "3 frames of 64 x 64 pixels (24,576 bytes of pixel data)" in e.problem and "holds 8,192 bytes" in e.problem
    assert "4 other file(s) set aside" in e.problem


def test_enhanced_file_claiming_more_frames_than_stored(tmp_path):
    _, specs, _ = phantom_case()
    sag = [sp for sp in specs if sp.number == 3][0]
    path = write_enhanced(tmp_path / "mf" / "IMG0001", sag)
    set_tags(path, NumberOfFrames=2_000)
    with pytest.raises(StudyError) as err:
        load_one(tmp_path / "mf")
    assert err.value.path == "IMG0001" and "2,000 frames" in err.value.problem and "bytes" in err.value.problem
    assert_private(str(err.value))


def test_compressed_file_claiming_more_frames_than_it_can_hold(tmp_path):
    _, specs, _ = phantom_case(transfer_syntax="rle")
    sag = [sp for sp in specs if sp.number == 3][0]
    sag.slices = sag.slices[2:5]
    written = write_study(tmp_path / "rle", [sag], nested=False)
    target = written.files[3][1]
    set_tags(target, NumberOfFrames=4_000)   # under the frame limit, but 4000 fragments need 32 kB of items
    size = target.stat().st_size
    assert size < 4_000 * 8
    study = load_one(tmp_path / "rle")
    # Two slices are left: read with a stand-in for the third, and the warnings name the file set aside.
    assert len(study.sagittal_standins) == 1
    assert f"{target.name}: claims 4,000 frames but the whole file ({size:,} bytes)" in " ".join(study.warnings)


def test_rows_columns_bomb_is_refused(tmp_path):
    files = tiny_sagittal(tmp_path / "p")
    set_tags(files[2], Rows=60_000, Columns=60_000)
    study = load_one(tmp_path / "p")
    text = " ".join(study.warnings)
    assert files[2].name in text and "60000 x 60000 pixels per frame, above the 50 MP limit" in text


@pytest.mark.parametrize("where", ["one", "all"])
def test_extreme_image_position_is_a_clear_error(tmp_path, where):
    # Used to surface as "min() arg is an empty sequence": the middle of 1e300 and 6 mm cannot be told apart
    # from either end, so no slice was found on one side of the mid slice.
    files = tiny_sagittal(tmp_path / "p")
    for f in files if where == "all" else files[-1:]:
        ds = pydicom.dcmread(f)
        set_tags(f, ImagePositionPatient=[1e300, *[float(v) for v in ds.ImagePositionPatient[1:]]])
    if where == "one":   # the file is set aside with a warning naming it; the other four are read
        study = load_one(tmp_path / "p")
        text = " ".join(study.warnings)
        assert files[-1].name in text and "image position (1e+300, -100, 150) mm lies implausibly far" in text
        return
    with pytest.raises(StudyError) as err:
        load_one(tmp_path / "p")
    e = err.value
    assert "min() arg" not in str(e)
    assert e.path in {f.name for f in files} and "implausibly far from the scanner's origin" in e.problem


def test_constant_sagittal_slice_is_marked_blank(tmp_path):
    files = tiny_sagittal(tmp_path / "p")
    ds = pydicom.dcmread(files[2])   # the mid slice
    ds.PixelData = np.full((64, 64), 500, np.uint16).tobytes()
    ds.save_as(files[2], enforce_file_format=True)
    study = load_one(tmp_path / "p")
    assert study.blank_images == ("sag/6",)
    assert any(w.startswith("sag/6 (series 3 'T2_SAG'") and "same value" in w for w in study.warnings)
    tiny_sagittal(tmp_path / "q")   # black outside the field of view is not a blank image
    assert load_one(tmp_path / "q").blank_images == ()


def test_midpoint_that_cannot_be_told_apart_from_the_ends(tmp_path):
    # The last guard, below the position limit: positions too far apart for their midpoint to fall between.
    from study.series import Stack, choose_sagittal_slices

    stack = Stack("series 9", "sagittal", np.array([1.0, 0, 0]), [None] * 4, np.array([-6.0, -3.0, 0.0, 1e300]))
    with pytest.raises(ValueError, match="no slice lies on the patient's right of the mid slice"):
        choose_sagittal_slices(stack)


# ------------------------------------------------------------------------------------------------
# A batch of DICOM studies beside challenge-layout patients
# ------------------------------------------------------------------------------------------------
def _odd_entries(root: Path, outside: Path) -> None:
    """Entries a folder of patients may hold besides good patients: each must be reported, never dropped."""
    (root / "empty").mkdir()
    (root / "loop").symlink_to(root / "loop")                  # a patient entry that is a link to itself
    (root / "moved").symlink_to(outside / "gone")              # a link whose target has moved
    (root / "pdf-only").mkdir()
    (root / "pdf-only" / "referral.pdf").write_bytes(b"%PDF-1.4 not an image")
    write_challenge_patient(outside / "elsewhere", seed=5)
    (root / "linked").symlink_to(outside / "elsewhere")        # a good patient reached through a link


ODD = ("empty", "linked", "loop", "moved", "pdf-only")


def test_mixed_batch_reports_every_patient_folder_like_a_png_batch(tmp_path):
    # Before: with DICOM files in the batch, patients were found by walking the tree, and an empty folder, a
    # link loop, a moved link, a folder of other files and a linked patient silently disappeared.
    png_only, mixed = tmp_path / "png-only", tmp_path / "mixed"
    for root in (png_only, mixed):
        write_challenge_patient(root / "p1", seed=1)
        _odd_entries(root, tmp_path / f"outside-{root.name}")
    tiny_sagittal(mixed / "dicom-a")
    unreadable = mixed / "dicom-b" / "IM0001"
    unreadable.parent.mkdir()
    unreadable.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)   # starts like DICOM: a broken fragment

    def outcome(root):
        return {s.patient_id: r for s, r in load_inputs(root)}

    expected = outcome(png_only)
    assert set(expected) == {"p1", *ODD}
    got = outcome(mixed)
    hashed = hashed_study_id(str(unreadable.parent))
    assert set(got) == {"p1", "dicom-a", hashed, *ODD}
    for pid in ("p1", "linked", "dicom-a"):
        assert isinstance(got[pid], Study), got[pid]
    for pid in ("empty", "loop", "moved", "pdf-only"):
        assert isinstance(got[pid], StudyError)
        assert got[pid].problem == expected[pid].problem and got[pid].path == expected[pid].path
    assert "patient folder is empty" in got["empty"].problem
    assert "symbolic link that cannot be followed" in got["loop"].problem
    # The folder whose only DICOM-like file is broken fails naming that file, under a non-identifying id.
    assert isinstance(got[hashed], StudyError) and "incomplete" in got[hashed].problem
    assert "IM0001" in got[hashed].problem and "dicom-b" not in str(got[hashed])
