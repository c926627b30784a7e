"""Offline ultralytics: import `ultralytics` only through yolo() so nothing is ever downloaded."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

# Fonts ultralytics looks for before plotting or checking a dataset; absent, it downloads them.
_FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
_configured: Optional[Path] = None


def default_config_dir() -> Path:
    """A per-user folder outside the repository: ultralytics writes settings.json there."""
    return Path(tempfile.gettempdir()) / f"cervical-reader-ultralytics-{os.getuid() if hasattr(os, 'getuid') else 0}"


def _install_fonts(target: Path) -> None:
    from matplotlib import font_manager  # matplotlib is a dependency of ultralytics; DejaVuSans ships with it

    source = Path(font_manager.findfont("DejaVu Sans", fallback_to_default=True))
    target.mkdir(parents=True, exist_ok=True)
    for name in _FONT_NAMES:
        dest = target / name
        if not dest.exists():
            tmp = dest.with_suffix(".tmp")
            shutil.copyfile(source, tmp)
            os.replace(tmp, dest)


def configure(config_dir: Optional[Path] = None, threads: Optional[int] = None) -> Path:
    """Set the environment ultralytics reads at import, install the fonts, turn sync off; returns the config dir.

    Must run before the first `import ultralytics` (USER_CONFIG_DIR and ONLINE are fixed at import time);
    if ultralytics was already imported elsewhere, the fonts go into the folder it already uses.
    """
    global _configured
    import sys

    cfg = Path(config_dir) if config_dir is not None else default_config_dir()
    already_imported = "ultralytics" in sys.modules
    if not already_imported:
        os.environ["YOLO_CONFIG_DIR"] = str(cfg)
    os.environ["YOLO_OFFLINE"] = "1"         # is_online() -> False: no DNS probe, no hub, no asset fetch
    os.environ["YOLO_AUTOINSTALL"] = "false"  # never pip-install a missing optional package at run time
    if already_imported:
        from ultralytics.utils import USER_CONFIG_DIR
        _install_fonts(Path(USER_CONFIG_DIR))
    else:
        _install_fonts(cfg / "Ultralytics")
    from ultralytics import settings
    from ultralytics.utils import torch_utils
    import ultralytics.utils as uutils

    if settings.get("sync", False):
        settings.update({"sync": False})
    # ultralytics pins torch to cpu_count - 1 threads (1 on a 2-core machine) in select_device; raise it.
    n = int(threads or os.cpu_count() or 1)
    torch_utils.NUM_THREADS = n
    uutils.NUM_THREADS = n
    import torch

    torch.set_num_threads(n)
    _configured = cfg
    return cfg


def yolo():
    """The ultralytics YOLO class, with the offline environment in place."""
    if _configured is None:
        configure()
    from ultralytics import YOLO

    return YOLO
