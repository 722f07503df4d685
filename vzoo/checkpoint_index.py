"""The checkpoint index: ``vzoo/data/checkpoint_index/<family>.json``, one file a family (package data,
so that a non-editable install ships it).

Each file is ``{"family": str, "models": {timm_name: entry}}`` and each entry says where the
official weights are published and how vzoo converts them::

    {"source": URL, "format": "torch" | "safetensors" | "basicsr" | "tf",
     "sha256": hex or null, "filter_fn": "module.path:function" or "module.path.function",
     "notes": str (optional),
     "file": str (optional: the file's name when ``source`` is a Google Drive folder),
     "downloadable": bool (optional, default true: false when ``source`` is a page, not a file)}

Large weights are never committed: ``pretrained=True`` downloads ``source`` and converts it into a
cache (:mod:`vzoo.hub`), and ``tools/convert.py`` turns a downloaded official file into vzoo's own
format. Both refuse a file whose sha256 differs from the one the index pins; where the entry's
``sha256`` is null (not pinned yet), convert says so and prints the file's sha256, and
``tools/convert.py --record`` writes it here (:func:`record_sha256`).
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
from pathlib import Path
from typing import Callable, Dict, Optional

INDEX_DIR = Path(__file__).resolve().parent / "data" / "checkpoint_index"
FORMATS = ("torch", "safetensors", "basicsr", "tf")
REQUIRED = ("source", "format", "sha256", "filter_fn")

__all__ = ["INDEX_DIR", "FORMATS", "load_index", "record_sha256", "resolve_filter_fn", "sha256_file"]


def _validate(path: Path, name: str, entry: dict) -> None:
    missing = [k for k in REQUIRED if k not in entry]
    if missing:
        raise ValueError(f"{path}: entry {name!r} lacks {missing}; every entry needs {list(REQUIRED)}")
    if entry["format"] not in FORMATS:
        raise ValueError(f"{path}: entry {name!r} has format={entry['format']!r}; allowed: {list(FORMATS)}")
    sha = entry["sha256"]
    if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
        raise ValueError(f"{path}: entry {name!r} has sha256={sha!r}; expected 64 lowercase hex digits or null")
    if not isinstance(entry.get("downloadable", True), bool):
        raise ValueError(f"{path}: entry {name!r} has downloadable={entry['downloadable']!r}; allowed: true, false")
    if "file" in entry and not (isinstance(entry["file"], str) and entry["file"]):
        raise ValueError(f"{path}: entry {name!r} has file={entry['file']!r}; expected a file name")


def load_index(index_dir: Optional[os.PathLike] = None) -> Dict[str, dict]:
    """Every entry of every index file, keyed by timm model name (each entry gains ``family``)."""
    index_dir = Path(index_dir or INDEX_DIR)
    out: Dict[str, dict] = {}
    for path in sorted(index_dir.glob("*.json")):
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or "models" not in data or "family" not in data:
            raise ValueError(f"{path}: expected an object with 'family' and 'models'")
        for name, entry in data["models"].items():
            _validate(path, name, entry)
            if name in out:
                raise ValueError(f"{path}: {name!r} is already indexed in {out[name]['index_file']}")
            out[name] = dict(entry, family=data["family"], index_file=str(path))
    return out


def resolve_filter_fn(spec: Optional[str]) -> Optional[Callable]:
    """``'vzoo.models.van.checkpoint_filter_fn'`` (or ``'pkg.mod:fn'``) → the function."""
    if not spec:
        return None
    mod, _, fn = spec.partition(":") if ":" in spec else spec.rpartition(".")
    return getattr(importlib.import_module(mod), fn)


def sha256_file(path: os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def record_sha256(name: str, digest: str, index_dir: Optional[os.PathLike] = None) -> Path:
    """Write ``digest`` as the ``sha256`` of entry ``name`` in its index file, changing only that value
    (the files are laid out by hand; a rewrite by ``json.dump`` would reformat all of them)."""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"digest={digest!r}: expected 64 lowercase hex digits")
    entry = load_index(index_dir).get(name)
    if entry is None:
        raise KeyError(f"{name!r} is not in the checkpoint index ({index_dir or INDEX_DIR})")
    path = Path(entry["index_file"])
    text = path.read_text()
    start = text.index(json.dumps(name) + ":")
    sha = re.compile(r'"sha256"\s*:\s*(null|"[0-9a-f]{64}")').search(text, start)
    new = text[:sha.start(1)] + json.dumps(digest) + text[sha.end(1):]
    data = json.loads(new)
    expected = json.loads(text)
    expected["models"][name]["sha256"] = digest
    if data != expected:  # the value found was not this entry's: refuse rather than damage the index
        raise ValueError(f"{path}: could not locate the sha256 of {name!r} unambiguously")
    from vzoo.utils import atomic_write_text
    atomic_write_text(path, new)
    return path
