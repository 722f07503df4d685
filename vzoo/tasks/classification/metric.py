"""Top-k accuracy."""
from __future__ import annotations

from typing import Sequence

import torch
from mmengine.evaluator import BaseMetric

from ..registry import METRICS

__all__ = ["Accuracy"]


@METRICS.register_module()
class Accuracy(BaseMetric):
    """``accuracy/top1``, ``accuracy/top5`` ... in [0, 1] (k larger than the number of classes: 1.0)."""

    default_prefix = "accuracy"

    def __init__(self, topk: Sequence[int] = (1, 5), collect_device: str = "cpu", prefix=None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        topk = (topk,) if isinstance(topk, int) else tuple(topk)
        if not topk or any(not isinstance(k, int) or k < 1 for k in topk):
            raise ValueError(f"Accuracy: topk must be positive ints, got {topk!r}")
        self.topk = topk

    def process(self, data_batch, data_samples: Sequence) -> None:
        for s in data_samples:
            get = s.get if isinstance(s, dict) else (lambda k, s=s: getattr(s, k))
            self.results.append(dict(score=get("pred_score").detach().cpu(),
                                     label=int(torch.as_tensor(get("gt_label")).reshape(()))))

    def compute_metrics(self, results: list) -> dict:
        scores = torch.stack([r["score"] for r in results])
        labels = torch.tensor([r["label"] for r in results])
        out = {}
        for k in self.topk:
            kk = min(k, scores.shape[1])
            hit = (scores.topk(kk, dim=1).indices == labels[:, None]).any(dim=1)
            out[f"top{k}"] = hit.float().mean().item()
        return out
