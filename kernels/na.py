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

Tile shapes and warps are autotuned per problem shape. Triton is imported lazily (never at vzoo import);
the kernels also run on the CPU under ``TRITON_INTERPRET=1`` (set before triton is first imported).
"""
from __future__ import annotations

import functools
import math
import os

import torch

__all__ = ["triton_available", "na_triton"]


@functools.lru_cache(maxsize=1)
def _triton():
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # pragma: no cover - triton ships with torch's CUDA wheels
        return None
    return triton


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_available() -> bool:
    """Triton importable and a CUDA device present (or the interpreter switched on)."""
    return _triton() is not None and (torch.cuda.is_available() or _interpret())


# ---------------------------------------------------------------------------------------------------
# host-side tables
# ---------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def _axis_table_cpu(length: int, kernel: int, stride: int, dilation: int, causal: bool):
    """int32 (4, d, P): lo, hi (window of each query), qmin, qmax (queries that see each key), per group."""
    from vzoo.layers._na_torch import window_bounds
    P = -(-length // dilation)
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
        t = _axis_table_cpu(length, kernel, stride, dilation, causal).to(device)
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
# launcher + autograd
# ---------------------------------------------------------------------------------------------------
def _geom(q, kernel, stride, dilation, causal):
    H, W = q.shape[1], q.shape[2]
    TH = _axis_table(H, kernel[0], stride[0], dilation[0], causal[0], q.device)
    TW = _axis_table(W, kernel[1], stride[1], dilation[1], causal[1], q.device)
    return TH, TW


def _block(c):
    return max(16, 1 << (int(c) - 1).bit_length())


def _common(q, k, v, rpb, kernel, dilation, scale):
    B, H, W, NH, C = q.shape
    CV = v.shape[-1]
    PH, PW = -(-H // dilation[0]), -(-W // dilation[1])
    rs = rpb.stride() if rpb is not None else (0, 0, 0)
    prec = "ieee" if q.dtype == torch.float32 else "tf32"
    return dict(H=H, W=W, NH=NH, C=C, CV=CV, PH=PH, PW=PW, DH=dilation[0], DW=dilation[1],
                KH=kernel[0], KW=kernel[1], scale_log2=scale * 1.4426950408889634), rs, \
        dict(HAS_RPB=rpb is not None, BLOCK_C=_block(C), BLOCK_CV=_block(CV), PREC=prec)


def _forward(q, k, v, rpb, kernel, stride, dilation, causal, scale):
    K = _kernels()
    B, H, W, NH, C = q.shape
    o = torch.empty(q.shape[:-1] + (v.shape[-1],), device=q.device, dtype=q.dtype)
    lse = torch.empty(q.shape[:-1], device=q.device, dtype=torch.float32)
    TH, TW = _geom(q, kernel, stride, dilation, causal)
    sizes, rs, consts = _common(q, k, v, rpb, kernel, dilation, scale)
    PH, PW = sizes["PH"], sizes["PW"]

    def grid(meta):
        return (dilation[0] * dilation[1] * -(-PH // meta["QBH"]) * -(-PW // meta["QBW"]), B * NH)
    K["fwd"][grid](q, k, v, o, lse, rpb if rpb is not None else q, TH, TW,
                   q.stride(0), q.stride(1), q.stride(2), q.stride(3),
                   k.stride(0), k.stride(1), k.stride(2), k.stride(3),
                   v.stride(0), v.stride(1), v.stride(2), v.stride(3),
                   o.stride(0), o.stride(1), o.stride(2), o.stride(3),
                   lse.stride(0), lse.stride(1), lse.stride(2), lse.stride(3), *rs,
                   **sizes, **consts)
    return o, lse


def _backward(q, k, v, o, lse, do, rpb, kernel, stride, dilation, causal, scale):
    Kn = _kernels()
    B, H, W, NH, C = q.shape
    do = do.contiguous()
    delta = (do.float() * o.float()).sum(-1).contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    drpb = torch.zeros(rpb.shape, device=q.device, dtype=torch.float32) if rpb is not None else None
    TH, TW = _geom(q, kernel, stride, dilation, causal)
    sizes, rs, consts = _common(q, k, v, rpb, kernel, dilation, scale)
    PH, PW = sizes["PH"], sizes["PW"]
    strides = (q.stride(0), q.stride(1), q.stride(2), q.stride(3),
               k.stride(0), k.stride(1), k.stride(2), k.stride(3),
               v.stride(0), v.stride(1), v.stride(2), v.stride(3),
               o.stride(0), o.stride(1), o.stride(2), o.stride(3),
               lse.stride(0), lse.stride(1), lse.stride(2), lse.stride(3)) + tuple(rs)
    rp = rpb if rpb is not None else q
    if rpb is not None and tuple(rpb.stride()) != tuple(drpb.stride()):
        raise RuntimeError("na_triton: rpb must be contiguous")

    def grid_q(meta):
        return (dilation[0] * dilation[1] * -(-PH // meta["QBH"]) * -(-PW // meta["QBW"]), B * NH)

    def grid_k(meta):
        return (dilation[0] * dilation[1] * -(-PH // meta["KBH"]) * -(-PW // meta["KBW"]), B * NH)
    dummy = drpb if drpb is not None else torch.zeros(1, device=q.device, dtype=torch.float32)
    Kn["dq"][grid_q](q, k, v, do, lse, delta, dq, rp, dummy, TH, TW, *strides,
                     **sizes, scale=scale, **consts)
    Kn["dkv"][grid_k](q, k, v, do, lse, delta, dk, dv, rp, TH, TW, *strides, **sizes, scale=scale, **consts)
    return dq, dk, dv, drpb


class _NAFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, rpb, kernel, stride, dilation, causal, scale):
        o, lse = _forward(q, k, v, rpb, kernel, stride, dilation, causal, scale)
        ctx.save_for_backward(q, k, v, o, lse, rpb)
        ctx.args = (kernel, stride, dilation, causal, scale)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, rpb = ctx.saved_tensors
        dq, dk, dv, drpb = _backward(q, k, v, o, lse, do, rpb, *ctx.args)
        if drpb is not None:
            drpb = drpb.to(rpb.dtype)
        return dq, dk, dv, drpb, None, None, None, None, None


def na_triton(q, k, v, kernel, stride, dilation, causal, scale, rpb=None):
    """Neighborhood attention through the fused kernels; ``(B, [H,] W, heads, C)`` layout, 1-D or 2-D."""
    if _triton() is None:
        raise RuntimeError("na: backend='triton' needs the triton package")
    if not (q.is_cuda or _interpret()):
        raise ValueError("na: backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU testing); "
                         f"got a tensor on {q.device}. Use backend='torch' on the CPU")
    n = q.dim() - 3
    if n == 3:  # no 3-D kernel: the torch path (same semantics)
        from vzoo.layers._na_torch import na_forward
        return na_forward(q, k, v, kernel, stride, dilation, causal, scale, rpb)
    if q.dtype == torch.float64:
        raise TypeError("na: backend='triton' supports float16, bfloat16 and float32, got float64; "
                        "use backend='torch'")
    if n == 1:  # a 1-D problem is a 2-D one with a single row
        q, k, v = (t.unsqueeze(1) for t in (q, k, v))
        kernel, stride, dilation, causal = (1,) + kernel, (1,) + stride, (1,) + dilation, (False,) + causal
        if rpb is not None:
            rpb = rpb.unsqueeze(1)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if rpb is not None:
        rpb = rpb.contiguous()
    o = _NAFunction.apply(q, k, v, rpb, tuple(kernel), tuple(stride), tuple(dilation), tuple(causal), float(scale))
    return o.squeeze(1) if n == 1 else o
