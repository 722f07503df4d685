"""Neighborhood attention in plain PyTorch: the fast CPU path and the brute-force reference.

Semantics (natten 0.21, per spatial axis of length ``L``, kernel ``k`` (odd or even), stride ``s``,
dilation ``d``; see ``docs/kernels.md``):

* dilation splits the axis into ``d`` groups ``g = x % d``; a query only sees keys of its own group,
  in the group's own coordinates ``x' = x // d`` (group length ``L_g = ceil((L - g) / d)``);
* non-causal: the query's *stride-group leader* is ``min((x' // s) * s + s // 2, L_g - 1)``; the window
  is the ``k`` keys around the leader (``k // 2`` before it, ``k - 1 - k // 2`` after), shifted inward
  at the borders:
  ``lo = clamp(leader - k // 2, 0, L_g - k)``, ``hi = lo + k - 1``;
* causal: leader ``min((x' // s) * s + s - 1, L_g - 1)``, keys ``max(leader - k + 1, 0) <= y' <= x'``;
* relative positional bias (NAT / DiNAT): ``rpb[head, y'_1 - x'_1 + k_1 - 1, y'_2 - x'_2 + k_2 - 1, ...]``.

The fast path (:func:`na_forward`) never forms the ``N x N`` attention matrix. It cuts the queries into
tiles of ``t_1 x t_2 (x t_3)`` and gathers (one ``index_select`` per operand), for each tile, the smallest
key *region* that holds every neighbour of every query in the tile (``t + k - 1`` keys per axis for
stride 1, exactly the window when ``stride == kernel_size``). Each tile is then a small dense attention
problem masked to the true neighbourhoods: torch's fused ``scaled_dot_product_attention`` over all tiles
at once (batch x heads x tiles), or, when the rpb needs a gradient (SDPA gives none to a mask),
:class:`_TiledAttention`: batched matmuls + softmax in cache-sized chunks, with a hand-written
(flash-attention) backward; the rpb is gathered once per distinct tile pattern (:func:`_tile_bias`).
Compute and memory are ``O(N * region)`` = ``O(N * k^2)``, parallel over batch, heads and tiles.

Per dilation group's map, :func:`choose_path` picks the tiled path or, where the tiles' regions would span
the whole map, one dense SDPA (no mask when every window is the map); a masked path whose output is not
finite is recomputed on the window path (each query reads only its own window's keys and values), so a
NaN reaches exactly the outputs whose window holds it. ``docs/kernels.md``, "CPU dispatch".
"""
from __future__ import annotations

import functools
import itertools
import math

import torch
import torch.nn.functional as F

from vzoo.kernels.geometry import window_bounds  # the window arithmetic the Triton launcher uses too

from ._tables import constant_table

__all__ = ["na_forward", "na_qk", "na_av", "dense_reference", "default_tile"]


def default_tile(length: int, kernel: int, stride: int, target: int = 6) -> int:
    """Query tile along one axis: a multiple of the stride near ``target`` (the window when s == k).

    Measured on a CPU at 2x56x56, 2 heads x 32, kernel 7: tiles from 4x4 to 8x8 are within noise of each
    other; much smaller tiles pay per-matmul overhead, larger ones compute too many masked scores.
    """
    if stride == kernel:
        t = stride
    else:
        t = stride * max(1, round(target / stride))
    return max(1, min(t, length))


@constant_table(maxsize=256)
def _axis_plan(length: int, kernel: int, stride: int, causal: bool, tile: int):
    """Per-axis tables for the tiled path (CPU tensors, cached)."""
    nt = -(-length // tile)
    # host tables are built on the CPU whatever the default device (meta, cuda), then moved once
    xq = torch.arange(nt * tile, device="cpu").clamp(max=length - 1)  # padded queries repeat the last one
    lo, hi = window_bounds(length, kernel, stride, causal, xq)
    lo, hi = lo.view(nt, tile), hi.view(nt, tile)
    start = lo.min(1).values
    span = int((hi.max(1).values - start + 1).max())
    region = min(span, length)
    start = start.clamp(max=length - region)
    u = torch.arange(region, device="cpu")
    key = start.view(nt, 1, 1) + u.view(1, 1, region)  # (nt, 1, region)
    mask = (key >= lo.unsqueeze(-1)) & (key <= hi.unsqueeze(-1))  # (nt, tile, region)
    offset = (key - xq.view(nt, tile, 1) + kernel - 1).clamp(0, 2 * kernel - 2)  # rpb index
    region_idx = (start.view(nt, 1) + u.view(1, region)).reshape(-1)  # (nt * region,)
    local_lo = lo - start.view(nt, 1)  # kernel slot j -> region index min(local_lo + j, local_hi)
    local_hi = hi - start.view(nt, 1)
    needs_pad = nt * tile != length
    return dict(nt=nt, tile=tile, region=region, xq=xq, mask=mask, offset=offset, region_idx=region_idx,
                local_lo=local_lo, local_hi=local_hi, needs_pad=needs_pad, full=bool(mask.all()))


def _broadcast_axes(tables, n):
    """Combine per-axis (nt, t, r) tables into (nt_1..nt_n, t_1..t_n, r_1..r_n) by broadcasting."""
    out = []
    for i, tab in enumerate(tables):
        shape = [1] * (3 * n)
        shape[i], shape[n + i], shape[2 * n + i] = tab.shape
        out.append(tab.view(shape))
    return out


@constant_table(maxsize=64)
def _nd_plan(shape, kernel, stride, causal, tile, with_rpb: bool, device: str):
    """The fused op's tables for one geometry: token indices of every tile's queries (``qflat``) and key
    region (``rflat``) and their inverse, the neighbourhood ``mask`` (None when every key of every region is
    in its queries' windows), the rpb indices and distinct tile patterns. Complete when built, never changed
    after (torch.compile takes them as constants); ``key`` rebuilds it (:func:`_float_mask`)."""
    n = len(shape)
    plans = [_axis_plan(shape[i], kernel[i], stride[i], causal[i], tile[i]) for i in range(n)]
    n_tiles = math.prod([p["nt"] for p in plans])  # lists, not generators: torch.compile traces this
    tq = math.prod([p["tile"] for p in plans])
    tk = math.prod([p["region"] for p in plans])
    dev = torch.device(device)
    mask = None
    if not all(p["full"] for p in plans):
        parts = _broadcast_axes([p["mask"] for p in plans], n)
        m = parts[0]
        for x in parts[1:]:
            m = m & x
        mask = m.reshape(n_tiles, tq, tk).to(dev)
    rpb_idx = None
    if with_rpb:
        strides = [math.prod([2 * k - 1 for k in kernel[i + 1:]]) for i in range(n)]
        parts = _broadcast_axes([p["offset"] * st for p, st in zip(plans, strides)], n)
        idx = parts[0]
        for x in parts[1:]:
            idx = idx + x
        rpb_idx = idx.reshape(n_tiles, tq, tk).to(dev)
    # flat (row-major) token indices: queries in tile order, each tile's key region, and the inverse
    tok_strides = [math.prod(shape[i + 1:]) for i in range(n)]
    qparts = _broadcast_axes([(p["xq"] * st).view(p["nt"], p["tile"], 1) for p, st in zip(plans, tok_strides)], n)
    rparts = _broadcast_axes([(p["region_idx"] * st).view(p["nt"], 1, p["region"]) for p, st in
                              zip(plans, tok_strides)], n)
    qflat, rflat = qparts[0], rparts[0]
    for a, b in zip(qparts[1:], rparts[1:]):
        qflat, rflat = qflat + a, rflat + b
    qflat, rflat = qflat.reshape(-1), rflat.reshape(-1)
    inv = torch.empty(math.prod(shape), dtype=torch.long, device="cpu")
    inv[qflat] = torch.arange(qflat.numel(), device="cpu")  # padded duplicates compute the same row: any one will do
    # no tensor of the (shared) axis plans in here: torch.compile would register one constant twice
    plan = dict(key=(shape, kernel, stride, causal, tile, with_rpb, device), n_tiles=n_tiles, tq=tq, tk=tk,
                mask=mask, rpb_idx=rpb_idx, qflat=qflat.to(dev), rflat=rflat.to(dev), inv=inv.to(dev))
    if with_rpb:
        rpb_numel = math.prod([2 * k - 1 for k in kernel])
        # masked pairs index the -inf slot after the table (_bias_table)
        masked = rpb_idx if mask is None else rpb_idx.masked_fill(~mask, rpb_numel)
        # the distinct tiles' masked rpb indices (U, tq, tk) and each tile's, None when all share one
        patterns, tile_pattern = torch.unique(masked.flatten(1), dim=0, return_inverse=True)
        plan.update(rpb_idx_masked=masked, rpb_patterns=(patterns.view(-1, tq, tk),
                                                         None if patterns.shape[0] == 1 else tile_pattern))
    return plan


@constant_table(maxsize=256)
def _kernel_gather_idx(shape, kernel, stride, causal, tile, device: str):
    """(n_tiles, tq, K) region index of each query's neighbour slot ``j`` and (n_tiles, tq, K) slot validity
    (None when every slot is a key: non-causal). A causal window holds fewer than ``k`` keys near the start;
    its spare slots repeat the last key of the window (a key the query sees) and are masked."""
    n = len(shape)
    plans = [_axis_plan(shape[i], kernel[i], stride[i], causal[i], tile[i]) for i in range(n)]
    tabs, oks = [], []
    for i, p in enumerate(plans):
        rstride = math.prod(q["region"] for q in plans[i + 1:])
        slot = p["local_lo"].unsqueeze(-1) + torch.arange(kernel[i], device="cpu")  # (nt, t, k_i)
        hi = p["local_hi"].unsqueeze(-1)
        tabs.append(torch.minimum(slot, hi) * rstride)
        oks.append(slot <= hi)
    idx, ok = (functools.reduce(op, _broadcast_axes(t, n)) for t, op in ((tabs, torch.add), (oks, torch.logical_and)))
    n_tiles = math.prod(p["nt"] for p in plans)
    tq = math.prod(p["tile"] for p in plans)
    dev = torch.device(device)
    shape3 = (n_tiles, tq, math.prod(kernel))
    return idx.reshape(shape3).to(dev), (None if bool(ok.all()) else ok.reshape(shape3).to(dev))


# ---------------------------------------------------------------------------------------------------
# tiling helpers on (B, *S, heads, C) tensors
# ---------------------------------------------------------------------------------------------------
def _token_major(x):
    """(B, *S, h, C) -> (N, B*h, C): each token's rows for all batches and heads contiguous."""
    b, h, c = x.shape[0], x.shape[-2], x.shape[-1]
    return x.reshape(b, -1, h * c).transpose(0, 1).reshape(-1, b * h, c)


def _gather(x, idx, n_tiles):
    """(B, *S, h, C) -> (tiles, B*h, T, C): tokens ``idx`` (flat, tile-major), whole (B*h, C) rows."""
    return _token_major(x).index_select(0, idx).view(n_tiles, -1, x.shape[0] * x.shape[-2], x.shape[-1]) \
        .transpose(1, 2)


def _tile_queries(x, plan):
    return _gather(x, plan["qflat"], plan["n_tiles"])


def _tile_regions(x, plan):
    return _gather(x, plan["rflat"], plan["n_tiles"])


def _untile(o, plan, shape, b):
    """(tiles, B*h, tq, C) -> (B, *shape, h, C)."""
    T, bh, tq, c = o.shape
    o = o.transpose(1, 2).reshape(T * tq, bh, c).index_select(0, plan["inv"])  # (N, B*h, C)
    return o.view(-1, b, bh // b * c).transpose(0, 1).reshape(b, *shape, bh // b, c)


def _heads_major(x):
    """(B, *S, h, C) -> (B*h, N, C): one contiguous token sequence per batch element and head."""
    b, h, c = x.shape[0], x.shape[-2], x.shape[-1]
    return x.reshape(b, -1, h, c).transpose(1, 2).reshape(b * h, -1, c)


def _gather_heads_major(x, idx, n_tiles):
    """(B, *S, h, C) -> (B*h, tiles, T, C), contiguous: batched matmuls read it without a copy."""
    return _heads_major(x).index_select(1, idx).view(x.shape[0] * x.shape[-2], n_tiles, -1, x.shape[-1])


def _untile_heads_major(o, plan, shape, b):
    """(B*h, tiles, tq, C) -> (B, *shape, h, C)."""
    bh, n_tiles, tq, c = o.shape
    o = o.reshape(bh, n_tiles * tq, c).index_select(1, plan["inv"])
    return o.view(b, bh // b, -1, c).transpose(1, 2).reshape(b, *shape, bh // b, c)


# ---------------------------------------------------------------------------------------------------
# dilation groups
# ---------------------------------------------------------------------------------------------------
def _group_classes(length, d):
    """[(g0, g1, group_length)]: groups g0 <= g < g1 of one axis share the same length."""
    p = -(-length // d)
    r = length % d
    if r == 0:
        return [(0, d, p)]
    return [(0, r, p), (r, d, p - 1)]


def _to_groups(x, dilation):
    """(B, *S, h, C) -> (B, d1..dn, P1..Pn, h, C) with P_i = ceil(S_i / d_i) (zero padded)."""
    n = len(dilation)
    shape = x.shape[1:1 + n]
    pads = []
    for i in reversed(range(n)):
        pads += [0, (-shape[i]) % dilation[i]]
    x = F.pad(x, [0, 0, 0, 0] + pads) if any(pads) else x
    b, h, c = x.shape[0], x.shape[-2], x.shape[-1]
    shp = [b]
    for i in range(n):
        shp += [x.shape[1 + i] // dilation[i], dilation[i]]
    x = x.reshape(shp + [h, c])
    perm = [0] + [2 + 2 * i for i in range(n)] + [1 + 2 * i for i in range(n)] + [2 * n + 1, 2 * n + 2]
    return x.permute(perm)


def _from_groups(xg, shape, dilation):
    n = len(dilation)
    b, h, c = xg.shape[0], xg.shape[-2], xg.shape[-1]
    perm = [0]
    for i in range(n):
        perm += [1 + n + i, 1 + i]
    x = xg.permute(perm + [2 * n + 1, 2 * n + 2])
    x = x.reshape([b] + [xg.shape[1 + n + i] * dilation[i] for i in range(n)] + [h, c])
    for i, L in enumerate(shape):
        if x.shape[1 + i] != L:
            x = x.narrow(1 + i, 0, L)
    return x


def _run_grouped(core, tensors, dilation, out_channels):
    """Apply ``core(*tensors_in_group)`` (dilation 1) to every dilation group, reassembling the output."""
    n = len(dilation)
    if all([d == 1 for d in dilation]):  # lists, not generators: torch.compile traces this function
        return core(*tensors)
    shape = tuple(tensors[0].shape[1:1 + n])
    groups = [_to_groups(t, dilation) for t in tensors]
    b, h = tensors[0].shape[0], tensors[0].shape[-2]
    classes = [_group_classes(shape[i], dilation[i]) for i in range(n)]
    out = None
    for combo in itertools.product(*classes):
        sl = [slice(None)] + [slice(g0, g1) for g0, g1, _ in combo] + [slice(0, L) for _, _, L in combo]
        subs = []
        for g in groups:
            s = g[tuple(sl)]
            ng = math.prod([g1 - g0 for g0, g1, _ in combo])
            subs.append(s.reshape([b * ng] + [L for _, _, L in combo] + list(s.shape[-2:])))
        o = core(*subs)
        if out is None:
            gshape = list(groups[0].shape[:-1]) + [out_channels]
            out = o.new_zeros(gshape)
        o = o.reshape([b] + [g1 - g0 for g0, g1, _ in combo] + [L for _, _, L in combo] + [h, out_channels])
        out[tuple(sl)] = o
    return _from_groups(out, shape, dilation)


# ---------------------------------------------------------------------------------------------------
# the fused op: three exact paths, one chosen per dilation group's map
# ---------------------------------------------------------------------------------------------------
PATHS = ("tiled", "dense", "window")


def _tiles_for(shape, kernel, stride, tile):
    """Query tile per axis: the kernel on axes up to 4 kernels long (14 x 14 with k 7: four 7 x 7 tiles,
    1.3x faster than dense SDPA), else about 4 (8 along the last, contiguous axis); see docs/kernels.md."""
    if tile is None:
        n = len(shape)
        return tuple(default_tile(L, k, s, k if L <= 4 * k else (8 if i == n - 1 else 4))
                     for i, (L, k, s) in enumerate(zip(shape, kernel, stride)))
    return tuple(max(1, min(int(t), L)) for t, L in zip(tile, shape))


def choose_path(shape, kernel, stride, causal, tile=None) -> str:
    """The path of the fused op for a map of ``shape`` (one dilation group; finite inputs).

    ``"dense"`` (one SDPA over all tokens, without a mask where every window is the whole map) where the
    tiles' key regions would span the whole map anyway (a kernel as large as the map, or nearly): tiling
    would then only add gathers. ``"tiled"`` elsewhere, and whenever a ``tile`` is given."""
    return "tiled" if tile is not None else _auto_path(tuple(shape), tuple(kernel), tuple(stride), tuple(causal))


@constant_table(maxsize=256)  # reads the (int) region sizes of a cached plan
def _auto_path(shape, kernel, stride, causal):
    tiles = _tiles_for(shape, kernel, stride, None)
    spans_map = all(_axis_plan(L, k, s, c, t)["region"] == L
                    for L, k, s, c, t in zip(shape, kernel, stride, causal, tiles))
    return "dense" if spans_map else "tiled"


def _all_finite(*tensors) -> bool:
    """Whether no tensor holds a NaN or an infinity: one float32 sum each (NaN and inf survive a sum; a
    sum that overflows only costs a recomputation on the exact path). Under ``torch.compile`` the check
    is skipped (a data-dependent branch would break the graph): the fast paths then run as for finite
    inputs."""
    if torch.compiler.is_compiling():
        return True
    return bool(torch.isfinite(sum(t.detach().sum(dtype=torch.float32) for t in tensors)))


def _empty_result(shape, like, *inputs):
    """A zero-size result of ``shape`` wired to every input, so that a backward gives them (empty or zero)
    gradients instead of failing."""
    anchor = sum(t.sum() for t in inputs if t is not None) * 0
    return like.new_zeros(shape) + anchor.to(like.dtype)


def _na_core(q, k, v, kernel, stride, causal, scale, rpb, tile, path):
    n = q.dim() - 3
    shape = tuple(q.shape[1:1 + n])
    chosen = path or choose_path(shape, kernel, stride, causal, tile)
    if chosen == "window":
        return _na_core_window(q, k, v, kernel=kernel, stride=stride, causal=causal, scale=scale, rpb=rpb)
    tiles = shape if chosen == "dense" else _tiles_for(shape, kernel, stride, tile)
    plan = _nd_plan(shape=shape, kernel=kernel, stride=stride, causal=causal, tile=tiles, with_rpb=rpb is not None,
                    device=str(q.device))
    run = _na_core_dense if chosen == "dense" else _na_core_tiled
    out = run(q=q, k=k, v=v, plan=plan, shape=shape, scale=scale, rpb=rpb)
    # A mask gives masked-out keys and values zero weights, and 0 * NaN = NaN: a non-finite key or value
    # outside a window then makes the whole tile non-finite. Checking the output (hot in cache; a NaN or
    # inf input that any output reads leaves a trace there) and recomputing those rare calls on the
    # window path keeps the result exact. Without a mask every key a tile reads is in all its windows.
    if path is None and plan["mask"] is not None and not _all_finite(out):
        return _na_core_window(q, k, v, kernel=kernel, stride=stride, causal=causal, scale=scale, rpb=rpb)
    return out


def _na_core_tiled(q, k, v, plan, shape, scale, rpb):
    """The tiled path: torch's fused SDPA over all tiles, or, where the rpb needs a gradient (which SDPA
    does not give), :class:`_TiledAttention` (chunked batched matmuls with a hand-written backward).

    Measured at 2 x 56 x 56, kernel 7, 2 heads x 32, one thread (torch 2.14): without an rpb, SDPA's forward
    + backward is 1.15x faster than :class:`_TiledAttention`'s; both spend 70-80% in their matmuls."""
    if rpb is None or not (rpb.requires_grad and torch.is_grad_enabled()):
        return _na_core_sdpa(q=q, k=k, v=v, plan=plan, shape=shape, scale=scale, rpb=rpb)
    b, h = q.shape[0], q.shape[-2]
    score_dtype = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    bias = _tile_bias(rpb, plan, score_dtype).unsqueeze(0)  # (1, h, T or 1, tq, tk), -inf where masked
    n_tiles = plan["n_tiles"]
    qt, kt, vt = (_gather_heads_major(x, idx, n_tiles).view(b, h, n_tiles, -1, x.shape[-1])
                  for x, idx in ((q, plan["qflat"]), (k, plan["rflat"]), (v, plan["rflat"])))
    o = _TiledAttention.apply(qt, kt, vt, bias, scale)
    return _untile_heads_major(o.view(b * h, *o.shape[2:]), plan, shape, b)


def _sum_dim(x, dim):
    """``x.sum(dim)`` as a (batched) vector-matrix product: 10x faster than torch's CPU reduction over a
    dimension that is not the last (torch 2.14)."""
    rows = x.reshape(*x.shape[:dim], x.shape[dim], -1)
    return torch.matmul(x.new_ones(x.shape[dim]), rows).view(*x.shape[:dim], *x.shape[dim + 1:])


_CHUNK_SCORES = 1 << 19  # scores per chunk of the tiled matmul core: 2 MiB of float32, about a core's L2


def _chunks(batch, heads, tiles, tile_scores, limit=None):
    """Contiguous ``(batch, head, tile)`` ranges ``(b0, b1, h0, h1, t0, t1)`` of at most ``limit`` scores
    (default :data:`_CHUNK_SCORES`; one tile at least): whole batch elements, else whole heads, else runs of
    tiles."""
    limit = limit or _CHUNK_SCORES
    per_head = tiles * tile_scores
    if per_head * heads * batch <= limit:
        return [(0, batch, 0, heads, 0, tiles)]
    if per_head * heads <= limit:
        n = limit // (per_head * heads)
        return [(i, min(i + n, batch), 0, heads, 0, tiles) for i in range(0, batch, n)]
    if per_head <= limit:
        n = limit // per_head
        return [(i, i + 1, j, min(j + n, heads), 0, tiles) for i in range(batch) for j in range(0, heads, n)]
    n = max(1, limit // tile_scores)
    return [(i, i + 1, j, j + 1, t, min(t + n, tiles)) for i in range(batch) for j in range(heads)
            for t in range(0, tiles, n)]


class _TiledAttention(torch.autograd.Function):
    """Softmax attention of every tile's queries over its key region: ``(B, h, T, tq, C)`` queries,
    ``(B, h, T, tk, C)`` keys and values (contiguous), an optional additive ``bias`` ``(1, h or 1, T or 1,
    tq, tk)`` (the -inf neighbourhood mask, with the rpb folded in). Scores and probabilities in float32 for
    half inputs.

    The work goes in chunks of about :data:`_CHUNK_SCORES` scores (:func:`_chunks`), so that each chunk's
    scores stay in cache from their matmul to their use: 1.4x faster than whole-tensor ops on HAT's windows
    (2 x 64 x 64, window 16, 6 heads; forward + backward, one thread). The backward is flash attention's,
    from the saved probabilities ``P``: ``dP = dO V^T``, ``dS = P * (dP - rowsum(dP * P))``, ``dQ = dS K``,
    ``dK = dS^T Q``, ``dV = P^T dO``; autograd through the same ops takes longer and keeps more. (The
    ``rowsum(dO * O)`` form reads less, but ``O`` rounded to half precision doubles the error of dS.)"""

    @staticmethod
    def forward(ctx, q, k, v, bias, scale):
        b, h, n_tiles, tq, _ = q.shape
        tk = k.shape[-2]
        chunks = _chunks(b, h, n_tiles, tq * tk)
        o = v.new_empty(*q.shape[:-1], v.shape[-1])
        probs = []
        for sl in chunks:
            qc, kc, vc, bc = _chunk_views(sl, q, k, v, bias)
            sc = torch.bmm(qc, kc.transpose(1, 2))
            if sc.dtype in (torch.float16, torch.bfloat16):
                sc = sc.float()
            sc.mul_(scale)
            if bc is not None:
                sc.view(*_chunk_extent(sl), tq, tk).add_(bc)  # bc broadcasts over the chunk's (b, h, tiles)
            pc = torch.softmax(sc, dim=-1)
            torch.bmm(pc.to(v.dtype), vc, out=_chunk_views(sl, o, None)[0])
            probs.append(pc)
        ctx.save_for_backward(q, k, v, bias, *probs)
        ctx.scale, ctx.chunks = scale, chunks
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, bias, *probs = ctx.saved_tensors
        do = do.contiguous()
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        dbias = torch.zeros_like(bias) if ctx.needs_input_grad[3] else None
        for sl, pc in zip(ctx.chunks, probs):
            qc, kc, vc, _ = _chunk_views(sl, q, k, v, None)
            doc, dqc, dkc, dvc, _ = _chunk_views(sl, do, dq, dk, dv, None)
            torch.bmm(pc.to(v.dtype).transpose(1, 2), doc, out=dvc)
            ds = torch.bmm(doc, vc.transpose(1, 2)).to(pc.dtype)  # dP
            ds = ds.sub_((ds * pc).sum(-1, keepdim=True)).mul_(pc)
            if dbias is not None:
                db = _chunk_views(sl, None, None, None, dbias)[3]
                part = ds.view(*_chunk_extent(sl), *ds.shape[1:])
                for dim in range(3):  # sum over what the bias broadcasts over
                    if db.shape[dim] == 1 and part.shape[dim] > 1:
                        part = _sum_dim(part, dim).unsqueeze(dim)
                db.add_(part)
            ds = ds.to(q.dtype)
            torch.bmm(ds, kc, out=dqc).mul_(ctx.scale)
            torch.bmm(ds.transpose(1, 2), qc, out=dkc).mul_(ctx.scale)
        return dq, dk, dv, dbias, None


def _chunk_extent(sl):
    b0, b1, h0, h1, t0, t1 = sl
    return b1 - b0, h1 - h0, t1 - t0


def _chunk_views(sl, *tensors):
    """Chunk ``sl`` of ``(B, h, T, t, C)`` tensors as ``(n, t, C)`` views (None stays None), the last one
    of ``tensors`` read as a ``(1, h or 1, T or 1, tq, tk)`` bias: its broadcast slice, kept 5-D."""
    b0, b1, h0, h1, t0, t1 = sl
    *xs, bias = tensors
    out = [None if x is None else x[b0:b1, h0:h1, t0:t1].reshape(-1, *x.shape[-2:]) for x in xs]
    if bias is not None:
        bias = bias[:, h0:h1] if bias.shape[1] > 1 else bias
        bias = bias[:, :, t0:t1] if bias.shape[2] > 1 else bias
    return (*out, bias)


def _na_core_dense(q, k, v, plan, shape, scale, rpb):
    """One SDPA over all ``N`` tokens of the map with the ``(N, N)`` neighbourhood mask (none when every
    window is the whole map) or the ``(heads, N, N)`` bias with the mask folded in; no gather, no copy of
    the inputs (SDPA reads the heads-last layout through strides). ``plan``: one tile, the whole map."""
    # 4-D masks: a 3-D one sends torch's CPU SDPA to a path 3-4x slower (torch 2.14)
    if rpb is not None:
        mask = _bias_table(rpb, q.dtype)[:, plan["rpb_idx_masked"]]  # (h, 1, N, N); -inf masked; autograd reaches rpb
        mask = mask.transpose(0, 1)
    else:
        mask = None if plan["mask"] is None else _float_mask(plan, q.dtype).unsqueeze(0)  # (1, 1, N, N)
    return plain_attention(q, k, v, scale=scale, mask=mask)


def _na_core_window(q, k, v, kernel, stride, causal, scale, rpb):
    """Exact for any input, NaN and inf included: each query reads only its own window's keys and values
    (scores as :func:`na_qk`, values by the offset loop of :func:`na_av`), so a non-finite key or value
    reaches only the outputs whose window holds it, as in natten."""
    s = _qk_core(q * scale, k, kernel=kernel, stride=stride, causal=causal, rpb=rpb, tile=None)
    if s.dtype in (torch.float16, torch.bfloat16):
        s = s.float()
    n = q.dim() - 3
    index = _window_index(tuple(q.shape[1:1 + n]), kernel, stride, causal, str(q.device))
    return _AVOffsets.apply(torch.softmax(s, dim=-1).to(v.dtype), v, index)


def _na_core_sdpa(q, k, v, plan, shape, scale, rpb):
    """Constant mask / bias: torch's fused SDPA over all tiles at once (batch = tiles, heads = B x heads).

    Keeps no score matrix for the backward. Token-major gathers copy whole (B*h, C) rows, and the
    neighbourhood mask (tiles, 1, tq, tk) broadcasts over batch and heads.
    """
    b, h = q.shape[0], q.shape[-2]
    qt, kt, vt = _tile_queries(q, plan), _tile_regions(k, plan), _tile_regions(v, plan)
    if rpb is None:
        mask = None if plan["mask"] is None else _float_mask(plan, q.dtype).unsqueeze(1)
        o = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, scale=scale)  # (T, B*h, tq, Cv)
    else:  # per-head bias (tiles, h, tq, tk): one 4-D call per batch element (a 5-D call broadcasting the
        # bias over the batch, or a bias expanded to B x heads, is 1.5-3x slower on the CPU, torch 2.14)
        bias = _tile_bias(rpb, plan, q.dtype).transpose(0, 1)  # (T or 1, h, tq, tk)
        o = torch.cat([F.scaled_dot_product_attention(qt[:, i * h:(i + 1) * h], kt[:, i * h:(i + 1) * h],
                                                      vt[:, i * h:(i + 1) * h], attn_mask=bias, scale=scale)
                       for i in range(b)], 1)
    return _untile(o, plan, shape, b)


def _float_mask(plan, dtype):
    """The plan's mask as an additive ``dtype`` mask (0 / -inf)."""
    return _float_mask_of(plan["key"], dtype)["mask"]


@constant_table(maxsize=64)
def _float_mask_of(plan_key, dtype):
    # in a dict: torch.compile names a bare tensor result after the function, and a second call in one graph
    # (another dilation group) then fails aot_autograd ("source ... already in seen_sources", torch 2.14)
    m = _nd_plan(*plan_key)["mask"]
    return dict(mask=torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill_(~m, float("-inf")))


def _bias_table(rpb, dtype):
    """rpb flattened per head, plus one -inf entry that masked-out pairs index."""
    flat = rpb.reshape(rpb.shape[0], -1).to(dtype)
    return torch.cat([flat, flat.new_full((flat.shape[0], 1), float("-inf"))], 1)


def _tile_bias(rpb, plan, dtype):
    """``(h, tiles or 1, tq, tk)`` bias of every tile (-inf where masked): the rpb gathered once per distinct
    tile pattern, then whole blocks copied per tile, and broadcast over the tiles when they all share one.
    An elementwise gather for every tile (and its backward, an accumulating ``index_put``) is several times
    slower: 30% of a HAT window attention's training step (64 x 64, window 16, 6 heads)."""
    patterns, tile_pattern = plan["rpb_patterns"]  # built with the plan (_nd_plan)
    bias = _bias_table(rpb, dtype)[:, patterns]
    return bias if tile_pattern is None else bias.index_select(1, tile_pattern)


def na_forward(q, k, v, kernel, stride, dilation, causal, scale, rpb=None, tile=None, path=None):
    """Neighborhood attention on ``(B, *S, heads, C)`` tensors (torch path, autograd through torch ops).

    ``path`` (tests, benchmarks): one of :data:`PATHS`, or None to choose per dilation group's map
    (:func:`choose_path`; a masked path whose output is not finite is recomputed on ``"window"``)."""
    if path is not None and path not in PATHS:
        raise ValueError(f"na_forward: path must be one of {PATHS} or None, got {path!r}")
    if q.numel() == 0 or v.numel() == 0:  # batch 0 or no heads
        return _empty_result(v.shape, v, q, k, v, rpb)
    core = functools.partial(_na_core, kernel=kernel, stride=stride, causal=causal, scale=scale, rpb=rpb,
                             tile=tile, path=path)
    return _run_grouped(core, tensors=(q, k, v), dilation=dilation, out_channels=v.shape[-1])


@constant_table(maxsize=256)
def _split_plan(shape, kernel, stride, causal, tile, with_rpb: bool, device: str):
    """The tables the split ops' tiled paths index with, for one geometry (``_nd_plan``'s token indices):
    ``idx``/``ok`` each query's neighbour slots in its tile's key region and their validity, ``rpb_idx`` the
    rpb index of each slot. A function of Python ints only: torch.compile calls it once and takes the tables
    as constants, instead of tracing their construction (which reads tensor values: a graph break)."""
    plan = _nd_plan(shape=shape, kernel=kernel, stride=stride, causal=causal, tile=tile, with_rpb=with_rpb,
                    device=device)
    idx, ok = _kernel_gather_idx(shape, kernel, stride, causal, tile, device)  # (T, tq, K)
    rpb_idx = plan["rpb_idx"].gather(-1, idx) if with_rpb else None  # (T, tq, K)
    return dict(n_tiles=plan["n_tiles"], tk=plan["tk"], qflat=plan["qflat"], rflat=plan["rflat"], inv=plan["inv"],
                idx=idx, ok=ok, rpb_idx=rpb_idx)


def _qk_core(q, k, kernel, rpb, tile, stride=None, causal=None):
    """Scores of every query with its ``prod(kernel)`` window slots: one matmul per tile over its key region,
    then a gather of the window's columns (a non-finite key reaches only the queries whose window holds it).
    A causal window's spare slots score ``-inf``."""
    n = q.dim() - 3
    shape = tuple(q.shape[1:1 + n])
    stride = stride or (1,) * n
    causal = causal or (False,) * n
    plan = _split_plan(shape, kernel, stride, causal, _tiles_for(shape, kernel, stride, tile), rpb is not None,
                       str(q.device))
    b, h = q.shape[0], q.shape[-2]
    s = torch.matmul(_tile_queries(q, plan), _tile_regions(k, plan).transpose(-1, -2))  # (T, B*h, tq, tk)
    idx = plan["idx"]  # (T, tq, K)
    a = s.gather(-1, idx.unsqueeze(1).expand(-1, s.shape[1], -1, -1))  # (T, B*h, tq, K)
    if rpb is not None:  # bias of each (query, neighbour j): rpb index at the same gathered slot
        bias = rpb.reshape(h, -1)[:, plan["rpb_idx"]].transpose(0, 1).to(a.dtype)  # (T, h, tq, K)
        a = (a.view(a.shape[0], b, h, *a.shape[2:]) + bias.unsqueeze(1)).view(a.shape)
    if plan["ok"] is not None:
        a = a.masked_fill(~plan["ok"].unsqueeze(1), float("-inf"))
    return _untile(a, plan, shape, b)


def _av_core(a, v, kernel, tile):
    """Dense weights per tile (scattered from ``a``) times each tile's key region: used for maps hardly
    larger than the kernel, where one matmul over the whole map beats the offset loop."""
    n = v.dim() - 3
    shape = tuple(v.shape[1:1 + n])
    ones = (1,) * n
    plan = _split_plan(shape, kernel, ones, (False,) * n, _tiles_for(shape, kernel, ones, tile), False, str(v.device))
    at = _tile_queries(a, plan)  # (T, B*h, tq, K)
    idx = plan["idx"]
    dense = at.new_zeros(at.shape[:-1] + (plan["tk"],))
    dense = dense.scatter(-1, idx.unsqueeze(1).expand(-1, at.shape[1], -1, -1), at)
    o = torch.matmul(dense, _tile_regions(v, plan))
    return _untile(o, plan, shape, v.shape[0])


# ---------------------------------------------------------------------------------------------------
# av by accumulation over the kernel offsets: O(N) memory, forward and backward
# ---------------------------------------------------------------------------------------------------
@constant_table(maxsize=256)
def _window_index(shape, kernel, stride, causal, device: str):
    """Per axis and kernel slot ``o``, the ``(L,)`` key of slot ``o`` of every query's window (group
    coordinates): ``lo + o``, clamped to the window's last key (a causal window's spare slots, whose
    weights are zero, read a key of the window itself)."""
    out = []
    for L, k, s, c in zip(shape, kernel, stride, causal):
        lo, hi = window_bounds(L, k, s, c, torch.arange(L, device="cpu"))
        out.append(tuple(torch.minimum(lo + o, hi).to(torch.device(device)) for o in range(k)))
    return tuple(out)


def _offsets(x, index, kernel):
    """Yield ``(j, x_j)`` for every kernel slot ``j`` (row-major): ``x_j[q] = x[window slot j of q]``.

    One ``index_select`` per axis and offset, nested so that the gathered copies alive at any time hold
    at most ``n`` tensors of ``x``'s size (never the ``prod(kernel)``-fold gathered copy)."""
    n = len(kernel)

    def walk(axis, g, flat):
        if axis == n:
            yield flat, g
            return
        for o in range(kernel[axis]):
            yield from walk(axis + 1, g.index_select(1 + axis, index[axis][o]), flat * kernel[axis] + o)
    yield from walk(0, x, 0)


def _scatter_offsets(parts, index, kernel, like):
    """The adjoint of :func:`_offsets`: ``sum_j scatter(parts(j))`` back to the positions read for slot j."""
    n = len(kernel)

    def walk(axis, flat):
        acc = torch.zeros_like(like)
        for o in range(kernel[axis]):
            sub = parts(flat * kernel[axis] + o) if axis == n - 1 else walk(axis + 1, flat * kernel[axis] + o)
            acc.index_add_(1 + axis, index[axis][o], sub)
        return acc
    return walk(0, 0)


class _AVOffsets(torch.autograd.Function):
    """``out = sum_j a[..., j] * v[window slot j]``; saves only ``a`` and ``v`` for the backward.
    ``index`` is :func:`_window_index`'s table."""

    @staticmethod
    def forward(ctx, a, v, index):
        kernel = tuple(len(t) for t in index)
        out = torch.zeros(v.shape, dtype=v.dtype, device=v.device)
        for j, vj in _offsets(v, index, kernel):
            out.addcmul_(a[..., j, None], vj)
        ctx.save_for_backward(a, v)
        ctx.index = index
        return out

    @staticmethod
    def backward(ctx, grad):
        a, v = ctx.saved_tensors
        index = ctx.index
        kernel = tuple(len(t) for t in index)
        grad = grad.contiguous()
        da = dv = None
        if ctx.needs_input_grad[0]:
            da = torch.empty_like(a)
            for j, vj in _offsets(v, index, kernel):
                da[..., j] = (grad * vj).sum(-1)
        if ctx.needs_input_grad[1]:
            dv = _scatter_offsets(lambda j: grad * a[..., j, None], index, kernel, v)
        return da, dv, None


def _av_offsets(a, v, kernel, tile):
    n = v.dim() - 3
    shape = tuple(v.shape[1:1 + n])
    # the tiled dense path multiplies zero weights by values outside the windows: finite values only
    if tile is not None or (math.prod(shape) <= 2 * math.prod(kernel) and _all_finite(v)):
        # a map hardly larger than the kernel: one dense matmul over the whole map is faster
        return _av_core(a, v, kernel=kernel, tile=tile or shape)
    return _AVOffsets.apply(a, v, _window_index(shape, tuple(kernel), (1,) * n, (False,) * n, str(v.device)))


def na_qk(q, k, kernel, dilation, rpb=None, tile=None):
    """Unnormalised scores ``q . k`` (+ rpb) of every query with its ``prod(kernel)`` neighbours."""
    if q.numel() == 0:  # batch 0 or no heads
        return _empty_result(q.shape[:-1] + (math.prod(kernel),), q, q, k, rpb)
    core = functools.partial(_qk_core, kernel=kernel, rpb=rpb, tile=tile)
    return _run_grouped(core, tensors=(q, k), dilation=dilation, out_channels=math.prod(kernel))


def na_av(a, v, kernel, dilation, tile=None):
    """``sum_j a[..., j] * v[neighbour j]``: applies neighbourhood weights ``a`` to the values.

    Accumulates over the ``prod(kernel)`` offsets (custom backward, ``O(N)`` memory: never the gathered
    ``k*k`` copy of ``v``); maps at most twice the kernel's size with finite values, or an explicit
    ``tile``, take the tiled dense path instead."""
    if a.dtype != v.dtype:
        raise TypeError(f"na_av: attn dtype {a.dtype} does not match value dtype {v.dtype}")
    if a.numel() == 0 or v.numel() == 0:  # batch 0 or no heads
        return _empty_result(v.shape, v, a, v)
    core = functools.partial(_av_offsets, kernel=kernel, tile=tile)
    return _run_grouped(core, tensors=(a, v), dilation=dilation, out_channels=v.shape[-1])


# ---------------------------------------------------------------------------------------------------
# brute-force reference: full attention with an N x N neighbourhood mask (small inputs only)
# ---------------------------------------------------------------------------------------------------
def _axis_pair_mask(length, kernel, stride, dilation, causal):
    """(L, L) bool: may query x attend key y along this axis; plus (L, L) rpb offsets y' - x' + k - 1.

    Written from natten's FlexAttention mask definition, pair by pair, independently of the tiled path.
    """
    x = torch.arange(length).view(-1, 1)
    y = torch.arange(length).view(1, -1)
    xg, yg = x % dilation, y % dilation
    xd, yd = x // dilation, y // dilation
    glen = (length - xg + dilation - 1) // dilation  # length of the query's dilation group
    if causal:
        leader = torch.minimum((xd // stride) * stride + stride - 1, glen - 1)
        ok = (xd - yd >= 0) & (leader - yd < kernel)
    else:
        leader = torch.minimum((xd // stride) * stride + stride // 2, glen - 1)
        left, right = kernel // 2, kernel // 2 + (kernel % 2 - 1)
        center = torch.maximum(torch.minimum(leader, glen - 1 - right), torch.full_like(leader, left))
        w0, w1 = center - yd, yd - center
        ok = ((w0 >= 0) & (w0 <= left)) | ((w1 >= 0) & (w1 <= right))
    ok = ok & (xg == yg)
    return ok, (yd - xd + kernel - 1)


def dense_reference(q, k, v, kernel, stride, dilation, causal, scale, rpb=None):
    """Full softmax attention over all ``N`` tokens with the neighbourhood mask (``O(N^2)``; tests only)."""
    n = q.dim() - 3
    shape = q.shape[1:1 + n]
    b, h, c = q.shape[0], q.shape[-2], q.shape[-1]
    masks, offs = zip(*[_axis_pair_mask(shape[i], kernel[i], stride[i], dilation[i], causal[i])
                        for i in range(n)])
    # combine axes: token index is row-major over the spatial dims
    full = torch.ones((1, 1), dtype=torch.bool)
    for m in masks:
        full = (full[:, None, :, None] & m[None, :, None, :]).reshape(full.shape[0] * m.shape[0], -1)
    qf = q.reshape(b, -1, h, c).transpose(1, 2).float() if q.dtype != torch.float64 else \
        q.reshape(b, -1, h, c).transpose(1, 2)
    kf = k.reshape(b, -1, h, c).transpose(1, 2).to(qf.dtype)
    vf = v.reshape(b, -1, h, v.shape[-1]).transpose(1, 2).to(qf.dtype)
    s = (qf * scale) @ kf.transpose(-1, -2)
    if rpb is not None:
        idx = torch.zeros((1, 1), dtype=torch.long)
        for i, o in enumerate(offs):
            valid = (o >= 0) & (o <= 2 * kernel[i] - 2)
            o = torch.where(valid, o, torch.zeros_like(o))
            st = math.prod(2 * kk - 1 for kk in kernel[i + 1:])
            idx = (idx[:, None, :, None] + (o * st)[None, :, None, :]).reshape(idx.shape[0] * o.shape[0], -1)
        s = s + rpb.reshape(h, -1)[:, idx.to(q.device)].to(s.dtype)
    s = s.masked_fill(~full.to(q.device), float("-inf"))
    o = torch.softmax(s, -1) @ vf
    return o.transpose(1, 2).reshape(b, *shape, h, v.shape[-1]).to(q.dtype)


def plain_attention(q, k, v, scale, mask=None):
    """Attention of every query over every token of the map: ``(B, *S, heads, C)`` in and out, one SDPA
    reading the heads-last layout through strides (no copy of the inputs). NA whose kernel is the whole map
    (unmasked) is this; the op front calls it directly for such calls (fewest Python steps: at 7 x 7 the
    call is a bare SDPA plus about 3 us). ``mask``: broadcastable to ``(B, heads, N, N)``, additive."""
    b, h = q.shape[0], q.shape[-2]
    shape = q.shape[1:-2]
    tokens = math.prod(shape)
    qd, kd, vd = (t.reshape(b, tokens, h, t.shape[-1]).transpose(1, 2) for t in (q, k, v))
    o = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=mask, scale=scale)  # (B, h, N, Cv)
    return o.transpose(1, 2).reshape(b, *shape, h, v.shape[-1])
