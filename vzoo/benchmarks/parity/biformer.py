"""BiFormer (``rayleizhu/BiFormer``, ``models/biformer.py`` and ``models/biformer_stl.py``), imported by
the ``bra`` benchmark suite's loader."""
from ..bra import load_official_biformer
from ._core import Family, save_torch


def _build(mods, variant):
    mod = mods["models.biformer_stl" if variant == "biformer_stl" else "models.biformer"]
    return getattr(mod, variant)()


SPEC = Family(
    repo="rayleizhu/BiFormer", candidates=("models/biformer.py",),
    variants=("biformer_tiny", "biformer_small", "biformer_base", "biformer_stl"),
    load=lambda root, rel: load_official_biformer(root), build_official=_build, batch=1,
    save=lambda sd, path, v: save_torch({"model": sd, "epoch": 299}, path),
    notes="release format: weights under 'model'; official BRA from ops/bra_legacy.py",
    official_files="`models/{biformer,biformer_stl,_common}.py` and `ops/bra_legacy.py` (needs `einops`; "
                   "fairscale's checkpoint wrapper, which the models do not use, gets a stand-in)")
