"""Files written atomically, the temporaries a killed write leaves, and the one checksum every stage uses."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional, Union

PathLike = Union[str, Path]
TEMP_SUFFIX = ".tmp"  # the temporaries of atomic_write: hidden, `.NAME.XXXXXXXX.tmp`


def sha256_of(path: PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks; the one checksum every stage uses."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: PathLike, write: Callable[[str], None]) -> None:
    """Call write(tmp) on a temporary file beside `path`, then rename it into place.

    No reader ever sees a truncated file, and a failed write leaves no temporary behind. The temporary is
    a hidden `.NAME.XXXXXXXX.tmp`: it never matches the output's own pattern (`reports/*.json`), so a
    process killed mid-write leaves nothing a reader would take for a result, and
    `remove_stale_temporaries` clears it on the next run. Writers must name the format themselves
    (PIL `format=`, savefig `format=`, cv2.imencode), since the temporary has no telling extension.

    The file gets the mode an ordinary open() would give it (0666 less the umask: 0644 under umask 022);
    mkstemp alone would leave it 0600, readable by its owner only.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask, read without changing it where the OS tells it (Linux /proc), else set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temporaries(folder: PathLike, recursive: bool = False) -> int:
    """Delete the temporaries a killed atomic_write left in `folder` (and below it when recursive).

    Only names atomic_write makes are touched: hidden, ending in TEMP_SUFFIX. Returns how many went.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    found = folder.rglob(f".*{TEMP_SUFFIX}") if recursive else folder.glob(f".*{TEMP_SUFFIX}")
    n = 0
    for f in found:
        if f.is_file() and not f.is_symlink():
            f.unlink(missing_ok=True)
            n += 1
    return n


def write_json_atomic(path: PathLike, data: object, indent: Optional[int] = 1) -> None:
    """Write JSON atomically (see atomic_write).

    Text that UTF-8 cannot encode (file names that are not UTF-8 reach Python as lone surrogates) is
    written as a \\uXXXX escape, which JSON reads back as the same string, instead of failing the write.
    """
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", errors="backslashreplace") as f:
            json.dump(data, f, indent=indent, ensure_ascii=False, allow_nan=False)
            f.write("\n")

    atomic_write(path, write)


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write UTF-8 text atomically (see atomic_write)."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
