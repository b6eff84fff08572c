"""``vae_mnist``: chapter 08's conv VAE with a 16-d latent on binarized MNIST (``vae_mnist_2d`` shares its training)."""
from __future__ import annotations

import torch

from course_lib.core.profiles import per_profile
from course_lib.core.runtime import device, seed_everything
from course_lib.core.train import FAST, fit, minibatches, warmup_cosine
from course_lib.data import load_mnist
from course_lib.topics.vae import ConvVAE, binarized_mnist, evaluate_elbo, evaluate_iwae, independent_pixel_nll, vae_loss
from course_lib.zoo.common import image_batch, loss_step
from course_lib.zoo.record import Measurement, ShippedModel, Trained, register

BINARIZATION = ("Bernoulli likelihood on binarized pixels: training images re-binarized every batch (dynamic), "
                "test images binarized once with torch.bernoulli and seed 0 (course_lib.topics.vae.binarized_mnist)")


def vae_settings(latent_dim: int, gpu_steps: int, max_test_neg_elbo: tuple[float, float, float], active):
    """The conv VAE's settings per profile; only the latent size, the long run and the bars differ."""
    ci_bar, cpu_bar, gpu_bar = max_test_neg_elbo
    common = dict(latent_dim=latent_dim, channels=(32, 64), hidden=128, lr=2e-3)
    return per_profile(
        ci=dict(**common, n_train=5_000, steps=60, batch_size=64, warmup=10, iwae_k=0, max_test_neg_elbo=ci_bar),
        cpu=dict(**common, n_train=60_000, steps=2_000, batch_size=128, warmup=100, iwae_k=100,
                 max_test_neg_elbo=cpu_bar),
        gpu=dict(**common, n_train=60_000, steps=gpu_steps, batch_size=128, warmup=200, iwae_k=100,
                 max_test_neg_elbo=gpu_bar),
        active=active,
    )


def train_vae(name: str, s, seed: int, show_progress: bool) -> Trained:
    """Adam with warm-up and cosine decay; metrics in nats per image on the test set binarized once."""
    generator = seed_everything(seed)
    dev = device()
    x_train = load_mnist("train")[0][:s.n_train]  # grey values; vae_loss binarizes each batch afresh
    x_test = binarized_mnist("test", seed=0)  # (10000, 1, 28, 28) of 0/1, fixed
    model = ConvVAE(latent_dim=s.latent_dim, channels=s.channels, hidden=s.hidden).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    batches = minibatches(x_train, batch_size=s.batch_size, generator=generator)
    history = fit(model, vae_loss, batches, steps=s.steps, optimizer=optimizer, device=dev,
                  scheduler=warmup_cosine(optimizer, s.warmup, s.steps),
                  eval_fn=lambda m: evaluate_elbo(m, x_test[:2000]), eval_every=max(s.steps // 5, 1),
                  desc=f"VAE (latent {s.latent_dim}) on MNIST", show_progress=show_progress, **FAST)
    test = evaluate_elbo(model, x_test)
    metrics = {"test_neg_elbo_nats": round(test["neg_elbo"], 2),
               "test_reconstruction_nats": round(test["reconstruction"], 2), "test_kl_nats": round(test["kl"], 2)}
    if s.iwae_k:
        metrics[f"test_neg_iwae_k{s.iwae_k}_nats"] = round(evaluate_iwae(model, x_test, k=s.iwae_k), 2)
    recipe = {"recipe": f"course_lib.zoo.{name}", "seed": seed, "model": model.config, "data": BINARIZATION, **vars(s)}
    return Trained(model, history, metrics, recipe)


def evaluate_vae(model, entry, references: dict) -> Measurement:
    """Test -ELBO in nats per image on MNIST's test set binarized once (seed 0), with the IWAE bounds of the
    manifest and the no-latent baseline."""
    x_test = binarized_mnist("test", seed=0)
    iwae = {f"-L_{key.split('_k')[1].split('_')[0]} (manifest)": value
            for key, value in entry["metrics"].items() if key.startswith("test_neg_iwae")}
    return Measurement("test -ELBO nats/image, binarized seed 0", evaluate_elbo(model, x_test)["neg_elbo"], {
        **iwae, **references, "no latent (independent pixels)": independent_pixel_nll(load_mnist("train")[0], x_test)})


def vae_step(model, entry, precision):
    n = entry["recipe"]["batch_size"]
    x = image_batch(n)
    return loss_step(model, lambda m: vae_loss(m, (x,)), precision), n


def settings(active: str | None = None):
    """16-d latent."""
    return vae_settings(16, gpu_steps=12_000, max_test_neg_elbo=(260.0, 105.0, 95.0), active=active)


def train(active: str | None = None, seed: int = 0, show_progress: bool = True) -> Trained:
    return train_vae("vae_mnist", settings(active), seed, show_progress)


RECORD = register(ShippedModel(
    name="vae_mnist", chapter="08", settings=settings, train=train,
    build=lambda entry: ConvVAE(**entry["recipe"]["model"]),
    evaluate=lambda model, entry, options: evaluate_vae(model, entry, {
        "target": "<= 95",
        "-log p(x), K = 5000, 1-layer MLP VAE, dynamic binarization (Burda et al. 2016)": 86.76,
        "pytorch/examples (grey targets: not comparable)": "~104"}),
    training_step=vae_step))
