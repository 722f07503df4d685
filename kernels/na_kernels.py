"""Triton kernels of neighborhood attention (imported lazily by ``vzoo.kernels.na``; see its docstring).

This module imports triton at import time: never import it from vzoo's import path.
"""
import triton
import triton.language as tl

from .runtime import LOG2E, autotuning, interpreting
from .tl_common import load_tokens, row_stats, store_tokens

_LOG2E = tl.constexpr(LOG2E)


def _cfg(qbh, qbw, kbh, kbw, warps, stages):
    return triton.Config(dict(QBH=qbh, QBW=qbw, KBH=kbh, KBW=kbw), num_warps=warps, num_stages=stages)


def fwd_configs():
    if interpreting():
        return [_cfg(4, 4, 2, 8, 4, 1)]
    if not autotuning("VZOO_NA_TUNE"):
        return [_cfg(8, 8, 2, 16, 4, 2)]
    return [_cfg(8, 8, 2, 16, 4, 2), _cfg(8, 8, 4, 8, 4, 2), _cfg(4, 16, 2, 16, 4, 2),
            _cfg(8, 16, 2, 16, 8, 2), _cfg(8, 8, 1, 16, 4, 3)]


def bwd_configs():
    if interpreting():
        return [_cfg(4, 4, 2, 8, 4, 1)]
    if not autotuning("VZOO_NA_TUNE"):
        return [_cfg(8, 8, 2, 16, 4, 1)]
    return [_cfg(8, 8, 2, 16, 4, 1), _cfg(4, 16, 4, 8, 4, 1), _cfg(8, 8, 4, 8, 8, 1),
            _cfg(4, 16, 2, 16, 4, 2)]


KEY = ["H", "W", "NH", "C", "CV", "KH", "KW", "DH", "DW", "HAS_RPB"]


# ---------------------------------------------------------------------------------------------------
# helpers shared by the forward and backward kernels (inlined by triton)
# ---------------------------------------------------------------------------------------------------
@triton.jit
def _program(NH, PH, PW, H, W, DH, DW, BH: tl.constexpr, BW: tl.constexpr):
    """This program's batch, head, dilation group (gh, gw), group lengths (Lh, Lw) and the origin (y0, x0)
    of its BH x BW tile in group coordinates."""
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    nth = tl.cdiv(PH, BH)
    ntw = tl.cdiv(PW, BW)
    g = pid // (ntw * nth)
    gw = g % DW
    gh = g // DW
    Lh = (H - gh + DH - 1) // DH
    Lw = (W - gw + DW - 1) // DW
    return bh // NH, bh % NH, gh, gw, Lh, Lw, ((pid // ntw) % nth) * BH, (pid % ntw) * BW


@triton.jit
def _tile_coords(y0, x0, y_last, x_last, BH: tl.constexpr, BW: tl.constexpr):
    """The BH x BW tile from (y0, x0), row-major, clamped to (y_last, x_last); and which entries are inside."""
    i = tl.arange(0, BH * BW)
    y = y0 + i // BW
    x = x0 + i % BW
    return tl.minimum(y, y_last), tl.minimum(x, x_last), (y <= y_last) & (x <= x_last)


@triton.jit
def _bounds(TAB, g, x, D, P):
    base = TAB + g * P + x
    return tl.load(base), tl.load(base + D * P)


@triton.jit
def _windows(TH, TW, gh, gw, y, x, DH, DW, PH, PW):
    """Inclusive key rows and columns ``lo_h, hi_h, lo_w, hi_w`` of the queries at (y, x)."""
    lo_h, hi_h = _bounds(TH, gh, y, DH, PH)
    lo_w, hi_w = _bounds(TW, gw, x, DW, PW)
    return lo_h, hi_h, lo_w, hi_w


@triton.jit
def _key_rectangle(TH, TW, gh, gw, y0, x0, Lh, Lw, DH, DW, PH, PW, QBH: tl.constexpr, QBW: tl.constexpr):
    """Rows ``r0..r1`` and columns ``c0..c1`` (group coordinates) of every key the query tile at (y0, x0)
    can see: window bounds are monotone in the query coordinate."""
    r0, r1 = _span(TH, 0, gh, y0, QBH, Lh, DH, PH)
    c0, c1 = _span(TW, 0, gw, x0, QBW, Lw, DW, PW)
    return r0, r1, c0, c1


@triton.jit
def _span(TAB, row, g, start, BLOCK: tl.constexpr, L, D, P):
    """``TAB[row]`` at ``start`` and ``TAB[row + 1]`` at the last index of the block of BLOCK from ``start``:
    rows 0, 1 give the keys a query block sees, rows 2, 3 the queries that see a key block."""
    base = TAB + row * D * P + g * P
    return tl.load(base + start), tl.load(base + D * P + tl.minimum(start + BLOCK - 1, L - 1))


@triton.jit
def _scores(q, kt, ky, kx, my, mx, lo_h, hi_h, lo_w, hi_w, kvalid, RPB, head, rs0, rs1, rs2,
            KH, KW, scale_log2, HAS_RPB: tl.constexpr, PREC: tl.constexpr):
    """Scores (log2 domain, -inf outside each query's window) of queries (my, mx) with keys (ky, kx)."""
    s = tl.dot(q, kt, input_precision=PREC) * scale_log2
    mask = (ky[None, :] >= lo_h[:, None]) & (ky[None, :] <= hi_h[:, None]) & \
           (kx[None, :] >= lo_w[:, None]) & (kx[None, :] <= hi_w[:, None]) & kvalid[None, :]
    if HAS_RPB:
        b_ptr = RPB + head * rs0 + (ky[None, :] - my[:, None] + KH - 1) * rs1 + \
            (kx[None, :] - mx[:, None] + KW - 1) * rs2
        s += tl.load(b_ptr, mask=mask, other=0.0).to(tl.float32) * _LOG2E
    s = tl.where(mask, s, float("-inf"))
    return s, mask


@triton.jit
def _softmax_grad(s, mask, lse, delta, do, vt, PREC: tl.constexpr):
    """``P`` (from the log-sum-exp) and ``dS = P * (dO V^T - delta)`` of a score block, zero outside mask."""
    p = tl.where(mask, tl.exp2(s - lse[:, None]), 0.0)
    dp = tl.dot(do, vt, input_precision=PREC)
    return p, tl.where(mask, p * (dp - delta[:, None]), 0.0)


@triton.autotune(configs=fwd_configs(), key=KEY)
@triton.jit
def na_fwd(Q, K, V, O, LSE, RPB, TH, TW,
           sqb, sqh, sqw, sqn, skb, skh, skw, skn, svb, svh, svw, svn, sob, soh, sow, son,
           slb, slh, slw, sln, rs0, rs1, rs2,
           H, W, NH, C, CV, PH, PW, DH, DW, KH, KW, scale_log2,
           HAS_RPB: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_CV: tl.constexpr, PREC: tl.constexpr,
           QBH: tl.constexpr, QBW: tl.constexpr, KBH: tl.constexpr, KBW: tl.constexpr):
    b, head, gh, gw, Lh, Lw, y0, x0 = _program(NH, PH, PW, H, W, DH, DW, QBH, QBW)
    if (y0 < Lh) & (x0 < Lw):
        my, mx, qvalid = _tile_coords(y0, x0, Lh - 1, Lw - 1, QBH, QBW)
        lo_h, hi_h, lo_w, hi_w = _windows(TH, TW, gh, gw, my, mx, DH, DW, PH, PW)
        r0, r1, c0, c1 = _key_rectangle(TH, TW, gh, gw, y0, x0, Lh, Lw, DH, DW, PH, PW, QBH, QBW)
        c = tl.arange(0, BLOCK_C)
        cv = tl.arange(0, BLOCK_CV)
        yy = my * DH + gh
        xx = mx * DW + gw
        q = load_tokens(Q, b, head, yy, xx, sqb, sqh, sqw, sqn, c, C, False)
        m_i = tl.full([QBH * QBW], float("-inf"), tl.float32)
        l_i = tl.zeros([QBH * QBW], tl.float32)
        acc = tl.zeros([QBH * QBW, BLOCK_CV], tl.float32)
        for kr in range(r0, r1 + 1, KBH):
            for kc in range(c0, c1 + 1, KBW):
                ky, kx, kvalid = _tile_coords(kr, kc, r1, c1, KBH, KBW)
                kt = load_tokens(K, b, head, ky * DH + gh, kx * DW + gw, skb, skh, skw, skn, c, C, True)
                s, mask = _scores(q, kt, ky, kx, my, mx, lo_h, hi_h, lo_w, hi_w, kvalid, RPB, head,
                                  rs0, rs1, rs2, KH, KW, scale_log2, HAS_RPB, PREC)
                m_new = tl.maximum(m_i, tl.max(s, 1))
                m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
                alpha = tl.exp2(m_i - m_safe)
                p = tl.exp2(s - m_safe[:, None])
                l_i = l_i * alpha + tl.sum(p, 1)
                v = load_tokens(V, b, head, ky * DH + gh, kx * DW + gw, svb, svh, svw, svn, cv, CV, False)
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
                m_i = m_new
        store_tokens(O, acc / l_i[:, None], qvalid, b, head, yy, xx, sob, soh, sow, son, cv, CV)
        tl.store(LSE + b * slb + head * sln + yy * slh + xx * slw, m_i + tl.log2(l_i), mask=qvalid)


@triton.autotune(configs=bwd_configs(), key=KEY, reset_to_zero=["DRPB"])
@triton.jit
def na_bwd_dq(Q, K, V, DO, LSE, DELTA, DQ, RPB, DRPB, TH, TW,
              sqb, sqh, sqw, sqn, skb, skh, skw, skn, svb, svh, svw, svn, sob, soh, sow, son,
              slb, slh, slw, sln, rs0, rs1, rs2,
              H, W, NH, C, CV, PH, PW, DH, DW, KH, KW, scale_log2, scale,
              HAS_RPB: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_CV: tl.constexpr, PREC: tl.constexpr,
              QBH: tl.constexpr, QBW: tl.constexpr, KBH: tl.constexpr, KBW: tl.constexpr):
    # DQ shares Q's strides, DO shares O's strides (the launcher makes them contiguous)
    b, head, gh, gw, Lh, Lw, y0, x0 = _program(NH, PH, PW, H, W, DH, DW, QBH, QBW)
    if (y0 < Lh) & (x0 < Lw):
        my, mx, qvalid = _tile_coords(y0, x0, Lh - 1, Lw - 1, QBH, QBW)
        lo_h, hi_h, lo_w, hi_w = _windows(TH, TW, gh, gw, my, mx, DH, DW, PH, PW)
        r0, r1, c0, c1 = _key_rectangle(TH, TW, gh, gw, y0, x0, Lh, Lw, DH, DW, PH, PW, QBH, QBW)
        c = tl.arange(0, BLOCK_C)
        cv = tl.arange(0, BLOCK_CV)
        yy = my * DH + gh
        xx = mx * DW + gw
        q = load_tokens(Q, b, head, yy, xx, sqb, sqh, sqw, sqn, c, C, False)
        do = load_tokens(DO, b, head, yy, xx, sob, soh, sow, son, cv, CV, False)
        lse, delta = row_stats(LSE, DELTA, b, head, yy, xx, slb, slh, slw, sln)
        dq = tl.zeros([QBH * QBW, BLOCK_C], tl.float32)
        for kr in range(r0, r1 + 1, KBH):
            for kc in range(c0, c1 + 1, KBW):
                ky, kx, kvalid = _tile_coords(kr, kc, r1, c1, KBH, KBW)
                kt = load_tokens(K, b, head, ky * DH + gh, kx * DW + gw, skb, skh, skw, skn, c, C, True)
                vt = load_tokens(V, b, head, ky * DH + gh, kx * DW + gw, svb, svh, svw, svn, cv, CV, True)
                s, mask = _scores(q, kt, ky, kx, my, mx, lo_h, hi_h, lo_w, hi_w, kvalid, RPB, head,
                                  rs0, rs1, rs2, KH, KW, scale_log2, HAS_RPB, PREC)
                mask = mask & qvalid[:, None]
                _, ds = _softmax_grad(s, mask, lse, delta, do, vt, PREC)
                dq += tl.dot(ds.to(kt.dtype), tl.trans(kt), input_precision=PREC)
                if HAS_RPB:
                    d_ptr = DRPB + head * rs0 + (ky[None, :] - my[:, None] + KH - 1) * rs1 + \
                        (kx[None, :] - mx[:, None] + KW - 1) * rs2
                    tl.atomic_add(d_ptr, ds, mask=mask)
        store_tokens(DQ, dq * scale, qvalid, b, head, yy, xx, sqb, sqh, sqw, sqn, c, C)


@triton.autotune(configs=bwd_configs(), key=KEY)
@triton.jit
def na_bwd_dkv(Q, K, V, DO, LSE, DELTA, DK, DV, RPB, TH, TW,
               sqb, sqh, sqw, sqn, skb, skh, skw, skn, svb, svh, svw, svn, sob, soh, sow, son,
               slb, slh, slw, sln, rs0, rs1, rs2,
               H, W, NH, C, CV, PH, PW, DH, DW, KH, KW, scale_log2, scale,
               HAS_RPB: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_CV: tl.constexpr, PREC: tl.constexpr,
               QBH: tl.constexpr, QBW: tl.constexpr, KBH: tl.constexpr, KBW: tl.constexpr):
    # one program = a KBH x KBW tile of keys; walks the queries that can see them in QBH x QBW blocks.
    # DK shares K's strides, DV shares V's strides.
    b, head, gh, gw, Lh, Lw, y0, x0 = _program(NH, PH, PW, H, W, DH, DW, KBH, KBW)
    if (y0 < Lh) & (x0 < Lw):
        ky, kx, kvalid = _tile_coords(y0, x0, Lh - 1, Lw - 1, KBH, KBW)
        r0, r1 = _span(TH, 2, gh, y0, KBH, Lh, DH, PH)  # rows 2, 3 of the tables: the inverse ranges
        c0, c1 = _span(TW, 2, gw, x0, KBW, Lw, DW, PW)
        c = tl.arange(0, BLOCK_C)
        cv = tl.arange(0, BLOCK_CV)
        kyy = ky * DH + gh
        kxx = kx * DW + gw
        kt = load_tokens(K, b, head, kyy, kxx, skb, skh, skw, skn, c, C, True)
        vt = load_tokens(V, b, head, kyy, kxx, svb, svh, svw, svn, cv, CV, True)
        dk = tl.zeros([KBH * KBW, BLOCK_C], tl.float32)
        dv = tl.zeros([KBH * KBW, BLOCK_CV], tl.float32)
        for qr in range(r0, r1 + 1, QBH):
            for qc in range(c0, c1 + 1, QBW):
                my, mx, qvalid = _tile_coords(qr, qc, r1, c1, QBH, QBW)
                lo_h, hi_h, lo_w, hi_w = _windows(TH, TW, gh, gw, my, mx, DH, DW, PH, PW)
                yy = my * DH + gh
                xx = mx * DW + gw
                q = load_tokens(Q, b, head, yy, xx, sqb, sqh, sqw, sqn, c, C, False)
                do = load_tokens(DO, b, head, yy, xx, sob, soh, sow, son, cv, CV, False)
                lse, delta = row_stats(LSE, DELTA, b, head, yy, xx, slb, slh, slw, sln)
                s, mask = _scores(q, kt, ky, kx, my, mx, lo_h, hi_h, lo_w, hi_w, kvalid, RPB, head,
                                  rs0, rs1, rs2, KH, KW, scale_log2, HAS_RPB, PREC)  # (M, N)
                p, ds = _softmax_grad(s, mask & qvalid[:, None], lse, delta, do, vt, PREC)
                dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PREC)
                dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PREC)
        store_tokens(DK, dk * scale, kvalid, b, head, kyy, kxx, skb, skh, skw, skn, c, C)
        store_tokens(DV, dv, kvalid, b, head, kyy, kxx, svb, svh, svw, svn, cv, CV)
