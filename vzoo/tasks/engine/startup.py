"""The start-up code of ``tools/train.py`` and ``tools/test.py``: their shared command-line options, the
config set-up, the runner build, and the checks run before building anything, so that a typo or a
missing dataset fails at once with a message naming the problem (not minutes later, deep inside
a data loader); :func:`run_cli` prints such a problem as one line."""
from __future__ import annotations

import argparse
import difflib
import errno
import os
import os.path as osp
import sys
from typing import Callable, Dict, Iterable, List, Tuple

__all__ = ["StartupError", "DataFileError", "ConfigKeyError", "DatasetPathError", "check_cfg_options",
           "check_dataset_paths", "check_input_files", "check_checkpoint_arg", "check_train_batches",
           "pretrained_refs", "tool_parser", "parse_tool_args", "setup_cfg", "build_runner", "run_cli"]

# top-level keys mmengine's Runner reads even when a config does not set them
RUNNER_KEYS = frozenset({
    "work_dir", "experiment_name", "randomness", "env_cfg", "log_level", "resume", "load_from", "launcher",
    "default_scope", "auto_scale_lr", "log_processor", "visualizer", "custom_hooks", "default_hooks",
    "train_cfg", "val_cfg", "test_cfg", "param_scheduler", "optim_wrapper", "val_evaluator", "test_evaluator",
    "train_dataloader", "val_dataloader", "test_dataloader", "cfg", "custom_imports"})


class StartupError(RuntimeError):
    """A problem with the command line found before anything is built (tools print it as one line)."""


class DataFileError(StartupError):
    """An image or annotation file of a dataset that cannot be read (corrupt, truncated); names the file."""


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


def _lookup(cfg, parts: List[str]):
    for part in parts:
        cfg = cfg[part] if isinstance(cfg, dict) else cfg[int(part)]
    return cfg


def _check_value_type(key: str, current, value) -> None:
    """A number or a bool in the config must stay one or become None (``train_cfg.max_epochs=abc`` would
    fail much later)."""
    if value is None:
        return
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigKeyError(f"--cfg-options {key}={value!r}: {key} is a bool in the config (now {current!r}); "
                                 "give True or False")
    elif isinstance(current, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            kind = "an int" if isinstance(current, int) else "a number"
            raise ConfigKeyError(f"--cfg-options {key}={value!r}: {key} is {kind} in the config (now {current!r}); "
                                 f"give {kind}")


def check_cfg_options(cfg, options: Dict[str, object]) -> None:
    """Every ``--cfg-options`` key must exist in the config (or be a key mmengine's Runner reads).

    A new key would be silently ignored or half-used by whatever builds that part (a typo such as
    ``train_cfg.max_epoch=3`` would train for the configured number of epochs), so it is an error;
    to add a new key, write a config that inherits this one (``_base_ = ['CONFIG']``).
    """
    cfg = getattr(cfg, "_cfg_dict", cfg)  # mmengine's Config wraps a ConfigDict (a dict)
    for key, value in (options or {}).items():
        parts = key.split(".")
        found, where, keys = _walk(cfg, parts)
        if found:
            _check_value_type(key, _lookup(cfg, parts), value)
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
    _raise_missing(_dataset_path_problems(cfg, which))


def _is_remote(path: str) -> bool:
    return "://" in path  # checked by its storage backend / downloaded by mmengine or timm


def _evaluator_problems(cfg, which: Iterable[str]) -> List[str]:
    """``ann_file`` of the evaluators: mmdet's ``CocoMetric`` opens it as given (not below a ``data_root``)."""
    problems = []
    for split in which:
        evaluator = cfg.get(f"{split}_evaluator")
        for i, metric in enumerate(evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]):
            ann = metric.get("ann_file") if isinstance(metric, dict) else None
            where = f"{split}_evaluator" + (f".{i}" if isinstance(evaluator, (list, tuple)) else "")
            if isinstance(ann, str) and ann and not _is_remote(ann) and not osp.isfile(ann):
                problems.append(f"{where}.ann_file={ann!r} does not exist")
    return problems


def pretrained_refs(node, where: str = "model") -> Iterable[Tuple[str, dict, str]]:
    """Every place in a model config that loads weights from a file: ``(config key, the dict, its key)``
    for ``init_cfg=dict(type='Pretrained', checkpoint=...)`` (mmengine, mmdet, mmseg, ``VZooBackbone``),
    a ``pretrained='PATH'`` string (``TimmClassifier``, mmseg's segmentors) and timm's
    ``pretrained_cfg_overlay=dict(file=...)``."""
    if isinstance(node, dict):
        if node.get("type") == "Pretrained" and isinstance(node.get("checkpoint"), str):
            yield f"{where}.checkpoint", node, "checkpoint"
        if isinstance(node.get("pretrained"), str):
            yield f"{where}.pretrained", node, "pretrained"
        overlay = node.get("pretrained_cfg_overlay")
        if isinstance(overlay, dict) and isinstance(overlay.get("file"), str):
            yield f"{where}.pretrained_cfg_overlay.file", overlay, "file"
        for k, v in node.items():
            if k != "pretrained_cfg_overlay":
                yield from pretrained_refs(v, f"{where}.{k}")
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from pretrained_refs(v, f"{where}.{i}")


def _pretrained_problems(cfg, mode: str) -> List[str]:
    """Testing loads the checkpoint over the model: only weights read while building it (timm's
    ``pretrained``) are needed then, not ``init_cfg`` ones (read by ``init_weights`` when training)."""
    refs = [(key, holder[name]) for key, holder, name in pretrained_refs(cfg.get("model"))
            if mode == "train" or name != "checkpoint"]
    if mode == "train" and not cfg.get("resume") and isinstance(cfg.get("load_from"), str):
        refs.append(("load_from", cfg["load_from"]))
    import timm  # a VZooBackbone init_cfg checkpoint may be a model name: its published weights (vzoo.hub)
    return [f"{key}={path!r} does not exist" for key, path in refs
            if path and not _is_remote(path) and not osp.exists(path) and not timm.is_model(path)]


def check_input_files(cfg, mode: str) -> None:
    """The start-up check: every file and folder a run of ``mode`` ('train': the train and val sets,
    else the test set) reads -- dataset paths, evaluator annotation files, pretrained weights -- exists.
    All missing ones are named in one :class:`DatasetPathError`."""
    which = ("train", "val") if mode == "train" else ("test",)
    _raise_missing(_dataset_path_problems(cfg, which) + _evaluator_problems(cfg, which)
                   + _pretrained_problems(cfg, mode))


def _raise_missing(problems: List[str]) -> None:
    if problems:
        raise DatasetPathError(f"missing file(s) or folder(s): {'; '.join(problems)} (relative paths are from "
                               f"{os.getcwd()}; for the embedded demo data run `make demo` or "
                               "`python tools/demo.py --data-only`)")


def _dataset_path_problems(cfg, which: Iterable[str]) -> List[str]:
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
                if not _is_remote(full) and not osp.exists(full):
                    problems.append(f"{where}.{key}={p!r} -> {full!r} does not exist")
    return problems


def check_checkpoint_arg(option: str, path: str) -> None:
    """``--checkpoint`` / ``--resume`` name an existing file (not a folder)."""
    if osp.isdir(path):
        raise StartupError(f"{option}: {path!r} is a directory; give a checkpoint file in it (such as its "
                           f"epoch_N.pth / iter_N.pth), or for --resume no value to take the newest one")
    if not osp.isfile(path):
        raise StartupError(f"{option}: checkpoint not found: {path!r}")


def check_train_batches(dataloader) -> None:
    """A training loader must give at least one batch: with ``drop_last=True`` a dataset smaller than the
    batch gives none, and mmengine fails later with "``epoch_length`` must be a positive integer"."""
    if dataloader is None or not hasattr(dataloader, "__len__") or len(dataloader) > 0:
        return
    size = len(dataloader.dataset)
    if size == 0:
        raise StartupError("train_dataloader: the training set is empty (0 samples)")
    batch = dataloader.batch_size or getattr(dataloader.batch_sampler, "batch_size", None)
    raise StartupError(f"train_dataloader: the training set has {size} sample(s), fewer than one batch of "
                       f"batch_size={batch} with drop_last: no training iteration; use a smaller batch "
                       f"(--cfg-options train_dataloader.batch_size={size}) or train_dataloader.drop_last=False")


# ------------------------------------------------------------------------------------------- the tools
class _ToolArgumentParser(argparse.ArgumentParser):
    """A bad option is a :class:`StartupError` (one ``error:`` line through :func:`run_cli`, exit status 2)
    instead of argparse's usage block; ``--help`` is unchanged."""

    def error(self, message):
        raise StartupError(f"{message} (see {self.prog} --help)")


def _count_or_auto(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or no value, got {text!r}") from None


def tool_parser(description: str) -> argparse.ArgumentParser:
    """The options ``tools/train.py`` and ``tools/test.py`` share: CONFIG, ``--work-dir``, ``--cfg-options``,
    the data options (:mod:`.data_options`), ``--launcher`` (and torch.distributed.launch's ``--local-rank``)."""
    p = _ToolArgumentParser(description=description)
    p.add_argument("config", help="the config file")
    p.add_argument("--work-dir", help="where logs and checkpoints go (default: work_dirs/<config name>)")
    p.add_argument("--data-root", metavar="DIR",
                   help="the dataset folder, in the task's standard layout (ImageNet folders, COCO, ADE20K-style, "
                        "SR HR[/LR] folders): sets every dataloader's data_root and the evaluators' ann_file")
    p.add_argument("--num-classes", nargs="?", const="auto", type=_count_or_auto, metavar="N",
                   help="classes of the model's heads; without N, counted from the dataset (class folders, COCO "
                        "categories)")
    p.add_argument("--img-size", type=int, metavar="S",
                   help="network input size (classification input, detection/segmentation crop or longest side, "
                        "restoration LR training patch)")
    p.add_argument("--from-scratch", action="store_true",
                   help="no pretrained weights (drops init_cfg Pretrained, pretrained files, load_from)")
    p.add_argument("--cfg-options", nargs="+", action=_cfg_options_action(), default={},
                   help="override config keys, e.g. train_cfg.max_epochs=3 (the key must exist in the config)")
    p.add_argument("--launcher", choices=["none", "pytorch"], default="none", help="'pytorch' under torchrun (DDP)")
    p.add_argument("--local-rank", "--local_rank", type=int, default=0, help=argparse.SUPPRESS)
    return p


def _cfg_options_action():
    from mmengine.config import DictAction

    class CfgOptionsAction(DictAction):
        """mmengine's ``DictAction``; an item without ``=`` is a :class:`StartupError` naming it (mmengine's
        raises a bare ``ValueError: not enough values to unpack``)."""

        def __call__(self, parser, namespace, values, option_string=None):
            for item in values or []:
                if "=" not in item:
                    raise StartupError(f"--cfg-options: {item!r} is not KEY=VALUE (e.g. train_cfg.max_epochs=3)")
            super().__call__(parser, namespace, values, option_string)

    return CfgOptionsAction


def parse_tool_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    return args


def setup_cfg(args, mode: str):
    """Load the config, apply the data options (``--data-root`` ...) and then --cfg-options (checked), set
    work dir / launcher / dist backend, and check the input files of ``mode`` (:func:`check_input_files`)."""
    import torch
    from mmengine.config import Config

    if not osp.isfile(args.config):
        raise StartupError(f"config not found: {args.config!r}")
    cfg = Config.fromfile(args.config)
    from .data_options import apply_data_options
    apply_data_options(cfg, args, mode)  # first: an explicit --cfg-options key wins over them
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
    check_input_files(cfg, mode)
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
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        print(f"error: no space left on device ({e.filename or e}): the checkpoints written before are complete; "
              "free some space and continue with --resume", file=sys.stderr, flush=True)
        sys.exit(2)
