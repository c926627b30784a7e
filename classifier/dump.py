"""QA dumps: every crop as PNG (patient, position, view) and one contact sheet per patient with grades on each row."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Union

import cv2
import numpy as np

from common.files import atomic_write
from study.challenge import PatientLabels
from study.levels import CANAL_POSITIONS, DISCS, SAGITTAL_SLICES, is_disc
from study.study import Study

from .crops import LevelCrops
from .predict import LevelGrades

PathLike = Union[str, Path]
TILE = 112  # display size of one crop on the contact sheet
OVERVIEW = 448  # display size of the mid-sagittal overview
TEXT_W = 330
_GREEN, _RED, _WHITE, _GREY, _YELLOW = (80, 220, 80), (70, 70, 255), (235, 235, 235), (150, 150, 150), (0, 220, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _to_u8(crop: np.ndarray) -> np.ndarray:
    """A standardised crop to 8 bits: 2.5 sd below to 3.5 sd above the mean (bright CSF stays visible)."""
    return np.clip((crop + 2.5) / 6.0 * 255, 0, 255).astype(np.uint8)


def _write_png(path: Path, image: np.ndarray) -> None:
    def write(tmp: str) -> None:
        ok, encoded = cv2.imencode(".png", image)
        if not ok:
            raise OSError(f"could not encode {path} as PNG")
        Path(tmp).write_bytes(encoded.tobytes())

    atomic_write(path, write)


def crop_file_name(patient_id: str, position: str, view: str) -> str:
    """'{patient}_{position}_{view}.png', view one of sag5, sag6, sag7, axial."""
    return f"{patient_id}_{position}_{view}.png"


def write_crops(out_dir: PathLike, crops: LevelCrops) -> List[Path]:
    """Every crop of one patient as an 8-bit PNG under out_dir/{patient}/."""
    folder = Path(out_dir) / crops.patient_id
    written = []
    for k, position in enumerate(CANAL_POSITIONS):
        for c, s in enumerate(SAGITTAL_SLICES):
            path = folder / crop_file_name(crops.patient_id, position, f"sag{s}")
            _write_png(path, _to_u8(crops.sagittal[k, c]))
            written.append(path)
        if crops.has_axial[k]:
            path = folder / crop_file_name(crops.patient_id, position, "axial")
            _write_png(path, _to_u8(crops.axial[k, 0]))
            written.append(path)
    return written


def _text(img, text, xy, colour=_WHITE, scale=0.45, thick=1):
    cv2.putText(img, text, xy, _FONT, scale, colour, thick, cv2.LINE_AA)


def _grade_line(img, y, task: str, pred: Optional[int], probs: Optional[np.ndarray], truth: Optional[int]) -> None:
    """'disc  pred 2  true 2' plus a bar per class, in green/red when the truth is known."""
    colour = _WHITE if truth is None or pred is None else (_GREEN if pred == truth else _RED)
    p = "-" if pred is None else str(pred)
    t = "" if truth is None else f"  true {truth}"
    _text(img, f"{task:5s} pred {p}{t}", (8, y), colour, 0.5, 1)
    if probs is not None:
        for c, v in enumerate(probs):
            x0 = 190 + c * 34
            cv2.rectangle(img, (x0, y - 12), (x0 + 28, y + 2), _GREY, 1)
            h = int(round(14 * float(v)))
            cv2.rectangle(img, (x0 + 1, y + 1 - h), (x0 + 27, y + 1), _YELLOW if c == pred else _GREY, -1)
            _text(img, str(c), (x0 + 10, y + 14), _GREY, 0.35)


def contact_sheet(crops: LevelCrops, study: Optional[Study] = None, grades: Optional[LevelGrades] = None,
                  truth: Optional[PatientLabels] = None) -> np.ndarray:
    """One BGR image: a row per position (sag 5/6/7, axial crop, the axial image with its window and canal
    centre, predicted vs true grades with class probabilities) and the mid-sagittal image with every window.
    """
    n = len(CANAL_POSITIONS)
    row_h = TILE
    width = 5 * TILE + TEXT_W + OVERVIEW
    header = 28
    sheet = np.zeros((header + n * row_h, width, 3), np.uint8)
    title = crops.patient_id
    withheld = set(grades.not_graded) if grades is not None else set()   # outside the field of view
    if grades is not None and truth is not None:
        d_ok = sum(int(a == b) for d, a, b in zip(DISCS, grades.disc_grades, truth.disc_grades) if d not in withheld)
        c_ok = sum(int(a == b) for p, a, b in zip(CANAL_POSITIONS, grades.canal_grades, truth.canal_grades)
                   if p not in withheld)
        title += (f"   disc {d_ok}/{len(DISCS) - len(withheld & set(DISCS))} right, "
                  f"canal {c_ok}/{n - len(withheld)} right")
        if withheld:
            title += f" ({len(withheld)} positions not graded)"
    for j, caption in enumerate(("sag 5", "sag 6", "sag 7", "axial crop", "axial image")):
        _text(sheet, caption, (j * TILE + 6, header - 6), _GREY, 0.4)
    _text(sheet, title, (5 * TILE + 8, header - 8), _WHITE, 0.5, 1)
    for k, position in enumerate(CANAL_POSITIONS):
        y0 = header + k * row_h
        tiles = [_to_u8(crops.sagittal[k, c]) for c in range(3)]
        tiles.append(_to_u8(crops.axial[k, 0]) if crops.has_axial[k] else np.zeros_like(tiles[0]))
        for j, t in enumerate(tiles):
            sheet[y0:y0 + TILE, j * TILE:(j + 1) * TILE] = cv2.cvtColor(
                cv2.resize(t, (TILE, TILE), interpolation=cv2.INTER_LINEAR), cv2.COLOR_GRAY2BGR)
        if not crops.has_axial[k]:
            _text(sheet, "no axial", (3 * TILE + 20, y0 + TILE // 2), _RED, 0.5)
        if study is not None and position in study.axial and crops.axial_windows[k] is not None:
            full = cv2.cvtColor((np.clip(study.axial[position], 0, 1) * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
            f = TILE / full.shape[1]
            full = cv2.resize(full, (TILE, TILE), interpolation=cv2.INTER_AREA)
            cv2.polylines(full, [(crops.axial_windows[k].corners() * f).astype(np.int32)], True, _GREEN, 1)
            cf = crops.canal[k]
            cv2.circle(full, (int(round(cf.x * f)), int(round(cf.y * f))), 2, _YELLOW, -1)
            sheet[y0:y0 + TILE, 4 * TILE:5 * TILE] = full
        panel = np.zeros((row_h, TEXT_W, 3), np.uint8)
        _text(panel, position, (8, 24), _WHITE, 0.7, 2)
        graded = grades is not None and position not in withheld
        if position in withheld:
            _text(panel, "outside FOV: not graded", (110, 24), _GREY, 0.45)
        elif grades is not None and not crops.has_axial[k]:
            _text(panel, "sagittal only", (110, 24), _RED, 0.45)
        canal_truth = truth.canal_grades[k] if truth is not None else None
        _grade_line(panel, 58, "canal", grades.canal_grades[k] if graded else None,
                    grades.canal_probabilities[k] if graded else None, canal_truth)
        if is_disc(position):
            i = DISCS.index(position)
            _grade_line(panel, 96, "disc", grades.disc_grades[i] if graded else None,
                        grades.disc_probabilities[i] if graded else None,
                        truth.disc_grades[i] if truth is not None else None)
        sheet[y0:y0 + row_h, 5 * TILE:5 * TILE + TEXT_W] = panel
        cv2.line(sheet, (0, y0), (5 * TILE + TEXT_W, y0), (60, 60, 60), 1)
    if study is not None:
        mid = cv2.cvtColor((np.clip(study.mid_sagittal, 0, 1) * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
        f = OVERVIEW / mid.shape[1]
        mid = cv2.resize(mid, (OVERVIEW, OVERVIEW), interpolation=cv2.INTER_LINEAR)
        for k, (position, w) in enumerate(zip(CANAL_POSITIONS, crops.sagittal_windows)):
            colour = _YELLOW if is_disc(position) else _GREEN
            cv2.polylines(mid, [(w.corners() * f).astype(np.int32)], True, colour, 1)
            c = w.corners().mean(0) * f
            _text(mid, position, (int(c[0] + w.side * f / 2 + 4), int(c[1] + 4)), colour, 0.35)
        sheet[header:header + OVERVIEW, width - OVERVIEW:] = mid
    return sheet


def dump_patient(out_dir: PathLike, crops: LevelCrops, study: Optional[Study] = None,
                 grades: Optional[LevelGrades] = None, truth: Optional[PatientLabels] = None) -> Path:
    """Write the crops and the contact sheet of one patient; returns the sheet's path."""
    write_crops(out_dir, crops)
    path = Path(out_dir) / crops.patient_id / f"{crops.patient_id}_sheet.png"
    _write_png(path, contact_sheet(crops, study, grades, truth))
    return path
