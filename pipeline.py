#!/usr/bin/env python3
"""Command line of the cervical spine MRI reader: glue that parses arguments and calls the stages.

Models and math live in the packages (study/, synth/, detector/, classifier/, fusion/, evaluation/);
each command imports what it needs lazily so `--help` stays fast.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


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
def synth(out_dir: Path, n_patients, seed: int, boxes_file, labels_file):
    """Render phantom patients in the challenge layout, with labels.json and boxes.json."""
    from synth.cli import synth_command
    sys.exit(synth_command(out_dir, n_patients, seed, boxes_file, labels_file))


@cli.command()
@click.option("--labels", "labels_file", required=True, type=click.Path(path_type=Path),
              help="Ground-truth challenge label file.")
@click.option("--pred", "pred_file", required=True, type=click.Path(path_type=Path),
              help="Predictions in the challenge submission format.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Folder for confusion-matrix PNGs and metrics.json.")
def evaluate(labels_file: Path, pred_file: Path, out_dir):
    """Score predictions by the challenge metric; the last line printed is `score: 0.XXXX`."""
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


if __name__ == "__main__":
    cli()
