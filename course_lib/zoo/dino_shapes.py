"""``dino_shapes``: chapter 05's tiny DINO on one-object shapes scenes (the EMA teacher ships)."""
from __future__ import annotations

import torch

from course_lib.core.profiles import per_profile
from course_lib.core.train import FAST
from course_lib.topics.dino import DINO, DINOTrainer, evaluate_dino, train_dino
from course_lib.zoo.common import image_batch, loss_step
from course_lib.zoo.record import Measurement, ShippedModel, Trained, mean_of_last, register


def settings(active: str | None = None):
    """32 x 32 scenes on striped backgrounds, fresh scenes every step.

    ViT 4 x 4 patches (an 8 x 8 grid), width 64, depth 3, 4 heads; head MLP(256) -> 64 -> l2 -> weight-normed
    linear to K = 256; 2 global crops 32 x 32 (scale 0.4-1) + 2 local 16 x 16 (0.05-0.4), flips, colour
    scaling; tau_s = 0.1, tau_t = 0.04, centre momentum 0.9, teacher EMA 0.99 -> 1 (cosine); AdamW 5e-4,
    weight decay 0.04, warm-up then cosine; gradients clipped at 3.
    """
    vit = dict(image_size=32, patch_size=4, channels=3, dim=64, depth=3, heads=4, mlp_ratio=2.0)
    head = dict(out_dim=256, hidden=256, bottleneck=64, layers=3)
    common = dict(vit=vit, head=head, lr=5e-4, weight_decay=0.04, tau_s=0.1, tau_t=0.04, center_momentum=0.9,
                  teacher_momentum_base=0.99, n_local=2, crop=dict(global_size=32, local_size=16),
                  clip_grad_norm=3.0, tokencut_quantile=0.3)
    return per_profile(
        ci=dict(**common, steps=15, batch_size=16, warmup_steps=2, eval_scenes=50),
        cpu=dict(**common, steps=1_500, batch_size=32, warmup_steps=150, eval_scenes=200),
        gpu=dict(**common, steps=2_000, batch_size=32, warmup_steps=200, eval_scenes=200),
        active=active,
    )


def train(active: str | None = None, seed: int = 0, show_progress: bool = True) -> Trained:
    s = settings(active)
    trainer, history = train_dino(s, seed=seed, show_progress=show_progress, **FAST)
    teacher = trainer.teacher.eval()
    last = trainer.log[-50:]
    metrics = {"final_train_loss": mean_of_last(history.losses, 50),
               "teacher_entropy": round(sum(d["teacher_entropy"] for d in last) / len(last), 4),
               "batch_mean_entropy": round(sum(d["batch_mean_entropy"] for d in last) / len(last), 4),
               "ln_K": round(last[-1]["ln_K"], 4),
               **evaluate_dino(teacher, n=s.eval_scenes, tokencut_quantile=s.tokencut_quantile)}
    recipe = {"recipe": __name__, "seed": seed, "model": teacher.config,
              "data": "course_lib.topics.dino.shapes_batches: make_shapes(**course_lib.topics.dino.shapes_settings()), "
                      "a new seed every batch", **vars(s)}
    return Trained(teacher, history, metrics, recipe)


def evaluate(model, entry, options) -> Measurement:
    """The best head's [CLS] attention (60%-mass mask) against the object masks of 200 held-out scenes."""
    r = evaluate_dino(model, n=200, tokencut_quantile=entry["recipe"]["tokencut_quantile"])
    best = r["best_head"]
    return Measurement("best-head [CLS] IoU, 60% mass, 200 scenes", r["best_head_iou"], {
        f"centre prior (best centred disc, r = {r['centre_prior_radius_patches']} patches)": r["centre_prior_iou"],
        "random-init ViT, best head": r["random_init_best_head_iou"],
        f"share of head {best}'s attention on the object": r["head_mass_on_object"][best],
        "object area": r["object_area"],
        f"TokenCut on the keys (tau = quantile {r['tokencut_quantile']})": r["tokencut_iou"],
        "TokenCut on random-init keys": r["random_init_tokencut_iou"]})


def training_step(model, entry, precision):
    recipe = entry["recipe"]
    trainer = DINOTrainer(model, total_steps=1000, n_local=recipe["n_local"], crop=recipe["crop"],
                          generator=torch.Generator().manual_seed(0))
    images = image_batch(recipe["batch_size"], channels=3, size=32)
    step = loss_step(model, lambda m: trainer.loss(images), precision)
    return (lambda: (step(), trainer.update_teacher())), recipe["batch_size"]


RECORD = register(ShippedModel(
    name="dino_shapes", chapter="05", settings=settings, train=train,
    build=lambda entry: DINO(**entry["recipe"]["model"]), evaluate=evaluate, training_step=training_step))
