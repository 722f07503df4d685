"""EViT: token reorganization on timm's ViT (Liang, Ge, Tong, Song, Wang, Xie; "Not All Patches are What You
Need: Expediting Vision Transformers via Token Reorganizations", ICLR 2022, arXiv:2202.07800).

A DeiT/ViT whose blocks at ``drop_loc`` (default 3, 6 and 9, counted from 0) keep, between attention and
MLP, only the ``ceil(keep_rate * N)`` image tokens the class token attends to most, and (``fuse_token``)
fuse the others into one token weighted by that attention (:mod:`vzoo.layers.token_reorganization`).
Everything else is timm's :class:`~timm.models.vision_transformer.VisionTransformer`, and EViT adds no
parameters: the release's checkpoints (``youweiliang/evit``, ``main.py``'s container) and any plain
timm/DeiT checkpoint of the same shape load, the latter becoming an EViT at the chosen keep rate.

``evit_deit_small_patch16_224`` and ``evit_deit_base_patch16_224`` are the release's
``deit_small_patch16_shrink_base`` / ``deit_base_patch16_shrink_base`` at its headline setting, keep rate
0.7 with fusion (``evit_deit_tiny_patch16_224``: the same on DeiT-Ti, which the release does not define);
``keep_rate``, ``drop_loc`` and ``fuse_token`` give the other rows of its table
(:data:`RELEASE_TABLE`). The keep rate can be changed on a built model (``model.keep_rate = 0.5``), which
is what the training warm-up (:class:`vzoo.tasks.classification.KeepRateWarmupHook`) does.
"""
from __future__ import annotations

from functools import partial
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import Attention, register_notrace_module
from timm.models import generate_default_cfgs, register_model
from timm.models.vision_transformer import Block, VisionTransformer
from timm.models.vision_transformer import checkpoint_filter_fn as _vit_checkpoint_filter_fn

from vzoo.layers.token_reorganization import TokenReorganization, kept_token_count
from ._builder import build_vzoo_model, vzoo_cfg
from ._token_vit import TokenDroppingViT, load_release_checkpoint, release_file_overlay

__all__ = ["EViT", "EViTAttention", "EViTBlock", "checkpoint_filter_fn", "load_release_checkpoint", "RELEASE_TABLE"]


class EViTAttention(Attention):
    """timm's :class:`~timm.layers.Attention` that can also return the class token's attention.

    :meth:`forward_with_cls_attn` runs the same attention (fused SDPA when timm uses it) and computes, on
    the side, only the softmax row of the class token (one query instead of all), averaged over heads. It
    repeats the few lines of timm's ``forward`` because that returns only the output, and the class token's
    row needs the ``q`` and ``k`` of the same pass (recomputing them would cost a third of the qkv projection).
    The class-token row is taken before attention dropout (the release takes it after; DeiT and EViT
    train with attention dropout 0, where the two agree).
    """

    def forward_with_cls_attn(self, x: torch.Tensor, num_prefix_tokens: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
        """``x`` (B, N, C) -> (attention output (B, N, C), class-token attention to the tokens after the
        ``num_prefix_tokens`` prefix, averaged over heads, float32 (B, N - num_prefix_tokens))."""
        B, N, C = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        # the class token's row, in float32 so that half-precision ties do not decide which tokens stay
        cls_attn = ((q[:, :, :1].float() * self.scale) @ k.float().transpose(-2, -1)).softmax(dim=-1)
        cls_attn = cls_attn[:, :, 0, num_prefix_tokens:].mean(dim=1)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            x = self.attn_drop(attn) @ v
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.norm(x)
        if gate is not None:
            x = x * gate
        return self.proj_drop(self.proj(x)), cls_attn


@register_notrace_module  # token counts depend on the input's length: a leaf for FX tracing
class EViTBlock(Block):
    """timm's :class:`~timm.models.vision_transformer.Block` that reorganizes its tokens between attention
    and MLP. While no token would be dropped (``ceil(keep_rate * N) == N``) it is exactly timm's block."""

    def __init__(self, *args, keep_rate: float = 0.7, fuse_token: bool = True, num_prefix_tokens: int = 1, **kwargs):
        kwargs["attn_layer"] = EViTAttention
        super().__init__(*args, **kwargs)
        self.reorganize = TokenReorganization(keep_rate=keep_rate, fuse_token=fuse_token,
                                              num_prefix_tokens=num_prefix_tokens)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                is_causal: bool = False) -> torch.Tensor:
        torch._assert(attn_mask is None and not is_causal, "EViT: attention masks are not supported")
        return self.forward_with_indices(x)[0]

    def forward_with_indices(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """-> (tokens, positions of the kept tokens among the input's image tokens, or None if none was dropped)."""
        num_image = x.shape[1] - self.reorganize.num_prefix_tokens
        kept_idx: Optional[torch.Tensor] = None
        if kept_token_count(num_image, self.reorganize.keep_rate) >= num_image:
            x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))  # timm's Block, as is
        else:
            y, cls_attn = self.attn.forward_with_cls_attn(
                self.norm1(x), num_prefix_tokens=self.reorganize.num_prefix_tokens)
            x, kept_idx = self.reorganize(x + self.drop_path1(self.ls1(y)), cls_attn)
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x, kept_idx


def _block(*, depth: int, drop_loc: Sequence[int], keep_rate: float, fuse_token: bool, num_prefix_tokens: int,
           **kwargs) -> nn.Module:
    """VisionTransformer's ``block_fn``: an :class:`EViTBlock` at the drop locations, timm's Block elsewhere."""
    if depth in drop_loc:
        return EViTBlock(depth=depth, keep_rate=keep_rate, fuse_token=fuse_token,
                         num_prefix_tokens=num_prefix_tokens, **kwargs)
    return Block(depth=depth, **kwargs)


class EViT(TokenDroppingViT, VisionTransformer):
    """timm's VisionTransformer with EViT's token reorganization.

    Args:
        keep_rate: fraction of image tokens kept at each drop location, in (0, 1] (1: a plain ViT).
        drop_loc: indices of the blocks that reorganize (release: 3, 6, 9).
        fuse_token: fuse the inattentive tokens into one (True) or discard them.
        **kwargs: timm ``VisionTransformer`` arguments (``embed_dim``, ``depth``, ``num_heads``, ...);
            a class token is required (its attention decides), custom ``block_fn``/``attn_layer`` are not taken.
    """
    __jit_unused_properties__ = ["keep_rate", "reorganizes_tokens"]  # Python-side settings, not for TorchScript
    NO_FEATURE_MAPS = ("EViT drops and fuses image tokens at its drop_loc blocks, so its tokens no longer form an "
                       "H x W grid there: features_only / forward_intermediates are not offered for it. Use "
                       "forward_features(x) (the tokens) or forward_kept_indices(x) (which patches each "
                       "reorganizing block kept), or build the model with keep_rate=1.0 (a plain ViT) for feature "
                       "maps.")

    def __init__(self, keep_rate: float = 0.7, drop_loc: Sequence[int] = (3, 6, 9), fuse_token: bool = True,
                 **kwargs):
        depth = kwargs.get("depth", 12)
        drop_loc = tuple(sorted({int(i) for i in drop_loc}))
        if any(not 0 <= i < depth for i in drop_loc):
            raise ValueError(f"EViT: drop_loc {drop_loc} must index blocks 0..{depth - 1}")
        if not kwargs.get("class_token", True):
            raise ValueError("EViT: needs the class token (its attention picks the tokens to keep)")
        for k in ("block_fn", "attn_layer"):
            if k in kwargs:
                raise ValueError(f"EViT: {k} is fixed (timm's Block and Attention, with EViT's at drop_loc)")
        kept_token_count(1, keep_rate)  # validates keep_rate
        block_fn = partial(_block, drop_loc=drop_loc, keep_rate=float(keep_rate), fuse_token=fuse_token,
                           num_prefix_tokens=1 + kwargs.get("reg_tokens", 0))
        super().__init__(block_fn=block_fn, **kwargs)
        self.drop_loc = drop_loc
        self.fuse_token = fuse_token
        self._keep_rate = float(keep_rate)

    @property
    def keep_rate(self) -> float:
        return self._keep_rate

    @keep_rate.setter
    def keep_rate(self, value: float) -> None:
        """Set the keep rate of every reorganizing block (e.g. from a warm-up schedule)."""
        kept_token_count(1, value)
        self._keep_rate = float(value)
        for blk in self.blocks:
            if isinstance(blk, EViTBlock):
                blk.reorganize.keep_rate = float(value)

    @property
    def reorganizes_tokens(self) -> bool:
        return self._keep_rate < 1.0 and bool(self.drop_loc)

    def forward_kept_indices(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[int, torch.Tensor]]:
        """``forward_features`` that also returns, for every block that dropped tokens, the positions of the
        tokens it kept among its input's image tokens (``{block index: (B, k)}``). After a fusing block, the
        next block's last image token is the fused one (index = the earlier block's ``k``)."""
        x = self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(x))))
        kept: Dict[int, torch.Tensor] = {}
        for i, blk in enumerate(self.blocks):
            if isinstance(blk, EViTBlock):
                x, idx = blk.forward_with_indices(x)
                if idx is not None:
                    kept[i] = idx
            else:
                x = blk(x)
        return self.norm(x), kept



def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: EViT) -> Dict[str, torch.Tensor]:
    """The release's keys are timm's ViT keys (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
    ``blocks.{i}.attn.qkv`` ...), as are DeiT's: timm's own ViT filter applies (``'model'`` container,
    linear patch embeddings of old checkpoints, position embeddings resampled to another input size)."""
    return _vit_checkpoint_filter_fn(state_dict, model)


def _create_evit(variant: str, pretrained: bool = False, **kwargs) -> EViT:
    if kwargs.get("features_only"):
        raise RuntimeError(f"{variant}: " + EViT.NO_FEATURE_MAPS)
    overlay = release_file_overlay(pretrained, kwargs)  # main.py's container: its 'model', as the release evaluates
    return build_vzoo_model(EViT, variant, pretrained, checkpoint_filter_fn=checkpoint_filter_fn,
                            pretrained_cfg_overlay=overlay, **kwargs)


# The release's model zoo (youweiliang/evit README; EViT/DeiT-S, 300 epochs on ImageNet-1k, drop_loc
# (3, 6, 9)): (fuse_token, keep_rate, top-1, top-5, GMACs, images/s on the authors' GPU).
RELEASE_TABLE: Tuple[Tuple[bool, float, float, float, float, int], ...] = (
    (True, 0.9, 79.8, 95.0, 4.0, 3197),
    (True, 0.8, 79.8, 94.9, 3.5, 3619),
    (True, 0.7, 79.5, 94.8, 3.0, 4385),
    (True, 0.6, 78.9, 94.5, 2.6, 4722),
    (True, 0.5, 78.5, 94.2, 2.3, 5408),
    (False, 0.9, 79.9, 94.9, 4.0, 3201),
    (False, 0.8, 79.7, 94.8, 3.5, 3772),
    (False, 0.7, 79.4, 94.7, 3.0, 4249),
    (False, 0.6, 79.1, 94.5, 2.6, 4967),
    (False, 0.5, 78.4, 94.1, 2.3, 5325),
)


def _release_notes() -> Tuple[str, ...]:
    return tuple(
        f"fuse_token={fuse}, keep_rate={keep}: top-1 {top1}%, top-5 {top5}%, {gmacs} GMACs, {img_s} img/s "
        f"(release GPU)" for fuse, keep, top1, top5, gmacs, img_s in RELEASE_TABLE)


def _cfg(**kwargs):
    return vzoo_cfg(  # the release evaluates at crop 0.875 (resize 256, center crop 224), vzoo_cfg's default
        min_input_size=(3, 224, 224), fixed_input_size=True, pool_size=None, first_conv="patch_embed.proj",
        license="apache-2.0", origin_url="https://github.com/youweiliang/evit", paper_ids="arXiv:2202.07800",
        paper_name="Not All Patches are What You Need: Expediting Vision Transformers via Token Reorganizations",
        **kwargs)


default_cfgs = generate_default_cfgs({
    # one set of weights per table row; the model's keep_rate / fuse_token select the row
    "evit_deit_small_patch16_224.in1k": _cfg(notes=_release_notes()),
    "evit_deit_tiny_patch16_224.untrained": _cfg(notes=(
        "no EViT/DeiT-Ti weights released; DeiT-Ti weights (deit_tiny_patch16_224) load directly",)),
    "evit_deit_base_patch16_224.untrained": _cfg(notes=(
        "no EViT/DeiT-B weights released; DeiT-B weights (deit_base_patch16_224) load directly",)),
})


def _evit(variant: str, pretrained: bool, embed_dim: int, num_heads: int, **kwargs) -> EViT:
    model_args = dict(patch_size=16, embed_dim=embed_dim, depth=12, num_heads=num_heads,
                      keep_rate=0.7, drop_loc=(3, 6, 9), fuse_token=True)
    return _create_evit(variant, pretrained, **{**model_args, **kwargs})


@register_model
def evit_deit_tiny_patch16_224(pretrained: bool = False, **kwargs) -> EViT:
    """EViT/DeiT-Ti (the release defines no DeiT-Ti EViT entry), keep rate 0.7 with fusion at blocks 3, 6, 9."""
    return _evit("evit_deit_tiny_patch16_224", pretrained, **{"embed_dim": 192, "num_heads": 3, **kwargs})


@register_model
def evit_deit_small_patch16_224(pretrained: bool = False, **kwargs) -> EViT:
    """EViT/DeiT-S (release: ``deit_small_patch16_shrink_base``), keep rate 0.7 with fusion at blocks 3, 6, 9."""
    return _evit("evit_deit_small_patch16_224", pretrained, **{"embed_dim": 384, "num_heads": 6, **kwargs})


@register_model
def evit_deit_base_patch16_224(pretrained: bool = False, **kwargs) -> EViT:
    """EViT/DeiT-B (release: ``deit_base_patch16_shrink_base``), keep rate 0.7 with fusion at blocks 3, 6, 9."""
    return _evit("evit_deit_base_patch16_224", pretrained, **{"embed_dim": 768, "num_heads": 12, **kwargs})
