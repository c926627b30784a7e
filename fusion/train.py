"""Train the fusion model from a box file and a label file: `python -m fusion.train --boxes B --labels L --out DIR`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--boxes", "boxes_file", required=True, type=click.Path(path_type=Path))
@click.option("--labels", "labels_file", required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--data-name", default="", help='How the model card names the data, e.g. "real geometry, CervAI 320".')
@click.option("--repeats", type=int, default=None, help="CV repeats (default: FusionConfig.cv_repeats).")
@click.option("--no-cv", is_flag=True, help="Skip cross-validation (fit only).")
@click.option("--padding-check", is_flag=True, help="Also run the box-source check and add it to the card.")
@click.option("--note", "notes", multiple=True, help="A line for the card's Notes section (repeatable).")
def main(boxes_file: Path, labels_file: Path, out_dir: Path, data_name: str, repeats, no_cv: bool,
         padding_check: bool, notes):
    """Fit the curvature and alignment boosters and write weights, fusion.json and MODEL_CARD.md."""
    import dataclasses

    from fusion.model import FusionConfig, train_fusion

    cfg = FusionConfig()
    if repeats is not None:
        cfg = dataclasses.replace(cfg, cv_repeats=repeats)
    meta = train_fusion(boxes_file, labels_file, out_dir, cfg, run_cv=not no_cv, data_name=data_name,
                        box_check=padding_check, notes=notes)
    click.echo(json.dumps(meta.get("cv"), indent=1))


if __name__ == "__main__":
    main()
