"""Chapter 04's Convolutional vision Transformer (CvT, Wu et al. 2021), small enough to train on a CPU.

A CvT is a stack of stages; each stage is a convolution that makes the tokens, then transformer blocks
whose q, k and v come from a depthwise convolution over the token grid::

    (B, C, H, W) --conv token embedding: overlapping strided conv, LayerNorm--> (B, h*w, D) on an h x w grid
        --> depth x [x + ConvAttention(LN(x)); x + MLP(LN(x))] --> back to a map (B, D, h, w) --> next stage

    ConvAttention(x):  tokens -> map (B, D, h, w)
                       q = Linear(BN(depthwise conv, stride 1)(map))        (B, h*w, D)
                       k = Linear(BN(depthwise conv, stride_kv)(map))       (B, h'*w', D), h' ~ h / stride_kv
                       v = likewise;  multi-head softmax(q k^T / sqrt(D_h)) v;  Linear

There are no position embeddings: the convolutions (and their zero padding) carry where a token is.
The last stage prepends a [CLS] token, which skips the convolutions (it has no place on the grid),
and the classifier reads it after a final LayerNorm. ``stride_kv = 2`` is the paper's "squeezed"
projection: 4x fewer keys and values. The attention scale is 1/sqrt(D_h) as in the paper's equations
(the official code uses 1/sqrt(D), the full width; see chapter 04).

Also here: :func:`conv_output_size`, the analytic multiply-add count :func:`multiply_adds`, and
:data:`CVT_13` (the paper's smallest ImageNet model, for counting). Built step by step in chapter 04.
"""
from __future__ import annotations

import torch
from torch import nn

from course_lib.topics.vit import scaled_dot_product_attention


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Side of a convolution's output: floor((size + 2 padding - kernel) / stride) + 1. Chapter 04, G.1."""
    if min(size, kernel, stride) < 1 or padding < 0:
        raise ValueError(f"need size, kernel, stride >= 1 and padding >= 0, got {size}, {kernel}, {stride}, {padding}")
    if size + 2 * padding < kernel:
        raise ValueError(f"a {kernel}x{kernel} kernel does not fit in {size} pixels with padding {padding}")
    return (size + 2 * padding - kernel) // stride + 1


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, h*w, D) -> (B, D, h, w), row-major tokens. Chapter 04, G.2."""
    b, n, d = tokens.shape
    h, w = grid
    if n != h * w:
        raise ValueError(f"{n} tokens do not fill a {h}x{w} grid")
    return tokens.transpose(1, 2).reshape(b, d, h, w)


def map_to_tokens(maps: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) -> (B, h*w, D), row-major tokens. Chapter 04, G.1."""
    return maps.flatten(2).transpose(1, 2)


class ConvEmbedding(nn.Module):
    """Convolutional token embedding: Conv2d(kernel, stride, padding), then LayerNorm over channels. Chapter 04, G.1.

    With stride < kernel neighbouring tokens see overlapping pixels (ViT's patches do not overlap).
    """

    def __init__(self, in_channels: int, dim: int, kernel: int, stride: int, padding: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, dim, kernel, stride=stride, padding=padding)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, C, H, W) -> tokens (B, h*w, D) and the grid (h, w)."""
        if x.ndim != 4:
            raise ValueError(f"expected a batch of maps (B, C, H, W), got shape {tuple(x.shape)}")
        maps = self.conv(x)                                   # (B, D, h, w)
        return self.norm(map_to_tokens(maps)), tuple(maps.shape[-2:])


def depthwise_projection(dim: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """Depthwise Conv2d (one kernel x kernel filter per channel, no bias), then BatchNorm2d: (B, D, h, w) -> (B, D, h', w').

    Taught in chapter 04, G.2.
    """
    return nn.Sequential(nn.Conv2d(dim, dim, kernel, stride=stride, padding=kernel // 2, groups=dim, bias=False),
                         nn.BatchNorm2d(dim))


class ConvAttention(nn.Module):
    """Multi-head self-attention with CvT's convolutional projection. Chapter 04, G.2.

    ``prefix_tokens`` leading tokens ([CLS]) skip the convolutions and are prepended to q, k and v.
    ``forward(x, grid)``: x (B, prefix + h*w, D) -> (B, prefix + h*w, D), and the attention weights
    (B, heads, prefix + h*w, prefix + h'*w') over the strided key grid.
    """

    def __init__(self, dim: int, heads: int, kernel: int = 3, stride_kv: int = 2, prefix_tokens: int = 0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.prefix_tokens, self.stride_kv = heads, prefix_tokens, stride_kv
        self.conv_q = depthwise_projection(dim, kernel, 1)
        self.conv_k = depthwise_projection(dim, kernel, stride_kv)
        self.conv_v = depthwise_projection(dim, kernel, stride_kv)
        self.proj_q, self.proj_k, self.proj_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def conv_qkv(self, x: torch.Tensor, grid: tuple[int, int]):
        """The convolutional part: (B, prefix + h*w, D) -> q (B, prefix + h*w, D), k and v (B, prefix + h'*w', D)."""
        prefix, patches = x[:, :self.prefix_tokens], x[:, self.prefix_tokens:]
        maps = tokens_to_map(patches, grid)                                          # (B, D, h, w)
        q, k, v = (torch.cat([prefix, map_to_tokens(conv(maps))], dim=1)
                   for conv in (self.conv_q, self.conv_k, self.conv_v))
        return q, k, v

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, heads, T, D_h)."""
        b, t, d = x.shape
        return x.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        q, k, v = self.conv_qkv(x, grid)
        q, k, v = (self.split_heads(proj(z)) for proj, z in ((self.proj_q, q), (self.proj_k, k), (self.proj_v, v)))
        out, weights = scaled_dot_product_attention(q, k, v)                        # (B, heads, T, D_h)
        return self.proj(out.transpose(1, 2).reshape(b, t, d)), weights


class ConvBlock(nn.Module):
    """A pre-norm CvT block: x + ConvAttention(LN(x), grid), then x + MLP(LN(x)). Chapter 04, G.2."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, kernel: int = 3, stride_kv: int = 2,
                 prefix_tokens: int = 0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ConvAttention(dim, heads, kernel, stride_kv, prefix_tokens)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        attended, weights = self.attn(self.norm1(x), grid)
        x = x + attended
        x = x + self.mlp(self.norm2(x))
        return x, weights


class CvTStage(nn.Module):
    """One stage: a convolutional token embedding, an optional [CLS] token, ``depth`` blocks. Chapter 04, G.1.

    ``forward(maps)``: (B, C, H, W) -> maps (B, D, h, w), the [CLS] token (B, D) or None, and the
    attention weights of every block.
    """

    def __init__(self, in_channels: int, dim: int, depth: int, heads: int, kernel: int, stride: int, padding: int,
                 cls_token: bool = False, mlp_ratio: float = 4.0, kernel_qkv: int = 3, stride_kv: int = 2):
        super().__init__()
        self.embed = ConvEmbedding(in_channels, dim, kernel, stride, padding)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls_token else None
        prefix = int(cls_token)
        self.blocks = nn.ModuleList(ConvBlock(dim, heads, mlp_ratio, kernel_qkv, stride_kv, prefix)
                                    for _ in range(depth))

    def forward(self, maps: torch.Tensor):
        tokens, grid = self.embed(maps)                                              # (B, h*w, D)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        attentions = []
        for block in self.blocks:
            tokens, weights = block(tokens, grid)
            attentions.append(weights)
        prefix = 0 if self.cls_token is None else 1
        cls = tokens[:, 0] if prefix else None
        return tokens_to_map(tokens[:, prefix:], grid), cls, attentions


#: The MNIST CvT of chapter 04: 28x28 -> 14x14 (32 channels, 1 block) -> 7x7 (64 channels, 3 blocks, [CLS]).
MNIST_STAGES = (dict(dim=32, depth=1, heads=1, kernel=7, stride=2, padding=3),
                dict(dim=64, depth=3, heads=4, kernel=3, stride=2, padding=1))

#: CvT-13 (paper Table 2): 224 -> 56 -> 28 -> 14; 64/192/384 channels, 1/3/6 heads, 1/2/10 blocks, MLP ratio 4.
CVT_13 = dict(channels=3, num_classes=1000, mlp_ratio=4.0,
              stages=(dict(dim=64, depth=1, heads=1, kernel=7, stride=4, padding=2),
                      dict(dim=192, depth=2, heads=3, kernel=3, stride=2, padding=1),
                      dict(dim=384, depth=10, heads=6, kernel=3, stride=2, padding=1)))


class CvT(nn.Module):
    """A CvT classifier: the ``stages`` (dicts of dim, depth, heads, kernel, stride, padding), a [CLS]
    token in the last stage, LayerNorm and a linear head on it. No position embeddings anywhere.

    Taught in chapter 04, G.
    """

    def __init__(self, channels: int = 1, num_classes: int = 10, stages=MNIST_STAGES, mlp_ratio: float = 2.0,
                 kernel_qkv: int = 3, stride_kv: int = 2):
        super().__init__()
        stages = [dict(s) for s in stages]
        if not stages:
            raise ValueError("a CvT needs at least one stage")
        needed = {"dim", "depth", "heads", "kernel", "stride", "padding"}
        for i, stage in enumerate(stages):
            if set(stage) != needed:
                raise ValueError(f"stage {i} must name exactly {sorted(needed)}, got {sorted(stage)}")
        self.config = dict(channels=channels, num_classes=num_classes, stages=stages, mlp_ratio=mlp_ratio,
                           kernel_qkv=kernel_qkv, stride_kv=stride_kv)
        in_channels, self.stages = channels, nn.ModuleList()
        for i, stage in enumerate(stages):
            self.stages.append(CvTStage(in_channels, cls_token=i == len(stages) - 1, mlp_ratio=mlp_ratio,
                                        kernel_qkv=kernel_qkv, stride_kv=stride_kv, **stage))
            in_channels = stage["dim"]
        self.norm = nn.LayerNorm(in_channels)
        self.head = nn.Linear(in_channels, num_classes)

    def encode(self, images: torch.Tensor, return_attention: bool = False):
        """(B, C, H, W) -> the last stage's map (B, D, h, w) and normalised [CLS] (B, D) [, attentions per stage]."""
        if images.ndim != 4 or images.shape[1] != self.config["channels"]:
            raise ValueError(f"expected images (B, {self.config['channels']}, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"expected float images, got {images.dtype}; convert with images.float() / 255")
        x, attentions = images, []
        for stage in self.stages:
            x, cls, weights = stage(x)
            attentions.append(weights)
        cls = self.norm(cls)
        return (x, cls, attentions) if return_attention else (x, cls)

    def forward(self, images: torch.Tensor, return_attention: bool = False):
        """(B, C, H, W) -> logits (B, num_classes) [, attention weights: a list per stage of a list per block]."""
        x, cls, attentions = self.encode(images, return_attention=True)
        logits = self.head(cls)
        return (logits, attentions) if return_attention else logits


def multiply_adds(model: CvT, image_size: int | tuple[int, int]) -> int:
    """Multiply-adds of one image through ``model``, counted from the shapes: every convolution and
    matrix product (embedding, depthwise projections, linear q/k/v/out, the two attention products,
    MLP, head). Normalisations, softmax and GELU are left out (as FLOP counters leave them out).

    Taught in chapter 04, G.3.
    """
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    cfg = model.config
    in_channels, total = cfg["channels"], 0
    k_qkv, s_kv = cfg["kernel_qkv"], cfg["stride_kv"]
    for i, stage in enumerate(cfg["stages"]):
        d, k = stage["dim"], stage["kernel"]
        h, w = conv_output_size(h, k, stage["stride"], stage["padding"]), conv_output_size(w, k, stage["stride"], stage["padding"])
        total += h * w * d * in_channels * k * k                          # conv token embedding
        prefix = int(i == len(cfg["stages"]) - 1)
        hk = conv_output_size(h, k_qkv, s_kv, k_qkv // 2)
        wk = conv_output_size(w, k_qkv, s_kv, k_qkv // 2)
        t_q, t_kv = prefix + h * w, prefix + hk * wk
        hidden = int(d * cfg["mlp_ratio"])
        per_block = (h * w * d * k_qkv**2 + 2 * hk * wk * d * k_qkv**2  # depthwise convs for q, k, v
                     + (t_q + 2 * t_kv) * d * d                           # linear q, k, v
                     + 2 * t_q * t_kv * d                                 # q k^T and weights @ v, all heads
                     + t_q * d * d                                        # output projection
                     + 2 * t_q * d * hidden)                              # MLP
        total += stage["depth"] * per_block
        in_channels = d
    return total + in_channels * cfg["num_classes"]                       # head


def full_vs_separable_parameters(channels: int, kernel: int) -> tuple[int, int]:
    """Weights of a full kernel x kernel conv C -> C (k^2 C^2) and of a depthwise-separable one
    (depthwise k^2 C, then pointwise C^2); biases left out. Chapter 04, G.2."""
    return kernel**2 * channels**2, kernel**2 * channels + channels**2


def schematic():
    """CvT (Wu et al. 2021): stages that start with a convolutional token embedding (an overlapping strided
    conv and LayerNorm, no position embeddings) and whose blocks form q, k and v by a convolutional projection
    (depthwise conv, BatchNorm, linear; stride 2 for the keys and values). Taught in chapter 04, G.

    Returns the matplotlib Figure (drawn with ``course_lib.core.diagram``).
    """
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(14, 6.6, title="CvT: convolutions back in (chapter 04, G; the MNIST CvT of G.1)")
    # top row: the stages
    y = 4.7
    image = box(ax, 0.9, y, "image\n$1 \\times 28 \\times 28$", w=1.4, h=0.8, role="data")
    embed1 = box(ax, 3.1, y, "conv token embedding\nkernel 7, stride 2, pad 3\n+ LayerNorm", w=2.3, h=1.0,
                 role="network")
    arrow(ax, image.right, embed1.left)
    blocks1 = box(ax, 5.75, y, "1 conv-transformer\nblock on the\n$14 \\times 14$ grid, $D = 32$", w=2.2, h=1.0,
                  role="network")
    arrow(ax, embed1.right, blocks1.left)
    embed2 = box(ax, 8.4, y, "conv token embedding\nkernel 3, stride 2, pad 1\n+ LayerNorm", w=2.3, h=1.0,
                 role="network")
    arrow(ax, blocks1.right, embed2.left)
    blocks2 = box(ax, 11.1, y, "prepend [CLS];\n3 blocks on the\n$7 \\times 7$ grid, $D = 64$", w=2.2, h=1.0,
                  role="network")
    arrow(ax, embed2.right, blocks2.left)
    head = box(ax, 13.15, y, "[CLS] $\\to$\nLN, head\n$\\to$ logits", w=1.3, h=1.0, role="data")
    arrow(ax, blocks2.right, head.left)
    note(ax, 7.0, y + 0.85, "stage 1 $\\to$ stage 2: the grid shrinks, the tokens widen (like a CNN); "
         "no position embeddings anywhere")

    # bottom row: the convolutional projection inside each block
    yb = 1.75
    ax.plot([blocks1.x, blocks1.x], [y - 0.5, 3.55], color="#2a6099", linestyle=":", linewidth=1.2)
    ax.text(blocks1.x + 0.1, 3.65, "inside every block: the convolutional projection (G.2)", ha="left",
            va="bottom", fontsize=8, color="#2a6099")
    tokens = box(ax, 0.9, yb, "tokens\n$h w \\times D$\n([CLS] aside)", w=1.4, h=1.0, role="data")
    grid = box(ax, 2.75, yb, "reshape to\na map\n$D \\times h \\times w$", w=1.5, h=1.0, role="operation")
    arrow(ax, tokens.right, grid.left)
    rows = {"q": (yb + 1.05, "stride 1"), "k": (yb, "stride 2"), "v": (yb - 1.05, "stride 2")}
    for name, (y_row, stride) in rows.items():
        conv = box(ax, 5.2, y_row, f"depthwise $3 \\times 3$ conv,\n{stride}, BatchNorm", w=2.4, h=0.75,
                   role="network")
        arrow(ax, grid.right, conv.left)
        flat = box(ax, 7.55, y_row, "flatten,\nprepend [CLS]", w=1.5, h=0.75, role="operation")
        arrow(ax, conv.right, flat.left)
        linear = box(ax, 9.5, y_row, f"linear $W_{name}$\n$\\to {name}$", w=1.4, h=0.75, role="network")
        arrow(ax, flat.right, linear.left)
        arrow(ax, linear.right, (11.05, yb))
    attention = box(ax, 11.85, yb, "multi-head\nattention\n$T_q \\times T_{kv}$", w=1.5, h=1.0, role="operation")
    note(ax, 11.85, 0.75, "stride 2 for $k$, $v$: 4x fewer\nkeys ('squeezed');\n[CLS] skips the convolutions")
    legend(ax, ["data", "network", "operation"], loc="lower right")
    return fig


__all__ = ["conv_output_size", "tokens_to_map", "map_to_tokens", "ConvEmbedding", "depthwise_projection",
           "ConvAttention", "ConvBlock", "CvTStage", "CvT", "MNIST_STAGES", "CVT_13", "multiply_adds",
           "full_vs_separable_parameters"]
