"""BiFormer: Vision Transformer with Bi-Level Routing Attention (Zhu, Wang, Ke, Li, Lau; CVPR 2023,
arXiv:2303.08810).

A four-stage pyramid. Every block is a 3×3 depthwise conv positional embedding (added), then
pre-norm attention and MLP (LayerNorm eps 1e-6). Stages 1–3 use bi-level routing attention
(:class:`vzoo.layers.routing_attention.BiLevelRoutingAttention`: ``n_win × n_win`` regions, each
routed to its ``topk`` = 1 / 4 / 16 most related regions, plus a 5×5 depthwise "local context
enhancement" of the values); stage 4 (``topk=-2``) is global attention (8 heads) with the same local
context term. The stem is two 3×3 stride-2 convs (BatchNorm, GELU between), the downsamplings 3×3
stride-2 convs with BatchNorm, the head BatchNorm → global average → linear.

``biformer_stl`` is the release's Swin-Tiny-layout model of the ablation study (4×4 patch stem,
BatchNorm → 2×2 conv merging, no conv positional embedding, MLP ratio 4).

Variants follow the official ``rayleizhu/BiFormer`` release (``models/biformer.py``,
``models/biformer_stl.py``, attention in ``ops/bra_legacy.py``); its checkpoints
(``downsample_layers.*``, ``stages.{i}.{j}.attn.qkv.qkv``, ``attn.wo``, ``mlp.0``/``mlp.3``; weights
under ``'model'``) load through :func:`checkpoint_filter_fn`.

Input sizes: the release asserts that every routed stage is divisible by ``n_win`` (224 with
``n_win=7``). vzoo's models default to ``auto_pad=True`` (zero padding inside the attention, as the
release's det/seg backbone does), which gives identical outputs at 224 and accepts any size. For
dense prediction pass ``n_win`` for the training resolution (the release: 16 for COCO, 8 for
ADE20K 512×512) and ``feature_norms=True`` (a LayerNorm2d on every returned feature, initialised to
identity when a classification checkpoint is loaded, as the release's ``BiFormer_mm`` does).
"""
from __future__ import annotations

import re
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import DropPath, LayerNorm2d, Mlp, calculate_drop_path_rates
from timm.models import generate_default_cfgs, register_model
from timm.models._manipulate import checkpoint

from vzoo.layers.routing_attention import BiLevelRoutingAttention
from ._builder import build_vzoo_model, official_notes, vzoo_cfg
from ._pyramid import PyramidNet, rename_key_prefix

__all__ = ["BiFormer", "checkpoint_filter_fn"]


class GlobalAttention(nn.Module):
    """Multi-head self-attention over all tokens (NHWC in/out), optionally plus a depthwise conv of
    the input (the release's ``AttentionLePE``, ``topk=-2``; ``topk=-1`` is the same without it)."""

    def __init__(self, dim: int, num_heads: int = 8, side_dwconv: int = 5, device=None, dtype=None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"GlobalAttention: dim={dim} must be divisible by num_heads={num_heads}")
        dd = dict(device=device, dtype=dtype)
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.lepe = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim, **dd) \
            if side_dwconv > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        m = self.num_heads
        qkv = self.qkv(x).reshape(B, H * W, 3, m, C // m).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=self.scale)
        out = out.transpose(1, 2).reshape(B, H, W, C)
        if self.lepe is not None:
            out = out + self.lepe(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.proj(out)


class BiFormerBlock(nn.Module):
    """[depthwise-conv positional embedding] → x + attn(LN(x)) → x + mlp(LN(x)); NCHW in/out."""

    def __init__(self, dim: int, num_heads: int, n_win: int, topk: int, qk_dim: Optional[int] = None,
                 mlp_ratio: float = 3.0, side_dwconv: int = 5, pos_embed_kernel: int = 3, auto_pad: bool = True,
                 drop_path: float = 0.0, global_heads: int = 8, attn_backend: Optional[str] = None,
                 device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.pos_embed = nn.Conv2d(dim, dim, pos_embed_kernel, padding=pos_embed_kernel // 2, groups=dim, **dd) \
            if pos_embed_kernel > 0 else None
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, **dd)
        if topk > 0:
            self.attn = BiLevelRoutingAttention(dim, num_heads=num_heads, n_win=n_win, qk_dim=qk_dim or dim,
                                                topk=topk, side_dwconv=side_dwconv, auto_pad=auto_pad,
                                                backend=attn_backend, **dd)
        elif topk in (-1, -2):
            self.attn = GlobalAttention(dim, global_heads, side_dwconv if topk == -2 else 0, **dd)
        else:
            raise ValueError(f"BiFormerBlock: topk must be > 0 (routing), -1 (global attention) or -2 "
                             f"(global attention + local context), got {topk}")
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, **dd)
        self.mlp = Mlp(dim, int(mlp_ratio * dim), act_layer=nn.GELU, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pos_embed is not None:
            x = x + self.pos_embed(x)
        x = x.permute(0, 2, 3, 1)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x.permute(0, 3, 1, 2)


class BiFormerStage(nn.Module):
    def __init__(self, downsample: nn.Module, blocks: Sequence[nn.Module]):
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        for blk in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(blk, x)
            else:
                x = blk(x)
        return x


_LAYOUTS = ("biformer", "stl")


class BiFormer(PyramidNet):
    """BiFormer.

    Args:
        depths, embed_dims, mlp_ratios: per stage (four stages).
        topks: routed regions per stage; ``-2`` global attention + local context, ``-1`` global attention.
        n_win: regions per side, one int or one per stage.
        qk_dims: query/key width per stage (default: ``embed_dims``); routed heads = ``qk_dim // head_dim``.
        head_dim: head width of the routing attention (32); global attention has ``global_heads`` (8).
        side_dwconv: local-context conv kernel (5); pos_embed_kernel: the block's conv positional
            embedding (3; 0 for none).
        auto_pad: pad the routed stages to a multiple of ``n_win`` (any input size).
        layout: ``'biformer'`` (conv stem, conv+BN downsampling) or ``'stl'`` (Swin-Tiny layout).
        feature_norms: a LayerNorm2d on every intermediate feature (the release's det/seg backbone).
        attn_backend: passed to the routing attention (``None`` picks Triton on CUDA, torch elsewhere).
        device, dtype: where and in which dtype the weights are created (timm's factory arguments).
    """

    conv_fan_out_init = False  # the release keeps torch's default conv init

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = "avg",
            depths: Sequence[int] = (2, 2, 8, 2),
            embed_dims: Sequence[int] = (64, 128, 256, 512),
            mlp_ratios: Sequence[float] = (3, 3, 3, 3),
            topks: Sequence[int] = (1, 4, 16, -2),
            n_win: Union[int, Sequence[int]] = 7,
            qk_dims: Optional[Sequence[int]] = None,
            head_dim: int = 32,
            global_heads: int = 8,
            side_dwconv: int = 5,
            pos_embed_kernel: int = 3,
            auto_pad: bool = True,
            layout: str = "biformer",
            feature_norms: bool = False,
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
            attn_backend: Optional[str] = None,
            device=None,
            dtype=None,
    ):
        super().__init__()
        n_win = (n_win,) * 4 if isinstance(n_win, int) else tuple(n_win)
        qk_dims = tuple(qk_dims or embed_dims)
        if layout not in _LAYOUTS:
            raise ValueError(f"BiFormer: layout must be one of {_LAYOUTS}, got {layout!r}")
        self.init_pyramid(num_classes, global_pool, embed_dims[-1], drop_rate, depths=depths, embed_dims=embed_dims,
                          mlp_ratios=mlp_ratios, topks=topks, n_win=n_win, qk_dims=qk_dims)
        self.layout = layout
        dd = dict(device=device, dtype=dtype)

        d0 = embed_dims[0]
        if layout == "biformer":
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, d0 // 2, 3, stride=2, padding=1, **dd), nn.BatchNorm2d(d0 // 2, **dd), nn.GELU(),
                nn.Conv2d(d0 // 2, d0, 3, stride=2, padding=1, **dd), nn.BatchNorm2d(d0, **dd))
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_chans, d0, 4, stride=4, **dd), nn.BatchNorm2d(d0, **dd))
        dpr = calculate_drop_path_rates(drop_path_rate, depths, stagewise=True)
        stages = []
        for i in range(4):
            if i == 0:
                down = nn.Identity()
            elif layout == "biformer":
                down = nn.Sequential(nn.Conv2d(embed_dims[i - 1], embed_dims[i], 3, stride=2, padding=1, **dd),
                                     nn.BatchNorm2d(embed_dims[i], **dd))
            else:
                down = nn.Sequential(nn.BatchNorm2d(embed_dims[i - 1], **dd),
                                     nn.Conv2d(embed_dims[i - 1], embed_dims[i], 2, stride=2, **dd))
            blocks = [BiFormerBlock(embed_dims[i], qk_dims[i] // head_dim, n_win[i], topks[i], qk_dims[i],
                                    mlp_ratios[i], side_dwconv, pos_embed_kernel, auto_pad, dpr[i][j],
                                    global_heads, attn_backend, **dd) for j in range(depths[i])]
            stages.append(BiFormerStage(down, blocks))
        self.init_stages(stages, embed_dims)
        if feature_norms:
            self.feature_transforms = nn.ModuleList([LayerNorm2d(d, **dd) for d in embed_dims])
        self.norm = nn.BatchNorm2d(embed_dims[-1], **dd)
        self.init_head()


# ---------------------------------------------------------------------------------------------------
# official checkpoints
# ---------------------------------------------------------------------------------------------------
#: (official, vzoo) key prefixes after ``stages.{i}.{j}.`` / ``stages.{i}.blocks.{j}.``, first match wins
_BLOCK_RENAMES = (
    ("attn.qkv.qkv.", "attn.qkv."),        # routing attention (QKVLinear wrapper)
    ("attn.wo.", "attn.proj."),
    ("attn.router.emb.", "attn.router_proj."),
    ("mlp.0.", "mlp.fc1."),
)
_MLP_FC2 = {"biformer": "mlp.3.", "stl": "mlp.2."}  # the second Linear in the release's mlp Sequential


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Map an official BiFormer / BiFormer-STL state dict (``checkpoint['model']``) onto :class:`BiFormer`.

    ``downsample_layers.0.*`` → ``stem.*``; ``downsample_layers.{i}.*`` → ``stages.{i}.downsample.*``;
    ``stages.{i}.{j}.*`` (``stages.{i}.blocks.{j}.*`` in the STL layout) → ``stages.{i}.blocks.{j}.*``
    with ``attn.qkv.qkv`` → ``attn.qkv``, ``attn.wo`` → ``attn.proj``, ``attn.router.emb`` →
    ``attn.router_proj``, ``mlp.0``/``mlp.3`` (STL ``mlp.2``) → ``mlp.fc1``/``mlp.fc2``; ``norm``/``head``
    stay. A model built with ``feature_norms=True`` keeps its own (identity) ``feature_transforms`` when
    the checkpoint has none, as the release's det/seg backbone does. vzoo-format dicts pass through.
    """
    layout = getattr(model, "layout", "biformer")
    if not any(k.startswith("downsample_layers.") for k in state_dict):
        out = dict(state_dict)
    else:
        renames = _BLOCK_RENAMES + ((_MLP_FC2[layout], "mlp.fc2."),)
        out = {}
        for k, v in state_dict.items():
            m = re.match(r"^downsample_layers\.(\d+)\.(.*)$", k)
            if m:
                i, rest = int(m.group(1)), m.group(2)
                k = f"stem.{rest}" if i == 0 else f"stages.{i}.downsample.{rest}"
            else:
                m = re.match(r"^stages\.(\d+)\.(?:blocks\.)?(\d+)\.(.*)$", k)
                if m:
                    i, j, rest = m.groups()
                    k = f"stages.{i}.blocks.{j}.{rename_key_prefix(rest, renames)}"
            out[k] = v
    if getattr(model, "feature_transforms", None) is not None and \
            not any(k.startswith("feature_transforms.") for k in out):
        out.update({k: v.clone() for k, v in model.state_dict().items() if k.startswith("feature_transforms.")})
    return out


def _create_biformer(variant: str, pretrained: bool = False, **kwargs) -> BiFormer:
    return build_vzoo_model(BiFormer, variant, pretrained, checkpoint_filter_fn=checkpoint_filter_fn,
                            default_feature_cfg=dict(out_indices=(0, 1, 2, 3)),
                            **{**_RELEASE_ARGS, **_VARIANTS[variant], **kwargs})


def _cfg(top1: Optional[float] = None, params_m: Optional[float] = None, gflops: Optional[float] = None, **kwargs):
    return vzoo_cfg(
        # n_win=7 regions per side: at 224 no stage is padded. From 128 (the first multiple of 32
        # above 7 * 16) every stage-3 region holds real tokens; smaller inputs still run (auto_pad).
        min_input_size=(3, 128, 128), test_input_size=(3, 224, 224), fixed_input_size=False,
        first_conv="stem.0", license="mit", origin_url="https://github.com/rayleizhu/BiFormer",
        paper_ids="arXiv:2303.08810", paper_name="BiFormer: Vision Transformer with Bi-Level Routing Attention",
        notes=official_notes("BiFormer paper / rayleizhu/BiFormer README", top1, params_m, gflops), **kwargs)


default_cfgs = generate_default_cfgs({
    "biformer_tiny.in1k": _cfg(top1=81.4, params_m=13.1, gflops=2.2),
    "biformer_small.in1k": _cfg(top1=83.8, params_m=25.5, gflops=4.5),
    "biformer_base.in1k": _cfg(top1=84.3, params_m=56.8, gflops=9.8),
    "biformer_stl.in1k": _cfg(top1=82.7, params_m=28.4, gflops=4.6),
})

_VARIANTS = {
    "biformer_tiny": dict(depths=(2, 2, 8, 2), embed_dims=(64, 128, 256, 512)),
    "biformer_small": dict(depths=(4, 4, 18, 4), embed_dims=(64, 128, 256, 512)),
    "biformer_base": dict(depths=(4, 4, 18, 4), embed_dims=(96, 192, 384, 768)),
    "biformer_stl": dict(depths=(2, 2, 6, 2), embed_dims=(96, 192, 384, 768), mlp_ratios=(4, 4, 4, 4),
                         pos_embed_kernel=0, layout="stl"),
}


# shared by every release model: n_win 7, topks (1, 4, 16, -2), qk_dim = dim, head_dim 32,
# side_dwconv 5, kv_downsample 'identity', no param/diff/soft routing, pre-norm, no layer scale
_RELEASE_ARGS = dict(mlp_ratios=(3, 3, 3, 3), topks=(1, 4, 16, -2), n_win=7, head_dim=32, side_dwconv=5,
                     pos_embed_kernel=3)


@register_model
def biformer_tiny(pretrained: bool = False, **kwargs) -> BiFormer:
    return _create_biformer("biformer_tiny", pretrained, **kwargs)


@register_model
def biformer_small(pretrained: bool = False, **kwargs) -> BiFormer:
    return _create_biformer("biformer_small", pretrained, **kwargs)


@register_model
def biformer_base(pretrained: bool = False, **kwargs) -> BiFormer:
    return _create_biformer("biformer_base", pretrained, **kwargs)


@register_model
def biformer_stl(pretrained: bool = False, **kwargs) -> BiFormer:
    return _create_biformer("biformer_stl", pretrained, **kwargs)
