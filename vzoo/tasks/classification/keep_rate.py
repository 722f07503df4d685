"""Keep-rate warm-up for token-reorganizing models (EViT): the release's schedule as an mmengine hook.

``custom_hooks = [dict(type='KeepRateWarmupHook', shrink_start_epoch=10, shrink_epochs=100)]`` trains
``keep_rate = 1`` (no token dropped) for the first ``shrink_start_epoch`` epochs, then lowers it per
iteration along a half cosine to the model's target keep rate over ``shrink_epochs`` epochs, and keeps the
target afterwards (``youweiliang/evit``'s ``helpers.adjust_keep_rate`` with ``--shrink_start_epoch`` and
``--shrink_epochs``). Validation during training runs at the current keep rate, as the release's does.
The keep rate is logged as ``keep_rate`` with the loss.
"""
from __future__ import annotations

import math
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ..registry import HOOKS

__all__ = ["warmup_keep_rate", "KeepRateWarmupHook"]


def warmup_keep_rate(iteration: int, iters_per_epoch: int, base_keep_rate: float, shrink_start_epoch: int,
                     shrink_epochs: int, max_keep_rate: float = 1.0) -> float:
    """Keep rate at global training iteration ``iteration`` (0-based) of the release's schedule."""
    epoch = iteration // iters_per_epoch
    if epoch < shrink_start_epoch:
        return 1.0
    if epoch >= shrink_start_epoch + shrink_epochs:
        return base_keep_rate
    progress = (iteration - iters_per_epoch * shrink_start_epoch) / (iters_per_epoch * shrink_epochs)
    return base_keep_rate + (max_keep_rate - base_keep_rate) * (math.cos(progress * math.pi) + 1) * 0.5


@HOOKS.register_module()
class KeepRateWarmupHook(Hook):
    """Sets ``keep_rate`` of the trained network (a model with a settable ``keep_rate``, e.g. EViT; inside
    ``TimmClassifier`` and any DDP wrapper) before every training iteration.

    Args:
        shrink_start_epoch: epochs trained at keep rate 1 (release default 10; its fine-tuning: 0).
        shrink_epochs: epochs of the cosine descent (release: 100; 0 jumps to the target).
        base_keep_rate: the target; ``None`` takes the model's own keep rate when training starts.
    """
    priority = "NORMAL"

    def __init__(self, shrink_start_epoch: int = 10, shrink_epochs: int = 100, base_keep_rate: Optional[float] = None):
        if shrink_start_epoch < 0 or shrink_epochs < 0:
            raise ValueError(f"KeepRateWarmupHook: shrink_start_epoch and shrink_epochs must be >= 0, got "
                             f"{shrink_start_epoch}, {shrink_epochs}")
        self.shrink_start_epoch, self.shrink_epochs = shrink_start_epoch, shrink_epochs
        self.base_keep_rate = base_keep_rate

    @staticmethod
    def _network(runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        net = getattr(model, "model", model)  # TimmClassifier.model is the timm network
        if not hasattr(net, "keep_rate"):
            raise TypeError(f"KeepRateWarmupHook: {type(net).__name__} has no settable keep_rate "
                            f"(a token-reorganizing model such as EViT is needed)")
        return net

    def before_train(self, runner) -> None:
        net = self._network(runner)
        if self.base_keep_rate is None:
            self.base_keep_rate = net.keep_rate

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        keep_rate = warmup_keep_rate(runner.iter, len(runner.train_dataloader), self.base_keep_rate,
                                     self.shrink_start_epoch, self.shrink_epochs)
        self._network(runner).keep_rate = keep_rate
        runner.message_hub.update_scalar("train/keep_rate", keep_rate)
