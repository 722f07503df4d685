#!/usr/bin/env python
"""Train any vzoo task (classification, detection, segmentation, restoration) from an mmengine config.

    python tools/train.py CONFIG [--work-dir D] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]
        [--data-root DIR] [--num-classes [N]] [--img-size S] [--from-scratch]
    torchrun --nproc-per-node N tools/train.py CONFIG --launcher pytorch     # DDP (NCCL on GPUs, gloo on CPUs)
    torchrun --nnodes M --node-rank R --master-addr HOST --master-port P --nproc-per-node N \\
        tools/train.py CONFIG --launcher pytorch                            # several machines

One code path for every task: the config's ``default_scope`` ('vzoo', 'mmdet', 'mmseg') picks the
registries; the runner is :class:`vzoo.tasks.engine.VZooRunner` (atomic checkpoints, safe resume), or,
as in mmdet's ``tools/train.py``, the config's ``runner_type`` from the ``RUNNERS`` registry.
``--resume`` without a file resumes from the newest checkpoint in the work dir (a fresh start if
there is none); checkpoints are written every ``default_hooks.checkpoint.interval`` and at the end.
The log shows progress with an ETA; ``curves.png`` (losses, lr, metrics) lands in the work dir.
"""
from __future__ import annotations

import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout without install


def parse_args(argv=None):
    from vzoo.tasks.engine.startup import parse_tool_args, tool_parser
    p = tool_parser(__doc__.split("\n")[0])
    p.add_argument("--resume", nargs="?", type=str, const="auto",
                   help="resume from CKPT, or (no value) from the newest checkpoint in the work dir")
    p.add_argument("--amp", action="store_true", help="automatic mixed precision (needs a CUDA GPU)")
    return parse_tool_args(p, argv)


def main(argv=None):
    args = parse_args(argv)
    import torch

    from vzoo.tasks.engine import StartupError, build_runner, check_checkpoint_arg, find_resume_checkpoint, setup_cfg

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
        check_checkpoint_arg("--resume", args.resume)
        cfg.resume, cfg.load_from = True, args.resume

    runner = build_runner(cfg)
    runner.train()
    return runner


if __name__ == "__main__":
    from vzoo.tasks.engine.startup import run_cli
    run_cli(main)
