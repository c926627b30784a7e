"""The sagittal panel of report.html: the mid-sagittal slice zoomed on the column, with one label per level at
the side and a leader line to it, drawn as inline SVG (crisp at any zoom; the image itself is resampled once,
smoothly, to the size it is shown at)."""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import cv2
import numpy as np

from fusion.geometry import ANTERIOR_SIGN_X
from study.challenge import BOX_PADDING_PX, Box, body_centre
from study.levels import CANAL_POSITIONS, DISCS, MID_SAGITTAL_SLICE, VERTEBRAE
from study.study import Study

from .patient import PatientReport

# Grade colours for 0..3 (normal/none, bulge/mild, protrusion/cord compressed, extrusion/signal change): readable
# on the panel's dark background and on the page's light one.
GRADE_RGB = ((60, 200, 90), (232, 198, 25), (245, 140, 30), (255, 77, 77))
GRADE_COLOURS = tuple("#%02x%02x%02x" % c for c in GRADE_RGB)
DETECTED_COLOUR = "#29c5f6"       # cyan corner marks: a vertebra found on this slice
INTERPOLATED_COLOUR = "#ff4fd8"   # magenta dashed outline: not found on this slice, placed between its neighbours
OUTSIDE_COLOUR = "#9a9a9a"        # grey dashed outline: outside the field of view, not graded
LEADER_COLOUR = "#d8d8d8"
BACKGROUND = "#161616"

# Grades in words, as the panel, the table and the axial captions show them.
DISC_WORDS = ("normal", "bulge", "protrusion", "extrusion")
CANAL_WORDS = ("none", "mild, cord not compressed", "cord compressed", "cord compressed, signal change")
OUTSIDE_WORDS = "outside the field of view \u2014 not graded"

IMAGE_HEIGHT = 640        # shown height of the zoomed slice, CSS px
LABEL_WIDTH = 400         # the label column beside it
LABEL_GAP = 22            # least vertical distance between two labels
FONT_SIZE = 14


@dataclass(frozen=True)
class Zoom:
    """The part of the 224-grid slice the panel shows, and its scale (panel px per grid px)."""

    x0: float
    y0: float
    width: float
    height: float
    scale: float

    def to_panel(self, x: float, y: float, offset_x: float) -> Tuple[float, float]:
        return offset_x + (x - self.x0) * self.scale, (y - self.y0) * self.scale


def column_zoom(boxes: Sequence[Box], image_shape: Tuple[int, int], height: int = IMAGE_HEIGHT) -> Zoom:
    """A window around the level boxes: a body width of margin each side, half a body height above and below,
    at least 3:4 (width:height), within one image size of the grid (beyond its edge is black)."""
    h_img, w_img = image_shape
    inside = [b for b in boxes if b.x2 > 0 and b.y2 > 0 and b.x1 < w_img and b.y1 < h_img]
    if not inside:
        return Zoom(0.0, 0.0, float(w_img), float(h_img), height / h_img)
    x1 = min(max(b.x1, 0.0) for b in inside)
    x2 = max(min(b.x2, float(w_img)) for b in inside)
    y1 = min(max(b.y1, 0.0) for b in inside)
    y2 = max(min(b.y2, float(h_img)) for b in inside)
    body_w = float(np.median([b.width for b in inside]))
    body_h = float(np.median([b.height for b in inside]))
    x1, x2 = x1 - 1.0 * body_w, x2 + 1.0 * body_w
    y1, y2 = y1 - 0.5 * body_h, y2 + 0.5 * body_h
    w, h = x2 - x1, y2 - y1
    if w < 0.75 * h:                      # not a sliver: widen around the centre
        cx = (x1 + x2) / 2
        w = 0.75 * h
        x1, x2 = cx - w / 2, cx + w / 2
    if h < w:
        cy = (y1 + y2) / 2
        h = w
        y1 = cy - h / 2
    return Zoom(float(x1), float(y1), float(w), float(h), height / h)


def zoomed_image(image: np.ndarray, zoom: Zoom) -> np.ndarray:
    """The window resampled (bicubic) to its panel size, 8-bit grey; outside the slice is black."""
    out_w, out_h = int(round(zoom.width * zoom.scale)), int(round(zoom.height * zoom.scale))
    # pixel centres: panel pixel (u, v) looks at grid point x0 + (u + 0.5) / scale - 0.5
    m = np.array([[zoom.scale, 0, -(zoom.x0 - 0.5) * zoom.scale - 0.5],
                  [0, zoom.scale, -(zoom.y0 - 0.5) * zoom.scale - 0.5]], np.float64)
    g = np.clip(np.asarray(image, np.float32), 0, 1)
    out = cv2.warpAffine(g, m, (out_w, out_h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    # Display window: the window's own 1st to 99.5th percentile of what is not padding (a dark heavy-T2 scan
    # would otherwise show its bodies near black). Only the picture changes; nothing is measured on it.
    shown = out[out > 0]
    if shown.size > 100:
        lo, hi = (float(v) for v in np.percentile(shown, (1.0, 99.5)))
        if hi > lo:
            out = np.where(out > 0, (out - lo) / (hi - lo), 0.0)
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class LevelLabel:
    """One level's label: where its leader line ends on the slice, and the text in coloured runs."""

    position: str
    target: Tuple[float, float]                 # grid coordinates
    runs: Tuple[Tuple[str, str], ...]           # (text, colour)


def level_labels(report: PatientReport) -> List[LevelLabel]:
    """The 11 labels, top to bottom: a vertebra's canal grade, a disc's disc and canal grades, in words."""
    s = MID_SAGITTAL_SLICE
    g = report.grades
    outside = set(report.boxes.outside_positions)
    labels = []
    for p in CANAL_POSITIONS:
        if p in DISCS:
            b = report.boxes.discs[s][p].box
            target = (b.cx, b.cy)
        else:
            b = report.boxes.vertebrae[s][p].box
            target = body_centre(b, p)
            # the leader ends on the body's anterior edge, not across the body
            target = (b.x1 if ANTERIOR_SIGN_X < 0 else b.x2, target[1])
        runs: List[Tuple[str, str]] = [(p, "#ffffff")]
        if p in outside:
            runs.append((f"  {OUTSIDE_WORDS}", OUTSIDE_COLOUR))
        else:
            canal = int(g.canal_grades[CANAL_POSITIONS.index(p)])
            if p in DISCS:
                disc = int(g.disc_grades[DISCS.index(p)])
                runs += [("  disc ", "#bdbdbd"), (DISC_WORDS[disc], GRADE_COLOURS[disc])]
                runs += [("  canal ", "#bdbdbd"), (CANAL_WORDS[canal], GRADE_COLOURS[canal])]
            else:
                runs += [("  canal ", "#bdbdbd"), (CANAL_WORDS[canal], GRADE_COLOURS[canal])]
                if report.boxes.vertebrae[s][p].interpolated:
                    runs.append(("  (interpolated)", INTERPOLATED_COLOUR))
        labels.append(LevelLabel(p, target, tuple(runs)))
    return labels


def spread(ys: Sequence[float], gap: float, low: float, high: float) -> List[float]:
    """Label heights in order, each at least `gap` below the one before, kept within [low, high], each as
    near its own level as that allows."""
    out = [min(max(y, low), high) for y in ys]
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1] + gap)
    if out and out[-1] > high:
        out[-1] = high
        for i in range(len(out) - 2, -1, -1):
            out[i] = min(out[i], out[i + 1] - gap)
    return out


def _dashed_rect(x1, y1, x2, y2, colour: str, dash: str, css: str) -> str:
    return (f'<rect class="{css}" x="{x1:.1f}" y="{y1:.1f}" width="{x2 - x1:.1f}" height="{y2 - y1:.1f}" '
            f'fill="none" stroke="{colour}" stroke-width="1.6" stroke-dasharray="{dash}"/>')


def _corners(x1, y1, x2, y2, colour: str) -> str:
    """Corner marks of a box (a quarter of each side): the body stays visible between them."""
    ax, ay = (x2 - x1) * 0.25, (y2 - y1) * 0.25
    d = (f"M{x1:.1f},{y1 + ay:.1f}V{y1:.1f}H{x1 + ax:.1f} M{x2 - ax:.1f},{y1:.1f}H{x2:.1f}V{y1 + ay:.1f} "
         f"M{x2:.1f},{y2 - ay:.1f}V{y2:.1f}H{x2 - ax:.1f} M{x1 + ax:.1f},{y2:.1f}H{x1:.1f}V{y2 - ay:.1f}")
    return f'<path class="detected" d="{d}" fill="none" stroke="{colour}" stroke-width="2"/>'


def panel_svg(study: Study, report: PatientReport, image_uri_of) -> str:
    """The panel as an inline <svg>: image_uri_of(uint8 array) -> data: URI of the zoomed slice."""
    s = MID_SAGITTAL_SLICE
    outside = set(report.boxes.outside_positions)
    all_boxes = [report.boxes.vertebrae[s][lv].box for lv in VERTEBRAE] + [report.boxes.discs[s][d].box for d in DISCS]
    zoom = column_zoom(all_boxes, study.mid_sagittal.shape)
    picture = zoomed_image(study.mid_sagittal, zoom)
    img_h, img_w = picture.shape
    labels_left = ANTERIOR_SIGN_X < 0          # labels on the anterior side: leader lines cross no canal
    img_x = LABEL_WIDTH if labels_left else 0
    width, height = LABEL_WIDTH + img_w, img_h
    parts = [f'<svg class="sagittal-panel" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="mid-sagittal slice {html.escape(report.patient_id)}'
             ' with one label per level">',
             f'<rect width="{width}" height="{height}" fill="{BACKGROUND}"/>',
             f'<image href="{image_uri_of(picture)}" x="{img_x}" y="0" width="{img_w}" height="{img_h}"/>']

    def box_xy(b: Box):
        (x1, y1), (x2, y2) = zoom.to_panel(b.x1, b.y1, img_x), zoom.to_panel(b.x2, b.y2, img_x)
        return x1, y1, x2, y2

    for lv in VERTEBRAE:
        lb = report.boxes.vertebrae[s][lv]
        if lv in outside:
            parts.append(_dashed_rect(*box_xy(lb.box), OUTSIDE_COLOUR, "3 3", "outside"))
        elif lb.interpolated:
            parts.append(_dashed_rect(*box_xy(lb.box), INTERPOLATED_COLOUR, "6 4", "interpolated"))
        else:   # the body without the box padding, so that neighbouring marks do not cross
            b = lb.box
            pad = min(BOX_PADDING_PX, b.width / 4, b.height / 4)
            parts.append(_corners(*box_xy(Box(b.x1 + pad, b.y1 + pad, b.x2 - pad, b.y2 - pad)), DETECTED_COLOUR))
    labels = level_labels(report)
    targets = [zoom.to_panel(*lab.target, img_x) for lab in labels]
    ys = spread([t[1] for t in targets], LABEL_GAP, FONT_SIZE, height - 6)
    text_x = LABEL_WIDTH - 14 if labels_left else img_w + 14
    anchor = "end" if labels_left else "start"
    g = report.grades
    for lab, (tx, ty), y in zip(labels, targets, ys):
        elbow = LABEL_WIDTH - 6 if labels_left else img_w + 6
        parts.append(f'<polyline class="leader" points="{elbow:.1f},{y:.1f} {tx:.1f},{ty:.1f}" fill="none" '
                     f'stroke="{LEADER_COLOUR}" stroke-width="1" stroke-opacity="0.85"/>')
        if lab.position in DISCS:
            if lab.position in outside:
                parts.append(f'<circle class="outside" cx="{tx:.1f}" cy="{ty:.1f}" r="4" fill="none" '
                             f'stroke="{OUTSIDE_COLOUR}" stroke-width="1.5"/>')
            else:
                colour = GRADE_COLOURS[int(g.disc_grades[DISCS.index(lab.position)])]
                parts.append(f'<circle class="disc" cx="{tx:.1f}" cy="{ty:.1f}" r="4.5" fill="{colour}" '
                             f'stroke="{BACKGROUND}" stroke-width="1.5"/>')
        else:
            parts.append(f'<circle cx="{tx:.1f}" cy="{ty:.1f}" r="2" fill="{LEADER_COLOUR}"/>')
        bold = ' font-weight="bold"'
        runs = "".join(f'<tspan fill="{colour}"{bold if k == 0 else ""}>{html.escape(text)}</tspan>'
                       for k, (text, colour) in enumerate(lab.runs))
        parts.append(f'<text class="level-label" data-level="{html.escape(lab.position)}" x="{text_x}" '
                     f'y="{y + FONT_SIZE * 0.35:.1f}" text-anchor="{anchor}" font-size="{FONT_SIZE}" '
                     f'style="white-space:pre">{runs}</text>')
    parts.append("</svg>")
    return "".join(parts)
