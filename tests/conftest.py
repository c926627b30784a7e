"""Shared test setup: the repo root on sys.path and a writer of tiny challenge-layout patients."""
from __future__ import annotations

import os
import struct
import sys
import zlib
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from study.levels import CANAL_POSITIONS, IMAGE_SIZE, SAGITTAL_SLICES, axial_file_stem  # noqa: E402

# The environment this session started with, kept for child interpreters that must start as a user's `run`
# does: importing ultralytics (which some tests do) writes OMP_NUM_THREADS=1 into os.environ, and a child
# inheriting it runs torch on one thread, which changes the last digit of some measured values.
PRISTINE_ENV = dict(os.environ)


def write_png(path: Path, array: np.ndarray) -> Path:
    """Write a 2-D uint8/uint16 (or HxWx3/4 uint8) array as PNG, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG")
    return path


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but carries almost no data (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def deny_reading(mp: pytest.MonkeyPatch, target: Path) -> None:
    """Make the study loader's open() refuse `target` as the OS would (chmod does not stop root)."""
    from study import loader
    real_open = open

    def deny(path, *args, **kwargs):
        if Path(path) == target:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    mp.setattr(loader, "open", deny, raising=False)


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

# phantom-s2025-0000's sagittal slices zeroed from this row down: its field of view ends below C4.
PADDED_FROM_ROW = 118


def zero_padded_copy(src: Path, dst: Path, from_row: int = PADDED_FROM_ROW) -> Path:
    """A copy of patient folder src at dst whose sagittal slices are 0 from from_row down (a cut field of view)."""
    import shutil
    shutil.copytree(src, dst)
    for s in SAGITTAL_SLICES:
        f = dst / "sag" / f"{s}.png"
        a = np.asarray(Image.open(f)).copy()
        a[from_row:] = 0
        Image.fromarray(a).save(f)
    return dst


def headless_chromium(*extra_args: str):
    """A selenium browser on Debian's headless chromium (the caller quits it); skips where it is not installed."""
    import shutil
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("Debian chromium + chromium-driver not installed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync") + extra_args:
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(driver), options=opts)


# Built-in phantoms no training or tuning run used (seed 2024), rendered once per session: the detector's
# shipped-weights floors (test_shipped_weights.py) and its offline check (test_detector_weights.py) read them.
FRESH_BUILTIN_N, FRESH_BUILTIN_SEED = 10, 2024


@pytest.fixture(scope="session")
def fresh_builtin_phantoms(tmp_path_factory) -> Path:
    from synth.generate import builtin_specs, generate
    out = tmp_path_factory.mktemp("fresh")
    generate(out, builtin_specs(FRESH_BUILTIN_N, FRESH_BUILTIN_SEED), FRESH_BUILTIN_SEED, "test", workers=1)
    return out


@pytest.fixture(scope="session")
def cervai_dir() -> Path:
    """The real CervAI label/box folder; skips the test where ../shared is absent."""
    d = SHARED_DATA / "cervai"
    if not (d / "train_boxes.json").is_file() or not (d / "train_labels.json").is_file():
        pytest.skip(f"real CervAI files not found in {d}")
    return d


# ------------------------------------------------------------------------------------------------
# `run` outputs shared by the hardening tests (one run each per session: a run costs tens of seconds)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def examples_run(tmp_path_factory):
    """`run --input examples/` (the clean reference) in a fresh interpreter under a network audit hook,
    parsed (hardening_helpers.RunOutput, with .audit_log)."""
    from hardening_helpers import EXAMPLES, run_audited

    tmp = tmp_path_factory.mktemp("examples-run")
    return run_audited(["--input", str(EXAMPLES), "--out", str(tmp / "out")], tmp / "audit.log")


@pytest.fixture(scope="session")
def bad_batch_run(tmp_path_factory):
    """`run` on the examples plus one patient per bad-input case (hardening_helpers.build_bad_batch).

    One file is made unreadable: by chmod where the tests do not run as root, else (root reads anything)
    by making the loader's open() refuse it as the OS would.
    """
    import os

    from hardening_helpers import UNREADABLE, build_bad_batch, invoke_run

    root = build_bad_batch(tmp_path_factory.mktemp("hardening") / "batch")
    target = root / UNREADABLE[0] / UNREADABLE[1]
    args = ["--input", str(root), "--out", str(tmp_path_factory.mktemp("bad-batch-run"))]
    with pytest.MonkeyPatch.context() as mp:
        if hasattr(os, "geteuid") and os.geteuid() != 0:
            target.chmod(0)
        else:
            deny_reading(mp, target)
        try:
            result = invoke_run(args)
        finally:
            target.chmod(0o644)
    result.root = root
    return result
