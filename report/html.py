"""The batch page report.html: every patient's picture and grades, flags first; offline, opens from disk."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Dict, List, Sequence

from common.files import atomic_write
from detector.boxes import OUTSIDE_FOV
from study.levels import (
    ALIGNMENT_CLASSES, CANAL_GRADES, CANAL_POSITIONS, CURVATURE_CLASSES, DISC_GRADES, DISCS,
)

from .patient import PatientReport

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em;background:#fafafa;color:#222}
h1{font-size:1.4em} .summary{margin-bottom:1em}
.patient{background:#fff;border:1px solid #ddd;border-radius:6px;padding:1em;margin:1em 0}
.patient.review{border:2px solid #d33}
.flag{background:#fde2e2;color:#a11;padding:.2em .5em;border-radius:4px;margin:.1em;display:inline-block}
.row{display:flex;gap:1em;flex-wrap:wrap;align-items:flex-start}
.axials{display:grid;grid-template-columns:repeat(6,112px);gap:4px}
table{border-collapse:collapse;font-size:.85em} td,th{border:1px solid #ddd;padding:.15em .4em;text-align:center}
.g0{background:#e3f6e8}.g1{background:#fbf5d0}.g2{background:#fde3c8}.g3{background:#f9d0d0}
.errors{background:#fff3f3;border:1px solid #e99;padding:.5em 1em;border-radius:6px}
.note{color:#666;font-size:.85em}
.outside{background:repeating-linear-gradient(45deg,#eee,#eee 4px,#ddd 4px,#ddd 8px);color:#666}
.outside-note{max-width:680px}
"""


NOT_GRADED = f"{OUTSIDE_FOV} \u2014 not graded"
_OUTSIDE_CELL = f'<td class="outside" title="{html.escape(NOT_GRADED)}">&ndash;</td>'


def _grades_table(r: PatientReport) -> str:
    g = r.grades
    head = "".join(f"<th>{html.escape(p)}</th>" for p in CANAL_POSITIONS)
    canal = "".join(_OUTSIDE_CELL if p in g.not_graded else
                    f'<td class="g{c}" title="{html.escape(CANAL_GRADES[c])}">{c}</td>'
                    for p, c in zip(CANAL_POSITIONS, g.canal_grades))
    disc_cells = []
    for p in CANAL_POSITIONS:
        if p in g.not_graded and p in DISCS:
            disc_cells.append(_OUTSIDE_CELL)
        elif p in DISCS:
            d = g.disc_grades[DISCS.index(p)]
            disc_cells.append(f'<td class="g{d}" title="{html.escape(DISC_GRADES[d])}">{d}</td>')
        else:
            disc_cells.append("<td></td>")
    table = (f"<table><tr><th></th>{head}</tr><tr><th>canal</th>{canal}</tr>"
             f"<tr><th>disc</th>{''.join(disc_cells)}</tr></table>")
    if g.not_graded:
        table += (f'<p class="note outside-note"><b>{html.escape(", ".join(g.not_graded))}</b>: '
                  f"{html.escape(NOT_GRADED)} (&ndash;); predictions.json holds the training labels' most frequent "
                  "grade there, which is no reading of this patient.</p>")
    return table


def _curve_line(r: PatientReport) -> str:
    c = r.curve
    if c.not_assessed:
        return (f'<p>curvature and alignment: <b class="outside">not assessed</b> ({html.escape(c.not_assessed)}'
                f") &middot; boxes: {html.escape(r.box_source)}</p>")
    return f"""<p>curvature: <b>{html.escape(CURVATURE_CLASSES[c.curvature])}</b>
 (p={max(c.curvature_probs):.2f}) &middot; alignment: <b>{html.escape(ALIGNMENT_CLASSES[c.alignment])}</b>
 (p={c.alignment_probs[c.alignment]:.2f}) &middot; boxes: {html.escape(r.box_source)}</p>"""


def patient_section(r: PatientReport, pictures: Dict[str, str]) -> str:
    """One patient's block (pictures are data: URIs)."""
    flags = "".join(f'<span class="flag">{html.escape(x)}</span>' for x in r.review_reasons)
    warns = "".join(f"<li>{html.escape(w)}</li>" for w in r.warnings)
    axials = "".join(f'<img src="{pictures[p]}" width="112" height="112" alt="axial {html.escape(p)}">'
                     for p in CANAL_POSITIONS)
    return f"""
<section class="patient{' review' if r.needs_review else ''}" id="p-{html.escape(r.patient_id)}">
<h2>{html.escape(r.patient_id)}</h2>
<div>{flags or '<span class="note">no review flags</span>'}</div>
{_curve_line(r)}
<div class="row">
<img src="{pictures['sagittal']}" width="448" height="448" alt="mid-sagittal with levels">
<div><div class="axials">{axials}</div>{_grades_table(r)}</div>
</div>
{f'<ul class="note">{warns}</ul>' if warns else ''}
</section>"""


def write_report_html(path: Path, sections: Sequence[str], errors: Sequence[Dict[str, str]],
                      summary: str) -> None:
    """Assemble the page atomically (temporary file, then rename)."""
    err_html = ""
    if errors:
        items = "".join(f"<li><b>{html.escape(e['id'])}</b>: {html.escape(e['error'])}</li>" for e in errors)
        err_html = f'<div class="errors"><h2>Failed patients ({len(errors)})</h2><ul>{items}</ul></div>'
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Cervical spine MRI reading</title>
<style>{_CSS}</style></head><body>
<h1>Cervical spine MRI reading</h1>
<p class="summary">{html.escape(summary)}</p>
<p class="note">Grades: disc 0 normal, 1 bulge, 2 protrusion, 3 extrusion; canal 0 none, 1 mild, 2 cord compressed,
3 compressed with signal change. Colours green/yellow/orange/red by grade; purple boxes were interpolated;
dashed grey boxes and &ndash; lie outside the field of view and are not graded.
Patients flagged for review have a red border: their grades should not be trusted without a human look.</p>
{err_html}
{''.join(sections)}
</body></html>
"""
    # errors=: a file name that is not UTF-8 (lone surrogates in Python) shows as \udcXX, not a failed page.
    atomic_write(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8", errors="backslashreplace"))
