"""Classification task for mmengine: any timm classifier (``TimmClassifier``: Mixup/CutMix, label
smoothing), an ImageNet-style folder dataset, timm's ``create_transform`` (RandAugment, random
erasing), top-k accuracy, DeiT-style AdamW parameter groups, a visualization hook, EViT's
keep-rate warm-up hook, and Sparsifiner's distillation model, losses and phase hook.

All classes are registered in the ``'vzoo'`` scope (:mod:`vzoo.tasks.registry`).
"""
from .dataset import IMG_EXTENSIONS, ImageFolderDataset  # noqa: F401
from .hooks import ClsVisualizationHook  # noqa: F401
from .keep_rate import KeepRateWarmupHook, warmup_keep_rate  # noqa: F401
from .metric import Accuracy  # noqa: F401
from .model import ClsDataPreprocessor, TimmClassifier  # noqa: F401
from .optim import TimmOptimWrapperConstructor  # noqa: F401
from .sparsifiner import (  # noqa: F401
    AttnReconLoss, ClsDistillLoss, SparsifinerClassifier, SparsifinerPhaseHook, TokenDistillLoss)
from .transforms import LoadPILImage, PackClsInputs, TimmTransform  # noqa: F401
