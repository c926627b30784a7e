"""The bad-input matrix end to end: one `run` over the 4 examples plus one patient per bad case.

Documented behaviour (README, `run`): an unusable patient gets one clear line in errors.json naming the
file and the problem and the run exits 1; a usable oddity (16-bit, RGB, 512x512, a missing axial image)
gives a warning in the patient's report and a result; an image that is not a spine (noise, all black,
levels missing or implausibly spaced) is read but flagged for human review with the reasons. The other
patients' results are exactly those of a clean run, and no traceback reaches the user.
"""
from __future__ import annotations

import html
import json

import pytest

from hardening_helpers import GOOD, NON_UTF8_ID, ODD_NAME, SOURCE, UNREADABLE

FAILED = {"bad-missing-sag", "bad-empty", "bad-not-png", "bad-truncated", "bad-bomb", "bad-link-loop",
          "zz-link-loop", UNREADABLE[0]}
READ = set(GOOD) | {"bad-missing-axial", "warn-missing-sag",
                    "warn-16bit", "warn-rgb", "warn-512", "ood-black", "ood-black-axial",
                    "ood-flat-sag", "ood-noise", "ood-cut", "ood-gap", ODD_NAME, NON_UTF8_ID}


@pytest.fixture(scope="module")
def run(bad_batch_run):
    return bad_batch_run


def error_of(run, pid: str, filename: str) -> str:
    """The patient's errors.json message; it names the patient and the file."""
    assert pid in run.errors, f"{pid} not in errors.json: {sorted(run.errors)}"
    message = run.errors[pid]
    assert pid in message and filename in message, message
    assert pid not in run.predictions
    return message


def warnings_of(run, pid: str):
    assert pid in run.predictions and pid not in run.errors
    return run.report(pid)["warnings"]


# ------------------------------------------------------------------------------------------------
# The batch as a whole
# ------------------------------------------------------------------------------------------------
def test_exit_code_1_every_patient_accounted_for_and_no_traceback(run):
    assert run.exit_code == 1, run.output            # documented: 1 = some patients failed, the rest complete
    assert set(run.errors) == FAILED
    assert set(run.predictions) == READ
    assert f"{len(READ) + len(FAILED)} patient(s): {len(READ)} read, {len(FAILED)} failed" in run.output
    assert isinstance(run.exception, SystemExit)     # the command exited; nothing escaped it
    assert "Traceback" not in run.output
    for message in run.errors.values():
        assert "Traceback" not in message and "File \"" not in message


def test_good_patients_are_identical_to_a_clean_run(run, examples_run):
    assert examples_run.exit_code == 0
    for pid in GOOD:
        assert run.predictions[pid] == examples_run.predictions[pid]
        # inputs included: file names are relative to each run's --input folder, so the two agree.
        assert run.report(pid) == examples_run.report(pid), pid
    assert [p for p in run.order if p in GOOD] == list(GOOD)   # input order kept


def test_failed_patients_are_listed_in_report_html(run):
    for pid in FAILED:
        assert f"<b>{html.escape(pid)}</b>" in run.html
    assert f"Failed patients ({len(FAILED)})" in run.html


# ------------------------------------------------------------------------------------------------
# Unusable: a clear error naming the file
# ------------------------------------------------------------------------------------------------
def test_missing_sagittal_slice(run):
    assert "no sagittal image" in error_of(run, "bad-missing-sag", "bad-missing-sag/sag")


def test_a_missing_sagittal_slice_is_read_with_a_stand_in_and_flagged(run):
    rep = run.report("warn-missing-sag")
    assert rep["levels"]["sagittal_standins"] == {"6": 5}
    assert any("sagittal slice 6 missing; slice 5 stands in for it as the mid slice" in w for w in rep["warnings"])
    assert rep["needs_review"] and any("sagittal slice(s) missing" in r for r in rep["review_reasons"])
    assert rep["levels"]["vertebrae"]["6"] == rep["levels"]["vertebrae"]["5"]


def test_empty_patient_folder(run):
    assert "patient folder is empty" in error_of(run, "bad-empty", "bad-empty")


def test_png_that_is_not_a_png(run):
    message = error_of(run, "bad-not-png", "sag/5.png")
    assert "not an image" in message
    # Importing the detector (ultralytics) patches PIL.Image.open to fetch a HEIF plugin for unknown files;
    # the loader must not go through it and report a missing module instead of the user's problem.
    assert "pi_heif" not in message and "Module" not in message


def test_truncated_png(run):
    assert "truncated" in error_of(run, "bad-truncated", "sag/7.png")


def test_decompression_bomb_is_refused_before_decoding(run):
    message = error_of(run, "bad-bomb", "sag/5.png")
    assert "too large to decode safely" in message or "decompression bomb" in message


def test_unreadable_file(run):
    assert "permission denied" in error_of(run, *UNREADABLE).lower()


def test_symlink_loops(run):
    # A slice that is a link to itself: that patient fails on that file.
    assert "Too many levels of symbolic links" in error_of(run, "bad-link-loop", "sag/6.png")
    # A patient entry that is a link to itself is reported, never silently dropped.
    assert "symbolic link that cannot be followed" in error_of(run, "zz-link-loop", "zz-link-loop")
    # A link back to the batch folder would read every patient twice: skipped (with a logged warning).
    assert not any("zz-link-to-root" in pid for pid in (*run.errors, *run.predictions))
    assert len(run.order) == len(set(run.order)) == len(READ)


# ------------------------------------------------------------------------------------------------
# Usable: a warning in the report and a result
# ------------------------------------------------------------------------------------------------
def test_missing_axial_image_is_graded_from_sagittal_and_flagged(run):
    warnings = warnings_of(run, "bad-missing-axial")
    assert any("tra/4-5.png" in w and "missing" in w for w in warnings)
    rep = run.report("bad-missing-axial")
    assert rep["canal"]["C4-5"]["axial_used"] is False
    assert sum(v["axial_used"] for v in rep["canal"].values()) == 10
    assert rep["needs_review"] and any("no axial image at C4-5" in r for r in rep["review_reasons"])


def test_sixteen_bit_png(run):
    warnings = warnings_of(run, "warn-16bit")
    assert sum("16-bit image" in w for w in warnings) == 14   # every image, each named
    assert any(w.startswith("sag/6.png: 16-bit") for w in warnings)


def test_rgb_png_reads_exactly_like_the_grey_original(run):
    warnings = warnings_of(run, "warn-rgb")
    assert sum("RGB image converted to grayscale" in w and "identical" in w for w in warnings) == 14
    assert run.predictions["warn-rgb"] == run.predictions[SOURCE]   # nothing was lost, so nothing changes


def test_512_pixel_images_are_resized(run):
    warnings = warnings_of(run, "warn-512")
    assert sum("512x512 image resized to 224x224" in w for w in warnings) == 14
    rep = run.report("warn-512")
    assert len(rep["canal"]) == 11 and len(rep["disc"]) == 5


def test_folder_names_with_dots_spaces_unicode_and_markup(run):
    # Same pixels as SOURCE under an odd name: the same reading, a report file of that name, escaped HTML.
    assert run.predictions[ODD_NAME] == run.predictions[SOURCE]
    assert run.report(ODD_NAME)["id"] == ODD_NAME
    assert f'id="p-{html.escape(ODD_NAME)}"' in run.html and "<i>&amp;" not in run.html
    assert (run.out / "reports" / f"{ODD_NAME}.json").is_file()


def test_folder_name_that_is_not_utf8(run):
    # The bad bytes become \xNN in the id, so predictions.json, errors.json and report.html stay valid UTF-8.
    assert run.predictions[NON_UTF8_ID] == run.predictions[SOURCE]
    assert run.report(NON_UTF8_ID)["id"] == NON_UTF8_ID
    for name in ("predictions.json", "errors.json", "report.html"):
        (run.out / name).read_bytes().decode("utf-8")
    assert NON_UTF8_ID in run.html


# ------------------------------------------------------------------------------------------------
# Not a spine: read, but flagged for human review (never confident grades silently)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pid, reason", [
    ("ood-noise", "not found on"),        # some levels on no slice, others on some slices only (each said so)
    ("ood-black", "C2, C3, C4, C5, C6, C7 not found on any sagittal slice"),
])
def test_image_that_is_not_a_spine_is_flagged_for_review(run, pid, reason):
    rep = run.report(pid)
    assert rep["needs_review"] and any(reason in r for r in rep["review_reasons"]), rep["review_reasons"]
    assert f'<section class="patient review" id="p-{pid}">' in run.html
    if pid == "ood-black":
        assert sum("carries no information" in w for w in rep["warnings"]) == 14


@pytest.mark.parametrize("pid, image", [("ood-black-axial", "tra/C4-5"), ("ood-flat-sag", "sag/5")])
def test_one_image_of_a_single_value_is_flagged_for_review(run, pid, image):
    # It used to give a warning only; the patient is read (every other image is fine) but flagged.
    rep = run.report(pid)
    assert any("same value" in w for w in rep["warnings"])
    assert rep["needs_review"] and any("same value in every pixel" in r and image in r
                                       for r in rep["review_reasons"]), rep["review_reasons"]
    assert f'<section class="patient review" id="p-{pid}">' in run.html


def test_no_output_names_a_folder_above_the_input(run):
    # reports/{id}.json "inputs" and errors.json used to hold absolute paths: a parent folder named after
    # the patient would leak. File names are now relative to --input (run.json records --input itself).
    above = str(run.root.parent)
    assert run.report(SOURCE)["inputs"]["sag/6"] == f"{SOURCE}/sag/6.png"
    assert run.errors["bad-missing-sag"].startswith("patient bad-missing-sag, file bad-missing-sag/sag:")
    for f in run.out.rglob("*"):
        if f.is_file() and f.name != "run.json":
            assert above.encode() not in f.read_bytes(), f.relative_to(run.out)


def test_every_output_file_is_valid(run):
    # every output the run promises is there (a run that wrote nothing must fail here, not pass)
    for name in ("predictions.json", "errors.json", "run.json", "report.html"):
        assert (run.out / name).is_file(), name
    reports = sorted(p.stem for p in (run.out / "reports").glob("*.json"))
    # one report per patient read, one errors.json row per patient failed, and both lists non-empty here
    assert reports == sorted(run.predictions) and len(reports) > 0 and len(run.errors) > 0
    assert not set(reports) & set(run.errors)
    for f in run.out.rglob("*.json"):
        json.loads(f.read_text(encoding="utf-8"))
    run.html.encode("utf-8")
