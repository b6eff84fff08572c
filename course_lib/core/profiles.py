"""Run profiles: one environment variable, ``COURSE_PROFILE``, picks how big every experiment is.

=======  ==========================================================================
``ci``   seconds per chapter; what the test suite (nbval) runs on 2 CPU cores
``cpu``  a learner on a laptop: minutes per chapter, a result worth looking at
``gpu``  the full recipe, for a CUDA card
=======  ==========================================================================

Unset means ``gpu`` when CUDA is available, else ``cpu``. A chapter keeps its own numbers next to
the code that uses them::

    cfg = per_profile(ci=dict(steps=50), cpu=dict(steps=2_000), gpu=dict(steps=20_000))
    cfg.steps   # the value for the active profile

Taught in chapter 00.
"""
from __future__ import annotations

import os
import warnings
from types import SimpleNamespace

import torch

PROFILES = ("ci", "cpu", "gpu")
ENV_VAR = "COURSE_PROFILE"
# A recipe may also name the settings its shipped checkpoint was trained with, when they are none of the three
# (a long run on 2 CPU cores): ``python -m course_lib.zoo train NAME --profile shipped`` reruns it.
SHIPPED = "shipped"
RECIPE_PROFILES = PROFILES + (SHIPPED,)


def profile() -> str:
    """The active run profile: ``'ci'``, ``'cpu'`` or ``'gpu'``.

    Reads ``COURSE_PROFILE`` on every call, so a notebook can change it with ``os.environ``.
    """
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if not value:
        return "gpu" if torch.cuda.is_available() else "cpu"
    if value not in PROFILES:
        raise ValueError(
            f"{ENV_VAR}={os.environ[ENV_VAR]!r} is not a run profile. "
            f"Use one of {', '.join(PROFILES)} (or leave it unset: 'gpu' with CUDA, else 'cpu'), "
            f"e.g. `export {ENV_VAR}=cpu`."
        )
    if value == "gpu" and not torch.cuda.is_available():
        _warn_gpu_profile_on_cpu()
    return value


_warned_gpu_on_cpu = False


def _warn_gpu_profile_on_cpu() -> None:
    """Once per process: the full recipes will run, but on the CPU."""
    global _warned_gpu_on_cpu
    if _warned_gpu_on_cpu:
        return
    _warned_gpu_on_cpu = True
    warnings.warn(
        f"{ENV_VAR}=gpu, but torch sees no CUDA GPU here: the full recipes will run on the CPU. Their training runs "
        "are 3-10x longer than the 'cpu' profile's, so a chapter that takes 5-15 minutes under 'cpu' can take one "
        f"to several hours. Use `export {ENV_VAR}=cpu` (the default without a GPU) unless that is what you want.",
        RuntimeWarning, stacklevel=3)


def per_profile(*, ci: dict, cpu: dict, gpu: dict, shipped: dict | None = None,
                active: str | None = None) -> SimpleNamespace:
    """The settings for the active profile (or ``active``), as attributes.

    All three profiles must name the same keys, so a chapter cannot forget one. A recipe whose shipped
    checkpoint was made with other settings gives them as ``shipped`` (chosen with ``active="shipped"``).

    >>> per_profile(ci=dict(steps=5), cpu=dict(steps=50), gpu=dict(steps=500), active="cpu").steps
    50
    """
    table = {"ci": ci, "cpu": cpu, "gpu": gpu, **({SHIPPED: shipped} if shipped is not None else {})}
    for name, settings in table.items():
        if not isinstance(settings, dict):
            raise TypeError(f"per_profile({name}=...) must be a dict, got {type(settings).__name__}")
    keys = set(ci)
    for name, settings in table.items():
        if set(settings) != keys:
            missing = keys ^ set(settings)
            raise ValueError(
                f"per_profile: every profile must set the same keys; {sorted(missing)} "
                f"differ between 'ci' and '{name}'"
            )
    chosen = profile() if active is None else active
    if chosen == SHIPPED and shipped is None:
        raise ValueError("these settings have no 'shipped' variant: their shipped checkpoint was made with one of "
                         f"{', '.join(PROFILES)} (the manifest's recipe says which)")
    if chosen not in RECIPE_PROFILES:
        raise ValueError(f"unknown profile {chosen!r}; use one of {', '.join(PROFILES)}")
    return SimpleNamespace(profile=chosen, **table[chosen])
