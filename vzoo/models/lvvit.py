"""LV-ViT on timm's ViT (Jiang, Hou, Yuan, Zhou, Shi, Jin, Wang, Feng; "All Tokens Matter: Token Labeling for
Training Better Vision Transformers", NeurIPS 2021, arXiv:2104.10858; release ``zihangJiang/TokenLabeling``,
``tlt/models/lvvit.py``).

LV-ViT is timm's :class:`~timm.models.vision_transformer.VisionTransformer` (pre-norm blocks, no qkv bias,
MLP ratio 3, LayerNorm eps 1e-5, class token and position embedding added to every token) with three changes, added by
:class:`LvViTMixin` so that Sparsifiner builds on the same parts (:class:`vzoo.models.sparsifiner.SparsifinerLvViT`):

- a convolutional patch embedding (:class:`ConvStemPatchEmbed`: 7x7/2 and two 3x3 conv-BN-ReLU, then a
  ``patch_size // 2`` projection);
- residual branches divided by ``skip_lam`` (2 for LV-ViT-S/M), as constant ``ls1`` / ``ls2`` (:class:`SkipScale`);
- the token-labeling head ``aux_head`` on the image tokens; the prediction is the release's evaluation output,
  ``head(class token) + 0.5 * max over tokens of aux_head(token)`` (``aux_weight``).

The release's training path (MixToken and the dense token-label loss, which need per-patch label maps) is
not offered: ``forward`` always gives the release's evaluation output. Keys equal the release's, so its
checkpoints load as they are (:func:`checkpoint_filter_fn` only unwraps the container and resamples the
position embedding for another input size).
"""
from __future__ import annotations

from functools import partial
from typing import Dict

import torch
from torch import nn
from timm.layers import Format, PatchEmbed, get_device_dtype, nchw_to
from timm.models import generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer import checkpoint_filter_fn as _vit_checkpoint_filter_fn

from ._builder import build_vzoo_model, vzoo_cfg
from ._token_vit import release_file_overlay

__all__ = ["LvViT", "LvViTMixin", "ConvStemPatchEmbed", "SkipScale", "checkpoint_filter_fn"]


class ConvStemPatchEmbed(PatchEmbed):
    """timm's :class:`~timm.layers.PatchEmbed` behind LV-ViT's convolutional stem (the release's
    ``PatchEmbed4_2``, keys ``conv1``/``bn1`` ... ``conv3``/``bn3``, ``proj``): three conv-BN-ReLU at stride 2,
    then a ``patch_size // 2`` projection, so the token grid is that of ``patch_size``."""

    def __init__(self, img_size=224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 stem_chs: int = 64, bias: bool = True, dynamic_img_pad: bool = False, device=None, dtype=None,
                 **kwargs):
        if dynamic_img_pad:
            raise ValueError("LV-ViT: dynamic_img_pad is not supported by the convolutional stem")
        super().__init__(img_size=img_size, patch_size=patch_size, in_chans=stem_chs, embed_dim=embed_dim,
                         bias=bias, device=device, dtype=dtype, **kwargs)
        dd = dict(device=device, dtype=dtype)
        self.conv1 = nn.Conv2d(in_chans, stem_chs, kernel_size=7, stride=2, padding=3, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(stem_chs, **dd)
        self.conv2 = nn.Conv2d(stem_chs, stem_chs, kernel_size=3, padding=1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(stem_chs, **dd)
        self.conv3 = nn.Conv2d(stem_chs, stem_chs, kernel_size=3, padding=1, bias=False, **dd)
        self.bn3 = nn.BatchNorm2d(stem_chs, **dd)
        self.relu = nn.ReLU(inplace=True)
        half = self.patch_size[0] // 2, self.patch_size[1] // 2  # the stem halves the input
        self.proj = nn.Conv2d(stem_chs, embed_dim, kernel_size=half, stride=half, bias=bias, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # PatchEmbed's forward would check the stem's output against img_size: the input is checked here
        H, W = x.shape[-2:]
        if self.img_size is not None and self.strict_img_size:
            torch._assert(H == self.img_size[0], f"Input height ({H}) doesn't match model ({self.img_size[0]}).")
            torch._assert(W == self.img_size[1], f"Input width ({W}) doesn't match model ({self.img_size[1]}).")
        else:
            torch._assert(H % self.patch_size[0] == 0, f"Input height ({H}) should be divisible by the patch size.")
            torch._assert(W % self.patch_size[1] == 0, f"Input width ({W}) should be divisible by the patch size.")
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.proj(self.relu(self.bn3(self.conv3(x))))
        if self.flatten:
            x = x.flatten(2).transpose(1, 2)  # NCHW -> NLC
        elif self.output_fmt != Format.NCHW:
            x = nchw_to(x, self.output_fmt)
        return self.norm(x)


class SkipScale(nn.Module):
    """A residual branch divided by a constant (the release's ``skip_lam``); no parameters, so no keys."""

    def __init__(self, skip_lam: float = 1.0):
        super().__init__()
        self.skip_lam = float(skip_lam)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.skip_lam

    def extra_repr(self) -> str:
        return f"skip_lam={self.skip_lam}"


class LvViTMixin:
    """LV-ViT's parts on a timm ``VisionTransformer`` subclass (listed before it): the convolutional stem, the
    ``skip_lam`` residual scaling of every block's ``ls1`` / ``ls2`` and the token-labeling head ``aux_head``.

    Args:
        skip_lam: residual branches are divided by it (release: 2 for LV-ViT-S/M, 3 for L).
        stem_chs: the stem's width (64; 128 for LV-ViT-L).
        return_dense: add the token-labeling head ``aux_head`` (the release's ``return_dense``).
        aux_weight: weight of the head's token maximum in the prediction (the release's 0.5).
        **kwargs: the base class's (timm ``VisionTransformer``) arguments; the class token is required.
    """

    def __init__(self, skip_lam: float = 1.0, stem_chs: int = 64, return_dense: bool = True,
                 aux_weight: float = 0.5, **kwargs):
        if kwargs.get("embed_layer") is not None or kwargs.get("init_values"):
            raise ValueError("LV-ViT: embed_layer and init_values are fixed (convolutional stem, skip_lam)")
        if not kwargs.get("class_token", True) or kwargs.get("global_pool", "token") != "token":
            raise ValueError("LV-ViT: needs the class token and global_pool='token'")
        kwargs.setdefault("norm_layer", nn.LayerNorm)  # the release's eps 1e-5 (timm's ViT default: 1e-6)
        super().__init__(embed_layer=partial(ConvStemPatchEmbed, stem_chs=stem_chs), **kwargs)
        for blk in self.blocks:
            blk.ls1, blk.ls2 = SkipScale(skip_lam), SkipScale(skip_lam)
        self.return_dense = return_dense
        self.aux_weight = aux_weight
        self.aux_head = self._new_aux_head()

    def _new_aux_head(self) -> nn.Module:
        if self.return_dense and self.num_classes > 0:
            head = nn.Linear(self.embed_dim, self.num_classes, **get_device_dtype(self))
            nn.init.trunc_normal_(head.weight, std=.02)
            nn.init.zeros_(head.bias)
            return head
        return nn.Identity()

    def reset_classifier(self, num_classes: int, global_pool=None) -> None:
        super().reset_classifier(num_classes, global_pool=global_pool)
        self.aux_head = self._new_aux_head()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The release's evaluation output: ``head(class token) + aux_weight * max_tokens aux_head(tokens)``."""
        # timm's ViT forward_head, restated rather than called: TorchScript does not compile super()
        out = self.head_drop(self.fc_norm(self.pool(x)))
        if pre_logits:
            return out
        out = self.head(out)
        if not self.return_dense or self.num_classes == 0:
            return out
        return out + self.aux_weight * self.aux_head(x[:, self.num_prefix_tokens:]).max(dim=1)[0]


class LvViT(LvViTMixin, VisionTransformer):
    """LV-ViT: timm's VisionTransformer with :class:`LvViTMixin`'s stem, residual scaling and token-labeling
    head."""


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """The release's keys are ours: timm's ViT filter unwraps the container (``'model'``, ``'state_dict'``)
    and resamples the position embedding when the input size differs."""
    return _vit_checkpoint_filter_fn(state_dict, model)


def _create_lvvit(variant: str, pretrained: bool = False, **kwargs) -> LvViT:
    overlay = release_file_overlay(pretrained, kwargs)  # bare state dicts, DeiT-style and timm train.py containers
    return build_vzoo_model(LvViT, variant, pretrained, checkpoint_filter_fn=checkpoint_filter_fn,
                            pretrained_cfg_overlay=overlay, **kwargs)


def _cfg(**kwargs):
    return vzoo_cfg(**{
        "min_input_size": (3, 224, 224), "fixed_input_size": True, "pool_size": None, "crop_pct": 0.9,
        "first_conv": "patch_embed.conv1", "license": "apache-2.0",
        "origin_url": "https://github.com/zihangJiang/TokenLabeling", "paper_ids": "arXiv:2104.10858",
        "paper_name": "All Tokens Matter: Token Labeling for Training Better Vision Transformers", **kwargs})


default_cfgs = generate_default_cfgs({
    "lvvit_s.in1k": _cfg(notes=("release top-1 83.3 at 224 (lvvit_s-26M-224-83.3.pth.tar)",)),
    "lvvit_m.in1k": _cfg(crop_pct=1.0, notes=("release top-1 84.0 at 224 (lvvit_m-56M-224-84.0.pth.tar)",)),
})


@register_model
def lvvit_s(pretrained: bool = False, **kwargs) -> LvViT:
    """LV-ViT-S: 16 blocks, width 384, 6 heads, skip_lam 2 (release: 83.3 top-1 at 224)."""
    model_args = dict(patch_size=16, embed_dim=384, depth=16, num_heads=6, mlp_ratio=3., qkv_bias=False,
                      skip_lam=2.)
    return _create_lvvit("lvvit_s", pretrained, **{**model_args, **kwargs})


@register_model
def lvvit_m(pretrained: bool = False, **kwargs) -> LvViT:
    """LV-ViT-M: 20 blocks, width 512, 8 heads, skip_lam 2 (release: 84.0 top-1 at 224)."""
    model_args = dict(patch_size=16, embed_dim=512, depth=20, num_heads=8, mlp_ratio=3., qkv_bias=False,
                      skip_lam=2.)
    return _create_lvvit("lvvit_m", pretrained, **{**model_args, **kwargs})
