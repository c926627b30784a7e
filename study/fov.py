"""The field of view of an image without geometry: which pixels hold acquired data and which are padding."""
from __future__ import annotations

import numpy as np

# Zero bands thinner than this are not called padding: a 1-2 px black frame is a common export artefact,
# and no level can sit in it anyway.
MIN_PADDING_PX = 3


def padding_mask(image: np.ndarray, min_band_px: int = MIN_PADDING_PX) -> np.ndarray:
    """True where `image` holds acquired data, False on the padding around it.

    Padding is what a scan framed smaller than its canvas leaves: bands along the borders whose pixels are
    all exactly 0. The bands are peeled from the four edges inward, whole rows and columns of the part not
    yet peeled, until every edge row and column holds a non-zero pixel; what remains is one rectangle, the
    field of view. Dark anatomy inside the image (the airway, CSF-free gaps) and the dark background of a
    real MR image are not padding: noise makes a real background non-zero somewhere in every row, and
    anything inside the rectangle stays in it. A band thinner than `min_band_px` is kept (a thin black
    frame is no field-of-view edge). An image with no non-zero pixel at all says nothing about its field of
    view; it gets an all-True mask (the loader flags it as blank).
    """
    img = np.asarray(image)
    rows, cols = img.shape
    nonzero = img != 0
    if not nonzero.any():
        return np.ones((rows, cols), bool)
    top, bottom, left, right = 0, rows, 0, cols
    changed = True
    while changed:
        changed = False
        while top < bottom and not nonzero[top, left:right].any():
            top, changed = top + 1, True
        while bottom > top and not nonzero[bottom - 1, left:right].any():
            bottom, changed = bottom - 1, True
        while left < right and not nonzero[top:bottom, left].any():
            left, changed = left + 1, True
        while right > left and not nonzero[top:bottom, right - 1].any():
            right, changed = right - 1, True
    # Thin bands are no padding: give them back to the field of view.
    if top < min_band_px:
        top = 0
    if rows - bottom < min_band_px:
        bottom = rows
    if left < min_band_px:
        left = 0
    if cols - right < min_band_px:
        right = cols
    mask = np.zeros((rows, cols), bool)
    mask[top:bottom, left:right] = True
    return mask


def describe_padding(mask: np.ndarray) -> str:
    """'rows 0-49 and columns 200-223 are padding' style description of what a mask leaves out ('' if none)."""
    rows = np.nonzero(mask.any(1))[0]
    cols = np.nonzero(mask.any(0))[0]
    if not len(rows):
        return "the whole image is padding"
    parts = []
    h, w = mask.shape
    for name, lo, hi, n in (("rows", rows[0], rows[-1], h), ("columns", cols[0], cols[-1], w)):
        if lo > 0:
            parts.append(f"{name} 0-{lo - 1}")
        if hi < n - 1:
            parts.append(f"{name} {hi + 1}-{n - 1}")
    return ", ".join(parts)
