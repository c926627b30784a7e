"""Toy train -> load -> predict on phantoms in tmp_path: shapes, probabilities, missing axial, dumps, config, priors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from classifier.config import ClassifierConfig
from classifier.data import build_dataset
from classifier.decision import apply_priors, tune_priors
from classifier.dump import crop_file_name, dump_patient
from classifier.predict import CONFIG_FILE, WEIGHTS_FILE, Classifier, LevelGrades
from classifier.train import class_weights, split_patients, train
from evaluation.metrics import macro_f1
from study.errors import InputError
from study.levels import CANAL_POSITIONS, DISCS, SAGITTAL_SLICES
from study.study import Study
from synth.generate import builtin_specs, generate

# Tiny everything: this checks the plumbing, not the accuracy (the shipped-weights test does that).
TOY = dict(epochs=2, batch_patients=3, threads=1, backbone_channels=[8, 16, 16, 32], stem_width=8,
           hidden_dim=16, level_embedding_dim=4, sag_size=32, ax_size=32, patience=5)


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantoms")
    generate(out, builtin_specs(8, 31), 31, "built-in statistical model")
    return out


@pytest.fixture(scope="module")
def trained(phantom_dir, tmp_path_factory):
    records = build_dataset(phantom_dir)
    out = tmp_path_factory.mktemp("weights")
    cfg = ClassifierConfig.from_dict({**TOY, "val_fraction": 0.25})
    result = train(records, out, cfg, data_name="toy phantoms", log=lambda s: None)
    return records, out, result


def test_train_writes_weights_and_a_self_describing_config(trained):
    records, out, result = trained
    assert (out / WEIGHTS_FILE).is_file()
    meta = json.loads((out / CONFIG_FILE).read_text())
    assert meta["training"]["data"] == "toy phantoms"
    assert meta["config"]["sag_size"] == 32
    assert len(meta["config"]["disc_priors"]) == 4 and len(meta["config"]["canal_priors"]) == 4
    assert 1 <= result.best_epoch <= result.epochs_run <= 2
    assert len(result.history) == result.epochs_run
    assert set(result.train_ids).isdisjoint(result.val_ids)
    assert len(result.train_ids) + len(result.val_ids) == len({r.patient_id for r in records})
    state = torch.load(out / WEIGHTS_FILE, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_training_stores_the_label_prior_of_its_training_geometries(trained):
    """classifier.json carries the grade counts of the labels trained on: what an ungradable position submits."""
    from classifier.prior import GradePrior

    records, out, result = trained
    meta = json.loads((out / CONFIG_FILE).read_text())
    block = meta["label_prior"]
    n = len(result.train_ids)
    assert block["n_patients"] == n and "toy phantoms" in block["source"]
    counts = list(block["canal_grade_counts"].values()) + list(block["disc_grade_counts"].values())
    assert all(sum(c) == n for c in counts)
    by_id = {r.patient_id: r.labels for r in records}
    c2 = np.bincount([by_id[i].canal_grades[0] for i in result.train_ids], minlength=4).tolist()
    assert block["canal_grade_counts"]["C2"] == c2
    prior = GradePrior.from_meta(meta)
    assert prior.known and int(np.argmax(prior.canal("C2"))) == int(np.argmax(c2))
    assert not GradePrior.from_meta({}).known and GradePrior.from_meta({}).canal("C2").tolist() == [1, 0, 0, 0]


def test_predict_shapes_probabilities_and_features(trained):
    records, out, _ = trained
    clf = Classifier.load(out)
    grades = clf.predict_many((r.study, r.boxes) for r in records[:3])
    assert [g.patient_id for g in grades] == [r.patient_id for r in records[:3]]
    for g in grades:
        assert isinstance(g, LevelGrades)
        assert len(g.disc_grades) == len(DISCS) and len(g.canal_grades) == len(CANAL_POSITIONS)
        assert g.disc_probabilities.shape == (len(DISCS), 4)
        assert g.canal_probabilities.shape == (len(CANAL_POSITIONS), 4)
        np.testing.assert_allclose(g.disc_probabilities.sum(1), 1, atol=1e-5)
        np.testing.assert_allclose(g.canal_probabilities.sum(1), 1, atol=1e-5)
        assert g.features.shape == (len(CANAL_POSITIONS), clf.cfg.hidden_dim)
        assert all(0 <= v <= 3 for v in g.disc_grades + g.canal_grades)
        assert g.has_axial.all()
        np.testing.assert_array_equal(g.disc_grades, apply_priors(g.disc_probabilities, clf.cfg.disc_priors))
    # One patient alone grades the same as inside a batch.
    alone = clf.predict(records[1].study, records[1].boxes)
    np.testing.assert_allclose(alone.canal_probabilities, grades[1].canal_probabilities, atol=1e-5)


def test_predict_without_axial_images(trained):
    records, out, _ = trained
    clf = Classifier.load(out)
    r = records[0]
    some = Study(r.patient_id, r.study.sagittal, {p: a for p, a in r.study.axial.items() if p not in ("C4", "C5-6")})
    none = Study(r.patient_id, r.study.sagittal, {})
    g_some, g_none = clf.predict(some, r.boxes), clf.predict(none, r.boxes)
    assert list(g_some.has_axial) == [p not in ("C4", "C5-6") for p in CANAL_POSITIONS]
    assert not g_none.has_axial.any()
    for g in (g_some, g_none):
        np.testing.assert_allclose(g.canal_probabilities.sum(1), 1, atol=1e-5)
        assert np.isfinite(g.features).all()


def test_dump_writes_every_crop_and_a_sheet(trained, tmp_path):
    records, out, _ = trained
    clf = Classifier.load(out)
    r = records[0]
    crops = r.crops(clf.cfg)
    sheet = dump_patient(tmp_path, crops, r.study, clf.grade_crops([crops])[0], r.labels)
    assert sheet.is_file() and sheet.stat().st_size > 10_000
    for p in CANAL_POSITIONS:
        for view in [f"sag{s}" for s in SAGITTAL_SLICES] + ["axial"]:
            assert (tmp_path / r.patient_id / crop_file_name(r.patient_id, p, view)).is_file()


def test_dump_crops_command(trained, phantom_dir, tmp_path):
    from click.testing import CliRunner
    from classifier.cli import cli
    _, out, _ = trained
    result = CliRunner().invoke(cli, ["dump-crops", "--input", str(phantom_dir), "--out", str(tmp_path),
                                      "--weights", str(out), "--limit", "2"])
    assert result.exit_code == 0, result.output
    sheets = sorted(tmp_path.glob("*/*_sheet.png"))
    assert len(sheets) == 2


def test_evaluate_command_takes_a_weights_root_and_names_a_bad_folder(trained, phantom_dir, tmp_path):
    import shutil
    from click.testing import CliRunner
    from classifier.cli import cli
    _, out, _ = trained
    shutil.copytree(out, tmp_path / "root" / "classifier")  # a weights root, as pipeline.py train writes
    for weights in (out, tmp_path / "root"):
        result = CliRunner().invoke(cli, ["evaluate", "--data", str(phantom_dir), "--weights", str(weights)])
        assert result.exit_code == 0, result.output
        assert "disc: macro-F1" in result.output and "canal: macro-F1" in result.output
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["evaluate", "--data", str(phantom_dir), "--weights", str(tmp_path / "empty")])
    assert result.exit_code == 2 and result.exception is not None and not isinstance(result.exception, FileNotFoundError)
    assert "--weights" in result.output and str(tmp_path / "empty") in result.output and "classifier.json" in result.output


def test_config_rejects_unknown_keys_and_round_trips():
    with pytest.raises(ValueError, match="unknown setting"):
        ClassifierConfig.from_dict({"epochs": 3, "learning_rate": 0.1})
    cfg = ClassifierConfig().replace(epochs=3, backbone_channels=[8, 16, 16, 32])
    assert ClassifierConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_split_keeps_renders_of_a_patient_together(phantom_dir):
    records = build_dataset(phantom_dir)
    twice = records + records  # a second render of every patient id
    train_ids, val_ids = split_patients(twice, 0.25, 0)
    assert set(train_ids).isdisjoint(val_ids)
    assert set(train_ids) | set(val_ids) == {r.patient_id for r in records}


def test_tuned_priors_recover_a_rare_class():
    rng = np.random.default_rng(0)
    y = np.array([0] * 300 + [1] * 20)
    p = np.zeros((320, 2))
    # The rare class scores higher when present but rarely wins the plain argmax.
    p[:, 1] = np.clip(np.where(y == 1, 0.4, 0.1) + rng.normal(0, 0.05, 320), 0, 1)
    p[:, 0] = 1 - p[:, 1]
    before = macro_f1(y, p.argmax(1), 2)
    priors, after = tune_priors(p, y)
    assert after > before + 0.2
    assert macro_f1(y, apply_priors(p, priors), 2) == pytest.approx(after)


def test_class_weights_favour_rare_classes():
    w = class_weights(np.array([0] * 90 + [1] * 10), 3, 0.5).numpy()
    assert w[1] > w[0] and w[2] >= w[1]


def test_extra_validation_data_joins_validation_and_may_not_overlap_training(phantom_dir, tmp_path):
    records = build_dataset(phantom_dir)
    extra_dir = tmp_path / "extra"
    generate(extra_dir, builtin_specs(3, 32), 32, "built-in statistical model")
    extra = build_dataset(extra_dir)
    cfg = ClassifierConfig.from_dict({**TOY, "epochs": 1, "val_fraction": 0.25})
    out = tmp_path / "w"
    result = train(records, out, cfg, data_name="toy phantoms", log=lambda s: None,
                   extra_val_records=extra, extra_val_name="3 built-in phantoms")
    meta = json.loads((out / CONFIG_FILE).read_text())
    tr = meta["training"]
    own_val = {r.patient_id for r in records} - set(result.train_ids)
    # every extra render is validated on (early stopping, priors), none is trained on
    assert tr["val_renders"] == len(own_val) + 3 and tr["val_extra"] == {"data": "3 built-in phantoms", "renders": 3}
    assert {r.patient_id for r in extra} <= set(result.val_ids)
    assert not {r.patient_id for r in extra} & set(result.train_ids)
    from classifier.card import model_card_text
    assert "3 of the validation renders are 3 built-in phantoms (never trained on)" in model_card_text(meta)
    # data shared with the training renders is refused, naming the overlap
    with pytest.raises(InputError, match="shares .* geometries with the training renders") as err:
        train(records, tmp_path / "w2", cfg, log=lambda s: None, extra_val_records=records)
    assert err.value.path == str(phantom_dir)   # the folder it came from


def test_training_crops_are_the_crops_run_grades():
    """Training (build_dataset) and `run` (the Reader's load_input) read a patient through the same loader and
    normalisation and crop it the same way: the network trains on exactly what it will be shown."""
    from classifier.crops import make_level_crops
    from reader import GivenBoxes
    from study.inputs import find_inputs, load_input
    root = Path(__file__).resolve().parents[1] / "examples"
    cfg = ClassifierConfig()
    given = GivenBoxes.read(root / "boxes.json")
    for record in build_dataset(root, limit=2):
        source = next(s for s in find_inputs(root) if s.patient_id == record.patient_id)
        trained, read = record.crops(cfg), make_level_crops(load_input(source), given.for_patient(record.patient_id), cfg)
        assert np.array_equal(trained.sagittal, read.sagittal) and np.array_equal(trained.axial, read.axial)
        assert np.array_equal(trained.has_axial, read.has_axial) and trained.canal == read.canal
