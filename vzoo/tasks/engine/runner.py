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
  is the one place where vzoo's hooks join a run. A hook whose type resolves to mmengine's
  ``CheckpointHook`` itself (by class, whatever name or scope the config uses, the default one too) is
  built as its subclass :class:`~vzoo.tasks.engine.SafeCheckpointHook` (deletes old checkpoints only after
  the new one is complete and ``last_checkpoint`` names it).
* ``build_dataloader`` names a corrupt annotation file (:func:`.data_errors.annotation_file_errors`).
* ``build_train_loop`` refuses a training set smaller than one batch (mmengine would fail later with
  "``epoch_length`` must be a positive integer"), naming both sizes.
"""
from __future__ import annotations

import os.path as osp
import re
from collections import OrderedDict
from typing import Callable, Union

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from ...models import check_state_dict
from ...utils import atomic_write
from ..registry import RUNNERS
from .checkpoint import load_runner_checkpoint
from .data_errors import annotation_file_errors
from .hooks import CurvePlotHook, ResumeStateHook, SafeCheckpointHook
from .startup import check_train_batches

__all__ = ["VZooRunner", "VZOO_HOOKS"]

# the hooks every VZooRunner run gets after the config's own (classes, not names: they are found whatever
# the config's default_scope); a config that lists one of these types in custom_hooks configures it itself
VZOO_HOOKS = (ResumeStateHook, CurvePlotHook)


def _type_name(hook) -> str:
    t = hook.get("type") if isinstance(hook, dict) else type(hook)
    return t.rsplit(".", 1)[-1] if isinstance(t, str) else getattr(t, "__name__", "")


def _hook_class(hook_type):
    """The class a hook config's ``type`` names, looked up as mmengine will build it (current scope)."""
    if isinstance(hook_type, str):
        from mmengine.registry import HOOKS
        return HOOKS.get(hook_type)
    return hook_type


@RUNNERS.register_module()
class VZooRunner(Runner):

    def register_hooks(self, default_hooks=None, custom_hooks=None) -> None:
        custom_hooks = list(custom_hooks or [])
        listed = {_type_name(h) for h in custom_hooks}
        custom_hooks += [dict(type=cls) for cls in VZOO_HOOKS if cls.__name__ not in listed]
        super().register_hooks(default_hooks, custom_hooks)

    def register_hook(self, hook, priority=None) -> None:
        if isinstance(hook, dict) and _hook_class(hook.get("type")) is CheckpointHook:
            hook = dict(hook, type=SafeCheckpointHook)
        super().register_hook(hook, priority)

    @staticmethod
    def build_dataloader(dataloader, seed=None, diff_rank_seed: bool = False):
        dataset_cfg = dataloader.get("dataset") if isinstance(dataloader, dict) else None
        with annotation_file_errors(dataset_cfg):
            return Runner.build_dataloader(dataloader, seed=seed, diff_rank_seed=diff_rank_seed)

    def build_train_loop(self, loop):
        loop = super().build_train_loop(loop)
        check_train_batches(getattr(loop, "dataloader", None))
        self._warn_num_classes(getattr(getattr(loop, "dataloader", None), "dataset", None))
        return loop

    def _warn_num_classes(self, dataset) -> None:
        """A head with more classes than the training set names trains outputs that are never a target
        (a 1000-class ImageNet config on a 2-class folder): say so, naming both numbers."""
        classes = (getattr(dataset, "metainfo", None) or {}).get("classes")
        model = self.model.module if is_model_wrapper(self.model) else self.model
        for name, part in (("model", model), ("model.bbox_head", getattr(model, "bbox_head", None)),
                           ("model.decode_head", getattr(model, "decode_head", None))):
            head = getattr(part, "num_classes", None)
            if classes and isinstance(head, int) and head > len(classes):
                self.logger.warning(f"{name}.num_classes={head} but the training set has {len(classes)} classes "
                                    f"({', '.join(map(str, classes[:5]))}{', ...' if len(classes) > 5 else ''}): "
                                    f"set {name}.num_classes={len(classes)}, or pass --num-classes to take it "
                                    "from the dataset")
                return

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
