"""Stage 2: per-level disc and canal grading from 2.5D sagittal crops plus the matched axial image."""
