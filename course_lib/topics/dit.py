"""A Diffusion Transformer (Peebles & Xie 2023) with adaLN-Zero conditioning, for MNIST latents. Chapter 13.

    z_t (N, C, H, W) --patchify (P)--> (N, T, C*P*P) --linear--> (N, T, D) + fixed 2-D sin-cos positions
    c = MLP(sinusoidal(t)) + embedding(y)                                   (N, D)
    depth x DiTBlock(x, c) --> final adaLN + linear (zero-initialised) --> (N, T, C*P*P) --unpatchify--> eps_hat

Each block regresses six vectors from c (shift, scale and gate for the attention and for the MLP):

    x = x + gate_msa * Attn(LN(x) * (1 + scale_msa) + shift_msa)
    x = x + gate_mlp * MLP(LN(x) * (1 + scale_mlp) + shift_mlp)

The regression layer is zero-initialised, so every gate starts at 0 and a fresh block is exactly
the identity; the final linear layer is zero-initialised too, so a fresh DiT predicts eps_hat = 0.
The patch functions and the attention are chapter 04's (``course_lib.topics.vit``). DiT also learns a
diagonal covariance (twice the output channels); this one predicts eps only, as chapter 11's U-Net.
"""
from __future__ import annotations

import torch
from torch import nn

from course_lib.core.layers import sinusoidal_embedding
from course_lib.topics.unet import time_and_label_embedding
from course_lib.topics.vit import MultiHeadAttention, patchify, unpatchify


def sincos_position_embedding(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding, (grid * grid, dim): half the features encode the row, half the column,
    each with the 1-D sinusoidal features of chapter 11 (``sinusoidal_embedding``). Tokens in row-major order.

    Taught in chapter 13, C.2.
    """
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4 for a 2-D sin-cos embedding, got {dim}")
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")  # (grid, grid) each
    return torch.cat([sinusoidal_embedding(rows.reshape(-1), dim // 2),
                      sinusoidal_embedding(cols.reshape(-1), dim // 2)], dim=1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Adaptive LayerNorm's affine step: x (N, T, D), shift and scale (N, D) -> x * (1 + scale) + shift.

    Taught in chapter 13, C.2.
    """
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


class DiTBlock(nn.Module):
    """A transformer block conditioned by adaLN-Zero; ``forward(x, c)`` returns (x, attention weights (N, heads, T, T)).

    Taught in chapter 13, C.2.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)  # the affine part comes from c
        self.attn = MultiHeadAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.adaLN_modulation[-1].weight)  # "-Zero": every shift, scale and gate starts at 0
        nn.init.zeros_(self.adaLN_modulation[-1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        attended, weights = self.attn(modulate(self.norm1(x), shift_msa, scale_msa))  # (N, T, D), (N, h, T, T)
        x = x + gate_msa[:, None, :] * attended
        x = x + gate_mlp[:, None, :] * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x, weights


class FinalLayer(nn.Module):
    """adaLN (shift and scale from c), then a zero-initialised linear map to C*P*P values per token. Chapter 13, C.2."""

    def __init__(self, dim: int, out_features: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, out_features)
        for layer in (self.adaLN_modulation[-1], self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """epsilon_theta(z_t, t, y): (N, C, S, S) latents, (N,) integer t, optional (N,) labels -> (N, C, S, S).

    ``input_size`` S must be a multiple of ``patch_size`` P; T = (S / P)^2 tokens. Label ``num_classes``
    is the "no label" token (classifier-free guidance); ``labels=None`` means "no label" for all.

    Taught in chapter 13, C.
    """

    def __init__(self, input_size: int = 7, patch_size: int = 1, in_channels: int = 4, dim: int = 96, depth: int = 4,
                 heads: int = 4, mlp_ratio: float = 4.0, num_classes: int | None = 10):
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input_size {input_size} is not a multiple of patch_size {patch_size}")
        self.config = dict(input_size=input_size, patch_size=patch_size, in_channels=in_channels, dim=dim, depth=depth,
                           heads=heads, mlp_ratio=mlp_ratio, num_classes=num_classes)
        self.input_size, self.patch_size, self.in_channels, self.dim = input_size, patch_size, in_channels, dim
        self.num_classes = num_classes
        self.grid = input_size // patch_size
        patch_dim = in_channels * patch_size * patch_size
        self.patch_embed = nn.Linear(patch_dim, dim)
        self.register_buffer("position", sincos_position_embedding(self.grid, dim)[None], persistent=False)
        self.time_mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.label_emb = nn.Embedding(num_classes + 1, dim) if num_classes else None
        self.blocks = nn.ModuleList([DiTBlock(dim, heads, mlp_ratio) for _ in range(depth)])
        self.final = FinalLayer(dim, patch_dim)

    def condition(self, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """c = MLP(sinusoidal(t)) + embedding(y): (N, D)."""
        return time_and_label_embedding(self, t, labels, self.dim)

    def forward(self, z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None,
                return_attention: bool = False):
        s, c_in = self.input_size, self.in_channels
        if z.ndim != 4 or tuple(z.shape[1:]) != (c_in, s, s):
            raise ValueError(f"DiT expects latents of shape (N, {c_in}, {s}, {s}), got {tuple(z.shape)}")
        t = torch.as_tensor(t, device=z.device)
        t = t.expand(len(z)) if t.ndim == 0 else t
        c = self.condition(t, labels)                                            # (N, D)
        x = self.patch_embed(patchify(z, self.patch_size)) + self.position      # (N, T, D)
        attentions = []
        for block in self.blocks:
            x, weights = block(x, c)
            attentions.append(weights)
        out = unpatchify(self.final(x, c), self.patch_size, c_in, s, s)          # (N, C, S, S)
        return (out, attentions) if return_attention else out
