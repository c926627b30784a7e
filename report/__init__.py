"""The PatientReport hand-off and the run's outputs: per-patient JSON, overlays and the batch HTML page."""
