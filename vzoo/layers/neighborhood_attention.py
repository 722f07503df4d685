"""Neighborhood attention: one functional front, three backends (Triton, fast PyTorch, natten).

Layout (natten's): ``query``, ``key``, ``value`` are ``(B, *spatial, heads, head_dim)``, i.e.
``(B, L, heads, C)`` for :func:`na1d`, ``(B, H, W, heads, C)`` for :func:`na2d` and
``(B, D, H, W, heads, C)`` for :func:`na3d`; the output has the layout of ``value``.

Each query attends to the ``kernel_size`` keys around it along every axis (natten 0.21 semantics;
an even ``kernel_size`` puts ``k/2`` keys before the query and ``k/2 - 1`` after it):

* **borders**: the window is shifted inward so every query sees exactly ``prod(kernel_size)`` keys;
* **dilation** ``d``: the axis is split into ``d`` interleaved groups (``x % d``) and attention runs
  inside each group, in the group's own coordinates;
* **stride** ``s`` (``1 <= s <= kernel_size``): queries are grouped in runs of ``s`` that share the
  window of their centre query; ``stride == kernel_size`` on a size divisible by it is non-overlapping
  blocked (Swin-style window) attention;
* **causal** (per axis): query ``x`` sees keys ``max(leader - k + 1, 0) .. x`` (``leader`` the last query
  of its stride group);
* **rpb** (NAT / DiNAT relative positional bias), shape ``(heads, 2k_1-1, 2k_2-1[, 2k_3-1])``, added to
  the score of query ``x`` and key ``y`` at ``rpb[head, y_1 - x_1 + k_1 - 1, y_2 - x_2 + k_2 - 1]``
  (offsets in dilation-group coordinates). A Swin-style table indexed by ``x - y + w - 1`` is the same
  table flipped: pass ``swin_table.flip(-1, -2)``.

Backends (``backend=``): ``"triton"`` (fused kernels in ``vzoo.kernels``; default for CUDA tensors),
``"torch"`` (tiled matrix-multiply path, ``O(N k^2)`` memory; default elsewhere) and ``"natten"``
(calls natten itself, for comparison; no rpb). See ``docs/kernels.md``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch

__all__ = ["na1d", "na2d", "na3d", "na1d_qk", "na1d_av", "na2d_qk", "na2d_av", "na3d_qk", "na3d_av",
           "neighborhood_attention"]

_BACKENDS = ("triton", "torch", "natten")
IntOrTuple = Union[int, Sequence[int]]


# ---------------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------------
def _tuple_arg(name, value, n, *, lo=1, fn="na"):
    if isinstance(value, bool):
        raise TypeError(f"{fn}: {name} must be an int or a tuple of {n} ints, got {value!r}")
    if isinstance(value, int):
        value = (value,) * n
    try:
        value = tuple(value)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be an int or a tuple of {n} ints, got {value!r}") from None
    if len(value) != n or not all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        raise TypeError(f"{fn}: {name} must be an int or a tuple of {n} ints, got {value!r}")
    if any(x < lo for x in value):
        raise ValueError(f"{fn}: {name} must be >= {lo} along every axis, got {value!r}")
    return value


def _causal_arg(value, n, fn):
    if isinstance(value, bool):
        return (value,) * n
    try:
        value = tuple(value)
    except TypeError:
        raise TypeError(f"{fn}: is_causal must be a bool or a tuple of {n} bools, got {value!r}") from None
    if len(value) != n or not all(isinstance(x, bool) for x in value):
        raise TypeError(f"{fn}: is_causal must be a bool or a tuple of {n} bools, got {value!r}")
    return value


def _check_tensor(name, t, n, fn, what="(B, " + "{sp}" + ", heads, head_dim)"):
    spatial = {1: "L", 2: "H, W", 3: "D, H, W"}[n]
    layout = what.format(sp=spatial)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor of layout {layout}, got {type(t).__name__}")
    if t.dim() != n + 3:
        raise ValueError(f"{fn}: {name} must be {n + 3}-D with layout {layout} (heads and head_dim last, "
                         f"not channels-first), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{fn}: {name} must be floating point (float16, bfloat16, float32, float64), "
                        f"got {t.dtype}")


def _check_same(fn, ref_name, ref, name, t, *, last_dim=True):
    if t.dtype != ref.dtype:
        raise TypeError(f"{fn}: {name} dtype {t.dtype} does not match {ref_name} dtype {ref.dtype}")
    if t.device != ref.device:
        raise ValueError(f"{fn}: {name} is on {t.device} but {ref_name} is on {ref.device}")
    a = tuple(t.shape) if last_dim else tuple(t.shape[:-1])
    b = tuple(ref.shape) if last_dim else tuple(ref.shape[:-1])
    if a != b:
        what = "shape" if last_dim else "shape (all but the last dim)"
        raise ValueError(f"{fn}: {name} {what} {tuple(t.shape)} does not match {ref_name} shape {tuple(ref.shape)}")


def _check_geometry(fn, shape, kernel, stride, dilation):
    for i, (L, k, s, d) in enumerate(zip(shape, kernel, stride, dilation)):
        if k * d > L:
            raise ValueError(f"{fn}: kernel_size * dilation ({k} * {d} = {k * d}) along axis {i} is larger "
                             f"than the input size {L}; use a smaller kernel_size or dilation")
        if s > k:
            raise ValueError(f"{fn}: stride {s} along axis {i} must be <= kernel_size {k}")


def _check_rpb(fn, rpb, heads, kernel, ref):
    if rpb is None:
        return
    if not isinstance(rpb, torch.Tensor) or not rpb.is_floating_point():
        raise TypeError(f"{fn}: rpb must be a floating-point tensor of shape (heads, 2k-1, ...), got "
                        f"{type(rpb).__name__ if not isinstance(rpb, torch.Tensor) else rpb.dtype}")
    want = (heads,) + tuple(2 * k - 1 for k in kernel)
    if tuple(rpb.shape) != want:
        raise ValueError(f"{fn}: rpb must have shape (heads, 2*kernel_size-1 per axis) = {want}, "
                         f"got {tuple(rpb.shape)}")
    if rpb.device != ref.device:
        raise ValueError(f"{fn}: rpb is on {rpb.device} but query is on {ref.device}")


def _pick_backend(fn, backend, q):
    if backend is None:
        if q.is_cuda:
            from vzoo.kernels import na as _kna  # noqa: F401  (imports triton lazily)
            return "triton" if _kna.triton_available() else "torch"
        return "torch"
    if backend not in _BACKENDS:
        raise ValueError(f"{fn}: backend must be one of {_BACKENDS} or None, got {backend!r}")
    return backend


# ---------------------------------------------------------------------------------------------------
# the op
# ---------------------------------------------------------------------------------------------------
def neighborhood_attention(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False,
                           scale=None, rpb=None, backend=None, *, tile=None):
    """Neighborhood attention for any number of spatial axes (1, 2 or 3); see :func:`na2d`."""
    if not isinstance(query, torch.Tensor):
        raise TypeError(f"na: query must be a torch.Tensor, got {type(query).__name__}")
    n = query.dim() - 3
    fn = {1: "na1d", 2: "na2d", 3: "na3d"}.get(n, "na")
    if n not in (1, 2, 3):
        raise ValueError(f"na: query must be 4-D (B, L, heads, head_dim), 5-D (B, H, W, heads, head_dim) or "
                         f"6-D (B, D, H, W, heads, head_dim), got shape {tuple(query.shape)}")
    return _na(fn, n, query, key, value, kernel_size, stride, dilation, is_causal, scale, rpb, backend, tile)


def _na(fn, n, query, key, value, kernel_size, stride, dilation, is_causal, scale, rpb, backend, tile):
    _check_tensor("query", query, n, fn)
    _check_tensor("key", key, n, fn)
    _check_tensor("value", value, n, fn)
    _check_same(fn, "query", query, "key", key)
    _check_same(fn, "query", query, "value", value, last_dim=False)
    kernel = _tuple_arg("kernel_size", kernel_size, n, fn=fn)
    stride = _tuple_arg("stride", stride, n, fn=fn)
    dilation = _tuple_arg("dilation", dilation, n, fn=fn)
    causal = _causal_arg(is_causal, n, fn)
    shape = tuple(query.shape[1:1 + n])
    _check_geometry(fn, shape, kernel, stride, dilation)
    heads, head_dim = query.shape[-2], query.shape[-1]
    _check_rpb(fn, rpb, heads, kernel, query)
    if scale is None:
        scale = head_dim ** -0.5
    elif not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise TypeError(f"{fn}: scale must be a float or None, got {scale!r}")
    backend = _pick_backend(fn, backend, query)
    if backend == "natten":
        return _natten_call(fn, n, query, key, value, kernel, stride, dilation, causal, float(scale), rpb)
    if backend == "triton":
        from vzoo.kernels import na as _kna
        return _kna.na_triton(query, key, value, kernel, stride, dilation, causal, float(scale), rpb)
    from ._na_torch import na_forward
    return na_forward(query, key, value, kernel, stride, dilation, causal, float(scale), rpb, tile)


def _natten_call(fn, n, q, k, v, kernel, stride, dilation, causal, scale, rpb):
    if rpb is not None:
        raise ValueError(f"{fn}: backend='natten' has no relative positional bias (natten >= 0.20 removed it); "
                         f"use backend='torch' or 'triton'")
    try:
        import natten
    except ImportError as e:
        raise ImportError(f"{fn}: backend='natten' needs the natten package (pip install natten)") from e
    op = {1: natten.na1d, 2: natten.na2d, 3: natten.na3d}[n]
    return op(q, k, v, kernel_size=kernel, stride=stride, dilation=dilation, is_causal=causal, scale=scale)


def na1d(query, key, value, kernel_size: IntOrTuple, stride: IntOrTuple = 1, dilation: IntOrTuple = 1,
         is_causal=False, scale: Optional[float] = None, rpb: Optional[torch.Tensor] = None,
         backend: Optional[str] = None):
    """1-D neighborhood attention on ``(B, L, heads, head_dim)`` tensors; see :func:`na2d`."""
    return _na("na1d", 1, query, key, value, kernel_size, stride, dilation, is_causal, scale, rpb, backend, None)


def na2d(query, key, value, kernel_size: IntOrTuple, stride: IntOrTuple = 1, dilation: IntOrTuple = 1,
         is_causal=False, scale: Optional[float] = None, rpb: Optional[torch.Tensor] = None,
         backend: Optional[str] = None):
    """2-D neighborhood attention (natten's ``na2d``, plus NAT's relative positional bias).

    Args:
        query, key: ``(B, H, W, heads, head_dim)``; value: ``(B, H, W, heads, head_dim_v)``.
        kernel_size: window size, an int or ``(kh, kw)``; ``kernel_size * dilation <= (H, W)``. Even
            sizes follow natten (``k/2`` keys before the query, ``k/2 - 1`` after), so a Swin window of 16
            is ``kernel_size=16, stride=16``.
        stride: ``1 <= stride <= kernel_size``; ``stride == kernel_size`` gives blocked window attention.
        dilation: ``>= 1``; attention within each of the ``dilation`` interleaved groups.
        is_causal: a bool or ``(bool, bool)``.
        scale: attention scale, default ``head_dim ** -0.5``.
        rpb: optional ``(heads, 2*kh-1, 2*kw-1)`` relative positional bias (see the module docstring).
        backend: ``None`` (auto: Triton on CUDA, torch elsewhere), ``"triton"``, ``"torch"``, ``"natten"``.

    Returns:
        ``(B, H, W, heads, head_dim_v)``, the dtype of ``query``.
    """
    return _na("na2d", 2, query, key, value, kernel_size, stride, dilation, is_causal, scale, rpb, backend, None)


def na3d(query, key, value, kernel_size: IntOrTuple, stride: IntOrTuple = 1, dilation: IntOrTuple = 1,
         is_causal=False, scale: Optional[float] = None, rpb: Optional[torch.Tensor] = None,
         backend: Optional[str] = None):
    """3-D neighborhood attention on ``(B, D, H, W, heads, head_dim)`` tensors; see :func:`na2d`."""
    return _na("na3d", 3, query, key, value, kernel_size, stride, dilation, is_causal, scale, rpb, backend, None)


# ---------------------------------------------------------------------------------------------------
# split ops: scores and weighted sum (for modules that compute or modify the weights themselves)
# ---------------------------------------------------------------------------------------------------
def _qk(fn, n, query, key, kernel_size, dilation, rpb):
    _check_tensor("query", query, n, fn)
    _check_tensor("key", key, n, fn)
    _check_same(fn, "query", query, "key", key)
    kernel = _tuple_arg("kernel_size", kernel_size, n, fn=fn)
    dilation = _tuple_arg("dilation", dilation, n, fn=fn)
    _check_geometry(fn, tuple(query.shape[1:1 + n]), kernel, (1,) * n, dilation)
    _check_rpb(fn, rpb, query.shape[-2], kernel, query)
    from ._na_torch import na_qk
    return na_qk(query, key, kernel, dilation, rpb)


def _av(fn, n, attn, value, kernel_size, dilation):
    _check_tensor("value", value, n, fn)
    _check_tensor("attn", attn, n, fn, what="(B, {sp}, heads, prod(kernel_size))")
    _check_same(fn, "value", value, "attn", attn, last_dim=False)
    kernel = _tuple_arg("kernel_size", kernel_size, n, fn=fn)
    dilation = _tuple_arg("dilation", dilation, n, fn=fn)
    _check_geometry(fn, tuple(value.shape[1:1 + n]), kernel, (1,) * n, dilation)
    if attn.shape[-1] != math.prod(kernel):
        raise ValueError(f"{fn}: attn last dim must be prod(kernel_size) = {math.prod(kernel)}, "
                         f"got {attn.shape[-1]}")
    from ._na_torch import na_av
    return na_av(attn, value, kernel, dilation)


def na1d_qk(query, key, kernel_size: IntOrTuple, dilation: IntOrTuple = 1, rpb=None):
    """``(B, L, heads, k)`` scores ``query . key_neighbour`` (+ rpb), unscaled; see :func:`na2d_qk`."""
    return _qk("na1d_qk", 1, query, key, kernel_size, dilation, rpb)


def na1d_av(attn, value, kernel_size: IntOrTuple, dilation: IntOrTuple = 1):
    """``(B, L, heads, C)`` weighted sum of the neighbours' values; see :func:`na2d_av`."""
    return _av("na1d_av", 1, attn, value, kernel_size, dilation)


def na2d_qk(query, key, kernel_size: IntOrTuple, dilation: IntOrTuple = 1, rpb=None):
    """Scores of every query with its ``kh*kw`` neighbours: ``(B, H, W, heads, kh*kw)``.

    Unscaled dot products (scale ``query`` yourself), plus ``rpb`` if given. Neighbour ``j = a*kw + b`` is
    the key at row ``lo_h + a*dh``, column ``lo_w + b*dw`` of the query's (border-shifted) window, the
    order of natten's legacy ``na2d_qk``. Stride 1, non-causal. Differentiable (torch path on any device).
    """
    return _qk("na2d_qk", 2, query, key, kernel_size, dilation, rpb)


def na2d_av(attn, value, kernel_size: IntOrTuple, dilation: IntOrTuple = 1):
    """``out[q] = sum_j attn[q, j] * value[neighbour j of q]`` on ``(B, H, W, heads, ...)`` tensors.

    ``attn`` is ``(B, H, W, heads, kh*kw)`` in the neighbour order of :func:`na2d_qk` (any weights: a
    softmax of ``na2d_qk`` gives neighborhood attention, ContMix-style modules pass their own).
    """
    return _av("na2d_av", 2, attn, value, kernel_size, dilation)


def na3d_qk(query, key, kernel_size: IntOrTuple, dilation: IntOrTuple = 1, rpb=None):
    """3-D :func:`na2d_qk`: ``(B, D, H, W, heads, kd*kh*kw)``."""
    return _qk("na3d_qk", 3, query, key, kernel_size, dilation, rpb)


def na3d_av(attn, value, kernel_size: IntOrTuple, dilation: IntOrTuple = 1):
    """3-D :func:`na2d_av`."""
    return _av("na3d_av", 3, attn, value, kernel_size, dilation)
