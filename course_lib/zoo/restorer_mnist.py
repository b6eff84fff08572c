"""What ``restorer_mnist_l2``, ``restorer_mnist_perceptual`` and ``restorer_mnist_adversarial`` share: chapter 15's 4x
super-resolution restorer (7 x 7 -> 28 x 28 MNIST) trained with three losses. Each has its own record module
(``restorer_mnist_<kind>.py``), built by :func:`record_for`."""
from __future__ import annotations

import time

from course_lib.core import checkpointing
from course_lib.core.profiles import per_profile
from course_lib.core.runtime import device
from course_lib.core.train import FAST, History, resolve_precision
from course_lib.data import load_mnist
from course_lib.topics import restoration
from course_lib.zoo.common import image_batch, loss_step
from course_lib.zoo.record import Measurement, ShippedModel, Trained, mean_of_last


def settings(active: str | None = None):
    """Restorer width 32; Adam(1e-3, betas (0.5, 0.999)), halved at 60% and 85% of the steps; batches of 32
    fresh random training digits, y = their 4 x 4 average pool. Perceptual weight 1.0 on the shipped
    classifier's two conv feature maps (measured: 0.1 changed almost nothing, PSNR 20.53 and FID 34.4 against
    20.51 and 36.7 for L2 alone at n = 1,000); adversarial weight 0.01 on the non-saturating loss of a chapter-09
    DCGAN discriminator (one D step per restorer step). PSNR and FID measured on ``n_eval`` test digits."""
    common = dict(width=32, batch_size=32, lr=1e-3, perceptual_weight=1.0, adversarial_weight=0.01)
    return per_profile(
        ci=dict(**common, steps=20, n_eval=200),
        cpu=dict(**common, steps=1_500, n_eval=1_000),
        gpu=dict(**common, steps=10_000, n_eval=2_000),
        active=active,
    )


def _measure(model, n: int) -> dict:
    truth, reference = restoration.benchmark_split(n)
    y = restoration.downsample(truth)
    rows = restoration.evaluate_restorations(
        {"model": restoration.restore(model, y), "bicubic": restoration.upsample(y, "bicubic"),
         "nearest": restoration.upsample(y, "nearest")}, truth, reference)
    return rows


def make_train(kind: str):
    def train(active: str | None = None, seed: int = 0, show_progress: bool = True) -> Trained:
        """Metrics: PSNR (dB) and FID (classifier features) on held-out test digits, with the bicubic
        baseline and the real-vs-real floor."""
        s = settings(active)
        start = time.perf_counter()
        model, losses = restoration.train_restorer(
            kind, load_mnist("train")[0], steps=s.steps, batch_size=s.batch_size, lr=s.lr, width=s.width,
            perceptual_weight=s.perceptual_weight, adversarial_weight=s.adversarial_weight, seed=seed,
            device=device(), precision=FAST["precision"], show_progress=show_progress)
        history = History(wall_time_s=time.perf_counter() - start,
                          precision=resolve_precision(FAST["precision"], device()))
        history.losses = losses["loss"]
        metrics = {"final_train_loss": mean_of_last(losses["loss"], 50),
                   "final_train_l2": mean_of_last(losses["l2"], 50)}
        if "mnist_classifier" in checkpointing.read_manifest():
            rows = _measure(model.cpu(), s.n_eval)
            metrics.update({"psnr": round(rows["model"]["psnr"], 3), "fid": round(rows["model"]["fid"], 3),
                            "fid_floor": round(rows["truth"]["fid"], 3),
                            "bicubic_psnr": round(rows["bicubic"]["psnr"], 3),
                            "bicubic_fid": round(rows["bicubic"]["fid"], 3), "eval_n": s.n_eval})
        recipe = {"recipe": __name__, "kind": kind, "seed": seed, "model": model.config,
                  "data": "MNIST train digits, y = 4x4 average pool (course_lib.topics.restoration.downsample)",
                  **vars(s)}
        return Trained(model, history, metrics, recipe)
    return train


def evaluate(model, entry, options) -> Measurement:
    """PSNR on n = fid_samples held-out test digits (7 x 7 -> 28 x 28), with FID, its real-vs-real floor and
    the bicubic and nearest upsampling baselines."""
    n = options.fid_samples
    rows = _measure(model, n)
    kind = entry["recipe"]["kind"]
    return Measurement(f"4x SR PSNR (dB), n={n} test digits, {kind} loss", round(rows["model"]["psnr"], 3), {
        f"FID (classifier features, n={n})": round(rows["model"]["fid"], 2),
        "FID real-vs-real floor": round(rows["truth"]["fid"], 2),
        "bicubic PSNR / FID": f"{rows['bicubic']['psnr']:.2f} / {rows['bicubic']['fid']:.1f}",
        "nearest PSNR / FID": f"{rows['nearest']['psnr']:.2f} / {rows['nearest']['fid']:.1f}"})


def training_step(model, entry, precision):
    """One L2 step on stand-in digits (the perceptual and adversarial terms add a frozen classifier or a
    discriminator step on top)."""
    n = entry["recipe"]["batch_size"]
    x = image_batch(n)
    y = restoration.downsample(x)
    return loss_step(model, lambda m: restoration.restorer_loss("l2", m(y), x), precision), n


def record_for(kind: str) -> ShippedModel:
    """The (unregistered) record of ``restorer_mnist_<kind>``; each ``restorer_mnist_<kind>.py`` registers its own."""
    return ShippedModel(
        name=f"restorer_mnist_{kind}", chapter="15", settings=settings, train=make_train(kind),
        build=lambda entry: restoration.Restorer(**entry["recipe"]["model"]), evaluate=evaluate,
        training_step=training_step)
