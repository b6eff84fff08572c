"""Diffusion as a restorer: SR3 super-resolution, a two-stage cascade, and colorization. Chapter 15, C.

Everything reuses chapter 11's machinery (:class:`NoiseSchedule`, :func:`ddim_sample`, the U-Net's blocks) and
chapter 12's replacement inpainting idea:

- SR3 (Saharia et al. 2021): the noise predictor sees x_t concatenated with the upsampled low-resolution
  image y and is trained with  E || eps - eps_theta(x_t, y, t) ||^2  (:class:`SR3UNet`, :func:`sr3_loss`,
  :func:`super_resolve`). A sample is a draw from p(x | y), not the posterior mean E[x | y]. ``project=True`` adds
  a low-pass replacement at every step (:func:`project_low_res`, Choi et al. 2021's ILVR) that makes the sample
  exactly consistent with y: a patch for the briefly trained shipped model, whose plain samples keep some noise.
- Cascade (Ho et al. 2022): a small 14x14 model (:class:`LowResUNet`) makes the low-resolution image, the SR
  stage upsamples it (:func:`cascade_sample`). Noise-conditioning augmentation trains the SR stage on
  y_tilde = sqrt(abar_s) y + sqrt(1 - abar_s) eps with s as an extra input, so that stage 2 does not copy
  (and amplify) the artefacts of stage 1.
- Colorization (Song et al. 2021): an unconditional model of colour scenes, an orthogonal Q that maps RGB to
  (gray, two chroma axes), and replacement of the gray coordinate at every step (:func:`colorize`).

Images live in [-1, 1] (the model range) unless a function says otherwise.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.core.layers import sinusoidal_embedding
from course_lib.topics.diffusion import (NoiseSchedule, ddim_sample, ddim_step, ddim_timesteps, starting_noise,
                                         walk_timesteps)
from course_lib.topics.unet import ResBlock, SelfAttention, UNet, time_and_label_embedding

HIGH, LOW = 28, 14  # the two resolutions of the cascade


# ------------------------------------------------------------------------------------------ resolutions

def _check_images(x: torch.Tensor, size: int, name: str, channels: int | None = None) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[-2:]) != (size, size):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a (N, C, {size}, {size}) float tensor, got {shape}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channel(s), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor (images in [-1, 1]), got dtype {x.dtype}")


def downsample(x: torch.Tensor) -> torch.Tensor:
    """The degradation of the SR task: 2x2 average pooling, (N, C, 28, 28) -> (N, C, 14, 14). Chapter 15, C.1."""
    _check_images(x, HIGH, "x")
    return F.avg_pool2d(x, 2)


def upsample(y: torch.Tensor) -> torch.Tensor:
    """Bicubic upsampling (N, C, 14, 14) -> (N, C, 28, 28): the baseline, and what SR3 concatenates to x_t.
    Chapter 15, C.1."""
    _check_images(y, LOW, "y")
    return F.interpolate(y, scale_factor=2, mode="bicubic", align_corners=False)


def consistency_error(x: torch.Tensor, y: torch.Tensor) -> float:
    """RMS of downsample(x) - y in pixel units ([0, 1] images; both inputs in [-1, 1], so divide by 2).
    0 means x explains y exactly. Chapter 15, C.1."""
    return float(((downsample(x) - y) ** 2).mean().sqrt() / 2)


# ------------------------------------------------------------------------------------------ SR3

class SR3UNet(UNet):
    """eps_theta(x_t, t, y, s): chapter 11's U-Net whose input is x_t (N, 1, 28, 28) concatenated with
    upsample(y), y (N, 1, 14, 14); output the noise (N, 1, 28, 28).

    ``s`` (N,) integers in 0..T is the noise-conditioning augmentation level of y (Ho et al. 2022; 0: clean y);
    it enters like t, as sinusoidal features and an MLP added to the time embedding.

    Taught in chapter 15, C.1 (the augmentation level in C.2).
    """

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), emb_dim: int = 64, heads: int = 4,
                 groups: int = 8):
        super().__init__(in_channels=2, widths=widths, emb_dim=emb_dim, heads=heads, groups=groups)
        self.config = dict(widths=tuple(widths), emb_dim=emb_dim, heads=heads, groups=groups)
        self.out[-1] = nn.Conv2d(widths[0], 1, 3, padding=1)  # one output channel: the noise of x_t
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        self.aug_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def embed(self, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        emb = time_and_label_embedding(self, t, None, self.emb_dim)  # (N, emb_dim)
        return emb + self.aug_mlp(sinusoidal_embedding(s, self.emb_dim).to(emb.device))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, s: torch.Tensor | int = 0) -> torch.Tensor:
        _check_images(x, HIGH, "x_t", channels=1)
        _check_images(y, LOW, "y (the low-resolution image)", channels=1)
        if len(y) != len(x):
            raise ValueError(f"x_t and y need the same batch size, got {len(x)} and {len(y)}")
        s = torch.as_tensor(s, device=x.device)
        s = s.expand(len(x)) if s.ndim == 0 else s
        return super().forward(torch.cat([x, upsample(y).to(x.dtype)], 1), t, s)  # (N, 1, 28, 28)


def augment_low_res(y: torch.Tensor, s: torch.Tensor | int, schedule: NoiseSchedule,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise-conditioning augmentation: y_tilde = sqrt(abar_s) y + sqrt(1 - abar_s) eps (s = 0 returns y).
    Chapter 15, C.2."""
    noise = torch.randn(y.shape, generator=generator).to(y.device)
    return schedule.q_sample(y, s, noise)


def sr3_loss(model: nn.Module, x0: torch.Tensor, y: torch.Tensor, schedule: NoiseSchedule, *,
             max_aug: int = 0, p_aug: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """E || eps - eps_theta(x_t, y_tilde, t, s) ||^2 with t ~ U{1..T}; with probability ``p_aug`` the condition is
    augmented at a level s ~ U{1..max_aug} (else s = 0, y_tilde = y). ``max_aug = 0``: plain SR3.

    Taught in chapter 15, C.1 (the augmentation in C.2).
    """
    n = len(x0)
    t = torch.randint(1, schedule.T + 1, (n,), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    s = torch.zeros(n, dtype=torch.long)
    if max_aug > 0:
        levels = torch.randint(1, max_aug + 1, (n,), generator=generator)
        s = torch.where(torch.rand(n, generator=generator) < p_aug, levels, s)
    s = s.to(x0.device)
    y_tilde = augment_low_res(y, s, schedule, generator)
    return ((noise - model(schedule.q_sample(x0, t, noise), t, y_tilde, s)) ** 2).mean()


@torch.no_grad()
def super_resolve(model: nn.Module, y: torch.Tensor, schedule: NoiseSchedule, *, steps: int = 25, aug: int = 0,
                  eta: float = 0.0, project: bool = False, generator: torch.Generator | None = None,
                  show_progress: bool = False) -> torch.Tensor:
    """Draw x ~ p(x | y) for each y (N, 1, 14, 14) with DDIM (``steps``, ``eta``); returns (N, 1, 28, 28) in [-1, 1].

    ``aug`` is the augmentation level s at sampling time: y is noised to level s (fresh noise) and the model is told s.
    ``project`` also replaces the 2x2 averages of x at every step (:func:`project_low_res`), so that the sample is
    exactly consistent with (the possibly augmented) y.

    Taught in chapter 15, C.1 (``aug`` in C.2).
    """
    _check_images(y, LOW, "y", channels=1)
    device = next(model.parameters()).device
    y = y.to(device)
    y_tilde = augment_low_res(y, aug, schedule, generator) if aug > 0 else y
    s = torch.full((len(y),), aug, dtype=torch.long, device=device)
    shape = (len(y), 1, HIGH, HIGH)
    if not project:
        return ddim_sample(lambda x, t: model(x, t, y_tilde, s), shape, schedule, steps=steps, eta=eta,
                           generator=generator, device=device, show_progress=show_progress)

    def step(x, eps_hat, t, t_prev):  # a DDIM step, then the 2x2 averages of x_{t_prev} replaced by noised y's
        noise = torch.randn(shape, generator=generator).to(device) if eta > 0 and t_prev > 0 else None
        x_prev = ddim_step(x, eps_hat, t, t_prev, schedule, eta=eta, noise=noise, clip_x0=True)
        return project_low_res(x_prev, y_tilde, t_prev, schedule, generator)

    return walk_timesteps(lambda x, t: model(x, t, y_tilde, s), starting_noise(shape, generator, device, None),
                          ddim_timesteps(schedule.T, steps), step, 0, "SR3 sampling", show_progress)


def project_low_res(x: torch.Tensor, y: torch.Tensor, t: int, schedule: NoiseSchedule,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace the 2x2 averages of x_t (N, 1, 28, 28) by those of a forward-noised y: D(x_t) becomes
    sqrt(abar_t) y + sqrt(1 - abar_t) eps / 2 (a 2x2 average of unit noise has standard deviation 1/2), the detail
    within each block is kept. At t = 0, D(x) = y exactly. Chapter 12's replacement, for a low-pass "mask"
    (Choi et al. 2021, ILVR). Chapter 15, C.1."""
    noise = torch.randn(y.shape, generator=generator).to(y.device)
    ab = float(schedule.alpha_bars[t])
    target = math.sqrt(ab) * y + math.sqrt(1 - ab) * noise / 2  # (N, 1, 14, 14)
    return x + F.interpolate(target - downsample(x), scale_factor=2, mode="nearest")


@torch.no_grad()
def posterior_mean_estimate(model: nn.Module, y: torch.Tensor, schedule: NoiseSchedule,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """The network's own L2 answer: x0_hat(x_T, y, T) with x_T ~ N(0, I). At t = T, x_T carries almost no
    information about x (sqrt(abar_T) ~ 0.006), so the regression target of x0_hat is E[x | y]. Chapter 15, C.1."""
    device = next(model.parameters()).device
    y = y.to(device)
    x_T = torch.randn((len(y), 1, HIGH, HIGH), generator=generator).to(device)
    t = torch.full((len(y),), schedule.T, dtype=torch.long, device=device)
    return schedule.predict_x0(x_T, schedule.T, model(x_T, t, y)).clamp(-1, 1)


class L2Regressor(nn.Module):
    """A small CNN trained with a plain L2 loss: its optimum is the posterior mean E[x | input].

    ``(N, in_channels, H, W) -> (N, out_channels, H, W)``; the input is the bicubic-upsampled y for super-resolution,
    the gray image for colorization. Taught in chapter 15, C.1 (and C.3).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 32, depth: int = 4):
        super().__init__()
        layers, c = [], in_channels
        for _ in range(depth - 1):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.SiLU()]
            c = width
        layers.append(nn.Conv2d(c, out_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)
        self.in_channels, self.out_channels = in_channels, out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"L2Regressor expects (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        skip = x.mean(1, keepdim=True).expand(-1, self.out_channels, -1, -1)  # start from the input (gray / bicubic)
        return skip + self.net(x)


# ------------------------------------------------------------------------------------------ the cascade

class LowResUNet(nn.Module):
    """The cascade's first stage, eps_theta(x_t, t, c) at 14x14: (N, 1, 14, 14), (N,) t, optional (N,) labels.

    Chapter 11's U-Net with one level fewer (14x14 -> 7x7 with attention -> 14x14), built from its ResBlock and
    SelfAttention. Taught in chapter 15, C.2.
    """

    def __init__(self, widths: tuple[int, int] = (32, 64), emb_dim: int = 64, heads: int = 4, groups: int = 8,
                 num_classes: int | None = 10):
        super().__init__()
        self.config = dict(widths=tuple(widths), emb_dim=emb_dim, heads=heads, groups=groups, num_classes=num_classes)
        w0, w1 = widths
        self.emb_dim, self.num_classes = emb_dim, num_classes
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.in_conv = nn.Conv2d(1, w0, 3, padding=1)
        self.down0 = ResBlock(w0, w0, emb_dim, groups)                                # 14x14
        self.pool = nn.Conv2d(w0, w0, 3, stride=2, padding=1)                         # -> 7x7
        self.down1, self.down1_attn = ResBlock(w0, w1, emb_dim, groups), SelfAttention(w1, heads, groups)
        self.mid, self.mid_attn = ResBlock(w1, w1, emb_dim, groups), SelfAttention(w1, heads, groups)
        self.up1 = ResBlock(w1 + w1, w1, emb_dim, groups)
        self.unpool = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w1, w1, 3, padding=1))
        self.up0 = ResBlock(w1 + w0, w0, emb_dim, groups)                             # 14x14
        self.out = nn.Sequential(nn.GroupNorm(groups, w0), nn.SiLU(), nn.Conv2d(w0, 1, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        _check_images(x, LOW, "x_t", channels=1)
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(len(x)) if t.ndim == 0 else t
        emb = time_and_label_embedding(self, t, labels, self.emb_dim)
        h0 = self.down0(self.in_conv(x), emb)                                 # (N, w0, 14, 14)
        h1 = self.down1_attn(self.down1(self.pool(h0), emb))                  # (N, w1, 7, 7)
        h = self.mid_attn(self.mid(h1, emb))                                  # (N, w1, 7, 7)
        h = self.up1(torch.cat([h, h1], 1), emb)                              # (N, w1, 7, 7)
        h = self.up0(torch.cat([self.unpool(h), h0], 1), emb)                 # (N, w0, 14, 14)
        return self.out(h)


@torch.no_grad()
def cascade_sample(base: nn.Module, sr: nn.Module, labels: torch.Tensor, schedule: NoiseSchedule, *,
                   steps: int = 25, aug: int = 0, project: bool = False, generator: torch.Generator | None = None,
                   show_progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 1 draws 14x14 digits of the given ``labels`` (N,), stage 2 super-resolves them at augmentation
    level ``aug`` (``project``: see :func:`super_resolve`). Returns (low (N, 1, 14, 14), high (N, 1, 28, 28)), both in
    [-1, 1]. Chapter 15, C.2."""
    device = next(base.parameters()).device
    labels = torch.as_tensor(labels, device=device)
    low = ddim_sample(lambda x, t: base(x, t, labels), (len(labels), 1, LOW, LOW), schedule, steps=steps,
                      generator=generator, device=device, show_progress=show_progress)
    return low, super_resolve(sr, low, schedule, steps=steps, aug=aug, project=project, generator=generator)


# ------------------------------------------------------------------------------------------ colorization

def gray_chroma_basis() -> torch.Tensor:
    """The orthogonal Q (3, 3) whose rows are the gray axis (1, 1, 1)/sqrt(3) and two chroma axes:
    z = Q rgb gives (gray, chroma_1, chroma_2) per pixel, and rgb = Q^T z. Chapter 15, C.3."""
    return torch.tensor([[1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3)],
                         [1 / math.sqrt(2), -1 / math.sqrt(2), 0.0],
                         [1 / math.sqrt(6), 1 / math.sqrt(6), -2 / math.sqrt(6)]])


def to_gray_chroma(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB -> (N, 3, H, W) coordinates (gray, chroma_1, chroma_2) = Q rgb per pixel. Chapter 15, C.3."""
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W) colour images, got {tuple(rgb.shape)}")
    return torch.einsum("ij,njhw->nihw", gray_chroma_basis().to(rgb), rgb)


def from_gray_chroma(z: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`to_gray_chroma`: rgb = Q^T z (Q is orthogonal). Chapter 15, C.3."""
    if z.ndim != 4 or z.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W) (gray, chroma, chroma) coordinates, got {tuple(z.shape)}")
    return torch.einsum("ji,njhw->nihw", gray_chroma_basis().to(z), z)


def gray_of(rgb: torch.Tensor) -> torch.Tensor:
    """The gray coordinate (N, 1, H, W) = (r + g + b)/sqrt(3): what a colorizer is given. Chapter 15, C.3."""
    return to_gray_chroma(rgb)[:, :1]


def chroma(rgb: torch.Tensor) -> torch.Tensor:
    """Per-pixel colourfulness (N, H, W): the distance of (r, g, b) from the gray axis, in pixel units when rgb is in
    [-1, 1] (half the chroma norm). 0 for any shade of grey. Chapter 15, C.3."""
    return to_gray_chroma(rgb)[:, 1:].norm(dim=1) / 2


@torch.no_grad()
def colorize(model, gray: torch.Tensor, schedule: NoiseSchedule, *, steps: int = 25, eta: float = 1.0,
             generator: torch.Generator | None = None, show_progress: bool = False) -> torch.Tensor:
    """Colour images (N, 3, H, W) in [-1, 1] whose gray coordinate is exactly ``gray`` (N, 1, H, W), from an
    unconditional colour model ``model(x_t, t)``: chapter 12's replacement inpainting, in the coordinates of Q.

    At every DDIM step (clipping x0_hat in RGB) the gray coordinate of x_{t_prev} is replaced by the forward-noised
    known gray, sqrt(abar) gray + sqrt(1 - abar) eps; the two chroma coordinates are what the model generates.
    Valid because Q is orthogonal: Gaussian noise in RGB is Gaussian noise of the same variance in Q's coordinates.

    Taught in chapter 15, C.3.
    """
    if gray.ndim != 4 or gray.shape[1] != 1:
        raise ValueError(f"gray must be (N, 1, H, W) (use gray_of(rgb)), got {tuple(gray.shape)}")
    device = gray.device
    n, _, h, w = gray.shape

    def step(x, eps_hat, t, t_prev):
        noise = torch.randn(x.shape, generator=generator).to(device) if t_prev > 0 else None
        x_prev = ddim_step(x, eps_hat, t, t_prev, schedule, eta=eta, noise=noise, clip_x0=True)
        gray_prev = schedule.q_sample(gray, t_prev, torch.randn(gray.shape, generator=generator).to(device))
        z = to_gray_chroma(x_prev)
        return from_gray_chroma(torch.cat([gray_prev, z[:, 1:]], 1))  # the known coordinate replaced

    x_T = starting_noise((n, 3, h, w), generator, device, None)
    return walk_timesteps(model, x_T, ddim_timesteps(schedule.T, steps), step, 0, "colorizing", show_progress)


def shapes_scenes(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, 28, 28) shapes scenes in [-1, 1] (1-2 objects of random colour on a dark background). Chapter 15, C.3."""
    from course_lib.data.shapes import make_shapes

    return make_shapes(n, size=HIGH, max_objects=2, min_radius=4, max_radius=8, seed=seed)["images"] * 2 - 1


def colour_unet(widths: tuple[int, int, int] = (16, 32, 64), emb_dim: int = 64) -> UNet:
    """The unconditional model of colour scenes: chapter 11's U-Net on 3 channels. Chapter 15, C.3."""
    return UNet(in_channels=3, widths=widths, emb_dim=emb_dim)


# ------------------------------------------------------------------------------------------ exercise checks

def check_downsample_consistency(fn) -> None:
    """Exercise check (chapter 15, C.1): ``fn(x, y)`` should be :func:`consistency_error`."""
    from course_lib.core.check import check_function

    g = torch.Generator().manual_seed(0)
    inputs = [(torch.rand(4, 1, 28, 28, generator=g) * 2 - 1, torch.rand(4, 1, 14, 14, generator=g) * 2 - 1)]
    y = downsample(inputs[0][0])
    inputs.append((inputs[0][0], y))
    check_function(lambda x, y: torch.tensor(fn(x, y)), lambda x, y: torch.tensor(consistency_error(x, y)), inputs,
                   name="consistency_error", rtol=1e-4, atol=1e-6)


def check_augment(fn) -> None:
    """Exercise check (chapter 15, C.2): ``fn(y, s, schedule, noise)`` should return
    sqrt(abar_s) y + sqrt(1 - abar_s) noise."""
    from course_lib.core.check import check_function

    schedule = NoiseSchedule.linear(1000)
    g = torch.Generator().manual_seed(1)
    y, noise = torch.rand(3, 1, 14, 14, generator=g) * 2 - 1, torch.randn(3, 1, 14, 14, generator=g)
    inputs = [(y, s, noise) for s in (0, 1, 100, 500)]
    check_function(lambda y, s, noise: fn(y, s, schedule, noise),
                   lambda y, s, noise: schedule.q_sample(y, s, noise), inputs, name="augment", rtol=1e-4, atol=1e-5)


def check_gray_chroma(fn) -> None:
    """Exercise check (chapter 15, C.3): ``fn(rgb)`` should return :func:`to_gray_chroma` (Q rgb per pixel)."""
    from course_lib.core.check import check_function

    g = torch.Generator().manual_seed(2)
    inputs = [(torch.rand(2, 3, 5, 5, generator=g) * 2 - 1,), (torch.ones(1, 3, 2, 2),)]
    check_function(fn, to_gray_chroma, inputs, name="to_gray_chroma", rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------ schematics

def sr3_schematic():
    """SR3 and the cascade: stage 1 (14x14 model) -> y, noise-conditioning augmentation y -> y_tilde (level s),
    upsample, concatenate with x_t, the SR U-Net predicts eps. Returns the matplotlib Figure. Chapter 15, C.1."""
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(14, 6.2, title="SR3 in a cascade: $\\epsilon_\\theta(x_t, \\mathrm{up}(\\tilde y), t, s)$")
    label = box(ax, 1.1, 5.0, "label c", w=1.4, h=0.6, role="condition")
    base = box(ax, 1.1, 3.4, "stage 1:\n14x14 U-Net\n(DDIM)", w=1.9, h=1.1, role="network")
    y = box(ax, 3.9, 3.4, "$y$\n(N, 1, 14, 14)", w=1.7, h=0.8, role="data")
    aug = box(ax, 6.4, 3.4, "augment:\n$\\sqrt{\\bar\\alpha_s}\\,y + \\sqrt{1-\\bar\\alpha_s}\\,\\epsilon$",
              w=2.5, h=0.9, role="operation")
    s = box(ax, 6.4, 5.0, "level $s$", w=1.3, h=0.6, role="condition")
    up = box(ax, 6.4, 1.6, "bicubic up\n(N, 1, 28, 28)", w=2.0, h=0.8, role="operation")
    xt = box(ax, 9.1, 0.5, "$x_t$\n(N, 1, 28, 28)", w=1.7, h=0.8, role="latent")
    cat = box(ax, 9.1, 1.9, "concatenate\n(N, 2, 28, 28)", w=1.9, h=0.8, role="operation")
    unet = box(ax, 11.6, 3.4, "SR U-Net\n(+ emb of $t$ and $s$)", w=2.2, h=1.0, role="network")
    eps = box(ax, 11.6, 5.1, "$\\hat\\epsilon$ (N, 1, 28, 28)", w=2.2, h=0.6, role="data")
    t = box(ax, 13.3, 2.0, "$t$", w=0.6, h=0.5, role="condition")
    arrow(ax, label.bottom, base.top)
    arrow(ax, base.right, y.left)
    arrow(ax, y.right, aug.left)
    arrow(ax, s.bottom, aug.top)
    arrow(ax, aug.bottom, up.top, text="$\\tilde y$", text_offset=(0.25, 0))
    arrow(ax, up.right, cat.left)
    arrow(ax, xt.top, cat.bottom)
    arrow(ax, cat.right, (unet.x - 0.6, unet.bottom[1]))
    arrow(ax, t.top, (unet.x + 0.9, unet.bottom[1]))
    arrow(ax, (s.right[0], s.y), (unet.x - 0.7, unet.top[1]), dashed=True, color="#666666")
    arrow(ax, unet.top, eps.bottom)
    note(ax, 3.4, 0.5, "training: $y$ = downsample(real $x$), $s$ random;\nsampling: $s$ is a hyperparameter",
         fontsize=8.5)
    legend(ax, ["data", "network", "latent", "operation", "condition"], loc="upper left")
    return fig


def colorize_schematic():
    """Colorization by replacement in Q's coordinates: x_t (RGB) -> DDIM step -> z = Q x -> gray replaced by the noised
    known gray -> Q^T z. Returns the matplotlib Figure. Chapter 15, C.3."""
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(14, 5.2, title="colorization: an unconditional colour model, the gray coordinate replaced")
    xt = box(ax, 1.1, 2.6, "$x_t$ (RGB)\n(N, 3, 28, 28)", w=1.9, h=0.8, role="latent")
    step = box(ax, 3.8, 2.6, "DDIM step\nunconditional\nU-Net", w=2.0, h=1.0, role="network")
    q = box(ax, 6.4, 2.6, "$z = Q\\,x$\n(gray, chroma 1, 2)", w=2.2, h=0.8, role="operation")
    gray = box(ax, 6.4, 4.0, "known gray $g$", w=1.9, h=0.6, role="data")
    noise = box(ax, 9.1, 4.0, "$\\sqrt{\\bar\\alpha}\\,g + \\sqrt{1-\\bar\\alpha}\\,\\epsilon$", w=2.3, h=0.6,
                role="operation")
    rep = box(ax, 9.1, 2.6, "replace $z_{gray}$\nkeep chroma", w=2.0, h=0.8, role="operation")
    back = box(ax, 11.8, 2.6, "$x_{t'} = Q^\\top z$", w=1.9, h=0.8, role="latent")
    arrow(ax, xt.right, step.left)
    arrow(ax, step.right, q.left, text="$x_{t'}$", text_offset=(0, 0.2))
    arrow(ax, q.right, rep.left)
    arrow(ax, gray.right, noise.left)
    arrow(ax, noise.bottom, rep.top)
    arrow(ax, rep.right, back.left)
    loop_y = 1.2  # the loop back to the next step runs below the boxes
    ax.plot([back.x, back.x, xt.x], [back.bottom[1], loop_y, loop_y], color="#666666", ls="--", lw=1.2)
    arrow(ax, (xt.x, loop_y), xt.bottom, dashed=True, color="#666666")
    note(ax, 6.4, 0.95, "next step ($t \\leftarrow t'$)", fontsize=8.5)
    note(ax, 6.4, 0.35, "Q orthogonal: Gaussian noise stays isotropic in its coordinates", fontsize=8.5)
    legend(ax, ["data", "network", "latent", "operation"], loc="upper left")
    return fig
