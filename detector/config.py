"""The detector's one typed configuration: network, class design, training and assignment thresholds."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from common.config import build_config
from study.levels import DISCS, IMAGE_SIZE, VERTEBRAE

# Class designs the dataset export and the assignment understand. "levels": one class per vertebra
# and per disc, so the network itself names the level; "generic": one vertebra class and one disc
# class, levels then come from anatomical order alone (the topmost vertebra is C2).
CLASS_DESIGNS: Dict[str, Tuple[str, ...]] = {
    "levels": VERTEBRAE + DISCS,
    "generic": ("vertebra", "disc"),
}


def class_names(design: str) -> Tuple[str, ...]:
    if design not in CLASS_DESIGNS:
        raise ValueError(f"unknown class design {design!r}; expected one of {sorted(CLASS_DESIGNS)}")
    return CLASS_DESIGNS[design]


@dataclass(frozen=True)
class AppearanceConfig:
    """Training-time appearance randomisation (sim-to-real); each step fires with its probability."""

    p_gamma: float = 0.8
    gamma_range: Tuple[float, float] = (0.6, 1.7)
    p_bias: float = 0.7
    bias_strength: float = 0.45       # sd of the log-field polynomial coefficients
    p_contrast: float = 0.8
    contrast_range: Tuple[float, float] = (0.55, 1.4)
    brightness_range: Tuple[float, float] = (-0.12, 0.12)
    p_blur: float = 0.4
    blur_sigma_range: Tuple[float, float] = (0.3, 1.3)
    p_resample: float = 0.3           # down- then up-sample: coarser acquisitions than the phantom's
    resample_range: Tuple[float, float] = (1.2, 2.2)
    p_noise: float = 0.6
    noise_range: Tuple[float, float] = (0.0, 0.08)  # Rician noise sd, fraction of full scale
    p_fov_crop: float = 0.3           # black out everything outside a random window (cropped FOV)
    # A small window on part of the spine (like the real C2-C5 crop); levels mostly outside it lose their label.
    p_partial_fov: float = 0.0       # measured at 0.15: worse on phantoms, no help on the real scan (card)
    partial_fov_height: Tuple[float, float] = (35.0, 120.0)
    partial_fov_width: Tuple[float, float] = (40.0, 110.0)
    partial_fov_min_visible: float = 0.6
    p_equalize: float = 0.1


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; augmentation defaults suit sagittal MRI (no flips: left-right swaps front and back)."""

    epochs: int = 35
    batch: int = 16                   # 16 beat 32 per epoch of CPU time (more updates; see the model card)
    seed: int = 0
    val_fraction: float = 0.1
    # Compute threads + loader workers = cores: on the shared 2-core CPU, 2 threads + 2 workers ran 16 s per
    # batch of 32 against 2.8 s for 1 + 1 (oversubscription); None -> cores - 1 (at least 1).
    # None -> 1 on the CPU (see above); on a GPU the loader is the bottleneck: cores - 1, at most 8.
    workers: Optional[int] = None
    threads: Optional[int] = None
    device: Optional[str] = None      # None -> CUDA when present, else CPU
    # A wall-time budget for the YOLO part, in minutes: after the first epoch ultralytics fits the epoch
    # count (and the learning-rate schedule) to it, and `epochs` is ignored. The refiner and scoring come on top.
    minutes: Optional[float] = None
    cache: str = "ram"
    optimizer: str = "AdamW"
    lr0: float = 0.003
    cos_lr: bool = True
    warmup_epochs: float = 1.0
    mosaic: float = 0.0               # mosaic tiles break the vertebra count the level classes rely on
    degrees: float = 8.0
    translate: float = 0.12
    scale: float = 0.25
    shear: float = 2.0
    hsv_v: float = 0.3
    fliplr: float = 0.0
    flipud: float = 0.0
    patience: int = 100
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)
    # Box refiner (detector/refine.py), trained after YOLO on jittered crops of the same training patients.
    refine_epochs: int = 15
    refine_batch: int = 128
    refine_lr: float = 3e-3
    refine_jitter_px: float = 2.0


@dataclass(frozen=True)
class DetectorConfig:
    """Network input and the thresholds of the anatomical assignment; shipped as weights/detector/config.json."""

    imgsz: int = IMAGE_SIZE
    class_design: str = "levels"
    model_yaml: str = "yolov8p.yaml"  # detector/models/: yolov8 graph at half n's width (see the model card)
    # Raw candidates: class-agnostic NMS over boxes whose best score in the pool beats candidate_conf.
    candidate_conf: float = 0.02
    nms_iou: float = 0.45
    max_candidates: int = 40
    # A level takes a candidate only when its class score beats assign_min_score; else it is filled in.
    assign_min_score: float = 0.1
    # Consecutive vertebra centres must be this many median box heights apart (per skipped level too); C2's
    # tall box puts C3 further below it. In the 320 real geometries (x 3 slices) step/height is 0.59-1.0 for
    # C3..C7 (0.5-99.5 %) and 0.78-1.38 for C2-C3 (1-99 %); the bounds leave room and still refuse a skipped level.
    min_step_ratio: float = 0.45
    max_step_ratio: float = 1.3
    c2_step_ratio: float = 1.75
    # How C3..C7 are named. "levels": by the network's level classes (each level needs a candidate scoring for
    # it). "count": by counting vertebral bodies down from C2 (only C2 is named by its class); a body's gain is
    # count_generic_weight x its best score over all levels + the rest x its score for the level, and
    # consecutive levels must lie step_range x the slice's body spacing apart (the median gap between its
    # candidates). On real scans the network's level classes slip by one where bodies are faint, while the
    # bodies themselves are still found; counting is how a reader names them.
    assign_mode: str = "count"
    count_generic_weight: float = 0.9
    # In count mode, a body with less than a level step of image above it (the field of view ends over it)
    # starts the count as C2 (by its class) or C3, never lower: the fewest levels hidden above the edge.
    count_from_c3: bool = True
    # Consecutive C3..C7 centres lie 0.82-1.21 median steps apart in the 320 real geometries (x 3 slices,
    # 0.5-99.5 %); the bounds leave room for the step's estimate.
    step_range: Tuple[float, float] = (0.65, 1.35)
    # From C2's box centre (above its body: the box holds the dens) to C3's centre: 1.0-1.82 median steps in the
    # real geometries (0.5-99.5 %).
    c2_step_range: Tuple[float, float] = (0.85, 2.0)
    # Second pass: bonus for agreeing with the other two slices (weight, and width in level steps).
    consensus_weight: float = 0.5
    consensus_sigma_steps: float = 0.35
    # A slice whose level centre is further than this (in level steps) from the other slices' warns.
    disagree_steps: float = 0.5
    # Disc boxes: "detected" keeps a detected disc lying between its vertebrae, else the rule box.
    # ("rule" measured better: disc IoU 0.84 vs 0.61 for the detected disc boxes, held-out split, see card).
    disc_source: str = "rule"
    # Box refiner: crops of refine_context x the box side (clipped to [min, max] px) resampled to refine_size;
    # a refined edge may move at most refine_max_shift box heights, else the detection stands.
    refine: bool = True
    refine_size: int = 48
    refine_context: float = 2.2
    refine_min_side: float = 32.0
    refine_max_side: float = 96.0
    refine_passes: int = 2
    refine_max_shift: float = 0.5
    # Warnings. A detected vertebra scoring below warn_confidence is named in the warnings (and sends the
    # patient to review). Measured with the shipped detector on 80 built-in phantoms (seed 31, a tuning set,
    # never the hold-out): 0.6 % of correct detections score below 0.2 and 3 % below 0.3 (0.3 flagged 24 of
    # 80 clean patients); the 3 wrong boxes scored 0.44-0.50, so a low score marks what the detector barely
    # saw, not a mislabelled level (the spacing and cross-slice checks catch those).
    warn_confidence: float = 0.2
    warn_step_range: Tuple[float, float] = (0.55, 1.7)   # step / median step on the slice
    # Inference-time intensity normalisation: this percentile of the slice maps to norm_target.
    norm_percentile: float = 99.5
    norm_target: float = 0.95

    def __post_init__(self):
        class_names(self.class_design)
        if self.assign_mode not in ("levels", "count"):
            raise ValueError(f"assign_mode must be 'levels' or 'count', got {self.assign_mode!r}")
        if self.disc_source not in ("detected", "rule"):
            raise ValueError(f"disc_source must be 'detected' or 'rule', got {self.disc_source!r}")
        if self.imgsz % 32:
            raise ValueError(f"imgsz must be a multiple of 32 (YOLO stride), got {self.imgsz}")

    @property
    def names(self) -> Tuple[str, ...]:
        return class_names(self.class_design)


def to_dict(cfg: Any) -> Dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: Mapping[str, Any]):
    """Build a config dataclass, rejecting unknown keys and wrong types (a typo must not silently fall back to a
    default): common.config.build_config, nested configs included."""
    return build_config(cls, data)
