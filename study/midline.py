"""The mid-sagittal plane of a sagittal stack, from the image: the plane the neck is mirror-symmetric about.

A sagittal series is planned on the spine, but its middle slice can miss the midline by several millimetres
(a 3-D slab placed off centre, an even slice count, a patient lying off the scanner's axis). Off the midline
the dens and the canal narrow and vanish, and the level count that starts at C2 slips. The neck's left and
right halves mirror each other about the mid-sagittal plane: slices at equal distances either side of it look
alike. Every candidate plane halfway between two slices is scored by the mean correlation of the slice pairs
it is halfway between (each slice downsampled to about 4 mm pixels, so that noise and small asymmetries
weigh little), and the best-scoring plane is the midline. Only slices within MAX_PAIR_MM of a candidate
count, and a candidate needs MIN_PAIRS pairs; the search stays within SEARCH_MM of the stack's middle.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import cv2
import numpy as np

# Pairs up to this far either side of a candidate plane: the vertebral column and the canal (about
# +-10 mm) and the paraspinal muscles next to them.
MAX_PAIR_MM = 12.0
# A candidate plane needs this many mirrored slice pairs to be scored.
MIN_PAIRS = 2
# The midline is searched this far either side of the stack's middle.
SEARCH_MM = 14.0
# Slices are compared on a grid of about this pixel size.
COMPARE_MM = 4.0
# The stack's middle is kept unless the mirror plane lies further from it than this: within it, both are
# the midline as closely as the slices can show it (the slices' own spacing is 1-4 mm).
KEEP_MIDDLE_MM = 2.5


def _standardised(pixels: np.ndarray, spacing_mm: Sequence[float]) -> np.ndarray:
    img = np.asarray(pixels, np.float32)
    h, w = img.shape
    size = (max(4, int(round(w * spacing_mm[1] / COMPARE_MM))), max(4, int(round(h * spacing_mm[0] / COMPARE_MM))))
    small = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return (small - small.mean()) / (small.std() + 1e-6)


def mirror_plane_mm(positions_mm: np.ndarray, read: Callable[[int], np.ndarray],
                    spacing_mm: Sequence[float]) -> Optional[float]:
    """Position (along the stack's normal, mm) of the plane the slices mirror each other about, or None when
    the stack is too short to say. read(k) gives slice k's pixels (all slices on one grid)."""
    pos = np.asarray(positions_mm, float)
    n = len(pos)
    if n < 2 * MIN_PAIRS:
        return None
    middle = (pos[0] + pos[-1]) / 2
    near = [k for k in range(n) if abs(pos[k] - middle) <= SEARCH_MM + MAX_PAIR_MM]
    images = {k: _standardised(read(k), spacing_mm) for k in near}
    scores = {}
    for a in near:
        for b in near:
            if b <= a or pos[b] - pos[a] > 2 * MAX_PAIR_MM:
                continue
            c = round((pos[a] + pos[b]) / 2, 2)
            if abs(c - middle) > SEARCH_MM:
                continue
            scores.setdefault(c, []).append(float((images[a] * images[b]).mean()))
    scored = {c: float(np.mean(v)) for c, v in scores.items() if len(v) >= MIN_PAIRS}
    if not scored:
        return None
    return max(scored, key=lambda c: (scored[c], -abs(c - middle)))
