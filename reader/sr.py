"""DICOM SR of one patient's reading (`run --sr`): a TID 1500 Measurement Report built with highdicom, filed with
the source study.

What the document holds (every value taken from the patient's JSON report, so the two never disagree):
- per disc (C2-3 .. C6-7): a TID 1501 group whose finding site is the disc, holding the disc grade as a coded
  qualitative evaluation;
- per canal position (C2, C2-3, ..., C7): a TID 1501 group whose finding sites are the vertebral canal and the
  level, holding the central canal grade;
- one TID 1501 group for the cervical spine: curvature and alignment (coded), and the measured C2-C7 angle (deg),
  curvature index (%) and largest listhesis (posterior-wall step, mm) as numeric measurements in UCUM units;
- per level placed inside the field of view: a TID 1410 planar ROI group, the level's box on the mid-sagittal
  image as a closed polyline in that stored image's pixel coordinates (the level's location).
Every finding group names the SOP instances it was read from (sagittal slices 5/6/7 and, for a level, the axial
slice matched to it); the evidence sequence lists them, with their series and study.

A position outside the field of view carries no grade: its group holds the coded evaluation "Grading status" =
"Not graded: outside the field of view" instead (and the curve group no curvature, alignment or measurement
when the curve was not assessed). predictions.json still holds a label-prior integer there; the SR never does.

Codes: SNOMED CT (SCT) and DICOM (DCM) codes from the DICOM standard's code tables (PS3.16, as pydicom ships
them) where one exists; UCUM for units. Everything else uses ONE private coding scheme, `99CSPINE`
(`PRIVATE_SCHEME`, listed in the SR's Coding Scheme Identification Sequence): the grade scales of the CervAI
challenge, the curve measures as this reader defines them, and the grading status. Its codes are listed in
PRIVATE_CODES and in the README. No RadLex code is used: none in the standard's tables fits these concepts.

The SR copies the Patient and General Study modules from the source study (PACS files it with that study),
so unlike every other output it identifies the patient. It is written only when asked (`--sr`) and only for
DICOM input: challenge PNGs and NIfTI volumes carry no study or instance to refer to.
"""
from __future__ import annotations

import datetime
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from study.levels import CANAL_POSITIONS, DISCS, MID_SAGITTAL_SLICE, SAGITTAL_SLICES

SR_FOLDER = "sr"
PRIVATE_SCHEME = "99CSPINE"
PRIVATE_SCHEME_NAME = "cervspine reader concepts"
PRIVATE_SCHEME_ORGANISATION = "cervspine project (see README, DICOM SR)"
SR_SERIES_NUMBER = 9901
SR_SERIES_DESCRIPTION = "cervspine AI reading (unverified)"
MANUFACTURER = "cervspine project"
SOFTWARE_NAME = "cervspine"
SOFTWARE_VERSION = "0.1.0"

# The private scheme: code value -> meaning. Each is used only where PS3.16 has no code for the concept.
PRIVATE_CODES: Dict[str, str] = {     # code meanings: at most 64 characters (DICOM LO)
    "DISC-GRADE": "Intervertebral disc grade (CervAI scale)",
    "DISC-1": "Disc bulge",
    "DISC-2": "Disc protrusion",
    "DISC-3": "Disc extrusion",
    "CANAL-GRADE": "Central canal grade (CervAI scale)",
    "CANAL-1": "Canal narrowed, cord not compressed",
    "CANAL-2": "Cord compressed",
    "CANAL-3": "Cord compressed with cord signal change",
    "CURVATURE": "Cervical curvature (CervAI classes)",
    "CURV-1": "Straightened cervical curve",
    "CURV-2": "Kyphotic cervical curve",
    "ALIGNMENT": "Cervical alignment (CervAI classes)",
    "ALIGN-0": "Poor alignment",
    "ALIGN-1": "Acceptable alignment",
    "C2C7-ANGLE": "C2-C7 angle (centre-line segments, lordosis positive)",
    "CURV-INDEX": "Curvature index (C3-C6 offsets from C2-C7 line)",
    "LISTHESIS-MAX": "Largest listhesis (posterior-wall step)",
    "GRADING-STATUS": "Grading status",
    "NOT-GRADED-FOV": "Not graded: outside the field of view",
    "LEVEL-LOCATION": "Level location on the mid-sagittal image",
}
assert all(len(v) <= 64 for v in PRIVATE_CODES.values())

# PS3.16 codes (SCT/DCM, as pydicom's code dictionary lists them).
_SCT_VERTEBRA = {"C2": ("39976000", "C2 vertebra"), "C3": ("113205007", "C3 vertebra"),
                 "C4": ("5329002", "C4 vertebra"), "C5": ("36978003", "C5 vertebra"),
                 "C6": ("36054005", "C6 vertebra"), "C7": ("87391001", "C7 vertebra")}
_SCT_DISC = {"C2-3": ("1078209008", "C2/C3 disc"), "C3-4": ("58820006", "C3/C4 disc"),
             "C4-5": ("49400002", "C4/C5 disc"), "C5-6": ("73959003", "C5/C6 disc"),
             "C6-7": ("75095006", "C6/C7 disc")}
_SCT_DISC_LEVEL = {"C2-3": ("243902007", "Level of C2/C3 intervertebral disc"),
                   "C3-4": ("243903002", "Level of C3/C4 intervertebral disc"),
                   "C4-5": ("243904008", "Level of C4/C5 intervertebral disc"),
                   "C5-6": ("243905009", "Level of C5/C6 intervertebral disc"),
                   "C6-7": ("243906005", "Level of C6/C7 intervertebral disc")}
_SCT_CANAL = ("61853006", "Vertebral canal")
_SCT_CERVICAL_SPINE = ("122494005", "Cervical spine")
_SCT_NORMAL = ("17621005", "Normal")
_SCT_NONE = ("260413007", "None")
_SCT_IMAGING_PROCEDURE = ("363679005", "Imaging procedure")
_UCUM = {"deg": "Degree", "%": "Percent", "mm": "mm"}

# Curve measures of the report written as numeric measurements: report key -> (private code, UCUM unit).
MEASUREMENTS = (("c2c7_angle_deg", "C2C7-ANGLE", "deg"), ("curvature_index", "CURV-INDEX", "%"),
                ("posterior_step_max_mm", "LISTHESIS-MAX", "mm"))


class SRUnavailable(Exception):
    """This patient's input cannot carry an SR (not DICOM, or the images read have no UIDs); says why."""


def _code(value: str, meaning: str, scheme: str):
    from highdicom.sr import CodedConcept
    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def private(key: str):
    return _code(key, PRIVATE_CODES[key], PRIVATE_SCHEME)


def sct(pair: Tuple[str, str]):
    return _code(pair[0], pair[1], "SCT")


def disc_grade_code(grade: int):
    return sct(_SCT_NORMAL) if grade == 0 else private(f"DISC-{grade}")


def canal_grade_code(grade: int):
    return sct(_SCT_NONE) if grade == 0 else private(f"CANAL-{grade}")


def curvature_code(cls: int):
    return sct(_SCT_NORMAL) if cls == 0 else private(f"CURV-{cls}")


def alignment_code(cls: int):
    return private(f"ALIGN-{cls}")


def grade_of(code, kind: str) -> int:
    """The integer grade/class a coded value stands for (kind: disc, canal, curvature, alignment): the inverse
    of the *_code functions, for reading an SR back."""
    table = {"disc": disc_grade_code, "canal": canal_grade_code, "curvature": curvature_code,
             "alignment": alignment_code}[kind]
    for g in range(4 if kind in ("disc", "canal") else (3 if kind == "curvature" else 2)):
        ref = table(g)
        if ref.value == code.value and ref.scheme_designator == code.scheme_designator:
            return g
    raise ValueError(f"{code.scheme_designator} {code.value} is no {kind} code")


def sr_unavailable_reason(study) -> Optional[str]:
    """Why no SR can be written for this study, or None when one can."""
    if study.sagittal_geometry is None:
        return ("challenge PNG input carries no DICOM study: no patient, study or image instance an SR could "
                "refer to or be filed with")
    missing = [f"sag/{s}" for s in SAGITTAL_SLICES if f"sag/{s}" not in study.dicom_instances]
    if len(missing) == len(SAGITTAL_SLICES):
        return ("the input is not DICOM (a NIfTI volume, or DICOM files without SOP/series/study UIDs): it carries "
                "no study or image instance UID an SR could refer to or be filed with")
    if missing:
        return f"the images {', '.join(missing)} carry no SOP/series/study UIDs to refer to"
    return None


# ------------------------------------------------------------------------------------------------
# Building the document
# ------------------------------------------------------------------------------------------------
# Patient and General Study module attributes (and Patient Study ones) copied from the source study.
PATIENT_STUDY_KEYWORDS = (
    # Patient module
    "PatientName", "PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence", "TypeOfPatientID",
    "PatientBirthDate", "PatientBirthTime", "PatientSex", "OtherPatientIDsSequence", "OtherPatientNames",
    "EthnicGroup", "PatientComments", "PatientSpeciesDescription", "PatientSpeciesCodeSequence",
    "PatientBreedDescription", "PatientBreedCodeSequence", "BreedRegistrationSequence", "ResponsiblePerson",
    "ResponsiblePersonRole", "ResponsibleOrganization", "PatientIdentityRemoved", "DeidentificationMethod",
    "DeidentificationMethodCodeSequence", "QualityControlSubject",
    # General Study module
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName",
    "ReferringPhysicianIdentificationSequence", "StudyID", "AccessionNumber",
    "IssuerOfAccessionNumberSequence", "StudyDescription", "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence", "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence", "RequestingServiceCodeSequence",
    "ReferencedStudySequence", "ProcedureCodeSequence", "ReasonForPerformedProcedureCodeSequence",
    # Patient Study module
    "AdmittingDiagnosesDescription", "PatientAge", "PatientSize", "PatientWeight", "Occupation",
    "AdditionalPatientHistory", "AdmissionID", "IssuerOfAdmissionIDSequence",
)


def _headers(study) -> Dict[str, object]:
    """Header (no pixels) of every instance the study's images were read from, by SOP Instance UID."""
    from study.dicom import read_header
    out = {}
    for inst in study.dicom_instances.values():
        if inst.sop_instance_uid not in out:
            out[inst.sop_instance_uid] = read_header(inst.path, stop_before_pixels=True)
    return out


def _source_plane(ds, frame: Optional[int]):
    """The stored image's plane (study.geometry.ImagePlane) of one file (and frame)."""
    from study.dicom import _planes
    n = int(ds.get("NumberOfFrames", 1) or 1)
    planes = _planes(ds, n)
    return planes[(frame or 1) - 1][0] if frame is not None else planes[0][0]


def _region_px(box, model_plane, source_plane) -> Optional[np.ndarray]:
    """A level box on the model's mid-sagittal grid as a closed polyline in the stored image's pixel
    coordinates ((column, row), origin at the top-left corner of the first pixel), clipped to the stored
    image; None when nothing of it lies on that image."""
    x1, y1, x2, y2 = box.as_tuple()
    corners = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], float)
    world = np.array([model_plane.to_world(c) for c in corners])
    xy, _ = source_plane.to_image(world)
    xy = np.asarray(xy, float).reshape(-1, 2)
    rows, cols = source_plane.shape
    clipped = np.stack([np.clip(xy[:, 0], 0, cols), np.clip(xy[:, 1], 0, rows)], 1)
    if np.ptp(clipped[:, 0]) < 1e-6 or np.ptp(clipped[:, 1]) < 1e-6:
        return None
    return np.vstack([clipped, clipped[:1]]).round(3)


def build_sr(result, algorithm_version: str = SOFTWARE_VERSION, when: Optional[datetime.datetime] = None):
    """The SR of one PatientResult (reader.core) as a highdicom ComprehensiveSR (a pydicom Dataset).

    Raises SRUnavailable when the input cannot carry one."""
    from highdicom.sr import (
        AlgorithmIdentification, ComprehensiveSR, DeviceObserverIdentifyingAttributes, FindingSite, GraphicTypeValues,
        ImageRegion, Measurement, MeasurementReport, MeasurementsAndQualitativeEvaluations, ObservationContext,
        ObserverContext, PlanarROIMeasurementsAndQualitativeEvaluations, QualitativeEvaluation,
        SourceImageForMeasurementGroup, SourceImageForRegion, TrackingIdentifier,
    )
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    study, report = result.study, result.report
    reason = sr_unavailable_reason(study)
    if reason is not None:
        raise SRUnavailable(reason)
    data = report.to_dict()
    headers = _headers(study)
    instances = study.dicom_instances
    sag = [instances[f"sag/{s}"] for s in SAGITTAL_SLICES]
    study_uid = sag[0].study_instance_uid
    # Deterministic UIDs: the same reading of the same study gets the same SR UIDs (a rerun replaces it).
    seed = [study_uid, report.patient_id, repr(sorted(data["disc"].items())), repr(sorted(data["canal"].items())),
            repr(data["curvature"]), repr(data["alignment"]), algorithm_version]

    def uid(*parts: str) -> str:
        return generate_uid(prefix=None, entropy_srcs=seed + list(parts))

    algorithm = AlgorithmIdentification(name=SOFTWARE_NAME, version=algorithm_version)

    def source_images(keys: Sequence[str]) -> List[SourceImageForMeasurementGroup]:
        out, seen = [], set()
        for k in keys:
            inst = instances.get(k)
            if inst is None or (inst.sop_instance_uid, inst.frame) in seen:
                continue
            seen.add((inst.sop_instance_uid, inst.frame))
            out.append(SourceImageForMeasurementGroup(
                inst.sop_class_uid, inst.sop_instance_uid,
                referenced_frame_numbers=[inst.frame] if inst.frame is not None else None))
        return out

    sag_keys = [f"sag/{s}" for s in SAGITTAL_SLICES]
    status_not_graded = QualitativeEvaluation(private("GRADING-STATUS"), private("NOT-GRADED-FOV"))
    groups = []
    for d in DISCS:
        entry = data["disc"][d]
        evaluation = (status_not_graded if entry["grade"] is None else
                      QualitativeEvaluation(private("DISC-GRADE"), disc_grade_code(entry["grade"])))
        groups.append(MeasurementsAndQualitativeEvaluations(
            tracking_identifier=TrackingIdentifier(uid=uid("disc", d), identifier=f"disc {d}"),
            finding_sites=[FindingSite(sct(_SCT_DISC[d]))], algorithm_id=algorithm,
            qualitative_evaluations=[evaluation], source_images=source_images(sag_keys + [f"tra/{d}"])))
    for p in CANAL_POSITIONS:
        entry = data["canal"][p]
        evaluation = (status_not_graded if entry["grade"] is None else
                      QualitativeEvaluation(private("CANAL-GRADE"), canal_grade_code(entry["grade"])))
        level = _SCT_DISC_LEVEL[p] if p in DISCS else _SCT_VERTEBRA[p]
        groups.append(MeasurementsAndQualitativeEvaluations(
            tracking_identifier=TrackingIdentifier(uid=uid("canal", p), identifier=f"central canal {p}"),
            finding_sites=[FindingSite(sct(_SCT_CANAL)), FindingSite(sct(level))], algorithm_id=algorithm,
            qualitative_evaluations=[evaluation], source_images=source_images(sag_keys + [f"tra/{p}"])))
    # The curve: curvature, alignment and the measured values (none of them when it was not assessed).
    evaluations, measurements = [], []
    if data["curvature"]["class"] is None:
        evaluations.append(status_not_graded)
    else:
        evaluations.append(QualitativeEvaluation(private("CURVATURE"), curvature_code(data["curvature"]["class"])))
        evaluations.append(QualitativeEvaluation(private("ALIGNMENT"), alignment_code(data["alignment"]["class"])))
    for key, code, unit in MEASUREMENTS:
        value = (data["curve_measurements"] or {}).get(key)
        if value is not None:
            measurements.append(Measurement(name=private(code), value=float(value), unit=_code(unit, _UCUM[unit], "UCUM"),
                                            algorithm_id=algorithm))
    groups.append(MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=uid("curve"), identifier="cervical curve C2-C7"),
        finding_sites=[FindingSite(sct(_SCT_CERVICAL_SPINE))], algorithm_id=algorithm,
        qualitative_evaluations=evaluations, measurements=measurements or None, source_images=source_images(sag_keys)))
    # Where each level in view lies: its box on the mid-sagittal image, in that stored image's pixels.
    mid = instances[f"sag/{MID_SAGITTAL_SLICE}"]
    mid_plane = _source_plane(headers[mid.sop_instance_uid], mid.frame)
    outside = set(result.boxes.outside_positions)
    for p in CANAL_POSITIONS:
        if p in outside:
            continue
        polyline = _region_px(result.boxes.box(p, MID_SAGITTAL_SLICE), study.sagittal_geometry, mid_plane)
        if polyline is None:
            continue
        region = ImageRegion(graphic_type=GraphicTypeValues.POLYLINE, graphic_data=polyline,
                             source_image=SourceImageForRegion(
                                 mid.sop_class_uid, mid.sop_instance_uid,
                                 referenced_frame_numbers=[mid.frame] if mid.frame is not None else None))
        site = _SCT_DISC[p] if p in DISCS else _SCT_VERTEBRA[p]
        groups.append(PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=TrackingIdentifier(uid=uid("location", p), identifier=f"{p} location"),
            referenced_region=region, finding_type=private("LEVEL-LOCATION"), finding_sites=[FindingSite(sct(site))],
            algorithm_id=algorithm))

    observer = ObserverContext(observer_type=codes.DCM.Device,
                               observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
                                   uid=generate_uid(prefix=None, entropy_srcs=[SOFTWARE_NAME, algorithm_version]),
                                   name=SOFTWARE_NAME, manufacturer_name=MANUFACTURER))
    content = MeasurementReport(observation_context=ObservationContext(observer_device_context=observer),
                                procedure_reported=_code(*_SCT_IMAGING_PROCEDURE, "SCT"),
                                imaging_measurements=groups)
    # highdicom reads the patient and study attributes from the first evidence item; the source's own values
    # (an attribute the source lacks stays empty) are copied again below.
    evidence = [_with_type2(headers[mid.sop_instance_uid])] + [headers[k] for k in sorted(headers)
                                                               if k != mid.sop_instance_uid]
    when = when or datetime.datetime.now()
    sr = ComprehensiveSR(evidence=evidence, content=content[0], series_instance_uid=uid("series"),
                         series_number=SR_SERIES_NUMBER, sop_instance_uid=uid("instance"), instance_number=1,
                         manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
                         series_description=SR_SERIES_DESCRIPTION, content_date=when.date(), content_time=when.time(),
                         institution_name=None)
    _copy_patient_and_study(sr, headers[mid.sop_instance_uid])
    sr.SoftwareVersions = f"{SOFTWARE_NAME} {algorithm_version}"
    _declare_private_scheme(sr)
    return sr


_TYPE2_READ_BY_HIGHDICOM = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
                            "StudyID", "StudyDate", "StudyTime")


def _with_type2(ds):
    """A copy of a source header with the Type 2 patient/study attributes highdicom reads present (empty when the
    source lacks them, which an SR may hold)."""
    import copy
    out = copy.copy(ds)
    for kw in _TYPE2_READ_BY_HIGHDICOM:
        if kw not in out:
            setattr(out, kw, None)
    return out


def _copy_patient_and_study(sr, source) -> None:
    """The Patient, General Study and Patient Study attributes of the source study, as stored there."""
    import copy
    for kw in PATIENT_STUDY_KEYWORDS:
        if kw in source:
            setattr(sr, kw, copy.deepcopy(source[kw].value))


def _declare_private_scheme(sr) -> None:
    from pydicom.dataset import Dataset
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = PRIVATE_SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = PRIVATE_SCHEME_ORGANISATION
    seq = list(sr.get("CodingSchemeIdentificationSequence", []))
    seq = [s for s in seq if s.get("CodingSchemeDesignator") != PRIVATE_SCHEME] + [item]
    sr.CodingSchemeIdentificationSequence = seq


def write_sr(out_dir: Path, result, algorithm_version: str = SOFTWARE_VERSION) -> Path:
    """OUT/sr/{id}.dcm for one PatientResult, written atomically; raises SRUnavailable or the build's error."""
    from common.files import atomic_write
    path = Path(out_dir) / SR_FOLDER / f"{result.patient_id}.dcm"
    try:
        sr = build_sr(result, algorithm_version)
        atomic_write(path, lambda tmp: sr.save_as(tmp, enforce_file_format=True))
    except SRUnavailable:
        raise
    except Exception as e:
        # The message reaches errors.json, which stays de-identified: the study's identifying values go.
        raise SRError(_scrubbed(result.study, f"{type(e).__name__}: {e}")) from None
    return path


class SRError(Exception):
    """The SR of a DICOM study could not be built or written; the message holds no identifying value."""


def _scrubbed(study, text: str) -> str:
    from study.dicom import Scrubber, study_uid
    values = set()
    for inst in study.dicom_instances.values():
        try:
            values.update(study_uid(inst.path)[1])
        except Exception:  # unreadable now: nothing more to learn from it
            continue
    return Scrubber(values)(text)


def read_sr_findings(path) -> Dict[str, object]:
    """Read an SR this module wrote back through highdicom: the grades, classes and measurements it holds, in
    the JSON report's terms (None where a position is not graded), which positions say "not graded", and every
    SOP Instance UID it references (finding groups, regions and evidence)."""
    import highdicom as hd
    from highdicom.sr import MeasurementReport

    sr = hd.sr.srread(str(path))
    report = MeasurementReport.from_sequence([sr], is_root=True)
    out: Dict[str, object] = {"disc": {}, "canal": {}, "curvature": None, "alignment": None, "measurements": {},
                              "not_graded": [], "locations": [], "referenced_sop_instance_uids": set()}
    refs = out["referenced_sop_instance_uids"]
    status = private("GRADING-STATUS")
    by_code = {code: key for key, code, _ in MEASUREMENTS}
    for group in report.get_image_measurement_groups():
        ident = group.tracking_identifier
        for item in group:
            for img in _image_items(item):
                refs.add(img)
        evaluations = group.get_qualitative_evaluations()
        not_graded = any(e.name == status for e in evaluations)
        if not_graded and len(evaluations) > 1:
            raise ValueError(f"{ident}: marked not graded but holds {len(evaluations) - 1} other evaluation(s)")
        graded = next(((task, ident[len(prefix):], code) for prefix, task, code in
                       (("disc ", "disc", "DISC-GRADE"), ("central canal ", "canal", "CANAL-GRADE"))
                       if ident.startswith(prefix)), None)
        if graded is not None:
            task, position, code = graded
            out[task][position] = None if not_graded else grade_of(
                group.get_qualitative_evaluations(name=private(code))[0].value, task)
            if not_graded:
                out["not_graded"].append(f"{task} {position}")
        elif ident == "cervical curve C2-C7":
            if not_graded:
                out["not_graded"].append("curve")
            else:
                out["curvature"] = grade_of(group.get_qualitative_evaluations(name=private("CURVATURE"))[0].value,
                                            "curvature")
                out["alignment"] = grade_of(group.get_qualitative_evaluations(name=private("ALIGNMENT"))[0].value,
                                            "alignment")
            for m in group.get_measurements():
                out["measurements"][by_code[m.name.value]] = (float(m.value), m.unit.value)
    for group in report.get_planar_roi_measurement_groups():
        out["locations"].append(group.tracking_identifier)
        region = group.roi
        if region is not None:
            refs.add(str(region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID))
    for study in sr.get("CurrentRequestedProcedureEvidenceSequence", []):
        for series in study.ReferencedSeriesSequence:
            for inst in series.ReferencedSOPSequence:
                refs.add(str(inst.ReferencedSOPInstanceUID))
    return out


def _image_items(item) -> List[str]:
    """SOP Instance UIDs of IMAGE content items at or below one content item."""
    found = []
    if item.get("ValueType") == "IMAGE":
        found.append(str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID))
    for child in item.get("ContentSequence", []):
        found.extend(_image_items(child))
    return found
