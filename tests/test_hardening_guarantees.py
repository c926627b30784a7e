"""Guarantees of `run`, each proven end to end: determinism, atomic outputs, weights integrity, no network,
privacy of DICOM tag values, and out-of-distribution patients flagged for review.

Determinism compares predictions.json and reports/*.json byte for byte; run.json (seconds per stage) and
report.html (its summary line carries the run time) are excluded for that reason only.
"""
from __future__ import annotations

import html
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hardening_helpers import AUDIT_PRELUDE, EXAMPLES, GOOD, ROOT, audit_events, audited, invoke_run
from common.files import TEMP_SUFFIX, atomic_write, remove_stale_temporaries, write_json_atomic


def temporaries(out: Path) -> list:
    """The hidden write-in-progress files atomic_write makes (a kill may leave them; they are no output)."""
    return sorted(f.relative_to(out).as_posix() for f in out.rglob(f".*{TEMP_SUFFIX}"))


def json_state(out: Path) -> dict:
    """Every JSON output under out (relative name -> parsed, or the parse error). Whatever is not an
    atomic_write temporary counts, so a truncated output under any name fails the checks."""
    state = {}
    for f in sorted(out.rglob("*")):
        if f.is_file() and ".json" in f.name and not f.name.endswith(TEMP_SUFFIX):
            try:
                state[f.relative_to(out).as_posix()] = json.loads(f.read_text(encoding="utf-8"))
            except ValueError as e:
                state[f.relative_to(out).as_posix()] = e
    return state


# ------------------------------------------------------------------------------------------------
# Killed midway (in an audited fresh interpreter), then rerun here
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def killed_then_rerun(tmp_path_factory):
    """A run killed (SIGKILL) as soon as its first report is written, then the same run again into the same
    OUT. The killed run reads one patient per batch, so when the first report appears the others are still
    to come."""
    tmp = tmp_path_factory.mktemp("kill")
    out = tmp / "out"
    args = ["--input", str(EXAMPLES), "--out", str(out)]
    with open(tmp / "killed.log", "w") as console:
        proc = audited(["run", *args, "--batch-size", "1"], tmp / "killed.audit", stdout=console,
                       stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 400
        while not any((out / "reports").glob("*.json")):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the run ended (rc {proc.returncode}) or stalled before its first report:\n"
                            + (tmp / "killed.log").read_text())
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        killed_rc = proc.wait()
    after_kill = json_state(out)
    return {"killed_rc": killed_rc, "after_kill": after_kill, "out": out, "audit_log": tmp / "killed.audit",
            "rerun": invoke_run(args)}


def test_killing_a_run_midway_leaves_no_truncated_json(killed_then_rerun):
    k = killed_then_rerun
    assert k["killed_rc"] == -signal.SIGKILL                       # it was killed, it did not finish
    state = k["after_kill"]
    reports = [name for name in state if name.startswith("reports/")]
    assert 1 <= len(reports) < len(GOOD) and "predictions.json" not in state   # really midway
    bad = {name: v for name, v in state.items() if isinstance(v, Exception)}
    assert not bad, bad
    for name in reports:                                            # complete reports, not fragments
        assert len(state[name]["canal"]) == 11 and len(state[name]["disc"]) == 5


def test_a_rerun_completes_the_killed_run(killed_then_rerun):
    rerun = killed_then_rerun["rerun"]
    assert rerun.exit_code == 0, rerun.output
    assert rerun.order == list(GOOD) and rerun.errors == {}
    assert "Traceback" not in rerun.output
    state = json_state(killed_then_rerun["out"])
    assert not [name for name, v in state.items() if isinstance(v, Exception)]
    assert temporaries(killed_then_rerun["out"]) == []           # what the kill left behind is cleared
    assert sorted(n for n in state if n.startswith("reports/")) == [f"reports/{p}.json" for p in GOOD]


def test_two_runs_give_byte_identical_predictions_and_reports(killed_then_rerun, examples_run):
    # examples_run: a fresh interpreter; the rerun: this process (CliRunner). Same input, same arguments.
    a, b = examples_run.out, killed_then_rerun["out"]
    assert (a / "predictions.json").read_bytes() == (b / "predictions.json").read_bytes()
    names = sorted(p.name for p in (a / "reports").glob("*.json"))
    assert names == sorted(p.name for p in (b / "reports").glob("*.json")) == [f"{p}.json" for p in GOOD]
    for name in names:
        assert (a / "reports" / name).read_bytes() == (b / "reports" / name).read_bytes(), name


def test_a_full_run_makes_no_network_connection(examples_run, killed_then_rerun):
    assert examples_run.exit_code == 0, examples_run.output       # the audited run is a complete run
    for log in (examples_run.audit_log, killed_then_rerun["audit_log"]):
        assert log.exists()
        net, spawned = audit_events(log)
        assert net == [], net
        assert spawned == [], spawned


def test_the_audit_hook_does_see_network_calls(tmp_path):
    # The hook above is only evidence if it records what it watches: a lookup and a refused connect.
    code = AUDIT_PRELUDE + (
        "import socket\n"
        "try:\n    socket.getaddrinfo('localhost', 9)\nexcept OSError:\n    pass\n"
        "s = socket.socket()\n"
        "try:\n    s.connect(('127.0.0.1', 9))\nexcept OSError:\n    pass\n"
        "s.close()\n")
    log = tmp_path / "control.audit"
    subprocess.run([sys.executable, "-c", code], env=dict(os.environ, AUDIT_LOG=str(log)), check=True, timeout=60)
    net, _ = audit_events(log)
    assert any("socket.getaddrinfo" in e for e in net) and any("socket.connect" in e for e in net)


# ------------------------------------------------------------------------------------------------
# Atomic writes, deterministically: a writer that fails halfway leaves the old file whole
# ------------------------------------------------------------------------------------------------
def test_a_failed_write_leaves_the_previous_file_intact(tmp_path):
    target = tmp_path / "predictions.json"
    write_json_atomic(target, [{"id": "a"}])
    before = target.read_bytes()
    with pytest.raises(TypeError):
        write_json_atomic(target, [{"id": "b"}, {"bad": object()}])   # fails after writing part of the text
    assert target.read_bytes() == before

    def half_then_crash(tmp: str) -> None:
        Path(tmp).write_text("<html><body>half a pa")
        raise KeyboardInterrupt   # as if interrupted mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "report.html", half_then_crash)
    assert not (tmp_path / "report.html").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.json"]   # no temporary left behind


def test_a_sigkill_mid_write_leaves_only_a_hidden_temporary_that_the_next_run_clears(tmp_path):
    """What SIGKILL does to atomic_write, made deterministic: the process dies inside write(tmp), so neither
    the rename nor the cleanup runs. The kill test above can only hit this window by chance."""
    reports = tmp_path / "reports"
    write_json_atomic(reports / "a.json", {"id": "a"})
    code = ("import os, sys; from common.files import atomic_write\n"
            "def die(tmp):\n"
            "    open(tmp, 'w').write('{\"id\": \"b\", \"ca')\n"
            "    os.kill(os.getpid(), 9)\n"
            f"atomic_write({str(reports / 'b.json')!r}, die)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert sorted(p.name for p in reports.glob("*.json")) == ["a.json"]     # readers see no truncated b.json
    assert len(temporaries(tmp_path)) == 1 and json_state(tmp_path) == {"reports/a.json": {"id": "a"}}
    (tmp_path / "keep.tmp").write_text("not ours")                          # not hidden: not a temporary
    assert remove_stale_temporaries(reports) == 1 and remove_stale_temporaries(tmp_path) == 0
    assert temporaries(tmp_path) == [] and (tmp_path / "keep.tmp").exists()


# ------------------------------------------------------------------------------------------------
# Integrity: weights that do not match the manifest are refused before anything is loaded
# ------------------------------------------------------------------------------------------------
class _Tripwire:
    """Unpickling this creates a file: proof that someone unpickled it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def weights_copy(tmp_path) -> Path:
    w = tmp_path / "weights"
    shutil.copytree(ROOT / "weights", w)
    return w


def run_with_weights(weights: Path, out: Path):
    from click.testing import CliRunner

    from pipeline import cli

    return CliRunner().invoke(cli, ["run", "--input", str(EXAMPLES), "--out", str(out), "--weights", str(weights)])


def listed(weights: Path):
    return sorted(json.loads((weights / "MANIFEST.json").read_text())["files"])


def test_tampered_weights_are_refused_and_never_unpickled(weights_copy, tmp_path):
    markers = {}
    pickled = [rel for rel in listed(weights_copy) if rel.endswith(".pt")]   # torch checkpoints: pickles
    assert "detector/best.pt" in pickled and any(rel.startswith("classifier/") for rel in pickled)
    for rel in pickled:
        markers[rel] = tmp_path / f"unpickled-{rel.replace('/', '-')}"
        (weights_copy / rel).write_bytes(pickle.dumps(_Tripwire(markers[rel])))
    # The tripwire works: unpickling a copy fires it.
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Tripwire(control)))
    assert control.exists()

    res = run_with_weights(weights_copy, tmp_path / "out")
    assert res.exit_code == 2, res.output            # documented: 2 = the weights are unusable
    for rel, marker in markers.items():
        assert f"{rel}: contents differ from the manifest" in res.output
        assert not marker.exists(), f"{rel} was unpickled although its checksum does not match"
    assert "Traceback" not in res.output
    assert not (tmp_path / "out" / "predictions.json").exists()


@pytest.mark.parametrize("change, message", [
    ("missing-file", "{fusion_file}: missing"),
    ("missing-manifest", "has no manifest"),
    ("unlisted-file", "detector/extra.pt: not listed in the manifest"),
])
def test_missing_or_unlisted_weights_are_refused(weights_copy, tmp_path, change, message):
    marker = tmp_path / "unpickled"
    fusion_file = next(rel for rel in listed(weights_copy) if rel.startswith("fusion/") and not rel.endswith(".md"))
    message = message.format(fusion_file=fusion_file)
    if change == "missing-file":
        (weights_copy / fusion_file).unlink()
    elif change == "missing-manifest":
        (weights_copy / "MANIFEST.json").unlink()
    else:
        (weights_copy / "detector" / "extra.pt").write_bytes(pickle.dumps(_Tripwire(marker)))
    res = run_with_weights(weights_copy, tmp_path / "out")
    assert res.exit_code == 2 and message in res.output, res.output
    assert not marker.exists() and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------
# Privacy: no identifying DICOM value in any output
# ------------------------------------------------------------------------------------------------
def test_no_identifying_dicom_value_in_any_output(tmp_path):
    from dicom_factory import MARKER_STRINGS, phantom_case, write_study

    # The study folder is named after the patient, as exports often are, and passed as --input itself.
    _, specs, _ = phantom_case(3)
    study = tmp_path / "ZZMARKSURNAME_ZZMARKGIVEN"
    write_study(study, specs)
    res = invoke_run(["--input", str(study), "--out", str(tmp_path / "out"), "--dump-crops"])
    assert res.exit_code == 0, res.output
    [pid] = res.order
    assert pid.startswith("study-")                  # a hashed id, not the folder name
    assert json.loads((res.out / "run.json").read_text())["input"].endswith("[redacted]")
    files = [f for f in res.out.rglob("*") if f.is_file()]
    assert {f.name for f in files} >= {"predictions.json", "errors.json", "run.json", "report.html", f"{pid}.json",
                                       f"{pid}_sheet.png"}
    for f in files:
        data = f.read_bytes().lower()
        for marker in MARKER_STRINGS:
            assert marker.lower().encode() not in data, f"{marker} leaked into {f.relative_to(res.out)}"
            assert marker.lower() not in f.relative_to(res.out).as_posix().lower()
    for marker in MARKER_STRINGS:
        assert marker.lower() not in res.output.lower()


# ------------------------------------------------------------------------------------------------
# Out of distribution: the report flags the patient for review instead of presenting confident grades
# ------------------------------------------------------------------------------------------------
DETECTOR_REASONS = ("level(s) ", "low detector confidence", "anatomy check: ")


@pytest.mark.parametrize("pid, expected", [
    ("ood-noise", "not found on"),   # not a spine at all: levels missing on every slice or on some of them
    ("ood-cut", "outside the field of view"),  # lower half exactly 0: C5-C7 lie on padding, not graded
    ("ood-gap", ""),                        # the neck pulled apart: any of the detector's checks
])
def test_out_of_distribution_patients_are_flagged_for_review(bad_batch_run, pid, expected):
    rep = bad_batch_run.report(pid)
    reasons = rep["review_reasons"]
    assert rep["needs_review"] is True
    assert any(r.startswith(DETECTOR_REASONS) and expected in r for r in reasons), reasons
    # report.html: the patient's section has the review border and shows every reason as a flag.
    start = bad_batch_run.html.index(f'<section class="patient review" id="p-{pid}">')
    section = bad_batch_run.html[start:bad_batch_run.html.index("</section>", start)]
    for r in reasons:
        assert f'<span class="flag">{html.escape(r)}</span>' in section
    for good in GOOD:   # and the clean examples are not flagged
        assert bad_batch_run.report(good)["needs_review"] is False
