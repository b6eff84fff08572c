"""Natural images that scikit-image ships inside its package (no download).

Licences as stated in scikit-image's docstrings: astronaut public domain; camera CC0 (Lav Varshney);
cat and chelsea CC0 (Stefan van der Walt); coffee CC0 (Rachel Michetti); brick, grass and gravel
CC0 (CC0Textures); horse CC0; rocket public domain (SpaceX); hubble_deep_field public domain (NASA);
coins and immunohistochemistry "no known copyright restrictions".
"""
from __future__ import annotations

import numpy as np
import torch

# Loaders of skimage.data that work offline (checked under `unshare -n` with scikit-image 0.26).
OFFLINE_IMAGES = ("astronaut", "brick", "camera", "cat", "chelsea", "coffee", "coins", "grass",
                  "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "moon", "page",
                  "rocket", "text")


def load_image(name: str) -> torch.Tensor:
    """A bundled photo as float32 in [0, 1], shape (C, H, W) with C = 3 (colour) or 1 (grey)."""
    if name not in OFFLINE_IMAGES:
        raise ValueError(f"unknown image {name!r}; the offline ones are: {', '.join(OFFLINE_IMAGES)}")
    try:
        import skimage.data
    except ImportError as err:  # pragma: no cover - scikit-image is a course dependency
        raise ImportError("load_image needs scikit-image: `pip install scikit-image`") from err
    array = np.asarray(getattr(skimage.data, name)())
    if array.dtype == bool:
        array = array.astype(np.float32)
    elif array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    else:
        array = array.astype(np.float32)
        array = (array - array.min()) / max(float(array.max() - array.min()), 1e-12)
    if array.ndim == 2:
        array = array[None]
    else:
        array = array[..., :3].transpose(2, 0, 1)  # drop alpha, channels first
    return torch.from_numpy(np.ascontiguousarray(array))
