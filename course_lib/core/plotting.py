"""Figures the chapters share: image grids, loss curves, heatmaps over images (attention, saliency)."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch


def _images_to_numpy(images) -> np.ndarray:
    """(N, C, H, W) or (N, H, W) tensor/array -> (N, H, W, C) float numpy."""
    array = images.detach().cpu().float().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, float)
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, 1 or 3, H, W) or (N, H, W), got {array.shape}")
    return array.transpose(0, 2, 3, 1)


def image_grid(images, *, nrow: int | None = None, titles=None, ax=None, cmap: str = "gray",
               vmin: float | None = 0.0, vmax: float | None = 1.0, figsize=None, pad: int = 1):
    """Show images (N, C, H, W) tiled in one axes; return the axes.

    ``titles`` (one string per image) switches to one small axes per image instead.
    """
    array = _images_to_numpy(images)
    n, h, w, c = array.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    if titles is not None:
        if len(titles) != n:
            raise ValueError(f"{n} images but {len(titles)} titles")
        fig, axes = plt.subplots(nrow, ncol, figsize=figsize or (1.3 * ncol, 1.5 * nrow), squeeze=False)
        for i, axis in enumerate(axes.flat):
            axis.axis("off")
            if i < n:
                axis.imshow(array[i].squeeze(-1) if c == 1 else array[i], cmap=cmap, vmin=vmin, vmax=vmax)
                axis.set_title(str(titles[i]), fontsize=8)
        fig.tight_layout()
        return axes
    background = vmin if vmin is not None else float(array.min())
    canvas = np.full((nrow * (h + pad) - pad, ncol * (w + pad) - pad, c), background, float)
    for i in range(n):
        r, col = divmod(i, ncol)
        canvas[r * (h + pad): r * (h + pad) + h, col * (w + pad): col * (w + pad) + w] = array[i]
    if ax is None:
        _, ax = plt.subplots(figsize=figsize or (min(1.0 * ncol, 12), min(1.0 * nrow, 12)))
    ax.imshow(canvas.squeeze(-1) if c == 1 else canvas.clip(0, 1), cmap=cmap, vmin=vmin, vmax=vmax)
    ax.axis("off")
    return ax


def plot_losses(*histories, labels=None, ax=None, smooth: int = 1, log_y: bool = False, title: str = "training loss"):
    """Loss curves of one or more runs (lists of floats or :class:`course_lib.core.train.History`)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    labels = labels or [None] * len(histories)
    if len(labels) != len(histories):
        raise ValueError(f"{len(histories)} histories but {len(labels)} labels")
    for history, label in zip(histories, labels):
        losses = np.asarray(getattr(history, "losses", history), float)
        offset = 0
        if smooth > 1 and len(losses) >= smooth:
            losses = np.convolve(losses, np.ones(smooth) / smooth, mode="valid")
            offset = smooth - 1  # a moving average over steps 1..smooth is plotted at step smooth
        ax.plot(np.arange(1, len(losses) + 1) + offset, losses, label=label)
    ax.set(xlabel="step", ylabel="loss", title=title)
    if log_y:
        ax.set_yscale("log")
    if any(labels):
        ax.legend()
    return ax


def overlay_heatmap(image, heatmap, *, ax=None, alpha: float = 0.5, cmap: str = "jet", title: str | None = None):
    """Show ``heatmap`` (h, w), upsampled to the image, over ``image`` (C, H, W); return the axes.

    The heatmap is resized with nearest-neighbour blocks (each patch stays a visible square) and
    scaled to [0, 1] for display.
    """
    picture = _images_to_numpy(image[None] if getattr(image, "ndim", 0) in (2, 3) else image)[0]
    height, width = picture.shape[:2]
    heat = heatmap.detach().cpu().float().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(heatmap, float)
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (h, w), got shape {heat.shape}")
    if height % heat.shape[0] or width % heat.shape[1]:
        raise ValueError(f"heatmap {heat.shape} does not tile an image of {height}x{width}")
    heat = np.kron(heat, np.ones((height // heat.shape[0], width // heat.shape[1])))
    heat = (heat - heat.min()) / max(heat.max() - heat.min(), 1e-12)
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    ax.imshow(picture.squeeze(-1) if picture.shape[-1] == 1 else picture, cmap="gray")
    ax.imshow(heat, cmap=cmap, alpha=alpha)
    ax.axis("off")
    if title:
        ax.set_title(title)
    return ax
