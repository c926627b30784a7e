"""Scan series as parallel slices in patient space: T2 preference, sagittal/axial choice, and Study assembly."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import StudyError
from .geometry import (
    LEFT, PARASAGITTAL_OFFSET_MM, SAGITTAL_MM_PER_PX, SUPERIOR, AxialSlice, ImagePlane, model_sagittal_plane,
    orientation_of, resample, unit_range,
)
from .levels import MID_SAGITTAL_SLICE, SAGITTAL_SLICES
from .midline import KEEP_MIDDLE_MM, mirror_plane_mm
from .study import Study, complete_sagittal

# Slices of one series whose normals differ by more than this belong to different stacks (a 3-plane
# localiser, or axial blocks angled to different discs).
STACK_MAX_ANGLE_DEG = 5.0
# Two slices closer than this along the normal are the same position (a repeat, or a second echo).
SAME_POSITION_MM = 0.05
# Gaps between sagittal slices that differ from the median gap by more than this fraction are reported.
IRREGULAR_GAP_FRACTION = 0.2
MIN_SAGITTAL_SLICES = 3
# A parasagittal slice farther than this from the mid slice is still used, but flagged.
MAX_PARASAGITTAL_MM = 2.0 * PARASAGITTAL_OFFSET_MM

Clean = Callable[[str], str]


@dataclass(frozen=True, eq=False)
class SliceRef:
    """One stored slice: its plane, a reader of its pixels (rows x columns, float32; raises StudyError),
    and a short name for messages (a file name relative to the patient folder, or a volume plane)."""

    plane: ImagePlane
    read: Callable[[], np.ndarray]
    name: str
    instance: object = None    # study.study.DicomInstance (DICOM only)


@dataclass(frozen=True)
class SequenceInfo:
    """What a series says about its contrast; any field may be unknown."""

    description: str = ""
    echo_time_ms: Optional[float] = None
    repetition_time_ms: Optional[float] = None
    contrast_agent: bool = False
    # What `description` is, as the reasons name it: a DICOM series description, or (NIfTI, whose header
    # description is usually the writing tool, e.g. "FSL5.0") the file name.
    described_by: str = "description"


@dataclass(eq=False)
class Stack:
    """Parallel slices of one series, sorted by position along the normal (never by instance number)."""

    label: str                 # e.g. "series 3 'T2 TSE SAG'" or "sub-01_T2w.nii.gz"
    orientation: str           # sagittal / axial / coronal / oblique
    normal: np.ndarray         # oriented toward the patient's left (sagittal) or superior (otherwise)
    slices: List[SliceRef]
    positions_mm: np.ndarray   # along normal, increasing
    sequence: SequenceInfo = field(default_factory=SequenceInfo)
    frame_of_reference: str = ""
    notes: List[str] = field(default_factory=list)
    # A near-isotropic 3-D volume (NIfTI): its voxel planes along the superior axis can serve as axials.
    isotropic_3d: bool = False

    def describe(self) -> str:
        n = len(self.slices)
        parts = [f"{n} slice{'s' if n != 1 else ''}"]
        if n > 1:
            parts.append(f"{float(np.median(np.diff(self.positions_mm))):.1f} mm apart")
        sp = self.slices[0].plane.spacing_mm
        parts.append(f"{sp[0]:.2f} x {sp[1]:.2f} mm pixels")
        seq = self.sequence
        if seq.echo_time_ms is not None:
            parts.append(f"TE {seq.echo_time_ms:g} ms")
        if seq.repetition_time_ms is not None:
            parts.append(f"TR {seq.repetition_time_ms:g} ms")
        return f"{self.label} ({', '.join(parts)})"


def make_stacks(label: str, slices: Sequence[SliceRef], sequence: SequenceInfo = SequenceInfo(),
                frame_of_reference: str = "") -> List[Stack]:
    """Split a series' slices into stacks of parallel slices and sort each along its normal."""
    groups: List[Tuple[np.ndarray, List[SliceRef]]] = []
    cos_max = np.cos(np.deg2rad(STACK_MAX_ANGLE_DEG))
    for s in slices:
        n = s.plane.normal
        for ref, members in groups:
            if abs(float(n @ ref)) >= cos_max:
                members.append(s)
                break
        else:
            groups.append((n, [s]))
    stacks = []
    for k, (ref, members) in enumerate(groups):
        orientation = orientation_of(ref)
        normal = _oriented(np.mean([m.plane.normal * np.sign(m.plane.normal @ ref) for m in members], 0),
                           orientation)
        pos = np.array([float(np.asarray(m.plane.first_pixel_mm) @ normal) for m in members])
        order = np.argsort(pos, kind="stable")
        kept, kept_pos, notes = [], [], []
        dropped = 0
        for i in order:
            if kept_pos and pos[i] - kept_pos[-1] < SAME_POSITION_MM:
                dropped += 1
                continue
            kept.append(members[i])
            kept_pos.append(pos[i])
        sub = label if len(groups) == 1 else f"{label} [{orientation} part {k + 1}]"
        if dropped:
            notes.append(f"{sub}: {dropped} slice(s) repeat a position already present; the first was kept")
        stacks.append(Stack(sub, orientation, normal, kept, np.array(kept_pos), sequence, frame_of_reference, notes))
    return stacks


def _oriented(normal: np.ndarray, orientation: str) -> np.ndarray:
    n = normal / np.linalg.norm(normal)
    axis = np.asarray(LEFT if orientation == "sagittal" else SUPERIOR)
    if orientation not in ("sagittal", "axial"):
        axis = np.eye(3)[int(np.argmax(np.abs(n)))]
    return n if n @ axis >= 0 else -n


# ------------------------------------------------------------------------------------------------
# Which series is T2
# ------------------------------------------------------------------------------------------------
_T2 = re.compile(r"(?<![a-z0-9])t2|t2w|t2[_\- ]?(tse|fse|space|ciss|trufi|haste)", re.I)
_T1 = re.compile(r"(?<![a-z0-9])t1|t1w", re.I)
_FAT_SUPPRESSED = re.compile(r"stir|tirm|(?<![a-z])fs(?![a-z])|fat[ _-]?sat|spair|dixon", re.I)
_PD = re.compile(r"(?<![a-z])pd(?![a-z])|proton", re.I)
_DIFFUSION = re.compile(r"dwi|diff|trace|adc|dti", re.I)
_FLAIR = re.compile(r"flair", re.I)


def t2_score(seq: SequenceInfo) -> Tuple[float, List[str]]:
    """How T2-weighted a series looks (higher is more), with the reasons; description first, then TE/TR."""
    d = seq.description or ""
    score, why = 0.0, []
    if _T2.search(d):
        score += 4
        why.append(f"{seq.described_by} says T2")
    if _T1.search(d):
        score -= 4
        why.append(f"{seq.described_by} says T1")
    if _PD.search(d):
        score -= 2
        why.append(f"{seq.described_by} says PD")
    if _FAT_SUPPRESSED.search(d):
        score -= 1
        why.append("fat-suppressed")
    if _FLAIR.search(d):
        score -= 1
        why.append("FLAIR")
    if _DIFFUSION.search(d):
        score -= 6
        why.append("diffusion")
    te, tr = seq.echo_time_ms, seq.repetition_time_ms
    if te is not None:
        if te >= 60:
            score += 2
            why.append(f"long TE {te:g} ms")
        elif te <= 30:
            score -= 2
            why.append(f"short TE {te:g} ms")
    if tr is not None:
        if tr >= 1500:
            score += 1
            why.append(f"long TR {tr:g} ms")
        elif tr < 1000:
            score -= 1
            why.append(f"short TR {tr:g} ms")
    if seq.contrast_agent:
        score -= 1
        why.append("contrast given")
    if not why:
        why.append("no sequence information")
    return score, why


def rank_stacks(stacks: Sequence[Stack], orientation: str) -> List[Tuple[Stack, float, List[str]]]:
    """Stacks of this orientation, most T2-like first; ties go to more slices, then finer pixels."""
    out = []
    for st in stacks:
        if st.orientation != orientation:
            continue
        score, why = t2_score(st.sequence)
        out.append((st, score, why))
    out.sort(key=lambda t: (-t[1], -len(t[0].slices), min(t[0].slices[0].plane.spacing_mm)))
    return out


# ------------------------------------------------------------------------------------------------
# Building the Study
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SagittalChoice:
    """The three stored slices used as 5/6/7 and what was noticed choosing them."""

    indices: Dict[int, int]      # challenge slice number -> index into the stack
    offsets_mm: Dict[int, float]  # signed distance from the mid slice (toward the patient's left)
    notes: Tuple[str, ...]


def _mirror_plane(stack: Stack) -> Optional[float]:
    """study.midline.mirror_plane_mm of a stack whose slices share one pixel grid; None where it cannot say
    (too few slices, a slice that cannot be read: the stack's middle is used then)."""
    if not all(isinstance(r, SliceRef) for r in stack.slices) or not np.isfinite(stack.positions_mm).all():
        return None
    spacing = {tuple(r.plane.spacing_mm) for r in stack.slices}
    shapes = {tuple(r.plane.shape) for r in stack.slices}
    if len(spacing) != 1 or len(shapes) != 1:
        return None
    try:
        return mirror_plane_mm(stack.positions_mm, lambda k: stack.slices[k].read(), next(iter(spacing)))
    except StudyError:
        return None


def choose_sagittal_slices(stack: Stack) -> SagittalChoice:
    """Mid slice = the one nearest the middle of the stack, or nearest the neck's mirror plane where that lies
    more than midline.KEEP_MIDDLE_MM from the middle (study.midline); 5 and 7 = nearest to 3 mm either side.

    Slice 5 lies toward the patient's right, 7 toward the left (the phantom's convention: lateral
    offset x grows toward the patient's left and slice 5 sits at x < 0). A series of 1 or 2 slices has no
    slice on one side (or either): that slice is left out of `indices`, and the Study's loader lets the
    nearest slice stand in for it (study.study.complete_sagittal).
    """
    pos = stack.positions_mm
    n = len(pos)
    if n < 1:
        raise ValueError(f"{stack.label} has no slice")
    notes = []
    if n == 1:
        return SagittalChoice({MID_SAGITTAL_SLICE: 0}, {MID_SAGITTAL_SLICE: 0.0}, ())
    gaps = np.diff(pos)
    med = float(np.median(gaps))
    if np.any(np.abs(gaps - med) > IRREGULAR_GAP_FRACTION * med):
        notes.append(f"{stack.label}: irregular slice spacing ({gaps.min():.1f} to {gaps.max():.1f} mm, "
                     f"median {med:.1f} mm; a slice may be missing); the nearest slices were used")
    centre = (pos[0] + pos[-1]) / 2
    mirror = _mirror_plane(stack)
    if mirror is not None and abs(mirror - centre) > KEEP_MIDDLE_MM:
        side = "left" if mirror > centre else "right"
        notes.append(f"{stack.label}: the neck is mirror-symmetric about a plane {abs(mirror - centre):.1f} mm to "
                     f"the patient's {side} of the stack's middle; the mid slice is the one nearest that plane")
        centre = mirror
    m = int(np.argmin(np.abs(pos - centre)))
    if mirror is not None and n >= MIN_SAGITTAL_SLICES:
        m = min(max(m, 1), n - 2)    # a slice stays on either side of the mid slice
    idx = {MID_SAGITTAL_SLICE: m}
    offs = {MID_SAGITTAL_SLICE: 0.0}
    for s, sign in ((SAGITTAL_SLICES[0], -1), (SAGITTAL_SLICES[-1], 1)):
        side = [k for k in range(n) if (pos[k] - pos[m]) * sign > 0]
        if not side and n < MIN_SAGITTAL_SLICES:
            continue   # two slices: the one beside the mid slice lies on the other side
        if not side:   # only where positions are so far apart that their midpoint cannot be told apart
            raise ValueError(f"{stack.label}: no slice lies on the patient's {'right' if sign < 0 else 'left'} "
                             f"of the mid slice (positions {pos[0]:g} to {pos[-1]:g} mm along the normal); "
                             "the slice positions are implausible")
        k = min(side, key=lambda k: abs(pos[k] - pos[m] - sign * PARASAGITTAL_OFFSET_MM))
        idx[s] = k
        offs[s] = float(pos[k] - pos[m])
        if abs(offs[s]) > MAX_PARASAGITTAL_MM:
            notes.append(f"{stack.label}: slice {s} lies {abs(offs[s]):.1f} mm from the mid slice (expected "
                         f"about {PARASAGITTAL_OFFSET_MM:g} mm)")
    return SagittalChoice(idx, offs, tuple(notes))


def sagittal_images(stack: Stack, patient: str) -> Tuple[Dict[int, np.ndarray], Dict[str, str], ImagePlane,
                                                          List[str], Tuple[str, ...], Dict[int, np.ndarray], Dict[str, object]]:
    """Slices 5/6/7 on the model grid (1.25 mm/px, anterior left, superior up, centred on the mid slice's
    field of view), their sources, the mid image's plane, notes, which slices show one value throughout
    their field of view ("sag/5" ...), each slice's field of view on the grid (True where the stored
    slice has data) and the DICOM instances read ("sag/5" -> DicomInstance; empty for NIfTI), each for the
    slices the series has (a series of 1 or 2 slices lacks 5 and/or 7; see choose_sagittal_slices). Raises
    StudyError."""
    try:
        choice = choose_sagittal_slices(stack)
    except ValueError as e:
        raise StudyError(str(e), patient=patient) from None
    mid_ref = stack.slices[choice.indices[MID_SAGITTAL_SLICE]]
    mid_plane = model_sagittal_plane(mid_ref.plane)
    centre = mid_plane.centre_mm
    images, masks, sources, instances = {}, {}, {}, {}
    present = [s for s in SAGITTAL_SLICES if s in choice.indices]
    for s in present:
        ref = stack.slices[choice.indices[s]]
        if ref.instance is not None:
            instances[f"sag/{s}"] = ref.instance
        plane = mid_plane if s == MID_SAGITTAL_SLICE else \
            model_sagittal_plane(ref.plane, centre + choice.offsets_mm[s] * stack.normal)
        pixels = ref.read()
        images[s], masks[s] = resample(pixels, ref.plane, plane)
        sources[f"sag/{s}"] = (f"{stack.label}, slice {choice.indices[s] + 1} of {len(stack.slices)} "
                               f"({ref.name}, {choice.offsets_mm[s]:+.1f} mm)")
    unit, _, _ = unit_range([images[s] for s in present], [masks[s] for s in present])
    notes = list(choice.notes)
    blank = tuple(f"sag/{s}" for s, image in zip(present, unit) if Study.is_blank(image[masks[s]]))
    for key in blank:
        notes.append(f"{key} ({sources[key]}): all pixels in the field of view have the same value; the image "
                     "carries no information")
    covered = float(masks[MID_SAGITTAL_SLICE].mean())
    if covered < 0.999:
        notes.append(f"{stack.label}: the field of view covers {covered:.0%} of the "
                     f"{SAGITTAL_MM_PER_PX:g} mm/px model grid; the rest is black")
    return dict(zip(present, unit)), sources, mid_plane, notes, blank, masks, instances


def pending_axials(stacks: Sequence[Stack], clean: Clean) -> Tuple[List[AxialSlice], List[str]]:
    """Read every slice of the chosen axial stacks; a slice that cannot be read is left out with a note."""
    out, notes = [], []
    for st in stacks:
        for k, ref in enumerate(st.slices):
            try:
                pixels = ref.read()
            except StudyError as e:
                notes.append(clean(f"{st.label}, slice {k + 1}: {e.problem}; left out"))
                continue
            out.append(AxialSlice(pixels, ref.plane, clean(f"{st.label}, slice {k + 1} of {len(st.slices)} "
                                                          f"({ref.name})"), st.frame_of_reference,
                                  ref.instance))
    return out, notes


def assemble_study(patient: str, stacks: Sequence[Stack], notes: Sequence[str], provenance: Sequence[str],
                   clean: Clean = lambda s: s) -> Study:
    """Choose the sagittal stack (most T2-like with >= 3 slices whose pixels decode) and the axial stacks,
    and build the Study with the axials pending. Raises StudyError naming the patient."""
    notes, prov = [clean(n) for n in notes], [clean(p) for p in provenance]
    sag_ranked = rank_stacks(stacks, "sagittal")
    if not sag_ranked:
        found = sorted({st.orientation for st in stacks})
        raise StudyError(clean("no sagittal series found" + (f" (found {', '.join(found)} slices only)"
                                                             if found else "")
                               + (f"; {'; '.join(prov)}" if prov else "")), patient=patient)
    chosen = None
    failures = []
    # A series of 3 or more slices first (rank order); one of 1 or 2 slices only when none of those is usable:
    # its missing slices 5/7 (or 6) are then stood in for by the nearest slice (complete_sagittal).
    full = [r for r in sag_ranked if len(r[0].slices) >= MIN_SAGITTAL_SLICES]
    for st, score, why in full + [r for r in sag_ranked if len(r[0].slices) < MIN_SAGITTAL_SLICES]:
        try:
            sag, sources, plane, sag_notes, blank, fov, instances = sagittal_images(st, patient)
        except StudyError as e:
            failures.append(clean(f"{st.describe()}: {e.problem}"))
            continue
        chosen = (st, score, why)
        break
    if chosen is None:
        raise StudyError(clean("no usable sagittal series: " + "; ".join(failures)), patient=patient)
    st, score, why = chosen
    if len(st.slices) >= MIN_SAGITTAL_SLICES:   # the short series ranked above the one used
        rank = [r[0] for r in sag_ranked]
        failures = [clean(f"{o.describe()}: only {len(o.slices)} slice(s); a series of {MIN_SAGITTAL_SLICES} or "
                          "more is preferred") for o in rank[:rank.index(st)] if len(o.slices) < MIN_SAGITTAL_SLICES] \
            + failures
    sag, fov, standins, standin_notes = complete_sagittal(sag, fov)
    if standins:
        sag_notes = list(sag_notes) + [clean(f"{st.label} has {len(st.slices)} slice(s): ") + n for n in standin_notes]
        # A stand-in slice shows its source's image, so it points back at that stored object (the DICOM SR).
        instances.update({f"sag/{s}": instances[f"sag/{src}"] for s, src in standins.items()
                          if f"sag/{src}" in instances})
    prov.append(clean(f"sagittal: {st.describe()}, chosen as the most T2-like sagittal series ({', '.join(why)})"))
    if score <= 0:
        notes.append(clean(f"no clearly T2-weighted sagittal series; used {st.label} ({', '.join(why)}); the "
                           "models were trained on T2 images"))
    for f in failures:
        notes.append(f"sagittal series passed over: {f}")
    for other, o_score, o_why in sag_ranked:
        if other is not st and len(other.slices) >= MIN_SAGITTAL_SLICES and \
                not any(other.label in f for f in failures):
            prov.append(clean(f"sagittal not used: {other.describe()} ({', '.join(o_why)})"))
    notes.extend(clean(n) for n in st.notes + sag_notes)

    ax_ranked = rank_stacks(stacks, "axial")
    axial_stacks: List[Stack] = []
    if ax_ranked:
        best = ax_ranked[0][1]
        # Several axial series that look equally T2 are pooled: clinics often acquire one block per disc.
        axial_stacks = [a for a, sc, _ in ax_ranked if sc >= min(best, 2.0) or a is ax_ranked[0][0]]
        for a, sc, w in ax_ranked:
            verb = "axial" if a in axial_stacks else "axial not used"
            prov.append(clean(f"{verb}: {a.describe()} ({', '.join(w)})"))
    pending, ax_notes = pending_axials(axial_stacks, clean)
    notes.extend(ax_notes)
    if not pending:
        notes.append("no axial slices; every level is graded from the sagittal images alone")
    for a in axial_stacks:
        if st.frame_of_reference and a.frame_of_reference and a.frame_of_reference != st.frame_of_reference:
            notes.append(clean(f"{a.label} has another frame of reference than the sagittal series; matched by "
                               "patient coordinates anyway (wrong if the patient moved between them)"))
    for other in stacks:
        if other.orientation in ("coronal", "oblique"):
            prov.append(clean(f"not used: {other.describe()} ({other.orientation})"))
    return Study(patient_id=patient, sagittal=sag, axial={}, sagittal_spacing_mm=(SAGITTAL_MM_PER_PX,) * 2,
                 sources={k: clean(v) for k, v in sources.items()}, warnings=tuple(notes),
                 blank_images=blank,
                 provenance=tuple(prov), sagittal_geometry=plane, pending_axial=tuple(pending), sagittal_fov=fov,
                 sagittal_standins=standins, dicom_instances=instances)
