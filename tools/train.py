#!/usr/bin/env python
"""Train any vzoo task (classification, detection, segmentation, restoration) from an mmengine config.

    python tools/train.py CONFIG [--work-dir D] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]
    torchrun --nproc-per-node N tools/train.py CONFIG --launcher pytorch     # DDP (NCCL on GPUs, gloo on CPUs)
    torchrun --nnodes M --node-rank R --master-addr HOST --master-port P --nproc-per-node N \\
        tools/train.py CONFIG --launcher pytorch                            # several machines

One code path for every task: the config's ``default_scope`` ('vzoo', 'mmdet', 'mmseg') picks the
registries; the runner is :class:`vzoo.tasks.engine.VZooRunner` (atomic checkpoints, safe resume).
``--resume`` without a file resumes from the newest checkpoint in the work dir (a fresh start if
there is none); checkpoints are written every ``default_hooks.checkpoint.interval`` and at the end.
The log shows progress with an ETA; ``curves.png`` (losses, lr, metrics) lands in the work dir.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout without install


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config", help="the config file")
    p.add_argument("--work-dir", help="where logs and checkpoints go (default: work_dirs/<config name>)")
    p.add_argument("--resume", nargs="?", type=str, const="auto",
                   help="resume from CKPT, or (no value) from the newest checkpoint in the work dir")
    p.add_argument("--amp", action="store_true", help="automatic mixed precision (needs a CUDA GPU)")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                   help="override config keys, e.g. train_cfg.max_epochs=3 (the key must exist in the config)")
    p.add_argument("--launcher", choices=["none", "pytorch"], default="none",
                   help="'pytorch' under torchrun (DDP)")
    p.add_argument("--local-rank", "--local_rank", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    return args


def setup_cfg(args, mode: str):
    """Load the config, apply and check --cfg-options, set work dir / launcher / dist backend."""
    import torch
    from mmengine.config import Config

    from vzoo.tasks.engine import StartupError, check_cfg_options, check_dataset_paths

    if not osp.isfile(args.config):
        raise StartupError(f"config not found: {args.config!r}")
    cfg = Config.fromfile(args.config)
    check_cfg_options(cfg, args.cfg_options)
    cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = getattr(args, "launcher", "none")
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir") is None:
        cfg.work_dir = osp.join("work_dirs", osp.splitext(osp.basename(args.config))[0])
    if cfg.launcher != "none" and not torch.cuda.is_available():
        # NCCL needs GPUs: DDP on CPUs runs over gloo (the same config otherwise). mmengine's
        # init_dist calls torch.cuda.set_device whatever the backend, so the gloo group is made
        # here from torchrun's environment; the Runner then finds it initialised and keeps it.
        cfg.setdefault("env_cfg", {}).setdefault("dist_cfg", {})["backend"] = "gloo"
        import torch.distributed as dist
        if cfg.launcher == "pytorch" and dist.is_available() and not dist.is_initialized():
            dist.init_process_group(backend="gloo", init_method="env://")
        # mmengine's default wrapper passes device_ids=[LOCAL_RANK], which DDP refuses for CPU modules
        if cfg.get("model_wrapper_cfg") is None:
            cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False,
                                         find_unused_parameters=cfg.get("find_unused_parameters", False))
    check_dataset_paths(cfg, ("train", "val") if mode == "train" else ("test",))
    return cfg


def run_cli(main_fn) -> None:
    """Run ``main_fn``; a problem found at start (bad option, missing dataset or checkpoint, a
    checkpoint of another model) is printed as one line naming it, exit status 2."""
    from vzoo.tasks.engine import CheckpointMismatchError, ConfigKeyError, DatasetPathError, StartupError
    try:
        main_fn()
    except (StartupError, ConfigKeyError, DatasetPathError, CheckpointMismatchError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


def main(argv=None):
    args = parse_args(argv)
    import torch

    from vzoo.tasks.engine import CurvePlotHook, StartupError, VZooRunner, find_resume_checkpoint

    cfg = setup_cfg(args, "train")
    if args.amp:
        if not torch.cuda.is_available():
            raise StartupError("--amp needs a CUDA GPU (mmengine's AmpOptimWrapper); none is available")
        ow = cfg.optim_wrapper
        if ow.get("type", "OptimWrapper") != "AmpOptimWrapper":
            ow.type = "AmpOptimWrapper"
            ow.setdefault("loss_scale", "dynamic")
    if args.resume == "auto":
        ckpt = find_resume_checkpoint(cfg.work_dir) if osp.isdir(cfg.work_dir) else None
        if ckpt is None:
            print(f"--resume: no checkpoint in {cfg.work_dir!r}; starting from scratch", flush=True)
        else:
            cfg.resume, cfg.load_from = True, ckpt
    elif args.resume:
        if not osp.isfile(args.resume):
            raise StartupError(f"--resume: checkpoint not found: {args.resume!r}")
        cfg.resume, cfg.load_from = True, args.resume

    runner = VZooRunner.from_cfg(cfg)
    runner.register_hook(CurvePlotHook(), priority="LOW")
    runner.train()
    return runner


if __name__ == "__main__":
    run_cli(main)
