"""tools/train.py and tools/test.py: train + test for classification, detection and segmentation on
tiny generated data, resume equals an uninterrupted run, 2-process CPU DDP stays in sync, and the
start-up errors name their problem. Runs in-process through the tools' ``main(argv)`` (the same code
as the command line) except where a separate process is the point (DDP, the exit status)."""
import json
import os
import os.path as osp
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools import test as test_tool  # noqa: E402
from tools import train as train_tool  # noqa: E402
from vzoo.models import CheckpointError  # noqa: E402
from vzoo.tasks import demo_data  # noqa: E402
from vzoo.tasks.engine import ConfigKeyError, DatasetPathError, StartupError, load_runner_checkpoint  # noqa: E402

import _toolchain_hooks  # noqa: E402,F401  (registers the test hooks)

CLS_CONFIG = ROOT / "configs/classification/demo_digits.py"
DET_CONFIG = ROOT / "configs/detection/demo_shapes_fcos_resnet10t.py"
SEG_CONFIG = ROOT / "configs/segmentation/demo_shapes_fpn_resnet10t.py"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_data")
    return dict(digits=demo_data.make_digits(str(root / "digits"), size=16, limit=4),
                shapes=demo_data.make_shapes(str(root / "shapes"), n_train=6, n_val=3, size=(64, 64), max_objects=2))


def _cls_config(tmp_path, data, name="cls.py", epochs=2, extra=""):
    """The digits demo config, shrunk: timm's 100k-parameter test_efficientnet, 16x16 images."""
    text = f"""
_base_ = [{str(CLS_CONFIG)!r}]
data_root = {data['digits']!r}
model = dict(arch='test_efficientnet')
train_dataloader = dict(batch_size=8, dataset=dict(data_root=data_root, pipeline=[
    dict(type='LoadPILImage'),
    dict(type='TimmTransform', input_size=16, is_training=True, scale=(0.6, 1.0), hflip=0.0, color_jitter=None,
         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    dict(type='PackClsInputs')]))
val_dataloader = dict(batch_size=16, dataset=dict(data_root=data_root, pipeline=[
    dict(type='LoadPILImage'),
    dict(type='TimmTransform', input_size=16, crop_pct=1.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    dict(type='PackClsInputs')]))
test_dataloader = val_dataloader
param_scheduler = [dict(type='CosineAnnealingLR', T_max={epochs}, by_epoch=True, begin=0, end={epochs},
                        convert_to_iter_based=True)]
train_cfg = dict(max_epochs={epochs}, val_interval=1000)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=-1))
custom_imports = dict(imports=['_toolchain_hooks'], allow_failed_imports=False)
{extra}
"""
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _weights(path):
    return load_runner_checkpoint(str(path))["state_dict"]


# ---------------------------------------------------------------------------------------------
def test_classification_train_test_curves_and_show_dir(tmp_path, data):
    cfg = _cls_config(tmp_path, data)
    wd = tmp_path / "wd"
    train_tool.main([cfg, "--work-dir", str(wd), "--cfg-options", "train_cfg.val_interval=1"])
    assert (wd / "epoch_2.pth").is_file() and (wd / "curves.png").stat().st_size > 1000
    assert not list(wd.glob(".*.tmp")), "temporary checkpoint files left behind"
    out = tmp_path / "metrics.json"
    metrics = test_tool.main([cfg, "--checkpoint", str(wd / "epoch_2.pth"), "--work-dir", str(wd),
                              "--out", str(out), "--show-dir", str(tmp_path / "show")])
    saved = json.loads(out.read_text())
    assert 0.0 <= saved["accuracy/top1"] <= 1.0 and saved == pytest.approx(metrics)
    assert len(list((tmp_path / "show").glob("*_*.png"))) == 10  # one val image per class (+ gallery.png)
    log = next(wd.glob("*/*.log")).read_text()
    assert "eta:" in log  # progress with ETA


def test_detection_train_and_test(tmp_path, data):
    coco = osp.join(data["shapes"], "coco") + "/"
    wd = tmp_path / "det"
    opts = ["train_dataloader.dataset.data_root=" + coco, "val_dataloader.dataset.data_root=" + coco,
            "test_dataloader.dataset.data_root=" + coco,
            "val_evaluator.ann_file=" + coco + "annotations/instances_val.json",
            "test_evaluator.ann_file=" + coco + "annotations/instances_val.json",
            "train_dataloader.batch_size=2", "train_cfg.max_epochs=1", "train_cfg.val_interval=1",
            "default_hooks.checkpoint.interval=1"]
    train_tool.main([str(DET_CONFIG), "--work-dir", str(wd), "--cfg-options", *opts])
    assert (wd / "epoch_1.pth").is_file() and (wd / "curves.png").is_file()
    metrics = test_tool.main([str(DET_CONFIG), "--checkpoint", str(wd / "epoch_1.pth"), "--work-dir", str(wd),
                              "--show-dir", str(tmp_path / "show"), "--cfg-options", *opts,
                              "model.test_cfg.score_thr=0.0"])  # an untrained head scores ~0.01: keep its boxes
    assert 0.0 <= metrics["coco/bbox_mAP"] <= 1.0
    assert len(list((tmp_path / "show").rglob("*_*.png"))) == 3  # one per val image (+ gallery.png)


def test_segmentation_train_and_test(tmp_path, data):
    ade = osp.join(data["shapes"], "ade")
    wd = tmp_path / "seg"
    opts = ["model.data_preprocessor.size=[64,64]",
            "train_dataloader.dataset.data_root=" + ade, "val_dataloader.dataset.data_root=" + ade,
            "test_dataloader.dataset.data_root=" + ade, "train_dataloader.batch_size=2",
            "train_cfg.max_iters=4", "train_cfg.val_interval=4", "default_hooks.checkpoint.interval=4"]
    train_tool.main([str(SEG_CONFIG), "--work-dir", str(wd), "--cfg-options", *opts])
    assert (wd / "iter_4.pth").is_file() and (wd / "curves.png").is_file()
    out = tmp_path / "seg.json"
    test_tool.main([str(SEG_CONFIG), "--checkpoint", str(wd / "iter_4.pth"), "--work-dir", str(wd),
                    "--out", str(out), "--cfg-options", *opts])
    assert 0.0 <= json.loads(out.read_text())["mIoU"] <= 100.0


# ---------------------------------------------------------------------------------------------
def test_resume_after_interrupt_equals_uninterrupted_run(tmp_path, data):
    """Run A: 4 epochs. Run B: the same, killed after epoch 2 (its checkpoint is on disk); then
    ``--resume`` continues B to epoch 4. B's final weights equal A's (random augmentation included:
    the RNG states travel in the checkpoint)."""
    cfg = _cls_config(tmp_path, data, "cfg.py", epochs=4)
    cfg_interrupt = _cls_config(tmp_path, data, "cfg_int.py", epochs=4,
                                extra="custom_hooks = [dict(type='InterruptAfterEpochHook', epoch=2)]")
    a, b = tmp_path / "a", tmp_path / "b"
    train_tool.main([cfg, "--work-dir", str(a)])
    with pytest.raises(_toolchain_hooks.Interrupted):
        train_tool.main([cfg_interrupt, "--work-dir", str(b)])
    assert (b / "epoch_2.pth").is_file() and not (b / "epoch_3.pth").exists()
    runner = train_tool.main([cfg, "--work-dir", str(b), "--resume"])
    assert runner.epoch == 4
    wa, wb = _weights(a / "epoch_4.pth"), _weights(b / "epoch_4.pth")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    # and the interruption did matter: the weights after epoch 2 differ from the final ones
    assert any(not torch.equal(v, _weights(b / "epoch_2.pth")[k]) for k, v in wb.items())


def test_ddp_two_cpu_processes_stay_in_sync(tmp_path, data):
    cfg = _cls_config(tmp_path, data, "ddp.py", epochs=2,
                      extra="custom_hooks = [dict(type='SaveRankWeightsHook')]")
    wd = tmp_path / "ddp"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT)]), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
           str(ROOT / "tools/train.py"), cfg, "--launcher", "pytorch", "--work-dir", str(wd)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (torch.load(wd / f"weights_rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["wrapped"] == "MMDistributedDataParallel"
    # DDP all-reduces gradients, so parameters stay identical; BN running stats are per process
    # (mmengine's default broadcast_buffers=False, as on GPUs without SyncBN)
    assert r0["params"] == r1["params"] and len(r0["params"]) > 10
    for k in r0["params"]:
        assert torch.equal(r0["state_dict"][k], r1["state_dict"][k]), k
    init = _weights(wd / "epoch_1.pth")
    assert any(not torch.equal(v, init[k]) for k, v in r0["state_dict"].items())  # it did train


# ---------------------------------------------------------------------------------------------
def test_runner_type_and_vzoo_hooks(tmp_path, data):
    """Without ``runner_type`` the tools build VZooRunner, with it the registry's runner (mmdet's rule);
    VZooRunner adds its hooks once, with the config's arguments when the config lists one."""
    from mmengine.hooks import CheckpointHook
    from mmengine.runner import Runner

    from vzoo.tasks.engine import (CurvePlotHook, ResumeStateHook, SafeCheckpointHook, VZooRunner, build_runner,
                                   setup_cfg)

    def runner(extra, name):
        args = train_tool.parse_args([_cls_config(tmp_path, data, name, extra=extra), "--work-dir", str(tmp_path)])
        return build_runner(setup_cfg(args, "train"))

    def vzoo_hooks(r):
        return [h for h in r.hooks if isinstance(h, (CurvePlotHook, ResumeStateHook))]

    plain = runner("", "a.py")
    assert type(plain) is VZooRunner
    assert [type(h) for h in vzoo_hooks(plain)] == [CurvePlotHook, ResumeStateHook]  # by priority: LOW, LOWEST
    # the config's type='CheckpointHook' (mmengine's) is built as SafeCheckpointHook, with its arguments
    saver, = [h for h in plain.hooks if isinstance(h, CheckpointHook)]
    assert type(saver) is SafeCheckpointHook and saver.max_keep_ckpts == -1 and saver.interval == 1
    named = runner("runner_type = 'VZooRunner'\ncustom_hooks = [dict(type='CurvePlotHook', interval=3)]", "b.py")
    assert type(named) is VZooRunner
    assert [(type(h), getattr(h, "interval", None)) for h in vzoo_hooks(named)] == [
        (CurvePlotHook, 3), (ResumeStateHook, None)]
    other = runner("runner_type = 'Runner'", "c.py")
    assert type(other) is Runner and not vzoo_hooks(other)
    assert type([h for h in other.hooks if isinstance(h, CheckpointHook)][0]) is CheckpointHook


def test_unknown_cfg_option_key(tmp_path, data):
    cfg = _cls_config(tmp_path, data)
    with pytest.raises(ConfigKeyError, match=r"train_cfg\.max_epoch.*max_epochs"):
        train_tool.main([cfg, "--cfg-options", "train_cfg.max_epoch=3"])
    with pytest.raises(ConfigKeyError, match="optim_wraper"):
        test_tool.main([cfg, "--checkpoint", cfg, "--cfg-options", "optim_wraper.lr=1"])


def test_missing_dataset_path(tmp_path, data):
    cfg = _cls_config(tmp_path, data)
    with pytest.raises(DatasetPathError, match=r"train_dataloader\.dataset\.data_root='/nonexistent/digits'"):
        train_tool.main([cfg, "--cfg-options", "train_dataloader.dataset.data_root=/nonexistent/digits"])
    with pytest.raises(DatasetPathError, match=r"ann_file"):
        train_tool.main([str(DET_CONFIG), "--cfg-options",
                         "train_dataloader.dataset.data_root=" + osp.join(data["shapes"], "coco") + "/",
                         "train_dataloader.dataset.ann_file=annotations/missing.json"])


def test_checkpoint_of_another_model(tmp_path, data):
    cfg = _cls_config(tmp_path, data, epochs=1)
    wd = tmp_path / "wd"
    train_tool.main([cfg, "--work-dir", str(wd)])
    with pytest.raises(CheckpointError, match=r"missing key.*unexpected key"):
        test_tool.main([cfg, "--checkpoint", str(wd / "epoch_1.pth"), "--work-dir", str(wd),
                        "--cfg-options", "model.arch=test_byobnet"])
    with pytest.raises(StartupError, match="not found"):
        train_tool.main([cfg, "--work-dir", str(wd), "--resume", str(wd / "nope.pth")])


def test_cli_error_is_one_line_with_exit_status_2(tmp_path, data):
    cfg = _cls_config(tmp_path, data)
    proc = subprocess.run([sys.executable, str(ROOT / "tools/train.py"), cfg, "--cfg-options", "modle.arch=x"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT / "tests")))
    assert proc.returncode == 2
    assert "error: --cfg-options: unknown config key 'modle.arch'" in proc.stderr
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------------------------- data options
# what each docs example needs beyond its own options to run one iteration here, and the checkpoint it writes
_ONE_ITERATION = {
    "classification": (["train_dataloader.batch_size=9", "train_cfg.max_epochs=1"], "epoch_1.pth"),
    "detection": (["train_dataloader.batch_size=6", "train_cfg.max_epochs=1"], "epoch_1.pth"),
    "segmentation": (["train_dataloader.batch_size=2", "train_cfg.max_iters=1", "default_hooks.checkpoint.interval=1"],
                     "iter_1.pth"),
    "restoration": (["train_dataloader.batch_size=2", "train_cfg.max_iters=1", "default_hooks.checkpoint.interval=1"],
                    "iter_1.pth"),
}


def _docs_examples():
    """``{task: argv}`` of the train commands in docs/training.md's "Your own data" block."""
    text = (ROOT / "docs/training.md").read_text()
    block = text.split("## Your own data")[1].split("```bash")[1].split("```")[0]
    examples, task = {}, None
    for line in block.strip().splitlines():
        if line.startswith("#"):
            name = line.lstrip("# ").split(":")[0]
            task = "restoration" if name == "super-resolution" else name
        else:
            examples[task] = line.split()[2:]  # after "python tools/train.py"
    return examples


@pytest.mark.parametrize("task", ["classification", "detection", "segmentation", "restoration"])
def test_data_options_examples(task, tmp_path, data):
    """Each example of docs/training.md trains one iteration on a tiny dataset of its task's layout
    through ``--data-root`` etc., then ``tools/test.py`` evaluates it with the same options."""
    import shutil
    if task == "classification":  # 3 of the 10 digit classes: --num-classes counts them
        root = tmp_path / "three_digits"
        for split in ("train", "val"):
            for c in "017":
                shutil.copytree(osp.join(data["digits"], split, c), root / split / c)
    elif task == "detection":
        root = osp.join(data["shapes"], "coco")
    elif task == "segmentation":
        root = osp.join(data["shapes"], "ade")
    else:
        root = demo_data.make_sr(str(tmp_path / "sr"), patch=48, train_patches_per_photo=1, val_patches_per_photo=1)
    argv = [str(root) if a == "DIR" else a for a in _docs_examples()[task]]
    extra, ckpt = _ONE_ITERATION[task]
    wd = tmp_path / "wd"
    runner = train_tool.main([*argv, "--work-dir", str(wd), "--cfg-options", *extra])
    cfg, model = runner.cfg, runner.model
    # every task's demo config names type='CheckpointHook' (in the vzoo, mmdet or mmseg scope): crash-safe keep-N
    assert [type(h).__name__ for h in runner.hooks if "Checkpoint" in type(h).__name__] == ["SafeCheckpointHook"]
    loaders = [cfg[f"{s}_dataloader"]["dataset"] for s in ("train", "val", "test")]
    assert all(ds["data_root"] == str(root) for ds in loaders)
    if task == "classification":
        assert model.num_classes == 3 and cfg.train_dataloader.dataset.pipeline[1].input_size == 24
    elif task == "detection":
        assert model.bbox_head.num_classes == 3
        assert cfg.val_evaluator.ann_file == osp.join(root, "annotations/instances_val.json")
        assert tuple(cfg.train_dataloader.dataset.pipeline[2].scale) == (64, 64)
    elif task == "segmentation":
        assert model.decode_head.num_classes == 4 and tuple(cfg.model.data_preprocessor.size) == (64, 64)
    else:
        assert cfg.train_dataloader.dataset.pipeline[1].transforms[0].lr_size == 24
    assert (wd / ckpt).is_file()
    keep_boxes = ["--cfg-options", "model.test_cfg.score_thr=0.0"] if task == "detection" else []  # untrained
    metrics = test_tool.main([*argv, "--checkpoint", str(wd / ckpt), "--work-dir", str(wd), *keep_boxes])
    assert metrics and all(isinstance(k, str) for k in metrics)


def test_data_options_errors(tmp_path, data):
    cfg = _cls_config(tmp_path, data)
    with pytest.raises(StartupError, match="--data-root: folder not found: '/nope'"):
        train_tool.main([cfg, "--data-root", "/nope"])
    with pytest.raises(StartupError, match="--num-classes: a restoration model has no classes"):
        train_tool.main([str(ROOT / "configs/restoration/demo_sr.py"), "--num-classes", "3"])
    with pytest.raises(StartupError, match="segmentation data name no classes.*--num-classes N"):
        train_tool.main([str(SEG_CONFIG), "--data-root", osp.join(data["shapes"], "ade"), "--num-classes"])
