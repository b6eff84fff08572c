"""DDPM and DDIM: noise schedules, the forward process, L_simple, and the samplers. Chapter 11.

Indexing follows the paper, so the code reads like the equations: t runs over 1..T, and every
per-step array has length T + 1 with entry 0 standing for clean data::

    betas[0] = 0,  alphas[t] = 1 - betas[t],  alpha_bars[t] = prod_{s <= t} alphas[s],  alpha_bars[0] = 1

    q(x_t | x_{t-1})       = N(sqrt(alpha_t) x_{t-1}, beta_t I)
    q(x_t | x_0)           = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
    q(x_{t-1} | x_t, x_0)  = N(mu_tilde_t, beta_tilde_t I),
        mu_tilde_t   = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
                       + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t
        beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t

beta_t is a *variance* (the noise added at step t has standard deviation sqrt(beta_t)).
Images live in [-1, 1] (``to_model_range``), the range the schedule's signal-to-noise ratios assume.

The three parameterisations of the denoiser are one function in three coordinates::

    x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t)     (predict_x0)
    score  = grad_x log q_t(x_t) = -eps_hat / sqrt(1 - alpha_bar_t)      (eps_to_score)

Samplers (all take ``model(x_t, t) -> eps_hat``, a network or any function):

- :func:`ddpm_sample`: ancestral sampling, DDPM Algorithm 2 (one :func:`ddpm_step` per t = T..1);
- :func:`ddim_sample`: DDIM on a subsequence of timesteps (:func:`ddim_step`); ``eta = 0`` is
  deterministic, and is exactly an Euler step of the probability-flow ODE in the variables
  x / sqrt(alpha_bar) and sqrt((1 - alpha_bar) / alpha_bar);
- :func:`probability_flow_euler_sample`: the naive Euler method on the same ODE in t
  (:func:`probability_flow_euler_step`), for comparison.

:func:`schematic` draws the two chains (forward q, reverse p_theta, and the one-jump q(x_t | x_0)).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from course_lib.core.layers import sinusoidal_embedding, to_pixel_range
from course_lib.core.runtime import as_device
from course_lib.eval.fid import quality_of_samples, shipped_classifier
from course_lib.topics.unet import UNet


def linear_betas(T: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02) -> torch.Tensor:
    """DDPM's schedule: beta_t linear from beta_1 to beta_T, as a (T + 1,) tensor with betas[0] = 0. Chapter 11, A.1."""
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    return torch.cat([torch.zeros(1, dtype=torch.float64), torch.linspace(beta_1, beta_T, T, dtype=torch.float64)])


def cosine_betas(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's schedule: alpha_bar_t = f(t) / f(0), f(t) = cos^2((t / T + s) / (1 + s) * pi / 2);
    beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}, clipped to ``max_beta`` (f(T) = 0 would give beta_T = 1).

    Taught in chapter 11, A.3.
    """
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    steps = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((steps / T + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bars = f / f[0]
    betas = (1 - alpha_bars[1:] / alpha_bars[:-1]).clamp(max=max_beta)
    return torch.cat([torch.zeros(1, dtype=torch.float64), betas])


class NoiseSchedule:
    """All the per-step quantities of a schedule, indexed by t = 0..T (float64, on the CPU). Chapter 11, A.1."""

    def __init__(self, betas: torch.Tensor):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or len(betas) < 2 or betas[0] != 0 or not ((betas[1:] > 0) & (betas[1:] < 1)).all():
            raise ValueError("betas must be a 1-D tensor with betas[0] = 0 and 0 < beta_t < 1 for t >= 1 "
                             "(build it with linear_betas or cosine_betas)")
        self.betas = betas
        self.alphas = 1 - betas
        self.alpha_bars = torch.cumprod(self.alphas, dim=0)
        self.T = len(betas) - 1
        # Coefficients precomputed in float64 and cast to the data's dtype only at the end: 1 - alpha_bar_t is
        # ~1e-4 at small t, and computing it in float32 would lose ~3 of float32's ~7 significant digits.
        ab, ab_prev = self.alpha_bars, torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars[:-1]])
        self.sqrt_alpha_bars, self.sqrt_one_minus_alpha_bars = ab.sqrt(), (1 - ab).sqrt()
        not_zero = torch.arange(self.T + 1) > 0  # entry 0 (t = 0) has no posterior; keep it finite
        denominator = torch.where(not_zero, 1 - ab, torch.ones_like(ab))
        self._posterior_coef_x0 = torch.where(not_zero, ab_prev.sqrt() * betas / denominator, 0.0)
        self._posterior_coef_xt = torch.where(not_zero, self.alphas.sqrt() * (1 - ab_prev) / denominator, 0.0)
        self._posterior_variances = torch.where(not_zero, (1 - ab_prev) / denominator * betas, 0.0)

    @classmethod
    def linear(cls, T: int = 1000) -> "NoiseSchedule":
        return cls(linear_betas(T))

    @classmethod
    def cosine(cls, T: int = 1000) -> "NoiseSchedule":
        return cls(cosine_betas(T))

    def __repr__(self) -> str:
        return (f"NoiseSchedule(T={self.T}, beta_1={self.betas[1].item():.3g}, beta_T={self.betas[-1].item():.3g}, "
                f"alpha_bar_T={self.alpha_bars[-1].item():.3g})")

    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) for t = 1..T, shape (T,)."""
        ab = self.alpha_bars[1:]
        return ab / (1 - ab)

    def posterior_variances(self) -> torch.Tensor:
        """beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t as a (T + 1,) tensor (entry 0 is 0)."""
        return self._posterior_variances.clone()

    def _at(self, values: torch.Tensor, t, like: torch.Tensor) -> torch.Tensor:
        """values[t] as a (N, 1, ..., 1) tensor that broadcasts against ``like`` (N, ...)."""
        t = torch.as_tensor(t, device="cpu")
        if t.is_floating_point():
            raise TypeError(f"timesteps must be integers (t = 0..{self.T}), got dtype {t.dtype}; use .long()")
        t = t.long().reshape(-1)
        if t.min() < 0 or t.max() > self.T:
            raise ValueError(f"timesteps must be in 0..{self.T}, got {t.min().item()}..{t.max().item()}")
        if like.ndim == 0 or len(t) not in (1, like.shape[0]):
            raise ValueError(f"{len(t)} timesteps for a batch of shape {tuple(like.shape)}: "
                             "give one t per example (shape (N,)) or a single t")
        out = values[t].to(device=like.device, dtype=like.dtype)
        return out.reshape(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, one t per example (or one for all)."""
        if noise.shape != x0.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)} but x0 has {tuple(x0.shape)}; "
                             "draw it with torch.randn_like(x0)")
        return self._at(self.sqrt_alpha_bars, t, x0) * x0 + self._at(self.sqrt_one_minus_alpha_bars, t, x0) * noise

    def posterior(self, x0: torch.Tensor, xt: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0), for t >= 1 (variance as a broadcastable tensor)."""
        if x0.shape != xt.shape:
            raise ValueError(f"x0 {tuple(x0.shape)} and xt {tuple(xt.shape)} must have the same shape")
        t = torch.as_tensor(t, device="cpu")
        if (t < 1).any():
            raise ValueError("the posterior q(x_{t-1} | x_t, x_0) needs t >= 1")
        mean = self._at(self._posterior_coef_x0, t, xt) * x0 + self._at(self._posterior_coef_xt, t, xt) * xt
        return mean, self._at(self._posterior_variances, t, xt)

    def predict_x0(self, xt: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """Invert q_sample: x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t)."""
        return (xt - self._at(self.sqrt_one_minus_alpha_bars, t, xt) * eps) / self._at(self.sqrt_alpha_bars, t, xt)

    def x0_to_eps(self, xt: torch.Tensor, t, x0: torch.Tensor) -> torch.Tensor:
        """The other way: eps_hat = (x_t - sqrt(alpha_bar_t) x0_hat) / sqrt(1 - alpha_bar_t), for t >= 1."""
        return (xt - self._at(self.sqrt_alpha_bars, t, xt) * x0) / self._at(self.sqrt_one_minus_alpha_bars, t, xt)

    def eps_to_score(self, eps: torch.Tensor, t) -> torch.Tensor:
        """grad_x log q_t(x_t) ~= -eps_hat / sqrt(1 - alpha_bar_t) (Tweedie's formula, chapter 10)."""
        return -eps / self._at(self.sqrt_one_minus_alpha_bars, t, eps)

    def score_to_eps(self, score: torch.Tensor, t) -> torch.Tensor:
        """eps_hat = -sqrt(1 - alpha_bar_t) score."""
        return -score * self._at(self.sqrt_one_minus_alpha_bars, t, score)


def vlb_weights(schedule: NoiseSchedule, variance: str = "posterior") -> torch.Tensor:
    """The weights lambda_t of the bound's terms in the eps-parameterisation, as a (T + 1,) tensor:

        L_{t-1} = lambda_t E || eps - eps_theta(x_t, t) ||^2 + C,
        lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)),

    with sigma_t^2 = beta_tilde_t (``"posterior"``) or beta_t (``"beta"``). Entry 0 is 0. With the
    posterior variance, beta_tilde_1 = 0 and lambda_1 = inf: the t = 1 term is the decoder L_0.
    L_simple sets every lambda_t to 1.

    Taught in chapter 11, C.3.
    """
    if variance not in ("beta", "posterior"):
        raise ValueError(f"variance must be 'beta' or 'posterior', got {variance!r}")
    sigma2 = schedule.posterior_variances() if variance == "posterior" else schedule.betas
    b, a, ab = schedule.betas[1:], schedule.alphas[1:], schedule.alpha_bars[1:]
    with torch.no_grad():
        weights = b ** 2 / (2 * sigma2[1:] * a * (1 - ab))  # inf where sigma2 = 0
    return torch.cat([torch.zeros(1, dtype=torch.float64), weights])


def ddpm_loss(model: nn.Module, x0: torch.Tensor, schedule: NoiseSchedule, labels: torch.Tensor | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """L_simple = E_{t, x_0, eps} || eps - eps_theta(x_t, t) ||^2, t uniform on 1..T (mean over all elements).

    DDPM Algorithm 1: draw t ~ U{1..T} (T included) and eps ~ N(0, I), form x_t in closed form,
    regress the *noise*.

    Taught in chapter 11, E.1.
    """
    t = torch.randint(1, schedule.T + 1, (len(x0),), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    xt = schedule.q_sample(x0, t, noise)
    eps_hat = model(xt, t) if labels is None else model(xt, t, labels)
    return ((noise - eps_hat) ** 2).mean()


EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------------------ one step each

def ddpm_step(x: torch.Tensor, eps_hat: torch.Tensor, t: int, schedule: NoiseSchedule, *,
              noise: torch.Tensor | None = None, variance: str = "beta", clip_x0: bool = False) -> torch.Tensor:
    """One step of DDPM Algorithm 2, x_t -> x_{t-1} (``t`` an int >= 1):

        x_{t-1} = 1 / sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_hat) + sigma_t z,

    written as mu_tilde(x0_hat, x_t) so that x0_hat can be clipped to [-1, 1] (``clip_x0``; images only).
    sigma_t^2 = beta_t (``variance="beta"``) or beta_tilde_t (``"posterior"``); ``noise`` is z
    (ignored at t = 1, where z = 0; ``None`` means z = 0).

    Taught in chapter 11, E.3.
    """
    if variance not in ("beta", "posterior"):
        raise ValueError(f"variance must be 'beta' or 'posterior', got {variance!r}")
    if not 1 <= t <= schedule.T:
        raise ValueError(f"t must be in 1..{schedule.T}, got {t}")
    x0_hat = schedule.predict_x0(x, t, eps_hat)
    if clip_x0:
        x0_hat = x0_hat.clamp(-1, 1)
    mean, posterior_variance = schedule.posterior(x0_hat, x, t)
    if t == 1 or noise is None:
        return mean
    var = float(posterior_variance.reshape(-1)[0]) if variance == "posterior" else float(schedule.betas[t])
    return mean + math.sqrt(var) * noise


def ddim_sigma(schedule: NoiseSchedule, t: int, t_prev: int, eta: float = 0.0) -> float:
    """sigma = eta sqrt((1 - ab_prev) / (1 - ab_t)) sqrt(1 - ab_t / ab_prev); eta = 1 gives sqrt(beta_tilde) when t_prev = t - 1.

    Taught in chapter 11, F.1.
    """
    ab, ab_prev = float(schedule.alpha_bars[t]), float(schedule.alpha_bars[t_prev])
    return eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))


def ddim_step(x: torch.Tensor, eps_hat: torch.Tensor, t: int, t_prev: int, schedule: NoiseSchedule, *,
              eta: float = 0.0, noise: torch.Tensor | None = None, clip_x0: bool = False) -> torch.Tensor:
    """One DDIM step x_t -> x_{t_prev} (Song et al. 2021, eq. 12), ints ``t > t_prev >= 0``:

        x0_hat = (x_t - sqrt(1 - ab_t) eps_hat) / sqrt(ab_t)
        x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps_hat + sigma z.

    With ``clip_x0`` the clipped x0_hat also redefines eps_hat, so the two stay consistent.

    Taught in chapter 11, F.1.
    """
    if not 0 <= t_prev < t <= schedule.T:
        raise ValueError(f"need 0 <= t_prev < t <= {schedule.T}, got t={t}, t_prev={t_prev}")
    x0_hat = schedule.predict_x0(x, t, eps_hat)
    if clip_x0:
        x0_hat = x0_hat.clamp(-1, 1)
        eps_hat = schedule.x0_to_eps(x, t, x0_hat)
    ab_prev = float(schedule.alpha_bars[t_prev])
    sigma = ddim_sigma(schedule, t, t_prev, eta)
    x_prev = math.sqrt(ab_prev) * x0_hat + math.sqrt(max(1 - ab_prev - sigma ** 2, 0.0)) * eps_hat
    if sigma > 0 and noise is not None:
        x_prev = x_prev + sigma * noise
    return x_prev


def probability_flow_euler_step(x: torch.Tensor, eps_hat: torch.Tensor, t: int, t_prev: int,
                                schedule: NoiseSchedule) -> torch.Tensor:
    """The naive Euler step, in t, of the VP probability-flow ODE dx/dt = -beta(t) / 2 (x + grad log p_t(x)):

        x_prev = x_t + (t - t_prev) beta_t / 2 (x_t - eps_hat / sqrt(1 - alpha_bar_t)),

    with beta(t) = beta_t per unit of t (the discrete schedule read as a rate). First-order close to
    :func:`ddim_step` with eta = 0 for small steps; far worse for large ones.

    Taught in chapter 11, F.3.
    """
    if not 0 <= t_prev < t <= schedule.T:
        raise ValueError(f"need 0 <= t_prev < t <= {schedule.T}, got t={t}, t_prev={t_prev}")
    beta, ab = float(schedule.betas[t]), float(schedule.alpha_bars[t])
    return x + (t - t_prev) * beta / 2 * (x - eps_hat / math.sqrt(1 - ab))


# ------------------------------------------------------------------------------------------ samplers

def _check_shape(shape) -> tuple:
    shape = tuple(shape)
    if len(shape) < 2 or any(int(s) < 1 for s in shape):
        raise ValueError(f"shape must be (N, ...) with positive sizes, e.g. (16, 1, 28, 28) or (500, 2); got {shape}")
    return shape


def starting_noise(shape, generator, device, x_T: torch.Tensor | None) -> torch.Tensor:
    """x_T: the given one, or a fresh draw from N(0, I) (drawn on the CPU, so a seed gives the same x_T anywhere).

    Taught in chapter 11, E.3.
    """
    device = as_device(device)
    if x_T is not None and tuple(x_T.shape) != tuple(shape):
        raise ValueError(f"x_T has shape {tuple(x_T.shape)} but the sampler was asked for shape {tuple(shape)}: "
                         "pass shape=x_T.shape, or an x_T of the shape you want")
    return (torch.randn(shape, generator=generator) if x_T is None else x_T.cpu()).to(device)


def walk_timesteps(model: EpsModel, x: torch.Tensor, taus: list[int], step, keep_every: int, desc: str,
                   show_progress: bool):
    """The one sampler loop: run ``x = step(x, eps_hat, t, t_prev)`` over consecutive pairs of ``taus``; keep x every
    ``keep_every`` steps. DDIM, probability-flow Euler and chapter 12's inpainting are each a ``step`` passed here.

    Taught in chapter 11, E.3.
    """
    trajectory = [(taus[0], x.cpu())]
    pairs = list(zip(taus[:-1], taus[1:]))
    for i, (t, t_prev) in enumerate(tqdm(pairs, desc=desc, disable=not show_progress, leave=False)):
        t_batch = torch.full((len(x),), t, dtype=torch.long, device=x.device)
        x = step(x, model(x, t_batch), t, t_prev)
        if keep_every and ((i + 1) % keep_every == 0 or t_prev == 0):
            trajectory.append((t_prev, x.cpu()))
    return (x, trajectory) if keep_every else x


@torch.no_grad()
def ddpm_sample(model: EpsModel, shape: tuple, schedule: NoiseSchedule, *, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu", variance: str = "beta", clip_x0: bool = True,
                x_T: torch.Tensor | None = None, keep_every: int = 0, show_progress: bool = True):
    """Ancestral sampling (DDPM Algorithm 2): x_T ~ N(0, I), then T steps of :func:`ddpm_step`
    (sigma_t^2 = beta_t or beta_tilde_t; z = 0 at the last step). Chapter 11, E.3.

    ``clip_x0`` clips x0_hat to [-1, 1]: right for images, wrong for data outside [-1, 1] (pass
    ``False`` for 2-D toys). ``x_T`` fixes the starting noise. Returns x_0, or
    ``(x_0, [(t, x_t), ...])`` with x_t kept every ``keep_every`` steps (and x_T, x_0) when ``keep_every > 0``.
    """
    shape = _check_shape(shape)
    if variance not in ("beta", "posterior"):
        raise ValueError(f"variance must be 'beta' or 'posterior', got {variance!r}")
    x = starting_noise(shape, generator, device, x_T)
    trajectory = [(schedule.T, x.cpu())]
    for t in tqdm(range(schedule.T, 0, -1), desc="DDPM sampling", disable=not show_progress, leave=False):
        t_batch = torch.full((shape[0],), t, dtype=torch.long, device=device)
        noise = torch.randn(shape, generator=generator).to(device) if t > 1 else None
        x = ddpm_step(x, model(x, t_batch), t, schedule, noise=noise, variance=variance, clip_x0=clip_x0)
        if keep_every and (t - 1) % keep_every == 0:
            trajectory.append((t - 1, x.cpu()))
    return (x, trajectory) if keep_every else x


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """``steps`` evenly spaced timesteps from T down to 1, then 0: the decreasing subsequence tau that DDIM visits.

    Taught in chapter 11, F.1.
    """
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in 1..{T}, got {steps}")
    taus = torch.linspace(T, 1, steps, dtype=torch.float64).round().long().tolist()
    return sorted(set(taus), reverse=True) + [0]


@torch.no_grad()
def ddim_sample(model: EpsModel, shape: tuple, schedule: NoiseSchedule, *, steps: int = 50, eta: float = 0.0,
                generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                clip_x0: bool = True, x_T: torch.Tensor | None = None, keep_every: int = 0,
                show_progress: bool = True):
    """DDIM (Song et al. 2021, eq. 12): :func:`ddim_step` over the timesteps of :func:`ddim_timesteps`. Chapter 11, F.1.

    ``eta = 0`` is deterministic (the same x_T always gives the same x_0); ``eta = 1`` with all T
    steps is DDPM with the posterior variance. ``x_T`` fixes the starting noise; ``clip_x0`` as in
    :func:`ddpm_sample`. ``keep_every > 0`` also returns ``[(t, x_t), ...]`` every that many steps.
    """
    shape = _check_shape(shape)

    def step(x, eps_hat, t, t_prev):
        needs_noise = eta > 0 and t_prev > 0
        noise = torch.randn(shape, generator=generator).to(device) if needs_noise else None
        return ddim_step(x, eps_hat, t, t_prev, schedule, eta=eta, noise=noise, clip_x0=clip_x0)

    return walk_timesteps(model, starting_noise(shape, generator, device, x_T), ddim_timesteps(schedule.T, steps),
                           step, keep_every, "DDIM sampling", show_progress)


@torch.no_grad()
def probability_flow_euler_sample(model: EpsModel, shape: tuple, schedule: NoiseSchedule, *, steps: int = 50,
                                  generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                                  x_T: torch.Tensor | None = None, keep_every: int = 0):
    """The probability-flow ODE integrated with the naive Euler method in t (:func:`probability_flow_euler_step`),
    on the same timesteps as :func:`ddim_sample`. No clipping; for comparison with DDIM. Chapter 11, F.3."""
    shape = _check_shape(shape)

    def step(x, eps_hat, t, t_prev):
        return probability_flow_euler_step(x, eps_hat, t, t_prev, schedule)

    return walk_timesteps(model, starting_noise(shape, generator, device, x_T), ddim_timesteps(schedule.T, steps),
                           step, keep_every, "Euler sampling", show_progress=False)


# ------------------------------------------------------------------------------------------ models

class MLPDenoiser(nn.Module):
    """epsilon_theta(x_t, t) for points: (N, dim) and (N,) integer t -> (N, dim). The 2-D DDPM of chapter 11.

    The time enters as sinusoidal features, an MLP, then added to the hidden state before every
    residual layer (without t the network could only learn the average noise over all t).

    Taught in chapter 11, E.1.
    """

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, emb_dim: int = 32):
        super().__init__()
        self.config = dict(dim=dim, hidden=hidden, depth=depth, emb_dim=emb_dim)
        self.dim, self.emb_dim = dim, emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim, hidden)
        self.layers = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(depth)])
        self.out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"MLPDenoiser expects points of shape (N, {self.dim}), got {tuple(x.shape)}")
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(len(x)) if t.ndim == 0 else t
        t_unique, index = torch.unique(t, return_inverse=True)  # a sampler's batch shares one t: embed it once
        emb = self.time_mlp(sinusoidal_embedding(t_unique, self.emb_dim).to(x.device))[index]  # (N, hidden)
        h = self.inp(x)  # (N, hidden)
        for layer in self.layers:
            h = h + layer(F.silu(h + emb))
        return self.out(F.silu(h))


# ---------------------------------------------------------------------------------------- sample quality

@torch.no_grad()
def sampler_quality(eps_model, n: int = 2000, sampler: str = "ddim", steps: int = 50, seed: int = 0,
                   batch_size: int = 500, show_progress: bool = True) -> dict:
    """FID (domain features) of ``n`` samples from a 28x28 MNIST diffusion model, with its floor. Chapter 11, I.5.

    Samples with DDIM (``steps`` steps, eta = 0) or ancestral DDPM, maps them to [0, 1], and
    compares them with ``n`` real test digits; ``fid_floor`` is the same FID between two disjoint
    sets of ``n`` real test digits.
    """
    device = next(eps_model.parameters()).device
    schedule = NoiseSchedule.linear()
    generator = torch.Generator().manual_seed(seed)
    chunks = []
    for start in range(0, n, batch_size):
        shape = (min(batch_size, n - start), 1, 28, 28)
        if sampler == "ddim":
            x = ddim_sample(eps_model, shape, schedule, steps=steps, generator=generator, device=device,
                            show_progress=show_progress)
        elif sampler == "ddpm":
            x = ddpm_sample(eps_model, shape, schedule, generator=generator, device=device, show_progress=show_progress)
        else:
            raise ValueError(f"sampler must be 'ddim' or 'ddpm', got {sampler!r}")
        chunks.append(to_pixel_range(x).cpu())
    report = quality_of_samples(torch.cat(chunks), shipped_classifier(device))
    return {**report, "sampler": f"{sampler}-{steps}" if sampler == "ddim" else "ddpm-1000"}


# ------------------------------------------------------------------------------------------ the picture

def schematic():
    """The two chains of a diffusion model: the fixed forward process x_0 -> x_1 -> ... -> x_T, one step
    q(x_t | x_{t-1}) at a time or in one jump q(x_t | x_0), and the learned reverse process p_theta(x_{t-1} | x_t)
    back from x_T ~ N(0, I), each step computed from the network's eps_theta(x_t, t). Returns the matplotlib Figure.

    Taught in chapter 11, A.1 (the forward step), A.2 (the jump), C.2 (the reverse chain and its bound).
    """
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    title = "diffusion: a fixed forward chain that adds noise, a learned reverse chain that removes it"
    fig, ax = canvas(13, 5.6, title=title)
    y = 2.7
    x0 = box(ax, 1.0, y, "$x_0$\ndata", w=1.2, h=0.8, role="data")
    x1 = box(ax, 3.2, y, "$x_1$", w=1.0, h=0.8, role="latent")
    dots1 = (4.6, y)
    xp = box(ax, 6.2, y, "$x_{t-1}$", w=1.0, h=0.8, role="latent")
    xt = box(ax, 8.6, y, "$x_t$", w=1.0, h=0.8, role="latent")
    dots2 = (10.0, y)
    xT = box(ax, 11.8, y, "$x_T$\n$\\approx \\mathcal{N}(0, I)$", w=1.5, h=0.8, role="latent")
    for x in (dots1, dots2):
        ax.text(x[0], x[1], "...", ha="center", va="center", fontsize=14)
    forward = "#b45f06"
    reverse = "#2a6099"
    pairs = [(x0, x1, "$q(x_1 \\mid x_0)$", "$p_\\theta(x_0 \\mid x_1)$"),
             (xp, xt, "$q(x_t \\mid x_{t-1})$", "$p_\\theta(x_{t-1} \\mid x_t)$")]
    for a, b, q_text, p_text in pairs:
        arrow(ax, (a.right[0], y + 0.2), (b.left[0], y + 0.2), color=forward, text=q_text, text_offset=(0.0, 0.05))
        arrow(ax, (b.left[0], y - 0.2), (a.right[0], y - 0.2), color=reverse, text=p_text, text_offset=(0.0, -0.5))
    for start, end in [(x1.right, (dots1[0] - 0.3, y)), ((dots1[0] + 0.3, y), xp.left),
                       (xt.right, (dots2[0] - 0.3, y)), ((dots2[0] + 0.3, y), xT.left)]:
        arrow(ax, (start[0], y + 0.2), (end[0], y + 0.2), color=forward)
        arrow(ax, (end[0], y - 0.2), (start[0], y - 0.2), color=reverse)
    arrow(ax, x0.top, xt.top, color=forward, bend=-0.28)
    jump = "one jump:  $q(x_t \\mid x_0) = \\mathcal{N}(\\sqrt{\\bar\\alpha_t}\\, x_0,\\ (1 - \\bar\\alpha_t) I)$"
    note(ax, 4.8, 4.75, jump, fontsize=9, color=forward)
    note(ax, 10.6, 4.25, "forward process $q$: fixed, no weights\n"
                         "$x_t = \\sqrt{1 - \\beta_t}\\, x_{t-1} + \\sqrt{\\beta_t}\\, \\epsilon_t$",
         fontsize=8, color=forward)
    net = box(ax, 7.4, 0.75, "network $\\epsilon_\\theta(x_t, t)$", w=2.4, h=0.6, role="network")
    arrow(ax, (xt.x, xt.bottom[1]), (net.right[0] - 0.3, net.top[1]), color=reverse)
    arrow(ax, (net.left[0] + 0.3, net.top[1]), (xp.x, xp.bottom[1]), color=reverse)
    note(ax, 3.2, 0.95, "reverse process $p_\\theta$: learned Gaussian steps,\n"
                        "mean from $\\epsilon_\\theta$, trained with $L_\\mathrm{simple}$", fontsize=8, color=reverse)
    legend(ax, ["data", "latent", "network"], loc="lower right")
    return fig
