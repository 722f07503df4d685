"""OverLoCK: an Overview-first-Look-Closely-next ConvNet with context-mixing dynamic kernels
(Lou, Yu; CVPR 2025, arXiv:2502.20087).

Three sub-networks share one stem:

* **Base-Net** (stages 1-2 at strides 4, 8): :class:`RepConvBlock` s, each a residual depthwise 3×3,
  then LayerNorm → a UniRepLKNet dilated re-parameterizable large-kernel depthwise conv
  (:class:`DilatedReparamBlock`) → BN → SE → a GRN conv MLP.
* **Overview-Net** (stages 3-4 at strides 16, 32, the same blocks): a coarse top-down context.
* **Focus-Net** (:class:`DynamicConvBlock` s at strides 16 and 32): the stage-3 features concatenated
  with the context, mixed by **ContMix**: per-pixel dynamic kernels (the affinity of each pixel with
  7×7 pooled context tokens, projected to a ``5×5`` and a ``k×k`` kernel per head, plus a NAT-style
  relative positional bias, softmax-normalised) applied to the values over the pixel's border-shifted
  neighbourhood by :func:`vzoo.layers.na2d_av`, with a large-kernel LePE, SE, a SiLU gate, GRN MLP and
  layer scale.

The classifier is 1×1 conv → BN → SiLU (in ``forward_features``, as timm's EfficientNet ``conv_head``)
→ average pool → linear. ``features_only`` gives four levels: stage 1, stage 2, the Focus-Net's stage 3
(features ⊕ context) and its stage 4 output (strides 4, 8, 16, 32), the maps the official Mask R-CNN /
UPerNet backbones feed their necks (they add LayerNorms of their own, trained from scratch).

Variants XT/T/S/B follow ``LMMMEng/OverLoCK`` (``models/overlock.py``); ``*_reparam`` variants are built
with every :class:`DilatedReparamBlock` merged into one large kernel (:meth:`OverLoCK.reparameterize`),
the form of the ``*_reparam.pth`` release. Both releases load through :func:`checkpoint_filter_fn`.
The official training's deep-supervision head (``aux_head``) is not part of the model: its weights are
dropped on load.
"""
# no `from __future__ import annotations`: TorchScript reads the real annotations of @torch.jit.ignore'd code
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import (
    DropPath, LayerNorm2d, SEModule, SelectAdaptivePool2d, calculate_drop_path_rates,
    get_device_dtype, register_notrace_module, trunc_normal_,
)
from timm.layers.grn import GlobalResponseNorm
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint, checkpoint_seq, reparameterize_model

from vzoo.kernels.geometry import window_bounds
from vzoo.layers import na2d_av
from vzoo.layers._tables import constant_table
from ._builder import build_vzoo_model, official_notes, vzoo_cfg

__all__ = ["OverLoCK", "DilatedReparamBlock", "checkpoint_filter_fn", "to_official_keys"]

# UniRepLKNet's dilated branches (kernel, dilation) for each large kernel size (official settings)
DILATED_BRANCHES = {
    19: ((5, 1), (7, 1), (9, 1), (9, 2), (3, 4), (3, 5), (3, 7)),
    17: ((5, 1), (7, 1), (9, 2), (3, 4), (3, 5), (3, 7)),
    15: ((5, 1), (7, 1), (7, 2), (3, 3), (3, 5), (3, 7)),
    13: ((5, 1), (7, 1), (7, 2), (3, 3), (3, 4), (3, 5)),
    11: ((5, 1), (7, 1), (5, 2), (3, 3), (3, 4), (3, 5)),
    9: ((5, 1), (7, 1), (5, 2), (3, 3), (3, 4)),
    7: ((5, 1), (3, 1), (3, 2), (3, 3)),
    5: ((3, 1), (3, 2)),
}


def _fuse_bn(weight: torch.Tensor, bias: Optional[torch.Tensor], bn: nn.BatchNorm2d):
    """A conv's ``(weight, bias)`` followed by ``bn`` (eval statistics) as one conv's."""
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    bias = bn.bias - bn.running_mean * scale + (bias * scale if bias is not None else 0)
    return weight * scale.reshape(-1, 1, 1, 1), bias


class ScaleBias(nn.Module):
    """Per-channel ``x * weight + bias`` (OverLoCK's ``LayerScale``: timm's ``LayerScale2d`` has no bias).
    ``weight`` keeps the official ``(C, 1, 1, 1)`` depthwise-conv shape."""

    def __init__(self, dim: int, init_value: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.init_value = init_value
        self.weight = nn.Parameter(torch.full((dim, 1, 1, 1), float(init_value), device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


class ResDWConv(nn.Conv2d):
    """``x + dwconv(x)`` (depthwise, odd kernel, same size)."""

    def __init__(self, dim: int, kernel_size: int = 3, device=None, dtype=None):
        super().__init__(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self._conv_forward(x, self.weight, self.bias)  # not super().forward: TorchScript has no super()


class DilatedReparamBlock(nn.Module):
    """UniRepLKNet's dilated re-parameterizable depthwise conv: a ``k×k`` conv + BN plus the dilated
    conv + BN branches of :data:`DILATED_BRANCHES`; :meth:`reparameterize` merges them into the
    ``k×k`` conv (with bias), which is also the form a ``reparam=True`` block is built in."""

    def __init__(self, dim: int, kernel_size: int, reparam: bool = False, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        if kernel_size not in DILATED_BRANCHES:
            raise ValueError(f"DilatedReparamBlock: kernel_size must be one of {sorted(DILATED_BRANCHES)}, "
                             f"got {kernel_size}")
        self.branches = DILATED_BRANCHES[kernel_size]
        self.reparameterized = reparam
        self.lk_origin = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=reparam, **dd)
        if not reparam:
            self.origin_bn = nn.BatchNorm2d(dim, **dd)
            for k, r in self.branches:
                setattr(self, f"dil_conv_k{k}_{r}", nn.Conv2d(dim, dim, k, padding=r * (k - 1) // 2, dilation=r,
                                                              groups=dim, bias=False, **dd))
                setattr(self, f"dil_bn_k{k}_{r}", nn.BatchNorm2d(dim, **dd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparameterized:
            return self.lk_origin(x)
        return self._forward_branches(x)

    # the branches are found by name (the release's keys): TorchScript cannot, so a scripted model must be
    # reparameterized first (timm's reparameterize_model, or a *_reparam variant)
    @torch.jit.unused
    def _forward_branches(self, x: torch.Tensor) -> torch.Tensor:
        out = self.origin_bn(self.lk_origin(x))
        for k, r in self.branches:
            out = out + getattr(self, f"dil_bn_k{k}_{r}")(getattr(self, f"dil_conv_k{k}_{r}")(x))
        return out

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Merge the BNs and dilated branches into ``lk_origin`` (timm's ``reparameterize_model`` calls it)."""
        if self.reparameterized:
            return
        weight, bias = _fuse_bn(self.lk_origin.weight, None, self.origin_bn)
        big = weight.shape[-1]
        for k, r in self.branches:
            w, b = _fuse_bn(getattr(self, f"dil_conv_k{k}_{r}").weight, None, getattr(self, f"dil_bn_k{k}_{r}"))
            span = r * (k - 1) + 1
            pad = (big - span) // 2
            weight[:, :, pad:pad + span:r, pad:pad + span:r] += w  # the dilated taps inside the large kernel
            bias = bias + b
            delattr(self, f"dil_conv_k{k}_{r}")
            delattr(self, f"dil_bn_k{k}_{r}")
        del self.origin_bn
        conv = self.lk_origin
        self.lk_origin = nn.Conv2d(conv.in_channels, conv.out_channels, big, padding=big // 2, groups=conv.groups,
                                   bias=True, device=weight.device, dtype=weight.dtype)
        self.lk_origin.weight.copy_(weight)
        self.lk_origin.bias.copy_(bias)
        self.reparameterized = True


def _conv_bn(in_chs: int, out_chs: int, stride: int = 1, kernel_size: int = 3, **dd) -> List[nn.Module]:
    """A bias-free conv (same padding) and its BatchNorm."""
    return [nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2, bias=False, **dd),
            nn.BatchNorm2d(out_chs, **dd)]


def _stem(in_chans: int, dim: int, **dd) -> nn.Sequential:
    """Four 3×3 conv + BN (strides 2, 1, 2, 1), GELU between them."""
    half = dim // 2
    return nn.Sequential(*_conv_bn(in_chans, half, stride=2, **dd), nn.GELU(), *_conv_bn(half, half, **dd), nn.GELU(),
                         *_conv_bn(half, dim, stride=2, **dd), nn.GELU(), *_conv_bn(dim, dim, **dd))


def _se(dim: int, **dd) -> SEModule:
    return SEModule(dim, rd_channels=max(16, dim // 8), act_layer=nn.GELU, **dd)


def _grn(dim: int, **dd) -> GlobalResponseNorm:
    return GlobalResponseNorm(dim, eps=1e-6, channels_last=False, **dd)


def _conv_mlp(dim: int, hidden: int, out_dim: int, **dd) -> List[nn.Module]:
    """1×1 conv → GELU → residual depthwise 3×3 → GRN → 1×1 conv."""
    return [nn.Conv2d(dim, hidden, 1, **dd), nn.GELU(), ResDWConv(hidden, kernel_size=3, **dd), _grn(hidden, **dd),
            nn.Conv2d(hidden, out_dim, 1, **dd)]


class RepConvBlock(nn.Module):
    """Base-/Overview-Net block: ``x = x + dw3x3(x)``; ``x = ls(x) + proj(x)`` with ``proj`` = LayerNorm →
    dilated large-kernel conv → BN → SE → GRN conv MLP → drop path."""

    def __init__(self, dim: int, kernel_size: int, mlp_ratio: float = 4.0, ls_init_value: Optional[float] = None,
                 drop_path: float = 0.0, reparam: bool = False, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.dwconv = ResDWConv(dim, 3, **dd)
        self.proj = nn.Sequential(
            LayerNorm2d(dim, eps=1e-6, **dd), DilatedReparamBlock(dim, kernel_size=kernel_size, reparam=reparam, **dd),
            nn.BatchNorm2d(dim, **dd), _se(dim, **dd), *_conv_mlp(dim, hidden=int(dim * mlp_ratio), out_dim=dim, **dd),
            DropPath(drop_path) if drop_path > 0 else nn.Identity())
        self.ls = ScaleBias(dim, ls_init_value, **dd) if ls_init_value is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dwconv(x)
        return self.ls(x) + self.proj(x)


@constant_table(maxsize=64)
def _window_bias_index(height: int, width: int, kernel_size: int, device: str):
    """Row and column indices into a ``(2k-1, 2k-1)`` relative-position table of each pixel's ``k``
    neighbours, in :func:`vzoo.layers.na2d_av`'s window (offset ``key - query + k - 1``)."""
    out = []
    for length in (height, width):
        x = torch.arange(length, device="cpu")  # host tables, also under a meta / cuda default device
        lo, _ = window_bounds(length, kernel_size, 1, False, x)
        out.append(((lo - x + kernel_size - 1)[:, None] + torch.arange(kernel_size, device="cpu"))
                   .to(torch.device(device)))
    return out


def window_bias(rpb: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(heads, 2k-1, 2k-1)`` table → ``(H, W, heads, k*k)`` bias of every pixel's neighbours (heads last)."""
    k = (rpb.shape[-1] + 1) // 2
    rows, cols = _window_bias_index(height, width, k, str(rpb.device))
    bias = rpb[:, rows[:, :, None, None], cols[None, None, :, :]]  # (heads, H, k, W, k)
    return bias.permute(1, 3, 0, 2, 4).reshape(height, width, rpb.shape[0], k * k)


@torch.jit.ignore  # window_bias (cached index tables) and na2d_av's front are Python: TorchScript calls them as such
def _mix_neighbours(weights: torch.Tensor, value: torch.Tensor, rpb_small: torch.Tensor, rpb_large: torch.Tensor,
                    small_kernel_size: int, kernel_size: int) -> torch.Tensor:
    """ContMix's two dynamic kernels: ``weights`` ``(B, H, W, heads, ks² + k²)`` logits plus the relative
    positional biases, softmaxed per kernel, mix the neighbours of the two halves of ``value``
    ``(B, H, W, 2, heads, c)``; returns ``(B, H, W, 2, heads, c)``."""
    H, W = weights.shape[1], weights.shape[2]
    s2 = small_kernel_size ** 2
    attn1 = (weights[..., :s2] + window_bias(rpb_small, H, W)).softmax(-1)
    attn2 = (weights[..., s2:] + window_bias(rpb_large, H, W)).softmax(-1)
    x1 = na2d_av(attn1, value[:, :, :, 0], kernel_size=small_kernel_size)
    x2 = na2d_av(attn2, value[:, :, :, 1], kernel_size=kernel_size)
    return torch.stack([x1, x2], dim=3)


@register_notrace_module  # ContMix resizes maps smaller than its kernel: control flow on the size, an fx leaf
class DynamicConvBlock(nn.Module):
    """Focus-Net block: fuses the features with the top-down context and mixes them with ContMix.

    ``forward(x, ctx, ctx_ref)``: ``x`` ``(B, C, H, W)``; ``ctx`` the running context ``(B, C_h, H, W)``,
    ``ctx_ref`` the Overview-Net's context (added through ``h_scale``, except in the first block). Returns
    the next ``(x, ctx)``.
    """

    def __init__(self, dim: int, ctx_dim: int, kernel_size: int, small_kernel_size: int = 5, num_heads: int = 2,
                 mlp_ratio: float = 4.0, ls_init_value: Optional[float] = None, drop_path: float = 0.0,
                 is_first: bool = False, reparam: bool = False, pool_size: int = 7,
                 device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        ctx_dim = ctx_dim // 4
        out_dim = dim + ctx_dim
        self.kernel_size = kernel_size
        self.small_kernel_size = small_kernel_size
        self.num_heads = num_heads * 2  # one half of the heads per kernel size
        self.scale = (dim // self.num_heads) ** -0.5
        self.is_first = is_first
        # the first block has no context to add (Identity, not absent: TorchScript compiles both branches)
        self.x_scale = ScaleBias(ctx_dim, 1.0, **dd) if not is_first else nn.Identity()
        self.h_scale = ScaleBias(ctx_dim, 1.0, **dd) if not is_first else nn.Identity()
        self.dwconv1 = ResDWConv(out_dim, 3, **dd)
        self.norm1 = LayerNorm2d(out_dim, eps=1e-6, **dd)
        self.fusion = nn.Sequential(
            nn.Conv2d(out_dim, out_dim, 3, padding=1, groups=out_dim, **dd), nn.BatchNorm2d(out_dim, **dd), nn.GELU(),
            nn.Conv2d(out_dim, dim, 1, **dd), _grn(dim, **dd))
        self.weight_query = nn.Sequential(*_conv_bn(dim, dim // 2, kernel_size=1, **dd))
        self.weight_key = nn.Sequential(nn.AdaptiveAvgPool2d(pool_size),
                                        *_conv_bn(ctx_dim, dim // 2, kernel_size=1, **dd))
        # a 1x1 conv over the pooled tokens (the official layout; applied as a linear, heads last)
        self.weight_proj = nn.Conv2d(pool_size ** 2, kernel_size ** 2 + small_kernel_size ** 2, 1, **dd)
        self.dyconv_proj = nn.Sequential(*_conv_bn(dim, dim, kernel_size=1, **dd))
        self.lepe = nn.Sequential(DilatedReparamBlock(dim, kernel_size=kernel_size, reparam=reparam, **dd),
                                  nn.BatchNorm2d(dim, **dd))
        self.se_layer = _se(dim, **dd)
        self.gate = nn.Sequential(*_conv_bn(dim, dim, kernel_size=1, **dd), nn.SiLU())
        self.proj = nn.Sequential(nn.BatchNorm2d(dim, **dd), nn.Conv2d(dim, out_dim, 1, **dd))
        self.dwconv2 = ResDWConv(out_dim, 3, **dd)
        self.norm2 = LayerNorm2d(out_dim, eps=1e-6, **dd)
        self.mlp = nn.Sequential(*_conv_mlp(out_dim, hidden=int(dim * mlp_ratio), out_dim=out_dim, **dd))
        self.ls1 = ScaleBias(out_dim, ls_init_value, **dd) if ls_init_value is not None else nn.Identity()
        self.ls2 = ScaleBias(out_dim, ls_init_value, **dd) if ls_init_value is not None else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        # relative positional bias of the small and the large dynamic kernel (official names)
        s, k = 2 * small_kernel_size - 1, 2 * kernel_size - 1
        self.rpb1 = nn.Parameter(torch.zeros(self.num_heads, s, s, **dd))
        self.rpb2 = nn.Parameter(torch.zeros(self.num_heads, k, k, **dd))

    def contmix(self, x: torch.Tensor, x_f: torch.Tensor, dim: int) -> torch.Tensor:
        """ContMix of ``x`` ``(B, dim, H, W)`` with kernels from ``x_f`` (features ⊕ context)."""
        B, _, H, W = x.shape
        g = self.num_heads
        query, key = torch.split(x_f, [dim, x_f.shape[1] - dim], dim=1)
        query = (self.weight_query(query) * self.scale).reshape(B, g, -1, H * W)
        key = self.weight_key(key).flatten(2).reshape(B, g, -1, self.weight_proj.in_channels)
        affinity = torch.einsum("bgcn,bgcl->bngl", query, key)  # (B, HW, heads, pooled tokens)
        weights = F.linear(affinity, self.weight_proj.weight.flatten(1), self.weight_proj.bias).view(B, H, W, g, -1)
        value = x.permute(0, 2, 3, 1).reshape(B, H, W, 2, g, -1)  # channels (half, head, c), heads last
        mixed = _mix_neighbours(weights, value, self.rpb1, self.rpb2, self.small_kernel_size, self.kernel_size)
        return mixed.reshape(B, H, W, dim).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, ctx_ref: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        B, C, H, W = x.shape
        if not self.is_first:
            ctx = self.x_scale(ctx) + self.h_scale(ctx_ref)
        x_f = self.dwconv1(torch.cat([x, ctx], dim=1))
        shortcut = x_f
        x_f = self.norm1(x_f)
        x = self.fusion(x_f)
        gate = self.gate(x)
        lepe = self.lepe(x)
        k = self.kernel_size
        if min(H, W) < k:  # a map smaller than the kernel is resized up for ContMix (official behaviour)
            size = (k, int(k / H * W)) if H < W else (int(k / W * H), k)
            mixed = self.contmix(F.interpolate(x, size=size, mode="bilinear", align_corners=False),
                                 F.interpolate(x_f, size=size, mode="bilinear", align_corners=False), C)
            mixed = F.adaptive_avg_pool2d(mixed, (H, W))
        else:
            mixed = self.contmix(x, x_f, C)
        x = self.proj(gate * self.se_layer(self.dyconv_proj(mixed) + lepe))
        x = self.ls1(shortcut) + self.drop_path(x)
        x = self.dwconv2(x)
        x = self.ls2(x) + self.drop_path(self.mlp(self.norm2(x)))
        x, ctx = torch.split(x, [C, x.shape[1] - C], dim=1)
        return x, ctx


class RepConvStage(nn.Sequential):
    """A Base-/Overview-Net stage: :class:`RepConvBlock` s in sequence, gradient checkpointing per stage."""

    def __init__(self, *blocks: nn.Module):
        super().__init__(*blocks)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self, x)
        for block in self:
            x = block(x)
        return x


class FocusStage(nn.ModuleList):
    """A Focus-Net stage: :class:`DynamicConvBlock` s threading the context; returns features ⊕ context
    (the pyramid level, one tensor: what fx feature extraction takes as the stage's output)."""

    def __init__(self, blocks: Sequence[nn.Module]):
        super().__init__(blocks)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, ctx_ref: torch.Tensor) -> torch.Tensor:
        for block in self:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x, ctx = checkpoint(block, x, ctx, ctx_ref)
            else:
                x, ctx = block(x, ctx, ctx_ref)
        return torch.cat([x, ctx], dim=1)


class CtxDownsample(nn.Module):
    """Stride-2 conv + BN of the Focus-Net features (``dim`` → ``out_dim``) and of the context, from the
    stage's features ⊕ context."""

    def __init__(self, dim: int, out_dim: int, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.dim = dim
        self.x_proj = nn.Sequential(*_conv_bn(dim, out_dim, stride=2, **dd))
        self.h_proj = nn.Sequential(*_conv_bn(out_dim // 4, out_dim // 4, stride=2, **dd))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x, ctx = torch.split(x, [self.dim, x.shape[1] - self.dim], dim=1)
        return self.x_proj(x), self.h_proj(ctx)


class OverLoCK(nn.Module):
    """OverLoCK (see the module docstring).

    Args:
        depths: RepConvBlocks of stages 1-4 (Base-Net: 1-2, Overview-Net: 3-4).
        sub_depths: DynamicConvBlocks of the Focus-Net's stages 3 and 4.
        embed_dims: channels of stages 1-4; the context has ``embed_dims[3] // 4``.
        kernel_sizes: large-kernel size per stage (stages 3, 4 also the ContMix kernel).
        mlp_ratios, sub_mlp_ratios: MLP expansion of the RepConvBlocks and the DynamicConvBlocks.
        sub_num_heads: ContMix heads per kernel size in the Focus-Net's stages 3 and 4.
        ls_init_values: layer-scale init per stage (None: no layer scale).
        small_kernel_size: ContMix's small dynamic kernel.
        projection: channels of the classifier's 1×1 conv (``num_features``).
        reparam: build every DilatedReparamBlock merged (the ``*_reparam`` form).
        global_pool: ``'avg'`` or ``''``.
    """

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = "avg",
            depths: Sequence[int] = (2, 2, 2, 2),
            sub_depths: Sequence[int] = (4, 2),
            embed_dims: Sequence[int] = (96, 192, 384, 768),
            kernel_sizes: Sequence[int] = (7, 7, 7, 7),
            mlp_ratios: Sequence[float] = (4, 4, 4, 4),
            sub_mlp_ratios: Sequence[float] = (4, 4),
            sub_num_heads: Sequence[int] = (4, 8),
            ls_init_values: Sequence[Optional[float]] = (None, None, 1.0, 1.0),
            small_kernel_size: int = 5,
            projection: int = 1024,
            reparam: bool = False,
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        if len(depths) != 4 or len(embed_dims) != 4 or len(kernel_sizes) != 4 or len(sub_depths) != 2:
            raise ValueError("OverLoCK: depths, embed_dims and kernel_sizes need 4 entries, sub_depths 2")
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = projection
        self.drop_rate = drop_rate
        ctx_dim = embed_dims[3] // 4
        fusion_dim = embed_dims[3] + ctx_dim

        self.patch_embed1 = _stem(in_chans, embed_dims[0], **dd)
        for i in range(1, 4):
            downsample = _conv_bn(embed_dims[i - 1], embed_dims[i], stride=2, **dd)
            setattr(self, f"patch_embed{i + 1}", nn.Sequential(*downsample))
        self.high_level_proj = nn.Conv2d(embed_dims[3], ctx_dim, 1, **dd)
        self.patch_embedx = CtxDownsample(embed_dims[2], embed_dims[3], **dd)

        # one linear schedule over all blocks, in the order blocks1..4, sub_blocks3, sub_blocks4 (official)
        dpr = calculate_drop_path_rates(drop_path_rate, list(depths) + list(sub_depths), stagewise=True)
        for i in range(4):
            setattr(self, f"blocks{i + 1}", RepConvStage(*[
                RepConvBlock(embed_dims[i], kernel_size=kernel_sizes[i], mlp_ratio=mlp_ratios[i],
                             ls_init_value=ls_init_values[i], drop_path=dpr[i][j], reparam=reparam, **dd)
                for j in range(depths[i])]))
        for s, stage in enumerate((2, 3)):
            setattr(self, f"sub_blocks{stage + 1}", FocusStage([
                DynamicConvBlock(embed_dims[stage], ctx_dim=embed_dims[3], kernel_size=kernel_sizes[stage],
                                 small_kernel_size=small_kernel_size, num_heads=sub_num_heads[s],
                                 mlp_ratio=sub_mlp_ratios[s], ls_init_value=ls_init_values[stage],
                                 drop_path=dpr[4 + s][j],
                                 is_first=stage == 2 and j == 0, reparam=reparam, **dd)
                for j in range(sub_depths[s])]))
        self.feature_info = [
            dict(num_chs=embed_dims[0], reduction=4, module="blocks1"),
            dict(num_chs=embed_dims[1], reduction=8, module="blocks2"),
            dict(num_chs=embed_dims[2] + ctx_dim, reduction=16, module="sub_blocks3"),
            dict(num_chs=fusion_dim, reduction=32, module="sub_blocks4")]

        # 1x1 conv -> BN -> SiLU (in forward_features) -> pool -> classifier; official indices 0, 1, 2, 4
        self.head = nn.Sequential(
            nn.Conv2d(fusion_dim, projection, 1, bias=False, **dd), nn.BatchNorm2d(projection, **dd), nn.SiLU(),
            SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool)), self._classifier(num_classes, **dd))
        self.head_drop = nn.Dropout(drop_rate)
        self.apply(self._init_weights)

    def _classifier(self, num_classes: int, **dd) -> nn.Module:
        return nn.Linear(self.num_features, num_classes, **dd) if num_classes > 0 else nn.Identity()

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @torch.no_grad()
    def reparameterize(self) -> "OverLoCK":
        """Merge every DilatedReparamBlock (in place): the ``*_reparam`` form, same outputs in eval mode."""
        return reparameterize_model(self, inplace=True)

    @torch.jit.ignore
    def no_weight_decay(self):
        return {n for n, _ in self.named_parameters() if n.endswith(("rpb1", "rpb2"))}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        # Base-Net / Overview-Net stages 1-4 (with their downsampling), then the Focus-Net (5, 6)
        return dict(stem=r"^patch_embed1\.", blocks=[
            (r"^patch_embed([234])\.", (0,)), (r"^blocks(\d+)" if coarse else r"^blocks(\d+)\.(\d+)", None),
            (r"^high_level_proj|^sub_blocks3", (5,)), (r"^patch_embedx|^sub_blocks4", (6,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        for stage in self.modules():
            if isinstance(stage, (RepConvStage, FocusStage)):
                stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head[4]

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None, **kwargs):
        self.num_classes = num_classes
        if global_pool is not None:
            self.head[3] = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        self.head[4] = self._classifier(num_classes, **get_device_dtype(self))

    def _features(self, x: torch.Tensor, take: Optional[List[int]] = None,
                  stop: int = 3) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """The final Focus-Net map, and the pyramid levels listed in ``take`` (computed up to ``stop``)."""
        no_levels: List[int] = []
        take = no_levels if take is None else take
        levels: List[torch.Tensor] = []
        x = self.blocks1(self.patch_embed1(x))
        if 0 in take:
            levels.append(x)
        x = self.blocks2(self.patch_embed2(x))
        if 1 in take:
            levels.append(x)
        if stop < 2:
            return x, levels
        x = self.blocks3(self.patch_embed3(x))  # Overview-Net
        ctx_ref = self.high_level_proj(self.blocks4(self.patch_embed4(x)))
        ctx_up = F.interpolate(ctx_ref, size=x.shape[2:], mode="bilinear", align_corners=False)
        x = self.sub_blocks3(x, ctx_up, ctx_up)  # Focus-Net: features ⊕ context at each stage's end
        if 2 in take:
            levels.append(x)
        if stop < 3:
            return x, levels
        x, ctx = self.patch_embedx(x)
        x = self.sub_blocks4(x, ctx, ctx_ref)
        if 3 in take:
            levels.append(x)
        return x, levels

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self._features(x)
        return self.head[2](self.head[1](self.head[0](x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.head[3](x))
        return x if pre_logits else self.head[4](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, Sequence[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The four pyramid levels of ``feature_info`` (NCHW); the final feature is ``forward_features``'."""
        if output_fmt != "NCHW":
            raise ValueError(f"OverLoCK.forward_intermediates: output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(4, indices)
        stop = max_index if stop_early or intermediates_only else 3
        x, levels = self._features(x, take=take_indices, stop=stop)
        if intermediates_only:
            return levels
        return self.head[2](self.head[1](self.head[0](x))), levels

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True):
        take_indices, _ = feature_take_indices(4, indices)
        if prune_head:  # the whole classifier (its 1x1 conv + BN too): features never pass through it
            self.head = nn.Sequential(*(nn.Identity() for _ in range(5)))
        return take_indices


# ---------------------------------------------------------------------------------------------------
# official checkpoints
# ---------------------------------------------------------------------------------------------------
# (official, vzoo) key renames where vzoo uses timm's layers: SE (``proj.1``/``proj.3`` -> ``fc1``/``fc2``)
# inside RepConvBlock.proj.3 and DynamicConvBlock.se_layer; GRN (``gamma``/``beta`` (1, C, 1, 1) ->
# ``weight``/``bias`` (C,))
_SE_KEYS = re.compile(r"(^|\.)(proj\.3|se_layer)\.proj\.([13])\.")
_GRN_KEYS = re.compile(r"\.(gamma|beta)$")
_TIMM_SE_KEYS = re.compile(r"(^|\.)(proj\.3|se_layer)\.fc([12])\.")


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Map an official release (``overlock_*_in1k_224.pth`` or ``*_reparam.pth``, bare or under
    ``state_dict``/``model``, already unwrapped) onto :class:`OverLoCK`: the official names with timm's SE
    and GRN names, the classifier conv as a linear, no ``aux_head``. vzoo's own keys pass unchanged."""
    out = {}
    for k, v in state_dict.items():
        if k.startswith("aux_head."):
            continue
        k = _SE_KEYS.sub(lambda m: f"{m.group(1)}{m.group(2)}.fc{(int(m.group(3)) + 1) // 2}.", k)
        if _GRN_KEYS.search(k):
            k, v = _GRN_KEYS.sub(lambda m: ".weight" if m.group(1) == "gamma" else ".bias", k), v.reshape(-1)
        elif k == "head.4.weight" and v.dim() == 4:
            v = v.flatten(1)
        out[k] = v
    return out


def to_official_keys(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """The inverse of :func:`checkpoint_filter_fn` (without ``aux_head``): vzoo's state dict in the official
    release's names and shapes."""
    grn = {n for n, m in model.named_modules() if isinstance(m, GlobalResponseNorm)}
    out = {}
    for k, v in state_dict.items():
        k = _TIMM_SE_KEYS.sub(lambda m: f"{m.group(1)}{m.group(2)}.proj.{2 * int(m.group(3)) - 1}.", k)
        owner, _, name = k.rpartition(".")
        if owner in grn:
            k, v = f"{owner}.{'gamma' if name == 'weight' else 'beta'}", v.reshape(1, -1, 1, 1)
        elif k == "head.4.weight":
            v = v[:, :, None, None]
        out[k] = v
    return out


def _create_overlock(variant: str, pretrained: bool = False, **kwargs) -> OverLoCK:
    return build_vzoo_model(OverLoCK, variant, pretrained, checkpoint_filter_fn=checkpoint_filter_fn,
                            default_feature_cfg=dict(out_indices=(0, 1, 2, 3)), **kwargs)


def _cfg(top1: float, params_m: float, crop_pct: float, **kwargs):
    return vzoo_cfg(
        crop_pct=crop_pct, first_conv="patch_embed1.0", classifier="head.4", license="apache-2.0",
        origin_url="https://github.com/LMMMEng/OverLoCK", paper_ids="arXiv:2502.20087",
        paper_name="OverLoCK: An Overview-first-Look-Closely-next ConvNet with Context-Mixing Dynamic Kernels",
        notes=official_notes("OverLoCK paper / README", top1, params_m), **kwargs)


# variant: (depths, sub_depths, embed_dims, sub_num_heads, top-1, params (M), crop_pct); every variant has
# kernel sizes (17, 15, 13, 7), MLP ratios 4 (RepConvBlocks) and 3 (DynamicConvBlocks)
_VARIANTS = {
    "xt": ((2, 2, 3, 2), (6, 2), (56, 112, 256, 336), (4, 6), 82.7, 16, 0.925),
    "t": ((4, 4, 6, 2), (12, 2), (64, 128, 256, 512), (4, 8), 84.2, 33, 0.95),
    "s": ((6, 6, 8, 3), (16, 3), (64, 128, 320, 512), (8, 16), 84.8, 56, 0.95),
    "b": ((8, 8, 10, 4), (20, 4), (80, 160, 384, 576), (6, 9), 85.1, 95, 0.975),
}

default_cfgs = generate_default_cfgs({
    f"overlock_{v}{'_reparam' if r else ''}.in1k": _cfg(top1, params, crop)
    for v, (*_, top1, params, crop) in _VARIANTS.items() for r in (False, True)})


def _overlock(variant: str, pretrained: bool, reparam: bool = False, **kwargs) -> OverLoCK:
    depths, sub_depths, dims, heads, *_ = _VARIANTS[variant]
    args = dict(depths=depths, sub_depths=sub_depths, embed_dims=dims, sub_num_heads=heads,
                kernel_sizes=(17, 15, 13, 7), mlp_ratios=(4, 4, 4, 4), sub_mlp_ratios=(3, 3), reparam=reparam)
    name = f"overlock_{variant}{'_reparam' if reparam else ''}"
    return _create_overlock(name, pretrained, **dict(args, **kwargs))


@register_model
def overlock_xt(pretrained: bool = False, **kwargs) -> OverLoCK:
    return _overlock("xt", pretrained, **kwargs)


@register_model
def overlock_t(pretrained: bool = False, **kwargs) -> OverLoCK:
    return _overlock("t", pretrained, **kwargs)


@register_model
def overlock_s(pretrained: bool = False, **kwargs) -> OverLoCK:
    return _overlock("s", pretrained, **kwargs)


@register_model
def overlock_b(pretrained: bool = False, **kwargs) -> OverLoCK:
    return _overlock("b", pretrained, **kwargs)


@register_model
def overlock_xt_reparam(pretrained: bool = False, **kwargs) -> OverLoCK:
    return _overlock("xt", pretrained, reparam=True, **kwargs)


@register_model
def overlock_t_reparam(pretrained: bool = False, **kwargs) -> OverLoCK:
    return _overlock("t", pretrained, reparam=True, **kwargs)


@register_model
def overlock_s_reparam(pretrained: bool = False, **kwargs) -> OverLoCK:
    return _overlock("s", pretrained, reparam=True, **kwargs)


@register_model
def overlock_b_reparam(pretrained: bool = False, **kwargs) -> OverLoCK:
    return _overlock("b", pretrained, reparam=True, **kwargs)
