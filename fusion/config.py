"""The fusion stage's one typed config: booster settings, folds and seeds, defaults in one place."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping

from common.config import build_config
from study.levels import CURVATURE_CLASSES


@dataclass(frozen=True)
class FusionConfig:
    """Every setting of the fusion stage; built through common.config, which rejects unknown keys and wrong types."""

    n_estimators: int = 200
    learning_rate: float = 0.03
    num_leaves: int = 4
    min_child_samples: int = 10
    subsample: float = 0.8
    colsample_bytree: float = 0.5
    reg_lambda: float = 2.0
    seed: int = 0
    # Inner stratified folds whose out-of-fold scores tune the class priors / alignment threshold.
    inner_folds: int = 4
    cv_folds: int = 5
    cv_repeats: int = 5
    n_jobs: int = 1

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> "FusionConfig":
        return build_config(cls, d)

    def lgb_params(self, objective: str, seed: int) -> Dict[str, object]:
        p: Dict[str, object] = dict(
            objective=objective, learning_rate=self.learning_rate, num_leaves=self.num_leaves,
            min_data_in_leaf=self.min_child_samples, bagging_fraction=self.subsample, bagging_freq=1,
            feature_fraction=self.colsample_bytree, lambda_l2=self.reg_lambda, seed=seed,
            num_threads=self.n_jobs, deterministic=True, force_row_wise=True, verbosity=-1,
        )
        if objective == "multiclass":
            p["num_class"] = len(CURVATURE_CLASSES)
        return p
