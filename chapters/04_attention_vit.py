# ---
# jupyter:
#   course:
#     time_on_cpu:
#       ci:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-05'
#         seconds: 23
#       cpu:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-11-23'
#         seconds: 547
#         source: the chapter's table before course_lib.tools.timing, commit 95f6c4e (nbval/nbconvert)
#       gpu:
#         note: no GPU where the course was timed
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
# # 04 · Attention, the Vision Transformer, CvT and Swin
#
# A Vision Transformer (ViT, Dosovitskiy et al. 2021) cuts an image into patches, treats the patches as a sequence of
# tokens, and runs the Transformer encoder of language models on them, with almost nothing image-specific left. This
# chapter builds every piece from scratch and checks it by a number (patches, scaled dot-product attention and its
# $1/\sqrt{d_k}$, multi-head attention, the class token, position embeddings), trains a tiny ViT on MNIST, looks inside a
# trained one (attention maps, attention rollout, position embeddings, temperature), and ends with CvT (Wu et al. 2021),
# which puts convolutions back in and drops the position embeddings, and Swin's attention inside shifted windows (Liu et al.
# 2021), whose cost grows linearly with the image.
#
# **Goals.** After this chapter you can
# - patchify an image and invert it, and say why a patch embedding is a strided convolution;
# - derive the $1/\sqrt{d_k}$ of scaled dot-product attention from a variance, and show what goes wrong without it;
# - write multi-head attention with every shape, and match `torch.nn.functional.scaled_dot_product_attention` and
#   `torch.nn.MultiheadAttention`;
# - build a ViT step by step, count its parameters with a formula (ViT-B/16: 86,567,656), train it, and report its
#   test accuracy;
# - read attention maps per layer, head and query, compute attention rollout, and tell position-embedding similarity
#   (a property of a table of vectors) from attention (a property of an image);
# - explain CvT's convolutional token embedding and convolutional projection, count its multiply-adds by hand and
#   with `FlopCounterMode`, and compare a ViT, a CvT and a CNN on the same small budget.
# - build Swin's window attention and its shifted windows (cyclic shift, region mask, reverse shift), check it against
#   global attention with an explicit mask, and count its cost: linear in the number of tokens instead of quadratic.
#
# **Prerequisites.** Chapter 01 (softmax, cross entropy from logits, `fit`). Chapter 03 (convolution arithmetic:
# kernel, stride, padding, output size). Matrix products and their shapes; mean and variance of a sum of independent
# random variables.
#
# **Time.** Two study-group sessions of about 90 minutes (the plan, and what to pre-run before each:
# [facilitator/04_attention_vit.md](facilitator/04_attention_vit.md)); the exercises (H) take about 45 minutes at home.
#
# **Core path.** See it work first (5 min), patches and the patch embedding (A, A.1: 10 min), scaled dot-product
# attention and its scale (B, B.1, B.2: 20 min), multi-head attention (C: 10 min), the ViT (D.1-D.4: 20 min), training it
# (E: 10 min) and inside the trained ViT (F, F.1, F.2, F.3: 20 min): about 95 min, plus the discussion (I). Optional deep
# dives that a first reading can skip: E.1 (Fashion-MNIST), F.4 (softmax temperature) and all of G (CvT: G.1-G.4;
# Swin's attention in shifted windows: G.5).
#
# **What runs, and how long** (the whole chapter, top to bottom, on a fresh kernel; `ci` with 1 torch thread as the
# test suite runs it, `cpu` with torch's default threads; `make time PROFILE=ci` or `PROFILE=cpu` measures it and
# writes the time here, in the notebook's metadata and in the README):
#
# | profile | what trains | measured |
# |---|---|---|
# | `ci` | the tiny ViT for 80 steps (batch 64, 5,000 digits); a Fashion-MNIST ViT for 10 steps; ViT, CvT and CNN for 10 steps each | 23 s, measured 2026-12-05 on 2 CPU cores, no GPU, otherwise idle |
# | `cpu` | the tiny ViT for 2,200 steps (batch 128, all 60,000 digits; 4 min 41 s, 98.3% test accuracy); Fashion-MNIST 600 steps (82.7%); ViT, CvT and CNN 300 steps each on 5,000 digits (with Fashion-MNIST about 4 min) | 9 min 7 s, measured 2026-11-23 on 2 CPU cores, no GPU, otherwise idle |
# | `gpu` | the shipped recipe (7,000 steps, digits shifted by up to 2 pixels); Fashion-MNIST 3,000 steps; ViT, CvT and CNN 1,500 steps each | not measured: no GPU where the course was timed |
#
# Whatever the profile, the attention pictures use the shipped checkpoint `vit_mnist`. Set the profile before starting
# JupyterLab: `COURSE_PROFILE=ci`, `cpu` or `gpu`.

# %%
import inspect
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import course_lib
import course_lib.core.check
import course_lib.core.checkpointing
import course_lib.core.plotting
import course_lib.core.widgets
import course_lib.topics.cvt
import course_lib.topics.vit
import course_lib.zoo
from course_lib import device, per_profile, profile, seed_everything
from course_lib.core.train import accuracy, fit, minibatches, warmup_cosine
from course_lib.data import FASHION_CLASSES, load_fashion_mnist, load_mnist
from course_lib.eval.fid import MnistClassifier
from course_lib.topics.cnn import classification_loss, random_crop_flip
from course_lib.topics.cvt import ConvAttention, ConvEmbedding, CvT, conv_output_size
from course_lib.topics.vit import (MultiHeadAttention, ViT, attention_rollout, measured_multiply_adds, parameter_count,
                                   patchify, scaled_dot_product_attention, temper_attention, unpatchify)

DEVICE = device()
generator = seed_everything(0)
print(f"profile = {profile()}, device = {DEVICE}, torch threads = {torch.get_num_threads()}")
x_train, y_train = load_mnist("train")  # (60000, 1, 28, 28) in [0, 1], (60000,)
x_test, y_test = load_mnist("test")  # (10000, 1, 28, 28), (10000,)

# %% [markdown]
# ## See it work first
#
# The shipped tiny ViT, `vit_mnist` (trained by the recipe of section E on a GPU), reads each test digit as 49 patches of
# $4 \times 4$ pixels and classifies it from one extra token, [CLS]. Below: its test accuracy, eight test digits with its
# predictions, and under each digit where the [CLS] token read from (attention rollout over the $7 \times 7$ patches, F.3;
# red = most weight, each map scaled to its own maximum).
#
# By the end of this chapter you will have derived and trained this: every step from patches to [CLS] checked by a
# number, a ViT of the same size trained by you (E), and the maps that look inside it (F).

# %%
shipped = course_lib.zoo.load_shipped("vit_mnist", DEVICE)
n_first = per_profile(ci=dict(n=1_000), cpu=dict(n=2_000), gpu=dict(n=10_000)).n  # a few seconds on a CPU
first_accuracy = accuracy(shipped, x_test[:n_first], y_test[:n_first])
with torch.no_grad():
    first_logits, first_attentions = shipped(x_test[:8].to(DEVICE), return_attention=True)  # 4 x (8, 4, 50, 50)
first_rollout = attention_rollout([a.cpu() for a in first_attentions])[:, 0, 1:]  # (8, 49): [CLS] row, patch columns
first_predictions = first_logits.argmax(1).cpu()
fig, axes = plt.subplots(2, 8, figsize=(12, 3.4), layout="constrained")
for i in range(8):
    axes[0, i].imshow(x_test[i, 0], cmap="gray")
    axes[0, i].set_title(f"predicted {first_predictions[i].item()}", fontsize=9)
    axes[0, i].axis("off")
    course_lib.core.plotting.overlay_heatmap(x_test[i], first_rollout[i].reshape(7, 7), ax=axes[1, i])
axes[1, 0].set_title("[CLS] rollout", fontsize=9, loc="left")
fig.suptitle(f"the shipped ViT: test accuracy {first_accuracy:.1%} on {n_first:,} test digits", fontsize=11)
plt.show()
ink_first = F.avg_pool2d(x_test[:8], 4).flatten(1) > 0.1  # (8, 49): patches whose mean grey value is above 0.1
ink_weight = ((first_rollout * ink_first).sum(1) / first_rollout.sum(1)).mean().item()
print(f"test accuracy {first_accuracy:.4f} on {n_first:,} digits; the [CLS] rollout puts {ink_weight:.0%} of its patch "
      f"weight on the {ink_first.float().mean():.0%} of patches that have ink")
assert first_accuracy > 0.95 and ink_weight > ink_first.float().mean()

# %% [markdown]
# ---
# ## A. An image is a sequence of patches
#
# Cut an image $x \in \mathbb{R}^{C \times H \times W}$ (channels first, as torch stores it) into non-overlapping squares of
# $P \times P$ pixels and flatten each one. With $H$ and $W$ multiples of $P$ there are
#
# $$
# N = \frac{H W}{P^2} \quad \text{patches}, \qquad x_p \in \mathbb{R}^{N \times (P^2 C)} .
# $$
#
# MNIST with $P = 4$: $N = 7 \cdot 7 = 49$ tokens of $16$ numbers. ViT-B/16 at $224^2$: $N = 14 \cdot 14 = 196$ tokens of
# $16 \cdot 16 \cdot 3 = 768$ numbers. The order is a convention: rows of patches top to bottom, left to right in a row,
# and inside a patch the numbers in the order (channel, row, column).
#
# With tensors it is one reshape that splits each side into (patch index, pixel in patch), one permute that brings the
# two patch indices to the front, and one reshape that flattens:

# %%
P = 4
images = x_test[:8]  # (B, C, H, W) = (8, 1, 28, 28)
B, C, H, W = images.shape
step1 = images.reshape(B, C, H // P, P, W // P, P)  # (B, C, H/P, P, W/P, P): split rows and columns
step2 = step1.permute(0, 2, 4, 1, 3, 5)  # (B, H/P, W/P, C, P, P): patch indices first
my_patches = step2.reshape(B, (H // P) * (W // P), C * P * P)  # (B, N, C P^2)
for name, t in [("images", images), ("reshape", step1), ("permute", step2), ("patches", my_patches)]:
    print(f"{name:8s} {tuple(t.shape)}")

row, col = 3, 5  # patch number row * 7 + col is the square at pixel rows 12-15, columns 20-23
assert torch.equal(my_patches[:, row * 7 + col], images[:, :, row * P:(row + 1) * P, col * P:(col + 1) * P].flatten(1))
assert torch.equal(my_patches, patchify(images, P))  # the library version
unfolded = F.unfold(images, kernel_size=P, stride=P).transpose(1, 2)  # torch's im2col: (B, N, C P^2), same order
assert torch.equal(my_patches, unfolded)
round_trip = unpatchify(my_patches, P, C, H, W)
assert torch.equal(round_trip, images)  # exactly: patchify only moves numbers around
print("patchify == course_lib.topics.vit.patchify == F.unfold; unpatchify(patchify(x)) == x exactly")

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), width_ratios=[1, 1.9, 0.7], layout="constrained")
axes[0].imshow(images[0, 0], cmap="gray")
for i in range(1, 7):
    axes[0].axhline(i * P - 0.5, color="C1", lw=0.8)
    axes[0].axvline(i * P - 0.5, color="C1", lw=0.8)
for n in range(49):
    axes[0].text((n % 7) * P + 1.5, (n // 7) * P + 1.5, str(n), color="C1", fontsize=6, ha="center", va="center")
axes[0].set(xticks=[], yticks=[], title="a digit cut into 7 x 7 patches")
per_line, gap = 13, 2  # the sequence wrapped into lines of 13 patches, 2 pixels apart, each with its number above
lines = math.ceil(49 / per_line)
strip = np.full((lines * (P + 2 * gap + 2), per_line * (P + gap)), np.nan)  # NaN is drawn white
for n in range(49):
    top, left = (n // per_line) * (P + 2 * gap + 2) + 2 * gap + 2, (n % per_line) * (P + gap)
    strip[top:top + P, left:left + P] = my_patches[0, n].reshape(P, P).numpy()
    axes[1].text(left + (P - 1) / 2, top - 1.2, str(n), fontsize=7, ha="center", va="bottom", color="0.25")
axes[1].imshow(np.ma.masked_invalid(strip), cmap="gray", vmin=0, vmax=1)
axes[1].set_facecolor("white")
axes[1].set(xticks=[], yticks=[], title="the same 49 patches as a sequence $x_p^0, x_p^1, \\dots, x_p^{48}$ (read row by row)")
for spine in axes[1].spines.values():
    spine.set_visible(False)
axes[2].imshow(my_patches[0], cmap="gray", aspect="auto", interpolation="nearest")
axes[2].set(xlabel="pixel in the patch (16)", ylabel="token n", title="x_p: a (49, 16) matrix")
plt.show()

# %% [markdown]
# ### A.1 The patch embedding is a strided convolution
#
# Each patch is mapped to a $D$-dimensional token by one shared matrix $E \in \mathbb{R}^{(P^2 C) \times D}$ (and a bias): token
# $n$ is $x_p^n E + b$. A convolution with kernel $P$ and stride $P$ computes exactly this: its kernel visits every patch once
# and takes a dot product of the patch with each of its $D$ filters. So `nn.Linear(C * P * P, D)` after `patchify` and
# `nn.Conv2d(C, D, kernel_size=P, stride=P)` are the same map, once the weights are copied ($E^\top$ reshaped to
# $(D, C, P, P)$):

# %%
D = 64
linear_embedding = nn.Linear(C * P * P, D)
conv_embedding = nn.Conv2d(C, D, kernel_size=P, stride=P)
with torch.no_grad():
    conv_embedding.weight.copy_(linear_embedding.weight.reshape(D, C, P, P))  # (D, C P^2) -> (D, C, P, P)
    conv_embedding.bias.copy_(linear_embedding.bias)
    by_linear = linear_embedding(patchify(images, P))  # (B, N, D)
    by_conv = conv_embedding(images).flatten(2).transpose(1, 2)  # (B, D, 7, 7) -> (B, N, D)
print("max |linear - conv| =", (by_linear - by_conv).abs().max().item())
assert torch.allclose(by_linear, by_conv, atol=1e-5)

# %% [markdown]
# A convolution with stride equal to its kernel has no overlap between neighbouring patches. CvT (section G) uses a
# kernel larger than its stride, so neighbouring tokens share pixels.
#
# ---
# ## B. Scaled dot-product attention
#
# Given queries $Q \in \mathbb{R}^{N_q \times d_k}$, keys $K \in \mathbb{R}^{N_k \times d_k}$ and values $V \in \mathbb{R}^{N_k \times d_v}$,
#
# $$
# \operatorname{Attention}(Q, K, V) = A V, \qquad A = \operatorname{softmax}\!\Big(\frac{Q K^\top}{\sqrt{d_k}}\Big) \in \mathbb{R}^{N_q \times N_k},
# $$
#
# with the softmax taken along each row (over the keys). Row $i$ of $A$ is non-negative and sums to 1, so output row $i$
# is a weighted average of the value rows: query $i$ reads mostly the values whose keys have a large dot product with it.
# In self-attention $Q$, $K$ and $V$ are three linear maps of the same tokens.
#
# ### B.1 Where the $1/\sqrt{d_k}$ comes from
#
# Take a query $q$ and a key $k$ in $\mathbb{R}^{d_k}$ whose components are independent with mean 0 and variance 1 (the model
# for tokens that LayerNorm has standardised, before training correlates anything). Their dot product $s = q^\top k = \sum_{j=1}^{d_k} q_j k_j$ is a
# sum of $d_k$ independent terms. Each term has mean $\mathbb{E}[q_j k_j] = \mathbb{E}[q_j]\,\mathbb{E}[k_j] = 0$ and variance
#
# $$
# \operatorname{Var}(q_j k_j) = \mathbb{E}[q_j^2 k_j^2] - \big(\mathbb{E}[q_j k_j]\big)^2 = \mathbb{E}[q_j^2]\,\mathbb{E}[k_j^2] - 0 = 1 \cdot 1 = 1 .
# $$
#
# Variances of independent terms add, so
#
# $$
# \operatorname{Var}(s) = \sum_{j=1}^{d_k} \operatorname{Var}(q_j k_j) = d_k, \qquad
# \operatorname{Var}\Big(\frac{s}{\sqrt{d_k}}\Big) = \frac{d_k}{d_k} = 1 .
# $$
#
# Without the scale the logits' standard deviation grows like $\sqrt{d_k}$ (8 for $d_k = 64$); with it, it is 1 whatever the
# width. (With component variance $\sigma^2$ instead of 1 the same steps give $\operatorname{Var}(s) = d_k \sigma^4$: the scale still removes the growth
# with the width, which is its job.) The check, by Monte Carlo:

# %%
generator = seed_everything(1)
n_pairs = 20_000
print(f"{'d_k':>5} {'Var(q.k)':>10} {'Var(q.k)/d_k':>13} {'Var(q.k/sqrt(d_k))':>19}")
for d_k in (4, 16, 64, 256, 1024):
    q = torch.randn(n_pairs, d_k, generator=generator)
    k = torch.randn(n_pairs, d_k, generator=generator)
    s = (q * k).sum(1)  # (n_pairs,) one dot product per pair
    print(f"{d_k:5d} {s.var():10.1f} {s.var() / d_k:13.3f} {(s / math.sqrt(d_k)).var():19.3f}")
    assert abs(s.var() / d_k - 1) < 0.06 and abs((s / math.sqrt(d_k)).var() - 1) < 0.06

# %% [markdown]
# Why a large logit variance hurts: softmax turns large logits into a one-hot row. The Jacobian of $a = \operatorname{softmax}(z)$ is
#
# $$
# \frac{\partial a_i}{\partial z_j} = a_i (\delta_{ij} - a_j), \qquad J = \operatorname{diag}(a) - a a^\top,
# $$
#
# (differentiate $a_i = e^{z_i} / \sum_m e^{z_m}$: the numerator gives $a_i \delta_{ij}$, the denominator $-a_i a_j$), and when $a$ is one-hot
# every entry of $J$ is 0: no gradient reaches the queries and keys. Its squared Frobenius norm, written out,
# $\lVert J \rVert_F^2 = \sum_i (a_i - a_i^2)^2 + \sum_{i \ne j} a_i^2 a_j^2 = \sum_i a_i^2 - 2\sum_i a_i^3 + \big(\sum_i a_i^2\big)^2$. First the formula
# against autograd, then what happens to 49-key attention rows as $d_k$ grows:

# %%
z = torch.randn(7, generator=generator, dtype=torch.float64)
a = torch.softmax(z, 0)
jacobian = torch.autograd.functional.jacobian(lambda t: torch.softmax(t, 0), z)  # (7, 7)
assert torch.allclose(jacobian, torch.diag(a) - torch.outer(a, a))
assert torch.isclose(jacobian.pow(2).sum(), a.pow(2).sum() - 2 * a.pow(3).sum() + a.pow(2).sum() ** 2)
print("softmax Jacobian = diag(a) - a a^T (autograd agrees), and the Frobenius formula holds")


def attention_row_statistics(d_k, scaled, n_queries=500, n_keys=49):
    """Mean largest weight, entropy (nats) and Jacobian Frobenius norm of attention rows with random q, k."""
    q = torch.randn(n_queries, d_k, generator=generator)
    k = torch.randn(n_keys, d_k, generator=generator)
    logits = q @ k.T / (math.sqrt(d_k) if scaled else 1.0)  # (n_queries, n_keys)
    a = torch.softmax(logits, dim=-1)
    s2 = a.pow(2).sum(-1)
    jacobian_norm = (s2 - 2 * a.pow(3).sum(-1) + s2**2).clamp_min(0).sqrt()
    entropy = -(torch.xlogy(a, a)).sum(-1)
    return a.max(-1).values.mean().item(), entropy.mean().item(), jacobian_norm.mean().item()


widths = [2, 4, 8, 16, 32, 64, 128, 256, 512]
stats = {scaled: np.array([attention_row_statistics(d_k, scaled) for d_k in widths]) for scaled in (True, False)}
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
for ax, column, label in zip(axes, range(3), ["mean largest weight", "mean entropy (nats)", "mean Frobenius norm of J"]):
    for scaled, style in [(True, "o-"), (False, "s--")]:
        ax.plot(widths, stats[scaled][:, column], style, label="q.k / sqrt(d_k)" if scaled else "q.k (no scale)")
    ax.set(xscale="log", xlabel="d_k", title=label)
axes[1].axhline(math.log(49), color="k", ls=":", label="uniform over 49 keys")
axes[0].legend()
axes[1].legend(fontsize=8)
plt.show()
assert stats[False][-1, 0] > 0.9 and stats[True][-1, 0] < 0.5  # unscaled rows are one-hot at d_k = 512; scaled are not

# %% [markdown]
# With the scale the rows look the same at every width; without it they become one-hot and their Jacobian vanishes
# as $d_k$ grows.
#
# > **Common confusion:** "attention is $\operatorname{softmax}(Q K^\top / \sqrt{d})V$ with $d$ the model width". In a multi-head layer $d_k$ is the
# > width of **one head**, $D_h = D / h$ (ViT-B: $768 / 12 = 64$), because each head's logits are dot products of $D_h$-dimensional
# > vectors. A common mistake is to visualise the raw $q k^\top$ without the scale: that shows logits $\sqrt{D_h}$ times too
# > large, not attention. (The official CvT code scales by the full width, `dim_out ** -0.5`; see section G.)
#
# ### B.2 From scratch, against torch
#
# Four lines, for any leading batch dimensions. A boolean `mask` (True where a query may look) sets the other logits to
# $-\infty$, so their weights are exactly 0. `torch.nn.functional.scaled_dot_product_attention` computes the same output
# (with fused kernels on a GPU) but does not return the weights, which we want for pictures; `course_lib.topics.vit`'s version
# returns both.

# %%
def my_attention(q, k, v, mask=None):
    """q (..., N_q, d_k), k (..., N_k, d_k), v (..., N_k, d_v) -> output (..., N_q, d_v), weights (..., N_q, N_k)."""
    logits = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., N_q, N_k)
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(logits, dim=-1)  # each row sums to 1
    return weights @ v, weights  # (..., N_q, d_v)


generator = seed_everything(2)
q = torch.randn(2, 3, 50, 16, generator=generator)  # (B, heads, N_q, d_k)
k = torch.randn(2, 3, 40, 16, generator=generator)  # (B, heads, N_k, d_k)
v = torch.randn(2, 3, 40, 24, generator=generator)  # (B, heads, N_k, d_v)
mask = torch.rand(50, 40, generator=generator) > 0.3  # (N_q, N_k), broadcast over B and heads
mask[:, 0] = True  # every query may look at one key at least
for m in (None, mask):
    ours, weights = my_attention(q, k, v, m)
    torch_out = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
    library_out, library_weights = scaled_dot_product_attention(q, k, v, m)
    assert torch.allclose(ours, torch_out, atol=1e-5) and torch.allclose(ours, library_out)
    assert torch.allclose(weights, library_weights) and torch.allclose(weights.sum(-1), torch.ones(2, 3, 50))
    print(f"mask={'yes' if m is not None else 'no '}: max |ours - F.scaled_dot_product_attention| = "
          f"{(ours - torch_out).abs().max():.1e}; rows sum to 1")
assert (weights[..., ~mask] == 0).all()
print("masked weights are exactly 0")

# %% [markdown]
# ---
# ## C. Multi-head attention
#
# One attention pattern per layer is one way of mixing the tokens. Multi-head attention runs $h$ of them side by side on
# narrower vectors and concatenates the results. For tokens $z \in \mathbb{R}^{T \times D}$ (ViT paper, appendix A), head $i$ is
#
# $$
# [q_i, k_i, v_i] = z\, U^{(i)}_{qkv}, \quad U^{(i)}_{qkv} \in \mathbb{R}^{D \times 3 D_h}, \qquad
# \operatorname{SA}_i(z) = \operatorname{softmax}\!\Big(\frac{q_i k_i^\top}{\sqrt{D_h}}\Big) v_i, \qquad D_h = \frac{D}{h},
# $$
#
# $$
# \operatorname{MSA}(z) = [\operatorname{SA}_1(z); \dots; \operatorname{SA}_h(z)]\, U_{msa}, \qquad U_{msa} \in \mathbb{R}^{h D_h \times D} .
# $$
#
# All heads' $U^{(i)}_{qkv}$ side by side form one $D \times 3D$ matrix, so in code it is one `nn.Linear(D, 3 * D)` followed by a
# reshape that splits the $3D$ outputs into (q/k/v, head, $D_h$). Its parameters are $3D^2 + 3D$ for $U_{qkv}$ and its bias plus $D^2 + D$ for
# $U_{msa}$: $4D^2 + 4D$, **independent of the number of heads**. The picture (`course_lib.topics.vit.attention_schematic()`),
# then the code step by step, with every shape:

# %%
course_lib.topics.vit.attention_schematic()
plt.show()

# %%
generator = seed_everything(3)
D, heads = 64, 4
D_h = D // heads
qkv_layer, out_layer = nn.Linear(D, 3 * D), nn.Linear(D, D)
z = torch.randn(2, 50, D, generator=generator)  # (B, T, D): [CLS] + 49 patch tokens
b, t, _ = z.shape
qkv = qkv_layer(z)  # (B, T, 3D)
qkv = qkv.reshape(b, t, 3, heads, D_h)  # (B, T, 3, h, D_h)
q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, h, T, D_h)
heads_out, head_weights = my_attention(q, k, v)  # (B, h, T, D_h), (B, h, T, T)
concatenated = heads_out.transpose(1, 2).reshape(b, t, D)  # (B, T, h D_h): the heads side by side
my_msa = out_layer(concatenated)  # (B, T, D)
for name, tensor in [("z", z), ("qkv", qkv), ("q, k, v", q), ("weights", head_weights), ("heads", heads_out),
                     ("concatenated", concatenated), ("MSA(z)", my_msa)]:
    print(f"{name:13s} {tuple(tensor.shape)}")

library_msa = MultiHeadAttention(D, heads)
library_msa.load_state_dict({"qkv.weight": qkv_layer.weight, "qkv.bias": qkv_layer.bias,
                             "proj.weight": out_layer.weight, "proj.bias": out_layer.bias})
torch_msa = nn.MultiheadAttention(D, heads, batch_first=True)
with torch.no_grad():
    torch_msa.in_proj_weight.copy_(qkv_layer.weight)  # torch stacks W_q, W_k, W_v the same way
    torch_msa.in_proj_bias.copy_(qkv_layer.bias)
    torch_msa.out_proj.weight.copy_(out_layer.weight)
    torch_msa.out_proj.bias.copy_(out_layer.bias)
    library_out, library_weights = library_msa(z)
    torch_out, torch_weights = torch_msa(z, z, z, need_weights=True, average_attn_weights=False)
assert torch.allclose(my_msa, library_out, atol=1e-6) and torch.allclose(head_weights, library_weights)
assert torch.allclose(my_msa, torch_out, atol=1e-5) and torch.allclose(head_weights, torch_weights, atol=1e-6)
n_msa = sum(p.numel() for p in library_msa.parameters())
assert n_msa == 4 * D**2 + 4 * D
print(f"ours == course_lib.topics.vit.MultiHeadAttention == torch.nn.MultiheadAttention; parameters {n_msa:,} = 4D^2 + 4D")

# %% [markdown]
# ---
# ## D. The Vision Transformer
#
# ### D.1 The equations
#
# The ViT paper's equations 1-4, with every shape ($L$ blocks, width $D$, MLP width $M$, $K$ classes):
#
# $$
# z_0 = [x_\text{class};\, x_p^1 E;\, x_p^2 E;\, \dots;\, x_p^N E] + E_\text{pos}, \qquad E \in \mathbb{R}^{(P^2 C) \times D},\;
# x_\text{class} \in \mathbb{R}^{D},\; E_\text{pos} \in \mathbb{R}^{(N + 1) \times D},
# $$
#
# $$
# z'_\ell = \operatorname{MSA}(\operatorname{LN}(z_{\ell - 1})) + z_{\ell - 1}, \qquad
# z_\ell = \operatorname{MLP}(\operatorname{LN}(z'_\ell)) + z'_\ell, \qquad \ell = 1, \dots, L,
# $$
#
# $$
# y = \operatorname{LN}(z_L^0), \qquad \text{logits} = y\, W_\text{head} + b_\text{head}, \quad W_\text{head} \in \mathbb{R}^{D \times K} .
# $$
#
# - **The class token** $x_\text{class}$ is a learned vector prepended to the patch tokens. It belongs to no patch; through
#   attention it collects what the classifier needs, and the head reads only its final state $z_L^0$. (Averaging the patch
#   tokens instead works about as well; ViT kept the token from BERT.)
# - **Pre-norm blocks:** LayerNorm before each sub-layer, the residual path untouched; the MLP is
#   $\operatorname{Linear}(D, M) \to \operatorname{GELU} \to \operatorname{Linear}(M, D)$.
# - **Position embeddings** $E_\text{pos}$: one learned vector per position, added. Why they are needed is D.2.
# - `course_lib.topics.vit.ViT` applies the final LayerNorm to every token, not only to $z_L^0$ (chapters 05 and 13 use the patch
#   tokens); LayerNorm acts on each token separately, so the [CLS] output is the same.
#
# The whole model in one picture (`course_lib.topics.vit.schematic()`):

# %%
course_lib.topics.vit.schematic()
plt.show()

# %% [markdown]
# > **Common confusion:** a common reading of the ViT equations drops the class token, $z_0 = [x_p^1 E; \dots; x_p^N E] + E_\text{pos}$.
# > In fact the class token is part of $z_0$, and $E_\text{pos}$ has $N + 1$ rows, one for it too (Dosovitskiy et al. 2021, eq. 1).
#
# ### D.2 Attention does not know where a token is
#
# Permute the tokens (a permutation matrix $\Pi$) and everything in a block is permuted the same way: LayerNorm and the MLP act
# on each token alone, and attention gives $\operatorname{softmax}(\Pi Q K^\top \Pi^\top / \sqrt{d_k})\, \Pi V = \Pi\, \operatorname{softmax}(Q K^\top / \sqrt{d_k}) V$ because a softmax of
# rows commutes with permuting rows and columns, $\operatorname{softmax}(\Pi S \Pi^\top) = \Pi \operatorname{softmax}(S) \Pi^\top$, and $\Pi^\top \Pi = I$. So $\operatorname{Block}(\Pi z) = \Pi \operatorname{Block}(z)$: the blocks see a *set* of patches.
# Only $E_\text{pos}$ tells the model that patch 8 sits below patch 1. Checked on an untrained ViT: without position
# embeddings, shuffling the patches leaves the [CLS] output unchanged; with them it does not.

# %%
generator = seed_everything(4)
probe = ViT(image_size=28, patch_size=4, channels=1, dim=64, depth=2, heads=4, mlp_ratio=2.0, num_classes=10).eval()
shuffle = torch.randperm(49, generator=generator)
with torch.no_grad():
    tokens = torch.cat([probe.cls_tokens(8), probe.patch_tokens(images)], dim=1)  # (8, 50, D)
    block = probe.blocks[0]
    permuted_then_block = block(tokens[:, torch.cat([torch.tensor([0]), 1 + shuffle])])[0]
    block_then_permuted = block(tokens)[0][:, torch.cat([torch.tensor([0]), 1 + shuffle])]
    assert torch.allclose(permuted_then_block, block_then_permuted, atol=1e-5)

    def cls_output(model, shuffled):
        patches = model.patch_embed(patchify(images, 4))  # (8, 49, D), no positions yet
        if shuffled:
            patches = patches[:, shuffle]
        with_positions = patches + model.position[:, 1:]
        tokens = torch.cat([model.cls_tokens(8), with_positions], dim=1)
        return model.run_blocks(tokens)[:, 0]  # (8, D)

    with_pos = (cls_output(probe, False) - cls_output(probe, True)).abs().max().item()
    probe.position.zero_()  # no position embeddings at all
    without_pos = (cls_output(probe, False) - cls_output(probe, True)).abs().max().item()
print(f"Block(permuted tokens) == permuted Block(tokens)  (max difference "
      f"{(permuted_then_block - block_then_permuted).abs().max():.1e})")
print(f"[CLS] output change when the patches are shuffled: with position embeddings {with_pos:.3f}, "
      f"without {without_pos:.1e}")
assert without_pos < 1e-4 < with_pos

# %% [markdown]
# > **Common confusion:** "the position embeddings carry no 2-D information, so a ViT cannot know the layout of the
# > image." True **at initialisation**: $E_\text{pos}$ starts as random vectors, one per index $0..N$. But they are learned, and a
# > trained ViT's embeddings encode the 2-D layout: which positions are neighbours, which share a row or a column (section F.1
# > shows it on our model; the ViT paper's figure 7 shows it at scale, and hand-designed 2-D embeddings gave no significant gain
# > there).
#
# ### D.3 The model, step by step
#
# The tiny ViT of this chapter: $28 \times 28$ digits, $P = 4$ (49 patches), $D = 64$, $L = 4$ blocks of $h = 4$ heads ($D_h = 16$), MLP
# width $M = 128$, 10 classes. We build it from bare layers, run one batch through it printing every shape, then copy the
# weights into `course_lib.topics.vit.ViT` and compare.

# %%
generator = seed_everything(5)
D, depth, heads, M, K = 64, 4, 4, 128, 10
patch_embed = nn.Linear(C * P * P, D)
cls_token = nn.Parameter(torch.zeros(1, 1, D))
position = nn.Parameter(0.02 * torch.randn(1, 1 + 49, D, generator=generator))
blocks = [dict(norm1=nn.LayerNorm(D), qkv=nn.Linear(D, 3 * D), proj=nn.Linear(D, D), norm2=nn.LayerNorm(D),
               fc1=nn.Linear(D, M), fc2=nn.Linear(M, D)) for _ in range(depth)]
final_norm, head = nn.LayerNorm(D), nn.Linear(D, K)
with torch.no_grad():  # give LayerNorm weights and the [CLS] token non-default values, so the check checks them
    for layer in [final_norm] + [blk[name] for blk in blocks for name in ("norm1", "norm2")]:
        layer.weight.add_(0.1 * torch.randn(D, generator=generator))
        layer.bias.add_(0.1 * torch.randn(D, generator=generator))
    cls_token.add_(0.1 * torch.randn(1, 1, D, generator=generator))


def my_block(z, blk, trace=None):
    """One pre-norm block: z (B, T, D) -> (B, T, D), and the attention weights (B, h, T, T)."""
    b, t, d = z.shape
    q, k, v = blk["qkv"](blk["norm1"](z)).reshape(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    attended, weights = my_attention(q, k, v)  # (B, h, T, D_h)
    z = z + blk["proj"](attended.transpose(1, 2).reshape(b, t, d))  # z'_l
    z = z + blk["fc2"](F.gelu(blk["fc1"](blk["norm2"](z))))  # z_l
    if trace is not None:
        trace += [("  q, k, v per head", q), ("  attention weights", weights), ("  z'_l", z)]
    return z, weights


def my_vit(images, trace=None):
    """images (B, 1, 28, 28) -> logits (B, K), attention weights per block."""
    x_p = patchify(images, P)  # (B, N, P^2 C)
    tokens = patch_embed(x_p)  # (B, N, D)
    z = torch.cat([cls_token.expand(len(images), -1, -1), tokens], dim=1) + position  # z_0: (B, 1 + N, D)
    if trace is not None:
        trace += [("x_p", x_p), ("x_p E", tokens), ("z_0", z)]
    attentions = []
    for blk in blocks:
        z, weights = my_block(z, blk, trace)
        attentions.append(weights)
    y = final_norm(z[:, 0])  # (B, D): LN of z_L^0
    logits = head(y)
    if trace is not None:
        trace += [("y = LN(z_L^0)", y), ("logits", logits)]
    return logits, attentions


trace = []
with torch.no_grad():
    my_logits, my_attentions = my_vit(images, trace)
for name, tensor in trace[:6] + [("  ... 3 more blocks", None)] + trace[-2:]:
    print(f"{name:22s} {tuple(tensor.shape) if tensor is not None else ''}")

# %%
library_vit = ViT(image_size=28, patch_size=P, channels=1, dim=D, depth=depth, heads=heads, mlp_ratio=M / D, num_classes=K)
state = {"patch_embed.weight": patch_embed.weight, "patch_embed.bias": patch_embed.bias, "cls_token": cls_token,
         "position": position, "norm.weight": final_norm.weight, "norm.bias": final_norm.bias,
         "head.weight": head.weight, "head.bias": head.bias}
library_names = dict(norm1="norm1", qkv="attn.qkv", proj="attn.proj", norm2="norm2", fc1="mlp.0", fc2="mlp.2")
for i, blk in enumerate(blocks):
    for ours, theirs in library_names.items():
        state[f"blocks.{i}.{theirs}.weight"] = blk[ours].weight
        state[f"blocks.{i}.{theirs}.bias"] = blk[ours].bias
library_vit.load_state_dict(state)
library_vit.eval()
with torch.no_grad():
    library_logits, library_attentions = library_vit(images, return_attention=True)
assert torch.allclose(my_logits, library_logits, atol=1e-5)
assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(my_attentions, library_attentions))
print("step-by-step ViT == course_lib.topics.vit.ViT: logits and all 4 x 4 attention maps")

# %% [markdown]
# ### D.4 Counting the parameters
#
# Every parameter is in a table or a linear layer (weight and bias) or a LayerNorm (scale and shift, $2D$):
#
# $$
# \underbrace{(P^2 C + 1) D}_{E \text{ and bias}} + \underbrace{D}_{x_\text{class}} + \underbrace{(N + 1) D}_{E_\text{pos}}
# + L \Big[\underbrace{4D}_{2 \text{ LN}} + \underbrace{3D^2 + 3D}_{U_{qkv}} + \underbrace{D^2 + D}_{U_{msa}} + \underbrace{2DM + M + D}_{\text{MLP}}\Big]
# + \underbrace{2D}_{\text{final LN}} + \underbrace{(D + 1) K}_{\text{head}} .
# $$
#
# `course_lib.topics.vit.parameter_count` is this formula; the check counts the model's tensors. (Exercise 3 asks you to write it and
# to get ViT-B/16's 86,567,656 from it.)

# %%
n_parameters = sum(p.numel() for p in library_vit.parameters())
by_formula = parameter_count(28, P, 1, D, depth, M, K)
pieces = {"patch embedding E": (P * P * C + 1) * D, "[CLS] + E_pos": D + 50 * D,
          f"{depth} blocks": depth * (4 * D + 3 * D * D + 3 * D + D * D + D + 2 * D * M + M + D),
          "final LN + head": 2 * D + (D + 1) * K}
for name, count in pieces.items():
    print(f"{name:18s} {count:8,}")
print(f"{'total':18s} {sum(pieces.values()):8,}   formula {by_formula:,}   model {n_parameters:,}")
assert n_parameters == by_formula == sum(pieces.values())

# %% [markdown]
# The blocks hold 96% of it. In ViT-B/16 the proportions are similar (the blocks are 98%), and the MLPs are two thirds of every block.
#
# ---
# ## E. Training the tiny ViT
#
# The recipe that made the shipped checkpoint, `course_lib.zoo.vit_mnist`: AdamW with weight decay, a linear warm-up
# and a cosine decay of the learning rate (`course_lib.core.train.warmup_cosine`), cross entropy from logits, and (in the long
# run) every training digit moved by a random shift of up to `max_shift` pixels, because a ViT has no built-in translation
# invariance (section G.4 measures what that means). Its settings per profile:

# %%
print(inspect.getsource(course_lib.zoo.vit_mnist.settings))
cfg = course_lib.zoo.settings("vit_mnist")
print(cfg)

# %% [markdown]
# The same steps written out, with the settings of the active profile. Under `ci` it is a short run, a smoke test and not
# a result: 80 steps give about 28% test accuracy (the `cpu` profile's 2,200 steps give 98.3%), so a low number there does
# not mean your code is wrong.

# %%
n_monitor = per_profile(ci=dict(n=200), cpu=dict(n=2_000), gpu=dict(n=2_000)).n  # test digits watched while training
generator = seed_everything(0)
vit = ViT(**cfg.model).to(DEVICE)
optimizer = torch.optim.AdamW(vit.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
batches = minibatches(x_train[:cfg.n_train], y_train[:cfg.n_train], batch_size=cfg.batch_size, generator=generator)


shift_generator = torch.Generator().manual_seed(1)
max_shift = cfg.max_shift  # the gpu recipe moves each digit by up to 2 pixels; 0: no augmentation


def shift_digits(images):
    """Pad by max_shift zeros and crop back at a random place: a shift of up to max_shift pixels."""
    return random_crop_flip(images, max_shift, flip=False, generator=shift_generator)


def vit_loss(model, batch):
    # chapter 03's classification_loss: cross entropy from logits (as chapter 01 says), after the augmentation if any
    return classification_loss(model, batch, shift_digits if max_shift else None)


x_monitor, y_monitor = x_test[-n_monitor:], y_test[-n_monitor:]  # watched during training
x_eval, y_eval = x_test[:cfg.n_test], y_test[:cfg.n_test]  # the reported number
history = fit(vit, vit_loss, batches, steps=cfg.steps, optimizer=optimizer, device=DEVICE,
              scheduler=warmup_cosine(optimizer, cfg.warmup_steps, cfg.steps),
              eval_fn=lambda m: {"test_acc": accuracy(m, x_monitor, y_monitor)}, eval_every=max(cfg.steps // 4, 1),
              desc="ViT on MNIST")
test_accuracy = accuracy(vit, x_eval, y_eval)
print(f"{cfg.steps} steps of batch {cfg.batch_size} ({cfg.steps * cfg.batch_size / cfg.n_train:.1f} epochs of {cfg.n_train:,} "
      f"digits) in {history.wall_time_s:.0f} s: test accuracy {test_accuracy:.4f} on {len(x_eval):,} test digits")
assert test_accuracy >= cfg.min_test_accuracy, f"below the recipe's floor {cfg.min_test_accuracy} for this profile"
if profile() == "ci":
    print(f"Under ci this is {cfg.steps} steps, about one pass over {cfg.n_train:,} digits, so {test_accuracy:.0%} (chance 10%) is "
          "what to expect: the loss is still falling and your code is not broken. The cpu profile reaches about 98%.")

# %%
fig, ax = plt.subplots(figsize=(7, 3.2))
course_lib.core.plotting.plot_losses(history, smooth=max(1, cfg.steps // 50), ax=ax, labels=["train cross entropy"],
                                title=f"tiny ViT on MNIST ({profile()} profile)")
ax2 = ax.twinx()
ax2.plot([s for s, _ in history.evals], [e["test_acc"] for _, e in history.evals], "o-", color="C1",
         label=f"test accuracy ({n_monitor:,} digits)")
ax2.set(ylabel="test accuracy", ylim=(0, 1))
ax2.legend(loc="lower left")
plt.show()

# %% [markdown]
# ### E.1 Fashion-MNIST, briefly (optional deep dive)
#
# The same architecture and optimiser on Fashion-MNIST (clothes instead of digits, the same $28 \times 28$ format, and harder:
# small CNNs reach about 91-93%, MNIST 99%+). A short run is enough to see the tokens learn something beyond digits (under
# `ci`, 10 steps, about 20%: well above chance, far from done).

# %%
fashion_cfg = per_profile(ci=dict(steps=10, n_test=200), cpu=dict(steps=600, n_test=10_000),
                          gpu=dict(steps=3_000, n_test=10_000))
try:
    xf_train, yf_train = load_fashion_mnist("train")
    xf_test, yf_test = load_fashion_mnist("test")
except FileNotFoundError as missing:
    xf_train = None
    print(f"Fashion-MNIST is not installed here, so this part is skipped:\n{missing}")
if xf_train is not None:
    generator = seed_everything(0)
    fashion_vit = ViT(**cfg.model).to(DEVICE)
    optimizer = torch.optim.AdamW(fashion_vit.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batches = minibatches(xf_train, yf_train, batch_size=cfg.batch_size, generator=generator)
    fashion_history = fit(fashion_vit, classification_loss, batches, steps=fashion_cfg.steps, optimizer=optimizer,
                          device=DEVICE, scheduler=warmup_cosine(optimizer, max(fashion_cfg.steps // 20, 1), fashion_cfg.steps),
                          desc="ViT on Fashion-MNIST")
    fashion_accuracy = accuracy(fashion_vit, xf_test[:fashion_cfg.n_test], yf_test[:fashion_cfg.n_test])
    print(f"Fashion-MNIST, {fashion_cfg.steps} steps: test accuracy {fashion_accuracy:.4f} on {fashion_cfg.n_test:,} images "
          f"(chance 0.10)")
    with torch.no_grad():
        predicted = fashion_vit(xf_test[:8].to(DEVICE)).argmax(1).cpu()
    course_lib.core.plotting.image_grid(xf_test[:8], nrow=1, figsize=(10, 2),
                                   titles=[f"{FASHION_CLASSES[p]}\n(true: {FASHION_CLASSES[t]})"
                                           for p, t in zip(predicted, yf_test[:8])])
    plt.show()

# %% [markdown]
# > **Common confusion:** "ViTs are worse than CNNs on ImageNet." The ViT paper's statement is narrower: ViTs **pre-trained only on
# > ImageNet-1k** trail comparable ResNets (BiT); pre-trained on ImageNet-21k or JFT-300M they match or beat them. Trained from scratch on a
# > small data set the gap is large, in a published result we do not rerun here: the ViT of the University of Amsterdam's deep-learning
# > tutorials (Lippe, UvA DL tutorial 15), trained from scratch on CIFAR-10 for 180 epochs, reaches 75.6% test accuracy, where the
# > CNNs of its tutorial 5 (ResNet, DenseNet, GoogLeNet) reach 90-92%. A ViT has to learn from data what a convolution assumes (locality, translation equivariance);
# > MNIST is easy enough that the tiny ViT does well anyway. Section G measures the gap on a small budget.
#
# ---
# ## F. Inside a trained ViT
#
# The shipped checkpoint was trained by the same recipe under the `gpu` settings. Its test accuracy, measured now:

# %%
shipped = course_lib.zoo.load_shipped("vit_mnist", DEVICE)
entry = course_lib.core.checkpointing.read_manifest()["vit_mnist"]
print("manifest metrics:", entry["metrics"])
print("recipe          :", {k: entry["recipe"][k] for k in ("profile", "steps", "batch_size", "lr", "seed") if k in entry["recipe"]})
shipped_accuracy = accuracy(shipped, x_eval, y_eval)
print(f"test accuracy now: {shipped_accuracy:.4f} on {len(x_eval):,} test digits")
assert shipped_accuracy > 0.95
grid = shipped.grid  # 7 patches per side
patch = shipped.patch_size

# %% [markdown]
# ### F.1 Position embeddings: a similarity grid, not attention
#
# For each patch position $i$ take the cosine similarity of its embedding with every other patch position's,
#
# $$
# \operatorname{sim}(i, j) = \frac{\langle E_\text{pos}^{i}, E_\text{pos}^{j} \rangle}{\lVert E_\text{pos}^{i} \rVert\, \lVert E_\text{pos}^{j} \rVert},
# $$
#
# and draw row $i$ as a $7 \times 7$ map at the place of patch $i$: a $7 \times 7$ grid of $7 \times 7$ maps (`course_lib.topics.vit.position_similarity`). At
# initialisation the embeddings are random vectors, nearly orthogonal in 64 dimensions, and only the diagonal lights up.
# Trained, an interior position's embedding resembles its neighbours' (most of all the ones in its row), and the ring of border
# positions, where MNIST digits almost never have ink, resembles the rest of the ring: the embeddings learned the 2-D layout, and
# where the digit usually is, from nothing but the classification loss. The right panel averages the similarity over pairs of
# interior patches (the inner $5 \times 5$) at each distance.

# %%
def similarity_mosaic(similarity, side):
    """(N, N) -> an image of side x side tiles, tile i = row i of the similarity as a side x side map, 1-pixel gaps."""
    tiles = similarity.reshape(side, side, side, side)  # (row_i, col_i, row_j, col_j)
    padded = F.pad(tiles, (0, 1, 0, 1), value=float("nan"))  # a NaN gap between tiles
    return padded.permute(0, 2, 1, 3).reshape(side * (side + 1), side * (side + 1))


untrained_similarity = course_lib.topics.vit.position_similarity(ViT(**cfg.model))
trained_similarity = course_lib.topics.vit.position_similarity(shipped).cpu()
rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
centres = torch.stack([rows.flatten(), cols.flatten()], 1).float()  # (49, 2) patch coordinates
distance = torch.cdist(centres, centres)  # (49, 49) in patches
fig, axes = plt.subplots(1, 3, figsize=(14, 4.6), width_ratios=[1, 1, 1.15], layout="constrained")
for ax, similarity, title in [(axes[0], untrained_similarity, "at initialisation"), (axes[1], trained_similarity, "trained")]:
    shown = ax.imshow(similarity_mosaic(similarity, grid), cmap="viridis", vmin=-1, vmax=1)
    ax.set(xticks=[], yticks=[])
    ax.set_title(f"{title}\n(tile i = similarity of patch i to all 49)", fontsize=10)
fig.colorbar(shown, ax=axes[:2], location="left", shrink=0.8, pad=0.02, label="cosine similarity")
fig.suptitle("cosine similarity of the position embeddings $E_{pos}$ (a table of vectors, not attention)", fontsize=11)
interior = ((centres >= 1) & (centres <= grid - 2)).all(1)  # (49,) the inner 5 x 5 patches
pairs = interior[:, None] & interior[None, :] & (distance > 0)  # (49, 49) pairs of distinct interior patches
for similarity, label in [(untrained_similarity, "at initialisation"), (trained_similarity, "trained")]:
    d_values = distance[pairs].round(decimals=2)
    unique = d_values.unique()
    means = [similarity[pairs][d_values == u].mean().item() for u in unique]
    axes[2].plot(unique, means, "o-", ms=3, label=label)
axes[2].axhline(0, color="k", lw=0.5)
axes[2].set(xlabel="distance between two interior patches (in patches)", ylabel="mean cosine similarity")
axes[2].set_title("interior pairs: similarity against distance", fontsize=10)
axes[2].legend()
plt.show()
same_row = (centres[:, None, 0] == centres[None, :, 0]) & (distance > 0)
same_col = (centres[:, None, 1] == centres[None, :, 1]) & (distance > 0)
elsewhere = ~same_row & ~same_col & (distance > 0)
near = trained_similarity[pairs & (distance == 1)].mean()
far = trained_similarity[pairs & (distance >= 3)].mean()
print(f"trained, interior pairs: neighbours {near:.2f}, 3 or more patches apart {far:.2f}")
print(f"trained, all pairs: same row {trained_similarity[same_row].mean():.2f}, same column "
      f"{trained_similarity[same_col].mean():.2f}, neither {trained_similarity[elsewhere].mean():.2f}")
assert near > far + 0.3 and trained_similarity[same_row].mean() > trained_similarity[elsewhere].mean() + 0.2
ring = ~interior  # the 24 border positions
ring_pairs = ring[:, None] & ring[None, :] & (distance > 0)
off_diagonal = distance > 0
print(f"trained, the border ring: ring to ring {trained_similarity[ring_pairs].mean():.2f}, ring to interior "
      f"{trained_similarity[ring[:, None] & interior[None, :]].mean():.2f}; at initialisation, mean |similarity| off the "
      f"diagonal {untrained_similarity[off_diagonal].abs().mean():.2f}")
assert trained_similarity[ring_pairs].mean() > trained_similarity[ring[:, None] & interior[None, :]].mean() + 0.1

# %% [markdown]
# > **Common confusion:** this picture is often called "attention" ("the closer to yellow, the higher the attention").
# > It is not. It compares rows of a parameter table, $E_\text{pos}$, with each other: no image enters
# > it, and it is the same for every input. Attention weights depend on the image, the layer, the head and the query, and
# > come from $q k^\top$ of the *tokens* (patch content plus position), passed through LayerNorm and the learned $U_{qkv}$.
#
# ### F.2 Attention maps
#
# Run 16 test digits through the shipped model and keep every attention map: a list of 4 layers, each (images, heads, 50, 50).
# For a query token (the [CLS] token, or a patch), its row of the attention matrix, reshaped to the $7 \times 7$ grid, says where
# it read from. The widget is `course_lib.topics.vit.attention_explorer` (chapters 05 and 13 use it too): pick the image, the
# layer, the head (or their mean), the query ([CLS], or a patch chosen by its **row** and **column** on the $7 \times 7$ grid,
# which is token $1 + 7r + c$), attention or rollout (F.3), and a softmax temperature (F.4).

# %%
x_show, y_show = x_test[:16], y_test[:16]
with torch.no_grad():
    show_logits, show_attentions = shipped(x_show.to(DEVICE), return_attention=True)
show_attentions = [a.cpu() for a in show_attentions]  # 4 x (16, 4, 50, 50)
predictions = show_logits.argmax(1).cpu()
print(len(show_attentions), "layers of", tuple(show_attentions[0].shape))
titles = [f"a {y}, predicted {p}" for y, p in zip(y_show.tolist(), predictions.tolist())]
course_lib.topics.vit.attention_explorer(x_show, show_attentions, patch_size=patch, prefix_tokens=1, titles=titles,
                                      image=0, layer=3, query=0)

# %% [markdown]
# Things to look for. Set the layer to 0 and the query to the patch at row 3, column 3 (the centre patch, token 25): each
# head looks in its own direction from the query (on this 7: head 0 mostly up, head 2 to the right, head 3 to the left; the
# next cell prints each head's mean offset), much as the taps of a convolution kernel would, learned from data. Then the
# [CLS] query in layers 1-3: most of its weight sits on the patches with ink. A query on an empty corner patch spreads its
# attention more than the centre patch's (a higher entropy, printed). Patch queries send only about 2% of their weight to
# [CLS] (printed per layer). And every image gives different maps, unlike the position-embedding grid of F.1.
#
# Two numbers over 256 test digits: the share of the [CLS] token's attention (heads averaged) that lands on patches with
# ink, per layer, against the share of patches that have ink; and the ViT paper's "mean attention distance" of each head,
# the distance between a patch query and the patches it attends to, weighted by attention, in pixels.

# %%
x_many = x_test[:256]
with torch.no_grad():
    _, many_attentions = shipped(x_many.to(DEVICE), return_attention=True)
many_attentions = [a.cpu() for a in many_attentions]
ink = F.avg_pool2d(x_many, patch).flatten(1) > 0.1  # (256, 49): patches whose mean grey value is above 0.1
ink_share = [(a.mean(1)[:, 0, 1:] * ink).sum(1).mean().item() for a in many_attentions]  # per layer
print(f"patches with ink: {ink.float().mean():.2f} of all; [CLS] attention on them, layers 0-3: "
      + ", ".join(f"{share:.2f}" for share in ink_share))
assert min(ink_share[1:]) > 2 * ink.float().mean()
rows_of, cols_of = torch.arange(grid * grid) // grid, torch.arange(grid * grid) % grid  # each patch's row and column
centre_row = many_attentions[0][0, :, 1 + 3 * grid + 3, 1:]  # (heads, 49): layer 0, image 0 (a 7), centre-patch query
centre_row = centre_row / centre_row.sum(-1, keepdim=True)
offset_rows = (centre_row * (rows_of - 3)).sum(-1)  # attention-weighted mean offset, in patches (negative: up)
offset_cols = (centre_row * (cols_of - 3)).sum(-1)  # (negative: left)
print("layer 0, image 0, centre-patch query: mean offset of each head's attention (rows, columns; - is up/left): "
      + ", ".join(f"head {h} ({r:+.2f}, {c:+.2f})" for h, (r, c) in enumerate(zip(offset_rows, offset_cols))))
to_cls = [a[:, :, 1:, 0].mean().item() for a in many_attentions]  # patch queries' weight on [CLS], per layer
entropy = lambda rows: -(rows * rows.clamp_min(1e-12).log()).sum(-1).mean().item()  # mean entropy of attention rows (nats)
corner_entropy, centre_entropy = (entropy(many_attentions[1][:, :, token]) for token in (1, 1 + 3 * grid + 3))
print("patch queries' weight on [CLS], layers 0-3: " + ", ".join(f"{share:.3f}" for share in to_cls)
      + f"; layer 1, entropy of the attention of the corner patch {corner_entropy:.2f} nats, of the centre patch "
        f"{centre_entropy:.2f} (uniform over 50 tokens {math.log(50):.2f})")
assert offset_rows[0] < -0.5 and offset_cols[2] > 0.3 and offset_cols[3] < -0.5
assert max(to_cls) < 0.05 and corner_entropy > centre_entropy

attention_distance = course_lib.topics.vit.mean_attention_distance(many_attentions, (grid, grid), patch_size=patch)  # (L, h)
uniform_distance = (distance * patch).mean().item()
fig, ax = plt.subplots(figsize=(6, 3.4))
for layer_index, per_head in enumerate(attention_distance):
    ax.scatter(np.full(len(per_head), layer_index), per_head, color="C0")
ax.axhline(uniform_distance, color="k", ls=":", label=f"uniform attention ({uniform_distance:.1f} px)")
ax.set(xlabel="layer", ylabel="mean attention distance (pixels)", xticks=range(len(attention_distance)),
       title="each dot is a head (256 test digits, patch queries)")
ax.legend()
plt.show()
print(np.round(attention_distance.numpy(), 1))

# %% [markdown]
# In this tiny model every head, in every layer, attends over most of the digit: mean distances of 12-14 pixels against 14.4
# for uniform attention (the layer-0 heads have a direction, not a short range). With only $7 \times 7$ patches there is little
# "far" to avoid. In ViT-B/16 on ImageNet (the paper's figure 7) some early-layer heads are local and others global, and the
# distances grow with depth: a ViT learns how local to be from data, and on a small problem it need not be local at all.
#
# ### F.3 Attention rollout
#
# A single layer's map says what the layer mixes, not what the output token ends up made of: layer 3 reads tokens that
# are already mixtures. Attention rollout (Abnar and Zuidema 2020) composes the layers. In a block the residual path
# carries each token to itself and attention mixes the tokens with the head-averaged weights $\bar A_\ell$; count the two
# equally,
#
# $$
# \tilde A_\ell = \tfrac{1}{2}\big(\bar A_\ell + I\big), \qquad R = \tilde A_L \tilde A_{L - 1} \cdots \tilde A_1 ,
# $$
#
# and read row 0 of $R$ (the [CLS] output) over the patch columns. Each $\tilde A_\ell$ is **row-stochastic** (non-negative, rows sum to 1: the
# rows of $\bar A_\ell$ and of $I$ do), and so is a product of them: if $S \mathbf{1} = \mathbf{1}$ and $R \mathbf{1} = \mathbf{1}$ then
# $(R S)\mathbf{1} = R (S \mathbf{1}) = R \mathbf{1} = \mathbf{1}$. Row $i$ of $R$ is a distribution over the input tokens. Written out, and checked against
# `course_lib.topics.vit.attention_rollout`:

# %%
def my_rollout(attentions):
    """depth x (B, h, T, T) -> (B, T, T): product of (head-mean + I) / 2, last layer on the left."""
    result = None
    for weights in attentions:
        mixed = 0.5 * (weights.mean(1) + torch.eye(weights.shape[-1]))  # (B, T, T), rows sum to 1
        result = mixed if result is None else mixed @ result
    return result


rollout = my_rollout(show_attentions)  # (16, 50, 50)
assert torch.allclose(rollout, attention_rollout(show_attentions), atol=1e-6)
assert torch.allclose(rollout.sum(-1), torch.ones(16, 50), atol=1e-5) and (rollout >= 0).all()
identity_layers = [torch.eye(50).expand(16, 4, 50, 50)] * 4  # attention that only looks at itself
assert torch.allclose(attention_rollout(identity_layers), torch.eye(50).expand(16, 50, 50))
print("rollout == course_lib.topics.vit.attention_rollout; rows are distributions; identity attention rolls out to I")

fig, axes = plt.subplots(3, 8, figsize=(13, 5.4))
for i in range(8):
    axes[0, i].imshow(x_show[i, 0], cmap="gray")
    axes[0, i].set_title(titles[i], fontsize=8)
    axes[0, i].axis("off")
    last_cls = show_attentions[-1][i].mean(0)[0, 1:].reshape(grid, grid)  # layer 3, heads averaged, [CLS] row
    course_lib.core.plotting.overlay_heatmap(x_show[i], last_cls, ax=axes[1, i])
    course_lib.core.plotting.overlay_heatmap(x_show[i], rollout[i, 0, 1:].reshape(grid, grid), ax=axes[2, i])
axes[1, 0].set_title("last layer, [CLS]", fontsize=8, loc="left")
axes[2, 0].set_title("rollout, [CLS]", fontsize=8, loc="left")
plt.show()

# %% [markdown]
# > **Common confusion:** rollout is a heuristic, not an explanation with a guarantee. It ignores the values, the MLPs,
# > LayerNorm and the actual sizes of the residual and attention branches (the $\tfrac{1}{2}$ is an assumption), and a map of where
# > information flowed is not a map of what the decision depended on. Variants fuse the heads with the max or min instead of
# > the mean and drop the smallest weights (the `vit-explain` code offers both); gradient-weighted versions exist. Read it
# > next to the single-layer maps, never instead of them.
#
# ### F.4 Softmax temperature (optional deep dive)
#
# A common shortcut when drawing attention is to skip the softmax because it "makes visualisation hard". What the
# softmax does is make rows peaky; a temperature $T$ flattens ($T > 1$) or sharpens ($T < 1$) them: $\operatorname{softmax}(z / T)$. We do not
# even need the logits $z$ to do that: from the weights $a = \operatorname{softmax}(z)$,
#
# $$
# \log a_j = z_j - c, \quad c = \log \sum_m e^{z_m}, \qquad
# \operatorname{softmax}\Big(\frac{\log a}{T}\Big)_j = \frac{e^{(z_j - c)/T}}{\sum_m e^{(z_m - c)/T}} = \frac{e^{-c/T} e^{z_j / T}}{e^{-c/T} \sum_m e^{z_m / T}} = \operatorname{softmax}\Big(\frac{z}{T}\Big)_j .
# $$
#
# Re-softmaxing the log-weights divided by $T$ is exactly scaling the logits by $1/T$ (`course_lib.topics.vit.temper_attention`; the
# widget's T slider). Checked on the trained model's first layer, whose logits we recompute from its $U_{qkv}$:

# %%
with torch.no_grad():
    tokens0 = torch.cat([shipped.cls_tokens(16), shipped.patch_tokens(x_show.to(DEVICE))], dim=1)  # z_0: (16, 50, D)
    block0 = shipped.blocks[0]
    q0, k0, _ = block0.attn.split_heads(block0.norm1(tokens0))  # (16, h, 50, D_h) each
    logits0 = (q0 @ k0.transpose(-2, -1) / math.sqrt(q0.shape[-1])).cpu()  # (16, h, 50, 50)
assert torch.allclose(torch.softmax(logits0, -1), show_attentions[0], atol=1e-6)
for temperature in (0.3, 1.0, 3.0, 10.0, 30.0):
    difference = (temper_attention(show_attentions[0], temperature) - torch.softmax(logits0 / temperature, -1)).abs().max()
    print(f"T = {temperature:4}: max |softmax(log a / T) - softmax(z / T)| = {difference:.1e}")
    assert difference < 1e-5

# %%
fig, axes = plt.subplots(1, 5, figsize=(13, 2.9))
query_patch = 1 + 3 * grid + 3  # the centre patch
for ax, temperature in zip(axes, (0.5, 1, 3, 10, 30)):
    weights_t = temper_attention(show_attentions[0][0, 1], temperature)[query_patch, 1:].reshape(grid, grid)
    ax.imshow(weights_t, cmap="viridis", vmin=0)
    ax.set(xticks=[], yticks=[], title=f"T = {temperature}: max {weights_t.max():.2f}")
fig.suptitle("layer 0, head 1, query = centre patch: the same weights at five temperatures "
             "(each panel scaled to its own maximum)", fontsize=10)
plt.show()

# %% [markdown]
# At $T = 30$ the map is almost uniform ($1/50$ per token): large temperatures wash out everything, so two pictures at
# $T = 10$ and $T = 30$ must differ: if they look the same, one of them was not recomputed.
#
# ---
# ## G. CvT: convolutions back in (optional deep dive)
#
# A ViT must learn from data which patches matter to which (F.1 and F.2 showed what ours learned). CvT (Wu et al. 2021) builds
# locality in, in two places (a convolutional token embedding at the start of every stage, G.1, and a convolutional
# projection for $q$, $k$ and $v$ inside every block, G.2), and stacks stages that shrink the token grid and widen the tokens,
# like a CNN: 3 stages in the paper's CvT-13, 2 in this chapter's MNIST CvT (`course_lib.topics.cvt.schematic()`):

# %%
course_lib.topics.cvt.schematic()
plt.show()

# %% [markdown]
#
# ### G.1 Convolutional token embedding
#
# Each stage starts with a convolution of kernel $s$, stride $s - o$ ($o$ the overlap) and padding $p$, applied to the previous
# stage's token map $x_{i-1} \in \mathbb{R}^{H_{i-1} \times W_{i-1} \times C_{i-1}}$, then LayerNorm over the channels of each token. The output side is
# chapter 03's formula,
#
# $$
# H_i = \Big\lfloor \frac{H_{i-1} + 2p - s}{s - o} \Big\rfloor + 1, \qquad W_i = \Big\lfloor \frac{W_{i-1} + 2p - s}{s - o} \Big\rfloor + 1 .
# $$
#
# CvT-13's three embeddings are $(s, \text{stride}, p) = (7, 4, 2), (3, 2, 1), (3, 2, 1)$: at $224^2$ the grids are $56 \to 28 \to 14$. Checked
# against `nn.Conv2d` (on the `meta` device: shapes only, no arithmetic), at 224, at 384 and for this chapter's MNIST CvT:

# %%
def stage_sides(size, stages):
    sides = []
    for stage in stages:
        size = conv_output_size(size, stage["kernel"], stage["stride"], stage["padding"])
        sides.append(size)
    return sides


for image_size, config in [(224, course_lib.topics.cvt.CVT_13), (384, course_lib.topics.cvt.CVT_13),
                           (28, dict(channels=1, stages=course_lib.topics.cvt.MNIST_STAGES))]:
    x_meta = torch.empty(1, config["channels"], image_size, image_size, device="meta")
    measured = []
    with torch.device("meta"):
        for stage in config["stages"]:
            conv = nn.Conv2d(x_meta.shape[1], stage["dim"], stage["kernel"], stage["stride"], stage["padding"])
            x_meta = conv(x_meta)
            measured.append(x_meta.shape[-1])
    assert measured == stage_sides(image_size, config["stages"])
    print(f"{image_size:3d}: token grids {' -> '.join(f'{s}x{s}' for s in measured)} (formula and nn.Conv2d agree)")

# %% [markdown]
# The MNIST CvT here has two stages: a $7 \times 7$ kernel with stride 2 and padding 3 ($28 \to 14$, 32 channels, 1 block), then $3 \times 3$,
# stride 2, padding 1 ($14 \to 7$, 64 channels, 3 blocks with [CLS]). Stage 1's tokens overlap: each sees $7 \times 7$ pixels, and the next
# token, 2 pixels along, shares 5 of its 7 columns. The embedding step by step, against `course_lib.topics.cvt.ConvEmbedding`:

# %%
generator = seed_everything(6)
embedding = ConvEmbedding(1, 32, kernel=7, stride=2, padding=3)
with torch.no_grad():
    embedding.norm.weight.add_(0.1 * torch.randn(32, generator=generator))
    maps = embedding.conv(images)  # (B, 32, 14, 14)
    tokens = maps.flatten(2).transpose(1, 2)  # (B, 196, 32): row-major, like patchify
    my_tokens = F.layer_norm(tokens, (32,), embedding.norm.weight, embedding.norm.bias)  # per token, over channels
    library_tokens, token_grid = embedding(images)
print(f"images {tuple(images.shape)} -> conv {tuple(maps.shape)} -> tokens {tuple(tokens.shape)} on a {token_grid} grid")
assert torch.allclose(my_tokens, library_tokens, atol=1e-6) and token_grid == (14, 14)

# %% [markdown]
# **Translation.** A convolution commutes with shifts: move the image down by one stride (2 pixels, zeros coming in at the
# top) and the token map moves down by exactly one token, as long as nothing falls off the bottom edge. A ViT's patch tokens
# do not: the patch embedding commutes with shifts by $P$ pixels, but $E_\text{pos}$ is added by index, so the content of a shifted patch
# arrives with another position's embedding.

# %%
empty_bottom = (x_test[:100, 0, -4:, :].amax(dim=(1, 2)) == 0).nonzero()[0, 0]  # a digit whose bottom 4 rows are empty
digit = x_test[empty_bottom][None]  # (1, 1, 28, 28)
shifted = F.pad(digit, (0, 0, 2, 0))[..., :28, :]  # 2 pixels down, zeros in at the top
with torch.no_grad():
    token_map = embedding(digit)[0].transpose(1, 2).reshape(1, 32, 14, 14)
    shifted_map = embedding(shifted)[0].transpose(1, 2).reshape(1, 32, 14, 14)
cvt_gap = (shifted_map[:, :, 1:] - token_map[:, :, :-1]).abs().max().item()
shifted_by_patch = F.pad(digit, (0, 0, 4, 0))[..., :28, :]  # one ViT patch (4 pixels) down
with torch.no_grad():
    vit_tokens = shipped.patch_tokens(digit.to(DEVICE)).cpu().reshape(1, 7, 7, -1)  # content + position
    vit_shifted = shipped.patch_tokens(shifted_by_patch.to(DEVICE)).cpu().reshape(1, 7, 7, -1)
vit_gap = (vit_shifted[:, 1:] - vit_tokens[:, :-1]).abs().max().item()
print(f"CvT embedding: shifted map vs map moved one token down, max difference {cvt_gap:.1e}")
print(f"ViT patch tokens (with E_pos): the same comparison for a 4-pixel shift, max difference {vit_gap:.2f}")
assert cvt_gap < 1e-5 < vit_gap

# %% [markdown]
# CvT therefore uses **no position embeddings**: the convolutions (and the zero padding at the border) tell a token where it
# is relative to its neighbours. In the paper's ablation removing them leaves CvT-13 unchanged (81.6% vs 81.5%), while DeiT-S
# loses 1.8 points. The comparison in G.4 trains our CvT without any.
#
# ### G.2 Convolutional projection
#
# Inside every block, before the linear maps to $q$, $k$ and $v$, the tokens are put back on their grid and filtered by a
# **depthwise** $3 \times 3$ convolution (one filter per channel, `groups=C`), then BatchNorm, then flattened (paper eq. 2):
#
# $$
# x^{q/k/v} = \operatorname{Flatten}\big(\operatorname{Conv2d}(\operatorname{Reshape2D}(x), s)\big), \qquad
# q = x^{q} W_q,\; k = x^{k} W_k,\; v = x^{v} W_v .
# $$
#
# So each token is mixed with its $3 \times 3$ neighbours *before* attention compares tokens. A depthwise conv followed by a linear
# map (the "pointwise" $1 \times 1$ conv, an `nn.Linear` in the official code) is a depthwise-separable convolution, much cheaper than a full one:
#
# $$
# \underbrace{s^2 C^2}_{\text{full } s \times s \text{ conv}} \quad\text{vs}\quad \underbrace{s^2 C + C^2}_{\text{depthwise + pointwise}}, \qquad
# C = 384,\ s = 3:\ 1{,}327{,}104 \text{ vs } 150{,}912 .
# $$

# %%
full, separable = course_lib.topics.cvt.full_vs_separable_parameters(384, 3)
with torch.device("meta"):
    full_conv = nn.Conv2d(384, 384, 3, padding=1, bias=False)
    depthwise = nn.Conv2d(384, 384, 3, padding=1, groups=384, bias=False)
    pointwise = nn.Linear(384, 384, bias=False)
assert full == full_conv.weight.numel() == 1_327_104
assert separable == depthwise.weight.numel() + pointwise.weight.numel() == 150_912
print(f"C = 384, 3x3: full conv {full:,} weights, depthwise + pointwise {separable:,} ({full / separable:.1f}x fewer)")

# %% [markdown]
# **Squeezed keys and values.** The depthwise conv for $k$ and $v$ uses stride 2: a $14 \times 14$ grid gives $7 \times 7$ keys, a $7 \times 7$ grid
# gives $4 \times 4$. With $T$ queries and $T/4$ keys the two attention products cost $2 \cdot T \cdot \tfrac{T}{4} \cdot C$ multiply-adds instead of $2 T^2 C$, 4 times less.
# The [CLS] token has no place on the grid: it is split off before the convolutions and concatenated to $q$, $k$ and $v$ after
# them. Step by step, against `course_lib.topics.cvt.ConvAttention` (BatchNorm in eval mode with non-trivial running statistics):

# %%
generator = seed_everything(7)
D, heads, grid2 = 64, 4, (7, 7)
layers = {name: nn.Conv2d(D, D, 3, stride=1 if name == "q" else 2, padding=1, groups=D, bias=False) for name in "qkv"}
norms = {name: nn.BatchNorm2d(D).eval() for name in "qkv"}
linears = {name: nn.Linear(D, D) for name in "qkv"}
out_linear = nn.Linear(D, D)
with torch.no_grad():
    for bn in norms.values():
        bn.running_mean.normal_(0, 0.5, generator=generator)
        bn.running_var.uniform_(0.5, 2.0, generator=generator)
        bn.weight.normal_(1, 0.1, generator=generator)


def my_conv_attention(x, grid2, trace=None):
    """x (B, 1 + h*w, D) with [CLS] first -> (B, 1 + h*w, D), weights (B, heads, 1 + h*w, 1 + h'*w')."""
    b, t, d = x.shape
    cls, patch_tokens = x[:, :1], x[:, 1:]  # the [CLS] token skips the convolutions
    token_map = patch_tokens.transpose(1, 2).reshape(b, d, *grid2)  # Reshape2D: (B, D, 7, 7)
    projected = {}
    for name in "qkv":
        filtered = norms[name](layers[name](token_map))  # (B, D, 7, 7) for q; (B, D, 4, 4) for k, v
        flat = torch.cat([cls, filtered.flatten(2).transpose(1, 2)], dim=1)  # (B, 1 + 49, D) or (B, 1 + 16, D)
        projected[name] = linears[name](flat).reshape(b, -1, heads, d // heads).transpose(1, 2)  # (B, heads, ., D_h)
        if trace is not None:
            trace.append((f"{name}: conv map {tuple(filtered.shape)} -> heads", projected[name]))
    attended, weights = my_attention(projected["q"], projected["k"], projected["v"])  # (B, heads, 50, D_h)
    return out_linear(attended.transpose(1, 2).reshape(b, t, d)), weights


x_tokens = torch.randn(8, 1 + 49, D, generator=generator)
trace = []
with torch.no_grad():
    my_out, my_weights = my_conv_attention(x_tokens, grid2, trace)
for name, tensor in trace + [("attention weights", my_weights), ("output", my_out)]:
    print(f"{name:42s} {tuple(tensor.shape)}")

library_attention = ConvAttention(D, heads, kernel=3, stride_kv=2, prefix_tokens=1).eval()
state = {}
for name in "qkv":
    state.update({f"conv_{name}.0.{key}": value for key, value in layers[name].state_dict().items()})
    state.update({f"conv_{name}.1.{key}": value for key, value in norms[name].state_dict().items()})
    state.update({f"proj_{name}.{key}": value for key, value in linears[name].state_dict().items()})
state.update({f"proj.{key}": value for key, value in out_linear.state_dict().items()})
library_attention.load_state_dict(state)
with torch.no_grad():
    library_out, library_weights = library_attention(x_tokens, grid2)
    changed_cls = x_tokens.clone()
    changed_cls[:, 0] += 1.0
    q_a, k_a, v_a = library_attention.conv_qkv(x_tokens, grid2)
    q_b, k_b, v_b = library_attention.conv_qkv(changed_cls, grid2)
assert torch.allclose(my_out, library_out, atol=1e-5) and torch.allclose(my_weights, library_weights, atol=1e-6)
assert all(torch.equal(a[:, 1:], b[:, 1:]) for a, b in [(q_a, q_b), (k_a, k_b), (v_a, v_b)])
print("ours == course_lib.topics.cvt.ConvAttention; 50 queries attend to 17 keys; "
      "changing [CLS] leaves every convolved token unchanged (it never enters a conv)")

# %% [markdown]
# > **Common confusion:** a common reading of the CvT architecture is "each stage is repeated $N_i$ times". In fact it is the
# > **Transformer blocks within stage $i$** that repeat $N_i$ times (CvT-13: 1, 2, 10). The squeezed projection is often said to cost "almost
# > no accuracy": the paper's table 7 (Wu et al. 2021) has stride 1 at 6.55 GFLOPs and 82.3% against stride 2 at 4.53 GFLOPs and 81.6%, a
# > 0.7-point drop for 31% fewer FLOPs (the paper's text says 0.3%, its own table 0.7; G.3 counts the same 31% saving on our
# > CvT-13). "CvT consistently outperforms ViTs and ResNets" on
# > transfer overclaims: in the paper's table 4 ViT-H/16 is best on Pets (94.82 vs 94.73). And "attention looks at local neighbourhoods
# > before going global" means, precisely: the depthwise convolution mixes each token with its $3 \times 3$ neighbours before $q$, $k$, $v$
# > are formed. One more, for anyone loading the official weights: `microsoft/CvT` scales the logits by `dim_out ** -0.5`, the full
# > width $D$, not $D_h$; `course_lib.topics.cvt` follows the paper's $1/\sqrt{D_h}$.
#
# ### G.3 Counting multiply-adds, by hand and by torch
#
# For a ViT with $T = N + 1$ tokens each block costs $3TD^2$ ($U_{qkv}$) $+ 2T^2 D$ ($q k^\top$ and $A v$, all heads together) $+ TD^2$ ($U_{msa}$)
# $+ 2TDM$ (MLP) multiply-adds; add $N P^2 C D$ for the patch embedding and $DK$ for the head. A CvT block with $T_q$ queries on an $h \times w$ grid
# and $T_{kv}$ keys on the strided grid costs $9C(hw + 2h'w')$ (depthwise) $+ (T_q + 2T_{kv}) C^2 + 2 T_q T_{kv} C + T_q C^2 + 2 T_q C M$.
# `course_lib.topics.vit.multiply_adds` and `course_lib.topics.cvt.multiply_adds` are these sums. `torch.utils.flop_counter.FlopCounterMode` measures the
# same thing from the operations that actually run (it counts 2 FLOPs per multiply-add and skips normalisations, softmax
# and GELU, as we do). On the two tiny models, on ViT-B/16 and on CvT-13 (built on the `meta` device: no memory, no arithmetic):

# %%
cvt_model = CvT()  # course_lib.topics.cvt.MNIST_STAGES, MLP ratio 2, like the tiny ViT
cnn_model = MnistClassifier()
rows = []
for name, model, size in [("tiny ViT (P = 4)", ViT(**cfg.model), 28), ("tiny CvT", cvt_model, 28)]:
    analytic = (course_lib.topics.vit.multiply_adds(model, size) if isinstance(model, ViT)
                else course_lib.topics.cvt.multiply_adds(model, size))
    measured = measured_multiply_adds(model.eval(), torch.rand(1, 1, size, size))
    rows.append((name, sum(p.numel() for p in model.parameters()), analytic, measured))
with torch.device("meta"):
    vit_b16 = ViT(image_size=224, patch_size=16, channels=3, dim=768, depth=12, heads=12, mlp_ratio=4.0, num_classes=1000)
    cvt_13 = CvT(**course_lib.topics.cvt.CVT_13)
    cvt_13_unsqueezed = CvT(**course_lib.topics.cvt.CVT_13, stride_kv=1)
    x_224 = torch.empty(1, 3, 224, 224)
    for name, model in [("ViT-B/16", vit_b16), ("CvT-13", cvt_13), ("CvT-13, k/v stride 1", cvt_13_unsqueezed)]:
        analytic = (course_lib.topics.vit.multiply_adds(model, 224) if isinstance(model, ViT)
                    else course_lib.topics.cvt.multiply_adds(model, 224))
        rows.append((name, sum(p.numel() for p in model.parameters()), analytic, measured_multiply_adds(model.eval(), x_224)))
print(f"{'model':22s} {'parameters':>12s} {'multiply-adds (formula)':>24s} {'(FlopCounterMode / 2)':>22s}")
for name, n_params, analytic, measured in rows:
    print(f"{name:22s} {n_params:12,} {analytic:24,} {measured:22,}")
    assert analytic == measured
cnn_macs = measured_multiply_adds(cnn_model, torch.rand(1, 1, 28, 28))
print(f"{'CNN (MnistClassifier)':22s} {sum(p.numel() for p in cnn_model.parameters()):12,} {'':>24s} {cnn_macs:22,}")

# %% [markdown]
# The formulas and the counter agree to the multiply-add. Against the papers: ViT-B/16 at $224^2$ comes out at 17.56 G, where papers'
# tables list about 17.5 G for it (as DeiT-B); CvT-13 at 4.57 G against the paper's 4.53 G, and 6.64 G with unstrided keys and
# values against its 6.55 G (within 1.5%: the official counter may count a term differently; we have not traced which). Our
# CvT-13 has 19,997,480 parameters; the paper says 19.98M.
#
# > **Common confusion:** "FLOPs" in vision papers (ResNet-50's 4.1 G, ViT-B/16's 17.5 G, CvT-13's 4.5 G) are **multiply-adds**.
# > `FlopCounterMode` counts a multiply-add as 2 FLOPs, so it prints twice the papers' numbers (fvcore, used by many vision
# > repositories, counts it as 1). Say which one you report.
#
# Where the tiny models spend them, per image:

# %%
vit_small = ViT(**cfg.model)
T_vit, D_vit, M_vit = 50, 64, 128
vit_parts = {"embedding": 49 * 16 * 64, "q/k/v/out linear": 4 * (4 * T_vit * D_vit**2),
             "attention products": 4 * 2 * T_vit**2 * D_vit, "depthwise convs": 0, "MLP": 4 * 2 * T_vit * D_vit * M_vit,
             "head": 64 * 10}
cvt_parts = {"embedding": 196 * 32 * 49 + 49 * 64 * 32 * 9,
             "q/k/v/out linear": 1 * (196 + 2 * 49 + 196) * 32**2 + 3 * (50 + 2 * 17 + 50) * 64**2,
             "attention products": 1 * 2 * 196 * 49 * 32 + 3 * 2 * 50 * 17 * 64,
             "depthwise convs": 1 * 9 * 32 * (196 + 2 * 49) + 3 * 9 * 64 * (49 + 2 * 16),
             "MLP": 1 * 2 * 196 * 32 * 64 + 3 * 2 * 50 * 64 * 128, "head": 64 * 10}
assert sum(vit_parts.values()) == course_lib.topics.vit.multiply_adds(vit_small, 28)
assert sum(cvt_parts.values()) == course_lib.topics.cvt.multiply_adds(cvt_model, 28)
fig, ax = plt.subplots(figsize=(8, 3.4), layout="constrained")
left = {"ViT": 0, "CvT": 0}
for i, part in enumerate(vit_parts):
    for model_name, parts in [("ViT", vit_parts), ("CvT", cvt_parts)]:
        ax.barh(model_name, parts[part] / 1e6, left=left[model_name], color=f"C{i}", label=part if model_name == "ViT" else None)
        left[model_name] += parts[part] / 1e6
ax.set(xlabel="million multiply-adds per 28x28 image", title="same budget, spent differently")
ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.3))
plt.show()

# %% [markdown]
# ### G.4 ViT vs CvT vs CNN on the same small budget
#
# Three models, the same 5,000 training digits, the same number of steps, batch size, optimiser (AdamW, warm-up and cosine) and
# learning rate: the tiny ViT (139k parameters, 7.9M multiply-adds per image), the tiny CvT (137k, 7.8M, no position
# embeddings) and the small CNN `course_lib.eval.fid.MnistClassifier` (the FID feature extractor of chapters 08-13), freshly
# initialised (421k parameters, most of them in one
# dense layer; 4.2M multiply-adds). Test accuracy is measured on centred test digits and on the same digits shifted by 2 and 4
# pixels (zeros coming in), a translation none of them saw in training. Under `ci` this is a handful of steps, a smoke test (10
# steps leave the ViT at chance, 10%, and the CvT near 40%); the `cpu` profile gives numbers worth comparing.

# %%
compare_cfg = per_profile(ci=dict(steps=10, batch_size=64, n_train=5_000, n_test=200, lr=2e-3),
                          cpu=dict(steps=300, batch_size=128, n_train=5_000, n_test=10_000, lr=2e-3),
                          gpu=dict(steps=1_500, batch_size=128, n_train=5_000, n_test=10_000, lr=2e-3))


def shift_images(x, pixels):
    """Move images down and right by ``pixels`` (zeros coming in): (N, C, H, W) -> (N, C, H, W)."""
    return F.pad(x, (pixels, 0, pixels, 0))[..., :x.shape[-2], :x.shape[-1]]


def train_small_budget(model, seed=0):
    generator = seed_everything(seed)
    model = model.to(DEVICE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=compare_cfg.lr, weight_decay=0.05)
    batches = minibatches(x_train[:compare_cfg.n_train], y_train[:compare_cfg.n_train], batch_size=compare_cfg.batch_size,
                          generator=generator)
    history = fit(model, classification_loss, batches, steps=compare_cfg.steps, optimizer=optimizer, device=DEVICE,
                  scheduler=warmup_cosine(optimizer, max(compare_cfg.steps // 20, 1), compare_cfg.steps),
                  desc=type(model).__name__)
    x_eval, y_eval = x_test[:compare_cfg.n_test], y_test[:compare_cfg.n_test]
    return history, {shift: accuracy(model, shift_images(x_eval, shift), y_eval) for shift in (0, 2, 4)}


seed_everything(0)
contenders = {"ViT": ViT(**cfg.model), "CvT": CvT(), "CNN": MnistClassifier()}
results = {name: train_small_budget(model) for name, model in contenders.items()}
print(f"{compare_cfg.steps} steps of batch {compare_cfg.batch_size} on {compare_cfg.n_train:,} digits; "
      f"test accuracy on {compare_cfg.n_test:,} digits")
print(f"{'model':5s} {'parameters':>10s} {'train time':>10s} {'centred':>8s} {'shift 2':>8s} {'shift 4':>8s}")
for name, (history, acc) in results.items():
    n_params = sum(p.numel() for p in contenders[name].parameters())
    print(f"{name:5s} {n_params:10,} {history.wall_time_s:9.1f}s {acc[0]:8.3f} {acc[2]:8.3f} {acc[4]:8.3f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
for name, (history, acc) in results.items():
    course_lib.core.plotting.plot_losses(history, smooth=max(1, compare_cfg.steps // 30), ax=axes[0], title="training loss")
    axes[1].plot([0, 2, 4], [acc[s] for s in (0, 2, 4)], "o-", label=name)
axes[0].legend(list(results))
axes[1].set(xlabel="shift of the test digits (pixels)", ylabel="test accuracy", title="translation the models never saw",
            xticks=[0, 2, 4])
axes[1].legend()
plt.show()

# %% [markdown]
# What the `cpu` profile gave (300 steps of batch 128 on 5,000 digits, all 10,000 test digits; under `ci` the models have barely
# started):
#
# | model | parameters | train time (2 shared CPU cores) | centred | shifted 2 px | shifted 4 px |
# |---|---|---|---|---|---|
# | ViT | 139,018 | 71 s | 0.815 | 0.392 | 0.170 |
# | CvT | 137,482 | 76 s | 0.950 | 0.486 | 0.147 |
# | CNN | 421,642 | 22 s | 0.972 | 0.703 | 0.099 |
#
# On a small budget the built-in locality pays: the CvT, with the same parameter count and multiply-adds as the ViT, gets 95.0%
# where the ViT gets 81.5%, and the CNN learns fastest of all. None of the three is translation invariant: a 2-pixel shift (down
# and right) costs the ViT and the CvT about half their accuracy and the CNN a quarter, and at 4 pixels (5.7 pixels diagonally) all
# three are near chance. The ViT's position embeddings tie strokes to absolute places; the CvT's zero padding gives its tokens
# absolute position too (discussion question 5); the CNN's dense layer reads a fixed 7 x 7 map. Convolutions are translation
# *equivariant* (G.1), a classifier built from them is invariant only if its last steps pool over positions. (The shipped ViT
# was trained with random shifts of up to 2 pixels, the usual remedy: learn the invariance from data.)
#
# ### G.5 Swin: attention inside shifted windows (optional deep dive)
#
# Global attention over the $hw$ tokens of an $h \times w$ map compares every token with every other: its two products cost
# $2(hw)^2 C$ multiply-adds, quadratic in the number of tokens, so four times the pixels cost sixteen times the attention. Swin (Liu
# et al. 2021) builds locality in a third way: attention only **inside non-overlapping $M \times M$ windows** ($M = 7$ in the paper),
# which is linear in $hw$, and in every second block the windows are **shifted by $\lfloor M/2 \rfloor$** so that information crosses the
# window borders. (Swin also merges $2 \times 2$ neighbouring tokens between stages, $4C \to 2C$ channels, a hierarchy like CvT's, and
# adds a learned relative position bias to the logits; this section builds the attention alone, without the bias.)
# Two consecutive blocks (`course_lib.topics.vit.swin_schematic()`):

# %%
course_lib.topics.vit.swin_schematic()
plt.show()

# %% [markdown]
# **Windows.** Cut a $(B, H, W, C)$ map into $M \times M$ windows, each a short sequence of $M^2$ tokens, and stack the windows into the batch;
# the reverse puts them back. The same reshape, permute, reshape as `patchify` in A, on tokens instead of pixels:

# %%
def my_window_partition(x, window):
    """(B, H, W, C) -> (B * H/M * W/M, M*M, C): windows row-major, tokens row-major inside each window."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c)  # (B, H/M, M, W/M, M, C)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (B, H/M, W/M, M, M, C): window index first
    return x.reshape(-1, window * window, c)  # (B * nW, M*M, C)


def my_window_reverse(windows, window, h, w):
    """(B * H/M * W/M, M*M, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.reshape(-1, h // window, w // window, window, window, c)  # (B, H/M, W/M, M, M, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)  # (B, H/M, M, W/M, M, C) -> (B, H, W, C)


generator = seed_everything(10)
feature_map = torch.randn(2, 8, 12, 32, generator=generator)  # (B, H, W, C): an 8 x 12 map of 32-channel tokens
my_windows = my_window_partition(feature_map, 4)  # (2 * 2 * 3, 16, 32)
assert torch.equal(my_windows, course_lib.topics.vit.window_partition(feature_map, 4))
assert torch.equal(my_window_reverse(my_windows, 4, 8, 12), feature_map)
assert torch.equal(my_windows[1], feature_map[0, 0:4, 4:8].reshape(16, 32))  # window 1 = rows 0-3, columns 4-7
print(f"map {tuple(feature_map.shape)} -> windows {tuple(my_windows.shape)} -> back to {tuple(feature_map.shape)}")

# %% [markdown]
# **The shifted windows.** Shifting the window grid by $s = \lfloor M/2 \rfloor$ cuts the map into more, smaller windows at the borders
# ($\lceil h/M \rceil + 1$ per side instead of $\lceil h/M \rceil$). Swin keeps the number of windows by a **cyclic shift**: `torch.roll` moves the
# map $s$ rows up and $s$ columns left, the first $s$ rows and columns wrap around to the bottom and right, and the regular partition of the
# rolled map *is* the shifted partition. A window at the bottom or the right edge now holds tokens that were far apart (the wrapped-around ones
# and their new neighbours), so a **mask** lets a token attend only to tokens of its own region: label the rolled map's rows $0 \dots h - M - 1$,
# $h - M \dots h - s - 1$ and $h - s \dots h - 1$ as 0, 1, 2, the same for the columns, and allow a pair only if both labels agree. After
# attention, `torch.roll` by $+s$ puts every token back.

# %%
def my_region_labels(h, w, window, shift):
    """(H, W) labels 0..8 of the rolled map: 3 * row region + column region; different labels were not neighbours."""
    row_region = (torch.arange(h) >= h - window).long() + (torch.arange(h) >= h - shift).long()  # (H,) 0, 1 or 2
    col_region = (torch.arange(w) >= w - window).long() + (torch.arange(w) >= w - shift).long()  # (W,)
    return 3 * row_region[:, None] + col_region[None, :]  # (H, W)


def my_window_attention(x, qkv, proj, heads, window, shift=0):
    """x (B, H, W, C) -> (B, H, W, C): multi-head attention inside M x M windows, shifted cyclically by `shift` first."""
    b, h, w, c = x.shape
    if shift:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))  # row `shift` becomes row 0, rows 0..shift-1 wrap to the bottom
    windows = my_window_partition(x, window)  # (B * nW, M², C)
    q, k, v = qkv(windows).reshape(-1, window**2, 3, heads, c // heads).permute(2, 0, 3, 1, 4)  # 3 x (B nW, heads, M², C_h)
    mask = None
    if shift:
        label_windows = my_window_partition(my_region_labels(h, w, window, shift)[None, :, :, None], window)[..., 0]  # (nW, M²)
        mask = (label_windows[:, :, None] == label_windows[:, None, :]).repeat(b, 1, 1)[:, None]  # (B nW, 1, M², M²)
    out, _ = my_attention(q, k, v, mask)  # (B nW, heads, M², C_h)
    out = proj(out.transpose(1, 2).reshape(-1, window**2, c))  # concatenate the heads: (B nW, M², C)
    out = my_window_reverse(out, window, h, w)  # (B, H, W, C)
    return torch.roll(out, shifts=(shift, shift), dims=(1, 2)) if shift else out  # the reverse shift


print(my_region_labels(8, 8, 4, 2))

# %% [markdown]
# **A numeric check.** Window attention, shifted or not, is ordinary global attention over all $hw$ tokens (in their original order) with
# a mask: a pair may attend if and only if both tokens land in the same window of the rolled map *and* have the same region label. The naive
# version below builds that $hw \times hw$ mask explicitly, token by token, and runs `my_attention` from B.2 on the whole sequence. Without
# a shift the mask is block-diagonal once the tokens are sorted by window; with a shift it is not. Both must agree with the windowed
# computation, and with `course_lib.topics.vit.WindowAttention` given the same weights:

# %%
def naive_window_mask(h, w, window, shift):
    """(H*W, H*W) bool over the tokens in their original row-major order: True where a query may attend."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")  # original positions, (H, W) each
    rolled_rows, rolled_cols = (rows - shift) % h, (cols - shift) % w  # where each token lands after the roll
    window_id = ((rolled_rows // window) * (w // window) + rolled_cols // window).flatten()  # (H*W,)
    region = my_region_labels(h, w, window, shift)[rolled_rows, rolled_cols].flatten()  # (H*W,)
    return (window_id[:, None] == window_id[None, :]) & (region[:, None] == region[None, :])


def naive_masked_attention(x, qkv, proj, heads, allowed):
    """Global multi-head attention over all H*W tokens with an explicit (H*W, H*W) mask: (B, H, W, C) -> (B, H, W, C)."""
    b, h, w, c = x.shape
    q, k, v = qkv(x.reshape(b, h * w, c)).reshape(b, h * w, 3, heads, c // heads).permute(2, 0, 3, 1, 4)  # 3 x (B, heads, N, C_h)
    out, _ = my_attention(q, k, v, allowed)  # (B, heads, N, C_h)
    return proj(out.transpose(1, 2).reshape(b, h * w, c)).reshape(b, h, w, c)


library_window = course_lib.topics.vit.WindowAttention(32, heads=4, window=4)
qkv_linear, proj_linear = library_window.attention.qkv, library_window.attention.proj
with torch.no_grad():
    for shift in (0, 2):
        windowed = my_window_attention(feature_map, qkv_linear, proj_linear, 4, 4, shift)
        allowed = naive_window_mask(8, 12, 4, shift)  # (96, 96)
        naive = naive_masked_attention(feature_map, qkv_linear, proj_linear, 4, allowed)
        gap_naive = (windowed - naive).abs().max().item()
        gap_library = (windowed - library_window(feature_map, shift)).abs().max().item()
        print(f"shift {shift}: windowed vs naive masked attention {gap_naive:.1e}, vs WindowAttention {gap_library:.1e}; "
              f"each query sees {allowed.sum(1).float().mean():.1f} of 96 tokens on average")
        assert gap_naive < 1e-5 and gap_library < 1e-5
        if shift == 0:  # sort the tokens by window: the mask becomes 6 blocks of 16 x 16 ones on the diagonal
            order = my_window_partition(torch.arange(96).reshape(1, 8, 12, 1), 4).flatten()  # token indices, window by window
            assert torch.equal(allowed[order][:, order], torch.block_diag(*[torch.ones(16, 16, dtype=torch.bool)] * 6))

# %% [markdown]
# Which token attends to which, on an $8 \times 8$ map with $M = 4$ and $s = 2$: left, the regular windows of block $l$; middle, the windows of
# block $l + 1$ drawn on the original positions (same colour = same window of the rolled map), with the tokens that two queries (stars) see
# marked by dots; right, the mask of the bottom-right window of the rolled map (16 tokens from four regions that were never neighbours).

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 4), layout="constrained")
rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
for ax, shift, title in [(axes[0], 0, "block l: 4 windows of 4 x 4"), (axes[1], 2, "block l + 1: windows shifted by 2")]:
    rolled_rows, rolled_cols = (rows - shift) % 8, (cols - shift) % 8
    window_id = (rolled_rows // 4) * 2 + rolled_cols // 4  # (8, 8), in original positions
    ax.imshow(window_id, cmap="Pastel1", vmin=0, vmax=8)
    allowed = naive_window_mask(8, 8, 4, shift)  # (64, 64)
    for query, colour in [(3 * 8 + 3, "C0"), (0, "C3")]:
        seen = allowed[query].reshape(8, 8).nonzero()
        ax.scatter(seen[:, 1] + (0.15 if colour == "C3" else -0.15), seen[:, 0], s=18, color=colour)
        ax.scatter(query % 8, query // 8, marker="*", s=260, color=colour, edgecolor="black")
    ax.set(title=title, xticks=range(8), yticks=range(8))
corner_mask = course_lib.topics.vit.shifted_window_mask(8, 8, 4, 2)[-1]  # (16, 16): the bottom-right window
axes[2].imshow(corner_mask, cmap="gray_r")
axes[2].set(title="mask of the bottom-right rolled window", xlabel="key (token in the window)", ylabel="query")
plt.show()

# %% [markdown]
# The blue query (row 3, column 3) sees its own $4 \times 4$ window in block $l$ and, in block $l + 1$, a window that straddles all four old
# windows: two blocks carry information across the borders. The red query (row 0, column 0) sits in a wrapped-around corner: after the roll it is
# in the bottom-right window with tokens from the opposite edges, and the mask leaves it the $2 \times 2$ tokens that really are its neighbours.
#
# **The cost.** Per layer, with $hw$ tokens of width $C$ (Liu et al. 2021, eq. 1 and 2; $q$, $k$, $v$ and the output projection give $4hwC^2$):
#
# $$
# \Omega(\text{MSA}) = 4hwC^2 + 2(hw)^2 C, \qquad \Omega(\text{W-MSA}) = 4hwC^2 + 2M^2 hwC .
# $$
#
# The shift and the mask add no multiply-adds. `course_lib.topics.vit.attention_multiply_adds` is the formula; `FlopCounterMode` measures the
# library modules on the `meta` device (shapes only), with $C = 96$ and $M = 7$ as in Swin-T's first stage (a $56 \times 56$ map at $224^2$):

# %%
C_swin, M_swin = 96, 7
with torch.device("meta"):
    global_msa = MultiHeadAttention(C_swin, 3)
    window_msa = course_lib.topics.vit.WindowAttention(C_swin, 3, M_swin)
print(f"{'map':>9s} {'MSA (formula)':>15s} {'(measured)':>15s} {'SW-MSA (formula)':>17s} {'(measured)':>15s} {'ratio':>6s}")
for side in (14, 28, 56):
    x_meta = torch.empty(1, side, side, C_swin, device="meta")
    measured_global = measured_multiply_adds(global_msa, x_meta.reshape(1, side * side, C_swin))
    measured_window = measured_multiply_adds(window_msa, x_meta, M_swin // 2)
    formula_global = course_lib.topics.vit.attention_multiply_adds(side, side, C_swin)
    formula_window = course_lib.topics.vit.attention_multiply_adds(side, side, C_swin, window=M_swin)
    assert (formula_global, formula_window) == (measured_global, measured_window)
    print(f"{side:4d}x{side:<4d} {formula_global:15,} {measured_global:15,} {formula_window:17,} {measured_window:15,} "
          f"{formula_global / formula_window:6.1f}")
assert abs(formula_global / formula_window - 13.8) < 0.05  # side 56, the last row: the number quoted below

sides = np.arange(7, 225, 7)
fig, ax = plt.subplots(figsize=(7, 3.4), layout="constrained")
ax.plot(sides, [course_lib.topics.vit.attention_multiply_adds(s, s, C_swin) / 1e9 for s in sides], label="global MSA")
ax.plot(sides, [course_lib.topics.vit.attention_multiply_adds(s, s, C_swin, window=M_swin) / 1e9 for s in sides],
        label="(shifted) window MSA, M = 7")
ax.set(xlabel="side of the token map (h = w)", ylabel="G multiply-adds per layer", yscale="log",
       title="one attention layer, C = 96: quadratic against linear in hw")
ax.legend()
plt.show()

# %% [markdown]
# At $56 \times 56$ global attention costs 13.8 times the windowed layer, and the gap grows with $hw$ (the ratio is
# $(4C + 2hw) / (4C + 2M^2)$). What the windows give up: a token sees $M^2 = 49$ others per layer instead of all of them, and reaches far
# tokens only through the shifts over several blocks and through patch merging.
#
# > **Common confusion:** a common reading is "Swin's shifted windows overlap, like a sliding window". In fact the windows of each block tile
# > the map without overlap; it is the two *consecutive* partitions that overlap each other. Another: "the cyclic shift lets the left and right
# > edges of the image attend to each other". The mask exists to stop exactly that; with the mask, SW-MSA equals the naive masked attention above,
# > in which no pair across the wrap-around is allowed. And the shift is $\lfloor M/2 \rfloor$ tokens, not pixels: 3 tokens of $4 \times 4$ pixels
# > in Swin-T's first stage.
#
# ---
# ## H. Exercises
#
# Each exercise cell below holds a working solution; in the student version it is replaced by a stub. Write your own, run
# the check cell, and reveal the reference only when stuck.
#
# **Exercise 1: patchify.** Write `my_patchify(images, patch_size)`: $(B, C, H, W) \to (B, N, C P^2)$, patches in row-major order, each
# flattened in the order (channel, row, column).

# %% tags=["exercise"]
def my_patchify(images, patch_size):
    """(B, C, H, W) -> (B, N, C P^2): patches in row-major order, each flattened (channel, row, column)."""
    ### BEGIN SOLUTION
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)  # (B, H/P, W/P, C, P, P)
    return x.reshape(b, (h // p) * (w // p), c * p * p)
    ### END SOLUTION


# %%
generator = seed_everything(8)
course_lib.core.check.check_function(my_patchify, patchify,
                                [(torch.rand(2, 1, 28, 28, generator=generator), 4),
                                 (torch.rand(3, 3, 8, 12, generator=generator), 4),
                                 (torch.rand(1, 3, 32, 32, generator=generator), 16)])

# %%
course_lib.core.check.show_solution(course_lib.topics.vit.patchify)

# %% [markdown]
# **Exercise 2: scaled dot-product attention.** Write `my_sdpa(q, k, v)` returning the output *and* the weights, for any leading batch
# dimensions. The check compares both with `course_lib.topics.vit.scaled_dot_product_attention`. (Try a wrong scale, $1/d_k$ or none: the
# softmax turns a wrong factor on the logits into weights that no constant factor fixes, so the check reports where they differ.)

# %% tags=["exercise"]
def my_sdpa(q, k, v):
    """softmax(q k^T / sqrt(d_k)) v: the output (..., T, d_v) and the weights (..., T, T)."""
    ### BEGIN SOLUTION
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return weights @ v, weights
    ### END SOLUTION


# %%
sdpa_inputs = [tuple(torch.randn(2, 4, n, 16, generator=generator) for n in (10, 10, 10)),
               (torch.randn(3, 7, 8, generator=generator), torch.randn(3, 5, 8, generator=generator),
                torch.randn(3, 5, 4, generator=generator))]
course_lib.core.check.check_function(lambda q, k, v: my_sdpa(q, k, v)[0], lambda q, k, v: scaled_dot_product_attention(q, k, v)[0],
                                sdpa_inputs, name="my_sdpa output")
course_lib.core.check.check_function(lambda q, k, v: my_sdpa(q, k, v)[1], lambda q, k, v: scaled_dot_product_attention(q, k, v)[1],
                                sdpa_inputs, name="my_sdpa weights")

# %%
course_lib.core.check.show_solution(course_lib.topics.vit.scaled_dot_product_attention)

# %% [markdown]
# **Exercise 3: the parameter count, and ViT-B/16.** Write `my_vit_parameter_count(image_size, patch_size, channels, dim, depth, mlp_hidden,
# num_classes)` from the formula of D.4 (no model). Then use it for ViT-B/16: $224^2$ RGB images, $P = 16$, $D = 768$, 12 blocks, MLP
# width 3072, 1000 classes. The paper's table says "86M"; the exact number, which timm's `vit_base_patch16_224` also has, is
# 86,567,656.

# %% tags=["exercise"]
def my_vit_parameter_count(image_size, patch_size, channels, dim, depth, mlp_hidden, num_classes):
    """The number of parameters of this ViT (an int), computed from the sizes alone."""
    ### BEGIN SOLUTION
    n = (image_size // patch_size) ** 2
    embedding = (patch_size**2 * channels + 1) * dim + dim + (n + 1) * dim
    block = 4 * dim + 3 * dim * dim + 3 * dim + dim * dim + dim + 2 * dim * mlp_hidden + mlp_hidden + dim
    return embedding + depth * block + 2 * dim + (dim + 1) * num_classes
    ### END SOLUTION


# %%
count_inputs = [(28, 4, 1, 64, 4, 128, 10), (224, 16, 3, 768, 12, 3072, 1000), (32, 4, 3, 256, 6, 512, 10),
                (224, 14, 3, 1280, 32, 5120, 1000)]
course_lib.core.check.check_function(lambda *args: torch.tensor(my_vit_parameter_count(*args)),
                                lambda *args: torch.tensor(parameter_count(*args)), count_inputs,
                                name="my_vit_parameter_count", rtol=0, atol=0)
vit_b16_count = my_vit_parameter_count(224, 16, 3, 768, 12, 3072, 1000)
assert vit_b16_count == 86_567_656 == sum(p.numel() for p in vit_b16.parameters()), vit_b16_count
print(f"ViT-B/16: {vit_b16_count:,} parameters (formula) = {sum(p.numel() for p in vit_b16.parameters()):,} (the meta-device model)")

# %%
course_lib.core.check.show_solution(course_lib.topics.vit.parameter_count)

# %% [markdown]
# **Exercise 4: attention rollout.** Write `my_attention_rollout(stacked)` for attention maps stacked as (depth, B, heads, T, T): average the heads,
# mix in the identity with weight $\tfrac{1}{2}$, multiply with the **last layer on the left**, and return (B, T, T). The check uses maps of the
# shipped model and random ones; multiplying in the wrong order gives a different matrix.

# %% tags=["exercise"]
def my_attention_rollout(stacked):
    """Attention rollout of stacked maps (depth, B, heads, T, T): (B, T, T), the last layer on the left."""
    ### BEGIN SOLUTION
    result = torch.eye(stacked.shape[-1]).expand(stacked.shape[1], -1, -1)
    for weights in stacked:
        result = 0.5 * (weights.mean(1) + torch.eye(weights.shape[-1])) @ result
    return result
    ### END SOLUTION


# %%
random_maps = torch.softmax(3 * torch.randn(3, 2, 4, 10, 10, generator=generator), dim=-1)
course_lib.core.check.check_function(my_attention_rollout, lambda stacked: attention_rollout(list(stacked)),
                                [torch.stack(show_attentions)[:, :4], random_maps], atol=1e-5)

# %%
course_lib.core.check.show_solution(course_lib.topics.vit.attention_rollout)

# %% [markdown]
# **Exercise 5: a token's logit with itself.** *Derive, then check.* B.1 took the query and the key independent. Some
# attention layers share one map for both ($W_q = W_k$), and then a token compares itself with itself: $s = q^\top q / \sqrt{d_k}$.
# Take $q \sim \mathcal{N}(0, \sigma^2 I)$ in $d_k$ dimensions and derive $\mathbb{E}[s]$ and $\operatorname{Var}(s)$ with every step, as in B.1
# (for a Gaussian, $\mathbb{E}[q_j^4] = 3\sigma^4$). Code the result as `my_self_logit_moments(d_k, sigma)`, returning
# `torch.tensor([mean, variance])`; the check compares it with a Monte Carlo estimate from 100,000 samples. Before running the
# cell after the check, write down what your result predicts: with $W_q = W_k$ and random tokens, does a query's attention on
# *itself* grow, shrink or stay put as $d_k$ grows, given that the logits with the other tokens have mean 0 and variance $\sigma^4$?

# %% tags=["exercise"]
def my_self_logit_moments(d_k, sigma):
    """The mean and the variance of a query's logit with itself when W_q = W_k: a tensor [mean, variance]."""
    ### BEGIN SOLUTION
    mean = d_k * sigma**2 / math.sqrt(d_k)  # d_k terms q_j^2 of mean sigma^2 each
    variance = d_k * (3 * sigma**4 - sigma**4) / d_k  # Var(q_j^2) = E[q_j^4] - sigma^4, independent terms add
    return torch.tensor([mean, variance])
    ### END SOLUTION


# %%
def monte_carlo_self_logit(d_k, sigma, n=100_000):
    """Mean and variance of q.q / sqrt(d_k) over n samples q ~ N(0, sigma^2 I): tensor([mean, variance])."""
    q = sigma * torch.randn(n, d_k, generator=torch.Generator().manual_seed(d_k))  # (n, d_k)
    s = q.pow(2).sum(1) / math.sqrt(d_k)  # (n,)
    return torch.stack([s.mean(), s.var()])


course_lib.core.check.check_function(my_self_logit_moments, monte_carlo_self_logit, [(4, 1.0), (16, 0.5), (64, 1.5)],
                                     rtol=0.05, atol=0.0)

# %%
course_lib.core.check.show_solution(course_lib.topics.vit.self_logit_moments)

# %%
generator = seed_everything(9)
print(f"{'d_k':>4} {'weight on itself, W_q = W_k':>28} {'with independent q, k':>22}   (50 random tokens; uniform = 0.02)")
for d_k in (4, 16, 64, 256):
    tokens_x = torch.randn(50, d_k, generator=generator)  # (50, d_k): q = k = x
    other_k = torch.randn(50, d_k, generator=generator)  # (50, d_k): an independent key map
    shared = torch.softmax(tokens_x @ tokens_x.T / math.sqrt(d_k), -1).diagonal().mean().item()
    separate = torch.softmax(tokens_x @ other_k.T / math.sqrt(d_k), -1).diagonal().mean().item()
    print(f"{d_k:4d} {shared:28.3f} {separate:22.3f}")

# %% [markdown]
# **Exercise 6: how much does the mask remove?** *Derive, then check.* Take a square $n \times n$ token map, $n$ a multiple of $M$, shifted by
# $r = \lfloor M/2 \rfloor$ as in G.5. Of all the (query, key) pairs inside the $(n/M)^2$ windows of the rolled map, $(n/M)^2 M^4$ in all, which
# fraction does the mask allow? Count by kind of window: a window away from the bottom and right edges holds one region; a window on the
# last column (or the last row) but not the corner holds two regions, of $M(M - r)$ and $Mr$ tokens; the bottom-right window holds four, of
# $(M - r)^2$, $(M - r)r$, $r(M - r)$ and $r^2$ tokens; a region of $t$ tokens gives $t^2$ allowed pairs. Code the result as
# `my_allowed_pair_fraction(side, window)`; the check counts the `True` entries of the library's mask. Before running the cell after the
# check, write down what your formula says for $M = 7$ as the map grows from $14 \times 14$ to $56 \times 56$ (Swin-T's first stage) and
# beyond: does the mask matter less or more?

# %% tags=["exercise"]
def my_allowed_pair_fraction(side, window):
    """The fraction of query-key pairs that shifted-window attention's mask allows on a side x side map."""
    ### BEGIN SOLUTION
    r = window // 2
    n_windows = (side // window) ** 2
    n_edge = 2 * (side // window - 1)  # last column and last row, without the corner
    inner = (n_windows - n_edge - 1) * window**4
    edge = n_edge * ((window * (window - r)) ** 2 + (window * r) ** 2)
    corner = (window - r) ** 4 + 2 * ((window - r) * r) ** 2 + r**4  # four regions, t^2 pairs each
    return torch.tensor((inner + edge + corner) / (n_windows * window**4), dtype=torch.float64)
    ### END SOLUTION


# %%
def mask_pair_fraction(side, window):
    """The fraction of True entries of the shifted-window mask: tensor (float64)."""
    mask = course_lib.topics.vit.shifted_window_mask(side, side, window, window // 2)  # (nW, M², M²)
    return mask.double().mean()


course_lib.core.check.check_function(my_allowed_pair_fraction, mask_pair_fraction, [(8, 4), (14, 7), (28, 7), (12, 4), (15, 5)],
                                     rtol=1e-9, atol=1e-12)

# %%
course_lib.core.check.show_solution(course_lib.topics.vit.allowed_pair_fraction)

# %%
for side in (14, 28, 56, 112, 224):
    print(f"M = 7, {side:3d} x {side:<3d}: the mask allows {course_lib.topics.vit.allowed_pair_fraction(side, 7):.3f} of the "
          f"pairs inside the windows")

# %% [markdown]
# ---
# ## Summary
#
# | key equation | derived in | checked by |
# |---|---|---|
# | $N = HW / P^2$ patches of $P^2 C$ numbers; the patch embedding $x_p^n E$ is a convolution with kernel and stride $P$ | A, A.1 | the asserts in A (torch's unfold) and A.1 (a strided `nn.Conv2d` with copied weights) |
# | $\operatorname{Var}(q^\top k) = d_k$ for unit-variance components, so the logits are divided by $\sqrt{d_k}$, with $d_k = D_h$ the width of one head | B.1 | the Monte Carlo table in B.1; the saturating rows and vanishing softmax Jacobian in the figure of B.1 |
# | $\operatorname{MSA}(z) = [\operatorname{SA}_1(z); \dots; \operatorname{SA}_h(z)]\, U_{msa}$ has $4D^2 + 4D$ parameters for any number of heads | C | the step-by-step layer against `torch.nn.MultiheadAttention` in C |
# | $z_0 = [x_\text{class}; x_p^1 E; \dots; x_p^N E] + E_\text{pos}$, pre-norm blocks, the head on $\operatorname{LN}(z_L^0)$ | D.1, D.3 | the permutation test in D.2; the step-by-step ViT against the library model in D.3; the parameter formula in D.4 and exercise 3 |
# | rollout $R = \tilde A_L \cdots \tilde A_1$, $\tilde A_\ell = \tfrac{1}{2}(\bar A_\ell + I)$, row-stochastic | F.3 | rows summing to 1 and identity attention rolling out to the identity in F.3; exercise 4 in H |
# | $\operatorname{softmax}(\log a / T) = \operatorname{softmax}(z / T)$ | F.4 | logits recomputed from the first layer's $U_{qkv}$ in F.4 |
# | $H_i = \lfloor (H_{i-1} + 2p - s) / (s - o) \rfloor + 1$ for the convolutional token embedding | G.1 | `nn.Conv2d` on the meta device in G.1 |
# | $\Omega(\text{W-MSA}) = 4hwC^2 + 2M^2 hwC$ against $\Omega(\text{MSA}) = 4hwC^2 + 2(hw)^2 C$; shifted windows are a cyclic shift by $\lfloor M/2 \rfloor$, a region mask and the reverse shift | G.5 | the naive masked attention over all tokens and `WindowAttention` in G.5 (shift 0: a block-diagonal mask); `FlopCounterMode` on the meta device in G.5; exercise 6 in H |
#
# **Three things to remember.**
#
# 1. A ViT is the Transformer encoder run on patch tokens plus one [CLS] token; attention treats the tokens as a set, so only the
#    learned position embeddings say where a patch is, and the locality a CNN assumes has to be learned from data.
# 2. Scale the logits by $1/\sqrt{D_h}$, the width of one head: without it the attention rows turn one-hot as the width grows and
#    their gradient vanishes.
# 3. An attention map depends on the image, the layer, the head and the query; a position-embedding similarity grid is not
#    attention, and rollout is a heuristic summary of how information flowed, not an explanation of the decision.

# %% [markdown]
# ---
# ## I. Discussion questions
#
# 1. Multi-head attention has $4D^2 + 4D$ parameters whatever the number of heads. What *does* change with the number of heads, and what
#    would a single head of width $D$ be unable to do that four heads of width $D/4$ can?
# 2. The $1/\sqrt{d_k}$ argument assumed independent unit-variance components. After training they are neither. Why is the scale still useful,
#    and what do some recent models do instead (hint: normalise $q$ and $k$)?
# 3. The position-embedding similarity of F.1 shows neighbours, rows and a border ring. Where could that structure come from, given that the
#    embeddings start random and only the classification loss trains them? Would it appear on a data set of shuffled patches?
# 4. Attention rollout weights the residual path and the attention path equally. Look at the trained model's first layer in the widget:
#    is $\tfrac{1}{2}$ a good guess? How would you estimate the real proportion from the model's activations?
# 5. CvT drops position embeddings, yet its tokens still carry position through the zero padding at the border (G.1, G.4). Which of
#    its components would have to change for its [CLS] output to be exactly invariant to translations of the input?
