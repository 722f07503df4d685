"""timm's MobileNet (V1 / V2) builder arguments, for the families that subclass timm's
:class:`~timm.models.efficientnet.EfficientNet` to add an attention module (ECA-MobileNetV2, ULSAM).

timm's own ``_gen_mobilenet_v2`` builds timm's class; these families need theirs, so they pass
:func:`mobilenet_kwargs` (the same arch strings and settings) to their own class instead.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Dict, List

from torch import nn
from timm.models._efficientnet_builder import decode_arch_def, resolve_act_layer, resolve_bn_args, round_channels

__all__ = ["MOBILENETV1_ARCH", "MOBILENETV2_ARCH", "mobilenet_kwargs"]

# timm's _gen_mobilenet_v1 arch (no head conv: the classifier reads the last 1024-channel stage)
MOBILENETV1_ARCH = [["dsa_r1_k3_s1_c64"], ["dsa_r2_k3_s2_c128"], ["dsa_r2_k3_s2_c256"], ["dsa_r6_k3_s2_c512"],
                    ["dsa_r2_k3_s2_c1024"]]
# timm's _gen_mobilenet_v2 arch (mobilenetv2_100): t=1 first block, then inverted residuals
MOBILENETV2_ARCH = [["ds_r1_k3_s1_c16"], ["ir_r2_k3_s2_e6_c24"], ["ir_r3_k3_s2_e6_c32"], ["ir_r4_k3_s2_e6_c64"],
                    ["ir_r3_k3_s1_e6_c96"], ["ir_r3_k3_s2_e6_c160"], ["ir_r1_k3_s1_e6_c320"]]


def mobilenet_kwargs(arch: List[List[str]], num_features: int, kwargs: Dict[str, Any], **defaults) -> Dict[str, Any]:
    """``EfficientNet`` arguments of a MobileNet (stem 32, ReLU6, BatchNorm), then ``defaults``, then the
    caller's ``kwargs`` (its ``norm_layer``, ``bn_*`` and ``act_layer`` entries are consumed)."""
    out = dict(
        block_args=decode_arch_def(arch),
        num_features=num_features,
        stem_size=32,
        round_chs_fn=round_channels,
        norm_layer=kwargs.pop("norm_layer", None) or partial(nn.BatchNorm2d, **resolve_bn_args(kwargs)),
        act_layer=resolve_act_layer(kwargs, "relu6"),
        **defaults,
    )
    out.update(kwargs)
    return out
