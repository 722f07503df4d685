"""``tools/benchmark.py ops``: every attention-op suite in one table (``na``, then ``bra``).

Each op suite runs with its own defaults plus the options given here (device, dtype, backward,
repetitions); for per-op options (cases, backends, the official BiFormer checkout) run the op's
own suite, e.g. ``tools/benchmark.py na --cases nat_tiny --bwd``.
"""
import argparse
import importlib

import torch

DESCRIPTION = "ops: the attention ops (na, bra) with their default cases, fwd (and fwd+bwd with --bwd)"
OPS = ("na", "bra")


def add_arguments(p):
    p.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--bwd", action="store_true", help="also time forward+backward")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on the CPU (default: torch's)")


def run(args):
    rows = []
    for op in args.ops:
        suite = importlib.import_module(f"{__package__}.{op}")
        parser = argparse.ArgumentParser()
        suite.add_arguments(parser)
        argv = ["--device", args.device, "--dtype", args.dtype, "--warmup", str(args.warmup),
                "--iters", str(args.iters)] + (["--bwd"] if args.bwd else []) + \
            (["--threads", str(args.threads)] if args.threads else [])
        for r in suite.run(parser.parse_args(argv)):
            rows.append(dict(op=op, **r))
    return rows
