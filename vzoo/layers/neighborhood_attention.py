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

Backends (``backend=``): ``"triton"`` (fused kernels in ``vzoo.kernels``, 1-D and 2-D; default for CUDA
tensors), ``"torch"`` (tiled matrix-multiply path, ``O(N k^2)`` memory; default elsewhere) and ``"natten"``
(calls natten itself, for comparison; no rpb). ``None`` / ``"auto"`` choose, and fall back to ``"torch"``
where Triton cannot run the problem; a named backend that cannot run it raises ``ValueError`` saying why
(``vzoo.layers._backend``). See ``docs/kernels.md``.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Union

import torch

from vzoo.kernels.na import na_triton
from vzoo.kernels.na_split import na_av_triton, na_qk_triton

from ._backend import NA_BACKENDS, NA_SPLIT_BACKENDS, choose_backend
from ._na_torch import na_av, na_forward, na_qk, plain_attention

__all__ = ["na1d", "na2d", "na3d", "na1d_qk", "na1d_av", "na2d_qk", "na2d_av", "na3d_qk", "na3d_av",
           "neighborhood_attention"]

IntOrTuple = Union[int, Sequence[int]]


# ---------------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------------
def _tuple_arg(op_name, name, value, n, *, lo=1):
    if isinstance(value, bool):
        raise TypeError(f"{op_name}: {name} must be an int or a tuple of {n} ints, got {value!r}")
    if isinstance(value, int):
        value = (value,) * n
    try:
        value = tuple(value)
    except TypeError:
        raise TypeError(f"{op_name}: {name} must be an int or a tuple of {n} ints, got {value!r}") from None
    if len(value) != n or not all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        raise TypeError(f"{op_name}: {name} must be an int or a tuple of {n} ints, got {value!r}")
    if any(x < lo for x in value):
        raise ValueError(f"{op_name}: {name} must be >= {lo} along every axis, got {value!r}")
    return value


def _causal_arg(op_name, value, n):
    if isinstance(value, bool):
        return (value,) * n
    try:
        value = tuple(value)
    except TypeError:
        raise TypeError(f"{op_name}: is_causal must be a bool or a tuple of {n} bools, got {value!r}") from None
    if len(value) != n or not all(isinstance(x, bool) for x in value):
        raise TypeError(f"{op_name}: is_causal must be a bool or a tuple of {n} bools, got {value!r}")
    return value


_SPATIAL = {1: "L", 2: "H, W", 3: "D, H, W"}


def _check_tensor(op_name, name, t, n, what="(B, " + "{sp}" + ", heads, head_dim)"):
    layout = what.format(sp=_SPATIAL[n])
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op_name}: {name} must be a torch.Tensor of layout {layout}, got {type(t).__name__}")
    if t.dim() != n + 3:
        raise ValueError(f"{op_name}: {name} must be {n + 3}-D with layout {layout} (heads and head_dim last, "
                         f"not channels-first), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{op_name}: {name} must be floating point (float16, bfloat16, float32, float64), "
                        f"got {t.dtype}")


def _check_same(op_name, ref_name, ref, name, t, *, last_dim=True):
    if t.dtype != ref.dtype:
        raise TypeError(f"{op_name}: {name} dtype {t.dtype} does not match {ref_name} dtype {ref.dtype}")
    if t.device != ref.device:
        raise ValueError(f"{op_name}: {name} is on {t.device} but {ref_name} is on {ref.device}")
    a = tuple(t.shape) if last_dim else tuple(t.shape[:-1])
    b = tuple(ref.shape) if last_dim else tuple(ref.shape[:-1])
    if a != b:
        what = "shape" if last_dim else "shape (all but the last dim)"
        raise ValueError(f"{op_name}: {name} {what} {tuple(t.shape)} does not match {ref_name} shape "
                         f"{tuple(ref.shape)}")


def _check_geometry(op_name, shape, kernel, stride, dilation):
    for i, (L, k, s, d) in enumerate(zip(shape, kernel, stride, dilation)):
        if k * d > L:
            raise ValueError(f"{op_name}: kernel_size * dilation ({k} * {d} = {k * d}) along axis {i} is larger "
                             f"than the input size {L}; use a smaller kernel_size or dilation")
        if s > k:
            raise ValueError(f"{op_name}: stride {s} along axis {i} must be <= kernel_size {k}")


def _check_fits(op_name, ref, kernel, stride, dilation, n):
    """:func:`_check_geometry` on the map of ``ref``. A kernel that does not fit but would fit a heads-first
    tensor (channels-first ``(B, heads, *spatial, head_dim)``, natten < 0.20's layout) is a layout error."""
    try:
        _check_geometry(op_name, tuple(ref.shape[1:1 + n]), kernel, stride, dilation)
    except ValueError as e:
        layout = f"(B, {_SPATIAL[n]}, heads, head_dim)"
        heads_first = tuple(ref.shape[2:2 + n])
        if all(k * d <= L for k, d, L in zip(kernel, dilation, heads_first)):
            raise ValueError(
                f"{op_name}: layout error: tensors must be {layout} (heads and head_dim last); shape "
                f"{tuple(ref.shape)} looks heads-first / channels-first (B, heads, {_SPATIAL[n]}, head_dim), "
                f"natten < 0.20's layout: pass x.movedim(1, -2)") from None
        raise ValueError(f"{e}. (Tensors are {layout}; heads-first ones need x.movedim(1, -2).)") from None


def _check_rpb(op_name, rpb, heads, kernel, ref):
    if rpb is None:
        return
    if not isinstance(rpb, torch.Tensor) or not rpb.is_floating_point():
        raise TypeError(f"{op_name}: rpb must be a floating-point tensor of shape (heads, 2k-1, ...), got "
                        f"{type(rpb).__name__ if not isinstance(rpb, torch.Tensor) else rpb.dtype}")
    want = (heads,) + tuple(2 * k - 1 for k in kernel)
    if tuple(rpb.shape) != want:
        raise ValueError(f"{op_name}: rpb must have shape (heads, 2*kernel_size-1 per axis) = {want}, "
                         f"got {tuple(rpb.shape)}")
    if rpb.device != ref.device:
        raise ValueError(f"{op_name}: rpb is on {rpb.device} but query is on {ref.device}")


# ---------------------------------------------------------------------------------------------------
# checks remembered per call signature
# ---------------------------------------------------------------------------------------------------
# A model calls an op with the same shapes and arguments at every step: what the checks derive from them
# (the per-axis geometry, the scale and the backend: 8 us of Python, 4% of a 7x7 na2d call on the CPU)
# is looked up, keyed on everything the checks read (which backends can run is fixed for the process). Only
# calls that passed are stored, so a bad call raises its message every time. Bounded: cleared when full (a
# model makes a handful of signatures). A dict, not functools.lru_cache: the checks read the tensors, which
# are not part of the key, and lru_cache(typed=True) does not tell (True, 1) from (1, 1).
_CHECKED: Dict[tuple, tuple] = {}
_MAX_CHECKED = 512
_SCALARS = (int, bool, float, str)


def _signature(op_name, tensors, args):
    """Hashable key of a call: ``op_name``, shape, dtype and device of each of ``tensors`` (None stays None)
    and each of ``args`` with its type (as dict keys ``True == 1 == 1.0``, which the checks tell apart).
    None when the call is not cached: an argument of another kind (the checks then run, and raise), or
    under ``torch.compile`` (dynamo traces the checks; a lookup in a global dict would only add guards)."""
    if torch.compiler.is_compiling():
        return None
    key = [op_name]
    for t in tensors:
        if t is None:
            key.append(None)
        elif isinstance(t, torch.Tensor):
            key += (t.shape, t.dtype, t.device)  # flat: a torch.Size never equals None
        else:
            return None
    for a in args:
        kind = type(a)
        if isinstance(a, (tuple, list)):  # torch.Size too
            key.append((kind, tuple(map(type, a)), tuple(a)))
        elif a is None or kind in _SCALARS:
            key.append((kind, a))
        else:
            return None
    return tuple(key)


def _lookup(signature):
    """What the checks derived for a call of this signature, None when they have not passed one yet."""
    if signature is None:  # not cached (under torch.compile: the dict is never read, so dynamo never guards on it)
        return None
    try:
        return _CHECKED.get(signature)
    except TypeError:  # unhashable, e.g. a list inside a tuple argument: the checks reject it
        return None


def _remember(signature, checked):
    """Store (``signature`` not None) and return what the checks of a passing call derived."""
    if signature is not None:
        if len(_CHECKED) >= _MAX_CHECKED:
            _CHECKED.clear()
        _CHECKED[signature] = checked
    return checked


# ---------------------------------------------------------------------------------------------------
# the op
# ---------------------------------------------------------------------------------------------------
def neighborhood_attention(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False,
                           scale=None, rpb=None, backend=None, *, tile=None):
    """Neighborhood attention for any number of spatial axes (1, 2 or 3); see :func:`na2d`."""
    if not isinstance(query, torch.Tensor):
        raise TypeError(f"na: query must be a torch.Tensor, got {type(query).__name__}")
    n = query.dim() - 3
    if n not in (1, 2, 3):
        raise ValueError(f"na: query must be 4-D (B, L, heads, head_dim), 5-D (B, H, W, heads, head_dim) or "
                         f"6-D (B, D, H, W, heads, head_dim), got shape {tuple(query.shape)}")
    return _na(op_name=f"na{n}d", spatial_dims=n, query=query, key=key, value=value, kernel_size=kernel_size,
               stride=stride, dilation=dilation, is_causal=is_causal, scale=scale, rpb=rpb, backend=backend,
               tile=tile)


def _na(*, op_name, spatial_dims, query, key, value, kernel_size, stride, dilation, is_causal, scale, rpb,
        backend, tile=None):
    """Check the arguments of a ``spatial_dims``-D call (once per signature), choose the backend and run it."""
    signature = _signature(op_name, (query, key, value, rpb),
                           (kernel_size, stride, dilation, is_causal, scale, backend))
    backend, geometry = _lookup(signature) or _remember(signature, _check_na(
        op_name=op_name, spatial_dims=spatial_dims, query=query, key=key, value=value, kernel_size=kernel_size,
        stride=stride, dilation=dilation, is_causal=is_causal, scale=scale, rpb=rpb, backend=backend))
    if backend == "plain" and tile is None:  # the torch path of a call that is plain attention
        return plain_attention(query, key, value, scale=geometry["scale"])
    if backend == "natten":
        return _natten_call(spatial_dims=spatial_dims, q=query, k=key, v=value, rpb=rpb, **geometry)
    if backend == "triton":
        return na_triton(query, key, value, rpb=rpb, **geometry)
    return na_forward(query, key, value, rpb=rpb, tile=tile, **geometry)


def _check_na(*, op_name, spatial_dims, query, key, value, kernel_size, stride, dilation, is_causal, scale, rpb,
              backend):
    """``(backend, geometry)`` of a ``spatial_dims``-D call: the backend that runs it and its per-axis
    ``kernel``, ``stride``, ``dilation``, ``causal`` and float ``scale``; raises on a bad argument."""
    n = spatial_dims
    _check_tensor(op_name, "query", query, n)
    _check_tensor(op_name, "key", key, n)
    _check_tensor(op_name, "value", value, n)
    _check_same(op_name, "query", query, "key", key)
    _check_same(op_name, "query", query, "value", value, last_dim=False)
    kernel = _tuple_arg(op_name, "kernel_size", kernel_size, n)
    stride = _tuple_arg(op_name, "stride", stride, n)
    dilation = _tuple_arg(op_name, "dilation", dilation, n)
    causal = _causal_arg(op_name, is_causal, n)
    _check_fits(op_name, query, kernel, stride, dilation, n)
    num_heads, head_dim = query.shape[-2], query.shape[-1]
    _check_rpb(op_name, rpb, num_heads, kernel, query)
    if scale is None:
        scale = head_dim ** -0.5
    elif not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise TypeError(f"{op_name}: scale must be a float or None, got {scale!r}")
    backend = choose_backend(op_name, backend, NA_BACKENDS, device=query.device, dtype=query.dtype,
                             spatial_dims=n, has_rpb=rpb is not None)
    # every window is the whole map (kernel == map, no dilation, not causal, no bias): plain attention, which
    # the torch path would reach after its dispatch steps; "plain" (internal) goes there directly
    plain = (backend == "torch" and rpb is None and query.numel() > 0 and value.numel() > 0
             and not any(causal) and all(d == 1 for d in dilation)
             and tuple(kernel) == tuple(query.shape[1:1 + n]))
    return "plain" if plain else backend, dict(kernel=kernel, stride=stride, dilation=dilation, causal=causal,
                                               scale=float(scale))


def _natten_call(*, spatial_dims, q, k, v, kernel, stride, dilation, causal, scale, rpb):
    import natten  # optional, for comparison only: imported when asked for (the chooser checked it is there)
    op = {1: natten.na1d, 2: natten.na2d, 3: natten.na3d}[spatial_dims]
    return op(q, k, v, kernel_size=kernel, stride=stride, dilation=dilation, is_causal=causal, scale=scale)


def na1d(query, key, value, kernel_size: IntOrTuple, stride: IntOrTuple = 1, dilation: IntOrTuple = 1,
         is_causal=False, scale: Optional[float] = None, rpb: Optional[torch.Tensor] = None,
         backend: Optional[str] = None):
    """1-D neighborhood attention on ``(B, L, heads, head_dim)`` tensors; see :func:`na2d`."""
    return _na(op_name="na1d", spatial_dims=1, query=query, key=key, value=value, kernel_size=kernel_size,
               stride=stride, dilation=dilation, is_causal=is_causal, scale=scale, rpb=rpb, backend=backend)


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
        backend: ``None`` / ``"auto"`` (Triton on CUDA, torch elsewhere or where Triton cannot run the
            problem), ``"triton"``, ``"torch"``, ``"natten"``; a named backend that cannot run the problem
            (e.g. ``"triton"`` on CPU tensors) raises ``ValueError`` saying why.

    Returns:
        ``(B, H, W, heads, head_dim_v)``, the dtype of ``query``.
    """
    return _na(op_name="na2d", spatial_dims=2, query=query, key=key, value=value, kernel_size=kernel_size,
               stride=stride, dilation=dilation, is_causal=is_causal, scale=scale, rpb=rpb, backend=backend)


def na3d(query, key, value, kernel_size: IntOrTuple, stride: IntOrTuple = 1, dilation: IntOrTuple = 1,
         is_causal=False, scale: Optional[float] = None, rpb: Optional[torch.Tensor] = None,
         backend: Optional[str] = None):
    """3-D neighborhood attention on ``(B, D, H, W, heads, head_dim)`` tensors; see :func:`na2d`."""
    return _na(op_name="na3d", spatial_dims=3, query=query, key=key, value=value, kernel_size=kernel_size,
               stride=stride, dilation=dilation, is_causal=is_causal, scale=scale, rpb=rpb, backend=backend)


# ---------------------------------------------------------------------------------------------------
# split ops: scores and weighted sum (for modules that compute or modify the weights themselves)
# ---------------------------------------------------------------------------------------------------
def _split_geometry(op_name, ref, kernel_size, dilation, n):
    """Per-axis kernel and dilation of a split op, checked against the map of ``ref``; a kernel that does
    not fit says how a heads-first tensor (natten < 0.20's layout) would have to be permuted."""
    kernel = _tuple_arg(op_name, "kernel_size", kernel_size, n)
    dilation = _tuple_arg(op_name, "dilation", dilation, n)
    _check_fits(op_name, ref, kernel, (1,) * n, dilation, n)
    return kernel, dilation


def _split_backend(op_name, backend, ref, n, rpb=None):
    return choose_backend(op_name, backend, NA_SPLIT_BACKENDS, device=ref.device, dtype=ref.dtype, spatial_dims=n,
                          has_rpb=rpb is not None)


def _qk(*, op_name, spatial_dims, query, key, kernel_size, dilation, rpb, backend=None):
    signature = _signature(op_name, (query, key, rpb), (kernel_size, dilation, backend))
    backend, kernel, dilation = _lookup(signature) or _remember(signature, _check_qk(
        op_name=op_name, spatial_dims=spatial_dims, query=query, key=key, kernel_size=kernel_size, dilation=dilation,
        rpb=rpb, backend=backend))
    if backend == "triton":
        return na_qk_triton(query, key, kernel=kernel, dilation=dilation)
    return na_qk(query, key, kernel=kernel, dilation=dilation, rpb=rpb)


def _check_qk(*, op_name, spatial_dims, query, key, kernel_size, dilation, rpb, backend):
    """``(backend, kernel, dilation)`` of a split scores call; raises on a bad argument."""
    n = spatial_dims
    _check_tensor(op_name, "query", query, n)
    _check_tensor(op_name, "key", key, n)
    _check_same(op_name, "query", query, "key", key)
    kernel, dilation = _split_geometry(op_name, query, kernel_size, dilation, n)
    _check_rpb(op_name, rpb, query.shape[-2], kernel, query)
    return _split_backend(op_name, backend, query, n, rpb), kernel, dilation


def _av(*, op_name, spatial_dims, attn, value, kernel_size, dilation, backend=None):
    signature = _signature(op_name, (attn, value), (kernel_size, dilation, backend))
    backend, kernel, dilation = _lookup(signature) or _remember(signature, _check_av(
        op_name=op_name, spatial_dims=spatial_dims, attn=attn, value=value, kernel_size=kernel_size,
        dilation=dilation, backend=backend))
    if backend == "triton":
        return na_av_triton(attn, value, kernel=kernel, dilation=dilation)
    return na_av(attn, value, kernel=kernel, dilation=dilation)


def _check_av(*, op_name, spatial_dims, attn, value, kernel_size, dilation, backend):
    """``(backend, kernel, dilation)`` of a split weighted-sum call; raises on a bad argument."""
    n = spatial_dims
    _check_tensor(op_name, "value", value, n)
    _check_tensor(op_name, "attn", attn, n, what="(B, {sp}, heads, prod(kernel_size))")
    _check_same(op_name, "value", value, "attn", attn, last_dim=False)
    kernel, dilation = _split_geometry(op_name, value, kernel_size, dilation, n)
    if attn.shape[-1] != math.prod(kernel):
        raise ValueError(f"{op_name}: attn last dim must be prod(kernel_size) = {math.prod(kernel)}, "
                         f"got {attn.shape[-1]}")
    return _split_backend(op_name, backend, value, n), kernel, dilation


def na1d_qk(query, key, kernel_size: IntOrTuple, dilation: IntOrTuple = 1, rpb=None):
    """``(B, L, heads, k)`` scores ``query . key_neighbour`` (+ rpb), unscaled; see :func:`na2d_qk`."""
    return _qk(op_name="na1d_qk", spatial_dims=1, query=query, key=key, kernel_size=kernel_size,
               dilation=dilation, rpb=rpb)


def na1d_av(attn, value, kernel_size: IntOrTuple, dilation: IntOrTuple = 1):
    """``(B, L, heads, C)`` weighted sum of the neighbours' values; see :func:`na2d_av`."""
    return _av(op_name="na1d_av", spatial_dims=1, attn=attn, value=value, kernel_size=kernel_size,
               dilation=dilation)


def na2d_qk(query, key, kernel_size: IntOrTuple, dilation: IntOrTuple = 1, rpb=None,
            backend: Optional[str] = None):
    """Scores of every query with its ``kh*kw`` neighbours: ``(B, H, W, heads, kh*kw)``.

    Unscaled dot products (scale ``query`` yourself), plus ``rpb`` if given. Neighbour ``j = a*kw + b`` is
    the key at row ``lo_h + a*dh``, column ``lo_w + b*dw`` of the query's (border-shifted) window, the
    order of natten's legacy ``na2d_qk``. Stride 1, non-causal. Differentiable. ``backend``: ``None`` /
    ``"auto"`` (fused Triton kernels on CUDA without rpb, torch otherwise), ``"triton"``, ``"torch"``.
    """
    return _qk(op_name="na2d_qk", spatial_dims=2, query=query, key=key, kernel_size=kernel_size,
               dilation=dilation, rpb=rpb, backend=backend)


def na2d_av(attn, value, kernel_size: IntOrTuple, dilation: IntOrTuple = 1, backend: Optional[str] = None):
    """``out[q] = sum_j attn[q, j] * value[neighbour j of q]`` on ``(B, H, W, heads, ...)`` tensors.

    ``attn`` is ``(B, H, W, heads, kh*kw)`` in the neighbour order of :func:`na2d_qk` (any weights: a
    softmax of ``na2d_qk`` gives neighborhood attention, ContMix-style modules pass their own); natten
    0.17's heads-first ``na2d_av(attn, value, ...)`` is ``na2d_av(attn.movedim(1, -2), value.movedim(1, -2),
    ...).movedim(-2, 1)``. No ``k*k`` gathered copy of ``value`` is formed, forward or backward: fused Triton
    kernels on CUDA (``backend=None`` / ``"auto"`` or ``"triton"``), elsewhere a PyTorch loop over the
    kernel offsets (``"torch"``).
    """
    return _av(op_name="na2d_av", spatial_dims=2, attn=attn, value=value, kernel_size=kernel_size,
               dilation=dilation, backend=backend)


def na3d_qk(query, key, kernel_size: IntOrTuple, dilation: IntOrTuple = 1, rpb=None):
    """3-D :func:`na2d_qk`: ``(B, D, H, W, heads, kd*kh*kw)``."""
    return _qk(op_name="na3d_qk", spatial_dims=3, query=query, key=key, kernel_size=kernel_size,
               dilation=dilation, rpb=rpb)


def na3d_av(attn, value, kernel_size: IntOrTuple, dilation: IntOrTuple = 1):
    """3-D :func:`na2d_av`."""
    return _av(op_name="na3d_av", spatial_dims=3, attn=attn, value=value, kernel_size=kernel_size,
               dilation=dilation)
