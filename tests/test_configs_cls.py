"""The ImageNet-1k classification configs: one per classifier family (vzoo's and the timm-native
ones of the foundation issue), each parses, names a registered model, keeps the DeiT recipe, and
builds through the classification task (on the meta device: no weights allocated)."""
from pathlib import Path

import pytest
import timm
import torch
from mmengine.config import Config

import vzoo  # noqa: F401
from vzoo.models import list_vzoo_models, model_family

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "configs" / "classification").glob("*_in1k.py"))
TIMM_NATIVE = ("davit", "gcvit", "poolformer", "shvit", "ecaresnet")


def _arch(path):
    return Config.fromfile(str(path)).model.arch


def test_every_classifier_family_has_an_imagenet_config():
    have = {model_family(_arch(p)) if _arch(p) in list_vzoo_models() else _arch(p) for p in CONFIGS}
    image_to_image = {model_family(n) for n in list_vzoo_models()
                      if timm.get_pretrained_cfg(n) is not None and timm.get_pretrained_cfg(n).num_classes == 0}
    want = {model_family(n) for n in list_vzoo_models()} - image_to_image
    assert want <= have, f"families without an ImageNet config: {sorted(want - have)}"
    for prefix in TIMM_NATIVE:
        assert any(a.startswith(prefix) for a in have), prefix


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds_with_the_deit_recipe(path):
    cfg = Config.fromfile(str(path))
    assert cfg.default_scope == "vzoo"
    assert cfg.train_cfg.max_epochs == 300
    assert cfg.optim_wrapper.optimizer.type == "AdamW"
    assert cfg.model.mixup.label_smoothing == 0.1
    assert timm.is_model(cfg.model.arch), cfg.model.arch
    from vzoo.tasks.registry import MODELS, build_in_vzoo_scope
    with torch.device("meta"):
        model = build_in_vzoo_scope(MODELS, cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 1e6
