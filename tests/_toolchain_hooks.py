"""Hooks the toolchain tests put into their configs (``custom_imports=['_toolchain_hooks']``)."""
import os.path as osp

import torch
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from vzoo.tasks.registry import HOOKS


@HOOKS.register_module(force=True)
class SaveRankWeightsHook(Hook):
    """After training, every process writes its own weights (and the world size) to the work dir."""
    priority = "LOWEST"

    def after_run(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        torch.save(dict(world_size=get_world_size(), wrapped=type(runner.model).__name__,
                        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
                        params=[k for k, _ in model.named_parameters()]),
                   osp.join(runner.work_dir, f"weights_rank{get_rank()}.pt"))


class Interrupted(Exception):
    pass


@HOOKS.register_module(force=True)
class InterruptAfterEpochHook(Hook):
    """Stop the run the hard way after epoch ``epoch`` (after its checkpoint was written)."""
    priority = "LOWEST"

    def __init__(self, epoch: int):
        self.epoch = epoch

    def after_train_epoch(self, runner):
        if runner.epoch + 1 == self.epoch:
            raise Interrupted(f"interrupted after epoch {self.epoch}")
