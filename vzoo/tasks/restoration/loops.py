"""Testing on several SR benchmarks in one run (Set5, Set14, B100, Urban100, Manga109 ...)."""
from __future__ import annotations

from typing import Dict, Sequence, Union

import torch
from mmengine.evaluator import Evaluator
from mmengine.runner.amp import autocast
from mmengine.runner.base_loop import BaseLoop

from ..registry import LOOPS

__all__ = ["SRMultiTestLoop"]


@LOOPS.register_module()
class SRMultiTestLoop(BaseLoop):
    """Runs the test on each of several dataloaders with its own evaluator.

    ``test_dataloader`` and ``test_evaluator`` are lists of the same length (a single dict works too);
    give each evaluator a ``prefix`` (the benchmark's name) so that the reported keys are
    ``Set5/PSNR``, ``Urban100/SSIM``, ... The hooks see every batch (``before/after_test_iter``)
    exactly as with mmengine's ``TestLoop``.
    """

    def __init__(self, runner, dataloader: Union[dict, Sequence], evaluator: Union[dict, Sequence],
                 fp16: bool = False):
        loaders = list(dataloader) if isinstance(dataloader, (list, tuple)) else [dataloader]
        if isinstance(evaluator, (list, tuple)) and evaluator and all(isinstance(e, (dict, list, Evaluator))
                                                                        for e in evaluator) \
                and len(loaders) > 1:
            evaluators = list(evaluator)
        else:
            evaluators = [evaluator]
        if len(evaluators) != len(loaders):
            raise ValueError(f"SRMultiTestLoop: {len(loaders)} test dataloaders but {len(evaluators)} evaluators; "
                             "give one evaluator per dataloader")
        super().__init__(runner, loaders[0])
        self.dataloaders = [self.dataloader] + [
            runner.build_dataloader(d, seed=runner.seed) if isinstance(d, dict) else d for d in loaders[1:]]
        self.evaluators = [e if isinstance(e, Evaluator) else runner.build_evaluator(e) for e in evaluators]
        self.evaluator = self.evaluators[0]  # what runner.test_evaluator returns (mmengine's TestLoop has one)
        for loader, ev in zip(self.dataloaders, self.evaluators):
            if hasattr(loader.dataset, "metainfo"):
                ev.dataset_meta = loader.dataset.metainfo
        self.fp16 = fp16

    def run(self) -> Dict[str, float]:
        self.runner.call_hook("before_test")
        self.runner.call_hook("before_test_epoch")
        self.runner.model.eval()
        metrics: Dict[str, float] = {}
        for loader, ev in zip(self.dataloaders, self.evaluators):
            self.dataloader = loader
            for idx, data_batch in enumerate(loader):
                self.runner.call_hook("before_test_iter", batch_idx=idx, data_batch=data_batch)
                with torch.no_grad(), autocast(enabled=self.fp16):
                    outputs = self.runner.model.test_step(data_batch)
                ev.process(data_samples=outputs, data_batch=data_batch)
                self.runner.call_hook("after_test_iter", batch_idx=idx, data_batch=data_batch, outputs=outputs)
            found = ev.evaluate(len(loader.dataset))
            clash = set(found) & set(metrics)
            if clash:
                raise ValueError(f"SRMultiTestLoop: metric keys {sorted(clash)} reported twice; give each "
                                 "evaluator a different prefix")
            metrics.update(found)
        self.runner.call_hook("after_test_epoch", metrics=metrics)
        self.runner.call_hook("after_test")
        return metrics
