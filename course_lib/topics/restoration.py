"""Chapter 15: image restoration as an inverse problem, and the losses that train a restorer.

Three forward models turn a clean image x into an observation y:
    denoising          y = x + n
    deblurring         y = x * k + n
    super-resolution   y = D(x * k) + n        (here D(x * k) = a 4 x 4 average pool: 28 x 28 -> 7 x 7)
with n ~ N(0, sigma^2 I). The estimator that minimises E ||f(y) - x||^2 is the posterior mean E[x | y]; under
Gaussian noise and y = x + n it is Tweedie's y + sigma^2 grad log p(y) (chapter 10). A posterior mean averages
the plausible answers: a blur. Perceptual (Johnson et al. 2016) and adversarial (Ledig et al. 2017; Isola et al.
2017) losses trade some of that mean-squared accuracy for outputs that look like real digits (Blau and Michaeli
2018: the perception-distortion trade-off).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from course_lib.core.runtime import as_device, seed_everything
from course_lib.core.train import autocast, resolve_precision
from course_lib.eval.fid import MnistClassifier, classifier_outputs, frechet_distance, real_split, shipped_classifier
from course_lib.topics.gan import DCGANDiscriminator, discriminator_loss, generator_loss

LOSS_KINDS = ("l2", "perceptual", "adversarial")
FACTOR = 4  # the super-resolution factor of the chapter's task: 28 x 28 -> 7 x 7 -> 28 x 28


def _check_images(x: torch.Tensor, name: str = "x", size: int | None = 28) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a batch of grey images (N, 1, H, W), got {shape}; "
                         f"add the batch and channel axes with {name}[None, None] or {name}.unsqueeze(1)")
    if size is not None and x.shape[-2:] != (size, size):
        raise ValueError(f"{name} must be {size} x {size}, got {tuple(x.shape[-2:])}")
    if not x.is_floating_point():
        raise TypeError(f"{name} has dtype {x.dtype}: use floats in [0, 1] ({name}.float() / 255)")


# ---------------------------------------------------------------------------------- forward models (A.1)


def downsample(x: torch.Tensor, factor: int = FACTOR) -> torch.Tensor:
    """D(x * k): a factor x factor box blur, then keep every factor-th pixel, i.e. average pooling.
    (N, 1, H, W) -> (N, 1, H / factor, W / factor). Chapter 15, A.1."""
    _check_images(x, size=None)
    if x.shape[-1] % factor or x.shape[-2] % factor:
        raise ValueError(f"image size {tuple(x.shape[-2:])} is not divisible by the factor {factor}")
    return F.avg_pool2d(x, factor)


def box_blur(x: torch.Tensor, width: int = 5) -> torch.Tensor:
    """x * k for a width x width box kernel k (sum 1), zero padding, same size. Chapter 15, A.1."""
    _check_images(x, size=None)
    if width % 2 != 1:
        raise ValueError(f"width must be odd (the kernel is centred), got {width}")
    kernel = torch.full((1, 1, width, width), 1.0 / width**2, dtype=x.dtype, device=x.device)
    return F.conv2d(x, kernel, padding=width // 2)


def observe(x: torch.Tensor, task: str, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """y for ``task`` "denoise" (x + n), "deblur" (box_blur(x) + n) or "super_resolution" (downsample(x) + n),
    n ~ N(0, sigma^2 I). Chapter 15, A.1."""
    clean = {"denoise": lambda v: v, "deblur": box_blur, "super_resolution": downsample}
    if task not in clean:
        raise ValueError(f"task must be one of {tuple(clean)}, got {task!r}")
    y = clean[task](x)
    return y + sigma * torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)


def upsample(y: torch.Tensor, mode: str = "bicubic", factor: int = FACTOR) -> torch.Tensor:
    """The no-learning baselines: (N, 1, h, w) -> (N, 1, factor h, factor w) by "nearest", "bilinear" or
    "bicubic" interpolation, clamped to [0, 1]. Chapter 15, B.4."""
    _check_images(y, "y", size=None)
    kwargs = {} if mode == "nearest" else dict(align_corners=False)
    return F.interpolate(y, scale_factor=factor, mode=mode, **kwargs).clamp(0, 1)


# ---------------------------------------------------------------------------------- the posterior mean (A.2, A.3)


def bimodal_posterior_mean(y: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[x | y] for x = -1 or +1 (probability 1/2 each) and y = x + n, n ~ N(0, sigma^2): tanh(y / sigma^2).
    Chapter 15, A.2."""
    return torch.tanh(y / sigma**2)


def posterior_weights(y: torch.Tensor, prior: torch.Tensor, forward, sigma: float) -> torch.Tensor:
    """Bayes on a finite prior: x is one of the N images ``prior`` (N, 1, 28, 28), each with probability 1/N;
    y = forward(x) + n, n ~ N(0, sigma^2 I). Returns p(x_i | y) (M, N) for observations y (M, ...):
    softmax_i(-||y - forward(x_i)||^2 / (2 sigma^2)). Chapter 15, A.3."""
    clean = forward(prior).flatten(1)  # (N, d)
    flat = y.flatten(1)  # (M, d)
    if flat.shape[1] != clean.shape[1]:
        raise ValueError(f"y has {flat.shape[1]} values per image but forward(prior) has {clean.shape[1]}: "
                         "y must be an observation made with the same forward model")
    distances = torch.cdist(flat.double(), clean.double()) ** 2  # (M, N)
    return torch.softmax(-distances / (2 * sigma**2), dim=1).to(y.dtype)


def posterior_mean(y: torch.Tensor, prior: torch.Tensor, forward, sigma: float) -> torch.Tensor:
    """E[x | y] = sum_i p(x_i | y) x_i on the finite prior: (M, ...) -> (M, 1, 28, 28). Chapter 15, A.3."""
    weights = posterior_weights(y, prior, forward, sigma)  # (M, N)
    return (weights @ prior.flatten(1).to(weights.dtype)).view(len(y), *prior.shape[1:])


def tweedie_denoiser(y: torch.Tensor, prior: torch.Tensor, sigma: float) -> torch.Tensor:
    """Tweedie's formula y + sigma^2 grad_y log p(y), with p(y) = (1/N) sum_i N(y; x_i, sigma^2 I) and the
    gradient by autograd: equals the posterior mean for denoising. Chapter 15, A.3."""
    y = y.detach().double().requires_grad_(True)
    distances = torch.cdist(y.flatten(1), prior.flatten(1).double()) ** 2  # (M, N)
    log_p = torch.logsumexp(-distances / (2 * sigma**2), dim=1)  # log p(y) up to a constant
    (score,) = torch.autograd.grad(log_p.sum(), y)
    return (y + sigma**2 * score).detach()


def effective_candidates(weights: torch.Tensor) -> torch.Tensor:
    """1 / sum_i w_i^2 per row: how many prior images the posterior spreads over. Chapter 15, A.3."""
    return 1.0 / (weights.double() ** 2).sum(-1)


# ---------------------------------------------------------------------------------- the restorer (B.1)


class Restorer(nn.Module):
    """4x super-resolution, (N, 1, 7, 7) observation -> (N, 1, 28, 28) image in [0, 1].

    Three 3x3 convolutions at 7 x 7 (the receptive field covers the whole input), two transposed convolutions
    (7 -> 14 -> 28) each followed by a 3x3 convolution, and a 3x3 output convolution; its output is a residual
    added to the logit of the bicubic upsampling, then a sigmoid. Taught in chapter 15, B.1.
    """

    def __init__(self, width: int = 64):
        super().__init__()
        self.config = dict(width=width)
        w = width
        self.low = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(),  # (N, w, 7, 7)
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(w, w // 2, 4, stride=2, padding=1), nn.ReLU(),  # (N, w/2, 14, 14)
            nn.Conv2d(w // 2, w // 2, 3, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(w // 2, w // 4, 4, stride=2, padding=1), nn.ReLU(),  # (N, w/4, 28, 28)
            nn.Conv2d(w // 4, w // 4, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w // 4, 1, 3, padding=1))  # (N, 1, 28, 28)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        _check_images(y, "y", size=7)
        base = F.interpolate(y, scale_factor=FACTOR, mode="bicubic", align_corners=False)  # (N, 1, 28, 28)
        base_logit = torch.logit(base.clamp(0.02, 0.98))
        return torch.sigmoid(base_logit + self.up(self.low(y)))


# ---------------------------------------------------------------------------------- the losses (B.2, B.3)


def perceptual_features(classifier: MnistClassifier, x: torch.Tensor) -> list[torch.Tensor]:
    """The classifier's two convolutional feature maps of images x (N, 1, 28, 28) in [0, 1]: after the first
    conv + ReLU (N, 32, 28, 28) and after the second (N, 64, 14, 14). Chapter 15, B.2."""
    _check_images(x)
    body = classifier.body
    first = body[1](body[0](x))  # conv1, ReLU
    second = body[4](body[3](body[2](first)))  # max-pool, conv2, ReLU
    return [first, second]


def perceptual_loss(classifier: MnistClassifier, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Johnson et al. (2016)'s feature reconstruction loss: sum over layers of the mean squared difference of
    the classifier's feature maps of x_hat and x (the classifier frozen, x's features without gradient).
    Chapter 15, B.2."""
    with torch.no_grad():
        targets = perceptual_features(classifier, x)
    return sum(F.mse_loss(a, b) for a, b in zip(perceptual_features(classifier, x_hat), targets))


def restorer_loss(kind: str, x_hat: torch.Tensor, x: torch.Tensor, *, classifier: MnistClassifier | None = None,
                  discriminator: nn.Module | None = None, perceptual_weight: float = 1.0,
                  adversarial_weight: float = 0.01) -> torch.Tensor:
    """The restorer's loss: "l2" ||x_hat - x||^2 (mean over pixels); "perceptual" l2 + perceptual_weight *
    perceptual_loss; "adversarial" l2 + adversarial_weight * the non-saturating generator loss of
    ``discriminator`` on x_hat (mapped to [-1, 1], chapter 09's convention). Chapter 15, B.3."""
    l2 = F.mse_loss(x_hat, x)
    if kind == "l2":
        return l2
    if kind == "perceptual":
        if classifier is None:
            raise ValueError("the perceptual loss needs classifier=shipped_classifier()")
        return l2 + perceptual_weight * perceptual_loss(classifier, x_hat, x)
    if kind == "adversarial":
        if discriminator is None:
            raise ValueError("the adversarial loss needs discriminator=DCGANDiscriminator()")
        return l2 + adversarial_weight * generator_loss(discriminator(2 * x_hat - 1))
    raise ValueError(f"kind must be one of {LOSS_KINDS}, got {kind!r}")


def train_restorer(kind: str, x_train: torch.Tensor, *, steps: int, batch_size: int = 64, lr: float = 1e-3,
                   width: int = 64, perceptual_weight: float = 1.0, adversarial_weight: float = 0.01,
                   seed: int = 0, device: torch.device | str = "cpu", precision: str = "fp32",
                   classifier: MnistClassifier | None = None, noise_sigma: float = 0.0,
                   show_progress: bool = True):
    """Train a :class:`Restorer` with ``restorer_loss(kind)`` on 4x super-resolution of ``x_train``
    (N, 1, 28, 28): a fresh random batch each step, y = downsample(x) (+ noise_sigma * fresh Gaussian noise).
    Adam(lr, betas (0.5, 0.999)), the learning rate halved at 60% and 85% of the steps; for "adversarial" a chapter-09 DCGAN discriminator takes
    one step per restorer step (Adam 2e-4, betas (0.5, 0.999)). Returns (restorer in eval mode, dict of loss
    lists "loss", "l2"). Chapter 15, B.4."""
    if kind not in LOSS_KINDS:
        raise ValueError(f"kind must be one of {LOSS_KINDS}, got {kind!r}")
    _check_images(x_train, "x_train")
    device = as_device(device)
    precision = resolve_precision(precision, device)
    generator = seed_everything(seed)
    model = Restorer(width).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.999))
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(0.6 * steps), int(0.85 * steps)], 0.5)
    if kind == "perceptual":
        classifier = (classifier or shipped_classifier()).to(device).eval()
        classifier.requires_grad_(False)
    discriminator = d_optimizer = None
    if kind == "adversarial":
        discriminator = DCGANDiscriminator().to(device)
        d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    history = {"loss": [], "l2": []}
    bar = tqdm(range(steps), desc=f"restorer ({kind})", disable=not show_progress)
    for _ in bar:
        index = torch.randint(len(x_train), (batch_size,), generator=generator)
        x = x_train[index].to(device)  # (B, 1, 28, 28)
        y = downsample(x)  # (B, 1, 7, 7)
        if noise_sigma > 0:
            y = y + noise_sigma * torch.randn(y.shape, generator=generator).to(device)
        model.train()
        if discriminator is not None:  # the critic's step first, on detached restorations
            with autocast(precision, device):
                with torch.no_grad():
                    fake = model(y)
                d_loss = discriminator_loss(discriminator(2 * x - 1), discriminator(2 * fake.float() - 1))
            d_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            d_optimizer.step()
        with autocast(precision, device):
            x_hat = model(y).float()
            loss = restorer_loss(kind, x_hat, x, classifier=classifier, discriminator=discriminator,
                                 perceptual_weight=perceptual_weight, adversarial_weight=adversarial_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        history["loss"].append(loss.item())
        history["l2"].append(F.mse_loss(x_hat.detach(), x).item())
        if len(history["loss"]) % 20 == 0:
            bar.set_postfix(loss=f"{history['loss'][-1]:.4f}", refresh=False)
    model.eval()
    return model, history


# ---------------------------------------------------------------------------------- measuring (B.4, B.5)


def psnr(x_hat: torch.Tensor, x: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1]: mean over images of -10 log10(MSE_i).
    Chapter 15, B.4."""
    if x_hat.shape != x.shape:
        raise ValueError(f"x_hat {tuple(x_hat.shape)} and x {tuple(x.shape)} must have the same shape")
    mse = ((x_hat.double() - x.double()) ** 2).flatten(1).mean(1).clamp(min=1e-10)
    return float((-10 * torch.log10(mse)).mean())


@torch.no_grad()
def restore(model: nn.Module, y: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """model(y) in batches, on the model's device, returned as float32 on the CPU, clamped to [0, 1].
    Chapter 15, B.4."""
    device = next(model.parameters()).device
    return torch.cat([model(y[i:i + batch_size].to(device)).float().cpu()
                      for i in range(0, len(y), batch_size)]).clamp(0, 1)


@torch.no_grad()
def evaluate_restorations(restorations: dict, truth: torch.Tensor, reference: torch.Tensor,
                          classifier: MnistClassifier | None = None) -> dict:
    """PSNR against ``truth`` and FID against ``reference`` (real digits disjoint from ``truth``) of each
    entry of ``restorations`` {name: (n, 1, 28, 28)}, plus the row "truth" (the real-vs-real floor: the FID
    of a perfect restorer). Returns {name: {"psnr": dB, "fid": ...}}. Chapter 15, B.4."""
    classifier = classifier or shipped_classifier()
    reference_features = classifier_outputs(reference, classifier)[0]
    rows = {}
    for name, images in {**restorations, "truth": truth}.items():
        features = classifier_outputs(images.clamp(0, 1), classifier)[0]
        rows[name] = {"psnr": psnr(images, truth) if name != "truth" else math.inf,
                      "fid": frechet_distance(features, reference_features)}
    return rows


def benchmark_split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(truth, reference): two disjoint fixed sets of n MNIST test digits, as course_lib.eval.fid.real_split
    makes them (truth is the FID's real-vs-real twin). Chapter 15, B.4."""
    from course_lib.data import load_mnist

    reference, truth = real_split(n, load_mnist("test")[0])
    return truth, reference


# ---------------------------------------------------------------------------------- exercises' checks


def check_posterior_mean(fn) -> None:
    """Exercise check (chapter 15, A.2): ``fn(y, sigma)`` must be E[x | y] for the bimodal toy."""
    from course_lib.core.check import check_function

    generator = torch.Generator().manual_seed(0)
    inputs = [(torch.randn(50, generator=generator, dtype=torch.float64) * s, s) for s in (0.3, 0.7, 1.5)]
    check_function(fn, bimodal_posterior_mean, inputs, name="posterior mean", rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------------- the picture


def schematic():
    """The restorer and its three losses: y (7 x 7) -> restorer -> x_hat (28 x 28), compared with x by L2, by
    the frozen classifier's features (perceptual) and by a discriminator (adversarial). Returns the Figure.

    Drawn in chapter 15, B.1.
    """
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(12, 5.4, title="a 4x super-resolution restorer and its three losses")
    x = box(ax, 1.2, 4.3, "clean digit $x$\n28 x 28", w=1.8, h=0.9, role="data")
    op = box(ax, 1.2, 2.5, "$D(x * k)$\n4 x 4 average", w=1.8, h=0.9, role="operation")
    y = box(ax, 1.2, 0.8, "observation $y$\n7 x 7", w=1.8, h=0.9, role="data")
    net = box(ax, 3.9, 0.8, "restorer $f_\\theta$\nconv 7x7, up 14, up 28", w=2.3, h=0.9, role="network")
    x_hat = box(ax, 6.6, 0.8, "$\\hat x = f_\\theta(y)$\n28 x 28", w=1.8, h=0.9, role="data")
    l2 = box(ax, 6.6, 4.3, "L2: $\\|\\hat x - x\\|^2$", w=2.2, h=0.7, role="loss")
    clf = box(ax, 9.2, 2.5, "frozen classifier\nconv features $\\phi$", w=2.3, h=0.9, role="network")
    perc = box(ax, 9.2, 4.3, "perceptual:\n$\\|\\phi(\\hat x) - \\phi(x)\\|^2$", w=2.4, h=0.9, role="loss")
    disc = box(ax, 9.2, 0.8, "discriminator $D$\n(chapter 09)", w=2.3, h=0.9, role="network")
    adv = box(ax, 11.2, 0.8, "adversarial:\n$-\\log D(\\hat x)$", w=1.5, h=0.9, role="loss")
    arrow(ax, x.bottom, op.top)
    arrow(ax, op.bottom, y.top)
    arrow(ax, y.right, net.left)
    arrow(ax, net.right, x_hat.left)
    arrow(ax, x.right, l2.left)
    arrow(ax, x_hat.top, l2.bottom)
    arrow(ax, x_hat.right, clf.left)
    arrow(ax, clf.top, perc.bottom)
    arrow(ax, x_hat.right, disc.left)
    arrow(ax, disc.right, adv.left)
    note(ax, 3.9, 2.6, "L2 alone: the posterior mean E[x | y], a blur\n+ perceptual or + adversarial: sharper, "
         "lower PSNR", fontsize=9)
    legend(ax, ["data", "operation", "network", "loss"], loc="upper center")
    return fig
