"""``VZooRunner``: mmengine's ``Runner`` with atomic checkpoints, safe loading, a strict key check and
vzoo's hooks.

``tools/train.py`` and ``tools/test.py`` build every task's runner with this class (unless a config
names another ``runner_type``); nothing in it depends on the task.

* ``save_checkpoint`` writes through :func:`vzoo.utils.atomic_write` (a temporary file in the same
  folder, fsynced, then renamed into place), so an interrupted run never leaves a truncated checkpoint.
* ``load_checkpoint`` (used by ``resume`` and ``load_from``) loads with ``weights_only=True`` plus the
  exact allowlist of numpy data classes in mmengine's own checkpoints (see :mod:`.checkpoint` for why
  that is safe), and refuses a checkpoint whose keys or shapes are not the model's, naming them
  (:func:`vzoo.models.check_state_dict`).
* ``register_hooks`` adds :data:`VZOO_HOOKS` to the config's ``default_hooks`` / ``custom_hooks``: this
  is the one place where vzoo's hooks join a run.
"""
from __future__ import annotations

import os.path as osp
import re
from collections import OrderedDict
from typing import Callable, Union

from mmengine.dist import is_main_process
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from ...models import check_state_dict
from ...utils import atomic_write
from ..registry import RUNNERS
from .checkpoint import load_runner_checkpoint
from .hooks import CurvePlotHook, ResumeStateHook

__all__ = ["VZooRunner", "VZOO_HOOKS"]

# the hooks every VZooRunner run gets after the config's own (classes, not names: they are found whatever
# the config's default_scope); a config that lists one of these types in custom_hooks configures it itself
VZOO_HOOKS = (ResumeStateHook, CurvePlotHook)


def _type_name(hook) -> str:
    t = hook.get("type") if isinstance(hook, dict) else type(hook)
    return t.rsplit(".", 1)[-1] if isinstance(t, str) else getattr(t, "__name__", "")


@RUNNERS.register_module()
class VZooRunner(Runner):

    def register_hooks(self, default_hooks=None, custom_hooks=None) -> None:
        custom_hooks = list(custom_hooks or [])
        listed = {_type_name(h) for h in custom_hooks}
        custom_hooks += [dict(type=cls) for cls in VZOO_HOOKS if cls.__name__ not in listed]
        super().register_hooks(default_hooks, custom_hooks)

    def save_checkpoint(self, out_dir: str, filename: str, file_client_args=None, save_optimizer: bool = True,
                        save_param_scheduler: bool = True, meta=None, by_epoch: bool = True, backend_args=None):
        remote = "://" in out_dir or file_client_args is not None or backend_args is not None
        if remote or not is_main_process():  # Runner.save_checkpoint writes on the main process only
            return super().save_checkpoint(out_dir, filename, file_client_args, save_optimizer,
                                           save_param_scheduler, meta, by_epoch, backend_args)
        with atomic_write(osp.join(out_dir, filename)) as tmp:
            super().save_checkpoint(out_dir, osp.basename(tmp), None, save_optimizer, save_param_scheduler, meta,
                                    by_epoch, None)

    def load_checkpoint(self, filename: str, map_location: Union[str, Callable] = "cpu", strict: bool = True,
                        revise_keys: list = [(r"^module\.", "")]):  # noqa: B006 (mmengine's signature)
        if not osp.isfile(filename):
            raise FileNotFoundError(f"checkpoint not found: {filename!r}")
        checkpoint = load_runner_checkpoint(filename, map_location=map_location)
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
            check_state_dict(state_dict, model, name=f"checkpoint {filename!r}",
                             hint="It is not a checkpoint of the model this config builds.")
        checkpoint = _load_checkpoint_to_model(model, dict(checkpoint, state_dict=state_dict), strict, revise_keys=[])
        self._has_loaded = True
        self.logger.info(f"Load checkpoint from {filename}")
        return checkpoint
