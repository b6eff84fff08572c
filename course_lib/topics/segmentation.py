"""Chapter 14's segmentation: semantic, instance and panoptic targets and scores (pixel cross entropy, Dice, mIoU,
PQ = SQ x RQ), FCN's pieces (a fully connected layer as a convolution, the transposed convolution, bilinear
upsampling), a U-Net segmenter (Ronneberger et al. 2015) trained on shapes scenes with its trivial baselines, and
Mask R-CNN's RoIAlign and per-class mask loss (He et al. 2017), written with torch only.

Classes of a semantic map: 0 is background, 1 + k is ``SHAPE_CLASSES[k]`` (circle, square, triangle).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.core.runtime import as_device, seed_everything
from course_lib.core.train import fit, warmup_cosine
from course_lib.data.shapes import SHAPE_CLASSES, endless_shapes, make_shapes

SEGMENT_CLASSES = ("background",) + SHAPE_CLASSES
NUM_CLASSES = len(SEGMENT_CLASSES)  # 4


# ------------------------------------------------------------------------------------ A. targets and scores


def shapes_settings(size: int = 48) -> dict:
    """The scenes of this chapter: ``size`` x ``size``, 1-3 shapes of radius 4-11 on striped backgrounds.

    Taught in chapter 14, A.1."""
    return dict(size=size, max_objects=3, min_radius=4, max_radius=11, background="stripes")


def semantic_map(masks: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-pixel class (N, H, W) int64 from ``make_shapes``' masks (N, M, H, W) and labels (N, M): 0 background,
    1 + label inside object k.

    Taught in chapter 14, A.1."""
    if masks.ndim != 4 or labels.shape != masks.shape[:2]:
        raise ValueError(f"expected masks (N, M, H, W) and labels (N, M), got {tuple(masks.shape)} and "
                         f"{tuple(labels.shape)}; pass make_shapes(...)['masks'] and ['labels']")
    target = torch.zeros(masks.shape[0], *masks.shape[2:], dtype=torch.int64)
    for k in range(masks.shape[1]):
        inside = masks[:, k]
        target = torch.where(inside, (labels[:, k] + 1)[:, None, None].expand_as(target), target)
    return target


def instance_map(masks: torch.Tensor) -> torch.Tensor:
    """Per-pixel instance id (N, H, W) int64: 0 background, k + 1 inside object k.

    Taught in chapter 14, A.1."""
    if masks.ndim != 4:
        raise ValueError(f"expected masks (N, M, H, W), got {tuple(masks.shape)}")
    ids = torch.zeros(masks.shape[0], *masks.shape[2:], dtype=torch.int64)
    for k in range(masks.shape[1]):
        ids[masks[:, k]] = k + 1
    return ids


def _check_logits_target(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.ndim != 4 or target.ndim != 3 or logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"expected logits (N, C, H, W) and target (N, H, W), got {tuple(logits.shape)} and "
                         f"{tuple(target.shape)}")
    if target.dtype != torch.int64:
        raise TypeError(f"target must hold class indices (int64), got {target.dtype}; use target.long()")


def pixel_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-1/(N H W) sum_u log softmax(logits_u)[y_u]: logits (N, C, H, W), target (N, H, W) int64 -> scalar.

    Taught in chapter 14, A.2."""
    _check_logits_target(logits, target)
    log_p = logits.float().log_softmax(dim=1)                       # (N, C, H, W)
    return -log_p.gather(1, target[:, None]).mean()


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Multi-class soft Dice loss, 1 - mean over classes of (2 sum p g + eps) / (sum p + sum g + eps), with p the
    softmax probabilities and g the one-hot target, summed over the batch and the pixels.

    Taught in chapter 14, A.2."""
    _check_logits_target(logits, target)
    p = logits.float().softmax(dim=1)                                # (N, C, H, W)
    g = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    dims = (0, 2, 3)
    dice = (2 * (p * g).sum(dims) + eps) / (p.sum(dims) + g.sum(dims) + eps)  # (C,)
    return 1 - dice.mean()


def dice_coefficient(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """2 |P n G| / (|P| + |G|) of two boolean masks (1.0 when both are empty).

    Taught in chapter 14, A.2."""
    if pred.shape != truth.shape:
        raise ValueError(f"masks differ in shape: {tuple(pred.shape)} and {tuple(truth.shape)}")
    pred, truth = pred.bool(), truth.bool()
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2 * int((pred & truth).sum()) / total


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """|A n B| / |A u B| of two boolean masks (1.0 when both are empty).

    Taught in chapter 14, A.3."""
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.bool(), b.bool()
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """(C, C) int64 counts, row = true class, column = predicted class, over every pixel of ``pred`` and ``target``.

    Taught in chapter 14, A.3."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ; pass class maps "
                         f"(e.g. logits.argmax(1)), not logits")
    index = target.reshape(-1).long() * num_classes + pred.reshape(-1).long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """IoU_c = TP / (TP + FP + FN) per class from a confusion matrix; NaN for a class absent from both maps.

    Taught in chapter 14, A.3."""
    tp = confusion.diag().double()
    union = confusion.sum(0).double() + confusion.sum(1).double() - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


def mean_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int = NUM_CLASSES) -> float:
    """mIoU: the mean of the per-class IoU over the classes present in ``pred`` or ``target`` (the whole set's
    pixels pooled, as the benchmarks do).

    Taught in chapter 14, A.3."""
    ious = iou_per_class(confusion_matrix(pred, target, num_classes))
    return float(ious[~ious.isnan()].mean())


def panoptic_quality(predictions: list, truths: list, num_classes: int, iou_threshold: float = 0.5) -> dict:
    """PQ, SQ and RQ (Kirillov et al. 2019) over a list of images.

    Each image is a list of segments ``(mask (H, W) bool, class)``, segments of one image not overlapping. A predicted
    and a true segment of the same class match when their IoU exceeds 0.5 (then the match is unique). Per class
    c: SQ = mean IoU of the matches, RQ = TP / (TP + FP/2 + FN/2), PQ = SQ x RQ. Returns ``{"pq", "sq", "rq"}``
    averaged over the classes that occur, and ``"per_class"``: {c: (pq, sq, rq, tp, fp, fn)}.

    Taught in chapter 14, A.4."""
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predicted images and {len(truths)} true ones")
    tp = [0] * num_classes
    fp = [0] * num_classes
    fn = [0] * num_classes
    iou_sum = [0.0] * num_classes
    for pred_segments, true_segments in zip(predictions, truths):
        matched_pred = set()
        for mask_t, c_t in true_segments:
            hit = None
            for j, (mask_p, c_p) in enumerate(pred_segments):
                if j in matched_pred or int(c_p) != int(c_t):
                    continue
                overlap = mask_iou(mask_p, mask_t)
                if overlap > iou_threshold:
                    hit = (j, overlap)
                    break
            if hit is None:
                fn[int(c_t)] += 1
            else:
                matched_pred.add(hit[0])
                tp[int(c_t)] += 1
                iou_sum[int(c_t)] += hit[1]
        for j, (_, c_p) in enumerate(pred_segments):
            if j not in matched_pred:
                fp[int(c_p)] += 1
    per_class = {}
    for c in range(num_classes):
        if tp[c] + fp[c] + fn[c] == 0:
            continue
        sq = iou_sum[c] / tp[c] if tp[c] else 0.0
        rq = tp[c] / (tp[c] + fp[c] / 2 + fn[c] / 2)
        per_class[c] = (sq * rq, sq, rq, tp[c], fp[c], fn[c])
    values = list(per_class.values())
    return {"pq": float(np.mean([v[0] for v in values])), "sq": float(np.mean([v[1] for v in values])),
            "rq": float(np.mean([v[2] for v in values])), "per_class": per_class}


def scene_segments(masks: torch.Tensor, labels: torch.Tensor) -> list:
    """The true segments ``[(mask, class + 1), ...]`` of one scene (masks (M, H, W), labels (M,)), padding skipped.

    Taught in chapter 14, A.4."""
    return [(masks[k], int(labels[k]) + 1) for k in range(len(labels)) if labels[k] >= 0]


def segments_from_semantic(semantic: torch.Tensor, min_pixels: int = 4) -> list:
    """Instances from a semantic map (H, W): each 4-connected component of one non-background class is a segment
    ``(mask, class)``; components under ``min_pixels`` are dropped. Right when objects do not touch.

    Taught in chapter 14, F."""
    from scipy import ndimage

    segments = []
    for c in semantic.unique().tolist():
        if c == 0:
            continue
        components, count = ndimage.label((semantic == c).numpy())
        for k in range(1, count + 1):
            mask = torch.from_numpy(components == k)
            if mask.sum() >= min_pixels:
                segments.append((mask, c))
    return segments


# ------------------------------------------------------------------------------------ B. FCN


def linear_as_conv(linear: nn.Linear, in_channels: int, kernel_size: tuple[int, int] = (1, 1)) -> nn.Conv2d:
    """The convolution that computes ``linear`` at every position: a Linear(C h w -> D) reading a flattened
    (C, h, w) map is a Conv2d(C, D, kernel (h, w)); with h = w = 1 it is a 1x1 convolution.

    Taught in chapter 14, B.1."""
    h, w = kernel_size
    if linear.in_features != in_channels * h * w:
        raise ValueError(f"the linear layer reads {linear.in_features} features, not {in_channels} x {h} x {w}; "
                         f"give the (channels, kernel) of the map it was flattened from")
    conv = nn.Conv2d(in_channels, linear.out_features, (h, w), bias=linear.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.reshape(linear.out_features, in_channels, h, w))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv.to(linear.weight.device)


def convolutionalize_mnist_classifier(model: nn.Module) -> nn.Sequential:
    """Chapter 03's/the FID's ``MnistClassifier`` (conv-pool-conv-pool, Flatten, Linear(64 x 7 x 7 -> 128), ReLU,
    Linear(128 -> 10)) as a fully convolutional net: the first Linear becomes a 7x7 convolution, the head a 1x1
    one. On a 28 x 28 image it gives the same 10 logits (as a 1 x 1 map); on a larger canvas, a map of logits, one
    per 28 x 28 window, every 4 pixels.

    Taught in chapter 14, B.1."""
    body = list(model.body)
    flatten_at = next(i for i, layer in enumerate(body) if isinstance(layer, nn.Flatten))
    first_linear = body[flatten_at + 1]
    layers = body[:flatten_at] + [linear_as_conv(first_linear, 64, (7, 7))] + body[flatten_at + 2:]
    layers.append(linear_as_conv(model.head, first_linear.out_features))
    return nn.Sequential(*layers).eval()


def bilinear_kernel(channels: int, factor: int) -> torch.Tensor:
    """ConvTranspose2d weights (channels, channels, 2f - f % 2, 2f - f % 2) that upsample each channel by ``factor``
    with bilinear interpolation: FCN's initialisation of its learnable upsampling (Long et al. 2015).

    Taught in chapter 14, B.3."""
    size = 2 * factor - factor % 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    t = torch.arange(size, dtype=torch.float32)
    tent = 1 - (t - centre).abs() / factor                          # (size,)
    weight = torch.zeros(channels, channels, size, size)
    for c in range(channels):
        weight[c, c] = tent[:, None] * tent[None, :]
    return weight


def upsample_scores(scores: torch.Tensor, factor: int) -> torch.Tensor:
    """Upsample score maps (N, C, h, w) by an even ``factor`` with a transposed convolution whose weights are
    :func:`bilinear_kernel` (stride ``factor``, padding ``factor / 2``): (N, C, h f, w f).

    Taught in chapter 14, B.3."""
    if factor < 2 or factor % 2:
        raise ValueError(f"factor must be even and >= 2, got {factor}")
    weight = bilinear_kernel(scores.shape[1], factor).to(scores)
    return F.conv_transpose2d(scores, weight, stride=factor, padding=factor // 2)


def fcn_fuse(scores_coarse_to_fine: list) -> torch.Tensor:
    """FCN's skip fusion: start from the coarsest score map, upsample it 2x and add the next finer one, and so on;
    each map is twice the size of the one before. Returns the fused map at the finest size.

    Taught in chapter 14, B.3."""
    fused = scores_coarse_to_fine[0]
    for finer in scores_coarse_to_fine[1:]:
        if finer.shape[-2:] != tuple(2 * n for n in fused.shape[-2:]):
            raise ValueError(f"each score map must be twice the size of the previous: {tuple(fused.shape)} then "
                             f"{tuple(finer.shape)}")
        fused = upsample_scores(fused, 2) + finer
    return fused


# ------------------------------------------------------------------------------------ C. U-Net


def unet_valid_sizes(input_size: int = 572, depth: int = 4) -> dict:
    """The feature-map sizes of the original U-Net (unpadded 3x3 convs, 2x2 max-pools, 2x2 up-convolutions):
    ``{"down": [...], "bottom": n, "up": [...], "output": n}``; 572 -> 388 for depth 4. Raises if a pooling meets
    an odd size (the paper picks input sizes so that it never does).

    Taught in chapter 14, C.1."""
    n, down = input_size, []
    for level in range(depth):
        n -= 4                                                         # two valid 3x3 convs
        down.append(n)
        if n % 2:
            raise ValueError(f"size {n} at level {level} is odd: a 2x2 max-pool would drop a row; pick another input")
        n //= 2
    n -= 4
    bottom, up = n, []
    for _ in range(depth):
        n = 2 * n - 4                                                  # 2x2 up-convolution doubles, two convs take 4
        up.append(n)
    return {"down": down, "bottom": bottom, "up": up, "output": n}


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 convolutions (padding 1: the size is kept), each followed by BatchNorm and ReLU.

    Taught in chapter 14, C.2."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU())


class UpBlock(nn.Module):
    """U-Net's expanding step: a 2x2 up-convolution (transposed, stride 2) halving the channels, concatenation with
    the contracting path's map of the same size (the skip), then two 3x3 convolutions.

    Taught in chapter 14, C.2."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = double_conv(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class SegUNet(nn.Module):
    """A small U-Net segmenter: (N, 3, H, W) -> class logits (N, num_classes, H, W), H and W multiples of 4.

    Contracting path: double_conv to ``widths[0]`` at full size, then max-pool 2x2 and double_conv twice
    (``widths[1]`` at H/2, ``widths[2]`` at H/4, the bottom); expanding path: two ``UpBlock``s back to full size;
    a 1x1 convolution gives the logits. Padded convolutions (the original uses valid ones: C.1).

    Taught in chapter 14, C.2."""

    def __init__(self, in_channels: int = 3, num_classes: int = NUM_CLASSES, widths: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        c1, c2, c3 = widths
        self.config = dict(in_channels=in_channels, num_classes=num_classes, widths=tuple(widths))
        self.down1 = double_conv(in_channels, c1)
        self.down2 = double_conv(c1, c2)
        self.bottom = double_conv(c2, c3)
        self.up2 = UpBlock(c3, c2)
        self.up1 = UpBlock(c2, c1)
        self.classify = nn.Conv2d(c1, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.config["in_channels"] or x.shape[2] % 4 or x.shape[3] % 4:
            raise ValueError(f"expected images (N, {self.config['in_channels']}, H, W) with H, W multiples of 4, "
                             f"got {tuple(x.shape)}")
        d1 = self.down1(x)                                   # (N, c1, H, W)
        d2 = self.down2(F.max_pool2d(d1, 2))                 # (N, c2, H/2, W/2)
        b = self.bottom(F.max_pool2d(d2, 2))                 # (N, c3, H/4, W/4)
        u2 = self.up2(b, d2)                                 # (N, c2, H/2, W/2)
        u1 = self.up1(u2, d1)                                # (N, c1, H, W)
        return self.classify(u1)                             # (N, num_classes, H, W)


def segmentation_batches(batch_size: int, seed: int = 0, size: int = 48):
    """Endless (images (B, 3, size, size), semantic targets (B, size, size)) of fresh striped scenes.

    Taught in chapter 14, C.3."""
    for images, masks, labels in endless_shapes(batch_size, seed=seed, fields=("images", "masks", "labels"),
                                                **shapes_settings(size)):
        yield images, semantic_map(masks, labels)


def evaluation_scenes(n: int = 500, size: int = 48) -> dict:
    """Held-out scenes (seed 10_000_019, far from the training seeds), with ``semantic`` targets added.

    Taught in chapter 14, C.3."""
    scenes = make_shapes(n, seed=10_000_019, **shapes_settings(size))
    scenes["semantic"] = semantic_map(scenes["masks"], scenes["labels"])
    return scenes


def segmentation_loss(model: nn.Module, batch, dice_weight: float = 1.0) -> torch.Tensor:
    """Pixel cross entropy + ``dice_weight`` x soft Dice loss of ``model`` on ``batch = (images, targets)``.

    Taught in chapter 14, C.3."""
    images, target = batch
    logits = model(images)
    return pixel_cross_entropy(logits, target) + dice_weight * soft_dice_loss(logits, target)


@torch.no_grad()
def predict_semantic(model: nn.Module, images: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """argmax class map (N, H, W) of ``model`` on ``images``, in eval mode, on the model's device.

    Taught in chapter 14, C.3."""
    model.eval()
    dev = next(model.parameters()).device
    return torch.cat([model(images[i:i + batch_size].to(dev)).argmax(1).cpu() for i in range(0, len(images), batch_size)])


def most_frequent_object_class(target: torch.Tensor) -> int:
    """The object class (>= 1) covering the most pixels of the semantic maps ``target``.

    Taught in chapter 14, C.3."""
    counts = torch.bincount(target.reshape(-1), minlength=NUM_CLASSES)
    return int(counts[1:].argmax()) + 1


def threshold_baseline(images: torch.Tensor, object_class: int, threshold: float = 0.45) -> torch.Tensor:
    """A segmenter without learning: a pixel whose mean colour exceeds ``threshold`` gets ``object_class``, every
    other pixel background. (N, 3, H, W) -> (N, H, W).

    Taught in chapter 14, C.3."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (N, 3, H, W), got {tuple(images.shape)}")
    bright = images.mean(1) > threshold
    return torch.where(bright, torch.full(bright.shape, object_class), torch.zeros(bright.shape, dtype=torch.int64))


def baselines(scenes: dict, train_target: torch.Tensor | None = None) -> dict:
    """mIoU of the trivial segmenters on ``scenes``: all background, and brightness threshold + the most frequent
    object class (counted on ``train_target``, or on fresh training scenes).

    Taught in chapter 14, C.3."""
    target = scenes["semantic"]
    if train_target is None:
        train = make_shapes(200, seed=12_345, **shapes_settings(target.shape[-1]))
        train_target = semantic_map(train["masks"], train["labels"])
    frequent = most_frequent_object_class(train_target)
    return {"all background": mean_iou(torch.zeros_like(target), target),
            f"brightness > 0.45 -> {SEGMENT_CLASSES[frequent]}": mean_iou(threshold_baseline(scenes["images"], frequent),
                                                                         target)}


def train_segmenter(settings, seed: int = 0, show_progress: bool = True, device=None, **fast):
    """Train a ``SegUNet(**settings.model)`` on fresh scenes with CE + Dice, AdamW and warm-up + cosine; returns
    (model, history). ``settings``: model, steps, batch_size, lr, warmup_steps, weight_decay.

    Taught in chapter 14, C.3."""
    seed_everything(seed)
    dev = as_device(device)
    model = SegUNet(**settings.model).to(dev)
    return train_with_adamw_cosine(model, segmentation_loss, segmentation_batches(settings.batch_size, seed=seed),
                                   settings, device=dev, desc="U-Net segmenter", show_progress=show_progress, **fast)


def train_with_adamw_cosine(model: nn.Module, loss_fn, batches, settings, *, device, desc: str,
                            show_progress: bool = True, **fit_options):
    """``fit`` with AdamW and warm-up + cosine (``settings``: steps, lr, warmup_steps, weight_decay); returns
    (model in eval mode, history). Chapter 14's recipes share it (the segmenter, the tiny SAM).

    Taught in chapter 14, C.3."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = warmup_cosine(optimizer, settings.warmup_steps, settings.steps)
    history = fit(model, loss_fn, batches, steps=settings.steps, optimizer=optimizer, scheduler=scheduler,
                  device=device, desc=desc, show_progress=show_progress, **fit_options)
    return model.eval(), history


# ------------------------------------------------------------------------------------ D. Mask R-CNN's idea


def _check_map_and_boxes(features: torch.Tensor, boxes: torch.Tensor) -> None:
    if features.ndim != 3:
        raise ValueError(f"expected one feature map (C, H, W), got {tuple(features.shape)}")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"expected boxes (R, 4) as (x0, y0, x1, y1) in image pixels, got {tuple(boxes.shape)}")


def bilinear_sample(features: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """features (C, H, W) at real positions (x, y) (any equal shapes S, in feature-cell units, cell centres at the
    integers), by bilinear interpolation, zero outside: (C, *S).

    Taught in chapter 14, D.1."""
    _, height, width = features.shape
    x0, y0 = x.floor(), y.floor()
    out = 0
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - (x - xi).abs()) * (1 - (y - yi).abs())        # the tent weights, both >= 0
            inside = (xi >= 0) & (xi <= width - 1) & (yi >= 0) & (yi <= height - 1)
            value = features[:, yi.clamp(0, height - 1).long(), xi.clamp(0, width - 1).long()]
            out = out + value * (weight * inside)
    return out


def roi_align(features: torch.Tensor, boxes: torch.Tensor, output_size: int = 7, spatial_scale: float = 1.0,
              sampling_ratio: int = 2) -> torch.Tensor:
    """RoIAlign (He et al. 2017): each box (x0, y0, x1, y1, image pixels) is scaled by ``spatial_scale`` (1 /
    stride) without rounding, cut into output_size x output_size bins, and each bin is the mean of
    ``sampling_ratio``^2 bilinear samples at regular points inside it. features (C, H, W), boxes (R, 4) ->
    (R, C, output_size, output_size). Sample positions use the "aligned" convention: a feature cell's centre is at
    integer + 0.5 in scaled coordinates, so 0.5 is subtracted before sampling.

    Taught in chapter 14, D.1."""
    _check_map_and_boxes(features, boxes)
    n, s = output_size, sampling_ratio
    out = []
    for box in boxes.to(features.dtype):
        x0, y0, x1, y1 = box * spatial_scale
        bin_w, bin_h = (x1 - x0) / n, (y1 - y0) / n
        offsets = (torch.arange(n * s, dtype=features.dtype) + 0.5) / s      # sample points, in bins
        xs = x0 + offsets * bin_w - 0.5                                      # (n s,)
        ys = y0 + offsets * bin_h - 0.5
        samples = bilinear_sample(features, xs[None, :].expand(n * s, n * s), ys[:, None].expand(n * s, n * s))
        out.append(samples.reshape(-1, n, s, n, s).mean(dim=(2, 4)))         # (C, n, n)
    return torch.stack(out)


def _round(value: float) -> int:
    """Round half away from zero, as C's ``round`` (and the RoI pooling kernels) do; Python's rounds half to even."""
    return int(math.floor(abs(value) + 0.5) * (1 if value >= 0 else -1))


def roi_pool(features: torch.Tensor, boxes: torch.Tensor, output_size: int = 7, spatial_scale: float = 1.0) -> torch.Tensor:
    """RoI pooling (Fast R-CNN, Girshick 2015): the scaled box is rounded to whole feature cells, cut into bins whose
    edges are rounded again (floor / ceil), and each bin is max-pooled. features (C, H, W), boxes (R, 4) ->
    (R, C, output_size, output_size).

    Taught in chapter 14, D.1."""
    _check_map_and_boxes(features, boxes)
    _, height, width = features.shape
    out = []
    for box in boxes.tolist():
        x0, y0, x1, y1 = (_round(v * spatial_scale) for v in box)         # first quantisation
        w, h = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
        pooled = features.new_zeros(features.shape[0], output_size, output_size)
        for i in range(output_size):
            ya = min(max(y0 + math.floor(i * h / output_size), 0), height)  # second quantisation
            yb = min(max(y0 + math.ceil((i + 1) * h / output_size), 0), height)
            for j in range(output_size):
                xa = min(max(x0 + math.floor(j * w / output_size), 0), width)
                xb = min(max(x0 + math.ceil((j + 1) * w / output_size), 0), width)
                if yb > ya and xb > xa:
                    pooled[:, i, j] = features[:, ya:yb, xa:xb].amax(dim=(1, 2))
        out.append(pooled)
    return torch.stack(out)


def roi_pool_region(box, stride: int) -> tuple[float, float, float, float]:
    """The image region (x0, y0, x1, y1) that RoI pooling really reads for ``box`` on a stride-``stride`` map:
    whole feature cells from round(x0 / stride) to round(x1 / stride), inclusive (halves rounded up).

    Taught in chapter 14, D.2."""
    cells = [_round(v / stride) for v in box]
    return (cells[0] * stride, cells[1] * stride, (cells[2] + 1) * stride, (cells[3] + 1) * stride)


def box_region_iou(a, b) -> float:
    """IoU of two boxes (x0, y0, x1, y1) as continuous regions.

    Taught in chapter 14, D.2."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def mask_head_loss(mask_logits: torch.Tensor, labels: torch.Tensor, target_masks: torch.Tensor) -> torch.Tensor:
    """Mask R-CNN's mask loss: the head predicts K masks per RoI, mask_logits (R, K, m, m); only the mask of the
    RoI's ground-truth class ``labels`` (R,) enters a per-pixel sigmoid binary cross entropy with ``target_masks``
    (R, m, m). The other K - 1 masks get no gradient: classes do not compete for a pixel (no softmax over K).

    Taught in chapter 14, D.3."""
    if mask_logits.ndim != 4 or labels.shape != mask_logits.shape[:1] or target_masks.shape != (
            mask_logits.shape[0], *mask_logits.shape[2:]):
        raise ValueError(f"expected mask_logits (R, K, m, m), labels (R,) and target_masks (R, m, m), got "
                         f"{tuple(mask_logits.shape)}, {tuple(labels.shape)} and {tuple(target_masks.shape)}")
    chosen = mask_logits[torch.arange(len(labels)), labels]              # (R, m, m)
    return F.binary_cross_entropy_with_logits(chosen, target_masks.float())


# ------------------------------------------------------------------------------------ the pictures


def schematic():
    """The U-Net segmenter drawn: contracting path (double 3x3 convs, 2x2 max-pools), bottom, expanding path (2x2
    up-convolution, concatenation with the skip, double 3x3 convs), a 1x1 convolution to class logits and the
    pixel cross entropy + Dice loss; shapes for a 48 x 48 scene. Returns the Figure.

    Drawn in chapter 14, C.2."""
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(12, 5.2, title="U-Net segmenter: a contracting path, an expanding path, skips between them")
    w, h = 1.9, 0.75
    image = box(ax, 1.2, 4.0, "image\n3 × 48 × 48", w=1.6, h=h, role="data", fontsize=8)
    d1 = box(ax, 3.5, 4.0, "double conv 3×3\n16 × 48 × 48", w=w, h=h, fontsize=8)
    d2 = box(ax, 3.5, 2.65, "max-pool 2×2, double conv\n32 × 24 × 24", w=2.3, h=h, fontsize=8)
    bottom = box(ax, 6.0, 1.3, "max-pool 2×2, double conv\n64 × 12 × 12 (bottom)", w=2.5, h=h, fontsize=8)
    u2 = box(ax, 8.5, 2.65, "up-conv 2×2 → 32 × 24 × 24\ncat skip, double conv", w=2.5, h=h, fontsize=8)
    u1 = box(ax, 8.5, 4.0, "up-conv 2×2 → 16 × 48 × 48\ncat skip, double conv", w=2.5, h=h, fontsize=8)
    head = box(ax, 10.9, 3.3, "1×1 conv\n4 × 48 × 48 logits", w=1.7, h=h, fontsize=8)
    loss = box(ax, 10.9, 1.9, "pixel CE + Dice\nwith the class map", w=1.7, h=h, role="loss", fontsize=8)
    target = box(ax, 10.9, 0.6, "class map\n48 × 48", w=1.7, h=0.7, role="data", fontsize=8)
    arrow(ax, image.right, d1.left)
    arrow(ax, d1.bottom, d2.top)
    arrow(ax, d2.bottom, (bottom.left[0] + 0.3, bottom.top[1]))
    arrow(ax, (bottom.right[0] - 0.3, bottom.top[1]), u2.bottom)
    arrow(ax, u2.top, u1.bottom)
    arrow(ax, d2.right, u2.left)
    arrow(ax, d1.right, u1.left)
    arrow(ax, u1.right, (head.left[0], head.top[1] - 0.1))
    arrow(ax, head.bottom, loss.top)
    arrow(ax, target.top, loss.bottom)
    note(ax, 6.0, 4.25, "skip: concatenate", fontsize=8)
    note(ax, 6.0, 2.9, "skip: concatenate", fontsize=8)
    legend(ax, ["data", "network", "loss"], loc="lower left")
    return fig
