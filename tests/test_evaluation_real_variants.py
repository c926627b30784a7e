"""Real-scan variants (evaluation.real_variants): labels move with the image, intensities change only images."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from evaluation import real_scans as rs
from evaluation.real_variants import VARIANTS, variant_of, write_variants
from test_evaluation_real_scans import SHAPE, points_volume, save

LANDMARK = {2: (40, 150, 22), 9: (44, 60, 21)}   # C2 high up, T2 low down; both well inside the volume


@pytest.fixture()
def scan(tmp_path):
    image = np.random.default_rng(1).random(SHAPE).astype(np.float32) + 1.0
    root = tmp_path / "bids"
    save(root / "sub-a" / "anat" / "sub-a_T2w.nii.gz", image)
    save(root / "derivatives" / "labels" / "sub-a" / "anat" / "sub-a_T2w_landmarks-C2-T2.nii.gz",
         points_volume(LANDMARK))
    [s] = rs.find_scans(root)
    return s


def _points(scan_) -> dict:
    [lf] = [rs.read_label_file(p) for p in scan_.label_paths]
    return {v: np.asarray(p) for v, p in lf.points.items()}


def test_every_variant_keeps_each_label_where_the_anatomy_went(scan, tmp_path):
    written = {variant_of(v.scan_id): v for v in write_variants([scan], tmp_path / "v", list(VARIANTS))}
    assert set(written) == set(VARIANTS)
    original = _points(scan)
    img0, _ = rs.load_volume(scan.image)
    for name, v in written.items():
        assert v.scan_id == f"sub-a-variant-{name}" and v.image.is_file()
        img, aff = rs.load_volume(v.image)
        pts = _points(v)
        if name == "tilt":       # the whole scan turned 15 degrees about left-right: points turn with it
            t = np.deg2rad(15.0)
            turn = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
            lps = np.diag([-1.0, -1.0, 1.0])
            for k in original:
                assert pts[k] == pytest.approx(lps @ turn @ lps @ original[k], abs=1e-3)
        elif name == "slabs":    # a point moves only across, into its slab (at most half a slab gap)
            for k in original:
                assert pts[k][1:] == pytest.approx(original[k][1:], abs=1e-3)
                assert abs(pts[k][0] - original[k][0]) <= 3.5 / 2 + 1e-6
        else:                    # moved voxels, cut fields of view: a kept point stays where it was
            assert set(pts) <= set(original) and pts
            for k in pts:
                assert pts[k] == pytest.approx(original[k], abs=1e-3)
        if name in ("noise", "bias"):
            assert img.shape == img0.shape and not np.allclose(img, img0)
        if name == "short":
            assert set(pts) == {2}                  # the lower part, with T2, is cut away
    again = write_variants([scan], tmp_path / "w", ["noise"])[0]
    assert np.array_equal(rs.load_volume(again.image)[0], rs.load_volume(written["noise"].image)[0])  # seeded


def test_unknown_variant_is_refused_naming_the_known_ones(scan, tmp_path):
    with pytest.raises(ValueError, match="unknown variant"):
        write_variants([scan], tmp_path, ["blur"])
    res = CliRunner().invoke(rs.main, ["--data", str(scan.image.parents[2]), "--variants", "blur",
                                       "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "--variants blur: unknown" in res.output and "offcentre" in res.output
