"""Sparsifiner (``lim142857/Sparsifiner``, ``src/models/sparsifiner.py``): the release's model, built with
its default experiment config (``sparsifiner_default_config.yaml``), against vzoo's in both attention modes
(vzoo's sparse op, and ``masked_dense=True``, the release's own computation), with and without token pruning.

The release reads its settings from a yacs config node; the parity check hands it a plain namespace with the
same fields (``SPAR.*``, ``LOSS.USE_ATTN_RECON``), so yacs is not needed.
"""
from types import SimpleNamespace as NS

import timm

from .._official import import_official
from ._core import Family, save_torch

BASE = "sparsifiner_deit_small_patch16_224"
# variant suffix -> (vzoo kwargs, release TOKEN_PRUNING_LOC, TOKEN_KEEP_RATE_BASE)
MODES = {
    "": (dict(), [], 1.0),
    " masked-dense": (dict(masked_dense=True), [], 1.0),
    " pruned-3-6-9-0.7": (dict(token_pruning_loc=(3, 6, 9), token_keep_rate_base=0.7), [3, 6, 9], 0.7),
    " pruned-3-6-9-0.7 masked-dense": (dict(token_pruning_loc=(3, 6, 9), token_keep_rate_base=0.7,
                                            masked_dense=True), [3, 6, 9], 0.7),
}


def release_cfg():
    """The fields of the release's config its model reads, at the default experiment's values."""
    spar = NS(BASIS_THRESHOLD=2e-2, BASIS_COEF=NS(USE_TOPK=True, TOPK=8, THRESHOLD=5e-2),
              ATTN_SCORE=NS(USE_TOPK=True, THRESHOLD=1e-4), PRUNE_ATTN_MATRIX_ROW=False,
              OUT_BASIS_SPARSITY=False, OUT_BASIS_COEF_SPARSITY=False, OUT_ATTN_MASK_SPARSITY=False)
    return NS(SPAR=spar, LOSS=NS(USE_ATTN_RECON=False))


def _build(mod, variant):
    _, loc, base = MODES[variant[len(BASE):]]
    # main.py's construction of args.model == 'sparsifiner'
    token_keep_rates = [1.0] * 3 + [base] * 3 + [base ** 2] * 3 + [base ** 3] * 3
    return mod.Sparsifiner(patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4, qkv_bias=True,
                           distill=True, attn_keep_rate_list=[0.25] * 12, token_keep_rate_list=token_keep_rates,
                           token_pruning_loc_indicator=[i in loc for i in range(12)], reduce_n_factor=6,
                           reduce_c_factor=2, share_inout_proj=False, cfg=release_cfg())


def _load_vzoo(variant, path):
    import vzoo  # noqa: F401  (registers the models)
    kwargs = MODES[variant[len(BASE):]][0]
    return timm.create_model(BASE, pretrained=True, pretrained_cfg_overlay=dict(file=path), **kwargs)


def _load(root, rel):
    # the release prints a banner when it builds a model; nothing else is patched
    return import_official(root, "models.sparsifiner")


SPEC = Family(
    repo="lim142857/Sparsifiner", candidates=("src//models/sparsifiner.py",),
    variants=tuple(BASE + m for m in MODES), load=_load, build_official=_build, load_vzoo=_load_vzoo,
    official_run=lambda model, variant: (lambda x: model(x)["x"]), batch=2,
    save=lambda sd, path, v: save_torch({"model": sd, "epoch": 49}, path),
    notes="release format: main.py's container, weights under 'model'; default experiment config (keep rate 0.25, "
          "REDUCE_N/C 6/2, basis threshold 2e-2, top-8 basis coefficients, top-k scores); 'masked-dense' rows run "
          "vzoo with the release's masked dense attention, the others on vzoo's sparse op; 'pruned' rows add "
          "DynamicViT-style token pruning at blocks 3, 6, 9 (TOKEN_KEEP_RATE_BASE 0.7)",
    official_files="`src/models/sparsifiner.py` (its config is given as a namespace; yacs is not needed)")
