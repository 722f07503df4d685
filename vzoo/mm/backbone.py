"""``VZooBackbone``: any timm-registered model (vzoo's or timm's own) as an mmdet/mmseg backbone."""
from __future__ import annotations

import math
import os
from typing import Optional, Sequence, Tuple

import timm
import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

import vzoo  # noqa: F401  (registers vzoo's models with timm)
from vzoo.models import _gcvit
from vzoo.models._builder import CheckpointError, load_checkpoint_file

__all__ = ["VZooBackbone"]

# Models whose timm implementation is sized at construction: what makes them accept any input size.
_INPUT_SIZE_FIXES = (_gcvit.make_input_size_agnostic,)


class VZooBackbone(BaseModule):
    """Build ``timm.create_model(model, features_only=True, out_indices=...)`` and return a tuple of
    NCHW feature maps, one per entry of ``out_indices``.

    Args:
        model: a timm model name (``timm.list_models()``; vzoo's are there once vzoo is imported).
        out_indices: which feature levels to return (indices into the model's ``feature_info``).
        frozen_stages: freeze the stem and the stages up to this index (-1: nothing frozen).
        norm_eval: keep BatchNorm layers in eval mode while training.
        pretrained: load the official ImageNet weights of ``model`` as ``timm.create_model(model,
            pretrained=True)`` does (vzoo's families: downloaded, verified, converted and cached by
            :mod:`vzoo.hub`; timm's own: timm's Hugging Face loading), when :meth:`init_weights` runs.
        init_cfg: ``dict(type='Pretrained', checkpoint=...)`` where ``checkpoint`` is a model name (the
            same as ``pretrained=True``; timm's ``name.tag`` too), a URL (fetched as the index's would
            be: ``pretrained_cfg_overlay=dict(url=URL)``) or a file, loaded the way
            ``timm.create_model(model, pretrained=True, pretrained_cfg_overlay=dict(file=PATH))`` does
            (the family's ``checkpoint_filter_fn`` maps official keys; a file that misses backbone
            weights is an error). ``prefix='backbone.'`` picks the backbone out of a detector/segmentor
            checkpoint file: a classifier's keys (loaded as above) or a VZooBackbone's own
            feature-model keys (all of them must be there).
        pad_to: inputs are zero-padded (bottom/right) to a multiple of this and every output is
            cropped back to ``ceil(size / stride)``; ``None`` uses the model's largest reduction.
        **model_kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``).
    """

    def __init__(
            self,
            model: str,
            out_indices: Sequence[int] = (0, 1, 2, 3),
            frozen_stages: int = -1,
            norm_eval: bool = False,
            init_cfg: Optional[dict] = None,
            pad_to: Optional[int] = None,
            pretrained: bool = False,
            **model_kwargs,
    ):
        super().__init__(init_cfg=None)  # loading is ours, see init_weights
        if model not in timm.list_models():
            raise ValueError(f"VZooBackbone: model={model!r} is not registered with timm; "
                             f"see timm.list_models() (vzoo's models: vzoo.list_vzoo_models())")
        if init_cfg is not None and init_cfg.get("type") != "Pretrained":
            raise ValueError(f"VZooBackbone: init_cfg type must be 'Pretrained' or init_cfg=None, "
                             f"got {init_cfg.get('type')!r}")
        self.model_name = model
        self.model_kwargs = dict(model_kwargs)
        if pretrained and init_cfg:
            raise ValueError("VZooBackbone: pass pretrained=True or init_cfg, not both "
                             "(init_cfg=dict(type='Pretrained', checkpoint=MODEL_NAME) is pretrained=True)")
        self.pretrained_cfg = dict(init_cfg) if init_cfg else (dict(type="Pretrained", checkpoint=model)
                                                               if pretrained else None)
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        self.body = timm.create_model(model, features_only=True, out_indices=self.out_indices, **model_kwargs)
        for fix in _INPUT_SIZE_FIXES:
            fix(self.body)
        info = self.body.feature_info
        self.channels: Tuple[int, ...] = tuple(info.channels())
        self.strides: Tuple[int, ...] = tuple(info.reduction())
        self.pad_to = pad_to or max(self.strides)
        # every feature level of the whole model (the features wrapper keeps only out_indices)
        with torch.device("meta"):
            all_info = timm.create_model(model, **model_kwargs).feature_info
        self._stage_modules = [d["module"] for d in all_info]
        if frozen_stages >= len(self._stage_modules):
            raise ValueError(f"VZooBackbone: frozen_stages={frozen_stages} but {model} has "
                             f"{len(self._stage_modules)} stages; allowed: -1 .. {len(self._stage_modules) - 1}")
        self._freeze_stages()

    # ---- weights -------------------------------------------------------------------------
    def init_weights(self):
        if not self.pretrained_cfg:
            return  # timm initialised the model at construction
        ckpt = self.pretrained_cfg["checkpoint"]
        prefix = self.pretrained_cfg.get("prefix")
        if prefix:
            sd = load_checkpoint_file(ckpt)
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            if not sd:
                raise CheckpointError(f"VZooBackbone: no key of {ckpt!r} starts with prefix={prefix!r}")
            overlay = dict(state_dict=sd)
            body_sd = self.body.state_dict()
            missing = [k for k in body_sd if k not in sd]
            if missing and len(missing) < len(body_sd) / 2:
                raise CheckpointError(
                    f"VZooBackbone: {ckpt!r} (prefix {prefix!r}) holds {self.model_name}'s feature-model weights "
                    f"but misses {len(missing)} of them: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
            if not missing:
                # a VZooBackbone's own weights (a detector/segmentor trained with this backbone): the
                # feature model's keys as they are; stages past the last out index are not needed
                self.body.load_state_dict({k: sd[k] for k in body_sd})
                print_log(f"VZooBackbone: loaded {self.model_name} from {ckpt} (prefix {prefix!r})", logger="current")
                self._is_init = True
                return
        elif "://" in ckpt:
            overlay = dict(url=ckpt)
        elif not os.path.exists(ckpt) and timm.is_model(ckpt):
            overlay = None  # a model name: its published weights (timm's name.tag picks one of timm's)
            if ckpt.split(".")[0] != self.model_name:
                raise ValueError(f"VZooBackbone: init_cfg checkpoint={ckpt!r} names another model than "
                                 f"model={self.model_name!r}; allowed: {self.model_name!r}[.tag], a URL or a file")
        else:
            overlay = dict(file=ckpt)
        # Loaded exactly as timm.create_model(name, pretrained=True) loads it: family filter fn and a
        # strict key check (timm loads features_only models non-strictly, so that goes second).
        name = ckpt if overlay is None else self.model_name
        full = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **self.model_kwargs)
        loaded = timm.create_model(self.model_name, features_only=True, out_indices=self.out_indices, pretrained=True,
                                   pretrained_cfg_overlay=dict(state_dict=full.state_dict()), **self.model_kwargs)
        self.body.load_state_dict(loaded.state_dict())
        print_log(f"VZooBackbone: loaded {self.model_name} from {ckpt}", logger="current")
        self._is_init = True

    # ---- freezing ------------------------------------------------------------------------
    def _frozen_params(self):
        """Names of the parameters of the stem and of stages 0..frozen_stages, in registration order.
        timm's flattening feature wrapper renames ``stages.1`` to ``stages_1``: both are matched."""
        if self.frozen_stages < 0:
            return []
        names = [n for n, _ in self.body.named_parameters()]
        end = len(names)
        if self.frozen_stages + 1 < len(self._stage_modules):
            nxt = self._stage_modules[self.frozen_stages + 1]
            starts = tuple({nxt + ".", nxt.replace(".", "_") + ".", "model." + nxt + "."})
            end = next((i for i, n in enumerate(names) if n.startswith(starts)), len(names))
        return names[:end]

    def _freeze_stages(self):
        frozen = set(self._frozen_params())
        for name, p in self.body.named_parameters():
            if name in frozen:
                p.requires_grad_(False)
        self._frozen_modules = [m for n, m in self.body.named_modules()
                                if len(list(m.children())) == 0 and any(f.startswith(n + ".") for f in frozen)]

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            for m in self._frozen_modules:
                m.eval()
            if self.norm_eval:
                for m in self.modules():
                    if isinstance(m, _BatchNorm):
                        m.eval()
        return self

    # ---- forward -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if x.ndim != 4:
            raise ValueError(f"VZooBackbone: expected an NCHW batch, got shape {tuple(x.shape)}")
        H, W = x.shape[-2:]
        pad_h, pad_w = (-H) % self.pad_to, (-W) % self.pad_to
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        outs = []
        for feat, ch, stride in zip(self.body(x), self.channels, self.strides):
            if feat.ndim == 4 and feat.shape[1] != ch and feat.shape[-1] == ch:
                feat = feat.permute(0, 3, 1, 2)  # NHWC models
            if pad_h or pad_w:
                feat = feat[..., :math.ceil(H / stride), :math.ceil(W / stride)]
            outs.append(feat.contiguous())
        return tuple(outs)
