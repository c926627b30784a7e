"""Anatomical assignment without a network: raw candidates -> one box per level, ordered, gaps filled, flagged."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from study.challenge import Box
from study.levels import DISCS, MID_SAGITTAL_SLICE, SAGITTAL_SLICES, VERTEBRAE, disc_neighbours

from .boxes import LevelBox, LevelBoxes, disc_box_between
from .config import DetectorConfig

N_VERT = len(VERTEBRAE)
C2_NOT_FOUND = ("C2 not found on the mid slice (out of view, or not recognised): the levels are named without "
                "the body they are counted from and may be off by one or more")
C3_AT_THE_EDGE = ("the field of view ends over the top body and no body was recognised as C2: the count starts "
                  "there at C3 (one level hidden above the edge, the fewest); if more are hidden, every name is "
                  "off by as many")

# Where C2..C7 sit when nothing at all was found (mean challenge geometry, mid slice); only ever used
# flagged as interpolated with confidence 0, so downstream stages can refuse it.
FALLBACK_LAYOUT: Tuple[Tuple[float, float, float, float], ...] = (
    (88.0, 52.0, 110.0, 84.0), (86.0, 82.0, 106.0, 100.0), (85.0, 98.0, 105.0, 116.0),
    (84.0, 114.0, 104.0, 132.0), (84.0, 130.0, 104.0, 148.0), (85.0, 146.0, 105.0, 164.0),
)


@dataclass(frozen=True)
class Candidates:
    """Raw detections of one pool (vertebrae or discs) on one slice.

    boxes: (K, 4) xyxy pixels. scores: (K, L) score of each candidate for each level of the pool
    (L = 6 vertebrae or 5 discs), or (K, 1) for a generic class that does not name the level.
    """

    boxes: np.ndarray
    scores: np.ndarray

    def __post_init__(self):
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 4 or self.scores.ndim != 2 \
                or len(self.scores) != len(self.boxes):
            raise ValueError(f"Candidates: boxes (K,4) and scores (K,L) expected, got {self.boxes.shape} "
                             f"and {self.scores.shape}")

    @staticmethod
    def empty(n_levels: int) -> "Candidates":
        return Candidates(np.zeros((0, 4), np.float32), np.zeros((0, n_levels), np.float32))

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def cy(self) -> np.ndarray:
        return (self.boxes[:, 1] + self.boxes[:, 3]) / 2

    @property
    def cx(self) -> np.ndarray:
        return (self.boxes[:, 0] + self.boxes[:, 2]) / 2


@dataclass(frozen=True)
class SliceAssignment:
    """Candidate index per level (-1: none) and the class score that won it."""

    index: Tuple[int, ...]
    score: Tuple[float, ...]


def level_scores(c: Candidates, n_levels: int, tau: float) -> np.ndarray:
    """(L, K) score of candidate k for level l. A generic pool names no level: its score counts for every
    level except C2, which only the topmost confident candidate may take (C1 is never boxed)."""
    if c.scores.shape[1] == n_levels:
        return c.scores.T.astype(np.float64)
    s = np.repeat(c.scores[:, :1].T.astype(np.float64), n_levels, 0)
    confident = np.nonzero(c.scores[:, 0] > tau)[0]
    s[0] = 0.0
    if len(confident):
        top = confident[np.argmin(c.cy[confident])]
        s[0, top] = c.scores[top, 0]
    return s


def assign_levels(c: Candidates, cfg: DetectorConfig, prior_cy: Optional[np.ndarray] = None,
                  prior_step: Optional[float] = None, view_top: Optional[np.ndarray] = None) -> SliceAssignment:
    """Pick at most one candidate per level, strictly top to bottom with plausible spacing, maximising
    the summed (score - assign_min_score) plus a bonus for agreeing with prior_cy (the other slices).

    Dynamic programming over (level, candidate): a level may stay empty at no cost; two levels l' < l
    may only take candidates i, j when j lies below i by a plausible multiple (l - l') of the body height.
    view_top: per candidate, the first row of its column that holds image data (default 0, the image's top).
    """
    n = N_VERT
    k = len(c)
    if k == 0:
        return SliceAssignment((-1,) * n, (0.0,) * n)
    order = np.argsort(c.cy, kind="stable")
    cy = c.cy[order]
    heights = (c.boxes[order, 3] - c.boxes[order, 1])
    s = level_scores(c, n, cfg.assign_min_score)[:, order]
    best_any = s.max(0)
    # Body height from confident candidates; C2's dens makes its box taller, so a median, not a mean.
    confident = best_any > cfg.assign_min_score
    h = float(np.median(heights[confident] if confident.any() else heights))
    counting = cfg.assign_mode == "count"
    step = body_spacing(cy[confident], h) if counting else None
    if counting:
        # C2 is named by its class (its dens and tall body); every other body by its place in the count.
        w = cfg.count_generic_weight
        s = np.vstack([s[:1], w * best_any[None, :] + (1 - w) * s[1:]])
    gain = s - cfg.assign_min_score
    if prior_cy is not None and prior_step:
        sigma = max(1.0, cfg.consensus_sigma_steps * prior_step)
        for lv in range(n):
            if np.isfinite(prior_cy[lv]):
                gain[lv] += cfg.consensus_weight * np.exp(-0.5 * ((cy - prior_cy[lv]) / sigma) ** 2) * (s[lv] > 0.5 * cfg.assign_min_score)
    gain[s <= cfg.assign_min_score * 0.5] = -np.inf  # never give a level to a box that does not look like it

    neg = -np.inf
    best = np.full((n, k), neg)
    back: Dict[Tuple[int, int], Tuple[int, int]] = {}
    dy = cy[None, :] - cy[:, None]  # dy[i, j]: how far j lies below i
    if counting:
        # Bodies are counted: a body found between two levels' boxes may not be passed over. Between i and j: a
        # confident candidate centred below i's box and above j's (a fragment of either box is centred inside it).
        y1, y2 = c.boxes[order, 1].astype(np.float64), c.boxes[order, 3].astype(np.float64)
        below = (cy[None, :] >= y2[:, None]).astype(np.int64) * confident[None, :]  # [i, k]: k centred below i's box
        above = (cy[:, None] <= y1[None, :]).astype(np.int64)  # [k, j]: k centred above j's box
        body_between = below @ above > 0  # [i, j]
        # Counting needs a start: C2, named by its class, or where no body is C2 the next level, C3, when
        # the candidate has less than a level step of image above it (the field of view ends over it, and
        # the fewest levels hidden there is one). With room above, bodies may have been missed in view.
        top = np.zeros(k) if view_top is None else np.asarray(view_top, np.float64)[order]
        cut_above = view_ends_over(y1, top, step or h)
    for lv in range(n):
        for j in range(k):
            if gain[lv, j] <= 0:
                continue
            opens = lv <= 1 or not (counting and cfg.count_from_c3 and cut_above[j])
            prev_val, prev = (0.0, None) if opens else (neg, None)
            for lp in range(lv):
                gap = lv - lp
                hi = cfg.max_step_ratio * h * gap + (cfg.c2_step_ratio - cfg.max_step_ratio) * h * (lp == 0)
                ok = (dy[:, j] >= cfg.min_step_ratio * h * gap) & (dy[:, j] <= hi)
                if counting:
                    ok &= ~body_between[:, j]
                if step is not None:  # bodies below C2 are evenly spaced, and C3 lies about a step below C2
                    first = cfg.c2_step_range if lp == 0 else cfg.step_range
                    lo = (first[0] + (gap - 1) * cfg.step_range[0]) * step
                    hi_step = (first[1] + (gap - 1) * cfg.step_range[1]) * step
                    ok &= (dy[:, j] >= lo) & (dy[:, j] <= hi_step)
                cand = np.where(ok, best[lp], neg)
                i = int(np.argmax(cand))
                if cand[i] > prev_val:
                    prev_val, prev = cand[i], (lp, i)
            if prev_val == neg:
                continue
            best[lv, j] = gain[lv, j] + prev_val
            if prev is not None:
                back[(lv, j)] = prev
    index = [-1] * n
    score = [0.0] * n
    if np.isfinite(best).any() and best.max() > 0:
        lv, j = np.unravel_index(int(np.argmax(best)), best.shape)
        state: Optional[Tuple[int, int]] = (int(lv), int(j))
        while state is not None:
            lv, j = state
            index[lv] = int(order[j])
            score[lv] = float(s[lv, j])
            state = back.get(state)
    return SliceAssignment(tuple(index), tuple(score))


def view_ends_over(y1, view_top, step: float):
    """Whether the field of view ends less than a level step above a box's top edge (y1): no whole body fits
    in view above it."""
    return (np.asarray(y1, np.float64) - np.asarray(view_top, np.float64)) < step


def body_spacing(cy: np.ndarray, height: float) -> Optional[float]:
    """The slice's body spacing: the median gap between consecutive candidate centres (sorted), after merging
    centres closer than half a box height (two boxes on one body). None with fewer than three bodies."""
    ys = np.sort(np.asarray(cy, float))
    kept = []
    for y in ys:
        if not kept or y - kept[-1] >= 0.5 * height:
            kept.append(y)
    if len(kept) < 3:
        return None
    return float(np.median(np.diff(kept)))


def median_step(cy: np.ndarray) -> Optional[float]:
    """Median distance between consecutive level centres, per level step, from the levels present."""
    idx = np.nonzero(np.isfinite(cy))[0]
    if len(idx) < 2:
        return None
    steps = np.diff(cy[idx]) / np.diff(idx)
    return float(np.median(steps))


def _as_box(xyxy: Sequence[float]) -> Box:
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return Box(x1, y1, max(x2, x1 + 1.0), max(y2, y1 + 1.0))


def fill_missing(found: Mapping[int, List[Optional[Tuple[np.ndarray, float]]]]
                 ) -> Tuple[Dict[int, Dict[str, LevelBox]], List[str]]:
    """Complete every slice to C2..C7. A missing level takes (1) the same level on the other slices,
    shifted by how the slices are offset on the levels both have, else (2) a linear inter/extrapolation
    of the levels the slice now has, else (3) the population layout, moved onto whatever the slice has.
    Filled boxes are flagged interpolated; the result is always in top-to-bottom order."""
    warnings: List[str] = []
    slices = list(found)
    out: Dict[int, Dict[str, LevelBox]] = {}
    centres = {s: np.array([[np.nan, np.nan] if f is None else [(f[0][0] + f[0][2]) / 2, (f[0][1] + f[0][3]) / 2]
                            for f in found[s]]) for s in slices}
    for s in slices:
        work: List[Optional[Tuple[np.ndarray, float]]] = [None if f is None else (np.asarray(f[0], float), float(f[1]))
                                                          for f in found[s]]
        how: Dict[str, List[str]] = {}
        for lv_i in range(N_VERT):
            if work[lv_i] is None:
                filled = _from_other_slices(found, centres, s, lv_i)
                if filled is not None:
                    work[lv_i] = (filled[0], filled[1])
                    how.setdefault(f"interpolated {filled[2]}", []).append(VERTEBRAE[lv_i])
        base = list(work)  # neighbours for step (2): detections and what the other slices gave
        for lv_i in range(N_VERT):
            if work[lv_i] is None:
                filled = _from_neighbours(base, lv_i)
                if filled is not None:
                    work[lv_i] = (filled[0], filled[1])
                    how.setdefault(f"interpolated {filled[2]}", []).append(VERTEBRAE[lv_i])
        if any(w is None for w in work):  # nothing at all on any slice
            for lv_i in range(N_VERT):
                work[lv_i] = (np.asarray(FALLBACK_LAYOUT[lv_i], float), 0.0)
            how["no vertebra found; placed at the population layout"] = list(VERTEBRAE)
        interpolated = [found[s][i] is None for i in range(N_VERT)]
        work, reordered = _in_order(work, interpolated)
        if reordered:
            how.setdefault("filled levels re-spaced to keep top-to-bottom order", []).extend(reordered)
        for reason, lvs in how.items():
            warnings.append(f"slice {s}: {', '.join(lvs)} not detected; {reason}" if "re-spaced" not in reason
                            else f"slice {s}: {', '.join(lvs)} {reason}")
        out[s] = {lv: LevelBox(_as_box(work[i][0]), float(work[i][1]), interpolated[i])
                  for i, lv in enumerate(VERTEBRAE)}
    return out, warnings


def _in_order(work: List[Tuple[np.ndarray, float]], interpolated: List[bool]
              ) -> Tuple[List[Tuple[np.ndarray, float]], List[str]]:
    """Filled boxes that break top-to-bottom order are re-placed between the detected ones; as a last resort
    the boxes are sorted (each level still gets exactly one box)."""
    cy = lambda w: (w[0][1] + w[0][3]) / 2  # noqa: E731
    if all(cy(work[i]) < cy(work[i + 1]) for i in range(N_VERT - 1)):
        return work, []
    anchors: List[Optional[Tuple[np.ndarray, float]]] = [None if interpolated[i] else work[i] for i in range(N_VERT)]
    fixed, moved = list(work), []
    if any(a is not None for a in anchors):
        for i in range(N_VERT):
            if interpolated[i]:
                f = _from_neighbours(anchors, i)
                if f is not None:
                    fixed[i] = (f[0], work[i][1])
                    moved.append(VERTEBRAE[i])
    if not all(cy(fixed[i]) < cy(fixed[i + 1]) for i in range(N_VERT - 1)):
        fixed = sorted(fixed, key=cy)
        moved = list(VERTEBRAE)
    return fixed, moved


def _from_other_slices(found, centres, s: int, lv_i: int):
    boxes, confs = [], []
    for o in found:
        f = found[o][lv_i]
        if o == s or f is None:
            continue
        both = np.isfinite(centres[s][:, 0]) & np.isfinite(centres[o][:, 0])
        shift = np.nanmedian(centres[s][both] - centres[o][both], 0) if both.any() else np.zeros(2)
        boxes.append(np.asarray(f[0], float) + np.array([shift[0], shift[1], shift[0], shift[1]]))
        confs.append(f[1])
    if not boxes:
        return None
    return np.mean(boxes, 0), 0.5 * float(min(confs)), "from the other slices"


def _from_neighbours(levels: List[Optional[Tuple[np.ndarray, float]]], lv_i: int):
    present = [i for i, f in enumerate(levels) if f is not None]
    if not present:
        return None
    above = [i for i in present if i < lv_i]
    below = [i for i in present if i > lv_i]
    box = lambda i: np.asarray(levels[i][0], float)  # noqa: E731
    ctr = lambda b: np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])  # noqa: E731
    if above and below:
        a, b = above[-1], below[0]
        t = (lv_i - a) / (b - a)
        c = (1 - t) * ctr(box(a)) + t * ctr(box(b))
        # C2's tall box must not set the size of C3, so the size comes from the nearer non-C2 neighbour.
        src = b if (a == 0 or t > 0.5) else a
        conf = min(levels[a][1], levels[b][1])
    else:
        near = above[-1] if above else below[0]
        pair = above[-2:] if above else below[:2]
        default = np.array([0.0, (box(near)[3] - box(near)[1]) * 0.8])
        step = (ctr(box(pair[1])) - ctr(box(pair[0]))) / (pair[1] - pair[0]) if len(pair) == 2 else default
        if step[1] < 0.5 * default[1]:  # two boxes nearly on top of each other give no usable direction
            step = default
        c = ctr(box(near)) + step * (lv_i - near)
        src = near if near != 0 or len(present) == 1 else pair[-1]
        conf = levels[near][1]
    w, h = box(src)[2] - box(src)[0], box(src)[3] - box(src)[1]
    if lv_i == 0 and src != 0:
        h *= 1.5  # C2 (with the dens) is taller than the bodies below it
    xyxy = np.array([c[0] - w / 2, c[1] - h / 2, c[0] + w / 2, c[1] + h / 2])
    return xyxy, 0.5 * float(conf), "from its neighbours on the slice"


def assign_discs(vert: Mapping[str, LevelBox], c: Candidates, cfg: DetectorConfig) -> Dict[str, LevelBox]:
    """Each disc: the best-scoring disc detection lying between its two vertebrae, else the documented
    rule box (detector.boxes.disc_box_between) flagged interpolated."""
    out: Dict[str, LevelBox] = {}
    used = set()
    for d_i, d in enumerate(DISCS):
        up, lo = vert[VERTEBRAE[d_i]], vert[VERTEBRAE[d_i + 1]]
        rule = disc_box_between(up.box, lo.box)
        chosen = None
        if cfg.disc_source == "detected" and len(c):
            col = d_i if c.scores.shape[1] == len(DISCS) else 0
            mid_x = (up.box.cx + lo.box.cx) / 2
            half_w = max(up.box.width, lo.box.width) / 2
            ok = (c.cy > up.box.cy) & (c.cy < lo.box.cy) & (np.abs(c.cx - mid_x) < half_w)
            sc = np.where(ok, c.scores[:, col], -1.0)
            for u in used:
                sc[u] = -1.0
            j = int(np.argmax(sc))
            if sc[j] > cfg.assign_min_score:
                chosen = j
        if chosen is not None:
            used.add(chosen)
            out[d] = LevelBox(_as_box(c.boxes[chosen]), float(c.scores[chosen, col]), False)
        else:
            conf = min(up.confidence, lo.confidence)
            out[d] = LevelBox(rule, conf if cfg.disc_source == "rule" else 0.5 * conf,
                              cfg.disc_source == "detected" or up.interpolated or lo.interpolated)
    return out


# refine({slice: (xyxy (N, 4), level indices (N,))}) -> {slice: refined xyxy}: every slice of a patient at once.
RefineFn = Callable[[Mapping[int, Tuple[np.ndarray, np.ndarray]]], Mapping[int, np.ndarray]]


def in_field_of_view(mask: np.ndarray, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """Whether each point (x, y in pixels) lies inside the image and on a True pixel of its field-of-view mask."""
    cx, cy = np.atleast_1d(np.asarray(cx, float)), np.atleast_1d(np.asarray(cy, float))
    h, w = mask.shape
    inside = np.isfinite(cx) & np.isfinite(cy) & (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
    out = np.zeros(len(cx), bool)
    ix, iy = np.floor(cx[inside]).astype(int), np.floor(cy[inside]).astype(int)
    out[inside] = mask[iy, ix]
    return out


def _on_acquired_data(c: Candidates, mask: Optional[np.ndarray]) -> Candidates:
    """The candidates whose centre lies in the field of view: a box centred on padding is no detection."""
    if mask is None or not len(c):
        return c
    keep = in_field_of_view(mask, c.cx, c.cy)
    return c if keep.all() else Candidates(c.boxes[keep], c.scores[keep])


def _first_row_in_view(mask: np.ndarray, cx) -> np.ndarray:
    """Per column x, the first row of the mask that holds image data (the mask's height where none does)."""
    col = np.clip(np.floor(np.asarray(cx, np.float64)).astype(int), 0, mask.shape[1] - 1)
    data = mask[:, col]
    return np.where(data.any(0), data.argmax(0), mask.shape[0]).astype(np.float64)


def _view_top(c: Candidates, mask: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """Per candidate, the first row of its centre column that holds image data (None without a mask)."""
    return None if mask is None or not len(c) else _first_row_in_view(mask, c.cx)


def outside_levels(vertebrae: Mapping[int, Mapping[str, LevelBox]], detected: Sequence[bool],
                   mask: np.ndarray) -> Tuple[str, ...]:
    """Levels not detected on the mid slice whose filled-in box centre there lies outside the image or its
    field of view (detected: per level, whether the mid slice detected it)."""
    mid = vertebrae[MID_SAGITTAL_SLICE]
    cx = np.array([mid[lv].box.cx for lv in VERTEBRAE])
    cy = np.array([mid[lv].box.cy for lv in VERTEBRAE])
    seen = in_field_of_view(mask, cx, cy)
    return tuple(lv for i, lv in enumerate(VERTEBRAE) if not detected[i] and not seen[i])


def assemble(patient_id: str, vert_cands: Mapping[int, Candidates], disc_cands: Mapping[int, Candidates],
             cfg: DetectorConfig, refine: Optional[RefineFn] = None,
             fov: Optional[Mapping[int, np.ndarray]] = None) -> LevelBoxes:
    """All slices of one patient: assign per slice, re-assign with the cross-slice consensus, fill gaps,
    refine the detected boxes (see RefineFn), derive discs, warn.

    fov (slice -> boolean mask of where the image holds acquired data, Study.field_of_view): candidates
    centred off it are dropped before the assignment, and a level left undetected on the mid slice whose
    filled-in box centre lies outside the image or the field of view is outside the field of view
    (LevelBoxes.outside_fov): its boxes stay the extrapolated ones, flagged interpolated with confidence 0,
    and the discs next to it get the rule box likewise. Without fov nothing is checked (as before).
    """
    fov = fov or {}
    vert_cands = {s: _on_acquired_data(c, fov.get(s)) for s, c in vert_cands.items()}
    disc_cands = {s: _on_acquired_data(c, fov.get(s)) for s, c in disc_cands.items()}
    slices = [s for s in SAGITTAL_SLICES if s in vert_cands]
    top = {s: _view_top(vert_cands[s], fov.get(s)) for s in slices}
    first = {s: assign_levels(vert_cands[s], cfg, view_top=top[s]) for s in slices}
    cy = np.array([[vert_cands[s].cy[i] if i >= 0 else np.nan for i in first[s].index] for s in slices])
    consensus = np.array([np.median(col[np.isfinite(col)]) if np.isfinite(col).any() else np.nan for col in cy.T])
    step = median_step(consensus)
    final = {s: assign_levels(vert_cands[s], cfg, consensus, step, top[s]) if step else first[s] for s in slices}

    found: Dict[int, List[Optional[Tuple[np.ndarray, float]]]] = {}
    for s in slices:
        a = final[s]
        found[s] = [None if i < 0 else (vert_cands[s].boxes[i], a.score[lv]) for lv, i in enumerate(a.index)]
    overruled = overrule_outliers(found, cfg)
    vertebrae, warnings = fill_missing(found)
    warnings = overruled + warnings
    outside: Tuple[str, ...] = ()
    if fov.get(MID_SAGITTAL_SLICE) is not None and MID_SAGITTAL_SLICE in vertebrae:
        outside = outside_levels(vertebrae, [f is not None for f in found[MID_SAGITTAL_SLICE]],
                                 fov[MID_SAGITTAL_SLICE])
        for s in slices:
            for lv in outside:
                vertebrae[s][lv] = LevelBox(vertebrae[s][lv].box, 0.0, True)
    if refine is not None:
        # Refine what was detected, and what the other slices supplied (that body is visible 3-4 mm away);
        # not levels guessed from neighbours, which may not be in view at all.
        refinable = {s: [lv for lv in range(N_VERT)
                         if (found[s][lv] is not None or any(found[o][lv] is not None for o in slices if o != s))
                         and VERTEBRAE[lv] not in outside]
                     for s in slices}
        vertebrae = _refined(vertebrae, refine, refinable)
        # A refiner fed a crop between two bodies can snap to the wrong one: check the slices agree again.
        warnings += _overrule_after_refining(vertebrae, refinable, cfg)
        for s in slices:  # refined edges must not undo the order the assignment guaranteed
            work = [(np.array(vertebrae[s][lv].box.as_tuple()), vertebrae[s][lv].confidence) for lv in VERTEBRAE]
            flags = [vertebrae[s][lv].interpolated for lv in VERTEBRAE]
            fixed, moved = _in_order(work, flags)
            if moved:
                vertebrae[s] = {lv: LevelBox(_as_box(fixed[i][0]), fixed[i][1], flags[i] or lv in moved)
                                for i, lv in enumerate(VERTEBRAE)}
                warnings.append(f"slice {s}: {', '.join(moved)} re-placed after refining to keep top-to-bottom order")
    for s in slices:  # a vertebra cut by the image edge is boxed where it is seen (fusion needs boxes in the image)
        if fov.get(s) is not None:
            vertebrae[s] = {lv: lb if lv in outside else _clipped(lb, fov[s].shape) for lv, lb in vertebrae[s].items()}
    discs = {s: assign_discs(vertebrae[s], disc_cands.get(s, Candidates.empty(len(DISCS))), cfg) for s in slices}
    if outside:
        for s in slices:
            for d in DISCS:
                up, lo = disc_neighbours(d)
                if up in outside or lo in outside:
                    discs[s][d] = LevelBox(disc_box_between(vertebrae[s][up].box, vertebrae[s][lo].box), 0.0, True)
    if MID_SAGITTAL_SLICE in found and found[MID_SAGITTAL_SLICE][0] is None:
        # Levels are counted down from C2 (its dens and tall body): without it the names are a guess.
        warnings.append(C2_NOT_FOUND)
        c3 = found[MID_SAGITTAL_SLICE][1]
        mask = fov.get(MID_SAGITTAL_SLICE)
        if cfg.assign_mode == "count" and cfg.count_from_c3 and c3 is not None and mask is not None:
            box = c3[0]
            top = _first_row_in_view(mask, [(box[0] + box[2]) / 2])[0]
            if bool(view_ends_over(box[1], top, step or (box[3] - box[1]))):
                warnings.append(C3_AT_THE_EDGE)
    warnings += check_anatomy(vertebrae, cfg)
    return LevelBoxes(patient_id, vertebrae, discs, tuple(warnings), outside)


def _clipped(lb: LevelBox, shape: Tuple[int, int]) -> LevelBox:
    """The box cut to the image (h, w), at least 2 px on each side; unchanged when it lies inside."""
    b = lb.box
    h, w = shape
    if b.x1 >= 0 and b.y1 >= 0 and b.x2 <= w and b.y2 <= h:
        return lb
    x1, y1 = min(max(b.x1, 0.0), w - 2.0), min(max(b.y1, 0.0), h - 2.0)
    x2, y2 = max(min(b.x2, float(w)), x1 + 2.0), max(min(b.y2, float(h)), y1 + 2.0)
    return LevelBox(Box(x1, y1, x2, y2), lb.confidence, lb.interpolated)


def overrule_outliers(found: Dict[int, List[Optional[Tuple[np.ndarray, float]]]], cfg: DetectorConfig) -> List[str]:
    """Drop (for filling from the other slices) a level that lies a level step away from where the two other
    slices, agreeing with each other, put it: one slice off by one is the commonest residual error."""
    slices = list(found)
    if len(slices) < 3:
        return []
    cy = np.array([[np.nan if f is None else (f[0][1] + f[0][3]) / 2 for f in found[s]] for s in slices])
    steps = [median_step(row) for row in cy]
    steps = [st for st in steps if st]
    if not steps:
        return []
    step = float(np.median(steps))
    out = []
    for lv in range(N_VERT):
        for si, s in enumerate(slices):
            others = [cy[oi, lv] for oi in range(len(slices)) if oi != si and np.isfinite(cy[oi, lv])]
            if not np.isfinite(cy[si, lv]) or len(others) < 2:
                continue
            agree = max(others) - min(others) <= 0.5 * cfg.disagree_steps * step
            if agree and abs(cy[si, lv] - float(np.mean(others))) > cfg.disagree_steps * step:
                found[s][lv] = None
                out.append(f"slice {s}: {VERTEBRAE[lv]} was a level step away from the other slices; "
                           "replaced from them")
    return out


def _overrule_after_refining(vertebrae: Dict[int, Dict[str, LevelBox]], refinable: Mapping[int, Sequence[int]],
                             cfg: DetectorConfig) -> List[str]:
    slices = list(vertebrae)
    found = {s: [(np.array(vertebrae[s][lv].box.as_tuple()), vertebrae[s][lv].confidence)
                 if i in refinable[s] else None for i, lv in enumerate(VERTEBRAE)] for s in slices}
    before = {(s, i) for s in slices for i in range(N_VERT) if found[s][i] is not None}
    warnings = overrule_outliers(found, cfg)
    centres = {s: np.array([[np.nan, np.nan] if f is None else [(f[0][0] + f[0][2]) / 2, (f[0][1] + f[0][3]) / 2]
                            for f in found[s]]) for s in slices}
    for s, i in sorted(before):
        if found[s][i] is None:
            filled = _from_other_slices(found, centres, s, i)
            if filled is not None:
                vertebrae[s][VERTEBRAE[i]] = LevelBox(_as_box(filled[0]), filled[1], True)
    return warnings


def _refined(vertebrae: Mapping[int, Mapping[str, LevelBox]], refine: RefineFn,
             todo: Mapping[int, Sequence[int]]) -> Dict[int, Dict[str, LevelBox]]:
    out = {s: dict(levels) for s, levels in vertebrae.items()}
    requests = {s: (np.array([vertebrae[s][VERTEBRAE[i]].box.as_tuple() for i in todo[s]], float),
                    np.array(todo[s], int)) for s in vertebrae if todo.get(s)}
    if not requests:
        return out
    refined = refine(requests)
    for s, (_, levels) in requests.items():
        for k, i in enumerate(levels):
            lb = vertebrae[s][VERTEBRAE[i]]
            out[s][VERTEBRAE[i]] = LevelBox(_as_box(refined[s][k]), lb.confidence, lb.interpolated)
    return out


def check_anatomy(vertebrae: Mapping[int, Mapping[str, LevelBox]], cfg: DetectorConfig) -> List[str]:
    """Warnings a reader should see: low confidence, out-of-order or implausibly spaced levels, slices that disagree."""
    out: List[str] = []
    slices = list(vertebrae)
    cys = np.array([[vertebrae[s][lv].box.cy for lv in VERTEBRAE] for s in slices])
    for si, s in enumerate(slices):
        low = [lv for lv in VERTEBRAE
               if not vertebrae[s][lv].interpolated and vertebrae[s][lv].confidence < cfg.warn_confidence]
        if low:
            out.append(f"slice {s}: low confidence at {', '.join(low)}")
        steps = np.diff(cys[si])
        if (steps <= 0).any():
            out.append(f"slice {s}: levels out of top-to-bottom order")
            continue
        med = float(np.median(steps[1:])) if len(steps) > 1 else float(steps[0])  # C2->C3 is longer by nature
        lo, hi = cfg.warn_step_range
        odd = [f"{VERTEBRAE[i]}-{VERTEBRAE[i + 1]}" for i in range(1, len(steps)) if not lo <= steps[i] / med <= hi]
        if odd:
            out.append(f"slice {s}: implausible spacing between {', '.join(odd)}")
    if len(slices) > 1:
        step = float(np.median(np.diff(cys, axis=1)[:, 1:]))
        spread = np.abs(cys - np.median(cys, 0))
        for lv_i, lv in enumerate(VERTEBRAE):
            bad = [slices[i] for i in range(len(slices)) if spread[i, lv_i] > cfg.disagree_steps * step]
            if bad:
                out.append(f"{lv}: slice(s) {', '.join(map(str, bad))} disagree with the others by more than "
                           f"{cfg.disagree_steps:g} level steps")
    return out
