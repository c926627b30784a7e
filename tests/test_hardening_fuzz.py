"""Property tests: any input to the box-file parser, the challenge JSON reader and the PNG and DICOM loaders
either loads or raises the project's own error (a study.errors.InputError subclass naming the problem)."""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings, strategies as st
from PIL import Image

from study.challenge import (
    Box, BoxFileContents, PatientLabels, parse_box_string, patient_boxes_from_row, read_box_file, read_labels,
)
from study.errors import BoxFileError, LabelFileError, StudyError
from study.levels import CANAL_POSITIONS, DISCS, IMAGE_SIZE, SAGITTAL_SLICES, VERTEBRAE

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# JSON values of any shape (non-finite floats as Python writes them: NaN, Infinity), and texts with the
# corners a JSON parser trips on: numbers too long to convert, deep nesting, a byte-order mark, bad UTF-8.
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=8), inner, max_size=6)), max_leaves=25)
HUGE_INT = "9" * 5000   # Python refuses to convert integers of more than 4300 digits
TRICKY_TEXTS = ["", " ", "[" * 5000, "[" + HUGE_INT + "]", "[1e99999]", "[-0]", "\ufeff[]", "[NaN]",
                '{"id": 1}', "[" + json.dumps({"id": "a", "qd": 1, "sl": 0, "zjppt": [0] * 5, "zyzg": [0] * 11})
                .replace('"qd": 1', '"qd": ' + HUGE_INT) + "]"]

BOX_NUMBER = st.one_of(st.integers(-50, 300).map(str), st.floats(allow_nan=True).map(repr),
                       st.text("0123456789.-e+ ", min_size=1, max_size=12), st.just("1" * 400))
box_strings = st.one_of(
    st.text(max_size=40),
    st.builds(lambda a, b, c, d, s: f"{s}({a},{b}){s}({c},{d}){s}", BOX_NUMBER, BOX_NUMBER, BOX_NUMBER, BOX_NUMBER,
              st.sampled_from(["", " ", "\t", "\n"])),
)


def valid_box_row(pid: str = "p1") -> dict:
    row = {"id": pid}
    for k, lv in enumerate(VERTEBRAE):
        row[lv] = [f"(80,{20 + 30 * k})(130,{45 + 30 * k})"] * len(SAGITTAL_SLICES)
    return row


def valid_label_row(pid: str = "p1") -> dict:
    return {"id": pid, "qd": 1, "sl": 0, "zjppt": [0] * len(DISCS), "zyzg": [1] * len(CANAL_POSITIONS)}


def mutate(value, path, new):
    """value with the element at `path` (keys/indices, taken modulo the container size) replaced by new."""
    if not path or not isinstance(value, (dict, list)) or not value:
        return new
    if isinstance(value, dict):
        key = sorted(value)[path[0] % len(value)]
        return {**value, key: mutate(value[key], path[1:], new)}
    i = path[0] % len(value)
    return value[:i] + [mutate(value[i], path[1:], new)] + value[i + 1:]


mutation = st.tuples(st.lists(st.integers(0, 20), max_size=3), json_values)


def json_files(valid_rows):
    """File contents: any JSON value, the valid rows with one element replaced, tricky texts, any bytes."""
    return st.one_of(
        json_values.map(json.dumps),
        mutation.map(lambda m: json.dumps(mutate(valid_rows, *m))),
        st.sampled_from(TRICKY_TEXTS),
        st.text(max_size=60),
        st.binary(max_size=200),
    )


def write(path: Path, content) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    return path


# ------------------------------------------------------------------------------------------------
# Box file
# ------------------------------------------------------------------------------------------------
def check_box(box: Box) -> None:
    assert all(math.isfinite(v) for v in box.as_tuple())
    assert 0 <= box.x1 < box.x2 <= IMAGE_SIZE and 0 <= box.y1 < box.y2 <= IMAGE_SIZE


@FUZZ
@given(st.one_of(box_strings, json_values))
def test_box_string(text):
    try:
        box = parse_box_string(text)
    except BoxFileError:
        return
    check_box(box)


@FUZZ
@given(st.one_of(json_values, mutation.map(lambda m: mutate(valid_box_row(), *m))))
def test_box_row(row):
    try:
        boxes = patient_boxes_from_row(row)
    except BoxFileError:
        return
    assert boxes.patient_id
    for s in SAGITTAL_SLICES:
        assert list(boxes.boxes[s]) == list(VERTEBRAE)
        for box in boxes.boxes[s].values():
            check_box(box)


@FUZZ
@given(json_files([valid_box_row("a"), valid_box_row("b")]))
def test_box_file(tmp_path, content):
    path = write(tmp_path / "boxes.json", content)
    try:
        got = read_box_file(path)
    except BoxFileError as e:
        assert str(path) in str(e)
        return
    assert isinstance(got, BoxFileContents)
    assert all(isinstance(e, BoxFileError) for e in got.errors)
    assert len({p.patient_id for p in got.patients}) == len(got.patients)


# ------------------------------------------------------------------------------------------------
# Challenge label / prediction JSON
# ------------------------------------------------------------------------------------------------
@FUZZ
@given(json_files([valid_label_row("a"), valid_label_row("b")]))
def test_label_file(tmp_path, content):
    path = write(tmp_path / "labels.json", content)
    try:
        rows = read_labels(path)
    except LabelFileError as e:
        assert str(path) in str(e)
        return
    for r in rows:
        assert isinstance(r, PatientLabels) and len(r.disc_grades) == 5 and len(r.canal_grades) == 11


# ------------------------------------------------------------------------------------------------
# PNG loader
# ------------------------------------------------------------------------------------------------
def png(array: np.ndarray, mode=None) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    img.save(buf, format="PNG")
    return buf.getvalue()


_rng = np.random.default_rng(0)
_BASE = _rng.integers(0, 256, (48, 48), dtype=np.uint8)
SEED_PNGS = [png(_BASE), png(_BASE.astype(np.uint16) * 257), png(np.dstack([_BASE] * 3)), png(_BASE, "P"),
             png(_BASE, "LA"), png(_BASE, "1")]


@st.composite
def png_files(draw) -> bytes:
    kind = draw(st.sampled_from(["damaged", "array", "junk"]))
    if kind == "damaged":   # a valid PNG of some mode with bytes changed, cut short or extended
        data = bytearray(draw(st.sampled_from(SEED_PNGS)))
        for offset, value in draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)),
                                           max_size=4)):
            data[offset] = value
        keep = draw(st.integers(0, len(data)))
        return bytes(data[:keep]) + draw(st.binary(max_size=16))
    if kind == "array":     # a well-formed PNG of any size, depth and channel count
        h, w = draw(st.integers(1, 300)), draw(st.integers(1, 300))
        dtype = draw(st.sampled_from([np.uint8, np.uint16]))
        channels = draw(st.sampled_from([None, 3, 4])) if dtype == np.uint8 else None
        shape = (h, w) if channels is None else (h, w, channels)
        fill = draw(st.sampled_from(["noise", "constant", "zeros"]))
        hi = 256 if dtype == np.uint8 else 65536
        seed = draw(st.integers(0, 2 ** 16))
        a = (np.random.default_rng(seed).integers(0, hi, shape) if fill == "noise"
             else np.full(shape, seed % hi) if fill == "constant" else np.zeros(shape)).astype(dtype)
        return png(a)
    return b"\x89PNG\r\n\x1a\n" + draw(st.binary(max_size=200))


@FUZZ
@given(png_files())
def test_png_loader(tmp_path, data):
    from study.loader import read_image

    path = tmp_path / "6.png"
    path.write_bytes(data)
    try:
        image, notes = read_image(path, patient="pf")
    except StudyError as e:
        event("StudyError")   # --hypothesis-show-statistics shows how often each outcome was reached
        assert e.patient == "pf" and "6.png" in str(e)
        return
    event("loaded")
    assert image.shape == (IMAGE_SIZE, IMAGE_SIZE) and image.dtype == np.float32
    assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0
    assert all(isinstance(n, str) for n in notes)


# ------------------------------------------------------------------------------------------------
# DICOM loader
# ------------------------------------------------------------------------------------------------
N_SLICES = 5


@pytest.fixture(scope="module")
def dicom_seed(tmp_path_factory):
    """A tiny valid sagittal T2 study (5 slices of 64x64): the bytes of each file."""
    from dicom_factory import SeriesSpec, Slice, write_study

    rng = np.random.default_rng(0)
    slices = [Slice(rng.random((64, 64)).astype(np.float32), np.array([x, -100.0, 150.0]), np.array([0, 1.0, 0]),
                    np.array([0, 0, -1.0]), (3.5, 3.5)) for x in (-6.0, -3.0, 0.0, 3.0, 6.0)]
    written = write_study(tmp_path_factory.mktemp("dicom") / "p", [SeriesSpec(slices, 3, "T2_SAG")], nested=False)
    _SEED_FILES[:] = [f.read_bytes() for f in written.files[3]]
    return list(_SEED_FILES)


_SEED_FILES: list = []   # filled by dicom_seed; read by the strategy (not an argument: hypothesis would repr it)


# Header elements the loader interprets, and values of the wrong kind, size or sign for them. Frame counts,
# rows and columns go up to 2**31: the loader checks what a header claims against its limits and the pixel
# data stored before any per-frame work (a 9 kB file claiming 100 000 frames once held it for 40-50 s).
TAGS = ["Rows", "Columns", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient", "NumberOfFrames",
        "SamplesPerPixel", "BitsAllocated", "BitsStored", "PixelRepresentation", "PhotometricInterpretation",
        "RescaleSlope", "RescaleIntercept", "SOPClassUID", "Modality", "ImageType", "SeriesDescription", "EchoTime",
        "StudyInstanceUID", "SeriesInstanceUID", "PixelData"]
tag_values = st.one_of(
    st.none(),                                           # delete the element
    st.integers(-2 ** 31, 2 ** 31), st.integers(0, 4),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=7),
    st.binary(max_size=64),
)
# Claims of many frames (each file holds one), drawn often: they once cost time per claimed frame.
frame_claims = st.one_of(st.integers(2, 2 ** 31 - 1), st.sampled_from([2, 4096, 4097, 100_000, 2 ** 31 - 1]))


def _set(ds, keyword: str, value) -> None:
    if value is None:
        if keyword in ds:
            delattr(ds, keyword)
        return
    if keyword == "PixelData" and not isinstance(value, bytes):
        value = b""   # pydicom would turn an integer n into n zero bytes (gigabytes in the test, not the loader)
    setattr(ds, keyword, value)


@st.composite
def dicom_studies(draw):
    import pydicom

    files = list(_SEED_FILES)
    # Damage one file or several (the loader skips a bad file when the rest of the series suffices).
    for k in draw(st.lists(st.integers(0, N_SLICES - 1), min_size=1, max_size=N_SLICES, unique=True)):
        if draw(st.booleans()):     # bytes changed, cut short or extended
            data = bytearray(files[k])
            for offset, value in draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)),
                                               max_size=6)):
                data[offset] = value
            files[k] = bytes(data[: draw(st.integers(0, len(data)))]) + draw(st.binary(max_size=16))
            continue
        ds = pydicom.dcmread(io.BytesIO(files[k]))   # header elements set to odd values
        changes = draw(st.lists(st.tuples(st.sampled_from(TAGS), tag_values), min_size=1, max_size=3))
        if draw(st.booleans()):
            changes.insert(0, ("NumberOfFrames", draw(frame_claims)))
        for keyword, value in changes:
            try:
                _set(ds, keyword, value)
                buf = io.BytesIO()
                ds.save_as(buf, enforce_file_format=True)
            except Exception:
                assume(False)   # pydicom itself refuses to write such a file: nothing to load
        files[k] = buf.getvalue()
    return files


def test_dicom_seed_study_loads(dicom_seed, tmp_path):
    from study.inputs import find_inputs, load_input

    for i, data in enumerate(dicom_seed):
        (tmp_path / "p").mkdir(exist_ok=True)
        (tmp_path / "p" / f"IM{i}").write_bytes(data)
    [source] = find_inputs(tmp_path / "p")
    assert load_input(source).sagittal[6].shape == (IMAGE_SIZE, IMAGE_SIZE)


@pytest.mark.filterwarnings("ignore::UserWarning")   # pydicom warns while the fuzzer writes odd values
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.filter_too_much])
@given(st.data())
def test_dicom_loader(dicom_seed, tmp_path_factory, data):
    from study.inputs import find_inputs, load_input

    files = data.draw(dicom_studies())
    folder = tmp_path_factory.mktemp("fuzz") / "p"
    folder.mkdir()
    for i, content in enumerate(files):
        (folder / f"IM{i}").write_bytes(content)
    try:
        for source in find_inputs(folder):
            study = load_input(source)
            assert study.mid_sagittal.shape == (IMAGE_SIZE, IMAGE_SIZE)
            assert np.isfinite(study.mid_sagittal).all()
            event("loaded")
    except StudyError as e:
        event("StudyError")
        assert e.patient is None or e.patient == "p" or e.patient.startswith("study-"), e
