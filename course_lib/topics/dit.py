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

from course_lib.core.diagram import arrow, box, canvas, legend, note
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


def schematic():
    """The DiT: patchify the latent into tokens, a stack of adaLN-Zero blocks conditioned on e = MLP(t) + embed(c),
    unpatchify; on the right, one block, whose gates alpha start at 0 so that it starts as the identity.

    Taught in chapter 13, C.
    """
    fig, ax = canvas(12, 6.4, title="DiT: a transformer on latent patches, conditioned by adaLN-Zero")
    # the whole model, left column (bottom to top)
    zt = box(ax, 1.3, 0.55, "$z_t$  (4x7x7)", w=1.8, h=0.5, role="latent")
    patch = box(ax, 1.3, 1.45, "patchify ($p = 1$)\n+ linear + sin-cos positions", w=2.5, h=0.7, role="operation")
    tokens = box(ax, 1.3, 2.35, "tokens (49 x D)", w=1.8, h=0.45, role="latent")
    blocks = box(ax, 1.3, 3.3, "DiT block\nx depth", w=1.8, h=0.8, role="network")
    final = box(ax, 1.3, 4.35, "final adaLN + linear\n(zero-initialised)", w=2.4, h=0.7, role="network")
    out = box(ax, 1.3, 5.3, "unpatchify $\\to \\hat\\epsilon$ (4x7x7)", w=2.5, h=0.5, role="latent")
    for a, b in ((zt, patch), (patch, tokens), (tokens, blocks), (blocks, final), (final, out)):
        arrow(ax, a.top, b.bottom)
    # the conditioning, middle column
    t = box(ax, 3.7, 0.55, "timestep $t$", w=1.4, h=0.45, role="condition")
    c = box(ax, 5.3, 0.55, "class $c$", w=1.2, h=0.45, role="condition")
    t_emb = box(ax, 3.7, 1.45, "sinusoidal\n+ MLP", w=1.4, h=0.6, role="network")
    c_emb = box(ax, 5.3, 1.45, "embedding\n(null = 10)", w=1.3, h=0.6, role="network")
    e = box(ax, 4.5, 2.35, "$e$ = sum  (D)", w=1.5, h=0.45, role="condition")
    ada = box(ax, 4.5, 3.3, "SiLU + linear\n(zero-init) per block", w=2.0, h=0.7, role="network")
    arrow(ax, t.top, t_emb.bottom)
    arrow(ax, c.top, c_emb.bottom)
    arrow(ax, t_emb.top, (e.x - 0.3, e.y - e.h / 2))
    arrow(ax, c_emb.top, (e.x + 0.3, e.y - e.h / 2))
    arrow(ax, e.top, ada.bottom)
    arrow(ax, ada.left, blocks.right, text="$\\beta, \\gamma, \\alpha$", text_offset=(0.0, 0.05))
    arrow(ax, (e.x - e.w / 2, e.y + 0.1), (final.x + final.w / 2, final.y - 0.15), bend=-0.25)
    # one block, right column (bottom to top)
    ax.plot([6.3, 6.3], [0.2, 5.7], color="#bbbbbb", lw=0.8, ls="--")
    note(ax, 9.1, 5.75, "one DiT block (adaLN-Zero)", fontsize=9)
    xin = box(ax, 7.8, 0.55, "$x$ (tokens)", w=1.4, h=0.45, role="latent")
    ln1 = box(ax, 7.8, 1.4, "LN, then $\\times (1 + \\gamma_1) + \\beta_1$", w=2.5, h=0.5, role="operation")
    attn = box(ax, 7.8, 2.2, "multi-head attention", w=2.2, h=0.5, role="network")
    gate1 = box(ax, 7.8, 2.95, "$\\times \\alpha_1$, add to $x$", w=2.0, h=0.45, role="operation")
    ln2 = box(ax, 7.8, 3.7, "LN, then $\\times (1 + \\gamma_2) + \\beta_2$", w=2.5, h=0.5, role="operation")
    mlp = box(ax, 7.8, 4.45, "MLP", w=1.4, h=0.45, role="network")
    gate2 = box(ax, 7.8, 5.15, "$\\times \\alpha_2$, add: $x'$", w=2.0, h=0.45, role="operation")
    for a, b in ((xin, ln1), (ln1, attn), (attn, gate1), (gate1, ln2), (ln2, mlp), (mlp, gate2)):
        arrow(ax, a.top, b.bottom)
    arrow(ax, xin.right, (gate1.x + gate1.w / 2, gate1.y), bend=0.35, dashed=True)
    arrow(ax, (gate1.x + gate1.w / 2, gate1.y + 0.1), (gate2.x + gate2.w / 2, gate2.y), bend=0.35, dashed=True)
    note(ax, 9.55, 1.7, "residual", fontsize=8)
    note(ax, 10.6, 4.2, "at initialisation\n$\\alpha_1 = \\alpha_2 = 0$:\n$x' = x$, the block\nis the identity",
         fontsize=9, color="#990000")
    legend(ax, ["latent", "network", "operation", "condition"], loc="lower right")
    return fig
