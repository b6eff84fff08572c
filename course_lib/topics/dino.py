"""Chapter 05's DINO: self-distillation with no labels (Caron et al., 2021), small enough for a CPU.

    student g_s = head_s o ViT_s sees every crop; teacher g_t (an EMA of the student, no gradient)
    sees the 2 global crops.  P_s = softmax(g_s(x') / tau_s),  P_t = softmax((g_t(x) - c) / tau_t),
    loss = mean over pairs (x global, x' any other crop) of H(P_t(x), P_s(x')),
    c <- m c + (1 - m) mean_batch g_t(x)   (the centre is SUBTRACTED),  tau_t < tau_s (sharpening).

Also the tools to read what it learned: the last block's [CLS] attention, the 60%-mass mask, IoU
against the object masks of ``course_lib.data.make_shapes``, the centre-prior baseline, and a
TokenCut-style Normalized Cut on the last block's keys (``course_lib.topics.spectral``).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.core.runtime import device, seed_everything
from course_lib.core.train import EMA, fit, warmup_cosine
from course_lib.data import endless_shapes, make_shapes
from course_lib.topics import spectral
from course_lib.topics.vit import ViT



# ----------------------------------------------------------------------------------- the objective

def _check_logits(name: str, logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{name} must be a (B, K) tensor of head outputs, got {shape}")


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """h(p) = -sum_i p_i log p_i in nats along ``dim`` (0 log 0 = 0). Chapter 05, A.1."""
    return -torch.xlogy(p, p).sum(dim)


def cross_entropy(p_target: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """H(p, q) = -sum_i p_i log q_i per row, from the target probabilities and the log-probabilities: (B, K) -> (B,).

    Taught in chapter 05, A.2.
    """
    return -(p_target * log_q).sum(-1)


def teacher_probabilities(teacher_logits: torch.Tensor, center: torch.Tensor, tau_t: float) -> torch.Tensor:
    """P_t = softmax((g_t - c) / tau_t): centre (subtract c), then sharpen; no gradient. (B, K) -> (B, K).

    Taught in chapter 05, A.4.
    """
    _check_logits("teacher_logits", teacher_logits)
    if center.shape[-1] != teacher_logits.shape[-1]:
        raise ValueError(f"center has {center.shape[-1]} entries but the head has K = {teacher_logits.shape[-1]} outputs")
    return F.softmax((teacher_logits.detach() - center) / tau_t, dim=-1)


def dino_loss(student_logits: list[torch.Tensor], teacher_logits: list[torch.Tensor], center: torch.Tensor,
              tau_s: float = 0.1, tau_t: float = 0.04) -> torch.Tensor:
    """The multi-crop DINO loss: the mean of H(P_t(x_i), P_s(x'_v)) over every pair with v != i. Chapter 05, A.5.

    ``teacher_logits``: one (B, K) tensor per global crop (the teacher sees only those);
    ``student_logits``: one (B, K) tensor per crop, the global crops FIRST, in the same order, so
    that student crop i and teacher crop i are the same view (and that pair is skipped).
    The teacher outputs are detached (stop-gradient) and centred with ``center`` (K,).
    """
    if not teacher_logits or len(student_logits) < 2:
        raise ValueError("need at least one teacher crop and two student crops")
    if len(teacher_logits) > len(student_logits):
        raise ValueError(f"{len(teacher_logits)} teacher crops but only {len(student_logits)} student crops; "
                         "the student must see every crop the teacher sees, global crops first")
    for name, group in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        for logits in group:
            _check_logits(name, logits)
    targets = [teacher_probabilities(t, center, tau_t) for t in teacher_logits]
    log_student = [F.log_softmax(s / tau_s, dim=-1) for s in student_logits]
    total, pairs = 0.0, 0
    for i, p_t in enumerate(targets):
        for v, log_p_s in enumerate(log_student):
            if v == i:
                continue  # the same view: nothing to predict
            total = total + cross_entropy(p_t, log_p_s).mean()
            pairs += 1
    return total / pairs


@torch.no_grad()
def update_center(center: torch.Tensor, teacher_logits: list[torch.Tensor], momentum: float = 0.9) -> torch.Tensor:
    """c <- m c + (1 - m) * mean of the teacher's outputs over the batch (all global crops): (K,) -> (K,).

    Taught in chapter 05, A.4.
    """
    batch_mean = torch.cat([t.detach() for t in teacher_logits]).mean(0)
    return momentum * center + (1 - momentum) * batch_mean


def teacher_momentum(step: int, total_steps: int, base: float = 0.996) -> float:
    """The EMA rate lambda_k = 1 - (1 - base)(cos(pi k / K) + 1) / 2: ``base`` at step 0, 1 at the end.

    Taught in chapter 05, A.6.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    progress = min(max(step / total_steps, 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1) / 2


@torch.no_grad()
def collapse_diagnostics(teacher_logits: torch.Tensor, student_logits: torch.Tensor, center: torch.Tensor,
                         tau_s: float = 0.1, tau_t: float = 0.04) -> dict:
    """The numbers that tell the two collapses apart, in nats (K = number of outputs):

    - ``teacher_entropy``: mean over images of h(P_t); -> ln K for the uniform collapse, -> 0 for one-hot;
    - ``batch_mean_entropy``: h of the batch-mean P_t; -> 0 when every image gets the same one-hot,
      stays high when images use different outputs;
    - ``kl``: mean KL(P_t || P_s) (H = h + KL), -> 0 in both collapses.

    Taught in chapter 05, B.
    """
    p_t = teacher_probabilities(teacher_logits, center, tau_t)
    log_p_s = F.log_softmax(student_logits / tau_s, dim=-1)
    h_t = entropy(p_t)
    return {"teacher_entropy": h_t.mean().item(), "batch_mean_entropy": entropy(p_t.mean(0)).item(),
            "kl": (cross_entropy(p_t, log_p_s) - h_t).mean().item(), "ln_K": math.log(p_t.shape[-1])}


# ----------------------------------------------------------------------------------- the networks

class DINOHead(nn.Module):
    """The projection head: MLP -> bottleneck -> l2-normalise -> weight-normalised linear to K outputs. Chapter 05, C.2.

    ``layers`` linear layers with GELU (the paper: 3 layers, hidden 2048, bottleneck 256, K = 65536),
    then ``prototypes`` (K, bottleneck) used with unit norm, so each output is the cosine between
    the bottleneck vector and one prototype: g(x) in [-1, 1]^K (weight norm with its gain fixed to 1).
    """

    def __init__(self, in_dim: int, out_dim: int = 256, hidden: int = 256, bottleneck: int = 64, layers: int = 3):
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        dims = [in_dim] + [hidden] * (layers - 1) + [bottleneck]
        modules = []
        for i in range(layers):
            modules.append(nn.Linear(dims[i], dims[i + 1]))
            if i < layers - 1:
                modules.append(nn.GELU())
        self.mlp = nn.Sequential(*modules)
        self.prototypes = nn.Parameter(torch.randn(out_dim, bottleneck) / math.sqrt(bottleneck))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, K)."""
        z = F.normalize(self.mlp(features), dim=-1)                      # (B, bottleneck), unit length
        return F.linear(z, F.normalize(self.prototypes, dim=-1))         # (B, K) cosines


class DINO(nn.Module):
    """A ViT backbone (no classifier head) plus a :class:`DINOHead` on its [CLS] output. Chapter 05, C.2."""

    def __init__(self, vit: dict, head: dict):
        super().__init__()
        self.config = {"vit": dict(vit), "head": dict(head)}
        self.backbone = ViT(**{**vit, "num_classes": 0})
        self.head = DINOHead(self.backbone.dim, **head)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, K); any H, W that are multiples of the patch size (multi-crop)."""
        return self.head(self.backbone.encode(images)[:, 0])


# ----------------------------------------------------------------------------------- multi-crop

def random_resized_crop_boxes(batch: int, image_size: int, scale: tuple[float, float],
                              ratio: tuple[float, float] = (3 / 4, 4 / 3),
                              generator: torch.Generator | None = None) -> torch.Tensor:
    """Random boxes (B, 4) = (x0, y0, width, height) in pixels: area = s * image area with s ~ U(scale),
    aspect ratio log-uniform in ``ratio``, clipped to the image, placed uniformly. Chapter 05, A.7."""
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale}")
    area = image_size**2 * (scale[0] + (scale[1] - scale[0]) * torch.rand(batch, generator=generator))
    log_ratio = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(batch, generator=generator)
    aspect = log_ratio.exp()
    width = (area * aspect).sqrt().clamp(max=image_size)
    height = (area / aspect).sqrt().clamp(max=image_size)
    x0 = (image_size - width) * torch.rand(batch, generator=generator)
    y0 = (image_size - height) * torch.rand(batch, generator=generator)
    return torch.stack([x0, y0, width, height], 1)


def crop_and_resize(images: torch.Tensor, boxes: torch.Tensor, out_size: int,
                    flip: torch.Tensor | None = None) -> torch.Tensor:
    """Cut box ``boxes[b]`` (x0, y0, w, h in pixels) out of ``images[b]`` and resize it to
    ``out_size`` x ``out_size`` (bilinear, through ``F.affine_grid``); ``flip[b]`` mirrors it.
    (B, C, H, W), (B, 4) -> (B, C, out_size, out_size). Chapter 05, A.7."""
    if images.ndim != 4 or boxes.shape != (len(images), 4):
        raise ValueError(f"expected images (B, C, H, W) and boxes (B, 4), got {tuple(images.shape)} and {tuple(boxes.shape)}")
    b, c, h, w = images.shape
    x0, y0, bw, bh = boxes.unbind(1)
    theta = torch.zeros(b, 2, 3, dtype=images.dtype, device=images.device)
    sign = 1.0 if flip is None else 1.0 - 2.0 * flip.to(images.dtype)
    theta[:, 0, 0] = sign * bw / w                  # half-width of the box in [-1, 1] coordinates
    theta[:, 0, 2] = 2 * (x0 + bw / 2) / w - 1      # its centre
    theta[:, 1, 1] = bh / h
    theta[:, 1, 2] = 2 * (y0 + bh / 2) / h - 1
    grid = F.affine_grid(theta, (b, c, out_size, out_size), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def multi_crop(images: torch.Tensor, *, n_global: int = 2, n_local: int = 2, global_size: int = 32,
               local_size: int = 16, global_scale=(0.4, 1.0), local_scale=(0.05, 0.4), color_jitter: float = 0.3,
               generator: torch.Generator | None = None, return_boxes: bool = False):
    """DINO's views of a batch: ``n_global`` large crops then ``n_local`` small ones, each with a random
    horizontal flip and every colour channel scaled by a factor in [1 - color_jitter, 1 + color_jitter].

    (B, C, H, W) -> list of n_global tensors (B, C, global_size, global_size), then n_local
    (B, C, local_size, local_size) [, list of the boxes (B, 4) in pixels of the input].

    Taught in chapter 05, A.7.
    """
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"expected square images (B, C, H, W), got {tuple(images.shape)}")
    batch, channels, size = images.shape[0], images.shape[1], images.shape[-1]
    crops, boxes = [], []
    for k in range(n_global + n_local):
        is_global = k < n_global
        box = random_resized_crop_boxes(batch, size, global_scale if is_global else local_scale, generator=generator)
        flip = torch.rand(batch, generator=generator) < 0.5
        gain = 1 + color_jitter * (2 * torch.rand(batch, channels, 1, 1, generator=generator) - 1)
        crop = crop_and_resize(images, box.to(images.device), global_size if is_global else local_size,
                               flip.to(images.device))
        crops.append((crop * gain.to(images.device)).clamp(0, 1))
        boxes.append(box)
    return (crops, boxes) if return_boxes else crops


# ----------------------------------------------------------------------------------- one training step

class DINOTrainer:
    """Student, EMA teacher (``course_lib.core.train.EMA`` with a scheduled rate), centre and the step. Chapter 05, C.3.

    ``loss(images)`` makes the crops, runs student and teacher, returns the loss and updates the
    centre; after ``optimizer.step()`` call ``update_teacher()``. ``log`` collects the collapse
    diagnostics of every step.
    """

    def __init__(self, student: nn.Module, *, total_steps: int, tau_s: float = 0.1, tau_t: float = 0.04,
                 center_momentum: float = 0.9, teacher_momentum_base: float = 0.996, n_global: int = 2,
                 n_local: int = 2, crop: dict | None = None, use_centering: bool = True,
                 generator: torch.Generator | None = None):
        self.student, self.total_steps = student, total_steps
        self.ema = EMA(student, decay=teacher_momentum_base, warmup=False)  # its own schedule
        self.teacher = self.ema.model
        self.tau_s, self.tau_t, self.center_momentum = tau_s, tau_t, center_momentum
        self.teacher_momentum_base, self.use_centering = teacher_momentum_base, use_centering
        self.n_global, self.n_local, self.crop = n_global, n_local, dict(crop or {})
        self.generator, self.step = generator, 0
        k = student.head.prototypes.shape[0] if hasattr(student, "head") else None
        device = next(student.parameters()).device
        self.center = torch.zeros(k, device=device) if k else None
        self.log: list[dict] = []

    def _forward_crops(self, model: nn.Module, crops: list[torch.Tensor]) -> list[torch.Tensor]:
        """Run crops of equal size together: one forward per resolution, as DINO does."""
        outputs, start = [], 0
        while start < len(crops):
            end = start
            while end < len(crops) and crops[end].shape == crops[start].shape:
                end += 1
            out = model(torch.cat(crops[start:end]))
            outputs.extend(out.chunk(end - start))
            start = end
        return outputs

    def loss(self, images: torch.Tensor) -> torch.Tensor:
        crops = multi_crop(images, n_global=self.n_global, n_local=self.n_local, generator=self.generator, **self.crop)
        student_out = self._forward_crops(self.student, crops)
        with torch.no_grad():
            teacher_out = self._forward_crops(self.teacher, crops[:self.n_global])
        if self.center is None:
            self.center = torch.zeros(teacher_out[0].shape[-1], device=images.device)
        center = self.center if self.use_centering else torch.zeros_like(self.center)
        loss = dino_loss(student_out, teacher_out, center, self.tau_s, self.tau_t)
        other_global = student_out[1:self.n_global] + student_out[:1]  # the student's view of the OTHER global crop
        self.log.append(collapse_diagnostics(torch.cat(teacher_out), torch.cat(other_global), center, self.tau_s, self.tau_t))
        self.center = update_center(self.center, teacher_out, self.center_momentum)
        return loss

    def update_teacher(self, _model=None) -> None:
        """theta_t <- lambda theta_t + (1 - lambda) theta_s with lambda on the cosine schedule."""
        self.step += 1
        self.ema.decay = teacher_momentum(self.step, self.total_steps, self.teacher_momentum_base)
        self.ema.update(self.student)


# ----------------------------------------------------------------------------------- reading the attention

@torch.no_grad()
def cls_attention(vit: ViT, images: torch.Tensor) -> torch.Tensor:
    """The last block's attention of the [CLS] query over the patches, per head: (B, heads, N). Chapter 05, C.4."""
    _, attentions = vit.encode(images, return_attention=True)
    return attentions[-1][:, :, 0, 1:]


@torch.no_grad()
def last_block_keys(vit: ViT, images: torch.Tensor) -> torch.Tensor:
    """The keys of the last block for the patch tokens, heads concatenated: (B, N, D) (TokenCut's features).

    Taught in chapter 05, D.
    """
    tokens = torch.cat([vit.cls_tokens(len(images)), vit.patch_tokens(images)], dim=1)  # (B, 1 + N, D)
    for block in vit.blocks[:-1]:
        tokens, _ = block(tokens)
    last = vit.blocks[-1]
    _, keys, _ = last.attn.split_heads(last.norm1(tokens))                             # (B, heads, 1 + N, D_h)
    return keys.transpose(1, 2).flatten(2)[:, 1:]                                      # (B, N, D)


def mass_mask(attention: torch.Tensor, mass: float = 0.6) -> torch.Tensor:
    """The smallest set of patches that holds ``mass`` of the attention (DINO's figures): (..., N) -> bool (..., N).

    Patches are taken in decreasing order of attention until their sum reaches ``mass`` of the total.

    Taught in chapter 05, C.4.
    """
    if not 0 < mass <= 1:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    weights = attention / attention.sum(-1, keepdim=True)
    values, order = weights.sort(dim=-1, descending=True)
    before = values.cumsum(-1) - values                       # mass of the patches ranked above each one
    keep_sorted = before < mass - 1e-6                # (a tolerance for the rounding of the cumulative sum)
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def patch_masks(pixel_masks: torch.Tensor, patch_size: int, min_fraction: float = 0.5) -> torch.Tensor:
    """Pixel masks (B, H, W) -> patch masks (B, N): a patch is 'object' when at least ``min_fraction`` of its pixels are.

    Taught in chapter 05, C.1.
    """
    if pixel_masks.ndim != 3:
        raise ValueError(f"expected masks of shape (B, H, W), got {tuple(pixel_masks.shape)}")
    fraction = F.avg_pool2d(pixel_masks[:, None].float(), patch_size)                 # (B, 1, H/P, W/P)
    return (fraction >= min_fraction).flatten(1)


def mask_iou(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Intersection over union of boolean masks along the last dimension: (..., N), (..., N) -> (...).

    Taught in chapter 05, C.5.
    """
    predicted, target = predicted.bool(), target.bool()
    union = (predicted | target).sum(-1)
    return (predicted & target).sum(-1) / union.clamp(min=1)


def centre_disc(grid: int, radius: float) -> torch.Tensor:
    """A disc of patches around the image centre, (grid * grid,) bool: the 'look at the middle' baseline.

    Taught in chapter 05, C.5.
    """
    centres = torch.arange(grid) + 0.5 - grid / 2
    yy, xx = torch.meshgrid(centres, centres, indexing="ij")
    return (xx**2 + yy**2 <= radius**2).flatten()


def centre_prior_iou(object_masks: torch.Tensor, grid: int) -> tuple[float, float]:
    """The best centred disc: the radius (in patches) with the highest mean IoU on these masks, and that IoU.

    Tuned on the very masks it is scored on, so it is a generous baseline. ``object_masks``: (B, N) bool.

    Taught in chapter 05, C.5.
    """
    best = (0.0, 0.0)
    for radius in np.arange(0.5, grid / 2 * math.sqrt(2) + 0.01, 0.25):
        iou = mask_iou(centre_disc(grid, float(radius)).expand_as(object_masks), object_masks).mean().item()
        if iou > best[1]:
            best = (float(radius), iou)
    return best


@torch.no_grad()
def attention_report(vit: ViT, images: torch.Tensor, pixel_masks: torch.Tensor, mass: float = 0.6) -> dict:
    """How well each head's [CLS] attention finds the object, on images (B, C, H, W) with masks (B, H, W):

    - ``iou`` (heads,): mean IoU of the ``mass``-attention mask with the object's patch mask;
    - ``mass_on_object`` (heads,): mean fraction of the attention on object patches;
    - ``object_area``: mean fraction of the patches that are object (what uniform attention puts there);
    - ``best_head``, ``best_iou``; ``mean_head_iou``: IoU of the mask of the head-averaged attention.

    Taught in chapter 05, C.5.
    """
    attention = cls_attention(vit, images)                                              # (B, heads, N)
    objects = patch_masks(pixel_masks, vit.patch_size)                                  # (B, N)
    iou = mask_iou(mass_mask(attention, mass), objects[:, None]).mean(0)                # (heads,)
    on_object = (attention * objects[:, None]).sum(-1) / attention.sum(-1)              # (B, heads)
    mean_iou = mask_iou(mass_mask(attention.mean(1), mass), objects).mean().item()
    best = int(iou.argmax())
    return {"iou": iou, "mass_on_object": on_object.mean(0), "object_area": objects.float().mean().item(),
            "best_head": best, "best_iou": iou[best].item(), "mean_head_iou": mean_iou}


# ----------------------------------------------------------------------------------- Normalized Cut on features

def similarity_quantile_tau(features: torch.Tensor, quantile: float) -> float:
    """tau = the ``quantile`` of the cosine similarities of the N (N - 1) / 2 pairs of ``features`` (N, C): the
    calibration of the graph threshold from the similarity histogram (each pair counted once). Chapter 05, D.1."""
    similarity = spectral.cosine_similarities(features)                                  # (N, N), symmetric
    upper = torch.triu_indices(len(similarity), len(similarity), offset=1)
    return torch.quantile(similarity[upper[0], upper[1]], quantile).item()


def tokencut_mask(features: torch.Tensor, tau: float, eps: float = 1e-5) -> np.ndarray:
    """TokenCut-style foreground from patch features (N, C): the graph w_ij = 1 if cos > tau else eps,
    the second-smallest generalized eigenvector y_1 of (D - W) y = lambda D y, split at its mean; the
    foreground is the side holding the patch where |y_1 - mean| is largest. Returns bool (N,). Chapter 05, D."""
    w = spectral.feature_affinity(features, tau, eps)
    _, y = spectral.ncut_eigenvectors(w, k=2)
    y1 = y[:, 1]
    split = y1 > y1.mean()
    seed = int(spectral.first_largest(np.abs(y1 - y1.mean())))  # ties broken by position, the same on every machine
    return split if split[seed] else ~split


@torch.no_grad()
def tokencut_report(vit: ViT, images: torch.Tensor, pixel_masks: torch.Tensor, quantile: float) -> dict:
    """Mean IoU of :func:`tokencut_mask` on the last block's keys, tau calibrated per image as the
    ``quantile`` of that image's key similarities. Chapter 05, D.1."""
    keys = last_block_keys(vit, images)                                                 # (B, N, D)
    objects = patch_masks(pixel_masks, vit.patch_size)
    masks = torch.stack([torch.from_numpy(tokencut_mask(k, similarity_quantile_tau(k, quantile))) for k in keys])
    return {"iou": mask_iou(masks, objects).mean().item(), "masks": masks}


# ----------------------------------------------------------------------------------- data

def shapes_settings() -> dict:
    """The scenes DINO trains and is scored on: ``make_shapes`` keywords (one object on stripes, 32 x 32).

    Taught in chapter 05, C.1.
    """
    return dict(size=32, max_objects=1, min_radius=4, max_radius=8, background="stripes")


def evaluation_scenes(n: int = 200, seed: int = 10_000) -> dict:
    """The held-out scenes of the bench, a dict like ``make_shapes``'s (and chapter 06's ``detr.evaluation_scenes``):
    ``images`` (n, 3, 32, 32), the one object's ``masks`` (n, 32, 32) and ``labels`` (n,). Chapter 05, C.1."""
    scenes = make_shapes(n, seed=seed, **shapes_settings())
    return {"images": scenes["images"], "masks": scenes["masks"][:, 0], "labels": scenes["labels"][:, 0]}


def shapes_batches(batch_size: int, seed: int = 0, **shapes_kwargs):
    """Endless batches ``(images,)`` of fresh scenes (a new seed per batch): the data never repeats. Chapter 05, C.3."""

    return endless_shapes(batch_size, seed=seed, **{**shapes_settings(), **shapes_kwargs})


def train_dino(cfg, *, seed: int = 0, show_progress: bool = True, desc: str = "DINO on shapes", **fit_options):
    """Train a :class:`DINO` student with an EMA teacher on shapes scenes; return ``(trainer, history)``.

    ``cfg`` (e.g. ``course_lib.zoo.settings("dino_shapes")``) names: vit, head, steps, batch_size,
    lr, weight_decay, warmup_steps, tau_s, tau_t, center_momentum, teacher_momentum_base, n_local,
    crop, clip_grad_norm. ``trainer.teacher`` is the network DINO keeps; ``trainer.log`` the diagnostics.

    Taught in chapter 05, C.3.
    """

    generator = seed_everything(seed)
    dev = device()
    student = DINO(cfg.vit, cfg.head).to(dev)
    trainer = DINOTrainer(student, total_steps=cfg.steps, tau_s=cfg.tau_s, tau_t=cfg.tau_t,
                          center_momentum=cfg.center_momentum, teacher_momentum_base=cfg.teacher_momentum_base,
                          n_local=cfg.n_local, crop=cfg.crop, generator=generator)
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history = fit(student, lambda model, batch: trainer.loss(batch[0]), shapes_batches(cfg.batch_size, seed=seed),
                  steps=cfg.steps, optimizer=optimizer, device=dev,
                  scheduler=warmup_cosine(optimizer, cfg.warmup_steps, cfg.steps), clip_grad_norm=cfg.clip_grad_norm,
                  after_step=trainer.update_teacher, desc=desc, show_progress=show_progress, **fit_options)
    return trainer, history


@torch.no_grad()
def evaluate_dino(model: DINO, n: int = 200, seed: int = 10_000, tokencut_quantile: float = 0.5,
                  mass: float = 0.6, random_init_seed: int = 0) -> dict:
    """The numbers of the bench and the manifest, on ``n`` held-out scenes (:func:`evaluation_scenes`):

    per-head IoU of the ``mass`` [CLS]-attention mask with the object, attention mass on the object and the
    object's area, the best head; the baselines: the best centred disc, and the best head of a randomly
    initialised DINO of the same shape; TokenCut on the last block's keys (tau = the ``tokencut_quantile``
    of each image's key similarities), for the trained and the random network. Reseeds the global RNG
    (``seed_everything(random_init_seed)``) to build the random network.

    Taught in chapter 05, C.5.
    """

    scenes = evaluation_scenes(n, seed)
    device = next(model.parameters()).device
    images, masks = scenes["images"].to(device), scenes["masks"].to(device)
    report = attention_report(model.backbone, images, masks, mass)
    objects = patch_masks(masks, model.backbone.patch_size)
    radius, prior = centre_prior_iou(objects.cpu(), model.backbone.grid)
    seed_everything(random_init_seed)
    random_model = DINO(model.config["vit"], model.config["head"]).to(device).eval()
    random_report = attention_report(random_model.backbone, images, masks, mass)
    return {
        "best_head": report["best_head"], "best_head_iou": round(report["best_iou"], 4),
        "head_iou": [round(v, 4) for v in report["iou"].tolist()],
        "head_mass_on_object": [round(v, 4) for v in report["mass_on_object"].tolist()],
        "object_area": round(report["object_area"], 4), "mean_attention_iou": round(report["mean_head_iou"], 4),
        "centre_prior_iou": round(prior, 4), "centre_prior_radius_patches": radius,
        "random_init_best_head_iou": round(random_report["best_iou"], 4),
        "tokencut_quantile": tokencut_quantile,
        "tokencut_iou": round(tokencut_report(model.backbone, images, masks, tokencut_quantile)["iou"], 4),
        "random_init_tokencut_iou": round(tokencut_report(random_model.backbone, images, masks,
                                                          tokencut_quantile)["iou"], 4),
        "eval_scenes": n, "eval_seed": seed,
    }


# ---------------------------------------------------------------------------------- the picture


def schematic():
    """DINO, drawn: multi-crop views of one image; the student sees every view, the teacher (an EMA of the student,
    no gradient) only the global ones; the teacher's outputs are centred and sharpened, the student's softened at
    tau_s; the loss is the cross entropy H(P_t, P_s) over pairs of different views. Returns the matplotlib Figure.

    Drawn in chapter 05, A.1 (the objective is section A; the network is built in C.2).
    """
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(12.4, 5.0, title="DINO: self-distillation with no labels")
    image = box(ax, 0.95, 2.45, "image", w=1.3, h=0.7, role="data")
    crop = box(ax, 2.75, 2.45, "multi-crop\n(random views)", w=1.6, h=0.8, role="operation")
    views_s = box(ax, 4.85, 3.7, "all views $x'$\n2 global + local", w=1.9, h=0.8, role="data")
    views_t = box(ax, 4.85, 1.2, "global views $x$\n$x_1, x_2$", w=1.9, h=0.8, role="data")
    student = box(ax, 7.05, 3.7, "student $g_{\\theta_s}$\nViT + head", w=1.8, h=0.8, role="network")
    teacher = box(ax, 7.05, 1.2, "teacher $g_{\\theta_t}$\nViT + head", w=1.8, h=0.8, role="network")
    soft = box(ax, 9.35, 3.7, "$P_s$ = softmax($g_s / \\tau_s$)\n$\\tau_s = 0.1$", w=2.2, h=0.8, role="operation")
    sharp = box(ax, 9.35, 1.2, "centre and sharpen\n$P_t$ = softmax(($g_t - c) / \\tau_t$)\n$\\tau_t = 0.04$",
                w=2.4, h=1.0, role="operation")
    loss = box(ax, 11.45, 2.45, "$H(P_t, P_s)$\npairs $x' \\neq x$", w=1.6, h=0.8, role="loss")
    arrow(ax, image.right, crop.left)
    arrow(ax, crop.right, views_s.left)
    arrow(ax, crop.right, views_t.left)
    arrow(ax, views_s.right, student.left)
    arrow(ax, views_t.right, teacher.left)
    arrow(ax, student.right, soft.left)
    arrow(ax, teacher.right, sharp.left)
    arrow(ax, soft.right, loss.top)
    arrow(ax, sharp.right, loss.bottom, dashed=True)
    note(ax, 11.45, 0.85, "stop-gradient:\nno gradient into\nthe teacher", fontsize=7.5)
    arrow(ax, student.bottom, teacher.top, dashed=True, color="#38761d",
          text="EMA: $\\theta_t \\leftarrow \\lambda \\theta_t + (1 - \\lambda) \\theta_s$", text_offset=(1.45, -0.1))
    note(ax, 9.35, 0.3, "centre $c \\leftarrow m c + (1 - m)$ mean of $g_t$ over the batch (subtracted)", fontsize=7.5)
    note(ax, 5.9, 4.55, "gradient descent trains the student only", fontsize=7.5)
    legend(ax, ["data", "network", "operation", "loss"], loc="lower left")
    return fig
