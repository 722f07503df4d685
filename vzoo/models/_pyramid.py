"""The timm model interface of a four-stage NCHW pyramid, written once for the families built as
``stem -> stages -> norm -> average pool -> head`` (VAN, FaViT, BiFormer, MOAT ...).

A family subclasses :class:`PyramidNet`, calls :meth:`PyramidNet.init_pyramid` at the start of its
``__init__`` (classifier settings, checks), builds ``self.stem`` (optional), its stages (each with a
``grad_checkpointing`` flag) and passes them to :meth:`PyramidNet.init_stages` (``self.stages`` and
``self.feature_info``), optionally sets ``self.norm`` (after the last stage, on the classification
path) and ``self.feature_transforms`` (one module per stage, applied to the intermediate features
only: the LayerNorm2d that dense-prediction releases add, or MOAT's GELU), then calls
:meth:`PyramidNet.init_head`. Everything timm and ``features_only`` call (``forward_intermediates``,
``prune_intermediate_layers``, ``reset_classifier``, ``group_matcher``, ``set_grad_checkpointing``,
``forward_features``/``forward_head``) comes from here.

The families released with PVT-style key names (``patch_embed{s}``, ``block{s}.{j}``, ``norm{s}``:
VAN, FaViT) map them with :func:`pvt_to_pyramid_keys`; :func:`pyramid_to_pvt_keys` is its inverse.
"""
# no `from __future__ import annotations`: torch.fx copies forward's annotations into the code it generates,
# and TorchScript cannot read a string 'torch.Tensor' there (fx + TorchScript of every PyramidNet family)
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from timm.layers import get_device_dtype, trunc_normal_
from timm.models._features import feature_take_indices

from ._builder import upgrade_renamed_keys

__all__ = ["PyramidNet", "pvt_to_pyramid_keys", "pyramid_to_pvt_keys", "rename_key_prefix"]


def _upgrade_renamed_keys(module, state_dict, prefix, *args) -> None:
    """``load_state_dict`` pre-hook: a checkpoint saved before one of vzoo's renames (a detector holding
    ``backbone.body.model.extra_norms.0.weight``) loads under the new names."""
    ours = {k: state_dict.pop(k) for k in [k for k in state_dict if k.startswith(prefix)]}
    state_dict.update(upgrade_renamed_keys(ours))


class PyramidNet(nn.Module):
    """Base of the pyramid families (see the module docstring)."""

    #: regex of the stem's parameters for ``group_matcher`` (layer-wise LR decay, freezing)
    stem_pattern = r"^stem"
    #: initialise convs with normal(0, sqrt(2 / fan_out)) (VAN/PVT-style releases); else torch's default
    conv_fan_out_init = True

    def init_pyramid(self, num_classes: int, global_pool: str, num_features: int, drop_rate: float = 0.0,
                     **per_stage: Sequence) -> None:
        """Classifier settings; ``per_stage`` (``depths=(2, 2, 6, 2)``, ...) must hold 4 entries each."""
        for name, value in per_stage.items():
            if len(value) != 4:
                raise ValueError(f"{type(self).__name__}: {name} needs 4 entries (one per stage), got "
                                 f"{tuple(value)}")
        self._check_global_pool(global_pool)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = num_features
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.stem: nn.Module = nn.Identity()
        self.norm: nn.Module = nn.Identity()
        self.feature_transforms: Optional[nn.ModuleList] = None
        self.feature_info: List[dict] = []
        self.register_load_state_dict_pre_hook(_upgrade_renamed_keys)

    def init_stages(self, stages: Sequence[nn.Module], embed_dims: Sequence[int]) -> None:
        """``self.stages``, and ``self.feature_info``: stage ``i`` has ``embed_dims[i]`` channels at stride
        ``2 ** (i + 2)``."""
        self.stages = nn.Sequential(*stages)
        self.feature_info = [dict(num_chs=d, reduction=2 ** (i + 2), module=f"stages.{i}")
                             for i, d in enumerate(embed_dims)]

    def init_head(self) -> None:
        """The classifier (on the device and dtype of the stages), then the weight init of the whole model."""
        self.head_drop = nn.Dropout(self.drop_rate)
        self.head = self._classifier(self.num_classes)
        self.apply(self._init_weights)

    def _classifier(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        return nn.Linear(self.num_features, num_classes, **get_device_dtype(self))

    def _check_global_pool(self, global_pool: str) -> None:
        if global_pool not in ("avg", ""):
            raise ValueError(f"{type(self).__name__}: global_pool must be 'avg' or '', got {global_pool!r}")

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
                        (r"^feature_transforms\.(\d+)", (99999,)),
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
            self._check_global_pool(global_pool)
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = self._classifier(num_classes)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, Sequence[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage outputs at strides 4, 8, 16, 32 (NCHW), each through its ``feature_transforms`` entry
        when the model has them; the returned final feature is ``forward_features``' (after ``norm``)."""
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
                intermediates.append(self.feature_transforms[i](x) if self.feature_transforms is not None else x)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(self, indices: Union[int, Sequence[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True):
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last = len(self.stages) - 1
        self.stages = self.stages[:max_index + 1]
        if self.feature_transforms is not None:
            self.feature_transforms = self.feature_transforms[:max_index + 1]
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


# ---------------------------------------------------------------------------------------------------
# PVT-style release names
# ---------------------------------------------------------------------------------------------------
#: (official, vzoo) pairs of key prefixes inside a block; ``{n}`` stands for an index (``attn.fcs.{n}.``)
BlockRenames = Sequence[Tuple[str, str]]

_PVT_KEY = re.compile(r"^(patch_embed|block|norm)(\d+)\.(.*)$")
_PYRAMID_KEY = re.compile(r"^stages\.(\d+)\.(downsample|blocks|norm)\.(.*)$")
_PVT_PARTS = {"patch_embed": "downsample", "block": "blocks", "norm": "norm"}  # official → PyramidNet
_PYRAMID_PARTS = {v: k for k, v in _PVT_PARTS.items()}


def _prefix_pattern(template: str) -> "re.Pattern[str]":
    return re.compile("^" + re.escape(template).replace(re.escape("{n}"), r"(?P<n>\d+)"))


def rename_key_prefix(key: str, renames: BlockRenames, to_vzoo: bool = True) -> str:
    """``key`` with its prefix renamed by the first ``(official, vzoo)`` entry of ``renames`` that matches
    it (``to_vzoo=False``: the vzoo side is matched and the official one written); else unchanged."""
    for official, ours in renames:
        src, dst = (official, ours) if to_vzoo else (ours, official)
        m = _prefix_pattern(src).match(key)
        if m:
            return dst.format(**m.groupdict()) + key[m.end():]
    return key


def _remap(state_dict: Dict[str, torch.Tensor], renames: BlockRenames, to_pyramid: bool) -> Dict[str, torch.Tensor]:
    out = {}
    for k, v in state_dict.items():
        m = (_PVT_KEY if to_pyramid else _PYRAMID_KEY).match(k)
        if m:
            if to_pyramid:
                part, stage, rest = _PVT_PARTS[m.group(1)], int(m.group(2)) - 1, m.group(3)
            else:
                part, stage, rest = _PYRAMID_PARTS[m.group(2)], int(m.group(1)) + 1, m.group(3)
            if part in ("block", "blocks"):
                j, rest = rest.split(".", 1)
                rest = f"{j}.{rename_key_prefix(rest, renames, to_vzoo=to_pyramid)}"
            k = f"stages.{stage}.{part}.{rest}" if to_pyramid else f"{part}{stage}.{rest}"
        out[k] = v
    return out


def pvt_to_pyramid_keys(state_dict: Dict[str, torch.Tensor], block_renames: BlockRenames) -> Dict[str, torch.Tensor]:
    """Map a PVT-style release onto :class:`PyramidNet`'s names.

    ``patch_embed{s}.*`` → ``stages.{s-1}.downsample.*``, ``block{s}.{j}.*`` → ``stages.{s-1}.blocks.{j}.*``
    (inside the block, the first matching ``(official, vzoo)`` prefix of ``block_renames`` is renamed),
    ``norm{s}.*`` → ``stages.{s-1}.norm.*``; other keys (``head.*``) stay. A state dict already in
    vzoo's names passes through unchanged.
    """
    if any(k.startswith("stages.") for k in state_dict):
        return state_dict
    return _remap(state_dict, block_renames, to_pyramid=True)


def pyramid_to_pvt_keys(state_dict: Dict[str, torch.Tensor], block_renames: BlockRenames) -> Dict[str, torch.Tensor]:
    """The inverse of :func:`pvt_to_pyramid_keys`: vzoo's names → the release's (official-format files)."""
    return _remap(state_dict, block_renames, to_pyramid=False)
