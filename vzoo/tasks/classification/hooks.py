"""``ClsVisualizationHook``: ``tools/test.py --show-dir D`` draws the predicted and true class on
each test image (the same switches as mmdet's / mmseg's visualization hooks: ``draw``, ``test_out_dir``)."""
from __future__ import annotations

import os
import os.path as osp
from typing import Optional

from mmengine.hooks import Hook
from PIL import Image, ImageDraw

from ..registry import HOOKS

__all__ = ["ClsVisualizationHook"]


def _class_name(classes, index: int) -> str:
    """The dataset's name of class ``index``, or the index itself (a head may have more classes than names)."""
    return classes[index] if classes and 0 <= index < len(classes) else str(index)


@HOOKS.register_module()
class ClsVisualizationHook(Hook):
    priority = "NORMAL"

    def __init__(self, draw: bool = False, interval: int = 1, test_out_dir: Optional[str] = None,
                 min_size: int = 128):
        if not isinstance(interval, int) or interval < 1:
            raise ValueError(f"ClsVisualizationHook: interval must be an int >= 1, got {interval!r}")
        self.draw, self.interval, self.test_out_dir, self.min_size = draw, interval, test_out_dir, min_size

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.draw or batch_idx % self.interval:
            return
        out_dir = self.test_out_dir or "cls_results"
        if not osp.isabs(out_dir):
            out_dir = osp.join(runner.work_dir, runner.timestamp, out_dir)
        os.makedirs(out_dir, exist_ok=True)
        classes = (runner.test_dataloader.dataset.metainfo or {}).get("classes")
        for i, s in enumerate(outputs or []):
            path = s.metainfo.get("img_path")
            if not path:
                continue
            with Image.open(path) as im:
                im = im.convert("RGB")
            scale = max(1, -(-self.min_size // min(im.size)))
            im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
            canvas = Image.new("RGB", (im.width, im.height + 30), "white")
            canvas.paste(im, (0, 30))
            pred = int(s.pred_label)
            gt = int(s.gt_label) if "gt_label" in s else None
            text = f"pred {_class_name(classes, pred)} ({float(s.pred_score[pred]):.2f})"
            if gt is not None:
                text += f" | gt {_class_name(classes, gt)}"
            ImageDraw.Draw(canvas).text((3, 8), text, fill="green" if gt in (None, pred) else "red")
            stem = osp.splitext(osp.basename(path))[0]
            canvas.save(osp.join(out_dir, f"{batch_idx:06d}_{i}_{stem}.png"))
