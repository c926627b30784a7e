"""MODEL_CARD.md for a trained fusion model, written from the metadata saved beside its weights."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from study.levels import ALIGNMENT_CLASSES, CURVATURE_CLASSES


def _ms(d: Mapping[str, object], key: str) -> str:
    v = d.get(key) if d else None
    if not v:
        return "not run"
    return f"{v['mean']:.3f} ± {v['sd']:.3f} (per repeat: {', '.join(f'{x:.3f}' for x in v['per_repeat'])})"


def _box_source_lines(meta: Mapping[str, object]) -> list:
    rows = meta.get("box_sources")
    if not rows:
        return []
    out = ["## Box sources (paired CV: trained on ground-truth boxes, held-out folds from another source)",
           "Same folds and seeds as above; delta = per-repeat curvature macro-F1 minus the ground-truth one.",
           "",
           "| box source | declared padding px | max abs feature diff (column units) | curvature macro-F1 | delta | poor-alignment F1 |",
           "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        c, d, a = r["curvature_macro_f1"], r["curvature_delta"], r["alignment_poor_f1"]
        out.append(f"| {r['name']} | {r['padding_px']:g} | {r['max_abs_feature_diff']:.3g} | "
                   f"{c[0]:.3f} ± {c[1]:.3f} | {d[0]:+.3f} ± {d[1]:.3f} | {a[0]:.3f} ± {a[1]:.3f} |")
    out.append("")
    return out


def _image_head_lines(meta: Mapping[str, object]) -> list:
    head = meta.get("image_alignment")
    if not head:
        return ["## Image alignment head", "Not trained: alignment comes from the geometry model above.", ""]
    cv = head.get("cv") or {}
    out = ["## Image alignment head (used by `run`, where the sagittal images are available)",
           "A third booster (`alignment_image.lgb.txt`) on the geometry columns plus the posterior-wall steps and body displacements",
           "measured on the image (`fusion.image_features`). It applies when those image columns are finite, and",
           "reports then name it as the alignment source; otherwise the geometry model above decides.",
           f"- Trained on: {head.get('data')}; {head.get('n_rows')} renders of {head.get('n_geometries')} geometries, "
           f"{head.get('n_poor')} with poor alignment (phantom data: the phantom draws poor alignment as a "
           "2.8-4.2 mm listhesis step).",
           f"- Boxes the head learned and is scored with: {head.get('boxes', 'the phantoms measured boxes')}.",
           f"- Geometries excluded (evaluation hold-out): {head.get('excluded_geometries', 0)}.",
           f"- Threshold tuned for the poor-class F1 at the real prevalence {head.get('prevalence')} "
           f"(inner grouped out-of-fold scores): poor when the score >= {head.get('threshold', float('nan')):.4f}."]
    if cv:
        out += [f"- Grouped CV ({cv['n_repeats']} repeats x {cv['n_folds']} folds, all renders of a geometry in one "
                "fold, threshold tuned inside each training part):",
                f"  - poor-class F1 weighted to prevalence {cv['prevalence']}: {_ms(cv, 'poor_f1_at_prevalence')}",
                f"  - poor-class F1 on the phantom mix ({cv['n_poor']} of {cv['n_rows']} poor): "
                f"{_ms(cv, 'poor_f1_phantom_mix')}",
                f"  - AUC: {_ms(cv, 'auc')}"]
    for name, ev in (head.get("evaluations") or {}).items():
        out.append(f"- {name}: {ev['n']} patients, {ev['n_poor']} poor; poor-class F1 {ev['poor_f1']:.3f}"
                   + (f" (weighted to the real prevalence {ev['poor_f1_at_prevalence']:.3f})"
                      if "poor_f1_at_prevalence" in ev else "")
                   + (f", AUC {ev['auc']:.3f}" if ev.get("auc") is not None else "")
                   + f"; called poor {ev['called_poor']}, of them truly poor "
                   f"{ev['true_poor_called']}.")
    out.append("")
    return out


def _oof_interval_lines(cv) -> list:
    """The first repeat's out-of-fold figures with their 95 % patient-bootstrap intervals, where recorded."""
    iv = cv.get("out_of_fold_interval_95") or {}
    return [f"- Out of fold, first repeat, with the 95 % bootstrap interval over the patients: {t} "
            f"{v['value']:.3f} ({v['interval_95'][0]:.3f}-{v['interval_95'][1]:.3f})" for t, v in iv.items()]


def model_card_text(meta: Mapping[str, object]) -> str:
    cfg = meta.get("config", {})
    cv = meta.get("cv") or {}
    priors = ", ".join(f"{c} ×{w:.2f}" for c, w in zip(CURVATURE_CLASSES, meta.get("curvature_priors", [])))
    counts_c = ", ".join(f"{c} {n}" for c, n in zip(CURVATURE_CLASSES, meta.get("curvature_counts", [])))
    counts_a = ", ".join(f"{c} {n}" for c, n in zip(ALIGNMENT_CLASSES, meta.get("alignment_counts", [])))
    skipped = meta.get("skipped_patients") or {}
    lines = [
        "# Fusion model: cervical curvature and alignment from C2-C7 geometry",
        "",
        "Two LightGBM boosters (text format, no pickle) on the named columns of `fusion.geometry.curve_features`",
        "(plus any extra columns listed in `fusion.json`): curvature (3 classes: "
        f"{', '.join(CURVATURE_CLASSES)}) and alignment (poor vs acceptable).",
        "",
        "## Data",
        f"- Trained on: {meta.get('data')}; {meta.get('n_patients')} patients "
        f"(curvature: {counts_c}; alignment: {counts_a}).",
        f"- boxes sha256 `{meta.get('boxes_sha256')}`, labels sha256 `{meta.get('labels_sha256')}`.",
        f"- Patients left out (unusable boxes): {len(skipped)}"
        + ("".join(f"\n  - {pid}: {why}" for pid, why in skipped.items()) if skipped else "."),
        f"- Box convention: boxes carry {meta.get('box_padding_px'):g} px padding on every side (the challenge's",
        "  \"expanded by 3 px\"); it is stripped before measuring. Other box sources must say their padding.",
        "",
        "## Cross-validation (repeated stratified, nested tuning)",
        f"- {cv.get('n_repeats', 0)} repeats × {cv.get('n_folds', 0)} folds, stratified on curvature × alignment;",
        "  class priors (curvature) and the poor-alignment threshold are tuned on inner out-of-fold scores of",
        "  each outer training part only; the reported folds are never used for tuning.",
        f"- Curvature macro-F1: {_ms(cv, 'curvature_macro_f1')}",
        f"- Curvature macro-F1 with plain argmax (no prior tuning): {_ms(cv, 'curvature_macro_f1_untuned')}",
        f"- Baseline, two cut-points on the curvature index fitted for macro-F1 on each training part (the",
        f"  phantom's curvature definition; same folds): {_ms(cv, 'curvature_cut_rule_macro_f1')}",
        f"- Alignment F1 of class 0 (poor): {_ms(cv, 'alignment_poor_f1')}; mean sd over the folds inside a",
        f"  repeat {cv.get('alignment_poor_f1_fold_sd_mean', 'n/a')}",
        f"- Alignment AUC (poor vs acceptable): {_ms(cv, 'alignment_auc')}",
        *_oof_interval_lines(cv),
        f"- Curvature confusion summed over repeats (rows truth, columns prediction, order "
        f"{', '.join(CURVATURE_CLASSES)}): {cv.get('curvature_confusion')}",
        "",
        *_box_source_lines(meta),
        *_image_head_lines(meta),
        "## Shipped decision rules (tuned on inner out-of-fold scores of all training patients)",
        f"- Curvature prior multipliers: {priors}",
        f"- Alignment: poor when its score >= {meta.get('alignment_threshold', float('nan')):.4f}",
        "",
        "## Settings and provenance",
        f"- Config: {dict(cfg)}",
        f"- LightGBM {meta.get('lightgbm_version')}; git commit {meta.get('git_commit')}; "
        f"format version {meta.get('format_version')}.",
        "",
        "## Retrain",
        "The command that wrote this model:",
        "```",
        str(meta.get("command") or "python -m fusion.train --boxes BOXES --labels LABELS --out DIR"),
        "```",
        "",
        *(["## Notes", *[f"- {n}" for n in meta["notes"]], ""] if meta.get("notes") else []),
        "## Limits",
        "- Boxes only (the `geometry` command): alignment is barely visible in axis-aligned boxes; expect a low",
        "  poor-class F1. The image head sees the step, but it learned from phantoms only (no real images here).",
        "- Angles assume square pixels; mm columns exist only with known spacing and are not model inputs here.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(out_dir: Path, meta: Mapping[str, object]) -> None:
    path = Path(out_dir) / "MODEL_CARD.md"
    tmp = path.with_name(".MODEL_CARD.md.tmp")
    tmp.write_text(model_card_text(meta), encoding="utf-8")
    tmp.replace(path)
