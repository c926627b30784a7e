"""The batch page report.html: every patient's labelled sagittal panel, grades in words, measurements and
axial images, flags first; offline, opens from disk."""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Dict, Optional, Sequence

from common.files import atomic_write
from detector.boxes import OUTSIDE_FOV
from study.levels import ALIGNMENT_CLASSES, CANAL_POSITIONS, CURVATURE_CLASSES, DISCS

from .panel import (
    BACKGROUND, CANAL_WORDS, DETECTED_COLOUR, DISC_WORDS, GRADE_COLOURS, INTERPOLATED_COLOUR, OUTSIDE_COLOUR,
)
from .patient import PatientReport

# Said on the page and in `run`'s console summary (README, "Real scans").
MODEL_NOTE = ("the models were trained on synthetic phantoms, not validated on real patients: on 3 real scans the "
              "levels were mostly placed right, but no grade, curvature or alignment has been validated on real MRI. "
              "Not for diagnosis.")

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em;background:#fafafa;color:#222}
h1{font-size:1.4em} .summary{margin-bottom:1em}
.banner{background:#fff4d6;border:1px solid #e0b84a;border-radius:6px;padding:.6em 1em;margin:.5em 0 1em;
  max-width:1100px}
.patient{background:#fff;border:1px solid #ddd;border-radius:6px;padding:1em;margin:1em 0}
.patient.review{border:2px solid #d33}
.flag{background:#fde2e2;color:#a11;padding:.2em .5em;border-radius:4px;margin:.1em;display:inline-block}
.row{display:flex;gap:1.2em;flex-wrap:wrap;align-items:flex-start}
.sagittal-panel{display:block;border-radius:4px;max-width:100%;height:auto}
.legend{list-style:none;padding:0;margin:.4em 0;font-size:.85em;line-height:1.7}
.legend svg{vertical-align:middle;margin-right:.4em}
.legend .chip{display:inline-block;width:.9em;height:.9em;border-radius:2px;vertical-align:middle;margin-right:.4em}
.axials{display:grid;grid-template-columns:repeat(6,112px);gap:6px}
.axials figure{margin:0;font-size:.72em;text-align:center;line-height:1.2}
.axials img{display:block}
table{border-collapse:collapse;font-size:.85em} td,th{border:1px solid #ddd;padding:.15em .5em;text-align:left}
.g0{background:#e3f6e8}.g1{background:#fbf5d0}.g2{background:#fde3c8}.g3{background:#f9d0d0}
.errors{background:#fff3f3;border:1px solid #e99;padding:.5em 1em;border-radius:6px}
.note{color:#666;font-size:.85em}
.outside{background:repeating-linear-gradient(45deg,#eee,#eee 4px,#ddd 4px,#ddd 8px);color:#666}
.outside-note{max-width:680px}
.measures{margin:.3em 0}
"""


NOT_GRADED = f"{OUTSIDE_FOV} \u2014 not graded"
_OUTSIDE_CELL = f'<td class="outside" title="{html.escape(NOT_GRADED)}">&ndash;</td>'


def failure_text(patient_id: str, message: str) -> str:
    """An errors.json message without the patient it names first (where it is shown, the patient is named)."""
    for prefix in (f"patient {patient_id}, ", f"patient {patient_id}: "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def _grade_cell(words: Sequence[str], grade: int, probs) -> str:
    p = f" (p={float(probs[grade]):.2f})" if probs is not None else ""
    return f'<td class="g{grade}" title="grade {grade}{p}">{html.escape(words[grade])}</td>'


def _grades_table(r: PatientReport) -> str:
    """One row per position, top to bottom: the disc and canal grades in words."""
    g = r.grades
    rows = []
    for i, p in enumerate(CANAL_POSITIONS):
        if p in g.not_graded:
            disc = _OUTSIDE_CELL if p in DISCS else "<td></td>"
            canal = _OUTSIDE_CELL
        else:
            k = DISCS.index(p) if p in DISCS else None
            disc = _grade_cell(DISC_WORDS, int(g.disc_grades[k]), g.disc_probabilities[k]) if k is not None \
                else "<td></td>"
            canal = _grade_cell(CANAL_WORDS, int(g.canal_grades[i]), g.canal_probabilities[i])
        rows.append(f"<tr><th>{html.escape(p)}</th>{disc}{canal}</tr>")
    table = f"<table><tr><th></th><th>disc</th><th>canal</th></tr>{''.join(rows)}</table>"
    if g.not_graded:
        table += (f'<p class="note outside-note"><b>{html.escape(", ".join(g.not_graded))}</b>: '
                  f"{html.escape(NOT_GRADED)} (&ndash;); predictions.json holds the training labels' most frequent "
                  "grade there, which is no reading of this patient.</p>")
    return table


def _number(features: Dict[str, float], key: str) -> Optional[float]:
    v = features.get(key)
    return None if v is None or not math.isfinite(float(v)) else float(v)


def _measures_line(r: PatientReport) -> str:
    """The measured C2-C7 angle, curvature index and largest listhesis (posterior-wall step) the classes rest on."""
    c = r.curve
    if c.not_assessed:
        return ""
    f = c.features
    parts = []
    angle = _number(f, "c2c7_angle_deg")
    if angle is not None:
        parts.append(f"C2-C7 angle <b>{angle:.1f}&deg;</b> (lordosis positive)")
    index = _number(f, "curvature_index")
    if index is not None:
        parts.append(f"curvature index <b>{index:.1f}</b>")
    steps = {d: _number(f, f"posterior_step_{d}") for d in DISCS}
    steps = {d: v for d, v in steps.items() if v is not None}
    if steps:
        d = max(steps, key=lambda k: abs(steps[k]))
        mm = _number(f, "posterior_step_max_mm")
        size = f"{mm:.1f} mm" if mm is not None else f"{abs(steps[d]):.2f} of a body depth"
        parts.append(f"largest listhesis (posterior-wall step beyond the curve) <b>{size}</b> at {html.escape(d)}")
    return f'<p class="measures">measured: {" &middot; ".join(parts)}</p>' if parts else ""


def _curve_line(r: PatientReport) -> str:
    c = r.curve
    if c.not_assessed:
        return (f'<p>curvature and alignment: <b class="outside">not assessed</b> ({html.escape(c.not_assessed)}'
                f") &middot; boxes: {html.escape(r.box_source)}</p>")
    return f"""<p>curvature: <b>{html.escape(CURVATURE_CLASSES[c.curvature])}</b>
 (p={max(c.curvature_probs):.2f}) &middot; alignment: <b>{html.escape(ALIGNMENT_CLASSES[c.alignment])}</b>
 (p={c.alignment_probs[c.alignment]:.2f}) &middot; boxes: {html.escape(r.box_source)}</p>"""


def _swatch(kind: str) -> str:
    """A small picture of one mark of the sagittal panel, for the legend."""
    body = {
        "detected": f'<path d="M2,6V2H6 M14,2H18V6 M18,14V18H14 M6,18H2V14" fill="none" stroke="{DETECTED_COLOUR}" '
                    'stroke-width="2"/>',
        "interpolated": f'<rect x="2" y="2" width="16" height="16" fill="none" stroke="{INTERPOLATED_COLOUR}" '
                        'stroke-width="1.6" stroke-dasharray="6 4"/>',
        "outside": f'<rect x="2" y="2" width="16" height="16" fill="none" stroke="{OUTSIDE_COLOUR}" '
                   'stroke-width="1.6" stroke-dasharray="3 3"/>',
        "disc": f'<circle cx="10" cy="10" r="5" fill="{GRADE_COLOURS[1]}"/>',
    }[kind]
    return f'<svg width="20" height="20" viewBox="0 0 20 20"><rect width="20" height="20" fill="{BACKGROUND}"/>{body}</svg>'


def legend() -> str:
    """Every colour and mark of the panel, the table and the thumbnails."""
    grades = "".join(f'<li><span class="chip" style="background:{colour}"></span>disc {html.escape(DISC_WORDS[k])} '
                     f"&middot; canal {html.escape(CANAL_WORDS[k])}</li>" for k, colour in enumerate(GRADE_COLOURS))
    return f"""<ul class="legend">
<li>{_swatch("detected")}vertebra found by the detector on this slice (or given with --boxes)</li>
<li>{_swatch("interpolated")}vertebra not found on this slice: placed between its neighbours (interpolated)</li>
<li>{_swatch("outside")}outside the field of view: not graded</li>
<li>{_swatch("disc")}disc centre, in its disc grade's colour; each label's leader line ends on its level</li>
{grades}
</ul>"""


def patient_section(r: PatientReport, pictures: Dict[str, str]) -> str:
    """One patient's block (pictures: axial data: URIs by position, "sagittal_panel": inline SVG)."""
    flags = "".join(f'<span class="flag">{html.escape(x)}</span>' for x in r.review_reasons)
    warns = "".join(f"<li>{html.escape(w)}</li>" for w in r.warnings)
    axials = []
    for p in CANAL_POSITIONS:
        if p in r.grades.not_graded:
            caption = f"{html.escape(p)}: not graded (outside the field of view)"
        else:
            grade = int(r.grades.canal_grades[CANAL_POSITIONS.index(p)])
            caption = f"{html.escape(p)}: canal {html.escape(CANAL_WORDS[grade])}"
        axials.append(f'<figure><img src="{pictures[p]}" width="112" height="112" alt="axial {html.escape(p)}">'
                      f"<figcaption>{caption}</figcaption></figure>")
    return f"""
<section class="patient{' review' if r.needs_review else ''}" id="p-{html.escape(r.patient_id)}">
<h2>{html.escape(r.patient_id)}</h2>
<div>{flags or '<span class="note">no review flags</span>'}</div>
{_curve_line(r)}
{_measures_line(r)}
<div class="row">
<div>{pictures['sagittal_panel']}{legend()}</div>
<div>{_grades_table(r)}</div>
<div><p class="note">axial images, framed in their canal grade's colour</p><div class="axials">{''.join(axials)}</div></div>
</div>
{f'<ul class="note">{warns}</ul>' if warns else ''}
</section>"""


def write_report_html(path: Path, sections: Sequence[str], errors: Sequence[Dict[str, str]],
                      summary: str) -> None:
    """Assemble the page atomically (temporary file, then rename)."""
    err_html = ""
    if errors:
        items = "".join(f"<li><b>{html.escape(e['id'])}</b>: {html.escape(failure_text(e['id'], e['error']))}</li>"
                        for e in errors)
        err_html = f'<div class="errors"><h2>Failed patients ({len(errors)})</h2><ul>{items}</ul></div>'
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Cervical spine MRI reading</title>
<style>{_CSS}</style></head><body>
<h1>Cervical spine MRI reading</h1>
<p class="banner"><b>Research software.</b> {html.escape(MODEL_NOTE[0].upper() + MODEL_NOTE[1:])}</p>
<p class="summary">{html.escape(summary)}</p>
<p class="note">Each patient: the mid-sagittal slice zoomed on the column, one label per level (grades in words),
the measured curve, a table of the grades and the axial images. Patients flagged for review have a red border and
their reasons in red: their grades should not be trusted without a human look.</p>
{err_html}
{''.join(sections)}
</body></html>
"""
    # errors=: a file name that is not UTF-8 (lone surrogates in Python) shows as \udcXX, not a failed page.
    atomic_write(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8", errors="backslashreplace"))
