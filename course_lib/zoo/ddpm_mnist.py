"""``ddpm_mnist``: chapter 11's U-Net DDPM on MNIST (its EMA weights ship)."""
from __future__ import annotations

import torch

from course_lib.core import checkpointing
from course_lib.core.layers import to_model_range
from course_lib.core.profiles import per_profile
from course_lib.core.runtime import device, seed_everything
from course_lib.core.train import minibatches
from course_lib.data import load_mnist
from course_lib.topics.diffusion import NoiseSchedule, ddpm_loss, sampler_quality
from course_lib.topics.unet import UNet
from course_lib.zoo.common import fit_with_ema, image_batch, loss_step
from course_lib.zoo.record import Measurement, ShippedModel, Trained, against_bar, load_shipped, mean_of_last, register


def settings(active: str | None = None):
    """L_simple, Adam with warm-up and cosine decay, EMA weights (with warm-up).

    ``cpu`` is the learner's run in chapter 11 (bf16 where the CPU has it: under 5 minutes on 2 cores);
    ``shipped`` made the shipped checkpoint (2 CPU cores, bf16, under 2 hours); ``gpu`` is the full recipe, a
    wider U-Net trained longer."""
    return per_profile(
        ci=dict(widths=(16, 32, 64), steps=20, batch_size=32, lr=1e-3, ema_decay=0.9, T=1000, fid_samples=0),
        cpu=dict(widths=(16, 32, 64), steps=1_000, batch_size=128, lr=2e-3, ema_decay=0.995, T=1000, fid_samples=0),
        shipped=dict(widths=(16, 32, 64), steps=15_000, batch_size=128, lr=2e-3, ema_decay=0.999, T=1000,
                     fid_samples=2_000),
        gpu=dict(widths=(32, 64, 128), steps=60_000, batch_size=256, lr=2e-3, ema_decay=0.9995, T=1000,
                 fid_samples=2_000),
        active=active,
    )


def train(active: str | None = None, seed: int = 0, show_progress: bool = True, state_file=None) -> Trained:
    """The EMA weights are what ships."""
    s = settings(active)
    generator = seed_everything(seed)
    dev = device()
    x_train = to_model_range(load_mnist("train")[0])  # (60000, 1, 28, 28) in [-1, 1]
    schedule = NoiseSchedule.linear(s.T)
    model = UNet(widths=s.widths).to(dev)
    batches = minibatches(x_train, batch_size=s.batch_size, generator=generator)
    ema, history = fit_with_ema(model, lambda m, batch: ddpm_loss(m, batch[0], schedule), batches, s,
                                warmup_steps=min(200, s.steps // 10), desc="DDPM on MNIST",
                                show_progress=show_progress, state_file=state_file)
    metrics = {"final_train_loss": mean_of_last(history.losses, 100)}
    if s.fid_samples and "mnist_classifier" in checkpointing.read_manifest():
        metrics.update(sampler_quality(ema.model, n=s.fid_samples, sampler="ddim", steps=50, seed=seed))
    recipe = {"recipe": __name__, "seed": seed, "model": ema.model.config, **vars(s)}
    return Trained(ema.model, history, metrics, recipe)


def load_ddpm_mnist(device: torch.device | str = "cpu", directory=None) -> tuple[UNet, NoiseSchedule, dict]:
    """The shipped MNIST DDPM (EMA weights), its noise schedule and its manifest entry.

    The U-Net's configuration is read from the manifest (``recipe["model"]``), so the weights always
    meet the architecture that made them. ``directory`` defaults to the shipped folder.
    """
    directory = checkpointing.CHECKPOINT_DIR if directory is None else directory
    model = load_shipped("ddpm_mnist", device, directory)
    entry = checkpointing.read_manifest(directory)["ddpm_mnist"]
    return model, NoiseSchedule.linear(entry["recipe"].get("T", 1000)), entry


def evaluate(model, entry, options) -> Measurement:
    """FID of DDIM-50 samples on the classifier's features, with the real-vs-real floor."""
    r = sampler_quality(model, n=options.fid_samples, sampler="ddim", steps=50, show_progress=False)
    return Measurement(f"FID, classifier features, n={r['fid_n']}, {r['sampler']}", r["fid"], {
        "real-vs-real floor at the same n": r["fid_floor"], "bar": against_bar(r["fid"], r["fid_floor"], 3),
        "label entropy per image": r["per_image_label_entropy"],
        "label entropy of the mix (ln 10 = 2.303)": r["marginal_label_entropy"]})


def unet_step(model, entry, precision):
    """L_simple on a batch of the recipe's size (labels for a class-conditional U-Net)."""
    recipe = entry["recipe"]
    n, schedule = recipe["batch_size"], NoiseSchedule.linear(recipe.get("T", 1000))
    x = image_batch(n) * 2 - 1
    return loss_step(model, lambda m: ddpm_loss(m, x, schedule), precision), n


RECORD = register(ShippedModel(
    name="ddpm_mnist", chapter="11", settings=settings, train=train,
    build=lambda entry: UNet(**entry["recipe"]["model"]), evaluate=evaluate, training_step=unet_step,
    resumable=True))
