"""Generative adversarial networks (chapter 09): the theory checks, toy GANs, and a DCGAN for MNIST.

The game of Goodfellow et al. (2014), with D(x) = sigmoid(a(x)) and a the discriminator's logit::

    min_G max_D  V(D, G) = E_{x ~ p_data}[log D(x)] + E_{z ~ p(z)}[log(1 - D(G(z)))]

    D*(x) = p_data(x) / (p_data(x) + p_g(x))          (the best D for a fixed G)
    V(D*, G) = -log 4 + 2 JSD(p_data || p_g)            (so the best G has p_g = p_data)

Every loss here takes **logits**, never probabilities: log D = -softplus(-a) and
log(1 - D) = -softplus(a) are exact and finite for any a. The generator's two losses:

    saturating      (the minimax one):  minimise  E log(1 - D(G(z))) = -E softplus(a)
    non-saturating  (used in practice): minimise -E log D(G(z))      =  E softplus(-a)

The mini DragGAN (motion supervision, point tracking) lives in :mod:`course_lib.topics.draggan`.
Built step by step in chapter 09.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from course_lib.core.layers import to_model_range, to_pixel_range  # [0, 1] <-> [-1, 1], the range of G's tanh
from course_lib.core.train import EMA, History, RunState, autocast, minibatches, resolve_precision
from course_lib.eval.fid import quality_of_samples, shipped_classifier


LOSS_KINDS = ("non_saturating", "saturating")


# ---------------------------------------------------------------------------------- theory on a grid


def optimal_discriminator(p_data: torch.Tensor, p_g: torch.Tensor) -> torch.Tensor:
    """D*(x) = p_data / (p_data + p_g), pointwise; 1/2 where both densities are 0 (any value is optimal there).

    Taught in chapter 09, A.2.
    """
    if p_data.shape != p_g.shape:
        raise ValueError(f"p_data and p_g must have the same shape, got {tuple(p_data.shape)} and {tuple(p_g.shape)}")
    if (p_data < 0).any() or (p_g < 0).any():
        raise ValueError("densities must be >= 0")
    total = p_data + p_g
    return torch.where(total > 0, p_data / total.clamp_min(torch.finfo(total.dtype).tiny), torch.full_like(total, 0.5))


def _trapezoid(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 1 or values.shape != x.shape:
        raise ValueError(f"need values and grid x of the same 1-D shape, got {tuple(values.shape)} and {tuple(x.shape)}")
    return torch.trapezoid(values, x)


def gan_value(d: torch.Tensor, p_data: torch.Tensor, p_g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """V(D, G) = int p_data log D + p_g log(1 - D) dx by the trapezoid rule on the 1-D grid ``x``. Chapter 09, A.3.

    ``d`` are the discriminator's probabilities D(x) on the grid; 0 log 0 counts as 0. D and 1 - D are floored
    at the smallest positive float: where D* rounds to exactly 1 (p_g below p_data times machine epsilon) the
    p_g log(1 - D) term is then tiny instead of -inf.
    """
    tiny = torch.finfo(d.dtype).tiny
    integrand = torch.special.xlogy(p_data, d.clamp_min(tiny)) + torch.special.xlogy(p_g, (1 - d).clamp_min(tiny))
    return _trapezoid(integrand, x)


def kl_divergence_on_grid(p: torch.Tensor, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = int p log(p / q) dx on the 1-D grid ``x`` (trapezoid rule; 0 log 0 = 0). Chapter 09, C."""
    integrand = torch.special.xlogy(p, p) - torch.special.xlogy(p, q)
    return _trapezoid(integrand, x)


def jensen_shannon(p: torch.Tensor, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """JSD(p || q) = KL(p || m) / 2 + KL(q || m) / 2 with m = (p + q) / 2, in nats (between 0 and log 2).

    Taught in chapter 09, A.3.
    """
    m = (p + q) / 2
    return (kl_divergence_on_grid(p, m, x) + kl_divergence_on_grid(q, m, x)) / 2


def gaussian_kde(samples: torch.Tensor, x: torch.Tensor, bandwidth: float | None = None) -> torch.Tensor:
    """A Gaussian kernel density estimate of 1-D ``samples`` (n,) evaluated at ``x`` (m,) -> (m,). Chapter 09, B.

    The default bandwidth is Silverman's rule, 0.9 min(sd, IQR / 1.34) n^(-1/5).
    """
    samples = samples.reshape(-1).to(x.dtype)
    if len(samples) < 2:
        raise ValueError("gaussian_kde needs at least 2 samples")
    if bandwidth is None:
        q75, q25 = torch.quantile(samples, torch.tensor([0.75, 0.25], dtype=x.dtype))
        spread = torch.minimum(samples.std(), (q75 - q25) / 1.34).clamp_min(1e-3)
        bandwidth = float(0.9 * spread * len(samples) ** -0.2)
    u = (x[:, None] - samples[None, :]) / bandwidth  # (m, n)
    return torch.exp(-0.5 * u**2).mean(1) / (bandwidth * math.sqrt(2 * math.pi))


# ---------------------------------------------------------------------------------- losses, from logits


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-[mean log D(x) + mean log(1 - D(G(z)))]: minimising it is D's ascent on V. From logits, stably.

    Taught in chapter 09, B.
    """
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor, kind: str = "non_saturating") -> torch.Tensor:
    """The generator's loss from D's logits on fakes: ``"non_saturating"`` -mean log D(G(z)),
    or ``"saturating"`` mean log(1 - D(G(z))) (the minimax objective itself). Chapter 09, C."""
    if kind == "non_saturating":
        return F.softplus(-fake_logits).mean()
    if kind == "saturating":
        return -F.softplus(fake_logits).mean()
    raise ValueError(f"kind must be one of {LOSS_KINDS}, got {kind!r}")


# ---------------------------------------------------------------------------------- toy GANs (1-D, 2-D)


def minibatch_std(h: torch.Tensor) -> torch.Tensor:
    """Append one feature to every row: the standard deviation over the batch, averaged over features. Chapter 09, D.

    (N, F) -> (N, F + 1). Karras et al. (2018): D then sees a batch statistic, so a generator whose
    samples are all alike is easy to tell apart from data, which counters mode collapse.
    """
    if h.ndim != 2 or len(h) < 2:
        raise ValueError(f"minibatch_std needs features (N >= 2, F), got {tuple(h.shape)}")
    spread = h.std(dim=0).mean()  # a scalar
    return torch.cat([h, spread.expand(len(h), 1)], dim=1)


class MLPGenerator(nn.Module):
    """z (N, latent_dim) ~ N(0, I) -> x (N, out_dim): an MLP with ReLU hidden layers. Chapter 09, B."""

    def __init__(self, latent_dim: int = 1, out_dim: int = 1, hidden: int = 32, depth: int = 2):
        super().__init__()
        self.latent_dim = latent_dim
        layers, width = [], latent_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, out_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected latents (N, {self.latent_dim}), got {tuple(z.shape)}")
        return self.net(z)


class MLPDiscriminator(nn.Module):
    """x (N, in_dim) -> logit (N,): an MLP with LeakyReLU(0.2); optionally a minibatch-std feature
    before the last layer. Chapter 09, B."""

    def __init__(self, in_dim: int = 1, hidden: int = 32, depth: int = 2, use_minibatch_std: bool = False):
        super().__init__()
        layers, width = [], in_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.use_minibatch_std = use_minibatch_std
        self.head = nn.Linear(width + int(use_minibatch_std), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)  # (N, hidden)
        if self.use_minibatch_std:
            h = minibatch_std(h)  # (N, hidden + 1)
        return self.head(h).squeeze(1)  # (N,) logits


def gan_step(G: nn.Module, D: nn.Module, real: torch.Tensor, z: torch.Tensor,
             opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, loss_kind: str = "non_saturating",
             precision: str = "fp32"):
    """One round of Algorithm 1 with k = 1: a D step on (real, G(z)), then a G step on the same z. Chapter 09, B.

    Returns (discriminator loss, generator loss, mean D(x) on real, mean D(G(z)) on fakes) as floats.
    ``precision="bf16"`` runs the forward passes under bf16 autocast (``course_lib.core.train.autocast``).
    """
    device = real.device
    with autocast(precision, device):
        fake = G(z)
        real_logits, fake_logits = D(real), D(fake.detach())  # detach: D's step leaves G alone
        d_loss = discriminator_loss(real_logits.float(), fake_logits.float())
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    with autocast(precision, device):
        g_loss = generator_loss(D(fake).float(), loss_kind)  # D just changed: score the fakes again
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()  # also fills D's .grad; opt_d.zero_grad clears it before D's next step
    opt_g.step()
    return (d_loss.item(), g_loss.item(), torch.sigmoid(real_logits).mean().item(),
            torch.sigmoid(fake_logits).mean().item())


def train_toy_gan(sample_data: Callable[[int, torch.Generator], torch.Tensor], G: nn.Module,
                  D: nn.Module, *, steps: int, batch_size: int = 256, lr: float = 1e-3,
                  betas=(0.5, 0.999), loss_kind: str = "non_saturating", seed: int = 0, lr_d: float | None = None,
                  snapshot_every: int | None = None, snapshot: Callable | None = None,
                  desc: str = "toy GAN", show_progress: bool = True):
    """Train a small GAN on ``sample_data(n, generator) -> (n, dim)`` with Adam for G and D
    (learning rate ``lr`` for G, ``lr_d`` for D, default the same). Chapter 09, B.

    Every ``snapshot_every`` steps (and at step 0 and at the end) calls ``snapshot(G, D)`` and keeps
    ``(step, result)``. Returns ``(snapshots, history)``; ``history.losses`` are D's losses and
    ``history.evals`` hold (step, {"g_loss", "d_real", "d_fake"}) for every step.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    rng = torch.Generator().manual_seed(seed)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr if lr_d is None else lr_d, betas=betas)
    snapshots, history = [], History()
    start = time.perf_counter()

    def take(step):
        if snapshot is not None:
            with torch.no_grad():
                snapshots.append((step, snapshot(G, D)))

    take(0)
    for step in tqdm(range(1, steps + 1), desc=desc, disable=not show_progress):
        real = sample_data(batch_size, rng)
        z = torch.randn(batch_size, G.latent_dim, generator=rng)
        d_loss, g_loss, d_real, d_fake = gan_step(G, D, real, z, opt_g, opt_d, loss_kind)
        history.losses.append(d_loss)
        history.evals.append((step, {"g_loss": g_loss, "d_real": d_real, "d_fake": d_fake}))
        if snapshot_every and (step % snapshot_every == 0 and step != steps):
            take(step)
    take(steps)
    history.wall_time_s = time.perf_counter() - start
    return snapshots, history


def mode_coverage(samples: torch.Tensor, centres: torch.Tensor, std: float, *, within: float = 3.0,
                  min_share: float = 0.02) -> dict:
    """Which mixture components a set of 2-D samples covers. Chapter 09, D.

    A sample is *high quality* if it lies within ``within`` standard deviations of its nearest
    centre; a mode is *covered* if at least ``min_share`` of all samples are high quality and nearest
    to it. Returns {"modes_covered", "high_quality", "share_per_mode" (K,)}.
    """
    if samples.ndim != 2 or centres.ndim != 2 or samples.shape[1] != centres.shape[1]:
        raise ValueError(f"need samples (N, D) and centres (K, D), got {tuple(samples.shape)} and {tuple(centres.shape)}")
    distance = torch.cdist(samples.double(), centres.double())  # (N, K)
    nearest_distance, nearest = distance.min(1)
    good = nearest_distance < within * std
    share = torch.bincount(nearest[good], minlength=len(centres)).double() / len(samples)  # (K,)
    return {"modes_covered": int((share >= min_share).sum()), "high_quality": float(good.double().mean()),
            "share_per_mode": share}


# ---------------------------------------------------------------------------------- a DCGAN for MNIST


class DCGANGenerator(nn.Module):
    """z (N, latent_dim) -> image (N, 1, 28, 28) in [-1, 1] (tanh), DCGAN-style, three stages:

    linear to (4w, 7, 7), BatchNorm, ReLU; transposed conv to (2w, 14, 14), BatchNorm, ReLU (the
    **features** :meth:`features` returns, used by DragGAN); transposed conv to (w, 28, 28), BatchNorm, ReLU;
    a 3x3 conv to (1, 28, 28), tanh. Built in chapter 09, E.1.
    """

    def __init__(self, latent_dim: int = 64, width: int = 32):
        super().__init__()
        if latent_dim < 1 or width < 1:
            raise ValueError(f"latent_dim and width must be >= 1, got {latent_dim}, {width}")
        self.config = dict(latent_dim=latent_dim, width=width)
        self.latent_dim = latent_dim
        self.project = nn.Sequential(
            nn.Linear(latent_dim, 4 * width * 7 * 7, bias=False), nn.Unflatten(1, (4 * width, 7, 7)),
            nn.BatchNorm2d(4 * width), nn.ReLU())  # (N, 4w, 7, 7)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width), nn.ReLU())  # (N, 2w, 14, 14)
        self.to_image = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width), nn.ReLU(),  # (N, w, 28, 28)
            nn.Conv2d(width, 1, 3, padding=1), nn.Tanh())  # (N, 1, 28, 28)

    def _check(self, z: torch.Tensor) -> None:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected latents of shape (N, {self.latent_dim}), got {tuple(z.shape)}")

    def features(self, z: torch.Tensor) -> torch.Tensor:
        """The intermediate feature map (N, 2 width, 14, 14)."""
        self._check(z)
        return self.up(self.project(z))

    def forward(self, z: torch.Tensor, return_features: bool = False):
        """Images (N, 1, 28, 28) in [-1, 1]; with ``return_features`` also the (N, 2 width, 14, 14) features."""
        h = self.features(z)
        image = self.to_image(h)
        return (image, h) if return_features else image


class DCGANDiscriminator(nn.Module):
    """image (N, 1, 28, 28) in [-1, 1] -> logit (N,): two stride-2 convs and a 3x3 conv with LeakyReLU(0.2), then
    linear; no normalisation (BatchNorm in D measured worse here: FID 137 against 87 after 5,000 steps).

    Taught in chapter 09, E.1.
    """

    def __init__(self, width: int = 32):
        super().__init__()
        self.config = dict(width=width)
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),  # (N, w, 14, 14)
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),  # (N, 2w, 7, 7)
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.LeakyReLU(0.2),  # (N, 4w, 7, 7)
            nn.Flatten(), nn.Linear(4 * width * 7 * 7, 1))  # (N, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
            raise ValueError(f"expected images of shape (N, 1, 28, 28), got {tuple(x.shape)}")
        return self.net(x).squeeze(1)


def train_dcgan(G: DCGANGenerator, D: DCGANDiscriminator, x_train: torch.Tensor, *, steps: int,
                batch_size: int = 64, lr: float = 2e-4, betas=(0.5, 0.999), seed: int = 0,
                device: torch.device | str = "cpu", snapshot_every: int | None = None, n_snapshot: int = 16,
                ema_decay: float | None = None, desc: str = "DCGAN on MNIST", show_progress: bool = True,
                precision: str = "fp32", state_file=None, save_every_s: float = 300.0) -> History:
    """Train a DCGAN on images ``x_train`` (N, 1, 28, 28) in [0, 1] with the non-saturating loss, k = 1.

    Adam(lr, betas) for both nets, as Radford et al. (2016). ``history.losses`` are D's losses,
    ``history.evals`` (step, {"g_loss", "d_real", "d_fake"}) every 10 steps, and, with ``snapshot_every``,
    ``history.snapshots`` holds (step, images) of ``n_snapshot`` fixed latents in [0, 1]. With ``ema_decay``,
    ``history.ema_generator`` is an exponential moving average of the generator's weights
    (``course_lib.core.train.EMA``, with its warm-up; Yazici et al. 2019 found it improves GAN samples); the snapshots then show it.
    ``precision`` and ``state_file`` (a resumable run) work as in :func:`course_lib.core.train.fit`.

    Taught in chapter 09, E.2.
    """

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    rng = torch.Generator().manual_seed(seed)
    G.to(device).train()
    D.to(device).train()
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=betas)
    batches = minibatches(to_model_range(x_train), batch_size=batch_size, generator=rng)
    fixed_z = torch.randn(n_snapshot, G.latent_dim, generator=rng).to(device)
    precision = resolve_precision(precision, device)
    history = History(precision=precision)
    history.snapshots = []
    ema = EMA(G, ema_decay) if ema_decay else None
    run = RunState(state_file, G, opt_g, None, batches, {
        "discriminator": D, "opt_d": opt_d, "rng": rng, **({"ema": ema} if ema else {})})
    first = run.restore(history, steps) + 1
    start, last_save = time.perf_counter() - history.wall_time_s, time.perf_counter()
    bar = tqdm(range(first, steps + 1), desc=desc, disable=not show_progress, initial=first - 1, total=steps)
    for step in bar:
        real = next(batches)[0].to(device)
        z = torch.randn(batch_size, G.latent_dim, generator=rng).to(device)
        d_loss, g_loss, d_real, d_fake = gan_step(G, D, real, z, opt_g, opt_d, precision=precision)
        if ema is not None:
            ema.update(G)
        history.losses.append(d_loss)
        if step % 10 == 0 or step == steps:
            history.evals.append((step, {"g_loss": g_loss, "d_real": d_real, "d_fake": d_fake}))
            bar.set_postfix(d_loss=f"{d_loss:.3f}", g_loss=f"{g_loss:.3f}", refresh=False)
        if snapshot_every and (step % snapshot_every == 0 or step == steps):
            shown = ema.model if ema is not None else G
            shown.eval()
            with torch.no_grad():
                history.snapshots.append((step, to_pixel_range(shown(fixed_z)).cpu()))
            G.train()
        if run.file is not None and (step == steps or time.perf_counter() - last_save >= save_every_s):
            history.wall_time_s = time.perf_counter() - start
            run.save(step, history)
            last_save = time.perf_counter()
    bar.close()
    G.eval()
    D.eval()
    history.ema_generator = ema.model if ema is not None else None
    history.wall_time_s = time.perf_counter() - start
    return history


@torch.no_grad()
def recalibrate_batchnorm(G: nn.Module, *, batches: int = 20, batch_size: int = 256, seed: int = 0) -> None:
    """Replace the BatchNorm running statistics by exact averages over ``batches`` fresh batches of z. Chapter 09, E.2.

    During GAN training the running averages trail a generator that keeps changing; in eval mode the
    stale statistics can spoil the samples. Afterwards the model is in eval mode.
    """
    norms = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    device = next(G.parameters()).device
    rng = torch.Generator().manual_seed(seed)
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # None: a cumulative (equal-weight) average
    G.train()
    for _ in range(batches):
        G(torch.randn(batch_size, G.latent_dim, generator=rng).to(device))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    G.eval()


@torch.no_grad()
def sample_images(G: nn.Module, n: int, *, seed: int = 0, z: torch.Tensor | None = None,
                  batch_size: int = 1000) -> torch.Tensor:
    """``n`` samples (N, 1, 28, 28) in [0, 1] from latents z ~ N(0, I) (seeded), or from the given ``z``.

    Taught in chapter 09, E.3.
    """
    device = next(G.parameters()).device
    was_training = G.training
    G.eval()
    if z is None:
        z = torch.randn(n, G.latent_dim, generator=torch.Generator().manual_seed(seed))
    images = torch.cat([to_pixel_range(G(z[i:i + batch_size].to(device))).cpu()
                        for i in range(0, len(z), batch_size)])
    G.train(was_training)
    return images


def slerp(z_a: torch.Tensor, z_b: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """Spherical interpolation from z_a to z_b (both (J,)): (steps, J). For Gaussian latents it keeps the
    norm near sqrt(J), where almost all of N(0, I)'s mass lies; the straight line's midpoint is shorter.

    Taught in chapter 09, E.3.
    """
    if z_a.shape != z_b.shape or z_a.ndim != 1:
        raise ValueError(f"z_a and z_b must be 1-D of the same shape, got {tuple(z_a.shape)}, {tuple(z_b.shape)}")
    t = torch.linspace(0, 1, steps, dtype=z_a.dtype)[:, None]  # (steps, 1)
    cos = (z_a @ z_b / (z_a.norm() * z_b.norm())).clamp(-1 + 1e-7, 1 - 1e-7)
    omega = torch.arccos(cos)
    return (torch.sin((1 - t) * omega) * z_a + torch.sin(t * omega) * z_b) / torch.sin(omega)


@torch.no_grad()
def generator_quality(G: nn.Module, n: int = 2000, seed: int = 0) -> dict:
    """FID (domain features) of ``n`` GAN samples against ``n`` real test digits, with the real-vs-real floor.

    The same definitions as :func:`course_lib.topics.diffusion.sampler_quality` for the DDPM (the same reference
    set and twin set of test digits, the same shipped classifier), so the two FIDs compare at equal n.

    Taught in chapter 09, E.3.
    """
    samples = sample_images(G, n, seed=seed)
    return quality_of_samples(samples, shipped_classifier(next(G.parameters()).device))


# ---------------------------------------------------------------------------------- the picture


def schematic():
    """The GAN's two players, drawn: z ~ N(0, I) -> G -> a fake image; fakes and real images -> D -> the
    probability "real"; the two losses and who minimises what. Returns the matplotlib Figure.

    Drawn in chapter 09, A.1 (the game itself is section A; the networks are built in E.1).
    """
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(12, 5.2, title="a GAN: two players, one value function V(D, G)")
    z = box(ax, 1.2, 3.6, "noise\n$z \\sim \\mathcal{N}(0, I)$", w=1.8, h=0.9, role="latent")
    g = box(ax, 3.6, 3.6, "generator $G$", w=1.7, h=0.8, role="network")
    fake = box(ax, 6.0, 3.6, "fake image\n$G(z) \\sim p_g$", w=1.9, h=0.9, role="data")
    real = box(ax, 6.0, 1.6, "real image\n$x \\sim p_{data}$", w=1.9, h=0.9, role="data")
    d = box(ax, 8.3, 2.6, "discriminator $D$", w=1.9, h=0.8, role="network")
    out = box(ax, 10.7, 2.6, "$D(\\cdot) \\in (0, 1)$\nP(real)", w=1.8, h=0.9, role="operation")
    arrow(ax, z.right, g.left)
    arrow(ax, g.right, fake.left)
    arrow(ax, fake.right, (d.x - 0.4, d.top[1]), text="label 0", text_offset=(0.25, 0.0))
    arrow(ax, real.right, (d.x - 0.4, d.bottom[1]), text="label 1", text_offset=(0.25, -0.35))
    arrow(ax, d.right, out.left)
    d_loss = box(ax, 9.6, 0.55, "$D$ maximises  $\\log D(x) + \\log(1 - D(G(z)))$", w=4.6, h=0.6, role="loss")
    g_loss = box(ax, 9.6, 4.45, "$G$ minimises  $-\\log D(G(z))$  (non-saturating)", w=4.6, h=0.6, role="loss")
    arrow(ax, out.bottom, (out.x, d_loss.top[1]))
    arrow(ax, out.top, (out.x, g_loss.bottom[1]))
    arrow(ax, g_loss.left, g.top, dashed=True, bend=0.25, text="gradient through $D$ into $G$",
          text_offset=(0.0, 0.25))
    arrow(ax, (d.x + 0.3, d_loss.top[1]), (d.x + 0.3, d.bottom[1]), dashed=True)
    note(ax, d.x - 0.55, 1.3, "gradient into $D$\n($G(z)$ detached)", fontsize=8)
    note(ax, 3.0, 1.6, "minimax game: $\\min_G \\max_D V(D, G)$\nbest $D$: $D^* = p_{data} / (p_{data} + p_g)$\n"
         "then $V = -\\log 4 + 2\\,JSD(p_{data} \\,\\|\\, p_g)$", fontsize=9)
    legend(ax, ["latent", "network", "data", "operation", "loss"], loc="lower left")
    return fig
