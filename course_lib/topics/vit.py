"""Chapter 04's Vision Transformer, small enough to train on a CPU; chapters 05, 06, 07 and 13 reuse it.

    images (B, C, H, W) --patchify--> (B, N, C*P*P) --linear--> (B, N, D) --+ position--> prepend [CLS]
    --> depth x [x + MHA(LN(x)); x + MLP(LN(x))] --> LN --> tokens (B, 1 + N, D) --> head([CLS])

N = (H/P)(W/P) patches of P x P pixels, D the width, heads of width D_h = D / heads. Every
attention map can be returned (``return_attention=True``) for the attention widgets and rollout.

For looking and counting: ``parameter_count`` (the formula), ``multiply_adds`` (from the shapes) and
``measured_multiply_adds`` (torch's FlopCounterMode), ``temper_attention``, ``select_attention``,
``position_similarity`` and ``mean_attention_distance``; ``course_lib.topics.vit.attention_explorer`` draws them.
``schematic()`` draws the ViT from pixels to [CLS], ``attention_schematic()`` multi-head attention.

Swin's attention in (shifted) windows (Liu et al. 2021; chapter 04, G.5): ``window_partition``, ``window_reverse``,
``shift_region_labels``, ``shifted_window_mask``, ``WindowAttention`` (W-MSA and SW-MSA, without the relative
position bias), ``attention_multiply_adds`` (global against windowed), ``allowed_pair_fraction`` and
``swin_schematic()``.
"""
from __future__ import annotations

import math

import ipywidgets as widgets
import torch
import torch.nn.functional as F
from matplotlib.patches import FancyBboxPatch, Rectangle
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


def self_logit_moments(d_k: int, sigma: float) -> torch.Tensor:
    """Mean and variance of a token's scaled logit with itself, s = q^T q / sqrt(d_k), for q ~ N(0, sigma^2 I) in
    d_k dimensions: tensor([sqrt(d_k) sigma^2, 2 sigma^4]). Each q_j^2 has mean sigma^2 and variance
    E[q_j^4] - sigma^4 = 3 sigma^4 - sigma^4 = 2 sigma^4; the d_k terms are independent, so their sum has mean
    d_k sigma^2 and variance 2 d_k sigma^4, and dividing by sqrt(d_k) divides the variance by d_k.

    Taught in chapter 04, H (exercise 5).
    """
    return torch.tensor([math.sqrt(d_k) * sigma**2, 2 * sigma**4])


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
    Controls: the image, the layer, the head ("mean" averages them), the query: a prefix token ("[CLS]")
    or a patch, picked by its ``row`` and ``column`` on the patch grid (token ``prefix + row * W/P + column``),
    "attention" or "rollout" (through the layers up to the chosen one, heads averaged), and a softmax
    temperature T (rows re-softmaxed as softmax(log A / T)). ``query`` sets the starting query as a token
    index (0 is [CLS] when there is one). Panels: the image with the query patch framed; the query's attention
    over the patches on the image (scaled to its own maximum); the same weights unscaled, with a colour bar, and
    the share that went to the prefix tokens. Returns the widget box of :func:`interactive_figure`.
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
    if not 0 <= query < tokens:
        raise ValueError(f"query must be a token index in [0, {tokens - 1}], got {query}")
    heads = attentions[0].shape[1]
    titles = list(titles) if titles is not None else [f"image {i}" for i in range(b)]
    if len(titles) != b:
        raise ValueError(f"{b} images but {len(titles)} titles")
    prefix_names = ["[CLS]"] if prefix_tokens == 1 else [f"prefix {i}" for i in range(prefix_tokens)]

    def token_name(q):
        if q < prefix_tokens:
            return prefix_names[q]
        row, col = divmod(q - prefix_tokens, grid[1])
        return f"patch (row {row}, col {col})"

    def draw(axes, image, layer, head, token, row, column, view, temperature):
        head = None if head == "mean" else head
        query = prefix_names.index(token) if token in prefix_names else prefix_tokens + row * grid[1] + column
        picture = images[image].detach().cpu().float()
        weights_row = select_attention(attentions, image, layer, head, query, rollout=view == "rollout",
                                       temperature=temperature).cpu()
        patch_map = weights_row[prefix_tokens:].reshape(grid)
        ax_image, ax_overlay, ax_weights = axes
        ax_image.imshow(picture.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
        if query >= prefix_tokens:
            ax_image.add_patch(Rectangle((column * patch_size - 0.5, row * patch_size - 0.5), patch_size, patch_size,
                                         fill=False, color="red", lw=2))
        ax_image.set_title(f"{titles[image]}\nquery {token_name(query)} = token {query}", fontsize=9)
        ax_image.axis("off")
        which = "rollout, layers 0-" + str(layer % len(attentions)) if view == "rollout" else \
            f"layer {layer % len(attentions)}, " + ("heads averaged" if head is None else f"head {head}")
        overlay_heatmap(picture, patch_map, ax=ax_overlay, alpha=0.55)
        ax_overlay.set_title(f"{which}, T = {temperature:.2g}\n(scaled to its maximum)", fontsize=9)
        shown = ax_weights.imshow(patch_map.numpy(), cmap="viridis", vmin=0)
        ax_weights.figure.colorbar(shown, ax=ax_weights, fraction=0.046)
        prefix_share = float(weights_row[:prefix_tokens].sum()) if prefix_tokens else 0.0
        ax_weights.set_title(f"weights on the {grid[0]}x{grid[1]} patches\n"
                             f"(sum {float(patch_map.sum()):.2f}; prefix tokens {prefix_share:.2f})", fontsize=9)
        ax_weights.set_xticks([])
        ax_weights.set_yticks([])

    start_row, start_column = divmod(query - prefix_tokens, grid[1]) if query >= prefix_tokens else (grid[0] // 2, grid[1] // 2)
    token_options = prefix_names + ["patch"]
    # "mean" as a string, not None: a Dropdown whose value is None shows no selection at all.
    head_options = [("mean", "mean")] + [(str(h), h) for h in range(heads)]
    controls = dict(
        image=widgets.IntSlider(value=image, min=0, max=b - 1, description="image"),
        layer=widgets.IntSlider(value=layer % len(attentions), min=0, max=len(attentions) - 1, description="layer"),
        head=widgets.Dropdown(options=head_options, value="mean" if head is None else head, description="head"),
        token=widgets.ToggleButtons(options=token_options, description="query",
                                    value=prefix_names[query] if query < prefix_tokens else "patch",
                                    disabled=not prefix_tokens),
        row=widgets.IntSlider(value=start_row, min=0, max=grid[0] - 1, description="query row"),
        column=widgets.IntSlider(value=start_column, min=0, max=grid[1] - 1, description="query column"),
        view=widgets.ToggleButtons(options=["attention", "rollout"] if rollout else ["attention"],
                                   value="attention", description="view"),
        temperature=widgets.FloatLogSlider(value=1.0, base=10, min=-1, max=1, step=0.05, description="T",
                                           disabled=not temperature),
    )

    def enable_patch_sliders(change=None):
        """Row and column pick a patch; they are greyed out while the query is a prefix token."""
        for name in ("row", "column"):
            controls[name].disabled = controls["token"].value != "patch"

    enable_patch_sliders()
    controls["token"].observe(enable_patch_sliders, names="value")
    box = interactive_figure(draw, ncols=3, figsize=figsize, **controls)
    box.children[0].layout.flex_flow = "row wrap"  # eight controls: let them wrap on a narrow screen
    return box


# ------------------------------------------------------------------------------------------------ schematics

def _patch_grid(ax, x: float, y: float, size: float, cells: int, *, label: str | None = None) -> None:
    """A small image cut into ``cells`` x ``cells`` patches, centred at (x, y): the picture of patchify."""
    step = size / cells
    for r in range(cells):
        for c in range(cells):
            shade = 0.35 + 0.5 * ((r + 2 * c) % 3) / 2  # a few grey levels, so the squares read as patches
            ax.add_patch(Rectangle((x - size / 2 + c * step, y + size / 2 - (r + 1) * step), step, step,
                                facecolor=str(shade), edgecolor="white", linewidth=1.2))
    if label:
        ax.text(x, y - size / 2 - 0.12, label, ha="center", va="top", fontsize=8)


def _elbow(ax, points, end, label: str | None = None) -> None:
    """A path along ``points`` (line segments) ending in an arrow to ``end``: a residual connection."""
    from course_lib.core.diagram import arrow

    xs, ys = zip(*points)
    ax.plot(xs, ys, color="#333333", linewidth=1.3)
    arrow(ax, points[-1], end)
    if label:
        middle = ((points[1][0] + points[2][0]) / 2, points[1][1])
        ax.text(middle[0], middle[1] + (0.06 if middle[1] > end[1] else -0.06), label, ha="center",
                va="bottom" if middle[1] > end[1] else "top", fontsize=7, color="#333333")


def schematic():
    """The Vision Transformer from pixels to [CLS]: patches, linear patch embedding, [CLS] prepended, position
    embeddings added, L pre-norm encoder blocks, and the head on the [CLS] token. Taught in chapter 04, D.1.

    Returns the matplotlib Figure (drawn with ``course_lib.core.diagram``).
    """
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(14, 6.4, title="ViT: an image as a sequence of patch tokens (chapter 04, D.1)")
    # top row: pixels -> tokens
    y = 4.55
    _patch_grid(ax, 0.95, y, 1.3, 4, label="image $x$, $C \\times H \\times W$")
    split = box(ax, 3.05, y, "patchify\n$N = HW / P^2$ patches\n$x_p \\in \\mathbb{R}^{N \\times P^2 C}$",
                w=2.1, h=1.0, role="operation")
    arrow(ax, (1.65, y), split.left)
    embed = box(ax, 5.6, y, "linear patch embedding\n$x_p^n E$, $E \\in \\mathbb{R}^{P^2 C \\times D}$",
                w=2.3, h=1.0, role="network")
    arrow(ax, split.right, embed.left)
    prepend = box(ax, 8.35, y, "prepend [CLS] $x_{class}$\nadd positions $E_{pos}$\n($N + 1$ rows)",
                  w=2.3, h=1.0, role="network")
    arrow(ax, embed.right, prepend.left)
    # the token sequence z_0: [CLS] then N patch tokens
    ax.text(11.9, y + 0.75, "$z_0$: $N + 1$ tokens of width $D$", ha="center", va="bottom", fontsize=8)
    for i in range(8):
        role = "network" if i == 0 else "latent"  # [CLS] is a learned vector
        box(ax, 10.35 + i * 0.45, y, "CLS" if i == 0 else ("..." if i == 6 else str(i if i < 6 else "N")),
            w=0.38, h=0.7, role=role, fontsize=6 if i == 0 else 7)
    arrow(ax, prepend.right, (10.12, y))

    # bottom row: L encoder blocks, then the head on [CLS]
    yb = 1.75
    ax.add_patch(FancyBboxPatch((0.45, yb - 1.0), 7.9, 2.1, boxstyle="round,pad=0.02,rounding_size=0.15",
                                facecolor="none", edgecolor="#2a6099", linewidth=1.2, linestyle="--"))  # the block
    ax.text(0.6, yb + 0.95, "encoder block, repeated $L$ times (pre-norm)", ha="left", va="center", fontsize=8,
            color="#2a6099")
    arrow(ax, (11.9, y - 0.4), (11.9, 3.2))
    arrow(ax, (11.9, 3.2), (0.2, 3.2), color="#333333")
    arrow(ax, (0.2, 3.2), (0.2, yb), color="#333333")
    norm1 = box(ax, 1.25, yb, "LayerNorm", w=1.2, h=0.6, role="operation")
    arrow(ax, (0.2, yb), norm1.left)
    attention = box(ax, 2.85, yb, "multi-head\nattention", w=1.5, h=0.75, role="network")
    arrow(ax, norm1.right, attention.left)
    plus1 = box(ax, 4.0, yb, "+", w=0.4, h=0.4, role="operation", fontsize=11)
    arrow(ax, attention.right, plus1.left)
    _elbow(ax, [(0.45, yb), (0.45, yb + 0.7), (plus1.x, yb + 0.7)], plus1.top, "residual")
    norm2 = box(ax, 5.0, yb, "LayerNorm", w=1.2, h=0.6, role="operation")
    arrow(ax, plus1.right, norm2.left)
    mlp = box(ax, 6.5, yb, "MLP\n$D \\to M \\to D$, GELU", w=1.5, h=0.75, role="network")
    arrow(ax, norm2.right, mlp.left)
    plus2 = box(ax, 7.75, yb, "+", w=0.4, h=0.4, role="operation", fontsize=11)
    arrow(ax, mlp.right, plus2.left)
    _elbow(ax, [(4.3, yb), (4.3, yb - 0.7), (plus2.x, yb - 0.7)], plus2.bottom, "residual")
    cls_out = box(ax, 9.35, yb, "[CLS] output\n$z_L^0$", w=1.4, h=0.75, role="latent")
    arrow(ax, plus2.right, cls_out.left)
    ax.text((plus2.right[0] + cls_out.left[0]) / 2 + 0.05, yb + 0.12, "token 0", ha="center", va="bottom", fontsize=7)
    head = box(ax, 11.2, yb, "LayerNorm +\nlinear head", w=1.5, h=0.75, role="network")
    arrow(ax, cls_out.right, head.left)
    logits = box(ax, 12.9, yb, "logits\n$K$ classes", w=1.3, h=0.75, role="data")
    arrow(ax, head.right, logits.left)
    note(ax, 4.4, 0.45, "every token attends to every token; LayerNorm and the MLP act on each token alone")
    note(ax, 11.2, 0.85, "tiny ViT: $P = 4$, $N = 49$, $D = 64$, $L = 4$, 4 heads")
    legend(ax, ["data", "operation", "network", "latent"], loc="lower right")
    return fig


def attention_schematic():
    """Multi-head scaled dot-product attention: one linear map gives q, k and v, each head computes
    softmax(q k^T / sqrt(D_h)) v on its D_h = D / h columns, the heads are concatenated and mixed by U_msa.
    Taught in chapter 04, C (the attention of one head: chapter 04, B).

    Returns the matplotlib Figure (drawn with ``course_lib.core.diagram``).
    """
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(13, 5.2, title="multi-head scaled dot-product attention (chapter 04, B and C)")
    y_q, y_k, y_v = 3.7, 2.6, 1.5
    tokens = box(ax, 0.95, y_k, "tokens $z$\n$T \\times D$", w=1.4, h=0.9, role="data")
    qkv = box(ax, 2.95, y_k, "linear $U_{qkv}$\n$D \\to 3D$,\nsplit into\n$h$ heads", w=1.5, h=1.6, role="network")
    arrow(ax, tokens.right, qkv.left)
    q = box(ax, 5.0, y_q, "$q$: $T \\times D_h$", w=1.5, h=0.6, role="latent")
    k = box(ax, 5.0, y_k, "$k$: $T \\times D_h$", w=1.5, h=0.6, role="latent")
    v = box(ax, 5.0, y_v, "$v$: $T \\times D_h$", w=1.5, h=0.6, role="latent")
    for target in (q, k, v):
        arrow(ax, qkv.right, target.left)
    scores = box(ax, 7.1, 3.15, "$q k^T / \\sqrt{D_h}$\n$T \\times T$ logits", w=1.7, h=0.8, role="operation")
    arrow(ax, q.right, scores.left)
    arrow(ax, k.right, scores.left)
    softmax = box(ax, 9.0, 3.15, "softmax\nover each row\n= weights $A$", w=1.5, h=0.9, role="operation")
    arrow(ax, scores.right, softmax.left)
    mix = box(ax, 9.0, 1.5, "$A v$\nweighted average\nof value rows", w=1.7, h=0.9, role="operation")
    arrow(ax, softmax.bottom, mix.top)
    arrow(ax, v.right, mix.left)
    concat = box(ax, 11.0, 1.5, "concatenate\nthe $h$ heads\n$T \\times D$", w=1.5, h=0.9, role="operation")
    arrow(ax, mix.right, concat.left)
    out = box(ax, 11.0, 3.15, "linear $U_{msa}$\n$D \\to D$\n= MSA$(z)$", w=1.5, h=0.9, role="network")
    arrow(ax, concat.top, out.bottom)
    note(ax, 7.9, 4.45, "per head, $h$ heads side by side, $D_h = D / h$")
    note(ax, 4.0, 0.55, "parameters $4D^2 + 4D$ for any number of heads; the $1 / \\sqrt{D_h}$ keeps the logits' "
         "variance near 1 (B.1)")
    legend(ax, ["data", "network", "latent", "operation"], loc="lower right")
    return fig


# ---- Swin: attention inside (shifted) windows (Liu et al. 2021) ----

def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/M * W/M, M*M, C): the M x M windows, row-major, each flattened row-major.

    Taught in chapter 04, G.5.
    """
    b, h, w, c = x.shape
    if h % window or w % window:
        raise ValueError(f"a {h} x {w} map does not split into {window} x {window} windows")
    x = x.reshape(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)  # (B, h/M, w/M, M, M, C)
    return x.reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """(B * H/M * W/M, M*M, C) -> (B, H, W, C): the inverse of :func:`window_partition`. Taught in chapter 04, G.5."""
    c = windows.shape[-1]
    x = windows.reshape(-1, height // window, width // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, height, width, c)


def shift_region_labels(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """(H, W) labels 0..8 of the regions of the cyclically shifted map (after ``torch.roll`` by ``-shift``): tokens
    with different labels were not neighbours before the shift. All zeros when ``shift`` is 0. Chapter 04, G.5."""
    labels = torch.zeros(height, width, dtype=torch.long)
    if shift == 0:
        return labels
    spans = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, rows in enumerate(spans):
        for j, cols in enumerate(spans):
            labels[rows, cols] = 3 * i + j
    return labels


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """(H/M * W/M, M*M, M*M) bool, True where a query may attend to a key inside its window of the shifted map:
    same region of :func:`shift_region_labels`. Taught in chapter 04, G.5."""
    labels = shift_region_labels(height, width, window, shift)[None, :, :, None]  # (1, H, W, 1)
    windows = window_partition(labels, window)[..., 0]  # (nW, M*M)
    return windows[:, :, None] == windows[:, None, :]  # (nW, M*M, M*M)


class WindowAttention(nn.Module):
    """Swin's W-MSA (``shift=0``) and SW-MSA (``shift=M//2``): multi-head attention inside M x M windows of a
    (B, H, W, C) map, the shifted version by a cyclic shift, a mask and the reverse shift. Without Swin's relative
    position bias. Taught in chapter 04, G.5."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.window = window
        self.attention = MultiHeadAttention(dim, heads)

    def forward(self, x: torch.Tensor, shift: int = 0) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        b, h, w, c = x.shape
        m = self.window
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))  # cyclic shift up and left
        windows = window_partition(x, m)  # (B * nW, M*M, C)
        mask = None
        if shift:
            mask = shifted_window_mask(h, w, m, shift).to(x.device).repeat(b, 1, 1)[:, None]  # (B * nW, 1, M², M²)
        out, _ = self.attention(windows, mask)  # (B * nW, M*M, C)
        out = window_reverse(out, m, h, w)  # (B, H, W, C)
        if shift:
            out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))  # the reverse shift
        return out


def attention_multiply_adds(height: int, width: int, dim: int, window: int | None = None) -> int:
    """Multiply-adds of one attention layer on an H x W x C map (Liu et al. 2021, eq. 1 and 2): global MSA
    4hwC^2 + 2(hw)^2 C, or, with ``window`` M, W-MSA 4hwC^2 + 2 M^2 hw C. Taught in chapter 04, G.5."""
    n = height * width
    keys = n if window is None else window * window
    return 4 * n * dim * dim + 2 * n * keys * dim


def allowed_pair_fraction(side: int, window: int) -> float:
    """The fraction of (query, key) pairs inside the windows that the shifted-window mask allows, on a side x side
    map with shift M // 2: exercise 6 of chapter 04, H (the mask is taught in chapter 04, G.5)."""
    m, r = window, window // 2
    k = side // m  # windows per side
    full = m**4  # a window inside the map: one region of M^2 tokens
    edge = (m * (m - r)) ** 2 + (m * r) ** 2  # last column or last row: two regions
    corner = ((m - r) ** 2 + r**2) ** 2  # bottom-right: four regions of (M-r)^2, (M-r)r, r(M-r), r^2 tokens
    allowed = (k - 1) ** 2 * full + 2 * (k - 1) * edge + corner
    return allowed / (k * k * full)


def swin_schematic():
    """Two consecutive Swin attention layers: W-MSA in regular M x M windows, then SW-MSA in windows shifted by
    M/2 (cyclic shift, mask, reverse shift). Taught in chapter 04, G.5."""
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(14, 5.2, title="Swin: attention in windows, then in shifted windows (chapter 04, G.5)")
    y1, y2 = 3.7, 1.7
    x_in = box(ax, 1.2, y1, "map\n$h \\times w \\times C$", role="data", w=1.6, h=0.9)
    part = box(ax, 3.6, y1, "partition\ninto $M \\times M$", role="operation", w=1.8, h=0.9)
    wmsa = box(ax, 6.3, y1, "W-MSA\nattention per window", role="network", w=2.4, h=0.9)
    rev = box(ax, 9.0, y1, "reverse\npartition", role="operation", w=1.6, h=0.9)
    x_mid = box(ax, 12.2, y1, "map\n(block $l$)", role="data", w=1.6, h=0.9)
    for a, b in [(x_in, part), (part, wmsa), (wmsa, rev), (rev, x_mid)]:
        arrow(ax, a.right, b.left)
    note(ax, 6.3, y1 + 0.75, "$hw/M^2$ windows of $M^2$ tokens; no token sees another window")
    roll = box(ax, 1.2, y2, "roll by\n$-\\lfloor M/2 \\rfloor$", role="operation", w=1.6, h=0.9)
    part2 = box(ax, 3.6, y2, "partition\n+ region mask", role="operation", w=1.8, h=0.9)
    swmsa = box(ax, 6.3, y2, "SW-MSA\nmasked, per window", role="network", w=2.4, h=0.9)
    rev2 = box(ax, 9.0, y2, "reverse\npartition", role="operation", w=1.6, h=0.9)
    unroll = box(ax, 12.2, y2, "roll by\n$+\\lfloor M/2 \\rfloor$", role="operation", w=1.6, h=0.9)
    ax.plot([x_mid.x, x_mid.x, roll.x], [x_mid.bottom[1], y1 - 1.0, y1 - 1.0], color="#333333", linewidth=1.3)
    note(ax, 7.0, y1 - 0.85, "next block")
    arrow(ax, (roll.x, y1 - 1.0), roll.top)
    for a, b in [(roll, part2), (part2, swmsa), (swmsa, rev2), (rev2, unroll)]:
        arrow(ax, a.right, b.left)
    note(ax, 6.3, y2 - 0.75, "windows straddle the old borders: information crosses them; "
                             "the mask stops wrapped-around tokens from meeting")
    legend(ax, ["data", "network", "operation"], loc="lower right")
    return fig
