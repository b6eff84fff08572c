"""Chapter 06's mask classification: MaskFormer's loss (Cheng et al. 2021) and Mask2Former's masked attention (2022).

MaskFormer predicts N (class, mask) pairs. Training matches them to the G <= N ground-truth segments with
the Hungarian algorithm (cost: -p_i(c_j) + L_mask(m_i, m_j)) and minimises

    L = sum over all N queries of -log p_i(c_i)   (unmatched queries: "no object", class weight 0.1)
        + sum over the matched pairs of [20 * focal(m_i, m_j) + 1 * dice(m_i, m_j)]

(MaskFormer's weights; Mask2Former uses BCE instead of focal, with weights class 2, BCE 5, dice 5).
Masks are logits (sigmoid gives the probability); every mask loss here takes logits.

Mask2Former's masked attention restricts each query's cross-attention to the pixels where the previous
layer's mask is above 0.5. A query whose mask is empty would have no pixel left (softmax over all -inf:
NaN), so, as the official code does, such a query attends everywhere.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from course_lib.topics.detr import hungarian_match
from course_lib.topics.vit import scaled_dot_product_attention

MASKFORMER_WEIGHTS = dict(class_weight=1.0, focal_weight=20.0, dice_weight=1.0, no_object_weight=0.1)
MASK2FORMER_WEIGHTS = dict(class_weight=2.0, bce_weight=5.0, dice_weight=5.0, no_object_weight=0.1)


def _flat(masks: torch.Tensor) -> torch.Tensor:
    """(M, H, W) or (M, HW) -> (M, HW) float."""
    if masks.ndim not in (2, 3):
        raise ValueError(f"expected masks (M, H, W) or (M, HW), got {tuple(masks.shape)}")
    return masks.flatten(1).float()


def dice_loss(mask_logits: torch.Tensor, target_masks: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s) per mask, p = sigmoid(logits): (M, H, W) x2 -> (M,).

    Taught in chapter 06, E.1.
    """
    p, t = _flat(mask_logits).sigmoid(), _flat(target_masks)
    if p.shape != t.shape:
        raise ValueError(f"mask_logits {tuple(mask_logits.shape)} and target_masks {tuple(target_masks.shape)} differ")
    return 1 - (2 * (p * t).sum(-1) + smooth) / (p.sum(-1) + t.sum(-1) + smooth)


def sigmoid_focal_loss(mask_logits: torch.Tensor, target_masks: torch.Tensor, alpha: float | None = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Per-pixel sigmoid focal loss, -alpha_t (1 - p_t)^gamma log p_t, averaged over the pixels: (M, H, W) x2 -> (M,).

    p_t = p where the target is 1, 1 - p where it is 0; alpha_t = alpha or 1 - alpha likewise (``alpha=None``: no
    weighting). With gamma = 0 and alpha = None it is the binary cross entropy.

    Taught in chapter 06, E.1.
    """
    logits, t = _flat(mask_logits), _flat(target_masks)
    if logits.shape != t.shape:
        raise ValueError(f"mask_logits {tuple(mask_logits.shape)} and target_masks {tuple(target_masks.shape)} differ")
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")         # -log p_t, stable
    p = logits.sigmoid()
    p_t = p * t + (1 - p) * (1 - t)
    loss = (1 - p_t) ** gamma * bce
    if alpha is not None:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss.mean(-1)


def _pairwise(loss_fn, mask_logits: torch.Tensor, target_masks: torch.Tensor) -> torch.Tensor:
    """loss_fn of every predicted mask (N, ...) with every target mask (G, ...): (N, G)."""
    logits, t = _flat(mask_logits), _flat(target_masks)
    n, g = len(logits), len(t)
    values = loss_fn(logits[:, None].expand(n, g, -1).reshape(n * g, -1), t[None].expand(n, g, -1).reshape(n * g, -1))
    return values.reshape(n, g)


def mask_matching_cost(class_logits: torch.Tensor, mask_logits: torch.Tensor, target_labels: torch.Tensor,
                       target_masks: torch.Tensor, focal_weight: float = 20.0, dice_weight: float = 1.0) -> torch.Tensor:
    """MaskFormer's matching cost (N, G): -p_i(c_j) + focal_weight focal(m_i, m_j) + dice_weight dice(m_i, m_j).

    Taught in chapter 06, E.1.
    """
    class_term = -class_logits.softmax(-1)[:, target_labels]                          # (N, G), probability
    return (class_term + focal_weight * _pairwise(sigmoid_focal_loss, mask_logits, target_masks)
            + dice_weight * _pairwise(dice_loss, mask_logits, target_masks))


def mask_classification_loss(class_logits: torch.Tensor, mask_logits: torch.Tensor, target_labels: torch.Tensor,
                             target_masks: torch.Tensor, focal_weight: float = 20.0, dice_weight: float = 1.0,
                             no_object_weight: float = 0.1) -> dict:
    """MaskFormer's loss for one image. ``class_logits`` (N, K + 1) (index K = no object), ``mask_logits``
    (N, H, W); ``target_labels`` (G,), ``target_masks`` (G, H, W) of 0/1, G <= N. Chapter 06, E.1.

    Returns dict(total, loss_ce, loss_focal, loss_dice, matches): the weighted class cross entropy over all
    N queries, and the focal and dice losses averaged over the G matched pairs; total = loss_ce +
    focal_weight loss_focal + dice_weight loss_dice.
    """
    n, k1 = class_logits.shape
    if mask_logits.shape[0] != n or target_masks.shape[0] != len(target_labels):
        raise ValueError("expected N class rows and N masks, and one target mask per target label")
    with torch.no_grad():
        cost = mask_matching_cost(class_logits, mask_logits, target_labels, target_masks, focal_weight, dice_weight)
    rows, cols = hungarian_match(cost)
    target_classes = torch.full((n,), k1 - 1, dtype=torch.long)
    target_classes[rows] = target_labels[cols]
    class_weight = torch.ones(k1)
    class_weight[-1] = no_object_weight
    loss_ce = F.cross_entropy(class_logits, target_classes, weight=class_weight)
    num_masks = max(len(cols), 1)
    loss_focal = sigmoid_focal_loss(mask_logits[rows], target_masks[cols]).sum() / num_masks
    loss_dice = dice_loss(mask_logits[rows], target_masks[cols]).sum() / num_masks
    total = loss_ce + focal_weight * loss_focal + dice_weight * loss_dice
    return {"total": total, "loss_ce": loss_ce, "loss_focal": loss_focal, "loss_dice": loss_dice,
            "matches": (rows, cols)}


def attention_mask(mask_logits: torch.Tensor, threshold: float = 0.5, fix_empty: bool = True) -> torch.Tensor:
    """Mask2Former's attention mask from the previous layer's mask logits (..., N, HW): bool, True = may attend.

    True where sigmoid(logits) >= ``threshold``. With ``fix_empty`` a query whose mask is empty everywhere
    gets an all-True row (attends to every pixel), as the official code does; without it that row would be
    all -inf before the softmax, and the softmax returns NaN.

    Taught in chapter 06, E.2.
    """
    allowed = mask_logits.sigmoid() >= threshold
    if fix_empty:
        empty = ~allowed.any(-1, keepdim=True)                                        # (..., N, 1)
        allowed = allowed | empty
    return allowed


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask_logits: torch.Tensor,
                     threshold: float = 0.5, fix_empty: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(M + q k^T / sqrt(d)) v with M = 0 where the query's previous mask is on, -inf elsewhere. Chapter 06, E.2.

    q (..., N, d), k, v (..., HW, d), mask_logits (..., N, HW) -> output (..., N, d), weights (..., N, HW).
    """
    return scaled_dot_product_attention(q, k, v, attention_mask(mask_logits, threshold, fix_empty))


def schematic():
    """MaskFormer as a picture: N queries give a class and a mask embedding each; the dot product of a mask embedding
    with the per-pixel embeddings is that query's mask; matched to the ground-truth segments as in DETR. Drawn in
    chapter 06, E.1.

    Returns the matplotlib Figure.
    """
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(12.4, 5.2, title="MaskFormer: each query predicts a class and a mask")
    image = box(ax, 0.9, 3.0, "image", w=1.2, h=0.7, role="data")
    backbone = box(ax, 2.7, 3.0, "backbone", w=1.5, h=0.7, role="network")
    arrow(ax, image.right, backbone.left)
    pixel = box(ax, 5.0, 4.1, "pixel decoder", w=1.8, h=0.7, role="network")
    decoder = box(ax, 5.0, 1.9, "transformer decoder\n(DETR's, N queries)", w=2.2, h=0.8, role="network")
    arrow(ax, backbone.right, pixel.left)
    arrow(ax, backbone.right, decoder.left)
    queries = box(ax, 5.0, 0.6, "N learned queries", w=2.0, h=0.55, role="condition")
    arrow(ax, queries.top, decoder.bottom)
    per_pixel = box(ax, 7.6, 4.1, "per-pixel embeddings\n$E_{pixel}$: (C, H, W)", w=2.3, h=0.8, role="latent")
    arrow(ax, pixel.right, per_pixel.left)
    cls = box(ax, 7.6, 2.6, "class head\n(N, K + 1)", w=1.7, h=0.7, role="network")
    embed = box(ax, 7.6, 1.3, "mask embeddings (MLP)\n$E_{mask}$: (C, N)", w=2.3, h=0.8, role="latent")
    arrow(ax, decoder.right, cls.left)
    arrow(ax, decoder.right, embed.left)
    dot = box(ax, 10.2, 2.7, "dot product, sigmoid\n$m_i = \\sigma(E_{mask}[:, i]^T E_{pixel})$", w=2.6, h=0.8,
              role="operation")
    arrow(ax, per_pixel.right, (dot.x - 0.9, dot.y + 0.4))
    arrow(ax, embed.right, (dot.x - 0.9, dot.y - 0.4))
    masks = box(ax, 10.9, 4.3, "N masks\n(N, H, W)", w=1.6, h=0.7, role="data")
    arrow(ax, (dot.x + 0.7, dot.y + 0.4), masks.bottom)
    loss = box(ax, 10.5, 0.9, "Hungarian matching + loss:\nCE + 20 focal + 1 dice", w=2.7, h=0.8, role="loss")
    arrow(ax, dot.bottom, loss.top)
    arrow(ax, cls.right, (loss.x - loss.w / 2, loss.y + 0.2))
    note(ax, 2.5, 4.4, "Mask2Former (E.2): each query's\ncross-attention restricted to\nits previous mask")
    legend(ax, ["data", "network", "latent", "operation", "condition", "loss"], loc="lower left")
    return fig
