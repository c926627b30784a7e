"""The reader as a library: Reader.from_weights(dir, device) loads and verifies the stages once, and
reader.read(studies) runs detector -> axial matching -> classifier -> fusion -> report for a batch, returning a
PatientResult or a PatientFailure per study. `run`, evaluation and the benchmarks call it."""
from .core import GivenBoxes, PatientFailure, PatientResult, Reader, ReaderError
from .clock import StageClock

__all__ = ["GivenBoxes", "PatientFailure", "PatientResult", "Reader", "ReaderError", "StageClock"]
