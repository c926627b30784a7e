"""`python -m detector`: the detector command line."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.cli import main  # noqa: E402

main()
