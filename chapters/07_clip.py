# ---
# jupyter:
#   course:
#     time_on_cpu:
#       ci:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-05'
#         seconds: 15
#       cpu:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-05'
#         seconds: 106
#       gpu:
#         note: 'no GPU where the course was timed; the shipped recipe (`python -m course_lib.zoo train clip_mnist --profile gpu`) trained in 6 min 55 s on 1 CPU thread shared with two other jobs (9 min 15 s with its evaluation and linear probe): zero-shot 0.9942 on the 10,000 test digits'
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
# # 07 · CLIP: contrastive language-image pre-training
#
# CLIP (Radford et al. 2021) trains an image encoder $f$ and a text encoder $g$ so that a picture and its caption land
# close together on a unit sphere and everything else lands far apart. Nothing in it predicts a label, yet afterwards
# one can classify by writing the class names into sentences ("a photo of a dog") and asking which sentence is nearest
# to the image: **zero-shot classification**. This chapter derives the loss (both directions, as the paper has it),
# checks its properties and its gradient by number, explains the learned temperature and its clamp, then builds a
# tiny CLIP on MNIST digits with templated captions ("a photo of the digit seven", "a handwritten 7") and measures its
# zero-shot accuracy, honestly, on prompts it never saw in training.
#
# **Goals.** After this chapter you can
# - derive CLIP's symmetric InfoNCE loss as two softmax cross entropies, over the rows and over the columns of the
#   $N \times N$ logit matrix, and its gradient $(\operatorname{softmax} - I)/N$ per direction;
# - say why the temperature is learned as $\log(1/\tau)$, why it starts at $\tau = 0.07$ and why $1/\tau$ is clamped at 100;
# - build a word-level tokenizer, a small causal text transformer pooled at its end-of-text token, and a two-tower model;
# - classify by prompt, with one template and with a prompt ensemble, and tell training-template accuracy from held-out-template
#   accuracy; compare with a linear probe;
# - read a similarity matrix and see what the temperature does to its softmax.
#
# **Prerequisites.** Chapter 01 (cross entropy from logits, log-sum-exp, `fit`), chapter 03 (`SmallCNN`), chapter 04
# (attention, the transformer `Block`, masks). Cosine similarity.
#
# **Time.** One study-group session of about 90 minutes (the core path, then the temperature deep dive A.5 if time
# allows, and the discussion F); the exercises (E) take about 40 minutes at home. The plan, what to pre-run and the
# answers to the discussion questions are in [facilitator/07_clip.md](facilitator/07_clip.md).
#
# **Core path.** See it work first, A.1-A.4 (the symmetric loss, its two values, its gradient), B.1-B.5 (captions,
# tokenizer, the two towers, training and its loss floor, the shipped model), C.1 (zero-shot by prompt), D (the
# similarity matrix and the temperature), the summary: about 70 min. The optional deep dive, for a second reading:
# A.5 (why the temperature is learned as $\log(1/\tau)$ and clamped at 100).
#
# **What runs, and how long** (the whole chapter, top to bottom, on a fresh kernel; `ci` with 1 torch thread as the
# test suite runs it, `cpu` with torch's default threads; `make time PROFILE=ci` or `PROFILE=cpu` measures it and
# writes the time here, in the notebook's metadata and in the README):
#
# | profile | what trains | measured |
# |---|---|---|
# | `ci` | the tiny CLIP for 40 steps (batch 64) on 5,000 digits (a smoke test: about 0.25 zero-shot); section C on the first 2,000 test digits | 15 s, measured 2026-12-05 on 2 CPU cores, no GPU, otherwise idle |
# | `cpu` | 1,000 steps of batch 128 on all 60,000 digits (2 epochs); the chapter prints the zero-shot accuracy it reaches and the loss's distance to its floor | 1 min 46 s, measured 2026-12-05 on 2 CPU cores, no GPU, otherwise idle |
# | `gpu` | the shipped recipe: 2,000 steps of batch 128, digits shifted by up to 2 pixels | not measured: no GPU where the course was timed; the shipped recipe (`python -m course_lib.zoo train clip_mnist --profile gpu`) trained in 6 min 55 s on 1 CPU thread shared with two other jobs (9 min 15 s with its evaluation and linear probe): zero-shot 0.9942 on the 10,000 test digits |
#
# Whatever the profile, sections C and D use the shipped checkpoint `clip_mnist`. Set the profile before starting
# JupyterLab: `COURSE_PROFILE=ci`, `cpu` or `gpu`.

# %%
import math
import textwrap

import ipywidgets
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
import course_lib.topics.clip
import course_lib.zoo
from course_lib import device, per_profile, profile, seed_everything
from course_lib.data import load_mnist
from course_lib.topics.clip import (DIGIT_WORDS, HELD_OUT_TEMPLATES, TRAIN_TEMPLATES, TinyCLIP, WordTokenizer,
                                    clip_loss, clip_loss_gradient, cosine_similarity_matrix, fill_template,
                                    image_to_text_loss)
from course_lib.topics.cnn import SmallCNN
from course_lib.topics.vit import Block

DEVICE = device()
generator = seed_everything(0)
print(f"profile = {profile()}, device = {DEVICE}, torch threads = {torch.get_num_threads()}")

# %% [markdown]
# ## See it work first
#
# The shipped tiny CLIP (`clip_mnist`) was never trained to classify: it only learned to put a digit and its caption
# close together. Yet write one prompt per class, "the number zero", ..., "the number nine", and pick for each image the
# prompt it is most similar to: that is a classifier, **zero-shot**. Below, the first test digit of each class against the
# ten prompts: the cosine similarity matrix (rows: images, columns: prompts) and the predicted class under each digit,
# then the accuracy on the first 1,000 test digits.
#
# By the end of this chapter you will have derived and trained this: the loss that shapes this matrix (A), the two
# towers and their training (B), and the prompts (C).

# %%
first_clip = course_lib.zoo.load_shipped("clip_mnist", DEVICE)
x_first, y_first = load_mnist("test")  # (10000, 1, 28, 28), (10000,)
one_of_each = torch.stack([(y_first == k).nonzero()[0, 0] for k in range(10)])  # the first test digit of every class
prompts = [fill_template("the number {word}", k) for k in range(10)]
with torch.no_grad():
    first_similarity = cosine_similarity_matrix(first_clip.encode_image(x_first[one_of_each].to(DEVICE)),
                                                first_clip.encode_text(prompts)).cpu()  # (10, 10)
first_guess = first_similarity.argmax(dim=1)  # (10,): the most similar prompt of each image
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), width_ratios=[1.3, 1])
shown = axes[0].imshow(first_similarity, cmap="viridis")
fig.colorbar(shown, ax=axes[0], fraction=0.046)
axes[0].set_xticks(range(10), prompts, rotation=45, ha="right", fontsize=7)
axes[0].set_yticks(range(10), [f"image of a {k}" for k in range(10)], fontsize=7)
axes[0].set_title("cosine similarity of image and prompt", fontsize=9)
course_lib.core.plotting.image_grid(x_first[one_of_each], nrow=2, ax=axes[1])
axes[1].set_title("the ten digits; predicted, row by row: " + " ".join(str(k) for k in first_guess.tolist()), fontsize=9)
plt.tight_layout()
plt.show()
first_accuracy = course_lib.topics.clip.zero_shot_accuracy(first_clip, x_first[:1000], y_first[:1000], "the number {word}")
print(f"these 10 digits: {(first_guess == torch.arange(10)).sum().item()} of 10 right; zero-shot accuracy with the one "
      f"prompt template on the first 1,000 test digits: {first_accuracy:.3f} (chance: 0.100)")

# %% [markdown]
# ---
# ## A. The loss
#
# ### A.1 The set-up
#
# A batch holds $N$ pairs $(x_i, t_i)$: an image and its caption. The image encoder $f$ and the text encoder $g$ map
# them into the same space $\mathbb{R}^E$. Throughout this chapter $f$ is always the image tower and $g$ the text tower.
# The score of image $i$ against caption $j$ is the **cosine similarity**
#
# $$
# s_{ij} = \frac{f(x_i)^\top g(t_j)}{\lVert f(x_i) \rVert \, \lVert g(t_j) \rVert} \in [-1, 1],
# $$
#
# and the **logits** divide it by a temperature $\tau > 0$: $\ell_{ij} = s_{ij} / \tau$. Row $i$ of the $N \times N$ matrix $\ell$ is
# image $i$ against every caption of the batch; column $j$ is caption $j$ against every image. The $N$ true pairs sit on the
# diagonal; the $N^2 - N$ other entries are the negatives, which come for free from the batch. The whole model in one
# picture (`course_lib.topics.clip.schematic()`), built in section B:

# %%
fig = course_lib.topics.clip.schematic()
plt.show()

# %% [markdown]
# ### A.2 Two cross entropies
#
# **Image to text.** Read row $i$ as a classification problem with $N$ classes, "which caption belongs to image $i$?",
# with a softmax over the row:
#
# $$
# p_{\text{I} \to \text{T}}(j \mid i) = \frac{\exp(\ell_{ij})}{\sum_{k=1}^{N} \exp(\ell_{ik})} .
# $$
#
# The correct class is $j = i$, so the cross entropy of row $i$ is $-\log p_{\text{I} \to \text{T}}(i \mid i) = -\ell_{ii} + \log \sum_k \exp(\ell_{ik})$, and
# averaged over the rows
#
# $$
# \mathcal{L}_{\text{I} \to \text{T}} = -\frac{1}{N} \sum_{i=1}^{N} \log \frac{\exp(s_{ii}/\tau)}{\sum_{k=1}^{N} \exp(s_{ik}/\tau)} .
# $$
#
# **Text to image.** Read column $j$ the same way, "which image belongs to caption $j$?", with a softmax over the column:
#
# $$
# \mathcal{L}_{\text{T} \to \text{I}} = -\frac{1}{N} \sum_{j=1}^{N} \log \frac{\exp(s_{jj}/\tau)}{\sum_{k=1}^{N} \exp(s_{kj}/\tau)} .
# $$
#
# **CLIP's loss is their mean:**
#
# $$
# \mathcal{L} = \tfrac{1}{2} \big( \mathcal{L}_{\text{I} \to \text{T}} + \mathcal{L}_{\text{T} \to \text{I}} \big) .
# $$
#
# A softmax cross entropy over the rows of $\ell$ with targets $0, 1, \dots, N - 1$ is exactly `F.cross_entropy(logits, arange(N))`;
# over the columns it is the same call on `logits.T`. This is the paper's pseudo-code (its Figure 3):
# `loss = (cross_entropy(logits, labels, axis=0) + cross_entropy(logits, labels, axis=1)) / 2`.
#
# > **Common confusion:** many summaries write only the first term, $\mathcal{L}_{\text{I} \to \text{T}}$, as "the CLIP loss".
# > That is the one-directional InfoNCE of contrastive predictive coding. CLIP's loss is **symmetric**: it also asks every
# > caption to pick out its image among the $N$ images. When $\ell$ is a symmetric matrix the two terms are equal (column $j$ is
# > then row $j$), so they **can** differ only when $\ell$ is not symmetric; but not every non-symmetric $\ell$ makes them differ.
# > A circulant matrix, $\ell_{ij} = c_{(j - i) \bmod N}$, is not symmetric unless $c_k = c_{N-k}$, yet every row and every column
# > holds the same $N$ numbers with the same diagonal entry $c_0$, so the two terms are equal. The cell below checks both cases
# > with numbers: a random batch, whose terms differ, and a non-symmetric circulant one, whose terms agree. The one-directional
# > loss never asks caption $k$ to pick out image $k$: a caption may sit nearer another image than its own ($s_{ik} > s_{kk}$) at no
# > extra cost, as long as every image still prefers its own caption.
#
# The step-by-step version, with the shapes:

# %%
def symmetric_infonce(image_embeddings, text_embeddings, temperature):
    """CLIP's loss from raw embeddings (N, E) and (N, E): a scalar."""
    image_unit = image_embeddings / image_embeddings.norm(dim=1, keepdim=True)  # (N, E) on the unit sphere
    text_unit = text_embeddings / text_embeddings.norm(dim=1, keepdim=True)  # (N, E)
    logits = image_unit @ text_unit.T / temperature  # (N, N): row i = image i against every caption
    n = logits.shape[0]
    log_p_image_to_text = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # (N, N): log softmax over each row
    log_p_text_to_image = logits - torch.logsumexp(logits, dim=0, keepdim=True)  # (N, N): log softmax over each column
    loss_image_to_text = -log_p_image_to_text.diagonal().sum() / n
    loss_text_to_image = -log_p_text_to_image.diagonal().sum() / n
    return 0.5 * (loss_image_to_text + loss_text_to_image)


generator = seed_everything(1)
N, E, tau = 8, 16, 0.07
image_emb = torch.randn(N, E, generator=generator, dtype=torch.float64)
text_emb = image_emb + 0.8 * torch.randn(N, E, generator=generator, dtype=torch.float64)  # captions near their images
logits = cosine_similarity_matrix(image_emb, text_emb) / tau  # (N, N)
target = torch.arange(N)

ours = symmetric_infonce(image_emb, text_emb, tau)
reference = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
print(f"symmetric loss, step by step: {ours:.10f}\n0.5 (CE(rows) + CE(columns)): {reference:.10f}"
      f"\ncourse_lib.topics.clip.clip_loss: {clip_loss(logits):.10f}")
assert torch.allclose(ours, reference, atol=1e-12) and torch.allclose(clip_loss(logits), reference, atol=1e-12)
one_way, other_way = image_to_text_loss(logits), image_to_text_loss(logits.T)
print(f"image -> text alone: {one_way:.4f}; text -> image alone: {other_way:.4f}: "
      f"the one-directional loss is off by {abs(one_way - ours):.4f} nats here")
assert abs(one_way - other_way) > 1e-3

circulant = torch.stack([torch.tensor([3.0, 1.0, 0.0, -1.0], dtype=torch.float64).roll(i) for i in range(4)])  # (4, 4)
print("a circulant logit matrix, not symmetric:\n", circulant.numpy())
print(f"its image -> text term {image_to_text_loss(circulant):.6f}, its text -> image term {image_to_text_loss(circulant.T):.6f}")
assert not torch.equal(circulant, circulant.T)
assert torch.allclose(image_to_text_loss(circulant), image_to_text_loss(circulant.T), atol=1e-12)

# %% [markdown]
# ### A.3 Two values it must take
#
# **All embeddings identical.** If $f(x_i) = g(t_j) = v$ for every $i, j$, then every $s_{ij} = 1$ and every logit is the same number
# $c = 1/\tau$. Each softmax is then uniform:
#
# $$
# p(j \mid i) = \frac{e^{c}}{\sum_{k=1}^{N} e^{c}} = \frac{1}{N}, \qquad
# \mathcal{L}_{\text{I} \to \text{T}} = \mathcal{L}_{\text{T} \to \text{I}} = -\log \frac{1}{N} = \log N, \qquad \mathcal{L} = \log N,
# $$
#
# whatever $\tau$ is. This is the loss of a collapsed model, and (nearly) the loss at initialisation, when similarities are
# small and alike: training curves start at $\log N$.
#
# **A joint permutation changes nothing.** Reorder the pairs by a permutation $\pi$, $(x_i, t_i) \to (x_{\pi(i)}, t_{\pi(i)})$. The new matrix is
# $\ell'_{ij} = \ell_{\pi(i)\pi(j)}$: its diagonal holds the same entries $\ell_{\pi(i)\pi(i)}$, and row $i$ holds the entries of row $\pi(i)$ in another
# order. A log-sum-exp does not care about the order of its terms, so each row's cross entropy is one of the old ones, and the sum over
# rows runs over the same terms; the same holds for the columns. The loss depends on the *set* of pairs, not their order. Shuffling the
# captions alone (breaking the pairs) of course changes it.

# %%
for n in (2, 8, 128):
    same = torch.randn(1, E, generator=generator).expand(n, E)  # every embedding the same vector
    loss_same = clip_loss(cosine_similarity_matrix(same, same) / 0.07)
    print(f"N = {n:3d}: loss {loss_same:.6f}, log N = {math.log(n):.6f}")
    assert abs(loss_same - math.log(n)) < 1e-5

perm = torch.randperm(N, generator=generator)
loss_permuted = clip_loss(cosine_similarity_matrix(image_emb[perm], text_emb[perm]) / tau)
loss_broken = clip_loss(cosine_similarity_matrix(image_emb, text_emb[perm]) / tau)
print(f"pairs jointly permuted: {loss_permuted:.10f} (before: {clip_loss(logits):.10f}); captions alone shuffled: {loss_broken:.4f}")
assert torch.allclose(loss_permuted, clip_loss(logits), atol=1e-12) and loss_broken > clip_loss(logits)

# %% [markdown]
# ### A.4 The gradient with respect to the logits
#
# Take one row's term, $\frac{1}{N}\big(-\ell_{ii} + \log \sum_k e^{\ell_{ik}}\big)$, and differentiate by $\ell_{ab}$. It involves only row $a = i$; there
# $\partial \ell_{ii} / \partial \ell_{ib} = \delta_{ib}$ and $\partial \log \sum_k e^{\ell_{ik}} / \partial \ell_{ib} = e^{\ell_{ib}} / \sum_k e^{\ell_{ik}} = p_{\text{I} \to \text{T}}(b \mid i)$. So
#
# $$
# \frac{\partial \mathcal{L}_{\text{I} \to \text{T}}}{\partial \ell_{ab}} = \frac{1}{N} \big( P^{\text{row}}_{ab} - \delta_{ab} \big), \qquad
# P^{\text{row}} = \operatorname{softmax} \text{ of each row of } \ell .
# $$
#
# The column term is the same computation on $\ell^\top$, so its gradient is $\frac{1}{N}(P^{\text{col}}_{ab} - \delta_{ab})$ with $P^{\text{col}}$ the softmax of each
# column. Altogether
#
# $$
# \frac{\partial \mathcal{L}}{\partial \ell} = \frac{1}{2N} \Big[ \big(P^{\text{row}} - I\big) + \big(P^{\text{col}} - I\big) \Big] .
# $$
#
# Read it: a diagonal logit is pushed up with strength $(1 - P_{ii})$ (it stops when the pair already wins its row and column);
# an off-diagonal logit is pushed down in proportion to the probability it steals. Each row of $P^{\text{row}} - I$ sums to zero.

# %%
logits_grad = logits.clone().requires_grad_(True)  # (N, N) float64
clip_loss(logits_grad).backward()
by_hand = 0.5 * ((logits.softmax(dim=1) - torch.eye(N)) / N + (logits.softmax(dim=0) - torch.eye(N)) / N)
print(f"max |autograd - by hand| = {(logits_grad.grad - by_hand).abs().max():.2e}")
assert torch.allclose(logits_grad.grad, by_hand, atol=1e-14)
assert torch.allclose(clip_loss_gradient(logits), by_hand)

fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
for ax, matrix, title in zip(axes, [logits, logits.softmax(dim=1), by_hand],
                             ["logits s_ij / tau", "softmax over each row", "dL / d logits (both directions)"]):
    limit = matrix.abs().max().item()
    shown = ax.imshow(matrix, cmap="RdBu_r" if matrix.min() < 0 else "viridis",
                      vmin=-limit if matrix.min() < 0 else 0, vmax=limit)
    fig.colorbar(shown, ax=ax, fraction=0.046)
    ax.set(title=title, xlabel="caption j", ylabel="image i")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### A.5 The learned temperature, and why it is clamped (optional deep dive)
#
# CLIP learns $\tau$ with everything else. It does not learn $\tau$ itself but `logit_scale` $= \log(1/\tau)$, and multiplies the cosine
# similarities by its exponential, $1/\tau$:
# - $\exp$ keeps $1/\tau$ positive whatever the optimiser does;
# - an additive step in $\log(1/\tau)$ is a multiplicative step in $\tau$, so going from 0.07 to 0.035 costs as much as from 0.014 to 0.007;
# - the paper initialises it "to the equivalent of 0.07", i.e. `logit_scale` $= \log(1/0.07) = 2.659$, $1/\tau = 14.29$, and clips it
#   "to prevent scaling the logits by more than 100" ($\tau \ge 0.01$).
#
# **Why a clamp is needed.** Write $c = 1/\tau$ and $d_{ik} = s_{ik} - s_{ii}$, so row $i$'s term is
#
# $$
# -\log \frac{e^{c s_{ii}}}{\sum_k e^{c s_{ik}}} = \log \sum_{k} e^{c (s_{ik} - s_{ii})} = \log \Big( 1 + \sum_{k \ne i} e^{c\, d_{ik}} \Big) .
# $$
#
# - If the true caption is strictly the nearest ($d_{ik} < 0$ for all $k \ne i$), every $e^{c d_{ik}} \to 0$ as $c \to \infty$: the term falls to 0, and it
#   falls for *every* increase of $c$ ($\partial / \partial c = \sum_k d_{ik} e^{c d_{ik}} / (\dots) < 0$). A batch the model gets right always asks for a
#   smaller $\tau$; nothing in the loss stops $c$ from growing.
# - If some caption $k^\ast$ beats the true one ($d_{ik^\ast} > 0$: a **wrong nearest neighbour**), then for large $c$ the largest exponent
#   dominates, $\log(1 + \sum_k e^{c d_{ik}}) = c\, d_{ik^\ast} + \log\big(e^{-c d_{ik^\ast}} + \sum_k e^{c (d_{ik} - d_{ik^\ast})}\big) \to c\, d_{ik^\ast}$:
#   the loss grows **linearly in $1/\tau$** without bound, and so does its gradient with respect to the embeddings.
#
# So an unbounded learned temperature runs away on the many easy batches, and then the occasional hard one produces a huge loss and
# huge gradients. Clamping $1/\tau$ at 100 bounds both. The cell plots both kinds of batch against $1/\tau$.

# %%
scales = torch.logspace(0, 4, 200, dtype=torch.float64)  # c = 1 / tau from 1 to 10,000
generator = seed_everything(2)
good_image = torch.randn(6, E, generator=generator, dtype=torch.float64)
good_text = good_image + 1.0 * torch.randn(6, E, generator=generator, dtype=torch.float64)
s_good = cosine_similarity_matrix(good_image, good_text)  # (6, 6): every diagonal entry wins its row and column
assert (s_good.argmax(1) == torch.arange(6)).all() and (s_good.argmax(0) == torch.arange(6)).all()
bad_text = good_text.clone()
bad_text[0] = 0.5 * good_text[1] + 0.3 * good_text[0]  # caption 0 moved next to image 1: a wrong nearest neighbour
s_bad = cosine_similarity_matrix(good_image, bad_text)  # (6, 6)


def tau_to_zero_slope(s):
    """lim L / (1/tau) as tau -> 0: (1/2N) [sum_i max(0, max_k d_ik) + the same over the columns]."""
    n = len(s)
    row_gaps = (s - s.diagonal()[:, None]).amax(dim=1).clamp_min(0)  # (N,) max_k (s_ik - s_ii), or 0
    column_gaps = (s - s.diagonal()[None, :]).amax(dim=0).clamp_min(0)  # (N,) max_k (s_kj - s_jj), or 0
    return (row_gaps.sum() + column_gaps.sum()).item() / (2 * n)


slope = tau_to_zero_slope(s_bad)
print(f"rows with a wrong nearest neighbour: {(s_bad.argmax(1) != torch.arange(6)).sum().item()}, "
      f"columns: {(s_bad.argmax(0) != torch.arange(6)).sum().item()}; slope {slope:.4f}; correct batch slope "
      f"{tau_to_zero_slope(s_good):.1f}")
assert slope > 0 and tau_to_zero_slope(s_good) == 0

loss_good = torch.stack([clip_loss(c * s_good) for c in scales])
loss_bad = torch.stack([clip_loss(c * s_bad) for c in scales])
asymptote = scales * slope  # c (1/2N) sum of the positive gaps

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
ax = axes[0]
ax.plot(scales, loss_good, label="every pair wins its row and column")
ax.plot(scales, loss_bad, label="one wrong nearest neighbour")
ax.plot(scales, asymptote, "k:", label="c x (sum of positive gaps) / 2N")
ax.axvline(1 / 0.07, color="C2", ls="--", label="start: 1/0.07 = 14.3")
ax.axvline(100, color="C3", ls="--", label="clamp: 100")
ax.set(xscale="log", yscale="log", xlabel="1 / tau", ylabel="loss (nats)", ylim=(1e-6, 1e3), title="the loss as tau -> 0")
ax.legend(fontsize=7)


def d_loss_d_scale(s, c):
    """dL/dc at logits c s, from d/dc log sum_k exp(c d_ik) = sum_k d_ik softmax_k(c d_i.): exact even where softmax rounds to one-hot."""
    d_rows, d_cols = s - s.diagonal()[:, None], s - s.diagonal()[None, :]  # (N, N) gaps d_ik and their column twins
    rows = (d_rows * (c * d_rows).softmax(dim=1)).sum(dim=1).mean()
    columns = (d_cols * (c * d_cols).softmax(dim=0)).sum(dim=0).mean()
    return 0.5 * (rows + columns)


for c in (1 / 0.07, 100.0):  # against autograd, where float64 still resolves the off-diagonal mass
    c_var = torch.tensor(c, dtype=torch.float64, requires_grad=True)
    clip_loss(c_var * s_good).backward()
    assert torch.allclose(c_var.grad, d_loss_d_scale(s_good, c), rtol=1e-6)
grad_good = [d_loss_d_scale(s_good, c).item() for c in scales]
ax = axes[1]
ax.plot(scales, -np.array(grad_good), color="C0", label="-dL/d(1/tau), correct batch")
ax.axvline(100, color="C3", ls="--")
ax.set(xscale="log", yscale="log", xlabel="1 / tau", ylabel="-dL / d(1/tau)",
       title="a correct batch always asks for a smaller tau")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()
for c in (1 / 0.07, 100, 1e4):
    print(f"1/tau = {c:7.1f}: correct batch {abs(clip_loss(c * s_good).item()):.2e} nats, one wrong neighbour {clip_loss(c * s_bad):7.2f} nats")
assert all(g < 0 for g, c in zip(grad_good, scales) if c <= 1000)  # beyond, exp(-c d) underflows to 0 in float64
assert abs(clip_loss(1e4 * s_bad) - 1e4 * slope) / clip_loss(1e4 * s_bad) < 0.01

# %% [markdown]
# ---
# ## B. A tiny CLIP on MNIST
#
# ### B.1 Captions from templates
#
# The "web" here is MNIST: every training digit gets a caption written from a template picked at random each time it is seen.
# Six templates are used for training; two more are **held out**, never seen in training, and used only at test time. They are new
# combinations of words the training captions contain (a word the model never saw would have an untrained embedding, and the
# tokenizer refuses it, B.2).

# %%
print("training templates:", *TRAIN_TEMPLATES, sep="\n  ")
print("held-out templates:", *HELD_OUT_TEMPLATES, sep="\n  ")
x_train, y_train = load_mnist("train")  # (60000, 1, 28, 28) in [0, 1], (60000,)
x_test, y_test = load_mnist("test")
generator = seed_everything(3)
show = torch.randint(len(x_train), (8,), generator=generator)
show_templates = torch.randint(len(TRAIN_TEMPLATES), (8,), generator=generator)
fig, axes = plt.subplots(1, 8, figsize=(13, 2))
for ax, i, t in zip(axes, show.tolist(), show_templates.tolist()):
    ax.imshow(x_train[i, 0], cmap="gray")
    ax.set_title(fill_template(TRAIN_TEMPLATES[t], y_train[i].item()).replace(" the ", "\nthe ").replace(" of ", "\nof "),
                 fontsize=8)
    ax.axis("off")
plt.show()

# %% [markdown]
# ### B.2 A word-level tokenizer
#
# Real CLIP uses byte-pair encoding over 49,152 tokens. Our captions use 30 words, so a word-level tokenizer does: split on white
# space after lower-casing, look each word up, append an end-of-text token `<eot>`, and pad with `<pad>` (id 0) to a fixed
# context length $L = 8$. Built here, then compared with `course_lib.topics.clip.WordTokenizer`.

# %%
def chapter_vocabulary(captions):
    """['<pad>', '<eot>', then every word of the captions, sorted]."""
    words = sorted({word for caption in captions for word in caption.lower().split()})
    return ["<pad>", "<eot>"] + words


def chapter_encode(caption, vocabulary, context_length=8):
    """One caption -> a list of context_length ids: the words, <eot>, then <pad>s."""
    ids = [vocabulary.index(word) for word in caption.lower().split()] + [vocabulary.index("<eot>")]
    return ids + [0] * (context_length - len(ids))


train_captions = [fill_template(t, k) for t in TRAIN_TEMPLATES for k in range(10)]  # 60 captions
vocabulary = chapter_vocabulary(train_captions)
print(f"{len(vocabulary)} tokens: {vocabulary}")
tokenizer = course_lib.topics.clip.mnist_tokenizer()
assert vocabulary == tokenizer.vocabulary
chapter_tokens = torch.tensor([chapter_encode(c, vocabulary) for c in train_captions])  # (60, 8)
assert torch.equal(chapter_tokens, tokenizer.encode(train_captions))
print("'a handwritten 7' ->", tokenizer.encode("a handwritten 7")[0].tolist())
try:
    tokenizer.encode("a sketch of the digit seven")
except KeyError as error:
    print("KeyError:", error.args[0])

# %% [markdown]
# An out-of-vocabulary word is an error that names the word and the vocabulary: silently mapping it to an "unknown" token would
# let a prompt look like it worked while the model saw something else.
#
# ### B.3 The two towers, step by step
#
# **Image tower.** Chapter 03's `SmallCNN` (three conv stages, global average pooling); its linear head, with `num_classes = E`, is the
# projection into the joint space. Imported, not rewritten.
#
# **Text tower**, as in CLIP but small:
# 1. token embedding (vocabulary $\times$ 64) plus a learned position embedding ($L \times 64$);
# 2. two pre-norm transformer blocks, chapter 04's `Block`, with a **causal** mask: token $i$ attends to tokens $j \le i$ (CLIP's text
#    transformer is causal too), and never to padding;
# 3. a final LayerNorm, then the hidden state **at the `<eot>` token**: with a causal mask it is the only position that has seen the whole
#    caption, and it never sees the padding after it;
# 4. a linear projection, without bias, to $E = 64$.
#
# Both embeddings are normalised, multiplied by $1/\tau$ (the exponential of `logit_scale`, clamped at 100), and compared in a matrix product.

# %%
class ChapterTextEncoder(nn.Module):
    def __init__(self, vocab_size, context_length=8, dim=64, depth=2, heads=4, mlp_ratio=2.0, embed_dim=64, pad_id=0,
                 eot_id=1):
        super().__init__()
        self.pad_id, self.eot_id = pad_id, eot_id
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(0.02 * torch.randn(1, context_length, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.projection = nn.Linear(dim, embed_dim, bias=False)

    def forward(self, tokens):  # (B, L) int64
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.position  # (B, L, dim)
        causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()  # (L, L): key j <= query i
        not_padding = (tokens != self.pad_id)[:, None, None, :]  # (B, 1, 1, L): keys that are words or <eot>
        mask = causal & not_padding  # (B, 1, L, L), broadcast over the heads
        for block in self.blocks:
            x, _ = block(x, mask)  # (B, L, dim)
        x = self.norm(x)
        eot_position = (tokens == self.eot_id).long().argmax(dim=1)  # (B,)
        pooled = x[torch.arange(len(x)), eot_position]  # (B, dim): the hidden state at <eot>
        return self.projection(pooled)  # (B, embed_dim)


class ChapterCLIP(nn.Module):
    def __init__(self, vocab_size, embed_dim=64, channels=(32, 64, 128), init_temperature=0.07, max_logit_scale=100.0):
        super().__init__()
        self.image_encoder = SmallCNN(channels=channels, num_classes=embed_dim)  # (N, 1, 28, 28) -> (N, E)
        self.text_encoder = ChapterTextEncoder(vocab_size, embed_dim=embed_dim)  # (M, L) -> (M, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / init_temperature)))  # log(1 / tau)
        self.max_logit_scale = max_logit_scale

    def forward(self, images, tokens):
        image_unit = F.normalize(self.image_encoder(images), dim=-1)  # (N, E)
        text_unit = F.normalize(self.text_encoder(tokens), dim=-1)  # (M, E)
        return self.logit_scale.exp().clamp(max=self.max_logit_scale) * image_unit @ text_unit.T  # (N, M)


mask_example = tokenizer.encode("the number seven")
causal_mask = torch.ones(8, 8, dtype=torch.bool).tril() & (mask_example != 0)[:, None, :]
print("attention mask for 'the number seven' (rows: queries, columns: keys; 1 = may attend):")
print(causal_mask[0].int().numpy())

# %% [markdown]
# The library version, `course_lib.topics.clip.TinyCLIP`, is the same model (with input checks, `"mean"` pooling and a non-causal option, and its
# own tokenizer). Same weights, same outputs:

# %%
seed_everything(4)
library_model = TinyCLIP(tokenizer.vocabulary).eval()
chapter_model = ChapterCLIP(len(tokenizer)).eval()
chapter_model.load_state_dict(library_model.state_dict())  # the parameter names match one for one
batch_images = x_test[:6]
batch_tokens = tokenizer.encode([fill_template(TRAIN_TEMPLATES[0], y) for y in y_test[:6].tolist()])
with torch.no_grad():
    ours, theirs = chapter_model(batch_images, batch_tokens), library_model(batch_images, batch_tokens)
print(f"logits (6, 6), max |chapter - library| = {(ours - theirs).abs().max():.1e}; 1/tau = {library_model.scale():.2f}")
assert torch.allclose(ours, theirs, atol=1e-5)
print(f"parameters: image tower {sum(p.numel() for p in library_model.image_encoder.parameters()):,}, "
      f"text tower {sum(p.numel() for p in library_model.text_encoder.parameters()):,}")
print(f"untrained loss on this batch {clip_loss(theirs):.3f} vs log 6 = {math.log(6):.3f}")

# %% [markdown]
# ### B.4 Training, and the loss floor that ten classes impose
#
# Each step draws a batch of digits, gives each a caption from a random training template, and takes an AdamW step on $\mathcal{L}$
# (`course_lib.topics.clip.clip_training_loss`). Weight decay applies to the weight matrices only: decaying `logit_scale` would pull $1/\tau$
# towards 1.
#
# > **Common confusion: "the contrastive loss should go to zero".** Not here, and not on any data with repeated classes. In a batch of
# > $N = 128$ digits there are about 13 sevens. Caption $i$, "a handwritten 7", carries nothing that tells image $i$ from the other sevens, and
# > image $i$ carries nothing that tells its caption from the other sevens' captions. The best a model can do is spread each row's probability
# > evenly over the $n_{y_i}$ pairs of its class, which costs $\log n_{y_i}$ in each direction. The floor is $\mathbb{E}\big[\frac{1}{N}\sum_i \log n_{y_i}\big]$
# > over batches, computed below. These same-class pairs are **false negatives**; web-scale CLIP has them too (two captions "a photo of a dog"),
# > just fewer.

# %%
generator = seed_everything(5)
cfg = course_lib.zoo.settings("clip_mnist")
floors = []
for _ in range(2000):
    labels = y_train[torch.randint(len(y_train), (cfg.batch_size,), generator=generator)]
    floors.append(torch.log(torch.bincount(labels, minlength=10)[labels].double()).mean().item())
loss_floor = float(np.mean(floors))
print(f"batch of {cfg.batch_size}: loss floor E[mean log n_y] = {loss_floor:.3f} nats (log N = {math.log(cfg.batch_size):.3f})")

# %%
print(f"profile {cfg.profile}: {cfg.steps} steps of batch {cfg.batch_size} on {cfg.n_train:,} digits; "
      f"max shift {cfg.max_shift} px")
model, history = course_lib.topics.clip.train_clip(cfg, seed=0)
print(f"trained in {history.wall_time_s:.1f} s; last evaluation on {cfg.n_eval:,} test digits: {history.last_eval()}")
print(f"last training loss {np.mean(history.losses[-5:]):.2f} nats (mean of the last 5 steps), floor {loss_floor:.2f}")
if profile() == "ci":
    print(f"(profile ci: {cfg.steps} steps are a smoke test; a zero-shot accuracy near 0.25 and a loss well above the floor "
          "are expected here, not a bug in your code. Under cpu, 1,000 steps reach about 0.99; B.5 loads the shipped model.)")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
axes[0].plot(history.losses, lw=0.6, label="training loss")
axes[0].axhline(math.log(cfg.batch_size), color="k", ls=":", label=f"log N = {math.log(cfg.batch_size):.2f}")
axes[0].axhline(loss_floor, color="C3", ls="--", label=f"false-negative floor {loss_floor:.2f}")
axes[0].set(xlabel="step", ylabel="nats", title="symmetric InfoNCE")
axes[0].legend(fontsize=8)
steps_eval = [step for step, _ in history.evals]
for key, label in [("zero_shot_acc", "training templates (ensemble)"), ("held_out_0_acc", "held-out template 0"),
                   ("held_out_1_acc", "held-out template 1")]:
    axes[1].plot(steps_eval, [e[key] for _, e in history.evals], "o-", label=label)
axes[1].set(xlabel="step", ylabel="zero-shot accuracy", ylim=(0, 1), title=f"{cfg.n_eval:,} test digits")
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()
assert history.losses[0] > loss_floor and min(history.losses) > loss_floor - 0.3

# %% [markdown]
# ### B.5 The shipped model
#
# The rest of the chapter uses the checkpoint `clip_mnist`, trained by the `gpu` recipe
# (`python -m course_lib.zoo train clip_mnist --profile gpu`). It is rebuilt from its manifest entry, and the chapter's own `ChapterCLIP`
# gives the same logits with its weights.

# %%
clip_model = course_lib.zoo.load_shipped("clip_mnist", DEVICE)
entry = course_lib.core.checkpointing.read_manifest()["clip_mnist"]
print(f"shipped: {entry['parameters']:,} parameters, {entry['size_bytes'] / 1e6:.2f} MB, trained {entry['recipe']['steps']} "
      f"steps in {entry['wall_time_s']:.0f} s on {entry['device']}\nmetrics: {entry['metrics']}")
print(f"learned temperature tau = {1 / clip_model.scale().item():.4f} (1/tau = {clip_model.scale().item():.2f}; started at 0.07)")
shipped_chapter = ChapterCLIP(len(clip_model.tokenizer)).to(DEVICE).eval()
shipped_chapter.load_state_dict(clip_model.state_dict())
with torch.no_grad():
    assert torch.allclose(shipped_chapter(batch_images.to(DEVICE), batch_tokens.to(DEVICE)),
                          clip_model(batch_images.to(DEVICE), batch_tokens.to(DEVICE)), atol=1e-4)

# %% [markdown]
# ---
# ## C. Zero-shot classification by prompt
#
# ### C.1 The rule
#
# No classifier is trained. For each class $k$ write a prompt $t_k$ from a template ("the number {word}" gives "the number zero", ...,
# "the number nine"), embed it, and pick the class whose prompt is most similar to the image:
#
# $$
# \hat{y}(x) = \arg\max_k \; \frac{f(x)^\top g(t_k)}{\lVert f(x) \rVert \, \lVert g(t_k) \rVert}, \qquad
# p(k \mid x) = \frac{\exp(s_k / \tau)}{\sum_{k'} \exp(s_{k'} / \tau)} .
# $$
#
# This is row $i$ of the training matrix with the batch's captions replaced by the $K = 10$ class prompts.
#
# **Prompt ensemble.** With several templates $t^{(1)}, \dots, t^{(T)}$, average the *unit* text embeddings per class and renormalise,
# $\bar g_k = \frac{m_k}{\lVert m_k \rVert}$ with $m_k = \frac{1}{T}\sum_{r} \frac{g(t^{(r)}_k)}{\lVert g(t^{(r)}_k) \rVert}$. The mean of unit vectors is shorter than 1 (by how much the templates
# disagree), and by a different amount for each class. With cosine similarities the renormalisation changes nothing (a cosine divides
# by the norm anyway), but code that takes dot products with the ensemble, $\bar g_k^\top f(x) / \tau$, as CLIP's does, needs it: without it a class
# whose templates agree (a longer mean) gets larger logits. Normalising *before* averaging matters in every case: otherwise a template whose
# embeddings happen to be long outvotes the others.

# %%
n_test = per_profile(ci=dict(n=2_000), cpu=dict(n=10_000), gpu=dict(n=10_000)).n  # ci: the first 2,000 only, for time
x_eval, y_eval = x_test[:n_test], y_test[:n_test]
test_features = course_lib.topics.clip.image_features(clip_model, x_eval)  # (n_test, 128) pooled conv3, before the projection
with torch.no_grad():
    test_embeddings = F.normalize(clip_model.image_encoder.head(test_features.to(DEVICE)), dim=-1).cpu()  # (n_test, E)
assert torch.allclose(test_embeddings[:100], course_lib.topics.clip.image_embeddings(clip_model, x_test[:100]), atol=1e-5)
print(f"{n_test:,} test digits")
per_template = torch.stack([course_lib.topics.clip.class_embeddings(clip_model, t) for t in TRAIN_TEMPLATES]).cpu()  # (T, 10, E)
mean_of_units = per_template.mean(dim=0)  # (10, E), shorter than 1
ensemble = course_lib.topics.clip.ensemble_embeddings(per_template)  # (10, E), renormalised
print("norms of the mean of unit embeddings, per class:", mean_of_units.norm(dim=1).numpy().round(3))
by_cosine = cosine_similarity_matrix(test_embeddings, mean_of_units).argmax(1)  # (n_test,)
by_ensemble = (test_embeddings @ ensemble.T).argmax(1)  # dot products with the renormalised ensemble
by_raw_dot = (test_embeddings @ mean_of_units.T).argmax(1)  # dot products with the mean, not renormalised
# The two are equal in exact arithmetic; in floats, a digit whose two best classes score within rounding error may flip.
scores = cosine_similarity_matrix(test_embeddings, mean_of_units)  # (n_test, 10)
top2 = scores.topk(2, dim=1).values
clear_winner = (top2[:, 0] - top2[:, 1]) > 1e-5  # the best class wins by far more than float32 rounding
assert torch.equal(by_cosine[clear_winner], by_ensemble[clear_winner])
print(f"cosine with the mean == dot product with the renormalised mean on all {clear_winner.sum().item():,} digits with a "
      f"clear winner ({(~clear_winner).sum().item()} within 1e-5 of a tie)")
print(f"predictions that change when the mean is not renormalised (dot products): {(by_raw_dot != by_ensemble).sum().item()} "
      f"of {n_test:,}")

rows = []
for name, templates in [(f"train: '{t}'", t) for t in TRAIN_TEMPLATES] + [("train: ensemble of all 6", TRAIN_TEMPLATES)] \
        + [(f"held out: '{t}'", t) for t in HELD_OUT_TEMPLATES] + [("held out: ensemble of both", HELD_OUT_TEMPLATES)]:
    rows.append((name, course_lib.topics.clip.zero_shot_accuracy(clip_model, x_eval, y_eval, templates, test_embeddings)))
for name, acc in rows:
    print(f"{name:<50} {acc:.4f}")
zero_shot_ensemble = dict(rows)["train: ensemble of all 6"]
assert zero_shot_ensemble >= 0.9

# %% [markdown]
# The printed norms of the shipped model are about 0.999: its text tower sends all six wordings of a digit to nearly the same
# point, so the wording barely matters and the held-out templates lose almost nothing. Web captions disagree far more; the CLIP paper
# reports that ensembling 80 prompt templates added 3.5 points of ImageNet accuracy.
#
# **A linear probe** reads the same frozen image features (the 128 pooled conv channels before the projection) with a logistic
# regression trained on labelled digits: what the features know about the class when labels may be used. For reference,
# the supervised `mnist_classifier` (a small CNN trained end to end on the labels; its accuracy on all 10,000 test digits,
# from the manifest). It is not a ceiling here: on the full test set the shipped CLIP's zero-shot accuracy (0.9942 in
# its manifest) is a little above the supervised CNN's 0.9916, and the cell checks both manifest numbers.

# %%
probe_n = per_profile(ci=dict(n=2_000), cpu=dict(n=20_000), gpu=dict(n=60_000)).n
probe_accuracy = course_lib.topics.clip.linear_probe(course_lib.topics.clip.image_features(clip_model, x_train[:probe_n]), y_train[:probe_n],
                                              test_features, y_eval)
supervised = course_lib.core.checkpointing.read_manifest()["mnist_classifier"]["metrics"]["test_accuracy"]
print(f"chance 0.10 | zero-shot (ensemble) {zero_shot_ensemble:.4f} | linear probe on {probe_n:,} labelled digits "
      f"{probe_accuracy:.4f} | supervised CNN {supervised:.4f} (all 10,000 test digits)")
shipped_zero_shot = course_lib.core.checkpointing.read_manifest()["clip_mnist"]["metrics"]["zero_shot_test_accuracy"]
print(f"on all 10,000 test digits (the manifests): shipped CLIP zero-shot {shipped_zero_shot:.4f}, supervised CNN {supervised:.4f}")
assert shipped_zero_shot > supervised - 0.005

predictions = course_lib.topics.clip.zero_shot_predict(test_embeddings, ensemble)
confusion = torch.zeros(10, 10, dtype=torch.long)
confusion.index_put_((y_eval, predictions), torch.ones(n_test, dtype=torch.long), accumulate=True)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw=dict(width_ratios=[1, 1.6]))
shown = axes[0].imshow(confusion.float().log1p(), cmap="viridis")
axes[0].set(xticks=range(10), yticks=range(10), xlabel="zero-shot prediction", ylabel="true digit",
            title="confusion (log 1 + count)")
wrong = (predictions != y_eval).nonzero().flatten()[:16]
course_lib.core.plotting.image_grid(x_test[wrong], nrow=2, ax=axes[1])
pairs = [f"{y}→{p}" for y, p in zip(y_test[wrong].tolist(), predictions[wrong].tolist())]
axes[1].set_title("misclassified (true → predicted):\n" + " ".join(pairs[:8]) + "\n" + " ".join(pairs[8:]), fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# > **Common confusion: what "zero-shot" means here.** No classifier was trained and the held-out templates were never seen, but the
# > *classes* were: every digit word and numeral appears in the training captions. This tests generalisation across **prompts**, not to
# > new concepts. CLIP's zero-shot transfer to new classes rests on 400 million captions that mention nearly everything; a model trained
# > on ten digit words cannot know what "a handwritten letter A" is (our tokenizer refuses the word outright).
#
# **Widget: write your own prompt.** Type a template with `{word}` or `{numeral}`; the bars are $p(k \mid x)$ for the chosen test digit at the
# learned temperature. A word outside the vocabulary shows the tokenizer's error instead.

# %%
def draw_prompt(axes, template, digit):
    ax_image, ax_bars = axes
    ax_image.imshow(x_test[digit, 0], cmap="gray")
    ax_image.set_title(f"test digit {digit} (a {y_test[digit].item()})", fontsize=9)
    ax_image.axis("off")
    try:
        classes = course_lib.topics.clip.class_embeddings(clip_model, template).cpu()  # (10, E)
    except (KeyError, ValueError) as error:
        ax_bars.text(0.02, 0.5, textwrap.fill(str(error.args[0]), 70), fontsize=8, va="center")
        ax_bars.axis("off")
        return
    probabilities = (clip_model.scale().item() * test_embeddings[digit] @ classes.T).softmax(dim=0)  # (10,)
    colors = ["C2" if k == y_test[digit].item() else "C0" for k in range(10)]
    ax_bars.bar(range(10), probabilities, color=colors)
    ax_bars.set(xticks=range(10), ylim=(0, 1), ylabel="p(k | x)",
                title=f"'{fill_template(template, y_test[digit].item())}' ...", xlabel="class k")


course_lib.core.widgets.interactive_figure(
    draw_prompt, ncols=2, figsize=(10, 3.2),
    template=ipywidgets.Text(value=HELD_OUT_TEMPLATES[0], description="template", continuous_update=False),
    digit=ipywidgets.IntSlider(value=8, min=0, max=199, description="test digit"))

# %% [markdown]
# ---
# ## D. The similarity matrix and the temperature
#
# A batch of test digits against their captions: the heatmap shows the logits $s_{ij}/\tau$, or their softmax over each row
# (image → text, what $\mathcal{L}_{\text{I} \to \text{T}}$ reads) or over each column (text → image). The slider sets $\tau$ (the learned value is marked); the right
# panel is one row of the softmax at that $\tau$. "one per class" draws ten different digits (a clean diagonal); "random 12" allows repeated
# classes, and the false negatives of B.4 appear as off-diagonal bright squares.

# %%
def similarity_batch(kind, template, seed):
    generator = torch.Generator().manual_seed(seed)
    if kind == "one per class":
        index = torch.stack([(y_test == k).nonzero().flatten()[torch.randint(100, (1,), generator=generator)] for k in range(10)])
        index = index.flatten()[torch.randperm(10, generator=generator)]
    else:
        index = torch.randint(len(x_test), (12,), generator=generator)
    captions = [fill_template(template, y) for y in y_test[index].tolist()]
    with torch.no_grad():
        s = cosine_similarity_matrix(clip_model.encode_image(x_test[index].to(DEVICE)),
                                     clip_model.encode_text(captions)).cpu()  # (n, n)
    return index, captions, s


learned_tau = 1 / clip_model.scale().item()


def draw_similarity(axes, view, tau, batch, template, seed):
    index, captions, s = similarity_batch(batch, template, seed)
    logits = s / tau
    matrix = {"logits s/tau": logits, "softmax over rows (image -> text)": logits.softmax(dim=1),
              "softmax over columns (text -> image)": logits.softmax(dim=0)}[view]
    ax, ax_row = axes
    shown = ax.imshow(matrix, cmap="viridis", vmin=0 if view != "logits s/tau" else None,
                      vmax=1 if view != "logits s/tau" else None)
    ax.figure.colorbar(shown, ax=ax, fraction=0.046)
    ax.set_yticks(range(len(index)), [f"img {y}" for y in y_test[index].tolist()], fontsize=7)
    ax.set_xticks(range(len(index)), [c.split()[-1] for c in captions], fontsize=7, rotation=90)
    ax.set_title(f"{view}, tau = {tau:.3g}; loss {abs(clip_loss(logits).item()):.3f}", fontsize=9)
    row = logits[0].softmax(dim=0)
    ax_row.bar(range(len(index)), row, color=["C2" if j == 0 else "C0" for j in range(len(index))])
    ax_row.bar(range(len(index)), (s[0] / learned_tau).softmax(dim=0), fill=False, edgecolor="k", lw=0.8,
               label=f"at the learned tau = {learned_tau:.3f}")
    ax_row.set(ylim=(0, 1), xlabel="caption j", ylabel="softmax", title=f"row 0 (an image of a {y_test[index[0]].item()})")
    ax_row.legend(fontsize=7)


course_lib.core.widgets.interactive_figure(
    draw_similarity, ncols=2, figsize=(11, 4.2),
    view=ipywidgets.Dropdown(options=["logits s/tau", "softmax over rows (image -> text)",
                                      "softmax over columns (text -> image)"],
                             value="softmax over rows (image -> text)", description="show"),
    tau=ipywidgets.FloatLogSlider(value=0.07, base=10, min=-2.5, max=0, step=0.05, description="tau"),
    batch=ipywidgets.ToggleButtons(options=["one per class", "random 12"], value="random 12", description="batch"),
    template=ipywidgets.Dropdown(options=list(TRAIN_TEMPLATES + HELD_OUT_TEMPLATES), value=TRAIN_TEMPLATES[0],
                                 description="captions"),
    seed=ipywidgets.IntSlider(value=0, min=0, max=20, description="batch seed"))

# %% [markdown]
# Things to look for: at $\tau = 1$ the rows are nearly flat (cosines lie in $[-1, 1]$, so logits differ by at most 2 and no softmax can be
# sharp: this is why CLIP divides by a small $\tau$ at all); at the learned $\tau$ each row puts its mass on the captions of the right class,
# split evenly among repeats; as $\tau \to 0$ each row becomes a one-hot on its arg max, and the loss of a batch with any error explodes (A.5).
# The column softmax is not the transpose of the row softmax: each normalises over a different set.
#
# > **Common confusion: what Stable Diffusion conditions on.** A common summary says diffusion is conditioned on "a semantic
# > conditioning vector" from CLIP. Stable Diffusion v1 feeds its U-Net's cross-attention the **sequence of per-token hidden states** of CLIP ViT-L/14's
# > text transformer (77 tokens × 768), not the single pooled, projected embedding that the contrastive loss trains; in our model that would be
# > `TextTransformer.hidden_states` (B, 8, 64), not `encode_text` (B, 64). And the original latent-diffusion paper (Rombach et al. 2022) did
# > not use CLIP at all: its text-to-image model trained a BERT-style transformer jointly; CLIP's text encoder came with Stable Diffusion.
# > Texts name the text encoder differently ($g$, $f_{\text{text}}$); here it is $g$ throughout.

# %% [markdown]
# ---
# ## E. Exercises
#
# Each exercise cell below holds a working solution; in the student version it is replaced by a stub. Write your own,
# run the check cell, and reveal the reference only when stuck.
#
# **Exercise 1: the symmetric loss.** Write `my_clip_loss(logits)` for a square logit matrix (row $i$ = image $i$ against every caption):
# the mean of the cross entropy over the rows and the cross entropy over the columns, targets on the diagonal. Use log-sum-exp, not
# `F.cross_entropy`.

# %% tags=["exercise"]
def my_clip_loss(logits):
    """(N, N) -> scalar: 1/2 (CE over rows + CE over columns), target j = i."""
    ### BEGIN SOLUTION
    n = logits.shape[0]
    rows = (torch.logsumexp(logits, dim=1) - logits.diagonal()).sum() / n
    columns = (torch.logsumexp(logits, dim=0) - logits.diagonal()).sum() / n
    return 0.5 * (rows + columns)
    ### END SOLUTION


# %%
generator = seed_everything(8)
loss_inputs = [5 * torch.randn(6, 6, generator=generator, dtype=torch.float64),
               100 * cosine_similarity_matrix(torch.randn(16, 8, generator=generator, dtype=torch.float64),
                                              torch.randn(16, 8, generator=generator, dtype=torch.float64)),
               torch.full((4, 4), 3.0, dtype=torch.float64),  # all equal: log 4
               torch.triu(torch.randn(5, 5, generator=generator, dtype=torch.float64))]  # not symmetric: one direction is not enough
course_lib.core.check.check_function(my_clip_loss, clip_loss, loss_inputs)

# %%
course_lib.core.check.show_solution(course_lib.topics.clip.clip_loss)

# %% [markdown]
# **Exercise 2: zero-shot prediction.** Write `my_zero_shot_predict(image_embeddings, class_embeddings)`: for image embeddings $(N, E)$ and
# class text embeddings $(K, E)$, neither normalised, return the index of the class with the highest *cosine* similarity, shape $(N,)$.

# %% tags=["exercise"]
def my_zero_shot_predict(image_embeddings, class_embeddings):
    """(N, E), (K, E) -> (N,) int64: arg max over k of the cosine similarity."""
    ### BEGIN SOLUTION
    images = image_embeddings / image_embeddings.norm(dim=1, keepdim=True)
    classes = class_embeddings / class_embeddings.norm(dim=1, keepdim=True)
    return (images @ classes.T).argmax(dim=1)
    ### END SOLUTION


# %%
classes_long = torch.tensor([[10.0, 0.0], [0.6, 0.8]])  # class 0 has a long embedding: a dot product would favour it
predict_inputs = [(torch.randn(20, 8, generator=generator), torch.randn(10, 8, generator=generator)),
                  (torch.tensor([[0.5, 0.6], [1.0, 0.1]]), classes_long),
                  (test_embeddings[:500], ensemble)]
course_lib.core.check.check_function(my_zero_shot_predict, course_lib.topics.clip.zero_shot_predict, predict_inputs)

# %%
course_lib.core.check.show_solution(course_lib.topics.clip.zero_shot_predict)

# %% [markdown]
# **Exercise 3: the prompt ensemble.** Write `my_ensemble(text_embeddings)`: embeddings of $K$ classes under $T$ templates, $(T, K, E)$, to one
# unit vector per class $(K, E)$: normalise each, average over the templates, normalise again.

# %% tags=["exercise"]
def my_ensemble(text_embeddings):
    """(T, K, E) -> (K, E) unit vectors."""
    ### BEGIN SOLUTION
    units = text_embeddings / text_embeddings.norm(dim=-1, keepdim=True)
    mean = units.mean(dim=0)  # (K, E)
    return mean / mean.norm(dim=-1, keepdim=True)
    ### END SOLUTION


# %%
ensemble_inputs = [torch.randn(3, 10, 8, generator=generator),
                   torch.cat([torch.randn(1, 4, 8, generator=generator), 50 * torch.randn(1, 4, 8, generator=generator)]),
                   per_template]
course_lib.core.check.check_function(my_ensemble, course_lib.topics.clip.ensemble_embeddings, ensemble_inputs)

# %%
course_lib.core.check.show_solution(course_lib.topics.clip.ensemble_embeddings)

# %% [markdown]
# **Exercise 4: the temperature at test time.** *Predict, then run.* The shipped model learned $\tau \approx 0.074$. Suppose you
# classify the same test digits with the same prompt ensemble, but compute $p(k \mid x) = \operatorname{softmax}_k(s_k / \tau)$ at
# $\tau = 1$ instead. Before running the check cell, write into `MY_PREDICTION` (i) the zero-shot accuracy you expect at $\tau = 1$,
# given the accuracy at the learned $\tau$ that C.1 printed, and (ii) the mean probability the model gives its predicted class at
# $\tau = 1$ (at the learned $\tau$ it is close to 1). Use C.1's rule and D's "things to look for"; then run the cell and explain.

# %% tags=["exercise"]
MY_PREDICTION = None  # your two numbers
### BEGIN SOLUTION
MY_PREDICTION = dict(accuracy_at_tau_1=0.99, mean_top_probability_at_tau_1=0.18)
### END SOLUTION

# %%
assert MY_PREDICTION is not None, "write your two numbers into MY_PREDICTION in the cell above first, then run this cell"
cosines = test_embeddings @ ensemble.T  # (n_test, 10): unit vectors, so these are the cosine similarities
print(f"your prediction: {MY_PREDICTION}")
accuracies_tau = []
for name, tau_test in [("learned", learned_tau), ("1", 1.0), ("0.01", 0.01)]:
    p_test = (cosines / tau_test).softmax(dim=1)  # (n_test, 10)
    accuracy_tau = (p_test.argmax(dim=1) == y_eval).float().mean().item()
    accuracies_tau.append(accuracy_tau)
    print(f"tau = {name:>7} ({tau_test:.4f}): zero-shot accuracy {accuracy_tau:.4f}, "
          f"mean probability of the predicted class {p_test.max(dim=1).values.mean().item():.3f}")
assert max(accuracies_tau) - min(accuracies_tau) < 1e-3  # the arg max does not depend on tau

# %%
course_lib.core.check.show_solution(
    "The accuracy is the same at every tau: dividing all ten cosines of an image by the same positive number keeps their "
    "order, so the arg max (C.1) does not move. What changes is the confidence: cosines lie in [-1, 1], so at tau = 1 the "
    "ten logits differ by at most 2 and the softmax stays close to uniform (a predicted-class probability near 0.18, "
    "against 0.1 for uniform), while at the learned tau the same gaps are multiplied by about 13.5 and the softmax is "
    "nearly one-hot. The temperature matters for the loss during training (A.5) and for calibrated probabilities, not "
    "for which class wins.")

# %% [markdown]
# ---
# ## Summary
#
# | key equation | derived in | checked by |
# |---|---|---|
# | $\mathcal{L} = \tfrac{1}{2}(\mathcal{L}_{\text{I} \to \text{T}} + \mathcal{L}_{\text{T} \to \text{I}})$, softmax cross entropies over the rows and the columns of $\ell = s / \tau$ | A.2 | the step-by-step loss against `F.cross_entropy` and `clip_loss` in A.2 |
# | $\mathcal{L} = \log N$ when all embeddings are equal; unchanged by a joint permutation of the pairs | A.3 | three batch sizes and a shuffled batch in A.3 |
# | $\partial \mathcal{L} / \partial \ell = \frac{1}{2N}\big[(P^{\text{row}} - I) + (P^{\text{col}} - I)\big]$ | A.4 | autograd in A.4 |
# | with a wrong nearest neighbour, a row's term grows like $c\, d_{ik^\ast}$ as $c = 1/\tau \to \infty$ | A.5 | the loss against its asymptote in A.5 |
# | the false-negative floor $\mathbb{E}\big[\frac{1}{N}\sum_i \log n_{y_i}\big]$ | B.4 | sampled batches and the training curve in B.4 |
# | $\hat y(x) = \arg\max_k \cos\big(f(x), g(t_k)\big)$; ensemble $\bar g_k = m_k / \lVert m_k \rVert$ | C.1 | cosine with the mean against dot products with the renormalised mean in C.1 |
#
# **Three things to remember.**
#
# 1. CLIP's loss is two softmax cross entropies on one $N \times N$ matrix of cosine similarities divided by $\tau$: over the
#    rows (each image picks its caption) and over the columns (each caption picks its image); the batch's other pairs are the
#    negatives.
# 2. Zero-shot classification is that matrix with the batch's captions replaced by one prompt per class. The arg max does not
#    depend on $\tau$; the probabilities do.
# 3. The loss cannot reach 0 when captions repeat (false negatives set a floor), and $\tau$ is learned as $\log(1/\tau)$ with
#    $1/\tau$ clamped at 100, because a batch the model gets right always asks for a smaller $\tau$.

# %% [markdown]
# ---
# ## F. Discussion questions
#
# 1. The loss floor of B.4 comes from false negatives. Propose a change to the *targets* that removes it on MNIST (hint: several correct
#    captions per row). Why can web-scale CLIP not do the same, and why does it barely need to?
# 2. The learned $1/\tau$ of the shipped model went *down*, from 14.3 to 13.5, far from the clamp at 100. Using A.5 and B.4, explain why:
#    when an image cannot tell which of its class's captions (with their different templates) is its own, what does a sharper softmax do to
#    its loss? Why would a data set of unique captions push $1/\tau$ up to the clamp instead (the paper's model reached it)?
# 3. Our held-out templates are new *orders* of known words, and accuracy barely drops. Design a harder held-out test that the tokenizer still
#    accepts. What would you expect, and why?
# 4. A linear probe on the same features lands within a point of zero-shot here (C.1 prints both). In the CLIP paper zero-shot CLIP matched a fully supervised ResNet-50
#    on ImageNet, yet linear probes on CLIP features were better still. What does the probe have that the prompt does not?
# 5. Stable Diffusion conditions on the per-token hidden states, not the pooled embedding. What would be lost if a text-to-image model
#    received only the pooled vector, given what the contrastive loss asks that vector to encode?
