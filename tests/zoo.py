"""Helpers the tests share: which models to test, and how small they can be."""
from __future__ import annotations

import functools
import re
from typing import Dict, List

import timm
import torch
from timm.models import model_entrypoint

import vzoo
from vzoo.models import model_family


def _num_params_meta(name: str) -> int:
    """Parameter count without allocating weights (construction on the meta device)."""
    try:
        with torch.device("meta"):
            m = timm.create_model(name)
    except Exception:  # a model that computes something concrete at construction
        m = timm.create_model(name)
    return sum(p.numel() for p in m.parameters())


@functools.lru_cache(maxsize=None)
def _family_models(module: str) -> tuple:
    return tuple(n for n in timm.list_models() if model_entrypoint(n).__module__ == module)


def _smallest(names) -> str:
    return min(names, key=lambda n: (_num_params_meta(n), n))


@functools.lru_cache(maxsize=None)
def smallest_variant(name: str) -> str:
    """The smallest model of ``name``'s family: registered by the same module and sharing its
    alphabetic prefix (``ecaresnet50d`` → ``ecaresnet26t``, not timm's other ResNets)."""
    prefix = re.match(r"[a-z]*", name).group()
    names = [n for n in _family_models(model_entrypoint(name).__module__) if re.match(r"[a-z]*", n).group() == prefix]
    return _smallest(names)


def smallest_vzoo_models() -> List[str]:
    """The smallest variant of every vzoo family (one per family module), found from timm's registry."""
    families: Dict[str, List[str]] = {}
    for name in vzoo.list_vzoo_models():
        families.setdefault(model_family(name), []).append(name)
    return sorted(_smallest(names) for names in families.values())


def input_size(model) -> tuple:
    """The small test input size: the model's ``min_input_size`` if its cfg sets one, else 64×64."""
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return tuple(cfg.get("min_input_size") or (3, 64, 64))


def is_image_to_image(model) -> bool:
    return getattr(model, "vzoo_task", "classification") == "image-to-image"
