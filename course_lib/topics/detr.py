"""Chapter 06's DETR, small enough to train on a CPU: Hungarian matching, the set loss, a tiny model, mAP.

    images (B, 3, S, S) --SmallCNN (chapter 03) to conv3--> (B, C, S/4, S/4) --1x1 conv--> (B, D, h, w)
    --flatten--> tokens (B, hw, D), 2-D sine positions P (hw, D) added to queries and keys at every layer
    --encoder: L_e x [x + SelfAttn(q = k = LN(x) + P, v = LN(x)); x + MLP(LN(x))]--> memory (B, hw, D)
    --decoder: N object queries (learned positions E (N, D), content starting at 0),
      L_d x [t + SelfAttn(q = k = LN(t) + E, v = LN(t)); t + CrossAttn(q = LN(t) + E, k = memory + P, v = memory);
             t + MLP(LN(t))]
    --after every decoder layer, shared LN and heads--> class logits (B, N, K + 1), boxes sigmoid(MLP) (B, N, 4) cxcywh

Class index K (the last) is "no object". The attention is ``course_lib.topics.vit.scaled_dot_product_attention``;
``Attention`` only adds separate q, k, v inputs (``vit.MultiHeadAttention`` computes all three from one input,
so it cannot add the positions to queries and keys only, nor attend across two sequences).

The set loss (Carion et al. 2020): per image, the Hungarian matching (``scipy.optimize.linear_sum_assignment``)
of the N predictions to the G <= N targets minimises
    cost(i, j) = lambda_class * (-p_i(c_j)) + lambda_L1 * ||b_i - b_j||_1 + lambda_giou * (-GIoU(b_i, b_j))
with (1, 5, 2); the loss is cross entropy over all N queries (unmatched ones get "no object", weighted 0.1)
+ 5 L1 + 2 (1 - GIoU) over the matched pairs, divided by the number of target boxes, summed over decoder layers.
"""
from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from course_lib.core.runtime import device, seed_everything
from course_lib.core.train import fit, warmup_cosine
from course_lib.data import endless_shapes, make_shapes
from course_lib.topics.boxes import cxcywh_to_xyxy, matched_count, mean_average_precision, normalized_targets, pairwise_giou, pixel_to_xyxy
from course_lib.topics.cnn import SmallCNN
from course_lib.topics.vit import scaled_dot_product_attention


# ------------------------------------------------------------------------------------------------ matching

COST_WEIGHTS = dict(cost_class=1.0, cost_l1=5.0, cost_giou=2.0)   # the paper's matching weights
LOSS_WEIGHTS = dict(loss_ce=1.0, loss_l1=5.0, loss_giou=2.0)      # and loss weights
NO_OBJECT_WEIGHT = 0.1                                            # eos_coef: the "no object" class in the CE


def matching_cost(logits: torch.Tensor, boxes: torch.Tensor, target_labels: torch.Tensor, target_boxes: torch.Tensor,
                  cost_class: float = 1.0, cost_l1: float = 5.0, cost_giou: float = 2.0) -> torch.Tensor:
    """DETR's matching cost for one image, (N, G): predictions (rows) against targets (columns). Chapter 06, C.2.

    ``logits`` (N, K + 1), ``boxes`` (N, 4) normalised cxcywh; ``target_labels`` (G,) in 0..K-1,
    ``target_boxes`` (G, 4) normalised cxcywh. The class term is minus the predicted *probability*
    of the target class (not its log), as in the paper.
    """
    if logits.ndim != 2 or boxes.shape != (len(logits), 4):
        raise ValueError(f"expected logits (N, K+1) and boxes (N, 4), got {tuple(logits.shape)}, {tuple(boxes.shape)}")
    if target_boxes.shape != (len(target_labels), 4):
        raise ValueError(f"expected target_labels (G,) and target_boxes (G, 4), got {tuple(target_labels.shape)}, "
                         f"{tuple(target_boxes.shape)}")
    probabilities = logits.softmax(-1)                                             # (N, K + 1)
    class_term = -probabilities[:, target_labels]                                  # (N, G)
    l1_term = torch.cdist(boxes, target_boxes, p=1)                                # (N, G)
    giou_term = -pairwise_giou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(target_boxes))  # (N, G)
    return cost_class * class_term + cost_l1 * l1_term + cost_giou * giou_term


def hungarian_match(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The assignment of minimum total cost: (prediction indices, target indices), sorted by prediction,
    one pair per target when there are at least as many predictions as targets (N >= G). Chapter 06, C.2."""
    if cost.ndim != 2:
        raise ValueError(f"cost must be (N, G), got {tuple(cost.shape)}")
    if cost.shape[0] < cost.shape[1]:
        raise ValueError(f"{cost.shape[0]} predictions cannot cover {cost.shape[1]} targets: DETR needs N >= G")
    rows, cols = linear_sum_assignment(cost.detach().cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


def brute_force_match(cost: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Minimum-cost assignment by trying every injective map of the G targets to the N predictions.
    Returns (prediction index of each target (G,), total cost). Only for tiny N (N!/(N-G)! maps). Chapter 06, C.2."""
    n, g = cost.shape
    best, best_cost = None, math.inf
    for chosen in itertools.permutations(range(n), g):
        total = float(cost[list(chosen), list(range(g))].sum())
        if total < best_cost:
            best, best_cost = chosen, total
    return torch.tensor(best, dtype=torch.long), best_cost


def scene_targets(labels: torch.Tensor, boxes: torch.Tensor, image_size: int) -> list[dict]:
    """``make_shapes`` padding (labels -1) -> one dict per image: labels (G,), boxes (G, 4) normalised cxcywh.

    Taught in chapter 06, C.2.
    """
    targets = []
    for label_row, box_row in zip(labels, boxes):
        keep = label_row >= 0
        targets.append({"labels": label_row[keep], "boxes": normalized_targets(box_row[keep], image_size)})
    return targets


def match_batch(logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict], **cost_weights) -> list[tuple]:
    """Hungarian matching for every image of a batch: a list of (prediction indices, target indices).

    Taught in chapter 06, C.3.
    """
    cost_weights = {**COST_WEIGHTS, **cost_weights}
    with torch.no_grad():
        return [hungarian_match(matching_cost(l, b, t["labels"], t["boxes"], **cost_weights))
                for l, b, t in zip(logits, boxes, targets)]


def set_loss(logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict], num_classes: int,
             no_object_weight: float = NO_OBJECT_WEIGHT, matches: list[tuple] | None = None) -> dict:
    """DETR's Hungarian loss for one set of predictions (one decoder layer). Chapter 06, C.3.

    ``logits`` (B, N, K + 1), ``boxes`` (B, N, 4) normalised cxcywh, ``targets`` from :func:`scene_targets`.
    Returns the three terms (already weighted 1, 5, 2 in ``"total"``): ``loss_ce`` the cross entropy over
    all B N queries with class weights (1, ..., 1, ``no_object_weight``) (a weighted mean, as
    ``F.cross_entropy(weight=...)`` computes it); ``loss_l1`` and ``loss_giou`` summed over the matched
    pairs and divided by the number of target boxes.
    """
    b, n, k1 = logits.shape
    if len(targets) != b:
        raise ValueError(f"{len(targets)} target dicts for a batch of {b} images: give one per image (an image without "
                         "objects gets {'labels': an empty long tensor, 'boxes': an empty (0, 4) tensor})")
    if matches is not None and len(matches) != b:
        raise ValueError(f"{len(matches)} matches for a batch of {b} images: give one (rows, cols) pair per image")
    if k1 != num_classes + 1:
        raise ValueError(f"logits have {k1} classes; expected num_classes + 1 = {num_classes + 1} (the last is 'no object')")
    if matches is None:
        matches = match_batch(logits, boxes, targets)
    target_classes = torch.full((b, n), num_classes, dtype=torch.long, device=logits.device)  # "no object"
    matched_pred, matched_target = [], []
    for i, ((rows, cols), target) in enumerate(zip(matches, targets)):
        target_classes[i, rows] = target["labels"][cols].to(logits.device)
        matched_pred.append(boxes[i, rows])
        matched_target.append(target["boxes"][cols].to(boxes.device))
    class_weight = torch.ones(num_classes + 1, device=logits.device)
    class_weight[num_classes] = no_object_weight
    loss_ce = F.cross_entropy(logits.reshape(b * n, k1), target_classes.reshape(b * n), weight=class_weight)
    pred_boxes, true_boxes = torch.cat(matched_pred), torch.cat(matched_target)            # (M, 4) each
    num_boxes = max(len(true_boxes), 1)
    loss_l1 = F.l1_loss(pred_boxes, true_boxes, reduction="sum") / num_boxes
    giou_values = torch.diagonal(pairwise_giou(cxcywh_to_xyxy(pred_boxes), cxcywh_to_xyxy(true_boxes)))
    loss_giou = (1 - giou_values).sum() / num_boxes
    total = (LOSS_WEIGHTS["loss_ce"] * loss_ce + LOSS_WEIGHTS["loss_l1"] * loss_l1
             + LOSS_WEIGHTS["loss_giou"] * loss_giou)
    return {"total": total, "loss_ce": loss_ce, "loss_l1": loss_l1, "loss_giou": loss_giou}


# ------------------------------------------------------------------------------------------------ the model

def sine_position_embedding(height: int, width: int, dim: int, temperature: float = 10_000.0) -> torch.Tensor:
    """DETR's fixed 2-D sine embedding, (height * width, dim), row-major like the flattened tokens. Chapter 06, D.2.

    The first dim / 2 numbers encode the row y, the last dim / 2 the column x, each as interleaved
    sin/cos of (coordinate / temperature^(2i / (dim / 2))), with coordinates normalised to (0, 2 pi].
    """
    if dim % 4:
        raise ValueError(f"dim must be a multiple of 4 for a 2-D sine embedding, got {dim}")
    half = dim // 2
    y = (torch.arange(height, dtype=torch.float32) + 1) / height * 2 * math.pi             # (h,)
    x = (torch.arange(width, dtype=torch.float32) + 1) / width * 2 * math.pi               # (w,)
    frequencies = temperature ** (2 * (torch.arange(half) // 2) / half)                   # (half,)

    def encode(coordinate):                                                                # (n,) -> (n, half)
        angles = coordinate[:, None] / frequencies
        return torch.stack([angles[:, 0::2].sin(), angles[:, 1::2].cos()], dim=-1).flatten(1)

    pos_y = encode(y)[:, None, :].expand(height, width, half)
    pos_x = encode(x)[None, :, :].expand(height, width, half)
    return torch.cat([pos_y, pos_x], dim=-1).reshape(height * width, dim)


class Attention(nn.Module):
    """Multi-head attention with separate query, key and value inputs (self- or cross-attention). Chapter 06, D.3.

    query (B, N_q, D), key (B, N_k, D), value (B, N_k, D) -> (B, N_q, D) and the weights (B, heads, N_q, N_k).
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:                  # (B, N, D) -> (B, heads, N, D_h)
        b, n, d = x.shape
        return x.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, query, key, value, mask=None):
        b, n_q, d = query.shape
        out, weights = scaled_dot_product_attention(self._split(self.q(query)), self._split(self.k(key)),
                                                    self._split(self.v(value)), mask)   # (B, heads, N_q, D_h)
        return self.proj(out.transpose(1, 2).reshape(b, n_q, d)), weights


def _mlp(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))


class EncoderLayer(nn.Module):
    """Pre-norm: x + SelfAttn(q = k = LN(x) + pos, v = LN(x)); x + MLP(LN(x)). Chapter 06, D.3."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), _mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, pos):
        h = self.norm1(x)
        attended, weights = self.attn(h + pos, h + pos, h)
        x = x + attended
        return x + self.mlp(self.norm2(x)), weights


class DecoderLayer(nn.Module):
    """Pre-norm: self-attention among the queries, cross-attention to the image, MLP. Chapter 06, D.3.

    t + SelfAttn(q = k = LN(t) + E, v = LN(t)); t + CrossAttn(q = LN(t) + E, k = memory + pos, v = memory);
    t + MLP(LN(t)). Returns the new t and the cross-attention weights (B, heads, N, hw).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.norm1, self.self_attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.cross_attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm3, self.mlp = nn.LayerNorm(dim), _mlp(dim, int(dim * mlp_ratio))

    def forward(self, t, memory, pos, query_pos):
        h = self.norm1(t)
        t = t + self.self_attn(h + query_pos, h + query_pos, h)[0]
        attended, cross_weights = self.cross_attn(self.norm2(t) + query_pos, memory + pos, memory)
        t = t + attended
        return t + self.mlp(self.norm3(t)), cross_weights


class TinyDETR(nn.Module):
    """DETR at toy scale (see the module docstring for the diagram). Chapter 06, D.3.

    ``forward(images)`` returns a dict: ``logits`` (B, N, K + 1) and ``boxes`` (B, N, 4) of the last
    decoder layer, ``aux`` a list of (logits, boxes) for the earlier layers, ``cross_attention`` a list of
    L_d tensors (B, heads, N, hw), ``encoder_attention`` a list of L_e tensors (B, heads, hw, hw), and
    ``grid`` = (h, w) the token grid.
    """

    def __init__(self, num_classes: int = 3, num_queries: int = 8, dim: int = 64, heads: int = 4,
                 encoder_layers: int = 2, decoder_layers: int = 3, mlp_ratio: float = 2.0,
                 backbone_channels: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        self.config = dict(num_classes=num_classes, num_queries=num_queries, dim=dim, heads=heads,
                           encoder_layers=encoder_layers, decoder_layers=decoder_layers, mlp_ratio=mlp_ratio,
                           backbone_channels=tuple(backbone_channels))
        self.num_classes = num_classes
        self.backbone = SmallCNN(channels=tuple(backbone_channels), first_kernel=5, in_channels=3, num_classes=1)  # its 1-class head is unused
        self.input_proj = nn.Conv2d(backbone_channels[-1], dim, kernel_size=1)
        self.encoder = nn.ModuleList(EncoderLayer(dim, heads, mlp_ratio) for _ in range(encoder_layers))
        self.encoder_norm = nn.LayerNorm(dim)
        self.query_pos = nn.Parameter(torch.randn(num_queries, dim))
        self.decoder = nn.ModuleList(DecoderLayer(dim, heads, mlp_ratio) for _ in range(decoder_layers))
        self.decoder_norm = nn.LayerNorm(dim)
        self.class_head = nn.Linear(dim, num_classes + 1)
        self.box_head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(),
                                      nn.Linear(dim, 4))

    def tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, 3, S, S) -> backbone tokens (B, hw, D) and the grid (h, w)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got {tuple(images.shape)}")
        features = self.input_proj(self.backbone.features(images, "conv3"))    # (B, D, h, w)
        b, d, h, w = features.shape
        return features.flatten(2).transpose(1, 2), (h, w)                     # (B, hw, D)

    def heads_of(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder output (B, N, D) -> class logits (B, N, K + 1), boxes (B, N, 4) normalised cxcywh."""
        t = self.decoder_norm(t)
        return self.class_head(t), self.box_head(t).sigmoid()

    def forward(self, images: torch.Tensor) -> dict:
        x, grid = self.tokens(images)                                          # (B, hw, D)
        pos = sine_position_embedding(*grid, x.shape[-1]).to(x)                # (hw, D)
        encoder_attention = []
        for layer in self.encoder:
            x, weights = layer(x, pos)
            encoder_attention.append(weights)
        memory = self.encoder_norm(x)                                          # (B, hw, D)
        t = torch.zeros(len(images), *self.query_pos.shape, device=x.device, dtype=x.dtype)   # (B, N, D)
        outputs, cross_attention = [], []
        for layer in self.decoder:
            t, weights = layer(t, memory, pos, self.query_pos)
            outputs.append(self.heads_of(t))
            cross_attention.append(weights)
        logits, boxes = outputs[-1]
        return {"logits": logits, "boxes": boxes, "aux": outputs[:-1], "cross_attention": cross_attention,
                "encoder_attention": encoder_attention, "grid": grid}


def detr_loss(model: TinyDETR, outputs: dict, targets: list[dict], aux: bool = True) -> dict:
    """The set loss of the last decoder layer plus (``aux``) that of every earlier layer, each matched on its own.
    Returns {"total", and the last layer's "loss_ce", "loss_l1", "loss_giou"}. Chapter 06, D.4."""
    final = set_loss(outputs["logits"], outputs["boxes"], targets, model.num_classes)
    total = final["total"]
    if aux:
        for logits, boxes in outputs["aux"]:
            total = total + set_loss(logits, boxes, targets, model.num_classes)["total"]
    return {**final, "total": total}


# ------------------------------------------------------------------------------------------------ data, training

def shapes_settings() -> dict:
    """The scenes DETR trains and is scored on: ``make_shapes`` keywords (48 x 48, flat background, 1-3 objects).

    Taught in chapter 06, A.1.
    """
    return dict(size=48, max_objects=3, min_radius=5, max_radius=10, background="flat")


EVALUATION_SEED = 20_260_606   # held-out scenes; training seeds are seed * 1_000_003 + step, far from this one


def shapes_batches(batch_size: int, seed: int = 0):
    """Endless batches (images, labels, boxes) of fresh scenes, a new seed per batch. Chapter 06, D.4."""

    return endless_shapes(batch_size, seed=seed, fields=("images", "labels", "boxes"), **shapes_settings())


def training_loss(model: TinyDETR, batch, aux: bool = True) -> torch.Tensor:
    """``fit``'s loss_fn: the DETR loss of a batch (images, labels, boxes) from :func:`shapes_batches`.

    Taught in chapter 06, D.4.
    """
    images, labels, boxes = batch
    targets = scene_targets(labels, boxes, images.shape[-1])
    return detr_loss(model, model(images), targets, aux=aux)["total"]


def parameter_groups(model: TinyDETR, lr: float, backbone_lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups: the backbone at ``backbone_lr``, everything else (the transformer, heads) at ``lr``.

    Taught in chapter 06, D.4.
    """
    backbone = [p for name, p in model.named_parameters() if name.startswith("backbone.")]
    rest = [p for name, p in model.named_parameters() if not name.startswith("backbone.")]
    return [{"params": backbone, "lr": backbone_lr, "weight_decay": weight_decay},
            {"params": rest, "lr": lr, "weight_decay": weight_decay}]


def train_detr(cfg, *, seed: int = 0, show_progress: bool = True, eval_fn=None, desc: str = "DETR on shapes",
               **fit_options):
    """Train a :class:`TinyDETR` with ``cfg`` (``course_lib.zoo.settings("detr_shapes")``); return (model, history).

    Taught in chapter 06, D.4.
    """

    seed_everything(seed)
    dev = device()
    model = TinyDETR(**cfg.model).to(dev)
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg.lr, cfg.backbone_lr, cfg.weight_decay))
    history = fit(model, lambda m, batch: training_loss(m, batch, aux=cfg.aux_loss), shapes_batches(cfg.batch_size, seed),
                  steps=cfg.steps, optimizer=optimizer, device=dev,
                  scheduler=warmup_cosine(optimizer, cfg.warmup_steps, cfg.steps), clip_grad_norm=cfg.clip_grad_norm,
                  eval_fn=eval_fn, eval_every=max(cfg.steps // 5, 1) if eval_fn else None, desc=desc,
                  show_progress=show_progress, **fit_options)
    return model, history


# ------------------------------------------------------------------------------------------------ evaluation

def evaluation_scenes(n: int = 500, seed: int = EVALUATION_SEED) -> dict:
    """The held-out scenes of the bench (``make_shapes`` output with :func:`shapes_settings`). Chapter 06, D.5."""
    return make_shapes(n, seed=seed, **shapes_settings())


@torch.no_grad()
def predict(model: TinyDETR, images: torch.Tensor, batch_size: int = 250) -> list[dict]:
    """Every query's detection, per image: dict(boxes (N, 4) xyxy in pixels (continuous), scores (N,), labels (N,)).

    score = the highest probability among the K real classes, label = its class (DETR's rule: no NMS,
    and a query whose "no object" probability is large simply gets a low score).

    Taught in chapter 06, D.5.
    """
    model.eval()
    dev = next(model.parameters()).device
    size = images.shape[-1]
    results = []
    for start in range(0, len(images), batch_size):
        out = model(images[start:start + batch_size].to(dev))
        probabilities = out["logits"].softmax(-1)[..., :-1].cpu()                 # (B, N, K)
        scores, labels = probabilities.max(-1)
        boxes = cxcywh_to_xyxy(out["boxes"].cpu()) * size
        results += [{"boxes": b, "scores": s, "labels": l} for b, s, l in zip(boxes, scores, labels)]
    return results


def pixel_targets(scenes: dict) -> list[dict]:
    """``make_shapes`` output -> per image dict(boxes (G, 4) continuous xyxy pixels, labels (G,)). Chapter 06, D.5."""

    return [{"boxes": pixel_to_xyxy(b[l >= 0]), "labels": l[l >= 0]} for b, l in zip(scenes["boxes"], scenes["labels"])]


def evaluate_detr(model: TinyDETR, scenes: dict | None = None, score_threshold: float = 0.5) -> dict:
    """mAP@0.5 (VOC all-point, mean over the 3 classes) and the matched-box count on held-out scenes.

    Taught in chapter 06, D.5.
    """
    scenes = evaluation_scenes() if scenes is None else scenes
    predictions, targets = predict(model, scenes["images"]), pixel_targets(scenes)
    result = mean_average_precision(predictions, targets, model.num_classes, iou_threshold=0.5)
    counts = matched_count(predictions, targets, score_threshold=score_threshold, iou_threshold=0.5)
    return {"map50": result["map"], "ap50": result["ap"], **counts}


def random_init_reference(config: dict, scenes: dict | None = None, seed: int = 0) -> dict:
    """:func:`evaluate_detr` of an untrained model with the same configuration: the floor to beat. Chapter 06, D.5."""
    with torch.random.fork_rng():                                 # leaves the caller's random state alone
        torch.manual_seed(seed)
        model = TinyDETR(**config).eval()
    return evaluate_detr(model, scenes)


def evaluate_for_training(n: int = 200) -> callable:
    """An ``eval_fn`` for ``fit``: mAP@0.5 on the first ``n`` held-out scenes. Chapter 06, D.4."""
    scenes = {k: v[:n] for k, v in evaluation_scenes(n).items()}
    return lambda model: {"map50": evaluate_detr(model, scenes)["map50"]}


def describe(config: dict) -> SimpleNamespace:
    """Parameter count of a TinyDETR configuration, by part (for the chapter's table). Chapter 06, D.3."""
    model = TinyDETR(**config)
    parts = {"backbone": model.backbone, "input_proj": model.input_proj, "encoder": model.encoder,
             "decoder": model.decoder, "heads": nn.ModuleList([model.class_head, model.box_head])}
    counts = {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}
    counts["queries"] = model.query_pos.numel()
    counts["total"] = sum(p.numel() for p in model.parameters())
    return SimpleNamespace(**counts)


def schematic():
    """DETR as a picture: CNN backbone -> tokens + sine positions -> transformer encoder -> decoder with N object
    queries -> class and box heads -> Hungarian matching to the ground truth -> set loss. Drawn in chapter 06, C.1.

    Returns the matplotlib Figure.
    """
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(13.6, 5.4, title="DETR: N object queries, matched one-to-one to the ground truth")
    y = 3.9
    image = box(ax, 0.9, y, "image\n(3, 48, 48)", w=1.3, h=0.8, role="data")
    cnn = box(ax, 2.75, y, "CNN backbone\n+ 1x1 conv", w=1.7, h=0.8, role="network")
    tokens = box(ax, 4.75, y, "tokens\n(hw, D) = (144, 64)", w=1.8, h=0.8, role="latent")
    encoder = box(ax, 6.95, y, "transformer\nencoder", w=1.6, h=0.8, role="network")
    decoder = box(ax, 9.2, y, "transformer\ndecoder", w=1.6, h=0.8, role="network")
    arrow(ax, image.right, cnn.left)
    arrow(ax, cnn.right, tokens.left)
    arrow(ax, tokens.right, encoder.left)
    arrow(ax, encoder.right, decoder.left, text="memory")
    pos = box(ax, 5.85, 2.55, "2-D sine positions P\n(to q and k, every layer)", w=2.5, h=0.7, role="operation")
    arrow(ax, pos.top, (encoder.x - 0.4, encoder.y - encoder.h / 2))
    queries = box(ax, 9.2, 2.55, "N object queries E\n(learned, N = 8)", w=2.1, h=0.7, role="condition")
    arrow(ax, queries.top, decoder.bottom)
    cls = box(ax, 11.7, 4.5, "class head: linear\n(N, K + 1), $K$ = no object", w=2.2, h=0.7, role="network")
    bbox = box(ax, 11.7, 3.3, "box head: MLP, sigmoid\n(N, 4) $c_x, c_y, w, h$", w=2.2, h=0.7, role="network")
    arrow(ax, decoder.right, cls.left)
    arrow(ax, decoder.right, bbox.left)
    match = box(ax, 11.7, 1.9, "Hungarian matching\ncost $-\\hat p(c)$ + 5 L1 - 2 GIoU", w=2.6, h=0.8, role="operation")
    arrow(ax, bbox.bottom, match.top)
    arrow(ax, cls.right, match.right, bend=-0.6)
    truth = box(ax, 8.3, 1.0, "ground truth: G <= N\n(class, box), padded\nwith no object", w=2.3, h=0.9, role="data")
    arrow(ax, truth.right, (match.x - match.w / 2, match.y - 0.2))
    loss = box(ax, 11.7, 0.6, "set loss: CE (no object x 0.1)\n+ 5 L1 + 2 (1 - GIoU), every layer",
               w=3.0, h=0.75, role="loss")
    arrow(ax, match.bottom, loss.top)
    note(ax, 3.6, 1.6, "no NMS: the matching rewards exactly one query\nper object and pushes duplicates to no object")
    legend(ax, ["data", "network", "latent", "operation", "condition", "loss"], loc="lower left")
    return fig
