"""What ``tools/test.py --show-dir D`` writes, the same layout for every task:

* ``D/[<dataset_name>/]<n>_<stem>.png``: one drawing per test image (``n``: its running index in the
  test set, ``stem``: the image's file name), the prediction next to or on the ground truth;
* ``D/[<dataset_name>/]gallery.png``: up to ``gallery_size`` of these drawings in one grid, spread over
  the test set, mistakes first (where the task can tell one: a wrong class is framed in red).

``ShowDirHook`` is the base of the classification and SR hooks; ``DenseShowDirHook`` draws mmdet's and
mmseg's predictions through the config's visualizer (ground truth | prediction). Drawing is optional: an
error while drawing is logged once as a warning and drawing stops, so the test run and its metrics are
never lost to it.
"""
from __future__ import annotations

import inspect
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.hooks import Hook
from PIL import Image

from ..utils import check_int
from .registry import HOOKS

__all__ = ["ShowDirHook", "DenseShowDirHook", "configure_show_dir", "make_grid", "GALLERY_NAME"]

GALLERY_NAME = "gallery.png"
MISTAKE_COLOR = (220, 0, 0)


def make_grid(images: Sequence[np.ndarray], columns: int = 4, gap: int = 6,
              frames: Optional[Sequence[bool]] = None) -> np.ndarray:
    """HWC uint8 images in a grid of ``columns`` (cells as large as the largest image, white between
    them); an image whose ``frames`` entry is true gets a red frame."""
    if not images:
        raise ValueError("make_grid: images must not be empty")
    if columns < 1:
        raise ValueError(f"make_grid: columns must be >= 1, got {columns!r}")
    cell_h = max(im.shape[0] for im in images) + 2 * gap
    cell_w = max(im.shape[1] for im in images) + 2 * gap
    columns = min(columns, len(images))
    rows = -(-len(images) // columns)
    canvas = np.full((rows * cell_h, columns * cell_w, 3), 255, dtype=np.uint8)
    for k, im in enumerate(images):
        y, x = (k // columns) * cell_h, (k % columns) * cell_w
        if frames is not None and frames[k]:
            canvas[y + gap // 2:y + cell_h - gap // 2, x + gap // 2:x + cell_w - gap // 2] = MISTAKE_COLOR
            canvas[y + gap:y + cell_h - gap, x + gap:x + cell_w - gap] = 255
        canvas[y + gap:y + gap + im.shape[0], x + gap:x + gap + im.shape[1]] = im[..., :3]
    return canvas


def _pick(drawn: List[Tuple[str, bool]], size: int) -> List[Tuple[str, bool]]:
    """Up to ``size`` of the (path, mistake) drawings: mistakes first (at most half, unless nothing else),
    then the others evenly spread over the test set."""
    wrong, right = [d for d in drawn if d[1]], [d for d in drawn if not d[1]]
    wrong = wrong[:max(size // 2, size - len(right))]
    n = min(size - len(wrong), len(right))
    return wrong + [right[round(k * (len(right) - 1) / max(1, n - 1))] for k in range(n)]


class ShowDirHook(Hook):
    """The ``--show-dir`` layout (module docstring) for the test loop; subclasses draw one sample.

    Args:
        draw: draw at all (``tools/test.py --show-dir`` sets it, as for mmdet's / mmseg's hooks).
        interval: draw every ``interval``-th test batch.
        test_out_dir: where to write; a relative one goes under the run's ``work_dir/<timestamp>/``.
        gallery_size: how many drawings ``gallery.png`` holds (0: no gallery).
        gallery_columns: the gallery's columns.
    """

    priority = "NORMAL"

    def __init__(self, draw: bool = False, interval: int = 1, test_out_dir: Optional[str] = None,
                 gallery_size: int = 16, gallery_columns: int = 4):
        check_int(type(self).__name__, "interval", interval, 1)
        check_int(type(self).__name__, "gallery_size", gallery_size, 0)
        self.draw, self.interval, self.test_out_dir = draw, interval, test_out_dir
        self.gallery_size, self.gallery_columns = gallery_size, gallery_columns
        self.failed: Optional[str] = None
        self._count = 0
        self._gallery: Dict[str, List[Tuple[str, bool]]] = {}

    def draw_sample(self, runner, data_batch, index: int, sample, out_file: str) -> Tuple[Optional[np.ndarray], bool]:
        """The drawing of ``sample`` (HWC uint8; ``None`` if written to ``out_file`` already) and whether
        the prediction is a mistake."""
        raise NotImplementedError

    def _out_dir(self, runner, sample) -> str:
        d = self.test_out_dir or "show"
        if not osp.isabs(d):
            d = osp.join(runner.work_dir, runner.timestamp, d)
        if sample.metainfo.get("dataset_name"):
            d = osp.join(d, str(sample.metainfo["dataset_name"]))
        os.makedirs(d, exist_ok=True)
        return d

    def _warn(self, runner, where: str, e: Exception) -> None:
        self.failed = f"{type(e).__name__}: {e}"
        runner.logger.warning(f"{type(self).__name__}: drawing failed {where} ({self.failed}); nothing more is "
                              f"drawn, the test and its metrics are not affected")

    def before_test(self, runner) -> None:
        self.failed, self._count, self._gallery = None, 0, {}

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.draw or self.failed or batch_idx % self.interval:
            self._count += len(outputs or [])
            return
        try:
            for i, sample in enumerate(outputs or []):
                path = sample.metainfo.get("img_path") or sample.metainfo.get("img_id") or "img"
                stem = osp.splitext(osp.basename(str(path)))[0]
                out_dir = self._out_dir(runner, sample)
                out_file = osp.join(out_dir, f"{self._count:05d}_{stem}.png")
                self._count += 1
                img, mistake = self.draw_sample(runner, data_batch, i, sample, out_file)
                if img is not None:
                    Image.fromarray(img).save(out_file)
                self._gallery.setdefault(out_dir, []).append((out_file, bool(mistake)))
        except Exception as e:  # optional output: never lose the test run to it
            self._warn(runner, f"at test batch {batch_idx}", e)

    def after_test_epoch(self, runner, metrics=None) -> None:
        if not self.draw or not self.gallery_size:
            return
        try:
            for out_dir, drawn in self._gallery.items():
                picked = _pick(drawn, self.gallery_size)
                images = [np.asarray(Image.open(p).convert("RGB")) for p, _ in picked]
                grid = make_grid(images, columns=self.gallery_columns, frames=[m for _, m in picked])
                Image.fromarray(grid).save(osp.join(out_dir, GALLERY_NAME))
        except Exception as e:
            self._warn(runner, "writing the gallery", e)


@HOOKS.register_module()
class DenseShowDirHook(ShowDirHook):
    """mmdet's and mmseg's test predictions drawn by the run's visualizer (``DetLocalVisualizer``,
    ``SegLocalVisualizer``): ground truth | prediction side by side.

    Used instead of mmdet's ``DetVisualizationHook`` / mmseg's ``SegVisualizationHook`` for ``--show-dir``:
    mmseg's reads ``runner.iter``, which builds the training loop and its dataloader (a test run may have
    no training data), and the two write different layouts.

    Args:
        score_thr: boxes scoring below it are not drawn (detection).
    """

    def __init__(self, score_thr: float = 0.3, gallery_size: int = 8, gallery_columns: int = 2, **kwargs):
        super().__init__(gallery_size=gallery_size, gallery_columns=gallery_columns, **kwargs)
        self.score_thr = score_thr

    def draw_sample(self, runner, data_batch, index, sample, out_file):
        with Image.open(sample.img_path) as im:
            img = np.asarray(im.convert("RGB"))
        vis = runner.visualizer
        extra = {}
        if "pred_score_thr" in inspect.signature(vis.add_datasample).parameters:
            extra["pred_score_thr"] = self.score_thr
        vis.add_datasample("show", img, data_sample=sample, draw_gt=True, draw_pred=True, show=False,
                           out_file=out_file, **extra)
        return None, False


def _hook_class(cfg, hook_type):
    from mmengine.registry import HOOKS as MM_HOOKS
    if not isinstance(hook_type, str):
        return hook_type
    with MM_HOOKS.switch_scope_and_registry(cfg.get("default_scope")) as registry:
        return registry.get(hook_type)


def configure_show_dir(cfg, show_dir: str) -> None:
    """Make the config's ``default_hooks.visualization`` write the ``--show-dir`` layout into ``show_dir``:
    vzoo's hooks are switched on, mmdet's / mmseg's are replaced by :class:`DenseShowDirHook`."""
    vis = cfg.default_hooks.visualization
    cls = _hook_class(cfg, vis["type"])
    if isinstance(cls, type) and issubclass(cls, ShowDirHook):
        vis.update(draw=True, interval=1, test_out_dir=show_dir)
    else:
        cfg.default_hooks.visualization = dict(type="vzoo.DenseShowDirHook", draw=True, test_out_dir=show_dir,
                                               score_thr=vis.get("score_thr", 0.3))
