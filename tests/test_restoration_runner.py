"""The restoration task through mmengine's Runner: the real demo config, one training iteration,
validation, then testing with the SR images written (and several benchmarks in one test run)."""
import copy
import glob
import os

import numpy as np
import pytest
import timm
from mmengine.config import Config
from mmengine.runner import Runner
from PIL import Image

import vzoo  # noqa: F401
import vzoo.tasks  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "configs", "restoration", "demo_sr.py")


def _make_images(folder, n, seed, size=(44, 52)):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        y, x = np.mgrid[0:size[0], 0:size[1]] / 16.0
        img = np.stack([np.sin(x * rng.uniform(1, 3) + c) * np.cos(y * rng.uniform(1, 3)) for c in range(3)], -1)
        img = ((img * 0.4 + 0.5 + rng.normal(0, 0.02, img.shape)).clip(0, 1) * 255).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(folder, f"img{i}.png"))


def _tiny_cfg(tmp_path, arch_kwargs):
    data = tmp_path / "sr"
    _make_images(str(data / "train" / "HR"), 3, 0)
    _make_images(str(data / "val" / "HR"), 2, 1, size=(36, 30))
    cfg = Config.fromfile(DEMO)
    cfg.work_dir = str(tmp_path / "work")
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[key].dataset.data_root = str(data)
    cfg.train_dataloader.batch_size = 2
    cfg.train_dataloader.dataset.pipeline[1].transforms[0].lr_size = 8
    cfg.train_cfg.max_iters = 1
    cfg.train_cfg.val_interval = 1
    cfg.param_scheduler = [dict(type="ConstantLR", by_epoch=False, factor=1.0)]
    cfg.default_hooks.checkpoint.interval = 1
    cfg.default_hooks.logger.interval = 1
    cfg.log_level = "WARNING"
    if arch_kwargs is not None:
        cfg.model.arch_kwargs = arch_kwargs
    else:  # the test file's tiny conv net (tests/test_restoration.py registers it with timm)
        cfg.model.arch = "vzoo_test_tiny_sr_x2"
        cfg.model.arch_kwargs = dict()
    return cfg


def _archs():
    archs = [pytest.param(None, id="tiny-conv")]
    if timm.is_model("hat_s_x2"):
        archs.append(pytest.param(dict(embed_dim=12, depths=(1,), num_heads=(2,), window_size=4, compress_ratio=3,
                                       squeeze_factor=4, num_feat=8, drop_path_rate=0.0), id="hat-s-shrunk"))
    return archs


@pytest.mark.parametrize("arch_kwargs", _archs())
def test_train_one_iter_then_test_with_images(tmp_path, arch_kwargs):
    if arch_kwargs is None:
        import test_restoration  # noqa: F401  (registers vzoo_test_tiny_sr_x2)
    cfg = _tiny_cfg(tmp_path, arch_kwargs)
    show = tmp_path / "show"
    cfg.default_hooks.visualization.update(draw=True, test_out_dir=str(show))  # what tools/test.py --show-dir sets
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert os.path.isfile(os.path.join(cfg.work_dir, "iter_1.pth"))
    scalars = runner.message_hub.log_scalars
    assert "val/sr/PSNR" in scalars and "val/sr/PSNR_bicubic" in scalars, sorted(scalars)
    assert not show.exists(), "validation must not write images unless draw_val=True"

    metrics = runner.test()
    assert {"sr/PSNR", "sr/SSIM", "sr/PSNR_bicubic", "sr/SSIM_bicubic"} <= set(metrics)
    assert all(np.isfinite(v) for v in metrics.values())
    outs = sorted(glob.glob(str(show / "demo_val" / "*.png")))  # the --show-dir layout of every task
    assert [os.path.basename(p) for p in outs] == ["00000_img0.png", "00000_img0_output.png", "00001_img1.png",
                                                   "00001_img1_output.png", "gallery.png"]
    sr = np.asarray(Image.open(outs[1]))
    assert sr.shape == (36, 30, 3)
    cmp_ = np.asarray(Image.open(outs[0]))  # LR (nearest) | bicubic | output | HR
    assert cmp_.shape[0] == 36 and cmp_.shape[1] == 4 * 30 + 3 * 4
    assert np.array_equal(cmp_[20:, 2 * 34:2 * 34 + 30], sr[20:]), "the output panel is the output (below its label)"
    gallery = np.asarray(Image.open(outs[-1]))
    assert gallery.shape[0] > 2 * 36 and gallery.std() > 5.0


def test_multi_benchmark_test_loop(tmp_path):
    import test_restoration  # noqa: F401
    cfg = _tiny_cfg(tmp_path, None)
    _make_images(str(tmp_path / "b2" / "HR"), 1, 5, size=(40, 40))
    second = copy.deepcopy(cfg.test_dataloader)
    second.dataset.update(data_root=str(tmp_path / "b2"), gt_folder="HR", dataset_name="B2")
    cfg.test_dataloader = [cfg.test_dataloader, second]
    cfg.test_evaluator = [dict(type="SRMetric", prefix="A"), dict(type="SRMetric", measures=["PSNR"], prefix="B2")]
    cfg.test_cfg = dict(type="SRMultiTestLoop")
    metrics = Runner.from_cfg(cfg).test()
    assert set(metrics) == {"A/PSNR", "A/SSIM", "B2/PSNR"}
