"""Triton kernels of the split neighborhood ops ``na2d_qk`` / ``na2d_av`` (imported lazily by
``vzoo.kernels.na_split``; see its docstring).

Three gather kernels serve both ops, forward and backward (``nb(q, j)``: neighbour ``j`` of query ``q``):

* :func:`nb_weighted_sum`  ``OUT[q] = sum_j WT[q, j] * X[nb(q, j)]``      (av forward, qk's dQ)
* :func:`nb_dot`           ``S[q, j] = A[q] . X[nb(q, j)]``               (qk forward, av's dAttn)
* :func:`nb_scatter_sum`   ``OUT[p] = sum_{q: nb(q, j) = p} WT[q, j] * Y[q]`` (av's dValue, qk's dK)

This module imports triton at import time: never import it from vzoo's import path.
"""
import triton
import triton.language as tl

from .na_kernels import _bounds, _program, _tile_coords
from .runtime import autotuning, interpreting
from .tl_common import load_tokens, store_tokens


def _cfg(qbh, qbw, warps):
    return triton.Config(dict(QBH=qbh, QBW=qbw), num_warps=warps, num_stages=1)


def configs():
    if interpreting():
        return [_cfg(4, 4, 1)]
    if not autotuning("VZOO_NA_TUNE"):
        return [_cfg(4, 16, 4)]
    return [_cfg(4, 16, 4), _cfg(8, 8, 4), _cfg(2, 32, 4), _cfg(8, 16, 8)]


KEY = ["H", "W", "NH", "C", "KH", "KW", "DH", "DW"]


@triton.jit
def _queries(TH, TW, NH, PH, PW, H, W, DH, DW, QBH: tl.constexpr, QBW: tl.constexpr):
    """This program's batch, head, dilation group, tile of positions (group coordinates, clamped), which
    are real, their image rows / columns, and the first key row / column of their windows."""
    b, head, gh, gw, Lh, Lw, y0, x0 = _program(NH, PH, PW, H, W, DH, DW, QBH, QBW)
    my, mx, valid = _tile_coords(y0, x0, Lh - 1, Lw - 1, QBH, QBW)
    lo_h, _ = _bounds(TH, gh, my, DH, PH)
    lo_w, _ = _bounds(TW, gw, mx, DW, PW)
    return b, head, gh, gw, Lh, Lw, y0, x0, my, mx, valid & (y0 < Lh) & (x0 < Lw), lo_h, lo_w


@triton.jit
def _neighbour(X, b, head, lo_h, lo_w, j, gh, gw, sxb, sxh, sxw, sxn, c, C, KW, DH, DW):
    """``(tokens, C)`` fp32: neighbour ``j`` (row-major in the window) of each position's window."""
    ny = (lo_h + j // KW) * DH + gh
    nx = (lo_w + j % KW) * DW + gw
    return load_tokens(X, b, head, ny, nx, sxb, sxh, sxw, sxn, c, C, False).to(tl.float32)


@triton.autotune(configs=configs(), key=KEY)
@triton.jit
def nb_weighted_sum(WT, X, OUT, TH, TW, swb, swh, sww, swn, sxb, sxh, sxw, sxn, sob, soh, sow, son,
                    H, W, NH, C, PH, PW, DH, DW, KH, KW,
                    BLOCK_C: tl.constexpr, QBH: tl.constexpr, QBW: tl.constexpr):
    b, head, gh, gw, Lh, Lw, y0, x0, my, mx, valid, lo_h, lo_w = _queries(TH, TW, NH, PH, PW, H, W, DH, DW,
                                                                         QBH, QBW)
    c = tl.arange(0, BLOCK_C)
    yy = my * DH + gh
    xx = mx * DW + gw
    w_base = WT + b * swb + head * swn + yy * swh + xx * sww
    acc = tl.zeros([QBH * QBW, BLOCK_C], tl.float32)
    for j in range(0, KH * KW):
        wj = tl.load(w_base + j, mask=valid, other=0.0).to(tl.float32)
        acc += wj[:, None] * _neighbour(X, b, head, lo_h, lo_w, j, gh, gw, sxb, sxh, sxw, sxn, c, C, KW, DH, DW)
    store_tokens(OUT, acc, valid, b, head, yy, xx, sob, soh, sow, son, c, C)


@triton.autotune(configs=configs(), key=KEY)
@triton.jit
def nb_dot(A, X, S, TH, TW, sab, sah, saw, san, sxb, sxh, sxw, sxn, ssb, ssh, ssw, ssn,
           H, W, NH, C, PH, PW, DH, DW, KH, KW,
           BLOCK_C: tl.constexpr, QBH: tl.constexpr, QBW: tl.constexpr):
    b, head, gh, gw, Lh, Lw, y0, x0, my, mx, valid, lo_h, lo_w = _queries(TH, TW, NH, PH, PW, H, W, DH, DW,
                                                                         QBH, QBW)
    c = tl.arange(0, BLOCK_C)
    yy = my * DH + gh
    xx = mx * DW + gw
    a = load_tokens(A, b, head, yy, xx, sab, sah, saw, san, c, C, False).to(tl.float32)
    s_base = S + b * ssb + head * ssn + yy * ssh + xx * ssw
    for j in range(0, KH * KW):
        xj = _neighbour(X, b, head, lo_h, lo_w, j, gh, gw, sxb, sxh, sxw, sxn, c, C, KW, DH, DW)
        tl.store(s_base + j, tl.sum(a * xj, 1).to(S.dtype.element_ty), mask=valid)


@triton.autotune(configs=configs(), key=KEY)
@triton.jit
def nb_scatter_sum(WT, Y, OUT, TH, TW, swb, swh, sww, swn, syb, syh, syw, syn, sob, soh, sow, son,
                   H, W, NH, C, PH, PW, DH, DW, KH, KW,
                   BLOCK_C: tl.constexpr, QBH: tl.constexpr, QBW: tl.constexpr):
    # one program = a tile of keys p; each walks the (at most 2k-1 per axis) queries whose window holds it
    b, head, gh, gw, Lh, Lw, y0, x0, py, px, valid, _, _ = _queries(TH, TW, NH, PH, PW, H, W, DH, DW, QBH, QBW)
    c = tl.arange(0, BLOCK_C)
    qmin_h, qmax_h = _bounds(TH + 2 * DH * PH, gh, py, DH, PH)  # rows 2, 3 of the tables: inverse ranges
    qmin_w, qmax_w = _bounds(TW + 2 * DW * PW, gw, px, DW, PW)
    acc = tl.zeros([QBH * QBW, BLOCK_C], tl.float32)
    for ty in range(0, 2 * KH - 1):
        qy = qmin_h + ty
        ok_y = valid & (qy <= qmax_h)
        qy = tl.minimum(qy, Lh - 1)
        lo_h, _ = _bounds(TH, gh, qy, DH, PH)
        for tx in range(0, 2 * KW - 1):
            qx = qmin_w + tx
            ok = ok_y & (qx <= qmax_w)
            qx = tl.minimum(qx, Lw - 1)
            lo_w, _ = _bounds(TW, gw, qx, DW, PW)
            j = (py - lo_h) * KW + (px - lo_w)
            yy = qy * DH + gh
            xx = qx * DW + gw
            wj = tl.load(WT + b * swb + head * swn + yy * swh + xx * sww + j, mask=ok, other=0.0).to(tl.float32)
            yq = tl.load(Y + b * syb + head * syn + yy[:, None] * syh + xx[:, None] * syw + c[None, :],
                         mask=ok[:, None] & (c[None, :] < C), other=0.0).to(tl.float32)
            acc += wj[:, None] * yq
    store_tokens(OUT, acc, valid, b, head, py * DH + gh, px * DW + gw, sob, soh, sow, son, c, C)
