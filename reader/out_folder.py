"""Which files a run writes into OUT, and whether OUT may take a new run (the files themselves are written by
reader.outputs, for local and Ray runs alike).

run.json lists the run's files under "outputs" (relative paths; `crops/{id}/` stands for everything the crop
dump wrote for that patient; `sr/{id}.dcm` the DICOM SR of `run --sr`). It is written when the run starts, with "complete": false and the files the run
is going to write, and again when it ends, with "complete": true and the files it wrote. So a later run knows
exactly which files in OUT are that run's: it refuses a folder holding another run's outputs, and with
`--overwrite` removes those files, and only those. A killed run is completed by the same run again (same
input, boxes, labels, crop dump, --sr and weights; the engine, local or Ray, gives the same outputs and is no
part of it), as before.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from common.files import TEMP_SUFFIX
from study.errors import InputError

RUN_JSON = "run.json"
BATCH_FILES = (RUN_JSON, "predictions.json", "errors.json", "report.html")
REPORTS, CROPS, SR = "reports", "crops", "sr"


class OutFolderError(InputError):
    """OUT cannot take this run (it holds another run's outputs, or files of no run): nothing was changed."""


def planned_outputs(patient_ids: Sequence[str], dump_crops: bool, sr: bool = False) -> List[str]:
    """Every file a run over these patients may write (crop dumps as their patient folder `crops/{id}/`; with
    `sr` the DICOM SR `sr/{id}.dcm`, written for DICOM studies only)."""
    out = list(BATCH_FILES) + [f"{REPORTS}/{pid}.json" for pid in patient_ids]
    if dump_crops:
        out += [f"{CROPS}/{pid}/" for pid in patient_ids]
    if sr:
        out += [f"{SR}/{pid}.dcm" for pid in patient_ids]
    return sorted(out)


def run_key(input_dir: Path, boxes_file, labels_file, dump_crops: bool, weights_dir: Path, sr: bool = False,
            tta: bool = False) -> str:
    """What makes two runs the same run (a rerun completes a killed one): a hash, so no path is recorded.
    (--sr and --tta enter the hash only when given, so a run without them keeps the key it had before they
    existed.)"""
    parts = [str(Path(p).resolve()) if p is not None else None
             for p in (input_dir, boxes_file, labels_file, weights_dir)]
    what = [parts, bool(dump_crops)] + (["sr"] if sr else []) + (["tta"] if tta else [])
    return hashlib.sha256(json.dumps(what).encode("utf-8", "backslashreplace")).hexdigest()[:16]


def _safe(rel: object) -> Optional[str]:
    """A run output's relative path, or None for anything a run of this reader cannot have written."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel:
        return None
    parts = rel.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    if len(parts) == 1 and parts[0] in BATCH_FILES:
        return rel
    if parts[0] == REPORTS and len(parts) == 2 and parts[1].endswith(".json"):
        return rel
    if parts[0] == CROPS and len(parts) >= 2:
        return rel
    if parts[0] == SR and len(parts) == 2 and parts[1].endswith(".dcm"):
        return rel
    return None


@dataclass(frozen=True)
class PreviousRun:
    """What OUT holds before a run: the earlier run's files (relative paths) and whether that run finished."""

    out_dir: Path
    files: Tuple[str, ...]          # existing files of the earlier run
    complete: bool
    key: Optional[str]

    def resumed_by(self, key: str) -> bool:
        """True when this is a killed run that a run with `key` completes (the same run again)."""
        return not self.complete and self.key == key

    def remove(self) -> int:
        """Delete the earlier run's files (only those) and the folders they leave empty; returns how many went."""
        n = 0
        for rel in self.files:
            path = self.out_dir / rel
            if path.is_file() and not path.is_symlink():
                path.unlink()
                n += 1
        for folder in sorted({(self.out_dir / rel).parent for rel in self.files}, key=lambda p: -len(p.parts)):
            while folder != self.out_dir and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
                folder = folder.parent
        return n


def _listed_files(out_dir: Path, listed: Sequence[object]) -> List[str]:
    files = set()
    for rel in listed:
        rel = _safe(rel)
        if rel is None:
            continue
        path = out_dir / rel
        if rel.endswith("/") or path.is_dir():      # a patient's crop folder: whatever the dump wrote there
            if path.is_dir() and not path.is_symlink():
                files.update(f.relative_to(out_dir).as_posix() for f in path.rglob("*")
                             if f.is_file() and not f.is_symlink())
        elif path.is_file() and not path.is_symlink():
            files.add(rel)
    return sorted(files)


def _older_run_files(out_dir: Path) -> List[str]:
    """A run.json written before runs listed their outputs: the batch files and the patients its
    predictions.json and errors.json name (their report, crop folder and DICOM SR)."""
    ids = []
    for name, key in (("predictions.json", "id"), ("errors.json", "id")):
        try:
            rows = json.loads((out_dir / name).read_text(encoding="utf-8"))
            ids += [r[key] for r in rows if isinstance(r, dict) and isinstance(r.get(key), str)]
        except (OSError, ValueError, TypeError):
            continue
    return _listed_files(out_dir, planned_outputs(ids, dump_crops=True, sr=True))


def previous_run(out_dir: Path) -> Optional[PreviousRun]:
    """What OUT holds: None when it does not exist or holds nothing but the temporaries of a killed write.

    Raises OutFolderError when OUT is not a folder, or holds files but no run.json of a run of this reader
    (nothing there is known to be a run's, so nothing may be replaced)."""
    out_dir = Path(out_dir)
    if not out_dir.exists() and not out_dir.is_symlink():
        return None
    if not out_dir.is_dir():
        raise OutFolderError("--out is not a folder", path=out_dir, what="path")
    entries = [p for p in out_dir.iterdir() if not (p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX))]
    if not entries:
        return None
    try:
        info = json.loads((out_dir / RUN_JSON).read_text(encoding="utf-8"))
        if not isinstance(info, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as e:
        why = "no run.json" if not (out_dir / RUN_JSON).exists() else f"its run.json is unreadable ({e})"
        raise OutFolderError(f"holds {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} but {why}, so none "
                             "of it is known to be a run's outputs; nothing was changed. Choose an empty or new "
                             "folder for --out", path=out_dir, what="folder") from None
    listed = info.get("outputs")
    files = _listed_files(out_dir, listed) if isinstance(listed, list) else _older_run_files(out_dir)
    return PreviousRun(out_dir, tuple(files), bool(info.get("complete", "outputs" not in info)), info.get("run_key"))


def claim_out_folder(out_dir: Path, key: str, overwrite: bool) -> Optional[PreviousRun]:
    """Check that OUT may take this run before anything is loaded or written; returns the earlier run whose
    files must go (call .remove() once the run can start), or None.

    A new or empty folder is taken as it is; so is a killed run with the same key (the same run again, which
    completes it: its files are returned, to be replaced). A folder holding another run's outputs is refused
    (OutFolderError: nothing changed) unless `overwrite`."""
    prev = previous_run(out_dir)
    if prev is None or not prev.files:
        return None
    if prev.resumed_by(key):
        return prev
    if not overwrite:
        state = "a complete run" if prev.complete else "an unfinished run with other arguments"
        raise OutFolderError(f"holds the outputs of {state} ({len(prev.files)} file(s), listed in its run.json); "
                             "nothing was changed. Add --overwrite to remove those files and write this run there, "
                             "or choose another --out", path=out_dir, what="folder")
    return prev


def written_files(out_dir: Path, patient_ids: Sequence[str], dump_crops: bool, sr: bool = False) -> List[str]:
    """The files a finished run wrote (run.json included), for its run.json."""
    out_dir = Path(out_dir)
    return sorted(set(_listed_files(out_dir, planned_outputs(patient_ids, dump_crops, sr))) | {RUN_JSON})
