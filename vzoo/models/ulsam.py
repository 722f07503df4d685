"""ULSAM networks: MobileNet-V1 and MobileNet-V2 with ultra-lightweight subspace attention
("ULSAM: Ultra-Lightweight Subspace Attention Module for Compact Convolutional Neural Networks",
Saini, Jha, Das, Mittal, Mohan; WACV 2020, arXiv:2006.15102).

The module is :class:`vzoo.layers.ULSAM` (it loads the reference ``Nandan91/ULSAM`` module's state
dict). The reference repository releases the module only — no networks and no weights — so the
networks here are built from the paper's reported costs, on timm's own MobileNet builders
(:class:`~timm.models.efficientnet.EfficientNet` with the ``mobilenetv1_100`` / ``mobilenetv2_100``
archs: ReLU6, BatchNorm; 4.23 M / 3.50 M parameters).

**Placement: ULSAM replaces blocks** (the paper's efficient configuration, in which ULSAM takes the
place of a stride-1 block whose input and output shapes are equal):

- ``ulsam_mobilenetv1_g{1,2,4,8,16}``: one of the five identical 14×14×512 depthwise-separable layers
  is replaced by ULSAM(512, g). This is the configuration of the paper's ImageNet-1K ablation table
  and fine-grained (Food-101 / Birds / Dogs) MobileNet-V1 table: 3.9 M parameters and 517 M FLOPs
  against 4.2 M / 569 M (ImageNet-1K top-1 69.92 / 70.14 / 70.43 / 70.29 / 70.04 for g = 1 / 2 / 4 /
  8 / 16; baseline 70.65).
- ``ulsam_mobilenetv2_g{1,2,4,8,16}``: one 14×14×96 and one 7×7×160 inverted-residual block are
  replaced by ULSAM. This is the configuration of the ablation row "MV2 + ULSAM (g = 4): 2.96 M
  params, 261.88 M FLOPs, top-1 71.52" (baseline 3.4 M / 300 M / 71.25) and of the fine-grained rows at
  2.97 M / 261.88 M (g = 1, 4, 8, 16; the paper has no g = 2 result for this placement).

The paper states the stage of each replacement only through these costs (one 512-channel 14×14 layer
costs 52.3 M multiply-adds and 0.27 M parameters; a 96-channel 14×14 block 22.7 M / 0.12 M; a
160-channel 7×7 block 15.5 M / 0.32 M: 300 − 22.7 − 15.5 + 0.05 (ULSAM) = 261.88), not the index within
the stage; vzoo replaces the last block of the stage (``ulsam_positions``, ``(stage, block)`` indices
into ``model.blocks``). ``ulsam_mode='insert'`` instead adds ULSAM after those blocks, the
negligible-overhead configuration of the paper's main ImageNet-1K table (4.2 M / 569.2 M and
3.4 M / 300.01 M).

Throughput and memory against the plain nets: ``python tools/benchmark.py models --models
ulsam_mobilenetv2_g4 mobilenetv2_100 ulsam_mobilenetv1_g4 mobilenetv1_100``.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
from torch import nn
from timm.layers import get_device_dtype
from timm.models import generate_default_cfgs, register_model
from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual
from timm.models.efficientnet import EfficientNet

from vzoo.layers.ulsam import ULSAM, ulsam_state_dict_from_official
from ._builder import build_vzoo_model, strip_module_prefix, vzoo_cfg
from ._mobilenet import MOBILENETV1_ARCH, MOBILENETV2_ARCH, mobilenet_kwargs

__all__ = ["UlsamMobileNet", "checkpoint_filter_fn"]

_ARCHS = {
    "mobilenetv1": dict(arch=MOBILENETV1_ARCH, num_features=0, positions=((3, 5),)),
    "mobilenetv2": dict(arch=MOBILENETV2_ARCH, num_features=1280, positions=((4, 2), (5, 2))),
}
MODES = ("replace", "insert")


def _block_shape(blk: nn.Module) -> Tuple[int, int, int]:
    """(in channels, out channels, stride) of a timm MobileNet block."""
    if isinstance(blk, InvertedResidual):
        return blk.conv_pw.in_channels, blk.conv_pwl.out_channels, blk.conv_dw.stride[0]
    if isinstance(blk, DepthwiseSeparableConv):
        return blk.conv_dw.in_channels, blk.conv_pw.out_channels, blk.conv_dw.stride[0]
    raise TypeError(f"not a MobileNet block: {type(blk).__name__}")


class UlsamMobileNet(EfficientNet):
    """A timm MobileNet (V1 or V2 arch) with ULSAM at ``ulsam_positions`` (see the module docstring).

    Args:
        ulsam_groups: ULSAM's number of subspaces ``g``.
        ulsam_positions: ``(stage, block)`` indices into ``self.blocks`` of stride-1 blocks with equal
            input and output channels.
        ulsam_mode: ``'replace'`` (ULSAM takes the block's place) or ``'insert'`` (ULSAM follows it).
        **kwargs: :class:`~timm.models.efficientnet.EfficientNet` arguments.
    """

    def __init__(self, ulsam_groups: int = 4, ulsam_positions: Sequence[Tuple[int, int]] = ((3, 5),),
                 ulsam_mode: str = "replace", **kwargs):
        if ulsam_mode not in MODES:
            raise ValueError(f"UlsamMobileNet: ulsam_mode must be one of {MODES}, got {ulsam_mode!r}")
        super().__init__(**kwargs)
        dd = get_device_dtype(self)
        self.ulsam_groups, self.ulsam_mode = ulsam_groups, ulsam_mode
        self.ulsam_positions = tuple((int(s), int(b)) for s, b in ulsam_positions)
        # insert from the last position backwards so earlier (stage, block) indices stay valid
        for s, b in sorted(self.ulsam_positions, reverse=True):
            if not (0 <= s < len(self.blocks) and 0 <= b < len(self.blocks[s])):
                raise ValueError(f"UlsamMobileNet: ulsam_positions entry {(s, b)} is not a block; stages have "
                                 f"{[len(st) for st in self.blocks]} blocks")
            cin, cout, stride = _block_shape(self.blocks[s][b])
            if cin != cout or stride != 1:
                raise ValueError(f"UlsamMobileNet: ulsam_positions entry {(s, b)} is a block with {cin} -> {cout} "
                                 f"channels and stride {stride}; ULSAM needs a stride-1 block with equal channels")
            ulsam = ULSAM(cout, ulsam_groups, **dd)
            stage = list(self.blocks[s])
            if ulsam_mode == "replace":
                stage[b] = ulsam
            else:
                stage.insert(b + 1, ulsam)
            self.blocks[s] = nn.Sequential(*stage)


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """ULSAM networks have no official release; this accepts vzoo's own keys and, inside them, ULSAM
    modules in the reference per-subspace layout (``blocks.3.5.subspaces.{i}.conv_dws.weight``, ...),
    which are fused into vzoo's layout. A DataParallel ``module.`` prefix is removed."""
    state_dict = strip_module_prefix(state_dict)
    prefixes = sorted({k.split("subspaces.")[0] for k in state_dict if ".subspaces." in k})
    for p in prefixes:
        state_dict = ulsam_state_dict_from_official(state_dict, p)
    return dict(state_dict)


def _create_ulsam(variant: str, base: str, groups: int, pretrained: bool = False, **kwargs) -> UlsamMobileNet:
    spec = _ARCHS[base]
    return build_vzoo_model(UlsamMobileNet, variant, pretrained, checkpoint_filter_fn=checkpoint_filter_fn,
                            default_feature_cfg=dict(out_indices=(0, 1, 2, 3, 4)),
                            **mobilenet_kwargs(spec["arch"], spec["num_features"], kwargs, ulsam_groups=groups,
                                               ulsam_positions=spec["positions"]))


def _cfg(table: str, top1=None, **kwargs):
    notes = [f"no weights released (the reference repository releases the module only); configuration of {table}"]
    if top1 is not None:
        notes.append(f"paper ImageNet-1k top-1 {top1}%")
    return vzoo_cfg(
        interpolation="bilinear", first_conv="conv_stem", classifier="classifier", license="mit",
        origin_url="https://github.com/Nandan91/ULSAM", paper_ids="arXiv:2006.15102",
        paper_name="ULSAM: Ultra-Lightweight Subspace Attention Module for Compact Convolutional Neural Networks",
        notes=tuple(notes), **kwargs)


_V1_TABLE = "the MobileNet-V1 ImageNet-1K ablation / fine-grained tables (3.9 M params, 517 M FLOPs)"
_V2_TABLE = "the MobileNet-V2 ImageNet-1K ablation / fine-grained tables (2.96 M params, 261.88 M FLOPs)"
default_cfgs = generate_default_cfgs({
    "ulsam_mobilenetv1_g1.untrained": _cfg(_V1_TABLE, 69.92),
    "ulsam_mobilenetv1_g2.untrained": _cfg(_V1_TABLE, 70.14),
    "ulsam_mobilenetv1_g4.untrained": _cfg(_V1_TABLE, 70.43),
    "ulsam_mobilenetv1_g8.untrained": _cfg(_V1_TABLE, 70.29),
    "ulsam_mobilenetv1_g16.untrained": _cfg(_V1_TABLE, 70.04),
    "ulsam_mobilenetv2_g1.untrained": _cfg(_V2_TABLE),
    "ulsam_mobilenetv2_g2.untrained": _cfg(_V2_TABLE),
    "ulsam_mobilenetv2_g4.untrained": _cfg(_V2_TABLE, 71.52),
    "ulsam_mobilenetv2_g8.untrained": _cfg(_V2_TABLE),
    "ulsam_mobilenetv2_g16.untrained": _cfg(_V2_TABLE),
})


@register_model
def ulsam_mobilenetv1_g1(pretrained: bool = False, **kwargs) -> UlsamMobileNet:
    """MobileNet-V1 with ULSAM (g=1) replacing one 14×14×512 layer (paper: 3.9 M params, 517 M FLOPs)."""
    return _create_ulsam("ulsam_mobilenetv1_g1", "mobilenetv1", 1, pretrained, **kwargs)


@register_model
def ulsam_mobilenetv1_g2(pretrained: bool = False, **kwargs) -> UlsamMobileNet:
    """MobileNet-V1 with ULSAM (g=2) replacing one 14×14×512 layer (paper: 3.9 M params, 517 M FLOPs)."""
    return _create_ulsam("ulsam_mobilenetv1_g2", "mobilenetv1", 2, pretrained, **kwargs)


@register_model
def ulsam_mobilenetv1_g4(pretrained: bool = False, **kwargs) -> UlsamMobileNet:
    """MobileNet-V1 with ULSAM (g=4) replacing one 14×14×512 layer (paper: 3.9 M params, 517 M FLOPs)."""
    return _create_ulsam("ulsam_mobilenetv1_g4", "mobilenetv1", 4, pretrained, **kwargs)


@register_model
def ulsam_mobilenetv1_g8(pretrained: bool = False, **kwargs) -> UlsamMobileNet:
    """MobileNet-V1 with ULSAM (g=8) replacing one 14×14×512 layer (paper: 3.9 M params, 517 M FLOPs)."""
    return _create_ulsam("ulsam_mobilenetv1_g8", "mobilenetv1", 8, pretrained, **kwargs)


@register_model
def ulsam_mobilenetv1_g16(pretrained: bool = False, **kwargs) -> UlsamMobileNet:
    """MobileNet-V1 with ULSAM (g=16) replacing one 14×14×512 layer (paper: 3.9 M params, 517 M FLOPs)."""
    return _create_ulsam("ulsam_mobilenetv1_g16", "mobilenetv1", 16, pretrained, **kwargs)


@register_model
def ulsam_mobilenetv2_g1(pretrained: bool = False, **kwargs) -> UlsamMobileNet:
    """MobileNet-V2 with ULSAM (g=1) replacing one 96- and one 160-channel block (paper: 2.96 M, 261.88 M FLOPs)."""
    return _create_ulsam("ulsam_mobilenetv2_g1", "mobilenetv2", 1, pretrained, **kwargs)


@register_model
def ulsam_mobilenetv2_g2(pretrained: bool = False, **kwargs) -> UlsamMobileNet:
    """MobileNet-V2 with ULSAM (g=2) replacing one 96- and one 160-channel block (paper: 2.96 M, 261.88 M FLOPs)."""
    return _create_ulsam("ulsam_mobilenetv2_g2", "mobilenetv2", 2, pretrained, **kwargs)


@register_model
def ulsam_mobilenetv2_g4(pretrained: bool = False, **kwargs) -> UlsamMobileNet:
    """MobileNet-V2 with ULSAM (g=4) replacing one 96- and one 160-channel block (paper: 2.96 M, 261.88 M FLOPs)."""
    return _create_ulsam("ulsam_mobilenetv2_g4", "mobilenetv2", 4, pretrained, **kwargs)


@register_model
def ulsam_mobilenetv2_g8(pretrained: bool = False, **kwargs) -> UlsamMobileNet:
    """MobileNet-V2 with ULSAM (g=8) replacing one 96- and one 160-channel block (paper: 2.96 M, 261.88 M FLOPs)."""
    return _create_ulsam("ulsam_mobilenetv2_g8", "mobilenetv2", 8, pretrained, **kwargs)


@register_model
def ulsam_mobilenetv2_g16(pretrained: bool = False, **kwargs) -> UlsamMobileNet:
    """MobileNet-V2 with ULSAM (g=16) replacing one 96- and one 160-channel block (paper: 2.96 M, 261.88 M FLOPs)."""
    return _create_ulsam("ulsam_mobilenetv2_g16", "mobilenetv2", 16, pretrained, **kwargs)
