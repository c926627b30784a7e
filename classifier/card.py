"""MODEL_CARD.md of a trained classifier, written from the metadata in its classifier.json."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from study.levels import CANAL_GRADES, DISC_GRADES

from .predict import CARD_FILE


def _task_table(task: Mapping[str, object], classes) -> list:
    lines = [f"{task['task']}: **macro-F1 {task['macro_f1']:.3f}**, accuracy {task['accuracy']:.3f}, "
             f"{task['n_items']} decisions", "",
             "| grade | support | precision | recall | F1 |", "| --- | --- | --- | --- | --- |"]
    for c, name in enumerate(classes):
        lines.append(f"| {c} {name} | {task['support'][c]} | {task['precision'][c]:.3f} | {task['recall'][c]:.3f} | "
                     f"{task['f1'][c]:.3f} |")
    lines.append("")
    lines.append(f"Confusion (rows true grade, columns predicted): {task['confusion']}")
    lines.append("")
    return lines


def _evaluation_sections(title: str, evaluations) -> list:
    """The card's held-out figures: under `title`, a disc and a canal table per evaluated data set."""
    lines = [title, ""]
    for ev in evaluations:
        lines += [f"### {ev['data']} ({ev['n_patients']} patients)", ""]
        lines += _task_table(ev["disc"], DISC_GRADES)
        lines += _task_table(ev["canal"], CANAL_GRADES)
    return lines


def pretrained_line(start) -> str:
    """The card's line on how the backbones started: random weights, or a named file and its sha256."""
    if not start:
        return "- Backbones started from random weights (no `--pretrained` file)."
    parts = []
    for which, b in start["backbones"].items():
        extra = (f", head keys set aside: {', '.join(b['head_keys_dropped'])}" if b["head_keys_dropped"] else "") + (
            f", input channels adapted: {', '.join(b['input_channels_adapted'])}" if b["input_channels_adapted"] else "")
        parts.append(f"{which} {b['tensors']} tensors{extra}")
    return (f"- Backbones started from the pretrained file `{start['file']}` (sha256 `{start['sha256']}`, loaded "
            f"offline, strict key and shape checks): {'; '.join(parts)}.")


def model_card_text(meta: Mapping[str, object]) -> str:
    cfg = meta["config"]
    tr = meta["training"]
    val = meta.get("validation", {})
    lines = [
        "# Classifier: disc grade (5 discs) and central canal grade (11 positions)",
        "",
        "Two timm backbones (`{}` on 2.5D sagittal crops, slices 5/6/7 as channels, {} px; `{}` on the axial crop "
        "around the canal, {} px), fused with a level embedding and an axial-present flag; heads for the canal "
        "grade at every position and the disc grade at the five disc positions. Context across a patient's "
        "levels: `{}`. A missing axial image is replaced by a learned vector (trained with axial dropout {}).".format(
            cfg["sag_backbone"], cfg["sag_size"], cfg["ax_backbone"], cfg["ax_size"], cfg["context"],
            cfg["axial_dropout"]),
        "",
        "## Data",
        f"- Trained on: {tr['data']}.",
        f"- {tr['train_patients']} training patients ({tr['train_renders']} renders), {tr['val_patients']} validation "
        f"patients ({tr['val_renders']} renders) for early stopping and prior tuning; split by patient id, "
        "stratified on disc extrusion, canal grade 3 and disc bulge" + (
            f"; {tr['val_extra']['renders']} of the validation renders are {tr['val_extra']['data']} "
            "(never trained on)." if tr.get("val_extra") else "."),
        pretrained_line(tr.get("pretrained")),
        f"- Class weights of the loss ((1/frequency)^{cfg['class_weight_power']}): disc "
        f"{[round(x, 3) for x in tr['disc_class_weights']]}, canal {[round(x, 3) for x in tr['canal_class_weights']]}.",
        "",
        "## Validation (the split used for early stopping and prior tuning; optimistic)",
        f"- Best epoch {tr['best_epoch']} of {tr['epochs_run']}: disc macro-F1 {val.get('disc_f1_tuned', float('nan')):.3f} "
        f"(argmax {val.get('disc_f1_argmax', float('nan')):.3f}), canal macro-F1 "
        f"{val.get('canal_f1_tuned', float('nan')):.3f} (argmax {val.get('canal_f1_argmax', float('nan')):.3f}).",
        f"- Class prior multipliers applied to the probabilities: disc {[round(x, 3) for x in cfg['disc_priors']]}, "
        f"canal {[round(x, 3) for x in cfg['canal_priors']]}.",
        "",
    ]
    evaluations = meta.get("evaluations") or []
    if evaluations:
        lines += _evaluation_sections(
            "## Held-out figures (patients never used for training, early stopping or tuning)", evaluations)
    else:
        lines += ["## Held-out figures", "", "None recorded for these weights.", ""]
    notes = meta.get("notes") or []
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += [
        "## Limits",
        "- Phantom data only: the images are rendered by `synth/` from real CervAI geometry and labels; no real MRI "
        "grades were available, so nothing here says how the model does on real scans.",
        "- Crops follow the given level boxes; wrong boxes give wrong crops (see `dump-crops` contact sheets).",
        "",
        "## Provenance",
        f"- Seed {tr['seed']}; {tr['seconds'] / 60:.1f} min on {tr['device']} with {tr['threads']} threads; git commit "
        f"{tr['git_commit']}; torch {tr['torch']}, timm {tr['timm']}, Python {tr['python']}.",
        f"- Weights sha256 `{meta.get('weights_sha256')}` (classifier.pt: plain state_dict, "
        "`torch.load(..., weights_only=True)`). `classifier.torchscript`: the same network traced, bound to that "
        "sha256; `run` loads it on the CPU so it needs no timm (`common/traced.py`).",
        "- Full config: `classifier.json` → `config`; per-epoch history: `classifier.json` → `history`.",
        "",
        "## Retrain",
        "```",
        meta.get("command", "python -m classifier train --data DIR --out DIR"),
        "```",
        "",
    ]
    return "\n".join(lines)


def write_model_card(weights_dir: Path, meta: Mapping[str, object]) -> Path:
    path = Path(weights_dir) / CARD_FILE
    path.write_text(model_card_text(meta), encoding="utf-8")
    return path


def ensemble_card_text(meta: Mapping[str, object]) -> str:
    """MODEL_CARD.md of a K-fold ensemble (classifier.folds): its folds, the cross-validated figures, the
    held-out figures of the averaged networks."""
    cfg, tr, ens, cv = meta["config"], meta["training"], meta["ensemble"], meta["cv"]
    k = ens["folds"]
    lines = [
        f"# Classifier: a {k}-fold ensemble (disc grade at 5 discs, central canal grade at 11 positions)",
        "",
        f"{k} networks of the same design (`{cfg['sag_backbone']}` sagittal, `{cfg['ax_backbone']}` axial; each "
        f"fold's own card in `{ens['members'][0]}/MODEL_CARD.md` ...), each trained without one fold of the "
        f"geometries. `run` grades with the {ens['rule']}. Priors applied: disc {cfg['disc_priors']}, canal {cfg['canal_priors']}.",
        "",
        "## Data and folds",
        f"- Trained on: {tr['data']}: {tr['geometries']} geometries ({tr['renders']} renders), dealt into {k} "
        "patient-level folds (every render and label variant of a geometry in one fold; stratified on disc "
        "extrusion, canal grade 3 and disc bulge). Each fold's network early-stops and tunes its priors on a "
        "validation split of its own training folds.",
        pretrained_line(tr.get("pretrained")),
        "",
        f"## Cross-validated figures (out of fold: each of the {cv['n_patients']} geometries graded by the network "
        "that never saw it, one render each, its own labels)",
        "",
        "| task | macro-F1 | 95 % bootstrap interval (patients resampled) | decisions |",
        "| --- | --- | --- | --- |",
    ]
    for task in ("disc", "canal"):
        t = cv[task]
        lines.append(f"| {task} | **{t['macro_f1']:.3f}** | {t['interval_95'][0]:.3f}-{t['interval_95'][1]:.3f} | "
                     f"{t['n_items']} |")
    lines += ["", "| fold | geometries | disc macro-F1 | canal macro-F1 |", "| --- | --- | --- | --- |"]
    lines += [f"| {f['fold']} | {f['geometries']} | {f['disc_macro_f1']:.3f} | {f['canal_macro_f1']:.3f} |"
              for f in cv["per_fold"]]
    lines += ["", "These are the grade parts of the challenge score (0.3 disc + 0.3 canal); curvature and "
              "alignment are the fusion stage's (its card holds their cross-validated figures).", ""]
    evaluations = meta.get("evaluations") or []
    if evaluations:
        lines += _evaluation_sections("## Held-out figures of the ensemble (geometries no fold trained on)",
                                      evaluations)
    notes = meta.get("notes") or []
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Provenance",
              f"- Seed {tr['seed']}; all folds {tr['seconds'] / 60:.1f} min on {tr['device']} with {tr['threads']} "
              f"threads; git commit {tr['git_commit']}; torch {tr['torch']}, timm {tr['timm']}, Python {tr['python']}.",
              "- Each fold's weights and sha256: its own `classifier.json`; all of them are in the weights' "
              "MANIFEST.json.", "", "## Retrain", "```", meta.get("command", ""), "```", ""]
    return "\n".join(lines)


def write_ensemble_card(weights_dir: Path, meta: Mapping[str, object]) -> Path:
    path = Path(weights_dir) / CARD_FILE
    path.write_text(ensemble_card_text(meta), encoding="utf-8")
    return path
