"""`evaluate --reports RUN_DIR --labels FILE`: ROC/AUC per task and class, reliability plots, bootstrap intervals."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from evaluation.analysis import auc, reliability, roc_curve
from pipeline import cli
from study.challenge import PatientLabels, write_labels
from study.levels import CANAL_POSITIONS, DISCS

PNG = b"\x89PNG\r\n\x1a\n"


def test_auc_is_the_chance_a_positive_outranks_a_negative():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = rng.normal(size=300) + y
    pairs = [(a > b) + 0.5 * (a == b) for a in s[y == 1] for b in s[y == 0]]
    assert auc(y, s) == pytest.approx(np.mean(pairs))
    assert auc(y, np.round(s)) == pytest.approx(np.mean([(a > b) + 0.5 * (a == b) for a in np.round(s)[y == 1]
                                                         for b in np.round(s)[y == 0]]))
    assert np.isnan(auc(np.zeros(5, int), np.arange(5.0)))
    fpr, tpr = roc_curve(y, s)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert np.trapezoid(tpr, fpr) == pytest.approx(auc(y, s))


def test_reliability_bins_and_ece():
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.45, 0.55]])
    truth = np.array([0, 1, 0, 0])
    rel = reliability(probs, truth)
    by_bin = {(round(b["lo"], 1)): b for b in rel["bins"]}
    assert by_bin[0.9]["n"] == 2 and by_bin[0.9]["accuracy"] == 0.5 and by_bin[0.9]["confidence"] == 0.95
    assert by_bin[0.5]["n"] == 2 and by_bin[0.5]["accuracy"] == 0.5
    assert rel["ece"] == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)


def _fake_run(tmp_path: Path, n: int = 30) -> tuple:
    """A run folder whose reports hold chosen probabilities, and its labels (truth known by construction)."""
    rng = np.random.default_rng(3)
    run = tmp_path / "run"
    (run / "reports").mkdir(parents=True)
    truth, pred = [], []
    for k in range(n):
        pid = f"p{k:02d}"
        lab = PatientLabels(pid, int(rng.integers(0, 3)), 0 if k % 5 == 0 else 1,
                            tuple(int(v) for v in rng.integers(0, 4, 5)), tuple(int(v) for v in rng.integers(0, 4, 11)))
        truth.append(lab)

        def probs(t: int, c: int, good: bool) -> list:
            p = rng.dirichlet(np.ones(c))
            if good:
                p = 0.5 * p + 0.5 * np.eye(c)[t]
            return [float(v) for v in p]
        rep = {"curvature": {"probabilities": probs(lab.curvature, 3, True)},
               "alignment": {"probabilities": probs(lab.alignment, 2, k % 2 == 0)},
               "disc": {d: {"probabilities": probs(g, 4, True)} for d, g in zip(DISCS, lab.disc_grades)},
               "canal": {p: {"probabilities": probs(g, 4, False)} for p, g in zip(CANAL_POSITIONS, lab.canal_grades)}}
        rep["canal"]["C7"] = {"grade": None, "probabilities": None, "not_graded": "outside the field of view"}
        (run / "reports" / f"{pid}.json").write_text(json.dumps(rep))
        pred.append(PatientLabels(pid, int(np.argmax(rep["curvature"]["probabilities"])), lab.alignment,
                                  lab.disc_grades, tuple(0 for _ in CANAL_POSITIONS)))
    write_labels(tmp_path / "labels.json", truth)
    write_labels(run / "predictions.json", pred)
    return run, tmp_path / "labels.json", truth


def test_reports_give_rocs_reliability_plots_and_a_summary(tmp_path):
    run, labels, truth = _fake_run(tmp_path)
    res = CliRunner().invoke(cli, ["evaluate", "--labels", str(labels), "--reports", str(run), "--out",
                                   str(tmp_path / "an")])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1].startswith("score: ")
    out = tmp_path / "an"
    for t in ("curvature", "alignment", "disc", "canal"):
        for kind in ("roc", "reliability"):
            assert (out / f"{kind}_{t}.png").read_bytes()[:8] == PNG
    result = json.loads((out / "analysis.json").read_text())
    # the disc AUCs recomputed from the reports by hand
    items = [(json.loads((run / "reports" / f"{lab.patient_id}.json").read_text())["disc"][d]["probabilities"], g)
             for lab in truth for d, g in zip(DISCS, lab.disc_grades)]
    p = np.array([i[0] for i in items])
    y = np.array([i[1] for i in items])
    for c, name in enumerate(("normal", "bulge", "protrusion", "extrusion")):
        row = result["tasks"]["disc"]["auc"]["per_class"][name]
        assert row["auc"] == pytest.approx(auc(y == c, p[:, c]), abs=1e-4)
        lo, hi = row["interval_95"]
        assert lo <= row["auc"] <= hi
    # informative probabilities rank well, uninformative ones near chance
    assert result["tasks"]["disc"]["auc"]["macro_auc"] > 0.8
    assert abs(result["tasks"]["canal"]["auc"]["macro_auc"] - 0.5) < 0.15
    assert result["tasks"]["canal"]["left_out_not_graded"] == len(truth)         # C7 has no probabilities
    assert result["tasks"]["canal"]["items"] == len(truth) * 10
    assert list(result["tasks"]["alignment"]["auc"]["per_class"]) == ["poor"]   # the scored class only
    lo, hi = result["score"]["interval_95"]
    assert lo <= result["score"]["value"] <= hi
    md = (out / "analysis.md").read_text()
    assert "Challenge score" in md and "![ROC disc](roc_disc.png)" in md and "| disc | extrusion |" in md


def test_a_folder_without_reports_and_mixed_flags_are_usage_errors(tmp_path):
    run, labels, _ = _fake_run(tmp_path, 4)
    res = CliRunner().invoke(cli, ["evaluate", "--labels", str(labels), "--reports", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "no reports/ folder" in res.output
    res = CliRunner().invoke(cli, ["evaluate", "--labels", str(labels), "--reports", str(run),
                                   "--pred", str(run / "predictions.json")])
    assert res.exit_code == 2 and "exactly one of --pred and --reports" in res.output


def test_on_the_phantom_examples_run(examples_run, tmp_path):
    """On a real `run` of the phantom examples: every task's curves and plots, AUCs within [0, 1]."""
    from hardening_helpers import EXAMPLES
    res = CliRunner().invoke(cli, ["evaluate", "--labels", str(EXAMPLES / "labels.json"), "--reports",
                                   str(examples_run.out), "--out", str(tmp_path / "an")])
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "an" / "analysis.json").read_text())
    assert result["n_patients"] == 4 and not result["patients_without_report"]
    for t, r in result["tasks"].items():
        assert r["reliability"]["n"] == r["items"] > 0
        for row in r["auc"]["per_class"].values():
            assert row["auc"] is None or 0.0 <= row["auc"] <= 1.0
