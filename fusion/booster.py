"""LightGBM for the fusion stage: imported once, lazily and without its scikit-learn wrappers, and fitted one way."""
from __future__ import annotations

import sys
from typing import Sequence

import numpy as np

from study.levels import CURVATURE_CLASSES

from .config import FusionConfig

_LGB = None


def lightgbm():
    """The lightgbm module, imported on first use without its optional scikit-learn wrappers (unless scikit-learn
    is loaded already).

    On import lightgbm loads scikit-learn (and scipy.stats through it) for its LGBMClassifier API, which
    nothing here uses (only Booster and train): 2.1 of the 2.7 s that importing lightgbm took on the 2-core
    CPU, paid by every `run`. Marking the module absent while lightgbm imports makes it skip that API; code
    that needs scikit-learn itself (the cross-validation folds) imports it later as usual.
    """
    global _LGB
    if _LGB is None:
        if "lightgbm" in sys.modules or "sklearn" in sys.modules:
            import lightgbm as lgb
        else:
            sys.modules["sklearn"] = None  # type: ignore[assignment]  # `import sklearn` now raises ImportError
            try:
                import lightgbm as lgb
            finally:
                del sys.modules["sklearn"]
        _LGB = lgb
    return _LGB


def load_booster(text: str):
    """A booster from its text format (what the weights folder holds; no pickle)."""
    return lightgbm().Booster(model_str=text)


def balanced_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    counts = np.bincount(y, minlength=n_classes).astype(float)
    per_class = np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 0.0)
    return per_class[y]


def fit_booster(X: np.ndarray, y: np.ndarray, names: Sequence[str], cfg: FusionConfig, objective: str, seed: int):
    """A class-balanced booster ('multiclass' for curvature, 'binary' for poor alignment) on named columns."""
    lgb = lightgbm()
    n_classes = len(CURVATURE_CLASSES) if objective == "multiclass" else 2
    data = lgb.Dataset(X, label=y, weight=balanced_weights(y, n_classes), feature_name=list(names),
                       free_raw_data=True, params={"verbosity": -1})
    return lgb.train(cfg.lgb_params(objective, seed), data, num_boost_round=cfg.n_estimators)
