"""The start-up code of ``tools/train.py`` and ``tools/test.py``: their shared command-line options, the
config set-up, the runner build, and the checks run before building anything, so that a typo or a
missing dataset fails at once with a message naming the problem (not minutes later, deep inside
a data loader); :func:`run_cli` prints such a problem as one line."""
from __future__ import annotations

import argparse
import difflib
import os
import os.path as osp
import sys
from typing import Callable, Dict, Iterable, List, Tuple

__all__ = ["StartupError", "ConfigKeyError", "DatasetPathError", "check_cfg_options", "check_dataset_paths",
           "tool_parser", "parse_tool_args", "setup_cfg", "build_runner", "run_cli"]

# top-level keys mmengine's Runner reads even when a config does not set them
RUNNER_KEYS = frozenset({
    "work_dir", "experiment_name", "randomness", "env_cfg", "log_level", "resume", "load_from", "launcher",
    "default_scope", "auto_scale_lr", "log_processor", "visualizer", "custom_hooks", "default_hooks",
    "train_cfg", "val_cfg", "test_cfg", "param_scheduler", "optim_wrapper", "val_evaluator", "test_evaluator",
    "train_dataloader", "val_dataloader", "test_dataloader", "cfg", "custom_imports"})


class StartupError(RuntimeError):
    """A problem with the command line found before anything is built (tools print it as one line)."""


class ConfigKeyError(KeyError):
    def __str__(self):  # KeyError quotes its message; print it plainly
        return str(self.args[0])


class DatasetPathError(FileNotFoundError):
    pass


def _walk(cfg, parts: List[str]) -> Tuple[bool, str, list]:
    """Follow ``parts`` into ``cfg``; (found, the deepest existing path, the keys there)."""
    node, seen = cfg, []
    for part in parts:
        if isinstance(node, dict):
            if part not in node:
                return False, ".".join(seen), list(node.keys())
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            return False, ".".join(seen), []
        seen.append(part)
    return True, ".".join(seen), []


def check_cfg_options(cfg, options: Dict[str, object]) -> None:
    """Every ``--cfg-options`` key must exist in the config (or be a key mmengine's Runner reads).

    A new key would be silently ignored or half-used by whatever builds that part (a typo such as
    ``train_cfg.max_epoch=3`` would train for the configured number of epochs), so it is an error;
    to add a new key, write a config that inherits this one (``_base_ = ['CONFIG']``).
    """
    cfg = getattr(cfg, "_cfg_dict", cfg)  # mmengine's Config wraps a ConfigDict (a dict)
    for key in options or {}:
        parts = key.split(".")
        found, where, keys = _walk(cfg, parts)
        if found:
            continue
        if len(parts) == 1 and key in RUNNER_KEYS:
            continue
        missing = parts[len(where.split(".")) if where else 0]
        close = difflib.get_close_matches(missing, [str(k) for k in keys], n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        known = f" (keys there: {', '.join(sorted(map(str, keys)))[:300]})" if keys else ""
        raise ConfigKeyError(f"--cfg-options: unknown config key {key!r}: {missing!r} is not in "
                             f"{where or 'the config'}{known}{hint}. To add a key the config does not have, "
                             "write a config that inherits it (_base_ = [...]).")


def _datasets(node, where: str) -> Iterable[Tuple[str, dict]]:
    if not isinstance(node, dict):
        return
    yield where, node
    if isinstance(node.get("dataset"), dict):
        yield from _datasets(node["dataset"], where + ".dataset")
    for i, d in enumerate(node.get("datasets") or []):
        yield from _datasets(d, f"{where}.datasets.{i}")


_PATH_KEYS_SUFFIX = ("_folder", "_dir")


def _join(root: str, p: str) -> str:
    return p if (not root or osp.isabs(p)) else osp.join(root, p)


def check_dataset_paths(cfg, which: Iterable[str] = ("train", "val", "test")) -> None:
    """Every dataset path a dataloader's dataset names (``data_root``, ``ann_file``, ``data_prefix``
    entries, ``*_folder`` / ``*_dir``) must exist; the error names the config key and the path."""
    problems = []
    for split in which:
        loader = cfg.get(f"{split}_dataloader")
        if not isinstance(loader, dict):
            continue
        for where, ds in _datasets(loader.get("dataset"), f"{split}_dataloader.dataset"):
            root = ds.get("data_root") or ""
            if root and not osp.isdir(root):
                problems.append(f"{where}.data_root={root!r} does not exist")
                continue
            candidates = []
            if isinstance(ds.get("ann_file"), str) and ds["ann_file"]:
                candidates.append(("ann_file", ds["ann_file"]))
            prefix = ds.get("data_prefix")
            if isinstance(prefix, dict):
                candidates += [(f"data_prefix.{k}", v) for k, v in prefix.items() if isinstance(v, str) and v]
            elif isinstance(prefix, str) and prefix:
                candidates.append(("data_prefix", prefix))
            candidates += [(k, v) for k, v in ds.items()
                           if k.endswith(_PATH_KEYS_SUFFIX) and isinstance(v, str) and v]
            for key, p in candidates:
                full = _join(root, p)
                if "://" in full:
                    continue  # remote storage: checked by its backend
                if not osp.exists(full):
                    problems.append(f"{where}.{key}={p!r} -> {full!r} does not exist")
    if problems:
        cwd = os.getcwd()
        raise DatasetPathError("dataset path(s) missing (relative paths are from " + cwd + "):\n  "
                               + "\n  ".join(problems)
                               + "\n(for the embedded demo data run `make demo` or `python tools/demo.py --data-only`)")


# ------------------------------------------------------------------------------------------- the tools
def tool_parser(description: str) -> argparse.ArgumentParser:
    """The options ``tools/train.py`` and ``tools/test.py`` share: CONFIG, ``--work-dir``, ``--cfg-options``,
    ``--launcher`` (and torch.distributed.launch's ``--local-rank``)."""
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=description)
    p.add_argument("config", help="the config file")
    p.add_argument("--work-dir", help="where logs and checkpoints go (default: work_dirs/<config name>)")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                   help="override config keys, e.g. train_cfg.max_epochs=3 (the key must exist in the config)")
    p.add_argument("--launcher", choices=["none", "pytorch"], default="none", help="'pytorch' under torchrun (DDP)")
    p.add_argument("--local-rank", "--local_rank", type=int, default=0, help=argparse.SUPPRESS)
    return p


def parse_tool_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    return args


def setup_cfg(args, mode: str):
    """Load the config, apply and check --cfg-options, set work dir / launcher / dist backend, and check
    the dataset paths of ``mode`` ('train': train and val, else test)."""
    import torch
    from mmengine.config import Config

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


def build_runner(cfg):
    """The runner of ``cfg``, by mmdet's rule: a config naming a ``runner_type`` gets that runner from the
    ``RUNNERS`` registry (looked up in the config's ``default_scope``; vzoo's own is ``'VZooRunner'``),
    any other :class:`~vzoo.tasks.engine.VZooRunner`."""
    if "runner_type" not in cfg:
        from .runner import VZooRunner
        return VZooRunner.from_cfg(cfg)
    from mmengine.registry import RUNNERS
    with RUNNERS.switch_scope_and_registry(cfg.get("default_scope")) as registry:
        return registry.build(cfg)


def run_cli(main_fn: Callable[[], object]) -> None:
    """Run ``main_fn``; a problem found at start (bad option, missing dataset or checkpoint, a
    checkpoint of another model) is printed as one line naming it, exit status 2."""
    from ...models import CheckpointError
    try:
        main_fn()
    except (StartupError, ConfigKeyError, DatasetPathError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
