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

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from tqdm.auto import tqdm

from .runtime import as_device


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


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite: :func:`fit` stops at once instead of training on with NaN weights."""


def _divergence_message(value: float, step: int, losses: list[float], optimizer: torch.optim.Optimizer) -> str:
    last = f"the last finite loss was {losses[-1]:.4g} at step {step - 1}" if losses else "at the very first step"
    rates = sorted({group.get("lr") for group in optimizer.param_groups if group.get("lr") is not None})
    lr = f" (now {', '.join(f'{r:.3g}' for r in rates)})" if rates else ""
    return (f"the loss is {value} at step {step}; {last}. Training stopped: every weight would become NaN. "
            f"Try a smaller learning rate{lr} or gradient clipping (clip_grad_norm=1.0), and check the data: "
            "no NaN or infinite values, and the range the loss expects (e.g. pixels in [0, 1] for BCE).")


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
    device = as_device(device)
    history = History()
    start = time.perf_counter()
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not show_progress, leave=True)
    for step in bar:
        model.train()
        loss = loss_fn(model, _to_device(next(batches), device))
        if loss.ndim != 0:
            raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}; "
                             "did you forget .mean()?")
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            bar.close()
            raise TrainingDiverged(_divergence_message(loss_value, step, history.losses, optimizer))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step(model)
        history.losses.append(loss_value)
        is_last = step == steps
        if eval_fn is not None and (is_last or (eval_every and step % eval_every == 0)):
            model.eval()
            with torch.no_grad():
                metrics = eval_fn(model)
            history.evals.append((step, metrics))
            bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
        elif step % 10 == 0 or is_last:
            bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
    bar.close()
    model.eval()
    history.wall_time_s = time.perf_counter() - start
    return history


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """Learning rate: linear warm-up from 0 over ``warmup_steps``, then a cosine decay to 0 at ``total_steps``."""

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
    if len(x) == 0:
        raise ValueError("accuracy of an empty set is undefined: x and y hold no examples (check the slice or filter)")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start:start + batch_size].to(device))
        correct += (logits.argmax(1).cpu() == y[start:start + batch_size]).sum().item()
    model.train(was_training)
    return correct / len(x)


# ------------------------------------------------------------------------------------- the command line

RESCUE_DIR = "~/.cache/course_lib/rescued"  # where main() keeps trained weights it could not save


def _command(args, *more: str) -> str:
    """The command line that ran, with ``more`` options, to show in advice."""
    words = ["python -m course_lib.train", args.name]
    words += ["--profile", args.profile] if args.profile else []
    words += ["--seed", str(args.seed)] if args.seed else []
    return " ".join(words + list(more))


def _refusal(args, entry: dict) -> str:
    """Why main() will not replace the checkpoint ``entry`` without --force, and what to run instead."""
    from . import checkpointing

    had = f"metrics {entry.get('metrics')} ({entry.get('device')}, {entry.get('created')})"
    if args.out is None:
        return (f"{args.name} is already shipped in {checkpointing.CHECKPOINT_DIR} with {had}. Nothing was trained.\n"
                f"  to keep both, save the new one elsewhere: {_command(args, '--out DIR')}\n"
                f"  to replace the shipped one:               {_command(args, '--force')}\n")
    return (f"{args.out} already holds {args.name} with {had}. Nothing was trained.\n"
            f"  to keep both, pick another folder: {_command(args, '--out OTHER_DIR')}\n"
            f"  to replace it:                     {_command(args, '--out', str(args.out), '--force')}\n")


def _rescue(model: torch.nn.Module, name: str, details: dict):
    """Save ``model``'s weights (and ``details`` as JSON beside them) where nothing can be harmed, after
    save_checkpoint failed: RESCUE_DIR, else the temporary folder. Return the path, or None."""
    import json
    import tempfile
    from pathlib import Path

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    try:
        text = json.dumps(details, indent=2, default=repr) + "\n"  # a value JSON cannot store as its repr
    except (TypeError, ValueError):
        text = repr(details) + "\n"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for folder in (Path(RESCUE_DIR).expanduser(), Path(tempfile.gettempdir())):
        path, n = folder / f"{name}-{stamp}.pt", 1
        while path.exists():  # never overwrite an earlier rescue
            path, n = folder / f"{name}-{stamp}-{n}.pt", n + 1
        try:
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(state, path)
        except Exception:
            path.unlink(missing_ok=True)
            continue
        try:
            path.with_suffix(".json").write_text(text)
        except OSError:
            pass  # the weights are what matter
        return path
    return None


def _rescue_report(rescued, args, error: Exception) -> str:
    """Where the rescued weights are, and how to try again."""
    if rescued is None:
        kept = f"The trained weights could not be rescued either (tried {RESCUE_DIR} and the temporary folder).\n"
    else:
        kept = (f"The trained weights are safe in {rescued}, "
                f"their recipe and metrics in {rescued.with_suffix('.json')}.\n"
                f"  to use them: model.load_state_dict(torch.load({str(rescued)!r}))\n")
    if isinstance(error, OSError):
        return kept + f"  to train again into a folder you can write: {_command(args, '--out DIR')}\n"
    same_target = (["--out", str(args.out)] if args.out else []) + (["--force"] if args.force else [])
    return kept + f"  to train again, fix what the error names first, then: {_command(args, *same_target)}\n"


def main(argv=None) -> None:
    """``python -m course_lib.train NAME --profile cpu|gpu``: run a recipe and save its checkpoint in the
    shipped folder (or in --out DIR). A checkpoint that is already there is only replaced with --force."""
    import argparse
    from pathlib import Path

    from . import checkpointing
    from .recipes import RECIPES
    from .runtime import device

    parser = argparse.ArgumentParser(prog="python -m course_lib.train", description=main.__doc__)
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--profile", choices=("ci", "cpu", "gpu"), default=None,
                        help="run profile (default: $COURSE_PROFILE, else gpu with CUDA, else cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="save the checkpoint and its manifest entry in DIR, not in course_lib/checkpoints/")
    parser.add_argument("--force", action="store_true", help="replace a checkpoint NAME that is already there")
    parser.add_argument("--dry-run", action="store_true", help="train and report, but write nothing")
    args = parser.parse_args(argv)
    old = None
    if not args.dry_run:  # refuse before training, not after an hour of it
        try:
            old = checkpointing.read_manifest(args.out).get(args.name)
        except ValueError as damaged:
            parser.exit(2, f"{parser.prog}: {damaged}\n")
        if old is not None and not args.force:
            parser.exit(2, f"{parser.prog}: {_refusal(args, old)}")

    model, history, metrics, recipe = RECIPES[args.name](args.profile, seed=args.seed)
    print(f"{args.name}: {metrics} in {history.wall_time_s:.1f} s on {device()}")
    if args.dry_run:
        return
    where = {} if args.out is None else {"directory": args.out}
    try:
        path = checkpointing.save_checkpoint(model, args.name, recipe=recipe, metrics=metrics,
                                             wall_time_s=history.wall_time_s, device=device(), **where)
    except Exception as error:  # never throw a long training away: keep the weights somewhere
        rescued = _rescue(model, args.name, {"name": args.name, "recipe": recipe, "metrics": metrics,
                                             "wall_time_s": history.wall_time_s, "device": str(device())})
        parser.exit(1, f"{parser.prog}: could not save {args.name}: {type(error).__name__}: {error}\n"
                       + _rescue_report(rescued, args, error))
    print(f"wrote {path}")
    if old is not None:
        print(f"replaced the old {args.name}\n  old metrics: {old.get('metrics')}\n  new metrics: {metrics}")


if __name__ == "__main__":
    main()
