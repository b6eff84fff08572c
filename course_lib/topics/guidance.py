"""Guidance: steering a diffusion model towards a label. Chapter 12.

Bayes' rule on scores (the evidence p(y) does not depend on x, so its gradient is zero)::

    grad_x log p_t(x | y) = grad_x log p_t(x) + grad_x log p_t(y | x)

- Classifier guidance (Dhariwal & Nichol 2021): a classifier p_phi(y | x_t, t) trained on *noisy*
  inputs supplies the second term; a scale gamma sharpens it:
  score_gamma = score(x) + gamma grad log p_phi(y | x_t). In eps coordinates
  (score = -eps / sqrt(1 - alpha_bar_t)): eps_gamma = eps(x) - gamma sqrt(1 - alpha_bar_t) grad log p_phi(y | x_t).
- Classifier-free guidance (Ho & Salimans 2022): one network eps(x_t, t, y) trained with the label
  replaced by a null token 20% of the time, so it is also the unconditional eps(x_t, t). Two ways to
  write the same guided noise::

      eps_tilde = (1 + w) eps(x, y) - w eps(x)              (Ho & Salimans, w >= 0; w = 0 is conditional)
                = eps(x) + s (eps(x, y) - eps(x))           (s = 1 + w; s = 1 is conditional)

  The course uses ``s`` (the "guidance scale" of most code bases); s = 1 is plain conditional sampling.

Every guided model here is an ``EpsModel``: a callable ``(x_t, t) -> eps``, so chapter 11's
``ddim_sample`` and ``ddpm_sample`` run it unchanged. Inpainting (:func:`inpaint`) is a DDIM step of its own,
run by chapter 11's ``walk_timesteps``: after each step it overwrites the known pixels with the forward-noised
original.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from course_lib.core.diagram import arrow, box, canvas, legend, note
from course_lib.core.layers import sinusoidal_embedding, to_pixel_range
from course_lib.data.toy2d import GaussianMixture2D
from course_lib.eval.fid import classifier_outputs, quality_of_samples, shipped_classifier
from course_lib.topics.diffusion import (NoiseSchedule, ddim_sample, ddim_step, ddim_timesteps, ddpm_loss,
                                         starting_noise, walk_timesteps)

# ------------------------------------------------------------------------------------------ training

def drop_labels(labels: torch.Tensor, p_uncond: float, null_label: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each label by ``null_label`` with probability ``p_uncond`` (Ho & Salimans: 0.1-0.2; the course 0.2).

    Taught in chapter 12, D.3.
    """
    if labels.dtype != torch.long:
        raise TypeError(f"labels must be integer class indices (torch.long), got {labels.dtype}")
    if not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"p_uncond must be a probability in [0, 1], got {p_uncond}")
    drop = torch.rand(labels.shape, generator=generator).to(labels.device) < p_uncond  # (N,) bool
    return torch.where(drop, torch.full_like(labels, null_label), labels)


def cfg_loss(model: nn.Module, x0: torch.Tensor, labels: torch.Tensor, schedule: NoiseSchedule,
             p_uncond: float = 0.2, generator: torch.Generator | None = None) -> torch.Tensor:
    """L_simple with the label dropped to the null token (``model.num_classes``) with probability ``p_uncond``.

    Taught in chapter 12, D.3.
    """
    if getattr(model, "num_classes", None) is None:
        raise ValueError("classifier-free guidance needs a class-conditional model: build UNet(num_classes=10)")
    return ddpm_loss(model, x0, schedule, drop_labels(labels, p_uncond, model.num_classes, generator), generator)


# ------------------------------------------------------------------------------------------ CFG

def guided_eps(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """The course's convention: eps_uncond + s (eps_cond - eps_uncond); s = 1 is conditional, s = 0 unconditional.

    Taught in chapter 12, D.1.
    """
    if eps_cond.shape != eps_uncond.shape:
        raise ValueError(f"eps_cond {tuple(eps_cond.shape)} and eps_uncond {tuple(eps_uncond.shape)} differ in shape")
    return eps_uncond + scale * (eps_cond - eps_uncond)


def guided_eps_ho_salimans(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, w: float) -> torch.Tensor:
    """Ho & Salimans' convention: (1 + w) eps_cond - w eps_uncond; w = 0 is conditional. Equals guided_eps(s = 1 + w).

    Taught in chapter 12, D.1.
    """
    if eps_cond.shape != eps_uncond.shape:
        raise ValueError(f"eps_cond {tuple(eps_cond.shape)} and eps_uncond {tuple(eps_uncond.shape)} differ in shape")
    return (1 + w) * eps_cond - w * eps_uncond


class ClassifierFreeGuidance:
    """An ``EpsModel`` (x_t, t) -> eps_tilde for a fixed batch of labels: CFG around a class-conditional U-Net.

    One forward pass on the doubled batch [x; x] with labels [y; null] gives eps_cond and eps_uncond;
    scale 1 skips the unconditional half (plain conditional sampling).

    Taught in chapter 12, D.2.
    """

    def __init__(self, model: nn.Module, labels: torch.Tensor, scale: float):
        if getattr(model, "num_classes", None) is None:
            raise ValueError("ClassifierFreeGuidance needs a class-conditional model (UNet(num_classes=...))")
        self.model, self.labels, self.scale = model, torch.as_tensor(labels).long(), float(scale)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if len(x) != len(self.labels):
            raise ValueError(f"{len(x)} images but {len(self.labels)} labels: sample a batch of len(labels)")
        labels = self.labels.to(x.device)
        if self.scale == 1.0:
            return self.model(x, t, labels)
        null = torch.full_like(labels, self.model.num_classes)
        both = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))  # (2N, C, H, W)
        eps_cond, eps_uncond = both.chunk(2)
        return guided_eps(eps_cond, eps_uncond, self.scale)


class NullLabel:
    """The class-conditional model with the null label: its unconditional eps, as an ``EpsModel``. Chapter 12, D.2."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model(x, t, None)


@torch.inference_mode()  # no autograd bookkeeping at all: ~15% faster than no_grad on a CPU
def sample_cfg(model: nn.Module, labels: torch.Tensor, scale: float, schedule: NoiseSchedule | None = None, *,
               steps: int = 25, generator: torch.Generator | None = None, batch_size: int = 500,
               show_progress: bool = False) -> torch.Tensor:
    """Digits of the given ``labels`` (N,) with CFG at ``scale``: DDIM (eta = 0), ``steps`` steps -> (N, 1, 28, 28) in [0, 1].

    Taught in chapter 12, E.
    """
    schedule = schedule or NoiseSchedule.linear()
    device = next(model.parameters()).device
    labels = torch.as_tensor(labels).long()
    chunks = []
    for start in range(0, len(labels), batch_size):
        y = labels[start:start + batch_size].to(device)
        x = ddim_sample(ClassifierFreeGuidance(model, y, scale), (len(y), 1, 28, 28), schedule, steps=steps,
                        generator=generator, device=device, show_progress=show_progress)
        chunks.append(to_pixel_range(x).cpu())
    return torch.cat(chunks)


@torch.no_grad()
def evaluate_cfg(model: nn.Module, scales=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0), n: int = 500, steps: int = 25,
                 seed: int = 0, classifier=None, show_progress: bool = False) -> list[dict]:
    """The CFG trade-off: for each scale s, ``n`` samples (labels 0..9 in turn, the same x_T for every s),
    the shipped classifier's accuracy on the intended label, and the FID with its real-vs-real floor. Chapter 12, F."""

    classifier = classifier or shipped_classifier(next(model.parameters()).device)
    labels = torch.arange(n) % 10  # (n,) balanced
    rows = []
    for scale in tqdm(scales, desc="CFG sweep", disable=not show_progress, leave=False):
        images = sample_cfg(model, labels, scale, steps=steps, generator=torch.Generator().manual_seed(seed))
        predicted = classifier_outputs(images, classifier)[1].argmax(1)  # (n,)
        accuracy = (predicted == labels).double().mean().item()
        rows.append({"scale": float(scale), "label_accuracy": round(accuracy, 4), **quality_of_samples(images, classifier)})
    return rows


# ------------------------------------------------------------------------------------------ the 2-D mixture, exactly

def noised_mixture(mixture: GaussianMixture2D, schedule: NoiseSchedule, t: int) -> GaussianMixture2D:
    """The law p_t of x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps for x_0 from ``mixture``: again a mixture,
    means scaled by sqrt(alpha_bar_t), variances alpha_bar_t std^2 + 1 - alpha_bar_t, the same weights.

    Taught in chapter 12, A.
    """
    ab = float(schedule.alpha_bars[t])
    return GaussianMixture2D(mixture.means * ab ** 0.5, (ab * mixture.stds ** 2 + 1 - ab).sqrt(), mixture.weights)


def class_mixture(mixture: GaussianMixture2D, component_classes: torch.Tensor, label: int) -> GaussianMixture2D:
    """p(x | y = label): the components whose class is ``label``, their weights renormalised. Chapter 12, A."""
    keep = torch.as_tensor(component_classes) == label  # (K,) bool
    if not keep.any():
        raise ValueError(f"no component has class {label}; component_classes = {component_classes.tolist()}")
    weights = mixture.weights[keep]
    return GaussianMixture2D(mixture.means[keep], mixture.stds[keep], weights / weights.sum())


def class_log_prob(mixture: GaussianMixture2D, component_classes: torch.Tensor, x: torch.Tensor,
                   label: int) -> torch.Tensor:
    """log p(y = label | x) = log of the summed responsibilities of the class's components, shape (N,).
    Differentiable in x (it is the exact Bayes classifier of the mixture). Chapter 12, A."""
    keep = torch.as_tensor(component_classes) == label
    squared = ((x.double()[:, None, :] - mixture.means[None]) ** 2).sum(-1)  # (N, K)
    variances = mixture.stds ** 2
    log_joint = mixture.weights.log() - variances.log() - squared / (2 * variances)  # log p(x, k) + const
    return (torch.logsumexp(log_joint[:, keep], 1) - torch.logsumexp(log_joint, 1)).to(x.dtype)


def guided_log_density(p_t: GaussianMixture2D, p_t_given_c: GaussianMixture2D, x: torch.Tensor,
                       scale: float) -> torch.Tensor:
    """The log-density, up to a constant, whose score classifier-free guidance at scale s follows when its two
    eps's are exact: (1 - s) log p_t(x) + s log p_t(x | c), i.e. p_t(x)^(1 - s) p_t(x | c)^s, shape (N,).

    Taught in chapter 12, H.
    """
    return (1 - scale) * p_t.log_prob(x) + scale * p_t_given_c.log_prob(x)


class MixtureEps:
    """The exact eps of a 2-D mixture under a schedule, as an ``EpsModel``: eps(x_t, t) = -sqrt(1 - alpha_bar_t) score_t.

    Taught in chapter 12, B.
    """

    def __init__(self, mixture: GaussianMixture2D, schedule: NoiseSchedule):
        self.mixture, self.schedule = mixture, schedule

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        step = int(torch.as_tensor(t).reshape(-1)[0])  # a sampler's batch shares one t
        score = noised_mixture(self.mixture, self.schedule, step).score(x)  # (N, 2)
        return -float(self.schedule.sqrt_one_minus_alpha_bars[step]) * score


class ClassifierGuidance:
    """Classifier guidance as an ``EpsModel``: eps_gamma = eps(x_t) - gamma sqrt(1 - alpha_bar_t) grad_x log p(y | x_t, t).

    ``log_prob(x_t, t) -> (N,)`` is the log-probability of each example's target label under a
    noise-conditional classifier (a network, or an exact one). The gradient is taken by autograd even
    inside the samplers' ``torch.no_grad``.

    Taught in chapter 12, B.
    """

    def __init__(self, eps_model, log_prob, schedule: NoiseSchedule, scale: float):
        self.eps_model, self.log_prob, self.schedule, self.scale = eps_model, log_prob, schedule, float(scale)

    def classifier_grad(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """grad_x log p(y | x_t, t), same shape as x."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            return torch.autograd.grad(self.log_prob(x, t).sum(), x)[0]

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = self.eps_model(x, t)
        if self.scale == 0.0:
            return eps
        step = int(torch.as_tensor(t).reshape(-1)[0])
        return eps - self.scale * float(self.schedule.sqrt_one_minus_alpha_bars[step]) * self.classifier_grad(x, t)


# ------------------------------------------------------------------------------------------ a noise-conditional classifier

class NoisyDigitClassifier(nn.Module):
    """p_phi(y | x_t, t) for MNIST: (N, 1, 28, 28) in [-1, 1], (N,) integer t -> logits (N, 10). Chapter 12, C.

    Two conv stages (28 -> 14 -> 7) whose channels are shifted by an embedding of t, then a linear head.
    SiLU (smooth) rather than ReLU, so its input gradient, which guidance follows, is smooth too.
    """

    def __init__(self, channels: tuple[int, int] = (32, 64), emb_dim: int = 64, num_classes: int = 10):
        super().__init__()
        self.config = dict(channels=tuple(channels), emb_dim=emb_dim, num_classes=num_classes)
        c0, c1 = channels
        self.emb_dim = emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, c0 + c1))
        self.conv0 = nn.Conv2d(1, c0, 3, padding=1)
        self.conv1 = nn.Conv2d(c0, c1, 3, padding=1)
        self.head = nn.Linear(c1 * 7 * 7, num_classes)
        self.c0 = c0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
            raise ValueError(f"NoisyDigitClassifier expects (N, 1, 28, 28) images in [-1, 1], got {tuple(x.shape)}")
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(len(x)) if t.ndim == 0 else t
        shift = self.time_mlp(sinusoidal_embedding(t, self.emb_dim).to(x.device))  # (N, c0 + c1)
        h = F.silu(self.conv0(x) + shift[:, :self.c0, None, None])  # (N, c0, 28, 28)
        h = F.avg_pool2d(h, 2)  # (N, c0, 14, 14)
        h = F.silu(self.conv1(h) + shift[:, self.c0:, None, None])  # (N, c1, 14, 14)
        h = F.avg_pool2d(h, 2)  # (N, c1, 7, 7)
        return self.head(h.flatten(1))


def noisy_classifier_loss(model: nn.Module, x0: torch.Tensor, labels: torch.Tensor, schedule: NoiseSchedule,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Cross entropy of p_phi(y | x_t, t) with t ~ U{1..T} and x_t drawn from q(x_t | x_0), as in ddpm_loss.

    Taught in chapter 12, C.
    """
    t = torch.randint(1, schedule.T + 1, (len(x0),), generator=generator).to(x0.device)
    xt = schedule.q_sample(x0, t, torch.randn(x0.shape, generator=generator).to(x0.device))
    return F.cross_entropy(model(xt, t), labels)


def label_log_prob(classifier: nn.Module, labels: torch.Tensor):
    """``log_prob(x_t, t)`` for :class:`ClassifierGuidance`: log p_phi(labels | x_t, t), shape (N,). Chapter 12, C."""
    def log_prob(x, t):
        return torch.log_softmax(classifier(x, t), dim=1).gather(1, labels.to(x.device)[:, None])[:, 0]
    return log_prob


# ------------------------------------------------------------------------------------------ inpainting

def rectangle_mask(x0: int, y0: int, x1: int, y1: int, size: int = 28) -> torch.Tensor:
    """A (1, 1, size, size) mask that is 0 (unknown, to be generated) inside the rectangle
    columns x0..x1-1, rows y0..y1-1, and 1 (known) elsewhere. Chapter 12, G."""
    if not (0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size):
        raise ValueError(f"need 0 <= x0 < x1 <= {size} and 0 <= y0 < y1 <= {size}, got x0={x0}, x1={x1}, y0={y0}, y1={y1}")
    mask = torch.ones(1, 1, size, size)
    mask[..., y0:y1, x0:x1] = 0.0
    return mask


@torch.no_grad()
def inpaint(model, known: torch.Tensor, mask: torch.Tensor, schedule: NoiseSchedule, *, steps: int = 50,
            eta: float = 1.0, generator: torch.Generator | None = None, show_progress: bool = False) -> torch.Tensor:
    """Fill the pixels where ``mask`` is 0 with an unconditional ``model``, keeping the rest of ``known``.

    ``known`` (N, C, H, W) in the model's range [-1, 1]; ``mask`` broadcastable to it, 1 = known pixel.
    At every DDIM step (``eta = 1``: ancestral-like noise) the known pixels of x_{t_prev} are replaced by
    the forward-noised original q(x_{t_prev} | x_0), fresh noise each step (RePaint's replacement,
    without its resampling jumps). Returns x_0 in [-1, 1].

    Taught in chapter 12, G.
    """
    if mask.ndim != known.ndim:
        raise ValueError(f"mask {tuple(mask.shape)} must have as many dims as known {tuple(known.shape)}, e.g. (1, 1, H, W)")
    device = known.device
    mask = mask.to(device=device, dtype=known.dtype)

    def step(x, eps_hat, t, t_prev):
        noise = torch.randn(x.shape, generator=generator).to(device)
        x_prev = ddim_step(x, eps_hat, t, t_prev, schedule, eta=eta, noise=noise if t_prev > 0 else None, clip_x0=True)
        if t_prev > 0:
            known_prev = schedule.q_sample(known, t_prev, torch.randn(x.shape, generator=generator).to(device))
        else:
            known_prev = known
        return mask * known_prev + (1 - mask) * x_prev

    x_T = starting_noise(tuple(known.shape), generator, device, None)
    return walk_timesteps(model, x_T, ddim_timesteps(schedule.T, steps), step, 0, "inpainting", show_progress)


# ------------------------------------------------------------------------------------------ schematics

def classifier_guidance_schematic():
    """Classifier guidance: an unconditional eps-model plus the gradient of a noisy classifier, scaled by gamma.

    Taught in chapter 12, B.
    """
    fig, ax = canvas(11, 4.4, title="classifier guidance: one unconditional network, one noisy classifier")
    xt = box(ax, 1.0, 2.2, "$x_t$, $t$", w=1.2, role="data")
    eps = box(ax, 3.9, 3.2, "diffusion model\n$\\epsilon_\\theta(x_t, t)$", w=2.4, h=0.8, role="network")
    clf = box(ax, 3.9, 1.2, "noisy classifier\n$\\log p_\\phi(c \\mid x_t, t)$", w=2.4, h=0.8, role="network")
    label = box(ax, 3.9, 0.25, "class $c$", w=1.3, h=0.4, role="condition")
    grad = box(ax, 6.5, 1.2, "$\\nabla_{x_t}$ (autograd)", w=1.9, h=0.6, role="operation")
    mix = box(ax, 8.0, 2.2, "$\\epsilon_\\theta - \\gamma \\sqrt{1 - \\bar\\alpha_t}\\,\\nabla$", w=2.3, h=0.7,
              role="operation")
    out = box(ax, 10.2, 2.2, "DDIM step\n$\\to x_{t'}$", w=1.3, h=0.8, role="operation")
    arrow(ax, xt.right, eps.left)
    arrow(ax, xt.right, clf.left)
    arrow(ax, label.top, clf.bottom)
    arrow(ax, clf.right, grad.left)
    arrow(ax, eps.right, (mix.x - 0.4, mix.y + mix.h / 2), text="$\\epsilon$", text_offset=(0.3, 0.0))
    arrow(ax, grad.right, (mix.x - 0.4, mix.y - mix.h / 2))
    arrow(ax, mix.right, out.left)
    note(ax, 8.0, 3.4, "$\\gamma = 0$: unconditional\n$\\gamma = 1$: exactly $p_t(x \\mid c)$\n$\\gamma > 1$: sharper, less diverse")
    note(ax, 6.6, 0.45, "a backward pass through the\nclassifier at every step")
    legend(ax, ["data", "network", "operation", "condition"], loc="lower right")
    return fig


def cfg_schematic():
    """Classifier-free guidance: one network eps_theta(x_t, t, c) run twice, with the class c and with the null
    class, the two predictions mixed with s = 1 + w; trained with label dropout.

    Taught in chapter 12, D.1.
    """
    fig, ax = canvas(11, 6.1, title="classifier-free guidance: one network, two passes")
    # sampling, top
    xt = box(ax, 1.0, 4.35, "$x_t$, $t$", w=1.2, role="data")
    pass_c = box(ax, 3.7, 4.95, "$\\epsilon_\\theta(x_t, t, c)$", w=2.2, h=0.6, role="network")
    pass_0 = box(ax, 3.7, 3.75, "$\\epsilon_\\theta(x_t, t, \\varnothing)$", w=2.2, h=0.6, role="network")
    cond = box(ax, 1.0, 5.25, "class $c$", w=1.1, h=0.4, role="condition")
    null = box(ax, 1.0, 3.45, "null $\\varnothing$", w=1.1, h=0.4, role="condition")
    mix = box(ax, 7.1, 4.35, "$\\tilde\\epsilon = (1 + w)\\,\\epsilon_c - w\\,\\epsilon_\\varnothing$\n"
                             "$= s\\,\\epsilon_c + (1 - s)\\,\\epsilon_\\varnothing$", w=3.0, h=0.9, role="operation")
    out = box(ax, 9.95, 4.35, "DDIM step\n$\\to x_{t'}$", w=1.4, h=0.8, role="operation")
    arrow(ax, xt.right, pass_c.left)
    arrow(ax, xt.right, pass_0.left)
    arrow(ax, cond.right, (pass_c.x - pass_c.w / 2, pass_c.y + 0.2))
    arrow(ax, null.right, (pass_0.x - pass_0.w / 2, pass_0.y - 0.2))
    arrow(ax, pass_c.right, (mix.x - mix.w / 2, mix.y + 0.25), text="$\\epsilon_c$", text_offset=(0.0, 0.05))
    arrow(ax, pass_0.right, (mix.x - mix.w / 2, mix.y - 0.25), text="$\\epsilon_\\varnothing$", text_offset=(0.0, -0.4))
    arrow(ax, mix.right, out.left)
    note(ax, 3.7, 3.1, "the same weights (in code: one pass on the doubled batch)")
    note(ax, 7.1, 3.45, "$s = 1 + w$;  $s = 0$: unconditional, $s = 1$: conditional, $s > 1$: guided")
    # training, bottom
    ax.plot([0.3, 10.7], [2.7, 2.7], color="#bbbbbb", lw=0.8, ls="--")
    note(ax, 0.3, 2.45, "training", ha="left", fontsize=9)
    label = box(ax, 1.0, 1.5, "class $c$", w=1.1, h=0.45, role="condition")
    drop = box(ax, 3.2, 1.5, "$c \\to \\varnothing$ with\nprobability 0.2", w=1.9, h=0.7, role="operation")
    noisy = box(ax, 3.2, 0.7, "$x_t = \\sqrt{\\bar\\alpha_t}\\,x_0 + \\sqrt{1 - \\bar\\alpha_t}\\,\\epsilon$", w=3.1, h=0.4,
                role="data")
    net = box(ax, 6.0, 1.5, "$\\epsilon_\\theta(x_t, t, c)$", w=2.1, h=0.6, role="network")
    loss = box(ax, 8.9, 1.5, "$\\Vert \\epsilon - \\epsilon_\\theta \\Vert^2$", w=1.8, h=0.6, role="loss")
    arrow(ax, label.right, drop.left)
    arrow(ax, drop.right, net.left)
    arrow(ax, noisy.right, (net.x - 0.3, net.y - net.h / 2))
    arrow(ax, net.right, loss.left)
    legend(ax, ["data", "network", "operation", "condition", "loss"], loc="lower right")
    return fig
