"""``detr_shapes``: chapter 06's tiny DETR on shapes scenes (48 x 48, flat background, 1-3 objects)."""
from __future__ import annotations

from course_lib.core.profiles import per_profile
from course_lib.core.train import FAST
from course_lib.topics import detr
from course_lib.zoo.common import loss_step
from course_lib.zoo.record import Measurement, ShippedModel, Trained, mean_of_last, register


def settings(active: str | None = None):
    """SmallCNN (16, 32, 64) to stride 4 (a 12 x 12 token grid), width 64, 4 heads, 2 encoder and 3 decoder layers,
    8 object queries, 2-D sine positions; the set loss (class 1, L1 5, GIoU 2, no-object weight 0.1) on every
    decoder layer (auxiliary losses); AdamW, lr 1e-3 for the transformer and heads, 2.5e-4 for the backbone,
    weight decay 1e-4, warm-up then cosine, gradients clipped at 0.1 (DETR's value). Fresh scenes every step."""
    model = dict(num_classes=3, num_queries=8, dim=64, heads=4, encoder_layers=2, decoder_layers=3, mlp_ratio=2.0,
                 backbone_channels=(16, 32, 64))
    common = dict(model=model, lr=1e-3, backbone_lr=2.5e-4, weight_decay=1e-4, clip_grad_norm=0.1, aux_loss=True)
    return per_profile(
        ci=dict(**common, steps=40, batch_size=16, warmup_steps=4, eval_scenes=100),
        cpu=dict(**common, steps=600, batch_size=32, warmup_steps=30, eval_scenes=500),
        gpu=dict(**common, steps=3_000, batch_size=32, warmup_steps=150, eval_scenes=500),
        active=active,
    )


def train(active: str | None = None, seed: int = 0, show_progress: bool = True) -> Trained:
    """Metrics: mAP@0.5 on held-out scenes."""
    s = settings(active)
    model, history = detr.train_detr(s, seed=seed, show_progress=show_progress,
                                     eval_fn=detr.evaluate_for_training(200), **FAST)
    scenes = {k: v[:s.eval_scenes] for k, v in detr.evaluation_scenes(s.eval_scenes).items()}
    result = detr.evaluate_detr(model.cpu(), scenes)
    metrics = {"map50": round(result["map50"], 4), "matched": result["matched"], "total": result["total"],
               "false_positives": result["false_positives"], "final_train_loss": mean_of_last(history.losses, 50)}
    recipe = {"recipe": __name__, "seed": seed, "model": model.config,
              "data": "course_lib.topics.detr.shapes_batches: make_shapes(**course_lib.topics.detr.shapes_settings()), "
                      "a new seed every batch", **vars(s)}
    return Trained(model, history, metrics, recipe)


def evaluate(model, entry, options) -> Measurement:
    """mAP@0.5 (VOC all-point) on 500 held-out scenes, and the matched-box count."""
    scenes = detr.evaluation_scenes(500)
    r = detr.evaluate_detr(model, scenes)
    floor = detr.random_init_reference(entry["recipe"]["model"], scenes)
    return Measurement("mAP@0.5, 500 held-out scenes (48x48, 1-3 obj)", r["map50"], {
        "random-init model": floor["map50"],
        "ground-truth boxes matched (right class, IoU >= 0.5, score >= 0.5)": f"{r['matched']}/{r['total']}",
        "false positives": r["false_positives"],
        "AP per class circle / square / triangle": r["ap50"]})


def training_step(model, entry, precision):
    n = entry["recipe"]["batch_size"]
    batch = next(detr.shapes_batches(n))
    return loss_step(model, lambda m: detr.training_loss(m, batch), precision), n


RECORD = register(ShippedModel(
    name="detr_shapes", chapter="06", settings=settings, train=train,
    build=lambda entry: detr.TinyDETR(**entry["recipe"]["model"]), evaluate=evaluate, training_step=training_step))
