"""Rare-grade training phantoms: real geometries re-rendered with one protrusion made an extrusion (and cord signal).

Disc extrusions (26 of 1600 discs) and canal grade 3 (95 of 3520 positions) are too rare in the real label
counts for a network to learn from a few hundred patients. The phantom draws any label by its definition,
so each training geometry is rendered once more with one protrusion upgraded to an extrusion, the canal at
that disc set to grade 2 or 3 (the real co-occurrence: 13 and 12 of the 26 extrusions), and one other
compressed disc-level canal given cord signal. Variant ids are '{id}~rare' so a patient-level split keeps
them with their source geometry (see split_key).
"""
from __future__ import annotations

from dataclasses import replace
from typing import List, Optional, Sequence

import numpy as np

from study.challenge import PatientLabels
from study.levels import DISC_CANAL_INDEX, DISCS
from synth.generate import PhantomSpec

VARIANT_SEPARATOR = "~"
VARIANT_SUFFIX = VARIANT_SEPARATOR + "rare"


def split_key(patient_id: str) -> str:
    """The geometry a patient id was rendered from: variants '{id}~...' belong to '{id}'."""
    return patient_id.split(VARIANT_SEPARATOR, 1)[0]


def rare_variant(labels: PatientLabels, rng: np.random.Generator) -> Optional[PatientLabels]:
    """The labels with one protrusion made an extrusion; None when the patient has no protrusion."""
    disc = list(labels.disc_grades)
    canal = list(labels.canal_grades)
    protrusions = [j for j, g in enumerate(disc) if g == 2]
    if not protrusions:
        return None
    j = int(rng.choice(protrusions))
    disc[j] = 3
    canal[DISC_CANAL_INDEX[DISCS[j]]] = int(rng.choice([2, 3]))
    # Cord signal at another disc level whose cord is already compressed, now and then.
    compressed = [DISC_CANAL_INDEX[d] for k, d in enumerate(DISCS) if k != j and canal[DISC_CANAL_INDEX[d]] == 2]
    if compressed and rng.random() < 0.5:
        canal[int(rng.choice(compressed))] = 3
    return PatientLabels(labels.patient_id + VARIANT_SUFFIX, labels.curvature, labels.alignment,
                         tuple(disc), tuple(canal))


def rare_variant_specs(specs: Sequence[PhantomSpec], seed: int) -> List[PhantomSpec]:
    """One rare-grade variant per spec that has a protrusion (same geometry and index, new labels and id)."""
    rng = np.random.default_rng(seed)
    out = []
    for spec in specs:
        labels = rare_variant(spec.labels, rng)
        if labels is not None:
            out.append(replace(spec, boxes=replace(spec.boxes, patient_id=labels.patient_id), labels=labels))
    return out
