"""What the zoo knows about each shipped model, in one record, and how a shipped model is loaded.

A record (:class:`ShippedModel`) says how the checkpoint is made (``settings`` per profile and ``train``), how
the model is rebuilt from its manifest entry before its weights are loaded (``build``), how it is measured
(``evaluate``, numbers only: the bench formats them), and what one training step is (``training_step``, for the
throughput benchmark). Each model's module in ``course_lib/zoo/`` ends with ``RECORD = register(ShippedModel(...))``;
``load_shipped``, the bench, the train CLI and the offline test all read the registry.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable, NamedTuple

import torch
from torch import nn

from course_lib.core import checkpointing
from course_lib.core.runtime import as_device


class Trained(NamedTuple):
    """What a record's ``train`` returns: the model that ships, its history, its metrics and its recipe."""
    model: nn.Module
    history: object  # course_lib.core.train.History
    metrics: dict
    recipe: dict


@dataclass
class Measurement:
    """One model measured now: ``metric`` says what ``value`` is; ``references`` are the numbers (or short
    notes) to read it against, by label, e.g. ``{"real-vs-real floor at the same n": 5.1}``."""
    metric: str
    value: float
    references: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BenchOptions:
    """What a bench run may ask of every evaluator."""
    fid_samples: int = 2000


@dataclass(frozen=True)
class ShippedModel:
    """Everything about one shipped checkpoint (see the module docstring)."""
    name: str
    chapter: str  # the chapter that teaches it ("11"), or "eval" for the FID's classifier
    settings: Callable[..., SimpleNamespace]  # settings(active=None): per_profile(...)
    train: Callable[..., Trained]  # train(active=None, seed=0, show_progress=True[, state_file=None])
    build: Callable[[dict], nn.Module]  # build(manifest_entry): the model, before its weights are loaded
    evaluate: Callable[[nn.Module, dict, BenchOptions], Measurement]  # evaluate(model, entry, options)
    training_step: Callable  # training_step(model, entry, precision) -> (step(), batch size)
    resumable: bool = False  # train takes a state_file (python -m course_lib.zoo train NAME --resume)


REGISTRY: dict[str, ShippedModel] = {}


def register(record: ShippedModel) -> ShippedModel:
    if record.name in REGISTRY:
        raise ValueError(f"two records are named {record.name!r}")
    REGISTRY[record.name] = record
    return record


def load_shipped(name: str, device: torch.device | str = "cpu",
                 directory: str | os.PathLike | None = None) -> nn.Module:
    """The shipped model ``name``, rebuilt as its recipe made it, weights loaded, in eval mode.

    ``directory`` defaults to the shipped folder, ``checkpointing.CHECKPOINT_DIR``."""
    device = as_device(device)
    directory = checkpointing.CHECKPOINT_DIR if directory is None else directory
    manifest = checkpointing.read_manifest(directory)
    shipped = ", ".join(sorted(manifest)) or "none"
    if name not in manifest and name in REGISTRY:
        raise FileNotFoundError(f"no shipped checkpoint named {name!r} in {directory}; shipped: {shipped}. "
                                "Restore course_lib/zoo/checkpoints/ with git, or retrain it with "
                                f"`python -m course_lib.zoo train {name} --profile cpu|gpu`.")
    if name not in manifest:
        close = difflib.get_close_matches(name, sorted(manifest) + sorted(REGISTRY), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise FileNotFoundError(f"there is no model named {name!r}: it is neither shipped in {directory} nor a "
                                f"record of course_lib.zoo.{hint} Shipped: {shipped}.")
    if name not in REGISTRY:
        raise FileNotFoundError(f"{name!r} is in {directory} but course_lib.zoo has no record for it: add one "
                                "(see course_lib/zoo/__init__.py), or build the model yourself and "
                                f"load its weights with checkpointing.load_checkpoint(model, {name!r}, directory=...).")
    entry = checkpointing.manifest_entry(name, directory, needs=("file", "sha256", "recipe"))
    try:
        model = REGISTRY[name].build(entry).to(device)
    except KeyError as missing:
        raise ValueError(f"the entry {name!r} in {directory} lacks {missing} in its recipe, which rebuilding "
                         "the model needs: the manifest was edited by hand or is damaged. Restore the shipped one with "
                         "`git checkout -- course_lib/zoo/checkpoints/manifest.json`, or retrain it with "
                         f"`python -m course_lib.zoo train {name} --force`.") from None
    checkpointing.load_checkpoint(model, name, directory=directory)
    return model


def mean_of_last(values: list[float], n: int) -> float:
    """The mean of the last ``n`` values (a smoothed final loss), rounded for the manifest."""
    tail = values[-n:]
    return round(sum(tail) / len(tail), 4)


def against_bar(value: float, floor: float, factor: float) -> str:
    """Whether ``value`` meets a bar of ``factor`` x the real-vs-real ``floor`` (a lower FID is better)."""
    verdict = "met" if value <= factor * floor else "NOT met"
    return f"{verdict}: {value / floor:.2f}x the floor, bar <= {factor:g}x = {factor * floor:.2f}"
