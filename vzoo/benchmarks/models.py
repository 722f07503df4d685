"""Whole-model throughput and peak memory: images/s for inference (and training) at given sizes; with
``--vs-official``, every family against its official implementation and timm's equivalent.

    python tools/benchmark.py models --models van_b0 biformer_tiny --img-size 224 --batch-size 8 --train
    python tools/benchmark.py models --vs-official --official-root CHECKOUTS --threads 1 --repeats 3

``--vs-official`` takes each family of ``tools/parity.py`` (its spec in :mod:`vzoo.benchmarks.parity` says
where the official model file is, how to build it and how the official test runs it), imports the official
model from a checkout in ``--official-root`` (as ``tools/parity.py --official-src`` does), randomises it and
loads its weights into vzoo through the family's checkpoint loader, so both compute on the same weights (the
row's ``max_rel_err``). Each of vzoo, official and timm's equivalent (:data:`TIMM_EQUIVALENT`) is timed at each
batch, in inference and in a training step (forward + backward + SGD step), in interleaved rounds (vzoo,
official, timm, vzoo, ...) so that load drift treats them alike; each keeps its best call. ``x_official`` is
official time / vzoo time (> 1: vzoo faster), ``x_official_cpu`` the same from this process's CPU time (which
other processes on a shared machine do not inflate). Peak memory is the tensor memory the call allocates
(torch profiler's allocation records, :func:`peak_tensor_mb`), not the RSS. ``--repeats`` is used by
``--vs-official`` only; without it the suite times each model once (``--warmup``, ``--iters``).
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile
import time
import warnings
from typing import Callable

import timm
import torch

from ._official import checkout_in, find_official_file, stand_in
from ._timing import add_timing_arguments, measure, progress

DESCRIPTION = ("models: images/s and peak memory of timm.create_model(NAME) at given input sizes; --vs-official: "
               "every family vs its official code and timm, inference and a training step")


def add_arguments(p):
    p.add_argument("--models", nargs="+", default=None,
                   help="timm model names (default: the smallest variant of every vzoo family)")
    p.add_argument("--img-size", nargs="+", type=int, default=None,
                   help="square input sizes, e.g. 224 512 (default: 224; --vs-official: the family's parity size)")
    p.add_argument("--batch-size", type=int, nargs="+", default=None, help="default: 8 (--vs-official: 1 8)")
    p.add_argument("--train", action="store_true", help="also time forward+backward")
    add_timing_arguments(p, iters=3)  # --device --dtype --threads --repeats (--vs-official) --warmup --iters
    _add_vs_official_arguments(p)


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
    if args.vs_official:
        return run_vs_official(args)
    import vzoo  # noqa: F401  (registers vzoo's models)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.models or _default_models()
    dtype = getattr(torch, args.dtype)
    rows = []
    for name in names:
        model = timm.create_model(name).to(args.device, dtype)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        for size, batch in ((s, b) for s in args.img_size or [224] for b in args.batch_size or [8]):
            x = torch.randn(batch, 3, size, size, device=args.device, dtype=dtype)
            model.eval()

            def infer(model=model, x=x):  # bound now: `model` is deleted after the loop
                with torch.inference_mode():
                    model(x)
            r = measure(infer, args.device, args.warmup, args.iters)
            row = dict(model=name, params_m=round(params, 2), size=size, batch=batch,
                       infer_img_s=batch / r["ms"] * 1e3, infer_peak_mb=r["peak_mb"])
            if args.train:
                model.train()

                def step(model=model, x=x):
                    model(x).float().sum().backward()
                t = measure(step, args.device, args.warmup, args.iters)
                model.zero_grad(set_to_none=True)
                row.update(train_img_s=batch / t["ms"] * 1e3, train_peak_mb=t["peak_mb"])
            rows.append(progress(row))
        del model
    return rows


# ------------------------------------------------------------------------------------ --vs-official
# vzoo's variant per family where it is not the parity spec's first one (ECA-ResNet-50: the figure)
_DEFAULT_VARIANT = {"eca": "eca_resnet50", "ulsam": "ulsam_g4"}
# input side per family where it is not the parity spec's (HAT-S: 32 LR pixels, 2 x 2 windows, keeps batch 8
# training to seconds on one CPU thread)
_DEFAULT_SIZE = {"hat": 32}
# timm's own model of the same family, where timm has one (its name says how it differs: ResNet-D stem, ...)
TIMM_EQUIVALENT = {
    "eca_resnet50": "ecaresnet50d", "eca_resnet101": "ecaresnet101d",
    "evit_deit_small_patch16_224": "deit_small_patch16_224", "evit_deit_base_patch16_224": "deit_base_patch16_224",
    "sparsifiner_deit_small_patch16_224": "deit_small_distilled_patch16_224",
}


def _numpy_int_alias(official):
    """LV-ViT's release runs MixToken in its training forward, whose box sampling calls ``np.int``, an alias of
    ``int`` that numpy 1.24 removed: the release module sees a numpy with that alias back (no arithmetic changes).
    Its training step then also does MixToken's clone and flips (cheap next to the blocks); vzoo leaves the
    augmentation to the data pipeline."""
    import numpy
    type(official).forward.__globals__["np"] = stand_in("numpy", **{**vars(numpy), "int": int})


# what the official model needs to run its training step on today's stack, per family
_OFFICIAL_FIXES = {"lvvit": _numpy_int_alias}
IMPLS = ("vzoo", "official", "timm")


def _add_vs_official_arguments(p):
    g = p.add_argument_group("--vs-official: every family against its official code and timm (same run)")
    g.add_argument("--vs-official", action="store_true",
                   help="one table: vzoo vs official vs timm's equivalent, inference and a training step "
                        "(forward + backward + SGD step), at --batch-size (default 1 8)")
    g.add_argument("--official-root", default=os.environ.get("VZOO_OFFICIAL_ROOT"),
                   help="directory of official checkouts, one per repository, named as the repository (BiFormer, "
                        "VAN-Classification, ...) or owner+name (default: $VZOO_OFFICIAL_ROOT); families whose "
                        "checkout is missing are listed with the reason and run without the official column")
    g.add_argument("--official-src", nargs="+", default=[], metavar="FAMILY=DIR",
                   help="a family's checkout given directly (overrides --official-root)")
    g.add_argument("--families", nargs="+", default=None, help="default: every family of tools/parity.py --list")
    g.add_argument("--variants", nargs="+", default=[], metavar="FAMILY=VARIANT",
                   help="the family's variant (default: the parity spec's first; ECA: eca_resnet50, ULSAM: ulsam_g4)")
    g.add_argument("--family-img-size", nargs="+", default=[], metavar="FAMILY=SIDE",
                   help="a family's input side (default: --img-size, else the parity spec's; HAT: 32)")
    g.add_argument("--timm-equivalent", nargs="+", default=[], metavar="VARIANT=TIMM_NAME",
                   help="timm's model to compare a variant with (adds to / replaces TIMM_EQUIVALENT)")


def _pairs(items, what):
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"{what} takes KEY=VALUE items, got {item!r}")
        out[key] = value
    return out


def peak_tensor_mb(fn: Callable[[], object]) -> float:
    """Peak of the tensor memory allocated during one call of ``fn``, above what was allocated before it, in MiB,
    from the torch profiler's allocation records (exact for tensors on the CPU, unlike the RSS high-water mark,
    which allocator caching hides, or tracemalloc, which does not see torch's allocator)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    sizes = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    cur = peak = 0
    for _, nbytes in sizes:
        cur += nbytes
        peak = max(peak, cur)
    return peak / 2**20


def _tensors(out):
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, dict):
        for v in out.values():
            yield from _tensors(v)
    elif isinstance(out, (list, tuple)):
        for v in out:
            yield from _tensors(v)


def _infer_fn(run, x):
    def infer():
        with torch.inference_mode():
            return run(x)
    return infer


def _train_fn(model, run, x):
    """One training step: forward (train mode), the mean of every differentiable output summed as the loss,
    backward, plain SGD step (a tiny lr: the weights barely move over the repeats)."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6)

    def step():
        out = run(x)
        sum(t.float().mean() for t in _tensors(out) if t.requires_grad).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def _vzoo_plain(family, variant):
    if family == "ulsam":  # released as a module: the parity spec's module on 64 channels
        from vzoo.layers.ulsam import ULSAM
        from .parity.ulsam import _CHANNELS, _groups
        return ULSAM(_CHANNELS, _groups(variant))
    return timm.create_model(variant)


def _official_pair(family, spec, src, variant, workdir):
    """(official model, its run wrapper, vzoo model with the official weights), as the parity check builds them;
    raises :class:`OfficialSourceError` / anything the official file raises."""
    from .parity import official_and_vzoo
    root, rel = find_official_file(src, spec.candidates, spec.repo)
    with contextlib.redirect_stdout(sys.stderr):  # some releases print banners while building: keep stdout the table
        official, ours = official_and_vzoo(spec, spec.load(root, rel), variant, seed=0, workdir=workdir)
    if family in _OFFICIAL_FIXES:
        _OFFICIAL_FIXES[family](official)
    return official, spec.official_run(official, variant), ours


def _family_models(family, spec, args, workdir):
    """{impl: (model, run)} for one family, and (variant, timm name, note); an impl that cannot run is absent
    and the note says why."""
    variant = _pairs(args.variants, "--variants").get(family) or _DEFAULT_VARIANT.get(family) or spec.variants[0]
    timm_name = {**TIMM_EQUIVALENT, **_pairs(args.timm_equivalent, "--timm-equivalent")}.get(variant)
    src = _pairs(args.official_src, "--official-src").get(family) or checkout_in(args.official_root, spec.repo)
    models, notes = {}, []
    if spec.round_trip is not None:  # MOAT: deeplab2 is TensorFlow
        notes.append(f"official: skipped, {spec.repo} is TensorFlow, " + (
            "which is not installed here" if importlib.util.find_spec("tensorflow") is None
            else "which this suite does not time yet"))
    elif src is None:
        notes.append(f"official: skipped, no checkout of {spec.repo} in --official-root")
    else:
        try:
            official, run, ours = _official_pair(family, spec, src, variant, workdir)
            models["official"], models["vzoo"] = (official, run), (ours, ours)
        except Exception as e:  # an unusable checkout: say why, keep the vzoo/timm columns
            notes.append(f"official: skipped, {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200])
    if "vzoo" not in models:
        ours = _vzoo_plain(family, variant)
        models["vzoo"] = (ours, ours)
    if timm_name:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = timm.create_model(timm_name)
        models["timm"] = (m, m)
    return models, variant, timm_name, "; ".join(notes)


def _time_interleaved(fns, args):
    """({impl: dict(ms, cpu_ms, peak_mb)}, errors): ``args.repeats`` rounds, the impls alternating, each keeping
    its best call (wall clock and this process's CPU time); peak memory from one more, profiled call. An impl
    whose first call raises is left out, with the reason in ``errors``."""
    best, errors = {}, []
    for impl in list(fns):
        try:
            fns[impl]()  # also the first warm-up call
        except Exception as e:  # one impl that cannot run this case must not hide the others' figures
            errors.append(f"{impl}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160])
            fns = {k: v for k, v in fns.items() if k != impl}
    for r in range(args.repeats):
        for impl, fn in fns.items():
            cpu = []

            def timed(fn=fn, cpu=cpu):
                t0 = time.process_time()
                fn()
                cpu.append(time.process_time() - t0)
            m = measure(timed, args.device, max(args.warmup - 1, 0) if r == 0 else 0, args.iters)
            b = best.setdefault(impl, dict(ms=float("inf"), cpu_ms=float("inf")))
            b["ms"] = min(b["ms"], m["ms_min"])
            b["cpu_ms"] = min(b["cpu_ms"], min(cpu[-args.iters:]) * 1e3)
    for impl, fn in fns.items():
        best[impl]["peak_mb"] = peak_tensor_mb(fn)
    return best, errors


def run_vs_official(args):
    import vzoo  # noqa: F401  (registers vzoo's models)
    from .parity import compare, list_families, load_family
    if torch.device(args.device).type != "cpu" or args.dtype != "float32":
        raise ValueError(f"--vs-official: --device must be cpu and --dtype float32 (the official models are compared "
                         f"as the parity check runs them), got {args.device!r}, {args.dtype!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    families = args.families or list_families()
    unknown = sorted(set(families) - set(list_families()))
    if unknown:
        raise ValueError(f"--families: unknown {unknown}; choose from {list_families()}")
    batches = args.batch_size or [1, 8]
    rows = []
    for family in families:
        spec = load_family(family)
        with tempfile.TemporaryDirectory(prefix=f"vzoo_vs_official_{family}_") as workdir:
            models, variant, timm_name, note = _family_models(family, spec, args, workdir)
        print(f"{family}: {variant} vs {sorted(set(models) - {'vzoo'}) or 'nothing'}" + (f" ({note})" if note else ""),
              file=sys.stderr, flush=True)
        for mode in ("infer", "train"):
            for model, _ in models.values():
                model.train(mode == "train")
            side = _pairs(args.family_img_size, "--family-img-size").get(family)
            sizes = [int(side)] if side else args.img_size or [_DEFAULT_SIZE.get(family, spec.img_size)]
            for size, batch in ((s, b) for s in sizes for b in batches):
                x = (spec.make_input or (lambda v, b, s, g: torch.randn(b, 3, s, s, generator=g)))(
                    variant, batch, size, torch.Generator().manual_seed(batch))
                fns = {impl: (_infer_fn(run, x) if mode == "infer" else _train_fn(model, run, x))
                       for impl, (model, run) in models.items()}
                t, errors = _time_interleaved(fns, args)
                err = None
                if mode == "infer" and {"vzoo", "official"} <= set(t):
                    err = compare(fns["vzoo"](), fns["official"]())["max_rel"]
                row = dict(family=family, variant=variant, mode=mode, batch=batch, input="x".join(map(str, x.shape)))
                for impl in IMPLS:
                    row[f"{impl}_img_s"] = batch / t[impl]["ms"] * 1e3 if impl in t else None
                row["timm_model"] = timm_name
                for other in ("official", "timm"):
                    both = {"vzoo", other} <= set(t)
                    row[f"x_{other}"] = t[other]["ms"] / t["vzoo"]["ms"] if both else None
                    row[f"x_{other}_cpu"] = t[other]["cpu_ms"] / t["vzoo"]["cpu_ms"] if both else None
                for impl in IMPLS:
                    row[f"{impl}_peak_mb"] = t[impl]["peak_mb"] if impl in t else None
                row.update(max_rel_err=err, note="; ".join([*errors, *([note] if note else [])]) or None)
                rows.append(progress(row))
    return rows
