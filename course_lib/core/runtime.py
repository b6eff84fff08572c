"""Where the code runs and how it is seeded: ``device()``, ``seed_everything()``, ``use_profile_threads()``.

Taught in chapter 00.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from course_lib.core.profiles import profile


def device() -> torch.device:
    """The best device here: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


DEVICE_TYPES = ("cpu", "cuda", "mps")


def as_device(value: torch.device | str | None) -> torch.device | None:
    """``value`` as a ``torch.device`` (None stays None), with a clear error for a name torch does not know
    (``"gpu"``) or a device this machine does not have."""
    if value is None or isinstance(value, torch.device):
        chosen = value
    elif isinstance(value, str):
        kind = value.split(":")[0].strip().lower()
        if kind not in DEVICE_TYPES:
            raise ValueError(f"{value!r} is not a device name: use 'cuda' (an NVIDIA GPU, or 'cuda:1' for the second), "
                             "'mps' (Apple silicon) or 'cpu', or course_lib.device() for the best one here")
        chosen = torch.device(value.strip().lower())
    else:
        raise TypeError(f"device must be a torch.device or a string such as 'cpu' or 'cuda', got {type(value).__name__}")
    if chosen is not None and chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(chosen)!r} was asked for, but torch sees no CUDA GPU here "
                         f"(torch {torch.__version__}); use course_lib.device(), which picks the best device available")
    return chosen


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python's ``random``, NumPy and torch (CPU and every GPU); return a seeded torch Generator.

    Call it at the top of a chapter and again before any cell whose randomness you want to
    reproduce on its own.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} ({seed!r})")
    if not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def use_profile_threads() -> int:
    """Under the ``ci`` profile, use 1 torch thread per process; return the thread count in use.

    The test suite runs two notebook kernels at once on 2 cores; two kernels with 2 threads each
    slow each other down 4-19x (measured), one thread each costs at most ~25%.
    ``OMP_NUM_THREADS`` set by the user wins over this.
    """
    if profile() == "ci" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    return torch.get_num_threads()
