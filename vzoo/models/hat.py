"""HAT: Hybrid Attention Transformer for image super-resolution (Chen, Wang, Zhou, Qiao, Dong;
CVPR 2023, arXiv:2205.04437; extended as arXiv:2309.05239).

An image-to-image model (``vzoo_task = 'image-to-image'``): an RGB image in [0, 1] of any size goes
in, the image upscaled ``upscale`` times comes out.

* shallow features: the image minus the DIV2K mean (times ``img_range``), a 3×3 conv to
  ``embed_dim`` channels, then a LayerNorm over channels;
* deep features: residual hybrid attention groups (RHAG). Each group runs ``depth`` hybrid attention
  blocks (HAB) — window self-attention with a relative position bias (every second block on windows
  shifted by half a window, Swin-style, with the -100 mask across the wrap-around, applied per window
  category so no per-window mask is materialised), plus a
  convolutional channel-attention branch (CAB) scaled by ``conv_scale`` — then one overlapping
  cross-attention block (OCAB: queries from ``window``² windows, keys and values from overlapping
  ``window·(1+overlap_ratio)``² windows, zero-padded at the border), then a 3×3 conv and the group's
  residual;
* reconstruction: LayerNorm, 3×3 conv plus the shallow features, conv + LeakyReLU to 64 channels,
  pixel-shuffle upsampling, a 3×3 conv to RGB, plus the mean.

Any input size works: the image is reflect-padded at the bottom and right to a multiple of the window
(as the official test code does) and the output is cropped to ``upscale`` × the input size.

Variants follow the official ``XPixelGroup/HAT`` release (HAT-S, HAT, HAT-L for ×2/×3/×4); its
BasicSR checkpoints (``params_ema``/``params``, ``layers.{i}.residual_group.blocks.{j}...``) load
through :func:`checkpoint_filter_fn`.

Window attention: the non-shifted HAB windows can run through the shared
:func:`vzoo.layers.na2d` front (kernel = stride = window: non-overlapping windows with the Swin
relative position bias, flipped to na2d's key-minus-query convention); ``attn_backend='auto'`` does so
on CUDA. The shifted windows, OCAB and the CPU path use
:func:`torch.nn.functional.scaled_dot_product_attention` with the bias (and mask) as an additive float
mask — the reference math. The choice goes through the backend chooser every vzoo op uses
(``vzoo.layers._backend``, ``WINDOW_BACKENDS``): ``'na2d'`` where it cannot run (attention dropout in
training) raises, ``'auto'`` falls back to the reference.
"""
# no `from __future__ import annotations`: TorchScript reads the real annotations of the @torch.jit.ignore'd methods
import math
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing
from timm.layers import (
    DropPath, Mlp, calculate_drop_path_rates, register_notrace_function, register_notrace_module, trunc_normal_,
)
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from vzoo.layers import na2d
from vzoo.layers._backend import WINDOW_BACKENDS, choose_backend

from ._builder import build_vzoo_model, unwrap_state_dict

__all__ = ["HAT", "checkpoint_filter_fn", "pad_to_multiple", "shifted_window_mask", "shifted_window_group_masks"]

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
ATTN_BACKENDS = ("auto",) + WINDOW_BACKENDS.names  # ('auto', 'reference', 'na2d')
UPSCALES = (2, 3, 4, 8)


# ------------------------------------------------------------------------------------ helpers
def _reflect_pad_1d(x: torch.Tensor, dim: int, pad: int) -> torch.Tensor:
    """Pad ``pad`` entries after the end of ``dim`` by reflection; repeated reflection when the
    tensor is shorter than the pad, and edge replication for a size-1 dimension."""
    while pad > 0:
        n = x.shape[dim]
        step = min(pad, n - 1)
        if step <= 0:  # a single row/column: nothing to reflect, repeat it
            size = list(x.shape)
            size[dim] = pad
            return torch.cat([x, x.narrow(dim, n - 1, 1).expand(size)], dim)
        idx = torch.arange(n - 2, n - 2 - step, -1, device=x.device)
        x = torch.cat([x, x.index_select(dim, idx)], dim)
        pad -= step
    return x


@register_notrace_function  # the padding follows the input size: an fx leaf
def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad an NCHW tensor at the bottom and right so H and W are multiples of ``multiple``
    (``F.pad(..., 'reflect')`` as the official HAT test does; inputs smaller than the pad are
    reflected repeatedly)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    if ph < h and pw < w:
        return F.pad(x, (0, pw, 0, ph), mode="reflect")
    return _reflect_pad_1d(_reflect_pad_1d(x, x.ndim - 2, ph), x.ndim - 1, pw)


def window_relative_position_index(window: int) -> torch.Tensor:
    """(w², w²) index into a Swin relative-position table of (2w-1)² rows: entry [q, k] is
    (dy + w - 1)·(2w - 1) + (dx + w - 1) with (dy, dx) = position(q) - position(k)."""
    r = torch.arange(window)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    y, x = yy.flatten(), xx.flatten()
    dy = y[:, None] - y[None, :] + window - 1
    dx = x[:, None] - x[None, :] + window - 1
    return dy * (2 * window - 1) + dx


def overlap_relative_position_index(window: int, overlap_window: int) -> torch.Tensor:
    """(w², ow²) index into OCAB's table of (w + ow - 1)² rows, as the official release defines it:
    with (dy, dx) = position(key in the overlapping window) - position(query in the window), the
    index is ((dy + w - ow + 1)·L + dx + w - ow + 1) taken modulo L² (L = w + ow - 1). The shift
    makes some entries negative, which the official code's tensor indexing wraps around; the modulo
    reproduces that, so released tables load unchanged."""
    L = window + overlap_window - 1
    rq = torch.arange(window)
    rk = torch.arange(overlap_window)
    qy, qx = (t.flatten() for t in torch.meshgrid(rq, rq, indexing="ij"))
    ky, kx = (t.flatten() for t in torch.meshgrid(rk, rk, indexing="ij"))
    off = window - overlap_window + 1
    dy = ky[None, :] - qy[:, None] + off
    dx = kx[None, :] - qx[:, None] + off
    return torch.remainder(dy * L + dx, L * L)


def shifted_window_mask(height: int, width: int, window: int, shift: int,
                        device=None, dtype=torch.float32) -> torch.Tensor:
    """(nW, w², w²) additive mask for attention in windows of a map rolled by ``-shift``: 0 between
    tokens from the same region of the unrolled map, -100 between different regions (Swin / HAT)."""
    def regions(n: int) -> torch.Tensor:
        i = torch.arange(n, device=device)
        return (i >= n - window).long() + (i >= n - shift).long()

    label = regions(height)[:, None] * 3 + regions(width)[None, :]
    win = label.view(height // window, window, width // window, window).permute(0, 2, 1, 3)
    win = win.reshape(-1, window * window)
    different = win[:, None, :] != win[:, :, None]
    return torch.zeros(different.shape, device=device, dtype=dtype).masked_fill(different, -100.0)


def shifted_window_group_masks(window: int, shift: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(2, 2, w², w²): the masks of :func:`shifted_window_mask` by window category. Only the last row
    and the last column of windows straddle the wrap-around of the rolled map, and every window of a
    category has the same mask: ``[r, c]`` is the mask of a window in the last row (r = 1) or not
    (r = 0), and in the last column (c = 1) or not; ``[0, 0]`` is all zeros."""
    pos = torch.arange(window, device=device)
    split = (pos >= window - shift).long()  # region of each row/column inside a boundary window
    zero = torch.zeros_like(split)
    out = torch.zeros(2, 2, window * window, window * window, device=device, dtype=dtype)
    for r, rows in enumerate((zero, split)):
        for c, cols in enumerate((zero, split)):
            label = (rows[:, None] * 3 + cols[None, :]).flatten()
            out[r, c].masked_fill_(label[:, None] != label[None, :], -100.0)
    return out


def _windows(t: torch.Tensor, window: int, heads: int) -> torch.Tensor:
    """(B, H, W, heads·d) → (B·nW, heads, w², d), windows in row-major order."""
    B, H, W, C = t.shape
    d = C // heads
    t = t.view(B, H // window, window, W // window, window, heads, d)
    return t.permute(0, 1, 3, 5, 2, 4, 6).reshape(-1, heads, window * window, d)


def _unwindows(t: torch.Tensor, window: int, B: int, H: int, W: int) -> torch.Tensor:
    """(B·nW, heads, w², d) → (B, H, W, heads·d)."""
    heads, d = t.shape[1], t.shape[-1]
    t = t.view(B, H // window, W // window, heads, window, window, d)
    return t.permute(0, 1, 4, 2, 5, 3, 6).reshape(B, H, W, heads * d)


# ------------------------------------------------------------------------------------ blocks
class ChannelAttention(nn.Module):
    """Squeeze-and-excitation gate (RCAN): global average → 1×1 conv → ReLU → 1×1 conv → sigmoid."""

    def __init__(self, dim: int, squeeze_factor: int, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.fc1 = nn.Conv2d(dim, dim // squeeze_factor, 1, **dd)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(dim // squeeze_factor, dim, 1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))


class CAB(nn.Module):
    """Channel attention block: 3×3 conv (÷ compress_ratio) → GELU → 3×3 conv → channel attention."""

    def __init__(self, dim: int, compress_ratio: int, squeeze_factor: int, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.conv1 = nn.Conv2d(dim, dim // compress_ratio, 3, 1, 1, **dd)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(dim // compress_ratio, dim, 3, 1, 1, **dd)
        self.ca = ChannelAttention(dim, squeeze_factor, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ca(self.conv2(self.act(self.conv1(x))))


@register_notrace_module  # the shifted windows' grouping follows the map size: an fx leaf
class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping windows with a Swin relative position bias.

    Input and output are channels-last maps (B, H, W, C) with H, W multiples of the window (the
    caller rolls the map for shifted windows and passes the matching mask).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.num_heads = num_heads
        self.window_size = window_size
        self.attn_drop = attn_drop
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads, **dd))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        self.backend = "auto"  # set by the model: 'auto', 'reference' or 'na2d'

    def bias(self, rpi: torch.Tensor) -> torch.Tensor:
        n = self.window_size * self.window_size  # an int in TorchScript too (its ** gives a float)
        return self.relative_position_bias_table[rpi.reshape(-1)].view(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, rpi: torch.Tensor, group_masks: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x`` (B, H, W, C); ``group_masks`` (2, 2, w², w²) from :func:`shifted_window_group_masks`
        for a rolled map (shifted windows), None for plain windows."""
        B, H, W, C = x.shape
        w, heads = self.window_size, self.num_heads
        drop = self.attn_drop if self.training else 0.0
        qkv = self.qkv(x)
        if not torch.jit.is_scripting():  # TorchScript takes the reference path (na2d's front is Python)
            if group_masks is None and self._window_backend(x, drop) == "na2d":
                return self.proj_drop(self.proj(self._na2d(qkv)))
        n, d, nh, nw = w * w, C // heads, H // w, W // w
        q_, k_, v_ = qkv.chunk(3, dim=-1)  # plain statements, no generators: TorchScript compiles this forward
        q, k, v = _windows(q_, w, heads), _windows(k_, w, heads), _windows(v_, w, heads)  # (B·nW, heads, n, d)
        # a 4-D float mask: SDPA's fused CPU kernel takes it; a 3-D one falls back to the slower math path
        bias = self.bias(rpi).to(q.dtype).unsqueeze(0)  # (1, heads, n, n)
        if group_masks is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=drop)
        else:
            # windows grouped by whether they sit in the last row / column: one (n, n) mask a group
            q, k, v = q.view(B, nh, nw, heads, n, d), k.view(B, nh, nw, heads, n, d), v.view(B, nh, nw, heads, n, d)
            out = torch.empty_like(q)
            group_masks = group_masks.to(q.dtype)
            for r, r0, r1 in ((0, 0, nh - 1), (1, nh - 1, nh)):
                for c, c0, c1 in ((0, 0, nw - 1), (1, nw - 1, nw)):
                    if r1 > r0 and c1 > c0:  # no `continue`: TorchScript unrolls loops over tuples
                        qq = q[:, r0:r1, c0:c1].reshape(-1, heads, n, d)
                        kk = k[:, r0:r1, c0:c1].reshape(-1, heads, n, d)
                        vv = v[:, r0:r1, c0:c1].reshape(-1, heads, n, d)
                        m = bias if r == 0 and c == 0 else bias + group_masks[r, c]
                        o = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=m, dropout_p=drop)
                        out[:, r0:r1, c0:c1] = o.view(B, r1 - r0, c1 - c0, heads, n, d)
            out = out.view(-1, heads, n, d)
        return self.proj_drop(self.proj(_unwindows(out, w, B, H, W)))

    def _window_backend(self, x: torch.Tensor, attn_dropout: float) -> str:
        """'na2d' or 'reference' for the non-shifted windows (shifted ones always take the reference)."""
        return choose_backend("HAT", self.backend, WINDOW_BACKENDS, device=x.device, attn_dropout=attn_dropout)

    def _na2d(self, qkv: torch.Tensor) -> torch.Tensor:
        B, H, W, C3 = qkv.shape
        heads, w = self.num_heads, self.window_size
        q, k, v = qkv.view(B, H, W, 3, heads, C3 // (3 * heads)).unbind(3)
        # the Swin table is indexed by query - key; na2d's rpb by key - query: the same table flipped
        rpb = self.relative_position_bias_table.t().reshape(heads, 2 * w - 1, 2 * w - 1).flip(-1, -2)
        out = na2d(q, k, v, kernel_size=w, stride=w, rpb=rpb)
        return out.reshape(B, H, W, C3 // 3)


class HAB(nn.Module):
    """Hybrid attention block: x + attention(LN(x)) + conv_scale·CAB(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, compress_ratio: int,
                 squeeze_factor: int, conv_scale: float, mlp_ratio: float, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.window_size = window_size
        self.shift_size = shift_size
        self.conv_scale = conv_scale
        self.norm1 = nn.LayerNorm(dim, **dd)
        self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                    proj_drop=drop, **dd)
        self.cab = CAB(dim, compress_ratio, squeeze_factor, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop, **dd)

    def forward(self, x: torch.Tensor, rpi: torch.Tensor, group_masks: Optional[torch.Tensor]) -> torch.Tensor:
        y = self.norm1(x)
        conv = self.cab(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        s = self.shift_size
        if s > 0:
            a = self.attn(torch.roll(y, shifts=(-s, -s), dims=(1, 2)), rpi, group_masks)
            a = torch.roll(a, shifts=(s, s), dims=(1, 2))
        else:
            a = self.attn(y, rpi, None)
        x = x + self.drop_path(a) + conv * self.conv_scale
        return x + self.drop_path(self.mlp(self.norm2(x)))


class OCAB(nn.Module):
    """Overlapping cross-attention block: queries from w×w windows, keys/values from the
    overlapping ow×ow windows around them (ow = w + ⌊w·overlap_ratio⌋, zero-padded at the border),
    with a relative position bias; then a residual MLP."""

    def __init__(self, dim: int, num_heads: int, window_size: int, overlap_ratio: float,
                 mlp_ratio: float, qkv_bias: bool = True, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.num_heads = num_heads
        self.window_size = window_size
        self.overlap_win_size = int(window_size * overlap_ratio) + window_size
        self.norm1 = nn.LayerNorm(dim, **dd)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)
        L = window_size + self.overlap_win_size - 1
        self.relative_position_bias_table = nn.Parameter(torch.zeros(L * L, num_heads, **dd))
        self.proj = nn.Linear(dim, dim, **dd)
        self.norm2 = nn.LayerNorm(dim, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, **dd)

    def forward(self, x: torch.Tensor, rpi: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        w, ow, heads = self.window_size, self.overlap_win_size, self.num_heads
        d = C // heads
        q, kv = self.qkv(self.norm1(x)).split((C, 2 * C), dim=-1)
        q = _windows(q, w, heads)  # (B·nW, heads, w², d)
        p = (ow - w) // 2
        kv = F.pad(kv, (0, 0, p, p, p, p))  # zeros around the map, as nn.Unfold's padding
        kv = kv.unfold(1, ow, w).unfold(2, ow, w)  # (B, nh, nw, 2C, ow, ow)
        kv = kv.permute(0, 1, 2, 4, 5, 3).reshape(-1, ow * ow, 2, heads, d).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[rpi.reshape(-1)].view(w * w, ow * ow, heads).permute(2, 0, 1)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=bias.to(q.dtype).unsqueeze(0))
        x = self.proj(_unwindows(out, w, B, H, W)) + x
        return x + self.mlp(self.norm2(x))


class GroupFeature(nn.Module):
    """A group's feature map: its channels-last output (padded size) as NCHW, cropped to the input ``size``.

    A module of the group, so that torch.fx names its nodes ``groups.{i}.feature``: the last nodes of
    ``groups.{i}``, which ``feature_cls='fx'`` takes as that feature point."""

    def forward(self, t: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        return t[:, :size[0], :size[1]].permute(0, 3, 1, 2).contiguous()


class RHAG(nn.Module):
    """Residual hybrid attention group: HABs (alternately shifted), an OCAB, a 3×3 conv, + input."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, compress_ratio: int,
                 squeeze_factor: int, conv_scale: float, overlap_ratio: float, mlp_ratio: float,
                 qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: Sequence[float] = (), resi_connection: str = "1conv", device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.grad_checkpointing = False
        self.blocks = nn.ModuleList([
            HAB(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, compress_ratio, squeeze_factor,
                conv_scale, mlp_ratio, qkv_bias=qkv_bias, drop=drop, attn_drop=attn_drop,
                drop_path=drop_path[i] if drop_path else 0.0, **dd)
            for i in range(depth)])
        self.ocab = OCAB(dim, num_heads, window_size, overlap_ratio, mlp_ratio, qkv_bias=qkv_bias, **dd)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1, **dd) if resi_connection == "1conv" else nn.Identity()
        self.feature = GroupFeature()

    def forward(self, x: torch.Tensor, rpi_sa: torch.Tensor, rpi_oca: torch.Tensor,
                group_masks: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():  # inline: TS prunes it
            for blk in self.blocks:
                m = group_masks if blk.shift_size > 0 else None
                x = torch.utils.checkpoint.checkpoint(blk, x, rpi_sa, m, use_reentrant=False)
            x = torch.utils.checkpoint.checkpoint(self.ocab, x, rpi_oca, use_reentrant=False)
        else:
            for blk in self.blocks:
                x = blk(x, rpi_sa, group_masks if blk.shift_size > 0 else None)
            x = self.ocab(x, rpi_oca)
        return self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1) + shortcut


class Upsample(nn.Sequential):
    """Pixel-shuffle upsampling: (3×3 conv to 4·C, PixelShuffle(2)) per factor 2, or one ×3 step."""

    def __init__(self, scale: int, num_feat: int, device=None, dtype=None):
        dd = dict(device=device, dtype=dtype)
        layers: List[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1, **dd), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1, **dd), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"HAT: upscale must be one of {UPSCALES}, got {scale!r}")
        super().__init__(*layers)


# ------------------------------------------------------------------------------------ model
class HAT(nn.Module):
    """Hybrid Attention Transformer (image super-resolution).

    Args:
        in_chans: image channels (the DIV2K mean is subtracted for 3 channels, nothing otherwise).
        upscale: output scale, one of 2, 3, 4, 8.
        embed_dim: channels of the deep features.
        depths, num_heads: HABs and attention heads per RHAG (same length).
        window_size: attention window (official: 16); inputs are padded to a multiple of it.
        compress_ratio, squeeze_factor: CAB's channel reduction and its channel-attention squeeze.
        conv_scale: weight of the CAB branch (official 0.01).
        overlap_ratio: OCAB's key/value windows are ``window·(1 + overlap_ratio)`` wide.
        mlp_ratio: MLP expansion (official 2).
        img_range: the image is multiplied by this after the mean is subtracted (official 1).
        num_feat: channels of the upsampler (official 64).
        upsampler: only ``'pixelshuffle'`` (classical SR, as all released models).
        resi_connection: ``'1conv'`` (released) or ``'identity'`` after each group.
        attn_backend: window attention of the non-shifted HABs: ``'auto'`` (the shared
            :func:`vzoo.layers.na2d` op on CUDA tensors, where it runs as a fused Triton kernel; the
            reference on the CPU, where na2d is not faster), ``'reference'`` (SDPA with the bias as a
            float mask) or ``'na2d'`` (raises ``ValueError`` where na2d cannot run: attention dropout in
            training). Shifted windows (masked) and OCAB always use the reference.
        drop_path_rate: stochastic depth, linearly increasing over all HABs (official default 0.1).
        num_classes: must be 0 (no classifier; accepted so timm's defaults pass through).
        device, dtype: where and in which dtype the weights are created (timm's factory arguments).
    """

    vzoo_task = "image-to-image"

    def __init__(
            self,
            in_chans: int = 3,
            upscale: int = 4,
            embed_dim: int = 180,
            depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
            num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
            window_size: int = 16,
            compress_ratio: int = 3,
            squeeze_factor: int = 30,
            conv_scale: float = 0.01,
            overlap_ratio: float = 0.5,
            mlp_ratio: float = 2.0,
            qkv_bias: bool = True,
            img_range: float = 1.0,
            rgb_mean: Sequence[float] = DIV2K_RGB_MEAN,
            num_feat: int = 64,
            upsampler: str = "pixelshuffle",
            resi_connection: str = "1conv",
            attn_backend: str = "auto",
            drop_rate: float = 0.0,
            attn_drop_rate: float = 0.0,
            drop_path_rate: float = 0.1,
            num_classes: int = 0,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self._check_args(in_chans, upscale, embed_dim, depths, num_heads, window_size, compress_ratio,
                         squeeze_factor, overlap_ratio, mlp_ratio, img_range, upsampler, resi_connection,
                         attn_backend, num_classes)
        self.in_chans = in_chans
        self.upscale = upscale
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.img_range = img_range
        self.num_classes = 0
        self.embed_dim = self.num_features = self.head_hidden_size = embed_dim
        self.attn_backend = attn_backend
        self.grad_checkpointing = False
        mean = torch.tensor(tuple(rgb_mean), dtype=torch.float32) if in_chans == 3 else torch.zeros(in_chans)
        self.register_buffer("mean", mean.view(1, -1, 1, 1).to(**dd), persistent=False)
        overlap_win = int(window_size * overlap_ratio) + window_size
        self.register_buffer("rpi_sa", window_relative_position_index(window_size).to(device), persistent=False)
        self.register_buffer("rpi_oca", overlap_relative_position_index(window_size, overlap_win).to(device),
                             persistent=False)
        self.register_buffer("shift_masks", shifted_window_group_masks(window_size, self.shift_size).to(**dd),
                             persistent=False)

        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1, **dd)
        self.embed_norm = nn.LayerNorm(embed_dim, **dd)
        self.pos_drop = nn.Dropout(drop_rate)
        # per group: linear from 0 to drop_path_rate over all HABs (stagewise=True splits it by group)
        dpr = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        self.groups = nn.ModuleList()
        self.feature_info = []
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            self.groups.append(RHAG(embed_dim, depth, heads, window_size, compress_ratio, squeeze_factor, conv_scale,
                                    overlap_ratio, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate,
                                    dpr[i], resi_connection, **dd))
            self.feature_info.append(dict(num_chs=embed_dim, reduction=1, module=f"groups.{i}"))
        self.norm = nn.LayerNorm(embed_dim, **dd)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1, **dd) if resi_connection == "1conv" \
            else nn.Identity()
        self.conv_before_upsample = nn.Conv2d(embed_dim, num_feat, 3, 1, 1, **dd)
        self.act = nn.LeakyReLU(inplace=True)
        self.upsample = Upsample(upscale, num_feat, **dd)
        self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1, **dd)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("relative_position_bias_table"):
                trunc_normal_(p, std=0.02)
        self._set_backend()

    @staticmethod
    def _check_args(in_chans, upscale, embed_dim, depths, num_heads, window_size, compress_ratio, squeeze_factor,
                    overlap_ratio, mlp_ratio, img_range, upsampler, resi_connection, attn_backend, num_classes):
        def bad(arg, value, allowed):
            raise ValueError(f"HAT: {arg} must be {allowed}, got {value!r}")

        if not isinstance(in_chans, int) or in_chans < 1:
            bad("in_chans", in_chans, "a positive int")
        if upscale not in UPSCALES:
            bad("upscale", upscale, f"one of {UPSCALES}")
        if len(depths) == 0 or len(depths) != len(num_heads):
            raise ValueError(f"HAT: depths and num_heads need the same, non-zero number of entries (one per "
                             f"group), got depths={tuple(depths)!r}, num_heads={tuple(num_heads)!r}")
        if any(int(d) < 1 for d in depths):
            bad("depths", tuple(depths), "positive ints")
        for h in num_heads:
            if h < 1 or embed_dim % h:
                bad("num_heads", tuple(num_heads), f"positive divisors of embed_dim={embed_dim}")
        if not isinstance(window_size, int) or window_size < 2 or window_size % 2:
            bad("window_size", window_size, "an even int >= 2")
        for arg, v in (("compress_ratio", compress_ratio), ("squeeze_factor", squeeze_factor)):
            if not isinstance(v, int) or v < 1 or embed_dim // v < 1:
                bad(arg, v, f"an int in [1, embed_dim={embed_dim}]")
        ow = int(window_size * overlap_ratio) + window_size
        if overlap_ratio < 0 or (ow - window_size) % 2:
            bad("overlap_ratio", overlap_ratio, f">= 0 with window_size*overlap_ratio an even whole number "
                                                f"(window_size={window_size})")
        if mlp_ratio <= 0:
            bad("mlp_ratio", mlp_ratio, "> 0")
        if img_range <= 0:
            bad("img_range", img_range, "> 0 (1. or 255.)")
        if upsampler != "pixelshuffle":
            bad("upsampler", upsampler, "'pixelshuffle' (the upsampler of every released HAT model)")
        if resi_connection not in ("1conv", "identity"):
            bad("resi_connection", resi_connection, "'1conv' or 'identity'")
        if attn_backend not in ATTN_BACKENDS:
            bad("attn_backend", attn_backend, f"one of {ATTN_BACKENDS}")
        if num_classes != 0:
            bad("num_classes", num_classes, "0 (HAT is image-to-image: it has no classifier)")

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # ---------------------------------------------------------------- attention backend
    def _set_backend(self) -> None:
        for m in self.modules():
            if isinstance(m, WindowAttention):
                m.backend = self.attn_backend

    def set_attn_backend(self, backend: str) -> None:
        """Switch the window-attention path (``'auto'``, ``'reference'`` or ``'na2d'``)."""
        if backend not in ATTN_BACKENDS:
            raise ValueError(f"HAT.set_attn_backend: backend must be one of {ATTN_BACKENDS}, got {backend!r}")
        self.attn_backend = backend
        self._set_backend()

    # ---------------------------------------------------------------- timm API
    @torch.jit.ignore
    def no_weight_decay(self):
        return {n for n, _ in self.named_parameters() if n.endswith("relative_position_bias_table")}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        return dict(
            stem=r"^conv_first|^embed_norm",
            blocks=r"^groups\.(\d+)" if coarse else [
                (r"^groups\.(\d+)\.blocks\.(\d+)", None),
                (r"^groups\.(\d+)\.ocab", (99998,)),
                (r"^groups\.(\d+)\.conv", (99999,)),
                (r"^norm|^conv_after_body|^conv_before_upsample|^upsample|^conv_last", (99999,)),
            ])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = enable
        for g in self.groups:
            g.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return nn.Identity()

    def reset_classifier(self, num_classes: int = 0, *args, **kwargs):
        if num_classes != 0:
            raise ValueError(f"HAT.reset_classifier: num_classes must be 0 (image-to-image model, no "
                             f"classifier), got {num_classes!r}")

    # ---------------------------------------------------------------- forward
    def _check_input(self, x: torch.Tensor) -> None:
        if not torch.jit.is_scripting():
            if not is_fx_symbolic_tracing():  # an eager check: TorchScript and fx see only the compute
                if x.ndim != 4 or x.shape[1] != self.in_chans:
                    raise ValueError(f"HAT: input must be NCHW with C=in_chans={self.in_chans}, "
                                     f"got shape {tuple(x.shape)}")

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised, padded image → shallow features (B, C, Hp, Wp)."""
        x = (x - self.mean.to(x.dtype)) * self.img_range
        return self.conv_first(pad_to_multiple(x, self.window_size))

    def _body(self, shallow: torch.Tensor, size: Tuple[int, int], take: List[int], stop: int,
              norm: bool = False) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Run the RHAGs 0..``stop`` on channels-last tokens; returns the last tokens and the feature
        maps (:class:`GroupFeature`: NCHW, cropped to the input ``size``) of the groups in ``take``."""
        t = self.pos_drop(self.embed_norm(shallow.permute(0, 2, 3, 1)))
        feats: List[torch.Tensor] = []
        last = len(self.groups) - 1
        for i, g in enumerate(self.groups):
            if i <= stop:  # not a slice of self.groups: TorchScript slices a ModuleList by constants only
                t = g(t, self.rpi_sa, self.rpi_oca, self.shift_masks)
                if i in take:
                    feats.append(g.feature(self.norm(t) if norm and i == last else t, size))
        return t, feats

    def _tail(self, t: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        return self.conv_after_body(self.norm(t).permute(0, 3, 1, 2)) + shallow

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, C, H, W) → deep features (B, embed_dim, Hp, Wp) at the padded size (H, W rounded
        up to the window), i.e. what the reconstruction takes: conv_after_body(body) + shallow."""
        self._check_input(x)
        shallow = self._stem(x)
        take: List[int] = []
        if not torch.jit.is_scripting():
            if is_fx_symbolic_tracing():
                # traced, unused: each group's feature map becomes the last nodes of ``groups.{i}``, so fx's
                # feature points (feature_cls='fx') give forward_intermediates' maps; fx drops them as dead
                # code from the forward graph and eager never computes them
                take = list(range(len(self.groups)))
        t, _ = self._body(shallow, (x.shape[-2], x.shape[-1]), take, stop=len(self.groups) - 1)
        return self._tail(t, shallow)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False,
                     out_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """Deep features → image ``upscale`` times larger, cropped to ``out_size`` (the LR size) if given.
        ``pre_logits=True`` returns the features unchanged (there is no classifier)."""
        if pre_logits:
            return x
        x = self.conv_last(self.upsample(self.act(self.conv_before_upsample(x))))
        if out_size is not None:
            x = x[..., :out_size[0] * self.upscale, :out_size[1] * self.upscale]
        return x / self.img_range + self.mean.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x), out_size=(x.shape[-2], x.shape[-1]))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Outputs of the RHAGs (NCHW, ``embed_dim`` channels, cropped to the input size: reduction 1).
        ``norm=True`` applies the final LayerNorm to the last group's output. Unless
        ``intermediates_only``, also returns :meth:`forward_features`' output (padded size)."""
        if output_fmt != "NCHW":
            raise ValueError(f"HAT.forward_intermediates: output_fmt must be 'NCHW', got {output_fmt!r}")
        self._check_input(x)
        take_indices, max_index = feature_take_indices(len(self.groups), indices)
        shallow = self._stem(x)
        t, feats = self._body(shallow, (x.shape[-2], x.shape[-1]), take_indices,
                              stop=max_index if stop_early else len(self.groups) - 1, norm=norm)
        if intermediates_only:
            return feats
        return self._tail(t, shallow), feats

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True):
        take_indices, max_index = feature_take_indices(len(self.groups), indices)
        self.groups = self.groups[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.conv_after_body = nn.Identity()
            self.conv_before_upsample = nn.Identity()
            self.upsample = nn.Identity()
            self.conv_last = nn.Identity()
        return take_indices


# ------------------------------------------------------------------------------------ checkpoints
_OFFICIAL_BUFFERS = re.compile(r"(^|\.)(relative_position_index(_SA|_OCA)?|attn_mask)$")
_BLOCK_RENAMES = (
    ("conv_block.cab.0.", "cab.conv1."),
    ("conv_block.cab.2.", "cab.conv2."),
    ("conv_block.cab.3.attention.1.", "cab.ca.fc1."),
    ("conv_block.cab.3.attention.3.", "cab.ca.fc2."),
)


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: Optional[nn.Module] = None
                         ) -> Dict[str, torch.Tensor]:
    """Map an official HAT release (BasicSR: weights under ``params_ema`` or ``params``) onto :class:`HAT`.

    ``layers.{i}.residual_group.blocks.{j}.*`` → ``groups.{i}.blocks.{j}.*`` (CAB's
    ``conv_block.cab.{0,2}`` → ``cab.conv{1,2}``, ``conv_block.cab.3.attention.{1,3}`` →
    ``cab.ca.fc{1,2}``), ``layers.{i}.residual_group.overlap_attn.*`` → ``groups.{i}.ocab.*``,
    ``layers.{i}.conv.*`` → ``groups.{i}.conv.*``, ``patch_embed.norm.*`` → ``embed_norm.*``,
    ``conv_before_upsample.0.*`` → ``conv_before_upsample.*``; the relative-position-index and
    attention-mask buffers, which vzoo computes, are dropped. vzoo-format dicts pass through.
    """
    if not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        state_dict = unwrap_state_dict(state_dict)
    out = {}
    for k, v in state_dict.items():
        if _OFFICIAL_BUFFERS.search(k):
            continue
        m = re.match(r"^layers\.(\d+)\.(.*)$", k)
        if m:
            i, rest = m.group(1), m.group(2)
            if rest.startswith("residual_group.blocks."):
                j, tail = rest[len("residual_group.blocks."):].split(".", 1)
                for old, new in _BLOCK_RENAMES:
                    if tail.startswith(old):
                        tail = new + tail[len(old):]
                        break
                k = f"groups.{i}.blocks.{j}.{tail}"
            elif rest.startswith("residual_group.overlap_attn."):
                k = f"groups.{i}.ocab.{rest[len('residual_group.overlap_attn.'):]}"
            else:
                k = f"groups.{i}.{rest}"
        elif k.startswith("patch_embed.norm."):
            k = "embed_norm." + k[len("patch_embed.norm."):]
        elif k.startswith("conv_before_upsample.0."):
            k = "conv_before_upsample." + k[len("conv_before_upsample.0."):]
        out[k] = v
    return out


def _create_hat(variant: str, pretrained: bool = False, **kwargs) -> HAT:
    out_indices = kwargs.pop("out_indices", None)
    n_groups = len(kwargs.get("depths", (6,) * 6))
    if out_indices is None:
        out_indices = tuple(range(n_groups))
    return build_vzoo_model(HAT, variant, pretrained, checkpoint_filter_fn=checkpoint_filter_fn,
                            default_feature_cfg=dict(out_indices=out_indices), **kwargs)


def _cfg(scale: int, file: str = "", params_m: Optional[float] = None, results: str = "", **kwargs):
    notes = [f"official x{scale} super-resolution; input RGB in [0, 1], output RGB in [0, 1] {scale}x larger"]
    if file:
        notes.append(f"official file {file} (BasicSR, weights under 'params_ema')")
    if params_m is not None:
        notes.append(f"official params {params_m} M (HAT README, x4)")
    if results:
        notes.append(results)
    return {
        "num_classes": 0, "input_size": (3, 64, 64), "min_input_size": (3, 16, 16), "fixed_input_size": False,
        "crop_pct": 1.0, "interpolation": "bicubic", "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0),
        "first_conv": "conv_first", "classifier": None,
        "license": "apache-2.0", "origin_url": "https://github.com/XPixelGroup/HAT",
        "paper_ids": "arXiv:2205.04437", "paper_name": "Activating More Pixels in Image Super-Resolution Transformer",
        "notes": tuple(notes), **kwargs,
    }


_X4_HAT_S = "PSNR (Y) x4: Set5 32.92, Set14 29.15, BSD100 27.97, Urban100 27.87, Manga109 32.35 (HAT README)"
_X4_HAT = "PSNR (Y) x4: Set5 33.04, Set14 29.23, BSD100 28.00, Urban100 27.97, Manga109 32.48 (HAT README)"

default_cfgs = generate_default_cfgs({
    "hat_s_x2.df2k": _cfg(2, "HAT-S_SRx2.pth"),
    "hat_s_x3.df2k": _cfg(3, "HAT-S_SRx3.pth"),
    "hat_s_x4.df2k": _cfg(4, "HAT-S_SRx4.pth", params_m=9.6, results=_X4_HAT_S),
    "hat_x2.df2k": _cfg(2, "HAT_SRx2.pth"),
    "hat_x2.in1k_ft_df2k": _cfg(2, "HAT_SRx2_ImageNet-pretrain.pth"),
    "hat_x3.df2k": _cfg(3, "HAT_SRx3.pth"),
    "hat_x3.in1k_ft_df2k": _cfg(3, "HAT_SRx3_ImageNet-pretrain.pth"),
    "hat_x4.df2k": _cfg(4, "HAT_SRx4.pth", params_m=20.8, results=_X4_HAT),
    "hat_x4.in1k_ft_df2k": _cfg(4, "HAT_SRx4_ImageNet-pretrain.pth"),
    "hat_l_x2.in1k_ft_df2k": _cfg(2, "HAT-L_SRx2_ImageNet-pretrain.pth"),
    "hat_l_x3.in1k_ft_df2k": _cfg(3, "HAT-L_SRx3_ImageNet-pretrain.pth"),
    "hat_l_x4.in1k_ft_df2k": _cfg(4, "HAT-L_SRx4_ImageNet-pretrain.pth"),
})

# size → (embed_dim, number of groups, compress_ratio, squeeze_factor); 6 HABs and 6 heads per group
_SIZES = {
    "hat_s": (144, 6, 24, 24),
    "hat": (180, 6, 3, 30),
    "hat_l": (180, 12, 3, 30),
}


def _hat(size: str, scale: int, pretrained: bool, **kwargs) -> HAT:
    dim, groups, compress, squeeze = _SIZES[size]
    args = dict(upscale=scale, embed_dim=dim, depths=(6,) * groups, num_heads=(6,) * groups, window_size=16,
                compress_ratio=compress, squeeze_factor=squeeze, conv_scale=0.01, overlap_ratio=0.5, mlp_ratio=2.0,
                img_range=1.0, upsampler="pixelshuffle", resi_connection="1conv")
    return _create_hat(f"{size}_x{scale}", pretrained, **dict(args, **kwargs))


@register_model
def hat_s_x2(pretrained: bool = False, **kwargs) -> HAT:
    return _hat("hat_s", 2, pretrained, **kwargs)


@register_model
def hat_s_x3(pretrained: bool = False, **kwargs) -> HAT:
    return _hat("hat_s", 3, pretrained, **kwargs)


@register_model
def hat_s_x4(pretrained: bool = False, **kwargs) -> HAT:
    return _hat("hat_s", 4, pretrained, **kwargs)


@register_model
def hat_x2(pretrained: bool = False, **kwargs) -> HAT:
    return _hat("hat", 2, pretrained, **kwargs)


@register_model
def hat_x3(pretrained: bool = False, **kwargs) -> HAT:
    return _hat("hat", 3, pretrained, **kwargs)


@register_model
def hat_x4(pretrained: bool = False, **kwargs) -> HAT:
    return _hat("hat", 4, pretrained, **kwargs)


@register_model
def hat_l_x2(pretrained: bool = False, **kwargs) -> HAT:
    return _hat("hat_l", 2, pretrained, **kwargs)


@register_model
def hat_l_x3(pretrained: bool = False, **kwargs) -> HAT:
    return _hat("hat_l", 3, pretrained, **kwargs)


@register_model
def hat_l_x4(pretrained: bool = False, **kwargs) -> HAT:
    return _hat("hat_l", 4, pretrained, **kwargs)
