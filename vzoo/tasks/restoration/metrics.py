"""PSNR and SSIM as published SR tables compute them, and the mmengine metric that reports them.

Convention (BasicSR / EDSR / SwinIR / HAT): the SR output is quantised to 8 bits (as when saved
as PNG), both images are converted to the luma channel of ITU-R BT.601 in the 16..235 range,
``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` for 0..255 RGB (not rounded), ``crop_border``
pixels (the scale) are cut from every side, then PSNR with peak 255 and SSIM (Wang et al. 2004:
11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, "valid" filtering) are computed per image and
averaged over the images.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric

from ..registry import METRICS
from .imresize import imresize

__all__ = ["rgb_to_y", "to_uint8_image", "psnr", "ssim", "SRMetric"]

_Y_WEIGHTS = (65.481, 128.553, 24.966)


def to_uint8_image(img: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    """An image as a HWC (or HW) float64 array of 0..255 integers.

    Tensors are CHW: float in [0, 1] (clamped, then rounded to 8 bits) or uint8; arrays are HWC/HW uint8.
    """
    if isinstance(img, torch.Tensor):
        t = img.detach().cpu()
        if t.is_floating_point():
            t = torch.floor(t.double().clamp(0, 1) * 255.0 + 0.5)
        arr = t.double().numpy()
        if arr.ndim == 3:
            arr = arr.transpose(1, 2, 0)
        return arr
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8:
            raise TypeError(f"to_uint8_image: numpy images must be uint8 HWC, got dtype {img.dtype}")
        return img.astype(np.float64)
    raise TypeError(f"to_uint8_image: img must be a tensor or a numpy array, got {type(img).__name__}")


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma in 16..235 of a HWC RGB image with values in 0..255 (float64, not rounded)."""
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb_to_y: img must be HWC with 3 channels, got shape {img.shape}")
    w = np.asarray(_Y_WEIGHTS, dtype=np.float64) / 255.0
    return img @ w + 16.0


def _prepare(img: np.ndarray, crop_border: int, test_y_channel: bool) -> np.ndarray:
    if test_y_channel and img.ndim == 3 and img.shape[2] == 3:
        img = rgb_to_y(img)
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border, ...]
    return img


def psnr(img: np.ndarray, ref: np.ndarray, crop_border: int = 0, test_y_channel: bool = True) -> float:
    """PSNR (dB, peak 255) between two HWC 0..255 images (see :func:`to_uint8_image`)."""
    if img.shape != ref.shape:
        raise ValueError(f"psnr: image shapes differ: {img.shape} vs {ref.shape}")
    a = _prepare(img.astype(np.float64), crop_border, test_y_channel)
    b = _prepare(ref.astype(np.float64), crop_border, test_y_channel)
    mse = np.mean((a - b) ** 2)
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(255.0 ** 2 / mse))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _ssim_2d(a: torch.Tensor, b: torch.Tensor) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = _gaussian_window()
    kh, kw = g.view(1, 1, -1, 1), g.view(1, 1, 1, -1)

    def filt(x):  # separable "valid" Gaussian filtering
        return F.conv2d(F.conv2d(x, kh), kw)

    a, b = a[None, None], b[None, None]
    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a ** 2
    var_b = filt(b * b) - mu_b ** 2
    cov = filt(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def ssim(img: np.ndarray, ref: np.ndarray, crop_border: int = 0, test_y_channel: bool = True) -> float:
    """SSIM between two HWC 0..255 images (mean over channels when not on Y)."""
    if img.shape != ref.shape:
        raise ValueError(f"ssim: image shapes differ: {img.shape} vs {ref.shape}")
    a = _prepare(img.astype(np.float64), crop_border, test_y_channel)
    b = _prepare(ref.astype(np.float64), crop_border, test_y_channel)
    if min(a.shape[0], a.shape[1]) < 11:
        raise ValueError(f"ssim: images must be at least 11x11 after the border crop, got {a.shape[:2]}")
    ta, tb = torch.from_numpy(np.ascontiguousarray(a)), torch.from_numpy(np.ascontiguousarray(b))
    if ta.ndim == 2:
        return _ssim_2d(ta, tb)
    return float(np.mean([_ssim_2d(ta[..., c], tb[..., c]) for c in range(ta.shape[-1])]))


@METRICS.register_module()
class SRMetric(BaseMetric):
    """PSNR / SSIM of super-resolved images against the ground truth, averaged over images.

    Args:
        measures: any of ``'PSNR'``, ``'SSIM'`` (not called ``metrics``: in an evaluator config that key
            means a list of metrics to mmengine).
        crop_border: pixels cut from each side before measuring; the published convention is the
            scale. ``None`` takes the scale from each sample's metainfo.
        test_y_channel: measure on BT.601 Y (the published convention) instead of RGB.
        with_bicubic: also report the trivial baseline, MATLAB-bicubic upsampling of the LR input
            (``PSNR_bicubic``, ``SSIM_bicubic``).
        prefix: prefix of the reported keys (``prefix/PSNR``), e.g. the benchmark's name.
    """

    default_prefix = "sr"

    def __init__(self, measures: Sequence[str] = ("PSNR", "SSIM"), crop_border: Optional[int] = None,
                 test_y_channel: bool = True, with_bicubic: bool = False, collect_device: str = "cpu",
                 prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        if isinstance(measures, str):
            measures = (measures,)
        bad = [m for m in measures if m not in ("PSNR", "SSIM")]
        if bad or not measures:
            raise ValueError(f"SRMetric: measures must be a non-empty subset of ('PSNR', 'SSIM'), got {measures!r}")
        if crop_border is not None and (not isinstance(crop_border, int) or crop_border < 0):
            raise ValueError(f"SRMetric: crop_border must be None or an int >= 0, got {crop_border!r}")
        self.measures = tuple(measures)
        self.crop_border = crop_border
        self.test_y_channel = test_y_channel
        self.with_bicubic = with_bicubic

    def _measure(self, out: np.ndarray, gt: np.ndarray, border: int) -> Dict[str, float]:
        res = {}
        if "PSNR" in self.measures:
            res["PSNR"] = psnr(out, gt, border, self.test_y_channel)
        if "SSIM" in self.measures:
            res["SSIM"] = ssim(out, gt, border, self.test_y_channel)
        return res

    def process(self, data_batch: dict, data_samples: Sequence) -> None:
        inputs = data_batch.get("inputs") if isinstance(data_batch, dict) else None
        for i, sample in enumerate(data_samples):
            get = sample.get if isinstance(sample, dict) else (lambda k, d=None, s=sample: s.get(k, d))
            pred, gt = get("pred_img"), get("gt_img")
            if pred is None or gt is None:
                raise ValueError("SRMetric: each prediction needs 'pred_img' and 'gt_img' (use vzoo's SRModel)")
            meta = sample if isinstance(sample, dict) else sample.metainfo
            scale = int(meta.get("scale", 1))
            border = scale if self.crop_border is None else self.crop_border
            out, ref = to_uint8_image(pred), to_uint8_image(gt)
            res = self._measure(out, ref, border)
            if self.with_bicubic:
                if inputs is None:
                    raise ValueError("SRMetric(with_bicubic=True) needs the LR inputs in data_batch['inputs']")
                lr = inputs[i]
                lr = lr if lr.dtype == torch.uint8 else torch.floor(lr.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8)
                up = imresize(lr.cpu(), scale=scale)
                up = up[..., :ref.shape[0], :ref.shape[1]]
                for k, v in self._measure(to_uint8_image(up), ref, border).items():
                    res[f"{k}_bicubic"] = v
            self.results.append(res)

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        if not results:
            raise ValueError("SRMetric: no results to compute (empty evaluation set?)")
        return {k: float(np.mean([r[k] for r in results])) for k in results[0]}
