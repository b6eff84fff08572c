# ---
# jupyter:
#   course:
#     time_on_cpu:
#       ci:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-05'
#         seconds: 27
#       cpu:
#         machine: 2 CPU cores, no GPU, shared with other jobs
#         measured: '2026-12-05'
#         seconds: 533
#       gpu:
#         note: 'no GPU where the course was timed; the shipped recipes ran on 1 thread of the shared 2-core CPU under heavy load: DINO 32 min, MAE 27 min'
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
# # 05 · Self-supervised ViTs: DINO and MAE
#
# A Vision Transformer needs a training signal. Chapter 04 used labels. This chapter uses none: **DINO** (Caron et al.,
# 2021) trains a student network to predict, from one crop of an image, what a slowly moving copy of itself (the
# teacher) says about another crop; **MAE** (He et al., 2021) hides three quarters of an image's patches and trains the
# network to paint them back. We derive DINO's objective and check every step by a number, watch it collapse when
# either of its two safety devices is switched off, train a tiny DINO on procedural shapes and measure whether its
# [CLS] attention finds the object without ever being told what an object is, run Normalized Cut (chapter 02) on its
# patch features, and build, train and probe a small MAE on MNIST.
#
# **Goals.** After this chapter you can
# - write DINO's loss with its temperatures, centring (subtracted) and sharpening, the multi-crop pairs, the
#   stop-gradient and the EMA teacher, and derive the student's gradient $(P_s - P_t)/\tau_s$;
# - split $H(P_t, P_s) = h(P_t) + \operatorname{KL}(P_t \,\Vert\, P_s)$ and use $h(P_t)$ and the entropy of the batch-mean target to
#   tell the two collapses (uniform and one-hot) apart;
# - read [CLS] attention maps, turn them into masks (the 60%-mass rule) and score them against object masks and
#   against baselines (a centred disc; a randomly initialised ViT);
# - build the TokenCut graph on patch keys, calibrate its threshold from the similarity histogram, and split it with
#   Normalized Cut;
# - implement MAE's per-sample random masking with keep and restore indices, an encoder that sees only the visible
#   patches, a light decoder with mask tokens, and the loss on masked patches only;
# - probe frozen features with a linear classifier against the same network at random initialisation, and read what the
#   probe says a self-supervised network did and did not learn.
#
# **Prerequisites.** Chapter 01 (softmax, cross entropy $H(p, q) = h(p) + \operatorname{KL}(p \,\Vert\, q)$, `detach`). Chapter 02 (the graph
# Laplacian and Normalized Cut as $(D - W) y = \lambda D y$). Chapter 04 (patches, multi-head attention, the ViT and its
# [CLS] token; `course_lib.topics.vit`). An EMA of weights (`course_lib.core.train.EMA`, which chapter 11 uses too) becomes the teacher here.
#
# **Time.** Two study-group sessions of about 90 minutes (session 1: the DINO objective and the collapse lab, A-B;
# session 2: the tiny DINO and its attention, Normalized Cut, MAE and discussion, C-E and G), and about 50 minutes of
# exercises (F) at home. The session plan, with what to pre-run, is in
# [facilitator/05_dino_mae.md](facilitator/05_dino_mae.md).
#
# **Core path.** See it work first, A.1-A.6, B, C.1-C.5 and E.1-E.5: about 115 min. The optional deep dives are A.7 (how
# the views are cut and resized) and D with D.1 (Normalized Cut on the learned patch features; discussion question 4
# builds on it).
#
# **What runs, and how long** (the whole chapter, top to bottom, on a fresh kernel; `ci` with 1 torch thread as the
# test suite runs it, `cpu` with torch's default threads; `make time PROFILE=ci` or `PROFILE=cpu` measures it and
# writes the time here, in the notebook's metadata and in the README):
#
# | profile | what trains | measured |
# |---|---|---|
# | `ci` | the collapse toy (3 runs of 200 steps); DINO for 15 steps (batch 16); MAE for 20 steps (batch 64) | 27 s, measured 2026-12-05 on 2 CPU cores, no GPU, otherwise idle |
# | `cpu` | the collapse toy; DINO for 1,500 steps (batch 32, 2 global + 2 local crops; 4.3 min); MAE for 1,500 steps (batch 128; 4.7 min) | 8 min 53 s, measured 2026-12-05 on 2 CPU cores, no GPU, shared with other jobs |
# | `gpu` | the shipped recipes: DINO 2,000 steps, MAE 3,000 steps | not measured: no GPU where the course was timed; the shipped recipes ran on 1 thread of the shared 2-core CPU under heavy load: DINO 32 min, MAE 27 min |
#
# Whatever the profile, the attention maps, masks and reconstructions come from the two shipped checkpoints
# (`dino_shapes` and `mae_mnist`). Set the profile before starting JupyterLab: `COURSE_PROFILE=ci`, `cpu` or `gpu`.

# %%
import copy
import inspect
import math

import ipywidgets
import matplotlib.colors
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

import course_lib
import course_lib.core.check
import course_lib.core.checkpointing
import course_lib.core.plotting
import course_lib.core.train
import course_lib.core.widgets
import course_lib.topics.dino
import course_lib.topics.mae
import course_lib.topics.spectral
import course_lib.zoo
from course_lib import device, per_profile, profile, seed_everything
from course_lib.core.train import EMA
from course_lib.data import GaussianMixture2D, load_mnist, make_shapes
from course_lib.topics.dino import (DINO, DINOHead, attention_report, centre_disc, centre_prior_iou, cls_attention,
                                    collapse_diagnostics, crop_and_resize, cross_entropy, dino_loss, entropy,
                                    evaluation_scenes, last_block_keys, mask_iou, mass_mask, multi_crop, patch_masks,
                                    similarity_quantile_tau, teacher_momentum, teacher_probabilities, tokencut_mask,
                                    update_center)
from course_lib.topics.mae import MAE, evaluate_mae, mae_loss, normalized_patches, random_masking, reconstruct
from course_lib.topics.vit import ViT, patchify, unpatchify

DEVICE = device()
generator = seed_everything(0)
print(f"profile = {profile()}, device = {DEVICE}, torch threads = {torch.get_num_threads()}")

# %% [markdown]
# ---
# ## See it work first
#
# Two networks that learned without a single label, both shipped with the course. **DINO** (`dino_shapes`) is a small
# ViT trained on scenes of one shape on a striped background. Below, for eight scenes it never saw, the weights its
# [CLS] token gives to the $8 \times 8$ patches in the last layer (one head, the one C.5 finds best), with the object's outline
# in cyan, and a number for how well the attention finds the object: the overlap of the patches that hold 60% of the
# attention with the object's patches, as intersection over union (IoU: shared patches over patches in either; C.5), next to
# the best disc of patches centred in the image. Nobody told the network what an object is.
# **MAE** (`mae_mnist`) sees a quarter of each MNIST digit's patches and paints the other three quarters.
# By the end of this chapter you will have derived and trained this: both objectives, both networks, and the
# measurements of what they learned.

# %%
first_dino = course_lib.zoo.load_shipped("dino_shapes", DEVICE)
first_scenes = evaluation_scenes(200)  # images (200, 3, 32, 32), object masks (200, 32, 32)
first_report = attention_report(first_dino.backbone, first_scenes["images"].to(DEVICE), first_scenes["masks"].to(DEVICE))
first_head = first_report["best_head"]
first_prior = course_lib.core.checkpointing.read_manifest()["dino_shapes"]["metrics"]["centre_prior_iou"]
print(f"DINO, head {first_head}: the patches holding 60% of its [CLS] attention overlap the object with mean IoU "
      f"{first_report['best_iou']:.2f} on 200 held-out scenes; a centred disc of the best radius gets {first_prior:.2f}")
assert first_report["best_iou"] > first_prior
first_attention = cls_attention(first_dino.backbone, first_scenes["images"][:8].to(DEVICE)).cpu()  # (8, heads, 64)
fig, axes = plt.subplots(2, 8, figsize=(12, 3.2), layout="constrained")
for k in range(8):
    axes[0, k].imshow(first_scenes["images"][k].permute(1, 2, 0))
    axes[1, k].imshow(first_attention[k, first_head].reshape(8, 8), cmap="inferno", extent=(-0.5, 31.5, 31.5, -0.5))
    axes[1, k].contour(first_scenes["masks"][k].float(), levels=[0.5], colors="c", linewidths=1)
for ax in axes.flat:
    ax.axis("off")
fig.suptitle(f"held-out scenes (top) and the shipped DINO teacher's last-layer [CLS] attention, head {first_head} (bottom)",
             fontsize=9)
plt.show()

# %%
first_mae = course_lib.zoo.load_shipped("mae_mnist", DEVICE)
first_digits = load_mnist("test")[0]  # (10000, 1, 28, 28)
first_mae_scores = evaluate_mae(first_mae, first_digits[:500].to(DEVICE), 0.75, seed=0)
print(f"MAE, 75% of the patches hidden: mean squared error per hidden pixel {first_mae_scores['masked_mse']:.4f}; filling "
      f"each hidden pixel with the mean of the visible ones: {first_mae_scores['mean_fill_mse']:.4f} (500 test digits)")
assert first_mae_scores["masked_mse"] < 0.6 * first_mae_scores["mean_fill_mse"]
first_masked, _, first_pasted = reconstruct(first_mae, first_digits[:10].to(DEVICE), 0.75, torch.Generator().manual_seed(0))
fig, ax = plt.subplots(figsize=(9, 2.9))
course_lib.core.plotting.image_grid(torch.cat([first_digits[:10].to(DEVICE), first_masked, first_pasted]).cpu(), nrow=3, ax=ax)
ax.set_title("test digits / what the encoder sees (hidden patches grey) / visible patches + the MAE's prediction", fontsize=9)
plt.show()

# %% [markdown]
# ---
# ## A. Self-distillation with no labels: the DINO objective
#
# The whole method in one picture (`course_lib.topics.dino.schematic()`); this section derives each part of it, and C.2
# builds the network.

# %%
course_lib.topics.dino.schematic()
plt.show()

# %% [markdown]
# ### A.1 Student, teacher, and temperature
#
# Two networks of the same architecture, $g = h \circ f$: a backbone $f$ (here chapter 04's ViT; its output is the [CLS]
# token) and a projection head $h$ with $K$ outputs. The **student** $g_{\theta_s}$ is trained by gradient descent; the
# **teacher** $g_{\theta_t}$ is never trained directly (A.6 says how it moves). Each turns its $K$ outputs into a distribution
# with a softmax at a temperature:
#
# $$
# P_s(x)^{(i)} = \frac{\exp\big(g_{\theta_s}(x)^{(i)} / \tau_s\big)}{\sum_{k=1}^{K} \exp\big(g_{\theta_s}(x)^{(k)} / \tau_s\big)},
# \qquad
# P_t(x)^{(i)} = \frac{\exp\big((g_{\theta_t}(x)^{(i)} - c^{(i)}) / \tau_t\big)}{\sum_{k=1}^{K} \exp\big((g_{\theta_t}(x)^{(k)} - c^{(k)}) / \tau_t\big)},
# $$
#
# with a centre $c \in \mathbb{R}^K$ (A.4) and the paper's temperatures $\tau_s = 0.1$ and $\tau_t = 0.04$ (warmed up to 0.07 in long runs):
# the teacher's is **smaller**. What a temperature does to the entropy $h(p) = -\sum_i p_i \log p_i$: write $\beta = 1/\tau$,
# $p_i = e^{\beta g_i} / Z$ with $Z = \sum_k e^{\beta g_k}$. Then $\log p_i = \beta g_i - \log Z$ and
#
# $$
# h = -\sum_i p_i(\beta g_i - \log Z) = \log Z - \beta\, \mathbb{E}_p[g] .
# $$
#
# Differentiate: $\frac{d \log Z}{d\beta} = \frac{1}{Z}\sum_k g_k e^{\beta g_k} = \mathbb{E}_p[g]$; then $\frac{dp_i}{d\beta} = g_i p_i - p_i \frac{d \log Z}{d\beta} = p_i (g_i - \mathbb{E}_p[g])$, so
# $\frac{d\, \mathbb{E}_p[g]}{d\beta} = \sum_i g_i \frac{dp_i}{d\beta} = \sum_i p_i g_i^2 - \big(\sum_i p_i g_i\big)^2 = \operatorname{Var}_p(g)$.
# So $\frac{dh}{d\beta} = \mathbb{E}_p[g] - \mathbb{E}_p[g] - \beta \operatorname{Var}_p(g) = -\beta \operatorname{Var}_p(g)$, and with $\frac{d\beta}{d\tau} = -1/\tau^2$:
#
# $$
# \frac{dh}{d\tau} = \frac{\operatorname{Var}_p(g)}{\tau^3} \;\ge\; 0 .
# $$
#
# The entropy grows with the temperature: towards $\ln K$ (uniform) as $\tau \to \infty$, towards 0 (all mass on the largest output)
# as $\tau \to 0$. A smaller $\tau$ **sharpens**. Checked on $K = 256$ outputs in $[-1, 1]$ (the range of our head, C.2): the curve, its
# limits, and the derivative against autograd.

# %%
K = 256
g_example = 2 * torch.rand(K, generator=generator, dtype=torch.float64) - 1  # (K,) one image's head outputs
taus = torch.logspace(-4, 2, 300, dtype=torch.float64)
h_of_tau = torch.stack([entropy(torch.softmax(g_example / tau, -1)) for tau in taus])  # (300,)
assert (h_of_tau.diff() >= -1e-12).all(), "the entropy must not decrease with tau"
assert abs(h_of_tau[-1] - math.log(K)) < 1e-3 and h_of_tau[0] < 0.05
for tau0 in (0.04, 0.1, 1.0):
    tau = torch.tensor(tau0, dtype=torch.float64, requires_grad=True)
    p = torch.softmax(g_example / tau, -1)
    (dh_dtau,) = torch.autograd.grad(entropy(p), tau)
    variance = (p * g_example**2).sum() - (p * g_example).sum() ** 2
    print(f"tau = {tau0:4}: h = {entropy(p).item():.4f} nats; dh/dtau autograd {dh_dtau.item():10.4f}, "
          f"Var_p(g) / tau^3 = {(variance / tau0**3).item():10.4f}")
    assert torch.allclose(dh_dtau, variance / tau0**3)

fig, ax = plt.subplots(figsize=(6, 3.4))
ax.plot(taus, h_of_tau)
ax.axhline(math.log(K), color="k", ls="--", label=f"ln K = {math.log(K):.2f}")
for tau0, name in [(0.04, "tau_t = 0.04 (teacher)"), (0.1, "tau_s = 0.1 (student)")]:
    ax.axvline(tau0, color="C1" if tau0 < 0.05 else "C2", ls=":", label=name)
ax.set(xscale="log", xlabel="temperature tau", ylabel="h(softmax(g / tau)) in nats", title="sharpening: entropy against temperature")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ### A.2 The loss is a cross entropy, and it splits into entropy plus KL
#
# DINO minimises $H(P_t, P_s) = -\sum_i P_t^{(i)} \log P_s^{(i)}$ over the student's parameters. Add and subtract $\sum_i P_t^{(i)} \log P_t^{(i)}$:
#
# $$
# H(P_t, P_s) = -\sum_i P_t^{(i)} \log P_t^{(i)} + \sum_i P_t^{(i)} \log \frac{P_t^{(i)}}{P_s^{(i)}} = h(P_t) + \operatorname{KL}(P_t \,\Vert\, P_s) .
# $$
#
# The first term does not depend on the student at all. So minimising over $\theta_s$ is minimising the KL, and the loss can never go
# below $h(P_t)$: a loss of 0.9 nats says nothing until you know how much of it is the target's own entropy. That is why section B
# plots $h(P_t)$ and $\operatorname{KL}$ separately.

# %%
generator = seed_everything(1)
p_t = torch.softmax(torch.randn(6, K, generator=generator, dtype=torch.float64) / 0.3, -1)  # (6, K) targets
log_p_s = torch.log_softmax(torch.randn(6, K, generator=generator, dtype=torch.float64), -1)  # (6, K) student log-probs
kl = torch.distributions.kl_divergence(torch.distributions.Categorical(probs=p_t),
                                       torch.distributions.Categorical(logits=log_p_s))  # (6,), an independent reference
H = cross_entropy(p_t, log_p_s)
print("H(P_t, P_s)        :", H.numpy().round(4))
print("h(P_t) + KL(P_t||P_s):", (entropy(p_t) + kl).numpy().round(4))
assert torch.allclose(H, entropy(p_t) + kl) and (H >= entropy(p_t)).all()

# %% [markdown]
# > **Common confusion:** a common reading writes $H(P_t, P_s) = h(P_t) + D_{KL}(P_t \,\Vert\, P_s)$ and then calls the loss "the KL divergence".
# > In fact $H$ is the **cross entropy**; the KL is one of its two terms. The distinction is the whole collapse analysis: in both
# > collapses the KL goes to 0 (the student matches the teacher perfectly), and only $h(P_t)$ says which collapse it is.
#
# ### A.3 The student's gradient, and the stop-gradient
#
# Write $s = g_{\theta_s}(x')$ for the student's outputs on one view. Since $\log P_s^{(i)} = s_i/\tau_s - \log\sum_k e^{s_k/\tau_s}$,
#
# $$
# \frac{\partial \log P_s^{(i)}}{\partial s_j} = \frac{1}{\tau_s}\Big(\delta_{ij} - \frac{e^{s_j/\tau_s}}{\sum_k e^{s_k/\tau_s}}\Big) = \frac{\delta_{ij} - P_s^{(j)}}{\tau_s},
# $$
#
# so, with the teacher's $P_t$ a constant (no gradient flows into it),
#
# $$
# \frac{\partial H(P_t, P_s)}{\partial s_j} = -\sum_i P_t^{(i)} \frac{\delta_{ij} - P_s^{(j)}}{\tau_s}
# = -\frac{1}{\tau_s}\Big(P_t^{(j)} - P_s^{(j)} \sum_i P_t^{(i)}\Big) = \frac{P_s^{(j)} - P_t^{(j)}}{\tau_s},
# $$
#
# using $\sum_i P_t^{(i)} = 1$. The gradient vanishes exactly when the student's distribution equals the target; its entries sum to
# zero (adding a constant to all $K$ outputs changes nothing); and the centring and sharpening act on the gradient only through
# the target $P_t$. Checked with autograd, together with the stop-gradient: the teacher's outputs get no gradient at all.

# %%
tau_s, tau_t = 0.1, 0.04
s = (2 * torch.rand(4, K, generator=generator, dtype=torch.float64) - 1).requires_grad_(True)  # (B, K) student outputs
t = (2 * torch.rand(4, K, generator=generator, dtype=torch.float64) - 1).requires_grad_(True)  # (B, K) teacher outputs
target = torch.softmax(t.detach() / tau_t, -1)  # stop-gradient: P_t is a constant
H_sum = cross_entropy(target, F.log_softmax(s / tau_s, -1)).sum()
(grad_autograd,) = torch.autograd.grad(H_sum, s)
grad_by_hand = (torch.softmax(s / tau_s, -1) - target) / tau_s
print(f"max |autograd - (P_s - P_t) / tau_s| = {(grad_autograd - grad_by_hand).abs().max():.2e}; "
      f"row sums of the gradient: {grad_autograd.sum(-1).detach().numpy().round(12)}")
assert torch.allclose(grad_autograd, grad_by_hand, atol=1e-12)

loss = dino_loss([s, s.flip(0)], [t], torch.zeros(K, dtype=torch.float64), tau_s, tau_t)
loss.backward()
print(f"after dino_loss(...).backward(): student grad set: {s.grad is not None}; teacher grad: {t.grad}")
assert t.grad is None

# %% [markdown]
# ### A.4 Centring and sharpening: one pushes towards uniform, the other towards one-hot
#
# Two trivial solutions make $\operatorname{KL}(P_t \,\Vert\, P_s) = 0$ for every image, whatever the image: every output the same one-hot vector
# (**one-hot collapse**), or every output uniform (**uniform collapse**). DINO avoids both with two opposing operations on the
# teacher only.
#
# **Centring** subtracts a running mean of the teacher's outputs, $c \leftarrow m\,c + (1 - m)\,\frac{1}{B}\sum_{b=1}^{B} g_{\theta_t}(x_b)$, with $m = 0.9$.
# Unroll it: after $k$ updates on batches whose mean is $\bar g$, $c_k - \bar g = m^k (c_0 - \bar g)$, so $c_k \to \bar g$. If the teacher
# collapsed onto one output vector for every image, then $g_t - c \to 0$ and $P_t \to$ uniform: centring makes it impossible for one
# output dimension to win on **every** image, and by itself it drives the targets towards uniform.
#
# **Sharpening** uses $\tau_t < \tau_s$: by A.1 the target has lower entropy than the student's distribution would have on the same
# logits, so the student is always pulled towards something peakier; by itself that ends in one-hot targets.
#
# Both checked: centring a collapsed batch, step by step, against the closed form; and the entropy at $\tau_t = 0.04$ below the one
# at $\tau_s = 0.1$ for every image.

# %%
collapsed = (2 * torch.rand(1, K, generator=generator) - 1).expand(64, K)  # (B, K): every image, the same output
center = torch.zeros(K)
teacher_entropies = []
for k in range(60):
    teacher_entropies.append(entropy(teacher_probabilities(collapsed, center, tau_t)).mean().item())
    center = update_center(center, [collapsed], momentum=0.9)
closed_form = (1 - 0.9**60) * collapsed[0]  # c_k = m^k c_0 + (1 - m^k) g_bar with c_0 = 0
assert torch.allclose(center, closed_form, atol=1e-6)
print(f"collapsed batch: h(P_t) {teacher_entropies[0]:.3f} nats before centring, {teacher_entropies[-1]:.4f} after 60 "
      f"updates (ln K = {math.log(K):.4f})")
assert teacher_entropies[0] < 0.5 * math.log(K) and abs(teacher_entropies[-1] - math.log(K)) < 0.01

logits = 2 * torch.rand(100, K, generator=generator) - 1  # (100, K) many images
sharp, soft = entropy(torch.softmax(logits / tau_t, -1)), entropy(torch.softmax(logits / tau_s, -1))
print(f"mean entropy at tau_t = 0.04: {sharp.mean():.3f}; at tau_s = 0.1: {soft.mean():.3f} nats")
assert (sharp < soft).all()

fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(teacher_entropies, "o-", ms=3)
ax.axhline(math.log(K), color="k", ls="--", label="ln K")
ax.set(xlabel="centre updates (m = 0.9)", ylabel="h(P_t), nats", title="a collapsed teacher, centred: its targets go uniform")
ax.legend()
plt.show()

# %% [markdown]
# > **Common confusion:** the DINO paper's prose (Caron et al. 2021) calls centring "adding a bias term $c$ to the
# > teacher", $g_t(x) \leftarrow g_t(x) + c$, and a common reading takes the plus sign literally. In Algorithm 1 and in the code, $c$ is the running **mean** of the teacher's outputs and it is
# > **subtracted**: $P_t = \operatorname{softmax}((g_t - c)/\tau_t)$. With a plus sign the dominant dimension would be reinforced, not removed.
# > A related question, "shouldn't only the teacher be sharpened?": both use a temperature, but $\tau_t = 0.04 < \tau_s = 0.1$, and that
# > asymmetry *is* the sharpening.
#
# ### A.5 Multi-crop: which view predicts which
#
# Each image gives a set of views $V$: two **global** crops $x^g_1, x^g_2$ (large, here $32 \times 32$ from 40-100% of the image) and some
# **local** crops (small, $16 \times 16$ from 5-40%). The teacher sees only the global crops; the student sees all of them, and each student
# view must predict the teacher's output on every *other* global view:
#
# $$
# \mathcal{L} = \frac{1}{\lvert \text{pairs} \rvert} \sum_{x \in \{x^g_1, x^g_2\}} \; \sum_{x' \in V,\; x' \neq x} H\big(P_t(x), P_s(x')\big),
# $$
#
# averaged over the batch. With 2 global and 2 local crops there are $2 \times 3 = 6$ pairs. The paper writes the sum; the code divides
# by the number of pairs (which only rescales the learning rate). A local crop sees a small part of the object and must agree with
# the teacher's view of the whole image: "local-to-global" correspondence. Step by step, then against `course_lib.topics.dino.dino_loss`:

# %%
generator = seed_everything(2)
batch = 8
student_views = [2 * torch.rand(batch, K, generator=generator) - 1 for _ in range(4)]  # global 1, global 2, local 1, local 2
teacher_views = [2 * torch.rand(batch, K, generator=generator) - 1 for _ in range(2)]  # global 1, global 2
center = 0.1 * torch.randn(K, generator=generator)

terms, pairs = [], []
for i, teacher_logits in enumerate(teacher_views):
    target = F.softmax((teacher_logits.detach() - center) / tau_t, dim=-1)  # (B, K) centre, sharpen, stop-gradient
    for v, student_logits in enumerate(student_views):
        if v == i:
            continue  # the student's copy of the same view: nothing to predict
        log_p_s = F.log_softmax(student_logits / tau_s, dim=-1)  # (B, K)
        terms.append(-(target * log_p_s).sum(-1).mean())  # H(P_t, P_s), mean over the batch
        pairs.append((f"teacher global {i + 1}", ["global 1", "global 2", "local 1", "local 2"][v]))
my_loss = torch.stack(terms).mean()
for pair, term in zip(pairs, terms):
    print(f"{pair[0]} -> student {pair[1]:8s}: H = {term.item():.4f}")
library_loss = dino_loss(student_views, teacher_views, center, tau_s, tau_t)
print(f"{len(pairs)} pairs; mean {my_loss.item():.6f}; course_lib.topics.dino.dino_loss {library_loss.item():.6f}")
assert len(pairs) == 6 and torch.allclose(my_loss, library_loss)

# %% [markdown]
# ### A.6 The teacher: an exponential moving average of the student
#
# After every optimiser step of the student, the teacher's weights move a little towards the student's:
#
# $$
# \theta_t \leftarrow \lambda\, \theta_t + (1 - \lambda)\, \theta_s, \qquad
# \lambda_k = 1 - (1 - \lambda_0)\, \frac{\cos(\pi k / K_{\text{iter}}) + 1}{2},
# $$
#
# a cosine schedule from $\lambda_0$ (0.996 in the paper; 0.99 in our short runs) at step 0 to 1 at the last step $K_{\text{iter}}$, when the teacher
# freezes. Chapter 11 uses the same update for its sampling weights, `course_lib.core.train.EMA`, with a warm-up of the rate; DINO sets the rate at every
# step (`ema.decay = teacher_momentum(k, K_iter, lambda_0)`). The teacher is an average of recent students, which the paper reads as
# Polyak-Ruppert averaging, and it stays ahead of the student in k-NN accuracy throughout training. In the paper's ablation (k-NN
# top-1 on ImageNet), using the student itself (or the previous iteration's student) as the teacher collapses to 0.1%; the previous
# epoch's student gives 66.6%, the momentum teacher 72.8%. Checked: one update against the formula.

# %%
generator = seed_everything(3)
toy_student = nn.Linear(3, 2)
ema = EMA(toy_student, decay=0.99, warmup=False)  # DINO's teacher follows its own schedule, no warm-up
before = [p.detach().clone() for p in ema.model.parameters()]
with torch.no_grad():
    for p in toy_student.parameters():
        p.add_(torch.randn(p.shape, generator=generator))  # pretend an optimiser step happened
lam = teacher_momentum(10, 100, base=0.99)
ema.decay = lam
ema.update(toy_student)
for old, new, student_p in zip(before, ema.model.parameters(), toy_student.parameters()):
    assert torch.allclose(new, lam * old + (1 - lam) * student_p.detach())
assert all(not p.requires_grad for p in ema.model.parameters())  # the teacher is never trained directly
print(f"lambda_10 of 100 = {lam:.6f}: teacher == lambda * teacher + (1 - lambda) * student, for every tensor")

steps_axis = np.arange(0, 1501)
fig, ax = plt.subplots(figsize=(6, 3))
for base, name in [(0.996, "paper, lambda_0 = 0.996"), (0.99, "ours, lambda_0 = 0.99")]:
    ax.plot(steps_axis, [teacher_momentum(k, 1500, base) for k in steps_axis], label=name)
ax.set(xlabel="step k (K_iter = 1500)", ylabel="lambda_k", title="the teacher's EMA rate")
ax.legend()
plt.show()

# %% [markdown]
# > **Common confusion:** a common reading takes Algorithm 1's `update(gs) # SGD` to mean "training uses SGD without momentum, to
# > strengthen the sharpening". In fact the pseudocode's comment is generic: the paper trains with **AdamW** (learning rate $5 \times 10^{-4} \cdot B / 256$, weight
# > decay 0.04 to 0.4), which keeps moving averages of the gradients. The "momentum" in DINO is the teacher's EMA of the weights,
# > a different thing from an optimiser's momentum, and it has nothing to do with sharpening.
#
# ### A.7 The views (optional deep dive)
#
# A random resized crop: an area $s \cdot HW$ with $s$ uniform in the scale range, an aspect ratio between 3/4 and 4/3, a uniform position;
# cut out and resized to $32 \times 32$ (global) or $16 \times 16$ (local) with bilinear interpolation (`F.affine_grid` and `F.grid_sample`, one
# call for the whole batch), a random horizontal flip, and each colour channel scaled by a factor in $[0.7, 1.3]$ (the paper uses
# colour jitter, blur and solarisation). The ViT takes the $16 \times 16$ crops as a $4 \times 4$ grid of patches, with its position embeddings
# interpolated to that grid (chapter 04). Checked first: the full box is the identity, a quarter box is a slice.

# %%
scenes = make_shapes(8, seed=1, **course_lib.topics.dino.shapes_settings())  # one object on a striped background, 32 x 32
images = scenes["images"]  # (8, 3, 32, 32)
full_box = torch.tensor([[0.0, 0.0, 32.0, 32.0]]).expand(8, 4)
assert torch.allclose(crop_and_resize(images, full_box, 32), images, atol=1e-6)
quarter = torch.tensor([[16.0, 0.0, 16.0, 16.0]]).expand(8, 4)  # (x0, y0, w, h): the top-right quarter
assert torch.allclose(crop_and_resize(images, quarter, 16), images[:, :, :16, 16:], atol=1e-6)

crops, boxes = multi_crop(images, n_global=2, n_local=2, generator=torch.Generator().manual_seed(4), return_boxes=True)
print("views:", [tuple(c.shape) for c in crops])
vit_example = ViT(image_size=32, patch_size=4, channels=3, dim=64, depth=1, heads=4, num_classes=0)
print("patch tokens of a global crop:", tuple(vit_example.patch_tokens(crops[0]).shape),
      "of a local crop:", tuple(vit_example.patch_tokens(crops[2]).shape))

fig, axes = plt.subplots(3, 4, figsize=(9, 4.6), gridspec_kw={"height_ratios": [2, 1, 1]})
for col in range(4):
    axes[0, col].imshow(images[col].permute(1, 2, 0))
    for k, (box, color) in enumerate(zip(boxes, ["C0", "C0", "C1", "C1"])):
        x0, y0, w, h = box[col].tolist()
        axes[0, col].add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), w, h, fill=False, color=color, lw=1.5,
                                             ls="-" if k % 2 == 0 else "--"))
    axes[1, col].imshow(torch.cat([crops[0][col], crops[1][col]], 2).permute(1, 2, 0))
    axes[2, col].imshow(torch.cat([crops[2][col], crops[3][col]], 2).permute(1, 2, 0))
for ax in axes.flat:
    ax.axis("off")
axes[0, 0].set_title("image; global (blue), local (orange) boxes", fontsize=8, loc="left")
axes[1, 0].set_title("the 2 global crops, 32 x 32", fontsize=8, loc="left")
axes[2, 0].set_title("the 2 local crops, 16 x 16", fontsize=8, loc="left")
plt.show()

# %% [markdown]
# ---
# ## B. The collapse lab
#
# Everything of section A, on a toy that trains in seconds: the data are 2-D points from a ring of 8 Gaussians; a view is the point
# plus Gaussian noise of standard deviation 1 (two views of the same point can land nearer to a neighbouring mode); the backbone is a
# small MLP and the head is the real one (`course_lib.topics.dino.DINOHead`, $K = 64$). We train it three times, 200 steps each:
#
# - **centring and sharpening** ($\tau_t = 0.04$, centre subtracted): DINO;
# - **centring only** ($\tau_t = \tau_s = 0.1$: the target is no sharper than the student);
# - **sharpening only** ($\tau_t = 0.04$, $c = 0$).
#
# and record three numbers per step (`course_lib.topics.dino.collapse_diagnostics`): the mean target entropy $h(P_t)$; the entropy of the
# **batch-mean** target $\bar P_t = \frac{1}{B}\sum_b P_t(x_b)$, which is near $\ln K$ when different images use different outputs and near 0 when all
# images use the same one; and $\operatorname{KL}(P_t \,\Vert\, P_s)$, the part of the loss the student can still reduce. The loop is Algorithm 1 of the
# paper, written out.

# %%
def collapse_run(use_centering, tau_t, steps=200, seed=0, n_out=64, noise=1.0, batch_size=64):
    """Train a toy DINO on 2-D points; return the per-step diagnostics."""
    generator = seed_everything(seed)
    data = GaussianMixture2D.ring(8, radius=4.0, std=0.3)
    student = nn.Sequential(nn.Linear(2, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(),
                            DINOHead(64, out_dim=n_out, hidden=64, bottleneck=16))
    ema = EMA(student, decay=0.99, warmup=False)  # the teacher, a fixed rate here
    optimizer = torch.optim.AdamW(student.parameters(), lr=2e-3, weight_decay=0.04)
    center, log = torch.zeros(n_out), []
    for _ in range(steps):
        x = data.sample(batch_size, generator)  # (B, 2)
        view_1 = x + noise * torch.randn(x.shape, generator=generator)
        view_2 = x + noise * torch.randn(x.shape, generator=generator)
        s_1, s_2 = student(view_1), student(view_2)  # (B, K) each
        with torch.no_grad():
            t_1, t_2 = ema.model(view_1), ema.model(view_2)
        c = center if use_centering else torch.zeros(n_out)
        loss = dino_loss([s_1, s_2], [t_1, t_2], c, tau_s=0.1, tau_t=tau_t)  # H(t1, s2) / 2 + H(t2, s1) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.update(student)
        log.append(collapse_diagnostics(torch.cat([t_1, t_2]), torch.cat([s_2, s_1]), c, 0.1, tau_t))
        center = update_center(center, [t_1, t_2], momentum=0.9)
    return log


variants = {"centring + sharpening": (True, 0.04), "centring only": (True, 0.1), "sharpening only": (False, 0.04)}
collapse_logs = {name: collapse_run(*args) for name, args in tqdm(variants.items(), desc="collapse lab")}
ln_K = math.log(64)
final = {name: {key: np.mean([d[key] for d in log[-20:]]) for key in ("teacher_entropy", "batch_mean_entropy", "kl")}
         for name, log in collapse_logs.items()}
print(f"{'last 20 steps':24s} {'h(P_t)':>8s} {'h(mean P_t)':>12s} {'KL':>7s}   (ln K = {ln_K:.2f})")
for name, values in final.items():
    print(f"{name:24s} {values['teacher_entropy']:8.3f} {values['batch_mean_entropy']:12.3f} {values['kl']:7.3f}")
assert final["centring only"]["teacher_entropy"] > 0.9 * ln_K and final["centring only"]["kl"] < 0.05  # uniform
assert final["sharpening only"]["batch_mean_entropy"] < 0.15 * ln_K  # every image, the same output
healthy = final["centring + sharpening"]
assert healthy["teacher_entropy"] < 0.5 * ln_K and healthy["batch_mean_entropy"] > 0.25 * ln_K and healthy["kl"] > 0.1

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
for name, log in collapse_logs.items():
    for ax, key in zip(axes, ("teacher_entropy", "batch_mean_entropy", "kl")):
        ax.plot([d[key] for d in log], label=name)
for ax, title in zip(axes, ["target entropy h(P_t)", "entropy of the batch-mean target", "KL(P_t || P_s)"]):
    ax.set(xlabel="step", ylabel="nats", title=title)
for ax in axes[:2]:
    ax.axhline(ln_K, color="k", ls="--", lw=1, label="ln K")
axes[0].legend(fontsize=8)
plt.show()

# %% [markdown]
# Read the three panels together. **Centring only**: every target is uniform ($h(P_t) \approx \ln K$) and the student copies it (KL $\to 0$):
# nothing about the image is left. **Sharpening only**: every target is one-hot ($h(P_t) \to 0$), but it is the *same* one-hot for every
# image (the batch-mean entropy falls towards 0), and again KL $\to 0$. **Both**: each target is peaked (low $h(P_t)$), different images
# use different outputs (high batch-mean entropy), and the KL stays positive: the student still has something to learn. This
# is the paper's Figure 7 on a toy; the same three numbers are logged when we train the real thing in C.3.
#
# ---
# ## C. A tiny DINO on shapes, and its [CLS] attention
#
# ### C.1 The data
#
# `course_lib.data.make_shapes` draws scenes with their object masks, so we can score attention maps without labelling anything:
# one circle, square or triangle (radius 4-8 pixels) on a $32 \times 32$ background of soft stripes with noise
# (`course_lib.topics.dino.shapes_settings()`). Training draws fresh scenes for every batch; the scoring uses 200 fixed held-out scenes
# (`evaluation_scenes`). DINO never sees a mask or a label: the masks below are only for scoring.

# %%
print(course_lib.topics.dino.shapes_settings())
eval_scenes = evaluation_scenes(200)  # images (200, 3, 32, 32), masks (200, 32, 32), labels (200,)
object_patches = patch_masks(eval_scenes["masks"], patch_size=4)  # (200, 64): a patch is "object" if >= half its pixels are
print(f"object area: {eval_scenes['masks'].float().mean():.3f} of the pixels, {object_patches.float().mean():.3f} of the patches")
fig, axes = plt.subplots(1, 2, figsize=(9, 2.6))
course_lib.core.plotting.image_grid(eval_scenes["images"][:12], nrow=2, ax=axes[0])
axes[0].set_title("held-out scenes", fontsize=9)
course_lib.core.plotting.image_grid(object_patches[:12].reshape(12, 1, 8, 8).float(), nrow=2, ax=axes[1])
axes[1].set_title("their object masks on the 8 x 8 patch grid (for scoring only)", fontsize=9)
plt.show()

# %% [markdown]
# ### C.2 The network: chapter 04's ViT and the projection head
#
# The backbone is `course_lib.topics.vit.ViT` with $4 \times 4$ patches (an $8 \times 8$ grid), width 64, depth 3, 4 heads and no classifier; its
# [CLS] output goes into the head. The paper's head: a 3-layer MLP (hidden 2048, GELU) to a bottleneck of 256, $\ell_2$
# normalisation, and a weight-normalised linear layer to $K = 65{,}536$ outputs with its gain fixed to 1. Ours: hidden 256, bottleneck
# 64, $K = 256$. Weight normalisation writes each output's weight vector as $w_k = g_k\, v_k / \lVert v_k \rVert$; with $g_k = 1$ and the input
# $z$ of unit length, output $k$ is $\cos(z, v_k)$, a number in $[-1, 1]$, and $P_s$ is a softmax over $K$ cosines divided by $\tau_s = 0.1$.
# Built from bare layers, every shape printed:

# %%
cfg = course_lib.zoo.settings("dino_shapes")
generator = seed_everything(4)
backbone = ViT(**cfg.vit, num_classes=0)
head_linear_1, head_linear_2, head_linear_3 = nn.Linear(64, 256), nn.Linear(256, 256), nn.Linear(256, 64)
prototypes = nn.Parameter(torch.randn(256, 64) / 8)  # (K, bottleneck): the v_k


def my_head(features):
    """[CLS] features (B, 64) -> K = 256 cosines (B, 256)."""
    h = F.gelu(head_linear_1(features))  # (B, 256)
    h = F.gelu(head_linear_2(h))  # (B, 256)
    z = head_linear_3(h)  # (B, 64) the bottleneck
    z = z / z.norm(dim=-1, keepdim=True)  # l2-normalised
    v = prototypes / prototypes.norm(dim=-1, keepdim=True)  # (K, 64), unit rows: weight norm with gain 1
    return z @ v.T  # (B, K)


for crop in (crops[0], crops[2]):
    tokens = backbone.encode(crop)  # (B, 1 + N, 64)
    out = my_head(tokens[:, 0])
    print(f"crop {tuple(crop.shape)} -> tokens {tuple(tokens.shape)} -> [CLS] {tuple(tokens[:, 0].shape)} "
          f"-> head {tuple(out.shape)}, range [{out.min().item():.2f}, {out.max().item():.2f}]")

library_head = DINOHead(64, **cfg.head)
library_head.load_state_dict({"mlp.0.weight": head_linear_1.weight, "mlp.0.bias": head_linear_1.bias,
                              "mlp.2.weight": head_linear_2.weight, "mlp.2.bias": head_linear_2.bias,
                              "mlp.4.weight": head_linear_3.weight, "mlp.4.bias": head_linear_3.bias,
                              "prototypes": prototypes})
features = backbone.encode(crops[0])[:, 0]
assert torch.allclose(library_head(features), my_head(features), atol=1e-6)
model_example = DINO(cfg.vit, cfg.head)
print("step-by-step head == course_lib.topics.dino.DINOHead;",
      f"parameters: backbone {sum(p.numel() for p in model_example.backbone.parameters()):,}, "
      f"head {sum(p.numel() for p in model_example.head.parameters()):,}")

# %% [markdown]
# ### C.3 Training
#
# `course_lib.zoo.dino_shapes` made the shipped checkpoint; its settings per profile:

# %%
print(inspect.getsource(course_lib.zoo.dino_shapes.settings))

# %% [markdown]
# The loop, written out: Algorithm 1 with multi-crop, AdamW with a warm-up and a cosine decay, gradient clipping, the centre
# updated after the loss, and the teacher after the optimiser step. Under `ci` it is a smoke run (a few steps: shapes and finite
# losses); under `cpu` it trains for real (about 5 minutes on an idle 2-core laptop) and the [CLS] attention of one head moves onto
# the object. `course_lib.topics.dino.train_dino` is the same loop (the recipe calls it): first a 3-step run of both, which must give the
# same losses, then the run of the profile.

# %%
def my_train_dino(cfg, seed=0, show_progress=True):
    """Algorithm 1 with multi-crop; returns (student, teacher, losses, diagnostics)."""
    generator = seed_everything(seed)
    student = DINO(cfg.vit, cfg.head).to(DEVICE)
    ema = EMA(student, decay=cfg.teacher_momentum_base, warmup=False)
    teacher = ema.model  # a deep copy with requires_grad False: the stop-gradient
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = course_lib.core.train.warmup_cosine(optimizer, cfg.warmup_steps, cfg.steps)
    batches = course_lib.topics.dino.shapes_batches(cfg.batch_size, seed=seed)  # fresh scenes every step
    center = torch.zeros(cfg.head["out_dim"], device=DEVICE)
    losses, diagnostics = [], []
    for step in tqdm(range(1, cfg.steps + 1), desc="DINO on shapes", disable=not show_progress):
        images = next(batches)[0].to(DEVICE)  # (B, 3, 32, 32)
        crops = multi_crop(images, n_global=2, n_local=cfg.n_local, generator=generator, **cfg.crop)
        student_out = list(student(torch.cat(crops[:2])).chunk(2))  # one forward per resolution: 2 x (B, K)
        student_out += list(student(torch.cat(crops[2:])).chunk(cfg.n_local))  # + n_local x (B, K)
        with torch.no_grad():
            teacher_out = list(teacher(torch.cat(crops[:2])).chunk(2))  # the teacher: global crops only
        loss = dino_loss(student_out, teacher_out, center, cfg.tau_s, cfg.tau_t)
        diagnostics.append(collapse_diagnostics(torch.cat(teacher_out), torch.cat([student_out[1], student_out[0]]),
                                                center, cfg.tau_s, cfg.tau_t))
        center = update_center(center, teacher_out, cfg.center_momentum)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.clip_grad_norm)
        optimizer.step()
        scheduler.step()
        ema.decay = teacher_momentum(step, cfg.steps, cfg.teacher_momentum_base)
        ema.update(student)  # theta_t <- lambda theta_t + (1 - lambda) theta_s
        losses.append(loss.item())
    return student, teacher, losses, diagnostics


check_cfg = copy.copy(cfg)
check_cfg.steps = 3
_, _, check_losses, _ = my_train_dino(check_cfg, show_progress=False)
_, library_history = course_lib.topics.dino.train_dino(check_cfg, seed=0, show_progress=False)
print("3 steps, this loop:", np.round(check_losses, 6), " course_lib.topics.dino.train_dino:", np.round(library_history.losses, 6))
assert np.allclose(check_losses, library_history.losses, atol=1e-5)

# %%
print(cfg)
student, teacher, losses, diagnostics = my_train_dino(cfg)
assert all(math.isfinite(v) for v in losses) and len(losses) == cfg.steps
print(f"{cfg.steps} steps: loss {losses[0]:.3f} -> {np.mean(losses[-20:]):.3f}; last step: "
      + ", ".join(f"{k} {v:.3f}" for k, v in diagnostics[-1].items()))

# %% [markdown]
# The same three numbers as in the collapse lab, on the real run, and the attention of the teacher you just trained (scored the way
# C.5 explains; under `ci` it is still a random network). In the first few hundred steps the targets drift towards uniform while
# the centre catches up with the teacher's outputs (a short run shows only this phase); then they sharpen while the batch-mean
# entropy stays well above 0.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.3))
course_lib.core.plotting.plot_losses(losses, smooth=max(1, min(50, cfg.steps // 10)), ax=axes[0], title="DINO loss H(P_t, P_s)")
for key, label in [("teacher_entropy", "h(P_t)"), ("batch_mean_entropy", "h(batch-mean P_t)"), ("kl", "KL(P_t || P_s)")]:
    axes[1].plot([d[key] for d in diagnostics], label=label)
axes[1].axhline(math.log(cfg.head["out_dim"]), color="k", ls="--", lw=1, label="ln K")
axes[1].set(xlabel="step", ylabel="nats", title="collapse diagnostics")
axes[1].legend(fontsize=8)
plt.show()
shipped_metrics = course_lib.core.checkpointing.read_manifest()["dino_shapes"]["metrics"]
print(f"the shipped run ({course_lib.core.checkpointing.read_manifest()['dino_shapes']['recipe']['steps']} steps) ended at "
      f"h(P_t) {shipped_metrics['teacher_entropy']:.2f}, h(batch-mean P_t) {shipped_metrics['batch_mean_entropy']:.2f}, "
      f"ln K = {shipped_metrics['ln_K']:.2f}: sharp targets, many outputs in use")
your_report = attention_report(teacher.backbone, eval_scenes["images"].to(DEVICE), eval_scenes["masks"].to(DEVICE))
print("your teacher: per-head IoU", your_report["iou"].cpu().numpy().round(3), "| attention mass on the object",
      your_report["mass_on_object"].cpu().numpy().round(3), f"| object area {your_report['object_area']:.3f}")
if cfg.steps < 100:  # the ci smoke run
    print(f"(a {cfg.steps}-step smoke run: the losses are finite and the shapes right, but this teacher is still close to a "
          "random network, so IoUs and masses like those of the random initialisation in C.5 are expected, not a bug; "
          f"the shipped teacher of C.4 trained for {course_lib.core.checkpointing.read_manifest()['dino_shapes']['recipe']['steps']} steps)")
if cfg.steps >= 1000:  # a real run: healthy, no collapse
    last = diagnostics[-50:]
    assert np.mean([d["teacher_entropy"] for d in last]) < 0.5 * math.log(cfg.head["out_dim"])
    assert np.mean([d["batch_mean_entropy"] for d in last]) > 0.25 * math.log(cfg.head["out_dim"])

# %% [markdown]
# ### C.4 The [CLS] attention maps of the shipped teacher
#
# For head $h$ of the last block, the [CLS] token's query $q^h_{\text{cls}} \in \mathbb{R}^{D_h}$ against the keys $K^h$ of all $1 + N$ tokens:
#
# $$
# a^h = \operatorname{softmax}\Big(\frac{q^h_{\text{cls}} K^{h\top}}{\sqrt{D_h}}\Big) \in \mathbb{R}^{1 + N}, \qquad
# A^h = \big(a^h_1, \dots, a^h_N\big) \text{ reshaped to } (H/P) \times (W/P),
# $$
#
# the patch part of the row (the weight on [CLS] itself is dropped, as in DINO's code). DINO's figures show the **teacher**, the
# network it keeps. `course_lib.topics.dino.cls_attention` takes it from the attention maps the ViT returns; the check recomputes it from
# the last block's queries and keys.

# %%
dino_model = course_lib.zoo.load_shipped("dino_shapes", DEVICE)
entry = course_lib.core.checkpointing.read_manifest()["dino_shapes"]
print("recipe:", {k: entry["recipe"][k] for k in ("profile", "steps", "batch_size", "lr", "tau_s", "tau_t", "seed")},
      f"| trained in {entry['wall_time_s'] / 60:.1f} min on {entry['device']} | {entry['size_bytes'] / 1e6:.2f} MB")
vit = dino_model.backbone
x = eval_scenes["images"][:4].to(DEVICE)
with torch.no_grad():
    tokens = torch.cat([vit.cls_tokens(4), vit.patch_tokens(x)], 1)  # (B, 1 + N, D)
    for block in vit.blocks[:-1]:
        tokens, _ = block(tokens)
    q, k, _ = vit.blocks[-1].attn.split_heads(vit.blocks[-1].norm1(tokens))  # (B, heads, 1 + N, D_h)
    a = torch.softmax(q[:, :, 0:1] @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)[:, :, 0]  # (B, heads, 1 + N)
assert torch.allclose(a[:, :, 1:], cls_attention(vit, x), atol=1e-6)
print(f"[CLS] rows: (B, heads, N) = {tuple(a[:, :, 1:].shape)}; weight on [CLS] itself per head (image 0): "
      f"{a[0, :, 0].cpu().numpy().round(3)}")

# %%
attention = cls_attention(vit, eval_scenes["images"].to(DEVICE)).cpu()  # (200, heads, 64)
report = attention_report(vit, eval_scenes["images"].to(DEVICE), eval_scenes["masks"].to(DEVICE))
best_head = report["best_head"]
n_show, heads = 6, attention.shape[1]
vmax = attention[:n_show].max().item()  # one colour scale for every map: a diffuse head stays dark
outline = dict(levels=[0.5], colors="c", linewidths=1)
scale = matplotlib.colors.PowerNorm(gamma=0.5, vmin=0, vmax=vmax)  # a square-root scale: weak weights stay visible
fig, axes = plt.subplots(n_show, heads + 2, figsize=(10.5, 1.7 * n_show), layout="constrained")
for row in range(n_show):
    picture = eval_scenes["images"][row].permute(1, 2, 0)  # (32, 32, 3)
    axes[row, 0].imshow(picture)
    for h in range(heads):
        shown = axes[row, 1 + h].imshow(attention[row, h].reshape(8, 8), cmap="inferno", norm=scale,
                                        extent=(-0.5, 31.5, 31.5, -0.5))  # the 8 x 8 grid over the 32 x 32 pixels
        axes[row, 1 + h].contour(eval_scenes["masks"][row].float(), **outline)
    kept = mass_mask(attention[row, best_head]).reshape(8, 8).float()
    kept_pixels = torch.kron(kept, torch.ones(4, 4))[..., None]  # (32, 32, 1)
    axes[row, -1].imshow(0.35 * picture + 0.65 * kept_pixels)
    axes[row, -1].contour(eval_scenes["masks"][row].float(), **outline)
for ax in axes.flat:
    ax.axis("off")
for h in range(heads):
    axes[0, 1 + h].set_title(f"head {h}" + (" (best)" if h == best_head else ""), fontsize=9)
axes[0, 0].set_title("scene", fontsize=9)
axes[0, -1].set_title(f"60% mask, head {best_head}", fontsize=9)
fig.colorbar(shown, ax=axes[:, -1], fraction=0.08, label="[CLS] attention weight (square-root scale)")
fig.suptitle("last-block [CLS] attention over the 8 x 8 patches, one colour scale for all; cyan: the object's outline",
             fontsize=10)
plt.show()
on_object = (attention * object_patches[:, None]).sum(-1) / attention.sum(-1)  # (200, heads): each map's share on the object
best_masks = mass_mask(attention[:, best_head])                                  # (200, 64) the 60% masks of the best head
best_ious = mask_iou(best_masks, object_patches)                                 # (200,)
sharp = on_object[:, best_head] >= 0.5                                           # at least half the weight on the object
for row in range(n_show):
    print(f"row {row + 1}: head {best_head} puts {on_object[row, best_head]:.2f} of its weight on the object "
          f"({'sharp' if sharp[row] else 'diffuse'}); its 60% mask {best_masks[row].sum():2d} patches, the object "
          f"{object_patches[row].sum():2d}; IoU {best_ious[row]:.2f}")
print(f"all {len(sharp)} scenes: sharp in {sharp.sum()} ({100 * sharp.float().mean():.0f}%), mean IoU {best_ious[sharp].mean():.2f}, "
      f"mask {best_masks[sharp].sum(-1).float().mean():.1f} patches; diffuse in {(~sharp).sum()}, mean IoU "
      f"{best_ious[~sharp].mean():.2f}, mask {best_masks[~sharp].sum(-1).float().mean():.1f} patches")
print("on the sharp scenes, each head's mean share on the object:", on_object[sharp].mean(0).numpy().round(2),
      f"(the object's share of the patches: {object_patches[sharp].float().mean():.2f})")
assert 0 < sharp.sum() < len(sharp) and best_ious[sharp].mean() > best_ious[~sharp].mean() + 0.1
assert best_masks[~sharp].sum(-1).float().mean() > 3 * best_masks[sharp].sum(-1).float().mean()

# %% [markdown]
# The best head is sharp on the object in some scenes (at least half of its weight on it) and diffuse in others; the printout marks
# each row of the figure and counts both kinds among all 200 scenes. Where it is diffuse, its 60% mask spills over the background (many
# times the object's size), which is why its mean IoU (C.5) is far from 1. Where it is sharp, the last line gives every head's share on
# the object next to the object's share of the patches: a head near or below that share is looking elsewhere, and not every head
# follows the best one.
#
# **Widget: [CLS] attention per head and image** (chapter 04's `course_lib.topics.vit.attention_explorer`). It starts on the
# [CLS] query; choose a head (or their mean), a layer, an image. Things to look for: in the last layer one head puts most of its weight
# on the object while the others spread theirs over the background; move to layer 0 and the maps are unstructured; a patch
# query (switch the query toggle to a patch and pick it with the query row and column sliders) attends mostly to patches of its
# own colour.

# %%
with torch.no_grad():
    _, all_attentions = vit.encode(eval_scenes["images"][:16].to(DEVICE), return_attention=True)
course_lib.topics.vit.attention_explorer(eval_scenes["images"][:16], [w.cpu() for w in all_attentions], patch_size=4,
                                      prefix_tokens=1, head=best_head, query=0, rollout=False,
                                      titles=[f"scene {i}" for i in range(16)])

# %% [markdown]
# ### C.5 A number for the maps
#
# **The 60%-mass mask** (DINO's figures): sort the patch weights $A^h$ in decreasing order and keep patches until their sum reaches 60% of
# the total, i.e. the smallest set $S$ with $\sum_{j \in S} A^h_j \ge 0.6 \sum_j A^h_j$. Score it against the object's patch mask $O$ by the
# intersection over union $\operatorname{IoU}(S, O) = \lvert S \cap O \rvert / \lvert S \cup O \rvert$, averaged over the 200 held-out scenes, per head. A second number
# needs no threshold: the **attention mass on the object**, $\sum_{j \in O} A^h_j / \sum_j A^h_j$, against the object's share of the patches,
# $\lvert O \rvert / N$, which is what attention spread evenly would put there.
#
# Two baselines. A **centred disc** of patches (objects are placed at random, but a disc in the middle overlaps many of them): we try
# every radius and keep the best, tuned on the very masks it is scored on, so it is a generous baseline. And the same network at its
# **random initialisation**: what the architecture gives with no training.

# %%
assert mass_mask(torch.tensor([0.05, 0.5, 0.2, 0.25])).tolist() == [False, True, False, True]  # 0.5 + 0.25 >= 0.6
radius, prior_iou = centre_prior_iou(object_patches, grid=8)
seed_everything(0)
random_vit = DINO(cfg.vit, cfg.head).to(DEVICE).eval().backbone
random_report = attention_report(random_vit, eval_scenes["images"].to(DEVICE), eval_scenes["masks"].to(DEVICE))
print(f"{'':24s}" + "".join(f"{'head ' + str(h):>9s}" for h in range(4)))
print(f"{'IoU, 60% mask':24s}" + "".join(f"{v:9.3f}" for v in report["iou"].tolist()))
print(f"{'attention on object':24s}" + "".join(f"{v:9.3f}" for v in report["mass_on_object"].tolist()) +
      f"   (object area {report['object_area']:.3f})")
print(f"{'random init: IoU':24s}" + "".join(f"{v:9.3f}" for v in random_report["iou"].tolist()))
print(f"best head {best_head}: IoU {report['best_iou']:.3f}; head-mean attention's mask {report['mean_head_iou']:.3f}; "
      f"centred disc (best radius {radius} patches) {prior_iou:.3f}; random init, best head {random_report['best_iou']:.3f}")
print("manifest:", {k: entry["metrics"][k] for k in ("best_head_iou", "centre_prior_iou", "random_init_best_head_iou")})
print("mass on the object / object area, per head: DINO teacher",
      (report["mass_on_object"] / report["object_area"]).numpy().round(2), "| random init",
      (random_report["mass_on_object"] / random_report["object_area"]).numpy().round(2))
assert report["best_iou"] > prior_iou and report["best_iou"] > random_report["best_iou"]
assert report["mass_on_object"].max() > 3 * report["object_area"]
assert ((random_report["mass_on_object"] / random_report["object_area"]) - 1).abs().max() < 0.5  # random init: about 1

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.3))
heads_axis = np.arange(4)
axes[0].bar(heads_axis - 0.2, report["iou"], 0.4, label="DINO teacher")
axes[0].bar(heads_axis + 0.2, random_report["iou"], 0.4, label="random init", color="0.6")
axes[0].axhline(prior_iou, color="C3", ls="--", label=f"best centred disc {prior_iou:.2f}")
axes[0].set(xticks=heads_axis, xlabel="head", ylabel="mean IoU", title="60%-mass mask vs object, 200 scenes")
axes[0].legend(fontsize=8)
axes[1].bar(heads_axis - 0.2, report["mass_on_object"], 0.4, label="DINO teacher")
axes[1].bar(heads_axis + 0.2, random_report["mass_on_object"], 0.4, label="random init", color="0.6")
axes[1].axhline(report["object_area"], color="k", ls="--", label="object area (uniform attention)")
axes[1].set(xticks=heads_axis, xlabel="head", ylabel="share of [CLS] attention", title="attention mass on the object")
axes[1].legend(fontsize=8)
plt.show()

# %% [markdown]
# The shipped teacher's best head puts several times the object's area fraction of its weight on the object, and its 60% mask beats
# both baselines; at random initialisation the mass on the object is close to its area, as it should be for unstructured
# attention (the last line of the printout). Nobody told the network what an object is: agreeing across crops (a local crop of a
# triangle must give the same output distribution as the whole scene) made the object the thing worth attending to. The other heads
# are not all background heads: the printout gives each head's mass on the object as a multiple of the object's area; a head near 1 or
# below spreads its weight over the background, a head well above 1 follows the object too, less sharply than the best one.
#
# > **Common confusion:** "DINO's attention segments objects", as if any DINO checkpoint drew the paper's Figure 1. Those maps come from
# > the ViT-S/8 trained 300 epochs on ImageNet, teacher, last layer, [CLS] query, one head at a time, with the 60%-mass threshold;
# > users who ran the default smaller-patch-count checkpoint got noisier maps (`facebookresearch/dino#228`). Our toy is one seed on an
# > easy, high-contrast data set: emergence on natural images needs far more data and compute. And the heads are not ranked by
# > anything in training: "the best head" is chosen with the masks, which is why the baselines get the same choice (best radius,
# > best random head).
#
# ---
# ## D. Normalized Cut on the learned patch features (TokenCut) (optional deep dive)
#
# Chapter 02 split a graph in two with the second-smallest generalized eigenvector $y_1$ of $(D - W) y = \lambda D y$, the relaxed Normalized Cut.
# TokenCut (Wang et al., 2022) builds the graph on the $N$ patch tokens of a self-supervised ViT: node $i$ is a patch, its feature $k_i$ the
# last block's **key** (heads concatenated), and
#
# $$
# W_{ij} = \begin{cases} 1 & \text{if } \cos(k_i, k_j) > \tau \\ \varepsilon & \text{otherwise} \end{cases}, \qquad \varepsilon = 10^{-5},
# $$
#
# a graph where similar patches are strongly connected and every pair weakly (so no node is isolated and $D$ is invertible). Split at
# the mean of $y_1$; the foreground is the side that holds the patch with the largest $\lvert y_1 - \bar y_1 \rvert$. We check the eigenproblem on one
# image's graph: its residual, the constraint $y_1^\top D \mathbf{1} = 0$ that makes $y_1$ a non-trivial solution, and that the split's Ncut is below that of
# random splits of the same size.

# %%
keys = last_block_keys(vit, eval_scenes["images"].to(DEVICE)).cpu()  # (200, 64, D)
tau_one = similarity_quantile_tau(keys[0], 0.3)
W = course_lib.topics.spectral.feature_affinity(keys[0], tau_one)  # (64, 64) numpy
lambdas, Y = course_lib.topics.spectral.ncut_eigenvectors(W, k=2)
degree = W.sum(1)
y1 = Y[:, 1]
residual = np.abs((np.diag(degree) - W) @ y1 - lambdas[1] * degree * y1).max()
print(f"lambda_0 = {lambdas[0]:.1e}, lambda_1 = {lambdas[1]:.4f}; max |(D - W) y_1 - lambda_1 D y_1| = {residual:.1e}; "
      f"y_1^T D 1 = {y1 @ degree:.1e}")
assert residual < 1e-8 and abs(y1 @ degree) < 1e-8
foreground = tokencut_mask(keys[0], tau_one)
rng = np.random.default_rng(0)
random_ncuts = [course_lib.topics.spectral.ncut_value(W, rng.permutation(foreground)) for _ in range(200)]
print(f"Ncut of the eigenvector split {course_lib.topics.spectral.ncut_value(W, foreground):.4f}; "
      f"random splits of the same size: median {np.median(random_ncuts):.4f}")
assert course_lib.topics.spectral.ncut_value(W, foreground) < np.median(random_ncuts)

# %% [markdown]
# ### D.1 The threshold: read it off the similarity histogram (optional deep dive)
#
# TokenCut uses $\tau = 0.2$ on DINO's ViT-S/16. The histogram of our tiny model's key similarities says why that cannot transfer:
# almost every pair of patches has a cosine above 0.2 (the share is printed), so the graph is nearly complete and carries little
# information. The random network is worse still: its keys point almost the same way (every pair above 0.2, a higher median
# cosine). We calibrate instead: $\tau$ = a quantile $q$ of each image's own off-diagonal similarities
# (the share $1 - q$ of the pairs gets the strong edge), with $q$ picked on calibration scenes of another seed (60 under `cpu`, 30 under
# `ci`), then scored on the held-out scenes (all 200 under `cpu`, the first 60 under `ci`; the printout says which).

# %%
def similarities(features):
    f = F.normalize(features, dim=-1)
    sims = f @ f.transpose(-2, -1)  # (B, N, N)
    return sims[:, ~torch.eye(sims.shape[-1], dtype=torch.bool)].flatten()


def tokencut_iou(feature_batch, objects, quantile=None, tau=None):
    """Mean IoU of the TokenCut masks; tau fixed, or the given quantile of each image's similarities."""
    masks = [tokencut_mask(f, tau if tau is not None else similarity_quantile_tau(f, quantile)) for f in feature_batch]
    return mask_iou(torch.from_numpy(np.stack(masks)), objects).mean().item()


cut_cfg = per_profile(ci=dict(n_calibration=30, n_eval=60), cpu=dict(n_calibration=60, n_eval=200),
                      gpu=dict(n_calibration=60, n_eval=200))  # one small eigenproblem per scene and setting
random_keys = last_block_keys(random_vit, eval_scenes["images"].to(DEVICE)).cpu()
calibration = evaluation_scenes(cut_cfg.n_calibration, seed=20_000)
calibration_keys = last_block_keys(vit, calibration["images"].to(DEVICE)).cpu()
calibration_objects = patch_masks(calibration["masks"], 4)
quantiles = [0.1, 0.2, 0.3, 0.5, 0.7, 0.9]
calibration_iou = [tokencut_iou(calibration_keys, calibration_objects, q) for q in quantiles]
best_q = quantiles[int(np.argmax(calibration_iou))]
print(f"{cut_cfg.n_calibration} calibration scenes, IoU by quantile:", dict(zip(quantiles, np.round(calibration_iou, 3))),
      "-> q =", best_q)

n = cut_cfg.n_eval
rows = {"TokenCut, DINO keys, tau = 0.2 (the paper's)": tokencut_iou(keys[:n], object_patches[:n], tau=0.2),
        f"TokenCut, DINO keys, tau = quantile {best_q}": tokencut_iou(keys[:n], object_patches[:n], best_q),
        f"TokenCut, random-init keys, tau = quantile {best_q}": tokencut_iou(random_keys[:n], object_patches[:n], best_q),
        "[CLS] attention, best head (C.5)": report["best_iou"],
        "[CLS] attention, random init, best head": random_report["best_iou"],
        "centred disc, best radius": prior_iou}
print(f"TokenCut rows on the first {n} held-out scenes, the others on all 200 (manifest, 200 scenes: TokenCut "
      f"{entry['metrics']['tokencut_iou']:.3f} at quantile {entry['metrics']['tokencut_quantile']})")
for name, value in rows.items():
    print(f"{name:52s} mean IoU {value:.3f}")
assert rows[f"TokenCut, DINO keys, tau = quantile {best_q}"] > prior_iou + 0.15
assert rows["TokenCut, DINO keys, tau = 0.2 (the paper's)"] < rows[f"TokenCut, DINO keys, tau = quantile {best_q}"]
assert min(rows[f"TokenCut, {which} keys, tau = quantile {best_q}"] for which in ("DINO", "random-init")) > report["best_iou"]
shares = {name: similarities(feats[:50]) for name, feats in [("DINO teacher", keys), ("random init", random_keys)]}
print("pairs of patches with cosine above 0.2, 50 scenes: "
      + "; ".join(f"{name} {(s > 0.2).float().mean():.1%} (median cosine {s.median():.2f})" for name, s in shares.items()))
assert (shares["DINO teacher"] > 0.2).float().mean() > 0.9 and shares["random init"].median() > shares["DINO teacher"].median()

fig, ax = plt.subplots(figsize=(7, 3.2))
for feats, name, color in [(keys, "DINO teacher", "C0"), (random_keys, "random init", "0.5")]:
    ax.hist(similarities(feats[:50]).numpy(), bins=100, range=(-0.2, 1), density=True, alpha=0.6, color=color, label=name)
ax.axvline(0.2, color="C3", ls="--", label="tau = 0.2 (TokenCut on ViT-S/16)")
ax.axvline(np.median([similarity_quantile_tau(f, best_q) for f in keys[:50]]), color="C2", ls="--",
           label=f"calibrated: quantile {best_q} (median over images)")
ax.set(xlabel="cosine similarity of two patches' keys", ylabel="density", title="the similarity histogram, 50 scenes")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# On this toy the calibrated cut beats the best attention head, and even the random network's keys give a good cut once the
# threshold is calibrated: a patch embedding of a uniformly coloured object is already a feature in which the object's patches are
# alike, so what training adds here is modest. Real photographs are not uniformly coloured blobs on stripes; TokenCut's results there
# (CorLoc 68.8 on VOC07, 58.8 on COCO20k, with the keys of DINO's ImageNet-trained ViT-S/16 and $\tau = 0.2$) rest on features learned
# from a million images, and our toy cannot say how much of that the training contributes. Do not generalise from coloured shapes.
#
# **Widget: the cut.** Pick a scene and the quantile that sets $\tau$; see the eigenvector $y_1$ on the patch grid, the mask, and where $\tau$ falls
# in that scene's histogram. A low quantile connects almost everything (the object's patches still hang together more strongly than
# the rest); a high one leaves only the most similar pairs, and the cut starts splitting the background's stripes.

# %%
def draw_tokencut(axes, scene, quantile):
    features = keys[scene]
    tau = similarity_quantile_tau(features, quantile)
    W = course_lib.topics.spectral.feature_affinity(features, tau)
    _, Y = course_lib.topics.spectral.ncut_eigenvectors(W, k=2)
    mask = tokencut_mask(features, tau)
    iou = mask_iou(torch.from_numpy(mask), object_patches[scene]).item()
    axes[0].imshow(eval_scenes["images"][scene].permute(1, 2, 0))
    axes[0].contour(eval_scenes["masks"][scene].float(), levels=[0.5], colors="w", linewidths=0.8)
    axes[0].set_title(f"scene {scene}", fontsize=9)
    axes[1].imshow(Y[:, 1].reshape(8, 8), cmap="coolwarm")
    axes[1].set_title("y_1 (second eigenvector)", fontsize=9)
    course_lib.core.plotting.overlay_heatmap(eval_scenes["images"][scene], torch.from_numpy(mask).float().reshape(8, 8), ax=axes[2],
                                        alpha=0.5, cmap="gray")
    axes[2].set_title(f"foreground; IoU {iou:.2f}", fontsize=9)
    axes[3].hist(similarities(features[None]).numpy(), bins=60, color="0.5")
    axes[3].axvline(tau, color="C2", ls="--")
    axes[3].set_title(f"this scene's similarities; tau = {tau:.3f}", fontsize=9)
    for ax in axes[:2]:
        ax.axis("off")


course_lib.core.widgets.interactive_figure(
    draw_tokencut, ncols=4, figsize=(13, 3.2),
    scene=ipywidgets.IntSlider(value=0, min=0, max=199, description="scene"),
    quantile=ipywidgets.FloatSlider(value=best_q, min=0.05, max=0.95, step=0.05, description="quantile q"))

# %% [markdown]
# ---
# ## E. MAE: masked autoencoders
#
# MAE hides most of an image and trains a network to paint the hidden part back. Four design choices make it work and make it cheap:
# a **high mask ratio** (75%: images are redundant, a lower ratio can be solved by interpolating neighbours); an **encoder that sees only
# the visible patches** (no mask tokens in the encoder, so it runs on a quarter of the tokens); a **light decoder** that receives the encoded
# visible tokens plus one shared, learned **mask token** at every hidden position, with position embeddings so each mask token knows where
# it is; and a **loss on the masked patches only**. After pre-training the decoder is thrown away and the encoder is the product.
# The picture (`course_lib.topics.mae.schematic()`), with the numbers of our MNIST model; E.1-E.3 build each part.

# %%
course_lib.topics.mae.schematic()
plt.show()

# %% [markdown]
# ### E.1 Per-sample random masking with keep and restore indices
#
# For each image draw $N$ uniform numbers and sort them: `ids_shuffle = argsort(noise)` is a random permutation; the first
# $N_{\text{keep}} = \lfloor N (1 - r) \rfloor$ entries are the visible patches (`ids_keep`). Its inverse permutation, `ids_restore = argsort(ids_shuffle)`, tells
# where each original patch went, so that after the decoder has appended the mask tokens *at the end* of the shuffled sequence, one
# `gather` with `ids_restore` puts every token back at its position. The binary mask (1 = hidden) in the original order is the
# shuffled $[0, \dots, 0, 1, \dots, 1]$ gathered the same way. Note the count: with $N = 49$ and $r = 0.75$, $N_{\text{keep}} = \lfloor 12.25 \rfloor = 12$, so
# 37 patches are hidden (75.5%), not $\lfloor 0.75 \cdot 49 \rfloor = 36$; the MAE code rounds this way too. Checked:

# %%
generator = torch.Generator().manual_seed(5)
n_patches, ratio = 49, 0.75
ids_keep, ids_restore, mask = random_masking(4, n_patches, ratio, generator)
noise = torch.rand(4, n_patches, generator=torch.Generator().manual_seed(5))  # the same draws
ids_shuffle = noise.argsort(dim=1)
assert torch.equal(ids_keep, ids_shuffle[:, :12])
assert torch.equal(torch.gather(ids_shuffle, 1, ids_restore), torch.arange(n_patches).expand(4, -1))  # the inverse
assert torch.equal(torch.gather(ids_restore, 1, ids_shuffle), torch.arange(n_patches).expand(4, -1))
assert (mask.sum(1) == n_patches - int(n_patches * (1 - ratio))).all()
assert all(mask[b, ids_keep[b]].sum() == 0 for b in range(4))  # the kept ids are exactly the visible patches
print(f"per image: {int(mask[0].sum())} of {n_patches} hidden; kept ids of image 0: {sorted(ids_keep[0].tolist())}")
print("the four masks differ:", len({tuple(m.tolist()) for m in mask}) == 4)

# %% [markdown]
# ### E.2 The model, step by step
#
# On MNIST with $4 \times 4$ patches ($N = 49$, each $16$ pixels). **Encoder**: chapter 04's ViT (width 64, depth 4); we call its pieces directly:
# `patch_tokens` (patch embedding + positions, all $N$), a `gather` of the visible ones, the [CLS] token, `run_blocks`. **Decoder**: a linear
# map to the decoder width, the mask token appended $N - N_{\text{keep}}$ times, unshuffled with `ids_restore`, its own position embeddings added, two
# blocks, a LayerNorm, and a linear map to 16 pixels per patch. Every shape printed; then the library's `MAE` on the same weights
# and the same mask.

# %%
seed_everything(6)
mae_cfg = course_lib.zoo.settings("mae_mnist")
mae_example = MAE(**mae_cfg.model)
x_mnist = load_mnist("test")[0][:8]  # (8, 1, 28, 28)
ids_keep, ids_restore, mask = random_masking(8, 49, 0.75, torch.Generator().manual_seed(7))
enc = mae_example.encoder
trace = []
all_tokens = enc.patch_tokens(x_mnist); trace.append(("patch tokens + positions", all_tokens))
visible = torch.gather(all_tokens, 1, ids_keep[..., None].expand(-1, -1, 64)); trace.append(("visible tokens only", visible))
latent = enc.run_blocks(torch.cat([enc.cls_tokens(8), visible], 1)); trace.append(("encoder([CLS] + visible)", latent))
y = mae_example.decoder_embed(latent); trace.append(("decoder_embed", y))
mask_tokens = mae_example.mask_token.expand(8, 49 - 12, -1); trace.append(("mask token x (N - N_keep)", mask_tokens))
shuffled = torch.cat([y[:, 1:], mask_tokens], 1); trace.append(("visible + mask tokens, shuffled order", shuffled))
restored = torch.gather(shuffled, 1, ids_restore[..., None].expand(-1, -1, y.shape[-1])); trace.append(("unshuffled", restored))
h = torch.cat([y[:, :1], restored], 1) + mae_example.decoder_position; trace.append(("[CLS] + all, + positions", h))
for block in mae_example.decoder_blocks:
    h, _ = block(h)
predicted_pixels = mae_example.decoder_pred(mae_example.decoder_norm(h))[:, 1:]; trace.append(("predicted pixels", predicted_pixels))
for name, tensor in trace:
    print(f"{name:40s} {tuple(tensor.shape)}")
with torch.no_grad():
    library_pixels = mae_example.decode(mae_example.encode_visible(x_mnist, ids_keep), ids_restore)
assert torch.allclose(library_pixels, predicted_pixels, atol=1e-6)
print("step by step == course_lib.topics.mae.MAE.decode(encode_visible(...)); encoder tokens: "
      f"{1 + 12} instead of {1 + 49} (attention cost ~ tokens^2: {(13 / 50) ** 2:.1%}; MLPs ~ tokens: {13 / 50:.0%})")

# %% [markdown]
# ### E.3 The loss: masked patches only
#
# With $\mathcal{M}$ the hidden patches of an image, $x_i \in \mathbb{R}^{P^2 C}$ the pixels of patch $i$ and $\hat x_i$ the prediction,
#
# $$
# \mathcal{L}_{\text{MAE}} = \frac{1}{\lvert \mathcal{M} \rvert} \sum_{i \in \mathcal{M}} \frac{1}{P^2 C} \big\lVert \hat x_i - \tilde x_i \big\rVert^2 ,
# \qquad
# \tilde x_i = x_i \;\;\text{(raw pixels)} \quad\text{or}\quad \tilde x_i = \frac{x_i - \mu(x_i)}{\sqrt{\sigma^2(x_i) + 10^{-6}}} \;\;\text{(normalised pixels)},
# $$
#
# averaged over the batch; $\mu$ and $\sigma^2$ are the mean and variance of the patch's own pixels. Visible patches contribute nothing, so the
# gradient with respect to their predictions is exactly zero: the network gets no credit for copying what it can see. The paper
# reports that the normalised target (`norm_pix_loss`) gives better representations. **We train with raw pixels**: on MNIST most patches are
# blank (their $\sigma = 0$, so the normalised target is 0 and carries no brightness), and raw pixels let us show the reconstructions
# as they are, without borrowing each hidden patch's true mean and spread for display. Checked: the masked-only loss against a direct
# computation, the zero gradient, and the normalised target's per-patch mean 0 and variance 1.

# %%
target_patches = patchify(x_mnist, 4)  # (8, 49, 16)
prediction = predicted_pixels.detach().clone().requires_grad_(True)
loss = mae_loss(prediction, target_patches, mask)
direct = ((prediction - target_patches) ** 2).mean(-1)[mask.bool()].mean()  # mean over the hidden patches
loss.backward()
assert torch.allclose(loss, direct)
assert prediction.grad[~mask.bool()].abs().max() == 0 and prediction.grad[mask.bool()].abs().max() > 0
normalized = normalized_patches(target_patches.double())
busy = target_patches.var(-1) > 1e-3  # patches with some ink
assert torch.allclose(normalized.mean(-1), torch.zeros(8, 49, dtype=torch.float64), atol=1e-9)
assert torch.allclose(normalized.var(-1)[busy], torch.ones(int(busy.sum()), dtype=torch.float64), atol=1e-2)
print(f"masked-only loss {loss.item():.4f} == direct {direct.item():.4f}; gradient on visible predictions: 0; "
      f"{(~busy).float().mean():.0%} of MNIST patches here are blank (normalised target 0)")

# %% [markdown]
# > **Common confusion:** a common summary says that ViT's own masked-patch experiment (Dosovitskiy et al. 2021) "did not attempt to
# > reconstruct raw pixel values". In fact, in the ViT paper's appendix, 50% of patch embeddings are corrupted (BERT's 80/10/10: mask token, random patch, unchanged) and the model predicts
# > each corrupted patch's 3-bit **mean colour** (a 512-way classification); full-patch L2 regression was tried too. MAE differs in three ways:
# > it hides 75%, its encoder never sees a mask token, and it regresses every pixel of the hidden patches (normalised, in the paper).
# > MAE is arXiv 2021, CVPR 2022.
#
# ### E.4 Training, and the shipped model

# %%
print(inspect.getsource(course_lib.topics.mae.train_mae))
print(mae_cfg)
your_mae, mae_history, your_mae_metrics = course_lib.topics.mae.train_mae(mae_cfg, seed=0)
assert all(math.isfinite(v) for v in mae_history.losses)
print(f"your MAE, {mae_cfg.steps} steps: train loss {mae_history.losses[0]:.4f} -> {np.mean(mae_history.losses[-20:]):.4f}; "
      f"test masked MSE {your_mae_metrics['test_masked_mse']:.4f} (mean-fill baseline {your_mae_metrics['test_mean_fill_mse']:.4f})")
if mae_cfg.steps < 100:  # the ci smoke run
    print(f"(a {mae_cfg.steps}-step smoke run: a test error close to the mean-fill baseline's is expected, not a bug; "
          f"the shipped MAE below trained for {course_lib.core.checkpointing.read_manifest()['mae_mnist']['recipe']['steps']} steps)")
course_lib.core.plotting.plot_losses(mae_history, smooth=max(1, min(50, mae_cfg.steps // 10)), log_y=True,
                                title="MAE loss (MSE per pixel on hidden patches)")
plt.show()

# %% [markdown]
# The shipped `mae_mnist` (the `gpu` settings, trained on the CPU), scored on 2,000 test digits with fixed masks: the MSE per pixel on
# hidden patches, next to a baseline that fills every hidden pixel with the mean of the image's visible pixels.

# %%
mae = course_lib.zoo.load_shipped("mae_mnist", DEVICE)
mae_entry = course_lib.core.checkpointing.read_manifest()["mae_mnist"]
x_test = load_mnist("test")[0]
shipped_mae = evaluate_mae(mae, x_test[:2000].to(DEVICE), 0.75, seed=0)
print(f"shipped: masked MSE {shipped_mae['masked_mse']:.4f}, mean-fill baseline {shipped_mae['mean_fill_mse']:.4f} "
      f"(manifest, all 10,000 test digits: {mae_entry['metrics']['test_masked_mse']:.4f})")
assert shipped_mae["masked_mse"] < 0.6 * shipped_mae["mean_fill_mse"]
ratios = [0.25, 0.5, 0.75, 0.9]
mse_by_ratio = [evaluate_mae(mae, x_test[:1000].to(DEVICE), r, seed=0) for r in ratios]
for r, values in zip(ratios, mse_by_ratio):
    print(f"mask ratio {r:.2f}: masked MSE {values['masked_mse']:.4f}   mean fill {values['mean_fill_mse']:.4f}")
assert min(mse_by_ratio, key=lambda v: v["masked_mse"]) is mse_by_ratio[ratios.index(0.75)]  # best where it was trained
with torch.no_grad():  # the predictions for the *visible* patches, which the loss never scores
    _, predicted_25, mask_25 = mae(x_test[:1000].to(DEVICE), 0.25, torch.Generator().manual_seed(0))
error_25 = ((predicted_25 - patchify(x_test[:1000].to(DEVICE), 4)) ** 2).mean(-1)  # (1000, 49) per patch
visible_25, hidden_25 = ((error_25 * (mask_25 == v)).sum().item() / (mask_25 == v).sum().item() for v in (0, 1))
print(f"mask ratio 0.25: MSE of the predictions for the visible patches {visible_25:.4f}, for the hidden ones {hidden_25:.4f}")
assert visible_25 > hidden_25

# %% [markdown]
# The model was trained at 75% only, and the sweep shows it: the error on hidden patches is lowest at 75%, and at 25% it is
# *higher*, although far more of each digit is visible. The encoder never saw 36 visible tokens during training: changing the mask
# ratio changes the number of tokens, a distribution shift of its own.
#
# **Widget: reconstructions.** Rows: the test digits, what the encoder sees (hidden patches grey), the decoder's prediction for every
# patch, and the visible patches pasted over the prediction. At 75% (the training ratio) the digit's identity and strokes come back,
# blurred; at 90% (4 visible patches) the model guesses a plausible digit, sometimes the wrong one; at low ratios look at the
# prediction row: the visible patches, which the loss never scored, are predicted worse than the hidden ones (the last line
# printed above measures it at 25%). The mean-squared loss predicts the
# *average* of what could be there, hence the blur.

# %%
def draw_reconstructions(ax, mask_ratio, first_digit, mask_seed):
    digits = x_test[first_digit:first_digit + 10].to(DEVICE)
    masked, predicted, pasted = reconstruct(mae, digits, mask_ratio, torch.Generator().manual_seed(mask_seed))
    course_lib.core.plotting.image_grid(torch.cat([digits, masked, predicted, pasted]).cpu(), nrow=4, ax=ax)
    hidden = 49 - max(int(49 * (1 - mask_ratio)), 1)
    ax.set_title(f"mask ratio {mask_ratio:.2f} ({hidden} of 49 patches hidden): digits / encoder input / prediction / "
                 "visible + predicted", fontsize=9)


course_lib.core.widgets.interactive_figure(
    draw_reconstructions, figsize=(10, 4.6),
    mask_ratio=ipywidgets.FloatSlider(value=0.75, min=0.0, max=0.95, step=0.05, description="mask ratio"),
    first_digit=ipywidgets.IntSlider(value=0, min=0, max=990, step=10, description="digits from"),
    mask_seed=ipywidgets.IntSlider(value=0, min=0, max=20, description="mask seed"))

# %% [markdown]
# ### E.5 Probing the frozen features against random initialisation
#
# "The encoder is the product" is a claim about its features, and the standard test of features is a **probe**: freeze the network,
# embed labelled images, and fit the simplest classifier on top, here a linear one (logistic regression on the standardised
# [CLS] features, full batch, L-BFGS; MAE's and DINO's papers both report such linear probes, on ImageNet). The labels are used
# only by the probe, never in training. The baseline that says whether training did anything is the same architecture at its random
# initialisation (the networks C.5 and this cell draw with `seed_everything(0)`); a linear probe on the raw pixels says how hard the
# task is to begin with. Three probes, a few seconds in all:
#
# - the MAE encoder, all 49 patches visible: which digit (10 classes), 1,000 training and 500 test digits;
# - the DINO teacher on the shapes scenes: which shape (circle, square, triangle), and the object's colour (which of its red, green
#   and blue channels is largest), 600 fresh training scenes and 600 fresh test scenes.
#
# Everything here uses the shipped checkpoints and fixed data, so the numbers are the same on every profile.

# %%
def linear_probe(train_features, train_labels, test_features, test_labels, weight_decay=1e-3, iterations=100):
    """Logistic regression on frozen features (n, D) -> test accuracy. The features are standardised with the
    training set's mean and standard deviation; full-batch L-BFGS from zero weights (deterministic)."""
    mean, std = train_features.mean(0), train_features.std(0) + 1e-6
    train_features, test_features = (train_features - mean) / std, (test_features - mean) / std
    n_classes = int(train_labels.max()) + 1
    weight = torch.zeros(train_features.shape[1], n_classes, requires_grad=True)  # (D, classes)
    bias = torch.zeros(n_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(train_features @ weight + bias, train_labels) + weight_decay * (weight**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return ((test_features @ weight + bias).argmax(-1) == test_labels).float().mean().item()


@torch.no_grad()
def cls_features(vit, images, batch=500):
    """The frozen [CLS] output of a ViT (chapter 04's encode): (n, C, H, W) -> (n, D)."""
    return torch.cat([vit.encode(images[i:i + batch].to(DEVICE))[:, 0].cpu() for i in range(0, len(images), batch)])


def dominant_channel(images, masks):
    """Which of R, G, B is largest in the object's mean colour: (n, 3, H, W), (n, H, W) -> (n,) in {0, 1, 2}."""
    weights = masks[:, None].float()
    return ((images * weights).sum((2, 3)) / weights.sum((2, 3))).argmax(1)


x_train_mnist, y_train_mnist = (tensor[:1000] for tensor in load_mnist("train"))
y_test_mnist = load_mnist("test")[1][:500]
seed_everything(0)
random_mae = MAE(**mae.config).to(DEVICE).eval()
probe_scenes, probe_test = (make_shapes(600, seed=seed, **course_lib.topics.dino.shapes_settings()) for seed in (123, 456))
tasks = {  # name: (trained network, random-init network, train images, train labels, test images, test labels)
    "MAE encoder, MNIST: which digit": (mae.encoder, random_mae.encoder, x_train_mnist, y_train_mnist, x_test[:500], y_test_mnist),
    "DINO teacher, shapes: which shape": (vit, random_vit, probe_scenes["images"], probe_scenes["labels"][:, 0],
                                          probe_test["images"], probe_test["labels"][:, 0]),
    "DINO teacher, shapes: object colour": (vit, random_vit, probe_scenes["images"],
                                            dominant_channel(probe_scenes["images"], probe_scenes["masks"][:, 0]),
                                            probe_test["images"], dominant_channel(probe_test["images"], probe_test["masks"][:, 0])),
}
probe = {}
print(f"{'linear probe, test accuracy':38s} {'trained':>8s} {'random init':>12s} {'raw pixels':>11s} {'chance':>7s}")
for name, (trained, untrained, train_x, train_y, test_x, test_y) in tasks.items():
    probe[name] = [linear_probe(cls_features(network, train_x), train_y, cls_features(network, test_x), test_y)
                   for network in (trained, untrained)]
    probe[name].append(linear_probe(train_x.flatten(1), train_y, test_x.flatten(1), test_y))
    chance = torch.bincount(test_y).max().item() / len(test_y)  # always answering the most common class
    print(f"{name:38s} {probe[name][0]:8.3f} {probe[name][1]:12.3f} {probe[name][2]:11.3f} {chance:7.3f}")
difference_error = math.sqrt(2 * 0.25 / 600)  # at most, for two accuracies on 600 test scenes each
print(f"(the standard error of a difference of two accuracies on 600 test scenes is at most {difference_error:.3f})")
digit, shape, colour = probe.values()
assert digit[0] > digit[1] + 0.25 and colour[0] > colour[1] + 0.1  # trained beats random init, by a wide margin
assert abs(shape[0] - shape[1]) < 2 * difference_error              # on the shape, no clear difference

# %% [markdown]
# The MAE encoder's [CLS] separates the digits far better than the same encoder at random initialisation, although the loss never
# mentioned digits: to paint back the hidden three quarters, the encoder had to keep what tells a 3 from an 8. A linear probe on the raw
# pixels does about as well here: on MNIST pixels are already a strong baseline. MAE's paper finds, on ImageNet, its features much
# stronger after fine-tuning than under a linear probe: a linear probe is not the whole story for MAE.
#
# The tiny DINO learned something narrower than its attention maps suggest. Its [CLS] tells the object's colour far better than
# random initialisation; which shape the object is, no better: the two accuracies differ by less than two standard errors,
# and raw pixels do as well.
# Agreement across views teaches what the views reliably share; on these scenes the object's colour is shared by every crop that
# sees the object, while its outline spans only a few patches and is cut and resized by the crops. On ImageNet, where the views
# share the object's category, the paper's probes on the [CLS] features come close to supervised training (ViT-S/16: 77.0% linear,
# 74.5% k-NN, against 79.8% for the same network trained with labels; Caron et al. 2021, Table 2).

# %% [markdown]
# ---
# ## F. Exercises
#
# Each exercise cell below holds a working solution; in the student version it is replaced by a stub. Write your own,
# run the check cell, and reveal the reference only when stuck.
#
# **Exercise 1: the teacher's target.** Write `my_teacher_probabilities(teacher_logits, center, tau_t)`: centre, sharpen, no gradient.
# Shapes $(B, K)$, $(K,)$ $\to (B, K)$.

# %% tags=["exercise"]
def my_teacher_probabilities(teacher_logits, center, tau_t):
    """P_t = softmax((g_t - c) / tau_t), detached: (B, K), (K,) -> (B, K)."""
    ### BEGIN SOLUTION
    return torch.softmax((teacher_logits.detach() - center) / tau_t, dim=-1)
    ### END SOLUTION


# %%
generator = seed_everything(8)
teacher_inputs = [(torch.randn(5, 16, generator=generator), torch.randn(16, generator=generator), 0.04),
                  (torch.randn(3, 8, generator=generator), torch.zeros(8), 0.1),
                  (torch.full((2, 6), 0.3), torch.full((6,), 0.3), 0.04)]  # centred to 0: uniform
course_lib.core.check.check_function(my_teacher_probabilities, teacher_probabilities, teacher_inputs)
logits_with_grad = torch.randn(2, 4, requires_grad=True)
assert not my_teacher_probabilities(logits_with_grad, torch.zeros(4), 0.04).requires_grad, \
    "the target carries a gradient: detach the teacher's logits (stop-gradient)"

# %%
course_lib.core.check.show_solution(course_lib.topics.dino.teacher_probabilities)

# %% [markdown]
# **Exercise 2: the multi-crop loss.** Write `my_dino_loss(student_logits, teacher_logits, center, tau_s, tau_t)`: lists of $(B, K)$ tensors
# (student: global crops first), the mean over all pairs (teacher view $i$, student view $v \ne i$) of the batch-mean cross entropy.

# %% tags=["exercise"]
def my_dino_loss(student_logits, teacher_logits, center, tau_s, tau_t):
    """Mean of H(P_t(x_i), P_s(x'_v)) over pairs v != i."""
    ### BEGIN SOLUTION
    terms = []
    for i, t in enumerate(teacher_logits):
        p_t = my_teacher_probabilities(t, center, tau_t)
        for v, s in enumerate(student_logits):
            if v != i:
                terms.append(-(p_t * F.log_softmax(s / tau_s, dim=-1)).sum(-1).mean())
    return torch.stack(terms).mean()
    ### END SOLUTION


# %%
loss_inputs = []  # (student views stacked (V, B, K), teacher views (2, B, K), centre (K,), tau_s, tau_t)
for n_views in (4, 2, 6):
    loss_inputs.append((torch.randn(n_views, 6, 12, generator=generator), torch.randn(2, 6, 12, generator=generator),
                        0.2 * torch.randn(12, generator=generator), 0.1, 0.04))
course_lib.core.check.check_function(lambda S, T, c, ts, tt: my_dino_loss(list(S), list(T), c, ts, tt),
                                lambda S, T, c, ts, tt: dino_loss(list(S), list(T), c, ts, tt),
                                loss_inputs, name="my_dino_loss")

# %%
course_lib.core.check.show_solution(course_lib.topics.dino.dino_loss)

# %% [markdown]
# **Exercise 3: the 60%-mass mask.** Write `my_mass_mask(attention, mass)`: for each row of $(\ldots, N)$ weights, True on the smallest set of
# patches holding at least `mass` of the row's total (take the largest first).

# %% tags=["exercise"]
def my_mass_mask(attention, mass=0.6):
    """(..., N) -> bool (..., N)."""
    ### BEGIN SOLUTION
    weights = attention / attention.sum(-1, keepdim=True)
    values, order = weights.sort(dim=-1, descending=True)
    keep = (values.cumsum(-1) - values) < mass - 1e-6  # the mass above each patch is still short of the target
    return torch.zeros_like(keep).scatter(-1, order, keep)
    ### END SOLUTION


# %%
mass_inputs = [(torch.rand(4, 64, generator=generator), 0.6), (torch.rand(2, 3, 16, generator=generator), 0.3),
               (torch.tensor([[0.05, 0.5, 0.2, 0.25]]), 0.6), (torch.softmax(5 * torch.randn(3, 64, generator=generator), -1), 0.9)]
course_lib.core.check.check_function(my_mass_mask, mass_mask, mass_inputs)

# %%
course_lib.core.check.show_solution(course_lib.topics.dino.mass_mask)

# %% [markdown]
# **Exercise 4: random masking.** Write `my_random_masking(batch, n_patches, mask_ratio, generator)`: draw the noise with
# `torch.rand(batch, n_patches, generator=generator)`, keep the $\max(\lfloor N(1 - r) \rfloor, 1)$ patches with the smallest noise, and return
# `ids_keep` $(B, N_{\text{keep}})$ in shuffled order, `ids_restore` $(B, N)$, and the mask $(B, N)$ (1 = hidden, 0 = visible, original order).

# %% tags=["exercise"]
def my_random_masking(batch, n_patches, mask_ratio, generator):
    """-> ids_keep (B, N_keep), ids_restore (B, N), mask (B, N) float."""
    ### BEGIN SOLUTION
    n_keep = max(int(n_patches * (1 - mask_ratio)), 1)
    noise = torch.rand(batch, n_patches, generator=generator)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    mask = torch.ones(batch, n_patches)
    mask[:, :n_keep] = 0
    return ids_shuffle[:, :n_keep], ids_restore, torch.gather(mask, 1, ids_restore)
    ### END SOLUTION


# %%
masking_inputs = [(3, 49, 0.75, 0), (2, 16, 0.5, 1), (4, 49, 0.9, 2), (1, 64, 0.0, 3)]  # (B, N, ratio, seed)
for part, name in enumerate(["ids_keep", "ids_restore", "mask"]):
    course_lib.core.check.check_function(
        lambda b, n, r, seed, part=part: my_random_masking(b, n, r, torch.Generator().manual_seed(seed))[part],
        lambda b, n, r, seed, part=part: random_masking(b, n, r, torch.Generator().manual_seed(seed))[part],
        masking_inputs, name=f"my_random_masking(...) {name}")

# %%
course_lib.core.check.show_solution(course_lib.topics.mae.random_masking)

# %% [markdown]
# **Exercise 5: the MAE loss.** Write `my_mae_loss(predicted, patches, mask)`: the per-pixel squared error of each patch, averaged over the
# patch's pixels, then over the hidden patches (mask 1) of the whole batch; raw-pixel target.

# %% tags=["exercise"]
def my_mae_loss(predicted, patches, mask):
    """(B, N, P*P*C), (B, N, P*P*C), (B, N) -> scalar."""
    ### BEGIN SOLUTION
    per_patch = ((predicted - patches) ** 2).mean(dim=-1)  # (B, N)
    return (per_patch * mask).sum() / mask.sum()
    ### END SOLUTION


# %%
mae_inputs = []
for shape in [(4, 49, 16), (2, 16, 48)]:
    mae_inputs.append((torch.randn(*shape, generator=generator), torch.rand(*shape, generator=generator),
                       (torch.rand(shape[:2], generator=generator) < 0.75).float()))
course_lib.core.check.check_function(my_mae_loss, mae_loss, mae_inputs)

# %%
course_lib.core.check.show_solution(course_lib.topics.mae.mae_loss)

# %% [markdown]
# **Exercise 6: a hotter teacher.** *Predict, then run.* The collapse lab (B) switched off one safety device at a time. Now
# switch off centring ($c = 0$, as in "sharpening only") and make the teacher **hotter** than the student, $\tau_t = 0.2 > \tau_s = 0.1$,
# so that the target is *softer* than what the student's softmax would give on the same outputs. Before running anything,
# set `MY_PREDICTION` to the outcome you expect: `"uniform"` (every target flat, $h(P_t) \approx \ln K$), `"one-hot"` (every image the
# same peaked target, batch-mean entropy near 0) or `"healthy"`, and write down one sentence why (A.1 and A.4 hold the pieces).
# The cell after it trains B's toy once (200 steps, a few seconds) and prints the three diagnostics.

# %% tags=["exercise"]
MY_PREDICTION = None  # your prediction: "uniform", "one-hot" or "healthy"
### BEGIN SOLUTION
MY_PREDICTION = "uniform"
### END SOLUTION

# %%
assert MY_PREDICTION in ("uniform", "one-hot", "healthy"), 'first write your prediction: "uniform", "one-hot" or "healthy"'
hot_log = collapse_run(use_centering=False, tau_t=0.2)
hot = {key: np.mean([d[key] for d in hot_log[-20:]]) for key in ("teacher_entropy", "batch_mean_entropy", "kl")}
outcome = ("uniform" if hot["teacher_entropy"] > 0.9 * ln_K else
           "one-hot" if hot["batch_mean_entropy"] < 0.15 * ln_K else "healthy")  # B's thresholds
print(f"no centring, tau_t = 0.2, last 20 steps: h(P_t) {hot['teacher_entropy']:.3f}, h(mean P_t) "
      f"{hot['batch_mean_entropy']:.3f}, KL {hot['kl']:.3f} (ln K = {ln_K:.3f}) -> {outcome}")
print(f"you predicted {MY_PREDICTION!r}: " + ("right." if MY_PREDICTION == outcome else "not this time; read the answer below."))

# %%
course_lib.core.check.show_solution("""
# Uniform. With tau_t > tau_s the target is always FLATTER than the student's own distribution (A.1: entropy grows with
# the temperature), so every step pulls the student towards higher entropy, and the teacher, an average of students,
# follows. Nothing pushes back: that was sharpening's job, and centring (A.4) pushes the same way, towards uniform.
# h(P_t) climbs to about ln K, the KL falls to 0: the student matches a target that says nothing about the image.
# Without centring one might expect "one-hot", but one-hot collapse needs sharp targets (tau_t < tau_s); it is the
# temperature ratio that decides which way an unbalanced DINO collapses.
""")

# %% [markdown]
# ---
# ## Summary
#
# | key equation | derived in | checked by |
# |---|---|---|
# | $\frac{dh}{d\tau} = \operatorname{Var}_p(g) / \tau^3 \ge 0$: a smaller temperature sharpens | A.1 | autograd at three temperatures in A.1 |
# | $H(P_t, P_s) = h(P_t) + \operatorname{KL}(P_t \,\Vert\, P_s)$ | A.2 | `torch.distributions.kl_divergence` in A.2 |
# | $\partial H / \partial s_j = (P_s^{(j)} - P_t^{(j)}) / \tau_s$, and no gradient into the teacher | A.3 | autograd and the empty teacher gradient in A.3 |
# | centring: $c_k - \bar g = m^k (c_0 - \bar g)$, so a collapsed teacher's targets go uniform | A.4 | the closed form after 60 updates in A.4; the collapse lab in B; exercise 6 |
# | $N_{\text{keep}} = \lfloor N (1 - r) \rfloor$, and $\mathcal{L}_{\text{MAE}}$ = mean squared error per pixel over the hidden patches only | E.1 and E.3 | the permutation checks in E.1, the zero gradient on visible patches in E.3; exercises 4 and 5 |
#
# **Three things to remember.**
#
# 1. DINO's loss is a cross entropy, $h(P_t) + \operatorname{KL}$. The KL goes to 0 in *both* collapses; the target entropy $h(P_t)$ and
#    the entropy of the batch-mean target tell them apart.
# 2. Centring pushes the targets towards uniform, sharpening ($\tau_t < \tau_s$) towards one-hot; with the EMA teacher and the
#    stop-gradient, only the two together keep the targets both peaked and different from image to image.
# 3. MAE hides 75% of the patches, runs its encoder on the visible quarter only and scores the hidden patches only: cheap,
#    and no credit for copying what is visible.
#
# ## G. Discussion questions
#
# 1. In B, why does the KL go to zero in *both* collapses, while the loss $H(P_t, P_s)$ ends high in one and near zero in the other?
#    Which numbers would you watch to detect a collapse in a run you cannot look at, and what values would alarm you?
# 2. The teacher sees only global crops and the student sees all crops. What would go wrong if the teacher saw the local crops too,
#    and what if both saw the same single view (no augmentation)?
# 3. The centre $c$ is a running mean over batches, not the mean of the current batch. What would change if you subtracted the current
#    batch's mean instead? (Hint: what does that make the loss depend on, and how do DINOv2 and SwAV handle the same problem?)
# 4. On the shapes toy the calibrated Normalized Cut on random keys was almost as good as on trained keys, and better than the best
#    attention head. Design a data set on which it would not be: what property of the object must the features capture that a patch
#    embedding of raw pixels does not?
# 5. MAE's loss is computed on hidden patches only, and its encoder never sees a mask token. What would each of those two choices cost
#    if reversed, in compute and in what the encoder learns? Why might a 75% ratio suit images but not text (BERT masks 15%)?
