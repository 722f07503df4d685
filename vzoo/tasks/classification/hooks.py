"""``ClsVisualizationHook``: ``tools/test.py --show-dir D`` draws the predicted and true class on
each test image, a wrong prediction in red (the layout of :mod:`vzoo.tasks.visualization`)."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ..registry import HOOKS
from ..visualization import MISTAKE_COLOR, ShowDirHook

__all__ = ["ClsVisualizationHook"]


def _class_name(classes, index: int) -> str:
    """The dataset's name of class ``index``, or the index itself (a head may have more classes than names)."""
    return str(classes[index]) if classes and 0 <= index < len(classes) else str(index)


@HOOKS.register_module()
class ClsVisualizationHook(ShowDirHook):
    """Args: ``min_size``: images are enlarged (nearest) to at least this size; the rest as
    :class:`~vzoo.tasks.visualization.ShowDirHook`."""

    def __init__(self, draw: bool = False, interval: int = 1, test_out_dir=None, min_size: int = 128, **kwargs):
        super().__init__(draw=draw, interval=interval, test_out_dir=test_out_dir, **kwargs)
        self.min_size = min_size

    def draw_sample(self, runner, data_batch, index, sample, out_file):
        classes = (runner.test_dataloader.dataset.metainfo or {}).get("classes")
        with Image.open(sample.metainfo["img_path"]) as im:
            im = im.convert("RGB")
        scale = max(1, -(-self.min_size // min(im.size)))
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
        canvas = Image.new("RGB", (im.width, im.height + 30), "white")
        canvas.paste(im, (0, 30))
        pred = int(sample.pred_label)
        gt = int(sample.gt_label) if "gt_label" in sample else None
        text = f"pred {_class_name(classes, pred)} ({float(sample.pred_score[pred]):.2f})"
        if gt is not None:
            text += f" | gt {_class_name(classes, gt)}"
        mistake = gt is not None and gt != pred
        draw = ImageDraw.Draw(canvas)
        draw.text((3, 8), text, fill=MISTAKE_COLOR if mistake else (0, 130, 0))
        if mistake:
            draw.rectangle([0, 0, canvas.width - 1, canvas.height - 1], outline=MISTAKE_COLOR, width=3)
        return np.asarray(canvas), mistake
