"""Patient-level splits shared by every stage: variant ids, and the evaluation hold-out no stage trains on.

A geometry can be rendered many times (other seeds, label variants such as '{id}~rare' or '{id}~poor');
all renders of one geometry belong to it and always land on the same side of a split.

The evaluation hold-out is drawn once from the labels, stratified on the findings that are rare or scored
per patient (curvature, alignment, disc extrusion, canal grade 3), and ranked by a hash of the patient id,
so the same label file always gives the same hold-out whatever the file order or the stage that asks.
Every training command excludes it; end-to-end figures are measured on it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Dict, Hashable, Iterable, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from common.files import write_json_atomic

from .challenge import PatientLabels
from .errors import InputError

VARIANT_SEPARATOR = "~"
HOLDOUT_SIZE = 100
HOLDOUT_FILE = "holdout.json"
PathLike = Union[str, Path]


def split_key(patient_id: str) -> str:
    """The geometry a patient id was rendered from: variants '{id}~...' belong to '{id}'."""
    return patient_id.split(VARIANT_SEPARATOR, 1)[0]


def variant_id(patient_id: str, variant: str) -> str:
    """The id of a label variant of a geometry, e.g. variant_id('1042', 'poor') -> '1042~poor'."""
    return f"{split_key(patient_id)}{VARIANT_SEPARATOR}{variant}"


def _stratum(lab: PatientLabels) -> Tuple[int, int, bool, bool]:
    return lab.curvature, lab.alignment, 3 in lab.disc_grades, 3 in lab.canal_grades


def _rank(seed: int, pid: str) -> str:
    return hashlib.sha256(f"{seed}:{pid}".encode("utf-8")).hexdigest()


def holdout_split(labels: Sequence[PatientLabels], n: int = HOLDOUT_SIZE,
                  seed: int = 0) -> Tuple[List[str], List[str]]:
    """(training geometry ids, hold-out geometry ids), both sorted; variants are ignored (their source counts).

    Each stratum gives its share of the n by largest remainder, so a class with 17 members out of 320
    keeps about 5 in a hold-out of 100.
    """
    own = {lab.patient_id: lab for lab in labels if lab.patient_id == split_key(lab.patient_id)}
    if not 0 <= n <= len(own):
        raise ValueError(f"hold-out of {n} patients asked from {len(own)} geometries")
    strata: Dict[Tuple, List[str]] = {}
    for pid in sorted(own):
        strata.setdefault(_stratum(own[pid]), []).append(pid)
    share = {k: n * len(v) / len(own) for k, v in strata.items()}
    take = {k: int(s) for k, s in share.items()}
    by_remainder = sorted(strata, key=lambda k: (-(share[k] - take[k]), k))
    for k in by_remainder[: n - sum(take.values())]:
        take[k] += 1
    held: List[str] = []
    for k, ids in strata.items():
        held += sorted(ids, key=lambda pid: _rank(seed, pid))[: take[k]]
    held_set = set(held)
    return sorted(set(own) - held_set), sorted(held_set)


def write_holdout(path: PathLike, holdout_ids: Iterable[str], source: str, seed: int = 0) -> Path:
    """holdout.json: the ids and where they came from (label file, seed), for model cards and evaluation."""
    ids = sorted(set(holdout_ids))
    write_json_atomic(Path(path), {"source": source, "seed": seed, "n": len(ids), "ids": ids})
    return Path(path)


def read_holdout(path: PathLike) -> Set[str]:
    """The geometry ids of a holdout.json (or of any JSON list of ids)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read hold-out ids: {e}", path=p) from e
    ids = data.get("ids") if isinstance(data, dict) else data
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise InputError("expected a JSON list of patient ids or an object with an 'ids' list", path=p)
    return set(ids)


def exclude_holdout(patient_ids: Iterable[str], holdout: Set[str]) -> List[str]:
    """The ids (renders and variants included) whose geometry is not held out."""
    return [pid for pid in patient_ids if split_key(pid) not in holdout]


def split_patients(ids: Iterable[str], val_fraction: float, seed: int,
                   stratum: Optional[Callable[[str], Hashable]] = None) -> Tuple[List[str], List[str]]:
    """(training, validation) geometry keys of the patient ids, both sorted: the one patient-level split.

    Every render of a geometry (other seeds, label variants '{id}~...') belongs to its key (split_key), so it
    lands on one side. Without `stratum` the keys are drawn at random (at least one for validation when
    val_fraction > 0 and there are two keys). With `stratum` (key -> a hashable class, e.g. the rare findings
    of the geometry's own labels) each stratum gives its share; a set too small for any stratum to give one
    still gets one validation key.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    keys = sorted({split_key(i) for i in ids})
    rng = np.random.default_rng(seed)
    if stratum is None:
        order = rng.permutation(len(keys))
        n_val = int(round(len(keys) * val_fraction))
        if val_fraction > 0 and n_val == 0 and len(keys) > 1:
            n_val = 1
        return sorted(keys[i] for i in order[n_val:]), sorted(keys[i] for i in order[:n_val])
    strata: Dict[Hashable, List[str]] = {}
    for key in keys:
        strata.setdefault(stratum(key), []).append(key)
    train, val = [], []
    for s in sorted(strata):
        group = list(strata[s])
        rng.shuffle(group)
        n_val = int(round(len(group) * val_fraction))
        val += group[:n_val]
        train += group[n_val:]
    if not val and val_fraction > 0 and len(train) > 1:  # small sets: every stratum rounded to zero
        val.append(train.pop(int(rng.integers(len(train)))))
    return sorted(train), sorted(val)


def kfold_keys(ids: Iterable[str], k: int, seed: int,
               stratum: Optional[Callable[[str], Hashable]] = None) -> List[List[str]]:
    """K patient-level folds of the geometry keys of `ids` (each sorted): every render and label variant of a
    geometry (split_key) lies in one fold. Keys are shuffled within each stratum (all one stratum without
    `stratum`) and dealt to the folds in turn, continuing across strata, so each fold gets its share of every
    stratum and the folds differ in size by at most one."""
    keys = sorted({split_key(i) for i in ids})
    if k < 2:
        raise ValueError(f"need at least 2 folds, got {k}")
    if len(keys) < k:
        raise ValueError(f"{k} folds asked from {len(keys)} geometries")
    rng = np.random.default_rng(seed)
    strata: Dict[Hashable, List[str]] = {}
    for key in keys:
        strata.setdefault(stratum(key) if stratum else 0, []).append(key)
    folds: List[List[str]] = [[] for _ in range(k)]
    turn = 0
    for s in sorted(strata):
        group = list(strata[s])
        rng.shuffle(group)
        for key in group:
            folds[turn % k].append(key)
            turn += 1
    return [sorted(f) for f in folds]
