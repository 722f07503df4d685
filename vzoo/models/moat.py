"""MOAT: Alternating Mobile Convolution and Attention (Yang, Qiao, Yu, Yuan, Zhu, Yuille, Adam, Chen;
"MOAT: Alternating Mobile Convolution and Attention Brings Strong Vision Models", ICLR 2023,
arXiv:2210.01820).

Architecture, as in the official TensorFlow release (``google-research/deeplab2``,
``model/pixel_encoder/moat.py``, ``model/layers/moat_blocks.py``, ``model/layers/moat_attention.py``):

* **stem** (stride 2): 3×3 conv stride 2 (bias) → BatchNorm → GELU → 3×3 conv (bias); no norm after it.
* **MBConv block** (stages 1–2): ``shortcut(x) + shrink(SE(GELU(BN(dw3x3(GELU(BN(expand(BN(x)))))))))``:
  a pre-norm BatchNorm, 1×1 expansion ×4 (no bias), depthwise 3×3 (no bias, carries the block's
  stride), squeeze-excitation (``int(0.25 · out_channels)`` channels, SiLU, sigmoid gate) and a 1×1
  projection with bias. The shortcut is an average pool (kernel ``pool_size``, stride 2) where the
  block downsamples, then a 1×1 conv (bias) where the width changes.
* **MOAT block** (stages 3–4): the same MBConv *without* SE — so the stride and the expansion come
  before attention — followed by ``x + Attention(LayerNorm(x))``; attention replaces the
  Transformer's MLP. Multi-head self-attention with ``head_dim`` 32 (``heads = channels // 32``),
  separate q/k/v/o projections with biases (fused into one ``qkv`` here), scale ``head_dim ** -0.5``
  and a 2-D multi-head relative position bias.
* **head**: global average pool → LayerNorm → linear (a 1×1 conv in the release).

Norms and activations as released: BatchNorm ``eps=1e-3`` (Keras' default; momentum 0.99, i.e.
PyTorch ``momentum=0.01``), LayerNorm ``eps=1e-5``, exact (erf) GELU, SiLU inside SE. Convolutions and
pools use TensorFlow's ``'same'`` padding (stride-2 layers pad bottom/right on even sizes; average
pools do not count the padding), so converted TensorFlow weights see exactly the pixels they were
trained on. Stochastic depth follows the release's linear rule ``rate · i / n_blocks``, on both
residuals of a MOAT block.

**Attention modes.** Classification uses global attention over the whole feature map (the default,
``window_size=None``). Dense prediction at high resolution switches to non-overlapping window attention
*without* shifting (``window_size=(14, 7)``: 14×14 windows at stride 16, 7×7 at stride 32, the release's
default windows). Window attention runs through the shared op :func:`vzoo.layers.na2d` with
``kernel_size = stride = window`` (blocked attention; Triton on CUDA, the tiled PyTorch path
elsewhere); global attention is one ``scaled_dot_product_attention`` call with the bias as a float mask.
Any input size works: a window larger than the map is clipped to the map, and a map that is not a
multiple of the window is zero-padded (after the LayerNorm, Swin-style: padded tokens are keys, their
outputs are dropped). ``global_last_block=True`` keeps global attention in the last block of each MOAT
stage (the release's ``global_attention_at_end_of_moat_stage``).

**Relative position bias, as released.** Each attention layer owns one table of shape
``(heads, 2p-1, 2p-1)`` with ``p = 14`` at stride 16 and ``p = 7`` at stride 32, whatever the window or
input size (parameter ``relative_position_bias_table``). For a window (or, with global attention, a
map) of ``h × w`` tokens the table is resized bilinearly (half-pixel centres, no antialiasing: TF2's
``tf.image.resize``) to ``(2h-1, 2w-1)`` and the score of query ``i`` and key ``j`` gets
``table[j_y - i_y + h - 1, j_x - i_x + w - 1]`` — the release's one-hot lookup tensors, which is exactly
NATTEN's ``rpb`` convention, so the resized table goes to ``na2d`` unchanged (no flip). Differences from
the release: the resize happens on every forward pass for the current size (the release bakes it in at
build time for one input shape, and needs maps divisible by the window); windows are clipped/padded as
above (the release has neither). ``rel_pos=False`` builds the release's "no positional embedding" models.

**Dense features.** ``forward_intermediates`` / ``features_only`` return the release's ``res2``–``res5``
endpoints, i.e. GELU of each stage's output (``feature_act=False`` returns the raw stage outputs);
``feature_cls='fx'`` gives the same maps (the GELU is each stage's ``feature_act``, see :class:`MoatStage`).
The classification path is unaffected.

**Checkpoints.** The release's ImageNet checkpoints are TensorFlow (``.tar.gz`` of a TF1 checkpoint):
:func:`convert_tf_checkpoint` reads one with TensorFlow (the ``tf`` extra, ``pip install .[tf]``) and
:func:`tf_to_vzoo_state_dict` maps its variables (``moat/block_02_00/attention/q/weight`` ...) onto
vzoo's keys; ``tools/convert.py moat --src DIR --dst OUT.safetensors --variant moat_0`` runs both. The
TensorFlow round trip is checked by ``tools/parity.py moat`` (deeplab2's own TF model with random weights,
saved in the release's TF1 layout, converted and compared: max relative error ~1e-6 fp32, see
``docs/benchmarks.md``); the released files themselves were not downloaded here.
"""
# no `from __future__ import annotations`: TorchScript reads the real annotations of the @torch.jit.ignore'd methods
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD
from timm.layers import DropPath, create_conv2d, register_notrace_function, register_notrace_module, trunc_normal_
from timm.models import generate_default_cfgs, register_model
from timm.models._manipulate import checkpoint_seq

from vzoo.layers.neighborhood_attention import na2d
from ._builder import build_vzoo_model, official_notes, vzoo_cfg
from ._pyramid import PyramidNet

__all__ = ["MOAT", "MoatAttention", "checkpoint_filter_fn", "tf_to_vzoo_state_dict", "convert_tf_checkpoint",
           "avg_pool_same"]

WindowArg = Union[None, int, Sequence[Union[None, int, Sequence[int]]]]


# --------------------------------------------------------------------------------------------------
# TensorFlow 'same' average pooling
# --------------------------------------------------------------------------------------------------
def _same_pad(size: int, k: int, s: int) -> Tuple[int, int]:
    total = max((-(-size // s) - 1) * s + k - size, 0)
    return total // 2, total - total // 2


@register_notrace_function  # its padding depends on the input size: an fx leaf, as timm's own 'same' ops
def avg_pool_same(x: torch.Tensor, kernel_size: int, stride: int) -> torch.Tensor:
    """``tf.keras.layers.AveragePooling2D(kernel_size, stride, padding='same')`` on NCHW: output
    ``ceil(size / stride)``, the padding (bottom/right first) is not counted in the average."""
    H, W = x.shape[-2], x.shape[-1]
    pt, pb = _same_pad(H, kernel_size, stride)
    pl, pr = _same_pad(W, kernel_size, stride)
    if pt == 0 and pb == 0 and pl == 0 and pr == 0:
        return F.avg_pool2d(x, kernel_size, stride)
    if pt == pb and pl == pr:
        return F.avg_pool2d(x, kernel_size, stride, padding=(pt, pl), count_include_pad=False)
    xp = F.pad(x, (pl, pr, pt, pb))
    ones = F.pad(torch.ones((1, 1, H, W), dtype=x.dtype, device=x.device), (pl, pr, pt, pb))
    total = F.avg_pool2d(xp, kernel_size, stride, divisor_override=1)
    count = F.avg_pool2d(ones, kernel_size, stride, divisor_override=1)
    return total / count


# --------------------------------------------------------------------------------------------------
# blocks
# --------------------------------------------------------------------------------------------------
class SqueezeExcite(nn.Module):
    """Global mean → 1×1 conv → SiLU → 1×1 conv → sigmoid, multiplied onto the input."""

    def __init__(self, chs: int, rd_chs: int, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.reduce = nn.Conv2d(chs, rd_chs, 1, **dd)
        self.act = nn.SiLU()
        self.expand = nn.Conv2d(rd_chs, chs, 1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.expand(self.act(self.reduce(s))).sigmoid()


class Shortcut(nn.Module):
    """Average pool ('same', padding not counted) where the block downsamples, 1×1 conv where the width changes."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, pool_size: int, device=None, dtype=None):
        super().__init__()
        self.stride, self.pool_size = stride, pool_size
        self.conv = nn.Conv2d(in_chs, out_chs, 1, device=device, dtype=dtype) if in_chs != out_chs else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = avg_pool_same(x, self.pool_size, self.stride)
        return self.conv(x) if self.conv is not None else x


class MBConvBlock(nn.Module):
    """Inverted residual with pre-norm (see the module docstring); ``se_ratio=None`` drops the SE."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, expansion: int = 4,
                 se_ratio: Optional[float] = 0.25, pool_size: int = 2, drop_path: float = 0.0, bn_eps: float = 1e-3,
                 device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        inner = out_chs * expansion
        bn = dict(eps=bn_eps, momentum=0.01, **dd)
        self.shortcut = Shortcut(in_chs, out_chs, stride, pool_size, **dd)
        self.pre_norm = nn.BatchNorm2d(in_chs, **bn)
        self.expand_conv = nn.Conv2d(in_chs, inner, 1, bias=False, **dd)
        self.expand_norm = nn.BatchNorm2d(inner, **bn)
        self.act = nn.GELU()
        self.dw_conv = create_conv2d(inner, inner, 3, stride=stride, padding="same", depthwise=True, bias=False, **dd)
        self.dw_norm = nn.BatchNorm2d(inner, **bn)
        self.se = SqueezeExcite(inner, max(1, int(out_chs * se_ratio)), **dd) if se_ratio else nn.Identity()
        self.shrink_conv = nn.Conv2d(inner, out_chs, 1, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._mbconv(x)

    def _mbconv(self, x: torch.Tensor) -> torch.Tensor:  # a method, not super().forward: TorchScript has no super()
        shortcut = self.shortcut(x)
        x = self.act(self.expand_norm(self.expand_conv(self.pre_norm(x))))
        x = self.se(self.act(self.dw_norm(self.dw_conv(x))))
        return shortcut + self.drop_path(self.shrink_conv(x))


def _resize_table(table: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(heads, 2p-1, 2q-1)`` → ``(heads, 2h-1, 2w-1)``, bilinear with half-pixel centres (TF2 resize)."""
    if table.shape[-2] == 2 * h - 1 and table.shape[-1] == 2 * w - 1:
        return table
    return F.interpolate(table.unsqueeze(0), size=(2 * h - 1, 2 * w - 1), mode="bilinear",
                         align_corners=False).squeeze(0)


def _global_bias(table: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(heads, h*w, h*w)`` bias: query ``i``, key ``j`` get ``table[j_y - i_y + h-1, j_x - i_x + w-1]``."""
    ys = torch.arange(h, device=table.device).repeat_interleave(w)
    xs = torch.arange(w, device=table.device).repeat(h)
    dy = ys[None, :] - ys[:, None] + h - 1
    dx = xs[None, :] - xs[:, None] + w - 1
    return table[:, dy, dx]


@torch.jit.ignore  # na2d's front is Python (checks, backend choice): TorchScript calls it as such, positionally
def _window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, wh: int, ww: int,
                      rpb: Optional[torch.Tensor], backend: Optional[str]) -> torch.Tensor:
    return na2d(q, k, v, kernel_size=(wh, ww), stride=(wh, ww), rpb=rpb, backend=backend)


@register_notrace_module  # window sizes and padding follow the input size: an fx leaf
class MoatAttention(nn.Module):
    """Multi-head self-attention on an NHWC map: global (``window_size=None``) or non-overlapping windows.

    Args:
        dim: channels in and out.
        head_dim: channels per head (``heads = dim // head_dim``).
        window_size: ``None`` (global) or ``(h, w)``.
        rel_pos_size: ``p`` of the ``(heads, 2p-1, 2p-1)`` relative position table; ``None``: no bias.
        backend: ``na2d``'s backend for window attention (``None``: automatic).
        device, dtype: where and in which dtype the weights are created.
    """

    def __init__(self, dim: int, head_dim: int = 32, window_size: Optional[Tuple[int, int]] = None,
                 rel_pos_size: Optional[int] = 7, backend: Optional[str] = None, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        if dim < head_dim:
            raise ValueError(f"MoatAttention: dim {dim} is smaller than head_dim {head_dim}")
        self.num_heads = dim // head_dim
        self.head_dim = head_dim
        self.attn_dim = self.num_heads * head_dim
        self.window_size = None if window_size is None else tuple(window_size)
        self.backend = backend
        self.qkv = nn.Linear(dim, 3 * self.attn_dim, **dd)
        self.proj = nn.Linear(self.attn_dim, dim, **dd)
        if rel_pos_size is not None:
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros(self.num_heads, 2 * rel_pos_size - 1, 2 * rel_pos_size - 1, **dd))
            trunc_normal_(self.relative_position_bias_table, std=0.02)
        else:
            self.register_parameter("relative_position_bias_table", None)

    def extra_repr(self) -> str:
        win = "global" if self.window_size is None else f"window={self.window_size}"
        return f"heads={self.num_heads}, head_dim={self.head_dim}, {win}"

    def rel_pos_bias(self, h: int, w: int) -> Optional[torch.Tensor]:
        """The table for an ``h × w`` window: ``(heads, 2h-1, 2w-1)`` (NATTEN's ``rpb`` layout)."""
        t = self.relative_position_bias_table
        return None if t is None else _resize_table(t, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window_size = self.window_size
        if window_size is None:
            return self._global(x)
        B, H, W, C = x.shape
        wh, ww = min(window_size[0], H), min(window_size[1], W)
        if wh == H and ww == W:
            return self._global(x)
        ph, pw = (-H) % wh, (-W) % ww
        if ph or pw:
            x = F.pad(x, (0, 0, 0, pw, 0, ph))
        q, k, v = self.qkv(x).view(B, H + ph, W + pw, 3, self.num_heads, self.head_dim).unbind(3)
        rpb: Optional[torch.Tensor] = None
        table = self.relative_position_bias_table
        if table is not None:
            rpb = _resize_table(table, wh, ww).to(q.dtype)
        out = _window_attention(q, k, v, wh, ww, rpb, self.backend)
        return self.proj(out[:, :H, :W].reshape(B, H, W, self.attn_dim))

    def _global(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        qkv = self.qkv(x.reshape(B, H * W, C)).view(B, H * W, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        bias: Optional[torch.Tensor] = None
        table = self.relative_position_bias_table
        if table is not None:
            bias = _global_bias(_resize_table(table, H, W), H, W).to(q.dtype).unsqueeze(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(B, H, W, self.attn_dim))


class MoatBlock(MBConvBlock):
    """MBConv (no SE; carries the stride and the expansion) then ``x + Attention(LayerNorm(x))``."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, expansion: int = 4, pool_size: int = 2,
                 drop_path: float = 0.0, bn_eps: float = 1e-3, ln_eps: float = 1e-5, head_dim: int = 32,
                 window_size: Optional[Tuple[int, int]] = None, rel_pos_size: Optional[int] = 7,
                 attn_backend: Optional[str] = None, device=None, dtype=None):
        dd = dict(device=device, dtype=dtype)
        super().__init__(in_chs, out_chs, stride, expansion, None, pool_size, drop_path, bn_eps, **dd)
        self.attn_norm = nn.LayerNorm(out_chs, eps=ln_eps, **dd)
        self.attn = MoatAttention(out_chs, head_dim, window_size, rel_pos_size, attn_backend, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._mbconv(x)
        y = self.attn(self.attn_norm(x.permute(0, 2, 3, 1)))
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class MoatStage(nn.Module):
    """A stage's blocks; ``feature_act`` (the release's GELU of the ``res`` endpoints, or None) makes the
    stage's feature, never the input of the next stage."""

    def __init__(self, blocks: List[nn.Module], feature_act: bool = False):
        super().__init__()
        self.grad_checkpointing = False
        self.blocks = nn.Sequential(*blocks)
        self.feature_act = nn.GELU() if feature_act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        if not torch.jit.is_scripting():
            if self.feature_act is not None and is_fx_symbolic_tracing():
                # torch.fx takes a module's last node as its output, so feature_cls='fx' (feature point
                # ``stages.{i}``) gets the GELU'd map forward_intermediates returns; forward discards it
                # (fx drops it as dead code) and eager never computes it
                self.feature_act(x)
        return x


class Stem(nn.Module):
    """3×3 conv stride 2 ('same') → BatchNorm → GELU → 3×3 conv; both convs with bias."""

    def __init__(self, in_chs: int, chs: Sequence[int], bn_eps: float = 1e-3, device=None, dtype=None):
        super().__init__()
        if len(chs) != 2:
            raise ValueError(f"MOAT: stem_chs needs 2 entries (two 3x3 convs), got {tuple(chs)}")
        dd = dict(device=device, dtype=dtype)
        self.conv1 = create_conv2d(in_chs, chs[0], 3, stride=2, padding="same", bias=True, **dd)
        self.norm1 = nn.BatchNorm2d(chs[0], eps=bn_eps, momentum=0.01, **dd)
        self.act1 = nn.GELU()
        self.conv2 = create_conv2d(chs[0], chs[1], 3, stride=1, padding="same", bias=True, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act1(self.norm1(self.conv1(x))))


def _pair(w, what: str) -> Optional[Tuple[int, int]]:
    if w is None:
        return None
    if isinstance(w, int) and not isinstance(w, bool):
        w = (w, w)
    w = tuple(w)
    if len(w) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in w):
        raise ValueError(f"MOAT: {what} must be None, a positive int or (h, w), got {w!r}")
    return w


def _stage_windows(window_size: WindowArg, block_types: Sequence[str]) -> List[Optional[Tuple[int, int]]]:
    """One window per stage (``None`` for MBConv stages and global attention)."""
    n = len(block_types)
    attn = [i for i, t in enumerate(block_types) if t == "moat"]
    out: List[Optional[Tuple[int, int]]] = [None] * n
    if window_size is None:
        return out
    if isinstance(window_size, int) and not isinstance(window_size, bool):
        per = [window_size] * len(attn)
    else:
        per = list(window_size)
        if len(per) == n and n != len(attn):
            per = [per[i] for i in attn]
        elif len(per) != len(attn):
            raise ValueError(f"MOAT: window_size needs one entry per attention stage ({len(attn)}) or per stage "
                             f"({n}), or a single int; got {window_size!r}")
    for i, w in zip(attn, per):
        out[i] = _pair(w, f"window_size of stage {i}")
    return out


class MOAT(PyramidNet):
    """MOAT (see the module docstring).

    Args:
        stem_chs: channels of the two stem convs.
        embed_dims: channels per stage.
        depths: blocks per stage.
        block_types: ``'mbconv'`` or ``'moat'`` per stage.
        expansion: MBConv expansion ratio (4).
        se_ratio: SE width as a fraction of the block's output channels (MBConv blocks only).
        head_dim: channels per attention head (32).
        window_size: ``None`` (global attention), an int (one square window for every attention stage),
            or one entry per attention stage (or per stage), each ``None``, an int or ``(h, w)``.
        global_last_block: with windows, keep global attention in the last block of each attention stage.
        rel_pos: use the relative position bias (the release's default; ``False`` = "no PE" checkpoints).
        rel_pos_sizes: per stage, ``p`` of the ``(heads, 2p-1, 2p-1)`` tables (release: 14 at stride 16, 7 at 32).
        pool_size: kernel of the shortcut's average pool (release: 2 for classification, 3 for dense tasks).
        feature_act: GELU on the intermediate features (the release's ``res`` endpoints).
        attn_backend: backend of ``na2d`` for window attention.
        device, dtype: where and in which dtype the weights are created (timm's factory arguments).
    """

    stem_pattern = r"^stem"

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = "avg",
            stem_chs: Sequence[int] = (64, 64),
            embed_dims: Sequence[int] = (96, 192, 384, 768),
            depths: Sequence[int] = (2, 3, 7, 2),
            block_types: Sequence[str] = ("mbconv", "mbconv", "moat", "moat"),
            expansion: int = 4,
            se_ratio: float = 0.25,
            head_dim: int = 32,
            window_size: WindowArg = None,
            global_last_block: bool = False,
            rel_pos: bool = True,
            rel_pos_sizes: Sequence[Optional[int]] = (None, None, 14, 7),
            pool_size: int = 2,
            feature_act: bool = True,
            bn_eps: float = 1e-3,
            ln_eps: float = 1e-5,
            attn_backend: Optional[str] = None,
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
            device=None,
            dtype=None,
    ):
        super().__init__()
        self.init_pyramid(num_classes, global_pool, embed_dims[-1], drop_rate, embed_dims=embed_dims, depths=depths,
                          block_types=block_types, rel_pos_sizes=rel_pos_sizes)
        if any(t not in ("mbconv", "moat") for t in block_types):
            raise ValueError(f"MOAT: block_types entries must be 'mbconv' or 'moat', got {tuple(block_types)}")
        if pool_size not in (1, 2, 3):
            raise ValueError(f"MOAT: pool_size must be 1, 2 or 3, got {pool_size!r}")
        windows = _stage_windows(window_size, block_types)
        dd = dict(device=device, dtype=dtype)
        self.stem = Stem(in_chans, stem_chs, bn_eps, **dd)
        # not timm's calculate_drop_path_rates (linspace to the rate at the last block): the release's
        # survival_prob rule, 1 - rate * i / n, never reaches the rate
        total = sum(depths)
        stages, prev, idx = [], stem_chs[-1], 0
        for i in range(4):
            blocks = []
            for j in range(depths[i]):
                dp = drop_path_rate * idx / total
                stride = 2 if j == 0 else 1
                if block_types[i] == "mbconv":
                    blocks.append(MBConvBlock(prev, embed_dims[i], stride, expansion, se_ratio, pool_size, dp, bn_eps,
                                              **dd))
                else:
                    win = None if (global_last_block and j == depths[i] - 1) else windows[i]
                    blocks.append(MoatBlock(prev, embed_dims[i], stride, expansion, pool_size, dp, bn_eps, ln_eps,
                                            head_dim, win, rel_pos_sizes[i] if rel_pos else None, attn_backend, **dd))
                prev, idx = embed_dims[i], idx + 1
            stages.append(MoatStage(blocks, feature_act))
        self.init_stages(stages, embed_dims)
        if feature_act:  # the stages' own GELUs (one module each): forward_intermediates applies them too
            self.feature_transforms = nn.ModuleList([s.feature_act for s in stages])
        self.head_norm = nn.LayerNorm(embed_dims[-1], eps=ln_eps, **dd)
        self.init_head()

    def _init_weights(self, m: nn.Module) -> None:
        # the release initialises every kernel with normal(0, 0.02) and every bias with zeros
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self):
        return {n for n, _ in self.named_parameters() if n.endswith("relative_position_bias_table")}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        m = super().group_matcher(coarse)
        if not coarse:
            m["blocks"] = m["blocks"] + [(r"^head_norm", (99999,))]
        return m

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Average pool → LayerNorm → (dropout) → linear; ``global_pool=''`` returns the unpooled map as is."""
        if self.global_pool == "avg":
            x = self.head_norm(x.mean(dim=(2, 3)))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True):
        take = super().prune_intermediate_layers(indices, prune_norm, prune_head)
        if prune_head or self.num_features != self.head_norm.normalized_shape[0]:
            self.head_norm = nn.Identity()
        return take


# --------------------------------------------------------------------------------------------------
# TensorFlow checkpoints (deeplab2)
# --------------------------------------------------------------------------------------------------
_EMA_SUFFIX = "/ExponentialMovingAverage"
_BN_LEAVES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
# layer inside a block (deeplab2 Keras name) → vzoo module
_BLOCK_LAYERS = {
    "shortcut_conv": "shortcut.conv", "pre_norm": "pre_norm", "expand_conv": "expand_conv",
    "expand_norm": "expand_norm", "depthwise_conv": "dw_conv", "depthwise_norm": "dw_norm",
    "se/reduce_conv2d": "se.reduce", "se/expand_conv2d": "se.expand", "shrink_conv": "shrink_conv",
    "attention_norm": "attn_norm",
}
_TOP_LAYERS = {"stem/conv_0": "stem.conv1", "stem/norm_0": "stem.norm1", "stem/conv_1": "stem.conv2",
               "final_layer_norm": "head_norm", "logits_head": "head"}
_WEIGHT_LEAVES = {"kernel", "depthwise_kernel", "bias", "weight", "relative_position_embedding", *_BN_LEAVES}
_VAR_RE = re.compile(r"^(?:moat/)?(?:(?P<block>block_(?P<s>\d+)_(?P<j>\d+))/)?(?P<layer>.+)/(?P<leaf>[^/]+)$")


def _to_tensor(a) -> torch.Tensor:
    return a.detach().clone() if isinstance(a, torch.Tensor) else torch.from_numpy(np.array(a, copy=True))


def _conv(kernel: torch.Tensor, depthwise: bool = False) -> torch.Tensor:
    # Conv2D kernel (kh, kw, in, out) → (out, in, kh, kw); DepthwiseConv2D (kh, kw, in, 1) → (in, 1, kh, kw)
    return kernel.permute(2, 3, 0, 1).contiguous() if depthwise else kernel.permute(3, 2, 0, 1).contiguous()


def _is_tf_name(k: str) -> bool:
    return "/" in k


def tf_to_vzoo_state_dict(variables: Mapping[str, "np.ndarray"], use_ema: bool = False,
                          ) -> Dict[str, torch.Tensor]:
    """Map the variables of a deeplab2 MOAT checkpoint (name → array) onto :class:`MOAT`'s state dict.

    Names as deeplab2's Keras layers create them (``:0`` suffixes allowed): ``moat/stem/conv_0/kernel``
    (also without the ``moat/stem/`` scope, as deeplab2's loader notes for its Sequential stem),
    ``moat/block_{stage:02d}_{block:02d}/{pre_norm,expand_conv,expand_norm,depthwise_conv,depthwise_norm,
    se/reduce_conv2d,se/expand_conv2d,shrink_conv,shortcut_conv,attention_norm}/...``,
    ``.../attention/{q,k,v}/{weight (C, heads, d), bias (heads, d)}``, ``.../attention/o/weight (heads, d, C)``,
    ``.../attention/relative_position_embedding (heads, 2p-1, 2p-1)``, ``moat/final_layer_norm``,
    ``moat/logits_head/kernel (1, 1, C, classes)``. BatchNorm ``moving_mean``/``moving_variance`` are
    converted too (deeplab2's own loader restores only trainable variables).

    ``use_ema=True`` takes the ``.../ExponentialMovingAverage`` copies where the checkpoint has them.
    Variables that are not model weights (optimizer slots, ``global_step`` ...) are ignored; a model
    variable this function cannot place raises ``ValueError`` naming it.
    """
    raw: Dict[str, torch.Tensor] = {}
    ema: Dict[str, torch.Tensor] = {}
    for name, arr in variables.items():
        name = name[:-2] if name.endswith(":0") else name
        if name.endswith(_EMA_SUFFIX):
            ema[name[:-len(_EMA_SUFFIX)]] = arr
        else:
            raw[name] = arr
    if use_ema:
        raw = {k: ema.get(k, v) for k, v in raw.items()}

    out: Dict[str, torch.Tensor] = {}
    qkv: Dict[str, Dict[str, torch.Tensor]] = {}
    unknown = []
    for name, arr in raw.items():
        m = _VAR_RE.match(name)
        if not m:
            continue
        layer, leaf = m.group("layer"), m.group("leaf")
        if leaf not in _WEIGHT_LEAVES:  # optimizer slots (.../gamma/Momentum ...) and other bookkeeping
            continue
        if m.group("block"):
            prefix = f"stages.{int(m.group('s'))}.blocks.{int(m.group('j'))}."
            if layer == "attention" or layer.startswith("attention/"):
                sub = layer[len("attention/"):]
                if sub in ("q", "k", "v") and leaf in ("weight", "bias"):
                    qkv.setdefault(prefix, {})[f"{sub}.{leaf}"] = _to_tensor(arr)
                    continue
                if sub == "o" and leaf in ("weight", "bias"):
                    t = _to_tensor(arr)
                    out[prefix + f"attn.proj.{leaf}"] = t.reshape(-1, t.shape[-1]).t().contiguous() \
                        if leaf == "weight" else t
                    continue
                if layer == "attention" and leaf == "relative_position_embedding":
                    out[prefix + "attn.relative_position_bias_table"] = _to_tensor(arr)
                    continue
                unknown.append(name)
                continue
            module = _BLOCK_LAYERS.get(layer)
        else:
            if layer in ("conv_0", "norm_0", "conv_1"):
                layer = "stem/" + layer
            module = _TOP_LAYERS.get(layer)
            if module is None:
                if name.startswith("moat/"):
                    unknown.append(name)
                continue
            prefix = ""
        if module is None:
            unknown.append(name)
            continue
        t = _to_tensor(arr)
        if leaf in _BN_LEAVES:
            out[prefix + f"{module}.{_BN_LEAVES[leaf]}"] = t
            if leaf == "moving_mean":
                out[prefix + f"{module}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
        elif leaf == "depthwise_kernel" or (leaf == "kernel" and module == "dw_conv"):
            # Keras 2 (the release) names the depthwise kernel 'depthwise_kernel', Keras 3 'kernel'
            out[prefix + f"{module}.weight"] = _conv(t, depthwise=True)
        elif leaf == "kernel":
            out[prefix + f"{module}.weight"] = t[0, 0].t().contiguous() if module == "head" else _conv(t)
        elif leaf == "bias":
            out[prefix + f"{module}.bias"] = t
        else:
            unknown.append(name)
    for prefix, parts in qkv.items():
        missing = [p for p in ("q.weight", "k.weight", "v.weight", "q.bias", "k.bias", "v.bias") if p not in parts]
        if missing:
            raise ValueError(f"MOAT TF checkpoint: attention of {prefix!r} lacks {missing}")
        w = [parts[f"{p}.weight"] for p in "qkv"]
        out[prefix + "attn.qkv.weight"] = torch.cat([t.reshape(t.shape[0], -1).t() for t in w], 0).contiguous()
        out[prefix + "attn.qkv.bias"] = torch.cat([parts[f"{p}.bias"].reshape(-1) for p in "qkv"], 0)
    if unknown:
        raise ValueError(f"MOAT TF checkpoint: variables with no place in the model ({len(unknown)}): "
                         f"{', '.join(sorted(unknown)[:10])}")
    return out


def checkpoint_filter_fn(state_dict: Dict[str, "torch.Tensor | np.ndarray"], model: nn.Module,
                         ) -> Dict[str, torch.Tensor]:
    """vzoo-named state dicts pass through; deeplab2 TensorFlow variable names (``moat/...``) are mapped
    by :func:`tf_to_vzoo_state_dict`."""
    if any(_is_tf_name(k) for k in state_dict):
        return tf_to_vzoo_state_dict(state_dict)
    return state_dict


def convert_tf_checkpoint(src: str, use_ema: bool = False) -> Dict[str, torch.Tensor]:
    """Read a deeplab2 MOAT TensorFlow checkpoint and return vzoo's state dict.

    ``src``: the released ``.tar.gz`` (unpacked to a temporary directory), a directory holding the
    checkpoint, or a checkpoint prefix (``.../model.ckpt`` with ``.index``/``.data-*`` beside it).
    Needs TensorFlow (``pip install .[tf]``). Checked against deeplab2's TF model on a checkpoint in the
    release's layout by ``tools/parity.py moat``."""
    try:
        import tensorflow as tf
    except ImportError:
        raise ImportError("MOAT checkpoints are TensorFlow files: reading them needs TensorFlow, "
                          "install it with `pip install .[tf]`") from None
    import glob
    import os
    import tarfile
    import tempfile

    def read(path: str) -> Dict[str, torch.Tensor]:
        if os.path.isdir(path):
            latest = tf.train.latest_checkpoint(path)
            if latest is None:
                found = sorted(glob.glob(os.path.join(path, "**", "*.index"), recursive=True))
                if not found:
                    raise FileNotFoundError(f"no TensorFlow checkpoint (*.index) under {src!r}")
                latest = found[-1][:-len(".index")]
            path = latest
        reader = tf.train.load_checkpoint(path)
        names = [n for n in reader.get_variable_to_shape_map() if n.startswith(("moat/", "conv_", "norm_"))]
        return tf_to_vzoo_state_dict({n: reader.get_tensor(n) for n in names}, use_ema=use_ema)

    if os.path.isfile(src) and tarfile.is_tarfile(src):
        with tempfile.TemporaryDirectory() as tmp, tarfile.open(src) as tar:
            tar.extractall(tmp, filter="data")  # no absolute paths, links out of tmp or special files
            return read(tmp)
    return read(src)


# --------------------------------------------------------------------------------------------------
# variants
# --------------------------------------------------------------------------------------------------
def _create_moat(variant: str, pretrained: bool = False, **kwargs) -> MOAT:
    return build_vzoo_model(MOAT, variant, pretrained, checkpoint_filter_fn=checkpoint_filter_fn,
                            default_feature_cfg=dict(out_indices=(0, 1, 2, 3)), **dict(_VARIANTS[variant], **kwargs))


_IMAGENET = dict(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)      # the release's "option 1"
_HALF = dict(mean=IMAGENET_INCEPTION_MEAN, std=IMAGENET_INCEPTION_STD)      # "option 2": (x - 127.5) / 127.5


def _cfg(size: int = 224, top1: Optional[float] = None, params_m: Optional[float] = None, data: str = "ImageNet-1k",
         norm: dict = _IMAGENET, **kwargs):
    return vzoo_cfg(
        input_size=(3, size, size), pool_size=(size // 32, size // 32), **norm,
        min_input_size=(3, 32, 32), fixed_input_size=False, first_conv="stem.conv1", license="apache-2.0",
        origin_url="https://github.com/google-research/deeplab2", paper_ids="arXiv:2210.01820",
        paper_name="MOAT: Alternating Mobile Convolution and Attention Brings Strong Vision Models",
        notes=("crop_pct is not stated by the release (0.875 assumed)",) + official_notes(
            f"{data}; deeplab2 g3doc/projects/moat_imagenet_pretrained_checkpoints.md", top1, params_m, size=size),
        **kwargs)


default_cfgs = generate_default_cfgs({
    "moat_0.in1k": _cfg(224, 83.3, 27.8),
    "moat_1.in1k": _cfg(224, 84.2, 41.6),
    "moat_2.in22k_ft_in1k_384": _cfg(384, 87.5, 73.4, "ImageNet-22k then 1k", _HALF),
    "moat_3.in22k_ft_in1k_512": _cfg(512, 88.4, 190.0, "ImageNet-22k then 1k", _HALF),
    "moat_4.in22k_ft_in1k_512": _cfg(512, 89.1, 483.2, "ImageNet-22k then 1k", _HALF),
    "tiny_moat_0.in1k_256": _cfg(256, 76.6, 3.4),
    "tiny_moat_1.in1k_256": _cfg(256, 79.2, 5.1),
    "tiny_moat_2.in1k_256": _cfg(256, 81.7, 9.8),
    "tiny_moat_3.in1k_256": _cfg(256, 83.3, 19.5),
})

# the variants of deeplab2's moat*_config; head_dim 32, expansion 4, SE 0.25 for all.
# The release trains them with stochastic depth 1 - survival_prob: moat_0 0.2, moat_1 0.3, moat_2 0.3,
# moat_3 0.6, moat_4 0.7, tiny_moat_0..2 0, tiny_moat_3 0.1 (timm's default here: 0).
_VARIANTS = {
    "moat_0": dict(stem_chs=(64, 64), embed_dims=(96, 192, 384, 768), depths=(2, 3, 7, 2)),
    "moat_1": dict(stem_chs=(64, 64), embed_dims=(96, 192, 384, 768), depths=(2, 6, 14, 2)),
    "moat_2": dict(stem_chs=(128, 128), embed_dims=(128, 256, 512, 1024), depths=(2, 6, 14, 2)),
    "moat_3": dict(stem_chs=(160, 160), embed_dims=(160, 320, 640, 1280), depths=(2, 12, 28, 2)),
    "moat_4": dict(stem_chs=(256, 256), embed_dims=(256, 512, 1024, 2048), depths=(2, 12, 28, 2)),
    "tiny_moat_0": dict(stem_chs=(32, 32), embed_dims=(32, 64, 128, 256), depths=(2, 3, 7, 2)),
    "tiny_moat_1": dict(stem_chs=(40, 40), embed_dims=(40, 80, 160, 320), depths=(2, 3, 7, 2)),
    "tiny_moat_2": dict(stem_chs=(56, 56), embed_dims=(56, 112, 224, 448), depths=(2, 3, 7, 2)),
    "tiny_moat_3": dict(stem_chs=(80, 80), embed_dims=(80, 160, 320, 640), depths=(2, 3, 7, 2)),
}


@register_model
def moat_0(pretrained: bool = False, **kwargs) -> MOAT:
    return _create_moat("moat_0", pretrained, **kwargs)


@register_model
def moat_1(pretrained: bool = False, **kwargs) -> MOAT:
    return _create_moat("moat_1", pretrained, **kwargs)


@register_model
def moat_2(pretrained: bool = False, **kwargs) -> MOAT:
    return _create_moat("moat_2", pretrained, **kwargs)


@register_model
def moat_3(pretrained: bool = False, **kwargs) -> MOAT:
    return _create_moat("moat_3", pretrained, **kwargs)


@register_model
def moat_4(pretrained: bool = False, **kwargs) -> MOAT:
    return _create_moat("moat_4", pretrained, **kwargs)


@register_model
def tiny_moat_0(pretrained: bool = False, **kwargs) -> MOAT:
    return _create_moat("tiny_moat_0", pretrained, **kwargs)


@register_model
def tiny_moat_1(pretrained: bool = False, **kwargs) -> MOAT:
    return _create_moat("tiny_moat_1", pretrained, **kwargs)


@register_model
def tiny_moat_2(pretrained: bool = False, **kwargs) -> MOAT:
    return _create_moat("tiny_moat_2", pretrained, **kwargs)


@register_model
def tiny_moat_3(pretrained: bool = False, **kwargs) -> MOAT:
    return _create_moat("tiny_moat_3", pretrained, **kwargs)
