"""Triton kernels of sparse attention over per-query key sets (imported lazily by
``vzoo.kernels.sparse_attention``; see its docstring). This module imports triton at import time.

Tensors are ``(B, heads, N, channels)`` with any batch / head / token strides and unit channel stride;
``IDX`` is ``(B, heads, Nq, K)`` int32 (unit last stride). One program handles one query row (forward,
``dQ``) or one key row (``dK``, ``dV``) of one (batch, head): the chosen keys differ per query, so there is
no shared tile for ``tl.dot``; the row products are vector reductions in float32, and the work is
``O(Nq K D)``.
"""
import triton
import triton.language as tl

from .runtime import autotuning, interpreting


def configs():
    if not autotuning("VZOO_SPARSE_TUNE"):
        return [triton.Config(dict(BLOCK_K=16 if interpreting() else 64), num_warps=4, num_stages=1)]
    return [triton.Config(dict(BLOCK_K=bk), num_warps=w, num_stages=s)
            for bk in (32, 64, 128) for w in (2, 4, 8) for s in (1, 2)]


KEY = ["KSEL", "D", "DV", "HAS_MASK"]


@triton.jit
def _row(pid, H, N):
    """(batch, head, row) of program ``pid`` over a (B, H, N) grid."""
    n = pid % N
    bh = pid // N
    return bh // H, bh % H, n


@triton.jit
def _chosen(IDX, KMASK, b, h, i, j0, sib, sih, sin, NK, KSEL, HAS_MASK: tl.constexpr, BLOCK_K: tl.constexpr):
    """Positions of chosen keys ``j0 .. j0 + BLOCK_K`` of query ``i`` and whether each is live."""
    j = j0 + tl.arange(0, BLOCK_K)
    live = j < KSEL
    kidx = tl.load(IDX + b * sib + h * sih + i * sin + j, mask=live, other=0)
    if HAS_MASK:
        live = live & (tl.load(KMASK + b * NK + kidx, mask=live, other=0) != 0)
    return kidx, live


@triton.jit
def _rows(X, b, h, rows, valid, sb, sh, sn, c, C):
    """``(len(rows), C)`` float32 rows of ``X[b, h]`` (zeros where not ``valid``)."""
    return tl.load(X + b * sb + h * sh + rows[:, None] * sn + c[None, :], mask=valid[:, None] & (c[None, :] < C),
                   other=0.0).to(tl.float32)


@triton.jit
def _vec(X, b, h, n, sb, sh, sn, c, C):
    return tl.load(X + b * sb + h * sh + n * sn + c, mask=c < C, other=0.0).to(tl.float32)


@triton.autotune(configs=configs(), key=KEY)
@triton.jit
def sparse_fwd(Q, K, V, IDX, KMASK, O, LSE,
               sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son, sib, sih, sin,
               H, NQ, NK, KSEL, D, DV, scale_log2,
               HAS_MASK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_K: tl.constexpr):
    b, h, i = _row(tl.program_id(0), H, NQ)
    c = tl.arange(0, BLOCK_D)
    cv = tl.arange(0, BLOCK_DV)
    q = _vec(Q, b, h, i, sqb, sqh, sqn, c, D)
    m_i = tl.zeros([1], tl.float32) + float("-inf")
    l_i = tl.zeros([1], tl.float32)
    acc = tl.zeros([BLOCK_DV], tl.float32)
    for j0 in range(0, KSEL, BLOCK_K):
        kidx, live = _chosen(IDX, KMASK, b, h, i, j0, sib, sih, sin, NK, KSEL, HAS_MASK, BLOCK_K)
        kt = _rows(K, b, h, kidx, live, skb, skh, skn, c, D)
        s = tl.where(live, tl.sum(kt * q[None, :], 1) * scale_log2, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 0))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # no live key yet: keep exp2 finite
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe)
        l_i = l_i * alpha + tl.sum(p, 0)
        vt = _rows(V, b, h, kidx, live, svb, svh, svn, cv, DV)
        acc = acc * alpha + tl.sum(p[:, None] * vt, 0)
        m_i = m_new
    has_key = l_i > 0
    out = acc / tl.where(has_key, l_i, 1.0)
    tl.store(O + b * sob + h * soh + i * son + cv, out.to(O.dtype.element_ty), mask=cv < DV)
    # a row without a live key stores lse = +inf, so that the backward's exp2(s - lse) is 0 there
    lse = tl.where(has_key, m_i + tl.log2(tl.where(has_key, l_i, 1.0)), float("inf"))
    tl.store(LSE + (b * H + h) * NQ + i + tl.arange(0, 1), lse)


@triton.autotune(configs=configs(), key=KEY)
@triton.jit
def sparse_bwd_dq(Q, K, V, IDX, KMASK, DO, LSE, DELTA, DQ,
                  sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son, sib, sih, sin, sgb, sgh, sgn,
                  H, NQ, NK, KSEL, D, DV, scale_log2, scale,
                  HAS_MASK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_K: tl.constexpr):
    # DO shares O's strides (sob, soh, son); DQ has its own (sgb, sgh, sgn); LSE, DELTA are contiguous (B, H, NQ)
    b, h, i = _row(tl.program_id(0), H, NQ)
    c = tl.arange(0, BLOCK_D)
    cv = tl.arange(0, BLOCK_DV)
    q = _vec(Q, b, h, i, sqb, sqh, sqn, c, D)
    do = _vec(DO, b, h, i, sob, soh, son, cv, DV)
    row = (b * H + h) * NQ + i + tl.arange(0, 1)
    lse = tl.load(LSE + row)
    delta = tl.load(DELTA + row)
    dq = tl.zeros([BLOCK_D], tl.float32)
    for j0 in range(0, KSEL, BLOCK_K):
        kidx, live = _chosen(IDX, KMASK, b, h, i, j0, sib, sih, sin, NK, KSEL, HAS_MASK, BLOCK_K)
        kt = _rows(K, b, h, kidx, live, skb, skh, skn, c, D)
        vt = _rows(V, b, h, kidx, live, svb, svh, svn, cv, DV)
        p = tl.where(live, tl.exp2(tl.sum(kt * q[None, :], 1) * scale_log2 - lse), 0.0)
        ds = p * (tl.sum(vt * do[None, :], 1) - delta)
        dq += tl.sum(ds[:, None] * kt, 0)
    tl.store(DQ + b * sgb + h * sgh + i * sgn + c, (dq * scale).to(DQ.dtype.element_ty), mask=c < D)


@triton.autotune(configs=configs(), key=KEY)
@triton.jit
def sparse_bwd_dkv(Q, K, V, KMASK, DO, LSE, DELTA, DK, DV_, OFF, QROW,
                   sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son, sdkb, sdkh, sdkn, sdvb, sdvh, sdvn,
                   H, NQ, NK, KSEL, D, DV, scale_log2, scale,
                   HAS_MASK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_K: tl.constexpr):
    # one program = one key of one (batch, head); it walks the queries that chose it: OFF (B*H, NK + 1) and
    # QROW (B*H, NQ*KSEL) are a CSR list per (batch, head). DK, DV_ have their own strides.
    b, h, n = _row(tl.program_id(0), H, NK)
    c = tl.arange(0, BLOCK_D)
    cv = tl.arange(0, BLOCK_DV)
    k = _vec(K, b, h, n, skb, skh, skn, c, D)
    v = _vec(V, b, h, n, svb, svh, svn, cv, DV)
    dk = tl.zeros([BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_DV], tl.float32)
    bh = b * H + h
    start = tl.load(OFF + bh * (NK + 1) + n)
    end = tl.load(OFF + bh * (NK + 1) + n + 1)
    live_key = True
    if HAS_MASK:
        live_key = tl.load(KMASK + b * NK + n) != 0
    for e0 in range(start, end, BLOCK_K):
        e = e0 + tl.arange(0, BLOCK_K)
        valid = (e < end) & live_key
        qi = tl.load(QROW + bh * NQ * KSEL + e, mask=valid, other=0)
        qt = _rows(Q, b, h, qi, valid, sqb, sqh, sqn, c, D)
        dot = _rows(DO, b, h, qi, valid, sob, soh, son, cv, DV)
        lse = tl.load(LSE + bh * NQ + qi, mask=valid, other=float("inf"))
        delta = tl.load(DELTA + bh * NQ + qi, mask=valid, other=0.0)
        p = tl.where(valid, tl.exp2(tl.sum(qt * k[None, :], 1) * scale_log2 - lse), 0.0)
        dv += tl.sum(p[:, None] * dot, 0)
        ds = p * (tl.sum(dot * v[None, :], 1) - delta)
        dk += tl.sum(ds[:, None] * qt, 0)
    tl.store(DK + b * sdkb + h * sdkh + n * sdkn + c, (dk * scale).to(DK.dtype.element_ty), mask=c < D)
    tl.store(DV_ + b * sdvb + h * sdvh + n * sdvn + cv, dv.to(DV_.dtype.element_ty), mask=cv < DV)
