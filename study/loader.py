"""Load challenge-layout patients ({id}/sag/{5,6,7}.png, {id}/tra/{2,2-3,...,7}.png) into Study objects."""
from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import StudyError
from .fov import describe_padding, padding_mask
from .levels import CANAL_POSITIONS, IMAGE_SIZE, SAGITTAL_SLICES, axial_file_stem
from .study import Study, complete_sagittal

PathLike = Union[str, Path]
log = logging.getLogger(__name__)

SAGITTAL_DIR = "sag"
AXIAL_DIR = "tra"
IMAGE_SUFFIX = ".png"
# Accepted with a warning when the .png itself is absent: some exports re-encode the images.
OTHER_IMAGE_SUFFIXES: Tuple[str, ...] = (".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Far above any MRI slice, far below what would exhaust memory: larger headers are refused before
# decoding, since a tiny PNG can claim gigapixels (decompression bomb).
MAX_PIXELS = 50_000_000
# Litter from archivers and file browsers; never a patient or an image.
_IGNORED_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})
# PIL's own Image.open. Importing ultralytics (the detector) replaces PIL.Image.open with a wrapper that,
# whenever PIL cannot identify a file, tries to import or pip-install a HEIF plugin: a file that is not an
# image then failed as "No module named 'pi_heif'" instead of "not an image". User files never go through it.
_pil_open = Image.open if getattr(Image.open, "__module__", "") == Image.__name__ else \
    getattr(sys.modules.get("ultralytics.utils.patches"), "_image_open", Image.open)
_HIGH_DEPTH_MODES = {"I;16": "16-bit", "I;16L": "16-bit", "I;16B": "16-bit", "I;16N": "16-bit",
                     "I": "32-bit integer", "F": "floating-point"}


@dataclass(frozen=True)
class StudyReport:
    """What inspecting one patient folder found: the Study when usable, else every error at once."""

    patient_id: str
    path: Path
    study: Optional[Study] = field(repr=False)
    errors: Tuple[StudyError, ...]
    warnings: Tuple[str, ...]
    sagittal_found: int  # sagittal images that loaded
    axial_found: int     # axial images that loaded

    @property
    def usable(self) -> bool:
        return self.study is not None


# ----------------------------------------------------------------------------------------------
# Finding patients
# ----------------------------------------------------------------------------------------------

def patient_id_of(patient_dir: PathLike) -> str:
    """The patient id: the folder's own name (abspath, not resolve, so '.' works and links keep their name).

    A name that is not valid UTF-8 keeps its bad bytes as \\xNN escapes, so the id is printable text that
    JSON and HTML can carry (Python would otherwise hold it with lone surrogates).
    """
    name = Path(os.path.abspath(patient_dir)).name
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def find_patients(root: PathLike) -> List[Path]:
    """The patient folders under `root`: [root] itself when it has sag/ or tra/, else its sub-folders.

    Sub-folders are sorted by name; hidden entries and plain files (labels.json, boxes.json) are
    ignored. Every other sub-folder counts as a patient, so a broken one is reported, not skipped;
    so does a link that cannot be followed (dangling, or a loop). A link to root or to a folder
    already listed is skipped with a warning (it would read the same patient twice).
    Raises StudyError when root does not exist, is not a folder, or holds no patient folder.
    """
    root = Path(root)
    if not root.exists():
        raise StudyError("input folder does not exist", path=root, what="folder")
    if not root.is_dir():
        raise StudyError("input is not a folder; expected a patient folder or a folder of patients",
                         path=root, what="path")
    entries = _entries(root, None)
    if _layout_dir(entries, SAGITTAL_DIR) or _layout_dir(entries, AXIAL_DIR):
        return [root]
    try:
        visited = {root.resolve(strict=True)}
    except (OSError, RuntimeError) as e:
        raise StudyError(f"cannot resolve the input folder ({_reason(e)})", path=root, what="folder") from None
    patients: List[Path] = []
    for entry in entries:
        if not entry.is_dir():  # False for files, broken links and link loops alike
            if entry.is_symlink() and not entry.exists():
                patients.append(entry)  # a patient's folder may have moved: report it, never drop it
            continue
        try:
            real = entry.resolve(strict=True)
        except (OSError, RuntimeError) as e:
            log.warning("skipping %s: cannot resolve it (%s)", entry, _reason(e))
            continue
        # A link back to the root or to a folder already listed would read one patient twice.
        if real in visited:
            log.warning("skipping %s: it links to %s, which is already included", entry, real)
            continue
        visited.add(real)
        patients.append(entry)
    if not patients:
        if _loose_images(entries):
            raise StudyError("holds images but no sag/ or tra/ folder; expected "
                             f"{_layout_hint()}", path=root)
        raise StudyError(f"holds no patient folder; expected {_layout_hint()}, or a folder of such "
                         "patient folders", path=root)
    return patients


# ----------------------------------------------------------------------------------------------
# Loading one patient
# ----------------------------------------------------------------------------------------------

def load_study(patient_dir: PathLike, require_all_axial: bool = True, root: Optional[PathLike] = None) -> Study:
    """Load one challenge-layout patient; raises one StudyError naming the patient and the file.

    With require_all_axial=False a missing or unusable axial image only warns and its position is
    left out of Study.axial. An absent sagittal slice is replaced by the nearest one present (a warning;
    Study.sagittal_standins); no sagittal image at all, or one that is there but unreadable, is an error.
    With `root` (the input folder), file names in Study.sources and in errors are relative to it.
    """
    report = inspect_study(patient_dir, require_all_axial, root)
    if report.study is None:
        first = report.errors[0]
        more = len(report.errors) - 1
        if more:
            # Fail on the first problem, but say there are more so the user runs `validate`.
            raise StudyError(f"{first.problem} (and {more} more problem(s); run `pipeline.py validate` "
                             "to list them)", patient=first.patient, path=first.path)
        raise first
    return report.study


def inspect_study(patient_dir: PathLike, require_all_axial: bool = True,
                  root: Optional[PathLike] = None) -> StudyReport:
    """Check one patient folder and load what it can; never raises StudyError (errors are collected).

    With `root` (the input folder the patient was found under) every file name in Study.sources and in the
    errors is relative to it, as the DICOM loader's are: reports and errors.json then carry nothing of the
    folders above the input (whose names may identify someone). Without it they are the paths as given.
    """
    check = _FolderCheck(Path(patient_dir), require_all_axial, root)
    layout = check.layout()
    if layout is not None:
        sag_dir, tra_dir = layout
        check.read_sagittal(sag_dir)
        check.read_axial(tra_dir)
        check.note_formats()
    return check.report()


class _FolderCheck:
    """What inspect_study collects about one patient folder: errors, notes, images and where they came from."""

    def __init__(self, patient_dir: Path, require_all_axial: bool, root: Optional[PathLike]):
        self.patient_dir, self.require_all_axial, self.root = patient_dir, require_all_axial, root
        self.pid = patient_id_of(patient_dir)
        self.errors: List[StudyError] = []
        self.notes: List[str] = []
        self.sagittal: Dict[int, np.ndarray] = {}
        self.axial: Dict[str, np.ndarray] = {}
        self.sources: Dict[str, str] = {}
        self.blank: List[str] = []   # read, but every pixel has one value (read_image has said so in a note)
        # Images stored in another format than PNG: format -> [(file, used in place of a missing .png)], said
        # once per format and patient (note_formats), not once or twice per file.
        self.formats: Dict[str, List[Tuple[str, bool]]] = {}

    def shown(self, path: Path) -> str:
        """A file name as outputs show it: relative to the input root when one was given."""
        if self.root is None:
            return str(path)
        for base in (Path(self.root), self.patient_dir.parent):
            try:
                rel = path.relative_to(base).as_posix()
            except ValueError:
                continue
            return self.pid if rel == "." else rel
        return path.name

    def rel(self, path: Path) -> str:
        return _relative(path, self.patient_dir)

    def error(self, message: str, path: Path, what: str = "file") -> None:
        self.errors.append(StudyError(message, patient=self.pid, path=path, what=what))

    def image_notes(self, path: Path, found_note: Optional[str], notes: List[str]) -> None:
        """A read image's notes; its format, when not PNG, is kept for note_formats."""
        name = self.rel(path)
        fmt = next((m.group(1) for n in notes for m in [_FORMAT_NOTE.fullmatch(n[len(name) + 2:])] if m), None)
        if fmt is not None:
            self.formats.setdefault(fmt, []).append((name, found_note is not None and "in place of" in found_note))
            notes = [n for n in notes if not _FORMAT_NOTE.fullmatch(n[len(name) + 2:])]
            if found_note is not None and "in place of" in found_note:
                found_note = None            # said by the format note
        if found_note:
            self.notes.append(f"{name}: {found_note}")
        self.notes.extend(notes)

    def note_formats(self) -> None:
        """One note per image format other than PNG, naming the format and its files."""
        for fmt, files in self.formats.items():
            names = [n for n, _ in files]
            shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
            instead = ", read in place of the missing .png files" if all(sub for _, sub in files) else ""
            self.notes.append(f"{len(names)} image(s) stored as {fmt}, not PNG{instead}: {shown}")

    def report(self) -> StudyReport:
        study = None
        if not self.errors:
            # A challenge PNG has no geometry: its field of view is what is not zero padding.
            fov = {s: padding_mask(image) for s, image in self.sagittal.items()}
            for s, mask in fov.items():
                if not mask.all():
                    self.notes.append(f"{self.shown(Path(self.sources[f'{SAGITTAL_DIR}/{s}']))}: "
                                      f"{describe_padding(mask)} are padding (exactly 0), outside the field of view")
            sagittal, fov, standins, standin_notes = complete_sagittal(self.sagittal, fov, f"{SAGITTAL_DIR}/")
            self.notes.extend(standin_notes)
            study = Study(patient_id=self.pid, sagittal=sagittal, axial=self.axial,
                          sources={k: self.shown(Path(v)) for k, v in self.sources.items()},
                          warnings=tuple(self.notes), blank_images=tuple(self.blank), sagittal_fov=fov,
                          sagittal_standins=standins)
        shown_errors = tuple(e if e.path is None or self.root is None else
                             StudyError(e.problem, patient=e.patient, path=self.shown(Path(e.path)), what=e.what)
                             for e in self.errors)
        return StudyReport(self.pid, self.patient_dir, study, shown_errors, tuple(self.notes), len(self.sagittal),
                           len(self.axial))

    def layout(self) -> Optional[Tuple[Optional[Path], Optional[Path]]]:
        """(sag folder, tra folder), either possibly None; None when the folder holds no patient layout at all."""
        patient_dir = self.patient_dir
        if not patient_dir.exists():
            if patient_dir.is_symlink():
                self.error(f"symbolic link that cannot be followed ({_stat_reason(patient_dir)})", patient_dir,
                           "path")
            else:
                self.error("patient folder does not exist", patient_dir, "folder")
            return None
        if not patient_dir.is_dir():
            self.error("not a folder; expected a patient folder with sag/ and tra/", patient_dir, "path")
            return None
        try:
            entries = _entries(patient_dir, self.pid)
        except StudyError as e:
            self.errors.append(e)
            return None
        if not entries:
            self.error(f"patient folder is empty; expected {_layout_hint()}", patient_dir, "folder")
            return None
        sag_dir = _layout_dir(entries, SAGITTAL_DIR)
        tra_dir = _layout_dir(entries, AXIAL_DIR)
        if sag_dir is None and tra_dir is None:
            loose = _loose_images(entries)
            if loose:
                self.error(f"images lie directly in the patient folder ({_names(loose)}); expected {_layout_hint()}",
                           patient_dir, "folder")
            elif any(_layout_dir(_entries_quiet(e), SAGITTAL_DIR) for e in entries if e.is_dir()):
                self.error("looks like a folder of patients, not one patient; point --input at it as a batch",
                           patient_dir, "folder")
            else:
                self.error(f"no sag/ or tra/ folder (found {_names(entries)}); expected {_layout_hint()}",
                           patient_dir, "folder")
            return None
        for found, expected in ((sag_dir, SAGITTAL_DIR), (tra_dir, AXIAL_DIR)):
            if found is not None and found.name != expected:
                self.notes.append(f"{self.rel(found)}: folder named {found.name!r}, expected {expected!r}")
        unexpected = [e for e in entries if e not in (sag_dir, tra_dir)]
        if unexpected:
            self.notes.append(f"{self.pid}/: unexpected entries ignored: {_names(unexpected)}")
        return sag_dir, tra_dir

    def read_sagittal(self, sag_dir: Optional[Path]) -> None:
        """Sagittal slices: at least one is required. An absent slice is replaced by the nearest one present
        (study.study.complete_sagittal, with a warning); a file that is there but unreadable is an error."""
        if sag_dir is None:
            self.error(f"sagittal folder {SAGITTAL_DIR}/ is missing", self.patient_dir / SAGITTAL_DIR, "folder")
            return
        try:
            sag_entries = _entries(sag_dir, self.pid)
        except StudyError as e:
            self.errors.append(e)
            return
        used: List[Path] = []
        for s in SAGITTAL_SLICES:
            path, note = _find_image(sag_entries, str(s))
            if path is None:
                continue
            used.append(path)
            try:
                image, image_notes = read_image(path, patient=self.pid, name=self.rel(path))
            except StudyError as e:
                if note:
                    self.notes.append(f"{self.rel(path)}: {note}")
                self.errors.append(e)
                continue
            self.sagittal[s] = image
            self.sources[f"{SAGITTAL_DIR}/{s}"] = str(path)
            if Study.is_blank(image):
                self.blank.append(f"{SAGITTAL_DIR}/{s}")
            self.image_notes(path, note, image_notes)
        if not used:
            self.error(f"no sagittal image: expected at least one of {_names_hint(SAGITTAL_DIR, SAGITTAL_SLICES)}",
                       sag_dir)
        _note_unexpected(sag_entries, used, sag_dir, self.rel, self.notes)

    def axial_problem(self, message: str, path: Path) -> None:
        """Axial images are required, or else left out with a warning (later stages grade from sagittal)."""
        if self.require_all_axial:
            self.error(message, path)
        else:
            self.notes.append(f"{self.rel(path)}: {message}; left out")

    def read_axial(self, tra_dir: Optional[Path]) -> None:
        if tra_dir is None:
            self.axial_problem(f"axial folder {AXIAL_DIR}/ is missing (all {len(CANAL_POSITIONS)} positions)",
                               self.patient_dir / AXIAL_DIR)
            return
        try:
            tra_entries = _entries(tra_dir, self.pid)
        except StudyError as e:
            self.axial_problem(e.problem, tra_dir)
            return
        used: List[Path] = []
        for position in CANAL_POSITIONS:
            stem = axial_file_stem(position)
            path, note = _find_image(tra_entries, stem)
            if path is None:
                self.axial_problem(f"missing axial image for {position}", tra_dir / f"{stem}{IMAGE_SUFFIX}")
                continue
            used.append(path)
            try:
                image, image_notes = read_image(path, patient=self.pid, name=self.rel(path))
            except StudyError as e:
                if note:
                    self.notes.append(f"{self.rel(path)}: {note}")
                self.axial_problem(e.problem, path)
                continue
            self.axial[position] = image
            self.sources[f"{AXIAL_DIR}/{position}"] = str(path)
            if Study.is_blank(image):
                self.blank.append(f"{AXIAL_DIR}/{position}")
            self.image_notes(path, note, image_notes)
        _note_unexpected(tra_entries, used, tra_dir, self.rel, self.notes)


# ----------------------------------------------------------------------------------------------
# Reading one image
# ----------------------------------------------------------------------------------------------

def present_slices(patient_dir: PathLike) -> Tuple[int, ...]:
    """The sagittal slices a challenge-layout patient folder holds as files (sag/{5,6,7}.png)."""
    folder = Path(patient_dir) / SAGITTAL_DIR
    return tuple(s for s in SAGITTAL_SLICES if (folder / f"{s}{IMAGE_SUFFIX}").is_file())


def read_image(path: PathLike, patient: Optional[str] = None, name: Optional[str] = None,
               size: int = IMAGE_SIZE) -> Tuple[np.ndarray, List[str]]:
    """Read one image as a (size, size) float32 array in [0, 1], plus warnings naming the file.

    8-bit grayscale is divided by 255; 16-bit/32-bit/float is rescaled from its minimum to its 99.9th
    percentile (clipped); colour and palette images become luminance; other sizes are resized.
    Anything unreadable raises StudyError(patient=patient, path=path); no PIL/OS error escapes.
    """
    path = Path(path)
    name = name or str(path)

    def fail(message: str) -> StudyError:
        return StudyError(message, patient=patient, path=path)

    if path.is_dir():
        raise fail("is a folder, not an image")
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise fail("file not found (or a broken link)") from None
    except PermissionError:
        raise fail("cannot read file: permission denied") from None
    except OSError as e:
        raise fail(f"cannot read file ({_reason(e)})") from None

    notes: List[str] = []
    with handle, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            img = _pil_open(handle)
        except Image.DecompressionBombError as e:
            raise fail(f"image too large to decode safely ({e})") from None
        except UnidentifiedImageError:
            raise fail("not an image (expected an 8-bit grayscale PNG)") from None
        except Exception as e:  # PIL raises SyntaxError, ValueError, OSError... on broken headers
            raise fail(f"cannot open image ({type(e).__name__}: {e})") from None
        with img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise fail(f"image claims {width}x{height} pixels, above the {MAX_PIXELS // 1_000_000} MP "
                           "limit; not decoded (possible decompression bomb)")
            if width < 1 or height < 1:
                raise fail(f"image has no pixels ({width}x{height})")
            try:
                # PIL decodes lazily: force the full decode here so truncation surfaces as our error.
                img.load()
                image, mode_notes = _to_unit_gray(img)
            except StudyError as e:
                raise fail(e.problem) from None
            except Exception as e:  # truncated data, bad CRC, zlib errors, MemoryError...
                raise fail(f"image data is corrupt or truncated ({type(e).__name__}: {e})") from None
            if img.format != "PNG":
                notes.append(f"{name}: stored as {img.format or 'an unknown format'}, not PNG")
            if getattr(img, "n_frames", 1) > 1:
                notes.append(f"{name}: holds {img.n_frames} frames; only the first is used")
    notes.extend(f"{name}: {n}" for n in mode_notes)
    for w in caught:
        if not issubclass(w.category, Image.DecompressionBombWarning):  # covered by MAX_PIXELS
            notes.append(f"{name}: decoder warning: {w.message}")

    if image.shape != (size, size):
        notes.append(f"{name}: {width}x{height} image resized to {size}x{size}"
                     + ("" if width == height else " (aspect ratio not kept)"))
        image = _resize(image, size)
    return np.require(image, np.float32, ["C", "W"]), notes


def _to_unit_gray(img: Image.Image) -> Tuple[np.ndarray, List[str]]:
    """A decoded PIL image as a 2-D float32 array in [0, 1], with notes on any conversion."""
    mode = img.mode
    notes: List[str] = []
    if mode == "L":
        raw = np.asarray(img)
        image = raw.astype(np.float32) / 255.0
    elif mode in _HIGH_DEPTH_MODES:
        raw = np.asarray(img).astype(np.float64)
        image, lo, hi, n_bad = _robust_rescale(raw)
        notes.append(f"{_HIGH_DEPTH_MODES[mode]} image (mode {mode}) rescaled to [0, 1] from "
                     f"[{lo:g}, {hi:g}] (minimum to 99.9th percentile, clipped)")
        if n_bad:
            notes.append(f"{n_bad} non-finite pixel(s) set to 0")
    elif mode in ("LA", "La"):
        raw = np.asarray(img.getchannel("L"))
        image = raw.astype(np.float32) / 255.0
        notes.append(f"grayscale image with alpha (mode {mode}); alpha ignored")
    elif mode == "1":
        raw = np.asarray(img.convert("L"))
        image = raw.astype(np.float32) / 255.0
        notes.append("1-bit (black and white) image")
    else:
        try:
            gray = img.convert("L")
        except Exception:
            try:  # some modes (CMYK, LAB, HSV) convert to L only by way of RGB
                gray = img.convert("RGB").convert("L")
            except Exception as e:
                raise StudyError(f"unsupported image mode {mode} ({e})") from None
        raw = np.asarray(gray)
        image = raw.astype(np.float32) / 255.0
        same = ""
        if mode in ("RGB", "RGBA", "RGBX"):
            channels = np.asarray(img)[..., :3]
            if np.array_equal(channels[..., 0], channels[..., 1]) and \
                    np.array_equal(channels[..., 1], channels[..., 2]):
                same = " (its colour channels are identical, so nothing was lost)"
        notes.append(f"{mode} image converted to grayscale luminance{same}")
    if raw.ndim != 2:
        raise StudyError(f"unexpected image shape {raw.shape} for mode {mode}")
    finite = raw[np.isfinite(raw)] if raw.dtype.kind == "f" else raw
    if finite.size and finite.min() == finite.max():
        notes.append(f"all pixels have the same value ({finite.flat[0]:g}); the image carries no information")
    return image.astype(np.float32, copy=False), notes


def _robust_rescale(raw: np.ndarray) -> Tuple[np.ndarray, float, float, int]:
    """Map [min, 99.9th percentile] to [0, 1], clipped; a few hot pixels must not darken the image."""
    finite = np.isfinite(raw)
    n_bad = int(raw.size - np.count_nonzero(finite))
    values = raw[finite]
    if values.size == 0:
        return np.zeros(raw.shape, np.float32), 0.0, 0.0, n_bad
    lo = float(values.min())
    hi = float(np.percentile(values, 99.9))
    if hi <= lo:  # most pixels equal: fall back to the full range
        hi = float(values.max())
    if hi <= lo:
        return np.zeros(raw.shape, np.float32), lo, hi, n_bad
    out = np.clip((np.where(finite, raw, lo) - lo) / (hi - lo), 0.0, 1.0)
    return out.astype(np.float32), lo, hi, n_bad


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    height, width = image.shape
    # Area averaging when shrinking (no aliasing), bilinear when enlarging.
    resample = Image.Resampling.BOX if width >= size and height >= size else Image.Resampling.BILINEAR
    out = np.asarray(Image.fromarray(np.ascontiguousarray(image, np.float32)).resize((size, size), resample))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Folder helpers
# ----------------------------------------------------------------------------------------------

def _is_ignored(name: str) -> bool:
    return name.startswith(".") or name in _IGNORED_NAMES


def _entries(folder: Path, patient: Optional[str]) -> List[Path]:
    """Visible entries of a folder, sorted by name; StudyError when it cannot be listed."""
    try:
        names = os.listdir(folder)
    except OSError as e:
        raise StudyError(f"cannot list folder ({_reason(e)})", patient=patient, path=folder, what="folder") from None
    return [folder / n for n in sorted(names) if not _is_ignored(n)]


def _entries_quiet(folder: Path) -> List[Path]:
    try:
        return _entries(folder, None)
    except StudyError:
        return []


def _layout_dir(entries: Sequence[Path], name: str) -> Optional[Path]:
    """The sub-folder called `name`, matched exactly first, then ignoring case (SAG/, Tra/)."""
    for exact in (True, False):
        for e in entries:
            if (e.name == name if exact else e.name.lower() == name) and e.is_dir():
                return e
    return None


_FORMAT_NOTE = re.compile(r"stored as (.+), not PNG")


def _find_image(entries: Sequence[Path], stem: str) -> Tuple[Optional[Path], Optional[str]]:
    """The image for `stem`: '{stem}.png', else the same name in another case or image suffix."""
    wanted = stem + IMAGE_SUFFIX
    for e in entries:
        if e.name == wanted:
            return e, None
    for e in entries:
        if e.name.lower() == wanted:
            return e, f"named {e.name!r}, expected {wanted!r}"
    for e in entries:
        if e.stem == stem and e.suffix.lower() in OTHER_IMAGE_SUFFIXES:
            return e, f"used in place of the missing {wanted!r}"
    return None, None


def _loose_images(entries: Sequence[Path]) -> List[Path]:
    suffixes = (IMAGE_SUFFIX,) + OTHER_IMAGE_SUFFIXES
    return [e for e in entries if e.suffix.lower() in suffixes and not e.is_dir()]


def _note_unexpected(entries: Sequence[Path], used: Sequence[Path], folder: Path, rel, notes: List[str]) -> None:
    extra = [e for e in entries if e not in used]
    if extra:
        notes.append(f"{rel(folder)}: unexpected entries ignored: {_names(extra)}")


def _names(paths: Sequence[Path], limit: int = 6) -> str:
    names = [p.name + ("/" if p.is_dir() else "") for p in paths[:limit]]
    if len(paths) > limit:
        names.append(f"... {len(paths) - limit} more")
    return ", ".join(names)


def _relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def _names_hint(folder: str, stems) -> str:
    return f"{folder}/{{{','.join(map(str, stems))}}}{IMAGE_SUFFIX}"


def _layout_hint() -> str:
    return (f"{SAGITTAL_DIR}/{{{','.join(map(str, SAGITTAL_SLICES))}}}{IMAGE_SUFFIX} and "
            f"{AXIAL_DIR}/{{{','.join(axial_file_stem(p) for p in CANAL_POSITIONS)}}}{IMAGE_SUFFIX}")


def _stat_reason(path: Path) -> str:
    """Why following `path` fails: a link loop, a missing target..."""
    try:
        os.stat(path)
    except OSError as e:
        return _reason(e)
    return "unknown reason"


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or f"{type(e).__name__}: {e}"
