"""LV-ViT (``zihangJiang/TokenLabeling``, ``tlt/models/lvvit.py``): the release's model against vzoo's
``lvvit_s`` / ``lvvit_m`` (the evaluation output: class head + 0.5 x the max of the token-labeling head)."""
import timm

from .._official import import_official
from ._core import Family, save_torch


def _load_vzoo(variant, path):
    import vzoo  # noqa: F401  (registers the models)
    return timm.create_model(variant, pretrained=True, pretrained_cfg_overlay=dict(file=path))


SPEC = Family(
    repo="zihangJiang/TokenLabeling", candidates=("//tlt/models/lvvit.py",), variants=("lvvit_s", "lvvit_m"),
    load=lambda root, rel: import_official(root, "tlt.models.lvvit"),
    build_official=lambda mod, v: getattr(mod, v)(), load_vzoo=_load_vzoo, batch=2,
    # the released lvvit_s-26M-224-83.3.pth.tar is a bare state dict; a timm train.py checkpoint nests it
    save=lambda sd, path, v: save_torch(sd if v == "lvvit_s" else {"state_dict": sd}, path),
    notes="release format: bare state dict (lvvit_s) or timm train.py checkpoint ('state_dict')",
    official_files="`tlt/models/`")
