"""Restoration task: MATLAB bicubic, paired folders, paired augmentation, PSNR/SSIM, tiling, Runner."""
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from timm.models import register_model

import vzoo.tasks  # noqa: F401  (registers the 'vzoo' scope)
from vzoo.tasks.restoration import (SRFolderDataset, SRMetric, SRModel, imresize, psnr, rgb_to_y, ssim,
                                    tile_layout, tiled_forward)
from vzoo.tasks.restoration.transforms import PairedAlbu


class TinySR(nn.Module):
    """A test fixture: 3 convs (receptive radius 3 LR pixels) + pixel shuffle; image-to-image like HAT."""
    vzoo_task = "image-to-image"

    def __init__(self, upscale=2, width=8, **kwargs):
        super().__init__()
        self.upscale = upscale
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                                  nn.ReLU(), nn.Conv2d(width, 3 * upscale ** 2, 3, padding=1), nn.PixelShuffle(upscale))

    def forward(self, x):
        return self.body(x)


@register_model
def vzoo_test_tiny_sr_x2(pretrained=False, **kwargs):
    return TinySR(upscale=2, **kwargs)


@register_model
def vzoo_test_tiny_sr_x3(pretrained=False, **kwargs):
    return TinySR(upscale=3, **kwargs)


def _smooth_image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    chans = [np.sin(rng.uniform(2, 9) * x + rng.uniform(0, 3)) * np.cos(rng.uniform(2, 9) * y) for _ in range(3)]
    img = np.stack(chans, -1) * 0.45 + 0.5 + rng.normal(0, 0.03, (h, w, 3))
    return np.clip(img, 0, 1)


def _save(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)


# ----------------------------------------------------------------------------- MATLAB bicubic
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_imresize_matches_pil_bicubic_away_from_borders(scale):
    # PIL's BICUBIC is also Keys a=-0.5 with a kernel stretched when downscaling and the same pixel-centre
    # convention; it differs from MATLAB only at the borders (PIL renormalises, MATLAB mirrors)
    img = _smooth_image(24 * scale, 20 * scale).astype(np.float32)
    down = imresize(img, scale=1 / scale)
    assert down.shape == (24, 20, 3)
    ref = np.stack([np.asarray(Image.fromarray(img[..., c]).resize((20, 24), Image.BICUBIC)) for c in range(3)], -1)
    m = 2
    assert np.abs(down - ref)[m:-m, m:-m].max() < 1e-5
    up = imresize(down, scale=scale)
    ref_up = np.stack([np.asarray(Image.fromarray(down[..., c]).resize((20 * scale, 24 * scale), Image.BICUBIC))
                       for c in range(3)], -1)
    m = 2 * scale
    assert np.abs(up - ref_up)[m:-m, m:-m].max() < 1e-5


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_imresize_mirrors_at_borders(scale):
    # resizing a symmetrically padded image and cutting the padding away gives the unpadded result,
    # borders included: outside taps are mirrored exactly as np.pad(mode='symmetric') does
    img = _smooth_image(10 * scale, 7 * scale, seed=3)
    pad = 3 * scale
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    a = imresize(img, scale=1 / scale)
    b = imresize(padded, scale=1 / scale)[3:-3, 3:-3]
    assert np.abs(a - b).max() < 1e-12


def test_imresize_uint8_constant_and_errors():
    img = np.full((12, 18, 3), 77, np.uint8)
    out = imresize(img, scale=0.5)
    assert out.dtype == np.uint8 and out.shape == (6, 9, 3) and (out == 77).all()
    t = imresize(torch.full((2, 3, 5, 4), 0.25), scale=3)
    assert t.shape == (2, 3, 15, 12) and torch.allclose(t, torch.tensor(0.25, dtype=t.dtype))
    with pytest.raises(ValueError, match="scale"):
        imresize(img, scale=-1)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(img)
    with pytest.raises(TypeError, match="img"):
        imresize([[1, 2]], scale=2)


# ----------------------------------------------------------------------------- datasets
def test_folder_pairing_div2k_names_and_mod_crop(tmp_path):
    hr = (_smooth_image(27, 22) * 255).round().astype(np.uint8)  # not a multiple of 2: mod crop to 26x22
    _save(str(tmp_path / "HR" / "0001.png"), hr)
    lr = imresize(hr[:26, :22], scale=0.5)
    _save(str(tmp_path / "LR" / "X2" / "0001x2.png"), lr)
    pipe = [dict(type="LoadSRPair"), dict(type="PackSRInputs")]
    ds = SRFolderDataset(gt_folder="HR", lr_folder="LR/X2", lr_filename_tmpl="{}x{scale}", scale=2,
                         data_root=str(tmp_path), pipeline=pipe)
    assert len(ds) == 1
    item = ds[0]
    assert tuple(item["inputs"].shape) == (3, 13, 11)
    assert tuple(item["data_samples"].gt_img.shape) == (3, 26, 22)
    np.testing.assert_array_equal(item["inputs"].permute(1, 2, 0).numpy(), lr)
    np.testing.assert_array_equal(item["data_samples"].gt_img.permute(1, 2, 0).numpy(), hr[:26, :22])
    assert item["data_samples"].metainfo["lr_path"].endswith("0001x2.png")

    # on the fly: the same LR, made from the mod-cropped HR with MATLAB bicubic (uint8)
    fly = SRFolderDataset(gt_folder=str(tmp_path / "HR"), scale=2, pipeline=pipe)[0]
    np.testing.assert_array_equal(fly["inputs"].permute(1, 2, 0).numpy(), lr)

    with pytest.raises(FileNotFoundError, match="0001x3.png"):
        SRFolderDataset(gt_folder="HR", lr_folder="LR/X2", lr_filename_tmpl="{}x3", scale=2, data_root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="folder not found"):
        SRFolderDataset(gt_folder=str(tmp_path / "nope"), scale=2)
    _save(str(tmp_path / "LR" / "bad" / "0001.png"), lr[:12])
    bad = SRFolderDataset(gt_folder="HR", lr_folder="LR/bad", scale=2, data_root=str(tmp_path), pipeline=pipe)
    with pytest.raises(ValueError, match="scale 2"):
        bad[0]


def test_paired_augmentation_keeps_pixel_correspondence():
    # HR = nearest-neighbour upsampling of LR: after the paired crop / flip / rotation it must still be
    rng = np.random.default_rng(0)
    scale, lr_size = 3, 6
    lr = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    hr = lr.repeat(scale, 0).repeat(scale, 1)
    aug = PairedAlbu([dict(type="PairedRandomCrop", lr_size=lr_size), dict(type="HorizontalFlip", p=0.5),
                      dict(type="RandomRotate90", p=1.0)])
    np.random.seed(0)
    seen = set()
    for _ in range(40):
        out = aug(dict(lr=lr.copy(), gt=hr.copy()))
        a, b = out["lr"], out["gt"]
        assert a.shape == (lr_size, lr_size, 3) and b.shape == (lr_size * scale, lr_size * scale, 3)
        np.testing.assert_array_equal(b, a.repeat(scale, 0).repeat(scale, 1))
        # which of the 8 orientations and where: find the patch in the original LR
        for k in range(4):
            for flip in (False, True):
                cand = np.rot90(a[:, ::-1] if flip else a, -k)
                hits = [(y, x) for y in range(17 - lr_size + 1) for x in range(23 - lr_size + 1)
                        if np.array_equal(lr[y:y + lr_size, x:x + lr_size], cand)]
                if hits:
                    seen.add((k, flip, hits[0]))
    assert len({(k, f) for k, f, _ in seen}) >= 6, "flips/rotations were not random"
    assert len({p for _, _, p in seen}) >= 10, "crop positions were not random"


# ----------------------------------------------------------------------------- metrics
def _y_reference(img):  # BT.601 luma (BasicSR): Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255, RGB 0..255
    return 16.0 + (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255.0


@pytest.mark.parametrize("border", [0, 2, 4])
def test_psnr_ssim_against_skimage(border):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    gt = (_smooth_image(40, 36, seed=1) * 255).round()
    out = np.clip(gt + np.random.default_rng(2).normal(0, 6, gt.shape), 0, 255).round()
    np.testing.assert_allclose(rgb_to_y(gt), _y_reference(gt), rtol=0, atol=1e-9)
    crop = (slice(border, -border if border else None),) * 2
    yo, yg = _y_reference(out)[crop], _y_reference(gt)[crop]
    ref_psnr = peak_signal_noise_ratio(yg, yo, data_range=255)
    ref_ssim = structural_similarity(yg, yo, data_range=255, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False)
    assert abs(psnr(out, gt, border) - ref_psnr) < 1e-9
    assert abs(ssim(out, gt, border) - ref_ssim) < 1e-6
    # RGB variant: mean over channels
    ref_rgb = np.mean([structural_similarity(gt[crop + (c,)], out[crop + (c,)], data_range=255, gaussian_weights=True,
                                             sigma=1.5, use_sample_covariance=False) for c in range(3)])
    assert abs(ssim(out, gt, border, test_y_channel=False) - ref_rgb) < 1e-6

    # the mmengine metric: float [0,1] prediction is quantised to 8 bits, crop_border from the scale
    metric = SRMetric(with_bicubic=True)
    lr = torch.from_numpy(imresize(gt.astype(np.uint8), scale=1 / 2)).permute(2, 0, 1)
    pred = torch.from_numpy(out / 255.0).permute(2, 0, 1).float()
    gt_t = torch.from_numpy(gt.astype(np.uint8)).permute(2, 0, 1)
    metric.process(dict(inputs=[lr]), [dict(pred_img=pred, gt_img=gt_t, scale=2)])
    res = metric.compute_metrics(metric.results)
    yo2, yg2 = _y_reference(out)[2:-2, 2:-2], _y_reference(gt)[2:-2, 2:-2]
    assert abs(res["PSNR"] - peak_signal_noise_ratio(yg2, yo2, data_range=255)) < 1e-6
    bic = imresize(lr.permute(1, 2, 0).numpy(), scale=2).astype(np.float64)
    assert abs(res["PSNR_bicubic"] - peak_signal_noise_ratio(yg2, _y_reference(bic)[2:-2, 2:-2], data_range=255)) < 1e-9
    assert set(res) == {"PSNR", "SSIM", "PSNR_bicubic", "SSIM_bicubic"}
    with pytest.raises(ValueError, match="measures"):
        SRMetric(measures=("LPIPS",))


# ----------------------------------------------------------------------------- tiling
def test_tile_layout_partitions_with_margin():
    for size, tile, overlap in [(50, 16, 6), (33, 16, 8), (16, 16, 4), (17, 16, 4), (100, 24, 10)]:
        lay = tile_layout(size, tile, overlap)
        owned = [p for _, lo, hi in lay for p in range(lo, hi)]
        assert owned == list(range(size))
        for s, lo, hi in lay:
            assert s <= lo and hi <= s + tile
            if lo > 0:
                assert lo - s >= overlap // 2
            if hi < size:
                assert s + tile - hi >= overlap // 2


@pytest.mark.parametrize("scale,shape", [(2, (37, 50)), (3, (29, 21))])
def test_tiled_equals_untiled(scale, shape):
    torch.manual_seed(0)
    net = TinySR(upscale=scale).eval()
    x = torch.rand(2, 3, *shape)
    with torch.no_grad():
        full = net(x)
        tiled = tiled_forward(net, x, scale, tile=16, overlap=8)  # 8 // 2 >= receptive radius 3
        single = tiled_forward(net, x, scale, tile=64, overlap=8)  # fits in one tile
    assert tiled.shape == full.shape
    assert (tiled - full).abs().max() < 1e-5
    assert torch.equal(single, full)
    with pytest.raises(ValueError, match="overlap"):
        tiled_forward(net, x, scale, tile=16, overlap=16)

    model = SRModel(arch=f"vzoo_test_tiny_sr_x{scale}", tile=dict(size=16, overlap=8)).eval()
    with torch.no_grad():
        assert (model.restore(x) - model.net(x)).abs().max() < 1e-5


def test_bicubic_residual_starts_at_bicubic():
    """residual='bicubic' from scratch: the last conv is zeroed, so the untrained model returns the
    MATLAB-bicubic upsampling exactly (and still learns: the zeroed layer gets gradients)."""
    from vzoo.tasks.restoration.imresize import imresize
    torch.manual_seed(0)
    model = SRModel(arch="hat_s_x2", residual="bicubic",
                    arch_kwargs=dict(embed_dim=12, depths=(1,), num_heads=(2,), window_size=4, compress_ratio=3,
                                     squeeze_factor=4, num_feat=8)).eval()
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.allclose(model.restore(x), imresize(x, scale=2), atol=1e-6)
    last = [m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    model.train()
    model._sr(x).sum().backward()
    assert last.weight.grad.abs().sum() > 0
    plain = SRModel(arch="hat_s_x2", arch_kwargs=dict(embed_dim=12, depths=(1,), num_heads=(2,), window_size=4,
                                                      compress_ratio=3, squeeze_factor=4, num_feat=8))
    assert [m for m in plain.net.modules() if isinstance(m, torch.nn.Conv2d)][-1].weight.abs().sum() > 0


@pytest.mark.parametrize("name", ["hat_s_x2_div2k", "hat_x3_div2k", "hat_s_x4_div2k", "hat_l_x3_div2k",
                                  "hat_l_x4_imagenet"])
def test_sr_configs_use_one_scale_throughout(name):
    """The DIV2K configs share one base (configs/restoration/_base_/datasets/div2k.py) and set their
    scale in div2k_x<s>.py: model, data, LR folders and border crop all follow it."""
    from mmengine.config import Config
    cfg = Config.fromfile(os.path.join(os.path.dirname(__file__), "..", "configs", "restoration", f"{name}.py"))
    s = cfg.scale
    assert cfg.model.arch.endswith(f"_x{s}") and cfg.train_dataloader.dataset.scale == s
    assert cfg.val_dataloader == cfg.test_dataloader[0] and cfg.val_evaluator == cfg.test_evaluator[0]
    assert [d.dataset.dataset_name for d in cfg.test_dataloader] == cfg.benchmarks
    for loader, metric in zip(cfg.test_dataloader, cfg.test_evaluator):
        assert (loader.dataset.scale, loader.dataset.lr_folder, loader.dataset.lr_filename_tmpl) == (
            s, f"LR_bicubic/X{s}", f"{{}}x{s}")
        assert metric.crop_border == s and metric.prefix == loader.dataset.dataset_name
