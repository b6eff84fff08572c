"""``mae_mnist``: chapter 05's masked autoencoder on MNIST (4 x 4 patches, 75% masked, raw-pixel targets)."""
from __future__ import annotations

from course_lib.core.profiles import per_profile
from course_lib.core.train import FAST
from course_lib.data import load_mnist
from course_lib.topics.mae import MAE, evaluate_mae, train_mae
from course_lib.zoo.common import image_batch, loss_step
from course_lib.zoo.record import Measurement, ShippedModel, Trained, register


def settings(active: str | None = None):
    """Encoder: chapter 04's ViT (width 64, depth 4, 4 heads) on the 12 visible patches; decoder width 64,
    depth 2. AdamW (betas 0.9, 0.95; weight decay 0.05), warm-up then cosine."""
    model = dict(image_size=28, patch_size=4, channels=1, dim=64, depth=4, heads=4, mlp_ratio=2.0, decoder_dim=64,
                 decoder_depth=2, decoder_heads=4, normalize_target=False)
    common = dict(model=model, mask_ratio=0.75, lr=2e-3, weight_decay=0.05, betas=(0.9, 0.95))
    return per_profile(
        ci=dict(**common, n_train=5_000, steps=20, batch_size=64, warmup_steps=2, eval_images=500),
        cpu=dict(**common, n_train=60_000, steps=1_500, batch_size=128, warmup_steps=75, eval_images=10_000),
        gpu=dict(**common, n_train=60_000, steps=3_000, batch_size=128, warmup_steps=150, eval_images=10_000),
        active=active,
    )


def train(active: str | None = None, seed: int = 0, show_progress: bool = True) -> Trained:
    """Metrics: MSE per pixel on the masked patches."""
    s = settings(active)
    model, history, metrics = train_mae(s, seed=seed, show_progress=show_progress, **FAST)
    return Trained(model, history, metrics, {"recipe": __name__, "seed": seed, **vars(s)})


def evaluate(model, entry, options) -> Measurement:
    """Per-pixel MSE on the hidden patches of the 10,000 test digits (75% masked, fixed masks)."""
    r = evaluate_mae(model, load_mnist("test")[0], entry["recipe"]["mask_ratio"], seed=0)
    return Measurement("masked-patch MSE/pixel, 75% hidden, 10k", r["masked_mse"], {
        "mean-fill baseline (each hidden pixel = the mean of the visible ones)": r["mean_fill_mse"],
        "target": "raw pixels in [0, 1]"})


def training_step(model, entry, precision):
    recipe = entry["recipe"]
    x = image_batch(recipe["batch_size"])
    return loss_step(model, lambda m: m(x, recipe["mask_ratio"])[0], precision), recipe["batch_size"]


RECORD = register(ShippedModel(
    name="mae_mnist", chapter="05", settings=settings, train=train,
    build=lambda entry: MAE(**entry["recipe"]["model"]), evaluate=evaluate, training_step=training_step))
