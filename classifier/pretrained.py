"""`--pretrained FILE`: start the classifier's backbones from a local timm state dict or checkpoint, offline.

The file is read with torch.load(weights_only=True) from disk: nothing is downloaded. It holds either a plain
state dict of one timm backbone (what `timm.create_model(name).state_dict()` or `torch.save(model.state_dict())`
writes) or a training checkpoint holding one under 'state_dict_ema', 'model_ema', 'state_dict' or 'model'
(timm's train.py and most repositories); a 'module.' prefix (DataParallel) is dropped. The same file starts
both backbones (sagittal and axial), each built by classifier.model with the config's architecture.

Checks are strict:
- the backbone's classifier head (timm's pretrained_cfg 'classifier', e.g. `fc.*`) is the only key set aside:
  the grading network has its own heads (num_classes=0);
- any other key in the file that the backbone lacks, or any backbone key the file lacks, is refused, with the keys;
- a tensor whose shape differs is refused, naming the file, the key and both shapes. The one exception is the
  first convolution's input channels (the axial backbone takes 1 channel, an ImageNet file has 3): it is
  adapted as timm adapts its own pretrained weights (`timm.models.adapt_input_conv`: summed to 1 channel).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Tuple, Union

import torch
from torch import nn

from common.files import sha256_of
from study.errors import InputError

PathLike = Union[str, Path]
CHECKPOINT_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")


class PretrainedError(InputError):
    """The pretrained file cannot start this backbone (unreadable, missing or unexpected keys, a shape)."""


@dataclass(frozen=True)
class PretrainedLoad:
    """What a pretrained file gave one backbone (the model card records it)."""

    backbone: str            # "sagittal" or "axial"
    loaded: int              # tensors copied
    head_keys_dropped: Tuple[str, ...]
    adapted: Tuple[str, ...]  # first-convolution keys whose input channels were adapted


def read_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """The backbone tensors of a state dict or checkpoint file (weights_only: no code is run)."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedError("no such pretrained file", path=path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated files, non-tensor payloads
        raise PretrainedError(f"cannot read it as a torch state dict or checkpoint: {type(e).__name__}: {e}",
                              path=path) from None
    if isinstance(obj, Mapping):
        for key in CHECKPOINT_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PretrainedError("holds no state dict of tensors (expected a timm state dict, or a checkpoint with "
                              f"one under {', '.join(repr(k) for k in CHECKPOINT_KEYS)})", path=path)
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def _head_prefixes(net: nn.Module) -> Tuple[str, ...]:
    head = getattr(net, "pretrained_cfg", {}).get("classifier") or getattr(net, "default_cfg", {}).get("classifier")
    if not head:
        return ()
    return tuple(h + "." for h in ([head] if isinstance(head, str) else list(head)))


def _first_conv(net: nn.Module) -> str:
    first = getattr(net, "pretrained_cfg", {}).get("first_conv")
    return (first if isinstance(first, str) else (first or [""])[0]) + ".weight" if first else ""


def _listed(keys: List[str], n: int = 12) -> str:
    return ", ".join(keys[:n]) + (f" ... ({len(keys)} in all)" if len(keys) > n else "")


def load_backbone(net: nn.Module, state: Mapping[str, torch.Tensor], path: PathLike, which: str) -> PretrainedLoad:
    """Copy `state` into the timm backbone `net` under the strict checks above; returns what was loaded."""
    from timm.models import adapt_input_conv
    own = net.state_dict()
    heads = _head_prefixes(net)
    dropped = sorted(k for k in state if k not in own and k.startswith(heads))
    unexpected = sorted(k for k in state if k not in own and not k.startswith(heads))
    missing = sorted(k for k in own if k not in state)
    if unexpected or missing:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s) of the {which} backbone: {_listed(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {_listed(unexpected)}")
        raise PretrainedError(f"does not fit the {which} backbone ({type(net).__name__}): " + "; ".join(parts) +
                              ". Is it a state dict of the same timm architecture as the config's backbone?",
                              path=path)
    first, adapted, new = _first_conv(net), [], {}
    for k, mine in own.items():
        v = state[k]
        if v.shape != mine.shape and k == first and v.ndim == 4 and v.shape[0] == mine.shape[0] \
                and v.shape[2:] == mine.shape[2:]:
            v = adapt_input_conv(int(mine.shape[1]), v.float()).to(mine.dtype)
            adapted.append(k)
        if v.shape != mine.shape:
            raise PretrainedError(f"shape mismatch for the {which} backbone at {k}: the file has "
                                  f"{tuple(v.shape)}, the network {tuple(mine.shape)} (a narrower or wider "
                                  "variant of the architecture? the classifier config sets backbone_channels "
                                  "and stem_width)", path=path)
        new[k] = v.to(mine.dtype)
    net.load_state_dict(new, strict=True)
    return PretrainedLoad(which, len(new), tuple(dropped), tuple(adapted))


def load_pretrained(model: nn.Module, path: PathLike) -> Dict[str, object]:
    """Start model.sagittal and model.axial (classifier.model.GradeNet) from `path`; the card's record of it."""
    path = Path(path)
    state = read_state_dict(path)
    loads = [load_backbone(model.sagittal, state, path, "sagittal"), load_backbone(model.axial, state, path, "axial")]
    return {"file": path.name, "sha256": sha256_of(path),
            "backbones": {ld.backbone: {"tensors": ld.loaded, "head_keys_dropped": list(ld.head_keys_dropped),
                                        "input_channels_adapted": list(ld.adapted)} for ld in loads}}
