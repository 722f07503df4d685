"""Fused neighborhood attention (Triton): forward and backward, 1-D and 2-D, fp32 / fp16 / bf16.

Used through :func:`vzoo.layers.na2d` (``backend="triton"``, the default for CUDA tensors). Semantics are
those of ``vzoo.layers._na_torch`` (natten 0.21: border-shifted windows, dilation groups, stride, causal,
NAT relative positional bias); that module's ``dense_reference`` is what these kernels are tested against.

Design (flash-attention style, no attention matrix in global memory):

* one program = one tile of ``QBH x QBW`` queries of one dilation group, one (batch, head);
* the tile's keys lie in a rectangle ``[lo(first row), hi(last row)] x [lo(first col), hi(last col)]``
  (window bounds are monotone in the query coordinate); the program walks it in ``KBH x KBW`` key
  blocks, masks each score to the query's true window and keeps an online softmax (exp2 domain);
* per-axis window bounds ``lo, hi`` and, for the backward, the inverse ranges (first / last query that
  sees each key) come from small int32 tables built on the host, so stride, causal and dilation need no
  special cases in the kernels;
* backward: ``dQ`` (and the rpb gradient, by atomics) in a query-tile kernel, ``dK, dV`` in a key-tile
  kernel that walks the queries that can see its keys; ``delta = rowsum(dO * O)`` precomputed.

The forward and the backward are the custom ops ``vzoo::na_fwd`` (out, lse) and ``vzoo::na_bwd`` (with fake
implementations and the autograd wiring), so ``torch.compile`` keeps them whole in its graph.

Tile shapes and warps are autotuned per problem shape. Triton is imported lazily (never at vzoo import);
the kernels also run on the CPU under ``TRITON_INTERPRET=1`` (set before triton is first imported).
"""
from __future__ import annotations

import functools
from typing import List, Optional, Tuple

import torch

from .geometry import window_bounds
from .runtime import LOG2E, cannot_run_triton, cdiv, empty_contiguous, empty_out_lse, pow2_block, require

__all__ = ["cannot_run", "na_triton"]


def cannot_run(device: torch.device, dtype: torch.dtype, spatial_dims: int) -> Optional[str]:
    """Why the kernels cannot run a ``spatial_dims``-D problem on such tensors; None when they can."""
    if spatial_dims not in (1, 2):
        return f"there is no {spatial_dims}-D kernel (1-D and 2-D only)"
    return cannot_run_triton(device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------------
# host-side tables
# ---------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def _axis_table_cpu(length: int, kernel: int, stride: int, dilation: int, causal: bool):
    """int32 (4, d, P): lo, hi (window of each query), qmin, qmax (queries that see each key), per group."""
    P = cdiv(length, dilation)
    tab = torch.zeros(4, dilation, P, dtype=torch.int32)
    for g in range(dilation):
        Lg = len(range(g, length, dilation))
        lo, hi = window_bounds(Lg, kernel, stride, causal)
        y = torch.arange(Lg)
        qmin = torch.searchsorted(hi.contiguous(), y, right=False)  # first query with hi >= y
        qmax = torch.searchsorted(lo.contiguous(), y, right=True) - 1  # last query with lo <= y
        for r, t in enumerate((lo, hi, qmin, qmax)):
            tab[r, g, :Lg] = t.to(torch.int32)
            if Lg < P:
                tab[r, g, Lg:] = t[-1].to(torch.int32)
    return tab


_TABLES = {}


def _axis_table(length, kernel, stride, dilation, causal, device):
    key = (length, kernel, stride, dilation, causal, str(device))
    t = _TABLES.get(key)
    if t is None:
        t = _axis_table_cpu(length=length, kernel=kernel, stride=stride, dilation=dilation, causal=causal).to(device)
        if len(_TABLES) > 512:
            _TABLES.clear()
        _TABLES[key] = t
    return t


# ---------------------------------------------------------------------------------------------------
# kernels (defined on first use)
# ---------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _kernels():
    from . import na_kernels as K
    return dict(fwd=K.na_fwd, dq=K.na_bwd_dq, dkv=K.na_bwd_dkv)


# ---------------------------------------------------------------------------------------------------
# launchers
# ---------------------------------------------------------------------------------------------------
def _geom(q, kernel, stride, dilation, causal):
    """The (rows, columns) host tables of a 2-D problem."""
    return tuple(_axis_table(length=q.shape[1 + i], kernel=kernel[i], stride=stride[i], dilation=dilation[i],
                             causal=causal[i], device=q.device) for i in range(2))


def _common(q, v, rpb, kernel, dilation, scale):
    B, H, W, NH, C = q.shape
    CV = v.shape[-1]
    PH, PW = cdiv(H, dilation[0]), cdiv(W, dilation[1])
    rs = rpb.stride() if rpb is not None else (0, 0, 0)
    prec = "ieee" if q.dtype == torch.float32 else "tf32"
    return dict(H=H, W=W, NH=NH, C=C, CV=CV, PH=PH, PW=PW, DH=dilation[0], DW=dilation[1],
                KH=kernel[0], KW=kernel[1], scale_log2=scale * LOG2E), rs, \
        dict(HAS_RPB=rpb is not None, BLOCK_C=pow2_block(C), BLOCK_CV=pow2_block(CV), PREC=prec)


def _strides(*tensors):
    """The (batch, row, column, head) strides of each tensor, in the kernels' argument order."""
    return tuple(s for t in tensors for s in t.stride()[:4])


def _empty_grads(q, k, v, rpb):
    """Uninitialised ``[dq, dk, dv(, drpb)]`` (also the fake tensors of ``vzoo::na_bwd``), contiguous like the
    inputs the launcher passes (the kernels write dq, dk, dv with the inputs' strides)."""
    return list(empty_contiguous(q, k, v) if rpb is None else empty_contiguous(q, k, v, rpb))


def _forward(q, k, v, rpb, kernel, stride, dilation, causal, scale):
    K = _kernels()
    B, H, W, NH, C = q.shape
    o, lse = empty_out_lse(q, v=v)
    TH, TW = _geom(q, kernel=kernel, stride=stride, dilation=dilation, causal=causal)
    sizes, rs, consts = _common(q, v=v, rpb=rpb, kernel=kernel, dilation=dilation, scale=scale)
    PH, PW = sizes["PH"], sizes["PW"]

    def grid(meta):
        return (dilation[0] * dilation[1] * cdiv(PH, meta["QBH"]) * cdiv(PW, meta["QBW"]), B * NH)
    K["fwd"][grid](q, k, v, o, lse, rpb if rpb is not None else q, TH, TW, *_strides(q, k, v, o, lse), *rs,
                   **sizes, **consts)
    return o, lse


def _backward(q, k, v, o, lse, do, rpb, kernel, stride, dilation, causal, scale):
    Kn = _kernels()
    B, H, W, NH, C = q.shape
    do = do.contiguous()
    delta = (do.float() * o.float()).sum(-1).contiguous()
    dq, dk, dv = _empty_grads(q, k=k, v=v, rpb=None)
    drpb = torch.zeros(rpb.shape, device=q.device, dtype=torch.float32) if rpb is not None else None
    TH, TW = _geom(q, kernel=kernel, stride=stride, dilation=dilation, causal=causal)
    sizes, rs, consts = _common(q, v=v, rpb=rpb, kernel=kernel, dilation=dilation, scale=scale)
    PH, PW = sizes["PH"], sizes["PW"]
    strides = _strides(q, k, v, o, lse) + tuple(rs)  # dq, dk, dv share q's, k's, v's; do shares o's
    rp = rpb if rpb is not None else q
    if rpb is not None and tuple(rpb.stride()) != tuple(drpb.stride()):
        raise RuntimeError("na_triton: rpb must be contiguous")

    def grid_q(meta):
        return (dilation[0] * dilation[1] * cdiv(PH, meta["QBH"]) * cdiv(PW, meta["QBW"]), B * NH)

    def grid_k(meta):
        return (dilation[0] * dilation[1] * cdiv(PH, meta["KBH"]) * cdiv(PW, meta["KBW"]), B * NH)
    dummy = drpb if drpb is not None else torch.zeros(1, device=q.device, dtype=torch.float32)
    Kn["dq"][grid_q](q, k, v, do, lse, delta, dq, rp, dummy, TH, TW, *strides,
                     **sizes, scale=scale, **consts)
    Kn["dkv"][grid_k](q, k, v, do, lse, delta, dk, dv, rp, TH, TW, *strides, **sizes, scale=scale, **consts)
    return dq, dk, dv, drpb


# ---------------------------------------------------------------------------------------------------
# custom ops: torch.compile sees opaque ops with fake implementations, never the launchers above
# ---------------------------------------------------------------------------------------------------
@torch.library.custom_op("vzoo::na_fwd", mutates_args=())
def _na_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: Optional[torch.Tensor], kernel: List[int],
            stride: List[int], dilation: List[int], causal: List[bool],
            scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(out, lse)`` of 2-D neighborhood attention; contiguous ``(B, H, W, heads, C)`` inputs."""
    return _forward(q, k, v, rpb=rpb, kernel=kernel, stride=stride, dilation=dilation, causal=causal, scale=scale)


@_na_fwd.register_fake
def _na_fwd_fake(q, k, v, rpb, kernel, stride, dilation, causal, scale):
    return empty_out_lse(q, v=v)


@torch.library.custom_op("vzoo::na_bwd", mutates_args=())
def _na_bwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor,
            do: torch.Tensor, rpb: Optional[torch.Tensor], kernel: List[int], stride: List[int], dilation: List[int],
            causal: List[bool], scale: float) -> List[torch.Tensor]:
    """``[dq, dk, dv]``, and ``drpb`` (in rpb's dtype) when there is an ``rpb``."""
    dq, dk, dv, drpb = _backward(q, k, v, o=o, lse=lse, do=do, rpb=rpb, kernel=kernel, stride=stride,
                                 dilation=dilation, causal=causal, scale=scale)
    return [dq, dk, dv] if drpb is None else [dq, dk, dv, drpb.to(rpb.dtype)]


@_na_bwd.register_fake
def _na_bwd_fake(q, k, v, o, lse, do, rpb, kernel, stride, dilation, causal, scale):
    return _empty_grads(q, k=k, v=v, rpb=rpb)


def _na_setup_context(ctx, inputs, output):
    q, k, v, rpb, kernel, stride, dilation, causal, scale = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, rpb)
    ctx.geometry = dict(kernel=kernel, stride=stride, dilation=dilation, causal=causal, scale=scale)
    ctx.mark_non_differentiable(lse)


def _na_backward(ctx, do, dlse):
    q, k, v, o, lse, rpb = ctx.saved_tensors
    grads = _na_bwd(q, k, v, o=o, lse=lse, do=do, rpb=rpb, **ctx.geometry)
    return *grads, *[None] * (9 - len(grads))  # rpb's gradient is absent without an rpb


_na_fwd.register_autograd(_na_backward, setup_context=_na_setup_context)


def na_triton(q, k, v, kernel, stride, dilation, causal, scale, rpb=None):
    """Neighborhood attention through the fused kernels; ``(B, [H,] W, heads, C)`` layout, 1-D or 2-D.

    Arguments as :func:`vzoo.layers.na2d` takes them once checked (per-axis tuples, a float ``scale``).
    """
    n = q.dim() - 3
    require("na_triton", cannot_run(device=q.device, dtype=q.dtype, spatial_dims=n))
    if n == 1:  # a 1-D problem is a 2-D one with a single row
        q, k, v = (t.unsqueeze(1) for t in (q, k, v))
        kernel, stride, dilation, causal = (1,) + kernel, (1,) + stride, (1,) + dilation, (False,) + causal
        if rpb is not None:
            rpb = rpb.unsqueeze(1)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if rpb is not None:
        rpb = rpb.contiguous()
    o, _ = _na_fwd(q, k, v, rpb=rpb, kernel=list(kernel), stride=list(stride), dilation=list(dilation),
                   causal=list(causal), scale=float(scale))
    return o.squeeze(1) if n == 1 else o
