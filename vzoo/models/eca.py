"""ECA-Net: the networks of "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural
Networks" (Wang, Wu, Zhu, Li, Zuo, Hu; CVPR 2020, arXiv:1910.03151).

The ECA gate (:mod:`vzoo.layers.eca`, timm's ``EcaModule``) follows the last BatchNorm of every
residual branch, before the shortcut is added — in all ResNet blocks and in all 17 inverted
residual blocks of MobileNetV2. The networks are timm's own builders, configured as the paper's:

- ``eca_resnet18/34/50/101/152``: timm's :class:`~timm.models.resnet.ResNet` with ``attn_layer`` set,
  in the plain **torchvision layout** of the official ``BangguWu/ECANet`` ``models/eca_resnet.py``
  (7×7 stride-2 stem + max-pool, 1×1 strided-conv shortcut, stride on the 3×3 conv). This is *not*
  timm's ``ecaresnet50d``, which is a ResNet-D (3×3 deep stem, average-pool shortcut) with the adaptive
  kernel size everywhere. The kernel sizes are the ones the released checkpoints were trained with,
  one per stage (the ``--ksize`` of ``main.py``, named in the released file names):
  ResNet-18 ``3577``, ResNet-34/101/152 ``3357``, ResNet-50 ``3557``. Pass ``k_size=(k1, k2, k3, k4)``
  for others (e.g. ``(3, 3, 7, 7)``, what the paper's detection ECA-ResNet-50 used) or
  ``k_size='adaptive'`` for the paper's formula (5, 5, 5, 7 on ResNet-50).
- ``eca_mobilenetv2``: timm's MobileNetV2 (:class:`~timm.models.efficientnet.EfficientNet` from the
  ``mobilenetv2_100`` arch) with ECA after the projection BatchNorm of every block — where the
  official ``models/eca_mobilenetv2.py`` puts it; timm's own ``se_layer`` slot sits after the depthwise
  conv, so the gate is placed in the projection BatchNormAct's (otherwise empty) ``act`` slot, which
  runs right after that BatchNorm. Kernel size 1 for blocks of fewer than 96 output channels and 3
  from 96 on (the released ``eca_mobilenetv2_k13`` checkpoint; the repository's ``c < 96`` rule).
  Classifier dropout 0.25 as in the official model.

Official checkpoints (``*.pth.tar`` training checkpoints: ``state_dict`` with the DataParallel
``module.`` prefix, keys ``conv1.weight``, ``layer1.0.eca.conv.weight``, ``features.3.conv.4.conv.weight``,
...) load through :func:`checkpoint_filter_fn`, with ``timm.create_model(name, pretrained=True,
pretrained_cfg_overlay=dict(file=PATH))``. Sources: ``vzoo/data/checkpoint_index/eca.json``.

Parameter overhead, counted from the built models: ECA adds exactly 80 parameters to ResNet-50
(3·3 + 4·5 + 6·5 + 3·7 kernel weights), the "80" of the paper. Throughput and memory against the plain
nets: ``python tools/benchmark.py models --models eca_resnet50 resnet50 eca_mobilenetv2 mobilenetv2_100``.
"""
from __future__ import annotations

import re
from typing import Dict, Optional, Sequence

import torch
from torch import nn
from timm.layers import get_device_dtype
from timm.models import generate_default_cfgs, register_model
from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual
from timm.models.efficientnet import EfficientNet
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from vzoo.layers.eca import EcaByChannels
from ._builder import build_vzoo_model, official_notes, strip_module_prefix, vzoo_cfg
from ._mobilenet import MOBILENETV2_ARCH, mobilenet_kwargs

__all__ = ["EcaMobileNetV2", "checkpoint_filter_fn", "RELEASED_K_SIZE"]

# kernel size per ResNet stage of the released ImageNet checkpoints (eca_resnet{N}_k{....}.pth.tar)
RELEASED_K_SIZE = {
    "eca_resnet18": (3, 5, 7, 7),
    "eca_resnet34": (3, 3, 5, 7),
    "eca_resnet50": (3, 5, 5, 7),
    "eca_resnet101": (3, 3, 5, 7),
    "eca_resnet152": (3, 3, 5, 7),
}
_RESNET_ARCH = {
    "eca_resnet18": (BasicBlock, (2, 2, 2, 2)),
    "eca_resnet34": (BasicBlock, (3, 4, 6, 3)),
    "eca_resnet50": (Bottleneck, (3, 4, 6, 3)),
    "eca_resnet101": (Bottleneck, (3, 4, 23, 3)),
    "eca_resnet152": (Bottleneck, (3, 8, 36, 3)),
}

# the released eca_mobilenetv2_k13: k = 1 below 96 output channels, 3 from 96 on
MBV2_RELEASED_K = {16: 1, 24: 1, 32: 1, 64: 1, 96: 3, 160: 3, 320: 3}


def _resnet_k_sizes(variant: str, k_size) -> Dict[int, int]:
    """channels of each stage's ECA → kernel size ({} = adaptive everywhere)."""
    block, _ = _RESNET_ARCH[variant]
    widths = [c * block.expansion for c in (64, 128, 256, 512)]
    if k_size is None:
        k_size = RELEASED_K_SIZE[variant]
    if isinstance(k_size, str):
        if k_size != "adaptive":
            raise ValueError(f"{variant}: k_size must be None (released: {RELEASED_K_SIZE[variant]}), 'adaptive' "
                             f"or 4 odd ints (one per stage), got {k_size!r}")
        return {}
    if isinstance(k_size, (str, bytes)) or not isinstance(k_size, Sequence) or len(k_size) != 4:
        raise ValueError(f"{variant}: k_size must be None, 'adaptive' or 4 odd ints (one per stage), got {k_size!r}")
    return dict(zip(widths, (int(k) for k in k_size)))


class EcaMobileNetV2(EfficientNet):
    """timm's MobileNetV2 with an ECA gate after the projection BatchNorm of every block (official
    ECA-MobileNetV2 placement; see the module docstring).

    Args:
        eca_kernel_sizes: block output channels → ECA kernel size (default: the released
            ``eca_mobilenetv2_k13``: 1 below 96 channels, 3 from 96 on); channels not listed use the
            adaptive rule.
        **kwargs: :class:`~timm.models.efficientnet.EfficientNet` arguments.
    """

    def __init__(self, eca_kernel_sizes: Optional[Dict[int, int]] = None, **kwargs):
        super().__init__(**kwargs)
        dd = get_device_dtype(self)
        make_eca = EcaByChannels(MBV2_RELEASED_K if eca_kernel_sizes is None else eca_kernel_sizes)
        for stage in self.blocks:
            for blk in stage:
                if isinstance(blk, InvertedResidual):
                    norm, chs = blk.bn3, blk.conv_pwl.out_channels
                elif isinstance(blk, DepthwiseSeparableConv):
                    norm, chs = blk.bn2, blk.conv_pw.out_channels
                else:  # pragma: no cover - the arch above has only these two block types
                    raise TypeError(f"EcaMobileNetV2: unexpected block {type(blk).__name__}")
                if not isinstance(norm.act, nn.Identity):
                    raise ValueError("EcaMobileNetV2: the projection BatchNorm must have no activation "
                                     f"(got {norm.act}); ECA takes its place")
                # BatchNormAct2d runs norm -> drop -> act: the gate follows the projection BatchNorm
                norm.act = make_eca(chs, **dd)


# ---- official checkpoints ----------------------------------------------------------------------

# official ECA_MobileNetV2 block module (features.{i}.conv.<part>) → timm block attribute
_MBV2_DS_PARTS = {"0.0": "conv_dw", "0.1": "bn1", "1": "conv_pw", "2": "bn2", "3": "bn2.act"}
_MBV2_IR_PARTS = {"0.0": "conv_pw", "0.1": "bn1", "1.0": "conv_dw", "1.1": "bn2", "2": "conv_pwl", "3": "bn3",
                  "4": "bn3.act"}


def _mbv2_block_names():
    """official features index (1..17) → timm 'blocks.{stage}.{j}'."""
    names, i = {}, 1
    for s, (stage,) in enumerate(MOBILENETV2_ARCH):
        repeats = int(re.search(r"_r(\d+)", stage).group(1))
        for j in range(repeats):
            names[i] = f"blocks.{s}.{j}"
            i += 1
    return names


def _filter_mobilenetv2(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    blocks = _mbv2_block_names()
    head = len(blocks) + 1  # features.18: the 1×1 conv to 1280
    out = {}
    for k, v in state_dict.items():
        m = re.match(r"^features\.(\d+)\.(\d+)\.(.*)$", k)  # stem / head: features.{i}.{0: conv, 1: bn}.*
        if m and int(m.group(1)) in (0, head):
            i, j, tail = int(m.group(1)), m.group(2), m.group(3)
            names = {(0, "0"): "conv_stem", (0, "1"): "bn1", (head, "0"): "conv_head", (head, "1"): "bn2"}
            k = f"{names[(i, j)]}.{tail}"
        m = re.match(r"^features\.(\d+)\.conv\.(.*)$", k)
        if m and int(m.group(1)) in blocks:
            i, rest = int(m.group(1)), m.group(2)
            parts = _MBV2_DS_PARTS if i == 1 else _MBV2_IR_PARTS
            # longest official part first, so "0.0.weight" is read as part "0.0", not "0"
            part = next((p for p in sorted(parts, key=len, reverse=True) if rest.startswith(p + ".")), None)
            if part is not None:
                k = f"{blocks[i]}.{parts[part]}.{rest[len(part) + 1:]}"
        if k.startswith("classifier.1."):
            k = "classifier." + k[len("classifier.1."):]
        out[k] = v
    return out


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Map an official ECA-Net checkpoint (``BangguWu/ECANet``) onto vzoo's model.

    - a DataParallel ``module.`` prefix is removed;
    - ECA-ResNet: the torchvision names are timm's; only ``.eca.`` becomes ``.se.`` (timm's attention slot);
    - ECA-MobileNetV2: ``features.0.{0,1}`` → ``conv_stem``/``bn1``; ``features.{i}.conv.*`` (i = 1..17) →
      ``blocks.{stage}.{j}.*`` (``conv_pw``/``bn1``/``conv_dw``/``bn2``/``conv_pwl``/``bn3``, ECA →
      ``bn3.act``); ``features.18.{0,1}`` → ``conv_head``/``bn2``; ``classifier.1`` → ``classifier``.

    A state dict already in vzoo's names passes through unchanged.
    """
    state_dict = strip_module_prefix(state_dict)
    if isinstance(model, EcaMobileNetV2):
        if any(k.startswith("features.") for k in state_dict):
            return _filter_mobilenetv2(state_dict)
        return dict(state_dict)
    return {k.replace(".eca.", ".se."): v for k, v in state_dict.items()}


# ---- builders ----------------------------------------------------------------------------------

def _create_eca_resnet(variant: str, pretrained: bool = False, **kwargs) -> ResNet:
    block, layers = _RESNET_ARCH[variant]
    k_map = _resnet_k_sizes(variant, kwargs.pop("k_size", None))
    block_args = dict(kwargs.pop("block_args", None) or {})
    block_args["attn_layer"] = EcaByChannels(k_map)
    kwargs.setdefault("zero_init_last", False)  # the official init (normal convs, BN weight 1)
    return build_vzoo_model(ResNet, variant, pretrained, checkpoint_filter_fn=checkpoint_filter_fn,
                            default_feature_cfg=dict(out_indices=(0, 1, 2, 3, 4)),
                            block=block, layers=layers, block_args=block_args, **kwargs)


def _create_eca_mobilenetv2(variant: str, pretrained: bool = False, **kwargs) -> EcaMobileNetV2:
    return build_vzoo_model(EcaMobileNetV2, variant, pretrained, checkpoint_filter_fn=checkpoint_filter_fn,
                            default_feature_cfg=dict(out_indices=(0, 1, 2, 3, 4)),
                            **mobilenet_kwargs(MOBILENETV2_ARCH, 1280, kwargs, drop_rate=0.25))


def _cfg(top1: Optional[float] = None, params_m: Optional[float] = None, k_size: str = "",
         first_conv: str = "conv1", classifier: str = "fc", **kwargs):
    # params: the README's, counted with thop
    notes = official_notes("ECA-Net paper / BangguWu/ECANet README", top1, params_m)
    if k_size:
        notes += (f"released checkpoint trained with ECA kernel sizes {k_size}",)
    return vzoo_cfg(
        interpolation="bilinear", first_conv=first_conv, classifier=classifier, license="mit",
        origin_url="https://github.com/BangguWu/ECANet", paper_ids="arXiv:1910.03151",
        paper_name="ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
        notes=notes, **kwargs)


default_cfgs = generate_default_cfgs({
    "eca_resnet18.in1k": _cfg(top1=70.92, params_m=11.15, k_size="3577"),
    "eca_resnet34.in1k": _cfg(top1=74.21, params_m=20.79, k_size="3357"),
    "eca_resnet50.in1k": _cfg(top1=77.42, params_m=24.37, k_size="3557"),
    "eca_resnet101.in1k": _cfg(top1=78.65, params_m=42.49, k_size="3357"),
    "eca_resnet152.in1k": _cfg(top1=78.92, params_m=57.41, k_size="3357"),
    "eca_mobilenetv2.in1k": _cfg(top1=72.56, params_m=3.34, k_size="13 (1 below 96 channels, 3 from 96)",
                                 first_conv="conv_stem", classifier="classifier"),
})


@register_model
def eca_resnet18(pretrained: bool = False, **kwargs) -> ResNet:
    """ECA-ResNet-18 (torchvision layout; ECA kernel sizes 3, 5, 7, 7 per stage as released)."""
    return _create_eca_resnet("eca_resnet18", pretrained, **kwargs)


@register_model
def eca_resnet34(pretrained: bool = False, **kwargs) -> ResNet:
    """ECA-ResNet-34 (torchvision layout; ECA kernel sizes 3, 3, 5, 7 per stage as released)."""
    return _create_eca_resnet("eca_resnet34", pretrained, **kwargs)


@register_model
def eca_resnet50(pretrained: bool = False, **kwargs) -> ResNet:
    """ECA-ResNet-50 (torchvision layout, not timm's ResNet-D ``ecaresnet50d``; ECA kernel sizes 3, 5, 5, 7
    per stage as released)."""
    return _create_eca_resnet("eca_resnet50", pretrained, **kwargs)


@register_model
def eca_resnet101(pretrained: bool = False, **kwargs) -> ResNet:
    """ECA-ResNet-101 (torchvision layout, not timm's ``ecaresnet101d``; kernel sizes 3, 3, 5, 7 as released)."""
    return _create_eca_resnet("eca_resnet101", pretrained, **kwargs)


@register_model
def eca_resnet152(pretrained: bool = False, **kwargs) -> ResNet:
    """ECA-ResNet-152 (torchvision layout; ECA kernel sizes 3, 3, 5, 7 per stage as released)."""
    return _create_eca_resnet("eca_resnet152", pretrained, **kwargs)


@register_model
def eca_mobilenetv2(pretrained: bool = False, **kwargs) -> EcaMobileNetV2:
    """ECA-MobileNetV2 (ECA after every block's projection BatchNorm; kernel 1 below 96 channels, else 3)."""
    return _create_eca_mobilenetv2("eca_mobilenetv2", pretrained, **kwargs)
