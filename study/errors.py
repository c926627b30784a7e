"""The project's own error types: every bad input raises one of these, naming the patient and file."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union


class InputError(Exception):
    """A problem with user input (files, labels, boxes), with the patient and file it concerns."""

    def __init__(self, message: str, patient: Optional[str] = None,
                 path: Optional[Union[str, Path]] = None, what: str = "file"):
        """what: how the message names `path` ("file", "folder", or "path" where it may be either)."""
        self.patient = patient
        self.path = str(path) if path is not None else None
        self.what = what
        self.problem = message
        parts = []
        if patient is not None:
            parts.append(f"patient {patient}")
        if path is not None:
            parts.append(f"{what} {self.path}")
        prefix = ", ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class StudyError(InputError):
    """A patient's images cannot be loaded (missing, unreadable, wrong layout)."""


class LabelFileError(InputError):
    """A challenge label or prediction JSON is malformed."""


class BoxFileError(InputError):
    """A challenge box file or one of its box strings is malformed or anatomically impossible."""
