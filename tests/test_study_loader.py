"""Tests for study.loader: finding patients, loading the challenge layout, and every bad-input case."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from conftest import deny_reading, png_header_only, write_challenge_patient, write_png
from study import loader
from study.errors import StudyError
from study.levels import CANAL_POSITIONS, IMAGE_SIZE, SAGITTAL_SLICES, axial_file_stem
from study.inputs import load_inputs
from study.loader import find_patients, inspect_study, load_study, read_image
from study.study import Study


def assert_names(error: StudyError, patient: str, filename: str) -> None:
    """The error names the patient and the file, both as attributes and in its message."""
    assert error.patient == patient
    assert patient in str(error)
    assert filename in str(error)
    assert error.path is not None and Path(error.path).name == Path(filename).name


def assert_unit_image(image: np.ndarray) -> None:
    assert image.shape == (IMAGE_SIZE, IMAGE_SIZE)
    assert image.dtype == np.float32
    assert np.isfinite(image).all()
    assert image.min() >= 0.0 and image.max() <= 1.0


def tra(position: str) -> str:
    return f"tra/{axial_file_stem(position)}.png"


def noise(size=IMAGE_SIZE, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# A valid patient
# ----------------------------------------------------------------------------------------------

def test_valid_patient_loads_every_image(patient_dir):
    study = load_study(patient_dir)
    assert isinstance(study, Study)
    assert study.patient_id == "p001"
    assert sorted(study.sagittal) == sorted(SAGITTAL_SLICES)
    assert list(study.axial) == list(CANAL_POSITIONS)
    for image in list(study.sagittal.values()) + list(study.axial.values()):
        assert_unit_image(image)
    assert study.warnings == ()
    assert study.missing_axial == ()
    assert study.sagittal_stack().shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    assert study.sources["sag/6"] == str(patient_dir / "sag" / "6.png")
    assert study.sources["tra/C2-3"] == str(patient_dir / "tra" / "2-3.png")


def test_file_names_relative_to_the_input_folder(tmp_path):
    # What reports (Study.sources) and errors.json carry: nothing of the folders above --input, whose names
    # may identify the patient, as the DICOM loader's names are relative to it.
    from study.inputs import load_inputs

    batch = tmp_path / "Doe_Jane_1901-02-03" / "batch"
    write_challenge_patient(batch / "p1")
    write_challenge_patient(batch / "p2", skip=("sag/5.png", "sag/6.png", "sag/7.png"))
    (batch / "p3").mkdir()
    got = {s.patient_id: r for s, r in load_inputs(batch)}
    assert got["p1"].sources["sag/6"] == "p1/sag/6.png" and got["p1"].sources["tra/C2-3"] == "p1/tra/2-3.png"
    assert str(got["p2"]) == "patient p2, folder p2/sag: sagittal folder sag/ is missing"
    assert got["p3"].path == "p3"
    [(_, single)] = list(load_inputs(batch / "p1"))   # one patient given as --input
    assert single.sources["sag/6"] == "sag/6.png"
    for text in (*got["p1"].sources.values(), *single.sources.values(), str(got["p2"]), str(got["p3"])):
        assert "Doe_Jane" not in text and str(tmp_path) not in text


def test_eight_bit_is_divided_by_255_exactly(patient_dir):
    pixels = noise(seed=7)
    write_png(patient_dir / "sag" / "6.png", pixels)
    study = load_study(patient_dir)
    np.testing.assert_array_equal(study.sagittal[6], pixels.astype(np.float32) / 255.0)
    assert study.sagittal[6].flags.writeable and study.sagittal[6].flags.c_contiguous


def test_patient_id_is_the_folder_name_even_for_dot(patient_dir, monkeypatch):
    monkeypatch.chdir(patient_dir)
    assert load_study(".").patient_id == "p001"


# ----------------------------------------------------------------------------------------------
# Accepted with warnings
# ----------------------------------------------------------------------------------------------

def test_sixteen_bit_is_rescaled_robustly_with_a_warning(patient_dir):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 4000, (IMAGE_SIZE, IMAGE_SIZE)).astype(np.uint16)
    pixels[0, 0] = 65535  # one hot pixel must not squash the rest towards black
    write_png(patient_dir / "sag" / "5.png", pixels)
    with Image.open(patient_dir / "sag" / "5.png") as img:
        assert img.mode.startswith("I")  # really a 16-bit PNG on disk
    study = load_study(patient_dir)
    image = study.sagittal[5]
    assert_unit_image(image)
    assert image[0, 0] == 1.0
    assert 0.4 < float(np.median(image)) < 0.6  # ~2000/4000, not ~2000/65535
    assert any("sag/5.png" in w and "16-bit" in w for w in study.warnings)


@pytest.mark.parametrize("kind", ["RGB", "RGBA", "P"])
def test_colour_and_palette_become_luminance_with_a_warning(patient_dir, kind):
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    if kind == "RGB":
        img = Image.fromarray(rgb)
    elif kind == "RGBA":
        img = Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]))
    else:
        img = Image.fromarray(rgb).quantize(16)
    img.save(patient_dir / "tra" / "3-4.png")
    study = load_study(patient_dir)
    assert_unit_image(study.axial["C3-4"])
    assert study.axial["C3-4"].std() > 0.01
    assert any("tra/3-4.png" in w and "grayscale" in w for w in study.warnings)


def test_rgb_with_identical_channels_keeps_the_grey_values(patient_dir):
    grey = noise(seed=5)
    write_png(patient_dir / "sag" / "7.png", np.dstack([grey, grey, grey]))
    study = load_study(patient_dir)
    np.testing.assert_allclose(study.sagittal[7], grey / 255.0, atol=1 / 255)
    assert any("sag/7.png" in w and "identical" in w for w in study.warnings)


@pytest.mark.parametrize("shape", [(512, 512), (300, 200), (100, 100)])
def test_other_sizes_are_resized_with_a_warning_naming_the_original_size(patient_dir, shape):
    height, width = shape
    write_png(patient_dir / "sag" / "6.png",
              np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
    study = load_study(patient_dir)
    assert_unit_image(study.sagittal[6])
    assert any("sag/6.png" in w and f"{width}x{height}" in w for w in study.warnings)


def test_downscaling_averages_area(tmp_path):
    # A 448 checkerboard of 0/255 averages to mid-grey on 224, with no aliasing stripes.
    board = (np.indices((448, 448)).sum(axis=0) % 2 * 255).astype(np.uint8)
    image, notes = read_image(write_png(tmp_path / "board.png", board), name="board.png")
    np.testing.assert_allclose(image, 0.5, atol=1e-3)
    assert notes == ["board.png: 448x448 image resized to 224x224"]


def test_constant_image_is_usable_but_warns(patient_dir):
    write_png(patient_dir / "tra" / "5.png", np.full((IMAGE_SIZE, IMAGE_SIZE), 17, np.uint8))
    study = load_study(patient_dir)
    assert np.allclose(study.axial["C5"], 17 / 255.0)
    assert any("tra/5.png" in w and "same value" in w for w in study.warnings)
    assert study.blank_images == ("tra/C5",)   # pipeline.py flags the patient for review with it


def test_constant_sixteen_bit_image_becomes_zeros(patient_dir):
    write_png(patient_dir / "sag" / "5.png", np.full((IMAGE_SIZE, IMAGE_SIZE), 900, np.uint16))
    study = load_study(patient_dir)
    assert_unit_image(study.sagittal[5])
    assert not study.sagittal[5].any()
    assert study.blank_images == ("sag/5",)


def test_images_with_contrast_are_not_blank(patient_dir):
    img = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    img[100, 100] = 1   # one pixel differs: nearly black, but not one value everywhere
    write_png(patient_dir / "tra" / "2.png", img)
    assert load_study(patient_dir).blank_images == ()


def test_unexpected_names_in_sag_warn(patient_dir):
    write_png(patient_dir / "sag" / "8.png", noise())
    (patient_dir / "sag" / "notes.txt").write_text("hello")
    (patient_dir / "sag" / ".DS_Store").write_bytes(b"\0")  # hidden: ignored silently
    study = load_study(patient_dir)
    [warning] = [w for w in study.warnings if w.startswith("sag:")]
    assert "8.png" in warning and "notes.txt" in warning and ".DS_Store" not in warning


def test_upper_case_folder_and_other_suffix_are_used_with_warnings(patient_dir):
    (patient_dir / "sag").rename(patient_dir / "SAG")
    (patient_dir / "SAG" / "5.png").unlink()
    Image.fromarray(noise()).save(patient_dir / "SAG" / "5.jpg", quality=95)
    study = load_study(patient_dir)
    assert_unit_image(study.sagittal[5])
    assert any("'SAG'" in w for w in study.warnings)
    assert any("SAG/5.jpg" in w and "JPEG" in w for w in study.warnings)


# ----------------------------------------------------------------------------------------------
# Errors: each one StudyError naming the patient and the file
# ----------------------------------------------------------------------------------------------

def test_missing_mid_sagittal_slice_takes_the_nearest_present(make_patient):
    folder = make_patient("p007", skip=["sag/6.png"])
    study = load_study(folder)
    assert study.sagittal_standins == {6: 5} and study.real_sagittal == (5, 7)
    assert study.sagittal[6] is study.sagittal[5] and study.mid_sagittal is study.sagittal[5]
    assert study.sagittal_views == {6: 5, 7: 7}          # each image once, slice 5's read as the mid slice
    assert "sag/6" not in study.sources and study.sources["sag/5"].endswith("5.png")
    assert any("slice 6 missing; slice 5 stands in for it as the mid slice" in w for w in study.warnings)


@pytest.mark.parametrize("skip, standins, views", [
    (["sag/5.png"], {5: 6}, {6: 6, 7: 7}),
    (["sag/7.png"], {7: 6}, {5: 5, 6: 6}),
    (["sag/5.png", "sag/7.png"], {5: 6, 7: 6}, {6: 6}),
    (["sag/6.png", "sag/7.png"], {6: 5, 7: 5}, {6: 5}),
    (["sag/5.png", "sag/6.png"], {5: 7, 6: 7}, {6: 7}),
])
def test_one_or_two_sagittal_slices(make_patient, skip, standins, views):
    study = load_study(make_patient("p", skip=skip))
    assert study.sagittal_standins == standins and study.sagittal_views == views
    for s, source in standins.items():
        assert study.sagittal[s] is study.sagittal[source]
        assert np.array_equal(study.field_of_view(s), study.field_of_view(source))
    assert study.sagittal_stack().shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    assert len([w for w in study.warnings if "stands in" in w]) == len(standins)


def test_no_sagittal_image_is_an_error(make_patient):
    folder = make_patient("p017", skip=["sag/5.png", "sag/6.png", "sag/7.png"])
    (folder / "sag").mkdir(exist_ok=True)
    with pytest.raises(StudyError) as info:
        load_study(folder)
    assert_names(info.value, "p017", "sag")
    assert "no sagittal image" in str(info.value)


def test_an_unreadable_sagittal_slice_is_still_an_error(make_patient):
    # Absent is replaced; present but broken is the user's to fix, never silently swapped for another slice.
    folder = make_patient("p018")
    (folder / "sag" / "6.png").write_bytes(b"not a png")
    with pytest.raises(StudyError) as info:
        load_study(folder)
    assert_names(info.value, "p018", "6.png")


def test_missing_axial_image_is_an_error_when_all_are_required(make_patient):
    folder = make_patient("p008", skip=[tra("C4-5")])
    with pytest.raises(StudyError) as info:
        load_study(folder)
    assert_names(info.value, "p008", "4-5.png")


def test_missing_axial_image_is_left_out_with_a_warning_when_optional(make_patient):
    folder = make_patient("p008", skip=[tra("C4-5")])
    study = load_study(folder, require_all_axial=False)
    assert "C4-5" not in study.axial
    assert study.missing_axial == ("C4-5",)
    assert any("tra/4-5.png" in w and "missing" in w for w in study.warnings)


def test_unusable_axial_image_is_left_out_when_optional(patient_dir):
    (patient_dir / "tra" / "6-7.png").write_bytes(b"not a png")
    with pytest.raises(StudyError) as info:
        load_study(patient_dir)
    assert_names(info.value, "p001", "6-7.png")
    study = load_study(patient_dir, require_all_axial=False)
    assert "C6-7" not in study.axial and len(study.axial) == len(CANAL_POSITIONS) - 1
    assert any("tra/6-7.png" in w for w in study.warnings)


def test_missing_axial_folder(make_patient):
    folder = make_patient("p009", skip=[tra(p) for p in CANAL_POSITIONS])
    with pytest.raises(StudyError) as info:
        load_study(folder)
    assert_names(info.value, "p009", "tra")
    study = load_study(folder, require_all_axial=False)
    assert study.axial == {} and study.missing_axial == CANAL_POSITIONS


@pytest.mark.parametrize("content", [b"", b"hello, I am text", b"\x89PNG\r\n\x1a\n" + b"\0" * 20,
                                     b"%PDF-1.4\n..."])
def test_file_that_is_not_an_image(patient_dir, content):
    (patient_dir / "sag" / "5.png").write_bytes(content)
    with pytest.raises(StudyError) as info:
        load_study(patient_dir)
    assert_names(info.value, "p001", "5.png")


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_truncated_png(patient_dir, keep):
    data = png_bytes(noise(seed=9))  # noise barely compresses, so the cut lands inside IDAT
    (patient_dir / "sag" / "7.png").write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(StudyError) as info:
        load_study(patient_dir)
    assert_names(info.value, "p001", "7.png")
    assert "truncated" in str(info.value) or "corrupt" in str(info.value)


def test_png_with_bad_crc(patient_dir):
    data = bytearray(png_bytes(noise(seed=2)))
    data[len(data) // 2] ^= 0xFF
    (patient_dir / "tra" / "2.png").write_bytes(bytes(data))
    with pytest.raises(StudyError) as info:
        load_study(patient_dir)
    assert_names(info.value, "p001", "2.png")


def test_empty_patient_folder(tmp_path):
    folder = tmp_path / "p010"
    folder.mkdir()
    with pytest.raises(StudyError) as info:
        load_study(folder)
    assert_names(info.value, "p010", "p010")
    assert "empty" in str(info.value)


def test_no_sag_folder(make_patient):
    folder = make_patient("p011", skip=[f"sag/{s}.png" for s in SAGITTAL_SLICES])
    with pytest.raises(StudyError) as info:
        load_study(folder)
    assert_names(info.value, "p011", "sag")


def test_images_directly_in_the_patient_folder(tmp_path):
    folder = tmp_path / "p012"
    for name in ("5.png", "6.png", "7.png", "2-3.png"):
        write_png(folder / name, noise())
    with pytest.raises(StudyError) as info:
        load_study(folder)
    assert_names(info.value, "p012", "p012")
    assert "directly" in str(info.value) and "5.png" in str(info.value)


def test_a_folder_where_an_image_should_be(patient_dir):
    (patient_dir / "sag" / "5.png").unlink()
    (patient_dir / "sag" / "5.png").mkdir()
    with pytest.raises(StudyError) as info:
        load_study(patient_dir)
    assert_names(info.value, "p001", "5.png")


def test_unreadable_file(patient_dir, monkeypatch):
    target = patient_dir / "sag" / "6.png"
    # Tests may run as root, where chmod does not stop reads; simulate the OS refusing instead.
    deny_reading(monkeypatch, target)
    with pytest.raises(StudyError) as info:
        load_study(patient_dir)
    assert_names(info.value, "p001", "6.png")
    assert "permission" in str(info.value)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file_by_chmod(patient_dir):
    target = patient_dir / "sag" / "6.png"
    target.chmod(0)
    try:
        with pytest.raises(StudyError) as info:
            load_study(patient_dir)
        assert_names(info.value, "p001", "6.png")
    finally:
        target.chmod(0o644)


@pytest.mark.parametrize("side", [10_000, 30_000])
def test_decompression_bomb_is_refused_before_decoding(patient_dir, side):
    (patient_dir / "tra" / "7.png").write_bytes(png_header_only(side, side))
    with pytest.raises(StudyError) as info:
        load_study(patient_dir)
    assert_names(info.value, "p001", "7.png")
    assert "large" in str(info.value) or "limit" in str(info.value)


def test_pixel_limit_is_the_module_setting(patient_dir, monkeypatch):
    monkeypatch.setattr(loader, "MAX_PIXELS", 100 * 100)
    with pytest.raises(StudyError) as info:
        load_study(patient_dir)
    assert_names(info.value, "p001", "5.png")
    assert "limit" in str(info.value)


def test_patient_folder_that_does_not_exist_or_is_a_file(tmp_path):
    with pytest.raises(StudyError) as info:
        load_study(tmp_path / "ghost")
    assert_names(info.value, "ghost", "ghost")
    (tmp_path / "flat").write_text("x")
    with pytest.raises(StudyError) as info:
        load_study(tmp_path / "flat")
    assert_names(info.value, "flat", "flat")


def test_load_study_mentions_further_problems(make_patient):
    folder = make_patient("p013")
    for s in (5, 7):
        (folder / "sag" / f"{s}.png").write_bytes(b"not a png")
    with pytest.raises(StudyError) as info:
        load_study(folder)
    assert_names(info.value, "p013", "5.png")
    assert "1 more problem" in str(info.value)
    report = inspect_study(folder)
    assert [Path(e.path).name for e in report.errors] == ["5.png", "7.png"]
    assert report.sagittal_found == 1 and report.axial_found == len(CANAL_POSITIONS)


_VALID_SMALL_PNG = png_bytes(np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, len(_VALID_SMALL_PNG) - 1), st.integers(0, 255)), max_size=4),
       st.integers(1, len(_VALID_SMALL_PNG)))
def test_damaged_bytes_never_raise_anything_but_study_error(tmp_path, edits, keep):
    data = bytearray(_VALID_SMALL_PNG)
    for offset, value in edits:
        data[offset] = value
    path = tmp_path / "fuzz.png"
    path.write_bytes(bytes(data[:keep]))
    try:
        image, _ = read_image(path, patient="pf")
    except StudyError as e:
        assert e.patient == "pf" and "fuzz.png" in str(e)
    else:
        assert_unit_image(image)


# ----------------------------------------------------------------------------------------------
# find_patients and load_inputs
# ----------------------------------------------------------------------------------------------

def test_find_patients_on_a_single_patient(patient_dir):
    assert find_patients(patient_dir) == [patient_dir]
    assert find_patients(str(patient_dir)) == [patient_dir]


def test_find_patients_on_a_batch_root_is_sorted_and_skips_clutter(make_patient, tmp_path):
    root = tmp_path / "batch"
    for pid in ("p3", "p1", "p2"):
        make_patient(pid)
    (root / "labels.json").write_text("[]")
    (root / "boxes.json").write_text("[]")
    (root / ".cache").mkdir()
    (root / "__MACOSX").mkdir()
    assert [p.name for p in find_patients(root)] == ["p1", "p2", "p3"]


def test_find_patients_lists_a_broken_patient_so_it_gets_reported(make_patient, tmp_path):
    make_patient("good")
    (tmp_path / "batch" / "empty").mkdir()
    assert [p.name for p in find_patients(tmp_path / "batch")] == ["empty", "good"]


def test_find_patients_does_not_follow_links_back(make_patient, tmp_path):
    root = tmp_path / "batch"
    make_patient("p1")
    os.symlink(root, root / "loop")                  # link to the root itself
    os.symlink(root / "p1", root / "p1-again")       # second name for a patient
    os.symlink(root / "nowhere", root / "dangling")  # broken link
    os.symlink(root / "self", root / "self")         # link to itself (ELOOP)
    # Links that would read a patient twice are skipped; links that cannot be followed are listed, so
    # the patient they stood for is reported rather than silently missing.
    assert [p.name for p in find_patients(root)] == ["dangling", "p1", "self"]
    for name, reason in (("dangling", "No such file"), ("self", "symbolic links")):
        with pytest.raises(StudyError) as info:
            load_study(root / name)
        assert_names(info.value, name, name)
        assert "symbolic link that cannot be followed" in str(info.value) and reason in str(info.value)


def test_patient_id_of_a_name_that_is_not_utf8(tmp_path):
    folder = tmp_path / os.fsdecode(b"p-\xff\xfe")
    write_challenge_patient(folder, size=32)
    assert loader.patient_id_of(folder) == "p-\\xff\\xfe"
    assert load_study(folder).patient_id == "p-\\xff\\xfe"


@pytest.mark.parametrize("setup, expected", [
    ("missing", "does not exist"),
    ("file", "not a folder"),
    ("empty", "no patient folder"),
    ("only_files", "no patient folder"),
    ("loose_images", "no sag/ or tra/"),
])
def test_find_patients_rejects_unusable_roots(tmp_path, setup, expected):
    root = tmp_path / "root"
    if setup == "file":
        root.write_text("x")
    elif setup != "missing":
        root.mkdir()
    if setup == "only_files":
        (root / "labels.json").write_text("[]")
    if setup == "loose_images":
        write_png(root / "5.png", noise())
    with pytest.raises(StudyError) as info:
        find_patients(root)
    assert expected in str(info.value)
    assert "root" in str(info.value)


def test_load_inputs_continues_past_a_bad_patient(make_patient, tmp_path):
    make_patient("a")
    (make_patient("b") / "sag" / "5.png").write_bytes(b"\x89PNG broken")
    make_patient("c")
    results = list(load_inputs(tmp_path / "batch"))
    assert [s.patient_id for s, _ in results] == ["a", "b", "c"]
    assert isinstance(results[0][1], Study) and isinstance(results[2][1], Study)
    error = results[1][1]
    assert isinstance(error, StudyError)
    assert_names(error, "b", "5.png")


def test_load_inputs_passes_require_all_axial(make_patient, tmp_path):
    make_patient("a", skip=[tra("C3")])
    [(_, strict)] = list(load_inputs(tmp_path / "batch", require_all_axial=True))
    [(_, lenient)] = list(load_inputs(tmp_path / "batch"))
    assert isinstance(strict, StudyError) and isinstance(lenient, Study)


def test_load_inputs_rejects_an_unusable_root_at_the_call(tmp_path):
    with pytest.raises(StudyError):
        load_inputs(tmp_path / "missing")


def test_load_inputs_turns_unexpected_exceptions_into_study_errors(make_patient, tmp_path, monkeypatch):
    from study import inputs
    make_patient("a")
    make_patient("b")

    def boom(patient_dir, require_all_axial=True, root=None):
        if Path(patient_dir).name == "a":
            raise RuntimeError("bug")
        return real(patient_dir, require_all_axial, root)

    real = inputs.load_study
    monkeypatch.setattr(inputs, "load_study", boom)
    results = list(load_inputs(tmp_path / "batch"))
    assert isinstance(results[0][1], StudyError) and "RuntimeError: bug" in str(results[0][1])
    assert isinstance(results[1][1], Study)


def test_conftest_patient_matches_the_layout(tmp_path):
    folder = write_challenge_patient(tmp_path / "x", size=32)
    assert sorted(p.name for p in (folder / "sag").iterdir()) == [f"{s}.png" for s in sorted(SAGITTAL_SLICES)]
    assert len(list((folder / "tra").iterdir())) == len(CANAL_POSITIONS)


def test_a_study_refuses_a_stand_in_that_is_not_its_source():
    from study.study import complete_sagittal

    a, b = np.zeros((4, 4), np.float32), np.ones((4, 4), np.float32)
    sagittal, _, standins, notes = complete_sagittal({6: a, 7: b})
    assert standins == {5: 6} and sagittal[5] is a and len(notes) == 1
    assert complete_sagittal({5: a, 6: a, 7: b})[2:] == ({}, ())          # complete: unchanged, no warning
    Study("p", sagittal, {}, sagittal_standins=standins)
    with pytest.raises(ValueError, match="stand in"):
        Study("p", {5: b, 6: a, 7: b}, {}, sagittal_standins={5: 6})      # slice 5 does not show slice 6's image
    with pytest.raises(ValueError, match="stand in"):
        Study("p", {5: a, 6: a, 7: a}, {}, sagittal_standins={5: 6, 6: 7})   # a stand-in cannot be a source
    with pytest.raises(ValueError):
        complete_sagittal({})
