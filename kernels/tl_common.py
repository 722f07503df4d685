"""Triton helpers that every kernel family uses (inlined by triton where they are called).

This module imports triton at import time: only the kernel modules (``na_kernels``, ``bra_kernels``),
which are themselves imported lazily, may import it.
"""
import triton
import triton.language as tl


@triton.jit
def load_tokens(X, b, head, y, x, sb, sh, sw, sn, ch, CH, CHANNELS_FIRST: tl.constexpr):
    """Channels ``ch`` (those ``< CH``) of the tokens at image rows / columns ``(y, x)`` of batch ``b``
    and head ``head`` (channel offset ``head * sn``): ``(tokens, ch)``, or ``(ch, tokens)`` with
    CHANNELS_FIRST; channels beyond ``CH`` read as zeros."""
    base = X + b * sb + head * sn
    if CHANNELS_FIRST:
        t = tl.load(base + y[None, :] * sh + x[None, :] * sw + ch[:, None], mask=ch[:, None] < CH, other=0.0)
    else:
        t = tl.load(base + y[:, None] * sh + x[:, None] * sw + ch[None, :], mask=ch[None, :] < CH, other=0.0)
    return t


@triton.jit
def store_tokens(X, value, valid, b, head, y, x, sb, sh, sw, sn, ch, CH):
    """Store ``(tokens, ch)`` at the ``valid`` tokens, where :func:`load_tokens` reads them."""
    tl.store(X + b * sb + head * sn + y[:, None] * sh + x[:, None] * sw + ch[None, :],
             value.to(X.dtype.element_ty), mask=valid[:, None] & (ch[None, :] < CH))


@triton.jit
def row_stats(LSE, DELTA, b, head, y, x, slb, slh, slw, sln):
    """Log-sum-exp and ``delta = rowsum(dO * O)`` of the queries at ``(y, x)`` (tensors of equal strides)."""
    off = b * slb + head * sln + y * slh + x * slw
    return tl.load(LSE + off), tl.load(DELTA + off)
