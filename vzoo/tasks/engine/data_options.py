"""The data options of ``tools/train.py`` / ``tools/test.py``: ``--data-root``, ``--num-classes``, ``--img-size``
and ``--from-scratch``, applied to a loaded config (:func:`apply_data_options`).

Each task's configs keep one standard layout below their ``data_root`` (ImageNet folders, COCO, ADE20K-style
folders, paired LR/HR folders; see ``docs/training.md``), so ``--data-root DIR`` only swaps that root: it
sets ``data_root`` of every dataset of every dataloader and re-roots the evaluators' ``ann_file`` (mmdet's
``CocoMetric`` reads it as given, not below a ``data_root``) on the ``ann_file`` of its loader's dataset.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Iterable, List, Optional

from .startup import StartupError, _datasets

__all__ = ["config_task", "apply_data_options", "set_data_root", "set_num_classes", "set_img_size", "drop_pretrained"]

_SPLITS = ("train", "val", "test")


def config_task(cfg) -> str:
    """'classification', 'detection', 'segmentation' or 'restoration', from the config's scope and model."""
    scope = cfg.get("default_scope") or ""
    if scope in ("mmdet", "mmseg"):
        return dict(mmdet="detection", mmseg="segmentation")[scope]
    model_type = str((cfg.get("model") or {}).get("type", "")).rsplit(".", 1)[-1]
    if model_type == "SRModel":
        return "restoration"
    if model_type.endswith("Classifier"):  # TimmClassifier and its subclasses (SparsifinerClassifier)
        return "classification"
    raise StartupError(f"cannot tell the task of this config (default_scope={scope!r}, model.type={model_type!r}); "
                       "the data options know mmdet, mmseg, vzoo *Classifier and SRModel configs")


def _all_datasets(cfg, splits: Iterable[str] = _SPLITS):
    """The datasets that read files: wrappers (``RepeatDataset``, ``ConcatDataset`` ...) are looked into."""
    for split in splits:
        loader = cfg.get(f"{split}_dataloader")
        if isinstance(loader, dict):
            for _, ds in _datasets(loader.get("dataset"), f"{split}_dataloader.dataset"):
                if not ("dataset" in ds or "datasets" in ds):
                    yield split, ds


def _metrics(evaluator) -> list:
    if isinstance(evaluator, dict) and isinstance(evaluator.get("metrics"), (list, tuple)):
        return list(evaluator["metrics"])
    return list(evaluator) if isinstance(evaluator, (list, tuple)) else [evaluator]


def set_data_root(cfg, root: str) -> None:
    """``data_root=root`` for every dataset; each evaluator's ``ann_file`` becomes ``root/<its dataset's ann_file>``."""
    for _, ds in _all_datasets(cfg):
        ds["data_root"] = root
    for split in ("val", "test"):
        ds = _first_dataset(cfg, (split,))
        ann = ds.get("ann_file") if isinstance(ds, dict) else None
        for metric in _metrics(cfg.get(f"{split}_evaluator")):
            if isinstance(metric, dict) and "ann_file" in metric and isinstance(ann, str) and ann:
                metric["ann_file"] = ann if osp.isabs(ann) else osp.join(root, ann)


def _first_dataset(cfg, splits: Iterable[str]) -> Optional[dict]:
    return next((ds for _, ds in _all_datasets(cfg, splits)), None)


def _classes_from_dataset(cfg, task: str, mode: str) -> Optional[List[str]]:
    """The class names of the run's first dataset (the training set when training), None where the data
    carry none (segmentation masks and SR images)."""
    ds = _first_dataset(cfg, ("train",) if mode == "train" else ("test",))
    if ds is None:
        return None
    root = ds.get("data_root") or ""
    if task == "classification":
        folder = osp.join(root, ds.get("data_prefix") or "")
        if not osp.isdir(folder):
            raise StartupError(f"--num-classes: class folders not found: {folder!r} does not exist")
        return sorted(d.name for d in os.scandir(folder) if d.is_dir())
    if task == "detection" and isinstance(ds.get("ann_file"), str):
        ann = osp.join(root, ds["ann_file"])
        try:
            with open(ann, encoding="utf-8") as f:
                categories = json.load(f).get("categories") or []
        except (OSError, ValueError) as e:
            raise StartupError(f"--num-classes: cannot read the categories of {ann!r} ({type(e).__name__}: {e})") from e
        return [c["name"] for c in sorted(categories, key=lambda c: c["id"])]
    return None


def _set_key(node, key: str, value) -> int:
    """Set ``key`` to ``value`` wherever a dict below ``node`` has it; the number of places."""
    count = 0
    if isinstance(node, dict):
        if key in node:
            node[key] = value
            count += 1
        for k, v in node.items():
            if k != key:
                count += _set_key(v, key, value)
    elif isinstance(node, (list, tuple)):
        count += sum(_set_key(v, key, value) for v in node)
    return count


def set_num_classes(cfg, num_classes: Optional[int], task: str, mode: str) -> int:
    """Every ``num_classes`` of the model (the classifier, every detection / segmentation head) becomes
    ``num_classes``; ``None`` takes it from the dataset (class folders, COCO categories, which also become
    the datasets' ``metainfo.classes``). Returns the number used."""
    if task == "restoration":
        raise StartupError("--num-classes: a restoration model has no classes")
    names = None
    if num_classes is None:
        names = _classes_from_dataset(cfg, task, mode)
        if not names:
            raise StartupError(f"--num-classes: the {task} data name no classes (ADE20K-style masks carry no class "
                               "list); give the number, --num-classes N")
        num_classes = len(names)
    if num_classes < 1:
        raise StartupError(f"--num-classes: must be >= 1, got {num_classes}")
    if task == "classification":  # TimmClassifier: None means the architecture's default, so set it anyway
        cfg.model["num_classes"] = num_classes
    elif _set_key(cfg.get("model"), "num_classes", num_classes) == 0:
        raise StartupError("--num-classes: the model config has no num_classes to set")
    for _, ds in _all_datasets(cfg):
        meta = ds.get("metainfo")
        if task == "detection" and names:
            ds["metainfo"] = dict(meta or {}, classes=tuple(names))
        elif task == "segmentation" and isinstance(meta, dict) and len(meta.get("classes") or ()) != num_classes:
            # mmseg sizes its IoU metric from metainfo.classes; a palette of another length is refused
            ds["metainfo"] = dict(classes=tuple(f"class_{i}" for i in range(num_classes)))
    return num_classes


def _transforms(pipeline) -> Iterable[dict]:
    for t in pipeline or []:
        if isinstance(t, dict):
            yield t
            yield from _transforms(t.get("transforms"))


def _pipelines(cfg) -> Iterable[dict]:
    for _, ds in _all_datasets(cfg):
        yield from _transforms(ds.get("pipeline"))


def _scaled(scale, factor: float):
    if isinstance(scale, (list, tuple)) and scale and all(isinstance(s, (int, float)) for s in scale):
        return type(scale)(max(1, int(round(s * factor))) for s in scale)
    if isinstance(scale, (list, tuple)):  # RandomChoiceResize: a list of scales
        return type(scale)(_scaled(s, factor) for s in scale)
    return max(1, int(round(scale * factor))) if isinstance(scale, (int, float)) else scale


def _largest(size) -> Optional[int]:
    if isinstance(size, (int, float)):
        return int(size)
    flat = [s for s in size if isinstance(s, (int, float))] if isinstance(size, (list, tuple)) else []
    return int(max(flat)) if flat else None


def set_img_size(cfg, size: int, task: str) -> None:
    """The network input size: ``TimmTransform.input_size`` (classification; ``model.arch_kwargs.img_size``
    too where the config sets one), the LR training patch ``lr_size`` (restoration), and for detection and
    segmentation every pipeline size scaled by ``size`` / the config's own input size (the crop size, or the
    longest side of the test pipeline's ``Resize``), crops and the data preprocessor's ``size`` = (size, size)."""
    if size < 1:
        raise StartupError(f"--img-size: must be >= 1, got {size}")
    transforms = list(_pipelines(cfg))
    if task == "classification":
        for t in transforms:
            if "input_size" in t:
                t["input_size"] = size
        if isinstance((cfg.model.get("arch_kwargs") or {}).get("img_size"), (int, list, tuple)):
            cfg.model.arch_kwargs.img_size = size
        return
    if task == "restoration":
        for t in transforms:
            if "lr_size" in t:
                t["lr_size"] = size
        return
    preprocessor = cfg.model.get("data_preprocessor") or {}
    crops = [t["crop_size"] for t in transforms if "crop_size" in t] + (
        [preprocessor["size"]] if preprocessor.get("size") else [])
    tests = [t["scale"] for _, ds in _all_datasets(cfg, ("test", "val")) for t in _transforms(ds.get("pipeline"))
             if "Resize" in str(t.get("type", "")) and "scale" in t]
    reference = _largest(crops[0]) if crops else (_largest(tests[0]) if tests else None)
    if reference is None:
        raise StartupError(f"--img-size: this {task} config has no crop size or test Resize scale to change")
    factor = size / reference
    for t in transforms:
        if "Resize" in str(t.get("type", "")) and "scale" in t:
            t["scale"] = _scaled(t["scale"], factor)
        if "crop_size" in t:
            t["crop_size"] = (size, size)
    if preprocessor.get("size"):
        preprocessor["size"] = (size, size)


def drop_pretrained(node) -> None:
    """Remove every pretrained-weights reference from a model config (train from random init)."""
    if isinstance(node, dict):
        init = node.get("init_cfg")
        if isinstance(init, dict) and init.get("type") == "Pretrained":
            node["init_cfg"] = None
        elif isinstance(init, (list, tuple)):
            node["init_cfg"] = [i for i in init if not (isinstance(i, dict) and i.get("type") == "Pretrained")]
        if isinstance(node.get("pretrained"), str):
            node["pretrained"] = None
        elif node.get("pretrained") is True:
            node["pretrained"] = False
        if isinstance(node.get("pretrained_cfg_overlay"), dict):
            node["pretrained_cfg_overlay"].pop("file", None)
        for v in node.values():
            drop_pretrained(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            drop_pretrained(v)


def apply_data_options(cfg, args, mode: str) -> None:
    """Apply the tools' ``--data-root`` / ``--num-classes`` / ``--img-size`` / ``--from-scratch`` to ``cfg``."""
    data_root = getattr(args, "data_root", None)
    num_classes = getattr(args, "num_classes", None)
    img_size = getattr(args, "img_size", None)
    if getattr(args, "from_scratch", False):
        drop_pretrained(cfg.get("model"))
        cfg.load_from = None
    if data_root is None and num_classes is None and img_size is None:
        return
    task = config_task(cfg)
    if data_root is not None:
        if not osp.isdir(data_root):
            raise StartupError(f"--data-root: folder not found: {data_root!r}")
        set_data_root(cfg, data_root)
    if num_classes is not None:
        set_num_classes(cfg, None if num_classes == "auto" else num_classes, task, mode)
    if img_size is not None:
        set_img_size(cfg, img_size, task)
