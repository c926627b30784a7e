"""`python -m classifier train | evaluate | dump-crops`: the classifier's own command line."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import click

from common.files import write_json_atomic
from study.errors import InputError
from study.splits import split_key

from .config import ClassifierConfig
from .data import build_dataset
from .predict import CONFIG_FILE, DEFAULT_WEIGHTS, Classifier
from .recipe import ClassifierRun, describe_folder, evaluate_records, run_classifier


def parse_overrides(items: Sequence[str]) -> Dict[str, object]:
    """KEY=VALUE pairs, VALUE read as JSON when it parses (numbers, lists), else as a string."""
    out: Dict[str, object] = {}
    for item in items:
        if "=" not in item:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def load_classifier(weights_dir: Path) -> Tuple[Path, Classifier]:
    """The classifier of a classifier weights folder, or of a weights root holding one in classifier/.

    A folder holding neither is a usage error (click prints it), not a traceback.
    """
    weights_dir = Path(weights_dir)
    if not (weights_dir / CONFIG_FILE).is_file() and (weights_dir / "classifier" / CONFIG_FILE).is_file():
        weights_dir = weights_dir / "classifier"
    try:
        return weights_dir, Classifier.load(weights_dir)
    except (FileNotFoundError, ValueError) as e:
        raise click.BadParameter(str(e), param_hint="--weights") from e


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Classifier stage: per-level disc and canal grades."""


@cli.command()
@click.option("--data", "data_dirs", multiple=True, required=True, type=click.Path(path_type=Path, exists=True),
              help="Training folder (challenge layout with labels.json and boxes.json); repeatable.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Weights folder to write.")
@click.option("--data-name", default=None, help="How the model card names the training data.")
@click.option("--holdout", type=float, default=0.0, show_default=True,
              help="Fraction of patient ids held out of training and reported as test figures.")
@click.option("--exclude", "exclude_file", type=click.Path(path_type=Path, exists=True), default=None,
              help="holdout.json (study.splits): geometries never trained on, scored as held out.")
@click.option("--test", "test_dirs", multiple=True, type=click.Path(path_type=Path, exists=True),
              help="Extra test folder; where it shares patient ids with --data only the held-out ids count.")
@click.option("--val-data", "val_dirs", multiple=True, type=click.Path(path_type=Path, exists=True),
              help="Labelled folder never trained on that joins the validation set (early stopping and class "
                   "priors), e.g. built-in phantoms; repeatable.")
@click.option("--val-name", default=None, help="How the model card names --val-data.")
@click.option("--set", "overrides", multiple=True, help="Config override KEY=VALUE (JSON value); repeatable.")
@click.option("--note", "notes", multiple=True, help="A line for the model card's notes; repeatable.")
@click.option("--device", default=None, help="torch device (default: cuda when present, else cpu).")
@click.option("--pretrained", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="A local timm state dict or checkpoint both backbones start from (read offline, strict checks).")
@click.option("--folds", type=click.IntRange(0), default=0,
              help="K >= 2: train a K-fold ensemble (fold1..foldK) and record the cross-validated score.")
def train(data_dirs, out_dir, data_name, holdout, exclude_file, test_dirs, val_dirs, val_name, overrides, notes,
          device, pretrained, folds):
    """Train, early-stop on validation macro-F1, tune priors, then write weights, config and MODEL_CARD.md."""
    from study.splits import read_holdout
    exclude = read_holdout(exclude_file) if exclude_file else set()
    if folds == 1:
        raise click.BadParameter("needs at least 2 folds", param_hint="--folds")
    run = ClassifierRun(tuple(data_dirs), out_dir, data_name, holdout, frozenset(exclude), tuple(test_dirs),
                        parse_overrides(overrides), tuple(notes), device, val_dirs=tuple(val_dirs),
                        val_name=val_name, pretrained=pretrained)
    try:
        if folds:
            from .folds import run_classifier_folds
            run_classifier_folds(run, folds, log=click.echo)
        else:
            run_classifier(run, log=click.echo)
    except InputError as e:
        raise click.ClickException(str(e)) from None


@cli.command()
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path, exists=True),
              help="Folder with labels.json and boxes.json.")
@click.option("--weights", "weights_dir", type=click.Path(path_type=Path), default=DEFAULT_WEIGHTS, show_default=True,
              help="Classifier weights folder, or a weights folder holding one in classifier/.")
@click.option("--name", default=None, help="How the report names the data (default: from its phantom.json).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Write the report as JSON.")
@click.option("--record", is_flag=True, help="Also add the figures to the weights' classifier.json and model card.")
@click.option("--tta", is_flag=True, help="Grade with test-time augmentation (as `run --tta`).")
@click.option("--only", "only_file", type=click.Path(path_type=Path, exists=True), default=None,
              help="holdout.json: grade only its geometries (e.g. the evaluation hold-out's renders).")
def evaluate(data_dir, weights_dir, name, json_out, record, tta, only_file):
    """Per-class disc and canal figures of a weights folder on a labelled folder."""
    from .card import write_ensemble_card, write_model_card
    weights_dir, classifier = load_classifier(weights_dir)
    classifier.tta = tta
    records = [r for r in build_dataset(data_dir) if r.patient_id == split_key(r.patient_id)]
    if only_file:
        from study.splits import read_holdout
        only = read_holdout(only_file)
        records = [r for r in records if r.patient_id in only]
    report = evaluate_records(classifier, records, (name or describe_folder(data_dir)) +
                              (", test-time augmentation" if tta else ""))
    click.echo(report.text())
    if json_out:
        write_json_atomic(json_out, report.to_dict())
    if record:
        meta_path = Path(weights_dir) / CONFIG_FILE
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta["evaluations"] = [e for e in meta.get("evaluations", []) if e["data"] != report.data] + [report.to_dict()]
        write_json_atomic(meta_path, meta)
        card = (write_ensemble_card if meta.get("ensemble") else write_model_card)(weights_dir, meta)
        click.echo(f"recorded in {meta_path} and {card}")


@cli.command("dump-crops")
@click.option("--input", "input_dir", required=True, type=click.Path(path_type=Path, exists=True),
              help="Folder of patients (challenge layout).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Folder for PNGs.")
@click.option("--boxes", "boxes_file", type=click.Path(path_type=Path), default=None,
              help="Box file (default: INPUT/boxes.json).")
@click.option("--labels", "labels_file", type=click.Path(path_type=Path), default=None,
              help="Label file to print true grades (default: INPUT/labels.json when present).")
@click.option("--weights", "weights_dir", type=click.Path(path_type=Path), default=None,
              help="Classifier weights (its folder, or a weights folder holding classifier/) to grade with "
                   "(default: the shipped weights when present).")
@click.option("--limit", type=int, default=None, help="At most this many patients.")
def dump_crops(input_dir, out_dir, boxes_file, labels_file, weights_dir, limit):
    """Every crop as PNG ({patient}_{position}_{view}.png) and a contact sheet per patient."""
    from .dump import dump_patient
    weights: Optional[Path] = weights_dir or (DEFAULT_WEIGHTS if (DEFAULT_WEIGHTS / CONFIG_FILE).exists() else None)
    classifier = load_classifier(weights)[1] if weights else None
    cfg = classifier.cfg if classifier else ClassifierConfig()
    records = build_dataset(input_dir, labels_file, boxes_file, limit=limit)
    for r in records:
        crops = r.crops(cfg)
        grades = classifier.grade_crops([crops])[0] if classifier else None
        click.echo(dump_patient(out_dir, crops, r.study, grades, r.labels))


def main() -> None:
    cli()
