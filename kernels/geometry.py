"""Window arithmetic of neighborhood attention, shared by the Triton launcher and the PyTorch path.

Pure torch (no triton): ``vzoo.layers._na_torch`` and ``vzoo.kernels.na`` both import it, so the two
backends cannot disagree on which keys a query sees. Semantics: ``vzoo.layers.neighborhood_attention``.
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["window_bounds"]


def window_bounds(length: int, kernel: int, stride: int, causal: bool, x: Optional[torch.Tensor] = None):
    """Inclusive key bounds ``(lo, hi)`` of each query ``x`` (dilation-group coordinates) of one axis."""
    if x is None:
        x = torch.arange(length)
    if causal:
        leader = torch.clamp((x // stride) * stride + stride - 1, max=length - 1)
        lo = torch.clamp(leader - kernel + 1, min=0)
        hi = x.clone()
    else:
        leader = torch.clamp((x // stride) * stride + stride // 2, max=length - 1)
        lo = torch.clamp(leader - kernel // 2, min=0, max=length - kernel)
        hi = lo + kernel - 1
    return lo, hi
