"""vzoo: a computer-vision model zoo on timm and OpenMMLab.

``import vzoo`` registers every vzoo model with timm. It does not import mmdet or mmseg:
``import vzoo.mm`` does that and registers ``VZooBackbone`` in their registries.
"""
from .version import __version__
from . import models  # noqa: F401  (registers the models with timm)
from .models import list_vzoo_models

__all__ = ["__version__", "list_vzoo_models"]
