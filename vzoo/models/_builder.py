"""What every vzoo family uses to build its models: safe checkpoint reading, key checking, the one
call into timm's ``build_model_with_cfg``, and the defaults of the families' pretrained cfgs.

Loading never executes pickled code: ``.safetensors`` files are read as such and everything else
with ``torch.load(weights_only=True)``. A pretrained file is named with timm's own mechanism,
``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH))``; without a file,
``pretrained=True`` fetches the official release through :func:`vzoo.hub.fetch_pretrained` (the
index's URL, or the overlay's ``url`` / ``hf_hub_id``), which downloads, verifies, converts and caches it.
"""
from __future__ import annotations

import fnmatch
import os
import pickle
import re
import zipfile
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

__all__ = [
    "CheckpointError", "load_checkpoint_file", "unwrap_state_dict", "strip_module_prefix", "upgrade_renamed_keys",
    "check_state_dict", "build_vzoo_model", "vzoo_cfg", "official_notes", "list_vzoo_models", "model_family",
]

# Containers that training scripts wrap weights in, in the order they are preferred
# (EMA weights first, as timm and BasicSR do).
STATE_DICT_KEYS = ("state_dict_ema", "model_ema", "params_ema", "state_dict", "model", "params")

# vzoo's own renamed state-dict keys (old → new), so that checkpoints saved before a rename still load:
# PyramidNet's ``extra_norms`` became ``feature_transforms`` (it holds MOAT's GELUs too, not only norms)
_RENAMED_KEYS = ((re.compile(r"(^|\.)extra_norms\."), r"\1feature_transforms."),)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model it is loaded into."""


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def unwrap_state_dict(checkpoint: Any, path: str = "<checkpoint>") -> Dict[str, torch.Tensor]:
    """Return the tensor dict inside ``checkpoint`` (a bare state dict or a training checkpoint),
    with a DataParallel ``module.`` prefix removed."""
    sd = checkpoint
    if isinstance(checkpoint, dict) and not _is_tensor_dict(checkpoint):
        for key in STATE_DICT_KEYS:
            if _is_tensor_dict(checkpoint.get(key)):
                sd = checkpoint[key]
                break
    if not _is_tensor_dict(sd):
        found = sorted(checkpoint)[:10] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"{path!r} holds no state dict: expected a dict of tensors, or one under any of the keys "
            f"{list(STATE_DICT_KEYS)}; found {found}")
    return strip_module_prefix(sd)


def strip_module_prefix(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``state_dict`` without the ``module.`` prefix that DataParallel gives every key (a copy)."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def upgrade_renamed_keys(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``state_dict`` with keys that vzoo has since renamed under their new names (at any depth, so a
    detector's ``backbone.body.model.extra_norms.0.weight`` too); other keys unchanged."""
    out = {}
    for k, v in state_dict.items():
        for old, new in _RENAMED_KEYS:
            k = old.sub(new, k)
        out[k] = v
    return out


def load_checkpoint_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Dict[str, torch.Tensor]:
    """Read a weights file without executing pickled code and return its state dict.

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError` for a file that is
    corrupt, truncated, needs arbitrary code to unpickle, or holds no state dict.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint file {path!r} is a directory, not a weights file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file {path!r} does not exist")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        try:
            obj = load_file(path, device=str(map_location))
        except Exception as e:  # safetensors raises its own SafetensorError for any bad header
            raise CheckpointError(f"{path!r} is not a readable safetensors file ({type(e).__name__}: {e})") from e
    else:
        try:
            obj = torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:
            raise CheckpointError(
                f"{path!r} cannot be loaded with weights_only=True (it holds pickled objects other than "
                f"tensors and plain containers): {str(e).splitlines()[0]}. vzoo never unpickles code from a "
                f"weights file; re-save its state dict with torch.save(model.state_dict(), path).") from e
        except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
            raise CheckpointError(
                f"{path!r} is corrupt or not a PyTorch/safetensors weights file "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    return upgrade_renamed_keys(unwrap_state_dict(obj, path))


def _fmt_keys(keys: List[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(
        state_dict: Dict[str, torch.Tensor],
        model: nn.Module,
        ignore: Iterable[str] = (),
        name: str = "checkpoint",
        hint: str = "Is it the right variant? Official releases are converted with tools/convert.py.",
) -> None:
    """Raise :class:`CheckpointError` naming every missing, unexpected or mis-shaped key.

    The one key check of vzoo: pretrained weights (:func:`build_vzoo_model`) and the training runner's
    checkpoints (:class:`vzoo.tasks.engine.VZooRunner`) both go through it. ``ignore`` holds fnmatch
    patterns of keys not to compare (e.g. the classifier, which timm drops or re-initialises itself
    when ``num_classes`` differs); ``name`` and ``hint`` open and close the message.
    """
    ignore = list(ignore)

    def skip(k: str) -> bool:
        return any(fnmatch.fnmatchcase(k, p) for p in ignore)

    own = {k: v for k, v in model.state_dict().items() if not skip(k)}
    given = {k: v for k, v in state_dict.items() if not skip(k)}
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    shapes = sorted(  # a runner checkpoint may hold a non-tensor entry (a module's extra state): no shape to check
        f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(given)
        if hasattr(given[k], "shape") and tuple(given[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_fmt_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_fmt_keys(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {_fmt_keys(shapes)}")
        raise CheckpointError(
            f"{name} does not fit {type(model).__name__}: " + "; ".join(parts) + (". " + hint if hint else "."))


def _classifier_patterns(pretrained_cfg: Dict[str, Any]) -> List[str]:
    classifier = pretrained_cfg.get("classifier") or ()
    if isinstance(classifier, str):
        classifier = (classifier,)
    return [f"{c}.*" for c in classifier]


def build_vzoo_model(
        model_cls: Callable[..., nn.Module],
        variant: str,
        pretrained: bool = False,
        checkpoint_filter_fn: Optional[Callable[[Dict[str, torch.Tensor], nn.Module], Dict[str, torch.Tensor]]] = None,
        default_feature_cfg: Optional[Dict[str, Any]] = None,
        **kwargs,
) -> nn.Module:
    """timm's ``build_model_with_cfg`` with vzoo's loading rules.

    - ``pretrained=True`` reads a local file (``pretrained_cfg_overlay=dict(file=PATH)``) or takes a
      state dict; without either, the converted file cached by :func:`vzoo.hub.fetch_pretrained`
      (downloaded first where needed) is read. Files are read by :func:`load_checkpoint_file` (no
      pickled code).
    - the family's ``checkpoint_filter_fn`` maps official key names onto vzoo's, then every key is
      checked, so a wrong or damaged checkpoint fails with the keys named instead of loading partly.
    - ``features_only`` goes through the model's ``forward_intermediates`` (timm's getter);
      ``out_indices`` is taken out of ``kwargs`` even without ``features_only``.
    """
    from timm.models import build_model_with_cfg

    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    if pretrained:
        file = overlay.pop("file", None)
        if not file and overlay.get("state_dict") is None:
            # timm would fetch a url / hf_hub_id itself, but as a timm-format file: official releases
            # need the family's reader and filter first, so vzoo fetches and converts them (vzoo.hub)
            from vzoo.hub import fetch_pretrained
            file = os.fspath(fetch_pretrained(variant, url=overlay.get("url"), hf_hub_id=overlay.get("hf_hub_id"),
                                              hf_hub_filename=overlay.get("hf_hub_filename"), model_kwargs=kwargs))
        if file:
            overlay["state_dict"] = load_checkpoint_file(file)
        source = file or "state dict"

        def filter_fn(state_dict, model):
            if checkpoint_filter_fn is not None:
                state_dict = checkpoint_filter_fn(state_dict, model)
            check_state_dict(state_dict, model, ignore=_classifier_patterns(model.pretrained_cfg),
                             name=f"checkpoint {source!r} for {variant}")
            return state_dict
    else:
        filter_fn = checkpoint_filter_fn

    # the family's ``default_feature_cfg``, then the user's ``feature_cfg=`` (timm's way to pass them) on top
    feature_cfg = {"feature_cls": "getter", **(default_feature_cfg or {}), **(kwargs.pop("feature_cfg", None) or {})}
    if "out_indices" in kwargs:
        feature_cfg["out_indices"] = kwargs.pop("out_indices")
    return build_model_with_cfg(
        model_cls, variant, pretrained,
        pretrained_filter_fn=filter_fn,
        pretrained_cfg_overlay=overlay or None,
        feature_cfg=feature_cfg,
        **kwargs,
    )


def official_notes(source: str, top1: Optional[float] = None, params_m: Optional[float] = None,
                   gflops: Optional[float] = None, size: int = 224) -> Tuple[str, ...]:
    """The ``notes`` of a default cfg: the release's ImageNet-1k top-1 and size, as ``source`` states them."""
    notes = []
    if top1 is not None:
        notes.append(f"official ImageNet-1k top-1 {top1}% at {size} ({source})")
    if params_m is not None:
        notes.append(f"official params {params_m} M" + (f", {gflops} GFLOPs" if gflops is not None else ""))
    return tuple(notes)


def vzoo_cfg(**kwargs) -> Dict[str, Any]:
    """A default (pretrained) cfg: timm's ImageNet-1k defaults (224×224, 7×7 final map, crop 0.875,
    bicubic, ``IMAGENET_DEFAULT_MEAN``/``STD``, classifier ``head``), overridden by ``kwargs``."""
    return {
        "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 0.875,
        "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "classifier": "head", "notes": (), **kwargs,
    }


def list_vzoo_models(pattern: str = "*") -> List[str]:
    """Every model that vzoo registers with timm, found from timm's registry."""
    import timm
    from timm.models import model_entrypoint
    return sorted(
        n for n in timm.list_models(pattern)
        if model_entrypoint(n).__module__.startswith("vzoo."))


def model_family(name: str) -> str:
    """The vzoo family (its module in ``vzoo.models``) that registers ``name``."""
    from timm.models import model_entrypoint
    return model_entrypoint(name).__module__.rsplit(".", 1)[-1]
