"""What vzoo adds to timm's GC ViT (the model itself is timm's, never rewritten here; this module is
a fix of timm's family, not a vzoo family, hence private).

timm sizes GC ViT's windows and its global queries for the image size given at construction
(224 → windows 7/7/14/7 and a 7×7 global query per stage). Dense prediction feeds other sizes
(anything the pipeline pads to a multiple of 32, non-square too), where a stage's feature map is
not a multiple of its window and the pooled global query is not window-sized, and timm fails with
``shape '[2, 9, 7, 8, 7, 64]' is invalid``.

:func:`make_input_size_agnostic` swaps each block for :class:`AnySizeGlobalContextVitBlock`, which
pads the feature map (bottom/right, zeros) to a multiple of the window, resizes the global query to
the window by bilinear interpolation when its size differs, and crops the result. At the
construction size both are no-ops, so outputs and checkpoints are unchanged there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from timm.models.gcvit import GlobalContextVitBlock

__all__ = ["AnySizeGlobalContextVitBlock", "make_input_size_agnostic"]


class AnySizeGlobalContextVitBlock(GlobalContextVitBlock):
    """timm's block, accepting feature maps of any size (see the module docstring)."""

    def _window_attn(self, x: torch.Tensor, q_global: torch.Tensor | None = None) -> torch.Tensor:
        _, H, W, _ = x.shape
        wh, ww = self.window_size
        pad_h, pad_w = (-H) % wh, (-W) % ww
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        if q_global is not None and tuple(q_global.shape[1:3]) != (wh, ww):
            q_global = F.interpolate(
                q_global.permute(0, 3, 1, 2), size=(wh, ww), mode="bilinear", align_corners=False,
            ).permute(0, 2, 3, 1)
        out = super()._window_attn(x, q_global)
        if pad_h or pad_w:
            out = out[:, :H, :W].contiguous()
        return out


def make_input_size_agnostic(model: nn.Module) -> nn.Module:
    """Convert, in place, every GC ViT block inside ``model``; returns ``model``."""
    for module in model.modules():
        if type(module) is GlobalContextVitBlock:
            module.__class__ = AnySizeGlobalContextVitBlock
    return model
