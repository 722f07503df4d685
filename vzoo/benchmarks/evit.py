"""EViT/DeiT-S at several keep rates against timm's DeiT-S: images/s, peak memory, speed-up.

Every model has the same weights (EViT adds none: it is built from the DeiT's state dict), so only the
token reorganization differs. The cases are timed in interleaved rounds (DeiT, EViT at each keep rate,
DeiT, ...) and each keeps its best round, so that a machine whose speed drifts treats them alike.
``img_s`` is wall-clock throughput; ``cpu_img_s`` divides by the CPU time the process itself used (its
best call; CPU runs only), which other processes on a shared machine do not inflate -- the figure to
compare with one thread on a busy CPU. ``--compile`` adds ``torch.compile``d rows (inductor) for
``--compile-keep-rates``.

    python tools/benchmark.py evit --threads 1 --batch-size 8 --repeats 5      # the issue's CPU figure
"""
from __future__ import annotations

import time

import timm
import torch

from ._timing import add_timing_arguments, measure, progress

DESCRIPTION = "evit: EViT/DeiT-S images/s at keep rates 1.0 ... 0.5 vs timm's deit_small_patch16_224"


def add_arguments(p):
    p.add_argument("--model", default="evit_deit_small_patch16_224")
    p.add_argument("--baseline", default="deit_small_patch16_224", help="timm model EViT's weights come from")
    p.add_argument("--keep-rates", nargs="+", type=float, default=[1.0, 0.9, 0.7, 0.5])
    p.add_argument("--no-fuse", action="store_true", help="drop the inattentive tokens instead of fusing them")
    p.add_argument("--batch-size", nargs="+", type=int, default=[8])
    add_timing_arguments(p)
    p.add_argument("--compile", action="store_true", help="also time torch.compile(model)")
    p.add_argument("--compile-keep-rates", nargs="+", type=float, default=[0.7])


def run(args):
    import vzoo  # noqa: F401  (registers vzoo's models)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    base = timm.create_model(args.baseline).to(args.device, dtype).eval()
    state = base.state_dict()

    def evit(keep_rate):
        model = timm.create_model(args.model, keep_rate=keep_rate, fuse_token=not args.no_fuse)
        model.load_state_dict(state)
        return model.to(args.device, dtype).eval()

    cases = [(args.baseline, None, False, base)] + [(args.model, r, False, evit(r)) for r in args.keep_rates]
    if args.compile:
        cases += [(args.model, r, True, torch.compile(evit(r))) for r in args.compile_keep_rates]
    rows = []
    for batch in args.batch_size:
        x = torch.randn(batch, 3, 224, 224, device=args.device, dtype=dtype)
        best, cpu_s = {}, {i: [] for i in range(len(cases))}
        for _ in range(args.repeats):
            for i, (_, _, _, model) in enumerate(cases):
                calls = []

                def infer(model=model, calls=calls):
                    t0 = time.process_time()
                    with torch.inference_mode():
                        model(x)
                    calls.append(time.process_time() - t0)
                r = measure(infer, args.device, args.warmup, args.iters)
                cpu_s[i] += calls[args.warmup:]  # the timed calls only
                if i not in best or r["ms"] < best[i]["ms"]:
                    best[i] = r
        base_ms, base_cpu = best[0]["ms"], min(cpu_s[0])
        on_cpu = torch.device(args.device).type == "cpu"  # a GPU runs asynchronously: no CPU-time figure
        for i, (name, keep_rate, compiled, _) in enumerate(cases):
            rows.append(progress(dict(
                model=name, keep_rate=keep_rate, fuse_token=None if keep_rate is None else not args.no_fuse,
                compiled=compiled, batch=batch, img_s=batch / best[i]["ms"] * 1e3, peak_mb=best[i]["peak_mb"],
                speedup=round(base_ms / best[i]["ms"], 3), cpu_img_s=batch / min(cpu_s[i]) if on_cpu else None,
                cpu_speedup=round(base_cpu / min(cpu_s[i]), 3) if on_cpu else None)))
    return rows
