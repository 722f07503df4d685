#!/usr/bin/env python
"""Evaluate a checkpoint of any vzoo task on the config's test set.

    python tools/test.py CONFIG --checkpoint CKPT [--out FILE] [--show-dir D] [--work-dir D] [--cfg-options k=v ...]
        [--data-root DIR] [--num-classes [N]] [--img-size S] [--from-scratch]

``--out x.json`` writes the metrics as JSON; ``--out x.pkl`` dumps the raw predictions (mmengine's
``DumpResults``). ``--show-dir D`` draws each test image's prediction next to its ground truth (boxes,
segmentation maps, class names, SR side-by-side) into ``D/<n>_<image>.png`` and a grid of them into
``D/gallery.png``, the same layout for every task (:mod:`vzoo.tasks.visualization`).
A checkpoint of another model fails at start, naming the keys that do not match.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout without install


def parse_args(argv=None):
    from vzoo.tasks.engine.startup import parse_tool_args, tool_parser
    p = tool_parser(__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by tools/train.py")
    p.add_argument("--out", help="metrics as .json, or raw predictions as .pkl")
    p.add_argument("--show-dir", help="write predictions drawn on the images here")
    return parse_tool_args(p, argv)


def main(argv=None):
    args = parse_args(argv)
    from vzoo.tasks.engine import StartupError, build_runner, check_checkpoint_arg, setup_cfg

    check_checkpoint_arg("--checkpoint", args.checkpoint)
    if args.out and not args.out.endswith((".json", ".pkl", ".pickle")):
        raise StartupError(f"--out must end with .json (metrics) or .pkl/.pickle (predictions), got {args.out!r}")
    cfg = setup_cfg(args, "test")
    cfg.load_from, cfg.resume = args.checkpoint, False
    if args.show_dir:
        vis = (cfg.get("default_hooks") or {}).get("visualization")
        if vis is None:
            raise StartupError(f"--show-dir: {args.config} has no default_hooks.visualization to draw with")
        show_dir = osp.abspath(args.show_dir)
        os.makedirs(show_dir, exist_ok=True)
        from vzoo.tasks.visualization import configure_show_dir
        configure_show_dir(cfg, show_dir)  # one layout for every task; drawing errors never lose the metrics

    runner = build_runner(cfg)
    if args.out and not args.out.endswith(".json"):
        from mmengine.evaluator import DumpResults
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    metrics = runner.test()
    if args.out and args.out.endswith(".json"):
        from mmengine.dist import is_main_process
        if is_main_process():
            from vzoo.utils import atomic_write_text
            atomic_write_text(args.out, json.dumps({k: _plain(v) for k, v in metrics.items()}, indent=2))
    return metrics


def _plain(v):
    """A metric value as JSON: numpy / torch scalars (mmseg gives np.float32) become floats."""
    if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
        v = v.item()
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


if __name__ == "__main__":
    from vzoo.tasks.engine.startup import run_cli
    run_cli(main)
