"""Chapter 14's Segment Anything at toy scale (Kirillov et al. 2023): scenes with nested shapes (a point on a small
shape drawn inside a larger one may mean either), a prompt encoder for one foreground point (random Fourier features
of its position plus a learned foreground embedding), a mask decoder with three candidate masks and a predicted IoU
for each, trained with the minimum loss over the candidates plus the mean squared error of the predicted IoUs.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.core.runtime import as_device, seed_everything
from course_lib.topics.segmentation import train_with_adamw_cosine

NUM_CANDIDATES = 3


# ------------------------------------------------------------------------------------ E.1 scenes with ambiguity


def _shape(kind: int, cx: float, cy: float, r: float, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    if kind == 0:
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
    if kind == 1:
        return (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
    half_width = (yy - (cy - r)) / 2.0                               # upward triangle, apex (cx, cy - r)
    return (yy <= cy + r) & (yy >= cy - r) & (np.abs(xx - cx) <= half_width)


def _colour(rng, avoid=None) -> np.ndarray:
    while True:
        colour = rng.uniform(0.25, 1.0, size=3).astype(np.float32)
        if avoid is None or np.abs(colour - avoid).sum() > 0.6:
            return colour


def nested_scenes(n: int, size: int = 48, max_objects: int = 2, inner_probability: float = 0.75,
                  seed: int = 0) -> dict:
    """``n`` scenes of 1..``max_objects`` large shapes (radius 8-13, each filled with a colour gradient in a random
    direction; they may overlap: the later one occludes) on a striped background; each large shape holds, with
    ``inner_probability``, a small shape of one flat colour, far from the large one's mean colour (radius 3-4), inside
    it. Returns ``images`` (n, 3, size, size) and, per object slot, ``wholes`` (n, M, size,
    size) (the visible large shape, its inner shape included) and ``inners`` (n, M, size, size) (the visible inner
    shape, empty if none), bool; empty slots are all False.

    Taught in chapter 14, E.1."""
    if size < 32:
        raise ValueError(f"size must be at least 32 for shapes of radius 8-13, got {size}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.empty((n, 3, size, size), np.float32)
    wholes = np.zeros((n, max_objects, size, size), bool)
    inners = np.zeros((n, max_objects, size, size), bool)
    for i in range(n):
        angle, period, phase = rng.uniform(0, np.pi), rng.uniform(3, 8), rng.uniform(0, 2 * np.pi)
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + phase)
        dark = rng.uniform(0.0, 0.45, size=(2, 3)).astype(np.float32)
        image = dark[0][:, None, None] + (dark[1] - dark[0])[:, None, None] * wave[None]
        for k in range(int(rng.integers(1, max_objects + 1))):
            r = float(rng.integers(8, 14))
            cx, cy = rng.uniform(r + 1, size - r - 2, size=2)
            outer = _shape(int(rng.integers(3)), cx, cy, r, yy, xx)
            colour, colour_end = _colour(rng), _colour(rng)          # a colour gradient across the shape
            direction = rng.uniform(0, 2 * np.pi)
            ramp = ((xx - cx) * np.cos(direction) + (yy - cy) * np.sin(direction)) / (2 * r) + 0.5  # 0..1
            fill = colour[:, None, None] + (colour_end - colour)[:, None, None] * ramp[None]
            image[:, outer] = fill[:, outer]
            colour = (colour + colour_end) / 2
            inner = np.zeros_like(outer)
            if rng.uniform() < inner_probability:
                small = float(rng.integers(3, 5))
                inner = _shape(int(rng.integers(2)), cx, cy + r / 4, small, yy, xx) & outer
                image[:, inner] = _colour(rng, avoid=colour)[:, None]
            wholes[i, :k] &= ~outer                                     # occlusion by the new shape
            inners[i, :k] &= ~outer
            wholes[i, k], inners[i, k] = outer, inner
        images[i] = np.clip(image + 0.04 * rng.standard_normal(image.shape).astype(np.float32), 0.0, 1.0)
    return {"images": torch.from_numpy(images), "wholes": torch.from_numpy(wholes), "inners": torch.from_numpy(inners)}


def sample_prompts(scenes: dict, seed: int = 0, inner_fraction: float = 0.5) -> dict:
    """One foreground point per scene and what it may mean.

    An object is picked at random; with ``inner_fraction`` (when it has an inner shape) the point falls on the inner
    shape, else on the rest of the object. Returns ``points`` (n, 2) as (x, y) pixel indices (float), ``on_inner``
    (n,) bool, ``alternatives`` (n, 2, H, W): the masks the point may mean ([inner, whole] on an inner shape,
    [whole, whole] elsewhere), and ``targets`` (n, H, W): one of the alternatives drawn at random (the one a single
    annotator would have drawn).

    Taught in chapter 14, E.1."""
    rng = np.random.default_rng(seed)
    wholes, inners = scenes["wholes"].numpy(), scenes["inners"].numpy()
    n, _, size, _ = wholes.shape
    points = np.zeros((n, 2), np.float32)
    on_inner = np.zeros(n, bool)
    alternatives = np.zeros((n, 2, size, size), bool)
    for i in range(n):
        present = [k for k in range(wholes.shape[1]) if wholes[i, k].sum() >= 5]
        k = present[int(rng.integers(len(present)))] if present else 0
        ring = wholes[i, k] & ~inners[i, k]
        use_inner = inners[i, k].sum() >= 3 and (rng.uniform() < inner_fraction or ring.sum() == 0)
        region = inners[i, k] if use_inner else ring
        ys, xs = np.nonzero(region)
        j = int(rng.integers(len(ys)))
        points[i] = (xs[j], ys[j])
        on_inner[i] = use_inner
        alternatives[i] = (inners[i, k], wholes[i, k]) if use_inner else (wholes[i, k], wholes[i, k])
    pick = rng.integers(0, 2, size=n)
    targets = alternatives[np.arange(n), pick]
    return {"points": torch.from_numpy(points), "on_inner": torch.from_numpy(on_inner),
            "alternatives": torch.from_numpy(alternatives), "targets": torch.from_numpy(targets)}


def prompt_batches(batch_size: int, seed: int = 0, size: int = 48):
    """Endless (images, points, targets) of fresh nested scenes, batch k from seeds derived from (seed, k).

    Taught in chapter 14, E.4."""
    step = 0
    while True:
        scenes = nested_scenes(batch_size, size=size, seed=seed * 1_000_003 + step)
        prompts = sample_prompts(scenes, seed=seed * 1_000_003 + step)
        yield scenes["images"], prompts["points"], prompts["targets"]
        step += 1


def evaluation_prompts(n: int = 500, size: int = 48) -> dict:
    """Held-out nested scenes and one prompt each (seeds far from the training ones): the scenes' fields and the
    prompts' fields in one dict.

    Taught in chapter 14, E.4."""
    scenes = nested_scenes(n, size=size, seed=20_000_003)
    return {**scenes, **sample_prompts(scenes, seed=20_000_003)}


# ------------------------------------------------------------------------------------ E.2 the prompt encoder


def fourier_features(coords: torch.Tensor, gaussian: torch.Tensor) -> torch.Tensor:
    """Random Fourier features of positions: coords (..., 2) in [0, 1], gaussian (2, D/2) ->
    [sin(2 pi (2c - 1) B), cos(2 pi (2c - 1) B)] (..., D).

    Taught in chapter 14, E.2."""
    if coords.shape[-1] != 2 or gaussian.ndim != 2 or gaussian.shape[0] != 2:
        raise ValueError(f"expected coords (..., 2) and gaussian (2, D/2), got {tuple(coords.shape)} and "
                         f"{tuple(gaussian.shape)}")
    projected = 2 * math.pi * (2 * coords - 1) @ gaussian             # (..., D/2)
    return torch.cat([projected.sin(), projected.cos()], dim=-1)


class PromptEncoder(nn.Module):
    """One foreground point -> one prompt token: the Fourier features of its position (pixel centre (x + 0.5) /
    size) plus a learned foreground embedding. ``dense_positions`` gives the same features at the centres of an
    h x w grid of image tokens, so prompt and image positions live in one space.

    Taught in chapter 14, E.2."""

    def __init__(self, dim: int = 64, image_size: int = 48, scale: float = 1.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"dim must be even (sin and cos halves), got {dim}")
        self.image_size = image_size
        self.register_buffer("gaussian", scale * torch.randn(2, dim // 2))
        self.foreground = nn.Parameter(0.02 * torch.randn(dim))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """points (B, 2) as (x, y) pixels -> tokens (B, 1, dim)."""
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"expected points (B, 2) as (x, y) pixels, got {tuple(points.shape)}")
        coords = (points.float() + 0.5) / self.image_size
        return (fourier_features(coords, self.gaussian) + self.foreground)[:, None]

    def dense_positions(self, height: int, width: int) -> torch.Tensor:
        """(height * width, dim): the features of the token centres, row by row."""
        ys = (torch.arange(height, device=self.gaussian.device) + 0.5) / height
        xs = (torch.arange(width, device=self.gaussian.device) + 0.5) / width
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2) as (x, y)
        return fourier_features(grid.reshape(-1, 2), self.gaussian)


# ------------------------------------------------------------------------------------ E.3 the mask decoder


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
                         nn.GroupNorm(4, out_channels), nn.GELU())


class TwoWayLayer(nn.Module):
    """One layer of SAM's two-way transformer: tokens attend to themselves, tokens attend to the image, an MLP on
    the tokens, then the image attends to the tokens. Positions (the prompt token's and the image's Fourier
    features) are added to queries and keys at every attention. Pre-norm.

    Taught in chapter 14, E.3."""

    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.token_to_image = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.image_to_token = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(5))

    def forward(self, tokens, token_pos, image, image_pos):
        q = self.norms[0](tokens) + token_pos
        tokens = tokens + self.self_attn(q, q, self.norms[0](tokens), need_weights=False)[0]
        q, k = self.norms[1](tokens) + token_pos, self.norms[2](image) + image_pos
        tokens = tokens + self.token_to_image(q, k, self.norms[2](image), need_weights=False)[0]
        tokens = tokens + self.mlp(self.norms[3](tokens))
        q, k = self.norms[4](image) + image_pos, self.norms[1](tokens) + token_pos
        image = image + self.image_to_token(q, k, self.norms[1](tokens), need_weights=False)[0]
        return tokens, image


class TinySAM(nn.Module):
    """Segment Anything at toy scale: (images (B, 3, S, S), points (B, 2)) -> (mask logits (B, 3, S, S),
    predicted IoUs (B, 3)).

    Image encoder: conv stages at S, S/2 and S/4, the last flattened to (S/4)^2 tokens of width ``dim``. Prompt
    encoder: :class:`PromptEncoder`. Mask decoder: an IoU token, three mask tokens and the prompt token go through
    ``layers`` :class:`TwoWayLayer`; the image tokens are upsampled back to S x S by two transposed convolutions
    (adding the encoder's S/2 and S maps); mask k is the dot product of each pixel's feature with an MLP of mask
    token k; the IoU token's MLP predicts the three IoUs.

    Taught in chapter 14, E.3."""

    def __init__(self, dim: int = 64, image_size: int = 48, layers: int = 2, heads: int = 4,
                 num_masks: int = NUM_CANDIDATES):
        super().__init__()
        self.config = dict(dim=dim, image_size=image_size, layers=layers, heads=heads, num_masks=num_masks)
        self.stage1 = _conv(3, 16)                                                  # (B, 16, S, S)
        self.stage2 = nn.Sequential(_conv(16, 32, stride=2), _conv(32, 32))         # (B, 32, S/2, S/2)
        self.stage3 = nn.Sequential(_conv(32, dim, stride=2), _conv(dim, dim))      # (B, dim, S/4, S/4)
        self.prompt_encoder = PromptEncoder(dim, image_size)
        self.output_tokens = nn.Parameter(0.02 * torch.randn(1 + num_masks, dim))  # IoU token, mask tokens
        self.layers = nn.ModuleList(TwoWayLayer(dim, heads) for _ in range(layers))
        self.final_norm = nn.LayerNorm(dim)
        self.up1 = nn.ConvTranspose2d(dim, 32, 2, stride=2)
        self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.up_norm = nn.GroupNorm(4, 32)
        self.hypernetworks = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 16)) for _ in range(num_masks))
        self.iou_head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, num_masks))

    def forward(self, images: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.config["image_size"]
        if images.ndim != 4 or images.shape[1:] != (3, size, size):
            raise ValueError(f"expected images (B, 3, {size}, {size}), got {tuple(images.shape)}")
        if points.shape != (images.shape[0], 2):
            raise ValueError(f"expected one (x, y) point per image, points ({images.shape[0]}, 2); got "
                             f"{tuple(points.shape)}")
        f1 = self.stage1(images)
        f2 = self.stage2(f1)
        f3 = self.stage3(f2)                                                        # (B, dim, h, w)
        b, dim, h, w = f3.shape
        image = f3.flatten(2).transpose(1, 2)                                       # (B, h w, dim)
        image_pos = self.prompt_encoder.dense_positions(h, w).to(image.dtype)[None]  # (1, h w, dim)
        prompt = self.prompt_encoder(points).to(image.dtype)                        # (B, 1, dim)
        tokens = torch.cat([self.output_tokens[None].expand(b, -1, -1).to(image.dtype), prompt], dim=1)
        token_pos = torch.cat([torch.zeros_like(tokens[:, :-1]), prompt], dim=1)     # the prompt's position
        for layer in self.layers:
            tokens, image = layer(tokens, token_pos, image, image_pos)
        tokens = self.final_norm(tokens)
        grid = image.transpose(1, 2).reshape(b, dim, h, w)
        up = F.gelu(self.up_norm(self.up1(grid) + f2))                              # (B, 32, S/2, S/2)
        up = F.gelu(self.up2(up) + f1)                                              # (B, 16, S, S)
        weights = torch.stack([mlp(tokens[:, 1 + k]) for k, mlp in enumerate(self.hypernetworks)], 1)  # (B, 3, 16)
        masks = torch.einsum("bkc,bchw->bkhw", weights, up)                         # (B, 3, S, S)
        return masks, self.iou_head(tokens[:, 0])


def candidate_losses(mask_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per candidate: binary cross entropy (pixel mean) + soft Dice loss. mask_logits (B, K, H, W), target (B, H, W)
    -> (B, K).

    Taught in chapter 14, E.3."""
    if mask_logits.ndim != 4 or target.shape != (mask_logits.shape[0], *mask_logits.shape[2:]):
        raise ValueError(f"expected mask_logits (B, K, H, W) and target (B, H, W), got {tuple(mask_logits.shape)} "
                         f"and {tuple(target.shape)}")
    logits = mask_logits.float()
    t = target[:, None].float().expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none").mean(dim=(2, 3))
    p = logits.sigmoid()
    dice = 1 - (2 * (p * t).sum(dim=(2, 3)) + 1) / (p.sum(dim=(2, 3)) + t.sum(dim=(2, 3)) + 1)
    return bce + dice


def hard_ious(mask_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of each candidate mask (logit > 0) with the target: (B, K, H, W), (B, H, W) -> (B, K); 1 when both empty.

    Taught in chapter 14, E.3."""
    pred = mask_logits > 0
    t = target[:, None].bool()
    inter = (pred & t).sum(dim=(2, 3)).float()
    union = (pred | t).sum(dim=(2, 3)).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def sam_loss(mask_logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor,
             iou_weight: float = 1.0) -> torch.Tensor:
    """SAM's ambiguity-aware loss: the minimum over the K candidates of the mask loss (only the best candidate
    learns from this target), plus ``iou_weight`` x the mean squared error between the predicted IoU of every
    candidate and its actual IoU with the target.

    Taught in chapter 14, E.3."""
    per_candidate = candidate_losses(mask_logits, target)                   # (B, K)
    actual = hard_ious(mask_logits.detach(), target)                        # (B, K), no gradient
    return per_candidate.min(dim=1).values.mean() + iou_weight * F.mse_loss(iou_pred.float(), actual)


def training_loss(model: nn.Module, batch) -> torch.Tensor:
    """``sam_loss`` of ``model`` on ``batch = (images, points, targets)``.

    Taught in chapter 14, E.4."""
    images, points, targets = batch
    mask_logits, iou_pred = model(images, points)
    return sam_loss(mask_logits, iou_pred, targets)


def train_sam(settings, seed: int = 0, show_progress: bool = True, device=None, **fast):
    """Train ``TinySAM(**settings.model)`` on fresh nested scenes with ``sam_loss``, AdamW and warm-up + cosine;
    returns (model, history). ``settings``: model, steps, batch_size, lr, warmup_steps, weight_decay.

    Taught in chapter 14, E.4."""
    seed_everything(seed)
    dev = as_device(device)
    model = TinySAM(**settings.model).to(dev)
    return train_with_adamw_cosine(model, training_loss, prompt_batches(settings.batch_size, seed=seed), settings,
                                   device=dev, desc="tiny SAM", show_progress=show_progress, clip_grad_norm=1.0, **fast)


# ------------------------------------------------------------------------------------ E.4 scores and baselines


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, points: torch.Tensor, batch_size: int = 250):
    """(mask logits (N, 3, H, W), predicted IoUs (N, 3)) of ``model`` in eval mode, on the model's device.

    Taught in chapter 14, E.4."""
    model.eval()
    dev = next(model.parameters()).device
    masks, ious = [], []
    for i in range(0, len(images), batch_size):
        m, q = model(images[i:i + batch_size].to(dev), points[i:i + batch_size].to(dev))
        masks.append(m.float().cpu())
        ious.append(q.float().cpu())
    return torch.cat(masks), torch.cat(ious)


def best_alternative_iou(masks: torch.Tensor, alternatives: torch.Tensor) -> torch.Tensor:
    """IoU of each mask (N, H, W) bool with the closer of its prompt's two alternatives (N, 2, H, W): (N,).

    Taught in chapter 14, E.4."""
    inter = (masks[:, None] & alternatives).sum(dim=(2, 3)).float()
    union = (masks[:, None] | alternatives).sum(dim=(2, 3)).float()
    return (inter / union.clamp(min=1)).max(dim=1).values


def evaluate_sam(model: nn.Module, data: dict) -> dict:
    """Mean IoU over the prompts of: the candidate with the highest predicted IoU (what SAM returns when asked for
    one mask), each candidate on its own, and the oracle best of three; each IoU against the closer of the prompt's
    alternatives. Also the mean absolute error of the predicted IoUs (against the target drawn for the prompt).

    Taught in chapter 14, E.4."""
    masks, iou_pred = predict(model, data["images"], data["points"])
    binary = masks > 0                                                      # (N, 3, H, W)
    per_candidate = torch.stack([best_alternative_iou(binary[:, k], data["alternatives"])
                                 for k in range(binary.shape[1])], 1)       # (N, 3)
    chosen = per_candidate.gather(1, iou_pred.argmax(1, keepdim=True))[:, 0]
    actual = hard_ious(masks, data["targets"])
    return {"chosen": float(chosen.mean()), "oracle": float(per_candidate.max(1).values.mean()),
            "per_candidate": per_candidate.mean(0).tolist(), "iou_mae": float((iou_pred - actual).abs().mean()),
            "chosen_on_inner": float(chosen[data["on_inner"]].mean()),
            "chosen_elsewhere": float(chosen[~data["on_inner"]].mean())}


def region_under_point(similar: torch.Tensor, point) -> torch.Tensor:
    """The 4-connected component of the boolean map ``similar`` (H, W) that contains ``point`` (x, y); empty if
    the point's pixel is False.

    Taught in chapter 14, E.4."""
    from scipy import ndimage

    x, y = int(point[0]), int(point[1])
    components, _ = ndimage.label(similar.numpy())
    label = components[y, x]
    return torch.zeros_like(similar) if label == 0 else torch.from_numpy(components == label)


def bright_region_baseline(image: torch.Tensor, point, threshold: float = 0.45) -> torch.Tensor:
    """No learning: the connected region of pixels brighter (mean colour) than ``threshold`` under the point.

    Taught in chapter 14, E.4."""
    return region_under_point(image.mean(0) > threshold, point)


def colour_region_baseline(image: torch.Tensor, point, tolerance: float = 0.2) -> torch.Tensor:
    """No learning: the connected region of pixels whose colour is within ``tolerance`` (in every channel) of the
    point's pixel (a flood fill).

    Taught in chapter 14, E.4."""
    x, y = int(point[0]), int(point[1])
    return region_under_point((image - image[:, y, x, None, None]).abs().amax(0) <= tolerance, point)


def baseline_scores(data: dict) -> dict:
    """Mean IoU (against the closer alternative) of the two flood-fill baselines on the prompts of ``data``.

    Taught in chapter 14, E.4."""
    scores = {}
    for name, fn in (("bright region under the point", bright_region_baseline),
                     ("same-colour region under the point", colour_region_baseline)):
        masks = torch.stack([fn(img, p) for img, p in zip(data["images"], data["points"])])
        scores[name] = float(best_alternative_iou(masks, data["alternatives"]).mean())
    return scores


# ------------------------------------------------------------------------------------ the picture


def schematic():
    """TinySAM drawn: image encoder to a grid of image tokens with Fourier positions; the point through the prompt
    encoder (Fourier features + foreground embedding); the two-way transformer with the IoU token and three mask
    tokens; upsampling, three candidate masks and their predicted IoUs; the minimum-over-candidates loss and the IoU
    MSE. Returns the Figure.

    Drawn in chapter 14, E.3."""
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(12.5, 5.0, title="Tiny SAM: one point in, three candidate masks and their predicted IoUs out")
    h = 0.8
    image = box(ax, 1.1, 3.8, "image\n3 × 48 × 48", w=1.5, h=h, role="data", fontsize=8)
    encoder = box(ax, 3.3, 3.8, "image encoder\n3 conv stages\n→ 64 × 12 × 12", w=2.0, h=0.95, fontsize=8)
    point = box(ax, 1.1, 1.9, "point (x, y)", w=1.5, h=h, role="condition", fontsize=8)
    prompt = box(ax, 3.3, 1.9, "prompt encoder: Fourier\nfeatures + foreground emb.", w=2.3, h=h, fontsize=8)
    tokens = box(ax, 3.3, 0.6, "IoU token, 3 mask tokens\n(learned)", w=2.3, h=0.75, role="latent", fontsize=8)
    decoder = box(ax, 6.3, 2.85, "two-way transformer\n2 layers: tokens ↔ image\n(positions added to q, k)",
                  w=2.5, h=1.1, fontsize=8)
    upsample = box(ax, 9.0, 3.8, "2 transposed convs\n+ encoder skips\n→ 16 × 48 × 48", w=2.0, h=0.95, fontsize=8)
    masks = box(ax, 9.0, 2.2, "3 masks = pixel features\n· MLP(mask token k)", w=2.3, h=h, role="operation",
                fontsize=8)
    ious = box(ax, 9.0, 0.85, "MLP(IoU token)\n→ 3 predicted IoUs", w=2.1, h=h, fontsize=8)
    loss = box(ax, 11.5, 1.6, "min over 3 of\nBCE + Dice\n+ MSE(IoU)", w=1.6, h=1.1, role="loss", fontsize=8)
    arrow(ax, image.right, encoder.left)
    arrow(ax, point.right, prompt.left)
    arrow(ax, encoder.right, (decoder.left[0] + 0.3, decoder.top[1]))
    arrow(ax, prompt.right, decoder.left)
    arrow(ax, tokens.right, (decoder.left[0] + 0.3, decoder.bottom[1]))
    arrow(ax, (decoder.right[0] - 0.3, decoder.top[1]), upsample.left)
    arrow(ax, upsample.bottom, masks.top)
    arrow(ax, decoder.right, masks.left)
    arrow(ax, (decoder.right[0] - 0.3, decoder.bottom[1]), ious.left)
    arrow(ax, masks.right, (loss.left[0], loss.y + 0.3))
    arrow(ax, ious.right, (loss.left[0], loss.y - 0.3))
    note(ax, 6.3, 4.35, "image tokens + Fourier positions", fontsize=8)
    legend(ax, ["data", "condition", "network", "latent", "operation", "loss"], loc="lower left")
    return fig
