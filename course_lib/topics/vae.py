"""The variational autoencoder of chapter 08: a conv VAE for binarized MNIST, its ELBO and IWAE bound.

The model, with a standard normal prior and a Bernoulli decoder on the 784 binary pixels::

    p(z) = N(0, I),   p_theta(x | z) = prod_i Bernoulli(x_i; sigmoid(logits_i(z))),
    q_phi(z | x) = N(mu(x), diag(exp(logvar(x)))),

    -ELBO(x) = E_q[-log p_theta(x | z)] + KL(q_phi(z | x) || p(z))      (nats per image)
               \\____ reconstruction ___/   \\_______ rate (closed form) ___/

``logvar`` is log sigma^2, the log of the *variance*. Every quantity here is per image, summed over
pixels and latent dimensions; a mean over pixels is not the ELBO. The data model is stated with
every number: pixels binarized by Bernoulli sampling (``binarize``), dynamically (a new sample each
batch) for training and once with a fixed seed for the test set (``binarized_mnist``).

Built step by step in chapter 08.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.data import load_mnist

LOG_2PI = math.log(2 * math.pi)


# ---------------------------------------------------------------------------------- the pieces


def _check_mu_logvar(mu: torch.Tensor, logvar: torch.Tensor) -> None:
    if not isinstance(mu, torch.Tensor) or not isinstance(logvar, torch.Tensor):
        raise TypeError("mu and logvar must be torch tensors")
    if mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must have the same shape, got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    if mu.ndim != 2:
        raise ValueError(f"mu and logvar must be (N, latent_dim), got shape {tuple(mu.shape)}; "
                         "add a batch dimension with mu[None]")


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, *, eps: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + sigma * eps with sigma = exp(logvar / 2) and eps ~ N(0, I): a sample of q that gradients flow through.

    Taught in chapter 08, C.
    """
    _check_mu_logvar(mu, logvar)
    if eps is None:
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)  # (N, J)
    elif eps.shape != mu.shape:
        raise ValueError(f"eps must have mu's shape {tuple(mu.shape)}, got {tuple(eps.shape)}")
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per row, in nats: (N, J) -> (N,). Chapter 08, B.

    Per dimension 1/2 (mu^2 + sigma^2 - 1 - log sigma^2), summed over the J latent dimensions.
    """
    _check_mu_logvar(mu, logvar)
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(dim=1)


def diagonal_gaussian_kl(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor,
                         logvar_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_q, diag(exp(logvar_q))) || N(mu_p, diag(exp(logvar_p)))) per row, in nats: (N, J) x 4 -> (N,).

    Per dimension 1/2 (logvar_p - logvar_q + (sigma_q^2 + (mu_q - mu_p)^2) / sigma_p^2 - 1), summed over J; with
    mu_p = 0 and logvar_p = 0 it is :func:`gaussian_kl`. A learned or conditional prior needs it. Chapter 08, F.
    """
    _check_mu_logvar(mu_q, logvar_q)
    _check_mu_logvar(mu_p, logvar_p)
    if mu_q.shape != mu_p.shape:
        raise ValueError(f"q and p must have the same shape (N, J), got {tuple(mu_q.shape)} and {tuple(mu_p.shape)}")
    ratio = (logvar_q.exp() + (mu_q - mu_p).pow(2)) * torch.exp(-logvar_p)  # (N, J)
    return 0.5 * (logvar_p - logvar_q + ratio - 1).sum(dim=1)


def log_normal(z: torch.Tensor, mu: torch.Tensor | float = 0.0, logvar: torch.Tensor | float = 0.0) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dimension: (..., J) -> (...). Chapter 08, A.7."""
    mu, logvar = torch.as_tensor(mu, dtype=z.dtype), torch.as_tensor(logvar, dtype=z.dtype)
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(dim=-1)


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log prod_i Bernoulli(x_i; sigmoid(logits_i)), summed over every pixel of an image: (N, ...) -> (N,).

    Written from logits (stable for any logit); ``x`` should be binary, 0 or 1. With grey targets in
    (0, 1) the same formula is a cross entropy, not a log-likelihood (see chapter 08, section D.1).

    Taught in chapter 08, D.1.
    """
    if logits.shape != x.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and images {tuple(x.shape)} must have the same shape")
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(dim=1)


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Bernoulli-sample every pixel: 1 with probability equal to its grey value in [0, 1]. Chapter 08, D.1."""
    if not x.is_floating_point() or x.min() < 0 or x.max() > 1:
        raise ValueError("binarize expects float pixel values in [0, 1] (load_mnist returns them so)")
    return torch.bernoulli(x, generator=generator)


def binarized_mnist(split: str = "test", seed: int = 0, n: int | None = None) -> torch.Tensor:
    """MNIST binarized *once* by Bernoulli sampling with a fixed seed: the course's evaluation set. Chapter 08, D.1.

    ``(N, 1, 28, 28)`` float tensor of 0s and 1s. It is not Larochelle & Murray's "fixed binarized
    MNIST"; numbers on the two are close but not the same data.
    """

    x = load_mnist(split)[0][:n]
    return binarize(x, torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------- the model


class ConvVAE(nn.Module):
    """Encoder (N, 1, 28, 28) -> (mu, logvar) each (N, latent_dim); decoder z -> Bernoulli logits (N, 1, 28, 28).

    Encoder: conv 4x4 stride 2 (28 -> 14), conv 4x4 stride 2 (14 -> 7), a hidden linear layer, then
    one linear layer for mu and logvar. The decoder mirrors it with transposed convolutions.

    Taught in chapter 08, D.2.
    """

    def __init__(self, latent_dim: int = 16, channels: tuple[int, int] = (32, 64), hidden: int = 128):
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        c1, c2 = channels
        self.config = dict(latent_dim=latent_dim, channels=tuple(channels), hidden=hidden)
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c1, 4, stride=2, padding=1), nn.ReLU(),  # (N, c1, 14, 14)
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(),  # (N, c2, 7, 7)
            nn.Flatten(), nn.Linear(c2 * 7 * 7, hidden), nn.ReLU(),  # (N, hidden)
            nn.Linear(hidden, 2 * latent_dim),  # (N, 2J): mu and logvar side by side
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.ReLU(),  # (N, hidden)
            nn.Linear(hidden, c2 * 7 * 7), nn.ReLU(), nn.Unflatten(1, (c2, 7, 7)),  # (N, c2, 7, 7)
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.ReLU(),  # (N, c1, 14, 14)
            nn.ConvTranspose2d(c1, 1, 4, stride=2, padding=1),  # (N, 1, 28, 28) logits
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
            raise ValueError(f"expected images of shape (N, 1, 28, 28), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"expected float images (0/1 or in [0, 1]), got dtype {x.dtype}; use x.float()")
        mu, logvar = self.encoder(x).chunk(2, dim=1)  # (N, J) each
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected latents of shape (N, {self.latent_dim}), got {tuple(z.shape)}")
        return self.decoder(z)  # (N, 1, 28, 28) logits

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Logits of the reconstruction (N, 1, 28, 28), and mu, logvar, z (N, J) each."""
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, generator=generator)
        return self.decode(z), mu, logvar, z


# ---------------------------------------------------------------------------------- objectives


def negative_elbo(logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """One-sample -ELBO per image in nats, (N,): -log p(x | z) summed over pixels + KL summed over latent dimensions.

    ``logits`` (N, 1, 28, 28) decoded from a sample z ~ q(z | x); ``x`` binary images of the same shape;
    ``mu``, ``logvar`` (N, J) the encoder's outputs for ``x``.

    Taught in chapter 08, A.6.
    """
    return -bernoulli_log_likelihood(logits, x) + gaussian_kl(mu, logvar)


def elbo_terms(model: ConvVAE, x: torch.Tensor, generator: torch.Generator | None = None):
    """One-sample estimates, per image in nats: reconstruction -log p(x | z) (N,) and rate KL(q || p) (N,).

    -ELBO(x) = reconstruction + rate. The KL is exact (closed form); the reconstruction uses one z ~ q.

    Taught in chapter 08, D.2.
    """
    logits, mu, logvar, _ = model(x, generator=generator)
    return -bernoulli_log_likelihood(logits, x), gaussian_kl(mu, logvar)


def vae_loss(model: ConvVAE, batch, beta: float = 1.0) -> torch.Tensor:
    """Training loss for ``course_lib.core.train.fit``: the batch's grey images binarized afresh (dynamic
    binarization), then the mean over images of reconstruction + beta * KL, in nats per image. Chapter 08, D.3.

    With beta = 1 this is the batch's -ELBO; beta != 1 gives the beta-VAE objective, not an ELBO.
    """
    x = binarize(batch[0])  # (B, 1, 28, 28) of 0/1, a new sample every step
    reconstruction, kl = elbo_terms(model, x)
    return (reconstruction + beta * kl).mean()


@torch.no_grad()
def evaluate_elbo(model: ConvVAE, x: torch.Tensor, *, batch_size: int = 1000, seed: int = 0) -> dict:
    """Mean -ELBO, reconstruction and KL over binary images ``x``, in nats per image (one z per image, seeded).

    Taught in chapter 08, D.4.
    """
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64)
    for start in range(0, len(x), batch_size):
        reconstruction, kl = elbo_terms(model, x[start:start + batch_size].to(device), generator=generator)
        totals += torch.stack([reconstruction.sum(), kl.sum()]).double().cpu()
    model.train(was_training)
    reconstruction, kl = (totals / len(x)).tolist()
    return {"neg_elbo": reconstruction + kl, "reconstruction": reconstruction, "kl": kl}


def log_importance_weight(logits: torch.Tensor, x: torch.Tensor, z: torch.Tensor, mu: torch.Tensor,
                          logvar: torch.Tensor) -> torch.Tensor:
    """log w = log p(x | z) + log p(z) - log q(z | x) per image, (N,): the one-sample estimate L^A of the ELBO.

    ``logits`` (N, 1, 28, 28) decoded from ``z`` (N, J), a sample of q = N(mu, diag(exp(logvar))); ``x`` binary.
    Its mean over z ~ q is the ELBO; log of the mean of exp(log w) is the IWAE bound. Chapter 08, A.6.
    """
    return bernoulli_log_likelihood(logits, x) + log_normal(z) - log_normal(z, mu, logvar)


def iwae_log_weights(model: ConvVAE, x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """log w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x) for k samples z_k ~ q(z | x): (k, N). Chapter 08, A.7."""
    mu, logvar = model.encode(x)  # (N, J) each
    log_w = []
    for _ in range(k):
        z = reparameterize(mu, logvar, generator=generator)  # (N, J)
        log_w.append(log_importance_weight(model.decode(z), x, z, mu, logvar))  # (N,)
    return torch.stack(log_w)  # (k, N)


def iwae_bound(log_weights: torch.Tensor) -> torch.Tensor:
    """L_k = log (1/k) sum_k w_k, computed as logsumexp(log w) - log k: (k, N) -> (N,). Chapter 08, A.7."""
    if log_weights.ndim != 2:
        raise ValueError(f"log_weights must be (k, N), got shape {tuple(log_weights.shape)}")
    return torch.logsumexp(log_weights, dim=0) - math.log(log_weights.shape[0])


@torch.no_grad()
def evaluate_iwae(model: ConvVAE, x: torch.Tensor, k: int = 100, *, batch_size: int = 500, seed: int = 0) -> float:
    """Mean -L_k over binary images ``x`` in nats per image: an upper bound on -log p(x), tighter as k grows.

    Taught in chapter 08, D.4.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(x), batch_size):
        log_w = iwae_log_weights(model, x[start:start + batch_size].to(device), k, generator)  # (k, B)
        total += -iwae_bound(log_w).double().sum().item()
    model.train(was_training)
    return total / len(x)


def independent_pixel_nll(x_train: torch.Tensor, x_test: torch.Tensor) -> float:
    """Baseline with no latent at all: each pixel Bernoulli with its mean over ``x_train`` (grey values are fine,
    their mean is the probability of a 1 after binarization). Mean -log p(x_test) in nats per image; a VAE must beat it.

    Taught in chapter 08, D.4.
    """
    p = x_train.double().mean(0, keepdim=True).clamp(1e-6, 1 - 1e-6)  # (1, 1, 28, 28)
    log_lik = torch.xlogy(x_test.double(), p) + torch.xlogy(1 - x_test.double(), 1 - p)  # (N, 1, 28, 28)
    return -log_lik.flatten(1).sum(1).mean().item()


# ---------------------------------------------------------------------------------- looking at it


@torch.no_grad()
def decode_probabilities(model: ConvVAE, z: torch.Tensor) -> torch.Tensor:
    """The decoder's Bernoulli means sigmoid(logits) (N, 1, 28, 28): what the figures show (not samples).

    Taught in chapter 08, D.3.
    """
    device = next(model.parameters()).device
    return torch.sigmoid(model.decode(z.to(device).float())).cpu()


def latent_grid(n: int = 15, quantile: float = 0.95, dims: int = 2) -> torch.Tensor:
    """An n x n grid of 2-D latents, evenly spaced in probability under N(0, 1) (Kingma & Welling's Fig. 4).

    Coordinates are Phi^{-1}(u) for u evenly spaced in [(1 - quantile) / 2, (1 + quantile) / 2];
    rows run from high z_2 (top) to low. Returns (n * n, 2), or (n * n, dims) with zeros elsewhere.

    Taught in chapter 08, E.1.
    """
    if n < 2 or not 0 < quantile < 1:
        raise ValueError(f"need n >= 2 and 0 < quantile < 1, got n={n}, quantile={quantile}")
    u = torch.linspace((1 - quantile) / 2, (1 + quantile) / 2, n, dtype=torch.float64)
    coords = math.sqrt(2) * torch.erfinv(2 * u - 1)  # Phi^{-1}(u), (n,)
    z1, z2 = torch.meshgrid(coords, coords.flip(0), indexing="xy")  # (n, n) each
    grid = torch.zeros(n * n, dims)
    grid[:, 0], grid[:, 1] = z1.reshape(-1).float(), z2.reshape(-1).float()
    return grid


def interpolate(z_a: torch.Tensor, z_b: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """Latents on the straight line from z_a to z_b (both (J,)): (steps, J). Chapter 08, E.2."""
    if z_a.shape != z_b.shape or z_a.ndim != 1:
        raise ValueError(f"z_a and z_b must be 1-D of the same shape, got {tuple(z_a.shape)}, {tuple(z_b.shape)}")
    t = torch.linspace(0, 1, steps, dtype=z_a.dtype)[:, None]  # (steps, 1)
    return (1 - t) * z_a[None] + t * z_b[None]



# ---------------------------------------------------------------------------------- the picture


def schematic():
    """The VAE, drawn: x -> encoder q_phi(z | x) -> (mu, log sigma^2) -> z = mu + sigma * eps with the noise
    eps ~ N(0, I) entering from the side (the reparameterization) -> decoder p_theta(x | z) -> Bernoulli logits;
    the loss -ELBO = reconstruction + KL(q || N(0, I)). Returns the matplotlib Figure.

    Drawn in chapter 08, D.2 (the ELBO is derived in A, the KL in B, the reparameterization in C).
    """
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(13, 5.4, title="a variational autoencoder: encoder, reparameterized sample, decoder, two loss terms")
    x = box(ax, 0.9, 3.3, "image $x$\n(1, 28, 28)", w=1.4, h=0.9, role="data")
    enc = box(ax, 2.9, 3.3, "encoder\n$q_\\phi(z \\mid x)$", w=1.7, h=0.9, role="network")
    mu = box(ax, 4.9, 3.85, "$\\mu$  (J)", w=1.3, h=0.55, role="latent")
    logvar = box(ax, 4.9, 2.75, "$\\log \\sigma^2$  (J)", w=1.3, h=0.55, role="latent")
    reparam = box(ax, 7.0, 3.3, "$z = \\mu + \\sigma \\odot \\epsilon$\n$\\sigma = e^{\\log \\sigma^2 / 2}$",
                  w=2.0, h=0.9, role="operation")
    eps = box(ax, 7.0, 4.6, "noise $\\epsilon \\sim \\mathcal{N}(0, I)$", w=2.2, h=0.5, role="latent")
    dec = box(ax, 9.3, 3.3, "decoder\n$p_\\theta(x \\mid z)$", w=1.7, h=0.9, role="network")
    out = box(ax, 11.7, 3.3, "reconstruction\nlogits (1, 28, 28)", w=1.9, h=0.9, role="data")
    arrow(ax, x.right, enc.left)
    arrow(ax, (enc.right[0], enc.y + 0.2), mu.left)
    arrow(ax, (enc.right[0], enc.y - 0.2), logvar.left)
    arrow(ax, mu.right, (reparam.left[0], reparam.y + 0.2))
    arrow(ax, logvar.right, (reparam.left[0], reparam.y - 0.2))
    arrow(ax, eps.bottom, reparam.top)
    arrow(ax, reparam.right, dec.left, text="$z$ (J)")
    arrow(ax, dec.right, out.left)
    note(ax, 9.6, 4.6, "the noise enters from the side: gradients\nflow through $\\mu$ and $\\sigma$, not through $\\epsilon$",
         fontsize=8)
    rec = box(ax, 10.6, 1.35, "reconstruction  $-\\log p_\\theta(x \\mid z)$\nBCE(logits, target $x$), summed over 784 pixels",
              w=3.9, h=0.8, role="loss")
    kl = box(ax, 4.9, 1.35, "rate  KL$(q_\\phi(z \\mid x) \\,||\\, \\mathcal{N}(0, I))$\nclosed form, summed over J",
             w=3.9, h=0.8, role="loss")
    total = box(ax, 7.75, 0.4, "$-$ELBO = reconstruction + KL   (nats per image)", w=4.6, h=0.5, role="loss")
    arrow(ax, out.bottom, (out.x, rec.top[1]))
    arrow(ax, (logvar.x, logvar.bottom[1]), kl.top, text="$\\mu$, $\\log \\sigma^2$", text_offset=(0.45, -0.1))
    arrow(ax, kl.bottom, (total.left[0] + 0.4, total.top[1]))
    arrow(ax, rec.bottom, (total.right[0] - 0.4, total.top[1]))
    legend(ax, ["data", "network", "latent", "operation", "loss"], loc="lower left")
    return fig
