"""The `geometry` command: curve measures and curvature/alignment calls for every patient of a box file.

Exit codes: 0 every patient assessed; 1 some patients failed (their rows carry an "error"); 2 the box
file or the weights are unusable (nothing written).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Dict, List, Optional

from common.files import write_json_atomic
from study.challenge import read_box_file
from study.errors import InputError
from study.levels import ALIGNMENT_CLASSES, CURVATURE_CLASSES

from .model import CurveAssessment, default_weights_dir, load_fusion, predict

EXIT_OK, EXIT_SOME_FAILED, EXIT_UNUSABLE = 0, 1, 2


def assessment_row(a: CurveAssessment) -> Dict[str, object]:
    """The JSON row of one assessed patient (NaN measures become null)."""
    return {
        "id": a.patient_id,
        "curvature": a.curvature_name,
        "curvature_probs": {c: round(p, 4) for c, p in zip(CURVATURE_CLASSES, a.curvature_probs)},
        "alignment": a.alignment_name,
        "alignment_probs": {c: round(p, 4) for c, p in zip(ALIGNMENT_CLASSES, a.alignment_probs)},
        "measures": {k: (None if not math.isfinite(v) else round(float(v), 4)) for k, v in a.features.items()},
        "warnings": list(a.warnings),
    }


def _input_order(boxes_file: Path) -> Dict[str, int]:
    """Patient id -> first row index in the box file, so the output keeps the input order."""
    import json
    try:
        data = json.loads(Path(boxes_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    order: Dict[str, int] = {}
    for i, row in enumerate(data if isinstance(data, list) else []):
        if isinstance(row, dict) and "id" in row:
            order.setdefault(str(row["id"]), i)
    return order


def geometry_command(boxes_file: Path, out_file: Path, weights_dir: Optional[Path] = None) -> int:
    """Write one JSON row per patient of `boxes_file` to `out_file`; see the module docstring for exit codes."""
    weights_dir = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    try:
        model = load_fusion(weights_dir)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: cannot load fusion weights from {weights_dir}: {e}", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        contents = read_box_file(boxes_file)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_UNUSABLE
    if Path(out_file).resolve() == Path(boxes_file).resolve():
        print("error: --out must not overwrite the input box file", file=sys.stderr)
        return EXIT_UNUSABLE

    rows: List[Dict[str, object]] = []
    failed = 0
    for err in contents.errors:  # rows the reader could not parse (malformed strings, missing levels, ...)
        failed += 1
        rows.append({"id": err.patient, "error": err.problem})
        print(f"error: {err}", file=sys.stderr)
    for p in contents.patients:
        try:
            a = predict(model, p)
        except InputError as e:
            failed += 1
            rows.append({"id": p.patient_id, "error": e.problem})
            print(f"error: patient {p.patient_id}: {e.problem}", file=sys.stderr)
            continue
        for w in a.warnings:
            print(f"warning: patient {p.patient_id}: {w}", file=sys.stderr)
        rows.append(assessment_row(a))
    order = _input_order(boxes_file)
    rows.sort(key=lambda r: order.get(str(r.get("id")), len(order)))
    write_json_atomic(out_file, rows)
    n = len(rows)
    print(f"geometry: {n - failed} of {n} patients assessed, {failed} failed -> {out_file}", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK
