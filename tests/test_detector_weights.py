"""Shipped detector weights: files and config, offline predict, the real-scan check (score floors: test_shipped_weights.py)."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from common.files import sha256_of
from detector.predict import CONFIG_FILE, DEFAULT_WEIGHTS_DIR, WEIGHTS_FILE

pytestmark = pytest.mark.skipif(not (DEFAULT_WEIGHTS_DIR / WEIGHTS_FILE).is_file(),
                                reason=f"no shipped detector weights at {DEFAULT_WEIGHTS_DIR}")


@pytest.fixture(scope="module")
def detector():
    from detector.predict import Detector
    return Detector.from_weights()


def test_shipped_folder_is_complete_and_consistent():
    meta = json.loads((DEFAULT_WEIGHTS_DIR / CONFIG_FILE).read_text())
    assert meta["sha256"] == sha256_of(DEFAULT_WEIGHTS_DIR / WEIGHTS_FILE)
    assert meta["input"]["size"] == meta["detector"]["imgsz"]
    assert (DEFAULT_WEIGHTS_DIR / "MODEL_CARD.md").is_file()
    assert (DEFAULT_WEIGHTS_DIR / WEIGHTS_FILE).stat().st_size < 8e6


def test_predict_makes_no_network_access(detector, fresh_builtin_phantoms, monkeypatch):
    from detector.predict import Detector
    from study.loader import find_patients, load_study
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("network disabled in this test")
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a, **k: refuse(*a))
    from detector.predict import load_network
    fresh = Detector.from_weights()  # loading, too, must stay offline: the traced copy `run` loads on the CPU
    fresh.predict(load_study(find_patients(fresh_builtin_phantoms)[0], require_all_axial=False))
    load_network(DEFAULT_WEIGHTS_DIR / WEIGHTS_FILE)   # and the network built by ultralytics (GPU, stale copy)
    assert attempts == []
    assert os.environ.get("YOLO_OFFLINE") == "1"


def test_offline_environment_is_in_place(detector):
    from ultralytics import settings
    from ultralytics.utils import USER_CONFIG_DIR
    assert settings["sync"] is False
    for font in ("Arial.ttf", "Arial.Unicode.ttf"):
        assert (Path(USER_CONFIG_DIR) / font).is_file()


def test_real_scan_check_measures_each_labelled_level():
    """The check itself (not the detector's score on the scan, which the README reports): every labelled level
    in order with a plausible height, and the error, 'inside' and confidence taken from the detector's boxes."""
    from detector.real_check import check_real_scan, real_scan_available
    why = real_scan_available()
    if why:
        pytest.skip(f"real scan not available: {why}")
    from detector.predict import Detector
    check = check_real_scan(Detector.from_weights())
    assert [c.level for c in check.levels] == ["C2", "C3", "C4", "C5"]
    tops = [c.label_top_mm for c in check.levels]
    assert all(a < b for a, b in zip(tops, tops[1:]))      # labels ordered head to foot
    for c in check.levels:
        # at most a vertebra's height (C2 with the dens); the scan's lower edge cuts C5 to a few mm
        assert 0.0 < c.label_bottom_mm - c.label_top_mm < 45.0, c
        assert c.error_mm == pytest.approx(c.predicted_cy_mm - (c.label_top_mm + c.label_bottom_mm) / 2)
        assert c.inside == (c.label_top_mm <= c.predicted_cy_mm <= c.label_bottom_mm)
        placed = check.boxes.vertebrae[6][c.level]
        assert (c.confidence, c.interpolated) == (placed.confidence, placed.interpolated)
    inside = sum(c.inside for c in check.levels)
    assert f"{inside}/{len(check.levels)} labelled levels" in check.table()
