"""`run`'s output folder and console (issue 20): file modes, a reused OUT, --overwrite, --device cuda without a
GPU, the help texts and the console summary."""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace

import click
import pytest
from click.testing import CliRunner

from pipeline import cli
from reader.folder import RunSummary, console_summary
from reader.out_folder import OutFolderError, claim_out_folder, run_key

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PHANTOM_NOTE = "trained on synthetic phantoms, not validated on real patients"


def snapshot(folder: Path) -> dict:
    """Every entry under folder: relative name -> (mode, size, mtime_ns, bytes) for files, None for folders."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        out[p.relative_to(folder).as_posix()] = (None if p.is_dir() else
                                                 (st.st_mode, st.st_size, st.st_mtime_ns, p.read_bytes()))
    return out


@pytest.fixture(scope="module")
def reused(tmp_path_factory):
    """Run 1: the examples with crops under umask 022. Run 2: another input into the same OUT, refused.
    Run 3: the same with --overwrite. Each step's OUT is recorded."""
    tmp = tmp_path_factory.mktemp("reused")
    out = tmp / "out"
    batch2 = tmp / "batch2"
    shutil.copytree(EXAMPLES / "phantom-s2025-0002", batch2 / "phantom-s2025-0002")
    broken = batch2 / "zz-broken"
    shutil.copytree(EXAMPLES / "phantom-s2025-0001", broken)
    data = (broken / "sag" / "6.png").read_bytes()
    (broken / "sag" / "6.png").write_bytes(data[: len(data) // 3])

    old = os.umask(0o022)
    try:
        first = CliRunner().invoke(cli, ["run", "--input", str(EXAMPLES), "--out", str(out), "--dump-crops"])
    finally:
        os.umask(old)
    after_first = snapshot(out)
    run1 = json.loads((out / "run.json").read_text())
    # Files of no run, which --overwrite must leave alone.
    (out / "my-notes.txt").write_text("mine")
    (out / "reports" / "keep.txt").write_text("mine too")
    before_second = snapshot(out)
    second = CliRunner().invoke(cli, ["run", "--input", str(batch2), "--out", str(out)])
    after_second = snapshot(out)
    third = CliRunner().invoke(cli, ["run", "--input", str(batch2), "--out", str(out), "--overwrite"])
    return SimpleNamespace(out=out, first=first, after_first=after_first, run1=run1, before_second=before_second,
                           second=second, after_second=after_second, third=third)


def test_every_output_is_mode_0644_under_umask_022(reused):
    assert reused.first.exit_code == 0, reused.first.output
    files = {name: v for name, v in reused.after_first.items() if v is not None}
    assert any(n.startswith("crops/") and n.endswith(".png") for n in files)       # the crop PNGs are among them
    assert {"predictions.json", "errors.json", "run.json", "report.html"} <= set(files)
    modes = {name: oct(stat.S_IMODE(v[0])) for name, v in files.items()}
    assert set(modes.values()) == {"0o644"}, modes


def test_run_json_lists_every_file_the_run_wrote(reused):
    run1 = reused.run1
    assert run1["complete"] is True
    written = sorted(n for n, v in reused.after_first.items() if v is not None)
    assert run1["outputs"] == written


def test_a_reused_out_without_overwrite_exits_2_and_changes_nothing(reused):
    res = reused.second
    assert res.exit_code == 2, res.output
    assert reused.after_second == reused.before_second           # names, modes, sizes, times and bytes
    line = res.output.strip()
    assert "\n" not in line and line.startswith(f"error: folder {reused.out}: holds the outputs of a complete run")
    assert "--overwrite" in line and "nothing was changed" in line


def test_overwrite_removes_that_runs_files_only_and_says_so(reused):
    res, out = reused.third, reused.out
    assert res.exit_code == 1, res.output                        # the broken patient fails alone
    n_previous = len(reused.run1["outputs"])
    assert f"--overwrite: removed the {n_previous} file(s) of the previous run in {out}" in res.output
    assert (out / "my-notes.txt").read_text() == "mine" and (out / "reports" / "keep.txt").read_text() == "mine too"
    assert not (out / "crops").exists()                          # run 1's crop dump went, folders too
    assert sorted(p.name for p in (out / "reports").iterdir()) == ["keep.txt", "phantom-s2025-0002.json"]
    preds = json.loads((out / "predictions.json").read_text())
    assert [p["id"] for p in preds] == ["phantom-s2025-0002"]
    run3 = json.loads((out / "run.json").read_text())
    assert run3["complete"] and "my-notes.txt" not in run3["outputs"] and "reports/keep.txt" not in run3["outputs"]


def test_console_names_a_failed_patient_once(reused):
    out = reused.third.output
    line = next(x for x in out.splitlines() if x.startswith("failed: zz-broken"))
    assert line.startswith("failed: zz-broken: file zz-broken/sag/6.png: ") and "patient zz-broken" not in line
    errors = json.loads((reused.out / "errors.json").read_text())      # errors.json keeps its whole message
    assert errors[0]["error"].startswith("patient zz-broken, file zz-broken/sag/6.png:")


def test_console_and_page_say_the_models_are_phantom_trained(reused):
    assert PHANTOM_NOTE in reused.first.output
    assert PHANTOM_NOTE in (reused.out / "report.html").read_text(encoding="utf-8")


def test_a_folder_of_no_run_is_refused_even_with_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("years of work")
    before = snapshot(tmp_path / "out")
    for extra in ([], ["--overwrite"]):
        res = CliRunner().invoke(cli, ["run", "--input", str(EXAMPLES), "--out", str(tmp_path / "out"), *extra])
        assert res.exit_code == 2 and "no run.json" in res.output and "nothing was changed" in res.output
        assert snapshot(tmp_path / "out") == before


def test_a_killed_run_is_completed_by_the_same_run_only(tmp_path):
    """run.json says "complete": false while a run is under way; the same run (same key) may complete it,
    another run may not (without --overwrite)."""
    out = tmp_path / "out"
    (out / "reports").mkdir(parents=True)
    key = run_key(EXAMPLES, None, None, False, ROOT / "weights")
    (out / "run.json").write_text(json.dumps({"complete": False, "run_key": key,
                                              "outputs": ["run.json", "reports/a.json", "reports/b.json"]}))
    (out / "reports" / "a.json").write_text("{}")
    prev = claim_out_folder(out, key, overwrite=False)
    assert prev is not None and prev.resumed_by(key) and prev.files == ("reports/a.json", "run.json")
    other = run_key(EXAMPLES, None, None, True, ROOT / "weights")     # the same with --dump-crops: another run
    with pytest.raises(OutFolderError, match="unfinished run with other arguments"):
        claim_out_folder(out, other, overwrite=False)
    assert claim_out_folder(tmp_path / "new", key, overwrite=False) is None
    assert not (tmp_path / "new").exists()


def test_outputs_listed_outside_the_run_layout_are_never_removed(tmp_path):
    """A run.json that lists paths a run cannot have written (outside OUT, other names) removes none of them."""
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (out / "notes.txt").write_text("keep")
    (out / "predictions.json").write_text("[]")
    (out / "run.json").write_text(json.dumps({"complete": True, "outputs": [
        "../victim.txt", str(victim), "notes.txt", "predictions.json", "run.json"]}))
    prev = claim_out_folder(out, "k", overwrite=True)
    assert prev.files == ("predictions.json", "run.json")
    assert prev.remove() == 2
    assert victim.read_text() == "keep" and (out / "notes.txt").read_text() == "keep"


def test_device_cuda_without_a_gpu_exits_2_with_one_line_before_loading(tmp_path, monkeypatch):
    import torch

    from reader.core import Reader

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(Reader, "from_weights", no_loading)
    res = CliRunner().invoke(cli, ["run", "--input", str(EXAMPLES), "--out", str(tmp_path / "out"),
                                   "--device", "cuda"])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "no usable NVIDIA GPU" in lines[0] and "--device cpu" in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_the_detector_network_loads_without_a_banner(capfd):
    """Off the CPU the detector is built with ultralytics, whose fuse() printed 'summary (fused)'."""
    from detector.predict import load_network

    capfd.readouterr()
    load_network(ROOT / "weights" / "detector" / "best.pt")
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == "", captured


def test_every_option_of_every_command_has_help():
    missing = [f"{name} {opt.opts[0]}" for name, cmd in cli.commands.items() for opt in cmd.params
               if isinstance(opt, click.Option) and not (opt.help or "").strip()]
    assert missing == []


def test_top_level_help_cuts_no_summary():
    res = CliRunner().invoke(cli, ["--help"])
    commands = res.output[res.output.index("Commands:"):]
    assert res.exit_code == 0 and "..." not in commands
    for cmd in cli.commands.values():                 # each summary, whole (wrapped at most)
        assert " ".join(cmd.short_help.split()) in " ".join(res.output.split())


def test_run_help_lists_layouts_and_exit_codes():
    text = " ".join(CliRunner().invoke(cli, ["run", "--help"]).output.split())
    for needed in ("challenge PNGs", "DICOM", "NIfTI", "sub-*/anat/*T2w*.nii.gz", "Exit codes:",
                   "0 every patient read", "1 some patient could not be read", "2 nothing was read",
                   "--overwrite", "--weights PATH Weights folder", "--out PATH Output folder"):
        assert needed in text, needed


def _fake_report(reasons, outside=()):
    return SimpleNamespace(needs_review=bool(reasons), review_reasons=tuple(reasons),
                           boxes=SimpleNamespace(outside_fov=tuple(outside)))


def test_console_gives_the_first_reason_of_each_flagged_patient_then_where_the_rest_are(tmp_path):
    ids = [f"p{i}" for i in range(8)]
    reports = {pid: _fake_report([f"reason one of {pid}", "reason two"] if i % 4 else []) for i, pid in enumerate(ids)}
    summary = RunSummary(ids, reports, [], "8 patient(s): 8 read, 0 failed, 6 flagged for review, 1.0 s")
    lines = console_summary(summary, tmp_path, dump_crops=False)
    shown = [x for x in lines if x.startswith("  review ")]
    assert shown == [f"  review p{i}: reason one of p{i} (+1 more)" for i in (1, 2, 3, 5, 6)]
    tail = lines[lines.index(shown[-1]) + 1]
    assert tail.startswith("  ... and 1 more flagged; every reason: ") and str(tmp_path / "report.html") in tail
    assert any(PHANTOM_NOTE in x for x in lines)
    quiet = console_summary(RunSummary(["a"], {"a": _fake_report([])}, [], "1 patient(s)"), tmp_path, False)
    assert not any("review" in x for x in quiet)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_write_honours_the_umask(tmp_path, umask, mode):
    from common.files import atomic_write, current_umask, write_json_atomic

    old = os.umask(umask)
    try:
        assert current_umask() == umask
        write_json_atomic(tmp_path / "a.json", {"x": 1})
        atomic_write(tmp_path / "b.png", lambda tmp: Path(tmp).write_bytes(b"png"))
    finally:
        os.umask(old)
    assert {stat.S_IMODE((tmp_path / n).stat().st_mode) for n in ("a.json", "b.png")} == {mode}
