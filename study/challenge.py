"""Readers and writers for the challenge files: the label/prediction JSON and the vertebra box file.

The challenge's pinyin keys (qd, sl, zjppt, zyzg) appear in this module only; the rest of the
project speaks of curvature, alignment, disc_grades and canal_grades.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Tuple, Union

from common.files import write_json_atomic

from .errors import BoxFileError, LabelFileError
from .levels import (
    ALIGNMENT_CLASSES, CANAL_GRADES, CANAL_POSITIONS, CURVATURE_CLASSES, DISC_GRADES, DISCS,
    IMAGE_SIZE, SAGITTAL_SLICES, VERTEBRAE,
)

PathLike = Union[str, Path]

# The challenge box files hold boxes "already expanded by 3 px" on every side around the vertebral body: every
# box source and consumer (detector, fusion geometry, axial matching, the phantom) uses this one padding.
BOX_PADDING_PX = 3.0

_KEY_ID, _KEY_CURVATURE, _KEY_ALIGNMENT, _KEY_DISC, _KEY_CANAL = "id", "qd", "sl", "zjppt", "zyzg"

# File names of a training folder: what `synth` writes, then the CervAI challenge's own, as downloaded (its
# training labels and boxes; the test patients' boxes come as bounding_box_test.json, for `run --boxes`).
LABELS_FILE, BOXES_FILE = "labels.json", "boxes.json"
CHALLENGE_LABELS_FILE, CHALLENGE_BOXES_FILE = "train.json", "bounding_box_train.json"
CHALLENGE_TEST_BOXES_FILE = "bounding_box_test.json"


def folder_files(folder: PathLike) -> Tuple[Union[Path, None], Union[Path, None]]:
    """(label file, box file) of a training folder, each None when absent: labels.json / boxes.json in the
    folder (phantoms), else the challenge's train.json / bounding_box_train.json in the folder or, as the
    challenge's download may keep them, in the folder above it."""
    folder = Path(folder)

    def first(*candidates: Path) -> Union[Path, None]:
        return next((c for c in candidates if c.is_file()), None)
    return (first(folder / LABELS_FILE, folder / CHALLENGE_LABELS_FILE, folder.parent / CHALLENGE_LABELS_FILE),
            first(folder / BOXES_FILE, folder / CHALLENGE_BOXES_FILE, folder.parent / CHALLENGE_BOXES_FILE))


@dataclass(frozen=True)
class PatientLabels:
    """One patient's labels (or predictions) in the challenge schema."""

    patient_id: str
    curvature: int
    alignment: int
    disc_grades: Tuple[int, ...]   # one per DISCS
    canal_grades: Tuple[int, ...]  # one per CANAL_POSITIONS

    def __post_init__(self):
        _check_label_values(self, LabelFileError)

    def disc_grade(self, disc: str) -> int:
        return self.disc_grades[DISCS.index(disc)]

    def canal_grade(self, position: str) -> int:
        return self.canal_grades[CANAL_POSITIONS.index(position)]


def _check_label_values(labels: PatientLabels, error: type) -> None:
    pid = labels.patient_id
    if not isinstance(pid, str) or not pid:
        raise error(f"patient id must be a non-empty string, got {pid!r}")

    def check(name: str, value, n_classes: int):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n_classes:
            raise error(f"{name} must be an integer in 0..{n_classes - 1}, got {value!r}", patient=pid)

    check("curvature", labels.curvature, len(CURVATURE_CLASSES))
    check("alignment", labels.alignment, len(ALIGNMENT_CLASSES))
    for name, grades, names, n in (("disc grades", labels.disc_grades, DISCS, len(DISC_GRADES)),
                                   ("canal grades", labels.canal_grades, CANAL_POSITIONS, len(CANAL_GRADES))):
        if not isinstance(grades, tuple) or len(grades) != len(names):
            raise error(f"{name} must be {len(names)} values ({', '.join(names)}), got {grades!r}", patient=pid)
        for level, g in zip(names, grades):
            check(f"{name[:-1]} at {level}", g, n)


def labels_to_row(labels: PatientLabels) -> Dict[str, object]:
    """The challenge JSON row of one patient."""
    return {_KEY_ID: labels.patient_id, _KEY_CURVATURE: labels.curvature, _KEY_ALIGNMENT: labels.alignment,
            _KEY_DISC: list(labels.disc_grades), _KEY_CANAL: list(labels.canal_grades)}


def labels_from_row(row: object, where: str = "") -> PatientLabels:
    """Parse one challenge JSON row; raises LabelFileError naming the patient and the problem."""
    if not isinstance(row, Mapping):
        raise LabelFileError(f"{where}expected an object with keys id/qd/sl/zjppt/zyzg, got {type(row).__name__}")
    pid = row.get(_KEY_ID)
    if isinstance(pid, int) and not isinstance(pid, bool):
        pid = str(pid)
    if not isinstance(pid, str) or not pid:
        raise LabelFileError(f"{where}row without a usable '{_KEY_ID}': {row.get(_KEY_ID)!r}")
    missing = [k for k in (_KEY_CURVATURE, _KEY_ALIGNMENT, _KEY_DISC, _KEY_CANAL) if k not in row]
    if missing:
        raise LabelFileError(f"{where}missing key(s) {missing}", patient=pid)
    disc, canal = row[_KEY_DISC], row[_KEY_CANAL]
    if not isinstance(disc, list) or not isinstance(canal, list):
        raise LabelFileError(f"{where}'{_KEY_DISC}' and '{_KEY_CANAL}' must be lists", patient=pid)
    return PatientLabels(pid, row[_KEY_CURVATURE], row[_KEY_ALIGNMENT], tuple(disc), tuple(canal))


def read_labels(path: PathLike) -> List[PatientLabels]:
    """Read a challenge label or prediction file (a JSON list of rows). Duplicate ids are an error."""
    data = _read_json(path, LabelFileError)
    if not isinstance(data, list):
        raise LabelFileError("expected a JSON list of patient rows", path=path)
    out: List[PatientLabels] = []
    seen = set()
    for i, row in enumerate(data):
        try:
            labels = labels_from_row(row, where=f"row {i}: ")
        except LabelFileError as e:
            raise LabelFileError(e.problem, patient=e.patient, path=path) from None
        if labels.patient_id in seen:
            raise LabelFileError("duplicate patient id", patient=labels.patient_id, path=path)
        seen.add(labels.patient_id)
        out.append(labels)
    return out


def write_labels(path: PathLike, labels: Iterable[PatientLabels]) -> None:
    """Write a challenge label/prediction file atomically, rows in the given order."""
    write_json_atomic(path, [labels_to_row(x) for x in labels])


# ----------------------------------------------------------------------------------------------
# Boxes
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixel coordinates, origin top left, (x1, y1) top-left corner."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def cx(self) -> float:
        return (self.x1 + self.x2) / 2.0

    @property
    def cy(self) -> float:
        return (self.y1 + self.y2) / 2.0

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    def as_tuple(self) -> Tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)

    def iou(self, other: "Box") -> float:
        ix = max(0.0, min(self.x2, other.x2) - max(self.x1, other.x1))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y1, other.y1))
        inter = ix * iy
        union = self.width * self.height + other.width * other.height - inter
        return inter / union if union > 0 else 0.0


# The C2 box holds the body and the dens above it; the body (the C2 canal position, and the point the C2 landmark
# of a labelled scan marks) is its lower part. The phantom draws the body as 56-64 % of the box's inner height.
C2_BODY_FRACTION = 0.6


def body_centre(box: Box, level: str) -> Tuple[float, float]:
    """Centre (x, y) of a vertebra's body in its box: the box centre, except for C2, whose box also holds
    the dens; its body is the lower C2_BODY_FRACTION of the box inside the padding."""
    if level == "C2":
        body_h = (box.height - 2 * BOX_PADDING_PX) * C2_BODY_FRACTION
        return box.cx, box.y2 - BOX_PADDING_PX - body_h / 2
    return box.cx, box.cy


# Challenge box strings: "(x1,y1)(x2,y2)"; integers in the real files, floats and spaces tolerated.
_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
_BOX_RE = re.compile(rf"^\s*\({_NUM},{_NUM}\)\s*\({_NUM},{_NUM}\)\s*$")


def parse_box_string(text: object, image_size: int = IMAGE_SIZE) -> Box:
    """Parse "(x1,y1)(x2,y2)"; raises BoxFileError for malformed, inverted, degenerate or off-image boxes."""
    if not isinstance(text, str):
        raise BoxFileError(f"box must be a string '(x1,y1)(x2,y2)', got {text!r}")
    m = _BOX_RE.match(text)
    if not m:
        raise BoxFileError(f"malformed box string {text!r}; expected '(x1,y1)(x2,y2)'")
    x1, y1, x2, y2 = (float(v) for v in m.groups())
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise BoxFileError(f"box {text!r} has a non-finite coordinate")
    if x2 <= x1 or y2 <= y1:
        raise BoxFileError(f"box {text!r} is inverted or degenerate (needs x1 < x2 and y1 < y2)")
    if x1 < 0 or y1 < 0 or x2 > image_size or y2 > image_size:
        raise BoxFileError(f"box {text!r} lies outside the {image_size}x{image_size} image")
    return Box(x1, y1, x2, y2)


def format_box_string(box: Box) -> str:
    """The challenge string of a box, rounded to whole pixels as in the challenge files."""
    return "({},{})({},{})".format(*(int(round(v)) for v in box.as_tuple()))


@dataclass(frozen=True)
class PatientBoxes:
    """C2..C7 vertebra boxes of one patient on each sagittal slice: boxes[slice][level]."""

    patient_id: str
    boxes: Mapping[int, Mapping[str, Box]]

    def on_slice(self, slice_number: int) -> Mapping[str, Box]:
        return self.boxes[slice_number]


@dataclass(frozen=True)
class BoxFileContents:
    """What a box file held: the patients that parsed, and one error per patient that did not."""

    patients: List[PatientBoxes]
    errors: List[BoxFileError] = field(default_factory=list)

    def by_id(self) -> Dict[str, PatientBoxes]:
        return {p.patient_id: p for p in self.patients}


def patient_boxes_from_row(row: object, image_size: int = IMAGE_SIZE) -> PatientBoxes:
    """Parse one box-file row {"id", "C2": [s5, s6, s7], ...}; raises BoxFileError naming the patient."""
    if not isinstance(row, Mapping):
        raise BoxFileError(f"expected an object with keys id, {', '.join(VERTEBRAE)}, got {type(row).__name__}")
    pid = row.get(_KEY_ID)
    if isinstance(pid, int) and not isinstance(pid, bool):
        pid = str(pid)
    if not isinstance(pid, str) or not pid:
        raise BoxFileError(f"row without a usable 'id': {row.get(_KEY_ID)!r}")
    missing = [lv for lv in VERTEBRAE if lv not in row]
    if missing:
        raise BoxFileError(f"missing level(s) {', '.join(missing)}", patient=pid)
    boxes: Dict[int, Dict[str, Box]] = {s: {} for s in SAGITTAL_SLICES}
    for level in VERTEBRAE:
        strings = row[level]
        if not isinstance(strings, list) or len(strings) != len(SAGITTAL_SLICES):
            raise BoxFileError(f"{level} must be a list of {len(SAGITTAL_SLICES)} box strings "
                               f"(slices {', '.join(map(str, SAGITTAL_SLICES))}), got {strings!r}", patient=pid)
        for s, text in zip(SAGITTAL_SLICES, strings):
            try:
                boxes[s][level] = parse_box_string(text, image_size)
            except BoxFileError as e:
                raise BoxFileError(f"{level} on slice {s}: {e.problem}", patient=pid) from None
    return PatientBoxes(pid, boxes)


def patient_boxes_to_row(p: PatientBoxes) -> Dict[str, object]:
    row: Dict[str, object] = {_KEY_ID: p.patient_id}
    for level in VERTEBRAE:
        row[level] = [format_box_string(p.boxes[s][level]) for s in SAGITTAL_SLICES]
    return row


def read_box_file(path: PathLike, image_size: int = IMAGE_SIZE) -> BoxFileContents:
    """Read a challenge box file. A bad patient row becomes an entry in .errors; the rest still load.

    Raises BoxFileError only when the file as a whole is unusable (missing, not JSON, not a list).
    """
    data = _read_json(path, BoxFileError)
    if not isinstance(data, list):
        raise BoxFileError("expected a JSON list of patient rows", path=path)
    patients: List[PatientBoxes] = []
    errors: List[BoxFileError] = []
    seen = set()
    for i, row in enumerate(data):
        try:
            p = patient_boxes_from_row(row, image_size)
            if p.patient_id in seen:
                raise BoxFileError("duplicate patient id", patient=p.patient_id)
        except BoxFileError as e:
            errors.append(BoxFileError(e.problem if e.patient else f"row {i}: {e.problem}",
                                       patient=e.patient, path=path))
            continue
        seen.add(p.patient_id)
        patients.append(p)
    return BoxFileContents(patients, errors)


def write_box_file(path: PathLike, patients: Iterable[PatientBoxes]) -> None:
    write_json_atomic(path, [patient_boxes_to_row(p) for p in patients])


# A visible-box file: the level boxes each sagittal slice shows, for images that do not show all of C2-C7
# (a field of view that ends above C7, a tight crop). [{"id": ..., "slices": {"5": {"C2": "(x1,y1)(x2,y2)",
# ...}, "6": {...}, "7": {...}}}]; a level a slice does not show has no entry. Written by the realistic
# phantoms (synth/realistic.py), read by the detector's dataset export.
VISIBLE_BOXES_FILE = "visible_boxes.json"


@dataclass(frozen=True)
class VisibleBoxes:
    """The vertebra boxes present on each slice of one patient: boxes[slice][level], levels may be absent."""

    patient_id: str
    boxes: Mapping[int, Mapping[str, Box]]

    @staticmethod
    def of(p: PatientBoxes) -> "VisibleBoxes":
        return VisibleBoxes(p.patient_id, p.boxes)


def write_visible_boxes(path: PathLike, patients: Iterable[VisibleBoxes]) -> None:
    rows = [{_KEY_ID: p.patient_id,
             "slices": {str(s): {lv: format_box_string(p.boxes[s][lv]) for lv in VERTEBRAE if lv in p.boxes[s]}
                        for s in SAGITTAL_SLICES}} for p in patients]
    write_json_atomic(path, rows)


def read_visible_boxes(path: PathLike, image_size: int = IMAGE_SIZE) -> List[VisibleBoxes]:
    """Read a visible-box file; raises BoxFileError naming the patient and level of the first bad entry."""
    data = _read_json(path, BoxFileError)
    if not isinstance(data, list):
        raise BoxFileError("expected a JSON list of patient rows", path=path)
    out = []
    for i, row in enumerate(data):
        pid = row.get(_KEY_ID) if isinstance(row, Mapping) else None
        if not isinstance(pid, str) or not pid or not isinstance(row.get("slices"), Mapping):
            raise BoxFileError(f"row {i}: expected {{'id': ..., 'slices': {{...}}}}", path=path)
        boxes: Dict[int, Dict[str, Box]] = {}
        for s in SAGITTAL_SLICES:
            entries = row["slices"].get(str(s), {})
            unknown = sorted(set(entries) - set(VERTEBRAE))
            if unknown:
                raise BoxFileError(f"slice {s}: unknown level(s) {unknown}", patient=pid, path=path)
            try:
                boxes[s] = {lv: parse_box_string(entries[lv], image_size) for lv in VERTEBRAE if lv in entries}
            except BoxFileError as e:
                raise BoxFileError(f"slice {s}: {e.problem}", patient=pid, path=path) from None
        out.append(VisibleBoxes(pid, boxes))
    return out


# ----------------------------------------------------------------------------------------------
# JSON helpers
# ----------------------------------------------------------------------------------------------

def _read_json(path: PathLike, error: type):
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error("file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"cannot read file ({e.__class__.__name__}: {e})", path=path) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})", path=path) from None
    except ValueError as e:  # a number too long to convert (over 4300 digits) is not a JSONDecodeError
        raise error(f"not valid JSON ({e})", path=path) from None
    except RecursionError:
        raise error("not valid JSON (nested too deeply)", path=path) from None


