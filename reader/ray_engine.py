"""`run --engine ray`: the patients flow through Ray Data to actors that each load the Reader once and read
them in batches; the driver writes the batch files. The outputs are a local run's.

- The inputs are cut into the local run's batches (--batch-size patients in input order), one Ray Data row each.
- Each actor (PatientReader) loads the three stages once, reads a batch of inputs with Reader.read_sources and
  writes each patient's own files (reports/{id}.json, crops/, sr/{id}.dcm) itself, atomically, as the local run
  does (reader.outputs.RunFolder.write_patient). It hands back only what the batch files need.
- The driver orders what comes back by input position and records it batch by batch exactly as the local run
  does (reader.outputs.RunFolder.record_batch), so predictions.json, errors.json and report.html list the
  patients in input order, and writes run.json, predictions.json, errors.json and report.html atomically.
- One bad patient fails alone: inside an actor the Reader isolates failures per patient, as locally; if a whole
  batch call raises, its patients are read one by one. Patients the cluster never returned (a node lost for
  good) are listed in errors.json; everything already written stays.
- Resources: each actor asks for `cpus_per_worker` CPUs (default 1) and uses as many torch/OpenMP threads; with
  --device cuda it asks for one GPU (and 1 CPU). The same number of threads gives byte-identical outputs (the
  local run on a machine with that many cores, or OMP_NUM_THREADS set to it).
- OUT follows a local run's rules (reader.out_folder): the driver checks it before Ray starts, removes an earlier
  run's files (--overwrite, or the same run killed midway) only once Ray is up (`before_writing`), and writes
  run.json first ("complete": false, every file the run may write, sr/ included) and last ("complete": true,
  the files written). Workers take the driver's umask, so their files get a local run's modes.
- Without an address a local Ray instance is started (no dashboard, worker logs kept out of the console) and shut
  down at the end. With an address (`auto`, `ray://head:10001`) the driver joins that cluster: every node needs
  this package installed (same commit) and the input, weights and output folders at the same paths (a shared
  filesystem).
"""
from __future__ import annotations

import logging
import os
import pickle
import time
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from common.files import current_umask

from study.challenge import PatientLabels
from study.inputs import InputSource

from .core import PatientFailure
from .outputs import RunFolder, RunSummary, algorithm_version, begin_run, finish_run

CODE_ROOT = Path(__file__).resolve().parent.parent
# Object store of a local instance: a batch's hand-back (reports and HTML sections with their pictures) is a few
# MB; the store only needs to hold the batches in flight.
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024


class RayError(Exception):
    """Ray is missing or the cluster cannot be reached: nothing was read."""


class PatientReader:
    """A Ray actor: the Reader loaded once; each call reads one batch of inputs and writes their files."""

    def __init__(self, weights_dir: str, device: str, out_dir: str, boxes_file: Optional[str], dump_crops: bool,
                 truth: Mapping[str, PatientLabels], sr: bool, sr_version: str, threads: int,
                 umask: Optional[int] = None, tta: bool = False):
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if umask is not None:   # the driver's: files a worker writes get the modes a local run gives them
            os.umask(umask)
        import torch

        from .clock import StageClock
        from .core import GivenBoxes, Reader

        torch.set_num_threads(max(1, int(threads)))
        self.given = GivenBoxes.read(boxes_file) if boxes_file else None
        self.reader = Reader.from_weights(weights_dir, device, detector=self.given is None, clock=StageClock(),
                                          tta=tta)
        # The driver cleared the run folder's stale temporaries before any worker started.
        self.folder = RunFolder(Path(out_dir), dump_crops, truth, sr=sr, sr_version=sr_version,
                                clear_temporaries=False)

    def __call__(self, rows: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Each row is one batch of the local run (the same inputs, in order): read together, as locally."""
        from .clock import StageClock

        payload, clocks = [], []
        for blob in rows["batch"]:
            batch = pickle.loads(bytes(blob))          # [(input position, InputSource), ...]
            indices = [i for i, _ in batch]
            sources: List[InputSource] = [s for _, s in batch]
            self.reader.clock = StageClock()
            try:
                outcomes = self.reader.read_sources(sources, self.given)
            except Exception:  # the batch call itself failed: patient by patient, so only the culprit fails
                outcomes = [self._read_one(s) for s in sources]
            done = []
            for i, o in zip(indices, outcomes):
                if not isinstance(o, PatientFailure):
                    with self.reader.clock("outputs"):
                        o = self.folder.write_patient(o)
                done.append((i, o))
            payload.append(pickle.dumps(done))
            clocks.append(pickle.dumps(dict(self.reader.clock.seconds)))
        return {"payload": np.asarray(payload, dtype=object), "clock": np.asarray(clocks, dtype=object)}

    def _read_one(self, source: InputSource):
        try:
            return self.reader.read_sources([source], self.given)[0]
        except Exception as e:
            return PatientFailure(source.patient_id, "reader", f"reading failed: {type(e).__name__}: {e}")


def _connect(address: Optional[str], n_cpus: int, n_gpus: Optional[int], threads: int) -> bool:
    """Join the cluster at `address`, or start a local instance with n_cpus CPUs; True when one was started here."""
    try:
        import ray
    except ImportError as e:
        raise RayError(f"--engine ray needs Ray (pip install -r requirements.txt): {e}") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")     # no usage report leaves the machine
    # The driver's Ray core logs notes of its own to the console (e.g. that Ray Data's actors may restart);
    # failures reach this code as exceptions, and worker logs stay in Ray's session folder.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    env = {"OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE", "RAY_USAGE_STATS_ENABLED": "0"}
    if ray.is_initialized():
        return False
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                  configure_logging=True)
    try:
        if address is None:
            # Workers import this checkout, whatever else is installed.
            env["PYTHONPATH"] = os.pathsep.join([str(CODE_ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
            ray.init(num_cpus=n_cpus, num_gpus=n_gpus, object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                     runtime_env={"env_vars": env}, **kwargs)
        else:
            ray.init(address=address, runtime_env={"env_vars": env}, **kwargs)
    except Exception as e:
        raise RayError(f"cannot start or join Ray{f' at {address}' if address else ''}: {type(e).__name__}: {e}") \
            from None
    return True


def _quiet_data_context() -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    for name in ("enable_operator_progress_bars", "print_on_execution_start", "verbose_stats_logs"):
        if hasattr(ctx, name):
            setattr(ctx, name, False)
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    logging.getLogger("ray").setLevel(logging.ERROR)


def read_into_folder_ray(patients: Sequence[InputSource], out_dir: Path, weights_dir: Path, *,
                         boxes_file: Optional[Path] = None, dump_crops: bool = False,
                         truth: Optional[Mapping[str, PatientLabels]] = None, batch_size: int = 16,
                         device: str = "cpu", run_info: Optional[Mapping[str, object]] = None,
                         input_dir: Optional[Path] = None, started: Optional[float] = None, sr: bool = False,
                         address: Optional[str] = None, workers: Optional[int] = None,
                         cpus_per_worker: int = 1, before_writing: Optional[Callable[[], None]] = None,
                         tta: bool = False) -> RunSummary:
    """reader.folder.read_into_folder on Ray: the same run folder, read by `workers` actors.

    workers: actors (default: as many as the cluster's CPUs allow at cpus_per_worker each, or its GPUs with
    device "cuda"). before_writing: called once Ray is up, before anything is written to out_dir (the earlier
    run's files are removed there). Raises RayError when Ray cannot be started or joined (nothing written)."""
    t0 = time.perf_counter() if started is None else started
    from tqdm import tqdm

    gpu = device == "cuda"
    cpus = 1 if gpu else max(1, int(cpus_per_worker))
    local_cpus = max(os.cpu_count() or 1, (workers or 1) * cpus)
    summary = RunSummary([p.patient_id for p in patients])
    items: Dict[int, object] = {}
    seconds: Dict[str, float] = {}
    # A local instance gets the CPUs the actors ask for (all of them by default) and, for cuda, the GPUs it finds
    # (or as many as --workers asks for).
    started_here = _connect(address, local_cpus if workers is None else workers * cpus,
                            (workers if workers is not None else None) if gpu else 0, cpus)
    import ray
    try:
        if before_writing is not None:
            before_writing()
        folder = RunFolder(out_dir, dump_crops, truth, sr=sr, sr_version=algorithm_version(weights_dir),
                           patient_ids=[p.patient_id for p in patients])
        begin_run(folder, patients, run_info, input_dir)
    except BaseException:
        if started_here:
            ray.shutdown()
        raise

    bar = tqdm(total=len(patients), desc="patients", unit="patient", disable=None)
    lost: Optional[str] = None
    try:
        _quiet_data_context()
        if workers is None:
            resources = ray.cluster_resources()
            workers = max(1, int(resources.get("GPU", 0)) if gpu else int(resources.get("CPU", 1) // cpus))
        if patients:
            # One row per batch of the local run (--batch-size patients in input order): the networks see the
            # same batches, so the floating-point sums, and the outputs, are the local run's to the last byte.
            rows = [{"batch": pickle.dumps([(i, patients[i]) for i in range(start, min(len(patients),
                                                                                  start + batch_size))])}
                    for start in range(0, len(patients), batch_size)]
            ds = ray.data.from_items(rows, override_num_blocks=len(rows))
            ds = ds.map_batches(
                PatientReader, batch_size=1, batch_format="numpy", concurrency=min(workers, len(rows)),
                num_cpus=cpus, num_gpus=1 if gpu else 0,
                fn_constructor_kwargs=dict(weights_dir=str(weights_dir), device=device, out_dir=str(out_dir),
                                           boxes_file=str(boxes_file) if boxes_file else None, dump_crops=dump_crops,
                                           truth=dict(truth or {}), sr=sr, sr_version=folder.sr_version,
                                           threads=cpus, umask=current_umask(), tta=tta))
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for payload in batch["payload"]:
                    for i, item in pickle.loads(bytes(payload)):
                        items[i] = item
                        bar.update(1)
                for c in batch["clock"]:
                    for k, v in pickle.loads(bytes(c)).items():
                        seconds[k] = seconds.get(k, 0.0) + v
    except RayError:
        raise
    except Exception as e:  # the cluster failed part-way: what was read is kept, the rest is listed as failed
        lost = f"not read: the Ray run stopped ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    finally:
        bar.close()
        if started_here:
            ray.shutdown()
    for start in range(0, len(patients), batch_size):
        chunk = range(start, min(len(patients), start + batch_size))
        folder.record_batch([items[i] if i in items else PatientFailure(patients[i].patient_id, "ray", lost or
                                                                        "not read: no worker returned it")
                             for i in chunk], summary)
    # Worker seconds summed over the actors (not wall time), and the run's wall time.
    seconds = {f"{k} (summed over workers)": v for k, v in seconds.items()}
    seconds["total"] = time.perf_counter() - t0
    info = dict(run_info or {})
    info["workers"] = workers
    info["cpus_per_worker"] = cpus
    finish_run(folder, summary, patients, info, input_dir, seconds, t0)
    return summary
