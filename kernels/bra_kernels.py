"""Triton kernels of bi-level routing attention (imported lazily by ``vzoo.kernels.bra``; see its docstring).

This module imports triton at import time: never import it from vzoo's import path.

Every tensor is read in place: queries/keys ``(B, H, W, C)`` and values ``(B, H, W, CV)`` with any
batch/row/column strides and unit channel stride (head ``h`` owns channels ``h*D .. h*D+D-1``). A
region ``r`` is rows ``(r // NWIN) * RH ..`` and columns ``(r % NWIN) * RW ..``; a token ``t`` of a
region is at ``(t // RW, t % RW)`` inside it. The routed keys of a query region are enumerated as
``n = j * T + t`` (``j``-th routed region, token ``t``) and their addresses computed from the routing
index, so no gathered key/value tensor exists.
"""
import triton
import triton.language as tl

from .runtime import autotuning, interpreting
from .tl_common import load_tokens, row_stats, store_tokens


def fwd_configs():
    if not autotuning("VZOO_BRA_TUNE"):
        return [triton.Config(dict(BLOCK_N=16 if interpreting() else 64), num_warps=4, num_stages=1)]
    return [triton.Config(dict(BLOCK_N=bn), num_warps=w, num_stages=s)
            for bn in (32, 64, 128) for w in (4, 8) for s in (1, 2)]


def dkv_configs():
    if not autotuning("VZOO_BRA_TUNE"):
        return [triton.Config(dict(BLOCK_M=16 if interpreting() else 32), num_warps=4, num_stages=1)]
    return [triton.Config(dict(BLOCK_M=bm), num_warps=w, num_stages=1) for bm in (16, 32, 64) for w in (4, 8)]


KEY = ["T", "TOPK", "D", "DV", "BLOCK_T"]


# ---------------------------------------------------------------------------------------------------
# helpers shared by the forward and backward kernels (inlined by triton)
# ---------------------------------------------------------------------------------------------------
@triton.jit
def _dot(a, b, PREC: tl.constexpr, DOT_F32: tl.constexpr):
    # DOT_F32: only under TRITON_INTERPRET with bfloat16, whose tl.dot the interpreter gets wrong
    # (numpy has no bfloat16); on a GPU bf16 operands go to the tensor cores as they are.
    if DOT_F32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=PREC)


@triton.jit
def _region_xy(r, t, NWIN, RH, RW):
    return (r // NWIN) * RH + t // RW, (r % NWIN) * RW + t % RW


@triton.jit
def _region_tokens(r, t0, T, NWIN, RH, RW, BLOCK: tl.constexpr):
    """Rows, columns and validity of tokens ``t0 .. t0 + BLOCK`` of region ``r`` (clamped to its last)."""
    t = t0 + tl.arange(0, BLOCK)
    y, x = _region_xy(r, tl.minimum(t, T - 1), NWIN, RH, RW)
    return y, x, t < T


@triton.jit
def _program_tokens(NWIN, RH, RW, T, BLOCK_T: tl.constexpr):
    """This program's image ``b``, region ``r`` and block of BLOCK_T tokens of it (rows, columns, validity):
    axis 0 of the grid walks (image, region, token block)."""
    R = NWIN * NWIN
    n_blk = tl.cdiv(T, BLOCK_T)
    pid = tl.program_id(0)
    br = pid // n_blk
    y, x, valid = _region_tokens(br % R, (pid % n_blk) * BLOCK_T, T, NWIN, RH, RW, BLOCK_T)
    return br // R, br % R, y, x, valid


@triton.jit
def _routed_keys(IDX, b, r, n0, TOPK, T, NWIN, RH, RW, BLOCK_N: tl.constexpr):
    """Rows, columns and validity of routed keys ``n0 .. n0 + BLOCK_N`` of query region ``r`` of image
    ``b``: key ``n`` is token ``n % T`` of its ``n // T``-th routed region (``IDX`` (B, R, TOPK))."""
    n = n0 + tl.arange(0, BLOCK_N)
    nc = tl.minimum(n, TOPK * T - 1)
    reg = tl.load(IDX + (b * NWIN * NWIN + r) * TOPK + nc // T)
    ky, kx = _region_xy(reg, nc % T, NWIN, RH, RW)
    return ky, kx, n < TOPK * T


@triton.autotune(configs=fwd_configs(), key=KEY)
@triton.jit
def bra_fwd(Q, K, V, O, LSE, IDX,
            sqb, sqh, sqw, skb, skh, skw, svb, svh, svw, sob, soh, sow, slb, sln, slh,
            NWIN, RH, RW, T, TOPK, D, DV, scale_log2,
            BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, PREC: tl.constexpr,
            DOT_F32: tl.constexpr, BLOCK_N: tl.constexpr):
    head = tl.program_id(1)
    b, r, py, px, qvalid = _program_tokens(NWIN, RH, RW, T, BLOCK_T)
    c = tl.arange(0, BLOCK_D)
    cv = tl.arange(0, BLOCK_DV)
    q = load_tokens(Q, b, head, py, px, sqb, sqh, sqw, D, c, D, False)
    m_i = tl.full([BLOCK_T], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_T], tl.float32)
    acc = tl.zeros([BLOCK_T, BLOCK_DV], tl.float32)
    for n0 in range(0, TOPK * T, BLOCK_N):
        ky, kx, kvalid = _routed_keys(IDX, b, r, n0, TOPK, T, NWIN, RH, RW, BLOCK_N)
        kt = load_tokens(K, b, head, ky, kx, skb, skh, skw, D, c, D, True)
        s = _dot(q, kt, PREC, DOT_F32) * scale_log2
        s = tl.where(kvalid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = load_tokens(V, b, head, ky, kx, svb, svh, svw, DV, cv, DV, False)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PREC, DOT_F32)
        m_i = m_new
    store_tokens(O, acc / l_i[:, None], qvalid, b, head, py, px, sob, soh, sow, DV, cv, DV)
    tl.store(LSE + b * slb + head * sln + py * slh + px, m_i + tl.log2(l_i), mask=qvalid)


@triton.autotune(configs=fwd_configs(), key=KEY)
@triton.jit
def bra_bwd_dq(Q, K, V, DO, LSE, DELTA, DQ, IDX,
               sqb, sqh, sqw, skb, skh, skw, svb, svh, svw, sob, soh, sow, slb, sln, slh,
               NWIN, RH, RW, T, TOPK, D, DV, scale_log2, scale,
               BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, PREC: tl.constexpr,
               DOT_F32: tl.constexpr, BLOCK_N: tl.constexpr):
    # DO shares O's strides (sob, soh, sow); DQ is contiguous (B, H, W, C) with C = NH * D
    head = tl.program_id(1)
    NH = tl.num_programs(1)
    b, r, py, px, qvalid = _program_tokens(NWIN, RH, RW, T, BLOCK_T)
    c = tl.arange(0, BLOCK_D)
    cv = tl.arange(0, BLOCK_DV)
    q = load_tokens(Q, b, head, py, px, sqb, sqh, sqw, D, c, D, False)
    do = load_tokens(DO, b, head, py, px, sob, soh, sow, DV, cv, DV, False)
    lse, delta = row_stats(LSE, DELTA, b, head, py, px, slb, slh, 1, sln)
    dq = tl.zeros([BLOCK_T, BLOCK_D], tl.float32)
    for n0 in range(0, TOPK * T, BLOCK_N):
        ky, kx, kvalid = _routed_keys(IDX, b, r, n0, TOPK, T, NWIN, RH, RW, BLOCK_N)
        kt = load_tokens(K, b, head, ky, kx, skb, skh, skw, D, c, D, True)
        s = _dot(q, kt, PREC, DOT_F32) * scale_log2
        p = tl.where(kvalid[None, :], tl.exp2(s - lse[:, None]), 0.0)
        vt = load_tokens(V, b, head, ky, kx, svb, svh, svw, DV, cv, DV, True)
        dp = _dot(do, vt, PREC, DOT_F32)
        ds = p * (dp - delta[:, None])
        dq += _dot(ds.to(kt.dtype), tl.trans(kt), PREC, DOT_F32)
    row = RW * NWIN * NH * D  # DQ contiguous
    store_tokens(DQ, dq * scale, qvalid, b, head, py, px, RH * NWIN * row, row, NH * D, D, c, D)


@triton.autotune(configs=dkv_configs(), key=KEY)
@triton.jit
def bra_bwd_dkv(Q, K, V, DO, LSE, DELTA, DK, DV_, OFF, QREG,
                sqb, sqh, sqw, skb, skh, skw, svb, svh, svw, sob, soh, sow, slb, sln, slh,
                NWIN, RH, RW, T, TOPK, D, DV, scale_log2, scale,
                BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, PREC: tl.constexpr,
                DOT_F32: tl.constexpr, BLOCK_M: tl.constexpr):
    # one program = BLOCK_T tokens of one key region, one head; it walks the query regions routed to
    # it (OFF/QREG: per batch, a CSR list of the query regions of every key region). DK, DV_ contiguous.
    head = tl.program_id(1)
    NH = tl.num_programs(1)
    R = NWIN * NWIN
    b, kr, ky, kx, kvalid = _program_tokens(NWIN, RH, RW, T, BLOCK_T)
    c = tl.arange(0, BLOCK_D)
    cv = tl.arange(0, BLOCK_DV)
    k = load_tokens(K, b, head, ky, kx, skb, skh, skw, D, c, D, False)
    v = load_tokens(V, b, head, ky, kx, svb, svh, svw, DV, cv, DV, False)
    dk = tl.zeros([BLOCK_T, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_T, BLOCK_DV], tl.float32)
    start = tl.load(OFF + b * (R + 1) + kr)
    end = tl.load(OFF + b * (R + 1) + kr + 1)
    for e in range(start, end):
        qr = tl.load(QREG + b * R * TOPK + e)
        for m0 in range(0, T, BLOCK_M):
            py, px, qv = _region_tokens(qr, m0, T, NWIN, RH, RW, BLOCK_M)
            q = load_tokens(Q, b, head, py, px, sqb, sqh, sqw, D, c, D, False)
            do = load_tokens(DO, b, head, py, px, sob, soh, sow, DV, cv, DV, False)
            lse, delta = row_stats(LSE, DELTA, b, head, py, px, slb, slh, 1, sln)
            st = _dot(k, tl.trans(q), PREC, DOT_F32) * scale_log2
            pt = tl.where(qv[None, :], tl.exp2(st - lse[None, :]), 0.0)
            dv += _dot(pt.to(do.dtype), do, PREC, DOT_F32)
            dpt = _dot(v, tl.trans(do), PREC, DOT_F32)
            dst = pt * (dpt - delta[None, :])
            dk += _dot(dst.to(q.dtype), q, PREC, DOT_F32)
    H, W = RH * NWIN, RW * NWIN  # DK, DV_ contiguous
    store_tokens(DK, dk * scale, kvalid, b, head, ky, kx, H * W * NH * D, W * NH * D, NH * D, D, c, D)
    store_tokens(DV_, dv, kvalid, b, head, ky, kx, H * W * NH * DV, W * NH * DV, NH * DV, DV, cv, DV)
