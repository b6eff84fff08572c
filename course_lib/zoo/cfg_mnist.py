"""``cfg_mnist``: chapter 12's class-conditional U-Net for classifier-free guidance (its EMA weights ship)."""
from __future__ import annotations

from course_lib.core import checkpointing
from course_lib.core.layers import to_model_range
from course_lib.core.profiles import per_profile
from course_lib.core.runtime import device, seed_everything
from course_lib.core.train import minibatches
from course_lib.data import load_mnist
from course_lib.topics.diffusion import NoiseSchedule
from course_lib.topics.guidance import cfg_loss, evaluate_cfg
from course_lib.topics.unet import UNet
from course_lib.zoo.common import fit_with_ema, image_batch, label_batch, loss_step
from course_lib.zoo.record import Measurement, ShippedModel, Trained, mean_of_last, register

SCALES = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)  # the sweep the bench measures (course convention: s = 1 is plain conditional)


def settings(active: str | None = None):
    """Chapter 11's L_simple with the label replaced by the null token (label 10) 20% of the time; Adam with warm-up
    and cosine decay, EMA weights. The gpu settings trained in 884 s on one busy CPU thread; ``eval_*`` is the CFG
    check at the end."""
    common = dict(widths=(16, 32, 64), num_classes=10, p_uncond=0.2, T=1000, lr=2e-3, eval_steps=25)
    return per_profile(
        ci=dict(**common, steps=20, batch_size=32, ema_decay=0.9, eval_samples=0, eval_scales=(3.0,)),
        cpu=dict(**common, steps=500, batch_size=128, ema_decay=0.99, eval_samples=0, eval_scales=(3.0,)),
        gpu=dict(**common, steps=1_400, batch_size=64, ema_decay=0.995, eval_samples=500, eval_scales=(1.0, 3.0)),
        active=active,
    )


def train(active: str | None = None, seed: int = 0, show_progress: bool = True, state_file=None) -> Trained:
    """The EMA weights are what ships."""
    s = settings(active)
    generator = seed_everything(seed)
    dev = device()
    x_train, y_train = load_mnist("train")
    x_train = to_model_range(x_train)  # (60000, 1, 28, 28) in [-1, 1]
    schedule = NoiseSchedule.linear(s.T)
    model = UNet(widths=s.widths, num_classes=s.num_classes).to(dev)
    batches = minibatches(x_train, y_train, batch_size=s.batch_size, generator=generator)
    ema, history = fit_with_ema(model, lambda m, batch: cfg_loss(m, batch[0], batch[1], schedule, s.p_uncond),
                                batches, s, warmup_steps=min(200, s.steps // 10), desc="CFG U-Net on MNIST",
                                show_progress=show_progress, state_file=state_file)
    metrics = {"final_train_loss": mean_of_last(history.losses, 100)}
    if s.eval_samples and "mnist_classifier" in checkpointing.read_manifest():
        for row in evaluate_cfg(ema.model, s.eval_scales, n=s.eval_samples, steps=s.eval_steps, seed=seed):
            metrics[f"s{row['scale']:g}"] = {k: row[k] for k in ("label_accuracy", "fid", "fid_floor", "fid_n")}
    return Trained(ema.model, history, metrics, {"recipe": __name__, "seed": seed, "model": ema.model.config, **vars(s)})


def evaluate(model, entry, options) -> Measurement:
    """For each scale s, the shipped classifier's accuracy on the intended label and the FID (classifier features)
    with its floor; n = min(fid_samples, 500) samples per s (labels 0-9 in turn), DDIM-10 (few steps: 55,000 U-Net
    image evaluations in all, about 4 min on 2 busy CPU cores; ``--fid-samples 100`` takes ~30 s)."""
    n, steps = min(options.fid_samples, 500), 10
    rows = evaluate_cfg(model, SCALES, n=n, steps=steps)
    best = max(rows, key=lambda row: row["label_accuracy"])
    return Measurement(f"label acc at best s, n={n}/s, ddim-{steps}", best["label_accuracy"], {
        "best s": best["scale"], "target": ">= 0.95",
        "s": [row["scale"] for row in rows], "label accuracy": [row["label_accuracy"] for row in rows],
        "FID": [row["fid"] for row in rows], "real-vs-real FID floor at the same n": rows[0]["fid_floor"]})


def training_step(model, entry, precision):
    recipe = entry["recipe"]
    n, schedule = recipe["batch_size"], NoiseSchedule.linear(recipe.get("T", 1000))
    x, y = image_batch(n) * 2 - 1, label_batch(n)
    return loss_step(model, lambda m: cfg_loss(m, x, y, schedule, recipe["p_uncond"]), precision), n


RECORD = register(ShippedModel(
    name="cfg_mnist", chapter="12", settings=settings, train=train,
    build=lambda entry: UNet(**entry["recipe"]["model"]), evaluate=evaluate, training_step=training_step,
    resumable=True))
