"""Parity with the official implementations (``tools/parity.py``): one spec module per family.

A family is a module ``vzoo/benchmarks/parity/<family>.py`` (name not starting with ``_``), found the
way :mod:`vzoo.benchmarks` finds benchmark suites, that defines ``SPEC``, a :class:`Family`: the
official repository and the file(s) to import from a checkout of it, the variants, how to build the
official model, how the release saves its weights, and optionally its own input, the way the official
test runs the model, inner comparisons and notes for the docs. Everything else — randomising the
official weights, the round trip through ``timm.create_model(..., pretrained=True)``, the comparison,
the rows, the Markdown block — is this package's, the same for every family. A family whose official
code is not PyTorch (MOAT's TensorFlow) gives a ``round_trip`` of its own instead.
"""
from pathlib import Path

from ...utils import write_block
from .. import DOC_HEAD, list_modules, load_module
from ._core import (  # noqa: F401
    COLUMNS, DEFAULT_TOL, Family, check_variant, compare, format_row, official_and_vzoo, randomize_, rows_table,
    run_family, save_torch)

__all__ = ["list_families", "load_family", "run", "write_markdown", "section_intro", "SECTION_TITLE", "Family",
           "DEFAULT_TOL", "randomize_", "compare", "save_torch", "official_and_vzoo", "format_row", "rows_table"]

SECTION_TITLE = "Parity with the official implementations"


def list_families():
    return list_modules(__name__)


def load_family(name: str) -> Family:
    """The ``SPEC`` of ``vzoo/benchmarks/parity/<name>.py`` (``ValueError`` naming the families otherwise)."""
    return load_module(__name__, name, "parity family").SPEC


def run(family: str, official_src: str, **kwargs):
    """All rows for ``family`` (see :func:`run_family` for the options)."""
    return run_family(family, load_family(family), official_src, **kwargs)


def section_intro() -> str:
    """The text under the parity section's title in docs/benchmarks.md (written when the section is new)."""
    files = "; ".join(f"{name} {spec.official_files}" for name in list_families()
                      if (spec := load_family(name)).official_files)
    return (
        "Each row: the official model (imported from a local checkout of its repository, never shipped with vzoo) "
        "with random weights (every parameter off its init, BatchNorm running statistics randomised), saved in "
        "the release's checkpoint format, loaded into vzoo with `timm.create_model(NAME, pretrained=True, "
        "pretrained_cfg_overlay=dict(file=PATH))` (the family's `checkpoint_filter_fn`), both run in eval mode "
        "in fp32 on the CPU on the same seeded batch. max abs err = max|vzoo - official|, max rel err = "
        "max abs err / max|official|; the goal is max rel err < 1e-4 (the tool exits non-zero otherwise); "
        "0.00e+00 means bit-identical outputs (the same operations in the same order).\n\n"
        "Reproduce: `--official-src DIR` is a checkout of the official repository at the commit named in each "
        f"block, or a directory holding just the files the tool imports, unchanged ({files}). Each command "
        "below also had `--markdown docs/benchmarks.md`, which wrote its block.")


def write_markdown(path: Path, family: str, header: str, table: str) -> None:
    """Rewrite ``family``'s block of the parity section of ``path`` (docs/benchmarks.md); a missing section
    is added with :func:`section_intro`, a new family's block at the end of the section."""
    def add(text: str, block: str) -> str:
        title = f"## {SECTION_TITLE}"
        if title not in text:
            text = text.rstrip("\n") + f"\n\n{title}\n\n{section_intro()}\n"
        # a new family block goes at the end of the parity section (before the next '## ' heading)
        i = text.index(title) + len(title)
        nxt = text.find("\n## ", i)
        pos = len(text) if nxt < 0 else nxt + 1
        head, tail = text[:pos].rstrip("\n"), text[pos:]
        return head + f"\n\n### {family}\n\n{block}\n" + ("\n" + tail if tail else "")
    write_block(path, f"parity:{family}", f"{header}\n\n{table}", add, new_file=DOC_HEAD)
