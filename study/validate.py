"""`pipeline.py validate`: report per patient what is present, missing or odd, without running models."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Union

import click

from .errors import StudyError
from .levels import CANAL_POSITIONS, SAGITTAL_SLICES
from .loader import StudyReport, inspect_study

EXIT_OK, EXIT_UNUSABLE_PATIENT, EXIT_UNUSABLE_ROOT = 0, 1, 2


def validate_command(input_dir: Union[str, Path], require_all_axial: bool = False) -> int:
    """Print one OK/WARN/ERROR line per patient and a summary; return the exit code.

    0: every patient usable (warnings allowed); 1: at least one unusable; 2: the input itself is
    unusable. Missing axial images only warn by default, since later stages grade those positions
    from the sagittal view; require_all_axial=True makes them errors.
    """
    from .inputs import find_inputs

    try:
        patients = find_inputs(input_dir)
    except StudyError as e:
        _echo(f"ERROR {e}", err=True)
        return EXIT_UNUSABLE_ROOT
    usable = warned = unusable = 0
    for source in patients:
        try:
            report = (inspect_study(source.path, require_all_axial) if source.kind == "challenge"
                      else _inspect_scan(source))
        except Exception as e:  # a loader bug on one patient must not hide the others' results
            report = StudyReport(source.patient_id, source.path, None,
                                 (StudyError(f"unexpected error ({type(e).__name__}: {e})",
                                             patient=source.patient_id),),
                                 (), 0, 0)
        _echo(format_report(report))
        if not report.usable:
            unusable += 1
        else:
            usable += 1
            warned += bool(report.warnings)
    _echo(f"{len(patients)} patients: {usable} usable, {warned} with warnings, {unusable} unusable")
    return EXIT_UNUSABLE_PATIENT if unusable else EXIT_OK


def _inspect_scan(source) -> StudyReport:
    """A DICOM study or NIfTI volume: load it; axial slices are counted, matched to levels only by `run`."""
    from .inputs import load_input

    try:
        study = load_input(source)
    except StudyError as e:
        return StudyReport(source.patient_id, source.path, None, (e,), (), 0, 0)
    notes = tuple(study.warnings) + tuple(source.notes)
    return StudyReport(source.patient_id, source.path, study, (), notes, len(study.real_sagittal),
                       len(study.pending_axial))


def format_report(report: StudyReport) -> str:
    """One line: status, patient id, sagittal and axial counts, then the problems, errors first."""
    status = "ERROR" if not report.usable else "WARN" if report.warnings else "OK"
    if report.study is not None and report.study.pending_axial:
        # DICOM/NIfTI: axial slices are matched to the 11 positions only once `run` has placed the levels.
        axial = f"tra {report.axial_found} slices (matched to levels by run)"
    else:
        axial = f"tra {report.axial_found}/{len(CANAL_POSITIONS)}"
    line = f"{status:<5} {report.patient_id}  sag {report.sagittal_found}/{len(SAGITTAL_SLICES)}  {axial}"
    problems = [_error_text(e, report.path) for e in report.errors] + _grouped(report.warnings)
    if problems:
        line += "  | " + "; ".join(problems)
    return line


def _error_text(error: StudyError, patient_dir: Path) -> str:
    if error.path is None:
        return error.problem
    try:
        where = Path(error.path).relative_to(patient_dir).as_posix()
    except ValueError:
        where = error.path
    # The folder itself relates as '.', which reads worse than no prefix.
    return error.problem if where == "." else f"{where}: {error.problem}"


def _grouped(warnings: List[str]) -> List[str]:
    """Merge warnings that differ only in the file ('a.png: x', 'b.png: x' -> 'a.png, b.png: x').

    A 512x512 patient otherwise prints fourteen identical resize warnings on its line.
    """
    by_problem: Dict[str, List[str]] = {}
    for w in warnings:
        where, sep, problem = w.partition(": ")
        key = problem if sep else w
        by_problem.setdefault(key, []).append(where if sep else "")
    out = []
    for problem, files in by_problem.items():
        files = [f for f in files if f]
        if not files:
            out.append(problem)
        elif len(files) <= 3:
            out.append(f"{', '.join(files)}: {problem}")
        else:
            out.append(f"{files[0]} and {len(files) - 1} more: {problem}")
    return out


def _echo(line: str, err: bool = False) -> None:
    # Folder names that are not valid UTF-8 arrive as surrogate escapes; printing them raw would
    # crash the report halfway, so show them escaped instead.
    click.echo(line.encode("utf-8", "backslashreplace").decode("utf-8"), err=err)
