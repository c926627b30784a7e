"""`python -m detector ...`: build-dataset, train, evaluate, real-check and the class-design comparison."""
from __future__ import annotations

import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Stage 1 detector: YOLO finds C2-C7 and the discs on sagittal slices."""


@cli.command("build-dataset")
@click.option("--input", "layout_dir", required=True, type=click.Path(path_type=Path, exists=True))
@click.option("--boxes", "boxes_file", type=click.Path(path_type=Path), default=None,
              help="Challenge box file (default: INPUT/boxes.json, else the challenge's bounding_box_train.json).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--val-fraction", type=float, default=0.1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--design", type=click.Choice(["levels", "generic"]), default="levels", show_default=True)
def build_dataset_cmd(layout_dir, boxes_file, out_dir, val_fraction, seed, design):
    """Export an ultralytics dataset (images/, labels/, data.yaml) with a patient-level split."""
    from .dataset import build_dataset
    info = build_dataset(layout_dir, boxes_file or _own_boxes(layout_dir), out_dir, val_fraction, seed, design)
    click.echo(f"wrote {info.n_images} images ({len(info.train_ids)} train / {len(info.val_ids)} val patients) "
               f"-> {info.data_yaml}")


@cli.command("train")
@click.option("--input", "layout_dir", required=True, type=click.Path(path_type=Path, exists=True))
@click.option("--boxes", "boxes_file", type=click.Path(path_type=Path), default=None)
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Weights folder.")
@click.option("--epochs", type=int, default=None)
@click.option("--design", type=click.Choice(["levels", "generic"]), default=None)
@click.option("--model", "model_yaml", default=None, help="ultralytics model .yaml, e.g. yolov8n.yaml")
@click.option("--eval", "eval_dirs", multiple=True, type=click.Path(path_type=Path, exists=True),
              help="Extra phantom/challenge folders to score (each with boxes.json).")
@click.option("--work", "work_dir", type=click.Path(path_type=Path), default=None)
@click.option("--data-description", default="")
@click.option("--card-section", "card_sections", multiple=True, type=click.Path(path_type=Path, exists=True),
              help="Markdown file appended to the model card (its first line '# Title' is the section title).")
@click.option("--real-check/--no-real-check", default=True, help="Score the real scan when ../shared has it.")
@click.option("--extra", "extra_dirs", multiple=True, type=click.Path(path_type=Path, exists=True),
              help="More training folders, e.g. realistic phantoms (`pipeline.py synth --realistic K`) with "
                   "visible_boxes.json; renders of the main folder's geometries follow their geometry's split.")
@click.option("--init", "init_weights", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Start from this ultralytics checkpoint (.pt) instead of random weights.")
@click.option("--holdout", "holdout_file", type=click.Path(path_type=Path, exists=True), default=None,
              help="holdout.json: geometries never trained on (scored as the evaluation hold-out).")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Wall-time budget for YOLO (replaces --epochs).")
@click.option("--lr0", type=float, default=None, help="Initial learning rate (default: config).")
@click.option("--threads", type=int, default=None, help="CPU threads for training (default: config).")
def train_cmd(layout_dir, boxes_file, out_dir, epochs, design, model_yaml, eval_dirs, work_dir, data_description,
              card_sections, real_check, extra_dirs, init_weights, holdout_file, minutes, lr0, threads):
    """Train from a .yaml and write weights, config.json, metrics.json and MODEL_CARD.md."""
    from .config import DetectorConfig, TrainConfig
    from .train import EvalSet, train
    cfg, tc = DetectorConfig(), TrainConfig()
    if design:
        cfg = replace(cfg, class_design=design)
    if model_yaml:
        cfg = replace(cfg, model_yaml=model_yaml)
    if epochs:
        tc = replace(tc, epochs=epochs)
    if minutes:
        tc = replace(tc, minutes=minutes)
    if lr0:
        tc = replace(tc, lr0=lr0)
    if threads:
        tc = replace(tc, threads=threads)
    exclude = frozenset()
    if holdout_file:
        from study.splits import read_holdout
        exclude = frozenset(read_holdout(holdout_file))
    sets = [EvalSet(d.name, d, d / "boxes.json", None, f"every patient of {d} (never trained on)") for d in eval_dirs]
    sections = {}
    for f in card_sections:
        text = f.read_text().splitlines()
        title = text[0].lstrip("# ").strip() if text and text[0].startswith("#") else f.stem
        sections[title] = "\n".join(text[1:] if text and text[0].startswith("#") else text)
    command = "python -m detector train " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    result = train(layout_dir, boxes_file or _own_boxes(layout_dir), out_dir, cfg, tc, sets, work_dir,
                   data_description=data_description, card_sections=sections, real_check=real_check,
                   exclude=exclude, command=command, extra_dirs=extra_dirs, init_weights=init_weights)
    click.echo(f"weights -> {result.weights_dir} ({result.epochs} epochs, {result.train_seconds / 60:.1f} min)")


@cli.command("evaluate")
@click.option("--input", "layout_dir", required=True, type=click.Path(path_type=Path, exists=True))
@click.option("--boxes", "boxes_file", type=click.Path(path_type=Path), default=None)
@click.option("--weights", "weights_dir", type=click.Path(path_type=Path), default=None)
@click.option("--ids-from-split", type=click.Path(path_type=Path), default=None,
              help="split.json of a training run: score only its held-out patients.")
@click.option("--json-out", type=click.Path(path_type=Path), default=None)
def evaluate_cmd(layout_dir, boxes_file, weights_dir, ids_from_split, json_out):
    """Score a detector on a folder with a box file; prints the per-level table."""
    from .metrics import evaluate_folder
    from .predict import Detector
    ids = json.loads(ids_from_split.read_text())["val"] if ids_from_split else None
    m, _ = evaluate_folder(Detector.from_weights(weights_dir), layout_dir, boxes_file, ids)
    click.echo(m.table())
    if json_out:
        json_out.write_text(json.dumps(m.to_dict(), indent=1) + "\n")


@cli.command("real-check")
@click.option("--weights", "weights_dir", type=click.Path(path_type=Path), default=None)
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=None)
def real_check_cmd(weights_dir, data_dir: Optional[Path]):
    """Run the detector on the real T2 scan and compare C2-C5 with the cord's level labels."""
    from .predict import Detector
    from .real_check import REAL_DIR, check_real_scan, real_scan_available
    why = real_scan_available(data_dir or REAL_DIR)
    if why:
        click.echo(f"real scan not available: {why}", err=True)
        sys.exit(2)
    click.echo(check_real_scan(Detector.from_weights(weights_dir), data_dir or REAL_DIR).table())


@cli.command("compare")
@click.argument("runs", nargs=-1, required=True)
def compare_cmd(runs):
    """Markdown table of trained weights folders given as NAME=FOLDER (each with metrics.json)."""
    from .train import comparison_table
    pairs = {}
    for r in runs:
        name, _, folder = r.partition("=")
        if not folder:
            raise click.BadParameter(f"expected NAME=FOLDER, got {r!r}")
        pairs[name] = Path(folder)
    click.echo(comparison_table(pairs))


def main():
    cli()


def _own_boxes(layout_dir: Path) -> Path:
    """The folder's own box file: boxes.json (phantoms), else the challenge's bounding_box_train.json."""
    from study.challenge import folder_files
    return folder_files(layout_dir)[1] or layout_dir / "boxes.json"
