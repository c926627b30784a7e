"""weights/MANIFEST.json: what the released weights are, checked before any model file is opened."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Union

from common.files import sha256_of, write_json_atomic

PathLike = Union[str, Path]
MANIFEST = "MANIFEST.json"
# The stages of a weights folder, each in its own subfolder, in flow order.
STAGES = ("detector", "classifier", "fusion")
# Files that describe the weights but are not loaded as models; they are listed but never block a run.
DOC_SUFFIXES = (".md",)


class WeightsError(Exception):
    """The weights folder does not match its manifest (missing, changed or unlisted model files)."""


def _model_files(root: Path) -> List[Path]:
    # hidden files and folders (temporaries, training work folders) are never part of a release
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def write_manifest(root: PathLike) -> Path:
    """Record sha256 and size of every file under the weights folder."""
    root = Path(root)
    files = {p.relative_to(root).as_posix(): {"sha256": sha256_of(p), "size": p.stat().st_size}
             for p in _model_files(root)}
    path = root / MANIFEST
    write_json_atomic(path, {"files": files})
    return path


@dataclass(frozen=True)
class VerifiedWeights:
    root: Path
    files: Dict[str, Dict[str, object]]


def verify_manifest(root: PathLike, stages: tuple = ()) -> VerifiedWeights:
    """Refuse weights whose files differ from the manifest; only `stages` subfolders are checked if given."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise WeightsError(f"{path} is missing: the weights folder has no manifest, so it cannot be trusted")
    try:
        listed = json.loads(path.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise WeightsError(f"{path} is not a valid manifest ({e})") from None
    wanted = {k: v for k, v in listed.items() if not stages or k.split("/")[0] in stages}
    problems = []
    for rel, info in sorted(wanted.items()):
        p = root / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
        elif p.stat().st_size != info.get("size") or sha256_of(p) != info.get("sha256"):
            problems.append(f"{rel}: contents differ from the manifest (sha256/size)")
    for p in _model_files(root):
        rel = p.relative_to(root).as_posix()
        if rel not in listed and (not stages or rel.split("/")[0] in stages) and p.suffix not in DOC_SUFFIXES:
            problems.append(f"{rel}: not listed in the manifest")
    if problems:
        raise WeightsError(f"weights in {root} do not match {MANIFEST}: " + "; ".join(problems)
                           + ". Reinstall the released weights, or after retraining run "
                             "`python -m release.manifest " + str(root) + "` to record the new ones.")
    return VerifiedWeights(root, wanted)


def main(argv: List[str]) -> int:
    """`python -m release.manifest [WEIGHTS_DIR]`: rewrite the manifest of a weights folder (default weights)."""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m release.manifest",
                                     description="Record sha256 and size of every file of a weights folder in "
                                                 f"its {MANIFEST}, after a stage was retrained by hand.")
    parser.add_argument("weights_dir", nargs="?", default="weights", help="weights folder (default: weights)")
    root = Path(parser.parse_args(argv).weights_dir)
    if not root.is_dir():
        parser.error(f"{root}: not a folder")
    if not _model_files(root):
        parser.error(f"{root}: holds no files to record (is it a weights folder?)")
    print(f"wrote {write_manifest(root)}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
