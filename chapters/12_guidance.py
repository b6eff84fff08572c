# ---
# jupyter:
#   course:
#     time_on_cpu:
#       ci:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-05'
#         seconds: 30
#       cpu:
#         machine: 2 CPU cores, no GPU, shared with a CI run for most of it
#         measured: '2026-11-23'
#         seconds: 982
#         source: the chapter's table before course_lib.tools.timing, commit e920b18 (nbval/nbconvert)
#       gpu:
#         note: no GPU where the course was timed; the shipped run took 884 s on 1 busy CPU thread
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
# # 12 · Guidance: classifier guidance, classifier-free guidance, inpainting
#
# Chapter 11's diffusion model draws digits, but you cannot say *which* digit. This chapter steers it. One line of
# Bayes' rule splits the conditional score into the unconditional score plus the gradient of a classifier; scaling that
# gradient is **classifier guidance** (Dhariwal & Nichol 2021). Training one network with and without the label, and
# reading the classifier off the difference of its two predictions, is **classifier-free guidance** (CFG, Ho & Salimans
# 2022), the guidance of every large text-to-image model. Last, the same trick of "editing the sampler, not the network"
# fills in a missing rectangle of a digit (**inpainting**).
#
# **Goals.** After this chapter you can
# - derive $\nabla_x \log p(x \mid c) = \nabla_x \log p(x) + \nabla_x \log p(c \mid x)$ and check it where every term is exact;
# - write classifier guidance in $\epsilon$ coordinates and say what distribution a guidance scale $\gamma \ne 1$ aims at;
# - train a noise-conditional classifier and guide an unconditional MNIST model with it;
# - train one U-Net with label dropout, write CFG in both conventions ($w$ and $s = 1 + w$) and convert between them;
# - measure the trade-off: label accuracy and FID against the guidance scale;
# - inpaint with an unconditional model by replacing the known pixels at every step, and name what that leaves out.
#
# **Prerequisites.** Chapter 10 (scores, the 2-D mixture), chapter 11 (DDPM/DDIM, $\epsilon \leftrightarrow$ score, the U-Net with
# its null label). `course_lib.topics.diffusion` and `course_lib.topics.unet` are used as they are: every guided model below is a
# function $(x_t, t) \mapsto \epsilon$ that chapter 11's samplers accept unchanged.
#
# **Notation.** As in chapter 00's table, the network's noise prediction is $\epsilon_\theta(x_t, t, c)$: $c$ is the condition,
# here a class label (a digit 0-9), and $c = \varnothing$ (the null label) means unconditional. The guidance scale is
# $s = 1 + w$ (both conventions in D.1).
#
# **Core path.** A, B, D, E, F and the summary, about 75 min: Bayes on scores, classifier guidance on the exact 2-D
# mixture, classifier-free guidance, the guidance-scale widget and the measured trade-off. Deep dives a first reading can
# skip (run their cells all the same: later sections use what they load): C (a noisy classifier guiding the MNIST model,
# 15 min) and G (inpainting, 15 min).
#
# **Time.** Two sessions of about 75 minutes; the plan, what to pre-run and the answers to the discussion questions are
# in [facilitator/12_guidance.md](facilitator/12_guidance.md). The exercises (H) take about 50 minutes at home.
#
# **What runs, and how long** (the whole chapter, top to bottom, on a fresh kernel; `ci` with 1 torch thread as the
# test suite runs it, `cpu` with torch's default threads; `make time PROFILE=ci` or `PROFILE=cpu` measures it and
# writes the time here, in the notebook's metadata and in the README):
#
# | profile | what trains and samples | measured |
# |---|---|---|
# | `ci` | noisy classifier 150 steps; CFG U-Net 20 steps; shipped `cfg_mnist`: widget grid (10 digits x 4 scales, 15 DDIM steps), sweep n = 50, 10 steps; inpainting 20 digits | 30 s, measured 2026-12-05 on 2 CPU cores, no GPU, otherwise idle |
# | `cpu` | noisy classifier 1,500 steps; CFG U-Net 500 steps (batch 128); sweep n = 300 x 6 scales, 20 steps | 16 min 22 s, measured 2026-11-23 on 2 CPU cores, no GPU, shared with a CI run for most of it |
# | `gpu` | noisy classifier 3,000 steps; the CFG U-Net recipe that ships (1,400 steps, batch 64); sweep n = 1,000, 25 steps | not measured: no GPU where the course was timed; the shipped run took 884 s on 1 busy CPU thread |
#
# Set the profile before starting JupyterLab: `COURSE_PROFILE=ci`, `cpu` or `gpu`.

# %%
import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import torch

import course_lib
import course_lib.core.check
import course_lib.core.widgets
import course_lib.topics.guidance
import course_lib.zoo
from course_lib import device, per_profile, profile, seed_everything
from course_lib.core.checkpointing import read_manifest
from course_lib.core.layers import to_model_range, to_pixel_range
from course_lib.core.plotting import image_grid
from course_lib.core.train import fit, minibatches, warmup_cosine
from course_lib.data import load_mnist
from course_lib.eval.fid import classifier_outputs, shipped_classifier
from course_lib.topics.diffusion import NoiseSchedule, ddim_sample
from course_lib.topics.guidance import (ClassifierFreeGuidance, ClassifierGuidance, MixtureEps, NoisyDigitClassifier,
                                        NullLabel, class_log_prob, class_mixture, drop_labels, evaluate_cfg, guided_eps,
                                        guided_eps_ho_salimans, inpaint, label_log_prob, noised_mixture,
                                        noisy_classifier_loss, rectangle_mask, sample_cfg)
from course_lib.topics.score import toy_mixture
from course_lib.zoo import load_ddpm_mnist

DEVICE = device()
generator = seed_everything(0)
schedule = NoiseSchedule.linear(1000)
print(f"profile = {profile()}, device = {DEVICE}, torch threads = {torch.get_num_threads()}")

# %% [markdown]
# ---
# ## See it work first
#
# The shipped class-conditional U-Net `cfg_mnist`, asked for two of each digit 0-9 (one column per digit) with
# classifier-free guidance at scale $s = 3$, 15 DDIM steps, a few seconds on a CPU. A separate clean-digit classifier
# (the one that scores every sample of this chapter) reads each sample, and the manifest gives the same model's
# numbers on 500 samples. By the end of this chapter you will have derived and trained this: the guided noise
# prediction, the label dropout that makes one network both conditional and unconditional, and the trade-off the
# scale $s$ controls.

# %%
cfg_model = course_lib.zoo.load_shipped("cfg_mnist", DEVICE)  # the class-conditional U-Net of section D
judge = shipped_classifier(DEVICE)  # a separate clean-digit classifier: it reads the digit each sample shows
first_labels = torch.arange(20) % 10  # two of each digit, 0-9 in each row
first_look = sample_cfg(cfg_model, first_labels, 3.0, schedule, steps=15, generator=torch.Generator().manual_seed(0))
read_labels = classifier_outputs(first_look, judge)[1].argmax(1)  # (20,)
fig, ax = plt.subplots(figsize=(9, 2.4))
image_grid(first_look, nrow=2, ax=ax)
ax.set_title("shipped cfg_mnist, guidance scale s = 3, DDIM-15: asked for 0-9 (columns), twice")
plt.show()
shipped_s3 = read_manifest()["cfg_mnist"]["metrics"]["s3"]
print(f"the classifier reads the asked-for digit in {int((read_labels == first_labels).sum())} of these 20 samples; "
      f"on 500 samples at s = 3 (DDIM-25, the manifest): label accuracy {shipped_s3['label_accuracy']:.3f}, "
      f"FID {shipped_s3['fid']:.1f} (real-vs-real floor {shipped_s3['fid_floor']:.1f})")

# %% [markdown]
# ---
# ## A. Bayes' rule on scores
#
# For a class label $c$ (the condition of $\epsilon_\theta(x_t, t, c)$) and data $x$, Bayes' rule reads
#
# $$
# p(x \mid c) = \frac{p(c \mid x)\, p(x)}{p(c)} .
# $$
#
# Take the logarithm, $\log p(x \mid c) = \log p(c \mid x) + \log p(x) - \log p(c)$, and the gradient in $x$. The evidence
# $p(c) = \int p(c \mid x) p(x)\, dx$ does not depend on $x$, so its gradient is zero:
#
# $$
# \nabla_x \log p(x \mid c) = \nabla_x \log p(x) + \nabla_x \log p(c \mid x) .
# $$
#
# The same holds at every noise level $t$ for the noisy marginals $p_t(x_t) = \int q(x_t \mid x_0) p(x_0)\, dx_0$ and
# $p_t(x_t \mid c) = \int q(x_t \mid x_0) p(x_0 \mid c)\, dx_0$, with the **noisy** classifier $p_t(c \mid x_t) = p_t(x_t \mid c) p(c) / p_t(x_t)$:
# the probability of label $c$ given a *noisy* $x_t$. That is the classifier guidance needs; a classifier of clean images
# is a different function.
#
# On chapter 10's 2-D mixture every term is exact. Label the components: class 0 for the four big modes, class 1 for the
# four small ones. The noised mixture $p_t$ is again a mixture (means times $\sqrt{\bar\alpha_t}$, variances
# $\bar\alpha_t \sigma^2 + 1 - \bar\alpha_t$), $p_t(x \mid c)$ is the mixture of the class's components with renormalised weights, and
# $p_t(c \mid x)$ is the sum of their responsibilities. We check the identity to $10^{-8}$, with the classifier's gradient
# by autograd.

# %%
mixture = toy_mixture()  # 8 modes on a circle of radius 4, std 0.5, weights 3:1 alternating
component_classes = torch.tensor([0, 1] * 4)  # big modes -> class 0, small modes -> class 1
x_check = torch.randn(400, 2, dtype=torch.float64, generator=generator) * 3
for t in [0, 50, 200, 600]:
    p_t = noised_mixture(mixture, schedule, t)
    for label in [0, 1]:
        x = x_check.clone().requires_grad_(True)
        classifier_gradient = torch.autograd.grad(class_log_prob(p_t, component_classes, x, label).sum(), x)[0]  # (400, 2)
        right = p_t.score(x_check) + classifier_gradient
        left = class_mixture(p_t, component_classes, label).score(x_check)  # the conditional score, in closed form
        gap = (left - right).abs().max().item()
        assert gap < 1e-8, gap
    print(f"t = {t:3d}: max |grad log p_t(x|c) - grad log p_t(x) - grad log p_t(c|x)| = {gap:.1e}")

# %% [markdown]
# ---
# ## B. Classifier guidance, on the 2-D mixture
#
# A diffusion model predicts $\epsilon$, and chapter 11 showed $\nabla_x \log p_t(x_t) = -\epsilon_\theta(x_t, t) / \sqrt{1 - \bar\alpha_t}$
# (an unconditional model; $\epsilon_\theta(x_t, t)$ is short for $\epsilon_\theta(x_t, t, \varnothing)$).
# Multiply Bayes' rule by $-\sqrt{1 - \bar\alpha_t}$ and put a **guidance scale** $\gamma$ on the classifier's term:
#
# $$
# \epsilon_\gamma(x_t, t) = \epsilon_\theta(x_t, t) - \gamma \sqrt{1 - \bar\alpha_t}\, \nabla_{x_t} \log p_t(c \mid x_t) .
# $$
#
# $\gamma = 1$ is the conditional model exactly; $\gamma = 0$ ignores the label. For $\gamma \ne 1$ the guided score is
# $\nabla \log p_t(x) + \gamma \nabla \log p_t(c \mid x) = \nabla \log \big(p_t(x)\, p_t(c \mid x)^\gamma\big)$: at every noise level the sampler
# follows the score of $p_t(x) p_t(c \mid x)^\gamma$ (up to normalisation), which for $\gamma > 1$ favours points the classifier
# is *sure* about. The picture: one unconditional network, one classifier of *noisy* inputs, and the gradient of the
# classifier added to the network's $\epsilon$ at every step.

# %%
course_lib.topics.guidance.classifier_guidance_schematic()
plt.show()

# %% [markdown]
# **The algorithm, step by step.** At every step of the sampler, for the batch $x_t$ (all at one step $t$) and each
# example's target label $c$:
#
# 1. `eps = eps_model(x_t, t)`: the unconditional noise prediction, one forward pass.
# 2. Chapter 11's samplers run under `torch.no_grad()`: no graph is recorded, which saves memory and time, but also
#    means no gradient can be taken. The classifier's gradient needs one, so switch autograd back on for this part
#    only: `with torch.enable_grad():`.
# 3. Inside it, make $x_t$ a fresh leaf, `x = x_t.detach().requires_grad_(True)`: the gradient is taken with respect
#    to this step's input and goes no further back.
# 4. `log_p = log_prob(x, t)`, shape (N,): each example's $\log p_\phi(c \mid x_t, t)$ for its own label (for a
#    network, `log_softmax` of its logits, picked at the label).
# 5. `grad = torch.autograd.grad(log_p.sum(), x)[0]`, the shape of $x_t$. Summing is safe: example $i$'s
#    log-probability depends on $x_i$ only, so row $i$ of the gradient of the sum is example $i$'s own gradient.
#    `autograd.grad` returns a plain tensor (no graph), so nothing of this leaks into the sampler.
# 6. `eps - gamma * sqrt(1 - alpha_bar_t) * grad`, with $\sqrt{1 - \bar\alpha_t}$ read at the batch's step $t$. The
#    sampler's DDIM step uses it as it would any $\epsilon$.
#
# Exercise H.6 asks you to write these six steps; `course_lib.topics.guidance.ClassifierGuidance` does the same, as an
# $\epsilon$-model that chapter 11's `ddim_sample` runs unchanged. First a check: with the exact mixture $\epsilon$ and the
# exact classifier, $\gamma = 1$ reproduces the $\epsilon$ of the class mixture.

# %%
label_2d = 1  # guide towards the small modes
exact_eps = MixtureEps(mixture, schedule)  # eps(x_t, t) = -sqrt(1 - alpha_bar_t) grad log p_t(x_t)


def exact_class_log_prob(x, t):
    """log p_t(y = label_2d | x_t): the Bayes classifier of the noised mixture, (N, 2) -> (N,)."""
    return class_log_prob(noised_mixture(mixture, schedule, int(t[0])), component_classes, x, label_2d)


conditional_eps = MixtureEps(class_mixture(mixture, component_classes, label_2d), schedule)
x_demo = torch.randn(300, 2, dtype=torch.float64, generator=generator) * 2
for t in [20, 300, 900]:
    t_batch = torch.full((300,), t)
    guided = ClassifierGuidance(exact_eps, exact_class_log_prob, schedule, scale=1.0)(x_demo, t_batch)
    assert torch.allclose(guided, conditional_eps(x_demo, t_batch), atol=1e-8)
print("classifier guidance with gamma = 1 and the exact classifier == the exact conditional eps, to 1e-8")

# %% [markdown]
# The guided score fields at $t = 200$ (where $\bar\alpha_t = 0.659$: the modes have moved in to radius
# $4 \sqrt{0.659} = 3.25$ and widened to std $\sqrt{0.659 \cdot 0.5^2 + 0.341} = 0.71$; the cell prints both), for four scales. At $\gamma = 0$ every mode attracts; at $\gamma = 1$ the big modes (class 0) stop attracting; for
# larger $\gamma$ the arrows point *away* from class 0, and grow.

# %%
t_field = 200
p_field = noised_mixture(mixture, schedule, t_field)
grid_1d = torch.linspace(-5, 5, 17, dtype=torch.float64)
grid = torch.stack(torch.meshgrid(grid_1d, grid_1d, indexing="xy"), -1).reshape(-1, 2)  # (289, 2)
fine_1d = torch.linspace(-5, 5, 120, dtype=torch.float64)
fine = torch.stack(torch.meshgrid(fine_1d, fine_1d, indexing="xy"), -1).reshape(-1, 2)
density = p_field.log_prob(fine).exp().reshape(120, 120)
sigma_t = float(schedule.sqrt_one_minus_alpha_bars[t_field])
print(f"t = {t_field}: alpha_bar = {float(schedule.alpha_bars[t_field]):.3f}, mode radius {p_field.means.norm(dim=1)[0]:.2f}, "
      f"mode std {float(p_field.stds[0]):.2f}")
assert abs(p_field.means.norm(dim=1)[0] - 3.25) < 0.01 and abs(float(p_field.stds[0]) - 0.71) < 0.01
fig, axes = plt.subplots(1, 4, figsize=(15, 3.9))
for ax, gamma in zip(axes, [0.0, 1.0, 3.0, 10.0]):
    eps = ClassifierGuidance(exact_eps, exact_class_log_prob, schedule, gamma)(grid, torch.full((len(grid),), t_field))
    score = -eps / sigma_t  # (289, 2): the guided score
    ax.contour(fine_1d, fine_1d, density, levels=6, colors="0.8")
    ax.quiver(grid[:, 0], grid[:, 1], score[:, 0], score[:, 1], color="C3", angles="xy")
    ax.plot(*(p_field.means[1::2].T), "o", color="C0", ms=5, label="class 1 means")
    ax.set(title=f"gamma = {gamma:g}", aspect="equal", xlim=(-5, 5), ylim=(-5, 5))
axes[0].legend(fontsize=7, loc="lower left")
fig.suptitle(f"guided score field at t = {t_field}, towards class {label_2d} (the small modes)")
plt.show()

# %% [markdown]
# Samples: DDIM ($\eta = 0$, 50 steps) from the same 500 starting points, with the exact $\epsilon$ and the exact noisy
# classifier. We measure the fraction that lands on a class-1 mode and the spread around the nearest mode, split in two:
# **radial** (along the line from the centre through the mode) and **tangential** (along the circle). The data's std is
# 0.5 in both directions; the cell prints both parts for 5,000 points of the data too.

# %%
def radial_tangential_spread(x0):
    """rms offset from the nearest mode, (radial, tangential): along the mode's direction from the centre, and across it."""
    nearest_mean = mixture.means[torch.cdist(x0, mixture.means).argmin(1)]  # (n, 2)
    offset = x0 - nearest_mean
    radial_dir = nearest_mean / nearest_mean.norm(dim=1, keepdim=True)  # (n, 2) unit vectors
    tangential_dir = torch.stack([-radial_dir[:, 1], radial_dir[:, 0]], 1)
    return ((offset * radial_dir).sum(1).pow(2).mean().sqrt().item(),
            (offset * tangential_dir).sum(1).pow(2).mean().sqrt().item())


data_radial, data_tangential = radial_tangential_spread(mixture.sample(5000, generator=torch.Generator().manual_seed(0)).double())
print(f"the data: radial spread {data_radial:.3f}, tangential spread {data_tangential:.3f}")
n_2d = 500
x_T_2d = torch.randn(n_2d, 2, dtype=torch.float64, generator=generator)
guided_samples, in_class, spread, radius, radial, tangential = {}, {}, {}, {}, {}, {}
for gamma in [0.0, 1.0, 3.0, 10.0]:
    model_2d = ClassifierGuidance(exact_eps, exact_class_log_prob, schedule, gamma)
    x0 = ddim_sample(model_2d, (n_2d, 2), schedule, steps=50, x_T=x_T_2d, clip_x0=False, show_progress=False)
    nearest = torch.cdist(x0, mixture.means).argmin(1)  # (n,)
    guided_samples[gamma] = x0
    in_class[gamma] = (component_classes[nearest] == label_2d).double().mean().item()
    spread[gamma] = (x0 - mixture.means[nearest]).pow(2).sum(1).div(2).mean().sqrt().item()
    radius[gamma] = x0.norm(dim=1).mean().item()
    radial[gamma], tangential[gamma] = radial_tangential_spread(x0)
    print(f"gamma = {gamma:4.1f}: fraction in class {label_2d} = {in_class[gamma]:.3f}, spread around the nearest mode: "
          f"radial {radial[gamma]:.3f}, tangential {tangential[gamma]:.3f} (both {spread[gamma]:.3f}); "
          f"mean distance from the centre {radius[gamma]:.2f} (the modes: 4)")
assert abs(in_class[0.0] - 0.25) < 0.08 and in_class[1.0] > 0.97
assert abs(radial[1.0] - data_radial) < 0.05 and abs(tangential[1.0] - data_tangential) < 0.05  # gamma = 1: the data's spread
assert tangential[3.0] < 0.2 * tangential[1.0] and radial[3.0] > 0.9 * data_radial  # gamma = 3: squeezed along the circle only
assert radius[10.0] > radius[1.0] + 0.5 and radial[10.0] > 1.5 * data_radial  # strong guidance: outwards, off the data

# why along the circle only: the direction of the classifier's gradient, on points drawn from p_t at t = 200
p_200 = noised_mixture(mixture, schedule, 200)
x_probe = p_200.sample(2000, generator=torch.Generator().manual_seed(1)).double().requires_grad_(True)
probe_grad = torch.autograd.grad(class_log_prob(p_200, component_classes, x_probe, label_2d).sum(), x_probe)[0]
radial_share = ((probe_grad * x_probe.detach() / x_probe.detach().norm(dim=1, keepdim=True)).sum(1).pow(2).sum()
                / probe_grad.pow(2).sum()).item()
print(f"t = 200: the radial part of grad log p_t(c | x) carries {radial_share:.0%} of its squared length "
      f"(the rest points along the circle)")
assert radial_share < 0.2

# and not a discretisation error: gamma = 10 with 200 steps instead of 50
x0_fine = ddim_sample(ClassifierGuidance(exact_eps, exact_class_log_prob, schedule, 10.0), (n_2d, 2), schedule, steps=200,
                      x_T=x_T_2d, clip_x0=False, show_progress=False)
spread_fine = (x0_fine - mixture.means[torch.cdist(x0_fine, mixture.means).argmin(1)]).pow(2).sum(1).div(2).mean().sqrt().item()
print(f"gamma = 10, spread around the nearest mode: {spread[10.0]:.3f} with 50 steps, {spread_fine:.3f} with 200; "
      f"mean distance from the centre {radius[10.0]:.2f} and {x0_fine.norm(dim=1).mean():.2f}")
assert abs(spread_fine - spread[10.0]) < 0.1

fig, axes = plt.subplots(1, 4, figsize=(15, 3.9))
for ax, (gamma, x0) in zip(axes, guided_samples.items()):
    ax.scatter(*x0.T, s=3, alpha=0.5)
    ax.plot(*(mixture.means.T), "k+", ms=8)
    ax.set(title=f"gamma = {gamma:g}: {in_class[gamma]:.0%} in class 1\nradial {radial[gamma]:.2f}, "
                 f"tangential {tangential[gamma]:.2f}", aspect="equal", xlim=(-6, 6), ylim=(-6, 6))
plt.show()

# %% [markdown]
# $\gamma = 0$ gives the prior's 25% of small-mode points; $\gamma = 1$ puts them all on class 1, with the data's spread
# (about 0.5 both ways, printed above). $\gamma = 3$ does **not** pull the samples tighter in every direction: each mode
# turns into a short **radial segment**. The spread along the circle collapses (tangential about 0.07 against the data's
# 0.5), while the spread along the radius stays at the data's, even a little wider (about 0.54), and the segments sit
# slightly outside the circle (mean radius about 4.2). The reason is the classifier: which mode a point belongs to is
# decided mostly by its *angle*, so $\nabla \log p_t(c \mid x)$ points almost along the circle (its radial part carries
# about a tenth of its squared length, printed above). Scaling it up squeezes the angle, towards the middle of each
# class-1 mode, and leaves the radius to the unconditional score. Fidelity is bought with diversity, but only in the
# direction the classifier can see.
#
# At $\gamma = 10$ something else happens: the samples are pushed **outwards, off the data**, to a mean radius near 5
# instead of 4, and the segments stretch (radial spread about 1, twice the data's). The classifier's gradient keeps
# growing away from the class-0 modes, and nothing in $p_t(x)\, p_t(c \mid x)^{10}$ stops it: far out on the circle's
# outside the classifier is even surer. It is the 2-D picture of the over-saturated, over-sharpened images of very large
# guidance scales. The 50- and 200-step runs agree (the cell prints both spreads), so it is not a discretisation error.
#
# > **Common confusion: "a guidance scale $\gamma$ samples $p(x \mid c)^\gamma$" or "$p(x)\,p(c \mid x)^\gamma$".** Guidance follows the score of
# > $p_t(x)\, p_t(c \mid x)^\gamma$ *at every noise level separately*. Those tilted noisy densities are in general **not** the
# > noised versions of one tilted clean density, so for $\gamma \ne 1$ the sampler draws from no distribution with a simple
# > name; it is a heuristic that sharpens. Only $\gamma = 1$ (and $\gamma = 0$) target an exact distribution. And the classifier
# > must be **noise-conditional**, $p_t(c \mid x_t)$: the gradient of a classifier trained on clean digits, evaluated on
# > noisy $x_t$, is close to meaningless for large $t$.
#
# ---
# ## C. Classifier guidance on MNIST (optional deep dive)
#
# We train a small noise-conditional classifier $p_\phi(c \mid x_t, t)$: two convolutions whose channels are shifted by an
# embedding of $t$ (as the U-Net's blocks are), trained by cross entropy on $x_t \sim q(x_t \mid x_0)$ with $t$ uniform on
# $1..T$, the same draw as `ddpm_loss`. Then we guide chapter 11's **unconditional** shipped DDPM with it. Its accuracy
# falls with $t$, as it must: at $t = 750$ little of the digit is left.

# %%
noisy_cfg = per_profile(ci=dict(steps=150, batch_size=64, n_guided=20, ddim_steps=20, gammas=(0.0, 5.0)),
                        cpu=dict(steps=1_500, batch_size=128, n_guided=200, ddim_steps=25, gammas=(0.0, 1.0, 3.0, 10.0)),
                        gpu=dict(steps=3_000, batch_size=128, n_guided=500, ddim_steps=50, gammas=(0.0, 1.0, 3.0, 10.0)))
x_train, y_train = load_mnist("train")
x_test, y_test = load_mnist("test")
generator = seed_everything(1)
noisy_classifier = NoisyDigitClassifier().to(DEVICE)
optimizer = torch.optim.Adam(noisy_classifier.parameters(), lr=2e-3)
history = fit(noisy_classifier,
              lambda m, batch: noisy_classifier_loss(m, to_model_range(batch[0]), batch[1], schedule, generator),
              minibatches(x_train, y_train, batch_size=noisy_cfg.batch_size, generator=generator), steps=noisy_cfg.steps,
              optimizer=optimizer, device=DEVICE, scheduler=warmup_cosine(optimizer, noisy_cfg.steps // 10, noisy_cfg.steps),
              desc="noisy classifier")
noisy_classifier.eval()
with torch.no_grad():
    x0_eval = to_model_range(x_test[:1000]).to(DEVICE)
    for t in [1, 250, 500, 750]:
        xt = schedule.q_sample(x0_eval, t, torch.randn(x0_eval.shape, generator=generator).to(DEVICE))
        acc = (noisy_classifier(xt, torch.full((1000,), t, device=DEVICE)).argmax(1).cpu() == y_test[:1000]).double().mean()
        print(f"noisy classifier accuracy at t = {t:3d}: {acc:.3f}")

# %%
ddpm_model, ddpm_schedule, _ = load_ddpm_mnist(DEVICE)  # chapter 11's unconditional U-Net
targets = torch.arange(noisy_cfg.n_guided) % 10
x_T_digits = torch.randn(noisy_cfg.n_guided, 1, 28, 28, generator=generator)
guided_digits, guided_accuracy = {}, {}
for gamma in noisy_cfg.gammas:
    model = ClassifierGuidance(ddpm_model, label_log_prob(noisy_classifier, targets.to(DEVICE)), ddpm_schedule, gamma)
    images = to_pixel_range(ddim_sample(model, x_T_digits.shape, ddpm_schedule, steps=noisy_cfg.ddim_steps, x_T=x_T_digits,
                                        device=DEVICE, show_progress=False)).cpu()
    guided_digits[gamma] = images
    guided_accuracy[gamma] = (classifier_outputs(images, judge)[1].argmax(1) == targets).double().mean().item()
    print(f"classifier guidance, gamma = {gamma:4.1f}: the shipped classifier reads the target label in {guided_accuracy[gamma]:.0%} "
          f"of {noisy_cfg.n_guided} digits (chance 10%)")
assert max(guided_accuracy.values()) > guided_accuracy[0.0], guided_accuracy
fig, axes = plt.subplots(1, len(guided_digits), figsize=(4 * len(guided_digits), 2.4))
for ax, (gamma, images) in zip(np.atleast_1d(axes), guided_digits.items()):
    image_grid(images[:20], nrow=2, ax=ax)
    ax.set_title(f"gamma = {gamma:g} (targets 0-9, 0-9)")
plt.show()

# %% [markdown]
# Even the `ci` classifier, trained for seconds, moves the samples: with guidance the shipped classifier reads the target
# label more often than without (printed above; the cell asserts it).
# Two costs of classifier guidance show here: a second network to train (on noisy data, which off-the-shelf classifiers
# are not), and a backward pass through it at every sampling step. Classifier-free guidance removes both.
#
# ---
# ## D. Classifier-free guidance
#
# One network $\epsilon_\theta(x_t, t, c)$, run twice at every sampling step: with the class $c$ and with the null class
# $\varnothing$. The two predictions are mixed with the guidance scale $s = 1 + w$. It learns both during training
# because the label is dropped (replaced by $\varnothing$) 20% of the time. D.1 derives the mixing line, D.2 builds it,
# D.3 trains it.

# %%
course_lib.topics.guidance.cfg_schematic()
plt.show()

# %% [markdown]
# ### D.1 The implicit classifier
#
# Bayes' rule again, solved for the classifier: $\nabla_x \log p_t(c \mid x) = \nabla_x \log p_t(x \mid c) - \nabla_x \log p_t(x)$. Both terms on
# the right are scores, which one network can give: $\epsilon_\theta(x_t, t, c)$ for the conditional and $\epsilon_\theta(x_t, t, \varnothing)$
# for the unconditional, where $\varnothing$ is a **null label** (in `course_lib.topics.unet.UNet`, label `num_classes` = 10). In
# $\epsilon$ coordinates ($\nabla \log p_t = -\epsilon / \sqrt{1 - \bar\alpha_t}$):
#
# $$
# \nabla_x \log p_t(c \mid x) = -\frac{\epsilon_\theta(x_t, t, c) - \epsilon_\theta(x_t, t, \varnothing)}{\sqrt{1 - \bar\alpha_t}} .
# $$
#
# Put this classifier into section B's guided $\epsilon$, applied to the unconditional model with scale $s$:
#
# $$
# \tilde\epsilon = \epsilon_\theta(x_t, t, \varnothing) - s \sqrt{1 - \bar\alpha_t}\, \nabla_x \log p_t(c \mid x)
# = \epsilon_\theta(x_t, t, \varnothing) + s \big(\epsilon_\theta(x_t, t, c) - \epsilon_\theta(x_t, t, \varnothing)\big) .
# $$
#
# Ho & Salimans apply the classifier's term with weight $w$ on top of the **conditional** model instead:
#
# $$
# \tilde\epsilon = \epsilon_\theta(x_t, t, c) + w \big(\epsilon_\theta(x_t, t, c) - \epsilon_\theta(x_t, t, \varnothing)\big) = (1 + w)\, \epsilon_\theta(x_t, t, c) - w\, \epsilon_\theta(x_t, t, \varnothing) .
# $$
#
# The two are the same line through $\epsilon_\varnothing = \epsilon_\theta(x_t, t, \varnothing)$ and $\epsilon_c = \epsilon_\theta(x_t, t, c)$, with $s = 1 + w$:
#
# $$
# \tilde\epsilon = (1 + w)\, \epsilon_c - w\, \epsilon_\varnothing = s\, \epsilon_c + (1 - s)\, \epsilon_\varnothing .
# $$
#
#
# | | unconditional | conditional | typical guided |
# |---|---|---|---|
# | $s$ (diffusers' `guidance_scale`, LDM; **this course**) | $s = 0$ | $s = 1$ | $s = 3$ to $7.5$ |
# | $w$ (Ho & Salimans) | $w = -1$ | $w = 0$ | $w = 2$ to $6.5$ |
#
# **The course uses $s$.** Three checks by number: the two conventions agree at $s = 1 + w$; on the 2-D mixture with exact
# $\epsilon$'s, CFG with scale $s$ *is* classifier guidance with $\gamma = s$ and the exact classifier; and $s = 1$ returns the
# conditional $\epsilon$.

# %%
eps_c, eps_u = torch.randn(2, 64, 1, 28, 28, dtype=torch.float64, generator=generator)
for w in [0.0, 0.5, 2.0, 6.5]:
    assert torch.allclose(guided_eps_ho_salimans(eps_c, eps_u, w), guided_eps(eps_c, eps_u, 1 + w), atol=1e-12)
assert torch.allclose(guided_eps(eps_c, eps_u, 1.0), eps_c, atol=1e-12) and torch.equal(guided_eps(eps_c, eps_u, 0.0), eps_u)
print("(1 + w) eps_c - w eps_u == eps_u + s (eps_c - eps_u) at s = 1 + w; s = 1 gives eps_c, s = 0 gives eps_u")

for s in [0.0, 1.0, 3.0, 7.0]:
    for t in [20, 300, 900]:
        t_batch = torch.full((300,), t)
        cfg = guided_eps(conditional_eps(x_demo, t_batch), exact_eps(x_demo, t_batch), s)
        classifier_guided = ClassifierGuidance(exact_eps, exact_class_log_prob, schedule, s)(x_demo, t_batch)
        assert torch.allclose(cfg, classifier_guided, atol=1e-8)
print("2-D mixture, exact eps: CFG at scale s == classifier guidance at gamma = s with the exact noisy classifier, to 1e-8")

# %% [markdown]
# > **Common confusion: which $w$?** Papers and code use one letter for two scales. Ho & Salimans' $w = 0$ is the plain
# > conditional model; the $s$ of LDM and of diffusers' `guidance_scale` is $1 + w$, and there $s = 1$ is conditional and
# > $s = 0$ unconditional. "Guidance 7.5" in diffusers is $w = 6.5$. A common slip writes
# > $(1 + w)\,\epsilon_\theta(z_\lambda, c) - w\,\epsilon_\theta(z_t)$, two different inputs; in fact both terms must see **the same**
# > noisy $x_t$ (Ho & Salimans' $z_\lambda$ is $x_t$ in log-SNR time), as in our one batched forward pass.
#
# ### D.2 The guided model, step by step
#
# Written out with two forward passes, then compared with the library's `ClassifierFreeGuidance`, which runs one pass on
# the doubled batch $[x; x]$ with labels $[c; \varnothing]$ (the batching trick: the same numbers, one call).

# %%
def my_cfg_eps(model, x, t, labels, s):
    """eps_uncond + s (eps_cond - eps_uncond) for x (N, 1, 28, 28), t (N,), labels (N,), with two forward passes."""
    null = torch.full_like(labels, model.num_classes)  # (N,) the "no label" token
    eps_cond = model(x, t, labels)  # (N, 1, 28, 28)
    eps_uncond = model(x, t, null)  # (N, 1, 28, 28)
    return eps_uncond + s * (eps_cond - eps_uncond)


# cfg_model: the shipped class-conditional U-Net, loaded under "See it work first" (section D.3 trains one)
x_t = torch.randn(8, 1, 28, 28, generator=generator).to(DEVICE)
t_batch, labels = torch.full((8,), 400, device=DEVICE), torch.arange(8, device=DEVICE)
with torch.no_grad():
    for s in [0.0, 1.0, 3.0]:
        ours = my_cfg_eps(cfg_model, x_t, t_batch, labels, s)
        library = ClassifierFreeGuidance(cfg_model, labels, s)(x_t, t_batch)
        assert torch.allclose(ours, library, atol=1e-5), (ours - library).abs().max()
    assert torch.allclose(NullLabel(cfg_model)(x_t, t_batch), cfg_model(x_t, t_batch, torch.full_like(labels, 10)), atol=1e-6)
print("my_cfg_eps (two passes) == ClassifierFreeGuidance (one doubled batch), s = 0, 1, 3")

# %% [markdown]
# ### D.3 Training with label dropout
#
# Training is chapter 11's $L_\text{simple}$ with one change: each label is replaced by the null token with probability
# $p_\text{uncond} = 0.2$ (Ho & Salimans used 0.1 and 0.2), so the same weights learn $\epsilon_\theta(x_t, t, c)$ and
# $\epsilon_\theta(x_t, t, \varnothing)$. The label embedding is added to the time embedding in every residual block (chapter 11's U-Net).
# First a check of the dropout rate on 100,000 labels, then training under the active profile (`ci`: a few steps only;
# the figures below use the shipped weights).

# %%
many_labels = torch.randint(0, 10, (100_000,), generator=generator)
dropped = drop_labels(many_labels, 0.2, null_label=10, generator=generator)
fraction_null = (dropped == 10).double().mean().item()
assert abs(fraction_null - 0.2) < 0.006 and torch.equal(dropped[dropped != 10], many_labels[dropped != 10])
print(f"fraction replaced by the null label: {fraction_null:.4f} (p_uncond = 0.2); the others unchanged")

trained_model, train_history, train_metrics, train_recipe = course_lib.zoo.cfg_mnist.train()
print(f"trained under {train_recipe['profile']}: {train_recipe['steps']} steps, widths {train_recipe['widths']}, "
      f"final loss {train_metrics['final_train_loss']}")
shipped_entry = read_manifest()["cfg_mnist"]
print(f"shipped cfg_mnist: {shipped_entry['recipe']['steps']} steps ({shipped_entry['recipe']['profile']} profile), "
      f"{shipped_entry['parameters']:,} parameters, {shipped_entry['wall_time_s'] / 60:.0f} min on {shipped_entry['device']}; "
      f"metrics {shipped_entry['metrics']}")

# %% [markdown]
# ---
# ## E. The guidance-scale widget
#
# One starting noise $x_T$ per column, one target digit per column (0-9), the same $x_T$ for every scale: move the slider
# and watch the same sample sharpen into its label. $s = 0$ is the unconditional model (null label), $s = 1$ the
# conditional one. The grids are computed once below, so the slider is instant (and the cell draws $s = 3$ when run
# headless).

# %%
widget_cfg = per_profile(ci=dict(columns=10, rows=1, steps=15, scales=(0.0, 1.0, 3.0, 7.0)),
                         cpu=dict(columns=10, rows=3, steps=25, scales=(0.0, 1.0, 1.5, 2.0, 3.0, 5.0, 7.0)),
                         gpu=dict(columns=10, rows=4, steps=50, scales=(0.0, 1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
n_widget = widget_cfg.columns * widget_cfg.rows
widget_labels = torch.arange(n_widget) % 10
widget_grids = {s: sample_cfg(cfg_model, widget_labels, s, schedule, steps=widget_cfg.steps,
                              generator=torch.Generator().manual_seed(3)) for s in widget_cfg.scales}


def draw_scale(ax, scale):
    image_grid(widget_grids[scale], nrow=widget_cfg.rows, ax=ax)
    kind = "unconditional" if scale == 0 else "conditional" if scale == 1 else "guided"
    ax.set_title(f"s = {scale:g} ({kind}), targets 0-9 by column")


course_lib.core.widgets.interactive_figure(
    draw_scale, figsize=(9, 1.3 + 0.9 * widget_cfg.rows),
    scale=ipywidgets.SelectionSlider(options=list(widget_cfg.scales), value=3.0, description="scale s"))

# %% [markdown]
# ---
# ## F. The measured trade-off
#
# For each scale $s$: $n$ samples (labels 0-9 in turn, the same starting noise for every $s$), DDIM with $\eta = 0$; the shipped
# clean-digit classifier's accuracy on the *intended* label, and the FID on its features against $n$ real test digits,
# printed next to the real-vs-real floor at the same $n$ (chapter 11's FID). The bench (`python -m course_lib.zoo bench
# cfg_mnist`) runs the same sweep with $n = 500$.

# %%
sweep_cfg = per_profile(ci=dict(n=50, steps=10, scales=(1.0, 3.0, 7.0)),
                        cpu=dict(n=300, steps=20, scales=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)),
                        gpu=dict(n=1000, steps=25, scales=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
sweep = evaluate_cfg(cfg_model, sweep_cfg.scales, n=sweep_cfg.n, steps=sweep_cfg.steps, seed=0, classifier=judge)
for row in sweep:
    print(f"s = {row['scale']:3.1f}: label accuracy {row['label_accuracy']:.3f}, FID {row['fid']:7.2f} "
          f"(floor {row['fid_floor']:.2f}, n = {row['fid_n']}), label entropy per image {row['per_image_label_entropy']:.3f}")
best = max(sweep, key=lambda row: row["label_accuracy"])
assert best["label_accuracy"] >= 0.9, best
fig, ax_acc = plt.subplots(figsize=(6.5, 3.6))
scales = [row["scale"] for row in sweep]
ax_acc.plot(scales, [row["label_accuracy"] for row in sweep], "o-", color="C0")
ax_acc.set(xlabel="guidance scale s (s = 1: conditional)", ylabel="label accuracy", ylim=(0, 1.02))
ax_acc.yaxis.label.set_color("C0")
ax_fid = ax_acc.twinx()
ax_fid.plot(scales, [row["fid"] for row in sweep], "s--", color="C3", label="FID")
ax_fid.axhline(sweep[0]["fid_floor"], color="C3", lw=0.8, ls=":", label="real-vs-real floor")
ax_fid.set_ylabel(f"FID (n = {sweep_cfg.n})", color="C3")
ax_fid.legend(loc="center right", fontsize=8)
ax_acc.set_title(f"CFG trade-off, {sweep_cfg.n} samples per s, DDIM-{sweep_cfg.steps}")
plt.show()

# %% [markdown]
# Label accuracy climbs with $s$ and saturates; FID is lowest at a moderate $s$ and rises again as guidance removes
# diversity (each digit drawn in its most typical style). The per-image label entropy falls throughout: samples become
# more certain. Under `ci` the FID at $n = 50$ is noisy; read the bench's numbers (shipped `cfg_mnist`, $n = 500$ per $s$,
# DDIM-10, floor 17.8):
#
# | $s$ | 1 | 1.5 | 2 | 3 | 5 | 7 |
# |---|---|---|---|---|---|---|
# | label accuracy | 0.852 | 0.976 | 0.996 | 0.998 | 1.000 | 1.000 |
# | FID | 61.1 | 34.2 | 33.7 | 50.9 | 85.4 | 108.2 |
#
# The conditional model alone ($s = 1$) misses its label 15% of the time and has the *worse* FID: mild guidance
# ($s \approx 2$) improves both; beyond it, accuracy has nothing left to gain and FID triples.
#
# ---
# ## G. Inpainting with an unconditional model (optional deep dive)
#
# We know the pixels of a digit $x_0$ where a mask $m$ is 1 and want the rest. The forward process acts on each pixel
# independently, $q(x_t \mid x_0) = \prod_i \mathcal{N}(\sqrt{\bar\alpha_t}\, x_{0,i}, 1 - \bar\alpha_t)$, so the known part of $x_t$ can be drawn
# **exactly** from the known pixels. At each step of the sampler, the model proposes $x_{t'}$ for all pixels; we keep its
# proposal where $m = 0$ and overwrite the known pixels with a fresh forward sample at the new level:
#
# $$
# x_{t'} \leftarrow m \odot \big(\sqrt{\bar\alpha_{t'}}\, x_0 + \sqrt{1 - \bar\alpha_{t'}}\, \epsilon\big) + (1 - m) \odot x_{t'}^\text{model}, \qquad \epsilon \sim \mathcal{N}(0, I) .
# $$
#
# This is the replacement step of RePaint (Lugmayr et al. 2022) **without its resampling** (RePaint jumps back up in noise
# and re-denoises several times so the generated part can adapt to the known part). `course_lib.topics.guidance.inpaint` runs it on
# chapter 11's DDIM steps with $\eta = 1$ (fresh noise each step, as ancestral sampling) and the shipped unconditional DDPM.
# Two checks: with nothing masked the result is the original exactly; and the known pixels are never touched.

# %%
digits = to_model_range(x_test[:4]).to(DEVICE)  # (4, 1, 28, 28) in [-1, 1]
everything_known = torch.ones(1, 1, 28, 28)
assert torch.equal(inpaint(ddpm_model, digits, everything_known, ddpm_schedule, steps=5), digits)
bottom_half = rectangle_mask(0, 14, 28, 28)  # unknown: rows 14-27
filled = inpaint(ddpm_model, digits, bottom_half, ddpm_schedule, steps=20, generator=torch.Generator().manual_seed(0))
known_pixels = bottom_half.bool().expand_as(digits).to(DEVICE)
assert torch.equal(filled[known_pixels], digits[known_pixels])
print("inpainting: nothing masked -> the original, exactly; known pixels untouched")

# %% [markdown]
# A measured number: hide the bottom half of test digits, inpaint, and ask the shipped classifier for the label. The
# baseline fills the hole with the background value (-1, black). Expect a modest gain, not a cure: on 200 test digits
# (DDIM-25, $\eta = 1$) we measured, black vs inpainted, 0.49 vs 0.58 for the bottom half, 0.31 vs 0.36 for the central
# 14 x 14 square, and 0.64 vs **0.61** for the top half. Plain replacement often draws a plausible digit that is not
# *this* digit (a 7 completed into a 9): the known half steers the hole only through the noisy $x_t$ (see the
# confusion box below). Under `ci`, $n = 20$ is too few to read even the sign: one or two digits either way is noise.

# %%
n_inpaint = per_profile(ci=dict(n=20), cpu=dict(n=200), gpu=dict(n=500)).n
originals = to_model_range(x_test[100:100 + n_inpaint]).to(DEVICE)
truth = y_test[100:100 + n_inpaint]
completed = inpaint(ddpm_model, originals, bottom_half, ddpm_schedule, steps=25, generator=torch.Generator().manual_seed(1))
blanked = originals * bottom_half.to(DEVICE) - (1 - bottom_half.to(DEVICE))
for name, images in [("original", originals), ("bottom half black", blanked), ("bottom half inpainted", completed)]:
    acc = (classifier_outputs(to_pixel_range(images).cpu(), judge)[1].argmax(1) == truth).double().mean().item()
    print(f"{name:>22}: classifier accuracy on the true label {acc:.2f} (n = {n_inpaint})")

# %% [markdown]
# Choose the hidden rectangle with the sliders (columns $x_0 \le x < x_1$, rows $y_0 \le y < y_1$). Top row: the digit, the
# masked digit; then four inpaintings with different noise. Run headless, it draws the bottom-half rectangle.

# %%
widget_digit = to_model_range(x_test[7:8]).to(DEVICE)  # one test digit (a 9)


def draw_inpainting(axes, x0, y0, x1, y1):
    if x1 <= x0 or y1 <= y0:
        axes[0].set_title("need x0 < x1 and y0 < y1")
        for ax in axes:
            ax.axis("off")
        return
    mask = rectangle_mask(x0, y0, x1, y1)
    samples = inpaint(ddpm_model, widget_digit.expand(4, -1, -1, -1), mask, ddpm_schedule, steps=25,
                      generator=torch.Generator().manual_seed(0))
    shown = [widget_digit[0], widget_digit[0] * mask[0].to(DEVICE) - (1 - mask[0].to(DEVICE)) * 0.3, *samples]
    titles = ["original", "known (grey = hidden)"] + [f"inpainted {i + 1}" for i in range(4)]
    for ax, image, title in zip(axes, shown, titles):
        ax.imshow(to_pixel_range(image[0]).cpu(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.axis("off")


course_lib.core.widgets.interactive_figure(
    draw_inpainting, ncols=6, figsize=(10, 2.2),
    x0=ipywidgets.IntSlider(value=0, min=0, max=27, description="x0"),
    y0=ipywidgets.IntSlider(value=14, min=0, max=27, description="y0"),
    x1=ipywidgets.IntSlider(value=28, min=1, max=28, description="x1"),
    y1=ipywidgets.IntSlider(value=28, min=1, max=28, description="y1"))

# %% [markdown]
# > **Common confusion: "paste the known pixels into $x_t$".** The known pixels must be pasted **at the noise level of
# > the step**, $\sqrt{\bar\alpha_{t'}}\, x_0 + \sqrt{1 - \bar\alpha_{t'}}\,\epsilon$, not clean: the network was trained only on inputs whose every
# > pixel has noise level $t'$. And replacement alone is not exact conditioning: the model's proposal for the hole
# > at step $t$ only sees the known part through $x_t$, so a stroke generated early may not meet the known stroke at the
# > border (look at large rectangles). RePaint's resampling, or guidance by the reconstruction error, reduce this.
#
# ---
# ## H. Exercises
#
# **H.1** Write Ho & Salimans' guided noise $(1 + w)\,\epsilon_c - w\,\epsilon_\varnothing$, with $\epsilon_c = \epsilon_\theta(x_t, t, c)$ and $\epsilon_\varnothing = \epsilon_\theta(x_t, t, \varnothing)$.

# %% tags=["exercise"]
def my_guided_eps_ho_salimans(eps_cond, eps_uncond, w):
    """(1 + w) eps_cond - w eps_uncond; any shapes that match."""
    ### BEGIN SOLUTION
    return (1 + w) * eps_cond - w * eps_uncond
    ### END SOLUTION


# %%
exercise_inputs = [(torch.randn(3, 1, 28, 28, generator=generator), torch.randn(3, 1, 28, 28, generator=generator), w)
                   for w in [0.0, 1.0, 6.5, -1.0]]
course_lib.core.check.check_function(my_guided_eps_ho_salimans, guided_eps_ho_salimans, exercise_inputs)

# %%
course_lib.core.check.show_solution(guided_eps_ho_salimans)

# %% [markdown]
# **H.2** Label dropout: replace each label by `null_label` with probability `p_uncond`, drawing one uniform number per label
# from `generator` (`torch.rand(labels.shape, generator=generator)`; a label is dropped when its number is below `p_uncond`).

# %% tags=["exercise"]
def my_drop_labels(labels, p_uncond, null_label, generator=None):
    """(N,) long labels -> (N,) with each entry replaced by null_label with probability p_uncond."""
    ### BEGIN SOLUTION
    drop = torch.rand(labels.shape, generator=generator) < p_uncond
    return torch.where(drop, torch.full_like(labels, null_label), labels)
    ### END SOLUTION


# %%
dropout_inputs = [(torch.randint(0, 10, (50,), generator=generator), p, 10, seed) for p, seed in [(0.2, 0), (0.5, 1), (0.0, 2), (1.0, 3)]]
course_lib.core.check.check_function(
    lambda labels, p, null, seed: my_drop_labels(labels, p, null, torch.Generator().manual_seed(seed)),
    lambda labels, p, null, seed: drop_labels(labels, p, null, torch.Generator().manual_seed(seed)),
    dropout_inputs, name="my_drop_labels")

# %%
course_lib.core.check.show_solution(drop_labels)

# %% [markdown]
# **H.3** The exact noisy classifier of a mixture: $\log p(c \mid x) = \log \sum_{k \in c} \pi_k \mathcal{N}(x; \mu_k, \sigma_k^2 I) - \log \sum_k \pi_k \mathcal{N}(x; \mu_k, \sigma_k^2 I)$,
# for 2-D isotropic components (`mixture.means` (K, 2), `mixture.stds` (K,), `mixture.weights` (K,)). Work in log space
# (`torch.logsumexp`); the constants common to all components cancel.

# %% tags=["exercise"]
def my_class_log_prob(mixture, component_classes, x, label):
    """log p(y = label | x) for x (N, 2) -> (N,)."""
    ### BEGIN SOLUTION
    squared = ((x.double()[:, None, :] - mixture.means[None]) ** 2).sum(-1)  # (N, K)
    log_joint = mixture.weights.log() - 2 * mixture.stds.log() - squared / (2 * mixture.stds ** 2)  # (N, K), up to a constant
    in_class = component_classes == label
    return (torch.logsumexp(log_joint[:, in_class], 1) - torch.logsumexp(log_joint, 1)).to(x.dtype)
    ### END SOLUTION


# %%
classifier_inputs = [(noised_mixture(mixture, schedule, t), component_classes, torch.randn(20, 2, dtype=torch.float64, generator=generator) * 3, label)
                     for t, label in [(0, 0), (0, 1), (300, 1), (800, 0)]]
course_lib.core.check.check_function(my_class_log_prob, class_log_prob, classifier_inputs, atol=1e-8)

# %%
course_lib.core.check.show_solution(class_log_prob)

# %% [markdown]
# **H.4** (open) Inpainting with CFG: use `cfg_mnist` with a label and $s = 3$ as the model inside `inpaint`
# (`ClassifierFreeGuidance(cfg_model, labels, 3.0)` is an $\epsilon$-model). Hide the bottom half of a 7 and ask for a 9. Where does
# the result break, and why does replacement without resampling make it worse?
#
# **H.5** *Derive, then check.* Section D.1 showed that CFG at scale $s$ is classifier guidance with $\gamma = s$. Which
# density does it follow? With exact $\epsilon_\theta$'s, $\epsilon_\theta(x_t, t, \cdot) = -\sqrt{1 - \bar\alpha_t}\, \nabla_x \log p_t(x \mid \cdot)$;
# put that into $\tilde\epsilon = s\, \epsilon_c + (1 - s)\, \epsilon_\varnothing$ and write the guided score
# $-\tilde\epsilon / \sqrt{1 - \bar\alpha_t}$ as the gradient of one log-density. On paper first; then code it as
# `my_guided_log_density(p_t, p_t_given_c, x, s)`, the log of that density up to a constant, shape (N,), for the 2-D
# mixtures of section A (`p_t.log_prob(x)` is $\log p_t(x)$). The check takes its gradient by autograd and compares it
# with the score of the library's CFG on the exact $\epsilon$'s, at several $t$ and $s$. Then compare your answer with
# section B's $p_t(x)\, p_t(c \mid x)^\gamma$.

# %% tags=["exercise"]
def my_guided_log_density(p_t, p_t_given_c, x, s):
    """log p_t(x)^(1 - s) p_t(x | c)^s, up to a constant: (N, 2) -> (N,)."""
    ### BEGIN SOLUTION
    return (1 - s) * p_t.log_prob(x) + s * p_t_given_c.log_prob(x)
    ### END SOLUTION


# %%
def autograd_score(log_density, t, s, x):
    """grad_x log_density at the noised mixtures of level t, by autograd: (N, 2)."""
    p_t = noised_mixture(mixture, schedule, t)
    p_t_given_c = noised_mixture(class_mixture(mixture, component_classes, label_2d), schedule, t)
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(log_density(p_t, p_t_given_c, x, s).sum(), x)[0]


def cfg_score(t, s, x):
    """-eps_tilde / sqrt(1 - alpha_bar_t) for CFG at scale s with the exact eps's of section B: (N, 2)."""
    t_batch = torch.full((len(x),), t)
    eps_tilde = guided_eps(conditional_eps(x, t_batch), exact_eps(x, t_batch), s)
    return -eps_tilde / float(schedule.sqrt_one_minus_alpha_bars[t])


score_inputs = [(t, s, torch.randn(50, 2, dtype=torch.float64, generator=generator) * 3)
                for t, s in [(20, 1.0), (200, 3.0), (500, 0.0), (800, 7.5)]]
course_lib.core.check.check_function(lambda t, s, x: autograd_score(my_guided_log_density, t, s, x), cfg_score,
                                     score_inputs, name="the score of my_guided_log_density", atol=1e-8)

# %%
course_lib.core.check.show_solution(course_lib.topics.guidance.guided_log_density)

# %% [markdown]
# **H.6** Classifier guidance, step by step: write section B's six steps as
# `my_classifier_guided_eps(eps_model, log_prob, schedule, gamma, x_t, t)`, with `eps_model(x_t, t)` an $\epsilon$-model,
# `log_prob(x_t, t)` the (N,) log-probabilities of the target labels and `t` an (N,) tensor holding one step. It must
# work when called inside `torch.no_grad()`, as the sampler calls it. The check compares it with `ClassifierGuidance`
# under `torch.no_grad()`, on the exact 2-D mixture and on section C's noisy classifier guiding the shipped DDPM, and
# then runs `ddim_sample` with it. *Predict, then run:* what does `torch.autograd.grad` raise if you leave out the
# `enable_grad` block?

# %% tags=["exercise"]
def my_classifier_guided_eps(eps_model, log_prob, schedule, gamma, x_t, t):
    """eps(x_t, t) - gamma sqrt(1 - alpha_bar_t) grad_x log p(c | x_t, t), same shape as x_t; works under torch.no_grad()."""
    ### BEGIN SOLUTION
    eps = eps_model(x_t, t)  # 1. the unconditional noise prediction
    with torch.enable_grad():  # 2. the sampler runs under no_grad: autograd back on, here only
        x = x_t.detach().requires_grad_(True)  # 3. a fresh leaf: this step's input
        log_p = log_prob(x, t)  # 4. (N,) log p(c | x_t, t), each example's own label
        grad = torch.autograd.grad(log_p.sum(), x)[0]  # 5. row i = example i's own gradient
    sigma_t = float(schedule.sqrt_one_minus_alpha_bars[int(t.reshape(-1)[0])])  # sqrt(1 - alpha_bar_t), one t per batch
    return eps - gamma * sigma_t * grad  # 6. the guided eps
    ### END SOLUTION


# %%
mnist_x = torch.randn(4, 1, 28, 28, generator=generator).to(DEVICE)
guidance_cases = [(exact_eps, exact_class_log_prob, schedule, gamma, x_demo[:50], torch.full((50,), t))
                  for gamma, t in [(1.0, 20), (3.0, 300), (10.0, 900)]]
guidance_cases.append((ddpm_model, label_log_prob(noisy_classifier, targets[:4].to(DEVICE)), ddpm_schedule, 5.0, mnist_x,
                       torch.full((4,), 400, device=DEVICE)))
with torch.no_grad():  # as inside chapter 11's samplers
    course_lib.core.check.check_function(
        my_classifier_guided_eps,
        lambda eps_model, log_prob, sched, gamma, x, t: ClassifierGuidance(eps_model, log_prob, sched, gamma)(x, t),
        guidance_cases, name="my_classifier_guided_eps", atol=1e-5)
x0_mine = ddim_sample(lambda x, t: my_classifier_guided_eps(exact_eps, exact_class_log_prob, schedule, 3.0, x, t),
                      (n_2d, 2), schedule, steps=50, x_T=x_T_2d, clip_x0=False, show_progress=False)
assert torch.allclose(x0_mine, guided_samples[3.0], atol=1e-8)
print("ddim_sample (which runs under torch.no_grad) with my_classifier_guided_eps at gamma = 3 gives section B's samples")

# %%
course_lib.core.check.show_solution(ClassifierGuidance)

# %% [markdown]
# ---
# ## Summary
#
# | key equation | derived in | checked by |
# |---|---|---|
# | $\nabla_x \log p_t(x \mid c) = \nabla_x \log p_t(x) + \nabla_x \log p_t(c \mid x)$ | A | the exact 2-D mixture, to $10^{-8}$, in A |
# | $\epsilon_\gamma = \epsilon_\theta(x_t, t) - \gamma \sqrt{1 - \bar\alpha_t}\, \nabla_{x_t} \log p_t(c \mid x_t)$ | B | $\gamma = 1$ gives the exact conditional $\epsilon$, in B; your step-by-step version against the library's, in exercise 6 of H |
# | $\tilde\epsilon = (1 + w)\, \epsilon_c - w\, \epsilon_\varnothing = s\, \epsilon_c + (1 - s)\, \epsilon_\varnothing$, $s = 1 + w$ | D.1 | the two conventions and CFG = classifier guidance with $\gamma = s$, in D.1; two passes = one doubled batch, in D.2 |
# | label dropout: $c \to \varnothing$ with probability $p_\text{uncond} = 0.2$ | D.3 | the rate on 100,000 labels, in D.3 |
# | CFG follows $\nabla_x \log p_t(x)^{1 - s}\, p_t(x \mid c)^s$ | H | the autograd check of exercise 5 in H |
#
# **Three things to remember.**
#
# 1. Guidance changes the sampler, not the network: Bayes' rule adds a classifier's gradient to the score, and in
#    $\epsilon$ coordinates that gradient is multiplied by $-\sqrt{1 - \bar\alpha_t}$.
# 2. Classifier-free guidance is one network run twice, with $c$ and with $\varnothing$, mixed as
#    $s\, \epsilon_c + (1 - s)\, \epsilon_\varnothing$; label dropout in training is what makes the $\varnothing$ pass possible.
#    Say which convention you use: $s = 1$ and $w = 0$ are both plain conditional sampling.
# 3. A scale above 1 targets no exact distribution: it buys label fidelity with diversity. Label accuracy saturates
#    while FID is best at a moderate scale ($s \approx 2$ for the shipped model) and then climbs.
#
# ---
# ## I. Discussion questions
#
# 1. Section B showed that for $\gamma \ne 1$ the sampler follows $p_t(x)\, p_t(c \mid x)^\gamma$ at each $t$. Why is that not the same
#    as sampling the clean tilted density $p(x)\, p(c \mid x)^\gamma$? Which of the two would you *want*, and can any sampler reach it?
# 2. CFG needs no classifier, yet section D.1 says it *is* classifier guidance. With which classifier? What does that
#    classifier learn that an ordinary digit classifier does not, and why might it give better gradients than a separately
#    trained noisy classifier?
# 3. The label is dropped 20% of the time. What happens to the unconditional model at 1%, and to the conditional one at 90%?
#    How would you measure it?
# 4. FID has a minimum at a moderate $s$, while label accuracy keeps rising (F). Which of the two would a user of a
#    text-to-image model feel, and why do such systems run at $s \approx 7.5$?
# 5. Inpainting used an *unconditional* model and no training. Which other inverse problems fit the same "replace what
#    you know at every step" scheme (think of colourisation with an orthogonal colour transform), and which do not (blur)?
