"""End-to-end challenge score of a weights folder on patients it never saw, with detector boxes and with oracle boxes.

`python -m evaluation.end_to_end --data PHANTOM_DIR --holdout weights/holdout.json --out runs/e2e` reads
the hold-out patients twice with one Reader (what `pipeline.py run` does), writing a run folder for each mode, of a labelled challenge-layout folder: once as a user
would (the detector places the levels) and once with the folder's own boxes (oracle mode), and scores
both by the challenge metric. The gap between the two is the detector's share of the error. It writes
e2e.json and e2e.md (the table the README shows) into OUT.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Set, Tuple

import click

from common.files import write_json_atomic
from study.challenge import read_box_file, read_labels, write_box_file, write_labels
from study.splits import read_holdout, split_key

from .metrics import ScoreReport, bootstrap_interval, challenge_score

ROOT = Path(__file__).resolve().parent.parent


def holdout_view(data_dir: Path, ids: Set[str], view: Path) -> Tuple[Path, Path, List[str]]:
    """A folder of links to the patients whose geometry is in `ids` (variants left out), with their labels and boxes."""
    labels = [lab for lab in read_labels(data_dir / "labels.json")
              if lab.patient_id in ids and lab.patient_id == split_key(lab.patient_id)]
    boxes = [p for p in read_box_file(data_dir / "boxes.json").patients if p.patient_id in ids]
    view.mkdir(parents=True, exist_ok=True)
    kept = []
    for lab in labels:
        src = data_dir / lab.patient_id
        if src.is_dir():
            link = view / lab.patient_id
            if not link.exists():
                os.symlink(src.resolve(), link)
            kept.append(lab.patient_id)
    write_labels(view.parent / "labels.json", [lab for lab in labels if lab.patient_id in kept])
    write_box_file(view.parent / "boxes.json", [b for b in boxes if b.patient_id in kept])
    return view.parent / "labels.json", view.parent / "boxes.json", kept


def _summary(rep: ScoreReport) -> Dict[str, float]:
    return {"score": round(rep.score, 4), **{t.task: round(t.value, 4) for t in rep.tasks}}


def end_to_end(data_dir: Path, holdout: Set[str], out_dir: Path, weights: Path, data_name: str,
               batch_size: int = 16) -> Dict[str, object]:
    """Run and score both modes; returns what e2e.json holds."""
    from reader import Reader, ReaderError
    from reader.folder import run_folder
    out_dir = Path(out_dir)
    labels_file, boxes_file, kept = holdout_view(Path(data_dir), holdout, out_dir / "data" / "patients")
    if not kept:
        raise click.ClickException(f"none of the {len(holdout)} hold-out ids has a patient folder in {data_dir}")
    truth = read_labels(labels_file)
    result: Dict[str, object] = {"data": data_name or str(data_dir), "n_patients": len(kept), "weights": str(weights),
                                 "modes": {}}
    try:
        reader = Reader.from_weights(weights, "cpu")   # loaded once for both modes
    except ReaderError as e:
        raise click.ClickException(str(e)) from None
    for mode, boxes in (("detector boxes (full pipeline)", None), ("oracle boxes (--boxes)", boxes_file)):
        run_out = out_dir / ("run_detector" if boxes is None else "run_oracle")
        code = run_folder(out_dir / "data" / "patients", run_out, weights, boxes_file=boxes, batch_size=batch_size,
                          reader=reader, echo=click.echo, overwrite=True)   # this tool's own folder
        if not (run_out / "predictions.json").is_file():
            raise click.ClickException(f"run ({mode}) wrote no predictions (exit code {code}); see the message above")
        pred = read_labels(run_out / "predictions.json")
        rep = challenge_score(truth, pred)
        errors = json.loads((run_out / "errors.json").read_text())
        lo, hi = bootstrap_interval(truth, pred)
        result["modes"][mode] = {**_summary(rep), "score_interval_95": [round(lo, 4), round(hi, 4)],
                                 "exit_code": code, "failed": len(errors),
                                 "seconds": json.loads((run_out / "run.json").read_text())["stage_seconds"]}
    write_json_atomic(out_dir / "e2e.json", result)
    (out_dir / "e2e.md").write_text(markdown(result), encoding="utf-8")
    return result


def markdown(result: Dict[str, object]) -> str:
    modes = result["modes"]
    tasks = [k for k in next(iter(modes.values()))
             if k not in ("score", "score_interval_95", "exit_code", "failed", "seconds")]
    lines = [f"End-to-end on {result['n_patients']} patients of {result['data']} (never trained on):", "",
             "| boxes | challenge score | 95 % interval | " + " | ".join(tasks) + " | failed |",
             "|---|---|---|" + "---|" * len(tasks) + "---|"]
    for mode, m in modes.items():
        lo, hi = m.get("score_interval_95", (float("nan"), float("nan")))
        lines.append(f"| {mode} | **{m['score']:.4f}** | {lo:.3f}-{hi:.3f} | "
                     + " | ".join(f"{m[t]:.3f}" for t in tasks) + f" | {m['failed']} |")
    lines += ["", "95 % interval: percentiles of the score over 1000 resamples of the patients (bootstrap); "
              "how far another draw of as many such patients could move it."]
    return "\n".join(lines) + "\n"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Labelled challenge-layout folder (labels.json + boxes.json), e.g. renders of the real geometries.")
@click.option("--holdout", "holdout_file", required=True, type=click.Path(path_type=Path, exists=True),
              help="holdout.json of the geometries no stage trained on (weights/holdout.json).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--weights", "weights_dir", type=click.Path(path_type=Path), default=ROOT / "weights", show_default=True)
@click.option("--data-name", default="", help="How e2e.md names the data.")
def main(data_dir, holdout_file, out_dir, weights_dir, data_name):
    """Score a weights folder end to end on never-seen patients, with detector and with oracle boxes."""
    result = end_to_end(data_dir, read_holdout(holdout_file), out_dir, weights_dir, data_name)
    click.echo(markdown(result))


if __name__ == "__main__":
    main()
