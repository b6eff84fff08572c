"""Procedural "shapes" scenes: circles, squares and triangles on a noisy background.

Used by the detection (06) and self-supervised (05) chapters because every object comes with its
class, its box and its mask for free, and any number of scenes can be drawn offline.
"""
from __future__ import annotations

import numpy as np
import torch

SHAPE_CLASSES = ("circle", "square", "triangle")


def _shape_mask(kind: str, cx: float, cy: float, r: float, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    if kind == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
    if kind == "square":
        return (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
    # upward triangle with apex (cx, cy - r) and base y = cy + r
    inside_base = yy <= cy + r
    half_width = (yy - (cy - r)) / 2.0
    return inside_base & (yy >= cy - r) & (np.abs(xx - cx) <= half_width)


def _overlaps(box, boxes) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 <= b[2] and b[0] <= x1 and y0 <= b[3] and b[1] <= y1 for b in boxes)


def _stripes(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A (3, size, size) background of soft stripes between two dark colours, random angle and period."""
    angle = rng.uniform(0.0, np.pi)
    period = rng.uniform(3.0, 8.0)
    phase = rng.uniform(0.0, 2 * np.pi)
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + phase)
    colours = rng.uniform(0.0, 0.4, size=(2, 3)).astype(np.float32)
    return colours[0][:, None, None] + (colours[1] - colours[0])[:, None, None] * wave[None].astype(np.float32)


def make_shapes(n: int, *, size: int = 64, max_objects: int = 3, min_radius: int = 6,
                max_radius: int = 14, noise: float = 0.05, seed: int = 0, background: str = "flat") -> dict:
    """Draw ``n`` scenes of 1..``max_objects`` non-overlapping shapes.

    ``background``: "flat" (one dark colour plus noise) or "stripes" (soft stripes of two dark
    colours at a random angle and period, plus noise: a texture, so that the object is not simply
    "the pixels that differ from the background colour").

    Returns a dict of tensors (``M = max_objects``; unused object slots are padding):

    - ``images``: float32 (n, 3, size, size) in [0, 1]
    - ``labels``: int64 (n, M), index into ``SHAPE_CLASSES``, -1 for padding
    - ``boxes``: float32 (n, M, 4), (x0, y0, x1, y1) in pixels, inclusive; zeros for padding
    - ``masks``: bool (n, M, size, size); all False for padding
    - ``counts``: int64 (n,), the number of objects in each scene
    """
    if n < 1 or max_objects < 1:
        raise ValueError(f"need n >= 1 and max_objects >= 1, got n={n}, max_objects={max_objects}")
    if not 1 <= min_radius <= max_radius or 2 * max_radius + 3 > size:
        raise ValueError(f"radii {min_radius}..{max_radius} do not fit in a {size}x{size} image")
    if background not in ("flat", "stripes"):
        raise ValueError(f"background must be 'flat' or 'stripes', got {background!r}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.empty((n, 3, size, size), np.float32)
    labels = np.full((n, max_objects), -1, np.int64)
    boxes = np.zeros((n, max_objects, 4), np.float32)
    masks = np.zeros((n, max_objects, size, size), bool)
    counts = np.zeros(n, np.int64)
    for i in range(n):
        if background == "stripes":
            base = _stripes(rng, size, yy, xx)
        else:
            base = rng.uniform(0.0, 0.35, size=3).astype(np.float32)[:, None, None]
        image = base + noise * rng.standard_normal((3, size, size)).astype(np.float32)
        placed = []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            for _attempt in range(50):
                r = float(rng.integers(min_radius, max_radius + 1))
                cx, cy = rng.uniform(r + 1, size - r - 2, size=2)
                box = (int(np.floor(cx - r)), int(np.floor(cy - r)), int(np.ceil(cx + r)), int(np.ceil(cy + r)))
                if not _overlaps(box, placed):
                    break
            else:
                continue  # no room left for another object
            k = len(placed)
            kind = int(rng.integers(len(SHAPE_CLASSES)))
            mask = _shape_mask(SHAPE_CLASSES[kind], cx, cy, r, yy, xx)
            colour = rng.uniform(0.5, 1.0, size=3).astype(np.float32)
            image[:, mask] = colour[:, None]
            ys, xs = np.nonzero(mask)
            boxes[i, k] = (xs.min(), ys.min(), xs.max(), ys.max())
            labels[i, k], masks[i, k] = kind, mask
            placed.append(box)
        counts[i] = len(placed)
        images[i] = np.clip(image, 0.0, 1.0)
    return {"images": torch.from_numpy(images), "labels": torch.from_numpy(labels),
            "boxes": torch.from_numpy(boxes), "masks": torch.from_numpy(masks),
            "counts": torch.from_numpy(counts)}


def endless_shapes(batch_size: int, *, seed: int = 0, fields: tuple[str, ...] = ("images",), **scene_kwargs):
    """Endless batches of fresh scenes: batch k is ``make_shapes(batch_size, seed=seed * 1_000_003 + k, **scene_kwargs)``,
    yielded as the tuple of its ``fields`` (e.g. ("images", "labels", "boxes")). The data never repeats, so a
    training run on it cannot overfit a fixed set; held-out scenes use seeds far from these."""
    step = 0
    while True:
        scenes = make_shapes(batch_size, seed=seed * 1_000_003 + step, **scene_kwargs)
        yield tuple(scenes[field] for field in fields)
        step += 1
