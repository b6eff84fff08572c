"""``colorize_shapes``: chapter 15's unconditional DDPM of 28x28 colour shapes scenes, used to colorize gray scenes by
replacing the gray coordinate (Song et al. 2021); its EMA weights ship."""
from __future__ import annotations

import torch

from course_lib.core.profiles import per_profile
from course_lib.core.runtime import device, seed_everything
from course_lib.core.train import fit, minibatches
from course_lib.topics.diffusion import NoiseSchedule, ddpm_loss
from course_lib.topics.sr3 import L2Regressor, chroma, colorize, colour_unet, gray_of, shapes_scenes
from course_lib.zoo.common import fit_with_ema, image_batch, loss_step
from course_lib.zoo.record import Measurement, ShippedModel, Trained, mean_of_last, register

HELD_OUT_SEED = 999  # scenes the model never saw


def settings(active: str | None = None):
    """L_simple on ``n_train`` fixed scenes (1-2 objects, radius 4-8, random colours); Adam with warm-up and cosine
    decay, EMA weights. ``shipped`` made the shipped checkpoint on 2 busy CPU cores (bf16)."""
    common = dict(widths=(16, 32, 64), emb_dim=64, T=1000, lr=2e-3)
    return per_profile(
        ci=dict(**common, n_train=256, steps=20, batch_size=16, ema_decay=0.9),
        cpu=dict(**common, n_train=4_000, steps=300, batch_size=32, ema_decay=0.99),
        shipped=dict(**common, n_train=4_000, steps=500, batch_size=24, ema_decay=0.99),
        gpu=dict(**common, n_train=50_000, steps=10_000, batch_size=128, ema_decay=0.999),
        active=active,
    )


def train(active: str | None = None, seed: int = 0, show_progress: bool = True, state_file=None) -> Trained:
    """The EMA weights are what ships."""
    s = settings(active)
    generator = seed_everything(seed)
    dev = device()
    scenes = shapes_scenes(s.n_train, seed=seed)  # (n, 3, 28, 28) in [-1, 1]
    schedule = NoiseSchedule.linear(s.T)
    model = colour_unet(widths=s.widths, emb_dim=s.emb_dim).to(dev)
    batches = minibatches(scenes, batch_size=s.batch_size, generator=generator)
    ema, history = fit_with_ema(model, lambda m, batch: ddpm_loss(m, batch[0], schedule), batches, s,
                                warmup_steps=max(s.steps // 10, 1), desc="colour shapes DDPM",
                                show_progress=show_progress, state_file=state_file)
    metrics = {"final_train_loss": mean_of_last(history.losses, 100)}
    return Trained(ema.model, history, metrics, {"recipe": __name__, "seed": seed, "model": ema.model.config, **vars(s)})


def train_l2_colorizer(steps: int = 300, batch_size: int = 32, seed: int = 0) -> L2Regressor:
    """The L2 baseline: gray -> RGB with a plain MSE loss on fresh scenes (its optimum is E[rgb | gray])."""
    generator = seed_everything(seed)
    scenes = shapes_scenes(4_000, seed=seed + 1)
    model = L2Regressor(in_channels=1, out_channels=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    batches = minibatches(scenes, batch_size=batch_size, generator=generator)
    fit(model, lambda m, b: ((m(gray_of(b[0])) - b[0]) ** 2).mean(), batches, steps=steps, optimizer=optimizer,
        desc="L2 colorizer", show_progress=False)
    return model.eval()


def evaluate(model, entry, options, steps: int = 25) -> Measurement:
    """Mean chroma (distance from the gray axis, pixel units) of 200 held-out scenes colorized from their gray
    coordinate (DDIM-25, eta = 1) against the real scenes' chroma and the L2 colorizer's (trained now, 300 steps),
    and the largest change of the gray coordinate (should be ~0)."""
    schedule = NoiseSchedule.linear(entry["recipe"]["T"])
    real = shapes_scenes(200, seed=HELD_OUT_SEED)
    gray = gray_of(real)
    colour = colorize(model, gray, schedule, steps=steps, generator=torch.Generator().manual_seed(0))
    l2_model = train_l2_colorizer()
    with torch.no_grad():
        l2 = l2_model(gray)
    return Measurement(f"mean chroma of diffusion colorizations, n=200, ddim-{steps}",
                       round(float(chroma(colour).mean()), 4), {
                           "real scenes": round(float(chroma(real).mean()), 4),
                           "L2 colorizer (baseline; the posterior mean)": round(float(chroma(l2).mean()), 4),
                           "max |gray change|": float((gray_of(colour) - gray).abs().max())})


def training_step(model, entry, precision):
    recipe = entry["recipe"]
    n, schedule = recipe["batch_size"], NoiseSchedule.linear(recipe.get("T", 1000))
    x = image_batch(n, channels=3) * 2 - 1
    return loss_step(model, lambda m: ddpm_loss(m, x, schedule), precision), n


RECORD = register(ShippedModel(
    name="colorize_shapes", chapter="15", settings=settings, train=train,
    build=lambda entry: colour_unet(**{k: entry["recipe"]["model"][k] for k in ("widths", "emb_dim")}),
    evaluate=evaluate, training_step=training_step, resumable=True))
