"""Traced network copies (common/traced.py): same outputs as the networks, stale copies ignored, and a CPU
`run` that never imports ultralytics, timm, torchvision or scikit-learn (the 5-7 s of cold start they cost)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from classifier.predict import TRACED_FILE as CLASSIFIER_TRACED, WEIGHTS_FILE as CLASSIFIER_PT, Classifier
from detector.predict import TRACED_FILE as DETECTOR_TRACED, WEIGHTS_FILE as DETECTOR_PT, Detector, load_network, nms
from common.traced import load_traced, save_traced
from study.loader import find_patients, load_study

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights"
EXAMPLES = ROOT / "examples"


def test_nms_matches_torchvision_on_crowded_boxes():
    import torchvision
    rng = np.random.default_rng(3)
    for trial in range(20):
        n = int(rng.integers(1, 300))
        xy = rng.uniform(0, 200, (n, 2))
        wh = rng.uniform(2, 40, (n, 2))
        boxes = torch.tensor(np.concatenate([xy, xy + wh], 1), dtype=torch.float32)
        scores = torch.tensor(rng.uniform(0, 1, n), dtype=torch.float32)
        for iou in (0.3, 0.5, 0.7):
            want = torchvision.ops.nms(boxes, scores, iou)
            assert torch.equal(nms(boxes, scores, iou), want), (trial, iou)
    assert len(nms(torch.zeros(0, 4), torch.zeros(0), 0.5)) == 0


@pytest.fixture(scope="module")
def example_studies():
    return [load_study(p) for p in find_patients(EXAMPLES)]


def test_shipped_traced_copies_are_current():
    assert load_traced(WEIGHTS / "detector" / DETECTOR_TRACED, WEIGHTS / "detector" / DETECTOR_PT) is not None
    assert load_traced(WEIGHTS / "classifier" / CLASSIFIER_TRACED, WEIGHTS / "classifier" / CLASSIFIER_PT) is not None


def test_traced_detector_gives_the_networks_boxes(example_studies):
    traced = Detector.from_weights(WEIGHTS / "detector", device="cpu")
    assert isinstance(traced.model, torch.jit.ScriptModule)
    eager = Detector(load_network(WEIGHTS / "detector" / DETECTOR_PT), traced.config, "cpu",
                     refiner=traced.refiner)
    assert not isinstance(eager.model, torch.jit.ScriptModule)
    for a, b in zip(traced.predict_batch(example_studies), eager.predict_batch(example_studies)):
        assert a.as_patient_boxes() == b.as_patient_boxes()
    stack = np.stack([example_studies[0].sagittal_stack()[1]] * 2)
    for (va, da), (vb, db) in zip(traced.raw(stack), eager.raw(stack)):
        assert np.array_equal(va.boxes, vb.boxes) and np.array_equal(va.scores, vb.scores)
        assert np.array_equal(da.boxes, db.boxes) and np.array_equal(da.scores, db.scores)


def test_traced_classifier_gives_the_networks_probabilities(example_studies):
    from classifier.predict import _network
    traced = Classifier.load(WEIGHTS / "classifier", "cpu")
    assert isinstance(traced.model, torch.jit.ScriptModule)
    eager = Classifier(_network(WEIGHTS / "classifier" / CLASSIFIER_PT, traced.cfg), traced.cfg, "cpu", traced.meta)
    det = Detector.from_weights(WEIGHTS / "detector", device="cpu")
    crops = [traced.crops(st, b) for st, b in zip(example_studies, det.predict_batch(example_studies))]
    for a, b in zip(traced.probabilities(crops), eager.probabilities(crops)):
        assert np.array_equal(a, b)


def test_a_stale_or_missing_copy_is_ignored(tmp_path):
    folder = tmp_path / "classifier"
    shutil.copytree(WEIGHTS / "classifier", folder)
    other = tmp_path / "other.bin"
    other.write_bytes(b"not the classifier weights")
    net = torch.nn.Linear(3, 2)
    save_traced(net, (torch.zeros(2, 3),), [(torch.ones(5, 3),)], other, folder / CLASSIFIER_TRACED)
    assert load_traced(folder / CLASSIFIER_TRACED, other) is not None
    assert load_traced(folder / CLASSIFIER_TRACED, folder / CLASSIFIER_PT) is None   # bound to other.bin
    assert not isinstance(Classifier.load(folder, "cpu").model, torch.jit.ScriptModule)  # built with timm
    (folder / CLASSIFIER_TRACED).unlink()
    assert load_traced(folder / CLASSIFIER_TRACED, folder / CLASSIFIER_PT) is None
    assert not isinstance(Classifier.load(folder, "cpu").model, torch.jit.ScriptModule)


def test_an_unreadable_copy_is_named(tmp_path):
    source = tmp_path / "w.bin"
    source.write_bytes(b"w")
    bad = tmp_path / "net.torchscript"
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(RuntimeError, match="net.torchscript: not a readable traced network"):
        load_traced(bad, source)


def test_save_traced_refuses_a_copy_that_differs(tmp_path):
    class BatchDependent(torch.nn.Module):   # a Python branch on the batch size: tracing freezes it
        def forward(self, x):
            return x * 2 if x.shape[0] == 2 else x * 3

    source = tmp_path / "w.bin"
    source.write_bytes(b"w")
    with pytest.raises(RuntimeError, match="differs from the network"):
        save_traced(BatchDependent(), (torch.ones(2, 3),), [(torch.ones(4, 3),)], source, tmp_path / "t.torchscript")
    assert not (tmp_path / "t.torchscript").exists()


def test_cpu_run_imports_no_network_builders(tmp_path):
    """The cold-start design: `run` on the CPU loads both networks from their traced copies."""
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['pipeline.py', 'run', '--input', {str(EXAMPLES)!r}, '--out', {str(tmp_path / 'out')!r}]\n"
        "try:\n"
        f"    runpy.run_path({str(ROOT / 'pipeline.py')!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "import json\n"
        "print(json.dumps({'exit': code, 'modules': sorted(m for m in sys.modules if m.split('.')[0] in "
        "('ultralytics', 'timm', 'torchvision', 'sklearn') or m.startswith('torch._dynamo'))}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["exit"] == 0, out.stderr[-2000:]
    assert result["modules"] == [], result["modules"]
    assert len(json.loads((tmp_path / "out" / "predictions.json").read_text())) == len(find_patients(EXAMPLES))
