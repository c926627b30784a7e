"""The Study hand-off: one patient's images, where each came from, and what was odd about them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, Mapping, Optional, Tuple, TypeVar

import numpy as np

from .levels import CANAL_POSITIONS, MID_SAGITTAL_SLICE, SAGITTAL_SLICES

T = TypeVar("T")

if TYPE_CHECKING:  # only for annotations: geometry must not be imported by every Study user
    from .geometry import AxialSlice, ImagePlane


@dataclass(frozen=True)
class DicomInstance:
    """The stored DICOM object an image of the Study was read from, for results that point back at it (the
    DICOM SR of reader.sr). UIDs link to the patient's study, so they stay here and never reach the
    de-identified outputs (reports, HTML, predictions)."""

    path: str                     # the file, absolute
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    frame: Optional[int] = None   # 1-based frame number in a multi-frame object, None for a single-frame one


@dataclass(frozen=True)
class Study:
    """One patient, every image as a 2-D float32 array in [0, 1] on the model's 224x224 grid.

    sagittal maps slice number (5, 6, 7) to its image; axial maps canal position ("C2", "C2-3", ...)
    to the axial image through it. A position with no usable axial image is absent from `axial`
    (and explained in `warnings`); later stages then grade it from the sagittal view alone.
    """

    patient_id: str
    sagittal: Mapping[int, np.ndarray]
    axial: Mapping[str, np.ndarray]
    # (row, column) pixel spacing of the sagittal images in mm on the model grid; None when unknown,
    # as for challenge PNGs, which carry no spacing.
    sagittal_spacing_mm: Optional[Tuple[float, float]] = None
    # Where each image came from: "sag/5", "tra/C2-3", ... -> path (or series description).
    sources: Mapping[str, str] = field(default_factory=dict)
    warnings: Tuple[str, ...] = ()
    # Images read whose pixels all have one value (all black, say), keyed as in `sources`: they carry no
    # information, so the patient is read but flagged for human review (a warning alone is easy to miss).
    blank_images: Tuple[str, ...] = ()
    # Filled by the DICOM and NIfTI loaders (study.inputs); empty for challenge PNGs.
    # Which series or volumes were used and why (never identifying tag values).
    provenance: Tuple[str, ...] = ()
    # Where the mid-sagittal image (slice 6) lies in patient space (DICOM LPS, mm).
    sagittal_geometry: Optional["ImagePlane"] = None
    # Where each axial image lies in patient space, per canal position.
    axial_geometry: Mapping[str, "ImagePlane"] = field(default_factory=dict)
    # Axial slices not yet matched to levels: study.axial_match.attach_axials fills `axial` from them
    # once the detector has placed the levels.
    pending_axial: Tuple["AxialSlice", ...] = field(default=(), repr=False, compare=False)
    # Where each sagittal image holds acquired data, per slice number: a boolean mask on the image's grid,
    # True inside the field of view. DICOM/NIfTI: the part of the model grid the resampled slice covers;
    # challenge PNGs: everything but the exactly-0 bands along the borders (study.fov.padding_mask). None
    # (or a missing slice) means the whole image.
    sagittal_fov: Optional[Mapping[int, np.ndarray]] = field(default=None, repr=False, compare=False)
    # DICOM only: the stored object each image was read from, keyed as in `sources` ("sag/5", "tra/C2-3"; the
    # axials once attach_axials has matched them). Never written to a de-identified output.
    dicom_instances: Mapping[str, DicomInstance] = field(default_factory=dict, repr=False, compare=False)
    # Sagittal slices the input lacked, each standing in as the nearest slice present: missing slice -> the slice
    # whose image (and field of view) it carries. Empty for a complete patient. Built once, by the loaders'
    # complete_sagittal; every later stage sees three slices, and those that must not count one image twice
    # (the detector's cross-slice consensus, the fusion's per-slice spread) read `real_sagittal`.
    sagittal_standins: Mapping[int, int] = field(default_factory=dict)

    def __post_init__(self):
        missing = [s for s in SAGITTAL_SLICES if s not in self.sagittal]
        if missing:
            raise ValueError(f"Study {self.patient_id}: sagittal slice(s) {missing} missing")
        for s, source in self.sagittal_standins.items():
            if s not in SAGITTAL_SLICES or source not in SAGITTAL_SLICES or source in self.sagittal_standins or \
                    not (self.sagittal[s] is self.sagittal[source] or
                         np.array_equal(self.sagittal[s], self.sagittal[source])):
                raise ValueError(f"Study {self.patient_id}: sagittal slice {s} must stand in as slice {source}, "
                                 "a slice present, with its image")
        unknown = [p for p in self.axial if p not in CANAL_POSITIONS]
        if unknown:
            raise ValueError(f"Study {self.patient_id}: unknown axial position(s) {unknown}")
        for s, mask in (self.sagittal_fov or {}).items():
            if s not in self.sagittal or np.shape(mask) != np.shape(self.sagittal[s]):
                raise ValueError(f"Study {self.patient_id}: field-of-view mask of slice {s} does not match "
                                 "its image")

    @property
    def real_sagittal(self) -> Tuple[int, ...]:
        """The sagittal slices the input held (SAGITTAL_SLICES order): at least one."""
        return tuple(s for s in SAGITTAL_SLICES if s not in self.sagittal_standins)

    @property
    def sagittal_views(self) -> Dict[int, int]:
        """One entry per distinct sagittal image: the slice number it is read as -> the slice present. A slice
        standing in as the mid slice is read as 6, every other as itself ({5: 5, 6: 6, 7: 7} when complete;
        {6: 5, 7: 7} when slice 5 stands in for a missing 6). What must not count an image twice uses these."""
        return sagittal_views_of(self.real_sagittal)

    def by_view(self, per_slice: Mapping[int, T]) -> Dict[int, T]:
        """Something given per slice present (boxes of a box file, images) re-keyed as sagittal_views reads it."""
        return {key: per_slice[source] for key, source in self.sagittal_views.items()}

    def to_all_slices(self, per_view: Mapping[int, T]) -> Dict[int, T]:
        """Something found per view (sagittal_views' keys) spread to slices 5, 6, 7: a stand-in slice gets its
        source's."""
        key_of = {source: key for key, source in self.sagittal_views.items()}
        return {s: per_view[key_of[self.sagittal_standins.get(s, s)]] for s in SAGITTAL_SLICES}

    @property
    def mid_sagittal(self) -> np.ndarray:
        return self.sagittal[MID_SAGITTAL_SLICE]

    def sagittal_stack(self) -> np.ndarray:
        """Slices 5, 6, 7 stacked as (3, H, W)."""
        return np.stack([self.sagittal[s] for s in SAGITTAL_SLICES])

    def field_of_view(self, slice_number: int = MID_SAGITTAL_SLICE) -> np.ndarray:
        """Boolean mask of where the sagittal slice holds acquired data (all True when unknown)."""
        mask = (self.sagittal_fov or {}).get(slice_number)
        return np.ones(np.shape(self.sagittal[slice_number]), bool) if mask is None else np.asarray(mask, bool)

    @staticmethod
    def is_blank(image: np.ndarray) -> bool:
        """True when every pixel has the same value: the image shows nothing."""
        return image.size == 0 or float(np.min(image)) == float(np.max(image))

    @property
    def missing_axial(self) -> Tuple[str, ...]:
        return tuple(p for p in CANAL_POSITIONS if p not in self.axial)


def nearest_present(missing: int, present) -> int:
    """The slice present nearest to a missing one; between two as near, the lower number (5 before 7)."""
    return min(sorted(present), key=lambda s: abs(s - missing))


def sagittal_views_of(present) -> Dict[int, int]:
    """Study.sagittal_views for a patient whose sagittal slices `present` were read (training reads the images
    of a folder without building a Study): slice number read as -> slice present, each present slice once."""
    present = [s for s in SAGITTAL_SLICES if s in present]
    if not present:
        raise ValueError("no sagittal slice")
    mid = MID_SAGITTAL_SLICE if MID_SAGITTAL_SLICE in present else nearest_present(MID_SAGITTAL_SLICE, present)
    views = {MID_SAGITTAL_SLICE if s == mid else s: s for s in present}
    return {k: views[k] for k in SAGITTAL_SLICES if k in views}


def complete_sagittal(sagittal: Mapping[int, np.ndarray], fov: Optional[Mapping[int, np.ndarray]] = None,
                      what: str = "sag/") -> Tuple[Dict[int, np.ndarray], Optional[Dict[int, np.ndarray]],
                                                   Dict[int, int], Tuple[str, ...]]:
    """The one place a missing sagittal slice is replaced: (slices 5/6/7, their fields of view, stand-ins,
    warnings). A missing slice 5 or 7 takes the image of the nearest slice present (the 2.5D input then holds
    it twice); a missing slice 6 takes the nearest present as the mid slice. `sagittal` must hold at least one
    of the slices (the loaders fail a patient with none). Complete input comes back unchanged, no warning."""
    present = [s for s in SAGITTAL_SLICES if s in sagittal]
    if not present:
        raise ValueError("no sagittal slice")
    standins = {s: nearest_present(s, present) for s in SAGITTAL_SLICES if s not in sagittal}
    if not standins:
        return dict(sagittal), (None if fov is None else dict(fov)), {}, ()
    full = {s: sagittal[standins.get(s, s)] for s in SAGITTAL_SLICES}
    full_fov = None if fov is None else \
        {s: fov[standins.get(s, s)] for s in SAGITTAL_SLICES if standins.get(s, s) in fov}
    notes = tuple(f"{what}{s}: sagittal slice {s} missing; slice {source} stands in for it"
                  + (" as the mid slice" if s == MID_SAGITTAL_SLICE else " in the 2.5D input")
                  for s, source in standins.items())
    return full, full_fov, standins, notes
