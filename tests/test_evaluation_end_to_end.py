"""evaluation.end_to_end: both modes run on the hold-out patients only and are scored by the challenge metric."""
from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from evaluation.end_to_end import main
from study.challenge import read_labels
from study.splits import write_holdout

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def test_scores_only_the_holdout_with_detector_and_oracle_boxes(tmp_path):
    ids = sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir())[:2]
    holdout = write_holdout(tmp_path / "holdout.json", ids + ["not-in-the-folder"], source="test")
    res = CliRunner().invoke(main, ["--data", str(EXAMPLES), "--holdout", str(holdout), "--out", str(tmp_path / "e2e"),
                                    "--data-name", "bundled examples"])
    assert res.exit_code == 0, res.output[-2000:]
    result = json.loads((tmp_path / "e2e" / "e2e.json").read_text())
    assert result["n_patients"] == 2 and set(result["modes"]) == {"detector boxes (full pipeline)",
                                                                  "oracle boxes (--boxes)"}
    for mode, run_dir in (("detector boxes (full pipeline)", "run_detector"), ("oracle boxes (--boxes)", "run_oracle")):
        m = result["modes"][mode]
        assert 0.0 <= m["score"] <= 1.0 and m["failed"] == 0
        lo, hi = m["score_interval_95"]
        assert lo <= m["score"] <= hi
        assert set(m) >= {"curvature", "alignment", "disc", "canal"}
        assert [p.patient_id for p in read_labels(tmp_path / "e2e" / run_dir / "predictions.json")] == ids
    table = (tmp_path / "e2e" / "e2e.md").read_text()
    assert "2 patients of bundled examples" in table and "oracle boxes" in table and "95 % interval" in table
