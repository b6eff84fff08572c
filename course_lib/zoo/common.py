"""What several records share: the classifiers' training loop and measurement, the diffusion models' training with
EMA weights, and the pieces of a timed training step (stand-in batches, one optimizer step of a loss)."""
from __future__ import annotations

from typing import Callable

import torch

from course_lib.core.runtime import device, seed_everything
from course_lib.core.train import EMA, FAST, accuracy, autocast, fit, minibatches, warmup_cosine
from course_lib.data import load_fashion_mnist, load_mnist
from course_lib.topics.backprop import mlp_loss
from course_lib.zoo.record import Measurement, mean_of_last

DATASETS = {"MNIST": load_mnist, "Fashion-MNIST": load_fashion_mnist}


def train_classifier(build_model: Callable, make_optimizer: Callable, settings, seed: int, desc: str,
                     show_progress: bool, cosine_decay: bool = False, loss_fn: Callable = mlp_loss):
    """The loop the MNIST classifiers share: train on ``settings.n_train`` digits, report test accuracy
    (on the first ``settings.n_test`` test digits when the settings name it, else on all 10,000).

    With ``cosine_decay`` the learning rate warms up for ``settings.warmup_steps`` (default: 5% of the
    steps), then follows a cosine to zero. ``build_model()`` runs after the seeding, so the initial
    weights are seeded too. Returns ``(model, history, metrics)``.
    """
    generator = seed_everything(seed)
    model = build_model()
    dev = device()
    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    x_train, y_train = x_train[:settings.n_train], y_train[:settings.n_train]
    n_test = getattr(settings, "n_test", None)
    x_test, y_test = x_test[:n_test], y_test[:n_test]
    model = model.to(dev)
    optimizer = make_optimizer(model.parameters())
    warmup_steps = getattr(settings, "warmup_steps", settings.steps // 20)
    scheduler = warmup_cosine(optimizer, warmup_steps, settings.steps) if cosine_decay else None
    batches = minibatches(x_train, y_train, batch_size=settings.batch_size, generator=generator)
    history = fit(model, loss_fn, batches, steps=settings.steps, optimizer=optimizer, device=dev, scheduler=scheduler,
                  eval_fn=lambda m: {"test_acc": accuracy(m, x_test, y_test)},
                  eval_every=max(settings.steps // 4, 1), desc=desc, show_progress=show_progress, **FAST)
    metrics = {"test_accuracy": round(history.last_eval()["test_acc"], 4),
               "final_train_loss": mean_of_last(history.losses, 50)}
    return model, history, metrics


def test_accuracy(model: torch.nn.Module, dataset: str = "MNIST", references: dict | None = None) -> Measurement:
    """A classifier's accuracy on all 10,000 test images of ``dataset`` ("MNIST" or "Fashion-MNIST")."""
    x_test, y_test = DATASETS[dataset]("test")
    return Measurement(f"{dataset} test accuracy (10k)", accuracy(model, x_test, y_test, batch_size=250),
                       references or {})


def fit_with_ema(model: torch.nn.Module, loss_fn: Callable, batches, settings, *, warmup_steps: int, desc: str,
                 show_progress: bool, state_file=None, optimizer: torch.optim.Optimizer | None = None):
    """The diffusion records' training: ``fit`` for ``settings.steps`` steps with Adam at ``settings.lr`` (or
    ``optimizer``), warm-up then cosine decay, gradients clipped at norm 1, the bf16 fast path, and EMA weights (decay
    ``settings.ema_decay``) updated after every step and kept in a resumable run's state. Returns (EMA, history);
    the EMA weights are what ships."""
    ema = EMA(model, settings.ema_decay)
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=settings.lr)
    history = fit(model, loss_fn, batches, steps=settings.steps, optimizer=optimizer,
                  device=next(model.parameters()).device,
                  scheduler=warmup_cosine(optimizer, warmup_steps, settings.steps), clip_grad_norm=1.0,
                  after_step=ema.update, desc=desc, show_progress=show_progress, state_file=state_file,
                  extra_state={"ema": ema}, **FAST)
    return ema, history


def image_batch(batch_size: int, channels: int = 1, size: int = 28, seed: int = 0) -> torch.Tensor:
    """Random images in [0, 1], (batch_size, channels, size, size): a stand-in batch for timing a training step."""
    return torch.rand(batch_size, channels, size, size, generator=torch.Generator().manual_seed(seed))


def label_batch(batch_size: int, classes: int = 10, seed: int = 1) -> torch.Tensor:
    return torch.randint(classes, (batch_size,), generator=torch.Generator().manual_seed(seed))


def loss_step(model: torch.nn.Module, loss: Callable[[torch.nn.Module], torch.Tensor], precision: str):
    """One training step (Adam) of ``loss(model)`` under ``precision``, for the throughput benchmark."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        with autocast(precision):
            value = loss(model)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
    return step


def classification_step(model: torch.nn.Module, entry: dict, precision: str):
    """A classifier's step: cross entropy on a batch of the recipe's size."""
    n = entry["recipe"].get("batch_size", 128)
    x, y = image_batch(n), label_batch(n)
    return loss_step(model, lambda m: mlp_loss(m, (x, y)), precision), n
