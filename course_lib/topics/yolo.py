"""Chapter 06's YOLOv1 (Redmon et al. 2016): the S x S x (5B + C) output, target encoding, the loss, decoding.

Layout of one cell's 5B + C numbers (used by the encoder, the loss and the decoder alike):

    [x_0, y_0, w_0, h_0, C_0,  x_1, y_1, w_1, h_1, C_1,  ...,  p(1), ..., p(C)]
     predictor 0                predictor 1                    class probabilities (one set per cell)

(x, y) is the box centre as an offset inside its cell, in [0, 1]; (w, h) are relative to the whole image;
C_j is predictor j's confidence, trained towards Pr(object) * IoU(predicted box, true box): a *product*.
Targets are (S, S, 5 + C): [x, y, w, h, 1_obj, one-hot class]; the cell holding the box centre is responsible.
"""
from __future__ import annotations

import torch
from torch import nn

from course_lib.topics.boxes import batched_nms, cxcywh_to_xyxy, iou, pixel_to_xyxy, xyxy_to_cxcywh
from course_lib.topics.cnn import SmallCNN



def _check_grid(pred: torch.Tensor, num_boxes: int, num_classes: int) -> None:
    if pred.ndim != 4 or pred.shape[1] != pred.shape[2] or pred.shape[-1] != 5 * num_boxes + num_classes:
        raise ValueError(f"expected predictions (N, S, S, 5B + C) = (N, S, S, {5 * num_boxes + num_classes}), "
                         f"got {tuple(pred.shape)}")


def encode_targets(labels: torch.Tensor, pixel_boxes: torch.Tensor, image_size: int, grid: int = 6,
                   num_classes: int = 3) -> torch.Tensor:
    """``make_shapes`` labels (N, M) (-1 = padding) and inclusive pixel boxes (N, M, 4) -> targets (N, S, S, 5 + C).

    The responsible cell is the one containing the box centre (continuous coordinates, see
    ``course_lib.topics.boxes.pixel_to_xyxy``). YOLOv1 has one target per cell: when two centres fall in the
    same cell, the first object wins (counted in ``encode_targets.collisions`` of the last call).

    Taught in chapter 06, B.2.
    """
    if labels.ndim != 2 or pixel_boxes.shape != (*labels.shape, 4):
        raise ValueError(f"expected labels (N, M) and boxes (N, M, 4), got {tuple(labels.shape)}, {tuple(pixel_boxes.shape)}")
    n = len(labels)
    targets = torch.zeros(n, grid, grid, 5 + num_classes)
    cxcywh = xyxy_to_cxcywh(pixel_to_xyxy(pixel_boxes.float())) / image_size         # (N, M, 4) in [0, 1]
    collisions = 0
    for i in range(n):
        for m in range(labels.shape[1]):
            if labels[i, m] < 0:
                continue
            cx, cy, w, h = cxcywh[i, m].tolist()
            col, row = min(int(cx * grid), grid - 1), min(int(cy * grid), grid - 1)
            if targets[i, row, col, 4] == 1:
                collisions += 1
                continue
            targets[i, row, col, :5] = torch.tensor([cx * grid - col, cy * grid - row, w, h, 1.0])
            targets[i, row, col, 5 + int(labels[i, m])] = 1.0
    encode_targets.collisions = collisions
    return targets


def cell_to_image_boxes(cell_boxes: torch.Tensor) -> torch.Tensor:
    """(N, S, S, ..., 4) (x, y in the cell, w, h of the image) -> xyxy boxes in image fractions [0, 1]. Chapter 06, B.3.

    The network's w and h are raw linear outputs and can be negative; a negative width is a box that covers
    nothing, so it is clamped to 0 (an empty box, IoU 0 with everything) instead of becoming an inverted box."""
    grid = cell_boxes.shape[1]
    rows = torch.arange(grid, dtype=cell_boxes.dtype, device=cell_boxes.device)
    extra = (1,) * (cell_boxes.ndim - 4)
    cx = (cell_boxes[..., 0] + rows.view(1, 1, grid, *extra)) / grid                # column index along dim 2
    cy = (cell_boxes[..., 1] + rows.view(1, grid, 1, *extra)) / grid                # row index along dim 1
    w, h = cell_boxes[..., 2].clamp_min(0), cell_boxes[..., 3].clamp_min(0)
    return cxcywh_to_xyxy(torch.stack([cx, cy, w, h], dim=-1))


def _signed_sqrt(x: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """sqrt for w and h, defined (and differentiable) for the negative values a linear output can take."""
    return torch.sign(x) * torch.sqrt(x.abs() + eps)


def yolo_loss(pred: torch.Tensor, target: torch.Tensor, num_boxes: int = 2, num_classes: int = 3,
              lambda_coord: float = 5.0, lambda_noobj: float = 0.5, return_terms: bool = False):
    """The YOLOv1 sum-squared loss, summed over cells and predictors, averaged over the N images. Chapter 06, B.3.

    ``pred`` (N, S, S, 5B + C) raw outputs, ``target`` (N, S, S, 5 + C) from :func:`encode_targets`.
    1^obj_ij: cell i holds an object and predictor j has the highest IoU with it among the B predictors;
    1^noobj_ij = 1 - 1^obj_ij (all predictors of empty cells, and the non-responsible ones of full cells).
    The confidence target of the responsible predictor is that IoU (detached), 0 for the others.
    Terms: lambda_coord [(x - x^)^2 + (y - y^)^2] + lambda_coord [(sqrt w - sqrt w^)^2 + (sqrt h - sqrt h^)^2]
    + (C - C^)^2 for 1^obj + lambda_noobj (C - C^)^2 for 1^noobj + sum_c (p(c) - p^(c))^2 for cells with an object
    (here the hat is the *prediction*).
    """
    _check_grid(pred, num_boxes, num_classes)
    if target.shape != (*pred.shape[:3], 5 + num_classes):
        raise ValueError(f"target must be (N, S, S, 5 + C) = {(*pred.shape[:3], 5 + num_classes)}, got {tuple(target.shape)}")
    n = len(pred)
    boxes = pred[..., :5 * num_boxes].reshape(*pred.shape[:3], num_boxes, 5)        # (N, S, S, B, 5)
    class_pred = pred[..., 5 * num_boxes:]                                           # (N, S, S, C)
    has_object = target[..., 4]                                                      # (N, S, S) 1_i^obj
    with torch.no_grad():
        overlaps = iou(cell_to_image_boxes(boxes[..., :4]), cell_to_image_boxes(target[..., None, :4]))  # (N, S, S, B)
        responsible = torch.zeros_like(overlaps).scatter_(-1, overlaps.argmax(-1, keepdim=True), 1.0)
    obj = responsible * has_object[..., None]                                        # (N, S, S, B) 1_ij^obj
    noobj = 1.0 - obj
    true = target[..., None, :4]                                                     # (N, S, S, 1, 4)
    xy = lambda_coord * (obj * ((boxes[..., :2] - true[..., :2]) ** 2).sum(-1)).sum()
    wh = lambda_coord * (obj * ((_signed_sqrt(boxes[..., 2:4]) - _signed_sqrt(true[..., 2:4])) ** 2).sum(-1)).sum()
    confidence_target = overlaps * obj                                               # IoU for 1^obj, else 0
    conf_obj = (obj * (boxes[..., 4] - confidence_target) ** 2).sum()
    conf_noobj = lambda_noobj * (noobj * boxes[..., 4] ** 2).sum()
    classes = (has_object * ((class_pred - target[..., 5:]) ** 2).sum(-1)).sum()
    terms = {"xy": xy / n, "wh": wh / n, "conf_obj": conf_obj / n, "conf_noobj": conf_noobj / n, "class": classes / n}
    total = sum(terms.values())
    return (total, terms) if return_terms else total


def perfect_prediction(target: torch.Tensor, num_boxes: int = 2) -> torch.Tensor:
    """The output a perfect YOLO would give for ``target``: predictor 0 of each object cell copies the box with
    confidence 1 (its IoU), every other confidence 0, the class probabilities one-hot. (N, S, S, 5B + C).

    Taught in chapter 06, B.3.
    """
    n, s, _, k = target.shape
    num_classes = k - 5
    pred = torch.zeros(n, s, s, 5 * num_boxes + num_classes)
    pred[..., :5] = target[..., :5]
    pred[..., 5 * num_boxes:] = target[..., 5:]
    return pred


def decode(pred: torch.Tensor, image_size: int, num_boxes: int = 2, num_classes: int = 3,
           score_threshold: float = 0.2, iou_threshold: float = 0.5) -> list[dict]:
    """Outputs (N, S, S, 5B + C) -> per image dict(boxes (P, 4) xyxy pixels, scores, labels) after per-class NMS.

    Score of predictor j for class c: the class-specific confidence p(c) * C_j = Pr(class c) * IoU.

    Taught in chapter 06, B.4.
    """
    _check_grid(pred, num_boxes, num_classes)
    n, s = pred.shape[:2]
    boxes = pred[..., :5 * num_boxes].reshape(n, s, s, num_boxes, 5)
    xyxy = cell_to_image_boxes(boxes[..., :4]) * image_size                           # (N, S, S, B, 4)
    class_scores = boxes[..., 4:5] * pred[..., None, 5 * num_boxes:]                   # (N, S, S, B, C)
    scores, labels = class_scores.max(-1)                                             # (N, S, S, B)
    results = []
    for i in range(n):
        b, sc, lb = xyxy[i].reshape(-1, 4), scores[i].reshape(-1), labels[i].reshape(-1)
        keep = sc >= score_threshold
        b, sc, lb = b[keep], sc[keep], lb[keep]
        kept = batched_nms(b, sc, lb, iou_threshold) if len(b) else torch.zeros(0, dtype=torch.long)
        results.append({"boxes": b[kept], "scores": sc[kept], "labels": lb[kept]})
    return results


class TinyYOLO(nn.Module):
    """A fully convolutional YOLOv1-style head on chapter 03's SmallCNN: (N, 3, 48, 48) -> (N, 6, 6, 5B + C).

    conv3 of SmallCNN (stride 4, 12 x 12) -> 3x3 conv, stride 2 (6 x 6) -> ReLU -> 1x1 conv to 5B + C, linear.
    (YOLOv1 itself ends in two fully connected layers, which give every cell a view of the whole image.)

    Taught in chapter 06, B.4.
    """

    def __init__(self, num_boxes: int = 2, num_classes: int = 3, channels: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()

        self.num_boxes, self.num_classes = num_boxes, num_classes
        self.backbone = SmallCNN(channels=channels, first_kernel=5, in_channels=3, num_classes=1)
        self.down = nn.Conv2d(channels[-1], channels[-1], 3, stride=2, padding=1)
        self.out = nn.Conv2d(channels[-1], 5 * num_boxes + num_classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.down(self.backbone.features(images, "conv3")))           # (N, c3, S, S)
        return self.out(h).permute(0, 2, 3, 1)                                      # (N, S, S, 5B + C)


def schematic():
    """YOLOv1 as a picture: one CNN pass to an S x S grid; each cell predicts B boxes, each with its own confidence,
    and one set of C class probabilities; scores p(c) C_j, then NMS. Drawn in chapter 06, B.1.

    Returns the matplotlib Figure.
    """
    from matplotlib.patches import Rectangle

    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(12, 5.2, title="YOLOv1: the set as an S x S grid")
    image = box(ax, 1.0, 3.3, "image\n48 x 48", w=1.4, h=0.9, role="data")
    cnn = box(ax, 3.0, 3.3, "CNN\n(SmallCNN, conv)", w=1.7, h=0.9, role="network")
    arrow(ax, image.right, cnn.left)
    # the S x S grid, one cell (the one holding the object's centre) highlighted
    s, cell, x0, y0 = 6, 0.3, 4.6, 2.4
    for r in range(s):
        for c in range(s):
            responsible = (r, c) == (2, 3)
            ax.add_patch(Rectangle((x0 + c * cell, y0 + r * cell), cell, cell, facecolor="#f4cccc" if responsible
                                   else "#d9ead3", edgecolor="#38761d", linewidth=0.8))
    ax.plot([x0 + 3.5 * cell], [y0 + 2.5 * cell], "r+", ms=9, mew=2)
    arrow(ax, cnn.right, (x0, 3.3))
    note(ax, x0 + 0.9, y0 - 0.3, "S x S x (5B + C)\n(here 6 x 6 x 13)")
    note(ax, x0 + 0.9, y0 + 2.05, "the cell holding the centre (+)\nis responsible for the object")
    # one cell's numbers
    p0 = box(ax, 8.3, 4.1, "box 1: x, y, w, h, $C_1$", w=2.4, h=0.5, role="latent")
    p1 = box(ax, 8.3, 3.4, "box 2: x, y, w, h, $C_2$", w=2.4, h=0.5, role="latent")
    pc = box(ax, 8.3, 2.7, "p(1), ..., p(C): one set per cell", w=2.9, h=0.5, role="latent")
    arrow(ax, (x0 + 4 * cell, y0 + 2.5 * cell), p1.left)
    note(ax, 10.9, 3.75, "B boxes,\neach with its\nown confidence\n$C_j \\to$ Pr(obj) x IoU", ha="center")
    score = box(ax, 8.3, 1.5, "score = p(c) x $C_j$, threshold,\nper-class NMS (A.4)", w=3.2, h=0.7, role="operation")
    arrow(ax, pc.bottom, score.top)
    out = box(ax, 11.0, 1.5, "boxes +\nclasses", w=1.4, h=0.7, role="data")
    arrow(ax, score.right, out.left)
    target = box(ax, 1.6, 1.2, "targets (S, S, 5 + C):\nx, y, w, h, 1, one-hot", w=2.6, h=0.7, role="data")
    loss = box(ax, 4.9, 1.2, "YOLO loss: 5 sum-squared terms\nbox terms only for the\npredictor with the best IoU",
               w=3.2, h=0.9, role="loss")
    arrow(ax, target.right, loss.left)
    arrow(ax, (x0 + 0.9, y0 - 0.55), loss.top)
    legend(ax, ["data", "network", "latent", "operation", "loss"], loc="lower right")
    return fig
