"""``vae_mnist_2d``: chapter 08's conv VAE with a 2-D latent, for the latent-grid, interpolation and beta widgets."""
from __future__ import annotations

from course_lib.topics.vae import ConvVAE
from course_lib.zoo.record import ShippedModel, Trained, register
from course_lib.zoo.vae_mnist import evaluate_vae, train_vae, vae_settings, vae_step


def settings(active: str | None = None):
    """The same VAE as ``vae_mnist`` with a 2-D latent."""
    return vae_settings(2, gpu_steps=6_000, max_test_neg_elbo=(270.0, 160.0, 150.0), active=active)


def train(active: str | None = None, seed: int = 0, show_progress: bool = True) -> Trained:
    return train_vae("vae_mnist_2d", settings(active), seed, show_progress)


RECORD = register(ShippedModel(
    name="vae_mnist_2d", chapter="08", settings=settings, train=train,
    build=lambda entry: ConvVAE(**entry["recipe"]["model"]),
    evaluate=lambda model, entry, options: evaluate_vae(model, entry, {
        "note": "a 2-D latent pays ~50 nats more than vae_mnist's 16-d one, for a latent space you can draw"}),
    training_step=vae_step))
