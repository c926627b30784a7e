"""Entry point of `python -m classifier`."""
from .cli import main

main()
