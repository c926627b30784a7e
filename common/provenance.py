"""Where a trained model came from: the git commit of the code that made it, marked when it was not committed."""
from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git_commit(*scope: str) -> str:
    """The short commit of HEAD, plus `+dirty(a/, b/)` when files under the `scope` folders (default: the
    whole repository, marked `+dirty`) differ from it; "unknown" outside a git checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *(scope or ["."])], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not dirty:
        return sha
    return sha + (f"+dirty({', '.join(s.rstrip('/') + '/' for s in scope)})" if scope else "+dirty")
