"""``VZooRunner``: mmengine's ``Runner`` with atomic checkpoints, safe resuming and a strict key check.

``tools/train.py`` and ``tools/test.py`` build every task's runner with this class; nothing in it
depends on the task.

* ``save_checkpoint`` writes the file under a temporary name in the same folder, fsyncs it and
  renames it into place (``os.replace``), so an interrupted run never leaves a truncated checkpoint.
  It also stores the Python / numpy / torch RNG states, which ``resume`` restores: a resumed run
  draws the same random augmentations as an uninterrupted one (for ``num_workers=0`` loaders).
* ``load_checkpoint`` (used by ``resume`` and ``load_from``) loads with ``weights_only=True`` plus the
  exact allowlist of numpy data classes in mmengine's own checkpoints; message-hub history buffers
  are stored as plain data (see :mod:`.checkpoint` for why that is safe), and it refuses a checkpoint whose keys or shapes are not the model's, naming them.
"""
from __future__ import annotations

import os
import os.path as osp
import random
import re
from collections import OrderedDict
from typing import Callable, Union

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from .checkpoint import (check_state_dict_matches, history_buffers_from_plain, history_buffers_to_plain,
                         load_runner_checkpoint)

__all__ = ["VZooRunner"]

_RNG_KEY = "vzoo_rng_state"


def _rng_state() -> dict:
    return dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state())


def _set_rng_state(state: dict) -> None:
    random.setstate(_tuplify(state["python"]))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def _tuplify(x):  # random.setstate needs tuples (a round trip may give lists)
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


class VZooRunner(Runner):

    def _local_path(self, out_dir: str) -> bool:
        return "://" not in out_dir

    def save_checkpoint(self, out_dir: str, filename: str, file_client_args=None, save_optimizer: bool = True,
                        save_param_scheduler: bool = True, meta=None, by_epoch: bool = True, backend_args=None):
        meta = dict(meta or {})
        meta[_RNG_KEY] = _rng_state()
        if not self._local_path(out_dir) or file_client_args is not None or backend_args is not None:
            return super().save_checkpoint(out_dir, filename, file_client_args, save_optimizer,
                                           save_param_scheduler, meta, by_epoch, backend_args)
        tmp_name = f".{filename}.{os.getpid()}.tmp"
        tmp_path = osp.join(out_dir, tmp_name)
        try:
            super().save_checkpoint(out_dir, tmp_name, None, save_optimizer, save_param_scheduler, meta, by_epoch,
                                    None)
            if is_main_process():  # Runner.save_checkpoint writes on the main process only
                with open(tmp_path, "rb") as f:
                    os.fsync(f.fileno())
                os.replace(tmp_path, osp.join(out_dir, filename))
        finally:
            if is_main_process() and osp.exists(tmp_path):
                os.unlink(tmp_path)

    def load_checkpoint(self, filename: str, map_location: Union[str, Callable] = "cpu", strict: bool = True,
                        revise_keys: list = [(r"^module\.", "")]):  # noqa: B006 (mmengine's signature)
        if not osp.isfile(filename):
            raise FileNotFoundError(f"checkpoint not found: {filename!r}")
        checkpoint = load_runner_checkpoint(filename, map_location=map_location)
        if isinstance(checkpoint.get("message_hub"), dict):
            history_buffers_from_plain(checkpoint["message_hub"])
        self.call_hook("after_load_checkpoint", checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        state_dict = checkpoint.get("state_dict", checkpoint)
        metadata = getattr(state_dict, "_metadata", None)
        for pattern, repl in revise_keys:
            state_dict = OrderedDict((re.sub(pattern, repl, k), v) for k, v in state_dict.items())
        state_dict = OrderedDict(state_dict)
        if metadata is not None:
            state_dict._metadata = metadata
        if strict:
            check_state_dict_matches(model, state_dict, filename)
        checkpoint = _load_checkpoint_to_model(model, dict(checkpoint, state_dict=state_dict), strict, revise_keys=[])
        self._has_loaded = True
        self.logger.info(f"Load checkpoint from {filename}")
        return checkpoint

    def resume(self, filename: str, resume_optimizer: bool = True, resume_param_scheduler: bool = True,
               map_location: Union[str, Callable] = "default") -> None:
        self._vzoo_resumed_rng = None
        super().resume(filename, resume_optimizer, resume_param_scheduler, map_location)
        if self._vzoo_resumed_rng is not None:
            _set_rng_state(self._vzoo_resumed_rng)
            self.logger.info("restored the RNG states of the checkpoint")

    def call_hook(self, fn_name: str, **kwargs) -> None:
        if fn_name == "after_load_checkpoint":
            meta = kwargs["checkpoint"].get("meta") or {}
            self._vzoo_resumed_rng = meta.get(_RNG_KEY)
        super().call_hook(fn_name, **kwargs)
        if fn_name == "before_save_checkpoint" and isinstance(kwargs["checkpoint"].get("message_hub"), dict):
            # after the hooks: what goes to disk holds no HistoryBuffer (see .checkpoint)
            history_buffers_to_plain(kwargs["checkpoint"]["message_hub"])
