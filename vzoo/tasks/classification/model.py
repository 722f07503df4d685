"""The classification model for mmengine: any timm-registered classifier (vzoo's or timm's own).

``model = dict(type='TimmClassifier', arch='davit_tiny', num_classes=1000, arch_kwargs=dict(drop_path_rate=0.1),
mixup=dict(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1))``. Training uses timm's ``Mixup``
(Mixup/CutMix on the batch, with label smoothing folded into the soft targets) and
``SoftTargetCrossEntropy``; without ``mixup`` it is cross-entropy with ``label_smoothing``.
"""
from __future__ import annotations

from typing import List, Optional

import timm
import torch
import torch.nn.functional as F
from mmengine.model import BaseDataPreprocessor, BaseModel
from mmengine.structures import BaseDataElement
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy

import vzoo  # noqa: F401  (registers vzoo's models with timm)

from ..registry import MODELS, build_in_vzoo_scope

__all__ = ["ClsDataPreprocessor", "TimmClassifier"]


@MODELS.register_module()
class ClsDataPreprocessor(BaseDataPreprocessor):
    """Moves the batch to the device and stacks the images (float CHW tensors, already normalised by
    the timm transform) into one NCHW batch."""

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        inputs = data["inputs"]
        if isinstance(inputs, (list, tuple)):
            inputs = torch.stack(list(inputs))
        return dict(inputs=inputs.float(), data_samples=data.get("data_samples"))


def _build_preprocessor(cfg):
    if cfg is None:
        return ClsDataPreprocessor()
    if isinstance(cfg, dict):
        return build_in_vzoo_scope(MODELS, cfg)  # vzoo scope pinned: works whatever the default scope
    return cfg


@MODELS.register_module()
class TimmClassifier(BaseModel):
    """Args:
        arch: a timm model name (``timm.list_models()``; vzoo's are there once vzoo is imported).
        num_classes: classifier size (``None``: the model's default).
        arch_kwargs: more ``timm.create_model`` arguments (``drop_path_rate`` ...).
        pretrained: a local file loaded as ``timm.create_model(arch, pretrained=True,
            pretrained_cfg_overlay=dict(file=pretrained))`` (official format through the family's
            ``checkpoint_filter_fn``; a classifier of another size is re-initialised by timm).
        label_smoothing: used when ``mixup`` is None.
        mixup: ``timm.data.Mixup`` arguments (``mixup_alpha``, ``cutmix_alpha``, ``prob``,
            ``switch_prob``, ``mode``, ``label_smoothing``); ``None``: no Mixup/CutMix.
    """

    def __init__(self, arch: str, num_classes: Optional[int] = None, arch_kwargs: Optional[dict] = None,
                 pretrained: Optional[str] = None, label_smoothing: float = 0.0, mixup: Optional[dict] = None,
                 data_preprocessor=None, init_cfg=None):
        super().__init__(data_preprocessor=_build_preprocessor(data_preprocessor), init_cfg=init_cfg)
        if arch not in timm.list_models():
            raise ValueError(f"TimmClassifier: arch={arch!r} is not registered with timm; see timm.list_models()")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"TimmClassifier: label_smoothing must be in [0, 1), got {label_smoothing!r}")
        kwargs = dict(arch_kwargs or {})
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        if pretrained:
            kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=pretrained))
        self.arch = arch
        self.model = timm.create_model(arch, **kwargs)
        if kwargs.get("pretrained"):
            self.model.is_init = True  # loaded: the runner's init_weights (timm's re-init) must not touch it
        self.num_classes = self.model.num_classes
        self.label_smoothing = label_smoothing
        self.mixup_cfg = dict(mixup) if mixup else None
        self.mixup = None
        if self.mixup_cfg:
            self.mixup = Mixup(**dict(self.mixup_cfg, num_classes=self.num_classes))
            self.soft_ce = SoftTargetCrossEntropy()

    def forward(self, inputs: torch.Tensor, data_samples: Optional[List[BaseDataElement]] = None,
                mode: str = "tensor"):
        if mode == "tensor":
            return self.model(inputs)
        if mode == "loss":
            return self.loss(inputs, data_samples)
        if mode == "predict":
            return self.predict(inputs, data_samples)
        raise ValueError(f"TimmClassifier: mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

    @staticmethod
    def _targets(data_samples, device) -> torch.Tensor:
        return torch.stack([torch.as_tensor(s.gt_label).reshape(()) for s in data_samples]).long().to(device)

    def loss(self, inputs, data_samples) -> dict:
        inputs, target = self.mix_batch(inputs, self._targets(data_samples, inputs.device))
        return dict(loss=self.classification_loss(self.model(inputs), target))

    def mix_batch(self, inputs: torch.Tensor, target: torch.Tensor):
        """Mixup/CutMix of a training batch (when configured and the batch is even): (inputs, soft targets);
        otherwise the batch and its class indices unchanged."""
        if self.mixup is not None and inputs.shape[0] % 2 == 0:
            return self.mixup(inputs, target)
        return inputs, target

    def classification_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Soft-target cross-entropy for mixed targets, else cross-entropy with label smoothing."""
        if target.dim() == 2:
            return self.soft_ce(logits, target)
        smoothing = self.mixup_cfg.get("label_smoothing", 0.1) if self.mixup_cfg else self.label_smoothing
        return F.cross_entropy(logits, target, label_smoothing=smoothing)

    def predict(self, inputs, data_samples=None) -> List[BaseDataElement]:
        scores = self.model(inputs).float().softmax(dim=-1)
        if data_samples is None:
            data_samples = [BaseDataElement() for _ in range(inputs.shape[0])]
        for s, sc in zip(data_samples, scores):
            s.set_field(sc, "pred_score")
            s.set_field(sc.argmax(), "pred_label")
        return data_samples
