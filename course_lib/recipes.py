"""The recipes that make the shipped checkpoints, one function per checkpoint.

Run one with ``python -m course_lib.train NAME --profile cpu|gpu``; it trains, evaluates, and
writes ``course_lib/checkpoints/NAME.pt`` plus its manifest entry. The chapters use the same
settings (``*_settings()``) for their "train it yourself" cells.
"""
from __future__ import annotations

import torch

from .backprop import MLP, mlp_loss
from .data import load_mnist
from .diffusion import EMA, NoiseSchedule, ddpm_loss, to_model_range
from .checkpointing import load_checkpoint, read_manifest
from .metrics import MnistClassifier, sample_quality
from .profiles import per_profile
from .runtime import device, seed_everything
from .train import accuracy, fit, minibatches, warmup_cosine
from .unet import UNet


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


def mnist_classifier_settings(active: str | None = None):
    """The CNN whose features the FID uses (chapters 08-13): Adam with a cosine decay."""
    return per_profile(
        ci=dict(n_train=5_000, steps=150, batch_size=64, lr=1e-3, min_test_accuracy=0.9),
        cpu=dict(n_train=60_000, steps=1_900, batch_size=128, lr=2e-3, min_test_accuracy=0.988),
        gpu=dict(n_train=60_000, steps=4_700, batch_size=128, lr=2e-3, min_test_accuracy=0.99),
        active=active,
    )


def mnist_classifier(active: str | None = None, seed: int = 0, show_progress: bool = True):
    """Train the FID feature extractor; return ``(model, history, metrics, recipe)``."""
    cfg = mnist_classifier_settings(active)
    generator = seed_everything(seed)
    dev = device()
    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    model = MnistClassifier().to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    batches = minibatches(x_train[:cfg.n_train], y_train[:cfg.n_train], batch_size=cfg.batch_size, generator=generator)
    history = fit(model, mlp_loss, batches, steps=cfg.steps, optimizer=optimizer, device=dev,
                  scheduler=warmup_cosine(optimizer, cfg.steps // 20, cfg.steps),
                  eval_fn=lambda m: {"test_acc": accuracy(m, x_test, y_test)}, eval_every=max(cfg.steps // 4, 1),
                  desc="MNIST classifier", show_progress=show_progress)
    metrics = {"test_accuracy": round(history.last_eval()["test_acc"], 4)}
    return model, history, metrics, {"recipe": "course_lib.recipes.mnist_classifier", "seed": seed, **vars(cfg)}


def ddpm_mnist_settings(active: str | None = None):
    """Chapter 11's U-Net DDPM on MNIST: L_simple, Adam with warm-up and cosine decay, EMA weights."""
    return per_profile(
        ci=dict(widths=(16, 32, 64), steps=20, batch_size=32, lr=1e-3, ema_decay=0.9, T=1000, fid_samples=0),
        cpu=dict(widths=(16, 32, 64), steps=700, batch_size=128, lr=2e-3, ema_decay=0.99, T=1000, fid_samples=0),
        gpu=dict(widths=(16, 32, 64), steps=3_000, batch_size=128, lr=2e-3, ema_decay=0.999, T=1000,
                 fid_samples=2_000),
        active=active,
    )


def ddpm_mnist(active: str | None = None, seed: int = 0, show_progress: bool = True):
    """Train the MNIST DDPM; return ``(ema_model, history, metrics, recipe)`` (the EMA weights are what ships)."""
    cfg = ddpm_mnist_settings(active)
    generator = seed_everything(seed)
    dev = device()
    x_train = to_model_range(load_mnist("train")[0])  # (60000, 1, 28, 28) in [-1, 1]
    schedule = NoiseSchedule.linear(cfg.T)
    model = UNet(widths=cfg.widths).to(dev)
    ema = EMA(model, cfg.ema_decay)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    batches = minibatches(x_train, batch_size=cfg.batch_size, generator=generator)
    history = fit(model, lambda m, batch: ddpm_loss(m, batch[0], schedule), batches, steps=cfg.steps,
                  optimizer=optimizer, device=dev, scheduler=warmup_cosine(optimizer, min(200, cfg.steps // 10), cfg.steps),
                  clip_grad_norm=1.0, after_step=ema.update, desc="DDPM on MNIST", show_progress=show_progress)
    metrics = {"final_train_loss": round(sum(history.losses[-100:]) / len(history.losses[-100:]), 4)}
    if cfg.fid_samples and "mnist_classifier" in read_manifest():
        metrics.update(sample_quality(ema.model, n=cfg.fid_samples, sampler="ddim", steps=50, seed=seed))
    recipe = {"recipe": "course_lib.recipes.ddpm_mnist", "seed": seed, "model": ema.model.config, **vars(cfg)}
    return ema.model, history, metrics, recipe


RECIPES = {"mlp_mnist": mlp_mnist, "mnist_classifier": mnist_classifier, "ddpm_mnist": ddpm_mnist}

# How to rebuild each shipped model from its manifest entry, before its weights are loaded.
# Register every new checkpoint here: the offline test and the bench load them all through it.
MODELS = {
    "mlp_mnist": lambda entry: MLP(n_hidden=500),
    "mnist_classifier": lambda entry: MnistClassifier(),
    "ddpm_mnist": lambda entry: UNet(**entry["recipe"]["model"]),
}


def load_shipped(name: str, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The shipped model ``name``, rebuilt as its recipe made it, weights loaded, in eval mode."""
    entry = read_manifest().get(name)
    if entry is None or name not in MODELS:
        raise FileNotFoundError(f"no shipped checkpoint named {name!r}; shipped: {', '.join(sorted(read_manifest()))}. "
                                f"Train it with `python -m course_lib.train {name} --profile cpu`.")
    model = MODELS[name](entry).to(device)
    load_checkpoint(model, name)
    return model
