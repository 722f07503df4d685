"""``tools/test.py --show-dir D``: the same layout for every task (``D/<n>_<image>.png`` per test image,
``D/gallery.png``), never the training dataloader (a test run may have only the test split), a head
with more classes than the dataset names, and metrics that a failing drawing cannot lose."""
import json
import os.path as osp
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import test_toolchain  # noqa: E402
from test_toolchain import SEG_CONFIG, _cls_config  # noqa: E402
from tools import test as test_tool  # noqa: E402
from tools import train as train_tool  # noqa: E402

data = test_toolchain.data  # its tiny digits and shapes, the fixture of this module too


def _assert_layout(show: Path, n: int):
    drawings = sorted(p for p in show.glob("[0-9]" * 5 + "_*.png"))
    assert len(drawings) == n, sorted(show.iterdir())
    gallery = np.asarray(Image.open(show / "gallery.png").convert("L"), dtype=np.float32)
    assert gallery.std() > 5.0, "blank gallery"


def _head_config(tmp_path, data, num_classes):
    """test_toolchain's digits config, one epoch, a head of ``num_classes``."""
    head = f"model = dict(arch='test_efficientnet', num_classes={num_classes})"
    return _cls_config(tmp_path, data, epochs=1, extra=head)


def test_classification_head_with_more_classes_than_names(tmp_path, data):
    cfg = _head_config(tmp_path, data, num_classes=1000)  # digits name 10 classes
    wd, show, out = tmp_path / "wd", tmp_path / "show", tmp_path / "m.json"
    train_tool.main([cfg, "--work-dir", str(wd)])
    test_tool.main([cfg, "--checkpoint", str(wd / "epoch_1.pth"), "--work-dir", str(wd), "--out", str(out),
                    "--show-dir", str(show)])
    assert 0.0 <= json.loads(out.read_text())["accuracy/top1"] <= 1.0
    _assert_layout(show, 10)


def test_segmentation_with_only_the_test_split(tmp_path, data):
    """mmseg's visualization hook read ``runner.iter``, which built the training dataloader:
    ``FileNotFoundError: .../images/training`` after inference, and no metrics."""
    ade = tmp_path / "ade"
    shutil.copytree(osp.join(data["shapes"], "ade"), ade)
    opts = ["model.data_preprocessor.size=[64,64]", "train_dataloader.batch_size=2", "train_cfg.max_iters=1",
            "train_cfg.val_interval=1000", "default_hooks.checkpoint.interval=1"]
    opts += [f"{k}_dataloader.dataset.data_root={ade}" for k in ("train", "val", "test")]
    wd, show, out = tmp_path / "wd", tmp_path / "show", tmp_path / "m.json"
    train_tool.main([str(SEG_CONFIG), "--work-dir", str(wd), "--cfg-options", *opts])
    for split in ("images", "annotations"):
        shutil.rmtree(ade / split / "training")
    test_tool.main([str(SEG_CONFIG), "--checkpoint", str(wd / "iter_1.pth"), "--work-dir", str(wd),
                    "--out", str(out), "--show-dir", str(show), "--cfg-options", *opts])
    assert 0.0 <= json.loads(out.read_text())["mIoU"] <= 100.0
    _assert_layout(show, 3)
    first = np.asarray(Image.open(sorted(show.glob("00000_*.png"))[0]))
    assert first.shape[1] == 2 * 64, "ground truth | prediction side by side"


def test_a_failing_drawing_does_not_lose_the_metrics(tmp_path, data):
    cfg = _head_config(tmp_path, data, num_classes=10)
    wd, show, out = tmp_path / "wd", tmp_path / "show", tmp_path / "m.json"
    train_tool.main([cfg, "--work-dir", str(wd)])
    first = sorted(Path(data["digits"], "val").rglob("*.png"))[0]
    (show / f"00000_{first.stem}.png").mkdir(parents=True)  # the first drawing cannot be written
    metrics = test_tool.main([cfg, "--checkpoint", str(wd / "epoch_1.pth"), "--work-dir", str(wd),
                              "--out", str(out), "--show-dir", str(show)])
    assert json.loads(out.read_text()) == pytest.approx(metrics)
    log = "".join(p.read_text() for p in wd.glob("*/*.log"))
    assert "drawing failed at test batch 0" in log and "metrics are not affected" in log
