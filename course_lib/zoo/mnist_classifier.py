"""``mnist_classifier``: the small CNN whose penultimate features the FID uses (chapters 08-13, ``course_lib.eval``)."""
from __future__ import annotations

import torch

from course_lib.core.profiles import per_profile
from course_lib.eval.fid import MnistClassifier
from course_lib.zoo.common import classification_step, test_accuracy, train_classifier
from course_lib.zoo.record import ShippedModel, Trained, register


def settings(active: str | None = None):
    """Adam with a warm-up and a cosine decay."""
    return per_profile(
        ci=dict(n_train=5_000, steps=150, batch_size=64, lr=1e-3, min_test_accuracy=0.9),
        cpu=dict(n_train=60_000, steps=1_900, batch_size=128, lr=2e-3, min_test_accuracy=0.988),
        gpu=dict(n_train=60_000, steps=4_700, batch_size=128, lr=2e-3, min_test_accuracy=0.99),
        active=active,
    )


def train(active: str | None = None, seed: int = 0, show_progress: bool = True) -> Trained:
    s = settings(active)
    model, history, metrics = train_classifier(
        MnistClassifier, lambda params: torch.optim.Adam(params, lr=s.lr), s, seed, "MNIST classifier",
        show_progress, cosine_decay=True)
    return Trained(model, history, metrics, {"recipe": __name__, "seed": seed, **vars(s)})


RECORD = register(ShippedModel(
    name="mnist_classifier", chapter="eval", settings=settings, train=train,
    build=lambda entry: MnistClassifier(),
    evaluate=lambda model, entry, options: test_accuracy(
        model, references={"LeNet-5 (LeCun et al. 1998)": 0.991, "note": "the FID's feature extractor"}),
    training_step=classification_step))
