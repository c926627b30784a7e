"""Pictures of a reading: level boxes and grades on the mid-sagittal slice, graded axial thumbnails."""
from __future__ import annotations

import base64
import io
from typing import Dict

import cv2
import numpy as np
from PIL import Image

from study.levels import CANAL_POSITIONS, DISCS, MID_SAGITTAL_SLICE, VERTEBRAE
from study.study import Study

from .patient import PatientReport

SCALE = 2
# Severity colours (RGB) for grades 0..3: green, yellow, orange, red.
GRADE_RGB = ((60, 200, 90), (235, 210, 40), (245, 140, 30), (230, 50, 50))
INTERPOLATED_RGB = (200, 80, 255)
# Levels outside the field of view: never drawn as found (dashed grey), never with a grade.
OUTSIDE_RGB = (150, 150, 150)
OUTSIDE_LABEL = "outside FOV, not graded"


def _dashed_rectangle(img: np.ndarray, p1, p2, colour, dash: int = 5) -> None:
    (x1, y1), (x2, y2) = p1, p2
    for (ax, ay), (bx, by) in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = max(abs(bx - ax), abs(by - ay))
        for start in range(0, length, 2 * dash):
            end = min(start + dash, length)
            t0, t1 = start / max(length, 1), end / max(length, 1)
            cv2.line(img, (int(ax + (bx - ax) * t0), int(ay + (by - ay) * t0)),
                     (int(ax + (bx - ax) * t1), int(ay + (by - ay) * t1)), colour, 1)


def _rgb(image: np.ndarray, scale: int) -> np.ndarray:
    g = np.clip(image * 255, 0, 255).astype(np.uint8)
    g = cv2.resize(g, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(np.repeat(g[..., None], 3, 2))


def sagittal_overlay(study: Study, report: PatientReport, scale: int = SCALE) -> np.ndarray:
    """Mid-sagittal slice with each vertebra box (purple if interpolated), disc boxes and grades."""
    img = _rgb(study.mid_sagittal, scale)
    s = MID_SAGITTAL_SLICE
    font = cv2.FONT_HERSHEY_SIMPLEX
    outside = set(report.boxes.outside_positions)
    for i, lv in enumerate(VERTEBRAE):
        lb = report.boxes.vertebrae[s][lv]
        b = lb.box
        if lv in outside:
            _dashed_rectangle(img, (int(b.x1 * scale), int(b.y1 * scale)), (int(b.x2 * scale), int(b.y2 * scale)),
                              OUTSIDE_RGB)
            cv2.putText(img, f"{lv} outside FOV", (int(b.x2 * scale) + 4, int(b.cy * scale) + 4), font, 0.4,
                        OUTSIDE_RGB, 1, cv2.LINE_AA)
            continue
        colour = INTERPOLATED_RGB if lb.interpolated else (90, 170, 255)
        cv2.rectangle(img, (int(b.x1 * scale), int(b.y1 * scale)), (int(b.x2 * scale), int(b.y2 * scale)), colour, 1)
        canal = report.grades.canal_grades[CANAL_POSITIONS.index(lv)]
        text = f"{lv} c{canal}" + (" interp" if lb.interpolated else "")
        cv2.putText(img, text, (int(b.x2 * scale) + 4, int(b.cy * scale) + 4), font, 0.4, GRADE_RGB[canal], 1,
                    cv2.LINE_AA)
    for j, d in enumerate(DISCS):
        b = report.boxes.discs[s][d].box
        if d in outside:
            _dashed_rectangle(img, (int(b.x1 * scale), int(b.y1 * scale)), (int(b.x2 * scale), int(b.y2 * scale)),
                              OUTSIDE_RGB)
            continue
        dg = report.grades.disc_grades[j]
        cg = report.grades.canal_grades[CANAL_POSITIONS.index(d)]
        cv2.rectangle(img, (int(b.x1 * scale), int(b.y1 * scale)), (int(b.x2 * scale), int(b.y2 * scale)),
                      GRADE_RGB[dg], 1)
        cv2.putText(img, f"{d} d{dg} c{cg}", (max(2, int(b.x1 * scale) - 118), int(b.cy * scale) + 4), font, 0.4,
                    GRADE_RGB[max(dg, cg)], 1, cv2.LINE_AA)
    if report.boxes.outside_fov:  # said in the picture too: the dashed boxes may lie beyond its edge
        text = f"{', '.join(report.boxes.outside_fov)}: {OUTSIDE_LABEL}"
        cv2.rectangle(img, (0, img.shape[0] - 20), (img.shape[1] - 1, img.shape[0] - 1), (40, 40, 40), -1)
        cv2.putText(img, text, (6, img.shape[0] - 6), font, 0.45, (230, 230, 230), 1, cv2.LINE_AA)
    return img


def axial_thumbnail(study: Study, report: PatientReport, position: str, size: int = 112) -> np.ndarray:
    """The position's axial image (grey if absent) with its canal grade in the corner."""
    if position in study.axial:
        img = _rgb(study.axial[position], 1)
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    else:
        img = np.full((size, size, 3), 40, np.uint8)
        if position not in report.grades.not_graded:
            cv2.putText(img, "no axial", (18, size // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (200, 200, 200), 1,
                        cv2.LINE_AA)
    if position in report.grades.not_graded:  # dimmed: whatever this image shows was not graded
        img = (img * 0.3).astype(np.uint8)
        cv2.rectangle(img, (0, 0), (size - 1, size - 1), OUTSIDE_RGB, 2)
        for text, y in ((position, 18), ("outside FOV", size // 2 + 4), ("not graded", size - 10)):
            cv2.putText(img, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (225, 225, 225), 1, cv2.LINE_AA)
        return img
    g = report.grades.canal_grades[CANAL_POSITIONS.index(position)]
    cv2.rectangle(img, (0, 0), (size - 1, size - 1), GRADE_RGB[g], 2)
    cv2.putText(img, f"{position} c{g}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, GRADE_RGB[g], 1, cv2.LINE_AA)
    return img


def encode(image: np.ndarray, fmt: str = "PNG") -> str:
    """A data: URI, so the HTML page opens from disk with no other files and no network."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **({"quality": 88} if fmt == "JPEG" else {}))
    mime = "image/png" if fmt == "PNG" else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def patient_pictures(study: Study, report: PatientReport) -> Dict[str, str]:
    pics = {"sagittal": encode(sagittal_overlay(study, report), "JPEG")}
    for p in CANAL_POSITIONS:
        pics[p] = encode(axial_thumbnail(study, report, p), "JPEG")
    return pics
