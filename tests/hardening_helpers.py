"""Shared by the hardening tests: the bad-input batch (examples + one patient per bad case) and `run` outputs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from PIL import Image

from conftest import PRISTINE_ENV, png_header_only

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
GOOD = tuple(sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()))
# Every bad patient is a copy of this example with one thing broken, so "usable" cases can be compared to it.
SOURCE = "phantom-s2025-0001"
# The folder-name case: '..', spaces, unicode and characters HTML must escape, in one name.
ODD_NAME = "a..b with spaces ünïcödé 患者 <i>&amp;"
NON_UTF8_NAME = os.fsdecode(b"name-\xff\xfe")   # a folder name that is not valid UTF-8 (lone surrogates in Python)
NON_UTF8_ID = "name-\\xff\\xfe"                  # the printable patient id it gets
UNREADABLE = ("bad-unreadable", "sag/6.png")


def copy_examples(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in GOOD:
        shutil.copytree(EXAMPLES / name, root / name)
    return root


def _recode(folder: Path, convert) -> None:
    """Rewrite every PNG of a patient as convert(8-bit array) -> PIL image."""
    for f in sorted(folder.rglob("*.png")):
        with Image.open(f) as img:
            a = np.asarray(img)
        convert(a).save(f, format="PNG")


def build_bad_batch(root: Path) -> Path:
    """The 4 examples plus one patient per case of the bad-input matrix (see test_hardening_inputs.py)."""
    copy_examples(root)
    src = root / SOURCE

    def clone(name: str) -> Path:
        shutil.copytree(src, root / name)
        return root / name

    d = clone("bad-missing-sag")   # no sagittal image at all: the one missing-slice case that fails
    for s in (5, 6, 7):
        (d / "sag" / f"{s}.png").unlink()
    (clone("warn-missing-sag") / "sag" / "6.png").unlink()   # read: slice 5 stands in as the mid slice
    (clone("bad-missing-axial") / "tra" / "4-5.png").unlink()
    (root / "bad-empty").mkdir()
    (clone("bad-not-png") / "sag" / "5.png").write_text("this is a text file, not a PNG\n")
    d = clone("bad-truncated")
    data = (d / "sag" / "7.png").read_bytes()
    (d / "sag" / "7.png").write_bytes(data[: len(data) // 3])
    (clone("bad-bomb") / "sag" / "5.png").write_bytes(png_header_only(30_000, 30_000))
    d = clone("bad-link-loop")
    (d / "sag" / "6.png").unlink()
    os.symlink(d / "sag" / "6.png", d / "sag" / "6.png")     # the slice is a link to itself
    os.symlink(root / "zz-link-loop", root / "zz-link-loop")  # a patient entry that is a link to itself
    os.symlink(root, root / "zz-link-to-root")                # a link back to the batch folder
    clone(UNREADABLE[0])                                      # made unreadable at run time (see the test)

    _recode(clone("warn-16bit"), lambda a: Image.fromarray(a.astype(np.uint16) * 257))
    _recode(clone("warn-rgb"), lambda a: Image.fromarray(np.dstack([a, a, a])))
    _recode(clone("warn-512"), lambda a: Image.fromarray(a).resize((512, 512), Image.Resampling.BICUBIC))
    _recode(clone("ood-black"), lambda a: Image.fromarray(np.zeros_like(a)))
    d = clone("ood-black-axial")   # one axial image all black: the rest of the patient is fine
    Image.fromarray(np.zeros((224, 224), np.uint8)).save(d / "tra" / "4-5.png")
    d = clone("ood-flat-sag")      # one parasagittal slice a single grey value
    Image.fromarray(np.full((224, 224), 128, np.uint8)).save(d / "sag" / "5.png")
    rng = np.random.default_rng(0)
    d = clone("ood-noise")   # sagittal slices of noise: not a spine
    for f in sorted((d / "sag").glob("*.png")):
        Image.fromarray(rng.integers(0, 256, (224, 224), dtype=np.uint8)).save(f)
    d = clone("ood-cut")     # lower half of the neck blank: C6 and C7 are not in the picture
    for f in sorted((d / "sag").glob("*.png")):
        a = np.asarray(Image.open(f)).copy()
        a[120:] = 0
        Image.fromarray(a).save(f)
    d = clone("ood-gap")     # the neck pulled apart below C4: 30 rows of featureless tissue where a body should be
    for f in sorted((d / "sag").glob("*.png")):
        a = np.asarray(Image.open(f))
        b = a.copy()
        b[160:] = a[130:-30]
        b[130:160] = a[130:131]  # (copying rows 100-130 down instead draws one vertebra twice: a plausible spine)
        Image.fromarray(b).save(f)
    clone(ODD_NAME)
    shutil.copytree(src, root / NON_UTF8_NAME)
    return root


@dataclass
class RunOutput:
    """What one `run` left in OUT, parsed."""

    exit_code: int
    output: str                       # stdout and stderr of the command
    out: Path
    errors: Dict[str, str]            # errors.json: id -> message
    predictions: Dict[str, dict]      # predictions.json rows by id (without the id)
    order: List[str]                  # ids in predictions.json order
    html: str
    exception: Optional[BaseException] = None
    root: Optional[Path] = None       # the input folder, where a fixture built it
    audit_log: Optional[Path] = None  # events seen by the audit hook (run_audited)

    def report(self, pid: str) -> dict:
        return json.loads((self.out / "reports" / f"{pid}.json").read_text(encoding="utf-8"))


def read_outputs(out: Path, exit_code: int, output: str, exception=None) -> RunOutput:
    errors = {e["id"]: e["error"] for e in json.loads((out / "errors.json").read_text(encoding="utf-8"))}
    rows = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    preds = {r["id"]: {k: v for k, v in r.items() if k != "id"} for r in rows}
    return RunOutput(exit_code, output, out, errors, preds, [r["id"] for r in rows],
                     (out / "report.html").read_text(encoding="utf-8"), exception)


@lru_cache(maxsize=1)
def fresh_torch_threads() -> int:
    """torch's thread count in a fresh interpreter started with the session's original environment."""
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=PRISTINE_ENV,
                         capture_output=True, text=True, check=True, timeout=120)
    return int(out.stdout.strip())


def invoke_run(args: List[str]) -> RunOutput:
    """`pipeline.py run ARGS` in this process (click's CliRunner); ARGS must hold --out.

    The run gets the torch thread count a fresh `pipeline.py run` starts with (fresh_torch_threads): earlier
    tests in this process may have set another (training tests use 1), and the last digit of the measured
    values in a report depends on it. The previous count is restored afterwards.
    """
    import torch
    from click.testing import CliRunner

    from pipeline import cli

    before = torch.get_num_threads()
    torch.set_num_threads(fresh_torch_threads())
    try:
        res = CliRunner().invoke(cli, ["run", *args])
    finally:
        torch.set_num_threads(before)
    out = Path(args[args.index("--out") + 1])
    return read_outputs(out, res.exit_code, res.output, res.exception)


# ------------------------------------------------------------------------------------------------
# `run` in a fresh interpreter under an audit hook
# ------------------------------------------------------------------------------------------------
# Logs every network-related event (and every program started) to $AUDIT_LOG before it happens, one line
# per event, flushed at once so that a killed run still leaves its record.
AUDIT_PRELUDE = r"""
import os, sys
_log = open(os.environ["AUDIT_LOG"], "a", buffering=1, encoding="utf-8")
_NET = ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
        "socket.gethostbyaddr", "socket.sendto", "socket.sendmsg", "socket.bind", "http.client.connect",
        "urllib.Request", "ftplib.connect", "smtplib.connect", "webbrowser.open")
_SPAWN = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn")
def _hook(event, args):
    if event in _NET:
        _log.write(f"net {event} {args!r}\n")
    elif event in _SPAWN:
        _log.write(f"spawn {event} {args!r}\n")
sys.addaudithook(_hook)
"""
RUN_PIPELINE = AUDIT_PRELUDE + r"""
import runpy
sys.argv = ["pipeline.py", *sys.argv[1:]]
runpy.run_path("pipeline.py", run_name="__main__")
"""
# Programs a run may start: ctypes.util.find_library asks ldconfig where shared libraries are (local only).
ALLOWED_PROGRAMS = ("ldconfig",)


def audited(args: List[str], log: Path, **popen_kwargs) -> subprocess.Popen:
    """`python pipeline.py ARGS` in a fresh interpreter with the audit hook installed first."""
    env = dict(PRISTINE_ENV, AUDIT_LOG=str(log))
    return subprocess.Popen([sys.executable, "-c", RUN_PIPELINE, *args], cwd=ROOT, env=env, **popen_kwargs)


def run_audited(args: List[str], log: Path, timeout: float = 600) -> RunOutput:
    """`pipeline.py run ARGS` (ARGS must hold --out) in an audited fresh interpreter, to completion."""
    proc = audited(["run", *args], log, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    console, _ = proc.communicate(timeout=timeout)
    result = read_outputs(Path(args[args.index("--out") + 1]), proc.returncode, console)
    result.audit_log = log
    return result


def audit_events(log: Path):
    """(network events, programs started other than ALLOWED_PROGRAMS) in an audit log."""
    lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    net = [ln for ln in lines if ln.startswith("net ")]
    spawned = [ln for ln in lines if ln.startswith("spawn ") and not any(p in ln for p in ALLOWED_PROGRAMS)]
    return net, spawned
