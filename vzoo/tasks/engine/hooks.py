"""The hooks every run of :class:`~vzoo.tasks.engine.VZooRunner` gets (its ``register_hooks`` adds them;
no config needs to list them, a config that lists one in ``custom_hooks`` sets its arguments).

``ResumeStateHook`` makes a resumed run continue as the uninterrupted run would: it stores the RNG
states in every checkpoint and restores them on ``--resume``, and keeps the message hub's history as
plain data, so that the checkpoint loads with ``torch.load(weights_only=True)``.

``SafeCheckpointHook`` is mmengine's ``CheckpointHook`` with a crash-safe keep-N order: the runner builds
it wherever a config names mmengine's ``CheckpointHook``.

``CurvePlotHook`` records the training losses (mean over every ``interval`` iterations) and the
validation metrics, keeps them in the checkpoints (so a resumed run draws the whole curve), and at
the end of training writes ``curves.png`` (losses, learning rate, metrics) into the work dir.
"""
from __future__ import annotations

import contextlib
import math
import os
import os.path as osp
import random
import re
from collections import defaultdict, deque
from typing import Dict, List, Optional

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook, Hook

from ...utils import atomic_write_text, check_int
from ..registry import HOOKS
from .checkpoint import history_buffers_from_plain, history_buffers_to_plain

__all__ = ["ResumeStateHook", "CurvePlotHook", "SafeCheckpointHook"]

_RNG_KEY = "vzoo_rng_state"


def _tuplify(x):  # random.setstate needs tuples (a round trip may give lists)
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


@HOOKS.register_module()
class ResumeStateHook(Hook):
    """What a resumed run needs beyond mmengine's own checkpoint contents.

    * ``before_save_checkpoint``: the Python / numpy / torch RNG states go into ``meta`` (a resumed run
      draws the same random augmentations as an uninterrupted one, for ``num_workers=0`` loaders), and
      the message hub's ``HistoryBuffer`` objects become plain data (see :mod:`.checkpoint` for why);
    * ``after_load_checkpoint``: the buffers are rebuilt (before ``Runner.resume`` loads the message hub);
      on a resume the checkpoint's RNG states are kept for
    * ``before_train``: they are restored there, after ``Runner.resume`` has re-seeded with the
      checkpoint's seed.

    ``LOWEST`` priority: the buffers are made plain after every other hook has seen the checkpoint, and
    the RNG states are restored after every other hook's ``before_train``, just before the first batch.
    """

    priority = "LOWEST"

    def __init__(self):
        self._resumed_rng: Optional[dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault("meta", {})[_RNG_KEY] = dict(
            python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state())
        if isinstance(checkpoint.get("message_hub"), dict):
            history_buffers_to_plain(checkpoint["message_hub"])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if isinstance(checkpoint.get("message_hub"), dict):
            history_buffers_from_plain(checkpoint["message_hub"])
        if getattr(runner, "_resume", False):
            self._resumed_rng = (checkpoint.get("meta") or {}).get(_RNG_KEY)

    def before_train(self, runner) -> None:
        state, self._resumed_rng = self._resumed_rng, None
        if state is not None:
            random.setstate(_tuplify(state["python"]))
            np.random.set_state(state["numpy"])
            torch.set_rng_state(state["torch"])
            runner.logger.info("restored the RNG states of the checkpoint")


_PENDING_KEY = "vzoo_ckpts_to_remove"
# the temporary files of vzoo.utils.atomic_write: .NAME.PID.RANDOM.tmp
_TEMPORARY = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$")


def _remove_dead_temporaries(folder: str) -> None:
    """Remove the half-written temporary files of processes that no longer run (a run killed while saving)."""
    for name in os.listdir(folder):
        m = _TEMPORARY.match(name)
        if m is None:
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            with contextlib.suppress(FileNotFoundError):
                os.remove(osp.join(folder, name))
        except PermissionError:  # a live process of another user
            pass


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` (same arguments) that never loses the newest checkpoint.

    mmengine removes the oldest of the ``max_keep_ckpts`` checkpoints *before* writing the new one, so a
    run killed during a save with ``max_keep_ckpts=1`` has no checkpoint left and ``last_checkpoint`` names
    a deleted file. Here every save goes

    1. :meth:`_write`: the new file, atomically (``VZooRunner.save_checkpoint``: a temporary file, renamed);
    2. :meth:`_point_last_checkpoint`: ``last_checkpoint`` names it (also written atomically);
    3. :meth:`_remove_old`: only now the checkpoints beyond ``max_keep_ckpts`` are removed.

    With ``save_best``, a replaced best checkpoint is likewise removed only after the new one is written.

    The steps still to remove travel in the message hub (so in every checkpoint): a run killed in
    step 3 removes the rest when it is resumed.
    """

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if self.max_keep_ckpts > 0:  # what a killed run had still to remove
            self._remove_old(runner, self._pending(runner))
        if is_main_process() and osp.isdir(self.out_dir):
            _remove_dead_temporaries(self.out_dir)

    def _pending(self, runner) -> List[int]:
        hub = runner.message_hub
        return list(hub.get_info(_PENDING_KEY) or []) if _PENDING_KEY in hub.runtime_info else []

    def _save_checkpoint_with_step(self, runner, step, meta):
        hub = runner.message_hub
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            kept = list(self.keep_ckpt_ids) + [step]
            dropped = kept[:-self.max_keep_ckpts]
            self.keep_ckpt_ids = deque(kept[-self.max_keep_ckpts:], self.max_keep_ckpts)
            hub.update_info("keep_ckpt_ids", list(self.keep_ckpt_ids))
            hub.update_info(_PENDING_KEY, self._pending(runner) + dropped)
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        hub.update_info("last_ckpt", self.last_ckpt)
        self._write(runner, filename, meta)
        if not is_main_process():  # as mmengine's: only the main process keeps the files
            return
        self._point_last_checkpoint(runner)
        if self.max_keep_ckpts > 0:
            self._remove_old(runner, self._pending(runner))

    def _save_best_checkpoint(self, runner, metrics) -> None:
        """mmengine's, except that a replaced best checkpoint is removed after the new one is written
        (mmengine removes it first: a run killed while writing the new best had no best file left)."""
        if not self.save_best or not is_main_process():
            return super()._save_best_checkpoint(runner, metrics)
        multi = len(self.key_indicators) > 1
        previous = dict(self.best_ckpt_path_dict) if multi else {None: self.best_ckpt_path}
        # hidden from mmengine's method, which then has nothing to remove before it writes
        if multi:
            self.best_ckpt_path_dict = {key: None for key in previous}
        else:
            self.best_ckpt_path = None
        try:
            super()._save_best_checkpoint(runner, metrics)
        except BaseException:
            self._restore_best(previous, multi, only_unset=False)
            raise
        replaced = self._restore_best(previous, multi, only_unset=True)
        self._remove_files(replaced)

    def _restore_best(self, previous: dict, multi: bool, only_unset: bool) -> List[str]:
        """Put back the best paths mmengine did not replace (all of them after a failed save); return the
        previous paths that were replaced by a new file."""
        replaced = []
        for key, old in previous.items():
            new = self.best_ckpt_path_dict[key] if multi else self.best_ckpt_path
            if new is None or not only_unset:
                if multi:
                    self.best_ckpt_path_dict[key] = old
                else:
                    self.best_ckpt_path = old
            elif old and old != new:
                replaced.append(old)
        return replaced

    def _remove_files(self, paths: List[str]) -> None:
        for path in paths:
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # deepspeed writes checkpoints as folders
                self.file_backend.rmtree(path)

    def _write(self, runner, filename: str, meta: dict) -> None:
        runner.save_checkpoint(self.out_dir, filename, self.file_client_args, save_optimizer=self.save_optimizer,
                               save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
                               backend_args=self.backend_args, **self.args)

    def _point_last_checkpoint(self, runner) -> None:
        atomic_write_text(osp.join(runner.work_dir, "last_checkpoint"), self.last_ckpt)

    def _remove_old(self, runner, steps: List[int]) -> None:
        if is_main_process():
            for step in steps:
                if step in self.keep_ckpt_ids:
                    continue
                self._remove_files([self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(step))])
        runner.message_hub.update_info(_PENDING_KEY, [])


def _scalar(v) -> Optional[float]:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            return None
        v = v.item()
    if isinstance(v, (int, float)) and math.isfinite(float(v)):
        return float(v)
    return None


@HOOKS.register_module()
class CurvePlotHook(Hook):
    """Write ``<work_dir>/<filename>`` with the loss, learning-rate and metric curves at the end of training.

    Args:
        interval: losses are averaged over this many iterations per point.
        filename: the PNG's name inside the work dir.
    """

    priority = "LOW"

    def __init__(self, interval: int = 10, filename: str = "curves.png"):
        check_int("CurvePlotHook", "interval", interval, 1)
        self.interval, self.filename = interval, filename
        self.history: Dict[str, List[List[float]]] = defaultdict(list)  # key -> [[iter, value], ...]
        self._acc: Dict[str, List[float]] = defaultdict(list)
        self.path: Optional[str] = None

    # -- recording ------------------------------------------------------------------------------
    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        for k, v in (outputs or {}).items():
            s = _scalar(v)
            if s is not None and "loss" in k:
                self._acc[k].append(s)
        step = runner.iter + 1
        if step % self.interval == 0:
            self._flush(runner, step)

    def _flush(self, runner, step: int) -> None:
        for k, vals in self._acc.items():
            if vals:
                self.history[k].append([step, sum(vals) / len(vals)])
        self._acc.clear()
        try:
            lr = runner.optim_wrapper.get_lr()
            first = next(iter(lr.values()))
            self.history["lr"].append([step, float(first[0])])
        except Exception:  # an optimizer wrapper without get_lr: no lr curve
            pass

    def after_val_epoch(self, runner, metrics=None) -> None:
        for k, v in (metrics or {}).items():
            s = _scalar(v)
            if s is not None:
                self.history["val/" + k].append([runner.iter, s])

    # -- checkpoints ----------------------------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault("meta", {})["vzoo_curves"] = {k: list(v) for k, v in self.history.items()}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if getattr(runner, "_resume", False):
            curves = (checkpoint.get("meta") or {}).get("vzoo_curves") or {}
            self.history = defaultdict(list, {k: [list(p) for p in v] for k, v in curves.items()})

    # -- drawing --------------------------------------------------------------------------------
    def after_train(self, runner) -> None:
        self._flush(runner, runner.iter)
        if not is_main_process() or not self.history:
            return
        self.path = osp.join(runner.work_dir, self.filename)
        plot_curves(self.history, self.path, title=osp.basename(runner.work_dir))
        runner.logger.info(f"loss/metric curves written to {self.path}")


def plot_curves(history: Dict[str, List[List[float]]], path: str, title: str = "") -> None:
    """One panel for the losses, one for the learning rate, one for the validation metrics."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [("loss", [k for k in history if "loss" in k and not k.startswith("val/")]),
              ("learning rate", [k for k in history if k == "lr"]),
              ("validation", [k for k in history if k.startswith("val/")])]
    groups = [(t, ks) for t, ks in groups if ks]
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.6), squeeze=False)
    for ax, (name, keys) in zip(axes[0], groups):
        for k in sorted(keys):
            pts = history[k]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if len(pts) < 30 else None,
                    markersize=3, label=k)
        ax.set_title(name)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
