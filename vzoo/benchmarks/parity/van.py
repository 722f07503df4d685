"""VAN (``Visual-Attention-Network/VAN-Classification``, ``models/van.py``)."""
from .._official import import_official
from ._core import Family, save_torch

SPEC = Family(
    repo="Visual-Attention-Network/VAN-Classification", candidates=("models/van.py",),
    variants=("van_b0", "van_b1", "van_b2", "van_b3"), extra_variants=("van_b4", "van_b5", "van_b6"),
    load=lambda root, rel: import_official(root, "models.van"), build_official=lambda mod, v: getattr(mod, v)(),
    # the release files (van_*.pth.tar) are timm train.py checkpoints: weights under 'state_dict'
    save=lambda sd, path, v: save_torch({"epoch": 310, "arch": v, "state_dict": sd}, path),
    notes="release format: timm train.py checkpoint, weights under 'state_dict'", official_files="`models/`")
