"""Score matching and Langevin dynamics (chapter 10).

The score of a density is ``s(x) = grad_x log p(x)``. This module holds what chapter 10 builds
step by step:

- models: ``ScoreMLP`` (s_theta(x)) and ``NoiseConditionalScoreNet`` (s_theta(x, sigma), NCSN on 2-D data);
- losses: ``ism_loss`` (Hyvarinen's implicit score matching, an exact Jacobian trace),
  ``ssm_loss`` (sliced), ``dsm_loss`` (denoising, one sigma) and ``ncsn_loss`` (sigma^2-weighted
  DSM over a geometric ladder of sigmas, ``geometric_sigmas``);
- samplers: ``langevin`` (unadjusted Langevin) and ``annealed_langevin`` (NCSN's sampler);
- Tweedie: ``tweedie_denoise`` and, for a Gaussian mixture, the exact ``mixture_posterior_mean``;
- measurements: ``energy_distance``, ``relative_score_error``, ``mode_fractions``, ``saved_tensor_bytes``;
- the chapter's 2-D data, ``toy_mixture()``, and ``sample_ncsn`` (the shipped checkpoint's sampler).

Conventions: points are ``(N, d)`` tensors; a score function maps ``(N, d) -> (N, d)``; a
noise-conditional one maps ``(N, d), sigma -> (N, d)`` with ``sigma`` a float or an ``(N,)`` tensor.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.core.layers import sinusoidal_embedding
from course_lib.data.toy2d import GaussianMixture2D

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


def _check_points(x: torch.Tensor, name: str = "x", dim: int | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, d), got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (N, d), got {tuple(x.shape)}; for one point use x[None]")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns (the model's dimension), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {x.dtype}; use {name}.float()")
    return x


# ------------------------------------------------------------------------------------------ the data

def toy_mixture() -> GaussianMixture2D:
    """The chapter's 2-D data: 8 Gaussians (std 0.5) on a circle of radius 4, weights alternating 3:1. Chapter 10, A.2.

    Big modes (angles 0, 90, 180, 270 degrees) have weight 3/16 each, small ones 1/16, so a sampler
    that ignores the weights (plain Langevin) is caught by ``mode_fractions``.
    """
    angles = torch.arange(8, dtype=torch.float64) * math.pi / 4
    means = 4.0 * torch.stack([angles.cos(), angles.sin()], 1)  # (8, 2)
    weights = torch.tensor([3.0, 1.0] * 4, dtype=torch.float64) / 16  # (8,)
    return GaussianMixture2D(means, 0.5, weights)


def mode_fractions(x: torch.Tensor, mixture: GaussianMixture2D) -> torch.Tensor:
    """Fraction of points nearest to each component mean, shape (K,). Chapter 10, E.5."""
    x = _check_points(x, dim=2)
    nearest = torch.cdist(x.double(), mixture.means).argmin(1)  # (N,)
    return torch.bincount(nearest, minlength=len(mixture.means)).double() / len(x)


# ---------------------------------------------------------------------------------------- the models

class ScoreMLP(nn.Module):
    """s_theta(x): (N, dim) -> (N, dim), an MLP with SiLU (smooth, so its Jacobian is too). Chapter 10, C.2."""

    def __init__(self, dim: int = 2, hidden: int = 128, n_layers: int = 3):
        super().__init__()
        self.config = dict(dim=dim, hidden=hidden, n_layers=n_layers)
        sizes = [dim] + [hidden] * n_layers
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = _check_points(x, dim=self.config["dim"])  # (N, dim)
        for layer in self.layers:
            h = F.silu(layer(h))  # (N, hidden)
        return self.out(h)  # (N, dim)


class NoiseConditionalScoreNet(nn.Module):
    """s_theta(x, sigma): (N, dim), sigma (float or (N,)) -> (N, dim). The NCSN of chapter 10 for 2-D data.

    The noise level enters as sinusoidal features of ``log sigma`` (``course_lib.topics.unet.sinusoidal_embedding``
    of ``emb_scale * log sigma``; a small scale keeps the fastest feature slow across the ladder, so the
    network interpolates between the levels it was trained on), passed through a small MLP and added to
    every hidden layer. The
    output is divided by ``sigma``: the score of ``p_sigma`` has a size of order ``1 / sigma``, so the
    network itself only has to predict something of order one, at every level (NCSNv2's choice).

    Taught in chapter 10, E.3.
    """

    def __init__(self, dim: int = 2, hidden: int = 128, n_layers: int = 3, emb_dim: int = 32,
                 emb_scale: float = 4.0):
        super().__init__()
        self.config = dict(dim=dim, hidden=hidden, n_layers=n_layers, emb_dim=emb_dim, emb_scale=emb_scale)
        self.input = nn.Linear(dim, hidden)
        self.sigma_mlp = nn.Sequential(nn.Linear(emb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(n_layers))
        self.sigma_proj = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(n_layers))
        self.out = nn.Linear(hidden, dim)

    def embed(self, sigma: torch.Tensor) -> torch.Tensor:
        """(N,) noise levels -> (N, hidden) features."""
        features = sinusoidal_embedding(self.config["emb_scale"] * sigma.log(), self.config["emb_dim"])
        return self.sigma_mlp(features.to(sigma.device))  # (N, hidden)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        x = _check_points(x, dim=self.config["dim"])  # (N, dim)
        sigma = as_sigma_column(sigma, len(x), x)  # (N, 1)
        one_level = len(x) > 1 and bool((sigma == sigma[0]).all())  # as when sampling: embed it once
        e = self.embed(sigma[:1, 0] if one_level else sigma[:, 0])  # (1 or N, hidden), broadcast below
        h = self.input(x) + e  # (N, hidden)
        for layer, proj in zip(self.layers, self.sigma_proj):
            h = layer(F.silu(h)) + proj(e)  # (N, hidden)
        return self.out(F.silu(h)) / sigma  # (N, dim)


def as_sigma_column(sigma, n: int, like: torch.Tensor) -> torch.Tensor:
    """A float, a 0-d tensor or an (N,) tensor of noise levels -> (N, 1) on ``like``'s device and dtype.

    Taught in chapter 10, E.3.
    """
    sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(n)
    if sigma.shape != (n,):
        raise ValueError(f"sigma must be a float or a tensor of shape ({n},), got shape {tuple(sigma.shape)}")
    if (sigma <= 0).any():
        raise ValueError("noise levels sigma must be > 0")
    return sigma[:, None]


def geometric_sigmas(sigma_max: float, sigma_min: float, n_levels: int) -> torch.Tensor:
    """sigma_1 > ... > sigma_L, a geometric sequence (equal ratios), shape (L,), float32. Chapter 10, B.3."""
    if not 0 < sigma_min < sigma_max or n_levels < 2:
        raise ValueError(f"need 0 < sigma_min < sigma_max and n_levels >= 2, got {sigma_min}, {sigma_max}, {n_levels}")
    return torch.logspace(math.log10(sigma_max), math.log10(sigma_min), n_levels)


# ---------------------------------------------------------------------------------------- the losses

def divergence(outputs: torch.Tensor, x: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
    """Exact trace of the Jacobian d outputs / d x, per row: (N,). Costs d backward passes. Chapter 10, C.2.

    ``outputs`` (N, d) must have been computed from ``x`` (N, d) with ``x.requires_grad``; row i of
    ``outputs`` may depend on row i of ``x`` only (as for any model applied point-wise).
    """
    trace = torch.zeros(len(x), dtype=outputs.dtype, device=outputs.device)
    for i in range(x.shape[1]):
        grad_i = torch.autograd.grad(outputs[:, i].sum(), x, retain_graph=True, create_graph=create_graph)[0]  # (N, d)
        trace = trace + grad_i[:, i]  # d s_i / d x_i
    return trace


def ism_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Hyvarinen's implicit score matching: mean over x of tr(grad_x s(x)) + 1/2 ||s(x)||^2. Chapter 10, C.2."""
    x = _check_points(x).detach().requires_grad_(True)  # (N, d)
    s = model(x)  # (N, d)
    return (divergence(s, x) + 0.5 * (s**2).sum(1)).mean()


def ssm_loss(model: nn.Module, x: torch.Tensor, v: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Sliced score matching: mean over x of v^T (grad_x s(x)) v + 1/2 ||s(x)||^2. Chapter 10, C.3.

    ``v`` (N, d) are the random directions (one per point); by default Rademacher (+1 or -1 entries),
    drawn with ``generator``. One backward pass gives J^T v, whatever the dimension d.
    """
    x = _check_points(x).detach().requires_grad_(True)  # (N, d)
    if v is None:
        v = torch.randint(0, 2, x.shape, generator=generator).to(x) * 2 - 1  # (N, d) of +-1
    elif v.shape != x.shape:
        raise ValueError(f"v must have the shape of x, {tuple(x.shape)}, got {tuple(v.shape)}")
    s = model(x)  # (N, d)
    jt_v = torch.autograd.grad((s * v).sum(), x, create_graph=True)[0]  # (N, d): J^T v per row
    return ((jt_v * v).sum(1) + 0.5 * (s**2).sum(1)).mean()


def dsm_loss(model: nn.Module, x: torch.Tensor, sigma: float, generator: torch.Generator | None = None,
             noise: torch.Tensor | None = None) -> torch.Tensor:
    """Denoising score matching at one noise level: 1/2 mean ||s(x~) + (x~ - x) / sigma^2||^2, x~ = x + sigma eps.

    Taught in chapter 10, C.4.
    """
    x = _check_points(x)  # (N, d)
    eps = torch.randn(x.shape, generator=generator).to(x) if noise is None else noise  # (N, d)
    x_noisy = x + sigma * eps
    target = -(x_noisy - x) / sigma**2  # = grad log q_sigma(x~ | x) = -eps / sigma
    return 0.5 * ((model(x_noisy) - target) ** 2).sum(1).mean()


def ncsn_loss(model: nn.Module, x: torch.Tensor, sigmas: torch.Tensor, generator: torch.Generator | None = None,
              levels: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """NCSN's loss: DSM weighted by lambda(sigma) = sigma^2, one random level per point. Chapter 10, E.2.

    sigma^2 * 1/2 ||s(x~, sigma) + (x~ - x)/sigma^2||^2 = 1/2 ||sigma s(x~, sigma) + eps||^2,
    averaged over the batch; each point draws its level uniformly from ``sigmas`` (L,).
    """
    x = _check_points(x)  # (N, d)
    sigmas = sigmas.to(x)
    if levels is None:
        levels = torch.randint(0, len(sigmas), (len(x),), generator=generator).to(x.device)  # (N,)
    eps = torch.randn(x.shape, generator=generator).to(x) if noise is None else noise  # (N, d)
    sigma = sigmas[levels][:, None]  # (N, 1)
    x_noisy = x + sigma * eps
    return 0.5 * ((sigma * model(x_noisy, sigma[:, 0]) + eps) ** 2).sum(1).mean()


# ---------------------------------------------------------------------------------------- the samplers

def langevin(score_fn: ScoreFn, x: torch.Tensor, step_size: float, n_steps: int,
             generator: torch.Generator | None = None, keep_every: int = 0):
    """Unadjusted Langevin: x <- x + (step_size / 2) score(x) + sqrt(step_size) z, z ~ N(0, I). Chapter 10, B.1.

    Returns the final points (N, d); with ``keep_every = k > 0`` also a list of the points every k steps.
    """
    x = _check_points(x).detach().clone()
    if step_size <= 0 or n_steps < 0:
        raise ValueError(f"need step_size > 0 and n_steps >= 0, got {step_size}, {n_steps}")
    path = [x.clone()] if keep_every else None
    for step in range(1, n_steps + 1):
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        with torch.no_grad():
            x = x + 0.5 * step_size * score_fn(x) + math.sqrt(step_size) * z
        if keep_every and step % keep_every == 0:
            path.append(x.clone())
    return (x, path) if keep_every else x


def annealed_langevin(score_fn: Callable[[torch.Tensor, float], torch.Tensor], x: torch.Tensor,
                      sigmas, eps: float, steps_per_level: int, generator: torch.Generator | None = None,
                      denoise_last: bool = False, keep_levels: bool = False):
    """NCSN's annealed Langevin dynamics (Song and Ermon 2019, Algorithm 1). Chapter 10, B.3.

    For each level sigma_i (largest first) run ``steps_per_level`` Langevin steps on ``score_fn(x, sigma_i)``
    with step size alpha_i = eps * sigma_i^2 / sigma_L^2. ``denoise_last`` ends with one Tweedie step
    x + sigma_L^2 score(x, sigma_L). ``keep_levels`` also returns the points after every level.
    """
    sigmas = [float(s) for s in sigmas]
    if any(a <= b for a, b in zip(sigmas[:-1], sigmas[1:])):
        raise ValueError("sigmas must be strictly decreasing (largest noise first)")
    x = _check_points(x).detach().clone()
    snapshots = [x.clone()]
    for sigma in sigmas:
        alpha = eps * sigma**2 / sigmas[-1] ** 2
        x = langevin(lambda y: score_fn(y, sigma), x, alpha, steps_per_level, generator)
        snapshots.append(x.clone())
    if denoise_last:
        with torch.no_grad():
            x = tweedie_denoise(x, score_fn(x, sigmas[-1]), sigmas[-1])
    return (x, snapshots) if keep_levels else x


# ---------------------------------------------------------------------------------------- Tweedie

def tweedie_denoise(x_noisy: torch.Tensor, score: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[x | x~] = x~ + sigma^2 grad log p_sigma(x~), for x~ = x + sigma eps. ``score`` is that gradient at x~.

    Taught in chapter 10, D.1.
    """
    if score.shape != x_noisy.shape:
        raise ValueError(f"score {tuple(score.shape)} must have the shape of x_noisy {tuple(x_noisy.shape)}")
    return x_noisy + sigma**2 * score


def mixture_posterior_mean(mixture: GaussianMixture2D, x_noisy: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[x | x~] in closed form for x from ``mixture`` and x~ = x + sigma eps: (N, 2), float64. Chapter 10, D.2.

    sum_k r_k(x~) [mu_k + s_k^2 / (s_k^2 + sigma^2) (x~ - mu_k)], with r_k the responsibilities
    of the noised mixture (component k's posterior is a product of two Gaussians).
    """
    x_noisy = _check_points(x_noisy, "x_noisy", dim=2).double()
    r = mixture.noised(sigma).responsibilities(x_noisy)  # (N, K)
    shrink = mixture.stds**2 / (mixture.stds**2 + sigma**2)  # (K,)
    means_k = mixture.means[None] + shrink[None, :, None] * (x_noisy[:, None, :] - mixture.means[None])  # (N, K, 2)
    return (r[:, :, None] * means_k).sum(1)


# ---------------------------------------------------------------------------------------- measurements

def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Squared energy distance 2 E|A - B| - E|A - A'| - E|B - B'| (unbiased within-sample terms). Chapter 10, E.5.

    Zero exactly when the two laws are equal; for two samples of the same law it scatters around 0.
    """
    a, b = _check_points(a, "a").double(), _check_points(b, "b", dim=a.shape[1]).double()
    n, m = len(a), len(b)
    if n < 2 or m < 2:
        raise ValueError("energy_distance needs at least 2 points in each sample")
    between = torch.cdist(a, b).mean()
    within_a = torch.cdist(a, a).sum() / (n * (n - 1))
    within_b = torch.cdist(b, b).sum() / (m * (m - 1))
    return float(2 * between - within_a - within_b)


def relative_score_error(score_fn: Callable[[torch.Tensor, float], torch.Tensor], mixture: GaussianMixture2D,
                         sigma: float, n: int = 4000, generator: torch.Generator | None = None) -> float:
    """E ||s_theta(x~, sigma) - grad log p_sigma(x~)||^2 / E ||grad log p_sigma(x~)||^2 over x~ ~ p_sigma.

    Taught in chapter 10, E.4.
    """
    noised = mixture.noised(sigma)
    x = noised.sample(n, generator)  # (n, 2)
    with torch.no_grad():
        learned = score_fn(x, sigma).double()
    exact = noised.score(x.double())
    return float(((learned - exact) ** 2).sum(1).mean() / (exact**2).sum(1).mean())


def saved_tensor_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn()`` runs: the memory a training step keeps.

    Taught in chapter 10, C.6.
    """
    total = 0

    def pack(t: torch.Tensor):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


# ---------------------------------------------------------------------------------------- the shipped model

def sample_ncsn(model: NoiseConditionalScoreNet, sigmas, n: int, generator: torch.Generator | None = None,
                box: float = 8.0, eps: float = 2e-3, steps_per_level: int = 100, denoise_last: bool = True,
                keep_levels: bool = False):
    """Annealed Langevin with a trained NCSN from uniform noise on [-box, box]^2: (n, 2) samples on the CPU.

    With ``keep_levels`` also the list of the points after every level (``annealed_langevin``).

    Taught in chapter 10, E.5.
    """
    device = next(model.parameters()).device
    x0 = (torch.rand(n, 2, generator=generator) * 2 - 1) * box  # (n, 2), uniform noise

    def score_fn(x, sigma):
        with torch.no_grad():
            return model(x.to(device), sigma).cpu()

    return annealed_langevin(score_fn, x0, sigmas, eps, steps_per_level, generator,
                             denoise_last=denoise_last, keep_levels=keep_levels)


def evaluate_ncsn(model: NoiseConditionalScoreNet, sigmas, n: int = 2000, seed: int = 0, eps: float = 2e-3,
                  steps_per_level: int = 100) -> dict:
    """How good a 2-D NCSN trained on ``toy_mixture()`` is: sample quality and score errors, as a dict. Chapter 10, E.5.

    - ``energy_distance`` of ``n`` annealed-Langevin samples to ``n`` true samples, and
      ``energy_distance_floor``, the same between two true samples (what a perfect sampler scatters around);
    - ``mode_weight_tv``: total variation between the samples' mode fractions and the true weights
      (0 is perfect; 0.25 if every mode got the same share);
    - ``mean_log_prob`` of the samples under the true density, next to ``mean_log_prob_truth`` of true samples;
    - ``score_rel_error_sigma_*``: ``relative_score_error`` at the largest, middle and smallest noise level.
    """
    mixture = toy_mixture()
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    samples = sample_ncsn(model, sigmas, n, generator, eps=eps, steps_per_level=steps_per_level)
    truth, truth_again = mixture.sample(n, generator), mixture.sample(n, generator)
    fractions = mode_fractions(samples, mixture)

    def score_fn(x, sigma):
        with torch.no_grad():
            return model(x.to(device), sigma).cpu()

    report = {
        "energy_distance": energy_distance(samples, truth),
        "energy_distance_floor": energy_distance(truth_again, truth),
        "mode_weight_tv": float(0.5 * (fractions - mixture.weights).abs().sum()),
        "mean_log_prob": float(mixture.log_prob(samples.double()).mean()),
        "mean_log_prob_truth": float(mixture.log_prob(truth.double()).mean()),
    }
    sigmas = [float(s) for s in sigmas]
    for sigma in (sigmas[0], sigmas[len(sigmas) // 2], sigmas[-1]):
        report[f"score_rel_error_sigma_{sigma:.3g}"] = relative_score_error(score_fn, mixture, sigma, 4000, generator)
    return {key: float(f"{value:.4g}") for key, value in report.items()}


# ---------------------------------------------------------------------------------------- the picture

def schematic():
    """The score model and annealed Langevin dynamics, drawn: noise levels sigma_1 > ... > sigma_L; the network
    s_theta(x, sigma) trained by denoising score matching; the Langevin update
    x <- x + (alpha_i / 2) s_theta(x, sigma_i) + sqrt(alpha_i) z; the chain from uniform noise through the smoothed
    densities p_sigma_1, ..., p_sigma_L to data. Returns the matplotlib Figure.

    Drawn in chapter 10, E.1 (annealed Langevin is derived in B.3; the network is built in E.3).
    """
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(12, 5.6, title="a score model sampled by annealed Langevin dynamics (NCSN)")
    data = box(ax, 1.3, 4.2, "data $x \\sim p$", w=1.8, h=0.7, role="data")
    noised = box(ax, 3.9, 4.2, "$\\tilde{x} = x + \\sigma \\epsilon$\n$\\epsilon \\sim \\mathcal{N}(0, I)$", w=2.0,
                 h=0.9, role="operation")
    net = box(ax, 6.6, 4.2, "score network\n$s_\\theta(\\tilde{x}, \\sigma)$", w=2.1, h=0.9, role="network")
    loss = box(ax, 9.9, 4.2, "DSM loss, $\\sigma^2$-weighted\n$\\frac{1}{2}|\\sigma s_\\theta(\\tilde{x}, \\sigma) + \\epsilon|^2$",
               w=3.2, h=0.9, role="loss")
    levels = box(ax, 3.9, 2.6, "noise levels\n$\\sigma_1 > \\sigma_2 > \\dots > \\sigma_L$", w=2.4, h=0.9,
                 role="condition")
    arrow(ax, data.right, noised.left)
    arrow(ax, noised.right, net.left)
    arrow(ax, net.right, loss.left)
    arrow(ax, levels.top, noised.bottom, text="$\\sigma$ drawn per point", text_offset=(0.75, -0.1))
    update = box(ax, 8.6, 2.6, "Langevin update, $T$ steps per level\n"
                 "$x \\leftarrow x + \\frac{\\alpha_i}{2}\\, s_\\theta(x, \\sigma_i) + \\sqrt{\\alpha_i}\\, z$\n"
                 "$z \\sim \\mathcal{N}(0, I)$,  $\\alpha_i = \\epsilon\\, \\sigma_i^2 / \\sigma_L^2$", w=4.4, h=1.1,
                 role="operation")
    arrow(ax, (net.x + 0.4, net.bottom[1]), (update.x - 1.4, update.top[1]), text="score at $\\sigma_i$",
          text_offset=(0.55, -0.1))
    arrow(ax, levels.right, update.left, text="$\\sigma_i$, largest first", text_offset=(0.0, 0.05))
    # the chain from noise to data, level by level
    chain = ["uniform\nnoise", "$p_{\\sigma_1}$\n(one blob)", "$p_{\\sigma_2}$", "...", "$p_{\\sigma_L} \\approx p$",
             "samples"]
    roles = ["latent", "operation", "operation", "operation", "operation", "data"]
    xs = [1.2, 3.1, 5.0, 6.6, 8.3, 10.5]
    boxes = [box(ax, x, 1.0, text, w=1.5 if text != "..." else 0.8, h=0.75, role=role)
             for x, text, role in zip(xs, chain, roles)]
    for a, b in zip(boxes, boxes[1:]):
        arrow(ax, a.right, b.left)
    note(ax, 4.0, 1.72, "the chain: each level starts where the previous one ended;\nsmoothing keeps the mode weights",
         fontsize=8)
    arrow(ax, (update.x + 1.2, update.bottom[1]), (boxes[4].x + 0.4, boxes[4].top[1]), dashed=True,
          text="runs at every level", text_offset=(0.85, -0.15))
    note(ax, 0.4, 4.9, "training (denoising score matching)", ha="left", fontsize=9)
    note(ax, 0.4, 2.6, "sampling", ha="left", fontsize=9)
    legend(ax, ["data", "operation", "network", "loss", "condition", "latent"], loc="lower left")
    return fig
