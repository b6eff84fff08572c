"""A small U-Net for 28x28 images, the noise predictor epsilon_theta(x_t, t, c) of chapter 11.

Built step by step in chapter 11; later chapters (12 guidance, 13 latent diffusion) import it.

    x_t (N, C, 28, 28) ──in_conv──> 28x28 ──ResBlock──┬──down──> 14x14 ──ResBlock──┬──down──> 7x7
                                                       │                             │   ResBlock+Attn
                                                       │                             │   middle: Res, Attn, Res
    eps_hat (N, C, 28, 28) <──out── 28x28 <─ResBlock(cat)┴──up── 14x14 <─ResBlock(cat)┴──up── 7x7 Res+Attn(cat)

Every ResBlock receives the time embedding (sinusoidal features of t, then an MLP) and, when the
model is class-conditional, a label embedding added to it. The embedding enters as a per-channel
scale and shift after the second GroupNorm ("scale-shift norm"). Self-attention runs only at 7x7,
where 49 tokens make it cheap.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.core.layers import sinusoidal_embedding


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, then a scale-shift of the second GroupNorm by the embedding, then conv; plus a skip.

    Taught in chapter 11, G.3.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, groups: int = 8, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_channels)  # -> (scale, shift) per channel
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # the block starts as its skip path
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (N, C_out, H, W)
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)  # (N, C_out, 1, 1) each
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return h + self.skip(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map, with a residual. Chapter 11, G.4."""

    def __init__(self, channels: int, heads: int = 4, groups: int = 8):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w).unbind(1)
        # each (N, heads, D_h, HW) -> (N, heads, HW, D_h) for attention over positions
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.out(out.transpose(-1, -2).reshape(n, c, h, w))


def time_and_label_embedding(model: nn.Module, t: torch.Tensor, labels: torch.Tensor | None, dim: int) -> torch.Tensor:
    """The conditioning vector of the course's diffusion networks: MLP(sinusoidal(t)) + embedding(y), (N, dim).

    ``model`` has ``time_mlp``, ``label_emb`` (None if unconditional) and ``num_classes``; label ``num_classes``
    is "no label" (classifier-free guidance, chapter 12), and ``labels=None`` means "no label" for the whole batch.

    Taught in chapter 11, G.1.
    """
    emb = model.time_mlp(sinusoidal_embedding(t, dim).to(model.time_mlp[0].weight.device))  # (N, dim)
    if model.label_emb is not None:
        if labels is None:
            labels = torch.full((len(emb),), model.num_classes, dtype=torch.long, device=emb.device)
        emb = emb + model.label_emb(labels)
    elif labels is not None:
        raise ValueError(f"this {type(model).__name__} is unconditional (num_classes=None) but labels were given")
    return emb


class UNet(nn.Module):
    """epsilon_theta(x_t, t, c): (N, C, 28, 28), (N,) integer t, optional (N,) labels -> (N, C, 28, 28).

    ``widths`` are the channels at 28x28, 14x14 and 7x7. With ``num_classes`` the model is
    class-conditional; label ``num_classes`` is the "no label" token used for classifier-free
    guidance (chapter 12), and ``labels=None`` means "no label" for the whole batch.

    Taught in chapter 11, G.5.
    """

    def __init__(self, in_channels: int = 1, widths: tuple[int, int, int] = (32, 64, 128), emb_dim: int = 128,
                 heads: int = 4, groups: int = 8, dropout: float = 0.0, num_classes: int | None = None):
        super().__init__()
        self.config = dict(in_channels=in_channels, widths=tuple(widths), emb_dim=emb_dim, heads=heads,
                           groups=groups, dropout=dropout, num_classes=num_classes)
        w0, w1, w2 = widths
        self.emb_dim = emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.num_classes = num_classes
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None

        def res(cin, cout):
            return ResBlock(cin, cout, emb_dim, groups, dropout)

        self.in_conv = nn.Conv2d(in_channels, w0, 3, padding=1)
        self.down0 = res(w0, w0)                                  # 28x28
        self.pool0 = nn.Conv2d(w0, w0, 3, stride=2, padding=1)    # -> 14x14
        self.down1 = res(w0, w1)
        self.pool1 = nn.Conv2d(w1, w1, 3, stride=2, padding=1)    # -> 7x7
        self.down2, self.down2_attn = res(w1, w2), SelfAttention(w2, heads, groups)
        self.mid1, self.mid_attn, self.mid2 = res(w2, w2), SelfAttention(w2, heads, groups), res(w2, w2)
        self.up2, self.up2_attn = res(w2 + w2, w2), SelfAttention(w2, heads, groups)
        self.unpool1 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w2, w2, 3, padding=1))
        self.up1 = res(w2 + w1, w1)                               # 14x14
        self.unpool0 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w1, w1, 3, padding=1))
        self.up0 = res(w1 + w0, w0)                               # 28x28
        self.out = nn.Sequential(nn.GroupNorm(groups, w0), nn.SiLU(), nn.Conv2d(w0, in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)  # predict zero noise at initialisation
        nn.init.zeros_(self.out[-1].bias)

    def embed(self, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return time_and_label_embedding(self, t, labels, self.emb_dim)  # (N, emb_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[-2:] != (28, 28):
            raise ValueError(f"UNet expects (N, C, 28, 28) images, got {tuple(x.shape)}")
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(len(x)) if t.ndim == 0 else t
        emb = self.embed(t, labels)
        h0 = self.down0(self.in_conv(x), emb)                         # (N, w0, 28, 28)
        h1 = self.down1(self.pool0(h0), emb)                          # (N, w1, 14, 14)
        h2 = self.down2_attn(self.down2(self.pool1(h1), emb))        # (N, w2, 7, 7)
        h = self.mid2(self.mid_attn(self.mid1(h2, emb)), emb)         # (N, w2, 7, 7)
        h = self.up2_attn(self.up2(torch.cat([h, h2], 1), emb))       # (N, w2, 7, 7)
        h = self.up1(torch.cat([self.unpool1(h), h1], 1), emb)        # (N, w1, 14, 14)
        h = self.up0(torch.cat([self.unpool0(h), h0], 1), emb)        # (N, w0, 28, 28)
        return self.out(h)


# ------------------------------------------------------------------------------------------ the picture

def schematic():
    """The U-Net of :class:`UNet`: the down path (28x28 -> 14x14 -> 7x7), the middle with self-attention, the up path
    that concatenates the skip from the same resolution, and the time embedding (t -> sinusoidal features -> MLP)
    that enters every residual block as a scale and shift. Returns the matplotlib Figure.

    Taught in chapter 11, G (its parts in G.1-G.4, assembled in G.5).
    """
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(14, 8.4, title="the U-Net $\\epsilon_\\theta(x_t, t)$: down, middle with attention, up with skips")
    left, right, rows = 3.4, 10.6, (6.0, 4.3, 2.6)
    xt = box(ax, 1.0, 7.2, "$x_t$\n(N, 1, 28, 28)", w=1.5, h=0.8, role="data")
    out = box(ax, 13.0, 7.2, "$\\hat\\epsilon$\n(N, 1, 28, 28)", w=1.5, h=0.8, role="data")
    down_text = ["in conv, ResBlock\n$w_0$ channels, 28x28", "ResBlock\n$w_1$ channels, 14x14",
                 "ResBlock + attention\n$w_2$ channels, 7x7"]
    up_text = ["cat, ResBlock $\\to w_0$\n28x28, out conv", "cat, ResBlock $\\to w_1$\n14x14",
               "cat, ResBlock + attention\n$w_2$ channels, 7x7"]
    downs = [box(ax, left, y, text, w=2.6, h=0.9, role="network") for y, text in zip(rows, down_text)]
    ups = [box(ax, right, y, text, w=2.6, h=0.9, role="network") for y, text in zip(rows, up_text)]
    mid = box(ax, 7.0, 1.0, "middle, 7x7:\nResBlock, attention, ResBlock", w=3.2, h=0.9, role="network")
    arrow(ax, xt.bottom, (downs[0].x - 0.9, downs[0].top[1]))
    arrow(ax, (ups[0].x + 0.9, ups[0].top[1]), out.bottom)
    for i in range(2):
        arrow(ax, downs[i].bottom, downs[i + 1].top, text="stride-2 conv", text_offset=(-0.85, -0.2))
        arrow(ax, ups[i + 1].top, ups[i].bottom, text="upsample x2, conv", text_offset=(1.05, -0.2))
    arrow(ax, downs[2].bottom, (mid.left[0] + 0.3, mid.top[1]))
    arrow(ax, (mid.right[0] - 0.3, mid.top[1]), ups[2].bottom)
    for d, u in zip(downs, ups):
        arrow(ax, d.right, u.left, dashed=True, color="#666666", text="skip: concatenate channels",
              text_offset=(0, 0.05))
    # the time embedding, top centre: t -> sinusoidal -> MLP -> emb, into every ResBlock
    t = box(ax, 4.6, 7.6, "$t$", w=0.7, h=0.5, role="condition")
    sin = box(ax, 6.4, 7.6, "sinusoidal\nfeatures", w=1.7, h=0.6, role="operation")
    mlp = box(ax, 8.4, 7.6, "MLP $\\to$ emb", w=1.6, h=0.6, role="network")
    arrow(ax, t.right, sin.left)
    arrow(ax, sin.right, mlp.left)
    note(ax, 7.0, 6.75, "emb enters every ResBlock (both paths and the middle)\n"
                        "as a scale and shift (tag +emb):  $GN(h) \\odot (1 + \\gamma(t)) + b(t)$", fontsize=8.5)
    for b in downs + ups + [mid]:
        tag_x = b.x + (b.w / 2 - 0.35 if b in ups or b is mid else -b.w / 2 + 0.35)
        ax.text(tag_x, b.y + b.h / 2 - 0.05, "+emb", ha="center", va="top", fontsize=7.5, color="#741b47",
                fontweight="bold")
    note(ax, 7.0, 0.15, "attention only at 7x7: 49 tokens ($49^2$ pairs, not $784^2$)", fontsize=8)
    legend(ax, ["data", "network", "operation", "condition"], loc="lower right")
    return fig
