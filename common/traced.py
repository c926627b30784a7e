"""Traced (TorchScript) copies of the networks, so that `run` on the CPU loads them with torch alone.

Building the networks from their weights needs ultralytics (detector) and timm (classifier). Their imports
pull in torchvision and, through torchvision.ops, torch._dynamo: about 5 s of every cold start on the
2-core CPU, a sixth of the 100-patient benchmark. A traced copy holds the same network as a TorchScript
graph (outputs identical to the network it was traced from; `save_traced` checks this at several batch
sizes and refuses otherwise), bound to its source weights by their sha256: a missing or stale copy is
ignored and the network is built from its weights as before.

TorchScript is deprecated in favour of torch.export, but `torch.export.load` imports torch._dynamo itself
(measured: 5.2 s), which is the cost avoided here. Traced graphs are used on the CPU only: tracing bakes
in the device of tensors created inside forward (anchors, level indices).

`python -m release.traced WEIGHTS_DIR` (re)writes the traced copies of a weights folder and its manifest.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch

from .files import atomic_write, sha256_of

PathLike = Union[str, Path]
SOURCE_KEY = "source_sha256"   # extra file inside the traced archive: the sha256 of the weights it came from


def _tensors(out) -> List[torch.Tensor]:
    """The output tensors of a network call (a tensor, a list/tuple of them, or a dict), in a fixed order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in _tensors(out[k])]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


def save_traced(module: torch.nn.Module, example: tuple, checks: Sequence[tuple], source: PathLike,
                out: PathLike) -> Path:
    """Trace `module` (on the CPU, eval mode) on `example`, check it against the module on every input of
    `checks` (other batch sizes), and write it to `out` bound to the sha256 of `source`."""
    module = module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)   # "torch.jit is deprecated" (see the module note)
        traced = torch.jit.trace(module, example, strict=False, check_trace=False)
        for inputs in (example, *checks):
            want, got = _tensors(module(*inputs)), _tensors(traced(*inputs))
            if len(want) != len(got) or any(w.shape != g.shape or not torch.equal(w, g) for w, g in zip(want, got)):
                raise RuntimeError(f"traced copy of {source} differs from the network at input shapes "
                                   f"{[tuple(t.shape) for t in inputs]}; not written")
    out = Path(out)
    extra: Dict[str, str] = {SOURCE_KEY: sha256_of(source)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        atomic_write(out, lambda tmp: torch.jit.save(traced, tmp, _extra_files=extra))
    return out


def load_traced(path: PathLike, source: PathLike,
                source_sha256: Optional[str] = None) -> Optional[torch.jit.ScriptModule]:
    """The traced copy at `path` if it exists and was traced from `source` as it is now, else None.

    source_sha256: the source's sha256 when the caller has already computed it (else it is computed here).
    """
    path = Path(path)
    if not path.is_file():
        return None
    extra = {SOURCE_KEY: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)   # "torch.jit.load is deprecated" (see the module note)
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError, OSError) as e:
        raise RuntimeError(f"{path}: not a readable traced network ({type(e).__name__}: {str(e)[:200]}); delete it "
                           f"to build the network from {Path(source).name}, or rewrite it with "
                           f"`python -m release.traced`") from None
    recorded = extra[SOURCE_KEY]
    recorded = recorded.decode() if isinstance(recorded, bytes) else recorded
    if recorded != (source_sha256 or sha256_of(source)):
        return None
    return module.eval()
