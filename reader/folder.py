"""A run folder: what `run` writes for a batch the Reader reads (predictions.json, reports/, report.html,
errors.json, run.json, crops/), every file atomically."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from common.files import remove_stale_temporaries, write_json_atomic
from study.challenge import PatientLabels, write_labels
from study.errors import InputError
from study.inputs import InputSource, private_path

from .core import GivenBoxes, PatientFailure, PatientResult, Reader


@dataclass
class RunSummary:
    """What a run read: reports by patient id in input order, failures as errors.json lists them."""

    order: List[str]
    reports: Dict[str, object] = field(default_factory=dict)     # id -> report.patient.PatientReport
    errors: List[Dict[str, str]] = field(default_factory=list)
    line: str = ""

    @property
    def exit_code(self) -> int:
        """0 every patient read (flagged ones included), 1 some failed."""
        return 1 if self.errors else 0


class RunFolder:
    """Writes one patient's outputs as soon as it is read; finish() writes the batch files.

    run.json is written first, with "complete": false and every file the run may write (reader.outputs), and
    again by finish(), with "complete": true and the files it wrote: a later run knows which files are this
    run's."""

    def __init__(self, out_dir: Path, dump_crops: bool = False, truth: Optional[Mapping[str, PatientLabels]] = None,
                 patient_ids: Sequence[str] = (), run_info: Optional[Mapping[str, object]] = None):
        from .outputs import RUN_JSON, planned_outputs
        self.out_dir = Path(out_dir)
        self.dump_dir = self.out_dir / "crops" if dump_crops else None
        self.truth = dict(truth or {})
        self.patient_ids = list(patient_ids)
        self.sections: List[str] = []
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # A run killed mid-write leaves hidden temporaries (never a truncated output); this run clears them.
        for folder, below in ((self.out_dir, False), (self.out_dir / "reports", False), (self.out_dir / "crops", True)):
            remove_stale_temporaries(folder, recursive=below)
        write_json_atomic(self.out_dir / RUN_JSON, {**dict(run_info or {}), "complete": False,
                                                    "outputs": planned_outputs(self.patient_ids, dump_crops)})

    def add(self, result: PatientResult, summary: RunSummary) -> None:
        """The patient's report JSON, crop dump and HTML section; a failure here fails that patient alone."""
        from report.draw import patient_pictures
        from report.html import patient_section
        pid = result.patient_id
        try:
            if self.dump_dir is not None:
                from classifier.dump import dump_patient
                dump_patient(self.dump_dir, result.crops, result.study, result.grades, self.truth.get(pid))
            pictures = patient_pictures(result.study, result.report)
            write_json_atomic(self.out_dir / "reports" / f"{pid}.json", result.report.to_dict())
            summary.reports[pid] = result.report
            self.sections.append(patient_section(result.report, pictures))
        except Exception as e:  # one bad patient never stops the batch
            self.fail(PatientFailure(pid, "outputs", str(e) if isinstance(e, InputError) else f"{type(e).__name__}: {e}"),
                      summary)

    @staticmethod
    def fail(failure: PatientFailure, summary: RunSummary) -> None:
        summary.errors.append({"id": failure.patient_id, "error": failure.message})

    def finish(self, summary: RunSummary, run_info: Mapping[str, object], seconds: float) -> None:
        from report.html import write_report_html

        from .outputs import RUN_JSON, written_files
        write_labels(self.out_dir / "predictions.json",
                     [summary.reports[pid].challenge_labels() for pid in summary.order if pid in summary.reports])
        write_json_atomic(self.out_dir / "errors.json", summary.errors)
        done = sum(pid in summary.reports for pid in summary.order)
        summary.line = (f"{len(summary.order)} patient(s): {done} read, {len(summary.errors)} failed, "
                        f"{sum(r.needs_review for r in summary.reports.values())} flagged for review, {seconds:.1f} s")
        write_report_html(self.out_dir / "report.html", self.sections, summary.errors, summary.line)
        # Last: a run.json saying "complete" means every output above is in place.
        write_json_atomic(self.out_dir / RUN_JSON, {**dict(run_info), "complete": True, "outputs": written_files(
            self.out_dir, self.patient_ids, self.dump_dir is not None)})


def read_into_folder(reader: Reader, patients: Sequence[InputSource], out_dir: Path, *,
                     given: Optional[GivenBoxes] = None, dump_crops: bool = False,
                     truth: Optional[Mapping[str, PatientLabels]] = None, batch_size: int = 16,
                     run_info: Optional[Mapping[str, object]] = None, input_dir: Optional[Path] = None,
                     started: Optional[float] = None) -> RunSummary:
    """Read `patients` batch by batch with `reader` and write the run folder; returns what was read.

    run_info: the arguments run.json records (stage seconds and the redacted input path are added).
    """
    t0 = time.perf_counter() if started is None else started
    from tqdm import tqdm

    info = dict(run_info or {})
    if input_dir is not None:
        info = {"input": private_path(input_dir, list(patients)), **info}
    info["patients"] = len(patients)
    folder = RunFolder(out_dir, dump_crops, truth, [p.patient_id for p in patients], info)
    summary = RunSummary([p.patient_id for p in patients])
    clock = reader.clock
    bar = tqdm(total=len(patients), desc="patients", unit="patient", disable=None)
    for start in range(0, len(patients), batch_size):
        outcomes = reader.read_sources(patients[start:start + batch_size], given)
        # errors.json lists a batch's unreadable inputs first, then the patients that failed later, in order
        for failure in (o for o in outcomes if isinstance(o, PatientFailure) and o.stage == "load"):
            folder.fail(failure, summary)
            bar.update(1)
        for o in outcomes:
            if isinstance(o, PatientFailure):
                if o.stage != "load":
                    folder.fail(o, summary)
                    bar.update(1)
                continue
            with clock("outputs"):
                folder.add(o, summary)
            bar.update(1)
    bar.close()
    clock.seconds["total"] = time.perf_counter() - t0
    info["stage_seconds"] = {k: round(v, 3) for k, v in clock.seconds.items()}
    folder.finish(summary, info, time.perf_counter() - t0)
    return summary


def run_folder(input_dir: Path, out_dir: Path, weights_dir: Path, *, boxes_file: Optional[Path] = None,
               dump_crops: bool = False, labels_file: Optional[Path] = None, device: str = "cpu",
               batch_size: int = 16, reader: Optional[Reader] = None, echo: Callable[..., None] = None,
               overwrite: bool = False) -> int:
    """`run`: read every patient under input_dir into out_dir; returns the exit code (0 all read, 1 some
    failed, 2 the input folder, the box file, the output folder, the device or the weights are unusable).
    reader: one already loaded (its weights_dir is then what run.json records).

    out_dir must be new or empty, or hold the same run killed midway (which this completes); one holding
    another run's outputs is refused, changing nothing, unless `overwrite`: then that run's files (the ones
    its run.json lists) are removed once the models have loaded, and only those (reader.outputs)."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # before torch loads (reader.core.passive_openmp_waiting)
    from study.challenge import read_labels
    from study.inputs import find_inputs

    from .clock import StageClock
    from .core import ReaderError, check_device
    from .outputs import claim_out_folder, run_key

    echo = echo or _echo
    t0 = time.perf_counter()
    key = run_key(input_dir, boxes_file, labels_file, dump_crops, weights_dir)
    try:
        patients = find_inputs(input_dir)
        given = GivenBoxes.read(boxes_file) if boxes_file is not None else None
        # Known labels are drawn beside the predictions on the crop sheets; they change no prediction.
        truth = {lab.patient_id: lab for lab in read_labels(labels_file)} if labels_file is not None else {}
        previous = claim_out_folder(out_dir, key, overwrite)     # before anything is loaded or written
        if reader is None:
            check_device(device)                       # before any model is loaded
            clock = StageClock()
            with clock("model load"):
                reader = Reader.from_weights(weights_dir, device, detector=given is None, clock=clock)
        else:
            reader.clock = StageClock()
    except (InputError, ReaderError, FileNotFoundError) as e:
        echo(f"error: {e}", err=True)
        return 2
    if previous is not None:
        n = previous.remove()
        echo(f"{out_dir}: completing the interrupted run there (its {n} file(s) are written again)"
             if previous.resumed_by(key) else
             f"--overwrite: removed the {n} file(s) of the previous run in {out_dir} (those its run.json lists); "
             "nothing else there was touched")
    info = {"boxes": str(boxes_file) if boxes_file else None, "device": device, "batch_size": batch_size,
            "weights": str(weights_dir), "dump_crops": dump_crops,
            "run_key": key}
    summary = read_into_folder(reader, patients, out_dir, given=given, dump_crops=dump_crops, truth=truth,
                               batch_size=batch_size, run_info=info, input_dir=input_dir, started=t0)
    for line in console_summary(summary, out_dir, dump_crops):
        echo(line, err=line.startswith("failed: "))
    return summary.exit_code


MAX_FLAGGED_SHOWN = 5


def console_summary(summary: RunSummary, out_dir: Path, dump_crops: bool) -> List[str]:
    """What `run` prints at the end: failures, levels not graded, the count line, why patients were flagged
    (the first reason of at most MAX_FLAGGED_SHOWN of them, then where the full list is), the models'
    standing and where the outputs are."""
    from report.html import MODEL_NOTE, failure_text

    lines = [f"failed: {e['id']}: {failure_text(e['id'], e['error'])}" for e in summary.errors]
    for pid in summary.order:
        if pid in summary.reports and summary.reports[pid].boxes.outside_fov:
            lines.append(f"{pid}: {', '.join(summary.reports[pid].boxes.outside_fov)} outside the field of view, "
                         "not graded")
    lines.append(summary.line)
    flagged = [pid for pid in summary.order if pid in summary.reports and summary.reports[pid].needs_review]
    for pid in flagged[:MAX_FLAGGED_SHOWN]:
        reasons = summary.reports[pid].review_reasons
        more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
        lines.append(f"  review {pid}: {reasons[0]}{more}")
    if flagged:
        lines.append(("  ... and " + f"{len(flagged) - MAX_FLAGGED_SHOWN} more flagged; " if len(flagged) > MAX_FLAGGED_SHOWN
                      else "  ") + f"every reason: {out_dir / 'report.html'} and \"review_reasons\" in "
                     f"{out_dir / 'reports'}/{{id}}.json")
    lines.append(f"note: {MODEL_NOTE}")
    lines.append(f"outputs: {out_dir / 'predictions.json'}, {out_dir / 'report.html'}, {out_dir / 'reports'}/"
                 + (f", {out_dir / 'crops'}/" if dump_crops else ""))
    return lines


def _echo(message: str, err: bool = False) -> None:
    print(message, file=sys.stderr if err else sys.stdout)
