"""``gan_mnist``: chapter 09's DCGAN on MNIST (the generator ships)."""
from __future__ import annotations

import torch

from course_lib.core import checkpointing
from course_lib.core.profiles import per_profile
from course_lib.core.runtime import device, seed_everything
from course_lib.core.train import FAST
from course_lib.data import load_mnist
from course_lib.topics.gan import (DCGANDiscriminator, DCGANGenerator, gan_step, generator_quality,
                                   recalibrate_batchnorm, train_dcgan)
from course_lib.zoo.common import image_batch
from course_lib.zoo.record import Measurement, ShippedModel, Trained, against_bar, mean_of_last, register


def settings(active: str | None = None):
    """The non-saturating loss, k = 1, Adam(2e-4, betas (0.5, 0.999)) for both nets (Radford et al. 2016);
    latent 64, width 32 (a three-stage generator); the last weights ship, their BatchNorm statistics
    recalibrated at the end; FID at n = 2,000. ``ema_decay`` would ship an EMA of the weights instead:
    measured after 10,000 steps, EMA 0.999 gave FID 29.2 against 27.3 for the last weights, so it is off.
    ``shipped`` made the shipped checkpoint on 2 CPU cores; ``gpu`` is wider and longer."""
    common = dict(latent_dim=64, batch_size=64, lr=2e-4, betas=(0.5, 0.999), ema_decay=None)
    return per_profile(
        ci=dict(**common, width=32, n_train=5_000, steps=30, fid_samples=0),
        cpu=dict(**common, width=32, n_train=60_000, steps=2_500, fid_samples=2_000),
        shipped=dict(**common, width=32, n_train=60_000, steps=18_000, fid_samples=2_000),
        gpu=dict(**common, width=64, n_train=60_000, steps=50_000, fid_samples=2_000),
        active=active,
    )


def train(active: str | None = None, seed: int = 0, show_progress: bool = True, state_file=None) -> Trained:
    """The generator that ships: its EMA weights when ``ema_decay`` is set (then the metrics also give the FID of
    the last weights), else the last weights."""
    s = settings(active)
    seed_everything(seed)
    G, D = DCGANGenerator(latent_dim=s.latent_dim, width=s.width), DCGANDiscriminator(width=s.width)
    history = train_dcgan(G, D, load_mnist("train")[0][:s.n_train], steps=s.steps, batch_size=s.batch_size, lr=s.lr,
                          betas=s.betas, seed=seed, device=device(), ema_decay=s.ema_decay,
                          show_progress=show_progress, precision=FAST["precision"], state_file=state_file)
    last_weights, shipped = G, G if history.ema_generator is None else history.ema_generator
    recalibrate_batchnorm(shipped, seed=seed)
    if last_weights is not shipped:
        recalibrate_batchnorm(last_weights, seed=seed)
    last = history.evals[-20:]
    metrics = {"final_d_loss": mean_of_last(history.losses, 200),
               "final_d_real": round(sum(e["d_real"] for _, e in last) / len(last), 4),
               "final_d_fake": round(sum(e["d_fake"] for _, e in last) / len(last), 4)}
    if s.fid_samples and "mnist_classifier" in checkpointing.read_manifest():
        metrics.update(generator_quality(shipped, n=s.fid_samples, seed=seed))
        if last_weights is not shipped:
            metrics["fid_last_weights_no_ema"] = generator_quality(last_weights, n=s.fid_samples, seed=seed)["fid"]
    return Trained(shipped, history, metrics, {"recipe": __name__, "seed": seed, "model": shipped.config, **vars(s)})


def evaluate(model, entry, options) -> Measurement:
    """FID of its samples on the classifier's features, next to the real-vs-real floor (the same reference
    digits, floor and n as ddpm_mnist, so the two compare)."""
    r = generator_quality(model, n=options.fid_samples)
    ddpm = checkpointing.read_manifest().get("ddpm_mnist", {}).get("metrics", {})
    return Measurement(f"FID, classifier features, n={r['fid_n']}, GAN", r["fid"], {
        "real-vs-real floor at the same n": r["fid_floor"], "bar": against_bar(r["fid"], r["fid_floor"], 5),
        f"ddpm_mnist (manifest, n={ddpm.get('fid_n', 'n/a')})": ddpm.get("fid", "n/a"),
        "label entropy per image": r["per_image_label_entropy"],
        "label entropy of the mix (ln 10 = 2.303)": r["marginal_label_entropy"]})


def training_step(G, entry, precision):
    """Chapter 09's round: a discriminator step and a generator step on one batch."""
    recipe = entry["recipe"]
    D = DCGANDiscriminator(width=recipe["width"])
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-4, betas=(0.5, 0.999))
    n = recipe["batch_size"]
    real, z = image_batch(n) * 2 - 1, torch.randn(n, G.latent_dim, generator=torch.Generator().manual_seed(0))
    return (lambda: gan_step(G, D, real, z, opt_g, opt_d, precision=precision)), n


RECORD = register(ShippedModel(
    name="gan_mnist", chapter="09", settings=settings, train=train,
    build=lambda entry: DCGANGenerator(**entry["recipe"]["model"]), evaluate=evaluate, training_step=training_step,
    resumable=True))
