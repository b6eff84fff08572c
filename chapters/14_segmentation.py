# ---
# jupyter:
#   course:
#     time_on_cpu:
#       ci:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-05'
#         seconds: 10
#       cpu:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-05'
#         seconds: 48
#       gpu:
#         note: the U-Net trains 2,000 steps and the tiny SAM 1,000 from scratch; the shipped checkpoints are loaded as on cpu
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
# # 14 · Segmentation: FCN, U-Net, Mask R-CNN's RoIAlign and a tiny Segment Anything
#
# A detector (chapter 06) says *where* an object is with a box; a segmenter says which pixels belong to it. This chapter
# separates the three segmentation tasks (semantic, instance, panoptic) and their scores (pixel cross entropy, Dice, mIoU,
# panoptic quality), turns a classifier into a fully convolutional network that outputs a map of scores, trains a U-Net
# segmenter on striped shapes scenes against trivial baselines, writes Mask R-CNN's RoIAlign by hand and measures what
# RoI pooling's rounding costs, and ends with Segment Anything at toy scale: a point prompt, three candidate masks and a
# predicted IoU for each, trained on scenes where a point really is ambiguous.
#
# **Goals.** After this chapter you can
# - say what semantic, instance and panoptic segmentation output, and compute pixel cross entropy, Dice, mIoU and
#   $\mathrm{PQ} = \mathrm{SQ} \times \mathrm{RQ}$ by hand and in code;
# - "convolutionalize" a classifier (a fully connected layer is a convolution whose kernel covers the whole feature map) and
#   read its class heat map on a larger canvas;
# - prove that the transposed convolution is the adjoint of the convolution, $\langle \mathrm{conv}(x), y \rangle = \langle x, \mathrm{conv}^\top(y) \rangle$, and use
#   it (initialised bilinear) to upsample scores, with FCN's skip fusion;
# - build a U-Net segmenter (2x2 up-convolution, concatenation, two 3x3 convolutions), train it and beat the trivial baselines
#   by mIoU;
# - implement RoIAlign with bilinear sampling, measure the misalignment RoI pooling's quantisation causes, and write Mask
#   R-CNN's per-class mask loss;
# - explain SAM's prompt encoder, its three candidate masks, its minimum-over-candidates loss and its IoU head.
#
# **Prerequisites.** Chapter 01 (cross entropy, `fit`), chapter 03 (convolutions, pooling, receptive fields, `SmallCNN`),
# chapter 04 (attention), chapter 06 (IoU, boxes, DETR and MaskFormer's mask classification), chapter 11 (the U-Net of the
# diffusion models, for comparison).
#
# **Time.** Two study-group sessions: about 90 minutes for the tasks, the scores, FCN and the U-Net (A to C), about 75
# minutes for Mask R-CNN's RoIAlign, SAM, the summary and the discussion (D, E); the exercises (G) take about 40 minutes at
# home. The plan, what to pre-run and the answers to the discussion questions are in
# [facilitator/14_segmentation.md](facilitator/14_segmentation.md).
#
# **Core path.** See it work first, A.1-A.4, B.1-B.3, C.1-C.4, D.1-D.3, E.1-E.5, the summary and the discussion: about
# 150 min. The optional deep dive F (the semantic, instance and panoptic outputs of the trained U-Net, and MaskFormer's
# view) adds about 15 min; a first reading can skip its text, but run its cells (Run All does).
#
# **What runs, and how long** (the whole chapter, top to bottom, on a fresh kernel; `ci` with 1 torch thread as the
# test suite runs it, `cpu` with torch's default threads; `make time PROFILE=ci` or `PROFILE=cpu` measures it and
# writes the time here, in the notebook's metadata and in the README):
#
# | profile | what changes | measured |
# |---|---|---|
# | `ci` | the U-Net trains 15 steps and the tiny SAM 10 from scratch (far from trained); 100 held-out scenes | 10 s, measured 2026-12-05 on 2 CPU cores, no GPU, otherwise idle |
# | `cpu` | the U-Net trains 400 steps (a real segmenter), the tiny SAM 100; 500 held-out scenes | 48 s, measured 2026-12-05 on 2 CPU cores, no GPU, otherwise idle |
# | `gpu` | the U-Net trains 2,000 steps, the tiny SAM 1,000 | not measured: the U-Net trains 2,000 steps and the tiny SAM 1,000 from scratch; the shipped checkpoints are loaded as on cpu |
#
# The shipped models `seg_unet_shapes` and `sam_shapes` are loaded under every profile, so the numbers of C.4 and E.4 are
# the same everywhere. Set the profile before starting JupyterLab: `COURSE_PROFILE=ci`, `cpu` or `gpu`.

# %%
import time
from types import SimpleNamespace

import ipywidgets
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import course_lib
import course_lib.core.check
import course_lib.core.widgets
import course_lib.topics.cnn
import course_lib.topics.sam
import course_lib.topics.segmentation
from course_lib import per_profile, profile, seed_everything
from course_lib.data import load_mnist, make_shapes
from course_lib.topics import sam
from course_lib.topics.segmentation import (SEGMENT_CLASSES, baselines, bilinear_kernel, box_region_iou,
                                            confusion_matrix, convolutionalize_mnist_classifier, dice_coefficient,
                                            evaluation_scenes, fcn_fuse, instance_map, iou_per_class, linear_as_conv,
                                            mask_head_loss, mask_iou, mean_iou, panoptic_quality, pixel_cross_entropy,
                                            predict_semantic, roi_align, roi_pool, roi_pool_region, scene_segments,
                                            segments_from_semantic, semantic_map, shapes_settings, soft_dice_loss,
                                            unet_valid_sizes, upsample_scores)
from course_lib.zoo import load_shipped

DEVICE = course_lib.device()
generator = seed_everything(0)
cfg = per_profile(ci=dict(unet_steps=15, unet_batch=8, sam_steps=10, sam_batch=8, eval_scenes=100),
                  cpu=dict(unet_steps=400, unet_batch=16, sam_steps=100, sam_batch=16, eval_scenes=500),
                  gpu=dict(unet_steps=2_000, unet_batch=32, sam_steps=1_000, sam_batch=32, eval_scenes=500))
CLASS_COLOURS = torch.tensor([[0.1, 0.1, 0.1], [0.9, 0.3, 0.3], [0.3, 0.8, 0.3], [0.3, 0.5, 1.0]])  # bg, circle, square, tri
print(f"profile = {profile()}, device = {DEVICE}, torch threads = {torch.get_num_threads()}; {cfg}")


def show(ax, picture, title=""):
    """An image (3, H, W) in [0, 1], a class map (H, W) int64 (coloured by class) or a mask (H, W) bool."""
    if picture.ndim == 3:
        ax.imshow(picture.permute(1, 2, 0).clamp(0, 1))
    elif picture.dtype == torch.bool:
        ax.imshow(picture, cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(CLASS_COLOURS[picture])
    ax.set_title(title, fontsize=9)
    ax.axis("off")


# %% [markdown]
# ## See it work first
#
# Two shipped models. Top: a U-Net segmenter labels every pixel of a held-out striped scene as background, circle, square
# or triangle; the printed number is its mean intersection-over-union (mIoU) on held-out scenes, beside what two segmenters
# without learning reach. Bottom: a tiny Segment Anything model gets one point (the cross) on a small shape drawn inside a
# larger one. The point is ambiguous (the small shape, or the whole object?), so the model returns three candidate masks and
# a predicted IoU for each. By the end of this chapter you will have derived and trained this.

# %%
start = time.perf_counter()
unet_shipped = load_shipped("seg_unet_shapes", DEVICE)
held_out = evaluation_scenes(cfg.eval_scenes)                       # images (n, 3, 48, 48), semantic (n, 48, 48)
shipped_pred = predict_semantic(unet_shipped, held_out["images"])   # (n, 48, 48)
shipped_miou = mean_iou(shipped_pred, held_out["semantic"])
trivial = baselines(held_out)
print(f"U-Net mIoU on {cfg.eval_scenes} held-out scenes: {shipped_miou:.3f}; without learning: "
      + ", ".join(f"{k}: {v:.3f}" for k, v in trivial.items()))
assert shipped_miou > max(trivial.values()) + 0.3

sam_shipped = load_shipped("sam_shapes", DEVICE)
prompts = sam.evaluation_prompts(cfg.eval_scenes)
demo = int(prompts["on_inner"].nonzero()[0])                        # the first prompt that sits on an inner shape
masks_demo, ious_demo = sam.predict(sam_shipped, prompts["images"][demo:demo + 1], prompts["points"][demo:demo + 1])
print(f"both models in {time.perf_counter() - start:.1f} s")

fig, axes = plt.subplots(2, 4, figsize=(10, 5.2), layout="constrained")
for j in range(2):
    show(axes[0, 2 * j], held_out["images"][j], f"held-out scene {j}")
    show(axes[0, 2 * j + 1], shipped_pred[j], "U-Net: bg / circle / square / triangle")
show(axes[1, 0], prompts["images"][demo], "a point on a small shape")
axes[1, 0].plot(*prompts["points"][demo].tolist(), "x", color="cyan", ms=10, mew=2)
for k in range(3):
    show(axes[1, k + 1], masks_demo[0, k] > 0, f"candidate {k}: predicted IoU {ious_demo[0, k]:.2f}")
plt.show()

# %% [markdown]
# ---
# ## A. Three tasks and their scores
#
# ### A.1 Semantic, instance and panoptic segmentation
#
# The scenes of this chapter come from `make_shapes` (chapter 06's data) with `background="stripes"`: soft stripes of two
# dark colours at a random angle, so that "the object" is not simply "the pixels that differ from one background colour".
# Every object comes with its class and its mask, so all three targets are free:
#
# - **semantic segmentation**: one class per pixel, $y_u \in \{0, \dots, C - 1\}$ (here 0 = background, then circle, square,
#   triangle). Two circles are one region "circle": the output does not count objects;
# - **instance segmentation**: one mask per *object*, with its class; objects of the same class are separate, pixels of
#   the background ("stuff") are not labelled;
# - **panoptic segmentation** (Kirillov et al. 2019): every pixel gets a class *and* an instance id, unifying the two:
#   countable "things" get one id per object, "stuff" classes (sky, road; here the background) one segment each.

# %%
scenes = make_shapes(4, seed=7, max_objects=3, size=48, min_radius=4, max_radius=11, background="stripes")
assert shapes_settings() == dict(size=48, max_objects=3, min_radius=4, max_radius=11, background="stripes")
semantic = semantic_map(scenes["masks"], scenes["labels"])          # (4, 48, 48): 0 bg, 1 + class
instances = instance_map(scenes["masks"])                           # (4, 48, 48): 0 bg, 1 + object index
fig, axes = plt.subplots(3, 4, figsize=(9, 7), layout="constrained")
for i in range(4):
    show(axes[0, i], scenes["images"][i], f"scene {i}: {int(scenes['counts'][i])} objects")
    show(axes[1, i], semantic[i], "semantic: a class per pixel")
    axes[2, i].imshow(instances[i], cmap="tab10", vmin=0, vmax=9)
    axes[2, i].set_title("instance ids (panoptic: + class)", fontsize=9)
    axes[2, i].axis("off")
plt.show()
for i in range(4):
    for k in range(int(scenes["counts"][i])):                       # the maps agree with the masks they came from
        assert (semantic[i][scenes["masks"][i, k]] == scenes["labels"][i, k] + 1).all()
print("class pixels in these scenes (bg, circle, square, triangle):", torch.bincount(semantic.flatten(), minlength=4).tolist())

# %% [markdown]
# ### A.2 Pixel-wise cross entropy and Dice
#
# A semantic segmenter outputs logits $z_u \in \mathbb{R}^C$ at every pixel $u$; the loss is chapter 01's cross entropy, averaged
# over the pixels:
#
# $$
# \mathcal{L}_{\mathrm{CE}} = -\frac{1}{N H W} \sum_{n, u} \log \operatorname{softmax}(z_{n,u})_{y_{n,u}} .
# $$
#
# Background dominates the pixels, so cross entropy is content with a model that is good on the background. The **Dice**
# coefficient measures overlap per class, whatever the class's size: for a predicted set $P$ and a true set $G$,
#
# $$
# \mathrm{Dice}(P, G) = \frac{2 |P \cap G|}{|P| + |G|} \in [0, 1], \qquad
# \mathcal{L}_{\mathrm{Dice}} = 1 - \frac{1}{C} \sum_c \frac{2 \sum_u p_{u,c} g_{u,c} + \epsilon}{\sum_u p_{u,c} + \sum_u g_{u,c} + \epsilon} ,
# $$
#
# the second with softmax probabilities $p$ and the one-hot target $g$ (the "soft" Dice, differentiable). Checks: a 1 x 2 image by
# hand, `F.cross_entropy`, and the Dice of two hand-drawn squares.

# %%
logits_hand = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])          # (N=1, C=2, H=1, W=2)
target_hand = torch.tensor([[[0, 1]]])                              # pixel 0 is class 0, pixel 1 is class 1
by_hand = -(torch.log(torch.tensor(torch.e**2 / (torch.e**2 + 1))) + torch.log(torch.tensor(torch.e / (1 + torch.e)))) / 2
print(f"pixel CE: ours {pixel_cross_entropy(logits_hand, target_hand):.6f}, by hand {by_hand:.6f}")
assert abs(pixel_cross_entropy(logits_hand, target_hand) - by_hand) < 1e-6
random_logits, random_target = torch.randn(2, 4, 8, 8, generator=generator), torch.randint(4, (2, 8, 8), generator=generator)
assert torch.allclose(pixel_cross_entropy(random_logits, random_target), F.cross_entropy(random_logits, random_target), atol=1e-6)

square_a = torch.zeros(6, 6, dtype=torch.bool)
square_b = torch.zeros(6, 6, dtype=torch.bool)
square_a[0:2, 0:2] = True                                           # 4 pixels
square_b[0:2, 0:3] = True                                           # 6 pixels, 4 of them shared
print(f"Dice of the two squares: {dice_coefficient(square_a, square_b):.4f} (by hand 2 * 4 / (4 + 6) = 0.8)")
assert abs(dice_coefficient(square_a, square_b) - 0.8) < 1e-12
confident = 20 * F.one_hot(random_target, 4).permute(0, 3, 1, 2).float()
print(f"soft Dice loss: confident and right {soft_dice_loss(confident, random_target):.4f}, "
      f"uniform {soft_dice_loss(torch.zeros_like(confident), random_target):.4f}")
assert soft_dice_loss(confident, random_target) < 1e-3

# %% [markdown]
# ### A.3 Mean intersection over union (mIoU)
#
# The standard score of semantic segmentation pools all the pixels of the evaluation set into a **confusion matrix**
# $M_{ij}$ = the number of pixels of true class $i$ predicted as $j$, and computes, per class,
#
# $$
# \mathrm{IoU}_c = \frac{\mathrm{TP}_c}{\mathrm{TP}_c + \mathrm{FP}_c + \mathrm{FN}_c} = \frac{M_{cc}}{\sum_j M_{cj} + \sum_i M_{ic} - M_{cc}}, \qquad
# \mathrm{mIoU} = \frac{1}{|\mathcal{C}|} \sum_{c \in \mathcal{C}} \mathrm{IoU}_c ,
# $$
#
# with $\mathcal{C}$ the classes that occur. A class's IoU equals $\mathrm{Dice} / (2 - \mathrm{Dice})$ for the same pixel sets, so they
# rank predictions alike; the *mean over classes* is what makes small classes count as much as the background. The check: a
# 2 x 4 map by hand.

# %%
target_small = torch.tensor([[0, 0, 1, 1], [0, 0, 2, 2]])
pred_small = torch.tensor([[0, 1, 1, 1], [0, 0, 2, 0]])
print(confusion_matrix(pred_small, target_small, 4))
# class 0: TP 3, FP 1 (the last pixel), FN 1 -> 3/5; class 1: TP 2, FP 1 -> 2/3; class 2: TP 1, FN 1 -> 1/2; class 3 absent
hand_miou = (3 / 5 + 2 / 3 + 1 / 2) / 3
print(f"IoU per class {iou_per_class(confusion_matrix(pred_small, target_small, 4)).tolist()}; "
      f"mIoU {mean_iou(pred_small, target_small):.4f}, by hand {hand_miou:.4f}")
assert abs(mean_iou(pred_small, target_small) - hand_miou) < 1e-12
dice_b = dice_coefficient(square_a, square_b)
assert abs(mask_iou(square_a, square_b) - dice_b / (2 - dice_b)) < 1e-12      # IoU = Dice / (2 - Dice)

# %% [markdown]
# ### A.4 Panoptic quality: $\mathrm{PQ} = \mathrm{SQ} \times \mathrm{RQ}$
#
# A panoptic prediction is a set of segments (mask, class). Kirillov et al. (2019) match a predicted segment $p$ to a true
# segment $g$ of the same class when $\mathrm{IoU}(p, g) > 0.5$. Since the segments of one image do not overlap, a true segment
# can have at most one such match (two predictions each covering more than half of the union with $g$ would have to
# overlap). The matched pairs are the true positives TP; unmatched predictions are FP, unmatched truths FN. Per class,
#
# $$
# \mathrm{PQ} = \frac{\sum_{(p, g) \in \mathrm{TP}} \mathrm{IoU}(p, g)}{|\mathrm{TP}| + \tfrac12 |\mathrm{FP}| + \tfrac12 |\mathrm{FN}|}
# = \underbrace{\frac{\sum_{\mathrm{TP}} \mathrm{IoU}}{|\mathrm{TP}|}}_{\text{segmentation quality SQ}} \times
# \underbrace{\frac{|\mathrm{TP}|}{|\mathrm{TP}| + \tfrac12 |\mathrm{FP}| + \tfrac12 |\mathrm{FN}|}}_{\text{recognition quality RQ (an F1 score)}} ,
# $$
#
# averaged over the classes. The check: one image with two true squares of class 1 (one found with IoU 12/16, one missed,
# plus a false one) and one exact segment of class 2.

# %%
def box_mask(x0, y0, x1, y1, size=10):
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


truth_segments = [(box_mask(0, 0, 4, 4), 1), (box_mask(5, 5, 9, 9), 1), (box_mask(0, 6, 3, 9), 2)]
pred_segments = [(box_mask(0, 0, 4, 3), 1), (box_mask(6, 0, 9, 3), 1), (box_mask(0, 6, 3, 9), 2)]
pq = panoptic_quality([pred_segments], [truth_segments], num_classes=3)
for c, (pq_c, sq_c, rq_c, tp, fp, fn) in pq["per_class"].items():
    print(f"class {c}: TP {tp}, FP {fp}, FN {fn}: SQ {sq_c:.4f}, RQ {rq_c:.4f}, PQ {pq_c:.4f}")
# class 1 by hand: SQ = 12/16, RQ = 1 / (1 + 1/2 + 1/2) = 1/2, PQ = 3/8; class 2: 1 x 1
assert abs(pq["per_class"][1][0] - 12 / 16 * 1 / 2) < 1e-12 and abs(pq["per_class"][2][0] - 1.0) < 1e-12
assert abs(pq["pq"] - (3 / 8 + 1) / 2) < 1e-12
print(f"PQ = {pq['pq']:.4f} (mean over classes 1 and 2)")

# %% [markdown]
# ---
# ## B. FCN: from a classifier to a segmenter
#
# ### B.1 A fully connected layer is a convolution
#
# Long, Shelhamer and Darrell (2015) observed that a classifier's fully connected layers are convolutions in disguise. A
# `Linear` layer reading a flattened $C \times h \times w$ feature map computes $W \operatorname{vec}(a) + b$; a convolution with $D$ filters of
# size $C \times h \times w$ computes, at each position, exactly that dot product. On an $h \times w$ map it has one position and the same
# output; on a larger map it slides, giving one output **per window**: the classifier applied everywhere at once, with
# the convolutions' shared work. A `Linear` after global pooling, or after a 1 x 1 map, is a **1 x 1 convolution**.
#
# The shipped MNIST classifier (the one the FID uses) is conv, pool, conv, pool to $64 \times 7 \times 7$, then
# `Linear(3136 -> 128)`, ReLU, `Linear(128 -> 10)`. We turn the first into a $7 \times 7$ convolution and the second into a
# $1 \times 1$ one, check that the logits are unchanged on 28 x 28 digits, then run it on a 28 x 96 canvas with three digits.

# %%
classifier = load_shipped("mnist_classifier", "cpu")
fcn = convolutionalize_mnist_classifier(classifier)                 # conv, pool, conv, pool, conv 7x7, ReLU, conv 1x1
print(fcn)
x_test, y_test = load_mnist("test")
digits = x_test[:64]                                                # (64, 1, 28, 28)
with torch.no_grad():
    difference = (fcn(digits)[:, :, 0, 0] - classifier(digits)).abs().max().item()
print(f"max |FCN logits - classifier logits| on 64 digits: {difference:.2e}")
assert difference < 1e-4
linear_check = torch.nn.Linear(12, 5)
conv_check = linear_as_conv(linear_check, 3, (2, 2))                # Linear(3*2*2 -> 5) as a 2x2 conv
a_map = torch.randn(7, 3, 2, 2, generator=generator)
assert torch.allclose(conv_check(a_map)[:, :, 0, 0], linear_check(a_map.flatten(1)), atol=1e-6)

# %%
with torch.no_grad():
    confidence = classifier(digits).softmax(1).max(1).values
picked = [int(i) for i in torch.nonzero(confidence > 0.99)[:3, 0]]   # three digits read with > 99 %
canvas = torch.zeros(1, 1, 28, 96)
for slot, i in enumerate(picked):
    canvas[..., 32 * slot:32 * slot + 28] = digits[i]               # digits at x = 0, 32, 64
with torch.no_grad():
    heat = fcn(canvas).softmax(1)[0, :, 0]                          # (10, 18): one window every 4 pixels
print(f"heat map: {tuple(heat.shape)} = 10 classes x (96 - 28) / 4 + 1 windows")
fig, (ax_canvas, ax_heat) = plt.subplots(2, 1, figsize=(8, 4.2), layout="constrained")
ax_canvas.imshow(canvas[0, 0], cmap="gray")
ax_canvas.set_title(f"a 28 x 96 canvas: digits {[int(y_test[i]) for i in picked]} at x = 0, 32, 64", fontsize=9)
ax_heat.imshow(heat, aspect="auto", cmap="viridis")
ax_heat.set_yticks(range(10))
ax_heat.set_xlabel("window j (left edge at x = 4 j)")
ax_heat.set_title("class probabilities of each 28 x 28 window: a class heat map", fontsize=9)
plt.show()
aligned = heat[:, [0, 8, 16]].argmax(0).tolist()                    # the windows that sit exactly on the digits
print(f"argmax at the windows on the digits: {aligned}; labels {[int(y_test[i]) for i in picked]}")
assert aligned == [int(y_test[i]) for i in picked]

# %% [markdown]
# The windows that sit on a digit read it; the windows between digits see parts of two digits (look at what they say). A
# window on the canvas is not *exactly* the classifier on that crop: the padding of the $3 \times 3$ convolutions now sees
# the neighbouring pixels (and, after the first layer, the ReLU of the bias) instead of zeros. This coarse map (one value every 4 pixels, each from a 28-pixel
# window) is where FCN starts; the next two sections bring it back to full resolution.
#
# ### B.2 The transposed convolution is the adjoint of the convolution
#
# A convolution with weights $w$ is a linear map $x \mapsto \mathrm{conv}_w(x)$, so it is a matrix $A_w$ (huge and sparse). Its
# **transposed convolution** is the map $y \mapsto A_w^\top y$, defined by
#
# $$
# \langle \mathrm{conv}_w(x), y \rangle = \langle x, \mathrm{conv}^\top_w(y) \rangle \quad \text{for all } x, y .
# $$
#
# With stride 2 the convolution halves the size, so its transpose doubles it: each input value of $y$ "stamps" a copy of the
# kernel, scaled, into the output, and overlapping stamps add. It is also exactly what backpropagation computes: the
# gradient of $\langle \mathrm{conv}_w(x), y \rangle$ with respect to $x$ is $A_w^\top y$. A common name is "deconvolution", but it does not
# invert the convolution ($A_w^\top \neq A_w^{-1}$). Two checks: the inner products, and `torch.autograd`.

# %%
weights = torch.randn(4, 3, 3, 3, generator=generator)             # a conv from 3 to 4 channels, 3x3, stride 2
x_in = torch.randn(2, 3, 9, 9, generator=generator, requires_grad=True)
y_out = torch.randn(2, 4, 4, 4, generator=generator)                # the conv's output size: (9 - 3) / 2 + 1 = 4
left = (F.conv2d(x_in, weights, stride=2) * y_out).sum()            # <conv(x), y>
transposed = F.conv_transpose2d(y_out, weights, stride=2)           # (2, 3, 9, 9): (4 - 1) * 2 + 3 = 9
right = (x_in * transposed).sum()                                   # <x, conv^T(y)>
(autograd_grad,) = torch.autograd.grad(left, x_in)                  # d<conv(x), y>/dx
print(f"<conv(x), y> = {left.item():.6f}, <x, conv^T(y)> = {right.item():.6f}; "
      f"max |autograd - conv^T(y)| = {(autograd_grad - transposed).abs().max():.2e}")
assert torch.allclose(left, right, rtol=1e-5) and torch.allclose(autograd_grad, transposed, atol=1e-5)

# %% [markdown]
# ### B.3 Learnable upsampling and skip fusion
#
# FCN upsamples its coarse scores with a transposed convolution of stride $f$, *initialised* to bilinear interpolation (a
# tent-shaped kernel of size $2f$) and then learned. Away from the border it equals bilinear interpolation; at the border
# the transposed convolution sees zeros where interpolation repeats the edge.
#
# Upsampling alone cannot put back what the coarse map never had: a score every 8 pixels blurs every boundary. FCN's answer is
# **skip fusion**: upsample the stride-32 scores by 2, add scores computed from the stride-16 layer, upsample by 2 again, add
# the stride-8 scores (FCN-32s, -16s, -8s). To see the effect without training anything, take *perfect* scores: the one-hot
# class maps of 100 held-out scenes, average-pooled to strides 8, 4 and 2 (what an ideal score layer at that stride could
# know), and compare the mIoU of the stride-8 scores upsampled by 8 with the fused ones.

# %%
ramp = torch.randn(1, 2, 6, 6, generator=generator)
upsampled = upsample_scores(ramp, 4)                                # transposed conv with bilinear_kernel(2, 4)
interpolated = F.interpolate(ramp, scale_factor=4, mode="bilinear", align_corners=False)
print(f"bilinear kernel for f = 4, one row: {bilinear_kernel(1, 4)[0, 0, 3].tolist()}")
print(f"max |transposed conv - bilinear interpolation| away from the border: {(upsampled - interpolated)[..., 4:-4, 4:-4].abs().max():.2e}")
assert torch.allclose(upsampled[..., 4:-4, 4:-4], interpolated[..., 4:-4, 4:-4], atol=1e-5)

one_hot = F.one_hot(held_out["semantic"][:100], 4).permute(0, 3, 1, 2).float()   # (100, 4, 48, 48)
perfect = {stride: F.avg_pool2d(one_hot, stride) for stride in (8, 4, 2)}          # ideal scores at each stride
coarse_only = upsample_scores(perfect[8], 8).argmax(1)                             # FCN-32s-like: one jump of 8
fused = upsample_scores(fcn_fuse([perfect[8], perfect[4], perfect[2]]), 2).argmax(1)  # FCN-8s-like
miou_coarse, miou_fused = mean_iou(coarse_only, held_out["semantic"][:100]), mean_iou(fused, held_out["semantic"][:100])
print(f"mIoU from perfect stride-8 scores upsampled by 8: {miou_coarse:.3f}; fused with strides 4 and 2: {miou_fused:.3f}")
assert miou_fused > miou_coarse + 0.05
fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.7), layout="constrained")
show(axes[0], held_out["semantic"][1], "truth")
show(axes[1], coarse_only[1], f"stride 8, upsampled (mIoU {miou_coarse:.2f})")
show(axes[2], fused[1], f"fused 8 + 4 + 2 (mIoU {miou_fused:.2f})")
plt.show()

# %% [markdown]
# ---
# ## C. U-Net as a segmenter
#
# ### C.1 The original: valid convolutions, 572 in, 388 out
#
# U-Net (Ronneberger, Fischer and Brox, 2015) is a **segmentation** network, built for biomedical images; it outputs a class
# per pixel, not boxes. A common reading files it under object detection; it is not a detector. Another misreading is that
# its expanding path uses "2x2 convolutions": each expanding step is a **2x2 up-convolution** (a transposed convolution
# of stride 2, which doubles the size and halves the channels), a concatenation with the contracting path's map of the same
# level (cropped), then **two 3x3 convolutions**. The contracting path is two 3x3 convolutions and a 2x2 max-pool per level,
# channels 64, 128, 256, 512, 1024 at the bottom.
#
# The paper's convolutions are *valid* (no padding): each 3x3 convolution removes a 1-pixel border, so the output is smaller
# than the input, 572 x 572 in, 388 x 388 out, and the skip connections crop the contracting maps to fit. A large image is
# segmented tile by tile, each tile given its context by mirroring ("overlap-tile"). The sizes, level by level:

# %%
sizes = unet_valid_sizes(572)
print(f"contracting path after each pair of convs: {sizes['down']}, bottom {sizes['bottom']}, "
      f"expanding path: {sizes['up']}, output {sizes['output']}")
assert sizes["output"] == 388 and sizes["down"][0] == 568
print(f"context lost at each border: (572 - 388) / 2 = {(572 - 388) // 2} pixels")

# %% [markdown]
# The diffusion U-Net of chapters 11-13 keeps the same shape (contracting, expanding, skips) but pads its convolutions, adds
# a time embedding and attention, and predicts noise rather than classes. Ours pads too, so that a 48 x 48 scene gives a
# 48 x 48 map.
#
# ### C.2 Building it step by step

# %%
fig = course_lib.topics.segmentation.schematic()
plt.show()

# %% [markdown]
# Two levels of pooling are enough for 48 x 48 scenes: the bottom map is 12 x 12, and one of its units sees a 32 x 32 patch
# (chapter 03's receptive-field recursion, printed below), more than the largest shape (23 pixels across). `SegUNet` holds
# the blocks; below, its forward pass is written out with its own modules, and compared with the model's.

# %%
contracting = [(3, 1, 1), (3, 1, 1), (2, 2), (3, 1, 1), (3, 1, 1), (2, 2), (3, 1, 1), (3, 1, 1)]  # conv, conv, pool, ...
bottom_field = course_lib.topics.cnn.receptive_field(contracting)[-1]
print(f"a unit of the bottom map sees r = {bottom_field.r} pixels, one every j = {bottom_field.j}")
assert bottom_field.r == 32 and bottom_field.j == 4
seed_everything(0)
unet = course_lib.topics.segmentation.SegUNet(widths=(16, 32, 64)).eval()
x_scene = held_out["images"][:2]                                    # (2, 3, 48, 48)
with torch.no_grad():
    d1 = unet.down1(x_scene)                                        # (2, 16, 48, 48) two 3x3 convs
    d2 = unet.down2(F.max_pool2d(d1, 2))                            # (2, 32, 24, 24) pool, two 3x3 convs
    bottom = unet.bottom(F.max_pool2d(d2, 2))                       # (2, 64, 12, 12)
    up2 = unet.up2.up(bottom)                                       # (2, 32, 24, 24) 2x2 up-convolution
    u2 = unet.up2.conv(torch.cat([d2, up2], dim=1))                 # concatenate the skip (64 channels), two 3x3 convs
    u1 = unet.up1.conv(torch.cat([d1, unet.up1.up(u2)], dim=1))     # (2, 16, 48, 48)
    step_logits = unet.classify(u1)                                 # (2, 4, 48, 48) 1x1 conv: class logits
    model_logits = unet(x_scene)
for name, t in (("d1", d1), ("d2", d2), ("bottom", bottom), ("up2", up2), ("u2", u2), ("u1", u1), ("logits", step_logits)):
    print(f"{name:7s} {tuple(t.shape)}")
print(f"parameters: {sum(p.numel() for p in unet.parameters()):,}; max |step by step - model| = "
      f"{(step_logits - model_logits).abs().max():.2e}")
assert torch.allclose(step_logits, model_logits, atol=1e-6)

# %% [markdown]
# ### C.3 Training it, and the baselines it must beat
#
# The loss is pixel cross entropy plus the soft Dice loss of A.2 (`segmentation_loss`), on fresh scenes every step. Two
# segmenters without learning set the bar: **all background**, and **brightness threshold + the most frequent class**:
# objects are drawn in bright colours on dark stripes, so a pixel whose mean colour exceeds 0.45 is almost surely an
# object; give it the object class that covers the most pixels in training scenes. It finds the objects but cannot
# tell a circle from a square, and a learner must beat both by telling the shapes apart.

# %%
train_settings = SimpleNamespace(
    model=dict(widths=(16, 32, 64)), steps=cfg.unet_steps, batch_size=cfg.unet_batch, lr=3e-3,
    warmup_steps=max(cfg.unet_steps // 20, 1), weight_decay=1e-4)
start = time.perf_counter()
unet_trained, unet_history = course_lib.topics.segmentation.train_segmenter(train_settings, seed=0, device=DEVICE)
scratch_pred = predict_semantic(unet_trained, held_out["images"])
scratch_miou = mean_iou(scratch_pred, held_out["semantic"])
print(f"{cfg.unet_steps} steps in {time.perf_counter() - start:.0f} s; loss {unet_history.losses[0]:.3f} -> "
      f"{sum(unet_history.losses[-5:]) / 5:.3f}; mIoU {scratch_miou:.3f}; baselines: "
      + ", ".join(f"{k} {v:.3f}" for k, v in trivial.items()))
if scratch_miou < max(trivial.values()):
    print(f"With {cfg.unet_steps} steps (profile {profile()}) the U-Net is still below the baselines: it looks "
          "broken. Run the chapter under COURSE_PROFILE=cpu to train a real one, or read C.4's shipped model.")
assert unet_history.losses[-1] < unet_history.losses[0]
background_share = (held_out["semantic"] == 0).double().mean().item()
print(f"background is {100 * background_share:.1f} % of the held-out pixels: the all-background segmenter's pixel accuracy")
assert 0.8 < background_share < 0.9
fig, axes = plt.subplots(1, 4, figsize=(9, 2.6), layout="constrained")
show(axes[0], held_out["images"][2], "scene")
show(axes[1], held_out["semantic"][2], "truth")
frequent_class = course_lib.topics.segmentation.most_frequent_object_class(held_out["semantic"])
show(axes[2], course_lib.topics.segmentation.threshold_baseline(held_out["images"][2:3], frequent_class)[0], "threshold baseline")
show(axes[3], scratch_pred[2], f"U-Net after {cfg.unet_steps} steps")
plt.show()

# %% [markdown]
# ### C.4 The shipped model and its number
#
# `seg_unet_shapes` is the same U-Net, trained 600 steps of 16 fresh scenes (`python -m course_lib.zoo train
# seg_unet_shapes`). Its mIoU on the held-out scenes, per class, against the baselines:

# %%
shipped_ious = iou_per_class(confusion_matrix(shipped_pred, held_out["semantic"]))
for c, name in enumerate(SEGMENT_CLASSES):
    print(f"IoU {name:10s} {shipped_ious[c]:.3f}")
print(f"mIoU {shipped_miou:.3f} against " + ", ".join(f"{k} {v:.3f}" for k, v in trivial.items()))
assert shipped_ious.min() > 0.5
confusions = confusion_matrix(shipped_pred, held_out["semantic"]).double()
print("confusion matrix, rows = truth, columns = prediction, as fractions of each true class:")
print((confusions / confusions.sum(1, keepdim=True)).numpy().round(3))

# %% [markdown]
# ---
# ## D. Mask R-CNN's idea: RoIAlign and a mask per class
#
# Mask R-CNN (He, Gkioxari, Dollár and Girshick, 2017) is Faster R-CNN (a two-stage detector: a region proposal network, then
# per-region heads) with a third head that predicts a mask inside each detected box. Two pieces make it work: reading each
# region's features without rounding (RoIAlign), and a mask loss that does not make the classes compete.
#
# ### D.1 RoI pooling rounds twice; RoIAlign samples bilinearly
#
# A region (a box in image pixels) must become a fixed $n \times n$ grid of features read from a map of stride $s$. **RoI pooling**
# (Girshick 2015) divides the box by $s$ and *rounds* it to whole cells, splits it into $n \times n$ bins whose edges are rounded
# again, and max-pools each bin. **RoIAlign** keeps the real-valued box, splits it into $n \times n$ equal bins, and averages a
# few regularly spaced samples per bin, each read by **bilinear interpolation** between the four nearest cells:
#
# $$
# f(x, y) = \sum_{i, j \in \{0, 1\}} f(x_0 + i, y_0 + j) \, \big(1 - |x - x_0 - i|\big) \big(1 - |y - y_0 - j|\big), \qquad x_0 = \lfloor x \rfloor, \ y_0 = \lfloor y \rfloor ,
# $$
#
# with cell centres at integer + 0.5 in box coordinates (so 0.5 is subtracted before sampling). The check: a 4 x 4 map whose
# value is $4 y + x$, read by hand.

# %%
tiny_map = torch.arange(16.0).reshape(1, 4, 4)                      # (C=1, 4, 4), value 4 y + x
print(tiny_map[0])
box_whole = torch.tensor([[1.0, 1.0, 3.0, 3.0]])                    # covers cells 1..2 in x and y
aligned_1 = roi_align(tiny_map, box_whole, output_size=1, sampling_ratio=2)
# samples at x, y in {1.5, 2.5} - 0.5 = {1, 2}: values 5, 6, 9, 10, mean 7.5
print(f"RoIAlign, one bin, 2x2 samples: {aligned_1.item():.4f} (by hand (5 + 6 + 9 + 10) / 4 = 7.5)")
assert abs(aligned_1.item() - 7.5) < 1e-6
box_fraction = torch.tensor([[0.7, 1.3, 2.7, 3.3]])
aligned_2 = roi_align(tiny_map, box_fraction, output_size=2, sampling_ratio=1)
# bin (0, 0): one sample at the bin centre (0.7 + 0.5, 1.3 + 0.5) - 0.5 = (0.7, 1.3): between cells (0, 1) and (1, 2)
by_hand_sample = (tiny_map[0, 1, 0] * 0.3 * 0.7 + tiny_map[0, 1, 1] * 0.7 * 0.7
                  + tiny_map[0, 2, 0] * 0.3 * 0.3 + tiny_map[0, 2, 1] * 0.7 * 0.3)
print(f"RoIAlign bin (0, 0) of the fractional box: {aligned_2[0, 0, 0, 0]:.4f}; the four-cell formula by hand: "
      f"{by_hand_sample:.4f}; the map is linear, so both equal 4 * 1.3 + 0.7 = 5.9")
assert abs(aligned_2[0, 0, 0, 0] - by_hand_sample) < 1e-5 and abs(by_hand_sample - 5.9) < 1e-5
pooled = roi_pool(tiny_map, torch.tensor([[0.6, 0.6, 2.4, 2.4]]), output_size=1)
print(f"RoI pooling of the box (0.6, 0.6, 2.4, 2.4): rounded to cells 1..2, max = {pooled.item():.0f}")
assert pooled.item() == 10.0

# %% [markdown]
# ### D.2 What the rounding costs, measured
#
# On a stride-8 map, RoI pooling reads whole cells from $\mathrm{round}(x_0 / 8)$ to $\mathrm{round}(x_1 / 8)$: the region it reads can be off
# the box by up to a cell on each side. We draw 2,000 boxes at fractional positions (sides 16 to 64 pixels) and measure the
# IoU between each box and the region RoI pooling reads, and how far the edges move. RoIAlign's bins tile the box exactly
# (IoU 1 by construction). Then the effect on a feature: slide a box across a ramp $f(x) = x$ and watch the first bin.

# %%
gen_boxes = torch.Generator().manual_seed(3)
corners = torch.rand(2000, 2, generator=gen_boxes) * 100
sides = 16 + torch.rand(2000, 2, generator=gen_boxes) * 48
boxes_f = torch.cat([corners, corners + sides], 1)                  # (2000, 4) x0, y0, x1, y1 at fractional pixels
regions = torch.tensor([roi_pool_region(b, stride=8) for b in boxes_f.tolist()], dtype=torch.float64)
region_iou = torch.tensor([box_region_iou(r, b) for r, b in zip(regions.tolist(), boxes_f.tolist())])
edge_shift = (regions - boxes_f.double()).abs()
print(f"RoI pooling on a stride-8 map: IoU(region read, box) mean {region_iou.mean():.3f}, worst {region_iou.min():.3f}; "
      f"edges moved by {edge_shift.mean():.2f} pixels on average, up to {edge_shift.max():.1f}")
assert region_iou.mean() < 0.9

ramp_map = torch.arange(12.0).repeat(12, 1)[None]                   # (1, 12, 12): f = x (in cells)
shifts = torch.linspace(0, 16, 65)
first_bin_align = [roi_align(ramp_map, torch.tensor([[16.0 + s, 16.0, 48.0 + s, 48.0]]), 4, 1 / 8)[0, 0, 0, 0] for s in shifts]
first_bin_pool = [roi_pool(ramp_map, torch.tensor([[16.0 + s, 16.0, 48.0 + s, 48.0]]), 4, 1 / 8)[0, 0, 0, 0] for s in shifts]
fig, ax = plt.subplots(figsize=(6.5, 3), layout="constrained")
ax.plot(shifts, first_bin_align, label="RoIAlign: moves with the box")
ax.step(shifts, first_bin_pool, where="post", label="RoI pooling: jumps by whole cells")
ax.set_xlabel("box shifted right by (image pixels, stride 8)")
ax.set_ylabel("first bin's feature (the ramp f = x)")
ax.legend(fontsize=8)
plt.show()
slope = (first_bin_align[-1] - first_bin_align[0]) / 16
print(f"RoIAlign's first bin moves {slope:.4f} cells per pixel of shift (1/8 = 0.125); RoI pooling takes "
      f"{len(set(round(float(v), 4) for v in first_bin_pool))} distinct values over 65 shifts")
assert abs(slope - 0.125) < 1e-5

# %% [markdown]
# An edge off by several pixels is an IoU lost on every mask, and worse for small objects: this misalignment is what
# RoIAlign removed, improving mask AP by several points in the paper's ablation.
#
# ### D.3 The mask head: $K$ masks per RoI, a loss on one
#
# Mask R-CNN's mask head predicts, for each RoI, $K$ masks of $m \times m$ (one per class; $K = 80$ on COCO, $m = 28$), each through a
# sigmoid. The loss is the per-pixel binary cross entropy of **only the mask of the RoI's ground-truth class** $k^\ast$:
#
# $$
# \mathcal{L}_{\mathrm{mask}} = -\frac{1}{m^2} \sum_{u} \Big[ t_u \log \sigma(z_{k^\ast, u}) + (1 - t_u) \log \big(1 - \sigma(z_{k^\ast, u})\big) \Big] .
# $$
#
# The class is decided by the box head; the mask head only has to answer "which pixels, *if* it is a $k^\ast$", so classes do
# not compete for pixels (a per-pixel softmax over $K$ would make them compete, and the paper measured it worse). The check:
# the gradient reaches the ground-truth class's mask and no other.

# %%
mask_logits = torch.randn(2, 3, 5, 5, generator=generator, requires_grad=True)  # (R=2 RoIs, K=3 classes, 5, 5)
roi_labels = torch.tensor([2, 0])
roi_targets = torch.rand(2, 5, 5, generator=generator) > 0.5
loss_mask = mask_head_loss(mask_logits, roi_labels, roi_targets)
loss_mask.backward()
gradient_per_mask = mask_logits.grad.abs().sum(dim=(2, 3))          # (2, 3)
print(f"mask loss {loss_mask.item():.4f}; |gradient| per (RoI, class mask):\n{gradient_per_mask}")
assert (gradient_per_mask[0, :2] == 0).all() and (gradient_per_mask[1, 1:] == 0).all()
assert gradient_per_mask[0, 2] > 0 and gradient_per_mask[1, 0] > 0

# %% [markdown]
# ---
# ## E. Segment Anything at toy scale
#
# SAM (Kirillov et al. 2023) segments "anything" from a prompt: a point, a box or a rough mask. A point is ambiguous: on a
# shirt it may mean the shirt or the person wearing it. SAM answers with **three candidate masks** and a **predicted IoU**
# for each, and is trained so that one candidate fits whatever the annotator meant. We rebuild it with one foreground
# point, at 48 x 48.
#
# ### E.1 Scenes where a point is ambiguous
#
# `nested_scenes` draws one or two large shapes, each filled with a colour gradient (they may overlap: the later one hides
# the earlier) on stripes; most hold a small shape of another, flat colour. A point on the small shape may mean the small shape or the whole object (small shape
# included); a point elsewhere on the object means the object. Each training prompt gets one of its meanings at random,
# as one annotator would have drawn it.

# %%
nested = sam.nested_scenes(4, seed=5)
nested_prompts = sam.sample_prompts(nested, seed=5, inner_fraction=1.0)
fig, axes = plt.subplots(3, 4, figsize=(8.5, 6.5), layout="constrained")
for i in range(4):
    show(axes[0, i], nested["images"][i], f"scene {i}")
    axes[0, i].plot(*nested_prompts["points"][i].tolist(), "x", color="cyan", ms=9, mew=2)
    show(axes[1, i], nested_prompts["alternatives"][i, 0], "meaning 1")
    show(axes[2, i], nested_prompts["alternatives"][i, 1], "meaning 2")
plt.show()
for i in range(4):
    x_p, y_p = nested_prompts["points"][i].long().tolist()
    assert nested_prompts["alternatives"][i, :, y_p, x_p].all()     # the point lies on both meanings
print("on an inner shape:", nested_prompts["on_inner"].tolist(), "(a scene without one falls back to the whole)")

# %% [markdown]
# ### E.2 The prompt encoder: Fourier features of the point
#
# A point $(x, y)$ becomes a token of width $D$: its position, scaled to $c \in [0, 1]^2$ (pixel centres), goes through **random
# Fourier features** (Tancik et al. 2020) with a fixed Gaussian matrix $B \in \mathbb{R}^{2 \times D/2}$,
#
# $$
# \gamma(c) = \big[ \sin(2 \pi (2c - 1) B), \ \cos(2 \pi (2c - 1) B) \big] \in \mathbb{R}^D ,
# $$
#
# and a learned **foreground embedding** is added (SAM also has one for background points and for box corners). The same
# $\gamma$ at the centres of the image-token grid gives the image's positions, so the point and the image tokens live in one
# space: $\gamma(c) \cdot \gamma(c') = \sum_k \cos(2 \pi \cdot 2 (c - c') \cdot b_k)$ depends only on $c - c'$ and is largest at $c' = c$. The
# checks: the token written out by hand against `PromptEncoder`, and the similarity map peaking at the point.

# %%
seed_everything(0)
encoder = sam.PromptEncoder(dim=64, image_size=48)
point = torch.tensor([[30.0, 12.0]])                                # (x, y) in pixels
coords = (point + 0.5) / 48                                         # pixel centre in [0, 1]
angles = 2 * torch.pi * (2 * coords - 1) @ encoder.gaussian         # (1, 32)
token_by_hand = torch.cat([angles.sin(), angles.cos()], -1) + encoder.foreground   # (1, 64)
with torch.no_grad():
    token = encoder(point)[:, 0]
print(f"max |token by hand - PromptEncoder| = {(token_by_hand - token).abs().max():.2e}")
assert torch.allclose(token_by_hand, token, atol=1e-5)
with torch.no_grad():
    similarity = (encoder.dense_positions(12, 12) @ sam.fourier_features(coords, encoder.gaussian)[0]).reshape(12, 12)
peak = divmod(int(similarity.argmax()), 12)
print(f"similarity peaks at token (row {peak[0]}, col {peak[1]}); the point is in token ({int(point[0, 1]) // 4}, {int(point[0, 0]) // 4})")
assert abs(peak[0] - int(point[0, 1]) // 4) <= 1 and abs(peak[1] - int(point[0, 0]) // 4) <= 1
fig, ax = plt.subplots(figsize=(3.2, 3), layout="constrained")
ax.imshow(similarity, cmap="viridis")
ax.plot(point[0, 0] / 4 - 0.5, point[0, 1] / 4 - 0.5, "x", color="red", ms=10, mew=2)
ax.set_title("γ(point) · γ(token centre), 12 x 12", fontsize=9)
plt.show()

# %% [markdown]
# ### E.3 The mask decoder: three candidates, a predicted IoU each, the minimum loss

# %%
fig = course_lib.topics.sam.schematic()
plt.show()

# %% [markdown]
# The decoder holds learned **output tokens**: one IoU token and three mask tokens, concatenated with the prompt token. A
# **two-way transformer** lets them attend to each other, to the image tokens (token-to-image), and lets the image attend
# back to them (image-to-token), with the positions added to queries and keys at every attention. The image tokens are
# then upsampled to full resolution by two transposed convolutions (adding the encoder's finer maps), and mask $k$ is the
# dot product of every pixel's feature vector with an MLP of mask token $k$. An MLP of the IoU token predicts the IoU of each
# of the three masks.
#
# Training with a single target per prompt would average the meanings into one blurred mask. SAM instead backpropagates
# only the **best** candidate's loss, and regresses the predicted IoUs $\hat s_k$ on the actual IoUs $s_k$ of the candidates:
#
# $$
# \mathcal{L} = \min_{k \in \{1, 2, 3\}} \big[ \mathrm{BCE}(m_k, t) + \mathrm{Dice}(m_k, t) \big] + \frac{1}{3} \sum_k \big(\hat s_k - \mathrm{IoU}(m_k > 0, t)\big)^2 .
# $$
#
# (SAM weights focal and Dice 20 : 1; BCE serves here.) Over many prompts, a candidate that happens to fit "the small
# shape" keeps receiving those targets and one that fits "the whole" the others: the candidates specialise. At inference
# the predicted IoU picks the mask to return, or ranks all three. The check: three hand-made candidates, one right, and the
# gradient reaches only that one.

# %%
target_hand_mask = torch.zeros(1, 4, 4, dtype=torch.bool)
target_hand_mask[0, :2, :2] = True
candidates = torch.full((1, 3, 4, 4), -5.0)
candidates[0, 1, :2, :2] = 5.0                                      # candidate 1 is the target
candidates[0, 2] = 5.0                                              # candidate 2 is everything
candidates.requires_grad_(True)
per_candidate_loss = sam.candidate_losses(candidates, target_hand_mask)
loss_sam = sam.sam_loss(candidates, torch.tensor([[0.0, 1.0, 0.25]]), target_hand_mask)
loss_sam.backward()
print(f"candidate losses {per_candidate_loss.detach().numpy().round(4)}; actual IoUs "
      f"{sam.hard_ious(candidates.detach(), target_hand_mask).numpy()}; |gradient| per candidate "
      f"{candidates.grad.abs().sum(dim=(2, 3)).numpy()}")
assert per_candidate_loss.argmin().item() == 1 and candidates.grad[0, 0].abs().sum() == 0 and candidates.grad[0, 2].abs().sum() == 0
assert torch.allclose(sam.hard_ious(candidates.detach(), target_hand_mask), torch.tensor([[0.0, 1.0, 0.25]]))

# %%
seed_everything(0)
tiny_sam = sam.TinySAM(dim=64, image_size=48, layers=2, heads=4)
batch_images, batch_points, batch_targets = next(sam.prompt_batches(4))
with torch.no_grad():
    out_masks, out_ious = tiny_sam(batch_images, batch_points)
print(f"TinySAM: {sum(p.numel() for p in tiny_sam.parameters()):,} parameters; images {tuple(batch_images.shape)}, "
      f"points {tuple(batch_points.shape)} -> masks {tuple(out_masks.shape)}, predicted IoUs {tuple(out_ious.shape)}")
assert out_masks.shape == (4, 3, 48, 48) and out_ious.shape == (4, 3)

# %% [markdown]
# ### E.4 Training, the shipped model and its baselines
#
# A short run from scratch first (far from trained under `ci`), then the shipped `sam_shapes` (1,800 steps of 16 prompts).
# The score of one prompt is the IoU of the returned mask (the candidate with the highest predicted IoU) with the closer of
# the prompt's meanings; its mean over 500 held-out prompts is compared with two segmenters without learning: the
# **connected bright region under the point** (mean colour above 0.45) and the **same-colour region under the point** (a flood
# fill, tolerance 0.2 per channel), and with the **oracle** that picks the best of the three candidates.

# %%
sam_settings = SimpleNamespace(
    model=dict(dim=64, image_size=48, layers=2, heads=4), steps=cfg.sam_steps, batch_size=cfg.sam_batch, lr=1e-3,
    warmup_steps=max(cfg.sam_steps // 20, 1), weight_decay=1e-4)
start = time.perf_counter()
sam_scratch, sam_history = sam.train_sam(sam_settings, seed=0, device=DEVICE)
scratch_scores = sam.evaluate_sam(sam_scratch, prompts)
print(f"{cfg.sam_steps} steps from scratch in {time.perf_counter() - start:.0f} s: loss {sam_history.losses[0]:.3f} -> "
      f"{sum(sam_history.losses[-5:]) / 5:.3f}; mean IoU of the chosen mask {scratch_scores['chosen']:.3f}")
if scratch_scores["chosen"] < 0.5:
    print(f"Under profile {profile()} the from-scratch model is far from trained; the shipped one below is not.")

shipped_scores = sam.evaluate_sam(sam_shipped, prompts)
baseline_sam = sam.baseline_scores(prompts)
print(f"shipped sam_shapes on {cfg.eval_scenes} held-out prompts: chosen mask {shipped_scores['chosen']:.3f} "
      f"(on an inner shape {shipped_scores['chosen_on_inner']:.3f}, elsewhere {shipped_scores['chosen_elsewhere']:.3f}); "
      f"oracle best of 3 {shipped_scores['oracle']:.3f}; each candidate alone "
      f"{[round(v, 3) for v in shipped_scores['per_candidate']]}; predicted-IoU error {shipped_scores['iou_mae']:.3f}")
print("baselines: " + ", ".join(f"{k} {v:.3f}" for k, v in baseline_sam.items()))
assert shipped_scores["oracle"] >= shipped_scores["chosen"] - 1e-9
assert shipped_scores["chosen"] > baseline_sam["bright region under the point"]

# %% [markdown]
# ### E.5 Slide the point
#
# Move the point over a scene (and pick another scene) and watch the three candidates and their predicted IoUs. On a small
# inner shape, look for one candidate that takes the small shape and another that takes the whole object; on the rest of
# an object, for candidates that agree. On the background the model was never trained: see what it does.

# %%
widget_data = sam.evaluation_prompts(16)


def draw_candidates(axes, scene, x, y):
    image = widget_data["images"][scene]
    masks_w, ious_w = sam.predict(sam_shipped, image[None], torch.tensor([[float(x), float(y)]]))
    show(axes[0], image, f"scene {scene}, point ({x}, {y})")
    axes[0].plot(x, y, "x", color="cyan", ms=10, mew=2)
    best = int(ious_w[0].argmax())
    for k in range(3):
        show(axes[k + 1], masks_w[0, k] > 0, f"candidate {k}: IoU^ {ious_w[0, k]:.2f}" + (" (returned)" if k == best else ""))


course_lib.core.widgets.interactive_figure(
    draw_candidates, ncols=4, figsize=(10, 2.8),
    scene=ipywidgets.IntSlider(value=int(widget_data["on_inner"].nonzero()[0]), min=0, max=15, description="scene"),
    x=ipywidgets.IntSlider(value=24, min=0, max=47, description="x"),
    y=ipywidgets.IntSlider(value=24, min=0, max=47, description="y"))

# %% [markdown]
# ---
# ## F. Semantic, instance and panoptic outputs of the trained models (optional deep dive)
#
# The U-Net gives a semantic map. Because our objects never touch, its connected components of one class are instances,
# and together with one "stuff" segment (the background, left out of PQ here as in many thing-only evaluations) they make a
# panoptic output. PQ then scores the shipped U-Net as a panoptic segmenter, and splits into SQ (how good the matched masks
# are) and RQ (how many objects were found). The recipe breaks when objects of one class touch: their components merge and
# RQ drops. That is why instance and panoptic models predict **one mask per object**: Mask R-CNN one per box (D), SAM one
# per prompt (E), and MaskFormer (chapter 06, E.1) one per query, each with a class, matched to the truth by the Hungarian
# algorithm. With mask classification, one model and one loss serve all three tasks: merge the masks of a class for the
# semantic map, keep them apart for instances, add the stuff classes for panoptic.

# %%
pred_panoptic = [segments_from_semantic(m) for m in shipped_pred[:100]]
true_panoptic = [scene_segments(held_out["masks"][i], held_out["labels"][i]) for i in range(100)]
pq_unet = panoptic_quality(pred_panoptic, true_panoptic, num_classes=4)
print(f"U-Net + connected components on 100 held-out scenes: PQ {pq_unet['pq']:.3f} = SQ {pq_unet['sq']:.3f} x RQ "
      f"{pq_unet['rq']:.3f} (means over the classes)")
for c, (pq_c, sq_c, rq_c, tp, fp, fn) in pq_unet["per_class"].items():
    print(f"  {SEGMENT_CLASSES[c]:9s} PQ {pq_c:.3f} = SQ {sq_c:.3f} x RQ {rq_c:.3f}  (TP {tp}, FP {fp}, FN {fn})")
    assert abs(pq_c - sq_c * rq_c) < 1e-12
fig, axes = plt.subplots(1, 4, figsize=(9, 2.6), layout="constrained")
show(axes[0], held_out["images"][3], "scene")
show(axes[1], shipped_pred[3], "semantic (U-Net)")
instance_ids = torch.zeros(48, 48, dtype=torch.int64)
for k, (mask, c) in enumerate(pred_panoptic[3]):
    instance_ids[mask] = k + 1
axes[2].imshow(instance_ids, cmap="tab10", vmin=0, vmax=9)
axes[2].set_title("instances (components)", fontsize=9)
axes[2].axis("off")
axes[3].imshow(CLASS_COLOURS[shipped_pred[3]] * (0.55 + 0.45 * (instance_ids % 2)[..., None]))
axes[3].set_title("panoptic: class + id", fontsize=9)
axes[3].axis("off")
plt.show()

# %% [markdown]
# ---
# ## G. Exercises
#
# Each exercise cell below holds a working solution; in the student version it is replaced by a stub. Write your own,
# run the check cell, and reveal the reference only when stuck.
#
# **Exercise 1: mIoU from a confusion matrix.** *Derive, then check.* From the definition of A.3, write `my_mean_iou(pred,
# target, num_classes)` for two class maps of the same shape: build the confusion matrix with one `torch.bincount`, compute
# the IoU of every class, and average over the classes whose union is not empty. Return a float64 tensor (a scalar).

# %% tags=["exercise"]
def my_mean_iou(pred, target, num_classes):
    """mIoU of two class maps, over the classes that occur in either."""
    ### BEGIN SOLUTION
    counts = torch.bincount(target.flatten() * num_classes + pred.flatten(), minlength=num_classes**2)
    matrix = counts.reshape(num_classes, num_classes).double()      # rows: truth, columns: prediction
    hits = matrix.diag()
    unions = matrix.sum(0) + matrix.sum(1) - hits
    present = unions > 0
    return (hits[present] / unions[present]).mean()
    ### END SOLUTION


# %%
miou_inputs = [(pred_small, target_small, 4), (shipped_pred[:20], held_out["semantic"][:20], 4),
               (torch.randint(5, (3, 7, 7), generator=generator), torch.randint(5, (3, 7, 7), generator=generator), 5)]
course_lib.core.check.check_function(my_mean_iou, lambda p, t, c: torch.tensor(mean_iou(p, t, c), dtype=torch.float64),
                                     miou_inputs, rtol=1e-9, atol=1e-12)

# %%
course_lib.core.check.show_solution(course_lib.topics.segmentation.mean_iou)

# %% [markdown]
# **Exercise 2: the size a transposed convolution returns.** *Derive, then check.* A convolution with kernel $k$, stride $s$ and
# padding $p$ maps a length $n_{\mathrm{in}}$ to $n_{\mathrm{out}} = \lfloor (n_{\mathrm{in}} + 2p - k) / s \rfloor + 1$. Its transpose (B.2) goes back. Derive the length the
# transposed convolution returns for an input of length $n$ (the smallest $n_{\mathrm{in}}$ that the convolution maps to $n$), and code it
# as `my_transposed_length(n, kernel, stride, padding)`. The check compares with the shape `F.conv_transpose2d` returns.

# %% tags=["exercise"]
def my_transposed_length(n, kernel, stride, padding):
    """Output length of a transposed convolution (no output_padding) for an input of length n."""
    ### BEGIN SOLUTION
    return (n - 1) * stride - 2 * padding + kernel
    ### END SOLUTION


# %%
def torch_transposed_length(n, kernel, stride, padding):
    output = F.conv_transpose2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, kernel, kernel), stride=stride, padding=padding)
    return torch.tensor(output.shape[-1])


length_inputs = [(4, 3, 2, 0), (12, 2, 2, 0), (6, 8, 4, 2), (5, 4, 2, 1), (7, 3, 1, 1)]
course_lib.core.check.check_function(lambda *args: torch.tensor(my_transposed_length(*args)), torch_transposed_length,
                                     length_inputs, name="my_transposed_length")
print(f"U-Net's 2x2 up-convolution doubles: {my_transposed_length(12, 2, 2, 0)}; FCN's 16x16 stride-8 kernel with "
      f"padding 4 multiplies by 8: {my_transposed_length(6, 16, 8, 4)}")

# %%
course_lib.core.check.show_solution("def my_transposed_length(n, kernel, stride, padding):\n"
                                    "    return (n - 1) * stride - 2 * padding + kernel  # inverts n = (n_in + 2p - k) / s + 1")

# %% [markdown]
# **Exercise 3: a 4-pixel shift on a stride-8 map.** *Predict, then run.* A 32 x 32 box at $(16, 16)$ on a stride-8 ramp map
# $f(x) = x$ (in cells) is moved right by 4 pixels, half a cell. Before you run the cell, predict: (a) by how much does
# RoIAlign's first bin change? (b) And RoI pooling's? (c) Moved by 3 pixels instead, what does RoI pooling do? Write your
# answers into `MY_PREDICTION`, then run.

# %%
MY_PREDICTION = {"RoIAlign change for 4 px": None, "RoI pooling change for 4 px": None, "RoI pooling for 3 px": None}

# %%
changes = {}
for shift in (3.0, 4.0):
    moved = torch.tensor([[16.0 + shift, 16.0, 48.0 + shift, 48.0]])
    original = torch.tensor([[16.0, 16.0, 48.0, 48.0]])
    changes[shift] = (float(roi_align(ramp_map, moved, 4, 1 / 8)[0, 0, 0, 0] - roi_align(ramp_map, original, 4, 1 / 8)[0, 0, 0, 0]),
                      float(roi_pool(ramp_map, moved, 4, 1 / 8)[0, 0, 0, 0] - roi_pool(ramp_map, original, 4, 1 / 8)[0, 0, 0, 0]))
print(f"your prediction: {MY_PREDICTION}")
for shift, (d_align, d_pool) in changes.items():
    print(f"shift {shift:.0f} px: RoIAlign's first bin changes by {d_align:.3f} cells, RoI pooling's by {d_pool:.3f}")
assert abs(changes[4.0][0] - 0.5) < 1e-5 and abs(changes[3.0][0] - 0.375) < 1e-5
assert changes[4.0][1] == 1.0 and changes[3.0][1] == 0.0

# %% [markdown]
# RoIAlign follows the box: 4 pixels are half a cell on a stride-8 map, and the first bin moves by 0.5 cells (3 pixels: by
# 0.375). RoI pooling rounds the box to cells: moved by 4 pixels, $x_0 / 8 = 2.5$ rounds up to 3 and $x_1 / 8 = 6.5$ to 7, so every
# bin jumps by a whole cell (8 pixels' worth) for a 4-pixel move; moved by 3 pixels, $2.375$ and $6.375$ round back to 2 and 6,
# and nothing changes at all. Sub-cell motion is invisible to RoI pooling until a rounding threshold is crossed, then it
# jumps by a whole cell.

# %% [markdown]
# ---
# ## Summary
#
# | key equation | derived in | checked by |
# |---|---|---|
# | $\mathcal{L}_{\mathrm{CE}} = -\frac{1}{NHW} \sum \log p_u(y_u)$; $\mathrm{Dice} = 2 \lvert P \cap G \rvert / (\lvert P \rvert + \lvert G \rvert)$ | A.2 | a 1 x 2 image by hand and `F.cross_entropy`, two squares in A.2 |
# | $\mathrm{IoU}_c = \mathrm{TP}/(\mathrm{TP} + \mathrm{FP} + \mathrm{FN})$ from the confusion matrix, mIoU = mean over classes | A.3 | the 2 x 4 map by hand in A.3, exercise 1 in G |
# | $\mathrm{PQ} = \mathrm{SQ} \times \mathrm{RQ}$, matches at IoU > 0.5 | A.4, F | the hand case of A.4, every class of the trained segmenter in F |
# | a Linear on a $C \times h \times w$ map = a conv with an $h \times w$ kernel; $\langle \mathrm{conv}(x), y \rangle = \langle x, \mathrm{conv}^\top(y) \rangle$ | B.1, B.2 | the MNIST classifier's logits in B.1, the inner products and autograd in B.2 |
# | U-Net: 2x2 up-convolution, concatenation, two 3x3 convs; 572 -> 388 with valid convs | C.1, C.2 | the sizes in C.1, the step-by-step forward in C.2, mIoU against the baselines in C.4 |
# | RoIAlign: bilinear samples $\sum f \, (1 - \lvert \Delta x \rvert)(1 - \lvert \Delta y \rvert)$, no rounding; mask BCE on the true class only | D.1, D.3 | the 4 x 4 map by hand in D.1, the region IoU in D.2, the gradients in D.3 |
# | SAM: $\min_k \mathcal{L}(m_k, t) + \mathrm{MSE}(\hat s, \mathrm{IoU})$, prompt $\gamma(c) + e_{\mathrm{fg}}$ | E.2, E.3 | the token by hand in E.2, the hand candidates in E.3, the shipped model in E.4 |
#
# **Three things to remember.**
#
# 1. Semantic segmentation classifies pixels; instance and panoptic segmentation predict one mask per object (with a class), and
#    the scores follow: mIoU pools pixels per class, PQ = SQ x RQ matches segments at IoU > 0.5.
# 2. A segmenter is a classifier made fully convolutional, plus a way back to full resolution: transposed convolutions (the
#    adjoint of the convolution) and skips from the finer layers, which is FCN's fusion and U-Net's concatenation.
# 3. Where a mask is read from a region (Mask R-CNN) never round the region: sample it bilinearly; where a prompt is ambiguous
#    (SAM) predict several masks, train only the best one, and predict each one's IoU to choose.

# %% [markdown]
# ---
# ## H. Discussion questions
#
# 1. A common reading files U-Net under object detection and says its expanding path uses "2x2 convolutions". What does one
#    step of the expanding path do, what does U-Net output, and why is the paper's output (388 x 388) smaller than its input
#    (572 x 572)? How does the paper segment an image larger than one tile?
# 2. In our held-out scenes, about 87 % of the pixels are background (C.3 prints it). What pixel accuracy does the
#    all-background segmenter reach, what mIoU, and why do segmentation benchmarks report mIoU rather than pixel accuracy?
# 3. Mask R-CNN predicts $K$ sigmoid masks per RoI and trains only the true class's. What would change with a per-pixel softmax
#    over the $K$ classes, and why does the box head's classification make the decoupling possible?
# 4. Suppose SAM had one output mask and annotators, for a point on the small shape, drew the small shape half of the time and
#    the whole object the other half. What mask minimises the expected BCE, and why do three candidates and the minimum loss
#    avoid it? What is the predicted IoU for, at inference?
# 5. Why can a true segment match at most one predicted segment at IoU > 0.5 when the predicted segments do not overlap, and
#    what does PQ gain from this (compare with the matching of chapter 06's mAP)?
