"""K-fold classifier training, the fold ensemble `run` loads, and test-time augmentation (toy networks, phantoms)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from classifier.data import batch_tensors, build_dataset
from classifier.folds import run_classifier_folds
from classifier.predict import CONFIG_FILE, TTA_VIEWS, WEIGHTS_FILE, Classifier, warp_crops
from classifier.recipe import ClassifierRun
from release.manifest import write_manifest
from study.splits import kfold_keys, split_key
from synth.generate import builtin_specs, generate

TOY = dict(epochs=1, batch_patients=3, threads=1, backbone_channels=[8, 16, 16, 32], stem_width=8,
           hidden_dim=16, level_embedding_dim=4, sag_size=32, ax_size=32, patience=5, val_fraction=0.25)
ROOT = Path(__file__).resolve().parents[1]


def test_kfold_keys_keep_every_render_and_variant_of_a_geometry_in_one_fold():
    ids = [f"{k:03d}" for k in range(23)] + [f"{k:03d}~rare" for k in range(0, 23, 3)] + \
        [f"{k:03d}~poor" for k in range(1, 23, 4)]
    folds = kfold_keys(ids, 5, seed=0, stratum=lambda key: int(key) % 3 == 0)
    flat = [k for f in folds for k in f]
    assert sorted(flat) == sorted({split_key(i) for i in ids})          # each geometry once, in one fold
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    for f in folds:                                                     # each stratum spread over the folds
        assert 1 <= sum(int(k) % 3 == 0 for k in f) <= 2
    assert kfold_keys(ids, 5, seed=0, stratum=lambda key: int(key) % 3 == 0) == folds   # reproducible
    assert kfold_keys(ids, 5, seed=1, stratum=lambda key: int(key) % 3 == 0) != folds
    with pytest.raises(ValueError):
        kfold_keys(ids, 1, 0)
    with pytest.raises(ValueError):
        kfold_keys(["a", "a~poor"], 2, 0)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fold-phantoms")
    generate(out, builtin_specs(9, 41), 41, "built-in statistical model", workers=1)
    return out


@pytest.fixture(scope="module")
def ensemble(phantoms, tmp_path_factory):
    out = tmp_path_factory.mktemp("fold-weights") / "classifier"
    held = sorted(p.name for p in phantoms.iterdir() if p.is_dir())[0]
    run = ClassifierRun((phantoms,), out, "toy phantoms", exclude=frozenset({held}), overrides=TOY,
                        command="test")
    meta = run_classifier_folds(run, 3, log=lambda s: None)
    return out, meta, held


def test_folds_grade_every_geometry_out_of_fold_and_never_train_on_it(ensemble, phantoms):
    out, meta, held = ensemble
    folds = meta["ensemble"]["fold_geometries"]
    assert meta["ensemble"]["members"] == ["fold1", "fold2", "fold3"]
    all_keys = sorted(p.name for p in phantoms.iterdir() if p.is_dir())
    assert sorted(k for f in folds.values() for k in f) == [k for k in all_keys if k != held]
    assert sorted(meta["cv"]["out_of_fold_grades"]) == [k for k in all_keys if k != held]
    for name, keys in folds.items():
        member = json.loads((out / name / CONFIG_FILE).read_text())
        seen = set(member["training"]["train_ids"]) | set(member["training"]["val_ids"])
        assert not seen & set(keys), f"{name} trained or validated on its own out-of-fold geometries"
        assert held not in seen
        assert (out / name / WEIGHTS_FILE).is_file() and (out / name / "MODEL_CARD.md").is_file()
    cv = meta["cv"]
    for task in ("disc", "canal"):
        lo, hi = cv[task]["interval_95"]
        assert 0.0 <= lo <= hi <= 1.0
        assert cv[task]["n_items"] == len(cv["out_of_fold_grades"]) * (5 if task == "disc" else 11)
    card = (out / "MODEL_CARD.md").read_text()
    assert "3-fold ensemble" in card and "Cross-validated figures" in card and "bootstrap" in card
    assert not (out / WEIGHTS_FILE).exists()   # the folder holds folds, not a network of its own


def test_out_of_fold_score_is_computed_from_the_fold_networks(ensemble, phantoms):
    """Regrade each fold's geometries with its network: the recorded out-of-fold grades are those."""
    out, meta, _ = ensemble
    records = {r.patient_id: r for r in build_dataset(phantoms)}
    for name, keys in meta["ensemble"]["fold_geometries"].items():
        clf = Classifier.load(out / name)
        grades = clf.grade_crops([records[k].crops(clf.cfg) for k in keys])
        for k, g in zip(keys, grades):
            assert meta["cv"]["out_of_fold_grades"][k] == {"disc": list(g.disc_grades), "canal": list(g.canal_grades)}


def test_the_ensemble_averages_its_folds_probabilities(ensemble, phantoms):
    out, meta, _ = ensemble
    ens = Classifier.load(out)
    assert len(ens.models) == 3
    crops = [r.crops(ens.cfg) for r in build_dataset(phantoms)[:4]]
    disc, canal, _ = ens.probabilities(crops, batch_patients=3)
    members = [Classifier.load(out / m).probabilities(crops) for m in meta["ensemble"]["members"]]
    np.testing.assert_allclose(disc, np.mean([m[0] for m in members], axis=0), atol=1e-6)
    np.testing.assert_allclose(canal, np.mean([m[1] for m in members], axis=0), atol=1e-6)
    assert not np.allclose(members[0][1], members[1][1])   # the folds are different networks
    priors = np.exp(np.mean(np.log([json.loads((out / m / CONFIG_FILE).read_text())["config"]["canal_priors"]
                                    for m in meta["ensemble"]["members"]]), axis=0))
    np.testing.assert_allclose(ens.cfg.canal_priors, priors, atol=1e-4)


def test_run_reads_with_the_ensemble_and_the_manifest_lists_every_fold(ensemble, phantoms, tmp_path):
    from pipeline import run_batch
    out, meta, held = ensemble
    root = tmp_path / "weights"
    shutil.copytree(out, root / "classifier")
    shutil.copytree(ROOT / "weights" / "fusion", root / "fusion")
    manifest = json.loads(write_manifest(root).read_text())["files"]
    for m in meta["ensemble"]["members"]:
        assert f"classifier/{m}/{WEIGHTS_FILE}" in manifest
    code = run_batch(phantoms / held, tmp_path / "out", boxes_file=phantoms / "boxes.json", weights_dir=root)
    assert code == 0
    assert json.loads((tmp_path / "out" / "predictions.json").read_text())
    (root / "classifier" / "fold2" / WEIGHTS_FILE).write_bytes(b"changed")   # a changed fold is refused
    assert run_batch(phantoms / held, tmp_path / "out2", boxes_file=phantoms / "boxes.json", weights_dir=root) == 2


def test_warp_crops_shifts_and_scales_about_the_crop_centre():
    x = torch.zeros(1, 1, 1, 32, 32)
    x[..., 16, 16] = 1.0
    same = warp_crops(x, 0.0, 0.0, 1.0)
    torch.testing.assert_close(same, x)
    moved = warp_crops(x, 2 / 32, 0.0, 1.0)   # the crop cut 2 px further right: content moves 2 px left
    assert moved[0, 0, 0].argmax().item() == 16 * 32 + 14
    wide = torch.zeros(1, 1, 1, 32, 32)
    wide[..., 8, :] = 1.0                     # a line 8 px above the centre...
    zoomed = warp_crops(wide, 0.0, 0.0, 0.5)  # ...seen through a crop half as large lies 16 px above it
    assert zoomed[0, 0, 0, :, 16].argmax().item() in (0, 1)


def test_tta_averages_the_views_and_without_it_nothing_changes(ensemble, phantoms):
    out, meta, _ = ensemble
    member = out / meta["ensemble"]["members"][0]
    plain, tta = Classifier.load(member), Classifier.load(member, tta=True)
    crops = [r.crops(plain.cfg) for r in build_dataset(phantoms)[:3]]
    d0, c0, _ = plain.probabilities(crops)
    d1, c1, _ = tta.probabilities(crops)
    sag, ax, has = batch_tensors(crops)
    with torch.no_grad():
        views = [plain.model(warp_crops(sag, *v), warp_crops(ax, *v), has) for v in TTA_VIEWS]
    np.testing.assert_allclose(c1, np.mean([torch.softmax(v["canal"], -1).numpy() for v in views], axis=0), atol=1e-6)
    np.testing.assert_allclose(d1, np.mean([torch.softmax(v["disc"], -1).numpy() for v in views], axis=0), atol=1e-6)
    assert not np.allclose(c0, c1)
    with torch.no_grad():
        ref = plain.model(sag, ax, has)
    np.testing.assert_array_equal(c0, torch.softmax(ref["canal"], -1).numpy())


def test_fusion_cross_validation_reports_out_of_fold_figures_with_bootstrap_intervals():
    """`train fusion --folds K` sets the fusion CV's folds; its first repeat's out-of-fold curvature macro-F1
    and alignment F1(poor) carry 95 % patient-bootstrap intervals (the challenge's definitions)."""
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    from test_fusion_model import TINY, toy_cohort
    from fusion.cv import cross_validate
    from fusion.features import feature_rows, to_matrix
    patients, labels = toy_cohort()
    _, rows, _ = feature_rows(patients)
    names = list(rows[0].keys())
    X = to_matrix(rows, names)
    yc = np.array([lab.curvature for lab in labels])
    ya = np.array([lab.alignment for lab in labels])
    cv = cross_validate(X, yc, ya, names, TINY).summary()
    iv = cv["out_of_fold_interval_95"]
    assert iv["curvature"]["value"] == pytest.approx(cv["curvature_macro_f1"]["per_repeat"][0], abs=1e-4)
    assert iv["alignment"]["value"] == pytest.approx(cv["alignment_poor_f1"]["per_repeat"][0], abs=1e-4)
    for t in ("curvature", "alignment"):
        lo, hi = iv[t]["interval_95"]
        assert lo <= iv[t]["value"] <= hi
    # with errors in the predictions the interval has a width, and the value is the challenge's definition
    from fusion.cv import out_of_fold_intervals
    from evaluation.metrics import macro_f1
    rng = np.random.default_rng(0)
    pc = np.where(rng.random(60) < 0.3, rng.integers(0, 3, 60), yc)
    (t1, v1, lo1, hi1), (t2, v2, lo2, hi2) = out_of_fold_intervals(yc, ya, pc, ya, 0)
    assert (t1, t2) == ("curvature", "alignment") and v2 == lo2 == hi2 == 1.0
    assert v1 == pytest.approx(macro_f1(yc, pc, 3)) and lo1 < v1 < hi1


def test_train_fusion_folds_sets_the_cross_validation_folds(monkeypatch, tmp_path):
    import fusion.train as ftrain
    from release.training import TrainingRun, train_stages
    from study.errors import InputError
    seen = {}
    monkeypatch.setattr(ftrain, "run_fusion", lambda run: seen.setdefault("cfg", run.config))
    data = tmp_path / "ph"
    generate(data, builtin_specs(2, 53), 53, "built-in statistical model", workers=1)
    train_stages(TrainingRun("fusion", (data,), tmp_path / "w", folds=4))
    assert seen["cfg"].cv_folds == 4
    with pytest.raises(InputError, match="at least 2 folds"):
        train_stages(TrainingRun("fusion", (data,), tmp_path / "w", folds=1))


def test_train_classifier_folds_reaches_the_fold_training(monkeypatch, tmp_path):
    import classifier.folds as cfolds
    from click.testing import CliRunner
    from pipeline import cli
    seen = {}
    monkeypatch.setattr(cfolds, "run_classifier_folds", lambda run, k: seen.update(run=run, k=k))
    data = tmp_path / "ph"
    generate(data, builtin_specs(2, 54), 54, "built-in statistical model", workers=1)
    out = tmp_path / "w"
    (out / "classifier").mkdir(parents=True)
    (out / "classifier" / WEIGHTS_FILE).write_bytes(b"an earlier single network")
    res = CliRunner().invoke(cli, ["train", "classifier", "--data", str(data), "--out", str(out), "--folds", "5",
                                   "--epochs", "3"])
    assert res.exit_code == 0, res.output
    assert seen["k"] == 5 and seen["run"].overrides == {"epochs": 3}
    assert "--folds 5" in seen["run"].command
    assert not (out / "classifier" / WEIGHTS_FILE).exists()   # an ensemble folder keeps no stale single network
    res = CliRunner().invoke(cli, ["train", "detector", "--data", str(data), "--out", str(out), "--folds", "5"])
    assert res.exit_code == 2 and "not the detector" in res.output
