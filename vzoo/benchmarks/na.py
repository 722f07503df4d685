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
``sdpa`` is ``scaled_dot_product_attention`` over all ``H*W`` tokens (the dense baseline);
``torch:tiled``, ``torch:dense``, ``torch:window`` force one path of the torch backend's per-shape dispatch
(``vzoo.layers._na_torch.choose_path``). The backends of a case alternate within each of ``--repeats``
rounds and each keeps its best round, so ratios taken in one run hold on a shared machine.
"""
from __future__ import annotations

import torch

from ._timing import best_of_rounds, progress, set_threads

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
BACKENDS = ("torch", "triton", "natten", "natten-flex-compiled", "sdpa") + PATHS


def add_arguments(p):
    p.add_argument("--cases", nargs="+", default=["goal"], choices=sorted(CASES),
                   help="case groups (default: goal)")
    p.add_argument("--backends", nargs="+", default=None, choices=BACKENDS,
                   help="default: torch, natten, sdpa on the CPU; triton, torch, natten, "
                        "natten-flex-compiled, sdpa on CUDA")
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
    if backend == "sdpa":
        B, H, W, h, c = q.shape

        def dense():
            t = [x.reshape(B, H * W, h, c).transpose(1, 2) for x in (q, k, v)]
            return torch.nn.functional.scaled_dot_product_attention(*t).transpose(1, 2).reshape(B, H, W, h, c)
        return dense
    raise ValueError(f"na benchmark: unknown backend {backend!r}; choose from {BACKENDS}")


def _uses_rpb(backend):
    return backend in ("torch", "triton") + PATHS


def run(args):
    dev = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    threads = set_threads(args.threads) if dev.type == "cpu" else None
    backends = args.backends or (["triton", "torch", "natten", "natten-flex-compiled", "sdpa"]
                                 if dev.type == "cuda" else ["torch", "natten", "sdpa"])
    rows = []
    for group in args.cases:
        for label, batch, H, W, heads, dim, kernel, stride, dil, use_rpb in CASES[group]:
            B = batch or args.batch or (32 if dev.type == "cuda" else 2)
            g = torch.Generator(device="cpu").manual_seed(0)
            q, k, v = (torch.randn(B, H, W, heads, dim, generator=g).to(dev, dtype) for _ in range(3))
            rpb = torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, generator=g).to(dev, dtype) if use_rpb else None
            case_rows, fwd, step = {}, {}, {}
            for be in backends:
                row = dict(case=label, shape=f"{B}x{H}x{W} {heads}x{dim}", kernel=kernel, stride=stride,
                           dilation=dil, rpb=use_rpb, backend=be)
                if threads is not None:
                    row["threads"] = threads
                if be in ("natten", "natten-flex-compiled") and use_rpb:
                    row["note"] = "no rpb in natten: timed without it"
                case_rows[be] = row
                try:  # a backend that cannot run this case fails here, outside the timed rounds
                    fn = _runner(be, q, k, v, kernel, stride, dil, rpb if _uses_rpb(be) else None)
                    fn()
                    fwd[be] = fn
                    if args.bwd:
                        ins = [t.detach().requires_grad_() for t in (q, k, v)]
                        r_in = rpb.detach().requires_grad_() if (rpb is not None and _uses_rpb(be)) else None
                        fb = _runner(be, *ins, kernel, stride, dil, r_in)

                        def fwd_bwd(fb=fb):
                            fb().float().sum().backward()
                        fwd_bwd()
                        step[be] = fwd_bwd
                except Exception as e:  # say why, keep going (a forward that ran is still timed)
                    row["note"] = (row.get("note", "") + f" {type(e).__name__}: {str(e).splitlines()[0][:90]}").strip()
            for key, fns in (("fwd", fwd), ("fwdbwd", step)):
                for be, r in best_of_rounds(fns, dev, args.warmup, args.iters, args.repeats).items():
                    case_rows[be].update({f"{key}_ms": r["ms"], f"{key}_peak_mb": r["peak_mb"]})
            for row in case_rows.values():
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
