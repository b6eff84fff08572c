"""``ldm_autoencoder``: chapter 13's KL-regularised autoencoder, 28x28 -> 4x7x7, with its latent scale factor."""
from __future__ import annotations

import torch

from course_lib.core.profiles import per_profile
from course_lib.core.runtime import device, seed_everything
from course_lib.core.train import FAST, fit, minibatches, warmup_cosine
from course_lib.data import load_mnist
from course_lib.eval.fid import quality_of_samples, real_split
from course_lib.topics.ldm import (KLAutoencoder, autoencoder_loss, decode_latents, encode_latents,
                                   evaluate_autoencoder, set_scale_factor)
from course_lib.zoo.common import image_batch, loss_step
from course_lib.zoo.record import Measurement, ShippedModel, Trained, against_bar, mean_of_last, register


def settings(active: str | None = None):
    """Summed squared pixel error + 1e-4 x KL, Adam with warm-up and cosine decay; the scale factor 1 / std is
    then computed on the training latents. 3,000 steps bring the decoded real digits to the FID floor."""
    common = dict(latent_channels=4, widths=(16, 32), kl_weight=1e-4, lr=2e-3)
    return per_profile(
        ci=dict(**common, n_train=5_000, steps=40, batch_size=64, warmup=5),
        cpu=dict(**common, n_train=60_000, steps=600, batch_size=128, warmup=30),
        gpu=dict(**common, n_train=60_000, steps=3_000, batch_size=128, warmup=150),
        active=active,
    )


def train(active: str | None = None, seed: int = 0, show_progress: bool = True, state_file=None) -> Trained:
    s = settings(active)
    generator = seed_everything(seed)
    dev = device()
    x_train = load_mnist("train")[0][:s.n_train]  # (n_train, 1, 28, 28) in [0, 1]
    model = KLAutoencoder(latent_channels=s.latent_channels, widths=s.widths).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    batches = minibatches(x_train, batch_size=s.batch_size, generator=generator)
    history = fit(model, lambda m, batch: autoencoder_loss(m, batch, s.kl_weight), batches, steps=s.steps,
                  optimizer=optimizer, device=dev, scheduler=warmup_cosine(optimizer, s.warmup, s.steps),
                  desc="KL autoencoder on MNIST", show_progress=show_progress, state_file=state_file, **FAST)
    factor = set_scale_factor(model, x_train[:10_000])
    test = evaluate_autoencoder(model, load_mnist("test")[0])
    metrics = {"test_mse_per_pixel": round(test["mse_per_pixel"], 5), "test_psnr_db": round(test["psnr_db"], 2),
               "test_kl_per_image": round(test["kl_per_image"], 1), "scale_factor": round(factor, 5),
               "final_train_loss": round(mean_of_last(history.losses, 50), 3)}
    return Trained(model, history, metrics, {"recipe": __name__, "seed": seed, "model": model.config, **vars(s)})


def reconstruction_quality(model: KLAutoencoder, n: int = 500) -> dict:
    """FID of n real test digits encoded and decoded (the twin set of the FID's reference digits), with the
    real-vs-real floor: the best any latent model on this autoencoder can reach."""
    _, twin = real_split(n, load_mnist("test")[0])
    return quality_of_samples(decode_latents(model, encode_latents(model, twin)))


def evaluate(model, entry, options) -> Measurement:
    """Reconstruction error (from mu) on the 10,000 test digits, the reconstructions' FID, the scale factor."""
    x_test = load_mnist("test")[0]
    r = evaluate_autoencoder(model, x_test)
    fid = reconstruction_quality(model, min(options.fid_samples, 500))
    return Measurement("recon. MSE/pixel from mu, 10k test digits", r["mse_per_pixel"], {
        "PSNR dB": r["psnr_db"], f"FID of decoded real digits, n={fid['fid_n']}": fid["fid"],
        "real-vs-real FID floor at the same n": fid["fid_floor"],
        "that FID's bar": against_bar(fid["fid"], fid["fid_floor"], 1.5),
        "every pixel 0": x_test.pow(2).mean().item(),
        "the mean training digit": (x_test - load_mnist("train")[0].mean(0)).pow(2).mean().item(),
        "values per digit": "28x28 -> 4x7x7 (4x fewer)", "scale factor": float(model.scale_factor),
        "std of the scaled test latents (target 1)": encode_latents(model, x_test).std().item()})


def training_step(model, entry, precision):
    recipe = entry["recipe"]
    x = image_batch(recipe["batch_size"])
    return loss_step(model, lambda m: autoencoder_loss(m, (x,), recipe["kl_weight"]), precision), recipe["batch_size"]


RECORD = register(ShippedModel(
    name="ldm_autoencoder", chapter="13", settings=settings, train=train,
    build=lambda entry: KLAutoencoder(**entry["recipe"]["model"]), evaluate=evaluate, training_step=training_step,
    resumable=True))
