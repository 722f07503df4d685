"""Atomic file writes: the one way vzoo replaces a file (checkpoints, converted weights, generated docs,
tool results)."""
from __future__ import annotations

import contextlib
import os
import uuid
from typing import Iterator

__all__ = ["atomic_write", "atomic_write_text"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path next to ``path`` to write the new file to; on a clean exit fsync it and
    ``os.replace`` it onto ``path``, on an exception remove it. A crash leaves the old file or the whole
    new one, never a truncated one.

    The temporary file (``.NAME.PID.RANDOM.tmp``, hidden) is created empty with ``O_EXCL`` and mode
    ``0o666`` less the umask, as ``open(path, 'w')`` would: not ``tempfile.mkstemp``, whose files are
    ``0o600`` whatever the umask, and which would leave checkpoints and docs readable by their owner only.
    Writers may open, truncate or replace it by its path (``torch.save``, safetensors, mmengine).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        mode = os.stat(tmp).st_mode & 0o777  # 0o666 less the umask, read back rather than by toggling the umask
        yield tmp
        # some writers replace the file by their own (safetensors' save_file creates it 0o600): restore the mode
        os.chmod(tmp, mode)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` by ``text`` (UTF-8) atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
