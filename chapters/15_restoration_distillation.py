# ---
# jupyter:
#   course:
#     time_on_cpu:
#       ci:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-05'
#         seconds: 39
#       cpu:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-05'
#         seconds: 211
#       gpu:
#         note: the restorers and students are small; a GPU mostly shortens the cpu-sized runs
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
# # 15 · Image restoration, its losses, and distillation
#
# Restoration means recovering a clean image $x$ from a damaged observation $y$: a noisy photo, a blurred one, a small one.
# Each is an **inverse problem**: many clean images explain the same $y$. This chapter shows what the usual mean-squared
# loss does with that ambiguity (it returns the *average* of the plausible answers, the posterior mean $E[x \mid y]$: a blur),
# measures it on a toy and on digits where the posterior can be computed exactly, and then trains the same small
# super-resolution network with three losses (L2, L2 + perceptual, L2 + adversarial) to see the **perception-distortion
# trade-off** in numbers. Diffusion models answer differently: a conditional diffusion model returns a *draw* from
# $p(x \mid y)$, sharp and varied, and section C uses chapters 11 and 12's machinery for super-resolution (SR3, a two-stage
# cascade) and colorization. The last section turns the question around: instead of a network imitating images, a
# small network imitates another network's *softened outputs*, **knowledge distillation**.
#
# **Goals.** After this chapter you can
# - write denoising, deblurring and super-resolution as forward models $y = A(x) + n$, and compute each on digits;
# - derive that the estimator minimising the expected squared error is the posterior mean $E[x \mid y]$ (and the L1 one the
#   median), link it to Tweedie's formula $E[x \mid y] = y + \sigma^2 \nabla \log p(y)$ of chapter 10, and explain with numbers why
#   L2 restorers blur and L2 colorizers give grey;
# - add a perceptual loss (Johnson et al., 2016) and an adversarial loss (Isola et al., 2017; Ledig et al., 2017) to a
#   restorer, and measure the result with PSNR and FID, the two axes of Blau and Michaeli (2018)'s trade-off;
# - condition a diffusion model on a low-resolution image (SR3, Saharia et al. 2021), chain two into a cascade with
#   noise-conditioning augmentation (Ho et al. 2022), colorize by replacing the gray coordinate in an orthogonal colour
#   basis (Song et al. 2021), and measure consistency with the input and the saturation L2 loses;
# - derive the distillation loss of Hinton et al. (2015), including why its soft term is multiplied by $T^2$, check the
#   gradient against autograd, and distil the course's classifier into a small MLP that beats the same MLP trained on
#   labels alone.
#
# **Prerequisites.** Chapter 01 (cross entropy, autograd), chapter 03 (CNNs), chapter 09 (the GAN losses and the DCGAN
# discriminator), chapter 10 (scores and Tweedie's formula), chapters 11 and 12 (DDPM, DDIM and replacement inpainting,
# for C), chapter 05 (DINO's teacher and student, for D.4). FID on the classifier's features, defined in chapter 09.
#
# **Time.** Three study-group sessions: about 90 minutes (See it work first, A and B), about 50 minutes (C) and about 60
# minutes (D, the summary and the discussion), plus about 45 minutes of exercises at home. The session plan, the answers to the discussion
# questions and where groups stall are in
# [facilitator/15_restoration_distillation.md](facilitator/15_restoration_distillation.md).
#
# **Core path.** See it work first, A.1-A.4, B.1-B.5, C.1-C.3, D.1-D.4, the summary and the discussion: about 200 min.
#
# **What runs, and how long** (the whole chapter, top to bottom, on a fresh kernel; `ci` with 1 torch thread as the
# test suite runs it, `cpu` with torch's default threads; `make time PROFILE=ci` or `PROFILE=cpu` measures it and
# writes the time here, in the notebook's metadata and in the README):
#
# | profile | what changes | measured |
# |---|---|---|
# | `ci` | tiny runs: 10 steps per restorer, 100 per student, 300 digits for PSNR and FID (the chapter's own restorers look broken; the shipped ones do not); in C, 40 steps per L2 baseline, the cascade's FID on 30 digits | 39 s, measured 2026-12-05 on 2 CPU cores, no GPU, otherwise idle |
# | `cpu` | 200 steps per restorer, 1,000 for the finite-prior restorer, 1,000 per student and 3 seeds, 2,000 digits for PSNR and FID; in C, 600 steps per L2 baseline, the cascade's FID on 200 digits | 3 min 31 s, measured 2026-12-05 on 2 CPU cores, no GPU, otherwise idle |
# | `gpu` | longer runs of the same models | not measured: the restorers and students are small; a GPU mostly shortens the cpu-sized runs |
#
# Seven trained models ship (`restorer_mnist_l2`, `restorer_mnist_perceptual`, `restorer_mnist_adversarial`,
# `sr3_mnist`, `cascade_base_mnist`, `colorize_shapes` and `student_mnist`): See it work first, B.4, C and D use them
# under every profile. Set the profile before starting JupyterLab:
# `COURSE_PROFILE=ci`, `cpu` or `gpu`.

# %%
import math
import time

import ipywidgets
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import course_lib
import course_lib.core.check
import course_lib.core.widgets
import course_lib.topics.distillation
import course_lib.topics.restoration
import course_lib.zoo
from course_lib import per_profile, profile, seed_everything
from course_lib.data import load_mnist
from course_lib.eval.fid import shipped_classifier
from course_lib.topics.dino import teacher_probabilities
from course_lib.topics.distillation import (StudentMLP, check_soft_gradient, distillation_loss, soft_target_gradient,
                                            soften, teacher_logits_of, test_accuracy, train_student, transfer_set)
from course_lib.topics.gan import DCGANDiscriminator, generator_loss
from course_lib.topics.restoration import (LOSS_KINDS, benchmark_split, bimodal_posterior_mean, box_blur,
                                           check_posterior_mean, downsample, effective_candidates,
                                           evaluate_restorations, observe, perceptual_features, perceptual_loss,
                                           posterior_mean, posterior_weights, psnr, restore, restorer_loss,
                                           train_restorer, tweedie_denoiser, upsample)
from course_lib.topics.score import tweedie_denoise

DEVICE = course_lib.device()
generator = seed_everything(0)
cfg = per_profile(
    ci=dict(toy_steps=300, prior_size=500, prior_steps=30, restorer_steps=10, n_eval=300, student_steps=100,
            student_seeds=1),
    cpu=dict(toy_steps=2_000, prior_size=1_000, prior_steps=1_000, restorer_steps=200, n_eval=2_000,
             student_steps=1_000, student_seeds=3),
    gpu=dict(toy_steps=4_000, prior_size=2_000, prior_steps=5_000, restorer_steps=2_000, n_eval=2_000,
             student_steps=2_000, student_seeds=5),
)
x_train, y_train = load_mnist("train")   # (60000, 1, 28, 28) in [0, 1], (60000,)
x_test, y_test = load_mnist("test")      # (10000, 1, 28, 28), (10000,)
classifier = shipped_classifier(DEVICE).eval()
classifier.requires_grad_(False)
print(f"profile = {profile()}, device = {DEVICE}, torch threads = {torch.get_num_threads()}; {cfg}")


def grey_fraction(images):
    """The fraction of pixels strictly between 0.2 and 0.8: digits are mostly black or white, so this measures blur."""
    return float(((images > 0.2) & (images < 0.8)).float().mean())


def show_rows(rows, titles, n=8, size=1.1):
    """A grid of digits: one row per entry of ``rows`` (each (>= n, 1, H, W)), its title on the left."""
    fig, axes = plt.subplots(len(rows), n, figsize=(n * size, len(rows) * size), squeeze=False)
    for r, (images, title) in enumerate(zip(rows, titles)):
        for c in range(n):
            axes[r, c].imshow(images[c, 0].cpu(), cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=9)
    return fig


# %% [markdown]
# ## See it work first
#
# Each digit below was shrunk to $7 \times 7$ pixels (every pixel the average of a $4 \times 4$ block); the rows show that input
# (blown up by repeating pixels), three copies of the same small network trained to undo it with three different losses,
# and the truth. The L2 and perceptual restorers have about the same PSNR (the mean-squared error in decibels, higher is
# closer to the truth); the adversarial one scores about 1 dB lower, yet draws the crispest strokes, sometimes the wrong
# ones: the fraction of grey pixels (between 0.2 and 0.8, a measure of blur) is above the truth's for L2 and below it
# for the adversarial restorer. The printed numbers are on 500 test digits. By the end of this chapter you will have derived and trained this.

# %%
start = time.perf_counter()
restorers = {kind: course_lib.zoo.load_shipped(f"restorer_mnist_{kind}", DEVICE) for kind in LOSS_KINDS}
student = course_lib.zoo.load_shipped("student_mnist", DEVICE)
truth_500 = x_test[:500]                                     # (500, 1, 28, 28)
small_500 = downsample(truth_500)                            # (500, 1, 7, 7)
seen = {"input (nearest)": upsample(small_500, "nearest")}
seen.update({kind: restore(model, small_500) for kind, model in restorers.items()})
for name, images in seen.items():
    print(f"{name:>16}: PSNR {psnr(images, truth_500):5.2f} dB, grey pixels {grey_fraction(images):.3f}")
print(f"{'truth':>16}:                grey pixels {grey_fraction(truth_500):.3f}")
assert psnr(seen["l2"], truth_500) > psnr(seen["adversarial"], truth_500) + 0.5
assert grey_fraction(seen["adversarial"]) < grey_fraction(truth_500) < grey_fraction(seen["l2"])
student_accuracy = test_accuracy(student, x_test, y_test)
print(f"and the distilled student MLP (D.3): test accuracy {student_accuracy:.4f} from 1,000 labelled digits; "
      f"{time.perf_counter() - start:.1f} s")
fig = show_rows(list(seen.values()) + [truth_500], list(seen) + ["truth"])
plt.show()

# %% [markdown]
# A diffusion model restores differently: the shipped SR3 model (section C) turns a $14 \times 14$ digit into several sharp
# $28 \times 28$ digits, each a different draw, each consistent with its input (its $2 \times 2$ averages give the input back),
# where bicubic upsampling gives one blurry answer.

# %%
import course_lib.topics.sr3  # noqa: E402  (section C builds it)
from course_lib.core.plotting import image_grid  # noqa: E402
from course_lib.topics.diffusion import NoiseSchedule  # noqa: E402

sr_first = course_lib.zoo.load_shipped("sr3_mnist", DEVICE)
x_first = x_test[:6].to(DEVICE) * 2 - 1                         # (6, 1, 28, 28) in [-1, 1]
y_first = course_lib.topics.sr3.downsample(x_first)            # (6, 1, 14, 14)
sr_samples = torch.cat([course_lib.topics.sr3.super_resolve(sr_first, y_first, NoiseSchedule.linear(1000), steps=10,
                                                            project=True, generator=torch.Generator().manual_seed(k))
                        for k in range(3)])                     # (18, 1, 28, 28): three draws of each digit
fig, ax = plt.subplots(figsize=(6, 3.4))
image_grid(((torch.cat([course_lib.topics.sr3.upsample(y_first), sr_samples]) + 1) / 2).clamp(0, 1).cpu(), nrow=4, ax=ax)
ax.set_title("row 1: bicubic upsampling of the 14x14 input; rows 2-4: three SR3 draws", fontsize=9)
plt.show()
sr_consistency = course_lib.topics.sr3.consistency_error(sr_samples, y_first.repeat(3, 1, 1, 1))
bicubic_consistency = course_lib.topics.sr3.consistency_error(course_lib.topics.sr3.upsample(y_first), y_first)
print(f"consistency RMS(downsample(restoration) - input), pixel units: SR3 {sr_consistency:.1e}, "
      f"bicubic {bicubic_consistency:.4f}")
assert sr_consistency < 1e-3 < bicubic_consistency

# %% [markdown]
# ---
# ## A. Restoration is an inverse problem
#
# ### A.1 Three forward models
#
# A restoration task is defined by how the clean image $x$ became the observation $y$, the **forward model**; with Gaussian
# noise $n \sim \mathcal{N}(0, \sigma^2 I)$:
#
# $$
# \text{denoising: } y = x + n, \qquad \text{deblurring: } y = x * k + n, \qquad \text{super-resolution: } y = D(x * k) + n ,
# $$
#
# with $k$ a blur kernel ($*$ is convolution) and $D$ keeping every $s$-th pixel. In this chapter's super-resolution task,
# $k$ is the $4 \times 4$ box (all entries $1/16$) and $s = 4$, so $D(x * k)$ is exactly **average pooling**: a $28 \times 28$ digit
# becomes $7 \times 7$. The check: blur with the box and keep every fourth pixel, and compare with the library's `downsample`.

# %%
digits = x_test[:4]                                                   # (4, 1, 28, 28)
box = torch.full((1, 1, 4, 4), 1 / 16)                                # the kernel k
blurred_then_kept = F.conv2d(digits, box, stride=1)[..., ::4, ::4]    # x * k, then D: every 4th pixel
print(f"max |D(x * k) - downsample(x)| = {(blurred_then_kept - downsample(digits)).abs().max():.2e}")
assert torch.allclose(blurred_then_kept, downsample(digits), atol=1e-6)

observations = {task: observe(digits, task, sigma, generator) for task, sigma in
                (("denoise", 0.5), ("deblur", 0.05), ("super_resolution", 0.0))}
observations["super_resolution"] = upsample(observations["super_resolution"], "nearest")  # 7x7 shown at 28x28
fig = show_rows([digits] + [o.clamp(0, 1) for o in observations.values()],
                ["clean x", "x + n, sigma 0.5", "x * k + n (5x5 box)", "D(x * k), 4x"], n=4)
plt.show()

# %% [markdown]
# ### A.2 The MSE-optimal estimator is the posterior mean
#
# Train a restorer $f$ by minimising the expected squared error over pairs $(x, y)$ drawn from the data. Split the
# expectation by $y$: $E\,\|f(y) - x\|^2 = E_y\big[ E_{x \mid y} \|f(y) - x\|^2 \big]$. For one fixed $y$, $f(y)$ is a single vector $c$, and with
# $\mu = E[x \mid y]$,
#
# $$
# E_{x \mid y} \|c - x\|^2 = \|c - \mu\|^2 + E_{x \mid y}\|x - \mu\|^2
# $$
#
# (expand $c - x = (c - \mu) + (\mu - x)$; the cross term has mean zero). The second term does not depend on $c$, so the best
# $c$ is $\mu$: **the L2-optimal restorer is the posterior mean** $f^*(y) = E[x \mid y]$. The same argument per pixel with
# $|c - x|$ gives the posterior **median**. When the plausible images differ (a stroke here, or a stroke there), their
# mean is a faint copy of both: a blur. The residual $E\|x - \mu\|^2$ is the error no restorer can remove.
#
# A one-dimensional toy shows it. $x$ is $-1$ or $+1$ with probability $1/2$ each, and $y = x + n$ with $\sigma = 0.8$. Bayes gives
# $p(x = \pm 1 \mid y) \propto e^{-(y \mp 1)^2 / 2\sigma^2}$, and the posterior mean is $E[x \mid y] = \tanh(y / \sigma^2)$ (exercise 1 derives it). It
# is never $\pm 1$ exactly: near $y = 0$ it answers about $0$, a value $x$ never takes. The median of a two-point posterior is the
# more likely point, $\operatorname{sign}(y)$. The checks: the closed form against a Monte Carlo conditional mean (binned $y$), then two
# small MLPs trained on $(y, x)$ pairs, one with L2 and one with L1.

# %%
sigma_toy = 0.8
n_toy = 400_000
x_toy = torch.randint(0, 2, (n_toy,), generator=generator).float() * 2 - 1      # (n,) in {-1, +1}
y_toy = x_toy + sigma_toy * torch.randn(n_toy, generator=generator)             # (n,)
bins = torch.linspace(-2, 2, 17)
centres = (bins[1:] + bins[:-1]) / 2
which = torch.bucketize(y_toy, bins) - 1
monte_carlo = torch.stack([x_toy[which == b].mean() for b in range(len(centres))])
closed_form = bimodal_posterior_mean(centres, sigma_toy)
print(f"max |binned Monte Carlo E[x | y] - tanh(y / sigma^2)| = {(monte_carlo - closed_form).abs().max():.3f} "
      f"(bins of width 0.25)")
assert (monte_carlo - closed_form).abs().max() < 0.05


def fit_toy(loss_name, steps):
    """A 1 -> 64 -> 64 -> 1 MLP trained on (y, x) pairs with the L2 or the L1 loss."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(steps):
        index = torch.randint(n_toy, (512,), generator=generator)
        error = net(y_toy[index, None])[:, 0] - x_toy[index]
        loss = (error**2).mean() if loss_name == "L2" else error.abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net


grid = torch.linspace(-2, 2, 201)
toy_nets = {name: fit_toy(name, cfg.toy_steps) for name in ("L2", "L1")}
with torch.no_grad():
    toy_fits = {name: net(grid[:, None])[:, 0] for name, net in toy_nets.items()}
l2_gap = (toy_fits["L2"] - bimodal_posterior_mean(grid, sigma_toy)).abs().max()
far = grid.abs() > 0.5
l1_gap = (toy_fits["L1"][far] - grid[far].sign()).abs().max()
print(f"L2 net vs tanh(y / sigma^2): max gap {l2_gap:.3f};  L1 net vs sign(y) for |y| > 0.5: max gap {l1_gap:.3f}")
print(f"at y = 0 the L2 net answers {toy_fits['L2'][100]:+.3f}, a value x never takes")
fig, ax = plt.subplots(figsize=(6, 3.4))
ax.plot(grid, bimodal_posterior_mean(grid, sigma_toy), "k", lw=3, alpha=0.3, label="posterior mean tanh(y / sigma^2)")
ax.plot(grid, grid.sign(), "k--", lw=1, label="posterior median sign(y)")
ax.plot(grid, toy_fits["L2"], label="MLP trained with L2")
ax.plot(grid, toy_fits["L1"], label="MLP trained with L1")
ax.set_xlabel("observation y")
ax.set_ylabel("estimate of x")
ax.legend(fontsize=8)
plt.show()
assert l2_gap < 0.15

# %% [markdown]
# A common statement is "L1 regression returns the median, so with targets $\pm 1$ at probability $1/2$ it picks one of them".
# With no observation at all the L2 answer is the mean $0$, but the L1 loss $E|c - x| = \tfrac12|c + 1| + \tfrac12|c - 1|$ equals $1$ for
# *every* $c \in [-1, 1]$: every point of the interval is a median, and L1 does not choose. Only a tilt (an observation, or unequal
# probabilities) makes the median a single point. The check, on a grid of constant answers $c$:

# %%
constants = torch.linspace(-1.5, 1.5, 13)
l2_risk = 0.5 * (constants + 1) ** 2 + 0.5 * (constants - 1) ** 2
l1_risk = 0.5 * (constants + 1).abs() + 0.5 * (constants - 1).abs()
for c, r2, r1 in zip(constants, l2_risk, l1_risk):
    print(f"c = {c:+.2f}:  L2 risk {r2:.3f}   L1 risk {r1:.3f}")
assert constants[l2_risk.argmin()].abs() < 1e-6
inside = constants.abs() <= 1
assert torch.allclose(l1_risk[inside], torch.ones(int(inside.sum())))

# %% [markdown]
# **Exercise 1: the posterior mean of the toy.** *Derive, then check.* From $p(x = \pm 1) = 1/2$ and $y = x + n$, write
# $p(x = +1 \mid y)$ by Bayes, simplify $E[x \mid y] = p(+1 \mid y) - p(-1 \mid y)$ and code it as `my_posterior_mean(y, sigma)` (a tensor `y`, a float
# `sigma`; the same shape out). The check compares it with the reference on three noise levels.

# %% tags=["exercise"]
def my_posterior_mean(y, sigma):
    """E[x | y] for x = +-1 (probability 1/2 each), y = x + N(0, sigma^2)."""
    ### BEGIN SOLUTION
    likelihood_plus = torch.exp(-(y - 1) ** 2 / (2 * sigma**2))
    likelihood_minus = torch.exp(-(y + 1) ** 2 / (2 * sigma**2))
    return (likelihood_plus - likelihood_minus) / (likelihood_plus + likelihood_minus)
    ### END SOLUTION


# %%
check_posterior_mean(my_posterior_mean)

# %%
course_lib.core.check.show_solution(course_lib.topics.restoration.bimodal_posterior_mean)

# %% [markdown]
# ### A.3 A posterior we can compute: digits from a finite prior
#
# On real images $E[x \mid y]$ is out of reach, but it is exact when the prior is a finite set. Let $x$ be one of $N$ training
# digits $x_1, \dots, x_N$, each with probability $1/N$, and observe $y = A(x_i) + n$. Bayes gives weights and the posterior mean:
#
# $$
# p(x_i \mid y) = \frac{\exp\!\big(-\|y - A(x_i)\|^2 / 2\sigma^2\big)}{\sum_j \exp\!\big(-\|y - A(x_j)\|^2 / 2\sigma^2\big)}, \qquad
# E[x \mid y] = \sum_i p(x_i \mid y)\, x_i .
# $$
#
# For denoising ($A$ = identity), $p(y) = \frac1N \sum_i \mathcal{N}(y; x_i, \sigma^2 I)$ and $\nabla_y \log p(y) = \sum_i p(x_i \mid y)\,(x_i - y) / \sigma^2$, so
#
# $$
# E[x \mid y] = y + \sigma^2\, \nabla_y \log p(y) ,
# $$
#
# **Tweedie's formula** of chapter 10: an L2 denoiser *is* a score model in disguise. The check: the Bayes weights against
# Tweedie with the score by autograd (chapter 10's `tweedie_denoise`), at heavy noise $\sigma = 2$.

# %%
prior = x_train[:cfg.prior_size]                                  # (N, 1, 28, 28): the whole prior
picked = torch.randint(cfg.prior_size, (200,), generator=generator)
truth_prior = prior[picked]                                       # (200, 1, 28, 28) drawn from the prior
sigma_heavy = 2.0
noisy = observe(truth_prior, "denoise", sigma_heavy, generator)    # y = x + n
bayes = posterior_mean(noisy, prior, lambda v: v, sigma_heavy)    # sum_i p(x_i | y) x_i

y_leaf = noisy.double().requires_grad_(True)
log_p = torch.logsumexp(-torch.cdist(y_leaf.flatten(1), prior.flatten(1).double()) ** 2 / (2 * sigma_heavy**2), dim=1)
(score,) = torch.autograd.grad(log_p.sum(), y_leaf)                # grad_y log p(y), (200, 1, 28, 28)
tweedie = tweedie_denoise(noisy.double(), score, sigma_heavy)       # y + sigma^2 score
gap = (tweedie - bayes.double()).abs().max()
spread = effective_candidates(posterior_weights(noisy, prior, lambda v: v, sigma_heavy))
print(f"max |Tweedie - Bayes posterior mean| = {gap:.2e}; the posterior spreads over {spread.median():.1f} digits "
      f"(median of 1 / sum_i w_i^2)")
assert gap < 1e-4
assert torch.allclose(tweedie_denoiser(noisy, prior, sigma_heavy), tweedie, atol=1e-8)

# %% [markdown]
# Now the chapter's super-resolution task on the same prior, with noise $\sigma = 0.3$ on the $7 \times 7$ observation so that
# several digits stay plausible. Three numbers per image say what the posterior mean is: the expected squared error of
# the posterior mean is lower than that of a *sample* from the posterior (for any posterior, the sample's is exactly
# twice as large in expectation: $E\|x - x'\|^2 = 2\, E\|x - \mu\|^2$ for two independent draws), and its fraction of grey
# pixels (between 0.2 and 0.8) is higher than the truth's: that is the blur.

# %%
sigma_sr = 0.3
small_noisy = observe(truth_prior, "super_resolution", sigma_sr, generator)          # (200, 1, 7, 7)
weights_sr = posterior_weights(small_noisy, prior, downsample, sigma_sr)            # (200, N)
mean_sr = posterior_mean(small_noisy, prior, downsample, sigma_sr)                  # (200, 1, 28, 28)
sample_sr = prior[torch.multinomial(weights_sr, 1, generator=generator)[:, 0]]      # one posterior sample each


mse_mean = float(((mean_sr - truth_prior) ** 2).mean())
mse_sample = float(((sample_sr - truth_prior) ** 2).mean())
print(f"posterior over {effective_candidates(weights_sr).median():.1f} digits (median)")
print(f"squared error per pixel: posterior mean {mse_mean:.4f}, posterior sample {mse_sample:.4f} "
      f"(ratio {mse_sample / mse_mean:.2f}, expected 2)")
print(f"grey pixels: truth {grey_fraction(truth_prior):.3f}, posterior sample {grey_fraction(sample_sr):.3f}, "
      f"posterior mean {grey_fraction(mean_sr):.3f}")
assert mse_mean < mse_sample
assert grey_fraction(mean_sr) > grey_fraction(truth_prior)

# %% [markdown]
# A network trained with L2 on this very problem (digits from the prior, fresh noise every step) should learn the posterior
# mean. Train the chapter's restorer (built in B.1) on it and compare: a restorer that learned $E[x \mid y]$ lies closer to
# the posterior mean than to the truth.

# %%
prior_restorer, _ = train_restorer("l2", prior, steps=cfg.prior_steps, batch_size=64, width=32, noise_sigma=sigma_sr,
                                   seed=0, device=DEVICE)
learned = restore(prior_restorer, small_noisy)
to_mean = float(((learned - mean_sr) ** 2).mean())
to_truth = float(((learned - truth_prior) ** 2).mean())
print(f"L2 restorer ({cfg.prior_steps} steps): squared error per pixel to the posterior mean {to_mean:.4f}, "
      f"to the truth {to_truth:.4f}; the posterior mean's own error to the truth {mse_mean:.4f}")
if profile() == "ci":
    print("(ci profile: the restorer has trained for seconds and is far from either; run cpu for the real comparison)")
else:
    assert to_mean < to_truth
fig = show_rows([upsample(small_noisy.clamp(0, 1), "nearest"), sample_sr, mean_sr, learned, truth_prior],
                ["y (7x7, noisy)", "posterior sample", "posterior mean", "L2 restorer", "truth"])
plt.show()

# %% [markdown]
# ### A.4 Why an L2 colorizer paints grey
#
# A frequent question: why does a colorization network trained with L2 give brownish-grey pictures? Take one grey-level
# object whose true colour is any of several colours of the **same luminance** (a car can be red, blue, green, yellow):
# the grey-level input cannot tell them apart, so the posterior over colours is spread, and the L2 answer is their mean.
# Colours of equal luminance $Y$ differ only in their chroma $(U, V)$; spread around the hue circle, their chroma averages
# to about zero, and a colour with zero chroma is a grey, $R = G = B = Y$. The check: six equally likely colours of luminance
# $0.5$; gradient descent on the L2 loss of one constant answer lands on their mean, a grey.

# %%
hues = torch.arange(6) * (2 * math.pi / 6)
luminance, chroma = 0.5, 0.25
yuv = torch.stack([torch.full_like(hues, luminance), chroma * hues.cos(), chroma * hues.sin()], dim=1)  # (6, 3)
yuv_to_rgb = torch.tensor([[1.0, 0.0, 1.140], [1.0, -0.395, -0.581], [1.0, 2.032, 0.0]])            # BT.601
colours = yuv @ yuv_to_rgb.T                                                                         # (6, 3) RGB
answer = torch.zeros(3, requires_grad=True)
optimizer = torch.optim.SGD([answer], lr=0.1)
for _ in range(200):
    loss = ((answer - colours) ** 2).sum(1).mean()                  # L2 against each plausible colour
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print("plausible colours (RGB):", [tuple(round(v, 2) for v in c.tolist()) for c in colours])
print(f"the L2 answer: RGB = {tuple(round(v, 3) for v in answer.tolist())}, a grey of luminance {luminance}")
assert torch.allclose(answer.detach(), colours.mean(0), atol=1e-4)
assert torch.allclose(answer.detach(), torch.full((3,), luminance), atol=1e-4)
fig, ax = plt.subplots(figsize=(6, 1.2))
ax.imshow(torch.cat([colours, answer.detach()[None]]).clamp(0, 1)[None].numpy())
ax.set_xticks(range(7), [f"colour {i + 1}" for i in range(6)] + ["L2 answer"], fontsize=8)
ax.set_yticks([])
plt.show()

# %% [markdown]
# The remedies change the loss, not the network: Zhang et al. (2016) predict a *distribution* over quantised colours
# (a cross entropy, then a sharpened mean), pix2pix (Isola et al., 2017) adds an adversarial loss, and a diffusion model
# samples one plausible colouring instead of averaging them. Section B does the adversarial and perceptual versions for
# super-resolution.
#
# ---
# ## B. Perceptual and adversarial losses
#
# ### B.1 A small super-resolution restorer
#
# One network, three losses. The picture first: the restorer maps the $7 \times 7$ observation to a $28 \times 28$ digit; the L2 loss
# compares pixels, the perceptual loss compares the frozen classifier's feature maps, the adversarial loss asks a
# discriminator whether the output looks like a real digit.

# %%
fig = course_lib.topics.restoration.schematic()
plt.show()

# %% [markdown]
# The network (`course_lib.topics.restoration.Restorer`) works at low resolution first: three $3 \times 3$ convolutions at $7 \times 7$
# (their receptive field, 7 pixels, covers the whole input), then two transposed convolutions ($7 \to 14 \to 28$), each followed by a
# convolution. Its output is added, in logit space, to the bicubic upsampling of $y$, and a sigmoid keeps it in $[0, 1]$:
# the network only has to learn the correction to bicubic. Step by step, against the module:

# %%
restorer = course_lib.topics.restoration.Restorer(width=32)
y_batch = downsample(x_test[:16])                                       # (16, 1, 7, 7)
bicubic = F.interpolate(y_batch, scale_factor=4, mode="bicubic", align_corners=False)   # (16, 1, 28, 28)
low = restorer.low(y_batch)                                             # (16, 32, 7, 7)
correction = restorer.up(low)                                           # (16, 1, 28, 28)
by_hand = torch.sigmoid(torch.logit(bicubic.clamp(0.02, 0.98)) + correction)
with torch.no_grad():
    print(f"shapes: y {tuple(y_batch.shape)} -> low {tuple(low.shape)} -> correction {tuple(correction.shape)}; "
          f"max |by hand - module| = {(by_hand - restorer(y_batch)).abs().max():.1e}; "
          f"{sum(p.numel() for p in restorer.parameters()):,} weights")
    assert torch.allclose(by_hand, restorer(y_batch), atol=1e-6)

# %% [markdown]
# ### B.2 The perceptual loss
#
# Johnson et al. (2016) compare images through a frozen, trained network $\phi$ instead of pixel by pixel: with $\phi_j$ the
# feature map of layer $j$ (shape $C_j \times H_j \times W_j$),
#
# $$
# \ell_{feat}(\hat x, x) = \sum_j \frac{1}{C_j H_j W_j}\, \big\|\phi_j(\hat x) - \phi_j(x)\big\|^2 .
# $$
#
# They used VGG-16 trained on ImageNet; on digits the natural $\phi$ is the course's shipped MNIST classifier, the one FID
# uses. We take its two convolutional feature maps (after each conv + ReLU: $32 \times 28 \times 28$ and $64 \times 14 \times 14$). The
# restorer trains on L2 $+\ 1.0 \times \ell_{feat}$ (with a weight of 0.1 the shipped restorer's PSNR and FID barely moved
# from the L2 one's: measured). The check: the features and the loss by hand against the library.

# %%
x_pair, x_hat_pair = x_test[:16].to(DEVICE), restorer(y_batch).detach().to(DEVICE)
first = F.relu(classifier.body[0](x_pair))                      # (16, 32, 28, 28)
second = F.relu(classifier.body[3](F.max_pool2d(first, 2)))      # (16, 64, 14, 14)
first_hat = F.relu(classifier.body[0](x_hat_pair))
second_hat = F.relu(classifier.body[3](F.max_pool2d(first_hat, 2)))
loss_by_hand = ((first_hat - first) ** 2).mean() + ((second_hat - second) ** 2).mean()
library = perceptual_loss(classifier, x_hat_pair, x_pair)
print(f"perceptual loss by hand {loss_by_hand:.6f}, library {library:.6f}; feature shapes "
      f"{[tuple(f.shape) for f in perceptual_features(classifier, x_pair)]}")
assert torch.allclose(loss_by_hand, library, rtol=1e-5)

# %% [markdown]
# What the perceptual loss forgives that L2 does not: move a digit by one pixel, and blur it until the pixel error is at
# least as large. Per unit of pixel error, the perceptual loss punishes the blur more than the shift: the classifier's
# features barely change when a stroke moves by a pixel, and change a lot when strokes fade.

# %%
clean = x_test[:200].to(DEVICE)
shifted = torch.roll(clean, shifts=1, dims=3)                      # one pixel to the right
pixel_error_shift = F.mse_loss(shifted, clean)
blurred = clean
for width in (3, 5, 7, 9, 11):                                     # the first box blur with at least the same L2 error
    blurred = box_blur(clean, width)
    if F.mse_loss(blurred, clean) >= pixel_error_shift:
        break
ratios = {}
for name, damaged in (("shifted 1 pixel", shifted), (f"box blur {width}x{width}", blurred)):
    l2, perceptual = F.mse_loss(damaged, clean), perceptual_loss(classifier, damaged, clean)
    ratios[name] = float(perceptual / l2)
    print(f"{name:>16}: L2 {l2:.4f}   perceptual {perceptual:.4f}   perceptual / L2 = {ratios[name]:.2f}")
assert ratios["shifted 1 pixel"] < ratios[f"box blur {width}x{width}"]

# %% [markdown]
# ### B.3 The adversarial loss
#
# A discriminator $D$ (chapter 09's DCGAN discriminator) learns to tell real digits from restored ones, and the restorer
# adds chapter 09's non-saturating generator loss $-\log D(\hat x)$ to its objective. Two published recipes set the balance:
# pix2pix (Isola et al., 2017) trains $\mathcal{L}_{cGAN} + \lambda\, \mathcal{L}_{L1}$ with $\lambda = 100$ and a *conditional* $D$ that also sees the
# input; SRGAN (Ledig et al., 2017) adds $10^{-3} \times$ the adversarial loss to a content loss on VGG features. The weights depend on
# the scale of the other terms, so they do not transfer as numbers; ours is L2 $+\ 0.01 \times (-\log D(\hat x))$ with an
# unconditional $D$. The check: the loss by hand; and the size of each term's gradient in the restorer's weights. At
# initialisation $D$ is untrained and nearly flat, so its gradient is small; it grows as $D$ learns to separate real digits
# from restored ones, which is when the adversarial term starts to pull.

# %%
discriminator = DCGANDiscriminator(width=32).to(DEVICE)
x_real = x_test[:16].to(DEVICE)
x_hat = restorer.to(DEVICE)(y_batch.to(DEVICE))                         # (16, 1, 28, 28), with gradient
d_logits = discriminator(2 * x_hat - 1)                                 # chapter 09 works in [-1, 1]
by_hand = F.mse_loss(x_hat, x_real) + 0.01 * F.softplus(-d_logits).mean()   # -log sigmoid(l) = softplus(-l)
library = restorer_loss("adversarial", x_hat, x_real, discriminator=discriminator, adversarial_weight=0.01)
assert torch.allclose(by_hand, library, rtol=1e-6)
gradient_norms = {}
for name, term in (("L2", F.mse_loss(x_hat, x_real)), ("0.01 x adversarial", 0.01 * generator_loss(d_logits))):
    grads = torch.autograd.grad(term, list(restorer.parameters()), retain_graph=True)
    gradient_norms[name] = float(torch.cat([g.flatten() for g in grads]).norm())
print(f"loss by hand {by_hand.item():.5f} = library {library.item():.5f}; gradient norms at initialisation: "
      + ", ".join(f"{k} {v:.2e}" for k, v in gradient_norms.items()))

# %% [markdown]
# ### B.4 Three losses, one restorer: PSNR, FID and pictures
#
# Train the restorer three times, with the same data, steps and seed: L2, L2 + perceptual, L2 + adversarial. Two numbers
# measure each. **PSNR** $= -10 \log_{10} \mathrm{MSE}$ (pixels in $[0, 1]$, averaged over images) measures *distortion*, the distance to
# the truth; the L2 restorer is trained for it. **FID** on the classifier's features (chapter 11) measures how far the
# *distribution* of restored digits is from real ones, whatever digit each came from: a *perception* score. Its floor is
# the FID of a perfect restorer, the truth itself, against a disjoint set of real digits. First the chapter's own short runs:

# %%
chapter_restorers = {}
for kind in LOSS_KINDS:
    chapter_restorers[kind], _ = train_restorer(kind, x_train, steps=cfg.restorer_steps, batch_size=32, width=32,
                                                seed=0, device=DEVICE, classifier=classifier)
truth_eval, reference_eval = benchmark_split(cfg.n_eval)                # two disjoint sets of real test digits
small_eval = downsample(truth_eval)
chapter_rows = evaluate_restorations({k: restore(m, small_eval) for k, m in chapter_restorers.items()},
                                     truth_eval, reference_eval, classifier)
for name, row in chapter_rows.items():
    print(f"{name:>12} ({cfg.restorer_steps} steps): PSNR {row['psnr']:6.2f} dB, FID {row['fid']:7.2f}")
if profile() == "ci":
    print("(ci profile: a few steps only, these restorers are barely trained; the shipped ones follow)")

# %% [markdown]
# And the shipped restorers (1,500 steps each), with the no-learning baselines: nearest-neighbour and bicubic upsampling.

# %%
shipped_restorations = {kind: restore(model, small_eval) for kind, model in restorers.items()}
baselines = {"nearest": upsample(small_eval, "nearest"), "bicubic": upsample(small_eval, "bicubic")}
rows = evaluate_restorations({**baselines, **shipped_restorations}, truth_eval, reference_eval, classifier)
print(f"n = {cfg.n_eval} test digits; FID floor (the truth itself) = {rows['truth']['fid']:.2f}")
for name, row in rows.items():
    print(f"{name:>12}: PSNR {row['psnr']:6.2f} dB   FID {row['fid']:8.2f}")
best_psnr = max(LOSS_KINDS, key=lambda k: rows[k]["psnr"])
best_fid = min(LOSS_KINDS, key=lambda k: rows[k]["fid"])
print(f"highest PSNR: {best_psnr}; lowest FID: {best_fid}")
assert all(rows[k]["psnr"] > rows["bicubic"]["psnr"] + 3 and rows[k]["fid"] < rows["nearest"]["fid"] for k in LOSS_KINDS)
assert rows["l2"]["psnr"] > rows["adversarial"]["psnr"] + 0.5 and abs(rows["l2"]["psnr"] - rows["perceptual"]["psnr"]) < 0.2
assert rows["adversarial"]["fid"] < rows["perceptual"]["fid"] < rows["l2"]["fid"]
assert rows["nearest"]["fid"] < rows["bicubic"]["fid"]
fig = show_rows([baselines["nearest"], *shipped_restorations.values(), truth_eval],
                ["input (nearest)", *LOSS_KINDS, "truth"])
plt.show()

# %% [markdown]
# Read the table with the pictures. All three restorers beat both baselines by more than 3 dB of PSNR and by an order
# of magnitude in FID. Among them, the L2 and perceptual restorers have the same PSNR to within 0.2 dB, and the
# perceptual one a clearly lower FID: on this task, matching the classifier's features came almost for free in pixel
# error. The adversarial restorer gives up more than half a decibel of PSNR (about 1 dB here) for the FID closest to the
# floor. One more thing the numbers show: nearest-neighbour upsampling has a *lower* FID than bicubic, although its PSNR
# is lower: blocky digits with hard edges look more like digits, to the classifier, than smooth grey ones.
#
# ### B.5 The perception-distortion trade-off
#
# Blau and Michaeli (2018) proved that distortion (here, MSE) and perceptual quality (how far the output distribution is
# from the real one) cannot both be optimal: below some distortion, every estimator must produce outputs whose
# distribution differs from the data's. The posterior mean sits at minimum distortion; a sample from the posterior has
# the data's distribution but twice the squared error (A.3). Plot the restorers in that plane: PSNR to the right is less
# distortion, FID down is better perception.

# %%
fig, ax = plt.subplots(figsize=(6, 4))
for name in ("nearest", "bicubic", *LOSS_KINDS):
    ax.scatter(rows[name]["psnr"], rows[name]["fid"], s=40)
    ax.annotate(name, (rows[name]["psnr"], rows[name]["fid"]), textcoords="offset points", xytext=(5, 5), fontsize=9)
ax.axhline(rows["truth"]["fid"], color="k", ls=":", lw=1, label="FID floor (the truth)")
ax.set_xlabel("PSNR (dB): less distortion to the right")
ax.set_ylabel("FID (classifier features): better down")
ax.set_yscale("log")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Pick a digit and look at each restorer's answer beside the input and the truth; the last panel is the absolute error
# of the chosen loss's output.

# %%
widget_truth = x_test[:32]
widget_small = downsample(widget_truth)
widget_outputs = {kind: restore(model, widget_small) for kind, model in restorers.items()}


def draw_restorers(axes, digit, loss):
    panels = [("input (7x7)", upsample(widget_small, "nearest")[digit, 0])]
    panels += [(kind, widget_outputs[kind][digit, 0]) for kind in LOSS_KINDS]
    panels += [("truth", widget_truth[digit, 0]), (f"|{loss} - truth|", (widget_outputs[loss] - widget_truth)[digit, 0].abs())]
    for ax, (title, image) in zip(axes, panels):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.set_title(title + (" *" if title == loss else ""), fontsize=9)
        ax.axis("off")


course_lib.core.widgets.interactive_figure(
    draw_restorers, ncols=6, figsize=(11, 2.3),
    digit=ipywidgets.IntSlider(value=0, min=0, max=31, description="digit"),
    loss=ipywidgets.Dropdown(options=list(LOSS_KINDS), value="adversarial", description="loss"))

# %% [markdown]
# ---
# ## C. Diffusion as a restorer: a super-resolution cascade and colorization
#
# Section A (A.2) showed that a network trained with an L2 loss returns the posterior mean $\mathbb{E}[x \mid y]$, and that
# the mean of a spread-out posterior is a blurry or greyish image that no single clean image looks like. A
# *conditional* diffusion model gives the alternative: a **draw** from $p(x \mid y)$. This section builds three
# restorers from chapters 11 and 12's pieces (the noise schedule, $L_\text{simple}$, DDIM, the U-Net, replacement
# inpainting):
#
# - **C.1 SR3** (Saharia et al. 2021): super-resolution 14x14 $\to$ 28x28, the low-resolution image concatenated to
#   the network's input;
# - **C.2 a cascade** (Ho et al. 2022): a small 14x14 model generates, the SR model upsamples, and *noise-conditioning
#   augmentation* keeps the second stage from copying the first stage's mistakes;
# - **C.3 colorization** (Song et al. 2021): an *unconditional* model of colour scenes, steered by replacing the one
#   coordinate we know, the gray value.
#
# The pictures come from three shipped models (`sr3_mnist`, `cascade_base_mnist`, `colorize_shapes`); what you train
# here (the L2 baselines) takes seconds.

# %%
import torch.nn.functional as F

import course_lib.core.check
import course_lib.topics.sr3
from course_lib import profile
from course_lib.core.layers import to_model_range, to_pixel_range
from course_lib.core.plotting import image_grid
from course_lib.core.train import fit, minibatches
from course_lib.data import load_mnist
from course_lib.eval.fid import fid, quality_of_samples, real_split, shipped_classifier
from course_lib.topics.diffusion import NoiseSchedule, ddim_sample
from course_lib.topics.sr3 import (L2Regressor, augment_low_res, cascade_sample, chroma, colorize,
                                   colorize_schematic, consistency_error, from_gray_chroma,
                                   gray_chroma_basis, gray_of, shapes_scenes, sr3_loss,
                                   sr3_schematic, super_resolve, to_gray_chroma)
from course_lib.topics.sr3 import downsample as sr3_downsample  # 2x2 average, 28 -> 14 (A's downsample is 4x)
from course_lib.topics.sr3 import upsample as sr3_upsample  # bicubic, 14 -> 28 (A's upsample takes a mode)
from course_lib.zoo import load_ddpm_mnist, load_shipped

cfg_c = per_profile(
    ci=dict(n_digits=6, n_draws=6, l2_steps=40, fid_n=30, ddim_steps=10, n_scenes=6, n_colour_train=500),
    cpu=dict(n_digits=8, n_draws=16, l2_steps=600, fid_n=200, ddim_steps=25, n_scenes=8, n_colour_train=4000),
    gpu=dict(n_digits=8, n_draws=32, l2_steps=3000, fid_n=500, ddim_steps=25, n_scenes=8, n_colour_train=20000))
schedule_c = NoiseSchedule.linear(1000)  # the schedule all three shipped models were trained with
sr_model = load_shipped("sr3_mnist", DEVICE)  # SR3UNet, EMA weights
mnist_test = load_mnist("test")[0]  # (10000, 1, 28, 28) in [0, 1]
print(cfg_c)

# %% [markdown]
# ### C.1 SR3: a conditional noise predictor
#
# The task: given a 14x14 image $y = D(x)$, where $D$ averages each 2x2 block of the 28x28 digit $x$, produce $x$.
# Many $x$ share one $y$ (the sub-pixel detail is gone), so the answer is a distribution $p(x \mid y)$.
#
# SR3 trains chapter 11's noise predictor with one change: the network also sees $y$, upsampled (bicubic) to 28x28 and
# **concatenated to $x_t$ as a second input channel**. The loss is $L_\text{simple}$ with the condition added,
#
# $$L = \mathbb{E}_{x, t, \epsilon}\, \big\lVert \epsilon - \epsilon_\theta(x_t, y, t) \big\rVert^2, \qquad
#   x_t = \sqrt{\bar\alpha_t}\, x + \sqrt{1 - \bar\alpha_t}\, \epsilon, \quad y = D(x),$$
#
# and sampling is DDIM with $y$ held fixed at every step. The schematic also shows C.2's additions (the level $s$).
#
# The shipped `sr3_mnist` trained for only 500 steps on two CPU cores, and its plain sampler leaves some noise in
# the background (you will see it below). A cheap fix, used for most pictures here, is chapter 12's replacement idea
# applied to a low-pass "mask" (Choi et al. 2021, ILVR): after every DDIM step, replace the 2x2 averages of $x_{t'}$ by
# those of the forward-noised $y$, $D(x_{t'}) \leftarrow \sqrt{\bar\alpha_{t'}}\, y + \sqrt{1-\bar\alpha_{t'}}\, \epsilon/2$ (a 2x2
# average of unit noise has standard deviation $1/2$), keeping the detail inside each block
# (`super_resolve(..., project=True)`).

# %%
sr3_schematic()
plt.show()

# %% [markdown]
# The loss, step by step, for one batch of real digits, next to the library's `sr3_loss` with the same random draws:

# %%
x_real = to_model_range(mnist_test[:16]).to(DEVICE)  # (16, 1, 28, 28) in [-1, 1]
y_real = sr3_downsample(x_real)  # (16, 1, 14, 14): D(x), 2x2 averages
print("network input: x_t", tuple(x_real.shape), "+ sr3_upsample(y)", tuple(sr3_upsample(y_real).shape), "->",
      tuple(torch.cat([x_real, sr3_upsample(y_real)], 1).shape))
draws = torch.Generator().manual_seed(3)
t_batch = torch.randint(1, schedule_c.T + 1, (16,), generator=draws)
eps = torch.randn(x_real.shape, generator=draws).to(DEVICE)
alpha_bar = schedule_c.alpha_bars[t_batch].float().to(DEVICE)[:, None, None, None]
x_t = alpha_bar.sqrt() * x_real + (1 - alpha_bar).sqrt() * eps
with torch.no_grad():
    loss_by_hand = ((eps - sr_model(x_t, t_batch.to(DEVICE), y_real)) ** 2).mean()
    loss_library = sr3_loss(sr_model, x_real, y_real, schedule_c, generator=torch.Generator().manual_seed(3))
print(f"L by hand {loss_by_hand:.5f}, sr3_loss {loss_library:.5f}")
assert torch.allclose(loss_by_hand, loss_library, atol=1e-5)

# %% [markdown]
# **Several answers for one $y$.** Each row below is one test digit: its 14x14 input (shown at 28x28), the bicubic
# upsampling, one sample of the plain sampler, then independent samples with the projection (DDIM, each from its own
# $x_T$), then the true $x$.

# %%
n_digits, n_draws = cfg_c.n_digits, cfg_c.n_draws
y_few = y_real[:n_digits]
plain_sr = super_resolve(sr_model, y_few, schedule_c, steps=cfg_c.ddim_steps, generator=torch.Generator().manual_seed(0))
draws_sr = torch.stack([super_resolve(sr_model, y_few, schedule_c, steps=cfg_c.ddim_steps, project=True,
                                      generator=torch.Generator().manual_seed(k)) for k in range(n_draws)], 1)
# draws_sr: (n_digits, n_draws, 1, 28, 28)
shown = torch.cat([F.interpolate(y_few, scale_factor=2, mode="nearest")[:, None], sr3_upsample(y_few)[:, None],
                   plain_sr[:, None], draws_sr[:, :4], x_real[:n_digits, None]], 1)  # (n_digits, 8, 1, 28, 28)
fig, ax = plt.subplots(figsize=(7, 0.95 * n_digits))
image_grid(to_pixel_range(shown.flatten(0, 1)).cpu(), nrow=n_digits, ax=ax)
ax.set_title("y (14x14) | bicubic | plain SR3 | four SR3 samples, projected | true x")
plt.show()
spread = draws_sr.std(1).mean()  # per-pixel standard deviation across the samples of one y, averaged
print(f"per-pixel spread across the {n_draws} samples of one y: {float(spread) / 2:.4f} (pixel units, [0, 1])")
assert spread > 1e-3

# %% [markdown]
# The samples differ only in the detail that $y$ leaves open (the edges of the strokes, a pixel here and there; the
# printed spread says how much): at 14x14 most of a digit is still there.
#
# **Consistency.** A sample should explain its input: $D(\hat x) \approx y$. The error $\mathrm{RMS}(D(\hat x) - y)$
# in pixel units, for the plain SR3 sampler, for the projected samples (0 up to rounding, by construction), for
# bicubic upsampling (which is *not* exactly consistent: bicubic weights reach beyond the 2x2 block) and for the
# true $x$ (0 by definition); and the distance to the true $x$:

# %%
consistency_sr = consistency_error(draws_sr.flatten(0, 1), y_few.repeat_interleave(n_draws, 0))
consistency_plain = consistency_error(plain_sr, y_few)
consistency_bicubic = consistency_error(sr3_upsample(y_few), y_few)
print(f"RMS(D(x_hat) - y): plain SR3 {consistency_plain:.4f}, projected SR3 {consistency_sr:.1e}, "
      f"bicubic {consistency_bicubic:.4f}, true x {consistency_error(x_real[:n_digits], y_few):.1e}")


def rms_to_truth(images):
    """RMS distance (pixel units) of (n_digits, 1, 28, 28) images to the true digits."""
    return float(((images - x_real[:n_digits]) ** 2).mean().sqrt() / 2)


print(f"RMS(x_hat - true x): plain SR3 {rms_to_truth(plain_sr):.4f}, projected SR3 {rms_to_truth(draws_sr[:, 0]):.4f}, "
      f"bicubic {rms_to_truth(sr3_upsample(y_few)):.4f}")
assert consistency_error(x_real, y_real) < 1e-6
assert consistency_sr < 1e-4  # the projection makes D(x_hat) = y up to rounding

# %% [markdown]
# **A sample is not the posterior mean.** An L2 regressor $y \mapsto x$, trained now, aims at $\mathbb{E}[x \mid y]$
# (section A). (So, in principle, does the network itself at $t = T$, where $x_T$ is almost pure noise; but
# $\hat x_0 = (x_T - \sqrt{1-\bar\alpha_T}\,\hat\epsilon)/\sqrt{\bar\alpha_T}$ multiplies the noise predictor's error by
# $1/\sqrt{\bar\alpha_T} \approx 160$, so that estimate is useless in practice.) If SR3 samples are draws from $p(x \mid y)$, their
# average over $K$ draws approaches $\mathbb{E}[x \mid y]$ as $K$ grows, while any single draw stays a sharp image at
# a distance from it.

# %%
def train_l2(inputs_fn, targets, in_channels, out_channels, steps, seed=0):
    """A small CNN fitted with the plain L2 loss: it estimates E[target | input]."""
    generator = seed_everything(seed)
    model = L2Regressor(in_channels, out_channels).to(DEVICE)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    batches = minibatches(targets, batch_size=64, generator=generator)
    fit(model, lambda m, b: ((m(inputs_fn(b[0])) - b[0]) ** 2).mean(), batches, steps=steps, optimizer=optimizer,
        device=DEVICE, desc="L2 regressor", show_progress=steps > 100)
    return model.eval()


sr_train = to_model_range(load_mnist("train")[0][:20_000])
l2_sr = train_l2(lambda x: sr3_upsample(sr3_downsample(x)), sr_train, 1, 1, cfg_c.l2_steps)
with torch.no_grad():
    l2_answer = l2_sr(sr3_upsample(y_few)).clamp(-1, 1)  # (n_digits, 1, 28, 28)
ks = [k for k in (1, 2, 4, 8, 16, 32) if k <= n_draws]
distance_to_l2 = [float(((draws_sr[:, :k].mean(1) - l2_answer) ** 2).mean().sqrt() / 2) for k in ks]
for k, d_l2 in zip(ks, distance_to_l2):
    print(f"K = {k:2d}: RMS(mean of K samples - L2 regressor) = {d_l2:.4f} (pixel units)")
assert distance_to_l2[-1] < distance_to_l2[0]


def edge_energy(images):
    """Mean squared difference of neighbouring pixels (pixel units): high for sharp strokes, low for blur."""
    return float(((images[..., 1:, :] - images[..., :-1, :]) ** 2).mean() / 4)


sharp = {"one SR3 sample": edge_energy(draws_sr[:, 0]), f"mean of {n_draws} samples": edge_energy(draws_sr.mean(1)),
         "L2 regressor": edge_energy(l2_answer), "true x": edge_energy(x_real[:n_digits])}
print("edge energy:", ", ".join(f"{k} {v:.4f}" for k, v in sharp.items()))
assert sharp["one SR3 sample"] > sharp[f"mean of {n_draws} samples"]
fig, ax = plt.subplots(figsize=(5, 0.95 * n_digits))
image_grid(to_pixel_range(torch.stack([draws_sr[:, 0], draws_sr.mean(1), l2_answer, x_real[:n_digits]], 1)
                          .flatten(0, 1)).cpu(), nrow=n_digits, ax=ax)
ax.set_title("one sample | mean of samples | L2 regressor | true x")
plt.show()
if profile() == "ci":
    print(f"(ci: the L2 regressor trained for only {cfg_c.l2_steps} steps; the cpu profile trains it for 600.)")

# %% [markdown]
# Read the numbers: the average of more samples comes closer to the L2 answer, and it *loses* edge energy: averaging
# draws that disagree about the fine detail blurs it, as the L2 regressor does. A single sample's edge energy is close
# to a real digit's. Which one you want depends on the use: the mean minimises the expected squared error, a sample is
# a plausible image (B.5's perception-distortion trade-off).
#
# **Exercise 1: the consistency error.** *Derive, then check.* Write `my_consistency_error(x, y)`: the RMS, in pixel
# units, of $D(x) - y$ for 28x28 images $x$ and 14x14 images $y$ both in $[-1, 1]$ ($D$ = 2x2 average; a difference of
# 2 in model units is 1 in pixel units).

# %% tags=["exercise"]
def my_consistency_error(x, y):
    """RMS(D(x) - y) in pixel units; x (N, 1, 28, 28), y (N, 1, 14, 14), both in [-1, 1]."""
    ### BEGIN SOLUTION
    pooled = x.reshape(x.shape[0], x.shape[1], 14, 2, 14, 2).mean((3, 5))
    return float(((pooled - y) ** 2).mean().sqrt()) / 2
    ### END SOLUTION


# %%
course_lib.topics.sr3.check_downsample_consistency(my_consistency_error)

# %%
course_lib.core.check.show_solution(course_lib.topics.sr3.consistency_error)

# %% [markdown]
# ### C.2 A cascade, and noise-conditioning augmentation
#
# A **cascade** (Ho et al. 2022) splits generation by resolution: stage 1 generates a 14x14 digit of a given class
# (`cascade_base_mnist`, chapter 11's U-Net with one level fewer), stage 2 is the SR model above. Each stage is small
# and trains on its own.
#
# The catch: stage 2 was trained on $y = D(x)$ of *real* digits, and at sampling time it receives stage 1's output,
# which has small artefacts of its own. A super-resolver that trusts its input exactly copies (and sharpens) them.
# **Noise-conditioning augmentation** trains stage 2 on a noised condition,
#
# $$\tilde y = \sqrt{\bar\alpha_s}\, y + \sqrt{1 - \bar\alpha_s}\, \epsilon, \qquad s \sim \mathcal{U}\{1, \dots, s_\text{max}\}
#   \text{ (half of the batch; } s = 0 \text{, } \tilde y = y \text{ for the rest)},$$
#
# and gives $s$ to the network as a second "time" input. At sampling time $s$ is a hyperparameter: noising stage 1's
# output to level $s$ drowns its small artefacts, and the network, told $s$, knows not to trust the fine detail of
# $\tilde y$. The shipped `sr3_mnist` was trained this way with $s_\text{max} = 250$.
#
# **Exercise 2: the augmentation.** *Derive, then check.* Write `my_augment(y, s, schedule, noise)` that returns
# $\tilde y$ for one integer level $s$ (use `schedule.alpha_bars`); $s = 0$ must give $y$ back.

# %% tags=["exercise"]
def my_augment(y, s, schedule, noise):
    """y_tilde = sqrt(abar_s) y + sqrt(1 - abar_s) noise, for an integer level s in 0..T."""
    ### BEGIN SOLUTION
    abar = float(schedule.alpha_bars[s])
    return abar ** 0.5 * y + (1 - abar) ** 0.5 * noise
    ### END SOLUTION


# %%
course_lib.topics.sr3.check_augment(my_augment)

# %%
course_lib.core.check.show_solution(course_lib.topics.sr3.augment_low_res)

# %% [markdown]
# *Predict, then run.* Give the SR model a stage-1-like input: the real $y$ with a small artefact added (Gaussian
# speckle of standard deviation 0.15 in model units). Which level, $s = 0$ or $s = 100$, will give a 28x28 image
# closer to the true $x$? Which will be more consistent with the *speckled* $y$? Predict both, then run.

# %%
speckle = 0.15 * torch.randn(y_few.shape, generator=torch.Generator().manual_seed(9)).to(DEVICE)
y_speckled = (y_few + speckle).clamp(-1, 1)
augmentation_rows = {}
for s in (0, 100):
    restored = super_resolve(sr_model, y_speckled, schedule_c, steps=cfg_c.ddim_steps, aug=s,
                             generator=torch.Generator().manual_seed(0))
    augmentation_rows[s] = restored
    error_to_truth = float(((restored - x_real[:n_digits]) ** 2).mean().sqrt() / 2)
    print(f"s = {s:3d}: RMS(x_hat - true x) = {error_to_truth:.4f}, "
          f"consistency with the speckled y = {consistency_error(restored, y_speckled):.4f}, "
          f"with the clean y = {consistency_error(restored, y_few):.4f}")
speckle_kept = {s: float((sr3_downsample(r) - y_few).mul(speckle).mean() / speckle.pow(2).mean())
                for s, r in augmentation_rows.items()}  # regression slope of the output's 2x2 averages on the speckle
print("fraction of the speckle reproduced in D(x_hat): " + ", ".join(f"s = {s}: {v:.2f}" for s, v in speckle_kept.items()))
if speckle_kept[100] < speckle_kept[0]:
    print("-> with s = 100 the model reproduces less of the artefact than with s = 0")
else:
    print("-> here s = 100 does not reduce the artefact: this briefly trained SR model has not learned to use s")
fig, ax = plt.subplots(figsize=(4, 0.95 * n_digits))
image_grid(to_pixel_range(torch.stack([sr3_upsample(y_speckled), augmentation_rows[0], augmentation_rows[100],
                                       x_real[:n_digits]], 1).flatten(0, 1)).cpu(), nrow=n_digits, ax=ax)
ax.set_title("speckled y | s = 0 | s = 100 | true x")
plt.show()

# %% [markdown]
# What to expect from a well-trained model: with $s = 0$ it takes the speckle for detail and reproduces it (its output
# is the most consistent with the speckled input: it explains the artefact); with $s > 0$ it redraws the fine detail,
# so it is less faithful to $y$'s exact pixels and closer to a clean digit. That is the trade-off $s$ controls. The
# printed fraction of the speckle that survives says how far the shipped model, trained for 500 steps on two CPU cores,
# has got.
#
# **The whole cascade.** Stage 1 draws 14x14 digits of the classes 0-9 in turn, stage 2 upsamples them (with the
# projection) at $s = 0$ and at $s = 100$; the shipped 28x28 `ddpm_mnist` of chapter 11 samples at the same $n$ with
# the same DDIM steps. FID on the course's classifier features (chapter 11), against the real-vs-real floor at the
# same $n$:

# %%
base_model = load_shipped("cascade_base_mnist", DEVICE)
fid_n = cfg_c.fid_n
cascade_labels = torch.arange(fid_n) % 10
cascade_quality, cascade_high = {}, {}
for s in (0, 100):
    low, high = cascade_sample(base_model, sr_model, cascade_labels, schedule_c, steps=cfg_c.ddim_steps, aug=s,
                               project=True, generator=torch.Generator().manual_seed(0))
    cascade_quality[s], cascade_high[s] = quality_of_samples(to_pixel_range(high).cpu()), high
ddpm_model, ddpm_schedule, _ = load_ddpm_mnist(DEVICE)
ddpm_samples = ddim_sample(ddpm_model, (fid_n, 1, 28, 28), ddpm_schedule, steps=cfg_c.ddim_steps,
                           generator=torch.Generator().manual_seed(0), device=DEVICE, show_progress=False)
ddpm_quality = quality_of_samples(to_pixel_range(ddpm_samples).cpu())
print(f"n = {fid_n}, DDIM-{cfg_c.ddim_steps}: FID cascade s=0 {cascade_quality[0]['fid']:.1f}, "
      f"cascade s=100 {cascade_quality[100]['fid']:.1f}, ddpm_mnist {ddpm_quality['fid']:.1f}, "
      f"real-vs-real floor {ddpm_quality['fid_floor']:.1f}")
fig, axes = plt.subplots(1, 2, figsize=(9, 2.2))
image_grid(to_pixel_range(low[:20]).cpu(), nrow=2, ax=axes[0])
axes[0].set_title("stage 1: 14x14 samples")
image_grid(to_pixel_range(cascade_high[0][:20]).cpu(), nrow=2, ax=axes[1])
axes[1].set_title("stage 2 (s = 0): 28x28")
plt.show()
best_s = min(cascade_quality, key=lambda s: cascade_quality[s]["fid"])
verdict = "beats" if cascade_quality[best_s]["fid"] < ddpm_quality["fid"] else "does not beat"
print(f"the cascade's best level here is s = {best_s}; it {verdict} the single-stage ddpm_mnist at this n")

# %% [markdown]
# Two caveats to read these numbers with. The projection forces the 2x2 averages of the sample onto the *noised*
# $\tilde y$ when $s > 0$, so it copies that noise into the sample (visible as a grainy background): with the
# projection, $s > 0$ is at a disadvantage, and the projection is a patch for this briefly trained SR model, not part
# of Ho et al.'s recipe. And both shipped cascade stages trained for minutes (500 and 800 steps), `ddpm_mnist` for
# 15,000 steps: the comparison is of budgets as much as of designs.
if fid_n < 200:
    print(f"(n = {fid_n}: FIDs this small-sample are noisy; compare them with the floor, and see the bench "
          "row of cascade_base_mnist for a larger n.)")

# %% [markdown]
# ### C.3 Colorization by replacing the gray coordinate
#
# The scenes of chapter 06, at 28x28: one or two shapes of a **random colour** (each channel uniform in $[0.5, 1]$) on
# a dark background. Given only the gray image, what colour was the square? The gray value fixes $r + g + b$; the
# rest is a coin toss. So the posterior mean of the colour is the same for every hue direction, that is, **grey**: an
# L2 colorizer paints every shape grey. A diffusion sampler picks one saturated colour.
#
# Song et al. (2021) colorize with an *unconditional* model of colour scenes. Change coordinates with the orthogonal
# matrix $Q$ whose first row is the gray axis,
#
# $$z = Q\, \mathrm{rgb}, \qquad Q = \begin{pmatrix} 1/\sqrt3 & 1/\sqrt3 & 1/\sqrt3 \\ 1/\sqrt2 & -1/\sqrt2 & 0 \\
#   1/\sqrt6 & 1/\sqrt6 & -2/\sqrt6 \end{pmatrix}, \qquad \mathrm{rgb} = Q^\top z,$$
#
# so $z_1 = (r + g + b)/\sqrt3$ is the gray coordinate and $(z_2, z_3)$ the chroma. Colorization is then chapter 12's
# inpainting with "known pixels" replaced by "known coordinate": at every step, $z_1$ of $x_{t'}$ is overwritten by
# the forward-noised known gray, $\sqrt{\bar\alpha_{t'}}\, g + \sqrt{1 - \bar\alpha_{t'}}\, \epsilon$. Because $Q$ is
# orthogonal, $Q\epsilon$ is again $\mathcal{N}(0, I)$: the noise the model expects in RGB is the same noise in $z$.
# First the two checks: $Q Q^\top = I$, and $Q\epsilon$ has identity covariance.

# %%
Q = gray_chroma_basis()
print("Q Q^T =\n", (Q @ Q.T).numpy().round(6))
assert torch.allclose(Q @ Q.T, torch.eye(3), atol=1e-6)
eps_rgb = torch.randn(200_000, 3, generator=torch.Generator().manual_seed(0))
cov_z = torch.cov((eps_rgb @ Q.T).T)  # covariance of Q eps, should be I
print("covariance of Q eps:\n", cov_z.numpy().round(3))
assert torch.allclose(cov_z, torch.eye(3), atol=0.01)

# %%
colorize_schematic()
plt.show()

# %% [markdown]
# **Exercise 3: the coordinates.** *Derive, then check.* Write `my_to_gray_chroma(rgb)`: $z = Q\,\mathrm{rgb}$ at every
# pixel of an (N, 3, H, W) batch, with $Q$ as above (build it yourself).

# %% tags=["exercise"]
def my_to_gray_chroma(rgb):
    """(N, 3, H, W) -> (N, 3, H, W): (gray, chroma_1, chroma_2) = Q rgb per pixel."""
    ### BEGIN SOLUTION
    r, g, b = rgb.unbind(1)
    gray = (r + g + b) / 3 ** 0.5
    chroma_1 = (r - g) / 2 ** 0.5
    chroma_2 = (r + g - 2 * b) / 6 ** 0.5
    return torch.stack([gray, chroma_1, chroma_2], 1)
    ### END SOLUTION


# %%
course_lib.topics.sr3.check_gray_chroma(my_to_gray_chroma)

# %%
course_lib.core.check.show_solution(course_lib.topics.sr3.to_gray_chroma)

# %% [markdown]
# **Why grey, here?** *Derive, then check.* A.4 showed it for a few colours of equal luminance; the shapes' colours
# are continuous. A shape's colour $c$ has i.i.d. channels uniform on $[0.5, 1]$. Given its gray
# coordinate $g = (c_r + c_g + c_b)/\sqrt3$, the three channels are exchangeable, so $\mathbb{E}[c_r \mid g] =
# \mathbb{E}[c_g \mid g] = \mathbb{E}[c_b \mid g] = g / \sqrt3$: the posterior mean lies on the gray axis, chroma 0.
# Monte Carlo: bin a million random colours by $g$ and average each bin.

# %%
colours = 0.5 + 0.5 * torch.rand(1_000_000, 3, generator=torch.Generator().manual_seed(1))
g_of_colour = colours.sum(1) / 3 ** 0.5
bins = torch.bucketize(g_of_colour, torch.linspace(g_of_colour.min(), g_of_colour.max(), 21))
bin_means = torch.stack([colours[bins == b].mean(0) for b in bins.unique() if (bins == b).sum() > 1000])  # (B, 3)
mean_chroma = (bin_means @ Q[1:].T).norm(dim=1)  # distance of each bin's mean colour from the gray axis
typical_chroma = (colours @ Q[1:].T).norm(dim=1).mean()
print(f"chroma of the per-bin mean colour: at most {float(mean_chroma.max()):.4f}; "
      f"of a single random colour: {float(typical_chroma):.3f} on average")
assert mean_chroma.max() < 0.01 and typical_chroma > 0.1

# %% [markdown]
# Now the three colorizers on held-out scenes: the L2 colorizer (a small CNN gray $\to$ RGB, trained now) and three
# draws of `colorize` with the shipped unconditional model `colorize_shapes` (DDIM with $\eta = 1$, fresh noise each
# step as in chapter 12's inpainting). Chroma is the distance of a pixel's colour from the gray axis, in pixel units.

# %%
colour_model = load_shipped("colorize_shapes", DEVICE)  # UNet(in_channels=3), unconditional, EMA weights
scenes_train = shapes_scenes(cfg_c.n_colour_train, seed=1)
l2_colour = train_l2(gray_of, scenes_train, 1, 3, cfg_c.l2_steps)
scenes = shapes_scenes(cfg_c.n_scenes, seed=999).to(DEVICE)  # held out: (n, 3, 28, 28) in [-1, 1]
gray = gray_of(scenes)  # (n, 1, 28, 28): what the colorizers see
with torch.no_grad():
    l2_colours = l2_colour(gray)
colour_draws = [colorize(colour_model, gray, schedule_c, steps=cfg_c.ddim_steps,
                         generator=torch.Generator().manual_seed(k)) for k in range(3)]
gray_change = max(float((gray_of(c) - gray).abs().max()) for c in colour_draws)
gray_as_rgb = from_gray_chroma(torch.cat([gray, torch.zeros_like(gray), torch.zeros_like(gray)], 1))
panel = torch.stack([scenes, gray_as_rgb, l2_colours, *colour_draws], 1)  # (n, 6, 3, 28, 28)
fig, ax = plt.subplots(figsize=(6, 1.0 * cfg_c.n_scenes))
image_grid(to_pixel_range(panel.flatten(0, 1)).cpu(), nrow=cfg_c.n_scenes, ax=ax)
ax.set_title("real | its gray | L2 colorizer | three diffusion colorizations")
plt.show()
saturation = {"real": chroma(scenes).mean(), "L2 colorizer": chroma(l2_colours).mean(),
              "diffusion": torch.stack([chroma(c).mean() for c in colour_draws]).mean()}
print("mean chroma:", ", ".join(f"{k} {float(v):.4f}" for k, v in saturation.items()))
print(f"largest change of the gray coordinate by colorize: {gray_change:.1e}")
assert gray_change < 1e-4
assert saturation["diffusion"] > saturation["L2 colorizer"]
assert saturation["L2 colorizer"] < 0.5 * saturation["real"]  # washed out: the posterior mean is near grey

# %% [markdown]
# The L2 colorizer keeps the gray value and little else: its shapes come out in washed-out, near-grey tones (its mean
# chroma is well below the real scenes'), because grey is the average of all the colours a shape could have had. The
# diffusion colorizations keep the gray coordinate to rounding error, by construction, and paint each shape in
# saturated colours (mostly one per shape; this briefly trained model sometimes blends two), different in each draw:
# three plausible scenes, none of them the average. A colour that
# differs from the original is not an error here; the gray image cannot tell which colour was there.

# %% [markdown]
# ---
# ## D. Knowledge distillation
#
# ### D.1 Soft targets and the temperature
#
# A trained classifier knows more than its top answer: the probabilities it gives to the *wrong* classes say which digits
# a "7" resembles. Hinton, Vinyals and Dean (2015) call this dark knowledge, and transfer it by training a small
# **student** to match a **teacher**'s probabilities softened by a temperature $T$:
#
# $$
# q_i = \frac{\exp(z_i / T)}{\sum_j \exp(z_j / T)} .
# $$
#
# At $T = 1$ the teacher's probabilities are nearly one-hot (its wrong-class probabilities are tiny); as $T$ grows they
# spread, and as $T \to \infty$ they go to uniform. The check: the entropy of the teacher's softened output rises with $T$ and
# tends to $\ln 10$.

# %%
teacher_logits_demo = classifier(x_test[:64].to(DEVICE)).float().cpu()          # (64, 10): the teacher's z_t
temperatures = torch.tensor([0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 1000.0])
entropies = torch.stack([-(soften(teacher_logits_demo, T) * soften(teacher_logits_demo, T).clamp(min=1e-30).log())
                         .sum(-1).mean() for T in temperatures])
for T, h in zip(temperatures, entropies):
    print(f"T = {T:7.1f}: mean entropy {h:.3f} nats")
assert (entropies[1:] > entropies[:-1]).all()
assert abs(entropies[-1] - math.log(10)) < 1e-3


def draw_temperature(ax, digit, T):
    probabilities = soften(teacher_logits_demo[digit:digit + 1], T)[0]
    ax.bar(range(10), probabilities, color="tab:blue")
    ax.set_xticks(range(10))
    ax.set_ylim(0, 1)
    ax.set_title(f"teacher's softmax(z / T) for test digit {digit} (label {int(y_test[digit])}), T = {T:.1f}", fontsize=9)
    ax.set_xlabel("class")


course_lib.core.widgets.interactive_figure(
    draw_temperature, figsize=(6, 3),
    digit=ipywidgets.IntSlider(value=0, min=0, max=63, description="digit"),
    T=ipywidgets.FloatSlider(value=4.0, min=0.5, max=20.0, step=0.5, description="T"))

# %% [markdown]
# ### D.2 The distillation loss, and why $T^2$
#
# With student logits $z_s$, teacher logits $z_t$, $q_s = \mathrm{softmax}(z_s / T)$, $q_t = \mathrm{softmax}(z_t / T)$ and the label $y$:
#
# $$
# \mathcal{L} = (1 - \alpha)\, \mathrm{CE}\big(y, \mathrm{softmax}(z_s)\big) + \alpha\, T^2\, \mathrm{KL}\big(q_t \,\|\, q_s\big) .
# $$
#
# The gradient of the soft term. $\mathrm{KL}(q_t \| q_s) = \sum_i q_{t,i} \log q_{t,i} - \sum_i q_{t,i} \log q_{s,i}$, and $\log q_{s,i} = z_{s,i}/T - \log \sum_j e^{z_{s,j}/T}$,
# so $\partial \log q_{s,i} / \partial z_{s,k} = (\delta_{ik} - q_{s,k}) / T$ and, since $\sum_i q_{t,i} = 1$,
#
# $$
# \frac{\partial\, \mathrm{KL}(q_t \| q_s)}{\partial z_{s,k}} = \frac{1}{T}\,\big(q_{s,k} - q_{t,k}\big) .
# $$
#
# For large $T$, $e^{z/T} \approx 1 + z/T$; if both logit vectors have zero mean over the $N$ classes, $q_k \approx (1 + z_k / T) / N$, and
#
# $$
# \frac{\partial\, \mathrm{KL}}{\partial z_{s,k}} \approx \frac{1}{T}\,\frac{z_{s,k} - z_{t,k}}{N T} = \frac{z_{s,k} - z_{t,k}}{N T^2} :
# $$
#
# the soft targets' gradient shrinks like $1/T^2$, and at high temperature matching them is matching logits (an L2 loss on
# $z_s - z_t$, Caruana's earlier recipe). Multiplying the soft term by $T^2$ keeps its gradient the same size whatever $T$, so
# changing $T$ does not silently re-weight it against the hard term. Three checks: the exact gradient against autograd,
# the large-$T$ approximation, and the size of $T^2 \times$ gradient across temperatures.

# %%
z_s = torch.randn(8, 10, generator=generator, dtype=torch.float64) * 2
z_t = torch.randn(8, 10, generator=generator, dtype=torch.float64) * 2
z_s, z_t = z_s - z_s.mean(1, keepdim=True), z_t - z_t.mean(1, keepdim=True)      # zero-mean logits
print(" T      autograd vs (q_s - q_t)/T   approx. (z_s - z_t)/(N T^2): rel. error   |T^2 grad|")
scaled_norms = []
for T in (1.0, 2.0, 5.0, 10.0, 20.0, 50.0):
    leaf = z_s.clone().requires_grad_(True)
    q_t = torch.softmax(z_t / T, -1)
    kl = (q_t * (q_t.log() - torch.log_softmax(leaf / T, -1))).sum()      # summed over the batch: per-example grads
    (autograd_grad,) = torch.autograd.grad(kl, leaf)
    exact = soft_target_gradient(z_s, z_t, T)
    approx = (z_s - z_t) / (10 * T**2)
    relative = float((exact - approx).norm() / exact.norm())
    scaled_norms.append(float((T**2 * exact).norm()))
    print(f"{T:5.1f}   {(autograd_grad - exact).abs().max():.1e}                    {relative:.3f}"
          f"                            {scaled_norms[-1]:.3f}")
    assert torch.allclose(autograd_grad, exact, atol=1e-12)
    if T >= 20:
        assert relative < 0.1
limit = float(((z_s - z_t) / 10).norm())
print(f"T^2 x gradient tends to (z_s - z_t) / N, of norm {limit:.3f}; without T^2 the gradient at T = 50 is "
      f"{scaled_norms[-1] / 50**2:.2e}")
assert abs(scaled_norms[-1] - limit) / limit < 0.05

# %% [markdown]
# The whole loss by hand against the library (`distillation_loss`; labels of $-1$ mark unlabelled examples, whose hard
# term is dropped):

# %%
labels_demo = torch.tensor([3, -1, 7, 0, -1, 2, 9, 1])
T, alpha = 4.0, 0.9
hard = F.cross_entropy(z_s[labels_demo >= 0], labels_demo[labels_demo >= 0])
soft = F.kl_div(F.log_softmax(z_s / T, -1), F.softmax(z_t / T, -1), reduction="batchmean")   # KL(q_t || q_s)
by_hand = (1 - alpha) * hard + alpha * T**2 * soft
library = distillation_loss(z_s, z_t, labels_demo, T, alpha)
print(f"distillation loss by hand {by_hand:.6f}, library {library:.6f}")
assert torch.allclose(by_hand.float(), library.float(), rtol=1e-5)

# %% [markdown]
# **Exercise 2: the soft-target gradient.** *Derive, then check.* Derive $\partial\, \mathrm{KL}(q_t \| q_s) / \partial z_s$ yourself (one example,
# no batch mean, no $T^2$), then code it as `my_soft_gradient(z_s, z_t, T)` for logits of shape (N, K), returning (N, K). The
# check compares it with the reference at $T = 1, 2, 8$.

# %% tags=["exercise"]
def my_soft_gradient(z_s, z_t, T):
    """d KL(softmax(z_t / T) || softmax(z_s / T)) / d z_s, row by row."""
    ### BEGIN SOLUTION
    student_probabilities = torch.softmax(z_s / T, dim=-1)
    teacher_probabilities_now = torch.softmax(z_t / T, dim=-1)
    return (student_probabilities - teacher_probabilities_now) / T
    ### END SOLUTION


# %%
check_soft_gradient(my_soft_gradient)

# %%
course_lib.core.check.show_solution(course_lib.topics.distillation.soft_target_gradient)

# %% [markdown]
# ### D.3 Distilling the classifier into a small MLP
#
# The teacher is the course's shipped CNN classifier (99% test accuracy); the student a one-hidden-layer MLP with 64
# units, ten times fewer weights. The picture:

# %%
fig = course_lib.topics.distillation.schematic()
plt.show()

# %% [markdown]
# The comparison must be fair: the same student, the same optimizer and steps, the same labelled images. Two regimes:
#
# 1. **1,000 labelled digits, nothing else.** The distilled student sees the same 1,000 images; only its targets differ (the
#    teacher's softened outputs, $T = 4$, $\alpha = 0.9$). Any gain is the dark knowledge in the soft targets.
# 2. **100 labelled digits and a transfer set** of 10,000 unlabelled ones (Hinton et al. also distil on a transfer set).
#    The labels-only student can use only the 100; the distilled one learns from the teacher on all 10,000. The gain is
#    large, and most of it is the teacher labelling data the student could not use otherwise: say so when you report it.
#
# Mean and spread over seeds (one seed under `ci`).

# %%
def compare(n_labelled, n_transfer, seeds):
    images, labels = transfer_set(x_train, y_train, n_labelled, n_transfer)
    teacher_z = teacher_logits_of(classifier, images)                       # (n_transfer, 10), computed once
    results = {"labels only": [], "distilled": []}
    for seed in range(seeds):
        for name, z in (("labels only", None), ("distilled", teacher_z)):
            model, _ = train_student(images, labels, teacher_logits=z, steps=cfg.student_steps, seed=seed,
                                     device=DEVICE, show_progress=False)
            results[name].append(test_accuracy(model, x_test, y_test))
    return {name: torch.tensor(values) for name, values in results.items()}


regimes = {"1,000 labels": compare(1_000, 1_000, cfg.student_seeds),
           "100 labels + 10,000 unlabelled": compare(100, 10_000, cfg.student_seeds)}
for regime, results in regimes.items():
    spread = {k: (f"+- {float(v.std()):.4f} (std, {len(v)} seeds)" if len(v) > 1 else "(1 seed)") for k, v in results.items()}
    print(f"{regime:>31}: labels only {results['labels only'].mean():.4f} {spread['labels only']}, "
          f"distilled {results['distilled'].mean():.4f} {spread['distilled']}  ({cfg.student_steps} steps)")
if profile() == "ci":
    print("(ci profile: 100 steps are too few for a fair comparison, either way round; run cpu)")
print(f"the shipped student_mnist (1,000 labels, 2,000 steps): {student_accuracy:.4f}; "
      f"the teacher: {test_accuracy(classifier, x_test, y_test):.4f}")
if profile() != "ci":
    for results in regimes.values():
        assert results["distilled"].mean() > results["labels only"].mean()

# %% [markdown]
# ### D.4 Self-distillation without labels: DINO
#
# Chapter 05's DINO trains with the same loss shape and no labels at all: a student's softmax at temperature $\tau_s$ matches a
# teacher's softmax at a *lower* temperature $\tau_t$ (sharpening) after subtracting a running centre $c$ (so no single output
# dominates), by the cross entropy $H(P_t, P_s) = \mathrm{KL}(P_t \| P_s) + H(P_t)$, whose gradient in the student is the KL's. The
# differences: the teacher is not a separate trained network but an exponential moving average of the student itself,
# and the two see different crops of the image. The check: chapter 05's `teacher_probabilities` with a zero centre is
# this chapter's `soften`, and its cross entropy and our KL differ by the teacher's entropy, a constant for the student.

# %%
zero_centre = torch.zeros(10, dtype=torch.float64)
assert torch.allclose(teacher_probabilities(z_t, zero_centre, 0.5), soften(z_t, 0.5))
p_t, log_p_s = soften(z_t, 0.5), torch.log_softmax(z_s / 0.5, -1)
cross_entropy = -(p_t * log_p_s).sum(-1)
kl = (p_t * (p_t.log() - log_p_s)).sum(-1)
teacher_entropy = -(p_t * p_t.log()).sum(-1)
print(f"max |H(P_t, P_s) - KL(P_t || P_s) - H(P_t)| = {(cross_entropy - kl - teacher_entropy).abs().max():.1e}")
assert torch.allclose(cross_entropy, kl + teacher_entropy, atol=1e-10)

# %% [markdown]
# ## Summary
#
# | key equation | derived in | checked by |
# |---|---|---|
# | $y = D(x * k) + n$ with the box kernel and stride 4 is average pooling | A.1 | blur-then-subsample against `downsample`, A.1 |
# | $\arg\min_c E[\lVert c - x \rVert^2 \mid y] = E[x \mid y]$; the L1 answer is the median | A.2 | toy: Monte Carlo vs $\tanh(y / \sigma^2)$, trained L2 and L1 nets, A.2 |
# | $E[x \mid y] = \sum_i p(x_i \mid y)\, x_i = y + \sigma^2 \nabla \log p(y)$ (Tweedie) | A.3 | Bayes weights vs autograd score on digits, A.3 |
# | L2 colorization answers the mean colour, a grey | A.4 | gradient descent on six equal-luminance colours, A.4 |
# | $\ell_{feat} = \sum_j \lVert \phi_j(\hat x) - \phi_j(x) \rVert^2 / (C_j H_j W_j)$ | B.2 | by hand vs library, B.2; PSNR and FID of three restorers, B.4 |
# | SR3: $L = \mathbb{E}\lVert \epsilon - \epsilon_\theta(x_t, \mathrm{up}(y), t)\rVert^2$, $y = D(x)$; a sample is a draw from $p(x \mid y)$ | C.1 | C.1: the loss by hand equals `sr3_loss`; the spread of the samples of one input; the mean of more samples comes closer to the L2 regressor and loses edge energy |
# | consistency $\mathrm{RMS}(D(\hat x) - y)$; the low-pass projection $D(x_{t'}) \leftarrow \sqrt{\bar\alpha_{t'}}\,y + \sqrt{1-\bar\alpha_{t'}}\,\epsilon/2$ | C.1 | C.1: zero for the true digits and for projected samples (asserted), printed for plain SR3 and bicubic; exercise 1 |
# | noise-conditioning augmentation $\tilde y = \sqrt{\bar\alpha_s}\, y + \sqrt{1 - \bar\alpha_s}\,\epsilon$, $s$ an input | C.2 | C.2: exercise 2; the speckled-input experiment at two levels; the cascade's FID with the floor |
# | colorization: $z = Q\,\mathrm{rgb}$, $Q Q^\top = I$, replace $z_\text{gray}$ by $\sqrt{\bar\alpha}\, g + \sqrt{1-\bar\alpha}\,\epsilon$ | C.3 | C.3: orthogonality and the identity covariance of the rotated noise asserted; the gray coordinate kept to rounding; exercise 3 |
# | the posterior mean of an exchangeable random colour given its gray is grey: $\mathbb{E}[c \mid g] = (g/\sqrt3)(1,1,1)$ | C.3 | C.3: Monte Carlo over a million colours binned by gray value; the chroma of the L2 and diffusion colorizations |
# | $\partial\, \mathrm{KL}(q_t \parallel q_s) / \partial z_s = (q_s - q_t)/T \approx (z_s - z_t)/(N T^2)$ | D.2 | autograd, the large-temperature error, the scaled norms, D.2 |
#
# **Three things to remember.**
# 1. A loss chooses an estimator: L2 gives the posterior mean, a blur (and a grey colorization) whenever the answer is
#    ambiguous, however large the network; L1 gives the median.
# 2. Perceptual and adversarial losses buy realism with distortion: they lower FID and raise the pixel error, and no
#    restorer can be best at both (Blau and Michaeli, 2018).
# 3. Distillation trains a student on a teacher's softened outputs, $(1 - \alpha)\,\mathrm{CE} + \alpha T^2\,\mathrm{KL}$; the $T^2$ keeps the soft
#    gradient's size independent of $T$, and DINO is the same loss with an EMA teacher and no labels.
#
# ## Discussion questions
#
# 1. The L2 restorer of B.4 was trained on 60,000 digits, not on a finite prior. Is its output still a posterior mean, and
#    of which posterior? What would make it less blurry without changing the loss?
# 2. A common reading is "the adversarial restorer recovers detail that the L2 restorer lost". Look at the widget in B.5:
#    whose detail is it?
# 3. Our perceptual loss and our FID use the same classifier. What does that do to the FID of the perceptual restorer,
#    and how would you measure perception more fairly?
# 4. In D.3's second regime, the distilled student beats the labels-only one by a wide margin. How much of that is dark
#    knowledge, and which experiment would separate the two?
# 5. A super-resolution cascade's second stage (C.2) was trained on clean low-resolution digits; at sampling it receives the
#    first stage's output. Why can its results get worse when the first stage is good but not perfect, and why does
#    noising the condition help in Ho et al. (2022) even though it throws information away? What would it take to see
#    that benefit with C.2's small models?
