"""HAT (``XPixelGroup/HAT``, ``hat/archs/hat_arch.py``), imported by the ``hat`` benchmark suite's loader
and run as the official test runs it."""
import torch
import torch.nn.functional as F

from ..hat import _padded, load_official_hat, official_kwargs
from ._core import Family, save_torch

_WINDOW = 16


def _run_official(model, variant):
    # the official test: reflect-pad to the window, crop the output
    return _padded(model, _WINDOW, int(variant.rsplit("_x", 1)[1]))


def _deep_features(official, ours, x):
    """The residual groups' output (after the final LayerNorm, before ``conv_after_body`` and the long skip
    from the shallow features, which dominate the image): where the attention blocks act."""
    h, w = x.shape[-2:]
    xp = F.pad(x, (0, (-w) % _WINDOW, 0, (-h) % _WINDOW), mode="reflect")
    ref = official.forward_features(official.conv_first((xp - official.mean) * official.img_range))[..., :h, :w]
    out = ours.forward_intermediates(x, indices=[len(ours.groups) - 1], norm=True, intermediates_only=True)[-1]
    return [("deep features", ref, out)]


SPEC = Family(
    repo="XPixelGroup/HAT", candidates=("hat/archs/hat_arch.py",),
    variants=("hat_s_x2", "hat_s_x3", "hat_s_x4", "hat_x2", "hat_x3", "hat_x4"),
    extra_variants=("hat_l_x2", "hat_l_x3", "hat_l_x4"),
    load=lambda root, rel: load_official_hat(root), build_official=lambda cls, v: cls(**official_kwargs(v)),
    official_run=_run_official, inner=_deep_features, img_size=48, batch=1,
    make_input=lambda v, b, s, g: torch.rand(b, 3, s, s, generator=g),
    save=lambda sd, path, v: save_torch({"params_ema": sd}, path),
    notes="release format: BasicSR, weights under 'params_ema'; the official model run on the input reflect-padded "
          "to the window and its output cropped, as its test does; 'deep features' rows compare the residual "
          "groups' output (after the last LayerNorm), which the shallow-feature skip dwarfs in the image",
    official_files="`hat/archs/hat_arch.py` (needs `einops`; BasicSR's registry, which the model does not use, "
                   "gets a stand-in)")
