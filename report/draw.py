"""Pictures of a reading: the labelled sagittal panel (report.panel) and graded axial thumbnails."""
from __future__ import annotations

import base64
import io
from typing import Dict

import cv2
import numpy as np
from PIL import Image

from study.levels import CANAL_POSITIONS
from study.study import Study

from .panel import GRADE_RGB
from .patient import PatientReport

# Positions outside the field of view: dimmed, grey frame, never a grade.
OUTSIDE_RGB = (150, 150, 150)


def _rgb(image: np.ndarray, scale: int) -> np.ndarray:
    g = np.clip(image * 255, 0, 255).astype(np.uint8)
    g = cv2.resize(g, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(np.repeat(g[..., None], 3, 2))


def axial_thumbnail(study: Study, report: PatientReport, position: str, size: int = 112) -> np.ndarray:
    """The position's axial image (dark grey if absent) framed in its canal grade's colour; the page writes
    the position and the grade in words beneath it."""
    if position in study.axial:
        img = _rgb(study.axial[position], 1)
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    else:
        img = np.full((size, size, 3), 40, np.uint8)
    if position in report.grades.not_graded:  # dimmed: whatever this image shows was not graded
        img = (img * 0.3).astype(np.uint8)
        cv2.rectangle(img, (0, 0), (size - 1, size - 1), OUTSIDE_RGB, 2)
        return img
    g = report.grades.canal_grades[CANAL_POSITIONS.index(position)]
    cv2.rectangle(img, (0, 0), (size - 1, size - 1), GRADE_RGB[g], 3)
    return img


def encode(image: np.ndarray, fmt: str = "PNG") -> str:
    """A data: URI, so the HTML page opens from disk with no other files and no network."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **({"quality": 88} if fmt == "JPEG" else {}))
    mime = "image/png" if fmt == "PNG" else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def patient_pictures(study: Study, report: PatientReport) -> Dict[str, str]:
    """Data: URIs of the axial thumbnails by position, and "sagittal_panel": the zoomed, labelled sagittal
    panel as inline SVG markup (report.panel)."""
    from .panel import panel_svg
    pics = {"sagittal_panel": panel_svg(study, report, lambda grey: encode(grey, "JPEG"))}
    for p in CANAL_POSITIONS:
        pics[p] = encode(axial_thumbnail(study, report, p), "JPEG")
    return pics
