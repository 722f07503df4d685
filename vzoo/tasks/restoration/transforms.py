"""Data pipeline of the restoration task (mmengine transforms on dicts of numpy images).

A sample dict carries ``gt`` (the HR image, HWC uint8 RGB) and ``lr`` (the LR image), plus
``scale``, ``gt_path``, ``lr_path``. The transforms:

* :class:`LoadSRPair` reads the HR image, crops it to a multiple of the scale ("mod crop"), and reads
  the LR image (checking that its size is HR / scale) or makes it from HR with MATLAB bicubic.
* :class:`PairedAlbu` runs an albumentations ``Compose`` on LR and HR together, with the same
  random parameters: geometric transforms (:class:`PairedRandomCrop`, flips, ``RandomRotate90``)
  land on corresponding pixels; :class:`PairedRandomCrop` cuts an LR patch of ``lr_size`` and the HR
  patch of ``lr_size * scale`` at the matching place.
* :class:`PackSRInputs` makes ``inputs`` (the LR tensor, CHW uint8) and ``data_samples`` (an
  mmengine ``BaseDataElement`` with ``gt_img`` and the metainfo).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence

import albumentations as A
import numpy as np
import torch
from albumentations.core.transforms_interface import BaseTransformInitSchema
from mmengine.structures import BaseDataElement
from PIL import Image
from pydantic import Field

from ..registry import TRANSFORMS
from .imresize import imresize

__all__ = ["read_rgb", "mod_crop", "bicubic_downsample", "PairedRandomCrop", "LoadSRPair", "PairedAlbu",
           "PackSRInputs"]


def read_rgb(path: str) -> np.ndarray:
    """An image file as HWC uint8 RGB (grayscale is replicated, alpha dropped)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so that height and width are multiples of ``scale``."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale, ...]


def bicubic_downsample(hr: np.ndarray, scale: int) -> np.ndarray:
    """The LR image of a (mod-cropped) HR image: MATLAB ``imresize(hr, 1/scale, 'bicubic')``."""
    return imresize(hr, scale=1.0 / scale)


class PairedRandomCrop(A.DualTransform):
    """Random crop of an LR/HR pair at corresponding places (an albumentations transform).

    The ``image`` target is the LR image; it gets a ``lr_size`` x ``lr_size`` patch. Every other
    image target (e.g. ``gt`` registered with ``additional_targets={'gt': 'image'}``) must be an
    integer multiple ``f`` of the LR size and gets the ``lr_size * f`` patch at ``f`` times the offset.
    """

    class InitSchema(BaseTransformInitSchema):
        lr_size: int = Field(ge=1)

    def __init__(self, lr_size: int, p: float = 1.0):
        super().__init__(p=p)
        self.lr_size = lr_size

    def get_params_dependent_on_data(self, params: Dict[str, Any], data: Dict[str, Any]) -> Dict[str, Any]:
        h, w = params["shape"][:2]
        s = self.lr_size
        if h < s or w < s:
            raise ValueError(f"PairedRandomCrop: lr_size {s} is larger than the LR image {h}x{w} "
                             f"({data.get('lr_path', 'lr')})")
        return {"top": self.py_random.randint(0, h - s), "left": self.py_random.randint(0, w - s),
                "lr_hw": (h, w)}

    def apply(self, img: np.ndarray, top: int = 0, left: int = 0, lr_hw=(1, 1), **params) -> np.ndarray:
        h, w = lr_hw
        f = img.shape[0] // h
        if f < 1 or img.shape[0] != f * h or img.shape[1] != f * w:
            raise ValueError(f"PairedRandomCrop: image of size {img.shape[:2]} is not an integer multiple of the "
                             f"LR size {h}x{w}")
        s = self.lr_size * f
        return img[top * f: top * f + s, left * f: left * f + s]

    def get_transform_init_args_names(self):
        return ("lr_size",)


def _build_albu(cfg: Any):
    if isinstance(cfg, A.BasicTransform):
        return cfg
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise TypeError(f"PairedAlbu: each transform must be a dict with 'type' or an albumentations transform, "
                        f"got {cfg!r}")
    cfg = dict(cfg)
    name = cfg.pop("type")
    if name == "PairedRandomCrop":
        cls = PairedRandomCrop
    else:
        cls = getattr(A, name, None)
        if cls is None:
            raise ValueError(f"PairedAlbu: unknown albumentations transform type {name!r}")
    return cls(**cfg)


@TRANSFORMS.register_module()
class LoadSRPair:
    """Read HR (and LR) images, mod-crop HR to the scale; make LR by MATLAB bicubic if no LR file.

    Args:
        lr_on_the_fly: ``True`` makes LR from HR even where an ``lr_path`` exists; ``None`` (default)
            makes it only where there is no ``lr_path``.
        min_gt_size: with LR made on the fly, an HR image smaller than this (e.g. the training HR
            patch, for ImageNet's small photos) is first resized up to it (bilinear, as the official
            HAT ImageNet pre-training does).
        cache: keep each loaded (HR, LR) pair in memory (per worker process) for small data sets
            that are read many times (the demo); the pipeline's random crops still differ.
    """

    def __init__(self, lr_on_the_fly: Optional[bool] = None, min_gt_size: Optional[int] = None, cache: bool = False):
        self.lr_on_the_fly = lr_on_the_fly
        self.min_gt_size = min_gt_size
        self.cache = cache
        self._cache: Dict[tuple, tuple] = {}

    def __call__(self, results: dict) -> dict:
        scale = int(results["scale"])
        key = (results["gt_path"], results.get("lr_path"), scale)
        if self.cache and key in self._cache:
            hr, lr = self._cache[key]
        else:
            hr, lr = self._load(results, scale)
            if self.cache:
                self._cache[key] = (hr, lr)
        results["gt"], results["lr"] = hr, lr
        results["ori_gt_shape"] = hr.shape[:2]
        results["ori_lr_shape"] = lr.shape[:2]
        return results

    def _load(self, results: dict, scale: int):
        hr = read_rgb(results["gt_path"])
        hr = mod_crop(hr, scale)
        lr_path = results.get("lr_path")
        if lr_path and not self.lr_on_the_fly:
            lr = read_rgb(lr_path)
            if lr.shape[0] * scale != hr.shape[0] or lr.shape[1] * scale != hr.shape[1]:
                raise ValueError(f"LoadSRPair: LR {lr_path} is {lr.shape[1]}x{lr.shape[0]} but HR "
                                 f"{results['gt_path']} mod-cropped is {hr.shape[1]}x{hr.shape[0]} (scale {scale})")
        else:
            if self.min_gt_size and min(hr.shape[:2]) < self.min_gt_size:
                import cv2
                h, w = (max(n, self.min_gt_size) for n in hr.shape[:2])
                hr = mod_crop(cv2.resize(hr, (w + (-w) % scale, h + (-h) % scale), interpolation=cv2.INTER_LINEAR),
                              scale)
            lr = bicubic_downsample(hr, scale)
        return hr, lr

    def __repr__(self):
        return (f"{self.__class__.__name__}(lr_on_the_fly={self.lr_on_the_fly}, min_gt_size={self.min_gt_size}, "
                f"cache={self.cache})")


@TRANSFORMS.register_module()
class PairedAlbu:
    """An albumentations pipeline applied identically to LR (``image``) and HR (``gt``).

    Args:
        transforms: albumentations transforms as dicts (``dict(type='HorizontalFlip', p=0.5)``;
            ``type='PairedRandomCrop'`` is vzoo's paired crop) or transform objects. Only geometric
            transforms make sense here: the same parameters hit both images.

    The random state comes from numpy's global generator (which mmengine seeds per worker), so a
    seeded run is reproducible; albumentations' own ``Compose`` would otherwise draw from OS entropy.
    """

    def __init__(self, transforms: Sequence[Any]):
        self.transforms = [_build_albu(t) for t in transforms]
        self.compose = A.Compose(self.transforms, additional_targets={"gt": "image"}, is_check_shapes=False)

    def __call__(self, results: dict) -> dict:
        self.compose.set_random_seed(int(np.random.randint(0, 2 ** 31 - 1)))
        out = self.compose(image=results["lr"], gt=results["gt"])
        results["lr"], results["gt"] = out["image"], out["gt"]
        return results

    def __repr__(self):
        return f"{self.__class__.__name__}({self.transforms})"


def _to_chw_tensor(img: np.ndarray) -> torch.Tensor:
    if img.ndim == 2:
        img = img[..., None]
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


@TRANSFORMS.register_module()
class PackSRInputs:
    """``inputs``: LR as a CHW uint8 tensor; ``data_samples``: ``BaseDataElement(gt_img=HR CHW uint8)`` + metainfo."""

    META_KEYS = ("gt_path", "lr_path", "scale", "ori_gt_shape", "ori_lr_shape", "img_id", "dataset_name")

    def __call__(self, results: dict) -> dict:
        sample = BaseDataElement(metainfo={k: results[k] for k in self.META_KEYS if k in results})
        sample.gt_img = _to_chw_tensor(results["gt"])
        return {"inputs": _to_chw_tensor(results["lr"]), "data_samples": sample}

    def __repr__(self):
        return f"{self.__class__.__name__}()"
