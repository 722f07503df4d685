"""OverLoCK (``LMMMEng/OverLoCK``, ``models/overlock.py``), with the brute-force ``na2d_av`` stand-in of
the ``overlock`` benchmark suite (natten 0.17, which the release imports, cannot be installed)."""
from ..overlock import load_official_overlock, official_model
from ._core import Family, save_torch

SPEC = Family(
    repo="LMMMEng/OverLoCK", candidates=("models/overlock.py",),
    variants=("overlock_xt", "overlock_t", "overlock_s", "overlock_b",
              "overlock_xt_reparam", "overlock_t_reparam", "overlock_s_reparam", "overlock_b_reparam"),
    load=lambda root, rel: load_official_overlock(root), build_official=official_model, batch=1,
    # the release files (overlock_*_in1k_224[_reparam].pth) are mmengine-style checkpoints: weights under 'state_dict'
    save=lambda sd, path, v: save_torch({"state_dict": sd, "meta": {"arch": v}}, path),
    notes="release format: weights under 'state_dict'; official na2d_av: a gather-based stand-in of natten 0.17's",
    official_files="`models/overlock.py` (needs `einops` and `mmengine`; natten 0.17's `na2d_av` gets a "
                   "brute-force stand-in)")
