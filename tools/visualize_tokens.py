#!/usr/bin/env python
"""Draw which image patches a token-reorganizing model (EViT) keeps, layer by layer (the paper's figure).

    python tools/visualize_tokens.py CONFIG CKPT IMAGES... --out DIR [--keep-rate R] [--device D]

CONFIG is a classification config (its ``model`` names the network, its ``test_dataloader`` pipeline
prepares the images); CKPT is a checkpoint written by ``tools/train.py`` or a weights file that
``timm.create_model(ARCH, pretrained=True, pretrained_cfg_overlay=dict(file=CKPT))`` loads (the release's
or DeiT's). IMAGES are files or folders (searched recursively). Each image gives ``DIR/<folder>_<name>.png``:
the input as the model sees it, then one panel per block that drops tokens, with the kept patches as they
are and the dropped ones greyed out (with token fusion: greyed and tinted orange, as their content lives
on in the fused token). Each panel's title says how many patches are still kept.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from typing import Dict, List

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout without install

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

GREY, FUSED_TINT = np.array([200, 200, 200]), np.array([255, 150, 30])
TITLE_H, PANEL_MIN, PAD = 22, 224, 6


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config", help="a classification config (model + test pipeline)")
    p.add_argument("checkpoint", help="a tools/train.py checkpoint or a weights file (release / DeiT / timm)")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, help="output folder (one PNG per image)")
    p.add_argument("--keep-rate", type=float, default=None, help="override the model's keep rate")
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def list_images(paths: List[str]) -> List[str]:
    from vzoo.tasks.classification import IMG_EXTENSIONS
    out = []
    for path in paths:
        if osp.isdir(path):
            out += sorted(osp.join(root, f) for root, _, files in os.walk(path) for f in files
                          if f.lower().endswith(IMG_EXTENSIONS))
        elif osp.isfile(path):
            out.append(path)
        else:
            raise FileNotFoundError(f"visualize_tokens: no such image or folder: {path!r}")
    if not out:
        raise FileNotFoundError(f"visualize_tokens: no images under {paths}")
    return out


def build_network(cfg, checkpoint: str) -> torch.nn.Module:
    """The timm network of ``cfg.model`` (a ``TimmClassifier``) with ``checkpoint``'s weights."""
    from vzoo.tasks.engine import load_runner_checkpoint
    from vzoo.tasks.registry import MODELS, build_in_vzoo_scope
    model_cfg = dict(cfg.model)
    obj = None
    if checkpoint.endswith((".pth", ".pt", ".ckpt")):
        try:
            obj = load_runner_checkpoint(checkpoint)
        except Exception:  # not a runner checkpoint (e.g. the release's): loaded as weights below
            obj = None
    runner_ckpt = isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) and "meta" in obj
    model_cfg["pretrained"] = None if runner_ckpt else checkpoint
    classifier = build_in_vzoo_scope(MODELS, model_cfg)
    if runner_ckpt:
        classifier.load_state_dict(obj["state_dict"], strict=True)
    net = classifier.model
    if not hasattr(net, "forward_kept_indices"):
        raise TypeError(f"visualize_tokens: {type(net).__name__} does not reorganize tokens (no forward_kept_indices)")
    return net.eval()


def patch_states(kept: Dict[int, torch.Tensor], num_patches: int, fuse_token: bool) -> Dict[int, torch.Tensor]:
    """For every reorganizing block: ``(B, num_patches)`` bool, True where the patch's own token is still
    there after the block. Tokens are followed through the blocks by their origin (a patch index, or -1 for
    a fused token, which comes last among the image tokens)."""
    states = {}
    origin = None
    for blk in sorted(kept):
        idx = kept[blk]
        if origin is None:
            origin = torch.arange(num_patches, device=idx.device).expand(idx.shape[0], -1)
        origin = origin.gather(1, idx)
        state = torch.zeros(idx.shape[0], num_patches + 1, dtype=torch.bool, device=idx.device)
        state.scatter_(1, torch.where(origin >= 0, origin, num_patches), True)  # -1 lands in the extra column
        states[blk] = state[:, :num_patches]
        if fuse_token:
            origin = torch.cat([origin, origin.new_full((origin.shape[0], 1), -1)], dim=1)
    return states


def draw_figure(image: np.ndarray, states: Dict[int, np.ndarray], grid, fuse_token: bool, title: str) -> Image.Image:
    """``image`` (H, W, 3) uint8 and one (gh*gw,) bool mask per block -> one PNG-able figure."""
    gh, gw = grid
    H, W = image.shape[:2]
    ph, pw = H // gh, W // gw
    scale = max(1, -(-PANEL_MIN // min(H, W)))
    panels = [("input", image)]
    grey = (0.35 * image.mean(axis=2, keepdims=True) + 0.65 * GREY).astype(np.uint8)
    dropped_look = (0.55 * grey + 0.45 * FUSED_TINT).astype(np.uint8) if fuse_token else grey
    for blk, keep in states.items():
        mask = np.repeat(np.repeat(keep.reshape(gh, gw), ph, axis=0), pw, axis=1)[..., None]
        panel = np.where(mask, image, dropped_look)
        panels.append((f"after block {blk}: {int(keep.sum())}/{keep.size} kept", panel))
    pw_px, ph_px = W * scale, H * scale
    fig = Image.new("RGB", (len(panels) * (pw_px + PAD) + PAD, ph_px + 2 * TITLE_H + PAD), "white")
    draw = ImageDraw.Draw(fig)
    for i, (label, arr) in enumerate(panels):
        x0 = PAD + i * (pw_px + PAD)
        fig.paste(Image.fromarray(arr).resize((pw_px, ph_px), Image.NEAREST), (x0, TITLE_H))
        draw.text((x0, 5), label, fill="black")
    legend = "orange: dropped, fused into the extra token" if fuse_token else "grey: dropped"
    draw.text((PAD, TITLE_H + ph_px + 4), f"{title} | {legend}", fill="black")
    return fig


def _denormalize(x: torch.Tensor, mean, std) -> np.ndarray:
    img = x.cpu().float() * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def main(argv=None) -> List[str]:
    args = parse_args(argv)
    from mmengine.config import Config

    from vzoo.tasks.registry import TRANSFORMS, build_in_vzoo_scope
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f"visualize_tokens: checkpoint not found: {args.checkpoint!r}")
    cfg = Config.fromfile(args.config)
    net = build_network(cfg, args.checkpoint).to(args.device)
    if args.keep_rate is not None:
        net.keep_rate = args.keep_rate
    pipeline = [build_in_vzoo_scope(TRANSFORMS, t) for t in cfg.test_dataloader.dataset.pipeline]
    norm = next((t.kwargs for t in pipeline if hasattr(t, "kwargs") and "mean" in t.kwargs), net.pretrained_cfg)
    grid = net.patch_embed.grid_size
    os.makedirs(args.out, exist_ok=True)
    written = []
    for path in list_images(args.images):
        results = dict(img_path=path)
        for t in pipeline:
            results = t(results)
        x = results["inputs"].unsqueeze(0).to(args.device)
        with torch.no_grad():
            feats, kept = net.forward_kept_indices(x)
            pred = net.forward_head(feats).softmax(-1)[0]
        states = {blk: s[0].cpu().numpy() for blk, s in patch_states(kept, grid[0] * grid[1], net.fuse_token).items()}
        title = (f"{osp.basename(path)}: keep rate {net.keep_rate:g}, "
                 f"class {int(pred.argmax())} ({float(pred.max()):.2f})")
        image = _denormalize(results["inputs"], norm["mean"], norm["std"])
        fig = draw_figure(image, states, grid, net.fuse_token, title)
        parent = osp.basename(osp.dirname(osp.abspath(path)))  # class folders reuse file names
        out = osp.join(args.out, f"{parent}_{osp.splitext(osp.basename(path))[0]}.png")
        fig.save(out)
        written.append(out)
    print(f"wrote {len(written)} figure(s) to {args.out}")
    return written


if __name__ == "__main__":
    main()
