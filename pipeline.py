#!/usr/bin/env python3
"""Command line of the cervical spine MRI reader (`cervspine` once installed): it parses arguments and calls
the library; the reading itself is reader.Reader, the run folder reader.folder.

Models and math live in the packages (study/, synth/, detector/, classifier/, fusion/, evaluation/);
each command imports what it needs lazily so `--help` stays fast.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

WEIGHTS = Path(__file__).resolve().parent / "weights"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Read cervical spine MRI: locate C2-C7, grade discs and canal, assess curvature and alignment."""


@cli.command()
@click.option("--input", "input_dir", required=True, type=click.Path(path_type=Path),
              help="One patient folder or a folder of patients (challenge layout).")
def validate(input_dir: Path):
    """Report per patient what is present, missing or odd; exit 1 if any patient is unusable."""
    from study.validate import validate_command
    sys.exit(validate_command(input_dir))


@cli.command()
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--n", "n_patients", type=int, default=None,
              help="Number of patients (default: all in --boxes, else 10).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--boxes", "boxes_file", type=click.Path(path_type=Path), default=None,
              help="Challenge box file whose geometry to render (with --labels).")
@click.option("--labels", "labels_file", type=click.Path(path_type=Path), default=None,
              help="Challenge label file matching --boxes.")
@click.option("--variant", type=click.Choice(["rare", "poor"]), default=None,
              help="Render label variants of the --boxes geometries instead: 'rare' (one protrusion made an "
                   "extrusion, ids '{id}~rare') or 'poor' (poor alignment drawn as a listhesis, ids '{id}~poor').")
@click.option("--draw-curvature", is_flag=True,
              help="With --boxes: bend a geometry whose curve lies outside its curvature label's band into it "
                   "(C3-C6 bowed, C2-C7 line kept), so every label is drawn by its definition; the bends are "
                   "noted in phantom.json. Without it the geometry is kept as read, with the readers' label.")
@click.option("--realistic", type=click.IntRange(0), default=0, show_default=True,
              help="Render each patient this many times framed and contrasted as real scans are (random scale, "
                   "position and field of view, head and thorax drawn, random tissue contrasts; sagittal slices "
                   "only, with visible_boxes.json), for training the detector. 0: the challenge layout.")
def synth(out_dir: Path, n_patients, seed: int, boxes_file, labels_file, variant, draw_curvature, realistic):
    """Render phantom patients in the challenge layout, with labels.json and boxes.json."""
    from synth.cli import synth_command
    sys.exit(synth_command(out_dir, n_patients, seed, boxes_file, labels_file, variant=variant,
                           draw_curvature=draw_curvature, realistic=realistic))


@cli.command()
@click.option("--labels", "labels_file", required=True, type=click.Path(path_type=Path),
              help="Ground-truth challenge label file.")
@click.option("--pred", "pred_file", type=click.Path(path_type=Path), default=None,
              help="Predictions in the challenge submission format.")
@click.option("--reports", "reports_dir", type=click.Path(path_type=Path), default=None,
              help="Instead of --pred: a `run` folder; its reports' probabilities give ROC curves, AUCs, "
                   "reliability plots and a markdown summary in --out.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Folder for the PNGs and metrics.json (with --reports: also analysis.md).")
def evaluate(labels_file: Path, pred_file, reports_dir, out_dir):
    """Score predictions by the challenge metric; the last line printed is `score: 0.XXXX`."""
    if (pred_file is None) == (reports_dir is None):
        raise click.UsageError("give exactly one of --pred and --reports")
    if reports_dir is not None:
        from evaluation.analysis import analysis_command
        sys.exit(analysis_command(labels_file, reports_dir, out_dir or Path(reports_dir) / "analysis"))
    from evaluation.report import evaluate_command
    sys.exit(evaluate_command(labels_file, pred_file, out_dir))


@cli.command()
@click.option("--boxes", "boxes_file", required=True, type=click.Path(path_type=Path),
              help="Challenge box file (C2-C7 on slices 5/6/7).")
@click.option("--out", "out_file", required=True, type=click.Path(path_type=Path), help="Output JSON.")
@click.option("--weights", "weights_dir", type=click.Path(path_type=Path), default=None,
              help="Fusion weights folder (default: the shipped weights/fusion).")
def geometry(boxes_file: Path, out_file: Path, weights_dir):
    """Measure the curve from vertebra boxes and predict curvature and alignment, no images needed."""
    from fusion.cli import geometry_command
    sys.exit(geometry_command(boxes_file, out_file, weights_dir))


@cli.command()
@click.argument("stage", type=click.Choice(["detector", "classifier", "fusion", "all"]))
@click.option("--data", "data_dirs", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Challenge-layout folder with images (repeatable). Each folder reads its own labels.json and "
                   "boxes.json when it has them, else --labels/--boxes. The detector learns from the first.")
@click.option("--labels", "labels_file", type=click.Path(path_type=Path), default=None,
              help="Label file of the geometry fusion learns curvature from (default: the first folder's).")
@click.option("--boxes", "boxes_file", type=click.Path(path_type=Path), default=None,
              help="Box file of that geometry (default: the first folder's).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Weights folder: writes OUT/<stage>/ with a model card, then OUT/MANIFEST.json.")
@click.option("--holdout", "holdout_file", type=click.Path(path_type=Path), default=None,
              help="holdout.json of geometry ids no stage may train on (e.g. weights/holdout.json).")
@click.option("--holdout-n", type=click.IntRange(0), default=0, show_default=True,
              help="Draw a stratified hold-out of N geometries from the labels instead (written to OUT/holdout.json).")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Detector/classifier epochs (default: config).")
@click.option("--val-data", "val_dirs", multiple=True, type=click.Path(path_type=Path, exists=True),
              help="Classifier: a labelled folder never trained on (e.g. built-in phantoms) that joins its "
                   "validation set for early stopping and the class priors; repeatable.")
@click.option("--detector-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Detector: a wall-time budget for YOLO in minutes; the epoch count is fitted to it after the "
                   "first epoch (replaces --epochs there). The refiner and scoring come on top.")
@click.option("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda when present).")
@click.option("--data-name", default="", help="How the model cards name the --data folders.")
@click.option("--geometry-name", default="", help="How the fusion card names --labels/--boxes.")
@click.option("--no-cv", is_flag=True, help="Fusion: skip cross-validation (fit only).")
@click.option("--folds", type=click.IntRange(0), default=0, help="Classifier: a K-fold ensemble with its "
              "cross-validated score; fusion: K cross-validation folds.")
@click.option("--pretrained", multiple=True, help="Start from a local file: FILE (train detector: an ultralytics "
              ".pt; train classifier: a timm state dict or checkpoint), or STAGE=FILE (e.g. with all).")
def train(stage, data_dirs, labels_file, boxes_file, out_dir, holdout_file, holdout_n, epochs, val_dirs,
          detector_minutes, device, data_name, geometry_name, no_cv, folds, pretrained):
    """Retrain one stage (or all, in flow order) into a weights folder, each with its model card."""
    from release.training import TrainingRun, parse_pretrained, train_stages
    from study.errors import InputError
    try:
        manifest = train_stages(TrainingRun(stage, tuple(data_dirs), out_dir, labels_file, boxes_file, holdout_file,
                                            holdout_n, epochs, device, data_name, geometry_name, not no_cv,
                                            detector_minutes, tuple(val_dirs), parse_pretrained(stage, pretrained),
                                            folds))
    except InputError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    click.echo(f"trained {stage} -> {out_dir}; manifest {manifest}")


@cli.command()
@click.option("--input", "input_dir", required=True, type=click.Path(path_type=Path),
              help="One patient or a folder of patients: challenge layout, DICOM studies or NIfTI volumes.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("runs/latest"), show_default=True)
@click.option("--boxes", "boxes_file", type=click.Path(path_type=Path), default=None,
              help="Use these vertebra boxes instead of the detector (oracle mode).")
@click.option("--dump-crops", is_flag=True, help="Write every crop and a contact sheet per patient to OUT/crops.")
@click.option("--labels", "labels_file", type=click.Path(path_type=Path), default=None,
              help="Known labels (challenge label file) to show beside the predicted grades on the crop sheets "
                   "(needs --dump-crops); they change no prediction.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 512), default=16, show_default=True,
              help="Patients loaded and pushed through the networks together.")
@click.option("--weights", "weights_dir", type=click.Path(path_type=Path), default=WEIGHTS, show_default=True)
@click.option("--tta", is_flag=True, help="Classifier test-time augmentation: each crop also read shifted and "
              "scaled a little, the probabilities averaged (5 views; costs network time).")
def run(input_dir, out_dir, boxes_file, dump_crops, labels_file, device, batch_size, weights_dir, tta):
    """Read every patient: predictions.json, reports/{id}.json, report.html, errors.json."""
    if labels_file is not None and not dump_crops:
        raise click.UsageError("--labels only labels the crop sheets; add --dump-crops")
    sys.exit(run_batch(input_dir, out_dir, boxes_file, dump_crops, device, batch_size, weights_dir, labels_file, tta))


def run_batch(input_dir: Path, out_dir: Path, boxes_file=None, dump_crops: bool = False, device: str = "cpu",
              batch_size: int = 16, weights_dir: Path = WEIGHTS, labels_file=None, tta: bool = False) -> int:
    """`run` without the argument parsing: the exit code (0 all read, 1 some failed, 2 unusable)."""
    import os
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # before torch loads: see reader.core.passive_openmp_waiting
    from reader.folder import run_folder
    return run_folder(input_dir, out_dir, weights_dir, boxes_file=boxes_file, dump_crops=dump_crops,
                      labels_file=labels_file, device=device, batch_size=batch_size, echo=click.echo, tta=tta)


if __name__ == "__main__":
    cli()
