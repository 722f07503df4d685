"""The embedded demo data: small real datasets in standard formats, generated without any download.

* ``make_digits(root)``: scikit-learn's 8×8 digits as an ImageNet-style folder
  (``root/{train,val}/<digit>/<n>.png``, upscaled to 32×32 RGB; a stratified 80/20 split).
* ``make_shapes(root)``: procedural scenes (textured backgrounds, several possibly overlapping
  circles, squares and triangles) written twice:
  - COCO detection / instance segmentation: ``root/coco/{train,val}/*.jpg`` and
    ``root/coco/annotations/instances_{train,val}.json`` (boxes and polygon masks of the *visible*
    part of each shape; category ids 1..3);
  - ADE20K-style semantic segmentation: ``root/ade/images/{training,validation}/*.jpg`` and
    ``root/ade/annotations/{training,validation}/*.png``. Label convention: **0 = background, which
    is a real class** (counted in mIoU), k = shape class k (1 circle, 2 square, 3 triangle);
    255 = ignore (unused). Configs therefore use ``reduce_zero_label=False`` — unlike ADE20K itself,
    where 0 means "other" and ``reduce_zero_label=True`` turns it into 255.
* ``make_sr(root)``: scikit-image's sample photographs as an SR set, HR only:
  ``root/{train,val}/HR/*.png`` (patches of ``patch``×``patch`` pixels, divisible by 2, 3 and 4; the
  LR images are made on the fly by the restoration dataset). Train and val come from different
  photographs; near-flat cells (luma std below ``min_std``) are skipped, as nothing is there to
  super-resolve and their near-infinite PSNR would dominate an average taken in dB.

Every generator is deterministic for a given seed, writes only if its output is missing or was made
with other arguments or by another version of the generator (a ``.done`` stamp), and returns the
root. Tests call them at tiny sizes.
"""
from __future__ import annotations

import io
import json
import math
import os
import os.path as osp
import shutil
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["SHAPE_CLASSES", "make_scene", "make_digits", "make_shapes", "make_sr", "make_all", "SR_TRAIN_PHOTOS",
           "SR_VAL_PHOTOS"]

SHAPE_CLASSES = ("circle", "square", "triangle")

# Bump when a generator's output changes for the same arguments: the stamp then no longer matches
# and existing data is made again.
_VERSIONS = dict(digits=1, shapes=2, sr=2)


def _stamped(root: str, params: dict) -> bool:
    """True if ``root`` holds data made with ``params`` (and the current generator version); else
    empty ``root`` so that it can be made again."""
    params = dict(params, version=_VERSIONS[params["kind"]])
    stamp = osp.join(root, ".done")
    if osp.isfile(stamp):
        with open(stamp) as f:
            if json.load(f) == params:
                return True
    if osp.isdir(root):
        shutil.rmtree(root)
    os.makedirs(root)
    return False


def _stamp(root: str, params: dict) -> None:
    with open(osp.join(root, ".done"), "w") as f:
        json.dump(dict(params, version=_VERSIONS[params["kind"]]), f)


# ---------------------------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------------------------
def make_digits(root: str, size: int = 32, val_fraction: float = 0.2, limit: int = 0, seed: int = 0) -> str:
    """scikit-learn's digits (1797 images, 10 classes) as ``root/{train,val}/<digit>/*.png``.
    ``limit`` > 0 keeps that many images per class (for tests)."""
    params = dict(kind="digits", size=size, val_fraction=val_fraction, limit=limit, seed=seed)
    if _stamped(root, params):
        return root
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    for label in range(10):
        idx = np.flatnonzero(d.target == label)
        rng.shuffle(idx)
        if limit:
            idx = idx[:limit]
        n_val = max(1, int(round(len(idx) * val_fraction)))
        for split, part in (("val", idx[:n_val]), ("train", idx[n_val:])):
            out = osp.join(root, split, str(label))
            os.makedirs(out, exist_ok=True)
            for i in part:
                img = (d.images[i] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
                Image.fromarray(img).resize((size, size), Image.BILINEAR).convert("RGB").save(
                    osp.join(out, f"{i:04d}.png"))
    _stamp(root, params)
    return root


# ---------------------------------------------------------------------------------------------
# shapes
# ---------------------------------------------------------------------------------------------
def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured background: a colour gradient plus one of stripes / checks / blobs / noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    t = (np.cos(rng.uniform(0, 2 * np.pi)) * xx / w + np.sin(rng.uniform(0, 2 * np.pi)) * yy / h)
    t = (t - t.min()) / max(1e-6, t.max() - t.min())
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    kind = rng.integers(4)
    amp = rng.uniform(15, 40)
    if kind == 0:  # stripes
        ang, period = rng.uniform(0, np.pi), rng.uniform(6, 20)
        pat = np.sin(2 * np.pi * (xx * np.cos(ang) + yy * np.sin(ang)) / period)
    elif kind == 1:  # checks
        p = rng.integers(6, 18)
        pat = ((xx // p + yy // p) % 2) * 2.0 - 1
    elif kind == 2:  # smooth blobs
        pat = np.zeros((h, w), np.float32)
        for _ in range(6):
            cy, cx, s = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(8, 30)
            pat += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)) * rng.choice([-1, 1])
    else:
        pat = np.zeros((h, w), np.float32)
    img = img + amp * pat[..., None] + rng.normal(0, 6, (h, w, 3))
    return img


def _shape_mask(cls: int, cx: float, cy: float, r: float, ang: float, h: int, w: int) -> np.ndarray:
    m = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(m)
    if cls == 0:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    else:
        n = 4 if cls == 1 else 3
        rr = r * (1.0 if cls == 1 else 1.15)
        pts = [(cx + rr * math.cos(ang + 2 * math.pi * k / n), cy + rr * math.sin(ang + 2 * math.pi * k / n))
               for k in range(n)]
        draw.polygon(pts, fill=1)
    return np.asarray(m, dtype=bool)


def make_scene(rng: np.random.Generator, h: int = 128, w: int = 128, max_objects: int = 4,
               min_visible: float = 0.5) -> Tuple[np.ndarray, List[Tuple[int, np.ndarray]]]:
    """One scene: an RGB uint8 image and its instances ``[(class index, HxW bool visible mask)]``.
    Shapes may overlap, but each keeps at least ``min_visible`` of its area visible (a shape that
    would hide more of an earlier one is not drawn)."""
    img = _background(rng, h, w)
    inst: List[List] = []  # [cls, full mask, visible mask]
    n = int(rng.integers(1, max_objects + 1))
    smin = min(h, w)
    tries = 0
    while len(inst) < n and tries < 4 * n:
        tries += 1
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        r = rng.uniform(0.09, 0.22) * smin
        cx, cy = rng.uniform(r * 0.7, w - r * 0.7), rng.uniform(r * 0.7, h - r * 0.7)
        mask = _shape_mask(cls, cx, cy, r, rng.uniform(0, 2 * np.pi), h, w)
        if mask.sum() < 40:
            continue
        if any((v & ~mask).sum() < min_visible * f.sum() for _, f, v in inst):
            continue
        color = rng.uniform(0, 255, 3)
        if np.abs(img[mask].mean(0) - color).sum() < 150:
            color = np.where(img[mask].mean(0) > 128, rng.uniform(0, 60, 3), rng.uniform(195, 255, 3))
        ys, xs = np.nonzero(mask)  # paint only the shape's pixels (cheap: scenes are made by the thousand)
        shade = 1 + 0.12 * np.sin(xs * rng.uniform(0.1, 0.6) + ys * rng.uniform(0.1, 0.6))[:, None]
        img[ys, xs] = color * shade + rng.normal(0, 5, (len(ys), 3))
        for it in inst:
            it[2] = it[2] & ~mask
        inst.append([cls, mask, mask.copy()])
    return np.clip(img, 0, 255).astype(np.uint8), [(c, v) for c, _, v in inst]


def _polygons(mask: np.ndarray) -> List[List[float]]:
    import cv2
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        if len(c) >= 3 and cv2.contourArea(c) >= 4:
            polys.append([float(v) + 0.5 for v in c.reshape(-1)])
    return polys


def make_shapes(root: str, n_train: int = 2000, n_val: int = 200, size: Tuple[int, int] = (128, 128),
                max_objects: int = 4, seed: int = 0) -> str:
    """The shapes scenes in COCO format (``root/coco``) and ADE20K layout (``root/ade``).

    2000 training scenes by default: a detector from scratch overfits 400 of them (box mAP 0.66 on
    its training scenes, 0.42 on val) while more scenes cost nothing per training iteration, only
    about 10 ms each to make. 200 val scenes keep the metric's noise small."""
    params = dict(kind="shapes", n_train=n_train, n_val=n_val, size=list(size), max_objects=max_objects, seed=seed)
    if _stamped(root, params):
        return root
    h, w = size
    cats = [dict(id=i + 1, name=n, supercategory="shape") for i, n in enumerate(SHAPE_CLASSES)]
    os.makedirs(osp.join(root, "coco", "annotations"))
    for split, n, ade_split, split_seed in (("train", n_train, "training", seed),
                                            ("val", n_val, "validation", seed + 10_000)):
        rng = np.random.default_rng(split_seed)
        for d in (osp.join(root, "coco", split), osp.join(root, "ade", "images", ade_split),
                  osp.join(root, "ade", "annotations", ade_split)):
            os.makedirs(d)
        images, anns = [], []
        for i in range(n):
            img, inst = make_scene(rng, h, w, max_objects)
            name = f"{split}_{i:05d}"
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=95)  # encoded once, written twice
            for path in (osp.join(root, "coco", split, name + ".jpg"),
                         osp.join(root, "ade", "images", ade_split, name + ".jpg")):
                with open(path, "wb") as f:
                    f.write(buf.getvalue())
            sem = np.zeros((h, w), np.uint8)
            images.append(dict(id=i + 1, file_name=name + ".jpg", height=h, width=w))
            for cls, m in inst:
                sem[m] = cls + 1
                ys, xs = np.nonzero(m)
                polys = _polygons(m)
                if not polys:
                    continue
                x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
                anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=cls + 1, iscrowd=0,
                                 area=float(m.sum()), bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                                 segmentation=polys))
            Image.fromarray(sem).save(osp.join(root, "ade", "annotations", ade_split, name + ".png"))
        with open(osp.join(root, "coco", "annotations", f"instances_{split}.json"), "w") as f:
            # json.dumps runs the C encoder; json.dump(obj, f) is the slow pure-Python one
            f.write(json.dumps(dict(images=images, annotations=anns, categories=cats,
                                    info=dict(description="vzoo procedural shapes"))))
    _stamp(root, params)
    return root


# ---------------------------------------------------------------------------------------------
# super-resolution
# ---------------------------------------------------------------------------------------------
# Natural photographs (plus a scanned page and printed text): the synthetic ``colorwheel`` is left out,
# its flat patches make a PSNR average meaningless. ``cat`` is ``chelsea`` again, so it is not used.
SR_TRAIN_PHOTOS = ("chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                   "stereo_motorcycle", "camera", "brick", "grass", "gravel", "coins", "moon", "text")
SR_VAL_PHOTOS = ("coffee", "astronaut", "page", "clock")


def _photo(name: str) -> np.ndarray:
    import skimage.data
    im = getattr(skimage.data, name)()
    if isinstance(im, tuple):  # stereo pairs: the left view
        im = im[0]
    im = np.asarray(im)
    if im.dtype == bool:
        im = im.astype(np.uint8) * 255
    if im.ndim == 2:
        im = np.repeat(im[..., None], 3, axis=2)
    return im[..., :3].astype(np.uint8)


def make_sr(root: str, patch: int = 144, train_patches_per_photo: int = 8, val_patches_per_photo: int = 2,
            train_photos: Sequence[str] = SR_TRAIN_PHOTOS, val_photos: Sequence[str] = SR_VAL_PHOTOS,
            max_side: int = 512, min_std: float = 8.0) -> str:
    """HR patches of scikit-image's photographs: ``root/train/HR`` and ``root/val/HR`` (disjoint photos).
    Photos larger than ``max_side`` are first downscaled (area) to it; patches lie on a regular grid,
    spread over the photo, skipping cells whose luma standard deviation is below ``min_std``."""
    if patch % 12:
        raise ValueError(f"make_sr: patch must be a multiple of 12 (divisible by scales 2, 3, 4), got {patch}")
    overlap = set(train_photos) & set(val_photos)
    if overlap:
        raise ValueError(f"make_sr: photos in both train and val: {sorted(overlap)}")
    params = dict(kind="sr", patch=patch, train=list(train_photos), val=list(val_photos),
                  tpp=train_patches_per_photo, vpp=val_patches_per_photo, max_side=max_side, min_std=min_std)
    if _stamped(root, params):
        return root
    for split, photos, per in (("train", train_photos, train_patches_per_photo),
                               ("val", val_photos, val_patches_per_photo)):
        out = osp.join(root, split, "HR")
        os.makedirs(out)
        for name in photos:
            im = Image.fromarray(_photo(name))
            s = max_side / max(im.size)
            if s < 1:
                im = im.resize((max(patch, round(im.width * s)), max(patch, round(im.height * s))), Image.BOX)
            arr = np.asarray(im)
            H, W = arr.shape[:2]
            if H < patch or W < patch:
                continue
            ny, nx = max(1, H // patch), max(1, W // patch)
            oy, ox = (H - ny * patch) // 2, (W - nx * patch) // 2
            luma = arr.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
            cells = [(y, x) for y in range(ny) for x in range(nx)
                     if luma[oy + y * patch:oy + (y + 1) * patch, ox + x * patch:ox + (x + 1) * patch].std() >= min_std]
            # spread the chosen cells over the photo
            pick = [cells[int(round(k * (len(cells) - 1) / max(1, per - 1)))] for k in range(min(per, len(cells)))]
            for k, (y, x) in enumerate(dict.fromkeys(pick)):
                y0, x0 = oy + y * patch, ox + x * patch
                Image.fromarray(arr[y0:y0 + patch, x0:x0 + patch]).save(osp.join(out, f"{name}_{k}.png"))
    _stamp(root, params)
    return root


def make_all(root: str = "data/demo") -> Dict[str, str]:
    """Everything ``tools/demo.py`` uses, at the demo's sizes."""
    return dict(digits=make_digits(osp.join(root, "digits")),
                shapes=make_shapes(osp.join(root, "shapes")),
                sr=make_sr(osp.join(root, "sr")))
