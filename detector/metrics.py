"""Detector metrics: per-level IoU, centre error (px, mm), all-six-levels-correct share, 6 mm hit rate."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from study.challenge import PatientBoxes, folder_files, read_box_file
from study.levels import DISCS, SAGITTAL_SLICES, VERTEBRAE
from study.study import sagittal_views_of

from .boxes import LevelBoxes, disc_boxes

PathLike = Union[str, Path]
Spacing = Union[float, Tuple[float, float]]
# A level counts as correctly identified when its box overlaps the true box of that level this much.
IOU_CORRECT = 0.5
# Spinal Disease 2020 scores a localisation as a hit when the centre is within 6 mm of the truth.
HIT_RADIUS_MM = 6.0


@dataclass(frozen=True)
class LevelStats:
    level: str
    iou_mean: float
    identified: float              # share of (patient, slice) with IoU >= IOU_CORRECT
    centre_px_median: float
    centre_px_mean: float
    centre_mm_median: Optional[float]
    hit_rate_6mm: Optional[float]
    interpolated: float            # share of (patient, slice) where the box was filled in


@dataclass(frozen=True)
class DetectorMetrics:
    """Scores over a set of patients; vertebra summaries cover C2..C7 on all three slices."""

    n_patients: int
    per_level: Tuple[LevelStats, ...]
    mean_iou: float                       # C2..C7
    median_centre_px: float               # C2..C7
    median_centre_mm: Optional[float]     # C2..C7, when spacing is known
    all_levels_correct: float             # patients whose six levels are right on all three slices
    all_levels_correct_mid: float         # ... on the mid-sagittal slice
    hit_rate_6mm: Optional[float]         # C2..C7 centres within 6 mm
    hit_rate_6mm_discs: Optional[float]
    disc_mean_iou: float
    patients_failed: Tuple[str, ...]      # not all six right on all slices

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        """Plain-text table, one row per level then the summary lines."""
        def f(v, spec=".3f"):
            return "-" if v is None else format(v, spec)
        lines = [f"{'level':<6} {'IoU':>6} {'ident':>6} {'ctr px med':>10} {'ctr px mean':>11} "
                 f"{'ctr mm med':>10} {'hit 6mm':>7} {'interp':>6}"]
        for s in self.per_level:
            lines.append(f"{s.level:<6} {f(s.iou_mean):>6} {f(s.identified):>6} {f(s.centre_px_median, '.2f'):>10} "
                         f"{f(s.centre_px_mean, '.2f'):>11} {f(s.centre_mm_median, '.2f'):>10} "
                         f"{f(s.hit_rate_6mm):>7} {f(s.interpolated):>6}")
        lines.append(f"patients: {self.n_patients}  C2-C7 mean IoU {self.mean_iou:.3f}  median centre error "
                     f"{self.median_centre_px:.2f} px" + (f" / {self.median_centre_mm:.2f} mm"
                                                          if self.median_centre_mm is not None else ""))
        lines.append(f"all six levels correct (IoU>={IOU_CORRECT}): {self.all_levels_correct:.3f} of patients "
                     f"(all 3 slices), {self.all_levels_correct_mid:.3f} (mid slice)")
        if self.hit_rate_6mm is not None:
            lines.append(f"hit rate (centre within {HIT_RADIUS_MM:g} mm): vertebrae {self.hit_rate_6mm:.3f}, "
                         f"discs {self.hit_rate_6mm_discs:.3f}")
        lines.append(f"disc mean IoU {self.disc_mean_iou:.3f}")
        return "\n".join(lines)


def _spacing_rc(sp: Optional[Spacing]) -> Optional[Tuple[float, float]]:
    if sp is None:
        return None
    if isinstance(sp, (int, float)):
        return float(sp), float(sp)
    return float(sp[0]), float(sp[1])


def evaluate(pred: Mapping[str, LevelBoxes], truth: Mapping[str, PatientBoxes],
             spacing_mm: Optional[Mapping[str, Spacing]] = None,
             slices: Optional[Mapping[str, Sequence[int]]] = None) -> DetectorMetrics:
    """Score predictions against true vertebra boxes (true discs by the same disc_box_between rule).

    Only patients present in both are scored; spacing_mm maps patient id to mm per pixel (one number,
    or (row, column)) and enables the mm columns for the patients that have it. slices: per patient the
    sagittal slices it has images of (Study.real_sagittal; default all three): a stand-in is not scored.
    """
    ids = sorted(set(pred) & set(truth))
    if not ids:
        raise ValueError("no patient appears in both the predictions and the truth")
    rows: Dict[str, Dict[str, list]] = {lv: {"iou": [], "px": [], "mm": [], "interp": []}
                                         for lv in VERTEBRAE + DISCS}
    all_ok, mid_ok, failed = [], [], []
    for pid in ids:
        p, t = pred[pid], truth[pid]
        sp = _spacing_rc((spacing_mm or {}).get(pid))
        ok_slices = []
        scored = tuple((slices or {}).get(pid, SAGITTAL_SLICES))
        for s in scored:
            t_vert = t.boxes[s]
            t_disc = disc_boxes(t_vert)
            ok = True
            for lv in VERTEBRAE + DISCS:
                tb = t_disc[lv] if lv in DISCS else t_vert[lv]
                lb = p.discs[s][lv] if lv in DISCS else p.vertebrae[s][lv]
                iou = lb.box.iou(tb)
                dx, dy = lb.box.cx - tb.cx, lb.box.cy - tb.cy
                r = rows[lv]
                r["iou"].append(iou)
                r["px"].append(math.hypot(dx, dy))
                r["mm"].append(math.hypot(dx * sp[1], dy * sp[0]) if sp else np.nan)
                r["interp"].append(float(lb.interpolated))
                if lv in VERTEBRAE and iou < IOU_CORRECT:
                    ok = False
            ok_slices.append(ok)
        all_ok.append(all(ok_slices))
        # The mid slice, or the slice read as the mid slice when 6 is missing (Study.sagittal_views).
        mid = 6 if 6 in scored else sagittal_views_of(scored)[6]
        mid_ok.append(ok_slices[scored.index(mid)])
        if not all(ok_slices):
            failed.append(pid)

    stats = []
    for lv in VERTEBRAE + DISCS:
        r = {k: np.asarray(v, float) for k, v in rows[lv].items()}
        mm = r["mm"][np.isfinite(r["mm"])]
        stats.append(LevelStats(lv, float(r["iou"].mean()), float((r["iou"] >= IOU_CORRECT).mean()),
                                float(np.median(r["px"])), float(r["px"].mean()),
                                float(np.median(mm)) if len(mm) else None,
                                float((mm <= HIT_RADIUS_MM).mean()) if len(mm) else None,
                                float(r["interp"].mean())))

    def pooled(levels, key):
        return np.concatenate([np.asarray(rows[lv][key], float) for lv in levels])
    v_mm = pooled(VERTEBRAE, "mm")
    v_mm = v_mm[np.isfinite(v_mm)]
    d_mm = pooled(DISCS, "mm")
    d_mm = d_mm[np.isfinite(d_mm)]
    return DetectorMetrics(
        n_patients=len(ids), per_level=tuple(stats),
        mean_iou=float(pooled(VERTEBRAE, "iou").mean()),
        median_centre_px=float(np.median(pooled(VERTEBRAE, "px"))),
        median_centre_mm=float(np.median(v_mm)) if len(v_mm) else None,
        all_levels_correct=float(np.mean(all_ok)), all_levels_correct_mid=float(np.mean(mid_ok)),
        hit_rate_6mm=float((v_mm <= HIT_RADIUS_MM).mean()) if len(v_mm) else None,
        hit_rate_6mm_discs=float((d_mm <= HIT_RADIUS_MM).mean()) if len(d_mm) else None,
        disc_mean_iou=float(pooled(DISCS, "iou").mean()),
        patients_failed=tuple(failed))


def phantom_spacing(layout_dir: PathLike) -> Dict[str, float]:
    """Per-patient sagittal mm/px from a phantom folder's phantom.json; {} for real challenge folders."""
    meta = Path(layout_dir) / "phantom.json"
    if not meta.is_file():
        return {}
    data = json.loads(meta.read_text())
    return {p["id"]: float(p["sagittal_spacing_mm"]) for p in data.get("patients", [])
            if "sagittal_spacing_mm" in p}


def evaluate_folder(detector, layout_dir: PathLike, boxes_file: Optional[PathLike] = None,
                    ids: Optional[Sequence[str]] = None, batch_patients: int = 16
                    ) -> Tuple[DetectorMetrics, Dict[str, LevelBoxes]]:
    """Run a Detector over a challenge-layout folder and score it against its box file.

    boxes_file defaults to layout_dir/boxes.json; spacing comes from phantom.json when present.
    """
    from study.loader import load_study

    layout_dir = Path(layout_dir)
    truth = read_box_file(boxes_file or folder_files(layout_dir)[1] or layout_dir / "boxes.json").by_id()
    wanted: List[str] = sorted(ids) if ids is not None else sorted(truth)
    spacing = phantom_spacing(layout_dir)
    preds: Dict[str, LevelBoxes] = {}
    real: Dict[str, Tuple[int, ...]] = {}
    for start in range(0, len(wanted), batch_patients):
        studies = [load_study(layout_dir / pid, require_all_axial=False) for pid in wanted[start:start + batch_patients]]
        for st, lb in zip(studies, detector.predict_batch(studies)):
            preds[lb.patient_id] = lb
            real[lb.patient_id] = st.real_sagittal
    return evaluate(preds, truth, spacing, real), preds


@dataclass(frozen=True)
class FramedMetrics:
    """Level identification on renders that may not show every level (realistic phantoms, visible_boxes.json),
    on the mid slice: a visible level is right when the predicted centre lies within half a level step of the
    true centre (along the image rows) and it is not called outside the field of view; a level the render does
    not show at all should be called outside."""

    n_renders: int
    n_levels: int
    right: float                      # share of visible levels right
    all_right: float                  # share of renders with every visible level right
    median_error_mm: float            # |predicted - true| centre row, mm
    unseen: int                       # levels with no pixel in the field of view
    unseen_called_outside: float      # share of those reported outside the field of view
    failed: Tuple[str, ...]

    def table(self) -> str:
        return (f"renders: {self.n_renders}, visible levels (mid slice): {self.n_levels}; right (centre within half "
                f"a level step): {self.right:.3f}; renders with every visible level right: {self.all_right:.3f}; "
                f"median centre error {self.median_error_mm:.2f} mm; levels not in view: {self.unseen}, called "
                f"outside the field of view: {self.unseen_called_outside:.3f}")

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_framed_folder(detector, folder: PathLike, ids: Optional[Sequence[str]] = None,
                           batch_patients: int = 16) -> FramedMetrics:
    """Score a detector on a folder of realistic renders (`pipeline.py synth --realistic K`)."""
    from study.challenge import VISIBLE_BOXES_FILE, read_visible_boxes
    from study.loader import load_study

    folder = Path(folder)
    truth = {v.patient_id: v for v in read_visible_boxes(folder / VISIBLE_BOXES_FILE)}
    meta = json.loads((folder / "phantom.json").read_text())
    framing = {p["id"]: p["framing"] for p in meta["patients"]}
    wanted = sorted(ids) if ids is not None else sorted(truth)
    errors, right, all_right, failed = [], [], [], []
    unseen, unseen_out = 0, 0
    for start in range(0, len(wanted), batch_patients):
        chunk = wanted[start:start + batch_patients]
        studies = [load_study(folder / pid, require_all_axial=False) for pid in chunk]
        for lb in detector.predict_batch(studies):
            pid = lb.patient_id
            t = truth[pid].boxes[6]
            mm_per_px = 1.0 / float(framing[pid]["px_per_mm"])
            shown = [lv for lv in VERTEBRAE if lv in t]
            cy = np.array([t[lv].cy for lv in shown])
            default_step = 17.0 / mm_per_px
            ok_all = True
            for k, lv in enumerate(shown):
                near = np.abs(np.diff(cy)) if len(cy) > 1 else np.array([default_step])
                step = float(near[min(k, len(near) - 1)]) if len(cy) > 1 else default_step
                err = abs(lb.vertebrae[6][lv].box.cy - t[lv].cy)
                ok = err <= 0.5 * step and lv not in lb.outside_fov
                errors.append(err * mm_per_px)
                right.append(ok)
                ok_all &= ok
            x1, y1, x2, y2 = framing[pid]["fov"]
            for lv in VERTEBRAE:
                if lv in t:
                    continue
                # Not labelled: either mostly outside the view (then it should be called outside) or cut.
                if lv in _unseen_levels(shown):
                    unseen += 1
                    unseen_out += lv in lb.outside_fov
            all_right.append(ok_all)
            if not ok_all:
                failed.append(pid)
    return FramedMetrics(len(wanted), len(right), float(np.mean(right)) if right else float("nan"),
                         float(np.mean(all_right)) if all_right else float("nan"),
                         float(np.median(errors)) if errors else float("nan"), unseen,
                         float(unseen_out / unseen) if unseen else float("nan"), tuple(failed))


def _unseen_levels(shown: Sequence[str]) -> List[str]:
    """Levels at least two steps beyond the first or last visible one: surely not in view at all."""
    if not shown:
        return []
    lo, hi = VERTEBRAE.index(shown[0]), VERTEBRAE.index(shown[-1])
    return [lv for i, lv in enumerate(VERTEBRAE) if i <= lo - 2 or i >= hi + 2]
