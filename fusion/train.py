"""Train the fusion model: `python -m fusion.train --boxes B --labels L --out DIR [--image-data PHANTOM_DIR ...]`.

train_fusion fits curvature and the geometry alignment model on a box + label file; FusionRun is the frozen
spec of a whole fusion training (geometry, then the phantom-trained image alignment head), which the
command line and `pipeline.py train` build and run_fusion carries out.
"""
from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import click
import numpy as np

from common.files import sha256_of
from common.provenance import git_commit
from study.challenge import read_box_file, read_labels
from study.levels import ALIGNMENT_CLASSES, CURVATURE_CLASSES

from .booster import lightgbm
from .card import write_model_card
from .config import FusionConfig
from .cv import cross_validate, fit_fusion
from .features import feature_rows, training_table
from .geometry import CHALLENGE_PADDING_PX
from .model import LABEL_PRIOR_KEY, load_fusion

PathLike = Union[str, Path]


def train_fusion(boxes_file: PathLike, labels_file: PathLike, out_dir: PathLike,
                 cfg: Optional[FusionConfig] = None, run_cv: bool = True, data_name: str = "",
                 extra_features: Optional[Mapping[str, Mapping[str, float]]] = None,
                 padding_px: float = CHALLENGE_PADDING_PX, box_check: bool = False,
                 notes: Sequence[str] = (), exclude: Sequence[str] = (), command: str = "") -> Dict[str, object]:
    """Train on every usable patient of a box + label file; write weights, fusion.json and MODEL_CARD.md.

    extra_features (patient id -> columns, e.g. image_features or level_features) join the geometry
    columns; patients without them get NaN there. box_check adds the paired CV of simulated detector
    box sources (fusion.box_check) to the card; notes are extra lines for it. Patients in `exclude`
    (e.g. the evaluation hold-out of study.splits) are left out of training and CV.
    Returns the metadata written to fusion.json.
    """
    cfg = cfg or FusionConfig()
    contents = read_box_file(boxes_file)
    labels = {lab.patient_id: lab for lab in read_labels(labels_file)}
    excluded = set(exclude)
    patients = [p for p in contents.patients if p.patient_id in labels and p.patient_id not in excluded]
    ids, rows, errors = feature_rows(patients, padding_px, extra_features)
    for e in contents.errors:
        errors[e.patient or "?"] = e.problem
    X, yc, ya, names = training_table(ids, rows, labels)
    cv = cross_validate(X, yc, ya, names, cfg).summary() if run_cv else None
    model = fit_fusion(X, yc, ya, names, cfg)
    model.padding_px = padding_px
    model.meta = {
        "data": data_name or str(boxes_file),
        "boxes_sha256": sha256_of(Path(boxes_file)),
        "labels_sha256": sha256_of(Path(labels_file)),
        "n_patients": len(ids),
        "curvature_counts": [int(v) for v in np.bincount(yc, minlength=len(CURVATURE_CLASSES))],
        "alignment_counts": [int(v) for v in np.bincount(ya, minlength=len(ALIGNMENT_CLASSES))],
        LABEL_PRIOR_KEY: label_prior_block(yc, ya, f"class counts of the {len(ids)} training labels "
                                                   f"({data_name or Path(labels_file).name})"),
        "skipped_patients": errors,
        "excluded_patients": len(excluded & set(labels)),
        "config": dataclasses.asdict(cfg),
        "lightgbm_version": lightgbm().__version__,
        "git_commit": git_commit("fusion"),
        "cv": cv,
    }
    if box_check:
        from .box_check import padding_check
        model.meta["box_sources"] = [dataclasses.asdict(r) for r in padding_check(
            patients, {i: labels[i].curvature for i in labels}, {i: labels[i].alignment for i in labels}, cfg)]
    if notes:
        model.meta["notes"] = list(notes)
    if command:
        model.meta["command"] = command
    model.save(out_dir)
    # the card is written from what was saved, so it shows the shipped priors and threshold
    meta = load_fusion(out_dir).meta
    write_model_card(Path(out_dir), meta)
    return meta


def label_prior_block(curvature: Sequence[int], alignment: Sequence[int], source: str) -> Dict[str, object]:
    """fusion.json's label_prior: the class counts of the curvature and alignment labels trained on."""
    return {"source": source, "n_patients": int(len(curvature)),
            "curvature_counts": [int(v) for v in np.bincount(np.asarray(curvature, int),
                                                             minlength=len(CURVATURE_CLASSES))],
            "alignment_counts": [int(v) for v in np.bincount(np.asarray(alignment, int),
                                                             minlength=len(ALIGNMENT_CLASSES))]}


@dataclass(frozen=True)
class FusionRun:
    """Everything one fusion training needs, named (the command line and `pipeline.py train` build it).

    exclude_file: a holdout.json (study.splits) whose geometries no part of the model trains on.
    image_exclude_file: a holdout.json for the image head alone (default: exclude_file), e.g. to fit the
    geometry on every real patient while the image head, like the other image stages, leaves the hold-out out.
    image_eval: phantom folders scored with the final image head (e.g. renders of the held-out geometries).
    image_detector: detector weights that place the levels for the image head, as in `run`.
    """

    boxes_file: Path
    labels_file: Path
    out_dir: Path
    data_name: str = ""
    cv_repeats: Optional[int] = None          # default: FusionConfig.cv_repeats
    run_cv: bool = True
    padding_check: bool = False
    notes: Tuple[str, ...] = ()
    exclude_file: Optional[Path] = None
    image_data: Tuple[Path, ...] = ()
    image_data_name: str = ""
    image_eval: Tuple[Path, ...] = ()
    image_exclude_file: Optional[Path] = None
    image_detector: Optional[Path] = None
    command: str = ""
    config: FusionConfig = FusionConfig()


def run_fusion(run: FusionRun) -> Dict[str, object]:
    """Curvature + geometry alignment on the real boxes, then (with image_data) the phantom-trained image head."""
    from study.splits import read_holdout
    from .image_alignment import train_image_alignment

    cfg = run.config
    if run.cv_repeats is not None:
        cfg = dataclasses.replace(cfg, cv_repeats=run.cv_repeats)
    exclude = read_holdout(run.exclude_file) if run.exclude_file else set()
    image_exclude = read_holdout(run.image_exclude_file) if run.image_exclude_file else exclude
    all_notes = list(run.notes)
    if exclude:
        all_notes.append(f"{len(exclude)} geometries of {Path(run.exclude_file).name} held out of every part of this "
                         "model (end-to-end evaluation set)")
    meta = train_fusion(run.boxes_file, run.labels_file, run.out_dir, cfg, run_cv=run.run_cv,
                        data_name=run.data_name, box_check=run.padding_check, notes=all_notes,
                        exclude=sorted(exclude),
                        command=run.command or "python -m fusion.train " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    if run.image_data:
        evals = {f"{Path(d).name} (never trained on)": [d] for d in run.image_eval}
        meta["image_alignment"] = train_image_alignment(
            run.out_dir, run.image_data, cfg, image_exclude, repeats=min(cfg.cv_repeats, 3) if run.run_cv else 0,
            data_name=run.image_data_name, eval_folders=evals, detector_weights=run.image_detector)
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
    meta = run_fusion(FusionRun(boxes_file, labels_file, out_dir, data_name=data_name, cv_repeats=repeats,
                                run_cv=not no_cv, padding_check=padding_check, notes=tuple(notes),
                                exclude_file=exclude_file, image_data=tuple(image_data),
                                image_data_name=image_data_name, image_eval=tuple(image_eval),
                                image_exclude_file=image_exclude_file, image_detector=image_detector))
    click.echo(json.dumps({"cv": meta.get("cv"), "image_alignment": meta.get("image_alignment", {}).get("cv")},
                          indent=1))


if __name__ == "__main__":
    main()
