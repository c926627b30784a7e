"""`pipeline.py synth`: render phantom patients to a folder."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Optional

import click

from study.errors import InputError

from .generate import builtin_specs, generate, generate_realistic, real_geometry_specs
from .variants import VARIANTS, variant_specs

DEFAULT_N = 10


def synth_command(out_dir: Path, n_patients: Optional[int], seed: int, boxes_file: Optional[Path],
                  labels_file: Optional[Path], workers: Optional[int] = None, variant: Optional[str] = None,
                  draw_curvature: bool = False, realistic: int = 0) -> int:
    """Render phantoms; returns the exit code: 0 all written, 1 some patients skipped (listed in
    phantom.json and on stderr), 2 bad arguments or input files."""
    if (boxes_file is None) != (labels_file is None):
        click.echo("error: --boxes and --labels go together", err=True)
        return 2
    if draw_curvature and boxes_file is None:
        click.echo("error: --draw-curvature bends real geometries: give --boxes and --labels "
                   "(built-in phantoms always draw curvature in its band)", err=True)
        return 2
    if variant is not None and boxes_file is None:
        click.echo("error: --variant renders variants of real geometries: give --boxes and --labels", err=True)
        return 2
    if n_patients is not None and n_patients < 1:
        click.echo("error: --n must be at least 1", err=True)
        return 2
    try:
        if boxes_file is not None:
            specs = real_geometry_specs(boxes_file, labels_file, n_patients, draw_curvature)
            mode = f"real geometry from {boxes_file.name} + {labels_file.name}" + (
                ", curvature drawn in its label's band" if draw_curvature else "")
            if variant is not None:
                specs = variant_specs(variant, specs, seed)
                mode = f"{VARIANTS[variant]} of {boxes_file.name} + {labels_file.name}"
        else:
            specs = builtin_specs(n_patients or DEFAULT_N, seed)
            mode = "built-in statistical model"
    except InputError as e:
        click.echo(f"error: {e}", err=True)
        return 2
    workers = workers or min(len(specs), os.cpu_count() or 1)
    t0 = time.perf_counter()
    if realistic:
        mode += f", realistic framing x{realistic}"
        labels, skipped = generate_realistic(out_dir, specs, seed, mode, realistic, workers=workers,
                                             progress=sys.stderr.isatty())
    else:
        labels, _, skipped = generate(out_dir, specs, seed, mode, workers=workers, progress=sys.stderr.isatty())
    for s in skipped:
        click.echo(f"warning: patient {s['id']} skipped: {s['skipped']}", err=True)
    click.echo(f"wrote {len(labels)} phantom patient(s) ({mode}, seed {seed}) to {out_dir} "
               f"in {time.perf_counter() - t0:.1f} s" + (f"; {len(skipped)} skipped" if skipped else ""))
    return 1 if skipped else 0
