"""The restoration model for mmengine: any timm-registered image-to-image network, L1 loss, tiling.

``model = dict(type='SRModel', arch='hat_s_x4', arch_kwargs=dict(...))`` builds the network with
``timm.create_model`` (vzoo's HAT variants are registered there by ``import vzoo``). The network
takes an NCHW RGB batch in [0, 1] and returns it ``upscale`` times larger; it must expose
``upscale`` (and vzoo's say ``vzoo_task = 'image-to-image'``).
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseDataPreprocessor, BaseModel

from ..registry import MODELS, build_in_vzoo_scope
from .imresize import imresize
from ...layers.tiling import tile_layout, tiled_forward  # noqa: F401  (re-exported: the task's public API)

__all__ = ["SRDataPreprocessor", "SRModel", "tiled_forward", "tile_layout"]


@MODELS.register_module()
class SRDataPreprocessor(BaseDataPreprocessor):
    """Moves the batch to the device and turns the LR images into one float NCHW batch in [0, 1].

    ``inputs`` may be a list of CHW tensors (mmengine's ``pseudo_collate``) or a stacked tensor,
    uint8 (divided by 255) or float (taken as [0, 1]). Images of different sizes cannot share a
    batch (use ``batch_size=1`` for full-image evaluation).
    """

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        inputs = data["inputs"]
        if isinstance(inputs, (list, tuple)):
            shapes = {tuple(t.shape) for t in inputs}
            if len(shapes) > 1:
                raise ValueError(f"SRDataPreprocessor: LR images of different sizes {sorted(shapes)} in one batch; "
                                 "use batch_size=1 for full-image evaluation")
            inputs = torch.stack(list(inputs))
        if inputs.dtype == torch.uint8:
            inputs = inputs.float() / 255.0
        else:
            inputs = inputs.float()
        return dict(inputs=inputs, data_samples=data.get("data_samples"))


@MODELS.register_module()
class SRModel(BaseModel):
    """Super-resolution with a timm image-to-image network.

    Args:
        arch: a timm model name (``'hat_s_x4'``, ...).
        arch_kwargs: extra arguments of ``timm.create_model`` (e.g. a shrunk HAT: ``embed_dim``,
            ``depths``, ``num_heads``, ``window_size``).
        pretrained: a local weight file loaded through timm (official formats go through the
            family's ``checkpoint_filter_fn``), or None.
        loss_weight: weight of the L1 loss.
        residual: ``'none'`` (the network's output is the SR image, as HAT is published) or
            ``'bicubic'`` (the network predicts the difference to the MATLAB-bicubic upsampled input;
            faster to learn, for small demos). A network that adds a data mean back at its output
            (HAT's ``mean`` buffer) has it subtracted then, and a network trained from scratch has its
            last convolution zeroed, so that training starts from the bicubic image itself.
        tile: ``dict(size=..., overlap=...)`` (LR pixels) for tiled inference in ``predict``; None or
            ``size=None`` processes whole images (configs keep ``dict(size=None, overlap=...)`` so that
            ``--cfg-options model.tile.size=256`` switches tiling on).
        data_preprocessor: defaults to :class:`SRDataPreprocessor`.
    """

    def __init__(self, arch: str, arch_kwargs: Optional[dict] = None, pretrained: Optional[str] = None,
                 loss_weight: float = 1.0, residual: str = "none", tile: Optional[dict] = None,
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None, init_cfg: Optional[dict] = None):
        if data_preprocessor is None:
            data_preprocessor = dict(type="SRDataPreprocessor")
        if isinstance(data_preprocessor, dict):
            data_preprocessor = build_in_vzoo_scope(MODELS, data_preprocessor)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if residual not in ("none", "bicubic"):
            raise ValueError(f"SRModel: residual must be 'none' or 'bicubic', got {residual!r}")
        if tile is not None:
            if not isinstance(tile, dict) or set(tile) - {"size", "overlap"}:
                raise ValueError(f"SRModel: tile must be None or dict(size=int or None, overlap=int), got {tile!r}")
            size, overlap = tile.get("size"), tile.get("overlap", 0)
            if size is not None and (not isinstance(size, int) or size < 1 or not isinstance(overlap, int)
                                     or not 0 <= overlap < size):
                raise ValueError(f"SRModel: tile needs size >= 1 (or None: no tiling) and 0 <= overlap < size, "
                                 f"got {tile!r}")
            if size is None:
                tile = None
        self.arch, self.residual, self.loss_weight = arch, residual, float(loss_weight)
        self.tile = dict(tile) if tile is not None else None
        self.net = self._build_net(arch, dict(arch_kwargs or {}), pretrained)
        self.scale = int(self.net.upscale)
        if residual == "bicubic" and pretrained is None:
            last = [m for m in self.net.modules() if isinstance(m, nn.Conv2d)][-1]
            nn.init.zeros_(last.weight)  # residual 0 at the start: the output is the bicubic image
            if last.bias is not None:
                nn.init.zeros_(last.bias)

    @staticmethod
    def _build_net(arch: str, arch_kwargs: dict, pretrained: Optional[str]) -> nn.Module:
        import timm
        import vzoo  # noqa: F401  (registers vzoo's models with timm)
        if not isinstance(arch, str):
            raise TypeError(f"SRModel: arch must be a timm model name (str), got {type(arch).__name__}")
        if not timm.is_model(arch):
            raise ValueError(f"SRModel: arch {arch!r} is not a registered timm model "
                             f"(image-to-image models: {timm.list_models('hat*')})")
        kwargs = dict(arch_kwargs)
        if pretrained:
            kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=pretrained))
        net = timm.create_model(arch, **kwargs)
        task = getattr(net, "vzoo_task", None)
        if task not in (None, "image-to-image") or not isinstance(getattr(net, "upscale", None), int):
            raise ValueError(f"SRModel: arch {arch!r} is not an image-to-image model with an integer `upscale` "
                             f"(vzoo_task={task!r})")
        net.is_init = True  # timm initialised (or loaded) it; mmengine's init_weights must not touch it
        return net

    # ------------------------------------------------------------------ forward
    def _sr(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if self.residual == "bicubic":
            mean = getattr(self.net, "mean", None)  # HAT-style nets add the data mean back at the end
            if isinstance(mean, torch.Tensor):
                out = out - mean.to(out.dtype)
            out = out + imresize(x, scale=self.scale)
        return out

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        """SR of an NCHW [0, 1] batch, tiled when ``tile`` is set."""
        if self.tile is None:
            return self._sr(x)
        return tiled_forward(self._sr, x, self.scale, self.tile["size"], self.tile.get("overlap", 0))

    def forward(self, inputs: torch.Tensor, data_samples: Optional[list] = None, mode: str = "tensor"):
        if mode == "loss":
            if not data_samples:
                raise ValueError("SRModel: mode='loss' needs data_samples with gt_img")
            out = self._sr(inputs)
            gt = torch.stack([s.gt_img for s in data_samples]).to(out.device)
            gt = gt.float() / 255.0 if gt.dtype == torch.uint8 else gt.float()
            if gt.shape != out.shape:
                raise ValueError(f"SRModel: output {tuple(out.shape)} and ground truth {tuple(gt.shape)} differ")
            return dict(loss=self.loss_weight * F.l1_loss(out, gt.to(out.dtype)))
        if mode == "predict":
            out = self.restore(inputs).float()
            samples = data_samples if data_samples is not None else [None] * out.shape[0]
            results = []
            for i, s in enumerate(samples):
                if s is None:
                    from mmengine.structures import BaseDataElement
                    s = BaseDataElement(metainfo=dict(scale=self.scale))
                s.pred_img = out[i].detach().cpu()
                if "gt_img" in s:
                    s.gt_img = s.gt_img.cpu()
                results.append(s)
            return results
        if mode == "tensor":
            return self.restore(inputs) if not self.training else self._sr(inputs)
        raise ValueError(f"SRModel: mode must be 'loss', 'predict' or 'tensor', got {mode!r}")
