"""What vzoo's token-dropping ViTs (EViT, Sparsifiner) share on top of timm's ``VisionTransformer``: a clear
refusal of feature maps once tokens are dropped, and the reading of DeiT-style release checkpoints."""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict, Optional

import torch

from ._builder import load_checkpoint_file, unwrap_state_dict

__all__ = ["TokenDroppingViT", "load_release_checkpoint", "release_file_overlay"]


class TokenDroppingViT:
    """Mixin for a timm ``VisionTransformer`` subclass (listed before it) whose ``reorganizes_tokens`` says
    whether it drops tokens: its tokens then no longer form an H x W grid, so ``forward_intermediates`` and
    ``prune_intermediate_layers`` (timm's ``features_only``) raise ``RuntimeError(NO_FEATURE_MAPS)``, a class
    attribute that says why and what to use instead."""
    NO_FEATURE_MAPS = "this model drops tokens: features_only / forward_intermediates are not offered for it"

    def forward_intermediates(self, x: torch.Tensor, *args, **kwargs):
        if self.reorganizes_tokens:
            raise RuntimeError(self.NO_FEATURE_MAPS)
        return super().forward_intermediates(x, *args, **kwargs)

    def prune_intermediate_layers(self, *args, **kwargs):
        if self.reorganizes_tokens:
            raise RuntimeError(self.NO_FEATURE_MAPS)
        return super().prune_intermediate_layers(*args, **kwargs)


def load_release_checkpoint(path: str | os.PathLike) -> Dict[str, torch.Tensor]:
    """Read a DeiT-style release's weights file without executing pickled code.

    DeiT's ``main.py`` (and EViT's, Sparsifiner's after it) saves ``{'model', 'optimizer', 'lr_scheduler',
    'epoch', 'model_ema', 'scaler', 'args'}``; their evaluation (``--eval --resume``) loads ``'model'``, so that
    is what is returned here, not ``'model_ema'`` (which vzoo's generic reader prefers). ``'args'`` is an
    ``argparse.Namespace``, the one non-tensor class allowed to unpickle (a plain attribute holder; the load
    stays ``weights_only``). DeiT's own files (``{'model': ...}``), bare state dicts, safetensors and other
    training checkpoints follow :func:`vzoo.models.load_checkpoint_file`, which also names any problem.
    """
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        return load_checkpoint_file(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # missing, corrupt or code-carrying file: the generic reader raises, naming the problem
        return load_checkpoint_file(path)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    return unwrap_state_dict(obj, path)


def release_file_overlay(pretrained: bool, kwargs: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Pop ``pretrained_cfg_overlay`` from ``kwargs``; with ``pretrained`` and a ``file`` in it, the file is
    read here by :func:`load_release_checkpoint` and handed on as the overlay's ``state_dict``."""
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    if pretrained and overlay.get("file"):
        overlay["state_dict"] = load_release_checkpoint(overlay.pop("file"))
    return overlay or None
