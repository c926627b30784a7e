"""The field of view of challenge PNGs (zero padding along the borders) and of resampled DICOM/NIfTI slices."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from study.fov import padding_mask
from study.levels import SAGITTAL_SLICES
from study.loader import load_study

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CROP = ROOT.parent / "shared" / "data" / "real_mri" / "cervical_sagittal_t2_crop"


def phantom_slice(name: str = "phantom-s2025-0000", s: int = 6) -> np.ndarray:
    return np.asarray(Image.open(EXAMPLES / name / "sag" / f"{s}.png"))


def test_every_example_phantom_is_all_field_of_view():
    for patient in sorted(p for p in EXAMPLES.iterdir() if p.is_dir()):
        study = load_study(patient)
        for s in SAGITTAL_SLICES:
            assert study.field_of_view(s).all(), (patient.name, s)
        assert not any("padding" in w for w in study.warnings)


def test_lower_half_zero_padding_is_outside_the_field_of_view():
    img = phantom_slice().copy()
    img[112:] = 0
    mask = padding_mask(img)
    assert mask[:112].all() and not mask[112:].any()


def test_padding_on_several_sides_leaves_one_rectangle():
    img = phantom_slice().copy()
    img[:30] = 0          # above
    img[180:] = 0         # below
    img[:, :20] = 0       # left
    mask = padding_mask(img)
    expected = np.zeros_like(mask)
    expected[30:180, 20:] = True
    assert np.array_equal(mask, expected)


def test_dark_anatomy_and_a_noisy_black_background_are_not_padding():
    img = phantom_slice().copy()
    img[60:100, 40:70] = 0                         # a black hole inside (airway-like)
    img[:40, :60] = 0                              # a black corner touching two borders, not a whole band
    assert padding_mask(img).all()
    # A real MR image: the background is dark but noisy (Rician noise on 8 bits), so no row is exactly 0.
    rng = np.random.default_rng(0)
    real = np.abs(rng.normal(0, 4.0, (224, 224)) + 1j * rng.normal(0, 4.0, (224, 224)))
    real[60:170, 80:140] += 120                    # the anatomy
    real = np.clip(np.round(real), 0, 255).astype(np.uint8)
    assert (real[:50] == 0).mean() > 0.005         # it does hold exact zeros, scattered
    assert padding_mask(real).all()


def test_thin_black_frame_and_blank_image_are_not_padding():
    img = phantom_slice().copy()
    img[:2] = 0
    img[:, -1] = 0
    assert padding_mask(img).all()
    assert padding_mask(np.zeros((224, 224), np.uint8)).all()   # blank: flagged as blank, not as padding


def test_png_loader_keeps_the_mask_and_says_so(tmp_path):
    patient = tmp_path / "padded"
    shutil.copytree(EXAMPLES / "phantom-s2025-0000", patient)
    for s in SAGITTAL_SLICES:
        f = patient / "sag" / f"{s}.png"
        a = np.asarray(Image.open(f)).copy()
        a[150:] = 0
        Image.fromarray(a).save(f)
    study = load_study(patient)
    for s in SAGITTAL_SLICES:
        fov = study.field_of_view(s)
        assert fov[:150].all() and not fov[150:].any()
    assert any("rows 150-223 are padding" in w for w in study.warnings)


def test_resampled_volume_keeps_its_field_of_view():
    if not CROP.is_dir():
        pytest.skip("../shared/data/real_mri/cervical_sagittal_t2_crop not present")
    from study.inputs import find_inputs, load_input

    study = load_input(find_inputs(CROP)[0])
    fov = study.field_of_view(6)
    assert 0.02 < fov.mean() < 0.1                  # about 55 x 52 mm of the 280 mm grid
    rows = np.nonzero(fov.any(1))[0]
    assert study.mid_sagittal[rows[-1] + 1:].max() == 0 and rows[-1] < 160
