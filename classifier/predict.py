"""Inference: the LevelGrades hand-off and a Classifier that loads its weights once and grades batches of patients.

On the CPU the network is loaded from its traced copy (classifier.torchscript, common/traced.py) when that
matches classifier.pt, so a run needs no timm (nor the torchvision it imports); otherwise it is built with timm.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from detector.boxes import LevelBoxes
from study.levels import CANAL_POSITIONS, DISCS
from study.study import Study
from common.files import sha256_of

from .config import ClassifierConfig
from .crops import LevelCrops, make_level_crops
from .data import batch_tensors
from .decision import apply_priors
from .prior import GradePrior, most_frequent

if TYPE_CHECKING:
    from .model import GradeNet

PathLike = Union[str, Path]
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "classifier"
WEIGHTS_FILE, CONFIG_FILE, CARD_FILE = "classifier.pt", "classifier.json", "MODEL_CARD.md"
TRACED_FILE = "classifier.torchscript"   # the same network, traced (common/traced.py)
FORMAT_VERSION = 1


@dataclass(frozen=True)
class LevelGrades:
    """One patient's grades: disc grade per DISCS, canal grade per CANAL_POSITIONS, with what fusion can use.

    disc_probabilities (5, 4) and canal_probabilities (11, 4) are the network's softmax (rows sum to 1);
    the grades apply the calibrated class priors to them. features (11, H) are the fused per-level
    vectors in CANAL_POSITIONS order; has_axial says which positions were graded with their axial image.

    not_graded: canal positions outside the field of view (LevelBoxes.outside_positions), in CANAL_POSITIONS
    order; a disc position there withholds that disc's grade too. Their grades are no reading: the grade is
    the training labels' most frequent one (predictions.json needs an integer; submitted_note says so) and
    their probability rows are those label frequencies. Reports show them as not graded.
    """

    patient_id: str
    disc_grades: tuple
    canal_grades: tuple
    disc_probabilities: np.ndarray
    canal_probabilities: np.ndarray
    features: np.ndarray
    has_axial: np.ndarray
    not_graded: Tuple[str, ...] = ()
    submitted_note: str = ""

    def disc_grade(self, disc: str) -> int:
        return self.disc_grades[DISCS.index(disc)]

    def canal_grade(self, position: str) -> int:
        return self.canal_grades[CANAL_POSITIONS.index(position)]


def pick_device(device: Optional[str] = None) -> torch.device:
    """CPU by default; CUDA when present (or whatever `device` names)."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _network(weights_path: Path, cfg: ClassifierConfig) -> "GradeNet":
    """The grading network built with timm from its state_dict (read with weights_only=True)."""
    from .model import GradeNet
    model = GradeNet(cfg)
    model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    return model.eval()


def export_traced(weights_dir: PathLike) -> Path:
    """Write weights_dir/classifier.torchscript, the traced copy of classifier.pt that `run` loads on the CPU."""
    from common.traced import save_traced

    weights_dir = Path(weights_dir)
    cfg = ClassifierConfig.from_dict(json.loads((weights_dir / CONFIG_FILE).read_text(encoding="utf-8"))["config"])
    g = torch.Generator().manual_seed(0)
    n = len(CANAL_POSITIONS)

    def batch(b: int) -> tuple:
        return (torch.randn(b, n, 3, cfg.sag_size, cfg.sag_size, generator=g),
                torch.randn(b, n, 1, cfg.ax_size, cfg.ax_size, generator=g), torch.rand(b, n, generator=g) > 0.2)
    return save_traced(_network(weights_dir / WEIGHTS_FILE, cfg), batch(4), [batch(1), batch(9)],
                       weights_dir / WEIGHTS_FILE, weights_dir / TRACED_FILE)


def _load_network(weights_dir: Path, device: Optional[str], meta: Optional[dict] = None):
    """One network of a classifier folder (classifier.pt checked against classifier.json's sha256; on the CPU
    its traced copy when that matches) and its metadata."""
    cfg_path, weights_path = weights_dir / CONFIG_FILE, weights_dir / WEIGHTS_FILE
    for p in (cfg_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"classifier weights folder {weights_dir} lacks {p.name}")
    meta = meta if meta is not None else json.loads(cfg_path.read_text(encoding="utf-8"))
    expected, actual = meta.get("weights_sha256"), sha256_of(weights_path)
    if expected and actual != expected:
        raise ValueError(f"{weights_path}: sha256 differs from the one in {cfg_path.name}; the files do not belong together")
    cfg = ClassifierConfig.from_dict(meta["config"])
    model = None
    if pick_device(device).type == "cpu":
        from common.traced import load_traced
        model = load_traced(weights_dir / TRACED_FILE, weights_path, actual)
    return (model if model is not None else _network(weights_path, cfg)), meta


# Test-time augmentation (`run --tta`): each crop is also read shifted and scaled a little, and the softmax
# outputs of all views are averaged. A view is (shift x, shift y, scale) in units of the crop side: a shift of
# 0.04 moves a 48-px crop by about 2 px (a quarter of the training jitter's range, jitter_shift 0.08 of the
# pitch), a scale of 1.06 zooms out by 6 % (training: jitter_scale 0.08).
IDENTITY_VIEW = (0.0, 0.0, 1.0)
TTA_VIEWS = (IDENTITY_VIEW, (0.04, 0.04, 1.0), (-0.04, -0.04, 1.0), (0.0, 0.0, 1.06), (0.0, 0.0, 0.94))


def warp_crops(x: torch.Tensor, dx: float, dy: float, scale: float) -> torch.Tensor:
    """Crops (B, N, C, H, W) resampled as if cut dx, dy crop sides further right/down and `scale` times as
    large (bilinear; outside the crop the border is repeated)."""
    import torch.nn.functional as F
    b, n, c, h, w = x.shape
    flat = x.reshape(b * n, c, h, w)
    theta = torch.tensor([[scale, 0.0, 2 * dx], [0.0, scale, 2 * dy]], dtype=flat.dtype, device=flat.device)
    grid = F.affine_grid(theta.expand(b * n, 2, 3), list(flat.shape), align_corners=False)
    return F.grid_sample(flat, grid, mode="bilinear", padding_mode="border", align_corners=False).reshape(x.shape)


class Classifier:
    """Trained grading network plus its config and decision priors, loaded once from a weights folder."""

    def __init__(self, model: "GradeNet", cfg: ClassifierConfig, device: Optional[str] = None, meta: Optional[dict] = None,
                 members: Sequence["GradeNet"] = (), tta: bool = False):
        """model: the network; members: more networks (the folds of an ensemble) whose softmax outputs are
        averaged with model's; tta: average each network over the TTA_VIEWS of every crop (test-time augmentation)."""
        self.cfg = cfg
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.models = [self.model] + [m.to(self.device).eval() for m in members]
        self.tta = tta
        self.meta = meta or {}
        # What a position outside the field of view submits (classifier.json label_prior).
        self.label_prior = GradePrior.from_meta(self.meta)

    @staticmethod
    def load(weights_dir: PathLike = DEFAULT_WEIGHTS, device: Optional[str] = None,
             threads: Optional[int] = None, tta: bool = False) -> "Classifier":
        """Load classifier.json and classifier.pt (a plain state_dict, read with weights_only=True).

        A folder whose classifier.json names an ensemble (classifier.folds) loads every fold's network, each
        from its own subfolder and checked against its own sha256; their probabilities are averaged."""
        weights_dir = Path(weights_dir)
        cfg_path = weights_dir / CONFIG_FILE
        if not cfg_path.is_file():
            raise FileNotFoundError(f"classifier weights folder {weights_dir} lacks {cfg_path.name}")
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{cfg_path}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
        if threads:
            torch.set_num_threads(threads)
        cfg = ClassifierConfig.from_dict(meta["config"])
        if meta.get("ensemble"):
            members = meta["ensemble"].get("members") or []
            if not members:
                raise ValueError(f"{cfg_path}: an ensemble without members")
            nets = [_load_network(weights_dir / m, device)[0] for m in members]
            return Classifier(nets[0], cfg, device, meta, members=nets[1:], tta=tta)
        return Classifier(_load_network(weights_dir, device, meta)[0], cfg, device, meta, tta=tta)

    def crops(self, study: Study, boxes: LevelBoxes) -> LevelCrops:
        return make_level_crops(study, boxes, self.cfg)

    @torch.no_grad()
    def probabilities(self, crops: Sequence[LevelCrops], batch_patients: int = 32):
        """Softmax outputs and features for each patient: (disc (N, 5, 4), canal (N, 11, 4), features (N, 11, H)).

        With several networks (an ensemble) or test-time augmentation, each batch goes through every network
        and view and the softmax outputs (and the fused features) are averaged."""
        disc, canal, feats = [], [], []
        views = TTA_VIEWS if self.tta else (IDENTITY_VIEW,)
        for i in range(0, len(crops), batch_patients):
            sag, ax, has = (t.to(self.device) for t in batch_tensors(crops[i:i + batch_patients]))
            d_sum = c_sum = f_sum = None
            for model in self.models:
                for view in views:
                    s_in, a_in = (sag, ax) if view == IDENTITY_VIEW else (warp_crops(sag, *view), warp_crops(ax, *view))
                    out = model(s_in, a_in, has)
                    d, c, f = torch.softmax(out["disc"], -1), torch.softmax(out["canal"], -1), out["features"]
                    d_sum, c_sum, f_sum = (d, c, f) if d_sum is None else (d_sum + d, c_sum + c, f_sum + f)
            n = len(self.models) * len(views)
            if n > 1:
                d_sum, c_sum, f_sum = d_sum / n, c_sum / n, f_sum / n
            disc.append(d_sum.cpu().numpy())
            canal.append(c_sum.cpu().numpy())
            feats.append(f_sum.cpu().numpy())
        return np.concatenate(disc), np.concatenate(canal), np.concatenate(feats)

    def grade_crops(self, crops: Sequence[LevelCrops]) -> List[LevelGrades]:
        """Grade already-cropped patients (every level of every patient goes through the network in batches)."""
        if not crops:
            return []
        disc, canal, feats = self.probabilities(crops)
        disc_g = apply_priors(disc, self.cfg.disc_priors)
        canal_g = apply_priors(canal, self.cfg.canal_priors)
        out = [LevelGrades(c.patient_id, tuple(int(g) for g in disc_g[k]), tuple(int(g) for g in canal_g[k]),
                           disc[k], canal[k], feats[k], c.has_axial.copy()) for k, c in enumerate(crops)]
        return [self._withhold(g, c.outside) if c.outside else g for g, c in zip(out, crops)]

    def _withhold(self, grades: LevelGrades, outside: Sequence[str]) -> LevelGrades:
        """The grades with every position in `outside` replaced by the training prior (see LevelGrades)."""
        prior = self.label_prior
        disc_g, canal_g = list(grades.disc_grades), list(grades.canal_grades)
        disc_p, canal_p = grades.disc_probabilities.copy(), grades.canal_probabilities.copy()
        for p in outside:
            i = CANAL_POSITIONS.index(p)
            canal_p[i] = prior.canal(p)
            canal_g[i] = most_frequent(canal_p[i])
            if p in DISCS:
                j = DISCS.index(p)
                disc_p[j] = prior.disc(p)
                disc_g[j] = most_frequent(disc_p[j])
        return LevelGrades(grades.patient_id, tuple(disc_g), tuple(canal_g), disc_p, canal_p, grades.features,
                           grades.has_axial, tuple(p for p in CANAL_POSITIONS if p in outside), prior.note)

    def predict(self, study: Study, boxes: LevelBoxes) -> LevelGrades:
        """Grade one patient from its Study and level boxes."""
        return self.grade_crops([self.crops(study, boxes)])[0]

    def predict_many(self, pairs: Iterable[tuple]) -> List[LevelGrades]:
        """Grade many (Study, LevelBoxes) pairs, batching their levels through the network."""
        return self.grade_crops([self.crops(s, b) for s, b in pairs])


def predict(studies: Sequence[Study], boxes: Sequence[LevelBoxes], weights_dir: PathLike = DEFAULT_WEIGHTS,
            device: Optional[str] = None) -> List[LevelGrades]:
    """Convenience: load the weights and grade each Study with its LevelBoxes (same order)."""
    if len(studies) != len(boxes):
        raise ValueError(f"{len(studies)} studies but {len(boxes)} box sets")
    return Classifier.load(weights_dir, device).predict_many(zip(studies, boxes))
