"""study.splits: variant ids and the evaluation hold-out every stage excludes."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from study.challenge import PatientLabels, read_labels
from study.errors import InputError
from study.levels import CANAL_POSITIONS, DISCS
from study.splits import exclude_holdout, holdout_split, read_holdout, split_key, variant_id, write_holdout


def labels(n: int = 200):
    out = []
    for i in range(n):
        curv = 0 if i % 6 == 0 else (2 if i % 6 == 1 else 1)
        align = 0 if i % 19 == 0 else 1
        disc = (3 if i % 23 == 0 else 2,) + (0,) * (len(DISCS) - 1)
        out.append(PatientLabels(f"p{i:04d}", curv, align, disc, (0,) * len(CANAL_POSITIONS)))
    return out


def test_variant_ids_belong_to_their_geometry():
    assert variant_id("1042", "poor") == "1042~poor"
    assert variant_id("1042~rare", "poor") == "1042~poor"
    assert split_key("1042~poor") == split_key("1042") == "1042"
    assert exclude_holdout(["1", "1~rare", "2", "2~poor"], {"2"}) == ["1", "1~rare"]


def test_holdout_is_deterministic_order_free_and_stratified():
    labs = labels()
    train, held = holdout_split(labs, 50)
    assert len(held) == 50 and len(train) == 150 and not set(train) & set(held)
    assert holdout_split(list(reversed(labs)), 50) == (train, held)
    assert holdout_split(labs, 50, seed=1)[1] != held
    by_id = {lab.patient_id: lab for lab in labs}
    for key in ("curvature", "alignment"):
        full = Counter(getattr(lab, key) for lab in labs)
        part = Counter(getattr(by_id[i], key) for i in held)
        for cls, n in full.items():
            assert abs(part[cls] - n * 50 / 200) <= 1.5, (key, cls, part[cls], n)


def test_holdout_ignores_variants_and_checks_its_size():
    labs = labels(40)
    extra = [PatientLabels(variant_id(lab.patient_id, "poor"), lab.curvature, 0, lab.disc_grades, lab.canal_grades)
             for lab in labs]
    assert holdout_split(labs + extra, 10) == holdout_split(labs, 10)
    with pytest.raises(ValueError, match="41"):
        holdout_split(labs, 41)


def test_holdout_file_round_trip_and_bad_file(tmp_path):
    _, held = holdout_split(labels(), 20)
    path = write_holdout(tmp_path / "holdout.json", held, source="labels.json")
    assert read_holdout(path) == set(held)
    assert json.loads(path.read_text())["n"] == 20
    (tmp_path / "list.json").write_text(json.dumps(held))
    assert read_holdout(tmp_path / "list.json") == set(held)
    (tmp_path / "bad.json").write_text('{"ids": [1, 2]}')
    with pytest.raises(InputError, match="bad.json"):
        read_holdout(tmp_path / "bad.json")
    with pytest.raises(InputError, match="missing.json"):
        read_holdout(tmp_path / "missing.json")


def test_real_cervai_holdout_keeps_the_rare_classes(cervai_dir):
    labs = read_labels(cervai_dir / "train_labels.json")
    train, held = holdout_split(labs)
    assert len(held) == 100 and len(train) == 220
    by_id = {lab.patient_id: lab for lab in labs}
    poor = sum(by_id[i].alignment == 0 for i in held)
    assert 4 <= poor <= 7  # 17 of 320 in all
    assert {by_id[i].curvature for i in held} == {0, 1, 2}
