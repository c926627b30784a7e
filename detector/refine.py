"""Box refinement: a small CNN that moves each vertebra box's edges onto the body seen in a crop around it."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch import nn

from study.challenge import Box, read_box_file
from study.levels import VERTEBRAE

from .config import AppearanceConfig, DetectorConfig, TrainConfig

PathLike = Union[str, Path]
REFINE_FILE = "refine.pt"


class RefineNet(nn.Module):
    """Crop (1 x S x S, centred on a box, side proportional to the box) + level one-hot -> 4 edge offsets."""

    def __init__(self, size: int = 48, n_levels: int = len(VERTEBRAE), width: int = 16):
        super().__init__()
        self.size, self.n_levels = size, n_levels
        chans = [1, width, 2 * width, 4 * width, 6 * width]
        layers: List[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.SiLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        flat = chans[-1] * (size // 16) ** 2
        self.head = nn.Sequential(nn.Linear(flat + n_levels, 128), nn.SiLU(), nn.Linear(128, 4))

    def forward(self, crops: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        f = self.features(crops).flatten(1)
        onehot = nn.functional.one_hot(levels, self.n_levels).float()
        return self.head(torch.cat([f, onehot], 1))


def crop_side(w: np.ndarray, h: np.ndarray, cfg: DetectorConfig) -> np.ndarray:
    """Crop side in image pixels: a margin around the box so its edges and neighbours' are in view."""
    return np.clip(cfg.refine_context * np.maximum(w, h), cfg.refine_min_side, cfg.refine_max_side)


def extract_crops(image: np.ndarray, centres: np.ndarray, sides: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size) crops resampled so that `sides[i]` image pixels span `size` crop pixels (sub-pixel exact)."""
    out = np.empty((len(centres), size, size), np.float32)
    img = image.astype(np.float32)
    for i, ((cx, cy), side) in enumerate(zip(centres, sides)):
        s = side / size
        # Affine map crop pixel centres to image coordinates (pixel-centre convention on both sides).
        m = np.array([[s, 0, cx - side / 2 + s / 2 - 0.5], [0, s, cy - side / 2 + s / 2 - 0.5]], np.float32)
        out[i] = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return out


def encode(boxes: np.ndarray, centres: np.ndarray, sides: np.ndarray) -> np.ndarray:
    """xyxy boxes -> offsets of each edge from the crop centre, in crop half-sides."""
    half = (sides / 2)[:, None]
    c = np.concatenate([centres, centres], 1)
    return (boxes - c) / half


def decode(offsets: np.ndarray, centres: np.ndarray, sides: np.ndarray) -> np.ndarray:
    half = (sides / 2)[:, None]
    return offsets * half + np.concatenate([centres, centres], 1)


class Refiner:
    """Loaded RefineNet + the settings it was trained with; refine() moves boxes, never reorders levels."""

    def __init__(self, net: RefineNet, cfg: DetectorConfig):
        self.net = net.eval()
        self.cfg = cfg

    @classmethod
    def load(cls, path: PathLike, cfg: DetectorConfig) -> "Refiner":
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        net = RefineNet(int(state["size"].item()), int(state["n_levels"].item()), int(state["width"].item()))
        net.load_state_dict({k: v for k, v in state.items() if k not in ("size", "n_levels", "width")})
        return cls(net, cfg)

    def refine(self, image: np.ndarray, boxes: np.ndarray, levels: np.ndarray) -> np.ndarray:
        """(N, 4) xyxy boxes on one normalised slice -> refined boxes, refine_passes times re-centred."""
        return self.refine_many([(image, boxes, levels)])[0]

    @torch.no_grad()
    def refine_many(self, requests: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray]]) -> List[np.ndarray]:
        """refine() for several (image, boxes, levels) at once: one network call per pass for all of them
        (a patient's three slices in one batch: the per-call overhead dominated at 6 crops a call)."""
        if not requests:
            return []
        counts = [len(b) for _, b, _ in requests]
        owner = np.repeat(np.arange(len(requests)), counts)
        out = np.concatenate([np.asarray(b, np.float64).reshape(-1, 4) for _, b, _ in requests]).copy()
        levels = np.concatenate([np.asarray(lv, np.int64).reshape(-1) for _, _, lv in requests])
        for _ in range(self.cfg.refine_passes):
            centres = np.stack([(out[:, 0] + out[:, 2]) / 2, (out[:, 1] + out[:, 3]) / 2], 1)
            sides = crop_side(out[:, 2] - out[:, 0], out[:, 3] - out[:, 1], self.cfg)
            crops = np.concatenate([extract_crops(img, centres[owner == k], sides[owner == k], self.net.size)
                                    for k, (img, _, _) in enumerate(requests)])
            off = self.net(torch.from_numpy(crops)[:, None], torch.from_numpy(levels)).numpy()
            new = decode(off.astype(np.float64), centres, sides)
            # A refiner only nudges: a large jump means the crop showed something else; keep the detection there.
            step = np.abs(new - out).max(1)
            limit = self.cfg.refine_max_shift * np.maximum(out[:, 3] - out[:, 1], 1.0)
            ok = (step <= limit) & (new[:, 2] > new[:, 0] + 1) & (new[:, 3] > new[:, 1] + 1)
            out[ok] = new[ok]
        return np.split(out, np.cumsum(counts)[:-1])


def _training_samples(layout_dir: Path, boxes_file: Path, ids: Sequence[str], cfg: DetectorConfig):
    from study.loader import present_slices, read_image

    from .preprocess import normalise_slice
    truth = read_box_file(boxes_file).by_id()
    images, boxes, levels, owners = [], [], [], []
    for pid in ids:
        for s in present_slices(layout_dir / pid):   # a slice the patient lacks: its boxes are not learnt from
            img, _ = read_image(layout_dir / pid / "sag" / f"{s}.png")   # as the detector reads it at inference
            images.append(normalise_slice(img, cfg))
            for li, lv in enumerate(VERTEBRAE):
                b: Box = truth[pid].boxes[s][lv]
                boxes.append(b.as_tuple())
                levels.append(li)
                owners.append(len(images) - 1)
    return images, np.array(boxes, np.float64), np.array(levels, np.int64), np.array(owners)


def train_refiner(layout_dir: PathLike, boxes_file: PathLike, train_ids: Sequence[str], out_path: PathLike,
                  cfg: DetectorConfig, tc: TrainConfig, verbose: bool = True) -> Dict[str, float]:
    """Fit RefineNet on jittered crops of the training patients' true boxes (appearance-randomised like YOLO's input)."""
    from .augment import randomise_appearance

    t0 = time.perf_counter()
    rng = np.random.default_rng(tc.seed)
    torch.manual_seed(tc.seed)
    images, boxes, levels, owners = _training_samples(Path(layout_dir), Path(boxes_file), train_ids, cfg)
    net = RefineNet(cfg.refine_size)
    opt = torch.optim.AdamW(net.parameters(), lr=tc.refine_lr, weight_decay=1e-4)
    n = len(boxes)
    steps = tc.refine_epochs * int(np.ceil(n / tc.refine_batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tc.refine_lr, total_steps=steps, pct_start=0.1)
    appearance = tc.appearance
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    loss_hist = []
    for epoch in range(tc.refine_epochs):
        order = rng.permutation(n)
        net.train()
        total = 0.0
        for start in range(0, n, tc.refine_batch):
            idx = order[start:start + tc.refine_batch]
            # Jitter the centre and the apparent size as YOLO's boxes are off: the refiner sees what predict gives it.
            jit = rng.normal(0, tc.refine_jitter_px, (len(idx), 2)).clip(-3 * tc.refine_jitter_px, 3 * tc.refine_jitter_px)
            centres = np.stack([(boxes[idx, 0] + boxes[idx, 2]) / 2, (boxes[idx, 1] + boxes[idx, 3]) / 2], 1) + jit
            size_jit = rng.uniform(0.85, 1.15, len(idx))
            sides = crop_side(w[idx] * size_jit, h[idx] * size_jit, cfg)
            crops = np.empty((len(idx), cfg.refine_size, cfg.refine_size), np.float32)
            for k, i in enumerate(idx):
                c = extract_crops(images[owners[i]], centres[k:k + 1], sides[k:k + 1], cfg.refine_size)[0]
                crops[k] = randomise_appearance(c, _crop_appearance(appearance), rng)
            target = torch.from_numpy(encode(boxes[idx], centres, sides).astype(np.float32))
            pred = net(torch.from_numpy(crops)[:, None], torch.from_numpy(levels[idx]))
            loss = nn.functional.smooth_l1_loss(pred, target, beta=0.02)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        loss_hist.append(total / n)
        if verbose:
            print(f"refiner epoch {epoch + 1}/{tc.refine_epochs}: loss {loss_hist[-1]:.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    state = {k: v for k, v in net.state_dict().items()}
    state.update(size=torch.tensor(cfg.refine_size), n_levels=torch.tensor(len(VERTEBRAE)),
                 width=torch.tensor(16))
    out_path = Path(out_path)
    tmp = out_path.with_suffix(".tmp")
    torch.save(state, str(tmp))
    tmp.replace(out_path)
    return {"seconds": time.perf_counter() - t0, "final_loss": loss_hist[-1], "samples": n}


def _crop_appearance(a: AppearanceConfig) -> AppearanceConfig:
    # Crops are small: no FOV blackout (it would erase the body) and no whole-image histogram tricks.
    from dataclasses import replace
    return replace(a, p_fov_crop=0.0, p_partial_fov=0.0, p_equalize=0.0)
