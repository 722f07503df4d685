"""The checkpoint index: ``vzoo/data/checkpoint_index/<family>.json``, one file a family (package data,
so that a non-editable install ships it).

Each file is ``{"family": str, "models": {timm_name: entry}}`` and each entry says where the
official weights are published and how vzoo converts them::

    {"source": URL, "format": "torch" | "safetensors" | "basicsr" | "tf",
     "sha256": hex or null, "filter_fn": "module.path:function" or "module.path.function",
     "notes": str (optional)}

Large weights are never committed; ``tools/convert.py`` turns a downloaded official file into
vzoo's own format. It refuses a file whose sha256 differs from the one the index pins; where the
entry's ``sha256`` is null (not pinned yet), it says so and prints the file's sha256 to record.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
from pathlib import Path
from typing import Callable, Dict, Optional

INDEX_DIR = Path(__file__).resolve().parent / "data" / "checkpoint_index"
FORMATS = ("torch", "safetensors", "basicsr", "tf")
REQUIRED = ("source", "format", "sha256", "filter_fn")

__all__ = ["INDEX_DIR", "FORMATS", "load_index", "resolve_filter_fn", "sha256_file"]


def _validate(path: Path, name: str, entry: dict) -> None:
    missing = [k for k in REQUIRED if k not in entry]
    if missing:
        raise ValueError(f"{path}: entry {name!r} lacks {missing}; every entry needs {list(REQUIRED)}")
    if entry["format"] not in FORMATS:
        raise ValueError(f"{path}: entry {name!r} has format={entry['format']!r}; allowed: {list(FORMATS)}")
    sha = entry["sha256"]
    if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
        raise ValueError(f"{path}: entry {name!r} has sha256={sha!r}; expected 64 lowercase hex digits or null")


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
