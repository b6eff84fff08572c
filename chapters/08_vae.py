# ---
# jupyter:
#   course:
#     time_on_cpu:
#       ci:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-02'
#         seconds: 25
#       cpu:
#         machine: 2 CPU cores, no GPU, shared with other jobs (earlier session)
#         measured: '2026-11-23'
#         seconds: 304
#         source: the chapter's table before course_lib.tools.timing, commit f4f6033 (nbval/nbconvert)
#       gpu:
#         note: no GPU where the course was timed; the shipped recipe took 20 min on the shared 2-core CPU
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
# # 08 · The variational autoencoder
#
# A VAE is a latent-variable model, $z \sim \mathcal{N}(0, I)$ and $x \mid z \sim p_\theta(x \mid z)$, trained by
# maximising a lower bound on $\log p_\theta(x)$ that an encoder $q_\phi(z \mid x)$ makes computable. This chapter
# derives that bound twice and checks it on a model where everything is known exactly, derives the Gaussian KL,
# measures why the "reparameterization trick" matters, and then builds, trains and explores a conv VAE on MNIST.
#
# **Goals.** After this chapter you can
# - derive the ELBO with Jensen's inequality and from the identity $\log p(x) = \text{ELBO} + \operatorname{KL}(q \,\Vert\, p(z \mid x))$,
#   and say what the gap is;
# - derive $\operatorname{KL}(\mathcal{N}(\mu, \sigma^2) \,\Vert\, \mathcal{N}(0, 1))$ and use `logvar` correctly;
# - compare the reparameterization (pathwise) and score-function (REINFORCE) gradient estimators, by number;
# - build a conv VAE step by step, train it on binarized MNIST, and report its test $-\text{ELBO}$ in nats per image
#   (and an importance-weighted bound), knowing which numbers in the literature it can be compared with;
# - read a 2-D latent space, interpolate between digits, and see what $\beta$ does.
#
# **Prerequisites.** Chapter 01 (cross entropy, KL, BCE from logits, `fit`). Gaussians: density, mean, covariance.
# Expectations, and Jensen's inequality for a concave function (stated in 01, B.1).
#
# **Time.** A 90-minute study-group session: 25 min the ELBO (A), 10 min the Gaussian KL (B), 15 min gradient
# estimators (C), 25 min the model, its number and its pictures (D, E), 15 min widgets and discussion (E, G).
# The exercises (F) take about 30 minutes at home.
#
# **What runs, and how long** (the whole chapter, top to bottom, on a fresh kernel; `ci` with 1 torch thread as the
# test suite runs it, `cpu` with torch's default threads; `make time PROFILE=ci` or `PROFILE=cpu` measures it and
# writes the time here, in the notebook's metadata and in the README):
#
# | profile | what trains | measured |
# |---|---|---|
# | `ci` | the 16-d conv VAE for 60 steps on 5,000 images; 5 β-VAEs fine-tuned 25 steps each | 25 s, measured 2026-12-02 on 2 CPU cores, no GPU, otherwise idle |
# | `cpu` | the 16-d conv VAE for 2,000 steps on all 60,000 images (4.3 epochs, 148 s); 5 β-VAEs fine-tuned 300 steps each (112 s) | 5 min 4 s, measured 2026-11-23 on 2 CPU cores, no GPU, shared with other jobs (earlier session) |
# | `gpu` | the shipped recipe: 12,000 steps (25.6 epochs); 5 β-VAEs fine-tuned 3,000 steps each | not measured: no GPU where the course was timed; the shipped recipe took 20 min on the shared 2-core CPU |
#
# Whatever the profile, the figures and widgets use the two shipped checkpoints (`vae_mnist`, 16-d latent, and
# `vae_mnist_2d`). Set the profile before starting JupyterLab: `COURSE_PROFILE=ci`, `cpu` or `gpu`.

# %%
import inspect
import math

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import MultivariateNormal, Normal, kl_divergence
from tqdm.auto import tqdm

import course_lib
import course_lib.core.check
import course_lib.core.checkpointing
import course_lib.core.plotting
import course_lib.core.widgets
import course_lib.topics.vae
import course_lib.zoo
from course_lib import device, per_profile, profile, seed_everything
from course_lib.core.train import fit, minibatches, warmup_cosine
from course_lib.data import load_mnist
from course_lib.topics.vae import (ConvVAE, binarize, binarized_mnist, decode_probabilities, elbo_terms, evaluate_elbo,
                                   evaluate_iwae, gaussian_kl, iwae_bound)

DEVICE = device()
generator = seed_everything(0)
print(f"profile = {profile()}, device = {DEVICE}, torch threads = {torch.get_num_threads()}")

# %% [markdown]
# ---
# ## A. The evidence lower bound (ELBO)
#
# ### A.1 The model
#
# A latent-variable model draws a code $z \in \mathbb{R}^J$ from a prior and then the data from a decoder:
#
# $$
# p(z) = \mathcal{N}(0, I), \qquad x \mid z \sim p_\theta(x \mid z), \qquad
# p_\theta(x) = \int p_\theta(x \mid z)\, p(z)\, dz, \qquad
# p_\theta(z \mid x) = \frac{p_\theta(x \mid z)\, p(z)}{p_\theta(x)} .
# $$
#
# $p_\theta(x)$ is the **marginal likelihood** (the *evidence*): the probability the model gives to $x$ once the latent
# is integrated out. The prior has no parameters here (Kingma & Welling write $p_\theta(z)$ for generality; every
# VAE in this course uses the fixed $\mathcal{N}(0, I)$). Training by maximum likelihood wants $\log p_\theta(x)$, but the
# integral over $z$ has no closed form once the decoder is a neural network, and neither does the posterior
# $p_\theta(z \mid x)$. The VAE brings in a second network, the encoder $q_\phi(z \mid x)$, an approximation of the posterior.
#
# ### A.2 Derivation 1: Jensen's inequality
#
# Multiply and divide by $q_\phi(z \mid x)$ inside the integral (allowed wherever $q_\phi > 0$, and we take a $q$ that is
# positive wherever $p_\theta(x, z)$ is):
#
# $$
# \log p_\theta(x) = \log \int p_\theta(x, z)\, dz
# = \log \int q_\phi(z \mid x)\, \frac{p_\theta(x, z)}{q_\phi(z \mid x)}\, dz
# = \log \mathbb{E}_{q_\phi(z \mid x)}\!\left[\frac{p_\theta(x, z)}{q_\phi(z \mid x)}\right] .
# $$
#
# $\log$ is concave, so Jensen's inequality gives $\log \mathbb{E}[W] \ge \mathbb{E}[\log W]$ for any positive random variable $W$:
#
# $$
# \log p_\theta(x) \;\ge\; \mathbb{E}_{q_\phi(z \mid x)}\big[\log p_\theta(x, z) - \log q_\phi(z \mid x)\big] \;=:\; \operatorname{ELBO}(\theta, \phi; x) .
# $$
#
# Jensen is an equality exactly when $W$ is constant, i.e. when $p_\theta(x, z) / q_\phi(z \mid x)$ does not depend on $z$.
#
# ### A.3 Derivation 2: the gap is a KL divergence
#
# Write the joint as posterior times evidence, $p_\theta(x, z) = p_\theta(z \mid x)\, p_\theta(x)$, inside the ELBO:
#
# $$
# \operatorname{ELBO} = \mathbb{E}_{q}\big[\log p_\theta(z \mid x) + \log p_\theta(x) - \log q_\phi(z \mid x)\big]
# = \log p_\theta(x) - \mathbb{E}_{q}\!\left[\log \frac{q_\phi(z \mid x)}{p_\theta(z \mid x)}\right]
# = \log p_\theta(x) - \operatorname{KL}\big(q_\phi(z \mid x) \,\Vert\, p_\theta(z \mid x)\big),
# $$
#
# where $\log p_\theta(x)$ came out of the expectation because it does not depend on $z$. Rearranged:
#
# $$
# \log p_\theta(x) = \operatorname{ELBO}(\theta, \phi; x) + \operatorname{KL}\big(q_\phi(z \mid x) \,\Vert\, p_\theta(z \mid x)\big) .
# $$
#
# This is an identity, not a bound. Since $\operatorname{KL} \ge 0$ it gives the bound of A.2 again, and it says more: the gap
# is exactly how far $q_\phi$ is from the true posterior, so it closes when (and only when) $q_\phi(z \mid x) = p_\theta(z \mid x)$.
# Maximising the ELBO over $\phi$ (with $\theta$ fixed, $\log p_\theta(x)$ is a constant) is minimising that KL.
#
# ### A.4 Checked on a model where everything is exact: linear-Gaussian
#
# Take $p(z) = \mathcal{N}(0, I_J)$ and a linear decoder with Gaussian noise, $x = W z + b + \sigma \varepsilon$ with
# $\varepsilon \sim \mathcal{N}(0, I_D)$. Then $x$ is a sum of independent Gaussians, so it is Gaussian with mean $b$ and covariance
# $W I W^\top + \sigma^2 I$:
#
# $$
# p(x) = \mathcal{N}\big(x;\, b,\; W W^\top + \sigma^2 I\big) .
# $$
#
# The posterior: as a function of $z$, $\log p(z \mid x) = \log p(x \mid z) + \log p(z) + \text{const}$, and
#
# $$
# \log p(x \mid z) + \log p(z) = -\frac{\lVert x - b - W z \rVert^2}{2\sigma^2} - \frac{\lVert z \rVert^2}{2} + \text{const}
# = -\frac{1}{2} z^\top \Big(I + \frac{W^\top W}{\sigma^2}\Big) z + z^\top \frac{W^\top (x - b)}{\sigma^2} + \text{const}.
# $$
#
# A quadratic in $z$ is a Gaussian: with precision $\Lambda = I + W^\top W / \sigma^2$, completing the square gives
#
# $$
# p(z \mid x) = \mathcal{N}(m, S), \qquad S = \Lambda^{-1}, \qquad m = S\, \frac{W^\top (x - b)}{\sigma^2} .
# $$
#
# The ELBO of a Gaussian $q = \mathcal{N}(\mu, \Sigma)$ has a closed form too. Three expectations, each from
# $\mathbb{E}_q[(z - \mu)(z - \mu)^\top] = \Sigma$. With $r = x - b - W\mu$,
#
# $$
# \mathbb{E}_q \lVert x - b - W z \rVert^2 = \mathbb{E}_q \lVert r - W (z - \mu) \rVert^2
# = \lVert r \rVert^2 - 2 r^\top W\, \mathbb{E}_q[z - \mu] + \mathbb{E}_q\big[(z - \mu)^\top W^\top W (z - \mu)\big]
# = \lVert r \rVert^2 + \operatorname{tr}(W \Sigma W^\top),
# $$
#
# $\mathbb{E}_q \lVert z \rVert^2 = \lVert \mu \rVert^2 + \operatorname{tr} \Sigma$, and $\mathbb{E}_q[(z - \mu)^\top \Sigma^{-1} (z - \mu)] = \operatorname{tr}(\Sigma^{-1} \Sigma) = J$. So
#
# $$
# \begin{aligned}
# \mathbb{E}_q[\log p(x \mid z)] &= -\tfrac{D}{2} \log(2\pi\sigma^2) - \frac{\lVert r \rVert^2 + \operatorname{tr}(W \Sigma W^\top)}{2\sigma^2}, \\
# \mathbb{E}_q[\log p(z)] &= -\tfrac{J}{2} \log(2\pi) - \tfrac{1}{2}\big(\lVert \mu \rVert^2 + \operatorname{tr}\Sigma\big), \\
# -\mathbb{E}_q[\log q(z)] &= \tfrac{J}{2} \log(2\pi) + \tfrac{1}{2} \log\det\Sigma + \tfrac{J}{2},
# \end{aligned}
# $$
#
# and the ELBO is their sum. The cell below checks, in float64:
# 1. at the exact posterior, $q = p(z \mid x)$, the ELBO equals $\log p(x)$;
# 2. for a thousand random Gaussians $q$, ELBO $< \log p(x)$ and $\log p(x) - \text{ELBO} = \operatorname{KL}(q \,\Vert\, p(z \mid x))$, the KL computed
#    independently by `torch.distributions.kl_divergence`;
# 3. the closed form against a Monte Carlo average of $\log p(x, z) - \log q(z)$ over samples $z \sim q$.

# %%
generator = seed_everything(1)
J, D, noise_sd = 2, 5, 0.5  # latent size, data size, decoder noise sigma
f64 = dict(dtype=torch.float64)
W = torch.randn(D, J, generator=generator, **f64)  # (D, J)
W[:, 1] = 0.8 * W[:, 0] + 0.4 * W[:, 1]  # correlated columns: a correlated posterior (used in A.5)
b = torch.randn(D, generator=generator, **f64)  # (D,)
z_true = torch.randn(J, generator=generator, **f64)  # (J,)
x_obs = W @ z_true + b + noise_sd * torch.randn(D, generator=generator, **f64)  # (D,) one observation

log_px = MultivariateNormal(b, W @ W.T + noise_sd**2 * torch.eye(D, **f64)).log_prob(x_obs)  # exact log p(x)
precision = torch.eye(J, **f64) + W.T @ W / noise_sd**2  # (J, J) Lambda
S = torch.linalg.inv(precision)  # (J, J) posterior covariance
m = S @ W.T @ (x_obs - b) / noise_sd**2  # (J,) posterior mean


def linear_gaussian_elbo(mu, Sigma):
    """Closed-form ELBO of q = N(mu, Sigma) for the observation x_obs."""
    r = x_obs - b - W @ mu  # (D,)
    expected_log_lik = -D / 2 * math.log(2 * math.pi * noise_sd**2) - (r @ r + torch.trace(W @ Sigma @ W.T)) / (2 * noise_sd**2)
    expected_log_prior = -J / 2 * math.log(2 * math.pi) - 0.5 * (mu @ mu + torch.trace(Sigma))
    entropy_q = J / 2 * math.log(2 * math.pi) + 0.5 * torch.logdet(Sigma) + J / 2
    return expected_log_lik + expected_log_prior + entropy_q


def log_joint(z):
    """log p(x_obs, z) = log p(x_obs | z) + log p(z), for z of shape (n, J) -> (n,)."""
    log_lik = Normal(z @ W.T + b, noise_sd).log_prob(x_obs).sum(-1)  # (n,)
    return log_lik + Normal(0.0, 1.0).log_prob(z).sum(-1)


# 1. equality at the exact posterior
print(f"log p(x) = {log_px:.10f}\nELBO(q = posterior) = {linear_gaussian_elbo(m, S):.10f}")
assert abs(linear_gaussian_elbo(m, S) - log_px) < 1e-10

# 2. random Gaussians: below log p(x), by exactly KL(q || posterior)
gaps, kls = [], []
for _ in range(1000):
    mu = m + torch.randn(J, generator=generator, **f64)
    A = torch.randn(J, J, generator=generator, **f64)
    Sigma = A @ A.T + 0.05 * torch.eye(J, **f64)  # a random covariance
    gaps.append(log_px - linear_gaussian_elbo(mu, Sigma))
    kls.append(kl_divergence(MultivariateNormal(mu, Sigma), MultivariateNormal(m, S)))
gaps, kls = torch.stack(gaps), torch.stack(kls)
assert (gaps > 0).all() and torch.allclose(gaps, kls, atol=1e-9)
print(f"1000 random q: min gap = {gaps.min():.4f} > 0; max |gap - KL(q || posterior)| = {(gaps - kls).abs().max():.1e}")

# 3. the closed form against Monte Carlo, for a q near the posterior: shifted mean, diagonal covariance
mu, Sigma = m + torch.tensor([0.3, 0.2], **f64), torch.diag(torch.diagonal(S))
z = MultivariateNormal(mu, Sigma).sample((200_000,))  # (n, J), seeded by seed_everything
log_w = log_joint(z) - MultivariateNormal(mu, Sigma).log_prob(z)  # (n,) log p(x, z) - log q(z)
standard_error = log_w.std() / math.sqrt(len(log_w))
print(f"q = N(m + (0.3, 0.2), diag S): ELBO closed form {linear_gaussian_elbo(mu, Sigma):.4f}, "
      f"Monte Carlo {log_w.mean():.4f} ± {standard_error:.4f}")
assert abs(log_w.mean() - linear_gaussian_elbo(mu, Sigma)) < 4 * standard_error

# %% [markdown]
# Jensen's equality condition, seen directly: at the exact posterior, the "weight" $\log p(x, z) - \log q(z \mid x)$
# equals $\log p(x)$ for **every** sample $z$, not just on average (a Monte Carlo estimate with zero variance).
# Elsewhere it scatters, and its mean sits below $\log p(x)$:

# %%
z_post = MultivariateNormal(m, S).sample((5,))  # (5, J)
log_w_post = log_joint(z_post) - MultivariateNormal(m, S).log_prob(z_post)  # (5,)
print("log p(x,z) - log q(z|x) at the posterior:", log_w_post.numpy().round(10), " log p(x) =", round(log_px.item(), 10))
assert torch.allclose(log_w_post, log_px.expand(5), atol=1e-10)
print(f"at q = N(m + (0.3, 0.2), diag S): mean {log_w.mean():.3f}, standard deviation {log_w.std():.3f}")

# %% [markdown]
# The bound as a function of $q$: move $q$'s mean away from $m$ along a line, or scale its covariance $c\,S$.
# The ELBO touches $\log p(x)$ at exactly one point, the posterior.

# %%
direction = torch.tensor([1.0, -1.0], **f64) / math.sqrt(2)
shifts = torch.linspace(-2, 2, 101, **f64)
scales = torch.logspace(-1.5, 1.5, 101, **f64)
elbo_shift = torch.stack([linear_gaussian_elbo(m + s * direction, S) for s in shifts])
elbo_scale = torch.stack([linear_gaussian_elbo(m, c * S) for c in scales])

fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
axes[0].plot(shifts, elbo_shift, label="ELBO(q)")
axes[0].set(xlabel="s, with q = N(m + s v, S)", ylabel="nats")
axes[1].plot(scales, elbo_scale, label="ELBO(q)")
axes[1].set(xscale="log", xlabel="c, with q = N(m, c S)")
for ax in axes:
    ax.axhline(log_px, color="k", ls="--", label="log p(x) (exact)")
    ax.set_ylim(log_px - 6, log_px + 1)
    ax.legend()
axes[0].set_title("shifting q's mean")
axes[1].set_title("scaling q's covariance")
plt.show()

# %% [markdown]
# ### A.5 Mean field: what "factorised" restricts
#
# A VAE's encoder outputs a *diagonal* Gaussian, $q(z \mid x) = \prod_j \mathcal{N}(z_j; \mu_j, \sigma_j^2)$: the **mean-field**
# family. The assumption is about the approximate posterior only: its latent coordinates are independent given $x$.
# It says nothing about the data being independent of the latents (the decoder makes $x$ depend on all of $z$).
#
# When the true posterior is correlated, no member of the family reaches it, so the gap stays positive. Which
# diagonal $q = \mathcal{N}(\mu, \operatorname{diag}(d))$ is best? Its KL to the posterior $\mathcal{N}(m, \Lambda^{-1})$ is (the Gaussian KL, section B
# does the one-dimensional case)
#
# $$
# \operatorname{KL} = \tfrac{1}{2}\Big(\operatorname{tr}(\Lambda \operatorname{diag}(d)) + (m - \mu)^\top \Lambda (m - \mu) - J - \sum_j \log d_j - \log\det \Lambda\Big)
# = \tfrac{1}{2}\Big(\sum_j \Lambda_{jj} d_j - \log d_j\Big) + \tfrac{1}{2}(m - \mu)^\top \Lambda (m - \mu) + \text{const}.
# $$
#
# The quadratic term is smallest at $\mu = m$; setting $\partial / \partial d_j = \tfrac{1}{2}(\Lambda_{jj} - 1 / d_j) = 0$ gives
# $d_j = 1 / \Lambda_{jj}$, which is *smaller* than the posterior's marginal variance $S_{jj} = (\Lambda^{-1})_{jj}$ whenever the posterior is
# correlated: the best mean-field $q$ is too narrow. Checked against 2000 random diagonal Gaussians:

# %%
d_best = 1 / torch.diagonal(precision)  # (J,)
gap_best = log_px - linear_gaussian_elbo(m, torch.diag(d_best))
random_gaps = torch.stack([
    log_px - linear_gaussian_elbo(m + 0.3 * torch.randn(J, generator=generator, **f64),
                                  torch.diag(d_best * torch.exp(0.5 * torch.randn(J, generator=generator, **f64))))
    for _ in range(2000)])
correlation = S[0, 1] / torch.sqrt(S[0, 0] * S[1, 1])
print(f"posterior correlation {correlation:.3f}; best diagonal q: variances {d_best.numpy().round(4)} "
      f"vs posterior marginals {torch.diagonal(S).numpy().round(4)}")
print(f"gap of the best mean-field q: {gap_best:.4f} nats; smallest gap among 2000 other diagonal q: {random_gaps.min():.4f}")
assert gap_best > 0 and (random_gaps >= gap_best - 1e-12).all() and (d_best < torch.diagonal(S)).all()


# %%
def ellipse(mean, cov, n_sd=2.0, n=200):
    """Points on the n_sd-standard-deviation contour of N(mean, cov), (n, 2)."""
    angles = torch.linspace(0, 2 * math.pi, n, **f64)
    circle = torch.stack([angles.cos(), angles.sin()], 1)  # (n, 2)
    return mean + n_sd * circle @ torch.linalg.cholesky(cov).T


fig, ax = plt.subplots(figsize=(4.5, 4.5))
for (mean, cov), style, label in [((m, S), "k-", "posterior p(z|x)"),
                                  ((m, torch.diag(d_best)), "C1--", "best mean-field q"),
                                  ((torch.zeros(J, **f64), torch.eye(J, **f64)), "C0:", "prior p(z)")]:
    points = ellipse(mean, cov)
    ax.plot(points[:, 0], points[:, 1], style, label=label)
ax.plot(*z_true, "r*", ms=10, label="the z that made x")
ax.set(aspect="equal", xlabel="$z_1$", ylabel="$z_2$", title="2-sd contours in latent space")
ax.legend(fontsize=8, loc="lower left")
plt.show()

# %% [markdown]
# > **Common confusion:** "mean-field assumes all variables (data, latents, parameters) are independent", as a source post
# > puts it. Mean field is a restriction on the *approximate posterior* $q$: it factorises over the latent coordinates.
# > The model itself keeps every dependence, and the price of the restriction is the positive gap printed above.
# > A second confusion from the same post: the marginal likelihood is not "the probability of the data given the prior
# > over parameters"; it is $p_\theta(x) = \int p_\theta(x \mid z)\, p(z)\, dz$, the latent integrated out, for fixed $\theta$.
#
# ### A.6 The form a VAE optimises, and its estimator
#
# Split the joint the other way, $p_\theta(x, z) = p_\theta(x \mid z)\, p(z)$:
#
# $$
# \operatorname{ELBO} = \mathbb{E}_q[\log p_\theta(x \mid z)] + \mathbb{E}_q[\log p(z) - \log q_\phi(z \mid x)]
# = \underbrace{\mathbb{E}_{q_\phi(z \mid x)}[\log p_\theta(x \mid z)]}_{-\text{reconstruction}}
# \;-\; \underbrace{\operatorname{KL}\big(q_\phi(z \mid x) \,\Vert\, p(z)\big)}_{\text{rate}} .
# $$
#
# For a diagonal Gaussian $q$ the KL has a closed form (section B); the reconstruction term is estimated with $L$
# samples $z^{(l)} = \mu + \sigma \odot \varepsilon^{(l)}$, $\varepsilon^{(l)} \sim \mathcal{N}(0, I)$ (section C says why this form):
#
# $$
# \widetilde{\mathcal{L}}^{B}(x) = -\operatorname{KL}\big(q_\phi(z \mid x) \,\Vert\, p(z)\big) + \frac{1}{L} \sum_{l=1}^{L} \log p_\theta\big(x \mid z^{(l)}\big) .
# $$
#
# This is Kingma & Welling's estimator $\widetilde{\mathcal{L}}^B$: a random number whose *expectation* is the ELBO. Their other estimator,
# $\widetilde{\mathcal{L}}^{A} = \frac{1}{L} \sum_l \big[\log p_\theta(x, z^{(l)}) - \log q_\phi(z^{(l)} \mid x)\big]$, has $\log q$ *inside* the sum over samples.
# Both are unbiased. Neither always has the lower variance: $\widetilde{\mathcal{L}}^B$ replaces part of the estimate by its exact value,
# which helps when $q$ is far from the posterior; near the posterior the two random parts of $\widetilde{\mathcal{L}}^A$ cancel (at the
# posterior itself A.4 showed every sample gives exactly $\log p(x)$), and $\widetilde{\mathcal{L}}^A$ wins. VAEs use $\widetilde{\mathcal{L}}^B$ because the
# Gaussian KL is cheap and exact. On the linear-Gaussian model, $L = 1$, for three choices of $q$:

# %%
def one_sample_estimators(mu_q, Sigma_q, n=100_000):
    """n one-sample estimates of L^A and L^B for q = N(mu_q, Sigma_q): (n,), (n,)."""
    q_dist = MultivariateNormal(mu_q, Sigma_q)
    z_q = q_dist.sample((n,))  # (n, J)
    log_lik_q = Normal(z_q @ W.T + b, noise_sd).log_prob(x_obs).sum(-1)  # (n,) log p(x | z)
    prior_kl = kl_divergence(q_dist, MultivariateNormal(torch.zeros(J, **f64), torch.eye(J, **f64)))
    return log_joint(z_q) - q_dist.log_prob(z_q), log_lik_q - prior_kl


far_mu, far_Sigma = m + torch.tensor([1.5, -1.0], **f64), 3 * torch.eye(J, **f64)
print(f"{'q':32s} {'exact ELBO':>10s} {'mean L^A':>9s} {'mean L^B':>9s} {'sd of L^A':>10s} {'sd of L^B':>10s}")
for name, (mu_q, Sigma_q) in {"far: N(m + (1.5, -1), 3 I)": (far_mu, far_Sigma), "near: N(m + (0.3, 0.2), diag S)": (mu, Sigma),
                              "the posterior N(m, S)": (m, S)}.items():
    estimator_A, estimator_B = one_sample_estimators(mu_q, Sigma_q)
    exact_elbo = linear_gaussian_elbo(mu_q, Sigma_q)
    print(f"{name:32s} {exact_elbo:10.3f} {estimator_A.mean():9.3f} {estimator_B.mean():9.3f} "
          f"{estimator_A.std():10.3f} {estimator_B.std():10.3f}")
    for estimator in (estimator_A, estimator_B):  # both unbiased
        assert abs(estimator.mean() - exact_elbo) < 4 * estimator.std() / math.sqrt(len(estimator)) + 1e-9
assert estimator_A.std() < 1e-9 < estimator_B.std()  # at the posterior L^A is exact, L^B is not

# %% [markdown]
# > **Common confusion:** the formula a source post calls "the ELBO" is the *estimator* $\widetilde{\mathcal{L}}^B$: a one-sample
# > estimate of it goes up and down from batch to batch around the ELBO. And in a transcription of $\widetilde{\mathcal{L}}^A$ a misplaced
# > bracket puts $\log q_\phi(z \mid x)$ outside the sum over samples; it belongs inside, evaluated at each $z^{(l)}$.
#
# ### A.7 A tighter bound: importance weighting
#
# Average $K$ weights $w_k = p_\theta(x, z_k) / q_\phi(z_k \mid x)$, with $z_1, \dots, z_K$ drawn independently from $q$, *before* taking the log:
#
# $$
# \mathcal{L}_K(x) = \mathbb{E}_{z_{1:K} \sim q}\Big[\log \frac{1}{K} \sum_{k=1}^K w_k\Big]
# \;\le\; \log \mathbb{E}\Big[\frac{1}{K} \sum_{k=1}^K w_k\Big] = \log p_\theta(x),
# $$
#
# by Jensen again, since each $\mathbb{E}_q[w_k] = \int p_\theta(x, z)\, dz = p_\theta(x)$. $\mathcal{L}_1$ is the ELBO. The bound tightens with $K$
# (Burda et al. 2016): for $M < K$, the mean of $K$ weights equals the average, over all subsets $I$ of $M$ indices
# chosen uniformly, of the mean over $I$; so with Jensen once more
#
# $$
# \mathcal{L}_K = \mathbb{E}\Big[\log \mathbb{E}_I\Big[\frac{1}{M}\sum_{i \in I} w_i\Big]\Big]
# \;\ge\; \mathbb{E}\Big[\mathbb{E}_I\Big[\log \frac{1}{M}\sum_{i \in I} w_i\Big]\Big] = \mathcal{L}_M .
# $$
#
# Computed stably as $\operatorname{logsumexp}_k(\log w_k) - \log K$ (`course_lib.topics.vae.iwae_bound`). On the linear-Gaussian model with the
# $q$ of A.4's Monte Carlo check, it climbs towards the exact $\log p(x)$:

# %%
iwae_values = {}
for K in [1, 10, 100, 1000]:
    groups = log_w[: (len(log_w) // K) * K].reshape(-1, K).T  # (K, groups): disjoint sets of K samples
    iwae_values[K] = iwae_bound(groups).mean().item()
    print(f"L_{K:<5d} = {iwae_values[K]:9.4f}   (log p(x) = {log_px:.4f})")
values = list(iwae_values.values())
assert all(a < b for a, b in zip(values, values[1:])) and values[-1] < log_px

# %% [markdown]
# ---
# ## B. The Gaussian KL in closed form
#
# For one latent dimension, $q = \mathcal{N}(\mu, \sigma^2)$ and $p = \mathcal{N}(0, 1)$. The log densities are
#
# $$
# \log q(z) = -\tfrac{1}{2}\log(2\pi) - \tfrac{1}{2}\log\sigma^2 - \frac{(z - \mu)^2}{2\sigma^2},
# \qquad
# \log p(z) = -\tfrac{1}{2}\log(2\pi) - \frac{z^2}{2},
# $$
#
# so $\log q(z) - \log p(z) = -\tfrac{1}{2}\log\sigma^2 - \frac{(z - \mu)^2}{2\sigma^2} + \frac{z^2}{2}$. Take the expectation under $q$, with
# $\mathbb{E}_q[(z - \mu)^2] = \sigma^2$ and $\mathbb{E}_q[z^2] = \operatorname{Var}(z) + (\mathbb{E} z)^2 = \sigma^2 + \mu^2$:
#
# $$
# \operatorname{KL}(q \,\Vert\, p) = -\tfrac{1}{2}\log\sigma^2 - \frac{\sigma^2}{2\sigma^2} + \frac{\sigma^2 + \mu^2}{2}
# = \tfrac{1}{2}\big(\mu^2 + \sigma^2 - 1 - \log\sigma^2\big) .
# $$
#
# For a diagonal Gaussian in $J$ dimensions both log densities are sums over coordinates, and the expectation of a sum is
# the sum of expectations, so
#
# $$
# \operatorname{KL}\big(\mathcal{N}(\mu, \operatorname{diag}\sigma^2) \,\Vert\, \mathcal{N}(0, I)\big) = \tfrac{1}{2}\sum_{j=1}^{J} \big(\mu_j^2 + \sigma_j^2 - 1 - \log\sigma_j^2\big) \;\ge\; 0,
# $$
#
# zero only at $\mu_j = 0, \sigma_j = 1$ (each term is $\tfrac{1}{2}\mu_j^2$ plus $\tfrac{1}{2}(t - 1 - \log t) \ge 0$ with $t = \sigma_j^2$).
# Encoders output $\log\sigma^2$ (`logvar`), an unconstrained number; then $\sigma^2 = e^{\text{logvar}}$ and $\sigma = e^{\text{logvar}/2}$.
# Checked against `torch.distributions` and against Monte Carlo:

# %%
generator = seed_everything(2)
mu = 1.5 * torch.randn(6, 16, generator=generator, **f64)  # (N, J)
logvar = torch.randn(6, 16, generator=generator, **f64)  # (N, J) log sigma^2
kl_closed = gaussian_kl(mu, logvar)  # (N,)
q = Normal(mu, torch.exp(0.5 * logvar))  # Normal takes the STANDARD DEVIATION sigma = exp(logvar / 2)
kl_torch = kl_divergence(q, Normal(0.0, 1.0)).sum(-1)  # (N,)
z = q.sample((100_000,))  # (n, N, J)
log_ratio = (q.log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(-1)  # (n, N)
kl_mc, kl_mc_se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(len(z))
print("closed form      :", kl_closed.numpy().round(3))
print("torch.distributions:", kl_torch.numpy().round(3))
print("Monte Carlo      :", kl_mc.numpy().round(3), "±", kl_mc_se.numpy().round(3))
assert torch.allclose(kl_closed, kl_torch, atol=1e-10)
assert ((kl_mc - kl_closed).abs() < 4 * kl_mc_se).all()

# %% [markdown]
# > **Common confusion:** the expression $\tfrac{1}{2}\sum_j \big(1 + \log\sigma_j^2 - \mu_j^2 - \sigma_j^2\big)$ that the VAE paper (and the posts
# > that copy it) puts in the ELBO is $-\operatorname{KL}$, with the sign of the ELBO's term; add it to a loss you *minimise* and you
# > push $q$ away from the prior. Two more: $\sigma^2$ is the **variance**, not the standard deviation (a source post calls
# > $\mu, \sigma^2$ "mean and s.d."), so `Normal(mu, logvar.exp())` silently builds a Gaussian with the wrong width; and the KL is
# > a **sum** over latent dimensions, not a mean. The numbers:

# %%
wrong_width = kl_divergence(Normal(mu, logvar.exp()), Normal(0.0, 1.0)).sum(-1)  # sigma = exp(logvar): wrong
wrong_sign = 0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(-1)  # the ELBO's term, = -KL
print("KL                                  :", kl_closed[:3].numpy().round(3))
print("with Normal(mu, logvar.exp())        :", wrong_width[:3].numpy().round(3))
print("1/2 sum(1 + logvar - mu^2 - exp(logvar)):", wrong_sign[:3].numpy().round(3), "(= -KL)")
print("mean over dimensions instead of sum:", (kl_closed / 16)[:3].numpy().round(3))
assert torch.allclose(wrong_sign, -kl_closed)

# %% [markdown]
# The KL per dimension as a function of $\mu$ and $\log\sigma^2$: a bowl with its bottom at the prior. This is the force that
# pulls every code towards $\mathcal{N}(0, 1)$; the reconstruction term pulls the other way.

# %%
mu_axis, logvar_axis = torch.meshgrid(torch.linspace(-3, 3, 121), torch.linspace(-4, 3, 121), indexing="xy")
kl_map = 0.5 * (mu_axis**2 + logvar_axis.exp() - 1 - logvar_axis)  # (121, 121)
fig, ax = plt.subplots(figsize=(5, 3.6))
contours = ax.contourf(mu_axis, logvar_axis, kl_map, levels=[0, 0.1, 0.25, 0.5, 1, 2, 3, 4, 6], cmap="viridis")
fig.colorbar(contours, ax=ax, label="KL in nats (one dimension)")
ax.plot(0, 0, "r+", ms=12)
ax.set(xlabel="$\\mu$", ylabel="$\\log\\sigma^2$", title="KL(N($\\mu$, $\\sigma^2$) || N(0, 1)), zero at the red cross")
plt.show()

# %% [markdown]
# ---
# ## C. Why reparameterize: two gradient estimators
#
# Training needs $\nabla_\phi \mathbb{E}_{q_\phi(z)}[f(z)]$, the gradient of an expectation whose *distribution* depends on $\phi$. Two unbiased
# estimators exist.
#
# **Score function (REINFORCE).** Move the gradient inside the integral and use $\nabla_\phi q_\phi = q_\phi \nabla_\phi \log q_\phi$:
#
# $$
# \nabla_\phi \int q_\phi(z) f(z)\, dz = \int \nabla_\phi q_\phi(z)\, f(z)\, dz = \int q_\phi(z)\, f(z)\, \nabla_\phi \log q_\phi(z)\, dz
# = \mathbb{E}_{q_\phi}\big[f(z)\, \nabla_\phi \log q_\phi(z)\big] .
# $$
#
# It needs only samples of $z$ and values of $f$ (so it works for discrete $z$ and non-differentiable $f$).
#
# **Pathwise (reparameterization).** Write the sample as a differentiable function of parameter-free noise,
# $z = g_\phi(\varepsilon) = \mu + \sigma\varepsilon$ with $\varepsilon \sim \mathcal{N}(0, 1)$. The distribution of $\varepsilon$ does not depend on $\phi$, so the gradient
# goes inside the expectation and through $f$ by the chain rule:
#
# $$
# \nabla_\phi \mathbb{E}_{q_\phi}[f(z)] = \nabla_\phi \mathbb{E}_{\varepsilon}\big[f(\mu + \sigma\varepsilon)\big] = \mathbb{E}_{\varepsilon}\big[f'(\mu + \sigma\varepsilon)\, \nabla_\phi(\mu + \sigma\varepsilon)\big] .
# $$
#
# The test case has an exact answer. With $q = \mathcal{N}(\mu, \sigma^2)$ and $f(z) = (z - 3)^2$:
# $\mathbb{E}_q[f] = (\mu - 3)^2 + \sigma^2$, so $\partial / \partial\mu = 2(\mu - 3)$ and $\partial / \partial\sigma = 2\sigma$. For the Gaussian,
# $\partial_\mu \log q = (z - \mu)/\sigma^2$ and $\partial_\sigma \log q = -1/\sigma + (z - \mu)^2/\sigma^3$. We let autograd compute both estimators,
# one gradient per sample (each sample gets its own copy of $\mu$ and $\sigma$):

# %%
def f(z):
    return (z - 3) ** 2


def per_sample_gradients(mu0, sigma0, n, estimator, generator):
    """n single-sample estimates of (d/dmu, d/dsigma) E_{N(mu0, sigma0^2)}[f(z)], shape (n, 2)."""
    eps = torch.randn(n, generator=generator, **f64)  # (n,)
    mu = torch.full((n,), mu0, **f64, requires_grad=True)  # one copy per sample
    sigma = torch.full((n,), sigma0, **f64, requires_grad=True)
    if estimator == "pathwise":
        surrogate = f(mu + sigma * eps)  # the gradient flows through the sample
    else:  # score function: the sample is a constant, the gradient flows through log q
        z = (mu0 + sigma0 * eps)  # (n,) no graph
        surrogate = f(z) * Normal(mu, sigma).log_prob(z)
    surrogate.sum().backward()
    return torch.stack([mu.grad, sigma.grad], 1)


generator = seed_everything(3)
mu0, sigma0, n = 0.0, 1.0, 200_000
exact = torch.tensor([2 * (mu0 - 3), 2 * sigma0], **f64)
grads = {name: per_sample_gradients(mu0, sigma0, n, name, generator) for name in ("pathwise", "score function")}
for name, g in grads.items():
    mean, se = g.mean(0), g.std(0) / math.sqrt(n)
    print(f"{name:15s} mean (d/dmu, d/dsigma) = {mean.numpy().round(3)} ± {se.numpy().round(3)};  exact {exact.numpy()};"
          f"  variance {g.var(0).numpy().round(2)}")
    assert ((mean - exact).abs() < 4 * se).all()  # both unbiased
variance_ratio = grads["score function"].var(0) / grads["pathwise"].var(0)
print(f"variance ratio score function / pathwise: d/dmu {variance_ratio[0]:.1f}x, d/dsigma {variance_ratio[1]:.1f}x")
assert torch.allclose(grads["pathwise"][:, 0].var(), torch.tensor(4 * sigma0**2, **f64), rtol=0.02)  # Var 2(z-3) = 4 sigma^2

# %% [markdown]
# Same mean, very different spread. The score-function estimator multiplies $f$, which can be large, by a zero-mean score;
# its variance grows with the size of $f$, and a **baseline** (subtract a constant $c$ from $f$: still unbiased, since
# $\mathbb{E}_q[\nabla \log q] = \nabla \int q = 0$) only partly helps. The right panel moves $\mu$ and tracks the variance of the $\mu$-gradient,
# with the best constant baseline $c = \mathbb{E}_q[f]$ for comparison:

# %%
def mu_gradient_variances(mu0, sigma0=1.0, n=20_000):
    generator = torch.Generator().manual_seed(0)
    eps = torch.randn(n, generator=generator, **f64)
    z = mu0 + sigma0 * eps
    score_mu = (z - mu0) / sigma0**2  # d/dmu log q
    baseline = (mu0 - 3) ** 2 + sigma0**2  # E_q[f], exact
    return {"pathwise": (2 * (z - 3)).var().item(), "score function": (f(z) * score_mu).var().item(),
            "score function with baseline": ((f(z) - baseline) * score_mu).var().item()}


mu_values = np.linspace(-3, 9, 49)
variance_curves = {name: [mu_gradient_variances(m0)[name] for m0 in mu_values] for name in mu_gradient_variances(0.0)}

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for name, color in [("score function", "C1"), ("pathwise", "C0")]:
    axes[0].hist(grads[name][:, 0].numpy(), bins=200, range=(-60, 40), density=True, alpha=0.6, color=color,
                 label=f"{name}: variance {grads[name][:, 0].var():.1f}")
axes[0].axvline(exact[0], color="k", ls="--", label=f"exact gradient {exact[0]:.0f}")
axes[0].set(xlabel="single-sample estimate of d/dmu E[(z-3)^2]", ylabel="density", title="mu = 0, sigma = 1")
axes[0].legend(fontsize=8)
for name, values in variance_curves.items():
    axes[1].plot(mu_values, values, label=name)
axes[1].set(yscale="log", xlabel="mu (sigma = 1)", ylabel="variance of one estimate", title="variance of the d/dmu estimators")
axes[1].legend(fontsize=8)
plt.show()

# %% [markdown]
# > **Common confusion:** "the reparameterization trick makes the gradient unbiased" or "makes it possible". Both
# > estimators are unbiased (the means above agree with the exact gradient). The difference is variance, measured above, and
# > it is what lets a VAE train with one sample per image. The price: $z$ must be continuous and $f$ differentiable in $z$;
# > for discrete latents one falls back on the score function with baselines, or on relaxations. We measure the same ratio on
# > the trained VAE in D.5.

# %% [markdown]
# ---
# ## D. A conv VAE on MNIST
#
# ### D.1 The data model: binarized pixels, and why it matters for the number
#
# The decoder is a **Bernoulli** per pixel: $p_\theta(x \mid z) = \prod_{i=1}^{784} \hat p_i^{\,x_i} (1 - \hat p_i)^{1 - x_i}$ with $\hat p = \operatorname{sigmoid}(\text{logits}(z))$,
# so $-\log p_\theta(x \mid z)$ is the binary cross entropy summed over the 784 pixels. That is a log-likelihood only for
# $x_i \in \{0, 1\}$. MNIST pixels are grey values in $[0, 1]$, so we binarize them by sampling: $x_i \sim \operatorname{Bernoulli}(\text{grey}_i)$.
#
# - **Training:** *dynamic* binarization, a new sample of every image at every step (`course_lib.topics.vae.vae_loss` does it).
# - **Test:** the 10,000 test images binarized **once**, with `torch.bernoulli` and seed 0 (`binarized_mnist("test", seed=0)`),
#   so the reported number is reproducible. This is the course's own fixed binarization; Larochelle & Murray's classic
#   "binarized MNIST" is a different sample, so numbers on it differ by a little.
#
# Why not just use the grey values as BCE targets, as many tutorials do? With a grey target $x_i \in (0, 1)$, chapter 01's
# $H(p, q) = h(p) + \operatorname{KL}(p \,\Vert\, q)$ for two Bernoulli distributions gives
#
# $$
# -x_i \log \hat p_i - (1 - x_i) \log(1 - \hat p_i) = h(x_i) + \operatorname{KL}\big(\operatorname{Bern}(x_i) \,\Vert\, \operatorname{Bern}(\hat p_i)\big) \;\ge\; h(x_i) > 0,
# $$
#
# so even the perfect decoder $\hat p = x$ pays $\sum_i h(x_i)$ nats per image. That "loss" is a cross entropy against soft targets,
# not $-\log$ of a probability of the image, and numbers computed that way (such as the ≈104 of PyTorch's example VAE) cannot
# be compared with likelihoods on binarized data. The floor, measured on the test set:

# %%
x_train, y_train = load_mnist("train")  # (60000, 1, 28, 28) grey values in [0, 1], (60000,)
x_test, y_test = load_mnist("test")  # (10000, 1, 28, 28), (10000,)
x_test_bin = binarized_mnist("test", seed=0)  # (10000, 1, 28, 28) of 0/1: the evaluation set


def bernoulli_entropy(p):
    """h(p) = -p log p - (1 - p) log(1 - p), with 0 log 0 = 0."""
    return -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p))


floor = bernoulli_entropy(x_test.double()).flatten(1).sum(1)  # (10000,) nats per image
perfect_logits = torch.logit(x_test.double().clamp(1e-12, 1 - 1e-12))  # a decoder that outputs p_hat = x exactly
perfect_bce = F.binary_cross_entropy_with_logits(perfect_logits, x_test.double(), reduction="none").flatten(1).sum(1)
assert torch.allclose(perfect_bce, floor, atol=1e-6)
print(f"grey targets: the perfect decoder still pays {floor.mean():.1f} nats per image on average (min {floor.min():.1f}, "
      f"max {floor.max():.1f})")
print(f"binary targets: the floor is {bernoulli_entropy(x_test_bin.double()).sum():.0f} nats")
print(f"fraction of pixels that are neither 0 nor 1: {((x_test > 0) & (x_test < 1)).float().mean():.3f}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
second_binarization = binarize(x_test[:16], torch.Generator().manual_seed(1))
for ax, images, title in [(axes[0], x_test[:16], "grey values"), (axes[1], x_test_bin[:16], "test set: binarized once (seed 0)"),
                          (axes[2], second_binarization, "another sample (as in training)")]:
    course_lib.core.plotting.image_grid(images, nrow=4, ax=ax)
    ax.set_title(title, fontsize=9)
plt.show()

# %% [markdown]
# ### D.2 The model, step by step
#
# **Encoder** $x \mapsto (\mu, \log\sigma^2)$: two strided convolutions, a hidden layer, and one linear layer whose $2J$ outputs are split
# into $\mu$ and $\log\sigma^2$. A convolution with kernel $k$, stride $s$ and padding $p$ maps a side of $n$ pixels to
# $\lfloor (n + 2p - k)/s \rfloor + 1$, so $k = 4, s = 2, p = 1$ halves it: $28 \to 14 \to 7$.
#
# **Decoder** $z \mapsto$ logits: the mirror image, with transposed convolutions, which map $n$ to $(n - 1)s - 2p + k$, i.e.
# $7 \to 14 \to 28$. The last layer has no nonlinearity: it outputs **logits**, and the loss is computed from logits
# (chapter 01, B.3), never as `binary_cross_entropy(sigmoid(logits), x)`.
#
# We build it from bare layers and run one batch through it, printing every shape.

# %%
generator = seed_everything(4)
latent_dim = 16
conv1 = nn.Conv2d(1, 32, 4, stride=2, padding=1)
conv2 = nn.Conv2d(32, 64, 4, stride=2, padding=1)
enc_hidden = nn.Linear(64 * 7 * 7, 128)
enc_out = nn.Linear(128, 2 * latent_dim)
dec_hidden = nn.Linear(latent_dim, 128)
dec_expand = nn.Linear(128, 64 * 7 * 7)
deconv1 = nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1)
deconv2 = nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1)

x = x_test_bin[:8]  # (8, 1, 28, 28)
trace = [("x", x)]
h = F.relu(conv1(x)); trace.append(("relu(conv1(x))", h))
h = F.relu(conv2(h)); trace.append(("relu(conv2(.))", h))
h = F.relu(enc_hidden(h.flatten(1))); trace.append(("relu(enc_hidden(flatten(.)))", h))
mu, logvar = enc_out(h).chunk(2, dim=1); trace += [("mu", mu), ("logvar", logvar)]
eps = torch.randn(mu.shape, generator=generator); trace.append(("eps ~ N(0, I)", eps))
z = mu + torch.exp(0.5 * logvar) * eps; trace.append(("z = mu + sigma * eps", z))
h = F.relu(dec_hidden(z)); trace.append(("relu(dec_hidden(z))", h))
h = F.relu(dec_expand(h)).reshape(-1, 64, 7, 7); trace.append(("relu(dec_expand(.)) as (64, 7, 7)", h))
h = F.relu(deconv1(h)); trace.append(("relu(deconv1(.))", h))
logits = deconv2(h); trace.append(("logits = deconv2(.)", logits))
for name, t in trace:
    print(f"{name:36s} {tuple(t.shape)}")


# %% [markdown]
# The loss per image, in nats: the Bernoulli negative log-likelihood **summed** over the 784 pixels, plus the KL **summed**
# over the $J$ latent dimensions; then the mean over the images of the batch.

# %%
def my_encode(x):
    h = F.relu(conv2(F.relu(conv1(x))))  # (N, 64, 7, 7)
    return enc_out(F.relu(enc_hidden(h.flatten(1)))).chunk(2, dim=1)  # mu, logvar: (N, J) each


def my_decode(z):
    h = F.relu(dec_expand(F.relu(dec_hidden(z)))).reshape(-1, 64, 7, 7)  # (N, 64, 7, 7)
    return deconv2(F.relu(deconv1(h)))  # (N, 1, 28, 28) logits


def my_negative_elbo(x, eps):
    """One-sample -ELBO per image (N,), and its two terms, for binary images x (N, 1, 28, 28)."""
    mu, logvar = my_encode(x)
    z = mu + torch.exp(0.5 * logvar) * eps  # (N, J)
    logits = my_decode(z)
    reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=(1, 2, 3))  # (N,)
    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(dim=1)  # (N,)
    return reconstruction + kl, reconstruction, kl


neg_elbo, reconstruction, kl = my_negative_elbo(x, eps)
print("-ELBO per image (untrained):", neg_elbo.detach().numpy().round(1))
print(f"784 log 2 = {784 * math.log(2):.1f}: the reconstruction term of a decoder that says 1/2 for every pixel")

# %% [markdown]
# The same network lives in `course_lib.topics.vae.ConvVAE`. Copy our weights into it and compare every output on the same input
# and the same noise:

# %%
library_vae = ConvVAE(latent_dim=16, channels=(32, 64), hidden=128)
layers = {"encoder.0": conv1, "encoder.2": conv2, "encoder.5": enc_hidden, "encoder.7": enc_out,
          "decoder.0": dec_hidden, "decoder.2": dec_expand, "decoder.5": deconv1, "decoder.7": deconv2}
library_vae.load_state_dict({f"{prefix}.{key}": value for prefix, layer in layers.items()
                             for key, value in layer.state_dict().items()})
with torch.no_grad():
    lib_mu, lib_logvar = library_vae.encode(x)
    lib_logits, _, _, lib_z = library_vae(x, generator=torch.Generator().manual_seed(4))
    lib_reconstruction, lib_kl = elbo_terms(library_vae, x, generator=torch.Generator().manual_seed(4))
    my_mu, my_logvar = my_encode(x)
    my_eps = torch.randn(my_mu.shape, generator=torch.Generator().manual_seed(4))
    my_neg_elbo, my_reconstruction, my_kl = my_negative_elbo(x, my_eps)
    my_z = my_mu + torch.exp(0.5 * my_logvar) * my_eps
assert torch.allclose(lib_mu, my_mu) and torch.allclose(lib_logvar, my_logvar)
assert torch.allclose(lib_z, my_z) and torch.allclose(lib_logits, my_decode(my_z).detach(), atol=1e-6)
assert torch.allclose(lib_reconstruction, my_reconstruction, atol=1e-4) and torch.allclose(lib_kl, my_kl, atol=1e-5)
print("step-by-step model == course_lib.topics.vae.ConvVAE (encoder, sample, decoder, both loss terms)")
print(f"parameters: {sum(p.numel() for p in library_vae.parameters()):,}")

# %% [markdown]
# > **Common confusion:** `F.binary_cross_entropy_with_logits(logits, x)` and `kl.mean()` use the default `reduction="mean"`: the first divides
# > by the number of pixels, the second by the number of latent dimensions. Their sum is neither the ELBO nor proportional to it: it
# > equals $(\text{reconstruction} + \tfrac{784}{J}\,\text{KL}) / 784$, a $\beta$-VAE with $\beta = 784/J = 49$ for $J = 16$, which blurs every reconstruction.
# > Train with whatever scale you like, but log and report $-\text{ELBO}$ in **nats per image**.

# %%
per_pixel_bce = F.binary_cross_entropy_with_logits(my_decode(my_z), x)  # mean over N * 784 numbers
per_dim_kl = (0.5 * (my_mu**2 + my_logvar.exp() - 1 - my_logvar)).mean()  # mean over N * J numbers
implied = (my_reconstruction + 784 / latent_dim * my_kl).mean() / 784
assert torch.allclose(per_pixel_bce + per_dim_kl, implied, rtol=1e-4)
print(f"per-pixel BCE + per-dimension KL = {(per_pixel_bce + per_dim_kl).item():.4f}   "
      f"vs -ELBO = {my_neg_elbo.mean().item():.1f} nats per image")

# %% [markdown]
# ### D.3 Training
#
# `course_lib.zoo.vae_mnist` made the shipped checkpoint: the settings per profile, then the training function it
# shares with `vae_mnist_2d`.

# %%
print(inspect.getsource(course_lib.zoo.vae_mnist.settings))
print(inspect.getsource(course_lib.zoo.vae_mnist.train_vae))

# %% [markdown]
# Here are the same steps with the settings of the active profile, written out so that we can also record the two terms
# of the loss at every step. Adam, a short warm-up and a cosine decay; one sample $z$ per image; $-\text{ELBO}$ on 2,000
# images of the fixed-binarized test set every few hundred steps.

# %%
cfg = course_lib.zoo.settings("vae_mnist")
print(cfg)
generator = seed_everything(0)
model = ConvVAE(latent_dim=cfg.latent_dim, channels=cfg.channels, hidden=cfg.hidden).to(DEVICE)
optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
batches = minibatches(x_train[:cfg.n_train], batch_size=cfg.batch_size, generator=generator)
x_eval = x_test_bin[:2000]
terms = []  # (reconstruction, KL) per step, batch means in nats per image


def loss_fn(model, batch):
    x = binarize(batch[0])  # dynamic binarization: a fresh 0/1 sample of the batch
    reconstruction, kl = elbo_terms(model, x)  # (B,) each
    terms.append((reconstruction.mean().item(), kl.mean().item()))
    return (reconstruction + kl).mean()  # -ELBO, nats per image


history = fit(model, loss_fn, batches, steps=cfg.steps, optimizer=optimizer, device=DEVICE,
              scheduler=warmup_cosine(optimizer, cfg.warmup, cfg.steps),
              eval_fn=lambda m: evaluate_elbo(m, x_eval), eval_every=max(cfg.steps // 5, 1), desc="conv VAE on MNIST")
final = history.last_eval()
print(f"after {cfg.steps} steps ({cfg.steps * cfg.batch_size / cfg.n_train:.1f} epochs of {cfg.n_train} images): "
      f"test -ELBO {final['neg_elbo']:.1f} nats per image (reconstruction {final['reconstruction']:.1f} + KL {final['kl']:.1f}); "
      f"{history.wall_time_s:.0f} s")
assert final["neg_elbo"] <= cfg.max_test_neg_elbo

# %%
terms_array = np.array(terms)  # (steps, 2)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
course_lib.core.plotting.plot_losses(history, smooth=20, ax=axes[0], title="-ELBO = reconstruction + KL (nats per image)",
                                labels=["train -ELBO (20-step mean)"])
eval_steps = [step for step, _ in history.evals]
axes[0].plot(eval_steps, [e["neg_elbo"] for _, e in history.evals], "o-", label="test -ELBO (2,000 images)")
axes[0].set(ylim=(min(e["neg_elbo"] for _, e in history.evals) - 10, 250), ylabel="nats per image")
axes[0].legend()
axes[1].plot(terms_array[:, 0], label="reconstruction -log p(x|z)")
axes[1].plot(terms_array[:, 1], label="rate KL(q(z|x) || p(z))")
axes[1].set(yscale="log", xlabel="step", ylabel="nats per image", title="the two terms (train batches)")
axes[1].legend()
plt.show()

# %%
with torch.no_grad():
    reconstructions = decode_probabilities(model, model.encode(x_test_bin[:10].to(DEVICE))[0])
course_lib.core.plotting.image_grid(torch.cat([x_test_bin[:10], reconstructions]), nrow=2, figsize=(8, 1.8))
plt.title(f"your model ({cfg.steps} steps): test digits (top), decoder means at z = mu (bottom)", fontsize=9)
plt.show()

# %% [markdown]
# ### D.4 The shipped checkpoint and its number
#
# Whatever your profile, the course ships the longer-trained model (the `gpu` settings of the recipe, trained on a CPU),
# so the figures below look the same everywhere. Its test $-\text{ELBO}$ is measured now, on all 10,000 fixed-binarized test
# images, and next to it the importance-weighted bound $-\mathcal{L}_K$ of A.7, a tighter upper bound on $-\log p_\theta(x)$.

# %%
vae = course_lib.zoo.load_shipped("vae_mnist", DEVICE)
entry = course_lib.core.checkpointing.read_manifest()["vae_mnist"]
print("manifest metrics:", entry["metrics"])
print("recipe          :", {k: entry["recipe"][k] for k in ("profile", "steps", "batch_size", "lr", "latent_dim", "seed")})
shipped = evaluate_elbo(vae, x_test_bin)
print(f"test -ELBO now: {shipped['neg_elbo']:.2f} nats per image = reconstruction {shipped['reconstruction']:.2f} "
      f"+ KL {shipped['kl']:.2f}  (10,000 test images binarized with seed 0; one z per image)")
assert shipped["neg_elbo"] <= 95

iwae_cfg = per_profile(ci=dict(n=500, K=20), cpu=dict(n=2_000, K=100), gpu=dict(n=10_000, K=1_000))
elbo_subset = evaluate_elbo(vae, x_test_bin[:iwae_cfg.n])["neg_elbo"]
iwae_subset = evaluate_iwae(vae, x_test_bin[:iwae_cfg.n], k=iwae_cfg.K)
print(f"on the first {iwae_cfg.n} test images: -ELBO {elbo_subset:.2f}, -L_{iwae_cfg.K} {iwae_subset:.2f} nats per image")
assert iwae_subset < elbo_subset
no_latent = course_lib.topics.vae.independent_pixel_nll(x_train, x_test_bin)
print(f"baseline without a latent (every pixel an independent Bernoulli, fitted on the training set): {no_latent:.1f}")

# %% [markdown]
# How to read these numbers, all in nats per image:
#
# | model | data model | test number |
# |---|---|---|
# | this course, `vae_mnist` (conv, $J = 16$) | Bernoulli on pixels binarized once, seed 0 | $-\text{ELBO}$ 92.3; $-\mathcal{L}_{100}$ 88.5 (all 10,000 images, from the manifest) |
# | no latent at all: independent Bernoulli pixels | the same | 205.8 |
# | Burda et al. 2016 (IWAE paper), VAE with one stochastic layer, MLP | Bernoulli, dynamically binarized test set | $-\log p(x) \approx 86.76$, estimated with $K = 5000$ (we have not re-checked the table) |
# | PyTorch's example VAE, 10 epochs | BCE against **grey** targets | ≈ 104: **not comparable**, it includes the grey-target floor of D.1 |
#
# An ELBO is a bound, so $-\text{ELBO} \ge -\mathcal{L}_K \ge -\log p_\theta(x)$: papers report the last one (estimated with large $K$), which
# is several nats below the $-\text{ELBO}$ the same model gets.
#
# > **Common confusion:** a number like "loss 0.12" for a VAE is almost always a per-pixel mean (the ELBO divided by 784, sometimes
# > with the KL mean over latent dimensions added). Multiply it back and say which binarization (or which grey-value
# > likelihood) it is on before comparing it with anything.
#
# Not every latent dimension is used. A dimension is *active* when its posterior mean changes with the input
# (Burda et al.: $\operatorname{Var}_x\big(\mathbb{E}_{q}[z_j \mid x]\big) > 0.01$); an inactive one has $q(z_j \mid x) \approx \mathcal{N}(0, 1)$ for every $x$ and costs no KL.

# %%
with torch.no_grad():
    mu_test, logvar_test = vae.encode(x_test_bin[:2000].to(DEVICE))
activity = mu_test.var(0).cpu()  # (J,)
kl_per_dim = (0.5 * (mu_test**2 + logvar_test.exp() - 1 - logvar_test)).mean(0).cpu()  # (J,)
order = activity.argsort(descending=True)
fig, ax = plt.subplots(figsize=(7, 2.8))
ax.bar(range(len(order)), kl_per_dim[order], color=["C0" if a > 0.01 else "C7" for a in activity[order]])
ax.set(xlabel="latent dimension (sorted by activity)", ylabel="mean KL (nats)",
       title=f"{(activity > 0.01).sum().item()} of {len(activity)} dimensions active (blue)")
plt.show()

# %% [markdown]
# Reconstructions, and new digits from the prior. Both show the decoder's Bernoulli **means** $\hat p = \operatorname{sigmoid}(\text{logits})$; a sample
# from the model would be one binary draw of those (last row), which is what the likelihood is about.

# %%
generator = seed_everything(5)
with torch.no_grad():
    recon = decode_probabilities(vae, vae.encode(x_test_bin[:12].to(DEVICE))[0])  # (12, 1, 28, 28)
    prior_means = decode_probabilities(vae, torch.randn(24, vae.latent_dim, generator=generator))  # (24, 1, 28, 28)
prior_samples = torch.bernoulli(prior_means[:12], generator=generator)
fig, axes = plt.subplots(2, 1, figsize=(8, 4.2), height_ratios=[2, 3], layout="constrained")
course_lib.core.plotting.image_grid(torch.cat([x_test_bin[:12], recon]), nrow=2, ax=axes[0])
axes[0].set_title("test digits (top) and their reconstructions, decoder means at z = mu (bottom)", fontsize=9)
course_lib.core.plotting.image_grid(torch.cat([prior_means, prior_samples]), nrow=3, ax=axes[1])
axes[1].set_title("new digits, z ~ N(0, I): decoder means (rows 1-2), a Bernoulli sample of row 1 (row 3)", fontsize=9)
plt.show()

# %% [markdown]
# ### D.5 Section C again, on the trained VAE
#
# The gradient of the reconstruction term $\mathbb{E}_{q}[\log p_\theta(x \mid z)]$ with respect to the encoder's $\mu$ (16 numbers) for one test digit,
# by both estimators, 4,000 single-sample estimates each. Here $f(z) = \log p_\theta(x \mid z)$ is around $-70$ nats, so the score-function
# estimator multiplies a large number by a zero-mean score:

# %%
generator = torch.Generator().manual_seed(6)
n_samples = per_profile(ci=dict(n=1_000), cpu=dict(n=4_000), gpu=dict(n=4_000)).n
x_one = x_test_bin[:1].to(DEVICE)  # (1, 1, 28, 28)
with torch.no_grad():
    mu_one, logvar_one = vae.encode(x_one)  # (1, J) each
sigma_one = torch.exp(0.5 * logvar_one)
eps = torch.randn(n_samples, vae.latent_dim, generator=generator).to(DEVICE)  # (n, J)
z = (mu_one + sigma_one * eps).requires_grad_(True)  # (n, J)
log_lik = course_lib.topics.vae.bernoulli_log_likelihood(vae.decode(z), x_one.expand(n_samples, -1, -1, -1))  # (n,)
pathwise = torch.autograd.grad(log_lik.sum(), z)[0]  # (n, J): d/dmu of f(mu + sigma eps) = f'(z)
score = log_lik.detach()[:, None] * (z.detach() - mu_one) / sigma_one**2  # (n, J): f(z) d/dmu log q(z)
for name, g in [("pathwise", pathwise), ("score function", score)]:
    print(f"{name:15s} total variance (sum over the 16 coordinates) {g.var(0).sum():12.1f}")
ratio = score.var(0).sum() / pathwise.var(0).sum()
difference = (score.mean(0) - pathwise.mean(0)).norm()
pooled_se = torch.sqrt((score.var(0) + pathwise.var(0)).sum() / n_samples)
print(f"variance ratio {ratio:.0f}x; |difference of the means| = {difference:.1f}, pooled standard error {pooled_se:.1f}")
assert ratio > 10 and difference < 5 * pooled_se

# %% [markdown]
# ---
# ## E. Looking inside: a 2-D latent space, interpolation, and $\beta$
#
# ### E.1 A VAE with $J = 2$
#
# With two latent dimensions the whole code space fits on the screen. `vae_mnist_2d` is the same architecture with
# `latent_dim=2`, trained by `course_lib.zoo.vae_mnist_2d`. Two numbers pay for the picture: the bound is much
# looser than with 16 dimensions, because two numbers cannot carry a digit's style and identity at once.

# %%
vae_2d = course_lib.zoo.load_shipped("vae_mnist_2d", DEVICE)
shipped_2d = evaluate_elbo(vae_2d, x_test_bin)
print(f"J = 2 : test -ELBO {shipped_2d['neg_elbo']:.1f} nats per image (reconstruction {shipped_2d['reconstruction']:.1f} "
      f"+ KL {shipped_2d['kl']:.1f})")
print(f"J = 16: test -ELBO {shipped['neg_elbo']:.1f}")
with torch.no_grad():
    mu_2d = vae_2d.encode(x_test_bin[:5000].to(DEVICE))[0].cpu()  # (5000, 2) posterior means
labels_2d = y_test[:5000]

# %% [markdown]
# **Widget: the latent grid.** Left, the posterior means $\mu(x)$ of 5,000 test digits, coloured by label, with the prior's 1-, 2- and
# 3-sd circles. Middle, the decoder's output over a grid of $z$ placed at evenly spaced quantiles of $\mathcal{N}(0, 1)$ (the VAE paper's
# "learned manifold" figure; `course_lib.topics.vae.latent_grid`). Right, the digit at the point $(z_1, z_2)$ of the sliders, the red cross.

# %%
digit_colors = plt.get_cmap("tab10")


def draw_latent_scatter(ax, means, labels, title):
    ax.scatter(means[:, 0], means[:, 1], c=labels, cmap="tab10", vmin=-0.5, vmax=9.5, s=2, alpha=0.6)
    for radius in (1, 2, 3):
        ax.add_patch(plt.Circle((0, 0), radius, fill=False, ls=":", color="0.4"))
    for k in range(10):
        ax.scatter([], [], color=digit_colors(k), label=str(k), s=12)
    ax.legend(fontsize=6, ncol=2, loc="upper right", markerscale=1, handletextpad=0.1, columnspacing=0.5)
    ax.set(xlim=(-4, 4), ylim=(-4, 4), aspect="equal", title=title)


def draw_latent_grid(axes, z1, z2, quantile):
    draw_latent_scatter(axes[0], mu_2d, labels_2d, "posterior means of test digits")
    grid = course_lib.topics.vae.latent_grid(n=15, quantile=quantile)  # (225, 2)
    edge = grid[:, 0].max().item()
    axes[0].add_patch(plt.Rectangle((-edge, -edge), 2 * edge, 2 * edge, fill=False, color="k", lw=1))
    axes[0].plot(z1, z2, "r+", ms=14, mew=2)
    course_lib.core.plotting.image_grid(decode_probabilities(vae_2d, grid), nrow=15, ax=axes[1])
    axes[1].set_title(f"decoder means over the square (z up to ±{edge:.2f})", fontsize=9)
    course_lib.core.plotting.image_grid(decode_probabilities(vae_2d, torch.tensor([[z1, z2]])), nrow=1, ax=axes[2])
    density = math.exp(-0.5 * (z1**2 + z2**2)) / (2 * math.pi)
    axes[2].set_title(f"z = ({z1:.2f}, {z2:.2f}); prior density {density:.3f}", fontsize=9)


course_lib.core.widgets.interactive_figure(
    draw_latent_grid, ncols=3, figsize=(13, 4.4),
    z1=ipywidgets.FloatSlider(value=0.5, min=-4, max=4, step=0.05, description="z1"),
    z2=ipywidgets.FloatSlider(value=-0.5, min=-4, max=4, step=0.05, description="z2"),
    quantile=ipywidgets.FloatSlider(value=0.9, min=0.5, max=0.998, step=0.002, description="grid mass", readout_format=".3f"))

# %% [markdown]
# Things to look for: the classes form regions, and neighbouring regions are digits that share strokes (4 and 9, 3 5 8);
# style (slant, thickness) varies *within* a region; far outside the prior's mass (move a slider to ±3.5) the decoder was
# never trained and produces blurs or odd hybrids. The gaps between clusters are where prior samples look worst.
#
# ### E.2 Interpolation
#
# Encode two test digits to their posterior means $\mu_a, \mu_b$, decode points on the segment $(1 - t)\,\mu_a + t\,\mu_b$, and compare with
# fading the two images into each other in pixel space (top row). The latent path passes through other digits'
# shapes; the pixel path is a double exposure. In the 2-D model the path is drawn on the latent scatter.

# %%
def draw_interpolation(axes, digit_a, digit_b, model_name):
    model_i = vae if model_name == "J = 16" else vae_2d
    x_pair = x_test_bin[[digit_a, digit_b]].to(DEVICE)  # (2, 1, 28, 28)
    with torch.no_grad():
        mu_pair = model_i.encode(x_pair)[0].cpu()  # (2, J)
    path = course_lib.topics.vae.interpolate(mu_pair[0], mu_pair[1], steps=10)  # (10, J)
    t = torch.linspace(0, 1, 10)[:, None, None, None]
    pixel_path = (1 - t) * x_test[digit_a] + t * x_test[digit_b]  # (10, 1, 28, 28)
    course_lib.core.plotting.image_grid(torch.cat([pixel_path, decode_probabilities(model_i, path)]), nrow=2, ax=axes[0])
    axes[0].set_title(f"test digits {digit_a} (a {y_test[digit_a].item()}) → {digit_b} (a {y_test[digit_b].item()}): "
                      f"pixel fade (top), "
                      f"latent path of the {model_name} model (bottom)", fontsize=9)
    with torch.no_grad():
        pair_2d = vae_2d.encode(x_pair)[0].cpu()
    draw_latent_scatter(axes[1], mu_2d, labels_2d, "the J = 2 path")
    axes[1].plot(pair_2d[:, 0], pair_2d[:, 1], "k.-", lw=2, ms=10)


course_lib.core.widgets.interactive_figure(
    draw_interpolation, ncols=2, figsize=(12, 3.4),
    digit_a=ipywidgets.IntSlider(value=0, min=0, max=199, description="digit a"),
    digit_b=ipywidgets.IntSlider(value=1, min=0, max=199, description="digit b"),
    model_name=ipywidgets.ToggleButtons(options=["J = 16", "J = 2"], value="J = 16", description="model"))

# %% [markdown]
# ### E.3 $\beta$: trading reconstruction for rate
#
# The $\beta$-VAE (Higgins et al. 2017) minimises $\mathbb{E}_q[-\log p_\theta(x \mid z)] + \beta\, \operatorname{KL}(q_\phi(z \mid x) \,\Vert\, p(z))$. With $\beta = 1$ this is $-\text{ELBO}$.
# For $\beta > 1$ it is $-\text{ELBO} + (\beta - 1)\operatorname{KL} \ge -\text{ELBO}$, a looser bound; for $\beta < 1$ it is no bound at all. Either way,
# compare models by their $\beta = 1$ number. The KL term is the **rate** (nats the code carries about $x$, on average) and the
# reconstruction term the **distortion**: raising $\beta$ buys a lower rate with a higher distortion.
#
# Training five VAEs from scratch would not fit the time budget, so we start each from the shipped 2-D model (trained at
# $\beta = 1$) and fine-tune it at $\beta \in \{0.5, 1, 2, 4, 8\}$ for the number of steps the profile allows (a few, under `ci`,
# so the pictures barely change there; `cpu` gives them time to move).

# %%
beta_cfg = per_profile(ci=dict(steps=25, batch_size=64), cpu=dict(steps=300, batch_size=128),
                       gpu=dict(steps=3_000, batch_size=128))
betas = [0.5, 1.0, 2.0, 4.0, 8.0]
beta_models, beta_results = {}, {}
for beta in tqdm(betas, desc="beta-VAE fine-tuning"):
    generator = seed_everything(7)
    model_b = course_lib.zoo.load_shipped("vae_mnist_2d", DEVICE)
    optimizer = torch.optim.Adam(model_b.parameters(), lr=5e-4)
    batches = minibatches(x_train, batch_size=beta_cfg.batch_size, generator=generator)
    fit(model_b, lambda m, batch, beta=beta: course_lib.topics.vae.vae_loss(m, batch, beta=beta), batches,
        steps=beta_cfg.steps, optimizer=optimizer, device=DEVICE, show_progress=False)
    beta_models[beta] = model_b
    beta_results[beta] = evaluate_elbo(model_b, x_test_bin[:2000])
    with torch.no_grad():
        beta_results[beta]["means"] = model_b.encode(x_test_bin[:2000].to(DEVICE))[0].cpu()
print(f"{'beta':>5} {'rate KL':>8} {'distortion':>11} {'-ELBO (beta = 1)':>17}   nats per image, 2,000 test digits")
for beta, r in beta_results.items():
    print(f"{beta:5.1f} {r['kl']:8.2f} {r['reconstruction']:11.2f} {r['neg_elbo']:17.2f}")
rates = [beta_results[beta]["kl"] for beta in betas]
if beta_cfg.steps >= 100:  # enough steps for beta to have pushed the rate in the right direction
    assert rates[0] > rates[-1]


# %%
def draw_beta(axes, beta):
    r = beta_results[beta]
    draw_latent_scatter(axes[0, 0], r["means"], y_test[:2000], f"posterior means, beta = {beta}")
    with torch.no_grad():
        recon_b = decode_probabilities(beta_models[beta], beta_models[beta].encode(x_test_bin[:8].to(DEVICE))[0])
    course_lib.core.plotting.image_grid(torch.cat([x_test_bin[:8], recon_b]), nrow=2, ax=axes[0, 1])
    axes[0, 1].set_title("test digits and reconstructions", fontsize=9)
    course_lib.core.plotting.image_grid(decode_probabilities(beta_models[beta], course_lib.topics.vae.latent_grid(10, 0.9)), nrow=10,
                                   ax=axes[1, 0])
    axes[1, 0].set_title("decoder means over the latent grid", fontsize=9)
    ax = axes[1, 1]
    ax.plot([beta_results[b]["kl"] for b in betas], [beta_results[b]["reconstruction"] for b in betas], "o-", color="0.6")
    for b in betas:
        ax.annotate(f"β={b:g}", (beta_results[b]["kl"], beta_results[b]["reconstruction"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.plot(r["kl"], r["reconstruction"], "o", color="C3", ms=10)
    ax.set(xlabel="rate: KL (nats)", ylabel="distortion: -log p(x|z) (nats)", title="rate-distortion, test digits")


course_lib.core.widgets.interactive_figure(
    draw_beta, nrows=2, ncols=2, figsize=(10, 8.5),
    beta=ipywidgets.SelectionSlider(options=betas, value=4.0, description="beta"))

# %% [markdown]
# Things to look for: at large $\beta$ the posterior means huddle inside the prior's unit circle and the classes overlap (a low
# rate: the code says less about the digit), reconstructions become prototypes, and the grid has fewer, smoother digits. At
# $\beta < 1$ the code spreads out and the reconstructions sharpen, while the aggregate of the posteriors covers the prior
# less evenly, so prior samples get worse. Pushed far enough, a large $\beta$ (or a strong decoder) makes the KL of some
# dimensions zero: **posterior collapse**, the inactive dimensions of D.4.

# %% [markdown]
# ---
# ## F. Exercises
#
# Each exercise cell below holds a working solution; in the student version it is replaced by a stub. Write your own,
# run the check cell, and reveal the reference only when stuck.
#
# **Exercise 1: the reparameterized sample.** Write `my_reparameterize(mu, logvar, eps)` returning $z = \mu + \sigma \odot \varepsilon$, with
# `logvar` $= \log\sigma^2$. Gradients must reach `mu` and `logvar`.

# %% tags=["exercise"]
def my_reparameterize(mu, logvar, eps):
    """z = mu + sigma * eps, sigma = exp(logvar / 2); all (N, J)."""
    return mu + torch.exp(0.5 * logvar) * eps


# %%
generator = seed_everything(8)
reparam_inputs = [tuple(torch.randn(5, 4, generator=generator) for _ in range(3)),
                  (torch.zeros(2, 3), torch.full((2, 3), math.log(4.0)), torch.ones(2, 3))]  # sigma = 2: z = 2
course_lib.core.check.check_function(my_reparameterize, lambda mu, logvar, eps: course_lib.topics.vae.reparameterize(mu, logvar, eps=eps),
                                reparam_inputs)
mu_r, logvar_r = torch.zeros(3, 2, requires_grad=True), torch.zeros(3, 2, requires_grad=True)
my_reparameterize(mu_r, logvar_r, torch.ones(3, 2)).sum().backward()
assert mu_r.grad is not None and logvar_r.grad is not None, "no gradient reached mu or logvar: did you detach or sample inside?"
course_lib.core.check.check_tensor(logvar_r.grad, torch.full((3, 2), 0.5), name="d z / d logvar at logvar = 0, eps = 1")

# %%
course_lib.core.check.show_solution(course_lib.topics.vae.reparameterize)

# %% [markdown]
# **Exercise 2: the KL term.** Write `my_gaussian_kl(mu, logvar)`: $\operatorname{KL}(\mathcal{N}(\mu, \operatorname{diag}\sigma^2) \,\Vert\, \mathcal{N}(0, I))$ for each row, shape
# $(N, J) \to (N,)$. The check names a wrong sign or a mean where a sum belongs.

# %% tags=["exercise"]
def my_gaussian_kl(mu, logvar):
    """KL per row in nats: (N, J), (N, J) -> (N,)."""
    return 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(dim=1)


# %%
kl_inputs = [(torch.randn(6, 16, generator=generator), torch.randn(6, 16, generator=generator)),
             (torch.zeros(3, 2), torch.zeros(3, 2)),
             (3 * torch.randn(2, 32, generator=generator), -5 + torch.randn(2, 32, generator=generator))]
course_lib.core.check.check_function(my_gaussian_kl, gaussian_kl, kl_inputs)

# %%
course_lib.core.check.show_solution(course_lib.topics.vae.gaussian_kl)

# %% [markdown]
# **Exercise 3: $-\text{ELBO}$ in nats per image.** Given decoder logits $(N, 1, 28, 28)$, binary images $x$ of the same shape, and the
# encoder's `mu`, `logvar` $(N, J)$, return the one-sample $-\text{ELBO}$ of each image, shape $(N,)$.

# %% tags=["exercise"]
def my_negative_elbo_per_image(logits, x, mu, logvar):
    """Reconstruction (summed over pixels) + KL (summed over latent dimensions), per image: (N,)."""
    reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=(1, 2, 3))
    return reconstruction + my_gaussian_kl(mu, logvar)


# %%
elbo_inputs = []
for n_images in (4, 1):
    logits_e = 3 * torch.randn(n_images, 1, 28, 28, generator=generator)
    x_e = torch.bernoulli(torch.full((n_images, 1, 28, 28), 0.2), generator=generator)
    elbo_inputs.append((logits_e, x_e, torch.randn(n_images, 16, generator=generator), torch.randn(n_images, 16, generator=generator)))
course_lib.core.check.check_function(my_negative_elbo_per_image, course_lib.topics.vae.negative_elbo, elbo_inputs, rtol=1e-4, atol=1e-3)

# %%
course_lib.core.check.show_solution(course_lib.topics.vae.negative_elbo)

# %% [markdown]
# **Exercise 4: the importance-weighted bound.** Given log weights $\log w$ of shape $(K, N)$ ($K$ samples for each of $N$ images),
# return $\mathcal{L}_K = \log \frac{1}{K}\sum_k w_k$ per image, shape $(N,)$. The weights of a real image are around $e^{-90}$: the direct formula
# underflows, so use the log-sum-exp trick of chapter 01.

# %% tags=["exercise"]
def my_iwae_bound(log_weights):
    """log of the mean of exp(log_weights) over dim 0, stably: (K, N) -> (N,)."""
    m = log_weights.amax(dim=0)  # (N,)
    return m + torch.log(torch.exp(log_weights - m).mean(dim=0))


# %%
iwae_inputs = [torch.randn(10, 3, generator=generator, dtype=torch.float64),
               -90 + 5 * torch.randn(100, 4, generator=generator, dtype=torch.float64),
               -1000 + torch.randn(50, 2, generator=generator, dtype=torch.float64),
               torch.randn(1, 5, generator=generator, dtype=torch.float64)]  # K = 1: the ELBO estimate itself
course_lib.core.check.check_function(my_iwae_bound, iwae_bound, iwae_inputs)

# %%
course_lib.core.check.show_solution(course_lib.topics.vae.iwae_bound)

# %% [markdown]
# ---
# ## G. Discussion questions
#
# 1. The identity $\log p_\theta(x) = \text{ELBO} + \operatorname{KL}(q \,\Vert\, p_\theta(z \mid x))$ holds for every $\theta$. When we maximise the ELBO over $\theta$ *and* $\phi$,
#    what are the two ways the ELBO can go up? Can a model raise its ELBO while its $\log p_\theta(x)$ goes down?
# 2. In A.5 the best mean-field $q$ was narrower than the posterior. Which direction of the KL causes that, and what would
#    minimising $\operatorname{KL}(p \,\Vert\, q)$ instead do? Which one could we even compute, in a VAE?
# 3. The score-function estimator's variance grew with the size of $f$ (C). Why does a baseline not change its mean? Where
#    in this course (or in reinforcement learning) do you meet the score-function estimator because no pathwise one exists?
# 4. Our test number is on a test set binarized once with seed 0, and training used dynamic binarization. Would training on one
#    fixed binarization of the training set change the test $-\text{ELBO}$? In which direction, and why (think of overfitting)?
# 5. A 2-D VAE's prior samples look worse than its reconstructions (E.1, E.3). Explain this with the "aggregate posterior"
#    $q(z) = \frac{1}{N}\sum_n q(z \mid x_n)$ and the prior $p(z)$. Latent diffusion (chapter 13) puts a diffusion model on the latents: which
#    problem does that solve?
