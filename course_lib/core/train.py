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

Also here, because every chapter that trains uses them: ``minibatches``, ``warmup_cosine``, ``accuracy``;
:class:`EMA`, the moving average of weights (chapter 11, H.1; chapter 05's teacher and chapter 09's GAN use it);
the machine's fast path (``precision`` and ``channels_last``, :data:`FAST`); and resumable runs
(``state_file``, :class:`RunState`), which the long recipes of ``course_lib.zoo`` use.
"""
from __future__ import annotations

import copy
import math
import os
import platform
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import torch
from tqdm.auto import tqdm

from course_lib.core import distributed
from course_lib.core.runtime import as_device


def minibatches(*tensors: torch.Tensor, batch_size: int, generator: torch.Generator | None = None,
                shuffle: bool = True) -> "Minibatches":
    """Endless minibatches of aligned tensors, reshuffled every epoch (with ``generator``)."""
    if not tensors:
        raise ValueError("minibatches needs at least one tensor")
    n = len(tensors[0])
    if any(len(t) != n for t in tensors):
        raise ValueError(f"tensors must have the same length, got {[len(t) for t in tensors]}")
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, {n}], got {batch_size}")
    return Minibatches(tensors, batch_size, generator, shuffle)


class Minibatches:
    """The iterator :func:`minibatches` returns: a fresh order every epoch, full batches only. Its position
    (``state_dict``) can be saved and restored, so that a resumed run sees exactly the batches it would have."""

    def __init__(self, tensors, batch_size: int, generator: torch.Generator | None, shuffle: bool):
        self.tensors, self.batch_size, self.generator, self.shuffle = tensors, batch_size, generator, shuffle
        self.order, self.position = None, 0

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, ...]:
        n = len(self.tensors[0])
        if self.order is None or self.position + self.batch_size > n:  # a new epoch
            self.order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
            self.position = 0
        index = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return tuple(t[index] for t in self.tensors)

    def state_dict(self) -> dict:
        return {"order": self.order, "position": self.position,
                "generator": None if self.generator is None else self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.order, self.position = state["order"], state["position"]
        if self.generator is not None and state["generator"] is not None:
            self.generator.set_state(state["generator"])


@dataclass
class History:
    """What a run produced: one loss per step, evaluations by step, wall time in seconds (all sessions of a
    resumed run together), and how it ran: ``precision`` ("fp32" or "bf16") and ``channels_last``."""
    losses: list[float] = field(default_factory=list)
    evals: list[tuple[int, dict]] = field(default_factory=list)
    wall_time_s: float = 0.0
    precision: str = "fp32"
    channels_last: bool = False

    def last_eval(self) -> dict:
        return self.evals[-1][1] if self.evals else {}

    @property
    def ms_per_step(self) -> float:
        """Wall time per optimizer step, evaluations included."""
        return 1000 * self.wall_time_s / max(len(self.losses), 1)

    def training_record(self) -> dict:
        """What the manifest records of a run: its precision, steps, ms/step and wall time, and the machine."""
        return {"precision": self.precision, "channels_last": self.channels_last, "steps": len(self.losses),
                "ms_per_step": round(self.ms_per_step, 1), "wall_time_s": round(self.wall_time_s, 1),
                "torch_threads": torch.get_num_threads(), "machine": machine_description(),
                **({"processes": distributed.world().size} if distributed.is_distributed() else {})}


def machine_description() -> str:
    """The GPU's name, else the CPU's model name and core count (what a time is measured on)."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


# ------------------------------------------------------------------------------ the machine's fast path

PRECISIONS = ("fp32", "bf16", "auto")
PRECISION_ENV = "COURSE_PRECISION"  # what "auto" means here: fp32, bf16, or auto (decide by the hardware)


@lru_cache(maxsize=1)
def _cpu_has_bf16() -> bool:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:  # not Linux: no way to tell cheaply, so stay with fp32
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def bf16_is_fast(device: torch.device | str | None = None) -> bool:
    """Whether bf16 matrix work runs in hardware here: a CUDA GPU that supports it, or an x86 CPU with
    AVX512-BF16 or AMX. Elsewhere torch emulates bf16, which is slower than fp32."""
    device = as_device(device) or torch.device("cpu")
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and _cpu_has_bf16()


def resolve_precision(precision: str, device: torch.device | str | None = None) -> str:
    """"fp32" or "bf16": ``"auto"`` is bf16 where :func:`bf16_is_fast`, else fp32 (``COURSE_PRECISION`` may
    say which instead, e.g. ``COURSE_PRECISION=fp32`` to run a whole course as a machine without bf16 would)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        precision = os.environ.get(PRECISION_ENV, "auto").strip().lower() or "auto"
        if precision not in PRECISIONS:
            raise ValueError(f"{PRECISION_ENV}={os.environ[PRECISION_ENV]!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        precision = "bf16" if bf16_is_fast(device) else "fp32"
    return precision


def autocast(precision: str, device: torch.device | str | None = None):
    """The context a forward pass runs in: bf16 autocast (matrix products and convolutions in bf16, reductions
    and losses in fp32; the weights and their updates stay fp32) or nothing (fp32)."""
    device = as_device(device) or torch.device("cpu")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


# What the recipes that ship a model use: bf16 where the hardware has it; channels_last for convolutions in fp32
# (measured on a 2-core CPU with AVX512-BF16: bf16 1.6-1.9x faster than fp32; channels_last 1.1x in fp32 but
# 0.5-0.8x in bf16; torch.compile 1.0x in bf16 after a minute of compiling, so it is not used).
FAST = dict(precision="auto", channels_last="auto")


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


def _channels_last(batch):
    if isinstance(batch, torch.Tensor):
        return batch.contiguous(memory_format=torch.channels_last) if batch.ndim == 4 else batch
    return type(batch)(_channels_last(item) for item in batch)


def _has_convolutions(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())


def _loss_of(loss_fn: Callable, model: torch.nn.Module, batch, several: bool) -> torch.Tensor:
    """``loss_fn(model, batch)``; under torchrun ``model`` is the DistributedDataParallel wrapper, which syncs the
    gradients of what runs through its ``forward`` only."""
    try:
        return loss_fn(model, batch)
    except AttributeError as error:
        if several and "DistributedDataParallel" in str(error):
            raise AttributeError(f"{error}. Under torchrun the loss gets the model wrapped in DistributedDataParallel, "
                                 "which only syncs gradients through model(...): make the loss call the model's "
                                 "forward, or train this recipe on one process") from None
        raise


def fit(model: torch.nn.Module, loss_fn: Callable, batches: Iterator, *, steps: int,
        optimizer: torch.optim.Optimizer, device: torch.device | str | None = None,
        eval_fn: Callable[[torch.nn.Module], dict] | None = None, eval_every: int | None = None,
        desc: str = "training", show_progress: bool = True,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, clip_grad_norm: float | None = None,
        after_step: Callable[[torch.nn.Module], None] | None = None,
        precision: str = "fp32", channels_last: bool | str = False,
        state_file: str | os.PathLike | None = None, save_every_s: float = 300.0, extra_state: dict | None = None,
        ) -> History:
    """Train ``model`` for ``steps`` optimizer steps; return a :class:`History`.

    ``loss_fn(model, batch)`` returns a scalar loss; ``batches`` yields batches (moved to
    ``device``); ``eval_fn(model)`` returns a dict of metrics, called every ``eval_every`` steps
    and once at the end, with the model in eval mode and gradients off. Optional extras, in the
    order they run after ``backward()``: gradient clipping to ``clip_grad_norm``, the optimizer
    step, ``scheduler.step()``, and ``after_step(model)`` (e.g. an EMA update).

    The machine's fast path (``FAST`` turns both on where they help): ``precision`` "fp32" (what the chapters
    teach with), "bf16" (autocast: the forward pass in bf16, the weights and the optimizer in fp32) or "auto"
    (:func:`resolve_precision`); ``channels_last`` True, False or "auto" (True for a convolutional model in fp32).

    Resumable runs: with ``state_file``, the whole state of the run (model, optimizer, scheduler, the objects
    in ``extra_state`` such as an :class:`EMA`, the position in ``batches``, the random generators, the
    history) is written there every ``save_every_s`` seconds and at the end; if the file exists when ``fit``
    starts, the run continues from it.

    Under torchrun (``WORLD_SIZE > 1``), the processes train one model together with DistributedDataParallel, each
    on its slice of every batch that ``batches`` yields (the global batch): :mod:`course_lib.core.distributed`.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = as_device(device)
    several = distributed.is_distributed()  # under torchrun: see course_lib.core.distributed
    if several:
        device = distributed.setup(device)
        model.to(device)
    precision = resolve_precision(precision, device)
    if channels_last == "auto":
        channels_last = precision == "fp32" and _has_convolutions(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    history = History(precision=precision, channels_last=bool(channels_last))
    run = RunState(state_file, model, optimizer, scheduler, batches, extra_state)
    first = run.restore(history, steps) + 1
    main = distributed.is_main()
    if several:  # after the restore: every process continues from the same state
        trained = distributed.wrap(model, device)
        torch.manual_seed(torch.initial_seed() + distributed.world().rank)  # each process its own noise in the loss
    else:
        trained = model
    start = time.perf_counter() - history.wall_time_s
    last_save = time.perf_counter()
    bar = tqdm(range(first, steps + 1), desc=desc, disable=not (show_progress and main), leave=True,
               initial=first - 1, total=steps)
    for step in bar:
        model.train()
        batch = _to_device(distributed.shard(next(batches)) if several else next(batches), device)
        with autocast(precision, device):
            loss = _loss_of(loss_fn, trained, _channels_last(batch) if channels_last else batch, several)
        if loss.ndim != 0:
            raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}; "
                             "did you forget .mean()?")
        loss_value = distributed.mean_over_processes(loss.item()) if several else loss.item()
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
        if eval_fn is not None and (is_last or (eval_every and step % eval_every == 0)):  # on every process: the
            # records read history's evaluations after fit, and the weights are the same everywhere
            model.eval()
            with torch.no_grad():
                metrics = eval_fn(model)
            history.evals.append((step, metrics))
            bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
        elif step % 10 == 0 or is_last:
            bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
        if run.file is not None and main and (is_last or time.perf_counter() - last_save >= save_every_s):
            history.wall_time_s = time.perf_counter() - start
            run.save(step, history)
            last_save = time.perf_counter()
    bar.close()
    if channels_last:
        model.to(memory_format=torch.contiguous_format)  # what a checkpoint and the chapters expect
    model.eval()
    history.wall_time_s = time.perf_counter() - start
    return history


class RunState:
    """The state of a training run on disk, for :func:`fit` (and chapter 09's GAN loop): written atomically
    (a temporary file, then ``os.replace``), so an interruption at any moment leaves the last good state."""

    def __init__(self, file, model, optimizer, scheduler=None, batches=None, extra: dict | None = None):
        self.file = None if file is None else Path(file)
        self.parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "batches": batches,
                      **(extra or {})}

    def _stateful(self):
        return {name: part for name, part in self.parts.items() if part is not None and (
            isinstance(part, torch.Generator) or hasattr(part, "state_dict"))}

    def save(self, step: int, history: History) -> None:
        state = {"step": step, "history": copy.copy(history.__dict__), "torch_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                 "parts": {name: part.get_state() if isinstance(part, torch.Generator) else part.state_dict()
                           for name, part in self._stateful().items()}}
        self.file.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.file.with_name(f".{self.file.name}.{os.getpid()}.tmp")
        try:
            torch.save(state, temporary)
            os.replace(temporary, self.file)
        finally:
            temporary.unlink(missing_ok=True)

    def restore(self, history: History, steps: int) -> int:
        """Load the saved state if there is one; return the number of steps already done (0 for a new run)."""
        if self.file is None or not self.file.is_file():
            return 0
        state = torch.load(self.file, map_location="cpu", weights_only=True)
        done = state["step"]
        if done > steps:
            raise ValueError(f"{self.file} holds a run already at step {done}, past the {steps} steps asked for: "
                             "it belongs to longer settings. Delete it to start over.")
        parts = self._stateful()
        for name, part in parts.items():
            if name not in state["parts"]:
                raise ValueError(f"{self.file} has no saved {name!r}: it is from another kind of run. Delete it "
                                 "to start over.")
            if isinstance(part, torch.Generator):
                part.set_state(state["parts"][name])
            else:
                part.load_state_dict(state["parts"][name])
        if "batches" not in parts and self.parts["batches"] is not None:
            for _ in range(done):  # an iterator without a state_dict: replay it to the same position
                next(self.parts["batches"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        saved = state["history"]
        history.losses, history.evals, history.wall_time_s = saved["losses"], saved["evals"], saved["wall_time_s"]
        print(f"resuming from {self.file}: step {done} of {steps} done, {history.wall_time_s / 60:.1f} min so far")
        return done


class EMA:
    """An exponential moving average of a model's weights: theta_ema <- d theta_ema + (1 - d) theta.

    With ``warmup`` (the default) the rate starts low and rises to ``decay``: d_t = min(decay, (1 + t) / (10 + t))
    after t updates. A constant 0.999 from the start would keep 0.999^3000 = e^-3, about 5%, of the random
    initial weights in the average after 3,000 steps; the warm-up forgets them within the first steps. DINO's
    teacher sets its own schedule (``warmup=False``). Buffers (e.g. BatchNorm statistics) are copied, not averaged.
    Taught in chapter 11; chapter 05's teacher and chapter 09's GAN use it too.
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.999, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay, self.warmup, self.updates = decay, warmup, 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """The rate the next update uses."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        decay = self.current_decay()
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1 - decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates, self.decay = state["updates"], state["decay"]


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
