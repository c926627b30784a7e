"""The run folder's files: what one read patient leaves (reports/{id}.json, crops/, sr/{id}.dcm, its HTML section)
and the batch files (predictions.json, errors.json, report.html, run.json), every file atomically. Local and Ray
runs (reader.folder, reader.ray_engine) write through it alike.

run.json is written first (begin_run), with "complete": false and every file the run may write, and last
(finish), with "complete": true and the files it wrote: a later run knows which files in OUT are this run's
(reader.out_folder decides whether OUT may take a run)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from common.files import remove_stale_temporaries, write_json_atomic
from study.challenge import PatientLabels, write_labels
from study.errors import InputError
from study.inputs import InputSource, private_path

from .core import PatientFailure, PatientResult


@dataclass
class RunSummary:
    """What a run read: reports by patient id in input order, failures as errors.json lists them."""

    order: List[str]
    reports: Dict[str, object] = field(default_factory=dict)     # id -> report.patient.PatientReport
    errors: List[Dict[str, str]] = field(default_factory=list)
    line: str = ""
    sr_written: List[str] = field(default_factory=list)            # ids with OUT/sr/{id}.dcm (--sr)
    sr_skipped: Dict[str, str] = field(default_factory=dict)       # id -> why no SR can be written (--sr)

    @property
    def exit_code(self) -> int:
        """0 every patient read (flagged ones included), 1 some failed."""
        return 1 if self.errors else 0


@dataclass
class PatientOutput:
    """What writing one read patient's files left for the batch files: its report and HTML section, or the
    error that failed it, and what became of its DICOM SR. Plain data, so a Ray worker can hand it back."""

    patient_id: str
    report: object = None             # report.patient.PatientReport, None when writing failed
    section: str = ""
    error: Optional[str] = None
    sr: Optional[Tuple[str, str]] = None   # ("written", path) | ("skipped", why) | ("failed", message)


class RunFolder:
    """Writes one patient's outputs as soon as it is read; finish() writes the batch files.

    write_patient() writes a patient's own files (reports/, crops/, sr/) and can run anywhere the run folder is
    reachable (a Ray worker); record() adds its outcome to the batch, in input order, where finish() runs.
    """

    def __init__(self, out_dir: Path, dump_crops: bool = False, truth: Optional[Mapping[str, PatientLabels]] = None,
                 sr: bool = False, sr_version: str = "", clear_temporaries: bool = True,
                 patient_ids: Sequence[str] = ()):
        self.out_dir = Path(out_dir)
        self.patient_ids = list(patient_ids)
        self.dump_dir = self.out_dir / "crops" if dump_crops else None
        self.truth = dict(truth or {})
        self.sr = sr
        self.sr_version = sr_version
        self.sections: List[str] = []
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # A run killed mid-write leaves hidden temporaries (never a truncated output); this run clears them.
        if clear_temporaries:
            for folder, below in ((self.out_dir, False), (self.out_dir / "reports", False),
                                  (self.out_dir / "crops", True), (self.out_dir / "sr", False)):
                remove_stale_temporaries(folder, recursive=below)

    def start(self, run_info: Mapping[str, object]) -> None:
        """run.json before anything else: "complete": false and every file this run may write (the driver's
        RunFolder calls it; a Ray worker's does not)."""
        from .out_folder import RUN_JSON, planned_outputs
        write_json_atomic(self.out_dir / RUN_JSON, {**dict(run_info), "complete": False, "outputs": planned_outputs(
            self.patient_ids, self.dump_dir is not None, self.sr)})

    def add(self, result: PatientResult, summary: RunSummary) -> None:
        """The patient's report JSON, crop dump, SR and HTML section; a failure here fails that patient alone."""
        self.record(self.write_patient(result), summary)

    def write_patient(self, result: PatientResult) -> PatientOutput:
        """Write one patient's files; never raises (a failure is that patient's error)."""
        from report.draw import patient_pictures
        from report.html import patient_section
        pid = result.patient_id
        try:
            if self.dump_dir is not None:
                from classifier.dump import dump_patient
                dump_patient(self.dump_dir, result.crops, result.study, result.grades, self.truth.get(pid))
            pictures = patient_pictures(result.study, result.report)
            write_json_atomic(self.out_dir / "reports" / f"{pid}.json", result.report.to_dict())
            section = patient_section(result.report, pictures)
        except Exception as e:  # one bad patient never stops the batch
            return PatientOutput(pid, error=str(e) if isinstance(e, InputError) else f"{type(e).__name__}: {e}")
        return PatientOutput(pid, result.report, section, sr=self._write_sr(result) if self.sr else None)

    def _write_sr(self, result: PatientResult) -> Tuple[str, str]:
        from .sr import SRUnavailable, write_sr
        try:
            return "written", str(write_sr(self.out_dir, result, self.sr_version))
        except SRUnavailable as e:
            return "skipped", str(e)
        except Exception as e:  # the reading itself is kept; the missing SR is this patient's error
            # write_sr's own errors (SRError) are scrubbed of identifying values; anything else names its type only.
            return "failed", f"DICOM SR not written: {e if type(e).__name__ == 'SRError' else type(e).__name__}"

    def record(self, output: PatientOutput, summary: RunSummary) -> None:
        pid = output.patient_id
        if output.error is not None:
            self.fail(PatientFailure(pid, "outputs", output.error), summary)
            return
        summary.reports[pid] = output.report
        self.sections.append(output.section)
        if output.sr is not None:
            status, text = output.sr
            if status == "written":
                summary.sr_written.append(pid)
            elif status == "skipped":
                summary.sr_skipped[pid] = text
            else:
                summary.errors.append({"id": pid, "error": text})

    @staticmethod
    def fail(failure: PatientFailure, summary: RunSummary) -> None:
        summary.errors.append({"id": failure.patient_id, "error": failure.message})

    def record_batch(self, items: Sequence[Union[PatientFailure, PatientOutput]], summary: RunSummary,
                     progress: Optional[Callable[[], None]] = None) -> None:
        """One batch's outcomes, in input order: errors.json lists its unreadable inputs first, then the patients
        that failed later, in order (local and Ray runs alike)."""
        for failure in (o for o in items if isinstance(o, PatientFailure) and o.stage == "load"):
            self.fail(failure, summary)
            if progress:
                progress()
        for o in items:
            if isinstance(o, PatientFailure):
                if o.stage == "load":
                    continue
                self.fail(o, summary)
            else:
                self.record(o, summary)
            if progress:
                progress()

    def finish(self, summary: RunSummary, run_info: Mapping[str, object], seconds: float) -> None:
        from report.html import write_report_html

        from .out_folder import RUN_JSON, written_files
        info = dict(run_info)
        if self.sr:
            info["sr"] = {"written": len(summary.sr_written), "not_written": dict(summary.sr_skipped)}
        write_labels(self.out_dir / "predictions.json",
                     [summary.reports[pid].challenge_labels() for pid in summary.order if pid in summary.reports])
        write_json_atomic(self.out_dir / "errors.json", summary.errors)
        done = sum(pid in summary.reports for pid in summary.order)
        summary.line = (f"{len(summary.order)} patient(s): {done} read, {len(summary.errors)} failed, "
                        f"{sum(r.needs_review for r in summary.reports.values())} flagged for review, {seconds:.1f} s")
        write_report_html(self.out_dir / "report.html", self.sections, summary.errors, summary.line)
        # Last: a run.json saying "complete" means every output above is in place.
        write_json_atomic(self.out_dir / RUN_JSON, {**info, "complete": True, "outputs": written_files(
            self.out_dir, self.patient_ids, self.dump_dir is not None, self.sr)})


def _run_info(patients: Sequence[InputSource], run_info: Optional[Mapping[str, object]],
              input_dir: Optional[Path]) -> Dict[str, object]:
    info = dict(run_info or {})
    if input_dir is not None:
        info = {"input": private_path(input_dir, list(patients)), **info}
    info["patients"] = len(patients)
    return info


def begin_run(folder: RunFolder, patients: Sequence[InputSource], run_info: Optional[Mapping[str, object]],
              input_dir: Optional[Path]) -> None:
    """run.json at the start (redacted input path, arguments, "complete": false, the files the run may write)."""
    folder.start(_run_info(patients, run_info, input_dir))


def finish_run(folder: RunFolder, summary: RunSummary, patients: Sequence[InputSource],
               run_info: Optional[Mapping[str, object]], input_dir: Optional[Path], stage_seconds: Mapping[str, float],
               t0: float) -> None:
    """predictions.json, errors.json, report.html and run.json (with the redacted input path, the stage seconds,
    "complete": true and the files written)."""
    info = _run_info(patients, run_info, input_dir)
    info["stage_seconds"] = {k: round(v, 3) for k, v in stage_seconds.items()}
    folder.finish(summary, info, time.perf_counter() - t0)


def algorithm_version(weights_dir: Optional[Path]) -> str:
    """What an SR names as the algorithm's version: the package version and the weights manifest's sha256."""
    from common.files import sha256_of

    from .sr import SOFTWARE_VERSION
    manifest = Path(weights_dir) / "MANIFEST.json" if weights_dir is not None else None
    if manifest is None or not manifest.is_file():
        return SOFTWARE_VERSION
    return f"{SOFTWARE_VERSION} weights {sha256_of(manifest)[:12]}"
