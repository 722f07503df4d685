"""Whole-model throughput and peak memory: images/s for inference (and training) at given sizes."""
from __future__ import annotations

import timm
import torch

from ._timing import measure, progress

DESCRIPTION = "models: images/s and peak memory of timm.create_model(NAME) at given input sizes"


def add_arguments(p):
    p.add_argument("--models", nargs="+", default=None,
                   help="timm model names (default: the smallest variant of every vzoo family)")
    p.add_argument("--img-size", nargs="+", type=int, default=[224],
                   help="square input sizes, e.g. 224 512")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--train", action="store_true", help="also time forward+backward")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)


def _default_models():
    import vzoo
    from vzoo.models import model_family
    best = {}
    for name in vzoo.list_vzoo_models():
        with torch.device("meta"):
            m = timm.create_model(name)
        n = sum(p.numel() for p in m.parameters())
        fam = model_family(name)
        if fam not in best or n < best[fam][1]:
            best[fam] = (name, n)
    return sorted(v[0] for v in best.values())


def run(args):
    import vzoo  # noqa: F401  (registers vzoo's models)
    names = args.models or _default_models()
    dtype = getattr(torch, args.dtype)
    rows = []
    for name in names:
        model = timm.create_model(name).to(args.device, dtype)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        for size in args.img_size:
            x = torch.randn(args.batch_size, 3, size, size, device=args.device, dtype=dtype)
            model.eval()

            def infer(model=model, x=x):  # bound now: `model` is deleted after the loop
                with torch.inference_mode():
                    model(x)
            r = measure(infer, args.device, args.warmup, args.iters)
            row = dict(model=name, params_m=round(params, 2), size=size, batch=args.batch_size,
                       infer_img_s=args.batch_size / r["ms"] * 1e3, infer_peak_mb=r["peak_mb"])
            if args.train:
                model.train()

                def step(model=model, x=x):
                    model(x).float().sum().backward()
                t = measure(step, args.device, args.warmup, args.iters)
                model.zero_grad(set_to_none=True)
                row.update(train_img_s=args.batch_size / t["ms"] * 1e3, train_peak_mb=t["peak_mb"])
            rows.append(progress(row))
        del model
    return rows
