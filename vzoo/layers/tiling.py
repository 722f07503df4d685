"""Tiled inference for image-to-image models: run a network on overlapping tiles and stitch the
inner parts, so memory is bounded by one tile (the restoration task's test mode and the HAT benchmark
use it; it needs nothing beyond torch)."""
from __future__ import annotations

from typing import Callable, List, Tuple

import torch

__all__ = ["tile_layout", "tiled_forward"]


def tile_layout(size: int, tile: int, overlap: int) -> List[Tuple[int, int, int]]:
    """Tiles along one axis: ``(start, own_lo, own_hi)``; each tile covers ``[start, start + tile)`` and
    its output is used on ``[own_lo, own_hi)``, the part nearer its centre than any other tile's.

    The owned parts partition ``[0, size)`` and every owned pixel is at least ``overlap // 2`` pixels
    from the border of its tile unless that border is the image border.
    """
    if size <= tile:
        return [(0, 0, size)]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride)) + [size - tile]
    bounds = [0] + [(b + a + tile) // 2 for a, b in zip(starts[:-1], starts[1:])] + [size]
    return [(s, bounds[i], bounds[i + 1]) for i, s in enumerate(starts)]


def tiled_forward(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, scale: int, tile: int,
                  overlap: int) -> torch.Tensor:
    """Run ``fn`` (LR NCHW -> SR NCHW, ``scale`` times larger) on overlapping ``tile`` x ``tile`` tiles.

    Each output pixel is taken from the tile whose centre is nearest (the inner parts of the tiles
    are stitched, as the official HAT/BasicSR tiling does), so for a network whose receptive field
    reaches at most ``overlap // 2`` LR pixels the result equals ``fn(x)`` up to float rounding;
    an image no larger than one tile is processed whole. Memory is bounded by one tile.
    """
    if not isinstance(tile, int) or tile < 1:
        raise ValueError(f"tiled_forward: tile must be an int >= 1, got {tile!r}")
    if not isinstance(overlap, int) or not 0 <= overlap < tile:
        raise ValueError(f"tiled_forward: overlap must be an int with 0 <= overlap < tile ({tile}), got {overlap!r}")
    h, w = x.shape[-2:]
    rows, cols = tile_layout(h, tile, overlap), tile_layout(w, tile, overlap)
    if len(rows) == 1 and len(cols) == 1:
        return fn(x)
    out = None
    for ys, y0, y1 in rows:
        for xs, x0, x1 in cols:
            patch = x[..., ys:ys + min(tile, h), xs:xs + min(tile, w)]
            y = fn(patch)
            if out is None:
                out = y.new_zeros(*y.shape[:-2], h * scale, w * scale)
            out[..., y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                y[..., (y0 - ys) * scale:(y1 - ys) * scale, (x0 - xs) * scale:(x1 - xs) * scale]
    return out
