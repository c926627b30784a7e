"""Find the patients under an input folder, whatever their format (challenge PNGs, DICOM, NIfTI), and load each."""
from __future__ import annotations

import logging
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

from .dicom import Scrubber, hashed_study_id, looks_like_dicom, safe_name, study_uid
from .errors import StudyError
from .loader import AXIAL_DIR, SAGITTAL_DIR, find_patients, load_study, patient_id_of
from .nifti import is_nifti, load_nifti_study, nifti_stem
from .study import Study

PathLike = Union[str, Path]
log = logging.getLogger(__name__)

CHALLENGE, DICOM, NIFTI = "challenge", "dicom", "nifti"
_IGNORED_DIRS = frozenset({"__MACOSX"})
# In a BIDS root (a folder holding sub-* folders) these folders hold no subjects: derived maps (labels, masks),
# raw source files and code. Reading them as patients would fail, or take a real subject's id.
BIDS_NON_SUBJECT_DIRS = frozenset({"derivatives", "sourcedata", "code"})
# Files that sit beside images by design (BIDS sidecars and tables, the challenge's JSON): not worth a note.
_QUIET_SUFFIXES = frozenset({".json", ".tsv", ".bval", ".bvec", ".md", ".txt"})
# Folder names that exporters and scanners give to a study's contents, never a patient's name or id:
# a study folder holding only such a folder is named by itself.
# Folders named for the scans they hold, inside a patient's NIfTI folder.
_CONTENT_FOLDER = re.compile(r"(anat|nifti|nii|images?|ses-.*|(sag|ax|tra|cor|t1|t2)[a-z0-9_ -]*)", re.I)
_GENERIC_FOLDER = re.compile(r"(dicom|dcm|images?|data|files|export|series|study|studies|mri?|"
                             r"(s|se|ser|series|st|study|img|im|dir)?[ _-]?\d+)", re.I)


@dataclass(frozen=True)
class InputSource:
    """One patient found under the input folder, and how to read it."""

    kind: str                        # "challenge", "dicom" or "nifti"
    patient_id: str                  # folder name, or a hash of the StudyInstanceUID; safe as a file name
    path: Path                       # the patient's folder (or file)
    files: Tuple[Path, ...] = ()     # the DICOM or NIfTI files (empty for the challenge layout)
    root: Optional[Path] = None      # file names in messages are relative to this folder
    notes: Tuple[str, ...] = ()      # what discovery noticed (ignored files, hashed id)


def _is_challenge_patient(folder: Path) -> bool:
    """A folder with sag/ or tra/ sub-folders, unless those hold DICOM or NIfTI scans (a patient's series
    folders may be called sag/ and ax/ too)."""
    try:
        layout = [e for e in folder.iterdir() if e.is_dir() and e.name.lower() in (SAGITTAL_DIR, AXIAL_DIR)]
        return bool(layout) and not any(is_nifti(f) or looks_like_dicom(f)
                                        for d in layout for f in d.iterdir() if f.is_file())
    except OSError:
        return False


def find_inputs(root: PathLike) -> List[InputSource]:
    """Every patient under root.

    - A challenge-layout patient folder, or a folder of them: delegated to study.loader.find_patients.
    - DICOM files anywhere below root (any names, nested): grouped by StudyInstanceUID; the patient id is
      the first folder under root holding only that study (root's own name when root is the study), else
      a hash of the StudyInstanceUID; a folder named after the patient is never used.
    - NIfTI volumes (.nii, .nii.gz): one patient per BIDS subject folder (sub-*), else per folder holding
      the volumes (its parent when named for its contents, such as sag/ or ax/). In a BIDS root (a folder
      holding sub-* folders) derivatives/, sourcedata/ and code/ are not searched: they hold no subjects.
    Raises StudyError when root is missing or holds nothing readable.
    """
    root = Path(root)
    if not root.exists():
        raise StudyError("input does not exist (expected a folder of patients, one patient's folder, or a NIfTI or "
                         "DICOM file)", path=root, what="path")
    if root.is_file():
        return [_single_file(root)]
    if not root.is_dir():
        raise StudyError("input is neither a folder nor a file", path=root, what="path")
    if _is_challenge_patient(root):
        return [InputSource(CHALLENGE, patient_id_of(root), root, root=root)]

    challenge_dirs: List[Path] = []
    dicom_files: List[Path] = []
    nifti_files: List[Path] = []
    other: List[Path] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _IGNORED_DIRS)
        if any(d.startswith("sub-") for d in dirs):
            dirs[:] = [d for d in dirs if d not in BIDS_NON_SUBJECT_DIRS]
        if here != root and _is_challenge_patient(here):
            challenge_dirs.append(here)
            dirs[:] = []
            continue
        for name in sorted(files):
            if name.startswith("."):
                continue
            p = here / name
            if is_nifti(p):
                nifti_files.append(p)
            elif looks_like_dicom(p):
                dicom_files.append(p)
            elif p.suffix.lower() not in _QUIET_SUFFIXES:
                other.append(p)
    if not dicom_files and not nifti_files:
        # Only the challenge layout (or nothing): the loader finds patients and explains what is wrong.
        return [InputSource(CHALLENGE, patient_id_of(p), p, root=root) for p in find_patients(root)]

    dicom_sources, scrubbers, orphans = _dicom_sources(root, dicom_files, nifti_files, bool(challenge_dirs))
    scans = dicom_sources + _nifti_sources(root, nifti_files)
    if challenge_dirs:
        # A folder of patient folders: every entry counts, as in a batch of challenge patients only.
        challenge_dirs, orphan_sources = _unclaimed_entries(root, challenge_dirs, scans, orphans)
        scans = dicom_sources + orphan_sources + scans[len(dicom_sources):]
    elif orphans:
        log.warning("skipping %d file(s) that are not readable as DICOM", len(orphans))
    sources = [InputSource(CHALLENGE, patient_id_of(p), p, root=root) for p in challenge_dirs] + scans
    sources = _with_other_files(sources, other, root, scrubbers)
    return _unique_ids(sources)


def _unclaimed_entries(root: Path, challenge_dirs: List[Path], scans: List[InputSource], orphans: List[Path]
                       ) -> Tuple[List[Path], List[InputSource]]:
    """In a batch that holds challenge patients beside DICOM/NIfTI ones, the entries of root that no patient
    claims (an empty folder, a link that cannot be followed or that the folder walk does not enter, a folder
    of other files) become challenge patients, so the loader reports each as it does in a batch of challenge
    patients only; a folder whose only DICOM-like files are unreadable becomes a DICOM patient that fails
    naming them. Returns the challenge folders (sorted) and those DICOM sources."""
    claimed = [*challenge_dirs, *(s.path for s in scans), *(f for s in scans for f in s.files)]
    try:
        entries = find_patients(root)
    except StudyError:
        entries = []
    extra: List[Path] = []
    orphan_sources: List[InputSource] = []
    for entry in entries:
        if any(c == entry or entry in c.parents for c in claimed):
            continue
        mine = sorted(f for f in orphans if entry in f.parents)
        if mine:
            # No header could be read, so nothing says whether the folder name identifies someone: hashed id.
            orphan_sources.append(InputSource(DICOM, hashed_study_id(str(entry)), entry, tuple(mine), entry))
        else:
            extra.append(entry)
    return sorted([*challenge_dirs, *extra]), orphan_sources


def _single_file(path: Path) -> InputSource:
    if is_nifti(path):
        return InputSource(NIFTI, safe_name(nifti_stem(path)), path, (path,), path.parent)
    if looks_like_dicom(path):
        try:
            uid, _ = study_uid(path)
        except Exception:
            uid = str(path)
        return InputSource(DICOM, hashed_study_id(uid), path, (path,), path.parent)
    raise StudyError("not a folder, a NIfTI volume or a DICOM file", path=path, what="path")


def _first_part(path: Path, root: Path) -> Optional[str]:
    rel = path.relative_to(root).parts
    return rel[0] if len(rel) > 1 else None  # None: the file lies directly in root


def _dicom_sources(root: Path, files: List[Path], nifti_files: List[Path], others_here: bool
                   ) -> Tuple[List[InputSource], Dict[Path, Scrubber], List[Path]]:
    """One source per StudyInstanceUID, per source folder a scrubber of its identifying values, and the
    files that start like DICOM but do not parse and lie in no study's folder."""
    studies: Dict[str, List[Path]] = defaultdict(list)
    identifiers: Dict[str, set] = defaultdict(set)
    unreadable: List[Path] = []
    for f in files:
        try:
            uid, ids = study_uid(f)
        except Exception:
            unreadable.append(f)
            continue
        studies[uid].append(f)
        identifiers[uid].update(ids)
    if len(studies) > 1 and "" in studies:
        # Files without a StudyInstanceUID beside real studies are fragments (truncated, or not images):
        # they go with the study of their folder, whose loader reports them.
        unreadable.extend(studies.pop(""))
    # Which studies each first-level folder holds (None = files directly in root).
    per_part: Dict[Optional[str], set] = defaultdict(set)
    for uid, fs in studies.items():
        for f in fs:
            per_part[_first_part(f, root)].add(uid)
    nifti_parts = {_first_part(f, root) for f in nifti_files}
    sources: List[InputSource] = []
    scrubbers: Dict[Path, Scrubber] = {}
    for uid, fs in studies.items():
        parts = {_first_part(f, root) for f in fs}
        notes: List[str] = []
        name: Optional[str] = None
        folder = root
        only_part = next(iter(parts)) if len(parts) == 1 and None not in parts else None
        if len(studies) == 1 and not nifti_files and not others_here and \
                (only_part is None or _GENERIC_FOLDER.fullmatch(only_part)):
            # root is the study itself (its series may sit in nested folders with any names).
            name = Path(os.path.abspath(root)).name
        elif only_part is not None:
            part = only_part
            folder = root / part
            if per_part[part] == {uid} and part not in nifti_parts:
                name = part
        if name is not None and Scrubber(identifiers[uid]).identifies(name):
            notes.append("the folder name contains identifying values; a hashed patient id is used")
            name = None
        pid = safe_name(name) if name is not None else hashed_study_id(uid or str(folder))
        if not uid:
            notes.append("the files carry no StudyInstanceUID; grouped as one study")
        sources.append(InputSource(DICOM, pid, folder, tuple(sorted(fs)), root, tuple(notes)))
        scrubbers[folder] = Scrubber(set(identifiers[uid]) | (set(scrubbers[folder].values)
                                                             if folder in scrubbers else set()))
    orphans: List[Path] = []
    # Files that start like DICOM but do not parse: report them with the study of their folder.
    for f in unreadable:
        owners = [k for k, s in enumerate(sources) if s.path in f.parents]
        if owners:
            k = max(owners, key=lambda k: len(sources[k].path.parts))   # the deepest folder holding it
            s = sources[k]
            sources[k] = InputSource(s.kind, s.patient_id, s.path, s.files + (f,), s.root, s.notes)
        else:
            orphans.append(f)
    return sources, scrubbers, orphans


def _nifti_unit(f: Path, root: Path) -> Path:
    """The patient folder of a NIfTI file: the nearest BIDS subject folder (sub-*), else the folder holding the
    file, or its parent when that folder is named for its contents (anat/, sag/, ax_t2/ ...)."""
    for parent in [f.parent, *f.parent.parents]:
        if parent.name.startswith("sub-"):
            return parent
        if parent == root:
            break
    unit = f.parent
    while unit != root and _CONTENT_FOLDER.fullmatch(unit.name) and root in unit.parents:
        unit = unit.parent
    return unit


def _nifti_sources(root: Path, files: List[Path]) -> List[InputSource]:
    units: Dict[Path, List[Path]] = defaultdict(list)
    for f in files:
        units[_nifti_unit(f, root)].append(f)
    out = []
    for unit, fs in sorted(units.items()):
        name = unit.name if unit != root else Path(os.path.abspath(root)).name
        out.append(InputSource(NIFTI, safe_name(name), unit, tuple(sorted(fs)), root))
    return out


def _with_other_files(sources: List[InputSource], other: List[Path], root: Path,
                      scrubbers: Dict[Path, Scrubber]) -> List[InputSource]:
    """Tell each DICOM/NIfTI patient which files in its folder were not images (they are skipped); file
    names are scrubbed of the study's identifying values (folders are often named after the patient)."""
    out = []
    for s in sources:
        if s.kind == CHALLENGE:
            out.append(s)
            continue
        mine = [o for o in other if s.path in o.parents and
                not any(t is not s and t.path != s.path and t.path in o.parents and s.path in t.path.parents
                        for t in sources)]
        if mine:
            names = [o.relative_to(root).as_posix() for o in mine]
            note = (f"{len(mine)} file(s) that are neither DICOM nor NIfTI ignored: {', '.join(names[:5])}"
                    + (" ..." if len(names) > 5 else ""))
            if s.kind == DICOM and s.path in scrubbers:
                note = scrubbers[s.path](note)
            s = InputSource(s.kind, s.patient_id, s.path, s.files, s.root, s.notes + (note,))
        out.append(s)
    return out


def _unique_ids(sources: List[InputSource]) -> List[InputSource]:
    counts = Counter(s.patient_id for s in sources)
    seen: Dict[str, int] = defaultdict(int)
    out = []
    for s in sources:
        pid = s.patient_id
        if counts[pid] > 1:
            seen[pid] += 1
            if seen[pid] > 1:
                pid = f"{pid}-{s.kind}" if seen[pid] == 2 else f"{pid}-{seen[pid]}"
        out.append(InputSource(s.kind, pid, s.path, s.files, s.root, s.notes))
    return out


def private_path(path: PathLike, sources: List[InputSource]) -> str:
    """`path` as it may appear in an output: any part that holds a DICOM patient's identifying values (a study
    folder named after the patient, say) is redacted. One header per study is read again for its values."""
    values: set = set()
    for s in sources:
        if s.kind == DICOM:
            for f in s.files:
                try:
                    values.update(study_uid(f)[1])
                    break
                except Exception:  # not readable as DICOM: try the next file
                    continue
    return Scrubber(values)(str(path))


def load_input(source: InputSource, require_all_axial: bool = False) -> Study:
    """Load one patient as a Study; raises StudyError naming the patient (and the file, where one is at fault).

    DICOM and NIfTI studies come back with their axial slices pending in `Study.pending_axial`: call
    study.axial_match.attach_axials(study, level_boxes) once the detector has placed the levels.
    require_all_axial applies to the challenge layout only (see study.loader.load_study).
    """
    try:
        if source.kind == CHALLENGE:
            return load_study(source.path, require_all_axial=require_all_axial, root=source.root)
        if source.kind == DICOM:
            from .dicom import load_dicom_study
            return load_dicom_study(source.files, source.patient_id, source.root, source.notes)
        if source.kind == NIFTI:
            return load_nifti_study(source.files, source.patient_id, source.root, source.notes)
    except StudyError:
        raise
    except Exception as e:  # never a raw exception out of a loader
        log.debug("unexpected error loading %s", source.patient_id, exc_info=True)
        # DICOM messages may quote tag values (the DICOM loader scrubs its own); NIfTI headers hold none.
        detail = f": {e}" if source.kind in (NIFTI, CHALLENGE) else ""
        raise StudyError(f"unexpected error ({type(e).__name__}{detail})", patient=source.patient_id) from None
    raise StudyError(f"unknown input kind {source.kind!r}", patient=source.patient_id)


def load_inputs(root: PathLike, require_all_axial: bool = False
                ) -> Iterator[Tuple[InputSource, Union[Study, StudyError]]]:
    """(source, Study or StudyError) for every patient under root, in find_inputs order; a bad patient never
    stops the batch. An unusable root raises StudyError at the call, not at the first next()."""
    sources = find_inputs(root)

    def each():
        for s in sources:
            try:
                yield s, load_input(s, require_all_axial)
            except StudyError as e:
                yield s, e

    return each()
