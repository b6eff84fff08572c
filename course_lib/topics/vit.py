"""Chapter 04's Vision Transformer, small enough to train on a CPU; chapters 05, 06, 07 and 13 reuse it.

    images (B, C, H, W) --patchify--> (B, N, C*P*P) --linear--> (B, N, D) --+ position--> prepend [CLS]
    --> depth x [x + MHA(LN(x)); x + MLP(LN(x))] --> LN --> tokens (B, 1 + N, D) --> head([CLS])

N = (H/P)(W/P) patches of P x P pixels, D the width, heads of width D_h = D / heads. Every
attention map can be returned (``return_attention=True``) for the attention widgets and rollout.

For looking and counting: ``parameter_count`` (the formula), ``multiply_adds`` (from the shapes) and
``measured_multiply_adds`` (torch's FlopCounterMode), ``temper_attention``, ``select_attention``,
``position_similarity`` and ``mean_attention_distance``; ``course_lib.topics.vit.attention_explorer`` draws them.
"""
from __future__ import annotations

import math

import ipywidgets as widgets
import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle
from torch import nn

from course_lib.core.plotting import overlay_heatmap
from course_lib.core.widgets import interactive_figure


def _check_images(images: torch.Tensor, patch_size: int) -> None:
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}; "
                         "add a batch dimension with images[None] for a single image")
    if not images.is_floating_point():
        raise TypeError(f"expected float images, got {images.dtype}; convert with images.float() / 255")
    height, width = images.shape[-2:]
    if height % patch_size or width % patch_size:
        raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {patch_size}")


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C*P*P); patches in row-major order, each flattened as (C, P, P).

    Taught in chapter 04, A; chapter 13, C.1.
    """
    _check_images(images, patch_size)
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p)      # (B, C, H/P, P, W/P, P)
    x = x.permute(0, 2, 4, 1, 3, 5)                      # (B, H/P, W/P, C, P, P)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int, height: int, width: int) -> torch.Tensor:
    """The inverse of ``patchify``: (B, N, C*P*P) -> (B, C, H, W). Chapter 04, A."""
    b, n, d = patches.shape
    p = patch_size
    if n != (height // p) * (width // p) or d != channels * p * p:
        raise ValueError(f"patches of shape {tuple(patches.shape)} do not tile a {channels}x{height}x{width} "
                         f"image with {p}x{p} patches")
    x = patches.reshape(b, height // p, width // p, channels, p, p)
    x = x.permute(0, 3, 1, 4, 2, 5)                      # (B, C, H/P, P, W/P, P)
    return x.reshape(b, channels, height, width)


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d_k)) v over the last two dimensions; returns (output, attention weights). Chapter 04, B.2.

    q (..., N_q, d_k), k (..., N_k, d_k), v (..., N_k, d_v) -> (..., N_q, d_v), weights (..., N_q, N_k).
    ``mask`` (broadcastable to (..., N_q, N_k), bool): True where a query may attend.
    """
    logits = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])   # (..., N_q, N_k)
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    weights = logits.softmax(dim=-1)
    return weights @ v, weights


class MultiHeadAttention(nn.Module):
    """Self-attention with ``heads`` heads of width D_h = dim / heads; one linear for q, k and v. Chapter 04, C."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N, D) -> q, k, v, each (B, heads, N, D_h)."""
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        return q, k, v

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, D) -> (B, N, D), and the attention weights (B, heads, N, N)."""
        b, n, d = x.shape
        q, k, v = self.split_heads(x)
        out, weights = scaled_dot_product_attention(q, k, v, mask)   # (B, heads, N, D_h)
        out = out.transpose(1, 2).reshape(b, n, d)                    # concatenate the heads
        return self.proj(out), weights


class Block(nn.Module):
    """A pre-norm transformer block: x + MHA(LN(x)), then x + MLP(LN(x)). Chapter 04, D.3."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        attended, weights = self.attn(self.norm1(x), mask)
        x = x + attended
        x = x + self.mlp(self.norm2(x))
        return x, weights


def interpolate_position_embedding(position: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize learned patch position embeddings (1, G*G', D) to another patch grid (bicubic), as
    DINO does for its smaller local crops. Chapter 04, D.2."""
    _, n, d = position.shape
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{n} position embeddings do not form a square grid")
    if (side, side) == tuple(grid):
        return position
    square = position.reshape(1, side, side, d).permute(0, 3, 1, 2)        # (1, D, G, G)
    resized = F.interpolate(square, size=grid, mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], d)


class ViT(nn.Module):
    """A Vision Transformer for square images: patch embedding, [CLS] token, learned positions,
    ``depth`` pre-norm blocks, a final LayerNorm and a linear head on the [CLS] token. Chapter 04, D.3.

    ``num_classes=0`` gives no head: ``forward`` then returns the [CLS] features (B, D).
    """

    def __init__(self, image_size: int = 28, patch_size: int = 7, channels: int = 1, dim: int = 64,
                 depth: int = 4, heads: int = 4, mlp_ratio: float = 2.0, num_classes: int = 10):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.patch_size, self.channels, self.dim = patch_size, channels, dim
        self.grid = image_size // patch_size
        self.patch_embed = nn.Linear(channels * patch_size**2, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(0.02 * torch.randn(1, 1 + self.grid**2, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes) if num_classes else nn.Identity()

    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> patch tokens with their positions added, (B, N, D). H and W may differ from
        ``image_size`` (multi-crop): the position embeddings are then interpolated."""
        patches = patchify(images, self.patch_size)                    # (B, N, C*P*P)
        grid = (images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size)
        position = interpolate_position_embedding(self.position[:, 1:], grid)
        return self.patch_embed(patches) + position

    def cls_tokens(self, batch: int) -> torch.Tensor:
        """The [CLS] token with its position, (B, 1, D)."""
        return (self.cls_token + self.position[:, :1]).expand(batch, -1, -1)

    def run_blocks(self, tokens: torch.Tensor, return_attention: bool = False):
        """Blocks and the final LayerNorm: (B, T, D) -> (B, T, D) [, list of depth x (B, heads, T, T)]."""
        attentions = []
        for block in self.blocks:
            tokens, weights = block(tokens)
            attentions.append(weights)
        tokens = self.norm(tokens)
        return (tokens, attentions) if return_attention else tokens

    def encode(self, images: torch.Tensor, return_attention: bool = False):
        """(B, C, H, W) -> all output tokens (B, 1 + N, D), [CLS] first [, attention maps]."""
        patches = self.patch_tokens(images)
        tokens = torch.cat([self.cls_tokens(len(images)), patches], dim=1)
        return self.run_blocks(tokens, return_attention)

    def forward(self, images: torch.Tensor, return_attention: bool = False):
        """(B, C, H, W) -> logits (B, num_classes) (or [CLS] features) [, attention maps]."""
        tokens, attentions = self.encode(images, return_attention=True)
        out = self.head(tokens[:, 0])
        return (out, attentions) if return_attention else out


def attention_rollout(attentions: list[torch.Tensor], residual: bool = True) -> torch.Tensor:
    """Attention rollout (Abnar and Zuidema, 2020): how much each output token draws on each input token.

    Average the heads, add the identity for the residual path and renormalise the rows,
    A_l <- (A_l + I) / 2, then multiply through the layers: R = A_L ... A_2 A_1.
    ``attentions``: depth x (B, heads, T, T) -> (B, T, T); row ``i`` sums to 1.

    Taught in chapter 04, F.3.
    """
    rollout = None
    for weights in attentions:
        a = weights.mean(dim=1)                                        # (B, T, T)
        if residual:
            a = 0.5 * (a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device))
        rollout = a if rollout is None else a @ rollout
    return rollout


# ---------------------------------------------------------------------------------- counting and looking

def parameter_count(image_size: int, patch_size: int, channels: int, dim: int, depth: int, mlp_hidden: int,
                    num_classes: int) -> int:
    """Parameters of :class:`ViT` (and of the paper's ViT), from the formula, with N = (image_size / P)^2:

    patch embedding (P^2 C + 1) D + [CLS] D + positions (N + 1) D
    + depth x [2 LayerNorms 4D + qkv 3D^2 + 3D + output D^2 + D + MLP (2 D M + M + D)]
    + final LayerNorm 2D + head (D + 1) K   (no head when ``num_classes`` is 0).

    Taught in chapter 04, D.4.
    """
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
    n = (image_size // patch_size) ** 2
    embedding = (patch_size**2 * channels + 1) * dim + dim + (n + 1) * dim
    block = 4 * dim + (3 * dim * dim + 3 * dim) + (dim * dim + dim) + (2 * dim * mlp_hidden + mlp_hidden + dim)
    head = (dim + 1) * num_classes if num_classes else 0
    return embedding + depth * block + 2 * dim + head


def multiply_adds(model: ViT, image_size: int | tuple[int, int] | None = None) -> int:
    """Multiply-adds of one image through ``model``, from the shapes: the patch embedding, q/k/v and
    output projections, the two attention products (q k^T and weights @ v) and the MLP of every block,
    and the head. LayerNorm, softmax and GELU are left out, as FLOP counters leave them out.
    Papers' "FLOPs" for vision models are usually this number (multiply-adds), not twice it.

    Taught in chapter 04, G.3.
    """
    if image_size is None:
        image_size = model.grid * model.patch_size
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    n = (h // model.patch_size) * (w // model.patch_size)
    t, d = n + 1, model.dim
    hidden = model.blocks[0].mlp[0].out_features if len(model.blocks) else 0
    per_block = t * d * 3 * d + 2 * t * t * d + t * d * d + 2 * t * d * hidden
    head = model.head.in_features * model.head.out_features if isinstance(model.head, nn.Linear) else 0
    return n * model.patch_embed.in_features * d + len(model.blocks) * per_block + head


def measured_multiply_adds(model: nn.Module, *inputs) -> int:
    """Multiply-adds of ``model(*inputs)`` as torch's FlopCounterMode measures them (its FLOPs / 2),
    batch included. Works on the ``meta`` device too (shapes only, no arithmetic). Chapter 04, G.3."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    flops = counter.get_total_flops()
    if flops % 2:
        raise RuntimeError(f"FlopCounterMode gave an odd number of FLOPs ({flops}); expected 2 per multiply-add")
    return flops // 2


def temper_attention(weights: torch.Tensor, temperature: float) -> torch.Tensor:
    """Attention weights at another softmax temperature, from the weights alone:
    softmax(log(weights) / T) = softmax(logits / T), since log softmax(z) = z - logsumexp(z) and a
    softmax ignores a constant shift. T > 1 flattens the rows, T < 1 sharpens them, T = 1 changes nothing.

    Taught in chapter 04, F.4.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return torch.softmax(torch.log(weights) / temperature, dim=-1)


def position_similarity(model: ViT) -> torch.Tensor:
    """Cosine similarity between the learned position embeddings of the patches, (N, N), N = grid^2. Chapter 04, F.1.

    Row i reshaped to the (grid, grid) patch grid shows which positions embed like position i.
    This is a property of the embedding table, not an attention map: no image enters it.
    """
    position = model.position[0, 1:].detach()                              # (N, D), the [CLS] slot left out
    position = F.normalize(position, dim=-1)
    return position @ position.T


def mean_attention_distance(attentions: list[torch.Tensor], grid: tuple[int, int], patch_size: int = 1,
                            prefix_tokens: int = 1) -> torch.Tensor:
    """Mean distance (in pixels when ``patch_size`` is given) between a patch query and the patches it
    attends to, weighted by attention: depth x (B, heads, T, T) -> (depth, heads), averaged over images
    and patch queries. Prefix tokens ([CLS]) are left out as queries and as keys (keys renormalised).

    Taught in chapter 04, F.2.
    """
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    centres = torch.stack([rows.flatten(), cols.flatten()], dim=1).float() * patch_size    # (N, 2)
    distance = torch.cdist(centres, centres)                                                # (N, N)
    result = []
    for weights in attentions:
        patches = weights[:, :, prefix_tokens:, prefix_tokens:].float()                     # (B, heads, N, N)
        if patches.shape[-1] != len(centres):
            raise ValueError(f"attention over {patches.shape[-1]} patch keys does not match a {grid} grid")
        patches = patches / patches.sum(-1, keepdim=True).clamp_min(1e-12)
        result.append((patches * distance.to(patches.device)).sum(-1).mean(dim=(0, 2)).cpu())
    return torch.stack(result)


def select_attention(attentions: list[torch.Tensor], image: int = 0, layer: int = -1, head: int | None = None,
                     query: int = 0, rollout: bool = False, temperature: float = 1.0) -> torch.Tensor:
    """One row of attention, (T,): what token ``query`` of image ``image`` attends to. Chapter 04, F.2.

    ``attentions``: depth x (B, heads, T, T). ``head=None`` averages the heads. ``rollout=True`` gives the
    rollout through layers 0..``layer`` (heads averaged, ``head`` ignored). ``temperature`` re-softmaxes
    every layer's weights first (:func:`temper_attention`).
    """
    if not attentions:
        raise ValueError("attentions is empty: pass the list that encode(..., return_attention=True) returns")
    depth = len(attentions)
    layer = layer % depth if -depth <= layer < depth else None
    if layer is None:
        raise IndexError(f"layer must be in [-{depth}, {depth - 1}]")
    chosen = [a[image:image + 1].float() for a in attentions[:layer + 1]]          # (1, heads, T, T) each
    if temperature != 1.0:
        chosen = [temper_attention(a, temperature) for a in chosen]
    if rollout:
        return attention_rollout(chosen)[0, query]
    weights = chosen[-1][0]                                                         # (heads, T, T)
    return (weights.mean(0) if head is None else weights[head])[query]


# ----------------------------------------------------------------------------------------- the explorer widget

def attention_explorer(images, attentions, patch_size: int, prefix_tokens: int = 1, *, titles=None,
                       figsize=(11, 3.6), image: int = 0, layer: int = -1, head=None, query: int = 0,
                       rollout: bool = True, temperature: bool = True) -> widgets.VBox:
    """Attention maps of a vision transformer over its patch grid, drawn on the images. Chapter 04, F.2.

    ``images`` (B, C, H, W) in [0, 1]; ``attentions`` a list with one (B, heads, T, T) tensor per layer,
    T = ``prefix_tokens`` + (H / P)(W / P) (what ``ViT.encode(images, return_attention=True)`` returns);
    ``prefix_tokens`` counts the tokens before the patches: 1 for a [CLS] token, 0 for DiT.
    Controls: the image, the layer, the head ("mean" averages them), the query token (0 is [CLS]
    when there is one), "attention" or "rollout" (through the layers up to the chosen one, heads
    averaged), and a softmax temperature T (rows re-softmaxed as softmax(log A / T)).
    Panels: the image with the query patch framed; the query's attention over the patches on the image
    (scaled to its own maximum); the same weights unscaled, with a colour bar, and the share that went
    to the prefix tokens. Returns the widget box of :func:`interactive_figure`.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError("images must be a tensor (B, C, H, W); add a batch dimension with images[None]")
    if not isinstance(attentions, (list, tuple)) or not attentions:
        raise ValueError("attentions must be a non-empty list of (B, heads, T, T) tensors, one per layer")
    b, _, height, width = images.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {patch_size}")
    grid = (height // patch_size, width // patch_size)
    tokens = prefix_tokens + grid[0] * grid[1]
    for i, weights in enumerate(attentions):
        if weights.ndim != 4 or weights.shape[0] != b or weights.shape[-2:] != (tokens, tokens):
            raise ValueError(f"attentions[{i}] has shape {tuple(weights.shape)}; expected ({b}, heads, {tokens}, "
                             f"{tokens}) for {prefix_tokens} prefix token(s) and a {grid[0]}x{grid[1]} patch grid")
    heads = attentions[0].shape[1]
    titles = list(titles) if titles is not None else [f"image {i}" for i in range(b)]
    if len(titles) != b:
        raise ValueError(f"{b} images but {len(titles)} titles")

    def token_name(q):
        if q < prefix_tokens:
            return "[CLS]" if prefix_tokens == 1 else f"prefix token {q}"
        row, col = divmod(q - prefix_tokens, grid[1])
        return f"patch (row {row}, col {col})"

    def draw(axes, image, layer, head, query, view, temperature):
        head = None if head == "mean" else head
        picture = images[image].detach().cpu().float()
        row = select_attention(attentions, image, layer, head, query, rollout=view == "rollout",
                               temperature=temperature).cpu()
        patch_map = row[prefix_tokens:].reshape(grid)
        ax_image, ax_overlay, ax_weights = axes
        ax_image.imshow(picture.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
        if query >= prefix_tokens:
            r, c = divmod(query - prefix_tokens, grid[1])
            ax_image.add_patch(Rectangle((c * patch_size - 0.5, r * patch_size - 0.5), patch_size, patch_size,
                                         fill=False, color="red", lw=2))
        ax_image.set_title(f"{titles[image]}; query {token_name(query)}", fontsize=9)
        ax_image.axis("off")
        which = "rollout, layers 0-" + str(layer % len(attentions)) if view == "rollout" else \
            f"layer {layer % len(attentions)}, " + ("heads averaged" if head is None else f"head {head}")
        overlay_heatmap(picture, patch_map, ax=ax_overlay, alpha=0.55)
        ax_overlay.set_title(f"{which}, T = {temperature:.2g}\n(scaled to its maximum)", fontsize=9)
        shown = ax_weights.imshow(patch_map.numpy(), cmap="viridis", vmin=0)
        ax_weights.figure.colorbar(shown, ax=ax_weights, fraction=0.046)
        prefix_share = float(row[:prefix_tokens].sum()) if prefix_tokens else 0.0
        ax_weights.set_title(f"weights on the {grid[0]}x{grid[1]} patches\n"
                             f"(sum {float(patch_map.sum()):.2f}; prefix tokens {prefix_share:.2f})", fontsize=9)
        ax_weights.set_xticks([])
        ax_weights.set_yticks([])

    # "mean" as a string, not None: a Dropdown whose value is None shows no selection at all.
    head_options = [("mean", "mean")] + [(str(h), h) for h in range(heads)]
    controls = dict(
        image=widgets.IntSlider(value=image, min=0, max=b - 1, description="image"),
        layer=widgets.IntSlider(value=layer % len(attentions), min=0, max=len(attentions) - 1, description="layer"),
        head=widgets.Dropdown(options=head_options, value="mean" if head is None else head, description="head"),
        query=widgets.IntSlider(value=query, min=0, max=tokens - 1, description="query token"),
        view=widgets.ToggleButtons(options=["attention", "rollout"] if rollout else ["attention"],
                                   value="attention", description="view"),
        temperature=widgets.FloatLogSlider(value=1.0, base=10, min=-1, max=1, step=0.05, description="T",
                                           disabled=not temperature),
    )
    box = interactive_figure(draw, ncols=3, figsize=figsize, **controls)
    box.children[0].layout.flex_flow = "row wrap"  # six controls: let them wrap on a narrow screen
    return box
