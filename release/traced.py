"""`python -m release.traced WEIGHTS_DIR`: (re)write the traced copies of a weights folder's networks and its manifest.

The traced copies themselves (what they are, how they are bound to their weights) live in common.traced;
training writes them itself.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Union

PathLike = Union[str, Path]


def write_traced(weights_dir: PathLike) -> List[Path]:
    """Trace the detector and classifier networks of a weights folder (the stages it has)."""
    weights_dir = Path(weights_dir)
    written = []
    if (weights_dir / "detector").is_dir():
        from detector.predict import export_traced as detector_traced
        written.append(detector_traced(weights_dir / "detector"))
    if (weights_dir / "classifier").is_dir():
        from classifier.predict import export_traced as classifier_traced
        written.append(classifier_traced(weights_dir / "classifier"))
    return written


if __name__ == "__main__":  # python -m release.traced weights/
    import sys

    from .manifest import write_manifest

    root = Path(sys.argv[1] if len(sys.argv) > 1 else "weights")
    for p in write_traced(root):
        print(f"wrote {p}")
    print(f"wrote {write_manifest(root)}")
