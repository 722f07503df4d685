"""Fused bi-level routing attention (Triton): forward and backward, fp32 / fp16 / bf16.

Used through :func:`vzoo.layers.routed_attention` and :class:`vzoo.layers.BiLevelRoutingAttention`
(``backend="triton"``, the default for CUDA tensors); semantics are those of the ``"reference"``
backend there (the official release's math), which the kernels are tested against.

Design (flash-attention style; no attention matrix and no gathered key/value tensor in memory):

* forward: one program = a block of ``BLOCK_T`` tokens of one query region, one (batch, head). It walks
  the ``topk * T`` routed keys in blocks of ``BLOCK_N``; each key's address is computed from the routing
  index (region → rows/columns of the NHWC tensor), so keys and values are read in place, straight from
  the ``qkv`` projection's output (strided views are fine). Online softmax in the exp2 domain; the
  log-sum-exp is kept for the backward.
* backward: ``delta = rowsum(dO * O)`` in PyTorch; ``dQ`` in a query-region kernel that re-walks the
  routed keys; ``dK, dV`` in a key-region kernel that walks the query regions routed *to* it (the
  inverse routing, a CSR list built on the device with ``argsort``/``bincount``), so every gradient is
  written once, without atomics (deterministic).

The forward and the backward are the custom ops ``vzoo::bra_fwd`` (out, lse) and ``vzoo::bra_bwd`` (with fake
implementations and the autograd wiring), so ``torch.compile`` keeps them whole in its graph.

Tile sizes are autotuned on the GPU (``VZOO_BRA_TUNE=0``: one config). Triton is imported lazily; the
kernels also run on the CPU under ``TRITON_INTERPRET=1`` (set before triton is first imported).
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch

from .runtime import LOG2E, cannot_run_triton, cdiv, empty_contiguous, interpreting, pow2_block, require

__all__ = ["cannot_run", "bra_triton", "routing_csr"]


def cannot_run(device: torch.device, dtype: torch.dtype, soft_routing: bool = False) -> Optional[str]:
    """Why the kernels cannot run routed attention on such tensors; None when they can."""
    if soft_routing:
        return "the kernels do not implement soft routing (r_weight; no released model uses it)"
    return cannot_run_triton(device=device, dtype=dtype)


@functools.lru_cache(maxsize=1)
def _kernels():
    from . import bra_kernels as K
    return K


def routing_csr(r_idx: torch.Tensor):
    """Inverse routing: for every key region, the query regions that route to it.

    ``r_idx`` ``(B, R, topk)`` → ``offsets`` ``(B, R + 1)`` and ``qreg`` ``(B, R * topk)`` (int32): the
    query regions routed to key region ``k`` of image ``b`` are ``qreg[b, offsets[b, k]:offsets[b, k + 1]]``.
    """
    B, R, topk = r_idx.shape
    flat = r_idx.reshape(B, R * topk).long()
    order = torch.argsort(flat, dim=1, stable=True)
    qreg = (order // topk).to(torch.int32)
    counts = torch.zeros(B, R, dtype=torch.int64, device=r_idx.device).scatter_add_(1, flat, torch.ones_like(flat))
    offsets = torch.zeros(B, R + 1, dtype=torch.int32, device=r_idx.device)
    offsets[:, 1:] = counts.cumsum(1).to(torch.int32)
    return offsets.contiguous(), qreg.contiguous()


def _chan_contig(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _geometry(q, v, n_win, num_heads):
    B, H, W, C = q.shape
    RH, RW = H // n_win, W // n_win
    T = RH * RW
    D, DV = C // num_heads, v.shape[-1] // num_heads
    return B, H, W, RH, RW, T, D, DV


def _meta(q, T, D, DV):
    return dict(BLOCK_T=min(64, pow2_block(T)), BLOCK_D=pow2_block(D), BLOCK_DV=pow2_block(DV),
                PREC="ieee" if q.dtype == torch.float32 else "tf32",
                DOT_F32=interpreting() and q.dtype == torch.bfloat16)


def _empty_outputs(q, v, n_win, num_heads):
    """Uninitialised ``(out, lse)`` of a forward (also the fake tensors of ``vzoo::bra_fwd``)."""
    B, H, W = q.shape[:3]
    return q.new_empty(B, H, W, v.shape[-1]), q.new_empty(B, num_heads, H, W, dtype=torch.float32)


def _forward(q, k, v, idx, n_win, num_heads, scale):
    K = _kernels()
    B, H, W, RH, RW, T, D, DV = _geometry(q, v, n_win, num_heads)
    topk = idx.shape[-1]
    o, lse = _empty_outputs(q, v=v, n_win=n_win, num_heads=num_heads)
    meta = _meta(q, T, D, DV)
    grid = (B * n_win * n_win * cdiv(T, meta["BLOCK_T"]), num_heads)
    K.bra_fwd[grid](q, k, v, o, lse, idx,
                    *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3], *lse.stride()[:3],
                    n_win, RH, RW, T, topk, D, DV, scale * LOG2E, **meta)
    return o, lse


def _backward(q, k, v, o, lse, idx, do, n_win, num_heads, scale):
    K = _kernels()
    B, H, W, RH, RW, T, D, DV = _geometry(q, v, n_win, num_heads)
    topk = idx.shape[-1]
    do = do.contiguous()  # shares o's (contiguous) strides
    delta = (do.float() * o.float()).view(B, H, W, num_heads, DV).sum(-1).permute(0, 3, 1, 2).contiguous()
    dq, dk, dv = empty_contiguous(q, k, v)
    meta = _meta(q, T, D, DV)
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3], *lse.stride()[:3])
    geo = (n_win, RH, RW, T, topk, D, DV, scale * LOG2E, scale)
    grid = (B * n_win * n_win * cdiv(T, meta["BLOCK_T"]), num_heads)
    K.bra_bwd_dq[grid](q, k, v, do, lse, delta, dq, idx, *strides, *geo, **meta)
    offsets, qreg = routing_csr(idx)
    K.bra_bwd_dkv[grid](q, k, v, do, lse, delta, dk, dv, offsets, qreg, *strides, *geo, **meta)
    return dq, dk, dv


# ---------------------------------------------------------------------------------------------------
# custom ops: torch.compile sees opaque ops with fake implementations, never the launchers above
# ---------------------------------------------------------------------------------------------------
@torch.library.custom_op("vzoo::bra_fwd", mutates_args=())
def _bra_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: torch.Tensor, n_win: int, num_heads: int,
             scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(out, lse)`` of routed attention; NHWC inputs with unit channel stride, int32 ``idx``."""
    return _forward(q, k, v, idx=idx, n_win=n_win, num_heads=num_heads, scale=scale)


@_bra_fwd.register_fake
def _bra_fwd_fake(q, k, v, idx, n_win, num_heads, scale):
    return _empty_outputs(q, v=v, n_win=n_win, num_heads=num_heads)


@torch.library.custom_op("vzoo::bra_bwd", mutates_args=())
def _bra_bwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor,
             idx: torch.Tensor, do: torch.Tensor, n_win: int, num_heads: int,
             scale: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dq, dk, dv)`` of routed attention."""
    return _backward(q, k, v, o=o, lse=lse, idx=idx, do=do, n_win=n_win, num_heads=num_heads, scale=scale)


@_bra_bwd.register_fake
def _bra_bwd_fake(q, k, v, o, lse, idx, do, n_win, num_heads, scale):
    return empty_contiguous(q, k, v)


def _bra_setup_context(ctx, inputs, output):
    q, k, v, idx, n_win, num_heads, scale = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, idx)
    ctx.geometry = dict(n_win=n_win, num_heads=num_heads, scale=scale)
    ctx.mark_non_differentiable(lse)


def _bra_backward(ctx, do, dlse):
    q, k, v, o, lse, idx = ctx.saved_tensors
    dq, dk, dv = _bra_bwd(q, k, v, o=o, lse=lse, idx=idx, do=do, **ctx.geometry)
    return dq, dk, dv, None, None, None, None


_bra_fwd.register_autograd(_bra_backward, setup_context=_bra_setup_context)


def bra_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, r_idx: torch.Tensor, n_win: int,
               num_heads: int, scale: float) -> torch.Tensor:
    """Routed attention with the fused kernels; layouts of :func:`vzoo.layers.routed_attention`
    (``q``/``k`` ``(B, H, W, qk_dim)``, ``v`` ``(B, H, W, dim)``, NHWC views with unit channel stride
    are read in place; ``H``, ``W`` divisible by ``n_win``). Returns a contiguous ``(B, H, W, dim)``."""
    require("bra_triton", cannot_run(device=q.device, dtype=q.dtype))
    idx = r_idx.to(torch.int32).contiguous()
    o, _ = _bra_fwd(_chan_contig(q), _chan_contig(k), _chan_contig(v), idx=idx, n_win=int(n_win),
                    num_heads=int(num_heads), scale=float(scale))
    return o
