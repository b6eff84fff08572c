"""``python -m course_lib.bench --throughput``: how fast each shipped model trains on this machine.

For every shipped model, one training step (forward, backward, optimizer) of its recipe's loss on a batch of
its recipe's size, timed in fp32 and on the fast path (:data:`course_lib.train.FAST`: bf16 autocast where the
hardware has it, channels_last for convolutions in fp32), side by side in one run. Beside the times: images
(or points) per second, and the achieved GFLOP/s, the step's floating-point operations counted by
``torch.utils.flop_counter.FlopCounterMode`` divided by its time, against the machine's measured peak for a
large fp32 and bf16 matrix product. Small models do not come near the peak: their steps are short, and time
goes to the many small kernels, normalisation and the optimizer, not to matrix products.
"""
from __future__ import annotations

import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from . import clip, detr, dino, guidance, ldm
from .backprop import mlp_loss
from .cnn import classification_loss
from .diffusion import NoiseSchedule, ddpm_loss
from .gan import DCGANDiscriminator, gan_step
from .score import geometric_sigmas, ncsn_loss
from .train import autocast, resolve_precision
from .vae import vae_loss

Step = Callable[[], None]  # one training step, closed over its model, batch and optimizer


def _images(n: int, channels: int = 1, size: int = 28, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def _labels(n: int, classes: int = 10, seed: int = 1) -> torch.Tensor:
    return torch.randint(classes, (n,), generator=torch.Generator().manual_seed(seed))


def _loss_step(model: torch.nn.Module, loss: Callable[[torch.nn.Module], torch.Tensor], precision: str) -> Step:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        with autocast(precision):
            value = loss(model)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
    return step


def _gan_step(generator: torch.nn.Module, entry: dict, precision: str) -> Step:
    """Chapter 09's round: a discriminator step and a generator step on one batch."""
    recipe = entry["recipe"]
    discriminator = DCGANDiscriminator(width=recipe["width"])
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=1e-4, betas=(0.5, 0.999))
    real, z = _images(recipe["batch_size"]) * 2 - 1, torch.randn(recipe["batch_size"], generator.latent_dim)
    return lambda: gan_step(generator, discriminator, real, z, opt_g, opt_d, precision=precision)


def _dino_step(model: torch.nn.Module, entry: dict, precision: str) -> Step:
    recipe = entry["recipe"]
    trainer = dino.DINOTrainer(model, total_steps=1000, n_local=recipe["n_local"], crop=recipe["crop"],
                               generator=torch.Generator().manual_seed(0))
    images = _images(recipe["batch_size"], channels=3, size=32)
    step = _loss_step(model, lambda m: trainer.loss(images), precision)
    return lambda: (step(), trainer.update_teacher())


def training_step(name: str, model: torch.nn.Module, entry: dict, precision: str) -> tuple[Step, int]:
    """One training step of shipped model ``name`` (built from its manifest ``entry``) and the images (or 2-D
    points) it processes."""
    recipe = entry["recipe"]
    n = recipe.get("batch_size", 128)
    schedule = NoiseSchedule.linear(recipe.get("T", 1000))
    x, y = _images(n), _labels(n)
    losses = {
        "mlp_mnist": lambda m: mlp_loss(m, (x, y)),
        "mnist_classifier": lambda m: mlp_loss(m, (x, y)),
        "vit_mnist": lambda m: classification_loss(m, (x, y)),
        "cnn_fashion": lambda m: classification_loss(m, (x, y)),
        "ddpm_mnist": lambda m: ddpm_loss(m, x * 2 - 1, schedule),
        "cfg_mnist": lambda m: guidance.cfg_loss(m, x * 2 - 1, y, schedule, recipe.get("p_uncond", 0.2)),
        "vae_mnist": lambda m: vae_loss(m, (x,)),
        "vae_mnist_2d": lambda m: vae_loss(m, (x,)),
        "mae_mnist": lambda m: m(x, recipe.get("mask_ratio", 0.75))[0],
        "ldm_autoencoder": lambda m: ldm.autoencoder_loss(m, (x,), recipe.get("kl_weight", 1e-4)),
        "ncsn_2d": lambda m: ncsn_loss(m, torch.randn(n, 2), geometric_sigmas(8.0, 0.1, 10)),
        "dit_mnist": lambda m: ldm.latent_ddpm_loss(m, torch.randn(n, m.in_channels, m.input_size, m.input_size),
                                                    y, schedule, recipe.get("label_dropout", 0.1)),
    }
    if name in losses:
        return _loss_step(model, losses[name], precision), n
    if name == "gan_mnist":
        return _gan_step(model, entry, precision), n
    if name == "dino_shapes":
        return _dino_step(model, entry, precision), n
    if name == "detr_shapes":
        batch = next(detr.shapes_batches(n))
        return _loss_step(model, lambda m: detr.training_loss(m, batch), precision), n
    if name == "clip_mnist":
        table = clip.caption_table(model.tokenizer)
        return _loss_step(model, lambda m: clip.clip_training_loss(m, (x, y), table), precision), n
    raise KeyError(f"no training step known for {name!r}: add it to course_lib.throughput.training_step")


def _median_ms(step: Step, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2]


def flops_per_step(step: Step) -> int:
    """Floating-point operations of one step (matrix products and convolutions, forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def peak_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a large square matrix product in ``dtype``: what this machine reaches at best."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=generator).to(dtype) for _ in range(2))
    ms = _median_ms(lambda: a @ b, repeats)
    return 2 * size ** 3 / (ms / 1000) / 1e9


def measure(name: str, build: Callable[[], torch.nn.Module], entry: dict, repeats: int = 5) -> dict:
    """fp32 and fast-path ms/step of shipped model ``name`` (a fresh model from ``build()`` for each)."""
    fast = resolve_precision("auto")
    row = {"name": name}
    for label, precision in (("fp32", "fp32"), ("fast", fast)):
        torch.manual_seed(0)
        step, n = training_step(name, build().train(), entry, precision)
        row[f"{label}_ms"] = _median_ms(step, repeats)
        row["batch"] = n
    step, _ = training_step(name, build().train(), entry, "fp32")
    row["gflop_per_step"] = flops_per_step(step) / 1e9
    row["fast_precision"] = fast
    return row


def report(rows: list[dict], peaks: dict) -> str:
    """The throughput table, as text."""
    lines = [f"peak of a 2048 x 2048 matrix product on this machine: fp32 {peaks['fp32']:.0f} GFLOP/s, "
             f"bf16 {peaks['bf16']:.0f} GFLOP/s; {torch.get_num_threads()} torch threads",
             f"{'model':<16} {'batch':>5} {'fp32 ms':>8} {'fast ms':>8} {'speed-up':>8} {'fast':>5} "
             f"{'img/s':>7} {'GFLOP/step':>10} {'GFLOP/s':>8} {'% of peak':>9}"]
    for r in rows:
        ms = r["fast_ms"]
        achieved = r["gflop_per_step"] / (ms / 1000)
        peak = peaks["bf16" if r["fast_precision"] == "bf16" else "fp32"]
        lines.append(f"{r['name']:<16} {r['batch']:>5} {r['fp32_ms']:>8.1f} {ms:>8.1f} {r['fp32_ms'] / ms:>7.2f}x "
                     f"{r['fast_precision']:>5} {1000 * r['batch'] / ms:>7.0f} {r['gflop_per_step']:>10.3f} "
                     f"{achieved:>8.1f} {100 * achieved / peak:>8.1f}%")
    return "\n".join(lines)
