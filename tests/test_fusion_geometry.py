"""curve_features on hand-built columns: signs, magnitudes, listhesis steps, named columns, padding, bad boxes."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusion.geometry import (
    CHALLENGE_PADDING_PX, GeometryError, canonical_boxes, curve_features, feature_names,
)
from study.challenge import Box
from study.levels import MID_SAGITTAL_SLICE, SAGITTAL_SLICES, VERTEBRAE

from fusion_helpers import HALF_DEPTH, PITCH, all_slices, arc, column


def test_straight_column_has_zero_curvature():
    f = curve_features(all_slices(column()))
    for name in ("curvature_index", "c2c7_angle_deg", "quadratic_curvature", "max_offset_ratio",
                 "posterior_curvature_index", "posterior_step_max"):
        assert abs(f[name]) < 1e-9, name
    assert f["c2c7_length_px"] == pytest.approx(5 * PITCH)


def test_tilted_straight_column_still_straight():
    f = curve_features(all_slices(column(tilt_deg=15)))
    assert abs(f["curvature_index"]) < 1e-9
    assert abs(f["c2c7_angle_deg"]) < 1e-9
    assert f["c2c7_tilt_deg"] == pytest.approx(15.0, abs=1e-6)  # head flexed: C7 posterior of C2


def test_lordotic_arc_is_positive_and_kyphotic_negative():
    lord = curve_features(all_slices(column(arc(6))))
    kyph = curve_features(all_slices(column(arc(-6))))
    assert lord["curvature_index"] > 5 and kyph["curvature_index"] < -5
    assert lord["curvature_index"] == pytest.approx(-kyph["curvature_index"])
    assert lord["c2c7_angle_deg"] > 10 and kyph["c2c7_angle_deg"] < -10
    assert lord["lordosis_sign"] == 1.0 and kyph["lordosis_sign"] == -1.0
    assert lord["kyphotic_segments"] == 0 and kyph["kyphotic_segments"] == 4
    # Ishihara-like index by hand: offsets of C3..C6 are 6*sin(pi i/5) over a 5*PITCH chord, x100
    expected = 100 * sum(6 * math.sin(math.pi * i / 5) for i in range(1, 5)) / (5 * PITCH)
    assert lord["curvature_index"] == pytest.approx(expected, rel=1e-9)


def test_deeper_lordosis_scores_higher():
    vals = [curve_features(all_slices(column(arc(d))))["curvature_index"] for d in (0, 2, 4, 8)]
    assert vals == sorted(vals) and vals[0] == pytest.approx(0, abs=1e-9)


def test_listhesis_step_measured_at_its_disc():
    # C5 and below displaced 4 px posteriorly: the step sits at C4-5
    f = curve_features(all_slices(column(shift_from=VERTEBRAE.index("C5"), shift_px=4.0)))
    depth = 2 * HALF_DEPTH
    assert f["posterior_step_C4-5"] == pytest.approx(4.0 / depth)
    # the neighbouring discs see half the jump with the other sign (residual after the local trend)
    assert f["posterior_step_C3-4"] == pytest.approx(-2.0 / depth)
    assert f["posterior_step_max"] == pytest.approx(4.0 / depth)
    assert f["posterior_step_max_px"] == pytest.approx(4.0)
    straight = curve_features(all_slices(column()))
    assert straight["posterior_step_max"] == pytest.approx(0.0, abs=1e-12)


def test_columns_are_named_and_stable():
    names = feature_names()
    assert len(names) == len(set(names)) > 30
    assert list(curve_features(all_slices(column(arc(5))), spacing_mm=None).keys()) == names
    assert not any(n.endswith("_mm") for n in names)
    with_mm = feature_names(with_mm=True)
    assert with_mm[:len(names)] == names
    assert {n for n in with_mm if n.endswith("_mm")} == set(with_mm) - set(names)
    assert all(math.isfinite(v) for v in curve_features(all_slices(column(arc(5)))).values())


def test_mm_columns_use_spacing():
    f = curve_features(all_slices(column(shift_from=3, shift_px=4.0)), spacing_mm=(0.5, 0.5))
    assert f["c2c7_length_mm"] == pytest.approx(0.5 * math.hypot(4.0, 5 * PITCH))
    assert f["posterior_step_max_mm"] == pytest.approx(0.5 * f["posterior_step_max_px"])
    assert f["mean_body_depth_mm"] == pytest.approx(0.5 * 2 * HALF_DEPTH)


def test_padding_convention_gives_identical_features():
    padded = all_slices(column(arc(5), pad=CHALLENGE_PADDING_PX))
    tight = all_slices(column(arc(5), pad=0.0))
    a = curve_features(padded)  # challenge convention, padding 3
    b = curve_features(tight, padding_px=0.0)  # a detector emitting tight boxes
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-9), k
    # declaring the wrong convention changes the size ratios (what box_check measures on real data)
    wrong = curve_features(tight, padding_px=CHALLENGE_PADDING_PX)
    assert wrong["depth_height_ratio"] == pytest.approx(a["depth_height_ratio"])  # square bodies
    assert wrong["disc_gap_mean"] > a["disc_gap_mean"]


def test_slice_agreement_columns():
    boxes = all_slices(column(arc(4)))
    boxes[5] = column(arc(8))
    f = curve_features(boxes)
    assert f["curvature_index_slice_sd"] > 0
    assert f["curvature_index_mid_slice"] == pytest.approx(curve_features(all_slices(column(arc(4))))["curvature_index"])
    only_mid = curve_features({MID_SAGITTAL_SLICE: column(arc(4))})
    assert math.isnan(only_mid["curvature_index_slice_sd"]) and only_mid["slices_used"] == 1


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b.pop("C4"), "missing level(s) C4"),
    (lambda b: b.__setitem__("C3", Box(100, 60, 105, 64)), "degenerate"),
    (lambda b: b.__setitem__("C3", Box(100, 60, 240, 80)), "outside"),
    (lambda b: b.__setitem__("C5", Box(100, 10, 120, 30)), "not ordered"),
])
def test_bad_mid_slice_is_an_error(mutate, message):
    boxes = all_slices(column())
    mutate(boxes[MID_SAGITTAL_SLICE])
    with pytest.raises(GeometryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        curve_features(boxes)


def test_bad_side_slice_is_dropped_with_warning():
    boxes = all_slices(column(arc(4)))
    boxes[7]["C4"] = Box(100, 10, 120, 30)  # as in one real CervAI patient: a misplaced box on slice 7
    tight, warnings = canonical_boxes(boxes)
    assert sorted(tight) == [5, 6] and len(warnings) == 1 and "slice 7" in warnings[0]
    assert curve_features(boxes)["slices_used"] == 2


def test_no_mid_slice_is_an_error():
    with pytest.raises(GeometryError, match="mid-sagittal"):
        curve_features({5: column(), 7: column()})


@settings(max_examples=40, deadline=None)
@given(dx=st.floats(-30, 30), dy=st.floats(-20, 20), depth=st.floats(-8, 8))
def test_translation_invariance(dx, dy, depth):
    base = curve_features(all_slices(column(arc(depth))))
    moved = curve_features(all_slices(column(arc(depth), x0=110 + dx, y0=40 + dy)))
    for k in base:
        assert moved[k] == pytest.approx(base[k], abs=1e-6), k
