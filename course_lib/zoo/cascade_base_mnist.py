"""``cascade_base_mnist``: chapter 15's first cascade stage, a class-conditional DDPM of 14x14 MNIST digits
(its EMA weights ship); the cascade's second stage is ``sr3_mnist``."""
from __future__ import annotations

import torch

from course_lib.core.layers import to_model_range, to_pixel_range
from course_lib.core.profiles import per_profile
from course_lib.core.runtime import device, seed_everything
from course_lib.core.train import minibatches
from course_lib.data import load_mnist
from course_lib.eval.fid import quality_of_samples, shipped_classifier
from course_lib.topics.diffusion import NoiseSchedule, ddim_sample, ddpm_loss
from course_lib.topics.sr3 import LowResUNet, cascade_sample, downsample
from course_lib.zoo.common import fit_with_ema, image_batch, label_batch, loss_step
from course_lib.zoo.ddpm_mnist import load_ddpm_mnist
from course_lib.zoo.record import Measurement, ShippedModel, Trained, load_shipped, mean_of_last, register

AUG_LEVELS = (0, 100)  # the SR stage's augmentation level s at sampling time, compared by the bench


def settings(active: str | None = None):
    """Chapter 11's L_simple on 2x2-average-pooled training digits with their labels; Adam with warm-up and cosine
    decay, EMA weights. ``shipped`` made the shipped checkpoint on 2 busy CPU cores (bf16)."""
    common = dict(widths=(32, 64), emb_dim=64, num_classes=10, T=1000, lr=2e-3)
    return per_profile(
        ci=dict(**common, steps=20, batch_size=32, ema_decay=0.9),
        cpu=dict(**common, steps=400, batch_size=64, ema_decay=0.99),
        shipped=dict(**common, steps=800, batch_size=32, ema_decay=0.99),
        gpu=dict(**common, steps=20_000, batch_size=128, ema_decay=0.999),
        active=active,
    )


def train(active: str | None = None, seed: int = 0, show_progress: bool = True, state_file=None) -> Trained:
    """The EMA weights are what ships."""
    s = settings(active)
    generator = seed_everything(seed)
    dev = device()
    x_train, y_train = load_mnist("train")
    low = downsample(to_model_range(x_train))  # (60000, 1, 14, 14) in [-1, 1]
    schedule = NoiseSchedule.linear(s.T)
    model = LowResUNet(widths=s.widths, emb_dim=s.emb_dim, num_classes=s.num_classes).to(dev)
    batches = minibatches(low, y_train, batch_size=s.batch_size, generator=generator)
    ema, history = fit_with_ema(model, lambda m, batch: ddpm_loss(m, batch[0], schedule, batch[1]), batches, s,
                                warmup_steps=max(s.steps // 10, 1), desc="14x14 base DDPM on MNIST",
                                show_progress=show_progress, state_file=state_file)
    metrics = {"final_train_loss": mean_of_last(history.losses, 100)}
    return Trained(ema.model, history, metrics, {"recipe": __name__, "seed": seed, "model": ema.model.config, **vars(s)})


@torch.no_grad()
def evaluate(model, entry, options, steps: int = 25) -> Measurement:
    """The cascade (this base, then ``sr3_mnist`` with the low-pass projection at augmentation levels s = 0 and 100)
    against the shipped 28x28
    ``ddpm_mnist``, all sampled now with DDIM-25 at the same n = min(fid_samples, 500) (labels 0-9 in turn for the
    cascade): FID on classifier features with the real-vs-real floor."""
    n = min(options.fid_samples, 500)
    schedule = NoiseSchedule.linear(entry["recipe"]["T"])
    sr = load_shipped("sr3_mnist")
    classifier = shipped_classifier()
    labels = torch.arange(n) % 10
    fids = {}
    for aug in AUG_LEVELS:
        _, high = cascade_sample(model, sr, labels, schedule, steps=steps, aug=aug, project=True,
                                 generator=torch.Generator().manual_seed(0))
        fids[aug] = quality_of_samples(to_pixel_range(high), classifier)
    unet, ddpm_schedule, _ = load_ddpm_mnist()
    ddpm = ddim_sample(unet, (n, 1, 28, 28), ddpm_schedule, steps=steps, generator=torch.Generator().manual_seed(0),
                       show_progress=False)
    ddpm_quality = quality_of_samples(to_pixel_range(ddpm), classifier)
    return Measurement(f"FID of the cascade (SR stage s=0, projected), n={n}, ddim-{steps}, classifier features",
                       fids[0]["fid"], {
                           "cascade with s=100": fids[100]["fid"],
                           "ddpm_mnist 28x28 (baseline), same n and sampler": ddpm_quality["fid"],
                           "real-vs-real floor at the same n": fids[0]["fid_floor"]})


def training_step(model, entry, precision):
    recipe = entry["recipe"]
    n, schedule = recipe["batch_size"], NoiseSchedule.linear(recipe.get("T", 1000))
    x, y = image_batch(n, size=14) * 2 - 1, label_batch(n)
    return loss_step(model, lambda m: ddpm_loss(m, x, schedule, y), precision), n


RECORD = register(ShippedModel(
    name="cascade_base_mnist", chapter="15", settings=settings, train=train,
    build=lambda entry: LowResUNet(**entry["recipe"]["model"]), evaluate=evaluate, training_step=training_step,
    resumable=True))
