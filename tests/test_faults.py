"""The fault-injection suite (issue 17): ``kill -9`` at each step of a checkpoint save, a full disk, corrupt
and truncated checkpoints, images and annotation files, and bad arguments. Each case checks what is left
on disk and that ``--resume`` (or the error) does the right thing. NaN and empty inputs to the op fronts
are in the ops' own tests (tests/test_neighborhood_attention.py, ...).

The kills run in forked children of one helper process that has imported the stack but computed nothing
(fork is safe there and saves a Python start-up per case); everything else runs in-process through the
tools' ``main(argv)``."""
import contextlib
import json
import os
import os.path as osp
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import test_toolchain  # noqa: E402
from test_toolchain import _cls_config, _weights  # noqa: E402
from tools import test as test_tool  # noqa: E402
from tools import train as train_tool  # noqa: E402
from vzoo.models import CheckpointError, load_checkpoint_file  # noqa: E402
from vzoo.tasks.engine import (  # noqa: E402
    ConfigKeyError, DataFileError, DatasetPathError, StartupError, find_resume_checkpoint, run_cli)

from _toolchain_hooks import KILL_STAGES  # noqa: E402

data = test_toolchain.data  # its tiny digits and shapes, the fixture of this module too
DET_CONFIG = ROOT / "configs/detection/demo_shapes_fcos_resnet10t.py"
KEEPS = (1, 3)
ONE_BATCH = ["--cfg-options", "train_dataloader.batch_size=30"]  # the 30 training digits: one iteration an epoch


def _fault_config(tmp_path, data, keep: int) -> str:
    """Epoch-based, a checkpoint every epoch, ``max_keep_ckpts=keep``; the kill comes at the save of epoch
    ``keep + 1`` (the first one that removes an old checkpoint); one more epoch follows it."""
    return _cls_config(tmp_path, data, f"fault_keep{keep}.py", epochs=keep + 2, extra=(
        "default_hooks = dict(logger=dict(interval=1), checkpoint=dict(type='FaultyCheckpointHook', interval=1, "
        f"max_keep_ckpts={keep}))"))


_LAUNCHER = r"""
import json, os, sys
sys.path[:0] = sys.argv[2:4]
import torch
torch.set_num_threads(1)
from tools import train as train_tool
import _toolchain_hooks
status = {}
for name, (argv, kill) in json.loads(sys.argv[1]).items():
    pid = os.fork()
    if pid == 0:
        os.environ[_toolchain_hooks.KILL_ENV] = kill
        try:
            train_tool.main(argv)
        finally:
            os._exit(3)  # not killed: the fault was not reached
    _, st = os.waitpid(pid, 0)
    status[name] = os.WTERMSIG(st) if os.WIFSIGNALED(st) else -os.WEXITSTATUS(st)
print("STATUS " + json.dumps(status))
"""


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory, data):
    """Every (stage, keep): a run SIGKILLed at that stage of the save of epoch keep + 1."""
    tmp = tmp_path_factory.mktemp("kills")
    configs = {keep: _fault_config(tmp, data, keep) for keep in KEEPS}
    jobs = {f"{stage}-{keep}": ([configs[keep], "--work-dir", str(tmp / f"{stage}-{keep}"), *ONE_BATCH],
                                f"{stage}:{keep + 1}") for stage in KILL_STAGES for keep in KEEPS}
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, json.dumps(jobs), str(ROOT / "tests"), str(ROOT)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    line = [s for s in proc.stdout.splitlines() if s.startswith("STATUS ")]
    assert proc.returncode == 0 and line, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp, configs, json.loads(line[0][len("STATUS "):])


def _steps(wd: Path):
    return sorted(int(p.stem.split("_")[1]) for p in wd.glob("epoch_*.pth"))


@contextlib.contextmanager
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("keep", KEEPS)
@pytest.mark.parametrize("stage", KILL_STAGES)
def test_kill_during_checkpoint_save_then_resume(killed_runs, stage, keep, tmp_path, data):
    """After ``kill -9`` at any step of a save the newest complete checkpoint is on disk and is what
    ``--resume`` takes; the resumed run ends with the weights of an uninterrupted one and keeps exactly
    ``max_keep_ckpts`` checkpoints (what the killed run had still to remove included), no temporary file.
    With mmengine's CheckpointHook, ``keep=1`` killed at ``before_write`` / ``during_write`` left no
    checkpoint at all."""
    tmp, configs, status = killed_runs
    wd, kill_step, last_step = tmp / f"{stage}-{keep}", keep + 1, keep + 2
    assert status[f"{stage}-{keep}"] == signal.SIGKILL
    written = stage not in ("before_write", "during_write")
    newest = kill_step if written else kill_step - 1
    assert max(_steps(wd)) == newest and len(_steps(wd)) >= min(keep, newest)
    named = (wd / "last_checkpoint").read_text().strip()
    assert osp.isfile(named), f"last_checkpoint names a missing file: {named}"
    assert find_resume_checkpoint(str(wd)) == str(wd / f"epoch_{newest}.pth")
    assert set(_weights(wd / f"epoch_{newest}.pth"))  # complete: it loads
    if stage == "during_write":
        assert list(wd.glob(".epoch_*.tmp")), "the kill came before the half-written temporary file"

    with one_thread():  # as the killed run: the weights are compared bit for bit
        runner = train_tool.main([configs[keep], "--work-dir", str(wd), "--resume", *ONE_BATCH])
    assert runner.epoch == last_step
    assert _steps(wd) == list(range(last_step - keep + 1, last_step + 1))
    assert (wd / "last_checkpoint").read_text().strip() == str(wd / f"epoch_{last_step}.pth")
    assert not list(wd.glob(".*.tmp"))
    reference = tmp / f"uninterrupted-{keep}"
    if not reference.is_dir():
        with one_thread():
            train_tool.main([configs[keep], "--work-dir", str(reference), *ONE_BATCH])
    ref, got = _weights(reference / f"epoch_{last_step}.pth"), _weights(wd / f"epoch_{last_step}.pth")
    for k in ref:
        assert torch.equal(ref[k], got[k]), k


def test_best_checkpoint_replaced_only_after_the_new_one_is_written(tmp_path, data):
    """``save_best``: the previous best file is still on disk while the new best is written (mmengine
    removes it first), and only the newest best is left at the end."""
    cfg = _cls_config(tmp_path, data, "best.py", epochs=3, extra=(
        "train_cfg = dict(max_epochs=3, val_interval=1)\n"
        "default_hooks = dict(logger=dict(interval=1), checkpoint=dict(type='BestOrderProbeHook', interval=1, "
        "max_keep_ckpts=1, save_best='accuracy/top1', rule='greater'))"))
    wd = tmp_path / "best"
    with one_thread():
        train_tool.main([cfg, "--work-dir", str(wd), *ONE_BATCH])
    writes = json.loads((wd / "best_writes.json").read_text())
    assert len(writes) == 3, writes
    for (previous, _), (name, on_disk) in zip(writes, writes[1:]):
        assert previous in on_disk, f"writing {name}: the previous best {previous} was already gone ({on_disk})"
    assert sorted(p.name for p in wd.glob("best_*.pth")) == [writes[-1][0]]


@pytest.fixture
def small_disk(tmp_path, trained):
    """A tmpfs with room for one checkpoint and a half, when this machine lets the test mount one (root
    with CAP_SYS_ADMIN)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    size = int(trained[1].stat().st_size * 1.6) + 200_000
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for ENOSPC here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_keeps_the_previous_checkpoint(small_disk, tmp_path, data, capsys):
    """On a disk with room for one checkpoint and a half, the second save (the first one still there) fails
    with ENOSPC. The first checkpoint stays complete and named by ``last_checkpoint``, no temporary file is
    left, the command line says so in one line, and ``--resume`` continues once there is room."""
    cfg = _cls_config(tmp_path, data, "full.py", epochs=3, extra=(
        "default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=1))\n"
        "log_level = 'ERROR'"))
    wd = small_disk / "wd"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: train_tool.main([cfg, "--work-dir", str(wd), *ONE_BATCH]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: no space left on device") and "--resume" in err
    assert _steps(wd) == [1] and not list(wd.glob(".*.tmp"))
    assert (wd / "last_checkpoint").read_text().strip() == str(wd / "epoch_1.pth")
    assert set(_weights(wd / "epoch_1.pth"))
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    runner = train_tool.main([cfg, "--work-dir", str(wd), "--resume", *ONE_BATCH])
    assert runner.epoch == 3 and _steps(wd) == [3]


# ------------------------------------------------------------------------------ corrupt files
@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("trained")
    cfg = _cls_config(tmp, data, "one.py", epochs=1)
    train_tool.main([cfg, "--work-dir", str(tmp / "wd"), *ONE_BATCH])
    return cfg, tmp / "wd" / "epoch_1.pth"


def _truncated(src: Path, dst: Path) -> str:
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    return str(dst)


def test_truncated_checkpoint_is_named(trained, tmp_path):
    cfg, ckpt = trained
    bad = _truncated(ckpt, tmp_path / "epoch_2.pth")
    with pytest.raises(CheckpointError, match=rf"checkpoint '{bad}' is truncated or corrupt"):
        test_tool.main([cfg, "--checkpoint", bad, "--work-dir", str(tmp_path)])
    with pytest.raises(CheckpointError, match=rf"'{bad}' is truncated or corrupt"):
        train_tool.main([cfg, "--work-dir", str(tmp_path), "--resume", bad, *ONE_BATCH])
    # --resume without a file takes the newest, epoch_2.pth here: named too
    with pytest.raises(CheckpointError, match="epoch_2.pth"):
        train_tool.main([cfg, "--work-dir", str(tmp_path), "--resume", *ONE_BATCH])


def test_truncated_checkpoint_cli_is_one_line(trained, tmp_path):
    cfg, ckpt = trained
    bad = _truncated(ckpt, tmp_path / "bad.pth")
    proc = subprocess.run([sys.executable, str(ROOT / "tools/test.py"), cfg, "--checkpoint", bad,
                           "--work-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT / "tests")))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: checkpoint {bad!r} is truncated or corrupt")


def test_directory_as_checkpoint(trained, tmp_path):
    cfg, ckpt = trained
    with pytest.raises(StartupError, match="is a directory"):
        test_tool.main([cfg, "--checkpoint", str(ckpt.parent)])
    with pytest.raises(StartupError, match="is a directory"):
        train_tool.main([cfg, "--work-dir", str(tmp_path), "--resume", str(ckpt.parent)])
    with pytest.raises(CheckpointError, match="is a directory"):  # pretrained weights, timm's path
        load_checkpoint_file(str(ckpt.parent))


def test_corrupt_image_is_named(tmp_path, data):
    import shutil
    root = tmp_path / "digits"
    shutil.copytree(data["digits"], root)
    victim = sorted((root / "train" / "3").glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:40])  # PNG header, then nothing
    cfg = _cls_config(tmp_path, dict(data, digits=str(root)), "corrupt_img.py", epochs=1)
    with pytest.raises(DataFileError, match=rf"cannot read '{victim}'"):
        train_tool.main([cfg, "--work-dir", str(tmp_path / "wd"), *ONE_BATCH])


def test_corrupt_annotation_file_is_named(tmp_path, data):
    import shutil
    coco = tmp_path / "coco"
    shutil.copytree(osp.join(data["shapes"], "coco"), coco)
    ann = coco / "annotations" / "instances_train.json"
    ann.write_bytes(ann.read_bytes()[:100])
    with pytest.raises(DataFileError, match=r"annotation file 'annotations/instances_train.json'.*truncated"):
        train_tool.main([str(DET_CONFIG), "--work-dir", str(tmp_path / "wd"), "--data-root", str(coco),
                         "--cfg-options", "train_cfg.max_epochs=1"])


# ------------------------------------------------------------------------------ bad arguments
def test_cfg_option_of_the_wrong_type_or_without_equals(trained):
    cfg, _ = trained
    with pytest.raises(ConfigKeyError, match=r"train_cfg\.max_epochs='abc'.*is an int in the config"):
        train_tool.main([cfg, "--cfg-options", "train_cfg.max_epochs=abc"])
    with pytest.raises(ConfigKeyError, match=r"optim_wrapper\.optimizer\.lr='fast'.*a number"):
        train_tool.main([cfg, "--cfg-options", "optim_wrapper.optimizer.lr=fast"])
    with pytest.raises(StartupError, match=r"'train_cfg\.max_epochs' is not KEY=VALUE"):
        train_tool.main([cfg, "--cfg-options", "train_cfg.max_epochs"])
    with pytest.raises(StartupError, match="--img-size: invalid int value"):
        train_tool.main([cfg, "--img-size", "big"])


def test_batch_larger_than_dataset(trained, tmp_path):
    cfg, _ = trained  # 30 training images, drop_last=True
    with pytest.raises(StartupError, match=r"has 30 sample\(s\), fewer than one batch of batch_size=64.*drop_last"):
        train_tool.main([cfg, "--work-dir", str(tmp_path), "--cfg-options", "train_dataloader.batch_size=64"])


def test_head_with_more_classes_than_the_dataset_warns(trained, tmp_path):
    cfg, _ = trained
    train_tool.main([cfg, "--work-dir", str(tmp_path), *ONE_BATCH, "model.num_classes=1000"])
    log = next(tmp_path.glob("*/*.log")).read_text()
    assert "model.num_classes=1000 but the training set has 10 classes" in log


def test_missing_files_found_at_start_in_one_line(trained, tmp_path, data):
    """A missing pretrained file (timm's own model through ``pretrained``, a VZooBackbone ``init_cfg``),
    evaluator annotation file and data root are all named by the start-up check, before any building."""
    cfg = _cls_config(tmp_path, data, "pretrained.py", extra=(
        "model = dict(arch='test_efficientnet', pretrained='/nope/resnet.pth')"))
    with pytest.raises(DatasetPathError) as info:
        train_tool.main([cfg, "--cfg-options", "val_dataloader.dataset.data_root=/nope/digits"])
    msg = str(info.value)
    assert "\n" not in msg and "model.pretrained='/nope/resnet.pth'" in msg and "'/nope/digits'" in msg
    det = tmp_path / "det_pretrained.py"
    det.write_text(f"_base_ = [{str(DET_CONFIG)!r}]\n"
                   "model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='/nope/r10.pth')))\n")
    coco = osp.join(data["shapes"], "coco")
    bad_ann = ["--cfg-options", "val_evaluator.ann_file=/nope/instances_val.json"]
    with pytest.raises(DatasetPathError) as info:
        train_tool.main([str(det), "--data-root", coco, *bad_ann])
    msg = str(info.value)
    assert "val_evaluator.ann_file='/nope/instances_val.json'" in msg
    assert "model.backbone.init_cfg.checkpoint='/nope/r10.pth'" in msg
    # --from-scratch drops the pretrained file: the only problem left is the evaluator's
    with pytest.raises(DatasetPathError) as info:
        train_tool.main([str(det), "--data-root", coco, "--from-scratch", *bad_ann])
    assert "r10.pth" not in str(info.value) and "instances_val.json" in str(info.value)
