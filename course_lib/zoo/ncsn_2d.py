"""``ncsn_2d``: chapter 10's noise-conditional score network on ``course_lib.topics.score.toy_mixture()`` (8 modes)."""
from __future__ import annotations

import torch

from course_lib.core.profiles import per_profile
from course_lib.core.runtime import device, seed_everything
from course_lib.core.train import fit, minibatches, warmup_cosine
from course_lib.topics.score import NoiseConditionalScoreNet, evaluate_ncsn, geometric_sigmas, ncsn_loss, toy_mixture
from course_lib.zoo.common import loss_step
from course_lib.zoo.record import Measurement, ShippedModel, Trained, mean_of_last, register


def settings(active: str | None = None):
    """Ten geometric noise levels from sigma_max = 8 (the data's diameter) to sigma_min = 0.1, the
    sigma^2-weighted DSM loss, Adam with warm-up and cosine decay; sampled by annealed Langevin
    with eps = 2e-3 (so alpha_i / sigma_i^2 = eps / sigma_min^2 = 0.2) and ``steps_per_level`` steps per level.
    Trained in fp32: a 2-D MLP gains nothing from bf16, and score matching at small sigma wants the precision."""
    return per_profile(
        ci=dict(n_train=100_000, steps=300, batch_size=256, lr=2e-3, hidden=128, sigma_max=8.0, sigma_min=0.1,
                n_levels=10, eps=2e-3, steps_per_level=100, eval_samples=500),
        cpu=dict(n_train=100_000, steps=10_000, batch_size=512, lr=2e-3, hidden=128, sigma_max=8.0, sigma_min=0.1,
                 n_levels=10, eps=2e-3, steps_per_level=100, eval_samples=2_000),
        gpu=dict(n_train=100_000, steps=30_000, batch_size=1_024, lr=2e-3, hidden=128, sigma_max=8.0, sigma_min=0.1,
                 n_levels=10, eps=2e-3, steps_per_level=100, eval_samples=2_000),
        active=active,
    )


def train(active: str | None = None, seed: int = 0, show_progress: bool = True) -> Trained:
    s = settings(active)
    generator = seed_everything(seed)
    dev = device()
    x_train = toy_mixture().sample(s.n_train, generator)  # (n_train, 2)
    sigmas = geometric_sigmas(s.sigma_max, s.sigma_min, s.n_levels)  # (L,)
    model = NoiseConditionalScoreNet(hidden=s.hidden).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    batches = minibatches(x_train, batch_size=s.batch_size, generator=generator)
    history = fit(model, lambda m, batch: ncsn_loss(m, batch[0], sigmas, generator), batches, steps=s.steps,
                  optimizer=optimizer, device=dev, scheduler=warmup_cosine(optimizer, s.steps // 20, s.steps),
                  desc="NCSN on 2-D", show_progress=show_progress)
    metrics = {"final_train_loss": mean_of_last(history.losses, 200),
               **evaluate_ncsn(model, sigmas, n=s.eval_samples, seed=seed, eps=s.eps, steps_per_level=s.steps_per_level)}
    return Trained(model, history, metrics, {"recipe": __name__, "seed": seed, "model": model.config, **vars(s)})


def evaluate(model, entry, options) -> Measurement:
    """Annealed-Langevin samples against the true mixture, and score errors."""
    recipe = entry["recipe"]
    sigmas = geometric_sigmas(recipe["sigma_max"], recipe["sigma_min"], recipe["n_levels"])
    r = evaluate_ncsn(model, sigmas, n=2000, seed=1, eps=recipe["eps"], steps_per_level=recipe["steps_per_level"])
    errors = [value for key, value in r.items() if key.startswith("score_rel_error")]
    return Measurement("energy distance to true 2-D samples, n=2000", r["energy_distance"], {
        "true-vs-true floor at the same n": r["energy_distance_floor"],
        "mode-weight TV (0 = exact weights; plain Langevin ~0.3)": r["mode_weight_tv"],
        f"relative score error at sigma = {recipe['sigma_max']:g} / mid / {recipe['sigma_min']:g}": errors})


def training_step(model, entry, precision):
    recipe = entry["recipe"]
    sigmas = geometric_sigmas(recipe["sigma_max"], recipe["sigma_min"], recipe["n_levels"])
    x = torch.randn(recipe["batch_size"], 2, generator=torch.Generator().manual_seed(0))
    return loss_step(model, lambda m: ncsn_loss(m, x, sigmas), precision), recipe["batch_size"]


RECORD = register(ShippedModel(
    name="ncsn_2d", chapter="10", settings=settings, train=train,
    build=lambda entry: NoiseConditionalScoreNet(**entry["recipe"]["model"]), evaluate=evaluate,
    training_step=training_step))
