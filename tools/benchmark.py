#!/usr/bin/env python
"""Run a benchmark suite and print one comparison table.

    python tools/benchmark.py [SUITE] [suite options] [--json FILE] [--markdown FILE]
    python tools/benchmark.py --list
    python tools/benchmark.py --models biformer_tiny davit_tiny --batch-size 64   # SUITE defaults to `models`

Suites live in ``vzoo/benchmarks/<suite>.py`` (see ``vzoo/benchmarks/__init__.py``). ``--markdown FILE``
rewrites the suite's section of FILE (``docs/benchmarks.md``) between ``<!-- bench:SUITE -->`` markers,
headed by the device, the date and the command that produced it, so the doc is generated, not typed.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vzoo.benchmarks import DOC_HEAD, list_suites, load_suite  # noqa: E402
from vzoo.utils import atomic_write_text, markdown_table, write_block  # noqa: E402


def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def format_table(rows: list[dict]) -> str:
    """Rows as a Markdown table (columns in first-seen order)."""
    return markdown_table(rows, fmt=_fmt)


def write_markdown_section(path: Path, suite: str, header: str, table: str):
    """Rewrite the ``bench:SUITE`` block of ``path``; a new one goes at the end under ``## SUITE``."""
    write_block(path, f"bench:{suite}", f"{header}\n\n{table}",
                lambda text, block: text.rstrip("\n") + f"\n\n## {suite}\n\n{block}\n", new_file=DOC_HEAD)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    suites = list_suites()
    if "--list" in argv:
        for s in suites:
            print(f"{s:12s} {load_suite(s).DESCRIPTION}")
        return 0
    name = argv.pop(0) if argv and not argv[0].startswith("-") else "models"
    suite = load_suite(name)  # ValueError names the known suites
    p = argparse.ArgumentParser(prog=f"tools/benchmark.py {name}", description=suite.DESCRIPTION)
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    p.add_argument("--markdown", type=Path, help="rewrite this suite's section of a Markdown file (docs/benchmarks.md)")
    p.add_argument("--section", default=None,
                   help="name of the Markdown section (default: the suite's name); several runs of one suite "
                        "(e.g. models for different families) keep separate sections")
    suite.add_arguments(p)
    args = p.parse_args(argv)
    rows = suite.run(args)
    table = format_table(rows)
    import torch
    from vzoo.benchmarks._timing import device_name
    dev = getattr(args, "device", "cpu")
    header = (f"Device: {device_name(dev)} (torch {torch.__version__}); date: "
              f"{datetime.date.today().isoformat()}; command: `python tools/benchmark.py {name} "
              f"{' '.join(shlex.quote(a) for a in argv if a)}`".rstrip() + "")
    print(header)
    print(table)
    if args.json:
        atomic_write_text(args.json, json.dumps(dict(suite=name, header=header, rows=rows), indent=1))
    if args.markdown:
        write_markdown_section(args.markdown, args.section or name, header, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
