"""Fused split neighborhood ops (Triton): ``na2d_qk`` and ``na2d_av``, forward and backward, fp32 / fp16 /
bf16, any dilation, stride 1, non-causal.

Used through :func:`vzoo.layers.na2d_qk` / :func:`vzoo.layers.na2d_av` (``backend="triton"``, the default
for CUDA tensors). Semantics are those of ``vzoo.layers._na_torch`` (neighbour ``j = a*kw + b`` of a query is
the key at row ``lo_h + a``, column ``lo_w + b`` of its border-shifted window, in dilation-group coordinates);
the window starts and the inverse ranges (the queries that see each key) come from the host tables of
:mod:`vzoo.kernels.na`, built from the shared :mod:`vzoo.kernels.geometry`.

Each op is a gather: no ``k*k`` copy of the keys or values is ever formed, in either direction. One
program handles a tile of positions of one dilation group and one (batch, head), and loops over the
``kh*kw`` neighbours (forward, and the weight gradient) or over the queries that see each of its keys
(the key / value gradient, without atomics): see ``na_split_kernels``. Accumulation is in fp32. The three
gathers are the custom ops ``vzoo::na_dot``, ``vzoo::na_weighted_sum`` and ``vzoo::na_scatter_sum``.
Triton is imported lazily; the kernels also run on the CPU under ``TRITON_INTERPRET=1``.
"""
from __future__ import annotations

import functools
from typing import List, Optional

import torch

from .na import _axis_table
from .runtime import cannot_run_triton, cdiv, pow2_block, require

__all__ = ["cannot_run", "na_qk_triton", "na_av_triton"]


def cannot_run(device: torch.device, dtype: torch.dtype, spatial_dims: int, has_rpb: bool = False) -> Optional[str]:
    """Why the split kernels cannot run such a problem; None when they can."""
    if spatial_dims != 2:
        return f"the split kernels are 2-D only, got a {spatial_dims}-D problem"
    if has_rpb:
        return "the split kernels take no relative positional bias (add it to the scores yourself)"
    return cannot_run_triton(device=device, dtype=dtype)


@functools.lru_cache(maxsize=1)
def _kernels():
    from . import na_split_kernels as K
    return K


def _launch(kernel, first, second, out, kernel_size, dilation, channels):
    """Run one of the three gather kernels over ``out``'s positions; every tensor ``(B, H, W, heads, ...)``."""
    B, H, W, NH = out.shape[:4]
    TH, TW = (_axis_table(length=L, kernel=k, stride=1, dilation=d, causal=False, device=out.device)
              for L, k, d in zip((H, W), kernel_size, dilation))
    PH, PW = cdiv(H, dilation[0]), cdiv(W, dilation[1])

    def grid(meta):
        return (dilation[0] * dilation[1] * cdiv(PH, meta["QBH"]) * cdiv(PW, meta["QBW"]), B * NH)
    kernel[grid](first, second, out, TH, TW, *(s for t in (first, second, out) for s in t.stride()[:4]),
                 H=H, W=W, NH=NH, C=channels, PH=PH, PW=PW, DH=dilation[0], DW=dilation[1], KH=kernel_size[0],
                 KW=kernel_size[1], BLOCK_C=pow2_block(channels, minimum=4))
    return out


# Each gather is one custom op (torch.compile sees opaque ops with fake implementations, never the launcher);
# the gradients of ``dot`` and ``weighted_sum`` are gathers again: na2d_qk is ``dot(q, k)``, na2d_av is
# ``weighted_sum(attn, v)``. Inputs and outputs are contiguous ``(B, H, W, heads, ...)``.
@torch.library.custom_op("vzoo::na_weighted_sum", mutates_args=())
def _weighted_sum(weights: torch.Tensor, x: torch.Tensor, kernel_size: List[int],
                  dilation: List[int]) -> torch.Tensor:
    """``out[q] = sum_j weights[q, j] * x[nb(q, j)]``."""
    out = _weighted_sum_fake(weights, x=x, kernel_size=kernel_size, dilation=dilation)
    return _launch(_kernels().nb_weighted_sum, weights, x, out, kernel_size, dilation, x.shape[-1])


@_weighted_sum.register_fake
def _weighted_sum_fake(weights, x, kernel_size, dilation):
    """The uninitialised output (the fake tensor, and the real op's allocation)."""
    return x.new_empty(weights.shape[:-1] + x.shape[-1:])


@torch.library.custom_op("vzoo::na_dot", mutates_args=())
def _dot(a: torch.Tensor, x: torch.Tensor, kernel_size: List[int], dilation: List[int]) -> torch.Tensor:
    """``s[q, j] = a[q] . x[nb(q, j)]``."""
    out = _dot_fake(a, x=x, kernel_size=kernel_size, dilation=dilation)
    return _launch(_kernels().nb_dot, a, x, out, kernel_size, dilation, a.shape[-1])


@_dot.register_fake
def _dot_fake(a, x, kernel_size, dilation):
    """The uninitialised output (the fake tensor, and the real op's allocation)."""
    return a.new_empty(a.shape[:-1] + (kernel_size[0] * kernel_size[1],))


@torch.library.custom_op("vzoo::na_scatter_sum", mutates_args=())
def _scatter_sum(weights: torch.Tensor, y: torch.Tensor, kernel_size: List[int],
                 dilation: List[int]) -> torch.Tensor:
    """``out[p] = sum over (q, j) with nb(q, j) = p of weights[q, j] * y[q]``."""
    out = _scatter_sum_fake(weights, y=y, kernel_size=kernel_size, dilation=dilation)
    return _launch(_kernels().nb_scatter_sum, weights, y, out, kernel_size, dilation, y.shape[-1])


@_scatter_sum.register_fake
def _scatter_sum_fake(weights, y, kernel_size, dilation):
    """The uninitialised output (the fake tensor, and the real op's allocation)."""
    return torch.empty_like(y)


def _setup_context(ctx, inputs, output):
    first, second, kernel_size, dilation = inputs
    ctx.save_for_backward(first, second)
    ctx.geometry = dict(kernel_size=kernel_size, dilation=dilation)


def _register_autograd(op, gradients):
    """``gradients(first, second, grad)``: the (gather, its two inputs) that gives each input's gradient."""
    def backward(ctx, grad):
        calls = gradients(*ctx.saved_tensors, grad.contiguous())
        return (*(fn(x, y, **ctx.geometry) if ctx.needs_input_grad[i] else None for i, (fn, x, y) in enumerate(calls)),
                None, None)
    op.register_autograd(backward, setup_context=_setup_context)


_register_autograd(_dot, lambda a, x, grad: ((_weighted_sum, grad, x), (_scatter_sum, grad, a)))
_register_autograd(_weighted_sum, lambda weights, x, grad: ((_dot, grad, x), (_scatter_sum, weights, grad)))


def na_qk_triton(q, k, kernel, dilation):
    """Scores ``(B, H, W, heads, kh*kw)`` of :func:`vzoo.layers.na2d_qk` (arguments checked by the front)."""
    require("na_qk_triton", cannot_run(device=q.device, dtype=q.dtype, spatial_dims=q.dim() - 3))
    return _dot(q.contiguous(), k.contiguous(), kernel_size=list(kernel), dilation=list(dilation))


def na_av_triton(attn, v, kernel, dilation):
    """``(B, H, W, heads, C)`` weighted neighbour sums of :func:`vzoo.layers.na2d_av`."""
    require("na_av_triton", cannot_run(device=v.device, dtype=v.dtype, spatial_dims=v.dim() - 3))
    return _weighted_sum(attn.contiguous(), v.contiguous(), kernel_size=list(kernel), dilation=list(dilation))
