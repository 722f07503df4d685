"""An ImageNet-style folder dataset: ``<data_root>/<data_prefix>/<class name>/<image>``."""
from __future__ import annotations

import os
import os.path as osp
from typing import List, Optional, Sequence

from mmengine.dataset import BaseDataset

from ..engine.data_errors import NamedFileErrors
from ..registry import DATASETS, TRANSFORMS, build_in_vzoo_scope

__all__ = ["ImageFolderDataset", "IMG_EXTENSIONS"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@DATASETS.register_module()
class ImageFolderDataset(NamedFileErrors, BaseDataset):
    """Class names are the sub-folder names (sorted, as torchvision's ``ImageFolder``), unless
    ``classes`` fixes them (then a missing class folder is an error). Labels index ``classes``.
    An image that cannot be decoded is named in the error (:class:`~vzoo.tasks.engine.data_errors.NamedFileErrors`)."""

    def __init__(self, data_root: str = "", data_prefix: str = "", classes: Optional[Sequence[str]] = None,
                 pipeline: Sequence = (), test_mode: bool = False, **kwargs):
        self._classes = list(classes) if classes is not None else None
        self._prefix = data_prefix
        pipeline = [build_in_vzoo_scope(TRANSFORMS, t) for t in pipeline]
        super().__init__(data_root=data_root, pipeline=pipeline, test_mode=test_mode, **kwargs)

    @property
    def folder(self) -> str:
        return osp.join(self.data_root, self._prefix) if self.data_root else self._prefix

    def load_data_list(self) -> List[dict]:
        folder = self.folder
        if not osp.isdir(folder):
            raise FileNotFoundError(f"ImageFolderDataset: folder not found: {folder!r}")
        classes = self._classes or sorted(d.name for d in os.scandir(folder) if d.is_dir())
        if not classes:
            raise FileNotFoundError(f"ImageFolderDataset: no class sub-folders in {folder!r}")
        data = []
        for label, name in enumerate(classes):
            cdir = osp.join(folder, name)
            if not osp.isdir(cdir):
                raise FileNotFoundError(f"ImageFolderDataset: class folder not found: {cdir!r}")
            for root, _, files in sorted(os.walk(cdir, followlinks=True)):
                for f in sorted(files):
                    if f.lower().endswith(IMG_EXTENSIONS):
                        data.append(dict(img_path=osp.join(root, f), gt_label=label))
        if not data:
            raise FileNotFoundError(f"ImageFolderDataset: no images ({', '.join(IMG_EXTENSIONS)}) under {folder!r}")
        self._metainfo["classes"] = tuple(classes)
        return data
