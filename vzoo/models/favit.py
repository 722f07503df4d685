"""FaViT: Factorization Vision Transformer (Qin, Zhou, Xu, Bian, Li; "Factorization Vision Transformer:
Modeling Long-Range Dependency With Local Window Cost", IEEE TNNLS 2023, arXiv:2312.08614).

A four-stage PVTv2-style pyramid (overlapping strided-conv patch embeddings with LayerNorm, pre-norm
blocks whose MLP has a 3×3 depthwise conv, a LayerNorm after every stage, average-pooled classifier)
whose token mixer is factorization self-attention (FaSA). One ``q`` projection serves all of FaSA's
sub-attentions; the channels are split into groups of ratio 2 : 7 : 7 (stages with ``sr_ratio > 1``)
or 1 : 7 (the last stage), and the outputs of the groups are concatenated and projected:

* **coarse group** (the first channels, one head): keys and values from the input after a
  ``sr_ratio``-strided ``sr_ratio × sr_ratio`` conv and a LayerNorm (PVT's spatial reduction), the values
  plus a 3×3 depthwise conv of themselves;
* **fine groups** (``num_heads`` heads each; dilation 1, then ``sr_ratio``): the remaining channels go
  through a 3×3 depthwise + 1×1 conv; the map is mirror-padded to a multiple of the window span
  ``dilation·(window-1)+1`` and cut into non-overlapping spans, each sampled on a ``window × window``
  grid of step ``dilation`` (a dilated window). The sampled windows are then *averaged together*
  into one ``window × window`` set of tokens per head, which a linear layer mixes and another turns
  into keys and values (values plus a 3×3 depthwise conv over the window grid). Every query of the
  group attends to these ``window²`` tokens.

Note on fidelity: this follows the released code (``q2479036243/FaViT``, ``classification/favit.py``,
whose checkpoints it must reproduce), not the paper's prose. In the release the windows are merged
by an ``AdaptiveAvgPool2d`` over the window-major flattened ``(windows, channels)`` array, i.e. output
channel ``j`` is the mean of the ``j``-th run of ``#windows`` consecutive values of that flattening
(which mixes windows and channels); vzoo computes exactly that. Because every query sees the same
pooled tokens, FaSA as released has no per-window attention, so it is plain (SDPA) attention here and
does not go through the window/neighbourhood-attention op of :mod:`vzoo.layers`.

Any input size of at least 29×29 works (each stage must be at least ``sr_ratio`` tokens on a side):
the release's reflection padding fails where the pad exceeds the map, vzoo then reflects repeatedly
(identical wherever the release runs). Variants B0–B3 follow the release; its checkpoints (weights
under ``'model'``: ``patch_embed1.proj``, ``block1.0.attn.kv_g``, ``attn.kv_l.depth_conv``,
``attn.single_heads.0``, ``mlp.dwconv.dwconv``, ``norm1``, ...) load through :func:`checkpoint_filter_fn`.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing
from timm.layers import DropPath, calculate_drop_path_rates, register_notrace_function
from timm.models import generate_default_cfgs, register_model
from timm.models._manipulate import checkpoint

from ._builder import build_vzoo_model, official_notes, vzoo_cfg
from ._pyramid import PyramidNet, pvt_to_pyramid_keys

__all__ = ["FaViT", "FactorizationAttention", "checkpoint_filter_fn", "OFFICIAL_BLOCK_RENAMES"]


def _mirror_pad(x: torch.Tensor, pad_b: int, pad_r: int) -> torch.Tensor:
    """Reflection padding at the bottom/right of an NCHW map. Where a pad is not smaller than the map
    (which ``nn.ReflectionPad2d`` refuses) the map is reflected repeatedly; a 1-pixel axis is replicated."""
    if pad_b == 0 and pad_r == 0:
        return x
    if pad_b < x.shape[-2] and pad_r < x.shape[-1]:
        return F.pad(x, (0, pad_r, 0, pad_b), mode="reflect")
    for axis, pad in ((-2, pad_b), (-1, pad_r)):
        while pad > 0:
            step = min(pad, x.shape[axis] - 1)
            spec = (0, 0, 0, step) if axis == -2 else (0, step, 0, 0)
            if step == 0:  # a single row/column cannot be reflected
                spec = (0, 0, 0, pad) if axis == -2 else (0, pad, 0, 0)
                x, step = F.pad(x, spec, mode="replicate"), pad
            else:
                x = F.pad(x, spec, mode="reflect")
            pad -= step
    return x


@register_notrace_function  # its padding follows the input size: an fx leaf (public: fx wraps no _names)
def pooled_window(x: torch.Tensor, window: int, dilation: int, heads: int) -> torch.Tensor:
    """(B, C, H, W) → (B, heads, window², C/heads): every non-overlapping span of
    ``dilation·(window-1)+1`` pixels, sampled on a ``window × window`` grid of step ``dilation``, averaged
    over the spans as the FaViT release does (see the module docstring)."""
    span = dilation * (window - 1) + 1
    x = _mirror_pad(x, (-x.shape[-2]) % span, (-x.shape[-1]) % span)
    B, C, H, W = x.shape
    hb, wb = H // span, W // span
    n, c = hb * wb, C // heads
    x = x.reshape(B, C, hb, span, wb, span)[:, :, :, ::dilation, :, ::dilation]  # (B, C, hb, w, wb, w)
    x = x.permute(0, 1, 3, 5, 2, 4).reshape(B, heads, c, window * window, n)
    # window-major flattening of (windows, channels), averaged in runs of `n` consecutive values
    x = x.permute(0, 1, 3, 4, 2).reshape(B, heads, window * window, c, n)
    return x.mean(-1)


class CoarseAttentionKV(nn.Module):
    """Keys/values of FaSA's coarse group: spatial reduction conv → LayerNorm → linear (k, v), with a
    3×3 depthwise conv of the values added to them."""

    def __init__(self, dim: int, sr_ratio: int, qkv_bias: bool = True, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio, **dd)
        self.norm = nn.LayerNorm(dim, **dd)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias, **dd)
        self.pe = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, **dd)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:  # x: (B, C, H, W)
        x = self.sr(x)
        B, C, h, w = x.shape
        k, v = self.kv(self.norm(x.flatten(2).transpose(1, 2))).chunk(2, dim=-1)  # (B, N', C)
        v = v + self.pe(v.transpose(1, 2).reshape(B, C, h, w)).flatten(2).transpose(1, 2)
        return k, v


class FineAttentionKV(nn.Module):
    """Keys/values of one fine group: the pooled dilated window (``pooled_window``) → linear mix →
    linear (k, v) per head, with a 3×3 depthwise conv over the window grid added to the values."""

    def __init__(self, dim: int, num_heads: int, window: int, dilation: int, qkv_bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.dim, self.num_heads, self.window, self.dilation = dim, num_heads, window, dilation
        c = dim // num_heads
        self.fc = nn.Linear(c, c, bias=qkv_bias, **dd)
        self.kv = nn.Linear(c, 2 * c, bias=qkv_bias, **dd)
        self.pe = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, **dd)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:  # x: (B, dim, H, W)
        B, h, w = x.shape[0], self.num_heads, self.window
        k, v = self.kv(self.fc(pooled_window(x, w, self.dilation, h))).chunk(2, dim=-1)  # (B, h, w², c)
        pe = self.pe(v.transpose(2, 3).reshape(B, self.dim, w, w))
        v = v + pe.reshape(B, h, self.dim // h, w * w).transpose(2, 3)
        return k, v


class DwPwConv(nn.Module):
    """3×3 depthwise conv then 1×1 conv."""

    def __init__(self, dim: int, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, **dd)
        self.pw = nn.Conv2d(dim, dim, 1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


def fasa_split(dim: int, sr_ratio: int) -> Tuple[int, ...]:
    """Channels of FaSA's groups: ratios 2 : 7 : 7 where ``sr_ratio > 1``, else 1 : 7 (the release)."""
    parts = (2, 7, 7) if sr_ratio > 1 else (1, 7)
    unit = dim // sum(parts)
    return tuple(unit * p for p in parts)


class FactorizationAttention(nn.Module):
    """FaSA on tokens ``(B, H·W, C)``: a one-head coarse (spatially reduced) group and fine groups of
    dilation 1 and ``sr_ratio`` (see the module docstring)."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, window_size: int = 7, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        split = fasa_split(dim, sr_ratio)
        if sum(split) != dim or any(s % num_heads for s in split[1:]) or split[0] == 0:
            raise ValueError(f"FactorizationAttention: dim={dim} must split into groups of ratio "
                             f"{'2:7:7' if sr_ratio > 1 else '1:7'} (a multiple of {16 if sr_ratio > 1 else 8}) whose "
                             f"fine groups are divisible by num_heads={num_heads}")
        self.dim, self.num_heads, self.sr_ratio, self.window_size = dim, num_heads, sr_ratio, window_size
        self.coarse_dim, self.fine_dims = split[0], split[1:]
        self.attn_drop = attn_drop
        self.q = nn.Linear(dim, dim, bias=qkv_bias, **dd)
        self.coarse = CoarseAttentionKV(self.coarse_dim, sr_ratio, qkv_bias, **dd)
        self.fine_kv = DwPwConv(dim - self.coarse_dim, **dd)
        dilations = (1, sr_ratio)[:len(self.fine_dims)]
        self.fine = nn.ModuleList([FineAttentionKV(d, num_heads, window_size, dil, qkv_bias, **dd)
                                   for d, dil in zip(self.fine_dims, dilations)])
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0,
                                              scale=scale)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, N, C = x.shape
        if not torch.jit.is_scripting():
            if not is_fx_symbolic_tracing():  # an eager check: TorchScript and fx see only the compute
                if H < self.sr_ratio or W < self.sr_ratio:
                    raise ValueError(f"FaViT: a stage with sr_ratio={self.sr_ratio} needs at least {self.sr_ratio}×"
                                     f"{self.sr_ratio} tokens, got {H}×{W}; the input image is too small (min 29×29)")
        q = self.q(x)
        cg, h = self.coarse_dim, self.num_heads
        k, v = self.coarse(x[..., :cg].transpose(1, 2).reshape(B, cg, H, W))
        outs = [self._attend(q[..., :cg].unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), cg ** -0.5).squeeze(1)]
        fine = self.fine_kv(x[..., cg:].transpose(1, 2).reshape(B, C - cg, H, W))
        q_fine = q[..., cg:].reshape(B, N, h, (C - cg) // h)  # heads first, then each group's share of a head
        q_off = c_off = 0
        for d, branch in zip(self.fine_dims, self.fine):
            c = d // h
            k, v = branch(fine[:, c_off:c_off + d])
            qi = q_fine[..., q_off:q_off + c].transpose(1, 2)  # (B, h, N, c)
            outs.append(self._attend(qi, k, v, c ** -0.5).transpose(1, 2).reshape(B, N, d))
            q_off, c_off = q_off + c, c_off + d
        return self.proj_drop(self.proj(torch.cat(outs, dim=-1)))


class ConvMlp(nn.Module):
    """Linear → 3×3 depthwise conv → GELU → Linear, on tokens (PVTv2's MLP)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.fc1 = nn.Linear(dim, hidden, **dd)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, **dd)
        self.act = nn.GELU()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim, **dd)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = self.fc1(x)
        B, N, C = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(B, C, H, W)).flatten(2).transpose(1, 2)
        return self.drop(self.fc2(self.drop(self.act(x))))


class FaViTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int, window_size: int = 7,
                 qkv_bias: bool = True, norm_eps: float = 1e-6, proj_drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps, **dd)
        self.attn = FactorizationAttention(dim, num_heads, sr_ratio, window_size, qkv_bias, attn_drop, proj_drop, **dd)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps, **dd)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), proj_drop, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), H, W))
        return x + self.drop_path(self.mlp(self.norm2(x), H, W))


class PatchEmbed(nn.Module):
    """Overlapping strided conv (kernel ``k``, padding ``k//2``), then LayerNorm over channels (eps 1e-5)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.proj = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2, **dd)
        self.norm = nn.LayerNorm(out_chs, **dd)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        H, W = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), H, W


class FaViTStage(nn.Module):
    """Patch embedding → blocks → LayerNorm; NCHW in and out."""

    def __init__(self, in_chs: int, dim: int, depth: int, num_heads: int, mlp_ratio: float, sr_ratio: int,
                 first: bool, drop_path: Sequence[float] = (), norm_eps: float = 1e-6, device=None, dtype=None,
                 **block_kwargs):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.grad_checkpointing = False
        self.downsample = PatchEmbed(in_chs, dim, 7 if first else 3, 4 if first else 2, **dd)
        self.blocks = nn.ModuleList([
            FaViTBlock(dim, num_heads, mlp_ratio, sr_ratio, norm_eps=norm_eps,
                       drop_path=drop_path[i] if drop_path else 0.0, **block_kwargs, **dd) for i in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=norm_eps, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, H, W = self.downsample(x)
        for blk in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(blk, x, H, W)
            else:
                x = blk(x, H, W)
        x = self.norm(x)
        return x.transpose(1, 2).reshape(x.shape[0], -1, H, W)


class FaViT(PyramidNet):
    """Factorization Transformer.

    Args:
        embed_dims, depths, num_heads, mlp_ratios, sr_ratios: per stage (four stages).
        window_size: side of FaSA's dilated windows (release: 7).
        qkv_bias: biases on the query/key/value linears (release: True).
        global_pool: ``'avg'`` or ``''`` (no pooling in ``forward_head``).
        device, dtype: where and in which dtype the weights are created (timm's factory arguments).
    """

    stem_pattern = r"^stages\.0\.downsample"  # the first patch embedding is the stem

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = "avg",
            embed_dims: Sequence[int] = (64, 128, 256, 512),
            depths: Sequence[int] = (2, 2, 6, 2),
            num_heads: Sequence[int] = (1, 2, 4, 8),
            mlp_ratios: Sequence[float] = (8, 6, 4, 4),
            sr_ratios: Sequence[int] = (8, 4, 2, 1),
            window_size: int = 7,
            qkv_bias: bool = True,
            norm_eps: float = 1e-6,
            drop_rate: float = 0.0,
            proj_drop_rate: float = 0.0,
            attn_drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
            device=None,
            dtype=None,
    ):
        super().__init__()
        if not isinstance(window_size, int) or isinstance(window_size, bool) or window_size < 1:
            raise ValueError(f"FaViT: window_size must be a positive int, got {window_size!r}")
        self.init_pyramid(num_classes, global_pool, embed_dims[-1], drop_rate, embed_dims=embed_dims, depths=depths,
                          num_heads=num_heads, mlp_ratios=mlp_ratios, sr_ratios=sr_ratios)
        dpr = calculate_drop_path_rates(drop_path_rate, depths, stagewise=True)
        self.init_stages([
            FaViTStage(embed_dims[i - 1] if i else in_chans, embed_dims[i], depths[i], num_heads[i], mlp_ratios[i],
                       sr_ratios[i], first=i == 0, drop_path=dpr[i], norm_eps=norm_eps, window_size=window_size,
                       qkv_bias=qkv_bias, proj_drop=proj_drop_rate, attn_drop=attn_drop_rate, device=device,
                       dtype=dtype)
            for i in range(4)], embed_dims)
        self.init_head()


#: (official, vzoo) key prefixes inside ``block{s}.{j}.``, first match wins (see :func:`pvt_to_pyramid_keys`)
OFFICIAL_BLOCK_RENAMES = (
    ("attn.kv_g.", "attn.coarse.kv."),
    ("attn.sr.", "attn.coarse.sr."),
    ("attn.norm.", "attn.coarse.norm."),
    ("attn.local_conv_g.", "attn.coarse.pe."),
    ("attn.kv_l.depth_conv.", "attn.fine_kv.dw."),
    ("attn.kv_l.point_conv.", "attn.fine_kv.pw."),
    ("attn.fcs.{n}.", "attn.fine.{n}.fc."),
    ("attn.single_heads.{n}.", "attn.fine.{n}.kv."),
    ("attn.local_convs.{n}.", "attn.fine.{n}.pe."),
    ("mlp.dwconv.dwconv.", "mlp.dwconv."),
)


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Map the official FaViT release (``{'model': state_dict}`` saved by its ``main.py``) onto :class:`FaViT`:
    the PVT-style names (``patch_embed{s}``, ``block{s}.{j}``, ``norm{s}``) with the renames of
    ``OFFICIAL_BLOCK_RENAMES``. A state dict already in vzoo's names passes through unchanged."""
    return pvt_to_pyramid_keys(state_dict, OFFICIAL_BLOCK_RENAMES)


def _create_favit(variant: str, pretrained: bool = False, **kwargs) -> FaViT:
    return build_vzoo_model(FaViT, variant, pretrained, checkpoint_filter_fn=checkpoint_filter_fn,
                            default_feature_cfg=dict(out_indices=(0, 1, 2, 3)), **dict(_VARIANTS[variant], **kwargs))


def _cfg(top1: Optional[float] = None, params_m: Optional[float] = None, gflops: Optional[float] = None, **kwargs):
    return vzoo_cfg(
        min_input_size=(3, 64, 64), fixed_input_size=False, first_conv="stages.0.downsample.proj",
        origin_url="https://github.com/q2479036243/FaViT", paper_ids="arXiv:2312.08614",
        paper_name="Factorization Vision Transformer: Modeling Long Range Dependency with Local Window Cost",
        notes=official_notes("q2479036243/FaViT README", top1, params_m, gflops), **kwargs)


default_cfgs = generate_default_cfgs({
    "favit_b0.in1k": _cfg(top1=71.5, params_m=3.4, gflops=0.6),
    "favit_b1.in1k": _cfg(top1=79.4, params_m=13, gflops=2.4),
    "favit_b2.in1k": _cfg(top1=82.3, params_m=24, gflops=4.5),
    "favit_b3.in1k": _cfg(top1=83.4, params_m=48, gflops=8.5),
})

# num_heads (1, 2, 4, 8), mlp_ratios (8, 6, 4, 4), sr_ratios (8, 4, 2, 1) for all
_VARIANTS = {
    "favit_b0": dict(embed_dims=(32, 64, 128, 256), depths=(2, 2, 6, 2)),
    "favit_b1": dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 6, 2)),
    "favit_b2": dict(embed_dims=(64, 128, 256, 512), depths=(2, 3, 18, 3)),
    "favit_b3": dict(embed_dims=(96, 192, 384, 768), depths=(2, 3, 14, 3)),
}


@register_model
def favit_b0(pretrained: bool = False, **kwargs) -> FaViT:
    return _create_favit("favit_b0", pretrained, **kwargs)


@register_model
def favit_b1(pretrained: bool = False, **kwargs) -> FaViT:
    return _create_favit("favit_b1", pretrained, **kwargs)


@register_model
def favit_b2(pretrained: bool = False, **kwargs) -> FaViT:
    return _create_favit("favit_b2", pretrained, **kwargs)


@register_model
def favit_b3(pretrained: bool = False, **kwargs) -> FaViT:
    return _create_favit("favit_b3", pretrained, **kwargs)
