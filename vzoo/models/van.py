"""VAN: Visual Attention Network (Guo, Lu, Liu, Cheng, Hu; CVMJ 2023, arXiv:2202.09741).

A four-stage convolutional pyramid whose token mixer is large kernel attention (LKA,
:class:`vzoo.layers.lka.LargeKernelAttention`): 1×1 conv → GELU → LKA gate → 1×1 conv, with a
residual. Each block is BatchNorm → spatial attention and BatchNorm → conv MLP (1×1, depthwise 3×3,
GELU, 1×1), both scaled by a per-channel layer scale (init 1e-2). Every stage starts with an
overlapping strided conv + BatchNorm (7×7 stride 4, then 3×3 stride 2) and ends with a LayerNorm
over channels; the classifier averages the last stage's tokens.

Variants B0–B6 follow the official ``Visual-Attention-Network/VAN-Classification`` release; its
checkpoints (``patch_embed1.proj``, ``block1.0.attn.spatial_gating_unit.conv0``, ``norm1``, ...)
load through :func:`checkpoint_filter_fn`.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import nn
from timm.layers import DropPath, LayerNorm2d, LayerScale2d, calculate_drop_path_rates
from timm.models import generate_default_cfgs, register_model
from timm.models._manipulate import checkpoint_seq

from vzoo.layers.lka import LargeKernelAttention
from ._builder import build_vzoo_model, official_notes, vzoo_cfg
from ._pyramid import PyramidNet, pvt_to_pyramid_keys

__all__ = ["VAN", "checkpoint_filter_fn", "OFFICIAL_BLOCK_RENAMES"]


class SpatialAttention(nn.Module):
    """1×1 conv → GELU → LKA gate → 1×1 conv, plus the input (VAN's attention module)."""

    def __init__(self, dim: int, kernel_size: int = 21, dilation: int = 3, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.proj_in = nn.Conv2d(dim, dim, 1, **dd)
        self.act = nn.GELU()
        self.lka = LargeKernelAttention(dim, kernel_size, dilation, **dd)
        self.proj_out = nn.Conv2d(dim, dim, 1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_out(self.lka(self.act(self.proj_in(x)))) + x


class ConvMlp(nn.Module):
    """1×1 conv → depthwise 3×3 → GELU → 1×1 conv."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.fc1 = nn.Conv2d(dim, hidden, 1, **dd)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, **dd)
        self.act = nn.GELU()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Conv2d(hidden, dim, 1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        return self.drop(self.fc2(x))


class VanBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0,
                 ls_init_value: float = 1e-2, kernel_size: int = 21, dilation: int = 3, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.norm1 = nn.BatchNorm2d(dim, **dd)
        self.attn = SpatialAttention(dim, kernel_size, dilation, **dd)
        self.ls1 = LayerScale2d(dim, ls_init_value, **dd)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim, **dd)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), drop, **dd)
        self.ls2 = LayerScale2d(dim, ls_init_value, **dd)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x


class OverlapDownsample(nn.Module):
    """Overlapping strided conv (kernel ``k``, padding ``k//2``) followed by BatchNorm."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.proj = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2, **dd)
        self.norm = nn.BatchNorm2d(out_chs, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class VanStage(nn.Module):
    def __init__(self, in_chs: int, dim: int, depth: int, mlp_ratio: float, first: bool,
                 drop: float = 0.0, drop_path: Sequence[float] = (), norm_eps: float = 1e-6, device=None, dtype=None,
                 **block_kwargs):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.grad_checkpointing = False
        self.downsample = OverlapDownsample(in_chs, dim, 7 if first else 3, 4 if first else 2, **dd)
        self.blocks = nn.Sequential(*[
            VanBlock(dim, mlp_ratio, drop, drop_path[i] if drop_path else 0.0, **block_kwargs, **dd)
            for i in range(depth)])
        self.norm = LayerNorm2d(dim, eps=norm_eps, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x)


class VAN(PyramidNet):
    """Visual Attention Network.

    Args:
        depths: blocks per stage (four stages).
        embed_dims: channels per stage.
        mlp_ratios: MLP expansion per stage.
        kernel_size, dilation: the large kernel that LKA decomposes (official: 21, 3).
        ls_init_value: layer-scale init (official: 1e-2).
        global_pool: ``'avg'`` or ``''`` (no pooling in ``forward_head``).
        device, dtype: where and in which dtype the weights are created (timm's factory arguments).
    """

    stem_pattern = r"^stages\.0\.downsample"  # the first patch embedding is the stem

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = "avg",
            embed_dims: Sequence[int] = (64, 128, 320, 512),
            depths: Sequence[int] = (3, 4, 6, 3),
            mlp_ratios: Sequence[float] = (8, 8, 4, 4),
            kernel_size: int = 21,
            dilation: int = 3,
            ls_init_value: float = 1e-2,
            norm_eps: float = 1e-6,
            drop_rate: float = 0.0,
            proj_drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
            device=None,
            dtype=None,
    ):
        super().__init__()
        self.init_pyramid(num_classes, global_pool, embed_dims[-1], drop_rate,
                          embed_dims=embed_dims, depths=depths, mlp_ratios=mlp_ratios)
        dpr = calculate_drop_path_rates(drop_path_rate, depths, stagewise=True)
        self.init_stages([
            VanStage(embed_dims[i - 1] if i else in_chans, embed_dims[i], depths[i], mlp_ratios[i], first=i == 0,
                     drop=proj_drop_rate, drop_path=dpr[i], norm_eps=norm_eps, ls_init_value=ls_init_value,
                     kernel_size=kernel_size, dilation=dilation, device=device, dtype=dtype)
            for i in range(4)], embed_dims)
        self.init_head()


#: (official, vzoo) key prefixes inside ``block{s}.{j}.``, first match wins (see :func:`pvt_to_pyramid_keys`)
OFFICIAL_BLOCK_RENAMES = (
    ("attn.proj_1.", "attn.proj_in."),
    ("attn.proj_2.", "attn.proj_out."),
    ("attn.spatial_gating_unit.conv0.", "attn.lka.dw."),
    ("attn.spatial_gating_unit.conv_spatial.", "attn.lka.dw_dilated."),
    ("attn.spatial_gating_unit.conv1.", "attn.lka.pw."),
    ("mlp.dwconv.dwconv.", "mlp.dwconv."),
    ("layer_scale_1", "ls1.gamma"),
    ("layer_scale_2", "ls2.gamma"),
)


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Map the official VAN release (``state_dict`` of ``van_*.pth.tar``) onto :class:`VAN`: the PVT-style
    names (``patch_embed{s}``, ``block{s}.{j}``, ``norm{s}``) with the renames of ``OFFICIAL_BLOCK_RENAMES``.
    A state dict already in vzoo's names passes through unchanged."""
    return pvt_to_pyramid_keys(state_dict, OFFICIAL_BLOCK_RENAMES)


def _create_van(variant: str, pretrained: bool = False, **kwargs) -> VAN:
    return build_vzoo_model(VAN, variant, pretrained, checkpoint_filter_fn=checkpoint_filter_fn,
                            default_feature_cfg=dict(out_indices=(0, 1, 2, 3)), **dict(_VARIANTS[variant], **kwargs))


def _cfg(top1: Optional[float] = None, params_m: Optional[float] = None, **kwargs):
    return vzoo_cfg(
        crop_pct=0.9, first_conv="stages.0.downsample.proj", license="apache-2.0",
        origin_url="https://github.com/Visual-Attention-Network/VAN-Classification",
        paper_ids="arXiv:2202.09741", paper_name="Visual Attention Network",
        notes=official_notes("VAN paper / VAN-Classification README", top1, params_m), **kwargs)


default_cfgs = generate_default_cfgs({
    "van_b0.in1k": _cfg(top1=75.4, params_m=4.1),
    "van_b1.in1k": _cfg(top1=81.1, params_m=13.9),
    "van_b2.in1k": _cfg(top1=82.8, params_m=26.6),
    "van_b3.in1k": _cfg(top1=83.9, params_m=44.8),
    "van_b4.untrained": _cfg(),  # defined by the official code; no ImageNet-1k weights released
    "van_b5.untrained": _cfg(),
    "van_b6.untrained": _cfg(),
})

# mlp_ratios are (8, 8, 4, 4) for every variant
_VARIANTS = {
    "van_b0": dict(embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2)),
    "van_b1": dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 4, 2)),
    "van_b2": dict(embed_dims=(64, 128, 320, 512), depths=(3, 3, 12, 3)),
    "van_b3": dict(embed_dims=(64, 128, 320, 512), depths=(3, 5, 27, 3)),
    "van_b4": dict(embed_dims=(64, 128, 320, 512), depths=(3, 6, 40, 3)),
    "van_b5": dict(embed_dims=(96, 192, 480, 768), depths=(3, 3, 24, 3)),
    "van_b6": dict(embed_dims=(96, 192, 384, 768), depths=(6, 6, 90, 6)),
}


@register_model
def van_b0(pretrained: bool = False, **kwargs) -> VAN:
    return _create_van("van_b0", pretrained, **kwargs)


@register_model
def van_b1(pretrained: bool = False, **kwargs) -> VAN:
    return _create_van("van_b1", pretrained, **kwargs)


@register_model
def van_b2(pretrained: bool = False, **kwargs) -> VAN:
    return _create_van("van_b2", pretrained, **kwargs)


@register_model
def van_b3(pretrained: bool = False, **kwargs) -> VAN:
    return _create_van("van_b3", pretrained, **kwargs)


@register_model
def van_b4(pretrained: bool = False, **kwargs) -> VAN:
    return _create_van("van_b4", pretrained, **kwargs)


@register_model
def van_b5(pretrained: bool = False, **kwargs) -> VAN:
    return _create_van("van_b5", pretrained, **kwargs)


@register_model
def van_b6(pretrained: bool = False, **kwargs) -> VAN:
    return _create_van("van_b6", pretrained, **kwargs)
