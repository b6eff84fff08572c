"""``sam_shapes``: chapter 14's tiny Segment Anything on nested shapes scenes (48 x 48, one point prompt)."""
from __future__ import annotations

from course_lib.core.profiles import per_profile
from course_lib.core.runtime import device
from course_lib.core.train import FAST
from course_lib.topics import sam
from course_lib.zoo.common import loss_step
from course_lib.zoo.record import Measurement, ShippedModel, Trained, mean_of_last, register


def device_has_accelerator() -> bool:
    return device().type != "cpu"


def settings(active: str | None = None):
    """TinySAM width 64, 4 heads, 2 two-way layers, 3 candidate masks; min-over-candidates BCE + Dice plus the IoU
    MSE; AdamW lr 1e-3, weight decay 1e-4, warm-up then cosine, gradients clipped at 1. Fresh scenes every step."""
    model = dict(dim=64, image_size=48, layers=2, heads=4, num_masks=3)
    common = dict(model=model, lr=1e-3, weight_decay=1e-4)
    return per_profile(
        ci=dict(**common, steps=20, batch_size=8, warmup_steps=2, eval_prompts=100),
        cpu=dict(**common, steps=1_800, batch_size=16, warmup_steps=90, eval_prompts=500),
        gpu=dict(**common, steps=5_000, batch_size=32, warmup_steps=250, eval_prompts=500),
        active=active,
    )


def train(active: str | None = None, seed: int = 0, show_progress: bool = True) -> Trained:
    """Metrics: mean IoU of the highest-predicted-IoU candidate on held-out prompts, and the oracle best of 3."""
    s = settings(active)
    # fp32, not FAST: on this CPU the attention layers ran slower under bf16 autocast (0.63 vs 0.35 CPU-s a step)
    fast = FAST if device_has_accelerator() else dict(precision="fp32")
    model, history = sam.train_sam(s, seed=seed, show_progress=show_progress, **fast)
    data = {k: v[:s.eval_prompts] for k, v in sam.evaluation_prompts(s.eval_prompts).items()}
    result = sam.evaluate_sam(model.cpu(), data)
    metrics = {"chosen_miou": round(result["chosen"], 4), "oracle_miou": round(result["oracle"], 4),
               "iou_mae": round(result["iou_mae"], 4), "final_train_loss": mean_of_last(history.losses, 50)}
    recipe = {"recipe": __name__, "seed": seed, "model": model.config,
              "data": "course_lib.topics.sam.prompt_batches: nested_scenes(48) + sample_prompts, a new seed every batch",
              **vars(s)}
    return Trained(model, history, metrics, recipe)


def evaluate(model, entry, options) -> Measurement:
    """Mean IoU over 500 held-out prompts of the candidate with the highest predicted IoU (each against the closer of
    the prompt's meanings), against two flood-fill baselines and the oracle best of the three candidates."""
    data = sam.evaluation_prompts(500)
    r = sam.evaluate_sam(model, data)
    return Measurement("mean IoU of the top-predicted-IoU mask, 500 held-out point prompts (48x48 nested shapes)",
                       r["chosen"], {
                           **sam.baseline_scores(data),
                           "oracle best of 3 candidates": round(r["oracle"], 4),
                           "each candidate alone": [round(v, 3) for v in r["per_candidate"]],
                           "predicted-IoU mean abs. error": round(r["iou_mae"], 4)})


def training_step(model, entry, precision):
    n = entry["recipe"]["batch_size"]
    batch = next(sam.prompt_batches(n))
    return loss_step(model, lambda m: sam.training_loss(m, batch), precision), n


RECORD = register(ShippedModel(
    name="sam_shapes", chapter="14", settings=settings, train=train,
    build=lambda entry: sam.TinySAM(**entry["recipe"]["model"]), evaluate=evaluate, training_step=training_step))
