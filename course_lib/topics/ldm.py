"""Latent diffusion (Rombach et al. 2022) at MNIST scale: a KL-regularised autoencoder, its scaling factor,
diffusion on the scaled latents, and a small U-Net for them. Chapter 13.

    x (N, 1, 28, 28) in [0, 1] --E--> mu, logvar (N, 4, 7, 7) --reparameterise--> z
    z * scale_factor  =  z_0 of the diffusion       (scaled latents: unit variance, as SD's 0.18215)
    DDIM in latent space --> z_0_hat / scale_factor --D--> x_tilde (N, 1, 28, 28)

The reconstruction is approximate (x_tilde, not x). The autoencoder's loss per image is the *sum* of
squared pixel errors (784 terms) plus ``kl_weight`` times the Gaussian KL summed over the 196 latent
values; with ``kl_weight = 1e-4`` the KL only stops the latents from drifting to huge values, as
LDM's "KL-reg" with its weight of 1e-6: the model is an almost deterministic autoencoder, not a VAE
whose prior one could sample from. That is why the latents need the scaling factor before diffusion.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from course_lib.core.diagram import arrow, box, canvas, legend, note
from course_lib.topics.diffusion import (NoiseSchedule, ddim_sample, ddim_step, ddim_timesteps, ddpm_loss, starting_noise,
                                         walk_timesteps)
from course_lib.topics.guidance import ClassifierFreeGuidance, drop_labels
from course_lib.topics.unet import ResBlock, SelfAttention, time_and_label_embedding
from course_lib.topics.vae import gaussian_kl, reparameterize


def _check_images(x: torch.Tensor) -> None:
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise ValueError(f"expected images of shape (N, 1, 28, 28) in [0, 1], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected float images in [0, 1], got dtype {x.dtype}; use x.float() / 255")


class KLAutoencoder(nn.Module):
    """Encoder (N, 1, 28, 28) -> mu, logvar (N, C, 7, 7); decoder (N, C, 7, 7) -> pixels (N, 1, 28, 28).

    Downsampling factor f = 4 (28 -> 7) with C = ``latent_channels`` = 4: 196 numbers per digit, 4x fewer
    than its 784 pixels. ``scale_factor`` (a buffer, saved with the weights) is 1 / std of the training
    latents, set after training with :func:`set_scale_factor`.

    Taught in chapter 13, A.3.
    """

    def __init__(self, latent_channels: int = 4, widths: tuple[int, int] = (16, 32)):
        super().__init__()
        if latent_channels < 1:
            raise ValueError(f"latent_channels must be >= 1, got {latent_channels}")
        w0, w1 = widths
        self.config = dict(latent_channels=latent_channels, widths=tuple(widths))
        self.latent_channels = latent_channels
        self.encoder = nn.Sequential(
            nn.Conv2d(1, w0, 3, padding=1), nn.SiLU(),                   # (N, w0, 28, 28)
            nn.Conv2d(w0, w0, 4, stride=2, padding=1), nn.SiLU(),        # (N, w0, 14, 14)
            nn.Conv2d(w0, w1, 3, padding=1), nn.SiLU(),                  # (N, w1, 14, 14)
            nn.Conv2d(w1, w1, 4, stride=2, padding=1), nn.SiLU(),        # (N, w1, 7, 7)
            nn.Conv2d(w1, 2 * latent_channels, 1),                       # (N, 2C, 7, 7): mu and logvar
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, w1, 3, padding=1), nn.SiLU(),     # (N, w1, 7, 7)
            nn.ConvTranspose2d(w1, w0, 4, stride=2, padding=1), nn.SiLU(),  # (N, w0, 14, 14)
            nn.Conv2d(w0, w0, 3, padding=1), nn.SiLU(),                  # (N, w0, 14, 14)
            nn.ConvTranspose2d(w0, w0, 4, stride=2, padding=1), nn.SiLU(),  # (N, w0, 28, 28)
            nn.Conv2d(w0, 1, 3, padding=1),                              # (N, 1, 28, 28) pixels
        )
        self.register_buffer("scale_factor", torch.ones(()))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (N, 1, 28, 28) in [0, 1] -> mu, logvar (N, C, 7, 7) each."""
        _check_images(x)
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (N, C, 7, 7) (unscaled) -> pixels (N, 1, 28, 28), about [0, 1] (not clamped: a linear output,
        as LDM's decoder; a sigmoid before a squared error saturates early in training and stops the gradient)."""
        if z.ndim != 4 or tuple(z.shape[1:]) != (self.latent_channels, 7, 7):
            raise ValueError(f"expected latents of shape (N, {self.latent_channels}, 7, 7), got {tuple(z.shape)}")
        return self.decoder(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Reconstruction (N, 1, 28, 28), mu, logvar and the sample z (N, C, 7, 7 each)."""
        mu, logvar = self.encode(x)
        z = reparameterize(mu.flatten(1), logvar.flatten(1), generator=generator).view_as(mu)
        return self.decode(z), mu, logvar, z


def autoencoder_terms(model: KLAutoencoder, x: torch.Tensor, generator: torch.Generator | None = None):
    """Per image (N,): the summed squared error over the 784 pixels and the KL summed over the latent values.

    Taught in chapter 13, A.2.
    """
    reconstruction, mu, logvar, _ = model(x, generator=generator)
    squared_error = (reconstruction - x).pow(2).flatten(1).sum(1)      # (N,)
    return squared_error, gaussian_kl(mu.flatten(1), logvar.flatten(1))  # (N,), (N,)


def autoencoder_loss(model: KLAutoencoder, batch, kl_weight: float = 1e-4) -> torch.Tensor:
    """Loss for ``course_lib.core.train.fit``: mean over images of sum_i (x_tilde_i - x_i)^2 + kl_weight * KL.

    Taught in chapter 13, A.2.
    """
    squared_error, kl = autoencoder_terms(model, batch[0])
    return (squared_error + kl_weight * kl).mean()


@torch.no_grad()
def evaluate_autoencoder(model: KLAutoencoder, x: torch.Tensor, batch_size: int = 1000) -> dict:
    """Mean squared error per pixel of the reconstruction from mu (the mode), its PSNR in dB (peak 1), and the mean KL.

    Taught in chapter 13, A.4.
    """
    _check_images(x)
    device = next(model.parameters()).device
    se, kl = 0.0, 0.0
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size].to(device)
        mu, logvar = model.encode(chunk)
        se += (model.decode(mu) - chunk).pow(2).sum().item()
        kl += gaussian_kl(mu.flatten(1), logvar.flatten(1)).sum().item()
    mse = se / x.numel()
    return {"mse_per_pixel": mse, "psnr_db": 10 * torch.log10(torch.tensor(1.0 / mse)).item(), "kl_per_image": kl / len(x)}


@torch.no_grad()
def encode_latents(model: KLAutoencoder, x: torch.Tensor, *, scaled: bool = True, sample: bool = False,
                   generator: torch.Generator | None = None, batch_size: int = 1000) -> torch.Tensor:
    """Images (N, 1, 28, 28) -> latents (N, C, 7, 7): mu, or a sample of q(z | x) with ``sample=True``,
    times ``model.scale_factor`` when ``scaled`` (what the diffusion model sees). Chapter 13, A.5."""
    _check_images(x)
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(x), batch_size):
        mu, logvar = model.encode(x[start:start + batch_size].to(device))
        z = reparameterize(mu.flatten(1), logvar.flatten(1), generator=generator).view_as(mu) if sample else mu
        chunks.append(z.cpu())
    z = torch.cat(chunks)
    return z * model.scale_factor.cpu() if scaled else z


@torch.no_grad()
def decode_latents(model: KLAutoencoder, z_scaled: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Scaled latents (N, C, 7, 7) -> images (N, 1, 28, 28) clamped to [0, 1]: divide by the scale factor, decode.

    Taught in chapter 13, A.5.
    """
    device = next(model.parameters()).device
    out = [model.decode(z.to(device) / model.scale_factor).clamp(0, 1).cpu() for z in z_scaled.split(batch_size)]
    return torch.cat(out)


def scale_factor_from(latents: torch.Tensor) -> float:
    """1 / std of the latents (all values pooled): multiplying by it gives them unit variance, as SD's 0.18215.

    Taught in chapter 13, A.5.
    """
    if latents.numel() < 2:
        raise ValueError("need at least two latent values to estimate a standard deviation")
    return 1.0 / latents.double().std().item()


@torch.no_grad()
def set_scale_factor(model: KLAutoencoder, x: torch.Tensor) -> float:
    """Compute 1 / std of the (unscaled) latents of images ``x`` and store it in ``model.scale_factor``.

    Taught in chapter 13, A.5.
    """
    factor = scale_factor_from(encode_latents(model, x, scaled=False))
    model.scale_factor.fill_(factor)
    return factor


# ---------------------------------------------------------------------------------- a U-Net for 7x7 latents


class LatentUNet(nn.Module):
    """epsilon_theta(z_t, t, c) on (N, C, 7, 7) latents, built from chapter 11's ResBlock and SelfAttention.

    Two resolutions, 7x7 and 4x4 (a stride-2 conv; a transposed conv with kernel 3 maps 4 back to 7),
    attention at 4x4, a skip connection at each resolution. Label ``num_classes`` is "no label".

    Taught in chapter 13, D.
    """

    def __init__(self, in_channels: int = 4, widths: tuple[int, int] = (64, 96), emb_dim: int = 128, heads: int = 4,
                 groups: int = 8, num_classes: int | None = 10):
        super().__init__()
        self.config = dict(in_channels=in_channels, widths=tuple(widths), emb_dim=emb_dim, heads=heads, groups=groups,
                           num_classes=num_classes)
        w0, w1 = widths
        self.emb_dim, self.num_classes = emb_dim, num_classes
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.in_conv = nn.Conv2d(in_channels, w0, 3, padding=1)
        self.down0 = ResBlock(w0, w0, emb_dim, groups)                               # 7x7
        self.pool = nn.Conv2d(w0, w0, 3, stride=2, padding=1)                        # -> 4x4
        self.down1, self.down1_attn = ResBlock(w0, w1, emb_dim, groups), SelfAttention(w1, heads, groups)
        self.mid, self.mid_attn = ResBlock(w1, w1, emb_dim, groups), SelfAttention(w1, heads, groups)
        self.up1 = ResBlock(w1 + w1, w1, emb_dim, groups)
        self.unpool = nn.ConvTranspose2d(w1, w1, 3, stride=2, padding=1)            # -> 7x7
        self.up0 = ResBlock(w1 + w0, w0, emb_dim, groups)
        self.out = nn.Sequential(nn.GroupNorm(groups, w0), nn.SiLU(), nn.Conv2d(w0, in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if z.ndim != 4 or z.shape[-2:] != (7, 7):
            raise ValueError(f"LatentUNet expects (N, C, 7, 7) latents, got {tuple(z.shape)}")
        t = torch.as_tensor(t, device=z.device)
        t = t.expand(len(z)) if t.ndim == 0 else t
        emb = time_and_label_embedding(self, t, labels, self.emb_dim)            # (N, emb_dim)
        h0 = self.down0(self.in_conv(z), emb)                                     # (N, w0, 7, 7)
        h1 = self.down1_attn(self.down1(self.pool(h0), emb))                      # (N, w1, 4, 4)
        h = self.mid_attn(self.mid(h1, emb))                                      # (N, w1, 4, 4)
        h = self.up1(torch.cat([h, h1], 1), emb)                                  # (N, w1, 4, 4)
        h = self.up0(torch.cat([self.unpool(h, output_size=(7, 7)), h0], 1), emb)  # (N, w0, 7, 7)
        return self.out(h)


# ---------------------------------------------------------------------------------- latent diffusion


@torch.no_grad()
def sample_latent_diffusion(eps_model, autoencoder: KLAutoencoder, labels: torch.Tensor, schedule: NoiseSchedule, *,
                            steps: int = 25, guidance_scale: float = 1.0, generator: torch.Generator | None = None,
                            batch_size: int = 500, show_progress: bool = False) -> torch.Tensor:
    """Class-conditional DDIM (eta = 0) in the scaled latent space, then the decoder: (N,) labels -> (N, 1, 28, 28).

    ``guidance_scale`` is chapter 12's classifier-free guidance scale s (s = 1: plain conditional; s = 1 + w in
    Ho & Salimans' w). x0_hat is *not* clipped: latents are not confined to [-1, 1] as pixels are.

    Taught in chapter 13, B.1.
    """
    device = next(eps_model.parameters()).device
    channels = autoencoder.latent_channels
    chunks = []
    for chunk in tqdm(labels.split(batch_size), desc="latent DDIM", disable=not show_progress, leave=False):
        chunk = chunk.to(device)
        eps = (ClassifierFreeGuidance(eps_model, chunk, guidance_scale) if guidance_scale != 1.0
               else lambda z, t: eps_model(z, t, chunk))
        z0 = ddim_sample(eps, (len(chunk), channels, 7, 7), schedule, steps=steps, generator=generator, device=device,
                         clip_x0=False, show_progress=False)
        chunks.append(decode_latents(autoencoder, z0))
    return torch.cat(chunks)


@torch.no_grad()
def latent_trajectory(eps_model, autoencoder: KLAutoencoder, labels: torch.Tensor, schedule: NoiseSchedule, *,
                      steps: int = 25, guidance_scale: float = 1.0,
                      generator: torch.Generator | None = None) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """Class-conditional DDIM (eta = 0) in latent space, keeping every step: ``[(t, decoded z_t, decoded z0_hat), ...]``
    from t = T down to t = 0, each image batch (N, 1, 28, 28) in [0, 1]. ``decoded z_t`` is what the decoder makes of
    the noisy latent; ``decoded z0_hat`` of the model's current guess of the clean latent. The last entry's images are
    the samples, the same as :func:`sample_latent_diffusion` with the same generator.

    Taught in chapter 13, C.3.
    """
    device = next(eps_model.parameters()).device
    labels = torch.as_tensor(labels).long().to(device)
    eps = (ClassifierFreeGuidance(eps_model, labels, guidance_scale) if guidance_scale != 1.0
           else lambda z, t: eps_model(z, t, labels))
    frames = []

    def step(z, eps_hat, t, t_prev):
        frames.append((t, decode_latents(autoencoder, z), decode_latents(autoencoder, schedule.predict_x0(z, t, eps_hat))))
        return ddim_step(z, eps_hat, t, t_prev, schedule, clip_x0=False)

    z_T = starting_noise((len(labels), autoencoder.latent_channels, 7, 7), generator, device, None)
    z0 = walk_timesteps(eps, z_T, ddim_timesteps(schedule.T, steps), step, 0, "latent DDIM", False)
    decoded = decode_latents(autoencoder, z0)
    frames.append((0, decoded, decoded))
    return frames


def latent_ddpm_loss(model: nn.Module, z0: torch.Tensor, labels: torch.Tensor, schedule: NoiseSchedule,
                     label_dropout: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """L_LDM = E || eps - eps_theta(z_t, t, y) ||^2 on scaled latents: chapter 11's ddpm_loss with labels,
    a fraction ``label_dropout`` of them replaced by the null label ``model.num_classes`` (chapter 12's drop_labels).

    Taught in chapter 13, B.
    """
    if label_dropout > 0:
        labels = drop_labels(labels, label_dropout, model.num_classes, generator)
    return ddpm_loss(model, z0, schedule, labels=labels, generator=generator)


def balanced_labels(n: int) -> torch.Tensor:
    """0, 1, ..., 9, 0, 1, ... : n class labels with every digit equally often (up to one). Chapter 13, B.1."""
    return torch.arange(n) % 10


# ---------------------------------------------------------------------------------- schematic


def schematic():
    """Latent diffusion: encoder -> scaled latent -> diffusion in latent space -> unscale -> decoder.

    Taught in chapter 13, A.
    """
    fig, ax = canvas(12.5, 5.0, title="latent diffusion: the diffusion model never sees a pixel")
    # training, top row
    note(ax, 0.2, 4.15, "training", ha="left", fontsize=9)
    x = box(ax, 0.9, 3.5, "$x$\n1x28x28", w=1.1, h=0.75, role="data")
    enc = box(ax, 2.6, 3.5, "encoder $\\mathcal{E}$\n(frozen)", w=1.5, h=0.75, role="network")
    z = box(ax, 4.3, 3.5, "$\\mathcal{E}(x)$\n4x7x7", w=1.2, h=0.75, role="latent")
    scale = box(ax, 5.7, 3.5, "$\\times \\kappa$", w=0.9, h=0.6, role="operation")
    noise = box(ax, 8, 3.5, "$z_t = \\sqrt{\\bar\\alpha_t} z_0 + \\sqrt{1 - \\bar\\alpha_t} \\epsilon$", w=2.5, h=0.6,
                role="operation")
    net = box(ax, 10.5, 3.5, "$\\epsilon_\\theta(z_t, t, c)$\nDiT or U-Net", w=1.6, h=0.75, role="network")
    loss = box(ax, 11.8, 2.45, "$\\Vert \\epsilon - \\epsilon_\\theta \\Vert^2$", w=1.2, h=0.5, role="loss", fontsize=8)
    arrow(ax, x.right, enc.left)
    arrow(ax, enc.right, z.left)
    arrow(ax, z.right, scale.left)
    arrow(ax, scale.right, noise.left, text="$z_0$", text_offset=(0.0, 0.05))
    arrow(ax, noise.right, net.left)
    arrow(ax, (net.x + 0.5, net.y - net.h / 2), loss.top)
    # sampling, bottom row
    ax.plot([0.2, 11.0], [2.6, 2.6], color="#bbbbbb", lw=0.8, ls="--")
    note(ax, 0.2, 2.35, "sampling", ha="left", fontsize=9)
    zT = box(ax, 0.9, 1.6, "$z_T \\sim \\mathcal{N}(0, I)$\n4x7x7", w=1.5, h=0.75, role="latent")
    ddim = box(ax, 3.3, 1.6, "DDIM steps with\n$\\epsilon_\\theta(z_t, t, c)$", w=2.1, h=0.75, role="network")
    cls = box(ax, 3.3, 0.65, "class $c$", w=1.1, h=0.4, role="condition")
    z0 = box(ax, 5.4, 1.6, "$\\hat z_0$", w=0.9, h=0.6, role="latent")
    unscale = box(ax, 6.8, 1.6, "$\\div \\kappa$", w=0.9, h=0.6, role="operation")
    dec = box(ax, 8.3, 1.6, "decoder $\\mathcal{D}$", w=1.5, h=0.75, role="network")
    out = box(ax, 9.9, 1.6, "$\\tilde x$\n1x28x28", w=1.1, h=0.75, role="data")
    arrow(ax, zT.right, ddim.left)
    arrow(ax, cls.top, ddim.bottom)
    arrow(ax, ddim.right, z0.left)
    arrow(ax, z0.right, unscale.left)
    arrow(ax, unscale.right, dec.left)
    arrow(ax, dec.right, out.left)
    note(ax, 6.8, 0.75, "$\\kappa = 1 / \\mathrm{std}(\\mathcal{E}(x))$: the latent scale factor (SD v1: 0.18215)")
    legend(ax, ["data", "network", "latent", "operation", "condition", "loss"], loc="lower right")
    return fig
