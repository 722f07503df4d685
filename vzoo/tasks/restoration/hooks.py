"""Writing SR results: the output PNG and a side-by-side (bicubic | output | ground truth) per image."""
from __future__ import annotations

import os
import os.path as osp
from typing import Optional, Sequence

import numpy as np
import torch
from mmengine.hooks import Hook
from PIL import Image, ImageDraw

from ..registry import HOOKS
from .imresize import imresize

__all__ = ["SRVisualizationHook", "side_by_side", "tensor_to_uint8"]


def tensor_to_uint8(img: torch.Tensor) -> np.ndarray:
    """CHW float in [0, 1] (or uint8) -> HWC uint8, rounded as a PNG of the output would be."""
    t = img.detach().cpu()
    if t.is_floating_point():
        t = torch.floor(t.clamp(0, 1) * 255.0 + 0.5)
    return t.to(torch.uint8).permute(1, 2, 0).numpy()


def side_by_side(panels: Sequence[np.ndarray], labels: Sequence[str], gap: int = 4) -> np.ndarray:
    """HWC uint8 images of the same height next to each other, each with a label at its top left."""
    h = max(p.shape[0] for p in panels)
    w = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for p, label in zip(panels, labels):
        canvas.paste(Image.fromarray(p), (x, 0))
        tw = 7 * len(label) + 4
        draw.rectangle([x, 0, x + tw, 13], fill=(0, 0, 0))
        draw.text((x + 2, 1), label, fill=(255, 255, 255))
        x += p.shape[1] + gap
    return np.asarray(canvas)


@HOOKS.register_module()
class SRVisualizationHook(Hook):
    """Saves SR outputs during ``test`` (and optionally ``val``) as PNG files.

    Same switches as mmdet's / mmseg's visualization hooks, so ``tools/test.py --show-dir D`` works the
    same way for every task: it sets ``draw=True`` and ``test_out_dir=D``.

    For each image ``<id>`` (under a sub-folder named by the dataset's ``dataset_name`` if set):
    ``<id>.png`` (the SR output) and ``<id>_compare.png`` (MATLAB-bicubic
    upsampling | SR output | ground truth, side by side). A relative ``test_out_dir`` goes under the
    run's ``work_dir/<timestamp>/``.
    """

    priority = "NORMAL"

    def __init__(self, draw: bool = False, interval: int = 1, test_out_dir: Optional[str] = None,
                 compare: bool = True, draw_val: bool = False):
        if not isinstance(interval, int) or interval < 1:
            raise ValueError(f"SRVisualizationHook: interval must be an int >= 1, got {interval!r}")
        self.draw, self.interval, self.test_out_dir = draw, interval, test_out_dir
        self.compare, self.draw_val = compare, draw_val

    def _out_dir(self, runner) -> str:
        d = self.test_out_dir or "sr_results"
        if not osp.isabs(d):
            d = osp.join(runner.work_dir, runner.timestamp, d)
        os.makedirs(d, exist_ok=True)
        return d

    def _save(self, runner, batch_idx: int, data_batch: dict, outputs: Sequence) -> None:
        if not self.draw or batch_idx % self.interval:
            return
        base_dir = self._out_dir(runner)
        inputs = data_batch.get("inputs") if isinstance(data_batch, dict) else None
        for i, sample in enumerate(outputs):
            sr = tensor_to_uint8(sample.pred_img)
            stem = sample.metainfo.get("img_id") or f"{batch_idx:06d}_{i}"
            stem = str(stem).replace(os.sep, "_")
            out_dir = base_dir
            if sample.metainfo.get("dataset_name"):
                out_dir = osp.join(base_dir, str(sample.metainfo["dataset_name"]))
                os.makedirs(out_dir, exist_ok=True)
            Image.fromarray(sr).save(osp.join(out_dir, f"{stem}.png"))
            if not self.compare:
                continue
            panels, labels = [], []
            if inputs is not None:
                lr = inputs[i]
                lr = lr if lr.dtype == torch.uint8 else torch.floor(lr.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8)
                scale = int(sample.metainfo.get("scale", 1))
                up = imresize(lr.cpu(), scale=scale)[..., :sr.shape[0], :sr.shape[1]]
                panels.append(up.permute(1, 2, 0).numpy()), labels.append("bicubic")
            panels.append(sr), labels.append("output")
            if "gt_img" in sample:
                panels.append(tensor_to_uint8(sample.gt_img)), labels.append("ground truth")
            Image.fromarray(side_by_side(panels, labels)).save(osp.join(out_dir, f"{stem}_compare.png"))

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._save(runner, batch_idx, data_batch, outputs or [])

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.draw_val:
            self._save(runner, batch_idx, data_batch, outputs or [])
