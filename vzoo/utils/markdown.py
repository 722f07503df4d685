"""Markdown that vzoo generates: tables of result rows, and blocks of a document rewritten in place."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence, Union

from .io import atomic_write_text

__all__ = ["markdown_table", "write_block"]


def markdown_table(rows: Sequence[Mapping], columns: Optional[Union[Sequence[str], Mapping[str, str]]] = None,
                   fmt: Callable[[object], str] = str, right: Iterable[str] = ()) -> str:
    """``rows`` as a Markdown table.

    Args:
        rows: one dict per row; a missing key is a ``None`` cell.
        columns: the keys shown, in order, or a dict ``key -> header``; default: every key of ``rows``
            in first-seen order (``'(no rows)'`` when there are none).
        fmt: formats a cell's value (``None`` included).
        right: keys of right-aligned columns.
    """
    if columns is None:
        if not rows:
            return "(no rows)"
        columns = list(dict.fromkeys(k for r in rows for k in r))
    headers = dict(columns) if isinstance(columns, Mapping) else {k: k for k in columns}
    right = set(right)
    lines = ["| " + " | ".join(headers.values()) + " |",
             "|" + "|".join(" ---: " if k in right else " --- " for k in headers) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k in headers) + " |" for r in rows]
    return "\n".join(lines)


def write_block(path: Path, tag: str, body: str, add: Callable[[str, str], str], new_file: str = "") -> None:
    """Put ``<!-- TAG -->\\nBODY\\n<!-- /TAG -->`` into the file ``path``: in place of the block with that
    tag, or, when there is none, where ``add(text, block) -> new text`` puts it. A missing file starts
    as ``new_file``; the file is replaced atomically."""
    path = Path(path)
    start, end = f"<!-- {tag} -->", f"<!-- /{tag} -->"
    block = f"{start}\n{body}\n{end}"
    text = path.read_text() if path.exists() else new_file
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else add(text, block)
    atomic_write_text(path, text)
