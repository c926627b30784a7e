"""image_features on drawn T2-like images (and on synth phantoms when the generator is present)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fusion.image_features import image_feature_names, image_features
from study.challenge import Box, read_box_file
from study.levels import MID_SAGITTAL_SLICE, VERTEBRAE

from fusion_helpers import HALF_DEPTH, arc, column

ROOT = Path(__file__).resolve().parents[1]


def draw_t2(boxes, pad=3.0, seed=0, noise=0.02) -> np.ndarray:
    """Intermediate bodies inside their tight boxes, bright CSF from each body's posterior wall backwards,
    dark background; between bodies the CSF edge follows the straight line joining the two walls."""
    img = np.full((224, 224), 0.15)
    tight = {lv: Box(b.x1 + pad, b.y1 + pad, b.x2 - pad, b.y2 - pad) for lv, b in boxes.items()}
    walls = [(tight[lv].cy, tight[lv].x2) for lv in VERTEBRAE]
    ys = np.arange(224) + 0.5
    wall_x = np.interp(ys, [w[0] for w in walls], [w[1] for w in walls])
    for lv in VERTEBRAE:  # a listhesis makes the wall jump at the disc, not ramp
        t = tight[lv]
        rows = (ys >= t.y1 - 2) & (ys <= t.y2 + 2)
        wall_x[rows] = t.x2
    xs = np.arange(224) + 0.5
    for r in range(224):
        img[r, (xs > wall_x[r]) & (xs < wall_x[r] + 6)] = 0.9  # CSF
    for t in tight.values():
        img[int(t.y1):int(math.ceil(t.y2)), int(t.x1):int(math.ceil(t.x2))] = 0.45
    return img + np.random.default_rng(seed).normal(0, noise, img.shape)


def mid(image, boxes):
    """image_features of the mid-sagittal slice alone."""
    return image_features({MID_SAGITTAL_SLICE: image}, {MID_SAGITTAL_SLICE: boxes})


def test_step_is_the_median_over_slices():
    """A listhesis shows on all three slices; an edge artefact on one slice does not make a step."""
    boxes = column(arc(5))
    drawn = column(arc(5), shift_from=VERTEBRAE.index("C5"), shift_px=4.0)
    clean, stepped = draw_t2(boxes, seed=1), draw_t2(drawn, seed=2)
    one_off = image_features({5: stepped, 6: clean, 7: clean}, {s: boxes for s in (5, 6, 7)})
    assert one_off["image_posterior_step_max"] < 0.1 and one_off["image_step_slices"] == 3
    all_three = image_features({s: draw_t2(drawn, seed=s) for s in (5, 6, 7)}, {s: boxes for s in (5, 6, 7)})
    assert all_three["image_posterior_step_C4-5"] == pytest.approx(4.0 / (2 * HALF_DEPTH), abs=0.08)
    with pytest.raises(ValueError, match="no sagittal slice"):
        image_features({5: clean}, {6: boxes})


def test_aligned_column_has_no_step():
    straight = column()
    assert mid(draw_t2(straight), straight)["image_posterior_step_max"] < 0.03
    boxes = column(arc(5))
    f = mid(draw_t2(boxes), boxes)
    assert list(f.keys()) == image_feature_names()
    # a smooth bow leaks a little into the end discs (one neighbour to compare with), far below a step
    assert f["image_posterior_step_max"] < 0.1
    assert abs(f["image_wall_box_offset_mean"]) < 0.05  # the image wall sits at the tight box edge
    assert f["image_wall_contrast"] > 0.2


def test_listhesis_step_found_at_its_disc():
    shift = 4.0  # C5 and below displaced posteriorly by 4 px
    drawn = column(arc(5), shift_from=VERTEBRAE.index("C5"), shift_px=shift)
    # the boxes handed in do NOT show the step (as for real boxes): only the image carries it
    boxes = column(arc(5))
    f = mid(draw_t2(drawn), boxes)
    depth = 2 * HALF_DEPTH
    steps = {d: f[f"image_posterior_step_{d}"] for d in ("C2-3", "C3-4", "C4-5", "C5-6", "C6-7")}
    assert max(steps, key=lambda d: abs(steps[d])) == "C4-5"
    assert steps["C4-5"] == pytest.approx(shift / depth, abs=0.08)
    assert f["image_posterior_step_max"] > 0.15


def test_one_displaced_body_is_a_listhesis_pattern():
    """One body moved back by 4 px: its wall sits 4 px off its neighbours' line, and they half as much the
    other way. (On a straight column: a bow adds its own small bump, about 0.9 px at C4 for arc(5).)"""
    boxes = column()
    drawn = dict(boxes)
    c4 = boxes["C4"]
    drawn["C4"] = Box(c4.x1 + 4.0, c4.y1, c4.x2 + 4.0, c4.y2)
    f = mid(draw_t2(drawn), boxes)
    depth = 2 * HALF_DEPTH
    assert f["image_wall_bump_C4"] == pytest.approx(4.0 / depth, abs=0.06)
    assert f["image_wall_bump_C3"] == pytest.approx(-2.0 / depth, abs=0.06)
    assert f["image_wall_bump_C5"] == pytest.approx(-2.0 / depth, abs=0.06)
    listhesis = {lv: f[f"image_wall_listhesis_{lv}"] for lv in ("C3", "C4", "C5", "C6")}
    assert max(listhesis, key=lambda lv: abs(listhesis[lv])) == "C4"
    assert listhesis["C4"] == pytest.approx(6.0 / depth, abs=0.1)
    assert f["image_wall_listhesis_max"] == pytest.approx(abs(listhesis["C4"]))
    clean = mid(draw_t2(boxes), boxes)
    assert clean["image_wall_bump_max"] < 0.05 and clean["image_wall_listhesis_max"] < 0.08


def test_tilted_column_with_uneven_spacing_has_no_bump():
    """The bumps interpolate at the bodies' heights: a straight tilted column whose C3 sits lower than
    evenly spaced shows no displaced body, whatever its disc steps say."""
    straight = column(tilt_deg=12.0)
    c3 = straight["C3"]
    dx, dy = 5.0 * math.tan(math.radians(12.0)), 5.0   # C3 5 px further down the same straight line
    boxes = dict(straight, C3=Box(c3.x1 + dx, c3.y1 + dy, c3.x2 + dx, c3.y2 + dy))
    f = mid(draw_t2(boxes), boxes)
    assert f["image_wall_bump_max"] < 0.04
    assert f["image_posterior_step_max"] > 2 * f["image_wall_bump_max"]


def test_featureless_image_gives_nan_not_crash():
    boxes = column()
    f = mid(np.zeros((224, 224)), boxes)
    assert math.isnan(f["image_posterior_step_max"])
    assert all(math.isnan(f[f"{m}_max"]) for m in ("image_wall_bump", "image_wall_listhesis", "image_wall_end_gap"))


def test_rejects_non_2d_image():
    with pytest.raises(ValueError, match="2-D"):
        mid(np.zeros((3, 224, 224)), column())


@pytest.mark.skipif(not (ROOT / "synth" / "cli.py").is_file(), reason="phantom generator synth/ not present")
def test_phantom_end_to_end(tmp_path):
    """Phantoms -> image features on their mid slice -> geometry command on their boxes."""
    from fusion.image_alignment import load_sagittal
    out = tmp_path / "ph"
    r = subprocess.run([sys.executable, str(ROOT / "pipeline.py"), "synth", "--out", str(out), "--n", "3",
                        "--seed", "5"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    contents = read_box_file(out / "boxes.json")
    assert len(contents.patients) == 3
    for p in contents.patients:
        f = image_features(load_sagittal(out / p.patient_id), p.boxes)
        assert math.isfinite(f["image_posterior_step_max"]) and f["image_wall_contrast"] > 0
        assert f["image_step_slices"] == 3
    r = subprocess.run([sys.executable, str(ROOT / "pipeline.py"), "geometry", "--boxes", str(out / "boxes.json"),
                        "--out", str(tmp_path / "g.json")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(json.loads((tmp_path / "g.json").read_text())) == 3
