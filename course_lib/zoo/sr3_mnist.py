"""``sr3_mnist``: chapter 15's SR3 super-resolution stage, 14x14 -> 28x28 MNIST, trained with noise-conditioning
augmentation (its EMA weights ship)."""
from __future__ import annotations

import torch

from course_lib.core.layers import to_model_range, to_pixel_range
from course_lib.core.profiles import per_profile
from course_lib.core.runtime import device, seed_everything
from course_lib.core.train import minibatches
from course_lib.data import load_mnist
from course_lib.eval.fid import fid, real_split, shipped_classifier
from course_lib.topics.diffusion import NoiseSchedule
from course_lib.topics.sr3 import SR3UNet, consistency_error, downsample, sr3_loss, super_resolve, upsample
from course_lib.zoo.common import fit_with_ema, image_batch, loss_step
from course_lib.zoo.record import Measurement, ShippedModel, Trained, mean_of_last, register


def settings(active: str | None = None):
    """L_simple on (x_t, upsample(y_tilde)) with y = 2x2-average-pooled training digits; half of the batch sees y
    augmented at a level s ~ U{1..max_aug} (Ho et al. 2022). Adam with warm-up and cosine decay, EMA weights.
    ``shipped`` made the shipped checkpoint on 2 busy CPU cores (bf16)."""
    common = dict(widths=(16, 32, 64), emb_dim=64, T=1000, lr=2e-3, max_aug=250, p_aug=0.5)
    return per_profile(
        ci=dict(**common, steps=20, batch_size=16, ema_decay=0.9),
        cpu=dict(**common, steps=300, batch_size=32, ema_decay=0.99),
        shipped=dict(**common, steps=500, batch_size=32, ema_decay=0.99),
        gpu=dict(**common, steps=10_000, batch_size=128, ema_decay=0.999),
        active=active,
    )


def train(active: str | None = None, seed: int = 0, show_progress: bool = True, state_file=None) -> Trained:
    """The EMA weights are what ships."""
    s = settings(active)
    generator = seed_everything(seed)
    dev = device()
    x_train = to_model_range(load_mnist("train")[0])  # (60000, 1, 28, 28) in [-1, 1]
    schedule = NoiseSchedule.linear(s.T)
    model = SR3UNet(widths=s.widths, emb_dim=s.emb_dim).to(dev)
    batches = minibatches(x_train, batch_size=s.batch_size, generator=generator)

    def loss(m, batch):
        return sr3_loss(m, batch[0], downsample(batch[0]), schedule, max_aug=s.max_aug, p_aug=s.p_aug)

    ema, history = fit_with_ema(model, loss, batches, s, warmup_steps=max(s.steps // 10, 1), desc="SR3 14->28 on MNIST",
                                show_progress=show_progress, state_file=state_file)
    metrics = {"final_train_loss": mean_of_last(history.losses, 100)}
    return Trained(ema.model, history, metrics, {"recipe": __name__, "seed": seed, "model": ema.model.config, **vars(s)})


@torch.no_grad()
def evaluate(model, entry, options, steps: int = 25) -> Measurement:
    """n = min(fid_samples, 500) held-out test digits x, y = downsample(x): FID (classifier features, against another
    n test digits) of SR3(y) (DDIM-25, s = 0, with the low-pass projection, and plain), of bicubic upsample(y), and
    of x itself (the real-vs-real floor);
    and the consistency error RMS(downsample(x_hat) - y) in pixel units."""
    n = min(options.fid_samples, 500)
    schedule = NoiseSchedule.linear(entry["recipe"]["T"])
    reference, held_out = real_split(n, load_mnist("test")[0])
    x = to_model_range(held_out)
    y = downsample(x)
    sr = super_resolve(model, y, schedule, steps=steps, project=True, generator=torch.Generator().manual_seed(0))
    plain = super_resolve(model, y, schedule, steps=steps, generator=torch.Generator().manual_seed(0))
    bicubic = upsample(y).clamp(-1, 1)
    classifier = shipped_classifier()
    fid_sr = fid(to_pixel_range(sr), reference, classifier)
    return Measurement(f"FID of SR3(y) (projected), n={n}, ddim-{steps}, classifier features", round(fid_sr, 3), {
        "FID of the plain SR3 sampler": round(fid(to_pixel_range(plain), reference, classifier), 3),
        "consistency, plain SR3 sampler": round(consistency_error(plain, y), 4),
        "bicubic upsampling FID (baseline)": round(fid(to_pixel_range(bicubic), reference, classifier), 3),
        "real-vs-real floor (the originals x)": round(fid(held_out, reference, classifier), 3),
        "consistency RMS(down(x_hat) - y), SR3": round(consistency_error(sr, y), 4),
        "consistency, bicubic": round(consistency_error(bicubic, y), 4)})


def training_step(model, entry, precision):
    recipe = entry["recipe"]
    n, schedule = recipe["batch_size"], NoiseSchedule.linear(recipe.get("T", 1000))
    x = image_batch(n) * 2 - 1
    return loss_step(model, lambda m: sr3_loss(m, x, downsample(x), schedule, max_aug=recipe["max_aug"]), precision), n


RECORD = register(ShippedModel(
    name="sr3_mnist", chapter="15", settings=settings, train=train,
    build=lambda entry: SR3UNet(**entry["recipe"]["model"]), evaluate=evaluate, training_step=training_step,
    resumable=True))
