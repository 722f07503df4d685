"""Bi-level routing attention (BRA, BiFormer, Zhu et al., CVPR 2023): one front, three backends.

The feature map (NHWC, ``H`` and ``W`` divisible by ``n_win``) is cut into ``n_win x n_win`` regions of
``h x w = (H / n_win) x (W / n_win)`` tokens. Per image:

1. **region level**: region queries / keys are the means of the token queries / keys of each region;
   their affinity ``(q_r * scale) @ k_r^T`` (``n_win^2 x n_win^2``) picks, for every region, the
   ``topk`` most related regions (``torch.topk``; the routing weights are the softmax of the kept
   logits, used only with ``soft_routing``);
2. **token level**: every token of a region attends (multi-head, softmax scale ``scale``) to all
   ``topk * h * w`` tokens of its routed regions. With soft routing, the routed keys and values of
   region ``j`` are multiplied by its routing weight.

``scale`` is what the official release uses: ``qk_dim ** -0.5`` (the *whole* query/key width, not the
head width), both for routing and attention. Layouts: ``query``/``key`` ``(B, H, W, qk_dim)``,
``value`` ``(B, H, W, dim)`` with heads packed in the channels (head ``m`` owns channels
``m*d .. (m+1)*d``); ``r_idx`` ``(B, n_win^2, topk)`` (region ``i`` is row ``i // n_win``, column
``i % n_win``); the output has the layout of ``value``.

Backends (``backend=``; ``None`` / ``"auto"`` choose Triton on CUDA and fall back to ``"torch"`` where the
kernels cannot run, a named backend that cannot run raises ``ValueError`` saying why):

* ``"triton"``: fused kernels (``vzoo.kernels.bra``, forward and backward, online softmax) that read
  the routed key/value tiles by index straight from the NHWC tensors: neither the gathered copy of the
  official ``KVGather`` nor a region-partitioned copy exists. Default for CUDA tensors.
* ``"torch"``: the fast PyTorch path (region partition once, ``index_select`` gather,
  ``scaled_dot_product_attention``). Default elsewhere.
* ``"reference"``: the official math step by step (``gather`` of the expanded key/values, explicit
  ``matmul``/``softmax``); what the other backends are tested against.

:class:`BiLevelRoutingAttention` is the module BiFormer uses (the release's ``ops/bra_legacy.py``
semantics): the ``qkv`` projection, optional zero padding to a multiple of ``n_win`` (``auto_pad``;
padded tokens take part, as in the release), routing, attention, local context enhancement (a
depthwise ``side_dwconv`` conv of the values, added to the output) and the output projection.
"""
# no `from __future__ import annotations`: TorchScript reads the real annotations of the @torch.jit.ignore'd methods
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import register_notrace_module

from vzoo.kernels.bra import bra_triton

from ._backend import ROUTING_BACKENDS, check_backend_name, choose_backend

__all__ = ["bi_level_routing_attention", "routed_attention", "region_routing", "BiLevelRoutingAttention"]

_KV_DOWNSAMPLE_MODES = ("identity",)


# ---------------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------------
def _check_int(op_name, name, value, lo):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{op_name}: {name} must be an int >= {lo}, got {value!r}")
    if value < lo:
        raise ValueError(f"{op_name}: {name} must be an int >= {lo}, got {value!r}")


def _check_qkv(op_name, q, k, v, n_win, num_heads):
    for name, t in (("query", q), ("key", k), ("value", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op_name}: {name} must be a torch.Tensor (B, H, W, C), got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{op_name}: {name} must be 4-D NHWC (B, H, W, C), got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{op_name}: {name} must be floating point, got {t.dtype}")
        if t.dtype != q.dtype or t.device != q.device:
            raise TypeError(f"{op_name}: {name} is {t.dtype} on {t.device} but query is {q.dtype} on {q.device}")
        if t.shape[:3] != q.shape[:3]:
            raise ValueError(f"{op_name}: {name} shape {tuple(t.shape)} and query shape {tuple(q.shape)} differ "
                             f"in (B, H, W)")
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"{op_name}: key width {k.shape[-1]} must equal query width {q.shape[-1]}")
    _check_int(op_name, "n_win", n_win, 1)
    _check_int(op_name, "num_heads", num_heads, 1)
    H, W = q.shape[1:3]
    if H % n_win or W % n_win:
        raise ValueError(f"{op_name}: H and W ({H}, {W}) must be divisible by n_win={n_win}; pad the input "
                         f"(BiLevelRoutingAttention(auto_pad=True) does)")
    if q.shape[-1] % num_heads or v.shape[-1] % num_heads:
        raise ValueError(f"{op_name}: query width {q.shape[-1]} and value width {v.shape[-1]} must be divisible "
                         f"by num_heads={num_heads}")


# ---------------------------------------------------------------------------------------------------
# region helpers (no copies where a view does)
# ---------------------------------------------------------------------------------------------------
def _partition(t: torch.Tensor, n_win: int) -> torch.Tensor:
    """(B, H, W, C) → (B, n_win², h*w, C) (one copy)."""
    B, H, W, C = t.shape
    h, w = H // n_win, W // n_win
    return t.reshape(B, n_win, h, n_win, w, C).permute(0, 1, 3, 2, 4, 5).reshape(B, n_win * n_win, h * w, C)


def _unpartition(t: torch.Tensor, n_win: int, H: int, W: int) -> torch.Tensor:
    """(B, n_win², h*w, C) → (B, H, W, C)."""
    B, _, _, C = t.shape
    h, w = H // n_win, W // n_win
    return t.reshape(B, n_win, n_win, h, w, C).permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)


def _region_mean(t: torch.Tensor, n_win: int) -> torch.Tensor:
    """(B, H, W, C) → (B, n_win², C): the mean of every region's tokens."""
    B, H, W, C = t.shape
    h, w = H // n_win, W // n_win
    # one axis at a time, not .mean((2, 4)): torch's CPU reduction over two strided axes is 6-15x slower
    # (2 x 14 x 14 x 256 slice of the qkv output: 0.54 ms vs 36 us, 1 thread, torch 2.14)
    return (t.reshape(B, n_win, h, n_win, w, C).sum(4).sum(2) / (h * w)).reshape(B, n_win * n_win, C)


def region_routing(q_region: torch.Tensor, k_region: torch.Tensor, topk: int, scale: float,
                   emb: Optional[nn.Module] = None, diff_routing: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """Top-k region routing: ``(r_weight, r_idx)``, both ``(B, R, topk)``.

    ``q_region``/``k_region`` are ``(B, R, qk_dim)`` region descriptors; ``emb`` an optional learnable
    projection applied to both (``param_routing``); without ``diff_routing`` they are detached first.
    """
    _check_int("region_routing", "topk", topk, 1)
    if topk > q_region.shape[1]:
        raise ValueError(f"region_routing: topk={topk} exceeds the number of regions {q_region.shape[1]} "
                         f"(n_win**2); use a smaller topk or a larger n_win")
    if not diff_routing:
        q_region, k_region = q_region.detach(), k_region.detach()
    if emb is not None:
        q_region, k_region = emb(q_region), emb(k_region)
    logits = (q_region * scale) @ k_region.transpose(-2, -1)
    top_logits, r_idx = torch.topk(logits, k=topk, dim=-1)
    return top_logits.softmax(dim=-1), r_idx


# ---------------------------------------------------------------------------------------------------
# token-level attention over the routed regions
# ---------------------------------------------------------------------------------------------------
def _attend_reference(q_r, k_r, v_r, r_idx, num_heads, scale, r_weight):
    """The release's math: gather (expanded, one copy per query region) then matmul/softmax/matmul.
    q_r, k_r, v_r: (B, R, T, C); returns (B, R, T, Cv)."""
    B, R, T, Cqk = q_r.shape
    Cv = v_r.shape[-1]
    topk = r_idx.shape[-1]
    kv = torch.cat([k_r, v_r], dim=-1)
    C = kv.shape[-1]
    sel = torch.gather(kv.view(B, 1, R, T, C).expand(-1, R, -1, -1, -1), dim=2,
                       index=r_idx.view(B, R, topk, 1, 1).expand(-1, -1, -1, T, C))  # (B, R, topk, T, C)
    if r_weight is not None:
        sel = r_weight.view(B, R, topk, 1, 1) * sel
    k_sel, v_sel = sel.split([Cqk, Cv], dim=-1)
    k_sel = k_sel.reshape(B * R, topk * T, num_heads, Cqk // num_heads).permute(0, 2, 3, 1)  # (BR, m, c, topk*T)
    v_sel = v_sel.reshape(B * R, topk * T, num_heads, Cv // num_heads).permute(0, 2, 1, 3)  # (BR, m, topk*T, c)
    q = q_r.reshape(B * R, T, num_heads, Cqk // num_heads).permute(0, 2, 1, 3)
    attn = ((q * scale) @ k_sel).softmax(dim=-1)
    out = attn @ v_sel  # (BR, m, T, c)
    return out.permute(0, 2, 1, 3).reshape(B, R, T, Cv)


def _attend_torch(q_r, k_r, v_r, r_idx, num_heads, scale, r_weight):
    """Fast path: index_select gather of the routed regions and fused SDPA. Same shapes as above."""
    B, R, T, Cqk = q_r.shape
    Cv = v_r.shape[-1]
    topk = r_idx.shape[-1]
    flat = (r_idx + torch.arange(B, device=r_idx.device).view(B, 1, 1) * R).reshape(-1)
    k_sel = k_r.reshape(B * R, T, Cqk).index_select(0, flat).view(B * R, topk, T, Cqk)
    v_sel = v_r.reshape(B * R, T, Cv).index_select(0, flat).view(B * R, topk, T, Cv)
    if r_weight is not None:
        w = r_weight.reshape(B * R, topk, 1, 1).to(k_sel.dtype)
        k_sel, v_sel = k_sel * w, v_sel * w
    q = q_r.reshape(B * R, T, num_heads, Cqk // num_heads).transpose(1, 2)
    k = k_sel.view(B * R, topk * T, num_heads, Cqk // num_heads).transpose(1, 2)
    v = v_sel.view(B * R, topk * T, num_heads, Cv // num_heads).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, scale=scale)  # (BR, m, T, c)
    return out.transpose(1, 2).reshape(B, R, T, Cv)


def _routed_attention(*, backend: str, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      r_idx: torch.Tensor, r_weight: Optional[torch.Tensor], n_win: int, num_heads: int,
                      scale: float) -> torch.Tensor:
    """:func:`routed_attention` on checked arguments with the chosen backend (what the module calls too)."""
    if backend == "triton":
        return bra_triton(query, key, value, r_idx=r_idx, n_win=n_win, num_heads=num_heads, scale=scale)
    attend = _attend_torch if backend == "torch" else _attend_reference
    q_r, k_r, v_r = (_partition(t, n_win) for t in (query, key, value))
    out = attend(q_r, k_r, v_r, r_idx=r_idx.long(), num_heads=num_heads, scale=scale, r_weight=r_weight)
    return _unpartition(out, n_win, H=query.shape[1], W=query.shape[2])


def routed_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, r_idx: torch.Tensor,
                     n_win: int, num_heads: int, scale: Optional[float] = None,
                     r_weight: Optional[torch.Tensor] = None, backend: Optional[str] = None) -> torch.Tensor:
    """Every token attends to the tokens of the ``topk`` regions ``r_idx`` routes its region to.

    ``query``/``key`` ``(B, H, W, qk_dim)``, ``value`` ``(B, H, W, dim)``, ``r_idx`` ``(B, n_win², topk)``
    integer; ``r_weight`` (same shape, optional) scales the routed keys and values (soft routing).
    ``scale`` defaults to ``qk_dim ** -0.5`` (the release's choice). Returns ``(B, H, W, dim)``.
    """
    op_name = "routed_attention"
    _check_qkv(op_name, query, key, value, n_win, num_heads)
    B, H, W, Cqk = query.shape
    R = n_win * n_win
    if not isinstance(r_idx, torch.Tensor) or r_idx.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{op_name}: r_idx must be an int64/int32 tensor (B, n_win**2, topk), got "
                        f"{r_idx.dtype if isinstance(r_idx, torch.Tensor) else type(r_idx).__name__}")
    if r_idx.dim() != 3 or r_idx.shape[:2] != (B, R) or not 1 <= r_idx.shape[2] <= R:
        raise ValueError(f"{op_name}: r_idx must have shape (B, n_win**2, topk) = ({B}, {R}, 1..{R}), "
                         f"got {tuple(r_idx.shape)}")
    if r_weight is not None and tuple(r_weight.shape) != tuple(r_idx.shape):
        raise ValueError(f"{op_name}: r_weight shape {tuple(r_weight.shape)} must equal r_idx shape "
                         f"{tuple(r_idx.shape)}")
    backend = choose_backend(op_name, backend, ROUTING_BACKENDS, device=query.device, dtype=query.dtype,
                             soft_routing=r_weight is not None)
    return _routed_attention(backend=backend, query=query, key=key, value=value, r_idx=r_idx, r_weight=r_weight,
                             n_win=n_win, num_heads=num_heads, scale=Cqk ** -0.5 if scale is None else float(scale))


def bi_level_routing_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, n_win: int,
                               topk: int, num_heads: int, scale: Optional[float] = None,
                               soft_routing: bool = False, backend: Optional[str] = None,
                               return_routing: bool = False):
    """Routing (region means, affinity, top-k) then :func:`routed_attention`; layouts as there.

    Returns the ``(B, H, W, dim)`` output, and ``(r_weight, r_idx)`` too if ``return_routing``.
    Routing is not differentiated through (the release's default, ``diff_routing=False``).
    """
    _check_qkv("bi_level_routing_attention", query, key, value, n_win, num_heads)
    scale = query.shape[-1] ** -0.5 if scale is None else float(scale)
    r_weight, r_idx = region_routing(_region_mean(query, n_win), _region_mean(key, n_win), topk=topk, scale=scale)
    out = routed_attention(query, key, value, r_idx=r_idx, n_win=n_win, num_heads=num_heads, scale=scale,
                           r_weight=r_weight if soft_routing else None, backend=backend)
    return (out, (r_weight, r_idx)) if return_routing else out


# ---------------------------------------------------------------------------------------------------
# the module
# ---------------------------------------------------------------------------------------------------
@register_notrace_module
class BiLevelRoutingAttention(nn.Module):
    """BiFormer's attention layer on NHWC input ``(B, H, W, dim)``.

    Args:
        dim: input/output channels; num_heads: heads (``qk_dim`` and ``dim`` divisible by it).
        n_win: regions per side; topk: routed regions per region.
        qk_dim: query/key width (default ``dim``); qk_scale: overrides ``qk_dim ** -0.5``.
        kv_downsample_mode: only ``'identity'`` (what every released model uses).
        param_routing: a learnable linear on the region descriptors (needs ``diff_routing``).
        diff_routing: let gradients flow through the routing descriptors; soft_routing: scale the
            routed keys/values by the routing weights (the release supports diff_routing only with it).
        side_dwconv: kernel of the depthwise conv on the values added to the output (0: none).
        auto_pad: zero-pad H and W (bottom/right) to a multiple of ``n_win``, crop the output back;
            without it such inputs raise ``ValueError``.
        backend: ``None``/``'auto'``, ``'triton'``, ``'torch'`` or ``'reference'`` (see the module doc).
        device, dtype: where and in which dtype the weights are created.
    """

    def __init__(self, dim: int, num_heads: int = 8, n_win: int = 7, qk_dim: Optional[int] = None,
                 qk_scale: Optional[float] = None, topk: int = 4, kv_downsample_mode: str = "identity",
                 param_routing: bool = False, diff_routing: bool = False, soft_routing: bool = False,
                 side_dwconv: int = 3, auto_pad: bool = False, backend: Optional[str] = None, device=None, dtype=None):
        super().__init__()
        op_name = "BiLevelRoutingAttention"
        _check_int(op_name, "dim", dim, 1)
        _check_int(op_name, "num_heads", num_heads, 1)
        _check_int(op_name, "n_win", n_win, 1)
        _check_int(op_name, "topk", topk, 1)
        _check_int(op_name, "side_dwconv", side_dwconv, 0)
        self.qk_dim = qk_dim or dim
        if self.qk_dim % num_heads or dim % num_heads:
            raise ValueError(f"{op_name}: qk_dim ({self.qk_dim}) and dim ({dim}) must be divisible by "
                             f"num_heads={num_heads}")
        if topk > n_win * n_win:
            raise ValueError(f"{op_name}: topk={topk} exceeds the number of regions n_win**2={n_win * n_win}")
        if kv_downsample_mode not in _KV_DOWNSAMPLE_MODES:
            raise ValueError(f"{op_name}: kv_downsample_mode must be one of {_KV_DOWNSAMPLE_MODES} (the released "
                             f"models' setting), got {kv_downsample_mode!r}")
        if param_routing and not diff_routing:
            raise ValueError(f"{op_name}: param_routing=True needs diff_routing=True (a learnable router must get "
                             f"gradients)")
        if diff_routing and not soft_routing:
            raise ValueError(f"{op_name}: diff_routing=True needs soft_routing=True (hard differentiable routing "
                             f"is not defined by the release)")
        check_backend_name(op_name, backend, ROUTING_BACKENDS)
        self.dim, self.num_heads, self.n_win, self.topk = dim, num_heads, n_win, topk
        self.scale = qk_scale or self.qk_dim ** -0.5
        self.diff_routing, self.soft_routing, self.auto_pad = diff_routing, soft_routing, auto_pad
        self.kv_downsample_mode = kv_downsample_mode
        self.backend = backend
        dd = dict(device=device, dtype=dtype)
        self.qkv = nn.Linear(dim, 2 * self.qk_dim + dim, **dd)
        self.router_proj = nn.Linear(self.qk_dim, self.qk_dim, **dd) if param_routing else None
        self.lepe = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim, **dd) \
            if side_dwconv > 0 else None
        self.proj = nn.Linear(dim, dim, **dd)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, qk_dim={self.qk_dim}, num_heads={self.num_heads}, n_win={self.n_win}, "
                f"topk={self.topk}, auto_pad={self.auto_pad}")

    def forward(self, x: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
        # the learned layers here; the op's Python front (checks, padding, backend choice) in ignored functions
        # that TorchScript calls as Python, positionally (it drops keywords of ignored calls); torch.fx keeps the
        # whole module as a leaf (a timm notrace module)
        H_in, W_in = x.shape[1], x.shape[2]
        x = _pad_to_regions(x, self.dim, self.n_win, self.auto_pad)
        q, k, v = self.qkv(x).split([self.qk_dim, self.qk_dim, self.dim], dim=-1)  # read in place by Triton
        q_region, k_region = _region_mean(q, self.n_win), _region_mean(k, self.n_win)
        if not self.diff_routing:
            q_region, k_region = q_region.detach(), k_region.detach()
        if self.router_proj is not None:
            q_region, k_region = self.router_proj(q_region), self.router_proj(k_region)
        out = _route_and_attend(q, k, v, q_region, k_region, self.n_win, self.topk, self.num_heads, self.scale,
                                self.soft_routing, backend if backend is not None else self.backend)
        if self.lepe is not None:
            out = out + self.lepe(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        out = self.proj(out)
        if out.shape[1] != H_in or out.shape[2] != W_in:
            out = out[:, :H_in, :W_in].contiguous()
        return out


@torch.jit.ignore
def _pad_to_regions(x: torch.Tensor, dim: int, n_win: int, auto_pad: bool) -> torch.Tensor:
    """The module's input check, and its bottom/right zero padding to a multiple of ``n_win``."""
    if x.dim() != 4 or x.shape[-1] != dim:
        raise ValueError(f"BiLevelRoutingAttention: x must be NHWC (B, H, W, {dim}), got {tuple(x.shape)}")
    H, W = x.shape[1:3]
    pad_b, pad_r = (-H) % n_win, (-W) % n_win
    if not (pad_b or pad_r):
        return x
    if not auto_pad:
        raise ValueError(f"BiLevelRoutingAttention: H and W ({H}, {W}) must be divisible by n_win={n_win}, or "
                         f"construct it with auto_pad=True")
    return F.pad(x, (0, 0, 0, pad_r, 0, pad_b))


@torch.jit.ignore
def _route_and_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_region: torch.Tensor,
                      k_region: torch.Tensor, n_win: int, topk: int, num_heads: int, scale: float, soft_routing: bool,
                      backend: Optional[str]) -> torch.Tensor:
    """The module's routing (on region descriptors already detached / projected) and routed attention."""
    backend = choose_backend("BiLevelRoutingAttention", backend, ROUTING_BACKENDS, device=q.device, dtype=q.dtype,
                             soft_routing=soft_routing)
    r_weight, r_idx = region_routing(q_region, k_region, topk=topk, scale=scale, diff_routing=True)
    return _routed_attention(backend=backend, query=q, key=k, value=v, r_idx=r_idx,
                             r_weight=r_weight if soft_routing else None, n_win=n_win, num_heads=num_heads,
                             scale=scale)
