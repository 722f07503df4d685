"""Token reorganization: EViT's keep-the-attentive, fuse-the-rest step (Liang et al., "Not All Patches
are What You Need: Expediting Vision Transformers via Token Reorganizations", ICLR 2022, arXiv:2202.07800).

Layout and semantics, stated once:

* ``x``: ``(B, P + N, C)`` tokens of one ViT layer: ``P`` prefix tokens (class token first, then any
  register/distillation tokens) followed by ``N`` image tokens (which may include a token fused at an
  earlier layer: it competes like any other).
* ``cls_attn``: ``(B, N)`` the class token's softmax attention to the image tokens, averaged over heads.
* ``k = ceil(keep_rate * N)`` image tokens with the largest ``cls_attn`` are kept, in descending order of
  attention (``torch.topk(..., sorted=True)``, as the release does); the prefix tokens stay in front.
* ``fuse_token=True`` appends one more token: the sum of the other ``N - k`` image tokens weighted by
  their ``cls_attn`` (the weights are not renormalised, as in the release).
* If ``k == N`` nothing changes (no fused token either).

Returns the new tokens ``(B, P + k [+ 1], C)`` and ``kept_idx`` ``(B, k)``: positions of the kept
tokens among the ``N`` image tokens of ``x`` (for visualization, see ``tools/visualize_tokens.py``).
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import nn

__all__ = ["kept_token_count", "reorganize_tokens", "TokenReorganization"]


def kept_token_count(num_tokens: int, keep_rate: float) -> int:
    """Image tokens kept out of ``num_tokens``: ``math.ceil(keep_rate * num_tokens)``, in Python floats
    exactly as the release computes it (so ``0.55 * 100 = 55.00000000000001`` keeps 56)."""
    if not 0.0 < keep_rate <= 1.0:
        raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate}")
    return math.ceil(keep_rate * num_tokens)


def reorganize_tokens(
        x: torch.Tensor,
        cls_attn: torch.Tensor,
        keep_rate: float,
        fuse_token: bool = False,
        num_prefix_tokens: int = 1,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Keep the ``ceil(keep_rate * N)`` image tokens the class token attends to most and optionally fuse
    the rest into one token (see the module docstring for shapes). Returns ``(tokens, kept_idx)``."""
    if x.dim() != 3 or cls_attn.dim() != 2:
        raise ValueError(f"reorganize_tokens: x must be (B, P+N, C) and cls_attn (B, N), got "
                         f"{list(x.shape)} and {list(cls_attn.shape)}")
    B, L, C = x.shape
    N = L - num_prefix_tokens
    if cls_attn.shape[0] != B or cls_attn.shape[1] != N:
        raise ValueError(f"reorganize_tokens: cls_attn must be (B, N) = ({B}, {N}) for x {list(x.shape)} with "
                         f"{num_prefix_tokens} prefix token(s), got {list(cls_attn.shape)}")
    k = kept_token_count(N, keep_rate)
    if k >= N:
        return x, torch.arange(N, device=x.device).expand(B, N)
    kept_idx = cls_attn.topk(k, dim=1, largest=True, sorted=True).indices
    tokens = x[:, num_prefix_tokens:]
    kept = tokens.gather(1, kept_idx.unsqueeze(-1).expand(-1, -1, C))
    parts = [x[:, :num_prefix_tokens], kept]
    if fuse_token:
        # the dropped tokens' attention (kept ones zeroed) as one weight row: a (1, N) x (N, C) product
        weights = cls_attn.scatter(1, kept_idx, 0.0).to(x.dtype)
        parts.append(torch.bmm(weights.unsqueeze(1), tokens))
    return torch.cat(parts, dim=1), kept_idx


class TokenReorganization(nn.Module):
    """:func:`reorganize_tokens` with its settings held (``keep_rate`` may be changed between calls,
    e.g. by a keep-rate warm-up)."""

    def __init__(self, keep_rate: float = 0.7, fuse_token: bool = False, num_prefix_tokens: int = 1):
        super().__init__()
        kept_token_count(1, keep_rate)  # validates keep_rate
        self.keep_rate = float(keep_rate)
        self.fuse_token = fuse_token
        self.num_prefix_tokens = num_prefix_tokens

    def forward(self, x: torch.Tensor, cls_attn: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return reorganize_tokens(x, cls_attn, keep_rate=self.keep_rate, fuse_token=self.fuse_token,
                                 num_prefix_tokens=self.num_prefix_tokens)

    def extra_repr(self) -> str:
        return f"keep_rate={self.keep_rate}, fuse_token={self.fuse_token}, num_prefix_tokens={self.num_prefix_tokens}"
