"""2-D toy distributions. The Gaussian mixture has a closed-form density and score.

Mixture with weights ``pi_k``, means ``mu_k`` and isotropic standard deviations ``s_k``:

    p(x)            = sum_k pi_k N(x; mu_k, s_k^2 I)
    grad_x log p(x) = sum_k r_k(x) (mu_k - x) / s_k^2,   r_k(x) = pi_k N(x; mu_k, s_k^2 I) / p(x)

Adding Gaussian noise of standard deviation ``sigma`` gives again a mixture, with ``s_k^2 + sigma^2``
(:meth:`GaussianMixture2D.noised`); this is what makes Tweedie's formula checkable exactly
(chapter 10).
"""
from __future__ import annotations

import math

import torch


def _as_points(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor of shape (N, 2), got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"expected points of shape (N, 2), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point tensor, got {x.dtype}; use x.float()")
    return x


class GaussianMixture2D:
    """A mixture of isotropic 2-D Gaussians with exact ``log_prob`` and ``score``."""

    def __init__(self, means, stds, weights=None):
        self.means = torch.as_tensor(means, dtype=torch.float64).reshape(-1, 2)  # (K, 2)
        k = len(self.means)
        stds = torch.as_tensor(stds, dtype=torch.float64).flatten()
        if len(stds) not in (1, k):
            raise ValueError(f"{k} means but {len(stds)} stds: give one std per component, or a single one")
        self.stds = stds.expand(k).clone()  # (K,)
        weights = torch.full((k,), 1.0 / k) if weights is None else weights
        self.weights = torch.as_tensor(weights, dtype=torch.float64).flatten()  # (K,)
        if len(self.weights) != k:
            raise ValueError(f"{k} means but {len(self.weights)} weights")
        if (self.stds <= 0).any() or (self.weights < 0).any():
            raise ValueError("stds must be > 0 and weights >= 0")
        if not math.isclose(float(self.weights.sum()), 1.0, rel_tol=1e-6):
            raise ValueError(f"weights must sum to 1, they sum to {float(self.weights.sum()):.6f}")

    @classmethod
    def ring(cls, k: int = 8, radius: float = 4.0, std: float = 0.3) -> "GaussianMixture2D":
        """``k`` equal components evenly spaced on a circle (the mode-collapse toy)."""
        angles = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
        return cls(torch.stack([radius * angles.cos(), radius * angles.sin()], 1), std)

    def noised(self, sigma: float) -> "GaussianMixture2D":
        """The law of ``x + sigma * eps`` for ``x`` from this mixture and ``eps ~ N(0, I)``."""
        return GaussianMixture2D(self.means, (self.stds**2 + sigma**2).sqrt(), self.weights)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` points, float32 of shape (n, 2)."""
        component = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        points = self.means[component] + self.stds[component, None] * noise
        return points.float()

    def _component_log_probs(self, x: torch.Tensor) -> torch.Tensor:  # (N, K)
        x = _as_points(x).to(torch.float64)
        squared = ((x[:, None, :] - self.means[None]) ** 2).sum(-1)  # (N, K)
        variances = self.stds**2
        return (self.weights.log() - math.log(2 * math.pi) - variances.log()
                - squared / (2 * variances))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x), shape (N,), in the dtype of ``x``."""
        return torch.logsumexp(self._component_log_probs(x), dim=1).to(x.dtype)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """r_k(x) = p(component k | x), shape (N, K)."""
        return torch.softmax(self._component_log_probs(x), dim=1).to(x.dtype)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """grad_x log p(x) in closed form, shape (N, 2)."""
        r = torch.softmax(self._component_log_probs(x), dim=1)  # (N, K)
        pull = (self.means[None] - x.to(torch.float64)[:, None, :]) / self.stds[None, :, None] ** 2
        return (r[:, :, None] * pull).sum(1).to(x.dtype)


def sample_rings(n: int, generator: torch.Generator | None = None, radii=(1.0, 2.0, 3.0),
                 noise: float = 0.05) -> torch.Tensor:
    """Points on concentric circles (equal numbers per ring, up to rounding), shape (n, 2)."""
    radii = torch.as_tensor(radii, dtype=torch.float32)
    ring = torch.randperm(n, generator=generator) % len(radii)  # equal counts, random order
    angle = torch.rand(n, generator=generator) * 2 * math.pi
    points = radii[ring, None] * torch.stack([angle.cos(), angle.sin()], 1)
    return points + noise * torch.randn(n, 2, generator=generator)


def sample_swiss_roll(n: int, generator: torch.Generator | None = None, noise: float = 0.1) -> torch.Tensor:
    """The 2-D swiss roll (t cos t, t sin t) / 3 with t in [1.5 pi, 4.5 pi], shape (n, 2)."""
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator))
    points = torch.stack([t * t.cos(), t * t.sin()], 1) / 3
    return points + noise * torch.randn(n, 2, generator=generator)
