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

from report.run_help import RUN_HELP, RUN_OPTIONS, RUN_SHORT_HELP, TRAIN_OPTIONS   # text only: --help stays fast

WEIGHTS = Path(__file__).resolve().parent / "weights"
PATH = click.Path(path_type=Path)


# Wide enough that no command summary is cut with "..." (click's default is 80 columns, 45 for a summary).
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 120}


@click.group(context_settings=CONTEXT)
def cli():
    """Read cervical spine MRI: locate C2-C7, grade discs and canal, assess curvature and alignment."""


@cli.command()
@click.option("--input", "input_dir", required=True, type=PATH,
              help="One patient folder or a folder of patients (challenge layout).")
def validate(input_dir: Path):
    """Report per patient what is present, missing or odd; exit 1 if any patient is unusable.

    Exit codes: 0 every patient usable, 1 some patient unusable, 2 the input folder itself is unusable."""
    from study.validate import validate_command
    sys.exit(validate_command(input_dir))


@cli.command()
@click.option("--out", "out_dir", required=True, type=PATH, help="Output folder.")
@click.option("--n", "n_patients", type=int, default=None,
              help="Number of patients (default: all in --boxes, else 10).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed; patient i gets its own stream, so a seed gives the same patients whatever --n.")
@click.option("--boxes", "boxes_file", type=PATH, default=None,
              help="Challenge box file whose geometry to render (with --labels).")
@click.option("--labels", "labels_file", type=PATH, default=None, help="Challenge label file matching --boxes.")
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
@click.option("--labels", "labels_file", required=True, type=PATH, help="Ground-truth challenge label file.")
@click.option("--pred", "pred_file", type=PATH, default=None, help="Predictions in the challenge submission format.")
@click.option("--reports", "reports_dir", type=PATH, default=None,
              help="Instead of --pred: a `run` folder; its reports' probabilities give ROC curves, AUCs, "
                   "reliability plots and a markdown summary in --out.")
@click.option("--out", "out_dir", type=PATH, default=None,
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
@click.option("--boxes", "boxes_file", required=True, type=PATH, help="Challenge box file (C2-C7 on slices 5/6/7).")
@click.option("--out", "out_file", required=True, type=PATH, help="Output JSON.")
@click.option("--weights", "weights_dir", type=PATH, default=None,
              help="Fusion weights folder (default: the shipped weights/fusion).")
def geometry(boxes_file: Path, out_file: Path, weights_dir):
    """Measure the curve from vertebra boxes and predict curvature and alignment, no images needed."""
    from fusion.cli import geometry_command
    sys.exit(geometry_command(boxes_file, out_file, weights_dir))


@cli.command()
@click.argument("stage", type=click.Choice(["detector", "classifier", "fusion", "all"]))
@click.option("--data", "data_dirs", multiple=True, required=True, type=PATH, help=TRAIN_OPTIONS["data"])
@click.option("--labels", "labels_file", type=PATH, default=None, help=TRAIN_OPTIONS["labels"])
@click.option("--boxes", "boxes_file", type=PATH, default=None, help=TRAIN_OPTIONS["boxes"])
@click.option("--out", "out_dir", required=True, type=PATH, help=TRAIN_OPTIONS["out"])
@click.option("--holdout", "holdout_file", type=PATH, default=None, help=TRAIN_OPTIONS["holdout"])
@click.option("--holdout-n", type=click.IntRange(0), default=0, show_default=True, help=TRAIN_OPTIONS["holdout-n"])
@click.option("--epochs", type=click.IntRange(1), default=None, help=TRAIN_OPTIONS["epochs"])
@click.option("--val-data", "val_dirs", multiple=True, type=click.Path(path_type=Path, exists=True),
              help=TRAIN_OPTIONS["val-data"])
@click.option("--detector-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help=TRAIN_OPTIONS["detector-minutes"])
@click.option("--device", default=None, help=TRAIN_OPTIONS["device"])
@click.option("--data-name", default="", help=TRAIN_OPTIONS["data-name"])
@click.option("--geometry-name", default="", help=TRAIN_OPTIONS["geometry-name"])
@click.option("--no-cv", is_flag=True, help=TRAIN_OPTIONS["no-cv"])
@click.option("--folds", type=click.IntRange(0), default=0, help=TRAIN_OPTIONS["folds"])
@click.option("--pretrained", multiple=True, help=TRAIN_OPTIONS["pretrained"])
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


@cli.command(help=RUN_HELP, short_help=RUN_SHORT_HELP)
@click.option("--input", "input_dir", required=True, type=PATH, help=RUN_OPTIONS["input"])
@click.option("--out", "out_dir", type=PATH, default=Path("runs/latest"), show_default=True, help=RUN_OPTIONS["out"])
@click.option("--overwrite", is_flag=True, help=RUN_OPTIONS["overwrite"])
@click.option("--boxes", "boxes_file", type=PATH, default=None, help=RUN_OPTIONS["boxes"])
@click.option("--dump-crops", is_flag=True, help=RUN_OPTIONS["dump-crops"])
@click.option("--labels", "labels_file", type=PATH, default=None, help=RUN_OPTIONS["labels"])
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help=RUN_OPTIONS["device"])
@click.option("--batch-size", type=click.IntRange(1, 512), default=16, show_default=True,
              help=RUN_OPTIONS["batch-size"])
@click.option("--weights", "weights_dir", type=PATH, default=WEIGHTS, show_default=True, help=RUN_OPTIONS["weights"])
@click.option("--sr", is_flag=True, help=RUN_OPTIONS["sr"])
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help=RUN_OPTIONS["engine"])
@click.option("--address", default=None, help=RUN_OPTIONS["address"])
@click.option("--workers", type=click.IntRange(1), default=None, help=RUN_OPTIONS["workers"])
@click.option("--tta", is_flag=True, help=RUN_OPTIONS["tta"])
def run(input_dir, out_dir, overwrite, boxes_file, dump_crops, labels_file, device, batch_size, weights_dir, sr,
        engine, address, workers, tta):
    if labels_file is not None and not dump_crops:
        raise click.UsageError("--labels only labels the crop sheets; add --dump-crops")
    if engine != "ray" and (address is not None or workers is not None):
        raise click.UsageError("--address and --workers need --engine ray")
    sys.exit(run_batch(input_dir, out_dir, boxes_file, dump_crops, device, batch_size, weights_dir, labels_file,
                       overwrite, sr=sr, engine=engine, address=address, workers=workers, tta=tta))


@cli.command()
@click.option("--pred", "pred_file", required=True, type=PATH,
              help="Predictions in the challenge format (run's predictions.json).")
@click.option("--template", "template_file", required=True, type=PATH,
              help="The ids to submit, in order: a JSON list of ids or of rows with an \"id\" (the challenge's "
                   "submission template).")
@click.option("--out", "out_file", required=True, type=PATH,
              help="Submission file; the ids filled from the prior are listed beside it in NAME.filled.json.")
@click.option("--weights", "weights_dir", type=PATH, default=WEIGHTS, show_default=True,
              help="Weights folder whose training prior fills the ids the predictions lack.")
def submit(pred_file, template_file, out_file, weights_dir):
    """A complete submission in the template's order; missing ids filled from the training prior (exit 2: refused)."""
    from reader.submission import submit_command
    sys.exit(submit_command(pred_file, template_file, out_file, weights_dir, echo=click.echo))


def run_batch(input_dir: Path, out_dir: Path, boxes_file=None, dump_crops: bool = False, device: str = "cpu",
              batch_size: int = 16, weights_dir: Path = WEIGHTS, labels_file=None, overwrite: bool = False,
              **options) -> int:
    """`run` without the argument parsing: the exit code (0 all read, 1 some failed, 2 unusable)."""
    import os
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # before torch loads: see reader.core.passive_openmp_waiting
    from reader.folder import run_folder
    return run_folder(input_dir, out_dir, weights_dir, boxes_file=boxes_file, dump_crops=dump_crops,
                      labels_file=labels_file, device=device, batch_size=batch_size, echo=click.echo,
                      overwrite=overwrite, **options)


# The command list shows each summary whole (wrapped), never cut with "...": the first line of its help.
for _command in cli.commands.values():
    _command.short_help = _command.short_help or (_command.help or "").strip().splitlines()[0]

if __name__ == "__main__":
    cli()
