"""``vit_mnist``: chapter 04's tiny ViT on MNIST (4x4 patches, a 7x7 grid)."""
from __future__ import annotations

import torch

from course_lib.core.profiles import per_profile
from course_lib.topics.cnn import classification_loss, random_crop_flip
from course_lib.topics.vit import ViT
from course_lib.zoo.common import classification_step, test_accuracy, train_classifier
from course_lib.zoo.record import ShippedModel, Trained, register


def settings(active: str | None = None):
    """AdamW with warm-up and cosine decay; the long run also shifts each training digit by up to ``max_shift``
    pixels (a ViT has no built-in translation invariance, so it has to learn it from data)."""
    model = dict(image_size=28, patch_size=4, channels=1, dim=64, depth=4, heads=4, mlp_ratio=2.0, num_classes=10)
    return per_profile(
        ci=dict(model=model, n_train=5_000, n_test=1_000, steps=80, batch_size=64, lr=2e-3, weight_decay=0.05,
                warmup_steps=8, max_shift=0, min_test_accuracy=0.2),
        cpu=dict(model=model, n_train=60_000, n_test=10_000, steps=2_200, batch_size=128, lr=2e-3, weight_decay=0.05,
                 warmup_steps=110, max_shift=0, min_test_accuracy=0.975),
        gpu=dict(model=model, n_train=60_000, n_test=10_000, steps=7_000, batch_size=128, lr=2e-3, weight_decay=0.05,
                 warmup_steps=350, max_shift=2, min_test_accuracy=0.985),
        active=active,
    )


def train(active: str | None = None, seed: int = 0, show_progress: bool = True) -> Trained:
    s = settings(active)
    shifts = torch.Generator().manual_seed(seed + 1)

    def shift(images):
        return random_crop_flip(images, s.max_shift, flip=False, generator=shifts)

    def loss_fn(model, batch):
        return classification_loss(model, batch, shift)

    model, history, metrics = train_classifier(
        lambda: ViT(**s.model), lambda params: torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay),
        s, seed, "ViT on MNIST", show_progress, cosine_decay=True, loss_fn=loss_fn)
    return Trained(model, history, metrics, {"recipe": __name__, "seed": seed, **vars(s)})


RECORD = register(ShippedModel(
    name="vit_mnist", chapter="04", settings=settings, train=train,
    build=lambda entry: ViT(**entry["recipe"]["model"]),
    evaluate=lambda model, entry, options: test_accuracy(model, references={
        "bar for the shipped model": 0.985,
        "bar for the cpu profile in <= 5 min on 2 cores (python -m course_lib.zoo bench vit_mnist --retrain "
        "--profile cpu)": 0.975}),
    training_step=classification_step))
