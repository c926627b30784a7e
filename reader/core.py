"""Reader: the three stages loaded once, and the reading of a batch of studies into typed results and failures."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np

from detector.boxes import LevelBoxes
from study.errors import InputError, StudyError
from study.inputs import InputSource, load_input
from study.study import Study

from .clock import StageClock

PathLike = Union[str, Path]
BOXES_GIVEN, BOXES_DETECTED = "given", "detector"
T = TypeVar("T")


class ReaderError(Exception):
    """The weights cannot be used (manifest mismatch, a stage that does not load): nothing can be read."""


@dataclass(frozen=True)
class PatientResult:
    """One patient read: each stage's hand-off and the report built from them."""

    study: Study
    boxes: "LevelBoxes"
    crops: object          # classifier.crops.LevelCrops
    grades: object         # classifier.predict.LevelGrades
    curve: object          # fusion.model.CurveAssessment
    report: object         # report.patient.PatientReport

    @property
    def patient_id(self) -> str:
        return self.study.patient_id


@dataclass(frozen=True)
class PatientFailure:
    """One patient that could not be read: the stage that failed and the message errors.json shows."""

    patient_id: str
    stage: str             # "load", "boxes", "detector", "cropping", "classifier", "report"
    message: str


Outcome = Union[PatientResult, PatientFailure]


@dataclass(frozen=True)
class GivenBoxes:
    """Vertebra boxes given instead of the detector (oracle mode): the box file's patients and its unusable rows."""

    boxes: Mapping[str, object]       # patient id -> study.challenge.PatientBoxes
    errors: Mapping[str, str]         # patient id -> why its row is unusable

    @classmethod
    def read(cls, path: PathLike) -> "GivenBoxes":
        """Read a challenge box file (raises InputError when the file itself is unusable)."""
        from study.challenge import read_box_file
        contents = read_box_file(path)
        return cls(contents.by_id(), {e.patient: str(e) for e in contents.errors if e.patient})

    def for_patient(self, patient_id: str) -> Union[LevelBoxes, str]:
        if patient_id in self.boxes:
            return LevelBoxes.from_patient_boxes(self.boxes[patient_id])
        return self.errors.get(patient_id, "no boxes for this patient in the box file")


class _Failed:
    """A stage's failure for one patient, carried to the end of the batch."""

    def __init__(self, stage: str, message: str):
        self.stage, self.message = stage, message


def _guarded(fn: Callable[[], T], stage: str) -> Union[T, _Failed]:
    try:
        return fn()
    except Exception as e:  # one patient's failure stays its own
        return _Failed(stage, f"{stage} failed: {type(e).__name__}: {e}")


def _isolated(batch_fn, single_fn, items: Sequence, stage: str) -> list:
    """A stage on the whole batch; if the batch call fails, item by item, so that only the culprit fails."""
    if not items:
        return []
    try:
        return list(batch_fn(items))
    except Exception:
        return [_guarded(lambda it=it: single_fn(it), stage) for it in items]


class Reader:
    """Detector, classifier and fusion model, loaded once after the weights manifest is verified."""

    def __init__(self, detector, classifier, fusion, review_min_confidence: float,
                 clock: Optional[StageClock] = None, weights_dir: Optional[Path] = None):
        self.detector = detector
        self.classifier = classifier
        self.fusion = fusion
        # A vertebra found with less confidence than the detector's own warn_confidence sends the patient to
        # human review (see detector.config.DetectorConfig.warn_confidence for how it was measured).
        self.review_min_confidence = review_min_confidence
        self.clock = clock or StageClock()
        self.weights_dir = weights_dir

    @classmethod
    def from_weights(cls, weights_dir: PathLike, device: str = "cpu", detector: bool = True,
                     clock: Optional[StageClock] = None, tta: bool = False) -> "Reader":
        """Verify weights_dir/MANIFEST.json, then load the stages (detector=False: boxes will be given; tta: the
        classifier averages shifted and scaled views of each crop). A classifier folder holding a K-fold
        ensemble (classifier.folds) loads every fold and averages their probabilities.

        Raises ReaderError when the weights are unusable.
        """
        passive_openmp_waiting()
        check_device(device)
        from classifier.predict import Classifier
        from detector.config import DetectorConfig
        from fusion.model import load_fusion
        from release.manifest import STAGES, WeightsError, verify_manifest

        weights_dir = Path(weights_dir)
        try:
            verify_manifest(weights_dir, STAGES if detector else STAGES[1:])
        except WeightsError as e:
            raise ReaderError(str(e)) from None
        det = None
        if detector:
            from detector.predict import Detector
            det = Detector.from_weights(weights_dir / "detector", device=device)
        review = det.config.warn_confidence if det is not None else DetectorConfig().warn_confidence
        return cls(det, Classifier.load(weights_dir / "classifier", device, tta=tta), load_fusion(weights_dir / "fusion"),
                   review, clock, weights_dir)

    # ----------------------------------------------------------------------------------------------
    def load(self, sources: Sequence[InputSource]) -> List[Union[Study, PatientFailure]]:
        """Each input loaded as a Study, or the failure naming the file and the problem."""
        out: List[Union[Study, PatientFailure]] = []
        with self.clock("load images"):
            for source in sources:
                try:
                    out.append(load_input(source))
                except StudyError as e:
                    out.append(PatientFailure(source.patient_id, "load", str(e)))
        return out

    def read_sources(self, sources: Sequence[InputSource], given: Optional[GivenBoxes] = None) -> List[Outcome]:
        """load() then read() the loaded ones; one outcome per source, in the sources' order."""
        loaded = self.load(sources)
        read = iter(self.read([s for s in loaded if isinstance(s, Study)], given))
        return [s if isinstance(s, PatientFailure) else next(read) for s in loaded]

    def read(self, studies: Sequence[Study], given: Optional[GivenBoxes] = None) -> List[Outcome]:
        """Read a batch: one PatientResult or PatientFailure per study, in order.

        given: vertebra boxes to use instead of the detector (oracle mode). The networks see the whole batch at
        once; a batch call that fails is retried patient by patient, so only the culprit fails.
        """
        from study.axial_match import attach_axials

        if given is not None:
            boxes_list = [_guarded(lambda st=st: given.for_patient(st.patient_id), "boxes") for st in studies]
            # A stand-in slice shows its source's image: it gets the box file's boxes of that slice.
            boxes_list = [_Failed("boxes", b) if isinstance(b, str) else
                          b if isinstance(b, _Failed) else b.standing_in(st.sagittal_standins)
                          for st, b in zip(studies, boxes_list)]
            source = BOXES_GIVEN
        else:
            if self.detector is None:
                raise ValueError("this Reader was loaded without a detector: give the boxes")
            with self.clock("detector"):
                boxes_list = _isolated(self.detector.predict_batch, self.detector.predict, studies, "detector")
            source = BOXES_DETECTED
        # DICOM/NIfTI axial slices are matched to levels once the levels are placed (in patient space).
        with self.clock("axial matching"):
            studies = [attach_axials(st, b) if not isinstance(b, _Failed) else st for st, b in zip(studies, boxes_list)]
        # Crop every patient, then push all their levels through the classifier together.
        with self.clock("classifier"):
            crops_list = [_guarded(lambda st=st, b=b: self.classifier.crops(st, b), "cropping")
                          if not isinstance(b, _Failed) else b for st, b in zip(studies, boxes_list)]
            ok = [k for k, c in enumerate(crops_list) if not isinstance(c, _Failed)]
            graded = _isolated(self.classifier.grade_crops, lambda c: self.classifier.grade_crops([c])[0],
                               [crops_list[k] for k in ok], "classifier")
            grades_list = list(crops_list)
            for k, g in zip(ok, graded):
                grades_list[k] = g
        out: List[Outcome] = []
        for st, boxes, crops, grades in zip(studies, boxes_list, crops_list, grades_list):
            failed = next((r for r in (boxes, crops, grades) if isinstance(r, _Failed)), None)
            if failed is not None:
                out.append(PatientFailure(st.patient_id, failed.stage,
                                          str(InputError(failed.message, patient=st.patient_id))))
                continue
            try:
                out.append(self._assess(st, boxes, crops, grades, source))
            except Exception as e:  # one bad patient never stops the batch
                out.append(PatientFailure(st.patient_id, "report",
                                          str(e) if isinstance(e, InputError) else f"{type(e).__name__}: {e}"))
        return out

    def _assess(self, study: Study, boxes: LevelBoxes, crops, grades, box_source: str) -> PatientResult:
        """Stage 3 (curvature and alignment) and the report of one patient whose boxes and grades are known."""
        from fusion.model import predict as assess_curve
        from report.patient import PatientReport

        from .review import review_reasons

        with self.clock("fusion"):
            # Each distinct sagittal image once: a stand-in slice would count its source twice in the per-slice
            # spread and the consensus (Study.sagittal_views; all three slices for a complete patient).
            views = study.sagittal_views
            patient_boxes = boxes.as_patient_boxes()
            patient_boxes = replace(patient_boxes, boxes={s: patient_boxes.boxes[s] for s in views})
            curve = assess_curve(self.fusion, patient_boxes, spacing_mm=study.sagittal_spacing_mm,
                                 outside_fov=boxes.outside_fov, sagittal={s: study.sagittal[s] for s in views},
                                 disc_probs=grades.disc_probabilities, canal_probs=grades.canal_probabilities)
        level_lps, canal_lps = patient_space_centres(study, boxes, crops)
        report = PatientReport(study.patient_id, boxes, grades, curve, box_source, tuple(study.warnings),
                               review_reasons(boxes, curve, study, self.review_min_confidence), dict(study.sources),
                               tuple(study.provenance), level_centres_lps=level_lps, axial_canal_centres_lps=canal_lps,
                               sagittal_standins=dict(study.sagittal_standins))
        return PatientResult(study, boxes, crops, grades, curve, report)


def check_device(device: str) -> None:
    """Raise ReaderError (one line, naming --device cpu) when `device` asks for a GPU that torch cannot use;
    called before any model is loaded."""
    import torch
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ReaderError(f"--device {device}: unknown device; use --device cpu or --device cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ReaderError(f"--device {device}: no usable NVIDIA GPU here (torch finds no CUDA device or driver); "
                          "run with --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ReaderError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s), numbered from 0")


def passive_openmp_waiting() -> None:
    """Ask torch's OpenMP threads to wait passively; effective only before torch is first imported."""
    import os
    # torch's OpenMP threads spin at every barrier by default. Beside another busy process (a training job on
    # the 2-core build machine) they wait for a descheduled thread at every layer: one patient took 3.4-8.0 s
    # in the stages instead of 1.1 s (detector 4.0 s -> 0.2 s). Waiting passively changes no result (same
    # threads, same arithmetic: outputs byte-identical). Read when torch loads, so set before importing it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def patient_space_centres(study: Study, boxes: LevelBoxes, crops) -> Tuple[Optional[Dict], Optional[Dict]]:
    """(level -> LPS mm, canal position -> LPS mm) for DICOM/NIfTI input, (None, None) for challenge PNGs.

    A level's centre is its body (C2: below the dens) or disc box centre on the mid-sagittal image; a canal
    position's is the canal centre the classifier found on its axial image, where that image came from a
    DICOM/NIfTI slice."""
    from detector.boxes import body_centre
    from study.levels import CANAL_POSITIONS, DISCS, MID_SAGITTAL_SLICE

    if study.sagittal_geometry is None:
        return None, None
    levels = {}
    for p in CANAL_POSITIONS:
        b = boxes.box(p, MID_SAGITTAL_SLICE)
        xy = (b.cx, b.cy) if p in DISCS else body_centre(b, p)
        levels[p] = tuple(float(v) for v in study.sagittal_geometry.to_world(np.asarray(xy, float)))
    canal = {}
    for k, p in enumerate(CANAL_POSITIONS):
        finding = crops.canal[k]
        plane = study.axial_geometry.get(p)
        if finding is not None and plane is not None:
            # The finding is in pixel indices (pixel k's centre at k); image coordinates put it at k + 0.5.
            canal[p] = tuple(float(v) for v in plane.to_world(np.asarray([finding.x + 0.5, finding.y + 0.5], float)))
    return levels, canal
