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


def _rgb(image: np.ndarray, scale: int) -> np.ndarray:
    g = np.clip(image * 255, 0, 255).astype(np.uint8)
    g = cv2.resize(g, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(np.repeat(g[..., None], 3, 2))


def sagittal_overlay(study: Study, report: PatientReport, scale: int = SCALE) -> np.ndarray:
    """Mid-sagittal slice with each vertebra box (purple if interpolated), disc boxes and grades."""
    img = _rgb(study.mid_sagittal, scale)
    s = MID_SAGITTAL_SLICE
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i, lv in enumerate(VERTEBRAE):
        lb = report.boxes.vertebrae[s][lv]
        b = lb.box
        colour = INTERPOLATED_RGB if lb.interpolated else (90, 170, 255)
        cv2.rectangle(img, (int(b.x1 * scale), int(b.y1 * scale)), (int(b.x2 * scale), int(b.y2 * scale)), colour, 1)
        canal = report.grades.canal_grades[CANAL_POSITIONS.index(lv)]
        text = f"{lv} c{canal}" + (" interp" if lb.interpolated else "")
        cv2.putText(img, text, (int(b.x2 * scale) + 4, int(b.cy * scale) + 4), font, 0.4, GRADE_RGB[canal], 1,
                    cv2.LINE_AA)
    for j, d in enumerate(DISCS):
        b = report.boxes.discs[s][d].box
        dg = report.grades.disc_grades[j]
        cg = report.grades.canal_grades[CANAL_POSITIONS.index(d)]
        cv2.rectangle(img, (int(b.x1 * scale), int(b.y1 * scale)), (int(b.x2 * scale), int(b.y2 * scale)),
                      GRADE_RGB[dg], 1)
        cv2.putText(img, f"{d} d{dg} c{cg}", (max(2, int(b.x1 * scale) - 118), int(b.cy * scale) + 4), font, 0.4,
                    GRADE_RGB[max(dg, cg)], 1, cv2.LINE_AA)
    return img


def axial_thumbnail(study: Study, report: PatientReport, position: str, size: int = 112) -> np.ndarray:
    """The position's axial image (grey if absent) with its canal grade in the corner."""
    if position in study.axial:
        img = _rgb(study.axial[position], 1)
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    else:
        img = np.full((size, size, 3), 40, np.uint8)
        cv2.putText(img, "no axial", (18, size // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (200, 200, 200), 1, cv2.LINE_AA)
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
