"""The bottom module: one config loader for every stage (unknown keys and wrong types refused), provenance."""
from __future__ import annotations

import json
import re

import pytest

from common.config import ConfigError, config_dict, load_config
from common.provenance import git_commit


def test_load_config_layers_defaults_file_and_overrides(tmp_path):
    from detector.config import TrainConfig
    f = tmp_path / "train.json"
    f.write_text(json.dumps({"epochs": 7, "lr0": 0.01, "appearance": {"p_gamma": 0.5, "gamma_range": [0.7, 1.5]}}))
    cfg = load_config(TrainConfig, f, {"epochs": 9})
    assert cfg.epochs == 9 and cfg.lr0 == 0.01 and cfg.batch == TrainConfig().batch
    assert cfg.appearance.p_gamma == 0.5 and cfg.appearance.gamma_range == (0.7, 1.5)
    assert load_config(TrainConfig, f, key=None) == load_config(TrainConfig, overrides=json.loads(f.read_text()))
    # a frozen config: settings are values, never changed in place
    with pytest.raises(Exception):
        cfg.epochs = 3  # type: ignore[misc]


@pytest.mark.parametrize("values, message", [
    ({"epoch": 3}, r"unknown setting\(s\) \['epoch'\]"),
    ({"epochs": "3"}, "epochs: expected an integer"),
    ({"epochs": 3.0}, "epochs: expected an integer"),
    ({"cos_lr": 1}, "cos_lr: expected true/false"),
    ({"lr0": "fast"}, "lr0: expected a number"),
    ({"appearance": {"p_gama": 0.1}}, r"AppearanceConfig: unknown setting"),
    ({"appearance": {"gamma_range": [1.0]}}, "gamma_range: expected 2 values"),
    ({"device": 0}, "device: expected text"),
])
def test_load_config_refuses_unknown_keys_and_wrong_types(values, message):
    from detector.config import TrainConfig
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, overrides=values)


def test_every_stage_config_goes_through_it():
    from classifier.config import ClassifierConfig
    from detector.config import DetectorConfig, from_dict
    from fusion.config import FusionConfig
    for build in (lambda v: ClassifierConfig.from_dict(v), lambda v: from_dict(DetectorConfig, v),
                  lambda v: FusionConfig.from_dict(v)):
        with pytest.raises(ConfigError, match="unknown setting"):
            build({"no_such_setting": 1})
    assert ClassifierConfig.from_dict(config_dict(ClassifierConfig())) == ClassifierConfig()
    assert from_dict(DetectorConfig, config_dict(DetectorConfig())) == DetectorConfig()


def test_git_commit_names_the_commit_and_marks_uncommitted_changes():
    commit = git_commit("common")
    assert commit == "unknown" or re.fullmatch(r"[0-9a-f]{4,40}(\+dirty\(common/\))?", commit)
    assert git_commit("no/such/folder").split("+")[0] == commit.split("+")[0]
