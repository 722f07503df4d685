"""EViT (``youweiliang/evit``, ``evit.py`` + ``helpers.py``).

The release's ``deit_{small,base}_patch16_shrink_base`` with random weights, saved as the release or DeiT
does, loaded through ``timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=PATH),
keep_rate=..., fuse_token=...)``; compared: the logits, and the kept-token indices of every reorganizing block.

Variants ``NAME[-keepK][-nofuse][-deit]``: the headline model (keep 0.7, fusion) and other rows of the
release's table, saved as its ``main.py`` container (``{'model', 'model_ema', 'optimizer', ..., 'args':
argparse.Namespace}``, ``model_ema`` holding other weights, so that loading the wrong entry shows); ``-deit``:
saved as DeiT's release container (``{'model': ...}``), i.e. plain DeiT weights run as an EViT.

Shims, at parity time only: the release calls timm 0.4's ``build_model_with_cfg(..., default_cfg=...,
pretrained_custom_load=...)``, which timm 1.0 no longer takes, so its entry points run with that function
replaced by the plain constructor call (random init, nothing downloaded); ``helpers.py`` imports
``torchprofile`` for MAC counting only (``get_macs``), which no model calls.
"""
from __future__ import annotations

import argparse
import re
from typing import Dict, List, Tuple

import torch
from torch import nn

from .._official import import_official, stand_in
from ._core import Family, save_torch

_RELEASE_ENTRY = {"evit_deit_small_patch16_224": "deit_small_patch16_shrink_base",
                  "evit_deit_base_patch16_224": "deit_base_patch16_shrink_base"}


def parse_variant(variant: str) -> Tuple[str, dict, str]:
    """``'evit_deit_small_patch16_224-keep0.5-nofuse'`` -> (model name, model kwargs, container kind)."""
    m = re.fullmatch(r"(evit_deit_(?:small|base)_patch16_224)(?:-keep([0-9.]+))?(-nofuse)?(-deit)?", variant)
    if m is None:
        raise ValueError(f"unknown EViT parity variant {variant!r}")
    return m.group(1), dict(keep_rate=float(m.group(2) or 0.7), fuse_token=not m.group(3)), \
        "deit" if m.group(4) else "release"


def _load(root: str, rel: str):
    def no_macs(*args, **kwargs):
        raise RuntimeError("torchprofile stand-in: MAC counting is not part of the parity check")
    mod = import_official(root, "evit",
                          stand_ins={"torchprofile": lambda: stand_in("torchprofile", profile_macs=no_macs)})

    def construct(model_cls, variant, pretrained=False, default_cfg=None, pretrained_filter_fn=None,
                  pretrained_custom_load=False, **kwargs):
        if pretrained:
            raise ValueError("parity builds the release's models with random weights only")
        return model_cls(**kwargs)
    mod.build_model_with_cfg = construct
    return mod


def _build_official(mod, variant: str) -> nn.Module:
    name, kwargs, _ = parse_variant(variant)
    return getattr(mod, _RELEASE_ENTRY[name])(base_keep_rate=kwargs["keep_rate"], drop_loc=(3, 6, 9),
                                               fuse_token=kwargs["fuse_token"])


def _save(state_dict: Dict[str, torch.Tensor], path: str, variant: str) -> None:
    name, kwargs, kind = parse_variant(variant)
    if kind == "deit":
        save_torch({"model": state_dict}, path)  # DeiT's released files
        return
    g = torch.Generator().manual_seed(1)
    ema = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in state_dict.items()}
    save_torch({  # the release's main.py checkpoint
        "model": state_dict, "model_ema": ema, "epoch": 299,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "weight_decay": 0.05,
                                                     "params": list(range(len(state_dict)))}]},
        "lr_scheduler": {"t_initial": 300, "base_values": [2e-3]}, "scaler": {"scale": 65536.0, "growth_factor": 2.0},
        "args": argparse.Namespace(model=_RELEASE_ENTRY[name], base_keep_rate=kwargs["keep_rate"],
                                   fuse_token=kwargs["fuse_token"], drop_loc="(3, 6, 9)", shrink_start_epoch=10,
                                   shrink_epochs=100, epochs=300),
    }, path)


def _load_vzoo(variant: str, path: str) -> nn.Module:
    import timm

    import vzoo  # noqa: F401
    name, kwargs, _ = parse_variant(variant)
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path), **kwargs)


def _kept_indices(official: nn.Module, ours: nn.Module, x: torch.Tensor) -> List[tuple]:
    """The kept-token indices of every reorganizing block, release vs vzoo (both in descending attention)."""
    _, ref_idx = official(x, get_idx=True)
    _, kept = ours.forward_kept_indices(x)
    if len(ref_idx) != len(kept):
        raise ValueError(f"the release drops tokens at {len(ref_idx)} blocks, vzoo at blocks {sorted(kept)}")
    return [(f"kept idx block {blk}", ref.float(), kept[blk].float()) for ref, blk in zip(ref_idx, sorted(kept))]


SPEC = Family(
    repo="youweiliang/evit", candidates=("evit.py",),
    variants=tuple("evit_deit_small_patch16_224" + v for v in ("", "-keep0.9", "-keep0.5", "-keep0.7-nofuse",
                                                               "-keep0.5-nofuse", "-deit")),
    extra_variants=("evit_deit_base_patch16_224", "evit_deit_base_patch16_224-deit",
                    "evit_deit_small_patch16_224-keep1.0"),
    load=_load, build_official=_build_official, save=_save, load_vzoo=_load_vzoo, inner=_kept_indices,
    notes="release format: main.py's checkpoint, weights under 'model' (other weights under 'model_ema'); "
          "-deit: DeiT's {'model': ...}",
    official_files="`evit.py`, `helpers.py`")
