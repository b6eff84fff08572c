"""``mlp_mnist``: chapter 01's 784-500-10 MLP on MNIST, trained with SGD and momentum."""
from __future__ import annotations

import torch

from course_lib.core.profiles import per_profile
from course_lib.topics.backprop import MLP
from course_lib.zoo.common import classification_step, test_accuracy, train_classifier
from course_lib.zoo.record import ShippedModel, Trained, register


def settings(active: str | None = None):
    """784-500-10, SGD with momentum, full MNIST except under ``ci``."""
    return per_profile(
        ci=dict(n_train=5_000, steps=300, batch_size=64, lr=0.05, min_test_accuracy=0.88),
        cpu=dict(n_train=60_000, steps=4_700, batch_size=128, lr=0.05, min_test_accuracy=0.975),
        gpu=dict(n_train=60_000, steps=9_400, batch_size=128, lr=0.05, min_test_accuracy=0.98),
        active=active,
    )


def train(active: str | None = None, seed: int = 0, show_progress: bool = True) -> Trained:
    s = settings(active)
    model, history, metrics = train_classifier(
        lambda: MLP(n_hidden=500), lambda params: torch.optim.SGD(params, lr=s.lr, momentum=0.9), s, seed,
        "MLP on MNIST", show_progress)
    return Trained(model, history, metrics, {"recipe": __name__, "seed": seed, **vars(s)})


RECORD = register(ShippedModel(
    name="mlp_mnist", chapter="01", settings=settings, train=train,
    build=lambda entry: MLP(n_hidden=500),
    evaluate=lambda model, entry, options: test_accuracy(
        model, references={"2-layer MLP, 800 hidden, cross entropy (Simard et al. 2003)": 0.984}),
    training_step=classification_step))
