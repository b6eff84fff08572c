"""A plain training loop with a progress bar, and nothing hidden.

``fit`` is the loop every chapter would otherwise write again::

    for step in range(steps):
        batch = next(batches)
        loss = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

plus a tqdm bar (a widget in Jupyter, text in a terminal), the loss history, and an optional
evaluation every ``eval_every`` steps. A chapter may always show its own loop instead.
Taught in chapter 01.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from tqdm.auto import tqdm


def minibatches(*tensors: torch.Tensor, batch_size: int, generator: torch.Generator | None = None,
                shuffle: bool = True) -> Iterator[tuple[torch.Tensor, ...]]:
    """Endless minibatches of aligned tensors, reshuffled every epoch (with ``generator``)."""
    if not tensors:
        raise ValueError("minibatches needs at least one tensor")
    n = len(tensors[0])
    if any(len(t) != n for t in tensors):
        raise ValueError(f"tensors must have the same length, got {[len(t) for t in tensors]}")
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, {n}], got {batch_size}")
    return _endless_batches(tensors, batch_size, generator, shuffle)


def _endless_batches(tensors, batch_size, generator, shuffle):
    n = len(tensors[0])
    while True:
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n - batch_size + 1, batch_size):
            index = order[start:start + batch_size]
            yield tuple(t[index] for t in tensors)


@dataclass
class History:
    """What a run produced: one loss per step, evaluations by step, wall time in seconds."""
    losses: list[float] = field(default_factory=list)
    evals: list[tuple[int, dict]] = field(default_factory=list)
    wall_time_s: float = 0.0

    def last_eval(self) -> dict:
        return self.evals[-1][1] if self.evals else {}


def _to_device(batch, device):
    if device is None:
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    return type(batch)(_to_device(item, device) for item in batch)


def fit(model: torch.nn.Module, loss_fn: Callable, batches: Iterator, *, steps: int,
        optimizer: torch.optim.Optimizer, device: torch.device | str | None = None,
        eval_fn: Callable[[torch.nn.Module], dict] | None = None, eval_every: int | None = None,
        desc: str = "training", show_progress: bool = True,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, clip_grad_norm: float | None = None,
        after_step: Callable[[torch.nn.Module], None] | None = None) -> History:
    """Train ``model`` for ``steps`` optimizer steps; return a :class:`History`.

    ``loss_fn(model, batch)`` returns a scalar loss; ``batches`` yields batches (moved to
    ``device``); ``eval_fn(model)`` returns a dict of metrics, called every ``eval_every`` steps
    and once at the end, with the model in eval mode and gradients off. Optional extras, in the
    order they run after ``backward()``: gradient clipping to ``clip_grad_norm``, the optimizer
    step, ``scheduler.step()``, and ``after_step(model)`` (e.g. an EMA update).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    history = History()
    start = time.perf_counter()
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not show_progress, leave=True)
    for step in bar:
        model.train()
        loss = loss_fn(model, _to_device(next(batches), device))
        if loss.ndim != 0:
            raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}; "
                             "did you forget .mean()?")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step(model)
        history.losses.append(loss.item())
        is_last = step == steps
        if eval_fn is not None and (is_last or (eval_every and step % eval_every == 0)):
            model.eval()
            with torch.no_grad():
                metrics = eval_fn(model)
            history.evals.append((step, metrics))
            bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
        elif step % 10 == 0 or is_last:
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    bar.close()
    model.eval()
    history.wall_time_s = time.perf_counter() - start
    return history


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """Learning rate: linear warm-up from 0 over ``warmup_steps``, then a cosine decay to 0 at ``total_steps``."""
    import math

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> float:
    """Fraction of ``x`` whose arg-max logit equals ``y`` (model in eval mode, batched)."""
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start:start + batch_size].to(device))
        correct += (logits.argmax(1).cpu() == y[start:start + batch_size]).sum().item()
    model.train(was_training)
    return correct / len(x)


def main(argv=None) -> None:
    """``python -m course_lib.train NAME --profile cpu|gpu``: run a recipe and ship its checkpoint."""
    import argparse

    from .checkpointing import save_checkpoint
    from .recipes import RECIPES
    from .runtime import device

    parser = argparse.ArgumentParser(prog="python -m course_lib.train", description=main.__doc__)
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--profile", choices=("ci", "cpu", "gpu"), default=None,
                        help="run profile (default: $COURSE_PROFILE, else gpu with CUDA, else cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="train and report, but write nothing")
    args = parser.parse_args(argv)
    model, history, metrics, recipe = RECIPES[args.name](args.profile, seed=args.seed)
    print(f"{args.name}: {metrics} in {history.wall_time_s:.1f} s on {device()}")
    if not args.dry_run:
        path = save_checkpoint(model, args.name, recipe=recipe, metrics=metrics,
                               wall_time_s=history.wall_time_s, device=device())
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
