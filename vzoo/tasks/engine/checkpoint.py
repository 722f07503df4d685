"""Reading and writing the runner's own checkpoints: atomic writes (:func:`vzoo.utils.atomic_write`) and a
trusted-class allowlist for resuming under ``torch.load(weights_only=True)``. The strict model-key check
is :func:`vzoo.models.check_state_dict`, the one that pretrained weights go through too.

Why an allowlist at all: since torch 2.6 ``torch.load`` defaults to ``weights_only=True``, which only
builds tensors, containers and primitive types. mmengine 0.10.7's training checkpoints also pickle
(in ``message_hub`` and ``meta``) mmengine's ``HistoryBuffer`` objects -- whose pickled state holds
bound methods, i.e. a ``getattr`` reduce -- plus numpy arrays, dtypes and scalars. Loading them used
to need ``weights_only=False``: full pickle, arbitrary code execution from the file. vzoo instead

* stores each ``HistoryBuffer`` as plain data (its logged values, counts and max length; see
  :func:`history_buffers_to_plain` / :func:`history_buffers_from_plain`), so ``getattr`` never has
  to be allowed, and
* loads with ``weights_only=True`` inside ``torch.serialization.safe_globals(...)`` naming exactly
  numpy's array / dtype / scalar reconstructors (:func:`runner_checkpoint_globals`). None of them
  runs code from the file: numpy rebuilds arrays, dtypes and scalars from raw bytes and a dtype
  description.

The allowlist is scoped (a context manager, not ``add_safe_globals``) and used only for the training
runner's checkpoints (``--resume``, ``load_from`` and ``tools/test.py --checkpoint``); pretrained /
third-party weights keep going through :func:`vzoo.models._builder.load_checkpoint_file` (plain
``weights_only=True`` or safetensors).
"""
from __future__ import annotations

import contextlib
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from ...utils import atomic_write

__all__ = ["history_buffers_to_plain", "history_buffers_from_plain", "runner_checkpoint_globals",
           "trusted_runner_globals", "load_runner_checkpoint", "atomic_torch_save", "find_resume_checkpoint"]

_HB_TAG = "__vzoo_history_buffer__"


def history_buffers_to_plain(message_hub_state: dict) -> dict:
    """Replace every ``HistoryBuffer`` in a message hub state dict by plain data (in place)."""
    from mmengine.logging import HistoryBuffer
    scalars = message_hub_state.get("log_scalars") or {}
    for k, v in list(scalars.items()):
        if isinstance(v, HistoryBuffer):
            log, count = v.data
            scalars[k] = {_HB_TAG: True, "log": torch.as_tensor(np.asarray(log, dtype=np.float64)),
                          "count": torch.as_tensor(np.asarray(count, dtype=np.float64)), "max_length": v.max_length}
    return message_hub_state


def history_buffers_from_plain(message_hub_state: dict) -> dict:
    """Inverse of :func:`history_buffers_to_plain` (in place)."""
    from mmengine.logging import HistoryBuffer
    scalars = message_hub_state.get("log_scalars") or {}
    for k, v in list(scalars.items()):
        if isinstance(v, dict) and v.get(_HB_TAG):
            scalars[k] = HistoryBuffer(v["log"].tolist(), v["count"].tolist(), int(v["max_length"]))
    return message_hub_state


def runner_checkpoint_globals() -> List[object]:
    """The classes/functions (beyond torch's defaults) that mmengine's training checkpoints need."""
    out: List[object] = [np.ndarray, np.dtype]
    core = getattr(np, "_core", None) or np.core  # numpy 2 moved numpy.core to numpy._core
    out += [core.multiarray._reconstruct, core.multiarray.scalar]
    # numpy>=1.25 pickles a dtype as an instance of its DType class (numpy.dtypes.Float64DType ...)
    dtypes_mod = getattr(np, "dtypes", None)
    if dtypes_mod is not None:
        out += [getattr(dtypes_mod, n) for n in dir(dtypes_mod) if n.endswith("DType")]
    return out


@contextlib.contextmanager
def trusted_runner_globals():
    """``torch.load(weights_only=True)`` may build the classes of :func:`runner_checkpoint_globals`."""
    with torch.serialization.safe_globals(runner_checkpoint_globals()):
        yield


def load_runner_checkpoint(path: str, map_location="cpu") -> dict:
    """Load a checkpoint written by the training runner (weights_only + the trusted allowlist); a folder,
    a truncated or corrupt file raises :class:`~vzoo.models.CheckpointError` naming the file."""
    from ...models import CheckpointError
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path!r} is a directory, not a checkpoint file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path!r}")
    try:
        with trusted_runner_globals():
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"checkpoint {path!r} holds objects that weights_only loading refuses: "
                              f"{str(e).splitlines()[0]}") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:  # torch's errors for a damaged file
        raise CheckpointError(f"checkpoint {path!r} is truncated or corrupt ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'no detail'}); resume from an earlier "
                              "checkpoint of its work dir") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path!r} holds a {type(obj).__name__}, not a training checkpoint")
    return obj


def atomic_torch_save(obj, path: str) -> None:
    """``torch.save`` through :func:`vzoo.utils.atomic_write`: a crash leaves either the old file or the
    new one, never a truncated one."""
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


_STEP = re.compile(r"(?:epoch|iter)_(\d+)\.pth$")


def find_resume_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint to resume from: the newest complete one in ``work_dir``, None if there is none.

    That is the ``epoch_N.pth`` / ``iter_N.pth`` with the largest N (checkpoints are written atomically,
    so each one there is complete; a run killed between writing one and updating ``last_checkpoint``
    leaves ``last_checkpoint`` a step behind), or the file ``last_checkpoint`` names when it is not
    such a step file (a checkpoint of another name) or no step file is newer.
    """
    found = [(int(m.group(1)), str(p)) for p in Path(work_dir).glob("*.pth") if (m := _STEP.search(p.name))]
    newest = max(found)[1] if found else None
    last = Path(work_dir) / "last_checkpoint"
    name = last.read_text().strip() if last.is_file() else ""
    if name and os.path.isfile(name):
        m = _STEP.search(name)
        if newest is None or m is None or int(m.group(1)) >= max(found)[0]:
            return name
    return newest
