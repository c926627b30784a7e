"""`python -m detector`: the detector command line."""
from detector.cli import main

main()
