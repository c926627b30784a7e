"""The detector's view of a slice: the one intensity normalisation its training data and its inference share."""
from __future__ import annotations

import numpy as np

from .config import DetectorConfig


def normalise_slice(image: np.ndarray, cfg: DetectorConfig) -> np.ndarray:
    """Map the slice's high percentile to a fixed grey so scanners' arbitrary intensity scales line up."""
    img = np.nan_to_num(image.astype(np.float32))
    img = img - min(0.0, float(img.min()))
    top = float(np.percentile(img, cfg.norm_percentile))
    if top > 1e-6:
        img = img / top * cfg.norm_target
    return np.clip(img, 0.0, 1.0)
