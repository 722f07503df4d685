#!/usr/bin/env python
"""``make demo``: make the embedded datasets, train and evaluate one small model per task with the
real configs and tools (``tools/train.py``, ``tools/test.py --show-dir``), and print how each does
against its trivial baseline on held-out data. The rows also go to ``work_dirs/demo/results.json``, and
``work_dirs/demo/index.html`` shows them with each task's pictures (drawn by ``tools/test.py
--show-dir``: ``<task>/show/gallery.png``) and training curves (``<task>/curves.png``).

    python tools/demo.py [--tasks classification detection segmentation restoration] [--data-only]
                         [--threads N] [--budget-scale F] [--smoke]

Each task has a time budget (training and test, on an idle 2-core CPU; ``--budget-scale`` scales them
for a slower machine): a progress line with the elapsed time and the ETA follows the training, and a
task whose ETA goes past its budget says so and is stopped. ``--smoke`` runs the whole demo on tiny data
for a few iterations (the test of the page; its numbers mean nothing).

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

# task -> config, metric key in tools/test.py's metrics, display name, scale to [0, 1] / dB, target, time
# budget (s, idle 2-core CPU: the measured time plus a margin), options of --smoke (tiny schedules)
TASKS = {
    "classification": dict(config="configs/classification/demo_digits_van_b0.py", metric="accuracy/top1",
                           name="top-1 (digits val)", scale=1.0, target=("abs", 0.95), budget=120,
                           smoke=["train_cfg.max_epochs=1", "default_hooks.checkpoint.interval=1"]),
    "detection": dict(config="configs/detection/demo_shapes_fcos_van_b0.py", metric="coco/bbox_mAP",
                      name="box mAP@[.5:.95] (shapes val)", scale=1.0, target=("abs", 0.5), budget=600,
                      smoke=["train_cfg.max_epochs=1", "train_cfg.val_interval=1", "model.test_cfg.score_thr=0.0"]),
    # starts from the demo detector's backbone (written by the detection task); from scratch without it
    "segmentation": dict(config="configs/segmentation/demo_shapes_fpn_van_b0_from_det.py", metric="mIoU",
                         name="mIoU (shapes val)", scale=0.01, target=("abs", 0.6), budget=420,
                         scratch_config="configs/segmentation/demo_shapes_fpn_van_b0.py",
                         smoke=["train_cfg.max_iters=2", "train_cfg.val_interval=2",
                                "default_hooks.checkpoint.interval=2"]),
    "restoration": dict(config="configs/restoration/demo_sr.py", metric="sr/PSNR",
                        name="PSNR-Y dB (photos val)", scale=1.0, target=("over_baseline", 0.3), budget=300,
                        smoke=["train_cfg.max_iters=2", "train_cfg.val_interval=2",
                               "default_hooks.checkpoint.interval=2"]),
}
_LOG_LINE = re.compile(r"mmengine - (INFO|WARNING|ERROR) - (Epoch\(|Iter\(|Saving checkpoint|.*curves written|"
                       r"Load checkpoint|resumed|.*drawing failed)")
_ETA = re.compile(r"eta: (?:(\d+) days?, )?(\d+):(\d\d):(\d\d)")


def _say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def make_data(root: str, smoke: bool = False) -> dict:
    from vzoo.tasks import demo_data
    t = time.time()
    _say(f"making the embedded datasets under {root}/ (digits, shapes, SR photos) ...")
    tiny = smoke and dict(digits=dict(limit=5), shapes=dict(n_train=8, n_val=4, max_objects=2),
                          sr=dict(patch=72, train_patches_per_photo=1, val_patches_per_photo=1))
    paths = dict(digits=demo_data.make_digits(osp.join(root, "digits"), **(tiny and tiny["digits"] or {})))
    _say(f"  digits ready ({time.time() - t:.0f}s)")
    paths["shapes"] = demo_data.make_shapes(osp.join(root, "shapes"), **(tiny and tiny["shapes"] or {}))
    _say(f"  shapes ready: COCO json + ADE20K layout ({time.time() - t:.0f}s)")
    paths["sr"] = demo_data.make_sr(osp.join(root, "sr"), **(tiny and tiny["sr"] or {}))
    _say(f"  SR photos ready ({time.time() - t:.0f}s)")
    return paths


def data_options(task: str, data: dict) -> list:
    """--cfg-options pointing the task's dataloaders (and evaluators) at ``data``."""
    root = dict(classification=data["digits"], detection=osp.join(data["shapes"], "coco") + "/",
                segmentation=osp.join(data["shapes"], "ade"), restoration=data["sr"])[task]
    opts = [f"{split}_dataloader.dataset.data_root={root}" for split in ("train", "val", "test")]
    if task == "detection":
        opts += [f"{split}_evaluator.ann_file={root}annotations/instances_val.json" for split in ("val", "test")]
    return opts


class OverBudget(RuntimeError):
    pass


def _hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def _run(cmd, log_path: str, label: str = "", started: float = 0.0, budget: float = float("inf")) -> None:
    """Run a tool, keep its full log, show its progress lines with the task's elapsed time and ETA, and
    stop it (:class:`OverBudget`) once its ETA goes past the task's ``budget`` (seconds since ``started``)."""
    _say("$ " + " ".join(cmd))
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1)
        tail, progress_lines = [], 0
        for line in proc.stdout:
            log.write(line)
            tail = (tail + [line])[-40:]
            if not _LOG_LINE.search(line):
                continue
            msg = line.split(" - mmengine - ")[-1].rstrip()
            eta = _ETA.search(line)
            if eta is None:
                print("    " + msg, flush=True)
                continue
            d, h, m, sec = (int(g or 0) for g in eta.groups())
            left, elapsed = ((d * 24 + h) * 60 + m) * 60 + sec, time.time() - started
            progress_lines += 1
            print(f"    {label}: {msg.split(' - ', 1)[-1].split('  ')[0]} | elapsed {_hms(elapsed)}, ETA {_hms(left)} "
                  f"(budget {_hms(budget)})", flush=True)
            if progress_lines >= 3 and elapsed + left > budget:  # the first ETAs include start-up costs
                proc.kill()
                proc.wait()
                raise OverBudget(f"cannot finish in its budget of {_hms(budget)} (elapsed {_hms(elapsed)} + ETA "
                                 f"{_hms(left)}): stopped. A slower machine: --budget-scale F; log: {log_path}")
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


def _tool(name: str, args: list, log_path: str, in_process: bool, **budget) -> None:
    """``tools/<name>.py args``: a child process (progress, budget) or, with ``in_process``, its ``main``."""
    if in_process:
        import importlib
        importlib.import_module(f"tools.{name}").main(args)
    else:
        _run([sys.executable, f"tools/{name}.py"] + args, log_path, **budget)


def run_task(task: str, data: dict, work_root: str, budget_scale: float = 1.0, smoke: bool = False,
             in_process: bool = False) -> dict:
    spec = dict(TASKS[task])
    options = data_options(task, data) + (spec["smoke"] if smoke else [])
    if task == "segmentation":
        det_backbone = osp.join(work_root, "detection", "backbone.pth")
        if osp.isfile(det_backbone):
            options.append(f"model.backbone.init_cfg.checkpoint={det_backbone}")
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
    budget = dict(label=task, started=t0, budget=spec["budget"] * budget_scale)
    options = ["--cfg-options"] + options
    _tool("train", [config, "--work-dir", wd] + options, osp.join(work_root, f"{task}_train.log"), in_process,
          **budget)
    metrics_file = osp.join(wd, "test_metrics.json")
    ckpt = _latest_checkpoint(wd)
    _tool("test", [config, "--checkpoint", ckpt, "--work-dir", wd, "--out", metrics_file,
                   "--show-dir", osp.join(wd, "show")] + options, osp.join(work_root, f"{task}_test.log"), in_process,
          **budget)
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


def write_page(rows, work_root: str, total: float) -> str:
    """``<work_root>/index.html``: the results table, then per task its ``--show-dir`` gallery and its
    ``curves.png`` (relative paths: the page opens from file:// and moves with the folder)."""
    import glob
    import html
    from vzoo.tasks.visualization import GALLERY_NAME
    from vzoo.utils import atomic_write_text
    cells = ("task", "model", "metric", "value", "baseline", "target", "ok", "time")
    body = []
    for r in rows:
        ok = "yes" if r["passed"] else ("MISSING" if r.get("error") else "NO")
        vals = (r["task"], r["model"] or "-", r["metric"], "-" if r["value"] is None else f"{r['value']:.4f}",
                "-" if r["baseline"] is None else f"{r['baseline']:.4f}", "-" if r["target"] is None else r["target"],
                ok, "-" if r.get("seconds") is None else _hms(r["seconds"]))
        body.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in vals) + "</tr>")
    sections = []
    for r in rows:
        figs = sorted(glob.glob(osp.join(work_root, r["task"], "show", "**", GALLERY_NAME), recursive=True))
        figs += [p for p in [osp.join(work_root, r["task"], "curves.png")] if osp.isfile(p)]
        imgs = "".join(f'<figure><img src="{html.escape(osp.relpath(p, work_root))}" alt="{r["task"]}">'
                       f'<figcaption>{html.escape(osp.relpath(p, work_root))}</figcaption></figure>' for p in figs)
        note = f"<p class=err>{html.escape(r['error'])}</p>" if r.get("error") else ""
        sections.append(f"<h2>{html.escape(r['task'])}: {html.escape(str(r['model']))}</h2>{note}{imgs}")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>vzoo demo</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}} figure{{display:inline-block;margin:0 1em 1em 0;vertical-align:top}}
img{{max-width:100%;image-rendering:pixelated}} .err{{color:#c00}}</style></head><body>
<h1>vzoo demo</h1><p>make demo: {len(rows)} tasks in {_hms(total)}; held-out data; drawings by
<code>tools/test.py --show-dir</code> (wrong classes framed red; boxes and masks: ground truth | prediction).</p>
<table><tr>{"".join(f"<th>{c}</th>" for c in cells)}</tr>
{chr(10).join(body)}</table>
{chr(10).join(sections)}
</body></html>
"""
    out = osp.join(work_root, "index.html")
    atomic_write_text(out, page)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    p.add_argument("--data-root", help="where the datasets are made (default: data/demo, data/demo_smoke with --smoke)")
    p.add_argument("--work-dir", default=osp.join(ROOT, "work_dirs", "demo"))
    p.add_argument("--data-only", action="store_true", help="only make the datasets")
    p.add_argument("--threads", type=int, help="CPU threads of each tool (OMP_NUM_THREADS; default: torch's)")
    p.add_argument("--budget-scale", type=float, default=1.0, help="multiply every task's time budget by this")
    p.add_argument("--smoke", action="store_true", help="tiny data and schedules: checks the pipeline and the page")
    p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)  # tests: tools' main() in-process
    args = p.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be >= 1, got {args.threads}")
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.budget_scale <= 0:
        raise SystemExit(f"--budget-scale must be > 0, got {args.budget_scale}")
    data_root = args.data_root or osp.join(ROOT, "data", "demo_smoke" if args.smoke else "demo")
    t0 = time.time()
    data = make_data(data_root, smoke=args.smoke)
    if args.data_only:
        return 0
    os.makedirs(args.work_dir, exist_ok=True)
    rows = []
    for i, task in enumerate(args.tasks):
        left = sum(TASKS[t]["budget"] for t in args.tasks[i:]) * args.budget_scale
        _say(f"=== {i + 1}/{len(args.tasks)} {task} (elapsed {_hms(time.time() - t0)}, ETA of the demo at most "
             f"{_hms(left)}: the budgets of the tasks left) ===")
        try:
            rows.append(run_task(task, data, args.work_dir, budget_scale=args.budget_scale, smoke=args.smoke,
                                 in_process=args.in_process))
        except Exception as e:  # report the task as failed, go on with the others
            _say(f"{task}: FAILED: {e}")
            rows.append(dict(task=task, model=None, metric=TASKS[task]["name"], value=None, baseline=None,
                             target=None, passed=False, error=str(e)))
    total = time.time() - t0
    from vzoo.utils import atomic_write_text
    out = osp.join(args.work_dir, "results.json")
    atomic_write_text(out, json.dumps(rows, indent=2))
    page = write_page(rows, args.work_dir, total)
    print()
    print_table(rows)
    print(f"\ntotal {total / 60:.1f} min; rows in {osp.relpath(out, ROOT)}; pictures: {osp.relpath(page, ROOT)} "
          f"(logs, checkpoints, curves.png and show/ under {osp.relpath(args.work_dir, ROOT)}/<task>/)")
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
