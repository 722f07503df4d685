#!/usr/bin/env python
"""``make demo``: make the embedded datasets, train and evaluate one small model per task with the
real configs and tools (``tools/train.py``, ``tools/test.py``), and print how each does against its
trivial baseline on held-out data. The rows also go to ``work_dirs/demo/results.json``.

    python tools/demo.py [--tasks classification detection segmentation restoration] [--data-only]

Data (``data/demo``, see :mod:`vzoo.tasks.demo_data`): scikit-learn's digits (ImageNet folder),
procedural shapes (COCO json and ADE20K layout), scikit-image photographs (SR, HR only).
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

# task -> (config, metric key in tools/test.py's metrics, display name, scale to [0, 1] / dB, target)
TASKS = {
    "classification": dict(config="configs/classification/demo_digits.py", metric="accuracy/top1",
                           name="top-1 (digits val)", scale=1.0, target=("abs", 0.95)),
    "detection": dict(config="configs/detection/demo_shapes_fcos_resnet10t.py", metric="coco/bbox_mAP",
                      name="box mAP@[.5:.95] (shapes val)", scale=1.0, target=("abs", 0.5)),
    # starts from the demo detector's backbone (written by the detection task); from scratch without it
    "segmentation": dict(config="configs/segmentation/demo_shapes_fpn_resnet10t_from_det.py", metric="mIoU",
                         name="mIoU (shapes val)", scale=0.01, target=("abs", 0.6),
                         scratch_config="configs/segmentation/demo_shapes_fpn_resnet10t.py"),
    "restoration": dict(config="configs/restoration/demo_sr.py", metric="sr/PSNR",
                        name="PSNR-Y dB (photos val)", scale=1.0, target=("over_baseline", 0.3)),
}
_LOG_LINE = re.compile(r"mmengine - (INFO|WARNING|ERROR) - (Epoch\(|Iter\(|Saving checkpoint|.*curves written|"
                       r"Load checkpoint|resumed)")


def _say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def make_data(root: str) -> dict:
    from vzoo.tasks import demo_data
    t = time.time()
    _say(f"making the embedded datasets under {root}/ (digits, shapes, SR photos) ...")
    paths = dict(digits=demo_data.make_digits(osp.join(root, "digits")))
    _say(f"  digits ready ({time.time() - t:.0f}s)")
    paths["shapes"] = demo_data.make_shapes(osp.join(root, "shapes"))
    _say(f"  shapes ready: COCO json + ADE20K layout ({time.time() - t:.0f}s)")
    paths["sr"] = demo_data.make_sr(osp.join(root, "sr"))
    _say(f"  SR photos ready ({time.time() - t:.0f}s)")
    return paths


def _run(cmd, log_path: str) -> None:
    """Run a tool, keep its full log, show the progress lines (with ETA) as they come."""
    _say("$ " + " ".join(cmd))
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1)
        tail = []
        for line in proc.stdout:
            log.write(line)
            tail = (tail + [line])[-40:]
            if _LOG_LINE.search(line):
                print("    " + line.split(" - mmengine - ")[-1].rstrip(), flush=True)
        rc = proc.wait()
    if rc != 0:
        sys.stdout.write("".join(tail))
        raise RuntimeError(f"{cmd[1]} failed (exit {rc}); full log: {log_path}")


def _latest_checkpoint(work_dir: str) -> str:
    from vzoo.tasks.engine import find_resume_checkpoint
    ckpt = find_resume_checkpoint(work_dir)
    if ckpt is None:
        raise RuntimeError(f"no checkpoint in {work_dir}")
    return ckpt


def save_backbone(ckpt: str, dst: str) -> None:
    """The backbone tensors of a training checkpoint, saved as plain tensors (what ``VZooBackbone``'s
    ``init_cfg=dict(type='Pretrained', prefix=...)`` loads)."""
    from vzoo.tasks.engine.checkpoint import atomic_torch_save, load_runner_checkpoint
    sd = load_runner_checkpoint(ckpt)["state_dict"]
    atomic_torch_save({k: v for k, v in sd.items() if k.startswith("backbone.")}, dst)


# ---- trivial baselines, computed from the held-out data -------------------------------------------
def baseline_classification(data: dict) -> float:
    """Majority class of the training set, scored on val."""
    counts = {split: {c: len(os.listdir(osp.join(data["digits"], split, c)))
                      for c in os.listdir(osp.join(data["digits"], split))} for split in ("train", "val")}
    majority = max(counts["train"], key=counts["train"].get)
    return counts["val"][majority] / sum(counts["val"].values())


def baseline_detection(data: dict) -> float:
    return 0.0  # an empty detector has no true positives: AP 0 at every threshold


def baseline_segmentation(data: dict) -> float:
    """Everything predicted as background: IoU(background) = background fraction, 0 for the shapes."""
    import numpy as np
    from PIL import Image
    from vzoo.tasks.demo_data import SHAPE_CLASSES
    folder = osp.join(data["shapes"], "ade", "annotations", "validation")
    bg = tot = 0
    for f in os.listdir(folder):
        a = np.asarray(Image.open(osp.join(folder, f)))
        bg += int((a == 0).sum())
        tot += a.size
    return bg / tot / (1 + len(SHAPE_CLASSES))


def run_task(task: str, data: dict, work_root: str) -> dict:
    spec = dict(TASKS[task])
    options = []
    if task == "segmentation":
        det_backbone = osp.join(work_root, "detection", "backbone.pth")
        if osp.isfile(det_backbone):
            options = ["--cfg-options", f"model.backbone.init_cfg.checkpoint={det_backbone}"]
            _say(f"segmentation: backbone initialised from the demo detector's ({osp.relpath(det_backbone, ROOT)})")
        else:
            spec["config"] = spec["scratch_config"]
            _say("segmentation: no demo detector backbone (run the detection task first): training from scratch")
    config = osp.join(ROOT, spec["config"])
    row = dict(task=task, model=None, metric=spec["name"], value=None, baseline=None, target=None, passed=False,
               config=spec["config"], seconds=None)
    if not osp.isfile(config):
        row["error"] = f"config {spec['config']} is missing"
        _say(f"{task}: SKIPPED -- {row['error']}")
        return row
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    m = cfg.model
    row["model"] = (m.get("arch") or (m.get("backbone") or {}).get("model") or m.get("type"))
    if task in ("detection", "segmentation"):
        row["model"] = f"{m.type} + {row['model']}"
    wd = osp.join(work_root, task)
    t0 = time.time()
    py = sys.executable
    _run([py, "tools/train.py", config, "--work-dir", wd] + options, osp.join(work_root, f"{task}_train.log"))
    metrics_file = osp.join(wd, "test_metrics.json")
    ckpt = _latest_checkpoint(wd)
    _run([py, "tools/test.py", config, "--checkpoint", ckpt, "--work-dir", wd, "--out", metrics_file] + options,
         osp.join(work_root, f"{task}_test.log"))
    if task == "detection":
        save_backbone(ckpt, osp.join(wd, "backbone.pth"))
    with open(metrics_file) as f:
        metrics = json.load(f)
    row["seconds"] = round(time.time() - t0, 1)
    row["value"] = float(metrics[spec["metric"]]) * spec["scale"]
    if task == "restoration":
        row["baseline"] = float(metrics[spec["metric"] + "_bicubic"])
    else:
        row["baseline"] = globals()[f"baseline_{task}"](data)
    kind, thr = spec["target"]
    row["target"] = thr if kind == "abs" else round(row["baseline"] + thr, 3)
    row["passed"] = bool(row["value"] >= row["target"])
    _say(f"{task}: {spec['name']} = {row['value']:.4f} (baseline {row['baseline']:.4f}, target >= {row['target']}) "
         f"in {row['seconds']:.0f}s")
    return row


def print_table(rows) -> None:
    head = ("task", "model", "metric", "value", "baseline", "target", "ok")
    body = [(r["task"], r["model"] or "-", r["metric"], "-" if r["value"] is None else f"{r['value']:.4f}",
             "-" if r["baseline"] is None else f"{r['baseline']:.4f}", "-" if r["target"] is None else str(r["target"]),
             "yes" if r["passed"] else ("MISSING" if r.get("error") else "NO")) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    print(line(head))
    print(line("-" * w for w in widths))
    for b in body:
        print(line(b))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    p.add_argument("--data-root", default=osp.join(ROOT, "data", "demo"))
    p.add_argument("--work-dir", default=osp.join(ROOT, "work_dirs", "demo"))
    p.add_argument("--data-only", action="store_true", help="only make the datasets")
    args = p.parse_args(argv)
    t0 = time.time()
    data = make_data(args.data_root)
    if args.data_only:
        return 0
    os.makedirs(args.work_dir, exist_ok=True)
    rows = []
    for i, task in enumerate(args.tasks):
        _say(f"=== {i + 1}/{len(args.tasks)} {task} (elapsed {time.time() - t0:.0f}s) ===")
        try:
            rows.append(run_task(task, data, args.work_dir))
        except Exception as e:  # report the task as failed, go on with the others
            _say(f"{task}: FAILED: {e}")
            rows.append(dict(task=task, model=None, metric=TASKS[task]["name"], value=None, baseline=None,
                             target=None, passed=False, error=str(e)))
    total = time.time() - t0
    from vzoo.utils import atomic_write_text
    out = osp.join(args.work_dir, "results.json")
    atomic_write_text(out, json.dumps(rows, indent=2))
    print()
    print_table(rows)
    print(f"\ntotal {total / 60:.1f} min; rows in {osp.relpath(out, ROOT)}; logs, checkpoints and curves.png "
          f"under {osp.relpath(args.work_dir, ROOT)}/<task>/")
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
