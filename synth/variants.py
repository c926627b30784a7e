"""Label variants of real geometries: the same patient re-rendered with a label the real data holds too rarely.

Variant ids are '{id}~{variant}' (study.splits.variant_id), so a patient-level split keeps every render of
a geometry with its source.

Rare grades ('~rare'): one protrusion made an extrusion (and cord signal).

Disc extrusions (26 of 1600 discs) and canal grade 3 (95 of 3520 positions) are too rare in the real label
counts for a network to learn from a few hundred patients. The phantom draws any label by its definition,
so each training geometry is rendered once more with one protrusion upgraded to an extrusion, the canal at
that disc set to grade 2 or 3 (the real co-occurrence: 13 and 12 of the 26 extrusions), and one other
compressed disc-level canal given cord signal.

Poor alignment ('~poor'): real poor alignment is 17 of 320 patients, too few to learn a listhesis from.
Every geometry with acceptable alignment is rendered once more with alignment 0, which the phantom draws
by its definition (synth/anatomy.py: one body displaced 2.8-4.2 mm, a visible step).
"""
from __future__ import annotations

from dataclasses import replace
from typing import List, Optional, Sequence

import numpy as np

from study.challenge import PatientLabels
from study.levels import ALIGNMENT_SCORED_CLASS, DISC_CANAL_INDEX, DISCS
from study.splits import split_key, variant_id

from .generate import PhantomSpec

RARE_VARIANT, POOR_VARIANT = "rare", "poor"


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
    return PatientLabels(variant_id(labels.patient_id, RARE_VARIANT), labels.curvature, labels.alignment,
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


def poor_alignment_specs(specs: Sequence[PhantomSpec]) -> List[PhantomSpec]:
    """A poor-alignment variant ('{id}~poor') of every spec with acceptable alignment: same geometry, a listhesis drawn."""
    out = []
    for spec in specs:
        if spec.labels.alignment == ALIGNMENT_SCORED_CLASS:
            continue
        pid = variant_id(spec.labels.patient_id, POOR_VARIANT)
        labels = replace(spec.labels, patient_id=pid, alignment=ALIGNMENT_SCORED_CLASS)
        out.append(replace(spec, boxes=replace(spec.boxes, patient_id=pid), labels=labels))
    return out


def keeps_real_grades(patient_id: str) -> bool:
    """True for a render whose disc and canal grades are its geometry's real ones (itself or a '~poor' variant)."""
    return patient_id == split_key(patient_id) or patient_id == variant_id(patient_id, POOR_VARIANT)


VARIANTS = {RARE_VARIANT: "rare-grade variants (one protrusion made an extrusion)",
            POOR_VARIANT: "poor-alignment variants (a listhesis drawn)"}


def variant_specs(variant: str, specs: Sequence[PhantomSpec], seed: int) -> List[PhantomSpec]:
    """The variant specs of one kind (see VARIANTS) for real-geometry specs."""
    if variant == RARE_VARIANT:
        return rare_variant_specs(specs, seed)
    if variant == POOR_VARIANT:
        return poor_alignment_specs(specs)
    raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
