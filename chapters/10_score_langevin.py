# ---
# jupyter:
#   course:
#     time_on_cpu:
#       ci:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-05'
#         seconds: 26
#       cpu:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-05'
#         seconds: 180
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
# # 10 · Score matching and Langevin dynamics
#
# A VAE (chapter 08) models the density $p(x)$; a GAN (chapter 09) models a sampler. This chapter models the
# **score**, the gradient $\nabla_x \log p(x)$: a vector field that points, at every $x$, to where the data is
# denser. It needs no normalising constant, it can be learned from samples alone (score matching), and a random
# walk that follows it (Langevin dynamics) draws samples. Diffusion models (chapter 11) are this idea at scale.
#
# **Goals.** After this chapter you can
# - write the score of a Gaussian mixture, and of the mixture smoothed by Gaussian noise, in closed form;
# - run Langevin and annealed Langevin dynamics, and explain (with numbers) why plain Langevin gets the weights of
#   separated modes wrong and why smoothing, not tempering, fixes it;
# - derive implicit (Hyvärinen), sliced and denoising score matching, implement all three, and say what each costs
#   as the dimension grows;
# - derive Tweedie's formula $\mathbb{E}[x \mid \tilde x] = \tilde x + \sigma^2 \nabla \log p_\sigma(\tilde x)$, check it
#   exactly, and use it as a denoiser;
# - build, train and sample a noise-conditional score network (NCSN) on 2-D data.
#
# **Prerequisites.** Chapter 01 (autograd, `torch.autograd.grad`, training with `fit`). Gaussians, the chain rule,
# integration by parts. Chapter 08 helps but is not needed.
#
# **Time.** Two study-group sessions (about 80 and 90 minutes): scores and Langevin dynamics (A, B), then score matching,
# Tweedie and the NCSN (C, D, E) with the discussion (G). The exercises (F) take about 45 minutes at home. The session
# plan, with what to pre-run before each session: [facilitator/10_score_langevin.md](facilitator/10_score_langevin.md).
#
# **Core path.** A (scores of a mixture and of its smoothed versions, 15 min), B.1-B.3 (Langevin, why it gets the
# weights of separated modes wrong, annealing, 25 min), C.1, C.2, C.4 and C.5 (implicit and denoising score matching,
# trained, 25 min), D (Tweedie's formula, 10 min), E (the NCSN, 15 min): about 90 min. Optional deep dives a first
# reading can skip: B.4 (tempering is not smoothing, 10 min), C.3 (sliced score matching, 10 min), C.6 (what each
# score-matching loss costs as the dimension grows, 5 min).
#
# **What runs, and how long** (the whole chapter, top to bottom, on a fresh kernel; `ci` with 1 torch thread as the
# test suite runs it, `cpu` with torch's default threads; `make time PROFILE=ci` or `PROFILE=cpu` measures it and
# writes the time here, in the notebook's metadata and in the README):
#
# | profile | what trains | measured |
# |---|---|---|
# | `ci` | 3 score MLPs × 300 steps (ISM, SSM, DSM); the NCSN for 300 steps; 2,000 Langevin chains | 26 s, measured 2026-12-05 on 2 CPU cores, no GPU, otherwise idle |
# | `cpu` | 3 score MLPs × 2,000 steps (score matching about 50 s); the NCSN for 10,000 steps (the shipped recipe, about 3 min); 5,000 chains | 3 min, measured 2026-12-05 on 2 CPU cores, no GPU, otherwise idle |
# | `gpu` | 3 score MLPs × 5,000 steps; the NCSN for 30,000 steps | not measured: no GPU where the course was timed |
#
# Set the profile before starting JupyterLab: `COURSE_PROFILE=ci`, `cpu` or `gpu`.

# %%
import inspect
import math
import time

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import course_lib
import course_lib.core.check
import course_lib.core.plotting
import course_lib.core.widgets
import course_lib.topics.score
import course_lib.zoo
from course_lib import device, per_profile, profile, seed_everything
from course_lib.core.checkpointing import load_checkpoint, read_manifest
from course_lib.core.train import fit, minibatches, warmup_cosine
from course_lib.data import GaussianMixture2D
from course_lib.topics.score import (NoiseConditionalScoreNet, ScoreMLP, annealed_langevin, dsm_loss, energy_distance,
                                     geometric_sigmas, ism_loss, langevin, mixture_posterior_mean, mode_fractions,
                                     ncsn_loss, relative_score_error, saved_tensor_bytes, ssm_loss, toy_mixture,
                                     tweedie_denoise)
from course_lib.topics.unet import sinusoidal_embedding

DEVICE = device()
generator = seed_everything(0)
cfg = per_profile(ci=dict(chains=2_000, sm_steps=300, sm_hidden=64, cost_dims=(2, 8, 32), ncsn_samples=1_000),
                  cpu=dict(chains=5_000, sm_steps=2_000, sm_hidden=128, cost_dims=(2, 8, 32, 128), ncsn_samples=2_000),
                  gpu=dict(chains=5_000, sm_steps=5_000, sm_hidden=128, cost_dims=(2, 8, 32, 128, 512),
                           ncsn_samples=4_000))
print(f"profile = {profile()}, device = {DEVICE}, torch threads = {torch.get_num_threads()}")
print(cfg)

# %% [markdown]
# ## See it work first
#
# The model this chapter builds, as shipped (`ncsn_2d`: a noise-conditional score network $s_\theta(x, \sigma)$ trained on
# the 2-D data of A.2, eight Gaussians on a ring whose weights alternate 3:1). Its samples are drawn by annealed Langevin
# dynamics: 1,000 points of uniform noise on $[-8, 8]^2$ follow the learned score through ten noise levels, from
# $\sigma = 8$ down to $\sigma = 0.1$. Left, the samples against true samples; right, the share of the samples at each
# mode against the true weights $3/16$ and $1/16$. By the end of this chapter you will have derived and trained this,
# and seen (B.2) why the same chains without the noise levels get the weights wrong, even with the exact score.

# %%
ncsn_shipped = course_lib.zoo.load_shipped("ncsn_2d", DEVICE)
ncsn_recipe = read_manifest()["ncsn_2d"]["recipe"]
shipped_sigmas = geometric_sigmas(ncsn_recipe["sigma_max"], ncsn_recipe["sigma_min"], ncsn_recipe["n_levels"])
first_samples = course_lib.topics.score.sample_ncsn(ncsn_shipped, shipped_sigmas, 1_000, torch.Generator().manual_seed(0),
                                                    eps=ncsn_recipe["eps"], steps_per_level=ncsn_recipe["steps_per_level"])
first_mixture = toy_mixture()
first_fractions = mode_fractions(first_samples, first_mixture)  # (8,)
first_tv = 0.5 * (first_fractions - first_mixture.weights).abs().sum().item()
true_points = first_mixture.sample(1_000, torch.Generator().manual_seed(1))  # (1000, 2)
true_tv = 0.5 * (mode_fractions(true_points, first_mixture) - first_mixture.weights).abs().sum().item()
print(f"share of samples in the four big modes: {first_fractions[::2].sum():.3f} (true weight 0.750); "
      f"total variation from the true weights {first_tv:.3f} (1,000 true samples: {true_tv:.3f} by chance)")
assert first_tv < 0.08
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
axes[0].scatter(true_points[:, 0], true_points[:, 1], s=2, color="0.6", label="true samples")
axes[0].scatter(first_samples[:, 0], first_samples[:, 1], s=2, color="tab:blue", label="annealed Langevin, shipped NCSN")
axes[0].set(xlim=(-7, 7), ylim=(-7, 7), aspect="equal", title="1,000 samples from uniform noise")
axes[0].legend(fontsize=7, loc="center", markerscale=4)
axes[1].bar(np.arange(8) - 0.2, first_mixture.weights.numpy(), 0.4, color="0.6", label="true weight")
axes[1].bar(np.arange(8) + 0.2, first_fractions.numpy(), 0.4, color="tab:blue", label="share of the samples")
axes[1].set(xlabel="mode (0 = angle 0, counter-clockwise)", ylabel="fraction", title="mode weights, 3:1 alternating")
axes[1].legend(fontsize=8)
plt.show()

# %% [markdown]
# ---
# ## A. The score of a Gaussian mixture
#
# ### A.1 One Gaussian
#
# The **score** of a density $p$ on $\mathbb{R}^d$ is $s(x) = \nabla_x \log p(x)$, a vector field with the shape of $x$.
# For an isotropic Gaussian $\mathcal{N}(\mu, s^2 I)$,
#
# $$
# \log \mathcal{N}(x; \mu, s^2 I) = -\frac{d}{2} \log(2 \pi s^2) - \frac{\lVert x - \mu \rVert^2}{2 s^2}
# \qquad\Longrightarrow\qquad
# \nabla_x \log \mathcal{N}(x; \mu, s^2 I) = -\frac{2 (x - \mu)}{2 s^2} = \frac{\mu - x}{s^2} .
# $$
#
# The constant $-\frac{d}{2}\log(2\pi s^2)$ has zero gradient: **the score never needs the normalising constant.**
# For any unnormalised $\tilde p = Z p$, $\nabla \log \tilde p = \nabla \log Z + \nabla \log p = \nabla \log p$.
# That is what makes scores attractive for models whose $Z$ is intractable.

# %%
mu, s = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.7
x = torch.randn(5, 2, dtype=torch.float64, generator=generator, requires_grad=True)  # (5, 2)
log_density = -math.log(2 * math.pi * s**2) - ((x - mu) ** 2).sum(1) / (2 * s**2)  # (5,), d = 2
autograd_score = torch.autograd.grad(log_density.sum(), x, retain_graph=True)[0]  # (5, 2): row i depends on x_i only
assert torch.allclose(autograd_score, (mu - x.detach()) / s**2)
log_unnormalised = log_density + 123.0  # log(Z p) with Z = e^123
assert torch.allclose(torch.autograd.grad(log_unnormalised.sum(), x)[0], autograd_score)
print("score of N(mu, s^2 I) = (mu - x) / s^2, and it ignores the normalising constant")

# %% [markdown]
# > **Common confusion:** in statistics, "the score" usually means $\nabla_\theta \log p_\theta(x)$, the gradient with
# > respect to the *parameters* (the Fisher score, used in REINFORCE, chapter 08). Here it is always
# > $\nabla_x \log p(x)$, the gradient with respect to the *data point*. Same log-density, different variable.
#
# ### A.2 A mixture
#
# For $p(x) = \sum_k \pi_k \mathcal{N}(x; \mu_k, s_k^2 I)$, write $p_k(x) = \mathcal{N}(x; \mu_k, s_k^2 I)$. Then
#
# $$
# \nabla_x \log p(x) = \frac{\nabla_x p(x)}{p(x)} = \frac{\sum_k \pi_k \nabla_x p_k(x)}{p(x)}
# = \frac{\sum_k \pi_k p_k(x)\, \nabla_x \log p_k(x)}{p(x)}
# = \sum_k r_k(x)\, \frac{\mu_k - x}{s_k^2},
# \qquad r_k(x) = \frac{\pi_k p_k(x)}{\sum_j \pi_j p_j(x)} ,
# $$
#
# using $\nabla p_k = p_k \nabla \log p_k$. The **responsibilities** $r_k(x) = p(k \mid x)$ sum to one: the mixture's
# score is the posterior-weighted average of the components' scores. Far from all means, the nearest component
# wins and the arrows point at it; between two modes, the field splits.
#
# The chapter's 2-D data is `course_lib.topics.score.toy_mixture()`: 8 Gaussians of standard deviation 0.5 on a circle of
# radius 4, with weights alternating 3:1 (3/16 and 1/16). We compute its score step by step, in log space
# (softmax of the log-weights gives the responsibilities without underflow), and compare with the library
# (`GaussianMixture2D.score`) and with autograd on `log_prob`.

# %%
mixture = toy_mixture()
print("means:\n", mixture.means.numpy().round(3), "\nstds:", mixture.stds.numpy(), "\nweights:", mixture.weights.numpy())


def my_mixture_score(x, means, stds, weights):
    """grad_x log sum_k pi_k N(x; mu_k, s_k^2 I) for x (N, 2), means (K, 2), stds (K,), weights (K,)."""
    diff = means[None] - x[:, None, :]  # (N, K, 2): mu_k - x
    variances = stds**2  # (K,)
    log_components = (weights.log() - torch.log(2 * math.pi * variances)
                      - (diff**2).sum(-1) / (2 * variances))  # (N, K): log pi_k + log N(x; mu_k, s_k^2 I)
    r = torch.softmax(log_components, dim=1)  # (N, K) responsibilities
    return (r[:, :, None] * diff / variances[None, :, None]).sum(1)  # (N, 2)


x = 6 * torch.randn(1000, 2, dtype=torch.float64, generator=generator)  # (1000, 2), well beyond the data
mine = my_mixture_score(x, mixture.means, mixture.stds, mixture.weights)
assert torch.allclose(mine, mixture.score(x), atol=1e-12)
x_leaf = x.clone().requires_grad_(True)
assert torch.allclose(torch.autograd.grad(mixture.log_prob(x_leaf).sum(), x_leaf)[0], mine, atol=1e-9)
print("my_mixture_score == GaussianMixture2D.score == autograd of log_prob, on 1000 points")

# %% [markdown]
# ### A.3 Smoothing by Gaussian noise
#
# Later sections need the law of $\tilde x = x + \sigma \varepsilon$ with $x \sim p$ and $\varepsilon \sim \mathcal{N}(0, I)$
# independent, written $p_\sigma = p * \mathcal{N}(0, \sigma^2 I)$ (a convolution):
#
# $$
# p_\sigma(\tilde x) = \int p(x)\, \mathcal{N}(\tilde x; x, \sigma^2 I)\, dx .
# $$
#
# For a mixture it is again a mixture. Given the component $k$, $x = \mu_k + s_k z$ with $z \sim \mathcal{N}(0, I)$, so
# $\tilde x = \mu_k + s_k z + \sigma \varepsilon$ is a sum of independent Gaussians: mean $\mu_k$, covariance
# $s_k^2 I + \sigma^2 I$. Hence
#
# $$
# p_\sigma(\tilde x) = \sum_k \pi_k\, \mathcal{N}\big(\tilde x; \mu_k, (s_k^2 + \sigma^2) I\big),
# $$
#
# with the **same weights** $\pi_k$: smoothing widens every component and keeps its mass. Its score is the formula of
# A.2 with $s_k^2 + \sigma^2$ (`mixture.noised(sigma)`). Check: compute the convolution integral by quadrature on a
# grid, at a few points, against the closed form.

# %%
sigma = 1.5
grid_1d = torch.linspace(-12, 12, 481, dtype=torch.float64)  # spacing 0.05, well below the stds 0.5
h = (grid_1d[1] - grid_1d[0]).item()
gx, gy = torch.meshgrid(grid_1d, grid_1d, indexing="xy")
grid = torch.stack([gx.flatten(), gy.flatten()], 1)  # (481*481, 2)
p_grid = mixture.log_prob(grid).exp()  # (G,) p(x) on the grid
for x_tilde in torch.tensor([[0.0, 0.0], [4.0, 0.5], [-2.0, 3.0]], dtype=torch.float64):
    kernel = torch.exp(-((x_tilde - grid) ** 2).sum(1) / (2 * sigma**2)) / (2 * math.pi * sigma**2)  # N(x~; x, s^2 I)
    quadrature = (p_grid * kernel).sum() * h**2
    closed_form = mixture.noised(sigma).log_prob(x_tilde[None]).exp()[0]
    print(f"p_sigma({x_tilde.tolist()}): quadrature {quadrature:.8f}, closed form {closed_form:.8f}")
    assert torch.isclose(quadrature, closed_form, rtol=1e-6)

# %% [markdown]
# ### A.4 The field, and a slider over the noise level
#
# Left: $\log p_\sigma$ with the score arrows. The arrows are scaled per panel (the title gives the largest length):
# at $\sigma = 0$ the score is large away from the modes (it grows like distance / 0.25) and flips direction abruptly
# between neighbouring modes; as $\sigma$ grows the field becomes smooth
# and, at $\sigma = 8$, points almost straight at the centre, like the score of one wide Gaussian. Right: a slice along
# the $x_1$ axis, $y = 0$, through a big mode at $(4, 0)$ and its mirror at $(-4, 0)$.

# %%
def draw_score_field(ax, mixture, sigma, lim=7.0, n_arrows=21):
    """log p_sigma as an image, the score of p_sigma as arrows (scaled to the panel's largest)."""
    noised = mixture.noised(sigma) if sigma > 0 else mixture
    fine = torch.linspace(-lim, lim, 200, dtype=torch.float64)
    fx, fy = torch.meshgrid(fine, fine, indexing="xy")
    log_p = noised.log_prob(torch.stack([fx.flatten(), fy.flatten()], 1)).reshape(200, 200)
    ax.imshow(log_p.clamp(min=log_p.max() - 12).numpy(), extent=(-lim, lim, -lim, lim), origin="lower", cmap="Blues")
    coarse = torch.linspace(-lim, lim, n_arrows, dtype=torch.float64)
    cx, cy = torch.meshgrid(coarse, coarse, indexing="xy")
    points = torch.stack([cx.flatten(), cy.flatten()], 1)
    field = noised.score(points)  # (n_arrows^2, 2)
    ax.quiver(points[:, 0], points[:, 1], field[:, 0], field[:, 1], color="tab:red", angles="xy", width=0.004)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal",
           title=f"sigma = {sigma:g}: largest |score| = {field.norm(dim=1).max():.3g}")


def draw_field_and_slice(axes, sigma):
    draw_score_field(axes[0], mixture, sigma)
    line = torch.stack([torch.linspace(-7, 7, 400, dtype=torch.float64), torch.zeros(400, dtype=torch.float64)], 1)
    noised = mixture.noised(sigma) if sigma > 0 else mixture
    axes[1].plot(line[:, 0], noised.score(line)[:, 0], label="score, x_1 component")
    axes[1].plot(line[:, 0], noised.log_prob(line) - noised.log_prob(line).max(), label="log p_sigma (shifted)")
    axes[1].axhline(0, color="0.6", lw=0.8)
    axes[1].set(ylim=(-25, 25), xlabel="x_1 (x_2 = 0)", title="slice along y = 0")
    axes[1].legend(fontsize=8)


sigma_options = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
course_lib.core.widgets.interactive_figure(
    draw_field_and_slice, ncols=2, figsize=(10, 4.5),
    sigma=ipywidgets.SelectionSlider(options=sigma_options, value=0.5, description="sigma"))

# %% [markdown]
# ---
# ## B. Langevin dynamics
#
# ### B.1 Following the score, plus noise
#
# The **Langevin diffusion** is the stochastic differential equation
#
# $$
# d x_t = \tfrac{1}{2} \nabla_x \log p(x_t)\, dt + d W_t ,
# $$
#
# with $W_t$ a standard Brownian motion. Why does it sample $p$? The density $\rho_t$ of $x_t$ obeys the Fokker–Planck
# equation of a drift $b(x)$ and unit diffusion, $\partial_t \rho = -\nabla \cdot (\rho\, b) + \tfrac{1}{2} \Delta \rho$.
# Put $\rho = p$ and $b = \tfrac{1}{2} \nabla \log p$: then $\rho\, b = \tfrac{1}{2} p \nabla \log p = \tfrac{1}{2} \nabla p$, and
#
# $$
# \partial_t \rho = -\nabla \cdot \big(\tfrac{1}{2} \nabla p\big) + \tfrac{1}{2} \Delta p = -\tfrac{1}{2} \Delta p + \tfrac{1}{2} \Delta p = 0 .
# $$
#
# So $p$ is stationary: once distributed as $p$, the walk stays so. (Convergence *to* $p$ from elsewhere holds for nice
# $p$, but can take very long: B.2.) The Euler–Maruyama step with $dt = \epsilon$ and $W_{t+\epsilon} - W_t = \sqrt{\epsilon}\, z$
# gives the sampler used everywhere, **unadjusted Langevin (ULA)**:
#
# $$
# x_{k+1} = x_k + \frac{\epsilon}{2} \nabla_x \log p(x_k) + \sqrt{\epsilon}\, z_k, \qquad z_k \sim \mathcal{N}(0, I).
# $$
#
# The noise is $\sqrt{\epsilon}\, z$, not $\epsilon z$: the drift moves $O(\epsilon)$ per step and the noise must move $O(\sqrt{\epsilon})$,
# as Brownian motion does; with $\epsilon z$ the noise fades as $\epsilon \to 0$ and the chains collapse onto the modes
# (gradient ascent on $\log p$).
#
# **ULA is biased for $\epsilon > 0$.** Take the 1-D target $\mathcal{N}(0, v)$, score $-x/v$. Then
# $x_{k+1} = (1 - \frac{\epsilon}{2v}) x_k + \sqrt{\epsilon}\, z_k$, a linear recursion whose stationary variance $V$ satisfies
# $V = (1 - \frac{\epsilon}{2v})^2 V + \epsilon$, so
#
# $$
# V = \frac{\epsilon}{1 - (1 - \frac{\epsilon}{2v})^2} = \frac{\epsilon}{\frac{\epsilon}{v} - \frac{\epsilon^2}{4 v^2}}
# = \frac{v}{1 - \frac{\epsilon}{4 v}} \;>\; v ,
# $$
#
# stable only for $\epsilon < 4v$. The bias vanishes as $\epsilon \to 0$ (a Metropolis correction would remove it, which is MALA).
# First, the sampler step by step; then the variance check.

# %%
def my_langevin(score_fn, x, step_size, n_steps, generator):
    """Unadjusted Langevin: n_steps of x <- x + (eps/2) score(x) + sqrt(eps) z."""
    for _ in range(n_steps):
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)  # (N, d)
        x = x + 0.5 * step_size * score_fn(x) + math.sqrt(step_size) * z
    return x


x0 = torch.zeros(4, 2, dtype=torch.float64)
mine = my_langevin(mixture.score, x0, 0.05, 50, torch.Generator().manual_seed(1))
library = langevin(mixture.score, x0, 0.05, 50, torch.Generator().manual_seed(1))
assert torch.equal(mine, library)
print("my_langevin == course_lib.topics.score.langevin (same seed, same 50 steps)")

v = 1.0
print(f"{'eps':>5} {'measured Var':>13} {'v / (1 - eps/(4v))':>19}")
for step_size in (0.05, 0.2, 0.5, 1.0):
    chains = langevin(lambda y: -y / v, torch.zeros(20_000, 1, dtype=torch.float64), step_size, 600,
                      torch.Generator().manual_seed(2))
    predicted = v / (1 - step_size / (4 * v))
    print(f"{step_size:5.2f} {chains.var().item():13.4f} {predicted:19.4f}")
    assert abs(chains.var().item() - predicted) < 0.04 * predicted

# %% [markdown]
# When the modes are close enough for the walk to cross between them, ULA with a small step does sample $p$. Below: a
# mixture with weights 0.3 and 0.7 whose modes are 3 apart (std 0.7), 4,000 chains from one point, 1,500 steps of
# $\epsilon = 0.02$. The histogram of $x_1$ against the exact marginal density (both sides of "stationary = $p$"):

# %%
close_pair = GaussianMixture2D([[-1.5, 0.0], [1.5, 0.0]], 0.7, [0.3, 0.7])
chains = langevin(close_pair.score, torch.zeros(4_000, 2, dtype=torch.float64), 0.02, 1_500,
                  torch.Generator().manual_seed(3))
xs = torch.linspace(-4.5, 4.5, 300, dtype=torch.float64)
marginal = sum(w * torch.exp(-(xs - m[0]) ** 2 / (2 * sd**2)) / math.sqrt(2 * math.pi * sd**2)
               for w, m, sd in zip(close_pair.weights, close_pair.means, close_pair.stds))
fig, ax = plt.subplots(figsize=(6, 3))
ax.hist(chains[:, 0].numpy(), bins=60, density=True, alpha=0.5, label="ULA, 4,000 chains after 1,500 steps")
ax.plot(xs, marginal, color="k", label="exact marginal of x_1")
ax.set(xlabel="x_1", title="modes that mix: Langevin finds the weights")
ax.legend(fontsize=8)
plt.show()
right = (chains[:, 0] > 0).double().mean().item()
exact_right = sum(w * torch.special.ndtr(m[0] / sd) for w, m, sd in  # P(x_1 > 0) = sum_k pi_k Phi(mu_k1 / s_k)
                  zip(close_pair.weights, close_pair.means, close_pair.stds)).item()
print(f"fraction of chains with x_1 > 0: {right:.3f}; exact mass of p right of 0: {exact_right:.3f}")
assert abs(right - exact_right) < 0.03

# %% [markdown]
# ### B.2 The 1/5-4/5 mixture: plain Langevin gets the weights wrong
#
# Now the experiment of Song and Ermon (2019, Fig. 3): $p = \frac{1}{5} \mathcal{N}((-5, -5), I) + \frac{4}{5} \mathcal{N}((5, 5), I)$,
# the **exact** score, chains started uniformly on $[-8, 8]^2$, $\epsilon = 0.1$, 1,000 steps. The truth puts 80% of
# the mass in the heavy mode at $(5, 5)$.

# %%
two_modes = GaussianMixture2D([[-5.0, -5.0], [5.0, 5.0]], 1.0, [0.2, 0.8])


def heavy_fraction(x):
    """Fraction of points on the heavy mode's side of the line x_1 + x_2 = 0."""
    return (x.sum(1) > 0).double().mean().item()


generator = seed_everything(0)
x_start = (torch.rand(cfg.chains, 2, generator=generator, dtype=torch.float64) * 2 - 1) * 8  # uniform on [-8, 8]^2
x_plain, path = langevin(two_modes.score, x_start, 0.1, 1_000, generator, keep_every=10)
print(f"plain Langevin: {heavy_fraction(x_plain):.1%} of {cfg.chains} chains in the heavy mode "
      f"(truth: 80%)")
assert abs(heavy_fraction(x_plain) - 0.5) < 0.05

# %% [markdown]
# Why 50%? The score points each chain to the mode on its side of the diagonal $x_1 + x_2 = 0$ (the region where the
# other mode's responsibility is tiny), and uniform starts are split 50/50 by that diagonal. To cross, a chain has
# to climb from $\log p \approx \log p(\text{mode})$ to the valley in between, where the density is smaller by about
# $e^{-\lVert 5 \cdot (1,1) \rVert^2 / 2} = e^{-25}$: the expected waiting time is astronomically long. The weights
# $\frac{1}{5}, \frac{4}{5}$ enter the score only through the responsibilities, which are 0 or 1 almost everywhere the
# chains go; **the score inside each basin carries no information about the relative mass of the basins.**

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
draw_score_field(axes[0], two_modes, 0.0, lim=9)
trajectories = torch.stack(path)[:, :12].numpy()  # (101, 12, 2): 12 chains, every 10 steps
axes[0].plot(trajectories[:, :, 0], trajectories[:, :, 1], color="k", lw=0.8, alpha=0.7)
axes[0].plot([-9, 9], [9, -9], "--", color="0.4")
axes[0].set_title("12 chains and the diagonal: each stays on its side")
axes[1].bar(["truth", "plain Langevin"], [0.8, heavy_fraction(x_plain)], color=["0.6", "tab:red"])
axes[1].axhline(0.8, color="k", ls=":")
axes[1].set(ylim=(0, 1), ylabel="fraction in the heavy mode (5, 5)")
plt.show()

# %% [markdown]
# > **Common confusion:** a common reading merges two different failures under "low-density regions":
# > (a) a *learned* score is inaccurate where there is little data (we see that in C.5), and (b) Langevin *mixes slowly*
# > between modes separated by a low-density valley. The experiment above has no learned score at all: the failure
# > is (b) alone, with the exact score.
#
# ### B.3 Annealed Langevin: smooth first, then sharpen
#
# NCSN's fix: run Langevin on a sequence of **smoothed** densities $p_{\sigma_1}, p_{\sigma_2}, \dots, p_{\sigma_L}$ with
# $\sigma_1 > \dots > \sigma_L$, each chain starting where the previous level ended. At large $\sigma$ the two modes merge
# into one wide bump (A.4), the chains move freely, and, because smoothing keeps the weights (A.3), they settle with
# about 1/5 and 4/5 of the mass near each side; as $\sigma$ shrinks they are carried along. The step size follows the
# variance of the level, $\alpha_i = \epsilon\, \sigma_i^2 / \sigma_L^2$ in NCSN; here the variance of a smoothed component
# is $1 + \sigma_i^2$, so we take $\alpha_i = 0.1\, (1 + \sigma_i^2)$. Levels: 10 geometric added $\sigma$ from 20 to 1,
# then the exact target ($\sigma = 0$), 100 steps each.

# %%
def my_annealed_langevin(score_fn, x, sigmas, step_sizes, steps_per_level, generator):
    """Langevin on score_fn(., sigma_i) for each level in turn, with step size step_sizes[i]."""
    for sigma, step_size in zip(sigmas, step_sizes):
        x = my_langevin(lambda y: score_fn(y, sigma), x, step_size, steps_per_level, generator)
    return x


def smoothed_score(x, sigma):
    return two_modes.noised(sigma).score(x) if sigma > 0 else two_modes.score(x)


added_sigmas = geometric_sigmas(20.0, 1.0, 10).double().tolist() + [0.0]  # 20, ..., 1, then the target itself
step_sizes = [0.1 * (1 + sigma**2) for sigma in added_sigmas]
generator = seed_everything(0)
x_annealed = my_annealed_langevin(smoothed_score, x_start, added_sigmas, step_sizes, 100, generator)
print(f"annealed Langevin: {heavy_fraction(x_annealed):.1%} in the heavy mode (truth: 80%)")
assert heavy_fraction(x_annealed) > 0.72

# %% [markdown]
# The library's `annealed_langevin` uses NCSN's rule $\alpha_i = \epsilon\, \sigma_i^2 / \sigma_L^2$ with levels $\sigma_i > 0$. With the
# total standard deviations $\sqrt{1 + \sigma_i^2}$ as the "levels" and $\epsilon = 0.1$, it is the same computation (only
# the last level, $\sqrt{1 + 0} = 1$, is the target itself):

# %%
total_sigmas = [math.sqrt(1 + sigma**2) for sigma in added_sigmas]  # 20.02, ..., 1.41, 1.0


def score_by_total_sigma(x, total):
    return smoothed_score(x, math.sqrt(max(total**2 - 1, 0.0)))


library = annealed_langevin(score_by_total_sigma, x_start, total_sigmas, 0.1, 100, seed_everything(0))
assert torch.allclose(library, x_annealed, atol=1e-8)
print("my_annealed_langevin == course_lib.topics.score.annealed_langevin (with sigma_i -> sqrt(1 + sigma_i^2))")

# %% [markdown]
# ### B.4 Tempering is not smoothing (optional deep dive)
#
# A different scheme is also often called "annealed Langevin" (it is the annealing of simulated annealing): run Langevin with the drift $\frac{1}{2\tau} \nabla \log p$ at a
# *temperature* $\tau$ that starts high and is lowered to 1. That drift is $\frac{1}{2} \nabla \log p^{1/\tau}$, so it samples the
# **tempered** density $p^{1/\tau} / Z_\tau$, not the smoothed $p_\sigma$. They flatten $p$ in different ways:
#
# - **Tempering keeps the support and changes the weights.** Where $p = 0$, $p^{1/\tau} = 0$ (it cannot help data on a
#   low-dimensional set, where $\log p = -\infty$ off the set). For well-separated modes of the same width $s$, near mode $k$
#   $p^{1/\tau} \approx \pi_k^{1/\tau}\, (2 \pi s^2)^{-d / (2\tau)} \exp\big(-\lVert x - \mu_k \rVert^2 / (2 \tau s^2)\big)$, whose integral is
#   $\pi_k^{1/\tau} (2 \pi s^2)^{-d/(2\tau)} (2 \pi \tau s^2)^{d/2}$; the factor after $\pi_k^{1/\tau}$ is the same for all $k$, so mode $k$ gets
#
# $$
# \frac{\pi_k^{1/\tau}}{\sum_j \pi_j^{1/\tau}} \qquad\text{of the mass: } \tfrac{4}{5} \text{ becomes } \tfrac{0.8^{1/2}}{0.8^{1/2} + 0.2^{1/2}} = \tfrac{2}{3} \text{ at } \tau = 2 .
# $$
#
# - **Smoothing fills the gaps and keeps the weights.** $p_\sigma > 0$ everywhere, and its components keep masses $\pi_k$ (A.3).
#
# Check the tempered masses on a grid, then run the tempered "annealing" ($\tau$ from 10 down to 1 on 10 geometric levels,
# step size $0.1\,\tau$, 100 steps each):

# %%
grid_1d = torch.linspace(-40, 40, 801, dtype=torch.float64)
gx, gy = torch.meshgrid(grid_1d, grid_1d, indexing="xy")
wide_grid = torch.stack([gx.flatten(), gy.flatten()], 1)  # (801^2, 2), spacing 0.1
log_p_wide = two_modes.log_prob(wide_grid)
for tau in (1.0, 2.0, 5.0):
    tempered = torch.softmax(log_p_wide / tau, dim=0)  # p^(1/tau), normalised on the grid
    on_grid = tempered[wide_grid.sum(1) > 0].sum().item()
    formula = 0.8 ** (1 / tau) / (0.8 ** (1 / tau) + 0.2 ** (1 / tau))
    print(f"tau = {tau:g}: heavy-mode mass of p^(1/tau) on the grid {on_grid:.5f}, formula {formula:.5f}")
    assert abs(on_grid - formula) < 1e-3

taus = geometric_sigmas(10.0, 1.0, 10).double().tolist()
generator = seed_everything(0)
x_tempered = my_annealed_langevin(lambda y, tau: two_modes.score(y) / tau, x_start, taus, [0.1 * t for t in taus],
                                  100, generator)
print(f"tempered 'annealing': {heavy_fraction(x_tempered):.1%} in the heavy mode: the hot levels flattened "
      f"the weights toward 50/50 and the cold levels froze them")

# %%
fig, axes = plt.subplots(2, 4, figsize=(12, 6))
for ax, tau in zip(axes[0], (1, 3, 10, 30)):
    density = torch.softmax(log_p_wide / tau, 0).reshape(801, 801)
    ax.imshow(density.numpy(), extent=(-40, 40, -40, 40), origin="lower", cmap="magma")
    ax.set(xlim=(-14, 14), ylim=(-14, 14), title=f"tempered p^(1/tau), tau = {tau}")
for ax, sigma in zip(axes[1], (0, 1.7, 4, 8)):
    density = torch.softmax(two_modes.noised(sigma).log_prob(wide_grid) if sigma else log_p_wide, 0).reshape(801, 801)
    ax.imshow(density.numpy(), extent=(-40, 40, -40, 40), origin="lower", cmap="magma")
    ax.set(xlim=(-14, 14), ylim=(-14, 14), title=f"smoothed p_sigma, sigma = {sigma}")
fig.suptitle("top: tempering widens each mode and evens out the weights; bottom: smoothing fills the valley, "
             "weights stay 1/5 and 4/5", fontsize=10)
plt.tight_layout()
plt.show()

# %%
fig, ax = plt.subplots(figsize=(6, 3))
names = ["truth", "plain Langevin", "annealed (smoothing)", "annealed (tempering)"]
values = [0.8, heavy_fraction(x_plain), heavy_fraction(x_annealed), heavy_fraction(x_tempered)]
ax.bar(names, values, color=["0.6", "tab:red", "tab:green", "tab:orange"])
for i, value in enumerate(values):
    ax.text(i, value + 0.02, f"{value:.1%}", ha="center")
ax.set(ylim=(0, 1), ylabel="fraction in the heavy mode")
plt.xticks(fontsize=8)
plt.show()
for name, value in zip(names, values):
    print(f"{name:22s} {value:9.1%} in the heavy mode")
assert abs(values[1] - 0.5) < 0.05 and values[2] > 0.72 and abs(values[3] - 0.5) < 0.1

# %% [markdown]
# > **Common confusion:** "annealed Langevin" in NCSN means Gaussian **smoothing** $p * \mathcal{N}(0, \sigma^2 I)$ with $\sigma$
# > lowered to almost 0, not **tempering** $p^{1/\tau}$ with $\tau$ lowered to 1. A common reading writes the tempered drift
# > $\frac{1}{2\tau} \nabla \log p$, names it "annealed Langevin" and then moves straight on to NCSN's noise levels as if they
# > were the same. They are not: tempering keeps the support and distorts the weights (the orange bar), smoothing fills the
# > valleys and keeps them (the green bar).
#
# Annealing does not reach exactly 80%: the chains settle at large $\sigma$, where the smoothed modes still overlap the
# diagonal, and freeze as $\sigma$ drops. More levels and more steps per level bring it closer (exercise-style
# question in G).
#
# Song and Ermon (2019) ran the same experiment (the same mixture, $\epsilon = 0.1$, 1,000 plain steps; 10 levels from
# $\sigma = 20$ to 1, 100 steps each) and show it as samples in their Fig. 3: with the exact score, Langevin dynamics gets
# the relative density of the two modes wrong, and annealed Langevin dynamics recovers it. They show pictures, not
# percentages; the percentages above are this chapter's own measurement, on the chains of B.2.
#
# ---
# ## C. Learning the score: implicit, sliced and denoising score matching
#
# ### C.1 The objective we would like
#
# Fit a network $s_\theta : \mathbb{R}^d \to \mathbb{R}^d$ to the score by minimising the **Fisher divergence**
# (explicit score matching)
#
# $$
# J_{\text{ESM}}(\theta) = \tfrac{1}{2}\, \mathbb{E}_{p(x)} \big\lVert s_\theta(x) - \nabla_x \log p(x) \big\rVert^2 .
# $$
#
# We have samples of $p$, not $\nabla \log p$. Three ways around that follow.
#
# ### C.2 Implicit score matching (Hyvärinen 2005)
#
# Expand the square: $J_{\text{ESM}} = \frac{1}{2} \mathbb{E}_p \lVert s_\theta \rVert^2 - \mathbb{E}_p \langle s_\theta, \nabla \log p \rangle + \frac{1}{2} \mathbb{E}_p \lVert \nabla \log p \rVert^2$.
# The last term does not depend on $\theta$. The middle one, using $p \nabla \log p = \nabla p$ and integrating by parts
# coordinate by coordinate (the boundary terms $[p\, s_{\theta,i}]$ vanish when $p\, s_\theta \to 0$ at infinity):
#
# $$
# \mathbb{E}_p \langle s_\theta, \nabla \log p \rangle = \int \sum_i s_{\theta,i}(x)\, \partial_i p(x)\, dx
# = -\int p(x) \sum_i \partial_i s_{\theta,i}(x)\, dx = -\mathbb{E}_p \big[\operatorname{tr} \nabla_x s_\theta(x)\big] .
# $$
#
# Therefore
#
# $$
# J_{\text{ESM}}(\theta) = \underbrace{\mathbb{E}_{p(x)} \Big[ \operatorname{tr} \nabla_x s_\theta(x) + \tfrac{1}{2} \lVert s_\theta(x) \rVert^2 \Big]}_{J_{\text{ISM}}(\theta)} + \tfrac{1}{2}\, \mathbb{E}_p \lVert \nabla \log p \rVert^2 ,
# $$
#
# and $J_{\text{ISM}}$ needs only samples of $p$. Check both identities by quadrature on a grid, for a random
# (untrained, so arbitrary) smooth field $s$:

# %%
torch.manual_seed(1)
random_field = ScoreMLP(dim=2, hidden=32, n_layers=2).double()  # an arbitrary smooth s(x)
grid_1d = torch.linspace(-9, 9, 361, dtype=torch.float64)
h = (grid_1d[1] - grid_1d[0]).item()
gx, gy = torch.meshgrid(grid_1d, grid_1d, indexing="xy")
grid = torch.stack([gx.flatten(), gy.flatten()], 1).requires_grad_(True)  # (361^2, 2)
field = random_field(grid)  # (G, 2)
div = course_lib.topics.score.divergence(field, grid, create_graph=False)  # (G,) tr grad s
weight = mixture.log_prob(grid.detach()).exp() * h**2  # p(x) dx on the grid
true_score = mixture.score(grid.detach())
field, grid = field.detach(), grid.detach()

cross = (weight * (field * true_score).sum(1)).sum()
minus_div = -(weight * div).sum()
print(f"E<s, grad log p> = {cross:.6f},   -E[tr grad s] = {minus_div:.6f}")
assert torch.isclose(cross, minus_div, rtol=1e-6)
esm = 0.5 * (weight * ((field - true_score) ** 2).sum(1)).sum()
ism_plus_const = (weight * (div + 0.5 * (field**2).sum(1))).sum() + 0.5 * (weight * (true_score**2).sum(1)).sum()
print(f"J_ESM = {esm:.6f},   J_ISM + 1/2 E|grad log p|^2 = {ism_plus_const:.6f}")
assert torch.isclose(esm, ism_plus_const, rtol=1e-6)

# %% [markdown]
# The trace needs the diagonal of the Jacobian $\nabla_x s_\theta$. Autograd gives a vector-Jacobian product per backward
# pass (chapter 01), so the exact trace costs **$d$ backward passes**, each kept in the graph (`create_graph=True`)
# because the loss itself is differentiated again for $\theta$. Step by step:

# %%
def my_ism_loss(model, x):
    """mean over x of tr(grad_x s(x)) + 1/2 |s(x)|^2, the trace by d backward passes."""
    x = x.detach().requires_grad_(True)  # (N, d)
    s = model(x)  # (N, d)
    trace = torch.zeros(len(x), dtype=s.dtype)
    for i in range(x.shape[1]):
        # row n of s depends on row n of x only, so the gradient of sum_n s[n, i] is d s_i / d x at every row
        grad_s_i = torch.autograd.grad(s[:, i].sum(), x, create_graph=True)[0]  # (N, d)
        trace = trace + grad_s_i[:, i]  # d s_i / d x_i
    return (trace + 0.5 * (s**2).sum(1)).mean()


torch.manual_seed(2)
model = ScoreMLP(dim=2, hidden=32, n_layers=2)
x_batch = mixture.sample(256, generator)  # (256, 2)
assert torch.allclose(my_ism_loss(model, x_batch), ism_loss(model, x_batch))
print(f"my_ism_loss == course_lib.topics.score.ism_loss = {ism_loss(model, x_batch).item():.5f}")

# %% [markdown]
# > **Common confusion:** the objective
# > $\mathbb{E}_{p}\big[\operatorname{tr}(\nabla_x s_\theta(x)) + \frac{1}{2} \lVert s_\theta(x) \rVert^2\big]$ is sometimes called
# > "denoising score matching". It is **implicit (Hyvärinen) score matching**. Denoising score matching (C.4) never
# > differentiates $s_\theta$ with respect to $x$; that is its whole point.
#
# ### C.3 Sliced score matching (Song et al. 2019) (optional deep dive)
#
# Replace the trace by a random projection. For a random vector $v$ with $\mathbb{E}[v v^\top] = I$ (Rademacher $\pm 1$
# entries, or $\mathcal{N}(0, I)$), and any matrix $J$:
#
# $$
# \mathbb{E}_v\big[v^\top J v\big] = \mathbb{E}_v\Big[\sum_{i,j} v_i J_{ij} v_j\Big] = \sum_{i,j} J_{ij}\, \mathbb{E}[v_i v_j] = \sum_{i,j} J_{ij}\, \delta_{ij} = \operatorname{tr} J
# $$
#
# (Hutchinson's estimator), so
#
# $$
# J_{\text{SSM}}(\theta) = \mathbb{E}_{p(x)} \mathbb{E}_{v} \Big[ v^\top \nabla_x s_\theta(x)\, v + \tfrac{1}{2} \lVert s_\theta(x) \rVert^2 \Big] = J_{\text{ISM}}(\theta) .
# $$
#
# And $v^\top J v$ costs **one** backward pass: $\nabla_x \langle v, s_\theta(x) \rangle = J^\top v$, then a dot product with $v$.
# In 2-D there are only four Rademacher vectors, so the expectation can be taken exactly:

# %%
x_point = x_batch[:1].clone().requires_grad_(True)  # (1, 2)
J = torch.autograd.functional.jacobian(lambda y: model(y)[0], x_point)[:, 0, :]  # (2, 2) d s_i / d x_j
signs = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
quadratic_forms = torch.stack([v @ J @ v for v in signs])  # (4,)
print("v^T J v for the 4 sign vectors:", quadratic_forms.detach().numpy().round(4),
      f" mean {quadratic_forms.mean():.5f}, tr J {J.trace():.5f}")
assert torch.isclose(quadratic_forms.mean(), J.trace(), atol=1e-6)


def my_ssm_loss(model, x, v):
    """mean over x of v^T (grad_x s) v + 1/2 |s|^2, one projection v (N, d) per point."""
    x = x.detach().requires_grad_(True)  # (N, d)
    s = model(x)  # (N, d)
    jt_v = torch.autograd.grad((s * v).sum(), x, create_graph=True)[0]  # (N, d): J^T v, row by row
    return ((jt_v * v).sum(1) + 0.5 * (s**2).sum(1)).mean()


v = torch.randint(0, 2, x_batch.shape, generator=generator).float() * 2 - 1  # (256, 2) Rademacher
assert torch.allclose(my_ssm_loss(model, x_batch, v), ssm_loss(model, x_batch, v=v))
exact_over_signs = sum(my_ssm_loss(model, x_batch, sign.expand_as(x_batch)) for sign in signs) / 4
assert torch.allclose(exact_over_signs, ism_loss(model, x_batch), atol=1e-5)
print("my_ssm_loss == course_lib.topics.score.ssm_loss; averaged over all 4 sign vectors it equals the ISM loss")

# %% [markdown]
# ### C.4 Denoising score matching (Vincent 2011)
#
# Give up the score of $p$ and learn the score of the smoothed $p_\sigma$ (A.3) instead. Write
# $q_\sigma(\tilde x \mid x) = \mathcal{N}(\tilde x; x, \sigma^2 I)$, whose score in $\tilde x$ is known:
# $\nabla_{\tilde x} \log q_\sigma(\tilde x \mid x) = -(\tilde x - x)/\sigma^2$. The explicit objective for $p_\sigma$ expands as in C.2,
#
# $$
# \tfrac{1}{2} \mathbb{E}_{p_\sigma} \lVert s_\theta - \nabla \log p_\sigma \rVert^2 = \tfrac{1}{2} \mathbb{E}_{p_\sigma} \lVert s_\theta \rVert^2 - \mathbb{E}_{p_\sigma} \langle s_\theta, \nabla \log p_\sigma \rangle + C_1 ,
# $$
#
# and the cross term moves the gradient inside the integral $p_\sigma(\tilde x) = \int p(x)\, q_\sigma(\tilde x \mid x)\, dx$:
#
# $$
# \mathbb{E}_{p_\sigma} \langle s_\theta, \nabla \log p_\sigma \rangle = \int \big\langle s_\theta(\tilde x), \nabla_{\tilde x} p_\sigma(\tilde x) \big\rangle d\tilde x
# = \iint p(x)\, q_\sigma(\tilde x \mid x)\, \big\langle s_\theta(\tilde x), \nabla_{\tilde x} \log q_\sigma(\tilde x \mid x) \big\rangle\, dx\, d\tilde x
# = \mathbb{E}_{x, \tilde x} \big\langle s_\theta(\tilde x), \nabla_{\tilde x} \log q_\sigma(\tilde x \mid x) \big\rangle .
# $$
#
# The same expansion of the **denoising** objective has the same two $\theta$-terms:
#
# $$
# J_{\text{DSM}}(\theta) = \tfrac{1}{2}\, \mathbb{E}_{p(x)} \mathbb{E}_{q_\sigma(\tilde x \mid x)} \Big\lVert s_\theta(\tilde x) + \frac{\tilde x - x}{\sigma^2} \Big\rVert^2
# = \tfrac{1}{2} \mathbb{E} \lVert s_\theta \rVert^2 - \mathbb{E} \langle s_\theta, \nabla \log q_\sigma \rangle + C_2 ,
# $$
#
# so $J_{\text{DSM}} = J_{\text{ESM}}(p_\sigma) + C_2 - C_1$ with $C_2 - C_1 = \frac{1}{2}\mathbb{E}\lVert \nabla \log q_\sigma \rVert^2 - \frac{1}{2} \mathbb{E}_{p_\sigma} \lVert \nabla \log p_\sigma \rVert^2 = \frac{d}{2\sigma^2} - \frac{1}{2} \mathbb{E}_{p_\sigma} \lVert \nabla \log p_\sigma \rVert^2$
# (as $\tilde x - x = \sigma \varepsilon$ and $\mathbb{E}\lVert \varepsilon \rVert^2 = d$). No Jacobian, no trace: a regression onto
# $-\varepsilon / \sigma$. The price: it learns $\nabla \log p_\sigma$, not $\nabla \log p$.
#
# Monte Carlo check: for two different fields, $J_{\text{DSM}} - J_{\text{ESM}}(p_\sigma)$ must be the same constant (up to the
# Monte Carlo error, which we compute and allow 4 standard errors of).

# %%
sigma, n_mc = 0.5, 200_000
generator = seed_everything(3)
x_clean = mixture.sample(n_mc, generator).double()  # (n, 2)
eps = torch.randn(n_mc, 2, generator=generator, dtype=torch.float64)
x_noisy = x_clean + sigma * eps
noised_score = mixture.noised(sigma).score(x_noisy)  # exact grad log p_sigma at x~
constant = 2 / (2 * sigma**2) - 0.5 * (noised_score**2).sum(1).mean()  # d / (2 sigma^2) - 1/2 E|grad log p_sigma|^2
torch.manual_seed(4)
fields = {"random MLP": ScoreMLP(dim=2, hidden=32).double(), "s(x) = -x": lambda y: -y}
per_point = {}
for name, s_fn in fields.items():
    with torch.no_grad():
        s_value = s_fn(x_noisy)
    dsm_terms = 0.5 * ((s_value + eps / sigma) ** 2).sum(1)  # (n,)
    esm_terms = 0.5 * ((s_value - noised_score) ** 2).sum(1)  # (n,)
    per_point[name] = dsm_terms - esm_terms
    difference, se = per_point[name].mean().item(), per_point[name].std().item() / math.sqrt(n_mc)
    print(f"{name:11s}: J_DSM - J_ESM(p_sigma) = {difference:.4f} ± {se:.4f};  constant C2 - C1 = {constant:.4f}")
    assert abs(difference - constant) < 4 * se
paired = per_point["random MLP"] - per_point["s(x) = -x"]
print(f"difference between the two fields: {paired.mean():.4f} ± {paired.std() / math.sqrt(n_mc):.4f} (should be 0)")
assert abs(paired.mean()) < 4 * paired.std() / math.sqrt(n_mc)


# %%
def my_dsm_loss(model, x, sigma, noise):
    """1/2 mean |s(x + sigma eps) + eps / sigma|^2, eps given (N, d)."""
    x_noisy = x + sigma * noise  # (N, d)
    return 0.5 * ((model(x_noisy) + noise / sigma) ** 2).sum(1).mean()


noise = torch.randn(x_batch.shape, generator=generator)
assert torch.allclose(my_dsm_loss(model, x_batch, 0.3, noise), dsm_loss(model, x_batch, 0.3, noise=noise))
print("my_dsm_loss == course_lib.topics.score.dsm_loss")

# %% [markdown]
# ### C.5 Training all three on the 2-D mixture
#
# Same network (`ScoreMLP`: 2 → 3 hidden SiLU layers → 2; SiLU because ISM and SSM differentiate the network with
# respect to $x$, and a smooth network has a smooth Jacobian, while a ReLU network's Jacobian is piecewise constant and
# jumps at every kink), same data, same optimiser and steps. DSM uses $\sigma = 0.3$, so we
# compare it with both $\nabla \log p$ and its actual target $\nabla \log p_{0.3}$. The error is
# $\mathbb{E}_p \lVert s_\theta - s \rVert^2 / \mathbb{E}_p \lVert s \rVert^2$.

# %%
dsm_sigma = 0.3
generator = seed_everything(0)
train_points = mixture.sample(20_000, generator)  # (20000, 2)
losses = {"ISM": lambda m, batch: ism_loss(m, batch[0]),
          "SSM": lambda m, batch: ssm_loss(m, batch[0], generator=generator),
          "DSM": lambda m, batch: dsm_loss(m, batch[0], dsm_sigma, generator)}
score_models, histories = {}, {}
for name, loss_fn in losses.items():
    torch.manual_seed(0)  # the same initial weights for all three
    score_models[name] = ScoreMLP(dim=2, hidden=cfg.sm_hidden)
    optimizer = torch.optim.Adam(score_models[name].parameters(), lr=3e-3)
    histories[name] = fit(score_models[name], loss_fn, minibatches(train_points, batch_size=256, generator=generator),
                          steps=cfg.sm_steps, optimizer=optimizer,
                          scheduler=warmup_cosine(optimizer, cfg.sm_steps // 20, cfg.sm_steps), desc=name)

test_points = mixture.sample(4_000, generator).double()
exact_clean, exact_noised = mixture.score(test_points), mixture.noised(dsm_sigma).score(test_points)
print(f"{'':4s} {'ms/step':>8} {'error vs grad log p':>20} {'error vs grad log p_0.3':>24}")
for name, model in score_models.items():
    with torch.no_grad():
        learned = model(test_points.float()).double()
    error_clean = ((learned - exact_clean) ** 2).sum(1).mean() / (exact_clean**2).sum(1).mean()
    error_noised = ((learned - exact_noised) ** 2).sum(1).mean() / (exact_noised**2).sum(1).mean()
    print(f"{name:4s} {1000 * histories[name].wall_time_s / cfg.sm_steps:8.2f} {error_clean:20.4f} {error_noised:24.4f}")
course_lib.core.plotting.plot_losses(*histories.values(), labels=list(histories), smooth=20,
                                title="training losses (each up to its own constant)")
plt.show()

# %% [markdown]
# The ISM and SSM losses are negative (they equal $J_{\text{ESM}}$ minus $\frac{1}{2}\mathbb{E}\lVert \nabla \log p \rVert^2$); DSM's sits far above zero
# because its constant $\frac{d}{2\sigma^2}$ is large, and its per-step noise is large too (the target $-\varepsilon/\sigma$ has variance
# $d / \sigma^2$): for small $\sigma$ DSM is a noisy regression. Now the fields. Top: the learned fields with the true one
# (arrow lengths clipped at 8, the same scale in every panel). Bottom: the error $\lVert s_\theta - s \rVert$ with two contours
# of $\log p$ (white): the fits are good where the data is and poor where it is not: in the corners and in the empty
# centre of the ring. (Under the `ci` profile the three models are trained for a few seconds only; `cpu` shows what
# they can do.)

# %%
lim = 7.0
coarse = torch.linspace(-lim, lim, 19)
cx, cy = torch.meshgrid(coarse, coarse, indexing="xy")
arrow_points = torch.stack([cx.flatten(), cy.flatten()], 1)  # (361, 2)
fine = torch.linspace(-lim, lim, 150)
fx, fy = torch.meshgrid(fine, fine, indexing="xy")
fine_points = torch.stack([fx.flatten(), fy.flatten()], 1)  # (22500, 2)
log_p_fine = mixture.log_prob(fine_points.double()).reshape(150, 150)
targets = {"ISM": mixture, "SSM": mixture, "DSM": mixture.noised(dsm_sigma)}

def clipped_quiver(ax, points, field, color, clip=8.0):
    """Arrows on a regular grid, lengths clipped at |field| = clip, the same scale in every panel."""
    spacing = (points[1, 0] - points[0, 0]).item()
    field = field * (clip / field.norm(dim=1, keepdim=True)).clamp(max=1.0)  # (M, 2), |field| <= clip
    ax.imshow(log_p_fine.clamp(min=-15).numpy(), extent=(-lim, lim, -lim, lim), origin="lower", cmap="Blues")
    ax.quiver(points[:, 0], points[:, 1], field[:, 0], field[:, 1], color=color, angles="xy", scale_units="xy",
              scale=clip / (0.9 * spacing), width=0.005)


fig, axes = plt.subplots(2, 4, figsize=(14, 7))
clipped_quiver(axes[0, 0], arrow_points, mixture.score(arrow_points.double()).float(), "k")
axes[0, 0].set_title("true score grad log p")
axes[1, 0].imshow(log_p_fine.clamp(min=-15).numpy(), extent=(-lim, lim, -lim, lim), origin="lower", cmap="Blues")
axes[1, 0].set_title("log p")
for col, (name, model) in enumerate(score_models.items(), start=1):
    with torch.no_grad():
        arrows = model(arrow_points)
        error = (model(fine_points).double() - targets[name].score(fine_points.double())).norm(dim=1)
    clipped_quiver(axes[0, col], arrow_points, arrows, "tab:red")
    axes[0, col].set_title(f"{name}, learned")
    image = axes[1, col].imshow(error.reshape(150, 150).clamp(max=10).numpy(), extent=(-lim, lim, -lim, lim),
                                origin="lower", cmap="inferno", vmin=0, vmax=10)
    axes[1, col].contour(fine.numpy(), fine.numpy(), log_p_fine.numpy(), levels=[-6.0, -3.0], colors="w",
                         linewidths=0.7)
    axes[1, col].set_title(f"{name} error (vs {'p_0.3' if name == 'DSM' else 'p'})")
for ax in axes.flat:
    ax.set_aspect("equal")
fig.colorbar(image, ax=axes[1, :].tolist(), shrink=0.7, label="error (clipped at 10)")
plt.show()

density = mixture.log_prob(fine_points.double()).exp()
high = density > 1e-2 * density.max()
for name, model in score_models.items():
    with torch.no_grad():
        error = (model(fine_points).double() - targets[name].score(fine_points.double())).norm(dim=1)
    print(f"{name}: mean error where p > 1% of its peak {error[high].mean():.3f}, elsewhere in the box "
          f"{error[~high].mean():.3f}")

# %% [markdown]
# ### C.6 What each costs as the dimension grows (optional deep dive)
#
# Per training step: ISM needs $d$ extra backward passes (all kept for the $\theta$-gradient), SSM one, DSM none. We time
# one step (loss, then `backward()` for $\theta$) of the same MLP on random $d$-dimensional data, and measure the memory
# the step keeps for backward: the bytes of all tensors autograd saves (`saved_tensor_bytes`, via
# `torch.autograd.graph.saved_tensors_hooks`).

# %%
def time_one_step(loss_fn, model, x, repeats=3):
    """Median seconds of loss_fn(model, x).backward() over a few repeats."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        loss_fn(model, x).backward()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


cost_losses = {"ISM": lambda m, x: ism_loss(m, x), "SSM": lambda m, x: ssm_loss(m, x, generator=generator),
               "DSM": lambda m, x: dsm_loss(m, x, 0.3, generator)}
costs = {name: {"ms": [], "MB": []} for name in cost_losses}
for d in cfg.cost_dims:
    torch.manual_seed(0)
    model = ScoreMLP(dim=d, hidden=128)
    x_d = torch.randn(128, d, generator=generator)  # (128, d)
    for name, loss_fn in cost_losses.items():
        costs[name]["ms"].append(1000 * time_one_step(loss_fn, model, x_d))
        costs[name]["MB"].append(saved_tensor_bytes(lambda: loss_fn(model, x_d)) / 2**20)
print(f"{'d':>5} " + " ".join(f"{name + ' ms':>9} {name + ' MB':>8}" for name in costs))
for i, d in enumerate(cfg.cost_dims):
    print(f"{d:5d} " + " ".join(f"{costs[name]['ms'][i]:9.2f} {costs[name]['MB'][i]:8.2f}" for name in costs))

fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for name in costs:
    axes[0].loglog(cfg.cost_dims, costs[name]["ms"], "o-", label=name)
    axes[1].loglog(cfg.cost_dims, costs[name]["MB"], "o-", label=name)
axes[0].set(xlabel="dimension d", ylabel="ms per training step", title="time (batch 128, MLP 128 wide)")
axes[1].set(xlabel="dimension d", ylabel="MB saved for backward", title="memory kept for backward")
for ax in axes:
    ax.set_xticks(cfg.cost_dims, labels=[str(d) for d in cfg.cost_dims])
    ax.minorticks_off()
axes[0].legend()
plt.show()
ratio = costs["ISM"]["MB"][-1] / costs["ISM"]["MB"][0]
print(f"ISM memory grew {ratio:.1f}x from d = {cfg.cost_dims[0]} to d = {cfg.cost_dims[-1]}; "
      f"DSM's grew {costs['DSM']['MB'][-1] / costs['DSM']['MB'][0]:.2f}x")
assert costs["ISM"]["MB"][-1] > 3 * costs["SSM"]["MB"][-1]

# %% [markdown]
# For images ($d = 784$ for MNIST, $d = 196{,}608$ for 256×256 RGB) the exact trace is out of the question; SSM and DSM
# cost about one ordinary training step. DSM is also the simplest and, with a noise level per network input (E), the
# basis of NCSN and of diffusion models.
#
# > **Common confusion:** a common paraphrase of the manifold argument for adding noise (Song and Ermon 2019) is "the
# > score is a gradient in high dimension, so one can't know whether $x$ is on the manifold". The actual point is stronger: when the data lies
# > on a low-dimensional set, $p$ has no density in the ambient space, $\nabla_x \log p$ is **undefined** off (and across)
# > that set, and score matching is inconsistent. Adding Gaussian noise gives $p_\sigma$, which has a positive density and a
# > finite score everywhere (A.3).
#
# ---
# ## D. Tweedie's formula
#
# ### D.1 Derivation
#
# Let $\tilde x = x + \sigma \varepsilon$, $x \sim p$, $\varepsilon \sim \mathcal{N}(0, I)$. Differentiate
# $p_\sigma(\tilde x) = \int p(x)\, \mathcal{N}(\tilde x; x, \sigma^2 I)\, dx$ under the integral sign, with
# $\nabla_{\tilde x} \mathcal{N}(\tilde x; x, \sigma^2 I) = \mathcal{N}(\tilde x; x, \sigma^2 I)\, \frac{x - \tilde x}{\sigma^2}$:
#
# $$
# \nabla_{\tilde x} p_\sigma(\tilde x) = \int p(x)\, \mathcal{N}(\tilde x; x, \sigma^2 I)\, \frac{x - \tilde x}{\sigma^2}\, dx .
# $$
#
# Divide by $p_\sigma(\tilde x)$; by Bayes, $p(x)\, \mathcal{N}(\tilde x; x, \sigma^2 I) / p_\sigma(\tilde x) = p(x \mid \tilde x)$:
#
# $$
# \nabla_{\tilde x} \log p_\sigma(\tilde x) = \int p(x \mid \tilde x)\, \frac{x - \tilde x}{\sigma^2}\, dx = \frac{\mathbb{E}[x \mid \tilde x] - \tilde x}{\sigma^2}
# \qquad\Longrightarrow\qquad
# \boxed{\ \mathbb{E}[x \mid \tilde x] = \tilde x + \sigma^2\, \nabla_{\tilde x} \log p_\sigma(\tilde x)\ } .
# $$
#
# The best (minimum mean squared error) denoiser is one score evaluation away. It also explains DSM: the minimiser of
# $\mathbb{E}\lVert s(\tilde x) + (\tilde x - x)/\sigma^2 \rVert^2$ is the conditional mean
# $s^*(\tilde x) = (\mathbb{E}[x \mid \tilde x] - \tilde x)/\sigma^2$, which by Tweedie is $\nabla \log p_\sigma(\tilde x)$.
#
# ### D.2 An exact check on the mixture
#
# For the mixture, the posterior mean has its own closed form. Given the component $k$, $x \sim \mathcal{N}(\mu_k, s_k^2 I)$ and
# $\tilde x \mid x \sim \mathcal{N}(x, \sigma^2 I)$: a Gaussian prior times a Gaussian likelihood. Completing the square in $x$,
#
# $$
# -\frac{\lVert x - \mu_k \rVert^2}{2 s_k^2} - \frac{\lVert \tilde x - x \rVert^2}{2 \sigma^2}
# = -\frac{1}{2}\Big(\frac{1}{s_k^2} + \frac{1}{\sigma^2}\Big) \Big\lVert x - \frac{\sigma^2 \mu_k + s_k^2 \tilde x}{s_k^2 + \sigma^2} \Big\rVert^2 + \text{const},
# $$
#
# so $\mathbb{E}[x \mid \tilde x, k] = \mu_k + \frac{s_k^2}{s_k^2 + \sigma^2} (\tilde x - \mu_k)$, and $p(k \mid \tilde x)$ is the responsibility
# $r_k^\sigma(\tilde x)$ of the **noised** mixture. Averaging over $k$:
#
# $$
# \mathbb{E}[x \mid \tilde x] = \sum_k r_k^\sigma(\tilde x) \Big[\mu_k + \frac{s_k^2}{s_k^2 + \sigma^2} (\tilde x - \mu_k)\Big] .
# $$
#
# Step by step, against Tweedie with the exact noised score and against the library:

# %%
def my_posterior_mean(mixture, x_noisy, sigma):
    """E[x | x~] = sum_k r_k(x~) [mu_k + s_k^2 / (s_k^2 + sigma^2) (x~ - mu_k)], x_noisy (N, 2)."""
    r = mixture.noised(sigma).responsibilities(x_noisy)  # (N, K), p(k | x~)
    shrink = mixture.stds**2 / (mixture.stds**2 + sigma**2)  # (K,)
    per_component = mixture.means[None] + shrink[None, :, None] * (x_noisy[:, None, :] - mixture.means[None])  # (N, K, 2)
    return (r[:, :, None] * per_component).sum(1)  # (N, 2)


x_noisy = 6 * torch.randn(500, 2, dtype=torch.float64, generator=generator)
for sigma in (0.1, 1.0, 3.0):
    closed_form = my_posterior_mean(mixture, x_noisy, sigma)
    tweedie = x_noisy + sigma**2 * mixture.noised(sigma).score(x_noisy)
    assert torch.allclose(closed_form, tweedie, atol=1e-10)
    assert torch.allclose(closed_form, mixture_posterior_mean(mixture, x_noisy, sigma), atol=1e-12)
    assert torch.allclose(tweedie, tweedie_denoise(x_noisy, mixture.noised(sigma).score(x_noisy), sigma))
    print(f"sigma = {sigma}: max |closed-form posterior mean - Tweedie| = {(closed_form - tweedie).abs().max():.2e}")

# %% [markdown]
# ### D.3 Tweedie as a denoiser
#
# Corrupt true samples with noise $\sigma$ and denoise them with one score evaluation. The mean squared error drops from
# $\mathbb{E}\lVert \sigma \varepsilon \rVert^2 = 2 \sigma^2$ to the smallest any denoiser can reach. The slider moves $\sigma$.

# %%
generator = seed_everything(5)
clean = mixture.sample(600, generator).double()  # (600, 2)
unit_noise = torch.randn(600, 2, generator=generator, dtype=torch.float64)


def draw_tweedie(axes, sigma):
    noisy = clean + sigma * unit_noise
    denoised = tweedie_denoise(noisy, mixture.noised(sigma).score(noisy), sigma)
    for ax, points, title in zip(axes, (clean, noisy, denoised),
                                 ("clean x", f"noisy x~ = x + {sigma:g} eps",
                                  "Tweedie: E[x | x~]")):
        ax.scatter(points[:, 0], points[:, 1], s=3)
        ax.set(xlim=(-8, 8), ylim=(-8, 8), aspect="equal", title=title)
    mse_noisy = ((noisy - clean) ** 2).sum(1).mean()
    mse_denoised = ((denoised - clean) ** 2).sum(1).mean()
    axes[2].set_xlabel(f"MSE {mse_denoised:.3f} (noisy: {mse_noisy:.3f})")


course_lib.core.widgets.interactive_figure(
    draw_tweedie, ncols=3, figsize=(12, 4),
    sigma=ipywidgets.SelectionSlider(options=[0.1, 0.3, 0.5, 1.0, 2.0, 4.0], value=1.0, description="sigma"))

# %%
for sigma in (0.3, 1.0, 4.0):
    noisy = clean + sigma * unit_noise
    denoised = tweedie_denoise(noisy, mixture.noised(sigma).score(noisy), sigma)
    print(f"sigma = {sigma}: MSE noisy {((noisy - clean) ** 2).sum(1).mean():.3f} -> Tweedie "
          f"{((denoised - clean) ** 2).sum(1).mean():.3f};  spread (total variance) of clean {clean.var(0).sum():.2f}, "
          f"of denoised {denoised.var(0).sum():.2f}")
    assert ((denoised - clean) ** 2).sum(1).mean() < ((noisy - clean) ** 2).sum(1).mean()

# %% [markdown]
# > **Common confusion:** Tweedie gives the posterior **mean** $\mathbb{E}[x \mid \tilde x]$, not a sample of $p(x \mid \tilde x)$. At large
# > $\sigma$ the posterior is spread over several modes and its mean lies between them: the denoised cloud shrinks
# > toward the centre (its spread is far below the data's, printed above). To *sample*, one must denoise gradually
# > (annealed Langevin, E; diffusion, chapter 11), using Tweedie at most for the last small step.
#
# ---
# ## E. A noise-conditional score network (NCSN)
#
# ### E.1 One network for all noise levels
#
# Song and Ermon (2019) put the pieces together:
# 1. a ladder of noise levels $\sigma_1 > \sigma_2 > \dots > \sigma_L$, **geometric** (constant ratio, so neighbouring $p_{\sigma_i}$
#    overlap equally), with $\sigma_1$ about the largest distance between data points (so the first level is one blob,
#    B.3) and $\sigma_L$ small enough that $p_{\sigma_L} \approx p$;
# 2. one network $s_\theta(\tilde x, \sigma)$ that takes the level as an input, trained by DSM at all levels at once;
# 3. annealed Langevin through the levels, starting from uniform noise.
#
# Our ladder: $L = 10$ levels from $\sigma_1 = 8$ to $\sigma_{10} = 0.1$ (the data's components have std 0.5). NCSNv2's rule of
# thumb takes $\sigma_1$ equal to the largest pairwise distance (about 11 here, printed below); 8 is already enough for
# this ring to become one blob (A.4, the slider at $\sigma = 8$).
#
# The three pieces, drawn: training at the top (DSM at a random level per point, E.2), sampling below (annealed Langevin
# through the levels, B.3 and E.5):

# %%
course_lib.topics.score.schematic()
plt.show()

# %%
ncsn_cfg = course_lib.zoo.settings("ncsn_2d")
sigmas = geometric_sigmas(ncsn_cfg.sigma_max, ncsn_cfg.sigma_min, ncsn_cfg.n_levels)  # (10,)
print("sigmas:", sigmas.numpy().round(3), " ratio", (sigmas[1] / sigmas[0]).item())
sample_of_data = mixture.sample(2_000, generator)
print(f"largest distance between 2,000 data points: {torch.cdist(sample_of_data, sample_of_data).max():.2f}")

# %% [markdown]
# ### E.2 The loss: DSM weighted by $\sigma^2$
#
# The DSM loss at level $\sigma$ is $\ell(\theta; \sigma) = \frac{1}{2} \mathbb{E} \lVert s_\theta(\tilde x, \sigma) + (\tilde x - x)/\sigma^2 \rVert^2$.
# Its target $-\varepsilon/\sigma$ has size $\sqrt{d}/\sigma$, so unweighted the small-$\sigma$ levels would dominate the sum by
# factors up to $(\sigma_1/\sigma_L)^2 = 6400$. NCSN weights level $\sigma$ by $\lambda(\sigma) = \sigma^2$:
#
# $$
# \sigma^2\, \ell(\theta; \sigma) = \tfrac{1}{2}\, \mathbb{E} \Big\lVert \sigma\, s_\theta(\tilde x, \sigma) + \frac{\tilde x - x}{\sigma} \Big\rVert^2 = \tfrac{1}{2}\, \mathbb{E} \big\lVert \sigma\, s_\theta(x + \sigma \varepsilon, \sigma) + \varepsilon \big\rVert^2 ,
# \qquad
# \mathcal{L}(\theta) = \frac{1}{L} \sum_{i=1}^{L} \sigma_i^2\, \ell(\theta; \sigma_i) ,
# $$
#
# every term a regression onto $-\varepsilon$, of the same size at every level. In practice each point of a batch draws one
# level at random, which estimates the average over levels. With the **exact** score, the printout shows the smallest
# value each level can reach: unweighted it spans four orders of magnitude, weighted it stays between 0 and $d/2 = 1$.

# %%
x_clean = mixture.sample(50_000, generator).double()
eps = torch.randn(x_clean.shape, generator=generator, dtype=torch.float64)
print(f"{'sigma':>7} {'min of l(sigma)':>16} {'min of sigma^2 l(sigma)':>24}")
for sigma in sigmas.double().tolist():
    x_noisy = x_clean + sigma * eps
    exact = mixture.noised(sigma).score(x_noisy)
    unweighted = 0.5 * ((exact + eps / sigma) ** 2).sum(1).mean()
    weighted = 0.5 * ((sigma * exact + eps) ** 2).sum(1).mean()
    assert torch.isclose(weighted, sigma**2 * unweighted)
    print(f"{sigma:7.3f} {unweighted:16.4f} {weighted:24.4f}")

# %% [markdown]
# ### E.3 The network, step by step
#
# Input $\tilde x \in \mathbb{R}^2$ and $\sigma$. The level enters as **sinusoidal features** of $\log \sigma$ (the same features as a
# transformer's position embedding, chapter 04, and the diffusion time embedding, chapter 11: $\sin$ and $\cos$ of the input
# times frequencies on a geometric grid), through a small MLP, added to every hidden layer. The output is **divided by
# $\sigma$**: the score of $p_\sigma$ has size of order $1/\sigma$ near the data, so the network only has to output something
# of order one (NCSNv2, Song and Ermon 2020, divides an unconditional network's output by $\sigma$ the same way).

# %%
class MyNCSN(nn.Module):
    """s_theta(x, sigma) for x (N, 2) and sigma (N,): an MLP with a sigma embedding added to each layer."""

    def __init__(self, hidden=128, n_layers=3, emb_dim=32, emb_scale=4.0):
        super().__init__()
        self.emb_dim, self.emb_scale = emb_dim, emb_scale
        self.input = nn.Linear(2, hidden)
        self.sigma_mlp = nn.Sequential(nn.Linear(emb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(n_layers))
        self.sigma_proj = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(n_layers))
        self.out = nn.Linear(hidden, 2)

    def forward(self, x, sigma):
        e = self.sigma_mlp(sinusoidal_embedding(self.emb_scale * sigma.log(), self.emb_dim))  # (N, hidden)
        h = self.input(x) + e  # (N, hidden)
        for layer, proj in zip(self.layers, self.sigma_proj):
            h = layer(F.silu(h)) + proj(e)  # (N, hidden)
        return self.out(F.silu(h)) / sigma[:, None]  # (N, 2)


torch.manual_seed(0)
library_net = NoiseConditionalScoreNet(hidden=ncsn_cfg.hidden)
my_net = MyNCSN(hidden=ncsn_cfg.hidden)
my_net.load_state_dict(library_net.state_dict())  # same names, same shapes: the same weights
x_test = 3 * torch.randn(64, 2, generator=generator)
sigma_test = sigmas[torch.randint(0, len(sigmas), (64,), generator=generator)]  # (64,) mixed levels
assert torch.allclose(my_net(x_test, sigma_test), library_net(x_test, sigma_test), atol=1e-6)
assert torch.allclose(my_net(x_test, torch.full((64,), 0.5)), library_net(x_test, 0.5), atol=1e-6)
print(f"MyNCSN == course_lib.topics.score.NoiseConditionalScoreNet; {sum(p.numel() for p in my_net.parameters()):,} parameters")


# %%
def my_ncsn_loss(model, x, sigmas, levels, noise):
    """1/2 mean |sigma s(x + sigma eps, sigma) + eps|^2, level index (N,) and eps (N, 2) given."""
    sigma = sigmas[levels]  # (N,)
    x_noisy = x + sigma[:, None] * noise  # (N, 2)
    return 0.5 * ((sigma[:, None] * model(x_noisy, sigma) + noise) ** 2).sum(1).mean()


levels = torch.randint(0, len(sigmas), (256,), generator=generator)
noise = torch.randn(256, 2, generator=generator)
assert torch.allclose(my_ncsn_loss(my_net, x_batch, sigmas, levels, noise),
                      ncsn_loss(library_net, x_batch, sigmas, levels=levels, noise=noise), atol=1e-6)
print("my_ncsn_loss == course_lib.topics.score.ncsn_loss")

# %% [markdown]
# ### E.4 Training under the active profile
#
# The recipe that made the shipped checkpoint:

# %%
print(inspect.getsource(course_lib.zoo.ncsn_2d.train))

# %%
print(ncsn_cfg)
generator = seed_everything(0)
x_train = mixture.sample(ncsn_cfg.n_train, generator)  # (n_train, 2)
ncsn = NoiseConditionalScoreNet(hidden=ncsn_cfg.hidden).to(DEVICE)
optimizer = torch.optim.Adam(ncsn.parameters(), lr=ncsn_cfg.lr)
history = fit(ncsn, lambda m, batch: ncsn_loss(m, batch[0], sigmas, generator),
              minibatches(x_train, batch_size=ncsn_cfg.batch_size, generator=generator), steps=ncsn_cfg.steps,
              optimizer=optimizer, device=DEVICE, scheduler=warmup_cosine(optimizer, ncsn_cfg.steps // 20, ncsn_cfg.steps),
              desc="NCSN on 2-D")
course_lib.core.plotting.plot_losses(history, smooth=50, title=f"NCSN loss, profile {ncsn_cfg.profile}")
plt.show()


def errors_by_level(model):
    """relative_score_error at every level of the ladder, for a model on DEVICE."""
    def score_fn(x, sigma):
        with torch.no_grad():
            return model(x.to(DEVICE), sigma).cpu()
    return [relative_score_error(score_fn, mixture, s, 4_000, torch.Generator().manual_seed(0)) for s in sigmas.tolist()]


errors_trained_here = errors_by_level(ncsn)
print("relative score error by level, trained here:", np.round(errors_trained_here, 4))

# %% [markdown]
# ### E.5 The shipped checkpoint: scores, samples, numbers
#
# Under `ci` the network above trained for 300 steps only, and its relative errors at the smallest levels are large (about
# 0.3 where the shipped network's are below 0.01): that is the profile, not a bug in your code. Under `cpu` it runs the
# shipped recipe. Whatever your profile, the figures below use the weights trained with the `cpu` recipe (10,000 steps).

# %%
entry = read_manifest()["ncsn_2d"]
shipped = NoiseConditionalScoreNet(**entry["recipe"]["model"]).to(DEVICE)  # the architecture the recipe used
load_checkpoint(shipped, "ncsn_2d")  # checks the sha256, loads the weights, sets eval mode


def shipped_score(x, sigma):
    """s_theta(x, sigma) of the shipped network, for CPU points x (N, 2)."""
    with torch.no_grad():
        return shipped(x.to(DEVICE), sigma).cpu()


print("manifest metrics:", entry["metrics"])
print(f"trained in {entry['wall_time_s']} s on {entry['device']} ({entry['recipe']['profile']} profile)")
errors_shipped = errors_by_level(shipped)
between = torch.logspace(math.log10(0.08), math.log10(10.0), 40).tolist()  # also sigmas it never saw in training
errors_between = [relative_score_error(shipped_score, mixture, s, 2_000, torch.Generator().manual_seed(0))
                  for s in between]
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.loglog(between, errors_between, "-", color="0.6", label="shipped, at any sigma")
ax.loglog(sigmas, errors_shipped, "o", color="tab:blue", label="shipped, at the 10 training levels")
ax.loglog(sigmas, errors_trained_here, "s--", color="tab:orange", label=f"trained above ({ncsn_cfg.profile} profile)")
ax.set(xlabel="sigma", ylabel="E|s_theta - s|^2 / E|s|^2", title="relative error of the learned score")
ax.legend(fontsize=8)
plt.show()
inside = [e for s, e in zip(between, errors_between) if sigmas[-1] <= s <= sigmas[0]]
print(f"largest error at a training level {max(errors_shipped):.4f}; between levels up to {max(inside):.4f}; "
      f"outside the ladder up to {max(errors_between):.4f}")
assert max(errors_shipped) < 0.05

# %% [markdown]
# The network only ever saw ten values of $\sigma$, yet it is about as accurate between them: nothing in the loss asks
# for that, the embedding does. The features are $\sin$ and $\cos$ of $4 \log \sigma$ times frequencies $\le 1$, so between two
# neighbouring levels ($\log$-ratio 0.49) even the fastest feature turns by only 2 radians, and the MLP sees nearby inputs
# for nearby $\sigma$. With `emb_scale=25.0` (try it: pass it to `NoiseConditionalScoreNet` in E.4 and train under `cpu`) the fastest features turn by 12 radians
# per level, the network memorises ten unrelated inputs, and we measured relative errors up to 0.7 between the levels.
# Outside the ladder (below 0.1, above 8) the error grows: that is extrapolation, not interpolation.
# Annealed Langevin only queries the ten levels, so it would not notice the memorising network either; diffusion models (chapter 11) sample the noise
# level from a continuum during training instead.
#
# Sampling: annealed Langevin from uniform noise on $[-8, 8]^2$, 100 steps per level, $\alpha_i = \epsilon\, \sigma_i^2/\sigma_L^2$ with
# $\epsilon = 2 \times 10^{-3}$ (so $\alpha_i / \sigma_i^2 = 0.2$ at every level), then one Tweedie step at $\sigma_L$ to remove the last bit of
# noise. For contrast, plain Langevin with the learned score at the smallest level, from the same start.

# %%
generator = seed_everything(0)
x_uniform = (torch.rand(cfg.ncsn_samples, 2, generator=generator) * 2 - 1) * 8  # (n, 2)
samples, snapshots = annealed_langevin(shipped_score, x_uniform, sigmas, ncsn_cfg.eps, ncsn_cfg.steps_per_level,
                                       generator, keep_levels=True)
denoised = tweedie_denoise(samples, shipped_score(samples, sigmas[-1].item()), sigmas[-1].item())
plain = langevin(lambda y: shipped_score(y, sigmas[-1].item()), x_uniform, ncsn_cfg.eps,
                 ncsn_cfg.n_levels * ncsn_cfg.steps_per_level, generator)
truth, truth_again = mixture.sample(cfg.ncsn_samples, generator), mixture.sample(cfg.ncsn_samples, generator)


def report(name, points):
    fractions = mode_fractions(points, mixture)
    tv = 0.5 * (fractions - mixture.weights).abs().sum().item()
    print(f"{name:34s} energy distance {energy_distance(points, truth):8.4f}   mode-weight TV {tv:.3f}   "
          f"share in the 4 big modes {fractions[::2].sum():.3f}   mean log p {mixture.log_prob(points.double()).mean():7.3f}")
    return tv, fractions[::2].sum().item()


report("true samples (the floor)", truth_again)
tv_annealed, big_annealed = report("annealed Langevin", samples)
report("annealed Langevin + Tweedie step", denoised)
tv_plain, big_plain = report("plain Langevin at sigma_L", plain)
print("the true share of the big modes: 0.750")
assert tv_annealed < 0.08 and tv_plain > tv_annealed
assert big_annealed > 0.68 and big_plain < 0.6  # annealing keeps the 3:1 weights; plain Langevin evens them out

fig, axes = plt.subplots(1, 4, figsize=(15, 4))
for ax, points, title in zip(axes, (truth, denoised, plain),
                             ("true samples", "NCSN: annealed Langevin + Tweedie", "plain Langevin, learned score")):
    ax.scatter(points[:, 0], points[:, 1], s=2)
    ax.set(xlim=(-7, 7), ylim=(-7, 7), aspect="equal", title=title)
width = 0.27
for offset, points, label in ((-width, truth, "truth"), (0, denoised, "annealed"), (width, plain, "plain")):
    axes[3].bar(np.arange(8) + offset, mode_fractions(points, mixture), width, label=label)
axes[3].set(xlabel="mode (0 = angle 0, counter-clockwise)", ylabel="fraction", title="mode weights (3:1 alternating)")
axes[3].legend(fontsize=8)
plt.show()

# %% [markdown]
# Plain Langevin sends each chain to the mode whose basin it starts in, so each mode gets the share of the starting
# square that its basin covers, about 1/8 each whatever its weight: the four big modes end with about half of the
# samples (printed above) instead of 3/4, and the 3:1 pattern is lost, exactly as in B.2. Annealed Langevin recovers
# it. The energy distance notices the wrong weights only a little (the points are all in the right places); the
# mode-weight total variation does: several times larger than annealed Langevin's.
#
# > **Common confusion:** NCSN's starting distribution is often described as "the simplest, fully perturbed
# > distribution". In NCSN the chains start from **uniform noise** (here on $[-8, 8]^2$); "fully perturbed data", a sample
# > of $p_{\sigma_1}$, is the diffusion-model view of chapter 11, where the forward process ends at a known Gaussian. Both work
# > when $\sigma_1$ is large, because $p_{\sigma_1}$ is then close to a wide blob either way.
#
# ### E.6 Watching the annealing
#
# The slider moves through the levels: the samples after the Langevin steps at $\sigma_i$, on the arrows of the learned
# score $s_\theta(\cdot, \sigma_i)$.

# %%
arrow_grid = torch.stack(torch.meshgrid(torch.linspace(-7, 7, 17), torch.linspace(-7, 7, 17), indexing="xy"),
                         -1).reshape(-1, 2)  # (289, 2)


def draw_annealing(ax, level):
    points = snapshots[level]
    if level == 0:
        ax.set_title("start: uniform noise")
    else:
        sigma = sigmas[level - 1].item()
        arrows = shipped_score(arrow_grid, sigma)
        ax.quiver(arrow_grid[:, 0], arrow_grid[:, 1], arrows[:, 0], arrows[:, 1], color="tab:red", alpha=0.6)
        ax.set_title(f"after level {level} of {len(sigmas)}: sigma = {sigma:.3g}")
    ax.scatter(points[:, 0], points[:, 1], s=2, color="k")
    ax.set(xlim=(-8.5, 8.5), ylim=(-8.5, 8.5), aspect="equal")


course_lib.core.widgets.interactive_figure(
    draw_annealing, figsize=(5, 5),
    level=ipywidgets.IntSlider(value=3, min=0, max=len(sigmas), description="level"))

# %% [markdown]
# ---
# ## F. Exercises
#
# Each exercise cell holds a working solution; in the student version it is replaced by a stub. Write your own, run the
# check cell, and reveal the reference only when stuck.
#
# **Exercise 1: the optimum of DSM.** By D.1 the minimiser of the DSM loss at level $\sigma$ is
# $\mathbb{E}\big[\nabla_{\tilde x} \log q_\sigma(\tilde x \mid x) \mid \tilde x\big] = \mathbb{E}\big[-(\tilde x - x)/\sigma^2 \mid \tilde x\big]$. Compute it for a
# `GaussianMixture2D` **without** its `score` method, from the posterior mean of D.2 (you may call `mixture.noised(sigma).responsibilities`).
# The check compares it with $\nabla \log p_\sigma$.

# %% tags=["exercise"]
def dsm_optimum(mixture, x_noisy, sigma):
    """E[-(x~ - x) / sigma^2 | x~] for x ~ mixture and x~ = x + sigma eps; x_noisy (N, 2) float64 -> (N, 2)."""
    ### BEGIN SOLUTION
    r = mixture.noised(sigma).responsibilities(x_noisy)  # (N, K)
    shrink = mixture.stds**2 / (mixture.stds**2 + sigma**2)  # (K,)
    posterior_means = mixture.means[None] + shrink[None, :, None] * (x_noisy[:, None, :] - mixture.means[None])
    posterior_mean = (r[:, :, None] * posterior_means).sum(1)  # (N, 2): E[x | x~]
    return (posterior_mean - x_noisy) / sigma**2
    ### END SOLUTION


# %%
generator = seed_everything(7)
exercise_inputs = [(mixture, 5 * torch.randn(50, 2, generator=generator, dtype=torch.float64), s) for s in (0.2, 1.0, 4.0)]
exercise_inputs.append((two_modes, 8 * torch.randn(20, 2, generator=generator, dtype=torch.float64), 2.0))
course_lib.core.check.check_function(dsm_optimum, lambda mix, x, s: mix.noised(s).score(x), exercise_inputs,
                                rtol=1e-6, atol=1e-8)

# %%
course_lib.core.check.show_solution('''def dsm_optimum(mixture, x_noisy, sigma):
    # E[grad log q(x~ | x) | x~] = E[(x - x~) / sigma^2 | x~] = (E[x | x~] - x~) / sigma^2, and E[x | x~] is D.2's formula
    return (course_lib.topics.score.mixture_posterior_mean(mixture, x_noisy, sigma) - x_noisy) / sigma**2''')

# %% [markdown]
# **Exercise 2: annealed Langevin, NCSN style.** Implement `ncsn_annealed_langevin(score_fn, x, sigmas, eps, steps_per_level, generator)`:
# for each $\sigma_i$ (largest first) run `steps_per_level` ULA steps on `score_fn(x, sigma_i)` with step size
# $\alpha_i = \epsilon\, \sigma_i^2 / \sigma_L^2$. Draw the noise exactly as `my_langevin` does
# (`torch.randn(x.shape, generator=generator, dtype=x.dtype)`, one call per step) so the check can compare with the library
# for the same seed.

# %% tags=["exercise"]
def ncsn_annealed_langevin(score_fn, x, sigmas, eps, steps_per_level, generator):
    """Annealed Langevin: alpha_i = eps * sigma_i^2 / sigma_L^2, steps_per_level ULA steps per level."""
    ### BEGIN SOLUTION
    sigmas = [float(s) for s in sigmas]
    for sigma in sigmas:
        alpha = eps * sigma**2 / sigmas[-1] ** 2
        for _ in range(steps_per_level):
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            x = x + 0.5 * alpha * score_fn(x, sigma) + math.sqrt(alpha) * z
    return x
    ### END SOLUTION


# %%
def run_both(seed, sigma_list, eps):
    start = torch.zeros(200, 2, dtype=torch.float64)

    def exact(y, s):
        return mixture.noised(s).score(y)

    mine = ncsn_annealed_langevin(exact, start, sigma_list, eps, 20, torch.Generator().manual_seed(seed))
    reference = annealed_langevin(exact, start, sigma_list, eps, 20, torch.Generator().manual_seed(seed))
    return mine, reference


for seed, sigma_list, eps in [(0, [4.0, 1.0, 0.3], 0.01), (1, geometric_sigmas(8.0, 0.1, 5).tolist(), 2e-3)]:
    mine, reference = run_both(seed, sigma_list, eps)
    course_lib.core.check.check_tensor(mine, reference, name=f"ncsn_annealed_langevin (seed {seed})", atol=1e-8)

# %%
course_lib.core.check.show_solution(course_lib.topics.score.annealed_langevin)

# %% [markdown]
# **Exercise 3: how small a step?** *Derive, then check.* From B.1, ULA on $\mathcal{N}(0, v)$ has stationary variance $v / (1 - \epsilon/(4v))$. Write
# `largest_step(v, tolerance)`: the largest $\epsilon$ whose stationary variance is at most $(1 + \text{tolerance})\, v$. The check plugs
# your $\epsilon$ back into the formula and simulates it. (Then think: a 2-D mixture with component std 0.5 and $\sigma_L = 0.1$; what does
# it say about $\alpha_L = 2 \times 10^{-3}$ in E.5?)

# %% tags=["exercise"]
def largest_step(v, tolerance):
    """Largest ULA step size eps with v / (1 - eps / (4 v)) <= (1 + tolerance) v."""
    ### BEGIN SOLUTION
    return 4 * v * (1 - 1 / (1 + tolerance))
    ### END SOLUTION


# %%
for v, tolerance in [(1.0, 0.01), (0.25, 0.05), (4.0, 0.2)]:
    eps = largest_step(v, tolerance)
    course_lib.core.check.check_tensor(torch.tensor(v / (1 - eps / (4 * v))), torch.tensor((1 + tolerance) * v),
                                  name=f"stationary variance at largest_step({v}, {tolerance})")
eps = largest_step(1.0, 0.2)
simulated = langevin(lambda y: -y, torch.zeros(20_000, 1, dtype=torch.float64), eps, 400, torch.Generator().manual_seed(8))
print(f"simulated stationary variance at eps = {eps:.4f}: {simulated.var():.3f} (target 1.2)")
assert abs(simulated.var().item() - 1.2) < 0.05

# %%
course_lib.core.check.show_solution('''def largest_step(v, tolerance):
    # v / (1 - eps / (4 v)) = (1 + tol) v  <=>  1 - eps / (4 v) = 1 / (1 + tol)  <=>  eps = 4 v (1 - 1 / (1 + tol))
    return 4 * v * (1 - 1 / (1 + tolerance))
# for tol = 1%: eps ~ 0.04 v. With v = 0.5^2 + 0.1^2 = 0.26 at the last level, alpha_L = 2e-3 inflates the variance
# by only 0.2%; the larger alpha_1 = 12.8 at sigma_1 = 8 (v = 64.25) by 5%, and later levels correct it.''')

# %% [markdown]
# **Exercise 4: the size of the noise.** *Predict, then run.* B.1 says the Langevin noise must be $\sqrt{\epsilon}\, z$, not
# $\epsilon\, z$. Take the target $\mathcal{N}(0, 1)$ (score $-x$), $\epsilon = 0.05$, and the *wrong* update
# $x \leftarrow x + \frac{\epsilon}{2} (-x) + \epsilon\, z$. Before running, write down the variance the chains settle at (the target's is
# 1). You can guess, or redo B.1's stationary-variance computation with the new noise.

# %% tags=["exercise"]
MY_WRONG_NOISE_VARIANCE = None  # your prediction: the stationary variance with noise eps * z, eps = 0.05
### BEGIN SOLUTION
MY_WRONG_NOISE_VARIANCE = 0.05
### END SOLUTION


# %%
assert MY_WRONG_NOISE_VARIANCE is not None, "write your prediction in the cell above first"
step_wrong, chains_wrong = 0.05, torch.zeros(20_000, 1, dtype=torch.float64)
generator = torch.Generator().manual_seed(9)
for _ in range(1_000):  # 1,000 steps: the chains forget the start after about 2 / eps = 40 steps
    noise_wrong = torch.randn(chains_wrong.shape, generator=generator, dtype=torch.float64)
    chains_wrong = chains_wrong + 0.5 * step_wrong * (-chains_wrong) + step_wrong * noise_wrong
right_noise = langevin(lambda y: -y, torch.zeros(20_000, 1, dtype=torch.float64), step_wrong, 1_000,
                       torch.Generator().manual_seed(9))
print(f"your prediction {MY_WRONG_NOISE_VARIANCE:g}; measured variance with noise eps z: {chains_wrong.var():.4f}; "
      f"with sqrt(eps) z (ULA): {right_noise.var():.4f}; the target's: 1")
assert chains_wrong.var() < 0.1 and abs(right_noise.var().item() - 1 / (1 - step_wrong / 4)) < 0.04

# %%
course_lib.core.check.show_solution('''# With noise eps z the recursion is x' = (1 - eps/2) x + eps z, so the stationary variance V solves
#   V = (1 - eps/2)^2 V + eps^2   =>   V = eps^2 / (eps - eps^2/4) = eps / (1 - eps/4)  ~  eps.
# For eps = 0.05 that is 0.0506: the chains sit in a cloud 20 times too narrow, and as eps -> 0 they collapse onto the
# mode (gradient ascent on log p). With sqrt(eps) z the same computation gives V = 1 / (1 - eps/4) = 1.0127 (B.1).''')

# %% [markdown]
# ## Summary
#
# | key equation | derived in | checked by |
# |---|---|---|
# | $\nabla_x \log p(x) = \sum_k r_k(x)\, (\mu_k - x) / s_k^2$, and $p_\sigma$ is the mixture with $s_k^2 + \sigma^2$ | A.2 and A.3 | autograd of the log-density in A.2; quadrature of the convolution in A.3 |
# | $x_{k+1} = x_k + \frac{\epsilon}{2} \nabla_x \log p(x_k) + \sqrt{\epsilon}\, z_k$, stationary variance $v / (1 - \epsilon / 4v)$ on $\mathcal{N}(0, v)$ | B.1 | simulated chains in B.1; exercises 3 and 4 in F |
# | $J_\text{ESM} = \mathbb{E}_p\big[\operatorname{tr} \nabla_x s_\theta + \frac{1}{2} \lVert s_\theta \rVert^2\big] + \text{const}$ (implicit score matching) | C.2 | quadrature on a grid in C.2 |
# | $J_\text{DSM} = \frac{1}{2} \mathbb{E} \lVert s_\theta(\tilde x) + (\tilde x - x)/\sigma^2 \rVert^2 = J_\text{ESM}(p_\sigma) + \text{const}$ | C.4 | Monte Carlo with two fields in C.4 |
# | Tweedie: $\mathbb{E}[x \mid \tilde x] = \tilde x + \sigma^2 \nabla_{\tilde x} \log p_\sigma(\tilde x)$ | D.1 | the closed-form posterior mean of the mixture in D.2; exercise 1 in F |
# | NCSN loss $\frac{1}{L} \sum_i \frac{1}{2} \mathbb{E} \lVert \sigma_i s_\theta(x + \sigma_i \varepsilon, \sigma_i) + \varepsilon \rVert^2$ | E.2 | the exact score's values per level in E.2; the trained network's errors in E.4 and E.5 |
#
# **Three things to remember.**
#
# 1. The score $\nabla_x \log p$ needs no normalising constant, and Langevin dynamics samples with it alone; but inside one
#    basin it says nothing about how much mass the other basins hold, so plain Langevin gets the weights of separated
#    modes wrong (B.2).
# 2. Smoothing by Gaussian noise keeps the weights and fills the valleys: annealed Langevin through
#    $\sigma_1 > \dots > \sigma_L$ recovers them. Tempering $p^{1/\tau}$ does not.
# 3. Denoising score matching is a regression onto $-\varepsilon/\sigma$ and learns $\nabla \log p_\sigma$; by Tweedie's formula
#    the best denoiser and the score of $p_\sigma$ are the same object. That is the bridge to diffusion models
#    (chapter 11).

# %% [markdown]
# ---
# ## G. Discussion questions
#
# 1. The score ignores the normalising constant (A.1), and B.2 showed that it also ignores the *relative* mass of
#    well-separated modes. Are these the same fact? What information about $p$ does the score field in one basin carry?
# 2. Annealing reached about 77-79%, not 80% (B.3). Which knob would you turn first: more levels, more steps per level,
#    a larger $\sigma_1$, or a smaller step? Predict, then try it in B.3.
# 3. DSM learns $\nabla \log p_\sigma$ instead of $\nabla \log p$ (C.4), and its loss gets noisier as $\sigma \to 0$. How does NCSN turn both
#    weaknesses into features?
# 4. ISM's exact trace costs $d$ backward passes (C.6). For a 64×64 RGB image, how many is that, and how does SSM's
#    variance (the error of Hutchinson's estimator) depend on the off-diagonal entries of the Jacobian?
# 5. Tweedie's formula makes every score model a denoiser, and (chapter 11) every denoiser a score model. Why does the
#    final Tweedie step in E.5 improve the samples, while applying Tweedie at $\sigma = 4$ (D.3) gives points that look
#    nothing like data?
