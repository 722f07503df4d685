"""Efficient channel attention (ECA, from ECA-Net: Wang, Wu, Zhu, Li, Zuo, Hu; CVPR 2020).

ECA gates the channels of an NCHW map with weights computed from the map itself, without the
dimensionality reduction of squeeze-and-excitation::

    y = mean over H, W of x                 # (B, C): global average pooling
    y = conv1d(y, w)                         # one 1-D kernel of size k, zero 'same' padding, no bias,
                                             # sliding across the C channels (local cross-channel mixing)
    out = x * sigmoid(y)[:, :, None, None]

The kernel size adapts to the channel count: ``k = |log2(C)/γ + b/γ|_odd`` with ``γ = 2, b = 1``.
:func:`eca_kernel_size` implements it exactly as timm's ``EcaModule`` does (``t = int((log2 C + b) / γ)``,
``t + 1`` if even, never below 3), so C = 64/128/256/512/1024/2048 give 3/5/5/5/5/7.

The module itself is timm's :class:`timm.layers.EcaModule` (the anchor; vzoo does not re-implement
it): its parameter is ``conv.weight`` of shape ``(1, 1, k)``, the key name the official
``BangguWu/ECANet`` ``eca_layer`` uses too, so one ECA state dict fits both.

The official networks did **not** use the adaptive rule: the released ECA-ResNets were trained
with a fixed kernel size per stage (``--ksize 3557`` for ResNet-50, ``3357`` for ResNet-34/101/152,
``3577`` for ResNet-18) and ECA-MobileNetV2 with ``k = 1`` below 96 channels and ``k = 3`` from 96 on.
:class:`EcaByChannels` builds those: it is an ``attn_layer`` for timm's blocks (``ResNet(block_args=
dict(attn_layer=...))``) whose kernel size is looked up from the block's channel count (every stage
of a ResNet has its own width), falling back to the adaptive rule.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional

from timm.layers import EcaModule
from torch import nn

__all__ = ["EcaModule", "ECA", "EcaByChannels", "eca_kernel_size"]


def _check_kernel_size(kernel_size, who: str) -> int:
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"{who}: kernel_size must be a positive odd int (1, 3, 5, ...), got {kernel_size!r}")
    return kernel_size


def eca_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """ECA's adaptive 1-D kernel size for ``channels`` (the rule of timm's ``EcaModule``, see module doc)."""
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"eca_kernel_size: channels must be a positive int, got {channels!r}")
    if not gamma > 0:
        raise ValueError(f"eca_kernel_size: gamma must be > 0, got {gamma!r}")
    t = int(abs(math.log(channels, 2) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


def ECA(channels: Optional[int] = None, kernel_size: Optional[int] = None, gamma: float = 2, beta: float = 1,
        **kwargs) -> EcaModule:
    """An ECA gate (timm's :class:`~timm.layers.EcaModule`).

    Args:
        channels: the input's channel count; with ``kernel_size=None`` it picks the adaptive kernel.
        kernel_size: a fixed odd kernel size (overrides the adaptive rule; 1 is allowed, as the
            official ECA-MobileNetV2 uses it).
        gamma, beta: the adaptive rule's constants.
        **kwargs: passed to ``EcaModule`` (``device``, ``dtype``, ``gate_layer``, ...).
    """
    if kernel_size is None:
        if channels is None:
            raise ValueError("ECA: give channels (adaptive kernel size) or kernel_size (fixed), got neither")
        kernel_size = eca_kernel_size(channels, gamma, beta)
    _check_kernel_size(kernel_size, "ECA")
    # channels=None makes EcaModule take kernel_size as given (its own rule would also clamp to >= 3)
    return EcaModule(None, kernel_size=kernel_size, **kwargs)


class EcaByChannels:
    """``attn_layer`` factory for timm blocks: ``EcaByChannels({256: 3, 512: 5})(channels)`` is an ECA
    gate with the kernel size listed for ``channels`` (the adaptive rule for channel counts not listed).

    timm calls ``attn_layer(channels, **dd)`` (``dd`` = device/dtype) for every block; a ResNet's stages
    have distinct widths, so a channels → kernel-size map sets one kernel size per stage.
    """

    def __init__(self, kernel_sizes: Optional[Mapping[int, int]] = None, gamma: float = 2, beta: float = 1):
        self.kernel_sizes = {int(c): _check_kernel_size(k, "EcaByChannels") for c, k in (kernel_sizes or {}).items()}
        self.gamma, self.beta = gamma, beta

    def __call__(self, channels: int, **kwargs) -> nn.Module:
        return ECA(channels, self.kernel_sizes.get(channels), self.gamma, self.beta, **kwargs)

    def __repr__(self) -> str:
        return f"EcaByChannels({self.kernel_sizes}, gamma={self.gamma}, beta={self.beta})"
