"""Alignment measures from the sagittal images: where each body's posterior wall meets the bright canal, and its steps."""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from study.challenge import Box
from study.levels import DISCS, MID_SAGITTAL_SLICE, SAGITTAL_SLICES, VERTEBRAE

from .geometry import ANTERIOR_SIGN_X, CHALLENGE_PADDING_PX, canonical_boxes, step_residuals

# Search window past the box's posterior edge, as a fraction of body depth: the wall edge of a body
# whose box is a little loose or tight still falls inside it, and the canal beyond does not dominate.
_SEARCH_BEYOND = 0.45
# Rows whose wall edges define each body's posterior wall line (fractions of body height): the
# corners next to the discs are left out because disc bulges there sit behind the wall.
_CORE = (0.15, 0.85)


def _row_edges(block: np.ndarray, x_from: int) -> Tuple[np.ndarray, np.ndarray]:
    """Per row of `block` (rows x columns from x_from): sub-pixel x of the strongest dark-to-bright step
    (body to CSF) going posteriorly, and its size; NaN and 0 where no row rises."""
    n_rows, n_cols = block.shape
    if n_cols < 3:
        return np.full(n_rows, math.nan), np.zeros(n_rows)
    padded = np.pad(block.astype(float), ((0, 0), (1, 1)), mode="edge")
    seg = (padded[:, :-2] + 2.0 * padded[:, 1:-1] + padded[:, 2:]) / 4.0   # [1 2 1] / 4 along each row
    grad = -ANTERIOR_SIGN_X * np.diff(seg, axis=1)  # positive where intensity rises going posteriorly
    i = np.argmax(grad, axis=1)
    rows = np.arange(n_rows)
    g = grad[rows, i]
    # parabolic refinement on the gradient peak; the edge lies between samples i and i+1
    inner = (i > 0) & (i < grad.shape[1] - 1)
    a = grad[rows, np.clip(i - 1, 0, None)]
    c = grad[rows, np.clip(i + 1, None, grad.shape[1] - 1)]
    den = a - 2 * g + c
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(inner & (den != 0), 0.5 * (a - c) / den, 0.0)
    x = x_from + i + 0.5 + np.clip(off, -0.5, 0.5)
    rising = g > 0
    return np.where(rising, x, math.nan), np.where(rising, g, 0.0)


def _wall_edges(image: np.ndarray, box: Box, rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Edge x and size for each of `rows` (NaN and 0 for a row outside the image)."""
    h, w = image.shape
    depth = box.width
    if ANTERIOR_SIGN_X < 0:
        x_from, x_to = int(round(box.cx)), int(round(box.x2 + _SEARCH_BEYOND * depth))
    else:  # pragma: no cover - the challenge orientation is fixed; kept so the sign lives in one place
        x_from, x_to = int(round(box.x1 - _SEARCH_BEYOND * depth)), int(round(box.cx))
    x_from, x_to = max(0, x_from), min(w - 1, x_to)
    xs, gs = np.full(len(rows), math.nan), np.zeros(len(rows))
    inside = (rows >= 0) & (rows < h)
    if inside.any() and x_to >= x_from:
        xs[inside], gs[inside] = _row_edges(image[rows[inside], x_from:x_to + 1], x_from)
    return xs, gs


def _band(box: Box, lo: float, hi: float) -> np.ndarray:
    y0 = box.y1 + lo * box.height
    y1 = box.y1 + hi * box.height
    return np.arange(int(math.ceil(y0)), int(math.floor(y1)) + 1)


def _wall_line(image: np.ndarray, box: Box) -> Tuple[float, float, float]:
    """Robust line x = a + b * (y - box.cy) through the wall edges of the central rows; (a, b, contrast)."""
    rows = _band(box, _CORE[0], _CORE[1])
    xs, gs = _wall_edges(image, box, rows)
    ok = np.isfinite(xs)
    if ok.sum() < 3:
        return math.nan, math.nan, math.nan
    y, x = rows[ok] + 0.5 - box.cy, xs[ok]
    keep = np.ones(len(x), bool)
    for _ in range(2):  # drop rows that caught a bulge or the cord instead of the wall, then refit
        b, a = np.polyfit(y[keep], x[keep], 1)
        resid = np.abs(x - (a + b * y))
        new_keep = resid <= max(1.5, 2.5 * float(np.median(resid)))
        if new_keep.sum() < 3 or (new_keep == keep).all():
            break
        keep = new_keep
    b, a = np.polyfit(y[keep], x[keep], 1)
    return float(a), float(b), float(np.mean(gs[ok][keep]))


def _displacements(mx: np.ndarray, slope: np.ndarray, cy: np.ndarray, height: np.ndarray, depth: float):
    """Per body C3-C6 (over body depth, posterior positive): its mid-wall off the line through its
    neighbours' mid-walls at its height ('bump'), and that bump beyond the mean of the neighbours' bumps
    ('listhesis', a matched filter for the -1/2, 1, -1/2 pattern); per disc: the gap between the wall
    lines' ends across it, less the median gap.

    A body displaced by d gives bump d with bumps of about -d/2 at both neighbours (listhesis 1.5 d); a bend
    of the column at one body gives one bump with none beside it. Interpolating at the bodies' heights,
    unlike the disc steps, ignores uneven spacing of a tilted column.
    """
    post = -ANTERIOR_SIGN_X
    bump = np.full(len(VERTEBRAE), math.nan)
    for k in range(1, len(VERTEBRAE) - 1):
        t = (cy[k] - cy[k - 1]) / (cy[k + 1] - cy[k - 1])
        bump[k] = post * (mx[k] - (mx[k - 1] + t * (mx[k + 1] - mx[k - 1]))) / depth
    # C2 and C7 have no bump (no neighbour on one side): they count as in line, so C3 and C6 are scored alike.
    padded = np.nan_to_num(bump, nan=0.0)
    listhesis = np.array([bump[k] - (padded[k - 1] + padded[k + 1]) / 2 for k in range(1, len(VERTEBRAE) - 1)])
    ends = np.array([post * ((mx[k + 1] - slope[k + 1] * height[k + 1] / 2) - (mx[k] + slope[k] * height[k] / 2))
                     / depth for k in range(len(DISCS))])
    return bump[1:-1], listhesis, ends - np.median(ends)


def _slice_measures(image: np.ndarray, boxes_on_slice: Mapping[str, Box], padding_px: float):
    """Per-disc step residuals, body displacements (see _displacements), mean wall-to-box offset and mean
    edge contrast of one sagittal slice."""
    image = np.asarray(image, dtype=float)
    if image.ndim != 2:
        raise ValueError(f"sagittal image must be 2-D, got shape {image.shape}")
    tight, _ = canonical_boxes({MID_SAGITTAL_SLICE: boxes_on_slice}, padding_px, image_size=max(image.shape))
    boxes = tight[MID_SAGITTAL_SLICE]
    depth = float(np.mean([boxes[lv].width for lv in VERTEBRAE[1:5]]))
    span = float(image.max() - image.min()) or 1.0
    lines = [_wall_line(image, boxes[lv]) for lv in VERTEBRAE]
    post = -ANTERIOR_SIGN_X  # posterior is +x on the challenge images
    mx = np.array([ln[0] for ln in lines])
    # Listhesis = the jump of the mid-wall position at a disc beyond the mean of the neighbouring jumps
    # (what the curve explains). Comparing per-body wall slopes instead was tried on phantoms and is too
    # noisy over ~15 rows (AUC 0.65 vs 0.86 for poor alignment).
    res = step_residuals(mx) * post / depth if np.isfinite(mx).all() else np.full(len(DISCS), math.nan)
    if np.isfinite(mx).all():
        slope = np.array([ln[1] for ln in lines])
        moved = _displacements(mx, slope, np.array([boxes[lv].cy for lv in VERTEBRAE]),
                               np.array([boxes[lv].height for lv in VERTEBRAE]), depth)
    else:
        moved = (np.full(len(VERTEBRAE) - 2, math.nan), np.full(len(VERTEBRAE) - 2, math.nan),
                 np.full(len(DISCS), math.nan))
    box_post = np.array([boxes[lv].x2 if ANTERIOR_SIGN_X < 0 else boxes[lv].x1 for lv in VERTEBRAE])
    off = post * (mx - box_post) / depth
    contrast = np.array([ln[2] for ln in lines]) / span
    return (res, moved, float(np.nanmean(off)) if np.isfinite(off).any() else math.nan,
            float(np.nanmean(contrast)) if np.isfinite(contrast).any() else math.nan)


def image_features(sagittal_images: Mapping[int, np.ndarray], boxes: Mapping[int, Mapping[str, Box]],
                   padding_px: float = CHALLENGE_PADDING_PX) -> Dict[str, float]:
    """Posterior-wall positions measured in the sagittal images and the steps between neighbouring bodies.

    sagittal_images: slice number -> 2-D array (any intensity scale; T2-like: bodies darker than the CSF
    behind them); boxes: slice number -> level -> Box with `padding_px` padding (as for curve_features).
    On each slice every body's posterior wall is a robust line through the strongest body-to-CSF edge of
    its central rows. A listhesis displaces the whole body, so it shows on slices 5, 6 and 7 alike: each
    step is the median over the slices that measured it (a 2-3 px step against single-slice noise).
    Columns: image_posterior_step_{disc} (jump of the mid-wall position at the disc beyond what the
    neighbouring jumps explain; posterior positive, over mean body depth), their max |.|, the number of
    slices measured; per body C3-C6 image_wall_bump_{level} and image_wall_listhesis_{level}, per disc
    image_wall_end_gap_{disc} (see _displacements), each with its max |.|; the mean offset of the image
    wall from the box edge and the mean edge contrast. A measure no slice could make gives NaN columns
    (LightGBM treats them as missing).
    """
    per_slice = [_slice_measures(sagittal_images[s], boxes[s], padding_px)
                 for s in SAGITTAL_SLICES if s in sagittal_images and s in boxes]
    if not per_slice:
        raise ValueError(f"no sagittal slice with both an image and boxes (slices {SAGITTAL_SLICES})")
    res = np.array([r for r, _, _, _ in per_slice])            # (slices, discs)
    measured = np.isfinite(res).all(axis=1)

    def median(rows: np.ndarray) -> np.ndarray:
        return np.median(rows[measured], axis=0) if measured.any() else np.full(rows.shape[1], math.nan)
    feats: Dict[str, float] = {}
    for prefix, names, values in (
            ("image_posterior_step", DISCS, median(res)),
            ("image_wall_bump", VERTEBRAE[1:-1], median(np.array([m[0] for _, m, _, _ in per_slice]))),
            ("image_wall_listhesis", VERTEBRAE[1:-1], median(np.array([m[1] for _, m, _, _ in per_slice]))),
            ("image_wall_end_gap", DISCS, median(np.array([m[2] for _, m, _, _ in per_slice])))):
        for name, v in zip(names, values):
            feats[f"{prefix}_{name}"] = float(v)
        feats[f"{prefix}_max"] = float(np.abs(values).max()) if measured.any() else math.nan
        if prefix == "image_posterior_step":
            feats["image_step_slices"] = float(measured.sum())
    offs = [o for _, _, o, _ in per_slice if math.isfinite(o)]
    feats["image_wall_box_offset_mean"] = float(np.mean(offs)) if offs else math.nan
    cons = [c for _, _, _, c in per_slice if math.isfinite(c)]
    feats["image_wall_contrast"] = float(np.mean(cons)) if cons else math.nan
    return feats


def image_feature_names() -> List[str]:
    """Column order of image_features."""
    img = np.zeros((224, 224))
    boxes = {lv: Box(100, 40 + 25 * i, 120, 60 + 25 * i) for i, lv in enumerate(VERTEBRAE)}
    img[:, 118:] = 1.0
    return list(image_features({MID_SAGITTAL_SLICE: img}, {MID_SAGITTAL_SLICE: boxes}).keys())
