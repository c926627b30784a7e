"""Detector dataset export (split, label files, disc rule) and a toy train -> predict run on phantoms, offline."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import yaml

from detector.boxes import disc_boxes
from detector.config import DetectorConfig, TrainConfig, class_names
from detector.dataset import build_dataset, split_patients
from study.challenge import read_box_file
from study.levels import DISCS, SAGITTAL_SLICES, VERTEBRAE

N_PATIENTS = 5


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    from synth.generate import builtin_specs, generate
    out = tmp_path_factory.mktemp("phantoms")
    generate(out, builtin_specs(N_PATIENTS, 5), 5, "test", workers=1)
    return out


@pytest.fixture
def no_network(monkeypatch):
    """Every socket connection or DNS lookup fails and is recorded."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("network disabled in this test")
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a, **k: refuse(*a))
    return attempts


def read_labels_txt(path: Path):
    return [tuple(float(v) for v in line.split()) for line in path.read_text().splitlines() if line.strip()]


def test_split_is_patient_level_and_reproducible():
    ids = [f"p{i:03d}" for i in range(40)]
    train, val = split_patients(ids, 0.25, seed=3)
    assert not set(train) & set(val) and sorted(train + val) == ids and len(val) == 10
    assert split_patients(ids, 0.25, seed=3) == (train, val)
    assert split_patients(ids, 0.25, seed=4) != (train, val)
    with pytest.raises(ValueError):
        split_patients(ids, 1.0, 0)


def test_export_levels_design(phantoms, tmp_path):
    info = build_dataset(phantoms, phantoms / "boxes.json", tmp_path / "ds", val_fraction=0.4, seed=1)
    assert not set(info.train_ids) & set(info.val_ids)
    assert len(info.train_ids) + len(info.val_ids) == N_PATIENTS and len(info.val_ids) == 2
    data = yaml.safe_load(info.data_yaml.read_text())
    assert data["nc"] == 11 and [data["names"][i] for i in range(11)] == list(VERTEBRAE + DISCS)
    split = json.loads((tmp_path / "ds" / "split.json").read_text())
    assert split["val"] == list(info.val_ids)
    truth = read_box_file(phantoms / "boxes.json").by_id()
    for side, ids in (("train", info.train_ids), ("val", info.val_ids)):
        imgs = sorted(p.name for p in (tmp_path / "ds" / "images" / side).iterdir())
        assert imgs == sorted(f"{pid}_s{s}.png" for pid in ids for s in SAGITTAL_SLICES)
        for pid in ids:
            for s in SAGITTAL_SLICES:
                rows = read_labels_txt(tmp_path / "ds" / "labels" / side / f"{pid}_s{s}.txt")
                assert [int(r[0]) for r in rows] == list(range(11))
                assert all(0 <= v <= 1 for r in rows for v in r[1:])
                vert, discs = truth[pid].boxes[s], disc_boxes(truth[pid].boxes[s])
                for r in rows:
                    name = class_names("levels")[int(r[0])]
                    b = discs[name] if name in DISCS else vert[name]
                    # the disc rule and the vertebra boxes, normalised (disc boxes clipped to the image)
                    x1, x2 = max(0, b.x1), min(224, b.x2)
                    y1, y2 = max(0, b.y1), min(224, b.y2)
                    assert r[1:] == pytest.approx(((x1 + x2) / 448, (y1 + y2) / 448, (x2 - x1) / 224,
                                                   (y2 - y1) / 224), abs=1e-5)


def test_export_generic_design_and_fixed_val_ids(phantoms, tmp_path):
    ids = sorted(read_box_file(phantoms / "boxes.json").by_id())
    info = build_dataset(phantoms, phantoms / "boxes.json", tmp_path / "ds", seed=0, class_design="generic",
                         val_ids=ids[:1])
    assert info.val_ids == (ids[0],) and ids[0] not in info.train_ids
    rows = read_labels_txt(tmp_path / "ds" / "labels" / "val" / f"{ids[0]}_s6.txt")
    assert [int(r[0]) for r in rows] == [0] * 6 + [1] * 5
    assert yaml.safe_load(info.data_yaml.read_text())["names"] == {0: "vertebra", 1: "disc"}


def test_export_skips_patients_without_images_with_a_warning(phantoms, tmp_path, caplog):
    # A patient with no sagittal image has nothing to learn from: skipped and named, never the whole folder
    # (the classifier skips it the same way).
    boxes = json.loads((phantoms / "boxes.json").read_text())
    boxes.append(dict(boxes[0], id="ghost"))
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    with caplog.at_level("WARNING", logger="detector.dataset"):
        info = build_dataset(phantoms, tmp_path / "boxes.json", tmp_path / "ds", val_fraction=0.4, seed=1)
    assert any("ghost" in r.getMessage() and "skipping 1 patient" in r.getMessage() for r in caplog.records)
    assert "ghost" not in info.train_ids + info.val_ids
    assert sorted(info.train_ids + info.val_ids) == sorted(b["id"] for b in boxes[:-1])


def test_toy_train_then_predict_offline(phantoms, tmp_path, no_network):
    """Train 1 epoch at a tiny size with the network disabled; predict still answers 6 + 5 ordered boxes."""
    from detector.predict import Detector
    from detector.train import train
    from study.loader import load_study

    out = tmp_path / "weights"
    result = train(phantoms, phantoms / "boxes.json", out, DetectorConfig(imgsz=64),
                   TrainConfig(epochs=1, batch=4, val_fraction=0.2, workers=0, cache=""),
                   work_dir=tmp_path / "work", verbose=False, real_check=False)
    for f in ("best.pt", "config.json", "MODEL_CARD.md", "metrics.json"):
        assert (out / f).is_file(), f
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["classes"] == list(VERTEBRAE + DISCS) and len(cfg["sha256"]) == 64
    assert "held-out split" in result.metrics
    card = (out / "MODEL_CARD.md").read_text()
    assert "git commit" in card and "held-out split" in card and "1 epochs" in card

    det = Detector.from_weights(out)
    study = load_study(phantoms / result.dataset.val_ids[0], require_all_axial=False)
    lb = det.predict(study)
    for s in SAGITTAL_SLICES:
        assert list(lb.vertebrae[s]) == list(VERTEBRAE) and list(lb.discs[s]) == list(DISCS)
        cy = [lb.vertebrae[s][lv].box.cy for lv in VERTEBRAE]
        assert all(a < b for a, b in zip(cy, cy[1:]))
        assert all(0.0 <= v.confidence <= 1.0 for v in list(lb.vertebrae[s].values()) + list(lb.discs[s].values()))
    assert no_network == []
