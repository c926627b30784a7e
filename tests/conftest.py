"""Shared test setup: the repo root on sys.path and a writer of tiny challenge-layout patients."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from study.levels import CANAL_POSITIONS, IMAGE_SIZE, SAGITTAL_SLICES, axial_file_stem  # noqa: E402


def write_png(path: Path, array: np.ndarray) -> Path:
    """Write a 2-D uint8/uint16 (or HxWx3/4 uint8) array as PNG, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG")
    return path


def write_challenge_patient(folder: Path, seed: int = 0, size: int = IMAGE_SIZE,
                            skip: Iterable[str] = ()) -> Path:
    """Write {folder}/sag/{5,6,7}.png and {folder}/tra/{2,2-3,...,7}.png with random 8-bit noise.

    `skip` names relative paths not to write, e.g. ("sag/6.png", "tra/4-5.png").
    """
    rng = np.random.default_rng(seed)
    skip = set(skip)
    rels = [f"sag/{s}.png" for s in SAGITTAL_SLICES] + \
           [f"tra/{axial_file_stem(p)}.png" for p in CANAL_POSITIONS]
    for rel in rels:
        if rel not in skip:
            write_png(folder / rel, rng.integers(0, 256, (size, size), dtype=np.uint8))
    return folder


@pytest.fixture
def make_patient(tmp_path: Path) -> Callable[..., Path]:
    """Factory: make_patient("p001", root=None, seed=0, size=224, skip=()) -> patient folder.

    `root` defaults to tmp_path / "batch", so several calls build one batch root.
    """

    def make(patient_id: str = "p001", root: Optional[Path] = None, seed: int = 0,
             size: int = IMAGE_SIZE, skip: Iterable[str] = ()) -> Path:
        base = root if root is not None else tmp_path / "batch"
        return write_challenge_patient(base / patient_id, seed=seed, size=size, skip=skip)

    return make


@pytest.fixture
def patient_dir(make_patient) -> Path:
    """One valid challenge-layout patient folder, tmp_path/batch/p001."""
    return make_patient("p001")


# ../shared/data beside the project root: real CervAI labels/boxes and real scans. Never copied here.
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def cervai_dir() -> Path:
    """The real CervAI label/box folder; skips the test where ../shared is absent."""
    d = SHARED_DATA / "cervai"
    if not (d / "train_boxes.json").is_file() or not (d / "train_labels.json").is_file():
        pytest.skip(f"real CervAI files not found in {d}")
    return d
