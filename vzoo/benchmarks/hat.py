"""HAT super-resolution inference: time and peak memory of vzoo's HAT against the official
architecture, on the same weights, in one run.

    python tools/benchmark.py hat --official-src /path/to/XPixelGroup/HAT [--lr-size 256 --tiled-size 1024]

Cases (per model): the whole LR image at ``--lr-size``², and ``--tiled-size``² processed in tiles of
``--tile`` LR pixels overlapping by ``--tile-overlap`` (the official example tiles by 256). Both
implementations get the same input, padded to the window by reflection and cropped as the official
test does; tiles go through the same tiler, :func:`vzoo.layers.tiled_forward` (``--tile``
LR pixels, neighbours overlapping by ``--tile-overlap``), so memory is bounded by one tile.

The official code is not part of vzoo: ``--official-src`` names a local checkout of
``XPixelGroup/HAT`` (its ``hat/archs/hat_arch.py`` is imported from there, see
:mod:`vzoo.benchmarks._official`); without it the official rows are skipped. That file imports
``einops``, which must be importable, and three names from BasicSR (a registry decorator,
``to_2tuple``, ``trunc_normal_``), which get stand-ins where BasicSR is not installed. The official model's randomly
initialised weights are loaded into vzoo through :func:`vzoo.models.hat.checkpoint_filter_fn`, and
each vzoo row reports its largest deviation from the official output.
"""
from __future__ import annotations

import importlib.util
import os

import torch
import torch.nn.functional as F

from ._official import OfficialSourceError, find_official_file, official_imports, stand_in
from ._timing import measure, progress, set_threads

DESCRIPTION = "hat: HAT x4 SR inference time/peak memory, full and tiled, vzoo vs official (--official-src)"

# official option files (options/test/HAT*_SRx4*.yml) → constructor arguments of hat_arch.HAT
_OFFICIAL_ARGS = {
    "hat_s": dict(embed_dim=144, depths=[6] * 6, num_heads=[6] * 6, compress_ratio=24, squeeze_factor=24),
    "hat": dict(embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, compress_ratio=3, squeeze_factor=30),
    "hat_l": dict(embed_dim=180, depths=[6] * 12, num_heads=[6] * 12, compress_ratio=3, squeeze_factor=30),
}


def add_arguments(p):
    p.add_argument("--models", nargs="+", default=["hat_x4"], help="vzoo HAT variants (default: hat_x4)")
    p.add_argument("--official-src", default=None,
                   help="local checkout of XPixelGroup/HAT; without it the official rows are skipped")
    p.add_argument("--lr-size", type=int, default=256, help="LR side of the whole-image case (0: skip)")
    p.add_argument("--tiled-size", type=int, default=1024, help="LR side of the tiled case (0: skip)")
    p.add_argument("--tile", type=int, default=256, help="tile side in LR pixels (official example: 256)")
    p.add_argument("--tile-overlap", type=int, default=32,
                   help="overlap of neighbouring tiles in LR pixels (vzoo.layers.tiled_forward)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--attn-backend", default="auto", choices=["auto", "reference", "na2d"])
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on the CPU (default: torch's)")


# ------------------------------------------------------------------------------ official code
def basicsr_stand_ins() -> dict:
    """Stand-ins for the three names hat_arch.py imports from BasicSR (a training framework vzoo does
    not need), used only where BasicSR is not installed: ``ARCH_REGISTRY.register()`` is a no-op
    decorator (it only records the class in BasicSR's registry), ``to_2tuple`` and ``trunc_normal_``
    are timm's functions of the same meaning (``trunc_normal_`` only initialises weights)."""
    from timm.layers import to_2tuple, trunc_normal_

    class _Registry:
        def register(self, obj=None):
            return obj if obj is not None else (lambda o: o)

    return {
        "basicsr": lambda: stand_in("basicsr"),
        "basicsr.utils": lambda: stand_in("basicsr.utils"),
        "basicsr.utils.registry": lambda: stand_in("basicsr.utils.registry", ARCH_REGISTRY=_Registry()),
        "basicsr.archs": lambda: stand_in("basicsr.archs"),
        "basicsr.archs.arch_util": lambda: stand_in("basicsr.archs.arch_util", to_2tuple=to_2tuple,
                                                    trunc_normal_=trunc_normal_),
    }


def load_official_hat(src: str):
    """The ``HAT`` class of ``SRC/hat/archs/hat_arch.py`` (imported by path, not as a package; BasicSR
    replaced by :func:`basicsr_stand_ins` where it is not installed; ``einops`` is needed for real)."""
    root, rel = find_official_file(src, ("hat/archs/hat_arch.py",), "XPixelGroup/HAT")
    if importlib.util.find_spec("einops") is None:
        raise OfficialSourceError("--official-src: the official hat/archs/hat_arch.py needs ['einops'], which is "
                                  "not importable here (pip install einops)")
    with official_imports(root, stand_ins=basicsr_stand_ins()):
        spec = importlib.util.spec_from_file_location("_official_hat_arch", os.path.join(root, rel))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    return mod.HAT


def official_kwargs(name: str) -> dict:
    size, scale = name.rsplit("_x", 1)
    return dict(upscale=int(scale), in_chans=3, img_size=64, window_size=16, conv_scale=0.01, overlap_ratio=0.5,
                img_range=1.0, mlp_ratio=2, upsampler="pixelshuffle", resi_connection="1conv", **_OFFICIAL_ARGS[size])


# ------------------------------------------------------------------------------ inference wrappers
def _padded(model, window: int, scale: int):
    """The official test: reflect-pad to the window at bottom/right, run, crop scale x the input."""
    def run(x):
        h, w = x.shape[-2:]
        xp = F.pad(x, (0, (-w) % window, 0, (-h) % window), mode="reflect")
        return model(xp)[..., :h * scale, :w * scale]
    return run


# ------------------------------------------------------------------------------ suite
def run(args):
    set_threads(args.threads)
    import timm
    import vzoo  # noqa: F401
    from vzoo.models.hat import checkpoint_filter_fn
    from vzoo.layers.tiling import tiled_forward

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    Official = load_official_hat(args.official_src) if args.official_src else None
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        net = timm.create_model(name, attn_backend=args.attn_backend).eval()
        impls = [("vzoo", net)]
        if Official is not None:
            torch.manual_seed(0)
            off = Official(**official_kwargs(name)).eval()
            # the official weights (random, fixed seed) go into vzoo through the release-file mapping
            sd = checkpoint_filter_fn(dict(off.state_dict()), net)
            net.load_state_dict(sd, strict=True)
            impls.append(("official", off))
        scale, window = net.upscale, net.window_size
        cases = []
        if args.lr_size:
            cases.append((f"full {args.lr_size}x{args.lr_size}", args.lr_size, False))
        if args.tiled_size:
            cases.append((f"tiled {args.tiled_size}x{args.tiled_size} (tile {args.tile}, overlap {args.tile_overlap})",
                          args.tiled_size, True))
        for case, size, tiled in cases:
            g = torch.Generator().manual_seed(1)
            x = torch.rand(1, 3, size, size, generator=g).to(device, dtype)
            outs = {}
            for impl, model in impls:
                model.to(device, dtype)
                fn = model if impl == "vzoo" else _padded(model, window, scale)

                last = {}

                def infer(fn=fn, last=last):
                    with torch.inference_mode():
                        last["out"] = tiled_forward(fn, x, scale, args.tile, args.tile_overlap) if tiled else fn(x)
                r = measure(infer, device, args.warmup, args.iters)
                outs[impl] = last.pop("out").float()
                rows.append(dict(model=name, impl=impl, case=case, out=f"{size * scale}x{size * scale}",
                                 ms=round(r["ms"], 1), peak_mb=None if r["peak_mb"] is None else round(r["peak_mb"]),
                                 max_abs_diff_vs_official=None, max_rel_diff_vs_official=None))
                progress(rows[-1])
                model.to("cpu")
            if "official" in outs:
                diff = (outs["vzoo"] - outs["official"]).abs().max().item()
                vz, of = rows[-2], rows[-1]
                vz["max_abs_diff_vs_official"] = f"{diff:.2e}"
                vz["max_rel_diff_vs_official"] = f"{diff / outs['official'].abs().max().item():.2e}"
                vz["official_ms / vzoo_ms"] = round(of["ms"] / vz["ms"], 2)
    return rows
