"""Fused sparse attention over per-query key sets (Triton): forward and backward, fp32 / fp16 / bf16.

Used through :func:`vzoo.layers.sparse_attention` (``backend="triton"``, the default for CUDA tensors);
semantics are those of its ``"reference"`` backend (the release's masked dense attention), which the
kernels are tested against.

Design (no attention matrix and no gathered key/value tensor in memory):

* forward: one program = one query row of one (batch, head); it walks the query's ``K`` chosen keys in
  blocks of ``BLOCK_K``, reading each key and value row in place from its index, with an online softmax in
  the exp2 domain; the log-sum-exp is kept for the backward (``+inf`` for a row without a live key).
* backward: ``delta = rowsum(dO * O)`` in PyTorch; ``dQ`` in a query-row kernel that re-walks the chosen
  keys; ``dK, dV`` in a key-row kernel that walks the queries that chose the key (the inverse of the index,
  a CSR list built on the device with ``argsort``), so every gradient is written once, without atomics.

The forward and the backward are the custom ops ``vzoo::sparse_attention_fwd`` (out, lse) and
``vzoo::sparse_attention_bwd`` (with fake implementations and the autograd wiring), so ``torch.compile`` keeps
them whole in its graph.

``BLOCK_K`` and warps are autotuned on the GPU (``VZOO_SPARSE_TUNE=0``: one config). Triton is imported
lazily; the kernels also run on the CPU under ``TRITON_INTERPRET=1`` (set before triton is first imported).
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch

from .runtime import LOG2E, cannot_run_triton, empty_contiguous, empty_out_lse, pow2_block, require

__all__ = ["cannot_run", "sparse_attention_triton", "inverse_index_csr"]


def cannot_run(device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """Why the kernels cannot run sparse attention on such tensors; None when they can."""
    return cannot_run_triton(device=device, dtype=dtype)


@functools.lru_cache(maxsize=1)
def _kernels():
    from . import sparse_attention_kernels as K
    return K


def inverse_index_csr(idx: torch.Tensor, num_keys: int):
    """For every key, the queries that chose it: ``idx`` ``(B, H, Nq, K)`` → ``offsets`` ``(B*H, num_keys + 1)``
    and ``qrow`` ``(B*H, Nq*K)`` (int32); the queries of key ``n`` in (batch, head) ``bh`` are
    ``qrow[bh, offsets[bh, n]:offsets[bh, n + 1]]`` (a query that chose ``n`` twice appears twice)."""
    B, H, Nq, K = idx.shape
    flat = idx.reshape(B * H, Nq * K).long()
    order = torch.argsort(flat, dim=1, stable=True)
    qrow = (order // K).to(torch.int32)
    counts = torch.zeros(B * H, num_keys, dtype=torch.int64, device=idx.device)
    counts.scatter_add_(1, flat, torch.ones_like(flat))
    offsets = torch.zeros(B * H, num_keys + 1, dtype=torch.int32, device=idx.device)
    offsets[:, 1:] = counts.cumsum(1).to(torch.int32)
    return offsets.contiguous(), qrow.contiguous()


def _chan_contig(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _meta(q, v, key_mask):
    return dict(HAS_MASK=key_mask is not None, BLOCK_D=pow2_block(q.shape[-1]), BLOCK_DV=pow2_block(v.shape[-1]))


def _mask_arg(key_mask, q):
    # a dummy pointer when there is no mask (HAS_MASK=False never reads it)
    mask = key_mask if key_mask is not None else torch.ones(1, dtype=torch.bool, device=q.device)
    return mask.to(torch.int8).contiguous()


def _forward(q, k, v, idx, key_mask, scale):
    K = _kernels()
    B, H, Nq, D = q.shape
    Nk, KSEL = k.shape[2], idx.shape[-1]
    o, lse = empty_out_lse(q, v=v)
    K.sparse_fwd[(B * H * Nq,)](q, k, v, idx, _mask_arg(key_mask, q), o, lse,
                                *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3],
                                *idx.stride()[:3], H, Nq, Nk, KSEL, D, v.shape[-1], scale * LOG2E,
                                **_meta(q, v, key_mask))
    return o, lse


def _backward(q, k, v, o, lse, idx, key_mask, do, scale):
    K = _kernels()
    B, H, Nq, D = q.shape
    Nk, KSEL, DV = k.shape[2], idx.shape[-1], v.shape[-1]
    do = do.contiguous()  # shares o's (contiguous) strides
    delta = (do.float() * o.float()).sum(-1).contiguous()
    dq, dk, dv = empty_contiguous(q, k, v)
    kmask = _mask_arg(key_mask, q)
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3])
    geo = (H, Nq, Nk, KSEL, D, DV, scale * LOG2E, scale)
    meta = _meta(q, v, key_mask)
    K.sparse_bwd_dq[(B * H * Nq,)](q, k, v, idx, kmask, do, lse, delta, dq, *strides, *idx.stride()[:3],
                                   *dq.stride()[:3], *geo, **meta)
    offsets, qrow = inverse_index_csr(idx, Nk)
    K.sparse_bwd_dkv[(B * H * Nk,)](q, k, v, kmask, do, lse, delta, dk, dv, offsets, qrow, *strides,
                                    *dk.stride()[:3], *dv.stride()[:3], *geo, **meta)
    return dq, dk, dv


# ---------------------------------------------------------------------------------------------------
# custom ops: torch.compile sees opaque ops with fake implementations, never the launchers above
# ---------------------------------------------------------------------------------------------------
@torch.library.custom_op("vzoo::sparse_attention_fwd", mutates_args=())
def _sparse_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: torch.Tensor,
                key_mask: Optional[torch.Tensor], scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(out, lse)`` of sparse attention; inputs with unit channel stride, int32 ``idx``."""
    return _forward(q, k, v, idx=idx, key_mask=key_mask, scale=scale)


@_sparse_fwd.register_fake
def _sparse_fwd_fake(q, k, v, idx, key_mask, scale):
    return empty_out_lse(q, v=v)


@torch.library.custom_op("vzoo::sparse_attention_bwd", mutates_args=())
def _sparse_bwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor,
                idx: torch.Tensor, key_mask: Optional[torch.Tensor], do: torch.Tensor,
                scale: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dq, dk, dv)`` of sparse attention."""
    return _backward(q, k, v, o=o, lse=lse, idx=idx, key_mask=key_mask, do=do, scale=scale)


@_sparse_bwd.register_fake
def _sparse_bwd_fake(q, k, v, o, lse, idx, key_mask, do, scale):
    return empty_contiguous(q, k, v)


def _sparse_setup_context(ctx, inputs, output):
    q, k, v, idx, key_mask, scale = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, idx, key_mask)
    ctx.scale = scale
    ctx.mark_non_differentiable(lse)


def _sparse_backward(ctx, do, dlse):
    q, k, v, o, lse, idx, key_mask = ctx.saved_tensors
    dq, dk, dv = _sparse_bwd(q, k, v, o=o, lse=lse, idx=idx, key_mask=key_mask, do=do, scale=ctx.scale)
    return dq, dk, dv, None, None, None


_sparse_fwd.register_autograd(_sparse_backward, setup_context=_sparse_setup_context)


def sparse_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, indices: torch.Tensor, scale: float,
                            key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sparse attention with the fused kernels; layouts of :func:`vzoo.layers.sparse_attention` (views with
    unit channel stride are read in place). Returns a contiguous ``(B, heads, Nq, Dv)``."""
    require("sparse_attention_triton", cannot_run(device=q.device, dtype=q.dtype))
    idx = indices.to(torch.int32).contiguous()
    o, _ = _sparse_fwd(_chan_contig(q), _chan_contig(k), _chan_contig(v), idx=idx, key_mask=key_mask,
                       scale=float(scale))
    return o
