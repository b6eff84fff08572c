"""Chapter 06's boxes: conversions, IoU, GIoU, non-maximum suppression and VOC-style average precision.

Conventions (used by ``yolo``, ``detr`` and ``maskformer`` too):

- ``xyxy``: (x0, y0, x1, y1), continuous coordinates, x0 <= x1 and y0 <= y1; area (x1 - x0)(y1 - y0).
- ``cxcywh``: (centre x, centre y, width, height); DETR predicts it normalised to [0, 1] by the image size.
- ``course_lib.data.make_shapes`` gives *inclusive pixel* boxes: pixel columns x0..x1 all belong to the
  object, so the object covers the continuous interval [x0, x1 + 1). ``pixel_to_xyxy`` is the one place
  where that + 1 happens; everything else works in continuous coordinates.

Every function takes boxes with the 4 numbers in the last dimension, ``(..., 4)``.
"""
from __future__ import annotations

import numpy as np
import torch


def _check_boxes(boxes: torch.Tensor, name: str = "boxes") -> None:
    if not isinstance(boxes, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.shape[-1:] != (4,):
        raise ValueError(f"{name} must have 4 numbers in the last dimension, got shape {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {boxes.dtype}; use boxes.float()")


def _check_xyxy(boxes: torch.Tensor, name: str) -> None:
    """xyxy boxes must have x0 <= x1 and y0 <= y1: an inverted box has a negative width that IoU and GIoU
    would turn into numbers outside their range (a GIoU of 1.6e13) instead of an error."""
    _check_boxes(boxes, name)
    inverted = (boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])
    if inverted.any():
        first = boxes.reshape(-1, 4)[inverted.reshape(-1)][0].tolist()
        raise ValueError(f"{name} holds {int(inverted.sum())} inverted box(es) (x1 < x0 or y1 < y0), e.g. "
                         f"{[round(v, 4) for v in first]}: xyxy boxes are (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1. "
                         "Boxes in (cx, cy, w, h) form? Convert them with cxcywh_to_xyxy first.")


# ------------------------------------------------------------------------------------------------ conversions

def pixel_to_xyxy(pixel_boxes: torch.Tensor) -> torch.Tensor:
    """Inclusive pixel boxes (x0, y0, x1, y1) of ``make_shapes`` -> continuous xyxy (x0, y0, x1 + 1, y1 + 1).

    Taught in chapter 06, A.1.
    """
    _check_boxes(pixel_boxes, "pixel_boxes")
    return pixel_boxes + torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=pixel_boxes.dtype, device=pixel_boxes.device)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """(x0, y0, x1, y1) -> (cx, cy, w, h). Chapter 06, B.2."""
    _check_boxes(boxes)
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(cx, cy, w, h) -> (x0, y0, x1, y1). Chapter 06, B.3."""
    _check_boxes(boxes)
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def normalized_targets(pixel_boxes: torch.Tensor, image_size: int) -> torch.Tensor:
    """Inclusive pixel boxes -> DETR targets: continuous cxcywh divided by the image size, in [0, 1].

    Taught in chapter 06, C.2.
    """
    return xyxy_to_cxcywh(pixel_to_xyxy(pixel_boxes)) / image_size


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area of xyxy boxes, (..., 4) -> (...). Chapter 06, A.1."""
    _check_boxes(boxes)
    return (boxes[..., 2] - boxes[..., 0]).clamp_min(0) * (boxes[..., 3] - boxes[..., 1]).clamp_min(0)


# ------------------------------------------------------------------------------------------------ IoU and GIoU

def _intersection_union(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    top_left = torch.maximum(a[..., :2], b[..., :2])
    bottom_right = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (bottom_right - top_left).clamp_min(0)                     # 0 when the boxes do not overlap
    intersection = wh[..., 0] * wh[..., 1]
    union = box_area(a) + box_area(b) - intersection
    return intersection, union


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise IoU of xyxy boxes: ``a``, ``b`` broadcastable (..., 4) -> (...). 0 for two empty boxes.

    Taught in chapter 06, A.2.
    """
    _check_xyxy(a, "a")
    _check_xyxy(b, "b")
    intersection, union = _intersection_union(a, b)
    return intersection / union.clamp_min(1e-12)


def giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise generalized IoU (Rezatofighi et al. 2019) of xyxy boxes, (..., 4) -> (...), in (-1, 1]:
    IoU - |C minus (A union B)| / |C|, with C the smallest box enclosing both. Chapter 06, A.3."""
    _check_xyxy(a, "a")
    _check_xyxy(b, "b")
    intersection, union = _intersection_union(a, b)
    enclosing_wh = torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])
    enclosing = enclosing_wh[..., 0] * enclosing_wh[..., 1]
    return intersection / union.clamp_min(1e-12) - (enclosing - union) / enclosing.clamp_min(1e-12)


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4): (N, M). Chapter 06, A.4."""
    return iou(a[:, None, :], b[None, :, :])


def pairwise_giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GIoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4): (N, M). Chapter 06, C.2."""
    return giou(a[:, None, :], b[None, :, :])


def rasterized_iou_giou(a, b, resolution: float = 0.01) -> tuple[float, float]:
    """IoU and GIoU of two xyxy boxes by counting the centres of a fine grid of cells (brute force). Chapter 06, A.3.

    The grid covers the enclosing box C with cells of side ``resolution``; a cell counts as inside a
    box when its centre is. The error shrinks with ``resolution``.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    c0, c1 = np.minimum(a[:2], b[:2]), np.maximum(a[2:], b[2:])
    xs = np.arange(c0[0] + resolution / 2, c1[0], resolution)
    ys = np.arange(c0[1] + resolution / 2, c1[1], resolution)
    xx, yy = np.meshgrid(xs, ys)

    def inside(box):
        return (xx >= box[0]) & (xx < box[2]) & (yy >= box[1]) & (yy < box[3])

    in_a, in_b = inside(a), inside(b)
    intersection, union, enclosing = (in_a & in_b).sum(), (in_a | in_b).sum(), xx.size
    iou_value = intersection / max(union, 1)
    return float(iou_value), float(iou_value - (enclosing - union) / enclosing)


# ------------------------------------------------------------------------------------------------ NMS

def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float = 0.5) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, by decreasing score. Chapter 06, A.4.

    Repeat: keep the highest-scoring remaining box, drop every remaining box whose IoU with it
    is above ``iou_threshold``. ``boxes`` (N, 4) xyxy, ``scores`` (N,). Ties keep the lower index.
    """
    _check_boxes(boxes)
    if boxes.ndim != 2 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"expected boxes (N, 4) and scores (N,), got {tuple(boxes.shape)} and {tuple(scores.shape)}")
    order = torch.argsort(scores, descending=True, stable=True)
    overlaps = pairwise_iou(boxes, boxes)                           # (N, N)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlaps[i].cpu() > iou_threshold
    return torch.tensor(keep, dtype=torch.long)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                iou_threshold: float = 0.5) -> torch.Tensor:
    """NMS within each class separately: indices of the kept boxes, by decreasing score. Chapter 06, A.4."""
    keep = []
    for label in labels.unique().tolist():
        index = torch.nonzero(labels == label).flatten()
        keep.append(index[nms(boxes[index], scores[index], iou_threshold)])
    keep = torch.cat(keep) if keep else torch.zeros(0, dtype=torch.long)
    return keep[torch.argsort(scores[keep], descending=True, stable=True)]


# ------------------------------------------------------------------------------------------------ mAP

def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC (2010 and later) all-point average precision: the area under the precision *envelope*. Chapter 06, D.5.

    ``recall``, ``precision``: the values after each detection, in decreasing-score order. Pad with
    (0, 0) at the start and (1, 0) at the end, replace each precision by the maximum precision at any
    recall >= its own (the envelope), then sum (r_{k+1} - r_k) p_envelope(r_{k+1}) where recall changes.
    """
    recall = np.concatenate([[0.0], np.asarray(recall, np.float64), [1.0]])
    precision = np.concatenate([[0.0], np.asarray(precision, np.float64), [0.0]])
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


def match_detections(pred_boxes, pred_scores, gt_boxes, iou_threshold: float = 0.5):
    """Greedy VOC matching for one image and one class: in decreasing score, a detection is a true
    positive when its best-IoU ground-truth box has IoU >= ``iou_threshold`` and is not taken yet. Chapter 06, D.5.

    Returns (is_true_positive (P,) bool in the *input* order, matched ground-truth index (P,), -1 if none).
    """
    n_pred = len(pred_boxes)
    true_positive = torch.zeros(n_pred, dtype=torch.bool)
    matched = torch.full((n_pred,), -1, dtype=torch.long)
    if n_pred == 0 or len(gt_boxes) == 0:
        return true_positive, matched
    overlaps = pairwise_iou(pred_boxes, gt_boxes)                    # (P, G)
    taken = torch.zeros(len(gt_boxes), dtype=torch.bool)
    for i in torch.argsort(pred_scores, descending=True, stable=True).tolist():
        best_iou, best = overlaps[i].max(0)
        if best_iou >= iou_threshold and not taken[best]:
            taken[best] = True
            true_positive[i], matched[i] = True, best
    return true_positive, matched


def precision_recall(predictions: list[dict], targets: list[dict], label: int, iou_threshold: float = 0.5):
    """Precision and recall after each detection of class ``label``, in decreasing score, over a data set.

    Returns (recall (P,), precision (P,), number of ground-truth boxes of the class) as numpy arrays.

    Taught in chapter 06, D.5.
    """
    scores, hits, n_gt = [], [], 0
    for pred, target in zip(predictions, targets):
        p_index = pred["labels"] == label
        g_boxes = target["boxes"][target["labels"] == label]
        n_gt += len(g_boxes)
        tp, _ = match_detections(pred["boxes"][p_index], pred["scores"][p_index], g_boxes, iou_threshold)
        scores.append(pred["scores"][p_index].detach().cpu())
        hits.append(tp)
    scores, hits = torch.cat(scores), torch.cat(hits)
    order = torch.argsort(scores, descending=True, stable=True)
    tp_cum = hits[order].double().cumsum(0).numpy()
    recall = tp_cum / max(n_gt, 1)
    precision = tp_cum / np.arange(1, len(order) + 1)
    return recall, precision, n_gt


def mean_average_precision(predictions: list[dict], targets: list[dict], num_classes: int,
                           iou_threshold: float = 0.5) -> dict:
    """mAP at one IoU threshold over a data set, VOC style (all-point envelope, per class, then the mean).

    ``predictions[i]``: dict(boxes (P, 4) xyxy, scores (P,), labels (P,)) for image i;
    ``targets[i]``: dict(boxes (G, 4) xyxy, labels (G,)). Returns {"map", "ap" (list per class),
    "n_gt" (per class)}. A class without ground truth gets AP NaN and is left out of the mean.

    Taught in chapter 06, D.5.
    """
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions but {len(targets)} targets: one dict per image each")
    aps, n_gts = [], []
    for c in range(num_classes):
        recall, precision, n_gt = precision_recall(predictions, targets, c, iou_threshold)
        n_gts.append(n_gt)
        aps.append(average_precision(recall, precision) if n_gt else float("nan"))
    valid = [a for a in aps if not np.isnan(a)]
    return {"map": float(np.mean(valid)) if valid else float("nan"), "ap": aps, "n_gt": n_gts}


def matched_count(predictions: list[dict], targets: list[dict], score_threshold: float = 0.5,
                  iou_threshold: float = 0.5) -> dict:
    """Ground-truth boxes found by a prediction of the right class with IoU >= ``iou_threshold``, counting only
    predictions with score >= ``score_threshold`` (greedy one-to-one, per class). Also the false positives.

    Taught in chapter 06, D.5.
    """
    found = total = false_positives = 0
    for pred, target in zip(predictions, targets):
        confident = pred["scores"] >= score_threshold
        total += len(target["boxes"])
        for c in pred["labels"][confident].unique().tolist() + [None]:
            if c is None:
                break
            p_index = confident & (pred["labels"] == c)
            g_boxes = target["boxes"][target["labels"] == c]
            tp, _ = match_detections(pred["boxes"][p_index], pred["scores"][p_index], g_boxes, iou_threshold)
            found += int(tp.sum())
            false_positives += int((~tp).sum())
    return {"matched": found, "total": total, "false_positives": false_positives}
