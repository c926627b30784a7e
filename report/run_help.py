"""The `run` command's help text (pipeline.py shows it); text only, no imports, so `--help` stays fast."""

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
