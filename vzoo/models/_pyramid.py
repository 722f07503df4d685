"""The timm model interface of a four-stage NCHW pyramid, written once for the families built as
``stem -> stages -> norm -> average pool -> head`` (VAN, FaViT, BiFormer, MOAT ...).

A family subclasses :class:`PyramidNet`, calls :meth:`PyramidNet.init_pyramid` at the start of its
``__init__`` (classifier settings, checks), builds ``self.stem`` (optional), ``self.stages`` (an
``nn.Sequential`` of stages, each with a ``grad_checkpointing`` flag), ``self.feature_info``, and
optionally ``self.norm`` (after the last stage, on the classification path) and ``self.extra_norms``
(one per stage, applied to the intermediate outputs only, the way dense-prediction releases add
them), then calls :meth:`PyramidNet.init_head`. Everything timm and ``features_only`` call
(``forward_intermediates``, ``prune_intermediate_layers``, ``reset_classifier``, ``group_matcher``,
``set_grad_checkpointing``, ``forward_features``/``forward_head``) comes from here.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from timm.layers import trunc_normal_
from timm.models._features import feature_take_indices

__all__ = ["PyramidNet"]


class PyramidNet(nn.Module):
    """Base of the pyramid families (see the module docstring)."""

    #: regex of the stem's parameters for ``group_matcher`` (layer-wise LR decay, freezing)
    stem_pattern = r"^stem"
    #: initialise convs with normal(0, sqrt(2 / fan_out)) (VAN/PVT-style releases); else torch's default
    conv_fan_out_init = True

    def init_pyramid(self, num_classes: int, global_pool: str, num_features: int, drop_rate: float = 0.0) -> None:
        if global_pool not in ("avg", ""):
            raise ValueError(f"{type(self).__name__}: global_pool must be 'avg' or '', got {global_pool!r}")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = num_features
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.stem: nn.Module = nn.Identity()
        self.norm: nn.Module = nn.Identity()
        self.extra_norms: Optional[nn.ModuleList] = None
        self.feature_info: List[dict] = []

    def init_head(self) -> None:
        """The classifier, then the weight init of the whole model."""
        self.head_drop = nn.Dropout(self.drop_rate)
        self.head = nn.Linear(self.num_features, self.num_classes) if self.num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    def _init_weights(self, m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d) and self.conv_fan_out_init:
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0, (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self):
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        return dict(stem=self.stem_pattern,
                    blocks=r"^stages\.(\d+)" if coarse else [
                        (r"^stages\.(\d+)\.downsample", (0,)),
                        (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                        (r"^stages\.(\d+)\.norm", (99999,)),
                        (r"^extra_norms\.(\d+)", (99999,)),
                        (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = enable
        for s in self.stages:
            s.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None, **kwargs):
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"{type(self).__name__}: global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, Sequence[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage outputs at strides 4, 8, 16, 32 (NCHW), each through its ``extra_norms`` entry when the
        model has them; the returned final feature is ``forward_features``' (after ``norm``)."""
        if output_fmt != "NCHW":
            raise ValueError(f"{type(self).__name__}.forward_intermediates: output_fmt must be 'NCHW', "
                             f"got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[:max_index + 1]
        x = self.stem(x)
        intermediates = []
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(self.extra_norms[i](x) if self.extra_norms is not None else x)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(self, indices: Union[int, Sequence[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True):
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last = len(self.stages) - 1
        self.stages = self.stages[:max_index + 1]
        if self.extra_norms is not None:
            self.extra_norms = self.extra_norms[:max_index + 1]
        if prune_norm or max_index < last:
            self.norm = nn.Identity()
        if max_index < last:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or max_index < last:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
