"""The grading network: two timm backbones (sagittal 2.5D, axial), a level embedding, canal and disc heads."""
from __future__ import annotations

from typing import Dict

import timm
import torch
from torch import nn

from study.levels import CANAL_GRADES, CANAL_POSITIONS, DISC_CANAL_INDEX, DISC_GRADES, DISCS

from .config import ClassifierConfig

N_POSITIONS = len(CANAL_POSITIONS)
DISC_INDEX = torch.tensor([DISC_CANAL_INDEX[d] for d in DISCS])


def _backbone(name: str, in_chans: int, cfg: ClassifierConfig) -> nn.Module:
    kwargs = {}
    if name.startswith("resnet"):
        # Narrow ResNets: 64-px crops of a few structures do not need ImageNet widths, and CPU time does.
        kwargs = {"channels": tuple(cfg.backbone_channels), "stem_width": cfg.stem_width}
    return timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=0, **kwargs)


def _feature_dim(net: nn.Module, in_chans: int, size: int) -> int:
    # num_features is not the pooled width for every timm family (mobilenetv3 adds a head conv).
    with torch.no_grad():
        was_training = net.training
        net.eval()
        dim = int(net(torch.zeros(1, in_chans, size, size)).shape[1])
        net.train(was_training)
    return dim


class GradeNet(nn.Module):
    """Per-level features from both views, fused with the level's embedding, graded by two heads.

    Inputs are one patient's 11 positions at a time (batched over patients): sagittal (B, 11, 3, S, S),
    axial (B, 11, 1, A, A), has_axial (B, 11). A missing axial view is replaced by a learned vector.
    """

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        self.sagittal = _backbone(cfg.sag_backbone, 3, cfg)
        self.axial = _backbone(cfg.ax_backbone, 1, cfg)
        fs, fa = _feature_dim(self.sagittal, 3, cfg.sag_size), _feature_dim(self.axial, 1, cfg.ax_size)
        self.missing_axial = nn.Parameter(torch.zeros(fa))
        self.level = nn.Embedding(N_POSITIONS, cfg.level_embedding_dim)
        self.fuse = nn.Sequential(
            nn.Linear(fs + fa + cfg.level_embedding_dim + 1, cfg.hidden_dim), nn.LayerNorm(cfg.hidden_dim),
            nn.GELU(), nn.Dropout(cfg.dropout))
        if cfg.context == "transformer":
            layer = nn.TransformerEncoderLayer(cfg.hidden_dim, nhead=4, dim_feedforward=2 * cfg.hidden_dim,
                                               dropout=cfg.dropout, batch_first=True, norm_first=True)
            self.context = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        elif cfg.context == "none":
            self.context = None
        else:
            raise ValueError(f"context must be 'none' or 'transformer', got {cfg.context!r}")
        self.canal_head = nn.Linear(cfg.hidden_dim, len(CANAL_GRADES))
        self.disc_head = nn.Linear(cfg.hidden_dim, len(DISC_GRADES))
        self.register_buffer("disc_index", DISC_INDEX.clone(), persistent=False)

    def forward(self, sagittal: torch.Tensor, axial: torch.Tensor, has_axial: torch.Tensor) -> Dict[str, torch.Tensor]:
        b, n = sagittal.shape[:2]
        fs = self.sagittal(sagittal.flatten(0, 1))
        fa = self.axial(axial.flatten(0, 1))
        has = has_axial.reshape(b * n, 1).to(fs.dtype)
        fa = fa * has + self.missing_axial * (1 - has)
        levels = self.level(torch.arange(n, device=sagittal.device)).repeat(b, 1)
        h = self.fuse(torch.cat([fs, fa, levels, has], 1)).reshape(b, n, -1)
        if self.context is not None:
            h = h + self.context(h)
        return {"canal": self.canal_head(h), "disc": self.disc_head(h[:, self.disc_index]), "features": h}
