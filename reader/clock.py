"""Wall seconds spent in each stage of a run, for run.json and the benchmark."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Dict, Iterator


class StageClock:
    """clock("detector") is a context that adds its wall seconds to seconds["detector"]."""

    def __init__(self):
        self.seconds: Dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t
