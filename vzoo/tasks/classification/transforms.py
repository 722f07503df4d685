"""Classification transforms: load an image with PIL, apply timm's ``create_transform`` (RandAugment,
random erasing ... as timm's training script does), pack it for the model."""
from __future__ import annotations

from typing import Optional

import torch
from mmengine.structures import BaseDataElement
from PIL import Image
from timm.data import create_transform, resolve_data_config

from ..registry import TRANSFORMS

__all__ = ["LoadPILImage", "TimmTransform", "PackClsInputs"]


@TRANSFORMS.register_module()
class LoadPILImage:
    """``results['img_path']`` -> ``results['img']``, a PIL RGB image."""

    def __call__(self, results: dict) -> dict:
        with Image.open(results["img_path"]) as im:
            results["img"] = im.convert("RGB")
        results["ori_shape"] = results["img"].size[::-1]
        return results


@TRANSFORMS.register_module()
class TimmTransform:
    """``timm.data.create_transform(**kwargs)`` on ``results['img']`` (PIL) -> a normalised CHW tensor.

    ``mean``/``std``/``interpolation``/``crop_pct`` default to the model's pretrained cfg when
    ``model`` (a timm model name) is given, as timm's ``resolve_data_config`` does.
    """

    def __init__(self, input_size=224, is_training: bool = False, model: Optional[str] = None, **kwargs):
        if model is not None:
            import timm

            import vzoo  # noqa: F401
            data_cfg = resolve_data_config({}, model=timm.create_model(model, pretrained=False))
            for k in ("mean", "std", "interpolation", "crop_pct"):
                kwargs.setdefault(k, data_cfg[k])
        self.kwargs = dict(input_size=input_size, is_training=is_training, **kwargs)
        self.transform = create_transform(**self.kwargs)

    def __call__(self, results: dict) -> dict:
        results["img"] = self.transform(results["img"])
        results["img_shape"] = tuple(results["img"].shape[-2:])
        return results

    def __repr__(self):
        return f"TimmTransform({self.transform})"


@TRANSFORMS.register_module()
class PackClsInputs:
    """-> ``dict(inputs=CHW tensor, data_samples=BaseDataElement(gt_label=..., metainfo=...))``."""

    META = ("img_path", "ori_shape", "img_shape", "sample_idx")

    def __call__(self, results: dict) -> dict:
        sample = BaseDataElement(metainfo={k: results[k] for k in self.META if k in results})
        if "gt_label" in results:
            sample.gt_label = torch.as_tensor(results["gt_label"], dtype=torch.long)
        return dict(inputs=results["img"], data_samples=sample)
