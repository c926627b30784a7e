"""Inference: a Detector loads the weights once, batches slices through YOLO and returns LevelBoxes.

On the CPU the network is loaded from its traced copy (best.torchscript, common/traced.py) when that
matches best.pt, so a run needs neither ultralytics nor torchvision; otherwise it is built with ultralytics.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from common.config import load_config
from common.files import sha256_of
from study.levels import DISCS, SAGITTAL_SLICES, VERTEBRAE
from study.study import Study

from .anatomy import Candidates, assemble
from .boxes import LevelBoxes
from .config import DetectorConfig, from_dict, to_dict
from .preprocess import normalise_slice  # noqa: F401  (also imported from here by detector.dataset)
from .refine import REFINE_FILE

PathLike = Union[str, Path]
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WEIGHTS_DIR = ROOT / "weights" / "detector"
WEIGHTS_FILE = "best.pt"
TRACED_FILE = "best.torchscript"   # the same network, traced (common/traced.py)
CONFIG_FILE = "config.json"


def write_weights_config(weights_dir: Path, cfg: DetectorConfig, extra: Optional[dict] = None) -> Path:
    """config.json beside best.pt: input size, normalisation, classes, thresholds and the weights' sha256."""
    data = {"detector": to_dict(cfg), "classes": list(cfg.names),
            "input": {"size": cfg.imgsz, "channels": 3, "range": "[0, 1] after percentile normalisation",
                      "norm_percentile": cfg.norm_percentile, "norm_target": cfg.norm_target},
            "weights": WEIGHTS_FILE, "sha256": sha256_of(weights_dir / WEIGHTS_FILE)}
    if (weights_dir / REFINE_FILE).is_file():
        data["refiner"] = {"weights": REFINE_FILE, "sha256": sha256_of(weights_dir / REFINE_FILE)}
    data.update(extra or {})
    path = weights_dir / CONFIG_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
    return path


class Detector:
    """YOLO + anatomical assignment. Build with Detector.from_weights(); call predict(study)."""

    def __init__(self, model: torch.nn.Module, config: DetectorConfig, device: Union[str, torch.device] = "cpu",
                 source: str = "", refiner=None):
        self.config = config
        self.refiner = refiner if config.refine else None
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.source = source
        n_out = len(config.names)
        self._n_vert_classes = len(VERTEBRAE) if config.class_design == "levels" else 1
        self._n_classes = n_out

    @classmethod
    def from_weights(cls, weights_dir: Optional[PathLike] = None, device: Optional[str] = None,
                     overrides: Optional[dict] = None) -> "Detector":
        """Load weights_dir/best.pt and config.json (default: the shipped weights/detector)."""
        weights_dir = Path(weights_dir) if weights_dir is not None else DEFAULT_WEIGHTS_DIR
        cfg_path, pt = weights_dir / CONFIG_FILE, weights_dir / WEIGHTS_FILE
        if not pt.is_file():
            raise FileNotFoundError(f"no detector weights at {pt}")
        # config.json's "detector" block over the defaults, then the overrides (unknown keys, wrong types refused)
        cfg = load_config(DetectorConfig, cfg_path if cfg_path.is_file() else None, overrides, key="detector")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        network = None
        if torch.device(device).type == "cpu":
            from common.traced import load_traced
            network = load_traced(weights_dir / TRACED_FILE, pt)
        refiner = None
        if cfg.refine and (weights_dir / REFINE_FILE).is_file():
            from .refine import Refiner
            refiner = Refiner.load(weights_dir / REFINE_FILE, cfg)
        elif cfg.refine:
            cfg = replace(cfg, refine=False)  # weights without a refiner (e.g. trained with refine off)
        return cls(network if network is not None else load_network(pt), cfg, device, source=str(pt),
                   refiner=refiner)

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def raw(self, images: np.ndarray) -> List[Tuple[Candidates, Candidates]]:
        """(vertebra, disc) candidates for each image of an (N, H, W) float stack, in image pixels."""
        cfg = self.config
        n, h, w = images.shape
        batch = np.stack([normalise_slice(im, cfg) for im in images])
        if (h, w) != (cfg.imgsz, cfg.imgsz):
            batch = np.stack([cv2.resize(im, (cfg.imgsz, cfg.imgsz), interpolation=cv2.INTER_AREA
                                         if h > cfg.imgsz else cv2.INTER_LINEAR) for im in batch])
        x = torch.from_numpy(batch).to(self.device)[:, None].expand(-1, 3, -1, -1).contiguous()
        out = self.model(x)
        pred = out[0] if isinstance(out, (list, tuple)) else out
        pred = pred.float().cpu()  # (N, 4 + nc, anchors): xywh in input pixels, per-class sigmoid scores
        scale = torch.tensor([w / cfg.imgsz, h / cfg.imgsz, w / cfg.imgsz, h / cfg.imgsz])
        result = []
        for i in range(n):
            p = pred[i].T
            xyxy = torch.cat([p[:, :2] - p[:, 2:4] / 2, p[:, :2] + p[:, 2:4] / 2], 1) * scale
            scores = p[:, 4:]
            nv = self._n_vert_classes
            result.append((self._pool(xyxy, scores[:, :nv]), self._pool(xyxy, scores[:, nv:])))
        return result

    def _pool(self, xyxy: torch.Tensor, scores: torch.Tensor) -> Candidates:
        cfg = self.config
        best = scores.max(1).values
        keep = best > cfg.candidate_conf
        xyxy, scores, best = xyxy[keep], scores[keep], best[keep]
        # Class-agnostic NMS: a box that looks like both C4 and C5 stays one candidate with both scores,
        # and the assignment, not the NMS, decides which level it is.
        idx = nms(xyxy, best, cfg.nms_iou)[: cfg.max_candidates]
        return Candidates(xyxy[idx].numpy().astype(np.float64), scores[idx].numpy().astype(np.float64))

    def predict(self, study: Study) -> LevelBoxes:
        return self.predict_batch([study])[0]

    def predict_batch(self, studies: Sequence[Study], batch_slices: int = 48) -> List[LevelBoxes]:
        """LevelBoxes for each study; slices of several studies go through the network together.

        A slice standing in for a missing one (Study.sagittal_standins) is not read twice: the levels are placed
        on the distinct images only (Study.sagittal_views, so the cross-slice consensus counts each image once)
        and the stand-in slice gets its source's boxes."""
        stacks = [(st.patient_id, st.sagittal_stack()) for st in studies]
        views = [st.sagittal_views for st in studies]
        flat = [(k, si, img) for k, (_, stack) in enumerate(stacks) for si, img in enumerate(stack)
                if SAGITTAL_SLICES[si] in views[k]]
        raw: Dict[Tuple[int, int], Tuple[Candidates, Candidates]] = {}
        normalised = {(k, si): normalise_slice(img, self.config) for k, si, img in flat} if self.refiner else {}
        shapes = sorted({img.shape for _, _, img in flat})
        for shape in shapes:  # the loader resamples to 224 already; this only guards odd inputs
            group = [(k, si, img) for k, si, img in flat if img.shape == shape]
            for start in range(0, len(group), batch_slices):
                chunk = group[start:start + batch_slices]
                for (k, si, _), r in zip(chunk, self.raw(np.stack([g[2] for g in chunk]))):
                    raw[(k, si)] = r
        out = []
        for k, (pid, _) in enumerate(stacks):
            vert = {s: raw[(k, si)][0] for si, s in enumerate(SAGITTAL_SLICES) if s in views[k]}
            disc = {s: raw[(k, si)][1] for si, s in enumerate(SAGITTAL_SLICES) if s in views[k]}
            refine = None
            if self.refiner is not None:
                def refine(requests, k=k):
                    order = list(requests)
                    done = self.refiner.refine_many([(normalised[(k, SAGITTAL_SLICES.index(s))], *requests[s])
                                                     for s in order])
                    return dict(zip(order, done))
            fov = {s: studies[k].field_of_view(s) for s in views[k]}
            found = assemble(pid, vert, disc, self.config, refine, fov)
            if studies[k].sagittal_standins:
                found = replace(found, vertebrae=studies[k].to_all_slices(found.vertebrae),
                                discs=studies[k].to_all_slices(found.discs))
            out.append(found)
        return out


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression as torchvision.ops.nms (same float32 IoU, kept when IoU <= threshold):
    indices of the kept boxes by decreasing score. Here so that inference needs no torchvision."""
    if len(boxes) == 0:
        return torch.empty(0, dtype=torch.long)
    order = torch.argsort(scores, descending=True, stable=True)
    b = boxes[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    wh = (torch.minimum(b[:, None, 2:], b[None, :, 2:]) - torch.maximum(b[:, None, :2], b[None, :, :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    over = (inter / (area[:, None] + area[None, :] - inter) > iou_threshold).numpy()
    suppressed = np.zeros(len(b), bool)
    keep = []
    for i in range(len(b)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= over[i]
    return order[torch.tensor(keep, dtype=torch.long)]


class _FirstOutput(torch.nn.Module):
    """The network's prediction tensor alone (ultralytics returns it with the raw head maps in eval mode)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[0] if isinstance(out, (list, tuple)) else out


def export_traced(weights_dir: PathLike) -> Path:
    """Write weights_dir/best.torchscript, the traced copy of best.pt that `run` loads on the CPU."""
    from common.traced import save_traced

    weights_dir = Path(weights_dir)
    meta = json.loads((weights_dir / CONFIG_FILE).read_text()) if (weights_dir / CONFIG_FILE).is_file() else {}
    size = from_dict(DetectorConfig, dict(meta.get("detector", {}))).imgsz
    g = torch.Generator().manual_seed(0)

    def batch(n: int) -> tuple:
        return (torch.rand(n, 3, size, size, generator=g),)
    return save_traced(_FirstOutput(load_network(weights_dir / WEIGHTS_FILE)), batch(4), [batch(1), batch(7)],
                       weights_dir / WEIGHTS_FILE, weights_dir / TRACED_FILE)


def load_network(pt: PathLike) -> torch.nn.Module:
    """The fused, eval-mode network from an ultralytics checkpoint (local file; nothing is fetched)."""
    from .yolo_env import yolo

    model = yolo()(str(pt)).model
    model = model.fuse(verbose=False) if hasattr(model, "fuse") else model   # no "summary (fused)" line
    for p in model.parameters():
        p.requires_grad_(False)
    return model.float().eval()


_DEFAULT: Optional[Detector] = None


def default_detector() -> Detector:
    """The shipped detector, loaded once per process."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Detector.from_weights()
    return _DEFAULT


def predict(study: Study, detector: Optional[Detector] = None) -> LevelBoxes:
    """Stage 1 on one Study: exactly one box per level C2..C7 per slice, in order, and the five discs."""
    return (detector or default_detector()).predict(study)
