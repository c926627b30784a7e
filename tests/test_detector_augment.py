"""Training augmentation: appearance randomisation keeps geometry; partial FOV keeps labels and pixels in step."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from detector.augment import MRIAppearance, partial_fov, randomise_appearance
from detector.config import AppearanceConfig, TrainConfig


def _labels(n=6):
    from ultralytics.utils.instance import Instances
    img = np.full((224, 224, 3), 120, np.uint8)
    boxes = np.array([[90, 50 + 18 * i, 110, 66 + 18 * i] for i in range(n)], np.float32)
    inst = Instances(boxes / 224, bbox_format="xyxy", normalized=True)
    return {"img": img, "instances": inst, "cls": np.arange(n, dtype=np.float32)[:, None]}


def test_training_never_flips(tmp_path, monkeypatch):
    """What reaches ultralytics: no left-right flip (it swaps anterior and posterior), no up-down flip, no mosaic
    (it breaks the vertebra count), and the MRI trainer, whatever the TrainConfig defaults say."""
    import detector.train as train_module
    from synth.cli import synth_command

    assert synth_command(tmp_path / "p", 2, 3, None, None, workers=1) == 0
    seen = {}

    class Stub:
        def train(self, **kw):
            seen.update(kw)
            raise RuntimeError("stop before training")

    monkeypatch.setattr(train_module, "yolo", lambda: (lambda *a, **k: Stub()))
    with pytest.raises(RuntimeError, match="stop before training"):
        train_module.train(tmp_path / "p", tmp_path / "p" / "boxes.json", tmp_path / "w", train_config=TrainConfig(),
                           work_dir=tmp_path / "work", real_check=False, verbose=False)
    assert seen["fliplr"] == 0.0 and seen["flipud"] == 0.0 and seen["mosaic"] == 0.0
    assert seen["amp"] is False and seen["trainer"].__name__ == "MRITrainer"


def test_appearance_keeps_shape_range_and_boxes():
    rng = np.random.default_rng(0)
    img = np.tile(np.linspace(0, 1, 224, dtype=np.float32), (224, 1))
    for _ in range(20):
        out = randomise_appearance(img, AppearanceConfig(), rng)
        assert out.shape == img.shape and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 1.0
    lab = _labels()
    before = lab["instances"].bboxes.copy()
    out = MRIAppearance(replace(AppearanceConfig(), p_fov_crop=1.0))(lab)
    assert out["img"].shape == (224, 224, 3)
    np.testing.assert_array_equal(out["instances"].bboxes, before)


def test_fov_crop_never_hides_a_labelled_box():
    rng = np.random.default_rng(1)
    img = np.ones((224, 224), np.float32) * 0.5
    keep = np.array([[90.0, 50.0, 110.0, 150.0]])
    cfg = replace(AppearanceConfig(), p_fov_crop=1.0, p_noise=0, p_bias=0, p_gamma=0, p_contrast=0, p_blur=0,
                  p_resample=0, p_equalize=0)
    for _ in range(20):
        out = randomise_appearance(img, cfg, rng, keep)
        assert (out[50:150, 90:110] > 0).all()


def test_partial_fov_drops_and_clips_boxes_consistently():
    cfg = replace(AppearanceConfig(), p_partial_fov=1.0)
    rng = np.random.default_rng(3)
    for _ in range(30):
        lab = partial_fov(_labels(), cfg, rng)
        inst = lab["instances"]
        assert len(inst) == len(lab["cls"])
        inst.convert_bbox("xyxy")
        b = inst.bboxes * 224
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        img = lab["img"]
        for x1, y1, x2, y2 in b.astype(int):
            # every surviving box lies inside the visible window
            assert (img[y1 + 1:y2 - 1, x1 + 1:x2 - 1] > 0).all()
