#!/usr/bin/env python
"""Evaluate a checkpoint of any vzoo task on the config's test set.

    python tools/test.py CONFIG --checkpoint CKPT [--out FILE] [--show-dir D] [--work-dir D] [--cfg-options k=v ...]

``--out x.json`` writes the metrics as JSON; ``--out x.pkl`` dumps the raw predictions (mmengine's
``DumpResults``). ``--show-dir D`` draws the predictions (boxes and masks, segmentation maps, class
names, SR side-by-side) into D through the config's ``default_hooks.visualization``.
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


def _hook_arguments(cfg, hook_type) -> set:
    """The constructor arguments of a hook type, looked up in the config's default scope."""
    import inspect

    from mmengine.registry import HOOKS
    if isinstance(hook_type, str):
        with HOOKS.switch_scope_and_registry(cfg.get("default_scope")) as registry:
            cls = registry.get(hook_type)
    else:
        cls = hook_type
    return set(inspect.signature(cls.__init__).parameters) if cls is not None else set()


def main(argv=None):
    args = parse_args(argv)
    from vzoo.tasks.engine import StartupError, build_runner, setup_cfg

    if not osp.isfile(args.checkpoint):
        raise StartupError(f"--checkpoint: file not found: {args.checkpoint!r}")
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
        vis.draw, vis.interval = True, 1
        if "test_out_dir" in _hook_arguments(cfg, vis["type"]):  # mmdet's, vzoo's hooks
            vis.test_out_dir = show_dir
        else:  # mmseg's hook draws through the visualizer's backends
            cfg.visualizer["save_dir"] = show_dir

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
