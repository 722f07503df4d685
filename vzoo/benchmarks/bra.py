"""Bi-level routing attention: vzoo's backends against the official gather implementation, and
BiFormer against the official model.

Op cases (``--cases``) time the op alone — region routing (means, affinity, top-k) plus the token
attention over the routed regions, from NHWC ``q, k, v`` to the NHWC output — forward and (``--bwd``)
forward+backward, with peak memory, at BiFormer-S stage shapes (``cls224``: 224² input, ``n_win`` 7;
``seg512``: 512² input, ``n_win`` 8, the release's ADE20K setting). Backends:

* ``triton`` / ``torch`` / ``reference``: :func:`vzoo.layers.bi_level_routing_attention`;
* ``official``: the release's algorithm as written in ``ops/bra_legacy.py`` (region partition,
  ``KVGather``: ``torch.gather`` of the expanded key/values into a ``(n, p², topk, w², c)`` copy, explicit
  matmul / softmax / matmul, merge back), re-implemented here from its description (the official code
  is not part of vzoo).

``--official-src DIR`` (a checkout of ``rayleizhu/BiFormer``; its ``models/biformer.py`` imports ``einops``
and ``timm``, which must be importable, and ``fairscale``, which gets a stand-in where missing) adds a
whole-model row: images/s of vzoo's model and of the official one (``--model``, default ``biformer_tiny``)
on the same weights, in one run.

    python tools/benchmark.py bra                                      # CPU, cls224, forward
    python tools/benchmark.py bra --cases cls224 seg512 --device cuda --dtype bfloat16 --bwd
    python tools/benchmark.py bra --cases --official-src /path/to/BiFormer --batch 8   # models only
"""
from __future__ import annotations

import torch

from ._official import find_official_file, import_official, stand_in
from ._timing import measure, progress, set_threads

DESCRIPTION = ("bra: bi-level routing attention (vzoo triton / torch / reference vs official gather), fwd, fwd+bwd, "
               "memory; BiFormer vs official")

# name -> list of (label, H, W, channels (= qk_dim), heads, n_win, topk): BiFormer-S routed stages
CASES = {
    "tiny": [("tiny 12x12", 12, 12, 32, 2, 3, 2)],
    "cls224": [
        ("S s1 56x56 224", 56, 56, 64, 2, 7, 1),
        ("S s2 28x28 224", 28, 28, 128, 4, 7, 4),
        ("S s3 14x14 224", 14, 14, 256, 8, 7, 16),
    ],
    "seg512": [
        ("S s1 128x128 512", 128, 128, 64, 2, 8, 1),
        ("S s2 64x64 512", 64, 64, 128, 4, 8, 4),
        ("S s3 32x32 512", 32, 32, 256, 8, 8, 16),
    ],
}
BACKENDS = ("triton", "torch", "reference", "official")


def add_arguments(p):
    p.add_argument("--cases", nargs="*", default=["cls224"], choices=sorted(CASES),
                   help="op case groups (default: cls224; none: only the model comparison)")
    p.add_argument("--backends", nargs="+", default=None, choices=BACKENDS,
                   help="default: torch, reference, official on the CPU; triton, torch, official on CUDA")
    p.add_argument("--batch", type=int, default=None, help="batch (default 2 on the CPU, 32 on CUDA)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--bwd", action="store_true", help="also time forward+backward")
    p.add_argument("--official-src", default=None, help="checkout of rayleizhu/BiFormer: adds the model rows")
    p.add_argument("--model", default="biformer_tiny", help="model for the --official-src rows")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on the CPU (default: torch's)")


# ------------------------------------------------------------------------------------------ official
def official_bra(q, k, v, n_win, topk, heads, scale):
    """The release's BRA core (``ops/bra_legacy.py``: routing, KVGather, attention) on NHWC q, k, v."""
    N, H, W, c_qk = q.shape
    c_v = v.shape[-1]
    h, w = H // n_win, W // n_win
    p2, w2 = n_win * n_win, h * w

    def patchify(t):  # "n (j h) (i w) c -> n (j i) h w c"
        return t.reshape(N, n_win, h, n_win, w, -1).permute(0, 1, 3, 2, 4, 5).reshape(N, p2, h, w, -1)
    qp = patchify(q)
    kv = patchify(torch.cat([k, v], dim=-1))
    q_pix = qp.reshape(N, p2, w2, c_qk)
    kv_pix = kv.reshape(N, p2, w2, c_qk + c_v)
    q_win, k_win = qp.mean([2, 3]), kv[..., :c_qk].mean([2, 3])
    logits = (q_win.detach() * scale) @ k_win.detach().transpose(-2, -1)
    _, r_idx = torch.topk(logits, k=topk, dim=-1)
    sel = torch.gather(kv_pix.view(N, 1, p2, w2, c_qk + c_v).expand(-1, p2, -1, -1, -1), dim=2,
                       index=r_idx.view(N, p2, topk, 1, 1).expand(-1, -1, -1, w2, c_qk + c_v))
    k_sel, v_sel = sel.split([c_qk, c_v], dim=-1)
    m = heads
    k_sel = k_sel.reshape(N * p2, topk * w2, m, c_qk // m).permute(0, 2, 3, 1)
    v_sel = v_sel.reshape(N * p2, topk * w2, m, c_v // m).permute(0, 2, 1, 3)
    qh = q_pix.reshape(N * p2, w2, m, c_qk // m).permute(0, 2, 1, 3)
    attn = ((qh * scale) @ k_sel).softmax(dim=-1)
    out = attn @ v_sel  # (N p2, m, w2, c)
    out = out.reshape(N, n_win, n_win, m, h, w, c_v // m).permute(0, 1, 4, 2, 5, 3, 6)
    return out.reshape(N, H, W, c_v)


def _runner(backend, q, k, v, n_win, topk, heads):
    scale = q.shape[-1] ** -0.5
    if backend == "official":
        return lambda: official_bra(q, k, v, n_win, topk, heads, scale)
    from vzoo.layers import bi_level_routing_attention
    return lambda: bi_level_routing_attention(q, k, v, n_win=n_win, topk=topk, num_heads=heads, scale=scale,
                                              backend=backend)


def load_official_biformer(src):
    """The release's ``models.biformer`` and ``models.biformer_stl`` modules from a checkout of
    ``rayleizhu/BiFormer`` (imported through :mod:`vzoo.benchmarks._official`; ``einops`` is needed)."""
    root, _ = find_official_file(src, ("models/biformer.py",), "rayleizhu/BiFormer")
    stand_ins = {
        # fairscale's checkpoint_wrapper wraps the stages only with use_checkpoint_stages (activation
        # checkpointing for training), which no released model sets: a pass-through where it is missing
        "fairscale": lambda: stand_in("fairscale"),
        "fairscale.nn": lambda: stand_in("fairscale.nn"),
        "fairscale.nn.checkpoint": lambda: stand_in("fairscale.nn.checkpoint", checkpoint_wrapper=lambda m, **k: m),
    }
    return {name: import_official(root, name, requires=("einops",), stand_ins=stand_ins)
            for name in ("models.biformer", "models.biformer_stl")}


def _load_official_model(src, name):
    mods = load_official_biformer(src)
    return getattr(mods["models.biformer_stl" if name == "biformer_stl" else "models.biformer"], name)


def _model_rows(args, dev, dtype):
    import timm

    import vzoo  # noqa: F401
    from vzoo.models.biformer import checkpoint_filter_fn
    B = args.batch or (2 if dev.type == "cpu" else 64)
    official = _load_official_model(args.official_src, args.model)().to(dev, dtype).eval()
    ours = timm.create_model(args.model).to(dev, dtype).eval()
    ours.load_state_dict(checkpoint_filter_fn(official.state_dict(), ours))
    x = torch.randn(B, 3, args.img_size, args.img_size, device=dev, dtype=dtype)
    rows, outs = [], {}
    for label, model in (("official", official), ("vzoo", ours)):
        def infer():
            with torch.inference_mode():
                outs[label] = model(x)
        r = measure(infer, dev, args.warmup, args.iters)
        rows.append(dict(case=f"{args.model} {args.img_size}² model", shape=f"batch {B}", backend=label,
                         fwd_ms=r["ms"], img_s=B / r["ms"] * 1e3, fwd_peak_mb=r["peak_mb"]))
    err = ((outs["vzoo"].float() - outs["official"].float()).abs().max() / outs["official"].float().abs().max()).item()
    rows[-1]["max_rel_err"] = err
    rows[-1]["x_vs_official"] = rows[0]["fwd_ms"] / rows[-1]["fwd_ms"]
    return rows


def run(args):
    dev = torch.device(args.device)
    set_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    backends = args.backends or (["triton", "torch", "official"] if dev.type == "cuda"
                                 else ["torch", "reference", "official"])
    rows = []
    for group in args.cases:
        for label, H, W, C, heads, n_win, topk in CASES[group]:
            B = args.batch or (32 if dev.type == "cuda" else 2)
            g = torch.Generator(device="cpu").manual_seed(0)
            q, k, v = (torch.randn(B, H, W, C, generator=g).to(dev, dtype) for _ in range(3))
            case_rows = []
            for be in backends:
                row = dict(case=label, shape=f"{B}x{H}x{W}x{C} h{heads}", n_win=n_win, topk=topk, backend=be)
                try:
                    r = measure(_runner(be, q, k, v, n_win, topk, heads), dev, args.warmup, args.iters)
                    row.update(fwd_ms=r["ms"], fwd_peak_mb=r["peak_mb"])
                    if args.bwd:
                        ins = [t.detach().requires_grad_() for t in (q, k, v)]
                        fb = _runner(be, *ins, n_win, topk, heads)

                        def step():
                            fb().float().sum().backward()
                            for t in ins:
                                t.grad = None
                        rb = measure(step, dev, args.warmup, args.iters)
                        row.update(fwdbwd_ms=rb["ms"], fwdbwd_peak_mb=rb["peak_mb"])
                except Exception as e:  # a backend that cannot run here: say why, keep going
                    row["note"] = f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"
                case_rows.append(progress(row))
            ref = next((r for r in case_rows if r["backend"] == "official" and "fwd_ms" in r), None)
            if ref is not None:
                for r in case_rows:
                    if r is not ref and "fwd_ms" in r:
                        r["fwd_x_vs_official"] = ref["fwd_ms"] / r["fwd_ms"]
                        if "fwdbwd_ms" in r and "fwdbwd_ms" in ref:
                            r["fwdbwd_x_vs_official"] = ref["fwdbwd_ms"] / r["fwdbwd_ms"]
                        for key in ("fwd_peak_mb", "fwdbwd_peak_mb"):
                            if r.get(key) and ref.get(key):
                                r[key.replace("peak_mb", "mem_x_less")] = ref[key] / r[key]
            rows += case_rows
    if args.official_src:
        rows += _model_rows(args, dev, dtype)
    return rows
