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
    """Writes one patient's outputs as soon as it is read; finish() writes the batch files."""

    def __init__(self, out_dir: Path, dump_crops: bool = False, truth: Optional[Mapping[str, PatientLabels]] = None):
        self.out_dir = Path(out_dir)
        self.dump_dir = self.out_dir / "crops" if dump_crops else None
        self.truth = dict(truth or {})
        self.sections: List[str] = []
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # A run killed mid-write leaves hidden temporaries (never a truncated output); this run clears them.
        for folder, below in ((self.out_dir, False), (self.out_dir / "reports", False), (self.out_dir / "crops", True)):
            remove_stale_temporaries(folder, recursive=below)

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
        write_json_atomic(self.out_dir / "run.json", dict(run_info))
        write_labels(self.out_dir / "predictions.json",
                     [summary.reports[pid].challenge_labels() for pid in summary.order if pid in summary.reports])
        write_json_atomic(self.out_dir / "errors.json", summary.errors)
        done = sum(pid in summary.reports for pid in summary.order)
        summary.line = (f"{len(summary.order)} patient(s): {done} read, {len(summary.errors)} failed, "
                        f"{sum(r.needs_review for r in summary.reports.values())} flagged for review, {seconds:.1f} s")
        write_report_html(self.out_dir / "report.html", self.sections, summary.errors, summary.line)


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

    folder = RunFolder(out_dir, dump_crops, truth)
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
    info = dict(run_info or {})
    if input_dir is not None:
        info = {"input": private_path(input_dir, list(patients)), **info}
    info["patients"] = len(patients)
    info["stage_seconds"] = {k: round(v, 3) for k, v in clock.seconds.items()}
    folder.finish(summary, info, time.perf_counter() - t0)
    return summary


def run_folder(input_dir: Path, out_dir: Path, weights_dir: Path, *, boxes_file: Optional[Path] = None,
               dump_crops: bool = False, labels_file: Optional[Path] = None, device: str = "cpu",
               batch_size: int = 16, reader: Optional[Reader] = None, echo: Callable[..., None] = None,
               tta: bool = False) -> int:
    """`run`: read every patient under input_dir into out_dir; returns the exit code (0 all read, 1 some
    failed, 2 the input folder, the box file or the weights are unusable). reader: one already loaded (its
    weights_dir is then what run.json records). tta: the classifier's test-time augmentation."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # before torch loads (reader.core.passive_openmp_waiting)
    from study.challenge import read_labels
    from study.inputs import find_inputs

    from .clock import StageClock
    from .core import ReaderError

    echo = echo or _echo
    t0 = time.perf_counter()
    try:
        patients = find_inputs(input_dir)
        given = GivenBoxes.read(boxes_file) if boxes_file is not None else None
        # Known labels are drawn beside the predictions on the crop sheets; they change no prediction.
        truth = {lab.patient_id: lab for lab in read_labels(labels_file)} if labels_file is not None else {}
        if reader is None:
            clock = StageClock()
            with clock("model load"):
                reader = Reader.from_weights(weights_dir, device, detector=given is None, clock=clock, tta=tta)
        else:
            reader.clock = StageClock()
    except (InputError, ReaderError, FileNotFoundError) as e:
        echo(f"error: {e}", err=True)
        return 2
    info = {"boxes": str(boxes_file) if boxes_file else None, "device": device, "batch_size": batch_size,
            "weights": str(weights_dir), "dump_crops": dump_crops}
    if tta:
        info["tta"] = True
    summary = read_into_folder(reader, patients, out_dir, given=given, dump_crops=dump_crops, truth=truth,
                               batch_size=batch_size, run_info=info, input_dir=input_dir, started=t0)
    for e in summary.errors:
        echo(f"failed: {e['id']}: {e['error']}", err=True)
    for pid in summary.order:
        if pid in summary.reports and summary.reports[pid].boxes.outside_fov:
            echo(f"{pid}: {', '.join(summary.reports[pid].boxes.outside_fov)} outside the field of view, not graded")
    echo(summary.line)
    echo(f"outputs: {out_dir / 'predictions.json'}, {out_dir / 'report.html'}, {out_dir / 'reports'}/"
         + (f", {out_dir / 'crops'}/" if dump_crops else ""))
    return summary.exit_code


def _echo(message: str, err: bool = False) -> None:
    print(message, file=sys.stderr if err else sys.stdout)
