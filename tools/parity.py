#!/usr/bin/env python
"""Check that vzoo reproduces the official implementation's outputs, from an official-format checkpoint.

    python tools/parity.py FAMILY --official-src DIR [--variants ...] [--img-size N] [--batch B]
                           [--json OUT] [--markdown docs/benchmarks.md]
    python tools/parity.py --list

For each variant the tool

1. imports the official model definition from ``DIR``, a local checkout of the family's official
   repository (vzoo ships no official code; see :mod:`vzoo.benchmarks._official`);
2. builds the official model with random weights (seeded), every parameter moved off its init and
   the BatchNorm running statistics randomised too, so that each of them changes the output;
3. saves its ``state_dict`` as the release does (``{'model': sd}``, BasicSR ``{'params_ema': sd}``,
   a DataParallel ``{'state_dict': {'module.' + k: v}}``, ...);
4. loads that file with ``timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=PATH))``,
   i.e. through the family's ``checkpoint_filter_fn`` (ULSAM, released as a module only: through
   ``vzoo.layers.ULSAM.load_state_dict``);
5. runs both in eval mode, fp32, on the CPU, on the same seeded batch, and prints one row per variant:
   max |vzoo - official|, max relative error ``max|vzoo - official| / max|official|``, output shape.

The exit status is 1 if any variant's relative error is >= ``--tol`` (default 1e-4) or fails to run,
2 for a bad command line (e.g. ``--official-src`` without the expected file).

MOAT's official code is TensorFlow (``google-research/deeplab2``): ``tools/parity.py moat`` needs TensorFlow
importable next to vzoo (it is no vzoo dependency; without it the tool says so and exits with 2) and runs
the TensorFlow round trip of :mod:`vzoo.benchmarks._moat_tf` instead of steps 2–5: release-layout TF1
checkpoint, ``tools/convert.py``, timm's pretrained path, logits and the res2..res5 endpoints compared.

Each family is one spec module, ``vzoo/benchmarks/parity/<family>.py`` (see :mod:`vzoo.benchmarks.parity`);
adding a family's parity is adding its module.

``--markdown FILE`` rewrites this family's block (between ``<!-- parity:FAMILY -->`` markers) of the
"Parity with the official implementations" section of FILE, creating the section if it is missing,
with the date, the device and the command; the rest of FILE (``tools/benchmark.py``'s sections) is kept.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from vzoo.benchmarks._official import OfficialSourceError  # noqa: E402
from vzoo.benchmarks.parity import (  # noqa: E402
    DEFAULT_TOL, list_families, load_family, rows_table, run, write_markdown)
from vzoo.utils import atomic_write_text  # noqa: E402


def _git_head(src: str) -> Optional[str]:
    import subprocess
    try:
        r = subprocess.run(["git", "-C", src, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 and os.path.isdir(os.path.join(src, ".git")) else None


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    families = list_families()
    p = argparse.ArgumentParser(prog="tools/parity.py", description=__doc__.split("\n\n")[0])
    p.add_argument("family", nargs="?", choices=families)
    p.add_argument("--list", action="store_true", help="list the families, their repositories and variants")
    p.add_argument("--official-src", help="local checkout of the family's official repository")
    p.add_argument("--variants", nargs="+", help="default: every released variant of the family")
    p.add_argument("--img-size", type=int, help="input side (default: 224; HAT 48 LR pixels; ULSAM 56; MOAT 256)")
    p.add_argument("--batch", type=int, help="batch (default 2; 1 for BiFormer and HAT)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=DEFAULT_TOL, help="max relative error allowed (default 1e-4)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--official-rev", help="the official code's revision, for the record (default: the "
                                           "checkout's git HEAD, if it is a git checkout)")
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    p.add_argument("--markdown", type=Path, help="rewrite this family's parity block of a Markdown file")
    args = p.parse_args(argv)
    if args.list:
        for name in families:
            fam = load_family(name)
            print(f"{name:9s} {fam.repo:45s} {' '.join(fam.variants)}"
                  + (f" (also: {' '.join(fam.extra_variants)})" if fam.extra_variants else ""))
        return 0
    if not args.family:
        p.error("FAMILY is required (or --list)")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        rows = run(args.family, args.official_src, variants=args.variants, img_size=args.img_size,
                   batch=args.batch, seed=args.seed, tol=args.tol)
    except (OfficialSourceError, ValueError) as e:
        print(f"tools/parity.py: error: {e}", file=sys.stderr)
        return 2
    failed = [r for r in rows if r["status"] != "ok"]
    command = "python tools/parity.py " + " ".join(
        shlex.quote(a) for a in argv if not a.startswith("--markdown") and a != str(args.markdown))
    header = (f"CPU, fp32 ({platform.processor() or platform.machine()}, torch {torch.__version__}); "
              f"date: {datetime.date.today().isoformat()}; command: `{command}`")
    fam = load_family(args.family)
    rev = args.official_rev or _git_head(args.official_src)
    header += f"\n\nOfficial code: `{fam.repo}`" + (f" at `{rev}`" if rev else "") + f"; {fam.notes}."
    table = rows_table(rows)
    print(header)
    print(table)
    print(f"{len(rows) - len(failed)}/{len(rows)} variants within max rel err < {args.tol:g}")
    if args.json:
        atomic_write_text(args.json, json.dumps(dict(family=args.family, header=header, tol=args.tol,
                                                     official_src=os.path.abspath(args.official_src), rows=rows),
                                                indent=1))
    if args.markdown:
        write_markdown(args.markdown, args.family, header, table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
