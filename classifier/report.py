"""Per-class figures of disc and canal grading (precision, recall, F1, support, confusion, macro-F1)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Sequence

import numpy as np

from evaluation.metrics import confusion_matrix, macro_f1, precision_recall_f1
from study.challenge import PatientLabels
from study.levels import CANAL_GRADES, DISC_GRADES

from .predict import LevelGrades


@dataclass(frozen=True)
class TaskReport:
    """One task (disc or canal) over a set of patients."""

    task: str
    n_items: int
    macro_f1: float
    accuracy: float
    precision: List[float]
    recall: List[float]
    f1: List[float]
    support: List[int]
    confusion: List[List[int]]  # [true][predicted]

    def table(self, classes: Sequence[str]) -> str:
        lines = [f"{self.task}: macro-F1 {self.macro_f1:.3f}, accuracy {self.accuracy:.3f}, {self.n_items} items",
                 "| grade | support | precision | recall | F1 |", "| --- | --- | --- | --- | --- |"]
        for c, name in enumerate(classes):
            lines.append(f"| {c} {name} | {self.support[c]} | {self.precision[c]:.3f} | {self.recall[c]:.3f} | "
                         f"{self.f1[c]:.3f} |")
        return "\n".join(lines)


def task_report(task: str, truth: np.ndarray, pred: np.ndarray, n_classes: int) -> TaskReport:
    t, p = np.asarray(truth).ravel(), np.asarray(pred).ravel()
    prec, rec, f1 = precision_recall_f1(t, p, n_classes)
    return TaskReport(task, int(t.size), float(macro_f1(t, p, n_classes)), float((t == p).mean()) if t.size else 0.0,
                      prec.round(4).tolist(), rec.round(4).tolist(), f1.round(4).tolist(),
                      np.bincount(t, minlength=n_classes).tolist(), confusion_matrix(t, p, n_classes).tolist())


@dataclass(frozen=True)
class GradeReport:
    """Disc and canal figures of one evaluation, named by the data they come from."""

    data: str
    n_patients: int
    disc: TaskReport
    canal: TaskReport

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)

    def text(self) -> str:
        return (f"{self.data} ({self.n_patients} patients)\n\n{self.disc.table(DISC_GRADES)}\n\n"
                f"{self.canal.table(CANAL_GRADES)}\n")


def grade_report(data: str, grades: Sequence[LevelGrades], labels: Sequence[PatientLabels]) -> GradeReport:
    """Score predicted grades against labels of the same patients (same order)."""
    if [g.patient_id for g in grades] != [l.patient_id for l in labels]:
        raise ValueError("grades and labels must list the same patients in the same order")
    disc_t = np.array([l.disc_grades for l in labels]).reshape(-1)
    canal_t = np.array([l.canal_grades for l in labels]).reshape(-1)
    disc_p = np.array([g.disc_grades for g in grades]).reshape(-1)
    canal_p = np.array([g.canal_grades for g in grades]).reshape(-1)
    return GradeReport(data, len(grades), task_report("disc", disc_t, disc_p, len(DISC_GRADES)),
                       task_report("canal", canal_t, canal_p, len(CANAL_GRADES)))
