"""Sparse attention over per-query key sets (Sparsifiner's connectivity), one front with three backends.

Layout (``F.scaled_dot_product_attention``'s): ``query`` ``(B, heads, Nq, D)``, ``key`` ``(B, heads, Nk, D)``,
``value`` ``(B, heads, Nk, Dv)``, ``indices`` ``(B, heads, Nq, K)`` integers in ``[0, Nk)``: query ``i`` of head
``h`` attends to keys ``indices[b, h, i, :]`` only,

    out[b, h, i] = sum_j softmax_j(scale * q_i . k_{idx_j}) v_{idx_j},   j = 0 .. K - 1.

Indices are meant to be distinct within a row (a top-k gives that); a repeated index counts once per
occurrence on the ``torch`` / ``triton`` paths and once in total on ``reference``. ``key_mask`` ``(B, Nk)``
(bool, True = live token) removes pruned tokens from every key set; a query left with no live key gets a zero
output (the release's ``nan_to_num`` of an all ``-inf`` row).

Backends (``backend=``):

* ``"torch"`` (default off CUDA): query tiles of ``tile`` rows; per tile the scores against all keys come
  from one BLAS matrix product, only the chosen ``K`` are kept (softmax over them, float32), and the output
  is the product of their scattered weights with ``value``. Memory ``O(Nq K + tile Nk)``: the ``Nq x Nk``
  scores never exist, forward or backward (a custom autograd function recomputes each tile). It does not
  gather the chosen keys: on a CPU, gathering ``K`` key and value rows per query (``O(Nq K D)`` traffic)
  measured 5x *slower* than the release's masked dense attention at N = 577, K = 145 (6 heads x 64, 1
  thread), while tiles of BLAS products are 2.2x faster than it (``tools/benchmark.py sparsifiner``).
* ``"triton"`` (default on CUDA): fused kernels (:mod:`vzoo.kernels.sparse_attention`) that read the chosen
  keys in place, online softmax, flash-style backward; ``O(Nq K)`` work.
* ``"reference"``: the release's masked dense computation (:func:`masked_dense_attention` on the
  ``Nq x Nk`` mask of the indices), which the other two are tested against.

:func:`softmax_with_policy` is the release's token-masked softmax (``Attention.softmax_with_policy``).
"""
from __future__ import annotations

from typing import Optional

import torch

from vzoo.kernels.sparse_attention import sparse_attention_triton

from ._backend import SPARSE_BACKENDS, choose_backend

__all__ = ["sparse_attention", "masked_dense_attention", "masked_attention_weights", "softmax_with_policy",
           "indices_to_mask", "capturing_graph"]

DEFAULT_TILE = 64  # query rows per BLAS tile of the torch path (32..256 measured alike at N = 577)


# ---------------------------------------------------------------------------------------------------
# the release's masked dense computation (the reference)
# ---------------------------------------------------------------------------------------------------
def capturing_graph() -> bool:
    """Whether the running forward is being recorded as a graph for deployment: the TorchScript tracer (and
    the ONNX exporter built on it) or ``torch.export`` (and the dynamo ONNX exporter). Data-dependent code
    (numpy's key choice, the sparse op's per-tile plan) is then replaced by graph ops. Not scriptable: call
    it inside ``if not torch.jit.is_scripting():``, whose body TorchScript does not compile."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()


def indices_to_mask(indices: torch.Tensor, num_keys: int, key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The boolean ``(B, heads, Nq, num_keys)`` connectivity of ``indices`` (and ``key_mask``)."""
    mask = torch.zeros(list(indices.shape[:-1]) + [num_keys], dtype=torch.bool, device=indices.device)
    # a tensor of True, not the scalar True: the tracer (ONNX export) has no scatter_ of a bool scalar
    mask.scatter_(-1, indices.long(), torch.ones(indices.shape, dtype=torch.bool, device=indices.device))
    if key_mask is not None:
        mask &= key_mask[:, None, None, :]
    return mask


def softmax_with_policy(attn: torch.Tensor, policy: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The release's softmax under a 0/1 ``policy`` (DynamicViT's): ``(exp(a - max) * policy + eps / N) /
    (sum + eps)`` in float32, returned in ``attn``'s dtype; every key keeps a weight of at least ``eps / N``."""
    n = attn.shape[-1]
    attn = attn - attn.amax(dim=-1, keepdim=True)
    weights = attn.float().exp() * policy.float()
    return ((weights + eps / n) / (weights.sum(dim=-1, keepdim=True) + eps)).type_as(attn)


def masked_attention_weights(query: torch.Tensor, key: torch.Tensor, attn_mask: torch.Tensor,
                             scale: Optional[float] = None, policy_eps: Optional[float] = None) -> torch.Tensor:
    """The release's attention weights under a connectivity mask ``attn_mask`` ``(B, heads, Nq, Nk)`` (bool or
    0/1): scores masked to ``-inf``, softmax, ``nan_to_num`` (rows with no key give zeros); with ``policy_eps``
    the softmax is :func:`softmax_with_policy` instead. Standard ops only (TorchScript, ONNX)."""
    if scale is None:
        scale = query.shape[-1] ** -0.5
    attn = (query @ key.transpose(-2, -1)) * scale
    if policy_eps is not None:
        return softmax_with_policy(attn, attn_mask, eps=policy_eps)
    return torch.nan_to_num(attn.masked_fill(~attn_mask.to(torch.bool), float("-inf")).softmax(dim=-1))


def masked_dense_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor,
                           scale: Optional[float] = None, policy_eps: Optional[float] = None,
                           return_attn: bool = False):
    """:func:`masked_attention_weights` times ``value``; ``return_attn``: also the weights."""
    attn = masked_attention_weights(query, key, attn_mask, scale=scale, policy_eps=policy_eps)
    out = attn @ value
    return (out, attn) if return_attn else out


# ---------------------------------------------------------------------------------------------------
# the torch path: query tiles of BLAS products, the chosen scores only kept
# ---------------------------------------------------------------------------------------------------
def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The softmax's dtype: float32 for half inputs, float64 for float64 ones (gradcheck)."""
    return torch.promote_types(dtype, torch.float32)


def _chosen_probs(scores_sel: torch.Tensor, valid: Optional[torch.Tensor]) -> torch.Tensor:
    """Softmax over the chosen keys (at least float32); rows without a live key give zeros."""
    s = scores_sel.to(_acc_dtype(scores_sel.dtype))
    if valid is not None:
        s = s.masked_fill(~valid, float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    e = (s - torch.where(torch.isfinite(m), m, torch.zeros_like(m))).exp()
    denom = e.sum(dim=-1, keepdim=True)
    return e / torch.where(denom > 0, denom, torch.ones_like(denom))


def _scatter(weights: torch.Tensor, idx: torch.Tensor, num_keys: int, dtype: torch.dtype) -> torch.Tensor:
    """``(..., K)`` weights at ``idx`` of a zero ``(..., num_keys)`` row block."""
    block = torch.zeros(*idx.shape[:-1], num_keys, dtype=dtype, device=idx.device)
    return block.scatter_add_(-1, idx, weights.to(dtype))


def _valid(key_mask, idx):
    if key_mask is None:
        return None
    B, H, T, K = idx.shape
    return key_mask[:, None, :].expand(B, H, -1).gather(-1, idx.reshape(B, H, T * K)).view(B, H, T, K)


def _torch_forward(q, k, v, idx, key_mask, scale, tile):
    Nq, Nk = q.shape[2], k.shape[2]
    out = q.new_empty(*q.shape[:-1], v.shape[-1])
    probs = torch.empty(idx.shape, dtype=_acc_dtype(q.dtype), device=q.device)
    kt = k.transpose(-2, -1)
    for s0 in range(0, Nq, tile):
        i = idx[:, :, s0:s0 + tile]
        p = _chosen_probs((q[:, :, s0:s0 + tile] @ kt).gather(-1, i) * scale, _valid(key_mask, i))
        probs[:, :, s0:s0 + tile] = p
        out[:, :, s0:s0 + tile] = _scatter(p, i, Nk, v.dtype) @ v
    return out, probs


def _torch_backward(q, k, v, idx, probs, dout, scale, tile):
    Nq, Nk = q.shape[2], k.shape[2]
    dq, dk, dv = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
    vt = v.transpose(-2, -1)
    for s0 in range(0, Nq, tile):
        i, p, do = idx[:, :, s0:s0 + tile], probs[:, :, s0:s0 + tile], dout[:, :, s0:s0 + tile]
        dp = (do @ vt).gather(-1, i).to(p.dtype)
        ds = p * (dp - (p * dp).sum(dim=-1, keepdim=True))
        ds_block = _scatter(ds, i, Nk, q.dtype)
        dq[:, :, s0:s0 + tile] = (ds_block @ k) * scale
        dk += (ds_block.transpose(-2, -1) @ q[:, :, s0:s0 + tile]) * scale
        dv += _scatter(p, i, Nk, v.dtype).transpose(-2, -1) @ do
    return dq, dk, dv


class _SparseAttentionTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, idx, key_mask, scale, tile):
        out, probs = _torch_forward(q, k, v, idx=idx, key_mask=key_mask, scale=scale, tile=tile)
        ctx.save_for_backward(q, k, v, idx, probs)
        ctx.scale, ctx.tile = scale, tile
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, idx, probs = ctx.saved_tensors
        dq, dk, dv = _torch_backward(q, k, v, idx=idx, probs=probs, dout=dout.contiguous(), scale=ctx.scale,
                                     tile=ctx.tile)
        return dq, dk, dv, None, None, None, None


# ---------------------------------------------------------------------------------------------------
# the front
# ---------------------------------------------------------------------------------------------------
def _check(op, query, key, value, indices, key_mask):
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4 or not t.is_floating_point():
            raise ValueError(f"{op}: {name} must be a 4-D floating-point tensor (B, heads, N, head_dim), got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
        if t.dtype != query.dtype or t.device != query.device:
            raise ValueError(f"{op}: {name} is {t.dtype} on {t.device}, query is {query.dtype} on {query.device}")
    B, H, Nq, D = query.shape
    if key.shape[:2] != (B, H) or key.shape[-1] != D or value.shape[:3] != key.shape[:3]:
        raise ValueError(f"{op}: shapes do not fit: query {tuple(query.shape)} (B, heads, Nq, D), key "
                         f"{tuple(key.shape)} (B, heads, Nk, D), value {tuple(value.shape)} (B, heads, Nk, Dv)")
    if not isinstance(indices, torch.Tensor) or indices.dtype not in (torch.int32, torch.int64) \
            or indices.dim() != 4 or indices.shape[:3] != (B, H, Nq) or indices.shape[-1] < 1:
        raise ValueError(f"{op}: indices must be an int32/int64 tensor (B, heads, Nq, K) = ({B}, {H}, {Nq}, K >= 1), "
                         f"got {getattr(indices, 'dtype', type(indices).__name__)} "
                         f"{tuple(indices.shape) if isinstance(indices, torch.Tensor) else ''}")
    if indices.device != query.device:
        raise ValueError(f"{op}: indices are on {indices.device}, query on {query.device}")
    Nk = key.shape[2]
    # a data-dependent check: eager only (torch.compile cannot guard on tensor values without a graph break)
    if not torch.compiler.is_compiling() and indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= Nk):
        raise ValueError(f"{op}: indices must lie in [0, {Nk}) (the keys), got [{int(indices.min())}, "
                         f"{int(indices.max())}]")
    if key_mask is not None and (not isinstance(key_mask, torch.Tensor) or key_mask.dtype != torch.bool
                                 or tuple(key_mask.shape) != (B, Nk)):
        raise ValueError(f"{op}: key_mask must be a bool tensor (B, Nk) = ({B}, {Nk}), got "
                         f"{getattr(key_mask, 'dtype', type(key_mask).__name__)} "
                         f"{tuple(getattr(key_mask, 'shape', ()))}")


def sparse_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, indices: torch.Tensor,
                     scale: Optional[float] = None, key_mask: Optional[torch.Tensor] = None,
                     backend: Optional[str] = None, *, tile: Optional[int] = None) -> torch.Tensor:
    """Attention of every query over its own ``K`` keys (see the module docstring for layouts).

    Args:
        query, key, value: ``(B, heads, Nq, D)``, ``(B, heads, Nk, D)``, ``(B, heads, Nk, Dv)``.
        indices: ``(B, heads, Nq, K)`` int32/int64 key positions, distinct within a row.
        scale: score scale, default ``D ** -0.5``.
        key_mask: optional ``(B, Nk)`` bool, False for pruned tokens (never attended to).
        backend: ``None`` / ``"auto"`` (Triton on CUDA, torch elsewhere), ``"torch"``, ``"triton"``,
            ``"reference"``; a named backend that cannot run here raises ``ValueError`` saying why.
        tile: query rows per tile of the torch path (default 64).

    Returns:
        ``(B, heads, Nq, Dv)`` in the dtype of ``query``; differentiable in query, key and value.
    """
    op = "sparse_attention"
    _check(op, query, key, value, indices, key_mask)
    if scale is None:
        scale = query.shape[-1] ** -0.5
    backend = choose_backend(op, backend, SPARSE_BACKENDS, device=query.device, dtype=query.dtype)
    if backend == "reference":
        return masked_dense_attention(query, key, value, indices_to_mask(indices, key.shape[2], key_mask=key_mask),
                                      scale=scale)
    if backend == "triton":
        return sparse_attention_triton(query, key, value, indices, scale=float(scale), key_mask=key_mask)
    tile = DEFAULT_TILE if tile is None else int(tile)
    # autograd.Function.apply takes its arguments by position only
    return _SparseAttentionTorch.apply(query, key, value, indices.long(), key_mask, float(scale), tile)
