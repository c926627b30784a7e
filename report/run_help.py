"""The `run` command's help texts (pipeline.py shows them); text only, no imports, so `--help` stays fast."""

RUN_HELP = """Read every patient: predictions.json, reports/{id}.json, report.html, errors.json, run.json
(and sr/{id}.dcm with --sr).

\b
Input layouts (--input is one patient or a folder of patients, nested folders allowed):
  challenge PNGs   {id}/sag/5.png, 6.png, 7.png and {id}/tra/2.png, 2-3.png, ... 7.png
  DICOM            any file names, nested, several series; the most T2-like sagittal
                   and axial series are chosen and reported
  NIfTI            volumes (*.nii, *.nii.gz), also BIDS sub-*/anat/*T2w*.nii.gz

\b
Exit codes:
  0  every patient read (those flagged for review included)
  1  some patient could not be read (listed in errors.json; the rest are complete)
  2  nothing was read: the input, --boxes/--labels, --out, --device or the weights are unusable

OUT must be new or empty, or hold the same run killed midway (which this completes). A folder holding another
run's outputs is refused and left as it is, unless --overwrite is given. --engine ray follows the same rules and
writes the same outputs."""

RUN_SHORT_HELP = "Read every patient: predictions.json, reports/, report.html, errors.json."

# Each option's help, by option name.
RUN_OPTIONS = {
    "input": "One patient or a folder of patients: challenge layout, DICOM studies or NIfTI volumes.",
    "out": "Output folder: new or empty (or the same run killed midway); see --overwrite.",
    "overwrite": "OUT holds an earlier run's outputs: remove that run's files (those its run.json lists, nothing "
                 "else) and write this run there.",
    "boxes": "Use these vertebra boxes (challenge box file) instead of the detector (oracle mode).",
    "dump-crops": "Write every crop and a contact sheet per patient to OUT/crops.",
    "labels": "Known labels (challenge label file) to show beside the predicted grades on the crop sheets (needs "
              "--dump-crops); they change no prediction.",
    "device": "Where the networks run; cuda needs an NVIDIA GPU with a working driver.",
    "batch-size": "Patients loaded and pushed through the networks together.",
    "weights": "Weights folder (detector/, classifier/, fusion/ and MANIFEST.json, checked before loading).",
    "sr": "Also write OUT/sr/{id}.dcm, a DICOM SR (TID 1500) per DICOM study; it carries the source study's "
          "patient and study data, so it identifies the patient.",
    "engine": "'ray': read the patients with Ray Data actors (same outputs, same OUT rules).",
    "address": "Ray cluster to join (e.g. ray://head:10001 or auto); default: a local Ray instance. Needs "
               "--engine ray.",
    "workers": "Ray actors, each loading the models once (default: one per CPU, or per GPU with --device cuda). "
               "Needs --engine ray.",
    "tta": "Classifier test-time augmentation: each crop also read shifted and scaled a little, the probabilities "
           "averaged (5 views; about +24 % time; measured gain mixed, see README).",
}

# `train`: what each option does.
TRAIN_OPTIONS = {
    "data": "Challenge-layout folder with images (repeatable). Each folder reads its own labels.json and "
            "boxes.json (or the challenge's train.json and bounding_box_train.json, in it or beside it) when it "
            "has them, else --labels/--boxes. The detector learns from the first.",
    "labels": "Label file of the geometry fusion learns curvature from (default: the first folder's).",
    "boxes": "Box file of that geometry (default: the first folder's).",
    "out": "Weights folder: writes OUT/<stage>/ with a model card, then OUT/MANIFEST.json.",
    "holdout": "holdout.json of geometry ids no stage may train on (e.g. weights/holdout.json).",
    "holdout-n": "Draw a stratified hold-out of N geometries from the labels instead (written to "
                 "OUT/holdout.json).",
    "epochs": "Detector/classifier epochs (default: config).",
    "val-data": "Classifier: a labelled folder never trained on (e.g. built-in phantoms) that joins its "
                "validation set for early stopping and the class priors; repeatable.",
    "detector-minutes": "Detector: a wall-time budget for YOLO in minutes; the epoch count is fitted to it after "
                        "the first epoch (replaces --epochs there). The refiner and scoring come on top.",
    "device": "Torch device, e.g. cpu or cuda (default: cuda when present).",
    "data-name": "How the model cards name the --data folders.",
    "geometry-name": "How the fusion card names --labels/--boxes.",
    "no-cv": "Fusion: skip cross-validation (fit only).",
    "folds": "Classifier: a K-fold ensemble with its cross-validated score; fusion: K cross-validation folds.",
    "pretrained": "Start from a local file: FILE (train detector: an ultralytics .pt; train classifier: a timm "
                  "state dict or checkpoint), or STAGE=FILE (e.g. with all).",
}
