"""Sparsifiner: learned instance-dependent sparse attention on timm's ViT / DeiT (Rao, Kim, Liu, Savvides,
Wang, Xu, Zhou, ...; "Sparsifiner: Learning Sparse Instance-Dependent Attention for Efficient Vision
Transformers", CVPR 2023, arXiv:2303.13755; release ``lim142857/Sparsifiner``, ``src/models/sparsifiner.py``).

Every block's attention gets a connectivity predictor (:class:`vzoo.layers.ConnectivityPredictor`, the
release's ``MaskPredictor``, under the same key ``blocks.{i}.attn.mask_predictor``) that picks, per image query
and head, the keys it attends to (``ceil(attn_keep_rate * N)``, 0.25 by default); the class token attends to
every key. Optional DynamicViT-style token pruning (``token_pruning_loc``, ``token_keep_rate_base``) zeroes the
image tokens the class token attends to least, as the release does (the tokens stay on the grid).

Modes: in eval (and in the release's class-token distillation phase) the attention runs on the sparse op
(:func:`vzoo.layers.sparse_attention`, ``O(N k)``); ``masked_dense=True`` gives the release's computation
(dense scores masked to the chosen keys) for comparison. ``phase = 'attn_recon'`` is the release's first
training phase: dense attention, the predictor's low-rank attention in its differentiable form (trained
against a dense teacher's attention, :mod:`vzoo.tasks.classification.sparsifiner`); only the predictor is
trainable then, and only the backbone otherwise (``phase = 'sparse'``, the default), as in the release.

``sparsifiner_lvvit_s`` builds the same parts on LV-ViT (:class:`SparsifinerLvViT`, on
:mod:`vzoo.models.lvvit`), as the release's ``sparsifiner_lvvit.py`` does.

Keys are timm's ViT keys plus the predictor's, so the release's checkpoints load as they are, and a DeiT /
ViT checkpoint loads with the predictor freshly initialised (the release's starting point). No Sparsifiner
weights were released.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import Attention, register_notrace_module, to_2tuple
from timm.models import checkpoint_seq, generate_default_cfgs, register_model
from timm.models.vision_transformer import Block, VisionTransformer
from timm.models.vision_transformer import checkpoint_filter_fn as _vit_checkpoint_filter_fn

from vzoo.layers.connectivity import ConnectivityPredictor, zero_pruned_tokens
from vzoo.layers.sparse_attention import capturing_graph, indices_to_mask, masked_attention_weights, sparse_attention
from ._builder import build_vzoo_model, vzoo_cfg
from .lvvit import LvViTMixin
from ._token_vit import TokenDroppingViT, load_release_checkpoint, release_file_overlay

__all__ = ["Sparsifiner", "SparsifinerLvViT", "SparsifinerAttention", "SparsifinerBlock", "checkpoint_filter_fn",
           "fill_predictor", "load_release_checkpoint", "PHASES"]

PHASES = ("sparse", "attn_recon")
NO_FEATURE_MAPS = ("Sparsifiner with token pruning zeroes image tokens from its first pruning block on and carries "
                   "the token mask from block to block, so features_only / forward_intermediates are not offered "
                   "for it. Use forward_features(x) or forward_aux(x), or build it without token_pruning_loc.")


class SparsifinerAttention(Attention):
    """timm's :class:`~timm.layers.Attention` with a connectivity predictor (``mask_predictor``).

    Attention dropout is never applied (the release defines it and never uses it; DeiT trains with 0).
    """

    def __init__(self, dim: int, num_heads: int = 8, *, num_tokens: int, predictor: Dict,
                 prune_attn_matrix_row: bool = False, device=None, dtype=None, **kwargs):
        super().__init__(dim, num_heads=num_heads, device=device, dtype=dtype, **kwargs)
        self.mask_predictor = ConnectivityPredictor(dim, num_heads=num_heads, num_tokens=num_tokens, device=device,
                                                    dtype=dtype, **predictor)
        self.prune_attn_matrix_row = prune_attn_matrix_row
        self.masked_dense = False  # the release's masked dense computation instead of the sparse op
        self.reconstruct = False  # attention-reconstruction training (dense attention, low-rank approximation)
        self.backend: Optional[str] = None  # of the sparse op

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                is_causal: bool = False) -> torch.Tensor:
        torch._assert(attn_mask is None and not is_causal, "Sparsifiner: attention masks are not supported")
        return self.forward_tokens(x)[0]

    def forward_tokens(self, x: torch.Tensor, token_mask: Optional[torch.Tensor] = None,
                       num_live_tokens: Optional[int] = None
                       ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """``x`` (B, N, C) -> (output (B, N, C), the predictor's low-rank attention (B, heads, N - 1, N),
        the class token's attention to the image tokens (B, heads, N - 1), or None in reconstruction).

        TorchScript and graph capture (tracing, ONNX, torch.export) compute the masked dense attention: the
        sparse op's index plan is data-dependent Python; the two agree to ~1e-6 (``tools/parity.py``)."""
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        cls_attn: Optional[torch.Tensor] = None
        if self.reconstruct and self.training:
            approx = self.mask_predictor.approx_attention(q, k, reconstruct=True)
            x = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:
            if token_mask is not None:  # pruned tokens' queries, keys and values are zeroed, as in the release
                q, k, v = (zero_pruned_tokens(q, token_mask), zero_pruned_tokens(k, token_mask),
                           zero_pruned_tokens(v, token_mask))
            conn = self.mask_predictor(q, k, token_mask=token_mask, num_live_tokens=num_live_tokens)
            approx, indices = conn.approx_attn, conn.indices
            out: Optional[torch.Tensor] = None
            if not torch.jit.is_scripting():  # (TorchScript compiles only the masked dense computation)
                if indices is not None and not self.masked_dense and not capturing_graph():
                    cls_p = ((q[:, :, :1] @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
                    out = sparse_attention(q[:, :, 1:], k, v, indices, scale=self.scale, backend=self.backend)
                    if self.prune_attn_matrix_row and token_mask is not None:
                        out = out * token_mask[:, None, :, None].to(out.dtype)
                    out = torch.cat([cls_p @ v, out], dim=2)
                    cls_attn = cls_p[:, :, 0, 1:]
            if out is None:
                if indices is None:  # the threshold rule gives a mask
                    threshold_mask = conn.mask
                    assert threshold_mask is not None  # (TorchScript's Optional refinement)
                    mask = threshold_mask
                else:
                    mask = indices_to_mask(indices, N)
                if self.prune_attn_matrix_row and token_mask is not None:
                    mask = mask & token_mask[:, None, :, None]
                mask = torch.cat([mask.new_ones((B, self.num_heads, 1, N)), mask], dim=2)
                attn = masked_attention_weights(q, k, mask, scale=self.scale)
                out = attn @ v
                cls_attn = attn[:, :, 0, 1:]
            x = out
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.proj_drop(self.proj(self.norm(x)))
        return x, approx, cls_attn


@register_notrace_module  # the chosen keys and tokens depend on the data: a leaf for FX tracing
class SparsifinerBlock(Block):
    """timm's :class:`~timm.models.vision_transformer.Block` with :class:`SparsifinerAttention`; a block with
    ``token_keep_rate`` < 1 and ``prune_tokens`` keeps ``ceil(token_keep_rate * (N - 1))`` image tokens."""

    def __init__(self, dim: int, num_heads: int, *, num_tokens: int, predictor: Dict, prune_tokens: bool = False,
                 token_keep_rate: float = 1.0, prune_attn_matrix_row: bool = False, **kwargs):
        kwargs.pop("attn_layer", None)
        super().__init__(dim, num_heads, **kwargs)
        dd = dict(device=kwargs.get("device"), dtype=kwargs.get("dtype"))
        self.attn = SparsifinerAttention(
            dim, num_heads=num_heads, num_tokens=num_tokens, predictor=predictor,
            prune_attn_matrix_row=prune_attn_matrix_row, qkv_bias=kwargs.get("qkv_bias", False),
            qk_norm=kwargs.get("qk_norm", False), scale_norm=kwargs.get("scale_attn_norm", False),
            proj_bias=kwargs.get("proj_bias", True), attn_drop=kwargs.get("attn_drop", 0.),
            proj_drop=kwargs.get("proj_drop", 0.), norm_layer=kwargs.get("norm_layer"), **dd)
        self.token_budget = math.ceil(token_keep_rate * (num_tokens - 1)) if prune_tokens else None

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                is_causal: bool = False) -> torch.Tensor:
        torch._assert(attn_mask is None and not is_causal, "Sparsifiner: attention masks are not supported")
        return self.forward_tokens(x)[0]

    def forward_tokens(self, x: torch.Tensor, token_mask: Optional[torch.Tensor] = None,
                       num_live_tokens: Optional[int] = None
                       ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[int], torch.Tensor]:
        """-> (tokens, token mask after this block, its number of live tokens, the low-rank attention)."""
        y, approx, cls_attn = self.attn.forward_tokens(self.norm1(x), token_mask=token_mask,
                                                        num_live_tokens=num_live_tokens)
        x = x + self.drop_path1(self.ls1(y))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        token_budget = self.token_budget
        if token_budget is not None and cls_attn is not None:
            score = cls_attn.mean(dim=1)
            if token_mask is not None:
                score = score.masked_fill(~token_mask, float("-inf"))
            keep = torch.topk(score, token_budget, sorted=False)[1]
            token_mask = torch.zeros_like(score, dtype=torch.bool).scatter_(-1, keep, True)
            num_live_tokens = token_budget
        if token_mask is not None:
            x = torch.cat([x[:, :1], x[:, 1:].masked_fill(~token_mask[..., None], 0.)], dim=1)
        return x, token_mask, num_live_tokens, approx


def _block(*, depth: int, num_tokens: int, predictor: Dict, attn_keep_rates: Sequence[float],
           token_keep_rates: Sequence[float], token_pruning_loc: Sequence[int], prune_attn_matrix_row: bool, **kwargs):
    """VisionTransformer's ``block_fn``: block ``depth`` with its keep rates."""
    return SparsifinerBlock(
        depth=depth, num_tokens=num_tokens, predictor=dict(predictor, attn_keep_rate=attn_keep_rates[depth]),
        prune_tokens=depth in token_pruning_loc, token_keep_rate=token_keep_rates[depth],
        prune_attn_matrix_row=prune_attn_matrix_row, **kwargs)


def release_token_keep_rates(base: float, depth: int) -> List[float]:
    """The release's per-block token keep rates: ``base ** (i // (depth // 4))`` (for 12 blocks ``[1]*3 +
    [b]*3 + [b**2]*3 + [b**3]*3``), i.e. of the ``N - 1`` image tokens, not of the previous block's."""
    step = max(1, depth // 4)
    return [float(base) ** min(i // step, 3) for i in range(depth)]


class Sparsifiner(TokenDroppingViT, VisionTransformer):
    """timm's VisionTransformer with Sparsifiner's learned sparse attention.

    Args:
        attn_keep_rate: fraction of the keys each image query keeps, one value or one per block (release: 0.25).
        reduce_n_factor, reduce_c_factor, share_inout_proj: the predictor's low-rank sizes (release config 6, 2).
        basis_threshold, basis_coef_topk, basis_coef_threshold, attn_score_topk, attn_score_threshold: the
            predictor's rules (:class:`~vzoo.layers.ConnectivityPredictor`; release config 2e-2, 8, 5e-2, True, 1e-4).
        token_pruning_loc: blocks that prune image tokens (release config: none; DynamicViT's 3, 6, 9).
        token_keep_rate_base: the release's ``TOKEN_KEEP_RATE_BASE`` (:func:`release_token_keep_rates`).
        prune_attn_matrix_row: pruned tokens' queries attend to nothing (release ``PRUNE_ATTN_MATRIX_ROW``).
        masked_dense: compute the release's masked dense attention instead of the sparse op.
        attn_backend: the sparse op's backend (None: Triton on CUDA, torch elsewhere).
        **kwargs: timm ``VisionTransformer`` arguments; the class token is required, the input size is fixed
            (the predictor's ``proj_n`` has one row per token).
    """
    NO_FEATURE_MAPS = NO_FEATURE_MAPS  # said by TokenDroppingViT.forward_intermediates / features_only

    __jit_unused_properties__ = ["phase", "masked_dense", "attn_backend", "reorganizes_tokens"]

    def __init__(self, attn_keep_rate: Union[float, Sequence[float]] = 0.25, reduce_n_factor: float = 6,
                 reduce_c_factor: float = 2, share_inout_proj: bool = False, basis_threshold: float = 2e-2,
                 basis_coef_topk: Optional[int] = 8, basis_coef_threshold: float = 5e-2, attn_score_topk: bool = True,
                 attn_score_threshold: float = 1e-4, token_pruning_loc: Sequence[int] = (),
                 token_keep_rate_base: float = 1.0, prune_attn_matrix_row: bool = False, masked_dense: bool = False,
                 attn_backend: Optional[str] = None, **kwargs):
        depth = kwargs.get("depth", 12)
        if not kwargs.get("class_token", True) or kwargs.get("reg_tokens", 0) or kwargs.get("no_embed_class", False):
            raise ValueError("Sparsifiner: needs exactly one class token, embedded with the patches")
        for k in ("block_fn", "attn_layer", "dynamic_img_size"):
            if kwargs.get(k):
                raise ValueError(f"Sparsifiner: {k} is not taken (fixed blocks; the token count is fixed)")
        img, patch = to_2tuple(kwargs.get("img_size", 224)), to_2tuple(kwargs.get("patch_size", 16))
        num_tokens = (img[0] // patch[0]) * (img[1] // patch[1]) + 1
        if isinstance(attn_keep_rate, (int, float)):
            attn_keep_rate = [attn_keep_rate] * depth
        rates = [float(r) for r in attn_keep_rate]
        if len(rates) != depth:
            raise ValueError(f"Sparsifiner: attn_keep_rate needs one value or {depth}, got {len(rates)}")
        token_pruning_loc = tuple(sorted({int(i) for i in token_pruning_loc}))
        if any(not 0 <= i < depth for i in token_pruning_loc):
            raise ValueError(f"Sparsifiner: token_pruning_loc {token_pruning_loc} must index blocks 0..{depth - 1}")
        predictor = dict(reduce_n_factor=reduce_n_factor, reduce_c_factor=reduce_c_factor,
                         share_inout_proj=share_inout_proj, basis_threshold=basis_threshold,
                         basis_coef_topk=basis_coef_topk, basis_coef_threshold=basis_coef_threshold,
                         attn_score_topk=attn_score_topk, attn_score_threshold=attn_score_threshold)
        block_fn = partial(_block, num_tokens=num_tokens, predictor=predictor, attn_keep_rates=rates,
                           token_keep_rates=release_token_keep_rates(token_keep_rate_base, depth),
                           token_pruning_loc=token_pruning_loc, prune_attn_matrix_row=prune_attn_matrix_row)
        super().__init__(block_fn=block_fn, **kwargs)
        self.num_tokens = num_tokens
        self.token_pruning_loc = token_pruning_loc if token_keep_rate_base < 1 else ()
        self.prunes_tokens = bool(self.token_pruning_loc)  # (a bool for TorchScript; reorganizes_tokens says it)
        self._phase = "sparse"
        self.phase = "sparse"
        self.masked_dense = masked_dense
        self.attn_backend = attn_backend

    def _attentions(self) -> List[SparsifinerAttention]:
        return [blk.attn for blk in self.blocks]

    @property
    def phase(self) -> str:
        return self._phase

    @phase.setter
    def phase(self, value: str) -> None:
        """``'attn_recon'``: only the predictors train (dense attention, their low-rank attention in the
        differentiable form); ``'sparse'``: only the backbone trains, on the chosen keys (the release's)."""
        if value not in PHASES:
            raise ValueError(f"Sparsifiner: phase must be one of {PHASES}, got {value!r}")
        self._phase = value
        recon = value == "attn_recon"
        for name, p in self.named_parameters():
            p.requires_grad_(recon == (".mask_predictor." in name))
        for attn in self._attentions():
            attn.reconstruct = recon

    @property
    def masked_dense(self) -> bool:
        return self._attentions()[0].masked_dense

    @masked_dense.setter
    def masked_dense(self, value: bool) -> None:
        for attn in self._attentions():
            attn.masked_dense = bool(value)

    @property
    def attn_backend(self) -> Optional[str]:
        return self._attentions()[0].backend

    @attn_backend.setter
    def attn_backend(self, value: Optional[str]) -> None:
        for attn in self._attentions():
            attn.backend = value

    @property
    def reorganizes_tokens(self) -> bool:
        return self.prunes_tokens

    def _forward_blocks(self, x: torch.Tensor):
        """The blocks with the token mask carried along -> (tokens, low-rank attentions, token masks)."""
        token_mask: Optional[torch.Tensor] = None
        num_live: Optional[int] = None
        approx: List[torch.Tensor] = []
        masks: List[Optional[torch.Tensor]] = []
        for blk in self.blocks:
            if not torch.jit.is_scripting() and self.grad_checkpointing and self.training:
                x, token_mask, num_live, a = torch.utils.checkpoint.checkpoint(
                    blk.forward_tokens, x, token_mask, num_live, use_reentrant=False)
            else:
                x, token_mask, num_live, a = blk.forward_tokens(x, token_mask=token_mask, num_live_tokens=num_live)
            approx.append(a)
            masks.append(token_mask)
        return x, approx, masks

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(x))))

    def forward_features(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                         is_causal: bool = False) -> torch.Tensor:
        x = self._embed(x)
        if self.prunes_tokens:
            x = self._forward_blocks(x)[0]
        # timm's ViT forward_features, restated rather than called: TorchScript does not compile super()
        elif attn_mask is not None or is_causal:  # (the blocks refuse them; under FX tracing they are leaves)
            for blk in self.blocks:
                x = blk(x, attn_mask=attn_mask, is_causal=is_causal)
        elif not torch.jit.is_scripting() and self.grad_checkpointing:
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x)

    def forward_aux(self, x: torch.Tensor) -> Dict[str, object]:
        """What the release's model returns for its losses: ``logits``, ``tokens`` (the normed image tokens),
        ``approx_attn`` (per block, ``(B, heads, N - 1, N)`` float32) and ``token_masks`` (per block, or None)."""
        x, approx, masks = self._forward_blocks(self._embed(x))
        x = self.norm(x)
        return dict(logits=self.forward_head(x), tokens=x[:, self.num_prefix_tokens:], approx_attn=approx,
                    token_masks=masks)


class SparsifinerLvViT(LvViTMixin, Sparsifiner):
    """Sparsifiner on LV-ViT (the release's ``sparsifiner_lvvit.py``): :class:`Sparsifiner` with
    :class:`~vzoo.models.lvvit.LvViTMixin`'s stem, ``skip_lam`` residual scaling and token-labeling head; keys
    are LV-ViT's (the TokenLabeling release's) plus the predictors'."""


def fill_predictor(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """A checkpoint without any predictor key (a DeiT / ViT / LV-ViT one) gets the model's own, freshly
    initialised predictor, as the release starts; one with some predictor keys is left to the key check."""
    if any(".mask_predictor." in k for k in state_dict):
        return state_dict
    own = {k: v for k, v in model.state_dict().items() if ".mask_predictor." in k}
    return {**state_dict, **own}


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: Sparsifiner) -> Dict[str, torch.Tensor]:
    """The release's keys are timm's ViT keys plus ``blocks.{i}.attn.mask_predictor.*``: timm's ViT filter
    (``'model'`` container, position embeddings resampled), then :func:`fill_predictor`."""
    return fill_predictor(_vit_checkpoint_filter_fn(state_dict, model), model)


def _create_sparsifiner(variant: str, pretrained: bool = False, model_cls=Sparsifiner, **kwargs) -> Sparsifiner:
    if kwargs.get("features_only") and kwargs.get("token_pruning_loc") and kwargs.get("token_keep_rate_base", 1.0) < 1:
        raise RuntimeError(f"{variant}: " + NO_FEATURE_MAPS)
    overlay = release_file_overlay(pretrained, kwargs)  # main.py's container, as EViT's
    return build_vzoo_model(model_cls, variant, pretrained, checkpoint_filter_fn=checkpoint_filter_fn,
                            pretrained_cfg_overlay=overlay or None, **kwargs)


def _cfg(**kwargs):
    return vzoo_cfg(
        min_input_size=(3, 224, 224), fixed_input_size=True, pool_size=None, first_conv="patch_embed.proj",
        license="apache-2.0", origin_url="https://github.com/lim142857/Sparsifiner", paper_ids="arXiv:2303.13755",
        paper_name="Sparsifiner: Learning Sparse Instance-Dependent Attention for Efficient Vision Transformers",
        **kwargs)


default_cfgs = generate_default_cfgs({
    "sparsifiner_deit_small_patch16_224.untrained": _cfg(notes=(
        "no Sparsifiner weights released; starts from DeiT-S (deit_small_patch16_224), predictor freshly "
        "initialised",)),
    "sparsifiner_deit_base_patch16_224.untrained": _cfg(notes=(
        "no Sparsifiner weights released; starts from DeiT-B (deit_base_patch16_224), predictor freshly initialised",)),
    "sparsifiner_lvvit_s.untrained": {**_cfg(crop_pct=0.9), "first_conv": "patch_embed.conv1", "notes": (
        "no Sparsifiner weights released; starts from LV-ViT-S (lvvit_s, TokenLabeling release), predictor "
        "freshly initialised",)},
})


def _sparsifiner(variant: str, pretrained: bool, model_cls=Sparsifiner, **kwargs) -> Sparsifiner:
    # the release's sparsifiner_default config: REDUCE_N_FACTOR 6, REDUCE_C_FACTOR 2, ATTN_KEEP_RATE 0.25,
    # BASIS_THRESHOLD 2e-2, BASIS_COEF top-8, ATTN_SCORE top-k, no token pruning
    model_args = dict(patch_size=16, depth=12, attn_keep_rate=0.25, reduce_n_factor=6, reduce_c_factor=2)
    return _create_sparsifiner(variant, pretrained, model_cls=model_cls, **{**model_args, **kwargs})


@register_model
def sparsifiner_deit_small_patch16_224(pretrained: bool = False, **kwargs) -> Sparsifiner:
    """Sparsifiner/DeiT-S (the release's default model and config), keep rate 0.25."""
    return _sparsifiner("sparsifiner_deit_small_patch16_224", pretrained,
                        **{"embed_dim": 384, "num_heads": 6, **kwargs})


@register_model
def sparsifiner_deit_base_patch16_224(pretrained: bool = False, **kwargs) -> Sparsifiner:
    """Sparsifiner/DeiT-B (the same parts on DeiT-B), keep rate 0.25."""
    return _sparsifiner("sparsifiner_deit_base_patch16_224", pretrained,
                        **{"embed_dim": 768, "num_heads": 12, **kwargs})


@register_model
def sparsifiner_lvvit_s(pretrained: bool = False, **kwargs) -> SparsifinerLvViT:
    """Sparsifiner/LV-ViT-S (the release's ``sparsifiner_lvvit``), keep rate 0.25 in all 16 blocks."""
    model_args = dict(embed_dim=384, depth=16, num_heads=6, mlp_ratio=3., qkv_bias=False, skip_lam=2.)
    return _sparsifiner("sparsifiner_lvvit_s", pretrained, model_cls=SparsifinerLvViT, **{**model_args, **kwargs})
