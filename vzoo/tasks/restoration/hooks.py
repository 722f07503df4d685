"""Writing SR results: a side-by-side (LR | bicubic | output | ground truth) and the output PNG per image."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..registry import HOOKS
from ..visualization import ShowDirHook
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
class SRVisualizationHook(ShowDirHook):
    """SR test outputs in the ``--show-dir`` layout (:mod:`vzoo.tasks.visualization`), under a sub-folder
    named by the dataset's ``dataset_name`` if set: ``<n>_<id>.png`` is LR (enlarged, nearest) |
    MATLAB-bicubic upsampling | the model's output | ground truth side by side, ``<n>_<id>_output.png``
    the output itself.

    Args:
        compare: write the side-by-side drawing (else the drawing is the output alone).
        draw_val: also write the validation images during training.
        The rest as :class:`~vzoo.tasks.visualization.ShowDirHook`.
    """

    def __init__(self, draw: bool = False, interval: int = 1, test_out_dir: Optional[str] = None,
                 compare: bool = True, draw_val: bool = False, gallery_size: int = 4, gallery_columns: int = 1,
                 **kwargs):
        super().__init__(draw=draw, interval=interval, test_out_dir=test_out_dir, gallery_size=gallery_size,
                         gallery_columns=gallery_columns, **kwargs)
        self.compare, self.draw_val = compare, draw_val

    def draw_sample(self, runner, data_batch, index, sample, out_file):
        sr = tensor_to_uint8(sample.pred_img)
        if not self.compare:
            return sr, False
        Image.fromarray(sr).save(out_file[:-len(".png")] + "_output.png")
        panels, labels = [], []
        inputs = data_batch.get("inputs") if isinstance(data_batch, dict) else None
        if inputs is not None:
            lr = inputs[index]
            lr = lr if lr.dtype == torch.uint8 else torch.floor(lr.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8)
            lr, scale = lr.cpu(), int(sample.metainfo.get("scale", 1))
            h, w = sr.shape[:2]
            nearest = lr.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)[..., :h, :w]
            up = imresize(lr, scale=scale)[..., :h, :w]
            panels += [nearest.permute(1, 2, 0).numpy(), up.permute(1, 2, 0).numpy()]
            labels += ["LR", "bicubic"]
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        panels.append(sr), labels.append(str(getattr(model, "arch", "output")))
        if "gt_img" in sample:
            panels.append(tensor_to_uint8(sample.gt_img)), labels.append("HR")
        return side_by_side(panels, labels), False

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.draw_val:
            self.after_test_iter(runner, batch_idx, data_batch, outputs)
