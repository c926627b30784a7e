"""Train the fusion model: `python -m fusion.train --boxes B --labels L --out DIR [--image-data PHANTOM_DIR ...]`."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

import click

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def train_all(boxes_file: Path, labels_file: Path, out_dir: Path, data_name: str = "", repeats: Optional[int] = None,
              run_cv: bool = True, padding_check: bool = False, notes: Sequence[str] = (),
              exclude_file: Optional[Path] = None, image_data: Sequence[Path] = (), image_data_name: str = "",
              image_eval: Sequence[Path] = (), command: str = "",
              image_exclude_file: Optional[Path] = None,
              image_detector: Optional[Path] = None) -> Dict[str, object]:
    """Curvature + geometry alignment on the real boxes, then (with image_data) the phantom-trained image head.

    exclude_file: a holdout.json (study.splits) whose geometries no part of the model trains on.
    image_exclude_file: a holdout.json for the image head alone (default: exclude_file), e.g. to fit the
    geometry on every real patient while the image head, like the other image stages, leaves the hold-out out.
    image_eval: phantom folders scored with the final image head (e.g. renders of the held-out geometries).
    image_detector: detector weights that place the levels for the image head, as in `run`.
    """
    import dataclasses

    from study.splits import read_holdout
    from .image_alignment import train_image_alignment
    from .model import FusionConfig, train_fusion

    cfg = FusionConfig()
    if repeats is not None:
        cfg = dataclasses.replace(cfg, cv_repeats=repeats)
    exclude = read_holdout(exclude_file) if exclude_file else set()
    image_exclude = read_holdout(image_exclude_file) if image_exclude_file else exclude
    all_notes = list(notes)
    if exclude:
        all_notes.append(f"{len(exclude)} geometries of {exclude_file.name} held out of every part of this model "
                         "(end-to-end evaluation set)")
    meta = train_fusion(boxes_file, labels_file, out_dir, cfg, run_cv=run_cv, data_name=data_name,
                        box_check=padding_check, notes=all_notes, exclude=sorted(exclude),
                        command=command or "python -m fusion.train " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    if image_data:
        evals = {f"{Path(d).name} (never trained on)": [d] for d in image_eval}
        meta["image_alignment"] = train_image_alignment(
            out_dir, image_data, cfg, image_exclude, repeats=min(cfg.cv_repeats, 3) if run_cv else 0,
            data_name=image_data_name, eval_folders=evals, detector_weights=image_detector)
    return meta


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--boxes", "boxes_file", required=True, type=click.Path(path_type=Path, exists=True))
@click.option("--labels", "labels_file", required=True, type=click.Path(path_type=Path, exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--data-name", default="", help='How the model card names the data, e.g. "real geometry, CervAI 320".')
@click.option("--repeats", type=int, default=None, help="CV repeats (default: FusionConfig.cv_repeats).")
@click.option("--no-cv", is_flag=True, help="Skip cross-validation (fit only).")
@click.option("--padding-check", is_flag=True, help="Also run the box-source check and add it to the card.")
@click.option("--note", "notes", multiple=True, help="A line for the card's Notes section (repeatable).")
@click.option("--exclude", "exclude_file", type=click.Path(path_type=Path, exists=True), default=None,
              help="holdout.json: geometries no part of the model trains on.")
@click.option("--image-data", "image_data", multiple=True, type=click.Path(path_type=Path, exists=True),
              help="Phantom folder (challenge layout + labels.json + boxes.json) for the image alignment head; "
                   "repeatable (e.g. renders of the real geometries and their '~poor' variants).")
@click.option("--image-data-name", default="", help="How the card names the image-head data.")
@click.option("--image-detector", "image_detector", type=click.Path(path_type=Path, exists=True), default=None,
              help="Detector weights folder that places the levels for the image head (as run does); "
                   "default: the phantoms' measured boxes.")
@click.option("--image-exclude", "image_exclude_file", type=click.Path(path_type=Path, exists=True), default=None,
              help="holdout.json for the image head only (default: --exclude).")
@click.option("--image-eval", "image_eval", multiple=True, type=click.Path(path_type=Path, exists=True),
              help="Phantom folder scored with the final image head (never trained on); repeatable.")
def main(boxes_file, labels_file, out_dir, data_name, repeats, no_cv, padding_check, notes, exclude_file,
         image_data, image_data_name, image_eval, image_exclude_file, image_detector):
    """Fit the curvature and alignment boosters (and the image head) and write weights, fusion.json, MODEL_CARD.md."""
    meta = train_all(boxes_file, labels_file, out_dir, data_name, repeats, not no_cv, padding_check, notes,
                     exclude_file, image_data, image_data_name, image_eval, image_exclude_file=image_exclude_file,
                     image_detector=image_detector)
    click.echo(json.dumps({"cv": meta.get("cv"), "image_alignment": meta.get("image_alignment", {}).get("cv")},
                          indent=1))


if __name__ == "__main__":
    main()
