"""Small pieces several chapters share: the sinusoidal time embedding (chapters 10, 11, 13) and the maps between
pixels in [0, 1] and model values in [-1, 1] (chapters 09, 11-13). Taught in chapter 11, G.1 (the embedding) and A.4
(the pixel range)."""
from __future__ import annotations

import math

import torch


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Transformer-style features of the timestep: (N,) -> (N, dim). Chapter 11, G.1.

    Half the features are sin(t * f_k) and half cos(t * f_k), with frequencies f_k from 1 down to
    1 / max_period on a geometric grid, so nearby timesteps get nearby embeddings at every scale.
    """
    if dim % 2:
        raise ValueError(f"embedding dim must be even, got {dim}")
    t = torch.as_tensor(t, dtype=torch.float32).reshape(-1)
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)  # (half,)
    angles = t[:, None] * freqs[None, :]  # (N, half)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] -> [-1, 1]. Chapter 11, A.4."""
    return images * 2 - 1


def to_pixel_range(x: torch.Tensor) -> torch.Tensor:
    """Model outputs in [-1, 1] -> pixels in [0, 1], clamped. Chapter 11, A.4."""
    return ((x + 1) / 2).clamp(0, 1)
