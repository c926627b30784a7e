#!/usr/bin/env python3
"""Command line of the cervical spine MRI reader: glue that parses arguments and calls the stages.

Models and math live in the packages (study/, synth/, detector/, classifier/, fusion/, evaluation/);
each command imports what it needs lazily so `--help` stays fast.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

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
def train(stage, data_dirs, labels_file, boxes_file, out_dir, holdout_file, holdout_n, epochs, val_dirs,
          detector_minutes, device, data_name, geometry_name, no_cv):
    """Retrain one stage (or all, in flow order) into a weights folder, each with its model card."""
    import shlex

    from release.training import train_stages
    from study.errors import InputError
    args = [stage] + [a for d in data_dirs for a in ("--data", str(d))] + \
        [a for d in val_dirs for a in ("--val-data", str(d))]
    for flag, value in (("--labels", labels_file), ("--boxes", boxes_file), ("--out", out_dir),
                        ("--holdout", holdout_file), ("--holdout-n", holdout_n or None), ("--epochs", epochs),
                        ("--detector-minutes", detector_minutes), ("--device", device), ("--data-name", data_name or None),
                        ("--geometry-name", geometry_name or None)):
        if value is not None:
            args += [flag, str(value)]
    command = "python pipeline.py train " + " ".join(shlex.quote(a) for a in args + (["--no-cv"] if no_cv else []))
    try:
        manifest = train_stages(stage, data_dirs, out_dir, labels_file, boxes_file, holdout_file, holdout_n, epochs,
                                device, data_name, geometry_name, run_cv=not no_cv, command=command,
                                detector_minutes=detector_minutes, val_dirs=val_dirs)
    except InputError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    click.echo(f"trained {stage} -> {out_dir}; manifest {manifest}")


# ------------------------------------------------------------------------------------------------
# run: the whole reading, batch by batch
# ------------------------------------------------------------------------------------------------
WEIGHTS = ROOT / "weights"
STAGES = ("detector", "classifier", "fusion")
# A vertebra found with less confidence than this sends the patient to human review. The shipped
# detector splits its score between neighbouring level classes: correct C2-C7 boxes (IoU >= 0.82) on
# the example phantoms scored 0.36-0.88, so 0.5 flagged every patient and meant nothing.
REVIEW_MIN_CONFIDENCE = 0.2


def _review_reasons(boxes, curve, study) -> tuple:
    reasons = []
    outside = boxes.outside_fov
    if outside:
        reasons.append(f"level(s) {', '.join(outside)} outside the field of view: not graded"
                       + ("; curvature and alignment not assessed" if curve.not_assessed else ""))
    interp = tuple(lv for lv in boxes.interpolated_levels if lv not in outside)
    if interp:
        reasons.append(f"level(s) {', '.join(interp)} not found, interpolated from neighbours")
    low = sorted({lv for s in boxes.vertebrae for lv, lb in boxes.vertebrae[s].items()
                  if not lb.interpolated and lb.confidence < REVIEW_MIN_CONFIDENCE})
    if low:
        reasons.append(f"low detector confidence at {', '.join(low)}")
    reasons.extend(f"anatomy check: {w}" for w in boxes.warnings)
    reasons.extend(f"curve: {w}" for w in curve.warnings)
    missing_axial = [p for p in study.missing_axial if p not in boxes.outside_positions]
    if missing_axial:
        reasons.append(f"no axial image at {', '.join(missing_axial)} (graded from sagittal only)")
    if study.blank_images:
        reasons.append(f"image(s) with the same value in every pixel, which show nothing: "
                       f"{', '.join(study.blank_images)}")
    return tuple(reasons)


class _StageClock:
    """Wall seconds spent in each stage of a run, for run.json and the benchmark."""

    def __init__(self):
        import time
        self._now = time.perf_counter
        self.seconds = {}

    def __call__(self, stage: str):
        clock = self

        class _Span:
            def __enter__(self):
                self.t = clock._now()

            def __exit__(self, *exc):
                clock.seconds[stage] = clock.seconds.get(stage, 0.0) + clock._now() - self.t
                return False

        return _Span()


class _Models:
    """The three stages, loaded once after the weights manifest is verified."""

    def __init__(self, weights_dir: Path, device: str, need_detector: bool):
        from classifier.predict import Classifier
        from fusion.model import load_fusion
        from release.manifest import verify_manifest

        stages = STAGES if need_detector else STAGES[1:]
        verify_manifest(weights_dir, stages)
        self.detector = None
        if need_detector:
            from detector.predict import Detector
            self.detector = Detector.from_weights(weights_dir / "detector", device=device)
        self.classifier = Classifier.load(weights_dir / "classifier", device)
        self.fusion = load_fusion(weights_dir / "fusion")


def _patient_space_centres(study, boxes, crops):
    """(level -> LPS mm, canal position -> LPS mm) for DICOM/NIfTI input, (None, None) for challenge PNGs.

    A level's centre is its body (C2: below the dens) or disc box centre on the mid-sagittal image; a canal
    position's is the canal centre the classifier found on its axial image, where that image came from a
    DICOM/NIfTI slice."""
    import numpy as np

    from detector.boxes import body_centre
    from study.levels import CANAL_POSITIONS, DISCS, MID_SAGITTAL_SLICE

    if study.sagittal_geometry is None:
        return None, None
    levels = {}
    for p in CANAL_POSITIONS:
        b = boxes.box(p, MID_SAGITTAL_SLICE)
        xy = (b.cx, b.cy) if p in DISCS else body_centre(b, p)
        levels[p] = tuple(float(v) for v in study.sagittal_geometry.to_world(np.asarray(xy, float)))
    canal = {}
    for k, p in enumerate(CANAL_POSITIONS):
        finding = crops.canal[k]
        plane = study.axial_geometry.get(p)
        if finding is not None and plane is not None:
            canal[p] = tuple(float(v) for v in plane.to_world(np.asarray([finding.x, finding.y], float)))
    return levels, canal


def _read_patient(models: "_Models", study, boxes, crops, grades, box_source: str, dump_dir, clock, truth=None):
    """Stage 3 and the outputs for one patient whose boxes and grades are known (truth: known labels, shown
    on the crop sheet only)."""
    from fusion.image_features import image_features
    from fusion.model import level_features, predict as assess_curve
    from report.draw import patient_pictures
    from report.patient import PatientReport

    with clock("fusion"):
        extra = level_features(grades.disc_probabilities, grades.canal_probabilities)
        patient_boxes = boxes.as_patient_boxes()
        extra.update(image_features(study.sagittal, patient_boxes.boxes))
        curve = assess_curve(models.fusion, patient_boxes, extra, study.sagittal_spacing_mm, boxes.outside_fov)
    level_lps, canal_lps = _patient_space_centres(study, boxes, crops)
    report = PatientReport(study.patient_id, boxes, grades, curve, box_source, tuple(study.warnings),
                           _review_reasons(boxes, curve, study), dict(study.sources), tuple(study.provenance),
                           level_centres_lps=level_lps, axial_canal_centres_lps=canal_lps)
    with clock("outputs"):
        if dump_dir is not None:
            from classifier.dump import dump_patient
            dump_patient(dump_dir, crops, study, grades, truth)
        pictures = patient_pictures(study, report)
    return report, pictures


def _guard(fn, stage: str):
    """fn() or, if it fails, the failure as a message (so one patient's failure stays its own)."""
    try:
        return fn()
    except Exception as e:
        return f"{stage} failed: {type(e).__name__}: {e}"


def _isolated(batch_fn, single_fn, items, stage: str) -> list:
    """Run a stage on a batch; if the batch fails, retry item by item so only the culprit fails."""
    if not items:
        return []
    try:
        return list(batch_fn(items))
    except Exception:
        return [_guard(lambda it=it: single_fn(it), stage) for it in items]


def run_batch(input_dir: Path, out_dir: Path, boxes_file, dump_crops: bool, device: str, batch_size: int,
              weights_dir: Path = WEIGHTS, labels_file: Optional[Path] = None) -> int:
    """Read every patient under input_dir; returns the exit code (0 all read, 1 some failed, 2 unusable)."""
    import os
    import time

    # torch's OpenMP threads spin at every barrier by default. Beside another busy process (a training job on
    # the 2-core build machine) they wait for a descheduled thread at every layer: one patient took 3.4-8.0 s
    # in the stages instead of 1.1 s (detector 4.0 s -> 0.2 s). Waiting passively changes no result (same
    # threads, same arithmetic: outputs byte-identical). Read when torch loads, so set before importing it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from tqdm import tqdm

    from detector.boxes import LevelBoxes
    from release.manifest import WeightsError
    from report.html import patient_section, write_report_html
    from study.challenge import read_box_file, read_labels, remove_stale_temporaries, write_json_atomic, write_labels
    from study.errors import InputError, StudyError
    from study.axial_match import attach_axials
    from study.inputs import find_inputs, load_input, private_path

    t0 = time.perf_counter()
    try:
        patients = find_inputs(input_dir)
        given = None
        if boxes_file is not None:
            contents = read_box_file(boxes_file)
            given = contents.by_id()
            given_errors = {e.patient: str(e) for e in contents.errors if e.patient}
        # Known labels are drawn beside the predictions on the crop sheets; they change no prediction.
        truth = {l.patient_id: l for l in read_labels(labels_file)} if labels_file is not None else {}
        clock = _StageClock()
        with clock("model load"):
            models = _Models(weights_dir, device, need_detector=given is None)
    except (InputError, WeightsError, FileNotFoundError) as e:
        click.echo(f"error: {e}", err=True)
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    # A run killed mid-write leaves hidden temporaries (never a truncated output); this run clears them.
    for folder, below in ((out_dir, False), (out_dir / "reports", False), (out_dir / "crops", True)):
        remove_stale_temporaries(folder, recursive=below)
    dump_dir = out_dir / "crops" if dump_crops else None
    reports, sections, errors = {}, [], []

    def fail(pid: str, message: str):
        errors.append({"id": pid, "error": message})

    bar = tqdm(total=len(patients), desc="patients", unit="patient", disable=None)
    for start in range(0, len(patients), batch_size):
        studies = []
        with clock("load images"):
            for source in patients[start:start + batch_size]:
                try:
                    studies.append(load_input(source))
                except StudyError as e:
                    fail(source.patient_id, str(e))
                    bar.update(1)
        if given is not None:
            boxes_list = []
            for st in studies:
                if st.patient_id in given:
                    boxes_list.append(LevelBoxes.from_patient_boxes(given[st.patient_id]))
                else:
                    boxes_list.append(given_errors.get(st.patient_id, "no boxes for this patient in the box file"))
            source = "given"
        else:
            with clock("detector"):
                boxes_list = _isolated(models.detector.predict_batch, models.detector.predict, studies,
                                       "detector")
            source = "detector"
        # DICOM/NIfTI axial slices are matched to levels once the levels are placed (in patient space).
        with clock("axial matching"):
            studies = [attach_axials(st, b) if not isinstance(b, str) else st for st, b in zip(studies, boxes_list)]
        # Crop every patient, then push all their levels through the classifier together.
        with clock("classifier"):
            crops_list = [_guard(lambda st=st, b=b: models.classifier.crops(st, b), "cropping")
                          if not isinstance(b, str) else b for st, b in zip(studies, boxes_list)]
            ok = [k for k, c in enumerate(crops_list) if not isinstance(c, str)]
            graded = _isolated(models.classifier.grade_crops, lambda c: models.classifier.grade_crops([c])[0],
                               [crops_list[k] for k in ok], "classifier")
            grades_list = list(crops_list)
            for k, g in zip(ok, graded):
                grades_list[k] = g
        for st, boxes, crops, grades in zip(studies, boxes_list, crops_list, grades_list):
            try:
                for stage_result in (boxes, crops, grades):
                    if isinstance(stage_result, str):
                        raise InputError(stage_result, patient=st.patient_id)
                report, pictures = _read_patient(models, st, boxes, crops, grades, source, dump_dir, clock,
                                                 truth.get(st.patient_id))
                write_json_atomic(out_dir / "reports" / f"{st.patient_id}.json", report.to_dict())
                reports[st.patient_id] = report
                sections.append(patient_section(report, pictures))
            except Exception as e:  # one bad patient never stops the batch
                fail(st.patient_id, str(e) if isinstance(e, InputError) else f"{type(e).__name__}: {e}")
            bar.update(1)
    bar.close()

    clock.seconds["total"] = time.perf_counter() - t0
    write_json_atomic(out_dir / "run.json", {
        "input": private_path(input_dir, patients), "boxes": str(boxes_file) if boxes_file else None,
        "device": device, "batch_size": batch_size, "weights": str(weights_dir), "dump_crops": dump_crops,
        "patients": len(patients), "stage_seconds": {k: round(v, 3) for k, v in clock.seconds.items()}})
    order = [p.patient_id for p in patients]
    done = [reports[pid].challenge_labels() for pid in order if pid in reports]
    write_labels(out_dir / "predictions.json", done)
    write_json_atomic(out_dir / "errors.json", errors)
    seconds = time.perf_counter() - t0
    summary = (f"{len(patients)} patient(s): {len(done)} read, {len(errors)} failed, "
               f"{sum(r.needs_review for r in reports.values())} flagged for review, {seconds:.1f} s")
    write_report_html(out_dir / "report.html", sections, errors, summary)
    for e in errors:
        click.echo(f"failed: {e['id']}: {e['error']}", err=True)
    for pid in order:
        if pid in reports and reports[pid].boxes.outside_fov:
            click.echo(f"{pid}: {', '.join(reports[pid].boxes.outside_fov)} outside the field of view, not graded")
    click.echo(summary)
    click.echo(f"outputs: {out_dir / 'predictions.json'}, {out_dir / 'report.html'}, {out_dir / 'reports'}/"
               + (f", {dump_dir}/" if dump_dir else ""))
    return 1 if errors else 0


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
def run(input_dir, out_dir, boxes_file, dump_crops, labels_file, device, batch_size, weights_dir):
    """Read every patient: predictions.json, reports/{id}.json, report.html, errors.json."""
    if labels_file is not None and not dump_crops:
        raise click.UsageError("--labels only labels the crop sheets; add --dump-crops")
    sys.exit(run_batch(input_dir, out_dir, boxes_file, dump_crops, device, batch_size, weights_dir, labels_file))


if __name__ == "__main__":
    cli()
