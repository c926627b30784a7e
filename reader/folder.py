"""A run folder: what `run` writes for a batch the Reader reads (predictions.json, reports/, report.html,
errors.json, run.json, crops/, sr/), every file atomically (reader.outputs writes them; reader.out_folder
decides whether OUT may take the run)."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from study.challenge import PatientLabels
from study.errors import InputError
from study.inputs import InputSource

from .core import GivenBoxes, PatientFailure, Reader
from .outputs import PatientOutput, RunFolder, RunSummary, algorithm_version, begin_run, finish_run

__all__ = ["PatientOutput", "RunFolder", "RunSummary", "algorithm_version", "console_summary", "finish_run",
           "read_into_folder", "run_folder"]


def read_into_folder(reader: Reader, patients: Sequence[InputSource], out_dir: Path, *,
                     given: Optional[GivenBoxes] = None, dump_crops: bool = False,
                     truth: Optional[Mapping[str, PatientLabels]] = None, batch_size: int = 16,
                     run_info: Optional[Mapping[str, object]] = None, input_dir: Optional[Path] = None,
                     started: Optional[float] = None, sr: bool = False) -> RunSummary:
    """Read `patients` batch by batch with `reader` and write the run folder; returns what was read.

    run_info: the arguments run.json records (stage seconds and the redacted input path are added).
    sr: also write OUT/sr/{id}.dcm for every DICOM study (reader.sr).
    """
    t0 = time.perf_counter() if started is None else started
    from tqdm import tqdm

    folder = RunFolder(out_dir, dump_crops, truth, sr=sr, sr_version=algorithm_version(reader.weights_dir),
                       patient_ids=[p.patient_id for p in patients])
    begin_run(folder, patients, run_info, input_dir)
    summary = RunSummary([p.patient_id for p in patients])
    clock = reader.clock
    bar = tqdm(total=len(patients), desc="patients", unit="patient", disable=None)
    for start in range(0, len(patients), batch_size):
        outcomes = reader.read_sources(patients[start:start + batch_size], given)
        items = []
        for o in outcomes:
            if isinstance(o, PatientFailure):
                items.append(o)
                continue
            with clock("outputs"):
                items.append(folder.write_patient(o))
        folder.record_batch(items, summary, lambda: bar.update(1))
    bar.close()
    clock.seconds["total"] = time.perf_counter() - t0
    finish_run(folder, summary, patients, run_info, input_dir, clock.seconds, t0)
    return summary


def run_folder(input_dir: Path, out_dir: Path, weights_dir: Path, *, boxes_file: Optional[Path] = None,
               dump_crops: bool = False, labels_file: Optional[Path] = None, device: str = "cpu",
               batch_size: int = 16, reader: Optional[Reader] = None, echo: Callable[..., None] = None,
               overwrite: bool = False, sr: bool = False, engine: str = "local", address: Optional[str] = None,
               workers: Optional[int] = None, tta: bool = False) -> int:
    """`run`: read every patient under input_dir into out_dir; returns the exit code (0 all read, 1 some
    failed, 2 the input folder, the box file, the output folder, the device or the weights are unusable).
    reader: one already loaded (its weights_dir is then what run.json records). sr: also write a DICOM SR per
    DICOM study (OUT/sr/{id}.dcm). engine "ray": the patients are read by Ray actors (reader.ray_engine;
    address: a running cluster, else a local instance; workers: how many actors), with the same outputs.
    tta: the classifier's test-time augmentation (classifier.predict; both engines).

    out_dir must be new or empty, or hold the same run killed midway (which this completes); one holding
    another run's outputs is refused, changing nothing, unless `overwrite`: then that run's files (the ones
    its run.json lists) are removed once the models have loaded (with Ray: once Ray is up), and only those
    (reader.out_folder). The same holds for both engines."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # before torch loads (reader.core.passive_openmp_waiting)
    from study.challenge import read_labels
    from study.inputs import find_inputs

    from .clock import StageClock
    from .core import ReaderError, check_device
    from .out_folder import claim_out_folder, run_key

    echo = echo or _echo
    t0 = time.perf_counter()
    key = run_key(input_dir, boxes_file, labels_file, dump_crops, weights_dir, sr, tta)
    try:
        patients = find_inputs(input_dir)
        given = GivenBoxes.read(boxes_file) if boxes_file is not None else None
        # Known labels are drawn beside the predictions on the crop sheets; they change no prediction.
        truth = {lab.patient_id: lab for lab in read_labels(labels_file)} if labels_file is not None else {}
        previous = claim_out_folder(out_dir, key, overwrite)     # before anything is loaded or written
        if engine == "ray":
            if address is None:
                check_device(device)                   # a local instance: its workers use this machine's GPU
            from release.manifest import STAGES, WeightsError, verify_manifest
            try:   # checked here too, so that unusable weights stop the run before any worker starts
                verify_manifest(Path(weights_dir), STAGES if given is None else STAGES[1:])
            except WeightsError as e:
                raise ReaderError(str(e)) from None
        elif reader is None:
            check_device(device)                       # before any model is loaded
            clock = StageClock()
            with clock("model load"):
                reader = Reader.from_weights(weights_dir, device, detector=given is None, clock=clock, tta=tta)
        else:
            reader.clock = StageClock()
    except (InputError, ReaderError, FileNotFoundError) as e:
        echo(f"error: {e}", err=True)
        return 2

    def clear_previous() -> None:
        if previous is None:
            return
        n = previous.remove()
        echo(f"{out_dir}: completing the interrupted run there (its {n} file(s) are written again)"
             if previous.resumed_by(key) else
             f"--overwrite: removed the {n} file(s) of the previous run in {out_dir} (those its run.json lists); "
             "nothing else there was touched")

    info = {"boxes": str(boxes_file) if boxes_file else None, "device": device, "batch_size": batch_size,
            "weights": str(weights_dir), "dump_crops": dump_crops, "run_key": key}
    if sr:
        info["sr"] = True
    if tta:
        info["tta"] = True
    if engine == "ray":
        from .ray_engine import RayError, read_into_folder_ray
        info.update(engine="ray", address=address, workers=workers)
        try:
            summary = read_into_folder_ray(patients, out_dir, Path(weights_dir), boxes_file=boxes_file,
                                           dump_crops=dump_crops, truth=truth, batch_size=batch_size, device=device,
                                           run_info=info, input_dir=input_dir, started=t0, sr=sr, address=address,
                                           workers=workers, before_writing=clear_previous, tta=tta)
        except RayError as e:
            echo(f"error: {e}", err=True)
            return 2
    else:
        clear_previous()
        summary = read_into_folder(reader, patients, out_dir, given=given, dump_crops=dump_crops, truth=truth,
                                   batch_size=batch_size, run_info=info, input_dir=input_dir, started=t0, sr=sr)
    for line in console_summary(summary, out_dir, dump_crops, sr):
        echo(line, err=line.startswith("failed: "))
    return summary.exit_code


MAX_FLAGGED_SHOWN = 5


def console_summary(summary: RunSummary, out_dir: Path, dump_crops: bool, sr: bool = False) -> List[str]:
    """What `run` prints at the end: failures, levels not graded, what --sr wrote, the count line, why patients
    were flagged (the first reason of at most MAX_FLAGGED_SHOWN of them, then where the full list is), the
    models' standing and where the outputs are."""
    from report.html import MODEL_NOTE, failure_text

    lines = [f"failed: {e['id']}: {failure_text(e['id'], e['error'])}" for e in summary.errors]
    for pid in summary.order:
        if pid in summary.reports and summary.reports[pid].boxes.outside_fov:
            lines.append(f"{pid}: {', '.join(summary.reports[pid].boxes.outside_fov)} outside the field of view, "
                         "not graded")
    if sr:
        lines += sr_lines(summary, out_dir)
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
                 + (f", {out_dir / 'crops'}/" if dump_crops else "")
                 + (f", {out_dir / 'sr'}/" if getattr(summary, "sr_written", None) else ""))
    return lines


def sr_lines(summary: RunSummary, out_dir: Path) -> List[str]:
    """What --sr wrote, and for which patients no SR can be written and why (grouped by reason)."""
    lines = [f"DICOM SR: {len(summary.sr_written)} written to {out_dir / 'sr'}/"]
    by_reason: Dict[str, List[str]] = {}
    for pid, why in summary.sr_skipped.items():
        by_reason.setdefault(why, []).append(pid)
    for why, ids in by_reason.items():
        lines.append(f"no DICOM SR for {len(ids)} patient(s) ({', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}): "
                     f"{why}")
    return lines


def _echo(message: str, err: bool = False) -> None:
    print(message, file=sys.stderr if err else sys.stdout)
