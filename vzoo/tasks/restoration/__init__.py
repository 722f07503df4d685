"""Restoration (super-resolution) task for mmengine: paired folder datasets with MATLAB-bicubic LR on
the fly, paired albumentations augmentation, a wrapper for any timm image-to-image network (L1 loss,
tiled inference), PSNR/SSIM on Y with border crop, and a hook that writes the SR images.

All classes are registered in the ``'vzoo'`` scope (:mod:`vzoo.tasks.registry`).
"""
from .imresize import imresize  # noqa: F401
from .transforms import (  # noqa: F401
    LoadSRPair, PackSRInputs, PairedAlbu, PairedRandomCrop, bicubic_downsample, mod_crop, read_rgb)
from .dataset import SRFolderDataset  # noqa: F401
from .metrics import SRMetric, psnr, rgb_to_y, ssim  # noqa: F401
from .model import SRDataPreprocessor, SRModel, tile_layout, tiled_forward  # noqa: F401
from .hooks import SRVisualizationHook  # noqa: F401
from .loops import SRMultiTestLoop  # noqa: F401
