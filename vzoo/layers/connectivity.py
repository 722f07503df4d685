"""Sparsifiner's connectivity predictor: a low-rank attention that chooses, per query, the keys it attends to.

Rao et al.'s "Sparsifiner: Learning Sparse Instance-Dependent Attention for Efficient Vision Transformers"
(CVPR 2023, arXiv:2303.13755; ``lim142857/Sparsifiner``, ``MaskPredictor`` in ``src/models/sparsifiner.py``).
Per head, queries and keys are projected to ``head_dim / reduce_c_factor`` channels, the keys' token axis to
``num_tokens / reduce_n_factor`` basis tokens (``proj_n``); the softmax of the image queries' scores against
them are the basis coefficients, and ``coefficients @ basis`` (``proj_back_n``) approximates the attention
of every image query over all ``num_tokens`` keys. Outside attention-reconstruction training, the basis is
``|basis|`` thresholded at ``basis_threshold``, only the ``basis_coef_topk`` largest coefficients of a row are
kept (or those above ``basis_coef_threshold``), and each image query keeps the ``ceil(attn_keep_rate *
num_tokens)`` keys of highest approximate attention (or those above ``attn_score_threshold``). The class
token's query is left out: it attends to every key.

The choice is numerically delicate (top-k margins of ~1e-7 relative), so the predictor runs in float32 and
in the release's order of operations whatever the model's dtype; its parameter names are the release's.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import trunc_normal_

from .sparse_attention import capturing_graph

__all__ = ["ConnectivityPredictor", "Connectivity", "topk_indices", "zero_pruned_tokens"]


class Connectivity(NamedTuple):
    """What :class:`ConnectivityPredictor` returns for the image queries (all but the class token).

    ``approx_attn`` ``(B, heads, N - 1, N)`` float32, the low-rank attention (differentiable in
    reconstruction mode); ``indices`` ``(B, heads, N - 1, budget)`` the chosen keys (top-k rule) or None;
    ``mask`` ``(B, heads, N - 1, N)`` bool, the chosen keys (threshold rule), or None with indices.
    """
    approx_attn: torch.Tensor
    indices: Optional[torch.Tensor]
    mask: Optional[torch.Tensor]


def topk_indices(x: torch.Tensor, k: int) -> torch.Tensor:
    """The positions ``torch.topk(x, k, sorted=False)`` chooses in each row (last dim), in any order.

    The release's key choice is ``torch.topk``; on the CPU in eager mode numpy's ``argpartition`` finds the
    same sets 2.6-3x faster (1 thread: 8.2 vs 21.4 ms at (1, 6, 576, 577), k = 145, Sparsifiner/DeiT-S at
    384²). The two break exact ties at the k-th value differently (softmax coefficients of near-uniform rows
    do tie in float32: one row in ~2,000 in ``tools/parity.py sparsifiner``, enough for a 5e-4 relative
    difference in the logits), so every row where the k-th value is not strictly above the rest (or holds
    a NaN) is chosen again by ``torch.topk`` itself. CUDA, TorchScript, torch.compile and graph capture
    (tracing, ONNX, torch.export: :func:`~vzoo.layers.capturing_graph`) use torch.topk (TopK in ONNX).
    """
    if not torch.jit.is_scripting():  # (TorchScript skips this block: numpy cannot be scripted)
        # nor traced: it would become a constant
        if x.device.type == "cpu" and not torch.compiler.is_compiling() and not capturing_graph() \
                and k < x.shape[-1]:
            return _topk_indices_numpy(x, k)
    return torch.topk(x, k, sorted=False)[1]


def zero_pruned_tokens(x: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, heads, N, C)`` with the image tokens that ``token_mask`` ``(B, N - 1)`` marks False (pruned)
    zeroed; the class token (first) is kept, as in the release."""
    return torch.cat([x[:, :, :1], x[:, :, 1:].masked_fill(~token_mask[:, None, :, None], 0.)], dim=2)


def _threshold(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """``F.threshold(x, threshold, 0.)`` (entries at or below ``threshold`` become 0), written as a masked fill:
    ONNX export has no ``threshold`` with a non-zero threshold."""
    return x.masked_fill(x <= threshold, 0.)


def _topk_indices_numpy(x: torch.Tensor, k: int) -> torch.Tensor:
    n = x.shape[-1]
    xd = x.detach().contiguous()
    idx = torch.from_numpy(np.ascontiguousarray(np.argpartition(xd.numpy(), n - k, axis=-1)[..., n - k:]))
    kth = xd.gather(-1, idx).amin(dim=-1, keepdim=True)
    redo = (xd >= kth).sum(dim=-1) != k  # a tie at the k-th value, or a NaN (compares False)
    if bool(redo.any()):
        rows = redo.nonzero(as_tuple=True)
        idx[rows] = torch.topk(xd[rows], k, sorted=False)[1]
    return idx


class ConnectivityPredictor(nn.Module):
    """Args:
        dim: model width (``num_heads * head_dim``).
        num_heads: attention heads.
        num_tokens: tokens per image including the class token (fixed: ``proj_n`` has a row per token).
        attn_keep_rate: fraction of the ``num_tokens`` keys each image query keeps (top-k rule).
        reduce_n_factor, reduce_c_factor: token and channel reductions of the low-rank attention (release
            default config: 6 and 2).
        share_inout_proj: one matrix for ``proj_n`` and ``proj_back_n``.
        qk_scale: score scale; the release's default is ``num_heads ** -0.5`` (sic: heads, not channels).
        basis_threshold: ``|basis|`` entries at or below it become 0 (release config: 2e-2).
        basis_coef_topk: keep the largest coefficients per row (release config: 8; all when there are no more
            basis tokens than that); None: threshold instead.
        basis_coef_threshold: coefficients at or below it become 0 when ``basis_coef_topk`` is None.
        attn_score_topk: keep ``ceil(attn_keep_rate * num_tokens)`` keys per query; False: the keys whose
            approximate attention exceeds ``attn_score_threshold`` (a mask, for the masked dense path only).
    """

    def __init__(self, dim: int, num_heads: int = 8, num_tokens: int = 197, attn_keep_rate: float = 0.25,
                 reduce_n_factor: float = 6, reduce_c_factor: float = 2, share_inout_proj: bool = False,
                 qk_scale: Optional[float] = None, basis_threshold: float = 2e-2, basis_coef_topk: Optional[int] = 8,
                 basis_coef_threshold: float = 5e-2, attn_score_topk: bool = True, attn_score_threshold: float = 1e-4,
                 device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        if not 0 < attn_keep_rate <= 1:
            raise ValueError(f"ConnectivityPredictor: attn_keep_rate must be in (0, 1], got {attn_keep_rate}")
        self.num_tokens, self.num_heads = num_tokens, num_heads
        head_dim = dim // num_heads
        reduced_c, reduced_n = int(head_dim // reduce_c_factor), int(num_tokens // reduce_n_factor)
        if reduced_c < 1 or reduced_n < 1:
            raise ValueError(f"ConnectivityPredictor: reductions leave nothing (head_dim {head_dim} / "
                             f"{reduce_c_factor}, num_tokens {num_tokens} / {reduce_n_factor})")
        self.scale = qk_scale or num_heads ** -0.5
        self.proj_c_q = nn.Linear(head_dim, reduced_c, **dd)
        self.proj_c_k = nn.Linear(head_dim, reduced_c, **dd)
        self.proj_n = nn.Parameter(torch.zeros(num_tokens, reduced_n, **dd))
        self.share_inout_proj = share_inout_proj
        self.proj_back_n = None if share_inout_proj else nn.Parameter(torch.zeros(num_tokens, reduced_n, **dd))
        self.attn_budget = math.ceil(attn_keep_rate * num_tokens)
        self.basis_threshold, self.basis_coef_topk = basis_threshold, basis_coef_topk
        self.basis_coef_threshold = basis_coef_threshold
        self.attn_score_topk, self.attn_score_threshold = attn_score_topk, attn_score_threshold
        if not attn_score_topk and attn_score_threshold <= 0:
            raise ValueError("ConnectivityPredictor: attn_score_topk=False needs attn_score_threshold > 0")
        self.init_weights()

    def init_weights(self) -> None:
        """The release's initialisation (its model's ``_init_weights`` for the linears)."""
        for p in (self.proj_n, self.proj_back_n):
            if p is not None and not p.is_meta:
                trunc_normal_(p, std=.02)
        for lin in (self.proj_c_q, self.proj_c_k):
            if not lin.weight.is_meta:
                trunc_normal_(lin.weight, std=.02)
                nn.init.zeros_(lin.bias)

    def _basis_out(self) -> torch.Tensor:
        return self.proj_n if self.proj_back_n is None else self.proj_back_n

    def approx_attention(self, q: torch.Tensor, k: torch.Tensor, token_mask: Optional[torch.Tensor] = None,
                         reconstruct: bool = False) -> torch.Tensor:
        """Low-rank attention of the image queries ``(B, heads, N - 1, N)`` (float32) from ``q``, ``k``
        ``(B, heads, N, head_dim)``; ``reconstruct``: the training form (raw basis, dense coefficients)."""
        torch._assert(q.shape[2] == self.num_tokens, "ConnectivityPredictor: token count differs from num_tokens")
        lin = self.proj_c_q
        q = F.linear(q.float(), lin.weight.float(), lin.bias.float())
        lin = self.proj_c_k
        k = F.linear(k.float(), lin.weight.float(), lin.bias.float())
        if token_mask is not None:
            q, k = zero_pruned_tokens(q, token_mask), zero_pruned_tokens(k, token_mask)
        k = k.permute(0, 1, 3, 2) @ self.proj_n.float()  # (B, heads, c, basis tokens)
        basis = self._basis_out().float().permute(1, 0)
        if not reconstruct:
            basis = _threshold(basis.abs(), self.basis_threshold)
        coef = ((q @ k) * self.scale)[:, :, 1:].softmax(dim=-1)  # (B, heads, N - 1, basis tokens)
        if not reconstruct:
            if self.basis_coef_topk and self.basis_coef_topk < coef.shape[-1]:  # (no fewer basis tokens: keep all)
                top_idx = topk_indices(coef, self.basis_coef_topk)
                coef = torch.zeros_like(coef).scatter_(-1, top_idx, coef.gather(-1, top_idx))
            elif self.basis_coef_threshold > 0:
                coef = _threshold(coef, self.basis_coef_threshold)
        return coef @ basis

    def forward(self, q: torch.Tensor, k: torch.Tensor, token_mask: Optional[torch.Tensor] = None,
                num_live_tokens: Optional[int] = None) -> Connectivity:
        """The keys each image query attends to (inference form).

        ``token_mask`` ``(B, N - 1)`` bool (False: pruned image token, never chosen), with
        ``num_live_tokens`` its number of True per row: the budget is then at most that, as in the release.
        """
        approx = self.approx_attention(q, k, token_mask=token_mask)
        score = approx
        if token_mask is not None:
            pruned = ~token_mask[:, None, None, :]
            score = torch.cat([approx[..., :1], approx[..., 1:].masked_fill(pruned, float("-inf"))], dim=-1)
        if not self.attn_score_topk:
            return Connectivity(approx, None, score > self.attn_score_threshold)
        budget = self.attn_budget if num_live_tokens is None else min(self.attn_budget, num_live_tokens)
        return Connectivity(approx, topk_indices(score, budget), None)
