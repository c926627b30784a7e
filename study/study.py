"""The Study hand-off: one patient's images, where each came from, and what was odd about them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Optional, Tuple

import numpy as np

from .levels import CANAL_POSITIONS, MID_SAGITTAL_SLICE, SAGITTAL_SLICES

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

    def __post_init__(self):
        missing = [s for s in SAGITTAL_SLICES if s not in self.sagittal]
        if missing:
            raise ValueError(f"Study {self.patient_id}: sagittal slice(s) {missing} missing")
        unknown = [p for p in self.axial if p not in CANAL_POSITIONS]
        if unknown:
            raise ValueError(f"Study {self.patient_id}: unknown axial position(s) {unknown}")
        for s, mask in (self.sagittal_fov or {}).items():
            if s not in self.sagittal or np.shape(mask) != np.shape(self.sagittal[s]):
                raise ValueError(f"Study {self.patient_id}: field-of-view mask of slice {s} does not match "
                                 "its image")

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
