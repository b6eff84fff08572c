# ---
# jupyter:
#   course:
#     time_on_cpu:
#       ci:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-05'
#         seconds: 32
#       cpu:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-05'
#         seconds: 190
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
# **Time.** Two study-group sessions of about 90 minutes: the ELBO and the Gaussian KL (A, B) in the first; the
# gradient estimators, the model, its number and its pictures (C, D, E) in the second. The exercises (F) take about
# 45 minutes at home. The session plan is in [facilitator/08_vae.md](facilitator/08_vae.md).
#
# **Core path.** A.1-A.4 and A.6 (the ELBO, 35 min), B (the Gaussian KL, 15 min), C (the two gradient estimators,
# 15 min), D.1-D.4 (the model, its training and its number, 30 min) and E.1-E.3 (the latent space, interpolation and
# $\beta$, 20 min): about 115 min. The optional deep dives a first reading can skip: A.5 (mean field: why the best
# diagonal $q$ is too narrow), A.7 (the importance-weighted bound; D.4 quotes its number) and D.5 (the gradient
# estimators again, on the trained VAE).
#
# **What runs, and how long** (the whole chapter, top to bottom, on a fresh kernel; `ci` with 1 torch thread as the
# test suite runs it, `cpu` with torch's default threads; `make time PROFILE=ci` or `PROFILE=cpu` measures it and
# writes the time here, in the notebook's metadata and in the README):
#
# | profile | what trains | measured |
# |---|---|---|
# | `ci` | the 16-d conv VAE for 60 steps on 5,000 images; 5 β-VAEs fine-tuned 25 steps each | 32 s, measured 2026-12-05 on 2 CPU cores, no GPU, otherwise idle |
# | `cpu` | the 16-d conv VAE for 2,000 steps on all 60,000 images (4.3 epochs, 148 s); 5 β-VAEs fine-tuned 300 steps each (112 s) | 3 min 10 s, measured 2026-12-05 on 2 CPU cores, no GPU, otherwise idle |
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
# ## See it work first
#
# The course ships a trained conv VAE with a 16-dimensional latent, `vae_mnist`. Below: eight test digits and their
# reconstructions (encode to $\mu$, decode), then sixteen brand-new digits, decoded from $z \sim \mathcal{N}(0, I)$ drawn from the
# prior, and the number that says how good the model is: its test $-\text{ELBO}$, an upper bound on $-\log p_\theta(x)$ in nats
# per image (lower is better). By the end of this chapter you will have derived and trained this: the bound, the KL term,
# the sampling trick, the network and its training loop.

# %%
vae_preview = course_lib.zoo.load_shipped("vae_mnist", DEVICE)
manifest_metrics = course_lib.core.checkpointing.read_manifest()["vae_mnist"]["metrics"]
x_preview = binarized_mnist("test", seed=0, n=1000)  # (1000, 1, 28, 28) of 0/1
preview_elbo = evaluate_elbo(vae_preview, x_preview)
with torch.no_grad():
    recon_preview = decode_probabilities(vae_preview, vae_preview.encode(x_preview[:8].to(DEVICE))[0])  # (8, 1, 28, 28)
prior_preview = decode_probabilities(vae_preview, torch.randn(16, vae_preview.latent_dim, generator=generator))
print(f"test -ELBO: {manifest_metrics['test_neg_elbo_nats']:.2f} nats per image on all 10,000 test digits (manifest); "
      f"{preview_elbo['neg_elbo']:.2f} on the first 1,000, measured now")
fig, axes = plt.subplots(1, 2, figsize=(11, 2.6), width_ratios=[1, 1.1], layout="constrained")
course_lib.core.plotting.image_grid(torch.cat([x_preview[:8], recon_preview]), nrow=2, ax=axes[0])
axes[0].set_title("test digits (top), reconstructions (bottom)", fontsize=9)
course_lib.core.plotting.image_grid(prior_preview, nrow=2, ax=axes[1])
axes[1].set_title("new digits: z ~ N(0, I) through the decoder", fontsize=9)
plt.show()

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
# \log p(x \mid z) + \log p(z) = -\frac{\lVert x - b - W z \rVert^2}{2\sigma^2} - \frac{\lVert z \rVert^2}{2} + \text{const} .
# $$
#
# Expand the square, $\lVert x - b - W z \rVert^2 = \lVert x - b \rVert^2 - 2\, z^\top W^\top (x - b) + z^\top W^\top W z$, and put the term
# without $z$ into the constant. Collecting the quadratic and the linear terms in $z$:
#
# $$
# \log p(x \mid z) + \log p(z) = -\frac{1}{2} z^\top \Lambda z + z^\top h + \text{const}, \qquad
# \Lambda = I + \frac{W^\top W}{\sigma^2}, \qquad h = \frac{W^\top (x - b)}{\sigma^2} .
# $$
#
# **Completing the square.** Let $m = \Lambda^{-1} h$. Because $\Lambda$ is symmetric, $z^\top \Lambda m = z^\top h$ and
# $m^\top \Lambda m = h^\top \Lambda^{-1} h$, so expanding a square centred at $m$ gives
#
# $$
# -\frac{1}{2} (z - m)^\top \Lambda (z - m) = -\frac{1}{2} z^\top \Lambda z + z^\top \Lambda m - \frac{1}{2} m^\top \Lambda m
# = -\frac{1}{2} z^\top \Lambda z + z^\top h - \frac{1}{2} h^\top \Lambda^{-1} h .
# $$
#
# The two expressions differ only by $\tfrac{1}{2} h^\top \Lambda^{-1} h$, which does not depend on $z$. Hence
# $\log p(z \mid x) = -\tfrac{1}{2}(z - m)^\top \Lambda (z - m) + \text{const}$: the log density of a Gaussian with mean $m$ and
# precision $\Lambda$ (the constant is whatever makes it integrate to one). The posterior is
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
# and the ELBO is their sum. The cell below checks, in float64, that Bayes' rule gives the $\mathcal{N}(m, S)$ of the completed
# square at a few random $z$, and then:
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


# 0. the posterior of the completed square: log p(x, z) - log p(x) = log N(z; m, S) at any z
z_check = torch.randn(5, J, generator=generator, **f64)  # (5, J)
assert torch.allclose(log_joint(z_check) - log_px, MultivariateNormal(m, S).log_prob(z_check), atol=1e-10)
print("log p(z | x) by Bayes' rule = log N(z; m, S) at 5 random z: the completed square checks out")

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
# **Widget: the ELBO as a function of $q$.** Move $q$'s mean away from $m$ along a line, $q = \mathcal{N}(m + s\, v, c\, S)$ with
# $v = (1, -1)/\sqrt{2}$, and scale its covariance by $c$. Left and middle: the ELBO along each slider with the other held
# where it is (the red dot is the current $q$); right: $q$'s 2-sd ellipse against the posterior's. The ELBO touches
# $\log p(x)$ at exactly one point, $s = 0$ and $c = 1$: the posterior. While the other slider is away from it, neither curve
# reaches $\log p(x)$. The title prints the gap next to
# $\operatorname{KL}(q \,\Vert\, p(z \mid x))$ from `torch.distributions`; they agree, as A.3 says.

# %%
def ellipse(mean, cov, n_sd=2.0, n=200):
    """Points on the n_sd-standard-deviation contour of N(mean, cov), (n, 2)."""
    angles = torch.linspace(0, 2 * math.pi, n, **f64)
    circle = torch.stack([angles.cos(), angles.sin()], 1)  # (n, 2)
    return mean + n_sd * circle @ torch.linalg.cholesky(cov).T


direction = torch.tensor([1.0, -1.0], **f64) / math.sqrt(2)  # v
shifts = torch.linspace(-2, 2, 101, **f64)
scales = torch.logspace(-1.5, 1.5, 101, **f64)


def draw_elbo_of_q(axes, s, log10_c):
    c = 10**log10_c
    mu_q, Sigma_q = m + s * direction, c * S
    elbo_q = linear_gaussian_elbo(mu_q, Sigma_q).item()
    kl_q = kl_divergence(MultivariateNormal(mu_q, Sigma_q), MultivariateNormal(m, S)).item()
    axes[0].plot(shifts, [linear_gaussian_elbo(m + t * direction, Sigma_q) for t in shifts], label="ELBO(q)")
    axes[0].plot(s, elbo_q, "o", color="C3")
    axes[0].set(xlabel=f"s, with q = N(m + s v, {c:.2f} S)", ylabel="nats", title="shifting q's mean")
    axes[1].plot(scales, [linear_gaussian_elbo(mu_q, k * S) for k in scales], label="ELBO(q)")
    axes[1].plot(c, elbo_q, "o", color="C3")
    axes[1].set(xscale="log", xlabel=f"c, with q = N(m + {s:.2f} v, c S)", title="scaling q's covariance")
    for ax in axes[:2]:
        ax.axhline(log_px, color="k", ls="--", label="log p(x) (exact)")
        ax.set_ylim(log_px - 6, log_px + 1)
        ax.legend(fontsize=8, loc="lower center")
    for (mean, cov), style, label in [((m, S), "k-", "posterior p(z|x)"), ((mu_q, Sigma_q), "C3--", "q")]:
        points = ellipse(mean, cov)
        axes[2].plot(points[:, 0], points[:, 1], style, label=label)
    axes[2].set(aspect="equal", xlim=(m[0] - 3, m[0] + 3), ylim=(m[1] - 3, m[1] + 3), xlabel="$z_1$", ylabel="$z_2$",
                title="2-sd contours")
    axes[2].legend(fontsize=8)
    axes[0].figure.suptitle(f"ELBO {elbo_q:.3f}, log p(x) {log_px:.3f}: gap {log_px - elbo_q:.3f} = "
                            f"KL(q || posterior) {kl_q:.3f} nats", fontsize=10)


course_lib.core.widgets.interactive_figure(
    draw_elbo_of_q, ncols=3, figsize=(13, 3.8),
    s=ipywidgets.FloatSlider(value=0.8, min=-2, max=2, step=0.05, description="shift s"),
    log10_c=ipywidgets.FloatSlider(value=0.3, min=-1.5, max=1.5, step=0.05, description="log10 c"))

# %% [markdown]
# ### A.5 Mean field: what "factorised" restricts (optional deep dive)
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
# > **Common confusion:** a common reading is that mean field "assumes all variables (data, latents, parameters) are
# > independent". In fact mean field is a restriction on the *approximate posterior* $q$: it factorises over the latent
# > coordinates. The model itself keeps every dependence, and the price of the restriction is the positive gap printed above.
# > A second common reading takes the marginal likelihood for "the probability of the data given the prior over
# > parameters"; in fact it is $p_\theta(x) = \int p_\theta(x \mid z)\, p(z)\, dz$, the latent integrated out, for fixed $\theta$.
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
# > **Common confusion:** a common reading calls the formula above "the ELBO"; in fact it is the *estimator* $\widetilde{\mathcal{L}}^B$: a
# > one-sample estimate of it goes up and down from batch to batch around the ELBO. And in a transcription of $\widetilde{\mathcal{L}}^A$ a misplaced
# > bracket puts $\log q_\phi(z \mid x)$ outside the sum over samples; it belongs inside, evaluated at each $z^{(l)}$.
#
# ### A.7 A tighter bound: importance weighting (optional deep dive)
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
# > **Common confusion:** the expression $\tfrac{1}{2}\sum_j \big(1 + \log\sigma_j^2 - \mu_j^2 - \sigma_j^2\big)$ that the VAE paper
# > (Kingma & Welling 2014) puts in the ELBO is $-\operatorname{KL}$, with the sign of the ELBO's term; add it to a loss you *minimise*
# > and you push $q$ away from the prior. Two more: $\sigma^2$ is the **variance**, not the standard deviation (a common reading
# > calls $\mu, \sigma^2$ "mean and s.d."), so `Normal(mu, logvar.exp())` silently builds a Gaussian with the wrong width; and the
# > KL is a **sum** over latent dimensions, not a mean. The numbers:

# %%
wrong_width = kl_divergence(Normal(mu, logvar.exp()), Normal(0.0, 1.0)).sum(-1)  # sigma = exp(logvar): wrong
wrong_sign = 0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(-1)  # the ELBO's term, = -KL
print("KL                                  :", kl_closed[:3].numpy().round(3))
print("with Normal(mu, logvar.exp())        :", wrong_width[:3].numpy().round(3))
print("1/2 sum(1 + logvar - mu^2 - exp(logvar)):", wrong_sign[:3].numpy().round(3), "(= -KL)")
print("mean over dimensions instead of sum:", (kl_closed / 16)[:3].numpy().round(3))
assert torch.allclose(wrong_sign, -kl_closed)

# %% [markdown]
# **Widget: the KL bowl.** The KL of one dimension as a function of $\mu$ and $\sigma$: a bowl with its bottom at the prior,
# $\mu = 0, \sigma = 1$. This is the force that pulls every code towards $\mathcal{N}(0, 1)$; the reconstruction term pulls the other
# way. Move the red marker with the sliders: the title splits the KL into its mean part $\tfrac{1}{2}\mu^2$ and its width part
# $\tfrac{1}{2}(\sigma^2 - 1 - \log\sigma^2)$, and the right panel draws $q$ against the prior. A narrow $q$ (small $\sigma$, a code that
# pins $z$ down precisely) costs nats even at $\mu = 0$.

# %%
mu_axis, sigma_axis = torch.meshgrid(torch.linspace(-3, 3, 121), torch.linspace(0.05, 3, 119), indexing="xy")
kl_map = 0.5 * (mu_axis**2 + sigma_axis**2 - 1 - torch.log(sigma_axis**2))  # (119, 121)
z_axis = torch.linspace(-5, 5, 401)


def draw_kl_bowl(axes, mu_q, sigma_q):
    contours = axes[0].contourf(mu_axis, sigma_axis, kl_map, levels=[0, 0.1, 0.25, 0.5, 1, 2, 3, 4, 6, 10], cmap="viridis")
    axes[0].figure.colorbar(contours, ax=axes[0], label="KL in nats (one dimension)")
    axes[0].plot(0, 1, "w+", ms=12, mew=2)
    axes[0].plot(mu_q, sigma_q, "o", color="C3", ms=9)
    axes[0].set(xlabel="$\\mu$", ylabel="$\\sigma$", title="KL(N($\\mu$, $\\sigma^2$) || N(0, 1)); prior at the white cross")
    mean_part, width_part = 0.5 * mu_q**2, 0.5 * (sigma_q**2 - 1 - math.log(sigma_q**2))
    axes[1].plot(z_axis, Normal(0.0, 1.0).log_prob(z_axis).exp(), "k--", label="prior N(0, 1)")
    axes[1].plot(z_axis, Normal(mu_q, sigma_q).log_prob(z_axis).exp(), color="C3", label="q")
    axes[1].set(xlabel="z", ylabel="density", ylim=(0, max(0.45, 0.42 / sigma_q)),
                title=f"KL = {mean_part:.3f} (mean) + {width_part:.3f} (width) = {mean_part + width_part:.3f} nats")
    axes[1].legend(fontsize=8)


course_lib.core.widgets.interactive_figure(
    draw_kl_bowl, ncols=2, figsize=(11, 3.6),
    mu_q=ipywidgets.FloatSlider(value=1.0, min=-3, max=3, step=0.05, description="mu"),
    sigma_q=ipywidgets.FloatSlider(value=0.5, min=0.05, max=3, step=0.05, description="sigma"))

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
# The whole model in one picture before the code: the encoder turns an image into the two vectors $\mu$ and $\log\sigma^2$;
# the sample $z = \mu + \sigma \odot \varepsilon$ takes its randomness from noise $\varepsilon \sim \mathcal{N}(0, I)$ that enters from the side
# (section C's reparameterization, so gradients reach $\mu$ and $\sigma$); the decoder turns $z$ into 784 Bernoulli logits; and the
# loss is $-\text{ELBO}$ = reconstruction + KL (A.6), each term summed per image.

# %%
fig = course_lib.topics.vae.schematic()
plt.show()

# %% [markdown]
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

# %% [markdown]
# Your model's reconstructions. Under `ci` (60 steps on 5,000 images) expect a KL near 0 and nearly the same grey blob for
# every digit: **early posterior collapse**, a common phase at the start of VAE training, not a bug in your code. The decoder
# has first learned the average digit, and an encoder that outputs the prior for every image pays no KL; only later does
# encoding the digit pay for its nats. The cell prints what it sees; the `cpu` profile trains long enough to leave the phase.

# %%
with torch.no_grad():
    reconstructions = decode_probabilities(model, model.encode(x_test_bin[:10].to(DEVICE))[0])  # (10, 1, 28, 28)
spread = reconstructions.std(dim=0).mean().item()  # how much the 10 reconstructions differ, per pixel
print(f"KL {final['kl']:.2f} nats per image; the 10 reconstructions differ by {spread:.3f} per pixel "
      f"(standard deviation across them, averaged over pixels; the 10 test digits themselves: "
      f"{x_test_bin[:10].std(dim=0).mean():.3f})")
if final["kl"] < 1.0:
    print(f"KL near 0 and (nearly) identical reconstructions: early posterior collapse after {cfg.steps} steps. "
          "Nothing is wrong with the code; the shipped model of D.4 has a KL of about "
          f"{course_lib.core.checkpointing.read_manifest()['vae_mnist']['metrics']['test_kl_nats']:.0f} nats.")
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
# ### D.5 Section C again, on the trained VAE (optional deep dive)
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
# Pick a start digit and an end digit by class: the widget takes the first test image of each class, encodes both to their
# posterior means $\mu_a, \mu_b$, decodes points on the segment $(1 - t)\,\mu_a + t\,\mu_b$, and compares with fading the two images
# into each other in pixel space (top row). The latent path passes through other digits' shapes; the pixel path is a double
# exposure. The right panel draws the path of the 2-D model on its latent scatter.

# %%
first_of_class = [int((y_test == digit).nonzero()[0]) for digit in range(10)]  # test index of the first 0, 1, ..., 9


def draw_interpolation(axes, digit_a, digit_b, model_name):
    model_i = vae if model_name == "J = 16" else vae_2d
    index_a, index_b = first_of_class[digit_a], first_of_class[digit_b]
    x_pair = x_test_bin[[index_a, index_b]].to(DEVICE)  # (2, 1, 28, 28)
    with torch.no_grad():
        mu_pair = model_i.encode(x_pair)[0].cpu()  # (2, J)
    path = course_lib.topics.vae.interpolate(mu_pair[0], mu_pair[1], steps=10)  # (10, J)
    t = torch.linspace(0, 1, 10)[:, None, None, None]
    pixel_path = (1 - t) * x_test[index_a] + t * x_test[index_b]  # (10, 1, 28, 28)
    course_lib.core.plotting.image_grid(torch.cat([pixel_path, decode_probabilities(model_i, path)]), nrow=2, ax=axes[0])
    axes[0].set_title(f"a {digit_a} (test image {index_a}) → a {digit_b} (test image {index_b}): pixel fade (top), "
                      f"latent path of the {model_name} model (bottom)", fontsize=9)
    with torch.no_grad():
        pair_2d = vae_2d.encode(x_pair)[0].cpu()
    draw_latent_scatter(axes[1], mu_2d, labels_2d, "the J = 2 path")
    axes[1].plot(pair_2d[:, 0], pair_2d[:, 1], "k.-", lw=2, ms=10)


course_lib.core.widgets.interactive_figure(
    draw_interpolation, ncols=2, figsize=(12, 3.4),
    digit_a=ipywidgets.Dropdown(options=list(range(10)), value=3, description="from digit"),
    digit_b=ipywidgets.Dropdown(options=list(range(10)), value=7, description="to digit"),
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
print(f"{'beta':>5} {'rate KL':>8} {'distortion':>11} {'-ELBO (beta = 1)':>17} {'rms |mu(x)|':>12}   nats per image, "
      f"2,000 test digits")
for beta, r in beta_results.items():
    r["rms_mean"] = r["means"].pow(2).sum(1).mean().sqrt().item()  # how far the codes spread; the prior's rms |z| is sqrt(2)
    print(f"{beta:5.1f} {r['kl']:8.2f} {r['reconstruction']:11.2f} {r['neg_elbo']:17.2f} {r['rms_mean']:12.3f}")
rates = [beta_results[beta]["kl"] for beta in betas]
assert beta_results[8.0]["rms_mean"] < beta_results[0.5]["rms_mean"]  # a larger beta pulls the codes in
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
# Things to look for: at large $\beta$ the posterior means huddle towards the centre (the printed rms $\lVert \mu(x) \rVert$ falls as $\beta$
# grows; the prior's is $\sqrt{2} = 1.41$) and the classes overlap (a low
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
# **Exercise 1: the KL between two diagonal Gaussians.** *Derive, then check.* A VAE with a learned prior, a conditional VAE
# and a hierarchical VAE all need the KL to a prior that is not $\mathcal{N}(0, 1)$:
# $\operatorname{KL}\big(\mathcal{N}(\mu_1, \sigma_1^2) \,\Vert\, \mathcal{N}(\mu_2, \sigma_2^2)\big)$. Derive it on paper for one dimension, with the steps of B:
# write $\log q(z) - \log p(z)$, then take $\mathbb{E}_q$, using $\mathbb{E}_q[(z - \mu_1)^2] = \sigma_1^2$ and
# $\mathbb{E}_q[(z - \mu_2)^2] = \sigma_1^2 + (\mu_1 - \mu_2)^2$. Set $\mu_2 = 0, \sigma_2 = 1$ in your result: you should get B's formula.
# Then code it with log-variances, summed over the $J$ dimensions of each row: `my_kl_between_gaussians(mu_q, logvar_q,
# mu_p, logvar_p)`, four $(N, J)$ tensors $\to (N,)$. The check compares it with `torch.distributions` (which includes the
# case $p = \mathcal{N}(0, I)$ and the case $q = p$) and with a Monte Carlo average of $\log q(z) - \log p(z)$.

# %% tags=["exercise"]
def my_kl_between_gaussians(mu_q, logvar_q, mu_p, logvar_p):
    """KL(N(mu_q, diag exp(logvar_q)) || N(mu_p, diag exp(logvar_p))) per row in nats: four (N, J) -> (N,)."""
    ### BEGIN SOLUTION
    variance_ratio = torch.exp(logvar_q - logvar_p)  # sigma_q^2 / sigma_p^2, (N, J)
    mean_term = (mu_q - mu_p) ** 2 / logvar_p.exp()  # (N, J)
    return 0.5 * (variance_ratio + mean_term - 1 - (logvar_q - logvar_p)).sum(dim=1)
    ### END SOLUTION


# %%
generator = seed_everything(8)
f64_rows = [tuple(torch.randn(6, 16, generator=generator, **f64) for _ in range(4))]
zeros_q = torch.zeros(2, 3, **f64)
f64_rows += [(1.5 * torch.randn(2, 3, generator=generator, **f64), torch.randn(2, 3, generator=generator, **f64), zeros_q, zeros_q),
             (torch.ones(2, 3, **f64), -torch.ones(2, 3, **f64), torch.ones(2, 3, **f64), -torch.ones(2, 3, **f64))]  # q = p


def kl_by_torch_distributions(mu_q, logvar_q, mu_p, logvar_p):
    q_dist, p_dist = Normal(mu_q, torch.exp(0.5 * logvar_q)), Normal(mu_p, torch.exp(0.5 * logvar_p))
    return kl_divergence(q_dist, p_dist).sum(-1)  # (N,)


course_lib.core.check.check_function(my_kl_between_gaussians, kl_by_torch_distributions, f64_rows)
mu_q1, logvar_q1, mu_p1, logvar_p1 = (t[:2] for t in f64_rows[0])  # two rows of the first input
q1, p1 = Normal(mu_q1, torch.exp(0.5 * logvar_q1)), Normal(mu_p1, torch.exp(0.5 * logvar_p1))
z1 = q1.sample((100_000,))  # (n, 2, 16)
log_ratio1 = (q1.log_prob(z1) - p1.log_prob(z1)).sum(-1)  # (n, 2)
kl_mc1, kl_se1 = log_ratio1.mean(0), log_ratio1.std(0) / math.sqrt(len(z1))
kl_mine1 = my_kl_between_gaussians(mu_q1, logvar_q1, mu_p1, logvar_p1)
print("yours      :", kl_mine1.numpy().round(3))
print("Monte Carlo:", kl_mc1.numpy().round(3), "±", kl_se1.numpy().round(3))
assert ((kl_mine1 - kl_mc1).abs() < 4 * kl_se1).all(), "your KL disagrees with the Monte Carlo average"

# %%
course_lib.core.check.show_solution(course_lib.topics.vae.diagonal_gaussian_kl)

# %% [markdown]
# **Exercise 2: how hard the KL pulls.** *Derive, then check.* Differentiate B's per-dimension KL,
# $\tfrac{1}{2}\big(\mu^2 + e^{\ell} - 1 - \ell\big)$ with $\ell = \log\sigma^2$ (`logvar`), by hand: once with respect to $\mu$ and once with
# respect to $\ell$. Code `my_kl_gradients(mu, logvar)`, returning the two gradients of `gaussian_kl(mu, logvar).sum()`, each
# $(N, J)$, from your formulas (no autograd inside). The check compares them with autograd, then prints your $\ell$-gradient
# at $\ell = -6, 0, 3$. Read your formula before you look: where is the pull on $\ell$ zero, how large can it get when a code
# becomes very precise ($\ell \to -\infty$), and how large when $\sigma$ is too wide? (The reconstruction term wants small $\sigma$; this
# is why a trained encoder settles at a finite $\sigma$ rather than at 0 or 1.)

# %% tags=["exercise"]
def my_kl_gradients(mu, logvar):
    """d/dmu and d/dlogvar of sum 1/2 (mu^2 + exp(logvar) - 1 - logvar), by hand: (N, J), (N, J)."""
    ### BEGIN SOLUTION
    d_mu = mu.clone()  # d/dmu 1/2 mu^2
    d_logvar = 0.5 * (torch.exp(logvar) - 1)  # d/dl 1/2 (e^l - l)
    return d_mu, d_logvar
    ### END SOLUTION


# %%
def kl_gradients_by_autograd(mu, logvar):
    mu, logvar = mu.detach().clone().requires_grad_(True), logvar.detach().clone().requires_grad_(True)
    gaussian_kl(mu, logvar).sum().backward()
    return mu.grad, logvar.grad


gradient_inputs = [(torch.randn(5, 16, generator=generator, **f64), 2 * torch.randn(5, 16, generator=generator, **f64)),
                   (torch.zeros(2, 3, **f64), torch.zeros(2, 3, **f64))]
for k, what in enumerate(["d KL / d mu", "d KL / d logvar"]):
    course_lib.core.check.check_function(lambda mu, logvar: my_kl_gradients(mu, logvar)[k],
                                         lambda mu, logvar: kl_gradients_by_autograd(mu, logvar)[k],
                                         gradient_inputs, name=f"my_kl_gradients, {what}")
print("d KL / d logvar at logvar = -6, 0, 3:", my_kl_gradients(torch.zeros(1, 3), torch.tensor([[-6.0, 0.0, 3.0]]))[1])

# %%
course_lib.core.check.show_solution('''def my_kl_gradients(mu, logvar):
    # KL per dimension: 1/2 (mu^2 + e^l - 1 - l), l = logvar
    # d/dmu = mu: a spring pulling the mean to 0, as strong as the mean is far
    # d/dl = 1/2 (e^l - 1) = 1/2 (sigma^2 - 1): zero at sigma = 1, never below -1/2 as sigma -> 0,
    #        and exponential in l when sigma > 1
    return mu.clone(), 0.5 * (torch.exp(logvar) - 1)''')

# %% [markdown]
# **Exercise 3: one importance weight per image.** The other estimator of A.6, $\widetilde{\mathcal{L}}^A$ with $L = 1$, is the log weight
# $\log w = \log p_\theta(x \mid z) + \log p(z) - \log q_\phi(z \mid x)$ at one sample $z \sim q_\phi(z \mid x)$; A.7's bound averages the weights $w$.
# Write `my_log_weight(logits, x, z, mu, logvar)`: decoder logits and binary images $(N, 1, 28, 28)$, the sample $z$ and
# $q$'s parameters $(N, J)$; return $\log w$ per image, $(N,)$. There is no closed-form KL in it: you need the log density of a
# diagonal Gaussian, summed over dimensions, twice. The second check runs your function on the shipped VAE for one test
# digit: over many samples its mean must agree with the mean of the one-sample estimates $\widetilde{\mathcal{L}}^B$ (both are
# unbiased for the same ELBO), while their spreads differ.

# %% tags=["exercise"]
def my_log_weight(logits, x, z, mu, logvar):
    """log p(x | z) + log p(z) - log q(z | x) per image: (N,)."""
    ### BEGIN SOLUTION
    log_px_given_z = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=(1, 2, 3))  # (N,)
    log_prior = Normal(0.0, 1.0).log_prob(z).sum(dim=1)  # (N,)
    log_q = Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(dim=1)  # (N,)
    return log_px_given_z + log_prior - log_q
    ### END SOLUTION


# %%
weight_inputs = []
for n_images in (4, 1):
    logits_e = 3 * torch.randn(n_images, 1, 28, 28, generator=generator)
    x_e = torch.bernoulli(torch.full((n_images, 1, 28, 28), 0.2), generator=generator)
    mu_e, logvar_e = torch.randn(n_images, 16, generator=generator), torch.randn(n_images, 16, generator=generator)
    z_e = mu_e + torch.exp(0.5 * logvar_e) * torch.randn(n_images, 16, generator=generator)
    weight_inputs.append((logits_e, x_e, z_e, mu_e, logvar_e))
course_lib.core.check.check_function(my_log_weight, course_lib.topics.vae.log_importance_weight, weight_inputs,
                                     rtol=1e-4, atol=1e-3)

n_mc = 2_000
x_rep = x_test_bin[:1].to(DEVICE).expand(n_mc, -1, -1, -1)  # (n, 1, 28, 28): one digit, n times
with torch.no_grad():
    mu_rep, logvar_rep = (t.expand(n_mc, -1) for t in vae.encode(x_test_bin[:1].to(DEVICE)))  # (n, J) each
    z_rep = course_lib.topics.vae.reparameterize(mu_rep, logvar_rep, generator=torch.Generator().manual_seed(9))
    logits_rep = vae.decode(z_rep)  # (n, 1, 28, 28)
    estimates_a = my_log_weight(logits_rep, x_rep, z_rep, mu_rep, logvar_rep).double().cpu()  # (n,) L^A
    estimates_b = -course_lib.topics.vae.negative_elbo(logits_rep, x_rep, mu_rep, logvar_rep).double().cpu()  # (n,) L^B
pooled = math.sqrt((estimates_a.var() + estimates_b.var()).item() / n_mc)
print(f"one test digit, {n_mc} samples: L^A mean {estimates_a.mean():.2f} (sd {estimates_a.std():.2f}), "
      f"L^B mean {estimates_b.mean():.2f} (sd {estimates_b.std():.2f}) nats")
assert abs(estimates_a.mean() - estimates_b.mean()) < 5 * pooled, "the two estimators disagree on the ELBO"

# %%
course_lib.core.check.show_solution(course_lib.topics.vae.log_importance_weight)

# %% [markdown]
# **Exercise 4: the importance-weighted bound** (it goes with A.7, a deep dive). Given log weights $\log w$ of shape $(K, N)$ ($K$ samples for each of $N$ images),
# return $\mathcal{L}_K = \log \frac{1}{K}\sum_k w_k$ per image, shape $(N,)$. The weights of a real image are around $e^{-90}$: the direct formula
# underflows, so use the log-sum-exp trick of chapter 01.

# %% tags=["exercise"]
def my_iwae_bound(log_weights):
    """log of the mean of exp(log_weights) over dim 0, stably: (K, N) -> (N,)."""
    ### BEGIN SOLUTION
    m = log_weights.amax(dim=0)  # (N,)
    return m + torch.log(torch.exp(log_weights - m).mean(dim=0))
    ### END SOLUTION


# %%
iwae_inputs = [torch.randn(10, 3, generator=generator, dtype=torch.float64),
               -90 + 5 * torch.randn(100, 4, generator=generator, dtype=torch.float64),
               -1000 + torch.randn(50, 2, generator=generator, dtype=torch.float64),
               torch.randn(1, 5, generator=generator, dtype=torch.float64)]  # K = 1: the ELBO estimate itself
course_lib.core.check.check_function(my_iwae_bound, iwae_bound, iwae_inputs)

# %%
course_lib.core.check.show_solution(course_lib.topics.vae.iwae_bound)

# %% [markdown]
# **Exercise 5: what if $\beta = 0$?** *Predict, then run.* E.3 fine-tuned the 2-D model at $\beta$ from 0.5 to 8. Now drop the KL
# term altogether: $\beta = 0$, a plain autoencoder with noise in its code. Before you run the experiment, write your prediction
# in `MY_PREDICTION`: compared with E.3's $\beta = 1$ model (the same start, batches and number of steps), does the rate
# (the KL) go `"up"` or `"down"`? The distortion $-\log p_\theta(x \mid z)$? The encoder's average $\sigma$? And do samples from the prior
# $\mathcal{N}(0, I)$ look `"better"` or `"worse"`? Think about what, without the KL, stops the encoder from making $\sigma$ tiny and
# from placing the codes wherever it likes.

# %% tags=["exercise"]
MY_PREDICTION = None  # your prediction: a dict, keys "rate", "distortion", "sigma", "prior samples"
### BEGIN SOLUTION
MY_PREDICTION = {"rate": "up", "distortion": "down", "sigma": "down", "prior samples": "worse"}
### END SOLUTION

# %%
generator = seed_everything(7)  # the same start, batches and steps as E.3's models
model_beta0 = course_lib.zoo.load_shipped("vae_mnist_2d", DEVICE)
optimizer = torch.optim.Adam(model_beta0.parameters(), lr=5e-4)
batches = minibatches(x_train, batch_size=beta_cfg.batch_size, generator=generator)
fit(model_beta0, lambda m, batch: course_lib.topics.vae.vae_loss(m, batch, beta=0.0), batches,
    steps=beta_cfg.steps, optimizer=optimizer, device=DEVICE, show_progress=False)
beta0_result = evaluate_elbo(model_beta0, x_test_bin[:2000])


def mean_sigma(model):
    """The encoder's sigma = exp(logvar / 2), averaged over 2,000 test digits and both dimensions."""
    with torch.no_grad():
        return torch.exp(0.5 * model.encode(x_test_bin[:2000].to(DEVICE))[1]).mean().item()


sigma_beta1, sigma_beta0 = mean_sigma(beta_models[1.0]), mean_sigma(model_beta0)
print(f"{beta_cfg.steps} fine-tuning steps each, 2,000 test digits:")
print(f"{'':20s} {'beta = 1':>9s} {'beta = 0':>9s}")
for label, value_1, value_0 in [("rate KL (nats)", beta_results[1.0]["kl"], beta0_result["kl"]),
                                ("distortion (nats)", beta_results[1.0]["reconstruction"], beta0_result["reconstruction"]),
                                ("mean sigma of q", sigma_beta1, sigma_beta0)]:
    print(f"{label:20s} {value_1:9.3f} {value_0:9.3f}")

z_prior = torch.randn(20, 2, generator=generator)  # the same prior draws for both models
fig, axes = plt.subplots(2, 2, figsize=(10, 6.6), height_ratios=[2.2, 1], layout="constrained")
with torch.no_grad():
    means_beta0 = model_beta0.encode(x_test_bin[:2000].to(DEVICE))[0].cpu()
for column, (name, model_c, means_c) in enumerate([("beta = 1", beta_models[1.0], beta_results[1.0]["means"]),
                                                    ("beta = 0", model_beta0, means_beta0)]):
    draw_latent_scatter(axes[0, column], means_c, y_test[:2000], f"posterior means, {name}")
    course_lib.core.plotting.image_grid(decode_probabilities(model_c, z_prior), nrow=2, ax=axes[1, column])
    axes[1, column].set_title(f"decoder means of 20 prior samples z ~ N(0, I), {name}", fontsize=9)
plt.show()

# %%
measured = {"rate": "up" if beta0_result["kl"] > beta_results[1.0]["kl"] else "down",
            "distortion": "up" if beta0_result["reconstruction"] > beta_results[1.0]["reconstruction"] else "down",
            "sigma": "up" if sigma_beta0 > sigma_beta1 else "down"}
assert isinstance(MY_PREDICTION, dict) and set(measured) <= set(MY_PREDICTION), (
    "write your prediction first: MY_PREDICTION = {'rate': 'up' or 'down', 'distortion': ..., 'sigma': ..., "
    "'prior samples': 'better' or 'worse'}")
for key, outcome in measured.items():
    verdict = "as you predicted" if MY_PREDICTION[key] == outcome else "not what you predicted: why?"
    print(f"{key:11s} you predicted {MY_PREDICTION[key]!r:7s} measured {outcome!r:7s} {verdict}")
print(f"prior samples: you predicted {MY_PREDICTION.get('prior samples')!r}; judge them in the figure above "
      f"(after {beta_cfg.steps} steps)")

# %%
course_lib.core.check.show_solution('''MY_PREDICTION = {"rate": "up", "distortion": "down", "sigma": "down", "prior samples": "worse"}
# Without the KL nothing charges the encoder for a precise code: sigma shrinks towards 0, so z carries more
# nats about x (the rate goes up) and the decoder sees less noise (the distortion goes down). Nothing keeps the
# codes near N(0, I) either: they drift and the gaps between the classes grow, the aggregate posterior and the
# prior part ways, and a z drawn from the prior lands where the decoder was never trained. The reconstructions
# get better while the samples get worse: with beta = 0 the model is an autoencoder, not a generative model.
# How far the samples move depends on the number of steps: little after the few steps of the ci profile.''')

# %% [markdown]
# ---
# ## Summary
#
# | key equation | derived in | checked by |
# |---|---|---|
# | $\log p_\theta(x) = \text{ELBO} + \operatorname{KL}(q_\phi(z \mid x) \,\Vert\, p_\theta(z \mid x))$, so the ELBO is a lower bound | A.2 (Jensen), A.3 (the identity) | the exact linear-Gaussian model of A.4: equality at the posterior, the gap equal to the KL for 1000 random q |
# | $p(z \mid x) = \mathcal{N}(m, \Lambda^{-1})$ with $\Lambda = I + W^\top W / \sigma^2$, $m = \Lambda^{-1} W^\top (x - b) / \sigma^2$ | A.4 (completing the square) | Bayes' rule at random z in the first cell of A.4 |
# | $\text{ELBO} = \mathbb{E}_q[\log p_\theta(x \mid z)] - \operatorname{KL}(q_\phi(z \mid x) \,\Vert\, p(z))$: reconstruction and rate | A.6 | both one-sample estimators against the exact ELBO in A.6 |
# | $\operatorname{KL}(\mathcal{N}(\mu, \sigma^2) \,\Vert\, \mathcal{N}(0, 1)) = \tfrac{1}{2}(\mu^2 + \sigma^2 - 1 - \log\sigma^2)$, summed over dimensions | B | torch.distributions and Monte Carlo in B; exercises 1 and 2 in F |
# | $\nabla_\phi \mathbb{E}_q[f] = \mathbb{E}_\varepsilon[f'(\mu + \sigma\varepsilon)\, \nabla_\phi(\mu + \sigma\varepsilon)]$ (pathwise) and $\mathbb{E}_q[f\, \nabla_\phi \log q_\phi]$ (score function) | C | the exact gradient of a quadratic in C; the trained VAE in D.5 |
# | $\mathcal{L}_K = \mathbb{E}[\log \tfrac{1}{K}\sum_k w_k]$, between the ELBO and $\log p_\theta(x)$ | A.7 | the linear-Gaussian model in A.7; the shipped model in D.4 |
#
# **Three things to remember.**
#
# 1. The ELBO is $\log p_\theta(x)$ minus the KL from the encoder to the true posterior: maximising it improves the model and
#    the encoder at once, and it is a bound, never the likelihood itself.
# 2. The reparameterization $z = \mu + \sigma \odot \varepsilon$ does not remove a bias (the score-function estimator is unbiased too); it
#    cuts the variance of the gradient by orders of magnitude, which is what lets a VAE train with one sample per image.
# 3. Report $-\text{ELBO}$ in nats per image, summed over pixels and latent dimensions, on a stated data model (binarized
#    pixels here); per-pixel means and grey-target BCE give numbers that compare with nothing.

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
