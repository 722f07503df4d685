"""The OpenMMLab bridge: ``import vzoo.mm`` registers ``VZooBackbone`` in mmdet's and mmseg's MODELS.

Configs use ``custom_imports = dict(imports=['vzoo.mm'], allow_failed_imports=False)``.
"""
from mmdet.registry import MODELS as MMDET_MODELS
from mmseg.registry import MODELS as MMSEG_MODELS

from .backbone import VZooBackbone

for _registry in (MMDET_MODELS, MMSEG_MODELS):
    _registry.register_module(name="VZooBackbone", module=VZooBackbone, force=True)

__all__ = ["VZooBackbone"]
