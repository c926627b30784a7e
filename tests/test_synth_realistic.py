"""Realistic phantoms: random framing, head and thorax, random contrasts, boxes only for what is visible."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detector.dataset import build_dataset
from study.challenge import VISIBLE_BOXES_FILE, read_visible_boxes
from study.levels import MID_SAGITTAL_SLICE, SAGITTAL_SLICES, VERTEBRAE
from synth.cli import synth_command
from synth.generate import builtin_specs, patient_rng, realistic_rng
from synth.realistic import MIN_VISIBLE, Framing, render_realistic
from synth.tissue import Tissue

ROOT = Path(__file__).resolve().parents[1]
SEED = 23


@pytest.fixture(scope="module")
def renders():
    specs = builtin_specs(4, SEED)
    return [render_realistic(sp.boxes, sp.labels, realistic_rng(SEED, sp.index, 0)) for sp in specs]


def test_framings_cover_what_scanners_produce():
    draws = [Framing.draw(np.random.default_rng(k)) for k in range(400)]
    px = np.array([d.px_per_mm for d in draws])
    rows = np.array([d.c2_xy[1] for d in draws])
    assert px.min() >= 0.6 and px.max() <= 1.3 and np.ptp(px) > 0.6
    assert rows.min() < 15 and rows.max() > 100           # C2 from the top edge to the middle
    assert 0.25 < np.mean([d.slab_mm == 1.0 for d in draws]) < 0.45   # 1-mm planes of 3-D volumes
    slabs = [d.slab_mm for d in draws if d.slab_mm > 1]
    assert min(slabs) >= 3.0 and max(slabs) <= 4.0
    cut = np.mean([d.fov != (0, 0, 224, 224) for d in draws])
    assert 0.3 < cut < 0.8                                 # fields of view that end or crop


def test_boxes_only_where_visible_and_padding_is_zero(renders):
    for r in renders:
        x1, y1, x2, y2 = r.framing.fov
        for s in SAGITTAL_SLICES:
            img = r.sagittal[s]
            outside = np.ones(img.shape, bool)
            outside[y1:y2, x1:x2] = False
            assert (img[outside] == 0).all()
            for lv in VERTEBRAE:
                frac = r.visible_fraction[s][lv]
                assert (lv in r.visible_boxes[s]) == (frac >= MIN_VISIBLE), (lv, frac)
            for b in r.visible_boxes[s].values():
                assert x1 <= b.x1 < b.x2 <= x2 and y1 <= b.y1 < b.y2 <= y2
            order = [r.visible_boxes[s][lv].cy for lv in VERTEBRAE if lv in r.visible_boxes[s]]
            assert np.all(np.diff(order) > 0)              # still C2 on top, in order


def test_c2_lands_where_the_framing_puts_it(renders):
    for r in renders:
        b = r.visible_boxes[MID_SAGITTAL_SLICE].get("C2")
        if b is None or r.visible_fraction[MID_SAGITTAL_SLICE]["C2"] < 1:
            continue
        # The C2 box holds the dens above the body, so the framed point (the body centre) is in its lower half.
        assert b.x1 - 2 < r.framing.c2_xy[0] < b.x2 + 2
        assert b.cy - 2 < r.framing.c2_xy[1] < b.y2


def test_head_above_and_thoracic_column_below():
    """At a wide framing the skull, cerebellum and brain lie above C2 and bodies continue below C7."""
    sp = builtin_specs(1, SEED)[0]
    wide = Framing(0.62, 1.25, (112.0, 95.0), 1.0, 3.0, (0, 0, 224, 224))
    import synth.realistic as realistic
    original = realistic.Framing.draw
    realistic.Framing.draw = staticmethod(lambda rng: wide)
    try:
        r = render_realistic(sp.boxes, sp.labels, patient_rng(SEED, 0))
    finally:
        realistic.Framing.draw = original
    t = r.sagittal_tissue[MID_SAGITTAL_SLICE]
    c2 = r.visible_boxes[MID_SAGITTAL_SLICE]["C2"]
    c7 = r.visible_boxes[MID_SAGITTAL_SLICE]["C7"]
    above = t[:int(c2.y1)]
    for tissue in (Tissue.SKULL, Tissue.CEREBELLUM, Tissue.BRAIN, Tissue.CORD):
        assert (above == tissue).sum() > 20, tissue.name
    below = t[int(c7.y2) + 4:, int(c7.x1) - 10:int(c7.x2) + 10]
    rows_with_bone = np.flatnonzero((below == Tissue.MARROW).any(1))
    bodies = 1 + int((np.diff(rows_with_bone) > 1).sum())
    assert bodies >= 4, rows_with_bone                     # several thoracic bodies, not one


def test_rendering_is_deterministic_and_varies_contrast(renders):
    sp = builtin_specs(1, SEED)[0]
    again = render_realistic(sp.boxes, sp.labels, realistic_rng(SEED, 0, 0))
    assert np.array_equal(again.sagittal[6], renders[0].sagittal[6])
    # Contrasts differ between patients: the CSF is not always the brightest tissue.
    brightest = set()
    for r in renders + [render_realistic(s.boxes, s.labels, realistic_rng(SEED + 1, s.index, 0))
                        for s in builtin_specs(3, SEED + 1)]:
        img, t = r.sagittal[6], r.sagittal_tissue[6]
        means = {k: img[t == k].mean() for k in (Tissue.CSF, Tissue.FAT, Tissue.MUSCLE, Tissue.MARROW)
                 if (t == k).sum() > 30}
        brightest.add(max(means, key=means.get))
    assert len(brightest) >= 2


def test_challenge_phantom_is_unchanged():
    """The realistic renders add to the generator; the challenge render (and its random stream) is as before,
    so the examples and every evaluation phantom stay byte-identical."""
    from synth.generate import render_spec
    spec = builtin_specs(1, 2025)[0]
    r = render_spec(spec, 2025)
    for s in SAGITTAL_SLICES:
        shipped = np.asarray(Image.open(ROOT / "examples" / spec.labels.patient_id / "sag" / f"{s}.png"))
        assert np.array_equal(np.round(r.sagittal[s] * 255).astype(np.uint8), shipped)


def test_realistic_folder_feeds_the_detector_dataset(tmp_path):
    assert synth_command(tmp_path / "main", 4, SEED, None, None, workers=1) == 0
    assert synth_command(tmp_path / "framed", 4, SEED, None, None, workers=1, realistic=1) == 0
    vis = read_visible_boxes(tmp_path / "framed" / VISIBLE_BOXES_FILE)
    assert len(vis) == 4 and all("~framed" in v.patient_id for v in vis)
    meta = json.loads((tmp_path / "framed" / "phantom.json").read_text())
    assert len(meta["patients"]) == 4 and "framing" in meta["patients"][0]
    assert not (tmp_path / "framed" / vis[0].patient_id / "tra").exists()     # sagittal only
    info = build_dataset(tmp_path / "main", tmp_path / "main" / "boxes.json", tmp_path / "ds", val_fraction=0.25,
                         seed=0, extra_dirs=[tmp_path / "framed"], exclude={"phantom-s23-0003"})
    # Renders of a main-folder geometry sit on its side of the split; the excluded geometry is nowhere.
    assert set(info.extra_train_ids) | set(info.extra_val_ids) == {v.patient_id for v in vis
                                                                   if not v.patient_id.startswith("phantom-s23-0003")}
    for pid in info.extra_val_ids:
        assert pid.split("~")[0] in info.val_ids
    for pid in info.extra_train_ids:
        assert pid.split("~")[0] in info.train_ids
    # One YOLO line per visible vertebra, plus the discs between visible neighbours.
    by_id = {v.patient_id: v for v in vis}
    for pid in info.extra_train_ids:
        for s in SAGITTAL_SLICES:
            lines = (tmp_path / "ds" / "labels" / "train" / f"{pid}_s{s}.txt").read_text().split()
            n_lines = len(lines) // 5
            shown = [lv for lv in VERTEBRAE if lv in by_id[pid].boxes[s]]
            pairs = sum(1 for a, b in zip(VERTEBRAE, VERTEBRAE[1:]) if a in shown and b in shown)
            assert n_lines == len(shown) + pairs
