"""Triton kernels of bi-level routing attention (imported lazily by ``vzoo.kernels.bra``; see its docstring).

This module imports triton at import time: never import it from vzoo's import path.

Every tensor is read in place: queries/keys ``(B, H, W, C)`` and values ``(B, H, W, CV)`` with any
batch/row/column strides and unit channel stride (head ``h`` owns channels ``h*D .. h*D+D-1``). A
region ``r`` is rows ``(r // NWIN) * RH ..`` and columns ``(r % NWIN) * RW ..``; a token ``t`` of a
region is at ``(t // RW, t % RW)`` inside it. The routed keys of a query region are enumerated as
``n = j * T + t`` (``j``-th routed region, token ``t``) and their addresses computed from the routing
index, so no gathered key/value tensor exists.
"""
import os

import triton
import triton.language as tl

LOG2E = 1.4426950408889634


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _tune() -> bool:
    return not _interpret() and os.environ.get("VZOO_BRA_TUNE", "1") != "0"


def fwd_configs():
    if not _tune():
        return [triton.Config(dict(BLOCK_N=16 if _interpret() else 64), num_warps=4, num_stages=1)]
    return [triton.Config(dict(BLOCK_N=bn), num_warps=w, num_stages=s)
            for bn in (32, 64, 128) for w in (4, 8) for s in (1, 2)]


def dkv_configs():
    if not _tune():
        return [triton.Config(dict(BLOCK_M=16 if _interpret() else 32), num_warps=4, num_stages=1)]
    return [triton.Config(dict(BLOCK_M=bm), num_warps=w, num_stages=1) for bm in (16, 32, 64) for w in (4, 8)]


KEY = ["T", "TOPK", "D", "DV", "BLOCK_T"]


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


@triton.autotune(configs=fwd_configs(), key=KEY)
@triton.jit
def bra_fwd(Q, K, V, O, LSE, IDX,
            sqb, sqh, sqw, skb, skh, skw, svb, svh, svw, sob, soh, sow, slb, sln, slh,
            NWIN, RH, RW, T, TOPK, D, DV, scale_log2,
            BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, PREC: tl.constexpr,
            DOT_F32: tl.constexpr, BLOCK_N: tl.constexpr):
    pid = tl.program_id(0)
    head = tl.program_id(1)
    R = NWIN * NWIN
    n_mblk = tl.cdiv(T, BLOCK_T)
    mb = pid % n_mblk
    br = pid // n_mblk
    r = br % R
    b = br // R
    t = mb * BLOCK_T + tl.arange(0, BLOCK_T)
    qvalid = t < T
    py, px = _region_xy(r, tl.minimum(t, T - 1), NWIN, RH, RW)
    c = tl.arange(0, BLOCK_D)
    cv = tl.arange(0, BLOCK_DV)
    q = tl.load(Q + b * sqb + py[:, None] * sqh + px[:, None] * sqw + head * D + c[None, :],
                mask=c[None, :] < D, other=0.0)
    m_i = tl.full([BLOCK_T], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_T], tl.float32)
    acc = tl.zeros([BLOCK_T, BLOCK_DV], tl.float32)
    NK = TOPK * T
    idx_base = IDX + (b * R + r) * TOPK
    for n0 in range(0, NK, BLOCK_N):
        nn = n0 + tl.arange(0, BLOCK_N)
        kvalid = nn < NK
        nc = tl.minimum(nn, NK - 1)
        reg = tl.load(idx_base + nc // T)
        ky, kx = _region_xy(reg, nc % T, NWIN, RH, RW)
        kt = tl.load(K + b * skb + ky[None, :] * skh + kx[None, :] * skw + head * D + c[:, None],
                     mask=c[:, None] < D, other=0.0)
        s = _dot(q, kt, PREC, DOT_F32) * scale_log2
        s = tl.where(kvalid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + b * svb + ky[:, None] * svh + kx[:, None] * svw + head * DV + cv[None, :],
                    mask=cv[None, :] < DV, other=0.0)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PREC, DOT_F32)
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(O + b * sob + py[:, None] * soh + px[:, None] * sow + head * DV + cv[None, :],
             out.to(O.dtype.element_ty), mask=qvalid[:, None] & (cv[None, :] < DV))
    tl.store(LSE + b * slb + head * sln + py * slh + px, m_i + tl.log2(l_i), mask=qvalid)


@triton.autotune(configs=fwd_configs(), key=KEY)
@triton.jit
def bra_bwd_dq(Q, K, V, DO, LSE, DELTA, DQ, IDX,
               sqb, sqh, sqw, skb, skh, skw, svb, svh, svw, sob, soh, sow, slb, sln, slh,
               NWIN, RH, RW, T, TOPK, D, DV, scale_log2, scale,
               BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, PREC: tl.constexpr,
               DOT_F32: tl.constexpr, BLOCK_N: tl.constexpr):
    # DO shares O's strides (sob, soh, sow); DQ is contiguous (B, H, W, C) with C = NH * D
    pid = tl.program_id(0)
    head = tl.program_id(1)
    NH = tl.num_programs(1)
    R = NWIN * NWIN
    n_mblk = tl.cdiv(T, BLOCK_T)
    mb = pid % n_mblk
    br = pid // n_mblk
    r = br % R
    b = br // R
    t = mb * BLOCK_T + tl.arange(0, BLOCK_T)
    qvalid = t < T
    py, px = _region_xy(r, tl.minimum(t, T - 1), NWIN, RH, RW)
    c = tl.arange(0, BLOCK_D)
    cv = tl.arange(0, BLOCK_DV)
    q = tl.load(Q + b * sqb + py[:, None] * sqh + px[:, None] * sqw + head * D + c[None, :],
                mask=c[None, :] < D, other=0.0)
    do = tl.load(DO + b * sob + py[:, None] * soh + px[:, None] * sow + head * DV + cv[None, :],
                 mask=cv[None, :] < DV, other=0.0)
    lse = tl.load(LSE + b * slb + head * sln + py * slh + px)
    delta = tl.load(DELTA + b * slb + head * sln + py * slh + px)
    dq = tl.zeros([BLOCK_T, BLOCK_D], tl.float32)
    NK = TOPK * T
    idx_base = IDX + (b * R + r) * TOPK
    for n0 in range(0, NK, BLOCK_N):
        nn = n0 + tl.arange(0, BLOCK_N)
        kvalid = nn < NK
        nc = tl.minimum(nn, NK - 1)
        reg = tl.load(idx_base + nc // T)
        ky, kx = _region_xy(reg, nc % T, NWIN, RH, RW)
        kt = tl.load(K + b * skb + ky[None, :] * skh + kx[None, :] * skw + head * D + c[:, None],
                     mask=c[:, None] < D, other=0.0)
        s = _dot(q, kt, PREC, DOT_F32) * scale_log2
        p = tl.where(kvalid[None, :], tl.exp2(s - lse[:, None]), 0.0)
        vt = tl.load(V + b * svb + ky[None, :] * svh + kx[None, :] * svw + head * DV + cv[:, None],
                     mask=cv[:, None] < DV, other=0.0)
        dp = _dot(do, vt, PREC, DOT_F32)
        ds = p * (dp - delta[:, None])
        dq += _dot(ds.to(kt.dtype), tl.trans(kt), PREC, DOT_F32)
    C = NH * D
    tl.store(DQ + ((b * (RH * NWIN) + py[:, None]) * (RW * NWIN) + px[:, None]) * C + head * D + c[None, :],
             (dq * scale).to(DQ.dtype.element_ty), mask=qvalid[:, None] & (c[None, :] < D))


@triton.autotune(configs=dkv_configs(), key=KEY)
@triton.jit
def bra_bwd_dkv(Q, K, V, DO, LSE, DELTA, DK, DV_, OFF, QREG,
                sqb, sqh, sqw, skb, skh, skw, svb, svh, svw, sob, soh, sow, slb, sln, slh,
                NWIN, RH, RW, T, TOPK, D, DV, scale_log2, scale,
                BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, PREC: tl.constexpr,
                DOT_F32: tl.constexpr, BLOCK_M: tl.constexpr):
    # one program = BLOCK_T tokens of one key region, one head; it walks the query regions routed to
    # it (OFF/QREG: per batch, a CSR list of the query regions of every key region). DK, DV_ contiguous.
    pid = tl.program_id(0)
    head = tl.program_id(1)
    NH = tl.num_programs(1)
    R = NWIN * NWIN
    n_nblk = tl.cdiv(T, BLOCK_T)
    nb = pid % n_nblk
    br = pid // n_nblk
    kr = br % R
    b = br // R
    t = nb * BLOCK_T + tl.arange(0, BLOCK_T)
    kvalid = t < T
    ky, kx = _region_xy(kr, tl.minimum(t, T - 1), NWIN, RH, RW)
    c = tl.arange(0, BLOCK_D)
    cv = tl.arange(0, BLOCK_DV)
    k = tl.load(K + b * skb + ky[:, None] * skh + kx[:, None] * skw + head * D + c[None, :],
                mask=c[None, :] < D, other=0.0)
    v = tl.load(V + b * svb + ky[:, None] * svh + kx[:, None] * svw + head * DV + cv[None, :],
                mask=cv[None, :] < DV, other=0.0)
    dk = tl.zeros([BLOCK_T, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_T, BLOCK_DV], tl.float32)
    start = tl.load(OFF + b * (R + 1) + kr)
    end = tl.load(OFF + b * (R + 1) + kr + 1)
    for e in range(start, end):
        qr = tl.load(QREG + b * R * TOPK + e)
        for m0 in range(0, T, BLOCK_M):
            tq = m0 + tl.arange(0, BLOCK_M)
            qv = tq < T
            py, px = _region_xy(qr, tl.minimum(tq, T - 1), NWIN, RH, RW)
            q = tl.load(Q + b * sqb + py[:, None] * sqh + px[:, None] * sqw + head * D + c[None, :],
                        mask=c[None, :] < D, other=0.0)
            do = tl.load(DO + b * sob + py[:, None] * soh + px[:, None] * sow + head * DV + cv[None, :],
                         mask=cv[None, :] < DV, other=0.0)
            lse = tl.load(LSE + b * slb + head * sln + py * slh + px)
            delta = tl.load(DELTA + b * slb + head * sln + py * slh + px)
            st = _dot(k, tl.trans(q), PREC, DOT_F32) * scale_log2
            pt = tl.where(qv[None, :], tl.exp2(st - lse[None, :]), 0.0)
            dv += _dot(pt.to(do.dtype), do, PREC, DOT_F32)
            dpt = _dot(v, tl.trans(do), PREC, DOT_F32)
            dst = pt * (dpt - delta[None, :])
            dk += _dot(dst.to(q.dtype), q, PREC, DOT_F32)
    rows = (b * (RH * NWIN) + ky[:, None]) * (RW * NWIN) + kx[:, None]
    tl.store(DK + rows * (NH * D) + head * D + c[None, :], (dk * scale).to(DK.dtype.element_ty),
             mask=kvalid[:, None] & (c[None, :] < D))
    tl.store(DV_ + rows * (NH * DV) + head * DV + cv[None, :], dv.to(DV_.dtype.element_ty),
             mask=kvalid[:, None] & (cv[None, :] < DV))
