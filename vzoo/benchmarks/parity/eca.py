"""ECA-Net (``BangguWu/ECANet``, ``models/eca_resnet.py`` and ``models/eca_mobilenetv2.py``)."""
from vzoo.models.eca import RELEASED_K_SIZE

from .._official import import_official
from ._core import Family, save_torch


def _build(mod, variant):
    if variant == "eca_mobilenetv2":
        return mod.eca_mobilenet_v2()  # kernel 1 below 96 channels, 3 from 96 on, as released (k13)
    return getattr(mod, variant)(k_size=list(RELEASED_K_SIZE[variant]))  # main.py --ksize of the released file


SPEC = Family(
    repo="BangguWu/ECANet", candidates=("models/eca_resnet.py",),
    variants=("eca_resnet18", "eca_resnet34", "eca_resnet50", "eca_resnet101", "eca_resnet152", "eca_mobilenetv2"),
    load=lambda root, rel: import_official(root, "models"), build_official=_build,
    # main.py wraps the model in DataParallel and saves {'epoch', 'arch', 'state_dict', 'best_prec1', 'optimizer'}
    save=lambda sd, path, v: save_torch({"epoch": 100, "arch": v, "best_prec1": 77.42,
                                         "state_dict": {"module." + k: t for k, t in sd.items()}}, path),
    notes="release format: main.py checkpoint, DataParallel 'module.' keys under 'state_dict'",
    official_files="`models/`")
