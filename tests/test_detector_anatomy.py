"""Anatomical assignment on synthetic detections: order, spacing, uniqueness, gap filling, consensus (no network)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from detector.anatomy import C2_NOT_FOUND, C3_AT_THE_EDGE, Candidates, assemble, assign_levels, fill_missing
from detector.boxes import LevelBoxes, disc_box_between
from detector.config import DetectorConfig
from study.levels import DISCS, MID_SAGITTAL_SLICE, SAGITTAL_SLICES, VERTEBRAE

CFG = DetectorConfig()                        # levels counted down from C2 (the shipped assignment)
CFG_LEVELS = replace(CFG, assign_mode="levels")  # levels named by the network's classes
STEP = 17.0


def true_layout(x0: float = 90.0, y0: float = 60.0, shift: float = 0.0) -> np.ndarray:
    """(6, 4) xyxy vertebra boxes, C2 taller, evenly stepped down the image."""
    boxes = []
    for i in range(6):
        cy = y0 + shift + (i * STEP + (8 if i else 0))
        h = 30.0 if i == 0 else 18.0
        boxes.append([x0 - 10 + i * 0.5, cy - h / 2, x0 + 10 + i * 0.5, cy + h / 2])
    return np.array(boxes)


def level_candidates(boxes: np.ndarray, levels, conf: float = 0.9, extra=()) -> Candidates:
    """Candidates whose score vector names `levels[k]` for boxes[k] (one-hot-ish)."""
    rows, bx = [], []
    for b, lv in zip(boxes, levels):
        s = np.full(6, 0.01)
        s[lv] = conf
        rows.append(s)
        bx.append(b)
    for b, s in extra:
        rows.append(np.asarray(s, float))
        bx.append(b)
    return Candidates(np.array(bx, float), np.array(rows, float))


def centres(lb: LevelBoxes, s: int):
    return [lb.vertebrae[s][lv].box.cy for lv in VERTEBRAE]


def test_clean_detections_are_taken_as_they_are():
    b = true_layout()
    a = assign_levels(level_candidates(b, range(6)), CFG)
    assert a.index == (0, 1, 2, 3, 4, 5)


def test_shuffled_candidates_still_come_out_top_to_bottom():
    b = true_layout()
    perm = [3, 0, 5, 1, 4, 2]
    c = level_candidates(b[perm], [perm[k] for k in range(6)])
    a = assign_levels(c, CFG)
    assert [perm[i] for i in a.index] == list(range(6))


def test_duplicate_box_for_one_level_is_never_used_twice():
    b = true_layout()
    dup = b[2] + np.array([1, 1, 1, 1])
    s = np.full(6, 0.01)
    s[2] = 0.8
    c = level_candidates(b, range(6), extra=[(dup, s)])
    a = assign_levels(c, CFG)
    chosen = [i for i in a.index if i >= 0]
    assert len(chosen) == len(set(chosen)) == 6
    assert a.index[2] in (2, 6) and a.index[3] == 3


def test_box_out_of_order_is_rejected_when_levels_come_from_the_classes():
    b = true_layout()
    levels = [0, 1, 2, 3, 4, 5]
    levels[4] = 1  # the network calls C6's box "C3": it lies far below C4 and cannot be C3
    c = level_candidates(b, levels)
    a = assign_levels(c, CFG_LEVELS)
    assert a.index[1] == 1 and 4 not in a.index


def test_counting_names_a_body_by_its_place_below_c2():
    """The same mislabelled box: counted from C2, the fifth body below C2 is C6 whatever its class says."""
    b = true_layout()
    levels = [0, 1, 2, 3, 1, 5]
    a = assign_levels(level_candidates(b, levels), CFG)
    assert a.index == (0, 1, 2, 3, 4, 5)


def test_counting_survives_level_classes_slipping_by_one():
    """What the network does on faint real bodies (sub-errsm21): two bodies both scored 'C4', every class
    below shifted by one. Counting from C2 names them right; the class-only assignment skips a level."""
    b = true_layout()
    slipped = [0, 1, 2, 2, 3, 4]           # true C5 called C4, C6 called C5, C7 called C6
    c = level_candidates(b, slipped, conf=0.6)
    assert assign_levels(c, CFG).index == (0, 1, 2, 3, 4, 5)
    assert assign_levels(c, CFG_LEVELS).index != (0, 1, 2, 3, 4, 5)


def test_counting_does_not_count_a_box_between_two_bodies():
    """A weaker box half a step below C4 (a disc, a duplicate) is not a body of its own: the spacing refuses it."""
    b = true_layout()
    between = (b[2] + b[3]) / 2
    s = np.full(6, 0.01)
    s[3] = 0.4
    a = assign_levels(level_candidates(b, range(6), extra=[(between, s)]), CFG)
    assert a.index == (0, 1, 2, 3, 4, 5)


def test_counting_starts_at_c2_named_by_its_class():
    """Bodies above the one the network calls C2 (none in a cervical spine; a box on C1 or the clivus) are
    never counted, and C3 must lie about a step below C2."""
    b = true_layout(y0=80.0)
    above = b[1] - np.array([0, 40, 0, 40])  # a body-like box 40 px above C3, above C2 too
    s = np.full(6, 0.01)
    s[1] = 0.5
    a = assign_levels(level_candidates(b, range(6), extra=[(above, s)]), CFG)
    assert a.index == (0, 1, 2, 3, 4, 5)


def test_implausible_spacing_leaves_the_level_to_interpolation():
    b = true_layout()
    far = b[3].copy()
    far[[1, 3]] += 60  # "C5" far below C4, past C7
    c = level_candidates(np.vstack([b[:3], far[None], b[4:]]), range(6))
    a = assign_levels(c, CFG)
    assert -1 in a.index
    assert a.index.count(3) <= 1


def _assemble(per_slice: dict, discs: dict | None = None, cfg: DetectorConfig = CFG) -> LevelBoxes:
    empty_disc = {s: Candidates.empty(5) for s in SAGITTAL_SLICES}
    return assemble("p", per_slice, discs or empty_disc, cfg)


def test_assemble_always_returns_six_plus_five_ordered():
    b = true_layout()
    lb = _assemble({s: level_candidates(b, range(6)) for s in SAGITTAL_SLICES})
    for s in SAGITTAL_SLICES:
        assert list(lb.vertebrae[s]) == list(VERTEBRAE)
        assert list(lb.discs[s]) == list(DISCS)
        cy = centres(lb, s)
        assert all(a < b for a, b in zip(cy, cy[1:]))
        assert not any(v.interpolated for v in lb.vertebrae[s].values())
    assert lb.warnings == ()


def test_missing_level_is_filled_from_the_other_slices():
    b = true_layout()
    keep = [0, 1, 2, 4, 5]
    per = {s: level_candidates(b, range(6)) for s in SAGITTAL_SLICES}
    per[6] = level_candidates(b[keep], keep)
    lb = _assemble(per)
    filled = lb.vertebrae[6]["C5"]
    assert filled.interpolated and filled.confidence < 0.9
    assert abs(filled.box.cy - (b[3, 1] + b[3, 3]) / 2) < 1.0
    assert lb.interpolated_levels == ("C5",)
    assert any("C5" in w for w in lb.warnings)


def test_missing_level_on_every_slice_is_interpolated_from_neighbours():
    b = true_layout()
    keep = [0, 1, 2, 4, 5]
    lb = _assemble({s: level_candidates(b[keep], keep) for s in SAGITTAL_SLICES})
    for s in SAGITTAL_SLICES:
        v = lb.vertebrae[s]["C5"]
        assert v.interpolated
        assert abs(v.box.cy - (b[3, 1] + b[3, 3]) / 2) < 1.5
        assert abs(v.box.height - 18) < 1.5


def test_missing_end_levels_are_extrapolated():
    b = true_layout()
    keep = [1, 2, 3, 4]
    lb = _assemble({s: level_candidates(b[keep], keep) for s in SAGITTAL_SLICES})
    cy = centres(lb, 6)
    assert all(a < b for a, b in zip(cy, cy[1:]))
    assert lb.vertebrae[6]["C2"].interpolated and lb.vertebrae[6]["C7"].interpolated
    assert abs(cy[5] - (b[5, 1] + b[5, 3]) / 2) < 3


def test_nothing_found_still_gives_a_complete_flagged_answer():
    lb = _assemble({s: Candidates.empty(6) for s in SAGITTAL_SLICES})
    for s in SAGITTAL_SLICES:
        assert all(v.interpolated and v.confidence == 0.0 for v in lb.vertebrae[s].values())
    assert lb.warnings


def test_consensus_fixes_a_slice_shifted_by_one_level():
    """Slice 7's network output is off by one (calls C3 'C2' ...), weakly; the other slices outvote it."""
    b = true_layout()
    per = {s: level_candidates(b, range(6)) for s in (5, 6)}
    rows = []
    for k in range(6):
        s = np.full(6, 0.01)
        s[k] = 0.45
        if k + 1 < 6:
            s[k + 1] = 0.5  # slightly prefers the next level
        rows.append(s)
    per[7] = Candidates(b.copy(), np.array(rows))
    lb = _assemble(per)
    for lv_i, lv in enumerate(VERTEBRAE):
        assert abs(lb.vertebrae[7][lv].box.cy - (b[lv_i, 1] + b[lv_i, 3]) / 2) < 1.0


def test_generic_design_counts_from_the_top():
    b = true_layout()
    t1 = b[5] + np.array([0, STEP, 0, STEP])  # T1 below C7 also looks like a vertebra
    boxes = np.vstack([b, t1[None]])
    c = Candidates(boxes, np.full((7, 1), 0.9))
    a = assign_levels(c, CFG)
    assert a.index == (0, 1, 2, 3, 4, 5)


def test_discs_detected_between_their_vertebrae_or_ruled():
    b = true_layout()
    per = {s: level_candidates(b, range(6)) for s in SAGITTAL_SLICES}
    # one detected disc, C3-4, between C3 and C4
    d = np.array([[88.0, (b[1, 3] + b[2, 1]) / 2 - 4, 110.0, (b[1, 3] + b[2, 1]) / 2 + 4]])
    ds = np.full((1, 5), 0.01)
    ds[0, 1] = 0.8
    discs = {s: Candidates(d, ds) for s in SAGITTAL_SLICES}
    lb = _assemble(per, discs, replace(CFG, disc_source="detected"))
    v = lb.vertebrae[6]
    assert not lb.discs[6]["C3-4"].interpolated and lb.discs[6]["C3-4"].confidence == pytest.approx(0.8)
    ruled = lb.discs[6]["C4-5"]
    assert ruled.interpolated
    assert ruled.box == disc_box_between(v["C4"].box, v["C5"].box)


def test_fill_missing_keeps_given_boxes():
    b = true_layout()
    found = {s: [(b[i], 0.9) for i in range(6)] for s in SAGITTAL_SLICES}
    out, warnings = fill_missing(found)
    assert warnings == []
    assert out[5]["C4"].box.as_tuple() == tuple(b[2])


def test_default_discs_follow_the_rule_from_the_final_vertebrae():
    b = true_layout()
    lb = _assemble({s: level_candidates(b, range(6)) for s in SAGITTAL_SLICES})
    v = lb.discs[6]
    for i, d in enumerate(DISCS):
        up, lo = lb.vertebrae[6][VERTEBRAE[i]], lb.vertebrae[6][VERTEBRAE[i + 1]]
        assert v[d].box == disc_box_between(up.box, lo.box) and not v[d].interpolated
        assert v[d].confidence == pytest.approx(min(up.confidence, lo.confidence))


def test_a_skipped_vertebra_is_not_bridged_by_one_level():
    """True C6 scores nothing; true C7 looks like C6 and T1 like C7: C6 must not jump two steps down."""
    b = true_layout()
    t1 = b[5] + np.array([0, STEP, 0, STEP])
    boxes = np.vstack([b[:5], b[5:6], t1[None]])  # C2..C6 (C6 box index 4), C7 (5), T1 (6)
    boxes = np.vstack([b[:4], b[4:5], b[5:6], t1[None]])
    s = np.full((7, 6), 0.01)
    for i in range(4):
        s[i, i] = 0.9
    s[4, 4] = 0.02        # true C6: hardly any score for C6 ...
    s[5, 4] = 0.8         # true C7 looks like C6
    s[6, 5] = 0.8         # T1 looks like C7
    a = assign_levels(Candidates(boxes, s), CFG)
    assert a.index[:4] == (0, 1, 2, 3)
    # C5 (index 3) -> C6 may not take true C7's box two vertebra steps down, and C7 may not take T1
    assert a.index[4] != 5 and a.index[5] != 6


def test_one_slice_off_by_one_is_overruled_by_the_two_agreeing_slices():
    from detector.anatomy import overrule_outliers
    b = true_layout()
    found = {s: [(b[i], 0.9) for i in range(6)] for s in SAGITTAL_SLICES}
    found[7][5] = (b[5] + np.array([0, STEP, 0, STEP]), 0.8)  # slice 7 took T1 for C7
    warnings = overrule_outliers(found, CFG)
    assert found[7][5] is None and all(found[s][5] is not None for s in (5, 6))
    assert len(warnings) == 1 and "C7" in warnings[0]
    lb_found, _ = fill_missing(found)
    assert abs(lb_found[7]["C7"].box.cy - (b[5, 1] + b[5, 3]) / 2) < 1.0


def test_slices_that_do_not_agree_are_left_alone():
    from detector.anatomy import overrule_outliers
    b = true_layout()
    found = {s: [(b[i], 0.9) for i in range(6)] for s in SAGITTAL_SLICES}
    found[6][5] = (b[5] + np.array([0, 8, 0, 8]), 0.8)
    found[7][5] = (b[5] + np.array([0, 16, 0, 16]), 0.8)
    assert overrule_outliers(found, CFG) == []


def test_empty_slice_takes_what_the_other_slices_have_and_stays_ordered():
    """Slices 5/6 found only C5 and C6; slice 7 found nothing: every slice still comes out complete and in order."""
    b = true_layout()
    per = {s: level_candidates(b[[3, 4]], [3, 4]) for s in (5, 6)}
    per[7] = Candidates.empty(6)
    lb = _assemble(per)
    for s in SAGITTAL_SLICES:
        cy = centres(lb, s)
        assert all(a < b for a, b in zip(cy, cy[1:])), (s, cy)
    assert lb.vertebrae[7]["C5"].interpolated and abs(lb.vertebrae[7]["C5"].box.cy - (b[3, 1] + b[3, 3]) / 2) < 1
    assert not any("levels out of top-to-bottom order" in w for w in lb.warnings)


def test_fill_missing_repairs_order_broken_by_a_filled_box():
    b = true_layout()
    found = {s: [(b[i], 0.9) for i in range(6)] for s in SAGITTAL_SLICES}
    found[6][2] = None
    found[5][2] = (b[2] + np.array([0, 30, 0, 30]), 0.9)  # another slice's C4 sits far too low
    found[7][2] = (b[2] + np.array([0, 30, 0, 30]), 0.9)
    out, warnings = fill_missing(found)
    cy = [out[6][lv].box.cy for lv in VERTEBRAE]
    assert all(a < b for a, b in zip(cy, cy[1:]))
    assert out[6]["C4"].interpolated and any("re-spaced" in w for w in warnings)


# ----------------------------------------------------------------------------------------------
# The field of view: no level on padding or outside the image
# ----------------------------------------------------------------------------------------------
def fov_ending_at(row: int, size: int = 224) -> dict:
    """Every slice's field of view: rows above `row` hold data, the rest is padding."""
    mask = np.zeros((size, size), bool)
    mask[:row] = True
    return {s: mask for s in SAGITTAL_SLICES}


def test_levels_below_the_field_of_view_are_outside_it_and_never_found():
    b = true_layout()                       # C4 spans rows 93-111, C5 is centred at 119
    keep = [0, 1, 2]
    empty_disc = {s: Candidates.empty(5) for s in SAGITTAL_SLICES}
    lb = assemble("p", {s: level_candidates(b[keep], keep) for s in SAGITTAL_SLICES}, empty_disc, CFG,
                  fov=fov_ending_at(112))
    assert lb.outside_fov == ("C5", "C6", "C7")
    assert lb.outside_discs == ("C4-5", "C5-6", "C6-7")
    assert lb.outside_positions == ("C4-5", "C5", "C5-6", "C6", "C6-7", "C7")
    for s in SAGITTAL_SLICES:
        cy = centres(lb, s)
        assert all(a < b for a, b in zip(cy, cy[1:]))          # still six boxes, in order
        for lv in ("C5", "C6", "C7"):
            v = lb.vertebrae[s][lv]
            assert v.interpolated and v.confidence == 0.0 and v.box.cy >= 112
        for d in ("C4-5", "C5-6", "C6-7"):
            assert lb.discs[s][d].interpolated and lb.discs[s][d].confidence == 0.0
        for lv in ("C2", "C3", "C4"):
            assert not lb.vertebrae[s][lv].interpolated
    # The same detections without a field of view (or with an all-True one) are unchanged: nothing outside.
    plain = assemble("p", {s: level_candidates(b[keep], keep) for s in SAGITTAL_SLICES}, empty_disc, CFG)
    assert plain.outside_fov == ()
    assert assemble("p", {s: level_candidates(b[keep], keep) for s in SAGITTAL_SLICES}, empty_disc, CFG,
                    fov=fov_ending_at(224)) == plain


def test_a_detection_centred_on_padding_is_no_detection():
    """The network 'finds' C5-C7 on the black padding below the image: they must not become levels."""
    b = true_layout()
    per = {s: level_candidates(b, range(6)) for s in SAGITTAL_SLICES}
    plain = _assemble(per)
    assert plain.outside_fov == () and plain.interpolated_levels == ()
    empty_disc = {s: Candidates.empty(5) for s in SAGITTAL_SLICES}
    lb = assemble("p", per, empty_disc, CFG, fov=fov_ending_at(112))
    assert lb.outside_fov == ("C5", "C6", "C7")
    assert all(lb.vertebrae[6][lv].confidence == 0.0 for lv in lb.outside_fov)
    for lv in ("C2", "C3", "C4"):
        assert lb.vertebrae[6][lv] == plain.vertebrae[6][lv]


def test_a_level_extrapolated_beyond_the_image_is_outside_even_without_padding():
    """Detections that end at the image's lower edge: what is extrapolated below it is outside the image."""
    b = true_layout(y0=150.0)               # C2 at 150 ... C5 at 209, C6 would be 226, beyond the 224 rows
    keep = [0, 1, 2, 3]
    empty_disc = {s: Candidates.empty(5) for s in SAGITTAL_SLICES}
    lb = assemble("p", {s: level_candidates(b[keep], keep) for s in SAGITTAL_SLICES}, empty_disc, CFG,
                  fov=fov_ending_at(224))
    assert lb.outside_fov == ("C6", "C7")


def test_a_level_filled_in_between_found_ones_is_not_outside():
    b = true_layout()
    keep = [0, 1, 3, 4, 5]                  # C4 missing everywhere, but between found levels in the image
    empty_disc = {s: Candidates.empty(5) for s in SAGITTAL_SLICES}
    lb = assemble("p", {s: level_candidates(b[keep], keep) for s in SAGITTAL_SLICES}, empty_disc, CFG,
                  fov=fov_ending_at(224))
    assert lb.outside_fov == () and lb.interpolated_levels == ("C4",)


def _seen_below_row_112(cfg: DetectorConfig) -> LevelBoxes:
    """Only the bodies of C5-C7 are in view, their classes saying so; the image starts at row 112, over C5."""
    b = true_layout()
    keep = [3, 4, 5]
    mask = np.zeros((224, 224), bool)
    mask[112:] = True
    empty_disc = {s: Candidates.empty(5) for s in SAGITTAL_SLICES}
    return assemble("p", {s: level_candidates(b[keep], keep) for s in SAGITTAL_SLICES}, empty_disc, cfg,
                    fov={s: mask for s in SAGITTAL_SLICES})


def test_levels_above_the_field_of_view_are_outside_too():
    lb = _seen_below_row_112(CFG_LEVELS)    # levels named by the network's classes
    assert lb.outside_fov == ("C2", "C3", "C4")
    assert lb.outside_positions == ("C2", "C2-3", "C3", "C3-4", "C4", "C4-5")


def test_counting_starts_at_c3_under_a_field_of_view_that_cuts_the_column():
    """Counting: no body is C2 and the image ends over the top body, so the count starts there at C3 (one
    level hidden above the edge, the fewest), whatever the level classes say; C2 is outside the view."""
    b = true_layout()
    lb = _seen_below_row_112(CFG)
    assert lb.outside_fov == ("C2",)
    for s in SAGITTAL_SLICES:
        assert [lb.vertebrae[s][lv].box.cy for lv in ("C3", "C4", "C5")] == pytest.approx((b[3:, 1] + b[3:, 3]) / 2)
        assert not any(lb.vertebrae[s][lv].interpolated for lv in ("C3", "C4", "C5"))
    assert C2_NOT_FOUND in lb.warnings and C3_AT_THE_EDGE in lb.warnings
    # With room for bodies above (the image goes on to row 0), missed bodies may lie there: the count is not
    # forced and the same candidates keep the names their classes give (test_empty_slice_takes_...).
    free = assemble("p", {s: level_candidates(b[[3, 4, 5]], [3, 4, 5]) for s in SAGITTAL_SLICES},
                    {s: Candidates.empty(5) for s in SAGITTAL_SLICES}, CFG,
                    fov={s: np.ones((224, 224), bool) for s in SAGITTAL_SLICES})
    assert free.vertebrae[MID_SAGITTAL_SLICE]["C5"].box.cy == pytest.approx((b[3, 1] + b[3, 3]) / 2)
    assert C2_NOT_FOUND in free.warnings and C3_AT_THE_EDGE not in free.warnings


def test_a_vertebra_cut_by_the_image_edge_is_boxed_inside_the_image():
    """C2 detected with its dens above row 0 (a real scan framed tight): its box is cut at the edge, it is not
    outside the field of view, and nothing else moves (fusion measures boxes that lie in the image)."""
    b = true_layout(y0=8.0)                 # C2's box runs from row -7 to 23
    cands = {s: level_candidates(b, range(6)) for s in SAGITTAL_SLICES}
    empty_disc = {s: Candidates.empty(5) for s in SAGITTAL_SLICES}
    lb = assemble("p", cands, empty_disc, CFG, fov=fov_ending_at(224))
    assert lb.outside_fov == ()
    for s in SAGITTAL_SLICES:
        c2 = lb.vertebrae[s]["C2"].box
        assert c2.y1 == 0.0 and c2.y2 == pytest.approx(b[0, 3])
        assert all(lb.vertebrae[s][lv].box.y1 >= 0 for lv in VERTEBRAE)
    inside = assemble("p", {s: level_candidates(true_layout(), range(6)) for s in SAGITTAL_SLICES}, empty_disc, CFG,
                      fov=fov_ending_at(224))
    plain = assemble("p", {s: level_candidates(true_layout(), range(6)) for s in SAGITTAL_SLICES}, empty_disc, CFG)
    assert inside == plain                  # boxes inside the image are never touched


def test_without_c2_the_level_names_are_flagged_as_a_guess():
    b = true_layout(y0=20.0)
    keep = [1, 2, 3, 4, 5]                  # an image whose top cuts C2 off: nothing names C2
    lb = _assemble({s: level_candidates(b[keep], keep) for s in SAGITTAL_SLICES})
    assert C2_NOT_FOUND in lb.warnings
    whole = _assemble({s: level_candidates(b, range(6)) for s in SAGITTAL_SLICES})
    assert C2_NOT_FOUND not in whole.warnings
