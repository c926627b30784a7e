"""MRI appearance randomisation for training: gamma, bias field, contrast, blur, resampling, Rician noise, FOV crop."""
from __future__ import annotations

import cv2
import numpy as np

from .config import AppearanceConfig


def _xyxy_pixels(labels: dict) -> np.ndarray:
    inst = labels.get("instances")
    if inst is None or len(inst) == 0:
        return np.zeros((0, 4), np.float32)
    b = inst.bboxes.copy()
    fmt = inst._bboxes.format
    if fmt == "xywh":
        b = np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1)
    elif fmt == "ltwh":
        b = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1)
    if inst.normalized:
        h, w = labels["img"].shape[:2]
        b = b * np.array([w, h, w, h], np.float32)
    return b


def randomise_appearance(img: np.ndarray, cfg: AppearanceConfig, rng: np.random.Generator,
                         keep_xyxy: np.ndarray | None = None) -> np.ndarray:
    """One random MRI-like appearance of a grayscale float image in [0, 1]; returns float32 in [0, 1].

    keep_xyxy: boxes (pixels) a FOV crop must leave fully visible, so no label points at blacked-out tissue.
    """
    x = img.astype(np.float32)
    h, w = x.shape
    if rng.random() < cfg.p_resample:
        f = rng.uniform(*cfg.resample_range)
        small = cv2.resize(x, (max(8, int(w / f)), max(8, int(h / f))), interpolation=cv2.INTER_AREA)
        x = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < cfg.p_blur:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(*cfg.blur_sigma_range))
    if rng.random() < cfg.p_bias:
        yy, xx = np.mgrid[-1:1:h * 1j, -1:1:w * 1j].astype(np.float32)
        c = rng.normal(0, cfg.bias_strength, 5).astype(np.float32)
        x = x * np.exp(c[0] * xx + c[1] * yy + c[2] * xx * yy + c[3] * xx ** 2 + c[4] * yy ** 2)
    if rng.random() < cfg.p_gamma:
        x = np.clip(x, 0, None) ** rng.uniform(*cfg.gamma_range)
    if rng.random() < cfg.p_noise:
        s = rng.uniform(*cfg.noise_range)
        x = np.sqrt((x + rng.normal(0, s, x.shape)) ** 2 + rng.normal(0, s, x.shape) ** 2).astype(np.float32)
    if rng.random() < cfg.p_contrast:
        x = x * rng.uniform(*cfg.contrast_range) + rng.uniform(*cfg.brightness_range)
    x = np.clip(x, 0, 1)
    if rng.random() < cfg.p_equalize:
        x = cv2.equalizeHist((x * 255).astype(np.uint8)).astype(np.float32) / 255
    if rng.random() < cfg.p_fov_crop:
        x = _fov_crop(x, rng, keep_xyxy)
    return x.astype(np.float32)


def _fov_crop(x: np.ndarray, rng: np.random.Generator, keep: np.ndarray | None) -> np.ndarray:
    """Black out a random margin on each side, never cutting into the boxes (a tighter real FOV)."""
    h, w = x.shape
    if keep is not None and len(keep):
        lo_x, lo_y = max(0, int(keep[:, 0].min()) - 2), max(0, int(keep[:, 1].min()) - 2)
        hi_x, hi_y = min(w, int(np.ceil(keep[:, 2].max())) + 2), min(h, int(np.ceil(keep[:, 3].max())) + 2)
    else:
        lo_x, lo_y, hi_x, hi_y = w // 3, h // 3, 2 * w // 3, 2 * h // 3
    left, top = int(rng.uniform(0, 1) * lo_x), int(rng.uniform(0, 1) * lo_y)
    right, bottom = hi_x + int(rng.uniform(0, 1) * (w - hi_x)), hi_y + int(rng.uniform(0, 1) * (h - hi_y))
    out = np.zeros_like(x)
    out[top:bottom, left:right] = x[top:bottom, left:right]
    return out


class MRIAppearance:
    """ultralytics transform: randomises a labels dict's image in place (boxes untouched)."""

    def __init__(self, cfg: AppearanceConfig):
        self.cfg = cfg

    def __call__(self, labels: dict) -> dict:
        if self.cfg.p_partial_fov > 0 and np.random.random() < self.cfg.p_partial_fov:
            labels = partial_fov(labels, self.cfg, np.random.default_rng(np.random.randint(0, 2 ** 31 - 1)))
        img = labels["img"]
        gray = img.mean(2) if img.ndim == 3 else img
        # Drawn from the global stream, which ultralytics seeds per dataloader worker; a generator held
        # here would be forked into every worker with the same state and repeat the same "random" looks.
        rng = np.random.default_rng(np.random.randint(0, 2 ** 31 - 1))
        out = randomise_appearance(gray.astype(np.float32) / 255.0, self.cfg, rng, _xyxy_pixels(labels))
        out8 = np.round(out * 255).astype(np.uint8)
        labels["img"] = np.repeat(out8[:, :, None], 3, 2) if img.ndim == 3 else out8
        return labels


def partial_fov(labels: dict, cfg: AppearanceConfig, rng: np.random.Generator) -> dict:
    """Keep only a window over part of the spine, black elsewhere; boxes less than partial_fov_min_visible
    inside the window are dropped, the rest clipped to it (a tightly cropped real scan looks like this)."""
    inst = labels.get("instances")
    if inst is None or len(inst) == 0:
        return labels
    img = labels["img"]
    h, w = img.shape[:2]
    inst.convert_bbox("xyxy")
    was_normalized = inst.normalized
    if was_normalized:
        inst.denormalize(w, h)
    b = inst.bboxes.copy()
    y_lo, y_hi = float(b[:, 1].min()), float(b[:, 3].max())
    wh = rng.uniform(*cfg.partial_fov_height)
    ww = rng.uniform(*cfg.partial_fov_width)
    top = rng.uniform(y_lo - 0.3 * wh, max(y_lo - 0.3 * wh + 1, y_hi - 0.5 * wh))
    # Real sagittal crops centre on the canal, which lies behind the bodies: shift the window backwards.
    cx = float(np.median((b[:, 0] + b[:, 2]) / 2)) + rng.uniform(-10, 25)
    x1, y1 = int(np.clip(cx - ww / 2, 0, w - 8)), int(np.clip(top, 0, h - 8))
    x2, y2 = int(np.clip(cx + ww / 2, x1 + 8, w)), int(np.clip(top + wh, y1 + 8, h))
    clipped = np.stack([np.clip(b[:, 0], x1, x2), np.clip(b[:, 1], y1, y2),
                        np.clip(b[:, 2], x1, x2), np.clip(b[:, 3], y1, y2)], 1)
    area = lambda a: np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)  # noqa: E731
    keep = area(clipped) >= cfg.partial_fov_min_visible * np.maximum(area(b), 1e-6)
    out = np.zeros_like(img)
    out[y1:y2, x1:x2] = img[y1:y2, x1:x2]
    labels["img"] = out
    kept = inst[keep]
    kept.update(clipped[keep].astype(np.float32))
    if was_normalized:
        kept.normalize(w, h)
    labels["instances"] = kept
    labels["cls"] = labels["cls"][keep]
    return labels
