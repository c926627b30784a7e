"""DICOM studies: read headers, keep identifying values out of every message, group series, decode pixels."""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import StudyError
from .geometry import ImagePlane
from .loader import MAX_PIXELS  # pixels per frame, as for PNGs: a few bytes can claim gigapixels
from .series import SequenceInfo, SliceRef, Stack, assemble_study, make_stacks
from .study import DicomInstance, Study

PathLike = Union[str, Path]

MR_IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.4": "MR Image",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image",
}
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
# Suffixes that are never DICOM, so a batch of PNGs or reports is not opened file by file.
NOT_DICOM_SUFFIXES = frozenset({
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".json", ".txt", ".md", ".csv", ".xml", ".html",
    ".htm", ".pdf", ".zip", ".gz", ".nii", ".py", ".yaml", ".yml", ".log", ".ini", ".db", ".exe", ".dll", ".js",
})
# Element values above this stay on disk until used: headers of a whole study fit in memory, and a
# file's pixel data is only read for the slices that are used.
DEFER_SIZE = "64 KB"
# Tags whose values identify a person or a visit; they never appear in messages, ids or outputs.
IDENTIFYING_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientBirthName", "OtherPatientIDs",
    "OtherPatientNames", "PatientAddress", "PatientTelephoneNumbers", "PatientMotherBirthName",
    "MedicalRecordLocator", "AccessionNumber", "ReferringPhysicianName", "PerformingPhysicianName",
    "OperatorsName", "NameOfPhysiciansReadingStudy", "RequestingPhysician", "InstitutionName",
    "InstitutionAddress", "InstitutionalDepartmentName", "StationName", "StudyID", "IssuerOfPatientID",
    "ResponsiblePerson", "AdmissionID",
)
_LOCALISER = re.compile(r"(?<![a-z])(loc|localizer|localiser|scout|survey|3[ _-]?plane|tri[ _-]?pilot|"
                        r"pilot|aahead|aascout|positioning)", re.I)
REDACTED = "[redacted]"
# A file holding more frames than this is not a spine series (a 3-D T2 volume holds a few hundred): it is
# refused before any per-frame work, so a tiny file claiming millions of frames costs nothing.
MAX_FRAMES = 4096
_UNDEFINED_LENGTH = 0xFFFFFFFF
_PIXEL_KEYWORDS = (("PixelData", None), ("FloatPixelData", 32), ("DoubleFloatPixelData", 64))


# ------------------------------------------------------------------------------------------------
# Privacy
# ------------------------------------------------------------------------------------------------
class Scrubber:
    """Replaces identifying values (names and their parts, ids, dates) in text with [redacted]."""

    MIN_TOKEN = 3

    def __init__(self, values: Iterable[str] = ()):
        self.values = tuple(sorted({str(v) for v in values}))
        tokens = set()
        for raw in self.values:
            value = str(raw).strip()
            if not value:
                continue
            parts = [p for p in re.split(r"[\^=\s,]+", value) if p]
            tokens.update(p for p in parts if len(p) >= self.MIN_TOKEN)
            for sep in ("", "_", " ", "-", "^"):
                for seq in (parts, parts[::-1]):
                    joined = sep.join(seq)
                    if len(joined) >= self.MIN_TOKEN:
                        tokens.add(joined)
            if re.fullmatch(r"\d{8}", value):  # a DA date: also its usual spellings
                tokens.update({f"{value[:4]}-{value[4:6]}-{value[6:]}", f"{value[6:]}.{value[4:6]}.{value[:4]}",
                               f"{value[4:6]}/{value[6:]}/{value[:4]}"})
        # Longest first, so a full name is replaced before its parts; not inside longer alphanumeric words.
        ordered = sorted(tokens, key=len, reverse=True)
        self._pattern = re.compile(
            "(?<![A-Za-z0-9])(?:" + "|".join(re.escape(t) for t in ordered) + ")(?![A-Za-z0-9])",
            re.I) if ordered else None

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(REDACTED, text)

    def identifies(self, text: str) -> bool:
        return self(text) != text


def identifying_values(datasets: Iterable) -> List[str]:
    values = set()
    for ds in datasets:
        for kw in IDENTIFYING_KEYWORDS:
            v = ds.get(kw)
            if v is None:
                continue
            items = v if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue" else [v]
            for item in items:
                s = str(item).strip()
                if s:
                    values.add(s)
    return sorted(values)


def hashed_study_id(study_uid: str) -> str:
    """A stable, non-identifying patient id from the StudyInstanceUID."""
    return "study-" + hashlib.sha256(study_uid.encode()).hexdigest()[:12]


def safe_name(name: str) -> str:
    """A string usable as a file name on every platform."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return s[:80] or "patient"


# ------------------------------------------------------------------------------------------------
# Reading files
# ------------------------------------------------------------------------------------------------
def looks_like_dicom(path: Path) -> bool:
    """True for a DICOM Part 10 file (DICM at byte 128) or a bare data set starting with group 0008/0002."""
    if path.suffix.lower() in NOT_DICOM_SUFFIXES or path.name.lower().endswith(".nii.gz"):
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    # Files written without the preamble: the first tag is (0008,xxxx) or (0002,xxxx), little endian.
    return len(head) >= 8 and head[:2] in (b"\x08\x00", b"\x02\x00") and head[3:4] == b"\x00"


def read_header(path: PathLike, **kwargs):
    """The data set with large values (pixel data) left on disk; pydicom's warnings are swallowed because
    they quote element values, which may be identifying. Raises on files that are not DICOM."""
    import pydicom

    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(str(path), defer_size=DEFER_SIZE, **kwargs)
        except pydicom.errors.InvalidDicomError:
            # No preamble/DICM: read as a bare data set, but only when it starts like one.
            if looks_like_dicom(path):
                return pydicom.dcmread(str(path), defer_size=DEFER_SIZE, force=True, **kwargs)
            raise


def study_uid(path: PathLike) -> Tuple[str, List[str]]:
    """(StudyInstanceUID or "", identifying values) of one file; raises when the file is not DICOM."""
    ds = read_header(path, stop_before_pixels=True)
    return str(ds.get("StudyInstanceUID", "") or ""), identifying_values([ds])


def _float(ds, keyword) -> Optional[float]:
    v = ds.get(keyword)
    if v is None or v == "":
        return None
    try:
        if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
            v = v[0]
        f = float(v)
    except (TypeError, ValueError, IndexError):
        return None
    return f if np.isfinite(f) else None


def _functional(ds, frame: int, sequence: str, keyword: str):
    """A value from a multi-frame image's per-frame functional groups, else from its shared groups."""
    per = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    for group in ([per[frame]] if per and frame < len(per) else []) + ([shared[0]] if shared else []):
        seq = group.get(sequence)
        if seq and keyword in seq[0]:
            return seq[0].get(keyword)
    return None


def _sequence_info(ds) -> SequenceInfo:
    te = _float(ds, "EchoTime")
    tr = _float(ds, "RepetitionTime")
    if te is None and "SharedFunctionalGroupsSequence" in ds:
        v = _functional(ds, 0, "MREchoSequence", "EffectiveEchoTime")
        te = float(v) if v is not None else None
        v = _functional(ds, 0, "MRTimingAndRelatedParametersSequence", "RepetitionTime")
        tr = float(v) if v is not None else None
    contrast = bool(str(ds.get("ContrastBolusAgent", "") or "").strip())
    return SequenceInfo(str(ds.get("SeriesDescription", "") or ds.get("ProtocolName", "") or ""), te, tr, contrast)


def _skip_reason(ds) -> Optional[str]:
    """Why a file is not an image to read, or None."""
    if str(ds.get("MediaStorageSOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", "")) == \
            DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        return "DICOMDIR index"
    sop = str(ds.get("SOPClassUID", "") or "")
    if not sop and "Rows" not in ds:
        return "incomplete (no SOP class, no image attributes; a truncated file?)"
    modality = str(ds.get("Modality", "") or "")
    if sop and sop not in MR_IMAGE_SOP_CLASSES:
        import pydicom

        name = pydicom.uid.UID(sop).name
        if sop == "1.2.840.10008.5.1.4.1.1.7" or "Secondary Capture" in name:
            return "secondary capture"
        if modality != "MR" or not name.endswith("Image Storage"):
            return f"not an MR image ({name if name != sop else 'SOP class ' + sop})"
    elif not sop and modality and modality != "MR":
        return f"not an MR image (modality {modality})"
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if "LOCALIZER" in image_type:
        return "localiser (ImageType LOCALIZER)"
    if image_type and image_type[0] == "DERIVED":
        return "derived image (ImageType DERIVED)"
    if len(image_type) > 1 and image_type[1] == "SECONDARY":
        return "secondary image (ImageType SECONDARY)"
    if _LOCALISER.search(str(ds.get("SeriesDescription", "") or "")):
        return "localiser (series description)"
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        return "no pixel data"
    return None


def _whole(ds, keyword: str, default: int) -> int:
    """An integer header value (default when absent or empty); raises ValueError quoting a bad one."""
    v = ds.get(keyword)
    if v is None or v == "":
        return default
    try:
        if isinstance(v, (bytes, str)) or not float(v).is_integer():
            raise ValueError
        return int(v)
    except (TypeError, ValueError, OverflowError):
        text = repr(v)
        raise ValueError(f"{keyword} {text[:24] + '...' if len(text) > 24 else text} is not a whole number") \
            from None


def _frame_count(ds, patient: str, name: str) -> int:
    """How many frames the file holds, once what its header claims (NumberOfFrames, Rows x Columns, samples,
    bits) has been checked against sane limits and against the length of the pixel data actually stored.

    Runs before any per-frame work: a header is a few bytes, and a claim of 100 000 frames in a 9 kB file
    would otherwise cost a plane and a reader per frame. Raises StudyError naming the file and the problem.
    """
    def fail(problem: str) -> StudyError:
        return StudyError(problem, patient=patient, path=name)

    try:
        rows, cols = _whole(ds, "Rows", 0), _whole(ds, "Columns", 0)
        # NumberOfFrames 0 is read as 1, as pydicom does.
        n_frames = _whole(ds, "NumberOfFrames", 1) or 1
        samples = _whole(ds, "SamplesPerPixel", 1) or 1
        bits_allocated = _whole(ds, "BitsAllocated", 0)
    except ValueError as e:
        raise fail(str(e)) from None
    if rows < 1 or cols < 1:
        raise fail(f"image has no pixels (Rows x Columns {rows} x {cols})")
    if rows * cols > MAX_PIXELS:
        raise fail(f"claims {rows} x {cols} pixels per frame, above the {MAX_PIXELS // 1_000_000} MP limit; "
                   "not decoded (possible decompression bomb)")
    if n_frames < 0:
        raise fail(f"NumberOfFrames {n_frames} is negative")
    if n_frames > MAX_FRAMES:
        raise fail(f"claims {n_frames:,} frames, more than the {MAX_FRAMES:,} a file of a spine series may hold")
    if not 1 <= samples <= 4:
        raise fail(f"SamplesPerPixel {samples} is not 1 to 4")
    found = [(kw, bits) for kw, bits in _PIXEL_KEYWORDS if kw in ds]
    if not found:
        return n_frames   # no pixel data: _skip_reason has already set the file aside
    keyword, float_bits = found[0]
    elem = ds.get_item(keyword, keep_deferred=True)   # never reads the value: its length is enough
    length = getattr(elem, "length", None)
    if length is None:
        value = getattr(elem, "value", None)
        length = len(value) if isinstance(value, (bytes, bytearray)) else None
    try:
        file_size = os.path.getsize(ds.filename) if isinstance(getattr(ds, "filename", None), str) else None
    except OSError:
        file_size = None
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        encapsulated = bool(ts is not None and ts.is_encapsulated)
    except ValueError:   # not a transfer syntax UID: the decoder names it later
        encapsulated = False
    if length == _UNDEFINED_LENGTH or encapsulated:
        # Compressed: each frame is at least one fragment item, with an 8-byte item header of its own.
        room = file_size if file_size is not None else (length if length != _UNDEFINED_LENGTH else None)
        if room is not None and n_frames * 8 > room:
            raise fail(f"claims {n_frames:,} frames but the whole file ({room:,} bytes) is too small to hold "
                       "that many compressed frames")
        return n_frames
    if length is None:
        return n_frames
    if file_size is not None:
        length = min(length, file_size)   # a file cut short holds less than its element says
    bits = float_bits or (bits_allocated if bits_allocated in (1, 8, 16, 32, 64) else 1)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").upper()
    per_pixel = 2 if photometric == "YBR_FULL_422" else samples   # 4:2:2 stores two values per pixel
    expected = (rows * cols * per_pixel * n_frames * bits + 7) // 8
    if length < expected:
        what = f"{n_frames:,} frame{'s' if n_frames != 1 else ''} of " if n_frames != 1 else ""
        raise fail(f"header claims {what}{rows} x {cols} pixels ({expected:,} bytes of pixel data) but the file "
                   f"holds {length:,} bytes of pixel data")
    return n_frames


def _planes(ds, n_frames: int) -> List[Tuple[ImagePlane, Optional[int]]]:
    """(plane, frame index or None) of every image in the file; raises ValueError on missing geometry."""
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows < 1 or cols < 1:
        raise ValueError("no Rows/Columns")
    multi = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds

    def plane_of(f: int) -> ImagePlane:
        if multi:
            ipp = _functional(ds, f, "PlanePositionSequence", "ImagePositionPatient")
            iop = _functional(ds, f, "PlaneOrientationSequence", "ImageOrientationPatient")
            ps = _functional(ds, f, "PixelMeasuresSequence", "PixelSpacing")
        else:
            ipp, iop, ps = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient"), ds.get("PixelSpacing")
        missing = [n for n, v in (("ImagePositionPatient", ipp), ("ImageOrientationPatient", iop),
                                  ("PixelSpacing", ps)) if v is None or len(v) == 0]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
        try:
            iop = [float(v) for v in iop]
            return ImagePlane.make([float(v) for v in ipp], iop[:3], iop[3:6], [float(v) for v in ps], (rows, cols))
        except (TypeError, ValueError, IndexError) as e:
            raise ValueError(f"unusable geometry tags ({e})") from None

    if multi:
        return [(plane_of(f), f) for f in range(n_frames)]
    # Classic images carry one position: every frame of a classic multi-frame file lies on the same plane.
    plane = plane_of(0)
    return [(plane, f if n_frames > 1 else None) for f in range(n_frames)]


def _decode_error(ds, e: Exception) -> str:
    from pydicom.pixels import get_decoder

    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is None:
        return f"pixel data could not be decoded ({type(e).__name__}: {e})"
    try:
        available = get_decoder(ts).is_available
    except (NotImplementedError, ValueError):
        available = False
    if not available:
        hint = (" (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg)"
                if "JPEG" in ts.name else "")
        return (f"pixel data are stored with transfer syntax {ts.name} ({ts}), for which no decoder is "
                f"installed{hint}")
    return f"pixel data stored as {ts.name} ({ts}) could not be decoded ({type(e).__name__}: {e})"


def _pixel_reader(ds, frame: Optional[int], patient: str, name: str, clean: Callable[[str], str],
                  cache: Dict[int, np.ndarray]) -> Callable[[], np.ndarray]:
    """A reader of one image's pixels as float32 in the modality's values; errors become StudyError."""

    def read() -> np.ndarray:
        key = id(ds)
        if key not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    arr = ds.pixel_array
                except Exception as e:
                    raise StudyError(clean(_decode_error(ds, e)), patient=patient, path=name) from None
            cache.clear()  # one multi-frame file at a time: frames are read in order
            cache[key] = arr
        arr = cache[key]
        colour = int(ds.get("SamplesPerPixel", 1) or 1) > 1
        img = arr[frame] if frame is not None and arr.ndim == (4 if colour else 3) else arr
        if img.ndim == 3:  # colour: luminance
            img = img[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        if img.shape != (int(ds.Rows), int(ds.Columns)):
            raise StudyError(f"decoded pixel array {arr.shape} does not match Rows x Columns "
                             f"{int(ds.Rows)} x {int(ds.Columns)}", patient=patient, path=name)
        img = img.astype(np.float32)
        if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
            img = float(np.nanmax(img)) - img  # MONOCHROME1 shows low values bright
        slope = _float(ds, "RescaleSlope")
        intercept = _float(ds, "RescaleIntercept")
        if slope is not None or intercept is not None:
            img = img * (slope if slope is not None else 1.0) + (intercept or 0.0)
        bad = ~np.isfinite(img)
        if bad.all():
            raise StudyError("pixel data hold no finite value", patient=patient, path=name)
        if bad.any():
            img = np.where(bad, np.nanmin(np.where(bad, np.nan, img)), img)
        return img

    return read


# ------------------------------------------------------------------------------------------------
# Loading one study
# ------------------------------------------------------------------------------------------------
def load_dicom_study(files: Sequence[PathLike], patient: str, base: Optional[PathLike] = None,
                     extra_notes: Sequence[str] = ()) -> Study:
    """One DICOM study (files of any names, several series) as a Study with its axial slices pending.

    `base` is the folder file names in messages are relative to. Series are split into stacks of
    parallel slices; localisers, derived/secondary images and non-MR objects are ignored; the sagittal
    and axial stacks are chosen by orientation and T2 look (study.series). Every message is scrubbed of
    identifying values. Raises StudyError naming the patient.
    """
    base = Path(base) if base is not None else None
    headers: List[Tuple[str, object]] = []
    notes: List[str] = list(extra_notes)
    unreadable: List[str] = []

    def rel(p: Path) -> str:
        if base is not None:
            try:
                return p.relative_to(base).as_posix()
            except ValueError:
                pass
        return p.name

    for f in files:
        p = Path(f)
        try:
            headers.append((rel(p), read_header(p)))
        except Exception as e:  # pydicom raises many kinds on garbage
            unreadable.append(f"{rel(p)} ({type(e).__name__})")
    clean = Scrubber(identifying_values(ds for _, ds in headers))
    if unreadable:
        notes.append(f"{len(unreadable)} file(s) not readable as DICOM, ignored: {', '.join(unreadable[:5])}"
                     + (" ..." if len(unreadable) > 5 else ""))
    if not headers:
        # The message names the files (relative to base); base itself may lie below identifying folders.
        raise StudyError(clean("no readable DICOM file" + (f" ({notes[-1]})" if notes else "")), patient=patient)
    by_study: Dict[str, list] = defaultdict(list)
    for name, ds in headers:
        by_study[str(ds.get("StudyInstanceUID", "") or "")].append((name, ds))
    # Files without a StudyInstanceUID (fragments) stay with the study, where they are reported.
    loose = by_study.pop("", []) if len(by_study) > 1 else []
    if len(by_study) > 1:
        largest = max(by_study, key=lambda k: len(by_study[k]))
        notes.append(f"files of {len(by_study)} studies found; read the largest ({len(by_study[largest])} files)")
        headers = by_study[largest] + loose
    elif loose:
        headers = next(iter(by_study.values())) + loose
    try:
        return _assemble(headers, patient, notes, clean)
    except StudyError as e:
        raise StudyError(clean(e.problem), patient=patient, path=clean(e.path) if e.path else None) from None
    except Exception as e:  # a bug here must not leak values or lose the batch
        raise StudyError(clean(f"unexpected error reading the DICOM study ({type(e).__name__}: {e})"),
                         patient=patient) from None


def _instance_uids(ds) -> Optional[Tuple[str, str, str, str, str]]:
    """(absolute path, SOP class, SOP instance, series and study UIDs) of a file, or None when one is missing
    (the image is still read; nothing can then point back at it)."""
    path = getattr(ds, "filename", None)
    try:
        values = [str(ds.get(k, "") or "").strip() for k in
                  ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")]
    except Exception:  # a malformed element: the image is read all the same, without a reference
        return None
    if not isinstance(path, str) or not all(values):
        return None
    return (os.path.abspath(path), *values)


def _series_label(ds) -> str:
    number = ds.get("SeriesNumber")
    desc = str(ds.get("SeriesDescription", "") or ds.get("ProtocolName", "") or "").strip()
    return f"series {number if number not in (None, '') else '?'}" + (f" '{desc}'" if desc else "")


def _assemble(headers, patient: str, notes: List[str], clean) -> Study:
    groups: "OrderedDict[tuple, list]" = OrderedDict()
    skipped: "OrderedDict[Tuple[str, str], List[str]]" = OrderedDict()
    for name, ds in sorted(headers, key=lambda t: t[0]):
        reason = _skip_reason(ds)
        if reason is not None:
            skipped.setdefault((_series_label(ds), reason), []).append(name)
            continue
        seq = _sequence_info(ds)
        # A dual-echo series holds a PD and a T2 image at every position: split it by echo time.
        key = (str(ds.get("SeriesInstanceUID", "") or _series_label(ds)),
               None if seq.echo_time_ms is None else round(seq.echo_time_ms, 1))
        groups.setdefault(key, []).append((name, ds))
    provenance: List[str] = []
    for (label, reason), names in skipped.items():
        provenance.append(f"ignored: {label} ({len(names)} file{'s' if len(names) != 1 else ''}): {reason}"
                          + (f" [{names[0]}]" if reason == "no pixel data" or reason.startswith("incomplete") else ""))
        # Broken files are worth a warning; localisers and reformats are expected and only recorded.
        if reason == "no pixel data" or reason.startswith("incomplete"):
            what = "without pixel data" if reason == "no pixel data" else reason
            notes.append(f"{label}: {len(names)} file(s) {what} ignored ({', '.join(names[:5])})")
    echoes: Dict[str, int] = defaultdict(int)
    for series_uid, _ in groups:
        echoes[series_uid] += 1
    stacks: List[Stack] = []
    rejected: List[StudyError] = []
    cache: Dict[int, np.ndarray] = {}
    for (series_uid, te), members in groups.items():
        first = members[0][1]
        label = _series_label(first) + (f" echo TE {te:g} ms" if echoes[series_uid] > 1 and te is not None else "")
        refs, bad, refused = [], [], []
        for name, ds in members:
            uids = _instance_uids(ds)
            try:
                planes = _planes(ds, _frame_count(ds, patient, name))
            except StudyError as e:
                refused.append(e)
                continue
            except ValueError as e:
                bad.append(f"{name}: {e}")
                rejected.append(StudyError(str(e), patient=patient, path=name))
                continue
            for plane, frame in planes:
                refs.append(SliceRef(plane, _pixel_reader(ds, frame, patient, name, clean, cache),
                                     name + (f" frame {frame + 1}" if frame is not None else ""),
                                     None if uids is None else
                                     DicomInstance(*uids, frame=None if frame is None else frame + 1)))
        if bad:
            notes.append(f"{label}: {len(bad)} file(s) without usable geometry ignored ({'; '.join(bad[:3])})")
        if refused:
            notes.append(f"{label}: {len(refused)} file(s) whose header claims more pixel data than they hold or "
                         "than the limits allow ignored (" + "; ".join(f"{e.path}: {e.problem}" for e in refused[:3])
                         + ")")
            rejected.extend(refused)
        if refs:
            stacks.extend(make_stacks(label, refs, _sequence_info(first),
                                      str(first.get("FrameOfReferenceUID", "") or "")))
    if not rejected:
        return assemble_study(patient, stacks, notes, provenance, clean)
    first_bad = rejected[0]
    more = f" (and {len(rejected) - 1} other file(s) set aside)" if len(rejected) > 1 else ""
    if not stacks:
        # Every image was set aside: the patient's error is the first file's, naming it and its problem.
        raise StudyError(first_bad.problem + more, patient=patient, path=first_bad.path)
    try:
        return assemble_study(patient, stacks, notes, provenance, clean)
    except StudyError as e:
        # The files set aside may be why too few slices were left: say so in the patient's error.
        raise StudyError(f"{e.problem}; set aside: {first_bad.path}: {first_bad.problem}{more}", patient=patient,
                         path=e.path) from None
