"""`python -m classifier train | evaluate | dump-crops`: the classifier's own command line."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

import click

from study.challenge import write_json_atomic
from study.errors import InputError

from .config import ClassifierConfig
from .data import PatientRecord, build_dataset
from .predict import CONFIG_FILE, DEFAULT_WEIGHTS, Classifier
from study.splits import split_key
from .report import GradeReport, grade_report


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


def describe_folder(folder: Path) -> str:
    """How a report names a data folder: the phantom's own description (phantom.json) when it has one."""
    try:
        meta = json.loads((Path(folder) / "phantom.json").read_text(encoding="utf-8"))
        return f"phantom ({meta['mode']}), seed {meta['seed']}"
    except (OSError, ValueError, KeyError, TypeError):
        return Path(folder).name


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


def evaluate_records(classifier: Classifier, records: Sequence[PatientRecord], data: str) -> GradeReport:
    grades = classifier.grade_crops([r.crops(classifier.cfg) for r in records])
    return grade_report(data, grades, [r.labels for r in records])


def fraction_holdout(records: Sequence[PatientRecord], fraction: float, seed: int) -> Tuple[Set[str], Set[str]]:
    """Patient ids kept for training and held out for testing (stratified like the validation split)."""
    from .train import split_patients
    if fraction <= 0:
        return {split_key(r.patient_id) for r in records}, set()
    keep, held = split_patients(records, fraction, seed + 1000)
    return set(keep), set(held)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Classifier stage: per-level disc and canal grades."""


def train_and_evaluate(data_dirs: Sequence[Path], out_dir: Path, data_name: Optional[str] = None,
                       holdout: float = 0.0, exclude: Set[str] = frozenset(), test_dirs: Sequence[Path] = (),
                       overrides: Optional[Dict[str, object]] = None, notes: Sequence[str] = (),
                       device: Optional[str] = None, command: str = "",
                       data_files: Optional[Dict[Path, Tuple[Path, Path]]] = None,
                       val_dirs: Sequence[Path] = (), val_name: Optional[str] = None) -> dict:
    """Train on the folders, then score held-out geometries and write the figures into the card.

    holdout: a fraction of the geometries drawn here and held out; exclude: geometry ids held out by the
    caller (the evaluation hold-out of study.splits), scored as "evaluation hold-out".
    data_files: folder -> (labels file, boxes file) where they are not the folder's labels.json/boxes.json.
    val_dirs: labelled folders never trained on that join the validation set (early stopping and priors);
    they may share no geometry with the training data or with `exclude`.
    Returns the classifier.json metadata written.
    """
    from .card import write_model_card
    from .train import train as run_train
    cfg = ClassifierConfig.from_dict(dict(overrides or {}))
    data_files = data_files or {}
    records: List[PatientRecord] = []
    for d in data_dirs:
        records += build_dataset(d, *data_files.get(d, (None, None)))
    candidates = [r for r in records if split_key(r.patient_id) not in exclude]
    keep, held = fraction_holdout(candidates, holdout, cfg.seed)
    held = set(held) | (set(exclude) & {split_key(r.patient_id) for r in records})
    train_recs = [r for r in candidates if split_key(r.patient_id) in keep]
    name = data_name or ", ".join(str(d) for d in data_dirs)
    extra_val: List[PatientRecord] = []
    for d in val_dirs:
        extra_val += build_dataset(d)
    in_holdout = [r for r in extra_val if split_key(r.patient_id) in exclude]
    if in_holdout:
        raise InputError(f"validation data holds {len({split_key(r.patient_id) for r in in_holdout})} geometries of "
                         f"the evaluation hold-out (e.g. {in_holdout[0].patient_id}); nothing may be tuned on them",
                         path=in_holdout[0].source)
    run_train(train_recs, out_dir, cfg, device=device, data_name=name, extra_val_records=extra_val,
              extra_val_name=val_name or ", ".join(describe_folder(d) for d in val_dirs))

    classifier = Classifier.load(out_dir, device)
    train_keys = {split_key(r.patient_id) for r in train_recs}
    folders = [(d, [r for r in records if r.source == str(d)]) for d in data_dirs] + \
        [(d, build_dataset(d)) for d in test_dirs]
    evaluations, pooled = [], []
    for d, recs in folders:
        shared = bool({split_key(r.patient_id) for r in recs} & train_keys)
        # Geometries with their real labels only (label variants are not scored); where the folder
        # renders training geometries, only the held-out ones.
        recs = [r for r in recs if r.patient_id == split_key(r.patient_id) and (not shared or r.patient_id in held)]
        if not recs:
            continue
        evaluations.append(evaluate_records(classifier, recs, describe_folder(d) + (
            ", held-out patients" if shared else "")).to_dict())
        if shared:
            pooled += recs
    if pooled and len(evaluations) > 1:
        evaluations.insert(0, evaluate_records(classifier, pooled, "all held-out renders of the training folders, pooled").to_dict())
    for ev in evaluations:
        click.echo(f"{ev['data']}: disc macro-F1 {ev['disc']['macro_f1']:.3f}, canal macro-F1 {ev['canal']['macro_f1']:.3f}")
    meta_path = Path(out_dir) / CONFIG_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["evaluations"] = evaluations
    meta["holdout_ids"] = sorted(held)
    meta["notes"] = list(notes)
    meta["command"] = command or "python -m classifier " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    write_json_atomic(meta_path, meta)
    click.echo(f"wrote {write_model_card(out_dir, meta)}")
    return meta


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
def train(data_dirs, out_dir, data_name, holdout, exclude_file, test_dirs, val_dirs, val_name, overrides, notes,
          device):
    """Train, early-stop on validation macro-F1, tune priors, then write weights, config and MODEL_CARD.md."""
    from study.splits import read_holdout
    exclude = read_holdout(exclude_file) if exclude_file else set()
    train_and_evaluate(list(data_dirs), out_dir, data_name, holdout, exclude, list(test_dirs),
                       parse_overrides(overrides), notes, device, val_dirs=list(val_dirs), val_name=val_name)


@cli.command()
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path, exists=True),
              help="Folder with labels.json and boxes.json.")
@click.option("--weights", "weights_dir", type=click.Path(path_type=Path), default=DEFAULT_WEIGHTS, show_default=True,
              help="Classifier weights folder, or a weights folder holding one in classifier/.")
@click.option("--name", default=None, help="How the report names the data (default: from its phantom.json).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Write the report as JSON.")
@click.option("--record", is_flag=True, help="Also add the figures to the weights' classifier.json and model card.")
def evaluate(data_dir, weights_dir, name, json_out, record):
    """Per-class disc and canal figures of a weights folder on a labelled folder."""
    from .card import write_model_card
    weights_dir, classifier = load_classifier(weights_dir)
    records = [r for r in build_dataset(data_dir) if r.patient_id == split_key(r.patient_id)]
    report = evaluate_records(classifier, records, name or describe_folder(data_dir))
    click.echo(report.text())
    if json_out:
        write_json_atomic(json_out, report.to_dict())
    if record:
        meta_path = Path(weights_dir) / CONFIG_FILE
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta["evaluations"] = [e for e in meta.get("evaluations", []) if e["data"] != report.data] + [report.to_dict()]
        write_json_atomic(meta_path, meta)
        click.echo(f"recorded in {meta_path} and {write_model_card(weights_dir, meta)}")


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
