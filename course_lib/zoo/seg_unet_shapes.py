"""``seg_unet_shapes``: chapter 14's U-Net segmenter on striped shapes scenes (48 x 48, 1-3 objects, 4 classes)."""
from __future__ import annotations

from course_lib.core.profiles import per_profile
from course_lib.core.train import FAST
from course_lib.topics import segmentation as seg
from course_lib.zoo.common import loss_step
from course_lib.zoo.record import Measurement, ShippedModel, Trained, mean_of_last, register


def settings(active: str | None = None):
    """SegUNet widths (16, 32, 64) (two poolings, padded 3x3 convs, 2x2 up-convolutions); pixel cross entropy +
    soft Dice; AdamW lr 3e-3, weight decay 1e-4, warm-up then cosine. Fresh scenes every step."""
    model = dict(in_channels=3, num_classes=seg.NUM_CLASSES, widths=(16, 32, 64))
    common = dict(model=model, lr=3e-3, weight_decay=1e-4)
    return per_profile(
        ci=dict(**common, steps=20, batch_size=8, warmup_steps=2, eval_scenes=100),
        cpu=dict(**common, steps=600, batch_size=16, warmup_steps=30, eval_scenes=500),
        gpu=dict(**common, steps=3_000, batch_size=32, warmup_steps=150, eval_scenes=500),
        active=active,
    )


def train(active: str | None = None, seed: int = 0, show_progress: bool = True) -> Trained:
    """Metrics: mIoU on held-out scenes, and the trivial baselines'."""
    s = settings(active)
    model, history = seg.train_segmenter(s, seed=seed, show_progress=show_progress, **FAST)
    scenes = seg.evaluation_scenes(s.eval_scenes)
    miou = seg.mean_iou(seg.predict_semantic(model.cpu(), scenes["images"]), scenes["semantic"])
    metrics = {"miou": round(miou, 4), **{k: round(v, 4) for k, v in seg.baselines(scenes).items()},
               "final_train_loss": mean_of_last(history.losses, 50)}
    recipe = {"recipe": __name__, "seed": seed, "model": model.config,
              "data": "course_lib.topics.segmentation.segmentation_batches: make_shapes(**shapes_settings(48)), "
                      "a new seed every batch", **vars(s)}
    return Trained(model, history, metrics, recipe)


def evaluate(model, entry, options) -> Measurement:
    """mIoU (4 classes, pixels pooled) on 500 held-out scenes, against the trivial segmenters."""
    scenes = seg.evaluation_scenes(500)
    pred = seg.predict_semantic(model, scenes["images"])
    ious = seg.iou_per_class(seg.confusion_matrix(pred, scenes["semantic"]))
    return Measurement("mIoU, 500 held-out scenes (48x48 stripes, 1-3 obj, 4 classes)",
                       seg.mean_iou(pred, scenes["semantic"]), {
                           **seg.baselines(scenes),
                           "IoU background / circle / square / triangle": [round(float(v), 3) for v in ious]})


def training_step(model, entry, precision):
    n = entry["recipe"]["batch_size"]
    batch = next(seg.segmentation_batches(n))
    return loss_step(model, lambda m: seg.segmentation_loss(m, batch), precision), n


RECORD = register(ShippedModel(
    name="seg_unet_shapes", chapter="14", settings=settings, train=train,
    build=lambda entry: seg.SegUNet(**entry["recipe"]["model"]), evaluate=evaluate, training_step=training_step))
