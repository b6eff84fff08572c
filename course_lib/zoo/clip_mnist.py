"""``clip_mnist``: chapter 07's tiny CLIP, MNIST digits with captions from ``course_lib.topics.clip.TRAIN_TEMPLATES``."""
from __future__ import annotations

from course_lib.core.profiles import per_profile
from course_lib.core.train import FAST
from course_lib.data import load_mnist
from course_lib.topics import clip
from course_lib.zoo.common import image_batch, label_batch, loss_step
from course_lib.zoo.record import Measurement, ShippedModel, Trained, mean_of_last, register


def settings(active: str | None = None):
    """Image tower SmallCNN (32, 64, 128) whose head projects to the 64-d joint space; text tower a causal
    2-block transformer (width 64, 4 heads) pooled at <eot>, a linear projection; tau learned from 0.07,
    1 / tau clamped at 100. AdamW (weight decay 0.01 on matrices only), warm-up then cosine, batch 128,
    shifts of up to 2 pixels in the long run."""
    model = dict(context_length=8, embed_dim=64, image=dict(channels=[32, 64, 128]),
                 text=dict(dim=64, depth=2, heads=4, mlp_ratio=2.0, causal=True, pooling="eot"),
                 init_temperature=0.07, max_logit_scale=100.0)
    common = dict(model=model, lr=2e-3, weight_decay=0.01, batch_size=128)
    return per_profile(
        ci=dict(common, n_train=5_000, steps=40, batch_size=64, warmup_steps=4, max_shift=0, n_eval=500,
                probe_train=2_000, min_zero_shot_accuracy=0.15),
        cpu=dict(**common, n_train=60_000, steps=1_000, warmup_steps=50, max_shift=0, n_eval=2_000,
                 probe_train=60_000, min_zero_shot_accuracy=0.97),
        gpu=dict(**common, n_train=60_000, steps=2_000, warmup_steps=100, max_shift=2, n_eval=2_000,
                 probe_train=60_000, min_zero_shot_accuracy=0.98),
        active=active,
    )


def train(active: str | None = None, seed: int = 0, show_progress: bool = True) -> Trained:
    """Metrics: zero-shot accuracy on all 10,000 test digits (training templates' ensemble, each held-out
    template) and a linear probe."""
    s = settings(active)
    model, history = clip.train_clip(s, seed=seed, show_progress=show_progress, **FAST)
    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    report = clip.evaluate_clip(model, x_test, y_test)
    probe = clip.linear_probe(clip.image_features(model, x_train[:s.probe_train]), y_train[:s.probe_train],
                              clip.image_features(model, x_test), y_test)
    metrics = {"zero_shot_test_accuracy": round(report["zero_shot_acc"], 4),
               **{f"held_out_template_{i}_accuracy": round(report[f"held_out_{i}_acc"], 4)
                  for i in range(len(clip.HELD_OUT_TEMPLATES))},
               "linear_probe_test_accuracy": round(probe, 4), "logit_scale_exp": round(report["logit_scale_exp"], 3),
               "final_train_loss": mean_of_last(history.losses, 50)}
    recipe = {"recipe": __name__, "seed": seed, **vars(s),
              "model": model.config,  # the settings' model dict plus the vocabulary: what build() rebuilds from
              "train_templates": list(clip.TRAIN_TEMPLATES), "held_out_templates": list(clip.HELD_OUT_TEMPLATES)}
    return Trained(model, history, metrics, recipe)


def evaluate(model, entry, options) -> Measurement:
    """Zero-shot accuracy on all 10,000 MNIST test digits, prompt ensemble of the training templates; each
    held-out template on its own; the linear probe from the manifest."""
    x_test, y_test = load_mnist("test")
    r = clip.evaluate_clip(model, x_test, y_test)
    return Measurement("MNIST zero-shot acc (10k), train prompts", r["zero_shot_acc"], {
        "chance": 0.1,
        **{f"held-out template '{t}'": r[f"held_out_{i}_acc"] for i, t in enumerate(clip.HELD_OUT_TEMPLATES)},
        "linear probe on the frozen image features (manifest)": entry["metrics"].get("linear_probe_test_accuracy"),
        "supervised mnist_classifier": 0.99, "1/tau": r["logit_scale_exp"]})


def training_step(model, entry, precision):
    n = entry["recipe"]["batch_size"]
    x, y, table = image_batch(n), label_batch(n), clip.caption_table(model.tokenizer)
    return loss_step(model, lambda m: clip.clip_training_loss(m, (x, y), table), precision), n


RECORD = register(ShippedModel(
    name="clip_mnist", chapter="07", settings=settings, train=train,
    build=lambda entry: clip.TinyCLIP(**entry["recipe"]["model"]), evaluate=evaluate, training_step=training_step))
