"""The one vocabulary: level names, positions, slices and the label schema every stage imports."""
from __future__ import annotations

from typing import Dict, Tuple

# Vertebrae the challenge boxes and the detector locate, top to bottom.
VERTEBRAE: Tuple[str, ...] = ("C2", "C3", "C4", "C5", "C6", "C7")
# Intervertebral discs, top to bottom; disc i lies between VERTEBRAE[i] and VERTEBRAE[i + 1].
DISCS: Tuple[str, ...] = ("C2-3", "C3-4", "C4-5", "C5-6", "C6-7")
# The 11 central-canal positions in challenge order: vertebra, disc, vertebra, ... C7.
CANAL_POSITIONS: Tuple[str, ...] = (
    "C2", "C2-3", "C3", "C3-4", "C4", "C4-5", "C5", "C5-6", "C6", "C6-7", "C7",
)
# Index of each disc inside CANAL_POSITIONS (1, 3, 5, 7, 9).
DISC_CANAL_INDEX: Dict[str, int] = {d: CANAL_POSITIONS.index(d) for d in DISCS}

# Sagittal slices the challenge provides; 6 is mid-sagittal.
SAGITTAL_SLICES: Tuple[int, ...] = (5, 6, 7)
MID_SAGITTAL_SLICE = 6

# Challenge image size (pixels, square).
IMAGE_SIZE = 224

# Label schema: the meaning of each class index.
CURVATURE_CLASSES: Tuple[str, ...] = ("normal", "straightened", "kyphotic")
ALIGNMENT_CLASSES: Tuple[str, ...] = ("poor", "acceptable")
DISC_GRADES: Tuple[str, ...] = ("normal", "bulge", "protrusion", "extrusion")
CANAL_GRADES: Tuple[str, ...] = (
    "none",
    "mild (cord not compressed)",
    "cord compressed",
    "cord compressed with signal change",
)
# The alignment class the challenge scores (F1 of "poor" only).
ALIGNMENT_SCORED_CLASS = ALIGNMENT_CLASSES.index("poor")


def axial_file_stem(position: str) -> str:
    """File stem of a position's axial image in the challenge layout: 'C2-3' -> '2-3', 'C4' -> '4'."""
    if position not in CANAL_POSITIONS:
        raise ValueError(f"unknown canal position {position!r}; expected one of {CANAL_POSITIONS}")
    return position[1:]


def position_from_axial_stem(stem: str) -> str:
    """Inverse of axial_file_stem: '2-3' -> 'C2-3'."""
    position = "C" + stem
    if position not in CANAL_POSITIONS:
        raise ValueError(f"unknown axial image name {stem!r}; expected one of "
                         f"{[axial_file_stem(p) for p in CANAL_POSITIONS]}")
    return position


def is_disc(position: str) -> bool:
    """True for a disc position (C2-3 ...), False for a vertebra (C2 ...)."""
    return position in DISCS


def disc_neighbours(disc: str) -> Tuple[str, str]:
    """The vertebra above and below a disc: 'C3-4' -> ('C3', 'C4')."""
    i = DISCS.index(disc)
    return VERTEBRAE[i], VERTEBRAE[i + 1]
