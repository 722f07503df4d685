"""Paired SR datasets laid out as folders (DIV2K, DF2K, Set5/Set14/B100/Urban100/Manga109)."""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

from mmengine.dataset import BaseDataset

from ...utils import check_int
from ..engine.data_errors import NamedFileErrors
from ..registry import DATASETS, TRANSFORMS, build_in_vzoo_scope

__all__ = ["SRFolderDataset", "IMG_EXTENSIONS"]

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


@DATASETS.register_module()
class SRFolderDataset(NamedFileErrors, BaseDataset):
    """HR images in one folder, LR images in another matched by file name, or LR made on the fly.
    An image that cannot be decoded is named in the error (both files of the pair).

    Args:
        gt_folder: the HR folder (relative to ``data_root`` unless absolute).
        lr_folder: the LR folder; ``None`` makes each LR image from its HR image with MATLAB
            bicubic downsampling (``LoadSRPair``).
        scale: 2, 3, 4 (any integer >= 1 works).
        lr_filename_tmpl: the LR file's stem from the HR stem: ``'{}'`` (same name, EDSR-style
            benchmark folders that keep names) or ``'{}x4'`` (DIV2K ``0001x4.png``, the
            ``LR_bicubic/X4`` benchmark folders). ``'{}x{scale}'`` is filled with the scale.
        lr_ext: the LR file's extension; ``None`` keeps the HR one.
        recursive: also take images in sub-folders (e.g. an ImageNet-style HR tree).
        repeat: how many times the list is repeated (one "epoch" of small training sets).
        dataset_name: names the set in each sample (e.g. ``'Set5'``; saved results go to a sub-folder).

    A missing folder, an empty folder or an HR image without its LR file fails at construction
    with a message naming the path.
    """

    METAINFO = dict(task="super-resolution")

    def __init__(self, gt_folder: str, scale: int, lr_folder: Optional[str] = None,
                 lr_filename_tmpl: str = "{}", lr_ext: Optional[str] = None, recursive: bool = False,
                 repeat: int = 1, dataset_name: Optional[str] = None, data_root: str = "", pipeline: Sequence = (),
                 test_mode: bool = False,
                 **kwargs):
        check_int("SRFolderDataset", "scale", scale, 1)
        check_int("SRFolderDataset", "repeat", repeat, 1)
        self.gt_folder, self.lr_folder, self.scale = gt_folder, lr_folder, scale
        self.lr_filename_tmpl, self.lr_ext = lr_filename_tmpl, lr_ext
        self.recursive, self.repeat, self.dataset_name = recursive, repeat, dataset_name
        # built here with vzoo's registry, so the dataset also works outside a 'vzoo' default scope
        pipeline = [build_in_vzoo_scope(TRANSFORMS, t) for t in pipeline]
        super().__init__(data_root=data_root, pipeline=pipeline, test_mode=test_mode, **kwargs)

    file_keys = ("gt_path", "lr_path")

    def _abs(self, folder: str) -> str:
        return folder if os.path.isabs(folder) or not self.data_root else os.path.join(self.data_root, folder)

    def _list_images(self, folder: str) -> List[str]:
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"SRFolderDataset: folder not found: {folder}")
        if self.recursive:
            found = [os.path.relpath(os.path.join(r, f), folder) for r, _, fs in os.walk(folder, followlinks=True)
                     for f in fs]
        else:
            found = os.listdir(folder)
        files = sorted(f for f in found if f.lower().endswith(IMG_EXTENSIONS))
        if not files:
            raise FileNotFoundError(f"SRFolderDataset: no images ({', '.join(IMG_EXTENSIONS)}) in {folder}")
        return files

    def load_data_list(self) -> List[dict]:
        gt_dir = self._abs(self.gt_folder)
        lr_dir = self._abs(self.lr_folder) if self.lr_folder is not None else None
        if lr_dir is not None and not os.path.isdir(lr_dir):
            raise FileNotFoundError(f"SRFolderDataset: LR folder not found: {lr_dir}")
        data_list = []
        for rel in self._list_images(gt_dir):
            stem, ext = os.path.splitext(rel)
            item = dict(gt_path=os.path.join(gt_dir, rel), scale=self.scale, img_id=stem)
            if self.dataset_name:
                item["dataset_name"] = self.dataset_name
            if lr_dir is not None:
                lr_name = self.lr_filename_tmpl.format(stem, scale=self.scale) + (self.lr_ext or ext)
                lr_path = os.path.join(lr_dir, lr_name)
                if not os.path.isfile(lr_path):
                    raise FileNotFoundError(f"SRFolderDataset: LR image for {item['gt_path']} not found: {lr_path} "
                                            f"(lr_filename_tmpl={self.lr_filename_tmpl!r})")
                item["lr_path"] = lr_path
            data_list.append(item)
        return data_list * self.repeat
