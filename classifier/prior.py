"""The training labels' grade counts per position, stored with the weights: what a position that cannot be
graded (outside the field of view) submits, since predictions.json must hold an integer for it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from study.levels import CANAL_GRADES, CANAL_POSITIONS, DISC_GRADES, DISCS

PRIOR_KEY = "label_prior"   # the block's key in classifier.json


def label_prior_block(disc_labels: np.ndarray, canal_labels: np.ndarray, source: str) -> Dict[str, object]:
    """classifier.json's label_prior: grade counts per disc (N, 5) and canal position (N, 11) of the labels."""
    disc = np.asarray(disc_labels, int).reshape(-1, len(DISCS))
    canal = np.asarray(canal_labels, int).reshape(-1, len(CANAL_POSITIONS))
    return {"source": source, "n_patients": int(len(disc)),
            "disc_grade_counts": {d: np.bincount(disc[:, i], minlength=len(DISC_GRADES)).tolist()
                                  for i, d in enumerate(DISCS)},
            "canal_grade_counts": {p: np.bincount(canal[:, i], minlength=len(CANAL_GRADES)).tolist()
                                   for i, p in enumerate(CANAL_POSITIONS)}}


@dataclass(frozen=True)
class GradePrior:
    """Grade counts per disc (5, 4) and canal position (11, 4); None when the weights carry none."""

    disc_counts: Optional[np.ndarray]
    canal_counts: Optional[np.ndarray]
    n_patients: int = 0

    @staticmethod
    def from_meta(meta: Mapping[str, object]) -> "GradePrior":
        block = meta.get(PRIOR_KEY) if isinstance(meta, Mapping) else None
        if not isinstance(block, Mapping):
            return GradePrior(None, None)
        disc = np.array([block["disc_grade_counts"][d] for d in DISCS], float)
        canal = np.array([block["canal_grade_counts"][p] for p in CANAL_POSITIONS], float)
        if disc.shape != (len(DISCS), len(DISC_GRADES)) or canal.shape != (len(CANAL_POSITIONS), len(CANAL_GRADES)):
            raise ValueError(f"{PRIOR_KEY}: grade counts of the wrong shape {disc.shape}, {canal.shape}")
        return GradePrior(disc, canal, int(block.get("n_patients", 0)))

    @property
    def known(self) -> bool:
        return self.disc_counts is not None

    @staticmethod
    def _row(counts: Optional[np.ndarray], i: int, n: int) -> np.ndarray:
        if counts is None or counts[i].sum() <= 0:
            return np.eye(n)[0]   # no prior: grade 0 (normal / none), said so in `note`
        return counts[i] / counts[i].sum()

    def disc(self, disc: str) -> np.ndarray:
        """Label frequencies of a disc's grades; their argmax (lowest grade on a tie) is what is submitted."""
        return self._row(self.disc_counts, DISCS.index(disc), len(DISC_GRADES))

    def canal(self, position: str) -> np.ndarray:
        return self._row(self.canal_counts, CANAL_POSITIONS.index(position), len(CANAL_GRADES))

    @property
    def note(self) -> str:
        if not self.known:
            return ("predictions.json needs an integer; these weights carry no label prior (classifier.json "
                    f"{PRIOR_KEY}), so grade 0 was written")
        return ("predictions.json needs an integer: the most frequent grade at this position among the "
                f"classifier's training labels ({self.n_patients} patients; classifier.json {PRIOR_KEY})")


def most_frequent(frequencies: Sequence[float]) -> int:
    return int(np.argmax(np.asarray(frequencies, float)))
