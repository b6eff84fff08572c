# ---
# jupyter:
#   course:
#     time_on_cpu:
#       ci:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-05'
#         seconds: 21
#       cpu:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-05'
#         seconds: 177
#       gpu:
#         note: no GPU where the course was timed; the shipped recipe took 21 min (1,257 s) on 1 thread of the shared 2-core CPU and reached mAP@0.5 0.9996 on 500 held-out scenes
#         seconds: null
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: course
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Set prediction: IoU and GIoU, NMS, YOLO, DETR and MaskFormer
#
# A detector outputs a *set* of objects: boxes with classes, in no particular order and of no fixed number. This
# chapter starts from the geometry of boxes (IoU, GIoU, non-maximum suppression), writes down the YOLOv1 loss,
# which turns the set into a grid, and then DETR's answer: predict a fixed number $N$ of (class, box) pairs and
# match them one-to-one to the ground truth with the Hungarian algorithm. We build a tiny DETR step by step, train
# it on procedurally drawn shapes scenes, score it with mAP@0.5 and look at what each object query attends to.
# MaskFormer and Mask2Former carry the same set loss over to masks.
#
# **Goals.** After this chapter you can
# - compute IoU and GIoU of two boxes, derive why $1 - \operatorname{GIoU}$ still has a gradient when the boxes do not overlap, and
#   implement non-maximum suppression;
# - encode YOLOv1 targets on an $S \times S$ grid and write its five-term loss, knowing which predictor is "responsible";
# - write DETR's matching cost and Hungarian loss with the paper's weights, and check a matcher against brute force;
# - build, train and evaluate a tiny DETR (mAP@0.5, VOC all-point), and read its per-query cross-attention maps;
# - write MaskFormer's mask classification loss (focal + dice) and Mask2Former's masked attention, including the
#   empty-mask case that otherwise produces NaN.
#
# **Prerequisites.** Chapter 01 (cross entropy, `fit`), chapter 03 (`SmallCNN`, receptive fields), chapter 04
# (scaled dot-product attention, multi-head attention, position embeddings).
#
# **Time.** Two study-group sessions of about 75 minutes: boxes, YOLO and the set loss (A-C) in the first, the tiny
# DETR, MaskFormer and the discussion (D, E, G) in the second; the exercises (F) take about 40 minutes at home. The
# plan, what to pre-run and the answers to the discussion questions are in
# [facilitator/06_set_prediction.md](facilitator/06_set_prediction.md).
#
# **Core path.** See it work first, A.1-A.4 (boxes, IoU, GIoU, NMS), B.1-B.3 (YOLO's grid, targets and loss), C.1-C.3
# (matching and the Hungarian loss), D.1, D.3-D.5 (the tiny DETR, its training and its mAP), E.1 (MaskFormer's loss),
# the summary: about 80 min. The optional deep dives, for a second reading: B.4 (a YOLO trained for a few steps),
# D.2 (the 2-D sine positions written out), D.6 (what each object query looks at), E.2 (Mask2Former's masked
# attention and its empty-mask NaN).
#
# **What runs, and how long** (the whole chapter, top to bottom, on a fresh kernel; `ci` with 1 torch thread as the
# test suite runs it, `cpu` with torch's default threads; `make time PROFILE=ci` or `PROFILE=cpu` measures it and
# writes the time here, in the notebook's metadata and in the README):
#
# | profile | what trains | measured |
# |---|---|---|
# | `ci` | a YOLO head for 30 steps; the tiny DETR for 40 steps (batch 16) | 21 s, measured 2026-12-05 on 2 CPU cores, no GPU, otherwise idle |
# | `cpu` | the YOLO head for 300 steps; the tiny DETR for 600 steps (batch 32; 253 s, mAP@0.5 0.63 on 200 held-out scenes) | 2 min 57 s, measured 2026-12-05 on 2 CPU cores, no GPU, otherwise idle |
# | `gpu` | the shipped recipe: 3,000 DETR steps (batch 32) | not measured: no GPU where the course was timed; the shipped recipe took 21 min (1,257 s) on 1 thread of the shared 2-core CPU and reached mAP@0.5 0.9996 on 500 held-out scenes |
#
# Whatever the profile, the figures and the widget use the shipped checkpoint `detr_shapes`.
# Set the profile before starting JupyterLab: `COURSE_PROFILE=ci`, `cpu` or `gpu`.

# %%
import inspect
import itertools
import math

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle
from scipy.optimize import linear_sum_assignment
from torch import nn

import course_lib
import course_lib.core.check
import course_lib.core.checkpointing
import course_lib.core.plotting
import course_lib.core.widgets
import course_lib.topics.boxes
import course_lib.topics.detr
import course_lib.topics.maskformer
import course_lib.topics.yolo
import course_lib.zoo
from course_lib import device, per_profile, profile, seed_everything
from course_lib.core.train import fit, warmup_cosine
from course_lib.data import SHAPE_CLASSES, make_shapes
from course_lib.topics.boxes import (box_area, cxcywh_to_xyxy, giou, iou, nms, pairwise_giou, pairwise_iou,
                                     pixel_to_xyxy, rasterized_iou_giou, xyxy_to_cxcywh)
from course_lib.topics.vit import scaled_dot_product_attention

DEVICE = device()
generator = seed_everything(0)
print(f"profile = {profile()}, device = {DEVICE}, torch threads = {torch.get_num_threads()}")

# %% [markdown]
# ## See it work first
#
# The shipped tiny DETR (`detr_shapes`, 3,000 training steps) on held-out shapes scenes it never saw: each of its 8
# object queries proposes one (class, box) pair, and the boxes drawn in yellow are the queries that are at least 50%
# sure of a real class. No anchors, no grid and no non-maximum suppression: the one-to-one matching of section C taught
# the queries to split the objects among themselves. The dashed cyan boxes are the ground truth. The printout counts the
# objects found (right class and an IoU of at least 0.5 with the true box; IoU, the area of the intersection over the area of the
# union, is A.2's) and gives the mean average precision at IoU 0.5 (mAP@0.5, defined in D.5: 1 when every object is found and
# every correct detection scores above every wrong one).
#
# By the end of this chapter you will have derived and trained this: the box geometry (A), the set loss with its
# Hungarian matching (C), and the transformer that reads the image (D).

# %%
def draw_scene(ax, image, boxes=(), labels=(), scores=None, color="w", lw=1.5, fontsize=7):
    """An image (3, H, W) with continuous xyxy boxes and their class names (and scores)."""
    ax.imshow(image.permute(1, 2, 0).numpy())
    for k, (box, label) in enumerate(zip(boxes, labels)):
        x0, y0, x1, y1 = box.tolist()
        # imshow puts pixel centres on the integers: continuous coordinate x is at x - 0.5
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color=color, lw=lw))
        text = SHAPE_CLASSES[int(label)] + ("" if scores is None else f" {scores[k]:.2f}")
        ax.text(x0 - 0.5, y0 - 1.5, text, color=color, fontsize=fontsize)
    ax.set_xticks([])
    ax.set_yticks([])


shipped_detr = course_lib.zoo.load_shipped("detr_shapes", DEVICE)
first_look = course_lib.topics.detr.evaluation_scenes(12)  # 12 held-out scenes, (12, 3, 48, 48) images
first_predictions = course_lib.topics.detr.predict(shipped_detr, first_look["images"])  # 8 detections per scene
first_targets = course_lib.topics.detr.pixel_targets(first_look)
found = course_lib.topics.boxes.matched_count(first_predictions, first_targets, score_threshold=0.5)
fig, axes = plt.subplots(2, 6, figsize=(14, 5))
for i, ax in enumerate(axes.flat):
    sure = first_predictions[i]["scores"] >= 0.5
    draw_scene(ax, first_look["images"][i], first_predictions[i]["boxes"][sure], first_predictions[i]["labels"][sure],
               first_predictions[i]["scores"][sure], color="y")
    for x0, y0, x1, y1 in first_targets[i]["boxes"].tolist():
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="c", lw=0.8, ls="--"))
fig.suptitle("the shipped tiny DETR: its queries with score >= 0.5 (yellow), the ground truth (cyan, dashed)", fontsize=10)
plt.show()
manifest_map = course_lib.core.checkpointing.read_manifest()["detr_shapes"]["metrics"]["map50"]
print(f"in these 12 scenes: {found['matched']} of {found['total']} objects found (right class, IoU >= 0.5), "
      f"{found['false_positives']} false positive(s); mAP@0.5 on 500 held-out scenes (the manifest): {manifest_map:.4f}")

# %% [markdown]
# ---
# ## A. Boxes, IoU, GIoU and non-maximum suppression
#
# ### A.1 The data, and where the "+ 1" goes
#
# `course_lib.data.make_shapes` draws circles, squares and triangles on a dark background and returns, for every
# object, its class, its mask and its box. The scenes of this chapter are $48 \times 48$ with 1 to 3 objects
# (`course_lib.topics.detr.shapes_settings()`). The boxes are **inclusive pixel** boxes $(x_0, y_0, x_1, y_1)$: the pixel columns
# $x_0, x_0 + 1, \dots, x_1$ all belong to the object, so it is $x_1 - x_0 + 1$ pixels wide. In continuous coordinates,
# where pixel $x$ covers the interval $[x, x + 1)$, the object spans $[x_0, x_1 + 1)$. The course converts once, in
# `course_lib.topics.boxes.pixel_to_xyxy`, to $(x_0, y_0, x_1 + 1, y_1 + 1)$; every area, IoU and target below uses the continuous box.
# A square's mask fills its box exactly, so its pixel count must equal the continuous box's area:

# %%
SHAPES = course_lib.topics.detr.shapes_settings()
print("scene settings:", SHAPES)
scenes = make_shapes(64, seed=1, **SHAPES)
squares = scenes["labels"] == SHAPE_CLASSES.index("square")  # (64, 3)
mask_pixels = scenes["masks"][squares].sum(dim=(1, 2)).float()  # (n_squares,)
continuous_area = box_area(pixel_to_xyxy(scenes["boxes"][squares]))
print(f"{len(mask_pixels)} squares: mask pixels {mask_pixels[:4].tolist()} ..., continuous box areas {continuous_area[:4].tolist()} ...")
assert torch.equal(mask_pixels, continuous_area)
assert not torch.equal(mask_pixels, box_area(scenes["boxes"][squares]))  # the raw inclusive box is one pixel short each way

fig, axes = plt.subplots(1, 6, figsize=(13, 2.5))
for i, ax in enumerate(axes):
    keep = scenes["labels"][i] >= 0
    draw_scene(ax, scenes["images"][i], pixel_to_xyxy(scenes["boxes"][i][keep]), scenes["labels"][i][keep])
fig.suptitle("shapes scenes, 48 x 48, with their continuous boxes", fontsize=10)
plt.show()

# %% [markdown]
# ### A.2 IoU
#
# For axis-aligned boxes $A = [a_{x_0}, a_{x_1}) \times [a_{y_0}, a_{y_1})$ and $B$ likewise, the intersection is again a box: a point is in both
# exactly when its $x$ is in both $x$-intervals and its $y$ in both $y$-intervals, and two intervals intersect in
# $[\max(a_{x_0}, b_{x_0}), \min(a_{x_1}, b_{x_1}))$, empty when that is negative. So
#
# $$
# |A \cap B| = \big(\min(a_{x_1}, b_{x_1}) - \max(a_{x_0}, b_{x_0})\big)^+ \, \big(\min(a_{y_1}, b_{y_1}) - \max(a_{y_0}, b_{y_0})\big)^+ ,
# \qquad (t)^+ = \max(t, 0).
# $$
#
# Inclusion-exclusion counts the union: $|A \cup B| = |A| + |B| - |A \cap B|$ (the intersection was counted twice). Then
#
# $$
# \operatorname{IoU}(A, B) = \frac{|A \cap B|}{|A \cup B|} \in [0, 1],
# $$
#
# 1 exactly when $A = B$, 0 exactly when they do not overlap.
#
# ### A.3 GIoU
#
# As a loss, $1 - \operatorname{IoU}$ has a flaw: when the boxes do not overlap it is the constant 1, so its gradient is zero and a
# predicted box far from its target gets no signal which way to move. Rezatofighi et al. (2019) add a term with the
# smallest box $C$ enclosing both, $C = [\min(a_{x_0}, b_{x_0}), \max(a_{x_1}, b_{x_1})) \times [\min(a_{y_0}, b_{y_0}), \max(a_{y_1}, b_{y_1}))$:
#
# $$
# \operatorname{GIoU}(A, B) = \operatorname{IoU}(A, B) - \frac{|C \setminus (A \cup B)|}{|C|}
# = \operatorname{IoU}(A, B) - \frac{|C| - |A \cup B|}{|C|}, \qquad \mathcal{L}_{\text{GIoU}} = 1 - \operatorname{GIoU}.
# $$
#
# The second form holds because $A \cup B \subseteq C$. Bounds: the subtracted fraction is in $[0, 1)$ (it is 0 when
# $A \cup B$ fills $C$, and it stays below 1 because $|A \cup B| > 0$), so $-1 < \operatorname{GIoU} \le \operatorname{IoU} \le 1$, with equality at 1 only when $A = B$;
# the loss lies in $[0, 2)$. When the boxes are disjoint, $\operatorname{IoU} = 0$ and $\operatorname{GIoU} = |A \cup B| / |C| - 1$, which keeps
# decreasing as they move apart, because $|C|$ grows.
#
# A worked case: $A = [0, 1] \times [0, 1]$ and $B = [1 + g, 2 + g] \times [0, 1]$, a gap $g \ge 0$. Then $|A \cup B| = 2$, $|C| = 2 + g$ and
#
# $$
# \operatorname{GIoU} = \frac{2}{2 + g} - 1 = -\frac{g}{2 + g}, \qquad
# \frac{d\,\operatorname{GIoU}}{dg} = -\frac{(2 + g) - g}{(2 + g)^2} = -\frac{2}{(2 + g)^2} \neq 0,
# $$
#
# while $\operatorname{IoU} = 0$ for every $g \ge 0$ and $d\,\operatorname{IoU} / dg = 0$. Checked by autograd, then the library's `iou` and `giou`
# against a brute force that counts the cells of a fine grid (and against `torchvision.ops`, if it is installed):

# %%
for gap in (0.5, 1.0, 3.0):
    g = torch.tensor(gap, dtype=torch.float64, requires_grad=True)
    a = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    b = torch.stack([1 + g, torch.zeros_like(g), 2 + g, torch.ones_like(g)])
    giou_value = giou(a, b)
    (d_giou,) = torch.autograd.grad(giou_value, g, retain_graph=True)
    d_iou = torch.autograd.grad(iou(a, b), g, allow_unused=True)[0]
    print(f"gap {gap}: IoU {iou(a, b).item():.3f}, dIoU/dg {0.0 if d_iou is None else d_iou.item():.3f}; "
          f"GIoU {giou_value.item():.4f} (formula {-gap / (2 + gap):.4f}), dGIoU/dg {d_giou.item():.4f} "
          f"(formula {-2 / (2 + gap) ** 2:.4f})")
    assert abs(giou_value.item() + gap / (2 + gap)) < 1e-12 and abs(d_giou.item() + 2 / (2 + gap) ** 2) < 1e-12
    assert d_iou is None or d_iou.item() == 0.0

# %%
generator = seed_everything(2)
corner = 10 * torch.rand(200, 2, generator=generator, dtype=torch.float64)
random_a = torch.cat([corner, corner + 0.5 + 6 * torch.rand(200, 2, generator=generator, dtype=torch.float64)], 1)
corner = 10 * torch.rand(200, 2, generator=generator, dtype=torch.float64)
random_b = torch.cat([corner, corner + 0.5 + 6 * torch.rand(200, 2, generator=generator, dtype=torch.float64)], 1)
ours_iou, ours_giou = iou(random_a, random_b), giou(random_a, random_b)  # (200,) each
assert (ours_giou > -1).all() and (ours_giou <= ours_iou + 1e-12).all() and (ours_iou <= 1).all()

try:
    import torchvision.ops

    reference = "torchvision.ops"
    ref_iou = torch.diagonal(torchvision.ops.box_iou(random_a, random_b))
    ref_giou = torch.diagonal(torchvision.ops.generalized_box_iou(random_a, random_b))
    tolerance = 1e-9
except ImportError:
    print("torchvision is not installed: checking against the rasterised brute force instead "
          "(count the centres of 0.01 x 0.01 cells inside A, B and C)")
    reference = "rasterised brute force"
    n_check = per_profile(ci=dict(n=20), cpu=dict(n=200), gpu=dict(n=200)).n
    pairs = [rasterized_iou_giou(a.numpy(), b.numpy(), resolution=0.01) for a, b in zip(random_a[:n_check], random_b[:n_check])]
    ref_iou, ref_giou = torch.tensor(pairs, dtype=torch.float64).T
    ours_iou, ours_giou = ours_iou[:n_check], ours_giou[:n_check]
    tolerance = 5e-3  # the grid's discretisation error
print(f"{len(ref_iou)} random pairs ({(ref_iou == 0).sum().item()} disjoint) against {reference}: "
      f"max |IoU error| {(ours_iou - ref_iou).abs().max():.1e}, max |GIoU error| {(ours_giou - ref_giou).abs().max():.1e}")
assert (ours_iou - ref_iou).abs().max() < tolerance and (ours_giou - ref_giou).abs().max() < tolerance

# %% [markdown]
# The picture the GIoU paper is about: slide a $10 \times 10$ box $B$ horizontally past a fixed $10 \times 10$ box $A$ (and, in
# the right panel, diagonally). IoU is flat at 0 as soon as the boxes separate; GIoU keeps falling towards $-1$.

# %%
offsets = torch.linspace(-30, 30, 601, dtype=torch.float64)
box_a = torch.tensor([0.0, 0.0, 10.0, 10.0], dtype=torch.float64)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
for ax, (name, direction) in zip(axes, [("horizontal", (1.0, 0.0)), ("diagonal", (1.0, 1.0))]):
    shift = offsets[:, None] * torch.tensor(direction * 2, dtype=torch.float64)  # (601, 4)
    moved = box_a + shift
    ax.plot(offsets, iou(box_a, moved), label="IoU")
    ax.plot(offsets, giou(box_a, moved), label="GIoU")
    ax.plot(offsets, 1 - giou(box_a, moved), ":", label="loss 1 - GIoU")
    ax.axhline(0, color="0.7", lw=0.8)
    ax.set(xlabel=f"offset of B ({name}), pixels", title=f"A, B 10 x 10; B moved {name}ly")
    ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ### A.4 Non-maximum suppression
#
# A dense detector (YOLO, and any sliding-window or anchor-based one) fires several boxes on one object. Greedy NMS
# keeps one: **sort by score; take the best remaining box, keep it, and delete every remaining box whose IoU with it
# exceeds a threshold; repeat until none remain.** Equivalently, a box is kept exactly when no *kept* box with a higher
# score overlaps it by more than the threshold. That second sentence is a definition we can code without any loop
# tricks, and check `course_lib.topics.boxes.nms` against on random boxes. (Per-class NMS runs it separately for each class:
# `batched_nms`.)

# %%
def nms_by_definition(boxes, scores, threshold):
    """A box is kept iff no kept box of higher score (ties: lower index first) has IoU > threshold with it."""
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i].item(), i))
    kept = []
    for i in order:
        if all(iou(boxes[i], boxes[j]).item() <= threshold for j in kept):
            kept.append(i)
    return kept


generator = seed_everything(3)
n_trials = per_profile(ci=dict(n=10), cpu=dict(n=100), gpu=dict(n=100)).n
for trial in range(n_trials):
    corner = 20 * torch.rand(40, 2, generator=generator)
    boxes = torch.cat([corner, corner + 2 + 10 * torch.rand(40, 2, generator=generator)], 1)  # (40, 4)
    scores = torch.rand(40, generator=generator)
    for threshold in (0.3, 0.5, 0.7):
        assert nms(boxes, scores, threshold).tolist() == nms_by_definition(boxes, scores, threshold)
print(f"nms == its definition on {n_trials} sets of 40 random boxes, at IoU thresholds 0.3, 0.5, 0.7")
try:
    import torchvision.ops

    assert torch.equal(nms(boxes, scores, 0.5), torchvision.ops.nms(boxes, scores, 0.5))
    print("and == torchvision.ops.nms")
except ImportError:
    print("(torchvision is not installed: no comparison with torchvision.ops.nms)")

# %%
generator = seed_everything(4)
scene = 2
keep = scenes["labels"][scene] >= 0
true_boxes, true_labels = pixel_to_xyxy(scenes["boxes"][scene][keep]), scenes["labels"][scene][keep]
jittered = (true_boxes[:, None, :] + 2.0 * torch.randn(len(true_boxes), 6, 4, generator=generator)).reshape(-1, 4)
jitter_scores = torch.rand(len(jittered), generator=generator)
jitter_labels = true_labels.repeat_interleave(6)
kept = course_lib.topics.boxes.batched_nms(jittered, jitter_scores, jitter_labels, iou_threshold=0.5)
fig, axes = plt.subplots(1, 2, figsize=(7, 3.6))
draw_scene(axes[0], scenes["images"][scene], jittered, jitter_labels, color="y", lw=0.8, fontsize=0)
axes[0].set_title(f"{len(jittered)} candidate boxes", fontsize=9)
draw_scene(axes[1], scenes["images"][scene], jittered[kept], jitter_labels[kept], jitter_scores[kept], color="y")
axes[1].set_title(f"after per-class NMS (IoU > 0.5 suppressed): {len(kept)}", fontsize=9)
plt.show()

# %% [markdown]
# ---
# ## B. YOLOv1: the set as a grid
#
# ### B.1 The output tensor
#
# YOLOv1 (Redmon et al. 2016) divides the image into an $S \times S$ grid. Each cell predicts $B$ boxes, and **each box has its
# own confidence**: 5 numbers $(x, y, w, h, C)$ per box. Each cell also predicts one set of $C$ class probabilities
# $\Pr(\text{class}_c \mid \text{object})$, shared by its $B$ boxes. So the output has
#
# $$
# S \times S \times (5B + C) \text{ numbers}; \qquad \text{paper: } 7 \times 7 \times (5 \cdot 2 + 20) = 7 \times 7 \times 30 ;
# \qquad \text{here: } 6 \times 6 \times (5 \cdot 2 + 3) = 6 \times 6 \times 13 .
# $$
#
# $(x, y)$ is the box centre as an offset inside its cell, in $[0, 1]$; $(w, h)$ are fractions of the whole image. The
# confidence is trained towards $\Pr(\text{object}) \cdot \operatorname{IoU}^{\text{truth}}_{\text{pred}}$, a **product**: 0 in a cell without an object,
# the IoU of the predicted box with the true box in a cell with one. At test time the score of box $j$ for class $c$ is
# $\Pr(\text{class}_c \mid \text{object}) \cdot \Pr(\text{object}) \cdot \operatorname{IoU} = \Pr(\text{class}_c) \cdot \operatorname{IoU}$. Our layout of a cell's 13 numbers, used by
# the target encoder, the loss and the decoder alike: $[x_0, y_0, w_0, h_0, C_0, x_1, y_1, w_1, h_1, C_1, p(1), p(2), p(3)]$.
#
# The whole detector in one picture (`course_lib.topics.yolo.schematic()`); B.2 and B.3 fill in the targets and the loss:

# %%
fig = course_lib.topics.yolo.schematic()
plt.show()

# %% [markdown]
# > **Common confusion:** a common reading is that the confidence "represents IoU **+** probability of an object". It is
# > the product $\Pr(\text{object}) \times \operatorname{IoU}$. Another is "B bounding boxes, **a** confidence score, C class probabilities"
# > per cell: there is one confidence **per box** (5 numbers per box), and one set of class probabilities per cell. Some
# > write $\hat p_i(c)$ for the *true* class probabilities; in this course a hat is always the prediction.
#
# ### B.2 Targets: the responsible cell
#
# The cell that contains an object's centre is **responsible** for it. `course_lib.topics.yolo.encode_targets` writes, in that
# cell, $(x, y, w, h, 1, \text{one-hot class})$: a target tensor $(S, S, 5 + C)$. One target per cell is all YOLOv1 can hold:
# two centres in one cell lose one object (counted below).

# %%
S, B_BOXES, N_CLASSES, IMAGE = 6, 2, 3, SHAPES["size"]
targets_yolo = course_lib.topics.yolo.encode_targets(scenes["labels"], scenes["boxes"], IMAGE, grid=S)  # (64, 6, 6, 8)
print(f"targets {tuple(targets_yolo.shape)}; {int(targets_yolo[..., 4].sum())} objects placed, "
      f"{course_lib.topics.yolo.encode_targets.collisions} lost to a shared cell, of {int(scenes['counts'].sum())}")
fig, axes = plt.subplots(1, 4, figsize=(11, 3))
for i, ax in enumerate(axes):
    keep = scenes["labels"][i] >= 0
    boxes_i = pixel_to_xyxy(scenes["boxes"][i][keep])
    draw_scene(ax, scenes["images"][i], boxes_i, scenes["labels"][i][keep])
    cell = IMAGE / S
    for row, col in torch.nonzero(targets_yolo[i, ..., 4]).tolist():
        ax.add_patch(Rectangle((col * cell - 0.5, row * cell - 0.5), cell, cell, color="r", alpha=0.35))
    centres = xyxy_to_cxcywh(boxes_i)[:, :2]
    ax.plot(centres[:, 0] - 0.5, centres[:, 1] - 0.5, "r+", ms=8)
    for k in range(1, S):
        ax.axhline(k * cell - 0.5, color="w", lw=0.4)
        ax.axvline(k * cell - 0.5, color="w", lw=0.4)
fig.suptitle("the 6 x 6 grid; the responsible cell (red) is the one holding the box centre (+)", fontsize=10)
plt.show()

# %% [markdown]
# ### B.3 The loss
#
# With $\mathbb{1}^{\text{obj}}_{ij} = 1$ when cell $i$ holds an object **and** predictor $j$ is the one (of the $B$) whose current box has
# the highest IoU with it, $\mathbb{1}^{\text{noobj}}_{ij} = 1 - \mathbb{1}^{\text{obj}}_{ij}$, and $\mathbb{1}^{\text{obj}}_i = 1$ when cell $i$ holds an object (0-based indices,
# so the sums run to $S^2 - 1$ and $B - 1$; the paper writes $S^2$ and $B$ as upper limits):
#
# $$
# \begin{aligned}
# \mathcal{L} = \;& \lambda_{\text{coord}} \sum_{i=0}^{S^2-1} \sum_{j=0}^{B-1} \mathbb{1}^{\text{obj}}_{ij} \Big[(x_i - \hat x_{ij})^2 + (y_i - \hat y_{ij})^2\Big]
# + \lambda_{\text{coord}} \sum_{i=0}^{S^2-1} \sum_{j=0}^{B-1} \mathbb{1}^{\text{obj}}_{ij} \Big[\big(\sqrt{w_i} - \sqrt{\hat w_{ij}}\big)^2 + \big(\sqrt{h_i} - \sqrt{\hat h_{ij}}\big)^2\Big] \\
# & + \sum_{i=0}^{S^2-1} \sum_{j=0}^{B-1} \mathbb{1}^{\text{obj}}_{ij} \big(C_{ij} - \hat C_{ij}\big)^2
# + \lambda_{\text{noobj}} \sum_{i=0}^{S^2-1} \sum_{j=0}^{B-1} \mathbb{1}^{\text{noobj}}_{ij} \big(C_{ij} - \hat C_{ij}\big)^2
# + \sum_{i=0}^{S^2-1} \mathbb{1}^{\text{obj}}_{i} \sum_{c=1}^{C} \big(p_i(c) - \hat p_i(c)\big)^2 ,
# \end{aligned}
# $$
#
# with $\lambda_{\text{coord}} = 5$, $\lambda_{\text{noobj}} = 0.5$, the hat on the prediction, and the confidence target $C_{ij} = \operatorname{IoU}(\hat b_{ij}, b_i)$ for the responsible
# predictor and 0 for every other. Why each piece: most cells are empty, so without $\lambda_{\text{noobj}} < 1$ their "no object"
# gradients swamp the few object cells; $\lambda_{\text{coord}} = 5$ raises the box terms against them. The square roots make a
# fixed error in $w$ cost more on a small box than on a large one: $(\sqrt{w} - \sqrt{w + \delta})^2 \approx \delta^2 / (4w)$. Only the
# responsible predictor gets box gradients, so the $B$ predictors of a cell specialise. (Our linear outputs can go
# negative, so the loss uses $\operatorname{sign}(w)\sqrt{|w|}$.)
#
# Two checks of `course_lib.topics.yolo.yolo_loss`: it is 0 on a perfect prediction (predictor 0 of each object cell copies the
# box with confidence 1 = its IoU; all else 0), and on a one-object case it equals the formula evaluated by hand.

# %%
perfect = course_lib.topics.yolo.perfect_prediction(targets_yolo)  # (64, 6, 6, 13)
print(f"loss of the perfect prediction on 64 scenes: {course_lib.topics.yolo.yolo_loss(perfect, targets_yolo).item():.2e}")
assert course_lib.topics.yolo.yolo_loss(perfect, targets_yolo).item() < 1e-6

# one object: continuous box [10, 22) x [20, 30), class triangle, in a 48 x 48 image
one_labels, one_boxes = torch.tensor([[2, -1]]), torch.tensor([[[10.0, 20.0, 21.0, 29.0], [0, 0, 0, 0]]])
one_target = course_lib.topics.yolo.encode_targets(one_labels, one_boxes, IMAGE, grid=S)  # centre (16, 25): row 3, column 2
pred = torch.zeros(1, S, S, 13)
pred[0, 3, 2, :5] = torch.tensor([0.1, 0.2, 0.3, 0.16, 0.7])   # predictor 0, near the object
pred[0, 3, 2, 5:10] = torch.tensor([0.9, 0.9, 0.05, 0.05, 0.4])  # predictor 1, far off
pred[0, 3, 2, 10:] = torch.tensor([0.1, 0.2, 0.6])               # class probabilities
pred[0, 0, 0, 4] = 0.3                                           # a confident predictor in an empty cell

x_t, y_t, w_t, h_t = one_target[0, 3, 2, :4].tolist()  # (0, 0.125, 0.25, 0.2083)
boxes_hat = [cxcywh_to_xyxy(torch.tensor([(2 + p[0]) / S, (3 + p[1]) / S, p[2], p[3]])) for p in (pred[0, 3, 2, :4], pred[0, 3, 2, 5:9])]
truth = torch.tensor([10 / 48, 20 / 48, 22 / 48, 30 / 48])
ious = [iou(b, truth).item() for b in boxes_hat]
j = int(np.argmax(ious))  # the responsible predictor
p_j = pred[0, 3, 2, 5 * j:5 * j + 5].tolist()
other = pred[0, 3, 2, 5 * (1 - j) + 4].item()
by_hand = (5 * ((x_t - p_j[0]) ** 2 + (y_t - p_j[1]) ** 2)
           + 5 * ((math.sqrt(w_t) - math.sqrt(p_j[2])) ** 2 + (math.sqrt(h_t) - math.sqrt(p_j[3])) ** 2)
           + (ious[j] - p_j[4]) ** 2
           + 0.5 * (other ** 2 + 0.3 ** 2)
           + (0 - 0.1) ** 2 + (0 - 0.2) ** 2 + (1 - 0.6) ** 2)
total, terms = course_lib.topics.yolo.yolo_loss(pred, one_target, return_terms=True)
print(f"IoUs of the two predictors with the truth: {ious[0]:.3f}, {ious[1]:.3f} -> predictor {j} is responsible")
print(f"by hand {by_hand:.6f}; yolo_loss {total.item():.6f}; terms", {k: round(v.item(), 4) for k, v in terms.items()})
assert abs(total.item() - by_hand) < 1e-5

# %% [markdown]
# ### B.4 A few training steps (optional deep dive)
#
# YOLOv1 ends in two fully connected layers, so every cell sees the whole image. `course_lib.topics.yolo.TinyYOLO` is fully
# convolutional instead: chapter 03's `SmallCNN` to stride 4, one 3×3 stride-2 convolution to the $6 \times 6$ grid, a 1×1
# convolution to 13 channels. Each output cell's receptive field (chapter 03) is what decides whether it can see
# its whole object; here it covers 8×8-pixel cells and objects up to 21 pixels wide. Training a YOLO well is not this
# chapter's goal; a few steps show the loss going down, and the printout gives each term's mean at the start and at the end.
# The box terms, the no-object confidence and the class term fall; `conf_obj` need not: its target is the IoU of the
# responsible predictor's box, which moves as the boxes improve, so that term can stay flat or even rise while the others fall.

# %%
yolo_cfg = per_profile(ci=dict(steps=30, batch_size=32), cpu=dict(steps=300, batch_size=32), gpu=dict(steps=1_000, batch_size=32))
generator = seed_everything(5)
tiny_yolo = course_lib.topics.yolo.TinyYOLO().to(DEVICE)
yolo_terms = []


def yolo_batches(batch_size, seed=0):
    for step in itertools.count():
        s = make_shapes(batch_size, seed=seed * 1_000_003 + step, **SHAPES)
        yield s["images"], course_lib.topics.yolo.encode_targets(s["labels"], s["boxes"], IMAGE, grid=S)


def yolo_step_loss(model, batch):
    images, target = batch
    total, terms = course_lib.topics.yolo.yolo_loss(model(images), target, return_terms=True)
    yolo_terms.append({k: v.item() for k, v in terms.items()})
    return total


yolo_history = fit(tiny_yolo, yolo_step_loss, yolo_batches(yolo_cfg.batch_size, seed=5), steps=yolo_cfg.steps,
                   optimizer=torch.optim.Adam(tiny_yolo.parameters(), lr=2e-3), device=DEVICE, desc="TinyYOLO")
window = max(yolo_cfg.steps // 10, 3)
first, last = np.mean(yolo_history.losses[:window]), np.mean(yolo_history.losses[-window:])
print(f"YOLO loss: first {window} steps {first:.2f}, last {window} steps {last:.2f}")
assert last < first
fig, ax = plt.subplots(figsize=(7, 3))
for name in yolo_terms[0]:
    ax.plot([t[name] for t in yolo_terms], label=name)
ax.set(yscale="log", xlabel="step", ylabel="per image", title="the five YOLO terms")
ax.legend(fontsize=8, ncol=5)
plt.show()
term_change = {name: (np.mean([t[name] for t in yolo_terms[:window]]), np.mean([t[name] for t in yolo_terms[-window:]]))
               for name in yolo_terms[0]}
print(f"mean per term, first {window} steps -> last {window}: "
      + ", ".join(f"{name} {a:.3f} -> {b:.3f}" for name, (a, b) in term_change.items()))
assert all(term_change[name][1] < term_change[name][0] for name in ("xy", "wh", "conf_noobj", "class"))

# %% [markdown]
# Decoding (`course_lib.topics.yolo.decode`) turns the grid back into boxes: $6 \cdot 6 \cdot 2 = 72$ candidates per image, each scored
# $p(c) \cdot C_j$, thresholded, then per-class NMS. After a handful of steps the boxes are rough; NMS is what removes the
# many near-copies that a grid detector produces. Under `ci` (30 steps) most objects get no box above the score
# threshold yet: the printed count says how many.

# %%
with torch.no_grad():
    decoded = course_lib.topics.yolo.decode(tiny_yolo(scenes["images"][:4].to(DEVICE)).cpu(), IMAGE, score_threshold=0.2)
fig, axes = plt.subplots(1, 4, figsize=(11, 3))
for i, ax in enumerate(axes):
    draw_scene(ax, scenes["images"][i], decoded[i]["boxes"][:6], decoded[i]["labels"][:6], decoded[i]["scores"][:6], color="y")
    ax.set_title(f"{len(decoded[i]['boxes'])} boxes after NMS", fontsize=9)
plt.show()
n_decoded, n_objects = sum(len(d["boxes"]) for d in decoded), int(scenes["counts"][:4].sum())
print(f"{n_decoded} boxes for {n_objects} objects after {yolo_cfg.steps} steps")
if profile() == "ci":
    print("(profile ci: 30 steps are a smoke test; few boxes, often of one class, are expected, not a bug in your code)")

# %% [markdown]
# > **Common confusion:** a common reading is that one- and two-stage detectors differ by RoI pooling. The defining
# > difference is a separate *proposal* stage (selective search, or an RPN) followed by per-region heads; YOLO predicts
# > boxes and classes in one pass over a grid. And YOLOv1 was fast, not more accurate: it made more localisation errors
# > than Fast/Faster R-CNN. A receptive-field argument ("is each output cell's view large enough?") matters for the
# > fully convolutional successors (v2 on); v1's fully connected layers already see everything.
#
# ---
# ## C. DETR's set loss: Hungarian matching
#
# ### C.1 Why a matching
#
# DETR (Carion et al. 2020) predicts a fixed number $N$ of pairs $\hat y_i = (\hat p_i, \hat b_i)$: a distribution over $K + 1$ classes
# (the extra class $\varnothing$ is "no object") and a box $\hat b_i \in [0, 1]^4$ in normalised $(c_x, c_y, w, h)$. The ground truth is a set of
# $G \le N$ objects, padded with $\varnothing$ to $N$. A set has no order, so a loss that compares prediction $i$ with target $i$ would
# punish the network for listing the right objects in another order. DETR first finds the best one-to-one assignment
# $\hat\sigma$ of predictions to targets,
#
# $$
# \hat\sigma = \operatorname*{arg\,min}_{\sigma \in \mathfrak{S}_N} \sum_{i=1}^{N} \mathcal{L}_{\text{match}}\big(y_i, \hat y_{\sigma(i)}\big), \qquad
# \mathcal{L}_{\text{match}}(y_i, \hat y_j) = \mathbb{1}_{\{c_i \neq \varnothing\}} \Big[-\lambda_{\text{class}}\, \hat p_j(c_i)
# + \lambda_{L1} \lVert b_i - \hat b_j \rVert_1 + \lambda_{\text{giou}} \big(-\operatorname{GIoU}(b_i, \hat b_j)\big)\Big],
# $$
#
# with the paper's weights $\lambda_{\text{class}} = 1$, $\lambda_{L1} = 5$, $\lambda_{\text{giou}} = 2$ (in the official code, `set_cost_class`, `set_cost_bbox`, `set_cost_giou`).
# The padded $\varnothing$ targets cost nothing wherever they go, so only a $N \times G$ cost matrix matters: the best way to give
# each of the $G$ objects its own prediction. The class term uses the **probability** $\hat p_j(c_i)$, not its logarithm: on the same scale
# as the box terms, and bounded. The **Hungarian algorithm** finds $\hat\sigma$ in $O(N^3)$ instead of trying all $N!/(N - G)!$ injections;
# `scipy.optimize.linear_sum_assignment` solves the same problem (with a shortest-augmenting-path variant of it, rectangular
# matrices included), as DETR's official code does.
#
# The whole of DETR in one picture (`course_lib.topics.detr.schematic()`): this section builds the matching and the
# loss at its bottom right, section D the network that produces the $N$ predictions.

# %%
fig = course_lib.topics.detr.schematic()
plt.show()

# %% [markdown]
# ### C.2 The matcher against brute force

# %%
generator = seed_everything(6)
for n_pred, n_true in [(3, 3), (5, 2), (6, 3), (7, 4), (6, 6)]:
    for _ in range(5):
        cost = torch.randn(n_pred, n_true, generator=generator)
        rows, cols = course_lib.topics.detr.hungarian_match(cost)
        assignment, best = course_lib.topics.detr.brute_force_match(cost)
        assert abs(cost[rows, cols].sum().item() - best) < 1e-5 and torch.equal(rows[torch.argsort(cols)], assignment)
    n_maps = math.perm(n_pred, n_true)
    print(f"N = {n_pred}, G = {n_true}: Hungarian == brute force over all {n_maps} injections (5 random cost matrices)")

# %% [markdown]
# > **Common confusion:** `linear_sum_assignment` returns `(rows, cols)`: prediction `rows[k]` goes with target `cols[k]`, and the
# > pairs come sorted by **row**. The prediction for target $t$ is therefore `rows[argsort(cols)][t]`, not `rows[cols][t]`, a
# > common bug that is right only when `cols` happens to be sorted. The check above compares exactly that inversion with
# > brute force.
#
# The cost itself, `course_lib.topics.detr.matching_cost`, term by term, for the targets of a real scene and $N = 8$ random
# predictions (random logits; random boxes in normalised cxcywh), so the matched pairs are whatever fits least badly:

# %%
detr_cfg = course_lib.zoo.settings("detr_shapes")
generator = seed_everything(7)
scene_targets = course_lib.topics.detr.scene_targets(scenes["labels"], scenes["boxes"], IMAGE)
random_logits = 2 * torch.randn(1, 8, 4, generator=generator)  # (B, N, K + 1)
random_boxes = torch.cat([0.15 + 0.7 * torch.rand(1, 8, 2, generator=generator),
                          0.1 + 0.3 * torch.rand(1, 8, 2, generator=generator)], -1)  # (B, N, 4)
out = {"logits": random_logits, "boxes": random_boxes}
logits0, boxes0, target0 = out["logits"][0], out["boxes"][0], scene_targets[0]
cost = course_lib.topics.detr.matching_cost(logits0, boxes0, target0["labels"], target0["boxes"])  # (N, G)
class_term = -logits0.softmax(-1)[:, target0["labels"]]
l1_term = (boxes0[:, None, :] - target0["boxes"][None, :, :]).abs().sum(-1)
giou_term = -pairwise_giou(cxcywh_to_xyxy(boxes0), cxcywh_to_xyxy(target0["boxes"]))
assert torch.allclose(cost, 1 * class_term + 5 * l1_term + 2 * giou_term, atol=1e-6)
rows, cols = course_lib.topics.detr.hungarian_match(cost)
fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
for ax, (name, matrix) in zip(axes, [("-p(c)", class_term), ("L1", l1_term), ("-GIoU", giou_term), ("cost = 1, 5, 2 weighted", cost)]):
    shown = ax.imshow(matrix.numpy(), cmap="viridis", aspect="auto")
    fig.colorbar(shown, ax=ax, fraction=0.05)
    ax.plot(cols, rows, "rs", mfc="none", ms=14, mew=2)
    ax.set(xlabel="target j", ylabel="query i", title=name, xticks=range(len(target0["labels"])))
fig.suptitle("matching cost of random predictions against scene 0; red squares: the Hungarian matching", fontsize=10)
plt.show()

# %% [markdown]
# ### C.3 The Hungarian loss
#
# With $\hat\sigma$ fixed (no gradient flows through the matching), the loss is
#
# $$
# \mathcal{L}_{\text{Hungarian}} = \sum_{i=1}^{N} \Big[-w_{c_i} \log \hat p_{\hat\sigma(i)}(c_i)
# + \mathbb{1}_{\{c_i \neq \varnothing\}} \big(\lambda_{L1} \lVert b_i - \hat b_{\hat\sigma(i)} \rVert_1 + \lambda_{\text{giou}} (1 - \operatorname{GIoU}(b_i, \hat b_{\hat\sigma(i)}))\big)\Big],
# \qquad w_{\varnothing} = 0.1,\; w_{c} = 1 \text{ otherwise}.
# $$
#
# Most of the $N$ queries are matched to $\varnothing$; the weight 0.1 on their log-probability (the official code's `eos_coef`) keeps
# "no object" from dominating the class loss. In the official code, and in `course_lib.topics.detr.set_loss`, the cross entropy is the
# class-weighted **mean** over all queries of the batch (what `F.cross_entropy(..., weight=w)` computes: $\sum_i w_{c_i} \ell_i / \sum_i w_{c_i}$), and
# the L1 and GIoU sums are divided by the number of target boxes in the batch. The same loss is applied to the output of
# every decoder layer (auxiliary losses, each layer matched on its own).
#
# Two checks: the class term against that formula written out, and **permutation invariance**: shuffling the queries
# leaves the loss unchanged (the matching follows the shuffle), which a loss without matching would fail.

# %%
loss = course_lib.topics.detr.set_loss(out["logits"], out["boxes"], scene_targets[:1], num_classes=3)
target_classes = torch.full((len(logits0),), 3)
target_classes[rows] = target0["labels"][cols]
weights = torch.where(target_classes == 3, 0.1, 1.0)
per_query = -logits0.log_softmax(-1)[torch.arange(len(logits0)), target_classes]
ce_by_hand = (weights * per_query).sum() / weights.sum()
l1_by_hand = (boxes0[rows] - target0["boxes"][cols]).abs().sum() / len(cols)
giou_by_hand = (1 - giou(cxcywh_to_xyxy(boxes0[rows]), cxcywh_to_xyxy(target0["boxes"][cols]))).sum() / len(cols)
print({k: round(v.item(), 5) for k, v in loss.items()})
assert torch.allclose(loss["loss_ce"], ce_by_hand, atol=1e-6) and torch.allclose(loss["loss_l1"], l1_by_hand, atol=1e-6)
assert torch.allclose(loss["loss_giou"], giou_by_hand, atol=1e-6)

shuffle = torch.randperm(len(logits0), generator=torch.Generator().manual_seed(0))
shuffled = course_lib.topics.detr.set_loss(out["logits"][:, shuffle], out["boxes"][:, shuffle], scene_targets[:1], num_classes=3)
def order_based_l1(boxes):
    """What a loss without matching would do: compare query k with target k."""
    return F.l1_loss(boxes[0, :len(cols)], target0["boxes"])


print(f"set loss {loss['total'].item():.4f}, with the queries shuffled {shuffled['total'].item():.4f}; "
      f"an order-based L1 {order_based_l1(out['boxes']).item():.4f}, with the queries shuffled "
      f"{order_based_l1(out['boxes'][:, shuffle]).item():.4f}")
assert torch.allclose(loss["total"], shuffled["total"], atol=1e-5)

# %% [markdown]
# > **Common confusion:** DETR's heads are often described as "FFN (just Linear)" and its class loss as an
# > ordinary cross entropy. The class head is linear, but the box head is a **3-layer MLP** with ReLU and a sigmoid on the output;
# > the class loss down-weights $\varnothing$ by 0.1. And the positional encoding is added to the queries and keys of
# > **every** attention layer, in the encoder (fixed 2-D sines) as well as in the decoder (the learned query
# > positions), not once at the input as in ViT.
#
# ---
# ## D. A tiny DETR, step by step
#
# The model at the scale of our scenes (the paper's numbers in brackets):
#
# | part | here | DETR (ResNet-50) |
# |---|---|---|
# | backbone | chapter 03's `SmallCNN` (16, 32, 64 channels) to stride 4: a $12 \times 12$ map | ResNet-50, stride 32, 2048 channels |
# | projection | 1×1 conv to $D = 64$ | 1×1 conv to $D = 256$ |
# | encoder | 2 layers, 4 heads, MLP 128 | 6 layers, 8 heads, FFN 2048 |
# | decoder | 3 layers, $N = 8$ queries | 6 layers, $N = 100$ queries |
# | heads | linear to $K + 1 = 4$; MLP(64, 64) to 4, sigmoid | linear to 92; MLP(256, 256) to 4, sigmoid |
# | layer norm | pre-norm (LayerNorm before each sub-layer) | post-norm (after each residual sum) |
#
# ### D.1 Tokens from the backbone

# %%
model = course_lib.topics.detr.TinyDETR(**detr_cfg.model).eval()  # the library model: we reuse its weights below
images = scenes["images"][:4]  # (4, 3, 48, 48)
with torch.no_grad():
    feature_map = model.backbone.features(images, "conv3")  # (4, 64, 12, 12): SmallCNN's last stage
    projected = model.input_proj(feature_map)  # (4, D, 12, 12)
    tokens = projected.flatten(2).transpose(1, 2)  # (4, 144, D): one token per position, row-major
print(f"images {tuple(images.shape)} -> SmallCNN conv3 {tuple(feature_map.shape)} -> 1x1 conv {tuple(projected.shape)} "
      f"-> tokens {tuple(tokens.shape)}")

# %% [markdown]
# ### D.2 Two-dimensional sine positions (optional deep dive)
#
# Attention is permutation-equivariant: without positions the encoder could not tell where a token came from. DETR
# uses a fixed embedding. Split the $D$ channels in two halves: the first encodes the row $y$, the second the column $x$.
# With the coordinate normalised to $u \in (0, 2\pi]$ ($u = 2\pi (r + 1) / h$ for row $r$ of $h$), and $D' = D / 2$, channel pair $(2k, 2k + 1)$ of a half is
#
# $$
# \big(\sin(u / T^{2k / D'}),\; \cos(u / T^{2k / D'})\big), \qquad k = 0, \dots, D'/2 - 1, \quad T = 10\,000 ,
# $$
#
# a geometric ladder of wavelengths from $2\pi$ to about $2\pi T$. The embedding is added to the queries and keys of every attention
# layer, and never to the values. Written out with loops, against `course_lib.topics.detr.sine_position_embedding`:

# %%
def my_sine_position(height, width, dim, temperature=10_000.0):
    """(height * width, dim): rows first half, columns second half, (sin, cos) pairs of decreasing frequency."""
    half = dim // 2
    pos = torch.zeros(height, width, dim)
    for r in range(height):
        for c in range(width):
            u_y, u_x = 2 * math.pi * (r + 1) / height, 2 * math.pi * (c + 1) / width
            for k in range(half // 2):
                wavelength = temperature ** (2 * k / half)
                pos[r, c, 2 * k], pos[r, c, 2 * k + 1] = math.sin(u_y / wavelength), math.cos(u_y / wavelength)
                pos[r, c, half + 2 * k], pos[r, c, half + 2 * k + 1] = math.sin(u_x / wavelength), math.cos(u_x / wavelength)
    return pos.reshape(height * width, dim)


my_pos = my_sine_position(12, 12, 64)
assert torch.allclose(my_pos, course_lib.topics.detr.sine_position_embedding(12, 12, 64), atol=1e-5)
similarity = F.normalize(my_pos, dim=-1) @ F.normalize(my_pos, dim=-1).T  # (144, 144)
fig, axes = plt.subplots(1, 5, figsize=(13, 2.6))
for ax, channel in zip(axes[:3], (0, 6, 33)):
    ax.imshow(my_pos[:, channel].reshape(12, 12), cmap="RdBu")
    ax.set_title(f"channel {channel} ({'row' if channel < 32 else 'column'} half)", fontsize=9)
for ax, token in zip(axes[3:], (0, 6 * 12 + 5)):
    ax.imshow(similarity[token].reshape(12, 12), cmap="viridis")
    ax.set_title(f"cosine to the position of token {token}", fontsize=9)
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
plt.show()

# %% [markdown]
# The cosine maps show that nearby positions embed alike: a property of the table, not attention (no image enters it).
#
# ### D.3 Attention with separate queries, keys and values
#
# Chapter 04's `MultiHeadAttention` computes $q, k, v$ from one input. DETR needs two things it cannot do: add positions
# to $q$ and $k$ but not to $v$, and let the object queries attend to the image tokens (**cross-attention**: queries from
# one sequence, keys and values from another). Both come from the same `scaled_dot_product_attention` of chapter 04,
# fed with three separate projections: $\operatorname{Attn}(X_q, X_k, X_v) = \operatorname{softmax}\big((X_q W_q)(X_k W_k)^\top / \sqrt{D_h}\big)\, X_v W_v$ per head.
#
# With $P$ the sine positions, $E \in \mathbb{R}^{N \times D}$ the learned query positions ("object queries"), and pre-norm layers:
#
# $$
# \text{encoder: } x \leftarrow x + \operatorname{Attn}(\operatorname{LN}(x) + P, \operatorname{LN}(x) + P, \operatorname{LN}(x)), \quad x \leftarrow x + \operatorname{MLP}(\operatorname{LN}(x));
# $$
#
# $$
# \text{decoder: } t \leftarrow t + \operatorname{Attn}(\operatorname{LN}(t) + E, \operatorname{LN}(t) + E, \operatorname{LN}(t)), \quad
# t \leftarrow t + \operatorname{Attn}(\operatorname{LN}(t) + E, m + P, m), \quad t \leftarrow t + \operatorname{MLP}(\operatorname{LN}(t)),
# $$
#
# where $m$ is the encoder's output ("memory") and $t$ starts at 0: before the first layer, the queries differ only by $E$.
# After every decoder layer, a shared LayerNorm and the two heads give a prediction (the auxiliary outputs).

# %%
def my_attention(module, x_q, x_k, x_v):
    """Multi-head attention of x_q (B, N_q, D) over x_k, x_v (B, N_k, D) with module's weights: (B, N_q, D), (B, H, N_q, N_k)."""
    b, n_q, d = x_q.shape
    heads = module.heads

    def split(x):  # (B, N, D) -> (B, heads, N, D_h)
        return x.reshape(b, -1, heads, d // heads).transpose(1, 2)

    out, weights = scaled_dot_product_attention(split(module.q(x_q)), split(module.k(x_k)), split(module.v(x_v)))
    return module.proj(out.transpose(1, 2).reshape(b, n_q, d)), weights


def my_encoder_layer(layer, x, pos):
    h = layer.norm1(x)
    x = x + my_attention(layer.attn, h + pos, h + pos, h)[0]
    return x + layer.mlp(layer.norm2(x))


def my_decoder_layer(layer, t, memory, pos, query_pos):
    h = layer.norm1(t)
    t = t + my_attention(layer.self_attn, h + query_pos, h + query_pos, h)[0]  # queries talk to each other
    attended, cross_weights = my_attention(layer.cross_attn, layer.norm2(t) + query_pos, memory + pos, memory)
    t = t + attended  # queries read the image
    return t + layer.mlp(layer.norm3(t)), cross_weights


def my_detr_forward(model, images):
    """The whole model with the library's weights: per decoder layer (logits (B, N, K+1), boxes (B, N, 4)), cross-attention."""
    x = model.input_proj(model.backbone.features(images, "conv3"))  # (B, D, h, w)
    b, d, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)  # (B, hw, D)
    pos = my_sine_position(h, w, d)  # (hw, D)
    for layer in model.encoder:
        x = my_encoder_layer(layer, x, pos)
    memory = model.encoder_norm(x)
    t = torch.zeros(b, *model.query_pos.shape)  # (B, N, D)
    predictions, crosses = [], []
    for layer in model.decoder:
        t, weights = my_decoder_layer(layer, t, memory, pos, model.query_pos)
        normed = model.decoder_norm(t)
        predictions.append((model.class_head(normed), model.box_head(normed).sigmoid()))
        crosses.append(weights)
    return predictions, crosses


with torch.no_grad():
    my_predictions, my_crosses = my_detr_forward(model, images)
    library_out = model(images)
assert torch.allclose(my_predictions[-1][0], library_out["logits"], atol=1e-5)
assert torch.allclose(my_predictions[-1][1], library_out["boxes"], atol=1e-6)
assert all(torch.allclose(mine[0], lib[0], atol=1e-5) for mine, lib in zip(my_predictions[:-1], library_out["aux"]))
assert all(torch.allclose(mine, lib, atol=1e-6) for mine, lib in zip(my_crosses, library_out["cross_attention"]))
print("step-by-step build == course_lib.topics.detr.TinyDETR (class logits, boxes, auxiliary outputs, cross-attention)")
print(f"outputs: logits {tuple(library_out['logits'].shape)}, boxes {tuple(library_out['boxes'].shape)}, "
      f"{len(library_out['aux'])} auxiliary outputs, cross-attention {len(my_crosses)} x {tuple(my_crosses[0].shape)}")
print("parameters:", vars(course_lib.topics.detr.describe(detr_cfg.model)))

# %% [markdown]
# ### D.4 Training
#
# `course_lib.zoo.detr_shapes` made the shipped checkpoint; its settings and the training function:

# %%
print(inspect.getsource(course_lib.zoo.detr_shapes.settings))
print(inspect.getsource(course_lib.topics.detr.train_detr))

# %% [markdown]
# DETR is known to converge slowly (the paper trains for 300-500 epochs). Four things make it train in minutes here:
# few queries (8 for at most 3 objects), the auxiliary losses on every decoder layer, a learning rate of $10^{-3}$ for the
# transformer (4 times the backbone's) with warm-up and cosine decay, and data that never repeats: every batch is 32
# fresh scenes. The same steps, with the active profile's settings, recording the three loss terms of the last layer:

# %%
cfg = course_lib.zoo.settings("detr_shapes")
print({k: v for k, v in vars(cfg).items() if k != "model"})
generator = seed_everything(0)
detr_model = course_lib.topics.detr.TinyDETR(**cfg.model).to(DEVICE)
optimizer = torch.optim.AdamW(course_lib.topics.detr.parameter_groups(detr_model, cfg.lr, cfg.backbone_lr, cfg.weight_decay))
detr_terms = []


def detr_step_loss(model, batch):
    images_b, labels_b, boxes_b = batch
    targets_b = course_lib.topics.detr.scene_targets(labels_b.cpu(), boxes_b.cpu(), images_b.shape[-1])
    losses = course_lib.topics.detr.detr_loss(model, model(images_b), targets_b, aux=cfg.aux_loss)
    detr_terms.append({k: losses[k].item() for k in ("loss_ce", "loss_l1", "loss_giou")})
    return losses["total"]


eval_scenes = {k: v[:per_profile(ci=dict(n=100), cpu=dict(n=200), gpu=dict(n=200)).n]
               for k, v in course_lib.topics.detr.evaluation_scenes(200).items()}
detr_history = fit(detr_model, detr_step_loss, course_lib.topics.detr.shapes_batches(cfg.batch_size, seed=0), steps=cfg.steps,
                   optimizer=optimizer, device=DEVICE, scheduler=warmup_cosine(optimizer, cfg.warmup_steps, cfg.steps),
                   clip_grad_norm=cfg.clip_grad_norm, desc="tiny DETR on shapes",
                   eval_fn=lambda m: {"map50": course_lib.topics.detr.evaluate_detr(m, eval_scenes)["map50"]},
                   eval_every=max(cfg.steps // 5, 1))
print(f"after {cfg.steps} steps ({detr_history.wall_time_s:.0f} s): mAP@0.5 on {len(eval_scenes['images'])} held-out scenes "
      f"{detr_history.last_eval()['map50']:.3f}")
if profile() == "ci":
    print("(profile ci: 40 steps of batch 16 are a smoke test; an mAP@0.5 near 0, like an untrained model's, is expected "
          "here, not a bug in your code. Under cpu, 600 steps reach about 0.6; D.5 scores the shipped model.)")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.3))
course_lib.core.plotting.plot_losses(detr_history, smooth=10, ax=axes[0], title="total loss, summed over the 3 decoder layers",
                                labels=["train, 10-step mean"])
for name in detr_terms[0]:
    axes[1].plot([t[name] for t in detr_terms], label=name, alpha=0.8)
axes[1].set(yscale="log", xlabel="step", title="last layer's terms (unweighted)")
axes[1].legend(fontsize=8)
plt.show()

# %% [markdown]
# ### D.5 The shipped model and its number: mAP@0.5
#
# **Average precision.** Sort all detections of one class over the data set by score. After the $k$-th, precision is
# $p_k = \mathrm{TP}_k / k$ and recall $r_k = \mathrm{TP}_k / G_c$, where a detection is a true positive when its best-overlapping ground-truth box of
# that class has IoU $\ge 0.5$ and has not been claimed by a higher-scoring detection ($G_c$ boxes of the class in all).
# The precision-recall curve zig-zags, so VOC (2010 on) first takes its **envelope** $\tilde p(r) = \max_{k:\, r_k \ge r} p_k$, the best
# precision achievable at recall $r$ or more, and integrates it over all recall values ("all-point interpolation"):
#
# $$
# \operatorname{AP} = \int_0^1 \tilde p(r)\, dr = \sum_{k} (r_{k} - r_{k-1})\, \tilde p(r_k), \qquad r_0 = 0 ,
# $$
#
# a sum because $\tilde p$ is a step function that only changes at the recalls $r_k$; recall never reached contributes 0. The
# mAP is the mean over the classes. Checked on a hand-made example: 4 ground-truth boxes, and detections in score
# order TP, FP, TP, TP, FP. Then $r = (0.25, 0.25, 0.5, 0.75, 0.75)$, $p = (1, 0.5, 0.667, 0.75, 0.6)$, the envelope is 1 up to recall 0.25 and
# 0.75 from there to 0.75, so $\operatorname{AP} = 0.25 \cdot 1 + 0.5 \cdot 0.75 = 0.625$. And on random rankings against a brute-force area (the envelope
# evaluated on a fine grid of recall values and averaged):

# %%
hand_recall = np.array([0.25, 0.25, 0.5, 0.75, 0.75])
hand_precision = np.array([1, 1 / 2, 2 / 3, 3 / 4, 3 / 5])
print(f"AP of the hand-made example: {course_lib.topics.boxes.average_precision(hand_recall, hand_precision):.4f} (expected 0.625)")
assert abs(course_lib.topics.boxes.average_precision(hand_recall, hand_precision) - 0.625) < 1e-12

rng = np.random.default_rng(7)
grid_r = np.linspace(0, 1, 20_001)[1:]
for _ in range(per_profile(ci=dict(n=5), cpu=dict(n=30), gpu=dict(n=30)).n):
    hits = rng.random(20) < 0.5
    n_gt = hits.sum() + rng.integers(0, 4)
    tp = np.cumsum(hits)
    recall, precision = tp / n_gt, tp / np.arange(1, 21)
    envelope = np.array([precision[recall >= r].max() if (recall >= r).any() else 0.0 for r in grid_r])
    assert abs(course_lib.topics.boxes.average_precision(recall, precision) - envelope.mean()) < 1e-3
print("average_precision == the brute-force area under the envelope on random rankings")

# %% [markdown]
# DETR needs no NMS: every query gives one detection, scored by its highest real-class probability, and training
# teaches the queries not to duplicate each other (the matching rewards exactly one query per object; duplicates are
# pushed to $\varnothing$). Mostly: exercise 5 counts the duplicates that remain. The shipped model, on held-out scenes
# drawn with a seed training never used, next to an untrained model with the same architecture:

# %%
detr = shipped_detr  # the shipped checkpoint, loaded in "See it work first"
entry = course_lib.core.checkpointing.read_manifest()["detr_shapes"]  # the recipe and the numbers it reached
print("manifest metrics:", entry["metrics"])
n_eval = per_profile(ci=dict(n=200), cpu=dict(n=500), gpu=dict(n=500)).n
held_out = course_lib.topics.detr.evaluation_scenes(n_eval)
shipped = course_lib.topics.detr.evaluate_detr(detr, held_out)
floor = course_lib.topics.detr.random_init_reference(cfg.model, held_out)
print(f"shipped detr_shapes on {n_eval} held-out scenes: mAP@0.5 {shipped['map50']:.3f} "
      f"(AP circle/square/triangle {', '.join(f'{a:.3f}' for a in shipped['ap50'])}); "
      f"{shipped['matched']}/{shipped['total']} boxes found (right class, IoU >= 0.5, score >= 0.5), "
      f"{shipped['false_positives']} false positives")
print(f"untrained model: mAP@0.5 {floor['map50']:.4f}")
assert shipped["map50"] > 0.5 and shipped["map50"] > floor["map50"] + 0.3

# %%
predictions = course_lib.topics.detr.predict(detr, held_out["images"])
targets_px = course_lib.topics.detr.pixel_targets(held_out)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), width_ratios=[1.2, 1])
for c, name in enumerate(SHAPE_CLASSES):
    recall, precision, n_gt = course_lib.topics.boxes.precision_recall(predictions, targets_px, c)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    line = axes[0].plot(recall, precision, alpha=0.4)[0]
    axes[0].step(recall, envelope, where="pre", color=line.get_color(),
                 label=f"{name}: AP {course_lib.topics.boxes.average_precision(recall, precision):.3f}")
axes[0].set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02),
            title="precision-recall (faint) and its envelope, IoU >= 0.5")
axes[0].legend(fontsize=8, loc="lower left")
all_scores = torch.cat([p["scores"] for p in predictions])
axes[1].hist(all_scores.numpy(), bins=40, log=True)
axes[1].set(xlabel="query score (max real-class probability)", ylabel="queries", title="8 queries per scene")
plt.show()

# %%
fig, axes = plt.subplots(2, 6, figsize=(14, 5))
for i, ax in enumerate(axes.flat):
    confident = predictions[i]["scores"] >= 0.5
    draw_scene(ax, held_out["images"][i], predictions[i]["boxes"][confident], predictions[i]["labels"][confident],
               predictions[i]["scores"][confident], color="y")
    keep = held_out["labels"][i] >= 0
    for box in pixel_to_xyxy(held_out["boxes"][i][keep]):
        x0, y0, x1, y1 = box.tolist()
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="c", lw=0.8, ls="--"))
fig.suptitle("the shipped tiny DETR on held-out scenes: queries with score >= 0.5 (yellow), ground truth (cyan dashed)",
             fontsize=10)
plt.show()

# %% [markdown]
# ### D.6 What each query looks at (optional deep dive)
#
# The decoder's cross-attention weights $\operatorname{softmax}(q k^\top / \sqrt{D_h})$ of query $i$ over the $12 \times 12$ image tokens say where that query read the image.
# In the DETR paper these maps concentrate on the object's *extremities* (the borders that decide the box), not its
# middle. Pick a scene, a query and a decoder layer: left, the image with that query's box and class (all confident
# queries faint); middle, its cross-attention (heads averaged) over the image; right, its class distribution.

# %%
widget_images = held_out["images"][:32]
with torch.no_grad():
    widget_out = detr(widget_images.to(DEVICE))
widget_layers = [(widget_out["aux"][k] if k < len(widget_out["aux"]) else (widget_out["logits"], widget_out["boxes"]))
                 for k in range(len(widget_out["cross_attention"]))]
grid_h, grid_w = widget_out["grid"]


def draw_query(axes, image, query, layer):
    logits_l, boxes_l = widget_layers[layer]
    probabilities = logits_l[image].softmax(-1).cpu()  # (N, K + 1)
    boxes_px = cxcywh_to_xyxy(boxes_l[image].cpu()) * IMAGE  # (N, 4)
    scores_q, labels_q = probabilities[:, :-1].max(-1)
    picture = widget_images[image]
    confident = torch.nonzero(scores_q >= 0.5).flatten().tolist()
    draw_scene(axes[0], picture, boxes_px[confident], labels_q[confident], color="0.7", lw=0.8, fontsize=0)
    draw_scene(axes[0], picture, boxes_px[query:query + 1], labels_q[query:query + 1], scores_q[query:query + 1],
               color="r", lw=2, fontsize=8)
    axes[0].set_title(f"scene {image}, query {query}, decoder layer {layer}", fontsize=9)
    attention = widget_out["cross_attention"][layer][image, :, query].mean(0).reshape(grid_h, grid_w).cpu()
    course_lib.core.plotting.overlay_heatmap(picture, attention, ax=axes[1], alpha=0.55)
    x0, y0, x1, y1 = boxes_px[query].tolist()
    axes[1].add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="w", lw=1.5))
    axes[1].set_title(f"cross-attention, heads averaged (max {attention.max():.2f})", fontsize=9)
    names = list(SHAPE_CLASSES) + ["no object"]
    axes[2].barh(names, probabilities[query].numpy(), color=["C0", "C1", "C2", "0.6"])
    axes[2].set(xlim=(0, 1), title="class probabilities")


course_lib.core.widgets.interactive_figure(
    draw_query, ncols=3, figsize=(12, 3.6),
    image=ipywidgets.IntSlider(value=0, min=0, max=len(widget_images) - 1, description="scene"),
    query=ipywidgets.IntSlider(value=int(widget_out["logits"][0].softmax(-1)[:, :-1].max(-1).values.argmax()),
                               min=0, max=cfg.model["num_queries"] - 1, description="query"),
    layer=ipywidgets.IntSlider(value=len(widget_layers) - 1, min=0, max=len(widget_layers) - 1, description="decoder layer"))

# %% [markdown]
# Things to look for: a query that found an object attends to a few tokens on or at the edge of it, and its box and
# class settle over the layers (move the layer slider); a query that predicts "no object" spreads its attention or sits on
# background. Queries also specialise by **region** (the DETR paper's Fig. 7 shows it on COCO): each learned position $E_i$
# tends to claim objects in one part of the image. The centres of the confident detections of each of the 8 queries,
# over the first 300 held-out scenes (all 200 under `ci`), and the spread of those centres within one query against the
# spread over all of them:

# %%
with torch.no_grad():
    all_out = detr(held_out["images"][:300].to(DEVICE))
centres = all_out["boxes"][..., :2].cpu() * IMAGE  # (300, N, 2)
found = all_out["logits"].softmax(-1)[..., :-1].max(-1).values.cpu() >= 0.5  # (300, N)
fig, ax = plt.subplots(figsize=(4.2, 4.2))
for q in range(cfg.model["num_queries"]):
    ax.scatter(centres[found[:, q], q, 0], centres[found[:, q], q, 1], s=5, label=f"query {q}")
ax.set(xlim=(0, IMAGE), ylim=(IMAGE, 0), aspect="equal", title="centres of confident detections, by query")
ax.legend(fontsize=6, markerscale=2, loc="upper right")
plt.show()
all_found = centres[found]  # (detections, 2)
overall_spread = all_found.std(0).norm().item()  # rms distance of all detection centres from their mean, in pixels
per_query = {q: centres[found[:, q], q] for q in range(cfg.model["num_queries"]) if found[:, q].sum() >= 10}
query_spread = np.mean([c.std(0).norm().item() for c in per_query.values()])
print(f"{len(all_found)} confident detections in {len(centres)} scenes; rms spread of their centres {overall_spread:.1f} px over all queries, "
      f"{query_spread:.1f} px within one query (mean over the {len(per_query)} queries with at least 10 detections)")
assert query_spread < 0.7 * overall_spread

# %% [markdown]
# ---
# ## E. Masks as sets: MaskFormer and Mask2Former
#
# ### E.1 Mask classification and its loss
#
# MaskFormer (Cheng, Schwing and Kirillov 2021) keeps DETR's set prediction and replaces the box with a mask. Query $i$
# gives a class distribution $p_i \in \Delta^{K+1}$ and a mask $m_i[h, w] = \sigma\big(\mathcal{E}_{\text{mask}}[:, i]^\top \mathcal{E}_{\text{pixel}}[:, h, w]\big)$, a dot product of the query's mask
# embedding with per-pixel embeddings (`course_lib.topics.maskformer.schematic()`):

# %%
fig = course_lib.topics.maskformer.schematic()
plt.show()

# %% [markdown]
# The ground truth is a set of $G \le N$ (class, binary mask) pairs. The matching cost
# and the loss are DETR's with the box terms replaced by a mask loss:
#
# $$
# \mathcal{C}(i, j) = -p_i(c_j) + \mathcal{L}_{\text{mask}}(m_i, m_j), \qquad
# \mathcal{L} = \sum_{j=1}^{N} \Big[-w_{c_j}\log p_{\hat\sigma(j)}(c_j) + \mathbb{1}_{\{c_j \neq \varnothing\}} \mathcal{L}_{\text{mask}}(m_{\hat\sigma(j)}, m_j)\Big],
# \qquad \mathcal{L}_{\text{mask}} = \lambda_{\text{focal}} \mathcal{L}_{\text{focal}} + \lambda_{\text{dice}} \mathcal{L}_{\text{dice}},
# $$
#
# with the paper's $\lambda_{\text{focal}} = 20$, $\lambda_{\text{dice}} = 1$, and $w_\varnothing = 0.1$ as in DETR. The two mask losses, for predicted probabilities $p$ and a target
# $t \in \{0, 1\}$ per pixel:
#
# $$
# \mathcal{L}_{\text{focal}} = \frac{1}{HW}\sum_{\text{pixels}} -\alpha_t (1 - p_t)^\gamma \log p_t, \quad p_t = \begin{cases} p & t = 1 \\ 1 - p & t = 0 \end{cases}, \quad
# \alpha_t = \begin{cases} \alpha & t = 1 \\ 1 - \alpha & t = 0 \end{cases}, \qquad
# \mathcal{L}_{\text{dice}} = 1 - \frac{2 \sum p\,t + 1}{\sum p + \sum t + 1},
# $$
#
# with $\gamma = 2$, $\alpha = 0.25$. Properties checked below: with $\gamma = 0$ and no $\alpha$ the focal loss is the binary cross entropy
# $-\log p_t$; for $\gamma > 0$ it is smaller on every pixel, by the factor $(1 - p_t)^\gamma \le 1$ that is near 0 on pixels already right (the
# many easy background pixels); the dice loss of a mask with itself (confident logits) is 0, and it is near 1 for
# disjoint masks, whatever their size, because it is a ratio of overlaps.
#
# > **Common confusion:** MaskFormer's focal loss is the per-pixel **sigmoid** focal loss (each pixel a binary problem), and
# > **Mask2Former replaced it by plain BCE**, with weights class 2, BCE 5, dice 5 (and $w_\varnothing = 0.1$); MaskFormer's are
# > 1, focal 20, dice 1. Common bugs in re-implementations: mixing the two (MaskFormer's 20/1 in Mask2Former), wiring the
# > weights to the wrong terms, computing dice on raw **logits** (no sigmoid: the "probabilities" are then unbounded and the
# > loss can go negative), and using class 0 as "no object" while 0 is also a real class. In this course $\varnothing$ is the last
# > index, $K$. Also, MaskFormer needs $N \ge G$: a matching gives each target its own query.

# %%
generator = seed_everything(8)
mask_logits = 4 * torch.randn(5, 48 * 48, generator=generator)
target_bits = (torch.rand(5, 48 * 48, generator=generator) > 0.7).float()
bce = F.binary_cross_entropy_with_logits(mask_logits, target_bits, reduction="none").mean(-1)
focal_0 = course_lib.topics.maskformer.sigmoid_focal_loss(mask_logits, target_bits, alpha=None, gamma=0.0)
focal_2 = course_lib.topics.maskformer.sigmoid_focal_loss(mask_logits, target_bits, alpha=None, gamma=2.0)
assert torch.allclose(focal_0, bce, atol=1e-6) and (focal_2 <= bce).all()
scene_m = next(i for i in range(len(held_out["images"])) if held_out["counts"][i] == 3)  # a scene with 3 objects
object_masks = held_out["masks"][scene_m].float()  # (3, 48, 48)
confident = 30 * (2 * object_masks - 1)  # logits: +30 inside, -30 outside
dice_same = course_lib.topics.maskformer.dice_loss(confident, object_masks)
dice_other = course_lib.topics.maskformer.dice_loss(confident.roll(1, dims=0), object_masks)
print(f"focal(gamma = 0, no alpha) == BCE: {bce.numpy().round(4)}; focal(gamma = 2) = {focal_2.numpy().round(4)}")
print(f"dice of each object mask with itself {dice_same.numpy().round(6)}, with another object's mask {dice_other.numpy().round(4)}")
assert (dice_same < 1e-6).all() and (dice_other > 0.9).all()
dice_on_logits = 1 - (2 * (confident * object_masks).flatten(1).sum(-1) + 1) / (confident.flatten(1).sum(-1) + object_masks.flatten(1).sum(-1) + 1)
print(f"the bug: 'dice' on raw logits of the same perfect masks: {dice_on_logits.numpy().round(3)} (should be 0)")

# %% [markdown]
# A demonstration on a scene: five "predicted" masks made from the true ones (one shifted by 3 pixels, one eroded, one
# dilated) plus two pieces of background, with class logits that are partly wrong. The matcher pairs each object with
# the mask that fits it best; the loss is then CE over all five queries plus the mask losses of the matched pairs.

# %%
generator = seed_everything(9)
true_masks = held_out["masks"][scene_m][:3].float()  # (3, 48, 48)
true_labels = held_out["labels"][scene_m][:3]
eroded = -F.max_pool2d(-true_masks[1:2], 5, stride=1, padding=2)[0]  # (48, 48): min-pooling shrinks the shape
dilated = F.max_pool2d(true_masks[2:3], 3, stride=1, padding=1)[0]  # (48, 48): one pixel wider all round
background = 1 - true_masks.amax(0)  # (48, 48): pixels of no object
corner_block = torch.zeros(48, 48)
corner_block[36:, :12] = 1
top_stripe = torch.zeros(48, 48)
top_stripe[2:8, :] = 1
pred_masks = torch.stack([
    corner_block * background,       # a block of background
    true_masks[0].roll(3, dims=1),   # object 0, shifted 3 pixels right
    dilated,                         # object 2, dilated
    top_stripe * background,         # a stripe of background
    eroded,                          # object 1, eroded
])
pred_mask_logits = 8 * (2 * pred_masks - 1)  # (5, 48, 48)
class_logits = torch.randn(5, 4, generator=generator)
class_logits[1, true_labels[0]] += 2
class_logits[2, true_labels[2]] += 2
class_logits[4, (true_labels[1] + 1) % 3] += 2  # the eroded mask says the wrong class
loss_m = course_lib.topics.maskformer.mask_classification_loss(class_logits, pred_mask_logits, true_labels, true_masks)
rows_m, cols_m = loss_m["matches"]
cost_m = course_lib.topics.maskformer.mask_matching_cost(class_logits, pred_mask_logits, true_labels, true_masks)
assert course_lib.topics.detr.brute_force_match(cost_m)[0].tolist() == rows_m[torch.argsort(cols_m)].tolist()
by_hand_m = (loss_m["loss_ce"] + 20 * course_lib.topics.maskformer.sigmoid_focal_loss(pred_mask_logits[rows_m], true_masks[cols_m]).mean()
             + course_lib.topics.maskformer.dice_loss(pred_mask_logits[rows_m], true_masks[cols_m]).mean())
assert torch.allclose(loss_m["total"], by_hand_m, atol=1e-5)
print(f"matched (query -> object): {dict(zip(rows_m.tolist(), cols_m.tolist()))}; "
      + ", ".join(f"{k} {v.item():.4f}" for k, v in loss_m.items() if k != "matches"))

fig, axes = plt.subplots(2, 6, figsize=(13, 4.8), layout="constrained")
for j in range(3):
    axes[0, j].imshow(true_masks[j], cmap="gray")
    axes[0, j].set_title(f"object {j}: {SHAPE_CLASSES[true_labels[j]]}", fontsize=9)
axes[0, 3].imshow(held_out["images"][scene_m].permute(1, 2, 0))
axes[0, 3].set_title("the scene", fontsize=9)
shown = axes[0, 4].imshow(cost_m.numpy(), cmap="viridis", aspect="auto")
axes[0, 4].plot(cols_m, rows_m, "rs", mfc="none", ms=12, mew=2)
axes[0, 4].set(xlabel="object", ylabel="query", title="cost, matches in red")
fig.colorbar(shown, ax=axes[0, 4], fraction=0.05)
axes[0, 5].axis("off")
for i in range(5):
    p = class_logits[i].softmax(-1)
    partner = {r: c for r, c in zip(rows_m.tolist(), cols_m.tolist())}.get(i)
    axes[1, i].imshow(pred_masks[i], cmap="gray")
    axes[1, i].set_title(f"query {i}: {(list(SHAPE_CLASSES) + ['none'])[p.argmax()]} {p.max():.2f}\n"
                         f"-> {'object ' + str(partner) if partner is not None else 'no object'}", fontsize=8)
axes[1, 5].axis("off")
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
plt.show()

# %% [markdown]
# ### E.2 Mask2Former's masked attention (optional deep dive)
#
# Mask2Former (Cheng et al. 2022) restricts each query's cross-attention to the foreground of the mask the previous
# layer predicted for it:
#
# $$
# X_l = \operatorname{softmax}\big(\mathcal{M}_{l-1} + Q_l K_l^\top\big) V_l + X_{l-1}, \qquad
# \mathcal{M}_{l-1}(i, x, y) = \begin{cases} 0 & \text{if } \sigma\big(\hat m^{(l-1)}_i(x, y)\big) \ge 0.5 \\ -\infty & \text{otherwise,} \end{cases}
# $$
#
# the previous layer's mask logits resized to the resolution of the keys and thresholded at 0.5 (the paper's equation
# omits the scaling; the implementation, standard multi-head attention, divides $QK^\top$ by $\sqrt{D_h}$ as usual). Adding $-\infty$ before the softmax gives those pixels weight exactly $e^{-\infty} = 0$, and the remaining weights
# still sum to 1. The edge case: if query $i$'s mask is empty, its whole row is $-\infty$, and the softmax computes
# $e^{-\infty} / \sum e^{-\infty} = 0 / 0 = \text{NaN}$, which then spreads to every later layer. The official code resets such rows to attend
# everywhere; `course_lib.topics.maskformer.attention_mask(..., fix_empty=True)` does the same.
#
# > **Common confusion:** the sign of a boolean mask. In `torch.nn.MultiheadAttention`, `attn_mask=True` means "may **not**
# > attend"; in `F.scaled_dot_product_attention` and in chapter 04's `scaled_dot_product_attention`, `True` means "may attend".
# > Mask2Former's official code builds `mask.sigmoid() < 0.5` (True = blocked) for the former. And a common reading is
# > that the scale-level embedding is multiplied; it is **added**, $F + e_{\text{pos}} + e_{\text{lvl}}$.
#
# Checks on random tensors: an all-True mask reproduces plain attention (against `F.scaled_dot_product_attention`),
# the weights outside the mask are exactly 0, and the empty row is NaN without the fix and finite with it.

# %%
generator = seed_everything(10)
q_m, k_m, v_m = torch.randn(1, 4, 16, generator=generator), torch.randn(1, 144, 16, generator=generator), torch.randn(1, 144, 16, generator=generator)
everything = torch.full((1, 4, 144), 5.0)
out_all, _ = course_lib.topics.maskformer.masked_attention(q_m, k_m, v_m, everything)
assert torch.allclose(out_all, F.scaled_dot_product_attention(q_m, k_m, v_m), atol=1e-6)
previous = torch.full((1, 4, 144), -5.0)
previous[0, 0, :20] = 5.0  # query 0: 20 pixels on
previous[0, 1, 50:60] = 5.0  # query 1: 10 pixels on
previous[0, 2, ::2] = 5.0  # query 2: every other pixel; query 3: empty
out_broken, w_broken = course_lib.topics.maskformer.masked_attention(q_m, k_m, v_m, previous, fix_empty=False)
out_fixed, w_fixed = course_lib.topics.maskformer.masked_attention(q_m, k_m, v_m, previous)
print("NaN per query, without the fix:", torch.isnan(out_broken[0]).any(-1).tolist())
print("NaN per query, with the fix   :", torch.isnan(out_fixed[0]).any(-1).tolist())
assert torch.isnan(out_broken[0, 3]).all() and not torch.isnan(out_fixed).any()
assert (w_fixed[0, 0, 20:] == 0).all() and (w_fixed[0, 1, :50] == 0).all() and torch.allclose(w_fixed.sum(-1), torch.ones(1, 4))
assert torch.allclose(w_fixed[0, 3], F.softmax(q_m[0, 3] @ k_m[0].T / 4, -1), atol=1e-6)  # the empty query attends everywhere

# %% [markdown]
# The same on the shipped DETR: take the queries and keys its last decoder layer's cross-attention really computed for a
# scene, and use the ground-truth object masks (pooled to the $12 \times 12$ token grid) as the "previous layer's masks" of the
# queries matched to them. Unmasked (left of each pair), a query's attention leaks to other objects and background;
# masked (right), it stays inside its object; the unmatched query's "mask" is empty and, with the fix, it attends everywhere.

# %%
captured = {}
hook = detr.decoder[-1].cross_attn.register_forward_hook(lambda module, inputs, output: captured.update(inputs=inputs))
scene_a = scene_m
with torch.no_grad():
    out_a = detr(held_out["images"][scene_a:scene_a + 1].to(DEVICE))
hook.remove()
attn_module = detr.decoder[-1].cross_attn
query_in, key_in, value_in = captured["inputs"]
split = lambda x: x.reshape(1, -1, attn_module.heads, x.shape[-1] // attn_module.heads).transpose(1, 2)  # (1, H, n, D_h)
q_a, k_a, v_a = split(attn_module.q(query_in)), split(attn_module.k(key_in)), split(attn_module.v(value_in))
targets_a = course_lib.topics.detr.scene_targets(held_out["labels"][scene_a:scene_a + 1], held_out["boxes"][scene_a:scene_a + 1], IMAGE)
rows_a, cols_a = course_lib.topics.detr.match_batch(out_a["logits"].cpu(), out_a["boxes"].cpu(), targets_a)[0]
pooled = F.avg_pool2d(held_out["masks"][scene_a][:3].float()[None], 4)[0].flatten(1)  # (3, 144): fraction of each token inside
mask_logits_a = torch.full((cfg.model["num_queries"], 144), -10.0)
mask_logits_a[rows_a] = torch.where(pooled[cols_a] >= 0.25, 10.0, -10.0)  # matched queries: their object's tokens
with torch.no_grad():
    _, w_plain = scaled_dot_product_attention(q_a, k_a, v_a)
    _, w_masked = course_lib.topics.maskformer.masked_attention(q_a, k_a, v_a, mask_logits_a[None, None].expand(1, attn_module.heads, -1, -1))
assert torch.allclose(w_plain, out_a["cross_attention"][-1].cpu(), atol=1e-6)  # the captured inputs reproduce the model
unmatched = next(q for q in range(cfg.model["num_queries"]) if q not in rows_a.tolist())
shown_queries = rows_a.tolist() + [unmatched]
fig, axes = plt.subplots(1, 2 * len(shown_queries), figsize=(3.0 * len(shown_queries), 2.4))
for n, q in enumerate(shown_queries):
    for m, (name, weights_) in enumerate([("plain", w_plain), ("masked", w_masked)]):
        course_lib.core.plotting.overlay_heatmap(held_out["images"][scene_a], weights_[0, :, q].mean(0).reshape(12, 12), ax=axes[2 * n + m], alpha=0.55)
        axes[2 * n + m].set_title(f"query {q}{' (unmatched)' if q == unmatched else ''}\n{name}", fontsize=8)
plt.show()
inside = mask_logits_a[rows_a] > 0  # (matched queries, 144): the tokens of each query's object
outside_plain, outside_masked = ((w[0][:, rows_a].mean(0) * ~inside).sum(-1) for w in (w_plain, w_masked))
print("share of each matched query's attention (heads averaged) outside its object: plain "
      + ", ".join(f"{v:.2f}" for v in outside_plain) + "; masked " + ", ".join(f"{v:.2f}" for v in outside_masked))
assert outside_masked.max() < 1e-6 and outside_plain.min() > 0.05

# %% [markdown]
# ---
# ## F. Exercises
#
# Each exercise cell below holds a working solution; in the student version it is replaced by a stub. Write your own,
# run the check cell, and reveal the reference only when stuck.
#
# **Exercise 1: GIoU.** Write `my_giou(a, b)` for xyxy boxes of shape $(..., 4)$ (broadcasting), returning $(...)$. Do not
# call `course_lib.topics.boxes`.

# %% tags=["exercise"]
def my_giou(a, b):
    """Generalized IoU of xyxy boxes a, b (..., 4) -> (...)."""
    ### BEGIN SOLUTION
    top_left, bottom_right = torch.maximum(a[..., :2], b[..., :2]), torch.minimum(a[..., 2:], b[..., 2:])
    intersection = (bottom_right - top_left).clamp_min(0).prod(-1)
    area_a, area_b = (a[..., 2:] - a[..., :2]).prod(-1), (b[..., 2:] - b[..., :2]).prod(-1)
    union = area_a + area_b - intersection
    enclosing = (torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])).prod(-1)
    return intersection / union - (enclosing - union) / enclosing
    ### END SOLUTION


# %%
generator = seed_everything(11)
giou_inputs = [(random_a[:50].float(), random_b[:50].float()),
               (torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[5.0, 5, 6, 7]])),  # disjoint
               (random_a[:3, None, :].float(), random_b[None, :4, :].float())]  # broadcast to (3, 4)
course_lib.core.check.check_function(my_giou, course_lib.topics.boxes.giou, giou_inputs)

# %%
course_lib.core.check.show_solution(course_lib.topics.boxes.giou)

# %% [markdown]
# **Exercise 2: NMS.** Write `my_nms(boxes, scores, threshold)` returning the indices of the kept boxes as a `long` tensor,
# in decreasing score. Use `course_lib.topics.boxes.pairwise_iou` if you like.

# %% tags=["exercise"]
def my_nms(boxes, scores, threshold):
    """Greedy NMS: (N, 4), (N,) -> kept indices (P,), best first."""
    ### BEGIN SOLUTION
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    overlaps = pairwise_iou(boxes, boxes)
    kept = []
    while order:
        best = order.pop(0)
        kept.append(best)
        order = [i for i in order if overlaps[best, i] <= threshold]
    return torch.tensor(kept, dtype=torch.long)
    ### END SOLUTION


# %%
generator = seed_everything(12)
nms_inputs = []
for n_boxes, threshold in [(30, 0.5), (60, 0.3), (10, 0.9)]:
    corner = 20 * torch.rand(n_boxes, 2, generator=generator)
    nms_inputs.append((torch.cat([corner, corner + 2 + 10 * torch.rand(n_boxes, 2, generator=generator)], 1),
                       torch.rand(n_boxes, generator=generator), threshold))
course_lib.core.check.check_function(my_nms, nms, nms_inputs)

# %%
course_lib.core.check.show_solution(course_lib.topics.boxes.nms)

# %% [markdown]
# **Exercise 3: DETR's matching cost.** Write `my_matching_cost(logits, boxes, target_labels, target_boxes)`: logits $(N, K+1)$,
# boxes $(N, 4)$ and target boxes $(G, 4)$ in normalised cxcywh, labels $(G,)$; return the $(N, G)$ cost with the paper's weights 1, 5, 2.
# (The check will tell you if you used the log-probability, or forgot to convert to xyxy for the GIoU.)

# %% tags=["exercise"]
def my_matching_cost(logits, boxes, target_labels, target_boxes):
    """-p(c) + 5 L1 - 2 GIoU, predictions by rows, targets by columns: (N, G)."""
    ### BEGIN SOLUTION
    class_cost = -logits.softmax(-1)[:, target_labels]
    l1_cost = (boxes[:, None, :] - target_boxes[None, :, :]).abs().sum(-1)
    giou_cost = -giou(cxcywh_to_xyxy(boxes)[:, None, :], cxcywh_to_xyxy(target_boxes)[None, :, :])
    return class_cost + 5 * l1_cost + 2 * giou_cost
    ### END SOLUTION


# %%
generator = seed_everything(13)
cost_inputs = []
for n_q, n_t in [(8, 3), (5, 1), (4, 4)]:
    centre = 0.2 + 0.6 * torch.rand(n_q + n_t, 2, generator=generator)
    size = 0.05 + 0.3 * torch.rand(n_q + n_t, 2, generator=generator)
    all_boxes = torch.cat([centre, size], 1)
    cost_inputs.append((torch.randn(n_q, 4, generator=generator), all_boxes[:n_q],
                        torch.randint(0, 3, (n_t,), generator=generator), all_boxes[n_q:]))
course_lib.core.check.check_function(my_matching_cost, course_lib.topics.detr.matching_cost, cost_inputs)

# %%
course_lib.core.check.show_solution(course_lib.topics.detr.matching_cost)

# %% [markdown]
# **Exercise 4: the dice loss.** Write `my_dice_loss(mask_logits, target_masks)`: both $(M, H, W)$, the first logits; return
# $(M,)$, $1 - (2\sum p t + 1) / (\sum p + \sum t + 1)$ with $p = \sigma(\text{logits})$.

# %% tags=["exercise"]
def my_dice_loss(mask_logits, target_masks):
    """Dice loss per mask, on probabilities: (M, H, W) x2 -> (M,)."""
    ### BEGIN SOLUTION
    p, t = mask_logits.sigmoid().flatten(1), target_masks.float().flatten(1)
    return 1 - (2 * (p * t).sum(-1) + 1) / (p.sum(-1) + t.sum(-1) + 1)
    ### END SOLUTION


# %%
generator = seed_everything(14)
dice_inputs = [(3 * torch.randn(4, 12, 12, generator=generator), (torch.rand(4, 12, 12, generator=generator) > 0.5).float()),
               (confident, object_masks), (torch.zeros(2, 5, 5), torch.zeros(2, 5, 5))]
course_lib.core.check.check_function(my_dice_loss, course_lib.topics.maskformer.dice_loss, dice_inputs)

# %%
course_lib.core.check.show_solution(course_lib.topics.maskformer.dice_loss)

# %% [markdown]
# **Exercise 5: does the shipped DETR need NMS?** *Predict, then run.* D.5 says DETR needs no non-maximum suppression,
# because the matching rewards exactly one query per object. Test that claim on the shipped model. Before running the
# check cell, write your prediction into `MY_PREDICTION`: of the shipped model's confident detections (score $\ge 0.5$)
# on the first 200 held-out scenes of D.5, how many would per-class NMS at IoU 0.5 (A.4) delete, and would mAP@0.5 go
# `"up"`, `"down"` or stay the `"same"` if NMS were applied to all 8 detections of every scene? Then run the cell and
# explain what you see with the loss of C.3 (what does a duplicate of a matched query cost, compared with a missed object?).

# %% tags=["exercise"]
MY_PREDICTION = None  # your prediction: the number NMS deletes, and "up", "down" or "same"
### BEGIN SOLUTION
MY_PREDICTION = dict(deleted=20, map50="up")
### END SOLUTION

# %%
assert MY_PREDICTION is not None, "write your prediction into MY_PREDICTION in the cell above first, then run this cell"
nms_scenes = {k: v[:200] for k, v in held_out.items()}
nms_targets = course_lib.topics.detr.pixel_targets(nms_scenes)
before_nms = course_lib.topics.detr.predict(detr, nms_scenes["images"])  # 8 detections per scene
after_nms, deleted_sure, sure_total = [], 0, 0
for p in before_nms:
    kept_nms = course_lib.topics.boxes.batched_nms(p["boxes"], p["scores"], p["labels"], iou_threshold=0.5)
    after_nms.append({key: value[kept_nms] for key, value in p.items()})
    sure = p["scores"] >= 0.5
    sure_total += int(sure.sum())
    deleted_sure += int(sure.sum()) - int((p["scores"][kept_nms] >= 0.5).sum())
map_before = course_lib.topics.boxes.mean_average_precision(before_nms, nms_targets, 3)["map"]
map_after = course_lib.topics.boxes.mean_average_precision(after_nms, nms_targets, 3)["map"]
counts_before = course_lib.topics.boxes.matched_count(before_nms, nms_targets)
counts_after = course_lib.topics.boxes.matched_count(after_nms, nms_targets)
print(f"your prediction: {MY_PREDICTION}")
print(f"NMS deletes {deleted_sure} of the {sure_total} confident detections; mAP@0.5 {map_before:.4f} -> {map_after:.4f}; "
      f"objects found {counts_before['matched']}/{counts_before['total']} -> {counts_after['matched']}/{counts_after['total']}; "
      f"false positives {counts_before['false_positives']} -> {counts_after['false_positives']}")
assert counts_after["matched"] == counts_before["matched"] and map_after >= map_before  # NMS deleted only duplicates

# %%
course_lib.core.check.show_solution(
    "NMS deletes a few percent of the confident detections (22 of 417 on these 200 scenes) and nothing it deletes was "
    "needed: every object found before is still found, the false positives drop to 0 and mAP@0.5 goes up a little "
    "(0.9996 to 1.0). So the queries mostly split the objects among themselves, but not perfectly. The loss explains "
    "why: a duplicate query is matched to no object, so it costs only its down-weighted (x 0.1) cross entropy towards "
    "'no object', a small price next to a missed object's full class and box terms; the pressure to remove the last "
    "duplicates is weak. DETR needs no NMS by design, and a small model trained for minutes still gains a little from it.")

# %% [markdown]
# ---
# ## Summary
#
# | key equation | derived in | checked by |
# |---|---|---|
# | $\operatorname{GIoU}(A, B) = \operatorname{IoU}(A, B) - \lvert C \setminus (A \cup B) \rvert / \lvert C \rvert$; for a gap $g$, $d\,\operatorname{GIoU}/dg = -2/(2 + g)^2 \neq 0$ | A.3 | autograd, and a rasterised brute force (or torchvision), in A.3 |
# | greedy NMS: keep a box iff no kept box of higher score overlaps it by more than the threshold | A.4 | its definition on random boxes in A.4 |
# | YOLOv1's five-term loss, confidence target $\Pr(\text{object}) \cdot \operatorname{IoU}$ for the responsible predictor | B.3 | zero on a perfect prediction and the formula by hand in B.3 |
# | $\hat\sigma = \operatorname{arg\,min}_\sigma \sum_i \mathcal{L}_{\text{match}}$, cost $-\hat p(c) + 5 \lVert b - \hat b \rVert_1 - 2 \operatorname{GIoU}$ | C.1 | the Hungarian matcher against brute force in C.2 |
# | the Hungarian loss, $w_\varnothing = 0.1$ | C.3 | the loss written out, and shuffled queries, in C.3 |
# | $\operatorname{AP} = \sum_k (r_k - r_{k-1})\, \tilde p(r_k)$ | D.5 | the hand-made example (0.625) and a brute-force area in D.5 |
# | $\mathcal{L}_{\text{mask}} = 20\, \mathcal{L}_{\text{focal}} + \mathcal{L}_{\text{dice}}$ | E.1 | focal with $\gamma = 0$ equal to the cross entropy, dice of a mask with itself, in E.1 |
#
# **Three things to remember.**
#
# 1. A set has no order. DETR first matches its $N$ predictions one-to-one to the $G$ objects (Hungarian algorithm on
#    $-\hat p(c) + 5\,\text{L1} - 2\,\operatorname{GIoU}$) and only then computes the loss; the matching is what replaces anchors
#    and NMS, and MaskFormer reuses it with masks instead of boxes.
# 2. $1 - \operatorname{IoU}$ is flat at 1 for disjoint boxes; GIoU's enclosing box $C$ gives them a gradient.
# 3. YOLO turns the set into an $S \times S$ grid: the cell holding the centre is responsible, each of its $B$ boxes has its
#    own confidence trained towards $\Pr(\text{object}) \cdot \operatorname{IoU}$, and NMS removes the near-copies a grid produces.

# %% [markdown]
# ---
# ## G. Discussion questions
#
# 1. DETR's matching cost uses $-\hat p(c)$ but its loss uses $-\log \hat p(c)$. What would go wrong in the *matching* with the
#    log-probability of a near-zero class probability? Why does the *loss* want the log?
# 2. The no-object weight is 0.1. Predict what happens to the number of false positives and to recall if it is 1.0, and
#    if it is 0.01. How would you check your prediction with this chapter's code in a few minutes?
# 3. YOLOv1 can detect at most $S^2$ objects and one per cell; DETR at most $N$. Which scenes break each? Count, with
#    `encode_targets.collisions`, how often our scenes would lose an object with $S = 3$.
# 4. DETR needs no NMS, yet the shipped model still makes a few duplicate detections (exercise 5 counts them). Which
#    part of the architecture lets the queries "agree" on who takes which object, and why does the matching loss push them
#    to disagree?
# 5. Masked attention (E.2) removes keys outside the predicted mask. What happens early in training, when the
#    predicted masks are poor? Why might the self-attention among queries that comes next in Mask2Former's layer
#    compensate?
