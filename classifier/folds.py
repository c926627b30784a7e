"""`train classifier --folds K`: K patient-level folds, a cross-validated score from out-of-fold grades, an ensemble.

The geometries outside the evaluation hold-out are dealt into K folds (study.splits.kfold_keys, stratified on
the rare findings like the validation split): every render and label variant of a geometry stays in its
fold. Fold i's network trains on the other K-1 folds exactly as one classifier trains (classifier.train: its
own validation split of those folds for early stopping and prior tuning, plus --val-data), and grades fold i,
which it never saw: the out-of-fold grades of every geometry (one render each, the first --data folder that
has it, its own labels) give the cross-validated disc and canal macro-F1 with bootstrap intervals over the
patients (evaluation.metrics.bootstrap_tasks). The priors each fold tuned on its own validation split are used
as they are, so nothing is tuned on the out-of-fold grades.

The weights folder holds fold1/ ... foldK/ (each a complete classifier folder) and a classifier.json naming
them as an ensemble: `run` averages the K networks' softmax outputs (Classifier.probabilities) and applies
the geometric mean of the folds' class priors.
"""
from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

from common.config import load_config
from common.files import write_json_atomic
from evaluation.metrics import bootstrap_tasks, challenge_score
from study.challenge import PatientLabels
from study.splits import kfold_keys, split_key

from .config import ClassifierConfig
from .data import PatientRecord
from .predict import CONFIG_FILE, FORMAT_VERSION, Classifier
from .recipe import ClassifierRun, heldout_evaluations, load_run_data



def fold_name(i: int) -> str:
    return f"fold{i}"


def one_render_per_geometry(records: List[PatientRecord], keys) -> List[PatientRecord]:
    """For each key, the first record rendering the geometry with its own labels (id == key), in key order."""
    first: Dict[str, PatientRecord] = {}
    for r in records:
        if r.patient_id == split_key(r.patient_id) and r.patient_id in keys:
            first.setdefault(r.patient_id, r)
    return [first[k] for k in sorted(first)]


def grades_as_labels(truth: PatientLabels, disc, canal) -> PatientLabels:
    """The truth with its grades replaced: scoring it leaves curvature and alignment perfect, so only the
    disc and canal tasks of the score report mean anything."""
    return replace(truth, disc_grades=tuple(int(g) for g in disc), canal_grades=tuple(int(g) for g in canal))


def cross_validated_grades(truth: List[PatientLabels], pred: List[PatientLabels], seed: int = 0) -> Dict[str, object]:
    """Disc and canal macro-F1 of out-of-fold grades, with 95 % bootstrap intervals over the patients."""
    rep = challenge_score(truth, pred)
    ci = bootstrap_tasks(truth, pred, seed=seed)
    out: Dict[str, object] = {"n_patients": len(truth)}
    for task in ("disc", "canal"):
        t = rep.task(task)
        out[task] = {"macro_f1": round(t.value, 4), "interval_95": [round(v, 4) for v in ci[task]],
                     "n_items": t.n_items}
    return out


def run_classifier_folds(run: ClassifierRun, folds: int, log: Callable[[str], None] = print) -> dict:
    """Train `folds` fold networks into run.out_dir/fold{i}/, score them out of fold, write the ensemble's
    classifier.json and card. Returns the ensemble's metadata."""
    from .card import write_model_card, write_ensemble_card
    from .train import rare_findings, train as run_train, training_label_prior
    if run.holdout:
        raise ValueError("--folds replaces the fraction hold-out: give the evaluation hold-out with exclude")
    t0 = time.perf_counter()
    cfg = load_config(ClassifierConfig, overrides=dict(run.overrides))
    records, candidates, extra_val, name = load_run_data(run)
    candidates = [r for r in candidates if r.labels is not None]
    fold_keys = kfold_keys([r.patient_id for r in candidates], folds, cfg.seed, rare_findings(candidates))
    held = set(run.exclude) & {split_key(r.patient_id) for r in records}
    out_dir = Path(run.out_dir)
    command = run.command or "python -m classifier " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    val_name = run.val_name or ", ".join(str(d) for d in run.val_dirs)
    truth, pred, per_fold, members, fold_priors = [], [], [], [], []
    for i, keys in enumerate(fold_keys, 1):
        ks = set(keys)
        train_recs = [r for r in candidates if split_key(r.patient_id) not in ks]
        member = out_dir / fold_name(i)
        log(f"fold {i}/{folds}: train on {len({split_key(r.patient_id) for r in train_recs})} geometries, "
            f"grade the {len(keys)} of this fold out of fold")
        run_train(train_recs, member, cfg, device=run.device, log=log,
                  data_name=f"{name} (fold {i} of {folds}: without its {len(keys)} geometries)",
                  extra_val_records=extra_val, extra_val_name=val_name, pretrained=run.pretrained)
        clf = Classifier.load(member, run.device)
        test = one_render_per_geometry(candidates, ks)
        grades = clf.grade_crops([r.crops(clf.cfg) for r in test])
        fold_truth = [r.labels for r in test]
        fold_pred = [grades_as_labels(r.labels, g.disc_grades, g.canal_grades) for r, g in zip(test, grades)]
        truth += fold_truth
        pred += fold_pred
        rep = challenge_score(fold_truth, fold_pred)
        per_fold.append({"fold": i, "geometries": len(keys), "graded": len(test),
                         "disc_macro_f1": round(rep.task("disc").value, 4),
                         "canal_macro_f1": round(rep.task("canal").value, 4)})
        meta = json.loads((member / CONFIG_FILE).read_text(encoding="utf-8"))
        meta.update({"fold": {"index": i, "of": folds, "held_out_geometries": sorted(ks)},
                     "holdout_ids": sorted(held | ks), "command": command, "notes": list(run.notes)})
        write_json_atomic(member / CONFIG_FILE, meta)
        write_model_card(member, meta)
        members.append(fold_name(i))
        fold_priors.append((meta["config"]["disc_priors"], meta["config"]["canal_priors"]))
        log(f"fold {i}: out of fold disc macro-F1 {per_fold[-1]['disc_macro_f1']:.3f}, "
            f"canal {per_fold[-1]['canal_macro_f1']:.3f}")
    cv = cross_validated_grades(truth, pred, cfg.seed)
    cv["per_fold"] = per_fold
    cv["out_of_fold_grades"] = {p.patient_id: {"disc": list(p.disc_grades), "canal": list(p.canal_grades)}
                                for p in pred}

    def geometric_mean(rows) -> List[float]:
        return [round(float(v), 4) for v in np.exp(np.mean(np.log(np.asarray(rows, float)), axis=0))]
    first = json.loads((out_dir / members[0] / CONFIG_FILE).read_text(encoding="utf-8"))
    ens_cfg = cfg.replace(disc_priors=geometric_mean([p[0] for p in fold_priors]),
                          canal_priors=geometric_mean([p[1] for p in fold_priors]))
    meta = {
        "format_version": FORMAT_VERSION,
        "config": ens_cfg.to_dict(),
        "ensemble": {"members": members, "folds": folds, "rule": "mean of the members' softmax outputs; class "
                     "priors: geometric mean of the members' priors (each tuned on its own validation split)",
                     "fold_geometries": {fold_name(i): keys for i, keys in enumerate(fold_keys, 1)}},
        "positions": first["positions"], "discs": first["discs"],
        "disc_classes": first["disc_classes"], "canal_classes": first["canal_classes"],
        "input": first["input"],
        "training": {"data": name, "geometries": len({split_key(r.patient_id) for r in candidates}),
                     "renders": len(candidates), "seconds": round(time.perf_counter() - t0, 1),
                     "device": first["training"]["device"], "threads": cfg.threads, "seed": cfg.seed,
                     "pretrained": first["training"].get("pretrained"), "git_commit": first["training"]["git_commit"],
                     "torch": first["training"]["torch"], "timm": first["training"]["timm"],
                     "python": first["training"]["python"]},
        "cv": cv,
        "label_prior": training_label_prior(candidates, name),
        "holdout_ids": sorted(held),
        "notes": list(run.notes),
        "command": command,
    }
    write_json_atomic(out_dir / CONFIG_FILE, meta)
    log(f"cross-validated ({folds} folds, {cv['n_patients']} geometries out of fold): disc macro-F1 "
        f"{cv['disc']['macro_f1']:.3f} {cv['disc']['interval_95']}, canal {cv['canal']['macro_f1']:.3f} "
        f"{cv['canal']['interval_95']}")
    ensemble = Classifier.load(out_dir, run.device)
    train_keys = {split_key(r.patient_id) for r in candidates}
    meta["evaluations"] = heldout_evaluations(ensemble, records, run.data_dirs, run.test_dirs, train_keys, held, log)
    write_json_atomic(out_dir / CONFIG_FILE, meta)
    log(f"wrote {write_ensemble_card(out_dir, meta)}")
    return meta
