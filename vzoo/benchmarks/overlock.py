"""OverLoCK whole-model inference (and training step): images/s and peak memory of vzoo's OverLoCK
against the official model, on the same weights, in one run.

    python tools/benchmark.py overlock --official-src /path/to/LMMMEng/OverLoCK [--models overlock_xt overlock_t]
        [--img-size 224 512] [--mode fwd fwd+bwd] [--threads 1]

The official ``models/overlock.py`` needs natten 0.17's ``natten.functional.na2d_av``, which no longer
exists (natten >= 0.20) and cannot be installed on today's stack. It runs here with
:func:`na2d_av_gather`, a brute-force stand-in of the same semantics that materialises the ``k*k``
gathered copy of the values (what a gather-based ``na2d_av`` does), installed as a fake
``natten.functional`` only while the file is imported. Its other imports (``einops``, ``mmengine``,
timm) are needed for real. The official model's random weights (BatchNorm statistics randomised) go
into vzoo through :func:`vzoo.models.overlock.checkpoint_filter_fn`, and each vzoo row reports its
largest deviation from the official output.
"""
from __future__ import annotations

import torch

from ._official import find_official_file, import_official, stand_in
from ._timing import measure, progress

DESCRIPTION = "overlock: OverLoCK images/s and peak memory, vzoo vs official with a gather na2d_av (--official-src)"


def add_arguments(p):
    p.add_argument("--models", nargs="+", default=["overlock_xt", "overlock_t"], help="vzoo OverLoCK variants")
    p.add_argument("--official-src", default=None,
                   help="local checkout of LMMMEng/OverLoCK; without it the official rows are skipped")
    p.add_argument("--img-size", type=int, nargs="+", default=[224, 512])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--mode", nargs="+", default=["fwd"], choices=["fwd", "fwd+bwd"],
                   help="fwd+bwd is vzoo only on the CPU (the official natten path never had a CPU backward)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)


# ------------------------------------------------------------------------------ official code
def na2d_av_gather(attn: torch.Tensor, value: torch.Tensor, kernel_size: int, dilation: int = 1) -> torch.Tensor:
    """natten 0.17's ``na2d_av`` by brute force (heads first): ``attn`` ``(B, heads, H, W, k*k)``, ``value``
    ``(B, heads, H, W, d)``; neighbour ``a*k + b`` of pixel ``(i, j)`` is the value at row
    ``lo(i) + a*dilation``, column ``lo(j) + b*dilation`` of its border-shifted window, within its dilation
    group. Gathers all ``k*k`` neighbours of every pixel into one tensor, then contracts."""
    k, d = kernel_size, dilation
    _, _, H, W, _ = value.shape

    def neighbours(length):  # (length, k) absolute neighbour index of each position
        x = torch.arange(length)
        group, xg = x % d, x // d
        glen = (length - group + d - 1) // d
        start = torch.minimum(torch.clamp(xg - k // 2, min=0), glen - k)
        return (start[:, None] + torch.arange(k)) * d + group[:, None]

    rows, cols = neighbours(H).to(value.device), neighbours(W).to(value.device)
    gathered = value[:, :, rows[:, None, :, None], cols[None, :, None, :]]  # (B, heads, H, W, k, k, d)
    return torch.einsum("bghwn,bghwnc->bghwc", attn, gathered.flatten(4, 5))


def natten_stand_ins() -> dict:
    """A fake ``natten`` exposing only ``natten.functional.na2d_av`` (:func:`na2d_av_gather`): natten 0.17,
    the version the release imports, cannot be installed on this stack, and ``na2d_av`` is gone from
    natten >= 0.20. Installed only where ``natten`` is not importable at all, so a real natten 0.17 is
    used where present; a newer natten (no ``na2d_av``) is shadowed by :func:`load_official_overlock`."""
    return {"natten": lambda: stand_in("natten"),
            "natten.functional": lambda: stand_in("natten.functional", na2d_av=na2d_av_gather)}


def load_official_overlock(src: str):
    """The release's ``models.overlock`` module from a checkout of ``LMMMEng/OverLoCK`` (``einops`` and
    ``mmengine`` needed), with the natten stand-in of :func:`natten_stand_ins`."""
    import sys
    root, _ = find_official_file(src, ("models/overlock.py",), "LMMMEng/OverLoCK")
    saved = {n: sys.modules.pop(n) for n in ("natten", "natten.functional") if n in sys.modules}
    real = None
    try:
        import natten.functional as real  # noqa: F401  (0.17 has na2d_av; newer versions do not)
    except ImportError:
        pass
    shadow = real is None or not hasattr(real, "na2d_av")
    for n in ("natten", "natten.functional"):
        sys.modules.pop(n, None)
    stand_ins = natten_stand_ins()
    if shadow:  # install the stand-in even though a (newer) natten is importable
        for n, make in stand_ins.items():
            sys.modules[n] = make()
    try:
        return import_official(root, "models.overlock", requires=("einops", "mmengine"), stand_ins=stand_ins)
    finally:
        for n in ("natten", "natten.functional"):
            sys.modules.pop(n, None)
        sys.modules.update(saved)


def official_model(mod, name: str) -> torch.nn.Module:
    """The official model of a vzoo variant name (``overlock_t``, ``overlock_t_reparam``); the optional
    iGEMM large-kernel conv is not asked for (``use_gemm=False``: plain ``nn.Conv2d``, the same math)."""
    if name.endswith("_reparam"):  # the release builds these as overlock_*(deploy=True)
        return getattr(mod, name[:-len("_reparam")])(deploy=True, use_gemm=False)
    return getattr(mod, name)(use_gemm=False)


# ------------------------------------------------------------------------------ suite
def run(args):
    import timm

    import vzoo  # noqa: F401
    from vzoo.models.overlock import checkpoint_filter_fn
    from .parity import randomize_

    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    mod = load_official_overlock(args.official_src) if args.official_src else None
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        net = timm.create_model(name).eval()
        impls = [("vzoo", net)]
        if mod is not None:
            off = randomize_(official_model(mod, name), 0).eval()
            net.load_state_dict(checkpoint_filter_fn(dict(off.state_dict()), net), strict=True)
            impls.append(("official", off))
        for size in args.img_size:
            for mode in args.mode:
                x = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device, dtype)
                outs = {}
                for impl, model in impls:
                    if mode == "fwd+bwd" and impl == "official" and device.type == "cpu":
                        continue  # natten never had a CPU backward: nothing to compare against
                    model.to(device, dtype)
                    last = {}

                    def step(model=model, last=last):
                        if mode == "fwd":
                            with torch.inference_mode():
                                last["out"] = model(x)
                        else:
                            model.zero_grad(set_to_none=True)
                            out = model(x)
                            out.float().square().mean().backward()
                            last["out"] = out.detach()
                    r = measure(step, device, args.warmup, args.iters)
                    outs[impl] = last.pop("out").float()
                    rows.append(dict(model=name, impl=impl, mode=mode, size=f"{size}x{size}", batch=args.batch,
                                     dtype=args.dtype, ms=round(r["ms"], 1),
                                     img_per_s=round(args.batch * 1000.0 / r["ms"], 2),
                                     peak_mb=None if r["peak_mb"] is None else round(r["peak_mb"]),
                                     max_rel_diff_vs_official=None))
                    progress(rows[-1])
                    model.to("cpu")
                if "official" in outs:
                    vz, of = rows[-2], rows[-1]
                    diff = (outs["vzoo"] - outs["official"]).abs().max().item()
                    vz["max_rel_diff_vs_official"] = f"{diff / outs['official'].abs().max().item():.2e}"
                    vz["vzoo / official img/s"] = round(vz["img_per_s"] / of["img_per_s"], 2)
    return rows
