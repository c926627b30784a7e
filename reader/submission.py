"""`pipeline.py submit`: a complete challenge submission in the template's id order.

The template says which ids the challenge scores, in which order: a JSON list whose entries are ids (strings
or integers) or rows with an "id" key (the challenge's own test_submission_template.json: rows
{"id", "qd", "sl", "zjppt", "zyzg"}, every label 0; only "id" is read). Each template id takes its row from
the predictions (predictions.json of `run`). An id the predictions lack (a patient `run` could not read) is
filled from the training prior stored with the weights: the most frequent grade per disc and canal position
(classifier.json label_prior) and the most frequent curvature and alignment class (fusion.json label_prior),
the same rule as a level outside the field of view (classifier.prior, fusion.model.label_frequencies). Those
ids are named on stderr and in a side file. An id in the predictions that the template lacks is refused: the
predictions belong to other patients, or the template is the wrong one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from study.challenge import PatientLabels, labels_to_row, read_labels
from study.errors import InputError, LabelFileError

PathLike = Union[str, Path]


class SubmissionError(InputError):
    """The predictions, the template or the weights cannot make a submission."""


@dataclass(frozen=True)
class Submission:
    """The rows written (template order), the ids filled from the prior, and what the prior is."""

    rows: List[Dict[str, object]]
    filled: Tuple[str, ...]
    prior: Optional[PatientLabels]   # None when nothing had to be filled
    prior_notes: Tuple[str, ...]

    def side_file(self, weights_dir: PathLike) -> Dict[str, object]:
        return {"filled_from_prior": list(self.filled), "n_rows": len(self.rows),
                "prior_row": labels_to_row(self.prior) if self.prior is not None else None,
                "weights": str(weights_dir),
                "why": "these ids are in the template but not in the predictions (a patient `run` could not read, "
                       "or left out); their rows are the training labels' most frequent grade/class per position, "
                       "no reading of the patient",
                "prior_notes": list(self.prior_notes)}


def read_template(path: PathLike) -> List[str]:
    """The template's ids in order: a JSON list of ids, or of rows with an "id" key. Raises SubmissionError."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SubmissionError("template not found", path=path) from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SubmissionError(f"template is not readable JSON ({e})", path=path) from None
    if not isinstance(data, list) or not data:
        raise SubmissionError("template must be a non-empty JSON list of ids or of rows with an \"id\"", path=path)
    ids: List[str] = []
    for i, entry in enumerate(data):
        pid = entry.get("id") if isinstance(entry, dict) else entry
        if isinstance(pid, int) and not isinstance(pid, bool):
            pid = str(pid)
        if not isinstance(pid, str) or not pid:
            raise SubmissionError(f"entry {i} has no usable id: {entry!r}", path=path)
        ids.append(pid)
    dup = sorted({p for p in ids if ids.count(p) > 1})
    if dup:
        raise SubmissionError(f"duplicate id(s) in the template: {', '.join(dup[:10])}", path=path)
    return ids


def training_prior(weights_dir: PathLike) -> Tuple[PatientLabels, Tuple[str, ...]]:
    """The row a patient without predictions gets: the training labels' most frequent grades and classes
    (classifier/classifier.json and fusion/fusion.json label_prior blocks of the weights folder)."""
    import numpy as np

    from classifier.prior import GradePrior, most_frequent
    from fusion.model import label_frequencies
    from study.levels import CANAL_POSITIONS, DISCS

    weights_dir = Path(weights_dir)
    metas = []
    for stage, name in (("classifier", "classifier.json"), ("fusion", "fusion.json")):
        path = weights_dir / stage / name
        try:
            metas.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            raise SubmissionError(f"cannot read the training prior ({e})", path=path) from None
    try:
        grades = GradePrior.from_meta(metas[0])
        curvature, alignment, fusion_note = label_frequencies(metas[1])
    except (KeyError, TypeError, ValueError) as e:
        raise SubmissionError(f"the label_prior block is unusable ({type(e).__name__}: {e})",
                              path=weights_dir) from None
    row = PatientLabels("training prior", int(np.argmax(curvature)), int(np.argmax(alignment)),
                        tuple(most_frequent(grades.disc(d)) for d in DISCS),
                        tuple(most_frequent(grades.canal(p)) for p in CANAL_POSITIONS))
    return row, (grades.note, fusion_note)


def make_submission(pred_file: PathLike, template_file: PathLike, weights_dir: PathLike) -> Submission:
    """The complete submission; raises SubmissionError (or LabelFileError) naming the file and the problem."""
    from dataclasses import replace

    template = read_template(template_file)
    try:
        predicted = {p.patient_id: p for p in read_labels(pred_file)}
    except LabelFileError as e:
        raise SubmissionError(f"predictions unusable: {e.problem}", patient=e.patient, path=pred_file) from None
    unknown = [p for p in predicted if p not in set(template)]
    if unknown:
        raise SubmissionError(f"{len(unknown)} id(s) in the predictions are not in the template "
                              f"{Path(template_file).name}: {', '.join(unknown[:10])}"
                              + (" ..." if len(unknown) > 10 else ""), path=pred_file)
    filled = tuple(p for p in template if p not in predicted)
    prior, notes = training_prior(weights_dir) if filled else (None, ())
    rows = [labels_to_row(predicted[p]) if p in predicted else labels_to_row(replace(prior, patient_id=p))
            for p in template]
    return Submission(rows, filled, prior, notes)


def side_file_path(out_file: PathLike) -> Path:
    """Where the filled ids are listed: beside the submission, '{name}.filled.json'."""
    out_file = Path(out_file)
    return out_file.with_name(out_file.stem + ".filled.json")


def submit_command(pred_file: PathLike, template_file: PathLike, out_file: PathLike, weights_dir: PathLike,
                   echo=print) -> int:
    """`pipeline.py submit`: 0 written (ids filled from the prior named on stderr), 2 refused."""
    from common.files import write_json_atomic

    try:
        sub = make_submission(pred_file, template_file, weights_dir)
    except InputError as e:
        echo(f"error: {e}", err=True)
        return 2
    write_json_atomic(out_file, sub.rows)
    side = side_file_path(out_file)
    write_json_atomic(side, sub.side_file(weights_dir))
    if sub.filled:
        echo(f"{len(sub.filled)} of {len(sub.rows)} id(s) not in {pred_file}, filled from the training prior "
             f"(listed in {side}): {', '.join(sub.filled)}", err=True)
    echo(f"submission: {len(sub.rows)} rows in the template's order -> {out_file}")
    return 0
