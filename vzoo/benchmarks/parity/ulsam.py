"""ULSAM (``Nandan91/ULSAM``, ``ulsam.py``): released as a module only, loaded through
``vzoo.layers.ULSAM.load_state_dict``; the attention maps are compared too."""
import torch

from .._official import import_official
from ._core import Family, save_torch

_CHANNELS = 64


def _load(root, rel):
    # ulsam.py calls torch.set_default_tensor_type(torch.cuda.FloatTensor) when imported (it was written
    # for a GPU run); on a CPU that call fails and it would put every later tensor on the GPU. The call
    # changes no arithmetic of the module, so it is skipped while the file is imported.
    return import_official(root, "ulsam", patches=[(torch, "set_default_tensor_type", lambda *a, **k: None)])


def _groups(variant: str) -> int:
    return int(variant.rsplit("_g", 1)[1])


def _attention_maps(official, ours, x):
    """ULSAM(x) = x * A + x with A a softmax over all H*W positions (entries ~ 1/(H*W)): the identity term
    dominates the output, so the attention maps themselves are compared too — the official ones as the
    outputs of each subspace's ``softmax`` module (B, 1, H*W), vzoo's from :meth:`ULSAM.attention`."""
    maps = []
    hooks = [sub.softmax.register_forward_hook(lambda m, i, o: maps.append(o)) for sub in official.subspaces]
    try:
        official(x)
    finally:
        for h in hooks:
            h.remove()
    ref = torch.cat(maps, 1).view(x.shape[0], len(maps), *x.shape[2:])
    return [("attention maps", ref, ours.attention(x))]


def _load_vzoo(variant, path):
    from vzoo.layers.ulsam import ULSAM
    from vzoo.models import load_checkpoint_file
    m = ULSAM(_CHANNELS, _groups(variant))
    m.load_state_dict(load_checkpoint_file(path))  # the module's own loader converts the official layout
    return m


SPEC = Family(
    repo="Nandan91/ULSAM", candidates=("ulsam.py",),
    variants=("ulsam_g1", "ulsam_g2", "ulsam_g4", "ulsam_g8", "ulsam_g16"),
    load=_load, build_official=lambda mod, v: mod.ULSAM(_CHANNELS, _CHANNELS, 56, 56, _groups(v)), img_size=56,
    make_input=lambda v, b, s, g: torch.randn(b, _CHANNELS, s, s, generator=g),
    load_vzoo=_load_vzoo, save=lambda sd, path, v: save_torch(sd, path), inner=_attention_maps,
    notes=f"module only (no released networks or weights): {_CHANNELS} channels, bare state dict; "
          f"'attention maps' rows compare the g softmax maps A, whose term x * A is ~1/(H*W) of the output",
    official_files="`ulsam.py`")
