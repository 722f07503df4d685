"""Neighborhood attention: vzoo's torch and Triton paths against natten and dense SDPA.

Times forward and forward+backward (median ms) and reads peak memory through
:func:`vzoo.benchmarks._timing.measure` at the stage shapes of NAT-Tiny / DiNAT and of the window
attention that vzoo families run through ``na2d`` (HAT-, Swin- and MOAT-like windows), plus the issue's
goal case (2 x 56 x 56, 2 heads x 32, kernel 7).

    python tools/benchmark.py na                                   # CPU: the goal case
    python tools/benchmark.py na --cases goal nat_tiny dinat windows --bwd --threads 1 --repeats 5
    python tools/benchmark.py na --cases nat_tiny dinat windows --device cuda --dtype bfloat16 --bwd

``natten`` is natten's own ``na2d`` with its default backend (on the CPU: FlexAttention, unfused; it has
no CPU backward); ``natten-flex-compiled`` is natten's Flex backend under ``torch.compile`` (CUDA only);
``natten-fna`` is natten's best fused kernel that can run the case here (Blackwell, Hopper or CUTLASS FNA, in
natten's own order of preference; its note names it), which needs a natten built with ``libnatten``;
``torch-compiled`` is vzoo's torch path under ``torch.compile(fullgraph=True)`` (inductor; compiled in the
case's first call, outside the timed rounds; slow to compile on the CPU, so only a CUDA default);
``sdpa`` is ``scaled_dot_product_attention`` over all ``H*W`` tokens (the dense baseline);
``torch:tiled``, ``torch:dense``, ``torch:window`` force one path of the torch backend's per-shape dispatch
(``vzoo.layers._na_torch.choose_path``). The backends of a case alternate within each of ``--repeats``
rounds and each keeps its best round, so ratios taken in one run hold on a shared machine.

Throughput (:func:`useful_work`) counts the *useful NA work* of the case for every backend, so the columns
compare (dense SDPA does more arithmetic, but is credited only with the neighbourhood's): ``fwd_tflops``,
``fwdbwd_tflops``, ``fwd_gbps``, ``fwdbwd_gbps``; on a device with a known roof
(:data:`vzoo.benchmarks._timing.DEVICE_ROOFS`) and a 16-bit dtype also ``fwd_pct_roof`` and ``fwdbwd_pct_roof``:
achieved FLOP/s over ``min(peak FLOP/s, FLOP per byte x peak bandwidth)`` (bandwidth-bound for small kernels,
where this is also the share of the bandwidth reached).
"""
from __future__ import annotations

import math
import re

import torch

from ._timing import best_of_rounds, device_name, device_roof, progress, roof_flops, set_threads

DESCRIPTION = "na: neighborhood attention (vzoo torch / triton) vs natten vs dense SDPA, fwd and fwd+bwd"

# name -> list of (label, batch, H, W, heads, head_dim, kernel, stride, dilation, use_rpb)
CASES = {
    "tiny": [("tiny 12x10 k5 d2", 1, 12, 10, 2, 8, 5, 1, 2, True)],  # for tests
    "goal": [("goal 56x56 k7", 2, 56, 56, 2, 32, 7, 1, 1, False)],
    "nat_tiny": [  # NAT-Tiny at 224: embed 64, heads 2/4/8/16, head_dim 32, kernel 7
        ("nat_t s1 56x56", None, 56, 56, 2, 32, 7, 1, 1, False),
        ("nat_t s2 28x28", None, 28, 28, 4, 32, 7, 1, 1, False),
        ("nat_t s3 14x14", None, 14, 14, 8, 32, 7, 1, 1, False),
        ("nat_t s4 7x7", None, 7, 7, 16, 32, 7, 1, 1, False),
    ],
    "dinat": [  # DiNAT-Tiny dilated layers at 224
        ("dinat_t s1 d8", None, 56, 56, 2, 32, 7, 1, 8, False),
        ("dinat_t s2 d4", None, 28, 28, 4, 32, 7, 1, 4, False),
        ("dinat_t s3 d2", None, 14, 14, 8, 32, 7, 1, 2, False),
    ],
    "windows": [  # blocked window attention with a Swin-style bias (kernel == stride == window)
        ("hat win16 64x64", None, 64, 64, 6, 30, 16, 16, 1, True),
        ("swin win7 56x56", None, 56, 56, 3, 32, 7, 7, 1, True),
        ("moat win14 56x56", None, 56, 56, 2, 32, 14, 14, 1, True),
    ],
}

PATHS = ("torch:tiled", "torch:dense", "torch:window")
BACKENDS = ("torch", "triton", "natten", "natten-flex-compiled", "natten-fna", "torch-compiled", "sdpa") + PATHS
CUDA_BACKENDS = ("triton", "torch", "torch-compiled", "natten", "natten-flex-compiled", "natten-fna", "sdpa")
CPU_BACKENDS = ("torch", "natten", "sdpa")
ROOF_DTYPES = (torch.float16, torch.bfloat16)  # the roofs are 16-bit tensor-core peaks


def na_pairs(shape, kernel, stride, dilation, causal=None) -> int:
    """Query-key pairs of one map (per batch element and head): the keys each query attends, summed over the
    queries, from the window arithmetic the kernels use (``vzoo.kernels.geometry.window_bounds``).

    The neighbourhood is the product of the axes' windows, so the pairs are the product of the axes' sums.
    Under natten's semantics every token is a query with its own output: a stride changes which keys a query
    sees (its stride-group leader's window), not how many queries there are; non-causal windows hold exactly
    ``kernel`` keys per axis (shifted inward at the borders), causal ones fewer near the start.
    """
    from vzoo.kernels.geometry import window_bounds
    causal = causal or (False,) * len(shape)
    pairs = 1
    for length, k, s, d, c in zip(shape, kernel, stride, dilation, causal):
        axis = 0
        for group in range(min(d, length)):  # dilation group `group` holds tokens group, group + d, ...
            lo, hi = window_bounds(length=(length - group + d - 1) // d, kernel=k, stride=s, causal=c)
            axis += int((hi - lo + 1).sum())
        pairs *= axis
    return pairs


def useful_work(batch, shape, heads, dim_qk, dim_v, kernel, stride, dilation, itemsize, causal=None) -> dict:
    """FLOPs and bytes of neighbourhood attention, forward and forward+backward, for the whole batch.

    FLOPs count the matmuls exactly (2 per multiply-add, softmax left out): forward ``Q K^T`` and ``P V``,
    ``2 * B * heads * pairs * (dim_qk + dim_v)``; backward the recompute of ``Q K^T`` and ``dV = P^T dO``,
    ``dP = dO V^T``, ``dQ = dS K``, ``dK = dS^T Q``, so forward+backward is ``2 * B * heads * pairs *
    (4 * dim_qk + 3 * dim_v)``: FlashAttention's 3.5 x forward when ``dim_qk == dim_v``. Bytes: the least
    traffic, each tensor read or written once in the dtype: Q, K, V, O forward, plus dO, dQ, dK, dV backward.
    """
    pairs = batch * heads * na_pairs(shape, kernel, stride, dilation, causal)
    tokens = batch * heads * math.prod(shape)
    io_bytes = tokens * 2 * (dim_qk + dim_v) * itemsize  # Q, K, V, O (or dQ, dK, dV, dO)
    return dict(fwd_flops=2 * pairs * (dim_qk + dim_v), fwdbwd_flops=2 * pairs * (4 * dim_qk + 3 * dim_v),
                fwd_bytes=io_bytes, fwdbwd_bytes=2 * io_bytes)


def throughput_columns(row: dict, work: dict, roof=None) -> dict:
    """``{key}_tflops``, ``{key}_gbps`` (and ``{key}_pct_roof`` given a roof) of each timing ``{key}_ms`` in
    ``row``."""
    cols = {}
    for key in ("fwd", "fwdbwd"):
        ms = row.get(f"{key}_ms")
        if not ms:
            continue
        flops, nbytes = work[f"{key}_flops"], work[f"{key}_bytes"]
        cols[f"{key}_tflops"] = flops / ms / 1e9
        cols[f"{key}_gbps"] = nbytes / ms / 1e6
        if roof is not None:
            cols[f"{key}_pct_roof"] = 100 * flops / (ms * 1e-3) / roof_flops(roof, flops, nbytes)
    return cols


def natten_fused_backend(q, k, v) -> str:
    """The first of natten's fused backends (its own preference order and capability checks) that can run
    ``q, k, v`` here; raises ``RuntimeError`` saying why where none can."""
    import natten
    from natten.backends import get_compatible_backends
    if not natten.HAS_LIBNATTEN:
        raise RuntimeError("natten has no compiled backends here (no libnatten)")
    usable = get_compatible_backends(q, k, v, torch_compile=False)
    fused = [b for b in usable if b != "flex-fna"]
    if not fused:
        raise RuntimeError(f"none of natten's fused backends runs this case here (usable: {usable or 'none'})")
    return fused[0]


def add_arguments(p):
    p.add_argument("--cases", nargs="+", default=["goal"], choices=sorted(CASES),
                   help="case groups (default: goal)")
    p.add_argument("--backends", nargs="+", default=None, choices=BACKENDS,
                   help=f"default: {', '.join(CPU_BACKENDS)} on the CPU; {', '.join(CUDA_BACKENDS)} on CUDA")
    p.add_argument("--batch", type=int, default=None, help="batch for the stage cases (default 2 CPU, 32 CUDA)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--bwd", action="store_true", help="also time forward+backward")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--repeats", type=int, default=1, help="interleaved rounds of the backends; each keeps its best")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on the CPU (default: torch's)")
    p.add_argument("--plot", default=None, help="also draw the times as a PNG bar chart here (matplotlib)")


def _runner(backend, q, k, v, kernel, stride, dilation, rpb):
    from vzoo.layers import na2d
    if backend in ("torch", "triton"):
        return lambda: na2d(q, k, v, kernel_size=kernel, stride=stride, dilation=dilation, rpb=rpb, backend=backend)
    if backend == "torch-compiled":  # static shapes: each case compiles its own graph, as a model's layer would
        compiled = torch.compile(na2d, fullgraph=True, dynamic=False)
        return lambda: compiled(q, k, v, kernel_size=kernel, stride=stride, dilation=dilation, rpb=rpb,
                                backend="torch")
    if backend in PATHS:  # one path of the torch dispatch, forced (the front's checks are done by the case)
        from vzoo.layers._na_torch import na_forward
        geo = dict(kernel=(kernel,) * 2, stride=(stride,) * 2, dilation=(dilation,) * 2, causal=(False, False),
                   scale=q.shape[-1] ** -0.5, rpb=rpb, path=backend.split(":")[1])
        return lambda: na_forward(q, k, v, **geo)
    if backend == "natten":
        import natten
        return lambda: natten.na2d(q, k, v, kernel, stride=stride, dilation=dilation)
    if backend == "natten-flex-compiled":
        import natten
        natten.allow_flex_compile(True, backprop=True)
        return lambda: natten.na2d(q, k, v, kernel, stride=stride, dilation=dilation, backend="flex-fna",
                                   torch_compile=True)
    if backend == "natten-fna":
        import natten
        fused = natten_fused_backend(q, k, v)
        return lambda: natten.na2d(q, k, v, kernel, stride=stride, dilation=dilation, backend=fused)
    if backend == "sdpa":
        B, H, W, h, c = q.shape

        def dense():
            t = [x.reshape(B, H * W, h, c).transpose(1, 2) for x in (q, k, v)]
            return torch.nn.functional.scaled_dot_product_attention(*t).transpose(1, 2).reshape(B, H, W, h, c)
        return dense
    raise ValueError(f"na benchmark: unknown backend {backend!r}; choose from {BACKENDS}")


def failure_note(error: Exception) -> str:
    """``Type: first line`` of an error, plus the innermost vzoo frame that a compiler error quotes (dynamo's
    first line says what it could not trace, the ``from user code`` frames say where)."""
    where = re.findall(r'File "[^"]*/(vzoo/[^"]+)", line (\d+), in (\w+)', str(error))
    at = f" (at {where[-1][0]}:{where[-1][1]} {where[-1][2]})" if where else ""
    return f"{type(error).__name__}: {str(error).splitlines()[0][:90]}{at}"


def _uses_rpb(backend):
    return backend in ("torch", "triton", "torch-compiled") + PATHS


def run(args):
    # torch-compiled compiles na2d once per case and direction (static shapes): more graphs than dynamo's
    # default recompile limit (8) of one function, past which fullgraph=True fails
    import torch._dynamo
    with torch._dynamo.config.patch(recompile_limit=max(64, torch._dynamo.config.recompile_limit)):
        return _run_cases(args)


def _run_cases(args):
    dev = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    threads = set_threads(args.threads) if dev.type == "cpu" else None
    backends = args.backends or list(CUDA_BACKENDS if dev.type == "cuda" else CPU_BACKENDS)
    roof = device_roof(device_name(dev)) if dev.type == "cuda" and dtype in ROOF_DTYPES else None
    rows = []
    for group in args.cases:
        for label, batch, H, W, heads, dim, kernel, stride, dil, use_rpb in CASES[group]:
            B = batch or args.batch or (32 if dev.type == "cuda" else 2)
            g = torch.Generator(device="cpu").manual_seed(0)
            q, k, v = (torch.randn(B, H, W, heads, dim, generator=g).to(dev, dtype) for _ in range(3))
            rpb = torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, generator=g).to(dev, dtype) if use_rpb else None
            work = useful_work(batch=B, shape=(H, W), heads=heads, dim_qk=dim, dim_v=dim, kernel=(kernel,) * 2,
                               stride=(stride,) * 2, dilation=(dil,) * 2, itemsize=q.element_size())
            case_rows, fwd, step = {}, {}, {}
            for be in backends:
                row = dict(case=label, shape=f"{B}x{H}x{W} {heads}x{dim}", kernel=kernel, stride=stride,
                           dilation=dil, rpb=use_rpb, backend=be)
                if threads is not None:
                    row["threads"] = threads
                if be.startswith("natten") and use_rpb:
                    row["note"] = "no rpb in natten: timed without it"
                case_rows[be] = row
                try:  # a backend that cannot run this case fails here, outside the timed rounds
                    fn = _runner(be, q, k, v, kernel, stride, dil, rpb if _uses_rpb(be) else None)
                    fn()
                    fwd[be] = fn
                    if be == "natten-fna":
                        row["note"] = (row.get("note", "") + f" natten backend {natten_fused_backend(q, k, v)}").strip()
                    if args.bwd:
                        ins = [t.detach().requires_grad_() for t in (q, k, v)]
                        r_in = rpb.detach().requires_grad_() if (rpb is not None and _uses_rpb(be)) else None
                        fb = _runner(be, *ins, kernel, stride, dil, r_in)

                        def fwd_bwd(fb=fb):
                            fb().float().sum().backward()
                        fwd_bwd()
                        step[be] = fwd_bwd
                except Exception as e:  # say why, keep going (a forward that ran is still timed)
                    row["note"] = (row.get("note", "") + " " + failure_note(e)).strip()
            for key, fns in (("fwd", fwd), ("fwdbwd", step)):
                for be, r in best_of_rounds(fns, dev, args.warmup, args.iters, args.repeats).items():
                    case_rows[be].update({f"{key}_ms": r["ms"], f"{key}_peak_mb": r["peak_mb"]})
            for row in case_rows.values():
                row.update(throughput_columns(row, work, roof))
                for ref in ("natten", "sdpa"):
                    base = case_rows.get(ref, {})
                    if row["backend"] == ref:
                        continue
                    for key in ("fwd", "fwdbwd"):
                        if f"{key}_ms" in row and f"{key}_ms" in base:
                            row[f"{key}_x_vs_{ref}" if key == "fwdbwd" else f"x_vs_{ref}"] = \
                                base[f"{key}_ms"] / row[f"{key}_ms"]
                rows.append(progress(row))
    if args.plot:
        plot(rows, args.plot, f"neighborhood attention, {args.dtype}, {dev.type}")
    return rows


def plot(rows, path, title):
    """Grouped bars (log scale): forward (and forward+backward) ms per case and backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cases = list(dict.fromkeys(r["case"] for r in rows))
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    metrics = [m for m in ("fwd_ms", "fwdbwd_ms") if any(m in r for r in rows)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(6, 1.6 * len(cases)) * len(metrics), 4.2), squeeze=False)
    width = 0.8 / max(1, len(backends))
    for ax, metric in zip(axes[0], metrics):
        for j, be in enumerate(backends):
            vals = [next((r.get(metric) for r in rows if r["case"] == c and r["backend"] == be), None) for c in cases]
            xs = [i + j * width for i in range(len(cases))]
            ax.bar(xs, [v or 0 for v in vals], width, label=be)
        ax.set_xticks([i + width * (len(backends) - 1) / 2 for i in range(len(cases))])
        ax.set_xticklabels(cases, rotation=20, ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel(f"{metric.replace('_ms', '')} time, ms (log)")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
