"""FaViT (``q2479036243/FaViT``, ``FaViT/classification/favit.py``, imported as ``favit``)."""
from .._official import import_official
from ._core import Family, save_torch

SPEC = Family(
    repo="q2479036243/FaViT",
    candidates=("FaViT/classification//favit.py", "classification//favit.py", "favit.py"),
    variants=("favit_b0", "favit_b1", "favit_b2", "favit_b3"),
    load=lambda root, rel: import_official(root, "favit"), build_official=lambda mod, v: getattr(mod, v)(),
    # DeiT-style main.py: utils.save_on_master({'model': ..., 'optimizer': ..., 'epoch': ...})
    save=lambda sd, path, v: save_torch({"model": sd, "epoch": 299}, path),
    notes="release format: DeiT main.py checkpoint, weights under 'model'",
    official_files="`FaViT/classification/favit.py`")
