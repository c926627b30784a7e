"""The shipped classifier weights' files belong together (score floors: test_shipped_weights.py)."""
from __future__ import annotations

import json

from classifier.predict import CONFIG_FILE, DEFAULT_WEIGHTS, WEIGHTS_FILE
from common.files import sha256_of


def test_shipped_files_belong_together():
    meta = json.loads((DEFAULT_WEIGHTS / CONFIG_FILE).read_text())
    assert meta["weights_sha256"] == sha256_of(DEFAULT_WEIGHTS / WEIGHTS_FILE)
    assert (DEFAULT_WEIGHTS / "MODEL_CARD.md").is_file()
    assert "phantom" in meta["training"]["data"]
