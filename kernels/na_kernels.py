"""Triton kernels of neighborhood attention (imported lazily by ``vzoo.kernels.na``; see its docstring).

This module imports triton at import time: never import it from vzoo's import path.
"""
import os

import triton
import triton.language as tl


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"



LOG2E = 1.4426950408889634

def _tune() -> bool:
    """Autotune tile shapes (off under the interpreter and with VZOO_NA_TUNE=0: one default config)."""
    return not _interpret() and os.environ.get("VZOO_NA_TUNE", "1") != "0"


def _cfg(qbh, qbw, kbh, kbw, warps, stages):
    return triton.Config(dict(QBH=qbh, QBW=qbw, KBH=kbh, KBW=kbw), num_warps=warps, num_stages=stages)


def fwd_configs():
    if _interpret():
        return [_cfg(4, 4, 2, 8, 4, 1)]
    if not _tune():
        return [_cfg(8, 8, 2, 16, 4, 2)]
    return [_cfg(8, 8, 2, 16, 4, 2), _cfg(8, 8, 4, 8, 4, 2), _cfg(4, 16, 2, 16, 4, 2),
            _cfg(8, 16, 2, 16, 8, 2), _cfg(8, 8, 1, 16, 4, 3)]


def bwd_configs():
    if _interpret():
        return [_cfg(4, 4, 2, 8, 4, 1)]
    if not _tune():
        return [_cfg(8, 8, 2, 16, 4, 1)]
    return [_cfg(8, 8, 2, 16, 4, 1), _cfg(4, 16, 4, 8, 4, 1), _cfg(8, 8, 4, 8, 8, 1),
            _cfg(4, 16, 2, 16, 4, 2)]


KEY = ["H", "W", "NH", "C", "CV", "KH", "KW", "DH", "DW", "HAS_RPB"]

@triton.jit
def _bounds(TAB, g, x, D, P):
    base = TAB + g * P + x
    return tl.load(base), tl.load(base + D * P)

@triton.jit
def _scores(q, kt, ky, kx, my, mx, lo_h, hi_h, lo_w, hi_w, kvalid, RPB, head, rs0, rs1, rs2,
            KH, KW, scale_log2, HAS_RPB: tl.constexpr, PREC: tl.constexpr):
    s = tl.dot(q, kt, input_precision=PREC) * scale_log2
    mask = (ky[None, :] >= lo_h[:, None]) & (ky[None, :] <= hi_h[:, None]) & \
           (kx[None, :] >= lo_w[:, None]) & (kx[None, :] <= hi_w[:, None]) & kvalid[None, :]
    if HAS_RPB:
        b_ptr = RPB + head * rs0 + (ky[None, :] - my[:, None] + KH - 1) * rs1 + \
            (kx[None, :] - mx[:, None] + KW - 1) * rs2
        s += tl.load(b_ptr, mask=mask, other=0.0).to(tl.float32) * 1.4426950408889634
    s = tl.where(mask, s, float("-inf"))
    return s, mask

@triton.autotune(configs=fwd_configs(), key=KEY)
@triton.jit
def na_fwd(Q, K, V, O, LSE, RPB, TH, TW,
           sqb, sqh, sqw, sqn, skb, skh, skw, skn, svb, svh, svw, svn, sob, soh, sow, son,
           slb, slh, slw, sln, rs0, rs1, rs2,
           H, W, NH, C, CV, PH, PW, DH, DW, KH, KW, scale_log2,
           HAS_RPB: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_CV: tl.constexpr, PREC: tl.constexpr,
           QBH: tl.constexpr, QBW: tl.constexpr, KBH: tl.constexpr, KBW: tl.constexpr):
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // NH
    head = bh % NH
    nth = tl.cdiv(PH, QBH)
    ntw = tl.cdiv(PW, QBW)
    tw = pid % ntw
    th = (pid // ntw) % nth
    g = pid // (ntw * nth)
    gw = g % DW
    gh = g // DW
    Lh = (H - gh + DH - 1) // DH
    Lw = (W - gw + DW - 1) // DW
    y0 = th * QBH
    x0 = tw * QBW
    if (y0 < Lh) & (x0 < Lw):
        m = tl.arange(0, QBH * QBW)
        my = y0 + m // QBW
        mx = x0 + m % QBW
        qvalid = (my < Lh) & (mx < Lw)
        myc = tl.minimum(my, Lh - 1)
        mxc = tl.minimum(mx, Lw - 1)
        lo_h, hi_h = _bounds(TH, gh, myc, DH, PH)
        lo_w, hi_w = _bounds(TW, gw, mxc, DW, PW)
        r0, _ = _bounds(TH, gh, y0, DH, PH)
        _, r1 = _bounds(TH, gh, tl.minimum(y0 + QBH - 1, Lh - 1), DH, PH)
        c0, _ = _bounds(TW, gw, x0, DW, PW)
        _, c1 = _bounds(TW, gw, tl.minimum(x0 + QBW - 1, Lw - 1), DW, PW)
        c = tl.arange(0, BLOCK_C)
        cv = tl.arange(0, BLOCK_CV)
        q_ptr = Q + b * sqb + head * sqn + (myc * DH + gh)[:, None] * sqh + (mxc * DW + gw)[:, None] * sqw \
            + c[None, :]
        q = tl.load(q_ptr, mask=c[None, :] < C, other=0.0)
        m_i = tl.full([QBH * QBW], float("-inf"), tl.float32)
        l_i = tl.zeros([QBH * QBW], tl.float32)
        acc = tl.zeros([QBH * QBW, BLOCK_CV], tl.float32)
        n = tl.arange(0, KBH * KBW)
        for kr in range(r0, r1 + 1, KBH):
            for kc in range(c0, c1 + 1, KBW):
                ky = kr + n // KBW
                kx = kc + n % KBW
                kvalid = (ky <= r1) & (kx <= c1)
                kyc = tl.minimum(ky, r1) * DH + gh
                kxc = tl.minimum(kx, c1) * DW + gw
                kt = tl.load(K + b * skb + head * skn + kyc[None, :] * skh + kxc[None, :] * skw + c[:, None],
                             mask=c[:, None] < C, other=0.0)
                s, mask = _scores(q, kt, ky, kx, myc, mxc, lo_h, hi_h, lo_w, hi_w, kvalid, RPB, head,
                                  rs0, rs1, rs2, KH, KW, scale_log2, HAS_RPB, PREC)
                m_new = tl.maximum(m_i, tl.max(s, 1))
                m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
                alpha = tl.exp2(m_i - m_safe)
                p = tl.exp2(s - m_safe[:, None])
                l_i = l_i * alpha + tl.sum(p, 1)
                v = tl.load(V + b * svb + head * svn + kyc[:, None] * svh + kxc[:, None] * svw + cv[None, :],
                            mask=cv[None, :] < CV, other=0.0)
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
                m_i = m_new
        out = acc / l_i[:, None]
        yy = (myc * DH + gh)
        xx = (mxc * DW + gw)
        o_ptr = O + b * sob + head * son + yy[:, None] * soh + xx[:, None] * sow + cv[None, :]
        tl.store(o_ptr, out.to(O.dtype.element_ty), mask=qvalid[:, None] & (cv[None, :] < CV))
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
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // NH
    head = bh % NH
    nth = tl.cdiv(PH, QBH)
    ntw = tl.cdiv(PW, QBW)
    tw = pid % ntw
    th = (pid // ntw) % nth
    g = pid // (ntw * nth)
    gw = g % DW
    gh = g // DW
    Lh = (H - gh + DH - 1) // DH
    Lw = (W - gw + DW - 1) // DW
    y0 = th * QBH
    x0 = tw * QBW
    if (y0 < Lh) & (x0 < Lw):
        m = tl.arange(0, QBH * QBW)
        my = y0 + m // QBW
        mx = x0 + m % QBW
        qvalid = (my < Lh) & (mx < Lw)
        myc = tl.minimum(my, Lh - 1)
        mxc = tl.minimum(mx, Lw - 1)
        lo_h, hi_h = _bounds(TH, gh, myc, DH, PH)
        lo_w, hi_w = _bounds(TW, gw, mxc, DW, PW)
        r0, _ = _bounds(TH, gh, y0, DH, PH)
        _, r1 = _bounds(TH, gh, tl.minimum(y0 + QBH - 1, Lh - 1), DH, PH)
        c0, _ = _bounds(TW, gw, x0, DW, PW)
        _, c1 = _bounds(TW, gw, tl.minimum(x0 + QBW - 1, Lw - 1), DW, PW)
        c = tl.arange(0, BLOCK_C)
        cv = tl.arange(0, BLOCK_CV)
        yy = myc * DH + gh
        xx = mxc * DW + gw
        q = tl.load(Q + b * sqb + head * sqn + yy[:, None] * sqh + xx[:, None] * sqw + c[None, :],
                    mask=c[None, :] < C, other=0.0)
        do = tl.load(DO + b * sob + head * son + yy[:, None] * soh + xx[:, None] * sow + cv[None, :],
                     mask=cv[None, :] < CV, other=0.0)
        lse = tl.load(LSE + b * slb + head * sln + yy * slh + xx * slw)
        delta = tl.load(DELTA + b * slb + head * sln + yy * slh + xx * slw)
        dq = tl.zeros([QBH * QBW, BLOCK_C], tl.float32)
        n = tl.arange(0, KBH * KBW)
        for kr in range(r0, r1 + 1, KBH):
            for kc in range(c0, c1 + 1, KBW):
                ky = kr + n // KBW
                kx = kc + n % KBW
                kvalid = (ky <= r1) & (kx <= c1)
                kyc = tl.minimum(ky, r1) * DH + gh
                kxc = tl.minimum(kx, c1) * DW + gw
                kt = tl.load(K + b * skb + head * skn + kyc[None, :] * skh + kxc[None, :] * skw + c[:, None],
                             mask=c[:, None] < C, other=0.0)
                s, mask = _scores(q, kt, ky, kx, myc, mxc, lo_h, hi_h, lo_w, hi_w, kvalid, RPB, head,
                                  rs0, rs1, rs2, KH, KW, scale_log2, HAS_RPB, PREC)
                p = tl.exp2(s - lse[:, None])
                vt = tl.load(V + b * svb + head * svn + kyc[None, :] * svh + kxc[None, :] * svw + cv[:, None],
                             mask=cv[:, None] < CV, other=0.0)
                dp = tl.dot(do, vt, input_precision=PREC)
                ds = p * (dp - delta[:, None])
                ds = tl.where(mask & qvalid[:, None], ds, 0.0)
                dq += tl.dot(ds.to(kt.dtype), tl.trans(kt), input_precision=PREC)
                if HAS_RPB:
                    d_ptr = DRPB + head * rs0 + (ky[None, :] - myc[:, None] + KH - 1) * rs1 + \
                        (kx[None, :] - mxc[:, None] + KW - 1) * rs2
                    tl.atomic_add(d_ptr, ds, mask=mask & qvalid[:, None])
        tl.store(DQ + b * sqb + head * sqn + yy[:, None] * sqh + xx[:, None] * sqw + c[None, :],
                 (dq * scale).to(DQ.dtype.element_ty), mask=qvalid[:, None] & (c[None, :] < C))

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
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // NH
    head = bh % NH
    nth = tl.cdiv(PH, KBH)
    ntw = tl.cdiv(PW, KBW)
    tw = pid % ntw
    th = (pid // ntw) % nth
    g = pid // (ntw * nth)
    gw = g % DW
    gh = g // DW
    Lh = (H - gh + DH - 1) // DH
    Lw = (W - gw + DW - 1) // DW
    y0 = th * KBH
    x0 = tw * KBW
    if (y0 < Lh) & (x0 < Lw):
        n = tl.arange(0, KBH * KBW)
        ky = y0 + n // KBW
        kx = x0 + n % KBW
        kvalid = (ky < Lh) & (kx < Lw)
        ky = tl.minimum(ky, Lh - 1)
        kx = tl.minimum(kx, Lw - 1)
        # inverse ranges: rows 2, 3 of the tables
        r0 = tl.load(TH + 2 * DH * PH + gh * PH + y0)
        r1 = tl.load(TH + 3 * DH * PH + gh * PH + tl.minimum(y0 + KBH - 1, Lh - 1))
        c0 = tl.load(TW + 2 * DW * PW + gw * PW + x0)
        c1 = tl.load(TW + 3 * DW * PW + gw * PW + tl.minimum(x0 + KBW - 1, Lw - 1))
        c = tl.arange(0, BLOCK_C)
        cv = tl.arange(0, BLOCK_CV)
        kyy = ky * DH + gh
        kxx = kx * DW + gw
        kt = tl.load(K + b * skb + head * skn + kyy[None, :] * skh + kxx[None, :] * skw + c[:, None],
                     mask=c[:, None] < C, other=0.0)
        vt = tl.load(V + b * svb + head * svn + kyy[None, :] * svh + kxx[None, :] * svw + cv[:, None],
                     mask=cv[:, None] < CV, other=0.0)
        dk = tl.zeros([KBH * KBW, BLOCK_C], tl.float32)
        dv = tl.zeros([KBH * KBW, BLOCK_CV], tl.float32)
        m = tl.arange(0, QBH * QBW)
        for qr in range(r0, r1 + 1, QBH):
            for qc in range(c0, c1 + 1, QBW):
                my = qr + m // QBW
                mx = qc + m % QBW
                qvalid = (my <= r1) & (mx <= c1)
                myc = tl.minimum(my, r1)
                mxc = tl.minimum(mx, c1)
                lo_h, hi_h = _bounds(TH, gh, myc, DH, PH)
                lo_w, hi_w = _bounds(TW, gw, mxc, DW, PW)
                yy = myc * DH + gh
                xx = mxc * DW + gw
                q = tl.load(Q + b * sqb + head * sqn + yy[:, None] * sqh + xx[:, None] * sqw + c[None, :],
                            mask=c[None, :] < C, other=0.0)
                do = tl.load(DO + b * sob + head * son + yy[:, None] * soh + xx[:, None] * sow + cv[None, :],
                             mask=cv[None, :] < CV, other=0.0)
                lse = tl.load(LSE + b * slb + head * sln + yy * slh + xx * slw)
                delta = tl.load(DELTA + b * slb + head * sln + yy * slh + xx * slw)
                s, mask = _scores(q, kt, ky, kx, myc, mxc, lo_h, hi_h, lo_w, hi_w, kvalid, RPB, head,
                                  rs0, rs1, rs2, KH, KW, scale_log2, HAS_RPB, PREC)  # (M, N)
                mask = mask & qvalid[:, None]
                p = tl.where(mask, tl.exp2(s - lse[:, None]), 0.0)
                dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PREC)
                dp = tl.dot(do, vt, input_precision=PREC)
                ds = tl.where(mask, p * (dp - delta[:, None]), 0.0)
                dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PREC)
        st = kvalid[:, None]
        tl.store(DK + b * skb + head * skn + kyy[:, None] * skh + kxx[:, None] * skw + c[None, :],
                 (dk * scale).to(DK.dtype.element_ty), mask=st & (c[None, :] < C))
        tl.store(DV + b * svb + head * svn + kyy[:, None] * svh + kxx[:, None] * svw + cv[None, :],
                 dv.to(DV.dtype.element_ty), mask=st & (cv[None, :] < CV))
