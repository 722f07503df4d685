"""Sparsifiner: the sparse attention op against dense SDPA and the release's masked dense attention, and
whole Sparsifiner/DeiT-S against the release's computation and timm's dense DeiT-S.

``--part op``: per query ``ceil(keep_rate * N)`` random keys (``(B, heads, N, k)`` indices), heads 6 x 64 (DeiT-S),
at N = 197, 577 (384² input), 1025; cases ``sparse`` (:func:`vzoo.layers.sparse_attention`, its automatic backend:
torch on the CPU, Triton on CUDA), ``masked_dense`` (the release's computation: the N x N mask of the indices,
scores masked to -inf, softmax, ``nan_to_num``; the op's ``reference`` backend) and ``sdpa`` (dense
``F.scaled_dot_product_attention``, no sparsity: flash / memory-efficient kernels on CUDA); forward (``fwd``)
and forward + backward (``fwd+bwd``). ``--part model``: Sparsifiner/DeiT-S at ``--img-size`` on the sparse op,
with ``masked_dense=True`` (the release's computation, bit-identical to the release's model: ``tools/parity.py
sparsifiner``), and timm's DeiT-S, same weights. Cases are timed in interleaved rounds, each keeping its best.

    python tools/benchmark.py sparsifiner --threads 1                   # the issue's CPU figures
"""
from __future__ import annotations

import math

import timm
import torch
import torch.nn.functional as F

from ._timing import add_timing_arguments, best_of_rounds, progress

DESCRIPTION = ("sparsifiner: sparse attention op vs masked dense vs SDPA (N 197/577/1025), and Sparsifiner/DeiT-S "
               "vs DeiT-S")


def add_arguments(p):
    p.add_argument("--part", nargs="+", default=["op", "model"], choices=["op", "model"])
    p.add_argument("--tokens", nargs="+", type=int, default=[197, 577, 1025])
    p.add_argument("--keep-rates", nargs="+", type=float, default=[0.25, 0.1])
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--img-size", type=int, default=384, help="--part model input side (384: N = 577)")
    p.add_argument("--no-bwd", action="store_true", help="time the forward only")
    add_timing_arguments(p)


def _best_of(cases, args):
    """{name: best measure()} over ``args.repeats`` interleaved rounds of ``cases`` ({name: fn})."""
    return best_of_rounds(cases, args.device, warmup=args.warmup, iters=args.iters, repeats=args.repeats)


def _op_rows(args, dtype):
    from vzoo.layers import sparse_attention
    rows = []
    B, H, D = args.batch_size, args.heads, args.head_dim
    for n in args.tokens:
        g = torch.Generator().manual_seed(n)
        q, k, v = (torch.randn(B, H, n, D, generator=g).to(args.device, dtype) for _ in range(3))
        for keep in args.keep_rates:
            kk = math.ceil(keep * n)
            idx = torch.rand(B, H, n, n, generator=g).topk(kk, dim=-1).indices.to(args.device)
            ops = dict(sparse=lambda q, k, v: sparse_attention(q, k, v, idx),
                       masked_dense=lambda q, k, v: sparse_attention(q, k, v, idx, backend="reference"),
                       sdpa=lambda q, k, v: F.scaled_dot_product_attention(q, k, v))
            for mode in ["fwd"] + ([] if args.no_bwd else ["fwd+bwd"]):
                ins = [t.clone().requires_grad_(mode == "fwd+bwd") for t in (q, k, v)]

                def case(op):
                    if mode == "fwd":
                        def run():
                            with torch.no_grad():
                                op(*ins)
                    else:
                        def run():
                            op(*ins).sum().backward()
                    return run
                best = _best_of({name: case(op) for name, op in ops.items()}, args)
                for name, r in best.items():
                    rows.append(progress(dict(
                        part="op", case=name, tokens=n, keep_rate=keep, keys=kk, mode=mode, ms=r["ms"],
                        peak_mb=r["peak_mb"], vs_masked_dense=round(best["masked_dense"]["ms"] / r["ms"], 2),
                        vs_sdpa=round(best["sdpa"]["ms"] / r["ms"], 2))))
    return rows


def _model_rows(args, dtype):
    import vzoo  # noqa: F401  (registers the models)
    size = args.img_size
    dense = timm.create_model("deit_small_patch16_224", img_size=size).eval()
    sparse = timm.create_model("sparsifiner_deit_small_patch16_224", img_size=size).eval()
    sparse.load_state_dict({**sparse.state_dict(), **dense.state_dict()})
    x = torch.randn(args.batch_size, 3, size, size).to(args.device, dtype)
    models = dict(dense=dense, sparse=sparse)
    models = {k: m.to(args.device, dtype) for k, m in models.items()}

    def infer(name, masked=False):
        def run():
            sparse.masked_dense = masked
            with torch.inference_mode():
                models[name](x)
        return run
    best = _best_of({"deit_small (timm, dense)": infer("dense"), "sparsifiner (sparse op)": infer("sparse"),
                     "sparsifiner (masked dense, release)": infer("sparse", True)}, args)
    ref = best["sparsifiner (masked dense, release)"]["ms"]
    dense_ms = best["deit_small (timm, dense)"]["ms"]
    return [progress(dict(part="model", case=name, tokens=(size // 16) ** 2 + 1, keep_rate=0.25, mode="inference",
                          ms=r["ms"], img_s=round(args.batch_size / r["ms"] * 1e3, 2), peak_mb=r["peak_mb"],
                          vs_masked_dense=round(ref / r["ms"], 2), vs_dense_deit=round(dense_ms / r["ms"], 2)))
            for name, r in best.items()]


def run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    rows = []
    if "op" in args.part:
        rows += _op_rows(args, dtype)
    if "model" in args.part:
        rows += _model_rows(args, dtype)
    return rows
