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


def assert_features_match_info(feats, info, x) -> None:
    """One NCHW map per ``info`` entry for the input batch ``x``: its channels, ``ceil(size / reduction)``."""
    assert len(feats) == len(info), (len(feats), len(info))
    B, _, H, W = x.shape
    for f, i in zip(feats, info):
        r = i["reduction"]
        assert tuple(f.shape) == (B, i["num_chs"], -(-H // r), -(-W // r)), (tuple(f.shape), i)


def check_features_any_size(name: str, hw, channels, train: bool = False, **kwargs):
    """``features_only`` of ``name`` at an ``hw`` input: four maps with ``channels`` at strides 4, 8, 16, 32.
    Returns the feature model and the maps (computed with gradients)."""
    fm = timm.create_model(name, features_only=True, **kwargs).train(train)
    assert fm.feature_info.channels() == list(channels)
    assert fm.feature_info.reduction() == [4, 8, 16, 32]
    x = torch.randn(1, 3, *hw)
    feats = fm(x)
    assert_features_match_info(feats, fm.feature_info.get_dicts(), x)
    return fm, feats


def assert_grad_checkpointing_matches(model, x) -> None:
    """``set_grad_checkpointing(True)`` keeps fewer tensors for backward (so it checkpoints something) and
    gives the outputs and parameter gradients of the plain model, dropout and drop-path included (both
    passes start from one RNG state; recomputation must replay it). Leaves checkpointing off, no gradients."""
    results = []
    for enable in (False, True):
        model.zero_grad(set_to_none=True)
        model.set_grad_checkpointing(enable)
        torch.manual_seed(0)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
            out = model(x)
        out.float().square().mean().backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        results.append((out.detach(), grads, len(saved)))
    model.set_grad_checkpointing(False)
    model.zero_grad(set_to_none=True)
    (ref, ref_grads, n_ref), (out, grads, n_ckpt) = results
    assert n_ckpt < n_ref, f"set_grad_checkpointing(True) saved {n_ckpt} tensors for backward, as many as without"
    torch.testing.assert_close(out, ref)
    assert grads.keys() == ref_grads.keys()
    for n, g in grads.items():
        torch.testing.assert_close(g, ref_grads[n], msg=n)
