"""``dit_mnist``: chapter 13's class-conditional DiT on the shipped ``ldm_autoencoder``'s latents (EMA weights ship)."""
from __future__ import annotations

import time

import torch

from course_lib.core import checkpointing
from course_lib.core.layers import to_pixel_range
from course_lib.core.profiles import per_profile
from course_lib.core.runtime import device, seed_everything
from course_lib.core.train import minibatches
from course_lib.data import load_mnist
from course_lib.eval.fid import quality_of_samples
from course_lib.topics.diffusion import NoiseSchedule, ddim_sample
from course_lib.topics.dit import DiT
from course_lib.topics.ldm import balanced_labels, encode_latents, latent_ddpm_loss, sample_latent_diffusion
from course_lib.zoo.common import fit_with_ema, label_batch, loss_step
from course_lib.zoo.ddpm_mnist import load_ddpm_mnist
from course_lib.zoo.record import Measurement, ShippedModel, Trained, against_bar, load_shipped, mean_of_last, register


def settings(active: str | None = None):
    """Patch size 1 on the scaled 4x7x7 latents (49 tokens, each a 4x4-pixel patch of the digit), L_simple with
    10% label dropout, AdamW with warm-up and cosine decay, EMA weights (with warm-up); FID at n = 500 with DDIM
    25 steps. ``shipped`` made the shipped checkpoint on 2 CPU cores (bf16); ``gpu`` trains longer with larger
    batches."""
    model = dict(input_size=7, patch_size=1, in_channels=4, dim=64, depth=4, heads=4, mlp_ratio=4.0, num_classes=10)
    common = dict(model=model, T=1000, lr=1e-3, label_dropout=0.1)
    return per_profile(
        ci=dict(**common, n_train=2_000, steps=30, batch_size=32, ema_decay=0.9, fid_samples=0, ddim_steps=25),
        cpu=dict(**common, n_train=60_000, steps=400, batch_size=128, ema_decay=0.99, fid_samples=0, ddim_steps=25),
        shipped=dict(**common, n_train=60_000, steps=10_000, batch_size=128, ema_decay=0.999, fid_samples=500,
                     ddim_steps=25),
        gpu=dict(**common, n_train=60_000, steps=50_000, batch_size=256, ema_decay=0.9995, fid_samples=500,
                 ddim_steps=25),
        active=active,
    )


def train(active: str | None = None, seed: int = 0, show_progress: bool = True, state_file=None) -> Trained:
    """On the latents of the shipped autoencoder (its sha256 goes into the metrics)."""
    s = settings(active)
    generator = seed_everything(seed)
    dev = device()
    autoencoder = load_shipped("ldm_autoencoder", dev)
    x_train, y_train = load_mnist("train")
    z_train = encode_latents(autoencoder, x_train[:s.n_train])  # (n, 4, 7, 7), scaled: unit variance
    schedule = NoiseSchedule.linear(s.T)
    model = DiT(**s.model).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=0.0)
    batches = minibatches(z_train, y_train[:s.n_train], batch_size=s.batch_size, generator=generator)
    ema, history = fit_with_ema(model, lambda m, b: latent_ddpm_loss(m, b[0], b[1], schedule, s.label_dropout),
                                batches, s, warmup_steps=max(s.steps // 20, 1), desc="DiT on MNIST latents",
                                show_progress=show_progress, state_file=state_file, optimizer=optimizer)
    metrics = {"final_train_loss": mean_of_last(history.losses, 100),
               "autoencoder_sha256": checkpointing.read_manifest()["ldm_autoencoder"]["sha256"][:12]}
    if s.fid_samples and "mnist_classifier" in checkpointing.read_manifest():
        samples = sample_latent_diffusion(ema.model, autoencoder, balanced_labels(s.fid_samples), schedule,
                                          steps=s.ddim_steps, generator=torch.Generator().manual_seed(seed))
        metrics.update(quality_of_samples(samples))
    return Trained(ema.model, history, metrics, {"recipe": __name__, "seed": seed, **vars(s), "model": ema.model.config})


def evaluate(model, entry, options, steps: int = 25, guidance_scale: float = 5.0) -> Measurement:
    """Against pixel-space ddpm_mnist, both sampled now with DDIM (same steps, same n = min(fid_samples, 500)):
    FID (unguided and with classifier-free guidance at s = 5) with the floor, and the sampling time per image."""
    n = min(options.fid_samples, 500)
    autoencoder = load_shipped("ldm_autoencoder")
    schedule = NoiseSchedule.linear(entry["recipe"]["T"])
    start = time.perf_counter()
    samples = sample_latent_diffusion(model, autoencoder, balanced_labels(n), schedule, steps=steps,
                                      generator=torch.Generator().manual_seed(0))
    latent_ms = 1000 * (time.perf_counter() - start) / n
    guided = sample_latent_diffusion(model, autoencoder, balanced_labels(n), schedule, steps=steps,
                                     guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(0))
    pixel_unet, pixel_schedule, _ = load_ddpm_mnist()
    start = time.perf_counter()
    pixel = ddim_sample(pixel_unet, (n, 1, 28, 28), pixel_schedule, steps=steps,
                        generator=torch.Generator().manual_seed(0), show_progress=False)
    pixel_ms = 1000 * (time.perf_counter() - start) / n
    r, r_guided, r_pixel = quality_of_samples(samples), quality_of_samples(guided), quality_of_samples(to_pixel_range(pixel))
    return Measurement(f"FID, classifier features, n={r['fid_n']}, ddim-{steps}, latent", r["fid"], {
        "real-vs-real floor at the same n": r["fid_floor"], "bar": against_bar(r["fid"], r["fid_floor"], 3),
        f"with CFG s = {guidance_scale:g}": r_guided["fid"],
        "pixel-space ddpm_mnist (unconditional), same n and steps": r_pixel["fid"],
        "sampling ms/image, latent DiT + decoder": latent_ms, "sampling ms/image, pixel U-Net": pixel_ms,
        "label entropy per image": r["per_image_label_entropy"],
        "label entropy of the mix": r["marginal_label_entropy"]})


def training_step(model, entry, precision):
    recipe = entry["recipe"]
    n, schedule = recipe["batch_size"], NoiseSchedule.linear(recipe.get("T", 1000))
    z = torch.randn(n, model.in_channels, model.input_size, model.input_size, generator=torch.Generator().manual_seed(0))
    y = label_batch(n)
    return loss_step(model, lambda m: latent_ddpm_loss(m, z, y, schedule, recipe["label_dropout"]), precision), n


RECORD = register(ShippedModel(
    name="dit_mnist", chapter="13", settings=settings, train=train,
    build=lambda entry: DiT(**entry["recipe"]["model"]), evaluate=evaluate, training_step=training_step,
    resumable=True))
