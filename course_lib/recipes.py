"""The recipes that make the shipped checkpoints, one function per checkpoint.

Run one with ``python -m course_lib.train NAME --profile cpu|gpu``; it trains, evaluates, and
writes ``course_lib/checkpoints/NAME.pt`` plus its manifest entry. The chapters use the same
settings (``*_settings()``) for their "train it yourself" cells.
"""
from __future__ import annotations

import torch

from .backprop import MLP, mlp_loss
from .data import load_mnist
from .profiles import per_profile
from .runtime import device, seed_everything
from .train import accuracy, fit, minibatches


def mlp_mnist_settings(active: str | None = None):
    """Chapter 01's MLP: 784-500-10, SGD with momentum, full MNIST except under ``ci``."""
    return per_profile(
        ci=dict(n_train=5_000, steps=300, batch_size=64, lr=0.05, min_test_accuracy=0.88),
        cpu=dict(n_train=60_000, steps=4_700, batch_size=128, lr=0.05, min_test_accuracy=0.975),
        gpu=dict(n_train=60_000, steps=9_400, batch_size=128, lr=0.05, min_test_accuracy=0.98),
        active=active,
    )


def mlp_mnist(active: str | None = None, seed: int = 0, show_progress: bool = True):
    """Train chapter 01's MLP; return ``(model, history, metrics, recipe)``."""
    cfg = mlp_mnist_settings(active)
    generator = seed_everything(seed)
    dev = device()
    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    x_train, y_train = x_train[:cfg.n_train], y_train[:cfg.n_train]
    model = MLP(n_hidden=500).to(dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9)
    batches = minibatches(x_train, y_train, batch_size=cfg.batch_size, generator=generator)
    history = fit(model, mlp_loss, batches, steps=cfg.steps, optimizer=optimizer, device=dev,
                  eval_fn=lambda m: {"test_acc": accuracy(m, x_test, y_test)}, eval_every=cfg.steps // 4,
                  desc="MLP on MNIST", show_progress=show_progress)
    metrics = {"test_accuracy": round(history.last_eval()["test_acc"], 4),
               "final_train_loss": round(sum(history.losses[-50:]) / len(history.losses[-50:]), 4)}
    recipe = {"recipe": "course_lib.recipes.mlp_mnist", "seed": seed, **vars(cfg)}
    return model, history, metrics, recipe


RECIPES = {"mlp_mnist": mlp_mnist}
